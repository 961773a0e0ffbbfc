//! The device registry and authentication endpoints.

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use tessera_api as api;

use serde_json::json;

use crate::audit;
use crate::auth::{AuthDevice, CHALLENGE_TTL_SECS, TOKEN_TTL_SECS};
use crate::db::devices::DeviceRow;
use crate::db::{self, DeviceStatus};
use crate::error::{ApiError, ApiResult};
use crate::extract::{ApiJson, ApiPath};
use crate::state::{AppState, now, rfc3339};
use crate::{enrolment, names};

fn hex_array<const N: usize>(what: &str, text: &str) -> ApiResult<[u8; N]> {
    let mut out = [0u8; N];
    hex::decode_to_slice(text, &mut out)
        .map_err(|_| ApiError::BadRequest(format!("{what} must be {} hex digits", 2 * N)))?;
    Ok(out)
}

fn check_name(what: &str, name: &str) -> ApiResult<()> {
    if name.trim().is_empty() || name.len() > 64 || name.chars().any(char::is_control) {
        return Err(ApiError::BadRequest(format!(
            "{what} must be 1 to 64 printable characters"
        )));
    }
    Ok(())
}

/// Checks that the registered device `device_id` signed `message` (`signature` hex) with its
/// identity key.
///
/// # Errors
/// [`ApiError::BadRequest`] for a malformed signature, [`ApiError::Unauthorized`] when it does
/// not verify.
pub async fn verify_device_signature(
    state: &AppState,
    device_id: &str,
    message: &[u8],
    signature: &str,
) -> ApiResult<()> {
    let key = db::devices::identity_key(state.db(), device_id).await?;
    let key: [u8; 32] = key
        .try_into()
        .map_err(|_| ApiError::Internal("stored identity key has a wrong length".into()))?;
    verify_identity(&key, message, signature)
}

fn verify_identity(key: &[u8; 32], message: &[u8], signature: &str) -> ApiResult<()> {
    let signature: [u8; 64] = hex_array("signature", signature)?;
    tessera_store::keystore::verify_identity_signature(key, message, &signature)
        .map_err(|_| ApiError::Unauthorized("identity signature does not verify".into()))
}

fn device_of(row: DeviceRow) -> api::Device {
    let (device_id, user_id, name, key, status, registered_at, last_seen, revoked_at) = row;
    api::Device {
        device_id: device_id.into(),
        user_id: user_id.into(),
        name,
        identity_key: hex::encode(key),
        status,
        registered_at: rfc3339(registered_at),
        last_seen: last_seen.map(rfc3339),
        revoked_at: revoked_at.map(rfc3339),
    }
}

