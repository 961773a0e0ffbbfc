//! `server_shares`: the server's sealed shares, one row per wallet and epoch (the sealing is
//! `crate::vault`'s).

use sqlx::AnyConnection;
use sqlx::any::AnyExecutor;
use tessera_store::kek;

use crate::error::{ApiError, ApiResult, SetupError};

/// Inserts the active share of a wallet at `epoch`.
///
/// # Errors
/// A database error.
pub async fn insert_active(
    db: impl AnyExecutor<'_>,
    wallet_id: &str,
    epoch: i64,
    sealed: Vec<u8>,
    at: i64,
) -> Result<(), sqlx::Error> {
    sqlx::query("INSERT INTO server_shares (wallet_id, epoch, state, sealed, created_at) VALUES ($1, $2, 'active', $3, $4)")
        .bind(wallet_id)
        .bind(epoch)
        .bind(sealed)
        .bind(at)
        .execute(db)
        .await?;
    Ok(())
}

/// The active share of a wallet: its epoch and sealed bytes.
///
/// # Errors
/// A database error.
pub async fn active(
    db: impl AnyExecutor<'_>,
    wallet_id: &str,
) -> Result<Option<(i64, Vec<u8>)>, sqlx::Error> {
    sqlx::query_as(
        "SELECT epoch, sealed FROM server_shares WHERE wallet_id = $1 AND state = 'active'",
    )
    .bind(wallet_id)
    .fetch_optional(db)
    .await
}

/// Stores a refresh's new share as pending, bound to its session. A conflicting row is the
/// pending share of an earlier refresh that never committed (only one refresh of a wallet is
/// live at a time); returns `false` when the epoch holds a share that is not pending.
///
/// # Errors
/// A database error.
pub async fn store_pending(
    db: impl AnyExecutor<'_>,
    wallet_id: &str,
    epoch: i64,
    sealed: Vec<u8>,
    at: i64,
    session_id: &str,
) -> Result<bool, sqlx::Error> {
    let stored = sqlx::query(
        "INSERT INTO server_shares (wallet_id, epoch, state, sealed, created_at, session_id) VALUES ($1, $2, 'pending', $3, $4, $5) \
         ON CONFLICT (wallet_id, epoch) DO UPDATE SET state = excluded.state, sealed = excluded.sealed, \
         created_at = excluded.created_at, session_id = excluded.session_id \
         WHERE server_shares.state = 'pending'",
    )
    .bind(wallet_id)
    .bind(epoch)
    .bind(sealed)
    .bind(at)
    .bind(session_id)
    .execute(db)
    .await?;
    Ok(stored.rows_affected() == 1)
}

/// The switch of a refresh: deletes the active share of the epoch before `epoch` and activates
/// the pending share of `epoch` that `session_id` stored. Returns whether both rows were there.
///
/// # Errors
/// A database error.
pub async fn switch_to_pending(
    conn: &mut AnyConnection,
    wallet_id: &str,
    session_id: &str,
    epoch: i64,
) -> Result<bool, sqlx::Error> {
    let old = sqlx::query(
        "DELETE FROM server_shares WHERE wallet_id = $1 AND state = 'active' AND epoch + 1 = $2",
    )
    .bind(wallet_id)
    .bind(epoch)
    .execute(&mut *conn)
    .await?;
    let activated = sqlx::query(
        "UPDATE server_shares SET state = 'active' WHERE wallet_id = $1 AND state = 'pending' AND epoch = $2 AND session_id = $3",
    )
    .bind(wallet_id)
    .bind(epoch)
    .bind(session_id)
    .execute(&mut *conn)
    .await?;
    Ok(old.rows_affected() == 1 && activated.rows_affected() == 1)
}

/// Deletes the wallet's shares of every epoch before `current` (refresh and reshare alike: once
/// the switch to `current` is durable, no older share may outlive it). The share of `current`
/// and a pending one of `current + 1` stay. Returns how many were deleted.
///
/// # Errors
/// A database error.
pub async fn delete_old_epochs(
    db: impl AnyExecutor<'_>,
    wallet_id: &str,
    current: i64,
) -> Result<u64, sqlx::Error> {
    let done = sqlx::query("DELETE FROM server_shares WHERE wallet_id = $1 AND epoch < $2")
        .bind(wallet_id)
        .bind(current)
        .execute(db)
        .await?;
    Ok(done.rows_affected())
}

