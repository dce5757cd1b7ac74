//! Assets (board documents): streamed uploads into object storage, a
//! durable processing pipeline (virus scan through clamd, thumbnails, text
//! extraction), full-text search, and signed, expiring downloads.
//!
//! Routes: `POST /v1/assets` (multipart upload, [`upload`]),
//! `POST /v1/assets/bulk` (many files, a job: [`bulk`]),
//! `GET /v1/assets` (search with facets, [`search`]),
//! `GET|PATCH|DELETE /v1/assets/{id}`, `GET /v1/assets/{id}/thumbnail`,
//! `POST /v1/assets/{id}/download-url` and `GET /v1/files/{token}`
//! ([`download`]), `GET /v1/organizations/{id}/assets/analytics`
//! ([`analytics`]).
//!
//! Access: members of the asset's organization see it (another tenant's
//! asset is a `404`), except `restricted` ones, which only its admins and
//! owners (and operators) see — for anyone else they do not exist (`404`).
//! Viewers read; members upload; the uploader, admins and owners change
//! and delete.
//!
//! ```
//! let (_router, api) = boardroom::assets::router().split_for_parts();
//! assert!(api.paths.paths.contains_key("/v1/assets/{id}/download-url"));
//! ```

pub mod analytics;
pub mod bulk;
pub mod download;
pub mod extract;
pub mod handlers;
pub mod health;
pub mod model;
pub mod processing;
pub mod repository;
pub mod scan;
pub mod search;
pub mod settings;
pub mod sniff;
pub mod storage;
pub mod token;
pub mod upload;

use std::sync::Arc;

use resilience::{
    breaker::{BreakerHandle, BreakerLayer},
    registry::Registry,
};
use tokio::sync::Notify;
use utoipa_axum::{router::OpenApiRouter, routes};

use crate::{
    auth::{Principal, Role},
    config::Settings,
    error::ApiError,
    organizations,
    state::AppState,
};
use model::{Asset, Confidentiality};

/// The asset routes.
pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(upload::upload_asset, search::search_assets))
        .routes(routes!(bulk::bulk_upload))
        .routes(routes!(
            handlers::get_asset,
            handlers::update_asset,
            handlers::delete_asset
        ))
        .routes(routes!(handlers::get_thumbnail))
        .routes(routes!(download::create_download_url))
        .routes(routes!(analytics::asset_analytics))
}

/// `GET /v1/files/{token}` (authorized by its token, in its own stack `files`).
pub fn files_router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(download::serve_file))
}

/// The largest multipart body of an upload: the file plus room for the form.
pub fn upload_body_limit(settings: &Settings) -> usize {
    settings.assets.max_file_size.saturating_add(1 << 20)
}

/// The breakers of the processing steps.
#[derive(Debug, Clone)]
pub struct StepBreakers {
    /// The virus scanner.
    pub clamd: BreakerHandle,
    /// Thumbnail rendering.
    pub thumbnails: BreakerHandle,
    /// Text extraction.
    pub extract: BreakerHandle,
}

/// What the asset domain needs at run time (cheap to clone).
#[derive(Debug, Clone)]
pub struct AssetServices {
    /// The object store.
    pub storage: storage::Storage,
    /// The scanner, when `scanner.clamd_url` is set.
    pub clamd: Option<scan::Clamd>,
    /// One breaker per processing step.
    pub breakers: StepBreakers,
    /// Download token signer.
    pub signer: token::DownloadSigner,
    /// Wakes the processing workers.
    pub wake: Arc<Notify>,
    /// Cached search results (`None` when `assets.search_cache_entries` is 0).
    pub search_cache: Option<search::SearchCache>,
}

/// The dependency names (breakers) of this domain, for `[services.<name>]`.
pub const STEP_BREAKERS: [&str; 3] = ["clamd", "thumbnails", "extract"];

impl AssetServices {
    /// Opens the store, builds the breakers and the search cache into `registry`.
    pub fn new(settings: &Settings, registry: &Registry) -> anyhow::Result<Self> {
        let storage = storage::Storage::open(&settings.storage)?;
        let clamd = scan::ClamdAddr::parse(&settings.scanner.clamd_url)
            .map(|addr| scan::Clamd::new(addr, settings.scanner.timeout));
        let breaker = |name: &str| -> anyhow::Result<BreakerHandle> {
            let layer = BreakerLayer::new(name.to_owned(), settings.service(name).breaker)
                .map_err(|e| anyhow::anyhow!("services.{name}.breaker: {e}"))?;
            let handle = layer.handle();
            registry
                .register_breaker(handle.clone())
                .map_err(|e| anyhow::anyhow!("services.{name}: {e}"))?;
            Ok(handle)
        };
        let breakers = StepBreakers {
            clamd: breaker("clamd")?,
            thumbnails: breaker("thumbnails")?,
            extract: breaker("extract")?,
        };
        let secret = if settings.assets.download_secret.is_empty() {
            format!("boardroom-download-links:{}", settings.auth.jwt_secret)
        } else {
            settings.assets.download_secret.clone()
        };
        let search_cache = search::search_cache(&settings.assets)
            .map_err(|e| anyhow::anyhow!("assets.search_cache: {e}"))?;
        if let Some(cache) = &search_cache {
            registry
                .register_cache(cache.handle())
                .map_err(|e| anyhow::anyhow!("assets.search_cache: {e}"))?;
        }
        Ok(Self {
            storage,
            clamd,
            breakers,
            signer: token::DownloadSigner::new(secret.as_bytes()),
            wake: Arc::new(Notify::new()),
            search_cache,
        })
    }
}

/// What the caller may do with one asset.
#[derive(Debug, Clone, Copy)]
pub struct AssetAccess {
    /// The caller's role in the asset's organization (operators: owner).
    pub role: Role,
    /// Uploader, admin, owner or operator: may change and delete it.
    pub manages: bool,
}

/// Loads `id` for the caller: `404` when it does not exist, belongs to an
/// organization the caller is not in, or is `restricted` and the caller is
/// neither admin nor owner there.
pub async fn load_for(
    state: &AppState,
    principal: Principal,
    id: uuid::Uuid,
) -> Result<(Asset, AssetAccess), ApiError> {
    let asset = state
        .db
        .run(repository::find(&state.db.pool, id))
        .await?
        .ok_or_else(|| ApiError::not_found("asset"))?;
    let role = organizations::caller_role(state, principal, asset.organization_id)
        .await
        .map_err(|error| match error {
            ApiError::NotFound(_) => ApiError::not_found("asset"),
            other => other,
        })?;
    let admin = role.manages_members();
    if asset.confidentiality_level == Confidentiality::Restricted && !admin {
        return Err(ApiError::not_found("asset"));
    }
    let manages = admin || asset.uploaded_by == principal.user_id;
    Ok((asset, AssetAccess { role, manages }))
}

/// Maps a storage failure to a `503` (the store is a dependency).
pub fn storage_unavailable(error: storage::StorageError) -> ApiError {
    tracing::warn!(%error, "object storage failed");
    ApiError::Unavailable {
        message: "the file store is unavailable; retry later".into(),
        retry_after: std::time::Duration::from_secs(1),
    }
}
