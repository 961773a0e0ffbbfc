//! `sessions`: protocol sessions, from creation to their end, and the caps on live ones.

use sqlx::AnyConnection;
use sqlx::any::AnyExecutor;

use super::{Approval, DeviceStatus, Protocol, SessionStatus};

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

/// Advisory-lock namespace of the session caps (PostgreSQL).
const CAP_LOCK_SPACE: i32 = 0x5e55;

/// A session to create.
pub struct NewSession<'a> {
    /// Its id (hex).
    pub id: &'a str,
    /// The device that runs it.
    pub device_id: &'a str,
    /// The wallet (a fresh id for a keygen).
    pub wallet_id: &'a str,
    /// What it runs.
    pub protocol: Protocol,
    /// Its nonce.
    pub nonce: &'a [u8],
    /// The request's JSON.
    pub params: &'a str,
    /// The wallet's epoch.
    pub epoch: i64,
    /// Claimed at once by this server instance ([`claim`]): a session that runs on the socket
    /// that asked for it (`GET /sign/ws`). None: created, to be opened.
    pub owner: Option<&'a str>,
}

/// The caps on live sessions at the time of an insert.
pub struct Caps {
    /// Now (Unix seconds).
    pub at: i64,
    /// Now less the idle timeout.
    pub cutoff: i64,
    /// Live sessions one device may hold.
    pub per_device: i64,
    /// Live sessions one wallet may hold.
    pub per_wallet: i64,
}

/// PostgreSQL: the transaction advisory locks on the device and then the wallet that serialise
/// every creation of their sessions (until the transaction ends).
///
/// # Errors
/// A database error.
pub async fn lock_caps(
    conn: &mut AnyConnection,
    device_id: &str,
    wallet_id: &str,
) -> Result<(), sqlx::Error> {
    for key in [device_id, wallet_id] {
        sqlx::query("SELECT pg_advisory_xact_lock($1, hashtext($2))")
            .bind(CAP_LOCK_SPACE)
            .bind(key)
            .execute(&mut *conn)
            .await?;
    }
    Ok(())
}

/// The condition "neither `new`'s device nor its wallet holds its cap of live sessions", with
/// [`bind_session`]'s placeholders.
macro_rules! within_caps {
    () => {
        concat!(
            "(SELECT COUNT(*) FROM sessions s WHERE s.device_id = $2 AND ",
            live!("$8", "$11"),
            ") < $9 AND (SELECT COUNT(*) FROM sessions s WHERE s.wallet_id = $3 AND ",
            live!("$8", "$11"),
            ") < $10"
        )
    };
}

/// The columns a new session is inserted with, and what they are selected from:
/// `$1`–`$12` bound by [`bind_session`]; its status is `created`, or `running` when it has an
/// owner.
macro_rules! new_session {
    ($status:expr) => {
        concat!(
            "INSERT INTO sessions (id, device_id, wallet_id, protocol, status, nonce, params, epoch, created_at, last_message_at, owner) \
             SELECT $1, $2, $3, $4, ",
            $status,
            ", $5, $6, $7, $8, $8, $12"
        )
    };
}

/// Binds `new` and `caps` as `$1`–`$12` of [`within_caps`] and [`new_session`].
fn bind_session<'q>(
    query: sqlx::query::Query<'q, sqlx::Any, sqlx::any::AnyArguments>,
    new: &'q NewSession<'_>,
    caps: &Caps,
) -> sqlx::query::Query<'q, sqlx::Any, sqlx::any::AnyArguments> {
    query
        .bind(new.id)
        .bind(new.device_id)
        .bind(new.wallet_id)
        .bind(new.protocol)
        .bind(new.nonce)
        .bind(new.params)
        .bind(new.epoch)
        .bind(caps.at)
        .bind(caps.per_device)
        .bind(caps.per_wallet)
        .bind(caps.cutoff)
        .bind(new.owner)
}

/// Inserts `new` as a created session (claimed, with an `owner`) unless its device or its wallet already holds its cap of
/// live sessions, in one statement. Returns whether it was inserted.
///
/// # Errors
/// A database error (a unique violation: a refresh of the wallet is already live).
pub async fn insert_within_caps(
    conn: &mut AnyConnection,
    new: &NewSession<'_>,
    caps: &Caps,
) -> Result<bool, sqlx::Error> {
    let inserted = bind_session(
        sqlx::query(concat!(
            new_session!("CASE WHEN $12 IS NULL THEN 'created' ELSE 'running' END"),
            " WHERE ",
            within_caps!()
        )),
        new,
        caps,
    )
    .execute(conn)
    .await?;
    Ok(inserted.rows_affected() == 1)
}

