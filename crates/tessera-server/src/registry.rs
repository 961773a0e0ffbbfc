//! The device registry and authentication endpoints.

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use tessera_api::{self as api, DeviceStatus};

use serde_json::json;

use crate::audit;
use crate::auth::{AuthDevice, CHALLENGE_TTL_SECS, TOKEN_TTL_SECS};
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
    let (key,): (Vec<u8>,) = sqlx::query_as("SELECT identity_key FROM devices WHERE id = $1")
        .bind(device_id)
        .fetch_one(state.db())
        .await?;
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

type DeviceRow = (
    String,
    String,
    String,
    Vec<u8>,
    String,
    i64,
    Option<i64>,
    Option<i64>,
);

fn device_of(row: DeviceRow) -> api::Device {
    let (device_id, user_id, name, key, status, registered_at, last_seen, revoked_at) = row;
    api::Device {
        device_id: device_id.into(),
        user_id: user_id.into(),
        name,
        identity_key: hex::encode(key),
        status: match status.as_str() {
            "active" => DeviceStatus::Active,
            "pending" => DeviceStatus::Pending,
            _ => DeviceStatus::Revoked,
        },
        registered_at: rfc3339(registered_at),
        last_seen: last_seen.map(rfc3339),
        revoked_at: revoked_at.map(rfc3339),
    }
}

/// The columns of [`DeviceRow`], as a literal so queries stay static strings.
macro_rules! device_select {
    ($rest:literal) => {
        concat!(
            "SELECT id, user_id, name, identity_key, status, registered_at, last_seen, revoked_at FROM devices ",
            $rest
        )
    };
}

/// `POST /devices`: the first device of a user creates the user and is active; a later device is
/// pending until an active device approves it; a device already registered (a reinstall that kept
/// its identity key) gets its existing record back.
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
    let user: Option<(String,)> = sqlx::query_as("SELECT id FROM users WHERE name = $1")
        .bind(&req.user)
        .fetch_optional(&mut *tx)
        .await?;
    let (user_id, status) = match user {
        Some((id,)) => {
            let existing: Option<DeviceRow> =
                sqlx::query_as(device_select!("WHERE user_id = $1 AND identity_key = $2"))
                    .bind(&id)
                    .bind(key.as_slice())
                    .fetch_optional(&mut *tx)
                    .await?;
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
            (id, "pending")
        }
        None => {
            let id = uuid::Uuid::new_v4().to_string();
            sqlx::query("INSERT INTO users (id, name, created_at) VALUES ($1, $2, $3)")
                .bind(&id)
                .bind(&req.user)
                .bind(now())
                .execute(&mut *tx)
                .await?;
            (id, "active")
        }
    };
    let device_id = uuid::Uuid::new_v4().to_string();
    sqlx::query(
        "INSERT INTO devices (id, user_id, name, identity_key, status, registered_at) VALUES ($1, $2, $3, $4, $5, $6)",
    )
    .bind(&device_id)
    .bind(&user_id)
    .bind(&req.device_name)
    .bind(key.as_slice())
    .bind(status)
    .bind(now())
    .execute(&mut *tx)
    .await?;
    let row: DeviceRow = sqlx::query_as(device_select!("WHERE id = $1"))
        .bind(&device_id)
        .fetch_one(&mut *tx)
        .await?;
    audit::append_in(
        &mut tx,
        "device.registered",
        audit::Subject {
            user: Some(&user_id),
            device: Some(&device_id),
            wallet: None,
        },
        json!({ "user": req.user, "name": req.device_name, "status": status, "identity_key": hex::encode(key) }),
    )
    .await?;
    tx.commit().await?;
    Ok((StatusCode::CREATED, Json(device_of(row))))
}

/// One device's record.
pub async fn device(state: &AppState, device_id: &str) -> ApiResult<api::Device> {
    let row: DeviceRow = sqlx::query_as(device_select!("WHERE id = $1"))
        .bind(device_id)
        .fetch_one(state.db())
        .await?;
    Ok(device_of(row))
}

/// `GET /devices`: the caller's user's devices, oldest registration first; devices registered in
/// the same second are ordered by name, so the listing is the same on every call and replica.
pub async fn list(
    State(state): State<AppState>,
    me: AuthDevice,
) -> ApiResult<Json<Vec<api::Device>>> {
    let rows: Vec<DeviceRow> = sqlx::query_as(device_select!(
        "WHERE user_id = $1 ORDER BY registered_at, name, id"
    ))
    .bind(&me.user_id)
    .fetch_all(state.db())
    .await?;
    Ok(Json(rows.into_iter().map(device_of).collect()))
}

