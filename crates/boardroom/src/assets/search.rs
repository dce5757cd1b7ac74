//! `GET /v1/assets`: full-text search with filters, sort, pages and facets.
//!
//! Full text runs over the weighted `search` column (title A, description
//! and tags B, extracted text C; configuration `english`, GIN index),
//! matched with `websearch_to_tsquery` (which never fails on odd input) and
//! ranked with `ts_rank`. Highlights (`ts_headline`, which re-parses the
//! text) are computed only for the rows of the page, after the `LIMIT`.
//! Facets count every match, not just the page.
//!
//! Visibility: operators see everything; anyone else only assets of their
//! organizations, and `restricted` ones only where they are admin or owner.

use axum::{extract::State, response::Response};
use chrono::{DateTime, Utc};
use serde::Deserialize;
use sqlx::{FromRow, Postgres, QueryBuilder, Row};
use utoipa::{IntoParams, ToSchema};
use uuid::Uuid;

use super::{
    model::{Asset, AssetFacets, AssetList, Confidentiality, ProcessingStatus},
    repository::ASSET_COLUMNS,
};
use crate::{
    auth::Principal,
    envelope::{self, Envelope},
    error::ApiError,
    extract::Query,
    organizations,
    pagination::{FacetCount, Page, PageParams, Pagination},
    state::AppState,
};

/// The text search configuration of the `search` column.
pub const LANGUAGE: &str = "english";

/// How results are ordered.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub enum AssetSort {
    /// Rank (the default with `query`).
    Relevance,
    /// Upload time (the default without `query`).
    CreatedAt,
    /// Title.
    Title,
    /// Size.
    Size,
    /// Views.
    ViewCount,
    /// Downloads.
    DownloadCount,
}

/// Sort direction.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum SortOrder {
    /// Ascending.
    Asc,
    /// Descending (the default).
    Desc,
}

/// Query parameters of `GET /v1/assets`.
#[derive(Debug, Clone, Default, Deserialize, IntoParams)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct AssetSearchParams {
    /// Full-text query (web-search syntax: words, "phrases", -not, or).
    #[param(max_length = 500)]
    pub query: Option<String>,
    /// Exact MIME type.
    #[param(max_length = 200)]
    pub mime_type: Option<String>,
    /// Confidentiality level.
    #[param(inline)]
    pub confidentiality_level: Option<Confidentiality>,
    /// Exact category.
    #[param(max_length = 100)]
    pub category: Option<String>,
    /// Comma-separated tags; an asset must have all of them.
    #[param(max_length = 1000)]
    pub tags: Option<String>,
    /// Uploaded at or after.
    pub date_from: Option<DateTime<Utc>>,
    /// Uploaded at or before.
    pub date_to: Option<DateTime<Utc>>,
    /// At least this many bytes.
    #[param(minimum = 0)]
    pub size_min: Option<i64>,
    /// At most this many bytes.
    #[param(minimum = 0)]
    pub size_max: Option<i64>,
    /// Processing state.
    #[param(inline)]
    pub processing_status: Option<ProcessingStatus>,
    /// Only this organization (the caller must belong to it).
    pub organization_id: Option<Uuid>,
    /// Sort key.
    #[param(inline)]
    pub sort_by: Option<AssetSort>,
    /// Sort direction.
    #[param(inline)]
    pub sort_order: Option<SortOrder>,
    /// Page size, 1–500 (default 50).
    #[param(minimum = 1, maximum = 500)]
    pub limit: Option<i64>,
    /// Rows to skip (default 0).
    #[param(minimum = 0)]
    pub offset: Option<i64>,
}

/// Search the assets the caller can see.
#[utoipa::path(
    get,
    path = "/v1/assets",
    tag = "assets",
    params(AssetSearchParams),
    security(("bearer" = [])),
    responses((status = 200, description = "A page of assets with facets", body = Envelope<AssetList>))
)]
pub async fn search_assets(
    State(state): State<AppState>,
    principal: Principal,
    Query(params): Query<AssetSearchParams>,
) -> Result<Response, ApiError> {
    let page = PageParams {
        limit: params.limit,
        offset: params.offset,
    }
    .validate()?;
    let search = Search::new(params, principal)?;
    if let Some(organization) = search.params.organization_id {
        organizations::caller_role(&state, principal, organization).await?;
    }
    let list = state.db.run(search.run(&state.db.pool, page)).await?;
    Ok(envelope::ok(list))
}