/// SQLite only, inside a write transaction: a signing session `new` (within `caps`), its
/// request's row `request` and its `sign.requested` record `r`, as one batch of statements
/// sent to the connection's thread at once (`SAVEPOINT; INSERT INTO sessions …; INSERT INTO
/// sign_requests …; INSERT INTO audit_log …; RELEASE`): one hand-off to that thread instead of
/// three. Returns whether it was written.
///
/// The batch stops at its first failing statement and is then rolled back to its savepoint, so
/// that it wrote nothing and the transaction goes on: it fails when a cap is reached (the
/// session's status is NULL then, which its column refuses), unless the chain's head is still
/// record `r.seq - 1` with hash `r.prev_hash` (as in [`end_with_record`]), or for any other
/// error of its statements. The caller then writes the three one by one
/// ([`insert_within_caps`] tells which cap).
///
/// # Errors
/// A database error of the rollback to the savepoint (the transaction is then to be dropped).
pub async fn insert_sign_request(
    conn: &mut AnyConnection,
    (new, caps): (&NewSession<'_>, &Caps),
    request: &super::approvals::NewSignRequest<'_>,
    r: &super::audit::NewRecord<'_>,
) -> Result<bool, sqlx::Error> {
    let batch = bind_session(
        sqlx::query(concat!(
            "SAVEPOINT sign_request; ",
            new_session!(concat!(
                "CASE WHEN ",
                within_caps!(),
                " THEN CASE WHEN $12 IS NULL THEN 'created' ELSE 'running' END END"
            )),
            "; INSERT INTO sign_requests (session_id, wallet_id, device_id, kind, value_wei, max_fee_wei, digest, summary, requested_at, approval, expires_at, token_amounts, btc_spend) \
             VALUES ($13, $14, $15, $16, $17, $18, $19, $20, $21, $22, $23, $24, $25); \
             INSERT INTO audit_log (seq, at, kind, user_id, device_id, wallet_id, detail, prev_hash, hash) \
             VALUES ($26, $27, $28, $29, $30, $31, $32, \
             (SELECT p.hash FROM audit_log p WHERE p.seq = $26 - 1 AND p.hash = $33), $34); \
             RELEASE sign_request"
        )),
        new,
        caps,
    );
    let batch = super::audit::bind_record(super::approvals::bind_request(batch, request), r);
    match batch.execute(&mut *conn).await {
        Ok(_) => Ok(true),
        Err(e) => {
            tracing::debug!(error = %e, "a signing request in one batch was not written; writing it statement by statement");
            sqlx::query("ROLLBACK TO sign_request; RELEASE sign_request")
                .execute(&mut *conn)
                .await?;
            Ok(false)
        }
    }
}

/// How many live sessions `device_id` holds (the condition of [`insert_within_caps`]).
///
/// # Errors
/// A database error.
pub async fn live_of_device(
    conn: &mut AnyConnection,
    device_id: &str,
    at: i64,
    cutoff: i64,
) -> Result<i64, sqlx::Error> {
    let (count,): (i64,) = sqlx::query_as(concat!(
        "SELECT COUNT(*) FROM sessions s WHERE s.device_id = $1 AND ",
        live!("$2", "$3")
    ))
    .bind(device_id)
    .bind(at)
    .bind(cutoff)
    .fetch_one(conn)
    .await?;
    Ok(count)
}

/// Everything opening a session's socket needs, read in one query.
pub struct OpenContext {
    /// The device that created it.
    pub device_id: String,
    /// Its wallet.
    pub wallet_id: String,
    /// What it runs.
    pub protocol: Protocol,
    /// Its nonce.
    pub nonce: Vec<u8>,
    /// Where it stands.
    pub status: SessionStatus,
    /// Its creation, or its last message.
    pub last_message_at: i64,
    /// The request's JSON.
    pub params: String,
    /// A signing request's stored approval (none: no request row).
    pub approval: Option<Approval>,
    /// The end of its approval window.
    pub approval_expires: Option<i64>,
    /// When it was approved or refused.
    pub decided_at: Option<i64>,
    /// The wallet's active share (sign and refresh): its epoch and sealed bytes.
    pub share: Option<(i64, Vec<u8>)>,
    /// Bans of the device party and locks standing on the wallet (their details are read only
    /// when there is one).
    pub obstacles: i64,
    /// The standing of the device that asks to open it: its status and user (none: unknown),
    /// for [`crate::auth::TokenDevice::confirm`].
    pub caller: Option<(DeviceStatus, String)>,
    /// The user whose wallet it is.
    pub owner_id: String,
}

type OpenRow = (
    String,
    String,
    Protocol,
    Vec<u8>,
    SessionStatus,
    i64,
    String,
    Option<Approval>,
    Option<i64>,
    Option<i64>,
    Option<i64>,
    Option<Vec<u8>>,
    i64,
    Option<DeviceStatus>,
    Option<String>,
    Option<String>,
);

/// The session `session_id` with what opening it needs: for a signing request, its approval;
/// for sign and refresh, the active sealed share; whether a ban or lock may stand in the way;
/// and the standing of `caller`, the device that asks. `Err(standing)`: no such session, and
/// the caller's standing (read then, so that the caller can answer for the device first).
///
/// # Errors
/// A database error (an unknown stored state included).
pub async fn open_context(
    conn: &mut AnyConnection,
    session_id: &str,
    caller: &str,
) -> Result<Result<OpenContext, Option<(DeviceStatus, String)>>, sqlx::Error> {
    let row: Option<OpenRow> = sqlx::query_as(
        "SELECT s.device_id, s.wallet_id, s.protocol, s.nonce, s.status, s.last_message_at, s.params, \
         r.approval, r.expires_at, r.decided_at, sh.epoch, sh.sealed, \
         (SELECT COUNT(*) FROM banned_parties b WHERE b.wallet_id = s.wallet_id AND b.party = 0 AND b.lifted_at IS NULL) \
         + (SELECT COUNT(*) FROM wallet_locks l WHERE l.wallet_id = s.wallet_id AND l.lifted_at IS NULL), \
         (SELECT d.status FROM devices d WHERE d.id = $2), \
         (SELECT d.user_id FROM devices d WHERE d.id = $2), \
         (SELECT w.user_id FROM wallets w WHERE w.id = s.wallet_id) \
         FROM sessions s LEFT JOIN sign_requests r ON r.session_id = s.id \
         LEFT JOIN server_shares sh ON sh.wallet_id = s.wallet_id AND sh.state = 'active' \
         AND s.protocol IN ('sign', 'refresh') WHERE s.id = $1",
    )
    .bind(session_id)
    .bind(caller)
    .fetch_optional(&mut *conn)
    .await?;
    let Some(row) = row else {
        return Ok(Err(super::devices::standing(conn, caller).await?));
    };
    let (
        device_id,
        wallet_id,
        protocol,
        nonce,
        status,
        last_message_at,
        params,
        approval,
        approval_expires,
        decided_at,
        share_epoch,
        sealed,
        obstacles,
        caller_status,
        caller_user,
        owner_id,
    ) = row;
    Ok(Ok(OpenContext {
        device_id,
        wallet_id,
        protocol,
        nonce,
        status,
        last_message_at,
        params,
        approval,
        approval_expires,
        decided_at,
        share: share_epoch.zip(sealed),
        obstacles,
        caller: caller_status.zip(caller_user),
        owner_id: owner_id.unwrap_or_default(),
    }))
}

/// A created session that was never opened in time expires.
///
/// # Errors
/// A database error.
pub async fn expire_unopened(
    db: impl AnyExecutor<'_>,
    session_id: &str,
) -> Result<(), sqlx::Error> {
    sqlx::query("UPDATE sessions SET status = 'expired', detail = 'never opened' WHERE id = $1 AND status = 'created'")
        .bind(session_id)
        .execute(db)
        .await?;
    Ok(())
}

/// The wallet's refresh sessions created before `cutoff` and never opened expire.
///
/// # Errors
/// A database error.
pub async fn expire_unopened_refreshes(
    db: impl AnyExecutor<'_>,
    wallet_id: &str,
    cutoff: i64,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "UPDATE sessions SET status = 'expired', detail = 'never opened' \
         WHERE wallet_id = $1 AND protocol = 'refresh' AND status = 'created' AND last_message_at < $2",
    )
    .bind(wallet_id)
    .bind(cutoff)
    .execute(db)
    .await?;
    Ok(())
}

