//! Activity tracking: events buffered in memory, written in batches.
//!
//! `POST /v1/users/{id}/activity` and the events the service records itself
//! (a user viewing another's profile, a user changing one) go into one bounded
//! buffer (`activity.buffer_capacity` events). A writer task takes up to
//! `activity.batch_size` events at a time — as soon as that many wait, or
//! `activity.flush_interval` after the first one arrived — and writes them
//! with one multi-row `INSERT … SELECT FROM unnest(…)`, which also moves each
//! user's `lastActiveAt` forward, in the same statement.
//!
//! The buffer never grows past its capacity:
//! - while the database is down the writer keeps its batch and retries with
//!   backoff; the buffer fills up;
//! - a client's event then waits up to `activity.enqueue_timeout` for room
//!   and is refused with `503` + `Retry-After` if none frees up
//!   (back-pressure: an accepted `202` was really queued);
//! - events the service records itself never wait: when the buffer is full
//!   they are dropped and counted (`boardroom_activity_events_total{outcome="dropped"}`).
//!
//! On graceful shutdown the writer drains the buffer and writes what is left
//! before the process exits. Events are in memory until written: a crash
//! (SIGKILL, power loss) loses at most what arrived in the last
//! `flush_interval`, which is the trade this design makes for not slowing
//! requests down. A profile's `lastActiveAt` as served from the profile cache
//! may lag by up to the cache `ttl`.
//!
//! ```
//! use boardroom::users::activity::ActivityEvent;
//! let event: ActivityEvent = serde_json::from_str(r#"{"kind": "meeting.joined"}"#).unwrap();
//! assert!(event.validate().is_ok());
//! let bad: ActivityEvent = serde_json::from_str(r#"{"kind": "Meeting Joined!"}"#).unwrap();
//! assert!(bad.validate().is_err());
//! ```

use std::{
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::Duration,
};

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use sqlx::PgPool;
use tokio::{
    sync::{mpsc, watch},
    task::JoinHandle,
};
use utoipa::ToSchema;
use uuid::Uuid;

use crate::{config::ActivitySettings, error::ApiError};

const WRITTEN: &str = "boardroom_activity_events_total";
const BUFFERED: &str = "boardroom_activity_buffered";
const CAPACITY: &str = "boardroom_activity_buffer_capacity";
const BATCHES: &str = "boardroom_activity_batches_total";

/// Longest `kind`.
const MAX_KIND: usize = 64;
/// Most events in one post.
pub const MAX_BATCH: usize = 1000;
/// Largest `metadata`, serialized.
const MAX_METADATA_BYTES: usize = 4096;

/// Gives the activity metrics their HELP texts.
pub fn describe() {
    metrics::describe_counter!(
        WRITTEN,
        "Activity events by outcome: written, dropped (buffer full, service events), rejected (buffer full, client events answered 503), lost (could not be written before shutdown)."
    );
    metrics::describe_gauge!(BUFFERED, "Activity events waiting in memory to be written.");
    metrics::describe_gauge!(CAPACITY, "The most activity events the buffer holds.");
    metrics::describe_counter!(
        BATCHES,
        "Activity batches written, by outcome (ok, retried)."
    );
}

/// `POST /v1/users/{id}/activity` body.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ActivityEvent {
    /// What happened: 1–64 of `a-z 0-9 _ . : -`, e.g. `meeting.joined`.
    #[schema(min_length = 1, max_length = 64, pattern = "^[a-z0-9_.:-]{1,64}$")]
    pub kind: String,
    /// Free-form details, a JSON object of at most 4 KiB.
    #[schema(value_type = Option<Object>)]
    pub metadata: Option<serde_json::Map<String, serde_json::Value>>,
    /// The organization it happened in, if any.
    pub organization_id: Option<Uuid>,
    /// When it happened (default: now); not more than 5 minutes ahead.
    pub occurred_at: Option<DateTime<Utc>>,
}

