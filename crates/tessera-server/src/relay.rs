//! `GET /relay/{code}`: forwards frames between two devices that are not on one network.
//!
//! The first socket of a code waits (up to [`WAIT_FOR_PEER`]) for the second; then every binary
//! message of one is sent to the other, unchanged, until either closes or [`IDLE`] passes
//! without a frame. The devices speak Noise end to end, so the relay sees only ciphertext and
//! any change it made would fail authentication; pairing codes catch a relay that runs its own
//! handshakes. No account is needed (the devices may belong to nobody here); the number of
//! waiting codes is capped, in all and per source address, and a code stops waiting as soon as
//! its first device disconnects.
//!
//! Where rooms live:
//! - SQLite (one process): the waiting codes are in this process's memory.
//! - PostgreSQL (replicas): the waiting codes are rows of `relay_codes` (which replica holds the
//!   first device, its source address, since when), so the second device may reach any
//!   replica. Claiming a code, counting the caps and inserting a code are one step under the
//!   relay's advisory lock (`db::relay_codes`), so the caps hold across replicas. A first
//!   device that leaves deletes its row at once; the rows of a replica that died are deleted
//!   by the others (housekeeping), and a second device that finds a dead replica's code takes
//!   its place as the first.
//!
//! When both devices reach one replica, their sockets are joined in process as before. When
//! they reach two, each device gets a mailbox (`crate::mailboxes`, frames through
//! PostgreSQL): the second device's replica announces it to the first's (a join message), the
//! first device's early frames follow, then frames flow both ways. Either side's end (its
//! device left, or [`IDLE`]) is sent to the other; a side whose peer's replica died learns it
//! from housekeeping and closes its device's socket.

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

use crate::db::{self, Backend};
use crate::error::{ApiError, ApiResult};
use crate::extract::{ApiPath, ApiWebSocket};
use crate::mailboxes::{Inbox, Mailboxes, Route};
use crate::state::{AppState, now};

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

/// The codes waiting for their second device in this process (PostgreSQL: those whose first
/// device is here; the database has every replica's).
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

    /// Takes the wait `id` of `code` if its first device is still connected.
    fn take(&self, code: &str, id: u64) -> Option<oneshot::Sender<WebSocket>> {
        let mut map = self.0.lock().ok()?;
        if map.get(code).is_some_and(|w| w.id == id) {
            return map.remove(code).map(|w| w.tx).filter(|tx| !tx.is_closed());
        }
        None
    }

    /// Records `waiting` for `code`.
    fn insert(&self, code: &str, waiting: Waiting) -> ApiResult<()> {
        self.0
            .lock()
            .map_err(|_| ApiError::Internal("relay lock".into()))?
            .insert(code.to_string(), waiting);
        Ok(())
    }

    /// How many codes wait now in this process (for tests and metrics).
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
    /// The first device of a code (its wait id; the second device's socket when it comes to
    /// this replica).
    First(u64, oneshot::Receiver<WebSocket>),
    /// The second device, its first on this replica.
    Second(oneshot::Sender<WebSocket>),
    /// PostgreSQL: the first device, whose second may come to any replica (through `inbox`).
    SharedFirst(u64, oneshot::Receiver<WebSocket>, Inbox, WaitRow),
    /// PostgreSQL: the second device, its first on another replica.
    RemoteSecond(db::relay_codes::Waiting),
}

