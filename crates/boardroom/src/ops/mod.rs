//! Operations endpoints: health probes and Prometheus metrics (no auth:
//! operators protect `/metrics` at the network edge), the admin API and the
//! live dashboard (operators only), budget alerts, plus test-only debug
//! routes.
//!
//! ```
//! let (_router, api) = boardroom::ops::router().split_for_parts();
//! assert!(api.paths.paths.contains_key("/health/ready"));
//! assert!(api.paths.paths.contains_key("/metrics"));
//! assert!(api.paths.paths.contains_key("/admin/stats"));
//! ```

pub mod admin;
pub mod alerts;
pub mod dashboard;
pub mod debug;
pub mod health;
pub mod metrics;

use std::{sync::Arc, time::Duration};

use resilience::registry::Registry;
use tokio::sync::watch;
use utoipa_axum::{router::OpenApiRouter, routes};

use crate::{config::Settings, state::AppState};

/// How often the readiness gauges (`boardroom_readiness_state`) are refreshed
/// when nothing probes `/health/ready`.
const READINESS_REFRESH: Duration = Duration::from_secs(5);

/// `/health/*`, `/metrics`, `/admin/*`, `/dashboard`.
pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(health::live))
        .routes(routes!(health::ready))
        .routes(routes!(health::health))
        .routes(routes!(metrics::metrics))
        .routes(routes!(admin::get_stats))
        .routes(routes!(admin::get_alerts))
        .routes(routes!(admin::reset_breaker))
        .routes(routes!(admin::open_breaker))
        .routes(routes!(admin::disable_breaker))
        .routes(routes!(admin::invalidate_cache))
        .routes(routes!(admin::warm_cache))
        .routes(routes!(dashboard::stream_stats))
        .routes(routes!(dashboard::page))
        .merge(OpenApiRouter::from(dashboard::assets()))
}

/// The operations side of the application state: the alert hub and the
/// "shutting down" signal that ends open dashboard streams.
#[derive(Debug, Clone)]
pub struct OpsState {
    /// Budget alerts: history and webhook.
    pub alerts: alerts::AlertCenter,
    stopping: Arc<watch::Sender<bool>>,
}

impl OpsState {
    /// Listens to `registry`'s budgets as `settings.alerts` says.
    pub fn new(settings: &Settings, registry: &Registry) -> Self {
        Self {
            alerts: alerts::AlertCenter::new(&settings.alerts, registry),
            stopping: Arc::new(watch::channel(false).0),
        }
    }

    /// Tells long-lived responses (the stats stream) to end.
    pub fn begin_shutdown(&self) {
        self.stopping.send_replace(true);
    }

    /// Becomes `true` when the server begins shutting down.
    pub fn stopping(&self) -> watch::Receiver<bool> {
        self.stopping.subscribe()
    }
}

/// The background work of the operations side, run beside the server until
/// it stops: budget evaluation and webhook deliveries, and the readiness
/// gauges.
pub async fn background(state: AppState) {
    let alerts = state.ops.alerts.clone().run(state.registry.clone());
    let readiness = async {
        let mut tick = tokio::time::interval(READINESS_REFRESH);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
        loop {
            tick.tick().await;
            health::report(&state).await;
        }
    };
    tokio::join!(alerts, readiness);
}
