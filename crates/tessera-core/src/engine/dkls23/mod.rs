//! DKLs23 threshold ECDSA on secp256k1 through the `dkls23` crate (pinned to 0.6.2).
//!
//! Paper: Doerner, Kondi, Lee, shelat, "Threshold ECDSA in Three Rounds", IEEE S&P 2024,
//! <https://eprint.iacr.org/2023/765>. Key generation is the paper's Protocol 9.1 (with the
//! zero-share and two-party-multiplication set-up), signing Protocol 3.6, refresh the "complete
//! refresh" of the crate (a key generation whose polynomials have a zero constant term), BIP-32
//! non-hardened derivation by shifting each share with the public tweak.
//!
//! What this module adds around the crate:
//! - Tessera party `i` is engine party `i + 1` (the engine's indices start at 1).
//! - Every inner sender/receiver index is checked against the authenticated envelope header,
//!   and points and scalars are validated while decoding (k256 refuses off-curve points) and
//!   after (no identity points, no zero scalars where the engine expects a random one).
//! - The crate has no reliable broadcast: keygen and refresh echo a hash of every round's
//!   broadcasts in the next round and end with a confirmation round that also compares the
//!   resulting public key and chain code ([`crate::session::broadcast_echo`]). Signing needs no
//!   echo: its only broadcast feeds a signature every party verifies, so an inconsistent
//!   broadcast can only make the run abort, never produce a wrong output.
//! - An engine abort that blames a counterparty becomes [`Error::PartyMisbehaved`].
//! - Wallets under an access structure ([`structure_setup`]): the engine's key generation runs
//!   n-of-n with the structure's sub-shares as its fragments, and a quorum signs as a party whose
//!   share is mapped so that the engine's Lagrange step yields its additive share
//!   ([`EngineShare::quorum_party`]).
//! - Resharing to a new structure, and refresh under a structure ([`reshare`]): the dealings of
//!   an old quorum's additive shares, checked against the old verifying shares, and the engine's
//!   key generation among the new parties with each one's share fixed to what it was dealt.

mod reshare;
mod setup;
mod share;
mod sign;
mod structure_setup;

pub(crate) use reshare::{Plan as ResharePlan, Refresh, Reshare, run_peers as reshare_peers};
pub(crate) use setup::Setup;
pub(crate) use share::{EngineShare, other_public_share_of_two, prove_dlog, verify_dlog};
pub(crate) use sign::Signing;
pub(crate) use structure_setup::StructureSetup;

use dkls23::protocols::{Abort, AbortKind, AbortReason, PartiesMessage};
use k256::elliptic_curve::Group;

use crate::error::Error;
use crate::types::PartyIndex;

pub(crate) type Curve = k256::Secp256k1;
pub(crate) type Party = dkls23::protocols::Party<Curve>;
pub(crate) type EnginePartyIndex = dkls23::protocols::PartyIndex;

/// Tessera index `i` is engine index `i + 1`.
pub(crate) fn engine_index(p: PartyIndex) -> EnginePartyIndex {
    // `Threshold` bounds indices to 0..16, so `i + 1` is never 0 and never overflows.
    #[allow(clippy::expect_used)]
    EnginePartyIndex::new(p.get().saturating_add(1)).expect("index + 1 is non-zero")
}

pub(crate) fn tessera_index(p: EnginePartyIndex) -> PartyIndex {
    PartyIndex::new(p.as_u8().saturating_sub(1))
}

/// Maps an engine abort to Tessera's error, keeping the blame and renumbering parties.
pub(crate) fn abort_error(abort: Abort) -> Error {
    let (culprit, what) = describe(&abort.reason);
    match (abort.kind, culprit) {
        (AbortKind::BanCounterparty(p), _) => Error::PartyMisbehaved {
            party: tessera_index(p),
            reason: what,
        },
        (AbortKind::Recoverable, Some(p)) => Error::CheckFailed {
            party: tessera_index(p),
            reason: what,
        },
        (AbortKind::Recoverable, None) => Error::Aborted(what),
    }
}

