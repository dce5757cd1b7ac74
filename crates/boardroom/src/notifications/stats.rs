//! Queue figures for `/admin/stats`, `/health/ready` and `/metrics`,
//! refreshed every [`REFRESH`] by one query (so the probes stay cheap).

use std::{
    sync::{Arc, RwLock},
    time::Duration,
};

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use tokio::sync::watch;
use utoipa::ToSchema;

use crate::state::AppState;

/// How often the figures are read.
pub const REFRESH: Duration = Duration::from_secs(2);

const DEPTH: &str = "boardroom_notification_queue_depth";
const OLDEST: &str = "boardroom_notification_oldest_due_seconds";
const DEAD: &str = "boardroom_notification_dead_deliveries";

/// The delivery queue now.
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct QueueStats {
    /// When these figures were read.
    pub at: Option<DateTime<Utc>>,
    /// Deliveries due now and waiting for a worker.
    pub depth: i64,
    /// Deliveries waiting for a later time (scheduled, quiet hours, retry backoff).
    pub waiting: i64,
    /// Deliveries a worker is sending.
    pub sending: i64,
    /// Seconds the oldest due delivery has waited past its due time.
    pub oldest_due_age_seconds: f64,
    /// Deliveries sent over the last minute, per second.
    pub deliveries_per_second: f64,
    /// Dead letters (deliveries out of retries).
    pub dead: i64,
    /// Each provider's breaker state (`smtp`, `push`, `sms`).
    pub breakers: std::collections::BTreeMap<String, String>,
}

/// The latest [`QueueStats`]. Cheap to clone.
#[derive(Debug, Clone, Default)]
pub struct StatsCell(Arc<RwLock<QueueStats>>);

impl StatsCell {
    /// The latest figures (zeros before the first read).
    pub fn get(&self) -> QueueStats {
        self.0.read().map(|s| s.clone()).unwrap_or_default()
    }
}

/// HELP texts.
pub(crate) fn describe() {
    metrics::describe_gauge!(
        DEPTH,
        "Notification deliveries due now and waiting for a worker."
    );
    metrics::describe_gauge!(
        OLDEST,
        metrics::Unit::Seconds,
        "How long the oldest due notification delivery has waited past its due time."
    );
    metrics::describe_gauge!(
        DEAD,
        "Notification deliveries that ran out of retries (dead letters)."
    );
}

type Row = (i64, i64, i64, Option<f64>, i64, i64);

#[allow(clippy::cast_precision_loss)]
fn as_f64(n: i64) -> f64 {
    n as f64
}

/// Reads the figures once.
pub async fn read(state: &AppState) -> Result<QueueStats, sqlx::Error> {
    let (depth, waiting, sending, oldest, sent, dead): Row = sqlx::query_as(
        "SELECT
             count(*) FILTER (WHERE status IN ('queued', 'deferred', 'failed') AND run_at <= now()),
             count(*) FILTER (WHERE status IN ('queued', 'deferred', 'failed') AND run_at > now()),
             count(*) FILTER (WHERE status = 'sending'),
             extract(epoch FROM now() - min(run_at) FILTER (
                 WHERE status IN ('queued', 'deferred', 'failed') AND run_at <= now()))::float8,
             count(*) FILTER (WHERE sent_at > now() - interval '60 seconds'),
             count(*) FILTER (WHERE status = 'dead')
         FROM notification_deliveries
         WHERE status IN ('queued', 'deferred', 'failed', 'sending', 'dead')
            OR sent_at > now() - interval '60 seconds'",
    )
    .fetch_one(&state.db.pool)
    .await?;
    let snapshot = state.registry.snapshot();
    let breakers = snapshot
        .breakers
        .into_iter()
        .filter(|b| super::channels::STACKS.contains(&b.name.as_str()))
        .map(|b| (b.name, b.state.as_str().to_owned()))
        .collect();
    let rate = as_f64(sent) / 60.0;
    Ok(QueueStats {
        at: Some(Utc::now()),
        depth,
        waiting,
        sending,
        oldest_due_age_seconds: oldest.unwrap_or(0.0).max(0.0),
        deliveries_per_second: rate,
        dead,
        breakers,
    })
}

/// Refreshes `state.notifications.stats` and the gauges until `stop`.
pub async fn refresh(state: AppState, mut stop: watch::Receiver<bool>) {
    let mut tick = tokio::time::interval(REFRESH);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = stop.changed() => return,
        }
        if *stop.borrow() {
            return;
        }
        match read(&state).await {
            Ok(stats) => {
                metrics::gauge!(DEPTH).set(as_f64(stats.depth));
                metrics::gauge!(DEAD).set(as_f64(stats.dead));
                metrics::gauge!(OLDEST).set(stats.oldest_due_age_seconds);
                if let Ok(mut cell) = state.notifications.stats.0.write() {
                    *cell = stats;
                }
            }
            Err(error) => tracing::debug!(%error, "notifications: stats not read"),
        }
    }
}
