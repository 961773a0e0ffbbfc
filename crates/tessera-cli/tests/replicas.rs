//! Two `tessera server` replicas sharing one PostgreSQL (and the data directory's key files):
//! keygen through one, sign, refresh and audit verify through the other; a replica that dies
//! mid-session has its sessions ended by the other. The device relay across replicas: the two
//! devices of one code on different replicas, its caps counted over both, a replica killed
//! while relaying.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use tessera_client::peer::relay::new_code;
use tokio_tungstenite::tungstenite::Message;

use tessera_api::intent::SignKind;
use tessera_client::{ServerClient, WalletRecord};
use tessera_core::DerivationPath;

use common::relay::{PER_ADDRESS, Socket, address, open_relay};
use common::{Server, fresh_postgres_database};

mod common;

#[tokio::test]
async fn two_replicas_share_one_postgresql() {
    let database = fresh_postgres_database();
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let mut a = Server::start(&data, &["--database-url", &database]);
    let b = Server::start(&data, &["--database-url", &database]);
    assert_ne!(a.url, b.url);

    let home = tempfile::tempdir().unwrap();
    let id = common::identity(home.path());
    // Registered and keygen through A.
    let mut via_a = ServerClient::new(&a.url).unwrap();
    let device = via_a.register(&id, "replicated", "laptop").await.unwrap();
    via_a.login(&id, &device.device_id).await.unwrap();
    let share = via_a.keygen("w", |_, _| {}).await.unwrap();
    let wallet = share.wallet_id().to_string();
    let pk = share.public_key();

    // Sign, refresh and sign again through B; a token from A works on B too.
    let mut via_b = ServerClient::new(&b.url).unwrap();
    via_b.login(&id, &device.device_id).await.unwrap();
    let kind = SignKind::EthMessage {
        message: "through the other replica".into(),
    };
    let root = DerivationPath::root();
    via_b
        .sign_kind(&share, &kind, &root, |_, _| {}, |_| {})
        .await
        .unwrap();
    let mut record = WalletRecord::new(share);
    assert_eq!(via_b.refresh(&mut record, |_, _| Ok(())).await.unwrap(), 1);
    let sig = via_b
        .sign_kind(&record.current, &kind, &root, |_, _| {}, |_| {})
        .await
        .unwrap();
    pk.verify(&tessera_api::intent::decode(&kind).unwrap().digest, &sig)
        .unwrap();
    assert_eq!(via_a.pubkey(&wallet).await.unwrap().epoch, 1);

    // One audit chain, written by both, intact.
    let v = via_b.audit_verify().await.unwrap();
    assert!(v.first_bad.is_none(), "{v:?}");
    let kinds: Vec<String> = via_a
        .audit(Some(&wallet))
        .await
        .unwrap()
        .into_iter()
        .map(|r| r.kind)
        .collect();
    for k in ["keygen.done", "sign.completed", "refresh.done"] {
        assert!(kinds.iter().any(|x| x == k), "{k} missing: {kinds:?}");
    }

    // A dies while running a refresh session: B ends that session (A's liveness lock is gone)
    // and the wallet can be refreshed again through B.
    let http = reqwest::Client::new();
    let created: tessera_api::SessionCreated = http
        .post(format!("{}/refresh", a.url))
        .bearer_auth(via_a.token().unwrap())
        .json(&tessera_api::RefreshRequest {
            wallet_id: wallet.clone().into(),
            device_nonce: None,
        })
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let req = common::ws_request(&a.url, via_a.token().unwrap(), &created.session_id);
    let (socket, _) = tokio_tungstenite::connect_async(req).await.unwrap();
    a.kill();
    drop(socket);
    let started = Instant::now();
    loop {
        match via_b.refresh(&mut record, |_, _| Ok(())).await {
            Ok(epoch) => {
                assert_eq!(epoch, 2);
                break;
            }
            Err(tessera_client::ClientError::Server { status: 409, .. })
                if started.elapsed() < Duration::from_secs(30) =>
            {
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
            Err(e) => panic!("the dead replica's session was not ended: {e}"),
        }
    }
    let sig = via_b
        .sign_kind(&record.current, &kind, &root, |_, _| {}, |_| {})
        .await
        .unwrap();
    pk.verify(&tessera_api::intent::decode(&kind).unwrap().digest, &sig)
        .unwrap();
}

/// The next relayed frame; `None` when the relay closed the socket instead.
async fn next_frame(ws: &mut Socket) -> Option<Vec<u8>> {
    loop {
        match ws.next().await {
            Some(Ok(Message::Binary(b))) => return Some(b.to_vec()),
            Some(Ok(Message::Ping(_) | Message::Pong(_))) => {}
            Some(Ok(Message::Close(_)) | Err(_)) | None => return None,
            Some(Ok(other)) => panic!("unexpected {other:?}"),
        }
    }
}

/// A frame of `len` bytes that differs from every other test frame.
fn frame(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u8).wrapping_mul(29).wrapping_add(seed))
        .collect()
}

