//! `POST /v1/assets/bulk`: many files in one multipart request, registered
//! as assets by a job of the shared jobs module (kind `assets.bulk_upload`).
//!
//! The request streams every `file` part into storage exactly as a single
//! upload does (hash, size limit, type sniffed from the bytes), then answers
//! `202 {jobId}` at once. The job's batches (`batchSize` files, one
//! transaction each) check duplicates in the organization (`skipDuplicates`
//! makes them skipped successes instead of errors) and create the assets
//! and their processing tasks; progress and per-file errors are at
//! `GET /v1/jobs/{id}`. A file whose type is not allowed is recorded as
//! that item's error; a file over the size limit or a malformed body fails
//! the whole request (and removes what it stored).
//!
//! Processing options: `generateThumbnails=false` and `extractText=false`
//! skip those steps. `scanForVirus=false` is refused when a scanner is
//! configured: clients cannot opt out of the scan. `concurrency` (1–16) is
//! accepted and recorded; processing parallelism is `assets.workers`.

use axum::{
    extract::{Request, State},
    http::header,
    response::Response,
};
use multer::Multipart;
use serde::Deserialize;
use serde_json::{Value, json};
use sqlx::PgConnection;
use utoipa::ToSchema;
use uuid::Uuid;

use super::{
    model::Confidentiality,
    processing, repository,
    repository::NewAsset,
    storage,
    upload::{self, Form},
};
use crate::{
    auth::Principal,
    envelope::Envelope,
    error::ApiError,
    jobs::{
        self, ItemOutcome, JobAccepted, JobHandler, JobSpec, handler::BoxFuture, repository::NewJob,
    },
    state::AppState,
};

/// The job kind.
pub const KIND: &str = "assets.bulk_upload";
/// Most files in one request.
pub const MAX_FILES: usize = 1000;

/// `POST /v1/assets/bulk` form (multipart/form-data).
#[derive(Debug, ToSchema)]
#[allow(dead_code)]
#[schema(as = AssetBulkUpload, rename_all = "camelCase")]
pub struct BulkForm {
    /// The files: one `file` part each, 1 to 1000.
    #[schema(value_type = Vec<String>, format = Binary)]
    pub file: Vec<Vec<u8>>,
    /// The organization (the caller must be a member, not a viewer).
    pub organization_id: Uuid,
    /// Files per batch, 1 to 100 (default 10).
    pub batch_size: Option<i64>,
    /// 1 to 16 (recorded; processing parallelism is `assets.workers`).
    pub concurrency: Option<i64>,
    /// Identical files already stored are skipped instead of failing.
    pub skip_duplicates: Option<bool>,
    /// Default true.
    pub generate_thumbnails: Option<bool>,
    /// Default true.
    pub extract_text: Option<bool>,
    /// Default true; `false` is refused while a scanner is configured.
    pub scan_for_virus: Option<bool>,
    /// Category of every file.
    pub category: Option<String>,
    /// Comma-separated tags of every file.
    pub tags: Option<String>,
    /// Confidentiality of every file (default `internal`).
    pub confidentiality_level: Option<Confidentiality>,
}

/// One staged file (a job item).
#[derive(Debug, Clone, serde::Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Item {
    id: Uuid,
    file_name: String,
    mime_type: Option<String>,
    size: u64,
    sha256: Option<String>,
    error: Option<String>,
}

