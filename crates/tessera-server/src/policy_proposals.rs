//! Policy changes signed by the policy's admin quorum (issue 16, item 5).
//!
//! When the policy in force (version `v`) names `admins`, `PUT /policy` for version `v + 1`
//! does not apply: the calling device, which must speak for a label of the quorum, proposes the
//! version ([`propose`]), or signs the pending proposal of the same bytes. The other admins sign
//! it with `POST /policy/proposals/{id}/sign`, each over the same [`api::policy_message`]. When
//! the labels of the signers (devices still active) form an authorised set of the quorum
//! ([`Rule::standing`]), the version applies in the same transaction, and every other pending
//! proposal for it is superseded. Until then the old version applies, to signing and to policy
//! changes alike. Each step is audited in its transaction: `policy.proposed`,
//! `policy.proposal_signed` (device, labels, signature), `policy.applied` (every signer).
//!
//! The wallet is locked ([`crate::db::WriteTx::lock_wallet`]) before the version is read, so
//! concurrent signatures and proposals for one wallet apply exactly one version.

use std::collections::BTreeSet;

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use serde_json::json;
use sha2::{Digest, Sha256};
use tessera_api::proposals::{
    PolicyOutcome, ProposalInfo, ProposalQuery, ProposalSigner, ProposalState, SignProposal,
};
use tessera_api::{self as api, EventKind, Policy};

use crate::approval_rule::{Rule, Standing};
use crate::audit;
use crate::auth::AuthDevice;
use crate::db::{self, WriteTx};
use crate::error::{ApiError, ApiResult};
use crate::extract::{ApiJson, ApiPath, ApiQuery};
use crate::state::{AppState, now, rfc3339};

/// The routes of this area.
pub(crate) fn router() -> axum::Router<AppState> {
    use axum::routing::{get, post};
    axum::Router::new()
        .route("/policy/proposals", get(list))
        .route("/policy/proposals/{id}", get(show))
        .route("/policy/proposals/{id}/sign", post(sign))
}

/// Most proposals one listing returns.
const LIST_LIMIT: i64 = 500;

/// The admin quorum a policy names, checked again (it was checked when it was set).
///
/// # Errors
/// [`ApiError::Internal`] for a stored rule that no longer parses.
pub fn admin_rule(policy: &Policy) -> ApiResult<Option<Rule>> {
    policy
        .admins
        .as_ref()
        .map(|r| Rule::parse(r).map_err(|e| ApiError::Internal(format!("stored admins: {e}"))))
        .transpose()
}

/// The warning `GET /policy` gives, if any: no admin quorum, or one that a single label
/// satisfies.
#[must_use]
pub fn warning(policy: &Policy) -> Option<String> {
    match admin_rule(policy) {
        Ok(None) => Some(api::proposals::NO_ADMIN_QUORUM_WARNING.to_string()),
        Ok(Some(rule)) => {
            // A user's label is spoken for by any one of the user's devices.
            let lone = policy
                .admins
                .iter()
                .flat_map(|a| a.approvers.keys())
                .any(|label| {
                    rule.standing(&BTreeSet::from([label.clone()]), &BTreeSet::new())
                        == Standing::Authorised
                });
            lone.then(|| {
                format!(
                    "one device alone can change this policy: a single label of its admin quorum {} is an authorised set",
                    rule.structure_text()
                )
            })
        }
        Err(_) => None,
    }
}

/// A policy's JSON as signed, and its SHA-256 (hex).
fn text_and_hash(policy: &Policy) -> ApiResult<(String, String)> {
    let text = serde_json::to_string(policy).map_err(|e| ApiError::Internal(e.to_string()))?;
    let hash = hex::encode(Sha256::digest(text.as_bytes()));
    Ok((text, hash))
}

fn forbidden(me: &AuthDevice, rule: &Rule, wallet_id: &str, version: u64) -> ApiError {
    ApiError::Forbidden(format!(
        "device {} speaks for no label of the admin quorum {} of wallet {wallet_id}'s policy version {version}: only its admins propose and sign a new version",
        me.device_id,
        rule.structure_text()
    ))
}

