//! The server's storage: every SQL statement of the server is in this module, one submodule per
//! area (its tables), as typed functions that take the pool, a connection or the caller's
//! [`WriteTx`], so transactions stay where the handlers open them. The states stored as text are
//! enums ([`states`]). Nothing here knows about HTTP or `AppState`.
//!
//! Write transactions: every check-then-act on shared state, and every audited action with its
//! audit record, is one [`WriteTx`].
//!
//! - SQLite: `BEGIN IMMEDIATE` takes the database's write lock at the start, so a transaction
//!   that reads (a policy's history, the audit chain's head) and then writes never interleaves
//!   with another writer. A deferred `BEGIN` would fail with `SQLITE_BUSY` at its first write
//!   whenever another connection committed after its first read, and `busy_timeout` cannot
//!   help there; with `BEGIN IMMEDIATE` a writer waits (up to `busy_timeout`) at the start
//!   instead.
//! - PostgreSQL: a plain `READ COMMITTED` transaction plus explicit locks, which also hold
//!   across server replicas: [`WriteTx::lock_wallet`] (`SELECT … FOR UPDATE` on the wallet row)
//!   for per-wallet state, and a transaction-scoped advisory lock on the audit chain's head,
//!   taken by [`crate::audit::append_in`]. Each statement of a `READ COMMITTED` transaction
//!   sees what was committed before it started, so reads after taking a lock see the previous
//!   holder's writes.
//!
//! Lock order (no deadlocks between replicas): a user name's lock (registration, PostgreSQL: an
//! advisory lock, since the user may not exist yet) or wallet rows first, then the live-session
//! caps' advisory locks, the audit head last. The relay's lock on its waiting codes
//! ([`relay_codes::lock`]) is taken alone, in a transaction that takes no other. Append
//! audit records after the transaction's other writes; nothing but the commit follows them.
//!
//! While a `WriteTx` (or any connection taken from the pool) is open, query only through it
//! (`&mut *tx`), never through the pool (`AppState::db`): SQLite's pool has one connection
//! (`state::open_database` says why), so taking a second one while holding it waits for itself
//! until the pool's acquire timeout, and on PostgreSQL it can exhaust the pool.

use std::ops::{Deref, DerefMut};
use std::sync::Arc;
use std::time::Duration;

use sqlx::{AnyConnection, AnyPool};

use crate::error::{ApiError, ApiResult};

pub mod approvals;
pub mod audit;
pub mod backup_holders;
pub mod bans;
pub mod challenges;
pub mod devices;
pub mod events;
pub mod held;
pub mod mailboxes;
pub mod policies;
pub mod policy_proposals;
pub mod relay_codes;
pub mod replicas;
pub mod requests;
pub mod service_accounts;
pub mod sessions;
pub mod shares;
pub mod sign_runs;
pub mod states;
pub mod wallet_changes;
pub mod wallet_parties;
pub mod wallets;

pub use states::{
    Approval, DeviceStatus, HeldKind, HeldStatus, PartyKind, Protocol, RequestKind, SessionStatus,
    UnknownState,
};

/// Which database the server runs on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Backend {
    /// The embedded SQLite file (one server process).
    Sqlite,
    /// PostgreSQL (possibly several replicas).
    Postgres,
}

/// An open write transaction (see the module documentation). Dropping it without
/// [`WriteTx::commit`] rolls back.
pub struct WriteTx {
    tx: sqlx::Transaction<'static, sqlx::Any>,
    backend: Backend,
    audited: bool,
    audit_head_locked: bool,
    audit_head: Arc<audit::HeadCache>,
}

impl Deref for WriteTx {
    type Target = AnyConnection;

    fn deref(&self) -> &AnyConnection {
        &self.tx
    }
}

impl DerefMut for WriteTx {
    fn deref_mut(&mut self) -> &mut AnyConnection {
        &mut self.tx
    }
}

/// SQLite's "database is locked" codes (plain and extended), reported when `busy_timeout`
/// passed without the lock.
const SQLITE_BUSY_CODES: [&str; 4] = ["5", "261", "517", "773"];

/// How often `BEGIN IMMEDIATE` is tried when the wait of `busy_timeout` was not enough.
const BEGIN_ATTEMPTS: u32 = 3;

fn is_busy(e: &sqlx::Error) -> bool {
    matches!(e, sqlx::Error::Database(d)
        if d.code().is_some_and(|c| SQLITE_BUSY_CODES.contains(&c.as_ref())))
}

impl WriteTx {
    /// Starts a write transaction on `pool` (`audited`: whether audit records are written;
    /// `audit_head`: the process's guess of the chain's head, see [`audit::HeadCache`]).
    ///
    /// # Errors
    /// A database error (on SQLite, after waiting for the write lock repeatedly).
    pub async fn begin(
        pool: &AnyPool,
        backend: Backend,
        audited: bool,
        audit_head: Arc<audit::HeadCache>,
    ) -> ApiResult<WriteTx> {
        let started = std::time::Instant::now();
        let tx = match backend {
            Backend::Postgres => pool.begin().await?,
            Backend::Sqlite => {
                let mut attempt = 1;
                loop {
                    match pool.begin_with("BEGIN IMMEDIATE").await {
                        Ok(tx) => break tx,
                        Err(e) if is_busy(&e) && attempt < BEGIN_ATTEMPTS => attempt += 1,
                        Err(e) => return Err(e.into()),
                    }
                }
            }
        };
        crate::observe::database("begin", started);
        Ok(WriteTx {
            tx,
            backend,
            audited,
            audit_head_locked: false,
            audit_head,
        })
    }

