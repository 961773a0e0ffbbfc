//! The public sessions: key generation, signing, refresh and resharing.
//!
//! Each is a [`Session`]: construct one per party, call `start`, route envelopes, take the output.
//! All parties of a run must be constructed with the same nonce and the same view of the run; the
//! session id binds both. The nonce should take a fresh contribution from every party
//! ([`joint_nonce`]), so that no party has to trust another for the run's freshness. Signing and
//! refresh also bind the share's epoch and the wallet's public key: parties that disagree on
//! either refuse each other's first message (a wrong session) instead of running the
//! cryptography on mismatched shares.
//!
//! A wallet is either t-of-n ([`KeygenSession`]) or keyed under an access structure
//! ([`StructureKeygenSession`], see [`crate::structure`]); [`SignSession`] signs for both, a
//! structure wallet with any minimal authorised quorum, whose members sign with their additive
//! shares for that quorum. Both session ids also bind the structure. [`ReshareSession`] moves a
//! wallet's key to a new structure (parties added or removed, thresholds changed); refresh of a
//! structure wallet is a resharing to the same structure.

use std::collections::BTreeSet;

use crate::derivation::DerivationPath;
use crate::ecdsa::Signature;
use crate::engine::dkls23::{
    Refresh, Reshare, ResharePlan, Setup, Signing, StructureSetup, reshare_peers,
};
use crate::error::{Error, Result};
use crate::session::{Driver, session_newtype};
use crate::share::{KeyShare, WalletPublic};
use crate::structure::WalletStructure;
use crate::types::{PartyIndex, Protocol, SessionContext, Threshold, WalletId, random_bytes};
use sha2::{Digest, Sha256};

#[cfg(doc)]
use crate::session::Session;

/// A fresh random nonce for a new run.
#[must_use]
pub fn fresh_nonce() -> [u8; 32] {
    random_bytes()
}

/// Domain tag of [`joint_nonce`].
const JOINT_NONCE_TAG: &[u8] = b"tessera/joint-nonce/v1";

/// The nonce of a run to which each party contributed a fresh nonce of its own: SHA-256 over a
/// domain tag, the number of contributions and each contribution, in party order. As long as one
/// contribution is fresh the result is, so every party that contributed knows the run's session
/// id is new, whatever the others sent.
#[must_use]
pub fn joint_nonce(contributions: &[[u8; 32]]) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(JOINT_NONCE_TAG);
    h.update((contributions.len() as u64).to_be_bytes());
    for nonce in contributions {
        h.update(nonce);
    }
    h.finalize().into()
}

/// Binds what a run on an existing share must agree on beyond the party set: the share's epoch
/// and the wallet's public key.
fn bind_share<'a>(context: SessionContext<'a>, share: &KeyShare) -> SessionContext<'a> {
    context
        .field(&share.epoch.to_be_bytes())
        .field(&share.public_key.to_compressed())
}

fn peers(me: PartyIndex, set: impl Iterator<Item = PartyIndex>) -> BTreeSet<PartyIndex> {
    set.filter(|&p| p != me).collect()
}

/// Distributed key generation of one party: after four rounds every party holds a [`KeyShare`]
/// of epoch 0 of one new public key, which no party ever knew the private key of.
pub struct KeygenSession(Driver<Setup>);
session_newtype!(KeygenSession, KeyShare);

impl KeygenSession {
    /// Party `me` of a new `threshold` wallet `wallet_id`. All `n` parties take part.
    ///
    /// # Errors
    /// [`Error::InvalidParameters`] when `me` is not below `n`.
    pub fn new(
        wallet_id: WalletId,
        threshold: Threshold,
        me: PartyIndex,
        nonce: &[u8; 32],
    ) -> Result<Self> {
        let threshold = Threshold::new(threshold.t, threshold.n)?;
        if !threshold.contains(me) {
            return Err(Error::InvalidParameters(format!(
                "party {me} is not one of the {} parties",
                threshold.n
            )));
        }
        let parties: Vec<_> = threshold.parties().collect();
        let session_id = SessionContext {
            nonce,
            wallet: &wallet_id,
            protocol: Protocol::Keygen,
            threshold,
            parties: &parties,
            extra: Vec::new(),
        }
        .session_id();
        let rounds = Setup::keygen(session_id, wallet_id, me, threshold)?;
        Ok(KeygenSession(Driver::new(
            session_id,
            Protocol::Keygen,
            me,
            peers(me, threshold.parties()),
            rounds,
        )))
    }
}

