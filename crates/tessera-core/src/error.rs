//! The one error type of `tessera-core`.
//!
//! Every variant that is caused by another party names that party, so that a caller can refuse it
//! in later sessions. No variant carries secret material: reasons are fixed strings or the engine's
//! own abort description (which names parties and checks, never values).

use crate::types::{PartyIndex, Protocol};

/// Result alias for `tessera-core`.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can go wrong in `tessera-core`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// Threshold, party set, signer set or another parameter given by the caller is not valid.
    #[error("invalid parameters: {0}")]
    InvalidParameters(String),

    /// An envelope is larger than [`crate::envelope::MAX_ENVELOPE_BYTES`]; it was not parsed.
    #[error("envelope from party {party} is {size} bytes, over the {limit}-byte limit")]
    EnvelopeTooLarge {
        /// The party the transport received it from.
        party: PartyIndex,
        /// Its size in bytes.
        size: usize,
        /// The limit.
        limit: usize,
    },

    /// Bytes received from a party do not decode as an envelope (truncated, garbage, trailing bytes).
    #[error("malformed envelope from party {party}: {reason}")]
    MalformedEnvelope {
        /// The party the transport received it from.
        party: PartyIndex,
        /// What is wrong, without echoing the bytes.
        reason: String,
    },

    /// The envelope's format version is not one this build understands.
    #[error("envelope from party {party} has unsupported version {version}")]
    UnsupportedVersion {
        /// The party the transport received it from.
        party: PartyIndex,
        /// The version it carried.
        version: u8,
    },

    /// The envelope belongs to another session (another run, wallet, party set, digest or path).
    #[error("envelope from party {party} belongs to another session")]
    WrongSession {
        /// The party the transport received it from.
        party: PartyIndex,
    },

    /// The envelope belongs to another protocol (e.g. a keygen message fed to a sign session).
    #[error("envelope from party {party} is for protocol {got}, this session runs {expected}")]
    WrongProtocol {
        /// The party the transport received it from.
        party: PartyIndex,
        /// This session's protocol.
        expected: Protocol,
        /// The envelope's protocol.
        got: Protocol,
    },

    /// The envelope claims a sender other than the party the transport received it from.
    #[error("party {party} sent an envelope claiming to come from party {claimed}")]
    SenderMismatch {
        /// The party the transport received it from (the one misbehaving).
        party: PartyIndex,
        /// The sender written in the envelope.
        claimed: PartyIndex,
    },

    /// The sender is not one of this session's other parties.
    #[error("party {party} is not a counterparty in this session")]
    UnknownSender {
        /// The sender.
        party: PartyIndex,
    },

    /// The envelope is addressed to another party.
    #[error("envelope from party {party} is addressed to party {to}, not to us")]
    WrongRecipient {
        /// The party the transport received it from.
        party: PartyIndex,
        /// The recipient written in the envelope.
        to: PartyIndex,
    },

    /// A message of a round that this session has already completed (a replay).
    #[error("party {party} replayed a message of round {round}; the session is at round {current}")]
    ReplayedMessage {
        /// The sender.
        party: PartyIndex,
        /// The round of the replayed message.
        round: u8,
        /// The round the session is in.
        current: u8,
    },

    /// A second, different or identical, message from the same party for the same round.
    #[error("party {party} sent a second message for round {round}")]
    DuplicateMessage {
        /// The sender.
        party: PartyIndex,
        /// The round.
        round: u8,
    },

    /// A message for a round this session cannot be in next.
    #[error("party {party} sent a message for round {round}; the session is at round {current}")]
    UnexpectedRound {
        /// The sender.
        party: PartyIndex,
        /// The round of the message.
        round: u8,
        /// The round the session is in.
        current: u8,
    },

    /// The payload does not parse, or a value in it is invalid (a point off the curve, the identity,
    /// a zero scalar, inner indices that contradict the envelope).
    #[error("invalid round-{round} message from party {party}: {reason}")]
    InvalidMessage {
        /// The sender.
        party: PartyIndex,
        /// The round.
        round: u8,
        /// What is wrong.
        reason: String,
    },

    /// A party holds a share of another epoch: an old share cannot be mixed with refreshed ones.
    #[error("party {party} holds a share of epoch {theirs}, we hold epoch {ours}")]
    EpochMismatch {
        /// The party whose epoch differs.
        party: PartyIndex,
        /// Our epoch.
        ours: u64,
        /// Theirs.
        theirs: u64,
    },

    /// A party reports a different view of the broadcasts of a round (reliable-broadcast check).
    /// Nobody is blamed: either that party or the broadcaster may be at fault.
    #[error(
        "party {reported_by} saw different broadcasts in round {round}; aborting without blame"
    )]
    BroadcastMismatch {
        /// The party whose echo differed from ours.
        reported_by: PartyIndex,
        /// The round whose broadcasts differ.
        round: u8,
    },

    /// A party finished with a different result (public key or transcript) than ours.
    #[error("party {party} confirmed a different result; aborting")]
    ConfirmationMismatch {
        /// The party whose confirmation differed.
        party: PartyIndex,
    },

    /// The engine found a failed consistency check attributable to a party. Callers must refuse this
    /// party in every later session of the wallet until it is reshared without it.
    #[error("party {party} misbehaved: {reason}")]
    PartyMisbehaved {
        /// The misbehaving party.
        party: PartyIndex,
        /// The engine's description of the failed check.
        reason: String,
    },

    /// A check on a party's message failed, which the engine does not treat as proof of malice
    /// (e.g. a stale or corrupted message). The run is over; retrying with a new session is safe.
    #[error("a check on party {party}'s message failed: {reason}")]
    CheckFailed {
        /// The party whose message failed the check.
        party: PartyIndex,
        /// Which check.
        reason: String,
    },

    /// The signer set cannot sign under the wallet's access structure: it is not authorised (the
    /// error says what it lacks) or includes parties the structure does not need. Refused before
    /// any message is sent.
    #[error("{0}")]
    Quorum(#[from] crate::structure::QuorumError),

    /// The engine aborted without blaming anyone (e.g. the final signature did not verify).
    #[error("protocol aborted: {0}")]
    Aborted(String),

    /// The session already failed; start a new one.
    #[error("the session has already failed; start a new session")]
    SessionFailed,

    /// The session is finished; it accepts no more messages.
    #[error("the session is finished and accepts no more messages")]
    SessionFinished,

    /// `start` was called twice, or a message arrived before `start`.
    #[error("session used out of order: {0}")]
    OutOfOrder(&'static str),

    /// A BIP-32 path is not valid, or asks for hardened derivation (impossible without the full key).
    #[error("invalid derivation path: {0}")]
    InvalidDerivationPath(String),

    /// A stored key share is malformed, of an unknown version, or internally inconsistent.
    #[error("invalid key share: {0}")]
    InvalidKeyShare(String),

    /// A public key is not a valid secp256k1 point.
    #[error("invalid public key: {0}")]
    InvalidPublicKey(String),

    /// A signature is malformed.
    #[error("invalid signature encoding: {0}")]
    InvalidSignature(String),

    /// A signature does not verify under the given public key and digest.
    #[error("signature does not verify under this public key and digest")]
    VerificationFailed,
}

impl Error {
    /// The party this error blames or names, if any. Validation errors name the party the transport
    /// received the offending bytes from.
    #[must_use]
    pub fn party(&self) -> Option<PartyIndex> {
        match self {
            Error::EnvelopeTooLarge { party, .. }
            | Error::MalformedEnvelope { party, .. }
            | Error::UnsupportedVersion { party, .. }
            | Error::WrongSession { party }
            | Error::WrongProtocol { party, .. }
            | Error::SenderMismatch { party, .. }
            | Error::UnknownSender { party }
            | Error::WrongRecipient { party, .. }
            | Error::ReplayedMessage { party, .. }
            | Error::DuplicateMessage { party, .. }
            | Error::UnexpectedRound { party, .. }
            | Error::InvalidMessage { party, .. }
            | Error::EpochMismatch { party, .. }
            | Error::ConfirmationMismatch { party }
            | Error::CheckFailed { party, .. }
            | Error::PartyMisbehaved { party, .. } => Some(*party),
            Error::BroadcastMismatch { reported_by, .. } => Some(*reported_by),
            _ => None,
        }
    }
}
