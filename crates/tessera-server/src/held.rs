//! The held-action endpoints: `GET /actions` lists a user's actions waiting for another device
//! or a time lock ([`crate::hold`]), `POST /actions/{id}` approves or cancels one; an approved
//! policy change or recovery is carried out here at once.

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use serde_json::json;
use tessera_api as api;

use crate::audit;
use crate::auth::AuthDevice;
use crate::db::{self, HeldStatus};
use crate::error::{ApiError, ApiResult};
use crate::extract::{ApiJson, ApiPath};
use crate::hold::{self, Held, Kind};
use crate::state::{AppState, now};

/// `GET /actions`: the user's held actions that are pending or approved and not yet carried out.
#[utoipa::path(get, path = "/actions", tag = "actions", security(("bearer" = [])), responses((status = 200, description = "The user's held actions still waiting", body = Vec<api::HeldAction>), crate::openapi::AuthErrors, crate::openapi::Errors))]
pub async fn list(
    State(state): State<AppState>,
    me: AuthDevice,
) -> ApiResult<Json<Vec<api::HeldAction>>> {
    let rows = db::held::live_of_user(state.db(), &me.user_id).await?;
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
#[utoipa::path(post, path = "/actions/{id}", tag = "actions", security(("bearer" = [])), params(("id" = String, Path, description = "The held action")), request_body = api::DecideHeldAction, responses((status = 200, description = "Decided", body = api::HeldAction), (status = 202, description = "Recorded; the action waits for more", body = api::HeldAction), crate::openapi::AuthErrors, crate::openapi::NotFound, crate::openapi::Conflict, crate::openapi::Gone, crate::openapi::Errors))]
pub async fn decide(
    State(state): State<AppState>,
    me: AuthDevice,
    ApiPath(id): ApiPath<String>,
    ApiJson(req): ApiJson<api::DecideHeldAction>,
) -> ApiResult<(StatusCode, Json<api::HeldAction>)> {
    let row = db::held::of_user(state.db(), &id, &me.user_id).await?;
    let mut held =
        Held::from_row(row.ok_or_else(|| ApiError::NotFound(format!("no held action {id}")))?)?;
    let from = held.status;
    refuse_decision(&held, &me, req.approve)?;
    crate::registry::verify_device_signature(
        &state,
        &me.device_id,
        &api::held_action_message(&id, &held.info.digest, req.approve),
        &req.signature,
    )
    .await?;
    let to = if req.approve {
        HeldStatus::Approved
    } else {
        HeldStatus::Cancelled
    };
    if !db::held::decide(state.db(), &id, from, to, &me.device_id, now()).await? {
        return Err(ApiError::Conflict(
            "the action was decided meanwhile".into(),
        ));
    }
    held.set_status(to);
    let [_, approved, cancelled, _] = crate::hold::audit_kinds(held.kind);
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
    carry_out(&state, &me, &mut held, req.approve).await?;
    Ok((StatusCode::OK, Json(held.info)))
}

/// Refuses a decision the action's status does not allow (only a pending action is approved;
/// a pending or approved one is cancelled), and a device approving its own request.
fn refuse_decision(held: &Held, me: &AuthDevice, approve: bool) -> ApiResult<()> {
    let from = held.status;
    let allowed = if approve {
        from == HeldStatus::Pending
    } else {
        matches!(from, HeldStatus::Pending | HeldStatus::Approved)
    };
    if !allowed {
        return Err(ApiError::Conflict(format!("the action is {from}")));
    }
    if approve && held.info.requested_by == me.device_id {
        return Err(ApiError::Forbidden(
            "a device cannot approve its own request: use another active device".into(),
        ));
    }
    Ok(())
}

/// After a decision: an approved policy change or recovery is carried out at once; a cancelled
/// recovery revokes the recovering device.
async fn carry_out(
    state: &AppState,
    me: &AuthDevice,
    held: &mut Held,
    approve: bool,
) -> ApiResult<()> {
    match (held.kind, approve) {
        (Kind::PolicyChange, true) => {
            let change: api::SetPolicy = serde_json::from_value(held.request.clone())
                .map_err(|e| ApiError::Internal(format!("stored policy change: {e}")))?;
            let applied =
                crate::policy::apply(state, &me.user_id, &held.info.requested_by, &change).await;
            if let Err(e) = applied {
                // The policy changed since the proposal: it no longer applies as signed.
                db::held::cancel(state.db(), &held.info.id).await?;
                return Err(e);
            }
            hold::release(
                state,
                held,
                &me.user_id,
                json!({ "version": change.version }),
            )
            .await?;
            held.set_status(HeldStatus::Released);
        }
        (Kind::DeviceRecovery, true) => {
            let mut tx = state.begin_write().await?;
            let joins = hold::activate_recovered(&mut tx, &held.info.requested_by).await?;
            tx.commit().await?;
            hold::release(
                state,
                held,
                &me.user_id,
                json!({ "approved_by": me.device_id, "joins_wallets": joins }),
            )
            .await?;
            held.set_status(HeldStatus::Released);
        }
        (Kind::DeviceRecovery, false) => {
            // Cancelled: "not me". The recovering device is revoked, so it cannot ask again.
            db::devices::revoke_pending(state.db(), &held.info.requested_by, &me.user_id, now())
                .await?;
        }
        _ => {}
    }
    Ok(())
}

/// Held actions: `GET /actions`, `POST /actions/{id}`.
pub(crate) fn router() -> axum::Router<AppState> {
    use axum::routing::{get, post};
    axum::Router::new()
        .route("/actions", get(list))
        .route("/actions/{id}", post(decide))
}
