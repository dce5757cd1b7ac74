//! Assets as the API shows them, and the request bodies.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use uuid::Uuid;

use crate::{
    error::ApiError,
    pagination::{FacetCount, Pagination},
};

/// Who may see an asset within its organization: `restricted` only admins
/// and owners; the others every member.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Confidentiality {
    /// Anyone in the organization (and shareable).
    Public,
    /// Members of the organization (the default).
    Internal,
    /// Members of the organization.
    Confidential,
    /// Admins and owners of the organization only.
    Restricted,
}

impl Confidentiality {
    /// The stored name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Public => "public",
            Self::Internal => "internal",
            Self::Confidential => "confidential",
            Self::Restricted => "restricted",
        }
    }

    /// Parses a stored or submitted name; `400` naming `field` otherwise.
    pub fn parse(field: &str, value: &str) -> Result<Self, ApiError> {
        match value {
            "public" => Ok(Self::Public),
            "internal" => Ok(Self::Internal),
            "confidential" => Ok(Self::Confidential),
            "restricted" => Ok(Self::Restricted),
            _ => Err(ApiError::invalid(
                field,
                format!("`{field}` must be one of public, internal, confidential, restricted"),
            )),
        }
    }
}

/// Where an asset is in its pipeline.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum ProcessingStatus {
    /// Steps still to run.
    Pending,
    /// Every step done.
    Completed,
    /// A step failed for good (`processingError` says which).
    Failed,
    /// The virus scan found something: never served.
    Quarantined,
}

/// The virus scan's state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum ScanStatus {
    /// Not scanned yet (clamd may be unreachable: it is retried).
    Pending,
    /// No signature matched.
    Clean,
    /// A signature matched (`scanResult` names it).
    Infected,
    /// No scanner is configured.
    Skipped,
    /// clamd refused the file (too large for its limits, …).
    Failed,
}

/// A stored document.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema, sqlx::FromRow)]
#[serde(rename_all = "camelCase")]
pub struct Asset {
    /// Id.
    pub id: Uuid,
    /// The owning organization.
    pub organization_id: Uuid,
    /// Who uploaded it.
    pub uploaded_by: Uuid,
    /// Title.
    pub title: String,
    /// Description.
    pub description: Option<String>,
    /// Category.
    pub category: Option<String>,
    /// Tags.
    pub tags: Vec<String>,
    /// Confidentiality level.
    #[sqlx(try_from = "String")]
    pub confidentiality_level: Confidentiality,
    /// The client's file name (metadata only; never a storage key).
    pub file_name: String,
    /// MIME type, sniffed from the bytes.
    pub mime_type: String,
    /// Size in bytes.
    pub size_bytes: i64,
    /// SHA-256 of the bytes, hex.
    pub sha256: String,
    /// Version of the stored bytes.
    pub version: i32,
    /// Processing state.
    #[sqlx(try_from = "String")]
    pub processing_status: ProcessingStatus,
    /// Scan state.
    #[sqlx(try_from = "String")]
    pub scan_status: ScanStatus,
    /// The signature found, or clamd's error.
    pub scan_result: Option<String>,
    /// When the scan finished.
    pub scanned_at: Option<DateTime<Utc>>,
    /// Whether `GET /v1/assets/{id}/thumbnail` has an image.
    pub has_thumbnail: bool,
    /// Pages (PDF).
    pub page_count: Option<i32>,
    /// Why processing failed.
    pub processing_error: Option<String>,
    /// Times viewed (`GET /v1/assets/{id}`).
    pub view_count: i64,
    /// Times downloaded.
    pub download_count: i64,
    /// Uploaded.
    pub created_at: DateTime<Utc>,
    /// Last changed.
    pub updated_at: DateTime<Utc>,
    /// When processing finished.
    pub processed_at: Option<DateTime<Utc>>,
    /// Search rank (only with `query`).
    #[serde(skip_serializing_if = "Option::is_none")]
    #[sqlx(default)]
    pub rank: Option<f32>,
    /// Matching fragment with `<b>…</b>` around the hits (only with `query`).
    #[serde(skip_serializing_if = "Option::is_none")]
    #[sqlx(default)]
    pub highlight: Option<String>,
}

/// Stored names back into enums (the column CHECKs keep them valid).
macro_rules! from_stored {
    ($($ty:ty),*) => {$(
        impl TryFrom<String> for $ty {
            type Error = serde_json::Error;
            fn try_from(value: String) -> Result<Self, Self::Error> {
                serde_json::from_value(serde_json::Value::String(value))
            }
        }
    )*};
}
from_stored!(Confidentiality, ProcessingStatus, ScanStatus);

