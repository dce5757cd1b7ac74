//! The processing pipeline: durable tasks in PostgreSQL (`asset_tasks`),
//! one per step — `scan`, then `thumbnail` and/or `extract` once the file
//! is clean — run by [`spawn`]ed workers.
//!
//! - A worker claims one due task with `FOR UPDATE SKIP LOCKED` and holds a
//!   lease (`assets.lease`); a worker that dies mid-step leaves the task
//!   `running` with a lease that expires, and the next claim takes it again:
//!   nothing is lost, a step may run twice but its result is written once
//!   (the write checks the lease holder).
//! - Each step runs behind its own breaker (`clamd`, `thumbnails`,
//!   `extract`). clamd unreachable (or its breaker open) puts the scan back
//!   with backoff (`assets.retry_base_delay` doubling up to
//!   `assets.retry_max_delay`) without limit: uploads are still accepted and
//!   their scans complete once clamd is back. A step that fails on the file
//!   itself fails after `assets.max_attempts`.
//! - The step's result, the task's state, the next steps and the asset's
//!   `processingStatus` are written in one transaction.
//! - Workers are woken in-process when an upload queues work, and poll
//!   every `assets.poll_interval` (other instances' uploads, retries).

use std::time::Duration;

use bytes::Bytes;
use sqlx::PgPool;
use tokio::{sync::watch, task::JoinSet};
use uuid::Uuid;

use super::{
    AssetServices,
    extract::{self, Extracted, Limits},
    repository,
    scan::{ScanError, Verdict},
    storage,
};
use crate::state::AppState;

/// A claimed task.
#[derive(Debug, Clone, sqlx::FromRow)]
struct Task {
    id: i64,
    asset_id: Uuid,
    step: String,
    attempts: i32,
    organization_id: Uuid,
    mime_type: String,
    size_bytes: i64,
    storage_key: String,
    skip_steps: Vec<String>,
}

/// What running a step came to.
enum StepResult {
    /// Done: write `update` (SQL fragments applied to the asset) and queue `next`.
    Done(Done),
    /// Retry after a wait, without counting against the attempts (the
    /// dependency is down).
    Wait(Duration, String),
    /// Failed on this file; retried up to the attempts, then the asset fails.
    Failed(String),
}

#[derive(Default)]
struct Done {
    scan: Option<Verdict>,
    scan_refused: Option<String>,
    thumbnail_key: Option<String>,
    extracted: Option<Extracted>,
    next: Vec<&'static str>,
}

/// Starts `assets.workers` workers into `set`; they stop when `stop` turns true.
pub fn spawn(state: &AppState, stop: &watch::Receiver<bool>, set: &mut JoinSet<()>) {
    metrics::describe_counter!(
        "boardroom_assets_quarantined_total",
        "Uploaded files the virus scan found infected (quarantined, never served)"
    );
    for n in 0..state.settings.assets.workers {
        let state = state.clone();
        let stop = stop.clone();
        let name = format!("assets-{}-{n}", Uuid::new_v4().simple());
        set.spawn(async move { worker(state, name, stop).await });
    }
}

async fn worker(state: AppState, name: String, mut stop: watch::Receiver<bool>) {
    let settings = &state.settings.assets;
    loop {
        if *stop.borrow() {
            return;
        }
        match claim(&state.db.pool, &name, settings.lease).await {
            Ok(Some(task)) => {
                let result = run(&state.assets, &state.settings, &task).await;
                if let Err(error) = finish(&state, &name, &task, result).await {
                    tracing::warn!(%error, task = task.id, "could not record an asset step; its lease will expire and it runs again");
                }
                continue;
            }
            Ok(None) => {}
            Err(error) => tracing::warn!(%error, "could not claim asset tasks"),
        }
        tokio::select! {
            () = state.assets.wake.notified() => {}
            () = tokio::time::sleep(settings.poll_interval) => {}
            _ = stop.changed() => {}
        }
    }
}

