//! `POST /v1/users/bulk-update`: the same change (the fields of
//! `PATCH /v1/users/{id}`) applied to many users as a job, and the job's
//! handler ([`BulkUpdateHandler`], kind `users.bulk_update`).
//!
//! The request is checked up front (`400`/`422` naming the field): the ids,
//! the batch size, the callback URL and the update itself — the update is
//! the same for every user, so an invalid value would fail them all and is
//! refused before a job exists. What depends on each user is decided per
//! item, with the creator's rights at the time the batch runs, and recorded
//! without failing the batch: an unknown user or one outside the creator's
//! organizations ("user not found"), one the creator may see but not change
//! (an owner, for an admin), and an email another user already has.
//!
//! Each applied change writes a `user_audit` row (actor, job, changes) in
//! the batch's transaction: the audit trail, and the proof that a job
//! resumed after a crash applied every user exactly once.

use std::collections::{HashMap, HashSet};

use axum::{body::Body, extract::State, http::HeaderMap, response::Response};
use serde::Deserialize;
use serde_json::{Value, json};
use sqlx::PgConnection;
use utoipa::ToSchema;
use uuid::Uuid;

use super::model::UserUpdate;
use crate::{
    auth::Principal,
    envelope::Envelope,
    error::{ApiError, is_unique_violation},
    extract::{is_json, parse_json},
    jobs::{
        self, ItemOutcome, JobAccepted, JobHandler, JobSpec, MAX_BATCH_SIZE, callback,
        handler::BoxFuture, repository::NewJob,
    },
    organizations,
    state::AppState,
};

/// The job kind of a bulk user update.
pub const KIND: &str = "users.bulk_update";
/// Most users one request may name.
pub const MAX_USERS: usize = 100_000;
/// The batch size when the request gives none.
pub const DEFAULT_BATCH_SIZE: i64 = 500;

/// `POST /v1/users/bulk-update` body.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct BulkUpdateRequest {
    /// The users to change, 1 to 100,000 (a repeated id counts once).
    #[schema(min_items = 1, max_items = 100000)]
    pub user_ids: Vec<Uuid>,
    /// The change, as for `PATCH /v1/users/{id}` (at least one field).
    #[schema(value_type = UserUpdate)]
    pub updates: Value,
    /// Users per batch (one transaction each), 1 to 5000. Default 500.
    #[schema(minimum = 1, maximum = 5000)]
    pub batch_size: Option<i64>,
    /// POSTed the final job state on completion (retried with backoff).
    #[schema(max_length = 2000)]
    pub callback_url: Option<String>,
    /// Only users of this organization (the caller must manage it); the job
    /// then belongs to it and its members may follow it. Without it, users
    /// of every organization the caller manages.
    pub organization_id: Option<Uuid>,
}

