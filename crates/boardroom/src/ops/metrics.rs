//! HTTP metrics and `GET /metrics` in the Prometheus text format.
//!
//! One recorder is installed per process ([`recorder`] is idempotent: tests
//! start many applications in one process and all share it). Requests are
//! labelled by the matched route template (`/v1/users/{id}`), never the raw
//! path, so label cardinality stays bounded; requests no route matched are
//! labelled `route="unmatched"`.
//!
//! | metric | type | labels |
//! |---|---|---|
//! | `http_server_request_duration_seconds` | histogram | method, route, status |
//! | `http_server_requests_total` | counter | method, route, status |
//! | `http_server_active_requests` | gauge | method, route |
//!
//! ```
//! let handle = boardroom::ops::metrics::recorder();
//! let again = boardroom::ops::metrics::recorder();
//! metrics::counter!("http_server_requests_total", "method" => "GET", "route" => "/x", "status" => "200").increment(1);
//! assert!(again.render().contains("http_server_requests_total"));
//! # drop(handle);
//! ```

use std::{sync::OnceLock, time::Instant};

use axum::{
    extract::{MatchedPath, Request, State},
    http::{HeaderValue, header},
    middleware::Next,
    response::{IntoResponse, Response},
};
use metrics::{Unit, describe_counter, describe_gauge, describe_histogram};
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};

use crate::state::AppState;

const DURATION: &str = "http_server_request_duration_seconds";
const REQUESTS: &str = "http_server_requests_total";
const ACTIVE: &str = "http_server_active_requests";

/// Latency buckets in seconds, from 1 ms to 10 s.
const BUCKETS: &[f64] = &[
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();

/// Installs the process-wide Prometheus recorder on first call and returns a
/// handle to it (the same one on every call).
pub fn recorder() -> PrometheusHandle {
    HANDLE
        .get_or_init(|| {
            // Every histogram (HTTP and the resilience layers') gets the same
            // buckets, so `histogram_quantile` works on all of them.
            let builder = PrometheusBuilder::new()
                .set_buckets(BUCKETS)
                .expect("the bucket list is not empty");
            let handle = match builder.install_recorder() {
                Ok(handle) => handle,
                Err(error) => {
                    // Another recorder owns the process (an embedding program):
                    // keep serving an empty registry rather than failing.
                    tracing::warn!(%error, "a metrics recorder is already installed");
                    PrometheusBuilder::new().build_recorder().handle()
                }
            };
            describe();
            resilience::metrics::describe_all();
            super::health::describe();
            super::alerts::describe();
            crate::users::activity::describe();
            crate::notifications::describe();
            handle
        })
        .clone()
}

/// Dead letters per background queue: the jobs module increments it when a job
/// exhausts its retries (alerted on by `config/prometheus/alerts.yml`).
pub const DEAD_LETTERS: &str = "boardroom_dead_letters_total";

/// The durable background queues, each with a `queue` label on [`DEAD_LETTERS`].
pub const QUEUES: &[&str] = &["jobs", "notifications"];

/// HELP texts and units for every metric this module records.
fn describe() {
    describe_counter!(
        DEAD_LETTERS,
        Unit::Count,
        "Background jobs moved to the dead-letter state after exhausting their retries, by queue."
    );
    for queue in QUEUES {
        metrics::counter!(DEAD_LETTERS, "queue" => *queue).increment(0);
    }
    describe_histogram!(
        DURATION,
        Unit::Seconds,
        "Duration of HTTP requests, by method, route template and status."
    );
    describe_counter!(
        REQUESTS,
        Unit::Count,
        "HTTP requests answered, by method, route template and status."
    );
    describe_gauge!(
        ACTIVE,
        Unit::Count,
        "HTTP requests in flight, by method and route template."
    );
}

/// Middleware: records duration, count and in-flight requests.
pub async fn track(request: Request, next: Next) -> Response {
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| "unmatched".to_owned(), |path| path.as_str().to_owned());
    let method = method_label(request.method());
    let active =
        InFlight::start(metrics::gauge!(ACTIVE, "method" => method, "route" => route.clone()));
    let started = Instant::now();
    let response = next.run(request).await;
    drop(active);
    let status = response.status().as_u16().to_string();
    let labels = [
        ("method", method.to_owned()),
        ("route", route),
        ("status", status),
    ];
    metrics::histogram!(DURATION, &labels).record(started.elapsed().as_secs_f64());
    metrics::counter!(REQUESTS, &labels).increment(1);
    response
}

/// Known methods keep their name; anything else is `other`, to bound cardinality.
fn method_label(method: &axum::http::Method) -> &'static str {
    use axum::http::Method;
    match *method {
        Method::GET => "GET",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::PATCH => "PATCH",
        Method::DELETE => "DELETE",
        Method::HEAD => "HEAD",
        Method::OPTIONS => "OPTIONS",
        _ => "other",
    }
}

/// Decrements the in-flight gauge even when the request future is dropped.
struct InFlight(metrics::Gauge);

impl InFlight {
    fn start(gauge: metrics::Gauge) -> Self {
        gauge.increment(1.0);
        Self(gauge)
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.decrement(1.0);
    }
}

/// `GET /metrics`: the Prometheus text exposition.
#[utoipa::path(
    get,
    path = "/metrics",
    tag = "operations",
    responses((status = 200, description = "Prometheus text format (version 0.0.4)", body = String, content_type = "text/plain"))
)]
pub async fn metrics(State(state): State<AppState>) -> Response {
    (
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
        )],
        state.metrics.render(),
    )
        .into_response()
}
