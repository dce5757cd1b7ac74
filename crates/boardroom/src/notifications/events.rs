//! The notification `LISTEN` connection: [`super::QUEUED_CHANNEL`] wakes the
//! delivery workers; [`super::INBOX_CHANNEL`] names the users whose in-app
//! feed grew (sent by the batch's own statement, so only once it is
//! durable), which the SSE streams of this instance pick up.
//!
//! While the connection is down notifications are lost: workers then poll
//! and streams re-read the feed on their own timer.

use std::{sync::Arc, time::Duration};

use sqlx::postgres::PgListener;
use tokio::sync::{Notify, broadcast, watch};
use uuid::Uuid;

use super::{INBOX_CHANNEL, QUEUED_CHANNEL};

/// The in-process side. Cheap to clone.
#[derive(Debug, Clone)]
pub struct NotificationEvents {
    wake: Arc<Notify>,
    inbox: broadcast::Sender<Arc<Vec<Uuid>>>,
}

impl Default for NotificationEvents {
    fn default() -> Self {
        Self::new()
    }
}

impl NotificationEvents {
    /// A hub nobody listens to yet.
    pub fn new() -> Self {
        Self {
            wake: Arc::new(Notify::new()),
            inbox: broadcast::channel(1024).0,
        }
    }

    /// Signalled when deliveries are queued anywhere.
    pub fn wake(&self) -> &Arc<Notify> {
        &self.wake
    }

    /// Batches of users whose feed grew.
    pub fn subscribe(&self) -> broadcast::Receiver<Arc<Vec<Uuid>>> {
        self.inbox.subscribe()
    }

    /// Listens until `stop` turns true, reconnecting with backoff.
    pub async fn listen(self, database_url: String, mut stop: watch::Receiver<bool>) {
        let mut delay = Duration::from_millis(100);
        while !*stop.borrow() {
            let mut listener = match PgListener::connect(&database_url).await {
                Ok(mut listener) => {
                    match listener.listen_all([QUEUED_CHANNEL, INBOX_CHANNEL]).await {
                        Ok(()) => {
                            delay = Duration::from_millis(100);
                            listener
                        }
                        Err(error) => {
                            tracing::warn!(%error, "notifications: LISTEN failed; retrying");
                            tokio::time::sleep(delay).await;
                            continue;
                        }
                    }
                }
                Err(error) => {
                    tracing::warn!(%error, retry_in = ?delay, "notifications: cannot LISTEN; retrying");
                    tokio::select! {
                        () = tokio::time::sleep(delay) => {}
                        _ = stop.changed() => {}
                    }
                    delay = (delay * 2).min(Duration::from_secs(5));
                    continue;
                }
            };
            self.wake.notify_waiters();
            loop {
                let received = tokio::select! {
                    received = listener.recv() => received,
                    _ = stop.changed() => return,
                };
                match received {
                    Ok(n) if n.channel() == QUEUED_CHANNEL => self.wake.notify_waiters(),
                    Ok(n) => {
                        let users: Vec<Uuid> = n
                            .payload()
                            .split(',')
                            .filter_map(|id| Uuid::try_parse(id).ok())
                            .collect();
                        drop(self.inbox.send(Arc::new(users)));
                    }
                    Err(error) => {
                        tracing::warn!(%error, "notifications: LISTEN connection lost; reconnecting");
                        break;
                    }
                }
            }
        }
    }
}
