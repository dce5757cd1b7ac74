//! The error returned when a metrics or budget configuration is invalid.

use std::borrow::Cow;

/// A configuration value was out of range: names the field and what is allowed.
///
/// Shared by [`crate::metrics`] and [`crate::budget`].
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("invalid `{field}`: {allowed}")]
pub struct ConfigError {
    /// The offending field, as spelled in the config (`window`, `budget.p95`).
    pub field: Cow<'static, str>,
    /// What the field accepts.
    pub allowed: Cow<'static, str>,
}

impl ConfigError {
    /// An error for `field`, saying what values are `allowed`.
    pub fn new(field: impl Into<Cow<'static, str>>, allowed: impl Into<Cow<'static, str>>) -> Self {
        Self {
            field: field.into(),
            allowed: allowed.into(),
        }
    }
}
