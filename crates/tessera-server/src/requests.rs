//! Durable signing requests (issue 16): `POST /requests` creates one with its decoded intent
//! and digest, after the same checks as `POST /sign` up to and including the wallet's policy
//! (its per-hour and per-24h limits count the request once, at creation, through its
//! `sign_requests` row keyed by the request id); approvers decide on it
//! (`POST /requests/{id}/approve|refuse`, each an identity signature over
//! [`api::requests::request_decision_message`]); once `ready`, a co-signing device opens a
//! protocol session for it (`POST /requests/{id}/session`), whose end ([`session_ended`], from
//! `ws::record_end`) makes it `signed` or sends it back to `ready` (failed after
//! [`MAX_ATTEMPTS`]). Waiting requests expire ([`expire_due`], and on every read).
//!
//! Every state change is one [`WriteTx`] with its audit record, the events it tells devices
//! ([`crate::events`]) and its webhook ([`crate::webhooks::enqueue`]). Audit kinds:
//! `request.created`, `request.approved` and `request.refused` (one approver's decision, with
//! the summary it saw and its signature), `request.ready`, `request.rejected` (the refusals
//! left no authorised set), `request.signing`, `request.signed`, `request.retry` (a session
//! ended without a signature), `request.failed`, `request.expired`.

use std::collections::BTreeSet;

use axum::Json;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::StatusCode;
use serde::Deserialize;
use serde_json::json;
use tessera_api as api;
use tessera_api::requests::{
    ApprovalRule, Approver, CreateRequest, Creator, DEFAULT_REQUEST_EXPIRY_SECS, DecideRequest,
    MAX_REQUEST_EXPIRY_SECS, RequestDecision, RequestInfo, RequestQuery,
};
use tessera_api::{DeviceId, EventKind, RequestState, SessionStatus};
use tessera_core::DerivationPath;

use crate::approval_rule::{Rule, Standing};
use crate::audit::Subject;
use crate::auth::AuthDevice;
use crate::caller::Caller;
use crate::db::requests::Row;
use crate::db::wallets::SignContext;
use crate::db::{self, Approval, WriteTx};
use crate::error::{ApiError, ApiResult};
use crate::extract::{ApiJson, ApiPath, ApiQuery};
use crate::state::{AppState, now, rfc3339};
use crate::wallets::Refusal;

/// Protocol sessions a request may use before it fails.
pub const MAX_ATTEMPTS: i64 = 3;

/// The most requests `GET /requests` answers.
const LIST_LIMIT: usize = 200;

/// A request's state as read at `at`: a request still waiting (for approvals or co-signers)
/// past its expiry is expired, even before the sweep writes it.
#[must_use]
pub fn state_at(state: RequestState, expires_at: i64, at: i64) -> RequestState {
    match state {
        RequestState::AwaitingApproval | RequestState::Ready if expires_at <= at => {
            RequestState::Expired
        }
        other => other,
    }
}

/// The rule that `require_approval` asks for when the policy names no quorum: one of `devices`
/// (the owner's other active devices), labelled `device-1`, `device-2`, …
///
/// # Errors
/// 409 when there is no other device.
pub fn any_other_device(devices: &[String]) -> ApiResult<ApprovalRule> {
    if devices.is_empty() {
        return Err(ApiError::Conflict(
            "the wallet's policy requires approval by another active device of its owner, and \
             there is none: register another device first"
                .into(),
        ));
    }
    let labels: Vec<String> = (1..=devices.len()).map(|i| format!("device-{i}")).collect();
    let structure = if labels.len() == 1 {
        labels[0].clone()
    } else {
        format!("threshold(1, {})", labels.join(", "))
    };
    Ok(ApprovalRule {
        structure,
        approvers: labels
            .into_iter()
            .zip(devices)
            .map(|(l, d)| (l, Approver::Device(DeviceId::new(d.clone()))))
            .collect(),
    })
}

/// A request id from a path: 32 lower-case hex digits, else 404.
fn request_id(id: &str) -> ApiResult<&str> {
    if id.len() == 32
        && id
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    {
        Ok(id)
    } else {
        Err(ApiError::NotFound(format!("no request {id:?}")))
    }
}

fn no_request(id: &str) -> ApiError {
    ApiError::NotFound(format!("no request {id}"))
}

fn stored_rule(row: &Row) -> ApiResult<Option<Rule>> {
    row.approval_rule
        .as_deref()
        .map(|text| {
            let rule: ApprovalRule = serde_json::from_str(text)
                .map_err(|e| ApiError::Internal(format!("stored approval rule: {e}")))?;
            Rule::parse(&rule).map_err(|e| ApiError::Internal(format!("stored approval rule: {e}")))
        })
        .transpose()
}

