//! Devices in sessions of several parties through the server (`tessera_server::session_pump`,
//! `tessera_client::session_socket`): real protocols over real WebSockets on loopback, each
//! device's socket pumped into the session's mailboxes, the server's party over its own
//! `MailboxLink`. A keygen under `and(server, or(phone, laptop))` and signatures by both
//! authorised quorums (checked with k256); on PostgreSQL the two devices reach different
//! replicas. Attacks: a device that writes a frame as another party, to a party outside the
//! session, a broken frame or text is refused, its socket closed with 4400 and a reason, and
//! the server's party names it; a device that disconnects mid-run is named as having left; a
//! bad frame for the device is refused by its link, naming the sender it claims; a silent
//! session expires on both sides.
//!
//! The socket route here is the tests' own: it takes the session, the party and its peers from
//! the query (the server's `/ws` authenticates the device and looks them up; the coordinator
//! that does so comes next). The pump and the device's link are the product's.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::ws::WebSocketUpgrade;
use axum::extract::{RawQuery, State};
use axum::response::Response;
use futures_util::{SinkExt, StreamExt};
use tessera_api::ServerSessionId;
use tessera_api::session_frame::{
    Body, End, EndReason, Fault, Frame, MAX_ADDRESSED, addressed, end_frame,
};
use tessera_client::ClientError;
use tessera_client::session_socket::SocketLink;
use tessera_core::driver::{self, DriveError};
use tessera_core::protocols::fresh_nonce;
use tessera_core::structure::WalletStructure;
use tessera_core::{
    DerivationPath, KeyShare, PartyIndex, PublicKey, Session, SignRequest, SignSession, Signature,
    StructureKeygenSession, WalletId,
};
use tessera_server::session_link::{LinkError, MailboxLink, party_address};
use tessera_server::session_pump::{Pump, Pumped};
use tessera_server::{AppState, Config};
use tessera_store::{DeviceIdentity, Keystore, KeystoreOptions, Passphrase};
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::Message;

const APPEAR: Duration = Duration::from_secs(60);
const IDLE: Duration = Duration::from_secs(300);

type Socket =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

fn p(i: u8) -> PartyIndex {
    PartyIndex::new(i)
}

fn new_session() -> ServerSessionId {
    ServerSessionId::new(hex::encode(fresh_nonce()))
}

/// A replica's test socket route, and where each pump's end is reported.
#[derive(Clone)]
struct Route {
    state: AppState,
    ended: mpsc::UnboundedSender<(u8, Pumped)>,
}

/// A replica's test route: where it listens, and its pumps' ends.
struct Served {
    addr: SocketAddr,
    ends: mpsc::UnboundedReceiver<(u8, Pumped)>,
}

/// `/pump?session=…&me=…&peers=0,2&idle_ms=…`: the device's socket pumped into the session.
async fn pump_route(
    State(route): State<Route>,
    RawQuery(query): RawQuery,
    upgrade: WebSocketUpgrade,
) -> Response {
    let query = query.unwrap_or_default();
    let mut session = None;
    let mut me = None;
    let mut peers = Vec::new();
    let mut idle = IDLE;
    for pair in query.split('&') {
        let (key, value) = pair.split_once('=').unwrap();
        match key {
            "session" => session = Some(ServerSessionId::new(value.to_string())),
            "me" => me = Some(p(value.parse().unwrap())),
            "peers" => peers = value.split(',').map(|v| p(v.parse().unwrap())).collect(),
            "idle_ms" => idle = Duration::from_millis(value.parse().unwrap()),
            _ => panic!("unknown query key {key}"),
        }
    }
    let (session, me) = (session.unwrap(), me.unwrap());
    upgrade
        .max_message_size(MAX_ADDRESSED)
        .on_upgrade(move |mut socket| async move {
            let pump = Pump::open(route.state.mailboxes(), &session, me, &peers, APPEAR)
                .await
                .unwrap();
            let ended = pump.run(&mut socket, idle, std::future::pending()).await;
            let _ = route.ended.send((me.get(), ended));
        })
}

/// Serves the test route for `state` on a loopback port.
async fn serve(state: AppState) -> Served {
    let (ended, ends) = mpsc::unbounded_channel();
    let app = axum::Router::new()
        .route("/pump", axum::routing::get(pump_route))
        .with_state(Route { state, ended });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    Served { addr, ends }
}

/// A server on SQLite in a temporary directory (kept while the directory lives) and its test
/// route.
async fn sqlite_replica() -> (tempfile::TempDir, AppState, Served) {
    let dir = tempfile::tempdir().unwrap();
    let state = AppState::open(Config::new(dir.path().join("data")))
        .await
        .unwrap();
    let served = serve(state.clone()).await;
    (dir, state, served)
}

/// Two replicas on a fresh PostgreSQL database (and its URL), or `None` without a server.
async fn two_replicas(prefix: &str) -> Option<(tempfile::TempDir, String, AppState, AppState)> {
    let dir = tempfile::tempdir().unwrap();
    let url = common::fresh_postgres_database(prefix).await?;
    let mut config = Config::new(dir.path().join("data"));
    config.database_url = Some(url.clone());
    let a = AppState::open(config.clone()).await.unwrap();
    let b = AppState::open(config).await.unwrap();
    Some((dir, url, a, b))
}

/// Party `me`'s socket to the pump at `addr`.
async fn connect(
    addr: SocketAddr,
    sid: &ServerSessionId,
    me: PartyIndex,
    peers: &[PartyIndex],
    extra: &str,
) -> Socket {
    let peers: Vec<String> = peers.iter().map(|q| q.get().to_string()).collect();
    let url = format!(
        "ws://{addr}/pump?session={sid}&me={}&peers={}{extra}",
        me.get(),
        peers.join(",")
    );
    let config = tokio_tungstenite::tungstenite::protocol::WebSocketConfig::default()
        .max_message_size(Some(MAX_ADDRESSED));
    tokio_tungstenite::connect_async_with_config(url, Some(config), true)
        .await
        .unwrap()
        .0
}

