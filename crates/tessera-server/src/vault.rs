//! `ServerShareVault`: the server's shares, sealed under the key-encryption key.
//!
//! Each share is encrypted with its own data key, which the KEK wraps (envelope encryption); the
//! associated data binds the ciphertext to its wallet and epoch, so a sealed share copied to
//! another row does not open.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tessera_core::{KeyShare, WalletId};
use tessera_store::kek;

use crate::auth::AuthDevice;
use crate::db;
use crate::error::{ApiError, ApiResult, SetupError};
use crate::state::{AppState, now};

fn aad(wallet_id: &str, epoch: u64) -> Vec<u8> {
    format!("tessera/server-share/v1/{wallet_id}/{epoch}").into_bytes()
}

/// Seals a keygen result and records the new wallet, in one transaction.
pub async fn store_new_wallet(
    state: &AppState,
    me: &AuthDevice,
    wallet: WalletId,
    name: &str,
    share: &KeyShare,
) -> ApiResult<()> {
    let id = wallet.to_string();
    let sealed = seal(state, &id, share)?;
    let mut tx = state.db().begin().await?;
    db::wallets::insert(
        &mut *tx,
        &db::wallets::NewWallet {
            id: &id,
            user_id: &me.user_id,
            name,
            threshold_t: i64::from(share.threshold().t),
            threshold_n: i64::from(share.threshold().n),
            public_key: share.public_key().to_compressed().as_slice(),
            epoch: share.epoch() as i64,
            created_at: now(),
        },
    )
    .await?;
    db::shares::insert_active(&mut *tx, &id, share.epoch() as i64, sealed, now()).await?;
    tx.commit().await?;
    Ok(())
}

/// The active share of a wallet, unsealed.
pub async fn load_active(state: &AppState, wallet_id: &str) -> ApiResult<KeyShare> {
    load_active_on(state, &mut *state.db().acquire().await?, wallet_id).await
}

/// [`load_active`], read on `conn` (a caller's transaction).
pub async fn load_active_on(
    state: &AppState,
    conn: &mut sqlx::AnyConnection,
    wallet_id: &str,
) -> ApiResult<KeyShare> {
    let row = db::shares::active(&mut *conn, wallet_id).await?;
    let (epoch, sealed) =
        row.ok_or_else(|| ApiError::NotFound(format!("no server share for wallet {wallet_id}")))?;
    unseal(state, wallet_id, epoch, &sealed)
}

/// Opens the sealed share row `sealed` of `wallet_id` at `epoch` (read by the caller, e.g. with
/// the session it serves in one query) and checks that it is that wallet's share at that epoch.
pub fn unseal(state: &AppState, wallet_id: &str, epoch: i64, sealed: &[u8]) -> ApiResult<KeyShare> {
    let sealed = db::shares::decode_sealed(sealed)
        .map_err(|e| ApiError::Internal(format!("sealed share: {e}")))?;
    let bytes = kek::open(state.kek(), &sealed, &aad(wallet_id, epoch as u64))
        .map_err(|e| ApiError::Internal(format!("unseal: {e}")))?;
    let share = KeyShare::from_bytes(&bytes).map_err(|e| ApiError::Internal(e.to_string()))?;
    if share.wallet_id().to_string() != wallet_id || share.epoch() != epoch as u64 {
        return Err(ApiError::Internal(
            "sealed share does not match its row".into(),
        ));
    }
    Ok(share)
}

/// How long an unsealed share is kept after the signature it served (see [`UnsealedShares`]).
pub const KEEP_UNSEALED: Duration = Duration::from_secs(60);

/// How long an unsealed share is kept at most, however often it signs: a wallet in constant use
/// is unsealed again (through the key-encryption key) this often.
pub const UNSEAL_AGAIN_AFTER: Duration = Duration::from_secs(300);

/// At most this many wallets' shares are kept unsealed at once.
const MAX_KEPT: usize = 256;

