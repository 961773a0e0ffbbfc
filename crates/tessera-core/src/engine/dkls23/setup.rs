//! Key generation and refresh: the same four rounds.
//!
//! | round | sent to each other party | engine phase run when the round is complete |
//! |---|---|---|
//! | 1 | epoch, the Shamir fragment of our polynomial for that party (secret) | phase 2 |
//! | 2 | commitment to our proof; zero-share seed commitment; (keygen) chain-code commitment | phase 3 |
//! | 3 | echo of round 2's broadcasts; our proof; zero-share seed opening; multiplication set-up; (keygen) chain-code opening | phase 4 |
//! | 4 | confirmation: hash of round 3's broadcasts, the public key, the chain code and the epoch | done |
//!
//! Keygen follows the paper's key generation (Protocol 9.1 of eprint 2023/765 with the set-up of
//! §3); refresh is the crate's "complete refresh": the same rounds with polynomials whose constant
//! term is zero, so each share moves and the public key stays.
//! Broadcast parts are sent as identical copies; round 3 and round 4 carry an echo of what each
//! party received, and any difference aborts ([`Error::BroadcastMismatch`],
//! [`Error::ConfirmationMismatch`]). The fragments of round 1 must travel over a confidential
//! channel (TLS, or the device-to-device Noise channel).

use std::collections::BTreeMap;

use dkls23::DkgSession;
use dkls23::protocols::Parameters;
use dkls23::protocols::dkg::{
    BroadcastDerivationPhase2to4, BroadcastDerivationPhase3to4, KeepInitMulPhase3to4,
    KeepInitZeroSharePhase2to3, KeepInitZeroSharePhase3to4, ProofCommitment,
    TransmitInitMulPhase3to4, TransmitInitZeroSharePhase2to4, TransmitInitZeroSharePhase3to4,
};
use dkls23::utilities::proofs::DLogProof;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use zeroize::Zeroize;

use super::{Check, Curve, EngineShare, Party, abort_error, engine_index};
use crate::ecdsa::PublicKey;
use crate::error::{Error, Result};
use crate::session::{Advance, Outgoing, Rounds, broadcast_echo, decode, encode};
use crate::share::KeyShare;
use crate::types::{PartyIndex, SessionId, Threshold, WalletId};

type Hash = [u8; 32];

#[derive(Serialize, Deserialize)]
pub(crate) struct Round1 {
    epoch: u64,
    fragment: k256::Scalar,
}

impl Round1 {
    /// The fragment (secret) this message carries.
    pub(crate) fn fragment(&self) -> &k256::Scalar {
        &self.fragment
    }
}

impl Round3 {
    /// The point of the sender's engine share, from its proof of knowledge.
    pub(crate) fn proven_point(&self) -> &k256::AffinePoint {
        &self.proof.point
    }
}

impl Drop for Round1 {
    fn drop(&mut self) {
        self.fragment.zeroize();
    }
}

#[derive(Serialize, Deserialize)]
pub(crate) struct Round2 {
    commitment: Hash,
    chain_code_commitment: Option<BroadcastDerivationPhase2to4>,
    zero_share: TransmitInitZeroSharePhase2to4,
}

#[derive(Serialize, Deserialize)]
pub(crate) struct Round3 {
    echo: Hash,
    proof: DLogProof<Curve>,
    chain_code: Option<BroadcastDerivationPhase3to4>,
    zero_share: TransmitInitZeroSharePhase3to4,
    multiplication: TransmitInitMulPhase3to4<Curve>,
}

#[derive(Serialize, Deserialize)]
pub(crate) struct Round4 {
    confirmation: Hash,
}

pub(crate) enum Message {
    R1(Round1),
    R2(Round2),
    R3(Box<Round3>),
    R4(Round4),
}

/// The part of round 2 every party must see identically.
#[derive(Serialize)]
struct Round2Broadcast<'a> {
    commitment: &'a Hash,
    chain_code_commitment: &'a Option<BroadcastDerivationPhase2to4>,
}

