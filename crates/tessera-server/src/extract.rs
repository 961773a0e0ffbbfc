//! Extractors whose rejections are [`ApiError`]s, so that a request the server cannot read
//! (malformed JSON, a missing field, a wrong content type, a body over the limit, a bad query
//! string or path parameter, a plain GET on a WebSocket endpoint) is answered with the same JSON
//! error body as every other error, and the status axum gives it.
//!
//! Handlers take `ApiJson(body): ApiJson<T>` where they would take `Json(body): Json<T>`, and
//! likewise [`ApiQuery`], [`ApiPath`] and [`ApiWebSocket`]. Answers stay `axum::Json`.

use axum::Json;
use axum::extract::rejection::{JsonRejection, PathRejection, QueryRejection};
use axum::extract::ws::{WebSocketUpgrade, rejection::WebSocketUpgradeRejection};
use axum::extract::{FromRequest, FromRequestParts, Path, Query, Request};
use axum::http::request::Parts;
use axum::http::{Method, Uri};
use serde::de::DeserializeOwned;

use crate::error::ApiError;

/// A JSON body (`Content-Type: application/json`), as `axum::Json`.
#[derive(Debug, Clone, Copy, Default)]
pub struct ApiJson<T>(pub T);

/// A query string, as `axum::extract::Query`.
#[derive(Debug, Clone, Copy, Default)]
pub struct ApiQuery<T>(pub T);

/// Path parameters, as `axum::extract::Path`.
#[derive(Debug, Clone, Copy, Default)]
pub struct ApiPath<T>(pub T);

/// A WebSocket upgrade, as `axum::extract::ws::WebSocketUpgrade`.
#[derive(Debug)]
pub struct ApiWebSocket(pub WebSocketUpgrade);

impl From<JsonRejection> for ApiError {
    fn from(rejection: JsonRejection) -> Self {
        ApiError::rejected(rejection.status(), rejection.body_text())
    }
}

impl From<QueryRejection> for ApiError {
    fn from(rejection: QueryRejection) -> Self {
        ApiError::rejected(rejection.status(), rejection.body_text())
    }
}

impl From<PathRejection> for ApiError {
    fn from(rejection: PathRejection) -> Self {
        ApiError::rejected(rejection.status(), rejection.body_text())
    }
}

impl From<WebSocketUpgradeRejection> for ApiError {
    fn from(rejection: WebSocketUpgradeRejection) -> Self {
        ApiError::rejected(rejection.status(), rejection.body_text())
    }
}

impl<T, S> FromRequest<S> for ApiJson<T>
where
    T: DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request(request: Request, state: &S) -> Result<Self, ApiError> {
        let Json(value) = Json::<T>::from_request(request, state).await?;
        Ok(ApiJson(value))
    }
}

impl<T, S> FromRequestParts<S> for ApiQuery<T>
where
    T: DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        let Query(value) = Query::<T>::from_request_parts(parts, state).await?;
        Ok(ApiQuery(value))
    }
}

impl<T, S> FromRequestParts<S> for ApiPath<T>
where
    T: DeserializeOwned + Send,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        let Path(value) = Path::<T>::from_request_parts(parts, state).await?;
        Ok(ApiPath(value))
    }
}

impl<S> FromRequestParts<S> for ApiWebSocket
where
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        Ok(ApiWebSocket(
            WebSocketUpgrade::from_request_parts(parts, state).await?,
        ))
    }
}

/// The answer for a path no route serves (`Router::fallback`).
pub(crate) async fn no_such_path(uri: Uri) -> ApiError {
    ApiError::NotFound(format!("no endpoint at {}", uri.path()))
}

/// The answer for a method a path does not serve (`Router::method_not_allowed_fallback`); axum
/// adds the `Allow` header.
pub(crate) async fn method_not_allowed(method: Method, uri: Uri) -> ApiError {
    ApiError::MethodNotAllowed(format!("{} does not answer {method}", uri.path()))
}