/// `POST /devices/{id}/revoke`: revokes a device of the caller's user; its tokens stop working at
/// once (every request re-checks the device).
pub async fn revoke(
    State(state): State<AppState>,
    me: AuthDevice,
    ApiPath(device_id): ApiPath<String>,
    ApiJson(req): ApiJson<api::RevokeDevice>,
) -> ApiResult<Json<api::Device>> {
    let mut tx = state.begin_write().await?;
    enrolment::lock_user(&mut tx, &me.user_id).await?;
    let status: Option<(String,)> =
        sqlx::query_as("SELECT status FROM devices WHERE id = $1 AND user_id = $2")
            .bind(&device_id)
            .bind(&me.user_id)
            .fetch_optional(&mut *tx)
            .await?;
    if status.is_some_and(|(s,)| s == "active") {
        enrolment::refuse_revoking_last_active(&mut tx, &me.user_id, &device_id, req.force).await?;
    }
    let done = sqlx::query(
        "UPDATE devices SET status = 'revoked', revoked_at = $1 WHERE id = $2 AND user_id = $3 AND status != 'revoked'",
    )
    .bind(now())
    .bind(&device_id)
    .bind(&me.user_id)
    .execute(&mut *tx)
    .await?;
    let row: Option<DeviceRow> = sqlx::query_as(device_select!("WHERE id = $1 AND user_id = $2"))
        .bind(&device_id)
        .bind(&me.user_id)
        .fetch_optional(&mut *tx)
        .await?;
    match row {
        None => Err(ApiError::NotFound(format!(
            "no device {device_id} for this user"
        ))),
        Some(_) if done.rows_affected() == 0 => {
            Err(ApiError::Conflict("device already revoked".into()))
        }
        Some(row) => {
            audit::append_in(
                &mut tx,
                "device.revoked",
                audit::Subject::device(&me),
                json!({ "revoked": device_id, "forced": req.force }),
            )
            .await?;
            tx.commit().await?;
            Ok(Json(device_of(row)))
        }
    }
}

/// `POST /devices/{id}/approve`: an active device of the same user approves a pending one with a
/// signature by its own identity key over the new device's id and key.
pub async fn approve(
    State(state): State<AppState>,
    me: AuthDevice,
    ApiPath(device_id): ApiPath<String>,
    ApiJson(req): ApiJson<api::ApproveDevice>,
) -> ApiResult<Json<api::Device>> {
    let target: Option<DeviceRow> =
        sqlx::query_as(device_select!("WHERE id = $1 AND user_id = $2"))
            .bind(&device_id)
            .bind(&me.user_id)
            .fetch_optional(state.db())
            .await?;
    let target =
        target.ok_or_else(|| ApiError::NotFound(format!("no device {device_id} for this user")))?;
    if target.4 != "pending" {
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
    sqlx::query("UPDATE devices SET status = 'active' WHERE id = $1 AND status = 'pending'")
        .bind(&device_id)
        .execute(&mut *tx)
        .await?;
    let row: DeviceRow = sqlx::query_as(device_select!("WHERE id = $1"))
        .bind(&device_id)
        .fetch_one(&mut *tx)
        .await?;
    audit::append_in(
        &mut tx,
        "device.approved",
        audit::Subject::device(&me),
        json!({ "approved": device_id }),
    )
    .await?;
    tx.commit().await?;
    Ok(Json(device_of(row)))
}

/// `POST /auth/challenge`.
pub async fn challenge(
    State(state): State<AppState>,
    ApiJson(req): ApiJson<api::ChallengeRequest>,
) -> ApiResult<Json<api::Challenge>> {
    let exists: Option<(String,)> = sqlx::query_as("SELECT status FROM devices WHERE id = $1")
        .bind(&req.device_id)
        .fetch_optional(state.db())
        .await?;
    if exists.is_none() {
        return Err(ApiError::NotFound("unknown device".into()));
    }
    let challenge = tessera_core::protocols::fresh_nonce();
    sqlx::query("DELETE FROM challenges WHERE expires_at < $1")
        .bind(now())
        .execute(state.db())
        .await?;
    sqlx::query("INSERT INTO challenges (challenge, device_id, expires_at) VALUES ($1, $2, $3)")
        .bind(challenge.as_slice())
        .bind(&req.device_id)
        .bind(now() + CHALLENGE_TTL_SECS as i64)
        .execute(state.db())
        .await?;
    Ok(Json(api::Challenge {
        challenge: hex::encode(challenge),
        expires_in: CHALLENGE_TTL_SECS,
    }))
}

/// `POST /auth/token`: a challenge is single-use (a failed attempt uses it up too); the device
/// must be active. The token is issued only once its `token.issued` record is committed.
pub async fn token(
    State(state): State<AppState>,
    ApiJson(req): ApiJson<api::TokenRequest>,
) -> ApiResult<Json<api::Token>> {
    let challenge: [u8; 32] = hex_array("challenge", &req.challenge)?;
    let mut tx = state.begin_write().await?;
    let found: Option<(String, i64)> = sqlx::query_as(
        "DELETE FROM challenges WHERE challenge = $1 RETURNING device_id, expires_at",
    )
    .bind(challenge.as_slice())
    .fetch_optional(&mut *tx)
    .await?;
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
    let (key, status, user_id): (Vec<u8>, String, String) =
        sqlx::query_as("SELECT identity_key, status, user_id FROM devices WHERE id = $1")
            .bind(&req.device_id)
            .fetch_one(&mut *tx)
            .await?;
    let key: [u8; 32] = key
        .try_into()
        .map_err(|_| ApiError::Internal("stored identity key has a wrong length".into()))?;
    let refused = verify_identity(
        &key,
        &api::auth_message(&req.device_id, &challenge),
        &req.signature,
    )
    .err()
    .or_else(|| match status.as_str() {
        "active" => None,
        "pending" => Some(ApiError::Forbidden(
            "device is pending approval by an active device of this user".into(),
        )),
        _ => Some(ApiError::Unauthorized("device revoked".into())),
    });
    if let Some(refusal) = refused {
        // The challenge stays used.
        tx.commit().await?;
        return Err(refusal);
    }
    sqlx::query("UPDATE devices SET last_seen = $1 WHERE id = $2")
        .bind(now())
        .bind(&req.device_id)
        .execute(&mut *tx)
        .await?;
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
