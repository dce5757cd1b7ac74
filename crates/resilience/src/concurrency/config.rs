//! Configuration of the concurrency limit, as read from TOML.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::ConfigError;
use crate::config::invalid;

/// Configuration of a [`ConcurrencyLimitLayer`](super::ConcurrencyLimitLayer).
///
/// ```toml
/// max_concurrent = 64
/// max_queue = 128
/// queue_timeout = "5s"
/// [adaptive]
/// min_concurrent = 4
/// max_concurrent = 256
/// latency_target = "250ms"
/// ```
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ConcurrencyConfig {
    /// How many calls may run at once (the starting limit when `adaptive` is set).
    pub max_concurrent: usize,
    /// How many calls may wait for a permit; one more is rejected at once with
    /// [`QueueFull`](super::QueueFull). Zero means no queue.
    pub max_queue: usize,
    /// The longest a call waits in the queue before it is rejected with
    /// [`QueueTimeout`](super::QueueTimeout).
    #[serde(with = "humantime_serde")]
    pub queue_timeout: Duration,
    /// Move the limit between bounds from observed latency and failures (AIMD).
    pub adaptive: Option<AdaptiveConfig>,
}

impl Default for ConcurrencyConfig {
    fn default() -> Self {
        Self {
            max_concurrent: 64,
            max_queue: 128,
            queue_timeout: Duration::from_secs(5),
            adaptive: None,
        }
    }
}

/// An additive-increase, multiplicative-decrease limit: a call slower than
/// `latency_target`, or failing, multiplies the limit by `backoff_ratio`; a
/// call that succeeds in time while the limit was at least half used adds one.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AdaptiveConfig {
    /// The limit never goes below this.
    pub min_concurrent: usize,
    /// The limit never goes above this.
    pub max_concurrent: usize,
    /// Calls slower than this count as a sign of overload.
    #[serde(with = "humantime_serde")]
    pub latency_target: Duration,
    /// Factor applied to the limit on overload, in `(0, 1)`.
    pub backoff_ratio: f64,
}

impl Default for AdaptiveConfig {
    fn default() -> Self {
        Self {
            min_concurrent: 4,
            max_concurrent: 256,
            latency_target: Duration::from_millis(250),
            backoff_ratio: 0.9,
        }
    }
}

/// Tokio's semaphore cannot hold more permits than this.
const MAX_PERMITS: usize = tokio::sync::Semaphore::MAX_PERMITS;

impl ConcurrencyConfig {
    /// Checks every field; the first bad one is named in the error.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.max_concurrent == 0 || self.max_concurrent > MAX_PERMITS {
            return invalid(
                "max_concurrent",
                format!("must be in 1..={MAX_PERMITS} (got {})", self.max_concurrent),
            );
        }
        if self.max_queue > 0 && self.queue_timeout.is_zero() {
            return invalid(
                "queue_timeout",
                "must be above zero when max_queue is above zero",
            );
        }
        if let Some(adaptive) = &self.adaptive {
            if adaptive.min_concurrent == 0 {
                return invalid("adaptive.min_concurrent", "must be at least 1 (got 0)");
            }
            if adaptive.max_concurrent > MAX_PERMITS {
                return invalid(
                    "adaptive.max_concurrent",
                    format!(
                        "must be at most {MAX_PERMITS} (got {})",
                        adaptive.max_concurrent
                    ),
                );
            }
            if !(adaptive.min_concurrent..=adaptive.max_concurrent).contains(&self.max_concurrent) {
                return invalid(
                    "max_concurrent",
                    format!(
                        "must lie within adaptive.min_concurrent..=adaptive.max_concurrent \
                         ({}..={}) (got {})",
                        adaptive.min_concurrent, adaptive.max_concurrent, self.max_concurrent
                    ),
                );
            }
            if adaptive.latency_target.is_zero() {
                return invalid("adaptive.latency_target", "must be above zero");
            }
            if !(adaptive.backoff_ratio > 0.0 && adaptive.backoff_ratio < 1.0) {
                return invalid(
                    "adaptive.backoff_ratio",
                    format!("must be in (0, 1) (got {})", adaptive.backoff_ratio),
                );
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid() {
        assert_eq!(ConcurrencyConfig::default().validate(), Ok(()));
        let adaptive = ConcurrencyConfig {
            adaptive: Some(AdaptiveConfig::default()),
            ..ConcurrencyConfig::default()
        };
        assert_eq!(adaptive.validate(), Ok(()));
    }

    #[test]
    fn bad_values_name_their_field() {
        let zero = ConcurrencyConfig {
            max_concurrent: 0,
            ..ConcurrencyConfig::default()
        };
        assert_eq!(zero.validate().unwrap_err().field(), "max_concurrent");
        let no_wait = ConcurrencyConfig {
            queue_timeout: Duration::ZERO,
            ..ConcurrencyConfig::default()
        };
        assert_eq!(no_wait.validate().unwrap_err().field(), "queue_timeout");
        let out_of_bounds = ConcurrencyConfig {
            max_concurrent: 1000,
            adaptive: Some(AdaptiveConfig::default()),
            ..ConcurrencyConfig::default()
        };
        assert_eq!(
            out_of_bounds.validate().unwrap_err().field(),
            "max_concurrent"
        );
        let ratio = ConcurrencyConfig {
            adaptive: Some(AdaptiveConfig {
                backoff_ratio: 1.0,
                ..AdaptiveConfig::default()
            }),
            ..ConcurrencyConfig::default()
        };
        assert_eq!(
            ratio.validate().unwrap_err().field(),
            "adaptive.backoff_ratio"
        );
    }

    #[test]
    fn reads_human_durations() {
        let config: ConcurrencyConfig = serde_json::from_str(
            r#"{"max_concurrent": 8, "queue_timeout": "250ms", "adaptive": {"latency_target": "1s"}}"#,
        )
        .unwrap();
        assert_eq!(config.max_concurrent, 8);
        assert_eq!(config.max_queue, 128);
        assert_eq!(config.queue_timeout, Duration::from_millis(250));
        assert_eq!(
            config.adaptive.unwrap().latency_target,
            Duration::from_secs(1)
        );
        let unknown = serde_json::from_str::<ConcurrencyConfig>(r#"{"max_concurent": 8}"#);
        assert!(unknown.is_err());
    }
}
