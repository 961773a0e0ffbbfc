//! A device's socket in a session of several parties: the replica that holds the socket opens
//! the device's mailbox of the session (`session/{id}/party/{i}`, [`party_address`]) and pumps
//! frames both ways, so that the device reaches every other party (the server's own party, other
//! devices on this replica or another) the way they reach each other.
//!
//! The device writes each session frame ([`tessera_api::session_frame`]) behind one byte, the
//! party it is for ([`tessera_api::session_frame::addressed`]). Before a frame goes on, the pump
//! checks it whole ([`Frame::decode`]), checks that its header names the party this socket
//! authenticated (a device cannot speak for another party) and that its recipient is a peer of
//! the session; the frame then goes, unchanged, into the recipient's mailbox, unless either
//! side has ended with the other (the peer's end may still be on its way to the device, which
//! writes on until it reads it: the frame is dropped). A frame that fails any of this closes
//! the socket with [`CLOSE_INVALID_MESSAGE`] and a reason, and every peer is told the device's
//! run failed.
//! Frames in the device's mailbox go to the socket as they are (their sender in the header);
//! the device's link checks them ([`tessera_api::session_frame::Peers`]).
//!
//! How the pump ends: the device ends its run with each peer that has not ended its own (an end
//! frame) and closes; a device that closes or drops its socket before that is reported to those
//! peers as having left; one silent, in both directions, for the idle timeout is closed with
//! [`CLOSE_EXPIRED`] and reported as expired; if a peer's mailbox is closed when the device writes
//! to it and the peer's own end does not arrive within [`GONE_GRACE`], the device gets an end in
//! the peer's name saying its mailbox is closed; if the device's own mailbox closes
//! (a peer's replica died, or this replica lost frames), the socket is closed with
//! [`CLOSE_INTERNAL`] and the reason. Pings do not count as activity.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::time::Duration;

use axum::extract::ws::{Message, WebSocket};
use tessera_api::ServerSessionId;
use tessera_api::session_frame::{Body, End, EndReason, end_frame, ends_from, split_addressed};
use tessera_core::PartyIndex;
use tokio::time::Instant;

use crate::mailboxes::{Inbox, Mailboxes, Route};
pub use crate::session_link::{Frame, party_address};
use crate::session_link::{GONE_GRACE, LinkError, Opened, open_session_box};
use crate::ws::{CLOSE_EXPIRED, CLOSE_INTERNAL, CLOSE_INVALID_MESSAGE, close, finish_close};

/// How a device's pump ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Pumped {
    /// The device ended its run with every peer, then closed.
    Ended,
    /// The socket closed or failed before the device ended with every peer; those it had not
    /// were told it left.
    Left,
    /// Nothing moved for the idle timeout; the device and its peers were told.
    Expired,
    /// The device sent something that is not a frame it may send (the reason, also the close
    /// frame's); its peers were told its run failed.
    Refused(String),
    /// The device's mailbox closed, or the mailboxes failed (the reason).
    Broken(String),
}

/// A device's socket in session `session` as party `me`, whose peers are `peers`.
pub struct Pump<'a> {
    boxes: &'a Mailboxes,
    me: PartyIndex,
    inbox: Inbox,
    /// The session's other parties.
    peers: BTreeSet<PartyIndex>,
    routes: BTreeMap<PartyIndex, Route>,
    /// Frames that arrived while the pump looked for the peers: the device gets them first.
    early: VecDeque<Vec<u8>>,
    /// The peers the device sent its end to, or that sent theirs, or whose mailbox is closed:
    /// nothing more goes to them.
    ended: BTreeSet<PartyIndex>,
    /// Peers whose mailbox was found closed before their end came: when the device is told
    /// they left, unless their end comes first.
    gone: BTreeMap<PartyIndex, Instant>,
}

