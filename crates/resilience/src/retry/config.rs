//! Configuration of the retry layer, as read from TOML.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::ConfigError;
use crate::config::invalid;

/// Configuration of a [`RetryLayer`](super::RetryLayer).
///
/// ```toml
/// attempts = 3
/// backoff = "exponential"
/// base_delay = "100ms"
/// max_delay = "5s"
/// jitter = true
/// [budget]
/// ratio = 0.2
/// min_per_second = 10
/// window = "10s"
/// ```
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RetryConfig {
    /// Total tries of one call, the first included: `1` never retries.
    pub attempts: u32,
    /// How the delay grows from one retry to the next.
    pub backoff: Backoff,
    /// The delay before the first retry.
    #[serde(with = "humantime_serde")]
    pub base_delay: Duration,
    /// No delay is longer; a `Retry-After` longer than this gives up at once.
    #[serde(with = "humantime_serde")]
    pub max_delay: Duration,
    /// Full jitter: wait a random time in `[0, delay]` instead of `delay`.
    pub jitter: bool,
    /// How many retries all copies of the service may send together.
    pub budget: RetryBudgetConfig,
}

impl Default for RetryConfig {
    fn default() -> Self {
        Self {
            attempts: 3,
            backoff: Backoff::Exponential,
            base_delay: Duration::from_millis(100),
            max_delay: Duration::from_secs(5),
            jitter: true,
            budget: RetryBudgetConfig::default(),
        }
    }
}

/// How the delay before retry number `n` (from 0) grows from `base_delay`;
/// always capped at `max_delay`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Backoff {
    /// `base_delay × 2ⁿ`.
    Exponential,
    /// `base_delay × (n + 1)`.
    Linear,
    /// `base_delay` every time.
    Constant,
}

impl Backoff {
    /// The delay before retry `retry` (0 for the first retry), without jitter.
    pub fn delay(self, retry: u32, base_delay: Duration, max_delay: Duration) -> Duration {
        let delay = match self {
            Backoff::Exponential => 2u32
                .checked_pow(retry)
                .and_then(|factor| base_delay.checked_mul(factor)),
            Backoff::Linear => retry
                .checked_add(1)
                .and_then(|factor| base_delay.checked_mul(factor)),
            Backoff::Constant => Some(base_delay),
        };
        delay.map_or(max_delay, |delay| delay.min(max_delay))
    }
}

/// Retries may be at most `ratio` of the calls made over `window`, plus
/// `min_per_second` (so a quiet service can still retry).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RetryBudgetConfig {
    /// Retries allowed per call, e.g. `0.2` for one retry per five calls.
    pub ratio: f64,
    /// Retries allowed per second on top of the ratio.
    pub min_per_second: u32,
    /// How far back calls and retries are counted.
    #[serde(with = "humantime_serde")]
    pub window: Duration,
}

impl Default for RetryBudgetConfig {
    fn default() -> Self {
        Self {
            ratio: 0.2,
            min_per_second: 10,
            window: Duration::from_secs(10),
        }
    }
}

impl RetryConfig {
    /// Checks every field; the first bad one is named in the error.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if !(1..=100).contains(&self.attempts) {
            return invalid(
                "attempts",
                format!("must be in 1..=100 (got {})", self.attempts),
            );
        }
        if self.base_delay > self.max_delay {
            return invalid(
                "base_delay",
                format!(
                    "must not exceed max_delay ({:?}) (got {:?})",
                    self.max_delay, self.base_delay
                ),
            );
        }
        let budget = &self.budget;
        if !(budget.ratio.is_finite() && (0.0..=1_000.0).contains(&budget.ratio)) {
            return invalid(
                "budget.ratio",
                format!("must be in 0..=1000 (got {})", budget.ratio),
            );
        }
        if budget.window < Duration::from_millis(10) || budget.window > Duration::from_secs(3_600) {
            return invalid(
                "budget.window",
                format!("must be between 10ms and 1h (got {:?})", budget.window),
            );
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_is_valid() {
        assert_eq!(RetryConfig::default().validate(), Ok(()));
    }

    #[test]
    fn bad_values_name_their_field() {
        let field = |config: RetryConfig| config.validate().unwrap_err().field();
        assert_eq!(
            field(RetryConfig {
                attempts: 0,
                ..RetryConfig::default()
            }),
            "attempts"
        );
        assert_eq!(
            field(RetryConfig {
                base_delay: Duration::from_secs(10),
                ..RetryConfig::default()
            }),
            "base_delay"
        );
        let mut config = RetryConfig::default();
        config.budget.ratio = f64::NAN;
        assert_eq!(field(config), "budget.ratio");
        let mut config = RetryConfig::default();
        config.budget.window = Duration::ZERO;
        assert_eq!(field(config), "budget.window");
    }

    #[test]
    fn reads_snake_case_and_human_durations() {
        let config: RetryConfig = serde_json::from_str(
            r#"{"attempts": 5, "backoff": "linear", "base_delay": "250ms", "budget": {"window": "1m"}}"#,
        )
        .unwrap();
        assert_eq!(config.attempts, 5);
        assert_eq!(config.backoff, Backoff::Linear);
        assert_eq!(config.base_delay, Duration::from_millis(250));
        assert_eq!(config.budget.window, Duration::from_secs(60));
        assert_eq!(config.budget.ratio, 0.2);
        assert!(serde_json::from_str::<RetryConfig>(r#"{"backoff": "fibonacci"}"#).is_err());
        assert!(serde_json::from_str::<RetryConfig>(r#"{"retries": 2}"#).is_err());
    }

    #[test]
    fn backoff_shapes() {
        let base = Duration::from_millis(100);
        let max = Duration::from_secs(1);
        let delays = |b: Backoff| {
            (0..6)
                .map(|n| b.delay(n, base, max).as_millis())
                .collect::<Vec<_>>()
        };
        assert_eq!(
            delays(Backoff::Exponential),
            [100, 200, 400, 800, 1000, 1000]
        );
        assert_eq!(delays(Backoff::Linear), [100, 200, 300, 400, 500, 600]);
        assert_eq!(delays(Backoff::Constant), [100; 6]);
        assert_eq!(Backoff::Exponential.delay(99, base, max), max);
    }
}
