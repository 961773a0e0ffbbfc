//! `GET /sign/ws`: `POST /sign` and `GET /ws` on one socket, against real `tessera server`
//! processes (SQLite and PostgreSQL): a raw device runs a signature on it by hand; bad input
//! (no request, a binary frame, garbage, another user's wallet, a request the policy denies, a
//! revoked device, a stale epoch) is refused as `POST /sign` refuses it, and leaves no session
//! running and no abort counted.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use futures_util::{SinkExt, StreamExt};
use tessera_api as api;
use tessera_client::ServerClient;
use tessera_core::protocols::{SignRequest, SignSession, joint_nonce};
use tessera_core::{DerivationPath, KeyShare, PartyIndex, Session};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

use common::{Backend, Server, allow_digests, fresh_postgres_database, identity};

mod common;

const DEVICE: PartyIndex = PartyIndex::new(0);
const SERVER: PartyIndex = PartyIndex::new(1);

type Socket =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

fn server(backend: Backend, extra: &[&str]) -> Server {
    let mut args: Vec<String> = extra.iter().map(|s| s.to_string()).collect();
    if let Backend::Postgres = backend {
        args.push("--database-url".into());
        args.push(fresh_postgres_database());
    }
    let refs: Vec<&str> = args.iter().map(String::as_str).collect();
    Server::start_fresh(&refs)
}

/// A logged-in device of `user` with a wallet; digests allowed when `digests`.
async fn device(
    url: &str,
    user: &str,
    digests: bool,
) -> (ServerClient, KeyShare, tempfile::TempDir) {
    let home = tempfile::tempdir().unwrap();
    let id = identity(home.path());
    let mut client = ServerClient::new(url).unwrap();
    let device = client.register(&id, user, "laptop").await.unwrap();
    client.login(&id, &device.device_id).await.unwrap();
    let share = client.keygen("main", |_, _| {}).await.unwrap();
    if digests {
        client
            .set_policy(&id, &share.wallet_id().to_string(), &allow_digests())
            .await
            .unwrap();
    }
    (client, share, home)
}

async fn open(url: &str, token: Option<&str>) -> Result<Socket, u16> {
    let mut req = format!("{}/sign/ws", url.replacen("http", "ws", 1))
        .into_client_request()
        .unwrap();
    if let Some(token) = token {
        req.headers_mut()
            .insert("authorization", format!("Bearer {token}").parse().unwrap());
    }
    match tokio_tungstenite::connect_async(req).await {
        Ok((socket, _)) => Ok(socket),
        Err(tokio_tungstenite::tungstenite::Error::Http(resp)) => Err(resp.status().as_u16()),
        Err(e) => panic!("{e}"),
    }
}

fn asked(share: &KeyShare, digest: [u8; 32], ours: [u8; 32], epoch: u64) -> api::SignSocketRequest {
    api::SignSocketRequest {
        intent: api::SignIntentRequest {
            wallet_id: share.wallet_id().into(),
            path: "m".into(),
            kind: tessera_api::intent::SignKind::Digest {
                digest: hex::encode(digest),
            },
            device_nonce: Some(hex::encode(ours)),
            with: vec![],
        },
        epoch,
    }
}

/// What the server said first: its reply, or its close code.
async fn first_answer(socket: &mut Socket) -> Result<api::SignSocketReply, u16> {
    loop {
        match socket.next().await {
            Some(Ok(Message::Text(t))) => return Ok(serde_json::from_str(&t).unwrap()),
            Some(Ok(Message::Close(Some(f)))) => return Err(u16::from(f.code)),
            Some(Ok(_)) => {}
            other => panic!("expected an answer, got {other:?}"),
        }
    }
}

/// The close code that follows.
async fn close_code(socket: &mut Socket) -> u16 {
    loop {
        match socket.next().await {
            Some(Ok(Message::Close(Some(f)))) => return u16::from(f.code),
            Some(Ok(_)) => {}
            other => panic!("expected a close frame, got {other:?}"),
        }
    }
}

