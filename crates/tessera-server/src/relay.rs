//! `GET /relay/{code}`: forwards frames between two devices that are not on one network.
//!
//! The first socket of a code waits (up to [`WAIT_FOR_PEER`]) for the second; then every binary
//! message of one is sent to the other, unchanged, until either closes or [`IDLE`] passes
//! without a frame. The devices speak Noise end to end, so the relay sees only ciphertext and
//! any change it made would fail authentication; pairing codes catch a relay that runs its own
//! handshakes. No account is needed (the devices may belong to nobody here); the number of
//! waiting codes is capped, in all and per source address, and a code stops waiting as soon as
//! its first device disconnects. Rooms live in this process: both devices must reach one
//! replica.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::ws::{CloseFrame, Message, WebSocket};
use axum::extract::{ConnectInfo, State};
use axum::http::Extensions;
use axum::response::Response;
use futures_util::{SinkExt, StreamExt};
use tokio::sync::oneshot;

use crate::error::{ApiError, ApiResult};
use crate::extract::{ApiPath, ApiWebSocket};
use crate::state::AppState;

/// How long the first device waits for the second.
pub const WAIT_FOR_PEER: Duration = Duration::from_secs(10 * 60);
/// A relayed pair with no frame for this long is closed.
pub const IDLE: Duration = Duration::from_secs(30 * 60);
/// Most codes waiting at once.
pub const MAX_WAITING: usize = 1024;
/// Most codes waiting at once from one source address (an IPv6 /64 counts as one address):
/// one address cannot fill the relay for everybody else.
pub const MAX_WAITING_PER_ADDRESS: usize = 8;
/// Frames the first device may send before the second arrives (its handshake opening), kept
/// for the second.
pub const MAX_EARLY_FRAMES: usize = 4;
/// Largest frame (a Noise message).
pub const MAX_FRAME: usize = 65_535;
/// Close code: nobody joined in time.
pub const CLOSE_NOBODY_CAME: u16 = 4408;

/// A code waiting for its second device.
struct Waiting {
    /// Tells this wait apart from a later one of the same code.
    id: u64,
    /// Who waits (its address, IPv6 cut to its /64).
    source: IpAddr,
    tx: oneshot::Sender<WebSocket>,
}

/// The codes waiting for their second device.
#[derive(Clone, Default)]
pub struct Rooms(Arc<Mutex<HashMap<String, Waiting>>>);

static NEXT_WAIT: AtomicU64 = AtomicU64::new(0);

impl Rooms {
    /// Codes waiting now (their first device still connected), in all and from `source`.
    fn waiting(map: &HashMap<String, Waiting>, source: IpAddr) -> (usize, usize) {
        let live = map.values().filter(|w| !w.tx.is_closed());
        live.fold((0, 0), |(all, mine), w| {
            (all + 1, mine + usize::from(w.source == source))
        })
    }

    /// Forgets the wait `id` of `code` (not a later wait of the same code).
    fn forget(&self, code: &str, id: u64) {
        if let Ok(mut map) = self.0.lock()
            && map.get(code).is_some_and(|w| w.id == id)
        {
            map.remove(code);
        }
    }

    /// How many codes wait now (for tests and metrics).
    #[must_use]
    pub fn len(&self) -> usize {
        self.0
            .lock()
            .map(|m| m.values().filter(|w| !w.tx.is_closed()).count())
            .unwrap_or(0)
    }

    /// Whether no code waits.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// The address a limit counts: IPv4 as is, IPv6 by its /64 (one subscriber's network).
fn source_of(extensions: &Extensions) -> IpAddr {
    let ip = extensions
        .get::<ConnectInfo<SocketAddr>>()
        .map_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED), |c| c.0.ip());
    match ip {
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => {
                let s = v6.segments();
                IpAddr::V6(std::net::Ipv6Addr::new(s[0], s[1], s[2], s[3], 0, 0, 0, 0))
            }
        },
        v4 => v4,
    }
}

enum Role {
    First(u64, oneshot::Receiver<WebSocket>),
    Second(oneshot::Sender<WebSocket>),
}

