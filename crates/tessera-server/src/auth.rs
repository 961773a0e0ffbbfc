//! Device authentication: a signed challenge buys a short-lived JWT (EdDSA only).
//!
//! Every request's token is checked for its algorithm (pinned to EdDSA: `alg: none`, HS256 with
//! the public key as secret and RS256 are refused), signature, expiry, audience, and — on every
//! request, from the database — that the device is still active, so a revoked device's tokens
//! stop working at once. [`AuthDevice`] reads the device's standing in a query of its own;
//! the signing path's handlers take a [`TokenDevice`] and read it with their first query.

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
        let token = TokenDevice::from_request_parts(parts, state).await?;
        let standing = db::devices::standing(state.db(), &token.device_id).await?;
        token.confirm(standing)
    }
}

/// A device whose token is valid (algorithm, signature, expiry, audience, rate limit), but
/// whose standing is not checked yet: for the handlers on the signing path, which read it in
/// the same query as the rest of what they need (each statement is a round trip to the
/// database's thread) and must call [`TokenDevice::confirm`] before anything else.
#[derive(Debug, Clone)]
pub struct TokenDevice {
    /// Device id (the token's subject).
    pub device_id: String,
    /// The user the token names.
    pub user_id: String,
}

impl TokenDevice {
    /// The device, once its stored standing (status and user, none: unknown) shows it is
    /// active and belongs to the token's user.
    ///
    /// # Errors
    /// 401 for a revoked or unknown device (or another user's), 403 for a pending one.
    pub fn confirm(self, standing: Option<(DeviceStatus, String)>) -> Result<AuthDevice, ApiError> {
        match standing {
            Some((DeviceStatus::Active, user_id)) if user_id == self.user_id => Ok(AuthDevice {
                device_id: self.device_id,
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

impl FromRequestParts<AppState> for TokenDevice {
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
        crate::observe::authenticated(&claims.sub);
        state.limits().check_device(&claims.sub)?;
        Ok(TokenDevice {
            device_id: claims.sub,
            user_id: claims.usr,
        })
    }
}
