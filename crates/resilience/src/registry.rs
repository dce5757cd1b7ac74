//! One registry of every named layer handle, for `/admin/stats`,
//! `/admin/alerts`, `/health/ready` and operator actions.
//!
//! Every layer built from config (see [`crate::stack`]) registers its handle
//! here under its name: breakers, concurrency limits, retries, caches,
//! measured operations and budgets. The registry is cheap to clone (an `Arc`
//! inside) and never sits on a call's hot path: it is read by admin and health
//! endpoints, and written when layers are built.
//!
//! ```
//! use resilience::breaker::{BreakerConfig, BreakerLayer, BreakerState};
//! use resilience::registry::{Registry, Status};
//!
//! let registry = Registry::new();
//! let breaker = BreakerLayer::new("payments", BreakerConfig::default()).unwrap();
//! registry.register_breaker(breaker.handle()).unwrap();
//!
//! // An operator opens it through the admin API...
//! registry.breaker("payments").unwrap().force_open();
//! let readiness = registry.readiness();
//! assert_eq!(readiness.status, Status::Degraded);
//! assert_eq!(readiness.issues[0].name, "payments");
//!
//! // ...and closes it again.
//! registry.breaker("payments").unwrap().reset();
//! assert_eq!(registry.readiness().status, Status::Ready);
//! assert_eq!(registry.snapshot().breakers[0].state, BreakerState::Closed);
//! ```

use std::collections::BTreeMap;
use std::sync::Arc;

use parking_lot::RwLock;
use serde::Serialize;

use crate::breaker::{BreakerHandle, BreakerSnapshot, BreakerState};
use crate::budget::{Alert, AlertCallback, BudgetHandle, BudgetSnapshot};
use crate::cache::{CacheHandle, CacheSnapshot, WarmResult};
use crate::concurrency::{ConcurrencyHandle, ConcurrencySnapshot};
use crate::metrics::{OperationHandle, OperationSnapshot};
use crate::retry::{RetryHandle, RetrySnapshot};
use crate::stack::StackHandles;

/// A handle could not be registered.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum RegistryError {
    /// Another handle of the same kind already has this name.
    #[error("a {kind} named '{name}' is already registered")]
    Duplicate {
        /// `breaker`, `concurrency limit`, `retry`, `cache`, `operation` or `budget`.
        kind: &'static str,
        /// The name in use.
        name: String,
    },
}

/// Named handles of one kind, in name order.
type Named<H> = BTreeMap<String, H>;

#[derive(Default)]
struct Handles {
    breakers: Named<BreakerHandle>,
    concurrency: Named<ConcurrencyHandle>,
    retries: Named<RetryHandle>,
    caches: Named<CacheHandle>,
    operations: Named<OperationHandle>,
    budgets: Named<BudgetHandle>,
    alert_callbacks: Vec<AlertCallback>,
}

fn insert<H>(
    map: &mut Named<H>,
    kind: &'static str,
    name: &str,
    handle: H,
) -> Result<(), RegistryError> {
    if map.contains_key(name) {
        return Err(RegistryError::Duplicate {
            kind,
            name: name.to_owned(),
        });
    }
    map.insert(name.to_owned(), handle);
    Ok(())
}

/// Every named handle of a process. See the module documentation.
#[derive(Clone, Default)]
pub struct Registry {
    handles: Arc<RwLock<Handles>>,
}

impl std::fmt::Debug for Registry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let handles = self.handles.read();
        f.debug_struct("Registry")
            .field("breakers", &handles.breakers.keys().collect::<Vec<_>>())
            .field(
                "concurrency",
                &handles.concurrency.keys().collect::<Vec<_>>(),
            )
            .field("retries", &handles.retries.keys().collect::<Vec<_>>())
            .field("caches", &handles.caches.keys().collect::<Vec<_>>())
            .field("operations", &handles.operations.keys().collect::<Vec<_>>())
            .field("budgets", &handles.budgets.keys().collect::<Vec<_>>())
            .finish()
    }
}

impl Registry {
    /// An empty registry.
    pub fn new() -> Self {
        Self::default()
    }

