//! `banned_parties`, `wallet_locks` and `wallet_aborts`: bans of blamed parties, wallet locks
//! after repeated unattributed aborts, and those aborts.

use sqlx::AnyConnection;
use sqlx::any::AnyExecutor;

/// A stored ban: id, wallet, party, device, session, round, reason, banned_at,
/// lift_approved_by, lifted_at.
pub type BanRow = (
    String,
    String,
    i64,
    Option<String>,
    String,
    i64,
    String,
    i64,
    Option<String>,
    Option<i64>,
);

macro_rules! ban_select {
    ($rest:literal) => {
        concat!(
            "SELECT id, wallet_id, party, device_id, session_id, round, reason, banned_at, \
             lift_approved_by, lifted_at FROM banned_parties ",
            $rest
        )
    };
}

/// The ban in force on `party` of a wallet.
///
/// # Errors
/// A database error.
pub async fn in_force(
    db: impl AnyExecutor<'_>,
    wallet_id: &str,
    party: i64,
) -> Result<Option<BanRow>, sqlx::Error> {
    sqlx::query_as(ban_select!(
        "WHERE wallet_id = $1 AND party = $2 AND lifted_at IS NULL"
    ))
    .bind(wallet_id)
    .bind(party)
    .fetch_optional(db)
    .await
}

/// The bans in force on a wallet's parties, by party.
///
/// # Errors
/// A database error.
pub async fn all_in_force(
    db: impl AnyExecutor<'_>,
    wallet_id: &str,
) -> Result<Vec<BanRow>, sqlx::Error> {
    sqlx::query_as(ban_select!(
        "WHERE wallet_id = $1 AND lifted_at IS NULL ORDER BY party"
    ))
    .bind(wallet_id)
    .fetch_all(db)
    .await
}

/// The ban `ban_id`.
///
/// # Errors
/// A database error.
pub async fn by_id(db: impl AnyExecutor<'_>, ban_id: &str) -> Result<Option<BanRow>, sqlx::Error> {
    sqlx::query_as(ban_select!("WHERE id = $1"))
        .bind(ban_id)
        .fetch_optional(db)
        .await
}

/// A wallet's bans, newest first.
///
/// # Errors
/// A database error.
pub async fn of_wallet(
    db: impl AnyExecutor<'_>,
    wallet_id: &str,
) -> Result<Vec<BanRow>, sqlx::Error> {
    sqlx::query_as(ban_select!(
        "WHERE wallet_id = $1 ORDER BY banned_at DESC, id"
    ))
    .bind(wallet_id)
    .fetch_all(db)
    .await
}

/// The lock in force on a wallet: its reason and time.
///
/// # Errors
/// A database error.
pub async fn lock_in_force(
    db: impl AnyExecutor<'_>,
    wallet_id: &str,
) -> Result<Option<(String, i64)>, sqlx::Error> {
    sqlx::query_as(
        "SELECT reason, locked_at FROM wallet_locks WHERE wallet_id = $1 AND lifted_at IS NULL",
    )
    .bind(wallet_id)
    .fetch_optional(db)
    .await
}

/// A new ban.
pub struct NewBan<'a> {
    /// Its id.
    pub id: &'a str,
    /// The wallet.
    pub wallet_id: &'a str,
    /// The blamed party.
    pub party: i64,
    /// The device that ran the session as that party.
    pub device_id: Option<&'a str>,
    /// The session.
    pub session_id: &'a str,
    /// The blamed round.
    pub round: i64,
    /// The engine's reason.
    pub reason: &'a str,
    /// Now.
    pub at: i64,
}

/// Bans a party (nothing when a ban on it is already in force).
///
/// # Errors
/// A database error.
pub async fn insert(db: impl AnyExecutor<'_>, b: &NewBan<'_>) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO banned_parties (id, wallet_id, party, device_id, session_id, round, reason, banned_at) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8) \
         ON CONFLICT (wallet_id, party) WHERE lifted_at IS NULL DO NOTHING",
    )
    .bind(b.id)
    .bind(b.wallet_id)
    .bind(b.party)
    .bind(b.device_id)
    .bind(b.session_id)
    .bind(b.round)
    .bind(b.reason)
    .bind(b.at)
    .execute(db)
    .await?;
    Ok(())
}

/// Records an abort of session `session_id` (once per session).
///
/// # Errors
/// A database error.
pub async fn insert_abort(
    db: impl AnyExecutor<'_>,
    session_id: &str,
    wallet_id: &str,
    party: Option<i64>,
    reason: &str,
    at: i64,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO wallet_aborts (session_id, wallet_id, party, reason, at) VALUES ($1, $2, $3, $4, $5) \
         ON CONFLICT (session_id) DO NOTHING",
    )
    .bind(session_id)
    .bind(wallet_id)
    .bind(party)
    .bind(reason)
    .bind(at)
    .execute(db)
    .await?;
    Ok(())
}

/// How many aborts of a wallet happened after `since`.
///
/// # Errors
/// A database error.
pub async fn aborts_since(
    db: impl AnyExecutor<'_>,
    wallet_id: &str,
    since: i64,
) -> Result<i64, sqlx::Error> {
    let (count,): (i64,) =
        sqlx::query_as("SELECT COUNT(*) FROM wallet_aborts WHERE wallet_id = $1 AND at > $2")
            .bind(wallet_id)
            .bind(since)
            .fetch_one(db)
            .await?;
    Ok(count)
}