/// The request as answered, its decisions read with `conn` (a request without an approval
/// rule has none: no approver could decide on it, so nothing is read for it).
async fn info(conn: &mut sqlx::AnyConnection, row: &Row, at: i64) -> ApiResult<RequestInfo> {
    let decisions = if row.approval_rule.is_some() {
        db::requests::decisions(&mut *conn, &row.id).await?
    } else {
        Vec::new()
    };
    let intent = serde_json::from_str(&row.intent)
        .map_err(|e| ApiError::Internal(format!("stored intent: {e}")))?;
    let approval_rule = row
        .approval_rule
        .as_deref()
        .map(|text| {
            serde_json::from_str::<ApprovalRule>(text)
                .map(|r| r.structure)
                .map_err(|e| ApiError::Internal(format!("stored approval rule: {e}")))
        })
        .transpose()?;
    Ok(RequestInfo {
        id: row.id.clone().into(),
        wallet_id: row.wallet_id.clone().into(),
        state: state_at(row.state, row.expires_at, at),
        created_by: if row.creator_kind == "service" {
            Creator::Service(row.creator_id.clone().into())
        } else {
            Creator::Device(row.creator_id.clone().into())
        },
        kind: row.kind,
        summary: row.summary.clone(),
        digest: row.digest.clone(),
        path: row.path.clone(),
        intent,
        created_at: rfc3339(row.created_at),
        expires_at: rfc3339(row.expires_at),
        approval_rule,
        decisions: decisions
            .into_iter()
            .map(|(device_id, labels, approve, _, _, at)| RequestDecision {
                device_id: device_id.into(),
                labels: serde_json::from_str(&labels).unwrap_or_default(),
                approve: approve != 0,
                at: rfc3339(at),
            })
            .collect(),
        session_id: row.session_id.clone().map(Into::into),
        signature: row.signature.clone(),
        detail: row.detail.clone(),
    })
}

/// One audit record of a change.
struct Record<'a> {
    kind: &'static str,
    subject: Subject<'a>,
    detail: serde_json::Value,
}

/// Writes a change of `row` in `tx`: the row (inserted when `new`), then its audit records,
/// then the events (after the audit records: `db::events`), then its webhook.
async fn apply(
    tx: &mut WriteTx,
    row: &Row,
    new: bool,
    records: Vec<Record<'_>>,
    events: &[(String, EventKind)],
) -> ApiResult<RequestInfo> {
    if new {
        db::requests::insert(&mut **tx, row).await?;
    } else {
        db::requests::save(&mut **tx, row).await?;
    }
    for r in records {
        crate::audit::append_in(tx, r.kind, r.subject, r.detail).await?;
    }
    let mut told: Vec<(&str, EventKind)> = Vec::new();
    for (device, kind) in events {
        if !told.contains(&(device.as_str(), *kind)) {
            told.push((device.as_str(), *kind));
            let summary = event_summary(*kind, row);
            crate::events::push_in(
                tx,
                device,
                *kind,
                Some(&row.id),
                Some(&row.wallet_id),
                None,
                &summary,
            )
            .await?;
        }
    }
    let info = info(tx, row, row.updated_at).await?;
    crate::webhooks::enqueue(tx, &info).await?;
    Ok(info)
}

fn event_summary(kind: EventKind, row: &Row) -> String {
    match kind {
        EventKind::ApprovalNeeded => format!("approval needed: {}", row.summary),
        EventKind::ReadyToSign => format!("ready to sign: {}", row.summary),
        _ => format!("request {}: {}", row.state, row.summary),
    }
}

/// The creator device, to tell it the request ended (a service account learns it by webhook).
fn creator_device(row: &Row) -> Vec<(String, EventKind)> {
    if row.creator_kind == "device" {
        vec![(row.creator_id.clone(), EventKind::RequestEnded)]
    } else {
        Vec::new()
    }
}

/// The devices that can co-sign for `wallet_id`: a structure wallet's active device parties;
/// a 2-of-2 wallet's owner's active devices (the server does not know which holds the share).
async fn cosigners(conn: &mut sqlx::AnyConnection, wallet_id: &str) -> ApiResult<Vec<String>> {
    match db::requests::wallet_owner(&mut *conn, wallet_id).await? {
        Some((_, Some(_))) => Ok(db::requests::active_device_parties(&mut *conn, wallet_id).await?),
        Some((owner, None)) => Ok(db::requests::active_devices_of_user(&mut *conn, &owner).await?),
        None => Ok(Vec::new()),
    }
}

/// The active devices that speak for `rule`'s approvers (each named device, each named user's
/// devices), but `creator`.
async fn approver_devices(
    conn: &mut sqlx::AnyConnection,
    rule: &Rule,
    creator: &str,
) -> ApiResult<Vec<String>> {
    let (devices, users) = rule.named();
    let mut out = BTreeSet::new();
    for d in devices {
        if let Some((db::DeviceStatus::Active, _)) = db::devices::standing(&mut *conn, d).await? {
            out.insert(d.to_string());
        }
    }
    for u in users {
        out.extend(db::requests::active_devices_of_user(&mut *conn, u).await?);
    }
    out.remove(creator);
    Ok(out.into_iter().collect())
}

fn ready_events(devices: Vec<String>) -> Vec<(String, EventKind)> {
    devices
        .into_iter()
        .map(|d| (d, EventKind::ReadyToSign))
        .collect()
}

/// The system's subject of a change about `row` (the expiry sweep, a session's end): the
/// wallet's owner (`owner`, whose audit log lists it), the creating device, the wallet.
fn about<'a>(row: &'a Row, owner: &'a Option<String>) -> Subject<'a> {
    Subject {
        user: owner.as_deref(),
        device: (row.creator_kind == "device").then_some(row.creator_id.as_str()),
        wallet: Some(&row.wallet_id),
    }
}

