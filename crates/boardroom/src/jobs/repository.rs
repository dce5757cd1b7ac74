//! SQL for jobs (runtime-checked queries).

use std::time::Duration;

use serde_json::Value;
use sqlx::{PgConnection, PgPool};
use uuid::Uuid;

use super::{
    handler::JobSpec,
    model::{ItemError, Job, Progress},
};
use crate::error::ApiError;

/// The channel a committed batch is announced on (payload: [`Progress`] JSON).
pub const PROGRESS_CHANNEL: &str = "boardroom_job_progress";
/// The channel a new job is announced on (payload: its id), waking workers.
pub const QUEUED_CHANNEL: &str = "boardroom_job_queued";
/// Most errors `GET /v1/jobs/{id}` lists.
pub const ERRORS_SHOWN: i64 = 1000;

const JOB_COLUMNS: &str = "id, kind, status, organization_id, created_by, total, processed, \
                           succeeded, failed, batch_size, last_error, callback_url, \
                           callback_status, created_at, started_at, finished_at, updated_at";

/// A job to create.
#[derive(Debug, Clone)]
pub struct NewJob {
    /// Its kind (a registered [`super::JobHandler`]).
    pub kind: &'static str,
    /// Its organization, if any (members may read it).
    pub organization_id: Option<Uuid>,
    /// The caller creating it.
    pub created_by: Uuid,
    /// The caller is an operator.
    pub created_by_operator: bool,
    /// The handler's parameters.
    pub params: Value,
    /// The items, in order.
    pub items: Vec<Value>,
    /// Items per batch (1–5000).
    pub batch_size: i32,
    /// POSTed the final state on completion.
    pub callback_url: Option<String>,
    /// The client's `Idempotency-Key`.
    pub idempotency_key: Option<String>,
}

/// Creates the job (and wakes the workers), or, when the creator already
/// used `idempotency_key` in this organization, returns that job's id. The
/// same key with a different request is a `409`.
pub async fn enqueue(pool: &PgPool, new: NewJob) -> Result<Uuid, ApiError> {
    let total = i32::try_from(new.items.len())
        .map_err(|_| ApiError::validation("items", "too many items"))?;
    let items = Value::Array(new.items);
    let mut tx = pool.begin().await?;
    let inserted: Option<Uuid> = sqlx::query_scalar(
        "INSERT INTO jobs (id, kind, organization_id, created_by, created_by_operator, params,
                           items, batch_size, total, callback_url, idempotency_key)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)
         ON CONFLICT (organization_id, created_by, idempotency_key)
             WHERE idempotency_key IS NOT NULL DO NOTHING
         RETURNING id",
    )
    .bind(Uuid::now_v7())
    .bind(new.kind)
    .bind(new.organization_id)
    .bind(new.created_by)
    .bind(new.created_by_operator)
    .bind(&new.params)
    .bind(&items)
    .bind(new.batch_size)
    .bind(total)
    .bind(&new.callback_url)
    .bind(&new.idempotency_key)
    .fetch_optional(&mut *tx)
    .await?;
    let id = match inserted {
        Some(id) => {
            sqlx::query("SELECT pg_notify($1, $2)")
                .bind(QUEUED_CHANNEL)
                .bind(id.to_string())
                .execute(&mut *tx)
                .await?;
            id
        }
        None => {
            let (id, same): (Uuid, bool) = sqlx::query_as(
                "SELECT id, (kind = $4 AND params = $5 AND items = $6 AND batch_size = $7
                             AND callback_url IS NOT DISTINCT FROM $8)
                 FROM jobs
                 WHERE organization_id IS NOT DISTINCT FROM $1 AND created_by = $2
                   AND idempotency_key = $3",
            )
            .bind(new.organization_id)
            .bind(new.created_by)
            .bind(&new.idempotency_key)
            .bind(new.kind)
            .bind(&new.params)
            .bind(&items)
            .bind(new.batch_size)
            .bind(&new.callback_url)
            .fetch_one(&mut *tx)
            .await?;
            if !same {
                return Err(ApiError::Conflict(
                    "this Idempotency-Key was already used for a different request".into(),
                ));
            }
            id
        }
    };
    tx.commit().await?;
    Ok(id)
}

