//! The engine's part of a key share: the DKLs23 party state (secret share, zero-share seeds,
//! OT-based multiplication set-up for each counterparty, BIP-32 data).

use zeroize::Zeroizing;

use super::{EnginePartyIndex, Party, engine_index};
use crate::derivation::DerivationPath;
use crate::ecdsa::PublicKey;
use crate::error::{Error, Result};
use crate::types::{PartyIndex, Threshold};

/// A DKLs23 party state. Zeroized on drop by the engine's own `Drop`; never printed.
pub(crate) struct EngineShare(pub(crate) Box<Party>);

impl EngineShare {
    pub(crate) fn to_bytes(&self) -> Zeroizing<Vec<u8>> {
        // Serializing the engine's plain-data state into a Vec cannot fail.
        Zeroizing::new(postcard::to_allocvec(&*self.0).unwrap_or_default())
    }

    /// Decodes and checks the state against what the share file says about it.
    pub(crate) fn from_bytes(
        bytes: &[u8],
        party: PartyIndex,
        threshold: Threshold,
        public_key: &PublicKey,
        chain_code: &[u8; 32],
    ) -> Result<Self> {
        let bad = |why: &str| Error::InvalidKeyShare(why.to_string());
        let (state, rest) = postcard::take_from_bytes::<Party>(bytes)
            .map_err(|_| bad("the engine state does not decode"))?;
        if !rest.is_empty() {
            return Err(bad("unexpected bytes after the engine state"));
        }
        if state.party_index != engine_index(party) {
            return Err(bad("the engine state belongs to another party index"));
        }
        if (state.parameters.threshold, state.parameters.share_count) != (threshold.t, threshold.n)
        {
            return Err(bad("the engine state has another threshold"));
        }
        if &state.pk != public_key.as_affine() || state.derivation_data.pk != state.pk {
            return Err(bad("the engine state has another public key"));
        }
        if &state.derivation_data.chain_code != chain_code || state.derivation_data.depth != 0 {
            return Err(bad(
                "the engine state has another chain code or is not a root key",
            ));
        }
        if bool::from(state.poly_point.is_zero())
            || state.poly_point != state.derivation_data.poly_point
        {
            return Err(bad("the secret share is zero or inconsistent"));
        }
        let others: Vec<_> = threshold
            .parties()
            .filter(|&p| p != party)
            .map(engine_index)
            .collect();
        if !state.mul_senders.keys().eq(others.iter())
            || !state.mul_receivers.keys().eq(others.iter())
            || state.zero_share.seeds.len() != others.len()
        {
            return Err(bad(
                "the multiplication or zero-share set-up does not match the party set",
            ));
        }
        Ok(EngineShare(Box::new(state)))
    }

    pub(crate) fn chain_code(&self) -> [u8; 32] {
        self.0.derivation_data.chain_code
    }

    /// The secret share (the party's point on the key polynomial).
    pub(crate) fn secret_scalar(&self) -> &k256::Scalar {
        &self.0.poly_point
    }

    /// The secret share's public counterpart `x_i·G`.
    pub(crate) fn public_share(&self) -> k256::AffinePoint {
        (k256::ProjectivePoint::GENERATOR * self.0.poly_point).to_affine()
    }

    /// The party state for signing under `path` with `signers`: the share shifted by the BIP-32
    /// tweak, and only the multiplication set-up for the other signers (copying the set-up for
    /// parties that do not sign would cost time and put more secrets in memory).
    pub(crate) fn signing_party(
        &self,
        path: &DerivationPath,
        signers: &[PartyIndex],
    ) -> Result<Party> {
        let root = &*self.0;
        self.party_for(
            root.derivation_data.clone(),
            root.parameters.clone(),
            path,
            signers,
        )
    }

