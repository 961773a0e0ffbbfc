//! Device authentication: a signed challenge buys a short-lived JWT (EdDSA only).
//!
//! Every request's token is checked for its algorithm (pinned to EdDSA: `alg: none`, HS256 with
//! the public key as secret and RS256 are refused), signature, expiry, audience, and — on every
//! request, from the database — that the device is still active, so a revoked device's tokens
//! stop working at once.

use axum::extract::FromRequestParts;
use axum::http::request::Parts;

use crate::db::{self, DeviceStatus};
use crate::error::ApiError;
use crate::state::AppState;

/// Challenge lifetime.
pub const CHALLENGE_TTL_SECS: u64 = 120;

pub use crate::tokens::{AUDIENCE, Claims, JwtKeys, TOKEN_TTL_SECS};

/// An authenticated, active device: the extractor every protected handler takes.
#[derive(Debug, Clone)]
pub struct AuthDevice {
    /// Device id.
    pub device_id: String,
    /// Its user.
    pub user_id: String,
}

impl FromRequestParts<AppState> for AuthDevice {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let header = parts
            .headers
            .get(axum::http::header::AUTHORIZATION)
            .ok_or_else(|| ApiError::Unauthorized("missing Authorization: Bearer token".into()))?;
        let token = header
            .to_str()
            .ok()
            .and_then(|h| h.strip_prefix("Bearer "))
            .ok_or_else(|| {
                ApiError::Unauthorized("Authorization must be `Bearer <token>`".into())
            })?;
        let claims = state.jwt().verify(token)?;
        state.limits().check_device(&claims.sub)?;
        match db::devices::standing(state.db(), &claims.sub).await? {
            Some((DeviceStatus::Active, user_id)) if user_id == claims.usr => Ok(AuthDevice {
                device_id: claims.sub,
                user_id,
            }),
            Some((DeviceStatus::Revoked, _)) => {
                Err(ApiError::Unauthorized("device revoked".into()))
            }
            Some((DeviceStatus::Pending, _)) => Err(ApiError::Forbidden(
                "device is pending approval by an active device of this user".into(),
            )),
            _ => Err(ApiError::Unauthorized("unknown device".into())),
        }
    }
}