/// Around the limits: PostgreSQL's 8,000-byte NOTIFY payload, the largest Noise message
/// (the relay's frame limit) and 64 KiB.
const SIZES: [usize; 6] = [1, 3_000, 7_999, 8_001, 65_535, 65_536];

async fn send_all(from: &mut Socket, seed: u8) {
    for (i, len) in SIZES.iter().enumerate() {
        from.send(Message::Binary(frame(*len, seed + i as u8).into()))
            .await
            .unwrap();
    }
}

async fn receive_all(to: &mut Socket, seed: u8) {
    for (i, len) in SIZES.iter().enumerate() {
        let got = next_frame(to).await.expect("a relayed frame");
        assert_eq!(got.len(), *len);
        assert!(got == frame(*len, seed + i as u8), "frame {i} changed");
    }
}

/// The two devices of a new room on `code`: the first on `first`, the second on `second`, and
/// a hello from the second to the first (as a handshake's reply: once the first device hears
/// from the second, the room is set up on both replicas and more than the early frames may
/// flow).
async fn pair(first: SocketAddr, second: SocketAddr, code: &str) -> (Socket, Socket) {
    let mut a = open_relay(first, "127.0.0.1", code).await.unwrap();
    let mut b = open_relay(second, "127.0.0.1", code).await.unwrap();
    b.send(Message::Binary(b"hello".to_vec().into()))
        .await
        .unwrap();
    assert_eq!(next_frame(&mut a).await.unwrap(), b"hello");
    (a, b)
}

/// Waits until no frame, relay code or mailbox is left in `db` (the replicas delete their own
/// as their sockets close, in the background).
async fn nothing_left_in(db: &sqlx::AnyPool) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (frames, codes, boxes): (i64, i64, i64) = sqlx::query_as(
            "SELECT (SELECT COUNT(*) FROM mailbox_frames), (SELECT COUNT(*) FROM relay_codes), \
             (SELECT COUNT(*) FROM mailboxes)",
        )
        .fetch_one(db)
        .await
        .unwrap();
        if (frames, codes, boxes) == (0, 0, 0) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "left behind: {frames} frames, {codes} codes, {boxes} mailboxes"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Two replicas of one fresh PostgreSQL database.
fn two_replicas(data: &std::path::Path) -> (Server, Server) {
    let database = fresh_postgres_database();
    let a = Server::start(data, &["--database-url", &database]);
    let b = Server::start(data, &["--database-url", &database]);
    (a, b)
}

