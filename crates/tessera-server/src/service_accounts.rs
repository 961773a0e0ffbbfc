//! Service accounts (issue 16): a user's backend creates signing requests with its own Ed25519
//! key. It never holds a share: it may create requests (`POST /requests`, within its scope of
//! wallets and kinds, [`crate::caller::AuthService::allows`]) and read its own.
//!
//! An active device of the user registers one with an identity signature over
//! [`api::service::service_account_message`] (name, key, wallets and kinds), and revokes it with
//! one over [`api::service::service_revoke_message`]. The account authenticates as a device does
//! (a single-use challenge signed with its key, `POST /auth/service/challenge` and
//! `/auth/service/token`) and gets a token of another audience
//! ([`crate::tokens::SERVICE_AUDIENCE`]), which every device endpoint refuses; every request
//! reads the account again, so a revoked account's token stops at once. Registration,
//! revocation and every token issued are audited (`service.added`, `service.revoked`,
//! `service.token`), each in the transaction of its change.
//!
//! A public key is registered once for good, revoked or not: a replayed registration cannot
//! bring a revoked key back.

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use serde_json::json;
use tessera_api as api;
use tessera_api::service as wire;

use crate::audit;
use crate::auth::{AuthDevice, CHALLENGE_TTL_SECS, TOKEN_TTL_SECS};
use crate::db::service_accounts::{self as rows, ServiceRow};
use crate::error::{ApiError, ApiResult};
use crate::extract::{ApiJson, ApiPath};
use crate::names;
use crate::registry::verify_device_signature;
use crate::state::{AppState, now, rfc3339};

/// Most wallets one account may be scoped to.
pub const MAX_WALLETS: usize = 64;

fn hex_array<const N: usize>(what: &str, text: &str) -> ApiResult<[u8; N]> {
    let mut out = [0u8; N];
    hex::decode_to_slice(text, &mut out)
        .map_err(|_| ApiError::BadRequest(format!("{what} must be {} hex digits", 2 * N)))?;
    Ok(out)
}

/// An Ed25519 public key a service account may have: a valid point (RFC 8032 decoding) that is
/// not of small order (a small-order key would accept signatures nobody's secret made).
///
/// # Errors
/// [`ApiError::BadRequest`] naming `public_key`.
pub fn check_public_key(text: &str) -> ApiResult<[u8; 32]> {
    let key: [u8; 32] = hex_array("public_key", text)?;
    let point = ed25519_dalek::VerifyingKey::from_bytes(&key).map_err(|_| {
        ApiError::BadRequest("public_key is not an Ed25519 public key (not a curve point)".into())
    })?;
    if point.is_weak() {
        return Err(ApiError::BadRequest(
            "public_key is a small-order Ed25519 point: not a usable key".into(),
        ));
    }
    Ok(key)
}

/// The account a row describes.
///
/// # Errors
/// [`ApiError::Internal`] for a row that does not parse.
pub fn account_of(row: ServiceRow) -> ApiResult<wire::ServiceAccount> {
    let (id, user_id, name, key, wallets, kinds, created_by, created_at, revoked_at) = row;
    let wallets: Vec<api::WalletId> = serde_json::from_str(&wallets)
        .map_err(|e| ApiError::Internal(format!("stored service wallets: {e}")))?;
    let kinds: Vec<api::RequestKind> = serde_json::from_str(&kinds)
        .map_err(|e| ApiError::Internal(format!("stored service kinds: {e}")))?;
    Ok(wire::ServiceAccount {
        service_id: id.into(),
        user_id: user_id.into(),
        name,
        public_key: hex::encode(key),
        wallets,
        kinds,
        created_by: created_by.into(),
        created_at: rfc3339(created_at),
        revoked_at: revoked_at.map(rfc3339),
    })
}

