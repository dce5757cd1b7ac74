//! A concurrency limit with a bounded wait queue and a maximum wait.
//!
//! [`ConcurrencyLimitLayer`] → [`ConcurrencyLimit`] → [`ResponseFuture`].
//! At most `max_concurrent` calls run at once. A call that finds no free
//! permit waits in a queue of at most `max_queue` calls; when the queue is
//! full it is rejected at once with [`QueueFull`], and when it waits longer
//! than `queue_timeout` it is rejected with [`QueueTimeout`]. Both carry a
//! `retry_after()` (the HTTP edge answers `503` with `Retry-After`).
//!
//! The wait happens inside the response future, because axum treats route
//! services as always ready: `poll_ready` only forwards to the inner service.
//! The permit is a field of the future, so a call that completes, fails or is
//! dropped (while running or while queued) frees its permit and its place.
//!
//! With `adaptive` set, the limit moves between `min_concurrent` and
//! `max_concurrent` (AIMD): a failure or a call slower than `latency_target`
//! multiplies it by `backoff_ratio`, a timely success of a well-used limit
//! adds one.
//!
//! The shared state is created by [`ConcurrencyLimitLayer::new`], so every
//! service the layer wraps shares one limit; [`ConcurrencyHandle`] reads its
//! statistics. Prometheus series (label `name`):
//! `resilience_concurrency_in_flight`, `_queued`, `_limit` (gauges),
//! `_admitted_total`, `_rejected_total{reason=queue_full|queue_timeout}`,
//! `_wait_seconds` (histogram of the calls that had to wait).
//!
//! ```
//! use std::time::Duration;
//! use resilience::concurrency::{ConcurrencyConfig, ConcurrencyLimitLayer, QueueFull};
//! use tower::{Layer, Service, ServiceExt, service_fn};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), resilience::BoxError> {
//! let layer = ConcurrencyLimitLayer::new(
//!     "reports",
//!     ConcurrencyConfig {
//!         max_concurrent: 1,
//!         max_queue: 0,
//!         queue_timeout: Duration::from_millis(100),
//!         adaptive: None,
//!     },
//! )?;
//! let handle = layer.handle();
//! let (release, gate) = tokio::sync::oneshot::channel::<()>();
//! let gate = std::sync::Arc::new(tokio::sync::Mutex::new(Some(gate)));
//! let mut service = layer.layer(service_fn(move |n: u32| {
//!     let gate = gate.clone();
//!     async move {
//!         // The first call waits until released; the others pass at once.
//!         if let Some(gate) = gate.lock().await.take() {
//!             let _ = gate.await;
//!         }
//!         Ok::<_, std::convert::Infallible>(n * 2)
//!     }
//! }));
//!
//! let first = service.ready().await?.call(1);
//! let first = tokio::spawn(first);
//! tokio::task::yield_now().await;
//! assert_eq!(handle.in_flight(), 1);
//!
//! // No permit and no queue: rejected at once.
//! let error = service.ready().await?.call(2).await.unwrap_err();
//! let full = error.downcast_ref::<QueueFull>().expect("a QueueFull");
//! assert!(full.retry_after() >= Duration::from_secs(1));
//!
//! release.send(()).unwrap();
//! assert_eq!(first.await.unwrap()?, 2);
//! assert_eq!(service.ready().await?.call(3).await?, 6);
//! assert_eq!(handle.snapshot().rejected_queue_full, 1);
//! # Ok(())
//! # }
//! ```

mod config;
mod error;
mod future;
mod handle;
mod layer;
mod limiter;
mod service;
mod stats;

pub use self::{
    config::{AdaptiveConfig, ConcurrencyConfig},
    error::{QueueFull, QueueTimeout},
    future::ResponseFuture,
    handle::ConcurrencyHandle,
    layer::ConcurrencyLimitLayer,
    service::ConcurrencyLimit,
    stats::{ConcurrencySnapshot, WaitBucket, WaitSnapshot},
};
pub use crate::ConfigError;

/// Registers the HELP text of this module's series with the installed
/// recorder; called by `crate::metrics::describe_all`.
#[allow(dead_code, reason = "called by crate::metrics::describe_all")]
pub(crate) fn describe() {
    use self::stats::{ADMITTED, IN_FLIGHT, LIMIT, QUEUED, REJECTED, WAIT};
    metrics::describe_gauge!(IN_FLIGHT, "Calls currently holding a concurrency permit.");
    metrics::describe_gauge!(QUEUED, "Calls currently waiting for a concurrency permit.");
    metrics::describe_gauge!(LIMIT, "Current concurrency limit (moves when adaptive).");
    metrics::describe_counter!(ADMITTED, "Calls that got a concurrency permit.");
    metrics::describe_counter!(
        REJECTED,
        "Calls rejected by the concurrency limit, by reason (queue_full, queue_timeout)."
    );
    metrics::describe_histogram!(
        WAIT,
        metrics::Unit::Seconds,
        "Time spent in the wait queue by calls that had to wait for a permit."
    );
}

#[cfg(test)]
mod tests {
    #[test]
    fn every_series_has_help_text() {
        crate::metrics::assert_help_text(
            "resilience_concurrency_",
            &[
                "in_flight",
                "queued",
                "limit",
                "admitted_total",
                "rejected_total",
            ],
            super::describe,
            || {
                let _layer = super::ConcurrencyLimitLayer::new("help", Default::default());
            },
        );
    }
}
