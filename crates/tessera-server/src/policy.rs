//! Signing policies: per wallet, set by a device of the owner with a signed request, versioned,
//! and evaluated on every `POST /sign` before any cryptography. A denial is a 403 naming the rule
//! and an audit record. A policy that requires approval holds the request until another active
//! device of the user approves it (signed) within the timeout.

use axum::Json;
use axum::extract::{FromRequest, Request, State};
use axum::http::StatusCode;
use serde::Deserialize;
use serde_json::json;
use tessera_api::intent::{Decoded, U256};
use tessera_api::{self as api, Policy};

use crate::audit;
use crate::auth::AuthDevice;
use crate::db::{self, Approval, RequestKind};
use crate::error::{ApiError, ApiResult};
use crate::extract::{ApiJson, ApiPath, ApiQuery};
use crate::state::{AppState, now, rfc3339};

/// The policy in force for a wallet: (version, policy, set by, set at); version 0 is the default.
///
/// # Errors
/// A database error, or a stored policy that no longer parses.
pub async fn current(
    state: &AppState,
    wallet_id: &str,
) -> ApiResult<(u64, Policy, Option<String>, Option<i64>)> {
    let mut conn = state.db().acquire().await?;
    current_in(&mut conn, wallet_id).await
}

/// [`current`] on a given connection (a [`crate::db::WriteTx`] that acts on it).
///
/// # Errors
/// A database error, or a stored policy that no longer parses.
pub async fn current_in(
    conn: &mut sqlx::AnyConnection,
    wallet_id: &str,
) -> ApiResult<(u64, Policy, Option<String>, Option<i64>)> {
    match db::policies::current(conn, wallet_id).await? {
        None => Ok((0, Policy::default(), None, None)),
        Some((version, text, by, at)) => {
            let (version, policy) = from_stored(Some((version, text)))?;
            Ok((version, policy, Some(by), Some(at)))
        }
    }
}

/// A stored policy row's version and JSON as (version, policy); none is version 0, the default.
///
/// # Errors
/// A stored policy that no longer parses.
pub fn from_stored(row: Option<(i64, String)>) -> ApiResult<(u64, Policy)> {
    match row {
        None => Ok((0, Policy::default())),
        Some((version, text)) => {
            let policy = serde_json::from_str(&text)
                .map_err(|e| ApiError::Internal(format!("stored policy: {e}")))?;
            Ok((version.max(0) as u64, policy))
        }
    }
}

/// `?wallet=`.
#[derive(Deserialize)]
pub struct WalletQuery {
    wallet: String,
}

/// `GET /policy?wallet=…`.
#[utoipa::path(get, path = "/policy", tag = "policy", security(("bearer" = [])), params(("wallet" = String, Query, description = "The wallet's name or id")), responses((status = 200, description = "The wallet's policy", body = api::PolicyInfo), crate::openapi::AuthErrors, crate::openapi::NotFound, crate::openapi::Errors))]
pub async fn get(
    State(state): State<AppState>,
    me: AuthDevice,
    ApiQuery(q): ApiQuery<WalletQuery>,
) -> ApiResult<Json<api::PolicyInfo>> {
    let wallet = db::wallets::owned(state.db(), &me.user_id, &q.wallet).await?;
    let (version, policy, set_by, set_at) = current(&state, &wallet.id).await?;
    Ok(Json(api::PolicyInfo {
        wallet_id: wallet.id.into(),
        version,
        policy,
        set_by: set_by.map(Into::into),
        set_at: set_at.map(rfc3339),
    }))
}

/// Checks a policy's values beyond its shape (what `PUT /policy` refuses with 400): addresses,
/// decimal amounts, hours, the approval timeout. Public for the fuzz targets.
///
/// # Errors
/// [`ApiError::BadRequest`] naming the rule.
pub fn check(policy: &Policy) -> ApiResult<()> {
    let bad = |m: String| Err(ApiError::BadRequest(m));
    for d in policy.destinations.iter().flatten() {
        if tessera_api::intent::parse_address(d).is_err() {
            return bad(format!("destination {d:?} is not a 0x-hex address"));
        }
    }
    for (name, v) in [
        ("max_value_per_tx", &policy.max_value_per_tx),
        ("max_value_per_24h", &policy.max_value_per_24h),
        ("max_fee_per_tx", &policy.max_fee_per_tx),
    ] {
        if let Some(v) = v
            && U256::from_str_radix(v, 10).is_err()
        {
            return bad(format!("{name} must be a decimal amount in wei"));
        }
    }
    if let Some([a, b]) = policy.hours_utc
        && (a > 23 || b > 24 || a == b)
    {
        return bad(
            "hours_utc must be [start, end) with 0 <= start <= 23, end <= 24, start != end".into(),
        );
    }
    if !(10..=86_400).contains(&policy.approval_timeout_secs) {
        return bad("approval_timeout_secs must be 10 to 86400".into());
    }
    Ok(())
}

