//! `GET /v1/organizations/{id}/assets/analytics?period=day|week|month|year`:
//! what an organization stores and how it is used (admins and owners).
//!
//! Totals and the type and processing distributions cover every asset;
//! uploads, views, downloads, the "most" lists and downloads per day cover
//! the period (the last day, 7, 30 or 365 days).

use axum::{extract::State, response::Response};
use chrono::{DateTime, NaiveDate, Utc};
use serde::{Deserialize, Serialize};
use sqlx::PgPool;
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

/// The window of the period figures.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Period {
    /// The last 24 hours.
    Day,
    /// The last 7 days.
    Week,
    /// The last 30 days (the default).
    Month,
    /// The last 365 days.
    Year,
}

impl Period {
    fn days(self) -> i64 {
        match self {
            Self::Day => 1,
            Self::Week => 7,
            Self::Month => 30,
            Self::Year => 365,
        }
    }
}

/// Query of the analytics.
#[derive(Debug, Clone, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct AnalyticsParams {
    /// `day`, `week`, `month` (default) or `year`.
    #[param(inline)]
    pub period: Option<Period>,
}

/// The analytics of an organization's assets.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct AssetAnalytics {
    /// The period asked for.
    pub period: Period,
    /// Its start.
    pub since: DateTime<Utc>,
    /// Totals.
    pub totals: AnalyticsTotals,
    /// Assets and bytes by MIME type.
    pub types: Vec<TypeCount>,
    /// Assets by processing status.
    pub processing: ProcessingCounts,
    /// Most viewed in the period.
    pub most_viewed: Vec<RankedAsset>,
    /// Most downloaded in the period.
    pub most_downloaded: Vec<RankedAsset>,
    /// The latest uploads.
    pub recent_uploads: Vec<RankedAsset>,
    /// Downloads per day in the period (days without any are left out).
    pub downloads_per_day: Vec<DayCount>,
}

/// Totals of an organization.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema, sqlx::FromRow)]
#[serde(rename_all = "camelCase")]
pub struct AnalyticsTotals {
    /// Assets stored.
    pub assets: i64,
    /// Bytes stored.
    pub storage_bytes: i64,
    /// Uploads in the period.
    pub uploads: i64,
    /// Views in the period.
    pub views: i64,
    /// Downloads in the period.
    pub downloads: i64,
}

/// Assets of one type.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema, sqlx::FromRow)]
#[serde(rename_all = "camelCase")]
pub struct TypeCount {
    /// MIME type.
    pub mime_type: String,
    /// Assets.
    pub count: i64,
    /// Bytes.
    pub bytes: i64,
}

/// Assets per processing status.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema, sqlx::FromRow)]
#[serde(rename_all = "camelCase")]
pub struct ProcessingCounts {
    /// Pending.
    pub pending: i64,
    /// Completed.
    pub completed: i64,
    /// Failed.
    pub failed: i64,
    /// Quarantined.
    pub quarantined: i64,
}

/// An asset with a count (views, downloads) or its upload time.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema, sqlx::FromRow)]
#[serde(rename_all = "camelCase")]
pub struct RankedAsset {
    /// Id.
    pub id: Uuid,
    /// Title.
    pub title: String,
    /// MIME type.
    pub mime_type: String,
    /// Views or downloads in the period (uploads: 0).
    pub count: i64,
    /// Uploaded.
    pub created_at: DateTime<Utc>,
}

/// A day's count.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema, sqlx::FromRow)]
#[serde(rename_all = "camelCase")]
pub struct DayCount {
    /// The day (UTC).
    pub day: NaiveDate,
    /// Downloads that day.
    pub count: i64,
}

