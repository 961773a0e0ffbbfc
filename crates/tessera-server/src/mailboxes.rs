//! Mailboxes: opaque binary frames addressed to a mailbox (a relay room's device, later a
//! protocol session's party) reach the server process that holds it, whichever replica the
//! sender is on. The frames are the callers' business (the relay's are Noise ciphertext); this
//! module only moves them.
//!
//! A caller [`Mailboxes::open`]s an address and reads its [`Inbox`]; a sender looks the
//! address up once ([`Mailboxes::route`]: which replica holds it) and then
//! [`Mailboxes::send`]s to that [`Route`].
//!
//! - SQLite (one process): mailboxes are in-process channels.
//! - PostgreSQL (replicas share only the database): a mailbox is also a row naming the replica
//!   that holds it (`mailboxes`), and each replica has one `LISTEN` connection
//!   ([`sqlx::postgres::PgListener`], its own connection, re-established when dropped) on a
//!   channel of its own. A send is one statement that checks the holder still holds the
//!   mailbox and notifies its channel, so a frame for a mailbox nobody holds is dropped on the
//!   spot and `send` says so. No home-made cluster protocol: replicas never talk to each other.
//!
//! Inline or table: a `NOTIFY` payload must stay below 8,000 bytes and is text, while frames
//! run to 64 KiB and more. A frame of at most [`INLINE_MAX`] bytes travels hex-encoded inside
//! the notification (one statement, nothing stored); a larger one is inserted into
//! `mailbox_frames` and the notification carries its row id; the receiving replica deletes the
//! row as it reads it (`DELETE … RETURNING`). Every notification names one frame and the
//! listener handles notifications one at a time, so frames are delivered in the order their
//! sends committed: per sender and mailbox, the order of the sends.
//!
//! Cleanup: closing a mailbox deletes its row and any frame still stored for it. A frame
//! stored in the instant a mailbox closed, or for a replica that died before reading it, is
//! deleted by [`Mailboxes::clean_up`] once older than [`FRAME_TTL`] (housekeeping runs it).
//! The mailboxes of a replica that died (its liveness lock is free, see `db::replicas`) are
//! forgotten by the others, and their own inboxes that watch it ([`Inbox::watch`]) are closed:
//! a party learns within one housekeeping period that its peer's replica is gone.
//!
//! Delivery is at most once: when the listening connection drops, notifications sent
//! meanwhile are lost, so every inbox of that process is closed (its users see the end of the
//! stream, as if the peer had left) rather than letting a stream continue with a gap; no
//! mailbox opens until the listener is connected again.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use sqlx::AnyPool;
use sqlx::postgres::PgListener;
use tokio::sync::{mpsc, oneshot};

use crate::db;
use crate::error::{ApiError, ApiResult};

/// Largest frame a mailbox carries (a session frame's limit).
pub const MAX_FRAME: usize = tessera_api::session_frame::MAX_FRAME;
/// Frames up to this size travel inside the notification (hex, under PostgreSQL's 8,000-byte
/// payload limit with the address); larger ones through `mailbox_frames`.
pub const INLINE_MAX: usize = 3 * 1024;
/// A stored frame nobody read for this long is deleted.
pub const FRAME_TTL: Duration = Duration::from_secs(60);
/// Frames that may wait in an inbox; an inbox that falls further behind frames from other
/// replicas is closed (a sender in this process waits instead).
pub const INBOX_DEPTH: usize = 256;
/// Longest mailbox address.
pub const MAX_ADDRESS: usize = 200;

/// Where a mailbox is: its address and the replica (instance id) that holds it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Route {
    address: String,
    holder: String,
}

impl Route {
    /// The mailbox `address` held by the replica `holder` (known from elsewhere, e.g. a relay
    /// code's row).
    #[must_use]
    pub fn new(address: impl Into<String>, holder: impl Into<String>) -> Self {
        Route {
            address: address.into(),
            holder: holder.into(),
        }
    }

    /// The mailbox's address.
    #[must_use]
    pub fn address(&self) -> &str {
        &self.address
    }

    /// The instance id of the replica that holds it.
    #[must_use]
    pub fn holder(&self) -> &str {
        &self.holder
    }
}

/// A mailbox held by this process.
struct Held {
    id: u64,
    tx: mpsc::Sender<Vec<u8>>,
    /// The replicas whose death closes this inbox (its peers' replicas).
    watches: Vec<String>,
}