/// Checks `sig` with k256 directly, and with Tessera's own types.
fn verify(pk: &PublicKey, digest: &[u8; 32], sig: &Signature) {
    use k256::ecdsa::signature::hazmat::PrehashVerifier;
    let key = k256::ecdsa::VerifyingKey::from_sec1_bytes(&pk.to_compressed()).unwrap();
    let k256_sig = k256::ecdsa::Signature::from_slice(&sig.to_compact()).unwrap();
    key.verify_prehash(digest, &k256_sig)
        .expect("k256 rejects the signature");
    pk.verify(digest, sig).unwrap();
}

/// The devices of a test: each party's identity key (in a real keystore), and which of them
/// trusts which key for another.
struct Devices {
    ids: BTreeMap<PartyIndex, DeviceIdentity>,
    /// A key nobody's device holds: `fooled` (device, about) trusts it for `about`.
    impostor: DeviceIdentity,
    fooled: Option<(PartyIndex, PartyIndex)>,
    _dir: tempfile::TempDir,
}

impl Devices {
    fn new(parties: &[PartyIndex], fooled: Option<(PartyIndex, PartyIndex)>) -> Arc<Self> {
        let dir = tempfile::tempdir().unwrap();
        let identity = |name: String| {
            let keystore = Keystore::open_with(
                dir.path().join(name),
                KeystoreOptions::default().insecure_fast_kdf_for_tests(),
            )
            .unwrap();
            keystore
                .create_identity(&Passphrase::new("correct horse battery".into()).unwrap())
                .unwrap()
        };
        let ids = parties
            .iter()
            .map(|&party| (party, identity(format!("device-{party}"))))
            .collect();
        let impostor = identity("impostor".into());
        Arc::new(Devices {
            ids,
            impostor,
            fooled,
            _dir: dir,
        })
    }

    /// The identity keys `me` trusts for the other devices among `peers`.
    fn trusted(&self, me: PartyIndex, peers: &[PartyIndex]) -> BTreeMap<PartyIndex, [u8; 32]> {
        peers
            .iter()
            .filter_map(|&peer| {
                let key = if self.fooled == Some((me, peer)) {
                    self.impostor.public_key()
                } else {
                    self.ids.get(&peer)?.public_key()
                };
                Some((peer, key))
            })
            .collect()
    }
}

/// Where a party of a session runs.
#[derive(Clone)]
enum Place {
    /// The server's own party, over its mailbox link on this replica.
    Server(AppState),
    /// A device, over its socket to a pump (or a proxy in front of one), sealing its frames to
    /// the other devices.
    Device(SocketAddr, Arc<Devices>),
}

/// Runs `session` at `place`; its output, or the error as text.
async fn run_party<S: Session>(
    place: Place,
    sid: ServerSessionId,
    mut session: S,
) -> Result<S::Output, String> {
    let (me, peers) = (session.party(), session.peers());
    match place {
        Place::Server(state) => {
            let mut link = MailboxLink::open(state.mailboxes(), &sid, me, &peers, APPEAR)
                .await
                .map_err(|e| e.to_string())?;
            let output = driver::drive(&mut session, &mut link, Some(IDLE), |_, _| Ok(()))
                .await
                .map_err(|e| e.to_string())?;
            link.end(End::finished()).await.map_err(|e| e.to_string())?;
            Ok(output)
        }
        Place::Device(addr, devices) => {
            let socket = connect(addr, &sid, me, &peers, "").await;
            let mut link = SocketLink::new(socket, me, &peers).map_err(|e| e.to_string())?;
            let trusted = devices.trusted(me, &peers);
            link.seal(&devices.ids[&me], sid.as_str().as_bytes(), &trusted, APPEAR)
                .await
                .map_err(|e| e.to_string())?;
            let output = driver::drive(&mut session, &mut link, Some(IDLE), |_, _| Ok(()))
                .await
                .map_err(|e| e.to_string())?;
            link.end(End::finished()).await.map_err(|e| e.to_string())?;
            Ok(output)
        }
    }
}

/// Runs every party of one session at its place, at the same time.
async fn run_all<S>(parties: Vec<(Place, S)>) -> Vec<S::Output>
where
    S: Session + Send + 'static,
    S::Output: Send + 'static,
{
    let sid = new_session();
    let tasks: Vec<_> = parties
        .into_iter()
        .map(|(place, session)| tokio::spawn(run_party(place, sid.clone(), session)))
        .collect();
    let mut outputs = Vec::new();
    for task in tasks {
        outputs.push(task.await.unwrap().unwrap());
    }
    outputs
}

/// The keygen of `structure`, party `i` at `place(i)`; the shares in party order.
async fn keygen(structure: &WalletStructure, place: impl Fn(PartyIndex) -> Place) -> Vec<KeyShare> {
    let wallet = WalletId::random();
    let nonce = fresh_nonce();
    let parties = structure
        .parties()
        .map(|party| {
            let session = StructureKeygenSession::new(wallet, structure, party, &nonce).unwrap();
            (place(party), session)
        })
        .collect();
    let mut shares = run_all(parties).await;
    shares.sort_by_key(KeyShare::party);
    assert!(
        shares
            .iter()
            .all(|s| s.public_key() == shares[0].public_key())
    );
    shares
}