    /// The party state with which this party signs for an access-structure `quorum` (`signers`,
    /// every member's reconstruction coefficient known): the engine's signing computes its key
    /// share as `poly_point · λ + ζ`, with `λ` the Lagrange coefficient at 0 of our engine index
    /// over the signers' (`dkls23-core` `src/protocols/signing.rs`, `sign_phase2`), and sums the
    /// signers' key shares. Setting `poly_point = c·x·λ⁻¹` (`x` our share, `c` our reconstruction
    /// coefficient) makes that key share `c·x + ζ`: our additive share for the quorum
    /// (cb-mpc's `to_additive_share`) masked by the zero-share `ζ`, so the signers' key shares add
    /// up to `Σ c_j·x_j = sk`. The threshold becomes the quorum's size, which is what the engine
    /// requires of the counterparty count. BIP-32 shifts every signer's `poly_point` by the same
    /// tweak after this mapping; since the `λ`s of a set sum to 1, the key shifts by the tweak.
    pub(crate) fn quorum_party(
        &self,
        path: &DerivationPath,
        signers: &[PartyIndex],
        coefficient: &k256::Scalar,
    ) -> Result<Party> {
        let root = &*self.0;
        let lambda = engine_lagrange(root.party_index, signers)
            .ok_or_else(|| Error::InvalidParameters("degenerate signer indices".into()))?;
        let lambda_inv = Option::<k256::Scalar>::from(lambda.invert())
            .ok_or_else(|| Error::InvalidParameters("degenerate signer indices".into()))?;
        let mut base = root.derivation_data.clone();
        base.poly_point = *coefficient * root.poly_point * lambda_inv;
        let threshold = u8::try_from(signers.len())
            .map_err(|_| Error::InvalidParameters("too many signers".into()))?;
        let parameters = dkls23::protocols::Parameters::new(threshold, root.parameters.share_count)
            .map_err(|e| Error::InvalidParameters(e.to_string()))?;
        self.party_for(base, parameters, path, signers)
    }

    /// The engine party signing with `signers` from `base` (the root derivation data, its
    /// `poly_point` possibly mapped) under `path`, keeping only the signers' multiplication set-up.
    fn party_for(
        &self,
        base: dkls23::protocols::derivation::DerivData<super::Curve>,
        parameters: dkls23::protocols::Parameters,
        path: &DerivationPath,
        signers: &[PartyIndex],
    ) -> Result<Party> {
        let root = &*self.0;
        let derivation_data = if path.is_root() {
            base
        } else {
            base.derive_from_path(&path.to_string())
                .map_err(|e| Error::InvalidDerivationPath(e.description))?
        };
        let keep = |p: &EnginePartyIndex| signers.iter().any(|&s| engine_index(s) == *p);
        Ok(Party {
            parameters,
            party_index: root.party_index,
            session_id: root.session_id.clone(),
            poly_point: derivation_data.poly_point,
            pk: derivation_data.pk,
            zero_share: root.zero_share.clone(),
            mul_senders: root
                .mul_senders
                .iter()
                .filter(|(p, _)| keep(p))
                .map(|(p, m)| (*p, m.clone()))
                .collect(),
            mul_receivers: root
                .mul_receivers
                .iter()
                .filter(|(p, _)| keep(p))
                .map(|(p, m)| (*p, m.clone()))
                .collect(),
            derivation_data,
            address: String::new(),
        })
    }

    /// Turns a keygen's engine state (n-of-n over the structure's parties) into the state of a
    /// structure wallet: the engine's share is already ours (the sum of what was dealt to us);
    /// the public key is the structure's, not the engine's interpolation of the n-of-n proofs.
    pub(crate) fn set_public_key(&mut self, pk: k256::AffinePoint) {
        self.0.pk = pk;
        self.0.derivation_data.pk = pk;
    }

    /// Sets the BIP-32 chain code: a resharing keeps the wallet's (the engine's key generation
    /// among the new parties drew a new one), so every child key stays the same.
    pub(crate) fn set_chain_code(&mut self, chain_code: [u8; 32]) {
        self.0.derivation_data.chain_code = chain_code;
    }

    /// The public key at `path`, without touching the multiplication state.
    pub(crate) fn public_key_at(&self, path: &DerivationPath) -> Result<k256::AffinePoint> {
        if path.is_root() {
            return Ok(self.0.pk);
        }
        self.0
            .derivation_data
            .derive_from_path(&path.to_string())
            .map(|d| d.pk)
            .map_err(|e| Error::InvalidDerivationPath(e.description))
    }
}

