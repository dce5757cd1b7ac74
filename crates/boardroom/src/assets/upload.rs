//! `POST /v1/assets`: a multipart upload streamed to storage.
//!
//! The file part is never held whole in memory: each chunk is hashed
//! (SHA-256), counted against `assets.max_file_size` (`413` beyond) and
//! handed to the object store, which writes 1 MiB parts while the next ones
//! arrive. The type is sniffed from the first 8 KiB (`415` for a type not in
//! `assets.allowed_types`, whatever the file is called or claims to be).
//! Fields may come in any order; when `organizationId` precedes the file,
//! the caller's rights are checked before a byte is stored. Whatever fails
//! after bytes were written removes them.

use axum::{
    extract::{Request, State},
    http::{StatusCode, header},
    response::{IntoResponse, Response},
};
use multer::{Field, Multipart};
use sha2::{Digest, Sha256};
use uuid::Uuid;

use super::{
    model::{self, Asset, Confidentiality, UploadForm},
    processing, repository,
    repository::NewAsset,
    sniff, storage, storage_unavailable,
};
use crate::{
    auth::{Principal, Role},
    envelope::{self, Envelope},
    error::ApiError,
    organizations,
    state::AppState,
};

/// Largest text field of the form.
const MAX_FIELD: usize = 64 << 10;

/// Upload a document into an organization (members, admins and owners).
/// The type is sniffed from the bytes; processing (virus scan, then
/// thumbnail and text extraction) runs in the background:
/// `processingStatus` is `pending` until it ends.
#[utoipa::path(
    post,
    path = "/v1/assets",
    tag = "assets",
    request_body(content = UploadForm, content_type = "multipart/form-data"),
    security(("bearer" = [])),
    responses(
        (status = 201, description = "Stored; processing is pending", body = Envelope<Asset>,
            headers(("Location" = String, description = "/v1/assets/{id}"))),
        (status = 200, description = "`skipDuplicates`: the identical asset already stored", body = Envelope<Asset>),
        (status = 413, description = "File over `assets.max_file_size`", body = crate::envelope::ErrorEnvelope),
        (status = 415, description = "Not multipart, or a file type that is not allowed", body = crate::envelope::ErrorEnvelope),
    )
)]
pub async fn upload_asset(
    State(state): State<AppState>,
    principal: Principal,
    request: Request,
) -> Result<Response, ApiError> {
    // multer directly rather than axum's extractor: the route's limit is
    // `assets.max_file_size` (enforced while streaming), not the
    // `server.body_limit` every JSON route keeps.
    let boundary = request
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| multer::parse_boundary(v).ok())
        .ok_or_else(|| {
            ApiError::UnsupportedMediaType(
                "expected a `multipart/form-data` body with a boundary".into(),
            )
        })?;
    let mut multipart = Multipart::new(request.into_body().into_data_stream(), boundary);
    let id = Uuid::now_v7();
    let key = storage::file_key(id, 1);
    let mut form = Form::default();
    let mut stored: Option<StoredFile> = None;
    let result: Result<Response, ApiError> = async {
        while let Some(field) = multipart.next_field().await.map_err(multipart_error)? {
            let name = field.name().unwrap_or_default().to_owned();
            if name == "file" {
                if stored.is_some() {
                    return Err(ApiError::invalid("file", "send exactly one `file` part"));
                }
                let file_name = field.file_name().unwrap_or_default().to_owned();
                sniff::check_file_name(&file_name)?;
                if let Some(organization) = form.organization_id {
                    authorize(&state, principal, organization).await?;
                }
                stored = Some(store(&state, &key, field, file_name).await?);
            } else {
                let value = text_field(field, &name).await?;
                form.set(&name, value)?;
            }
        }
        let file = stored
            .take()
            .ok_or_else(|| ApiError::invalid("file", "a `file` part is required"))?;
        let organization_id = form.organization_id.ok_or_else(|| {
            ApiError::invalid("organizationId", "`organizationId` is required")
        })?;
        authorize(&state, principal, organization_id).await?;
        if let Some(existing) = state
            .db
            .run(repository::find_duplicate(
                &state.db.pool,
                organization_id,
                &file.sha256,
            ))
            .await?
        {
            state.assets.storage.delete(&key).await.map_err(storage_unavailable)?;
            if form.skip_duplicates {
                return Ok(envelope::ok(existing));
            }
            return Err(ApiError::Conflict(format!(
                "an identical file is already stored in this organization as asset {} \
                 (send skipDuplicates=true to get it instead)",
                existing.id
            )));
        }
        let mut steps = Vec::new();
        let scan_status = if state.assets.clamd.is_some() {
            steps.push("scan");
            "pending"
        } else {
            steps.extend(processing::content_steps(&file.mime_type));
            "skipped"
        };
        let new = NewAsset {
            id,
            organization_id,
            uploaded_by: principal.user_id,
            title: form
                .title
                .clone()
                .unwrap_or_else(|| file.file_name.clone()),
            description: form.description.clone(),
            category: form.category.clone(),
            tags: form.tags.clone(),
            confidentiality: form.confidentiality.unwrap_or(Confidentiality::Internal),
            file_name: file.file_name,
            mime_type: file.mime_type,
            size_bytes: i64::try_from(file.size).unwrap_or(i64::MAX),
            sha256: file.sha256,
            storage_key: key.clone(),
            scan_status,
            steps,
            skip_steps: Vec::new(),
        };
        model::check_title(&new.title)?;
        let asset = state.db.run(repository::insert(&state.db.pool, &new)).await?;
        state.assets.wake.notify_one();
        tracing::info!(asset_id = %asset.id, organization_id = %organization_id, size = asset.size_bytes, mime = %asset.mime_type, "asset uploaded");
        let location = format!("/v1/assets/{}", asset.id);
        Ok((
            StatusCode::CREATED,
            [(header::LOCATION, location)],
            axum::Json(Envelope::new(asset)),
        )
            .into_response())
    }
    .await;
    if result.is_err() {
        // Whatever was written for a refused upload goes (a no-op if nothing was).
        if let Err(error) = state.assets.storage.delete(&key).await {
            tracing::warn!(%error, %key, "could not remove the bytes of a refused upload");
        }
    }
    result
}

