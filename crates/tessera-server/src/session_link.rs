//! Session mailboxes: [`MailboxLink`], one party's [`Link`] of the one driver
//! ([`tessera_core::driver`]) over [`crate::mailboxes`], wherever the other parties run, and
//! [`pump`](crate::session_pump), which puts a device's socket into a session.
//!
//! Every party of a session holds the mailbox `session/{id}/party/{i}` ([`party_address`]) on
//! the replica where it runs: the server's own party, and each device whose socket a replica
//! pumps into the session. Everything written into these mailboxes is a session frame
//! ([`tessera_api::session_frame`], re-exported here: its layout and its checks);
//! [`MailboxLink`] reads them through [`Peers`], which checks each frame's sender, joins parts
//! and keeps the finish's controls, and ends the run with an error saying what was wrong and
//! which party the frame claimed to come from.
//!
//! Who sent a frame: its header says, written by the replica that pumps it (the server's own
//! party, or the replica that holds the device's authenticated socket, which refuses a frame
//! whose header names another party). Only the replicas of one deployment write into mailboxes
//! (they share the database), so the header is as trustworthy as they are. The envelope inside
//! names its sender too, and the session checks that the two agree.
//!
//! How a run ends: a party that finished says so ([`MailboxLink::end`] with
//! [`End::finished`]) before its mailbox closes, so that the others do not take its silence
//! for a failure; a party that fails or gives up sends its reason, and the others' runs end with
//! an error naming it. A party whose mailbox closed without a word (its link dropped, its
//! process stopped), or whose replica died (the inbox watches every peer's replica, and
//! housekeeping closes it), is found as well: while it waits, the link checks every
//! [`PROBE_EVERY`] that each peer's mailbox is still held, and names a peer found gone at two
//! checks in a row (at the first, its last frames, its end among them, may still be on their
//! way). A peer whose mailbox is found closed when this party writes to it is named as gone
//! only if no end (its own, or the one that made it leave) arrives within [`GONE_GRACE`].
//! A link still looking for its peers ([`MailboxLink::open`]) reads its mailbox meanwhile: a
//! peer that opened its mailbox and ended before this party found it stops the run at once,
//! with its reason. A session ended from outside its parties — an invited device that declined
//! (`wallet_parties::decline`) records the end, then tells the mailboxes open at that moment —
//! is found by a link that looks for a peer longer than [`END_CHECK_AFTER`]: it reads the
//! session's row every [`END_CHECK_EVERY`] ([`MailboxLink::open_checking`],
//! `session_pump::Pump::open_checking`), and stops with [`LinkError::Ended`], so that a party
//! whose mailbox opened after the telling does not wait for the device until `appear_within`.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::time::Duration;

use tessera_api::ServerSessionId;
pub use tessera_api::session_frame::{
    Body, End, EndReason, FRAME_VERSION, Fault, Frame, FrameError, HEADER_LEN, MAX_CHANNEL,
    MAX_END_MESSAGE, MAX_PART, Peers, message_frames,
};
use tessera_api::session_frame::{end_frame, ends_from};
use tessera_core::driver::{Control, Link};
use tessera_core::{Envelope, PartyIndex};
use tokio::time::Instant;

use crate::error::ApiError;
use crate::mailboxes::{Inbox, Mailboxes, Route};

/// How often a waiting link checks that its peers' mailboxes are still held.
pub const PROBE_EVERY: Duration = Duration::from_secs(2);
/// How long a party whose mailbox was found closed when written to has for its end (or
/// another party's) to arrive before it is named as gone: its end, sent before its mailbox
/// closed, may still be on its way from another replica.
pub const GONE_GRACE: Duration = Duration::from_secs(1);
/// The most bytes of frames kept while a party looks for its peers (each peer sends at most a
/// first round's messages before it has this party's).
pub const MAX_EARLY_BYTES: usize = 2 * 1024 * 1024;
/// Longest session id in a mailbox address.
pub const MAX_SESSION_ID: usize = 128;

/// The first and the longest pause between two look-ups of a peer's mailbox that is not open yet.
const LOOKUP_FIRST: Duration = Duration::from_millis(20);
const LOOKUP_LONGEST: Duration = Duration::from_millis(500);

/// How long a link looks for a missing peer before it first reads whether the session ended
/// from outside its parties (peers that come at all come well within it).
pub const END_CHECK_AFTER: Duration = Duration::from_millis(200);