/// Upload many files as a job.
#[utoipa::path(
    post,
    path = "/v1/assets/bulk",
    tag = "assets",
    request_body(content = BulkForm, content_type = "multipart/form-data"),
    security(("bearer" = [])),
    responses(
        (status = 202, description = "Stored; the job registers them", body = Envelope<JobAccepted>,
            headers(("Location" = String, description = "/v1/jobs/{jobId}"))),
        (status = 413, description = "A file over `assets.max_file_size`", body = crate::envelope::ErrorEnvelope),
        (status = 415, description = "Not multipart", body = crate::envelope::ErrorEnvelope),
    )
)]
pub async fn bulk_upload(
    State(state): State<AppState>,
    principal: Principal,
    request: Request,
) -> Result<Response, ApiError> {
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
    let mut form = Form::default();
    let mut options =
        json!({"batchSize": 10, "concurrency": 1, "generateThumbnails": true, "extractText": true});
    let mut items: Vec<Item> = Vec::new();
    let mut authorized = false;
    let result: Result<Response, ApiError> = async {
        while let Some(field) = multipart.next_field().await.map_err(upload::multipart_error)? {
            let name = field.name().unwrap_or_default().to_owned();
            if name != "file" {
                let value = upload::text_field(field, &name).await?;
                match name.as_str() {
                    "batchSize" | "concurrency" => {
                        let max = if name == "batchSize" { 100 } else { 16 };
                        let n: i64 = value.trim().parse().ok().filter(|n| (1..=max).contains(n)).ok_or_else(|| {
                            ApiError::invalid(name.clone(), format!("`{name}` must be an integer from 1 to {max}"))
                        })?;
                        options[name.as_str()] = json!(n);
                    }
                    "generateThumbnails" | "extractText" | "scanForVirus" => {
                        let flag = match value.trim() {
                            "true" => true,
                            "false" => false,
                            _ => return Err(ApiError::invalid(name.clone(), format!("`{name}` must be true or false"))),
                        };
                        if name == "scanForVirus" && !flag && state.assets.clamd.is_some() {
                            return Err(ApiError::validation(
                                "scanForVirus",
                                "virus scanning cannot be turned off while a scanner is configured",
                            ));
                        }
                        options[name.as_str()] = json!(flag);
                    }
                    "title" | "description" => {
                        return Err(ApiError::invalid(name.clone(), "each file's title is its file name in a bulk upload"));
                    }
                    _ => form.set(&name, value)?,
                }
                continue;
            }
            if items.len() >= MAX_FILES {
                return Err(ApiError::validation("file", format!("at most {MAX_FILES} files per request")));
            }
            let organization = form.organization_id.ok_or_else(|| {
                ApiError::invalid("organizationId", "send `organizationId` before the files")
            })?;
            if !authorized {
                upload::authorize(&state, principal, organization).await?;
                authorized = true;
            }
            let file_name = field.file_name().unwrap_or_default().to_owned();
            let id = Uuid::now_v7();
            let mut item = Item {
                id,
                file_name: file_name.clone(),
                mime_type: None,
                size: 0,
                sha256: None,
                error: None,
            };
            if let Err(error) = super::sniff::check_file_name(&file_name) {
                // multer skips the rest of a part that is dropped unread.
                item.error = Some(error.to_string());
                items.push(item);
                continue;
            }
            match upload::store(&state, &storage::file_key(id, 1), field, file_name).await {
                Ok(stored) => {
                    item.mime_type = Some(stored.mime_type);
                    item.size = stored.size;
                    item.sha256 = Some(stored.sha256);
                }
                Err(ApiError::UnsupportedMediaType(message)) => item.error = Some(message),
                Err(error @ ApiError::Validation { .. }) => item.error = Some(error.to_string()),
                Err(error) => return Err(error),
            }
            items.push(item);
        }
        let organization_id = form
            .organization_id
            .ok_or_else(|| ApiError::invalid("organizationId", "`organizationId` is required"))?;
        if items.is_empty() {
            return Err(ApiError::invalid("file", "send at least one `file` part"));
        }
        if !authorized {
            upload::authorize(&state, principal, organization_id).await?;
        }
        let batch_size = options["batchSize"].as_i64().unwrap_or(10);
        let new = NewJob {
            kind: KIND,
            organization_id: Some(organization_id),
            created_by: principal.user_id,
            created_by_operator: principal.operator,
            params: json!({
                "options": options,
                "skipDuplicates": form.skip_duplicates,
                "category": form.category,
                "tags": form.tags,
                "confidentialityLevel": form.confidentiality.unwrap_or(Confidentiality::Internal).as_str(),
            }),
            items: items.iter().map(|item| json!(item)).collect(),
            batch_size: i32::try_from(batch_size).unwrap_or(10),
            callback_url: None,
            idempotency_key: None,
        };
        let id = state.db.run(jobs::repository::enqueue(&state.db.pool, new)).await?;
        tracing::info!(job_id = %id, files = items.len(), "assets bulk upload accepted");
        Ok(jobs::accepted(id))
    }
    .await;
    if result.is_err() {
        for item in &items {
            if let Err(error) = state
                .assets
                .storage
                .delete(&storage::file_key(item.id, 1))
                .await
            {
                tracing::warn!(%error, "could not remove a file of a refused bulk upload");
            }
        }
    }
    result
}

