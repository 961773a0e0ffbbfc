//! Session mailboxes: the frames the parties of one protocol session exchange through
//! [`crate::mailboxes`], and [`MailboxLink`], one party's [`Link`] of the one driver
//! ([`tessera_core::driver`]) over them, wherever the other parties run.
//!
//! Every party of a session holds the mailbox `session/{id}/party/{i}` ([`party_address`]) on
//! the replica where it runs: the server's own party, and later each device whose socket a
//! replica pumps into the session. Everything that writes into these mailboxes writes
//! [`Frame`]s, in this layout:
//!
//! ```text
//! byte 0      format version (FRAME_VERSION = 1)
//! byte 1      kind: 0 message part, 1 message (its last part), 2 control, 3 end
//! byte 2      the sender's party index
//! bytes 3..   the body, by kind:
//!   message part, message   1 ..= MAX_PART bytes of an encoded envelope
//!   control                 tag 0 Pending or 1 Commit + the epoch (8 bytes, big-endian),
//!                           tag 2 Switched (nothing more)
//!   end                     reason 0 finished, 1 left, 2 expired, 3 failed, then at most
//!                           MAX_END_MESSAGE bytes of UTF-8 without control characters
//! ```
//!
//! [`Frame::decode`] checks all of it: at most [`MAX_FRAME`] bytes, the whole header, a known
//! version and kind, a message body that is not empty, a control of exactly its length with a
//! known tag, an end with a known reason and a valid text; anything else is a [`FrameError`]
//! saying what was wrong. [`MailboxLink`] then checks the sender: a party of the session other
//! than the receiver, that has not finished; a bad frame ends the run with an error that says
//! what was wrong and which party the frame claimed to come from.
//!
//! Why parts: an envelope may have up to [`MAX_ENVELOPE_BYTES`] (a keygen's third round runs
//! to about 148 KB) and a mailbox frame at most [`MAX_FRAME`]. A longer message is cut into
//! parts, the last one marked; a mailbox delivers one sender's frames in the order they were
//! sent, so the receiver joins each sender's parts, never beyond [`MAX_ENVELOPE_BYTES`].
//!
//! Who sent a frame: its header says, written by the replica that pumps it (the server's own
//! party, or the replica that holds the device's authenticated socket). Only the replicas of
//! one deployment write into mailboxes (they share the database), so the header is as
//! trustworthy as they are. The envelope inside names its sender too, and the session checks
//! that the two agree; frames between devices get their own end-to-end authentication (Noise)
//! on top.
//!
//! The two-phase finish ([`tessera_core::driver`]): the coordinator's pending announcement and
//! its switch go to every peer, a participant's commit to the coordinator alone (another
//! participant may have switched and closed its mailbox by then). Controls and messages that
//! arrive before they are asked for wait in the link, a few per peer.
//!
//! How a run ends: a party that finished says so ([`MailboxLink::end`] with
//! [`EndReason::Finished`]) before its mailbox closes, so that the others do not take its
//! silence for a failure; a party that fails or gives up sends its reason, and the others' runs
//! end with an error naming it. A party whose mailbox closed without a word (its link dropped,
//! its process stopped), or whose replica died (the inbox watches every peer's replica, and
//! housekeeping closes it), is found as well: while it waits, the link checks every
//! [`PROBE_EVERY`] that each peer's mailbox is still held, and names a peer found gone at two
//! checks in a row (at the first, its last frames, its end among them, may still be on their
//! way).

use std::collections::{BTreeMap, VecDeque};
use std::fmt;
use std::time::Duration;

use tessera_api::ServerSessionId;
use tessera_core::driver::{Control, Link};
use tessera_core::envelope::MAX_ENVELOPE_BYTES;
use tessera_core::types::MAX_PARTIES;
use tessera_core::{Envelope, PartyIndex};
use tokio::time::Instant;

use crate::error::ApiError;
use crate::mailboxes::{Inbox, MAX_FRAME, Mailboxes, Route};

