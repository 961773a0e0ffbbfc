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
use crate::db::bans::BanRow;
use crate::db::{self, Protocol, SessionStatus, WriteTx};
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
    Ok(db::bans::in_force(conn, wallet_id, party)
        .await?
        .map(ban_of))
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
    if let Some((reason, at)) = db::bans::lock_in_force(conn, wallet_id).await? {
        return Err(ApiError::Forbidden(format!(
            "wallet {wallet_id} is locked since {} ({reason}); refresh the wallet to unlock it",
            rfc3339(at)
        )));
    }
    Ok(())
}

/// Refuses a signing session of a locked wallet (a structure wallet's bans exclude only the
/// banned parties: [`structure_bans`]).
///
/// # Errors
/// 403 naming the lock.
pub async fn refuse_locked(conn: &mut AnyConnection, wallet_id: &str) -> ApiResult<()> {
    if let Some((reason, at)) = db::bans::lock_in_force(conn, wallet_id).await? {
        return Err(ApiError::Forbidden(format!(
            "wallet {wallet_id} is locked since {} ({reason}); refresh the wallet to unlock it",
            rfc3339(at)
        )));
    }
    Ok(())
}

/// The bans in force on a structure wallet's parties: a banned party takes part in no signing
/// session of it; the others still sign (robust signing, issue 15).
///
/// # Errors
/// A database error.
pub async fn structure_bans(conn: &mut AnyConnection, wallet_id: &str) -> ApiResult<Vec<api::Ban>> {
    Ok(db::bans::all_in_force(conn, wallet_id)
        .await?
        .into_iter()
        .map(ban_of)
        .collect())
}

/// Refuses a structure wallet's signing session if one of `signers` is banned, naming the ban.
///
/// # Errors
/// 403 naming the ban.
pub fn refuse_banned_signers(bans: &[api::Ban], signers: &[u8]) -> ApiResult<()> {
    match bans.iter().find(|b| signers.contains(&b.party)) {
        Some(ban) => Err(ApiError::Forbidden(refusal(ban))),
        None => Ok(()),
    }
}

/// Refuses a resharing whose new structure keeps a banned device whose lift no other device
/// approved (the resharing would give it a fresh set-up, as a refresh does, which only an
/// approved lift allows): remove it from the wallet, or approve the lift first.
///
/// # Errors
/// 403 naming the ban.
pub fn refuse_banned_devices(bans: &[api::Ban], devices: &[&str]) -> ApiResult<()> {
    match bans.iter().find(|b| {
        b.lift_approved_by.is_none()
            && b.device_id
                .as_ref()
                .is_some_and(|d| devices.contains(&d.as_str()))
    }) {
        Some(ban) => Err(ApiError::Forbidden(format!(
            "{}; or reshare the wallet without it",
            refusal(ban)
        ))),
        None => Ok(()),
    }
}

/// Records, with its `party.banned` record, the ban of device party `party` (device
/// `device_id`) of structure wallet `wallet_id`, which a signing session `session_id` that
/// `requester` asked for found misbehaving; kept if one is in force already. Tried up to
/// [`crate::db::DURABLE_ATTEMPTS`] times.
///
/// # Errors
/// The last database error.
pub async fn ban_structure_party(
    state: &AppState,
    requester: &AuthDevice,
    wallet_id: &str,
    session_id: &str,
    (party, device_id): (PartyIndex, &str),
    (round, reason): (u8, &str),
) -> ApiResult<()> {
    let mut attempt = 1;
    loop {
        let id = hex::encode(&tessera_core::protocols::fresh_nonce()[..16]);
        let written = async {
            let mut tx = state.begin_write().await?;
            db::bans::insert(
                &mut *tx,
                &db::bans::NewBan {
                    id: &id,
                    wallet_id,
                    party: i64::from(party.get()),
                    device_id: Some(device_id),
                    session_id,
                    round: i64::from(round),
                    reason,
                    at: now(),
                },
            )
            .await?;
            audit::append_in(
                &mut tx,
                "party.banned",
                Subject::device(requester).wallet(wallet_id),
                json!({
                    "ban_id": id, "party": party.get(), "device_id": device_id,
                    "session_id": session_id, "round": round, "reason": reason,
                }),
            )
            .await?;
            tx.commit().await
        }
        .await;
        match written {
            Ok(()) => return Ok(()),
            Err(e) if attempt < crate::db::DURABLE_ATTEMPTS => {
                tracing::warn!(error = %e, wallet_id, session_id, attempt, "retrying a ban record");
                attempt += 1;
                tokio::time::sleep(crate::db::retry_pause(attempt)).await;
            }
            Err(e) => return Err(e),
        }
    }
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
    protocol: Protocol,
) -> ApiResult<()> {
    match protocol {
        Protocol::Sign => refuse_signing(conn, wallet_id).await,
        // A reshare switches epochs as a refresh does; until its handler decides otherwise (a
        // reshare without the banned party may lift the ban), the same obstacles hold.
        Protocol::Refresh | Protocol::Reshare => refuse_refresh(conn, wallet_id).await,
        Protocol::Keygen => Ok(()),
    }
}

