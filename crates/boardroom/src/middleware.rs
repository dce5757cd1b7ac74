//! Every middleware of the service, applied in one place ([`apply`]), one
//! commented line each.
//!
//! Outermost first: request id → trace span → metrics → error envelope →
//! panic catcher → request timeout → body limits → the route.

use std::time::Duration;

use axum::{
    Router,
    body::Body,
    extract::{DefaultBodyLimit, Request, State},
    http::{HeaderName, Method, Response as HttpResponse, Uri, header},
    middleware::{Next, from_fn, from_fn_with_state},
    response::{IntoResponse, Response},
};
use tower::ServiceBuilder;
use tower_http::{
    catch_panic::CatchPanicLayer,
    limit::RequestBodyLimitLayer,
    request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer},
    trace::{DefaultOnFailure, DefaultOnResponse, TraceLayer},
};
use tracing::Level;

use crate::{
    config::Settings,
    error::{ApiError, ErrorReport},
    ops,
    state::AppState,
};

/// The request id header, set when absent and echoed on every response.
pub const REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// Wraps every route (and the fallback) of `router` in the service's middleware.
pub fn apply(router: Router<AppState>, settings: &Settings) -> Router<AppState> {
    router.layer(
        ServiceBuilder::new()
            // A uuid `x-request-id` unless the client sent one.
            .layer(SetRequestIdLayer::new(REQUEST_ID, MakeRequestUuid))
            // Echo it on every response.
            .layer(PropagateRequestIdLayer::new(REQUEST_ID))
            // One span per request carrying the request id, so every log line has it.
            .layer(
                TraceLayer::new_for_http()
                    .make_span_with(request_span)
                    .on_response(DefaultOnResponse::new().level(Level::INFO))
                    .on_failure(DefaultOnFailure::new().level(Level::ERROR)),
            )
            // RED metrics labelled by the matched route template.
            .layer(from_fn(ops::metrics::track))
            // Every error (ours or axum's plain-text ones) becomes the envelope.
            .layer(from_fn(error_envelope))
            // A panicking handler becomes a logged 500; the process lives on.
            .layer(CatchPanicLayer::custom(panic_response))
            // Requests slower than server.request_timeout get a 503.
            .layer(from_fn_with_state(
                settings.server.request_timeout,
                request_timeout,
            ))
            // Bodies over the largest limit any route accepts are refused by
            // Content-Length up front (bulk routes take up to jobs.max_body and
            // read their body themselves)…
            .layer(RequestBodyLimitLayer::new(
                settings
                    .server
                    .body_limit
                    .max(settings.jobs.max_body)
                    .max(crate::assets::upload_body_limit(settings)),
            ))
            // …and while streaming, by the extractors.
            .layer(DefaultBodyLimit::max(settings.server.body_limit)),
    )
}

fn request_span(request: &Request<Body>) -> tracing::Span {
    let request_id = request
        .headers()
        .get(REQUEST_ID)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    tracing::info_span!(
        "request",
        method = %request.method(),
        path = %request.uri().path(),
        request_id = %request_id,
    )
}

/// Renders [`ErrorReport`]s with the request id, and turns error responses
/// that are not JSON (axum's 405, the body limit's 413, …) into the envelope.
async fn error_envelope(request: Request, next: Next) -> Response {
    let request_id = request
        .headers()
        .get(REQUEST_ID)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    let mut response = next.run(request).await;
    if let Some(report) = response.extensions_mut().remove::<ErrorReport>() {
        return keep_headers(report.into_response_with_id(&request_id), &response);
    }
    let status = response.status();
    if (status.is_client_error() || status.is_server_error()) && !is_json(&response) {
        let report = ApiError::from_status(status).report();
        return keep_headers(report.into_response_with_id(&request_id), &response);
    }
    response
}

/// Carries headers such as `Allow` (405) over from the original response.
fn keep_headers(mut rendered: Response, original: &Response) -> Response {
    for (name, value) in original.headers() {
        if name != header::CONTENT_TYPE
            && name != header::CONTENT_LENGTH
            && !rendered.headers().contains_key(name)
        {
            rendered.headers_mut().insert(name.clone(), value.clone());
        }
    }
    rendered
}

fn is_json<B>(response: &HttpResponse<B>) -> bool {
    response
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"))
}

fn panic_response(panic: Box<dyn std::any::Any + Send + 'static>) -> Response {
    let message = panic
        .downcast_ref::<&str>()
        .map(|s| (*s).to_owned())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "unknown panic payload".to_owned());
    tracing::error!(panic = %message, "a handler panicked");
    let report = ApiError::Internal(anyhow::anyhow!("handler panicked")).report();
    let mut response = report.clone().into_response_with_id("");
    response.extensions_mut().insert(report);
    response
}

async fn request_timeout(State(limit): State<Duration>, request: Request, next: Next) -> Response {
    match tokio::time::timeout(limit, next.run(request)).await {
        Ok(response) => response,
        Err(_) => ApiError::Unavailable {
            message: format!(
                "the request took longer than {}",
                humantime::format_duration(limit)
            ),
            retry_after: Duration::from_secs(1),
        }
        .into_response(),
    }
}

/// The fallback for unknown routes: a `404` envelope naming the route.
pub async fn fallback(method: Method, uri: Uri) -> ApiError {
    ApiError::NotFound(format!("route {method} {}", uri.path()))
}
