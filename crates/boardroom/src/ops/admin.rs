//! The admin API: what an operator needs in an incident.
//!
//! Every route takes an operator's token (`"role": "service_role"`): no
//! token is `401`, any other caller `403` ([`Operator`]). Every action is
//! logged at info with the operator's id (`operator`), the action and its
//! target.
//!
//! | route | what it does |
//! |---|---|
//! | `GET /admin/stats` | every service and dependency: breaker, requests, latency percentiles, concurrency, cache, budget ([`AdminStats`]) |
//! | `GET /admin/alerts` | active budget alerts and the latest raised/resolved events |
//! | `POST /admin/breakers/{name}/reset` | closes the breaker (ends an operator override) |
//! | `POST /admin/breakers/{name}/open` | forces it open: calls are refused with `503` until reset |
//! | `POST /admin/breakers/{name}/disable` | lets every call through unguarded until reset |
//! | `POST /admin/cache/invalidate` `{tags}` | drops every cached entry carrying any of the tags |
//! | `POST /admin/cache/warm` `{service?}` | runs the warm-up loads of one service's caches (or all) |
//!
//! An unknown breaker or service is `404`; a malformed body `400`; an empty
//! tag list `422`.
//!
//! ```
//! let (_router, api) = boardroom::ops::router().split_for_parts();
//! assert!(api.paths.paths.contains_key("/admin/breakers/{name}/open"));
//! ```

use std::collections::BTreeMap;

use axum::{
    extract::{FromRef, FromRequestParts, State},
    http::request::Parts,
    response::Response,
};
use chrono::{DateTime, Utc};
use resilience::registry::{CacheWarmReport, RegistrySnapshot};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::alerts::{AlertRecord, AlertView};
use crate::{
    auth::Principal,
    envelope::{self, Envelope},
    error::ApiError,
    extract::{Json, Path},
    stacks,
    state::AppState,
};

/// An operator: a caller with a `service_role` token. Anyone else is `403`
/// (and no token `401`, from [`Principal`]).
#[derive(Debug, Clone, Copy)]
pub struct Operator(pub Principal);

impl<S> FromRequestParts<S> for Operator
where
    S: Send + Sync,
    AppState: FromRef<S>,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        let principal = Principal::from_request_parts(parts, state).await?;
        if !principal.operator {
            return Err(ApiError::forbidden(
                "operators only: this needs a service_role token",
            ));
        }
        Ok(Self(principal))
    }
}

/// Everything `/admin/stats`, its stream and the dashboard show.
#[derive(Debug, Clone, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct AdminStats {
    /// When this snapshot was taken.
    pub at: DateTime<Utc>,
    /// Seconds since the application started.
    pub uptime_seconds: u64,
    /// `ready`, or `degraded` while a breaker is not closed or a queue is full.
    pub status: String,
    /// One tile per service (domain router) and dependency, in name order.
    pub services: Vec<ServiceStats>,
    /// Active budget alerts, oldest first.
    pub alerts: Vec<AlertView>,
    /// The notification delivery queue: depth, oldest due age, rate, dead
    /// letters and each provider's breaker.
    pub notifications: crate::notifications::stats::QueueStats,
    /// Every layer handle's raw statistics (`operations`, `breakers`,
    /// `concurrency`, `retries`, `caches`, `budgets`, `alerts`).
    #[schema(value_type = Object)]
    pub layers: RegistrySnapshot,
}

/// One service's or dependency's figures.
#[derive(Debug, Clone, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ServiceStats {
    /// Its name (`users`, `database`, …).
    pub name: String,
    /// `service` (a domain router) or `dependency`.
    pub kind: String,
    /// Its circuit breaker.
    pub breaker: Option<BreakerStats>,
    /// Requests over the service's statistics window.
    pub requests: Option<RequestStats>,
    /// Its concurrency limit.
    pub concurrency: Option<ConcurrencyStats>,
    /// Its caches, added up.
    pub cache: Option<CacheStats>,
    /// Its performance budget.
    pub budget: Option<BudgetStats>,
}

/// A breaker's state.
#[derive(Debug, Clone, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct BreakerStats {
    /// `closed`, `open`, `half_open`, `forced_open` or `disabled`.
    pub state: String,
    /// Calls in the breaker's window.
    pub calls: u64,
    /// Failed calls in the window.
    pub failures: u64,
    /// `failures / calls` (0 without calls).
    pub failure_rate: f64,
    /// Milliseconds until the next probe, when open.
    pub next_probe_in_ms: Option<u64>,
    /// State changes since start.
    pub transitions: u64,
}

