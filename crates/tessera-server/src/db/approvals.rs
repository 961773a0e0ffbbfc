//! `sign_requests`: the signing requests a policy allowed (for its per-hour and per-24h rules)
//! and their approval by another device.

use sqlx::any::AnyExecutor;

use super::{Approval, RequestKind};

/// A signing request the policy allowed.
pub struct NewSignRequest<'a> {
    /// Its session.
    pub session_id: &'a str,
    /// The wallet.
    pub wallet_id: &'a str,
    /// The asking device.
    pub device_id: &'a str,
    /// The request's kind.
    pub kind: RequestKind,
    /// The value, decimal wei (transactions).
    pub value_wei: Option<String>,
    /// The most it can pay in fees, decimal wei (transactions).
    pub max_fee_wei: Option<String>,
    /// What it lets happen to tokens, a JSON array of `{token, amount}` (None: nothing).
    pub token_amounts: Option<String>,
    /// What its Bitcoin transaction spends from the wallet, `{txid, sat}` (None: not a PSBT).
    pub btc_spend: Option<String>,
    /// The digest, hex.
    pub digest: &'a str,
    /// What is signed, for people.
    pub summary: &'a str,
    /// Now.
    pub requested_at: i64,
    /// `None` or `Pending`.
    pub approval: Approval,
    /// The end of its approval window.
    pub expires_at: i64,
}

/// Inserts a signing request.
///
/// # Errors
/// A database error.
pub async fn insert(db: impl AnyExecutor<'_>, r: &NewSignRequest<'_>) -> Result<(), sqlx::Error> {
    bind_request(
        sqlx::query(
            "INSERT INTO sign_requests (session_id, wallet_id, device_id, kind, value_wei, max_fee_wei, digest, summary, requested_at, approval, expires_at, token_amounts, btc_spend) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13)",
        ),
        r,
    )
    .execute(db)
    .await?;
    Ok(())
}

/// Binds `r`'s thirteen columns, in the order [`insert`] lists them, after what `query` has
/// bound already.
pub(crate) fn bind_request<'q>(
    query: sqlx::query::Query<'q, sqlx::Any, sqlx::any::AnyArguments>,
    r: &'q NewSignRequest<'_>,
) -> sqlx::query::Query<'q, sqlx::Any, sqlx::any::AnyArguments> {
    query
        .bind(r.session_id)
        .bind(r.wallet_id)
        .bind(r.device_id)
        .bind(r.kind)
        .bind(r.value_wei.as_deref())
        .bind(r.max_fee_wei.as_deref())
        .bind(r.digest)
        .bind(r.summary)
        .bind(r.requested_at)
        .bind(r.approval)
        .bind(r.expires_at)
        .bind(r.token_amounts.as_deref())
        .bind(r.btc_spend.as_deref())
}

/// A recent request: requested_at, value_wei, max_fee_wei, approval, token_amounts, btc_spend.
pub type RecentRow = (
    i64,
    Option<String>,
    Option<String>,
    Approval,
    Option<String>,
    Option<String>,
);

/// A wallet's requests after `since`.
///
/// # Errors
/// A database error.
pub async fn since(
    db: impl AnyExecutor<'_>,
    wallet_id: &str,
    since: i64,
) -> Result<Vec<RecentRow>, sqlx::Error> {
    sqlx::query_as(
        "SELECT requested_at, value_wei, max_fee_wei, approval, token_amounts, btc_spend FROM sign_requests WHERE wallet_id = $1 AND requested_at > $2",
    )
    .bind(wallet_id)
    .bind(since)
    .fetch_all(db)
    .await
}

/// A request waiting for approval: session, wallet, device, summary, digest, expires_at.
pub type PendingRow = (String, String, String, String, String, i64);

/// The requests of `user_id`'s wallets waiting for approval at `at`, oldest first.
///
/// # Errors
/// A database error.
pub async fn pending_of_user(
    db: impl AnyExecutor<'_>,
    user_id: &str,
    at: i64,
) -> Result<Vec<PendingRow>, sqlx::Error> {
    sqlx::query_as(
        "SELECT r.session_id, r.wallet_id, r.device_id, r.summary, r.digest, r.expires_at \
         FROM sign_requests r JOIN wallets w ON w.id = r.wallet_id \
         WHERE w.user_id = $1 AND r.approval = 'pending' AND r.expires_at > $2 ORDER BY r.requested_at",
    )
    .bind(user_id)
    .bind(at)
    .fetch_all(db)
    .await
}

/// The request of session `session_id` on a wallet of `user_id`: wallet, requesting device,
/// digest, approval, expires_at.
///
/// # Errors
/// A database error.
pub async fn of_user(
    db: impl AnyExecutor<'_>,
    session_id: &str,
    user_id: &str,
) -> Result<Option<(String, String, String, Approval, i64)>, sqlx::Error> {
    sqlx::query_as(
        "SELECT r.wallet_id, r.device_id, r.digest, r.approval, r.expires_at \
         FROM sign_requests r JOIN wallets w ON w.id = r.wallet_id WHERE r.session_id = $1 AND w.user_id = $2",
    )
    .bind(session_id)
    .bind(user_id)
    .fetch_optional(db)
    .await
}

/// Records a pending request's decision; returns `false` when it was no longer pending.
///
/// # Errors
/// A database error.
pub async fn decide(
    db: impl AnyExecutor<'_>,
    session_id: &str,
    decision: Approval,
    decided_by: &str,
    at: i64,
) -> Result<bool, sqlx::Error> {
    let done = sqlx::query(
        "UPDATE sign_requests SET approval = $1, decided_by = $2, decided_at = $3 WHERE session_id = $4 AND approval = 'pending'",
    )
    .bind(decision)
    .bind(decided_by)
    .bind(at)
    .bind(session_id)
    .execute(db)
    .await?;
    Ok(done.rows_affected() == 1)
}

/// A request's stored approval and the end of its window (none: no request row).
///
/// # Errors
/// A database error.
pub async fn approval(
    db: impl AnyExecutor<'_>,
    session_id: &str,
) -> Result<Option<(Approval, Option<i64>)>, sqlx::Error> {
    sqlx::query_as("SELECT approval, expires_at FROM sign_requests WHERE session_id = $1")
        .bind(session_id)
        .fetch_optional(db)
        .await
}
