//! `GET /relay/{code}`: forwards frames between two devices that are not on one network.
//!
//! The first socket of a code waits (up to [`WAIT_FOR_PEER`]) for the second; then every binary
//! message of one is sent to the other, unchanged, until either closes or [`IDLE`] passes
//! without a frame. The devices speak Noise end to end, so the relay sees only ciphertext and
//! any change it made would fail authentication; pairing codes catch a relay that runs its own
//! handshakes. No account is needed (the devices may belong to nobody here); the number of
//! waiting codes is capped. Rooms live in this process: both devices must reach one replica.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::ws::{CloseFrame, Message, WebSocket, WebSocketUpgrade};
use axum::extract::{Path, State};
use axum::response::Response;
use futures_util::{SinkExt, StreamExt};
use tokio::sync::oneshot;

use crate::error::{ApiError, ApiResult};
use crate::state::AppState;

/// How long the first device waits for the second.
pub const WAIT_FOR_PEER: Duration = Duration::from_secs(10 * 60);
/// A relayed pair with no frame for this long is closed.
pub const IDLE: Duration = Duration::from_secs(30 * 60);
/// Most codes waiting at once.
pub const MAX_WAITING: usize = 1024;
/// Largest frame (a Noise message).
pub const MAX_FRAME: usize = 65_535;
/// Close code: nobody joined in time.
pub const CLOSE_NOBODY_CAME: u16 = 4408;

/// The codes waiting for their second device.
#[derive(Clone, Default)]
pub struct Rooms(Arc<Mutex<HashMap<String, oneshot::Sender<WebSocket>>>>);

enum Role {
    First(oneshot::Receiver<WebSocket>),
    Second(oneshot::Sender<WebSocket>),
}

/// `GET /relay/{code}`.
pub async fn open(
    State(state): State<AppState>,
    Path(code): Path<String>,
    upgrade: WebSocketUpgrade,
) -> ApiResult<Response> {
    if !tessera_core::api::is_relay_code(&code) {
        return Err(ApiError::BadRequest(
            "a relay code looks like ABCD-EFGH-JKMN".into(),
        ));
    }
    let rooms = state.relay_rooms().clone();
    let role = {
        let mut map = rooms
            .0
            .lock()
            .map_err(|_| ApiError::Internal("relay lock".into()))?;
        match map.remove(&code) {
            Some(tx) if !tx.is_closed() => Role::Second(tx),
            _ => {
                if map.len() >= MAX_WAITING {
                    map.retain(|_, tx| !tx.is_closed());
                }
                if map.len() >= MAX_WAITING {
                    return Err(ApiError::Conflict(
                        "the relay is full; try again later".into(),
                    ));
                }
                let (tx, rx) = oneshot::channel();
                map.insert(code.clone(), tx);
                Role::First(rx)
            }
        }
    };
    Ok(upgrade
        .max_message_size(MAX_FRAME + 1024)
        .read_buffer_size(16 * 1024)
        .on_upgrade(move |mut socket| async move {
            match role {
                Role::Second(tx) => {
                    if let Err(mut socket) = tx.send(socket) {
                        close(&mut socket, 1011, "the other device left").await;
                    }
                }
                Role::First(rx) => match tokio::time::timeout(WAIT_FOR_PEER, rx).await {
                    Ok(Ok(other)) => forward(socket, other).await,
                    _ => {
                        if let Ok(mut map) = rooms.0.lock() {
                            map.remove(&code);
                        }
                        close(
                            &mut socket,
                            CLOSE_NOBODY_CAME,
                            "no other device used this code in time",
                        )
                        .await;
                    }
                },
            }
        }))
}

async fn close(socket: &mut WebSocket, code: u16, reason: &str) {
    let _ = socket
        .send(Message::Close(Some(CloseFrame {
            code,
            reason: reason.into(),
        })))
        .await;
}

/// Forwards binary frames both ways until one side ends.
async fn forward(a: WebSocket, b: WebSocket) {
    let (mut a_tx, mut a_rx) = a.split();
    let (mut b_tx, mut b_rx) = b.split();
    loop {
        let next = tokio::time::timeout(IDLE, async {
            tokio::select! {
                m = a_rx.next() => (true, m),
                m = b_rx.next() => (false, m),
            }
        })
        .await;
        let Ok((from_a, message)) = next else {
            break;
        };
        let to = if from_a { &mut b_tx } else { &mut a_tx };
        match message {
            Some(Ok(Message::Binary(frame))) => {
                if to.send(Message::Binary(frame)).await.is_err() {
                    break;
                }
            }
            Some(Ok(Message::Ping(_) | Message::Pong(_))) => {}
            _ => break,
        }
    }
    for tx in [&mut a_tx, &mut b_tx] {
        let _ = tx
            .send(Message::Close(Some(CloseFrame {
                code: 1000,
                reason: "the other device left".into(),
            })))
            .await;
    }
}
