//! `GET /v1/assets`: full-text search with filters, sort, pages and facets.
//!
//! Full text runs over the weighted `search` column (title A, description
//! and tags B, extracted text C; configuration `english`, GIN index),
//! matched with `websearch_to_tsquery` (which never fails on odd input) and
//! ranked with `ts_rank`. One statement reads the matches once: the page is
//! a top-N sort of them, the facets one grouping-sets pass (plus the tags),
//! and highlights (`ts_headline`, which re-parses the text) are computed
//! only for the rows of the page. Facets count every match, not just the
//! page.
//!
//! Visibility: operators see everything; anyone else only assets of their
//! organizations, and `restricted` ones only where they are admin or owner.
//!
//! # The result cache
//!
//! Results are cached in process (`assets.search_cache_entries`,
//! `assets.search_cache_ttl`; a [`resilience::cache::Cache`], so
//! concurrent identical misses share one query) under the whole [`Search`]:
//! the normalized filters and page, the caller's [`Visibility`] — the
//! organizations searched and, per organization, whether `restricted`
//! assets are seen (so a member never gets an admin's result) — and each
//! organization's *search generation* (migration `0007`): a counter that
//! every change to its assets bumps in the same transaction, by trigger.
//! The generations are read before the search runs, so a change committed
//! before a request is always seen by it, on every instance. The SQL
//! filters on the visibility in the key, never on memberships read again.
//! View and download counters do not bump the generation: in a cached
//! result they may lag by up to the ttl.
use std::sync::Arc;

use axum::{extract::State, response::Response};
use chrono::{DateTime, Utc};
use resilience::cache::{Cache, CacheConfig, ConfigError};
use serde::Deserialize;
use sqlx::{FromRow, Postgres, QueryBuilder, Row};
use utoipa::{IntoParams, ToSchema};
use uuid::Uuid;

use super::{
    model::{Asset, AssetFacets, AssetList, Confidentiality, ProcessingStatus},
    repository::ASSET_COLUMNS,
    settings::AssetSettings,
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
    let filters = Filters::new(params)?;
    let visibility = Visibility::of(&state, principal, filters.organization_id).await?;
    let search = Search {
        filters,
        visibility,
        page,
    };
    let list = match &state.assets.search_cache {
        // Large pages are exports, not typing: not worth their memory.
        Some(cache) if page.limit <= CACHED_PAGE_LIMIT => {
            let loader_state = state.clone();
            let key = search.clone();
            cache
                .get_or_load(key, &[], move || async move {
                    let db = &loader_state.db;
                    db.run(search.run(&db.pool)).await.map(Arc::new)
                })
                .await
                .map_err(crate::users::cache::from_load)?
        }
        _ => Arc::new(state.db.run(search.run(&state.db.pool)).await?),
    };
    Ok(envelope::ok(&*list))
}

/// Pages of at most this many assets are cached (an entry holds one page).
pub const CACHED_PAGE_LIMIT: i64 = 100;

/// The in-process cache of search results (see the module documentation).
pub type SearchCache = Cache<Search, Arc<AssetList>>;

/// Builds the search cache from `assets.search_cache_*`; `None` when
/// `search_cache_entries` is 0.
pub fn search_cache(settings: &AssetSettings) -> Result<Option<SearchCache>, ConfigError> {
    if settings.search_cache_entries == 0 {
        return Ok(None);
    }
    let config = CacheConfig {
        ttl: settings.search_cache_ttl,
        max_entries: Some(settings.search_cache_entries),
        ..CacheConfig::default()
    };
    Cache::new("assets.search", config).map(Some)
}