async fn count(db: &sqlx::AnyPool, sql: &str) -> i64 {
    let (n,): (i64,) = sqlx::query_as(sqlx::AssertSqlSafe(sql.to_string()))
        .fetch_one(db)
        .await
        .unwrap();
    n
}

async fn signs_by_hand(backend: Backend) {
    let server = server(backend, &[]);
    let (client, share, _home) = device(&server.url, "alice", true).await;
    let digest = [0x5au8; 32];
    let ours = [7u8; 32];
    let mut socket = open(&server.url, client.token()).await.unwrap();
    let text = serde_json::to_string(&asked(&share, digest, ours, share.epoch())).unwrap();
    socket.send(Message::Text(text.into())).await.unwrap();
    let Ok(api::SignSocketReply::Created { session, running }) = first_answer(&mut socket).await
    else {
        panic!("not created");
    };
    assert!(running);
    let mut theirs = [0u8; 32];
    hex::decode_to_slice(&session.nonce, &mut theirs).unwrap();
    let mut run = SignSession::new(
        &share,
        &SignRequest {
            nonce: joint_nonce(&[ours, theirs]),
            signers: vec![DEVICE, SERVER],
            digest,
            path: DerivationPath::root(),
        },
    )
    .unwrap();
    for e in run.start().unwrap() {
        socket
            .send(Message::Binary(e.to_bytes().into()))
            .await
            .unwrap();
    }
    while !run.is_finished() {
        match socket.next().await.unwrap().unwrap() {
            Message::Binary(b) => {
                for e in run.receive_bytes(SERVER, &b).unwrap() {
                    socket
                        .send(Message::Binary(e.to_bytes().into()))
                        .await
                        .unwrap();
                }
            }
            Message::Close(f) => panic!("closed early: {f:?}"),
            _ => {}
        }
    }
    let signature = run.take_output().unwrap();
    share.public_key().verify(&digest, &signature).unwrap();
    assert_eq!(close_code(&mut socket).await, 1000);
    // One session, done; its request and its completion recorded once, with the signature.
    let db = server.database().await;
    assert_eq!(
        count(&db, "SELECT COUNT(*) FROM sessions WHERE protocol = 'sign'").await,
        1
    );
    let status: (String,) = sqlx::query_as("SELECT status FROM sessions WHERE id = $1")
        .bind(session.session_id.as_str())
        .fetch_one(&db)
        .await
        .unwrap();
    assert_eq!(status.0, "done");
    let audit = client
        .audit(Some(&share.wallet_id().to_string()))
        .await
        .unwrap();
    let kinds: Vec<&str> = audit
        .iter()
        .map(|r| r.kind.as_str())
        .filter(|k| k.starts_with("sign."))
        .collect();
    assert_eq!(kinds, vec!["sign.requested", "sign.completed"]);
    let completed: serde_json::Value = serde_json::from_str(
        &audit
            .iter()
            .find(|r| r.kind == "sign.completed")
            .unwrap()
            .detail,
    )
    .unwrap();
    assert_eq!(
        completed["signature"],
        hex::encode(signature.to_rsv()).as_str()
    );
    assert!(client.audit_verify().await.unwrap().first_bad.is_none());
}

#[tokio::test]
async fn a_device_signs_on_the_signing_socket_on_sqlite() {
    signs_by_hand(Backend::Sqlite).await;
}

#[tokio::test]
async fn a_device_signs_on_the_signing_socket_on_postgres() {
    signs_by_hand(Backend::Postgres).await;
}