    /// Registers a circuit breaker under its name.
    pub fn register_breaker(&self, handle: BreakerHandle) -> Result<(), RegistryError> {
        let name = handle.name().to_owned();
        insert(&mut self.handles.write().breakers, "breaker", &name, handle)
    }

    /// Registers a concurrency limit under its name.
    pub fn register_concurrency(&self, handle: ConcurrencyHandle) -> Result<(), RegistryError> {
        let name = handle.name().to_owned();
        insert(
            &mut self.handles.write().concurrency,
            "concurrency limit",
            &name,
            handle,
        )
    }

    /// Registers a retry layer under its name.
    pub fn register_retry(&self, handle: RetryHandle) -> Result<(), RegistryError> {
        let name = handle.name().to_owned();
        insert(&mut self.handles.write().retries, "retry", &name, handle)
    }

    /// Registers a cache under its name.
    pub fn register_cache(&self, handle: CacheHandle) -> Result<(), RegistryError> {
        let name = handle.name().to_owned();
        insert(&mut self.handles.write().caches, "cache", &name, handle)
    }

    /// Registers a measured operation under its name.
    pub fn register_operation(&self, handle: OperationHandle) -> Result<(), RegistryError> {
        let name = handle.name().to_owned();
        insert(
            &mut self.handles.write().operations,
            "operation",
            &name,
            handle,
        )
    }

    /// Registers a performance budget under its operation's name. Callbacks
    /// given to [`Registry::on_alert`] (before or after) hear its alerts.
    pub fn register_budget(&self, handle: BudgetHandle) -> Result<(), RegistryError> {
        let name = handle.name().to_owned();
        let mut handles = self.handles.write();
        insert(&mut handles.budgets, "budget", &name, handle.clone())?;
        for callback in &handles.alert_callbacks {
            handle.on_event(Arc::clone(callback));
        }
        Ok(())
    }