/// The search parameters, normalized: equal filters are equal searches
/// (trimmed and whitespace-collapsed text, tags lowercased, sorted and
/// deduplicated, the default sort resolved).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Filters {
    query: Option<String>,
    mime_type: Option<String>,
    confidentiality_level: Option<&'static str>,
    category: Option<String>,
    tags: Vec<String>,
    date_from: Option<DateTime<Utc>>,
    date_to: Option<DateTime<Utc>>,
    size_min: Option<i64>,
    size_max: Option<i64>,
    processing_status: Option<&'static str>,
    organization_id: Option<Uuid>,
    sort: SortKey,
    descending: bool,
}

/// What the page is ordered by (then newest first, then id).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum SortKey {
    Relevance,
    CreatedAt,
    Title,
    Size,
    ViewCount,
    DownloadCount,
}

impl Filters {
    fn new(params: AssetSearchParams) -> Result<Self, ApiError> {
        let query = params
            .query
            .as_deref()
            .map(|q| q.split_whitespace().collect::<Vec<_>>().join(" "))
            .filter(|q| !q.is_empty());
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
        let mut tags: Vec<String> = params
            .tags
            .as_deref()
            .map(|t| {
                t.split(',')
                    .map(|s| s.trim().to_lowercase())
                    .filter(|s| !s.is_empty())
                    .collect()
            })
            .unwrap_or_default();
        tags.sort_unstable();
        tags.dedup();
        let sort = match params.sort_by {
            Some(AssetSort::Relevance) => SortKey::Relevance,
            Some(AssetSort::CreatedAt) => SortKey::CreatedAt,
            Some(AssetSort::Title) => SortKey::Title,
            Some(AssetSort::Size) => SortKey::Size,
            Some(AssetSort::ViewCount) => SortKey::ViewCount,
            Some(AssetSort::DownloadCount) => SortKey::DownloadCount,
            None if query.is_some() => SortKey::Relevance,
            None => SortKey::CreatedAt,
        };
        Ok(Self {
            query,
            mime_type: params.mime_type,
            confidentiality_level: params.confidentiality_level.map(Confidentiality::as_str),
            category: params.category.map(|c| c.trim().to_owned()),
            tags,
            date_from: params.date_from,
            date_to: params.date_to,
            size_min: params.size_min,
            size_max: params.size_max,
            processing_status: params.processing_status.map(|v| match v {
                ProcessingStatus::Pending => "pending",
                ProcessingStatus::Completed => "completed",
                ProcessingStatus::Failed => "failed",
                ProcessingStatus::Quarantined => "quarantined",
            }),
            organization_id: params.organization_id,
            sort,
            descending: params.sort_order != Some(SortOrder::Asc),
        })
    }
}

/// One organization a search covers.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct Covered {
    id: Uuid,
    /// Admin, owner or operator there: sees `restricted` assets.
    restricted: bool,
    /// Its search generation when the search started (0: none yet).
    generation: i64,
}

/// Which assets a caller may find, and the generations that date them.
///
/// The search's SQL filters on exactly this (never on `memberships` read
/// again), so a cached result is a function of its key and the data the
/// generations stand for.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum Visibility {
    /// An operator over every organization: keyed by the sum of every
    /// generation (each only grows, none is ever deleted).
    All { generations: i64 },
    /// These organizations, sorted by id.
    Organizations(Vec<Covered>),
}

