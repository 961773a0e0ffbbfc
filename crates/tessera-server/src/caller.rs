//! Who calls an endpoint that both devices and service accounts may call (`POST /requests`,
//! `GET /requests/{id}`). Being written: service-account tokens are not accepted yet.

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use tessera_api::RequestKind;

use crate::auth::AuthDevice;
use crate::error::ApiError;
use crate::state::AppState;

/// An authenticated caller: an active device, or an active service account.
#[derive(Debug, Clone)]
pub enum Caller {
    /// An active device.
    Device(AuthDevice),
    /// An active (not revoked) service account.
    Service(AuthService),
}

/// An authenticated, active service account and its scope, read from the database on every
/// request (a revoked account's tokens stop at once).
#[derive(Debug, Clone)]
pub struct AuthService {
    /// The service account.
    pub service_id: String,
    /// The user it acts for.
    pub user_id: String,
    /// The wallets it may create requests for.
    pub wallets: Vec<String>,
    /// The kinds of request it may create.
    pub kinds: Vec<RequestKind>,
}

impl AuthService {
    /// Whether its scope covers a request of `kind` for `wallet_id`.
    ///
    /// # Errors
    /// 403 naming what is outside the scope.
    pub fn allows(&self, wallet_id: &str, kind: RequestKind) -> Result<(), ApiError> {
        if !self.wallets.iter().any(|w| w == wallet_id) {
            return Err(ApiError::Forbidden(format!(
                "service account {} may not create requests for wallet {wallet_id}",
                self.service_id
            )));
        }
        if !self.kinds.contains(&kind) {
            return Err(ApiError::Forbidden(format!(
                "service account {} may not create {kind} requests",
                self.service_id
            )));
        }
        Ok(())
    }
}

impl FromRequestParts<AppState> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        AuthDevice::from_request_parts(parts, state)
            .await
            .map(Caller::Device)
    }
}
