//! Configuration of the metrics layer.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::ConfigError;
use crate::config::invalid;

/// How the metrics layer keeps its in-process statistics.
///
/// ```
/// use resilience::metrics::MetricsConfig;
///
/// let config: MetricsConfig = serde_json::from_str(r#"{ "window": "5m" }"#).unwrap();
/// assert_eq!(config.window, std::time::Duration::from_secs(300));
/// assert!(config.validate().is_ok());
/// ```
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct MetricsConfig {
    /// How far back the sliding-window statistics (count, rate, error rate,
    /// percentiles) look. Between 1 s and 24 h; default 60 s.
    #[serde(with = "humantime_serde")]
    pub window: Duration,
}

impl Default for MetricsConfig {
    fn default() -> Self {
        Self {
            window: Duration::from_secs(60),
        }
    }
}

impl MetricsConfig {
    /// The shortest window accepted.
    pub const MIN_WINDOW: Duration = Duration::from_secs(1);
    /// The longest window accepted.
    pub const MAX_WINDOW: Duration = Duration::from_secs(24 * 60 * 60);

    /// Checks every field.
    pub fn validate(&self) -> Result<(), ConfigError> {
        validate_window("window", self.window)
    }
}

/// Checks a statistics window length (shared with budgets).
pub(crate) fn validate_window(field: &'static str, window: Duration) -> Result<(), ConfigError> {
    if window < MetricsConfig::MIN_WINDOW || window > MetricsConfig::MAX_WINDOW {
        return invalid(field, "must be a duration from 1s to 24h");
    }
    Ok(())
}
