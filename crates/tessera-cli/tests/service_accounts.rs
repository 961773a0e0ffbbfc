//! Service accounts and webhooks against real `tessera server` processes, on SQLite and on
//! PostgreSQL (issue 16): a service account registered by `tessera service add` creates requests
//! within its scope and is refused outside it (403 naming why); revoked, its token stops at once;
//! no device endpoint accepts its token; bad registrations are refused (400) and change nothing;
//! webhook bodies verify with the server's key (`tessera verify-webhook`), a tampered one does
//! not, and a delivery waits out a receiver that is down at first and a server restart.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::HashMap;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::time::Duration;

use serde_json::Value;
use tessera_api::RequestState;
use tessera_api::intent::SignKind;
use tessera_api::requests::{CreateRequest, Creator};
use tessera_client::ClientError;
use tessera_client::device::ServerAddress;
use tessera_client::service::{ServiceClient, ServiceKey};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use common::Backend;
use common::cli::{PASSPHRASE, init, ok_json, tessera};

fn stderr(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// Runs a command that must fail; its stderr.
fn fails(home: &Path, args: &[&str]) -> String {
    let out = tessera(home, args);
    assert!(!out.status.success(), "{args:?} succeeded");
    stderr(&out)
}

/// A new wallet of the device at `home`: its id.
fn wallet(home: &Path, name: &str) -> String {
    ok_json(home, &["keygen", "--name", name, "--json"])["wallet_id"]
        .as_str()
        .unwrap()
        .to_string()
}

/// `tessera service keygen` into `dir/name`: the key file and its public key.
fn service_key(home: &Path, dir: &Path, name: &str) -> (String, String) {
    let file = dir.join(name).to_str().unwrap().to_string();
    let out = tessera(home, &["service", "keygen", "--out", &file]);
    assert!(out.status.success(), "{}", stderr(&out));
    let public = String::from_utf8(out.stdout).unwrap().trim().to_string();
    assert_eq!(public.len(), 64, "{public}");
    (file, public)
}

fn message(wallet: &str, text: &str) -> CreateRequest {
    CreateRequest {
        wallet_id: wallet.into(),
        path: "m".into(),
        kind: SignKind::EthMessage {
            message: text.into(),
        },
        expires_in_secs: None,
    }
}

fn refused_with(e: ClientError, status: u16, needle: &str) {
    match e {
        ClientError::Server {
            status: s, message, ..
        } => {
            assert_eq!(s, status, "{message}");
            assert!(message.contains(needle), "{message:?} lacks {needle:?}");
        }
        other => panic!("expected {status}, got {other}"),
    }
}

async fn get(url: &str, token: &str) -> (u16, String) {
    let resp = reqwest::Client::new()
        .get(url)
        .bearer_auth(token)
        .send()
        .await
        .unwrap();
    (resp.status().as_u16(), resp.text().await.unwrap())
}

async fn scope_and_revocation(backend: Backend) {
    tessera_client::tls::install_crypto_provider();
    let server = common::start(backend);
    let alice = tempfile::tempdir().unwrap();
    let bob = tempfile::tempdir().unwrap();
    init(alice.path(), &server.url, "alice");
    init(bob.path(), &server.url, "bob");
    let main = wallet(alice.path(), "main");
    let other = wallet(alice.path(), "other");
    let bobs = wallet(bob.path(), "bobs");
    let keys = tempfile::tempdir().unwrap();
    let (key_file, public) = service_key(alice.path(), keys.path(), "svc.key");
    assert_eq!(
        std::fs::metadata(&key_file).unwrap().permissions().mode() & 0o777,
        0o600
    );

    // Bad registrations: 400 naming the field, nothing stored.
    let add = |name: &str, key: &str, wallet: &str| {
        fails(
            alice.path(),
            &[
                "service",
                "add",
                name,
                "--public-key",
                key,
                "--wallet",
                wallet,
                "--kinds",
                "eth-message",
            ],
        )
    };
    let small_order = format!("01{}", "00".repeat(31));
    let e = add("withdrawals", &small_order, "main");
    assert!(e.contains("400") && e.contains("small-order"), "{e}");
    let e = add("withdrawals", "abcd", "main");
    assert!(e.contains("64 hex digits"), "{e}");
    let e = add("withdrawals", &public, &"ab".repeat(32));
    assert!(e.contains("400") && e.contains("no wallet"), "{e}");
    let e = add("withdrawals", &public, &bobs);
    assert!(e.contains("400") && e.contains("no wallet"), "{e}");
    let e = add("with\u{202E}drawals", &public, "main");
    assert!(e.contains("400") && e.contains("U+202E"), "{e}");
    let e = fails(
        alice.path(),
        &[
            "service",
            "add",
            "w",
            "--public-key",
            &public,
            "--wallet",
            "main",
            "--kinds",
            "teleport",
        ],
    );
    assert!(e.contains("unknown request kind"), "{e}");
    // A signature that is not over these fields (raw HTTP, the device's own token).
    let online = tessera_client::device::Device::open_dir(alice.path())
        .connect(tessera_store::Passphrase::new(PASSPHRASE.into()).unwrap())
        .await
        .unwrap();
    let device_token = online.client().token().unwrap().to_string();
    let resp = reqwest::Client::new()
        .post(format!("{}/service-accounts", server.url))
        .bearer_auth(&device_token)
        .json(&serde_json::json!({
            "name": "withdrawals", "public_key": public, "wallets": [main],
            "kinds": ["eth-message"], "signature": "11".repeat(64),
        }))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 400);
    assert!(resp.text().await.unwrap().contains("signature"));
    let listed = ok_json(alice.path(), &["service", "list", "--json"]);
    assert_eq!(listed, Value::Array(vec![]));

    // Registered, scoped to `main` and eth-message.
    let account = ok_json(
        alice.path(),
        &[
            "service",
            "add",
            "withdrawals",
            "--public-key",
            &public,
            "--wallet",
            "main",
            "--kinds",
            "eth-message",
            "--json",
        ],
    );
    let id = account["service_id"].as_str().unwrap().to_string();
    assert_eq!(account["wallets"], serde_json::json!([main]));
    assert_eq!(account["kinds"], serde_json::json!(["eth-message"]));
    let e = add("payouts", &public, "main");
    assert!(e.contains("409") && e.contains("registered already"), "{e}");
    // A name that passes for the live account's (a Cyrillic а for the a).
    let (_, second) = service_key(alice.path(), keys.path(), "second.key");
    let e = add("withdr\u{430}wals", &second, "main");
    assert!(e.contains("409") && e.contains("looks like"), "{e}");

    // The backend logs in with its key.
    let address = ServerAddress {
        url: server.url.clone(),
        fingerprint: None,
    };
    let key = ServiceKey::load(Path::new(&key_file)).unwrap();
    let mut svc = ServiceClient::connect(&address, key, &id).await.unwrap();
    let token = svc.token().unwrap().to_string();

    // No device endpoint accepts its token.
    for path in [
        "/devices",
        "/wallets",
        "/audit",
        "/service-accounts",
        "/requests",
    ] {
        let (status, body) = get(&format!("{}{path}", server.url), &token).await;
        assert_eq!(status, 401, "{path}: {body}");
        assert!(body.contains("another audience"), "{path}: {body}");
    }

    // Within its scope: created, by it, and readable by it.
    let created = svc.create_request(&message(&main, "pay 1")).await.unwrap();
    assert_eq!(created.created_by, Creator::Service(id.as_str().into()));
    assert_eq!(created.wallet_id.as_str(), main);
    let again = svc.request(created.id.as_str()).await.unwrap();
    assert_eq!(again.id, created.id);
    // The same through `tessera service request`.
    let out = ok_json(
        alice.path(),
        &[
            "service",
            "request",
            "--key-file",
            &key_file,
            "--id",
            &id,
            "--server",
            &server.url,
            "--wallet",
            &main,
            "--message",
            "pay 2",
            "--json",
        ],
    );
    assert_eq!(out["wallet_id"], Value::String(main.clone()));
    let state: RequestState = out["state"].as_str().unwrap().parse().unwrap();
    assert!(!state.is_final(), "{out}");

    // Outside it: another wallet of the user, another user's wallet, another kind.
    let e = svc
        .create_request(&message(&other, "pay 3"))
        .await
        .unwrap_err();
    refused_with(e, 403, &format!("wallet {other}"));
    let e = svc
        .create_request(&message(&bobs, "pay 4"))
        .await
        .unwrap_err();
    refused_with(e, 403, &format!("wallet {bobs}"));
    let digest = CreateRequest {
        kind: SignKind::Digest {
            digest: "22".repeat(32),
        },
        ..message(&main, "")
    };
    let e = svc.create_request(&digest).await.unwrap_err();
    refused_with(e, 403, "digest");

    // Revoked: the token it holds stops at once, and it gets no other.
    let revoked = ok_json(alice.path(), &["service", "revoke", &id, "--json"]);
    assert!(revoked["revoked_at"].is_string(), "{revoked}");
    let e = svc.request(created.id.as_str()).await.unwrap_err();
    refused_with(e, 401, "service account revoked");
    let e = svc
        .create_request(&message(&main, "pay 5"))
        .await
        .unwrap_err();
    refused_with(e, 401, "service account revoked");
    let e = svc.login_again().await.unwrap_err();
    refused_with(e, 401, "service account revoked");
    let e = fails(alice.path(), &["service", "revoke", &id]);
    assert!(e.contains("409") && e.contains("already revoked"), "{e}");
    // Its key cannot come back under a new registration either.
    let e = add("withdrawals-2", &public, "main");
    assert!(e.contains("409"), "{e}");

    // Audited, each with its change.
    let records = ok_json(alice.path(), &["audit", "list", "--json"]);
    let kinds: Vec<&str> = records
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["kind"].as_str().unwrap())
        .collect();
    for kind in ["service.added", "service.token", "service.revoked"] {
        assert!(kinds.contains(&kind), "{kind} not in {kinds:?}");
    }
    assert_eq!(
        kinds.iter().filter(|k| **k == "service.added").count(),
        1,
        "{kinds:?}"
    );
    drop(online);
}

