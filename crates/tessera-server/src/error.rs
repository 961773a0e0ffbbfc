//! The server's one error type; every handler returns it and it renders as JSON.
//!
//! Every error answer, whatever produced it (a handler, an extractor that could not read the
//! request, an unknown path or method, a rate limit), has the same body,
//! [`tessera_api::ApiError`]: `{"error": CODE, "message": TEXT}` plus `"rule"` for a policy
//! denial. The codes are stable and listed in [`ApiError::code`]; the status is the one each
//! variant names.

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use tessera_api as api;

/// An error answered to a client. Messages are for the caller and never carry secrets.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// 400: the request is malformed or invalid.
    #[error("{0}")]
    BadRequest(String),
    /// 401: no valid credentials.
    #[error("{0}")]
    Unauthorized(String),
    /// 403: authenticated, but not allowed.
    #[error("{0}")]
    Forbidden(String),
    /// 404.
    #[error("{0}")]
    NotFound(String),
    /// 409: conflicts with what exists.
    #[error("{0}")]
    Conflict(String),
    /// 410: the session is over (finished, failed or expired).
    #[error("{0}")]
    Gone(String),
    /// 403: the wallet's policy denies the request.
    #[error("denied by the wallet's policy ({rule}): {message}")]
    PolicyDenied {
        /// The rule.
        rule: String,
        /// Why.
        message: String,
    },
    /// 429: too many requests; retry after this many seconds.
    #[error("too many requests: retry after {retry_after} s")]
    TooManyRequests {
        /// Seconds.
        retry_after: u64,
    },
    /// 405: the path exists but does not answer this method.
    #[error("{0}")]
    MethodNotAllowed(String),
    /// 413: the body is larger than this endpoint accepts.
    #[error("{0}")]
    PayloadTooLarge(String),
    /// 415: the body is not declared as `application/json`.
    #[error("{0}")]
    UnsupportedMediaType(String),
    /// 422: the body is JSON but not the expected shape (a missing field, a wrong type, an
    /// unknown variant).
    #[error("{0}")]
    Unprocessable(String),
    /// 426: a WebSocket endpoint was called without a WebSocket upgrade.
    #[error("{0}")]
    UpgradeRequired(String),
    /// 500: our fault; details are logged, not returned.
    #[error("internal error")]
    Internal(String),
}

impl ApiError {
    /// The HTTP status of the answer.
    #[must_use]
    pub fn status(&self) -> StatusCode {
        self.parts().0
    }

