//! Rate limits against a real server process: per source address, per device, and the back-off
//! after authentication failures; 429 with Retry-After.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use common::Server;
use tessera_client::{ClientError, ServerClient};

mod common;

/// GET `path` (with a bearer token); the status and the Retry-After header.
async fn get(server: &Server, path: &str, token: Option<&str>) -> (u16, Option<u64>) {
    // reqwest is built without a TLS provider: install the SDK's, whatever test runs first.
    tessera_client::tls::install_crypto_provider();
    let mut req = reqwest::Client::new().get(format!("{}{path}", server.url));
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    let resp = req.send().await.unwrap();
    let retry = resp
        .headers()
        .get("retry-after")
        .map(|v| v.to_str().unwrap().parse().unwrap());
    (resp.status().as_u16(), retry)
}

async fn logged_in(server: &Server, user: &str) -> (ServerClient, String, tempfile::TempDir) {
    tessera_client::tls::install_crypto_provider();
    let home = tempfile::tempdir().unwrap();
    let id = common::identity(home.path());
    let mut client = ServerClient::new(&server.url).unwrap();
    let d = client.register(&id, user, "laptop").await.unwrap();
    client.login(&id, &d.device_id).await.unwrap();
    let token = client.token().unwrap().to_string();
    (client, token, home)
}

#[tokio::test]
async fn one_source_address_is_limited_and_told_when_to_retry() {
    let server = Server::start_fresh(&["--ip-rate", "1", "--ip-burst", "5"]);
    for _ in 0..5 {
        assert_eq!(get(&server, "/status", None).await.0, 200);
    }
    let (status, retry) = get(&server, "/status", None).await;
    assert_eq!(status, 429);
    let retry = retry.expect("a Retry-After header");
    assert!((1..=2).contains(&retry), "{retry}");
    tokio::time::sleep(Duration::from_secs(retry)).await;
    assert_eq!(get(&server, "/status", None).await.0, 200);
}

#[tokio::test]
async fn one_device_is_limited_without_limiting_the_others() {
    let server = Server::start_fresh(&["--device-rate", "1", "--device-burst", "3"]);
    let (busy, busy_token, _h1) = logged_in(&server, "busy").await;
    let (calm, _, _h2) = logged_in(&server, "calm").await;
    for _ in 0..3 {
        busy.wallets().await.unwrap();
    }
    match busy.wallets().await {
        Err(ClientError::Server {
            status: 429,
            message,
            ..
        }) => {
            assert!(message.contains("retry after"), "{message}");
        }
        other => panic!("not limited: {other:?}"),
    }
    let (status, retry) = get(&server, "/wallets", Some(&busy_token)).await;
    assert_eq!(status, 429);
    assert!(retry.is_some());
    // Another device, from the same address, is not affected.
    calm.wallets().await.unwrap();
    tokio::time::sleep(Duration::from_secs(retry.unwrap())).await;
    busy.wallets().await.unwrap();
}

#[tokio::test]
async fn authentication_failures_make_the_address_wait() {
    let server = Server::start_fresh(&[
        "--auth-failures-per-minute",
        "1",
        "--auth-failure-burst",
        "3",
    ]);
    let (client, _, _h) = logged_in(&server, "victim").await;
    // A guesser with made-up tokens.
    for _ in 0..3 {
        assert_eq!(get(&server, "/wallets", Some("not.a.token")).await.0, 401);
    }
    assert_eq!(get(&server, "/wallets", Some("not.a.token")).await.0, 401);
    // Now that address waits, for about the minute a failure is worth, whatever it asks.
    let (status, retry) = get(&server, "/wallets", Some("not.a.token")).await;
    assert_eq!(status, 429);
    let retry = retry.unwrap();
    assert!((30..=60).contains(&retry), "{retry}");
    assert_eq!(get(&server, "/status", None).await.0, 429);
    assert!(matches!(
        client.wallets().await,
        Err(ClientError::Server { status: 429, .. })
    ));
}