/// How often it reads it again while the peer is still missing.
pub const END_CHECK_EVERY: Duration = Duration::from_millis(500);

/// The mailbox of party `party` of session `session`.
#[must_use]
pub fn party_address(session: &ServerSessionId, party: PartyIndex) -> String {
    format!("session/{session}/party/{}", party.get())
}

/// Why a [`MailboxLink`] could not go on. [`LinkError::party`] names the party at fault, where
/// there is one.
#[derive(Debug, thiserror::Error)]
pub enum LinkError {
    /// A peer's mailbox did not open in time.
    #[error("party {party} did not open its mailbox of the session within {} s", .waited.as_secs_f32())]
    NeverAppeared {
        /// The party.
        party: PartyIndex,
        /// How long this party looked.
        waited: Duration,
    },
    /// A peer's mailbox closed without an end, or its replica died.
    #[error("party {party} left the session: {why}")]
    Gone {
        /// The party.
        party: PartyIndex,
        /// How it was found.
        why: String,
    },
    /// A peer's frames: one that is not a frame, a sender it cannot be from, a break of the
    /// session's rules, the peer's end ([`Peers`]' checks).
    #[error(transparent)]
    Peer(Fault),
    /// This party's own mailbox closed (this replica lost frames from the others, or fell too
    /// far behind).
    #[error("this party's mailbox closed: {0}")]
    Closed(String),
    /// The caller asked for something the session does not have (a party outside it...).
    #[error("{0}")]
    Invalid(String),
    /// The server is shutting down and the grace period is over ([`crate::shutdown`]): the
    /// server's own failure, naming nobody.
    #[error("the server shut down")]
    ShuttingDown,
    /// The mailboxes failed (the database).
    #[error("the mailboxes failed: {}", detail(.0))]
    Mailboxes(#[from] ApiError),
    /// The session ended from outside its parties while this party looked for its peers (the
    /// reason recorded with its end).
    #[error("the session ended: {0}")]
    Ended(String),
}

impl From<Fault> for LinkError {
    fn from(fault: Fault) -> Self {
        match fault {
            Fault::Invalid(why) => LinkError::Invalid(why),
            fault => LinkError::Peer(fault),
        }
    }
}

/// An internal error's detail (its display hides it from clients; the link's errors are logged).
fn detail(e: &ApiError) -> String {
    match e {
        ApiError::Internal(detail) => detail.clone(),
        e => e.to_string(),
    }
}

impl LinkError {
    /// The party the error names, if any.
    #[must_use]
    pub fn party(&self) -> Option<PartyIndex> {
        match self {
            LinkError::NeverAppeared { party, .. } | LinkError::Gone { party, .. } => Some(*party),
            LinkError::Peer(fault) => fault.party(),
            LinkError::Closed(_)
            | LinkError::Invalid(_)
            | LinkError::Mailboxes(_)
            | LinkError::Ended(_)
            | LinkError::ShuttingDown => None,
        }
    }
}

impl From<LinkError> for ApiError {
    fn from(e: LinkError) -> Self {
        match e {
            LinkError::Mailboxes(e) => e,
            e => ApiError::Internal(e.to_string()),
        }
    }
}

/// Where a peer's mailbox is, and whether it was found closed at the last check.
struct PeerRoute {
    route: Route,
    suspect: bool,
}

/// One party's link to the others of a session, through their mailboxes: the one driver's
/// [`Link`]. Dropping it closes this party's mailbox (without a word: the peers find it
/// gone); [`MailboxLink::end`] tells them first.
pub struct MailboxLink {
    boxes: Mailboxes,
    inbox: Inbox,
    /// The server's phase, when this is the server's own run: it ends once the phase is
    /// [`crate::shutdown::Phase::Closing`].
    shutdown: Option<tokio::sync::watch::Receiver<crate::shutdown::Phase>>,
    /// Frames that arrived while this party looked for its peers, read before the inbox.
    early: VecDeque<Vec<u8>>,
    routes: BTreeMap<PartyIndex, PeerRoute>,
    peers: Peers,
}

fn check_session_id(session: &ServerSessionId) -> Result<(), LinkError> {
    let text = session.as_str();
    if text.is_empty()
        || text.len() > MAX_SESSION_ID
        || !text
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    {
        return Err(LinkError::Invalid(format!(
            "a session id is 1 to {MAX_SESSION_ID} letters, digits, '-' or '_'"
        )));
    }
    Ok(())
}

/// A session mailbox just opened: its inbox, this party's view of its peers, the routes it
/// found, the frames that arrived while it looked, and the peers whose end came meanwhile (not
/// looked for any more: their mailbox may be gone).
pub(crate) struct Opened {
    pub(crate) inbox: Inbox,
    pub(crate) peers: Peers,
    pub(crate) routes: BTreeMap<PartyIndex, Route>,
    pub(crate) early: VecDeque<Vec<u8>>,
    pub(crate) ended: BTreeSet<PartyIndex>,
}

/// Opens party `me`'s mailbox of `session` on `boxes`, then finds each of `peers`' mailboxes (a
/// peer may open its own a little later: each is looked up again until `appear_within` has
/// passed since the start) and watches the replica of each. While it looks, it reads its own
/// mailbox: the frames are kept (at most [`MAX_EARLY_BYTES`]), a peer whose end arrives is not
/// looked for any more (a peer that opened its mailbox and ended before this party found it
/// would otherwise be waited for in vain), and an end other than finished stops the search (the
/// run cannot succeed; the caller takes the frames in).
///
/// # Errors
/// [`LinkError::Invalid`] for a bad session id or party set; the mailbox's errors (e.g. open
/// already); [`LinkError::NeverAppeared`] naming the first peer whose mailbox did not open in
/// time (the peers found by then are told, with an end `expired`); [`LinkError::Peer`] for a peer whose early frames overflow; [`LinkError::Closed`]
/// if this party's mailbox closed (this party's mailbox is closed again in every case).
pub(crate) async fn open_session_box(
    boxes: &Mailboxes,
    session: &ServerSessionId,
    me: PartyIndex,
    peers: &[PartyIndex],
    appear_within: Duration,
    sessions: Option<&sqlx::AnyPool>,
) -> Result<Opened, LinkError> {
    check_session_id(session)?;
    let peers = Peers::new(me, peers)?;
    let mut inbox = boxes.open(&party_address(session, me)).await?;
    let start = Instant::now();
    let deadline = start + appear_within;
    let mut next_check = start + END_CHECK_AFTER;
    let mut routes = BTreeMap::new();
    let mut early = VecDeque::new();
    let mut early_bytes = 0;
    let mut ended = BTreeSet::new();
    let all: Vec<PartyIndex> = peers.all().collect();
    'peers: for party in all {
        let address = party_address(session, party);
        let mut pause = LOOKUP_FIRST;
        while !ended.contains(&party) {
            if let Some(route) = boxes.route(&address).await? {
                inbox.watch(route.holder());
                routes.insert(party, route);
                break;
            }
            let now = Instant::now();
            if let Some(db) = sessions
                && now >= next_check
            {
                next_check = now + END_CHECK_EVERY;
                if let Some(reason) = ended_outside(db, session).await? {
                    return Err(LinkError::Ended(reason));
                }
            }
            if now >= deadline {
                let error = LinkError::NeverAppeared {
                    party,
                    waited: appear_within,
                };
                // The peers found so far (waiting for this party, or for the same one) hear
                // that this party gave up, and why.
                let gave_up = end_frame(me, &End::new(EndReason::Expired, &error.to_string()));
                for route in routes.values() {
                    if let Err(e) = boxes.send(route, gave_up.clone()).await {
                        tracing::warn!(error = %e, "could not tell a party that this one gave up");
                    }
                }
                return Err(error);
            }
            let wake = now + pause.min(deadline - now);
            pause = (pause * 2).min(LOOKUP_LONGEST);
            // Until the next look-up, what comes in is kept.
            loop {
                let opened = boxes.opened();
                tokio::pin!(opened);
                opened.as_mut().enable();
                if boxes.holds(&address) {
                    // The peer's mailbox opened on this replica: look it up now.
                    break;
                }
                let frame = tokio::select! {
                    frame = inbox.recv() => frame,
                    () = tokio::time::sleep_until(wake) => break,
                    // A mailbox opened on this replica: perhaps the peer's (checked above).
                    () = &mut opened => continue,
                };
                let Some(frame) = frame else {
                    return Err(LinkError::Closed(
                        "it closed while this party looked for its peers".into(),
                    ));
                };
                let failed = ends_from(&frame).is_some_and(|from| {
                    ended.insert(from);
                    !matches!(
                        Frame::decode(&frame),
                        Ok(Frame { body: Body::End(end), .. }) if end.reason() == EndReason::Finished
                    )
                });
                early_bytes += frame.len();
                if early_bytes > MAX_EARLY_BYTES {
                    return Err(LinkError::Peer(Fault::Misbehaved {
                        party: frame.get(2).map_or(party, |&from| PartyIndex::new(from)),
                        why: format!(
                            "sent more than {MAX_EARLY_BYTES} bytes before this party found its peers"
                        ),
                    }));
                }
                early.push_back(frame);
                if failed {
                    // The run cannot succeed: the others are not waited for.
                    break 'peers;
                }
            }
        }
    }
    Ok(Opened {
        inbox,
        peers,
        routes,
        early,
        ended,
    })
}

