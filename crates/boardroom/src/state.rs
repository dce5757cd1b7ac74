//! The state every handler can reach.
//!
//! Cheap to clone: one `Arc` (every extractor and cache loader clones the
//! state, several times a request; cloning each handle inside instead —
//! moka caches hold channel senders — was ≈ 10 % of a cached read's CPU in
//! perf).

use std::{sync::Arc, time::Instant};

use metrics_exporter_prometheus::PrometheusHandle;
use resilience::registry::Registry;

use crate::{
    auth::JwtKeys,
    config::Settings,
    jobs::JobEvents,
    notifications::NotificationsState,
    ops::OpsState,
    stacks::Database,
    users::{activity::ActivityBuffer, cache::UserCaches},
};

/// Shared application state: a pointer to [`Shared`], whose fields it
/// derefs to (`state.db`, `state.users`, …).
#[derive(Debug, Clone)]
pub struct AppState(Arc<Shared>);

impl AppState {
    /// The state around `shared`.
    pub fn new(shared: Shared) -> Self {
        Self(Arc::new(shared))
    }
}

impl std::ops::Deref for AppState {
    type Target = Shared;

    fn deref(&self) -> &Shared {
        &self.0
    }
}

/// What [`AppState`] points at.
#[derive(Debug)]
pub struct Shared {
    /// The PostgreSQL pool behind the `database` breaker.
    pub db: Database,
    /// Every resilience layer's handle, by name (stats, readiness, admin).
    pub registry: Registry,
    /// Cached callers and profiles.
    pub users: UserCaches,
    /// The activity buffer.
    pub activity: ActivityBuffer,
    /// The validated settings.
    pub settings: Arc<Settings>,
    /// Token verification keys.
    pub jwt: Arc<JwtKeys>,
    /// Renders the process-wide Prometheus registry.
    pub metrics: PrometheusHandle,
    /// Job notifications (progress events, worker wake-ups) of this process.
    pub jobs: JobEvents,
    /// When this application was built (for uptime).
    pub started_at: Instant,
    /// The assets domain: storage, scanner, step breakers, link signer.
    pub assets: crate::assets::AssetServices,
    /// Budget alerts (history, webhook) and the shutdown signal of long-lived streams.
    pub ops: OpsState,
    /// The shared second-level cache and cross-instance invalidation.
    pub shared_cache: crate::shared_cache::SharedCache,
    /// Notification channels, events and queue figures.
    pub notifications: NotificationsState,
}
