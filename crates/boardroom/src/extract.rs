//! Extractors whose rejections use the error envelope and name the field.
//!
//! [`Json`], [`Path`] and [`Query`] wrap axum's extractors: a malformed body,
//! a wrong type, a bad UUID in the path or a bad query value is a `400` whose
//! `error.field` names the culprit; a non-JSON content type is a `415`; a body
//! over the limit a `413`.
//!
//! ```
//! # async fn demo() {
//! use axum::{body::Body, extract::FromRequest, http::Request};
//! use boardroom::extract::Json;
//!
//! let request = Request::post("/")
//!     .header("content-type", "application/json")
//!     .body(Body::from(r#"{"n": "three"}"#))
//!     .unwrap();
//! #[derive(serde::Deserialize)]
//! struct Body_ { n: u32 }
//! let rejection = Json::<Body_>::from_request(request, &()).await.err().unwrap();
//! assert_eq!(rejection.report().body.field.as_deref(), Some("n"));
//! # }
//! # tokio::runtime::Runtime::new().unwrap().block_on(demo());
//! ```

use axum::{
    body::Bytes,
    extract::{FromRequest, FromRequestParts, RawPathParams, Request, rejection::PathRejection},
    http::{HeaderMap, StatusCode, header, request::Parts},
};
use serde::de::DeserializeOwned;

use crate::error::ApiError;

/// A JSON request body; rejections are [`ApiError`]s.
#[derive(Debug, Clone, Copy, Default)]
pub struct Json<T>(pub T);

impl<S, T> FromRequest<S> for Json<T>
where
    S: Send + Sync,
    T: DeserializeOwned,
{
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        if !is_json(req.headers()) {
            return Err(ApiError::UnsupportedMediaType(
                "expected a body with `Content-Type: application/json`".into(),
            ));
        }
        let bytes = Bytes::from_request(req, state).await.map_err(|rejection| {
            if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
                ApiError::PayloadTooLarge
            } else {
                ApiError::InvalidInput {
                    field: None,
                    message: "could not read the request body".into(),
                }
            }
        })?;
        parse_json(&bytes).map(Json)
    }
}

/// Parses `bytes` as `T`, naming the field at fault when it fails.
pub fn parse_json<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    let mut deserializer = serde_json::Deserializer::from_slice(bytes);
    let value: T = serde_path_to_error::deserialize(&mut deserializer).map_err(|error| {
        let inner = error.inner();
        if inner.is_syntax() || inner.is_eof() {
            return ApiError::InvalidInput {
                field: None,
                message: format!("malformed JSON body: {inner}"),
            };
        }
        let path = error.path().to_string();
        let message = inner.to_string();
        let field = missing_field(&message)
            .map(|name| {
                if path == "." {
                    name.to_owned()
                } else {
                    format!("{path}.{name}")
                }
            })
            .unwrap_or(path);
        ApiError::InvalidInput {
            message: format!("invalid request body at `{field}`: {message}"),
            field: Some(field),
        }
    })?;
    deserializer.end().map_err(|error| ApiError::InvalidInput {
        field: None,
        message: format!("malformed JSON body: {error}"),
    })?;
    Ok(value)
}

fn missing_field(message: &str) -> Option<&str> {
    let rest = message.strip_prefix("missing field `")?;
    rest.split('`').next()
}

/// Whether the request says its body is JSON (`application/json` or `application/*+json`).
pub fn is_json(headers: &HeaderMap) -> bool {
    let Some(value) = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
    else {
        return false;
    };
    let mime = value
        .split(';')
        .next()
        .unwrap_or_default()
        .trim()
        .to_ascii_lowercase();
    mime == "application/json" || (mime.starts_with("application/") && mime.ends_with("+json"))
}

/// Path parameters; rejections name the parameter.
#[derive(Debug, Clone, Copy, Default)]
pub struct Path<T>(pub T);

impl<S, T> FromRequestParts<S> for Path<T>
where
    S: Send + Sync,
    T: DeserializeOwned + Send,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        match axum::extract::Path::<T>::from_request_parts(parts, state).await {
            Ok(axum::extract::Path(value)) => Ok(Path(value)),
            Err(rejection) => {
                let keyed = match &rejection {
                    PathRejection::FailedToDeserializePathParams(error) => match error.kind() {
                        axum::extract::path::ErrorKind::ParseErrorAtKey { key, .. }
                        | axum::extract::path::ErrorKind::InvalidUtf8InPathParam { key }
                        | axum::extract::path::ErrorKind::DeserializeError { key, .. } => {
                            Some(key.clone())
                        }
                        _ => None,
                    },
                    _ => None,
                };
                let field = match keyed {
                    Some(key) => key,
                    None => RawPathParams::from_request_parts(parts, state)
                        .await
                        .map(|params| {
                            params
                                .iter()
                                .map(|(name, _)| name.to_owned())
                                .collect::<Vec<_>>()
                                .join(",")
                        })
                        .unwrap_or_default(),
                };
                let detail = match &rejection {
                    PathRejection::FailedToDeserializePathParams(error) => error.kind().to_string(),
                    other => other.body_text(),
                };
                Err(ApiError::InvalidInput {
                    message: format!("invalid path parameter `{field}`: {detail}"),
                    field: Some(field),
                })
            }
        }
    }
}

/// Query parameters; rejections name the parameter.
#[derive(Debug, Clone, Copy, Default)]
pub struct Query<T>(pub T);

impl<S, T> FromRequestParts<S> for Query<T>
where
    S: Send + Sync,
    T: DeserializeOwned,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        match axum::extract::Query::<T>::try_from_uri(&parts.uri) {
            Ok(axum::extract::Query(value)) => Ok(Query(value)),
            Err(rejection) => {
                // axum formats this as "Failed to deserialize query string: <path>: <error>".
                let text = rejection.body_text();
                let detail = text
                    .split_once("query string: ")
                    .map(|(_, rest)| rest.to_owned())
                    .unwrap_or(text);
                let field = match detail.split_once(": ") {
                    Some((path, _)) if !path.contains(' ') => Some(path.to_owned()),
                    _ => missing_field(&detail).map(str::to_owned),
                };
                Err(ApiError::InvalidInput {
                    message: format!("invalid query string: {detail}"),
                    field,
                })
            }
        }
    }
}