/// Signs `digest` with `signers` at their places; checks the signature.
async fn sign(signers: &[(Place, &KeyShare)], digest: [u8; 32]) -> Signature {
    let request = SignRequest {
        nonce: fresh_nonce(),
        signers: signers.iter().map(|(_, s)| s.party()).collect(),
        digest,
        path: DerivationPath::root(),
    };
    let parties = signers
        .iter()
        .map(|(place, share)| (place.clone(), SignSession::new(share, &request).unwrap()))
        .collect();
    let signatures = run_all(parties).await;
    assert!(signatures.iter().all(|s| *s == signatures[0]));
    verify(&signers[0].1.public_key(), &digest, &signatures[0]);
    signatures[0]
}

/// Takes `n` pump ends; each must be `Ended`.
async fn all_ended(ends: &mut mpsc::UnboundedReceiver<(u8, Pumped)>, n: usize) {
    for _ in 0..n {
        let (party, ended) = tokio::time::timeout(Duration::from_secs(30), ends.recv())
            .await
            .expect("a pump never ended")
            .unwrap();
        assert_eq!(ended, Pumped::Ended, "party {party}'s pump");
    }
}

/// The wallet structure of most tests here, and its server, phone and laptop.
fn phone_and_laptop() -> (WalletStructure, PartyIndex, PartyIndex, PartyIndex) {
    let structure = WalletStructure::parse("and(server, or(phone, laptop))").unwrap();
    let at = |name: &str| structure.party(name).unwrap();
    let (s, ph, l) = (at("server"), at("phone"), at("laptop"));
    (structure, s, ph, l)
}

