//! One error type for every handler, and the one place that maps errors to HTTP.
//!
//! [`ApiError`] becomes the error envelope. Its response carries an
//! [`ErrorReport`] extension; the `error_envelope` middleware in
//! [`crate::middleware`] renders it with the request id, and also turns axum's
//! own plain-text rejections (405, 413, …) into the same envelope. Internal
//! errors are logged with their cause and answered with a generic message:
//! database error text never reaches a client.
//!
//! ```
//! use axum::response::IntoResponse;
//! use boardroom::error::ApiError;
//! let response = ApiError::not_found("user").into_response();
//! assert_eq!(response.status(), 404);
//! ```

use std::time::Duration;

use axum::{
    Json,
    http::{HeaderValue, StatusCode, header},
    response::{IntoResponse, Response},
};

use crate::envelope::{ErrorBody, ErrorEnvelope};

/// How long clients are told to wait when a dependency is unavailable.
pub const DEFAULT_RETRY_AFTER: Duration = Duration::from_secs(2);

/// Everything a handler can fail with.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// 400: malformed JSON, wrong type, bad UUID or query value.
    #[error("{message}")]
    InvalidInput {
        /// The field or parameter at fault.
        field: Option<String>,
        /// What was wrong with it.
        message: String,
    },
    /// 401: missing, malformed, badly signed or expired bearer token.
    #[error("{0}")]
    Unauthorized(String),
    /// 403: authenticated, but the role does not allow it.
    #[error("{0}")]
    Forbidden(String),
    /// 404: no such resource, or it belongs to another tenant.
    #[error("{0} not found")]
    NotFound(String),
    /// 405: the path exists, the method does not.
    #[error("method not allowed")]
    MethodNotAllowed,
    /// 409: a uniqueness rule (email, slug) would be broken.
    #[error("{0}")]
    Conflict(String),
    /// 413: the body is over `server.body_limit`.
    #[error("request body is too large")]
    PayloadTooLarge,
    /// 415: the body is not `application/json`.
    #[error("{0}")]
    UnsupportedMediaType(String),
    /// 422: well-formed input that breaks a rule (email format, slug pattern).
    #[error("{message}")]
    Validation {
        /// The field at fault.
        field: String,
        /// The rule it broke.
        message: String,
    },
    /// 503: a dependency (the database) is unreachable or the request timed out.
    #[error("{message}")]
    Unavailable {
        /// What is unavailable.
        message: String,
        /// How long to wait before retrying.
        retry_after: Duration,
    },
    /// 500: a bug; the cause is logged, never sent.
    #[error("internal error: {0}")]
    Internal(#[source] anyhow::Error),
}

/// The rendered form of an error, left in the response extensions so the
/// `error_envelope` middleware can add the request id.
#[derive(Debug, Clone)]
pub struct ErrorReport {
    /// Status code.
    pub status: StatusCode,
    /// The error body without its request id.
    pub body: ErrorBody,
}

impl ApiError {
    /// 404 for `what` (e.g. `"user"`).
    pub fn not_found(what: &str) -> Self {
        Self::NotFound(what.to_owned())
    }

    /// 400 naming `field`.
    pub fn invalid(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self::InvalidInput {
            field: Some(field.into()),
            message: message.into(),
        }
    }

    /// 422 naming `field`.
    pub fn validation(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self::Validation {
            field: field.into(),
            message: message.into(),
        }
    }

    /// 403 with a reason.
    pub fn forbidden(message: impl Into<String>) -> Self {
        Self::Forbidden(message.into())
    }

    /// 503 because the database cannot be reached.
    pub fn database_unavailable() -> Self {
        Self::Unavailable {
            message: "the database is unavailable; retry shortly".into(),
            retry_after: DEFAULT_RETRY_AFTER,
        }
    }