impl ActivityEvent {
    /// Field rules (`422` naming the field).
    pub fn validate(&self) -> Result<(), ApiError> {
        let kind_ok = (1..=MAX_KIND).contains(&self.kind.len())
            && self
                .kind
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"_.:-".contains(&b));
        if !kind_ok {
            return Err(ApiError::validation(
                "kind",
                "`kind` must be 1 to 64 of a-z, 0-9, `_`, `.`, `:`, `-`",
            ));
        }
        if let Some(metadata) = &self.metadata {
            let text = serde_json::to_string(metadata).unwrap_or_default();
            if text.len() > MAX_METADATA_BYTES || text.contains("\\u0000") {
                return Err(ApiError::validation(
                    "metadata",
                    "`metadata` must be a JSON object of at most 4096 bytes, without NUL",
                ));
            }
        }
        if let Some(at) = self.occurred_at
            && at > Utc::now() + chrono::Duration::minutes(5)
        {
            return Err(ApiError::validation(
                "occurredAt",
                "`occurredAt` may not be in the future",
            ));
        }
        Ok(())
    }
}

/// `POST /v1/users/{id}/activity` body: one event, or `{"events": [...]}`
/// with up to 1,000 (queued all or none).
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(untagged)]
pub enum ActivityPost {
    /// Several events.
    Many(ActivityBatch),
    /// One event.
    One(ActivityEvent),
}

/// Several events in one post.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ActivityBatch {
    /// 1 to 1,000 events.
    #[schema(min_items = 1, max_items = 1000)]
    pub events: Vec<ActivityEvent>,
}

impl ActivityPost {
    /// Reads a body: an object with `events` is a batch, any other object
    /// one event; errors name the field (`events[3].kind`).
    pub fn parse(bytes: &[u8]) -> Result<Vec<ActivityEvent>, ApiError> {
        let value: serde_json::Value = crate::extract::parse_json(bytes)?;
        if value.get("events").is_some() {
            let batch: ActivityBatch = crate::extract::parse_json(bytes)?;
            if batch.events.is_empty() || batch.events.len() > MAX_BATCH {
                return Err(ApiError::validation(
                    "events",
                    format!("`events` must hold 1 to {MAX_BATCH} events"),
                ));
            }
            for (i, event) in batch.events.iter().enumerate() {
                event.validate().map_err(|error| match error {
                    ApiError::Validation { field, message } => ApiError::Validation {
                        field: format!("events[{i}].{field}"),
                        message,
                    },
                    other => other,
                })?;
            }
            Ok(batch.events)
        } else {
            let event: ActivityEvent = crate::extract::parse_json(bytes)?;
            event.validate()?;
            Ok(vec![event])
        }
    }
}

/// `202` answer to a posted event.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ActivityAccepted {
    /// How many events were queued (written within `activity.flush_interval`).
    pub accepted: usize,
}

/// One recorded event, as `GET /v1/users/{id}/activity` lists it.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema, sqlx::FromRow)]
#[serde(rename_all = "camelCase")]
pub struct ActivityRecord {
    /// Sequence number.
    pub id: i64,
    /// Whose activity it is.
    pub user_id: Uuid,
    /// The organization it happened in.
    pub organization_id: Option<Uuid>,
    /// What happened.
    pub kind: String,
    /// Details.
    #[schema(value_type = Object)]
    pub metadata: serde_json::Value,
    /// `client` (posted) or `service` (seen by the service).
    pub source: String,
    /// When it happened.
    pub occurred_at: DateTime<Utc>,
}

/// `GET /v1/users/{id}/activity` data.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ActivityList {
    /// Newest first.
    pub activity: Vec<ActivityRecord>,
    /// Where the page sits.
    pub pagination: crate::pagination::Pagination,
}

/// One buffered event.
#[derive(Debug, Clone)]
struct Pending {
    user_id: Uuid,
    organization_id: Option<Uuid>,
    kind: std::borrow::Cow<'static, str>,
    metadata: String,
    source: &'static str,
    occurred_at: DateTime<Utc>,
}

#[derive(Debug, Default)]
struct Counters {
    written: AtomicU64,
}

/// Most (viewer, profile) pairs remembered for `activity.view_window`; past
/// it the oldest are forgotten and their next view is recorded again.
const RECENT_VIEWS: u64 = 100_000;