/// Usage of an organization's assets (admins and owners).
#[utoipa::path(
    get,
    path = "/v1/organizations/{id}/assets/analytics",
    tag = "assets",
    params(("id" = Uuid, Path, description = "Organization id"), AnalyticsParams),
    security(("bearer" = [])),
    responses((status = 200, description = "The analytics", body = Envelope<AssetAnalytics>))
)]
pub async fn asset_analytics(
    State(state): State<AppState>,
    principal: Principal,
    Path(id): Path<Uuid>,
    Query(params): Query<AnalyticsParams>,
) -> Result<Response, ApiError> {
    let role = organizations::caller_role(&state, principal, id).await?;
    if !role.manages_members() {
        return Err(ApiError::forbidden(
            "only admins and owners see asset analytics",
        ));
    }
    let period = params.period.unwrap_or(Period::Month);
    let since = Utc::now() - chrono::Duration::days(period.days());
    let analytics = state
        .db
        .run(load(&state.db.pool, id, period, since))
        .await?;
    Ok(envelope::ok(analytics))
}

async fn load(
    pool: &PgPool,
    organization: Uuid,
    period: Period,
    since: DateTime<Utc>,
) -> Result<AssetAnalytics, ApiError> {
    let totals: AnalyticsTotals = sqlx::query_as(
        "SELECT
             (SELECT count(*) FROM assets WHERE organization_id = $1) AS assets,
             (SELECT coalesce(sum(size_bytes), 0)::bigint FROM assets WHERE organization_id = $1) AS storage_bytes,
             (SELECT count(*) FROM assets WHERE organization_id = $1 AND created_at >= $2) AS uploads,
             (SELECT count(*) FROM asset_events WHERE organization_id = $1 AND kind = 'view' AND occurred_at >= $2) AS views,
             (SELECT count(*) FROM asset_events WHERE organization_id = $1 AND kind = 'download' AND occurred_at >= $2) AS downloads",
    )
    .bind(organization)
    .bind(since)
    .fetch_one(pool)
    .await?;
    let types: Vec<TypeCount> = sqlx::query_as(
        "SELECT mime_type, count(*) AS count, coalesce(sum(size_bytes), 0)::bigint AS bytes
         FROM assets WHERE organization_id = $1 GROUP BY mime_type ORDER BY count DESC, mime_type",
    )
    .bind(organization)
    .fetch_all(pool)
    .await?;
    let processing: ProcessingCounts = sqlx::query_as(
        "SELECT count(*) FILTER (WHERE processing_status = 'pending') AS pending,
                count(*) FILTER (WHERE processing_status = 'completed') AS completed,
                count(*) FILTER (WHERE processing_status = 'failed') AS failed,
                count(*) FILTER (WHERE processing_status = 'quarantined') AS quarantined
         FROM assets WHERE organization_id = $1",
    )
    .bind(organization)
    .fetch_one(pool)
    .await?;
    let most = |kind: &'static str| {
        sqlx::query_as::<_, RankedAsset>(
            "SELECT a.id, a.title, a.mime_type, count(*) AS count, a.created_at
             FROM asset_events e JOIN assets a ON a.id = e.asset_id
             WHERE e.organization_id = $1 AND e.kind = $2 AND e.occurred_at >= $3
             GROUP BY a.id ORDER BY count DESC, a.created_at DESC LIMIT 10",
        )
        .bind(organization)
        .bind(kind)
        .bind(since)
        .fetch_all(pool)
    };
    let most_viewed = most("view").await?;
    let most_downloaded = most("download").await?;
    let recent_uploads: Vec<RankedAsset> = sqlx::query_as(
        "SELECT id, title, mime_type, 0::bigint AS count, created_at FROM assets
         WHERE organization_id = $1 ORDER BY created_at DESC, id DESC LIMIT 10",
    )
    .bind(organization)
    .fetch_all(pool)
    .await?;
    let downloads_per_day: Vec<DayCount> = sqlx::query_as(
        "SELECT (occurred_at AT TIME ZONE 'UTC')::date AS day, count(*) AS count
         FROM asset_events WHERE organization_id = $1 AND kind = 'download' AND occurred_at >= $2
         GROUP BY day ORDER BY day",
    )
    .bind(organization)
    .bind(since)
    .fetch_all(pool)
    .await?;
    Ok(AssetAnalytics {
        period,
        since,
        totals,
        types,
        processing,
        most_viewed,
        most_downloaded,
        recent_uploads,
        downloads_per_day,
    })
}