/// Uploading needs membership above viewer.
pub(super) async fn authorize(
    state: &AppState,
    principal: Principal,
    organization: Uuid,
) -> Result<(), ApiError> {
    let role = organizations::caller_role(state, principal, organization).await?;
    if role == Role::Viewer {
        return Err(ApiError::forbidden("viewers cannot upload documents"));
    }
    Ok(())
}

/// The metadata fields of the form.
#[derive(Debug, Default)]
pub(super) struct Form {
    pub(super) organization_id: Option<Uuid>,
    pub(super) title: Option<String>,
    pub(super) description: Option<String>,
    pub(super) category: Option<String>,
    pub(super) tags: Vec<String>,
    pub(super) confidentiality: Option<Confidentiality>,
    pub(super) skip_duplicates: bool,
}

impl Form {
    /// Sets the field `name`; an unknown name or a bad value is a `400`/`422`.
    pub(super) fn set(&mut self, name: &str, value: String) -> Result<(), ApiError> {
        match name {
            "organizationId" => {
                self.organization_id = Some(value.trim().parse().map_err(|_| {
                    ApiError::invalid("organizationId", "`organizationId` must be a UUID")
                })?);
            }
            "title" => {
                model::check_title(&value)?;
                self.title = Some(value.trim().to_owned());
            }
            "description" => {
                model::check_description(&value)?;
                self.description = Some(value);
            }
            "category" => {
                model::check_category(&value)?;
                self.category = Some(value.trim().to_owned());
            }
            "tags" => {
                self.tags = model::normalize_tags(value.split(',').map(str::to_owned))?;
            }
            "confidentialityLevel" => {
                self.confidentiality = Some(Confidentiality::parse(
                    "confidentialityLevel",
                    value.trim(),
                )?);
            }
            "skipDuplicates" => {
                self.skip_duplicates = match value.trim() {
                    "true" => true,
                    "false" => false,
                    _ => {
                        return Err(ApiError::invalid(
                            "skipDuplicates",
                            "`skipDuplicates` must be true or false",
                        ));
                    }
                };
            }
            other => {
                return Err(ApiError::invalid(
                    other,
                    format!("unknown form field `{other}`"),
                ));
            }
        }
        Ok(())
    }
}