fn check_scope(req: &wire::AddServiceAccount) -> ApiResult<()> {
    if req.wallets.is_empty() || req.wallets.len() > MAX_WALLETS {
        return Err(ApiError::BadRequest(format!(
            "wallets must name 1 to {MAX_WALLETS} wallets"
        )));
    }
    for (i, w) in req.wallets.iter().enumerate() {
        if req.wallets[..i].contains(w) {
            return Err(ApiError::BadRequest(format!("wallets names {w} twice")));
        }
    }
    if req.kinds.is_empty() {
        return Err(ApiError::BadRequest(
            "kinds must name at least one request kind".into(),
        ));
    }
    for (i, k) in req.kinds.iter().enumerate() {
        if req.kinds[..i].contains(k) {
            return Err(ApiError::BadRequest(format!("kinds names {k} twice")));
        }
    }
    Ok(())
}

/// `POST /service-accounts`: an active device registers a service account of its user.
#[utoipa::path(post, path = "/service-accounts", tag = "service-accounts", security(("bearer" = [])), request_body = wire::AddServiceAccount, responses((status = 201, description = "Registered", body = wire::ServiceAccount), crate::openapi::AuthErrors, crate::openapi::Conflict, crate::openapi::Errors))]
pub async fn add(
    State(state): State<AppState>,
    me: AuthDevice,
    ApiJson(req): ApiJson<wire::AddServiceAccount>,
) -> ApiResult<(StatusCode, Json<wire::ServiceAccount>)> {
    let name = names::normalise("name", &req.name)?;
    let key = check_public_key(&req.public_key)?;
    check_scope(&req)?;
    verify_device_signature(
        &state,
        &me.device_id,
        &wire::service_account_message(&req.name, &key, &req.wallets, &req.kinds),
        &req.signature,
    )
    .await
    .map_err(|e| match e {
        // The caller is authenticated: a signature that does not cover these fields is bad
        // input, not a failed authentication.
        ApiError::Unauthorized(_) => ApiError::BadRequest(
            "signature: this device's identity signature over the service account's name, key, wallets and kinds does not verify".into(),
        ),
        other => other,
    })?;

    let mut tx = state.begin_write().await?;
    crate::enrolment::lock_user(&mut tx, &me.user_id).await?;
    for wallet in &req.wallets {
        let owned = crate::db::wallets::owned(&mut *tx, &me.user_id, wallet).await;
        match owned {
            Ok(_) => {}
            Err(ApiError::NotFound(_)) => {
                return Err(ApiError::BadRequest(format!(
                    "wallets: this user has no wallet {wallet}"
                )));
            }
            Err(e) => return Err(e),
        }
    }
    let key_taken = || {
        ApiError::Conflict(
            "this public key is registered already (a key is registered once, even after revocation): generate another".into(),
        )
    };
    if rows::key_known(&mut *tx, &key).await? {
        return Err(key_taken());
    }
    let mine = names::skeleton(&name);
    for other in rows::of_user(&mut *tx, &me.user_id).await? {
        if other.8.is_none() && names::skeleton(&other.2) == mine {
            return Err(ApiError::Conflict(format!(
                "the service account name {name:?} looks like the name of another live service account of this user ({:?})",
                other.2
            )));
        }
    }
    let id = uuid::Uuid::new_v4().to_string();
    let wallets = serde_json::to_string(&req.wallets)
        .map_err(|e| ApiError::Internal(format!("service wallets: {e}")))?;
    let kinds = serde_json::to_string(&req.kinds)
        .map_err(|e| ApiError::Internal(format!("service kinds: {e}")))?;
    rows::insert(
        &mut *tx,
        &rows::NewServiceAccount {
            id: &id,
            user_id: &me.user_id,
            name: &name,
            public_key: &key,
            wallets: &wallets,
            kinds: &kinds,
            created_by: &me.device_id,
            at: now(),
        },
    )
    .await
    .map_err(|e| match &e {
        // Another user's registration of the same key committed in between (PostgreSQL).
        sqlx::Error::Database(d) if d.is_unique_violation() => key_taken(),
        _ => e.into(),
    })?;
    let row = rows::by_id(&mut *tx, &id)
        .await?
        .ok_or_else(|| ApiError::Internal("service account vanished".into()))?;
    audit::append_in(
        &mut tx,
        "service.added",
        audit::Subject::device(&me),
        json!({
            "service_id": id,
            "name": name,
            "public_key": hex::encode(key),
            "wallets": req.wallets,
            "kinds": req.kinds,
        }),
    )
    .await?;
    tx.commit().await?;
    Ok((StatusCode::CREATED, Json(account_of(row)?)))
}