/// Distributed key generation of one party of a wallet under an access structure: every party
/// deals a random secret down the structure with Feldman commitments, checks what it is dealt
/// and names a dealer whose dealing does not check; after four rounds every party holds a
/// [`KeyShare`] of epoch 0 (share format 2) with which any authorised quorum signs
/// ([`SignSession`]). See `engine/dkls23/structure_setup.rs` for the rounds.
pub struct StructureKeygenSession(pub(crate) Driver<StructureSetup>);
session_newtype!(StructureKeygenSession, KeyShare);

impl StructureKeygenSession {
    /// Party `me` (the `me`-th label of `structure`) of a new wallet `wallet_id`. All parties of
    /// the structure take part. The session id binds the structure's canonical text.
    ///
    /// # Errors
    /// [`Error::InvalidParameters`] when `me` is not a party of the structure.
    pub fn new(
        wallet_id: WalletId,
        structure: &WalletStructure,
        me: PartyIndex,
        nonce: &[u8; 32],
    ) -> Result<Self> {
        let n = u8::try_from(structure.party_count())
            .map_err(|_| Error::InvalidParameters("too many parties".into()))?;
        let threshold = Threshold::new(n, n)?;
        if !threshold.contains(me) {
            return Err(Error::InvalidParameters(format!(
                "party {me} is not one of the structure's {n} parties"
            )));
        }
        let parties: Vec<_> = threshold.parties().collect();
        let session_id = SessionContext {
            nonce,
            wallet: &wallet_id,
            protocol: Protocol::Keygen,
            threshold,
            parties: &parties,
            extra: Vec::new(),
        }
        .field(structure.to_string().as_bytes())
        .session_id();
        let rounds = StructureSetup::new(session_id, wallet_id, me, structure.clone())?;
        Ok(StructureKeygenSession(Driver::new(
            session_id,
            Protocol::Keygen,
            me,
            peers(me, threshold.parties()),
            rounds,
        )))
    }
}

/// Share refresh of one party: all `n` parties take part; each ends with a new [`KeyShare`] of the
/// same public key at the next epoch. Old shares of the wallet cannot sign with new ones.
///
/// A t-of-n wallet runs the engine's complete refresh; a wallet under an access structure is
/// reshared to the same structure ([`ReshareSession`]) by the minimal quorum that the
/// structure's reconstruction coefficients select from all its parties, every party receiving
/// a new share.
pub struct RefreshSession(Driver<Refresh>);
session_newtype!(RefreshSession, KeyShare);

impl RefreshSession {
    /// Refreshes `share`.
    ///
    /// # Errors
    /// [`Error::InvalidParameters`] for an inconsistent structure share.
    pub fn new(share: &KeyShare, nonce: &[u8; 32]) -> Result<Self> {
        if share.structure.is_some() {
            let structure = share.structure();
            let labels: Vec<&str> = structure.labels().iter().map(String::as_str).collect();
            let quorum: Vec<PartyIndex> = structure
                .tree()
                .reconstruction_coefficients(&labels)
                .ok_or_else(|| Error::InvalidParameters("the structure authorises nobody".into()))?
                .keys()
                .filter_map(|label| structure.party(label))
                .collect();
            let request = ReshareRequest {
                nonce: *nonce,
                quorum,
                new_structure: structure,
            };
            let (session_id, me, peers, rounds) =
                reshare_parts(share.wallet_public(), Some(share), None, &request)?;
            return Ok(RefreshSession(Driver::new(
                session_id,
                Protocol::Refresh,
                me,
                peers,
                Refresh::Structure(Box::new(rounds)),
            )));
        }
        let threshold = share.threshold;
        let parties: Vec<_> = threshold.parties().collect();
        let session_id = bind_share(
            SessionContext {
                nonce,
                wallet: &share.wallet_id,
                protocol: Protocol::Refresh,
                threshold,
                parties: &parties,
                extra: Vec::new(),
            },
            share,
        )
        .session_id();
        let rounds = Setup::refresh(session_id, share);
        Ok(RefreshSession(Driver::new(
            session_id,
            Protocol::Refresh,
            share.party,
            peers(share.party, threshold.parties()),
            Refresh::Shamir(Box::new(rounds)),
        )))
    }
}