    /// The body's stable `error` code: `bad_request`, `unauthorized`, `forbidden`, `not_found`,
    /// `conflict`, `gone`, `policy_denied`, `rate_limited`, `method_not_allowed`,
    /// `payload_too_large`, `unsupported_media_type`, `unprocessable`, `upgrade_required` or
    /// `internal`.
    #[must_use]
    pub fn code(&self) -> &'static str {
        self.parts().1
    }

    /// An extractor's rejection (`status`, axum's text) as the error of that status.
    pub(crate) fn rejected(status: StatusCode, message: String) -> Self {
        match status {
            StatusCode::UNAUTHORIZED => ApiError::Unauthorized(message),
            StatusCode::FORBIDDEN => ApiError::Forbidden(message),
            StatusCode::NOT_FOUND => ApiError::NotFound(message),
            StatusCode::METHOD_NOT_ALLOWED => ApiError::MethodNotAllowed(message),
            StatusCode::PAYLOAD_TOO_LARGE => ApiError::PayloadTooLarge(message),
            StatusCode::UNSUPPORTED_MEDIA_TYPE => ApiError::UnsupportedMediaType(message),
            StatusCode::UNPROCESSABLE_ENTITY => ApiError::Unprocessable(message),
            StatusCode::UPGRADE_REQUIRED => ApiError::UpgradeRequired(message),
            s if s.is_server_error() => ApiError::Internal(message),
            _ => ApiError::BadRequest(message),
        }
    }

    fn parts(&self) -> (StatusCode, &'static str) {
        match self {
            ApiError::BadRequest(_) => (StatusCode::BAD_REQUEST, "bad_request"),
            ApiError::Unauthorized(_) => (StatusCode::UNAUTHORIZED, "unauthorized"),
            ApiError::Forbidden(_) => (StatusCode::FORBIDDEN, "forbidden"),
            ApiError::NotFound(_) => (StatusCode::NOT_FOUND, "not_found"),
            ApiError::Conflict(_) => (StatusCode::CONFLICT, "conflict"),
            ApiError::Gone(_) => (StatusCode::GONE, "gone"),
            ApiError::PolicyDenied { .. } => (StatusCode::FORBIDDEN, "policy_denied"),
            ApiError::TooManyRequests { .. } => (StatusCode::TOO_MANY_REQUESTS, "rate_limited"),
            ApiError::MethodNotAllowed(_) => (StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed"),
            ApiError::PayloadTooLarge(_) => (StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large"),
            ApiError::UnsupportedMediaType(_) => {
                (StatusCode::UNSUPPORTED_MEDIA_TYPE, "unsupported_media_type")
            }
            ApiError::Unprocessable(_) => (StatusCode::UNPROCESSABLE_ENTITY, "unprocessable"),
            ApiError::UpgradeRequired(_) => (StatusCode::UPGRADE_REQUIRED, "upgrade_required"),
            ApiError::Internal(_) => (StatusCode::INTERNAL_SERVER_ERROR, "internal"),
        }
    }
}

impl From<sqlx::Error> for ApiError {
    fn from(e: sqlx::Error) -> Self {
        ApiError::Internal(format!("database: {e}"))
    }
}

impl ApiError {
    /// The HTTP status and the JSON body this error answers with (an internal error is logged).
    pub(crate) fn answer(&self) -> (StatusCode, api::ApiError) {
        let (status, code) = self.parts();
        if let ApiError::Internal(detail) = self {
            tracing::error!(%detail, "internal error");
        }
        let body = api::ApiError {
            error: code.into(),
            message: self.to_string(),
            rule: match self {
                ApiError::PolicyDenied { rule, .. } => Some(rule.clone()),
                _ => None,
            },
        };
        (status, body)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let (status, body) = self.answer();
        let mut response = (status, Json(body)).into_response();
        if let ApiError::TooManyRequests { retry_after } = self
            && let Ok(value) = retry_after.to_string().parse()
        {
            response
                .headers_mut()
                .insert(axum::http::header::RETRY_AFTER, value);
        }
        response
    }
}

/// Result of a handler.
pub type ApiResult<T> = Result<T, ApiError>;

/// Why the server, or an operator command on its data directory, could not start or finish:
/// what a process exits with, never an HTTP answer. Messages name the file, database step or key
/// and never carry secrets.
#[derive(Debug, thiserror::Error)]
pub enum SetupError {
    /// The configuration or an input is not usable (a bad `--kek`, `--database-url`,
    /// certificate...).
    #[error("{0}")]
    Invalid(String),
    /// A file or directory operation failed.
    #[error("cannot {action} {}: {source}", path.display())]
    Io {
        /// What was being done: create, write, read, restrict.
        action: &'static str,
        /// The file or directory.
        path: std::path::PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// A database step failed.
    #[error("{step}: {source}")]
    Database {
        /// What was being done.
        step: String,
        /// The database's error.
        #[source]
        source: sqlx::Error,
    },
    /// Applying the schema's migrations failed.
    #[error("database migration failed: {0}")]
    Migration(#[from] sqlx::migrate::MigrateError),
    /// The key-encryption key (a key file or the HSM) failed.
    #[error("{0}")]
    Kek(#[from] tessera_store::Error),
    /// Stored data is not what this server can use (a share sealed under another key, a
    /// backup of another wallet...), or another step failed; the message says which.
    #[error("{0}")]
    Failed(String),
}

impl SetupError {
    /// An I/O error of `action` on `path`, for `map_err`.
    pub fn io(action: &'static str, path: &std::path::Path) -> impl FnOnce(std::io::Error) -> Self {
        let path = path.to_path_buf();
        move |source| SetupError::Io {
            action,
            path,
            source,
        }
    }

    /// A database error of `step`, for `map_err`.
    pub fn db(step: impl Into<String>) -> impl Fn(sqlx::Error) -> Self {
        let step = step.into();
        move |source| SetupError::Database {
            step: step.clone(),
            source,
        }
    }
}