/// The party a failed check is about, and a description without engine party numbers.
fn describe(reason: &AbortReason) -> (Option<EnginePartyIndex>, String) {
    use AbortReason as R;
    let (party, text) = match reason {
        R::SessionBindingMismatch { counterparty } => (
            counterparty,
            "its message belongs to a different signing session",
        ),
        R::ProofVerificationFailed { counterparty } => (counterparty, "its proof does not verify"),
        R::CommitmentMismatch { counterparty } => {
            (counterparty, "its opening does not match its commitment")
        }
        R::TrivialInstancePoint { counterparty } => (counterparty, "its instance point is trivial"),
        R::OtConsistencyCheckFailed { counterparty } => {
            (counterparty, "the OT consistency check failed")
        }
        R::MultiplicationVerificationFailed { counterparty, .. } => {
            (counterparty, "the two-party multiplication check failed")
        }
        R::GammaUInconsistency { counterparty } => (counterparty, "its gamma_u is inconsistent"),
        R::ZeroShareDecommitFailed { counterparty } => (
            counterparty,
            "its zero-share seed does not match its commitment",
        ),
        R::ChainCodeCommitmentFailed { party } => (
            party,
            "its chain-code opening does not match its commitment",
        ),
        R::MissingCommittedPoint { party } => (party, "its committed point is missing"),
        R::UnexpectedSender { sender } => (sender, "it is not an expected sender"),
        R::DuplicateSender { sender } => (sender, "it sent two messages"),
        R::MissingMessageFromParty { party } => (party, "its message is missing"),
        other => return (None, other.to_string()),
    };
    (Some(*party), text.to_string())
}

/// Validation of one received payload: every failure names the sender.
pub(crate) struct Check {
    pub round: u8,
    pub from: PartyIndex,
    pub me: PartyIndex,
}

impl Check {
    pub(crate) fn fail(&self, reason: impl Into<String>) -> Error {
        Error::InvalidMessage {
            party: self.from,
            round: self.round,
            reason: reason.into(),
        }
    }

    /// The engine message's own routing must match the authenticated header.
    pub(crate) fn route(&self, parties: &PartiesMessage) -> Result<(), Error> {
        if parties.sender != engine_index(self.from) || parties.receiver != engine_index(self.me) {
            return Err(self.fail(format!(
                "inner routing says party {} to party {}, the envelope says {} to {}",
                tessera_index(parties.sender),
                tessera_index(parties.receiver),
                self.from,
                self.me
            )));
        }
        Ok(())
    }

    pub(crate) fn sender(&self, index: EnginePartyIndex) -> Result<(), Error> {
        if index != engine_index(self.from) {
            return Err(self.fail(format!(
                "inner sender index is party {}, the envelope says {}",
                tessera_index(index),
                self.from
            )));
        }
        Ok(())
    }

    /// The sender's epoch must be ours: checked first, before any cryptography, so an old share
    /// cannot be mixed with refreshed ones.
    pub(crate) fn epoch(&self, ours: u64, theirs: u64) -> Result<(), Error> {
        if theirs != ours {
            return Err(Error::EpochMismatch {
                party: self.from,
                ours,
                theirs,
            });
        }
        Ok(())
    }

    pub(crate) fn point(&self, point: &k256::AffinePoint, what: &str) -> Result<(), Error> {
        if bool::from(k256::ProjectivePoint::from(*point).is_identity()) {
            return Err(self.fail(format!("{what} is the point at infinity")));
        }
        Ok(())
    }

    pub(crate) fn scalar(&self, scalar: &k256::Scalar, what: &str) -> Result<(), Error> {
        if bool::from(scalar.is_zero()) {
            return Err(self.fail(format!("{what} is zero")));
        }
        Ok(())
    }
}
