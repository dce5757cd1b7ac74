//! The assets part of `/health/ready`: the object store (a write and delete
//! of a probe object), clamd (`PING`) and the processing backlog.
//!
//! The store failing is `down` (no upload or download can work); clamd
//! failing is only `degraded`: uploads are still accepted and their scans
//! wait for it.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::{ops::health::Status, state::AppState};

/// Readiness of the assets domain.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct AssetsCheck {
    /// The worst of the parts.
    pub status: Status,
    /// `ok` or `down`.
    pub storage: Status,
    /// `ok`, `degraded` (unreachable) or `disabled` when no scanner is configured.
    pub scanner: String,
    /// Processing tasks waiting or running (`null` when the database did not answer).
    pub pending_tasks: Option<i64>,
}

/// Runs the checks, each bounded by `health.timeout`.
pub async fn check(state: &AppState) -> AssetsCheck {
    let timeout = state.settings.health.timeout;
    let storage = match tokio::time::timeout(timeout, state.assets.storage.probe()).await {
        Ok(Ok(())) => Status::Ok,
        Ok(Err(error)) => {
            tracing::warn!(%error, "readiness: object store check failed");
            Status::Down
        }
        Err(_) => Status::Down,
    };
    let (scanner, scanner_status) = match &state.assets.clamd {
        None => ("disabled".to_owned(), Status::Ok),
        Some(clamd) => match tokio::time::timeout(timeout, clamd.ping()).await {
            Ok(Ok(())) => ("ok".to_owned(), Status::Ok),
            _ => ("degraded".to_owned(), Status::Degraded),
        },
    };
    let pending_tasks = tokio::time::timeout(
        timeout,
        sqlx::query_scalar::<_, i64>(
            "SELECT count(*) FROM asset_tasks WHERE state IN ('available', 'running')",
        )
        .fetch_one(&state.db.pool),
    )
    .await
    .ok()
    .and_then(Result::ok);
    AssetsCheck {
        status: storage.max(scanner_status),
        storage,
        scanner,
        pending_tasks,
    }
}
