//! Holding an action that one device of a user may not take alone (see [`crate::held`] for the
//! endpoints that list, approve and cancel held actions): exporting the server's share, weakening
//! a policy that requires approval, recovering a device while the user has active devices. An
//! action waits until another active device of the owner approves it with a signature, or, where
//! no other device can, until a time lock ends. Each step is audited: requested, approved,
//! cancelled, released.
//!
//! The requesting device carries an action out by sending the same signed request again once it
//! is approved or its time lock has ended.

use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use tessera_api as api;

use crate::audit;
use crate::db::{self, HeldStatus};
use crate::error::{ApiError, ApiResult};
use crate::state::{AppState, now, rfc3339};

/// What is held.
pub use crate::db::HeldKind as Kind;

/// The audit record kinds of a held action's steps: requested, approved, cancelled, released.
#[must_use]
pub fn audit_kinds(kind: Kind) -> [&'static str; 4] {
    match kind {
        Kind::ServerShareExport => [
            "backup.server_share_requested",
            "backup.server_share_approved",
            "backup.server_share_cancelled",
            "backup.server_share_released",
        ],
        Kind::PolicyChange => [
            "policy.proposed",
            "policy.approved",
            "policy.cancelled",
            "policy.proposal_applied",
        ],
        Kind::DeviceRecovery => [
            "device.recovery_requested",
            "device.recovery_approved",
            "device.recovery_cancelled",
            "device.recovered",
        ],
    }
}

/// The hex SHA-256 of a signed request: what identifies it across resubmissions and what an
/// approving device signs.
#[must_use]
pub fn digest(signed_message: &[u8]) -> String {
    hex::encode(Sha256::digest(signed_message))
}

/// A request to hold.
pub struct Request<'a> {
    /// What.
    pub kind: Kind,
    /// The owner.
    pub user_id: &'a str,
    /// The wallet.
    pub wallet_id: Option<&'a str>,
    /// The asking device.
    pub requested_by: &'a str,
    /// [`digest`] of the signed request.
    pub digest: &'a str,
    /// The request, to carry it out later.
    pub request: Value,
    /// What it does, for people.
    pub summary: String,
}

/// A stored held action.
pub struct Held {
    /// As the API shows it.
    pub info: api::HeldAction,
    /// What.
    pub kind: Kind,
    /// The request, as stored.
    pub request: Value,
    /// Where it stands.
    pub status: HeldStatus,
    unlock_at: Option<i64>,
}

impl Held {
    pub(crate) fn from_row(row: db::held::Row) -> ApiResult<Self> {
        let (id, kind, wallet_id, requested_by, summary, digest, status, at, unlock_at, request) =
            row;
        Ok(Held {
            kind,
            status,
            request: serde_json::from_str(&request)
                .map_err(|e| ApiError::Internal(format!("stored held action: {e}")))?,
            unlock_at,
            info: api::HeldAction {
                id: id.into(),
                kind,
                wallet_id: wallet_id.map(Into::into),
                requested_by: requested_by.into(),
                summary,
                digest,
                status,
                requested_at: rfc3339(at),
                unlock_at: unlock_at.map(rfc3339),
            },
        })
    }

    /// Approved, or pending with its time lock over.
    fn is_ready(&self, at: i64) -> bool {
        self.status == HeldStatus::Approved
            || (self.status == HeldStatus::Pending && self.unlock_at.is_some_and(|u| u <= at))
    }

    /// Records that it moved to `status` (as stored).
    pub(crate) fn set_status(&mut self, status: HeldStatus) {
        self.status = status;
        self.info.status = status;
    }
}

/// How many active devices `user_id` has besides `device_id`.
///
/// # Errors
/// A database error.
pub async fn other_active_devices(
    state: &AppState,
    user_id: &str,
    device_id: &str,
) -> ApiResult<i64> {
    Ok(db::devices::other_active_count(state.db(), user_id, device_id).await?)
}

