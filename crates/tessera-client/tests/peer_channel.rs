//! The device-to-device channel and pairing over real loopback sockets, including a peer that
//! breaks the rules.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;

use tessera_client::peer::PeerError;
use tessera_client::peer::channel::{Channel, Frames, MAX_MESSAGE_BYTES};
use tessera_client::peer::known::KnownPeers;
use tessera_client::peer::pairing::{self, CodePrompt, LocalDevice, pairing_code};
use tessera_client::peer::wire::Message;
use tessera_store::{Keystore, KeystoreOptions, Passphrase};

async fn pair_of_channels() -> (Channel, Channel) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let at = listener.local_addr().unwrap();
    let accept = tokio::spawn(async move {
        let (s, _) = listener.accept().await.unwrap();
        Channel::accept(Frames::tcp(s)).await.unwrap()
    });
    let s = tokio::net::TcpStream::connect(at).await.unwrap();
    let a = Channel::initiate(Frames::tcp(s)).await.unwrap();
    let b = accept.await.unwrap();
    (a, b)
}

fn device(name: &str) -> (tempfile::TempDir, LocalDevice) {
    let dir = tempfile::tempdir().unwrap();
    let ks = Keystore::open_with(
        dir.path(),
        KeystoreOptions::default().insecure_fast_kdf_for_tests(),
    )
    .unwrap();
    let id = ks
        .create_identity(&Passphrase::new("channel-test-pass".into()).unwrap())
        .unwrap();
    (
        dir,
        LocalDevice {
            name: name.into(),
            identity: Arc::new(id),
        },
    )
}

#[tokio::test]
async fn large_messages_cross_in_records_and_oversized_ones_are_refused() {
    let (mut a, mut b) = pair_of_channels().await;
    assert_eq!(a.handshake_hash(), b.handshake_hash());
    let big: Vec<u8> = (0..300_000u32).map(|i| (i % 251) as u8).collect();
    a.send(&big).await.unwrap();
    a.send(&[]).await.unwrap();
    assert_eq!(b.recv().await.unwrap(), big);
    assert_eq!(b.recv().await.unwrap(), Vec::<u8>::new());
    assert!(matches!(
        a.send(&vec![0; MAX_MESSAGE_BYTES + 1]).await,
        Err(PeerError::Channel(_))
    ));
    b.send(b"still fine").await.unwrap();
    assert_eq!(a.recv().await.unwrap(), b"still fine");
}

#[tokio::test]
async fn both_sides_compute_the_same_code_and_pair() {
    let (mut a, mut b) = pair_of_channels().await;
    let ((da, alice), (db, bob)) = (device("alice"), device("bob"));
    let (mut ka, mut kb) = (
        KnownPeers::load_dir(da.path()).unwrap(),
        KnownPeers::load_dir(db.path()).unwrap(),
    );
    let (ca, cb) = (
        std::sync::Mutex::new(String::new()),
        std::sync::Mutex::new(String::new()),
    );
    let mut fa = |p: &CodePrompt| {
        *ca.lock().unwrap() = p.code.clone();
        true
    };
    let mut fb = |p: &CodePrompt| {
        *cb.lock().unwrap() = p.code.clone();
        true
    };
    let (ra, rb) = tokio::join!(
        pairing::authenticate(&mut a, &alice, &mut ka, &mut fa),
        pairing::authenticate(&mut b, &bob, &mut kb, &mut fb),
    );
    let (pa, pb) = (ra.unwrap(), rb.unwrap());
    assert_eq!(pa.name, "bob");
    assert_eq!(pb.name, "alice");
    assert!(pa.newly_paired && pb.newly_paired);
    let code = ca.lock().unwrap().clone();
    assert_eq!(code.len(), 6);
    assert_eq!(code, *cb.lock().unwrap());
    assert_eq!(KnownPeers::load_dir(da.path()).unwrap().all().len(), 1);
    assert_eq!(KnownPeers::load_dir(db.path()).unwrap().all().len(), 1);
}

/// An initiator that opens its commitment to another nonce (to steer the code) is caught.
#[tokio::test]
async fn a_commitment_that_does_not_open_aborts_the_pairing() {
    let (mut cheat, mut honest) = pair_of_channels().await;
    let ((dh, bob), (_dc, mallory)) = (device("bob"), device("mallory"));
    let mut kh = KnownPeers::load_dir(dh.path()).unwrap();
    let hash = *cheat.handshake_hash();
    let honest_side = tokio::spawn(async move {
        let r = pairing::authenticate(&mut honest, &bob, &mut kh, &mut |_: &CodePrompt| true).await;
        (r, kh.all().len())
    });
    // Mallory's own hello, correctly signed, then the pairing messages by hand.
    let mut transcript = b"tessera/peer-hello/v1".to_vec();
    transcript.push(0);
    transcript.extend_from_slice(&hash);
    transcript.extend_from_slice(&7u32.to_be_bytes());
    transcript.extend_from_slice(b"mallory");
    let hello = Message::Hello {
        name: "mallory".into(),
        identity: mallory.identity.public_key(),
        signature: mallory.identity.sign(&transcript).to_vec(),
    };
    cheat.send(&hello.to_bytes()).await.unwrap();
    let _their_hello = cheat.recv().await.unwrap();
    cheat
        .send(&Message::Trust { needs_code: true }.to_bytes())
        .await
        .unwrap();
    let _their_trust = cheat.recv().await.unwrap();
    cheat
        .send(&Message::Commit([1; 32]).to_bytes())
        .await
        .unwrap();
    let _their_nonce = cheat.recv().await.unwrap();
    cheat
        .send(&Message::Reveal([2; 32]).to_bytes())
        .await
        .unwrap();
    let (result, stored) = honest_side.await.unwrap();
    match result {
        Err(PeerError::Protocol(m)) => assert!(m.contains("does not open"), "{m}"),
        other => panic!("not caught: {other:?}"),
    }
    assert_eq!(stored, 0, "a peer was stored after a failed pairing");
}

#[test]
fn messages_are_validated_on_decoding() {
    let hello = Message::Hello {
        name: "alice".into(),
        identity: [1; 32],
        signature: vec![0; 64],
    };
    let mut bytes = hello.to_bytes();
    assert!(Message::from_bytes(&bytes).is_ok());
    bytes.push(0);
    assert!(matches!(
        Message::from_bytes(&bytes),
        Err(PeerError::Protocol(m)) if m.contains("trailing")
    ));
    let short = Message::Hello {
        name: "alice".into(),
        identity: [1; 32],
        signature: vec![0; 63],
    };
    assert!(Message::from_bytes(&short.to_bytes()).is_err());
    let long_name = Message::Hello {
        name: "x".repeat(65),
        identity: [1; 32],
        signature: vec![0; 64],
    };
    assert!(Message::from_bytes(&long_name.to_bytes()).is_err());
    assert!(Message::from_bytes(&[0xff, 0xff, 0xff]).is_err());
    assert!(Message::from_bytes(&[]).is_err());
}

#[test]
fn codes_are_six_digits_and_depend_on_every_input() {
    let c = pairing_code(&[1; 32], &[2; 32], &[3; 32]);
    assert_eq!(c.len(), 6);
    assert!(c.chars().all(|d| d.is_ascii_digit()));
    assert_eq!(c, pairing_code(&[1; 32], &[2; 32], &[3; 32]));
    assert_ne!(c, pairing_code(&[9; 32], &[2; 32], &[3; 32]));
    assert_ne!(c, pairing_code(&[1; 32], &[9; 32], &[3; 32]));
    assert_ne!(c, pairing_code(&[1; 32], &[2; 32], &[9; 32]));
}