#[tokio::test]
async fn relay_rooms_span_replicas() {
    let dir = tempfile::tempdir().unwrap();
    let (one, two) = two_replicas(&dir.path().join("data"));
    let (at1, at2) = (address(&one), address(&two));

    // The first device on replica 1 sends its opening before the second arrives on replica 2.
    let code = new_code();
    let mut first = open_relay(at1, "127.0.0.1", &code).await.unwrap();
    first
        .send(Message::Binary(b"early one".to_vec().into()))
        .await
        .unwrap();
    first
        .send(Message::Binary(frame(9_000, 1).into()))
        .await
        .unwrap();
    let mut second = open_relay(at2, "127.0.0.1", &code).await.unwrap();
    assert_eq!(next_frame(&mut second).await.unwrap(), b"early one");
    assert!(next_frame(&mut second).await.unwrap() == frame(9_000, 1));

    // Every size, intact and in order, both ways, twice.
    for round in 0..2u8 {
        send_all(&mut first, round * 32).await;
        receive_all(&mut second, round * 32).await;
        send_all(&mut second, round * 32 + 16).await;
        receive_all(&mut first, round * 32 + 16).await;
    }
    // Both ways at once.
    let (mut f_tx, mut f_rx) = first.split();
    let (mut s_tx, mut s_rx) = second.split();
    let to_second = async {
        for i in 0..40u8 {
            let f = frame(if i % 2 == 0 { 100 } else { 20_000 }, i);
            f_tx.send(Message::Binary(f.into())).await.unwrap();
        }
    };
    let to_first = async {
        for i in 0..40u8 {
            let f = frame(if i % 3 == 0 { 30_000 } else { 10 }, i);
            s_tx.send(Message::Binary(f.into())).await.unwrap();
        }
    };
    let at_second = async {
        for i in 0..40u8 {
            let f = frame(if i % 2 == 0 { 100 } else { 20_000 }, i);
            match s_rx.next().await {
                Some(Ok(Message::Binary(b))) => assert!(b.as_ref() == f.as_slice(), "frame {i}"),
                other => panic!("{other:?}"),
            }
        }
    };
    let at_first = async {
        for i in 0..40u8 {
            let f = frame(if i % 3 == 0 { 30_000 } else { 10 }, i);
            match f_rx.next().await {
                Some(Ok(Message::Binary(b))) => assert!(b.as_ref() == f.as_slice(), "frame {i}"),
                other => panic!("{other:?}"),
            }
        }
    };
    tokio::join!(to_second, to_first, at_second, at_first);
    let mut first = f_tx.reunite(f_rx).unwrap();
    let mut second = s_tx.reunite(s_rx).unwrap();

    // The second device leaves: the first one's socket is closed.
    second.close(None).await.unwrap();
    drop(second);
    assert!(next_frame(&mut first).await.is_none());

    // Nothing stays stored, and the code is free again, on either replica.
    nothing_left_in(&one.database().await).await;
    let mut again = open_relay(at2, "127.0.0.1", &code).await.unwrap();
    let mut other = open_relay(at1, "127.0.0.1", &code).await.unwrap();
    other
        .send(Message::Binary(b"again".to_vec().into()))
        .await
        .unwrap();
    assert_eq!(next_frame(&mut again).await.unwrap(), b"again");

    // Both devices on one replica: joined in process, as with one server.
    let code = new_code();
    let (mut x, mut y) = pair(at2, at2, &code).await;
    send_all(&mut x, 7).await;
    receive_all(&mut y, 7).await;

    // A malformed code is refused on either replica before anything is stored.
    assert_eq!(
        open_relay(at1, "127.0.0.1", "not-a-code").await.err(),
        Some(400)
    );
}

#[tokio::test]
async fn the_relay_caps_hold_across_replicas() {
    let dir = tempfile::tempdir().unwrap();
    let (one, two) = two_replicas(&dir.path().join("data"));
    let (at1, at2) = (address(&one), address(&two));

    // 60 first devices from one address at once, half on each replica: exactly the cap wait.
    let opens = (0..60).map(|i| {
        let at = if i % 2 == 0 { at1 } else { at2 };
        async move { open_relay(at, "127.0.0.3", &new_code()).await }
    });
    let results = futures_util::future::join_all(opens).await;
    let (held, refused): (Vec<_>, Vec<_>) = results.into_iter().partition(Result::is_ok);
    assert_eq!(held.len(), PER_ADDRESS, "refusals: {refused:?}");
    assert!(refused.iter().all(|r| matches!(r, Err(409))), "{refused:?}");

    // Another address is not affected, on either replica.
    let mut other = open_relay(at1, "127.0.0.4", &new_code()).await.unwrap();
    let mut other_2 = open_relay(at2, "127.0.0.4", &new_code()).await.unwrap();
    other.close(None).await.unwrap();
    other_2.close(None).await.unwrap();

    // They leave: their slots come back on both replicas (each replica frees its own at once;
    // this only waits for the sockets' end to reach it), and the cap holds again.
    drop(held);
    let mut again = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    while again.len() < PER_ADDRESS {
        let at = if again.len() % 2 == 0 { at2 } else { at1 };
        match open_relay(at, "127.0.0.3", &new_code()).await {
            Ok(ws) => again.push(ws),
            Err(409) if Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(status) => panic!("the slots did not come back: {status}"),
        }
    }
    for at in [at1, at2] {
        assert_eq!(
            open_relay(at, "127.0.0.3", &new_code()).await.err(),
            Some(409)
        );
    }
}