/// `PUT /policy`'s body. A kind in `allowed_kinds` that no signing request has is refused as
/// the policy's 400 naming the kinds (as `check` refuses its other rules; the answer it had
/// when the kinds were strings), not as the 422 of a body of the wrong shape; the body is
/// otherwise read as [`ApiJson`] reads every body.
pub struct SetPolicyBody(api::SetPolicy);

impl<S: Send + Sync> FromRequest<S> for SetPolicyBody {
    type Rejection = ApiError;

    async fn from_request(request: Request, state: &S) -> Result<Self, ApiError> {
        let ApiJson(body) = ApiJson::<serde_json::Value>::from_request(request, state).await?;
        let kinds = body
            .pointer("/policy/allowed_kinds")
            .and_then(serde_json::Value::as_array);
        for kind in kinds
            .into_iter()
            .flatten()
            .filter_map(serde_json::Value::as_str)
        {
            if kind.parse::<RequestKind>().is_err() {
                let known: Vec<&str> = RequestKind::ALL.iter().map(|k| k.as_str()).collect();
                return Err(ApiError::BadRequest(format!(
                    "unknown kind {kind:?}: use {}",
                    known.join(", ")
                )));
            }
        }
        // Read as every body is (the same 422 and message naming the field), from the JSON
        // already parsed.
        let bytes = serde_json::to_vec(&body).map_err(|e| ApiError::Internal(e.to_string()))?;
        let Json(request) = Json::<api::SetPolicy>::from_bytes(&bytes)?;
        Ok(SetPolicyBody(request))
    }
}

/// `PUT /policy`: a new version, signed by the calling device's identity key. A change that
/// weakens any rule of a policy that requires approval is held until another active device
/// approves it (or, for a user with one active device, until its time lock ends): see
/// [`crate::held`]; tightening applies at once.
#[utoipa::path(put, path = "/policy", tag = "policy", security(("bearer" = [])), request_body = api::SetPolicy, responses((status = 200, description = "Applied", body = api::PolicyChange), (status = 202, description = "Proposed: it waits for approval", body = api::PolicyChange), crate::openapi::AuthErrors, crate::openapi::NotFound, crate::openapi::Conflict, crate::openapi::Errors))]
pub async fn set(
    State(state): State<AppState>,
    me: AuthDevice,
    SetPolicyBody(req): SetPolicyBody,
) -> ApiResult<(StatusCode, Json<api::PolicyChange>)> {
    let wallet = db::wallets::owned(state.db(), &me.user_id, &req.wallet_id).await?;
    check(&req.policy)?;
    let (version, old, ..) = current(&state, &wallet.id).await?;
    if req.version != version + 1 {
        return Err(ApiError::Conflict(format!(
            "the policy is at version {version}; sign version {} (it changed meanwhile?)",
            version + 1
        )));
    }
    let text = serde_json::to_string(&req.policy).map_err(|e| ApiError::Internal(e.to_string()))?;
    let message = api::policy_message(&wallet.id, req.version, &text);
    crate::registry::verify_device_signature(&state, &me.device_id, &message, &req.signature)
        .await?;
    let weakened = crate::policy_change::weakenings(&old, &req.policy);
    if old.require_approval && !weakened.is_empty() {
        let lone =
            crate::hold::other_active_devices(&state, &me.user_id, &me.device_id).await? == 0;
        let digest = crate::hold::digest(&message);
        let request = crate::hold::Request {
            kind: crate::hold::Kind::PolicyChange,
            user_id: &me.user_id,
            wallet_id: Some(&wallet.id),
            requested_by: &me.device_id,
            digest: &digest,
            request: json!(req),
            summary: format!(
                "policy version {} of wallet {} weakens {}: {text}",
                req.version,
                wallet.name,
                weakened.join(", ")
            ),
        };
        let held = match crate::hold::hold_or_ready(&state, request, lone).await? {
            Ok(held) => held,
            Err(action) => {
                return Ok((StatusCode::ACCEPTED, Json(api::PolicyChange::Held(action))));
            }
        };
        let info = apply(&state, &me.user_id, &me.device_id, &req).await?;
        crate::hold::release(
            &state,
            &held,
            &me.user_id,
            json!({ "version": req.version }),
        )
        .await?;
        return Ok((StatusCode::OK, Json(api::PolicyChange::Applied(info))));
    }
    let info = apply(&state, &me.user_id, &me.device_id, &req).await?;
    Ok((StatusCode::OK, Json(api::PolicyChange::Applied(info))))
}

