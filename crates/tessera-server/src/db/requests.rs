//! `requests` and `request_decisions`: durable signing requests and their approvers' decisions
//! (issue 16). A request row is changed only in a transaction that locked it first ([`lock`]),
//! with its audit record.

use sqlx::any::AnyExecutor;

use super::{Backend, RequestKind, WriteTx};
use crate::error::ApiResult;
use tessera_api::RequestState;

/// A stored request.
#[derive(Clone, Debug, sqlx::FromRow)]
pub struct Row {
    /// Its id (32 hex digits).
    pub id: String,
    /// The wallet.
    pub wallet_id: String,
    /// `device` or `service`.
    pub creator_kind: String,
    /// The creating device or service account.
    pub creator_id: String,
    /// Its kind.
    pub kind: RequestKind,
    /// The intent as sent, JSON of `tessera_api::intent::SignKind`.
    pub intent: String,
    /// The BIP-32 path.
    pub path: String,
    /// The digest, hex.
    pub digest: String,
    /// What approvers are shown and sign.
    pub summary: String,
    /// Where it stands (as stored: a waiting request past its expiry reads as expired,
    /// `crate::requests`).
    pub state: RequestState,
    /// JSON of the `ApprovalRule` it waits for.
    pub approval_rule: Option<String>,
    /// The policy's version at creation.
    pub policy_version: i64,
    /// Created, Unix seconds.
    pub created_at: i64,
    /// Expires, Unix seconds.
    pub expires_at: i64,
    /// Last changed, Unix seconds.
    pub updated_at: i64,
    /// The protocol session that runs (or last ran) it.
    pub session_id: Option<String>,
    /// Protocol sessions opened for it.
    pub attempts: i64,
    /// r ‖ s ‖ v hex, once signed.
    pub signature: Option<String>,
    /// Why it was refused or failed.
    pub detail: Option<String>,
}

const COLUMNS: &str = "id, wallet_id, creator_kind, creator_id, kind, intent, path, digest, summary, \
     state, approval_rule, policy_version, created_at, expires_at, updated_at, session_id, attempts, \
     signature, detail";

/// Inserts a new request.
///
/// # Errors
/// A database error.
pub async fn insert(db: impl AnyExecutor<'_>, r: &Row) -> Result<(), sqlx::Error> {
    sqlx::query(sqlx::AssertSqlSafe(format!(
        "INSERT INTO requests ({COLUMNS}) VALUES \
         ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18, $19)"
    )))
    .bind(&r.id)
    .bind(&r.wallet_id)
    .bind(&r.creator_kind)
    .bind(&r.creator_id)
    .bind(r.kind)
    .bind(&r.intent)
    .bind(&r.path)
    .bind(&r.digest)
    .bind(&r.summary)
    .bind(r.state)
    .bind(r.approval_rule.as_deref())
    .bind(r.policy_version)
    .bind(r.created_at)
    .bind(r.expires_at)
    .bind(r.updated_at)
    .bind(r.session_id.as_deref())
    .bind(r.attempts)
    .bind(r.signature.as_deref())
    .bind(r.detail.as_deref())
    .execute(db)
    .await?;
    Ok(())
}

/// Writes a request's changing columns (state, session, attempts, signature, detail, updated).
///
/// # Errors
/// A database error.
pub async fn save(db: impl AnyExecutor<'_>, r: &Row) -> Result<(), sqlx::Error> {
    sqlx::query(
        "UPDATE requests SET state = $1, session_id = $2, attempts = $3, signature = $4, \
         detail = $5, updated_at = $6 WHERE id = $7",
    )
    .bind(r.state)
    .bind(r.session_id.as_deref())
    .bind(r.attempts)
    .bind(r.signature.as_deref())
    .bind(r.detail.as_deref())
    .bind(r.updated_at)
    .bind(&r.id)
    .execute(db)
    .await?;
    Ok(())
}

/// The request `id`.
///
/// # Errors
/// A database error.
pub async fn get(db: impl AnyExecutor<'_>, id: &str) -> Result<Option<Row>, sqlx::Error> {
    sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT {COLUMNS} FROM requests WHERE id = $1"
    )))
    .bind(id)
    .fetch_optional(db)
    .await
}

/// The request `id`, locked for `tx` (PostgreSQL: `SELECT … FOR UPDATE`; SQLite: the
/// transaction holds the write lock already), so that its decisions and state changes are
/// made one after the other on every replica.
///
/// # Errors
/// A database error.
pub async fn lock(tx: &mut WriteTx, id: &str) -> ApiResult<Option<Row>> {
    let sql = match tx.backend() {
        Backend::Sqlite => format!("SELECT {COLUMNS} FROM requests WHERE id = $1"),
        Backend::Postgres => format!("SELECT {COLUMNS} FROM requests WHERE id = $1 FOR UPDATE"),
    };
    Ok(sqlx::query_as(sqlx::AssertSqlSafe(sql))
        .bind(id)
        .fetch_optional(&mut **tx)
        .await?)
}