/// The owner of `row`'s wallet.
async fn owner_of(tx: &mut WriteTx, row: &Row) -> ApiResult<Option<String>> {
    Ok(db::requests::wallet_owner(&mut **tx, &row.wallet_id)
        .await?
        .map(|(owner, _)| owner))
}

/// Expires `row` (waiting past its expiry, or its session over past it) in `tx`: it no longer
/// counts toward the policy's limits, as a refused approval does not.
async fn expire_in(tx: &mut WriteTx, row: &mut Row, at: i64) -> ApiResult<RequestInfo> {
    let was = row.state;
    row.state = RequestState::Expired;
    row.detail = Some("not signed before its expiry".into());
    row.updated_at = at;
    db::requests::stop_counting(&mut **tx, &row.id, at).await?;
    let owner = owner_of(tx, row).await?;
    let record = Record {
        kind: "request.expired",
        subject: about(row, &owner),
        detail: json!({ "request_id": row.id, "was": was, "expires_at": rfc3339(row.expires_at) }),
    };
    let events = creator_device(row);
    let snapshot = row.clone();
    apply(tx, &snapshot, false, vec![record], &events).await
}

/// Fails `row` in `tx` (its sessions ended without a signature too often).
async fn fail_in(tx: &mut WriteTx, row: &mut Row, at: i64, detail: String) -> ApiResult<()> {
    row.state = RequestState::Failed;
    row.detail = Some(detail);
    row.updated_at = at;
    let owner = owner_of(tx, row).await?;
    let record = Record {
        kind: "request.failed",
        subject: about(row, &owner),
        detail: json!({ "request_id": row.id, "session_id": row.session_id, "attempts": row.attempts, "detail": row.detail }),
    };
    let events = creator_device(row);
    let snapshot = row.clone();
    apply(tx, &snapshot, false, vec![record], &events).await?;
    Ok(())
}

