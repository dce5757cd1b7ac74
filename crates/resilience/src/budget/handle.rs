//! The state of one operation's budget and its cloneable handle.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime};

use metrics::{Counter, Gauge, counter, gauge};
use parking_lot::{Mutex, RwLock};
use serde::Serialize;
use tokio::time::Instant;

use super::{Alert, AlertCallback, AlertEvent, AlertEventKind, BudgetConfig, BudgetKind};
use crate::ConfigError;
use crate::metrics::window::Summary;
use crate::metrics::{Anchor, Operation, OperationHandle};

/// How often completed calls trigger an evaluation of the budget, at most.
pub const EVALUATION_INTERVAL: Duration = Duration::from_secs(1);

/// One configured limit and its alert state.
struct Limit {
    kind: BudgetKind,
    /// Seconds for latency limits, a fraction for the error rate.
    limit: f64,
    breached: Gauge,
    breaches: Counter,
    active: Mutex<Option<Alert>>,
}

/// A budget attached to an operation. Referenced from the operation (to be
/// evaluated as calls complete) and from its [`BudgetHandle`]; it does not
/// point back at the operation, so there is no reference cycle.
pub(crate) struct BudgetState {
    config: BudgetConfig,
    limits: Vec<Limit>,
    /// Window-clock time (ns) before which completed calls skip evaluation.
    next_evaluation: AtomicU64,
    callbacks: RwLock<Vec<AlertCallback>>,
}

impl BudgetState {
    /// Called by the metrics layer for every completed call: evaluates at
    /// most once per [`EVALUATION_INTERVAL`] (one relaxed load otherwise).
    pub(crate) fn on_call(&self, operation: &Operation, at: u64) {
        let next = self.next_evaluation.load(Ordering::Relaxed);
        if at < next {
            return;
        }
        let interval = u64::try_from(EVALUATION_INTERVAL.as_nanos()).unwrap_or(u64::MAX);
        if self
            .next_evaluation
            .compare_exchange(
                next,
                at.saturating_add(interval),
                Ordering::Relaxed,
                Ordering::Relaxed,
            )
            .is_ok()
        {
            self.evaluate(operation, at);
        }
    }

    fn observe(kind: BudgetKind, summary: &Summary) -> f64 {
        match kind {
            BudgetKind::P95 => summary.quantile(0.95).as_secs_f64(),
            BudgetKind::P99 => summary.quantile(0.99).as_secs_f64(),
            BudgetKind::ErrorRate => summary.error_rate(),
        }
    }

    /// Judges every limit against the window ending at `at`, raising and
    /// resolving alerts, then tells the callbacks (outside any lock).
    fn evaluate(&self, operation: &Operation, at: u64) {
        let summary = operation.window.summary(at, self.config.window);
        let mut events = Vec::new();
        for limit in &self.limits {
            let observed = Self::observe(limit.kind, &summary);
            let mut active = limit.active.lock();
            let breached = if summary.count == 0 {
                // Nothing served in the window: nothing is being served badly.
                false
            } else if summary.count < self.config.min_samples {
                // Too few calls to judge: keep the current state.
                active.is_some()
            } else {
                observed > limit.limit
            };
            match (active.as_mut(), breached) {
                (None, true) => {
                    let alert = Alert {
                        operation: operation.name.to_string(),
                        budget: limit.kind,
                        observed,
                        limit: limit.limit,
                        samples: summary.count,
                        since: SystemTime::now(),
                        raised: Instant::now(),
                    };
                    limit.breached.set(1.0);
                    limit.breaches.increment(1);
                    tracing::warn!(
                        operation = %operation.name,
                        budget = limit.kind.as_str(),
                        observed,
                        limit = limit.limit,
                        samples = summary.count,
                        "performance budget breached"
                    );
                    events.push(AlertEvent {
                        event: AlertEventKind::Raised,
                        alert: alert.clone(),
                        at: alert.since,
                    });
                    *active = Some(alert);
                }
                (Some(alert), true) => {
                    if summary.count >= self.config.min_samples {
                        alert.observed = observed;
                        alert.samples = summary.count;
                    }
                }
                (Some(_), false) => {
                    if let Some(alert) = active.take() {
                        limit.breached.set(0.0);
                        tracing::info!(
                            operation = %operation.name,
                            budget = limit.kind.as_str(),
                            observed,
                            limit = limit.limit,
                            "performance budget back under its limit"
                        );
                        events.push(AlertEvent {
                            event: AlertEventKind::Resolved,
                            alert,
                            at: SystemTime::now(),
                        });
                    }
                }
                (None, false) => {}
            }
        }
        if events.is_empty() {
            return;
        }
        let callbacks = self.callbacks.read().clone();
        for event in &events {
            for callback in &callbacks {
                callback(event);
            }
        }
    }
}