    /// The status code: the single mapping from error to HTTP.
    pub fn status(&self) -> StatusCode {
        match self {
            Self::InvalidInput { .. } => StatusCode::BAD_REQUEST,
            Self::Unauthorized(_) => StatusCode::UNAUTHORIZED,
            Self::Forbidden(_) => StatusCode::FORBIDDEN,
            Self::NotFound(_) => StatusCode::NOT_FOUND,
            Self::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            Self::Conflict(_) => StatusCode::CONFLICT,
            Self::PayloadTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            Self::UnsupportedMediaType(_) => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            Self::Validation { .. } => StatusCode::UNPROCESSABLE_ENTITY,
            Self::Unavailable { .. } => StatusCode::SERVICE_UNAVAILABLE,
            Self::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// The stable machine-readable code.
    pub fn code(&self) -> &'static str {
        match self {
            Self::InvalidInput { .. } => "invalid_input",
            Self::Unauthorized(_) => "unauthorized",
            Self::Forbidden(_) => "forbidden",
            Self::NotFound(_) => "not_found",
            Self::MethodNotAllowed => "method_not_allowed",
            Self::Conflict(_) => "conflict",
            Self::PayloadTooLarge => "payload_too_large",
            Self::UnsupportedMediaType(_) => "unsupported_media_type",
            Self::Validation { .. } => "validation_failed",
            Self::Unavailable { .. } => "unavailable",
            Self::Internal(_) => "internal",
        }
    }

    /// The error a bare status stands for, for responses made by axum or tower
    /// layers (405 from the router, 413 from the body limit, …).
    pub fn from_status(status: StatusCode) -> Self {
        match status {
            StatusCode::BAD_REQUEST => Self::InvalidInput {
                field: None,
                message: "the request is malformed".into(),
            },
            StatusCode::UNAUTHORIZED => Self::Unauthorized("authentication required".into()),
            StatusCode::FORBIDDEN => Self::forbidden("not allowed"),
            StatusCode::NOT_FOUND => Self::not_found("route"),
            StatusCode::METHOD_NOT_ALLOWED => Self::MethodNotAllowed,
            StatusCode::PAYLOAD_TOO_LARGE => Self::PayloadTooLarge,
            StatusCode::UNSUPPORTED_MEDIA_TYPE => {
                Self::UnsupportedMediaType("unsupported media type".into())
            }
            StatusCode::REQUEST_TIMEOUT | StatusCode::SERVICE_UNAVAILABLE => Self::Unavailable {
                message: "the service is unavailable; retry shortly".into(),
                retry_after: DEFAULT_RETRY_AFTER,
            },
            _ => Self::Internal(anyhow::anyhow!("unexpected status {status}")),
        }
    }

    /// The report rendered into the envelope (without request id).
    pub fn report(&self) -> ErrorReport {
        let message = match self {
            // Never leak the cause of an internal error.
            Self::Internal(_) => "internal server error".to_owned(),
            other => other.to_string(),
        };
        let field = match self {
            Self::InvalidInput { field, .. } => field.clone(),
            Self::Validation { field, .. } => Some(field.clone()),
            _ => None,
        };
        let retry_after = match self {
            Self::Unavailable { retry_after, .. } => Some(retry_after.as_secs().max(1)),
            _ => None,
        };
        ErrorReport {
            status: self.status(),
            body: ErrorBody {
                code: self.code().to_owned(),
                message,
                request_id: String::new(),
                field,
                retry_after,
            },
        }
    }
}

impl ErrorReport {
    /// The final response: the envelope with `request_id`, plus `Retry-After`
    /// for 503 and `WWW-Authenticate` for 401.
    pub fn into_response_with_id(mut self, request_id: &str) -> Response {
        self.body.request_id = request_id.to_owned();
        let retry_after = self.body.retry_after;
        let status = self.status;
        let mut response = (
            status,
            Json(ErrorEnvelope {
                success: false,
                error: self.body,
            }),
        )
            .into_response();
        if let Some(seconds) = retry_after {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(seconds));
        }
        if status == StatusCode::UNAUTHORIZED {
            response
                .headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        response
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        match &self {
            Self::Internal(cause) => tracing::error!(error = ?cause, "internal error"),
            Self::Unavailable { message, .. } => tracing::warn!(%message, "answering 503"),
            _ => {}
        }
        let report = self.report();
        let mut response = report.clone().into_response_with_id("");
        response.extensions_mut().insert(report);
        response
    }
}

impl From<sqlx::Error> for ApiError {
    fn from(error: sqlx::Error) -> Self {
        if is_unavailable(&error) {
            tracing::warn!(error = %error, "database unavailable");
            return Self::database_unavailable();
        }
        Self::Internal(anyhow::Error::new(error).context("database query failed"))
    }
}

/// Whether a database error means "unreachable or not accepting work" (503)
/// rather than a bug (500).
pub fn is_unavailable(error: &sqlx::Error) -> bool {
    match error {
        sqlx::Error::PoolTimedOut
        | sqlx::Error::PoolClosed
        | sqlx::Error::Io(_)
        | sqlx::Error::Tls(_)
        | sqlx::Error::WorkerCrashed => true,
        sqlx::Error::Protocol(_) => true,
        sqlx::Error::Database(db) => db.code().is_some_and(|code| {
            // Class 08: connection exception; 57P01-57P03: shutdown / cannot
            // connect now; 53300: too many connections.
            code.starts_with("08") || matches!(&*code, "57P01" | "57P02" | "57P03" | "53300")
        }),
        _ => false,
    }
}

/// Whether a database error is a unique-constraint violation on `constraint`.
pub fn is_unique_violation(error: &sqlx::Error, constraint: &str) -> bool {
    match error {
        sqlx::Error::Database(db) => {
            db.is_unique_violation() && db.constraint().is_some_and(|c| c == constraint)
        }
        _ => false,
    }
}