/// The job with its first errors, if it exists.
pub async fn find(pool: &PgPool, id: Uuid) -> Result<Option<Job>, ApiError> {
    let Some(mut job) = sqlx::query_as::<_, Job>(sqlx::AssertSqlSafe(format!(
        "SELECT {JOB_COLUMNS} FROM jobs WHERE id = $1"
    )))
    .bind(id)
    .fetch_optional(pool)
    .await?
    else {
        return Ok(None);
    };
    let mut errors = sqlx::query_as::<_, ItemError>(
        "SELECT item, message FROM job_errors WHERE job_id = $1 ORDER BY item_index LIMIT $2",
    )
    .bind(id)
    .bind(ERRORS_SHOWN + 1)
    .fetch_all(pool)
    .await?;
    job.errors_truncated = errors.len() as i64 > ERRORS_SHOWN;
    errors.truncate(ERRORS_SHOWN as usize);
    job.errors = errors;
    Ok(Some(job))
}

/// Whether `caller` may read the job: its creator, or a member of its
/// organization (operators are let through before asking).
pub async fn visible_to(pool: &PgPool, job: &Job, caller: Uuid) -> Result<bool, ApiError> {
    if job.created_by == caller {
        return Ok(true);
    }
    let Some(organization_id) = job.organization_id else {
        return Ok(false);
    };
    Ok(sqlx::query_scalar(
        "SELECT EXISTS (SELECT 1 FROM memberships WHERE organization_id = $1 AND user_id = $2)",
    )
    .bind(organization_id)
    .bind(caller)
    .fetch_one(pool)
    .await?)
}

/// A job a worker holds the lease of.
#[derive(Debug, Clone)]
pub struct Claimed {
    /// What the handler sees.
    pub spec: JobSpec,
    /// Items per batch.
    pub batch_size: i32,
    /// Items in the job.
    pub total: i32,
    /// The job has no more items to apply (only its callback is left).
    pub finished: bool,
    /// Where to POST the final state.
    pub callback_url: Option<String>,
    /// The callback still has to be delivered.
    pub callback_pending: bool,
    /// Deliveries tried so far.
    pub callback_attempts: i32,
}

type ClaimRow = (
    Uuid,
    String,
    Option<Uuid>,
    Uuid,
    bool,
    Value,
    i32,
    i32,
    String,
    Option<String>,
    Option<String>,
    i32,
);

/// Takes the oldest claimable job of one of `kinds` for `worker`: unfinished
/// (or with a callback to deliver), due, and not leased by a live worker.
pub async fn claim(
    pool: &PgPool,
    worker: &str,
    kinds: &[String],
    lease: Duration,
) -> Result<Option<Claimed>, ApiError> {
    let row: Option<ClaimRow> = sqlx::query_as(
        "UPDATE jobs SET
             locked_by = $1,
             locked_until = now() + $2,
             status = CASE WHEN status = 'queued' THEN 'running' ELSE status END,
             started_at = COALESCE(started_at, now()),
             updated_at = now()
         WHERE id = (
             SELECT id FROM jobs
             WHERE (status IN ('queued', 'running') OR callback_status = 'pending')
               AND kind = ANY($3)
               AND run_at <= now()
               AND (locked_until IS NULL OR locked_until < now())
             ORDER BY created_at, id
             LIMIT 1
             FOR UPDATE SKIP LOCKED)
         RETURNING id, kind, organization_id, created_by, created_by_operator, params,
                   batch_size, total, status, callback_url, callback_status, callback_attempts",
    )
    .bind(worker)
    .bind(lease)
    .bind(kinds)
    .fetch_optional(pool)
    .await?;
    Ok(row.map(
        |(
            id,
            kind,
            organization_id,
            created_by,
            created_by_operator,
            params,
            batch_size,
            total,
            status,
            callback_url,
            callback_status,
            callback_attempts,
        )| Claimed {
            spec: JobSpec {
                id,
                kind,
                organization_id,
                created_by,
                created_by_operator,
                params,
            },
            batch_size,
            total,
            finished: !matches!(status.as_str(), "queued" | "running"),
            callback_url,
            callback_pending: callback_status.as_deref() == Some("pending"),
            callback_attempts,
        },
    ))
}