/// Claims a created session for this replica (`owner`): only one socket may ever run it.
/// Returns whether this call claimed it.
///
/// # Errors
/// A database error.
pub async fn claim(
    db: impl AnyExecutor<'_>,
    session_id: &str,
    owner: &str,
    at: i64,
) -> Result<bool, sqlx::Error> {
    let claimed = sqlx::query("UPDATE sessions SET status = 'running', last_message_at = $1, owner = $3 WHERE id = $2 AND status = 'created'")
        .bind(at)
        .bind(session_id)
        .bind(owner)
        .execute(db)
        .await?;
    Ok(claimed.rows_affected() == 1)
}

/// Gives back a claim ([`claim`]) whose run could not start: the session is created again,
/// as it was before (`last_message_at`: its value before the claim).
///
/// # Errors
/// A database error.
pub async fn unclaim(
    db: impl AnyExecutor<'_>,
    session_id: &str,
    owner: &str,
    last_message_at: i64,
) -> Result<(), sqlx::Error> {
    sqlx::query("UPDATE sessions SET status = 'created', last_message_at = $1, owner = NULL WHERE id = $2 AND status = 'running' AND owner = $3")
        .bind(last_message_at)
        .bind(session_id)
        .bind(owner)
        .execute(db)
        .await?;
    Ok(())
}

