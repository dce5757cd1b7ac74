//! The in-app feed of the caller: `GET /v1/me/notifications` (unread first,
//! then by priority, then newest), `POST /v1/me/notifications/{id}/read`, and
//! the live stream `GET /v1/me/notifications/stream` (SSE).
//!
//! Each in-app delivery gets a position in the feed (`seq`) when it is
//! stored; the stream's event ids are those positions, so a client that
//! reconnects with `Last-Event-ID: <seq>` receives everything after it,
//! then live events. Without the header the stream starts with what arrives
//! from now on. Like the job streams, an open stream is not cut by the
//! stack's timeout and ends when the server shuts down.

use std::{convert::Infallible, time::Duration};

use axum::{
    extract::State,
    http::HeaderMap,
    response::{
        IntoResponse, Response,
        sse::{Event, KeepAlive, Sse},
    },
};
use chrono::{DateTime, Utc};
use futures_util::StreamExt;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use tokio::sync::{broadcast, mpsc};
use tokio_stream::wrappers::ReceiverStream;
use utoipa::{IntoParams, ToSchema};
use uuid::Uuid;

use super::model::Priority;
use crate::{
    auth::Principal,
    envelope::{self, Envelope},
    error::ApiError,
    extract::{Path, Query},
    pagination::{Page, PageParams, Pagination},
    state::AppState,
};

const RECHECK: Duration = Duration::from_secs(15);

/// One in-app notification.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct FeedItem {
    /// The delivery id (use it to mark it read).
    pub id: Uuid,
    /// Position in the feed (the stream's event id).
    pub seq: i64,
    /// The notification.
    pub notification_id: Uuid,
    /// Its organization.
    pub organization_id: Uuid,
    /// Its type.
    pub r#type: String,
    /// Subject.
    pub title: String,
    /// Body.
    pub message: String,
    /// Priority.
    pub priority: Priority,
    /// The send's data.
    #[schema(value_type = Option<Object>)]
    pub data: Option<Value>,
    /// When it arrived.
    pub sent_at: DateTime<Utc>,
    /// When it was read.
    pub read_at: Option<DateTime<Utc>>,
}

/// A page of the feed.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Feed {
    /// Unread first, then by priority, then newest.
    pub notifications: Vec<FeedItem>,
    /// The page.
    pub pagination: Pagination,
    /// Unread notifications in the whole feed.
    pub unread: i64,
}

/// `GET /v1/me/notifications` query.
#[derive(Debug, Clone, Copy, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct FeedParams {
    /// Page size, 1–500 (default 50).
    #[param(minimum = 1, maximum = 500)]
    pub limit: Option<i64>,
    /// Rows to skip (default 0).
    #[param(minimum = 0)]
    pub offset: Option<i64>,
    /// Only unread notifications.
    pub unread_only: Option<bool>,
}

type Row = (
    Uuid,
    i64,
    Uuid,
    Uuid,
    String,
    String,
    String,
    i16,
    Option<Value>,
    DateTime<Utc>,
    Option<DateTime<Utc>>,
);

fn item(row: Row) -> FeedItem {
    FeedItem {
        id: row.0,
        seq: row.1,
        notification_id: row.2,
        organization_id: row.3,
        r#type: row.4,
        title: row.5,
        message: row.6,
        priority: Priority::from_rank(row.7),
        data: row.8,
        sent_at: row.9,
        read_at: row.10,
    }
}

const COLUMNS: &str = "d.id, d.feed_seq, d.notification_id, d.organization_id, n.type, n.title,
                       n.message, d.priority, n.data, d.sent_at, d.read_at";

async fn list(
    pool: &sqlx::PgPool,
    user: Uuid,
    page: Page,
    unread_only: bool,
) -> Result<Feed, ApiError> {
    let rows: Vec<Row> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT {COLUMNS} FROM notification_deliveries d
         JOIN notifications n ON n.id = d.notification_id
         WHERE d.user_id = $1 AND d.channel = 'in_app' AND d.feed_seq IS NOT NULL
           AND (NOT $4 OR d.read_at IS NULL)
         ORDER BY d.read_at IS NULL DESC, d.priority, d.sent_at DESC, d.id DESC
         LIMIT $2 OFFSET $3"
    )))
    .bind(user)
    .bind(page.limit)
    .bind(page.offset)
    .bind(unread_only)
    .fetch_all(pool)
    .await?;
    let (total, unread): (i64, i64) = sqlx::query_as(
        "SELECT count(*) FILTER (WHERE NOT $2 OR read_at IS NULL), count(*) FILTER (WHERE read_at IS NULL)
         FROM notification_deliveries
         WHERE user_id = $1 AND channel = 'in_app' AND feed_seq IS NOT NULL",
    )
    .bind(user)
    .bind(unread_only)
    .fetch_one(pool)
    .await?;
    Ok(Feed {
        notifications: rows.into_iter().map(item).collect(),
        pagination: Pagination::new(total, page),
        unread,
    })
}

/// The caller's in-app notifications: unread first, then by priority, then newest.
#[utoipa::path(
    get,
    path = "/v1/me/notifications",
    tag = "notifications",
    params(FeedParams),
    security(("bearer" = [])),
    responses((status = 200, description = "A page of the feed", body = Envelope<Feed>))
)]
pub async fn feed(
    State(state): State<AppState>,
    principal: Principal,
    Query(params): Query<FeedParams>,
) -> Result<Response, ApiError> {
    let page = PageParams {
        limit: params.limit,
        offset: params.offset,
    }
    .validate()?;
    let feed = state
        .db
        .run(list(
            &state.db.pool,
            principal.user_id,
            page,
            params.unread_only.unwrap_or(false),
        ))
        .await?;
    Ok(envelope::ok(feed))
}