/// Requests over the statistics window.
#[derive(Debug, Clone, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct RequestStats {
    /// The window's length in seconds.
    pub window_seconds: f64,
    /// Requests finished within the window.
    pub count: u64,
    /// Of those, failures (`5xx` and refusals).
    pub failures: u64,
    /// Requests per second.
    pub rate_per_second: f64,
    /// `failures / count`.
    pub error_rate: f64,
    /// Median latency, ms.
    pub p50_ms: f64,
    /// 95th percentile latency, ms.
    pub p95_ms: f64,
    /// 99th percentile latency, ms.
    pub p99_ms: f64,
    /// Requests in progress.
    pub in_flight: u64,
}

/// A concurrency limit's occupancy.
#[derive(Debug, Clone, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ConcurrencyStats {
    /// Calls holding a permit.
    pub in_flight: usize,
    /// The limit.
    pub limit: usize,
    /// Calls waiting.
    pub queued: usize,
    /// The queue's capacity.
    pub max_queue: usize,
    /// Calls admitted since start.
    pub admitted: u64,
    /// Calls refused (queue full or waited too long) since start.
    pub rejected: u64,
}

/// Cache figures.
#[derive(Debug, Clone, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct CacheStats {
    /// `hits / (hits + misses)` since start.
    pub hit_rate: f64,
    /// Entries now.
    pub entries: u64,
    /// Hits since start.
    pub hits: u64,
    /// Misses since start.
    pub misses: u64,
}

/// A budget's state.
#[derive(Debug, Clone, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct BudgetStats {
    /// `ok` or `breached`.
    pub status: String,
    /// Calls in the budget's window.
    pub samples: u64,
    /// Calls needed before an alert is raised or cleared.
    pub min_samples: u64,
    /// One entry per configured limit.
    pub limits: Vec<BudgetLimit>,
}

/// One limit of a budget.
#[derive(Debug, Clone, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct BudgetLimit {
    /// `p95`, `p99` or `error_rate`.
    pub budget: String,
    /// The limit: seconds for latencies, a fraction for the error rate.
    pub limit: f64,
    /// The value over the window now, same unit.
    pub observed: f64,
    /// Whether an alert is active.
    pub breached: bool,
}

/// Builds the stats of `state`'s registry (evaluating every budget first).
pub fn stats(state: &AppState) -> AdminStats {
    let registry = &state.registry;
    let layers = registry.snapshot();
    let readiness = registry.readiness();
    let mut services: BTreeMap<String, ServiceStats> = BTreeMap::new();
    fn tile<'a>(
        services: &'a mut BTreeMap<String, ServiceStats>,
        name: &str,
    ) -> &'a mut ServiceStats {
        // A cache named `users.profiles` belongs to the `users` tile.
        let name = name.split('.').next().unwrap_or(name).to_owned();
        services
            .entry(name.clone())
            .or_insert_with(|| ServiceStats {
                kind: if stacks::DEPENDENCIES.contains(&name.as_str()) {
                    "dependency"
                } else {
                    "service"
                }
                .to_owned(),
                name,
                breaker: None,
                requests: None,
                concurrency: None,
                cache: None,
                budget: None,
            })
    }
    for b in &layers.breakers {
        tile(&mut services, &b.name).breaker = Some(BreakerStats {
            state: b.state.as_str().to_owned(),
            calls: b.calls,
            failures: b.failures,
            failure_rate: b.failure_rate,
            next_probe_in_ms: b.next_probe_in_ms,
            transitions: b.transitions,
        });
    }
    for o in &layers.operations {
        tile(&mut services, &o.name).requests = Some(RequestStats {
            window_seconds: o.window.as_secs_f64(),
            count: o.count,
            failures: o.failures,
            rate_per_second: o.rate_per_second,
            error_rate: o.error_rate,
            p50_ms: o.p50_ms,
            p95_ms: o.p95_ms,
            p99_ms: o.p99_ms,
            in_flight: o.in_flight,
        });
    }
    for c in &layers.concurrency {
        tile(&mut services, &c.name).concurrency = Some(ConcurrencyStats {
            in_flight: c.in_flight,
            limit: c.limit,
            queued: c.queued,
            max_queue: c.max_queue,
            admitted: c.admitted,
            rejected: c.rejected_queue_full + c.rejected_queue_timeout,
        });
    }
    for c in &layers.caches {
        let entry = tile(&mut services, &c.name)
            .cache
            .get_or_insert(CacheStats {
                hit_rate: 0.0,
                entries: 0,
                hits: 0,
                misses: 0,
            });
        entry.entries += c.entries;
        entry.hits += c.hits;
        entry.misses += c.misses;
        let lookups = entry.hits + entry.misses;
        entry.hit_rate = if lookups == 0 {
            0.0
        } else {
            entry.hits as f64 / lookups as f64
        };
    }
    for b in &layers.budgets {
        let breached = b.limits.iter().any(|l| l.breached);
        tile(&mut services, &b.name).budget = Some(BudgetStats {
            status: if breached { "breached" } else { "ok" }.to_owned(),
            samples: b.samples,
            min_samples: b.min_samples,
            limits: b
                .limits
                .iter()
                .map(|l| BudgetLimit {
                    budget: l.budget.as_str().to_owned(),
                    limit: l.limit,
                    observed: l.observed,
                    breached: l.breached,
                })
                .collect(),
        });
    }
    AdminStats {
        at: Utc::now(),
        uptime_seconds: state.started_at.elapsed().as_secs(),
        status: match readiness.status {
            resilience::registry::Status::Ready => "ready",
            resilience::registry::Status::Degraded => "degraded",
        }
        .to_owned(),
        services: services.into_values().collect(),
        alerts: layers.alerts.iter().map(AlertView::from).collect(),
        notifications: state.notifications.stats.get(),
        layers,
    }
}

