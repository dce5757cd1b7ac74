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
    let method = method_label(request.method());
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map_or("unmatched", MatchedPath::as_str);
    let handles = route_handles(method, route);
    let active = InFlight::start(handles.active.clone());
    let started = Instant::now();
    let response = next.run(request).await;
    drop(active);
    let (duration, requests) = handles.by_status(response.status().as_u16());
    duration.record(started.elapsed().as_secs_f64());
    requests.increment(1);
    response
}

/// The metric handles of one (method, route template): looking a labelled
/// metric up in the recorder hashes its name and labels and allocates the
/// label strings, three times a request; a handle is a shared pointer. The
/// set is bounded like the labels (route templates × methods × statuses).
struct RouteHandles {
    method: &'static str,
    route: Box<str>,
    active: metrics::Gauge,
    statuses: std::sync::RwLock<Vec<(u16, metrics::Histogram, metrics::Counter)>>,
}

impl RouteHandles {
    fn by_status(&self, status: u16) -> (metrics::Histogram, metrics::Counter) {
        let known = self
            .statuses
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .iter()
            .find(|(code, ..)| *code == status)
            .map(|(_, duration, requests)| (duration.clone(), requests.clone()));
        known.unwrap_or_else(|| {
            let labels = [
                ("method", self.method.to_owned()),
                ("route", self.route.to_string()),
                ("status", status.to_string()),
            ];
            let handles = (
                metrics::histogram!(DURATION, &labels),
                metrics::counter!(REQUESTS, &labels),
            );
            let mut statuses = self
                .statuses
                .write()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            if !statuses.iter().any(|(code, ..)| *code == status) {
                statuses.push((status, handles.0.clone(), handles.1.clone()));
            }
            handles
        })
    }
}

/// Route template → the handles of each method seen on it.
type HandleMap = std::collections::HashMap<Box<str>, Vec<std::sync::Arc<RouteHandles>>>;

/// The handles for `method` on `route`, made on first use. Before the
/// recorder is installed (it is, by [`recorder`], before the service serves)
/// handles are not kept, so none is ever bound to no recorder.
fn route_handles(method: &'static str, route: &str) -> std::sync::Arc<RouteHandles> {
    static HANDLES: OnceLock<std::sync::RwLock<HandleMap>> = OnceLock::new();
    let make = || {
        std::sync::Arc::new(RouteHandles {
            method,
            route: route.into(),
            active: metrics::gauge!(ACTIVE, "method" => method, "route" => route.to_owned()),
            statuses: std::sync::RwLock::new(Vec::new()),
        })
    };
    if HANDLE.get().is_none() {
        return make();
    }
    let map = HANDLES.get_or_init(Default::default);
    let found = map
        .read()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .get(route)
        .and_then(|methods| methods.iter().find(|h| h.method == method).cloned());
    found.unwrap_or_else(|| {
        let mut map = map
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let methods = map.entry(route.into()).or_default();
        if let Some(existing) = methods.iter().find(|h| h.method == method) {
            return std::sync::Arc::clone(existing);
        }
        let handles = make();
        methods.push(std::sync::Arc::clone(&handles));
        handles
    })
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