/// The shares that signed within the last [`KEEP_UNSEALED`], unsealed, one per wallet, so that a
/// wallet that signs again soon is not decrypted and decoded again (a 2-of-2 share is about
/// 52 KB: opening and decoding it measured 0.12 ms in process in `server_e2e`, and with an HSM
/// holding the key-encryption key, each opening is a call to the HSM).
///
/// An entry serves only the exact sealed bytes it was opened from, which the caller has just
/// read from the share's row: a refreshed, replaced, restored or re-wrapped share (new bytes)
/// is opened again, and the kept one of another epoch of the wallet is dropped (zeroized) in its
/// place. A refresh switching epochs on this server forgets the wallet's entry at once, and
/// every entry is dropped [`KEEP_UNSEALED`] after its last use or [`UNSEAL_AGAIN_AFTER`] after
/// it was unsealed (housekeeping, every 10 s), so a share does not stay in memory much longer
/// than the sessions that used it, and a key-encryption key taken away stops signatures within
/// minutes.
#[derive(Default)]
pub struct UnsealedShares(Mutex<HashMap<String, Kept>>);

struct Kept {
    epoch: i64,
    sealed: Vec<u8>,
    share: Arc<KeyShare>,
    unsealed: Instant,
    used: Instant,
}

impl Kept {
    fn current(&self) -> bool {
        self.used.elapsed() <= KEEP_UNSEALED && self.unsealed.elapsed() <= UNSEAL_AGAIN_AFTER
    }
}

impl UnsealedShares {
    fn get(&self, wallet_id: &str, epoch: i64, sealed: &[u8]) -> Option<Arc<KeyShare>> {
        let mut kept = self.0.lock().ok()?;
        let entry = kept.get_mut(wallet_id)?;
        if entry.epoch != epoch || entry.sealed != sealed || !entry.current() {
            return None;
        }
        entry.used = Instant::now();
        Some(entry.share.clone())
    }

    fn keep(&self, wallet_id: &str, epoch: i64, sealed: &[u8], share: Arc<KeyShare>) {
        let Ok(mut kept) = self.0.lock() else {
            return;
        };
        if kept.len() >= MAX_KEPT && !kept.contains_key(wallet_id) {
            kept.retain(|_, k| k.current());
            if kept.len() >= MAX_KEPT {
                return;
            }
        }
        kept.insert(
            wallet_id.to_string(),
            Kept {
                epoch,
                sealed: sealed.to_vec(),
                share,
                unsealed: Instant::now(),
                used: Instant::now(),
            },
        );
    }

    /// Drops the wallet's kept share (its epoch changes).
    pub fn forget(&self, wallet_id: &str) {
        if let Ok(mut kept) = self.0.lock() {
            kept.remove(wallet_id);
        }
    }

    /// Drops the shares unused for [`KEEP_UNSEALED`] or unsealed [`UNSEAL_AGAIN_AFTER`] ago.
    pub fn forget_idle(&self) {
        if let Ok(mut kept) = self.0.lock() {
            kept.retain(|_, k| k.current());
        }
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.0.lock().map(|kept| kept.len()).unwrap_or_default()
    }