/// What a resharing does: who deals, and the structure it reshares to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReshareRequest {
    /// The run's nonce, the same for every party.
    pub nonce: [u8; 32],
    /// The dealers: a minimal authorised quorum of the wallet's current structure (party
    /// indices of that structure).
    pub quorum: Vec<PartyIndex>,
    /// The structure the key is reshared to. A party of both structures is the one with the
    /// same label.
    pub new_structure: WalletStructure,
}

/// Resharing of one party: an authorised quorum of the wallet's current structure deals its
/// additive shares down `new_structure` (Desmedt–Jajodia redistribution with Feldman
/// verification, see `engine/dkls23/reshare.rs`); every party of the new structure ends with a
/// [`KeyShare`] (share format 2) of the same public key and chain code at the next epoch. A
/// dealer that is not in the new structure ends with `None`. Parties that are not in the new
/// structure keep old shares that no longer sign with the new ones.
///
/// Parties of the run, by index: the new structure's parties (their index in it), then the
/// quorum's members that are not in the new structure, in the old structure's order
/// ([`ReshareSession::run_index`]). Envelopes carry [`Protocol::Refresh`]; the session id binds
/// the nonce, the wallet's public facts ([`WalletPublic`], epoch included), the quorum, the new
/// structure and that mapping.
pub struct ReshareSession(pub(crate) Driver<Reshare>);
session_newtype!(ReshareSession, Option<KeyShare>);

impl ReshareSession {
    /// A party holding `share` at the epoch being reshared: a dealer if it is in
    /// `request.quorum`, else a party of the new structure (same label) that receives a new
    /// share.
    ///
    /// # Errors
    /// [`Error::Quorum`] when the quorum is not a minimal authorised quorum of the wallet's
    /// structure (before any message, saying what is missing); [`Error::InvalidParameters`] when
    /// this party neither deals nor is in the new structure.
    pub fn new(share: &KeyShare, request: &ReshareRequest) -> Result<Self> {
        let (session_id, me, peers, rounds) =
            reshare_parts(share.wallet_public(), Some(share), None, request)?;
        Ok(ReshareSession(Driver::new(
            session_id,
            Protocol::Refresh,
            me,
            peers,
            rounds,
        )))
    }

    /// A party joining the wallet as `label` of the new structure, holding no share of it
    /// (a new device, or a party whose old share is not used). `wallet` must come from a
    /// source this party trusts (at least its public key): the dealt key is checked against it,
    /// and parties with another view of it are in another session.
    ///
    /// # Errors
    /// As [`ReshareSession::new`]; [`Error::InvalidParameters`] when `label` is not a party of
    /// the new structure or is a dealer (a dealer needs its share), or the verifying shares in
    /// `wallet` do not combine to its key.
    pub fn joining(wallet: &WalletPublic, label: &str, request: &ReshareRequest) -> Result<Self> {
        let (session_id, me, peers, rounds) =
            reshare_parts(wallet.clone(), None, Some(label), request)?;
        Ok(ReshareSession(Driver::new(
            session_id,
            Protocol::Refresh,
            me,
            peers,
            rounds,
        )))
    }