/// Records how a session ended.
///
/// # Errors
/// A database error.
pub async fn record_end(
    db: impl AnyExecutor<'_>,
    session_id: &str,
    status: SessionStatus,
    detail: Option<&str>,
    at: i64,
) -> Result<(), sqlx::Error> {
    sqlx::query("UPDATE sessions SET status = $1, detail = $2, last_message_at = $3 WHERE id = $4")
        .bind(status)
        .bind(detail)
        .bind(at)
        .bind(session_id)
        .execute(db)
        .await?;
    Ok(())
}

/// SQLite only: [`record_end`] and the append of its one audit record `r`, as one batch of
/// statements sent to the connection's thread at once (`BEGIN IMMEDIATE; UPDATE sessions …;
/// INSERT INTO audit_log …; COMMIT`): one hand-off to that thread instead of five, one commit.
///
/// The batch stops at its first failing statement, before its `COMMIT`, and is then rolled
/// back. It fails (and writes nothing) unless the chain's head is still record `r.seq - 1`
/// with hash `r.prev_hash` (the record's `prev_hash` is read from that record, so it is NULL,
/// which its column refuses, otherwise; a taken `r.seq` breaks the primary key) and no durable
/// request names the session (its `detail` is NULL then): the caller then records the end in a
/// transaction of its own, as before ([`crate::requests::session_ended`] has more to write).
///
/// # Errors
/// The batch's error, after the rollback.
pub async fn end_with_record(
    pool: &sqlx::AnyPool,
    session_id: &str,
    (status, detail): (SessionStatus, Option<&str>),
    at: i64,
    r: &super::audit::NewRecord<'_>,
) -> Result<(), sqlx::Error> {
    let mut conn = pool.acquire().await?;
    let written = sqlx::query(
        "BEGIN IMMEDIATE; \
         UPDATE sessions SET status = $1, detail = $2, last_message_at = $3 WHERE id = $4; \
         INSERT INTO audit_log (seq, at, kind, user_id, device_id, wallet_id, detail, prev_hash, hash) \
         VALUES ($5, $6, $7, $8, $9, $10, \
         (SELECT $11 WHERE NOT EXISTS (SELECT 1 FROM requests q WHERE q.session_id = $4)), \
         (SELECT p.hash FROM audit_log p WHERE p.seq = $5 - 1 AND p.hash = $12), $13); \
         COMMIT",
    )
    .bind(status)
    .bind(detail)
    .bind(at)
    .bind(session_id);
    let written = super::audit::bind_record(written, r)
        .execute(&mut *conn)
        .await;
    if let Err(e) = written {
        // Whatever ran of the batch is undone; a connection whose rollback failed for another
        // reason than having no transaction open is not given back to the pool.
        match sqlx::query("ROLLBACK").execute(&mut *conn).await {
            Ok(_) => {}
            Err(rollback) if rollback.to_string().contains("no transaction is active") => {}
            Err(_) => conn.close_on_drop(),
        }
        return Err(e);
    }
    Ok(())
}