/// Verifies an admin's identity signature over the proposal's bytes: one over other bytes (another
/// version, another policy, another wallet) is bad input, 400.
async fn verify(
    state: &AppState,
    me: &AuthDevice,
    wallet_id: &str,
    version: u64,
    text: &str,
    hash: &str,
    signature: &str,
) -> ApiResult<()> {
    let message = api::policy_message(wallet_id, version, text);
    match crate::registry::verify_device_signature(state, &me.device_id, &message, signature).await
    {
        Ok(()) => Ok(()),
        Err(ApiError::Unauthorized(_)) => Err(ApiError::BadRequest(format!(
            "signature: does not verify over policy version {version} of wallet {wallet_id} (policy sha256 {hash}): sign exactly that version and policy"
        ))),
        Err(e) => Err(e),
    }
}

/// `PUT /policy` when the policy in force (`old`, version `req.version - 1`, checked by the
/// caller) names an admin quorum: proposes `req`, or signs the pending proposal of the same
/// bytes; applies it when the signers form an authorised set.
///
/// # Errors
/// 403 when the caller is no admin, 400 for a signature over other bytes, 409 when the policy
/// changed meanwhile; a database error.
pub async fn propose(
    state: &AppState,
    me: &AuthDevice,
    req: &api::SetPolicy,
    old: &Policy,
) -> ApiResult<(StatusCode, PolicyOutcome)> {
    let Some(rule) = admin_rule(old)? else {
        return Err(ApiError::Internal(
            "a proposal for a policy without admins".into(),
        ));
    };
    let base = req.version.saturating_sub(1);
    if rule.labels_of(&me.device_id, &me.user_id).is_empty() {
        return Err(forbidden(me, &rule, &req.wallet_id, base));
    }
    let (text, hash) = text_and_hash(&req.policy)?;
    verify(
        state,
        me,
        &req.wallet_id,
        req.version,
        &text,
        &hash,
        &req.signature,
    )
    .await?;
    let (info, applied) = sign_in(
        state,
        me,
        Target::New {
            wallet_id: &req.wallet_id,
            version: req.version,
            policy: &req.policy,
            text: &text,
            hash: &hash,
        },
        &req.signature,
    )
    .await?;
    Ok(match applied {
        Some(policy) => (StatusCode::OK, PolicyOutcome::Applied(Box::new(policy))),
        None => (
            StatusCode::ACCEPTED,
            PolicyOutcome::Proposed(Box::new(info)),
        ),
    })
}

/// What a signature is for.
enum Target<'a> {
    /// A version proposed with `PUT /policy` (a new proposal, or the pending one of its bytes).
    New {
        wallet_id: &'a str,
        version: u64,
        policy: &'a Policy,
        text: &'a str,
        hash: &'a str,
    },
    /// An existing proposal.
    Existing(&'a db::policy_proposals::Row),
}