/// Deletes the share of `epoch` and any pending one (before a restored share is inserted).
///
/// # Errors
/// A database error.
pub async fn delete_epoch_and_pending(
    db: impl AnyExecutor<'_>,
    wallet_id: &str,
    epoch: i64,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "DELETE FROM server_shares WHERE wallet_id = $1 AND (epoch = $2 OR state = 'pending')",
    )
    .bind(wallet_id)
    .bind(epoch)
    .execute(db)
    .await?;
    Ok(())
}

/// Deletes the wallet's pending shares that no running refresh holds.
///
/// # Errors
/// A database error.
pub async fn discard_stale_pending(
    db: impl AnyExecutor<'_>,
    wallet_id: &str,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "DELETE FROM server_shares WHERE wallet_id = $1 AND state = 'pending' AND NOT EXISTS \
         (SELECT 1 FROM sessions WHERE sessions.id = server_shares.session_id AND sessions.status = 'running')",
    )
        .bind(wallet_id)
        .execute(db)
        .await?;
    Ok(())
}

/// Some active share's sealed bytes (to check the key-encryption key at start-up).
///
/// # Errors
/// A database error.
pub async fn any_active(db: impl AnyExecutor<'_>) -> Result<Option<Vec<u8>>, sqlx::Error> {
    let row: Option<(Vec<u8>,)> =
        sqlx::query_as("SELECT sealed FROM server_shares WHERE state = 'active' LIMIT 1")
            .fetch_optional(db)
            .await?;
    Ok(row.map(|(s,)| s))
}

/// Every stored share: wallet, epoch, sealed bytes.
///
/// # Errors
/// A database error.
pub async fn all(db: impl AnyExecutor<'_>) -> Result<Vec<(String, i64, Vec<u8>)>, sqlx::Error> {
    sqlx::query_as("SELECT wallet_id, epoch, sealed FROM server_shares ORDER BY wallet_id, epoch")
        .fetch_all(db)
        .await
}

/// Replaces a share's sealed bytes (a KEK rotation re-wrapped its data key).
///
/// # Errors
/// A database error.
pub async fn set_sealed(
    db: impl AnyExecutor<'_>,
    wallet_id: &str,
    epoch: i64,
    sealed: Vec<u8>,
) -> Result<(), sqlx::Error> {
    sqlx::query("UPDATE server_shares SET sealed = $1 WHERE wallet_id = $2 AND epoch = $3")
        .bind(sealed)
        .bind(wallet_id)
        .bind(epoch)
        .execute(db)
        .await?;
    Ok(())
}

/// Reads a sealed share row: postcard, or JSON as the first builds wrote it.
///
/// # Errors
/// [`ApiError::Internal`] naming what does not decode.
pub fn decode_sealed(bytes: &[u8]) -> ApiResult<kek::SealedSecret> {
    let bad = |e: String| ApiError::Internal(format!("sealed share: {e}"));
    if bytes.first() == Some(&b'{') {
        return serde_json::from_slice(bytes).map_err(|e| bad(e.to_string()));
    }
    match postcard::take_from_bytes::<kek::SealedSecret>(bytes) {
        Ok((sealed, [])) => Ok(sealed),
        Ok(_) => Err(bad("trailing bytes".into())),
        Err(e) => Err(bad(e.to_string())),
    }
}

/// Start-up check: the shares must be sealed under the configured key-encryption key (a server
/// started with another KEK would fail on every session instead).
///
/// # Errors
/// A message naming both KEK ids and how to rotate.
pub async fn check_kek(
    pool: &sqlx::AnyPool,
    kek: &dyn kek::KeyEncryptionKey,
) -> Result<(), SetupError> {
    let row = any_active(pool).await.map_err(SetupError::db("database"))?;
    let Some(bytes) = row else {
        return Ok(());
    };
    let sealed =
        decode_sealed(&bytes).map_err(|e| SetupError::Failed(format!("a stored share: {e:?}")))?;
    if sealed.kek_id != kek.id() {
        return Err(SetupError::Failed(format!(
            "the stored shares are sealed under key-encryption key {}, but this server was given {}; \
             start it with that key, or move the shares with `tessera kek rotate`",
            sealed.kek_id,
            kek.id()
        )));
    }
    Ok(())
}