/// Stores a signed policy version (checked by the caller) as set by `set_by`, if the wallet's
/// policy is still at the version before it, and audits it.
///
/// # Errors
/// [`ApiError::Conflict`] when another version was set meanwhile; a database error.
pub async fn apply(
    state: &AppState,
    user_id: &str,
    set_by: &str,
    req: &api::SetPolicy,
) -> ApiResult<api::PolicyInfo> {
    let mut tx = state.begin_write().await?;
    tx.lock_wallet(&req.wallet_id).await?;
    let (version, ..) = current_in(&mut tx, &req.wallet_id).await?;
    if req.version != version + 1 {
        return Err(ApiError::Conflict(format!(
            "the policy is at version {version} now, not {}: propose the change again",
            req.version - 1
        )));
    }
    let text = serde_json::to_string(&req.policy).map_err(|e| ApiError::Internal(e.to_string()))?;
    let inserted = db::policies::insert(
        &mut *tx,
        &db::policies::NewPolicy {
            wallet_id: &req.wallet_id,
            version: req.version as i64,
            policy: &text,
            set_by,
            signature: &req.signature,
            at: now(),
        },
    )
    .await;
    match inserted {
        Ok(_) => {}
        Err(sqlx::Error::Database(e)) if e.is_unique_violation() => {
            return Err(ApiError::Conflict(
                "another policy version was set meanwhile".into(),
            ));
        }
        Err(e) => return Err(e.into()),
    }
    audit::append_in(
        &mut tx,
        "policy.changed",
        audit::Subject {
            user: Some(user_id),
            device: Some(set_by),
            wallet: Some(&req.wallet_id),
        },
        json!({ "version": req.version, "policy": req.policy, "signature": req.signature }),
    )
    .await?;
    tx.commit().await?;
    Ok(api::PolicyInfo {
        wallet_id: req.wallet_id.clone(),
        version: req.version,
        policy: req.policy.clone(),
        set_by: Some(set_by.into()),
        set_at: Some(rfc3339(now())),
    })
}

/// What a wallet signed recently.
#[derive(Debug, Default)]
pub struct History {
    /// Requests allowed in the last hour.
    pub last_hour: u32,
    /// What the transactions allowed in the last 24 hours may cost, wei: their values plus their
    /// maximum fees (`gas_limit × max_fee_per_gas`).
    pub cost_24h: U256,
}

/// Reads the recent requests of `wallet_id`, when a rule of `policy` needs them. Read it in the
/// write transaction that records the request, after locking the wallet
/// ([`crate::db::WriteTx::lock_wallet`], done by `POST /sign`'s first read), so that concurrent
/// requests see each other.
///
/// # Errors
/// A database error.
pub async fn history(
    conn: &mut sqlx::AnyConnection,
    policy: &Policy,
    wallet_id: &str,
    at: i64,
) -> ApiResult<History> {
    let mut h = History::default();
    if policy.max_signatures_per_hour.is_none() && policy.max_value_per_24h.is_none() {
        return Ok(h);
    }
    let rows = db::approvals::since(conn, wallet_id, at - 86_400).await?;
    let wei = |v: Option<String>| {
        v.and_then(|v| U256::from_str_radix(&v, 10).ok())
            .unwrap_or(U256::ZERO)
    };
    for (t, value, max_fee, approval) in rows {
        if approval == Approval::Refused {
            continue;
        }
        if t > at - 3600 {
            h.last_hour += 1;
        }
        h.cost_24h = h
            .cost_24h
            .saturating_add(wei(value))
            .saturating_add(wei(max_fee));
    }
    Ok(h)
}

/// A rule that denies a request.
#[derive(Debug, PartialEq, Eq)]
pub struct Denial {
    /// The rule's name (a field of [`Policy`]).
    pub rule: &'static str,
    /// Why, for the requester.
    pub message: String,
}

