//! `ServerShareVault`: the server's shares, sealed under the key-encryption key.
//!
//! Each share is encrypted with its own data key, which the KEK wraps (envelope encryption); the
//! associated data binds the ciphertext to its wallet and epoch, so a sealed share copied to
//! another row does not open.

use tessera_core::{KeyShare, WalletId};
use tessera_store::kek;

use crate::auth::AuthDevice;
use crate::error::{ApiError, ApiResult};
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
    let sealed = kek::seal(state.kek(), &share.to_bytes(), &aad(&id, share.epoch()))
        .map_err(|e| ApiError::Internal(format!("seal: {e}")))?;
    let sealed = serde_json::to_vec(&sealed).map_err(|e| ApiError::Internal(e.to_string()))?;
    let mut tx = state.db().begin().await?;
    sqlx::query(
        "INSERT INTO wallets (id, user_id, name, threshold_t, threshold_n, public_key, epoch, created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
    )
    .bind(&id)
    .bind(&me.user_id)
    .bind(name)
    .bind(i64::from(share.threshold().t))
    .bind(i64::from(share.threshold().n))
    .bind(share.public_key().to_compressed().as_slice())
    .bind(share.epoch() as i64)
    .bind(now())
    .execute(&mut *tx)
    .await?;
    sqlx::query("INSERT INTO server_shares (wallet_id, epoch, state, sealed, created_at) VALUES (?, ?, 'active', ?, ?)")
        .bind(&id)
        .bind(share.epoch() as i64)
        .bind(sealed)
        .bind(now())
        .execute(&mut *tx)
        .await?;
    tx.commit().await?;
    Ok(())
}

/// The active share of a wallet, unsealed.
pub async fn load_active(state: &AppState, wallet_id: &str) -> ApiResult<KeyShare> {
    let row: Option<(i64, Vec<u8>)> = sqlx::query_as(
        "SELECT epoch, sealed FROM server_shares WHERE wallet_id = ? AND state = 'active'",
    )
    .bind(wallet_id)
    .fetch_optional(state.db())
    .await?;
    let (epoch, sealed) =
        row.ok_or_else(|| ApiError::NotFound(format!("no server share for wallet {wallet_id}")))?;
    let sealed: kek::SealedSecret = serde_json::from_slice(&sealed)
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
