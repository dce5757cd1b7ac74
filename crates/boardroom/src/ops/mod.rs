//! Operations endpoints: health probes and Prometheus metrics (no auth:
//! operators protect `/metrics` at the network edge), plus test-only debug
//! routes.
//!
//! ```
//! let (_router, api) = boardroom::ops::router().split_for_parts();
//! assert!(api.paths.paths.contains_key("/health/ready"));
//! assert!(api.paths.paths.contains_key("/metrics"));
//! ```

pub mod debug;
pub mod health;
pub mod metrics;

use utoipa_axum::{router::OpenApiRouter, routes};

use crate::state::AppState;

/// `/health/live`, `/health/ready`, `/health`, `/metrics`.
pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(health::live))
        .routes(routes!(health::ready))
        .routes(routes!(health::health))
        .routes(routes!(metrics::metrics))
}
