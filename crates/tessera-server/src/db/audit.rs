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

/// The chain's head as this process last wrote or read it: (seq, hash) of a record, kept so that
/// an append is one statement ([`insert_after`]) instead of a read of the head and an insert.
///
/// It is a guess, never trusted: [`insert_after`] writes only when the database's head is
/// still that record (another replica, a rolled-back transaction or a race between two appends
/// make it miss, and the append then reads the head, [`head`]). Shared by the whole process.
#[derive(Default)]
pub struct HeadCache(std::sync::Mutex<Option<(i64, [u8; 32])>>);

impl HeadCache {
    /// The last head seen, if any.
    #[must_use]
    pub fn get(&self) -> Option<(i64, [u8; 32])> {
        *self
            .0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Remembers record `seq` (unless a later one is already remembered).
    pub fn advance(&self, seq: i64, hash: [u8; 32]) {
        let mut head = self
            .0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if head.is_none_or(|(known, _)| seq >= known) {
            *head = Some((seq, hash));
        }
    }
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
    pub hash: [u8; 32],
}

/// Binds `r`'s nine columns, in the order of `audit_log`'s (seq, at, kind, user_id, device_id,
/// wallet_id, detail, prev_hash, hash), after what `query` has bound already.
pub(crate) fn bind_record<'q>(
    query: sqlx::query::Query<'q, sqlx::Any, sqlx::any::AnyArguments>,
    r: &'q NewRecord<'_>,
) -> sqlx::query::Query<'q, sqlx::Any, sqlx::any::AnyArguments> {
    query
        .bind(r.seq)
        .bind(r.at)
        .bind(r.kind)
        .bind(r.user)
        .bind(r.device)
        .bind(r.wallet)
        .bind(r.detail)
        .bind(r.prev_hash.as_slice())
        .bind(r.hash.as_slice())
}

/// Appends `r` only if the chain's head is record `r.seq - 1` with hash `r.prev_hash`, in one
/// statement: the record exists with that hash and no record `r.seq` does (the primary key,
/// `ON CONFLICT DO NOTHING`). Returns whether it was appended; when not, the caller's guess
/// of the head was stale and nothing was written.
///
/// In a transaction holding the audit head (SQLite: the write lock; PostgreSQL: the advisory
/// lock), or alone as an autocommit statement on SQLite, where the statement takes the write
/// lock before it reads. (On PostgreSQL an autocommit use would be safe too, since a
/// concurrent uncommitted record `r.seq` makes it wait for that transaction, but a locked
/// append's plain [`insert`] could then collide with it: PostgreSQL appends stay in locked
/// transactions.)
///
/// # Errors
/// A database error.
pub async fn insert_after(
    db: impl AnyExecutor<'_>,
    r: &NewRecord<'_>,
) -> Result<bool, sqlx::Error> {
    let query = sqlx::query(
        "INSERT INTO audit_log (seq, at, kind, user_id, device_id, wallet_id, detail, prev_hash, hash) \
         SELECT $1, $2, $3, $4, $5, $6, $7, $8, $9 \
         WHERE EXISTS (SELECT 1 FROM audit_log p WHERE p.seq = $10 AND p.hash = $8) \
         ON CONFLICT (seq) DO NOTHING",
    );
    let done = bind_record(query, r).bind(r.seq - 1).execute(db).await?;
    Ok(done.rows_affected() == 1)
}

/// Appends a record in `tx` (after reading the head under the audit-head lock).
///
/// # Errors
/// A database error.
pub async fn insert(tx: &mut WriteTx, r: &NewRecord<'_>) -> Result<(), sqlx::Error> {
    let query = sqlx::query(
        "INSERT INTO audit_log (seq, at, kind, user_id, device_id, wallet_id, detail, prev_hash, hash) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
    );
    bind_record(query, r).execute(&mut **tx).await?;
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
