//! A signing session whose device stalls, and a server process's SIGTERM: what the graceful
//! shutdown tests (operations.rs, and config.rs for the grace period from a file) share.

use std::process::{Child, Command};
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use tessera_api::intent::SignKind;
use tessera_client::ServerClient;
use tessera_core::KeyShare;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;

/// A device's socket on a protocol session.
pub type Socket =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// Opens a signing session of `share` on the server at `url` and reads the server's first
/// message; the device then never answers. The socket and the session id.
pub async fn stalled_signature(
    url: &str,
    client: &ServerClient,
    share: &KeyShare,
) -> (Socket, String) {
    let request = tessera_api::SignIntentRequest {
        wallet_id: share.wallet_id().to_string().into(),
        path: "m".into(),
        kind: SignKind::EthMessage {
            message: "stalled".into(),
        },
        device_nonce: None,
        with: vec![],
    };
    let created: tessera_api::SessionCreated = reqwest::Client::new()
        .post(format!("{url}/sign"))
        .bearer_auth(client.token().unwrap())
        .json(&request)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let (mut socket, _) = tokio_tungstenite::connect_async(super::ws_request(
        url,
        client.token().unwrap(),
        &created.session_id,
    ))
    .await
    .unwrap();
    let first = socket.next().await.unwrap().unwrap();
    assert!(matches!(first, Message::Binary(_)), "{first:?}");
    (socket, created.session_id.into_string())
}

/// Sends SIGTERM to `child`.
pub fn sigterm(child: &Child) {
    let sent = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(sent.success());
}

/// The close frame the server sends on `socket` within `within` (pings skipped), and how long
/// it took from `since`.
pub async fn close_frame(
    socket: &mut Socket,
    within: Duration,
    since: Instant,
) -> (CloseFrame, Duration) {
    loop {
        match tokio::time::timeout(within, socket.next())
            .await
            .unwrap_or_else(|_| panic!("no close within {within:?}"))
        {
            Some(Ok(Message::Close(Some(frame)))) => return (frame, since.elapsed()),
            Some(Ok(Message::Ping(_) | Message::Pong(_))) => {}
            other => panic!("unexpected {other:?}"),
        }
    }
}