/// `POST /requests`: a durable signing request, checked as `POST /sign` checks a request up to
/// and including the wallet's policy, then waiting for its approvers (`awaiting_approval`) or
/// its co-signers (`ready`).
#[utoipa::path(post, path = "/requests", tag = "requests", security(("bearer" = [])), request_body = CreateRequest, responses((status = 201, description = "The request", body = RequestInfo), crate::openapi::AuthErrors, crate::openapi::PolicyDenied, crate::openapi::NotFound, crate::openapi::Conflict, crate::openapi::Errors))]
pub async fn create(
    State(state): State<AppState>,
    caller: Caller,
    ApiJson(req): ApiJson<CreateRequest>,
) -> ApiResult<(StatusCode, Json<RequestInfo>)> {
    req.path
        .parse::<DerivationPath>()
        .map_err(|e| ApiError::BadRequest(format!("path: {e}")))?;
    if let Some(secs) = req.expires_in_secs
        && !(1..=MAX_REQUEST_EXPIRY_SECS).contains(&secs)
    {
        return Err(ApiError::BadRequest(format!(
            "expires_in_secs must be 1 to {MAX_REQUEST_EXPIRY_SECS}"
        )));
    }
    let decoded = tessera_api::intent::decode(&req.kind);
    let kind = req.kind.request_kind();
    let (device_id, user_id, creator_kind, creator_id) = match &caller {
        Caller::Device(d) => (
            d.device_id.as_str(),
            d.user_id.as_str(),
            "device",
            &d.device_id,
        ),
        Caller::Service(s) => {
            s.allows(&req.wallet_id, kind)?;
            ("", s.user_id.as_str(), "service", &s.service_id)
        }
    };

    let mut tx = state.begin_write().await?;
    let context =
        db::wallets::sign_context(&mut tx, device_id, user_id, &req.wallet_id, false).await?;
    let Ok(SignContext {
        wallet,
        standing,
        policy,
        structure,
        ..
    }) = context
    else {
        if let Err(e) = &decoded {
            return Err(ApiError::BadRequest(e.to_string()));
        }
        return Err(ApiError::NotFound(format!("no wallet {}", req.wallet_id)));
    };
    let owner = db::requests::wallet_owner(&mut *tx, &wallet.id)
        .await?
        .map(|(owner, _)| owner)
        .ok_or_else(|| ApiError::NotFound(format!("no wallet {}", req.wallet_id)))?;
    if creator_kind == "service" && owner != user_id {
        return Err(ApiError::NotFound(format!("no wallet {}", req.wallet_id)));
    }
    let subject = Subject {
        user: Some(user_id),
        device: (creator_kind == "device").then_some(device_id),
        wallet: Some(&wallet.id),
    };
    crate::wallets::refuse_banned(&mut tx, &wallet.id, standing, structure.is_some()).await?;
    let decoded = match crate::wallets::for_wallet(
        &state, &mut tx, &wallet.id, &req.kind, &req.path, decoded,
    )
    .await
    {
        Ok(decoded) => decoded,
        Err(Refusal::Invalid(why)) => {
            return Err(crate::wallets::invalid_request(tx, subject, kind, why).await);
        }
        Err(Refusal::Other(e)) => return Err(e),
    };
    let digest = hex::encode(decoded.digest);
    let request = crate::wallets::Request {
        kind,
        decoded: &decoded,
        digest: &digest,
        path: &req.path,
    };
    let allowed = match crate::wallets::check_policy(&mut tx, policy, &wallet.id, &request).await? {
        Ok(allowed) => allowed,
        Err((version, denial)) => {
            return Err(crate::wallets::refuse(tx, subject, &request, version, denial).await);
        }
    };
    let policy = &allowed.policy;
    let at = allowed.at;
    let summary = crate::policy::summary(policy, &decoded);
    let rule = match &policy.approvals {
        Some(rule) => Some(rule.clone()),
        None if policy.require_approval => {
            let mut others = db::requests::active_devices_of_user(&mut *tx, &owner).await?;
            others.retain(|d| d != device_id);
            Some(any_other_device(&others)?)
        }
        None => None,
    };
    let checked = rule
        .as_ref()
        .map(|r| {
            Rule::parse(r).map_err(|e| ApiError::Conflict(format!("the policy's approvals: {e}")))
        })
        .transpose()?;
    let expires_in = req
        .expires_in_secs
        .or(policy.request_expiry_secs)
        .unwrap_or(DEFAULT_REQUEST_EXPIRY_SECS)
        .min(MAX_REQUEST_EXPIRY_SECS);
    let id = hex::encode(&tessera_core::protocols::fresh_nonce()[..16]);
    let row = Row {
        id: id.clone(),
        wallet_id: wallet.id.clone(),
        creator_kind: creator_kind.to_string(),
        creator_id: creator_id.clone(),
        kind,
        intent: serde_json::to_string(&req.kind).map_err(|e| ApiError::Internal(e.to_string()))?,
        path: req.path.clone(),
        digest: digest.clone(),
        summary: summary.clone(),
        state: if rule.is_some() {
            RequestState::AwaitingApproval
        } else {
            RequestState::Ready
        },
        approval_rule: rule
            .as_ref()
            .map(serde_json::to_string)
            .transpose()
            .map_err(|e| ApiError::Internal(e.to_string()))?,
        policy_version: allowed.version as i64,
        created_at: at,
        expires_at: at + expires_in as i64,
        updated_at: at,
        session_id: None,
        attempts: 0,
        signature: None,
        detail: None,
    };
    // The request counts toward the policy's limits once, from now: `policy::history` reads
    // this row (keyed by the request id) until the request is refused or expires.
    db::approvals::insert(
        &mut *tx,
        &db::approvals::NewSignRequest {
            session_id: &id,
            wallet_id: &wallet.id,
            device_id: creator_id,
            kind,
            value_wei: decoded.value.map(|v| v.to_string()),
            max_fee_wei: decoded.max_fee.map(|v| v.to_string()),
            token_amounts: crate::policy::token_amounts(policy, &decoded),
            btc_spend: crate::policy::btc_spend(&decoded),
            digest: &digest,
            summary: &summary,
            requested_at: at,
            approval: Approval::None,
            expires_at: row.expires_at,
        },
    )
    .await?;
    let events = match &checked {
        Some(rule) => approver_devices(&mut tx, rule, device_id)
            .await?
            .into_iter()
            .map(|d| (d, EventKind::ApprovalNeeded))
            .collect(),
        None => ready_events(cosigners(&mut tx, &wallet.id).await?),
    };
    let record = Record {
        kind: "request.created",
        subject,
        detail: json!({
            "request_id": id, "creator": { creator_kind: creator_id }, "kind": kind,
            "digest": digest, "summary": summary, "path": req.path, "state": row.state,
            "approval_rule": rule, "policy_version": allowed.version,
            "expires_at": rfc3339(row.expires_at),
        }),
    };
    let info = apply(&mut tx, &row, true, vec![record], &events).await?;
    tx.commit().await?;
    crate::events::wake();
    Ok((StatusCode::CREATED, Json(info)))
}

/// Whether `me` may see `row`: its user owns the wallet, it is a device party of it, it created
/// it, or it speaks for an approver of it.
async fn visible(conn: &mut sqlx::AnyConnection, me: &AuthDevice, row: &Row) -> ApiResult<bool> {
    if db::requests::direct_access(&mut *conn, &row.id, &me.device_id, &me.user_id).await? {
        return Ok(true);
    }
    Ok(stored_rule(row)?.is_some_and(|r| !r.labels_of(&me.device_id, &me.user_id).is_empty()))
}

