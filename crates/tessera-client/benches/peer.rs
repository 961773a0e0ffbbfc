//! Device-to-device figures on loopback: pairing time, and 2-of-2 signing between two devices
//! (each on its own TCP connection: handshake, signed hellos of known peers, request, approval,
//! three rounds, done) against the same signature computed in-process.
//!
//! The two devices run on two threads, each with its own runtime, as two processes would.
//! `cargo bench -p tessera-client --bench peer` (`-- --quick` for fewer samples).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::PathBuf;
use std::sync::{Arc, mpsc};
use std::time::{Duration, Instant};

use tessera_client::peer::channel::{Channel, Frames};
use tessera_client::peer::known::{KnownPeers, PeerWallet};
use tessera_client::peer::pairing::{self, CodePrompt, LocalDevice};
use tessera_client::peer::session::{self, Joins, Link};
use tessera_client::peer::wire::{Message, Request};
use tessera_core::ecdsa::eip191_digest;
use tessera_core::{DerivationPath, KeyShare, runner};
use tessera_store::{Keystore, KeystoreOptions, Passphrase};

fn device(name: &str) -> (tempfile::TempDir, LocalDevice) {
    let dir = tempfile::tempdir().unwrap();
    let ks = Keystore::open_with(
        dir.path(),
        KeystoreOptions::default().insecure_fast_kdf_for_tests(),
    )
    .unwrap();
    let id = ks
        .create_identity(&Passphrase::new("bench-passphrase".into()).unwrap())
        .unwrap();
    (
        dir,
        LocalDevice {
            name: name.into(),
            identity: Arc::new(id),
        },
    )
}

fn yes(_: &CodePrompt) -> bool {
    true
}

fn stats(label: &str, mut samples: Vec<Duration>) -> f64 {
    samples.sort();
    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    let median = ms(samples[samples.len() / 2]);
    let p99 = ms(samples[(samples.len() * 99 / 100).min(samples.len() - 1)]);
    println!(
        "{label:<50} n={:<4} median {median:>8.2} ms   p99 {p99:>8.2} ms",
        samples.len()
    );
    median
}

/// What the answering device does with its next connection.
enum Job {
    /// Pair as this device (fresh each time).
    Pair(LocalDevice, PathBuf),
    /// Join a keygen as this device; keep the share.
    Keygen(LocalDevice, PathBuf),
    /// Join a signature with the kept share.
    Sign,
}

/// The answering device: its own thread and runtime.
fn answering_device(
    listener: std::net::TcpListener,
    jobs: mpsc::Receiver<Job>,
    done: mpsc::Sender<Option<(Arc<KeyShare>, PeerWallet)>>,
) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async move {
        listener.set_nonblocking(true).unwrap();
        let listener = tokio::net::TcpListener::from_std(listener).unwrap();
        let mut me: Option<(LocalDevice, PathBuf)> = None;
        let mut wallet: Option<(Arc<KeyShare>, PeerWallet)> = None;
        while let Ok(job) = jobs.recv() {
            if let Job::Pair(d, p) | Job::Keygen(d, p) = &job {
                me = Some((d.clone(), p.clone()));
            }
            let (device, home) = me.clone().unwrap();
            let (s, _) = listener.accept().await.unwrap();
            let mut c = Channel::accept(Frames::tcp(s)).await.unwrap();
            let mut known = KnownPeers::load_dir(&home).unwrap();
            let peer = pairing::authenticate(&mut c, &device, &mut known, &mut yes)
                .await
                .unwrap();
            match job {
                Job::Pair(..) => {}
                Job::Keygen(..) => {
                    let Message::Request(request) = pairing::recv(&mut c).await.unwrap() else {
                        panic!("no request");
                    };
                    let invitation = session::check_keygen(&request, &peer, &device).unwrap();
                    let leader = Link {
                        peer,
                        channel: c,
                        address: None,
                    };
                    let (share, w) = session::join_keygen(
                        &invitation,
                        leader,
                        &device,
                        &mut known,
                        &mut yes,
                        &Joins::default(),
                        &mut |_, _| {},
                    )
                    .await
                    .unwrap();
                    wallet = Some((Arc::new(share), w));
                }
                Job::Sign => {
                    let (share, w) = wallet.clone().unwrap();
                    let Message::Request(request @ Request::Sign { .. }) =
                        pairing::recv(&mut c).await.unwrap()
                    else {
                        panic!("no sign request");
                    };
                    let invitation = session::check_sign(&request, &peer, &share, &w).unwrap();
                    let leader = Link {
                        peer,
                        channel: c,
                        address: None,
                    };
                    session::join_sign(&invitation, leader, &share, &mut |_, _| {})
                        .await
                        .unwrap();
                }
            }
            done.send(wallet.clone()).unwrap();
        }
    });
}

