//! Retries with backoff, jitter and a budget, built on `tower::retry`.
//!
//! [`RetryLayer`] → [`Retry`] → [`ResponseFuture`]. [`Retry`] is
//! `tower::retry::Retry` driven by this module's [`RetryPolicy`]; a failed
//! try is sent again when:
//!
//! - the [classifier](crate::classify) calls the failure retryable;
//! - the request may be replayed ([`Replay`]): any cloneable request by
//!   default ([`CloneRequest`]); for HTTP use [`IdempotentHttp`], which
//!   refuses `POST` and `PATCH` unless they carry an `Idempotency-Key`;
//! - fewer than `attempts` tries were made;
//! - the wait the callee asked for, if any — a `Retry-After` read by the
//!   classifier, or an error implementing [`RetryAfterHint`] such as a full
//!   queue or an open breaker — fits under `max_delay` (it is then waited
//!   instead of the backoff); a longer one gives up at once;
//! - the budget, shared by all copies of the service, allows it: over
//!   `budget.window`, retries may be at most `budget.ratio` of the calls plus
//!   `budget.min_per_second` per second.
//!
//! Otherwise the last result is returned as is. Delays follow `backoff`
//! (`exponential`, `linear` or `constant`) from `base_delay`, capped at
//! `max_delay`, with full jitter (a random wait in `[0, delay]`) when
//! `jitter` is set. The success path allocates nothing (the request is
//! cloned before the first try, as tower does, so a request whose clone
//! allocates pays for that).
//!
//! Prometheus series (label `name`): `resilience_retry_attempts_total`
//! (retries sent) and `resilience_retry_exhausted_total{reason}` with reason
//! `attempts`, `budget` or `retry_after_too_long`. [`RetryHandle`] gives the
//! same figures and the budget's state.
//!
//! ```
//! use std::{sync::{Arc, atomic::{AtomicU32, Ordering}}, time::Duration};
//! use resilience::retry::{Backoff, RetryConfig, RetryLayer};
//! use tower::{Layer, Service, ServiceExt, service_fn};
//!
//! # #[tokio::main(flavor = "current_thread", start_paused = true)]
//! # async fn main() -> Result<(), resilience::BoxError> {
//! let layer = RetryLayer::new(
//!     "inventory",
//!     RetryConfig {
//!         attempts: 3,
//!         backoff: Backoff::Exponential,
//!         base_delay: Duration::from_millis(100),
//!         max_delay: Duration::from_secs(2),
//!         jitter: false,
//!         ..RetryConfig::default()
//!     },
//! )?;
//! let handle = layer.handle();
//! let tries = Arc::new(AtomicU32::new(0));
//! let counter = tries.clone();
//! let mut service = layer.layer(service_fn(move |sku: &'static str| {
//!     let attempt = counter.fetch_add(1, Ordering::SeqCst) + 1;
//!     async move {
//!         if attempt < 3 { Err("flaky") } else { Ok(format!("{sku}: 7 in stock")) }
//!     }
//! }));
//!
//! let started = tokio::time::Instant::now();
//! let answer = service.ready().await?.call("A-1").await?;
//! assert_eq!(answer, "A-1: 7 in stock");
//! assert_eq!(tries.load(Ordering::SeqCst), 3);
//! // Waited 100 ms, then 200 ms.
//! assert_eq!(started.elapsed(), Duration::from_millis(300));
//! assert_eq!(handle.snapshot().retries, 2);
//! # Ok(())
//! # }
//! ```

mod budget;
mod config;
mod future;
mod handle;
mod hint;
mod layer;
mod policy;
mod replay;
mod service;
mod stats;

pub(crate) use self::hint::is_layer_rejection;
pub use self::{
    config::{Backoff, RetryBudgetConfig, RetryConfig},
    future::ResponseFuture,
    handle::RetryHandle,
    hint::RetryAfterHint,
    layer::RetryLayer,
    policy::RetryPolicy,
    replay::{CloneRequest, IDEMPOTENCY_KEY, IdempotentHttp, Replay, is_idempotent},
    service::Retry,
    stats::RetrySnapshot,
};
pub use crate::ConfigError;

/// Registers the HELP text of this module's series with the installed
/// recorder; called by `crate::metrics::describe_all`.
#[allow(dead_code, reason = "called by crate::metrics::describe_all")]
pub(crate) fn describe() {
    metrics::describe_counter!(
        stats::ATTEMPTS,
        "Retries sent by the retry layer (first tries not counted)."
    );
    metrics::describe_counter!(
        stats::EXHAUSTED,
        "Retryable failures returned without another try, by reason \
         (attempts, budget, retry_after_too_long)."
    );
}

#[cfg(test)]
mod tests {
    #[test]
    fn every_series_has_help_text() {
        crate::metrics::assert_help_text(
            "resilience_retry_",
            &["attempts_total", "exhausted_total"],
            super::describe,
            || {
                let _layer = super::RetryLayer::new("help", Default::default());
            },
        );
    }
}
