//! Bans of parties the engine blamed, and wallet locks after repeated unattributed aborts.
//!
//! A failed consistency check that DKLs23 attributes to a party (`BanCounterparty`, our
//! [`tessera_core::Error::PartyMisbehaved`]) means that party tried to learn something: the
//! base-OT correlation set up at keygen is reused by every signing of the wallet, and each aborted
//! run can leak a bit of it. So the party is refused for every later session of the wallet. Only
//! a complete refresh (a new OT set-up, which makes what leaked worthless) lifts the ban, and only
//! once another active device of the owner approved it: an attacker gets one aborted attempt per
//! approval by the owner. The banned party may take part in that refresh and in nothing else.
//!
//! Aborts that name nobody (a disconnect mid-protocol, a bad message, a final signature that does
//! not verify) are counted per wallet; past `Config::abort_limit` within `Config::abort_window`
//! the wallet is locked until a refresh, since repeating aborts is how these leaks are mounted.
//! Every ban, lift approval, lift and lock is audited.

use axum::Json;
use axum::extract::State;
use serde::Deserialize;
use serde_json::json;
use sqlx::AnyConnection;
use tessera_api as api;
use tessera_core::PartyIndex;

use crate::audit::{self, Subject};
use crate::auth::AuthDevice;
use crate::db::WriteTx;
use crate::error::{ApiError, ApiResult};
use crate::extract::{ApiJson, ApiPath, ApiQuery};
use crate::state::{AppState, now, rfc3339};

/// The engine's blame of a party, as `ws` saw it.
pub struct Blame {
    /// The blamed party.
    pub party: PartyIndex,
    /// The round whose message failed the check.
    pub round: u8,
    /// The engine's description.
    pub reason: String,
}

type BanRow = (
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

fn ban_of(row: BanRow) -> api::Ban {
    let (id, wallet_id, party, device_id, session_id, round, reason, banned_at, by, lifted_at) =
        row;
    api::Ban {
        ban_id: id.into(),
        wallet_id: wallet_id.into(),
        party: u8::try_from(party).unwrap_or(u8::MAX),
        device_id: device_id.map(Into::into),
        session_id: session_id.into(),
        round: u8::try_from(round).unwrap_or(u8::MAX),
        reason,
        banned_at: rfc3339(banned_at),
        lift_approved_by: by.map(Into::into),
        lifted_at: lifted_at.map(rfc3339),
    }
}

/// The message that names a ban in force, for every refusal.
fn refusal(ban: &api::Ban) -> String {
    let device = ban
        .device_id
        .as_deref()
        .map_or(String::new(), |d| format!(" (device {d})"));
    let next = if ban.lift_approved_by.is_some() {
        "another device approved lifting it: refresh the wallet to lift it".to_string()
    } else {
        "another active device of the owner must approve lifting it \
         (`POST /bans/{id}/approve-lift`), then a refresh of the wallet lifts it"
            .replace("{id}", &ban.ban_id)
    };
    format!(
        "party {}{device} is banned from wallet {} (ban {}) since {}: the engine blamed it in \
         round {} of session {} ({}); {next}",
        ban.party, ban.wallet_id, ban.ban_id, ban.banned_at, ban.round, ban.session_id, ban.reason
    )
}

/// The ban in force against `party` of `wallet_id`, if any.
async fn in_force(
    conn: &mut AnyConnection,
    wallet_id: &str,
    party: i64,
) -> ApiResult<Option<api::Ban>> {
    let row: Option<BanRow> = sqlx::query_as(ban_select!(
        "WHERE wallet_id = $1 AND party = $2 AND lifted_at IS NULL"
    ))
    .bind(wallet_id)
    .bind(party)
    .fetch_optional(conn)
    .await?;
    Ok(row.map(ban_of))
}

/// The lock in force on a wallet: its reason and when it was set.
async fn lock_in_force(
    conn: &mut AnyConnection,
    wallet_id: &str,
) -> ApiResult<Option<(String, i64)>> {
    Ok(sqlx::query_as(
        "SELECT reason, locked_at FROM wallet_locks WHERE wallet_id = $1 AND lifted_at IS NULL",
    )
    .bind(wallet_id)
    .fetch_optional(conn)
    .await?)
}

/// Refuses a signing session of a wallet whose device party is banned or which is locked
/// (`POST /sign`, once its one read of the wallet counted a ban or a lock).
///
/// # Errors
/// 403 naming the ban or the lock.
pub async fn refuse_signing(conn: &mut AnyConnection, wallet_id: &str) -> ApiResult<()> {
    if let Some(ban) = in_force(conn, wallet_id, 0).await? {
        return Err(ApiError::Forbidden(refusal(&ban)));
    }
    if let Some((reason, at)) = lock_in_force(conn, wallet_id).await? {
        return Err(ApiError::Forbidden(format!(
            "wallet {wallet_id} is locked since {} ({reason}); refresh the wallet to unlock it",
            rfc3339(at)
        )));
    }
    Ok(())
}

/// Refuses a refresh of a wallet with a ban whose lift nobody approved yet (`POST /refresh` and
/// opening its socket). A lock does not stop a refresh: the refresh is what unlocks.
///
/// # Errors
/// 403 naming the ban and what approves its lift.
pub async fn refuse_refresh(conn: &mut AnyConnection, wallet_id: &str) -> ApiResult<()> {
    match in_force(conn, wallet_id, 0).await? {
        Some(ban) if ban.lift_approved_by.is_none() => Err(ApiError::Forbidden(refusal(&ban))),
        _ => Ok(()),
    }
}

/// Refuses the session `protocol` of `wallet_id` if a ban or lock stands in its way; called
/// when opening a socket once the session's read counted one (so no second count).
///
/// # Errors
/// As [`refuse_signing`] and [`refuse_refresh`].
pub async fn refuse_session(
    conn: &mut AnyConnection,
    wallet_id: &str,
    protocol: &str,
) -> ApiResult<()> {
    match protocol {
        "sign" => refuse_signing(conn, wallet_id).await,
        "refresh" => refuse_refresh(conn, wallet_id).await,
        _ => Ok(()),
    }
}

/// How a sign or refresh run of `ws` ended, for [`after_run`].
pub struct RunEnd<'a> {
    /// `sign`, `refresh` or `keygen`.
    pub protocol: &'a str,
    /// The session's final status.
    pub status: &'a str,
    /// The close code sent, if any (none: the device went away).
    pub close_code: Option<u16>,
    /// The record's detail.
    pub detail: Option<&'a str>,
    /// The engine's blame, if it named a party.
    pub blamed: Option<&'a Blame>,
}