/// Records `me`'s signature in one write transaction, and applies the version if the signers
/// now form an authorised set: the proposal, and the policy now in force if it applied.
async fn sign_in(
    state: &AppState,
    me: &AuthDevice,
    target: Target<'_>,
    signature: &str,
) -> ApiResult<(ProposalInfo, Option<api::PolicyInfo>)> {
    let (wallet_id, version) = match &target {
        Target::New {
            wallet_id, version, ..
        } => (*wallet_id, *version),
        Target::Existing(row) => (row.wallet_id.as_str(), row.version.max(0) as u64),
    };
    let at = now();
    let mut tx = state.begin_write().await?;
    tx.lock_wallet(wallet_id).await?;
    let (current, policy, ..) = crate::policy::current_in(&mut tx, wallet_id).await?;
    if version != current + 1 {
        return Err(ApiError::Conflict(format!(
            "the policy of wallet {wallet_id} is at version {current}; this signature is for version {version}: propose the change again for version {}",
            current + 1
        )));
    }
    let Some(rule) = admin_rule(&policy)? else {
        return Err(ApiError::Conflict(format!(
            "the policy of wallet {wallet_id} at version {current} names no admin quorum: set the new version with PUT /policy"
        )));
    };
    let labels = rule.labels_of(&me.device_id, &me.user_id);
    if labels.is_empty() {
        return Err(forbidden(me, &rule, wallet_id, current));
    }
    let row = match target {
        Target::Existing(row) => db::policy_proposals::get(&mut *tx, &row.id)
            .await?
            .ok_or_else(|| ApiError::NotFound(format!("no policy proposal {}", row.id)))?,
        Target::New {
            policy: proposed,
            text,
            hash,
            ..
        } => match db::policy_proposals::find(&mut *tx, wallet_id, version as i64, hash).await? {
            Some(row) => row,
            None => {
                new_proposal(
                    &mut tx, me, wallet_id, version, &policy, proposed, text, hash, &rule, at,
                )
                .await?
            }
        },
    };
    if row.state != ProposalState::Pending.as_str() {
        return Err(ApiError::Conflict(format!(
            "policy proposal {} is {}: nothing to sign",
            row.id, row.state
        )));
    }
    let labels_json =
        serde_json::to_string(&labels).map_err(|e| ApiError::Internal(e.to_string()))?;
    let added = db::policy_proposals::add_signature(
        &mut tx,
        &row.id,
        &me.device_id,
        &labels_json,
        signature,
        at,
    )
    .await?;
    if added {
        audit::append_in(
            &mut tx,
            "policy.proposal_signed",
            audit::Subject {
                user: Some(&me.user_id),
                device: Some(&me.device_id),
                wallet: Some(wallet_id),
            },
            json!({
                "proposal": row.id, "version": version, "policy_sha256": row.policy_sha256,
                "device": me.device_id, "labels": labels, "signature": signature,
            }),
        )
        .await?;
    }
    let signatures = db::policy_proposals::signatures(&mut *tx, &row.id).await?;
    let approved: BTreeSet<String> = signatures
        .iter()
        .filter(|s| s.4)
        .flat_map(|s| serde_json::from_str::<Vec<String>>(&s.1).unwrap_or_default())
        .collect();
    let mut applied = None;
    let mut state_now = ProposalState::Pending;
    if rule.standing(&approved, &BTreeSet::new()) == Standing::Authorised {
        let proposed: Policy = serde_json::from_str(&row.policy)
            .map_err(|e| ApiError::Internal(format!("stored proposal: {e}")))?;
        let info = crate::policy::apply_in(
            &mut tx,
            &me.user_id,
            &me.device_id,
            &api::SetPolicy {
                wallet_id: wallet_id.into(),
                version,
                policy: proposed,
                signature: signature.to_string(),
            },
        )
        .await?;
        db::policy_proposals::set_state(&mut *tx, &row.id, ProposalState::Applied.as_str(), at)
            .await?;
        let superseded =
            db::policy_proposals::supersede(&mut tx, wallet_id, version as i64, at).await?;
        let signers: Vec<serde_json::Value> = signatures
            .iter()
            .filter(|s| s.4)
            .map(|(device, labels, signature, ..)| {
                json!({
                    "device": device,
                    "labels": serde_json::from_str::<serde_json::Value>(labels).unwrap_or_default(),
                    "signature": signature,
                })
            })
            .collect();
        audit::append_in(
            &mut tx,
            "policy.applied",
            audit::Subject {
                user: Some(&me.user_id),
                device: Some(&me.device_id),
                wallet: Some(wallet_id),
            },
            json!({
                "proposal": row.id, "version": version, "policy_sha256": row.policy_sha256,
                "admins": rule.structure_text(), "signers": signers, "superseded": superseded,
            }),
        )
        .await?;
        applied = Some(info);
        state_now = ProposalState::Applied;
    }
    let info = to_info(&row, state_now, &signatures)?;
    tx.commit().await?;
    crate::events::wake();
    Ok((info, applied))
}

