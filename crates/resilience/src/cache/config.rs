//! Configuration of a cache: freshness, size bound, refresh-ahead and the
//! stale-if-error window, as read from the service's TOML.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::ConfigError;
use crate::config::invalid;

/// The size bound used when a config sets neither `max_entries` nor `max_bytes`.
pub const DEFAULT_MAX_ENTRIES: u64 = 10_000;

/// Configuration of one cache.
///
/// ```toml
/// ttl = "60s"
/// max_entries = 10000        # or: max_bytes = 67108864 (not both)
/// refresh_threshold = 0.8    # refresh in the background after 80% of ttl
/// stale_if_error = "5m"      # serve an expired value this long when loads fail
/// ```
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct CacheConfig {
    /// How long a loaded value is served as fresh.
    #[serde(with = "humantime_serde")]
    pub ttl: Duration,
    /// Bound the cache by entry count. Exclusive with `max_bytes`; when both
    /// are unset the cache holds at most [`DEFAULT_MAX_ENTRIES`] entries.
    pub max_entries: Option<u64>,
    /// Bound the cache by the weighed size of its entries, in bytes (see
    /// [`CacheBuilder::weigher`](super::CacheBuilder::weigher)).
    pub max_bytes: Option<u64>,
    /// A hit on an entry older than `refresh_threshold × ttl` returns the
    /// cached value and refreshes it in the background, once. Between 0 and 1
    /// (exclusive); unset turns refresh-ahead off.
    pub refresh_threshold: Option<f64>,
    /// When a load fails, an expired value younger than `ttl + stale_if_error`
    /// is served instead of the error. Unset turns this off.
    #[serde(with = "humantime_serde")]
    pub stale_if_error: Option<Duration>,
}

impl Default for CacheConfig {
    fn default() -> Self {
        CacheConfig {
            ttl: Duration::from_secs(60),
            max_entries: None,
            max_bytes: None,
            refresh_threshold: None,
            stale_if_error: None,
        }
    }
}

impl CacheConfig {
    /// Checks every field against its allowed range.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.ttl.is_zero() {
            return invalid("ttl", "must be greater than zero");
        }
        // moka refuses expirations longer than 1000 years; stay far below it.
        const MAX_WINDOW: Duration = Duration::from_secs(10 * 365 * 24 * 3600);
        if self.ttl > MAX_WINDOW {
            return invalid("ttl", "must be at most 10 years");
        }
        if self
            .stale_if_error
            .is_some_and(|window| window > MAX_WINDOW)
        {
            return invalid("stale_if_error", "must be at most 10 years");
        }
        if self.max_entries.is_some() && self.max_bytes.is_some() {
            return invalid("max_bytes", "cannot be set together with `max_entries`");
        }
        if self.max_entries == Some(0) {
            return invalid("max_entries", "must be at least 1");
        }
        if self.max_bytes == Some(0) {
            return invalid("max_bytes", "must be at least 1");
        }
        if let Some(threshold) = self.refresh_threshold
            && !(threshold > 0.0 && threshold < 1.0)
        {
            return invalid("refresh_threshold", "must be between 0 and 1 (exclusive)");
        }
        Ok(())
    }

    /// How long an entry is kept in the store: its fresh life plus the window
    /// in which it may still be served stale.
    pub(crate) fn retention(&self) -> Duration {
        self.ttl + self.stale_if_error.unwrap_or(Duration::ZERO)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid_and_toml_names_match() {
        assert_eq!(CacheConfig::default().validate(), Ok(()));
        let config: CacheConfig = serde_json::from_str(
            r#"{"ttl":"250ms","max_bytes":1024,"refresh_threshold":0.5,"stale_if_error":"10s"}"#,
        )
        .expect("valid config");
        assert_eq!(config.ttl, Duration::from_millis(250));
        assert_eq!(config.stale_if_error, Some(Duration::from_secs(10)));
        assert_eq!(config.retention(), Duration::from_millis(10_250));
        assert!(serde_json::from_str::<CacheConfig>(r#"{"tll":"1s"}"#).is_err());
    }

    #[test]
    fn validate_names_the_field() {
        let bad = |config: CacheConfig| config.validate().expect_err("invalid").field();
        let base = CacheConfig::default();
        assert_eq!(
            bad(CacheConfig {
                ttl: Duration::ZERO,
                ..base.clone()
            }),
            "ttl"
        );
        assert_eq!(
            bad(CacheConfig {
                max_entries: Some(1),
                max_bytes: Some(1),
                ..base.clone()
            }),
            "max_bytes"
        );
        assert_eq!(
            bad(CacheConfig {
                max_entries: Some(0),
                ..base.clone()
            }),
            "max_entries"
        );
        assert_eq!(
            bad(CacheConfig {
                refresh_threshold: Some(1.0),
                ..base.clone()
            }),
            "refresh_threshold"
        );
        assert_eq!(
            bad(CacheConfig {
                refresh_threshold: Some(f64::NAN),
                ..base
            }),
            "refresh_threshold"
        );
    }
}