/// A cloneable handle on one operation's performance budget: its alerts,
/// evaluation on demand, and alert callbacks.
#[derive(Clone)]
pub struct BudgetHandle {
    state: Arc<BudgetState>,
    operation: Arc<Anchor>,
}

impl std::fmt::Debug for BudgetHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BudgetHandle")
            .field("name", &self.name())
            .field("config", &self.state.config)
            .finish_non_exhaustive()
    }
}

impl BudgetHandle {
    /// Attaches a budget to a measured operation (see
    /// [`crate::metrics::MetricsLayer::handle`]). From then on the operation's
    /// completed calls evaluate it, at most once per [`EVALUATION_INTERVAL`].
    ///
    /// Fails if the config is invalid, if `config.window` is longer than the
    /// operation's statistics window, or if the operation already has a budget.
    pub fn attach(operation: &OperationHandle, config: BudgetConfig) -> Result<Self, ConfigError> {
        config.validate()?;
        let operation = Arc::clone(&operation.operation);
        if config.window > operation.window.span() {
            return Err(ConfigError::new(
                "budget.window",
                format!(
                    "must be at most the operation's statistics window ({})",
                    humantime_serde::re::humantime::format_duration(operation.window.span())
                ),
            ));
        }
        let name = &operation.name;
        let limits = [
            (BudgetKind::P95, config.p95.map(|d| d.as_secs_f64())),
            (BudgetKind::P99, config.p99.map(|d| d.as_secs_f64())),
            (BudgetKind::ErrorRate, config.error_rate),
        ]
        .into_iter()
        .filter_map(|(kind, limit)| {
            let limit = limit?;
            let breached = gauge!(
                "resilience_budget_breached",
                "name" => name.clone(),
                "budget" => kind.as_str()
            );
            let breaches = counter!(
                "resilience_budget_breaches_total",
                "name" => name.clone(),
                "budget" => kind.as_str()
            );
            breached.set(0.0);
            breaches.increment(0);
            Some(Limit {
                kind,
                limit,
                breached,
                breaches,
                active: Mutex::new(None),
            })
        })
        .collect();
        let state = Arc::new(BudgetState {
            config,
            limits,
            next_evaluation: AtomicU64::new(0),
            callbacks: RwLock::new(Vec::new()),
        });
        operation
            .budget
            .set(Arc::clone(&state))
            .map_err(|_| ConfigError::new("budget", "is already attached to this operation"))?;
        Ok(Self { state, operation })
    }

    /// The operation's name.
    pub fn name(&self) -> &str {
        &self.operation.name
    }

    /// The budget's configuration.
    pub fn config(&self) -> &BudgetConfig {
        &self.state.config
    }

    /// Calls `callback` on every alert raised or resolved from now on.
    pub fn on_event(&self, callback: AlertCallback) {
        self.state.callbacks.write().push(callback);
    }

    /// Evaluates the budget now, whatever the traffic (a periodic task, or
    /// reading `/admin/alerts`, calls this so alerts clear once calls stop).
    pub fn evaluate(&self) {
        let at = self.operation.window.now();
        self.state.evaluate(&self.operation, at);
    }

    /// The limits currently exceeded, as of the latest evaluation.
    pub fn alerts(&self) -> Vec<Alert> {
        self.state
            .limits
            .iter()
            .filter_map(|limit| limit.active.lock().clone())
            .collect()
    }

    /// The budget's limits, what the window shows now, and which are breached.
    pub fn snapshot(&self) -> BudgetSnapshot {
        let window = self.state.config.window;
        let summary = self
            .operation
            .window
            .summary(self.operation.window.now(), window);
        BudgetSnapshot {
            name: self.name().to_owned(),
            window,
            samples: summary.count,
            min_samples: self.state.config.min_samples,
            limits: self
                .state
                .limits
                .iter()
                .map(|limit| LimitSnapshot {
                    budget: limit.kind,
                    limit: limit.limit,
                    observed: BudgetState::observe(limit.kind, &summary),
                    breached: limit.active.lock().is_some(),
                })
                .collect(),
        }
    }
}

/// One budget's state, for `/admin/stats`.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct BudgetSnapshot {
    /// The operation's name.
    pub name: String,
    /// How far back the budget looks.
    #[serde(with = "humantime_serde")]
    pub window: Duration,
    /// Calls in the window now.
    pub samples: u64,
    /// Calls needed in the window before an alert is raised or cleared.
    pub min_samples: u64,
    /// One entry per configured limit.
    pub limits: Vec<LimitSnapshot>,
}

/// One limit of a budget.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct LimitSnapshot {
    /// Which limit.
    pub budget: BudgetKind,
    /// The limit: seconds for latencies, a fraction for the error rate.
    pub limit: f64,
    /// The value over the window now, in the same unit.
    pub observed: f64,
    /// Whether an alert is active (as of the latest evaluation).
    pub breached: bool,
}