/// The live (pending or approved) action of `requested_by` for the request `digest`, if any.
async fn live(
    state: &AppState,
    kind: Kind,
    requested_by: &str,
    digest: &str,
) -> ApiResult<Option<Held>> {
    db::held::live(state.db(), kind, requested_by, digest)
        .await?
        .map(Held::from_row)
        .transpose()
}

/// Where a request that one device may not carry out alone stands: `Ok(held)` when it may be
/// carried out now (approved, or its time lock is over: the caller carries it out and calls
/// [`release`]); `Err(action)` when it waits, held now or already (the same request sent again
/// finds its action rather than making another).
///
/// `time_lock`: whether a time lock releases it (else only another device's approval).
///
/// # Errors
/// A database error.
pub async fn hold_or_ready(
    state: &AppState,
    request: Request<'_>,
    time_lock: bool,
) -> ApiResult<Result<Held, api::HeldAction>> {
    if let Some(held) = live(state, request.kind, request.requested_by, request.digest).await? {
        return Ok(if held.is_ready(now()) {
            Ok(held)
        } else {
            Err(held.info)
        });
    }
    let id = uuid::Uuid::new_v4().to_string();
    let at = now();
    let lock = i64::try_from(state.config().time_lock.as_secs()).unwrap_or(i64::MAX);
    let unlock_at = time_lock.then(|| at.saturating_add(lock));
    let text = request.request.to_string();
    db::held::insert(
        state.db(),
        &db::held::NewHeld {
            id: &id,
            kind: request.kind,
            user_id: request.user_id,
            wallet_id: request.wallet_id,
            requested_by: request.requested_by,
            digest: request.digest,
            request: &text,
            summary: &request.summary,
            at,
            unlock_at,
        },
    )
    .await?;
    let info = api::HeldAction {
        id: id.clone().into(),
        kind: request.kind,
        wallet_id: request.wallet_id.map(Into::into),
        requested_by: request.requested_by.into(),
        summary: request.summary.clone(),
        digest: request.digest.into(),
        status: HeldStatus::Pending,
        requested_at: rfc3339(at),
        unlock_at: unlock_at.map(rfc3339),
    };
    audit::append(
        state,
        audit_kinds(request.kind)[0],
        audit::Subject {
            user: Some(request.user_id),
            device: Some(request.requested_by),
            wallet: request.wallet_id,
        },
        json!({ "action": id, "summary": request.summary, "digest": request.digest, "unlock_at": info.unlock_at, "request": request.request }),
    )
    .await?;
    Ok(Err(info))
}

/// Marks `held` carried out (once: `false` when another request released or cancelled it
/// meanwhile) and audits it with `detail`.
///
/// # Errors
/// A database error.
pub async fn release(
    state: &AppState,
    held: &Held,
    user_id: &str,
    detail: Value,
) -> ApiResult<bool> {
    if !db::held::release(state.db(), &held.info.id).await? {
        return Ok(false);
    }
    audit::append(
        state,
        audit_kinds(held.kind)[3],
        audit::Subject {
            user: Some(user_id),
            device: Some(&held.info.requested_by),
            wallet: held.info.wallet_id.as_deref(),
        },
        json!({ "action": held.info.id, "detail": detail }),
    )
    .await?;
    Ok(true)
}

/// Activates a recovering device (pending) once its recovery is approved or its time lock
/// ended. Like an approved device, it is to join each of its user's structure wallets it can be
/// added to (`crate::reshare::record_joins`); returns those wallets' ids.
///
/// # Errors
/// [`ApiError::Conflict`] when the device is no longer pending; a database error.
pub async fn activate_recovered(tx: &mut db::WriteTx, device_id: &str) -> ApiResult<Vec<String>> {
    if !db::devices::activate_pending(&mut **tx, device_id).await? {
        return Err(ApiError::Conflict(
            "the recovering device is no longer pending".into(),
        ));
    }
    let (_, user_id, name, ..) = db::devices::by_id(&mut **tx, device_id).await?;
    crate::reshare::record_joins(tx, &user_id, device_id, &name).await
}