/// `GET /service-accounts`: the caller's user's service accounts (revoked ones too), oldest
/// first.
#[utoipa::path(get, path = "/service-accounts", tag = "service-accounts", security(("bearer" = [])), responses((status = 200, description = "The user's service accounts", body = Vec<wire::ServiceAccount>), crate::openapi::AuthErrors, crate::openapi::Errors))]
pub async fn list(
    State(state): State<AppState>,
    me: AuthDevice,
) -> ApiResult<Json<Vec<wire::ServiceAccount>>> {
    let rows = rows::of_user(state.db(), &me.user_id).await?;
    Ok(Json(
        rows.into_iter()
            .map(account_of)
            .collect::<ApiResult<Vec<_>>>()?,
    ))
}

/// `POST /service-accounts/{id}/revoke`: signed by an active device of the user; the account's
/// tokens stop working at once.
#[utoipa::path(post, path = "/service-accounts/{id}/revoke", tag = "service-accounts", security(("bearer" = [])), params(("id" = String, Path, description = "The service account")), request_body = wire::RevokeServiceAccount, responses((status = 200, description = "Revoked", body = wire::ServiceAccount), crate::openapi::AuthErrors, crate::openapi::NotFound, crate::openapi::Conflict, crate::openapi::Errors))]
pub async fn revoke(
    State(state): State<AppState>,
    me: AuthDevice,
    ApiPath(service_id): ApiPath<String>,
    ApiJson(req): ApiJson<wire::RevokeServiceAccount>,
) -> ApiResult<Json<wire::ServiceAccount>> {
    verify_device_signature(
        &state,
        &me.device_id,
        &wire::service_revoke_message(&service_id),
        &req.signature,
    )
    .await?;
    let mut tx = state.begin_write().await?;
    let revoked = rows::revoke(&mut *tx, &service_id, &me.user_id, &me.device_id, now()).await?;
    let row = rows::by_id(&mut *tx, &service_id)
        .await?
        .filter(|r| r.1 == me.user_id)
        .ok_or_else(|| {
            ApiError::NotFound(format!("no service account {service_id} for this user"))
        })?;
    if !revoked {
        return Err(ApiError::Conflict("service account already revoked".into()));
    }
    audit::append_in(
        &mut tx,
        "service.revoked",
        audit::Subject::device(&me),
        json!({ "service_id": service_id, "name": row.2 }),
    )
    .await?;
    tx.commit().await?;
    Ok(Json(account_of(row)?))
}

/// `POST /auth/service/challenge`: a single-use challenge for a service account to sign.
#[utoipa::path(post, path = "/auth/service/challenge", tag = "auth", request_body = wire::ServiceChallengeRequest, responses((status = 200, description = "A challenge to sign with the service account's key", body = api::Challenge), crate::openapi::AuthErrors, crate::openapi::NotFound, crate::openapi::Errors))]
pub async fn challenge(
    State(state): State<AppState>,
    ApiJson(req): ApiJson<wire::ServiceChallengeRequest>,
) -> ApiResult<Json<api::Challenge>> {
    if rows::by_id(state.db(), &req.service_id).await?.is_none() {
        return Err(ApiError::NotFound("unknown service account".into()));
    }
    let challenge = tessera_core::protocols::fresh_nonce();
    let mut conn = state.db().acquire().await?;
    rows::insert_challenge(
        &mut conn,
        challenge.as_slice(),
        &req.service_id,
        now(),
        now() + CHALLENGE_TTL_SECS as i64,
    )
    .await?;
    Ok(Json(api::Challenge {
        challenge: hex::encode(challenge),
        expires_in: CHALLENGE_TTL_SECS,
    }))
}