fn deny(rule: &'static str, message: String) -> Result<(), Denial> {
    Err(Denial { rule, message })
}

/// Evaluates `policy` for a request of `kind` (decoded) at Unix time `at`.
///
/// # Errors
/// The first rule that denies it.
pub fn evaluate(
    policy: &Policy,
    kind: RequestKind,
    decoded: &Decoded,
    history: &History,
    at: i64,
) -> Result<(), Denial> {
    if !policy.allowed_kinds.contains(&kind) {
        return deny(
            "allowed_kinds",
            format!("{kind} requests are not allowed for this wallet"),
        );
    }
    if let Some([start, end]) = policy.hours_utc {
        let hour = ((at.rem_euclid(86_400)) / 3600) as u8;
        let inside = if start < end {
            hour >= start && hour < end
        } else {
            hour >= start || hour < end
        };
        if !inside {
            return deny(
                "hours_utc",
                format!("signing is allowed from {start}:00 to {end}:00 UTC; it is {hour}:xx"),
            );
        }
    }
    if let Some(max) = policy.max_signatures_per_hour
        && history.last_hour >= max
    {
        return deny(
            "max_signatures_per_hour",
            format!(
                "{} signatures in the last hour; the limit is {max}",
                history.last_hour
            ),
        );
    }
    if let Some(chain) = decoded.chain_id
        && let Some(allowed) = &policy.chain_ids
        && !allowed.contains(&chain)
    {
        return deny("chain_ids", format!("chain {chain} is not allowed"));
    }
    if let Some(allowed) = &policy.destinations
        && decoded.chain_id.is_some()
    {
        let ok = decoded
            .to
            .as_ref()
            .is_some_and(|to| allowed.iter().any(|a| a.eq_ignore_ascii_case(to)));
        if !ok {
            return deny(
                "destinations",
                format!(
                    "{} is not on the destination allow-list",
                    decoded.to.as_deref().unwrap_or("a contract creation")
                ),
            );
        }
    }
    if let Some(value) = decoded.value {
        // A transaction can cost its value plus up to gas_limit × max_fee_per_gas in fees: the
        // value limits count both, or a transaction of value 0 could burn any amount in fees.
        let limit = |v: &Option<String>| v.as_ref().and_then(|v| U256::from_str_radix(v, 10).ok());
        let max_fee = decoded.max_fee.unwrap_or(U256::ZERO);
        let cost = value.saturating_add(max_fee);
        let what = if max_fee.is_zero() {
            format!("{value} wei")
        } else {
            format!("{value} wei plus up to {max_fee} wei of fees")
        };
        if let Some(max) = limit(&policy.max_fee_per_tx)
            && max_fee > max
        {
            return deny(
                "max_fee_per_tx",
                format!(
                    "fees of up to {max_fee} wei (gas limit × max fee per gas) exceed the limit of {max} wei per transaction"
                ),
            );
        }
        if let Some(max) = limit(&policy.max_value_per_tx)
            && cost > max
        {
            return deny(
                "max_value_per_tx",
                format!("{what} exceeds the limit of {max} wei per transaction"),
            );
        }
        if let Some(max) = limit(&policy.max_value_per_24h)
            && history.cost_24h.saturating_add(cost) > max
        {
            return deny(
                "max_value_per_24h",
                format!(
                    "{what} after {} wei (values and fees) in the last 24 hours exceeds the limit of {max} wei",
                    history.cost_24h
                ),
            );
        }
    }
    Ok(())
}

/// `GET /approvals`: signing requests of the user's wallets waiting for approval.
#[utoipa::path(get, path = "/approvals", tag = "approvals", security(("bearer" = [])), responses((status = 200, description = "Signing requests waiting for this user's approval", body = Vec<api::PendingApproval>), crate::openapi::AuthErrors, crate::openapi::Errors))]
pub async fn pending(
    State(state): State<AppState>,
    me: AuthDevice,
) -> ApiResult<Json<Vec<api::PendingApproval>>> {
    let rows = db::approvals::pending_of_user(state.db(), &me.user_id, now()).await?;
    Ok(Json(
        rows.into_iter()
            .map(
                |(session_id, wallet_id, device_id, summary, digest, expires)| {
                    api::PendingApproval {
                        session_id: session_id.into(),
                        wallet_id: wallet_id.into(),
                        device_id: device_id.into(),
                        summary,
                        digest,
                        expires_at: rfc3339(expires),
                    }
                },
            )
            .collect(),
    ))
}