/// After a run of `ws`: records a ban when the engine blamed a party, or counts an abort (and
/// locks the wallet past the limit), each with its audit record in one transaction, tried up to
/// [`crate::db::DURABLE_ATTEMPTS`] times. A last failure is logged: the run is over either way.
pub async fn after_run(
    state: &AppState,
    me: &AuthDevice,
    wallet_id: &str,
    session_id: &str,
    run: RunEnd<'_>,
) {
    let mut attempt = 1;
    loop {
        match record_run(state, me, wallet_id, session_id, &run).await {
            Ok(()) => return,
            Err(e) if attempt < crate::db::DURABLE_ATTEMPTS => {
                tracing::warn!(error = %e, wallet_id, session_id, attempt, "retrying a ban or abort record");
                attempt += 1;
                tokio::time::sleep(crate::db::retry_pause(attempt)).await;
            }
            Err(e) => {
                tracing::error!(error = %e, wallet_id, session_id, "could not record a ban or an abort");
                return;
            }
        }
    }
}

async fn record_run(
    state: &AppState,
    me: &AuthDevice,
    wallet_id: &str,
    session_id: &str,
    run: &RunEnd<'_>,
) -> ApiResult<()> {
    match run.blamed {
        Some(blame) => ban(state, me, wallet_id, session_id, blame).await,
        None if matches!(run.protocol, "sign" | "refresh")
            && matches!(run.status, "failed" | "expired")
            && run.close_code != Some(crate::ws::CLOSE_INTERNAL) =>
        {
            // The device is the only other party of the run: a message that fails a check or a
            // final signature that does not verify can only come from it (the transport is
            // authenticated). A disconnect or a stall may be the network's: nobody is named.
            let party = (run.close_code == Some(crate::ws::CLOSE_INVALID_MESSAGE)).then_some(0);
            count_abort(
                state,
                me,
                wallet_id,
                session_id,
                party,
                run.detail.unwrap_or(run.status),
            )
            .await
        }
        None => Ok(()),
    }
}

/// Records the ban of a blamed party (kept if one is already in force) and audits it.
async fn ban(
    state: &AppState,
    me: &AuthDevice,
    wallet_id: &str,
    session_id: &str,
    blame: &Blame,
) -> ApiResult<()> {
    let id = hex::encode(&tessera_core::protocols::fresh_nonce()[..16]);
    // The device that ran the session is party 0; the server never blames itself.
    let device = (blame.party.get() == 0).then_some(me.device_id.as_str());
    let mut tx = state.begin_write().await?;
    sqlx::query(
        "INSERT INTO banned_parties (id, wallet_id, party, device_id, session_id, round, reason, banned_at) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8) \
         ON CONFLICT (wallet_id, party) WHERE lifted_at IS NULL DO NOTHING",
    )
    .bind(&id)
    .bind(wallet_id)
    .bind(i64::from(blame.party.get()))
    .bind(device)
    .bind(session_id)
    .bind(i64::from(blame.round))
    .bind(&blame.reason)
    .bind(now())
    .execute(&mut *tx)
    .await?;
    audit::append_in(
        &mut tx,
        "party.banned",
        Subject::device(me).wallet(wallet_id),
        json!({
            "ban_id": id, "party": blame.party.get(), "session_id": session_id,
            "round": blame.round, "reason": blame.reason,
        }),
    )
    .await?;
    tx.commit().await
}

