//! The breaker's own errors: a rejected call and a bad config.

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

/// A config field with a value the breaker cannot use.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("invalid breaker config: `{field}` {allowed}")]
pub struct ConfigError {
    field: &'static str,
    allowed: &'static str,
}

impl ConfigError {
    pub(crate) fn new(field: &'static str, allowed: &'static str) -> Self {
        Self { field, allowed }
    }

    /// The config field at fault, as named in TOML (`failure_threshold`).
    pub fn field(&self) -> &'static str {
        self.field
    }

    /// What the field may hold.
    pub fn allowed(&self) -> &'static str {
        self.allowed
    }
}
