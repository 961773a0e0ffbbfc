//! `ServerShareVault`: the server's shares, sealed under the key-encryption key.
//!
//! Each share is encrypted with its own data key, which the KEK wraps (envelope encryption); the
//! associated data binds the ciphertext to its wallet and epoch, so a sealed share copied to
//! another row does not open.

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