/// `GET /relay/{code}`.
#[utoipa::path(get, path = "/relay/{code}", tag = "relay", params(("code" = String, Path, description = "The pairing's relay code, ABCD-EFGH-JKMN")), responses((status = 101, description = "The relay socket between two devices"), crate::openapi::Conflict, crate::openapi::UpgradeRequired, crate::openapi::Errors))]
pub async fn open(
    State(state): State<AppState>,
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
    let rooms = state.relay_rooms().clone();
    let role = match state.backend() {
        Backend::Sqlite => claim_in_process(&rooms, &code, source)?,
        Backend::Postgres => claim_shared(&state, &code, source).await?,
    };
    let boxes = state.mailboxes().clone();
    let shutdown = state.clone();
    Ok(upgrade
        .max_message_size(MAX_FRAME + 1024)
        .read_buffer_size(16 * 1024)
        .on_upgrade(move |mut socket| async move {
            let _live = shutdown.shutdown().track("relay");
            let relayed = async move {
                match role {
                    Role::Second(tx) => {
                        if let Err(mut socket) = tx.send(socket) {
                            close(&mut socket, 1011, "the other device left").await;
                        }
                    }
                    Role::First(id, rx) => {
                        let waited =
                            tokio::time::timeout(WAIT_FOR_PEER, wait_for_peer(&mut socket, rx))
                                .await;
                        // Whatever happened, this wait is over: its slot is free.
                        rooms.forget(&code, id);
                        match waited {
                            Ok(Some((other, early))) => forward(socket, other, early).await,
                            Ok(None) => {}
                            Err(_) => nobody_came(&mut socket).await,
                        }
                    }
                    Role::SharedFirst(id, rx, mut inbox, row) => {
                        let waited = tokio::time::timeout(
                            WAIT_FOR_PEER,
                            wait_for_any_peer(&mut socket, rx, &mut inbox),
                        )
                        .await;
                        // Whatever happened, this wait is over: its slot is free, on every replica.
                        rooms.forget(&code, id);
                        let freed = row.release().await;
                        match waited {
                            Ok(Some(Peer::Here(other, early))) => {
                                drop(inbox);
                                forward(socket, *other, early).await;
                            }
                            Ok(Some(Peer::Elsewhere(to, early))) => {
                                inbox.watch(to.holder());
                                for frame in early {
                                    if !matches!(boxes.send(&to, relayed(&frame)).await, Ok(true)) {
                                        close(&mut socket, 1000, "the other device left").await;
                                        return;
                                    }
                                }
                                forward_between_replicas(socket, inbox, &to, &boxes).await;
                            }
                            gone => {
                                if gone.is_err() {
                                    nobody_came(&mut socket).await;
                                }
                                if !freed {
                                    // A second device on another replica claimed the code as this
                                    // one left: its join is on the way; tell it the room is over.
                                    tell_second_device_gone(&mut inbox, &boxes).await;
                                }
                            }
                        }
                    }
                    Role::RemoteSecond(first) => {
                        let here = room_address(&code, &first, SECOND_DEVICE);
                        let to =
                            Route::new(room_address(&code, &first, FIRST_DEVICE), &first.instance);
                        let inbox = match boxes.open(&here).await {
                            Ok(inbox) => inbox,
                            Err(e) => {
                                tracing::warn!(error = %e, "could not open a relay mailbox");
                                close(&mut socket, 1011, "the relay failed").await;
                                return;
                            }
                        };
                        inbox.watch(&first.instance);
                        let mut join = vec![JOIN];
                        join.extend_from_slice(boxes.instance().as_bytes());
                        if !matches!(boxes.send(&to, join).await, Ok(true)) {
                            close(&mut socket, 1011, "the other device left").await;
                            return;
                        }
                        forward_between_replicas(socket, inbox, &to, &boxes).await;
                    }
                }
            };
            // At shutdown a relay is cut once the grace period is over: its frames are the two
            // devices' own encrypted channel, which they start again.
            tokio::select! {
                () = relayed => {}
                () = shutdown.shutdown().closing() => {}
            }
        }))
}

async fn nobody_came(socket: &mut WebSocket) {
    close(
        socket,
        CLOSE_NOBODY_CAME,
        "no other device used this code in time",
    )
    .await;
}

/// SQLite: the first device of `code` waits in this process, or the second joins it.
fn claim_in_process(rooms: &Rooms, code: &str, source: IpAddr) -> ApiResult<Role> {
    let mut map = rooms
        .0
        .lock()
        .map_err(|_| ApiError::Internal("relay lock".into()))?;
    if let Some(w) = map.remove(code)
        && !w.tx.is_closed()
    {
        return Ok(Role::Second(w.tx));
    }
    map.retain(|_, w| !w.tx.is_closed());
    let (all, mine) = Rooms::waiting(&map, source);
    check_caps(all, mine)?;
    let (tx, rx) = oneshot::channel();
    let id = NEXT_WAIT.fetch_add(1, Ordering::Relaxed);
    map.insert(code.to_string(), Waiting { id, source, tx });
    Ok(Role::First(id, rx))
}

fn check_caps(all: usize, mine: usize) -> ApiResult<()> {
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
    Ok(())
}