/// A validated search.
#[derive(Debug)]
struct Search {
    params: AssetSearchParams,
    query: Option<String>,
    tags: Vec<String>,
    viewer: Option<Uuid>,
}

impl Search {
    fn new(params: AssetSearchParams, principal: Principal) -> Result<Self, ApiError> {
        let query = params
            .query
            .as_deref()
            .map(str::trim)
            .filter(|q| !q.is_empty())
            .map(str::to_owned);
        if query.as_ref().is_some_and(|q| q.chars().count() > 500) {
            return Err(ApiError::invalid(
                "query",
                "`query` must be at most 500 characters",
            ));
        }
        if params.sort_by == Some(AssetSort::Relevance) && query.is_none() {
            return Err(ApiError::invalid(
                "sortBy",
                "`sortBy=relevance` needs a `query`",
            ));
        }
        for (field, value) in [("sizeMin", params.size_min), ("sizeMax", params.size_max)] {
            if value.is_some_and(|v| v < 0) {
                return Err(ApiError::invalid(
                    field,
                    format!("`{field}` must be 0 or more"),
                ));
            }
        }
        let tags = params
            .tags
            .as_deref()
            .map(|t| {
                t.split(',')
                    .map(|s| s.trim().to_lowercase())
                    .filter(|s| !s.is_empty())
                    .collect()
            })
            .unwrap_or_default();
        Ok(Self {
            params,
            query,
            tags,
            viewer: (!principal.operator).then_some(principal.user_id),
        })
    }

    /// Pushes ` WHERE …` over `assets a` (and `a.search @@ query` when searching).
    fn push_filters(&self, qb: &mut QueryBuilder<Postgres>) {
        let p = &self.params;
        qb.push(" WHERE true");
        if let Some(viewer) = self.viewer {
            qb.push(" AND a.organization_id IN (SELECT organization_id FROM memberships WHERE user_id = ")
                .push_bind(viewer)
                .push(") AND (a.confidentiality_level <> 'restricted' OR a.organization_id IN (SELECT organization_id FROM memberships WHERE role IN ('owner', 'admin') AND user_id = ")
                .push_bind(viewer)
                .push("))");
        }
        if let Some(query) = &self.query {
            qb.push(" AND a.search @@ websearch_to_tsquery('")
                .push(LANGUAGE)
                .push("', ")
                .push_bind(query.clone())
                .push(")");
        }
        if let Some(v) = &p.mime_type {
            qb.push(" AND a.mime_type = ").push_bind(v.clone());
        }
        if let Some(v) = p.confidentiality_level {
            qb.push(" AND a.confidentiality_level = ")
                .push_bind(v.as_str());
        }
        if let Some(v) = &p.category {
            qb.push(" AND a.category = ").push_bind(v.trim().to_owned());
        }
        if !self.tags.is_empty() {
            qb.push(" AND a.tags @> ").push_bind(self.tags.clone());
        }
        if let Some(v) = p.date_from {
            qb.push(" AND a.created_at >= ").push_bind(v);
        }
        if let Some(v) = p.date_to {
            qb.push(" AND a.created_at <= ").push_bind(v);
        }
        if let Some(v) = p.size_min {
            qb.push(" AND a.size_bytes >= ").push_bind(v);
        }
        if let Some(v) = p.size_max {
            qb.push(" AND a.size_bytes <= ").push_bind(v);
        }
        if let Some(v) = p.processing_status {
            let name = match v {
                ProcessingStatus::Pending => "pending",
                ProcessingStatus::Completed => "completed",
                ProcessingStatus::Failed => "failed",
                ProcessingStatus::Quarantined => "quarantined",
            };
            qb.push(" AND a.processing_status = ").push_bind(name);
        }
        if let Some(v) = p.organization_id {
            qb.push(" AND a.organization_id = ").push_bind(v);
        }
    }

