//! Bans, wallet locks, the release record of a signature and the deletion of old share epochs,
//! against real `tessera server` processes, with a device behind the tampering proxy.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::cell::RefCell;

use futures_util::{SinkExt, StreamExt};
use tessera_api as api;
use tessera_client::{ClientError, RefreshStep, ServerClient, WalletRecord};
use tessera_core::protocols::{SignRequest, SignSession};
use tessera_core::{DerivationPath, KeyShare, PartyIndex, Session};
use tessera_store::DeviceIdentity;
use tokio_tungstenite::tungstenite::Message;

use common::proxy::{Direction, Tamper, TamperProxy};
use common::{Server, allow_digests, fresh_postgres_database, identity, ws_request};

mod common;

const DEVICE: PartyIndex = PartyIndex::new(0);
const SERVER: PartyIndex = PartyIndex::new(1);

/// A server on SQLite, or on a fresh PostgreSQL database.
fn server(postgres: bool, extra: &[&str]) -> Server {
    let mut args: Vec<String> = extra.iter().map(|s| s.to_string()).collect();
    if postgres {
        args.push("--database-url".into());
        args.push(fresh_postgres_database());
    }
    let refs: Vec<&str> = args.iter().map(String::as_str).collect();
    Server::start_fresh(&refs)
}

struct Device {
    client: ServerClient,
    id: DeviceIdentity,
    device: api::Device,
    _home: tempfile::TempDir,
}

/// Registers a device of `user` that talks to `url` (the proxy's or the server's).
async fn register(url: &str, user: &str, name: &str) -> Device {
    let home = tempfile::tempdir().unwrap();
    let id = identity(home.path());
    let client = ServerClient::new(url).unwrap();
    let device = client.register(&id, user, name).await.unwrap();
    Device {
        client,
        id,
        device,
        _home: home,
    }
}

/// A logged-in device with a fresh wallet that allows raw digests.
async fn device_with_wallet(url: &str) -> (Device, WalletRecord) {
    let mut d = register(url, "alice", "laptop").await;
    d.client.login(&d.id, &d.device.device_id).await.unwrap();
    let share = d.client.keygen("main", |_, _| {}).await.unwrap();
    d.client
        .set_policy(&d.id, &share.wallet_id().to_string(), &allow_digests())
        .await
        .unwrap();
    (d, WalletRecord::new(share))
}

/// A second device of alice, approved by `by`, logged in.
async fn second_device(url: &str, by: &Device) -> Device {
    let mut phone = register(url, "alice", "phone").await;
    by.client
        .approve(&by.id, &api::approval_code(&phone.id.public_key()))
        .await
        .unwrap();
    phone
        .client
        .login(&phone.id, &phone.device.device_id)
        .await
        .unwrap();
    phone
}

async fn sign(client: &ServerClient, share: &KeyShare, byte: u8) -> Result<(), ClientError> {
    let path = master();
    let digest = [byte; 32];
    let sig = client.sign(share, digest, &path, |_, _| {}).await?;
    share.public_key().verify(&digest, &sig).unwrap();
    Ok(())
}

fn master() -> DerivationPath {
    "m".parse().unwrap()
}

fn detail(record: &api::AuditRecord) -> serde_json::Value {
    serde_json::from_str(&record.detail).unwrap()
}

fn kinds(records: &[api::AuditRecord]) -> Vec<String> {
    records.iter().map(|r| r.kind.clone()).collect()
}