    #[cfg(test)]
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// [`unseal`] for a signature: the share kept from the wallet's last signature when `sealed`
/// is the row it was opened from ([`UnsealedShares`]), else opened and kept.
///
/// # Errors
/// As [`unseal`].
pub fn unseal_for_signing(
    state: &AppState,
    wallet_id: &str,
    epoch: i64,
    sealed: &[u8],
) -> ApiResult<Arc<KeyShare>> {
    let kept = state.unsealed();
    if let Some(share) = kept.get(wallet_id, epoch, sealed) {
        return Ok(share);
    }
    let share = Arc::new(unseal(state, wallet_id, epoch, sealed)?);
    kept.keep(wallet_id, epoch, sealed, share.clone());
    Ok(share)
}

pub(crate) fn seal(state: &AppState, wallet_id: &str, share: &KeyShare) -> ApiResult<Vec<u8>> {
    let sealed = kek::seal(
        state.kek(),
        &share.to_bytes(),
        &aad(wallet_id, share.epoch()),
    )
    .map_err(|e| ApiError::Internal(format!("seal: {e}")))?;
    // postcard, not JSON: JSON writes the byte fields as arrays of numbers (188 KB for a 52 KB
    // share) and decoding that dominated the cost of loading a share for every signature.
    postcard::to_allocvec(&sealed).map_err(|e| ApiError::Internal(e.to_string()))
}

/// Phase one of a refresh: the new share is stored as pending next to the active one, bound to
/// the refresh session that produced it.
pub async fn store_pending(
    state: &AppState,
    wallet_id: &str,
    session_id: &str,
    share: &KeyShare,
) -> ApiResult<()> {
    let sealed = seal(state, wallet_id, share)?;
    // A conflicting row is the pending share of an earlier refresh that never committed (only
    // one refresh of a wallet is live at a time).
    let stored = db::shares::store_pending(
        state.db(),
        wallet_id,
        share.epoch() as i64,
        sealed,
        now(),
        session_id,
    )
    .await?;
    if !stored {
        return Err(ApiError::Conflict(format!(
            "epoch {} of this wallet is already in use",
            share.epoch()
        )));
    }
    Ok(())
}

/// Phase two: the device holds the new share too; switch, in one transaction, to the pending
/// share of this session, and delete the old one. The device stored its new share (as pending)
/// before it sent the commit that brought us here, and it repairs to our active epoch on its
/// next session, so from this commit on nobody needs the old epoch: keeping it would let a later
/// compromise of this database plus an old device share rebuild the key, which refresh exists
/// to prevent. The bans and lock a refresh lifts are lifted in the same transaction.
pub async fn promote(
    state: &AppState,
    wallet_id: &str,
    session_id: &str,
    epoch: u64,
) -> ApiResult<()> {
    let mut tx = state.begin_write().await?;
    if !db::shares::switch_to_pending(&mut tx, wallet_id, session_id, epoch as i64).await? {
        return Err(ApiError::Conflict(format!(
            "no pending epoch {epoch} to switch to"
        )));
    }
    db::wallets::set_epoch(&mut *tx, wallet_id, epoch as i64).await?;
    let lifted = crate::bans::lift_in(&mut tx, wallet_id, session_id).await?;
    crate::bans::audit_lifted(&mut tx, wallet_id, session_id, &lifted).await?;
    tx.commit().await?;
    state.unsealed().forget(wallet_id);
    Ok(())
}

/// Replaces the active share of a wallet with `share` (same epoch), restored from a backup: the
/// row is inserted if the share was lost, overwritten if it was damaged.
pub async fn replace_active(state: &AppState, wallet_id: &str, share: &KeyShare) -> ApiResult<()> {
    let sealed = seal(state, wallet_id, share)?;
    let mut tx = state.db().begin().await?;
    db::shares::delete_epoch_and_pending(&mut *tx, wallet_id, share.epoch() as i64).await?;
    db::shares::insert_active(&mut *tx, wallet_id, share.epoch() as i64, sealed, now()).await?;
    tx.commit().await?;
    Ok(())
}

/// A pending share that was never committed is abandoned when a new session of the wallet
/// starts: the device only ever switches after the server did, so it cannot depend on it.
/// The pending share of a refresh still running is kept.
pub async fn discard_stale_pending(
    conn: &mut sqlx::AnyConnection,
    wallet_id: &str,
) -> ApiResult<()> {
    db::shares::discard_stale_pending(conn, wallet_id).await?;
    Ok(())
}

/// KEK rotation: re-wraps the data key of every stored share (active and pending) from
/// `old` to `new` in one transaction. The shares' ciphertexts are copied unchanged: no share is
/// decrypted. Rows already under `new` are left as they are. Returns (re-wrapped, already new).
///
/// # Errors
/// A message naming the row that failed; nothing is changed then.
pub async fn rewrap_all(
    pool: &sqlx::AnyPool,
    old: &dyn kek::KeyEncryptionKey,
    new: &dyn kek::KeyEncryptionKey,
) -> Result<(usize, usize), SetupError> {
    let err = SetupError::db("database");
    let mut tx = pool.begin().await.map_err(&err)?;
    let rows = db::shares::all(&mut *tx).await.map_err(&err)?;
    let (mut rewrapped, mut already) = (0, 0);
    for (wallet_id, epoch, bytes) in rows {
        let sealed = db::shares::decode_sealed(&bytes).map_err(|e| {
            SetupError::Failed(format!("share of wallet {wallet_id} epoch {epoch}: {e:?}"))
        })?;
        if sealed.kek_id == new.id() {
            already += 1;
            continue;
        }
        let moved = kek::rewrap(old, new, &sealed).map_err(|e| {
            SetupError::Failed(format!("share of wallet {wallet_id} epoch {epoch}: {e}"))
        })?;
        let encoded = postcard::to_allocvec(&moved)
            .map_err(|e| SetupError::Failed(format!("encoding a sealed share: {e}")))?;
        db::shares::set_sealed(&mut *tx, &wallet_id, epoch, encoded)
            .await
            .map_err(&err)?;
        rewrapped += 1;
    }
    tx.commit().await.map_err(&err)?;
    Ok((rewrapped, already))
}

#[cfg(test)]
mod tests {
    use super::*;
    use tessera_core::Threshold;
    use tessera_core::runner::keygen;