    /// The database.
    #[must_use]
    pub fn backend(&self) -> Backend {
        self.backend
    }

    /// Whether audit records are written (only a benchmark turns the controls off).
    #[must_use]
    pub fn audited(&self) -> bool {
        self.audited
    }

    /// The process's guess of the audit chain's head (see [`audit::HeadCache`]).
    #[must_use]
    pub(crate) fn audit_head(&self) -> &audit::HeadCache {
        &self.audit_head
    }

    /// Serialises this transaction with every other one that locks the same wallet, on every
    /// replica (PostgreSQL: `SELECT … FOR UPDATE` on its row; SQLite: the transaction already
    /// holds the database's write lock). Returns whether the wallet exists.
    ///
    /// # Errors
    /// A database error.
    pub async fn lock_wallet(&mut self, wallet_id: &str) -> ApiResult<bool> {
        let found: Option<(String,)> = match self.backend {
            Backend::Sqlite => sqlx::query_as("SELECT id FROM wallets WHERE id = $1"),
            Backend::Postgres => sqlx::query_as("SELECT id FROM wallets WHERE id = $1 FOR UPDATE"),
        }
        .bind(wallet_id)
        .fetch_optional(&mut **self)
        .await?;
        Ok(found.is_some())
    }

    /// Takes the audit chain's head for this transaction (PostgreSQL: an advisory lock released
    /// at commit or rollback, shared by every replica). Called by
    /// [`crate::audit::append_in`]; once per transaction.
    ///
    /// # Errors
    /// A database error.
    pub(crate) async fn lock_audit_head(&mut self) -> ApiResult<()> {
        if self.audit_head_locked || self.backend == Backend::Sqlite {
            return Ok(());
        }
        sqlx::query("SELECT pg_advisory_xact_lock($1, $2)")
            .bind(AUDIT_LOCK_SPACE)
            .bind(AUDIT_HEAD_LOCK)
            .execute(&mut **self)
            .await?;
        self.audit_head_locked = true;
        Ok(())
    }

    /// Commits (SQLite: durably, `synchronous = FULL`).
    ///
    /// # Errors
    /// A database error; nothing was written then.
    pub async fn commit(self) -> ApiResult<()> {
        let started = std::time::Instant::now();
        let committed = self.tx.commit().await.map_err(ApiError::from);
        crate::observe::database("commit", started);
        committed
    }
}

/// Whether the database's schema is the one this server's migrations make: `Err` says how it
/// differs (a migration missing or failed, or one from a newer server).
///
/// # Errors
/// The difference, or the database's error.
pub async fn schema_current(pool: &AnyPool, backend: Backend) -> Result<(), String> {
    let known = crate::state::migrator(backend)
        .iter()
        .map(|m| m.version)
        .max()
        .unwrap_or(0);
    let (applied, failed): (Option<i64>, i64) = sqlx::query_as(
        "SELECT MAX(CASE WHEN success THEN version END), \
                COUNT(CASE WHEN NOT success THEN 1 END) FROM _sqlx_migrations",
    )
    .fetch_one(pool)
    .await
    .map_err(|e| {
        tracing::warn!(error = %e, "readiness: cannot read the applied migrations");
        "cannot read the applied migrations".to_string()
    })?;
    let applied = applied.unwrap_or(0);
    if failed > 0 {
        return Err(format!("{failed} migration(s) failed"));
    }
    match applied.cmp(&known) {
        std::cmp::Ordering::Equal => Ok(()),
        std::cmp::Ordering::Less => Err(format!(
            "the schema is at migration {applied}, this server needs {known}"
        )),
        std::cmp::Ordering::Greater => Err(format!(
            "the schema is at migration {applied}, newer than this server knows ({known}): \
             a newer server migrated it"
        )),
    }
}

/// Advisory-lock namespace of the audit chain (PostgreSQL); replica liveness locks use another.
const AUDIT_LOCK_SPACE: i32 = 0x7e56;
/// The audit chain's head, in [`AUDIT_LOCK_SPACE`].
const AUDIT_HEAD_LOCK: i32 = 1;

/// How many times a write that records something that already happened (a completed signature,
/// the end of a session) is tried before the server gives up and says so to the client.
pub const DURABLE_ATTEMPTS: u32 = 6;

/// The pause before try `attempt` (2, 3, …) of such a write: 50 ms, doubling.
#[must_use]
pub fn retry_pause(attempt: u32) -> Duration {
    Duration::from_millis(50u64 << attempt.saturating_sub(2).min(6))
}