/// Inserts a pending proposal of `proposed` (checked by the caller) and audits it; tells the
/// other admin devices.
#[allow(clippy::too_many_arguments)] // one proposal's parts
async fn new_proposal(
    tx: &mut WriteTx,
    me: &AuthDevice,
    wallet_id: &str,
    version: u64,
    old: &Policy,
    proposed: &Policy,
    text: &str,
    hash: &str,
    rule: &Rule,
    at: i64,
) -> ApiResult<db::policy_proposals::Row> {
    let id = uuid::Uuid::new_v4().simple().to_string();
    let weakens = crate::policy_change::weakenings(old, proposed);
    let weakens_json =
        serde_json::to_string(&weakens).map_err(|e| ApiError::Internal(e.to_string()))?;
    let waiting_for = rule.structure_text();
    db::policy_proposals::insert(
        &mut **tx,
        &db::policy_proposals::NewProposal {
            id: &id,
            wallet_id,
            version: version as i64,
            policy: text,
            policy_sha256: hash,
            weakens: &weakens_json,
            proposed_by: &me.device_id,
            waiting_for: &waiting_for,
            at,
        },
    )
    .await?;
    audit::append_in(
        tx,
        "policy.proposed",
        audit::Subject {
            user: Some(&me.user_id),
            device: Some(&me.device_id),
            wallet: Some(wallet_id),
        },
        json!({
            "proposal": id, "version": version, "policy": proposed, "policy_sha256": hash,
            "weakens": weakens, "admins": waiting_for,
        }),
    )
    .await?;
    notify(tx, me, rule, wallet_id, &id, version, &weakens).await?;
    db::policy_proposals::get(&mut **tx, &id)
        .await?
        .ok_or_else(|| ApiError::Internal("the proposal just inserted is missing".into()))
}

/// Tells every other active admin device (named, or a device of a named user) that a proposal
/// waits for its signature (a `policy-proposal` event).
async fn notify(
    tx: &mut WriteTx,
    me: &AuthDevice,
    rule: &Rule,
    wallet_id: &str,
    proposal_id: &str,
    version: u64,
    weakens: &[&str],
) -> ApiResult<()> {
    let (devices, users) = rule.named();
    let mut targets: BTreeSet<String> = BTreeSet::new();
    for d in devices {
        let standing = db::devices::standing(&mut **tx, d).await?;
        if matches!(standing, Some((db::DeviceStatus::Active, _))) {
            targets.insert(d.to_string());
        }
    }
    for u in users {
        let ids: Vec<(String,)> =
            sqlx::query_as("SELECT id FROM devices WHERE user_id = $1 AND status = 'active'")
                .bind(u)
                .fetch_all(&mut **tx)
                .await?;
        targets.extend(ids.into_iter().map(|(id,)| id));
    }
    targets.remove(&me.device_id);
    let summary = format!(
        "policy version {version} of wallet {wallet_id} waits for your signature{}: tessera policy sign {proposal_id}",
        if weakens.is_empty() {
            String::new()
        } else {
            format!(" (it weakens {})", weakens.join(", "))
        }
    );
    for device in targets {
        crate::events::push_in(
            tx,
            &device,
            EventKind::PolicyProposal,
            None,
            Some(wallet_id),
            None,
            &summary,
        )
        .await?;
    }
    Ok(())
}

fn to_info(
    row: &db::policy_proposals::Row,
    state: ProposalState,
    signatures: &[db::policy_proposals::SignatureRow],
) -> ApiResult<ProposalInfo> {
    let policy: Policy = serde_json::from_str(&row.policy)
        .map_err(|e| ApiError::Internal(format!("stored proposal: {e}")))?;
    let weakens: Vec<String> = serde_json::from_str(&row.weakens)
        .map_err(|e| ApiError::Internal(format!("stored proposal: {e}")))?;
    let mut signers: Vec<ProposalSigner> = signatures
        .iter()
        .map(|(device, labels, signature, at, _)| {
            Ok(ProposalSigner {
                device_id: device.clone().into(),
                labels: serde_json::from_str(labels)
                    .map_err(|e| ApiError::Internal(format!("stored labels: {e}")))?,
                signature: signature.clone(),
                at: rfc3339(*at),
            })
        })
        .collect::<ApiResult<_>>()?;
    // The proposer first, then in the order they signed.
    signers.sort_by_key(|s| s.device_id.as_str() != row.proposed_by);
    Ok(ProposalInfo {
        id: row.id.clone().into(),
        wallet_id: row.wallet_id.clone().into(),
        version: row.version.max(0) as u64,
        policy,
        policy_sha256: row.policy_sha256.clone(),
        weakens,
        proposed_by: row.proposed_by.clone().into(),
        signers,
        waiting_for: row.waiting_for.clone(),
        state,
        created_at: rfc3339(row.created_at),
    })
}