    #[test]
    fn a_kept_share_serves_only_the_sealed_bytes_and_epoch_it_was_opened_from() {
        let mut shares = keygen(Threshold::new(2, 2).unwrap()).unwrap();
        let (old, new) = (Arc::new(shares.remove(0)), Arc::new(shares.remove(0)));
        let kept = UnsealedShares::default();
        kept.keep("w", 3, b"sealed at 3", old.clone());
        let hit = kept.get("w", 3, b"sealed at 3").expect("the same row");
        assert!(Arc::ptr_eq(&hit, &old));
        // Another row's bytes (refreshed, restored, re-wrapped, or written by someone else), an
        // epoch it was not opened at, or another wallet: never the kept share.
        assert!(kept.get("w", 3, b"sealed at 3, rewritten").is_none());
        assert!(kept.get("w", 4, b"sealed at 3").is_none());
        assert!(kept.get("v", 3, b"sealed at 3").is_none());
        // The next epoch's share takes the wallet's place: the old one is dropped (zeroized).
        drop(hit);
        kept.keep("w", 4, b"sealed at 4", new);
        assert_eq!(
            Arc::strong_count(&old),
            1,
            "the cache let go of the old epoch's share"
        );
        assert!(kept.get("w", 3, b"sealed at 3").is_none());
        assert!(kept.get("w", 4, b"sealed at 4").is_some());
        kept.forget("w");
        assert!(kept.is_empty());
    }

    #[test]
    fn an_unused_share_is_dropped_after_its_time() {
        let share = Arc::new(keygen(Threshold::new(2, 2).unwrap()).unwrap().remove(0));
        let kept = UnsealedShares::default();
        kept.keep("w", 1, b"s", share.clone());
        kept.forget_idle();
        assert_eq!(kept.len(), 1, "used just now");
        if let Ok(mut map) = kept.0.lock() {
            map.get_mut("w").unwrap().used -= KEEP_UNSEALED + Duration::from_secs(1);
        }
        assert!(
            kept.get("w", 1, b"s").is_none(),
            "past its time it is not served"
        );
        kept.forget_idle();
        assert!(kept.is_empty());
        assert_eq!(Arc::strong_count(&share), 1);
    }

    #[test]
    fn a_share_in_constant_use_is_unsealed_again_after_its_longest_time() {
        let share = Arc::new(keygen(Threshold::new(2, 2).unwrap()).unwrap().remove(0));
        let kept = UnsealedShares::default();
        kept.keep("w", 1, b"s", share.clone());
        if let Ok(mut map) = kept.0.lock() {
            map.get_mut("w").unwrap().unsealed -= UNSEAL_AGAIN_AFTER + Duration::from_secs(1);
        }
        // Used a moment ago, but unsealed too long ago: not served, and dropped.
        assert!(kept.get("w", 1, b"s").is_none());
        kept.forget_idle();
        assert!(kept.is_empty());
        assert_eq!(Arc::strong_count(&share), 1);
    }
}