impl<'a> Pump<'a> {
    /// Opens the device's mailbox and finds its peers' (each may open a little later, until
    /// `appear_within`).
    ///
    /// # Errors
    /// As [`crate::session_link::MailboxLink::open`]: a bad session id or party set, the
    /// device's mailbox open already (another socket of the same party), a peer that never
    /// appeared.
    pub async fn open(
        boxes: &'a Mailboxes,
        session: &ServerSessionId,
        me: PartyIndex,
        peers: &[PartyIndex],
        appear_within: Duration,
    ) -> Result<Pump<'a>, LinkError> {
        Self::open_checking(boxes, None, session, me, peers, appear_within).await
    }

    /// [`Self::open`], reading from `sessions` (the database) whether the session ended from
    /// outside its parties while a peer is missing
    /// ([`crate::session_link::MailboxLink::open_checking`]).
    ///
    /// # Errors
    /// As [`Self::open`]; [`LinkError::Ended`] with the reason recorded.
    pub async fn open_checking(
        boxes: &'a Mailboxes,
        sessions: Option<&sqlx::AnyPool>,
        session: &ServerSessionId,
        me: PartyIndex,
        peers: &[PartyIndex],
        appear_within: Duration,
    ) -> Result<Pump<'a>, LinkError> {
        let Opened {
            inbox,
            peers,
            routes,
            early,
            ended,
        } = open_session_box(boxes, session, me, peers, appear_within, sessions).await?;
        Ok(Pump {
            boxes,
            me,
            inbox,
            peers: peers.all().collect(),
            routes,
            early,
            ended,
            gone: BTreeMap::new(),
        })
    }

    /// Pumps frames between `socket` and the session until one of [`Pumped`] happens, then
    /// closes the device's mailbox. `idle`: how long both directions may stay silent; `closing`:
    /// completes when the server closes its sessions at shutdown.
    pub async fn run(
        mut self,
        socket: &mut WebSocket,
        idle: Duration,
        closing: impl Future<Output = ()>,
    ) -> Pumped {
        // What came while the peers were looked for (a peer that ended meanwhile among it).
        while let Some(frame) = self.early.pop_front() {
            if socket.send(Message::Binary(frame.into())).await.is_err() {
                self.tell_peers(&End::new(EndReason::Left, "the device disconnected"))
                    .await;
                return Pumped::Left;
            }
        }
        let mut deadline = Instant::now() + idle;
        let mut closing = std::pin::pin!(closing);
        loop {
            let gone_at = self.gone.values().min().copied();
            tokio::select! {
                // What the peers sent goes first: a peer's end must reach the device before the
                // pump finds that peer's mailbox closed.
                biased;
                frame = self.inbox.recv() => {
                    deadline = Instant::now() + idle;
                    let Some(frame) = frame else {
                        let why = "the session's mailbox closed: a party's replica stopped, or \
                                   this replica lost frames";
                        self.tell_peers(&End::new(EndReason::Failed, why)).await;
                        close(socket, CLOSE_INTERNAL, why).await;
                        return Pumped::Broken(why.into());
                    };
                    // A peer that ended its run (finished or not) gets nothing more from the
                    // device.
                    if let Some(peer) = ends_from(&frame) {
                        self.ended.insert(peer);
                        self.gone.remove(&peer);
                    }
                    if socket.send(Message::Binary(frame.into())).await.is_err() {
                        self.tell_peers(&End::new(EndReason::Left, "the device disconnected"))
                            .await;
                        return Pumped::Left;
                    }
                }
                frame = socket.recv() => {
                    match frame {
                        Some(Ok(Message::Binary(bytes))) => {
                            deadline = Instant::now() + idle;
                            if let Err(ended) = self.forward_device_frame(socket, &bytes).await {
                                return ended;
                            }
                        }
                        Some(Ok(Message::Ping(_) | Message::Pong(_))) => {}
                        Some(Ok(Message::Text(_))) => {
                            return self
                                .refuse(socket, "text frames are not session frames".into())
                                .await;
                        }
                        Some(Ok(Message::Close(_)) | Err(_)) | None => {
                            finish_close(socket).await;
                            if self.ended.len() == self.peers.len() {
                                return Pumped::Ended;
                            }
                            self.tell_peers(&End::new(EndReason::Left, "the device disconnected"))
                                .await;
                            return Pumped::Left;
                        }
                    }
                }
                () = sleep_until_some(gone_at) => {
                    if let Err(ended) = self.tell_device_of_gone_peers(socket).await {
                        return ended;
                    }
                }
                // The server shuts down (`crate::shutdown`): the device learns why. Nothing is
                // said to the peers in the device's name (that would make its run's end the
                // device's fault): the server's own run ends itself at the same moment and tells
                // them, naming nobody.
                () = &mut closing => {
                    let why = "the server is shutting down; try again in a moment";
                    close(socket, crate::shutdown::CLOSE_GOING_AWAY, why).await;
                    return Pumped::Broken(why.into());
                }
                () = tokio::time::sleep_until(deadline) => {
                    let why = "no frame for the idle timeout";
                    self.tell_peers(&End::new(EndReason::Expired, why)).await;
                    close(socket, CLOSE_EXPIRED, "session expired: no frame for the idle timeout")
                        .await;
                    return Pumped::Expired;
                }
            }
        }
    }

    /// Checks one message of the device and puts its frame into the recipient's mailbox; `Err`
    /// with how the pump ended when it must stop.
    async fn forward_device_frame(
        &mut self,
        socket: &mut WebSocket,
        message: &[u8],
    ) -> Result<(), Pumped> {
        let (to, frame) = match split_addressed(message) {
            Ok(split) => split,
            Err(e) => return Err(self.refuse(socket, format!("a bad frame: {e}")).await),
        };
        if frame.from != self.me {
            let why = format!(
                "a frame from this socket names party {} as its sender; this socket is party {}",
                frame.from, self.me
            );
            return Err(self.refuse(socket, why).await);
        }
        if !self.peers.contains(&to) {
            let why = format!("a frame for party {to}, which is not a peer of this party");
            return Err(self.refuse(socket, why).await);
        }
        let Some(route) = self.routes.get(&to).filter(|_| !self.ended.contains(&to)) else {
            // The peer ended (its end may still be on its way to the device, which then
            // writes on a moment longer), or the device ended with it: it needs nothing more.
            return Ok(());
        };
        let is_end = matches!(frame.body, Body::End(_));
        // The frame as the device sent it: decoded above only to be checked.
        let bytes = message[1..].to_vec();
        match self.boxes.send(route, bytes).await {
            Ok(true) => {}
            Ok(false) => {
                // The peer's mailbox is closed: nothing more goes to it. Its end may still be
                // on its way here; without one within GONE_GRACE the device is told it left.
                self.ended.insert(to);
                self.gone.insert(to, Instant::now() + GONE_GRACE);
                return Ok(());
            }
            Err(e) => {
                let why = format!("the mailboxes failed: {e}");
                self.tell_peers(&End::new(
                    EndReason::Failed,
                    "the server's mailboxes failed",
                ))
                .await;
                close(
                    socket,
                    CLOSE_INTERNAL,
                    "the server could not deliver a frame",
                )
                .await;
                return Err(Pumped::Broken(why));
            }
        }
        if is_end {
            self.ended.insert(to);
        }
        Ok(())
    }

    /// Tells the device, in their name, that each peer whose mailbox was found closed
    /// [`GONE_GRACE`] ago, with no end since, left.
    async fn tell_device_of_gone_peers(&mut self, socket: &mut WebSocket) -> Result<(), Pumped> {
        let now = Instant::now();
        let due: Vec<PartyIndex> = self
            .gone
            .iter()
            .filter(|(_, at)| **at <= now)
            .map(|(party, _)| *party)
            .collect();
        for party in due {
            self.gone.remove(&party);
            let left = end_frame(party, &End::new(EndReason::Left, "its mailbox is closed"));
            if socket.send(Message::Binary(left.into())).await.is_err() {
                self.tell_peers(&End::new(EndReason::Left, "the device disconnected"))
                    .await;
                return Err(Pumped::Left);
            }
        }
        Ok(())
    }

    /// Refuses the device's frame: its peers are told its run failed, the socket is closed
    /// with [`CLOSE_INVALID_MESSAGE`] and `why`.
    async fn refuse(&mut self, socket: &mut WebSocket, why: String) -> Pumped {
        self.tell_peers(&End::new(
            EndReason::Failed,
            &format!("the server refused its frame: {why}"),
        ))
        .await;
        close(socket, CLOSE_INVALID_MESSAGE, &why).await;
        Pumped::Refused(why)
    }

    /// Tells every peer the device has not ended with that its run ended (`end`), as the
    /// device: the pump speaks for the party whose socket it holds.
    async fn tell_peers(&mut self, end: &End) {
        let frame = end_frame(self.me, end);
        for (party, route) in &self.routes {
            if self.ended.contains(party) {
                continue;
            }
            // (A peer without a route is not told: it ended before the pump found it, or it
            // was not looked for once another's end had stopped the search.)
            if let Err(e) = self.boxes.send(route, frame.clone()).await {
                tracing::warn!(party = %party, error = %e, "could not tell a party that a device's run ended");
            }
        }
        self.ended.extend(self.peers.iter().copied());
    }
}

/// Sleeps until `at`, or forever without one.
async fn sleep_until_some(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}