/// The buffer's sending side (cheap to clone). See the module documentation.
#[derive(Clone, Debug)]
pub struct ActivityBuffer {
    sender: mpsc::Sender<Pending>,
    /// (viewer, profile) pairs whose view was recorded within
    /// `activity.view_window`; `None` when every view is recorded.
    recent_views: Option<moka::sync::Cache<(Uuid, Uuid), ()>>,
    capacity: usize,
    enqueue_timeout: Duration,
    counters: Arc<Counters>,
}

/// The writer task; [`ActivityWriter::shutdown`] drains and stops it.
#[derive(Debug)]
pub struct ActivityWriter {
    stop: watch::Sender<bool>,
    task: JoinHandle<()>,
}

impl ActivityBuffer {
    /// The buffer and its writer, writing into `pool`.
    pub fn start(pool: PgPool, settings: &ActivitySettings) -> (Self, ActivityWriter) {
        let capacity = settings.buffer_capacity;
        let (sender, receiver) = mpsc::channel(capacity);
        let (stop, stopped) = watch::channel(false);
        let counters = Arc::new(Counters::default());
        metrics::gauge!(CAPACITY).set(capacity as f64);
        let writer = Writer {
            pool,
            receiver,
            stopped,
            batch_size: settings.batch_size,
            flush_interval: settings.flush_interval,
            counters: Arc::clone(&counters),
        };
        let task = tokio::spawn(writer.run());
        let recent_views = (!settings.view_window.is_zero()).then(|| {
            moka::sync::Cache::builder()
                .max_capacity(RECENT_VIEWS)
                .time_to_live(settings.view_window)
                .build()
        });
        let buffer = Self {
            sender,
            recent_views,
            capacity,
            enqueue_timeout: settings.enqueue_timeout,
            counters,
        };
        (buffer, ActivityWriter { stop, task })
    }

    /// Events waiting to be written.
    pub fn buffered(&self) -> usize {
        self.capacity - self.sender.capacity()
    }

    /// Events written since start.
    pub fn written(&self) -> u64 {
        self.counters.written.load(Ordering::Relaxed)
    }

    /// The most events one post may carry: a batch is queued all or nothing.
    pub fn max_batch(&self) -> usize {
        self.capacity.min(MAX_BATCH)
    }

    /// Queues a client's events for `user_id`, all or none: waits up to
    /// `activity.enqueue_timeout` for room for all of them; `503` if it does
    /// not free up (then none was queued, so resending is safe).
    pub async fn post(&self, user_id: Uuid, events: Vec<ActivityEvent>) -> Result<(), ApiError> {
        let refused = || {
            metrics::counter!(WRITTEN, "outcome" => "rejected").increment(events.len() as u64);
            ApiError::Unavailable {
                message: "activity is arriving faster than it can be stored; retry shortly".into(),
                retry_after: Duration::from_secs(1),
            }
        };
        let reserved =
            tokio::time::timeout(self.enqueue_timeout, self.sender.reserve_many(events.len()))
                .await;
        let permits = match reserved {
            Ok(Ok(permits)) => permits,
            _ => return Err(refused()),
        };
        let now = Utc::now();
        for (permit, event) in permits.zip(events.iter()) {
            permit.send(Pending {
                user_id,
                organization_id: event.organization_id,
                kind: event.kind.clone().into(),
                metadata: event
                    .metadata
                    .as_ref()
                    .map(|m| serde_json::to_string(m).unwrap_or_else(|_| "{}".to_owned()))
                    .unwrap_or_else(|| "{}".to_owned()),
                source: "client",
                occurred_at: event.occurred_at.unwrap_or(now),
            });
        }
        self.gauge();
        Ok(())
    }

    /// The buffer's capacity.
    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// `viewer` looked at `target`'s profile.
    ///
    /// Recorded at most once per (viewer, profile) within
    /// `activity.view_window`: a client polling a profile is one view a
    /// window, not one row per request.
    pub fn record_view(&self, viewer: Uuid, target: Uuid) {
        if let Some(recent) = &self.recent_views {
            if recent.contains_key(&(viewer, target)) {
                return;
            }
            recent.insert((viewer, target), ());
        }
        self.record(viewer, "user.viewed", target);
    }