/// The job's items (immutable once created), read once per claim.
pub async fn items(pool: &PgPool, id: Uuid) -> Result<Vec<Value>, ApiError> {
    let items: Value = sqlx::query_scalar("SELECT items FROM jobs WHERE id = $1")
        .bind(id)
        .fetch_one(pool)
        .await?;
    match items {
        Value::Array(items) => Ok(items),
        _ => Err(ApiError::Internal(anyhow::anyhow!(
            "job {id}: items is not an array"
        ))),
    }
}

/// Locks the job row for one batch and returns its cursor, if `worker`
/// still holds the lease and the job is still running.
pub async fn lock_cursor(
    tx: &mut PgConnection,
    id: Uuid,
    worker: &str,
) -> Result<Option<i32>, ApiError> {
    Ok(sqlx::query_scalar(
        "SELECT processed FROM jobs
         WHERE id = $1 AND locked_by = $2 AND status = 'running'
         FOR UPDATE",
    )
    .bind(id)
    .bind(worker)
    .fetch_optional(&mut *tx)
    .await?)
}

/// Records a batch inside its transaction: the errors, the cursor and counts,
/// the renewed lease, the final status when it was the last batch, and the
/// `NOTIFY` (sent at commit). Returns the progress after the batch.
#[allow(clippy::too_many_arguments)]
pub async fn record_batch(
    tx: &mut PgConnection,
    id: Uuid,
    first_index: i32,
    labels: &[String],
    outcomes: &[Result<(), String>],
    lease: Duration,
) -> Result<Progress, ApiError> {
    let mut error_indexes = Vec::new();
    let mut error_items = Vec::new();
    let mut error_messages = Vec::new();
    for (offset, (label, outcome)) in labels.iter().zip(outcomes).enumerate() {
        if let Err(message) = outcome {
            error_indexes.push(first_index + offset as i32);
            error_items.push(label.clone());
            error_messages.push(message.clone());
        }
    }
    if !error_indexes.is_empty() {
        sqlx::query(
            "INSERT INTO job_errors (job_id, item_index, item, message)
             SELECT $1, * FROM unnest($2::int[], $3::text[], $4::text[])",
        )
        .bind(id)
        .bind(&error_indexes)
        .bind(&error_items)
        .bind(&error_messages)
        .execute(&mut *tx)
        .await?;
    }
    let failed = error_indexes.len() as i32;
    let succeeded = outcomes.len() as i32 - failed;
    let progress: Progress = sqlx::query_as::<_, (Uuid, String, i32, i32, i32, i32)>(
        "UPDATE jobs SET
             processed = processed + $2,
             succeeded = succeeded + $3,
             failed = failed + $4,
             status = CASE WHEN processed + $2 >= total THEN 'completed' ELSE status END,
             finished_at = CASE WHEN processed + $2 >= total THEN now() END,
             callback_status = CASE WHEN processed + $2 >= total AND callback_url IS NOT NULL
                                    THEN 'pending' ELSE callback_status END,
             attempts = 0,
             last_error = NULL,
             locked_until = now() + $5,
             updated_at = now()
         WHERE id = $1
         RETURNING id, status, total, processed, succeeded, failed",
    )
    .bind(id)
    .bind(outcomes.len() as i32)
    .bind(succeeded)
    .bind(failed)
    .bind(lease)
    .fetch_one(&mut *tx)
    .await
    .map_err(ApiError::from)
    .and_then(|(id, status, total, processed, succeeded, failed)| {
        Ok(Progress {
            id,
            status: status.try_into().map_err(ApiError::Internal)?,
            total,
            processed,
            succeeded,
            failed,
        })
    })?;
    notify_progress(tx, &progress).await?;
    Ok(progress)
}

