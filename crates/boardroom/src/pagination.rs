//! The list shape shared by every domain: `limit` (default 50, at most 500)
//! and `offset` in, `pagination: {total, limit, offset, hasMore, nextCursor}` out,
//! and facet counts ([`FacetCount`]).
//!
//! ```
//! use boardroom::pagination::{PageParams, Pagination};
//! let page = PageParams { limit: Some(10), offset: Some(20) }.validate().unwrap();
//! let out = Pagination::new(35, page);
//! assert!(out.has_more);
//! assert!(PageParams { limit: Some(0), offset: None }.validate().is_err());
//! ```

use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use crate::error::ApiError;

/// Default page size.
pub const DEFAULT_LIMIT: i64 = 50;
/// Largest page size.
pub const MAX_LIMIT: i64 = 500;

/// `?limit=&offset=`.
#[derive(Debug, Clone, Copy, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct PageParams {
    /// Page size, 1–500 (default 50).
    #[param(minimum = 1, maximum = 500)]
    pub limit: Option<i64>,
    /// Rows to skip (default 0).
    #[param(minimum = 0)]
    pub offset: Option<i64>,
}

/// Validated page bounds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Page {
    /// Page size.
    pub limit: i64,
    /// Rows skipped.
    pub offset: i64,
}

impl PageParams {
    /// Applies defaults and bounds; out of range is a `400` naming the parameter.
    pub fn validate(self) -> Result<Page, ApiError> {
        let limit = self.limit.unwrap_or(DEFAULT_LIMIT);
        if !(1..=MAX_LIMIT).contains(&limit) {
            return Err(ApiError::invalid(
                "limit",
                format!("`limit` must be between 1 and {MAX_LIMIT}"),
            ));
        }
        let offset = self.offset.unwrap_or(0);
        if offset < 0 {
            return Err(ApiError::invalid("offset", "`offset` must be 0 or more"));
        }
        Ok(Page { limit, offset })
    }
}

/// Where a page sits in the whole list.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Pagination {
    /// Rows in the whole list.
    pub total: i64,
    /// Page size.
    pub limit: i64,
    /// Rows skipped.
    pub offset: i64,
    /// Whether rows follow this page.
    pub has_more: bool,
    /// Cursor of the next page (offset lists leave it empty).
    pub next_cursor: Option<String>,
}

impl Pagination {
    /// The pagination of `page` within `total` rows.
    pub fn new(total: i64, page: Page) -> Self {
        Self {
            total,
            limit: page.limit,
            offset: page.offset,
            has_more: page.offset.saturating_add(page.limit) < total,
            next_cursor: None,
        }
    }
}

/// One value of a facet and how many results have it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct FacetCount {
    /// The value (`null` for "none").
    pub value: Option<String>,
    /// Results with that value.
    pub count: i64,
}

impl FacetCount {
    /// `count` results have `value`.
    pub fn new(value: Option<String>, count: i64) -> Self {
        Self { value, count }
    }
}
