//! Performance budgets: a p95/p99 latency and error-rate limit per operation.
//!
//! A budget is attached to an operation measured by the
//! [metrics layer](crate::metrics) and judged over that operation's sliding
//! window. **When it is evaluated:** completed calls trigger an evaluation at
//! most once per [`EVALUATION_INTERVAL`] (1 s; every other call pays one
//! relaxed atomic load), and [`BudgetHandle::evaluate`] evaluates on demand —
//! the [registry](crate::registry) does so whenever alerts are read, so an
//! alert also clears when traffic stops.
//!
//! **Breach:** with at least `min_samples` calls in the window and a value over
//! its limit, an alert is raised: a `warn!` log, `resilience_budget_breaches_total{name,budget}`
//! incremented, `resilience_budget_breached{name,budget}` set to 1, an
//! [`Alert`] listed by [`BudgetHandle::alerts`] (and the registry), and an
//! [`AlertEvent`] for every callback ([`BudgetHandle::on_event`], for example a
//! webhook). **Clear:** back at or under the limit with at least `min_samples`
//! calls — or no calls at all in the window — the gauge returns to 0, the
//! alert is removed and callbacks get a `resolved` event. Between 1 and
//! `min_samples - 1` calls nothing changes, so a few calls cannot make an
//! alert flap.
//!
//! ```
//! use std::sync::{Arc, Mutex};
//! use std::time::Duration;
//! use resilience::budget::{AlertEventKind, BudgetConfig, BudgetHandle, BudgetKind};
//! use resilience::metrics::{MetricsConfig, MetricsLayer};
//! use tower::{Layer, ServiceExt, service_fn};
//!
//! # #[tokio::main(flavor = "current_thread", start_paused = true)]
//! # async fn main() -> Result<(), resilience::BoxError> {
//! let layer = MetricsLayer::new("reports.render", MetricsConfig::default())?;
//! let budget = BudgetHandle::attach(
//!     &layer.handle(),
//!     BudgetConfig { p95: Some(Duration::from_millis(100)), min_samples: 5, ..Default::default() },
//! )?;
//! let events = Arc::new(Mutex::new(Vec::new()));
//! let sink = events.clone();
//! budget.on_event(Arc::new(move |event| sink.lock().unwrap().push(event.event)));
//!
//! let slow = layer.layer(service_fn(|()| async {
//!     tokio::time::sleep(Duration::from_millis(300)).await;
//!     Ok::<_, resilience::BoxError>(())
//! }));
//! for _ in 0..5 {
//!     slow.clone().oneshot(()).await?;
//! }
//! budget.evaluate();
//! assert_eq!(budget.alerts()[0].budget, BudgetKind::P95);
//! assert_eq!(*events.lock().unwrap(), [AlertEventKind::Raised]);
//!
//! // A minute later the slow calls have left the window: the alert clears.
//! tokio::time::advance(Duration::from_secs(70)).await;
//! budget.evaluate();
//! assert!(budget.alerts().is_empty());
//! assert_eq!(*events.lock().unwrap(), [AlertEventKind::Raised, AlertEventKind::Resolved]);
//! # Ok(())
//! # }
//! ```

mod alert;
mod config;
mod handle;

pub use alert::{Alert, AlertCallback, AlertEvent, AlertEventKind, BudgetKind};
pub use config::BudgetConfig;
pub(crate) use handle::BudgetState;
pub use handle::{BudgetHandle, BudgetSnapshot, EVALUATION_INTERVAL, LimitSnapshot};

/// Describes the budget metrics (called by [`crate::metrics::describe_all`]).
pub(crate) fn describe() {
    metrics::describe_gauge!(
        "resilience_budget_breached",
        "1 while an operation is over a performance budget limit (p95, p99 or error_rate), else 0."
    );
    metrics::describe_counter!(
        "resilience_budget_breaches_total",
        "Times an operation went over a performance budget limit."
    );
}
