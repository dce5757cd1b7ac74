//! Job notifications: one `LISTEN` connection per process fans PostgreSQL's
//! `NOTIFY`s out in-process.
//!
//! - [`QUEUED_CHANNEL`] wakes the workers (polling is only the fallback).
//! - [`PROGRESS_CHANNEL`] carries a [`Progress`] per committed batch, sent
//!   by the batch's own transaction, so it is delivered only once the batch
//!   is durable, in commit order, to every instance: an SSE client connected
//!   to any instance sees the batches of a worker running on another.
//!
//! While the connection is down (database outage) notifications are lost;
//! workers then poll, and event streams re-read the job (see
//! [`super::http`]).

use std::{sync::Arc, time::Duration};

use sqlx::postgres::PgListener;
use tokio::sync::{Notify, broadcast, watch};

use super::{
    model::Progress,
    repository::{PROGRESS_CHANNEL, QUEUED_CHANNEL},
};

/// Buffered progress events per subscriber before it lags (and re-reads).
const CAPACITY: usize = 4096;

/// The in-process side of the job notifications. Cheap to clone.
#[derive(Debug, Clone)]
pub struct JobEvents {
    progress: broadcast::Sender<Progress>,
    wake: Arc<Notify>,
}

impl Default for JobEvents {
    fn default() -> Self {
        Self::new()
    }
}

impl JobEvents {
    /// A hub nobody listens to yet.
    pub fn new() -> Self {
        Self {
            progress: broadcast::channel(CAPACITY).0,
            wake: Arc::new(Notify::new()),
        }
    }

    /// Every progress event from now on.
    pub fn subscribe(&self) -> broadcast::Receiver<Progress> {
        self.progress.subscribe()
    }

    /// Signalled when a job is queued anywhere.
    pub fn wake(&self) -> &Arc<Notify> {
        &self.wake
    }

    /// Listens on `database_url` until `stop` turns true, reconnecting with
    /// backoff when the connection is lost.
    pub async fn listen(self, database_url: String, mut stop: watch::Receiver<bool>) {
        let mut delay = Duration::from_millis(100);
        while !*stop.borrow() {
            let mut listener = match self.connect(&database_url).await {
                Ok(listener) => {
                    delay = Duration::from_millis(100);
                    listener
                }
                Err(error) => {
                    tracing::warn!(%error, retry_in = ?delay, "jobs: cannot LISTEN; retrying");
                    tokio::select! {
                        () = tokio::time::sleep(delay) => {}
                        _ = stop.changed() => {}
                    }
                    delay = (delay * 2).min(Duration::from_secs(5));
                    continue;
                }
            };
            // Jobs queued while nobody listened: let the workers look.
            self.wake.notify_waiters();
            loop {
                let notification = tokio::select! {
                    received = listener.recv() => received,
                    _ = stop.changed() => return,
                };
                match notification {
                    Ok(notification) if notification.channel() == QUEUED_CHANNEL => {
                        self.wake.notify_waiters();
                    }
                    Ok(notification) => {
                        match serde_json::from_str::<Progress>(notification.payload()) {
                            // No subscriber is not an error.
                            Ok(progress) => drop(self.progress.send(progress)),
                            Err(error) => tracing::warn!(%error, "jobs: bad progress payload"),
                        }
                    }
                    Err(error) => {
                        tracing::warn!(%error, "jobs: LISTEN connection lost; reconnecting");
                        break;
                    }
                }
            }
        }
    }

    async fn connect(&self, database_url: &str) -> Result<PgListener, sqlx::Error> {
        let mut listener = PgListener::connect(database_url).await?;
        listener
            .listen_all([QUEUED_CHANNEL, PROGRESS_CHANNEL])
            .await?;
        Ok(listener)
    }
}
