//! `GET /v1/jobs/{id}` and `GET /v1/jobs/{id}/events` (SSE).

use std::{convert::Infallible, time::Duration};

use axum::{
    extract::State,
    response::{
        IntoResponse, Response,
        sse::{Event, KeepAlive, Sse},
    },
};
use futures_util::StreamExt;
use tokio::sync::{broadcast, mpsc};
use tokio_stream::wrappers::ReceiverStream;
use uuid::Uuid;

use super::{
    model::{Job, Progress},
    repository,
};
use crate::{
    auth::Principal,
    envelope::{self, Envelope},
    error::ApiError,
    extract::Path,
    state::AppState,
};

/// How often an event stream re-reads its job when no `NOTIFY` came (a lost
/// LISTEN connection, a lagging subscriber).
const RECHECK: Duration = Duration::from_secs(5);

/// Read a job: its status, progress counts and the first errors. Visible to
/// its creator, members of its organization and operators; anyone else gets
/// a `404`.
#[utoipa::path(
    get,
    path = "/v1/jobs/{id}",
    tag = "jobs",
    params(("id" = Uuid, Path, description = "Job id")),
    security(("bearer" = [])),
    responses((status = 200, description = "The job", body = Envelope<Job>))
)]
pub async fn get_job(
    State(state): State<AppState>,
    principal: Principal,
    Path(id): Path<Uuid>,
) -> Result<Response, ApiError> {
    Ok(envelope::ok(load_visible(&state, principal, id).await?))
}

/// Follow a job live (Server-Sent Events). First a `state` event with the
/// current progress, then one `progress` event per committed batch, in
/// order, then a `done` event whose data is the whole final job (as
/// `GET /v1/jobs/{id}` returns it, without the envelope); then the stream
/// ends. A client connecting after the job finished gets `state` and `done`.
#[utoipa::path(
    get,
    path = "/v1/jobs/{id}/events",
    tag = "jobs",
    params(("id" = Uuid, Path, description = "Job id")),
    security(("bearer" = [])),
    responses((
        status = 200,
        description = "`text/event-stream`: `state` and `progress` events carry a Progress \
                       object, the final `done` event a Job",
        content_type = "text/event-stream",
        body = String
    ))
)]
pub async fn job_events(
    State(state): State<AppState>,
    principal: Principal,
    Path(id): Path<Uuid>,
) -> Result<Response, ApiError> {
    // Subscribed before reading the job, so no batch falls between the two.
    let events = state.jobs.subscribe();
    let job = load_visible(&state, principal, id).await?;
    let (sender, receiver) = mpsc::channel::<Event>(64);
    tokio::spawn(follow(state, job, events, sender));
    let stream = ReceiverStream::new(receiver).map(Ok::<_, Infallible>);
    Ok(Sse::new(stream)
        .keep_alive(KeepAlive::default())
        .into_response())
}

async fn load_visible(state: &AppState, principal: Principal, id: Uuid) -> Result<Job, ApiError> {
    let job = state
        .db
        .run(repository::find(&state.db.pool, id))
        .await?
        .ok_or_else(|| ApiError::not_found("job"))?;
    if principal.operator
        || state
            .db
            .run(repository::visible_to(
                &state.db.pool,
                &job,
                principal.user_id,
            ))
            .await?
    {
        Ok(job)
    } else {
        Err(ApiError::not_found("job"))
    }
}

fn event(name: &str, data: &impl serde::Serialize, id: Option<i32>) -> Option<Event> {
    let mut event = Event::default().event(name).json_data(data).ok()?;
    if let Some(id) = id {
        event = event.id(id.to_string());
    }
    Some(event)
}

/// Feeds one client's stream until the job is final or the client leaves.
async fn follow(
    state: AppState,
    job: Job,
    mut events: broadcast::Receiver<Progress>,
    sender: mpsc::Sender<Event>,
) {
    let id = job.id;
    let mut last = Progress::from(&job);
    let mut final_job = Some(job).filter(|job| job.status.is_final());
    if let Some(first) = event("state", &last, Some(last.processed))
        && sender.send(first).await.is_err()
    {
        return;
    }
    while final_job.is_none() {
        let next = tokio::select! {
            received = events.recv() => match received {
                Ok(progress) if progress.id == id => Some(progress),
                Ok(_) => continue,
                Err(broadcast::error::RecvError::Lagged(_)) => reread(&state, id).await,
                Err(broadcast::error::RecvError::Closed) => return,
            },
            () = tokio::time::sleep(RECHECK) => reread(&state, id).await,
            () = sender.closed() => return,
        };
        let Some(progress) = next else { continue };
        // Notifications already reflected in what was sent are skipped.
        if progress.processed <= last.processed && progress.status == last.status {
            continue;
        }
        last = progress;
        if let Some(update) = event("progress", &last, Some(last.processed))
            && sender.send(update).await.is_err()
        {
            return;
        }
        if last.status.is_final() {
            final_job = match state.db.run(repository::find(&state.db.pool, id)).await {
                Ok(Some(job)) => Some(job),
                // Deleted meanwhile, or the database is gone: end the stream.
                _ => return,
            };
        }
    }
    if let Some(job) = final_job
        && let Some(done) = event("done", &job, Some(job.processed))
    {
        let _ = sender.send(done).await;
    }
}

async fn reread(state: &AppState, id: Uuid) -> Option<Progress> {
    match state.db.run(repository::find(&state.db.pool, id)).await {
        Ok(Some(job)) => Some(Progress::from(&job)),
        _ => None,
    }
}
