//! Liveness and readiness probes.
//!
//! `GET /health/live` answers `200` while the process serves requests.
//! `GET /health/ready` (and `GET /health`) check the database (a `SELECT 1`
//! with its round-trip time, bounded by `health.timeout`), the pool and the
//! process memory; each check has its own status and the overall status is
//! the worst of them: `ok`, `degraded` (slow database, exhausted pool, the
//! shared Redis cache unreachable or its breaker open) or `down` (database
//! unreachable), which answers `503`. `checks.redis` is present only when
//! `cache.redis_url` is set; Redis is never a reason for `down`.
//!
//! Every report also sets `boardroom_readiness_state{state}` (one series per
//! status, exactly one at 1), refreshed every few seconds by
//! [`crate::ops::background`] even when nothing probes, so Prometheus can
//! alert on readiness failing.
//!
//! ```
//! use boardroom::ops::health::Status;
//! assert_eq!(Status::Ok.max(Status::Degraded), Status::Degraded);
//! assert_eq!(Status::Degraded.max(Status::Down), Status::Down);
//! ```

use std::time::Instant;

use axum::{
    Json,
    extract::State,
    http::{HeaderMap, StatusCode},
    response::{IntoResponse, Response},
};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::{
    envelope::{Envelope, ErrorBody},
    middleware::REQUEST_ID,
    state::AppState,
};

/// A check's verdict, ordered from best to worst.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    /// Working normally.
    Ok,
    /// Working, but slow or near a limit.
    Degraded,
    /// Not working; the service is not ready.
    Down,
}

/// The readiness report.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct HealthReport {
    /// The worst status of the checks.
    pub status: Status,
    /// Each check.
    pub checks: Checks,
    /// The service version.
    pub version: String,
    /// Seconds since the application started.
    pub uptime_seconds: u64,
}

/// The individual checks of [`HealthReport`].
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct Checks {
    /// PostgreSQL reachability and latency.
    pub database: DatabaseCheck,
    /// Connection pool usage.
    pub pool: PoolCheck,
    /// Process memory.
    pub memory: MemoryCheck,
    /// The resilience layers of every service and dependency.
    pub services: ServicesCheck,
    /// The activity buffer.
    pub activity: ActivityCheck,
    /// The shared second-level cache (Redis), when `cache.redis_url` is set.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub redis: Option<crate::shared_cache::L2Status>,
    /// Assets: object store, clamd, processing backlog.
    pub assets: crate::assets::health::AssetsCheck,
    /// The notification delivery queue.
    pub notifications: NotificationsCheck,
}

/// The notification delivery queue (see `notifications::stats`).
#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct NotificationsCheck {
    /// `degraded` when the oldest due delivery has waited over a minute or a
    /// provider's breaker is not closed; never `down`.
    pub status: Status,
    /// The queue's figures (refreshed every 2 s).
    #[serde(flatten)]
    pub queue: crate::notifications::stats::QueueStats,
}

/// The in-memory activity buffer (see `users::activity`).
#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ActivityCheck {
    /// `degraded` when the buffer is at least 90 % full (posts are about to
    /// wait or be refused; usually the database is slow or down).
    pub status: Status,
    /// Events waiting to be written.
    pub buffered: usize,
    /// `activity.buffer_capacity`.
    pub capacity: usize,
    /// Events written since start.
    pub written: u64,
}

/// The breakers and queues of every service (`[services.<name>]`).
#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ServicesCheck {
    /// `degraded` while a breaker is open, half-open or forced open, or a
    /// wait queue is full; never `down` (the service still answers).
    pub status: Status,
    /// Each breaker's state by name (`closed`, `open`, `half_open`,
    /// `forced_open`, `disabled`).
    pub breakers: std::collections::BTreeMap<String, String>,
    /// Each concurrency limit by name.
    pub queues: std::collections::BTreeMap<String, QueueCheck>,
    /// Why the status is not `ok`, for a human (budget alerts are listed too).
    pub issues: Vec<String>,
}

/// One concurrency limit's occupancy.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct QueueCheck {
    /// Calls running.
    pub in_flight: usize,
    /// The current limit.
    pub limit: usize,
    /// Calls waiting.
    pub queued: usize,
    /// The queue's capacity.
    pub max_queue: usize,
}

