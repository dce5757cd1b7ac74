//! The shared state of one measured operation and its cloneable handle.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use metrics::{Counter, Gauge, Histogram, counter, gauge, histogram};
use serde::Serialize;

use super::window::Window;
use crate::budget::BudgetState;

/// Everything the metrics layer keeps for one named operation. Created once
/// when the layer is built; every clone of the service shares it.
pub(crate) struct Operation {
    pub(crate) name: Arc<str>,
    pub(crate) window: Window,
    cancelled: AtomicU64,
    successes: Counter,
    failures: Counter,
    duration: Histogram,
    in_flight_gauge: Gauge,
    /// Set at most once, when a budget is attached (see [`crate::budget`]).
    pub(crate) budget: OnceLock<Arc<BudgetState>>,
}

impl Operation {
    /// Registers the operation's metric series with the installed recorder.
    pub(crate) fn new(name: Arc<str>, window: Duration) -> Self {
        let successes = counter!(
            "resilience_operation_requests_total",
            "name" => name.clone(),
            "outcome" => "success"
        );
        let failures = counter!(
            "resilience_operation_requests_total",
            "name" => name.clone(),
            "outcome" => "failure"
        );
        let duration = histogram!("resilience_operation_duration_seconds", "name" => name.clone());
        let in_flight_gauge = gauge!("resilience_operation_in_flight", "name" => name.clone());
        // Make every series visible from the start, not from its first event.
        successes.increment(0);
        failures.increment(0);
        in_flight_gauge.set(0.0);
        Self {
            name,
            window: Window::new(window),
            cancelled: AtomicU64::new(0),
            successes,
            failures,
            duration,
            in_flight_gauge,
            budget: OnceLock::new(),
        }
    }
}

/// What layers, services and handles hold of an operation: the one
/// long-lived strong reference to its [`Operation`]. Every other strong
/// reference is a call in flight ([`CallGuard`]), so the number of calls in
/// flight is the reference count minus one — the `Arc` clone a call needs
/// anyway doubles as the in-flight counter, one atomic add less each way.
pub(crate) struct Anchor {
    operation: Arc<Operation>,
}

impl std::ops::Deref for Anchor {
    type Target = Operation;

    fn deref(&self) -> &Operation {
        &self.operation
    }
}

impl Anchor {
    /// Registers the operation's metrics and anchors its state.
    pub(crate) fn new(name: Arc<str>, window: Duration) -> Self {
        Self {
            operation: Arc::new(Operation::new(name, window)),
        }
    }

    /// Starts measuring one call; the returned guard ends it.
    pub(crate) fn begin(&self) -> CallGuard {
        self.operation.in_flight_gauge.increment(1.0);
        CallGuard {
            start: self.operation.window.now(),
            operation: Arc::clone(&self.operation),
            finished: false,
        }
    }

    /// Calls started and not yet finished or cancelled.
    pub(crate) fn in_flight(&self) -> u64 {
        (Arc::strong_count(&self.operation) as u64).saturating_sub(1)
    }
}

/// One call in flight. Dropping it without [`CallGuard::finish`] (the caller
/// went away) still lowers the in-flight count, and counts a cancellation.
pub(crate) struct CallGuard {
    operation: Arc<Operation>,
    /// When the call began, on the operation's window clock.
    start: u64,
    finished: bool,
}

impl CallGuard {
    /// Records the call's duration and outcome.
    pub(crate) fn finish(mut self, failure: bool) {
        self.finished = true;
        let operation = &*self.operation;
        let at = operation.window.now();
        let elapsed = Duration::from_nanos(at.saturating_sub(self.start));
        operation.window.record(at, elapsed, failure);
        operation.duration.record(elapsed.as_secs_f64());
        if failure {
            operation.failures.increment(1);
        } else {
            operation.successes.increment(1);
        }
        if let Some(budget) = operation.budget.get() {
            budget.on_call(operation, at);
        }
    }
}

impl Drop for CallGuard {
    fn drop(&mut self) {
        let operation = &*self.operation;
        operation.in_flight_gauge.decrement(1.0);
        if !self.finished {
            operation.cancelled.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// A cloneable handle on one measured operation: its name and its
/// sliding-window statistics. Get it from [`super::MetricsLayer::handle`].
#[derive(Clone)]
pub struct OperationHandle {
    pub(crate) operation: Arc<Anchor>,
}

impl std::fmt::Debug for OperationHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OperationHandle")
            .field("name", &self.name())
            .finish_non_exhaustive()
    }
}

impl OperationHandle {
    /// The operation's name (the `name` label of its metrics).
    pub fn name(&self) -> &str {
        &self.operation.name
    }

    /// Calls started and not yet finished or cancelled.
    pub fn in_flight(&self) -> u64 {
        self.operation.in_flight()
    }

    /// Count, rate, error rate and latency percentiles over the window.
    pub fn snapshot(&self) -> OperationSnapshot {
        let operation: &Operation = &self.operation;
        let window = operation.window.span();
        let summary = operation.window.summary(operation.window.now(), window);
        let ms = |d: Duration| d.as_secs_f64() * 1e3;
        OperationSnapshot {
            name: operation.name.to_string(),
            window,
            count: summary.count,
            failures: summary.failures,
            rate_per_second: summary.rate_per_second(),
            error_rate: summary.error_rate(),
            avg_ms: ms(summary.mean),
            p50_ms: ms(summary.quantile(0.50)),
            p95_ms: ms(summary.quantile(0.95)),
            p99_ms: ms(summary.quantile(0.99)),
            max_ms: ms(summary.max),
            in_flight: self.in_flight(),
            cancelled: operation.cancelled.load(Ordering::Relaxed),
        }
    }
}

/// One operation's statistics over its sliding window, for `/admin/stats`.
///
/// Percentiles come from log-scale buckets and are within about 3 % of the
/// exact value; with no calls in the window they are 0.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct OperationSnapshot {
    /// The operation's name.
    pub name: String,
    /// How far back the statistics look.
    #[serde(with = "humantime_serde")]
    pub window: Duration,
    /// Calls that finished within the window.
    pub count: u64,
    /// Of those, failures (as the layer's classifier judged them).
    pub failures: u64,
    /// Calls per second over the window (or since start, if shorter).
    pub rate_per_second: f64,
    /// `failures / count`; 0 without calls.
    pub error_rate: f64,
    /// Mean duration, milliseconds.
    pub avg_ms: f64,
    /// Median duration, milliseconds.
    pub p50_ms: f64,
    /// 95th percentile duration, milliseconds.
    pub p95_ms: f64,
    /// 99th percentile duration, milliseconds.
    pub p99_ms: f64,
    /// Longest duration, milliseconds.
    pub max_ms: f64,
    /// Calls in progress now.
    pub in_flight: u64,
    /// Calls whose caller went away before an answer, since start.
    pub cancelled: u64,
}
