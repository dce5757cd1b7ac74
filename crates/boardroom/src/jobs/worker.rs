//! The workers: tokio tasks that claim jobs and run them batch by batch.
//!
//! One batch = one transaction that (1) locks the job row, checking this
//! worker still holds the lease, and reads the cursor (`processed`); (2) lets
//! the handler apply the next `batch_size` items; (3) records their errors,
//! advances the cursor and counts, renews the lease and `NOTIFY`s the
//! progress. A crash anywhere before the commit leaves no trace of the batch;
//! after it, the cursor says the batch is done. So a job resumes from its
//! last committed batch and no item is applied twice, even when a worker
//! whose lease expired (a stalled process) wakes up next to the one that took
//! over: the row lock and the `locked_by` check let only one of them commit.
//!
//! Workers are woken by `NOTIFY` ([`super::events`]) and poll every
//! `jobs.poll_interval` as a fallback (and to find expired leases). On
//! graceful shutdown a worker finishes its current batch and releases the
//! lease, so the next start (or another instance) continues at once.

use std::{sync::Arc, time::Duration};

use serde_json::Value;
use tokio::{sync::watch, task::JoinSet};

use super::{
    callback,
    handler::{Handlers, JobHandler, item_label},
    repository::{self, Claimed},
};
use crate::{error::ApiError, state::AppState};

/// Starts `state.settings.jobs.workers` workers for the kinds in `handlers`;
/// they stop when `stop` turns true.
pub fn spawn(
    state: &AppState,
    handlers: &Handlers,
    stop: &watch::Receiver<bool>,
    tasks: &mut JoinSet<()>,
) {
    let instance = uuid::Uuid::new_v4().simple().to_string();
    let client = callback::client(&state.settings.jobs);
    for n in 0..state.settings.jobs.workers {
        let worker = Worker {
            name: format!("{instance}-{n}"),
            state: state.clone(),
            handlers: handlers.clone(),
            kinds: handlers.kinds(),
            client: client.clone(),
            stop: stop.clone(),
        };
        tasks.spawn(worker.run());
    }
}

struct Worker {
    name: String,
    state: AppState,
    handlers: Handlers,
    kinds: Vec<String>,
    client: reqwest::Client,
    stop: watch::Receiver<bool>,
}

/// How a run of a claimed job ended.
enum Ended {
    /// Nothing left for this worker to do with it.
    Done,
    /// Shutting down: give the lease back.
    Stopping,
    /// Another worker holds the job now.
    LostLease,
    /// The lease was given back already (with a failure or a final callback state).
    Released,
}

impl Worker {
    fn stopping(&self) -> bool {
        *self.stop.borrow()
    }

    async fn run(mut self) {
        tracing::debug!(worker = %self.name, "jobs: worker started");
        let wake = Arc::clone(self.state.jobs.wake());
        let poll = self.state.settings.jobs.poll_interval;
        while !self.stopping() {
            // Registered before claiming, so a NOTIFY arriving meanwhile is kept.
            let notified = wake.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            match self.claim().await {
                Ok(Some(job)) => {
                    self.process(job).await;
                    continue;
                }
                Ok(None) => {}
                Err(error) => tracing::warn!(worker = %self.name, %error, "jobs: claim failed"),
            }
            tokio::select! {
                () = &mut notified => {}
                () = tokio::time::sleep(poll) => {}
                // A dropped sender (the server ended) also means stop.
                changed = self.stop.changed() => if changed.is_err() { break },
            }
        }
        tracing::debug!(worker = %self.name, "jobs: worker stopped");
    }

    async fn claim(&self) -> Result<Option<Claimed>, ApiError> {
        let db = &self.state.db;
        db.run(repository::claim(
            &db.pool,
            &self.name,
            &self.kinds,
            self.state.settings.jobs.lease,
        ))
        .await
    }

    async fn process(&self, job: Claimed) {
        let id = job.spec.id;
        tracing::info!(worker = %self.name, job_id = %id, kind = %job.spec.kind, "jobs: claimed");
        let ended = if job.finished {
            Ended::Done
        } else {
            match self.handlers.get(&job.spec.kind) {
                Some(handler) => self.run_batches(&job, handler.as_ref()).await,
                None => Ended::LostLease,
            }
        };
        let ended = match ended {
            Ended::Done if job.callback_url.is_some() => self.deliver_callback(&job).await,
            other => other,
        };
        match ended {
            Ended::Done => {
                let _ = self.release(id).await;
            }
            Ended::Stopping => {
                if let Err(error) = self.release(id).await {
                    tracing::warn!(job_id = %id, %error, "jobs: could not release the lease");
                }
            }
            Ended::LostLease => {
                tracing::warn!(worker = %self.name, job_id = %id, "jobs: lease lost; stopping");
            }
            Ended::Released => {}
        }
    }

    async fn release(&self, id: uuid::Uuid) -> Result<(), ApiError> {
        let db = &self.state.db;
        db.run(repository::release(&db.pool, id, &self.name)).await
    }

    async fn run_batches(&self, job: &Claimed, handler: &dyn JobHandler) -> Ended {
        let db = &self.state.db;
        let items = match db.run(repository::items(&db.pool, job.spec.id)).await {
            Ok(items) => items,
            Err(error) => {
                self.batch_failed(job, &error).await;
                return Ended::Released;
            }
        };
        loop {
            if self.stopping() {
                return Ended::Stopping;
            }
            match db.run(self.one_batch(job, handler, &items)).await {
                Ok(Some(true)) => return Ended::Done,
                Ok(Some(false)) => {}
                Ok(None) => return Ended::LostLease,
                Err(error) => {
                    self.batch_failed(job, &error).await;
                    return Ended::Released;
                }
            }
        }
    }