/// Counts an abort of the wallet; past the limit within the window, locks the wallet.
async fn count_abort(
    state: &AppState,
    me: &AuthDevice,
    wallet_id: &str,
    session_id: &str,
    party: Option<u8>,
    reason: &str,
) -> ApiResult<()> {
    let at = now();
    let mut tx = state.begin_write().await?;
    tx.lock_wallet(wallet_id).await?;
    sqlx::query(
        "INSERT INTO wallet_aborts (session_id, wallet_id, party, reason, at) VALUES ($1, $2, $3, $4, $5) \
         ON CONFLICT (session_id) DO NOTHING",
    )
    .bind(session_id)
    .bind(wallet_id)
    .bind(party.map(i64::from))
    .bind(reason)
    .bind(at)
    .execute(&mut *tx)
    .await?;
    let limit = state.config().abort_limit;
    if limit == 0 {
        return tx.commit().await;
    }
    let window = state.config().abort_window.as_secs() as i64;
    let (count,): (i64,) =
        sqlx::query_as("SELECT COUNT(*) FROM wallet_aborts WHERE wallet_id = $1 AND at > $2")
            .bind(wallet_id)
            .bind(at - window)
            .fetch_one(&mut *tx)
            .await?;
    if count <= i64::from(limit) {
        return tx.commit().await;
    }
    let why =
        format!("{count} sign or refresh runs aborted within {window} s; the limit is {limit}");
    let locked = sqlx::query(
        "INSERT INTO wallet_locks (id, wallet_id, reason, locked_at) VALUES ($1, $2, $3, $4) \
         ON CONFLICT (wallet_id) WHERE lifted_at IS NULL DO NOTHING",
    )
    .bind(hex::encode(&tessera_core::protocols::fresh_nonce()[..16]))
    .bind(wallet_id)
    .bind(&why)
    .bind(at)
    .execute(&mut *tx)
    .await?;
    if locked.rows_affected() == 1 {
        audit::append_in(
            &mut tx,
            "wallet.locked",
            Subject::device(me).wallet(wallet_id),
            json!({ "reason": why, "last_session_id": session_id, "party": party }),
        )
        .await?;
    }
    tx.commit().await
}

/// What a refresh switch lifted.
#[derive(Default)]
pub struct Lifted {
    /// The bans lifted.
    pub bans: Vec<String>,
    /// Whether a lock was lifted.
    pub lock: bool,
}

/// Inside the transaction that switches a wallet to the epoch refresh `session_id` produced:
/// lifts the bans whose lift was approved before that refresh was created, the lock, and clears
/// the count of aborts. The old OT set-up is gone with the old epoch, so what leaked is worthless.
///
/// # Errors
/// A database error (the switch is rolled back with it).
pub async fn lift_in(tx: &mut WriteTx, wallet_id: &str, session_id: &str) -> ApiResult<Lifted> {
    let at = now();
    let created: Option<(i64,)> = sqlx::query_as("SELECT created_at FROM sessions WHERE id = $1")
        .bind(session_id)
        .fetch_optional(&mut **tx)
        .await?;
    let Some((created,)) = created else {
        return Ok(Lifted::default());
    };
    let bans: Vec<(String,)> = sqlx::query_as(
        "SELECT id FROM banned_parties WHERE wallet_id = $1 AND lifted_at IS NULL \
         AND lift_approved_at IS NOT NULL AND lift_approved_at <= $2",
    )
    .bind(wallet_id)
    .bind(created)
    .fetch_all(&mut **tx)
    .await?;
    for (id,) in &bans {
        sqlx::query("UPDATE banned_parties SET lifted_at = $1, lift_session = $2 WHERE id = $3")
            .bind(at)
            .bind(session_id)
            .bind(id)
            .execute(&mut **tx)
            .await?;
    }
    let lock = sqlx::query(
        "UPDATE wallet_locks SET lifted_at = $1, lift_session = $2 WHERE wallet_id = $3 AND lifted_at IS NULL",
    )
    .bind(at)
    .bind(session_id)
    .bind(wallet_id)
    .execute(&mut **tx)
    .await?;
    sqlx::query("DELETE FROM wallet_aborts WHERE wallet_id = $1")
        .bind(wallet_id)
        .execute(&mut **tx)
        .await?;
    Ok(Lifted {
        bans: bans.into_iter().map(|(id,)| id).collect(),
        lock: lock.rows_affected() > 0,
    })
}