/// Change many users at once, as a job. Admins and owners change the users
/// of the organizations they manage (owners only by owners); operators
/// anyone. Answers `202` with the job id at once; follow it at
/// `GET /v1/jobs/{id}` or `/v1/jobs/{id}/events`. With an `Idempotency-Key`,
/// a repeated request answers with the same job.
#[utoipa::path(
    post,
    path = "/v1/users/bulk-update",
    tag = "users",
    request_body = BulkUpdateRequest,
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
pub async fn bulk_update(
    State(state): State<AppState>,
    principal: Principal,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let idempotency_key = idempotency_key(&headers)?;
    if !is_json(&headers) {
        return Err(ApiError::UnsupportedMediaType(
            "expected a body with `Content-Type: application/json`".into(),
        ));
    }
    let bytes = axum::body::to_bytes(body, state.settings.jobs.max_body)
        .await
        .map_err(|_| ApiError::PayloadTooLarge)?;
    let request: BulkUpdateRequest = parse_json(&bytes)?;
    parse_update(&request.updates)?;
    if request.user_ids.is_empty() || request.user_ids.len() > MAX_USERS {
        return Err(ApiError::validation(
            "userIds",
            format!("`userIds` must list 1 to {MAX_USERS} user ids"),
        ));
    }
    let batch_size = request.batch_size.unwrap_or(DEFAULT_BATCH_SIZE);
    if !(1..=MAX_BATCH_SIZE).contains(&batch_size) {
        return Err(ApiError::validation(
            "batchSize",
            format!("`batchSize` must be between 1 and {MAX_BATCH_SIZE}"),
        ));
    }
    if let Some(url) = &request.callback_url {
        callback::validate_url("callbackUrl", url)?;
    }
    authorize(&state, principal, request.organization_id).await?;

    let mut seen = HashSet::with_capacity(request.user_ids.len());
    let items: Vec<Value> = request
        .user_ids
        .iter()
        .filter(|id| seen.insert(**id))
        .map(|id| Value::String(id.to_string()))
        .collect();
    let new = NewJob {
        kind: KIND,
        organization_id: request.organization_id,
        created_by: principal.user_id,
        created_by_operator: principal.operator,
        params: json!({ "updates": request.updates }),
        items,
        batch_size: i32::try_from(batch_size).unwrap_or(500),
        callback_url: request.callback_url,
        idempotency_key,
    };
    let id = state
        .db
        .run(jobs::repository::enqueue(&state.db.pool, new))
        .await?;
    tracing::info!(job_id = %id, by = %principal.user_id, "users bulk update accepted");
    Ok(jobs::accepted(id))
}

/// The `Idempotency-Key` header, if sent: 1-255 visible ASCII characters.
fn idempotency_key(headers: &HeaderMap) -> Result<Option<String>, ApiError> {
    let Some(value) = headers.get("idempotency-key") else {
        return Ok(None);
    };
    let key = value
        .to_str()
        .ok()
        .map(str::trim)
        .filter(|key| (1..=255).contains(&key.len()) && key.bytes().all(|b| b.is_ascii_graphic()))
        .ok_or_else(|| {
            ApiError::invalid(
                "Idempotency-Key",
                "`Idempotency-Key` must be 1 to 255 visible ASCII characters",
            )
        })?;
    Ok(Some(key.to_owned()))
}

/// The typed update, checked as `PATCH` checks it, with fields named
/// `updates.<field>`; at least one field must be present.
fn parse_update(updates: &Value) -> Result<UserUpdate, ApiError> {
    let update: UserUpdate = serde_path_to_error::deserialize(updates).map_err(|error| {
        let path = error.path().to_string();
        let field = if path == "." {
            "updates".to_owned()
        } else {
            format!("updates.{path}")
        };
        ApiError::InvalidInput {
            message: format!("invalid request body at `{field}`: {}", error.inner()),
            field: Some(field),
        }
    })?;
    update.validate().map_err(|error| match error {
        ApiError::Validation { field, message } => ApiError::Validation {
            field: format!("updates.{field}"),
            message,
        },
        other => other,
    })?;
    let empty = update.email.is_none()
        && update.first_name.is_none()
        && update.last_name.is_none()
        && update.designation.is_none()
        && update.is_active.is_none();
    if empty {
        return Err(ApiError::validation(
            "updates",
            "`updates` must change at least one field",
        ));
    }
    Ok(update)
}

/// Operators may; others must manage the organization named, or at least one.
async fn authorize(
    state: &AppState,
    principal: Principal,
    organization_id: Option<Uuid>,
) -> Result<(), ApiError> {
    let manages = match organization_id {
        Some(organization_id) => organizations::caller_role(state, principal, organization_id)
            .await?
            .manages_members(),
        None if principal.operator => true,
        None => {
            state
                .db
                .run(manages_any(&state.db.pool, principal.user_id))
                .await?
        }
    };
    if manages {
        Ok(())
    } else {
        Err(ApiError::forbidden(
            "only admins and owners of an organization bulk-update its users",
        ))
    }
}