struct Shared {
    instance: String,
    /// PostgreSQL: the database and this replica's channel.
    pg: Option<(AnyPool, String)>,
    held: Mutex<HashMap<String, Held>>,
    next_id: AtomicU64,
    /// PostgreSQL: whether the listener is connected (no mailbox opens while it is not: its
    /// frames would be lost).
    listening: AtomicBool,
    /// Dropped with the last handle: stops the listener.
    _stop: Option<oneshot::Sender<()>>,
    /// Woken whenever a mailbox opens on this replica (a party waiting for its peers looks
    /// again at once instead of at its next timed look-up).
    opened: tokio::sync::Notify,
}

/// This process's mailboxes (cheap to clone).
#[derive(Clone)]
pub struct Mailboxes(Arc<Shared>);

/// An open mailbox: the frames sent to it, in order. Dropping it closes the mailbox.
pub struct Inbox {
    address: String,
    id: u64,
    rx: mpsc::Receiver<Vec<u8>>,
    boxes: Mailboxes,
}

/// The `NOTIFY` channel of replica `instance`.
fn channel_of(instance: &str) -> String {
    let name: String = instance
        .chars()
        .filter(char::is_ascii_alphanumeric)
        .take(40)
        .collect();
    format!("tessera_mailbox_{name}")
}

fn check_address(address: &str) -> ApiResult<()> {
    if address.is_empty()
        || address.len() > MAX_ADDRESS
        || !address.bytes().all(|b| b.is_ascii_graphic())
    {
        return Err(ApiError::Internal(
            "a mailbox address is 1 to 200 printable ASCII characters".into(),
        ));
    }
    Ok(())
}

impl Mailboxes {
    /// In-process mailboxes only (SQLite: one process).
    #[must_use]
    pub fn in_process(instance: impl Into<String>) -> Self {
        Mailboxes(Arc::new(Shared {
            instance: instance.into(),
            pg: None,
            held: Mutex::default(),
            next_id: AtomicU64::new(0),
            listening: AtomicBool::new(true),
            _stop: None,
            opened: tokio::sync::Notify::new(),
        }))
    }

    /// Mailboxes shared through the PostgreSQL at `url` (reached through `db` too): connects
    /// this replica's listener and starts it.
    ///
    /// # Errors
    /// A database error (the listener could not connect or `LISTEN`).
    pub async fn on_postgres(
        db: AnyPool,
        url: &str,
        instance: impl Into<String>,
    ) -> Result<Self, sqlx::Error> {
        let instance = instance.into();
        let channel = channel_of(&instance);
        let listener = connect_listener(url, &channel).await?;
        let (stop, stopped) = oneshot::channel();
        let boxes = Mailboxes(Arc::new(Shared {
            instance,
            pg: Some((db, channel.clone())),
            held: Mutex::default(),
            next_id: AtomicU64::new(0),
            listening: AtomicBool::new(true),
            _stop: Some(stop),
            opened: tokio::sync::Notify::new(),
        }));
        let to = Listening {
            url: url.to_string(),
            channel,
        };
        tokio::spawn(listen(Arc::downgrade(&boxes.0), listener, to, stopped));
        Ok(boxes)
    }

    /// This process's instance id (the holder in its routes).
    #[must_use]
    pub fn instance(&self) -> &str {
        &self.0.instance
    }

    /// Opens `address` in this process.
    ///
    /// # Errors
    /// [`ApiError::Conflict`] when some process holds it already; a database error.
    pub async fn open(&self, address: &str) -> ApiResult<Inbox> {
        check_address(address)?;
        if !self.0.listening.load(Ordering::Acquire) {
            return Err(ApiError::Internal(
                "not listening for frames from other replicas; try again".into(),
            ));
        }
        let id = self.0.next_id.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = mpsc::channel(INBOX_DEPTH);
        {
            let mut held = self.lock()?;
            if held.contains_key(address) {
                return Err(ApiError::Conflict(format!("mailbox {address} is open")));
            }
            held.insert(
                address.to_string(),
                Held {
                    id,
                    tx,
                    watches: Vec::new(),
                },
            );
        }
        let inbox = Inbox {
            address: address.to_string(),
            id,
            rx,
            boxes: self.clone(),
        };
        if let Some((db, _)) = &self.0.pg
            && !db::mailboxes::open(db, address, &self.0.instance, crate::clock::now()).await?
        {
            // Held by another replica: this inbox must not delete its row when dropped.
            let mut inbox = inbox;
            inbox.forget_locally();
            return Err(ApiError::Conflict(format!("mailbox {address} is open")));
        }
        self.0.opened.notify_waiters();
        Ok(inbox)
    }

    /// Whether this replica holds the mailbox at `address` (no database query).
    pub(crate) fn holds(&self, address: &str) -> bool {
        self.lock().is_ok_and(|held| held.contains_key(address))
    }

