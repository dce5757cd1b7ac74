//! The delivery queue's SQL: claim, finish, recover.
//!
//! Claim: due deliveries (`queued`, `deferred` or `failed` with `run_at <=
//! now()`), ordered by priority then due time, `FOR UPDATE SKIP LOCKED`, set
//! to `sending` under a lease. Finish: one statement per batch records every
//! outcome, but only for rows this worker still holds (a worker whose lease
//! expired and was taken over writes nothing). Recover: an expired lease puts
//! the delivery back in the queue.

use std::time::Duration;

use chrono::{DateTime, Utc};
use serde_json::Value;
use sqlx::PgPool;
use uuid::Uuid;

use super::{INBOX_CHANNEL, model::Channel};
use crate::error::ApiError;

/// A claimed delivery with what its provider needs.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct Claimed {
    /// Delivery id.
    pub id: Uuid,
    /// Notification id.
    pub notification_id: Uuid,
    /// Recipient.
    pub user_id: Uuid,
    /// Channel name.
    pub channel: String,
    /// Priority rank.
    pub priority: i16,
    /// Failed tries so far.
    pub attempts: i32,
    /// Retries allowed after the first try.
    pub max_retries: i32,
    /// Pixel and link secret.
    pub tracking_token: String,
    /// The recipient's email.
    pub email: Option<String>,
    /// Type.
    pub kind: String,
    /// Subject.
    pub title: String,
    /// Body.
    pub message: String,
    /// Data.
    pub data: Option<Value>,
}

impl Claimed {
    /// The channel.
    pub fn channel(&self) -> Option<Channel> {
        Channel::parse(&self.channel)
    }
}

/// Claims up to `limit` due deliveries for `worker`. In-app deliveries are
/// stored in the feed by the claim itself (status `sent`, a feed position):
/// the feed is the database, so the claim's commit is their delivery, once.
/// The others are `sending` under a lease.
pub async fn claim(
    pool: &PgPool,
    worker: &str,
    limit: i64,
    lease: Duration,
) -> Result<Vec<Claimed>, ApiError> {
    let lease_ms = i64::try_from(lease.as_millis()).unwrap_or(i64::MAX);
    Ok(sqlx::query_as(
        "WITH picked AS (
             SELECT id FROM notification_deliveries
             WHERE status IN ('queued', 'deferred', 'failed') AND run_at <= now()
             ORDER BY priority, run_at, id
             LIMIT $1
             FOR UPDATE SKIP LOCKED),
         claimed AS (
             UPDATE notification_deliveries d
             SET status = CASE WHEN d.channel = 'in_app' THEN 'sent' ELSE 'sending' END,
                 locked_by = CASE WHEN d.channel = 'in_app' THEN NULL ELSE $2 END,
                 locked_until = CASE WHEN d.channel = 'in_app' THEN NULL
                     ELSE now() + make_interval(secs => $3::double precision / 1000) END,
                 sent_at = CASE WHEN d.channel = 'in_app' THEN now() ELSE d.sent_at END,
                 feed_seq = CASE WHEN d.channel = 'in_app'
                                 THEN nextval('notification_feed_seq') ELSE d.feed_seq END,
                 updated_at = now()
             FROM picked WHERE d.id = picked.id
             RETURNING d.id, d.notification_id, d.user_id, d.channel, d.priority, d.attempts,
                       d.max_retries, d.tracking_token, d.run_at)
         SELECT c.id, c.notification_id, c.user_id, c.channel, c.priority, c.attempts,
                c.max_retries, c.tracking_token, u.email, n.type AS kind, n.title, n.message,
                n.data
         FROM claimed c
         JOIN notifications n ON n.id = c.notification_id
         LEFT JOIN users u ON u.id = c.user_id
         ORDER BY c.priority, c.run_at, c.id",
    )
    .bind(limit)
    .bind(worker)
    .bind(lease_ms)
    .fetch_all(pool)
    .await?)
}

/// How one try ended.
#[derive(Debug, Clone)]
pub enum Outcome {
    /// The provider accepted it (or in-app: stored).
    Sent,
    /// It failed; try again at `at` (`counted`: the try counts against `maxRetries`).
    Retry {
        /// When.
        at: DateTime<Utc>,
        /// The error.
        error: String,
        /// Whether it used up a try (an open breaker does not).
        counted: bool,
    },
    /// Out of tries or refused for good.
    Dead {
        /// The last error.
        error: String,
    },
}