/// A form field's text (at most 64 KiB).
pub(super) async fn text_field(mut field: Field<'static>, name: &str) -> Result<String, ApiError> {
    let mut bytes = Vec::new();
    while let Some(chunk) = field.chunk().await.map_err(multipart_error)? {
        if bytes.len() + chunk.len() > MAX_FIELD {
            return Err(ApiError::invalid(
                name,
                format!("`{name}` is longer than {MAX_FIELD} bytes"),
            ));
        }
        bytes.extend_from_slice(&chunk);
    }
    String::from_utf8(bytes).map_err(|_| ApiError::invalid(name, format!("`{name}` is not UTF-8")))
}

/// A malformed or cut-off body is a `400`; a body over the limit a `413`.
pub(super) fn multipart_error(error: multer::Error) -> ApiError {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(&error);
    while let Some(cause) = source {
        if cause.is::<http_body_util::LengthLimitError>()
            || cause.to_string().contains("length limit exceeded")
        {
            return ApiError::PayloadTooLarge;
        }
        source = cause.source();
    }
    ApiError::InvalidInput {
        field: None,
        message: format!("malformed multipart body: {error}"),
    }
}

/// A file streamed into storage.
pub(super) struct StoredFile {
    pub(super) file_name: String,
    pub(super) mime_type: String,
    pub(super) size: u64,
    pub(super) sha256: String,
}

/// Streams `field` into `key`: hashed, size-limited, type-sniffed; nothing
/// is left under `key` when it fails.
pub(super) async fn store(
    state: &AppState,
    key: &str,
    mut field: Field<'static>,
    file_name: String,
) -> Result<StoredFile, ApiError> {
    let limit = u64::try_from(state.settings.assets.max_file_size).unwrap_or(u64::MAX);
    let mut writer = state
        .assets
        .storage
        .writer(key)
        .await
        .map_err(storage_unavailable)?;
    let mut hasher = Sha256::new();
    let mut size: u64 = 0;
    let mut head: Vec<u8> = Vec::new();
    let mut mime: Option<String> = None;
    let outcome: Result<(), ApiError> = async {
        while let Some(chunk) = field.chunk().await.map_err(multipart_error)? {
            size += chunk.len() as u64;
            if size > limit {
                return Err(ApiError::PayloadTooLarge);
            }
            hasher.update(&chunk);
            if mime.is_none() {
                let wanted = sniff::SNIFF_BYTES - head.len();
                head.extend_from_slice(&chunk[..chunk.len().min(wanted)]);
                if head.len() >= sniff::SNIFF_BYTES {
                    mime = Some(allowed(state, &head, &file_name)?);
                }
            }
            writer.write(chunk).await.map_err(storage_unavailable)?;
        }
        Ok(())
    }
    .await;
    if let Err(error) = outcome {
        writer.abort().await;
        return Err(error);
    }
    if size == 0 {
        writer.abort().await;
        return Err(ApiError::validation("file", "the file is empty"));
    }
    let mime = match mime {
        Some(mime) => mime,
        None => match allowed(state, &head, &file_name) {
            Ok(mime) => mime,
            Err(error) => {
                writer.abort().await;
                return Err(error);
            }
        },
    };
    writer.finish().await.map_err(storage_unavailable)?;
    Ok(StoredFile {
        file_name,
        mime_type: mime,
        size,
        sha256: hex::encode(hasher.finalize()),
    })
}

fn allowed(state: &AppState, head: &[u8], file_name: &str) -> Result<String, ApiError> {
    let sniffed = sniff::sniff(head, file_name);
    match sniffed {
        Some(mime) if state.settings.assets.allowed_types.contains(&mime) => Ok(mime),
        Some(mime) => Err(ApiError::UnsupportedMediaType(format!(
            "files of type {mime} are not accepted (the type is read from the file's bytes)"
        ))),
        None => Err(ApiError::UnsupportedMediaType(
            "the file's type could not be recognized from its bytes; it is not accepted".into(),
        )),
    }
}
