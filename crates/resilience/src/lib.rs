//! Resilience layers for any [`tower::Service`]: a circuit breaker, a
//! concurrency limit with a bounded wait queue, retries with backoff and a
//! budget, a tagged single-flight cache, RED metrics and performance budgets.
//!
//! Each layer lives in its own module and is named in threes, as tower does:
//! `BreakerLayer` builds `Breaker<S>`, whose calls return a
//! `breaker::ResponseFuture`. Every layer's shared state is created when the
//! layer is built, so `Layer::layer` may be called any number of times (axum
//! does) and every copy shares one state. [`stack`] composes the layers for
//! a named service from one config value; [`registry`] holds every named
//! handle for stats, health and admin actions.
//!
//! # Time, and the `test-util` feature
//!
//! On their hot paths (a breaker's window, a measured call's duration, a
//! cache entry's freshness) the layers read the CPU's time-stamp counter, a
//! few times cheaper than `Instant::now()`. Tests that pause tokio's clock
//! (`tokio::time::pause`, `#[tokio::test(start_paused = true)]`) must enable
//! this crate's `test-util` feature (it turns on tokio's too): the layers
//! then read tokio's clock and follow `advance`. Retry backoff, queue and
//! call timeouts always use tokio's timers.
#![forbid(unsafe_code)]

pub mod breaker;
pub mod budget;
pub mod cache;
pub mod classify;
mod clock;
pub mod concurrency;
mod config;
pub mod metrics;
pub mod registry;
pub mod retry;
pub mod stack;

/// Every layer's config validation returns this one type; each layer module
/// re-exports it as its own `ConfigError` too.
pub use config::ConfigError;

/// The error type every layer here returns: the inner service's error, or one
/// of the layer's own (downcast to find which).
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;
