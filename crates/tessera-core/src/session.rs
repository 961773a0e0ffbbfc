//! Sans-IO protocol sessions.
//!
//! A session never touches a socket: feed it the bytes (or [`Envelope`]) a transport received,
//! together with the party the transport authenticated as their sender, and it returns the
//! envelopes to send; when the last round completes, [`Session::take_output`] yields the result.
//! The same session runs in-process ([`crate::runner`]), over the server WebSocket and over a
//! device-to-device channel.
//!
//! Every received envelope is checked, in this order, before its payload is parsed: size, version,
//! session id, protocol, claimed sender (must be the authenticated one), sender in the party set,
//! recipient (must be us), round (an earlier round is a replay, a repeated sender a duplicate).
//! Then the payload is parsed and its values validated (points on the curve and not the identity,
//! non-zero scalars, inner indices consistent with the header). A message that fails any check is
//! rejected with an error naming the sender and changes nothing, so the session can go on if the
//! caller chooses. A failure inside the cryptography (a proof or consistency check) ends the
//! session: every later call returns [`Error::SessionFailed`].

use std::collections::{BTreeMap, BTreeSet};

use serde::Serialize;
use serde::de::DeserializeOwned;
use sha2::{Digest, Sha256};

use crate::envelope::{ENVELOPE_VERSION, Envelope};
use crate::error::{Error, Result};
use crate::types::{PartyIndex, Protocol, SessionId};

/// A sans-IO protocol run of one party.
pub trait Session {
    /// What the run produces: a key share, a signature...
    type Output;

    /// The run's id, shared by all its parties.
    fn session_id(&self) -> SessionId;
    /// Our party index.
    fn party(&self) -> PartyIndex;
    /// The protocol.
    fn protocol(&self) -> Protocol;
    /// The other parties of the run.
    fn peers(&self) -> Vec<PartyIndex>;
    /// The round the session is waiting for (0 before `start`).
    fn round(&self) -> u8;
    /// How many communication rounds the protocol has.
    fn total_rounds(&self) -> u8;

    /// Produces the first round's envelopes. Call exactly once.
    ///
    /// # Errors
    /// [`Error::OutOfOrder`] when called twice; engine errors.
    fn start(&mut self) -> Result<Vec<Envelope>>;

    /// Handles one envelope that the transport received from `sender` (the authenticated peer,
    /// not the envelope's own claim). Returns the envelopes to send now (often none).
    ///
    /// # Errors
    /// A validation error naming `sender` (the session is unchanged), or an engine error (the
    /// session has failed).
    fn receive(&mut self, sender: PartyIndex, envelope: Envelope) -> Result<Vec<Envelope>>;

    /// [`Session::receive`] for raw bytes: decodes with the size limit first.
    ///
    /// # Errors
    /// As [`Envelope::from_bytes`] and [`Session::receive`].
    fn receive_bytes(&mut self, sender: PartyIndex, bytes: &[u8]) -> Result<Vec<Envelope>> {
        let envelope = Envelope::from_bytes(sender, bytes)?;
        self.receive(sender, envelope)
    }

    /// Whether the output is ready (or was taken).
    fn is_finished(&self) -> bool;

    /// The output, once, after the last round.
    fn take_output(&mut self) -> Option<Self::Output>;
}

/// Payloads of one round, one for each recipient.
pub(crate) type Outgoing = BTreeMap<PartyIndex, Vec<u8>>;

/// What completing a round leads to.
pub(crate) enum Advance<O> {
    /// The next round's payloads.
    Send(Outgoing),
    /// The protocol's result.
    Done(O),
}

/// One protocol's rounds, as an engine implements them. The [`Driver`] does all routing and
/// header validation; a `Rounds` only parses payloads and runs the cryptography.
pub(crate) trait Rounds {
    /// A parsed, validated payload of any round.
    type Message;
    /// The result.
    type Output;
    /// Number of communication rounds.
    const ROUNDS: u8;

    /// Round 1's payloads.
    fn start(&mut self) -> Result<Outgoing>;
    /// Parses and validates one payload of `round` from `from`; must not change state.
    fn parse(&self, round: u8, from: PartyIndex, payload: &[u8]) -> Result<Self::Message>;
    /// All messages of `round` have arrived: run the phase.
    fn advance(
        &mut self,
        round: u8,
        received: BTreeMap<PartyIndex, Self::Message>,
    ) -> Result<Advance<Self::Output>>;
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Stage {
    New,
    Round(u8),
    Finished,
    Failed,
}

/// Routes envelopes into rounds for any [`Rounds`].
pub(crate) struct Driver<R: Rounds> {
    session_id: SessionId,
    protocol: Protocol,
    me: PartyIndex,
    peers: BTreeSet<PartyIndex>,
    rounds: R,
    stage: Stage,
    current: BTreeMap<PartyIndex, R::Message>,
    /// Messages of the next round from faster parties.
    early: BTreeMap<PartyIndex, R::Message>,
    output: Option<R::Output>,
}

impl<R: Rounds> Driver<R> {
    /// The rounds, for tests that play a malicious party.
    #[cfg(test)]
    pub(crate) fn rounds_mut(&mut self) -> &mut R {
        &mut self.rounds
    }