/// Keygen under `and(server, or(phone, laptop))` and a signature by each authorised quorum:
/// the server on `server`, the phone through `phone`, the laptop through `laptop` (pumps, or
/// proxies in front of them).
async fn keygen_and_sign(server: Place, phone: SocketAddr, laptop: SocketAddr) -> Vec<KeyShare> {
    let (structure, s, ph, l) = phone_and_laptop();
    let devices = Devices::new(&[ph, l], None);
    let phone = Place::Device(phone, devices.clone());
    let laptop = Place::Device(laptop, devices);
    let place = |party: PartyIndex| {
        if party == s {
            server.clone()
        } else if party == ph {
            phone.clone()
        } else {
            laptop.clone()
        }
    };
    let shares = keygen(&structure, place).await;
    let share = |party: PartyIndex| &shares[usize::from(party.get())];
    let pk = shares[0].public_key();
    let sig = sign(
        &[(server.clone(), share(s)), (phone, share(ph))],
        [0x11; 32],
    )
    .await;
    verify(&pk, &[0x11; 32], &sig);
    let sig = sign(&[(server, share(s)), (laptop, share(l))], [0x22; 32]).await;
    verify(&pk, &[0x22; 32], &sig);
    shares
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_devices_and_the_server_keygen_and_sign_through_device_sockets() {
    let (_dir, state, Served { addr, mut ends, .. }) = sqlite_replica().await;
    let shares = keygen_and_sign(Place::Server(state.clone()), addr, addr).await;
    assert_eq!(shares.len(), 3);
    // Keygen: two device sockets; each signature: one.
    all_ended(&mut ends, 4).await;
    assert_eq!(state.mailboxes().held(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn devices_on_two_replicas_keygen_and_sign_with_the_server() {
    let Some((_dir, url, a, b)) = two_replicas("pump").await else {
        eprintln!("TESSERA_TEST_DATABASE_URL not set: PostgreSQL skipped");
        return;
    };
    let Served {
        addr: addr_a,
        ends: mut ends_a,
        ..
    } = serve(a.clone()).await;
    let Served {
        addr: addr_b,
        ends: mut ends_b,
        ..
    } = serve(b.clone()).await;
    // The server's party and the phone on replica A, the laptop on replica B.
    keygen_and_sign(Place::Server(a.clone()), addr_a, addr_b).await;
    all_ended(&mut ends_a, 2).await;
    all_ended(&mut ends_b, 2).await;
    let db = sqlx::AnyPool::connect(&url).await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let (rows,): (i64,) = sqlx::query_as("SELECT COUNT(*) FROM mailboxes")
            .fetch_one(&db)
            .await
            .unwrap();
        if rows == 0 {
            break;
        }
        assert!(Instant::now() < deadline, "mailbox rows stayed");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A 3-party keygen: the server's party (0) over its link, the honest device (2) over its
/// socket, and device 1's socket, which the test drives by hand with `attack` at once (the
/// others may still be looking for their peers). Returns the server's error, the honest device's, device 1's close
/// (code, reason) and its pump's end.
async fn attacked_keygen(
    attack: impl AsyncFnOnce(&mut Socket),
) -> (LinkError, ClientError, (u16, String), Pumped) {
    let (_dir, state, Served { addr, mut ends }) = sqlite_replica().await;
    let structure = WalletStructure::parse("threshold(2, server, a, b)").unwrap();
    let (wallet, nonce, sid) = (WalletId::random(), fresh_nonce(), new_session());
    let session = |i: u8| StructureKeygenSession::new(wallet, &structure, p(i), &nonce).unwrap();
    let server = {
        let (state, sid, mut session) = (state.clone(), sid.clone(), session(0));
        tokio::spawn(async move {
            // The attack may come before the server's party found every peer: its link then
            // stops at the end the attacker's pump sent.
            let mut link =
                match MailboxLink::open(state.mailboxes(), &sid, p(0), &session.peers(), APPEAR)
                    .await
                {
                    Ok(link) => link,
                    Err(e) => return e,
                };
            match driver::drive(&mut session, &mut link, Some(IDLE), |_, _| Ok(())).await {
                Err(DriveError::Link(e)) => {
                    // As the server's coordinator does: the others hear why.
                    link.end(End::new(EndReason::Failed, &e.to_string()))
                        .await
                        .unwrap();
                    e
                }
                other => panic!("the server's party: {:?}", other.map(|_| ())),
            }
        })
    };
    let honest = {
        let (sid, mut session) = (sid.clone(), session(2));
        tokio::spawn(async move {
            let socket = connect(addr, &sid, p(2), &[p(0), p(1)], "").await;
            let mut link = SocketLink::new(socket, p(2), &[p(0), p(1)]).unwrap();
            match driver::drive(&mut session, &mut link, Some(IDLE), |_, _| Ok(())).await {
                Err(DriveError::Link(e)) => e,
                other => panic!("the honest device: {:?}", other.map(|_| ())),
            }
        })
    };
    let mut attacker = connect(addr, &sid, p(1), &[p(0), p(2)], "").await;
    attack(&mut attacker).await;
    let close = loop {
        match attacker.next().await {
            Some(Ok(Message::Close(Some(frame)))) => {
                break (u16::from(frame.code), frame.reason.to_string());
            }
            Some(Ok(_)) => {}
            other => panic!("no close frame: {other:?}"),
        }
    };
    let server = server.await.unwrap();
    let honest = honest.await.unwrap();
    let pumped = loop {
        let (party, pumped) = ends.recv().await.unwrap();
        if party == 1 {
            break pumped;
        }
    };
    drop(attacker);
    (server, honest, close, pumped)
}

/// The attacker's frame was refused: its socket closed with 4400 and `why`; the server's party
/// ends naming party 1, whose run the server reports as failed, and so does the honest device
/// (or it hears it from the server's party).
fn refused(outcome: (LinkError, ClientError, (u16, String), Pumped), why: &str) {
    let (server, honest, (code, reason), pumped) = outcome;
    assert_eq!(code, 4400, "{reason}");
    assert!(reason.contains(why), "close reason: {reason}");
    assert!(
        matches!(&pumped, Pumped::Refused(r) if r.contains(why)),
        "{pumped:?}"
    );
    assert_eq!(server.party(), Some(p(1)), "{server}");
    assert!(
        matches!(&server, LinkError::Peer(Fault::Ended { end, .. }) if end.reason() == EndReason::Failed),
        "{server}"
    );
    assert!(server.to_string().contains(why), "{server}");
    // The honest device hears it from party 1's pump, or from the server's party, which
    // ended saying why (whichever reaches it first).
    match honest {
        ClientError::Session(fault @ Fault::Ended { .. }) => {
            assert!([Some(p(1)), Some(p(0))].contains(&fault.party()), "{fault}");
            assert!(fault.to_string().contains(why), "{fault}");
        }
        other => panic!("the honest device: {other}"),
    }
}

fn frame_of(from: u8, body: Body) -> Vec<u8> {
    Frame {
        from: p(from),
        body,
    }
    .encode()
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_device_writing_as_another_party_is_refused_and_named() {
    // Device 1 writes to the honest device as if it were the server (party 0).
    let outcome = attacked_keygen(async move |socket: &mut Socket| {
        let forged = frame_of(0, Body::End(End::new(EndReason::Failed, "abort")));
        socket
            .send(Message::Binary(addressed(p(2), &forged).into()))
            .await
            .unwrap();
    })
    .await;
    refused(
        outcome,
        "names party 0 as its sender; this socket is party 1",
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn frames_to_outsiders_broken_frames_and_text_are_refused() {
    let cases: Vec<(Vec<u8>, &str)> = vec![
        (
            addressed(p(9), &frame_of(1, Body::Message(vec![1, 2, 3]))),
            "a frame for party 9, which is not a peer",
        ),
        (
            addressed(p(1), &frame_of(1, Body::Message(vec![1, 2, 3]))),
            "a frame for party 1, which is not a peer",
        ),
        (Vec::new(), "a bad frame: a session frame of 0 bytes"),
        (
            vec![0, 1, 9, 1, 7],
            "a bad frame: a session frame of unknown kind 9",
        ),
        (vec![2, 7, 1, 1, 7], "format version 7"),
    ];
    for (message, why) in cases {
        let outcome = attacked_keygen(async move |socket: &mut Socket| {
            socket.send(Message::Binary(message.into())).await.unwrap();
        })
        .await;
        refused(outcome, why);
    }
    let outcome = attacked_keygen(async move |socket: &mut Socket| {
        socket.send(Message::Text("hello".into())).await.unwrap();
    })
    .await;
    refused(outcome, "text frames are not session frames");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_device_that_disconnects_mid_run_is_named_as_gone() {
    let (_dir, state, Served { addr, mut ends, .. }) = sqlite_replica().await;
    let structure = WalletStructure::parse("threshold(2, server, a, b)").unwrap();
    let (wallet, nonce, sid) = (WalletId::random(), fresh_nonce(), new_session());
    let mut tasks = Vec::new();
    for party in structure.parties() {
        let mut session = StructureKeygenSession::new(wallet, &structure, party, &nonce).unwrap();
        let (state, sid) = (state.clone(), sid.clone());
        tasks.push(tokio::spawn(async move {
            let peers = session.peers();
            if party == p(0) {
                let mut link = MailboxLink::open(state.mailboxes(), &sid, party, &peers, APPEAR)
                    .await
                    .unwrap();
                let result = driver::drive(&mut session, &mut link, Some(IDLE), |_, _| Ok(()));
                return match result.await {
                    // Found gone (its mailbox closed when written to) or told (its pump's end),
                    // whichever comes first.
                    Err(DriveError::Link(e)) => {
                        assert_eq!(e.party(), Some(p(1)), "{e}");
                        link.end(End::new(EndReason::Failed, &e.to_string()))
                            .await
                            .unwrap();
                        None
                    }
                    other => panic!("the server's party: {:?}", other.map(|_| ())),
                };
            }
            let socket = connect(addr, &sid, party, &peers, "").await;
            let mut link = SocketLink::new(socket, party, &peers).unwrap();
            let leaves = party == p(1);
            let result = driver::drive(&mut session, &mut link, Some(IDLE), |round, _| {
                if leaves && round >= 1 {
                    return Err(ClientError::Network("stopped on purpose".into()));
                }
                Ok(())
            })
            .await;
            if leaves {
                // The socket drops without an end.
                drop(link);
                assert!(result.is_err());
                return None;
            }
            // Told by party 1's pump, or by the server's party, which ended naming party 1.
            match result {
                Err(DriveError::Link(ClientError::Session(fault))) => {
                    assert!([Some(p(1)), Some(p(0))].contains(&fault.party()), "{fault}");
                    Some(fault.to_string())
                }
                other => panic!("device {party}: {:?}", other.map(|_| ())),
            }
        }));
    }
    for task in tasks {
        if let Some(error) = task.await.unwrap() {
            assert!(error.contains("party 1"), "{error}");
        }
    }
    let mut pumped = Vec::new();
    for _ in 0..2 {
        pumped.push(ends.recv().await.unwrap());
    }
    pumped.sort_by_key(|(party, _)| *party);
    assert_eq!(pumped[0], (1, Pumped::Left));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_frame_for_the_device_is_refused_by_its_link() {
    let (_dir, state, Served { addr, mut ends, .. }) = sqlite_replica().await;
    let sid = new_session();
    let boxes = state.mailboxes();
    let _zero = boxes.open(&party_address(&sid, p(0))).await.unwrap();
    let _two = boxes.open(&party_address(&sid, p(2))).await.unwrap();
    let socket = connect(addr, &sid, p(1), &[p(0), p(2)], "").await;
    let mut link = SocketLink::new(socket, p(1), &[p(0), p(2)]).unwrap();
    let deadline = Instant::now() + APPEAR;
    let to_device = loop {
        if let Some(route) = boxes.route(&party_address(&sid, p(1))).await.unwrap() {
            break route;
        }
        assert!(Instant::now() < deadline, "the pump never opened");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    // A control of the wrong length, claiming to be from party 2.
    assert!(boxes.send(&to_device, vec![1, 2, 2, 0, 1]).await.unwrap());
    let error = tessera_core::driver::Link::recv(&mut link, Some(IDLE))
        .await
        .unwrap_err();
    match error {
        ClientError::Session(fault @ Fault::BadFrame { .. }) => {
            assert_eq!(fault.party(), Some(p(2)), "{fault}");
            assert!(
                fault.to_string().contains("control frame with 2 bytes"),
                "{fault}"
            );
        }
        other => panic!("{other}"),
    }
    // The device leaves; the pump tells the peers it had not ended with.
    drop(link);
    assert_eq!(ends.recv().await.unwrap(), (1, Pumped::Left));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_session_expires_for_the_device_and_its_peers() {
    let (_dir, state, Served { addr, mut ends, .. }) = sqlite_replica().await;
    let sid = new_session();
    let boxes = state.mailboxes();
    let mut zero = boxes.open(&party_address(&sid, p(0))).await.unwrap();
    let mut socket = connect(addr, &sid, p(1), &[p(0)], "&idle_ms=300").await;
    // Pings are not activity.
    let pinging = async {
        loop {
            if socket.send(Message::Ping(vec![1].into())).await.is_err() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    };
    let _ = tokio::time::timeout(Duration::from_secs(2), pinging).await;
    let close = loop {
        match socket.next().await {
            Some(Ok(Message::Close(Some(frame)))) => break frame,
            Some(Ok(_)) => {}
            other => panic!("no close frame: {other:?}"),
        }
    };
    assert_eq!(u16::from(close.code), 4408, "{}", close.reason);
    assert_eq!(ends.recv().await.unwrap(), (1, Pumped::Expired));
    // The peer was told, in the device's name.
    let told = zero.recv().await.unwrap();
    assert_eq!(
        told,
        end_frame(
            p(1),
            &End::new(EndReason::Expired, "no frame for the idle timeout")
        )
    );
}

/// What a proxy does with each message a device sends: the messages it forwards instead.
type Tamper = Box<dyn FnMut(&[u8]) -> Vec<Vec<u8>> + Send>;

/// A WebSocket proxy in front of the pump at `target`, as a server that carries the frames
/// could be: each message from the device is recorded and goes through `tamper`; messages to
/// the device pass unchanged.
// tungstenite's handshake callback returns its own (large) error response type.
#[allow(clippy::result_large_err)]
async fn proxy(target: SocketAddr, tamper: Tamper) -> (SocketAddr, Arc<Mutex<Vec<Vec<u8>>>>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let recorded = seen.clone();
    tokio::spawn(async move {
        let mut tamper = tamper;
        // One device connects through it per test.
        let (stream, _) = listener.accept().await.unwrap();
        let path = Arc::new(Mutex::new(String::new()));
        let write_path = path.clone();
        let config = tokio_tungstenite::tungstenite::protocol::WebSocketConfig::default()
            .max_message_size(Some(MAX_ADDRESSED));
        let device = tokio_tungstenite::accept_hdr_async_with_config(
            stream,
            move |request: &tokio_tungstenite::tungstenite::handshake::server::Request,
                  response| {
                *write_path.lock().unwrap() = request.uri().to_string();
                Ok(response)
            },
            Some(config),
        )
        .await
        .unwrap();
        let url = format!("ws://{target}{}", path.lock().unwrap());
        let (server, _) = tokio_tungstenite::connect_async_with_config(url, Some(config), true)
            .await
            .unwrap();
        let (mut device_tx, mut device_rx) = device.split();
        let (mut server_tx, mut server_rx) = server.split();
        let down = async move {
            while let Some(Ok(message)) = server_rx.next().await {
                if device_tx.send(message).await.is_err() {
                    break;
                }
            }
        };
        let up = async move {
            while let Some(Ok(message)) = device_rx.next().await {
                let out = match &message {
                    Message::Binary(bytes) => {
                        recorded.lock().unwrap().push(bytes.to_vec());
                        tamper(bytes)
                            .into_iter()
                            .map(|b| Message::Binary(b.into()))
                            .collect()
                    }
                    _ => vec![message],
                };
                for message in out {
                    if server_tx.send(message).await.is_err() {
                        return;
                    }
                }
            }
            // The device left: so does the proxy's socket to the pump.
            let _ = server_tx.close().await;
        };
        tokio::join!(down, up);
    });
    (addr, seen)
}

/// The kind byte of an addressed message (recipient, version, kind, sender, ...), its
/// recipient and body.
fn parts_of(message: &[u8]) -> (u8, u8, &[u8]) {
    (message[0], message[2], &message[4..])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn frames_between_devices_are_sealed_end_to_end() {
    let (_dir, state, Served { addr, .. }) = sqlite_replica().await;
    let (structure, s, ph, l) = phone_and_laptop();
    let (watched, seen) = proxy(addr, Box::new(|b: &[u8]| vec![b.to_vec()])).await;
    let devices = Devices::new(&[ph, l], None);
    let shares = keygen(&structure, |party| {
        if party == s {
            Place::Server(state.clone())
        } else if party == ph {
            Place::Device(watched, devices.clone())
        } else {
            Place::Device(addr, devices.clone())
        }
    })
    .await;
    let seen = seen.lock().unwrap().clone();
    let to = |recipient: PartyIndex, kind: u8| -> Vec<Vec<u8>> {
        seen.iter()
            .map(|m| parts_of(m))
            .filter(|(r, k, _)| *r == recipient.get() && *k == kind)
            .map(|(_, _, body)| body.to_vec())
            .collect()
    };
    // The channel: the handshake's messages and the sealed signature.
    assert!(to(l, 4).len() >= 2, "channel frames to the laptop");
    // Every protocol message to the laptop is sealed: no frame body is an envelope, and the
    // laptop got the phone's messages (the keygen worked). To the server's party they are plain.
    let sealed = to(l, 1);
    assert!(!sealed.is_empty());
    for body in &sealed {
        assert!(tessera_core::Envelope::from_bytes(ph, body).is_err());
    }
    let plain = to(s, 1);
    assert!(
        plain
            .iter()
            .any(|body| tessera_core::Envelope::from_bytes(ph, body).is_ok())
    );
    // The shares are good: the laptop signs with the server.
    let digest = [0x33; 32];
    let sig = sign(
        &[
            (Place::Server(state.clone()), &shares[usize::from(s.get())]),
            (Place::Device(addr, devices), &shares[usize::from(l.get())]),
        ],
        digest,
    )
    .await;
    verify(&shares[0].public_key(), &digest, &sig);
}

/// A keygen under `and(server, or(phone, laptop))` with the phone's frames through a proxy
/// that applies `tamper`, the laptop trusting another key for the phone if `fooled`; each
/// party's result, in party order, as text.
async fn tampered_keygen(tamper: Tamper, fooled: bool) -> Vec<Result<(), String>> {
    let (_dir, state, Served { addr, .. }) = sqlite_replica().await;
    let (structure, s, ph, l) = phone_and_laptop();
    let (through, _) = proxy(addr, tamper).await;
    let devices = Devices::new(&[ph, l], fooled.then_some((l, ph)));
    let (wallet, nonce, sid) = (WalletId::random(), fresh_nonce(), new_session());
    let mut tasks = Vec::new();
    for party in structure.parties() {
        let place = if party == s {
            Place::Server(state.clone())
        } else if party == ph {
            Place::Device(through, devices.clone())
        } else {
            Place::Device(addr, devices.clone())
        };
        let session = StructureKeygenSession::new(wallet, &structure, party, &nonce).unwrap();
        let sid = sid.clone();
        tasks.push(tokio::spawn(async move {
            run_party(place, sid, session).await.map(|_| ())
        }));
    }
    let mut results = Vec::new();
    for task in tasks {
        results.push(task.await.unwrap());
    }
    results
}

/// The laptop's run failed on its channel with the phone (`why`), naming the phone's party.
fn laptop_refused(results: &[Result<(), String>], why: &str) {
    let (_, _, ph, l) = phone_and_laptop();
    let laptop = results[usize::from(l.get())].as_ref().unwrap_err();
    assert!(
        laptop.contains(&format!(
            "the end-to-end channel with party {ph} failed: {why}"
        )),
        "{laptop}"
    );
    // Nobody finished a keygen the laptop did not.
    assert!(results.iter().all(Result::is_err), "{results:?}");
}

/// The first protocol message (or part) the phone sends the laptop, changed by `change`.
fn first_sealed_to_laptop(change: fn(&[u8]) -> Vec<Vec<u8>>) -> Tamper {
    let (_, _, _, l) = phone_and_laptop();
    let mut done = false;
    Box::new(move |message: &[u8]| {
        let (to, kind, _) = parts_of(message);
        if !done && to == l.get() && (kind == 0 || kind == 1) {
            done = true;
            return change(message);
        }
        vec![message.to_vec()]
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sealed_frame_altered_or_replayed_on_the_way_is_refused() {
    // One bit of the ciphertext flipped.
    let results = tampered_keygen(
        first_sealed_to_laptop(|m| {
            let mut m = m.to_vec();
            let last = m.len() - 1;
            m[last] ^= 1;
            vec![m]
        }),
        false,
    )
    .await;
    laptop_refused(&results, "a frame did not decrypt");
    // The same frame twice.
    let results = tampered_keygen(
        first_sealed_to_laptop(|m| vec![m.to_vec(), m.to_vec()]),
        false,
    )
    .await;
    laptop_refused(&results, "a frame did not decrypt");
    // A plain envelope in place of the sealed one (what a server that wanted to speak for the
    // phone would write).
    let results = tampered_keygen(
        first_sealed_to_laptop(|m| {
            let mut m = m.to_vec();
            m.truncate(4);
            m.extend_from_slice(b"not a sealed frame");
            vec![m]
        }),
        false,
    )
    .await;
    laptop_refused(&results, "a frame did not decrypt");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_device_whose_key_is_not_the_one_trusted_is_refused() {
    let results = tampered_keygen(Box::new(|b: &[u8]| vec![b.to_vec()]), true).await;
    laptop_refused(
        &results,
        "its signature does not verify with the identity key this device trusts for it",
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_altered_handshake_message_is_refused() {
    // The phone (the lower index) starts the handshake: its second message to the laptop is
    // the third of Noise XX, which carries its encrypted static key.
    let (_, _, _, l) = phone_and_laptop();
    let mut channel_frames = 0;
    let results = tampered_keygen(
        Box::new(move |message: &[u8]| {
            let (to, kind, _) = parts_of(message);
            if to == l.get() && kind == 4 {
                channel_frames += 1;
            }
            if to == l.get() && kind == 4 && channel_frames == 2 {
                let mut m = message.to_vec();
                let last = m.len() - 1;
                m[last] ^= 0x80;
                return vec![m];
            }
            vec![message.to_vec()]
        }),
        false,
    )
    .await;
    laptop_refused(&results, "a handshake message that is not valid");
}

/// A peer whose mailbox is found closed when the device writes to it, with no end of its own:
/// after the grace, the pump tells the device in that peer's name that it left.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_found_gone_is_reported_to_the_device_after_the_grace() {
    let (_dir, state, Served { addr, .. }) = sqlite_replica().await;
    let sid = new_session();
    let boxes = state.mailboxes();
    let zero = boxes.open(&party_address(&sid, p(0))).await.unwrap();
    let _two = boxes.open(&party_address(&sid, p(2))).await.unwrap();
    let mut socket = connect(addr, &sid, p(1), &[p(0), p(2)], "").await;
    let deadline = Instant::now() + APPEAR;
    while boxes
        .route(&party_address(&sid, p(1)))
        .await
        .unwrap()
        .is_none()
    {
        assert!(Instant::now() < deadline, "the pump never opened");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // Party 0 goes without a word; the device writes to it.
    drop(zero);
    let message = frame_of(1, Body::Message(vec![1, 2, 3]));
    socket
        .send(Message::Binary(addressed(p(0), &message).into()))
        .await
        .unwrap();
    let told = loop {
        match socket.next().await {
            Some(Ok(Message::Binary(bytes))) => break bytes.to_vec(),
            Some(Ok(_)) => {}
            other => panic!("nothing from the pump: {other:?}"),
        }
    };
    assert_eq!(
        told,
        end_frame(p(0), &End::new(EndReason::Left, "its mailbox is closed"))
    );
}

/// A user `alice` with the active devices `phone` and `laptop` (their identity keys those of
/// `devices`' `ph` and `l`), and the phone as the authenticated requester.
async fn alice(
    state: &AppState,
    devices: &Devices,
    ph: PartyIndex,
    l: PartyIndex,
) -> tessera_server::auth::AuthDevice {
    use tessera_server::db::{self, DeviceStatus};
    db::devices::insert_user(state.db(), "u-alice", "alice", 1)
        .await
        .unwrap();
    for (id, name, party) in [("d-phone", "phone", ph), ("d-laptop", "laptop", l)] {
        db::devices::insert(
            state.db(),
            &db::devices::NewDevice {
                id,
                user_id: "u-alice",
                name,
                identity_key: &devices.ids[&party].public_key(),
                status: DeviceStatus::Active,
                at: 1,
            },
        )
        .await
        .unwrap();
    }
    tessera_server::auth::AuthDevice {
        device_id: "d-phone".into(),
        user_id: "u-alice".into(),
    }
}

/// The keygen of alice's wallet `family` under `and(server, or(phone, laptop))`, created.
async fn family(
    state: &AppState,
    requester: &tessera_server::auth::AuthDevice,
) -> Result<tessera_server::coordinator::KeygenJob, tessera_server::error::ApiError> {
    tessera_server::coordinator::create_keygen(
        state,
        requester,
        "family",
        "and(server, or(phone, laptop))",
        fresh_nonce(),
    )
    .await
}

async fn count_where(state: &AppState, sql: &str, bind: &str) -> i64 {
    let (n,): (i64,) = sqlx::query_as(sqlx::AssertSqlSafe(sql.to_string()))
        .bind(bind.to_string())
        .fetch_one(state.db())
        .await
        .unwrap();
    n
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_coordinator_runs_a_structure_keygen_and_stores_the_servers_share() {
    let (_dir, state, Served { addr, .. }) = sqlite_replica().await;
    coordinated_keygen(&state, addr).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_coordinator_runs_a_keygen_whose_devices_reach_another_replica() {
    let Some((_dir, _, a, b)) = two_replicas("coord").await else {
        eprintln!("TESSERA_TEST_DATABASE_URL not set: PostgreSQL skipped");
        return;
    };
    let Served { addr, .. } = serve(b.clone()).await;
    // The server's party (and the request) on replica A, both devices' sockets on replica B.
    coordinated_keygen(&a, addr).await;
}

/// A structure keygen created and run by the coordinator on `state`, the devices reaching the
/// session through the pump at `addr`; what is stored is checked, and the server's share signs.
async fn coordinated_keygen(state: &AppState, addr: SocketAddr) {
    use tessera_server::coordinator::{self, KeygenEnd};
    let state = state.clone();
    let (_, _, ph, l) = phone_and_laptop();
    let devices = Devices::new(&[ph, l], None);
    let requester = alice(&state, &devices, ph, l).await;

    // Refused before anything is stored: an unknown label, a name in use comes later.
    let refused = coordinator::create_keygen(
        &state,
        &requester,
        "family",
        "and(server, or(phone, tablet))",
        fresh_nonce(),
    )
    .await
    .unwrap_err();
    assert!(refused.to_string().contains("tablet"), "{refused}");
    assert_eq!(
        count_where(
            &state,
            "SELECT COUNT(*) FROM wallets WHERE name = $1",
            "family"
        )
        .await,
        0
    );

    let job = family(&state, &requester).await.unwrap();
    let server_run = {
        let (state, job) = (state.clone(), job.clone());
        tokio::spawn(async move { coordinator::run_keygen(&state, &job, APPEAR).await })
    };
    // The devices take part with what the server told them: the wallet, the structure (their
    // party by their label) and the nonce.
    let mut tasks = Vec::new();
    for label in ["phone", "laptop"] {
        let party = job.structure.party(label).unwrap();
        let session =
            StructureKeygenSession::new(job.wallet, &job.structure, party, &job.nonce).unwrap();
        let place = Place::Device(addr, devices.clone());
        tasks.push(tokio::spawn(run_party(
            place,
            job.session_id.clone(),
            session,
        )));
    }
    let mut shares = Vec::new();
    for task in tasks {
        shares.push(task.await.unwrap().unwrap());
    }
    let KeygenEnd::Stored(public_key) = server_run.await.unwrap() else {
        panic!("the server's run did not store its share");
    };
    assert!(shares.iter().all(|s| s.public_key() == public_key));

    // Stored: the wallet's key, the server's share (it unseals to the same key), the session's
    // end and its record.
    let wallet_id = job.wallet.to_string();
    assert_eq!(
        count_where(
            &state,
            "SELECT COUNT(*) FROM wallets WHERE id = $1 AND public_key IS NOT NULL",
            &wallet_id
        )
        .await,
        1
    );
    let server_share = tessera_server::vault::load_active(&state, &wallet_id)
        .await
        .unwrap();
    assert_eq!(server_share.public_key(), public_key);
    assert_eq!(Some(server_share.party()), job.structure.party("server"));
    assert_eq!(
        count_where(
            &state,
            "SELECT COUNT(*) FROM sessions WHERE id = $1 AND status = 'done'",
            job.session_id.as_str()
        )
        .await,
        1
    );
    assert_eq!(
        count_where(
            &state,
            "SELECT COUNT(*) FROM audit_log WHERE kind = 'keygen.done' AND wallet_id = $1",
            &wallet_id
        )
        .await,
        1
    );
    // The server's stored share signs with the laptop's.
    let laptop = shares.iter().find(|s| s.party() == l).unwrap();
    let digest = [0x44; 32];
    let sig = sign(
        &[
            (Place::Server(state.clone()), &server_share),
            (Place::Device(addr, devices.clone()), laptop),
        ],
        digest,
    )
    .await;
    verify(&public_key, &digest, &sig);

    // The name is taken now.
    let taken = family(&state, &requester).await.unwrap_err();
    assert!(taken.to_string().contains("family"), "{taken}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_keygen_whose_party_never_comes_expires_naming_it_and_stores_no_key() {
    use tessera_server::coordinator::{self, KeygenEnd};
    use tessera_server::db::SessionStatus;
    let (_dir, state, Served { addr, .. }) = sqlite_replica().await;
    let (_, s, ph, l) = phone_and_laptop();
    let devices = Devices::new(&[ph, l], None);
    let requester = alice(&state, &devices, ph, l).await;
    let job = family(&state, &requester).await.unwrap();
    // Only the phone comes; the server waits for the laptop a short time.
    let phone = {
        let session =
            StructureKeygenSession::new(job.wallet, &job.structure, ph, &job.nonce).unwrap();
        tokio::spawn(run_party(
            Place::Device(addr, devices.clone()),
            job.session_id.clone(),
            session,
        ))
    };
    let end = coordinator::run_keygen(&state, &job, Duration::from_secs(2)).await;
    let KeygenEnd::Failed {
        status,
        reason,
        party,
    } = end
    else {
        panic!("stored without the laptop");
    };
    assert_eq!(status, SessionStatus::Expired);
    assert_eq!(party, Some(l), "{reason}");
    assert!(
        reason.contains(&format!("party {l} did not open its mailbox")),
        "{reason}"
    );
    // The phone hears it from the server's party at once (not after its own wait for the
    // laptop).
    let phone = phone.await.unwrap().unwrap_err();
    assert!(
        phone.contains(&format!(
            "party {s} ended the session (expired: party {l} did not open"
        )),
        "{phone}"
    );
    let wallet_id = job.wallet.to_string();
    assert_eq!(
        count_where(
            &state,
            "SELECT COUNT(*) FROM wallets WHERE id = $1 AND public_key IS NULL",
            &wallet_id
        )
        .await,
        1
    );
    assert_eq!(
        count_where(
            &state,
            "SELECT COUNT(*) FROM server_shares WHERE wallet_id = $1",
            &wallet_id
        )
        .await,
        0
    );
    assert_eq!(
        count_where(
            &state,
            "SELECT COUNT(*) FROM audit_log WHERE kind = 'session.expired' AND wallet_id = $1",
            &wallet_id
        )
        .await,
        1
    );
    // The run is over: it cannot be started again.
    let again = coordinator::run_keygen(&state, &job, Duration::from_secs(2)).await;
    assert!(
        matches!(&again, KeygenEnd::Failed { reason, .. } if reason.contains("already running or over")),
        "{again:?}"
    );
}