/// `POST /auth/service/token`: the challenge is single-use (a failed attempt uses it up too);
/// the account must not be revoked. The token (audience
/// [`crate::tokens::SERVICE_AUDIENCE`]) is issued once its `service.token` record is committed.
#[utoipa::path(post, path = "/auth/service/token", tag = "auth", request_body = wire::ServiceTokenRequest, responses((status = 200, description = "A short-lived service-account token", body = api::Token), crate::openapi::AuthErrors, crate::openapi::Errors))]
pub async fn token(
    State(state): State<AppState>,
    ApiJson(req): ApiJson<wire::ServiceTokenRequest>,
) -> ApiResult<Json<api::Token>> {
    let challenge: [u8; 32] = hex_array("challenge", &req.challenge)?;
    let signature: [u8; 64] = hex_array("signature", &req.signature)?;
    let mut tx = state.begin_write().await?;
    let found = rows::take_challenge(&mut *tx, challenge.as_slice()).await?;
    let refused = match found {
        Some((id, expires)) if id == req.service_id.as_str() && expires >= now() => None,
        Some((id, _)) if id == req.service_id.as_str() => {
            Some(ApiError::Unauthorized("challenge expired".into()))
        }
        _ => Some(ApiError::Unauthorized("unknown or used challenge".into())),
    };
    if let Some(refusal) = refused {
        tx.commit().await?;
        return Err(refusal);
    }
    let row = rows::by_id(&mut *tx, &req.service_id)
        .await?
        .ok_or_else(|| ApiError::Unauthorized("unknown service account".into()))?;
    let key: [u8; 32] = row
        .3
        .clone()
        .try_into()
        .map_err(|_| ApiError::Internal("stored service key has a wrong length".into()))?;
    let refused = tessera_store::keystore::verify_identity_signature(
        &key,
        &wire::service_auth_message(&req.service_id, &challenge),
        &signature,
    )
    .err()
    .map(|_| ApiError::Unauthorized("service account signature does not verify".into()))
    .or_else(|| {
        row.8
            .map(|_| ApiError::Unauthorized("service account revoked".into()))
    });
    if let Some(refusal) = refused {
        // The challenge stays used.
        tx.commit().await?;
        return Err(refusal);
    }
    let token = state.jwt().issue_service(&row.0, &row.1)?;
    audit::append_in(
        &mut tx,
        "service.token",
        audit::Subject {
            user: Some(&row.1),
            device: None,
            wallet: None,
        },
        json!({ "service_id": row.0, "expires_in": TOKEN_TTL_SECS }),
    )
    .await?;
    tx.commit().await?;
    Ok(Json(api::Token {
        token,
        expires_in: TOKEN_TTL_SECS,
    }))
}

/// The routes of this area: `POST|GET /service-accounts`, `POST /service-accounts/{id}/revoke`,
/// `POST /auth/service/challenge`, `POST /auth/service/token`, and `GET /webhooks/key`.
pub(crate) fn router() -> axum::Router<AppState> {
    use axum::routing::{get, post};
    axum::Router::new()
        .route("/service-accounts", post(add).get(list))
        .route("/service-accounts/{id}/revoke", post(revoke))
        .route("/auth/service/challenge", post(challenge))
        .route("/auth/service/token", post(token))
        .route("/webhooks/key", get(crate::webhooks::key))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn refusal(text: &str) -> String {
        check_public_key(text).map(|_| ()).unwrap_err().to_string()
    }

    #[test]
    fn keys_must_be_usable_points() {
        assert!(refusal("abcd").contains("64 hex digits"));
        // The identity and the point of order 2 (small order), as RFC 8032 encodes them.
        let identity = format!("01{}", "00".repeat(31));
        assert!(refusal(&identity).contains("small-order"));
        let order_two = format!("ec{}7f", "ff".repeat(30));
        assert!(refusal(&order_two).contains("small-order"));
        // Some y have no x on edwards25519.
        let not_points = (2u8..40)
            .filter(|y| {
                check_public_key(&format!("{y:02x}{}", "00".repeat(31)))
                    .err()
                    .is_some_and(|e| e.to_string().contains("not a curve point"))
            })
            .count();
        assert!(not_points > 0);
        // A real key.
        let real = ed25519_dalek::SigningKey::from_bytes(&[9u8; 32]).verifying_key();
        assert_eq!(
            check_public_key(&hex::encode(real.to_bytes())).ok(),
            Some(real.to_bytes())
        );
    }
}
