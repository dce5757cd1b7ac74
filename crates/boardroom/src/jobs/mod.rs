//! Durable bulk jobs shared by every domain: `GET /v1/jobs/{id}` and its live
//! event stream `GET /v1/jobs/{id}/events`.
//!
//! Why: bulk work (updating 100,000 users, uploading many documents, sending
//! a notification to a whole board) cannot run inside one request, must
//! survive a crash, and must tell the client how far it got and what failed.
//! A job is a row in PostgreSQL holding its items and a cursor:
//!
//! - a domain creates it with [`repository::enqueue`] (with the client's
//!   `Idempotency-Key`, a repeated request finds the same job) and answers
//!   `202 {jobId}` + `Location: /v1/jobs/{id}`;
//! - [`worker`]s claim it with `FOR UPDATE SKIP LOCKED` under a lease, woken
//!   by `LISTEN/NOTIFY` ([`events`]), and run it batch by batch, each batch
//!   one transaction that applies the items *and* advances the cursor, so a
//!   job resumes from its last committed batch and no item is applied twice;
//! - the domain's [`JobHandler`], registered by `kind` in [`Handlers`],
//!   applies a batch and says per item whether it succeeded; errors are
//!   recorded without failing the batch;
//! - on completion the final state is POSTed to the job's `callbackUrl`
//!   ([`callback`]), retried with backoff.
//!
//! Timeouts and the event stream: the `jobs` router runs inside the
//! `[services.jobs]` stack, whose `timeout` (like `server.request_timeout`)
//! bounds the time until the *response head* is produced. The SSE handler
//! returns its head at once and streams the body afterwards, from a task
//! fed by the worker's `NOTIFY`s, so neither deadline cuts an open stream
//! (tests/jobs.rs `event_stream_outlives_the_stack_timeout` checks it with a
//! short timeout). For the same reason an open stream does not hold a
//! concurrency permit of the stack.
//!
//! ```
//! let (_router, api) = boardroom::jobs::router().split_for_parts();
//! assert!(api.paths.paths.contains_key("/v1/jobs/{id}/events"));
//! ```

pub mod callback;
pub mod events;
pub mod handler;
pub mod http;
pub mod model;
pub mod repository;
pub mod worker;

use utoipa_axum::{router::OpenApiRouter, routes};

pub use events::JobEvents;
pub use handler::{Handlers, ItemOutcome, JobHandler, JobSpec};
pub use model::{Job, JobAccepted, JobStatus, Progress};

use crate::state::AppState;

/// Largest batch a job may use.
pub const MAX_BATCH_SIZE: i64 = 5000;

/// The job routes.
pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(http::get_job))
        .routes(routes!(http::job_events))
}

/// The `Location` of a job.
pub fn location(id: uuid::Uuid) -> String {
    format!("/v1/jobs/{id}")
}

/// `202 Accepted` with `{jobId}` in the envelope and `Location: /v1/jobs/{id}`.
pub fn accepted(id: uuid::Uuid) -> axum::response::Response {
    use axum::{http::StatusCode, response::IntoResponse};
    (
        StatusCode::ACCEPTED,
        [(axum::http::header::LOCATION, location(id))],
        axum::Json(crate::envelope::Envelope::new(JobAccepted { job_id: id })),
    )
        .into_response()
}