#[tokio::test(flavor = "multi_thread")]
async fn service_accounts_are_scoped_and_revocable_on_sqlite() {
    scope_and_revocation(Backend::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn service_accounts_are_scoped_and_revocable_on_postgres() {
    scope_and_revocation(Backend::Postgres).await;
}

/// One HTTP request to `listener`, answered 200: its headers (lower-case names) and body.
async fn receive(listener: &tokio::net::TcpListener) -> (HashMap<String, String>, Vec<u8>) {
    let (mut socket, _) = listener.accept().await.unwrap();
    let mut data = Vec::new();
    let mut buf = [0u8; 4096];
    let head_end = loop {
        let n = socket.read(&mut buf).await.unwrap();
        assert!(n > 0, "the connection closed before the headers ended");
        data.extend_from_slice(&buf[..n]);
        if let Some(i) = data.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
    };
    let head = String::from_utf8(data[..head_end].to_vec()).unwrap();
    let mut lines = head.split("\r\n");
    assert!(lines.next().unwrap().starts_with("POST /hook "), "{head}");
    let headers: HashMap<String, String> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    let length: usize = headers["content-length"].parse().unwrap();
    while data.len() < head_end + length {
        let n = socket.read(&mut buf).await.unwrap();
        assert!(n > 0, "the connection closed before the body ended");
        data.extend_from_slice(&buf[..n]);
    }
    socket
        .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\nconnection: close\r\n\r\n")
        .await
        .unwrap();
    (headers, data[head_end..head_end + length].to_vec())
}

async fn webhooks(backend: Backend) {
    tessera_client::tls::install_crypto_provider();
    // A port nobody listens on yet: the receiver is down when the first change is posted.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let hook = format!("http://127.0.0.1:{port}/hook");
    let mut server = match backend {
        Backend::Sqlite => common::Server::start_fresh(&["--webhook-url", &hook]),
        Backend::Postgres => common::Server::start_fresh(&[
            "--webhook-url",
            &hook,
            "--database-url",
            &common::fresh_postgres_database(),
        ]),
    };
    let alice = tempfile::tempdir().unwrap();
    init(alice.path(), &server.url, "alice");
    let main = wallet(alice.path(), "main");
    let keys = tempfile::tempdir().unwrap();
    let (key_file, public) = service_key(alice.path(), keys.path(), "svc.key");
    let account = ok_json(
        alice.path(),
        &[
            "service",
            "add",
            "withdrawals",
            "--public-key",
            &public,
            "--wallet",
            &main,
            "--kinds",
            "eth-message",
            "--json",
        ],
    );
    let id = account["service_id"].as_str().unwrap();
    let address = ServerAddress {
        url: server.url.clone(),
        fingerprint: None,
    };
    let svc = ServiceClient::connect(
        &address,
        ServiceKey::load(Path::new(&key_file)).unwrap(),
        id,
    )
    .await
    .unwrap();
    let created = svc.create_request(&message(&main, "pay 1")).await.unwrap();

    // The first attempt finds nobody; the server is restarted meanwhile; the retry after it
    // reaches the receiver.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    server.kill();
    server.restart();
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", port))
        .await
        .unwrap();
    let (headers, body) = tokio::time::timeout(Duration::from_secs(30), receive(&listener))
        .await
        .expect("no webhook within 30 s");
    let event: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(
        event["request"]["id"],
        Value::String(created.id.to_string())
    );
    assert!(
        event["event"].as_str().unwrap().starts_with("request."),
        "{event}"
    );
    let delivery = &headers["tessera-delivery"];
    // It was tried before the receiver was up.
    let attempts: (i64,) = sqlx::query_as("SELECT attempts FROM webhook_deliveries WHERE id = $1")
        .bind(delivery.parse::<i64>().unwrap())
        .fetch_one(&server.database().await)
        .await
        .unwrap();
    assert!(attempts.0 >= 2, "{attempts:?}");
    let signature = &headers["tessera-signature"];

    // It verifies with the published key; a tampered body does not.
    let key: Value = reqwest::get(format!("{}/webhooks/key", server.url))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let key = key["public_key"].as_str().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("body.json");
    std::fs::write(&file, &body).unwrap();
    let verify = |file: &Path, signature: &str| {
        tessera(
            alice.path(),
            &[
                "verify-webhook",
                "--key",
                key,
                "--signature",
                signature,
                "--body",
                file.to_str().unwrap(),
            ],
        )
    };
    let out = verify(&file, signature);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "valid");
    let tampered = dir.path().join("tampered.json");
    let text = String::from_utf8(body.clone()).unwrap();
    std::fs::write(&tampered, text.replacen("pay 1", "pay 9", 1)).unwrap();
    let out = verify(&tampered, signature);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("invalid signature"),
        "{}",
        stderr(&out)
    );
    // Malformed input is a usage error.
    let out = verify(&file, "zz");
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));

    // Later changes are delivered too, each under its own delivery id.
    let second = svc.create_request(&message(&main, "pay 2")).await.unwrap();
    let (headers, body) = tokio::time::timeout(Duration::from_secs(30), async {
        loop {
            let (headers, body) = receive(&listener).await;
            let event: Value = serde_json::from_slice(&body).unwrap();
            if event["request"]["id"] == Value::String(second.id.to_string()) {
                return (headers, body);
            }
        }
    })
    .await
    .expect("no webhook for the second request within 30 s");
    assert_ne!(&headers["tessera-delivery"], delivery);
    std::fs::write(&file, &body).unwrap();
    let out = verify(&file, &headers["tessera-signature"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
}

#[tokio::test(flavor = "multi_thread")]
async fn webhooks_are_signed_and_retried_on_sqlite() {
    webhooks(Backend::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn webhooks_are_signed_and_retried_on_postgres() {
    webhooks(Backend::Postgres).await;
}

#[test]
fn the_server_refuses_a_plain_http_webhook_to_another_host() {
    let dir = tempfile::tempdir().unwrap();
    let e = common::Server::try_start(
        &dir.path().join("data"),
        &["--webhook-url", "http://hooks.example/h"],
        &[],
    )
    .map(|_| ())
    .unwrap_err();
    assert!(e.contains("--webhook-url") && e.contains("https://"), "{e}");
}