    pub(crate) fn new(
        session_id: SessionId,
        protocol: Protocol,
        me: PartyIndex,
        peers: BTreeSet<PartyIndex>,
        rounds: R,
    ) -> Self {
        Driver {
            session_id,
            protocol,
            me,
            peers,
            rounds,
            stage: Stage::New,
            current: BTreeMap::new(),
            early: BTreeMap::new(),
            output: None,
        }
    }

    fn envelopes(&self, round: u8, outgoing: Outgoing) -> Vec<Envelope> {
        outgoing
            .into_iter()
            .map(|(to, payload)| Envelope {
                version: ENVELOPE_VERSION,
                session_id: self.session_id,
                protocol: self.protocol,
                round,
                from: self.me,
                to,
                payload,
            })
            .collect()
    }

    /// Runs `f`, marking the session failed if it fails.
    fn guarded<T>(&mut self, f: impl FnOnce(&mut Self) -> Result<T>) -> Result<T> {
        let result = f(self);
        if result.is_err() {
            self.stage = Stage::Failed;
            self.current.clear();
            self.early.clear();
        }
        result
    }

    /// Header checks, in the order the module documentation gives.
    fn check_header(&self, sender: PartyIndex, e: &Envelope) -> Result<()> {
        if e.version != ENVELOPE_VERSION {
            return Err(Error::UnsupportedVersion {
                party: sender,
                version: e.version,
            });
        }
        if e.session_id != self.session_id {
            return Err(Error::WrongSession { party: sender });
        }
        if e.protocol != self.protocol {
            return Err(Error::WrongProtocol {
                party: sender,
                expected: self.protocol,
                got: e.protocol,
            });
        }
        if e.from != sender {
            return Err(Error::SenderMismatch {
                party: sender,
                claimed: e.from,
            });
        }
        if !self.peers.contains(&sender) {
            return Err(Error::UnknownSender { party: sender });
        }
        if e.to != self.me {
            return Err(Error::WrongRecipient {
                party: sender,
                to: e.to,
            });
        }
        Ok(())
    }

    /// Runs every round whose messages are all in.
    fn run_complete_rounds(&mut self, mut out: Vec<Envelope>) -> Result<Vec<Envelope>> {
        while let Stage::Round(round) = self.stage {
            if self.current.len() < self.peers.len() {
                break;
            }
            let received = std::mem::take(&mut self.current);
            match self.guarded(|d| d.rounds.advance(round, received))? {
                Advance::Done(output) => {
                    self.output = Some(output);
                    self.stage = Stage::Finished;
                }
                Advance::Send(next) => {
                    if round >= R::ROUNDS {
                        self.stage = Stage::Failed;
                        return Err(Error::Aborted("engine sent past its last round".into()));
                    }
                    out.extend(self.envelopes(round + 1, next));
                    self.stage = Stage::Round(round + 1);
                    self.current = std::mem::take(&mut self.early);
                }
            }
        }
        Ok(out)
    }

    pub(crate) fn start(&mut self) -> Result<Vec<Envelope>> {
        match self.stage {
            Stage::New => {}
            Stage::Failed => return Err(Error::SessionFailed),
            _ => return Err(Error::OutOfOrder("start called twice")),
        }
        let first = self.guarded(|d| d.rounds.start())?;
        self.stage = Stage::Round(1);
        let out = self.envelopes(1, first);
        self.run_complete_rounds(out)
    }

    pub(crate) fn receive(&mut self, sender: PartyIndex, e: Envelope) -> Result<Vec<Envelope>> {
        let current = match self.stage {
            Stage::New => return Err(Error::OutOfOrder("message received before start")),
            Stage::Failed => return Err(Error::SessionFailed),
            Stage::Finished => return Err(Error::SessionFinished),
            Stage::Round(r) => r,
        };
        self.check_header(sender, &e)?;
        let slot = if e.round == current {
            &self.current
        } else if e.round == current + 1 && e.round <= R::ROUNDS {
            &self.early
        } else if e.round < current {
            return Err(Error::ReplayedMessage {
                party: sender,
                round: e.round,
                current,
            });
        } else {
            return Err(Error::UnexpectedRound {
                party: sender,
                round: e.round,
                current,
            });
        };
        if slot.contains_key(&sender) {
            return Err(Error::DuplicateMessage {
                party: sender,
                round: e.round,
            });
        }
        let message = self.rounds.parse(e.round, sender, &e.payload)?;
        if e.round == current {
            self.current.insert(sender, message);
        } else {
            self.early.insert(sender, message);
        }
        self.run_complete_rounds(Vec::new())
    }

    /// Fuzzing only: the checks [`Driver::receive`] makes of an envelope of the current round
    /// (header, then the round's parse), without keeping it or running the round.
    #[cfg(feature = "fuzzing")]
    pub(crate) fn check_only(&self, sender: PartyIndex, e: &Envelope) -> Result<()> {
        let Stage::Round(current) = self.stage else {
            return Err(Error::OutOfOrder("not waiting in a round"));
        };
        self.check_header(sender, e)?;
        if e.round != current {
            return Err(Error::UnexpectedRound {
                party: sender,
                round: e.round,
                current,
            });
        }
        self.rounds.parse(e.round, sender, &e.payload).map(|_| ())
    }