/// Records the outcomes of a batch for rows `worker` still holds, and
/// `NOTIFY`s the in-app feed. Returns how many rows were written.
pub async fn finish(
    pool: &PgPool,
    worker: &str,
    outcomes: &[(Uuid, Outcome)],
) -> Result<u64, ApiError> {
    let n = outcomes.len();
    let mut ids = Vec::with_capacity(n);
    let mut statuses = Vec::with_capacity(n);
    let mut errors: Vec<Option<String>> = Vec::with_capacity(n);
    let mut run_ats: Vec<Option<DateTime<Utc>>> = Vec::with_capacity(n);
    let mut counted = Vec::with_capacity(n);
    for (id, outcome) in outcomes {
        ids.push(*id);
        match outcome {
            Outcome::Sent => {
                statuses.push("sent");
                errors.push(None);
                run_ats.push(None);
                counted.push(0);
            }
            Outcome::Retry {
                at,
                error,
                counted: c,
            } => {
                statuses.push("failed");
                errors.push(Some(error.clone()));
                run_ats.push(Some(*at));
                counted.push(i32::from(*c));
            }
            Outcome::Dead { error } => {
                statuses.push("dead");
                errors.push(Some(error.clone()));
                run_ats.push(None);
                counted.push(1);
            }
        }
    }
    let written: i64 = sqlx::query_scalar(
        "WITH u AS (
             SELECT * FROM unnest($1::uuid[], $2::text[], $3::text[], $4::timestamptz[], $5::int[])
                 AS u(id, status, error, run_at, counted)),
         done AS (
             UPDATE notification_deliveries d
             SET status = u.status,
                 last_error = coalesce(u.error, d.last_error),
                 reason = CASE WHEN u.status = 'dead' THEN 'dead: ' || u.error ELSE d.reason END,
                 run_at = coalesce(u.run_at, d.run_at),
                 attempts = d.attempts + u.counted,
                 sent_at = CASE WHEN u.status = 'sent' THEN now() ELSE d.sent_at END,
                 feed_seq = CASE WHEN u.status = 'sent' AND d.channel = 'in_app'
                                 THEN nextval('notification_feed_seq') ELSE d.feed_seq END,
                 locked_by = NULL, locked_until = NULL, updated_at = now()
             FROM u
             WHERE d.id = u.id AND d.locked_by = $6 AND d.status = 'sending'
             RETURNING d.user_id, d.channel, d.status),
         inbox AS (
             SELECT DISTINCT replace(user_id::text, '-', '') AS user_id FROM done
             WHERE channel = 'in_app' AND status = 'sent'),
         notified AS (
             SELECT pg_notify($7, string_agg(user_id, ',')) FROM (
                 SELECT user_id, (row_number() OVER ()) / 200 AS chunk FROM inbox) c
             GROUP BY chunk)
         SELECT (SELECT count(*) FROM done) + 0 * (SELECT count(*) FROM notified)",
    )
    .bind(&ids)
    .bind(&statuses)
    .bind(&errors)
    .bind(&run_ats)
    .bind(&counted)
    .bind(worker)
    .bind(INBOX_CHANNEL)
    .fetch_one(pool)
    .await?;
    Ok(u64::try_from(written).unwrap_or(0))
}

/// Tells the SSE streams that the feeds of `users` grew (after the claim
/// that stored them committed).
pub async fn notify_inbox(pool: &PgPool, users: &[Uuid]) -> Result<(), ApiError> {
    for chunk in users.chunks(200) {
        let payload: Vec<String> = chunk.iter().map(|u| u.simple().to_string()).collect();
        sqlx::query("SELECT pg_notify($1, $2)")
            .bind(INBOX_CHANNEL)
            .bind(payload.join(","))
            .execute(pool)
            .await?;
    }
    Ok(())
}

/// Puts deliveries whose lease expired back in the queue (a crashed or
/// stalled worker). They keep their id, so the provider can tell a resend.
pub async fn recover_expired(pool: &PgPool) -> Result<u64, ApiError> {
    let result = sqlx::query(
        "UPDATE notification_deliveries
         SET status = 'queued', locked_by = NULL, locked_until = NULL, updated_at = now(),
             last_error = coalesce(last_error, 'lease expired: the worker stopped mid-send')
         WHERE status = 'sending' AND locked_until < now()",
    )
    .execute(pool)
    .await?;
    Ok(result.rows_affected())
}

/// Gives back deliveries `worker` holds (graceful shutdown).
pub async fn release(pool: &PgPool, worker: &str, ids: &[Uuid]) -> Result<(), ApiError> {
    sqlx::query(
        "UPDATE notification_deliveries
         SET status = 'queued', locked_by = NULL, locked_until = NULL, updated_at = now()
         WHERE id = ANY($1) AND locked_by = $2 AND status = 'sending'",
    )
    .bind(ids)
    .bind(worker)
    .execute(pool)
    .await?;
    Ok(())
}