/// The frame format's version (byte 0).
pub const FRAME_VERSION: u8 = 1;
/// Version, kind, sender.
pub const HEADER_LEN: usize = 3;
/// The most bytes of a protocol message one frame carries.
pub const MAX_PART: usize = MAX_FRAME - HEADER_LEN;
/// The longest text of an end frame, in bytes.
pub const MAX_END_MESSAGE: usize = 256;
/// How often a waiting link checks that its peers' mailboxes are still held.
pub const PROBE_EVERY: Duration = Duration::from_secs(2);
/// Longest session id in a mailbox address.
pub const MAX_SESSION_ID: usize = 128;

/// Control messages a peer may have waiting (the finish has three kinds, one of each per party;
/// a party that sends more is flooding).
const MAX_WAITING_CONTROLS: usize = 8;
/// Protocol messages that may wait while a control is awaited (a run is over by then: none
/// should come at all).
const MAX_WAITING_MESSAGES: usize = 16;
/// The first and the longest pause between two look-ups of a peer's mailbox that is not open yet.
const LOOKUP_FIRST: Duration = Duration::from_millis(20);
const LOOKUP_LONGEST: Duration = Duration::from_millis(500);

const KIND_PART: u8 = 0;
const KIND_MESSAGE: u8 = 1;
const KIND_CONTROL: u8 = 2;
const KIND_END: u8 = 3;

const CONTROL_PENDING: u8 = 0;
const CONTROL_COMMIT: u8 = 1;
const CONTROL_SWITCHED: u8 = 2;

/// The mailbox of party `party` of session `session`.
#[must_use]
pub fn party_address(session: &ServerSessionId, party: PartyIndex) -> String {
    format!("session/{session}/party/{}", party.get())
}

/// Why a party ended a session.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EndReason {
    /// Its run is over and it needs nothing more: its silence from now on is no failure.
    Finished,
    /// It left (its device disconnected, it was stopped).
    Left,
    /// It waited too long for a message.
    Expired,
    /// Its run failed (a message it rejected, a party it blames, a store that failed).
    Failed,
}

impl EndReason {
    fn code(self) -> u8 {
        match self {
            EndReason::Finished => 0,
            EndReason::Left => 1,
            EndReason::Expired => 2,
            EndReason::Failed => 3,
        }
    }

    fn from_code(code: u8) -> Option<Self> {
        Some(match code {
            0 => EndReason::Finished,
            1 => EndReason::Left,
            2 => EndReason::Expired,
            3 => EndReason::Failed,
            _ => return None,
        })
    }
}

impl fmt::Display for EndReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            EndReason::Finished => "finished",
            EndReason::Left => "left",
            EndReason::Expired => "expired",
            EndReason::Failed => "failed",
        })
    }
}

/// The end of a party's run, with a reason and a short text for people (never a secret).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct End {
    reason: EndReason,
    message: String,
}

impl End {
    /// An end for `reason`; `message` is cut to [`MAX_END_MESSAGE`] bytes and its control
    /// characters become spaces, so that any text can be sent.
    #[must_use]
    pub fn new(reason: EndReason, message: &str) -> Self {
        let mut text = String::new();
        for c in message.chars() {
            let c = if c.is_control() { ' ' } else { c };
            if text.len() + c.len_utf8() > MAX_END_MESSAGE {
                break;
            }
            text.push(c);
        }
        End {
            reason,
            message: text,
        }
    }

    /// A party's run is over (it needs nothing more).
    #[must_use]
    pub fn finished() -> Self {
        End::new(EndReason::Finished, "")
    }

    /// Why.
    #[must_use]
    pub fn reason(&self) -> EndReason {
        self.reason
    }

    /// The text.
    #[must_use]
    pub fn message(&self) -> &str {
        &self.message
    }
}

impl fmt::Display for End {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.message.is_empty() {
            write!(f, "{}", self.reason)
        } else {
            write!(f, "{}: {}", self.reason, self.message)
        }
    }
}

/// What a frame carries.
#[derive(Clone, PartialEq, Eq)]
pub enum Body {
    /// A part of a protocol message that goes on in the sender's next frame.
    Part(Vec<u8>),
    /// A protocol message (an encoded envelope), or its last part.
    Message(Vec<u8>),
    /// A control message of the two-phase finish.
    Control(Control),
    /// The end of the sender's run.
    End(End),
}

impl fmt::Debug for Body {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Body::Part(b) => write!(f, "Part({} bytes)", b.len()),
            Body::Message(b) => write!(f, "Message({} bytes)", b.len()),
            Body::Control(c) => write!(f, "Control({c:?})"),
            Body::End(e) => write!(f, "End({e})"),
        }
    }
}