/// `POST /v1/assets` form (multipart/form-data).
#[derive(Debug, ToSchema)]
#[allow(dead_code)]
#[schema(as = AssetUpload, rename_all = "camelCase")]
pub struct UploadForm {
    /// The file (its type is sniffed from the bytes).
    #[schema(value_type = String, format = Binary)]
    pub file: Vec<u8>,
    /// The owning organization (the caller must be a member, not a viewer).
    pub organization_id: Uuid,
    /// Title (default: the file name), 1–500 characters.
    pub title: Option<String>,
    /// Description, up to 10,000 characters.
    pub description: Option<String>,
    /// Category, 1–100 characters.
    pub category: Option<String>,
    /// Comma-separated tags (each 1–50 characters, at most 50).
    pub tags: Option<String>,
    /// Default `internal`.
    pub confidentiality_level: Option<Confidentiality>,
    /// `true`: a file already stored in the organization (same SHA-256)
    /// returns that asset (`200`) instead of a `409`.
    pub skip_duplicates: Option<bool>,
}

/// `PATCH /v1/assets/{id}` body.
#[derive(Debug, Clone, Default, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AssetUpdate {
    /// Title, 1–500 characters.
    #[schema(min_length = 1, max_length = 500)]
    pub title: Option<String>,
    /// Description, up to 10,000 characters.
    #[schema(max_length = 10000)]
    pub description: Option<String>,
    /// Category, 1–100 characters.
    #[schema(min_length = 1, max_length = 100)]
    pub category: Option<String>,
    /// Tags (each 1–50 characters, at most 50).
    #[schema(max_items = 50)]
    pub tags: Option<Vec<String>>,
    /// Confidentiality level (admins and owners only).
    pub confidentiality_level: Option<Confidentiality>,
}

/// Checks a title.
pub fn check_title(value: &str) -> Result<(), ApiError> {
    let n = value.trim().chars().count();
    if !(1..=500).contains(&n) {
        return Err(ApiError::validation(
            "title",
            "`title` must be 1 to 500 characters",
        ));
    }
    Ok(())
}

/// Checks a description.
pub fn check_description(value: &str) -> Result<(), ApiError> {
    if value.chars().count() > 10_000 {
        return Err(ApiError::validation(
            "description",
            "`description` must be at most 10000 characters",
        ));
    }
    Ok(())
}

/// Checks a category.
pub fn check_category(value: &str) -> Result<(), ApiError> {
    let n = value.trim().chars().count();
    if !(1..=100).contains(&n) {
        return Err(ApiError::validation(
            "category",
            "`category` must be 1 to 100 characters",
        ));
    }
    Ok(())
}

/// Checks tags (trimmed, lower-cased, duplicates removed).
pub fn normalize_tags(tags: impl IntoIterator<Item = String>) -> Result<Vec<String>, ApiError> {
    let mut out: Vec<String> = Vec::new();
    for tag in tags {
        let tag = tag.trim().to_lowercase();
        if tag.is_empty() {
            continue;
        }
        if tag.chars().count() > 50 || tag.chars().any(char::is_control) {
            return Err(ApiError::validation(
                "tags",
                "each tag must be 1 to 50 characters without control characters",
            ));
        }
        if !out.contains(&tag) {
            out.push(tag);
        }
    }
    if out.len() > 50 {
        return Err(ApiError::validation("tags", "at most 50 tags"));
    }
    Ok(out)
}

/// `POST /v1/assets/{id}/download-url` body.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct DownloadUrlRequest {
    /// Seconds the URL stays valid, 1 to `assets.max_download_expiry`
    /// (default 3600).
    #[schema(minimum = 1, maximum = 604800)]
    pub expires_in: Option<i64>,
}

/// A signed download URL.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct DownloadUrl {
    /// The link: with the local store, the path of `GET /v1/files/{token}`
    /// on this service; with S3, the store's absolute presigned `GET` URL.
    pub url: String,
    /// When it stops working.
    pub expires_at: DateTime<Utc>,
    /// The file name given to the browser.
    pub file_name: String,
    /// Size in bytes.
    pub file_size: i64,
    /// MIME type.
    pub mime_type: String,
}

/// A page of assets with facets.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct AssetList {
    /// The page.
    pub assets: Vec<Asset>,
    /// Where the page is.
    pub pagination: Pagination,
    /// Counts over every match (not just the page).
    pub facets: AssetFacets,
}

/// Facet counts of a search.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct AssetFacets {
    /// By MIME type.
    pub mime_types: Vec<FacetCount>,
    /// By category (`null`: none).
    pub categories: Vec<FacetCount>,
    /// By tag.
    pub tags: Vec<FacetCount>,
}