/// `GET /requests?wallet=&state=`: the requests of the wallets the caller's user owns or the
/// caller co-signs, and those it approves, newest first (at most 200).
#[utoipa::path(get, path = "/requests", tag = "requests", security(("bearer" = [])), params(RequestQuery), responses((status = 200, description = "The requests", body = Vec<RequestInfo>), crate::openapi::AuthErrors, crate::openapi::Errors))]
pub async fn list(
    State(state): State<AppState>,
    me: AuthDevice,
    ApiQuery(q): ApiQuery<RequestQuery>,
) -> ApiResult<Json<Vec<RequestInfo>>> {
    let at = now();
    // A waiting request past its expiry reads as expired: those are read with the expired ones.
    let states = match q.state {
        None => Vec::new(),
        Some(RequestState::Expired) => vec![
            RequestState::Expired,
            RequestState::AwaitingApproval,
            RequestState::Ready,
        ],
        Some(s) => vec![s],
    };
    let mut conn = state.db().acquire().await?;
    let rows = db::requests::candidates(
        &mut *conn,
        &me.device_id,
        &me.user_id,
        q.wallet.as_deref(),
        &states,
        (LIST_LIMIT * 5) as i64,
    )
    .await?;
    let mut out = Vec::new();
    for (row, direct) in rows {
        if out.len() == LIST_LIMIT {
            break;
        }
        if q.state
            .is_some_and(|s| s != state_at(row.state, row.expires_at, at))
        {
            continue;
        }
        let approver = || -> ApiResult<bool> {
            Ok(stored_rule(&row)?
                .is_some_and(|r| !r.labels_of(&me.device_id, &me.user_id).is_empty()))
        };
        if direct || approver()? {
            out.push(info(&mut conn, &row, at).await?);
        }
    }
    Ok(Json(out))
}

/// `GET /requests/{id}`: a device that may see it (see [`list`]), or the service account that
/// created it.
#[utoipa::path(get, path = "/requests/{id}", tag = "requests", security(("bearer" = [])), params(("id" = String, Path, description = "The request")), responses((status = 200, description = "The request", body = RequestInfo), crate::openapi::AuthErrors, crate::openapi::NotFound, crate::openapi::Errors))]
pub async fn get(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath(id): ApiPath<String>,
) -> ApiResult<Json<RequestInfo>> {
    let id = request_id(&id)?;
    let mut conn = state.db().acquire().await?;
    let row = db::requests::get(&mut *conn, id)
        .await?
        .ok_or_else(|| no_request(id))?;
    let allowed = match &caller {
        Caller::Device(me) => visible(&mut conn, me, &row).await?,
        Caller::Service(s) => row.creator_kind == "service" && row.creator_id == s.service_id,
    };
    if !allowed {
        return Err(no_request(id));
    }
    Ok(Json(info(&mut conn, &row, now()).await?))
}

/// `POST /requests/{id}/approve`.
#[utoipa::path(post, path = "/requests/{id}/approve", tag = "requests", security(("bearer" = [])), params(("id" = String, Path, description = "The request")), request_body = DecideRequest, responses((status = 200, description = "The request, after the decision", body = RequestInfo), crate::openapi::AuthErrors, crate::openapi::NotFound, crate::openapi::Conflict, crate::openapi::Gone, crate::openapi::Errors))]
pub async fn approve(
    State(state): State<AppState>,
    me: AuthDevice,
    ApiPath(id): ApiPath<String>,
    ApiJson(req): ApiJson<DecideRequest>,
) -> ApiResult<Json<RequestInfo>> {
    decide(&state, &me, &id, &req, true).await.map(Json)
}

/// `POST /requests/{id}/refuse`.
#[utoipa::path(post, path = "/requests/{id}/refuse", tag = "requests", security(("bearer" = [])), params(("id" = String, Path, description = "The request")), request_body = DecideRequest, responses((status = 200, description = "The request, after the decision", body = RequestInfo), crate::openapi::AuthErrors, crate::openapi::NotFound, crate::openapi::Conflict, crate::openapi::Gone, crate::openapi::Errors))]
pub async fn refuse(
    State(state): State<AppState>,
    me: AuthDevice,
    ApiPath(id): ApiPath<String>,
    ApiJson(req): ApiJson<DecideRequest>,
) -> ApiResult<Json<RequestInfo>> {
    decide(&state, &me, &id, &req, false).await.map(Json)
}

/// Why `me` may not decide on `row` now (checked before the signature, and again under the
/// request's lock); `Ok(labels)`: the labels it speaks for.
fn may_decide(
    me: &AuthDevice,
    row: &Row,
    decided: &[db::requests::DecisionRow],
    at: i64,
) -> ApiResult<Result<Vec<String>, ()>> {
    match state_at(row.state, row.expires_at, at) {
        RequestState::Expired => return Ok(Err(())),
        RequestState::AwaitingApproval => {}
        other => {
            return Err(ApiError::Conflict(format!(
                "the request is {other}, not awaiting approval"
            )));
        }
    }
    if row.creator_kind == "device" && row.creator_id == me.device_id {
        return Err(ApiError::Forbidden(
            "a device cannot approve its own request: use another approver's device".into(),
        ));
    }
    let labels = stored_rule(row)?
        .map(|r| r.labels_of(&me.device_id, &me.user_id))
        .unwrap_or_default();
    if labels.is_empty() {
        return Err(ApiError::Forbidden(
            "not an approver of this request".into(),
        ));
    }
    if decided.iter().any(|d| d.0 == me.device_id) {
        return Err(ApiError::Conflict(
            "this device has already decided on this request".into(),
        ));
    }
    Ok(Ok(labels))
}