/// The reason session `session` ended with, if its row says it is no longer live.
async fn ended_outside(
    db: &sqlx::AnyPool,
    session: &ServerSessionId,
) -> Result<Option<String>, LinkError> {
    use crate::db::SessionStatus;
    let end = crate::db::sessions::end_of(db, session.as_str())
        .await
        .map_err(|e| LinkError::Mailboxes(e.into()))?;
    Ok(match end {
        Some((SessionStatus::Created | SessionStatus::Running, _)) | None => None,
        Some((status, detail)) => Some(detail.unwrap_or_else(|| format!("it is {status}"))),
    })
}

/// Completes once `shutdown` (if any) reaches [`crate::shutdown::Phase::Closing`]; never
/// without one.
async fn closing(shutdown: &mut Option<tokio::sync::watch::Receiver<crate::shutdown::Phase>>) {
    match shutdown {
        Some(phase) => {
            if phase
                .wait_for(|p| *p == crate::shutdown::Phase::Closing)
                .await
                .is_err()
            {
                // The server's state is gone: nothing will close this run.
                std::future::pending::<()>().await;
            }
        }
        None => std::future::pending().await,
    }
}

/// `opening` (a [`MailboxLink::open`] of the server's own run), unless the server's grace
/// period after a shutdown signal ends first ([`LinkError::ShuttingDown`]); the link then ends
/// itself at shutdown ([`MailboxLink::ending_at_shutdown`]).
///
/// # Errors
/// `opening`'s, or [`LinkError::ShuttingDown`].
pub async fn opened_unless_closing(
    opening: impl Future<Output = Result<MailboxLink, LinkError>>,
    shutdown: &crate::shutdown::Shutdown,
) -> Result<MailboxLink, LinkError> {
    tokio::select! {
        opened = opening => opened.map(|link| link.ending_at_shutdown(shutdown)),
        () = shutdown.closing() => Err(LinkError::ShuttingDown),
    }
}

