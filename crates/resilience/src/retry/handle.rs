//! [`RetryHandle`]: statistics of one retry layer.

use std::sync::{Arc, atomic::Ordering};

use super::{RetrySnapshot, policy::Shared, stats::GaveUp};

/// A cheap, cloneable view of one retry layer's shared state.
#[derive(Clone)]
pub struct RetryHandle {
    shared: Arc<Shared>,
}

impl RetryHandle {
    pub(crate) fn new(shared: Arc<Shared>) -> Self {
        Self { shared }
    }

    /// The layer's name.
    pub fn name(&self) -> &str {
        &self.shared.name
    }

    /// All statistics at once.
    pub fn snapshot(&self) -> RetrySnapshot {
        let shared = &self.shared;
        let stats = &shared.stats;
        let (budget_window_calls, budget_window_retries) = shared.budget.window_counts();
        RetrySnapshot {
            name: shared.name.to_string(),
            retries: stats.retries.load(Ordering::Relaxed),
            exhausted_attempts: stats.exhausted(GaveUp::Attempts),
            exhausted_budget: stats.exhausted(GaveUp::Budget),
            exhausted_retry_after: stats.exhausted(GaveUp::RetryAfterTooLong),
            budget_window_calls,
            budget_window_retries,
            budget_available: shared.budget.available(),
        }
    }
}

impl std::fmt::Debug for RetryHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RetryHandle")
            .field("name", &self.shared.name)
            .finish_non_exhaustive()
    }
}
