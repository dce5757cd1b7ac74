//! Delivery workers: tokio tasks that claim due deliveries and hand them to
//! their channel.
//!
//! A worker claims a batch (priority, then due time), stores in-app ones at
//! once, calls the providers of the rest concurrently through their stacks,
//! and writes every outcome in one statement. A failed try is retried later
//! with exponential backoff and jitter (`notifications.retry_base_delay`,
//! doubled per try, at most `retry_max_delay`) until `maxRetries` is spent,
//! then the delivery is `dead` with its last error. A refusal that cannot
//! succeed (a 5xx SMTP reply, a gateway's 4xx) is `dead` at once. An open
//! breaker or a full queue does not use up a try: the delivery waits for the
//! breaker's next probe.
//!
//! Workers wake on `NOTIFY` and poll every `notifications.poll_interval`
//! (scheduled and deferred deliveries falling due; expired leases of a
//! crashed worker, which are queued again).

use std::{sync::Arc, time::Duration};

use chrono::Utc;
use futures_util::{StreamExt, stream};
use rand::Rng;
use resilience::BoxError;
use tokio::{sync::watch, task::JoinSet};
use tower::ServiceExt;
use uuid::Uuid;

use super::{
    DELIVERIES,
    channels::{ChannelError, Outgoing},
    model::{Channel, Priority},
    queue::{self, Claimed, Outcome},
};
use crate::{ops::metrics::DEAD_LETTERS, state::AppState};

/// Starts `notifications.workers` workers; they stop when `stop` turns true.
pub fn spawn(state: &AppState, stop: &watch::Receiver<bool>, tasks: &mut JoinSet<()>) {
    let instance = Uuid::new_v4().simple().to_string();
    for n in 0..state.settings.notifications.workers {
        let worker = Worker {
            name: format!("notify-{instance}-{n}"),
            state: state.clone(),
            stop: stop.clone(),
        };
        tasks.spawn(worker.run());
    }
}

struct Worker {
    name: String,
    state: AppState,
    stop: watch::Receiver<bool>,
}

impl Worker {
    fn stopping(&self) -> bool {
        *self.stop.borrow()
    }

    async fn run(mut self) {
        tracing::debug!(worker = %self.name, "notifications: worker started");
        let wake = Arc::clone(self.state.notifications.events.wake());
        let settings = self.state.settings.notifications.clone();
        let mut last_recovery: Option<tokio::time::Instant> = None;
        while !self.stopping() {
            let notified = wake.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if last_recovery.is_none_or(|at| at.elapsed() >= settings.poll_interval) {
                last_recovery = Some(tokio::time::Instant::now());
                match queue::recover_expired(&self.state.db.pool).await {
                    Ok(0) => {}
                    Ok(n) => {
                        tracing::warn!(recovered = n, "notifications: expired leases requeued")
                    }
                    Err(error) => tracing::warn!(%error, "notifications: lease recovery failed"),
                }
            }
            let claimed = self
                .state
                .db
                .run(queue::claim(
                    &self.state.db.pool,
                    &self.name,
                    settings.batch_size,
                    settings.lease,
                ))
                .await;
            match claimed {
                Ok(batch) if !batch.is_empty() => {
                    self.process(batch).await;
                    continue;
                }
                Ok(_) => {}
                Err(error) => {
                    tracing::warn!(worker = %self.name, %error, "notifications: claim failed")
                }
            }
            tokio::select! {
                () = &mut notified => {}
                () = tokio::time::sleep(settings.poll_interval) => {}
                changed = self.stop.changed() => if changed.is_err() { break },
            }
        }
        tracing::debug!(worker = %self.name, "notifications: worker stopped");
    }