/// One frame of a session mailbox: its sender and what it carries.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Frame {
    /// The sending party, as the replica that pumped the frame knows it.
    pub from: PartyIndex,
    /// What it carries.
    pub body: Body,
}

/// What is wrong with a frame.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    /// Shorter than its header.
    #[error("a session frame of {0} bytes is shorter than its {HEADER_LEN}-byte header")]
    Truncated(usize),
    /// Longer than a mailbox frame.
    #[error("a session frame of {0} bytes is longer than a mailbox frame ({MAX_FRAME} bytes)")]
    TooLong(usize),
    /// Another format version.
    #[error("a session frame of format version {0} (this server reads version {FRAME_VERSION})")]
    Version(u8),
    /// A kind this version does not have.
    #[error("a session frame of unknown kind {0}")]
    Kind(u8),
    /// A protocol message (or part) of no bytes.
    #[error("a protocol message frame with no bytes")]
    EmptyMessage,
    /// A protocol message longer than an envelope may be.
    #[error("a protocol message of {0} bytes (an envelope has at most {MAX_ENVELOPE_BYTES})")]
    MessageTooLong(usize),
    /// A control of an unknown type.
    #[error("a control frame of unknown type {0}")]
    ControlType(u8),
    /// A control whose length is not its type's.
    #[error("a control frame with {got} bytes of body, not {expected}")]
    ControlLength {
        /// Its body's length.
        got: usize,
        /// Its type's.
        expected: usize,
    },
    /// An end with no reason, or an unknown one.
    #[error("an end frame without a known reason")]
    EndReason,
    /// An end whose text is not valid.
    #[error(
        "an end frame whose text is not at most {MAX_END_MESSAGE} bytes of UTF-8 without control characters"
    )]
    EndMessage,
}

impl Frame {
    /// The frame's bytes.
    ///
    /// # Errors
    /// [`FrameError::EmptyMessage`] or [`FrameError::TooLong`] for a message body of no bytes
    /// or more than [`MAX_PART`] (cut messages with [`message_frames`]).
    pub fn encode(&self) -> Result<Vec<u8>, FrameError> {
        Ok(match &self.body {
            Body::Part(b) => message_frame(self.from, KIND_PART, b)?,
            Body::Message(b) => message_frame(self.from, KIND_MESSAGE, b)?,
            Body::Control(c) => {
                let mut out = header(self.from, KIND_CONTROL, 9);
                out.extend_from_slice(&encode_control(*c));
                out
            }
            Body::End(e) => {
                let mut out = header(self.from, KIND_END, 1 + e.message.len());
                out.push(e.reason.code());
                out.extend_from_slice(e.message.as_bytes());
                out
            }
        })
    }

    /// Reads a frame, checking every field (see the module's documentation).
    ///
    /// # Errors
    /// A [`FrameError`] saying what is wrong.
    pub fn decode(bytes: &[u8]) -> Result<Frame, FrameError> {
        if bytes.len() > MAX_FRAME {
            return Err(FrameError::TooLong(bytes.len()));
        }
        let [version, kind, from, body @ ..] = bytes else {
            return Err(FrameError::Truncated(bytes.len()));
        };
        if *version != FRAME_VERSION {
            return Err(FrameError::Version(*version));
        }
        let body = match *kind {
            KIND_PART | KIND_MESSAGE => {
                if body.is_empty() {
                    return Err(FrameError::EmptyMessage);
                }
                if *kind == KIND_PART {
                    Body::Part(body.to_vec())
                } else {
                    Body::Message(body.to_vec())
                }
            }
            KIND_CONTROL => Body::Control(decode_control(body)?),
            KIND_END => {
                let [reason, text @ ..] = body else {
                    return Err(FrameError::EndReason);
                };
                let reason = EndReason::from_code(*reason).ok_or(FrameError::EndReason)?;
                let text = std::str::from_utf8(text).map_err(|_| FrameError::EndMessage)?;
                if text.len() > MAX_END_MESSAGE || text.chars().any(char::is_control) {
                    return Err(FrameError::EndMessage);
                }
                Body::End(End {
                    reason,
                    message: text.to_string(),
                })
            }
            other => return Err(FrameError::Kind(other)),
        };
        Ok(Frame {
            from: PartyIndex::new(*from),
            body,
        })
    }
}

