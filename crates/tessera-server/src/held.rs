//! Held actions: what one device of a user may not do alone. Exporting the server's share (to
//! holders not yet fixed for the wallet), weakening a policy that requires approval, and
//! recovering a device while the user has active devices are held until another active device
//! of the owner approves them with a signature, or, where no other device can (a user with one
//! active device; a recovery, whose other devices may be lost), until a time lock ends. Every
//! active device of the owner sees them (`GET /actions`) and may cancel them meanwhile. Each
//! step is audited: requested, approved, cancelled, released.
//!
//! The requesting device carries an action out by sending the same signed request again once it
//! is approved or its time lock has ended (a policy change or a recovery is carried out at once
//! when another device approves it).

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use tessera_api as api;

use crate::audit;
use crate::auth::AuthDevice;
use crate::error::{ApiError, ApiResult};
use crate::extract::{ApiJson, ApiPath};
use crate::state::{AppState, now, rfc3339};

/// What is held.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// `POST /backups/server` to holders other than the wallet's fixed ones.
    ServerShareExport,
    /// `PUT /policy` weakening a policy that requires approval.
    PolicyChange,
    /// `POST /devices/{id}/recover` while the user has active devices.
    DeviceRecovery,
}

impl Kind {
    /// The stored name.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::ServerShareExport => "server-share-export",
            Kind::PolicyChange => "policy-change",
            Kind::DeviceRecovery => "device-recovery",
        }
    }

    fn parse(text: &str) -> ApiResult<Self> {
        match text {
            "server-share-export" => Ok(Kind::ServerShareExport),
            "policy-change" => Ok(Kind::PolicyChange),
            "device-recovery" => Ok(Kind::DeviceRecovery),
            other => Err(ApiError::Internal(format!("unknown held action {other}"))),
        }
    }

    /// The audit record kinds of its steps: requested, approved, cancelled, released.
    #[must_use]
    pub fn audit_kinds(self) -> [&'static str; 4] {
        match self {
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

type Row = (
    String,
    String,
    Option<String>,
    String,
    String,
    String,
    String,
    i64,
    Option<i64>,
    String,
);

macro_rules! held_select {
    ($rest:literal) => {
        concat!(
            "SELECT id, kind, wallet_id, requested_by, summary, digest, status, requested_at, unlock_at, request FROM held_actions ",
            $rest
        )
    };
}

/// A stored held action.
pub struct Held {
    /// As the API shows it.
    pub info: api::HeldAction,
    /// What.
    pub kind: Kind,
    /// The request, as stored.
    pub request: Value,
    unlock_at: Option<i64>,
}

impl Held {
    fn from_row(row: Row) -> ApiResult<Self> {
        let (id, kind, wallet_id, requested_by, summary, digest, status, at, unlock_at, request) =
            row;
        Ok(Held {
            kind: Kind::parse(&kind)?,
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
        self.info.status == "approved"
            || (self.info.status == "pending" && self.unlock_at.is_some_and(|u| u <= at))
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
    let (count,): (i64,) = sqlx::query_as(
        "SELECT COUNT(*) FROM devices WHERE user_id = $1 AND status = 'active' AND id <> $2",
    )
    .bind(user_id)
    .bind(device_id)
    .fetch_one(state.db())
    .await?;
    Ok(count)
}

/// The live (pending or approved) action of `requested_by` for the request `digest`, if any.
async fn live(
    state: &AppState,
    kind: Kind,
    requested_by: &str,
    digest: &str,
) -> ApiResult<Option<Held>> {
    let row: Option<Row> = sqlx::query_as(held_select!(
        "WHERE kind = $1 AND requested_by = $2 AND digest = $3 AND status IN ('pending', 'approved') ORDER BY requested_at DESC LIMIT 1"
    ))
    .bind(kind.as_str())
    .bind(requested_by)
    .bind(digest)
    .fetch_optional(state.db())
    .await?;
    row.map(Held::from_row).transpose()
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
    sqlx::query(
        "INSERT INTO held_actions (id, kind, user_id, wallet_id, requested_by, digest, request, summary, status, requested_at, unlock_at) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, 'pending', $9, $10)",
    )
    .bind(&id)
    .bind(request.kind.as_str())
    .bind(request.user_id)
    .bind(request.wallet_id)
    .bind(request.requested_by)
    .bind(request.digest)
    .bind(&text)
    .bind(&request.summary)
    .bind(at)
    .bind(unlock_at)
    .execute(state.db())
    .await?;
    let info = api::HeldAction {
        id: id.clone().into(),
        kind: request.kind.as_str().into(),
        wallet_id: request.wallet_id.map(Into::into),
        requested_by: request.requested_by.into(),
        summary: request.summary.clone(),
        digest: request.digest.into(),
        status: "pending".into(),
        requested_at: rfc3339(at),
        unlock_at: unlock_at.map(rfc3339),
    };
    audit::append(
        state,
        request.kind.audit_kinds()[0],
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
    let done = sqlx::query(
        "UPDATE held_actions SET status = 'released' WHERE id = $1 AND status IN ('pending', 'approved')",
    )
    .bind(&held.info.id)
    .execute(state.db())
    .await?;
    if done.rows_affected() != 1 {
        return Ok(false);
    }
    audit::append(
        state,
        held.kind.audit_kinds()[3],
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

/// `GET /actions`: the user's held actions that are pending or approved and not yet carried out.
pub async fn list(
    State(state): State<AppState>,
    me: AuthDevice,
) -> ApiResult<Json<Vec<api::HeldAction>>> {
    let rows: Vec<Row> = sqlx::query_as(held_select!(
        "WHERE user_id = $1 AND status IN ('pending', 'approved') ORDER BY requested_at, id"
    ))
    .bind(&me.user_id)
    .fetch_all(state.db())
    .await?;
    let held = rows
        .into_iter()
        .map(|r| Held::from_row(r).map(|h| h.info))
        .collect::<ApiResult<Vec<_>>>()?;
    Ok(Json(held))
}

/// `POST /actions/{id}`: another active device of the owner approves a held action, or any
/// active device of the owner (the requester too) cancels it; signed over the action's id and
/// request digest. An approved policy change or recovery is carried out at once; a cancelled
/// recovery revokes the recovering device.
pub async fn decide(
    State(state): State<AppState>,
    me: AuthDevice,
    ApiPath(id): ApiPath<String>,
    ApiJson(req): ApiJson<api::DecideHeldAction>,
) -> ApiResult<(StatusCode, Json<api::HeldAction>)> {
    let row: Option<Row> = sqlx::query_as(held_select!("WHERE id = $1 AND user_id = $2"))
        .bind(&id)
        .bind(&me.user_id)
        .fetch_optional(state.db())
        .await?;
    let mut held =
        Held::from_row(row.ok_or_else(|| ApiError::NotFound(format!("no held action {id}")))?)?;
    let from = held.info.status.clone();
    let allowed = if req.approve {
        from == "pending"
    } else {
        from == "pending" || from == "approved"
    };
    if !allowed {
        return Err(ApiError::Conflict(format!("the action is {from}")));
    }
    if req.approve && held.info.requested_by == me.device_id {
        return Err(ApiError::Forbidden(
            "a device cannot approve its own request: use another active device".into(),
        ));
    }
    crate::registry::verify_device_signature(
        &state,
        &me.device_id,
        &api::held_action_message(&id, &held.info.digest, req.approve),
        &req.signature,
    )
    .await?;
    let to = if req.approve { "approved" } else { "cancelled" };
    let done = sqlx::query(
        "UPDATE held_actions SET status = $1, decided_by = $2, decided_at = $3 WHERE id = $4 AND status = $5",
    )
    .bind(to)
    .bind(&me.device_id)
    .bind(now())
    .bind(&id)
    .bind(&from)
    .execute(state.db())
    .await?;
    if done.rows_affected() != 1 {
        return Err(ApiError::Conflict(
            "the action was decided meanwhile".into(),
        ));
    }
    held.info.status = to.into();
    let [_, approved, cancelled, _] = held.kind.audit_kinds();
    audit::append(
        &state,
        if req.approve { approved } else { cancelled },
        audit::Subject {
            wallet: held.info.wallet_id.as_deref(),
            ..audit::Subject::device(&me)
        },
        json!({ "action": id, "requested_by": held.info.requested_by, "digest": held.info.digest, "signature": req.signature }),
    )
    .await?;
    match (held.kind, req.approve) {
        (Kind::PolicyChange, true) => {
            let change: api::SetPolicy = serde_json::from_value(held.request.clone())
                .map_err(|e| ApiError::Internal(format!("stored policy change: {e}")))?;
            let applied =
                crate::policy::apply(&state, &me.user_id, &held.info.requested_by, &change).await;
            if let Err(e) = applied {
                // The policy changed since the proposal: it no longer applies as signed.
                sqlx::query("UPDATE held_actions SET status = 'cancelled' WHERE id = $1")
                    .bind(&id)
                    .execute(state.db())
                    .await?;
                return Err(e);
            }
            release(
                &state,
                &held,
                &me.user_id,
                json!({ "version": change.version }),
            )
            .await?;
            held.info.status = "released".into();
        }
        (Kind::DeviceRecovery, true) => {
            let mut tx = state.begin_write().await?;
            crate::backups::activate_recovered(&mut tx, &held.info.requested_by).await?;
            tx.commit().await?;
            release(
                &state,
                &held,
                &me.user_id,
                json!({ "approved_by": me.device_id }),
            )
            .await?;
            held.info.status = "released".into();
        }
        (Kind::DeviceRecovery, false) => {
            // Cancelled: "not me". The recovering device is revoked, so it cannot ask again.
            sqlx::query(
                "UPDATE devices SET status = 'revoked', revoked_at = $1 WHERE id = $2 AND user_id = $3 AND status = 'pending'",
            )
            .bind(now())
            .bind(&held.info.requested_by)
            .bind(&me.user_id)
            .execute(state.db())
            .await?;
        }
        _ => {}
    }
    Ok((StatusCode::OK, Json(held.info)))
}

/// Held actions: `GET /actions`, `POST /actions/{id}`.
pub(crate) fn router() -> axum::Router<AppState> {
    use axum::routing::{get, post};
    axum::Router::new()
        .route("/actions", get(list))
        .route("/actions/{id}", post(decide))
}
