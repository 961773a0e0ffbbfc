//! Backups of Tessera key shares, and restoring them.
//!
//! The verifiable part of a backup is the share's secret scalar `x_i` (checked against the public
//! share `x_i·G`); the rest of the share (the signing set-up: zero-share seeds and the
//! multiplication state shared with the other parties) travels as the backup's encrypted `aux`
//! blob, keyed by `x_i`, so that a restored share signs at once. A refresh replaces both, which is
//! what makes a backup taken before it (and the lost device's share) useless.

use k256::elliptic_curve::PrimeField;
use tessera_core::{KeyShare, PartyIndex};
use zeroize::Zeroizing;

use crate::backup::{Backup, BackupContext};
use crate::error::BackupError;
use crate::holder::{HolderPublicKey, HolderSecretKey};
use crate::structure::AccessStructure;

/// The public description of `share` that a backup of it carries and is bound to.
#[must_use]
pub fn context_of(share: &KeyShare, wallet_name: &str) -> BackupContext {
    let threshold = share.threshold();
    BackupContext {
        wallet_id: share.wallet_id().to_string(),
        wallet_name: wallet_name.to_owned(),
        party: u16::from(share.party().get()),
        threshold_t: u16::from(threshold.t),
        threshold_n: u16::from(threshold.n),
        epoch: share.epoch(),
        wallet_public_key: share.public_key().to_compressed(),
        public_share: share.public_share().to_compressed(),
        created_at: std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or_default(),
    }
}

fn scalar_of(bytes: &[u8; 32]) -> Result<Zeroizing<k256::Scalar>, BackupError> {
    Option::<k256::Scalar>::from(k256::Scalar::from_repr((*bytes).into()))
        .map(Zeroizing::new)
        .ok_or_else(|| BackupError::RestoredShareMismatch("the secret is not a scalar".into()))
}

/// Backs up `share` under `structure`, each leaf encrypted to its holder in `holders`.
///
/// # Errors
/// As [`Backup::create`]: a holder key missing or extra for the structure, and so on.
pub fn backup_share(
    share: &KeyShare,
    wallet_name: &str,
    structure: &AccessStructure,
    holders: &[HolderPublicKey],
) -> Result<Backup, BackupError> {
    let secret = scalar_of(&share.secret_share_bytes())?;
    Backup::create(
        &secret,
        context_of(share, wallet_name),
        structure,
        holders,
        &share.to_bytes(),
    )
}

/// The public share a backup of `party`'s share must carry, as far as `share` (a share of the
/// same wallet) can tell: its own, or the other party's in a 2-party wallet.
///
/// # Errors
/// [`BackupError::RestoredShareMismatch`] when `share` cannot derive it (more than two parties).
pub fn expected_public_share(share: &KeyShare, party: u16) -> Result<[u8; 33], BackupError> {
    let party = u8::try_from(party)
        .map(PartyIndex::new)
        .map_err(|_| BackupError::RestoredShareMismatch(format!("no party {party}")))?;
    share
        .public_share_of(party)
        .map(|p| p.to_compressed())
        .map_err(|e| BackupError::RestoredShareMismatch(e.to_string()))
}

/// Restores the share a backup holds with the holders' `keys`, and checks that it is exactly the
/// share the backup describes: wallet, party, epoch, wallet key, and secret against the verified
/// public share.
///
/// # Errors
/// As [`Backup::restore`] (unauthorised keys name the holders missing), or
/// [`BackupError::RestoredShareMismatch`] when the share inside does not match.
pub fn restore_share(backup: &Backup, keys: &[HolderSecretKey]) -> Result<KeyShare, BackupError> {
    let restored = backup.restore(keys)?;
    let share = KeyShare::from_bytes(&restored.aux)
        .map_err(|e| BackupError::RestoredShareMismatch(format!("the share inside: {e}")))?;
    let context = backup.context();
    let mismatch = |what: &str| {
        Err(BackupError::RestoredShareMismatch(format!(
            "the share inside has another {what} than the backup states"
        )))
    };
    if share.wallet_id().to_string() != context.wallet_id {
        return mismatch("wallet");
    }
    if u16::from(share.party().get()) != context.party {
        return mismatch("party");
    }
    if share.epoch() != context.epoch {
        return mismatch("epoch");
    }
    if share.public_key().to_compressed() != context.wallet_public_key {
        return mismatch("wallet key");
    }
    if share.public_share().to_compressed() != context.public_share
        || *share.secret_share_bytes() != *restored.secret
    {
        return mismatch("secret");
    }
    Ok(share)
}
