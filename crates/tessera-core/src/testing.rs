//! Test-only helpers (feature `dangerous-test-utils`): they assemble a wallet's private key, the
//! one thing no other code path ever does. Never enable the feature where real shares live.

use std::collections::BTreeMap;

use k256::Scalar;
use k256::elliptic_curve::PrimeField;
use zeroize::Zeroizing;

use crate::error::{Error, Result};
use crate::share::KeyShare;
use crate::structure::WalletStructure;
use crate::types::PartyIndex;

/// The secret scalar of a share.
#[must_use]
pub fn secret_scalar(share: &KeyShare) -> Zeroizing<Scalar> {
    Zeroizing::new(*share.engine.secret_scalar())
}

/// The key `Σ c_j·s_j` that the secret shares `shares` (by party) determine under `structure`,
/// over the minimal authorised subset of their parties that the structure's reconstruction
/// coefficients select; `None` when the parties are not authorised.
#[must_use]
pub fn reconstruct_scalars(
    structure: &WalletStructure,
    shares: &BTreeMap<PartyIndex, Scalar>,
) -> Option<Zeroizing<Scalar>> {
    let labels: Vec<&str> = shares.keys().filter_map(|&p| structure.label(p)).collect();
    let coefficients = structure.tree().reconstruction_coefficients(&labels)?;
    let mut key = Zeroizing::new(Scalar::ZERO);
    for (label, c) in coefficients {
        *key += c * shares.get(&structure.party(&label)?)?;
    }
    Some(key)
}

/// The wallet's private key from an authorised set of its shares (t-of-n shares are read as
/// `threshold(t, …)`), checked against the wallet's public key.
///
/// # Errors
/// [`Error::InvalidParameters`] when the shares are not authorised or do not give the key.
pub fn reconstruct(shares: &[&KeyShare]) -> Result<Zeroizing<Scalar>> {
    let first = shares
        .first()
        .ok_or_else(|| Error::InvalidParameters("no shares".into()))?;
    let structure = first.structure();
    let scalars: BTreeMap<PartyIndex, Scalar> = shares
        .iter()
        .map(|s| (s.party, *s.engine.secret_scalar()))
        .collect();
    let key = reconstruct_scalars(&structure, &scalars)
        .ok_or_else(|| Error::InvalidParameters("the shares are not authorised".into()))?;
    if (k256::ProjectivePoint::GENERATOR * *key).to_affine() != *first.public_key.as_affine() {
        return Err(Error::InvalidParameters(
            "the shares do not give the wallet's key".into(),
        ));
    }
    Ok(key)
}

/// A scalar from 32 big-endian bytes (tests build candidate keys with it).
#[must_use]
pub fn scalar_from_bytes(bytes: &[u8; 32]) -> Option<Scalar> {
    Option::from(Scalar::from_repr((*bytes).into()))
}

/// A copy of `share` that claims `epoch`: a party lying about its epoch, for tests that show an
/// old share cannot sign with refreshed or reshared ones even so.
///
/// # Errors
/// As [`KeyShare::from_bytes`] (never, for a share this build wrote).
pub fn claiming_epoch(share: &KeyShare, epoch: u64) -> Result<KeyShare> {
    let mut copy = KeyShare::from_bytes(&share.to_bytes())?;
    copy.epoch = epoch;
    Ok(copy)
}

/// A copy of `share` that claims the epoch and the structure (with its verifying shares) of
/// `like`: a removed party posing as a party of a resharing's new structure, for tests that
/// show its old share does not sign with the new ones even when every public field agrees.
///
/// # Errors
/// As [`KeyShare::from_bytes`] (never, for a share this build wrote).
pub fn claiming_to_be_like(share: &KeyShare, like: &KeyShare) -> Result<KeyShare> {
    let mut copy = KeyShare::from_bytes(&share.to_bytes())?;
    copy.epoch = like.epoch;
    copy.structure = like.structure.clone();
    Ok(copy)
}