/// Locks a wallet; returns `false` when a lock is already in force.
///
/// # Errors
/// A database error.
pub async fn insert_lock(
    db: impl AnyExecutor<'_>,
    id: &str,
    wallet_id: &str,
    reason: &str,
    at: i64,
) -> Result<bool, sqlx::Error> {
    let locked = sqlx::query(
        "INSERT INTO wallet_locks (id, wallet_id, reason, locked_at) VALUES ($1, $2, $3, $4) \
         ON CONFLICT (wallet_id) WHERE lifted_at IS NULL DO NOTHING",
    )
    .bind(id)
    .bind(wallet_id)
    .bind(reason)
    .bind(at)
    .execute(db)
    .await?;
    Ok(locked.rows_affected() == 1)
}

/// What a refresh lifted.
#[derive(Default)]
pub struct Lifted {
    /// The ids of the bans lifted.
    pub bans: Vec<String>,
    /// Whether a wallet lock was lifted.
    pub lock: bool,
}

/// Lifts, for the refresh `session_id` created at `created`, the wallet's bans whose lift was
/// approved before it was created and the wallet's lock, and forgets its aborts.
///
/// # Errors
/// A database error.
pub async fn lift(
    conn: &mut AnyConnection,
    wallet_id: &str,
    session_id: &str,
    created: i64,
    at: i64,
) -> Result<Lifted, sqlx::Error> {
    let bans: Vec<(String,)> = sqlx::query_as(
        "SELECT id FROM banned_parties WHERE wallet_id = $1 AND lifted_at IS NULL \
         AND lift_approved_at IS NOT NULL AND lift_approved_at <= $2",
    )
    .bind(wallet_id)
    .bind(created)
    .fetch_all(&mut *conn)
    .await?;
    for (id,) in &bans {
        sqlx::query("UPDATE banned_parties SET lifted_at = $1, lift_session = $2 WHERE id = $3")
            .bind(at)
            .bind(session_id)
            .bind(id)
            .execute(&mut *conn)
            .await?;
    }
    let lock = sqlx::query(
        "UPDATE wallet_locks SET lifted_at = $1, lift_session = $2 WHERE wallet_id = $3 AND lifted_at IS NULL",
    )
    .bind(at)
    .bind(session_id)
    .bind(wallet_id)
    .execute(&mut *conn)
    .await?;
    sqlx::query("DELETE FROM wallet_aborts WHERE wallet_id = $1")
        .bind(wallet_id)
        .execute(&mut *conn)
        .await?;
    Ok(Lifted {
        bans: bans.into_iter().map(|(id,)| id).collect(),
        lock: lock.rows_affected() > 0,
    })
}

/// At a resharing's switch of structure wallet `wallet_id`, once its parties are the new ones:
/// lifts the bans in force on devices that are no longer parties (returns their ids), and moves
/// the others to their device's new party index.
///
/// # Errors
/// A database error.
pub async fn after_structure_switch(
    conn: &mut AnyConnection,
    wallet_id: &str,
    session_id: &str,
    at: i64,
) -> Result<Vec<String>, sqlx::Error> {
    let departed: Vec<(String,)> = sqlx::query_as(
        "SELECT id FROM banned_parties b WHERE b.wallet_id = $1 AND b.lifted_at IS NULL \
         AND NOT EXISTS (SELECT 1 FROM wallet_parties p WHERE p.wallet_id = $1 \
         AND p.device_id = b.device_id)",
    )
    .bind(wallet_id)
    .fetch_all(&mut *conn)
    .await?;
    for (id,) in &departed {
        sqlx::query("UPDATE banned_parties SET lifted_at = $1, lift_session = $2 WHERE id = $3")
            .bind(at)
            .bind(session_id)
            .bind(id)
            .execute(&mut *conn)
            .await?;
    }
    sqlx::query(
        "UPDATE banned_parties SET party = (SELECT p.party FROM wallet_parties p \
         WHERE p.wallet_id = banned_parties.wallet_id AND p.device_id = banned_parties.device_id) \
         WHERE wallet_id = $1 AND lifted_at IS NULL",
    )
    .bind(wallet_id)
    .execute(&mut *conn)
    .await?;
    Ok(departed.into_iter().map(|(id,)| id).collect())
}

/// Records another device's approval of lifting a ban; returns `false` when it was lifted
/// (or does not exist).
///
/// # Errors
/// A database error.
pub async fn approve_lift(
    db: impl AnyExecutor<'_>,
    ban_id: &str,
    approved_by: &str,
    signature: &str,
    at: i64,
) -> Result<bool, sqlx::Error> {
    let approved = sqlx::query(
        "UPDATE banned_parties SET lift_approved_by = $1, lift_signature = $2, lift_approved_at = $3 \
         WHERE id = $4 AND lifted_at IS NULL",
    )
    .bind(approved_by)
    .bind(signature)
    .bind(at)
    .bind(ban_id)
    .execute(db)
    .await?;
    Ok(approved.rows_affected() == 1)
}