impl MailboxLink {
    /// Makes this the server's own run: once the server's grace period after a shutdown signal
    /// is over, waiting for a frame ends with [`LinkError::ShuttingDown`] (the run then tells
    /// its peers that it failed, naming nobody).
    #[must_use]
    pub fn ending_at_shutdown(mut self, shutdown: &crate::shutdown::Shutdown) -> Self {
        self.shutdown = Some(shutdown.subscribe());
        self
    }

    /// Opens party `me`'s mailbox of `session` on `boxes`, then finds each of `peers`' mailboxes
    /// (a peer may open its own a little later: each is looked up again until `appear_within`
    /// has passed since the start) and watches the replica of each.
    ///
    /// # Errors
    /// [`LinkError::Invalid`] for a bad session id or party set (empty, repeated, more than
    /// `MAX_PARTIES`, `me` among the peers); the mailbox's errors (e.g. open already);
    /// [`LinkError::NeverAppeared`] naming the first peer whose mailbox did not open in time
    /// (this party's mailbox is closed again).
    pub async fn open(
        boxes: &Mailboxes,
        session: &ServerSessionId,
        me: PartyIndex,
        peers: &[PartyIndex],
        appear_within: Duration,
    ) -> Result<Self, LinkError> {
        Self::open_checking(boxes, None, session, me, peers, appear_within).await
    }

