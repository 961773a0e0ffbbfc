//! Session frames: what the parties of one protocol session send each other through the
//! commitment server, whatever carries them (the server's mailboxes between replicas, a device's
//! WebSocket), and [`Peers`], the sans-IO state one party keeps of the others' frames. The
//! server's `MailboxLink` and the device SDK's socket link are both built on it, so a frame means
//! the same on every hop.
//!
//! A frame:
//!
//! ```text
//! byte 0      format version (FRAME_VERSION = 1)
//! byte 1      kind: 0 message part, 1 message (its last part), 2 control, 3 end, 4 channel
//! byte 2      the sender's party index
//! bytes 3..   the body, by kind:
//!   message part, message   1 ..= MAX_PART bytes of an encoded envelope
//!   control                 tag 0 Pending or 1 Commit + the epoch (8 bytes, big-endian),
//!                           tag 2 Switched (nothing more)
//!   end                     reason 0 finished, 1 left, 2 expired, 3 failed, then at most
//!                           MAX_END_MESSAGE bytes of UTF-8 without control characters
//!   channel                 1 ..= MAX_CHANNEL bytes of an end-to-end channel between two
//!                           devices (a Noise handshake message, or a sealed authentication),
//!                           opaque to everything between them
//! ```
//!
//! Between two devices, protocol messages travel sealed: each message (or part) body is a Noise
//! transport message of their end-to-end channel (`tessera_client::session_socket`), which the
//! server forwards without being able to read or alter it.
//!
//! [`Frame::decode`] checks all of it: at most [`MAX_FRAME`] bytes, the whole header, a known
//! version and kind, a message body that is not empty, a control of exactly its length with a
//! known tag, an end with a known reason and a valid text; anything else is a [`FrameError`]
//! saying what was wrong. [`Peers::check`] then checks the sender: a party of the session other
//! than the receiver; [`Peers::absorb`] that it has not finished, that its parts join into at
//! most [`MAX_ENVELOPE_BYTES`], that it does not flood controls.
//!
//! Why parts: an envelope may have up to [`MAX_ENVELOPE_BYTES`] (a keygen's third round runs
//! to about 148 KB) and a frame at most [`MAX_FRAME`]. A longer message is cut into parts, the
//! last one marked; every carrier delivers one sender's frames in the order they were sent, so
//! the receiver joins each sender's parts.
//!
//! A device's socket ([`addressed`], [`split_addressed`]): the device writes each frame behind
//! one byte, the party it is for; the server checks that the frame's sender is the party the
//! socket authenticated and puts the frame, unchanged, into the recipient's mailbox. Frames to the
//! device come as they are, their sender in the header (written by the server, which
//! authenticated it).
//!
//! The two-phase finish ([`tessera_core::driver`]): the coordinator's pending announcement and
//! its switch go to every peer, a participant's commit to the coordinator alone (another
//! participant may have switched and left by then; [`Peers::control_recipients`]). Controls and
//! messages that arrive before they are asked for wait, a few per peer.

use std::collections::{BTreeMap, VecDeque};
use std::fmt;

use tessera_core::PartyIndex;
use tessera_core::driver::Control;
use tessera_core::envelope::MAX_ENVELOPE_BYTES;
use tessera_core::types::MAX_PARTIES;

/// The frame format's version (byte 0).
pub const FRAME_VERSION: u8 = 1;
/// Version, kind, sender.
pub const HEADER_LEN: usize = 3;
/// The longest frame (a mailbox frame's limit: 128 KiB).
pub const MAX_FRAME: usize = 128 * 1024;
/// The most bytes of a protocol message one frame carries.
pub const MAX_PART: usize = MAX_FRAME - HEADER_LEN;
/// The longest text of an end frame, in bytes.
pub const MAX_END_MESSAGE: usize = 256;
/// The longest body of a channel frame (a Noise message).
pub const MAX_CHANNEL: usize = 65_535;
/// The longest message of a device's socket: a frame behind its recipient's index.
pub const MAX_ADDRESSED: usize = MAX_FRAME + 1;

/// Control messages a peer may have waiting (the finish has three kinds, one of each per party;
/// a party that sends more is flooding).
const MAX_WAITING_CONTROLS: usize = 8;
/// Protocol messages that may wait while a control is awaited (a run is over by then: none
/// should come at all).
const MAX_WAITING_MESSAGES: usize = 16;

