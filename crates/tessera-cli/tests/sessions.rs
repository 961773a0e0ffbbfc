//! Protocol sessions against a real server process: only protocol messages keep a session alive
//! (a client that only pings is expired), a signing request approved after the idle timeout
//! still signs, and the caps on live sessions per device and per wallet hold under concurrent
//! creations on SQLite and PostgreSQL.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use tessera_api::intent::SignKind;
use tessera_api::{self as api, Policy};
use tessera_client::ServerClient;
use tessera_core::{DerivationPath, KeyShare};
use tessera_store::DeviceIdentity;
use tokio_tungstenite::tungstenite::Message;

use common::{Server, fresh_postgres_database, identity, ws_request};

mod common;

/// A user's laptop (logged in) and, when `phone`, a second device approved by the laptop.
struct User {
    laptop: ServerClient,
    phone: Option<(ServerClient, DeviceIdentity)>,
    laptop_id: DeviceIdentity,
    _homes: Vec<tempfile::TempDir>,
}

async fn user(server: &Server, name: &str, phone: bool) -> User {
    tessera_client::tls::install_crypto_provider();
    let h1 = tempfile::tempdir().unwrap();
    let laptop_id = identity(h1.path());
    let mut laptop = ServerClient::new(&server.url).unwrap();
    let d = laptop.register(&laptop_id, name, "laptop").await.unwrap();
    laptop.login(&laptop_id, &d.device_id).await.unwrap();
    let mut homes = vec![h1];
    let phone = if phone {
        let h2 = tempfile::tempdir().unwrap();
        let phone_id = identity(h2.path());
        let mut phone = ServerClient::new(&server.url).unwrap();
        let d2 = phone.register(&phone_id, name, "phone").await.unwrap();
        laptop
            .approve(&laptop_id, &api::approval_code(&phone_id.public_key()))
            .await
            .unwrap();
        phone.login(&phone_id, &d2.device_id).await.unwrap();
        homes.push(h2);
        Some((phone, phone_id))
    } else {
        None
    };
    User {
        laptop,
        phone,
        laptop_id,
        _homes: homes,
    }
}

/// `method path` with the client's token and a JSON body: the status and the body.
async fn call(
    server: &Server,
    client: &ServerClient,
    path: &str,
    body: serde_json::Value,
) -> (u16, serde_json::Value) {
    let resp = reqwest::Client::new()
        .post(format!("{}{path}", server.url))
        .bearer_auth(client.token().unwrap())
        .json(&body)
        .send()
        .await
        .unwrap();
    let status = resp.status().as_u16();
    (status, resp.json().await.unwrap_or_default())
}

type Socket =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

async fn open(server: &Server, token: &str, session_id: &str) -> Socket {
    tokio_tungstenite::connect_async(ws_request(&server.url, token, session_id))
        .await
        .unwrap()
        .0
}

#[tokio::test]
async fn a_client_that_only_pings_is_expired() {
    let server = Server::start_fresh(&["--session-idle-timeout", "2"]);
    let u = user(&server, "pinger", false).await;
    let (status, created) = call(
        &server,
        &u.laptop,
        "/keygen",
        serde_json::json!({"name": "w"}),
    )
    .await;
    assert_eq!(status, 200, "{created}");
    let created: api::SessionCreated = serde_json::from_value(created).unwrap();
    let mut socket = open(&server, u.laptop.token().unwrap(), &created.session_id).await;
    // The server's first protocol message; the client never answers it, it only pings (and
    // answers the server's pings, as tungstenite does), several times per idle timeout.
    let first = socket.next().await.unwrap().unwrap();
    assert!(matches!(first, Message::Binary(_)), "{first:?}");
    let mut tick = tokio::time::interval(Duration::from_millis(300));
    // A guard against a server that never closes: far above the 2 s timeout.
    let guard = tokio::time::sleep(Duration::from_secs(60));
    tokio::pin!(guard);
    let mut pings = 0u32;
    let close = loop {
        tokio::select! {
            _ = tick.tick() => {
                socket.send(Message::Ping(vec![1, 2, 3].into())).await.unwrap();
                pings += 1;
            }
            frame = socket.next() => match frame {
                Some(Ok(Message::Close(Some(f)))) => break f,
                Some(Ok(Message::Pong(_) | Message::Ping(_))) => {}
                other => panic!("unexpected {other:?}"),
            },
            () = &mut guard => panic!("still open after {pings} pings: pings kept the session alive"),
        }
    };
    assert_eq!(u16::from(close.code), 4408, "{close:?}");
    assert!(close.reason.contains("expired"), "{close:?}");
    assert!(pings > 6, "only {pings} pings before the expiry");
    let db = server.database().await;
    let (status,): (String,) = sqlx::query_as("SELECT status FROM sessions WHERE id = $1")
        .bind(&created.session_id)
        .fetch_one(&db)
        .await
        .unwrap();
    assert_eq!(status, "expired");
}