async fn notify_progress(tx: &mut PgConnection, progress: &Progress) -> Result<(), ApiError> {
    let payload =
        serde_json::to_string(progress).map_err(|e| ApiError::Internal(anyhow::Error::new(e)))?;
    sqlx::query("SELECT pg_notify($1, $2)")
        .bind(PROGRESS_CHANNEL)
        .bind(payload)
        .execute(&mut *tx)
        .await?;
    Ok(())
}

/// A batch failed as a whole: counts the attempt, gives the job back (due
/// again after `retry_in`, doubled per attempt up to 30 s), and fails it
/// after `max_attempts`.
pub async fn batch_failed(
    pool: &PgPool,
    id: Uuid,
    worker: &str,
    error: &str,
    retry_in: Duration,
    max_attempts: u32,
) -> Result<bool, ApiError> {
    let mut tx = pool.begin().await?;
    let row: Option<(Uuid, String, i32, i32, i32, i32)> = sqlx::query_as(
        "UPDATE jobs SET
             attempts = attempts + 1,
             last_error = $3,
             status = CASE WHEN attempts + 1 >= $5 THEN 'failed' ELSE status END,
             finished_at = CASE WHEN attempts + 1 >= $5 THEN now() END,
             callback_status = CASE WHEN attempts + 1 >= $5 AND callback_url IS NOT NULL
                                    THEN 'pending' ELSE callback_status END,
             -- Backoff: retry_in doubled per attempt, at most 30 s.
             run_at = now() + least($4 * power(2, attempts), interval '30 seconds'),
             locked_by = NULL,
             locked_until = NULL,
             updated_at = now()
         WHERE id = $1 AND locked_by = $2
         RETURNING id, status, total, processed, succeeded, failed",
    )
    .bind(id)
    .bind(worker)
    .bind(error)
    .bind(retry_in)
    .bind(max_attempts as i32)
    .fetch_optional(&mut *tx)
    .await?;
    let gave_up = row.as_ref().is_some_and(|r| r.1 == "failed");
    if let Some((id, status, total, processed, succeeded, failed)) = row
        && status == "failed"
    {
        let progress = Progress {
            id,
            status: super::model::JobStatus::Failed,
            total,
            processed,
            succeeded,
            failed,
        };
        notify_progress(&mut tx, &progress).await?;
    }
    tx.commit().await?;
    Ok(gave_up)
}

/// Gives the lease back so another worker (or the next start) takes the job
/// at once, e.g. on graceful shutdown.
pub async fn release(pool: &PgPool, id: Uuid, worker: &str) -> Result<(), ApiError> {
    sqlx::query(
        "UPDATE jobs SET locked_by = NULL, locked_until = NULL, updated_at = now()
         WHERE id = $1 AND locked_by = $2",
    )
    .bind(id)
    .bind(worker)
    .execute(pool)
    .await?;
    Ok(())
}

/// Extends the lease (while a callback is being delivered); false when lost.
pub async fn renew(
    pool: &PgPool,
    id: Uuid,
    worker: &str,
    lease: Duration,
) -> Result<bool, ApiError> {
    Ok(
        sqlx::query("UPDATE jobs SET locked_until = now() + $3 WHERE id = $1 AND locked_by = $2")
            .bind(id)
            .bind(worker)
            .bind(lease)
            .execute(pool)
            .await?
            .rows_affected()
            == 1,
    )
}

/// Records a callback delivery attempt: `delivered`, still `pending`, or
/// `failed` for good; the last one releases the lease.
pub async fn callback_attempted(
    pool: &PgPool,
    id: Uuid,
    worker: &str,
    status: &str,
) -> Result<(), ApiError> {
    sqlx::query(
        "UPDATE jobs SET
             callback_attempts = callback_attempts + 1,
             callback_status = $3,
             locked_by = CASE WHEN $3 = 'pending' THEN locked_by END,
             locked_until = CASE WHEN $3 = 'pending' THEN locked_until END,
             updated_at = now()
         WHERE id = $1 AND locked_by = $2",
    )
    .bind(id)
    .bind(worker)
    .bind(status)
    .execute(pool)
    .await?;
    Ok(())
}