#[tokio::test]
async fn a_replica_killed_while_relaying_frees_its_rooms() {
    let dir = tempfile::tempdir().unwrap();
    let (mut one, two) = two_replicas(&dir.path().join("data"));
    let (at1, at2) = (address(&one), address(&two));
    let db = two.database().await;

    // A pair relaying across the replicas, and a first device waiting on replica 1.
    let code = new_code();
    let (mut on_one, mut on_two) = pair(at1, at2, &code).await;
    send_all(&mut on_one, 3).await;
    receive_all(&mut on_two, 3).await;
    let waiting_code = new_code();
    let _waiting = open_relay(at1, "127.0.0.1", &waiting_code).await.unwrap();

    // Replica 1 dies. Frames the device on replica 2 sends now go to a mailbox nobody will
    // read (stored until replica 2 forgets replica 1, then deleted).
    one.kill();
    drop(on_one);
    for i in 0..3u8 {
        if on_two
            .send(Message::Binary(frame(20_000, i).into()))
            .await
            .is_err()
        {
            break;
        }
    }
    // Replica 2 notices (its housekeeping checks liveness every few seconds) and closes the
    // device's socket: a bounded wait, not a hang.
    let closed = tokio::time::timeout(Duration::from_secs(120), next_frame(&mut on_two)).await;
    assert_eq!(closed.ok(), Some(None), "the device was not closed");
    // Nothing of replica 1 stays behind (nor of the closed room on replica 2).
    nothing_left_in(&db).await;

    // Both codes are usable again on replica 2, with a third replica joining in.
    let three = Server::start(
        &dir.path().join("data"),
        &["--database-url", &two.database_url.clone().unwrap()],
    );
    let at3 = address(&three);
    for c in [&code, &waiting_code] {
        let (mut a, mut b) = pair(at2, at3, c).await;
        send_all(&mut a, 5).await;
        receive_all(&mut b, 5).await;
        send_all(&mut b, 6).await;
        receive_all(&mut a, 6).await;
    }
}

#[tokio::test]
async fn a_dead_replicas_waiting_code_is_taken_over_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let (mut one, two) = two_replicas(&dir.path().join("data"));
    let at2 = address(&two);
    let code = new_code();
    let _waiting = open_relay(address(&one), "127.0.0.1", &code).await.unwrap();
    one.kill();
    // PostgreSQL releases a dead client's locks when it sees its connection end: wait for that
    // (replica 2's own lock stays).
    let db = two.database().await;
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let (locks,): (i64,) = sqlx::query_as(
            "SELECT COUNT(*) FROM pg_locks WHERE locktype = 'advisory' AND classid = 32341 \
             AND database = (SELECT oid FROM pg_database WHERE datname = current_database())",
        )
        .fetch_one(&db)
        .await
        .unwrap();
        if locks == 1 {
            break;
        }
        assert!(Instant::now() < deadline, "replica 1's lock stayed");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // The next device of that code finds replica 1 dead and waits in its place; the one after
    // it joins.
    let mut first = open_relay(at2, "127.0.0.1", &code).await.unwrap();
    let mut second = open_relay(at2, "127.0.0.1", &code).await.unwrap();
    first
        .send(Message::Binary(b"taken over".to_vec().into()))
        .await
        .unwrap();
    assert_eq!(next_frame(&mut second).await.unwrap(), b"taken over");
}
