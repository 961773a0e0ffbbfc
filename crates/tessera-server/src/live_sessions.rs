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
//! database's write lock before it reads; a signing request's batch,
//! `db::sessions::insert_sign_request`, inserts a NULL status instead, which fails the batch),
//! on PostgreSQL the same statement after transaction advisory locks on the device and the
//! wallet (taken in that order by every creation).

use sqlx::AnyConnection;

use crate::db::{self, Approval};
use crate::error::ApiError;
use crate::state::{AppState, now};

pub use crate::state::{
    DEFAULT_MAX_SESSIONS_PER_DEVICE as DEFAULT_MAX_PER_DEVICE,
    DEFAULT_MAX_SESSIONS_PER_WALLET as DEFAULT_MAX_PER_WALLET,
};

pub use crate::db::sessions::NewSession;

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
        db::sessions::lock_caps(conn, new.device_id, new.wallet_id).await?;
    }
    let caps = caps(state);
    if db::sessions::insert_within_caps(conn, new, &caps).await? {
        return Ok(());
    }
    // Which cap: count the device's live sessions (the same condition, same parameters).
    let device_live =
        db::sessions::live_of_device(conn, new.device_id, caps.at, caps.cutoff).await?;
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

/// The caps on live sessions, now.
#[must_use]
pub fn caps(state: &AppState) -> db::sessions::Caps {
    let config = state.config();
    let at = now();
    db::sessions::Caps {
        at,
        cutoff: at - config.session_idle_timeout.as_secs() as i64,
        per_device: i64::from(config.max_sessions_per_device),
        per_wallet: i64::from(config.max_sessions_per_wallet),
    }
}

/// The Unix time until which a created session may still be opened: the idle timeout after its
/// creation or, for a signing request held for approval, the end of its approval window while it
/// waits and the idle timeout after the approval once approved.
#[must_use]
pub fn open_by(
    idle_secs: i64,
    created: i64,
    approval: Option<Approval>,
    approval_expires: Option<i64>,
    decided_at: Option<i64>,
) -> i64 {
    let mut by = created + idle_secs;
    match approval {
        Some(Approval::Pending) => by = by.max(approval_expires.unwrap_or(0)),
        Some(Approval::Approved) => by = by.max(decided_at.unwrap_or(0) + idle_secs),
        _ => {}
    }
    by
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
