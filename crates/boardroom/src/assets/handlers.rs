//! `GET|PATCH|DELETE /v1/assets/{id}` and `GET /v1/assets/{id}/thumbnail`.

use axum::{
    body::Body,
    extract::State,
    http::{StatusCode, header},
    response::{IntoResponse, Response},
};
use uuid::Uuid;

use super::{
    load_for,
    model::{self, Asset, AssetUpdate, ProcessingStatus},
    repository,
    storage::StorageError,
    storage_unavailable,
};
use crate::{
    auth::Principal,
    envelope::{self, Envelope},
    error::ApiError,
    extract::{Json, Path},
    state::AppState,
};

/// Read an asset's metadata and processing state (counted as a view).
#[utoipa::path(
    get,
    path = "/v1/assets/{id}",
    tag = "assets",
    params(("id" = Uuid, Path, description = "Asset id")),
    security(("bearer" = [])),
    responses((status = 200, description = "The asset", body = Envelope<Asset>))
)]
pub async fn get_asset(
    State(state): State<AppState>,
    principal: Principal,
    Path(id): Path<Uuid>,
) -> Result<Response, ApiError> {
    let (mut asset, _) = load_for(&state, principal, id).await?;
    let viewer = (!principal.operator).then_some(principal.user_id);
    super::download::record_event(&state, &asset, viewer, "view").await?;
    asset.view_count += 1;
    Ok(envelope::ok(asset))
}

/// Change an asset's metadata (its uploader, admins and owners; only admins
/// and owners change the confidentiality level).
#[utoipa::path(
    patch,
    path = "/v1/assets/{id}",
    tag = "assets",
    params(("id" = Uuid, Path, description = "Asset id")),
    request_body = AssetUpdate,
    security(("bearer" = [])),
    responses((status = 200, description = "The changed asset", body = Envelope<Asset>))
)]
pub async fn update_asset(
    State(state): State<AppState>,
    principal: Principal,
    Path(id): Path<Uuid>,
    Json(body): Json<AssetUpdate>,
) -> Result<Response, ApiError> {
    let (_, access) = load_for(&state, principal, id).await?;
    if !access.manages {
        return Err(ApiError::forbidden(
            "only the uploader, admins and owners change an asset",
        ));
    }
    if body.confidentiality_level.is_some() && !access.role.manages_members() {
        return Err(ApiError::forbidden(
            "only admins and owners change the confidentiality level",
        ));
    }
    if let Some(title) = &body.title {
        model::check_title(title)?;
    }
    if let Some(description) = &body.description {
        model::check_description(description)?;
    }
    if let Some(category) = &body.category {
        model::check_category(category)?;
    }
    let tags = body.tags.clone().map(model::normalize_tags).transpose()?;
    let asset = state
        .db
        .run(repository::update(&state.db.pool, id, &body, tags))
        .await?
        .ok_or_else(|| ApiError::not_found("asset"))?;
    Ok(envelope::ok(asset))
}

/// Delete an asset and its stored bytes (its uploader, admins and owners).
#[utoipa::path(
    delete,
    path = "/v1/assets/{id}",
    tag = "assets",
    params(("id" = Uuid, Path, description = "Asset id")),
    security(("bearer" = [])),
    responses((status = 204, description = "Deleted"))
)]
pub async fn delete_asset(
    State(state): State<AppState>,
    principal: Principal,
    Path(id): Path<Uuid>,
) -> Result<Response, ApiError> {
    let (_, access) = load_for(&state, principal, id).await?;
    if !access.manages {
        return Err(ApiError::forbidden(
            "only the uploader, admins and owners delete an asset",
        ));
    }
    let keys = state
        .db
        .run(repository::delete(&state.db.pool, id))
        .await?
        .ok_or_else(|| ApiError::not_found("asset"))?;
    // The row is gone (nothing serves the bytes any more); a failed removal
    // leaves an orphan object, logged.
    for key in std::iter::once(keys.0).chain(keys.1) {
        if let Err(error) = state.assets.storage.delete(&key).await {
            tracing::warn!(%error, %key, "could not remove a deleted asset's object");
        }
    }
    tracing::info!(asset_id = %id, by = %principal.user_id, "asset deleted");
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// The asset's thumbnail (PNG), once processing made one (`404` before, and
/// for files that get none).
#[utoipa::path(
    get,
    path = "/v1/assets/{id}/thumbnail",
    tag = "assets",
    params(("id" = Uuid, Path, description = "Asset id")),
    security(("bearer" = [])),
    responses((status = 200, description = "The thumbnail", content_type = "image/png", body = Vec<u8>))
)]
pub async fn get_thumbnail(
    State(state): State<AppState>,
    principal: Principal,
    Path(id): Path<Uuid>,
) -> Result<Response, ApiError> {
    let (asset, _) = load_for(&state, principal, id).await?;
    if asset.processing_status == ProcessingStatus::Quarantined {
        return Err(ApiError::not_found("thumbnail"));
    }
    let Some((_, Some(key))) = state.db.run(repository::keys(&state.db.pool, id)).await? else {
        return Err(ApiError::not_found("thumbnail"));
    };
    let bytes = match state.assets.storage.read_all(&key).await {
        Ok(bytes) => bytes,
        Err(StorageError::NotFound) => return Err(ApiError::not_found("thumbnail")),
        Err(error) => return Err(storage_unavailable(error)),
    };
    Ok((
        [
            (header::CONTENT_TYPE, "image/png"),
            (header::CACHE_CONTROL, "private, max-age=300"),
        ],
        Body::from(bytes),
    )
        .into_response())
}