/// A frame's header, in a buffer with room for `body` more bytes.
fn header(from: PartyIndex, kind: u8, body: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(HEADER_LEN + body);
    out.extend_from_slice(&[FRAME_VERSION, kind, from.get()]);
    out
}

/// A message (part) frame of `body`.
fn message_frame(from: PartyIndex, kind: u8, body: &[u8]) -> Result<Vec<u8>, FrameError> {
    if body.is_empty() {
        return Err(FrameError::EmptyMessage);
    }
    if body.len() > MAX_PART {
        return Err(FrameError::TooLong(HEADER_LEN + body.len()));
    }
    let mut out = header(from, kind, body.len());
    out.extend_from_slice(body);
    Ok(out)
}

fn encode_control(control: Control) -> Vec<u8> {
    match control {
        Control::Pending(epoch) => [&[CONTROL_PENDING][..], &epoch.to_be_bytes()].concat(),
        Control::Commit(epoch) => [&[CONTROL_COMMIT][..], &epoch.to_be_bytes()].concat(),
        Control::Switched => vec![CONTROL_SWITCHED],
    }
}

fn decode_control(body: &[u8]) -> Result<Control, FrameError> {
    let [tag, rest @ ..] = body else {
        return Err(FrameError::ControlLength {
            got: 0,
            expected: 1,
        });
    };
    let expected = match *tag {
        CONTROL_PENDING | CONTROL_COMMIT => 8,
        CONTROL_SWITCHED => 0,
        other => return Err(FrameError::ControlType(other)),
    };
    if rest.len() != expected {
        return Err(FrameError::ControlLength {
            got: body.len(),
            expected: expected + 1,
        });
    }
    Ok(match (*tag, <[u8; 8]>::try_from(rest)) {
        (CONTROL_PENDING, Ok(epoch)) => Control::Pending(u64::from_be_bytes(epoch)),
        (CONTROL_COMMIT, Ok(epoch)) => Control::Commit(u64::from_be_bytes(epoch)),
        _ => Control::Switched,
    })
}