async fn gone(state: &AppState, id: &str) -> ApiError {
    let expired = async {
        let mut tx = state.begin_write().await?;
        if let Some(mut row) = db::requests::lock(&mut tx, id).await? {
            let at = now();
            if row.state != RequestState::Expired
                && state_at(row.state, row.expires_at, at) == RequestState::Expired
            {
                expire_in(&mut tx, &mut row, at).await?;
            }
        }
        tx.commit().await
    }
    .await;
    match expired {
        Ok(()) => {
            crate::events::wake();
            ApiError::Gone("the request expired".into())
        }
        Err(e) => e,
    }
}

async fn decide(
    state: &AppState,
    me: &AuthDevice,
    id: &str,
    req: &DecideRequest,
    approve: bool,
) -> ApiResult<RequestInfo> {
    let id = request_id(id)?;
    let (row, decided) = {
        let mut conn = state.db().acquire().await?;
        let row = db::requests::get(&mut *conn, id)
            .await?
            .ok_or_else(|| no_request(id))?;
        if !visible(&mut conn, me, &row).await? {
            return Err(no_request(id));
        }
        let decided = db::requests::decisions(&mut *conn, id).await?;
        (row, decided)
    };
    if may_decide(me, &row, &decided, now())?.is_err() {
        return Err(gone(state, id).await);
    }
    if req.summary != row.summary {
        return Err(ApiError::BadRequest(
            "summary: it differs from the request's; read the request again (GET /requests/{id}) \
             and decide on what it says"
                .into(),
        ));
    }
    crate::registry::verify_device_signature(
        state,
        &me.device_id,
        &api::requests::request_decision_message(id, &row.digest, &row.summary, approve),
        &req.signature,
    )
    .await?;

    let mut tx = state.begin_write().await?;
    let mut row = db::requests::lock(&mut tx, id)
        .await?
        .ok_or_else(|| no_request(id))?;
    let mut decided = db::requests::decisions(&mut *tx, id).await?;
    let at = now();
    let Ok(labels) = may_decide(me, &row, &decided, at)? else {
        drop(tx);
        return Err(gone(state, id).await);
    };
    let labels_json =
        serde_json::to_string(&labels).map_err(|e| ApiError::Internal(e.to_string()))?;
    db::requests::insert_decision(
        &mut *tx,
        id,
        (
            &me.device_id,
            &labels_json,
            approve,
            &req.summary,
            &req.signature,
            at,
        ),
    )
    .await?;
    decided.push((
        me.device_id.clone(),
        labels_json,
        i64::from(approve),
        req.summary.clone(),
        req.signature.clone(),
        at,
    ));
    let rule = stored_rule(&row)?
        .ok_or_else(|| ApiError::Internal("a request awaiting approval has no rule".into()))?;
    let (mut yes, mut no) = (BTreeSet::new(), BTreeSet::new());
    for (_, labels, approve, ..) in &decided {
        let labels: Vec<String> = serde_json::from_str(labels).unwrap_or_default();
        if *approve != 0 {
            yes.extend(labels);
        } else {
            no.extend(labels);
        }
    }
    let wallet_id = row.wallet_id.clone();
    let subject = Subject::device(me).wallet(&wallet_id);
    let mut records = vec![Record {
        kind: if approve {
            "request.approved"
        } else {
            "request.refused"
        },
        subject,
        detail: json!({
            "request_id": id, "labels": labels, "summary": req.summary, "digest": row.digest,
            "signature": req.signature,
        }),
    }];
    row.updated_at = at;
    let mut events = Vec::new();
    match rule.standing(&yes, &no) {
        Standing::Authorised => {
            row.state = RequestState::Ready;
            records.push(Record {
                kind: "request.ready",
                subject,
                detail: json!({ "request_id": id, "approved_by": yes }),
            });
            events = ready_events(cosigners(&mut tx, &row.wallet_id).await?);
        }
        Standing::Refused(refusing) => {
            row.state = RequestState::Refused;
            row.detail = Some(format!("refused by {}", refusing.join(", ")));
            db::requests::stop_counting(&mut *tx, id, at).await?;
            records.push(Record {
                kind: "request.rejected",
                subject,
                detail: json!({ "request_id": id, "refused_by": refusing }),
            });
            events = creator_device(&row);
        }
        Standing::Waiting => {}
    }
    let info = apply(&mut tx, &row, false, records, &events).await?;
    tx.commit().await?;
    crate::events::wake();
    Ok(info)
}

/// `POST /requests/{id}/session`'s optional body, as `POST /sign`'s.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct SessionBody {
    #[serde(default)]
    device_nonce: Option<String>,
    #[serde(default)]
    with: Vec<String>,
}