    /// The run index of the party labelled `label` in a resharing of `wallet` by `request`
    /// (see the type's documentation), if it takes part.
    ///
    /// # Errors
    /// As [`ReshareSession::new`] for the quorum.
    pub fn run_index(
        wallet: &WalletPublic,
        request: &ReshareRequest,
        label: &str,
    ) -> Result<Option<PartyIndex>> {
        let plan = ResharePlan::new(
            wallet.clone(),
            &request.quorum,
            request.new_structure.clone(),
        )?;
        Ok(match request.new_structure.party(label) {
            Some(p) => Some(p),
            None => wallet
                .structure
                .party(label)
                .and_then(|old| plan.run_index_of_old(old)),
        })
    }
}

/// The session id, our run index, our peers and our rounds of a resharing of `wallet`: as the
/// holder of `share`, or joining as `label`.
fn reshare_parts(
    wallet: WalletPublic,
    share: Option<&KeyShare>,
    label: Option<&str>,
    request: &ReshareRequest,
) -> Result<(
    crate::types::SessionId,
    PartyIndex,
    BTreeSet<PartyIndex>,
    Reshare,
)> {
    let plan = ResharePlan::new(wallet, &request.quorum, request.new_structure.clone())?;
    let me = match (share, label) {
        (Some(share), _) => {
            if share.wallet_id != plan.old.wallet_id {
                return Err(Error::InvalidParameters(
                    "the share belongs to another wallet".into(),
                ));
            }
            plan.run_index_of_old(share.party).ok_or_else(|| {
                Error::InvalidParameters(format!(
                    "party {} neither deals nor is a party of the new structure",
                    share.party
                ))
            })?
        }
        (None, Some(label)) => {
            if plan
                .old
                .structure
                .party(label)
                .is_some_and(|p| plan.quorum.coefficient(p).is_some())
            {
                return Err(Error::InvalidParameters(format!(
                    "\"{label}\" deals in this resharing: it takes part with its share"
                )));
            }
            plan.new_structure.party(label).ok_or_else(|| {
                Error::InvalidParameters(format!("\"{label}\" is not a party of the new structure"))
            })?
        }
        (None, None) => return Err(Error::OutOfOrder("a resharing party needs a role")),
    };
    let n = u8::try_from(plan.new_structure.party_count())
        .map_err(|_| Error::InvalidParameters("too many parties".into()))?;
    let parties = plan.run_parties();
    let session_id = plan
        .bind(SessionContext {
            nonce: &request.nonce,
            wallet: &plan.old.wallet_id,
            protocol: Protocol::Refresh,
            threshold: Threshold::new(n, n)?,
            parties: &parties,
            extra: Vec::new(),
        })
        .session_id();
    let peers = reshare_peers(&plan, me);
    let rounds = Reshare::new(session_id, me, plan, share)?;
    Ok((session_id, me, peers, rounds))
}

/// What to sign and with whom.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SignRequest {
    /// The run's nonce, the same for every signer.
    pub nonce: [u8; 32],
    /// Distinct party indices, this party among them: exactly `t` of a t-of-n wallet, or a
    /// minimal authorised quorum of a wallet under an access structure.
    pub signers: Vec<PartyIndex>,
    /// The 32-byte digest to sign (e.g. a transaction hash).
    pub digest: [u8; 32],
    /// Sign with the non-hardened child key at this path (`m` for the wallet key itself).
    pub path: DerivationPath,
}

/// Checks a signer set for a `threshold` wallet: exactly `t` distinct parties, each below `n`.
/// Returns them in ascending order.
///
/// # Errors
/// [`Error::InvalidParameters`] saying what is wrong.
pub fn validate_signers(
    threshold: Threshold,
    signers: &[PartyIndex],
) -> Result<BTreeSet<PartyIndex>> {
    let mut set = BTreeSet::new();
    for &p in signers {
        if !threshold.contains(p) {
            return Err(Error::InvalidParameters(format!(
                "signer {p} is not one of the {} parties",
                threshold.n
            )));
        }
        if !set.insert(p) {
            return Err(Error::InvalidParameters(format!(
                "party {p} appears twice in the signer set"
            )));
        }
    }
    if set.len() != usize::from(threshold.t) {
        return Err(Error::InvalidParameters(format!(
            "a {threshold} wallet signs with exactly {} parties, {} given",
            threshold.t,
            set.len()
        )));
    }
    Ok(set)
}