async fn bad_input(backend: Backend) {
    let server = server(backend, &["--session-idle-timeout", "2"]);
    let (client, share, _home) = device(&server.url, "alice", false).await;
    let (mallory, _, _mallory_home) = device(&server.url, "mallory", true).await;
    let token = client.token().unwrap();
    let digest = [1u8; 32];

    // No token: refused before the upgrade.
    assert_eq!(open(&server.url, None).await.err(), Some(401));
    // Nothing sent within the idle timeout.
    let mut socket = open(&server.url, Some(token)).await.unwrap();
    assert_eq!(first_answer(&mut socket).await.err(), Some(4408));
    // A binary frame first.
    let mut socket = open(&server.url, Some(token)).await.unwrap();
    socket
        .send(Message::Binary(vec![1, 2, 3].into()))
        .await
        .unwrap();
    assert_eq!(first_answer(&mut socket).await.err(), Some(4400));
    // Text that is not a signing request.
    let mut socket = open(&server.url, Some(token)).await.unwrap();
    socket
        .send(Message::Text("{\"wallet_id\": 1}".into()))
        .await
        .unwrap();
    match first_answer(&mut socket).await {
        Ok(api::SignSocketReply::Refused { status, error }) => {
            assert_eq!((status, error.error.as_str()), (400, "bad_request"));
        }
        other => panic!("{other:?}"),
    }
    // Another user's wallet: as POST /sign answers, 404.
    let mut socket = open(&server.url, mallory.token()).await.unwrap();
    let text = serde_json::to_string(&asked(&share, digest, [2; 32], share.epoch())).unwrap();
    socket.send(Message::Text(text.into())).await.unwrap();
    match first_answer(&mut socket).await {
        Ok(api::SignSocketReply::Refused { status, .. }) => assert_eq!(status, 404),
        other => panic!("{other:?}"),
    }
    // A raw digest, which the new wallet's policy does not allow: 403 policy_denied.
    let mut socket = open(&server.url, Some(token)).await.unwrap();
    let text = serde_json::to_string(&asked(&share, digest, [3; 32], share.epoch())).unwrap();
    socket.send(Message::Text(text.into())).await.unwrap();
    match first_answer(&mut socket).await {
        Ok(api::SignSocketReply::Refused { status, error }) => {
            assert_eq!((status, error.error.as_str()), (403, "policy_denied"));
        }
        other => panic!("{other:?}"),
    }
    // From a stale epoch (an allowed message): created, not run; the socket closes with 1000.
    let mut stale = asked(&share, digest, [4; 32], share.epoch() + 1);
    stale.intent.kind = tessera_api::intent::SignKind::EthMessage {
        message: "hello".into(),
    };
    let mut socket = open(&server.url, Some(token)).await.unwrap();
    socket
        .send(Message::Text(serde_json::to_string(&stale).unwrap().into()))
        .await
        .unwrap();
    match first_answer(&mut socket).await {
        Ok(api::SignSocketReply::Created { session, running }) => {
            assert!(!running);
            assert_eq!(session.epoch, share.epoch());
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(close_code(&mut socket).await, 1000);

    // Nothing ran: no session running or done, no abort or ban, the chain verifies.
    let db = server.database().await;
    assert_eq!(
        count(
            &db,
            "SELECT COUNT(*) FROM sessions WHERE protocol = 'sign' AND status <> 'created'"
        )
        .await,
        0
    );
    assert_eq!(count(&db, "SELECT COUNT(*) FROM banned_parties").await, 0);
    assert_eq!(count(&db, "SELECT COUNT(*) FROM wallet_locks").await, 0);
    assert!(client.audit_verify().await.unwrap().first_bad.is_none());
    // And the device still signs (an allowed message), on the socket.
    client
        .sign_kind(
            &share,
            &tessera_api::intent::SignKind::EthMessage {
                message: "after".into(),
            },
            &DerivationPath::root(),
            |_, _| {},
            |_| {},
        )
        .await
        .unwrap();
}

#[tokio::test]
async fn bad_input_on_the_signing_socket_is_refused_on_sqlite() {
    bad_input(Backend::Sqlite).await;
}

#[tokio::test]
async fn bad_input_on_the_signing_socket_is_refused_on_postgres() {
    bad_input(Backend::Postgres).await;
}