/// The part of round 3 every party must see identically.
#[derive(Serialize)]
struct Round3Broadcast<'a> {
    proof: &'a DLogProof<Curve>,
    chain_code: &'a Option<BroadcastDerivationPhase3to4>,
}

/// Engine state that differs between keygen and refresh.
enum Mode {
    Keygen {
        dkg: Option<Box<DkgSession<Curve>>>,
        /// Fragments dealt by the caller instead of the engine's own polynomial (a structure
        /// wallet's sub-shares, [`super::StructureSetup`]); `None` for a Shamir keygen.
        dealt: Option<Vec<k256::Scalar>>,
    },
    Refresh {
        old: Box<Party>,
        correction: Option<k256::Scalar>,
        zero_kept_2: Option<BTreeMap<dkls23::protocols::PartyIndex, KeepInitZeroSharePhase2to3>>,
        zero_kept_3: Option<BTreeMap<dkls23::protocols::PartyIndex, KeepInitZeroSharePhase3to4>>,
        mul_kept: Option<BTreeMap<dkls23::protocols::PartyIndex, KeepInitMulPhase3to4<Curve>>>,
    },
}

/// Keygen or refresh rounds of one party.
pub(crate) struct Setup {
    session_id: SessionId,
    wallet_id: WalletId,
    me: PartyIndex,
    threshold: Threshold,
    /// Epoch of the result: 0 for keygen, old + 1 for refresh. Round 1 carries the epoch the
    /// parties start from, which must match ours.
    start_epoch: u64,
    mode: Mode,
    own_fragment: Option<k256::Scalar>,
    /// The engine share this party must end with ([`Setup::fix_share`]): our own round-1
    /// fragment is then chosen, once the others' have arrived, so that the fragments add up to it.
    fixed_share: Option<k256::Scalar>,
    /// Our own round-2 and round-3 messages' broadcast parts and proof.
    own_proof_commitment: Option<ProofCommitment<Curve>>,
    own_chain_code_commitment: Option<BroadcastDerivationPhase2to4>,
    own_chain_code: Option<BroadcastDerivationPhase3to4>,
    round2: BTreeMap<PartyIndex, Round2>,
    echo2: Hash,
    result: Option<(KeyShare, Hash)>,
}

impl Setup {
    pub(crate) fn keygen(
        session_id: SessionId,
        wallet_id: WalletId,
        me: PartyIndex,
        threshold: Threshold,
    ) -> Result<Self> {
        let parameters = Parameters::new(threshold.t, threshold.n)
            .map_err(|e| Error::InvalidParameters(e.to_string()))?;
        let dkg = DkgSession::new(parameters, engine_index(me), session_id.as_bytes().to_vec());
        Ok(Self::new(
            session_id,
            wallet_id,
            me,
            threshold,
            0,
            Mode::Keygen {
                dkg: Some(Box::new(dkg)),
                dealt: None,
            },
        ))
    }

    /// A keygen whose round-1 fragments are `dealt` (one per party, in party order) instead of
    /// the engine's polynomial: each party's engine share becomes the sum of what it was dealt,
    /// and the engine's proofs, zero-share and multiplication set-up run as in a Shamir keygen.
    pub(crate) fn keygen_with_fragments(
        session_id: SessionId,
        wallet_id: WalletId,
        me: PartyIndex,
        threshold: Threshold,
        mut dealt: zeroize::Zeroizing<Vec<k256::Scalar>>,
    ) -> Result<Self> {
        let mut setup = Self::keygen(session_id, wallet_id, me, threshold)?;
        if dealt.len() != usize::from(threshold.n) {
            return Err(Error::InvalidParameters(
                "one dealt fragment per party is needed".into(),
            ));
        }
        if let Mode::Keygen { dealt: slot, .. } = &mut setup.mode {
            // Moved out of the zeroizing wrapper into the state, which zeroizes it on drop.
            *slot = Some(std::mem::take(&mut *dealt));
        }
        Ok(setup)
    }