/// Audits what a refresh switch lifted, in the switch's transaction (after its other writes).
///
/// # Errors
/// A database error (the switch is rolled back with it).
pub async fn audit_lifted(
    tx: &mut WriteTx,
    wallet_id: &str,
    session_id: &str,
    lifted: &Lifted,
) -> ApiResult<()> {
    let subject = Subject {
        wallet: Some(wallet_id),
        ..Subject::default()
    };
    for id in &lifted.bans {
        audit::append_in(
            tx,
            "party.ban_lifted",
            subject,
            json!({ "ban_id": id, "refresh_session_id": session_id }),
        )
        .await?;
    }
    if lifted.lock {
        audit::append_in(
            tx,
            "wallet.unlocked",
            subject,
            json!({ "refresh_session_id": session_id }),
        )
        .await?;
    }
    Ok(())
}

/// `?wallet=`.
#[derive(Deserialize)]
pub struct BansQuery {
    wallet: String,
}

/// `GET /bans?wallet=…`: the wallet's bans, in force and lifted, newest first.
pub async fn list(
    State(state): State<AppState>,
    me: AuthDevice,
    ApiQuery(q): ApiQuery<BansQuery>,
) -> ApiResult<Json<Vec<api::Ban>>> {
    let wallet = crate::wallets::wallet_of(&state, &me, &q.wallet).await?;
    let rows: Vec<BanRow> = sqlx::query_as(ban_select!(
        "WHERE wallet_id = $1 ORDER BY banned_at DESC, id"
    ))
    .bind(&wallet.id)
    .fetch_all(state.db())
    .await?;
    Ok(Json(rows.into_iter().map(ban_of).collect()))
}

/// `POST /bans/{ban_id}/approve-lift`: another active device of the wallet's owner (not the one
/// that ran the session as the banned party) approves lifting the ban, signing
/// [`api::ban_lift_message`] with its identity key. The next refresh of the wallet lifts it.
pub async fn approve_lift(
    State(state): State<AppState>,
    me: AuthDevice,
    ApiPath(ban_id): ApiPath<String>,
    ApiJson(req): ApiJson<api::ApproveBanLift>,
) -> ApiResult<Json<api::Ban>> {
    let row: Option<BanRow> = sqlx::query_as(ban_select!("WHERE id = $1"))
        .bind(&ban_id)
        .fetch_optional(state.db())
        .await?;
    let ban = row
        .map(ban_of)
        .ok_or_else(|| ApiError::NotFound(format!("no ban {ban_id}")))?;
    // Another user's ban is not revealed.
    let wallet = crate::wallets::wallet_of(&state, &me, &ban.wallet_id)
        .await
        .map_err(|_| ApiError::NotFound(format!("no ban {ban_id}")))?;
    if ban.lifted_at.is_some() {
        return Err(ApiError::Conflict(format!(
            "ban {ban_id} was already lifted"
        )));
    }
    if ban.device_id.as_deref() == Some(me.device_id.as_str()) {
        return Err(ApiError::Forbidden(format!(
            "this device ran the session that got party {} banned; another active device of \
             the owner must approve lifting the ban (with one device: recover onto a new device \
             first)",
            ban.party
        )));
    }
    crate::registry::verify_device_signature(
        &state,
        &me.device_id,
        &api::ban_lift_message(&wallet.id, &ban.ban_id),
        &req.signature,
    )
    .await?;
    let mut tx = state.begin_write().await?;
    let approved = sqlx::query(
        "UPDATE banned_parties SET lift_approved_by = $1, lift_signature = $2, lift_approved_at = $3 \
         WHERE id = $4 AND lifted_at IS NULL",
    )
    .bind(&me.device_id)
    .bind(&req.signature)
    .bind(now())
    .bind(&ban.ban_id)
    .execute(&mut *tx)
    .await?;
    if approved.rows_affected() != 1 {
        return Err(ApiError::Conflict(format!(
            "ban {ban_id} was already lifted"
        )));
    }
    audit::append_in(
        &mut tx,
        "party.ban_lift_approved",
        Subject::device(&me).wallet(&wallet.id),
        json!({ "ban_id": ban.ban_id, "party": ban.party, "signature": req.signature }),
    )
    .await?;
    tx.commit().await?;
    Ok(Json(api::Ban {
        lift_approved_by: Some(me.device_id.clone().into()),
        ..ban
    }))
}

/// Bans of blamed parties: `GET /bans`, `POST /bans/{ban_id}/approve-lift`.
pub(crate) fn router() -> axum::Router<AppState> {
    use axum::routing::{get, post};
    axum::Router::new()
        .route("/bans", get(list))
        .route("/bans/{ban_id}/approve-lift", post(approve_lift))
}