/// `GET /admin/stats`.
#[utoipa::path(
    get,
    path = "/admin/stats",
    tag = "admin",
    security(("bearer" = [])),
    responses((status = 200, description = "Every service's and dependency's figures", body = Envelope<AdminStats>))
)]
pub async fn get_stats(State(state): State<AppState>, Operator(op): Operator) -> Response {
    tracing::debug!(operator = %op.user_id, "admin: stats read");
    envelope::ok(stats(&state))
}

/// `/admin/alerts`: what is over budget now, and what happened lately.
#[derive(Debug, Clone, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct AlertsReport {
    /// Active alerts, oldest first.
    pub active: Vec<AlertView>,
    /// The latest raised and resolved events, newest first (`alerts.history` kept).
    pub recent: Vec<AlertRecord>,
}

/// `GET /admin/alerts`.
#[utoipa::path(
    get,
    path = "/admin/alerts",
    tag = "admin",
    security(("bearer" = [])),
    responses((status = 200, description = "Active budget alerts and recent events", body = Envelope<AlertsReport>))
)]
pub async fn get_alerts(State(state): State<AppState>, Operator(op): Operator) -> Response {
    tracing::debug!(operator = %op.user_id, "admin: alerts read");
    let active = state.registry.alerts();
    envelope::ok(AlertsReport {
        active: active.iter().map(AlertView::from).collect(),
        recent: state.ops.alerts.recent(),
    })
}

/// The outcome of a breaker action.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct BreakerAction {
    /// The breaker.
    pub name: String,
    /// `reset`, `open` or `disable`.
    pub action: String,
    /// Its state before.
    pub previous_state: String,
    /// Its state now.
    pub state: String,
}

#[derive(Clone, Copy)]
enum Act {
    Reset,
    Open,
    Disable,
}

fn act_on_breaker(
    state: &AppState,
    op: Principal,
    name: &str,
    act: Act,
) -> Result<Response, ApiError> {
    let breaker = state
        .registry
        .breaker(name)
        .ok_or_else(|| ApiError::NotFound(format!("breaker '{name}'")))?;
    let previous = breaker.state();
    let action = match act {
        Act::Reset => {
            breaker.reset();
            "reset"
        }
        Act::Open => {
            breaker.force_open();
            "open"
        }
        Act::Disable => {
            breaker.disable();
            "disable"
        }
    };
    let now = breaker.state();
    tracing::info!(
        operator = %op.user_id,
        action = %format_args!("breaker.{action}"),
        breaker = name,
        from = previous.as_str(),
        to = now.as_str(),
        "admin action"
    );
    Ok(envelope::ok(BreakerAction {
        name: name.to_owned(),
        action: action.to_owned(),
        previous_state: previous.as_str().to_owned(),
        state: now.as_str().to_owned(),
    }))
}

/// `POST /admin/breakers/{name}/reset`: close the breaker, ending any override.
#[utoipa::path(
    post,
    path = "/admin/breakers/{name}/reset",
    tag = "admin",
    params(("name" = String, Path, description = "Breaker name (a service or dependency: `users`, `database`, …)")),
    security(("bearer" = [])),
    responses((status = 200, description = "The breaker is closed", body = Envelope<BreakerAction>))
)]
pub async fn reset_breaker(
    State(state): State<AppState>,
    Operator(op): Operator,
    Path(name): Path<String>,
) -> Result<Response, ApiError> {
    act_on_breaker(&state, op, &name, Act::Reset)
}