    /// `actor` changed `target`'s profile.
    pub fn record_update(&self, actor: Uuid, target: Uuid) {
        self.record(actor, "user.updated", target);
    }

    /// A service-seen event: never waits; dropped and counted when full.
    fn record(&self, actor: Uuid, kind: &'static str, target: Uuid) {
        let pending = Pending {
            user_id: actor,
            organization_id: None,
            kind: kind.into(),
            metadata: format!("{{\"targetId\":\"{target}\"}}"),
            source: "service",
            occurred_at: Utc::now(),
        };
        if self.sender.try_send(pending).is_err() {
            metrics::counter!(WRITTEN, "outcome" => "dropped").increment(1);
        }
    }

    fn gauge(&self) {
        metrics::gauge!(BUFFERED).set(self.buffered() as f64);
    }
}

impl ActivityWriter {
    /// Stops taking new batches' deadlines into account, writes everything
    /// still buffered, and returns when done or when `within` has passed
    /// (what is left then is counted as lost and logged).
    pub async fn shutdown(self, within: Duration) {
        let _ = self.stop.send(true);
        let mut task = self.task;
        if tokio::time::timeout(within, &mut task).await.is_err() {
            tracing::error!("activity writer did not finish flushing in time; stopping it");
            task.abort();
        }
    }
}

struct Writer {
    pool: PgPool,
    receiver: mpsc::Receiver<Pending>,
    stopped: watch::Receiver<bool>,
    batch_size: usize,
    flush_interval: Duration,
    counters: Arc<Counters>,
}

impl Writer {
    async fn run(mut self) {
        let mut batch = Vec::with_capacity(self.batch_size);
        loop {
            let stopping = *self.stopped.borrow();
            if stopping {
                // Drain what is there, write it, and stop.
                while let Ok(event) = self.receiver.try_recv() {
                    batch.push(event);
                    if batch.len() >= self.batch_size {
                        self.write(&mut batch, true).await;
                    }
                }
                self.write(&mut batch, true).await;
                tracing::info!(
                    written = self.counters.written.load(Ordering::Relaxed),
                    "activity flushed"
                );
                return;
            }
            // Wait for a first event (or the stop signal).
            tokio::select! {
                event = self.receiver.recv() => match event {
                    Some(event) => batch.push(event),
                    None => {
                        self.write(&mut batch, true).await;
                        return;
                    }
                },
                _ = self.stopped.changed() => continue,
            }
            // Then fill the batch until it is full or the interval passed.
            let deadline = tokio::time::Instant::now() + self.flush_interval;
            while batch.len() < self.batch_size {
                tokio::select! {
                    event = self.receiver.recv() => match event {
                        Some(event) => batch.push(event),
                        None => break,
                    },
                    () = tokio::time::sleep_until(deadline) => break,
                    _ = self.stopped.changed() => break,
                }
            }
            self.write(&mut batch, false).await;
        }
    }

