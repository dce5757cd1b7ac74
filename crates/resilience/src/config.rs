//! The one error every layer's config validation returns: it names the field,
//! as spelled in TOML, and what the field may hold.
//! [`crate::stack::StackError`] adds the service and the section.

use std::borrow::Cow;

/// A config field holds a value its layer cannot use.
///
/// The message names the field and what is allowed, e.g.
/// ``"`failure_threshold` must be at least 1"``.
///
/// ```
/// use resilience::breaker::{BreakerConfig, BreakerLayer};
///
/// let config = BreakerConfig { failure_threshold: 0, ..Default::default() };
/// let error = BreakerLayer::new("users", config).unwrap_err();
/// assert_eq!(error.field(), "failure_threshold");
/// assert_eq!(error.to_string(), "`failure_threshold` must be at least 1");
/// ```
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("`{field}` {problem}")]
pub struct ConfigError {
    field: &'static str,
    problem: Cow<'static, str>,
}

impl ConfigError {
    /// `problem` completes the sentence that starts with the field's name:
    /// `"must be at least 1"`.
    pub(crate) fn new(field: &'static str, problem: impl Into<Cow<'static, str>>) -> Self {
        Self {
            field,
            problem: problem.into(),
        }
    }

    /// The field at fault, as spelled in the config (`failure_threshold`,
    /// `budget.window`).
    pub fn field(&self) -> &'static str {
        self.field
    }

    /// What the field may hold (and, where it helps, what it held):
    /// `must be in 1..=100 (got 0)`.
    pub fn problem(&self) -> &str {
        &self.problem
    }
}

/// `Err` with a [`ConfigError`]: `return invalid("attempts", "must be at least 1");`.
pub(crate) fn invalid<T>(
    field: &'static str,
    problem: impl Into<Cow<'static, str>>,
) -> Result<T, ConfigError> {
    Err(ConfigError::new(field, problem))
}