/// `POST /admin/breakers/{name}/open`: force the breaker open (calls get `503`) until reset.
#[utoipa::path(
    post,
    path = "/admin/breakers/{name}/open",
    tag = "admin",
    params(("name" = String, Path, description = "Breaker name (a service or dependency: `users`, `database`, …)")),
    security(("bearer" = [])),
    responses((status = 200, description = "The breaker is forced open", body = Envelope<BreakerAction>))
)]
pub async fn open_breaker(
    State(state): State<AppState>,
    Operator(op): Operator,
    Path(name): Path<String>,
) -> Result<Response, ApiError> {
    act_on_breaker(&state, op, &name, Act::Open)
}

/// `POST /admin/breakers/{name}/disable`: let every call through unguarded until reset.
#[utoipa::path(
    post,
    path = "/admin/breakers/{name}/disable",
    tag = "admin",
    params(("name" = String, Path, description = "Breaker name (a service or dependency: `users`, `database`, …)")),
    security(("bearer" = [])),
    responses((status = 200, description = "The breaker is disabled", body = Envelope<BreakerAction>))
)]
pub async fn disable_breaker(
    State(state): State<AppState>,
    Operator(op): Operator,
    Path(name): Path<String>,
) -> Result<Response, ApiError> {
    act_on_breaker(&state, op, &name, Act::Disable)
}

/// `POST /admin/cache/invalidate` body.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct InvalidateRequest {
    /// Tags to invalidate (1 to 100, each 1 to 200 characters).
    pub tags: Vec<String>,
}

/// What an invalidation removed.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct InvalidateResult {
    /// The tags invalidated.
    pub tags: Vec<String>,
    /// Entries removed, over every cache.
    pub removed: u64,
}

/// `POST /admin/cache/invalidate`: drop every cached entry carrying any of `tags`.
#[utoipa::path(
    post,
    path = "/admin/cache/invalidate",
    tag = "admin",
    request_body = InvalidateRequest,
    security(("bearer" = [])),
    responses((status = 200, description = "Entries removed", body = Envelope<InvalidateResult>))
)]
pub async fn invalidate_cache(
    State(state): State<AppState>,
    Operator(op): Operator,
    Json(body): Json<InvalidateRequest>,
) -> Result<Response, ApiError> {
    if body.tags.is_empty() || body.tags.len() > 100 {
        return Err(ApiError::validation("tags", "must list 1 to 100 tags"));
    }
    if body
        .tags
        .iter()
        .any(|tag| tag.is_empty() || tag.chars().count() > 200)
    {
        return Err(ApiError::validation(
            "tags",
            "each tag must be 1 to 200 characters",
        ));
    }
    let removed = state.registry.cache_invalidate_tags(&body.tags).await;
    tracing::info!(operator = %op.user_id, action = "cache.invalidate", tags = ?body.tags, removed, "admin action");
    Ok(envelope::ok(InvalidateResult {
        tags: body.tags,
        removed,
    }))
}

/// `POST /admin/cache/warm` body.
#[derive(Debug, Clone, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct WarmRequest {
    /// The service whose caches to warm; absent or `null` for every cache.
    #[serde(default)]
    pub service: Option<String>,
}

/// The warm-up results.
#[derive(Debug, Clone, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct WarmResult {
    /// The service asked for (`null`: every cache).
    pub service: Option<String>,
    /// One entry per cache warmed: `{cache, results: [{name, error}]}`.
    #[schema(value_type = Vec<Object>)]
    pub caches: Vec<CacheWarmReport>,
}

/// `POST /admin/cache/warm`: run the warm-up loads of one service's caches (or all).
#[utoipa::path(
    post,
    path = "/admin/cache/warm",
    tag = "admin",
    request_body = WarmRequest,
    security(("bearer" = [])),
    responses((status = 200, description = "Warm-up results per cache", body = Envelope<WarmResult>))
)]
pub async fn warm_cache(
    State(state): State<AppState>,
    Operator(op): Operator,
    Json(body): Json<WarmRequest>,
) -> Result<Response, ApiError> {
    if let Some(service) = &body.service {
        let known = stacks::DOMAINS.contains(&service.as_str())
            || stacks::DEPENDENCIES.contains(&service.as_str());
        if !known {
            return Err(ApiError::NotFound(format!("service '{service}'")));
        }
    }
    let caches = state.registry.warm_caches(body.service.as_deref()).await;
    tracing::info!(
        operator = %op.user_id,
        action = "cache.warm",
        service = body.service.as_deref().unwrap_or("*"),
        caches = caches.len(),
        "admin action"
    );
    Ok(envelope::ok(WarmResult {
        service: body.service,
        caches,
    }))
}