    /// Runs the next batch in its own transaction: `Some(finished)` once
    /// committed, `None` when the lease was lost.
    async fn one_batch(
        &self,
        job: &Claimed,
        handler: &dyn JobHandler,
        items: &[Value],
    ) -> Result<Option<bool>, ApiError> {
        let settings = &self.state.settings.jobs;
        let mut tx = self.state.db.pool.begin().await?;
        let Some(cursor) = repository::lock_cursor(&mut tx, job.spec.id, &self.name).await? else {
            return Ok(None);
        };
        let start = usize::try_from(cursor).unwrap_or(0).min(items.len());
        let end = (start + usize::try_from(job.batch_size).unwrap_or(1)).min(items.len());
        let batch = &items[start..end];
        let outcomes = handler
            .apply_batch(&self.state, &job.spec, batch, &mut tx)
            .await?;
        if outcomes.len() != batch.len() {
            return Err(ApiError::Internal(anyhow::anyhow!(
                "handler {} returned {} outcomes for {} items",
                job.spec.kind,
                outcomes.len(),
                batch.len()
            )));
        }
        let labels: Vec<String> = batch.iter().map(item_label).collect();
        let progress = repository::record_batch(
            &mut tx,
            job.spec.id,
            cursor,
            &labels,
            &outcomes,
            settings.lease,
        )
        .await?;
        tx.commit().await?;
        handler
            .after_commit(&self.state, &job.spec, batch, &outcomes)
            .await;
        tracing::debug!(job_id = %job.spec.id, processed = progress.processed, "jobs: batch committed");
        if progress.status.is_final() {
            tracing::info!(
                job_id = %job.spec.id,
                succeeded = progress.succeeded,
                failed = progress.failed,
                "jobs: completed"
            );
        }
        Ok(Some(progress.status.is_final()))
    }

    async fn batch_failed(&self, job: &Claimed, error: &ApiError) {
        tracing::warn!(job_id = %job.spec.id, %error, "jobs: batch failed; will retry");
        let settings = &self.state.settings.jobs;
        // Doubled per attempt in SQL (the attempt count lives in the row).
        let retry_in = Duration::from_millis(500);
        let db = &self.state.db;
        let message = match error {
            ApiError::Internal(_) => "internal error (see the service log)".to_owned(),
            other => other.to_string(),
        };
        match db
            .run(repository::batch_failed(
                &db.pool,
                job.spec.id,
                &self.name,
                &message,
                retry_in,
                settings.max_attempts,
            ))
            .await
        {
            // Out of attempts: the job is a dead letter (alerts.yml watches this).
            Ok(true) => {
                tracing::error!(job_id = %job.spec.id, %message, "jobs: job failed for good");
                metrics::counter!(crate::ops::metrics::DEAD_LETTERS, "queue" => "jobs")
                    .increment(1);
            }
            Ok(false) => {}
            Err(error) => {
                tracing::warn!(job_id = %job.spec.id, %error, "jobs: could not record the failure")
            }
        }
    }

    async fn deliver_callback(&self, job: &Claimed) -> Ended {
        let Some(url) = job.callback_url.as_deref() else {
            return Ended::Done;
        };
        let settings = &self.state.settings.jobs;
        let db = &self.state.db;
        let id = job.spec.id;
        let mut attempt = u32::try_from(job.callback_attempts).unwrap_or(0);
        loop {
            if self.stopping() {
                return Ended::Stopping;
            }
            match db
                .run(repository::renew(&db.pool, id, &self.name, settings.lease))
                .await
            {
                Ok(true) => {}
                Ok(false) => return Ended::LostLease,
                Err(_) => return Ended::Stopping,
            }
            let job_state = match db.run(repository::find(&db.pool, id)).await {
                Ok(Some(found)) => found,
                Ok(None) => return Ended::LostLease,
                Err(_) => return Ended::Stopping,
            };
            // Only a job that became final has a pending callback.
            if !job_state.status.is_final()
                || job_state.callback_status.as_deref() != Some("pending")
            {
                return Ended::Done;
            }
            attempt += 1;
            let outcome = callback::deliver(&self.client, url, &job_state).await;
            let status = match &outcome {
                Ok(()) => "delivered",
                Err(_) if attempt >= settings.callback_attempts => "failed",
                Err(_) => "pending",
            };
            match &outcome {
                Ok(()) => tracing::info!(job_id = %id, attempt, "jobs: callback delivered"),
                Err(error) => {
                    tracing::warn!(job_id = %id, attempt, %error, status, "jobs: callback failed")
                }
            }
            if db
                .run(repository::callback_attempted(
                    &db.pool, id, &self.name, status,
                ))
                .await
                .is_err()
            {
                return Ended::Stopping;
            }
            if status != "pending" {
                // The lease was released with the final status.
                return Ended::Released;
            }
            let wait = callback::backoff(settings, attempt);
            let mut stop = self.stop.clone();
            tokio::select! {
                () = tokio::time::sleep(wait) => {}
                _ = stop.changed() => return Ended::Stopping,
            }
        }
    }
}