const KIND_PART: u8 = 0;
const KIND_MESSAGE: u8 = 1;
const KIND_CONTROL: u8 = 2;
const KIND_END: u8 = 3;
const KIND_CHANNEL: u8 = 4;

const CONTROL_PENDING: u8 = 0;
const CONTROL_COMMIT: u8 = 1;
const CONTROL_SWITCHED: u8 = 2;

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
    /// A message of the end-to-end channel between two devices (opaque).
    Channel(Vec<u8>),
}

impl fmt::Debug for Body {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Body::Part(b) => write!(f, "Part({} bytes)", b.len()),
            Body::Message(b) => write!(f, "Message({} bytes)", b.len()),
            Body::Control(c) => write!(f, "Control({c:?})"),
            Body::End(e) => write!(f, "End({e})"),
            Body::Channel(b) => write!(f, "Channel({} bytes)", b.len()),
        }
    }
}

/// One session frame: its sender and what it carries.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Frame {
    /// The sending party, as the server (the replica that pumped the frame) authenticated it.
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
    #[error("a session frame of {0} bytes is longer than a frame may be ({MAX_FRAME} bytes)")]
    TooLong(usize),
    /// Another format version.
    #[error("a session frame of format version {0} (this build reads version {FRAME_VERSION})")]
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
    /// A channel frame of no bytes, or more than a Noise message.
    #[error("a channel frame of {0} bytes (1 to {MAX_CHANNEL})")]
    ChannelLength(usize),
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
            Body::Control(c) => control_frame(self.from, *c),
            Body::End(e) => end_frame(self.from, e),
            Body::Channel(b) => channel_frame(self.from, b)?,
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
            KIND_CHANNEL => {
                if body.is_empty() || body.len() > MAX_CHANNEL {
                    return Err(FrameError::ChannelLength(body.len()));
                }
                Body::Channel(body.to_vec())
            }
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
/// A device socket's message: `frame` for party `to`.
#[must_use]
pub fn addressed(to: PartyIndex, frame: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(1 + frame.len());
    out.push(to.get());
    out.extend_from_slice(frame);
    out
}

/// The recipient and the frame of a device socket's message, the frame decoded and checked.
///
/// # Errors
/// [`FrameError::Truncated`] for an empty message; the frame's own [`FrameError`].
pub fn split_addressed(message: &[u8]) -> Result<(PartyIndex, Frame), FrameError> {
    let [to, frame @ ..] = message else {
        return Err(FrameError::Truncated(0));
    };
    Ok((PartyIndex::new(*to), Frame::decode(frame)?))
}

/// The sender of `frame` if it is an end frame, read from its header alone (a carrier's
/// bookkeeping; the receiver checks the whole frame).
#[must_use]
pub fn ends_from(frame: &[u8]) -> Option<PartyIndex> {
    match frame {
        [FRAME_VERSION, KIND_END, from, ..] => Some(PartyIndex::new(*from)),
        _ => None,
    }
}

/// Why a party cannot take in another's frames, or send: [`Fault::party`] names the party at
/// fault, where there is one.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Fault {
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
    /// A peer ended the session.
    #[error("party {party} ended the session ({end})")]
    Ended {
        /// The party.
        party: PartyIndex,
        /// Its reason.
        end: End,
    },
    /// A peer finished without what was asked of it.
    #[error("party {party} left the session: {why}")]
    Gone {
        /// The party.
        party: PartyIndex,
        /// What was missing.
        why: String,
    },
    /// The caller asked for something the session does not have (a party outside it...).
    #[error("{0}")]
    Invalid(String),
}

fn claimed(from: Option<PartyIndex>) -> String {
    from.map(|p| format!(" claiming to be from party {p}"))
        .unwrap_or_default()
}

impl Fault {
    /// The party the fault names, if any.
    #[must_use]
    pub fn party(&self) -> Option<PartyIndex> {
        match self {
            Fault::Gone { party, .. }
            | Fault::Ended { party, .. }
            | Fault::Misbehaved { party, .. } => Some(*party),
            Fault::Sender { claimed, .. } => Some(*claimed),
            Fault::BadFrame { from, .. } => *from,
            Fault::Invalid(_) => None,
        }
    }
}

