//! `POST /v1/notifications/bulk`: many sends as one job (kind
//! `notifications.bulk_send`) run by the shared [`crate::jobs`] workers.
//!
//! Each item is a `POST /v1/notifications` body. The request is checked up
//! front (size, batch size, the caller managing every organization named);
//! each item is then checked and stored on its own when its batch runs, in
//! the batch's transaction under a savepoint, so a bad item (a recipient
//! outside the organization, an unknown type) is recorded in the job's
//! `errors` and the others go out. Because the batch commits with the job's
//! cursor, a job resumed after a crash stores every item exactly once.

use std::collections::BTreeSet;

use axum::{body::Body, extract::State, http::HeaderMap, response::Response};
use serde::Deserialize;
use serde_json::{Value, json};
use sqlx::PgConnection;
use utoipa::ToSchema;
use uuid::Uuid;

use super::{
    model::SendRequest,
    send::{self, Stored},
};
use crate::{
    auth::Principal,
    envelope::Envelope,
    error::ApiError,
    extract::{is_json, parse_json},
    jobs::{
        self, ItemOutcome, JobAccepted, JobHandler, JobSpec, MAX_BATCH_SIZE, handler::BoxFuture,
        repository::NewJob,
    },
    state::AppState,
};

/// The job kind.
pub const KIND: &str = "notifications.bulk_send";
/// Most notifications one request may hold.
pub const MAX_ITEMS: usize = 10_000;

/// `POST /v1/notifications/bulk` body.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct BulkSendRequest {
    /// The sends, 1 to 10,000, each as for `POST /v1/notifications`.
    #[schema(min_items = 1, max_items = 10000, value_type = Vec<SendRequest>)]
    pub notifications: Vec<Value>,
    /// Sends per batch (one transaction each), 1 to 5000. Default 100.
    #[schema(minimum = 1, maximum = 5000)]
    pub batch_size: Option<i64>,
    /// Retries per delivery for items that give no `maxRetries` (0-20).
    #[schema(minimum = 0, maximum = 20)]
    pub max_retries: Option<i32>,
}

/// Send many notifications as a job; `202` with the job id at once. Follow
/// it at `GET /v1/jobs/{id}`; an item that cannot be sent is listed in the
/// job's `errors` without stopping the others.
#[utoipa::path(
    post,
    path = "/v1/notifications/bulk",
    tag = "notifications",
    request_body = BulkSendRequest,
    params((
        "Idempotency-Key" = Option<String>,
        Header,
        description = "1-255 visible ASCII characters; the same key (same caller) returns the same job"
    )),
    security(("bearer" = [])),
    responses((
        status = 202,
        description = "Accepted; the job is queued",
        body = Envelope<JobAccepted>,
        headers(("Location" = String, description = "/v1/jobs/{jobId}"))
    ))
)]
pub async fn bulk_send(
    State(state): State<AppState>,
    principal: Principal,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let idempotency_key = send::idempotency_key(&headers)?;
    if !is_json(&headers) {
        return Err(ApiError::UnsupportedMediaType(
            "expected a body with `Content-Type: application/json`".into(),
        ));
    }
    let bytes = axum::body::to_bytes(body, state.settings.jobs.max_body)
        .await
        .map_err(|_| ApiError::PayloadTooLarge)?;
    let request: BulkSendRequest = parse_json(&bytes)?;
    if request.notifications.is_empty() || request.notifications.len() > MAX_ITEMS {
        return Err(ApiError::validation(
            "notifications",
            format!("`notifications` must hold 1 to {MAX_ITEMS} sends"),
        ));
    }
    let batch_size = request.batch_size.unwrap_or(100);
    if !(1..=MAX_BATCH_SIZE).contains(&batch_size) {
        return Err(ApiError::validation(
            "batchSize",
            format!("`batchSize` must be between 1 and {MAX_BATCH_SIZE}"),
        ));
    }
    if let Some(retries) = request.max_retries
        && !(0..=20).contains(&retries)
    {
        return Err(ApiError::validation(
            "maxRetries",
            "`maxRetries` must be between 0 and 20",
        ));
    }
    // Every item must at least name an organization the caller manages.
    let mut organizations = BTreeSet::new();
    for (n, item) in request.notifications.iter().enumerate() {
        let organization = item
            .get("organizationId")
            .and_then(Value::as_str)
            .and_then(|id| Uuid::parse_str(id).ok())
            .ok_or_else(|| {
                ApiError::validation(
                    format!("notifications[{n}].organizationId"),
                    "each notification needs an `organizationId` (a UUID)",
                )
            })?;
        organizations.insert(organization);
    }
    for organization in &organizations {
        send::authorize(&state, principal, *organization).await?;
    }
    let single = (organizations.len() == 1)
        .then(|| organizations.first().copied())
        .flatten();
    let new = NewJob {
        kind: KIND,
        organization_id: single,
        created_by: principal.user_id,
        created_by_operator: principal.operator,
        params: json!({ "maxRetries": request.max_retries }),
        items: request.notifications,
        batch_size: i32::try_from(batch_size).unwrap_or(100),
        callback_url: None,
        idempotency_key,
    };
    let id = state
        .db
        .run(jobs::repository::enqueue(&state.db.pool, new))
        .await?;
    tracing::info!(job_id = %id, by = %principal.user_id, "notifications bulk send accepted");
    Ok(jobs::accepted(id))
}