    /// Pushes the ORDER BY list (a window's ORDER BY cannot name the `rank` alias).
    fn push_order(&self, qb: &mut QueryBuilder<Postgres>) {
        let sort = self.params.sort_by.unwrap_or(if self.query.is_some() {
            AssetSort::Relevance
        } else {
            AssetSort::CreatedAt
        });
        let direction = match self.params.sort_order.unwrap_or(SortOrder::Desc) {
            SortOrder::Asc => "ASC",
            SortOrder::Desc => "DESC",
        };
        let column = match sort {
            AssetSort::Relevance => {
                qb.push("ts_rank(a.search, websearch_to_tsquery('")
                    .push(LANGUAGE)
                    .push("', ")
                    .push_bind(self.query.clone().unwrap_or_default())
                    .push(")) ")
                    .push(direction)
                    .push(", a.created_at DESC, a.id DESC");
                return;
            }
            AssetSort::CreatedAt => "a.created_at",
            AssetSort::Title => "lower(a.title)",
            AssetSort::Size => "a.size_bytes",
            AssetSort::ViewCount => "a.view_count",
            AssetSort::DownloadCount => "a.download_count",
        };
        qb.push(format!(
            "{column} {direction}, a.created_at DESC, a.id DESC"
        ));
    }

    async fn run(self, pool: &sqlx::PgPool, page: Page) -> Result<AssetList, ApiError> {
        let ts_query = |qb: &mut QueryBuilder<Postgres>, query: &str| {
            qb.push("websearch_to_tsquery('")
                .push(LANGUAGE)
                .push("', ")
                .push_bind(query.to_owned())
                .push(")");
        };
        // The page: ids, rank and order first; the rows and highlights
        // only for those ids.
        let mut qb = QueryBuilder::<Postgres>::new("WITH page AS (SELECT a.id, ");
        match &self.query {
            Some(query) => {
                qb.push("ts_rank(a.search, ");
                ts_query(&mut qb, query);
                qb.push(") AS rank, ");
            }
            None => {
                qb.push("NULL::real AS rank, ");
            }
        }
        qb.push("count(*) OVER () AS total, row_number() OVER (ORDER BY ");
        self.push_order(&mut qb);
        qb.push(") AS ord FROM assets a");
        self.push_filters(&mut qb);
        qb.push(" ORDER BY ord LIMIT ")
            .push_bind(page.limit)
            .push(" OFFSET ")
            .push_bind(page.offset)
            .push(") SELECT ")
            .push(ASSET_COLUMNS)
            .push(", page.rank, page.total, ");
        match &self.query {
            Some(query) => {
                qb.push("ts_headline('")
                    .push(LANGUAGE)
                    .push("', title || ' — ' || coalesce(description, '') || ' ' || left(coalesce(extracted_text, ''), 100000), ");
                ts_query(&mut qb, query);
                qb.push(", 'MaxFragments=2, MaxWords=30, MinWords=8, StartSel=<b>, StopSel=</b>') AS highlight");
            }
            None => {
                qb.push("NULL::text AS highlight");
            }
        }
        qb.push(" FROM page JOIN assets USING (id) ORDER BY page.ord");
        let rows = qb.build().fetch_all(pool).await?;
        let mut total = 0;
        let mut assets = Vec::with_capacity(rows.len());
        for row in &rows {
            total = row.try_get::<i64, _>("total")?;
            assets.push(Asset::from_row(row)?);
        }
        if rows.is_empty() && page.offset > 0 {
            // Past the end: the total still counts the matches.
            let mut count = QueryBuilder::<Postgres>::new("SELECT count(*) FROM assets a");
            self.push_filters(&mut count);
            total = count.build_query_scalar::<i64>().fetch_one(pool).await?;
        }

        let mut qb = QueryBuilder::<Postgres>::new(
            "WITH m AS (SELECT a.mime_type, a.category, a.tags FROM assets a",
        );
        self.push_filters(&mut qb);
        qb.push(
            ") SELECT 'mimeType' AS facet, mime_type AS value, count(*) AS n FROM m GROUP BY mime_type
             UNION ALL SELECT 'category', category, count(*) FROM m GROUP BY category
             UNION ALL SELECT 'tag', tag, count(*) FROM m, unnest(m.tags) AS tag GROUP BY tag
             ORDER BY 3 DESC, 2",
        );
        let facet_rows: Vec<(String, Option<String>, i64)> =
            qb.build_query_as().fetch_all(pool).await?;
        let mut facets = AssetFacets {
            mime_types: Vec::new(),
            categories: Vec::new(),
            tags: Vec::new(),
        };
        for (facet, value, count) in facet_rows {
            let list = match facet.as_str() {
                "mimeType" => &mut facets.mime_types,
                "category" => &mut facets.categories,
                _ => &mut facets.tags,
            };
            if list.len() < 50 {
                list.push(FacetCount { value, count });
            }
        }
        Ok(AssetList {
            assets,
            pagination: Pagination::new(total, page),
            facets,
        })
    }
}