/// `POST /requests/{id}/session`: a device party able to sign a `ready` request opens its
/// protocol session, created as `POST /sign` creates one, without evaluating the policy again
/// (it was, at creation). The device then runs `GET /ws?session_id=…`.
#[utoipa::path(post, path = "/requests/{id}/session", tag = "requests", security(("bearer" = [])), params(("id" = String, Path, description = "The request")), responses((status = 200, description = "A signing session to open on /ws", body = api::SessionCreated), crate::openapi::AuthErrors, crate::openapi::NotFound, crate::openapi::Conflict, crate::openapi::Gone, crate::openapi::Errors))]
pub async fn session(
    State(state): State<AppState>,
    me: AuthDevice,
    ApiPath(id): ApiPath<String>,
    body: Bytes,
) -> ApiResult<Json<api::SessionCreated>> {
    let id = request_id(&id)?;
    let body: SessionBody = if body.iter().all(u8::is_ascii_whitespace) {
        SessionBody::default()
    } else {
        serde_json::from_slice(&body).map_err(|e| ApiError::BadRequest(format!("body: {e}")))?
    };
    let nonce = crate::wallets::device_nonce(body.device_nonce.as_deref())?;
    let idle = state.config().session_idle_timeout.as_secs() as i64;
    let mut tx = state.begin_write().await?;
    let mut row = db::requests::lock(&mut tx, id)
        .await?
        .ok_or_else(|| no_request(id))?;
    if !db::requests::direct_access(&mut *tx, id, &me.device_id, &me.user_id).await? {
        return Err(no_request(id));
    }
    let at = now();
    match state_at(row.state, row.expires_at, at) {
        RequestState::Ready => {}
        RequestState::Signing => {
            if let Some(sid) = &row.session_id
                && db::requests::session_live(&mut *tx, sid, at - idle).await?
            {
                return Err(ApiError::Conflict(format!(
                    "session {sid} is signing this request; open it, or wait for it to end"
                )));
            }
            if row.expires_at <= at {
                expire_in(&mut tx, &mut row, at).await?;
                tx.commit().await?;
                crate::events::wake();
                return Err(ApiError::Gone("the request expired".into()));
            }
            // Its session is over without a result (never opened, or the server restarted
            // under it): another one, unless it had its share.
            if row.attempts >= MAX_ATTEMPTS {
                let detail = format!(
                    "{} signing sessions ended without a signature",
                    row.attempts
                );
                fail_in(&mut tx, &mut row, at, detail.clone()).await?;
                tx.commit().await?;
                crate::events::wake();
                return Err(ApiError::Conflict(format!("the request failed: {detail}")));
            }
        }
        RequestState::Expired => {
            drop(tx);
            return Err(gone(&state, id).await);
        }
        other => {
            return Err(ApiError::Conflict(format!(
                "the request is {other}; only a ready request can be signed"
            )));
        }
    }
    let context =
        db::wallets::sign_context(&mut tx, &me.device_id, &me.user_id, &row.wallet_id, false)
            .await?;
    let Ok(SignContext {
        wallet,
        standing,
        stale_pending,
        structure,
        ..
    }) = context
    else {
        return Err(ApiError::Forbidden(
            "this device is not a party of the request's wallet".into(),
        ));
    };
    let able = match &structure {
        Some(_) => db::requests::active_device_parties(&mut *tx, &wallet.id)
            .await?
            .contains(&me.device_id),
        None => db::requests::wallet_owner(&mut *tx, &wallet.id)
            .await?
            .is_some_and(|(owner, _)| owner == me.user_id),
    };
    if !able {
        return Err(ApiError::Forbidden(
            "this device is not a party of the request's wallet able to sign it".into(),
        ));
    }
    crate::wallets::refuse_banned(&mut tx, &wallet.id, standing, structure.is_some()).await?;
    let intent: tessera_api::intent::SignKind = serde_json::from_str(&row.intent)
        .map_err(|e| ApiError::Internal(format!("stored intent: {e}")))?;
    let plan = crate::wallets::plan_sign_session(
        &mut tx,
        &me.device_id,
        (&wallet, structure.as_deref()),
        (&intent, row.kind),
        (&row.digest, &row.path, &row.summary),
        &body.with,
    )
    .await?;
    let created = crate::wallets::open_sign_session(
        &state,
        &mut tx,
        &me,
        &wallet,
        plan,
        (nonce, None),
        stale_pending,
    )
    .await?;
    row.state = RequestState::Signing;
    row.session_id = Some(created.session_id.to_string());
    row.attempts += 1;
    row.updated_at = at;
    let record = Record {
        kind: "request.signing",
        subject: Subject::device(&me).wallet(&wallet.id),
        detail: json!({ "request_id": id, "session_id": created.session_id, "attempt": row.attempts }),
    };
    apply(&mut tx, &row, false, vec![record], &[]).await?;
    tx.commit().await?;
    Ok(Json(created))
}