    /// Writes `batch`, retrying with backoff while the database is
    /// unavailable; when `final_flush`, gives up (counting the events lost)
    /// after a few tries so shutdown is bounded.
    async fn write(&self, batch: &mut Vec<Pending>, final_flush: bool) {
        if batch.is_empty() {
            return;
        }
        let mut delay = Duration::from_millis(100);
        let mut tries = 0;
        loop {
            tries += 1;
            match insert(&self.pool, batch).await {
                Ok(()) => {
                    let n = batch.len() as u64;
                    self.counters.written.fetch_add(n, Ordering::Relaxed);
                    metrics::counter!(WRITTEN, "outcome" => "written").increment(n);
                    metrics::counter!(BATCHES, "outcome" => if tries == 1 { "ok" } else { "retried" })
                        .increment(1);
                    batch.clear();
                    metrics::gauge!(BUFFERED).set(self.receiver.len() as f64);
                    return;
                }
                // Not the database being away but an event it refuses (a
                // poison event): write the batch one by one, so only the bad
                // ones are lost, counted and logged — never retried forever.
                Err(error) if !crate::error::is_unavailable(&error) => {
                    tracing::warn!(%error, events = batch.len(), "activity batch refused; writing its events one by one");
                    let mut written = 0u64;
                    for event in batch.drain(..) {
                        match insert(&self.pool, std::slice::from_ref(&event)).await {
                            Ok(()) => written += 1,
                            Err(error) => {
                                tracing::error!(%error, user_id = %event.user_id, kind = %event.kind, "activity event refused by the database; dropped");
                                metrics::counter!(WRITTEN, "outcome" => "lost").increment(1);
                            }
                        }
                    }
                    self.counters.written.fetch_add(written, Ordering::Relaxed);
                    metrics::counter!(WRITTEN, "outcome" => "written").increment(written);
                    return;
                }
                Err(error) if final_flush && tries >= 5 => {
                    tracing::error!(%error, lost = batch.len(), "could not write activity before shutdown");
                    metrics::counter!(WRITTEN, "outcome" => "lost").increment(batch.len() as u64);
                    batch.clear();
                    return;
                }
                Err(error) => {
                    tracing::warn!(%error, events = batch.len(), retry_in = ?delay, "activity batch not written; retrying");
                    tokio::time::sleep(delay).await;
                    delay = (delay * 2).min(Duration::from_secs(5));
                }
            }
        }
    }
}

/// One statement: insert the batch and move each user's `last_active_at`.
async fn insert(pool: &PgPool, batch: &[Pending]) -> Result<(), sqlx::Error> {
    let mut users = Vec::with_capacity(batch.len());
    let mut organizations = Vec::with_capacity(batch.len());
    let mut kinds = Vec::with_capacity(batch.len());
    let mut metadata = Vec::with_capacity(batch.len());
    let mut sources = Vec::with_capacity(batch.len());
    let mut times = Vec::with_capacity(batch.len());
    for event in batch {
        users.push(event.user_id);
        organizations.push(event.organization_id);
        kinds.push(event.kind.as_ref());
        metadata.push(event.metadata.as_str());
        sources.push(event.source);
        times.push(event.occurred_at);
    }
    sqlx::query(
        "WITH input AS (
             SELECT * FROM unnest($1::uuid[], $2::uuid[], $3::text[], $4::text[], $5::text[], $6::timestamptz[])
                 AS t(user_id, organization_id, kind, metadata, source, occurred_at)
         ), inserted AS (
             INSERT INTO user_activity (user_id, organization_id, kind, metadata, source, occurred_at)
             SELECT user_id, organization_id, kind, metadata::jsonb, source, occurred_at FROM input
         )
         UPDATE users u SET last_active_at = GREATEST(u.last_active_at, latest.at)
         FROM (SELECT user_id, max(occurred_at) AS at FROM input GROUP BY user_id) latest
         WHERE u.id = latest.user_id
           AND (u.last_active_at IS NULL OR u.last_active_at < latest.at)",
    )
    .bind(&users)
    .bind(&organizations)
    .bind(&kinds)
    .bind(&metadata)
    .bind(&sources)
    .bind(&times)
    .execute(pool)
    .await?;
    Ok(())
}

/// `user_id`'s recorded activity, newest first.
pub async fn list(
    pool: &PgPool,
    user_id: Uuid,
    page: crate::pagination::Page,
) -> Result<ActivityList, ApiError> {
    let (total,): (i64,) = sqlx::query_as("SELECT count(*) FROM user_activity WHERE user_id = $1")
        .bind(user_id)
        .fetch_one(pool)
        .await?;
    let activity: Vec<ActivityRecord> = sqlx::query_as(
        "SELECT id, user_id, organization_id, kind, metadata, source, occurred_at
         FROM user_activity WHERE user_id = $1
         ORDER BY occurred_at DESC, id DESC LIMIT $2 OFFSET $3",
    )
    .bind(user_id)
    .bind(page.limit)
    .bind(page.offset)
    .fetch_all(pool)
    .await?;
    Ok(ActivityList {
        activity,
        pagination: crate::pagination::Pagination::new(total, page),
    })
}