fn main() {
    // `cargo bench` passes --bench; without it (`cargo test --benches`) a smoke run.
    let full = std::env::args().any(|a| a == "--bench");
    let quick = std::env::args().any(|a| a == "--quick");
    let (pair_runs, sign_runs) = match (full, quick) {
        (false, _) => (2, 3),
        (true, true) => (20, 50),
        (true, false) => (100, 300),
    };
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let at = listener.local_addr().unwrap().to_string();
    let (jobs, job_rx) = mpsc::channel();
    let (done_tx, done) = mpsc::channel();
    std::thread::spawn(move || answering_device(listener, job_rx, done_tx));
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let connect = |me: &LocalDevice, home: &std::path::Path| {
        let mut known = KnownPeers::load_dir(home).unwrap();
        let me = me.clone();
        let at = at.clone();
        async move {
            session::connect(std::slice::from_ref(&at), &me, &mut known, &mut yes)
                .await
                .unwrap()
        }
    };

    // Pairing: fresh devices each time, so the code is computed and compared every run.
    let mut pairing = Vec::new();
    let mut keep = Vec::new();
    for _ in 0..pair_runs {
        let ((da, alice), (db, bob)) = (device("alice"), device("bob"));
        jobs.send(Job::Pair(alice, da.path().to_path_buf()))
            .unwrap();
        let started = Instant::now();
        let link = rt.block_on(connect(&bob, db.path()));
        done.recv().unwrap();
        pairing.push(started.elapsed());
        assert!(link.peer.newly_paired);
        keep.push((da, db));
    }

    // One wallet for the signatures.
    let ((da, alice), (db, bob)) = (device("alice"), device("bob"));
    jobs.send(Job::Keygen(alice, da.path().to_path_buf()))
        .unwrap();
    let (bob_share, _) = rt.block_on(async {
        let link = connect(&bob, db.path()).await;
        session::lead_keygen(&bob, vec![link], "bench", 2, &mut |_, _| {})
            .await
            .unwrap()
    });
    let (alice_share, _) = done.recv().unwrap().unwrap();

    let root = DerivationPath::root();
    let mut e2e = Vec::new();
    let mut after_connect = Vec::new();
    for i in 0..sign_runs {
        let message = format!("bench message {i}");
        jobs.send(Job::Sign).unwrap();
        let started = Instant::now();
        let signing = rt.block_on(async {
            let link = connect(&bob, db.path()).await;
            let connected = Instant::now();
            session::lead_sign(
                &bob_share,
                "bench",
                link,
                1,
                &message,
                &root,
                &mut |_, _| {},
            )
            .await
            .unwrap();
            connected.elapsed()
        });
        done.recv().unwrap();
        e2e.push(started.elapsed());
        after_connect.push(signing);
    }

    let mut local = Vec::new();
    for i in 0..sign_runs {
        let digest = eip191_digest(format!("bench message {i}").as_bytes());
        let started = Instant::now();
        runner::sign(&[&bob_share, &alice_share], digest, &root).unwrap();
        local.push(started.elapsed());
    }

    println!("device-to-device on loopback (two devices on two threads, 2 cores)");
    stats("pairing (handshake + hellos + code)", pairing);
    let d2d = stats("2-of-2 sign, device to device (new connection)", e2e);
    stats("  of which request + 3 rounds + done", after_connect);
    let inproc = stats("2-of-2 sign, in-process (both parties, 1 thread)", local);
    println!("ratio device-to-device / in-process: {:.2}", d2d / inproc);
    drop(da);
}
