//! Jobs as the API shows them, and the progress event the workers publish.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use uuid::Uuid;

/// Where a job is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum JobStatus {
    /// Waiting for a worker.
    Queued,
    /// A worker is applying its batches.
    Running,
    /// Every item was processed (each one succeeded or has an error).
    Completed,
    /// Stopped: a batch kept failing as a whole (`lastError` says why).
    Failed,
    /// Stopped on request; the batches committed before stay applied.
    Cancelled,
}

impl JobStatus {
    /// The name stored in the database and used in JSON.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Queued => "queued",
            Self::Running => "running",
            Self::Completed => "completed",
            Self::Failed => "failed",
            Self::Cancelled => "cancelled",
        }
    }

    /// Completed, failed or cancelled: nothing more will happen to its items.
    pub fn is_final(self) -> bool {
        matches!(self, Self::Completed | Self::Failed | Self::Cancelled)
    }
}

impl TryFrom<String> for JobStatus {
    type Error = anyhow::Error;

    fn try_from(value: String) -> Result<Self, Self::Error> {
        Ok(match value.as_str() {
            "queued" => Self::Queued,
            "running" => Self::Running,
            "completed" => Self::Completed,
            "failed" => Self::Failed,
            "cancelled" => Self::Cancelled,
            other => anyhow::bail!("unknown job status {other:?} in the database"),
        })
    }
}

/// One item that could not be applied.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema, sqlx::FromRow)]
#[serde(rename_all = "camelCase")]
pub struct ItemError {
    /// The item, as given (a user id for `users.bulk_update`).
    pub item: String,
    /// Why it was not applied, e.g. "user not found".
    pub message: String,
}

/// A job: progress counts, the errors so far, timestamps.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema, sqlx::FromRow)]
#[serde(rename_all = "camelCase")]
pub struct Job {
    /// Id.
    pub id: Uuid,
    /// What it does, e.g. `users.bulk_update`.
    pub kind: String,
    /// Status.
    #[sqlx(try_from = "String")]
    pub status: JobStatus,
    /// The organization it belongs to (`null`: every organization its creator manages).
    pub organization_id: Option<Uuid>,
    /// Who created it.
    pub created_by: Uuid,
    /// Items in the job.
    pub total: i32,
    /// Items processed so far (succeeded + failed), in committed batches.
    pub processed: i32,
    /// Items applied.
    pub succeeded: i32,
    /// Items not applied (see `errors`).
    pub failed: i32,
    /// Items per batch (one transaction each).
    pub batch_size: i32,
    /// The first errors, in item order (at most 1,000; see `errorsTruncated`).
    #[sqlx(skip)]
    pub errors: Vec<ItemError>,
    /// More errors exist than `errors` lists.
    #[sqlx(skip)]
    pub errors_truncated: bool,
    /// Why the job failed, when it did.
    pub last_error: Option<String>,
    /// Notified with the final state on completion.
    pub callback_url: Option<String>,
    /// `pending`, `delivered` or `failed` once the job is final and has a callback.
    pub callback_status: Option<String>,
    /// Created.
    pub created_at: DateTime<Utc>,
    /// When a worker first took it.
    pub started_at: Option<DateTime<Utc>>,
    /// When it became final.
    pub finished_at: Option<DateTime<Utc>>,
    /// Last change (a committed batch, a status change).
    pub updated_at: DateTime<Utc>,
}

/// `202` answer of a request that created (or found, by `Idempotency-Key`) a job.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct JobAccepted {
    /// The job; follow it at `/v1/jobs/{jobId}` (also the `Location` header).
    pub job_id: Uuid,
}

/// The progress of a job after a committed batch: what `NOTIFY` carries
/// and what each `progress` event of `GET /v1/jobs/{id}/events` shows.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Progress {
    /// The job.
    pub id: Uuid,
    /// Its status after the batch.
    pub status: JobStatus,
    /// Items in the job.
    pub total: i32,
    /// Items processed so far.
    pub processed: i32,
    /// Items applied so far.
    pub succeeded: i32,
    /// Items not applied so far.
    pub failed: i32,
}

impl From<&Job> for Progress {
    fn from(job: &Job) -> Self {
        Self {
            id: job.id,
            status: job.status,
            total: job.total,
            processed: job.processed,
            succeeded: job.succeeded,
            failed: job.failed,
        }
    }
}
