//! SQL for assets (runtime-checked queries).

use sqlx::{PgConnection, PgPool};
use uuid::Uuid;

use super::model::{Asset, AssetUpdate, Confidentiality};
use crate::error::ApiError;

/// The columns of [`Asset`] (rank and highlight are added by searches).
pub const ASSET_COLUMNS: &str = "id, organization_id, uploaded_by, title, description, category, \
    tags, confidentiality_level, file_name, mime_type, size_bytes, sha256, version, \
    processing_status, scan_status, scan_result, scanned_at, thumbnail_key IS NOT NULL AS has_thumbnail, \
    page_count, processing_error, view_count, download_count, created_at, updated_at, processed_at";

/// An asset about to be stored.
#[derive(Debug, Clone)]
pub struct NewAsset {
    /// Its id (the storage key derives from it).
    pub id: Uuid,
    /// Organization.
    pub organization_id: Uuid,
    /// Uploader.
    pub uploaded_by: Uuid,
    /// Title.
    pub title: String,
    /// Description.
    pub description: Option<String>,
    /// Category.
    pub category: Option<String>,
    /// Tags.
    pub tags: Vec<String>,
    /// Level.
    pub confidentiality: Confidentiality,
    /// Client file name.
    pub file_name: String,
    /// Sniffed type.
    pub mime_type: String,
    /// Size.
    pub size_bytes: i64,
    /// SHA-256, hex.
    pub sha256: String,
    /// Storage key.
    pub storage_key: String,
    /// `pending`, or `skipped` without a scanner.
    pub scan_status: &'static str,
    /// The first processing steps to queue.
    pub steps: Vec<&'static str>,
    /// Content steps not to run after the scan (bulk options).
    pub skip_steps: Vec<&'static str>,
}

/// Inserts the asset and its first processing tasks in one transaction.
pub async fn insert(pool: &PgPool, new: &NewAsset) -> Result<Asset, ApiError> {
    let mut tx = pool.begin().await?;
    let asset = insert_in(&mut tx, new).await?;
    tx.commit().await?;
    Ok(asset)
}

/// Inserts the asset and its first processing tasks on `conn` (inside the
/// caller's transaction).
pub async fn insert_in(conn: &mut PgConnection, new: &NewAsset) -> Result<Asset, sqlx::Error> {
    // `processingStatus` starts `completed` when no step is queued.
    let asset = sqlx::query_as::<_, Asset>(sqlx::AssertSqlSafe(format!(
        "INSERT INTO assets (id, organization_id, uploaded_by, title, description, category, tags,
             confidentiality_level, file_name, mime_type, size_bytes, sha256, storage_key,
             scan_status, processing_status, skip_steps)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14,
             CASE WHEN cardinality($15::text[]) = 0 THEN 'completed' ELSE 'pending' END, $16)
         RETURNING {ASSET_COLUMNS}"
    )))
    .bind(new.id)
    .bind(new.organization_id)
    .bind(new.uploaded_by)
    .bind(&new.title)
    .bind(&new.description)
    .bind(&new.category)
    .bind(&new.tags)
    .bind(new.confidentiality.as_str())
    .bind(&new.file_name)
    .bind(&new.mime_type)
    .bind(new.size_bytes)
    .bind(&new.sha256)
    .bind(&new.storage_key)
    .bind(new.scan_status)
    .bind(&new.steps)
    .bind(&new.skip_steps)
    .fetch_one(&mut *conn)
    .await?;
    queue_steps(conn, new.id, &new.steps).await?;
    Ok(asset)
}

/// Queues processing `steps` of `asset_id` (a step already queued is kept).
pub async fn queue_steps(
    conn: &mut PgConnection,
    asset_id: Uuid,
    steps: &[&str],
) -> Result<(), sqlx::Error> {
    if steps.is_empty() {
        return Ok(());
    }
    sqlx::query(
        "INSERT INTO asset_tasks (asset_id, step) SELECT $1, unnest($2::text[])
         ON CONFLICT (asset_id, step) DO NOTHING",
    )
    .bind(asset_id)
    .bind(steps)
    .execute(conn)
    .await?;
    Ok(())
}