    /// Registers every handle of one service's stack, all or none: a name
    /// already taken leaves the registry as it was.
    pub(crate) fn register_stack(&self, stack: &StackHandles) -> Result<(), RegistryError> {
        let mut handles = self.handles.write();
        let taken = |kind: &'static str, name: &str, exists: bool| {
            if exists {
                Err(RegistryError::Duplicate {
                    kind,
                    name: name.to_owned(),
                })
            } else {
                Ok(())
            }
        };
        let name = stack.operation.name();
        taken("operation", name, handles.operations.contains_key(name))?;
        taken(
            "breaker",
            name,
            handles.breakers.contains_key(stack.breaker.name()),
        )?;
        if stack.budget.is_some() {
            taken("budget", name, handles.budgets.contains_key(name))?;
        }
        if let Some(limit) = &stack.concurrency {
            taken(
                "concurrency limit",
                name,
                handles.concurrency.contains_key(limit.name()),
            )?;
        }
        if let Some(retry) = &stack.retry {
            taken("retry", name, handles.retries.contains_key(retry.name()))?;
        }
        handles
            .operations
            .insert(name.to_owned(), stack.operation.clone());
        handles
            .breakers
            .insert(stack.breaker.name().to_owned(), stack.breaker.clone());
        if let Some(budget) = &stack.budget {
            for callback in &handles.alert_callbacks {
                budget.on_event(Arc::clone(callback));
            }
            handles.budgets.insert(name.to_owned(), budget.clone());
        }
        if let Some(limit) = &stack.concurrency {
            handles
                .concurrency
                .insert(limit.name().to_owned(), limit.clone());
        }
        if let Some(retry) = &stack.retry {
            handles
                .retries
                .insert(retry.name().to_owned(), retry.clone());
        }
        Ok(())
    }

    /// Calls `callback` for every alert raised or resolved by any budget,
    /// registered now or later (for example to post to a webhook).
    pub fn on_alert(&self, callback: AlertCallback) {
        let mut handles = self.handles.write();
        for budget in handles.budgets.values() {
            budget.on_event(Arc::clone(&callback));
        }
        handles.alert_callbacks.push(callback);
    }

    /// The breaker named `name`, for operator actions (reset, force open, disable).
    pub fn breaker(&self, name: &str) -> Option<BreakerHandle> {
        self.handles.read().breakers.get(name).cloned()
    }

    /// The concurrency limit named `name`.
    pub fn concurrency(&self, name: &str) -> Option<ConcurrencyHandle> {
        self.handles.read().concurrency.get(name).cloned()
    }

    /// The retry layer named `name`.
    pub fn retry(&self, name: &str) -> Option<RetryHandle> {
        self.handles.read().retries.get(name).cloned()
    }

    /// The cache named `name`.
    pub fn cache(&self, name: &str) -> Option<CacheHandle> {
        self.handles.read().caches.get(name).cloned()
    }

    /// The measured operation named `name`.
    pub fn operation(&self, name: &str) -> Option<OperationHandle> {
        self.handles.read().operations.get(name).cloned()
    }

    /// The budget of the operation named `name`.
    pub fn budget(&self, name: &str) -> Option<BudgetHandle> {
        self.handles.read().budgets.get(name).cloned()
    }

    /// Every registered breaker, in name order.
    pub fn breakers(&self) -> Vec<BreakerHandle> {
        self.handles.read().breakers.values().cloned().collect()
    }

    /// Every registered cache, in name order.
    pub fn caches(&self) -> Vec<CacheHandle> {
        self.handles.read().caches.values().cloned().collect()
    }

    fn budgets(&self) -> Vec<BudgetHandle> {
        self.handles.read().budgets.values().cloned().collect()
    }

    /// Evaluates every budget now and returns the active alerts, oldest
    /// first. Evaluating here lets alerts clear when traffic has stopped.
    pub fn alerts(&self) -> Vec<Alert> {
        let mut alerts: Vec<Alert> = self
            .budgets()
            .iter()
            .flat_map(|budget| {
                budget.evaluate();
                budget.alerts()
            })
            .collect();
        alerts.sort_by(|a, b| {
            a.raised
                .cmp(&b.raised)
                .then_with(|| a.operation.cmp(&b.operation))
        });
        alerts
    }

    /// Invalidates every entry carrying any of `tags`, in every cache.
    /// Returns how many entries were removed.
    pub async fn cache_invalidate_tags<T: AsRef<str>>(&self, tags: &[T]) -> u64 {
        let mut removed = 0;
        for cache in self.caches() {
            for tag in tags {
                removed += cache.invalidate_tag(tag.as_ref()).await;
            }
        }
        removed
    }

    /// Runs the warm-up loads of the caches of one service — the cache named
    /// `service` and those named `service.<anything>` — or of every cache
    /// when `service` is `None`.
    pub async fn warm_caches(&self, service: Option<&str>) -> Vec<CacheWarmReport> {
        let mut reports = Vec::new();
        for cache in self.caches() {
            let belongs = match service {
                None => true,
                Some(service) => {
                    let name = cache.name();
                    name == service
                        || name
                            .strip_prefix(service)
                            .is_some_and(|rest| rest.starts_with('.'))
                }
            };
            if belongs {
                reports.push(CacheWarmReport {
                    cache: cache.name().to_owned(),
                    results: cache.warm().await,
                });
            }
        }
        reports
    }

    /// Every handle's statistics, for `/admin/stats`. Budgets are evaluated
    /// first, so `alerts` is current.
    pub fn snapshot(&self) -> RegistrySnapshot {
        let alerts = self.alerts();
        let handles = self.handles.read();
        RegistrySnapshot {
            operations: handles
                .operations
                .values()
                .map(OperationHandle::snapshot)
                .collect(),
            breakers: handles
                .breakers
                .values()
                .map(BreakerHandle::snapshot)
                .collect(),
            concurrency: handles
                .concurrency
                .values()
                .map(ConcurrencyHandle::snapshot)
                .collect(),
            retries: handles
                .retries
                .values()
                .map(RetryHandle::snapshot)
                .collect(),
            caches: handles.caches.values().map(CacheHandle::snapshot).collect(),
            budgets: handles
                .budgets
                .values()
                .map(BudgetHandle::snapshot)
                .collect(),
            alerts,
        }
    }

    /// Whether the layers are fit to take traffic, with the reasons if not.
    ///
    /// `degraded` when a breaker is open, half-open or forced open, or a
    /// concurrency limit's wait queue is full. Active budget alerts are
    /// listed as issues but do not degrade readiness: a slow service is
    /// still better than none, and taking it out of rotation would move its
    /// load onto the others.
    pub fn readiness(&self) -> Readiness {
        let mut issues = Vec::new();
        let mut degraded = false;
        for breaker in self.breakers() {
            let state = breaker.state();
            let detail = match state {
                BreakerState::Closed => continue,
                BreakerState::Disabled => "disabled by an operator: calls pass unguarded",
                BreakerState::Open => "open: calls are refused",
                BreakerState::HalfOpen => "half-open: probing whether the service recovered",
                BreakerState::ForcedOpen => "forced open by an operator: calls are refused",
            };
            let degrades = state != BreakerState::Disabled;
            degraded |= degrades;
            issues.push(ReadinessIssue {
                component: Component::Breaker,
                name: breaker.name().to_owned(),
                detail: detail.to_owned(),
                degrades,
            });
        }
        let limits: Vec<ConcurrencyHandle> =
            self.handles.read().concurrency.values().cloned().collect();
        for limit in limits {
            let snapshot = limit.snapshot();
            if snapshot.max_queue > 0 && snapshot.queued >= snapshot.max_queue {
                degraded = true;
                issues.push(ReadinessIssue {
                    component: Component::Concurrency,
                    name: snapshot.name,
                    detail: format!(
                        "wait queue full ({} waiting, {} in flight of {}): new calls are refused",
                        snapshot.queued, snapshot.in_flight, snapshot.limit
                    ),
                    degrades: true,
                });
            }
        }
        for alert in self.alerts() {
            issues.push(ReadinessIssue {
                component: Component::Budget,
                name: alert.operation.clone(),
                detail: format!(
                    "{} budget exceeded: {:.4} observed, limit {:.4}",
                    alert.budget, alert.observed, alert.limit
                ),
                degrades: false,
            });
        }
        Readiness {
            status: if degraded {
                Status::Degraded
            } else {
                Status::Ready
            },
            issues,
        }
    }
}

