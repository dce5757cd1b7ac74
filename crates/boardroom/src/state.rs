//! The state every handler can reach.
//!
//! Cheap to clone: everything inside is an `Arc` or a handle.

use std::{sync::Arc, time::Instant};

use metrics_exporter_prometheus::PrometheusHandle;
use sqlx::PgPool;

use crate::{auth::JwtKeys, config::Settings};

/// Shared application state.
#[derive(Debug, Clone)]
pub struct AppState {
    /// The PostgreSQL pool.
    pub pool: PgPool,
    /// The validated settings.
    pub settings: Arc<Settings>,
    /// Token verification keys.
    pub jwt: Arc<JwtKeys>,
    /// Renders the process-wide Prometheus registry.
    pub metrics: PrometheusHandle,
    /// When this application was built (for uptime).
    pub started_at: Instant,
}
