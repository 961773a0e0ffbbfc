//! Signing policies: per wallet, set by a device of the owner with a signed request, versioned,
//! and evaluated on every `POST /sign` before any cryptography. A denial is a 403 naming the rule
//! and an audit record. A policy that requires approval holds the request until another active
//! device of the user approves it (signed) within the timeout.

use axum::Json;
use axum::extract::{FromRequest, Request, State};
use axum::http::StatusCode;
use serde::Deserialize;
use serde_json::json;
use tessera_api::calls::{TokenAction, TokenOperation};
use tessera_api::intent::{Decoded, U256};
use tessera_api::{self as api, Policy, TokenRule};

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

/// `GET /policy?wallet=…`: the policy in force, with a warning when one device alone can
/// change it (it names no admin quorum, or one a single label satisfies).
#[utoipa::path(get, path = "/policy", tag = "policy", security(("bearer" = [])), params(("wallet" = String, Query, description = "The wallet's name or id")), responses((status = 200, description = "The wallet's policy", body = api::proposals::PolicyView), crate::openapi::AuthErrors, crate::openapi::NotFound, crate::openapi::Errors))]
pub async fn get(
    State(state): State<AppState>,
    me: AuthDevice,
    ApiQuery(q): ApiQuery<WalletQuery>,
) -> ApiResult<Json<api::proposals::PolicyView>> {
    let wallet = db::wallets::owned(state.db(), &me.user_id, &q.wallet).await?;
    let (version, policy, set_by, set_at) = current(&state, &wallet.id).await?;
    let warning = crate::policy_proposals::warning(&policy);
    Ok(Json(api::proposals::PolicyView {
        info: api::PolicyInfo {
            wallet_id: wallet.id.into(),
            version,
            policy,
            set_by: set_by.map(Into::into),
            set_at: set_at.map(rfc3339),
        },
        warning,
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
    for c in policy.arbitrary_calls.iter().flatten() {
        if tessera_api::intent::parse_address(c).is_err() {
            return bad(format!("arbitrary_calls: {c:?} is not a 0x-hex address"));
        }
    }
    for c in policy.verifying_contracts.iter().flatten() {
        if tessera_api::intent::parse_address(c).is_err() {
            return bad(format!(
                "verifying_contracts: {c:?} is not a 0x-hex address"
            ));
        }
    }
    let mut listed: Vec<String> = Vec::new();
    for t in policy.tokens.iter().flatten() {
        let Ok(address) = tessera_api::intent::parse_address(&t.address) else {
            return bad(format!("tokens: {:?} is not a 0x-hex address", t.address));
        };
        if listed.contains(&address) {
            return bad(format!("tokens: {address} is listed twice"));
        }
        listed.push(address.clone());
        // What approvers read: plain letters and digits, so that a symbol cannot pass for
        // another token's or carry direction overrides.
        if let Some(symbol) = &t.symbol
            && (symbol.is_empty()
                || symbol.len() > 11
                || !symbol.chars().all(|c| c.is_ascii_alphanumeric()))
        {
            return bad(format!(
                "tokens: the symbol of {address} must be 1 to 11 ASCII letters and digits"
            ));
        }
        if let Some(d) = t.decimals
            && (d > 36 || t.standard != tessera_api::calls::TokenStandard::Erc20)
        {
            return bad(format!(
                "tokens: decimals of {address} must be at most 36, and only for an ERC-20 token"
            ));
        }
        for (name, v) in [
            ("max_amount_per_tx", &t.max_amount_per_tx),
            ("max_amount_per_24h", &t.max_amount_per_24h),
        ] {
            if let Some(v) = v
                && (v.is_empty()
                    || !v.bytes().all(|b| b.is_ascii_digit())
                    || U256::from_str_radix(v, 10).is_err())
            {
                return bad(format!(
                    "tokens: {name} of {address} must be a decimal amount in the token's smallest unit"
                ));
            }
        }
        for spender in t.allowed_spenders.iter().flatten() {
            if tessera_api::intent::parse_address(spender).is_err() {
                return bad(format!(
                    "tokens: allowed spender {spender:?} of {address} is not a 0x-hex address"
                ));
            }
        }
    }
    for a in policy.btc_destinations.iter().flatten() {
        if tessera_api::btc::canonical_address(a).is_none() {
            return bad(format!("btc_destinations: {a:?} is not a Bitcoin address"));
        }
    }
    for d in policy.allowed_delegates.iter().flatten() {
        if tessera_api::intent::parse_address(d).is_err() {
            return bad(format!("allowed delegate {d:?} is not a 0x-hex address"));
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
    for (name, rule) in [("approvals", &policy.approvals), ("admins", &policy.admins)] {
        if let Some(rule) = rule
            && let Err(e) = crate::approval_rule::Rule::parse(rule)
        {
            return bad(format!("{name}: {e}"));
        }
    }
    if let Some(secs) = policy.request_expiry_secs
        && !(1..=tessera_api::requests::MAX_REQUEST_EXPIRY_SECS).contains(&secs)
    {
        return bad(format!(
            "request_expiry_secs must be 1 to {}",
            tessera_api::requests::MAX_REQUEST_EXPIRY_SECS
        ));
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

/// `PUT /policy`: a new version, signed by the calling device's identity key. When the policy
/// in force names an admin quorum (`admins`), the version is proposed to it, or this device's
/// signature is added to the pending proposal of the same bytes, and it applies once the
/// signers form an authorised set: see [`crate::policy_proposals`]. Otherwise a change that
/// weakens any rule of a policy that requires approval is held until another active device
/// approves it (or, for a user with one active device, until its time lock ends): see
/// [`crate::held`]; tightening applies at once.
#[utoipa::path(put, path = "/policy", tag = "policy", security(("bearer" = [])), request_body = api::SetPolicy, responses((status = 200, description = "Applied", body = api::proposals::PolicyOutcome), (status = 202, description = "Held for approval, or proposed to the admin quorum", body = api::proposals::PolicyOutcome), crate::openapi::AuthErrors, crate::openapi::NotFound, crate::openapi::Conflict, crate::openapi::Errors))]
pub async fn set(
    State(state): State<AppState>,
    me: AuthDevice,
    SetPolicyBody(req): SetPolicyBody,
) -> ApiResult<(StatusCode, Json<api::proposals::PolicyOutcome>)> {
    let wallet = db::wallets::owned(state.db(), &me.user_id, &req.wallet_id).await?;
    check(&req.policy)?;
    let (version, old, ..) = current(&state, &wallet.id).await?;
    if req.version != version + 1 {
        return Err(ApiError::Conflict(format!(
            "the policy is at version {version}; sign version {} (it changed meanwhile?)",
            version + 1
        )));
    }
    // Early, for a clear answer before anything is proposed or held; `apply_in` checks again
    // when the version is written.
    {
        let mut conn = state.db().acquire().await?;
        for (field, rule) in approver_rules(&req.policy)? {
            rule.check_registry(&mut conn)
                .await
                .map_err(|e| named_field(field, e))?;
        }
    }
    if old.admins.is_some() {
        let (status, outcome) = crate::policy_proposals::propose(&state, &me, &req, &old).await?;
        return Ok((status, Json(outcome)));
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
                return Ok((
                    StatusCode::ACCEPTED,
                    Json(api::proposals::PolicyOutcome::Held(action)),
                ));
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
        return Ok((
            StatusCode::OK,
            Json(api::proposals::PolicyOutcome::Applied(Box::new(info))),
        ));
    }
    let info = apply(&state, &me.user_id, &me.device_id, &req).await?;
    Ok((
        StatusCode::OK,
        Json(api::proposals::PolicyOutcome::Applied(Box::new(info))),
    ))
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
    let info = apply_in(&mut tx, user_id, set_by, req).await?;
    tx.commit().await?;
    Ok(info)
}

/// The policy's approver rules (`admins`, `approvals`), parsed, with their field names.
fn approver_rules(policy: &Policy) -> ApiResult<Vec<(&'static str, crate::approval_rule::Rule)>> {
    let mut rules = Vec::new();
    for (field, rule) in [("admins", &policy.admins), ("approvals", &policy.approvals)] {
        if let Some(rule) = rule {
            let parsed = crate::approval_rule::Rule::parse(rule)
                .map_err(|e| ApiError::BadRequest(format!("{field}: {e}")))?;
            rules.push((field, parsed));
        }
    }
    Ok(rules)
}

/// `e`, a 400 about `field`'s approvers, says which field.
fn named_field(field: &str, e: ApiError) -> ApiError {
    match e {
        ApiError::BadRequest(m) => ApiError::BadRequest(format!("{field}: {m}")),
        e => e,
    }
}

/// Every approver the policy names in `admins` and `approvals` exists (a device registered and
/// not revoked, a user with an active device), read after locking the rows of the users they
/// belong to. A revocation locks its user's row before it reads the policies in force
/// ([`crate::enrolment::refuse_stranding_quorums`]), so it and this write are serialised: a
/// policy cannot come into force naming a device revoked meanwhile, nor a device be revoked
/// past a quorum written meanwhile. (On SQLite the write lock serialises them already.)
///
/// # Errors
/// 400 naming the field and the label; a database error.
async fn check_approvers_in(tx: &mut crate::db::WriteTx, policy: &Policy) -> ApiResult<()> {
    let rules = approver_rules(policy)?;
    let mut users = std::collections::BTreeSet::new();
    for (_, rule) in &rules {
        users.extend(rule.users_named(tx).await?);
    }
    // In one order (the users' ids), as every transaction that locks several users must.
    for user in &users {
        crate::enrolment::lock_user(tx, user).await?;
    }
    for (field, rule) in &rules {
        rule.check_registry(tx)
            .await
            .map_err(|e| named_field(field, e))?;
    }
    Ok(())
}

/// [`apply`] in `tx`, which locked the wallet; the caller commits.
///
/// # Errors
/// [`ApiError::Conflict`] when another version was set meanwhile; a database error.
pub async fn apply_in(
    tx: &mut crate::db::WriteTx,
    user_id: &str,
    set_by: &str,
    req: &api::SetPolicy,
) -> ApiResult<api::PolicyInfo> {
    let (version, ..) = current_in(tx, &req.wallet_id).await?;
    if req.version != version + 1 {
        return Err(ApiError::Conflict(format!(
            "the policy is at version {version} now, not {}: propose the change again",
            req.version - 1
        )));
    }
    check_approvers_in(tx, &req.policy).await?;
    let text = serde_json::to_string(&req.policy).map_err(|e| ApiError::Internal(e.to_string()))?;
    let inserted = db::policies::insert(
        &mut **tx,
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
        tx,
        "policy.changed",
        audit::Subject {
            user: Some(user_id),
            device: Some(set_by),
            wallet: Some(&req.wallet_id),
        },
        json!({ "version": req.version, "policy": req.policy, "signature": req.signature }),
    )
    .await?;
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
    /// What the requests allowed in the last 24 hours transferred or approved, per token
    /// contract (lower-case 0x hex), in its smallest unit.
    pub tokens_24h: std::collections::HashMap<String, U256>,
    /// What the Bitcoin transactions allowed in the last 24 hours spent from the wallet, per
    /// transaction id (each counted once, however many of its inputs were signed), satoshis.
    pub btc_24h: std::collections::HashMap<String, u64>,
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
    let token_limits = policy
        .tokens
        .iter()
        .flatten()
        .any(|t| t.max_amount_per_24h.is_some());
    if policy.max_signatures_per_hour.is_none()
        && policy.max_value_per_24h.is_none()
        && !token_limits
        && policy.max_sat_per_24h.is_none()
    {
        return Ok(h);
    }
    let rows = db::approvals::since(conn, wallet_id, at - 86_400).await?;
    let wei = |v: Option<String>| {
        v.and_then(|v| U256::from_str_radix(&v, 10).ok())
            .unwrap_or(U256::ZERO)
    };
    for (t, value, max_fee, approval, tokens, btc) in rows {
        if approval == Approval::Refused {
            continue;
        }
        if let Some((txid, sat)) = btc.as_deref().and_then(parse_btc_spend) {
            h.btc_24h.insert(txid, sat);
        }
        for (token, amount) in tokens
            .as_deref()
            .map(parse_token_amounts)
            .unwrap_or_default()
        {
            let total = h.tokens_24h.entry(token).or_insert(U256::ZERO);
            *total = total.saturating_add(amount);
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

/// The token actions of a decoded request as the policy reads them: each with the policy's
/// rule for its contract (if listed), ERC-20-looking calls reread as ERC-721 for a contract the
/// policy lists as one ([`tessera_api::calls::TokenAction::as_standard`]).
#[must_use]
pub fn token_actions<'a>(
    policy: &'a Policy,
    decoded: &Decoded,
) -> Vec<(TokenAction, Option<&'a TokenRule>)> {
    decoded
        .tokens
        .iter()
        .map(|action| {
            let rule = policy
                .tokens
                .iter()
                .flatten()
                .find(|t| t.address.eq_ignore_ascii_case(&action.token));
            let action = match rule {
                Some(rule) => action.clone().as_standard(rule.standard),
                None => action.clone(),
            };
            (action, rule)
        })
        .collect()
}

/// The summary approvers see and the audit log records: the decoder's, with each token action
/// told in the token's symbol and decimals when the policy's token list names them.
#[must_use]
pub fn summary(policy: &Policy, decoded: &Decoded) -> String {
    let named: Vec<String> = token_actions(policy, decoded)
        .iter()
        .filter(|(_, rule)| rule.is_some_and(|r| r.symbol.is_some() || r.decimals.is_some()))
        .map(|(action, rule)| {
            let rule = rule.as_ref();
            action.describe(
                rule.and_then(|r| r.symbol.as_deref()),
                rule.and_then(|r| r.decimals),
            )
        })
        .collect();
    if named.is_empty() {
        decoded.summary.clone()
    } else {
        format!("{} [{}]", decoded.summary, named.join("; "))
    }
}

/// What a request lets happen to tokens, as stored for the per-token 24-hour limits: a JSON
/// array of `{token, amount}`, or `None` when it moves none.
#[must_use]
pub fn token_amounts(policy: &Policy, decoded: &Decoded) -> Option<String> {
    let entries: Vec<serde_json::Value> = token_actions(policy, decoded)
        .iter()
        .filter(|(a, _)| a.moves_tokens())
        .map(|(a, _)| json!({ "token": a.token, "amount": a.amount.to_string() }))
        .collect();
    (!entries.is_empty()).then(|| serde_json::Value::Array(entries).to_string())
}

/// What a PSBT input's request stores for the 24-hour satoshi limit: `{txid, sat}`.
#[must_use]
pub fn btc_spend(decoded: &Decoded) -> Option<String> {
    decoded
        .btc
        .as_ref()
        .map(|b| json!({ "txid": b.txid, "sat": b.spent_sat }).to_string())
}

fn parse_btc_spend(text: &str) -> Option<(String, u64)> {
    let v: serde_json::Value = serde_json::from_str(text).ok()?;
    Some((
        v.get("txid")?.as_str()?.to_string(),
        v.get("sat")?.as_u64()?,
    ))
}

/// The Bitcoin rules, for a PSBT input's request: destinations, amounts, fee.
fn evaluate_btc(policy: &Policy, decoded: &Decoded, history: &History) -> Result<(), Denial> {
    let Some(spend) = &decoded.btc else {
        return Ok(());
    };
    if let Some(allowed) = &policy.btc_destinations {
        let allowed: Vec<String> = allowed
            .iter()
            .filter_map(|a| tessera_api::btc::canonical_address(a))
            .collect();
        for (address, sat) in &spend.destinations {
            let ok = match address {
                Some(a) => allowed.contains(a),
                // An OP_RETURN (or another script without an address) may carry data, no money.
                None => *sat == 0,
            };
            if !ok {
                return deny(
                    "btc_destinations",
                    format!(
                        "{sat} sat to {} is not on the Bitcoin destination allow-list",
                        address.as_deref().unwrap_or("a script without an address")
                    ),
                );
            }
        }
    }
    if let Some(max) = policy.max_fee_sat
        && spend.fee_sat > max
    {
        return deny(
            "max_fee_sat",
            format!(
                "the fee of {} sat exceeds the limit of {max} sat per transaction",
                spend.fee_sat
            ),
        );
    }
    if let Some(max) = policy.max_sat_per_tx
        && spend.spent_sat > max
    {
        return deny(
            "max_sat_per_tx",
            format!(
                "the transaction spends {} sat from the wallet (fee included); the limit is {max} sat",
                spend.spent_sat
            ),
        );
    }
    if let Some(max) = policy.max_sat_per_24h {
        let before: u64 = history
            .btc_24h
            .iter()
            .filter(|(txid, _)| **txid != spend.txid)
            .map(|(_, sat)| *sat)
            .fold(0u64, u64::saturating_add);
        if before.saturating_add(spend.spent_sat) > max {
            return deny(
                "max_sat_per_24h",
                format!(
                    "{} sat after {before} sat in the last 24 hours exceeds the limit of {max} sat",
                    spend.spent_sat
                ),
            );
        }
    }
    Ok(())
}

fn parse_token_amounts(text: &str) -> Vec<(String, U256)> {
    let Ok(serde_json::Value::Array(entries)) = serde_json::from_str(text) else {
        return Vec::new();
    };
    entries
        .iter()
        .filter_map(|e| {
            let token = e.get("token")?.as_str()?.to_ascii_lowercase();
            let amount = U256::from_str_radix(e.get("amount")?.as_str()?, 10).ok()?;
            Some((token, amount))
        })
        .collect()
}

fn listed_token(policy: &Policy, address: &str) -> bool {
    policy
        .tokens
        .iter()
        .flatten()
        .any(|t| t.address.eq_ignore_ascii_case(address))
}

fn listed(list: &Option<Vec<String>>, address: &str) -> bool {
    list.iter()
        .flatten()
        .any(|a| a.eq_ignore_ascii_case(address))
}

/// The token rules, for each token action of a request: the token list, unlimited approvals,
/// allowed spenders, destinations of transfers, per-request and 24-hour amounts.
fn evaluate_tokens(policy: &Policy, decoded: &Decoded, history: &History) -> Result<(), Denial> {
    let actions = token_actions(policy, decoded);
    let mut this_request: std::collections::HashMap<&str, U256> = Default::default();
    for (action, rule) in &actions {
        let token = action.token.as_str();
        if policy.tokens.is_some() && rule.is_none() {
            return deny(
                "tokens",
                format!("token contract {token} is not on the policy's token list"),
            );
        }
        let name = rule
            .and_then(|r| r.symbol.clone())
            .unwrap_or_else(|| token.to_string());
        if action.unlimited && !policy.allow_unlimited_approvals {
            return deny(
                "allow_unlimited_approvals",
                format!(
                    "{}: unlimited approvals are refused (allow_unlimited_approvals is off)",
                    action.describe(None, None)
                ),
            );
        }
        if matches!(
            action.operation,
            TokenOperation::Approve | TokenOperation::ApproveAll
        ) && let Some(rule) = rule
            && rule.allowed_spenders.is_some()
            && !listed(&rule.allowed_spenders, &action.to)
        {
            return deny(
                "tokens.allowed_spenders",
                format!(
                    "{} may not be approved to spend {name}: not among its allowed spenders",
                    action.to
                ),
            );
        }
        if action.operation == TokenOperation::Transfer
            && policy.destinations.is_some()
            && !listed(&policy.destinations, &action.to)
        {
            return deny(
                "destinations",
                format!(
                    "{} (the recipient of {name}) is not on the destination allow-list",
                    action.to
                ),
            );
        }
        if !action.moves_tokens() {
            continue;
        }
        let Some(rule) = rule else { continue };
        let limit = |v: &Option<String>| v.as_ref().and_then(|v| U256::from_str_radix(v, 10).ok());
        let sum = this_request.entry(token).or_insert(U256::ZERO);
        *sum = sum.saturating_add(action.amount);
        if let Some(max) = limit(&rule.max_amount_per_tx)
            && *sum > max
        {
            return deny(
                "tokens.max_amount_per_tx",
                format!(
                    "{} of {name} exceeds its limit of {max} per request (smallest units)",
                    *sum
                ),
            );
        }
        if let Some(max) = limit(&rule.max_amount_per_24h) {
            let before = history.tokens_24h.get(token).copied().unwrap_or(U256::ZERO);
            if before.saturating_add(*sum) > max {
                return deny(
                    "tokens.max_amount_per_24h",
                    format!(
                        "{} of {name} after {before} in the last 24 hours exceeds its limit of {max} (smallest units)",
                        *sum
                    ),
                );
            }
        }
    }
    Ok(())
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
    if kind == RequestKind::EthTx
        && let Some(allowed) = &policy.destinations
    {
        // The callee: a listed destination, or a token contract on the policy's token list
        // (whose recipients are checked against the destinations below).
        let ok = decoded.to.as_ref().is_some_and(|to| {
            allowed.iter().any(|a| a.eq_ignore_ascii_case(to))
                || (!decoded.tokens.is_empty() && listed_token(policy, to))
        });
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
    if kind == RequestKind::EthTypedData
        && let Some(allowed) = &policy.verifying_contracts
    {
        let ok = decoded
            .to
            .as_ref()
            .is_some_and(|c| listed(&Some(allowed.clone()), c));
        if !ok {
            return deny(
                "verifying_contracts",
                match &decoded.to {
                    Some(c) => format!("typed data for contract {c} is not allowed"),
                    None => "typed data without a verifying contract is not allowed".into(),
                },
            );
        }
    }
    if decoded.unknown_call
        && let Some(to) = &decoded.to
        && !listed(&policy.arbitrary_calls, to)
    {
        return deny(
            "arbitrary_calls",
            format!(
                "call data to {to} is not a token transfer or approval this server can read; the policy's arbitrary_calls must name {to} to allow it"
            ),
        );
    }
    evaluate_tokens(policy, decoded, history)?;
    evaluate_btc(policy, decoded, history)?;
    // EIP-7702: a delegation hands the account to the delegate's code (it can then move every
    // asset of the account): only to contracts the policy names.
    for delegate in &decoded.delegations {
        let allowed = policy
            .allowed_delegates
            .iter()
            .flatten()
            .any(|a| a.eq_ignore_ascii_case(delegate));
        if !allowed {
            return deny(
                "allowed_delegates",
                format!(
                    "delegating this account to {delegate} (EIP-7702) is not allowed: the policy's allowed_delegates must name it"
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
        let tx: EthTransaction = serde_json::from_value(json!({
            "chain_id": 1, "nonce": 0, "max_fee_per_gas": max_fee_per_gas,
            "max_priority_fee_per_gas": "0", "gas_limit": gas_limit,
            "to": "0x1111111111111111111111111111111111111111", "value": value, "data": "0x",
        }))
        .unwrap();
        decode(&SignKind::EthTx { tx }).unwrap()
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
        // The issue's transaction: value 0, 30,000,000 gas at 10^15 wei per gas (3·10^22 wei).
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
            ..History::default()
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

    // Token rules (issue 17).

    use tessera_api::calls::{CallEffect, TokenStandard, decode_call};

    const USDC: &str = "0xa0b86991c6218b36c1d19d4a2e9eb0ce3606eb48";
    const BOB: &str = "0x00000000000000000000000000000000000000b0";
    const EVE: &str = "0x00000000000000000000000000000000000000e0";

    /// A transaction to `contract` with call data `input`, decoded as the server decodes it.
    fn call(contract: &str, input: Vec<u8>) -> Decoded {
        let mut d = tx("0", 60_000, "1");
        d.to = Some(contract.to_string());
        match decode_call(contract, &input) {
            CallEffect::Token(actions) => d.tokens = actions,
            CallEffect::Unknown => d.unknown_call = true,
            CallEffect::None => {}
        }
        d
    }

    fn erc20(selector_call: impl tessera_api::calls::SolCall) -> Vec<u8> {
        selector_call.abi_encode()
    }

    fn transfer(amount: u128) -> Decoded {
        call(
            USDC,
            erc20(tessera_api::calls::Erc20::transferCall {
                to: BOB.parse().unwrap(),
                amount: U256::from(amount),
            }),
        )
    }

    fn approve(spender: &str, amount: U256) -> Decoded {
        call(
            USDC,
            erc20(tessera_api::calls::Erc20::approveCall {
                spender: spender.parse().unwrap(),
                amount,
            }),
        )
    }

    fn usdc(per_tx: Option<&str>, per_24h: Option<&str>) -> TokenRule {
        TokenRule {
            address: USDC.into(),
            standard: TokenStandard::Erc20,
            symbol: Some("USDC".into()),
            decimals: Some(6),
            max_amount_per_tx: per_tx.map(str::to_string),
            max_amount_per_24h: per_24h.map(str::to_string),
            allowed_spenders: None,
        }
    }

    fn rule_of(policy: &Policy, d: &Decoded, history: &History) -> Result<(), &'static str> {
        evaluate(policy, RequestKind::EthTx, d, history, NOON).map_err(|e| e.rule)
    }

    #[test]
    fn the_issues_token_transfer_is_bounded_by_the_token_rules() {
        // The issue: an ERC-20 transfer of 10^30 units was signed under max_value_per_tx "0",
        // because the value limits see only the ether value (here 0 + fees).
        let huge = 10u128.pow(30);
        let none = History::default();
        let mut p = limits(Some("60000"), None, None);
        assert_eq!(rule_of(&p, &transfer(huge), &none), Ok(()));
        p.tokens = Some(vec![usdc(Some("1000000000"), None)]);
        assert_eq!(
            rule_of(&p, &transfer(huge), &none),
            Err("tokens.max_amount_per_tx")
        );
        assert_eq!(rule_of(&p, &transfer(1_000_000_000), &none), Ok(()));
        assert_eq!(
            rule_of(&p, &transfer(1_000_000_001), &none),
            Err("tokens.max_amount_per_tx")
        );
        // The summary tells the amount in the token's decimals.
        let shown = summary(&p, &transfer(1_500_000));
        assert!(
            shown.contains(&format!(
                "transfer 1.5 USDC (1500000 units of {USDC}) to {BOB}"
            )),
            "{shown}"
        );
        assert_eq!(
            token_amounts(&p, &transfer(1_500_000)).as_deref(),
            Some(format!(r#"[{{"amount":"1500000","token":"{USDC}"}}]"#).as_str())
        );
    }

    #[test]
    fn an_unlisted_token_an_unknown_call_and_unlimited_approvals_are_refused() {
        let none = History::default();
        let mut p = Policy::default();
        // Unknown call data: refused unless the policy allows arbitrary calls to the contract.
        let unknown = call(USDC, vec![0xde, 0xad, 0xbe, 0xef]);
        assert_eq!(rule_of(&p, &unknown, &none), Err("arbitrary_calls"));
        p.arbitrary_calls = Some(vec![USDC.to_uppercase().replace("0X", "0x")]);
        assert_eq!(rule_of(&p, &unknown, &none), Ok(()));
        // Unlimited approvals are refused by default, allowed when the policy says so.
        assert_eq!(
            rule_of(&p, &approve(BOB, U256::MAX), &none),
            Err("allow_unlimited_approvals")
        );
        assert_eq!(
            rule_of(&p, &approve(BOB, U256::from(1u8) << 255), &none),
            Err("allow_unlimited_approvals")
        );
        assert_eq!(
            rule_of(
                &p,
                &approve(BOB, (U256::from(1u8) << 255) - U256::from(1u8)),
                &none
            ),
            Ok(())
        );
        p.allow_unlimited_approvals = true;
        assert_eq!(rule_of(&p, &approve(BOB, U256::MAX), &none), Ok(()));
        // A token list: other token contracts are refused.
        p.tokens = Some(vec![TokenRule {
            address: "0x1111111111111111111111111111111111111111".into(),
            ..usdc(None, None)
        }]);
        assert_eq!(rule_of(&p, &transfer(1), &none), Err("tokens"));
    }

    #[test]
    fn approvals_name_allowed_spenders_only_and_transfers_listed_destinations() {
        let none = History::default();
        let mut p = Policy {
            tokens: Some(vec![TokenRule {
                allowed_spenders: Some(vec![BOB.into()]),
                ..usdc(None, None)
            }]),
            ..Policy::default()
        };
        assert_eq!(rule_of(&p, &approve(BOB, U256::from(5u8)), &none), Ok(()));
        assert_eq!(
            rule_of(&p, &approve(EVE, U256::from(5u8)), &none),
            Err("tokens.allowed_spenders")
        );
        // Revoking an allowance is always allowed.
        assert_eq!(rule_of(&p, &approve(EVE, U256::ZERO), &none), Ok(()));
        // Destinations: the callee may be a listed token contract, the recipient must be listed.
        p.destinations = Some(vec![EVE.into()]);
        assert_eq!(rule_of(&p, &transfer(1), &none), Err("destinations"));
        p.destinations = Some(vec![BOB.into()]);
        assert_eq!(rule_of(&p, &transfer(1), &none), Ok(()));
        // Without the token list, the token contract itself must be a listed destination.
        p.tokens = None;
        assert_eq!(rule_of(&p, &transfer(1), &none), Err("destinations"));
        p.destinations = Some(vec![BOB.into(), USDC.into()]);
        assert_eq!(rule_of(&p, &transfer(1), &none), Ok(()));
    }

    #[test]
    fn the_daily_token_limit_counts_earlier_requests_and_approvals() {
        let p = Policy {
            tokens: Some(vec![usdc(None, Some("1000"))]),
            ..Policy::default()
        };
        let mut history = History::default();
        history.tokens_24h.insert(USDC.into(), U256::from(600u64));
        assert_eq!(rule_of(&p, &transfer(400), &history), Ok(()));
        assert_eq!(
            rule_of(&p, &transfer(401), &history),
            Err("tokens.max_amount_per_24h")
        );
        assert_eq!(
            rule_of(&p, &approve(BOB, U256::from(401u64)), &history),
            Err("tokens.max_amount_per_24h")
        );
        // What a request stores is what the history reads back.
        let stored = token_amounts(&p, &transfer(400)).unwrap();
        assert_eq!(
            parse_token_amounts(&stored),
            vec![(USDC.to_string(), U256::from(400u64))]
        );
    }

    #[test]
    fn a_contract_listed_as_erc721_reads_approve_as_one_item() {
        let none = History::default();
        let p = Policy {
            tokens: Some(vec![TokenRule {
                standard: TokenStandard::Erc721,
                symbol: Some("PUNK".into()),
                decimals: None,
                max_amount_per_tx: Some("1".into()),
                ..usdc(None, None)
            }]),
            ..Policy::default()
        };
        // approve(BOB, item 2^256-1): one item, not an unlimited ERC-20 allowance.
        assert_eq!(rule_of(&p, &approve(BOB, U256::MAX), &none), Ok(()));
        assert!(summary(&p, &approve(BOB, U256::MAX)).contains("item #"));
    }

    #[test]
    fn token_rules_are_checked_when_set() {
        let mut p = Policy {
            tokens: Some(vec![TokenRule {
                symbol: Some("USDC\u{202e}".into()),
                ..usdc(None, None)
            }]),
            ..Policy::default()
        };
        assert!(matches!(check(&p), Err(ApiError::BadRequest(m)) if m.contains("symbol")));
        p.tokens = Some(vec![usdc(Some("1e6"), None)]);
        assert!(
            matches!(check(&p), Err(ApiError::BadRequest(m)) if m.contains("max_amount_per_tx"))
        );
        p.tokens = Some(vec![usdc(None, None), usdc(None, None)]);
        assert!(matches!(check(&p), Err(ApiError::BadRequest(m)) if m.contains("twice")));
        p.tokens = Some(vec![usdc(Some("+5"), None)]);
        assert!(check(&p).is_err());
        p.tokens = Some(vec![usdc(Some("5"), Some("10"))]);
        assert!(check(&p).is_ok());
    }

    fn psbt_input(txid: &str, spent: u64, fee: u64, outputs: Vec<(Option<&str>, u64)>) -> Decoded {
        let mut d = decode(&SignKind::EthMessage {
            message: "stand-in".into(),
        })
        .unwrap();
        d.btc = Some(tessera_api::btc::BtcSpend {
            txid: txid.into(),
            spent_sat: spent,
            fee_sat: fee,
            destinations: outputs
                .into_iter()
                .map(|(a, sat)| (a.map(str::to_string), sat))
                .collect(),
            summary: String::new(),
        });
        d
    }

    #[test]
    fn bitcoin_rules_count_each_transaction_once() {
        const PAYEE: &str = "bcrt1qw508d6qejxtdg4y5r3zarvary0c5xw7kygt080";
        let p = Policy {
            allowed_kinds: vec![RequestKind::BtcPsbt],
            btc_destinations: Some(vec![PAYEE.to_uppercase()]),
            max_sat_per_tx: Some(1_000),
            max_sat_per_24h: Some(1_500),
            max_fee_sat: Some(100),
            ..Policy::default()
        };
        assert!(check(&p).is_ok());
        let rule = |d: &Decoded, h: &History| {
            evaluate(&p, RequestKind::BtcPsbt, d, h, NOON).map_err(|e| e.rule)
        };
        let mut h = History::default();
        // An address in upper case (bech32 allows it) is the same address; an OP_RETURN may
        // carry no money; any other script is refused.
        assert_eq!(
            rule(
                &psbt_input("a", 900, 100, vec![(Some(PAYEE), 800), (None, 0)]),
                &h
            ),
            Ok(())
        );
        assert_eq!(
            rule(&psbt_input("a", 900, 100, vec![(None, 1)]), &h),
            Err("btc_destinations")
        );
        assert_eq!(
            rule(&psbt_input("a", 900, 101, vec![(Some(PAYEE), 799)]), &h),
            Err("max_fee_sat")
        );
        assert_eq!(
            rule(&psbt_input("a", 1_001, 1, vec![(Some(PAYEE), 1_000)]), &h),
            Err("max_sat_per_tx")
        );
        // Transaction "a" spent 900: its other inputs count it once, another one counts apart.
        h.btc_24h.insert("a".into(), 900);
        assert_eq!(
            rule(&psbt_input("a", 900, 100, vec![(Some(PAYEE), 800)]), &h),
            Ok(())
        );
        assert_eq!(
            rule(&psbt_input("b", 600, 1, vec![(Some(PAYEE), 599)]), &h),
            Ok(())
        );
        assert_eq!(
            rule(&psbt_input("b", 601, 1, vec![(Some(PAYEE), 600)]), &h),
            Err("max_sat_per_24h")
        );
        let bad = Policy {
            btc_destinations: Some(vec!["0x1111111111111111111111111111111111111111".into()]),
            ..Policy::default()
        };
        assert!(
            matches!(check(&bad), Err(ApiError::BadRequest(m)) if m.contains("btc_destinations"))
        );
    }
}