impl Visibility {
    /// The caller's visibility (within `organization`, when given: `404`
    /// unless the caller belongs to it, or it exists for an operator).
    async fn of(
        state: &AppState,
        principal: Principal,
        organization: Option<Uuid>,
    ) -> Result<Self, ApiError> {
        let pool = &state.db.pool;
        if principal.operator {
            return match organization {
                Some(id) => {
                    organizations::caller_role(state, principal, id).await?;
                    let generation = state
                        .db
                        .run(async {
                            Ok(sqlx::query_scalar::<_, i64>(
                                "SELECT coalesce((SELECT generation FROM asset_search_generations
                                  WHERE organization_id = $1), 0)",
                            )
                            .bind(id)
                            .fetch_one(pool)
                            .await?)
                        })
                        .await?;
                    Ok(Self::Organizations(vec![Covered {
                        id,
                        restricted: true,
                        generation,
                    }]))
                }
                None => {
                    let generations = state
                        .db
                        .run(async {
                            Ok(sqlx::query_scalar::<_, i64>(
                                "SELECT coalesce(sum(generation), 0)::bigint FROM asset_search_generations",
                            )
                            .fetch_one(pool)
                            .await?)
                        })
                        .await?;
                    Ok(Self::All { generations })
                }
            };
        }
        let rows: Vec<(Uuid, bool, i64)> = state
            .db
            .run(async {
                Ok(sqlx::query_as(
                    "SELECT m.organization_id, m.role IN ('owner', 'admin'), coalesce(g.generation, 0)
                     FROM memberships m
                     LEFT JOIN asset_search_generations g USING (organization_id)
                     WHERE m.user_id = $1 AND ($2::uuid IS NULL OR m.organization_id = $2)
                     ORDER BY m.organization_id",
                )
                .bind(principal.user_id)
                .bind(organization)
                .fetch_all(pool)
                .await?)
            })
            .await?;
        if organization.is_some() && rows.is_empty() {
            return Err(ApiError::not_found("organization"));
        }
        Ok(Self::Organizations(
            rows.into_iter()
                .map(|(id, restricted, generation)| Covered {
                    id,
                    restricted,
                    generation,
                })
                .collect(),
        ))
    }
}

/// A validated search: what, for whom, which page. Also its cache key.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Search {
    filters: Filters,
    visibility: Visibility,
    page: Page,
}

impl Search {
    /// Pushes ` WHERE …` over `assets a` (and `a.search @@ query` when searching).
    fn push_filters(&self, qb: &mut QueryBuilder<Postgres>) {
        let p = &self.filters;
        qb.push(" WHERE true");
        if let Visibility::Organizations(covered) = &self.visibility {
            let ids: Vec<Uuid> = covered.iter().map(|c| c.id).collect();
            let restricted: Vec<Uuid> = covered
                .iter()
                .filter(|c| c.restricted)
                .map(|c| c.id)
                .collect();
            qb.push(" AND a.organization_id = ANY(")
                .push_bind(ids)
                .push(") AND (a.confidentiality_level <> 'restricted' OR a.organization_id = ANY(")
                .push_bind(restricted)
                .push("))");
        }
        if let Some(query) = &p.query {
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
            qb.push(" AND a.confidentiality_level = ").push_bind(v);
        }
        if let Some(v) = &p.category {
            qb.push(" AND a.category = ").push_bind(v.clone());
        }
        if !p.tags.is_empty() {
            qb.push(" AND a.tags @> ").push_bind(p.tags.clone());
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
            qb.push(" AND a.processing_status = ").push_bind(v);
        }
        if let Some(v) = p.organization_id {
            qb.push(" AND a.organization_id = ").push_bind(v);
        }
    }

