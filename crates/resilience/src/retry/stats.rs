//! Prometheus series and in-process counters of a retry layer.

use std::sync::{
    Arc,
    atomic::{AtomicU64, Ordering},
};

use metrics::Counter;
use serde::Serialize;

pub(super) const ATTEMPTS: &str = "resilience_retry_attempts_total";
pub(super) const EXHAUSTED: &str = "resilience_retry_exhausted_total";

/// Why a failed call was not retried again although its failure was retryable.
#[derive(Clone, Copy, Debug)]
pub(crate) enum GaveUp {
    Attempts,
    Budget,
    RetryAfterTooLong,
}

pub(crate) struct Stats {
    pub(crate) retries: AtomicU64,
    exhausted: [AtomicU64; 3],
    attempts_counter: Counter,
    exhausted_counters: [Counter; 3],
}

impl Stats {
    pub(crate) fn new(name: &Arc<str>) -> Self {
        let exhausted = |reason: &'static str| metrics::counter!(EXHAUSTED, "name" => Arc::clone(name), "reason" => reason);
        Self {
            retries: AtomicU64::new(0),
            exhausted: Default::default(),
            attempts_counter: metrics::counter!(ATTEMPTS, "name" => Arc::clone(name)),
            exhausted_counters: [
                exhausted("attempts"),
                exhausted("budget"),
                exhausted("retry_after_too_long"),
            ],
        }
    }

    pub(crate) fn retried(&self) {
        self.retries.fetch_add(1, Ordering::Relaxed);
        self.attempts_counter.increment(1);
    }

    pub(crate) fn gave_up(&self, why: GaveUp) {
        let index = why as usize;
        self.exhausted[index].fetch_add(1, Ordering::Relaxed);
        self.exhausted_counters[index].increment(1);
    }

    pub(crate) fn exhausted(&self, why: GaveUp) -> u64 {
        self.exhausted[why as usize].load(Ordering::Relaxed)
    }
}

/// Point-in-time statistics of one retry layer.
#[derive(Clone, Debug, Serialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct RetrySnapshot {
    /// The layer's name.
    pub name: String,
    /// Retries sent, since start.
    pub retries: u64,
    /// Calls that failed on their last allowed attempt.
    pub exhausted_attempts: u64,
    /// Retries refused by the budget.
    pub exhausted_budget: u64,
    /// Calls given up because the callee asked to wait longer than `max_delay`.
    pub exhausted_retry_after: u64,
    /// Calls (first tries) counted in the budget's window now.
    pub budget_window_calls: u64,
    /// Retries counted in the budget's window now.
    pub budget_window_retries: u64,
    /// Retries the budget would still allow now.
    pub budget_available: u64,
}