/// PostgreSQL: claims `code`'s waiting first device (on this replica or another live one), or
/// makes this device the first, within the caps counted over every replica, in one
/// transaction under the relay's lock.
async fn claim_shared(state: &AppState, code: &str, source: IpAddr) -> ApiResult<Role> {
    let rooms = state.relay_rooms();
    let me = state.instance().to_string();
    let id = NEXT_WAIT.fetch_add(1, Ordering::Relaxed);
    let mine = db::relay_codes::Waiting {
        instance: me.clone(),
        wait_id: id as i64,
    };
    // The first device's mailbox exists before its code is visible to other replicas.
    let inbox = state
        .mailboxes()
        .open(&room_address(code, &mine, FIRST_DEVICE))
        .await?;
    let (tx, rx) = oneshot::channel();
    let mut wtx = state.begin_write().await?;
    db::relay_codes::lock(&mut wtx).await?;
    if let Some(first) = db::relay_codes::take(&mut wtx, code).await? {
        if first.instance == me {
            if let Some(tx) = rooms.take(code, first.wait_id as u64) {
                wtx.commit().await?;
                return Ok(Role::Second(tx));
            }
        } else if !db::replicas::is_dead_in(&mut wtx, &first.instance).await? {
            wtx.commit().await?;
            return Ok(Role::RemoteSecond(first));
        }
        // Its first device left, or its replica died: this device takes its place.
    }
    let (all, from_here) = db::relay_codes::count(&mut wtx, &source.to_string()).await?;
    check_caps(
        usize::try_from(all).unwrap_or(usize::MAX),
        usize::try_from(from_here).unwrap_or(usize::MAX),
    )?;
    db::relay_codes::insert(&mut wtx, code, &mine, &source.to_string(), now()).await?;
    // In the map before the commit: a second device on this replica reads the row (after the
    // commit, under the lock) and then takes the map's entry.
    rooms.insert(code, Waiting { id, source, tx })?;
    if let Err(e) = wtx.commit().await {
        rooms.forget(code, id);
        return Err(e);
    }
    let row = WaitRow {
        db: state.db().clone(),
        code: code.to_string(),
        instance: me,
        wait_id: id as i64,
        released: false,
    };
    Ok(Role::SharedFirst(id, rx, inbox, row))
}

/// PostgreSQL: a first device's row in `relay_codes`, deleted when its wait ends, also when the
/// upgrade never happens (dropped unreleased).
struct WaitRow {
    db: sqlx::AnyPool,
    code: String,
    instance: String,
    wait_id: i64,
    released: bool,
}

impl WaitRow {
    /// Deletes the row; `false` when a second device had claimed it already.
    async fn release(mut self) -> bool {
        self.released = true;
        db::relay_codes::forget(&self.db, &self.code, &self.instance, self.wait_id)
            .await
            .unwrap_or_else(|e| {
                tracing::warn!(error = %e, "could not free a relay code");
                true
            })
    }
}

impl Drop for WaitRow {
    fn drop(&mut self) {
        if self.released {
            return;
        }
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            let (db, code, instance, wait_id) = (
                self.db.clone(),
                std::mem::take(&mut self.code),
                std::mem::take(&mut self.instance),
                self.wait_id,
            );
            runtime.spawn(async move {
                if let Err(e) = db::relay_codes::forget(&db, &code, &instance, wait_id).await {
                    tracing::warn!(error = %e, "could not free a relay code");
                }
            });
        }
    }
}

/// Where the first device's second is.
enum Peer {
    /// On this replica: its socket, and the first device's early frames.
    Here(Box<WebSocket>, Vec<Message>),
    /// On another replica: its mailbox, and the first device's early frames.
    Elsewhere(Route, Vec<Message>),
}

/// [`wait_for_peer`] when the second device may also come to another replica: its join
/// message arrives in `inbox` then.
async fn wait_for_any_peer(
    socket: &mut WebSocket,
    mut rx: oneshot::Receiver<WebSocket>,
    inbox: &mut Inbox,
) -> Option<Peer> {
    let mut early = Vec::new();
    loop {
        tokio::select! {
            other = &mut rx => return other.ok().map(|o| Peer::Here(Box::new(o), early)),
            joined = inbox.recv() => {
                let Some(joined) = joined else {
                    // This replica lost its listener (frames may be lost): start again.
                    close(socket, 1011, "the relay lost this code; use a new one").await;
                    return None;
                };
                return second_device(inbox, &joined).map(|to| Peer::Elsewhere(to, early));
            }
            message = socket.recv() => if !keep_early(socket, &mut early, message).await {
                return None;
            },
        }
    }
}