async fn claim(pool: &PgPool, name: &str, lease: Duration) -> Result<Option<Task>, sqlx::Error> {
    sqlx::query_as::<_, Task>(
        "WITH next AS (
             SELECT id FROM asset_tasks
             WHERE (state = 'available' AND run_at <= now())
                OR (state = 'running' AND locked_until < now())
             ORDER BY run_at, id
             LIMIT 1
             FOR UPDATE SKIP LOCKED
         ), claimed AS (
             UPDATE asset_tasks t
             SET state = 'running', locked_by = $1,
                 locked_until = now() + make_interval(secs => $2), attempts = t.attempts + 1
             FROM next WHERE t.id = next.id
             RETURNING t.id, t.asset_id, t.step, t.attempts
         )
         SELECT c.id, c.asset_id, c.step, c.attempts, a.organization_id, a.mime_type,
                a.size_bytes, a.storage_key, a.skip_steps
         FROM claimed c JOIN assets a ON a.id = c.asset_id",
    )
    .bind(name)
    .bind(lease.as_secs_f64())
    .fetch_optional(pool)
    .await
}

/// The steps that follow a clean scan (or an upload without scanning).
pub fn content_steps(mime: &str) -> Vec<&'static str> {
    let mut steps = Vec::new();
    if extract::has_thumbnail(mime) {
        steps.push("thumbnail");
    }
    if extract::has_text(mime) {
        steps.push("extract");
    }
    steps
}

async fn run(
    services: &AssetServices,
    settings: &crate::config::Settings,
    task: &Task,
) -> StepResult {
    let limits = Limits {
        max_text_bytes: settings.assets.max_text_bytes,
        max_image_dimension: settings.assets.max_image_dimension,
        thumbnail_size: settings.assets.thumbnail_size,
    };
    match task.step.as_str() {
        "scan" => scan(services, task).await,
        "thumbnail" | "extract" => {
            let too_big = usize::try_from(task.size_bytes)
                .map_or(true, |size| size > settings.assets.max_process_bytes);
            if too_big {
                tracing::info!(asset_id = %task.asset_id, step = %task.step, "file over assets.max_process_bytes: step skipped");
                return StepResult::Done(Done::default());
            }
            let bytes = match services.storage.read_all(&task.storage_key).await {
                Ok(bytes) => bytes,
                Err(error) => return StepResult::Wait(Duration::ZERO, format!("storage: {error}")),
            };
            content(services, task, bytes, limits).await
        }
        other => StepResult::Failed(format!("unknown step {other}")),
    }
}

async fn scan(services: &AssetServices, task: &Task) -> StepResult {
    let Some(clamd) = &services.clamd else {
        return StepResult::Done(Done {
            next: content_steps(&task.mime_type),
            ..Done::default()
        });
    };
    let call = async {
        let body = services
            .storage
            .stream(&task.storage_key, None)
            .await
            .map_err(|e| ScanError::Source(e.to_string()))?;
        clamd.scan(body).await
    };
    // Only "unreachable" says clamd is unhealthy; a verdict or a refusal
    // of this file is clamd doing its job.
    let classify = |result: Result<&Verdict, &ScanError>| match result {
        Err(ScanError::Unreachable(_)) => resilience::classify::Outcome::RETRYABLE,
        _ => resilience::classify::Outcome::Success,
    };
    match services.breakers.clamd.call_with(call, classify).await {
        Ok(verdict) => {
            let next = match verdict {
                Verdict::Clean => content_steps(&task.mime_type)
                    .into_iter()
                    .filter(|step| !task.skip_steps.iter().any(|s| s == step))
                    .collect(),
                Verdict::Infected(_) => Vec::new(),
            };
            StepResult::Done(Done {
                scan: Some(verdict),
                next,
                ..Done::default()
            })
        }
        Err(error) => match error.downcast::<ScanError>() {
            Ok(scan_error) => match *scan_error {
                ScanError::Refused(message) => StepResult::Done(Done {
                    scan_refused: Some(message),
                    ..Done::default()
                }),
                other => StepResult::Wait(Duration::ZERO, other.to_string()),
            },
            Err(other) => match other.downcast_ref::<resilience::breaker::BreakerOpen>() {
                Some(open) => StepResult::Wait(open.retry_after(), other.to_string()),
                None => StepResult::Wait(Duration::ZERO, other.to_string()),
            },
        },
    }
}

