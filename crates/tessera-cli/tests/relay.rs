//! The device-to-device relay of a real `tessera server` process under abuse: one address
//! opening code after code, then leaving; another address pairing meanwhile.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use common::Server;
use common::relay::{PER_ADDRESS, Socket, address, open_relay};
use futures_util::{SinkExt, StreamExt};
use tessera_client::peer::relay::new_code;
use tokio_tungstenite::tungstenite::Message;

/// Opens a new code from `source`, retrying while the server has not yet seen that the
/// sockets closed before went away (it notices on its own; this only waits for it).
async fn open_eventually(server: SocketAddr, source: &str) -> Socket {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        match open_relay(server, source, &new_code()).await {
            Ok(ws) => return ws,
            Err(409) if Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(status) => panic!("the relay still refuses {source}: {status}"),
        }
    }
}

async fn next_binary(ws: &mut Socket) -> Vec<u8> {
    loop {
        match ws.next().await {
            Some(Ok(Message::Binary(b))) => return b.to_vec(),
            Some(Ok(Message::Ping(_) | Message::Pong(_))) => {}
            other => panic!("expected a relayed frame, got {other:?}"),
        }
    }
}

#[tokio::test]
async fn one_address_cannot_fill_the_relay_and_its_codes_go_when_it_leaves() {
    let server = Server::start_fresh(&[]);
    let at = address(&server);

    // One address opens code after code: only its share waits, the rest are refused.
    let mut held = Vec::new();
    let mut refused = 0;
    for _ in 0..(PER_ADDRESS + 12) {
        match open_relay(at, "127.0.0.1", &new_code()).await {
            Ok(ws) => held.push(ws),
            Err(409) => refused += 1,
            Err(s) => panic!("unexpected {s}"),
        }
    }
    assert_eq!(held.len(), PER_ADDRESS);
    assert_eq!(refused, 12);

    // Meanwhile two devices behind another address pair through the relay, the first one
    // sending its opening frame before the second arrives.
    let code = new_code();
    let mut first = open_relay(at, "127.0.0.2", &code).await.unwrap();
    first
        .send(Message::Binary(b"hello from the first".to_vec().into()))
        .await
        .unwrap();
    let mut second = open_relay(at, "127.0.0.2", &code).await.unwrap();
    assert_eq!(next_binary(&mut second).await, b"hello from the first");
    second
        .send(Message::Binary(b"and back".to_vec().into()))
        .await
        .unwrap();
    assert_eq!(next_binary(&mut first).await, b"and back");

    // The first address disconnects without a word: its codes stop waiting, and it (or anyone)
    // can open as many again.
    drop(held);
    let mut again = Vec::new();
    for _ in 0..PER_ADDRESS {
        again.push(open_eventually(at, "127.0.0.1").await);
    }
    assert_eq!(
        open_relay(at, "127.0.0.1", &new_code()).await.err(),
        Some(409),
        "the per-address cap holds again"
    );
}