/// `SELECT 1` against PostgreSQL.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct DatabaseCheck {
    /// `ok`, `degraded` (slower than `health.degraded_latency`) or `down`.
    pub status: Status,
    /// Round trip in milliseconds, when it answered.
    pub latency_ms: Option<f64>,
    /// Why it is down (no database error text: a category).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// Pool usage.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct PoolCheck {
    /// `degraded` when every connection is in use.
    pub status: Status,
    /// Open connections.
    pub size: u32,
    /// Open and idle.
    pub idle: u32,
    /// Open and in use.
    pub in_use: u32,
    /// `database.max_connections`.
    pub max: u32,
}

/// Resident memory of the process.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct MemoryCheck {
    /// Always `ok` (reported for dashboards; no limit is configured).
    pub status: Status,
    /// Resident set size in bytes (`VmRSS`), when the platform reports it.
    pub rss_bytes: Option<u64>,
}

/// Liveness: the process is up.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Liveness {
    /// Always `ok`.
    pub status: Status,
    /// The service version.
    pub version: String,
    /// Seconds since the application started.
    pub uptime_seconds: u64,
}

/// The readiness body: the report, plus an error object when `down`.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct HealthEnvelope {
    /// `false` when the status is `down`.
    pub success: bool,
    /// The report.
    pub data: HealthReport,
    /// Present when `down`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<ErrorBody>,
}

/// `GET /health/live`.
#[utoipa::path(
    get,
    path = "/health/live",
    tag = "operations",
    responses((status = 200, description = "The process is up", body = Envelope<Liveness>))
)]
pub async fn live(State(state): State<AppState>) -> Json<Envelope<Liveness>> {
    Json(Envelope::new(Liveness {
        status: Status::Ok,
        version: env!("CARGO_PKG_VERSION").to_owned(),
        uptime_seconds: state.started_at.elapsed().as_secs(),
    }))
}

/// `GET /health/ready`.
#[utoipa::path(
    get,
    path = "/health/ready",
    tag = "operations",
    responses(
        (status = 200, description = "Ready (`ok` or `degraded`)", body = HealthEnvelope),
        (status = 503, description = "Not ready (`down`)", body = HealthEnvelope),
    )
)]
pub async fn ready(State(state): State<AppState>, headers: HeaderMap) -> Response {
    readiness(&state, &headers).await
}

/// `GET /health`: the same as `/health/ready`.
#[utoipa::path(
    get,
    path = "/health",
    tag = "operations",
    responses(
        (status = 200, description = "Ready (`ok` or `degraded`)", body = HealthEnvelope),
        (status = 503, description = "Not ready (`down`)", body = HealthEnvelope),
    )
)]
pub async fn health(State(state): State<AppState>, headers: HeaderMap) -> Response {
    readiness(&state, &headers).await
}

async fn readiness(state: &AppState, headers: &HeaderMap) -> Response {
    let report = report(state).await;
    let down = report.status == Status::Down;
    let error = down.then(|| ErrorBody {
        code: "unavailable".into(),
        message: "the service is not ready: the database or the object store is unreachable".into(),
        request_id: headers
            .get(REQUEST_ID)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned(),
        field: None,
        retry_after: None,
    });
    let status = if down {
        StatusCode::SERVICE_UNAVAILABLE
    } else {
        StatusCode::OK
    };
    (
        status,
        Json(HealthEnvelope {
            success: !down,
            data: report,
            error,
        }),
    )
        .into_response()
}

const READINESS: &str = "boardroom_readiness_state";

/// HELP text of the readiness gauge (called by [`crate::ops::metrics::recorder`]).
pub(crate) fn describe() {
    metrics::describe_gauge!(
        READINESS,
        "1 for the current readiness status of the service (ok, degraded or down), 0 for the others."
    );
}

fn record_readiness(status: Status) {
    for (candidate, label) in [
        (Status::Ok, "ok"),
        (Status::Degraded, "degraded"),
        (Status::Down, "down"),
    ] {
        metrics::gauge!(READINESS, "state" => label).set(if candidate == status {
            1.0
        } else {
            0.0
        });
    }
}