/// `POST /approvals/{session_id}`: another active device of the user approves or refuses.
#[utoipa::path(post, path = "/approvals/{session_id}", tag = "approvals", security(("bearer" = [])), params(("session_id" = String, Path, description = "The signing session waiting for approval")), request_body = api::ApproveSign, responses((status = 200, description = "Decided", body = api::SignStatus), crate::openapi::AuthErrors, crate::openapi::NotFound, crate::openapi::Conflict, crate::openapi::Gone, crate::openapi::Errors))]
pub async fn decide(
    State(state): State<AppState>,
    me: AuthDevice,
    ApiPath(session_id): ApiPath<String>,
    ApiJson(req): ApiJson<api::ApproveSign>,
) -> ApiResult<Json<api::SignStatus>> {
    let row = db::approvals::of_user(state.db(), &session_id, &me.user_id).await?;
    let (wallet_id, requester, digest, approval, expires) =
        row.ok_or_else(|| ApiError::NotFound("no such signing request".into()))?;
    if approval != Approval::Pending {
        return Err(ApiError::Conflict(format!("the request is {approval}")));
    }
    if expires <= now() {
        return Err(ApiError::Gone(
            "the request expired before it was approved".into(),
        ));
    }
    if requester == me.device_id {
        return Err(ApiError::Forbidden(
            "a device cannot approve its own request: use another active device".into(),
        ));
    }
    crate::registry::verify_device_signature(
        &state,
        &me.device_id,
        &api::sign_approval_message(&session_id, &digest, req.approve),
        &req.signature,
    )
    .await?;
    let decision = if req.approve {
        Approval::Approved
    } else {
        Approval::Refused
    };
    let mut tx = state.begin_write().await?;
    if !db::approvals::decide(&mut *tx, &session_id, decision, &me.device_id, now()).await? {
        return Err(ApiError::Conflict(
            "the request was decided meanwhile".into(),
        ));
    }
    audit::append_in(
        &mut tx,
        if req.approve { "sign.approved" } else { "sign.refused" },
        audit::Subject::device(&me).wallet(&wallet_id),
        json!({ "session_id": session_id, "requested_by": requester, "digest": digest, "signature": req.signature }),
    )
    .await?;
    tx.commit().await?;
    Ok(Json(api::SignStatus { approval: decision }))
}

/// Where the approval of a signing session stands: `none`, `pending`, `approved`, `refused`,
/// `expired`.
///
/// # Errors
/// A database error.
pub async fn approval_of(state: &AppState, session_id: &str) -> ApiResult<Approval> {
    let row = db::approvals::approval(state.db(), session_id).await?;
    let (stored, expires) = row.map_or((None, None), |(a, exp)| (Some(a), exp));
    Ok(Approval::at(stored, expires, now()))
}

/// `GET /sign/{session_id}`: the requesting device follows its request.
#[utoipa::path(get, path = "/sign/{session_id}", tag = "approvals", security(("bearer" = [])), params(("session_id" = String, Path, description = "The device's signing session")), responses((status = 200, description = "Where the request stands", body = api::SignStatus), crate::openapi::AuthErrors, crate::openapi::NotFound, crate::openapi::Errors))]
pub async fn status(
    State(state): State<AppState>,
    me: AuthDevice,
    ApiPath(session_id): ApiPath<String>,
) -> ApiResult<Json<api::SignStatus>> {
    match db::sessions::device_of(state.db(), &session_id).await? {
        Some(d) if d == me.device_id => {}
        _ => return Err(ApiError::NotFound("unknown session".into())),
    }
    Ok(Json(api::SignStatus {
        approval: approval_of(&state, &session_id).await?,
    }))
}