/// Runs bulk sends (kind [`KIND`]).
#[derive(Debug, Clone, Copy, Default)]
pub struct BulkSendHandler;

impl JobHandler for BulkSendHandler {
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
}

async fn apply_batch(
    state: &AppState,
    job: &JobSpec,
    items: &[Value],
    tx: &mut PgConnection,
) -> Result<Vec<ItemOutcome>, ApiError> {
    let default_retries = job
        .params
        .get("maxRetries")
        .and_then(Value::as_i64)
        .and_then(|r| i32::try_from(r).ok())
        .unwrap_or(state.settings.notifications.max_retries);
    let mut outcomes = Vec::with_capacity(items.len());
    for item in items {
        let request: SendRequest = match serde_json::from_value(item.clone()) {
            Ok(request) => request,
            Err(error) => {
                outcomes.push(Err(format!("invalid notification: {error}")));
                continue;
            }
        };
        if let Err(error) = send::validate(&request) {
            outcomes.push(Err(error.to_string()));
            continue;
        }
        if !job.created_by_operator {
            let manages: bool = sqlx::query_scalar(
                "SELECT EXISTS (SELECT 1 FROM memberships WHERE organization_id = $1
                                AND user_id = $2 AND role IN ('admin', 'owner'))",
            )
            .bind(request.organization_id)
            .bind(job.created_by)
            .fetch_one(&mut *tx)
            .await?;
            if !manages {
                outcomes.push(Err("organization not found".into()));
                continue;
            }
        }
        sqlx::query("SAVEPOINT bulk_notification")
            .execute(&mut *tx)
            .await?;
        match send::store(
            tx,
            &request,
            job.created_by,
            None,
            default_retries,
            Some(job.id),
        )
        .await
        {
            Ok(Stored::New(_) | Stored::Replay(_)) => {
                sqlx::query("RELEASE SAVEPOINT bulk_notification")
                    .execute(&mut *tx)
                    .await?;
                outcomes.push(Ok(()));
            }
            Err(error @ (ApiError::Validation { .. } | ApiError::Conflict(_))) => {
                sqlx::query("ROLLBACK TO SAVEPOINT bulk_notification")
                    .execute(&mut *tx)
                    .await?;
                outcomes.push(Err(error.to_string()));
            }
            Err(error) => return Err(error),
        }
    }
    Ok(outcomes)
}