/// The request run by protocol session `session_id`, locked for `tx` as [`lock`] does.
///
/// # Errors
/// A database error.
pub async fn lock_by_session(tx: &mut WriteTx, session_id: &str) -> ApiResult<Option<Row>> {
    let sql = match tx.backend() {
        Backend::Sqlite => format!("SELECT {COLUMNS} FROM requests WHERE session_id = $1"),
        Backend::Postgres => {
            format!("SELECT {COLUMNS} FROM requests WHERE session_id = $1 FOR UPDATE")
        }
    };
    Ok(sqlx::query_as(sqlx::AssertSqlSafe(sql))
        .bind(session_id)
        .fetch_optional(&mut **tx)
        .await?)
}

/// The ids of requests that wait (for approval or co-signers) past their expiry at `at`, or
/// whose signing session is no longer live (its session over, or created and never opened
/// before `unopened_before`), at most `limit`.
///
/// # Errors
/// A database error.
pub async fn due(
    db: impl AnyExecutor<'_>,
    at: i64,
    unopened_before: i64,
    limit: i64,
) -> Result<Vec<String>, sqlx::Error> {
    let rows: Vec<(String,)> = sqlx::query_as(
        "SELECT r.id FROM requests r WHERE r.expires_at <= $1 AND (\
           r.state IN ('awaiting_approval', 'ready') \
           OR (r.state = 'signing' AND NOT EXISTS (SELECT 1 FROM sessions s WHERE s.id = r.session_id \
               AND (s.status = 'running' OR (s.status = 'created' AND s.created_at > $2))))) \
         ORDER BY r.expires_at LIMIT $3",
    )
    .bind(at)
    .bind(unopened_before)
    .bind(limit)
    .fetch_all(db)
    .await?;
    Ok(rows.into_iter().map(|(id,)| id).collect())
}

/// Whether protocol session `session_id` is live: running, or created after
/// `unopened_before` (it may still be opened).
///
/// # Errors
/// A database error.
pub async fn session_live(
    db: impl AnyExecutor<'_>,
    session_id: &str,
    unopened_before: i64,
) -> Result<bool, sqlx::Error> {
    let (n,): (i64,) = sqlx::query_as(
        "SELECT COUNT(*) FROM sessions WHERE id = $1 \
         AND (status = 'running' OR (status = 'created' AND created_at > $2))",
    )
    .bind(session_id)
    .bind(unopened_before)
    .fetch_one(db)
    .await?;
    Ok(n > 0)
}

/// The requests `device_id` (of `user_id`) may see: of wallets its user owns or it is an
/// accepted device party of, those it created, and those whose approval rule may name it or
/// its user (`rule_may_name`: a prefilter, the caller checks the rule), newest first, with
/// whether the first three hold. At most `limit`.
///
/// # Errors
/// A database error.
pub async fn candidates(
    db: impl AnyExecutor<'_>,
    device_id: &str,
    user_id: &str,
    wallet_id: Option<&str>,
    states: &[RequestState],
    limit: i64,
) -> Result<Vec<(Row, bool)>, sqlx::Error> {
    let states: Vec<&str> = states.iter().map(|s| s.as_str()).collect();
    // The states are the enum's own texts, never the caller's.
    let state_filter = if states.is_empty() {
        String::new()
    } else {
        format!(" AND r.state IN ('{}')", states.join("', '"))
    };
    let access = "(w.user_id = $2 OR r.creator_id = $1 OR EXISTS (SELECT 1 FROM wallet_parties p \
         WHERE p.wallet_id = r.wallet_id AND p.device_id = $1 AND p.kind = 'device' AND p.acceptance IS NOT NULL))";
    let columns: Vec<String> = COLUMNS.split(", ").map(|c| format!("r.{c}")).collect();
    let sql = format!(
        "SELECT {}, CASE WHEN {access} THEN 1 ELSE 0 END AS direct FROM requests r \
         JOIN wallets w ON w.id = r.wallet_id \
         WHERE ({access} OR r.approval_rule LIKE $3 OR r.approval_rule LIKE $4) \
         AND ($5 = '' OR r.wallet_id = $5){state_filter} \
         ORDER BY r.created_at DESC, r.id LIMIT $6",
        columns.join(", ")
    );
    let rows: Vec<RowWithAccess> = sqlx::query_as(sqlx::AssertSqlSafe(sql))
        .bind(device_id)
        .bind(user_id)
        .bind(format!("%\"{device_id}\"%"))
        .bind(format!("%\"{user_id}\"%"))
        .bind(wallet_id.unwrap_or(""))
        .bind(limit)
        .fetch_all(db)
        .await?;
    Ok(rows.into_iter().map(|r| (r.row, r.direct != 0)).collect())
}