/// What one party knows of a peer's frames.
#[derive(Default)]
struct PeerFrames {
    /// The parts of a message it has not finished.
    partial: Vec<u8>,
    /// Its control messages not asked for yet.
    controls: VecDeque<Control>,
    /// It said its run is over.
    finished: bool,
}

/// One party's view of the others' frames in a session (sans-IO): checks each frame's sender,
/// joins parts into messages, keeps controls and messages until they are asked for, follows who
/// finished and who coordinates the finish. A link reads frames from its carrier and hands them
/// here.
pub struct Peers {
    me: PartyIndex,
    peers: BTreeMap<PartyIndex, PeerFrames>,
    /// Protocol messages that arrived while a control was awaited.
    messages: VecDeque<(PartyIndex, Vec<u8>)>,
    /// The party that announced a pending state: this party's commit goes to it alone.
    coordinator: Option<PartyIndex>,
}

impl fmt::Debug for Peers {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Peers")
            .field("me", &self.me)
            .field("peers", &self.peers.keys().collect::<Vec<_>>())
            .finish_non_exhaustive()
    }
}

impl Peers {
    /// Party `me`'s view of `peers`.
    ///
    /// # Errors
    /// [`Fault::Invalid`] for a bad party set: empty, repeated, more than [`MAX_PARTIES`] in
    /// all, `me` among the peers.
    pub fn new(me: PartyIndex, peers: &[PartyIndex]) -> Result<Self, Fault> {
        let mut sorted = peers.to_vec();
        sorted.sort_unstable();
        sorted.dedup();
        if sorted.is_empty()
            || sorted.len() != peers.len()
            || sorted.contains(&me)
            || sorted.len() >= usize::from(MAX_PARTIES)
        {
            return Err(Fault::Invalid(format!(
                "a session's peers are 1 to {} distinct parties besides this one",
                MAX_PARTIES - 1
            )));
        }
        Ok(Peers {
            me,
            peers: sorted
                .into_iter()
                .map(|p| (p, PeerFrames::default()))
                .collect(),
            messages: VecDeque::new(),
            coordinator: None,
        })
    }

    /// This party.
    #[must_use]
    pub fn me(&self) -> PartyIndex {
        self.me
    }

    /// Whether `party` is a peer.
    #[must_use]
    pub fn contains(&self, party: PartyIndex) -> bool {
        self.peers.contains_key(&party)
    }

