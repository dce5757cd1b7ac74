//! RED metrics for one named operation: rate, errors and duration.
//!
//! [`MetricsLayer`] wraps a service so that every call is measured twice:
//!
//! - through the [`metrics`](https://docs.rs/metrics) facade, for Prometheus:
//!   `resilience_operation_duration_seconds{name}` (histogram, seconds),
//!   `resilience_operation_requests_total{name,outcome}` (outcome is
//!   `success` or `failure`, judged by a [`crate::classify::Classifier`]) and
//!   `resilience_operation_in_flight{name}` (gauge, lowered when a call
//!   completes *and* when its future is dropped unfinished);
//! - in-process, over a sliding window (default the last 60 s), for
//!   `/admin/stats` and for performance [budgets](crate::budget): count, rate,
//!   error rate, mean, p50, p95, p99 and max — see [`OperationHandle::snapshot`].
//!
//! The metric handles are taken from the recorder installed when the layer is
//! *built*, so install the recorder (for example
//! `metrics_exporter_prometheus::PrometheusBuilder`) first. A call costs two
//! clock reads (the time-stamp counter, see the crate's `clock` module) and a
//! few relaxed atomic adds: no lock, no allocation.
//!
//! [`describe_all`] gives every metric of this crate its `# HELP` text.
//!
//! ```
//! use resilience::metrics::{MetricsConfig, MetricsLayer};
//! use tower::{Layer, ServiceExt, service_fn};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), resilience::BoxError> {
//! let layer = MetricsLayer::new("users.get", MetricsConfig::default())?;
//! let stats = layer.handle();
//! let service = layer.layer(service_fn(|id: u32| async move {
//!     if id == 0 { Err("no such user") } else { Ok(format!("user {id}")) }
//! }));
//!
//! assert_eq!(service.clone().oneshot(7).await?, "user 7");
//! assert!(service.oneshot(0).await.is_err());
//!
//! let snapshot = stats.snapshot();
//! assert_eq!((snapshot.count, snapshot.failures), (2, 1));
//! assert_eq!(snapshot.error_rate, 0.5);
//! assert_eq!(snapshot.in_flight, 0);
//! # Ok(())
//! # }
//! ```

mod config;
mod future;
mod handle;
mod layer;
mod service;
pub(crate) mod window;

pub use crate::ConfigError;
pub use config::MetricsConfig;
pub(crate) use config::validate_window;
pub use future::ResponseFuture;
pub(crate) use handle::{Anchor, Operation};
pub use handle::{OperationHandle, OperationSnapshot};
pub use layer::MetricsLayer;
pub use service::Metrics;

/// Gives every metric this crate records its `# HELP` text (Prometheus
/// requires one per metric family to pass `promtool check metrics`).
///
/// Call it once, after installing the recorder.
pub fn describe_all() {
    crate::breaker::describe();
    crate::concurrency::describe();
    crate::retry::describe();
    crate::cache::describe();
    describe();
    crate::budget::describe();
}

/// Describes the metrics layer's own metrics.
pub(crate) fn describe() {
    metrics::describe_histogram!(
        "resilience_operation_duration_seconds",
        "Duration of calls through the metrics layer, in seconds."
    );
    metrics::describe_counter!(
        "resilience_operation_requests_total",
        "Calls through the metrics layer, by outcome (success or failure)."
    );
    metrics::describe_gauge!(
        "resilience_operation_in_flight",
        "Calls through the metrics layer that have started and not yet ended."
    );
}

/// Asserts that after `describe` and `build` (which registers a layer's
/// series) every `{prefix}{name}` series has a `# HELP` line. Shared by the
/// layers' own unit tests.
#[cfg(test)]
pub(crate) fn assert_help_text(prefix: &str, names: &[&str], describe: fn(), build: impl FnOnce()) {
    let recorder = metrics_exporter_prometheus::PrometheusBuilder::new().build_recorder();
    let prometheus = recorder.handle();
    metrics::with_local_recorder(&recorder, || {
        describe();
        build();
    });
    let text = prometheus.render();
    for name in names {
        let help = format!("# HELP {prefix}{name} ");
        assert!(text.contains(&help), "no `{help}` in\n{text}");
    }
}