/// Ends `session_id` with `status` and `detail` if it is still live (created or running), as
/// [`record_end`] does; returns whether it did (a session that ended meanwhile keeps its end).
///
/// # Errors
/// A database error.
pub async fn end_if_live(
    db: impl AnyExecutor<'_>,
    session_id: &str,
    status: SessionStatus,
    detail: &str,
    at: i64,
) -> Result<bool, sqlx::Error> {
    let ended = sqlx::query(
        "UPDATE sessions SET status = $1, detail = $2, last_message_at = $3 \
         WHERE id = $4 AND status IN ('created', 'running')",
    )
    .bind(status)
    .bind(detail)
    .bind(at)
    .bind(session_id)
    .execute(db)
    .await?;
    Ok(ended.rows_affected() == 1)
}

/// The status of `session_id` and the detail recorded with it (a live session has none);
/// `None` when there is no such session.
///
/// # Errors
/// A database error.
pub async fn end_of(
    db: impl AnyExecutor<'_>,
    session_id: &str,
) -> Result<Option<(SessionStatus, Option<String>)>, sqlx::Error> {
    sqlx::query_as("SELECT status, detail FROM sessions WHERE id = $1")
        .bind(session_id)
        .fetch_optional(db)
        .await
}

/// The device that created `session_id`.
///
/// # Errors
/// A database error.
pub async fn device_of(
    db: impl AnyExecutor<'_>,
    session_id: &str,
) -> Result<Option<String>, sqlx::Error> {
    let owner: Option<(String,)> = sqlx::query_as("SELECT device_id FROM sessions WHERE id = $1")
        .bind(session_id)
        .fetch_optional(db)
        .await?;
    Ok(owner.map(|(d,)| d))
}

/// When `session_id` was created.
///
/// # Errors
/// A database error.
pub async fn created_at(
    db: impl AnyExecutor<'_>,
    session_id: &str,
) -> Result<Option<i64>, sqlx::Error> {
    let created: Option<(i64,)> = sqlx::query_as("SELECT created_at FROM sessions WHERE id = $1")
        .bind(session_id)
        .fetch_optional(db)
        .await?;
    Ok(created.map(|(c,)| c))
}

/// One server per SQLite file: after a restart no session runs any more, and its row must not
/// stay live (a live refresh blocks the wallet's next one).
///
/// # Errors
/// A database error.
pub async fn fail_all_live(db: impl AnyExecutor<'_>) -> Result<(), sqlx::Error> {
    sqlx::query(
        "UPDATE sessions SET status = 'failed', detail = 'the server restarted during the session' \
         WHERE status IN ('created', 'running')",
    )
    .execute(db)
    .await?;
    Ok(())
}

/// The replicas (owners) running sessions, other than `instance` (`None`: claimed before
/// sessions had owners).
///
/// # Errors
/// A database error.
pub async fn running_owners_besides(
    db: impl AnyExecutor<'_>,
    instance: &str,
) -> Result<Vec<Option<String>>, sqlx::Error> {
    let owners: Vec<(Option<String>,)> = sqlx::query_as(
        "SELECT DISTINCT owner FROM sessions WHERE status = 'running' AND (owner IS NULL OR owner <> $1)",
    )
    .bind(instance)
    .fetch_all(db)
    .await?;
    Ok(owners.into_iter().map(|(o,)| o).collect())
}

/// Ends the running sessions of a replica that died. Returns how many.
///
/// # Errors
/// A database error.
pub async fn fail_running_of(
    db: impl AnyExecutor<'_>,
    owner: Option<&str>,
) -> Result<u64, sqlx::Error> {
    let done = sqlx::query(
        "UPDATE sessions SET status = 'failed', detail = 'the server replica running it stopped' \
         WHERE status = 'running' AND owner IS NOT DISTINCT FROM $1",
    )
    .bind(owner)
    .execute(db)
    .await?;
    Ok(done.rows_affected())
}
