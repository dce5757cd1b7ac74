//! The breaker's own rejection: a call refused while the breaker is open.

use std::sync::Arc;
use std::time::Duration;

/// A call refused because the breaker is open (or forced open, or its
/// half-open probes are all taken).
///
/// Returned inside the layer's [`BoxError`](crate::BoxError); the HTTP edge
/// downcasts to it and answers `503` with `Retry-After`.
#[derive(Clone, Debug, thiserror::Error)]
#[error("circuit breaker '{name}' is open")]
pub struct BreakerOpen {
    name: Arc<str>,
    retry_after: Duration,
}

impl BreakerOpen {
    pub(crate) fn new(name: Arc<str>, retry_after: Duration) -> Self {
        Self { name, retry_after }
    }

    /// The breaker's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// How long until the breaker next admits a probe: the time a caller
    /// should wait before trying again.
    ///
    /// While forced open this is `reset_timeout` (a hint only: an operator
    /// decides); while every half-open probe is taken it is the time until
    /// the outstanding probes would be forgotten.
    pub fn retry_after(&self) -> Duration {
        self.retry_after
    }
}

impl crate::retry::RetryAfterHint for BreakerOpen {
    fn retry_after(&self) -> Duration {
        self.retry_after
    }
}
