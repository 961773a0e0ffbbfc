//! `audit_log`: the hash-chained records (the chain itself is `crate::audit`'s).

use sqlx::any::AnyExecutor;

use super::WriteTx;

/// A stored record: seq, at, kind, user, device, wallet, detail, prev_hash, hash.
pub type Row = (
    i64,
    i64,
    String,
    Option<String>,
    Option<String>,
    Option<String>,
    String,
    Vec<u8>,
    Vec<u8>,
);

/// sqlx takes only static SQL: the shared column list is spliced in at compile time.
macro_rules! audit_select {
    ($rest:literal) => {
        concat!(
            "SELECT seq, at, kind, user_id, device_id, wallet_id, detail, prev_hash, hash FROM audit_log ",
            $rest
        )
    };
}

/// The chain's head: the last record's seq and hash (none: the chain is empty). Read in `tx`
/// after its audit-head lock.
///
/// # Errors
/// A database error.
pub async fn head(tx: &mut WriteTx) -> Result<Option<(i64, Vec<u8>)>, sqlx::Error> {
    sqlx::query_as("SELECT seq, hash FROM audit_log ORDER BY seq DESC LIMIT 1")
        .fetch_optional(&mut **tx)
        .await
}

/// A record to append, its hash computed.
pub struct NewRecord<'a> {
    /// Its number.
    pub seq: i64,
    /// Unix seconds.
    pub at: i64,
    /// What happened.
    pub kind: &'a str,
    /// The user.
    pub user: Option<&'a str>,
    /// The device.
    pub device: Option<&'a str>,
    /// The wallet.
    pub wallet: Option<&'a str>,
    /// JSON.
    pub detail: &'a str,
    /// The previous record's hash.
    pub prev_hash: Vec<u8>,
    /// This record's hash.
    pub hash: &'a [u8],
}

/// Appends a record in `tx`.
///
/// # Errors
/// A database error.
pub async fn insert(tx: &mut WriteTx, r: NewRecord<'_>) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO audit_log (seq, at, kind, user_id, device_id, wallet_id, detail, prev_hash, hash) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
    )
    .bind(r.seq)
    .bind(r.at)
    .bind(r.kind)
    .bind(r.user)
    .bind(r.device)
    .bind(r.wallet)
    .bind(r.detail)
    .bind(r.prev_hash)
    .bind(r.hash)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

/// Every record, in order.
///
/// # Errors
/// A database error.
pub async fn all(db: impl AnyExecutor<'_>) -> Result<Vec<Row>, sqlx::Error> {
    sqlx::query_as(audit_select!("ORDER BY seq"))
        .fetch_all(db)
        .await
}

/// The records about a wallet, in order.
///
/// # Errors
/// A database error.
pub async fn of_wallet(db: impl AnyExecutor<'_>, wallet_id: &str) -> Result<Vec<Row>, sqlx::Error> {
    sqlx::query_as(audit_select!("WHERE wallet_id = $1 ORDER BY seq"))
        .bind(wallet_id)
        .fetch_all(db)
        .await
}

/// The records about a user, in order.
///
/// # Errors
/// A database error.
pub async fn of_user(db: impl AnyExecutor<'_>, user_id: &str) -> Result<Vec<Row>, sqlx::Error> {
    sqlx::query_as(audit_select!("WHERE user_id = $1 ORDER BY seq"))
        .bind(user_id)
        .fetch_all(db)
        .await
}