async fn manages_any(pool: &sqlx::PgPool, user_id: Uuid) -> Result<bool, ApiError> {
    Ok(sqlx::query_scalar(
        "SELECT EXISTS (SELECT 1 FROM memberships
                        WHERE user_id = $1 AND role IN ('admin', 'owner'))",
    )
    .bind(user_id)
    .fetch_one(pool)
    .await?)
}

/// Applies a bulk update's batches (kind [`KIND`]).
#[derive(Debug, Clone, Copy, Default)]
pub struct BulkUpdateHandler;

/// What the creator may do with one user of the batch.
#[derive(Debug, Clone, Copy)]
struct Access {
    visible: bool,
    manages: bool,
}

impl JobHandler for BulkUpdateHandler {
    fn kind(&self) -> &'static str {
        KIND
    }

    fn apply_batch<'a>(
        &'a self,
        _state: &'a AppState,
        job: &'a JobSpec,
        items: &'a [Value],
        tx: &'a mut PgConnection,
    ) -> BoxFuture<'a, Result<Vec<ItemOutcome>, ApiError>> {
        Box::pin(apply_batch(job, items, tx))
    }

    fn after_commit<'a>(
        &'a self,
        state: &'a AppState,
        job: &'a JobSpec,
        items: &'a [Value],
        outcomes: &'a [ItemOutcome],
    ) -> BoxFuture<'a, ()> {
        Box::pin(async move {
            let changed: Vec<Uuid> = items
                .iter()
                .zip(outcomes)
                .filter(|(_, outcome)| outcome.is_ok())
                .filter_map(|(item, _)| item.as_str().and_then(|id| id.parse().ok()))
                .collect();
            // As PATCH does: after the commit, before the batch is reported
            // done to this worker's loop (a fill racing the commit is never
            // stored as fresh, by the cache's tag generations).
            state.users.invalidate_users(&changed).await;
            tracing::debug!(job_id = %job.id, changed = changed.len(), "users bulk batch committed");
        })
    }
}

async fn apply_batch(
    job: &JobSpec,
    items: &[Value],
    tx: &mut PgConnection,
) -> Result<Vec<ItemOutcome>, ApiError> {
    let updates = job.params.get("updates").cloned().unwrap_or(Value::Null);
    let update: UserUpdate = serde_json::from_value(updates.clone()).map_err(|error| {
        ApiError::Internal(anyhow::anyhow!(
            "job {}: stored updates unreadable: {error}",
            job.id
        ))
    })?;
    let ids: Vec<Option<Uuid>> = items
        .iter()
        .map(|item| item.as_str().and_then(|id| id.parse().ok()))
        .collect();
    let valid: Vec<Uuid> = ids.iter().flatten().copied().collect();
    let access = classify(tx, job, &valid).await?;
    let permitted: Vec<Uuid> = valid
        .iter()
        .copied()
        .filter(|id| access.get(id).is_some_and(|a| a.visible && a.manages))
        .collect();

    let mut outcomes: HashMap<Uuid, ItemOutcome> = HashMap::with_capacity(ids.len());
    if update.email.is_some() {
        // An email can belong to one user only: each change on its own, so
        // a duplicate fails that item alone.
        for id in &permitted {
            sqlx::query("SAVEPOINT bulk_item").execute(&mut *tx).await?;
            match apply(tx, &[*id], &update, job, &updates).await {
                Ok(changed) => {
                    sqlx::query("RELEASE SAVEPOINT bulk_item")
                        .execute(&mut *tx)
                        .await?;
                    let outcome = if changed.is_empty() {
                        Err("user not found".to_owned())
                    } else {
                        Ok(())
                    };
                    outcomes.insert(*id, outcome);
                }
                Err(error) if is_unique_violation(&error, "users_email_lower_key") => {
                    sqlx::query("ROLLBACK TO SAVEPOINT bulk_item")
                        .execute(&mut *tx)
                        .await?;
                    outcomes.insert(*id, Err("a user with this email already exists".to_owned()));
                }
                Err(error) => return Err(error.into()),
            }
        }
    } else {
        let changed: HashSet<Uuid> = apply(tx, &permitted, &update, job, &updates)
            .await?
            .into_iter()
            .collect();
        for id in &permitted {
            let outcome = if changed.contains(id) {
                Ok(())
            } else {
                Err("user not found".to_owned())
            };
            outcomes.insert(*id, outcome);
        }
    }
    Ok(ids
        .iter()
        .map(|id| match id {
            None => Err("not a user id".to_owned()),
            Some(id) => match (outcomes.remove(id), access.get(id)) {
                (Some(outcome), _) => outcome,
                (None, Some(a)) if a.visible => Err(
                    "not allowed: only admins and owners of the user's organization change it \
                     (only owners change owners)"
                        .to_owned(),
                ),
                _ => Err("user not found".to_owned()),
            },
        })
        .collect())
}

