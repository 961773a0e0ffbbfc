//! Which protocol sessions are live, and how many each device and each wallet may hold.
//!
//! A session is live while it runs, or while it is created and may still be opened: within the
//! idle timeout of its creation, or — for a signing request that waits for another device's
//! approval — until its approval window closes, then within the idle timeout of the approval
//! (a request approved after hours must not have expired meanwhile).
//!
//! Every session holds server memory once opened (and a refresh holds its wallet), so a device
//! and a wallet may each hold only so many live sessions at once. The count and the insert are
//! one step: on SQLite a single `INSERT … SELECT … WHERE count < cap` statement (it takes the
//! database's write lock before it reads), on PostgreSQL the same statement after transaction
//! advisory locks on the device and the wallet (taken in that order by every creation).

use sqlx::AnyConnection;

use crate::error::ApiError;
use crate::state::{AppState, now};

/// Default cap on a device's live sessions.
pub const DEFAULT_MAX_PER_DEVICE: u32 = 64;
/// Default cap on a wallet's live sessions (all devices of its user together).
pub const DEFAULT_MAX_PER_WALLET: u32 = 128;

/// Advisory-lock namespace of the session caps (PostgreSQL).
const CAP_LOCK_SPACE: i32 = 0x5e55;

/// The condition "session `s` is live" in SQL, given the placeholders of now and of now less the
/// idle timeout. The `status IN (…)` term lets both databases use the partial indexes of
/// migration 0010.
macro_rules! live {
    ($now:literal, $cutoff:literal) => {
        concat!(
            "s.status IN ('created', 'running') AND (s.status = 'running' OR s.last_message_at >= ",
            $cutoff,
            " OR EXISTS (SELECT 1 FROM sign_requests r WHERE r.session_id = s.id AND \
             ((r.approval = 'pending' AND r.expires_at > ",
            $now,
            ") OR (r.approval = 'approved' AND r.decided_at >= ",
            $cutoff,
            "))))"
        )
    };
}

/// A session to create.
pub struct NewSession<'a> {
    /// Its id (hex).
    pub id: &'a str,
    /// The device that runs it.
    pub device_id: &'a str,
    /// The wallet (a fresh id for a keygen).
    pub wallet_id: &'a str,
    /// `keygen`, `sign` or `refresh`.
    pub protocol: &'a str,
    /// Its nonce.
    pub nonce: &'a [u8],
    /// The request's JSON.
    pub params: &'a str,
    /// The wallet's epoch.
    pub epoch: i64,
}

/// Why a session was not created.
pub enum InsertError {
    /// A cap is reached (409 with a message saying which).
    Cap(ApiError),
    /// The database refused the insert (the caller inspects it: a unique violation means a
    /// refresh of the wallet is already live).
    Database(sqlx::Error),
}

impl From<sqlx::Error> for InsertError {
    fn from(e: sqlx::Error) -> Self {
        InsertError::Database(e)
    }
}

/// Inserts `new` as a created session unless its device or its wallet already holds its cap of
/// live sessions. On PostgreSQL `conn` must be inside a transaction (the locks last until it
/// ends).
///
/// # Errors
/// [`InsertError::Cap`] when a cap is reached; [`InsertError::Database`] otherwise.
pub async fn insert_within_caps(
    state: &AppState,
    conn: &mut AnyConnection,
    new: &NewSession<'_>,
) -> Result<(), InsertError> {
    let config = state.config();
    if config.database_url.is_some() {
        for key in [new.device_id, new.wallet_id] {
            sqlx::query("SELECT pg_advisory_xact_lock($1, hashtext($2))")
                .bind(CAP_LOCK_SPACE)
                .bind(key)
                .execute(&mut *conn)
                .await?;
        }
    }
    let at = now();
    let cutoff = at - config.session_idle_timeout.as_secs() as i64;
    let inserted = sqlx::query(concat!(
        "INSERT INTO sessions (id, device_id, wallet_id, protocol, status, nonce, params, epoch, created_at, last_message_at) \
         SELECT $1, $2, $3, $4, 'created', $5, $6, $7, $8, $8 \
         WHERE (SELECT COUNT(*) FROM sessions s WHERE s.device_id = $2 AND ",
        live!("$8", "$11"),
        ") < $9 AND (SELECT COUNT(*) FROM sessions s WHERE s.wallet_id = $3 AND ",
        live!("$8", "$11"),
        ") < $10"
    ))
    .bind(new.id)
    .bind(new.device_id)
    .bind(new.wallet_id)
    .bind(new.protocol)
    .bind(new.nonce)
    .bind(new.params)
    .bind(new.epoch)
    .bind(at)
    .bind(i64::from(config.max_sessions_per_device))
    .bind(i64::from(config.max_sessions_per_wallet))
    .bind(cutoff)
    .execute(&mut *conn)
    .await?;
    if inserted.rows_affected() == 1 {
        return Ok(());
    }
    // Which cap: count the device's live sessions (the same condition, same parameters).
    let (device_live,): (i64,) = sqlx::query_as(concat!(
        "SELECT COUNT(*) FROM sessions s WHERE s.device_id = $1 AND ",
        live!("$2", "$3")
    ))
    .bind(new.device_id)
    .bind(at)
    .bind(cutoff)
    .fetch_one(&mut *conn)
    .await?;
    let idle = config.session_idle_timeout.as_secs();
    Err(InsertError::Cap(
        if device_live >= i64::from(config.max_sessions_per_device) {
            ApiError::Conflict(format!(
                "this device already has {} sessions open or waiting (the most it may have); \
                 finish them, or wait until unopened ones expire ({idle} s after their creation \
                 or approval)",
                config.max_sessions_per_device
            ))
        } else {
            ApiError::Conflict(format!(
                "this wallet already has {} sessions open or waiting (the most it may have); \
                 finish them, or wait until unopened ones expire ({idle} s after their creation \
                 or approval)",
                config.max_sessions_per_wallet
            ))
        },
    ))
}

/// The Unix time until which a created session may still be opened: the idle timeout after its
/// creation or, for a signing request held for approval, the end of its approval window while it
/// waits and the idle timeout after the approval once approved.
#[must_use]
pub fn open_by(
    idle_secs: i64,
    created: i64,
    approval: Option<&str>,
    approval_expires: Option<i64>,
    decided_at: Option<i64>,
) -> i64 {
    let mut by = created + idle_secs;
    match approval {
        Some("pending") => by = by.max(approval_expires.unwrap_or(0)),
        Some("approved") => by = by.max(decided_at.unwrap_or(0) + idle_secs),
        _ => {}
    }
    by
}

/// Where a signing session's approval stands, from its `sign_requests` row (`None`: no row):
/// `none`, `pending`, `approved`, `refused` or `expired` (pending past its window). The same as
/// `policy::approval_of`, from a row already read.
#[must_use]
pub fn approval_state(approval: Option<String>, expires: Option<i64>) -> String {
    match (approval, expires) {
        (None, _) => "none".into(),
        (Some(a), Some(exp)) if a == "pending" && exp <= now() => "expired".into(),
        (Some(a), _) => a,
    }
}

/// [`insert_within_caps`] in a transaction of its own.
///
/// # Errors
/// As [`insert_within_caps`].
pub async fn create(state: &AppState, new: &NewSession<'_>) -> Result<(), InsertError> {
    let mut tx = state.db().begin().await?;
    insert_within_caps(state, &mut tx, new).await?;
    tx.commit().await?;
    Ok(())
}
