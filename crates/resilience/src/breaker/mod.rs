//! A circuit breaker: stop calling a service that keeps failing, and try it
//! again after a while with a few probe calls.
//!
//! [`BreakerLayer`] builds [`Breaker<S>`](Breaker) services whose calls return
//! a [`ResponseFuture`]; a [`BreakerHandle`] reads stats, lets an operator
//! reset / force open / disable the breaker, and runs any future under the
//! same rules (`handle.call(async { … })`).
//!
//! # Rules
//!
//! - **Closed**: calls pass; outcomes go into a rolling window of
//!   `monitoring_period` (ten time buckets, so old failures leave it). After
//!   each recorded outcome the opening rule of [`BreakerConfig`] is checked:
//!   at least `minimum_throughput` calls in the window, and failures ≥
//!   `failure_threshold` (or the failure rate ≥ `failure_rate_threshold`
//!   when set, or the slow-call rate ≥ `slow_call_rate_threshold` when set).
//! - **Open**: every call is refused at once with [`BreakerOpen`], whose
//!   `retry_after()` is the time until the next probe. After
//!   `reset_timeout` (doubling while probes fail, up to
//!   `reset_timeout_max` if set) the next call moves it to half-open.
//! - **Half-open**: at most `half_open_max_calls` probes are admitted in a
//!   round; the others are refused. Any probe failing reopens it; all of
//!   them succeeding closes it (with an empty window and the base timeout).
//!   A probe whose future is dropped unfinished gives its slot back and
//!   counts for nothing. When every slot is taken and the newest probe is
//!   older than `reset_timeout`, the outstanding probes are forgotten and a
//!   new round starts, so a probe that never answers cannot wedge it.
//! - **Forced open** and **disabled** are operator states (refuse all; pass
//!   all and count nothing), left only through [`BreakerHandle::reset`].
//!
//! Outcomes are judged by a [`Classifier`](crate::classify::Classifier)
//! (default: every `Err` is a failure). A call dropped before it finishes
//! counts for nothing; a call admitted in one state that finishes in another
//! is not counted either. `poll_ready` never waits on the breaker: see
//! [`Breaker`].
//!
//! # Metrics
//!
//! Labelled with the breaker's `name`: `resilience_breaker_state{state}`
//! (one-hot gauge), `resilience_breaker_transitions_total{from,to}`,
//! `resilience_breaker_calls_total{outcome}` (success, failure, rejected)
//! and the `resilience_breaker_recovery_seconds` histogram (left closed →
//! closed again).
//!
//! # Example
//!
//! ```
//! use std::time::Duration;
//!
//! use resilience::breaker::{BreakerConfig, BreakerLayer, BreakerOpen, BreakerState};
//! use tower::{Service, ServiceBuilder, ServiceExt, service_fn};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), resilience::BoxError> {
//! let layer = BreakerLayer::new(
//!     "inventory",
//!     BreakerConfig {
//!         failure_threshold: 2,
//!         minimum_throughput: 2,
//!         reset_timeout: Duration::from_secs(5),
//!         ..BreakerConfig::default()
//!     },
//! )?;
//! let handle = layer.handle();
//!
//! let mut service = ServiceBuilder::new()
//!     .layer(layer)
//!     .service(service_fn(|fail: bool| async move {
//!         if fail { Err("inventory is down") } else { Ok("ok") }
//!     }));
//!
//! assert_eq!(service.ready().await?.call(false).await?, "ok");
//! for _ in 0..2 {
//!     assert!(service.ready().await?.call(true).await.is_err());
//! }
//! assert_eq!(handle.state(), BreakerState::Open);
//!
//! // Refused at once, with the time until the next probe.
//! let error = service.ready().await?.call(false).await.unwrap_err();
//! let open = error.downcast_ref::<BreakerOpen>().expect("a breaker rejection");
//! assert!(open.retry_after() <= Duration::from_secs(5));
//!
//! // Any future can run under the same breaker.
//! let result = handle.call(async { Ok::<_, std::io::Error>(42) }).await;
//! assert!(result.unwrap_err().is::<BreakerOpen>());
//!
//! handle.reset();
//! assert_eq!(handle.call(async { Ok::<_, std::io::Error>(42) }).await?, 42);
//! # Ok(())
//! # }
//! ```

mod config;
mod error;
mod future;
mod handle;
mod layer;
mod service;
mod state;
mod window;

pub use crate::ConfigError;
pub use config::BreakerConfig;
pub use error::BreakerOpen;
pub use future::ResponseFuture;
pub use handle::{BreakerHandle, BreakerSnapshot};
pub use layer::BreakerLayer;
pub use service::Breaker;
pub use state::{BreakerState, Transition};

/// Describes the breaker's metrics (HELP text) to the installed recorder.
#[allow(dead_code)] // called by `crate::metrics::describe_all`, written by the metrics owner
pub(crate) fn describe() {
    metrics::describe_gauge!(
        "resilience_breaker_state",
        "Circuit breaker state, one-hot: 1 for the current state, 0 for the others"
    );
    metrics::describe_counter!(
        "resilience_breaker_transitions_total",
        "Circuit breaker state changes, by from and to state"
    );
    metrics::describe_counter!(
        "resilience_breaker_calls_total",
        "Calls through the circuit breaker, by outcome (success, failure, rejected)"
    );
    metrics::describe_histogram!(
        "resilience_breaker_recovery_seconds",
        metrics::Unit::Seconds,
        "Time from a circuit breaker opening to its closing again"
    );
}

#[cfg(test)]
mod tests {
    use metrics_util::debugging::DebuggingRecorder;

    use super::*;

    #[test]
    fn every_breaker_metric_is_described() {
        let recorder = DebuggingRecorder::new();
        let snapshotter = recorder.snapshotter();
        metrics::with_local_recorder(&recorder, || {
            describe();
            let _layer = BreakerLayer::new("described", BreakerConfig::default());
        });
        let snapshot = snapshotter.snapshot().into_vec();
        let names: std::collections::BTreeSet<_> = snapshot
            .iter()
            .map(|(key, _, description, _)| {
                assert!(description.is_some(), "{key:?} has no HELP text");
                key.key().name().to_owned()
            })
            .collect();
        assert_eq!(
            names.into_iter().collect::<Vec<_>>(),
            [
                "resilience_breaker_calls_total",
                "resilience_breaker_recovery_seconds",
                "resilience_breaker_state",
                "resilience_breaker_transitions_total",
            ]
        );
    }
}