    /// Completes when a mailbox opens on this replica next (enable it before looking up a
    /// route, so that an opening between the look-up and the wait is not missed).
    pub(crate) fn opened(&self) -> tokio::sync::futures::Notified<'_> {
        self.0.opened.notified()
    }

    /// Where `address` is held, if anywhere.
    ///
    /// # Errors
    /// A database error.
    pub async fn route(&self, address: &str) -> ApiResult<Option<Route>> {
        if self.lock()?.contains_key(address) {
            return Ok(Some(Route::new(address, &self.0.instance)));
        }
        match &self.0.pg {
            None => Ok(None),
            Some((db, _)) => Ok(db::mailboxes::holder(db, address)
                .await?
                .map(|holder| Route::new(address, holder))),
        }
    }

    /// Sends `frame` to the mailbox at `to`. `Ok(false)`: nobody holds it there any more (the
    /// frame is dropped).
    ///
    /// # Errors
    /// [`ApiError::PayloadTooLarge`] above [`MAX_FRAME`]; a database error.
    pub async fn send(&self, to: &Route, frame: Vec<u8>) -> ApiResult<bool> {
        if frame.len() > MAX_FRAME {
            return Err(ApiError::PayloadTooLarge(format!(
                "a mailbox frame has at most {MAX_FRAME} bytes"
            )));
        }
        if to.holder == self.0.instance {
            let tx = self.lock()?.get(&to.address).map(|held| held.tx.clone());
            return Ok(match tx {
                Some(tx) => tx.send(frame).await.is_ok(),
                None => false,
            });
        }
        let Some((db, _)) = &self.0.pg else {
            return Ok(false);
        };
        let channel = channel_of(&to.holder);
        let sent = if frame.len() <= INLINE_MAX {
            let payload = format!("i {} {}", to.address, hex::encode(&frame));
            db::mailboxes::notify_inline(db, &to.address, &to.holder, &channel, &payload).await?
        } else {
            db::mailboxes::store_and_notify(
                db,
                &to.address,
                &to.holder,
                &channel,
                &frame,
                crate::clock::now(),
            )
            .await?
        };
        Ok(sent)
    }

    /// Closes the inboxes that watch `instance` (its replica died).
    pub fn lose_replica(&self, instance: &str) {
        if let Ok(mut held) = self.0.held.lock() {
            held.retain(|_, h| !h.watches.iter().any(|w| w == instance));
        }
    }

    /// The replicas that inboxes of this process watch.
    #[must_use]
    pub fn watched(&self) -> HashSet<String> {
        self.0
            .held
            .lock()
            .map(|held| {
                held.values()
                    .flat_map(|h| h.watches.iter().cloned())
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Deletes the stored frames older than [`FRAME_TTL`] at `now` (Unix seconds); how many.
    ///
    /// # Errors
    /// A database error.
    pub async fn clean_up(&self, now: i64) -> ApiResult<u64> {
        match &self.0.pg {
            None => Ok(0),
            Some((db, _)) => {
                let before = now - FRAME_TTL.as_secs() as i64;
                Ok(db::mailboxes::delete_frames_before(db, before).await?)
            }
        }
    }

    /// How many mailboxes this process holds.
    #[must_use]
    pub fn held(&self) -> usize {
        self.0.held.lock().map(|h| h.len()).unwrap_or(0)
    }

    fn lock(&self) -> ApiResult<std::sync::MutexGuard<'_, HashMap<String, Held>>> {
        self.0
            .held
            .lock()
            .map_err(|_| ApiError::Internal("mailbox lock".into()))
    }

    /// Hands a frame from another replica to the inbox at `address`; drops it when nobody here
    /// holds it, and closes an inbox that fell [`INBOX_DEPTH`] frames behind.
    fn deliver(&self, address: &str, frame: Vec<u8>) {
        let Ok(mut held) = self.0.held.lock() else {
            return;
        };
        let Some(h) = held.get(address) else {
            return;
        };
        if let Err(mpsc::error::TrySendError::Full(_)) = h.tx.try_send(frame) {
            tracing::warn!("a mailbox fell too far behind and was closed");
            held.remove(address);
        }
    }
}

impl Inbox {
    /// The next frame; `None` once the mailbox is closed (its replica's listener dropped, the
    /// replica it watches died, or it fell too far behind).
    pub async fn recv(&mut self) -> Option<Vec<u8>> {
        self.rx.recv().await
    }

    /// Its address.
    #[must_use]
    pub fn address(&self) -> &str {
        &self.address
    }

    /// Closes this inbox when replica `instance` dies (a peer is there); an inbox may watch
    /// several (the peers of a session may be on several replicas). Nothing happens for this
    /// process's own instance.
    pub fn watch(&self, instance: &str) {
        if instance == self.boxes.0.instance {
            return;
        }
        if let Ok(mut held) = self.boxes.0.held.lock()
            && let Some(h) = held.get_mut(&self.address)
            && h.id == self.id
            && !h.watches.iter().any(|w| w == instance)
        {
            h.watches.push(instance.to_string());
        }
    }

    /// Removes this inbox's in-process entry (not a later one of the same address).
    fn remove_entry(&self) {
        if let Ok(mut held) = self.boxes.0.held.lock()
            && held.get(&self.address).is_some_and(|h| h.id == self.id)
        {
            held.remove(&self.address);
        }
    }

    /// Removes the in-process entry only (the database row is not this inbox's).
    fn forget_locally(&mut self) {
        self.remove_entry();
        self.address.clear();
    }
}

impl Drop for Inbox {
    fn drop(&mut self) {
        if self.address.is_empty() {
            return;
        }
        self.remove_entry();
        if let Some((db, _)) = &self.boxes.0.pg
            && let Ok(runtime) = tokio::runtime::Handle::try_current()
        {
            let (db, address, instance) = (
                db.clone(),
                std::mem::take(&mut self.address),
                self.boxes.0.instance.clone(),
            );
            runtime.spawn(async move {
                if let Err(e) = db::mailboxes::close(&db, &address, &instance).await {
                    tracing::warn!(error = %e, "could not close a mailbox in the database");
                }
            });
        }
    }
}

/// A notification's frame: inline (`i ADDRESS HEX`) or stored (`r ID`).
enum Notice {
    Inline(String, Vec<u8>),
    Stored(i64),
}

fn parse_notice(payload: &str) -> Option<Notice> {
    if let Some(rest) = payload.strip_prefix("i ") {
        let (address, frame) = rest.rsplit_once(' ')?;
        return Some(Notice::Inline(
            address.to_string(),
            hex::decode(frame).ok()?,
        ));
    }
    payload.strip_prefix("r ")?.parse().ok().map(Notice::Stored)
}

/// Where a replica's listener connects.
struct Listening {
    url: String,
    channel: String,
}

async fn connect_listener(url: &str, channel: &str) -> Result<PgListener, sqlx::Error> {
    let mut listener = PgListener::connect(url).await?;
    listener.listen(channel).await?;
    Ok(listener)
}

/// This replica's listener: one notification at a time (that keeps the order), until the
/// mailboxes are dropped.
async fn listen(
    shared: Weak<Shared>,
    mut listener: PgListener,
    to: Listening,
    mut stop: oneshot::Receiver<()>,
) {
    loop {
        let next = tokio::select! {
            _ = &mut stop => return,
            next = listener.try_recv() => next,
        };
        let Some(boxes) = shared.upgrade().map(Mailboxes) else {
            return;
        };
        match next {
            Ok(Some(notification)) => match parse_notice(notification.payload()) {
                Some(Notice::Inline(address, frame)) => boxes.deliver(&address, frame),
                Some(Notice::Stored(id)) => {
                    let Some((db, _)) = &boxes.0.pg else { return };
                    match db::mailboxes::take_frame(db, id).await {
                        Ok(Some((address, frame))) => boxes.deliver(&address, frame),
                        // Deleted by its mailbox's closing or by cleanup: dropped.
                        Ok(None) => {}
                        Err(e) => {
                            tracing::warn!(error = %e, "could not read a mailbox frame");
                            close_all(&boxes);
                        }
                    }
                }
                None => tracing::warn!("a mailbox notification of an unknown form was dropped"),
            },
            // The connection dropped and the listener is connected and listening again
            // (`PgListener` reconnects before it returns this).
            Ok(None) => {
                tracing::warn!("the mailbox listener's connection dropped and was re-established");
                close_all(&boxes);
            }
            Err(e) => {
                tracing::warn!(error = %e, "the mailbox listener failed; reconnecting");
                boxes.0.listening.store(false, Ordering::Release);
                close_all(&boxes);
                drop(boxes);
                listener = loop {
                    tokio::select! {
                        _ = &mut stop => return,
                        () = tokio::time::sleep(Duration::from_secs(1)) => {}
                    }
                    match connect_listener(&to.url, &to.channel).await {
                        Ok(l) => break l,
                        Err(e) => {
                            tracing::warn!(error = %e, "the mailbox listener cannot reconnect")
                        }
                    }
                };
                if let Some(shared) = shared.upgrade() {
                    shared.listening.store(true, Ordering::Release);
                }
            }
        }
    }
}

/// Frames may have been lost: every inbox ends rather than continue with a gap.
fn close_all(boxes: &Mailboxes) {
    if let Ok(mut held) = boxes.0.held.lock() {
        held.clear();
    }
}