async fn info_of(state: &AppState, row: &db::policy_proposals::Row) -> ApiResult<ProposalInfo> {
    let signatures = db::policy_proposals::signatures(state.db(), &row.id).await?;
    let s = row
        .state
        .parse::<ProposalState>()
        .map_err(ApiError::Internal)?;
    to_info(row, s, &signatures)
}

/// Whether `me` may see `wallet_id`'s proposals: its owner, or an admin of its policy in force.
async fn may_see(state: &AppState, me: &AuthDevice, wallet_id: &str) -> ApiResult<bool> {
    let owner: Option<(String,)> = sqlx::query_as("SELECT user_id FROM wallets WHERE id = $1")
        .bind(wallet_id)
        .fetch_optional(state.db())
        .await?;
    let Some((owner,)) = owner else {
        return Ok(false);
    };
    if owner == me.user_id {
        return Ok(true);
    }
    let (_, policy, ..) = crate::policy::current(state, wallet_id).await?;
    Ok(admin_rule(&policy)?.is_some_and(|r| !r.labels_of(&me.device_id, &me.user_id).is_empty()))
}

/// `GET /policy/proposals?wallet=&state=`: the proposals of a wallet the caller owns or
/// administers (all such wallets when none is named), pending ones unless `state` says.
#[utoipa::path(get, path = "/policy/proposals", tag = "policy", security(("bearer" = [])), params(ProposalQuery), responses((status = 200, description = "The proposals, oldest first", body = Vec<ProposalInfo>), crate::openapi::AuthErrors, crate::openapi::NotFound, crate::openapi::Errors))]
pub async fn list(
    State(state): State<AppState>,
    me: AuthDevice,
    ApiQuery(q): ApiQuery<ProposalQuery>,
) -> ApiResult<Json<Vec<ProposalInfo>>> {
    let wanted = q.state.unwrap_or(ProposalState::Pending);
    let rows = match &q.wallet {
        Some(wallet) => {
            if !may_see(&state, &me, wallet.as_str()).await? {
                return Err(ApiError::NotFound(format!(
                    "no wallet {wallet} that you own or administer"
                )));
            }
            db::policy_proposals::of_wallet(state.db(), wallet.as_str(), wanted.as_str()).await?
        }
        None => {
            let mut seen: std::collections::BTreeMap<String, bool> = Default::default();
            let mut out = Vec::new();
            for row in
                db::policy_proposals::in_state(state.db(), wanted.as_str(), LIST_LIMIT).await?
            {
                let ok = match seen.get(&row.wallet_id) {
                    Some(ok) => *ok,
                    None => {
                        let ok = may_see(&state, &me, &row.wallet_id).await?;
                        seen.insert(row.wallet_id.clone(), ok);
                        ok
                    }
                };
                if ok {
                    out.push(row);
                }
            }
            out
        }
    };
    let mut out = Vec::with_capacity(rows.len());
    for row in &rows {
        out.push(info_of(&state, row).await?);
    }
    Ok(Json(out))
}

async fn visible(
    state: &AppState,
    me: &AuthDevice,
    id: &str,
) -> ApiResult<db::policy_proposals::Row> {
    let not_found = || ApiError::NotFound(format!("no policy proposal {id}"));
    let row = db::policy_proposals::get(state.db(), id)
        .await?
        .ok_or_else(not_found)?;
    if !may_see(state, me, &row.wallet_id).await? {
        return Err(not_found());
    }
    Ok(row)
}