async fn content(
    services: &AssetServices,
    task: &Task,
    bytes: Bytes,
    limits: Limits,
) -> StepResult {
    let thumbnail = task.step == "thumbnail";
    let mime = task.mime_type.clone();
    let work = tokio::task::spawn_blocking(move || {
        if thumbnail {
            extract::thumbnail(&bytes, &limits).map(Output::Thumbnail)
        } else {
            extract::extract_text(&mime, &bytes, &limits).map(Output::Text)
        }
    });
    let breaker = if thumbnail {
        &services.breakers.thumbnails
    } else {
        &services.breakers.extract
    };
    // A panic or a lost blocking thread is the step's machinery failing; a
    // file that cannot be read is not.
    let outcome = breaker
        .call(async {
            work.await
                .map_err(|e| anyhow::anyhow!("step panicked: {e}"))
        })
        .await;
    match outcome {
        Ok(Ok(Output::Thumbnail(png))) => {
            let key = storage::thumbnail_key(task.asset_id);
            match services.storage.put(&key, Bytes::from(png)).await {
                Ok(()) => StepResult::Done(Done {
                    thumbnail_key: Some(key),
                    ..Done::default()
                }),
                Err(error) => StepResult::Wait(Duration::ZERO, format!("storage: {error}")),
            }
        }
        Ok(Ok(Output::Text(text))) => StepResult::Done(Done {
            extracted: Some(text),
            ..Done::default()
        }),
        Ok(Err(message)) => StepResult::Failed(message),
        Err(error) => match crate::error::ApiError::from_layer(error) {
            crate::error::ApiError::Unavailable {
                retry_after,
                message,
            } => StepResult::Wait(retry_after, message),
            other => StepResult::Failed(format!("{other}")),
        },
    }
}

enum Output {
    Thumbnail(Vec<u8>),
    Text(Extracted),
}

fn backoff(settings: &crate::assets::settings::AssetSettings, attempts: i32) -> Duration {
    let exponent = u32::try_from(attempts.saturating_sub(1))
        .unwrap_or(0)
        .min(20);
    settings
        .retry_base_delay
        .saturating_mul(1u32 << exponent)
        .min(settings.retry_max_delay)
}