#[tokio::test]
async fn a_request_approved_after_the_idle_timeout_still_signs() {
    let server = Server::start_fresh(&["--session-idle-timeout", "3"]);
    let u = user(&server, "patient", true).await;
    let share: KeyShare = u.laptop.keygen("w", |_, _| {}).await.unwrap();
    let wallet = share.wallet_id().to_string();
    u.laptop
        .set_policy(
            &u.laptop_id,
            &wallet,
            &Policy {
                require_approval: true,
                approval_timeout_secs: 120,
                ..Policy::default()
            },
        )
        .await
        .unwrap();
    let (phone, phone_id) = u.phone.as_ref().unwrap();
    let kind = SignKind::EthMessage {
        message: "approved late".into(),
    };
    let root = DerivationPath::root();
    let (signed, ()) = tokio::join!(
        u.laptop.sign_kind(&share, &kind, &root, |_, _| {}, |_| {}),
        async {
            let pending = loop {
                if let Some(p) = phone.approvals().await.unwrap().into_iter().next() {
                    break p;
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            };
            // Well past the 3 s idle timeout, well within the 120 s approval window.
            tokio::time::sleep(Duration::from_secs(5)).await;
            phone.decide(phone_id, &pending, true).await.unwrap();
        }
    );
    let signature = signed.expect("a request approved within its window signs");
    let digest = tessera_api::intent::decode(&kind).unwrap().digest;
    share
        .public_key_at(&DerivationPath::root())
        .unwrap()
        .verify(&digest, &signature)
        .unwrap();
}

/// `n` concurrent requests; the statuses and bodies.
async fn concurrently(
    server: &Server,
    requests: Vec<(&ServerClient, &'static str, serde_json::Value)>,
) -> Vec<(u16, serde_json::Value)> {
    futures_util::future::join_all(
        requests
            .into_iter()
            .map(|(client, path, body)| call(server, client, path, body)),
    )
    .await
}

async fn caps_hold_under_concurrent_creations(database: Option<String>) {
    let mut args = vec![
        "--max-sessions-per-device",
        "5",
        "--max-sessions-per-wallet",
        "7",
    ];
    if let Some(url) = &database {
        args.extend(["--database-url", url.as_str()]);
    }
    let server = Server::start_fresh(&args);

    // One device, 60 concurrent keygen sessions: exactly 5 are created.
    let solo = user(&server, "solo", false).await;
    let results = concurrently(
        &server,
        (0..60)
            .map(|i| {
                (
                    &solo.laptop,
                    "/keygen",
                    serde_json::json!({ "name": format!("w{i}") }),
                )
            })
            .collect(),
    )
    .await;
    let created = results.iter().filter(|(s, _)| *s == 200).count();
    assert_eq!(created, 5, "{results:?}");
    for (status, body) in results.iter().filter(|(s, _)| *s != 200) {
        assert_eq!(*status, 409, "{body}");
        let message = body["message"].as_str().unwrap();
        assert!(
            message.contains("this device already has 5 sessions"),
            "{message}"
        );
    }

    // One wallet, two devices of its user, 30 concurrent signing sessions each: exactly 7 (the
    // wallet's cap), at most 5 of either device. On SQLite, on a server without the audit log:
    // concurrent audited signing requests still fail there (issue 12, finding 1, fixed apart),
    // and the caps do not depend on it.
    let server = if database.is_none() {
        Server::start_fresh(&[&args[..], &["--benchmark-without-controls"]].concat())
    } else {
        server
    };
    let pair = user(&server, "pair", true).await;
    let share = pair.laptop.keygen("w", |_, _| {}).await.unwrap();
    let wallet = share.wallet_id().to_string();
    let (phone, _) = pair.phone.as_ref().unwrap();
    let sign = |i: usize| {
        serde_json::to_value(api::SignIntentRequest {
            wallet_id: wallet.clone().into(),
            path: "m".into(),
            kind: SignKind::EthMessage {
                message: format!("m{i}"),
            },
            device_nonce: None,
            with: vec![],
        })
        .unwrap()
    };
    let results = concurrently(
        &server,
        (0..60)
            .map(|i| {
                let client = if i % 2 == 0 { &pair.laptop } else { phone };
                (client, "/sign", sign(i))
            })
            .collect(),
    )
    .await;
    let ok = |parity: usize| {
        results
            .iter()
            .enumerate()
            .filter(|(i, (s, _))| i % 2 == parity && *s == 200)
            .count()
    };
    assert_eq!(ok(0) + ok(1), 7, "{results:?}");
    assert!(ok(0) <= 5 && ok(1) <= 5, "{} {}", ok(0), ok(1));
    for (status, body) in results.iter().filter(|(s, _)| *s != 200) {
        assert_eq!(*status, 409, "{body}");
        let message = body["message"].as_str().unwrap();
        assert!(message.contains("already has"), "{message}");
    }
    let db = server.database().await;
    let (live,): (i64,) =
        sqlx::query_as("SELECT COUNT(*) FROM sessions WHERE wallet_id = $1 AND status = 'created'")
            .bind(&wallet)
            .fetch_one(&db)
            .await
            .unwrap();
    assert_eq!(live, 7);

    // Another user's device is not held back by the full device and wallet.
    let other = user(&server, "other", false).await;
    other.laptop.keygen("w", |_, _| {}).await.unwrap();
}

#[tokio::test]
async fn session_caps_hold_under_concurrent_creations_on_sqlite() {
    caps_hold_under_concurrent_creations(None).await;
}

#[tokio::test]
async fn session_caps_hold_under_concurrent_creations_on_postgres() {
    caps_hold_under_concurrent_creations(Some(fresh_postgres_database())).await;
}