/// How a sign or refresh run of `ws` ended, for [`after_run`].
pub struct RunEnd<'a> {
    /// What ran.
    pub protocol: Protocol,
    /// The session's final status.
    pub status: SessionStatus,
    /// The run ended on the server's own failure (`ws::CLOSE_INTERNAL`).
    pub server_failed: bool,
    /// The run ended on a message that failed validation (`ws::CLOSE_INVALID_MESSAGE`).
    pub invalid_message: bool,
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
        None if matches!(run.protocol, Protocol::Sign | Protocol::Refresh)
            && matches!(run.status, SessionStatus::Failed | SessionStatus::Expired)
            && !run.server_failed =>
        {
            // The device is the only other party of the run: a message that fails a check or a
            // final signature that does not verify can only come from it (the transport is
            // authenticated). A disconnect or a stall may be the network's: nobody is named.
            let party = run.invalid_message.then_some(0);
            count_abort(
                state,
                me,
                wallet_id,
                session_id,
                party,
                run.detail.unwrap_or(run.status.as_str()),
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
    db::bans::insert(
        &mut *tx,
        &db::bans::NewBan {
            id: &id,
            wallet_id,
            party: i64::from(blame.party.get()),
            device_id: device,
            session_id,
            round: i64::from(blame.round),
            reason: &blame.reason,
            at: now(),
        },
    )
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
    db::bans::insert_abort(
        &mut *tx,
        session_id,
        wallet_id,
        party.map(i64::from),
        reason,
        at,
    )
    .await?;
    let limit = state.config().abort_limit;
    if limit == 0 {
        return tx.commit().await;
    }
    let window = state.config().abort_window.as_secs() as i64;
    let count = db::bans::aborts_since(&mut *tx, wallet_id, at - window).await?;
    if count <= i64::from(limit) {
        return tx.commit().await;
    }
    let why =
        format!("{count} sign or refresh runs aborted within {window} s; the limit is {limit}");
    let lock_id = hex::encode(&tessera_core::protocols::fresh_nonce()[..16]);
    let locked = db::bans::insert_lock(&mut *tx, &lock_id, wallet_id, &why, at).await?;
    if locked {
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

pub use crate::db::bans::Lifted;

/// Inside the transaction that switches a wallet to the epoch refresh `session_id` produced:
/// lifts the bans whose lift was approved before that refresh was created, the lock, and clears
/// the count of aborts. The old OT set-up is gone with the old epoch, so what leaked is worthless.
///
/// # Errors
/// A database error (the switch is rolled back with it).
pub async fn lift_in(tx: &mut WriteTx, wallet_id: &str, session_id: &str) -> ApiResult<Lifted> {
    let at = now();
    let Some(created) = db::sessions::created_at(&mut **tx, session_id).await? else {
        return Ok(Lifted::default());
    };
    Ok(db::bans::lift(tx, wallet_id, session_id, created, at).await?)
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
#[utoipa::path(get, path = "/bans", tag = "bans", security(("bearer" = [])), params(("wallet" = String, Query, description = "The wallet's name or id")), responses((status = 200, description = "The wallet's bans, newest first", body = Vec<api::Ban>), crate::openapi::AuthErrors, crate::openapi::NotFound, crate::openapi::Errors))]
pub async fn list(
    State(state): State<AppState>,
    me: AuthDevice,
    ApiQuery(q): ApiQuery<BansQuery>,
) -> ApiResult<Json<Vec<api::Ban>>> {
    let wallet = db::wallets::owned(state.db(), &me.user_id, &q.wallet).await?;
    let rows = db::bans::of_wallet(state.db(), &wallet.id).await?;
    Ok(Json(rows.into_iter().map(ban_of).collect()))
}

/// `POST /bans/{ban_id}/approve-lift`: another active device of the wallet's owner (not the one
/// that ran the session as the banned party) approves lifting the ban, signing
/// [`api::ban_lift_message`] with its identity key. The next refresh of the wallet lifts it.
#[utoipa::path(post, path = "/bans/{ban_id}/approve-lift", tag = "bans", security(("bearer" = [])), params(("ban_id" = String, Path, description = "The ban")), request_body = api::ApproveBanLift, responses((status = 200, description = "The lift is approved", body = api::Ban), crate::openapi::AuthErrors, crate::openapi::NotFound, crate::openapi::Conflict, crate::openapi::Errors))]
pub async fn approve_lift(
    State(state): State<AppState>,
    me: AuthDevice,
    ApiPath(ban_id): ApiPath<String>,
    ApiJson(req): ApiJson<api::ApproveBanLift>,
) -> ApiResult<Json<api::Ban>> {
    let row = db::bans::by_id(state.db(), &ban_id).await?;
    let ban = row
        .map(ban_of)
        .ok_or_else(|| ApiError::NotFound(format!("no ban {ban_id}")))?;
    // Another user's ban is not revealed.
    let wallet = db::wallets::owned(state.db(), &me.user_id, &ban.wallet_id)
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
    let approved =
        db::bans::approve_lift(&mut *tx, &ban.ban_id, &me.device_id, &req.signature, now()).await?;
    if !approved {
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