    /// [`Self::open`], reading from `sessions` (the database) whether the session ended from
    /// outside its parties while a peer is missing (module documentation).
    ///
    /// # Errors
    /// As [`Self::open`]; [`LinkError::Ended`] with the reason recorded.
    pub async fn open_checking(
        boxes: &Mailboxes,
        sessions: Option<&sqlx::AnyPool>,
        session: &ServerSessionId,
        me: PartyIndex,
        peers: &[PartyIndex],
        appear_within: Duration,
    ) -> Result<Self, LinkError> {
        let Opened {
            inbox,
            peers,
            routes,
            early,
            ended,
        } = open_session_box(boxes, session, me, peers, appear_within, sessions).await?;
        let mut link = MailboxLink {
            boxes: boxes.clone(),
            inbox,
            shutdown: None,
            early,
            routes: routes
                .into_iter()
                .map(|(p, route)| {
                    (
                        p,
                        PeerRoute {
                            route,
                            suspect: false,
                        },
                    )
                })
                .collect(),
            peers,
        };
        if !ended.is_empty() {
            // A peer ended before this party found it: its end (and what came before it) is
            // taken in now, so that the run stops at once with the reason.
            while let Some(bytes) = link.early.pop_front() {
                let frame = link.peers.check(&bytes)?;
                if let Some((party, message)) = link.peers.absorb(frame)? {
                    link.peers.keep_message(party, message)?;
                }
            }
        }
        Ok(link)
    }

    /// This party.
    #[must_use]
    pub fn party(&self) -> PartyIndex {
        self.peers.me()
    }

    /// Where peer `party`'s mailbox is.
    #[must_use]
    pub fn route(&self, party: PartyIndex) -> Option<&Route> {
        self.routes.get(&party).map(|p| &p.route)
    }

    /// Tells every peer that has not finished that this party's run ended, then closes this
    /// party's mailbox. After a successful run, end with [`End::finished`].
    ///
    /// # Errors
    /// The first mailbox error (every peer is still tried); a peer whose mailbox is closed
    /// already is no error.
    pub async fn end(self, end: End) -> Result<(), LinkError> {
        let frame = self.peers.end_frame(&end);
        let mut first_error = None;
        for peer in self.peers.unfinished() {
            if let Some(to) = self.routes.get(&peer)
                && let Err(e) = self.boxes.send(&to.route, frame.clone()).await
            {
                first_error.get_or_insert(e);
            }
        }
        first_error.map_or(Ok(()), |e| Err(LinkError::Mailboxes(e)))
    }

    /// Sends `frame` to `to`'s mailbox.
    async fn deliver(&mut self, to: PartyIndex, frame: Vec<u8>) -> Result<(), LinkError> {
        let Some(peer) = self.routes.get(&to) else {
            return Err(if self.peers.contains(to) {
                LinkError::Gone {
                    party: to,
                    why: "it ended before this party found its mailbox".into(),
                }
            } else {
                LinkError::Invalid(format!("party {to} is not a peer of this party"))
            });
        };
        if self.boxes.send(&peer.route, frame).await? {
            Ok(())
        } else {
            Err(self.closed_when_written(to).await)
        }
    }

    /// `to`'s mailbox was closed when this party wrote to it. A party that ends says why before
    /// its mailbox closes, and another party's end may have made it leave: the frames already
    /// here, and those that come within [`GONE_GRACE`], are read first, and an end among them
    /// is the error. Without one, `to` is gone.
    async fn closed_when_written(&mut self, to: PartyIndex) -> LinkError {
        let deadline = Instant::now() + GONE_GRACE;
        loop {
            let next = match self.early.pop_front() {
                Some(bytes) => Ok(Some(bytes)),
                None => tokio::time::timeout_at(deadline, self.inbox.recv()).await,
            };
            let bytes = match next {
                Ok(Some(bytes)) => bytes,
                Ok(None) | Err(_) => {
                    return LinkError::Gone {
                        party: to,
                        why: "its mailbox is closed".into(),
                    };
                }
            };
            let absorbed = self
                .peers
                .check(&bytes)
                .and_then(|frame| self.peers.absorb(frame));
            match absorbed {
                Ok(Some((party, message))) => {
                    if let Err(e) = self.peers.keep_message(party, message) {
                        return e.into();
                    }
                }
                Ok(None) => {}
                Err(e) => return e.into(),
            }
        }
    }