    /// Every peer, in order.
    pub fn all(&self) -> impl Iterator<Item = PartyIndex> + '_ {
        self.peers.keys().copied()
    }

    /// The peers that have not said their run is over, in order.
    pub fn unfinished(&self) -> impl Iterator<Item = PartyIndex> + '_ {
        self.peers
            .iter()
            .filter(|(_, p)| !p.finished)
            .map(|(&party, _)| party)
    }

    /// Decodes a frame and checks its sender: a peer, not this party.
    ///
    /// # Errors
    /// [`Fault::BadFrame`] (naming the sender the header claims, if it could be read) or
    /// [`Fault::Sender`].
    pub fn check(&self, bytes: &[u8]) -> Result<Frame, Fault> {
        let frame = Frame::decode(bytes).map_err(|error| Fault::BadFrame {
            from: match bytes {
                [FRAME_VERSION, _, from, ..] => Some(PartyIndex::new(*from)),
                _ => None,
            },
            error,
        })?;
        if frame.from == self.me {
            return Err(Fault::Sender {
                claimed: frame.from,
                why: "which is the receiving party itself",
            });
        }
        if !self.peers.contains_key(&frame.from) {
            return Err(Fault::Sender {
                claimed: frame.from,
                why: "which is not a party of this session",
            });
        }
        Ok(frame)
    }

    /// Takes in a checked frame: a whole protocol message is returned, a control is kept for
    /// [`Peers::take_control`], a finished end is noted.
    ///
    /// # Errors
    /// [`Fault::Ended`] for any other end; [`Fault::Misbehaved`] for a frame after the sender
    /// finished, a message over [`MAX_ENVELOPE_BYTES`], a message broken off, a flood of
    /// controls; [`Fault::Invalid`] for a sender that is not a peer (check first).
    pub fn absorb(&mut self, frame: Frame) -> Result<Option<(PartyIndex, Vec<u8>)>, Fault> {
        let from = frame.from;
        let misbehaved = |why: &str| Fault::Misbehaved {
            party: from,
            why: why.to_string(),
        };
        let peer = self
            .peers
            .get_mut(&from)
            .ok_or_else(|| Fault::Invalid(format!("party {from} is not a peer")))?;
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
            Body::End(end) => Err(Fault::Ended { party: from, end }),
            Body::Channel(_) => Err(misbehaved(
                "sent an end-to-end channel frame, which only two devices exchange",
            )),
        }
    }

    /// The oldest protocol message that arrived while a control was awaited.
    pub fn waiting_message(&mut self) -> Option<(PartyIndex, Vec<u8>)> {
        self.messages.pop_front()
    }

    /// Keeps a protocol message that arrived while a control was awaited.
    ///
    /// # Errors
    /// [`Fault::Misbehaved`] naming `party` once too many wait.
    pub fn keep_message(&mut self, party: PartyIndex, message: Vec<u8>) -> Result<(), Fault> {
        if self.messages.len() >= MAX_WAITING_MESSAGES {
            return Err(Fault::Misbehaved {
                party,
                why: "sent protocol messages nobody asked for".into(),
            });
        }
        self.messages.push_back((party, message));
        Ok(())
    }

    /// `from`'s oldest control not asked for yet, if any; a pending announcement makes `from`
    /// the coordinator this party commits to.
    ///
    /// # Errors
    /// [`Fault::Invalid`] when `from` is not a peer; [`Fault::Gone`] when `from` finished with
    /// none waiting (none can come).
    pub fn take_control(&mut self, from: PartyIndex) -> Result<Option<Control>, Fault> {
        let peer = self
            .peers
            .get_mut(&from)
            .ok_or_else(|| Fault::Invalid(format!("party {from} is not a peer of this party")))?;
        if let Some(control) = peer.controls.pop_front() {
            if let Control::Pending(_) = control {
                self.coordinator = Some(from);
            }
            return Ok(Some(control));
        }
        if peer.finished {
            return Err(Fault::Gone {
                party: from,
                why: "it finished without the expected step of the finish".into(),
            });
        }
        Ok(None)
    }

    /// Who a control goes to: a commit to the coordinator alone (another participant may have
    /// switched and left by the time it would reach it), the announcements to every peer that
    /// has not finished.
    ///
    /// # Errors
    /// [`Fault::Invalid`] for a commit before any party announced a pending state.
    pub fn control_recipients(&self, control: Control) -> Result<Vec<PartyIndex>, Fault> {
        match (control, self.coordinator) {
            (Control::Commit(_), Some(coordinator)) => Ok(vec![coordinator]),
            (Control::Commit(_), None) => Err(Fault::Invalid(
                "a commit before any party announced a pending state".into(),
            )),
            _ => Ok(self.unfinished().collect()),
        }
    }

    /// The frame of `control` from this party.
    #[must_use]
    pub fn control_frame(&self, control: Control) -> Vec<u8> {
        control_frame(self.me, control)
    }

    /// The frame of this party's `end`.
    #[must_use]
    pub fn end_frame(&self, end: &End) -> Vec<u8> {
        end_frame(self.me, end)
    }
}

/// The frame of `from`'s `control`.
fn control_frame(from: PartyIndex, control: Control) -> Vec<u8> {
    let mut out = header(from, KIND_CONTROL, 9);
    out.extend_from_slice(&encode_control(control));
    out
}

/// The frame of `from`'s channel message `body`.
///
/// # Errors
/// [`FrameError::ChannelLength`] for a body of no bytes or more than [`MAX_CHANNEL`].
pub fn channel_frame(from: PartyIndex, body: &[u8]) -> Result<Vec<u8>, FrameError> {
    if body.is_empty() || body.len() > MAX_CHANNEL {
        return Err(FrameError::ChannelLength(body.len()));
    }
    let mut out = header(from, KIND_CHANNEL, body.len());
    out.extend_from_slice(body);
    Ok(out)
}

/// The frame of `from`'s `end`.
#[must_use]
pub fn end_frame(from: PartyIndex, end: &End) -> Vec<u8> {
    let mut out = header(from, KIND_END, 1 + end.message.len());
    out.push(end.reason.code());
    out.extend_from_slice(end.message.as_bytes());
    out
}