async fn finish(
    state: &AppState,
    name: &str,
    task: &Task,
    result: StepResult,
) -> Result<(), sqlx::Error> {
    let settings = &state.settings.assets;
    let mut tx = state.db.pool.begin().await?;
    // Only the lease holder records (a task whose lease expired may have
    // been taken by another worker).
    let held: Option<i64> = sqlx::query_scalar(
        "SELECT id FROM asset_tasks WHERE id = $1 AND locked_by = $2 AND state = 'running' FOR UPDATE",
    )
    .bind(task.id)
    .bind(name)
    .fetch_optional(&mut *tx)
    .await?;
    if held.is_none() {
        return Ok(());
    }
    match result {
        StepResult::Done(done) => {
            if let Some(verdict) = &done.scan {
                match verdict {
                    Verdict::Clean => {
                        sqlx::query("UPDATE assets SET scan_status = 'clean', scan_result = NULL, scanned_at = now() WHERE id = $1")
                            .bind(task.asset_id)
                            .execute(&mut *tx)
                            .await?;
                    }
                    Verdict::Infected(signature) => {
                        sqlx::query("UPDATE assets SET scan_status = 'infected', scan_result = $2, scanned_at = now(), processing_status = 'quarantined' WHERE id = $1")
                            .bind(task.asset_id)
                            .bind(signature)
                            .execute(&mut *tx)
                            .await?;
                        metrics::counter!("boardroom_assets_quarantined_total").increment(1);
                        tracing::error!(alert = "asset_quarantined", asset_id = %task.asset_id, organization_id = %task.organization_id, %signature, "malware found in an uploaded file: quarantined, it will never be served");
                    }
                }
            }
            if let Some(message) = &done.scan_refused {
                sqlx::query("UPDATE assets SET scan_status = 'failed', scan_result = $2, scanned_at = now(), processing_error = $3 WHERE id = $1")
                    .bind(task.asset_id)
                    .bind(message)
                    .bind(format!("virus scan: {message}"))
                    .execute(&mut *tx)
                    .await?;
            }
            if let Some(key) = &done.thumbnail_key {
                sqlx::query("UPDATE assets SET thumbnail_key = $2 WHERE id = $1")
                    .bind(task.asset_id)
                    .bind(key)
                    .execute(&mut *tx)
                    .await?;
            }
            if let Some(extracted) = &done.extracted {
                sqlx::query("UPDATE assets SET extracted_text = $2, page_count = $3 WHERE id = $1")
                    .bind(task.asset_id)
                    .bind(&extracted.text)
                    .bind(extracted.page_count)
                    .execute(&mut *tx)
                    .await?;
            }
            let state_after = if done.scan_refused.is_some() {
                "failed"
            } else {
                "done"
            };
            sqlx::query("UPDATE asset_tasks SET state = $2, finished_at = now(), locked_by = NULL, locked_until = NULL, last_error = NULL WHERE id = $1")
                .bind(task.id)
                .bind(state_after)
                .execute(&mut *tx)
                .await?;
            repository::queue_steps(&mut tx, task.asset_id, &done.next).await?;
        }
        StepResult::Wait(wait, message) => {
            let wait = wait.max(backoff(settings, task.attempts));
            tracing::info!(asset_id = %task.asset_id, step = %task.step, wait = %humantime::format_duration(wait), %message, "asset step waits for its dependency");
            sqlx::query("UPDATE asset_tasks SET state = 'available', run_at = now() + make_interval(secs => $2), last_error = $3, locked_by = NULL, locked_until = NULL WHERE id = $1")
                .bind(task.id)
                .bind(wait.as_secs_f64())
                .bind(&message)
                .execute(&mut *tx)
                .await?;
        }
        StepResult::Failed(message) => {
            let attempts = u32::try_from(task.attempts).unwrap_or(u32::MAX);
            if attempts >= settings.max_attempts {
                tracing::warn!(asset_id = %task.asset_id, step = %task.step, %message, "asset step failed for good");
                sqlx::query("UPDATE asset_tasks SET state = 'failed', finished_at = now(), last_error = $2, locked_by = NULL, locked_until = NULL WHERE id = $1")
                    .bind(task.id)
                    .bind(&message)
                    .execute(&mut *tx)
                    .await?;
                sqlx::query("UPDATE assets SET processing_error = $2 WHERE id = $1")
                    .bind(task.asset_id)
                    .bind(format!("{}: {message}", task.step))
                    .execute(&mut *tx)
                    .await?;
            } else {
                sqlx::query("UPDATE asset_tasks SET state = 'available', run_at = now() + make_interval(secs => $2), last_error = $3, locked_by = NULL, locked_until = NULL WHERE id = $1")
                    .bind(task.id)
                    .bind(backoff(settings, task.attempts).as_secs_f64())
                    .bind(&message)
                    .execute(&mut *tx)
                    .await?;
            }
        }
    }
    settle(&mut tx, task.asset_id).await?;
    tx.commit().await?;
    state.assets.wake.notify_one();
    Ok(())
}

/// Recomputes an asset's `processingStatus` from its tasks.
async fn settle(conn: &mut sqlx::PgConnection, asset_id: Uuid) -> Result<(), sqlx::Error> {
    sqlx::query(
        "UPDATE assets a SET
             processing_status = s.status,
             processed_at = CASE WHEN s.status = 'pending' THEN NULL ELSE coalesce(a.processed_at, now()) END,
             updated_at = now()
         FROM (
             SELECT CASE
                 WHEN (SELECT processing_status FROM assets WHERE id = $1) = 'quarantined' THEN 'quarantined'
                 WHEN bool_or(state = 'failed') THEN 'failed'
                 WHEN bool_or(state IN ('available', 'running')) THEN 'pending'
                 ELSE 'completed'
             END AS status
             FROM asset_tasks WHERE asset_id = $1
         ) s
         WHERE a.id = $1",
    )
    .bind(asset_id)
    .execute(conn)
    .await?;
    Ok(())
}