/// `GET /relay/{code}`.
pub async fn open(
    State(rooms): State<Rooms>,
    ApiPath(code): ApiPath<String>,
    extensions: Extensions,
    ApiWebSocket(upgrade): ApiWebSocket,
) -> ApiResult<Response> {
    if !tessera_api::is_relay_code(&code) {
        return Err(ApiError::BadRequest(
            "a relay code looks like ABCD-EFGH-JKMN".into(),
        ));
    }
    let source = source_of(&extensions);
    let role = {
        let mut map = rooms
            .0
            .lock()
            .map_err(|_| ApiError::Internal("relay lock".into()))?;
        match map.remove(&code) {
            Some(w) if !w.tx.is_closed() => Role::Second(w.tx),
            _ => {
                map.retain(|_, w| !w.tx.is_closed());
                let (all, mine) = Rooms::waiting(&map, source);
                if mine >= MAX_WAITING_PER_ADDRESS {
                    return Err(ApiError::Conflict(format!(
                        "{mine} relay codes from your address wait for their other device \
                         already (at most {MAX_WAITING_PER_ADDRESS}); close one or try again later"
                    )));
                }
                if all >= MAX_WAITING {
                    return Err(ApiError::Conflict(
                        "the relay is full; try again later".into(),
                    ));
                }
                let (tx, rx) = oneshot::channel();
                let id = NEXT_WAIT.fetch_add(1, Ordering::Relaxed);
                map.insert(code.clone(), Waiting { id, source, tx });
                Role::First(id, rx)
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
                Role::First(id, rx) => {
                    let waited =
                        tokio::time::timeout(WAIT_FOR_PEER, wait_for_peer(&mut socket, rx)).await;
                    // Whatever happened, this wait is over: its slot is free.
                    rooms.forget(&code, id);
                    match waited {
                        Ok(Some((other, early))) => forward(socket, other, early).await,
                        Ok(None) => {}
                        Err(_) => {
                            close(
                                &mut socket,
                                CLOSE_NOBODY_CAME,
                                "no other device used this code in time",
                            )
                            .await;
                        }
                    }
                }
            }
        }))
}

/// Waits for the second device while watching the first one's own socket: when the first
/// device leaves, `None` (and its slot is freed at once). Frames it sends meanwhile (the start
/// of its handshake) are kept for the second.
async fn wait_for_peer(
    socket: &mut WebSocket,
    mut rx: oneshot::Receiver<WebSocket>,
) -> Option<(WebSocket, Vec<Message>)> {
    let mut early = Vec::new();
    loop {
        tokio::select! {
            other = &mut rx => return other.ok().map(|o| (o, early)),
            message = socket.recv() => match message {
                Some(Ok(m @ Message::Binary(_))) if early.len() < MAX_EARLY_FRAMES => {
                    early.push(m);
                }
                Some(Ok(Message::Ping(_) | Message::Pong(_))) => {}
                Some(Ok(Message::Binary(_))) => {
                    close(socket, 1008, "too many frames before the other device came").await;
                    return None;
                }
                // Closed, failed, or text (not part of the protocol).
                _ => return None,
            },
        }
    }
}

async fn close(socket: &mut WebSocket, code: u16, reason: &str) {
    let _ = socket
        .send(Message::Close(Some(CloseFrame {
            code,
            reason: reason.into(),
        })))
        .await;
}

/// Forwards binary frames both ways until one side ends; `early` (from `a`) goes first.
async fn forward(a: WebSocket, b: WebSocket, early: Vec<Message>) {
    let (mut a_tx, mut a_rx) = a.split();
    let (mut b_tx, mut b_rx) = b.split();
    for frame in early {
        if b_tx.send(frame).await.is_err() {
            let _ = a_tx.send(Message::Close(None)).await;
            return;
        }
    }
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

/// The device-to-device relay: `GET /relay/{code}`.
pub(crate) fn router() -> axum::Router<AppState> {
    axum::Router::new().route("/relay/{code}", axum::routing::get(open))
}
