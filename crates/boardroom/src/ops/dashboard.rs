//! The live dashboard: `GET /dashboard` and its feed `GET /admin/stats/stream`.
//!
//! The page (HTML, script and style compiled into the binary from
//! `ops/dashboard/`, no external assets) holds no data: it asks for an
//! operator token, keeps it in `sessionStorage` only (a `#token=` fragment
//! is accepted once and removed from the address bar), and reads the stream
//! with `fetch` so the token travels in the `Authorization` header, never in
//! a URL. It draws one tile per service and dependency — breaker state in
//! colour, request and error rate, p50/p95/p99 with a sparkline of the last
//! minutes, in-flight and queue depth against their limits, cache hit rate
//! and entries, budget status — and the active alerts.
//!
//! The stream is Server-Sent Events: an `event: stats` with the same JSON as
//! `GET /admin/stats` (without the envelope) every `dashboard.stream_interval`
//! (≤ 1 s), the first at once. Operators only, like every admin route. It
//! ends when the server begins shutting down, so an open page never holds up
//! a graceful stop.
//!
//! ```
//! let (_router, api) = boardroom::ops::router().split_for_parts();
//! assert!(api.paths.paths.contains_key("/admin/stats/stream"));
//! assert!(api.paths.paths.contains_key("/dashboard"));
//! ```

use std::{convert::Infallible, time::Duration};

use axum::{
    Router,
    extract::State,
    http::{HeaderValue, header},
    response::{
        IntoResponse, Response,
        sse::{Event, KeepAlive, Sse},
    },
    routing::get,
};
use futures_util::{Stream, stream};

use super::admin::{Operator, stats};
use crate::state::AppState;

const PAGE: &str = include_str!("dashboard/index.html");
const SCRIPT: &str = include_str!("dashboard/app.js");
const STYLE: &str = include_str!("dashboard/style.css");

/// The page's script and style (not in the OpenAPI document: static assets).
pub fn assets() -> Router<AppState> {
    Router::new()
        .route("/dashboard/app.js", get(script))
        .route("/dashboard/style.css", get(style))
}

fn text(content_type: &'static str, body: &'static str) -> Response {
    (
        [
            (header::CONTENT_TYPE, HeaderValue::from_static(content_type)),
            (header::CACHE_CONTROL, HeaderValue::from_static("no-cache")),
            (
                header::CONTENT_SECURITY_POLICY,
                HeaderValue::from_static(
                    "default-src 'self'; img-src 'self' data:; frame-ancestors 'none'",
                ),
            ),
            (
                header::X_CONTENT_TYPE_OPTIONS,
                HeaderValue::from_static("nosniff"),
            ),
        ],
        body,
    )
        .into_response()
}

/// `GET /dashboard`: the live operations page (it asks for an operator token).
#[utoipa::path(
    get,
    path = "/dashboard",
    tag = "admin",
    responses((status = 200, description = "The dashboard page (its data comes from `/admin/stats/stream`, operators only)", body = String, content_type = "text/html"))
)]
pub async fn page() -> Response {
    text("text/html; charset=utf-8", PAGE)
}

async fn script() -> Response {
    text("text/javascript; charset=utf-8", SCRIPT)
}

async fn style() -> Response {
    text("text/css; charset=utf-8", STYLE)
}

/// `GET /admin/stats/stream`: `/admin/stats` as Server-Sent Events.
#[utoipa::path(
    get,
    path = "/admin/stats/stream",
    tag = "admin",
    security(("bearer" = [])),
    responses((status = 200, description = "`event: stats` with the `/admin/stats` data (no envelope) every `dashboard.stream_interval`, the first at once", body = String, content_type = "text/event-stream"))
)]
pub async fn stream_stats(
    State(state): State<AppState>,
    Operator(op): Operator,
) -> Sse<impl Stream<Item = Result<Event, Infallible>>> {
    tracing::info!(operator = %op.user_id, action = "stats.stream", "admin: dashboard stream opened");
    let interval = state.settings.dashboard.stream_interval;
    Sse::new(snapshots(state, interval))
        .keep_alive(KeepAlive::new().interval(Duration::from_secs(15)))
}

fn snapshots(state: AppState, interval: Duration) -> impl Stream<Item = Result<Event, Infallible>> {
    let mut tick = tokio::time::interval(interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let stopping = state.ops.stopping();
    stream::unfold(
        (state, tick, stopping),
        |(state, mut tick, mut stopping)| async move {
            tokio::select! {
                _ = tick.tick() => {}
                _ = stopping.wait_for(|stopping| *stopping) => return None,
            }
            let event = match Event::default().event("stats").json_data(stats(&state)) {
                Ok(event) => event,
                Err(error) => {
                    tracing::warn!(%error, "stats stream: snapshot not serializable");
                    Event::default().comment("snapshot unavailable")
                }
            };
            Some((Ok(event), (state, tick, stopping)))
        },
    )
}