/// Threshold signing of one party: three rounds, then a [`Signature`] verified under the
/// (derived) public key.
pub struct SignSession(Driver<Signing>);
session_newtype!(SignSession, Signature);

impl SignSession {
    /// Signs `request.digest` with `share`.
    ///
    /// # Errors
    /// [`Error::InvalidParameters`] when the signer set is not exactly `t` distinct parties of the
    /// wallet including this one; for a structure wallet, [`Error::Quorum`] when the signers are
    /// not authorised (saying what is missing) or include parties the structure does not need;
    /// [`Error::InvalidDerivationPath`] for an invalid child.
    pub fn new(share: &KeyShare, request: &SignRequest) -> Result<Self> {
        if share.structure.is_some() {
            return Self::for_quorum(share, request);
        }
        let threshold = share.threshold;
        let signers = validate_signers(threshold, &request.signers)?;
        if !signers.contains(&share.party) {
            return Err(Error::InvalidParameters(format!(
                "this share (party {}) is not in the signer set",
                share.party
            )));
        }
        let parties: Vec<_> = signers.iter().copied().collect();
        let party = share.engine.signing_party(&request.path, &parties)?;
        Self::start(share, request, parties, None, party)
    }
}

impl SignSession {
    /// Signing by a quorum of a structure wallet: each member signs with its additive share for
    /// the quorum (see `EngineShare::quorum_party` for the mapping onto the engine). The quorum is
    /// checked before anything is sent; the session id binds the structure and the quorum.
    fn for_quorum(share: &KeyShare, request: &SignRequest) -> Result<Self> {
        let key = share.structure.as_ref().ok_or(Error::OutOfOrder(
            "a quorum signature needs a structure share",
        ))?;
        let quorum = key.structure.check_quorum(&request.signers)?;
        let coefficient = quorum.coefficient(share.party).ok_or_else(|| {
            Error::InvalidParameters(format!(
                "this share (party {}) is not in the signer set",
                share.party
            ))
        })?;
        let parties: Vec<PartyIndex> = quorum.members().collect();
        if parties.len() < 2 {
            return Err(Error::InvalidParameters(
                "a quorum of one party cannot run the two-party signing protocol".into(),
            ));
        }
        let party = share
            .engine
            .quorum_party(&request.path, &parties, coefficient)?;
        Self::start(share, request, parties, Some(&key.structure), party)
    }

    /// The session of `parties` signing `request` with this party's engine state `party`; a
    /// structure wallet's structure is bound into the session id too.
    fn start(
        share: &KeyShare,
        request: &SignRequest,
        parties: Vec<PartyIndex>,
        structure: Option<&WalletStructure>,
        party: crate::engine::dkls23::Party,
    ) -> Result<Self> {
        let mut context = bind_share(
            SessionContext {
                nonce: &request.nonce,
                wallet: &share.wallet_id,
                protocol: Protocol::Sign,
                threshold: share.threshold,
                parties: &parties,
                extra: Vec::new(),
            },
            share,
        )
        .field(&request.digest)
        .field(&request.path.to_bytes());
        if let Some(structure) = structure {
            context = context.field(structure.to_string().as_bytes());
        }
        let session_id = context.session_id();
        let rounds = Signing::new(
            session_id.as_bytes(),
            share.party,
            share.epoch,
            party,
            &parties,
            request.digest,
        )?;
        Ok(SignSession(Driver::new(
            session_id,
            Protocol::Sign,
            share.party,
            peers(share.party, parties.iter().copied()),
            rounds,
        )))
    }
}