/// Runs every check (and records the verdict in `boardroom_readiness_state`).
pub async fn report(state: &AppState) -> HealthReport {
    // Pool usage first, so the probe's own connection is not counted as in use.
    let pool = check_pool(state);
    let database = check_database(state).await;
    let memory = MemoryCheck {
        status: Status::Ok,
        rss_bytes: resident_memory_bytes(),
    };
    let services = check_services(state);
    let activity = {
        let buffered = state.activity.buffered();
        let capacity = state.activity.capacity();
        ActivityCheck {
            status: if buffered * 10 >= capacity * 9 {
                Status::Degraded
            } else {
                Status::Ok
            },
            buffered,
            capacity,
            written: state.activity.written(),
        }
    };
    let redis = match state.shared_cache.l2() {
        Some(l2) => Some(l2.status(state.settings.health.timeout).await),
        None => None,
    };
    let assets = crate::assets::health::check(state).await;
    let notifications = {
        let queue = state.notifications.stats.get();
        let stuck = queue.oldest_due_age_seconds > 60.0;
        let breaker_open = queue
            .breakers
            .values()
            .any(|s| s != "closed" && s != "disabled");
        NotificationsCheck {
            status: if stuck || breaker_open {
                Status::Degraded
            } else {
                Status::Ok
            },
            queue,
        }
    };
    let status = database
        .status
        .max(assets.status)
        .max(notifications.status)
        .max(pool.status)
        .max(memory.status)
        .max(services.status)
        .max(activity.status)
        .max(redis.as_ref().map_or(Status::Ok, |redis| redis.status));
    record_readiness(status);
    HealthReport {
        status,
        checks: Checks {
            database,
            pool,
            memory,
            services,
            activity,
            redis,
            assets,
            notifications,
        },
        version: env!("CARGO_PKG_VERSION").to_owned(),
        uptime_seconds: state.started_at.elapsed().as_secs(),
    }
}

async fn check_database(state: &AppState) -> DatabaseCheck {
    let started = Instant::now();
    let probe = sqlx::query_scalar::<_, i32>("SELECT 1").fetch_one(&state.db.pool);
    match tokio::time::timeout(state.settings.health.timeout, probe).await {
        Ok(Ok(_)) => {
            let elapsed = started.elapsed();
            let status = if elapsed > state.settings.health.degraded_latency {
                Status::Degraded
            } else {
                Status::Ok
            };
            DatabaseCheck {
                status,
                latency_ms: Some(elapsed.as_secs_f64() * 1000.0),
                error: None,
            }
        }
        Ok(Err(error)) => {
            tracing::warn!(%error, "readiness: database check failed");
            DatabaseCheck {
                status: Status::Down,
                latency_ms: None,
                error: Some("unreachable".into()),
            }
        }
        Err(_) => DatabaseCheck {
            status: Status::Down,
            latency_ms: None,
            error: Some("timed out".into()),
        },
    }
}

fn check_services(state: &AppState) -> ServicesCheck {
    let readiness = state.registry.readiness();
    let snapshot = state.registry.snapshot();
    ServicesCheck {
        status: match readiness.status {
            resilience::registry::Status::Ready => Status::Ok,
            resilience::registry::Status::Degraded => Status::Degraded,
        },
        breakers: snapshot
            .breakers
            .into_iter()
            .map(|b| (b.name, b.state.as_str().to_owned()))
            .collect(),
        queues: snapshot
            .concurrency
            .into_iter()
            .map(|c| {
                let check = QueueCheck {
                    in_flight: c.in_flight,
                    limit: c.limit,
                    queued: c.queued,
                    max_queue: c.max_queue,
                };
                (c.name, check)
            })
            .collect(),
        issues: readiness
            .issues
            .into_iter()
            .map(|issue| format!("{}: {}", issue.name, issue.detail))
            .collect(),
    }
}

fn check_pool(state: &AppState) -> PoolCheck {
    let pool = &state.db.pool;
    let size = pool.size();
    let idle = u32::try_from(pool.num_idle()).unwrap_or(u32::MAX).min(size);
    let max = state.settings.database.max_connections;
    let in_use = size - idle;
    PoolCheck {
        status: if in_use >= max {
            Status::Degraded
        } else {
            Status::Ok
        },
        size,
        idle,
        in_use,
        max,
    }
}

/// `VmRSS` from `/proc/self/status`, in bytes (Linux only; `None` elsewhere).
pub fn resident_memory_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}