/// The frames of one protocol message from `from`: parts of at most [`MAX_PART`] bytes, the
/// last one a [`Body::Message`].
///
/// # Errors
/// [`FrameError::EmptyMessage`], or [`FrameError::MessageTooLong`] above
/// [`MAX_ENVELOPE_BYTES`].
pub fn message_frames(from: PartyIndex, message: &[u8]) -> Result<Vec<Vec<u8>>, FrameError> {
    if message.is_empty() {
        return Err(FrameError::EmptyMessage);
    }
    if message.len() > MAX_ENVELOPE_BYTES {
        return Err(FrameError::MessageTooLong(message.len()));
    }
    let count = message.len().div_ceil(MAX_PART);
    message
        .chunks(MAX_PART)
        .enumerate()
        .map(|(i, chunk)| {
            let kind = if i + 1 == count {
                KIND_MESSAGE
            } else {
                KIND_PART
            };
            message_frame(from, kind, chunk)
        })
        .collect()
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
    /// A peer ended the session.
    #[error("party {party} ended the session ({end})")]
    Ended {
        /// The party.
        party: PartyIndex,
        /// Its reason.
        end: End,
    },
    /// A frame that is not one.
    #[error("a bad frame{}: {error}", claimed(*.from))]
    BadFrame {
        /// The sender its header names, if the header could be read.
        from: Option<PartyIndex>,
        /// What is wrong.
        error: FrameError,
    },
    /// A frame whose header names a sender it cannot be from.
    #[error("a frame names party {claimed} as its sender, {why}")]
    Sender {
        /// The party it names.
        claimed: PartyIndex,
        /// Why that cannot be.
        why: &'static str,
    },
    /// A peer's frames break the session's rules (a message too long, a flood of controls, a
    /// frame after its end).
    #[error("party {party} {why}")]
    Misbehaved {
        /// The party.
        party: PartyIndex,
        /// What it did.
        why: String,
    },
    /// This party's own mailbox closed (this replica lost frames from the others, or fell too
    /// far behind).
    #[error("this party's mailbox closed: {0}")]
    Closed(String),
    /// The caller asked for something the session does not have (a party outside it...).
    #[error("{0}")]
    Invalid(String),
    /// The mailboxes failed (the database).
    #[error("the mailboxes failed: {}", detail(.0))]
    Mailboxes(#[from] ApiError),
}

/// An internal error's detail (its display hides it from clients; the link's errors are logged).
fn detail(e: &ApiError) -> String {
    match e {
        ApiError::Internal(detail) => detail.clone(),
        e => e.to_string(),
    }
}

fn claimed(from: Option<PartyIndex>) -> String {
    from.map(|p| format!(" claiming to be from party {p}"))
        .unwrap_or_default()
}

impl LinkError {
    /// The party the error names, if any.
    #[must_use]
    pub fn party(&self) -> Option<PartyIndex> {
        match self {
            LinkError::NeverAppeared { party, .. }
            | LinkError::Gone { party, .. }
            | LinkError::Ended { party, .. }
            | LinkError::Misbehaved { party, .. } => Some(*party),
            LinkError::Sender { claimed, .. } => Some(*claimed),
            LinkError::BadFrame { from, .. } => *from,
            LinkError::Closed(_) | LinkError::Invalid(_) | LinkError::Mailboxes(_) => None,
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

/// What this party knows of a peer.
struct Peer {
    route: Route,
    /// The parts of a message it has not finished.
    partial: Vec<u8>,
    /// Its control messages not asked for yet.
    controls: VecDeque<Control>,
    /// It said its run is over.
    finished: bool,
    /// Its mailbox was found closed at the last check.
    suspect: bool,
}

/// One party's link to the others of a session, through their mailboxes: the one driver's
/// [`Link`]. Dropping it closes this party's mailbox (without a word: the peers find it
/// gone); [`MailboxLink::end`] tells them first.
pub struct MailboxLink {
    boxes: Mailboxes,
    me: PartyIndex,
    inbox: Inbox,
    peers: BTreeMap<PartyIndex, Peer>,
    /// Protocol messages that arrived while a control was awaited.
    messages: VecDeque<(PartyIndex, Vec<u8>)>,
    /// The party that announced a pending state: this party's commit goes to it alone.
    coordinator: Option<PartyIndex>,
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

impl MailboxLink {
    /// Opens party `me`'s mailbox of `session` on `boxes`, then finds each of `peers`' mailboxes
    /// (a peer may open its own a little later: each is looked up again until `appear_within`
    /// has passed since the start) and watches the replica of each.
    ///
    /// # Errors
    /// [`LinkError::Invalid`] for a bad session id or party set (empty, repeated, more than
    /// [`MAX_PARTIES`], `me` among the peers); the mailbox's errors (e.g. open already);
    /// [`LinkError::NeverAppeared`] naming the first peer whose mailbox did not open in time
    /// (this party's mailbox is closed again).
    pub async fn open(
        boxes: &Mailboxes,
        session: &ServerSessionId,
        me: PartyIndex,
        peers: &[PartyIndex],
        appear_within: Duration,
    ) -> Result<Self, LinkError> {
        check_session_id(session)?;
        let mut sorted = peers.to_vec();
        sorted.sort_unstable();
        sorted.dedup();
        if sorted.is_empty()
            || sorted.len() != peers.len()
            || sorted.contains(&me)
            || sorted.len() >= usize::from(MAX_PARTIES)
        {
            return Err(LinkError::Invalid(format!(
                "a session's peers are 1 to {} distinct parties besides this one",
                MAX_PARTIES - 1
            )));
        }
        let inbox = boxes.open(&party_address(session, me)).await?;
        let deadline = Instant::now() + appear_within;
        let mut found = BTreeMap::new();
        for party in sorted {
            let address = party_address(session, party);
            let mut pause = LOOKUP_FIRST;
            let route = loop {
                if let Some(route) = boxes.route(&address).await? {
                    break route;
                }
                let now = Instant::now();
                if now >= deadline {
                    return Err(LinkError::NeverAppeared {
                        party,
                        waited: appear_within,
                    });
                }
                tokio::time::sleep(pause.min(deadline - now)).await;
                pause = (pause * 2).min(LOOKUP_LONGEST);
            };
            inbox.watch(route.holder());
            found.insert(
                party,
                Peer {
                    route,
                    partial: Vec::new(),
                    controls: VecDeque::new(),
                    finished: false,
                    suspect: false,
                },
            );
        }
        Ok(MailboxLink {
            boxes: boxes.clone(),
            me,
            inbox,
            peers: found,
            messages: VecDeque::new(),
            coordinator: None,
        })
    }

    /// This party.
    #[must_use]
    pub fn party(&self) -> PartyIndex {
        self.me
    }

    /// Where peer `party`'s mailbox is.
    #[must_use]
    pub fn route(&self, party: PartyIndex) -> Option<&Route> {
        self.peers.get(&party).map(|p| &p.route)
    }

    /// Tells every peer that has not finished that this party's run ended, then closes this
    /// party's mailbox. After a successful run, end with [`End::finished`].
    ///
    /// # Errors
    /// The first mailbox error (every peer is still tried); a peer whose mailbox is closed
    /// already is no error.
    pub async fn end(self, end: End) -> Result<(), LinkError> {
        let frame = Frame {
            from: self.me,
            body: Body::End(end),
        }
        .encode()
        .map_err(|e| LinkError::Invalid(e.to_string()))?;
        let mut first_error = None;
        for peer in self.peers.values().filter(|p| !p.finished) {
            if let Err(e) = self.boxes.send(&peer.route, frame.clone()).await {
                first_error.get_or_insert(e);
            }
        }
        first_error.map_or(Ok(()), |e| Err(LinkError::Mailboxes(e)))
    }

    /// Sends `frame` to `to`'s mailbox.
    async fn deliver(&self, to: PartyIndex, frame: Vec<u8>) -> Result<(), LinkError> {
        let peer = self
            .peers
            .get(&to)
            .ok_or_else(|| LinkError::Invalid(format!("party {to} is not a peer of this party")))?;
        if self.boxes.send(&peer.route, frame).await? {
            Ok(())
        } else {
            Err(LinkError::Gone {
                party: to,
                why: "its mailbox is closed".into(),
            })
        }
    }

    /// The next frame, checked, or `None` once `deadline` passed; checks the peers' mailboxes
    /// every [`PROBE_EVERY`] of silence.
    async fn next_frame(&mut self, deadline: Option<Instant>) -> Result<Option<Frame>, LinkError> {
        loop {
            let tick = Instant::now() + PROBE_EVERY;
            let wake = deadline.map_or(tick, |d| d.min(tick));
            let received = tokio::select! {
                frame = self.inbox.recv() => Some(frame),
                () = tokio::time::sleep_until(wake) => None,
            };
            match received {
                Some(Some(bytes)) => return self.check(&bytes).map(Some),
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

    /// Decodes a frame and checks its sender.
    fn check(&self, bytes: &[u8]) -> Result<Frame, LinkError> {
        let frame = Frame::decode(bytes).map_err(|error| LinkError::BadFrame {
            from: match bytes {
                [FRAME_VERSION, _, from, ..] => Some(PartyIndex::new(*from)),
                _ => None,
            },
            error,
        })?;
        if frame.from == self.me {
            return Err(LinkError::Sender {
                claimed: frame.from,
                why: "which is the receiving party itself",
            });
        }
        if !self.peers.contains_key(&frame.from) {
            return Err(LinkError::Sender {
                claimed: frame.from,
                why: "which is not a party of this session",
            });
        }
        Ok(frame)
    }

    /// Takes in a checked frame: a whole protocol message is returned, a control is kept for
    /// [`Link::recv_control`], an end other than finished ends the run.
    fn absorb(&mut self, frame: Frame) -> Result<Option<(PartyIndex, Vec<u8>)>, LinkError> {
        let from = frame.from;
        let misbehaved = |why: &str| LinkError::Misbehaved {
            party: from,
            why: why.to_string(),
        };
        let peer = self
            .peers
            .get_mut(&from)
            .ok_or_else(|| LinkError::Invalid(format!("party {from} is not a peer")))?;
        peer.suspect = false;
        if peer.finished {
            return Err(misbehaved("sent a frame after it finished"));
        }
        match frame.body {
            Body::Part(bytes) | Body::Message(bytes)
                if peer.partial.len() + bytes.len() > MAX_ENVELOPE_BYTES =>
            {
                Err(misbehaved(&format!(
                    "sent a protocol message of more than {MAX_ENVELOPE_BYTES} bytes"
                )))
            }
            Body::Part(bytes) => {
                peer.partial.extend_from_slice(&bytes);
                Ok(None)
            }
            Body::Message(bytes) => {
                let mut message = std::mem::take(&mut peer.partial);
                message.extend_from_slice(&bytes);
                Ok(Some((from, message)))
            }
            _ if !peer.partial.is_empty() => {
                Err(misbehaved("broke off a protocol message for another frame"))
            }
            Body::Control(control) => {
                if peer.controls.len() >= MAX_WAITING_CONTROLS {
                    return Err(misbehaved("sent more control messages than a finish has"));
                }
                peer.controls.push_back(control);
                Ok(None)
            }
            Body::End(end) if end.reason() == EndReason::Finished => {
                peer.finished = true;
                Ok(None)
            }
            Body::End(end) => Err(LinkError::Ended { party: from, end }),
        }
    }

    /// Checks that every peer that has not finished still holds its mailbox where it did; a
    /// peer found gone twice in a row is named. A database error skips the check.
    async fn probe(&mut self) -> Result<(), LinkError> {
        for (&party, peer) in self.peers.iter_mut().filter(|(_, p)| !p.finished) {
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
        for (&party, peer) in self.peers.iter().filter(|(_, p)| !p.finished) {
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
        if envelope.from != self.me {
            return Err(LinkError::Invalid(format!(
                "party {} cannot send an envelope from party {}",
                self.me, envelope.from
            )));
        }
        let frames = message_frames(self.me, &envelope.to_bytes())
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
        if let Some(message) = self.messages.pop_front() {
            return Ok(Some(message));
        }
        let deadline = idle.map(|d| Instant::now() + d);
        loop {
            let Some(frame) = self.next_frame(deadline).await? else {
                return Ok(None);
            };
            if let Some(message) = self.absorb(frame)? {
                return Ok(Some(message));
            }
        }
    }

    /// A commit goes to the coordinator alone (another participant may have switched and left
    /// by the time it would reach it); the announcements go to every peer still there.
    async fn send_control(&mut self, control: Control) -> Result<(), LinkError> {
        let frame = Frame {
            from: self.me,
            body: Body::Control(control),
        }
        .encode()
        .map_err(|e| LinkError::Invalid(e.to_string()))?;
        let to: Vec<PartyIndex> = match (control, self.coordinator) {
            (Control::Commit(_), Some(coordinator)) => vec![coordinator],
            (Control::Commit(_), None) => {
                return Err(LinkError::Invalid(
                    "a commit before any party announced a pending state".into(),
                ));
            }
            _ => self
                .peers
                .iter()
                .filter(|(_, p)| !p.finished)
                .map(|(&p, _)| p)
                .collect(),
        };
        for party in to {
            self.deliver(party, frame.clone()).await?;
        }
        Ok(())
    }

    async fn recv_control(
        &mut self,
        from: PartyIndex,
        idle: Option<Duration>,
    ) -> Result<Option<Control>, LinkError> {
        if !self.peers.contains_key(&from) {
            return Err(LinkError::Invalid(format!(
                "party {from} is not a peer of this party"
            )));
        }
        let deadline = idle.map(|d| Instant::now() + d);
        loop {
            if let Some(peer) = self.peers.get_mut(&from) {
                if let Some(control) = peer.controls.pop_front() {
                    if let Control::Pending(_) = control {
                        self.coordinator = Some(from);
                    }
                    return Ok(Some(control));
                }
                if peer.finished {
                    return Err(LinkError::Gone {
                        party: from,
                        why: "it finished without the expected step of the finish".into(),
                    });
                }
            }
            let Some(frame) = self.next_frame(deadline).await? else {
                return Ok(None);
            };
            if let Some((party, message)) = self.absorb(frame)? {
                if self.messages.len() >= MAX_WAITING_MESSAGES {
                    return Err(LinkError::Misbehaved {
                        party,
                        why: "sent protocol messages nobody asked for".into(),
                    });
                }
                self.messages.push_back((party, message));
            }
        }
    }
}
