//! Backups of Tessera key shares, and restoring them.
//!
//! The verifiable part of a backup is the share's secret scalar `x_i` (checked against the public
//! share `x_i·G`); the rest of the share (the signing set-up: zero-share seeds and the
//! multiplication state shared with the other parties) travels as the backup's encrypted `aux`
//! blob, keyed by `x_i`, so that a restored share signs at once. A refresh replaces both, which is
//! what makes a backup taken before it (and the lost device's share) useless.

use k256::elliptic_curve::PrimeField;
use sha2::{Digest, Sha256};
use tessera_core::{KeyShare, PartyIndex};
use zeroize::Zeroizing;

use crate::backup::{Backup, BackupContext, ExpectedShare};
use crate::error::BackupError;
use crate::holder::{HolderPublicKey, HolderSecretKey};
use crate::structure::AccessStructure;

/// Domain tag of [`share_state_digest`].
const SHARE_STATE_TAG: &[u8] = b"tessera-backup-v2/share-state";

/// A digest of the wallet's public state at `share`'s epoch, the same for every party of the
/// wallet: wallet id, threshold `t`-of-`n`, the party indices, epoch, wallet public key and BIP-32
/// chain code. A backup states it (format 2), so that a verifier holding any share of the wallet
/// can check that the signing state inside (the aux blob) belongs to this wallet, and a restore
/// checks the share it decrypts against it.
#[must_use]
pub fn share_state_digest(share: &KeyShare) -> [u8; 32] {
    let threshold = share.threshold();
    let wallet_id = share.wallet_id().to_string();
    let mut h = Sha256::new();
    h.update(
        u32::try_from(SHARE_STATE_TAG.len())
            .unwrap_or(u32::MAX)
            .to_be_bytes(),
    );
    h.update(SHARE_STATE_TAG);
    h.update(
        u32::try_from(wallet_id.len())
            .unwrap_or(u32::MAX)
            .to_be_bytes(),
    );
    h.update(wallet_id.as_bytes());
    h.update([threshold.t, threshold.n]);
    let parties: Vec<u8> = threshold.parties().map(PartyIndex::get).collect();
    h.update(
        u32::try_from(parties.len())
            .unwrap_or(u32::MAX)
            .to_be_bytes(),
    );
    h.update(&parties);
    h.update(share.epoch().to_be_bytes());
    h.update(share.public_key().to_compressed());
    h.update(share.chain_code());
    h.finalize().into()
}

/// What a backup of `party`'s share must state, as far as `share` (a share of the same wallet)
/// can tell: the public share ([`expected_public_share`]) and the wallet's share-state digest.
///
/// # Errors
/// As [`expected_public_share`].
pub fn expected_share(share: &KeyShare, party: u16) -> Result<ExpectedShare, BackupError> {
    Ok(ExpectedShare {
        public_share: expected_public_share(share, party)?,
        share_state: share_state_digest(share),
    })
}

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
        share_state: Some(share_state_digest(share)),
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
/// share the backup describes: wallet, party, epoch, wallet key, secret against the verified
/// public share, and (format 2) the wallet's public state ([`share_state_digest`]: chain code,
/// threshold, parties).
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
    if let Some(state) = &context.share_state
        && share_state_digest(&share) != *state
    {
        return mismatch("public state (chain code, threshold, parties, epoch or wallet key)");
    }
    Ok(share)
}