/// What the first device sent while it waits: a frame is kept for the second device (at most
/// [`MAX_EARLY_FRAMES`]); `false` when the wait is over (the first device left, sent too many
/// frames, or sent text, which is not part of the protocol).
async fn keep_early(
    socket: &mut WebSocket,
    early: &mut Vec<Message>,
    message: Option<Result<Message, axum::Error>>,
) -> bool {
    match message {
        Some(Ok(m @ Message::Binary(_))) if early.len() < MAX_EARLY_FRAMES => {
            early.push(m);
            true
        }
        Some(Ok(Message::Ping(_) | Message::Pong(_))) => true,
        Some(Ok(Message::Binary(_))) => {
            close(socket, 1008, "too many frames before the other device came").await;
            false
        }
        _ => false,
    }
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
            message = socket.recv() => if !keep_early(socket, &mut early, message).await {
                return None;
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

/// The second device's mailbox, from its join message to the first device's `inbox`.
fn second_device(inbox: &Inbox, joined: &[u8]) -> Option<Route> {
    let (&JOIN, holder) = joined.split_first()? else {
        return None;
    };
    let holder = std::str::from_utf8(holder).ok()?;
    let address = inbox.address().strip_suffix(FIRST_DEVICE)?;
    Some(Route::new(format!("{address}{SECOND_DEVICE}"), holder))
}

/// How long a first device's replica waits for the join of a second device that claimed the
/// code just as the first left (its replica sends it right after the upgrade).
const JOIN_WAIT: Duration = Duration::from_secs(30);

/// Tells the second device on another replica, once its join arrives, that the room is over.
async fn tell_second_device_gone(inbox: &mut Inbox, boxes: &Mailboxes) {
    if let Ok(Some(joined)) = tokio::time::timeout(JOIN_WAIT, inbox.recv()).await
        && let Some(to) = second_device(inbox, &joined)
    {
        let _ = boxes.send(&to, vec![END]).await;
    }
}

/// Mailbox messages between the two replicas of a room: a relayed frame, the second device's
/// arrival (with its replica's instance id), the end of the room.
const FRAME: u8 = 0;
const JOIN: u8 = 1;
const END: u8 = 2;
/// The two mailboxes of a room (suffixes of its address).
const FIRST_DEVICE: &str = "/first";
const SECOND_DEVICE: &str = "/second";

/// A room's mailbox address: the code, the first device's replica and wait (a later wait of
/// the same code gets other mailboxes), and which device.
fn room_address(code: &str, first: &db::relay_codes::Waiting, device: &str) -> String {
    format!("relay/{code}/{}/{}{device}", first.instance, first.wait_id)
}

/// A relayed frame as a mailbox message.
fn relayed(message: &Message) -> Vec<u8> {
    let data: &[u8] = match message {
        Message::Binary(b) => b,
        _ => &[],
    };
    let mut out = Vec::with_capacity(1 + data.len());
    out.push(FRAME);
    out.extend_from_slice(data);
    out
}

/// Forwards binary frames between `socket` and the other device's mailbox at `to` (its frames
/// arrive in `inbox`) until either side ends, the other replica dies or [`IDLE`] passes.
async fn forward_between_replicas(
    mut socket: WebSocket,
    mut inbox: Inbox,
    to: &Route,
    boxes: &Mailboxes,
) {
    enum Next {
        Device(Option<Result<Message, axum::Error>>),
        Other(Option<Vec<u8>>),
    }
    let mut other_ended = false;
    loop {
        let next = tokio::time::timeout(IDLE, async {
            tokio::select! {
                m = socket.recv() => Next::Device(m),
                m = inbox.recv() => Next::Other(m),
            }
        })
        .await;
        let Ok(next) = next else { break };
        match next {
            Next::Device(Some(Ok(m @ Message::Binary(_)))) => {
                if !matches!(boxes.send(to, relayed(&m)).await, Ok(true)) {
                    other_ended = true;
                    break;
                }
            }
            Next::Device(Some(Ok(Message::Ping(_) | Message::Pong(_)))) => {}
            Next::Device(_) => break,
            Next::Other(Some(m)) => match m.split_first() {
                Some((&FRAME, frame)) => {
                    let frame = Message::Binary(frame.to_vec().into());
                    if socket.send(frame).await.is_err() {
                        break;
                    }
                }
                Some((&END, _)) => {
                    other_ended = true;
                    break;
                }
                _ => break,
            },
            // Closed: the other replica died, or this one lost frames.
            Next::Other(None) => {
                other_ended = true;
                break;
            }
        }
    }
    if !other_ended {
        let _ = boxes.send(to, vec![END]).await;
    }
    close(&mut socket, 1000, "the other device left").await;
}

/// The device-to-device relay: `GET /relay/{code}`.
pub(crate) fn router() -> axum::Router<AppState> {
    axum::Router::new().route("/relay/{code}", axum::routing::get(open))
}
