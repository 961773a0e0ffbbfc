//! `relay_codes` (PostgreSQL; see [`crate::relay`]): the relay codes whose first device waits
//! for the second, shared by every replica. Every check-then-act on them runs in a [`WriteTx`]
//! after [`lock`], so the caps hold across replicas.

use crate::db::{Backend, WriteTx};

/// Advisory-lock namespace of the relay's waiting codes (PostgreSQL).
const RELAY_LOCK_SPACE: i32 = 0x7e57;

/// A code's waiting first device.
pub struct Waiting {
    /// The replica that holds its socket.
    pub instance: String,
    /// Tells this wait apart from a later one of the same code (per replica).
    pub wait_id: i64,
}

/// Serialises this transaction with every other one on the relay's codes, on every replica
/// (PostgreSQL: a transaction advisory lock; taken alone, never with other locks).
///
/// # Errors
/// A database error.
pub async fn lock(tx: &mut WriteTx) -> Result<(), sqlx::Error> {
    if tx.backend() == Backend::Postgres {
        sqlx::query("SELECT pg_advisory_xact_lock($1, 0)")
            .bind(RELAY_LOCK_SPACE)
            .execute(&mut **tx)
            .await?;
    }
    Ok(())
}

/// Removes and returns the wait of `code`, if any.
///
/// # Errors
/// A database error.
pub async fn take(tx: &mut WriteTx, code: &str) -> Result<Option<Waiting>, sqlx::Error> {
    let row: Option<(String, i64)> =
        sqlx::query_as("DELETE FROM relay_codes WHERE code = $1 RETURNING instance, wait_id")
            .bind(code)
            .fetch_optional(&mut **tx)
            .await?;
    Ok(row.map(|(instance, wait_id)| Waiting { instance, wait_id }))
}

/// Codes waiting now, in all and from `source`.
///
/// # Errors
/// A database error.
pub async fn count(tx: &mut WriteTx, source: &str) -> Result<(i64, i64), sqlx::Error> {
    sqlx::query_as(
        "SELECT COUNT(*), COALESCE(SUM(CASE WHEN source = $1 THEN 1 ELSE 0 END), 0) \
         FROM relay_codes",
    )
    .bind(source)
    .fetch_one(&mut **tx)
    .await
}

/// Records that `code`'s first device waits on `instance`.
///
/// # Errors
/// A database error.
pub async fn insert(
    tx: &mut WriteTx,
    code: &str,
    waiting: &Waiting,
    source: &str,
    since: i64,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO relay_codes (code, instance, wait_id, source, since) \
         VALUES ($1, $2, $3, $4, $5)",
    )
    .bind(code)
    .bind(&waiting.instance)
    .bind(waiting.wait_id)
    .bind(source)
    .bind(since)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

/// Ends the wait `wait_id` of `code` on `instance` (not a later wait of the same code).
/// Returns `false` when it had ended already (a second device claimed it).
///
/// # Errors
/// A database error.
pub async fn forget(
    db: &sqlx::AnyPool,
    code: &str,
    instance: &str,
    wait_id: i64,
) -> Result<bool, sqlx::Error> {
    let done =
        sqlx::query("DELETE FROM relay_codes WHERE code = $1 AND instance = $2 AND wait_id = $3")
            .bind(code)
            .bind(instance)
            .bind(wait_id)
            .execute(db)
            .await?;
    Ok(done.rows_affected() == 1)
}