#[derive(sqlx::FromRow)]
struct RowWithAccess {
    #[sqlx(flatten)]
    row: Row,
    direct: i64,
}

/// Whether `device_id` (of `user_id`) may see request `id` directly: its user owns the wallet,
/// it is an accepted device party of it, or it created the request.
///
/// # Errors
/// A database error.
pub async fn direct_access(
    db: impl AnyExecutor<'_>,
    id: &str,
    device_id: &str,
    user_id: &str,
) -> Result<bool, sqlx::Error> {
    let (n,): (i64,) = sqlx::query_as(
        "SELECT COUNT(*) FROM requests r JOIN wallets w ON w.id = r.wallet_id WHERE r.id = $1 AND \
         (w.user_id = $3 OR r.creator_id = $2 OR EXISTS (SELECT 1 FROM wallet_parties p \
         WHERE p.wallet_id = r.wallet_id AND p.device_id = $2 AND p.kind = 'device' AND p.acceptance IS NOT NULL))",
    )
    .bind(id)
    .bind(device_id)
    .bind(user_id)
    .fetch_one(db)
    .await?;
    Ok(n > 0)
}

/// A decision: device, labels (JSON array), approve, summary, signature, at.
pub type DecisionRow = (String, String, i64, String, String, i64);

/// The decisions on request `id`, in the order they were given.
///
/// # Errors
/// A database error.
pub async fn decisions(
    db: impl AnyExecutor<'_>,
    id: &str,
) -> Result<Vec<DecisionRow>, sqlx::Error> {
    sqlx::query_as(
        "SELECT device_id, labels, approve, summary, signature, at FROM request_decisions \
         WHERE request_id = $1 ORDER BY at, device_id",
    )
    .bind(id)
    .fetch_all(db)
    .await
}

/// Stores a decision (the primary key refuses a second one by the same device).
///
/// # Errors
/// A database error.
pub async fn insert_decision(
    db: impl AnyExecutor<'_>,
    request_id: &str,
    (device_id, labels, approve, summary, signature, at): (&str, &str, bool, &str, &str, i64),
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO request_decisions (request_id, device_id, labels, approve, summary, signature, at) \
         VALUES ($1, $2, $3, $4, $5, $6, $7)",
    )
    .bind(request_id)
    .bind(device_id)
    .bind(labels)
    .bind(i64::from(approve))
    .bind(summary)
    .bind(signature)
    .bind(at)
    .execute(db)
    .await?;
    Ok(())
}

/// The active devices of `user_id`, but `except`.
///
/// # Errors
/// A database error.
pub async fn active_devices_of_user(
    db: impl AnyExecutor<'_>,
    user_id: &str,
) -> Result<Vec<String>, sqlx::Error> {
    let rows: Vec<(String,)> = sqlx::query_as(
        "SELECT id FROM devices WHERE user_id = $1 AND status = 'active' ORDER BY registered_at, id",
    )
    .bind(user_id)
    .fetch_all(db)
    .await?;
    Ok(rows.into_iter().map(|(d,)| d).collect())
}

/// The active device parties of a structure wallet: the owner's devices, and other users'
/// that accepted their party.
///
/// # Errors
/// A database error.
pub async fn active_device_parties(
    db: impl AnyExecutor<'_>,
    wallet_id: &str,
) -> Result<Vec<String>, sqlx::Error> {
    let rows: Vec<(String,)> = sqlx::query_as(
        "SELECT p.device_id FROM wallet_parties p JOIN devices d ON d.id = p.device_id \
         JOIN wallets w ON w.id = p.wallet_id \
         WHERE p.wallet_id = $1 AND p.kind = 'device' AND d.status = 'active' \
         AND (p.acceptance IS NOT NULL OR p.user_id = w.user_id) ORDER BY p.party",
    )
    .bind(wallet_id)
    .fetch_all(db)
    .await?;
    Ok(rows.into_iter().map(|(d,)| d).collect())
}

/// The owner of wallet `wallet_id`.
///
/// # Errors
/// A database error.
pub async fn wallet_owner(
    db: impl AnyExecutor<'_>,
    wallet_id: &str,
) -> Result<Option<(String, Option<String>)>, sqlx::Error> {
    sqlx::query_as("SELECT user_id, structure FROM wallets WHERE id = $1")
        .bind(wallet_id)
        .fetch_optional(db)
        .await
}

/// Marks the `sign_requests` row of request `id` refused, so that the policy's limits no longer
/// count it (`crate::policy::history` skips refused rows).
///
/// # Errors
/// A database error.
pub async fn stop_counting(db: impl AnyExecutor<'_>, id: &str, at: i64) -> Result<(), sqlx::Error> {
    sqlx::query(
        "UPDATE sign_requests SET approval = 'refused', decided_at = $1 WHERE session_id = $2",
    )
    .bind(at)
    .bind(id)
    .execute(db)
    .await?;
    Ok(())
}