/// `POST /devices`: the first device of a user creates the user and is active; a later device is
/// pending until an active device approves it; a device already registered (a reinstall that kept
/// its identity key) gets its existing record back.
#[utoipa::path(post, path = "/devices", tag = "devices", request_body = api::RegisterDevice, responses((status = 201, description = "Registered: active (the user's first device) or pending approval", body = api::Device), (status = 200, description = "This identity key is registered already: the device as it stands", body = api::Device), crate::openapi::AuthErrors, crate::openapi::Conflict, crate::openapi::Errors))]
pub async fn register(
    State(state): State<AppState>,
    ApiJson(req): ApiJson<api::RegisterDevice>,
) -> ApiResult<(StatusCode, Json<api::Device>)> {
    check_name("user", &req.user)?;
    check_name("device_name", &req.device_name)?;
    let key: [u8; 32] = hex_array("identity_key", &req.identity_key)?;
    verify_identity(
        &key,
        &api::register_message(&req.user, &req.device_name, &key),
        &req.signature,
    )?;
    names::normalise("user", &req.user)?;
    let mut req = req;
    req.device_name = names::normalise("device_name", &req.device_name)?;

    let mut tx = state.begin_write().await?;
    enrolment::lock_user_by_name(&mut tx, &req.user).await?;
    let user = db::devices::user_named(&mut *tx, &req.user).await?;
    let (user_id, status) = match user {
        Some(id) => {
            let existing = db::devices::by_key(&mut *tx, &id, key.as_slice()).await?;
            if let Some(row) = existing {
                audit::append_in(
                    &mut tx,
                    "device.found_again",
                    audit::Subject {
                        user: Some(&id),
                        device: Some(&row.0),
                        wallet: None,
                    },
                    json!({ "identity_key": hex::encode(key) }),
                )
                .await?;
                tx.commit().await?;
                return Ok((StatusCode::OK, Json(device_of(row))));
            }
            enrolment::refuse_too_many_pending(&mut tx, &id).await?;
            let names = enrolment::live_device_names(&mut tx, &id).await?;
            names::refuse_confusable(&req.device_name, names.iter().map(String::as_str))?;
            (id, DeviceStatus::Pending)
        }
        None => {
            let id = uuid::Uuid::new_v4().to_string();
            db::devices::insert_user(&mut *tx, &id, &req.user, now()).await?;
            (id, DeviceStatus::Active)
        }
    };
    let device_id = uuid::Uuid::new_v4().to_string();
    db::devices::insert(
        &mut *tx,
        &db::devices::NewDevice {
            id: &device_id,
            user_id: &user_id,
            name: &req.device_name,
            identity_key: key.as_slice(),
            status,
            at: now(),
        },
    )
    .await?;
    let row = db::devices::by_id(&mut *tx, &device_id).await?;
    audit::append_in(
        &mut tx,
        "device.registered",
        audit::Subject {
            user: Some(&user_id),
            device: Some(&device_id),
            wallet: None,
        },
        json!({ "user": req.user, "name": req.device_name, "status": status.as_str(), "identity_key": hex::encode(key) }),
    )
    .await?;
    if status == DeviceStatus::Pending {
        // The user's active devices learn of it on their event streams (issue 16).
        let summary = format!(
            "new device {:?} waits for approval: tessera device approve {}",
            req.device_name,
            api::approval_code(&key)
        );
        for other in db::devices::list(&mut *tx, &user_id).await? {
            if other.4 == DeviceStatus::Active {
                crate::events::push_in(
                    &mut tx,
                    &other.0,
                    api::EventKind::DevicePending,
                    None,
                    None,
                    Some(&device_id),
                    &summary,
                )
                .await?;
            }
        }
    }
    tx.commit().await?;
    if status == DeviceStatus::Pending {
        crate::events::wake();
    }
    Ok((StatusCode::CREATED, Json(device_of(row))))
}

/// One device's record.
pub async fn device(state: &AppState, device_id: &str) -> ApiResult<api::Device> {
    Ok(device_of(db::devices::by_id(state.db(), device_id).await?))
}

/// `GET /devices`: the caller's user's devices, oldest registration first; devices registered in
/// the same second are ordered by name, so the listing is the same on every call and replica.
#[utoipa::path(get, path = "/devices", tag = "devices", security(("bearer" = [])), responses((status = 200, description = "The user's devices", body = Vec<api::Device>), crate::openapi::AuthErrors, crate::openapi::Errors))]
pub async fn list(
    State(state): State<AppState>,
    me: AuthDevice,
) -> ApiResult<Json<Vec<api::Device>>> {
    let rows = db::devices::list(state.db(), &me.user_id).await?;
    Ok(Json(rows.into_iter().map(device_of).collect()))
}

/// `POST /devices/{id}/revoke`: revokes a device of the caller's user; its tokens stop working at
/// once (every request re-checks the device).
#[utoipa::path(post, path = "/devices/{id}/revoke", tag = "devices", security(("bearer" = [])), params(("id" = String, Path, description = "The device to revoke")), request_body = api::RevokeDevice, responses((status = 200, description = "Revoked", body = api::Device), crate::openapi::AuthErrors, crate::openapi::NotFound, crate::openapi::Conflict, crate::openapi::Errors))]
pub async fn revoke(
    State(state): State<AppState>,
    me: AuthDevice,
    ApiPath(device_id): ApiPath<String>,
    ApiJson(req): ApiJson<api::RevokeDevice>,
) -> ApiResult<Json<api::Device>> {
    let mut tx = state.begin_write().await?;
    enrolment::lock_user(&mut tx, &me.user_id).await?;
    let status = db::devices::status_of_user(&mut *tx, &device_id, &me.user_id).await?;
    if status == Some(DeviceStatus::Active) {
        enrolment::refuse_revoking_last_active(&mut tx, &me.user_id, &device_id, req.force).await?;
        enrolment::refuse_stranding_quorums(&mut tx, &me.user_id, &device_id, req.force).await?;
    }
    let revoked = db::devices::revoke(&mut *tx, &device_id, &me.user_id, now()).await?;
    let row = db::devices::of_user(&mut *tx, &device_id, &me.user_id).await?;
    match row {
        None => Err(ApiError::NotFound(format!(
            "no device {device_id} for this user"
        ))),
        Some(_) if !revoked => Err(ApiError::Conflict("device already revoked".into())),
        Some(row) => {
            // It leaves every structure wallet it is a party of, by a resharing each
            // (`crate::reshare`); until then it is refused at once, as every revoked device.
            let leaves = db::wallet_changes::on_revocation(&mut tx, &device_id, now()).await?;
            audit::append_in(
                &mut tx,
                "device.revoked",
                audit::Subject::device(&me),
                json!({ "revoked": device_id, "forced": req.force, "leaves_wallets": leaves }),
            )
            .await?;
            tx.commit().await?;
            Ok(Json(device_of(row)))
        }
    }
}