/// `GET /policy/proposals/{id}`.
#[utoipa::path(get, path = "/policy/proposals/{id}", tag = "policy", security(("bearer" = [])), params(("id" = String, Path, description = "The proposal")), responses((status = 200, description = "The proposal", body = ProposalInfo), crate::openapi::AuthErrors, crate::openapi::NotFound, crate::openapi::Errors))]
pub async fn show(
    State(state): State<AppState>,
    me: AuthDevice,
    ApiPath(id): ApiPath<String>,
) -> ApiResult<Json<ProposalInfo>> {
    let row = visible(&state, &me, &id).await?;
    Ok(Json(info_of(&state, &row).await?))
}

/// `POST /policy/proposals/{id}/sign`: an admin of the policy in force signs a pending proposal
/// over [`api::policy_message`] of its wallet, version and policy JSON. 200 when its version
/// applied with this signature, 202 when it waits for more.
#[utoipa::path(post, path = "/policy/proposals/{id}/sign", tag = "policy", security(("bearer" = [])), params(("id" = String, Path, description = "The proposal")), request_body = SignProposal, responses((status = 200, description = "Signed; the version applied", body = ProposalInfo), (status = 202, description = "Signed; it waits for more admins", body = ProposalInfo), crate::openapi::AuthErrors, crate::openapi::NotFound, crate::openapi::Conflict, crate::openapi::Errors))]
pub async fn sign(
    State(state): State<AppState>,
    me: AuthDevice,
    ApiPath(id): ApiPath<String>,
    ApiJson(req): ApiJson<SignProposal>,
) -> ApiResult<(StatusCode, Json<ProposalInfo>)> {
    let row = visible(&state, &me, &id).await?;
    let (current, policy, ..) = crate::policy::current(&state, &row.wallet_id).await?;
    if let Some(rule) = admin_rule(&policy)?
        && rule.labels_of(&me.device_id, &me.user_id).is_empty()
    {
        return Err(forbidden(&me, &rule, &row.wallet_id, current));
    }
    let version = row.version.max(0) as u64;
    verify(
        &state,
        &me,
        &row.wallet_id,
        version,
        &row.policy,
        &row.policy_sha256,
        &req.signature,
    )
    .await?;
    let (info, applied) = sign_in(&state, &me, Target::Existing(&row), &req.signature).await?;
    let status = if applied.is_some() {
        StatusCode::OK
    } else {
        StatusCode::ACCEPTED
    };
    Ok((status, Json(info)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;
    use tessera_api::requests::{ApprovalRule, Approver};
    use tessera_api::{DeviceId, UserId};

    fn admins(structure: &str, labels: &[(&str, Approver)]) -> Policy {
        Policy {
            admins: Some(ApprovalRule {
                structure: structure.into(),
                approvers: labels
                    .iter()
                    .map(|(l, a)| ((*l).to_string(), a.clone()))
                    .collect::<BTreeMap<_, _>>(),
            }),
            ..Policy::default()
        }
    }

    #[test]
    fn one_device_alone_is_warned_about() {
        assert_eq!(
            warning(&Policy::default()).as_deref(),
            Some(api::proposals::NO_ADMIN_QUORUM_WARNING)
        );
        let a = Approver::Device(DeviceId::new("d-a"));
        let b = Approver::Device(DeviceId::new("d-b"));
        assert_eq!(
            warning(&admins("and(a, b)", &[("a", a.clone()), ("b", b.clone())])),
            None
        );
        let w = warning(&admins("or(a, b)", &[("a", a.clone()), ("b", b)])).unwrap();
        assert!(w.contains("or(a, b)"), "{w}");
        let u = Approver::User(UserId::new("u-1"));
        assert!(warning(&admins("threshold(1, a, u)", &[("a", a), ("u", u)])).is_some());
    }

    #[test]
    fn the_signed_text_is_the_policy_as_serde_writes_it() {
        let p = admins("a", &[("a", Approver::Device(DeviceId::new("d-a")))]);
        let (text, hash) = text_and_hash(&p).unwrap();
        let again: Policy = serde_json::from_str(&text).unwrap();
        assert_eq!(text_and_hash(&again).unwrap(), (text, hash.clone()));
        assert_eq!(hash.len(), 64);
        let (_, other) = text_and_hash(&Policy::default()).unwrap();
        assert_ne!(hash, other);
    }
}
