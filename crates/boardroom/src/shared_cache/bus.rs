//! Cross-instance invalidation over PostgreSQL `LISTEN/NOTIFY`.
//!
//! Every instance already talks to the one PostgreSQL, and `NOTIFY` keeps
//! working when Redis is down, so invalidations travel there rather than
//! over Redis pub/sub. A message is JSON on [`CHANNEL`]:
//! `{"origin": "<instance uuid>", "tags": ["user:…", …]}` (split so each
//! payload stays under PostgreSQL's 8000-byte limit). The sender has already
//! applied it to its own L1 and to L2; each other instance applies it to
//! every cache of its registry.
//!
//! A subscriber that loses its connection may have missed messages: it drops
//! every L1 cache when the loss is seen and again once it listens again, so
//! nothing it missed can be served. Notifications are delivered to
//! listeners in commit order and only to those connected when sent.

use std::time::Duration;

use resilience::registry::Registry;
use serde::{Deserialize, Serialize};
use sqlx::postgres::PgListener;
use tokio::sync::watch;
use uuid::Uuid;

use super::CacheSettings;
use crate::stacks::Database;

/// The `NOTIFY` channel of cache invalidations.
pub const CHANNEL: &str = "boardroom_cache_invalidations";

/// Largest payload sent (PostgreSQL refuses 8000 bytes and more).
const MAX_PAYLOAD: usize = 7000;

const RECEIVED: &str = "boardroom_cache_invalidations_received_total";
const PUBLISHED: &str = "boardroom_cache_invalidations_published_total";
const RESETS: &str = "boardroom_cache_l1_resets_total";

pub(super) fn describe() {
    metrics::describe_counter!(
        PUBLISHED,
        "Invalidation messages this instance published for the others, by outcome (ok, error)."
    );
    metrics::describe_counter!(
        RECEIVED,
        "Invalidation messages from other instances applied to this instance's L1 caches."
    );
    metrics::describe_counter!(
        RESETS,
        "Times this instance dropped its whole L1 because its invalidation subscription was lost or re-established."
    );
}

/// One invalidation message.
#[derive(Debug, Serialize, Deserialize)]
struct Message {
    origin: Uuid,
    tags: Vec<String>,
}

/// The publishing side and the subscriber's loop. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Bus {
    origin: Uuid,
    enabled: bool,
    db: Database,
}

impl Bus {
    pub(super) fn new(settings: &CacheSettings, db: Database) -> Self {
        Self {
            origin: Uuid::new_v4(),
            enabled: settings.broadcast,
            db,
        }
    }

    /// This instance's id in messages.
    pub fn origin(&self) -> Uuid {
        self.origin
    }

    /// Publishes `tags` to the other instances (best effort: a failure is
    /// logged; the database is then unreachable and so is every peer's).
    pub async fn publish_tags(&self, tags: &[&str]) {
        if !self.enabled {
            return;
        }
        for chunk in chunks(tags) {
            let payload = match serde_json::to_string(&Message {
                origin: self.origin,
                tags: chunk,
            }) {
                Ok(payload) => payload,
                Err(error) => {
                    tracing::warn!(%error, "cache bus: cannot encode a message");
                    continue;
                }
            };
            let pool = &self.db.pool;
            let sent = self
                .db
                .run(async {
                    sqlx::query("SELECT pg_notify($1, $2)")
                        .bind(CHANNEL)
                        .bind(&payload)
                        .execute(pool)
                        .await
                        .map_err(crate::error::ApiError::from)
                })
                .await;
            let outcome = match sent {
                Ok(_) => "ok",
                Err(error) => {
                    tracing::warn!(?error, "cache bus: cannot publish an invalidation");
                    "error"
                }
            };
            metrics::counter!(PUBLISHED, "outcome" => outcome).increment(1);
        }
    }

    /// Applies the other instances' invalidations to `registry`'s caches
    /// until `stop` turns true, reconnecting with backoff; drops every L1
    /// when the subscription is lost and when it is back.
    pub async fn listen(
        self,
        database_url: String,
        registry: Registry,
        mut stop: watch::Receiver<bool>,
    ) {
        if !self.enabled {
            return;
        }
        let mut delay = Duration::from_millis(100);
        while !*stop.borrow() {
            let connected = async {
                let mut listener = PgListener::connect(&database_url).await?;
                listener.listen(CHANNEL).await?;
                Ok::<_, sqlx::Error>(listener)
            };
            let mut listener = match connected.await {
                Ok(listener) => listener,
                Err(error) => {
                    tracing::warn!(%error, retry_in = ?delay, "cache bus: cannot LISTEN; retrying");
                    tokio::select! {
                        () = tokio::time::sleep(delay) => {}
                        _ = stop.changed() => {}
                    }
                    delay = (delay * 2).min(Duration::from_secs(5));
                    continue;
                }
            };
            delay = Duration::from_millis(100);
            // Whatever was published while nobody listened is unknown.
            reset(&registry, "subscribed").await;
            loop {
                let received = tokio::select! {
                    received = listener.recv() => received,
                    _ = stop.changed() => return,
                };
                match received {
                    Ok(notification) => {
                        match serde_json::from_str::<Message>(notification.payload()) {
                            Ok(message) if message.origin == self.origin => {}
                            Ok(message) => {
                                registry.cache_invalidate_tags(&message.tags).await;
                                metrics::counter!(RECEIVED).increment(1);
                            }
                            Err(error) => tracing::warn!(%error, "cache bus: bad message"),
                        }
                    }
                    Err(error) => {
                        tracing::warn!(%error, "cache bus: LISTEN connection lost; dropping L1 and reconnecting");
                        reset(&registry, "lost").await;
                        break;
                    }
                }
            }
        }
    }
}

/// Drops every L1 cache of `registry`.
async fn reset(registry: &Registry, why: &'static str) {
    for cache in registry.caches() {
        cache.invalidate_all().await;
    }
    metrics::counter!(RESETS, "reason" => why).increment(1);
}

/// `tags` in groups whose message stays under [`MAX_PAYLOAD`].
fn chunks(tags: &[&str]) -> Vec<Vec<String>> {
    let mut groups = Vec::new();
    let mut current: Vec<String> = Vec::new();
    let mut size = 0;
    for tag in tags {
        // Quotes, a comma and JSON escapes at worst doubling the text.
        let cost = tag.len() * 2 + 3;
        if !current.is_empty() && size + cost > MAX_PAYLOAD - 100 {
            groups.push(std::mem::take(&mut current));
            size = 0;
        }
        size += cost;
        current.push((*tag).to_owned());
    }
    if !current.is_empty() {
        groups.push(current);
    }
    groups
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn many_tags_are_split_under_the_payload_limit() {
        let tags: Vec<String> = (0..2000)
            .map(|i| format!("user:{}", Uuid::from_u128(i)))
            .collect();
        let refs: Vec<&str> = tags.iter().map(String::as_str).collect();
        let groups = chunks(&refs);
        assert!(groups.len() > 1);
        assert_eq!(groups.iter().map(Vec::len).sum::<usize>(), 2000);
        for group in groups {
            let payload = serde_json::to_string(&Message {
                origin: Uuid::nil(),
                tags: group,
            })
            .unwrap();
            assert!(payload.len() < 8000, "{}", payload.len());
        }
    }
}