    pub(crate) fn session_id(&self) -> SessionId {
        self.session_id
    }
    pub(crate) fn party(&self) -> PartyIndex {
        self.me
    }
    pub(crate) fn protocol(&self) -> Protocol {
        self.protocol
    }
    pub(crate) fn peers(&self) -> Vec<PartyIndex> {
        self.peers.iter().copied().collect()
    }
    pub(crate) fn round(&self) -> u8 {
        match self.stage {
            Stage::New => 0,
            Stage::Round(r) => r,
            Stage::Finished | Stage::Failed => R::ROUNDS,
        }
    }
    pub(crate) fn is_finished(&self) -> bool {
        self.stage == Stage::Finished
    }
    pub(crate) fn take_output(&mut self) -> Option<R::Output> {
        self.output.take()
    }
}

/// Implements [`Session`] for a newtype over a [`Driver`].
macro_rules! session_newtype {
    ($name:ident, $output:ty) => {
        impl $crate::session::Session for $name {
            type Output = $output;
            fn session_id(&self) -> $crate::types::SessionId {
                self.0.session_id()
            }
            fn party(&self) -> $crate::types::PartyIndex {
                self.0.party()
            }
            fn protocol(&self) -> $crate::types::Protocol {
                self.0.protocol()
            }
            fn peers(&self) -> Vec<$crate::types::PartyIndex> {
                self.0.peers()
            }
            fn round(&self) -> u8 {
                self.0.round()
            }
            fn total_rounds(&self) -> u8 {
                $crate::session::rounds_of(&self.0)
            }
            fn start(&mut self) -> $crate::error::Result<Vec<$crate::envelope::Envelope>> {
                self.0.start()
            }
            fn receive(
                &mut self,
                sender: $crate::types::PartyIndex,
                envelope: $crate::envelope::Envelope,
            ) -> $crate::error::Result<Vec<$crate::envelope::Envelope>> {
                self.0.receive(sender, envelope)
            }
            fn is_finished(&self) -> bool {
                self.0.is_finished()
            }
            fn take_output(&mut self) -> Option<$output> {
                self.0.take_output()
            }
        }

        #[cfg(feature = "fuzzing")]
        impl $name {
            /// Fuzzing only (feature `fuzzing`): the header checks and this round's parse of
            /// `envelope`, as [`Session::receive`](crate::session::Session::receive) makes them
            /// before it keeps anything; the session is unchanged whatever the outcome.
            ///
            /// # Errors
            /// As `receive`'s validation errors, naming `sender`.
            pub fn check_only(
                &self,
                sender: $crate::types::PartyIndex,
                envelope: &$crate::envelope::Envelope,
            ) -> $crate::error::Result<()> {
                self.0.check_only(sender, envelope)
            }
        }

        impl std::fmt::Debug for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.debug_struct(stringify!($name))
                    .field("session_id", &self.0.session_id())
                    .field("party", &self.0.party())
                    .field("round", &self.0.round())
                    .finish_non_exhaustive()
            }
        }
    };
}
pub(crate) use session_newtype;

pub(crate) fn rounds_of<R: Rounds>(_: &Driver<R>) -> u8 {
    R::ROUNDS
}

/// Encodes a payload.
pub(crate) fn encode<T: Serialize>(value: &T) -> Vec<u8> {
    // Serializing our own plain-data messages into a Vec cannot fail.
    postcard::to_allocvec(value).unwrap_or_default()
}

/// Decodes a payload strictly (no trailing bytes), naming the sender on failure.
pub(crate) fn decode<T: DeserializeOwned>(round: u8, from: PartyIndex, bytes: &[u8]) -> Result<T> {
    let invalid = |reason: String| Error::InvalidMessage {
        party: from,
        round,
        reason,
    };
    let (value, rest) = postcard::take_from_bytes::<T>(bytes).map_err(|e| {
        invalid(match e {
            postcard::Error::DeserializeUnexpectedEnd => "truncated payload".into(),
            // Points and scalars are validated while decoding; their errors say so.
            other => format!("cannot decode payload ({other})"),
        })
    })?;
    if !rest.is_empty() {
        return Err(invalid(format!(
            "{} unexpected bytes after the payload",
            rest.len()
        )));
    }
    Ok(value)
}

/// Hash of every party's broadcast in one round, as one party saw them: the reliable-broadcast
/// echo. Parties compare echoes in the following round; any difference aborts the run.
pub(crate) fn broadcast_echo(
    session_id: &SessionId,
    round: u8,
    broadcasts: &BTreeMap<PartyIndex, Vec<u8>>,
) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(b"tessera/broadcast-echo/v1");
    h.update(session_id.as_bytes());
    h.update([round]);
    for (party, bytes) in broadcasts {
        h.update([party.get()]);
        h.update((bytes.len() as u64).to_be_bytes());
        h.update(bytes);
    }
    h.finalize().into()
}