/// Mark one of the caller's in-app notifications read (again: no change).
#[utoipa::path(
    post,
    path = "/v1/me/notifications/{id}/read",
    tag = "notifications",
    params(("id" = Uuid, Path, description = "The in-app notification's id (a delivery id)")),
    security(("bearer" = [])),
    responses((status = 200, description = "The notification, read", body = Envelope<FeedItem>))
)]
pub async fn mark_read(
    State(state): State<AppState>,
    principal: Principal,
    Path(id): Path<Uuid>,
) -> Result<Response, ApiError> {
    let pool = &state.db.pool;
    let row: Option<Row> = state
        .db
        .run(async {
            Ok(sqlx::query_as(sqlx::AssertSqlSafe(format!(
                "WITH marked AS (
                     UPDATE notification_deliveries
                     SET read_at = coalesce(read_at, now()),
                         delivered_at = coalesce(delivered_at, now()),
                         status = CASE WHEN status = 'sent' THEN 'delivered' ELSE status END,
                         updated_at = now()
                     WHERE id = $1 AND user_id = $2 AND channel = 'in_app' AND feed_seq IS NOT NULL
                     RETURNING *)
                 SELECT {COLUMNS} FROM marked d JOIN notifications n ON n.id = d.notification_id"
            )))
            .bind(id)
            .bind(principal.user_id)
            .fetch_optional(pool)
            .await?)
        })
        .await?;
    let row = row.ok_or_else(|| ApiError::not_found("notification"))?;
    Ok(envelope::ok(item(row)))
}

/// The caller's feed, live: a `notification` event (a FeedItem, id = its
/// `seq`) per new in-app notification. With `Last-Event-ID`, first every
/// notification after that position.
#[utoipa::path(
    get,
    path = "/v1/me/notifications/stream",
    tag = "notifications",
    params((
        "Last-Event-ID" = Option<i64>,
        Header,
        description = "Resume after this feed position"
    )),
    security(("bearer" = [])),
    responses((
        status = 200,
        description = "`text/event-stream` of `notification` events, each a FeedItem",
        content_type = "text/event-stream",
        body = String
    ))
)]
pub async fn stream(
    State(state): State<AppState>,
    principal: Principal,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let last = match headers.get("last-event-id") {
        None => None,
        Some(value) => Some(
            value
                .to_str()
                .ok()
                .and_then(|v| v.trim().parse::<i64>().ok())
                .filter(|v| *v >= 0)
                .ok_or_else(|| {
                    ApiError::invalid(
                        "Last-Event-ID",
                        "`Last-Event-ID` must be a feed position (an integer)",
                    )
                })?,
        ),
    };
    // Subscribed before reading the position, so nothing falls between.
    let events = state.notifications.events.subscribe();
    let user = principal.user_id;
    let start = match last {
        Some(last) => last,
        None => {
            state
                .db
                .run(async {
                    Ok(sqlx::query_scalar::<_, Option<i64>>(
                        "SELECT max(feed_seq) FROM notification_deliveries
                         WHERE user_id = $1 AND channel = 'in_app'",
                    )
                    .bind(user)
                    .fetch_one(&state.db.pool)
                    .await?
                    .unwrap_or(0))
                })
                .await?
        }
    };
    let (sender, receiver) = mpsc::channel::<Event>(64);
    tokio::spawn(follow(state, user, start, events, sender));
    let stream = ReceiverStream::new(receiver).map(Ok::<_, Infallible>);
    Ok(Sse::new(stream)
        .keep_alive(KeepAlive::default())
        .into_response())
}

async fn after(pool: &sqlx::PgPool, user: Uuid, seq: i64) -> Result<Vec<FeedItem>, ApiError> {
    let rows: Vec<Row> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT {COLUMNS} FROM notification_deliveries d
         JOIN notifications n ON n.id = d.notification_id
         WHERE d.user_id = $1 AND d.channel = 'in_app' AND d.feed_seq > $2
         ORDER BY d.feed_seq LIMIT 500"
    )))
    .bind(user)
    .bind(seq)
    .fetch_all(pool)
    .await?;
    Ok(rows.into_iter().map(item).collect())
}

async fn follow(
    state: AppState,
    user: Uuid,
    mut last: i64,
    mut events: broadcast::Receiver<std::sync::Arc<Vec<Uuid>>>,
    sender: mpsc::Sender<Event>,
) {
    let mut stopping = state.ops.stopping();
    let mut check = true;
    loop {
        if check {
            // Up to 500 at a time; loop until caught up.
            loop {
                let items = match after(&state.db.pool, user, last).await {
                    Ok(items) => items,
                    Err(_) => break,
                };
                let caught_up = items.len() < 500;
                for item in items {
                    last = item.seq;
                    let Ok(event) = Event::default()
                        .event("notification")
                        .id(item.seq.to_string())
                        .json_data(&item)
                    else {
                        continue;
                    };
                    if sender.send(event).await.is_err() {
                        return;
                    }
                }
                if caught_up {
                    break;
                }
            }
        }
        check = tokio::select! {
            received = events.recv() => match received {
                Ok(users) => users.contains(&user),
                Err(broadcast::error::RecvError::Lagged(_)) => true,
                Err(broadcast::error::RecvError::Closed) => return,
            },
            () = tokio::time::sleep(RECHECK) => true,
            () = sender.closed() => return,
            _ = stopping.changed() => return,
        };
    }
}