/// Registers a bulk upload's files (kind [`KIND`]).
#[derive(Debug, Clone, Copy, Default)]
pub struct BulkUploadHandler;

impl JobHandler for BulkUploadHandler {
    fn kind(&self) -> &'static str {
        KIND
    }

    fn apply_batch<'a>(
        &'a self,
        state: &'a AppState,
        job: &'a JobSpec,
        items: &'a [Value],
        tx: &'a mut PgConnection,
    ) -> BoxFuture<'a, Result<Vec<ItemOutcome>, ApiError>> {
        Box::pin(apply_batch(state, job, items, tx))
    }

    fn after_commit<'a>(
        &'a self,
        state: &'a AppState,
        _job: &'a JobSpec,
        _items: &'a [Value],
        _outcomes: &'a [ItemOutcome],
    ) -> BoxFuture<'a, ()> {
        Box::pin(async move { state.assets.wake.notify_one() })
    }
}

async fn apply_batch(
    state: &AppState,
    job: &JobSpec,
    items: &[Value],
    tx: &mut PgConnection,
) -> Result<Vec<ItemOutcome>, ApiError> {
    let Some(organization_id) = job.organization_id else {
        return Ok(items
            .iter()
            .map(|_| Err("the job has no organization".to_owned()))
            .collect());
    };
    let params = &job.params;
    let skip_duplicates = params["skipDuplicates"].as_bool().unwrap_or(false);
    let thumbnails = params["options"]["generateThumbnails"]
        .as_bool()
        .unwrap_or(true);
    let text = params["options"]["extractText"].as_bool().unwrap_or(true);
    let confidentiality = Confidentiality::parse(
        "confidentialityLevel",
        params["confidentialityLevel"]
            .as_str()
            .unwrap_or("internal"),
    )?;
    let tags: Vec<String> = serde_json::from_value(params["tags"].clone()).unwrap_or_default();
    let category = params["category"].as_str().map(str::to_owned);
    let mut outcomes = Vec::with_capacity(items.len());
    for value in items {
        let Ok(item) = serde_json::from_value::<Item>(value.clone()) else {
            outcomes.push(Err("unreadable item".to_owned()));
            continue;
        };
        if let Some(error) = item.error {
            outcomes.push(Err(format!("{}: {error}", item.file_name)));
            continue;
        }
        let (Some(mime_type), Some(sha256)) = (item.mime_type, item.sha256) else {
            outcomes.push(Err(format!("{}: not stored", item.file_name)));
            continue;
        };
        let duplicate: Option<Uuid> = sqlx::query_scalar(
            "SELECT id FROM assets WHERE organization_id = $1 AND sha256 = $2 LIMIT 1",
        )
        .bind(organization_id)
        .bind(&sha256)
        .fetch_optional(&mut *tx)
        .await?;
        if let Some(existing) = duplicate {
            outcomes.push(if skip_duplicates || existing == item.id {
                Ok(())
            } else {
                Err(format!("{}: identical to asset {existing}", item.file_name))
            });
            continue;
        }
        let mut skip_steps = Vec::new();
        if !thumbnails {
            skip_steps.push("thumbnail");
        }
        if !text {
            skip_steps.push("extract");
        }
        let mut steps = Vec::new();
        let scan_status = if state.assets.clamd.is_some() {
            steps.push("scan");
            "pending"
        } else {
            steps.extend(
                processing::content_steps(&mime_type)
                    .into_iter()
                    .filter(|step| !skip_steps.contains(step)),
            );
            "skipped"
        };
        let title: String = item.file_name.chars().take(500).collect();
        let new = NewAsset {
            id: item.id,
            organization_id,
            uploaded_by: job.created_by,
            title,
            description: None,
            category: category.clone(),
            tags: tags.clone(),
            confidentiality,
            file_name: item.file_name,
            mime_type,
            size_bytes: i64::try_from(item.size).unwrap_or(i64::MAX),
            sha256,
            storage_key: storage::file_key(item.id, 1),
            scan_status,
            steps,
            skip_steps,
        };
        repository::insert_in(tx, &new).await?;
        outcomes.push(Ok(()));
    }
    Ok(outcomes)
}