/// The engine's Lagrange coefficient at 0 of `me` over the `signers`' engine indices, computed as
/// `sign_phase2` computes it.
fn engine_lagrange(me: EnginePartyIndex, signers: &[PartyIndex]) -> Option<k256::Scalar> {
    let x = |p: EnginePartyIndex| k256::Scalar::from(u64::from(p.as_u8()));
    let mut numerator = k256::Scalar::ONE;
    let mut denominator = k256::Scalar::ONE;
    for other in signers
        .iter()
        .map(|&s| engine_index(s))
        .filter(|&p| p != me)
    {
        numerator *= x(other);
        denominator *= x(other) - x(me);
    }
    Option::<k256::Scalar>::from(denominator.invert()).map(|inv| numerator * inv)
}

/// The public share of `other` in a 2-party wallet, from the wallet key and `mine` (the public
/// share of `me`): `pk = λ_me·X_me + λ_other·X_other` with Lagrange coefficients at the engine
/// indices (`x_i = i + 1`), so `X_other = (pk − λ_me·X_me) / λ_other`.
pub(crate) fn other_public_share_of_two(
    pk: &k256::AffinePoint,
    me: PartyIndex,
    mine: &k256::AffinePoint,
    other: PartyIndex,
) -> Option<k256::AffinePoint> {
    let x = |p: PartyIndex| k256::Scalar::from(u64::from(p.get()) + 1);
    let (x_me, x_other) = (x(me), x(other));
    // λ_me = x_other / (x_other − x_me), λ_other = x_me / (x_me − x_other).
    let lambda_me = x_other * Option::<k256::Scalar>::from((x_other - x_me).invert())?;
    let lambda_other = x_me * Option::<k256::Scalar>::from((x_me - x_other).invert())?;
    let inv_other = Option::<k256::Scalar>::from(lambda_other.invert())?;
    let point = (k256::ProjectivePoint::from(*pk) - k256::ProjectivePoint::from(*mine) * lambda_me)
        * inv_other;
    Some(point.to_affine())
}

/// A proof of knowledge of the discrete logarithm of `point`, bound to `context` (the engine's
/// non-interactive Fischlin proof, `dkls23::utilities::proofs::DLogProof`).
pub(crate) fn prove_dlog(secret: &k256::Scalar, context: &[u8]) -> Option<Vec<u8>> {
    let proof =
        dkls23::utilities::proofs::DLogProof::<super::Curve>::prove(secret, context).ok()?;
    postcard::to_allocvec(&proof).ok()
}

/// Checks a proof made by [`prove_dlog`] for `point` and `context`.
pub(crate) fn verify_dlog(point: &k256::AffinePoint, context: &[u8], proof: &[u8]) -> bool {
    let Ok((proof, rest)) =
        postcard::take_from_bytes::<dkls23::utilities::proofs::DLogProof<super::Curve>>(proof)
    else {
        return false;
    };
    rest.is_empty()
        && proof.point == *point
        && dkls23::utilities::proofs::DLogProof::<super::Curve>::verify(&proof, context)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::runner;

    /// A t-of-n wallet is `threshold(t, …)` with children at the engine's indices, so the
    /// structure's reconstruction coefficient of a signer is the engine's own Lagrange
    /// coefficient and the quorum mapping leaves its share as it is.
    #[test]
    fn the_quorum_mapping_of_a_t_of_n_share_is_the_identity() {
        let shares = runner::keygen(Threshold::new(2, 3).unwrap()).unwrap();
        let structure = shares[0].structure();
        let signers = [PartyIndex::new(0), PartyIndex::new(2)];
        let quorum = structure.check_quorum(&signers).unwrap();
        let root = DerivationPath::root();
        for &s in &signers {
            let engine = &shares[usize::from(s.get())].engine;
            let mapped = engine
                .quorum_party(&root, &signers, quorum.coefficient(s).unwrap())
                .unwrap();
            let plain = engine.signing_party(&root, &signers).unwrap();
            assert_eq!(mapped.poly_point, plain.poly_point);
            assert_eq!(mapped.parameters.threshold, plain.parameters.threshold);
            assert_eq!(mapped.pk, plain.pk);
        }
    }
}
