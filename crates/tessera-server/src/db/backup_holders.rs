//! `server_backup_holders`: the holders a wallet's server share is backed up to.

use sqlx::any::AnyExecutor;

/// A wallet's fixed holders: its access structure and its holders (JSON), if fixed.
///
/// # Errors
/// A database error.
pub async fn of_wallet(
    db: impl AnyExecutor<'_>,
    wallet_id: &str,
) -> Result<Option<(String, String)>, sqlx::Error> {
    sqlx::query_as("SELECT structure, holders FROM server_backup_holders WHERE wallet_id = $1")
        .bind(wallet_id)
        .fetch_optional(db)
        .await
}

/// Fixes (or changes) a wallet's holders.
///
/// # Errors
/// A database error.
pub async fn set(
    db: impl AnyExecutor<'_>,
    wallet_id: &str,
    structure: &str,
    holders: &str,
    set_by: &str,
    at: i64,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO server_backup_holders (wallet_id, structure, holders, set_by, set_at) VALUES ($1, $2, $3, $4, $5) \
         ON CONFLICT (wallet_id) DO UPDATE SET structure = excluded.structure, holders = excluded.holders, \
         set_by = excluded.set_by, set_at = excluded.set_at",
    )
    .bind(wallet_id)
    .bind(structure)
    .bind(holders)
    .bind(set_by)
    .bind(at)
    .execute(db)
    .await?;
    Ok(())
}