/// Policies and signing approvals: `GET|PUT /policy`, `GET /approvals`,
/// `POST /approvals/{session_id}`, `GET /sign/{session_id}`.
pub(crate) fn router() -> axum::Router<AppState> {
    use axum::routing::{get as answer_get, post};
    axum::Router::new()
        .route("/policy", answer_get(get).put(set))
        .route("/approvals", answer_get(pending))
        .route("/approvals/{session_id}", post(decide))
        .route("/sign/{session_id}", answer_get(status))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use tessera_api::intent::{EthTransaction, SignKind, decode};

    use super::*;

    fn tx(value: &str, gas_limit: u64, max_fee_per_gas: &str) -> Decoded {
        decode(&SignKind::EthTx {
            tx: EthTransaction {
                chain_id: 1,
                nonce: 0,
                max_fee_per_gas: max_fee_per_gas.into(),
                max_priority_fee_per_gas: "0".into(),
                gas_limit,
                to: Some("0x1111111111111111111111111111111111111111".into()),
                value: value.into(),
                data: "0x".into(),
            },
        })
        .unwrap()
    }

    fn limits(per_tx: Option<&str>, per_24h: Option<&str>, fee: Option<&str>) -> Policy {
        Policy {
            max_value_per_tx: per_tx.map(str::to_string),
            max_value_per_24h: per_24h.map(str::to_string),
            max_fee_per_tx: fee.map(str::to_string),
            ..Policy::default()
        }
    }

    const NOON: i64 = 12 * 3600;

    #[test]
    fn fees_count_against_the_value_limits() {
        let none = History::default();
        // The transaction: value 0, 30,000,000 gas at 10^15 wei per gas (3·10^22 wei).
        let burner = tx("0", 30_000_000, "1000000000000000");
        assert_eq!(
            burner.max_fee,
            Some(U256::from(30_000_000u64) * U256::from(10u64).pow(U256::from(15u64)))
        );
        let denial = evaluate(
            &limits(Some("1000"), None, None),
            RequestKind::EthTx,
            &burner,
            &none,
            NOON,
        )
        .unwrap_err();
        assert_eq!(denial.rule, "max_value_per_tx");
        assert!(
            denial
                .message
                .contains("30000000000000000000000 wei of fees"),
            "{}",
            denial.message
        );
        let denial = evaluate(
            &limits(None, Some("1000"), None),
            RequestKind::EthTx,
            &burner,
            &none,
            NOON,
        )
        .unwrap_err();
        assert_eq!(denial.rule, "max_value_per_24h");

        // Value and fee add up: 600 + 2 × 200 = 1000 is allowed, one more wei is not.
        let p = limits(Some("1000"), None, None);
        assert_eq!(
            evaluate(&p, RequestKind::EthTx, &tx("600", 2, "200"), &none, NOON),
            Ok(())
        );
        assert_eq!(
            evaluate(&p, RequestKind::EthTx, &tx("601", 2, "200"), &none, NOON)
                .unwrap_err()
                .rule,
            "max_value_per_tx"
        );

        // The 24-hour budget counts what was already allowed (values and fees) plus this cost.
        let p = limits(None, Some("1000"), None);
        let spent = History {
            last_hour: 1,
            cost_24h: U256::from(500u64),
        };
        assert_eq!(
            evaluate(&p, RequestKind::EthTx, &tx("300", 2, "100"), &spent, NOON),
            Ok(())
        );
        assert_eq!(
            evaluate(&p, RequestKind::EthTx, &tx("300", 2, "101"), &spent, NOON)
                .unwrap_err()
                .rule,
            "max_value_per_24h"
        );
    }

    #[test]
    fn max_fee_per_tx_limits_the_fee_alone() {
        let none = History::default();
        let p = limits(None, None, Some("21000000000000"));
        // 21,000 gas at 1 gwei: exactly the limit.
        assert_eq!(
            evaluate(
                &p,
                RequestKind::EthTx,
                &tx("5", 21_000, "1000000000"),
                &none,
                NOON
            ),
            Ok(())
        );
        let denial = evaluate(
            &p,
            RequestKind::EthTx,
            &tx("0", 21_000, "1000000001"),
            &none,
            NOON,
        )
        .unwrap_err();
        assert_eq!(denial.rule, "max_fee_per_tx");
        // Messages have no fee and no value: the value rules do not apply to them.
        let message = decode(&SignKind::EthMessage {
            message: "hi".into(),
        })
        .unwrap();
        assert_eq!(
            evaluate(
                &limits(Some("0"), Some("0"), Some("0")),
                RequestKind::EthMessage,
                &message,
                &none,
                NOON
            ),
            Ok(())
        );
    }

    #[test]
    fn a_bad_fee_limit_is_refused() {
        let bad = limits(None, None, Some("1e18"));
        assert!(
            matches!(check(&bad), Err(ApiError::BadRequest(m)) if m.contains("max_fee_per_tx"))
        );
        assert!(check(&limits(None, None, Some("1000"))).is_ok());
    }
}