/// The warm-up results of one cache.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct CacheWarmReport {
    /// The cache's name.
    pub cache: String,
    /// One result per registered warm-up load.
    pub results: Vec<WarmResult>,
}

/// Every registered handle's statistics, each list in name order.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RegistrySnapshot {
    /// Measured operations (RED over the sliding window).
    pub operations: Vec<OperationSnapshot>,
    /// Circuit breakers.
    pub breakers: Vec<BreakerSnapshot>,
    /// Concurrency limits.
    pub concurrency: Vec<ConcurrencySnapshot>,
    /// Retry layers.
    pub retries: Vec<RetrySnapshot>,
    /// Caches.
    pub caches: Vec<CacheSnapshot>,
    /// Performance budgets.
    pub budgets: Vec<BudgetSnapshot>,
    /// Active budget alerts.
    pub alerts: Vec<Alert>,
}

/// Overall readiness.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    /// Every layer admits calls normally.
    Ready,
    /// Some layer refuses calls (see the issues).
    Degraded,
}

/// Which kind of layer an issue is about.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Component {
    /// A circuit breaker.
    Breaker,
    /// A concurrency limit.
    Concurrency,
    /// A performance budget.
    Budget,
}

/// One reason readiness is not perfect.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ReadinessIssue {
    /// The kind of layer.
    pub component: Component,
    /// Its name.
    pub name: String,
    /// What is wrong, for a human.
    pub detail: String,
    /// Whether this issue makes the status `degraded`.
    pub degrades: bool,
}

/// The readiness summary: a status and the issues behind it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Readiness {
    /// `ready` or `degraded`.
    pub status: Status,
    /// Everything not normal, degrading or not.
    pub issues: Vec<ReadinessIssue>,
}