    async fn process(&self, batch: Vec<Claimed>) {
        let settings = &self.state.settings.notifications;
        let channels = &self.state.notifications.channels;
        // In-app deliveries were stored by the claim: count them, wake the streams.
        let (in_app, batch): (Vec<Claimed>, Vec<Claimed>) = batch
            .into_iter()
            .partition(|c| c.channel() == Some(Channel::InApp));
        if !in_app.is_empty() {
            metrics::counter!(DELIVERIES, "channel" => "in_app", "outcome" => "sent")
                .increment(in_app.len() as u64);
            let mut users: Vec<Uuid> = in_app.iter().map(|c| c.user_id).collect();
            users.sort_unstable();
            users.dedup();
            if let Err(error) = queue::notify_inbox(&self.state.db.pool, &users).await {
                tracing::debug!(%error, "notifications: feed wake-up not sent (streams re-read)");
            }
        }
        if batch.is_empty() {
            return;
        }
        let outcomes: Vec<(Uuid, Outcome, Channel)> = stream::iter(batch)
            .map(|claimed| async move {
                let channel = claimed.channel().unwrap_or(Channel::InApp);
                let Some(service) = channels.service(channel) else {
                    return (claimed.id, Outcome::Sent, channel);
                };
                let out = Arc::new(Outgoing {
                    delivery_id: claimed.id,
                    notification_id: claimed.notification_id,
                    user_id: claimed.user_id,
                    email: claimed.email.clone(),
                    kind: claimed.kind.clone(),
                    title: claimed.title.clone(),
                    message: claimed.message.clone(),
                    priority: Priority::from_rank(claimed.priority),
                    data: claimed.data.clone(),
                    tracking_token: claimed.tracking_token.clone(),
                });
                let result = service.oneshot(out).await;
                (claimed.id, judge(settings, &claimed, result), channel)
            })
            .buffer_unordered(settings.concurrency)
            .collect()
            .await;
        for (_, outcome, channel) in &outcomes {
            let label = match outcome {
                Outcome::Sent => "sent",
                Outcome::Retry { .. } => "retry",
                Outcome::Dead { .. } => "dead",
            };
            metrics::counter!(DELIVERIES, "channel" => channel.as_str(), "outcome" => label)
                .increment(1);
            if let Outcome::Dead { error } = outcome {
                tracing::warn!(channel = channel.as_str(), %error, "notifications: delivery dead");
                metrics::counter!(DEAD_LETTERS, "queue" => "notifications").increment(1);
            }
        }
        let outcomes: Vec<(Uuid, Outcome)> =
            outcomes.into_iter().map(|(id, o, _)| (id, o)).collect();
        // The providers have answered: record it, retrying briefly while the
        // database is away (else the lease expires and the provider sees the
        // same delivery id again, which it must treat as a resend).
        let mut delay = Duration::from_millis(50);
        for attempt in 0..8 {
            match queue::finish(&self.state.db.pool, &self.name, &outcomes).await {
                Ok(_) => return,
                Err(error) if attempt == 7 => {
                    tracing::error!(%error, "notifications: could not record a batch's outcomes");
                }
                Err(error) => {
                    tracing::warn!(%error, "notifications: recording outcomes failed; retrying");
                    tokio::time::sleep(delay).await;
                    delay = (delay * 2).min(Duration::from_secs(2));
                }
            }
        }
    }
}

/// What one try's result means for the delivery.
fn judge(
    settings: &super::config::NotificationSettings,
    claimed: &Claimed,
    result: Result<(), BoxError>,
) -> Outcome {
    let error = match result {
        Ok(()) => return Outcome::Sent,
        Err(error) => error,
    };
    // Refused by our own layers: the provider never saw it.
    if let Some(open) = error.downcast_ref::<resilience::breaker::BreakerOpen>() {
        return not_counted(open.retry_after(), format!("{open}"));
    }
    if let Some(full) = error.downcast_ref::<resilience::concurrency::QueueFull>() {
        return not_counted(full.retry_after(), format!("{full}"));
    }
    if let Some(waited) = error.downcast_ref::<resilience::concurrency::QueueTimeout>() {
        return not_counted(waited.retry_after(), format!("{waited}"));
    }
    let (permanent, message) = match error.downcast_ref::<ChannelError>() {
        Some(channel) => (channel.permanent, channel.message.clone()),
        None if error.is::<tower::timeout::error::Elapsed>() => {
            (false, "the provider did not answer in time".to_owned())
        }
        None => (false, error.to_string()),
    };
    let tries = claimed.attempts + 1;
    if permanent || tries > claimed.max_retries {
        return Outcome::Dead { error: message };
    }
    Outcome::Retry {
        at: Utc::now() + backoff(settings, tries),
        error: message,
        counted: true,
    }
}

fn not_counted(wait: Duration, error: String) -> Outcome {
    let wait = wait.max(Duration::from_millis(50));
    Outcome::Retry {
        at: Utc::now() + chrono::Duration::from_std(wait).unwrap_or(chrono::Duration::seconds(1)),
        error,
        counted: false,
    }
}

/// The wait before try `tries + 1`: base × 2^(tries-1), capped, with equal
/// jitter (half fixed, half random) so waits still grow but retries of one
/// outage spread out.
pub fn backoff(settings: &super::config::NotificationSettings, tries: i32) -> chrono::Duration {
    let exponent = u32::try_from(tries.saturating_sub(1)).unwrap_or(0).min(30);
    let delay = settings
        .retry_base_delay
        .saturating_mul(1u32 << exponent)
        .min(settings.retry_max_delay);
    let half = delay / 2;
    let jitter = rand::rng().random_range(0..=half.as_millis().max(1));
    let wait = half + Duration::from_millis(u64::try_from(jitter).unwrap_or(0));
    chrono::Duration::from_std(wait).unwrap_or(chrono::Duration::seconds(1))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::notifications::config::NotificationSettings;

    #[test]
    fn backoff_grows_with_jitter_and_is_capped() {
        let settings = NotificationSettings {
            retry_base_delay: Duration::from_millis(100),
            retry_max_delay: Duration::from_secs(1),
            ..NotificationSettings::default()
        };
        for _ in 0..100 {
            let first = backoff(&settings, 1).num_milliseconds();
            assert!((50..=100).contains(&first), "{first}");
            let third = backoff(&settings, 3).num_milliseconds();
            assert!((200..=400).contains(&third), "{third}");
            let capped = backoff(&settings, 20).num_milliseconds();
            assert!((500..=1000).contains(&capped), "{capped}");
        }
    }
}