    /// Fixes the engine share this keygen party ends with to `share`, instead of the sum of
    /// the fragments its polynomial and the others' give it: its own fragment becomes
    /// `share − Σ fragments received` when round 1 completes. The engine's keygen is n-of-n
    /// here (a resharing's new parties, [`super::Reshare`]), where any set of shares lies on a
    /// polynomial of degree n − 1, so the engine accepts it; the fragments sent to the others
    /// stay those of our random polynomial, which hide `share` from them. Call before round 1
    /// completes.
    pub(crate) fn fix_share(&mut self, share: k256::Scalar) -> Result<()> {
        if !self.is_keygen() || self.threshold.t != self.threshold.n {
            return Err(Error::InvalidParameters(
                "a fixed share needs an n-of-n keygen".into(),
            ));
        }
        self.fixed_share = Some(share);
        Ok(())
    }

    pub(crate) fn refresh(session_id: SessionId, share: &KeyShare) -> Self {
        let old = Box::new((*share.engine.0).clone());
        Self::new(
            session_id,
            share.wallet_id,
            share.party,
            share.threshold,
            share.epoch,
            Mode::Refresh {
                old,
                correction: None,
                zero_kept_2: None,
                zero_kept_3: None,
                mul_kept: None,
            },
        )
    }

    fn new(
        session_id: SessionId,
        wallet_id: WalletId,
        me: PartyIndex,
        threshold: Threshold,
        start_epoch: u64,
        mode: Mode,
    ) -> Self {
        Setup {
            session_id,
            wallet_id,
            me,
            threshold,
            start_epoch,
            mode,
            own_fragment: None,
            fixed_share: None,
            own_proof_commitment: None,
            own_chain_code_commitment: None,
            own_chain_code: None,
            round2: BTreeMap::new(),
            echo2: [0; 32],
            result: None,
        }
    }

    fn is_keygen(&self) -> bool {
        matches!(self.mode, Mode::Keygen { .. })
    }

    fn result_epoch(&self) -> u64 {
        if self.is_keygen() {
            0
        } else {
            self.start_epoch + 1
        }
    }

    fn out_of_order() -> Error {
        Error::OutOfOrder("keygen/refresh phase called out of order")
    }

    fn round2_broadcast(m: &Round2) -> Vec<u8> {
        encode(&Round2Broadcast {
            commitment: &m.commitment,
            chain_code_commitment: &m.chain_code_commitment,
        })
    }

    fn round3_broadcast(
        proof: &DLogProof<Curve>,
        chain_code: &Option<BroadcastDerivationPhase3to4>,
    ) -> Vec<u8> {
        encode(&Round3Broadcast { proof, chain_code })
    }

    fn confirmation(&self, echo3: &Hash, share: &KeyShare) -> Hash {
        let mut h = Sha256::new();
        h.update(b"tessera/setup-confirmation/v1");
        h.update(self.session_id.as_bytes());
        h.update(echo3);
        h.update(share.public_key.to_compressed());
        h.update(share.chain_code());
        h.update(share.epoch.to_be_bytes());
        h.finalize().into()
    }