/// An asset of `organization_id` with the same bytes.
pub async fn find_duplicate(
    pool: &PgPool,
    organization_id: Uuid,
    sha256: &str,
) -> Result<Option<Asset>, ApiError> {
    Ok(sqlx::query_as::<_, Asset>(sqlx::AssertSqlSafe(format!(
        "SELECT {ASSET_COLUMNS} FROM assets WHERE organization_id = $1 AND sha256 = $2
         ORDER BY created_at LIMIT 1"
    )))
    .bind(organization_id)
    .bind(sha256)
    .fetch_optional(pool)
    .await?)
}

/// One asset, whoever asks (callers check access).
pub async fn find(pool: &PgPool, id: Uuid) -> Result<Option<Asset>, ApiError> {
    Ok(sqlx::query_as::<_, Asset>(sqlx::AssertSqlSafe(format!(
        "SELECT {ASSET_COLUMNS} FROM assets WHERE id = $1"
    )))
    .bind(id)
    .fetch_optional(pool)
    .await?)
}

/// The storage keys of an asset: (file, thumbnail).
pub async fn keys(pool: &PgPool, id: Uuid) -> Result<Option<(String, Option<String>)>, ApiError> {
    Ok(
        sqlx::query_as("SELECT storage_key, thumbnail_key FROM assets WHERE id = $1")
            .bind(id)
            .fetch_optional(pool)
            .await?,
    )
}

/// Applies a metadata change; `None` when the asset is gone.
pub async fn update(
    pool: &PgPool,
    id: Uuid,
    change: &AssetUpdate,
    tags: Option<Vec<String>>,
) -> Result<Option<Asset>, ApiError> {
    Ok(sqlx::query_as::<_, Asset>(sqlx::AssertSqlSafe(format!(
        "UPDATE assets SET
             title = coalesce($2, title),
             description = coalesce($3, description),
             category = coalesce($4, category),
             tags = coalesce($5, tags),
             confidentiality_level = coalesce($6, confidentiality_level),
             updated_at = now()
         WHERE id = $1 RETURNING {ASSET_COLUMNS}"
    )))
    .bind(id)
    .bind(change.title.as_deref().map(str::trim))
    .bind(change.description.as_deref())
    .bind(change.category.as_deref().map(str::trim))
    .bind(tags)
    .bind(change.confidentiality_level.map(Confidentiality::as_str))
    .fetch_optional(pool)
    .await?)
}

/// Deletes the row (its tasks and events go with it); returns its keys.
pub async fn delete(pool: &PgPool, id: Uuid) -> Result<Option<(String, Option<String>)>, ApiError> {
    Ok(
        sqlx::query_as("DELETE FROM assets WHERE id = $1 RETURNING storage_key, thumbnail_key")
            .bind(id)
            .fetch_optional(pool)
            .await?,
    )
}

/// Records a view or download by `user_id` and counts it.
pub async fn record_event(
    pool: &PgPool,
    asset_id: Uuid,
    organization_id: Uuid,
    user_id: Option<Uuid>,
    kind: &str,
) -> Result<(), ApiError> {
    let column = if kind == "download" {
        "download_count"
    } else {
        "view_count"
    };
    let mut tx = pool.begin().await?;
    sqlx::query(
        "INSERT INTO asset_events (asset_id, organization_id, user_id, kind) VALUES ($1, $2, $3, $4)",
    )
    .bind(asset_id)
    .bind(organization_id)
    .bind(user_id)
    .bind(kind)
    .execute(&mut *tx)
    .await?;
    sqlx::query(sqlx::AssertSqlSafe(format!(
        "UPDATE assets SET {column} = {column} + 1 WHERE id = $1"
    )))
    .bind(asset_id)
    .execute(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(())
}
