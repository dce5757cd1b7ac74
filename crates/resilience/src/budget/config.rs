//! Configuration of a performance budget.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::ConfigError;
use crate::config::invalid;
use crate::metrics::validate_window;

/// Latency and error-rate limits for one operation, judged over a window.
///
/// Every limit is optional; a budget with none is never breached. In TOML:
///
/// ```
/// use std::time::Duration;
/// use resilience::budget::BudgetConfig;
///
/// let config: BudgetConfig = serde_json::from_str(
///     r#"{ "p95": "200ms", "p99": "1s", "error_rate": 0.05, "window": "5m" }"#,
/// ).unwrap();
/// assert_eq!(config.p95, Some(Duration::from_millis(200)));
/// assert_eq!(config.min_samples, 20);
/// assert!(config.validate().is_ok());
/// ```
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct BudgetConfig {
    /// The 95th percentile of call durations must stay at or under this.
    #[serde(with = "humantime_serde", skip_serializing_if = "Option::is_none")]
    pub p95: Option<Duration>,
    /// The 99th percentile of call durations must stay at or under this.
    #[serde(with = "humantime_serde", skip_serializing_if = "Option::is_none")]
    pub p99: Option<Duration>,
    /// The share of failed calls must stay at or under this (0 < rate ≤ 1).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error_rate: Option<f64>,
    /// How far back the budget looks; from 1 s to 24 h, default 60 s. At most
    /// the operation's statistics window (the stack uses this window for both).
    #[serde(with = "humantime_serde")]
    pub window: Duration,
    /// Fewer calls than this in the window neither raise nor clear an alert,
    /// so a handful of slow calls at night does not page anyone. Default 20.
    pub min_samples: u64,
}

impl Default for BudgetConfig {
    fn default() -> Self {
        Self {
            p95: None,
            p99: None,
            error_rate: None,
            window: Duration::from_secs(60),
            min_samples: 20,
        }
    }
}

impl BudgetConfig {
    /// `true` when no limit is set (nothing to evaluate).
    pub fn is_empty(&self) -> bool {
        self.p95.is_none() && self.p99.is_none() && self.error_rate.is_none()
    }

    /// Checks every field.
    pub fn validate(&self) -> Result<(), ConfigError> {
        validate_window("budget.window", self.window)?;
        for (field, limit) in [("budget.p95", self.p95), ("budget.p99", self.p99)] {
            if limit == Some(Duration::ZERO) {
                return invalid(field, "must be a duration above 0");
            }
        }
        if let (Some(p95), Some(p99)) = (self.p95, self.p99)
            && p95 > p99
        {
            return invalid("budget.p95", "must be no longer than `budget.p99`");
        }
        if let Some(rate) = self.error_rate
            && !(rate > 0.0 && rate <= 1.0)
        {
            return invalid(
                "budget.error_rate",
                "must be a fraction above 0 and at most 1 (0.05 = 5 %)",
            );
        }
        if self.min_samples == 0 {
            return invalid("budget.min_samples", "must be at least 1");
        }
        Ok(())
    }
}