    /// One statement: the matches are read once (`m`, with their rank and
    /// sort key); the page takes the top `limit` of them (a top-N sort),
    /// the facets count them in one grouping-sets pass plus the tags, and
    /// only the page's rows are joined back for their columns and
    /// highlights. A page past the end still gets the total and facets (the
    /// summary row is left-joined to the page).
    async fn run(self, pool: &sqlx::PgPool) -> Result<AssetList, ApiError> {
        let ts_query = |qb: &mut QueryBuilder<Postgres>, query: &str| {
            qb.push("websearch_to_tsquery('")
                .push(LANGUAGE)
                .push("', ")
                .push_bind(query.to_owned());
            qb.push(")");
        };
        let mut qb = QueryBuilder::<Postgres>::new(
            "WITH m AS MATERIALIZED (SELECT a.id, a.created_at, a.mime_type, a.category, a.tags, ",
        );
        match &self.filters.query {
            Some(query) => {
                qb.push("ts_rank(a.search, ");
                ts_query(&mut qb, query);
                qb.push(") AS rank");
            }
            None => {
                qb.push("NULL::real AS rank");
            }
        }
        let key = match self.filters.sort {
            SortKey::Relevance => "rank",
            SortKey::CreatedAt => "created_at",
            SortKey::Title => "lower(a.title)",
            SortKey::Size => "a.size_bytes",
            SortKey::ViewCount => "a.view_count",
            SortKey::DownloadCount => "a.download_count",
        };
        let key = match key {
            "rank" | "created_at" => key,
            expression => {
                qb.push(", ").push(expression).push(" AS sort_key");
                "sort_key"
            }
        };
        qb.push(" FROM assets a");
        self.push_filters(&mut qb);
        let direction = if self.filters.descending {
            "DESC"
        } else {
            "ASC"
        };
        let order = format!("{key} {direction}, created_at DESC, id DESC");
        qb.push(format!(
            "), p AS (SELECT id, rank, row_number() OVER (ORDER BY {order}) AS ord \
             FROM (SELECT * FROM m ORDER BY {order} LIMIT "
        ))
        .push_bind(self.page.limit)
        .push(" OFFSET ")
        .push_bind(self.page.offset)
        .push(
            ") top),
             f AS (SELECT CASE WHEN grouping(mime_type) = 0 THEN 'mimeType' ELSE 'category' END AS facet,
                          CASE WHEN grouping(mime_type) = 0 THEN mime_type ELSE category END AS value,
                          count(*) AS n
                   FROM m GROUP BY GROUPING SETS ((mime_type), (category))
                   UNION ALL
                   SELECT 'tag', tag, count(*) FROM (SELECT unnest(tags) AS tag FROM m) t GROUP BY tag),
             s AS (SELECT (SELECT count(*) FROM m) AS total,
                          array_agg(facet ORDER BY n DESC, value) AS facet_names,
                          array_agg(value ORDER BY n DESC, value) AS facet_values,
                          array_agg(n ORDER BY n DESC, value) AS facet_counts
                   FROM f)
             SELECT s.total, s.facet_names, s.facet_values, s.facet_counts, p.ord, p.rank, ",
        )
        .push(ASSET_COLUMNS)
        .push(", ");
        match &self.filters.query {
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
        qb.push(" FROM s LEFT JOIN (p JOIN assets USING (id)) ON true ORDER BY p.ord");
        let rows = qb.build().fetch_all(pool).await?;

        let mut total = 0;
        let mut facets = AssetFacets {
            mime_types: Vec::new(),
            categories: Vec::new(),
            tags: Vec::new(),
        };
        let mut assets = Vec::with_capacity(rows.len());
        for (i, row) in rows.iter().enumerate() {
            if i == 0 {
                total = row.try_get::<i64, _>("total")?;
                let names: Vec<String> = row
                    .try_get::<Option<Vec<String>>, _>("facet_names")?
                    .unwrap_or_default();
                let values: Vec<Option<String>> = row
                    .try_get::<Option<Vec<Option<String>>>, _>("facet_values")?
                    .unwrap_or_default();
                let counts: Vec<i64> = row
                    .try_get::<Option<Vec<i64>>, _>("facet_counts")?
                    .unwrap_or_default();
                for ((facet, value), count) in names.into_iter().zip(values).zip(counts) {
                    let list = match facet.as_str() {
                        "mimeType" => &mut facets.mime_types,
                        "category" => &mut facets.categories,
                        _ => &mut facets.tags,
                    };
                    if list.len() < FACET_VALUES {
                        list.push(FacetCount { value, count });
                    }
                }
            }
            if row.try_get::<Option<i64>, _>("ord")?.is_some() {
                assets.push(Asset::from_row(row)?);
            }
        }
        Ok(AssetList {
            assets,
            pagination: Pagination::new(total, self.page),
            facets,
        })
    }
}

/// Most values listed per facet.
const FACET_VALUES: usize = 50;
