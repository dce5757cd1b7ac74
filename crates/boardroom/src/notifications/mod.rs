//! Notifications: multi-channel delivery through a durable priority queue in
//! PostgreSQL, with per-person preferences and quiet hours.
//!
//! - [`send`]: `POST /v1/notifications` expands a send to one delivery per
//!   (recipient, channel), applying [`preferences`] and [`quiet`] hours;
//!   `GET /v1/notifications/{id}` shows each delivery's status.
//! - [`queue`] and [`worker`]: deliveries are claimed with `FOR UPDATE SKIP
//!   LOCKED` by priority then due time, under a lease, woken by `NOTIFY`
//!   ([`events`]); failures are retried with backoff and jitter, then `dead`.
//! - [`channels`]: email (SMTP via lettre), push and SMS (HTTP gateways),
//!   each a `tower::Service` in its own resilience stack (`smtp`, `push`,
//!   `sms`), with a file transport when no provider is configured; in-app
//!   deliveries are stored and read through [`inbox`] (feed, read, SSE).
//! - [`tracking`]: the email open pixel and click redirects.
//! - [`bulk`]: `POST /v1/notifications/bulk`, a job of many sends;
//!   [`analytics`]: per-organization delivery and engagement reports.
//! - [`stats`]: queue depth, oldest due age, rate and dead letters for
//!   `/admin/stats`, `/health/ready` and `/metrics`.
//!
//! ```
//! let (_router, api) = boardroom::notifications::router().split_for_parts();
//! assert!(api.paths.paths.contains_key("/v1/notifications"));
//! ```

pub mod analytics;
pub mod bulk;
pub mod channels;
pub mod config;
pub mod events;
pub mod inbox;
pub mod model;
pub mod preferences;
pub mod queue;
pub mod quiet;
pub mod send;
pub mod stats;
pub mod tracking;
pub mod worker;

use resilience::registry::Registry;
use tokio::{sync::watch, task::JoinSet};
use utoipa_axum::{router::OpenApiRouter, routes};

use crate::{config::Settings, state::AppState};

/// `NOTIFY` channel: deliveries were queued.
pub const QUEUED_CHANNEL: &str = "boardroom_notifications_queued";
/// `NOTIFY` channel: in-app feeds grew (payload: the users).
pub const INBOX_CHANNEL: &str = "boardroom_notifications_inbox";
/// Counter of delivery tries by channel and outcome.
pub const DELIVERIES: &str = "boardroom_notification_deliveries_total";

/// The routes of the domain (all inside the `notifications` stack).
pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(send::send))
        .routes(routes!(bulk::bulk_send))
        .routes(routes!(analytics::analytics))
        .routes(routes!(send::get_notification))
        .routes(routes!(
            preferences::get_preferences,
            preferences::put_preferences
        ))
        .routes(routes!(inbox::feed))
        .routes(routes!(inbox::mark_read))
        .routes(routes!(inbox::stream))
        .routes(routes!(tracking::open_pixel))
        .routes(routes!(tracking::click))
}

/// What the domain keeps in the application state.
#[derive(Debug, Clone)]
pub struct NotificationsState {
    /// The outgoing channels with their stacks.
    pub channels: channels::Channels,
    /// Wake-ups and feed events.
    pub events: events::NotificationEvents,
    /// The latest queue figures.
    pub stats: stats::StatsCell,
}

impl NotificationsState {
    /// Builds the channels (registering their stacks in `registry`).
    pub fn new(settings: &Settings, registry: &Registry) -> anyhow::Result<Self> {
        Ok(Self {
            channels: channels::Channels::new(settings, registry)?,
            events: events::NotificationEvents::new(),
            stats: stats::StatsCell::default(),
        })
    }
}

/// Starts the `LISTEN` connection, the workers and the stats refresher;
/// they stop when `stop` turns true.
pub fn start(state: &AppState, stop: &watch::Receiver<bool>, tasks: &mut JoinSet<()>) {
    tasks.spawn(
        state
            .notifications
            .events
            .clone()
            .listen(state.settings.database.url.clone(), stop.clone()),
    );
    worker::spawn(state, stop, tasks);
    tasks.spawn(stats::refresh(state.clone(), stop.clone()));
}

/// HELP texts of the domain's metrics.
pub fn describe() {
    metrics::describe_counter!(
        DELIVERIES,
        metrics::Unit::Count,
        "Notification delivery tries, by channel and outcome (sent, retry, dead)."
    );
    stats::describe();
}
