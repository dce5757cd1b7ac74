//! The breaker's settings, as read from TOML (`[services.<name>.breaker]`).

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::ConfigError;
use crate::config::invalid;

/// Settings of one circuit breaker.
///
/// Durations are human-readable (`"10s"`, `"250ms"`). Every field has a
/// default, so an empty table is a valid breaker.
///
/// # When it opens
///
/// Inside the rolling window of `monitoring_period`, the breaker opens when
/// at least `minimum_throughput` calls were recorded **and** one of these
/// holds:
///
/// - `failure_rate_threshold` unset: failures ≥ `failure_threshold`;
/// - `failure_rate_threshold` set: failures ÷ calls ≥ `failure_rate_threshold`
///   (the count rule is then not used);
/// - `slow_call_rate_threshold` set: slow calls ÷ calls ≥ it, where a call is
///   slow when it took longer than `slow_call_duration`.
///
/// The rule is checked each time a call's outcome is recorded; the passing of
/// time alone never opens a breaker.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct BreakerConfig {
    /// `false` starts the breaker disabled: every call passes and nothing is
    /// recorded (an operator can still `reset()` it to closed).
    pub enabled: bool,
    /// Failures inside the window that open the breaker (count rule).
    pub failure_threshold: u32,
    /// Failure rate in `(0, 1]` that opens the breaker; replaces the count rule.
    pub failure_rate_threshold: Option<f64>,
    /// Calls the window must hold before any rule may open the breaker.
    pub minimum_throughput: u32,
    /// Length of the rolling window. It is kept as ten buckets of a tenth of
    /// this period each, so what is counted is the current bucket and the nine
    /// before it: between 90 % and 100 % of the period.
    #[serde(with = "humantime_serde")]
    pub monitoring_period: Duration,
    /// How long the breaker stays open before admitting probes.
    #[serde(with = "humantime_serde")]
    pub reset_timeout: Duration,
    /// If set, the open time doubles each time a half-open probe fails, up to
    /// this; it is back to `reset_timeout` once the breaker closes.
    #[serde(with = "humantime_serde")]
    pub reset_timeout_max: Option<Duration>,
    /// Probes admitted in one half-open round; all must succeed to close.
    pub half_open_max_calls: u32,
    /// A call that takes longer than this is slow.
    #[serde(with = "humantime_serde")]
    pub slow_call_duration: Option<Duration>,
    /// Slow-call rate in `(0, 1]` that opens the breaker (needs
    /// `slow_call_duration`). While set, a slow half-open probe counts as a
    /// failed probe.
    pub slow_call_rate_threshold: Option<f64>,
}

impl Default for BreakerConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            failure_threshold: 5,
            failure_rate_threshold: None,
            minimum_throughput: 10,
            monitoring_period: Duration::from_secs(60),
            reset_timeout: Duration::from_secs(30),
            reset_timeout_max: None,
            half_open_max_calls: 1,
            slow_call_duration: None,
            slow_call_rate_threshold: None,
        }
    }
}

/// Shortest `monitoring_period` accepted: ten buckets of at least 1 ms.
const MIN_MONITORING_PERIOD: Duration = Duration::from_millis(10);

impl BreakerConfig {
    /// Checks every field; the error names the first bad one and what is allowed.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.failure_threshold == 0 {
            return invalid("failure_threshold", "must be at least 1");
        }
        check_rate("failure_rate_threshold", self.failure_rate_threshold)?;
        if self.minimum_throughput == 0 {
            return invalid("minimum_throughput", "must be at least 1");
        }
        if self.monitoring_period < MIN_MONITORING_PERIOD {
            return invalid("monitoring_period", "must be at least 10ms");
        }
        if self.reset_timeout.is_zero() {
            return invalid("reset_timeout", "must be more than zero");
        }
        if let Some(max) = self.reset_timeout_max
            && max < self.reset_timeout
        {
            return invalid("reset_timeout_max", "must be at least reset_timeout");
        }
        if self.half_open_max_calls == 0 {
            return invalid("half_open_max_calls", "must be at least 1");
        }
        if self.slow_call_duration.is_some_and(|d| d.is_zero()) {
            return invalid("slow_call_duration", "must be more than zero");
        }
        check_rate("slow_call_rate_threshold", self.slow_call_rate_threshold)?;
        if self.slow_call_rate_threshold.is_some() && self.slow_call_duration.is_none() {
            return invalid(
                "slow_call_rate_threshold",
                "needs slow_call_duration to be set",
            );
        }
        Ok(())
    }
}

fn check_rate(field: &'static str, rate: Option<f64>) -> Result<(), ConfigError> {
    match rate {
        Some(r) if !(r > 0.0 && r <= 1.0) => Err(ConfigError::new(
            field,
            "must be a rate in (0, 1], e.g. 0.5",
        )),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_is_valid_and_reads_from_toml_names() {
        assert_eq!(BreakerConfig::default().validate(), Ok(()));
        let config: BreakerConfig = serde_json::from_str(
            r#"{"failure_threshold": 3, "monitoring_period": "10s",
                "reset_timeout": "250ms", "slow_call_duration": "2s"}"#,
        )
        .expect("valid config");
        assert_eq!(config.failure_threshold, 3);
        assert_eq!(config.monitoring_period, Duration::from_secs(10));
        assert_eq!(config.reset_timeout, Duration::from_millis(250));
        assert_eq!(config.slow_call_duration, Some(Duration::from_secs(2)));
        assert!(serde_json::from_str::<BreakerConfig>(r#"{"threshold": 3}"#).is_err());
    }

    #[test]
    fn validate_names_the_field() {
        let bad = |f: fn(&mut BreakerConfig)| {
            let mut c = BreakerConfig::default();
            f(&mut c);
            c.validate().expect_err("invalid").field()
        };
        assert_eq!(bad(|c| c.failure_threshold = 0), "failure_threshold");
        assert_eq!(
            bad(|c| c.failure_rate_threshold = Some(1.5)),
            "failure_rate_threshold"
        );
        assert_eq!(
            bad(|c| c.failure_rate_threshold = Some(f64::NAN)),
            "failure_rate_threshold"
        );
        assert_eq!(bad(|c| c.minimum_throughput = 0), "minimum_throughput");
        assert_eq!(
            bad(|c| c.monitoring_period = Duration::from_millis(1)),
            "monitoring_period"
        );
        assert_eq!(bad(|c| c.reset_timeout = Duration::ZERO), "reset_timeout");
        assert_eq!(
            bad(|c| c.reset_timeout_max = Some(Duration::from_secs(1))),
            "reset_timeout_max"
        );
        assert_eq!(bad(|c| c.half_open_max_calls = 0), "half_open_max_calls");
        assert_eq!(
            bad(|c| c.slow_call_rate_threshold = Some(0.5)),
            "slow_call_rate_threshold"
        );
    }
}