    fn round1_to_2(&mut self, received: BTreeMap<PartyIndex, Message>) -> Result<Outgoing> {
        let mut own = self.own_fragment.take().ok_or_else(Self::out_of_order)?;
        let mut received = received;
        if let Some(mut fixed) = self.fixed_share.take() {
            own = fixed;
            fixed.zeroize();
            for m in received.values() {
                if let Message::R1(m) = m {
                    own -= m.fragment;
                }
            }
        }
        // Fragments in the engine's party order (ours included).
        let mut fragments = Vec::with_capacity(usize::from(self.threshold.n));
        for p in self.threshold.parties() {
            if p == self.me {
                fragments.push(own);
            } else if let Some(Message::R1(m)) = received.remove(&p) {
                fragments.push(m.fragment);
            } else {
                return Err(Self::out_of_order());
            }
        }
        let (proof_commitment, zero_transmit, chain_code_commitment) = match &mut self.mode {
            Mode::Keygen { dkg, .. } => {
                let dkg = dkg.as_mut().ok_or_else(Self::out_of_order)?;
                let (pc, zero, bip) = dkg.phase2(&fragments).map_err(abort_error)?;
                (pc, zero, Some(bip))
            }
            Mode::Refresh {
                old,
                correction,
                zero_kept_2,
                ..
            } => {
                let (value, pc, keep, zero) =
                    old.refresh_complete_phase2(self.session_id.as_bytes(), &fragments);
                *correction = Some(value);
                *zero_kept_2 = Some(keep);
                (pc, zero, None)
            }
        };
        fragments.zeroize();
        let mut out = Outgoing::new();
        for zero_share in zero_transmit {
            let to = super::tessera_index(zero_share.parties.receiver);
            let msg = Round2 {
                commitment: proof_commitment.commitment,
                chain_code_commitment: chain_code_commitment.clone(),
                zero_share,
            };
            out.insert(to, encode(&msg));
        }
        self.own_proof_commitment = Some(proof_commitment);
        self.own_chain_code_commitment = chain_code_commitment;
        Ok(out)
    }

    fn round2_to_3(&mut self, received: BTreeMap<PartyIndex, Message>) -> Result<Outgoing> {
        let own_pc = self
            .own_proof_commitment
            .as_ref()
            .ok_or_else(Self::out_of_order)?;
        let mut broadcasts = BTreeMap::new();
        broadcasts.insert(
            self.me,
            encode(&Round2Broadcast {
                commitment: &own_pc.commitment,
                chain_code_commitment: &self.own_chain_code_commitment,
            }),
        );
        for (p, m) in received {
            let Message::R2(m) = m else {
                return Err(Self::out_of_order());
            };
            broadcasts.insert(p, Self::round2_broadcast(&m));
            self.round2.insert(p, m);
        }
        self.echo2 = broadcast_echo(&self.session_id, 2, &broadcasts);

        let (zero_transmit, mul_transmit, chain_code) = match &mut self.mode {
            Mode::Keygen { dkg, .. } => {
                let dkg = dkg.as_mut().ok_or_else(Self::out_of_order)?;
                let (zero, mul, bip) = dkg.phase3().map_err(abort_error)?;
                (zero, mul, Some(bip))
            }
            Mode::Refresh {
                old,
                zero_kept_2,
                zero_kept_3,
                mul_kept,
                ..
            } => {
                let kept = zero_kept_2.take().ok_or_else(Self::out_of_order)?;
                let (z3, zero, mk, mul) =
                    old.refresh_complete_phase3(self.session_id.as_bytes(), &kept);
                *zero_kept_3 = Some(z3);
                *mul_kept = Some(mk);
                (zero, mul, None)
            }
        };
        let mut mul_by_party: BTreeMap<_, _> = mul_transmit
            .into_iter()
            .map(|m| (super::tessera_index(m.parties.receiver), m))
            .collect();
        let mut out = Outgoing::new();
        for zero_share in zero_transmit {
            let to = super::tessera_index(zero_share.parties.receiver);
            let multiplication = mul_by_party.remove(&to).ok_or_else(Self::out_of_order)?;
            let msg = Round3 {
                echo: self.echo2,
                proof: own_pc.proof.clone(),
                chain_code: chain_code.clone(),
                zero_share,
                multiplication,
            };
            out.insert(to, encode(&msg));
        }
        self.own_chain_code = chain_code;
        Ok(out)
    }