    /// The next frame, checked, or `None` once `deadline` passed; checks the peers' mailboxes
    /// every [`PROBE_EVERY`] of silence.
    async fn next_frame(&mut self, deadline: Option<Instant>) -> Result<Option<Frame>, LinkError> {
        loop {
            let tick = Instant::now() + PROBE_EVERY;
            let wake = deadline.map_or(tick, |d| d.min(tick));
            let received = match self.early.pop_front() {
                Some(frame) => Some(Some(frame)),
                None => tokio::select! {
                    frame = self.inbox.recv() => Some(frame),
                    () = tokio::time::sleep_until(wake) => None,
                    () = closing(&mut self.shutdown) => return Err(LinkError::ShuttingDown),
                },
            };
            match received {
                Some(Some(bytes)) => {
                    let frame = self.peers.check(&bytes)?;
                    if let Some(peer) = self.routes.get_mut(&frame.from) {
                        peer.suspect = false;
                    }
                    return Ok(Some(frame));
                }
                Some(None) => return Err(self.inbox_closed().await),
                None => {
                    if deadline.is_some_and(|d| Instant::now() >= d) {
                        return Ok(None);
                    }
                    self.probe().await?;
                }
            }
        }
    }

    /// Checks that every peer that has not finished still holds its mailbox where it did; a
    /// peer found gone twice in a row is named. A database error skips the check.
    async fn probe(&mut self) -> Result<(), LinkError> {
        let unfinished: Vec<PartyIndex> = self.peers.unfinished().collect();
        for party in unfinished {
            let Some(peer) = self.routes.get_mut(&party) else {
                continue;
            };
            let held = match self.boxes.route(peer.route.address()).await {
                Ok(held) => held,
                Err(e) => {
                    tracing::warn!(error = %e, "could not check a peer's mailbox");
                    return Ok(());
                }
            };
            if held.as_ref() == Some(&peer.route) {
                peer.suspect = false;
            } else if peer.suspect {
                return Err(LinkError::Gone {
                    party,
                    why: "its mailbox closed without an end".into(),
                });
            } else {
                peer.suspect = true;
            }
        }
        Ok(())
    }

    /// This party's inbox ended: a peer's replica died (housekeeping forgot its mailboxes and
    /// closed the inboxes that watch it), or this replica lost frames.
    async fn inbox_closed(&mut self) -> LinkError {
        for party in self.peers.unfinished() {
            let Some(peer) = self.routes.get(&party) else {
                continue;
            };
            if let Ok(held) = self.boxes.route(peer.route.address()).await
                && held.as_ref() != Some(&peer.route)
            {
                return LinkError::Gone {
                    party,
                    why: format!("its mailbox closed (its replica {})", peer.route.holder()),
                };
            }
        }
        LinkError::Closed(
            "this replica lost frames from the others, or a peer's replica stopped".into(),
        )
    }
}

impl Link for MailboxLink {
    type Error = LinkError;

    async fn send(&mut self, envelope: &Envelope) -> Result<(), LinkError> {
        let me = self.peers.me();
        if envelope.from != me {
            return Err(LinkError::Invalid(format!(
                "party {me} cannot send an envelope from party {}",
                envelope.from
            )));
        }
        let frames = message_frames(me, &envelope.to_bytes())
            .map_err(|e| LinkError::Invalid(e.to_string()))?;
        for frame in frames {
            self.deliver(envelope.to, frame).await?;
        }
        Ok(())
    }

    async fn recv(
        &mut self,
        idle: Option<Duration>,
    ) -> Result<Option<(PartyIndex, Vec<u8>)>, LinkError> {
        if let Some(message) = self.peers.waiting_message() {
            return Ok(Some(message));
        }
        let deadline = idle.map(|d| Instant::now() + d);
        loop {
            let Some(frame) = self.next_frame(deadline).await? else {
                return Ok(None);
            };
            if let Some(message) = self.peers.absorb(frame)? {
                return Ok(Some(message));
            }
        }
    }

    /// A commit goes to the coordinator alone; the announcements go to every peer still there
    /// ([`Peers::control_recipients`]).
    async fn send_control(&mut self, control: Control) -> Result<(), LinkError> {
        let frame = self.peers.control_frame(control);
        for party in self.peers.control_recipients(control)? {
            self.deliver(party, frame.clone()).await?;
        }
        Ok(())
    }

    async fn recv_control(
        &mut self,
        from: PartyIndex,
        idle: Option<Duration>,
    ) -> Result<Option<Control>, LinkError> {
        let deadline = idle.map(|d| Instant::now() + d);
        loop {
            if let Some(control) = self.peers.take_control(from)? {
                return Ok(Some(control));
            }
            let Some(frame) = self.next_frame(deadline).await? else {
                return Ok(None);
            };
            if let Some((party, message)) = self.peers.absorb(frame)? {
                self.peers.keep_message(party, message)?;
            }
        }
    }
}