/// `POST /devices/{id}/approve`: an active device of the same user approves a pending one with a
/// signature by its own identity key over the new device's id and key.
#[utoipa::path(post, path = "/devices/{id}/approve", tag = "devices", security(("bearer" = [])), params(("id" = String, Path, description = "The pending device")), request_body = api::ApproveDevice, responses((status = 200, description = "Approved", body = api::Device), crate::openapi::AuthErrors, crate::openapi::NotFound, crate::openapi::Conflict, crate::openapi::Errors))]
pub async fn approve(
    State(state): State<AppState>,
    me: AuthDevice,
    ApiPath(device_id): ApiPath<String>,
    ApiJson(req): ApiJson<api::ApproveDevice>,
) -> ApiResult<Json<api::Device>> {
    let target = db::devices::of_user(state.db(), &device_id, &me.user_id).await?;
    let target =
        target.ok_or_else(|| ApiError::NotFound(format!("no device {device_id} for this user")))?;
    if target.4 != DeviceStatus::Pending {
        return Err(ApiError::Conflict(format!(
            "device is {}, not pending",
            target.4
        )));
    }
    let key: [u8; 32] = target
        .3
        .clone()
        .try_into()
        .map_err(|_| ApiError::Internal("stored identity key has a wrong length".into()))?;
    verify_device_signature(
        &state,
        &me.device_id,
        &api::approve_message(&device_id, &key),
        &req.signature,
    )
    .await?;
    let mut tx = state.begin_write().await?;
    db::devices::activate_pending(&mut *tx, &device_id).await?;
    let row = db::devices::by_id(&mut *tx, &device_id).await?;
    let joins = crate::reshare::record_joins(&mut tx, &me.user_id, &device_id, &row.2).await?;
    audit::append_in(
        &mut tx,
        "device.approved",
        audit::Subject::device(&me),
        json!({ "approved": device_id, "joins_wallets": joins }),
    )
    .await?;
    // Each wallet it joins waits for a resharing, which any active device of the user can run
    // (`tessera wallet reshare --pending`, or `tessera listen --reshare-pending`): they are told.
    if !joins.is_empty() {
        let devices = db::devices::list(&mut *tx, &me.user_id).await?;
        for wallet_id in &joins {
            let summary = format!(
                "device {:?} joins wallet {wallet_id} once it is reshared (tessera wallet reshare --wallet W --pending, or tessera listen --reshare-pending)",
                row.2
            );
            for other in devices.iter().filter(|d| d.4 == DeviceStatus::Active) {
                crate::events::push_in(
                    &mut tx,
                    &other.0,
                    api::EventKind::ReshareJoin,
                    None,
                    Some(wallet_id),
                    Some(&device_id),
                    &summary,
                )
                .await?;
            }
        }
    }
    tx.commit().await?;
    if !joins.is_empty() {
        crate::events::wake();
    }
    Ok(Json(device_of(row)))
}