/// Called by `ws::record_end` in the transaction that records the end of protocol session
/// `session_id` (2-of-2 and structure wallets alike): when the session ran a request, `Done`
/// makes it `signed` with `signature` (r ‖ s ‖ v hex, as the audit record has it); a failed or
/// expired session sends it back to `ready` (or `failed` after [`MAX_ATTEMPTS`], `expired` past
/// its expiry). Other sessions are left alone.
///
/// # Errors
/// A database error.
pub async fn session_ended(
    tx: &mut WriteTx,
    session_id: &str,
    status: SessionStatus,
    signature: Option<&str>,
) -> ApiResult<()> {
    if !matches!(
        status,
        SessionStatus::Done | SessionStatus::Failed | SessionStatus::Expired
    ) {
        return Ok(());
    }
    let Some(mut row) = db::requests::lock_by_session(tx, session_id).await? else {
        return Ok(());
    };
    if row.state != RequestState::Signing || row.session_id.as_deref() != Some(session_id) {
        return Ok(());
    }
    let at = now();
    row.updated_at = at;
    let before = row.clone();
    let owner = owner_of(tx, &before).await?;
    let subject = about(&before, &owner);
    let (record, events) = match (status, signature) {
        (SessionStatus::Done, Some(signature)) => {
            row.state = RequestState::Signed;
            row.signature = Some(signature.to_string());
            row.detail = None;
            let record = Record {
                kind: "request.signed",
                subject,
                detail: json!({ "request_id": row.id, "session_id": session_id, "signature": signature, "digest": row.digest }),
            };
            (record, creator_device(&row))
        }
        _ if row.expires_at <= at => {
            expire_in(tx, &mut row, at).await?;
            return Ok(());
        }
        _ if row.attempts < MAX_ATTEMPTS => {
            row.state = RequestState::Ready;
            row.detail = Some(format!("session {session_id} ended: {status}"));
            let record = Record {
                kind: "request.retry",
                subject,
                detail: json!({ "request_id": row.id, "session_id": session_id, "status": status, "attempts": row.attempts }),
            };
            (record, ready_events(cosigners(tx, &row.wallet_id).await?))
        }
        _ => {
            row.state = RequestState::Failed;
            row.detail = Some(format!(
                "{} signing sessions ended without a signature (the last {status})",
                row.attempts
            ));
            let record = Record {
                kind: "request.failed",
                subject,
                detail: json!({ "request_id": row.id, "session_id": session_id, "status": status, "attempts": row.attempts }),
            };
            (record, creator_device(&row))
        }
    };
    let snapshot = row.clone();
    apply(tx, &snapshot, false, vec![record], &events).await?;
    Ok(())
}

/// The expiry sweep (every housekeeping tick): requests waiting past their expiry, and those
/// whose session is over past it, become `expired`, each in its own transaction. A request
/// whose session runs is never expired. Returns how many expired.
///
/// # Errors
/// A database error.
pub async fn expire_due(state: &AppState) -> ApiResult<usize> {
    let idle = state.config().session_idle_timeout.as_secs() as i64;
    let at = now();
    let ids = db::requests::due(state.db(), at, at - idle, 500).await?;
    let mut expired = 0;
    for id in ids {
        let mut tx = state.begin_write().await?;
        let Some(mut row) = db::requests::lock(&mut tx, &id).await? else {
            continue;
        };
        let due = match row.state {
            RequestState::AwaitingApproval | RequestState::Ready => row.expires_at <= at,
            RequestState::Signing => {
                row.expires_at <= at
                    && !match &row.session_id {
                        Some(sid) => db::requests::session_live(&mut *tx, sid, at - idle).await?,
                        None => false,
                    }
            }
            _ => false,
        };
        if due {
            expire_in(&mut tx, &mut row, at).await?;
            tx.commit().await?;
            expired += 1;
        }
    }
    if expired > 0 {
        crate::events::wake();
    }
    Ok(expired)
}

/// The routes of this area.
pub(crate) fn router() -> axum::Router<AppState> {
    use axum::routing::{get as answer_get, post};
    axum::Router::new()
        .route("/requests", post(create).get(list))
        .route("/requests/{id}", answer_get(get))
        .route("/requests/{id}/approve", post(approve))
        .route("/requests/{id}/refuse", post(refuse))
        .route("/requests/{id}/session", post(session))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn waiting_requests_read_as_expired_past_their_expiry() {
        for s in [RequestState::AwaitingApproval, RequestState::Ready] {
            assert_eq!(state_at(s, 100, 99), s);
            assert_eq!(state_at(s, 100, 100), RequestState::Expired);
        }
        // A running session, and the ends, are not expired by reading.
        for s in [
            RequestState::Signing,
            RequestState::Signed,
            RequestState::Refused,
            RequestState::Failed,
        ] {
            assert_eq!(state_at(s, 100, 1000), s);
        }
    }

    #[test]
    fn require_approval_asks_one_of_the_other_devices() {
        assert!(matches!(any_other_device(&[]), Err(ApiError::Conflict(_))));
        let one = any_other_device(&["d1".into()]).unwrap();
        assert_eq!(one.structure, "device-1");
        let rule = Rule::parse(&one).unwrap();
        assert_eq!(rule.labels_of("d1", "u"), ["device-1"]);
        let three = any_other_device(&["d1".into(), "d2".into(), "d3".into()]).unwrap();
        assert_eq!(
            three.structure,
            "threshold(1, device-1, device-2, device-3)"
        );
        let rule = Rule::parse(&three).unwrap();
        let approved: BTreeSet<String> = ["device-2".to_string()].into();
        assert_eq!(
            rule.standing(&approved, &BTreeSet::new()),
            Standing::Authorised
        );
        let refused: BTreeSet<String> = ["device-1".to_string(), "device-2".to_string()].into();
        assert_eq!(rule.standing(&BTreeSet::new(), &refused), Standing::Waiting);
    }

    #[test]
    fn request_ids_are_32_hex_digits() {
        assert!(request_id(&"a".repeat(32)).is_ok());
        for bad in [
            "",
            "abc",
            &"A".repeat(32),
            &"g".repeat(32),
            &"a".repeat(33),
            "../../x",
        ] {
            assert!(
                matches!(request_id(bad), Err(ApiError::NotFound(_))),
                "{bad}"
            );
        }
    }
}
