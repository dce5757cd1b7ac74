//! `GET /v1/organizations/{id}/notifications/analytics?period=day|week|month`:
//! delivery and engagement of an organization's notifications over the last
//! 24 hours (hourly buckets), 7 days or 30 days (daily buckets, UTC).
//!
//! - totals per status and per channel;
//! - delivery rate: sent or delivered ÷ deliveries attempted (all but
//!   `suppressed`);
//! - open and click rates: of emails sent or delivered, those opened /
//!   clicked (only email is tracked);
//! - average and p95 time from queued to sent, in milliseconds;
//! - a time series per bucket, including empty buckets.

use std::collections::BTreeMap;

use axum::{extract::State, response::Response};
use chrono::{DateTime, Duration, DurationRound, Utc};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use uuid::Uuid;

use crate::{
    auth::Principal,
    envelope::{self, Envelope},
    error::ApiError,
    extract::{Path, Query},
    organizations,
    state::AppState,
};

/// The window of an analytics report.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Period {
    /// The last 24 hours, hourly.
    Day,
    /// The last 7 days, daily.
    #[default]
    Week,
    /// The last 30 days, daily.
    Month,
}

impl Period {
    fn span(self) -> (Duration, Duration, &'static str) {
        match self {
            Self::Day => (Duration::hours(24), Duration::hours(1), "hour"),
            Self::Week => (Duration::days(7), Duration::days(1), "day"),
            Self::Month => (Duration::days(30), Duration::days(1), "day"),
        }
    }
}

/// Query of the analytics route.
#[derive(Debug, Clone, Copy, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct AnalyticsParams {
    /// `day`, `week` (default) or `month`.
    pub period: Option<Period>,
}

/// One bucket of the series.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Bucket {
    /// Start of the bucket (UTC).
    pub start: DateTime<Utc>,
    /// Deliveries queued in it.
    pub total: i64,
    /// Of those, sent or delivered.
    pub sent: i64,
    /// Of those, failed for good.
    pub dead: i64,
    /// Of those, opened.
    pub opened: i64,
    /// Of those, clicked.
    pub clicked: i64,
}

/// The report.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Analytics {
    /// The organization.
    pub organization_id: Uuid,
    /// The period asked for.
    pub period: Period,
    /// Start of the window.
    pub from: DateTime<Utc>,
    /// End of the window (now).
    pub to: DateTime<Utc>,
    /// Deliveries in the window.
    pub total: i64,
    /// Deliveries per status.
    pub by_status: BTreeMap<String, i64>,
    /// Deliveries per channel.
    pub by_channel: BTreeMap<String, i64>,
    /// Sent or delivered ÷ attempted (not suppressed); 0 without any.
    pub delivery_rate: f64,
    /// Opened ÷ emails sent or delivered; 0 without any.
    pub open_rate: f64,
    /// Clicked ÷ emails sent or delivered; 0 without any.
    pub click_rate: f64,
    /// Average milliseconds from queued to sent.
    pub avg_queued_to_sent_ms: Option<f64>,
    /// 95th percentile milliseconds from queued to sent.
    pub p95_queued_to_sent_ms: Option<f64>,
    /// One entry per bucket, oldest first.
    pub series: Vec<Bucket>,
}

fn ratio(part: i64, whole: i64) -> f64 {
    if whole <= 0 {
        0.0
    } else {
        #[allow(clippy::cast_precision_loss)]
        let r = part as f64 / whole as f64;
        r
    }
}

