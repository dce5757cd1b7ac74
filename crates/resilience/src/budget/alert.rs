//! Alerts raised when an operation goes over its budget.

use std::sync::Arc;
use std::time::SystemTime;

use serde::Serialize;

/// Which limit of a budget an alert is about; also the `budget` label of the
/// budget metrics.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum BudgetKind {
    /// The 95th percentile latency limit.
    P95,
    /// The 99th percentile latency limit.
    P99,
    /// The error-rate limit.
    ErrorRate,
}

impl BudgetKind {
    /// The label value: `p95`, `p99` or `error_rate`.
    pub fn as_str(self) -> &'static str {
        match self {
            BudgetKind::P95 => "p95",
            BudgetKind::P99 => "p99",
            BudgetKind::ErrorRate => "error_rate",
        }
    }
}

impl std::fmt::Display for BudgetKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// An operation currently over one of its budget's limits.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Alert {
    /// The operation's name.
    pub operation: String,
    /// Which limit is exceeded.
    pub budget: BudgetKind,
    /// The latest observed value: seconds for `p95`/`p99`, a fraction for
    /// `error_rate`.
    pub observed: f64,
    /// The limit, in the same unit.
    pub limit: f64,
    /// Calls in the window at the latest evaluation.
    pub samples: u64,
    /// When the breach was first seen (wall clock, RFC 3339 in JSON).
    #[serde(with = "humantime_serde")]
    pub since: SystemTime,
    /// `since` on tokio's clock, to order alerts (the wall clock may step).
    #[serde(skip)]
    pub(crate) raised: tokio::time::Instant,
}

impl Alert {
    /// How long the breach has lasted, on tokio's clock.
    pub fn duration(&self) -> std::time::Duration {
        self.raised.elapsed()
    }
}

/// Whether an alert was raised or resolved.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum AlertEventKind {
    /// The operation went over the limit.
    Raised,
    /// The operation is back under the limit (or no longer serving calls).
    Resolved,
}

/// What alert callbacks receive (and what a webhook would post).
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct AlertEvent {
    /// Raised or resolved.
    pub event: AlertEventKind,
    /// The alert; for `resolved`, as it was last seen.
    pub alert: Alert,
    /// When this event happened (wall clock).
    #[serde(with = "humantime_serde")]
    pub at: SystemTime,
}

/// A function told about every raised and resolved alert. It runs on the
/// task that completed the call which triggered the evaluation: keep it
/// short, and hand slow work (an HTTP webhook) to a spawned task or channel.
pub type AlertCallback = Arc<dyn Fn(&AlertEvent) + Send + Sync>;