/// The creator's rights over each of `ids`, evaluated now (a revoked admin
/// changes nothing more).
async fn classify(
    tx: &mut PgConnection,
    job: &JobSpec,
    ids: &[Uuid],
) -> Result<HashMap<Uuid, Access>, ApiError> {
    let rows: Vec<(Uuid, bool, bool)> = sqlx::query_as(
        "SELECT b.id,
                u.id IS NOT NULL AND CASE WHEN $2 THEN
                    $4::uuid IS NULL OR EXISTS (
                        SELECT 1 FROM memberships t
                        WHERE t.user_id = b.id AND t.organization_id = $4)
                ELSE EXISTS (
                    SELECT 1 FROM memberships c
                    JOIN memberships t ON t.organization_id = c.organization_id
                    WHERE c.user_id = $3 AND t.user_id = b.id
                      AND ($4::uuid IS NULL OR c.organization_id = $4))
                END,
                u.id IS NOT NULL AND CASE WHEN $2 THEN true
                ELSE EXISTS (
                    SELECT 1 FROM memberships c
                    JOIN memberships t ON t.organization_id = c.organization_id
                    WHERE c.user_id = $3 AND t.user_id = b.id
                      AND ($4::uuid IS NULL OR c.organization_id = $4)
                      AND c.role IN ('admin', 'owner')
                      AND (c.role = 'owner' OR t.role <> 'owner'))
                END
         FROM unnest($1::uuid[]) AS b(id)
         LEFT JOIN users u ON u.id = b.id",
    )
    .bind(ids)
    .bind(job.created_by_operator)
    .bind(job.created_by)
    .bind(job.organization_id)
    .fetch_all(&mut *tx)
    .await?;
    Ok(rows
        .into_iter()
        .map(|(id, visible, manages)| {
            (
                id,
                Access {
                    visible,
                    manages: visible && manages,
                },
            )
        })
        .collect())
}

/// Changes `ids` and writes their audit rows; returns the ids changed.
async fn apply(
    tx: &mut PgConnection,
    ids: &[Uuid],
    update: &UserUpdate,
    job: &JobSpec,
    changes: &Value,
) -> Result<Vec<Uuid>, sqlx::Error> {
    if ids.is_empty() {
        return Ok(Vec::new());
    }
    let query = sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
        "WITH changed AS (
             UPDATE users SET {APPLY_UPDATE}
             WHERE id = ANY($1)
             RETURNING id)
         INSERT INTO user_audit (user_id, actor_id, job_id, changes)
         SELECT id, $8, $9, $10 FROM changed
         RETURNING user_id",
        APPLY_UPDATE = super::repository::APPLY_UPDATE,
    )))
    .bind(ids);
    crate::bind_update!(query, update)
        .bind(job.created_by)
        .bind(job.id)
        .bind(changes)
        .fetch_all(&mut *tx)
        .await
}