/// `POST /auth/challenge`.
#[utoipa::path(post, path = "/auth/challenge", tag = "auth", request_body = api::ChallengeRequest, responses((status = 200, description = "A challenge to sign with the device's identity key", body = api::Challenge), crate::openapi::AuthErrors, crate::openapi::NotFound, crate::openapi::Errors))]
pub async fn challenge(
    State(state): State<AppState>,
    ApiJson(req): ApiJson<api::ChallengeRequest>,
) -> ApiResult<Json<api::Challenge>> {
    let exists = db::devices::status(state.db(), &req.device_id).await?;
    if exists.is_none() {
        return Err(ApiError::NotFound("unknown device".into()));
    }
    let challenge = tessera_core::protocols::fresh_nonce();
    db::challenges::delete_expired(state.db(), now()).await?;
    db::challenges::insert(
        state.db(),
        challenge.as_slice(),
        &req.device_id,
        now() + CHALLENGE_TTL_SECS as i64,
    )
    .await?;
    Ok(Json(api::Challenge {
        challenge: hex::encode(challenge),
        expires_in: CHALLENGE_TTL_SECS,
    }))
}

/// `POST /auth/token`: a challenge is single-use (a failed attempt uses it up too); the device
/// must be active. The token is issued only once its `token.issued` record is committed.
#[utoipa::path(post, path = "/auth/token", tag = "auth", request_body = api::TokenRequest, responses((status = 200, description = "A short-lived token", body = api::Token), crate::openapi::AuthErrors, crate::openapi::NotFound, crate::openapi::Gone, crate::openapi::Errors))]
pub async fn token(
    State(state): State<AppState>,
    ApiJson(req): ApiJson<api::TokenRequest>,
) -> ApiResult<Json<api::Token>> {
    let challenge: [u8; 32] = hex_array("challenge", &req.challenge)?;
    let mut tx = state.begin_write().await?;
    let found = db::challenges::take(&mut *tx, challenge.as_slice()).await?;
    let refused = match found {
        Some((device, expires)) if device == req.device_id && expires >= now() => None,
        Some((device, _)) if device == req.device_id => {
            Some(ApiError::Unauthorized("challenge expired".into()))
        }
        _ => Some(ApiError::Unauthorized("unknown or used challenge".into())),
    };
    if let Some(refusal) = refused {
        tx.commit().await?;
        return Err(refusal);
    }
    let (key, status, user_id) = db::devices::key_status_user(&mut *tx, &req.device_id).await?;
    let key: [u8; 32] = key
        .try_into()
        .map_err(|_| ApiError::Internal("stored identity key has a wrong length".into()))?;
    let refused = verify_identity(
        &key,
        &api::auth_message(&req.device_id, &challenge),
        &req.signature,
    )
    .err()
    .or_else(|| match status {
        DeviceStatus::Active => None,
        DeviceStatus::Pending => Some(ApiError::Forbidden(
            "device is pending approval by an active device of this user".into(),
        )),
        DeviceStatus::Revoked => Some(ApiError::Unauthorized("device revoked".into())),
    });
    if let Some(refusal) = refused {
        // The challenge stays used.
        tx.commit().await?;
        return Err(refusal);
    }
    db::devices::touch(&mut *tx, &req.device_id, now()).await?;
    let token = state.jwt().issue(&req.device_id, &user_id)?;
    audit::append_in(
        &mut tx,
        "token.issued",
        audit::Subject {
            user: Some(&user_id),
            device: Some(&req.device_id),
            wallet: None,
        },
        json!({ "expires_in": TOKEN_TTL_SECS }),
    )
    .await?;
    tx.commit().await?;
    Ok(Json(api::Token {
        token,
        expires_in: TOKEN_TTL_SECS,
    }))
}

/// The device registry and authentication: `POST /devices` (under the per-address
/// registration limit), `GET /devices`, `POST /devices/{id}/revoke|approve`,
/// `POST /auth/challenge`, `POST /auth/token`.
pub(crate) fn router(state: &AppState) -> axum::Router<AppState> {
    use axum::routing::post;
    axum::Router::new()
        .route(
            "/devices",
            post(register)
                .layer(axum::middleware::from_fn_with_state(
                    state.clone(),
                    enrolment::limit_registrations,
                ))
                .get(list),
        )
        .route("/devices/{id}/revoke", post(revoke))
        .route("/devices/{id}/approve", post(approve))
        .route("/auth/challenge", post(challenge))
        .route("/auth/token", post(token))
}