/// `POST /sign` of a raw digest by hand, for tests that drive the socket themselves.
async fn create_sign_session(
    url: &str,
    client: &ServerClient,
    wallet: &str,
    digest: [u8; 32],
) -> api::SessionCreated {
    tessera_client::tls::install_crypto_provider();
    reqwest::Client::new()
        .post(format!("{url}/sign"))
        .bearer_auth(client.token().unwrap())
        .json(&api::SignIntentRequest {
            wallet_id: wallet.into(),
            path: "m".into(),
            kind: tessera_api::intent::SignKind::Digest {
                digest: hex::encode(digest),
            },
            device_nonce: None,
            with: vec![],
        })
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

/// Refreshes with the record kept in memory.
async fn refresh(client: &ServerClient, record: &mut WalletRecord) -> Result<u64, ClientError> {
    client.refresh(record, |_, _| Ok(())).await
}

#[tokio::test]
async fn a_device_blamed_by_the_engine_is_banned_until_an_approved_refresh() {
    for postgres in [false, true] {
        ban_and_lift(postgres).await;
    }
}

async fn ban_and_lift(postgres: bool) {
    let server = server(postgres, &[]);
    let proxy = TamperProxy::start(&server.url).await;
    let (laptop, mut record) = device_with_wallet(&proxy.url).await;
    let wallet = record.current.wallet_id().to_string();
    sign(&laptop.client, &record.current, 1).await.unwrap();

    // Flip bits in the OT-extension data of the device's first signing message (round 1: the
    // bulk of the frame): the server's KOS consistency check fails and blames the device.
    proxy.on(Direction::ToServer, 0, Tamper::flip_middle(0x5a));
    let err = sign(&laptop.client, &record.current, 2).await.unwrap_err();
    assert!(
        matches!(err, ClientError::Closed { code: 4403, .. }),
        "{err}"
    );
    assert_eq!(proxy.pending(), 0);

    // Recorded (wallet, party, session, round, reason) and audited.
    let bans = laptop.client.bans(&wallet).await.unwrap();
    assert_eq!(bans.len(), 1, "{bans:?}");
    let ban = bans[0].clone();
    assert_eq!(ban.party, 0);
    assert_eq!(ban.round, 1);
    assert_eq!(
        ban.device_id.as_deref(),
        Some(laptop.device.device_id.as_str())
    );
    assert!(ban.lifted_at.is_none());
    let audit = laptop.client.audit(Some(&wallet)).await.unwrap();
    let banned = audit.iter().find(|r| r.kind == "party.banned").unwrap();
    assert_eq!(detail(banned)["ban_id"], ban.ban_id.as_str());
    assert_eq!(detail(banned)["session_id"], ban.session_id.as_str());

    // The next POST /sign of that device is refused, naming the ban; so is a refresh nobody
    // approved.
    let refused = sign(&laptop.client, &record.current, 3).await.unwrap_err();
    match &refused {
        ClientError::Server {
            status: 403,
            message,
            ..
        } => {
            assert!(message.contains("banned"), "{message}");
            assert!(message.contains(ban.ban_id.as_str()), "{message}");
        }
        other => panic!("expected a 403 naming the ban, got {other}"),
    }
    let refused = refresh(&laptop.client, &mut record).await.unwrap_err();
    assert!(
        matches!(&refused, ClientError::Server { status: 403, message, .. } if message.contains(ban.ban_id.as_str())),
        "{refused}"
    );

    // The banned device cannot approve its own lift; a forged signature does not either.
    let own = laptop
        .client
        .approve_ban_lift(&laptop.id, &ban)
        .await
        .unwrap_err();
    assert!(
        matches!(own, ClientError::Server { status: 403, .. }),
        "{own}"
    );
    let phone = second_device(&server.url, &laptop).await;
    let forged = phone
        .client
        .approve_ban_lift(&laptop.id, &ban)
        .await
        .unwrap_err();
    assert!(
        matches!(forged, ClientError::Server { status: 401, .. }),
        "{forged}"
    );
    // Another active device of the owner approves it.
    let approved = phone
        .client
        .approve_ban_lift(&phone.id, &ban)
        .await
        .unwrap();
    assert_eq!(
        approved.lift_approved_by.as_deref(),
        Some(phone.device.device_id.as_str())
    );
    // Approved but not yet lifted: signing is still refused, only the refresh may run.
    let refused = sign(&laptop.client, &record.current, 4).await.unwrap_err();
    assert!(
        matches!(refused, ClientError::Server { status: 403, .. }),
        "{refused}"
    );
    let epoch = refresh(&laptop.client, &mut record).await.unwrap();
    assert_eq!(epoch, 1);

    // The refresh lifted it; signing works again.
    let bans = laptop.client.bans(&wallet).await.unwrap();
    assert!(bans[0].lifted_at.is_some(), "{bans:?}");
    sign(&laptop.client, &record.current, 5).await.unwrap();
    let kinds = kinds(&laptop.client.audit(Some(&wallet)).await.unwrap());
    for kind in [
        "party.banned",
        "party.ban_lift_approved",
        "party.ban_lifted",
    ] {
        assert!(
            kinds.iter().any(|k| k == kind),
            "{kind} missing from {kinds:?}"
        );
    }

    // The same tampering again: banned again, one attempt per approval.
    proxy.on(Direction::ToServer, 0, Tamper::flip_middle(0x5a));
    let err = sign(&laptop.client, &record.current, 6).await.unwrap_err();
    assert!(
        matches!(err, ClientError::Closed { code: 4403, .. }),
        "{err}"
    );
    let refused = sign(&laptop.client, &record.current, 7).await.unwrap_err();
    assert!(
        matches!(refused, ClientError::Server { status: 403, .. }),
        "{refused}"
    );
    let bans = laptop.client.bans(&wallet).await.unwrap();
    assert_eq!(bans.iter().filter(|b| b.lifted_at.is_none()).count(), 1);
}

/// Waits (no timing assumption: until it happens) for the server to have counted `n` aborts.
async fn aborts_counted(db: &sqlx::AnyPool, wallet: &str, n: i64) {
    for _ in 0..600 {
        let (count,): (i64,) =
            sqlx::query_as("SELECT COUNT(*) FROM wallet_aborts WHERE wallet_id = $1")
                .bind(wallet)
                .fetch_one(db)
                .await
                .unwrap();
        if count >= n {
            assert_eq!(count, n);
            return;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    panic!("the server never counted {n} aborts");
}

#[tokio::test]
async fn repeated_disconnects_mid_protocol_lock_the_wallet_until_a_refresh() {
    for postgres in [false, true] {
        disconnects_lock(postgres).await;
    }
}

async fn disconnects_lock(postgres: bool) {
    let server = server(postgres, &["--abort-limit", "2"]);
    let db = server.database().await;
    let proxy = TamperProxy::start(&server.url).await;
    let (laptop, mut record) = device_with_wallet(&proxy.url).await;
    let wallet = record.current.wallet_id().to_string();
    // A signing session created before the lock, to be opened after it.
    let early = create_sign_session(&server.url, &laptop.client, &wallet, [30u8; 32]).await;
    // Three signings cut after the device's second message: the third is one too many.
    for n in 1..=3 {
        proxy.on(Direction::ToServer, 1, Tamper::Cut);
        let err = sign(&laptop.client, &record.current, n).await.unwrap_err();
        assert!(matches!(err, ClientError::Network(_)), "{err}");
        aborts_counted(&db, &wallet, i64::from(n)).await;
        if n < 3 {
            // Below the limit, the wallet still signs (and a good run does not reset the count).
            sign(&laptop.client, &record.current, 10 + n).await.unwrap();
        }
    }
    let refused = sign(&laptop.client, &record.current, 20).await.unwrap_err();
    assert!(
        matches!(&refused, ClientError::Server { status: 403, message, .. } if message.contains("locked")),
        "{refused}"
    );
    // The session created before the lock cannot be opened after it: the socket is refused
    // with the lock's reason before any protocol message.
    let request = ws_request(
        &server.url,
        laptop.client.token().unwrap(),
        &early.session_id,
    );
    match tokio_tungstenite::connect_async(request).await {
        Err(tokio_tungstenite::tungstenite::Error::Http(resp)) => {
            assert_eq!(resp.status().as_u16(), 403);
            let body = String::from_utf8_lossy(resp.body().as_deref().unwrap_or_default());
            assert!(body.contains("locked"), "{body}");
        }
        other => panic!(
            "opening a session of a locked wallet: {:?}",
            other.map(|_| ())
        ),
    }
    // The lock's audit record is appended right after the lock row (the lead's audit
    // primitive will commit both together): wait for it.
    let mut audit = Vec::new();
    for _ in 0..600 {
        audit = laptop.client.audit(Some(&wallet)).await.unwrap();
        if audit.iter().any(|r| r.kind == "wallet.locked") {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    let locked = audit.iter().find(|r| r.kind == "wallet.locked").unwrap();
    assert!(
        detail(locked)["reason"]
            .as_str()
            .unwrap()
            .contains("limit is 2"),
        "{}",
        locked.detail
    );
    // A refresh unlocks it (nobody is banned, no approval needed) and clears the count.
    refresh(&laptop.client, &mut record).await.unwrap();
    sign(&laptop.client, &record.current, 21).await.unwrap();
    let kinds = kinds(&laptop.client.audit(Some(&wallet)).await.unwrap());
    assert!(kinds.iter().any(|k| k == "wallet.unlocked"), "{kinds:?}");
    let (left,): (i64,) = sqlx::query_as("SELECT COUNT(*) FROM wallet_aborts WHERE wallet_id = $1")
        .bind(&wallet)
        .fetch_one(&db)
        .await
        .unwrap();
    assert_eq!(left, 0);
}

#[tokio::test]
async fn the_device_bans_a_server_whose_frames_were_tampered() {
    let server = server(false, &[]);
    let proxy = TamperProxy::start(&server.url).await;
    let (laptop, mut record) = device_with_wallet(&proxy.url).await;
    let stored = RefCell::new(Vec::new());
    let store = |r: &WalletRecord| {
        *stored.borrow_mut() = r.to_bytes().to_vec();
        Ok(())
    };
    let kind = tessera_api::intent::SignKind::Digest {
        digest: hex::encode([9u8; 32]),
    };
    let path = master();
    // The server's round-1 OT-extension data, tampered on its way: the device's KOS check fails
    // and blames the server.
    proxy.on(Direction::ToDevice, 0, Tamper::flip_middle(0x5a));
    let err = laptop
        .client
        .sign_wallet(&mut record, store, &kind, &path, |_, _| {}, |_| {})
        .await
        .unwrap_err();
    match &err {
        ClientError::PartyBlamed {
            party: 1, round: 1, ..
        } => {}
        other => panic!("expected the server to be blamed, got {other}"),
    }
    // The ban was stored with the record.
    let reread = WalletRecord::from_bytes(&stored.borrow()).unwrap();
    assert_eq!(reread.bans.len(), 1);
    assert_eq!(reread.bans[0].party, 1);
    assert_eq!(reread.bans[0].round, 1);
    assert!(!reread.bans[0].lift_approved);

    // Every later session of the wallet is refused here, before anything reaches the server.
    let mut record = reread;
    let websockets = proxy.websockets();
    let err = laptop
        .client
        .sign_wallet(&mut record, |_| Ok(()), &kind, &path, |_, _| {}, |_| {})
        .await
        .unwrap_err();
    assert!(
        matches!(&err, ClientError::Banned(m) if m.contains("party 1 is banned")),
        "{err}"
    );
    let err = laptop
        .client
        .refresh(&mut record, |_, _| Ok(()))
        .await
        .unwrap_err();
    assert!(matches!(err, ClientError::Banned(_)), "{err}");
    assert_eq!(proxy.websockets(), websockets);

    // The owner approves the lift on this device; a complete refresh lifts it.
    record.approve_lift();
    let err = laptop
        .client
        .sign_wallet(&mut record, |_| Ok(()), &kind, &path, |_, _| {}, |_| {})
        .await
        .unwrap_err();
    assert!(matches!(err, ClientError::Banned(_)), "{err}");
    let mut steps = Vec::new();
    laptop
        .client
        .refresh(&mut record, |s, _| {
            steps.push(s);
            Ok(())
        })
        .await
        .unwrap();
    assert!(steps.contains(&RefreshStep::Switched));
    assert!(record.bans.is_empty());
    let reread = WalletRecord::from_bytes(&record.to_bytes()).unwrap();
    assert!(reread.bans.is_empty());
    laptop
        .client
        .sign_wallet(&mut record, |_| Ok(()), &kind, &path, |_, _| {}, |_| {})
        .await
        .unwrap();
}

/// The server's share rows of a wallet: (epoch, state).
async fn share_rows(db: &sqlx::AnyPool, wallet: &str) -> Vec<(i64, String)> {
    sqlx::query_as("SELECT epoch, state FROM server_shares WHERE wallet_id = $1 ORDER BY epoch")
        .bind(wallet)
        .fetch_all(db)
        .await
        .unwrap()
}

#[tokio::test]
async fn a_refresh_deletes_the_old_epoch_and_a_crash_leaves_one_usable_epoch() {
    for postgres in [false, true] {
        old_epochs(postgres).await;
    }
}

async fn old_epochs(postgres: bool) {
    let server = server(postgres, &[]);
    let db = server.database().await;
    let (laptop, mut record) = device_with_wallet(&server.url).await;
    let wallet = record.current.wallet_id().to_string();
    for expected in 1..=2 {
        assert_eq!(
            refresh(&laptop.client, &mut record).await.unwrap(),
            expected
        );
        assert_eq!(
            share_rows(&db, &wallet).await,
            vec![(expected as i64, "active".to_string())]
        );
    }

    // The device stops (as a crash would) after storing its new share but before committing:
    // the server keeps its active epoch 2 next to the pending 3; the next session repairs.
    let stop_at = |at: RefreshStep| {
        move |s: RefreshStep, _: &WalletRecord| {
            if s == at { Err("crash".into()) } else { Ok(()) }
        }
    };
    let err = laptop
        .client
        .refresh(&mut record, stop_at(RefreshStep::PendingStored))
        .await
        .unwrap_err();
    assert!(matches!(err, ClientError::Stopped(_)), "{err}");
    let kind = tessera_api::intent::SignKind::Digest {
        digest: hex::encode([3u8; 32]),
    };
    let path = master();
    laptop
        .client
        .sign_wallet(&mut record, |_| Ok(()), &kind, &path, |_, _| {}, |_| {})
        .await
        .unwrap();
    assert_eq!(record.current.epoch(), 2);
    // One usable epoch, 2; nothing older (the uncommitted 3 may still wait to be discarded).
    let rows = share_rows(&db, &wallet).await;
    assert!(rows.contains(&(2, "active".to_string())), "{rows:?}");
    assert!(
        rows.iter()
            .all(|r| *r == (2, "active".to_string()) || *r == (3, "pending".to_string())),
        "{rows:?}"
    );

    // Stopped right after the commit: the server switches and deletes epoch 2; the device,
    // holding 3 as pending, switches on its next session.
    let err = laptop
        .client
        .refresh(&mut record, stop_at(RefreshStep::CommitSent))
        .await
        .unwrap_err();
    assert!(matches!(err, ClientError::Stopped(_)), "{err}");
    for _ in 0..600 {
        if share_rows(&db, &wallet).await == vec![(3, "active".to_string())] {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert_eq!(
        share_rows(&db, &wallet).await,
        vec![(3, "active".to_string())]
    );
    assert_eq!(record.current.epoch(), 2);
    laptop
        .client
        .sign_wallet(&mut record, |_| Ok(()), &kind, &path, |_, _| {}, |_| {})
        .await
        .unwrap();
    assert_eq!(record.current.epoch(), 3);
    assert!(record.pending.is_none());
}

/// A raw device: runs the signing protocol itself and sends garbage instead of its own last
/// message. The server holds its own last message until it has checked the device's and
/// recorded the signature, so the device never gets it: it cannot finish a signature, and the
/// run is a plain failure. (Before the hold, the server's last message left as soon as it was
/// computed, and this device held a valid signature of a run recorded as failed.)
#[tokio::test]
async fn a_device_that_answers_the_last_round_with_garbage_gets_no_signature() {
    let server = server(false, &[]);
    let (laptop, record) = device_with_wallet(&server.url).await;
    let share = &record.current;
    let wallet = share.wallet_id().to_string();
    let digest = [0x42u8; 32];
    let created = create_sign_session(&server.url, &laptop.client, &wallet, digest).await;
    let mut nonce = [0u8; 32];
    hex::decode_to_slice(&created.nonce, &mut nonce).unwrap();
    let mut session = SignSession::new(
        share,
        &SignRequest {
            nonce,
            signers: vec![DEVICE, SERVER],
            digest,
            path: master(),
        },
    )
    .unwrap();
    let request = ws_request(
        &server.url,
        laptop.client.token().unwrap(),
        &created.session_id,
    );
    let (mut socket, _) = tokio_tungstenite::connect_async(request).await.unwrap();
    let total = session.total_rounds();
    let send = |out: Vec<tessera_core::Envelope>| {
        out.into_iter()
            .map(|e| {
                let mut bytes = e.to_bytes();
                if e.round == total {
                    // Our last message: garbage in place of (u, w).
                    let last = bytes.len() - 1;
                    bytes[last] ^= 1;
                }
                Message::Binary(bytes.into())
            })
            .collect::<Vec<_>>()
    };
    for m in send(session.start().unwrap()) {
        socket.send(m).await.unwrap();
    }
    // The device's loop ends with the server's close, before its session can finish.
    let code = loop {
        match socket.next().await {
            Some(Ok(Message::Binary(b))) => {
                for m in send(session.receive_bytes(SERVER, &b).unwrap()) {
                    socket.send(m).await.unwrap();
                }
            }
            Some(Ok(Message::Close(Some(f)))) => break u16::from(f.code),
            Some(Ok(_)) => {}
            other => panic!("expected a close frame, got {other:?}"),
        }
    };
    assert_eq!(code, 4400);
    assert!(
        !session.is_finished(),
        "the device got the server's last message and finished the signature"
    );
    assert!(session.take_output().is_none());
    // The run is a plain failure: nothing was released, nothing signed.
    let audit = laptop.client.audit(Some(&wallet)).await.unwrap();
    let kinds = kinds(&audit);
    let failed = audit
        .iter()
        .position(|r| r.kind == "sign.failed")
        .unwrap_or_else(|| panic!("no sign.failed in {kinds:?}"));
    assert_eq!(
        detail(&audit[failed])["session_id"],
        created.session_id.as_str()
    );
    for kind in ["sign.released", "sign.unconfirmed", "sign.completed"] {
        assert!(!kinds.iter().any(|k| k == kind), "{kind} in {kinds:?}");
    }
    // A normal signing records its completion, with the signature, once.
    let signature = laptop
        .client
        .sign(share, [7; 32], &master(), |_, _| {})
        .await
        .unwrap();
    let after = laptop.client.audit(Some(&wallet)).await.unwrap();
    let completed: Vec<_> = after[failed + 1..]
        .iter()
        .filter(|r| {
            [
                "sign.released",
                "sign.completed",
                "sign.unconfirmed",
                "sign.failed",
            ]
            .contains(&r.kind.as_str())
        })
        .collect();
    assert_eq!(
        completed
            .iter()
            .map(|r| r.kind.as_str())
            .collect::<Vec<_>>(),
        vec!["sign.completed"]
    );
    assert_eq!(
        detail(completed[0])["signature"],
        hex::encode(signature.to_rsv()).as_str()
    );
}

/// Frames a network could duplicate, delay or lose are not proof of malice: no ban.
#[tokio::test]
async fn duplicated_delayed_or_dropped_frames_ban_nobody() {
    let server = server(false, &["--session-idle-timeout", "2"]);
    let proxy = TamperProxy::start(&server.url).await;
    let (laptop, record) = device_with_wallet(&proxy.url).await;
    let wallet = record.current.wallet_id().to_string();
    // Delayed frames in both directions: the signature still completes.
    proxy.on(
        Direction::ToServer,
        1,
        Tamper::Delay(std::time::Duration::from_millis(300)),
    );
    proxy.on(
        Direction::ToDevice,
        2,
        Tamper::Delay(std::time::Duration::from_millis(300)),
    );
    sign(&laptop.client, &record.current, 1).await.unwrap();
    assert_eq!(proxy.pending(), 0);
    // A duplicated round-1 message: refused as invalid (4400), not blamed.
    proxy.on(Direction::ToServer, 0, Tamper::Duplicate);
    let err = sign(&laptop.client, &record.current, 2).await.unwrap_err();
    assert!(
        matches!(err, ClientError::Closed { code: 4400, .. }),
        "{err}"
    );
    // A dropped message: the session expires (4408), nobody is blamed.
    proxy.on(Direction::ToServer, 1, Tamper::Drop);
    let err = sign(&laptop.client, &record.current, 3).await.unwrap_err();
    assert!(
        matches!(err, ClientError::Closed { code: 4408, .. }),
        "{err}"
    );
    assert!(laptop.client.bans(&wallet).await.unwrap().is_empty());
    sign(&laptop.client, &record.current, 4).await.unwrap();
}