    fn round3_to_4(&mut self, received: BTreeMap<PartyIndex, Message>) -> Result<Outgoing> {
        let own_pc = self
            .own_proof_commitment
            .take()
            .ok_or_else(Self::out_of_order)?;
        let mut proofs = vec![own_pc];
        let mut zero2 = Vec::new();
        let mut zero3 = Vec::new();
        let mut mul = Vec::new();
        let mut chain_code_commitments = BTreeMap::new();
        let mut chain_codes = BTreeMap::new();
        let mut broadcasts3 = BTreeMap::new();
        broadcasts3.insert(
            self.me,
            Self::round3_broadcast(&proofs[0].proof, &self.own_chain_code),
        );
        if let (Some(c2), Some(c3)) = (&self.own_chain_code_commitment, &self.own_chain_code) {
            chain_code_commitments.insert(engine_index(self.me), c2.clone());
            chain_codes.insert(engine_index(self.me), c3.clone());
        }
        for (p, m) in received {
            let Message::R3(m) = m else {
                return Err(Self::out_of_order());
            };
            let m = *m;
            if m.echo != self.echo2 {
                return Err(Error::BroadcastMismatch {
                    reported_by: p,
                    round: 2,
                });
            }
            let r2 = self.round2.remove(&p).ok_or_else(Self::out_of_order)?;
            broadcasts3.insert(p, Self::round3_broadcast(&m.proof, &m.chain_code));
            proofs.push(ProofCommitment {
                index: engine_index(p),
                proof: m.proof,
                commitment: r2.commitment,
            });
            zero2.push(r2.zero_share);
            zero3.push(m.zero_share);
            mul.push(m.multiplication);
            if let (Some(c2), Some(c3)) = (r2.chain_code_commitment, m.chain_code) {
                chain_code_commitments.insert(engine_index(p), c2);
                chain_codes.insert(engine_index(p), c3);
            }
        }
        let echo3 = broadcast_echo(&self.session_id, 3, &broadcasts3);
        let party = match &mut self.mode {
            Mode::Keygen { dkg, .. } => {
                let dkg = dkg.take().ok_or_else(Self::out_of_order)?;
                let (party, _package) = dkg
                    .phase4(
                        &proofs,
                        &zero2,
                        &zero3,
                        &mul,
                        &chain_code_commitments,
                        &chain_codes,
                        |_| String::new(),
                    )
                    .map_err(abort_error)?;
                party
            }
            Mode::Refresh {
                old,
                correction,
                zero_kept_3,
                mul_kept,
                ..
            } => {
                let correction = correction.take().ok_or_else(Self::out_of_order)?;
                let zk = zero_kept_3.take().ok_or_else(Self::out_of_order)?;
                let mk = mul_kept.take().ok_or_else(Self::out_of_order)?;
                let party = old
                    .refresh_complete_phase4(
                        self.session_id.as_bytes(),
                        &correction,
                        &proofs,
                        &zk,
                        &zero2,
                        &zero3,
                        &mk,
                        &mul,
                    )
                    .map_err(abort_error)?;
                if party.pk != old.pk {
                    return Err(Error::Aborted("refresh changed the public key".into()));
                }
                party
            }
        };
        let share = KeyShare {
            wallet_id: self.wallet_id,
            party: self.me,
            threshold: self.threshold,
            epoch: self.result_epoch(),
            public_key: PublicKey::from_affine(party.pk)?,
            engine: EngineShare(Box::new(party)),
            structure: None,
        };
        let confirmation = self.confirmation(&echo3, &share);
        let mut out = Outgoing::new();
        for p in self.threshold.parties().filter(|&p| p != self.me) {
            out.insert(p, encode(&Round4 { confirmation }));
        }
        self.result = Some((share, confirmation));
        Ok(out)
    }
}

impl Drop for Setup {
    fn drop(&mut self) {
        // The DKG session and the engine's party zeroize themselves; these are ours.
        self.own_fragment.zeroize();
        self.fixed_share.zeroize();
        if let Mode::Keygen {
            dealt: Some(dealt), ..
        } = &mut self.mode
        {
            dealt.zeroize();
        }
        if let Mode::Refresh {
            correction,
            zero_kept_2,
            zero_kept_3,
            mul_kept,
            ..
        } = &mut self.mode
        {
            correction.zeroize();
            for kept in zero_kept_2.iter_mut().flat_map(BTreeMap::values_mut) {
                kept.seed.zeroize();
                kept.salt.zeroize();
            }
            for kept in zero_kept_3.iter_mut().flat_map(BTreeMap::values_mut) {
                kept.seed.zeroize();
            }
            // As the engine's own DkgSession does for the same state.
            for kept in mul_kept.iter_mut().flat_map(BTreeMap::values_mut) {
                kept.ot_sender.s.zeroize();
                kept.ot_receiver.seed.zeroize();
                kept.nonce.zeroize();
                kept.vec_r.zeroize();
                kept.correlation.zeroize();
            }
        }
    }
}

