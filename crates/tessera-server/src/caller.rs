//! Who calls an endpoint that both devices and service accounts may call. Being written.

use axum::extract::FromRequestParts;
use axum::http::request::Parts;

use crate::auth::AuthDevice;
use crate::error::ApiError;
use crate::state::AppState;

/// An authenticated caller: an active device, or a service account (not yet).
#[derive(Debug, Clone)]
pub enum Caller {
    /// An active device.
    Device(AuthDevice),
}

impl FromRequestParts<AppState> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        AuthDevice::from_request_parts(parts, state)
            .await
            .map(Caller::Device)
    }
}