/// Delivery and engagement of an organization's notifications (its members, operators).
#[utoipa::path(
    get,
    path = "/v1/organizations/{id}/notifications/analytics",
    tag = "notifications",
    params(("id" = Uuid, Path, description = "Organization id"), AnalyticsParams),
    security(("bearer" = [])),
    responses((status = 200, description = "The report", body = Envelope<Analytics>))
)]
pub async fn analytics(
    State(state): State<AppState>,
    principal: Principal,
    Path(id): Path<Uuid>,
    Query(params): Query<AnalyticsParams>,
) -> Result<Response, ApiError> {
    organizations::caller_role(&state, principal, id).await?;
    let period = params.period.unwrap_or_default();
    let (length, step, unit) = period.span();
    let to = Utc::now();
    let from = (to - length)
        .duration_trunc(step)
        .map_err(|e| ApiError::Internal(e.into()))?;
    let pool = &state.db.pool;
    let groups: Vec<(Option<String>, Option<String>, i64)> = state
        .db
        .run(async {
            Ok(sqlx::query_as(
                "SELECT status, channel, count(*) FROM notification_deliveries
                 WHERE organization_id = $1 AND queued_at >= $2
                 GROUP BY GROUPING SETS ((status), (channel))",
            )
            .bind(id)
            .bind(from)
            .fetch_all(pool)
            .await?)
        })
        .await?;
    let mut by_status = BTreeMap::new();
    let mut by_channel = BTreeMap::new();
    for (status, channel, count) in groups {
        match (status, channel) {
            (Some(status), None) => {
                by_status.insert(status, count);
            }
            (None, Some(channel)) => {
                by_channel.insert(channel, count);
            }
            _ => {}
        }
    }
    let (emails, opened, clicked, avg, p95): (i64, i64, i64, Option<f64>, Option<f64>) = state
        .db
        .run(async {
            Ok(sqlx::query_as(
                "SELECT count(*) FILTER (WHERE channel = 'email' AND status IN ('sent', 'delivered')),
                        count(*) FILTER (WHERE channel = 'email' AND opened_at IS NOT NULL),
                        count(*) FILTER (WHERE channel = 'email' AND clicked_at IS NOT NULL),
                        avg(extract(epoch FROM sent_at - queued_at) * 1000)::float8,
                        (percentile_cont(0.95) WITHIN GROUP (
                            ORDER BY extract(epoch FROM sent_at - queued_at) * 1000))::float8
                 FROM notification_deliveries
                 WHERE organization_id = $1 AND queued_at >= $2",
            )
            .bind(id)
            .bind(from)
            .fetch_one(pool)
            .await?)
        })
        .await?;
    let rows: Vec<(DateTime<Utc>, i64, i64, i64, i64, i64)> = state
        .db
        .run(async {
            Ok(sqlx::query_as(
                "SELECT b.start,
                        count(d.id),
                        count(d.id) FILTER (WHERE d.status IN ('sent', 'delivered')),
                        count(d.id) FILTER (WHERE d.status = 'dead'),
                        count(d.id) FILTER (WHERE d.opened_at IS NOT NULL),
                        count(d.id) FILTER (WHERE d.clicked_at IS NOT NULL)
                 FROM generate_series($2::timestamptz, $3::timestamptz, ('1 ' || $4)::interval) AS b(start)
                 LEFT JOIN notification_deliveries d
                   ON d.organization_id = $1
                  AND d.queued_at >= b.start AND d.queued_at < b.start + ('1 ' || $4)::interval
                 GROUP BY b.start ORDER BY b.start",
            )
            .bind(id)
            .bind(from)
            .bind(to)
            .bind(unit)
            .fetch_all(pool)
            .await?)
        })
        .await?;
    let total: i64 = by_status.values().sum();
    let suppressed = by_status.get("suppressed").copied().unwrap_or(0);
    let sent = by_status.get("sent").copied().unwrap_or(0)
        + by_status.get("delivered").copied().unwrap_or(0);
    Ok(envelope::ok(Analytics {
        organization_id: id,
        period,
        from,
        to,
        total,
        by_status,
        by_channel,
        delivery_rate: ratio(sent, total - suppressed),
        open_rate: ratio(opened, emails),
        click_rate: ratio(clicked, emails),
        avg_queued_to_sent_ms: avg,
        p95_queued_to_sent_ms: p95,
        series: rows
            .into_iter()
            .map(|(start, total, sent, dead, opened, clicked)| Bucket {
                start,
                total,
                sent,
                dead,
                opened,
                clicked,
            })
            .collect(),
    }))
}