impl Rounds for Setup {
    type Message = Message;
    type Output = KeyShare;
    const ROUNDS: u8 = 4;

    fn start(&mut self) -> Result<Outgoing> {
        let mut fragments = match &mut self.mode {
            Mode::Keygen {
                dealt: Some(dealt), ..
            } => std::mem::take(dealt),
            Mode::Keygen { dkg, .. } => dkg.as_ref().ok_or_else(Self::out_of_order)?.phase1(),
            Mode::Refresh { old, .. } => old.refresh_complete_phase1(),
        };
        let mut out = Outgoing::new();
        for p in self.threshold.parties() {
            let fragment = fragments[usize::from(p.get())];
            if p == self.me {
                self.own_fragment = Some(fragment);
            } else {
                out.insert(
                    p,
                    encode(&Round1 {
                        epoch: self.start_epoch,
                        fragment,
                    }),
                );
            }
        }
        fragments.zeroize();
        Ok(out)
    }

    fn parse(&self, round: u8, from: PartyIndex, payload: &[u8]) -> Result<Message> {
        let check = Check {
            round,
            from,
            me: self.me,
        };
        match round {
            1 => {
                let m: Round1 = decode(round, from, payload)?;
                check.epoch(self.start_epoch, m.epoch)?;
                check.scalar(&m.fragment, "the polynomial fragment")?;
                Ok(Message::R1(m))
            }
            2 => {
                let m: Round2 = decode(round, from, payload)?;
                check.route(&m.zero_share.parties)?;
                match (&m.chain_code_commitment, self.is_keygen()) {
                    (Some(c), true) => check.sender(c.sender_index)?,
                    (None, false) => {}
                    _ => {
                        return Err(check.fail(
                            "chain-code commitment present in refresh or missing in keygen",
                        ));
                    }
                }
                Ok(Message::R2(m))
            }
            3 => {
                let m: Round3 = decode(round, from, payload)?;
                check.route(&m.zero_share.parties)?;
                check.route(&m.multiplication.parties)?;
                check.point(&m.proof.point, "the proof's public share")?;
                check.point(&m.multiplication.dlog_proof.point, "the OT set-up point")?;
                match (&m.chain_code, self.is_keygen()) {
                    (Some(c), true) => check.sender(c.sender_index)?,
                    (None, false) => {}
                    _ => {
                        return Err(check
                            .fail("chain-code opening present in refresh or missing in keygen"));
                    }
                }
                Ok(Message::R3(Box::new(m)))
            }
            4 => Ok(Message::R4(decode(round, from, payload)?)),
            _ => Err(check.fail("no such round")),
        }
    }

    fn advance(
        &mut self,
        round: u8,
        received: BTreeMap<PartyIndex, Message>,
    ) -> Result<Advance<KeyShare>> {
        match round {
            1 => self.round1_to_2(received).map(Advance::Send),
            2 => self.round2_to_3(received).map(Advance::Send),
            3 => self.round3_to_4(received).map(Advance::Send),
            4 => {
                let (share, ours) = self.result.take().ok_or_else(Self::out_of_order)?;
                for (p, m) in received {
                    let Message::R4(m) = m else {
                        return Err(Self::out_of_order());
                    };
                    if m.confirmation != ours {
                        return Err(Error::ConfirmationMismatch { party: p });
                    }
                }
                Ok(Advance::Done(share))
            }
            _ => Err(Self::out_of_order()),
        }
    }
}
