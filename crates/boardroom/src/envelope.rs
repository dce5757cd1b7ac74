//! The JSON envelope every response body uses.
//!
//! Success: `{"success": true, "data": …}`; failure:
//! `{"success": false, "error": {"code", "message", "requestId"}}` (built by
//! [`crate::error`]).
//!
//! ```
//! use boardroom::envelope::Envelope;
//! let body = serde_json::to_value(Envelope::new(42)).unwrap();
//! assert_eq!(body, serde_json::json!({"success": true, "data": 42}));
//! ```

use axum::{
    Json,
    http::StatusCode,
    response::{IntoResponse, Response},
};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// A successful response: `{"success": true, "data": …}`.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct Envelope<T> {
    /// Always `true`.
    pub success: bool,
    /// The payload.
    pub data: T,
}

impl<T> Envelope<T> {
    /// Wraps `data`.
    pub fn new(data: T) -> Self {
        Self {
            success: true,
            data,
        }
    }
}

/// A failed response: `{"success": false, "error": {…}}`.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct ErrorEnvelope {
    /// Always `false`.
    pub success: bool,
    /// What went wrong.
    pub error: ErrorBody,
}

/// The error object of [`ErrorEnvelope`].
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ErrorBody {
    /// Stable machine-readable code, e.g. `invalid_input`, `not_found`.
    pub code: String,
    /// Human-readable explanation (never database error text).
    pub message: String,
    /// The request's `x-request-id`.
    pub request_id: String,
    /// The offending field or parameter, when there is one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub field: Option<String>,
    /// Seconds to wait before retrying (also in the `Retry-After` header), for `503`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub retry_after: Option<u64>,
}

/// `200 OK` with `data` in the envelope.
pub fn ok<T: Serialize>(data: T) -> Response {
    (StatusCode::OK, Json(Envelope::new(data))).into_response()
}

/// `201 Created` with `data` in the envelope.
pub fn created<T: Serialize>(data: T) -> Response {
    (StatusCode::CREATED, Json(Envelope::new(data))).into_response()
}
