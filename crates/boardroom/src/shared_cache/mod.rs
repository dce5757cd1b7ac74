//! Scale-out: a shared second-level cache in Redis and invalidations that
//! reach every instance.
//!
//! Several instances behind a load balancer share one PostgreSQL. Each keeps
//! its own in-process cache (L1, the resilience crate's moka cache); this
//! module adds what makes them behave as one:
//!
//! - **L2 in Redis** ([`RedisL2`], enabled by `cache.redis_url`): an L1 miss
//!   asks Redis before the database, and a database load is written back to
//!   Redis for the other instances. Values are JSON (see [`tiered`]); each
//!   entry lives `ttl` (the cache's own), its tags are Redis sets, and
//!   per-tag generation counters in Redis keep the per-tag generation rule
//!   across instances: a load that started before an invalidation is never
//!   written to L2 (a Lua script compares the generations it read before the
//!   load with the current ones, atomically with the write).
//! - **Redis is optional at run time**: every call goes through the `redis`
//!   breaker and `[services.redis] timeout`. Redis down or slow costs speed
//!   only: reads fall through to the database, nothing fails for a client,
//!   `/health/ready` reports `checks.redis` `degraded`, and the breaker's
//!   half-open probes bring L2 back by themselves. An invalidation that could
//!   not reach Redis marks L2 dirty; the next call that reaches it bumps the
//!   L2 epoch first, which orphans every entry written before (they expire by
//!   their ttl), so nothing invalidated while Redis was away is served again.
//! - **Coherent invalidation** ([`bus`]): every tag invalidation is applied
//!   to L2, then to this instance's L1, then published with PostgreSQL
//!   `NOTIFY` (which every instance already has, and which works with Redis
//!   down). Each instance `LISTEN`s and applies what others publish to its
//!   L1. An instance that loses its `LISTEN` connection drops its whole L1
//!   when it loses it and again when it is back, so it never serves what it
//!   may have missed.
//!
//! Order matters: L2 before L1 (a concurrent L1 miss then finds L2 already
//! empty, or its L1 fill is dropped by the L1's own generation rule), and
//! both before the response (a `GET` through the same instance after a
//! `PATCH` sees the change at once; through another instance once its
//! `NOTIFY` arrives).
//!
//! What stays per instance: breakers, concurrency limits, budgets, the L1
//! and its metrics. What is shared: PostgreSQL (data, jobs, leases), Redis
//! (L2) and the invalidation channel.

pub mod bus;
mod redis;
pub mod tiered;

use std::sync::Arc;

use parking_lot::Mutex;
use resilience::registry::Registry;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

pub use self::redis::{L2Status, RedisL2, SERVICE as REDIS_SERVICE};
pub use tiered::{L2Key, TieredCache};

use crate::{
    config::{ConfigError, Settings},
    stacks::Database,
};

/// `[cache]`: the shared second level and cross-instance invalidation.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct CacheSettings {
    /// `cache.redis_url` — `redis://host:port[/db]` of the shared second-level
    /// cache; empty for the in-process cache only. Default empty.
    pub redis_url: String,
    /// `cache.redis_prefix` — prefix of every Redis key, so several
    /// deployments (or tests) can share one Redis. Default `boardroom`.
    pub redis_prefix: String,
    /// `cache.broadcast` — publish every invalidation to the other instances
    /// (PostgreSQL `NOTIFY` on [`bus::CHANNEL`]) and apply theirs. Default `true`.
    pub broadcast: bool,
}

impl Default for CacheSettings {
    fn default() -> Self {
        Self {
            redis_url: String::new(),
            redis_prefix: "boardroom".into(),
            broadcast: true,
        }
    }
}

impl CacheSettings {
    /// Checks the URL and the prefix.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if !self.redis_url.is_empty()
            && (!(self.redis_url.starts_with("redis://") || self.redis_url.starts_with("unix://"))
                || ::redis::Client::open(self.redis_url.as_str()).is_err())
        {
            return Err(ConfigError::Invalid {
                key: "cache.redis_url",
                value: format!("{:?}", crate::config::redact_url(&self.redis_url)),
                allowed: "must be empty or a Redis URL like redis://127.0.0.1:6379".into(),
            });
        }
        let prefix_ok = !self.redis_prefix.is_empty()
            && self.redis_prefix.len() <= 64
            && self
                .redis_prefix
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
        if !prefix_ok {
            return Err(ConfigError::Invalid {
                key: "cache.redis_prefix",
                value: format!("{:?}", self.redis_prefix),
                allowed: "must be 1 to 64 characters of letters, digits, '-', '_' or '.'".into(),
            });
        }
        Ok(())
    }
}

/// This process's side of the shared cache: the optional L2 and the
/// invalidation bus. Cheap to clone.
#[derive(Clone, Debug)]
pub struct SharedCache {
    inner: Arc<SharedInner>,
}

#[derive(Debug)]
struct SharedInner {
    l2: Option<RedisL2>,
    bus: bus::Bus,
    registry: Registry,
    /// The caches that have an L2 part (their names prefix their Redis keys).
    l2_caches: Mutex<Vec<Arc<str>>>,
}

impl SharedCache {
    /// Builds the L2 client (when `cache.redis_url` is set; it connects
    /// lazily, so a Redis that is down at start is no error) and the bus.
    pub fn new(settings: &Settings, db: &Database, registry: &Registry) -> anyhow::Result<Self> {
        describe();
        let l2 = RedisL2::from_settings(settings, registry)?;
        Ok(Self {
            inner: Arc::new(SharedInner {
                l2,
                bus: bus::Bus::new(&settings.cache, db.clone()),
                registry: registry.clone(),
                l2_caches: Mutex::new(Vec::new()),
            }),
        })
    }

    /// The L2 client, when enabled.
    pub fn l2(&self) -> Option<&RedisL2> {
        self.inner.l2.as_ref()
    }

    /// This process's id on the invalidation channel.
    pub fn origin(&self) -> Uuid {
        self.inner.bus.origin()
    }

    pub(crate) fn register_l2_cache(&self, name: Arc<str>) {
        self.inner.l2_caches.lock().push(name);
    }

    /// Invalidates `tags` everywhere: in L2, in every L1 cache of this
    /// process (returning how many entries that removed), and — published on
    /// the bus — in every other instance's L1.
    pub async fn invalidate_tags<T: AsRef<str>>(&self, tags: &[T]) -> u64 {
        if tags.is_empty() {
            return 0;
        }
        let tags: Vec<&str> = tags.iter().map(AsRef::as_ref).collect();
        if let Some(l2) = &self.inner.l2 {
            let caches = self.inner.l2_caches.lock().clone();
            l2.invalidate_tags(&caches, &tags).await;
        }
        let removed = self.inner.registry.cache_invalidate_tags(&tags).await;
        self.inner.bus.publish_tags(&tags).await;
        removed
    }

    /// Listens for the other instances' invalidations until `stop` turns
    /// true (see [`bus::Bus::listen`]).
    pub async fn listen(self, database_url: String, stop: tokio::sync::watch::Receiver<bool>) {
        let bus = self.inner.bus.clone();
        bus.listen(database_url, self.inner.registry.clone(), stop)
            .await;
    }
}

/// Checks `[services.redis]` (its breaker settings) naming the key.
pub fn validate_service(settings: &Settings) -> Result<(), ConfigError> {
    resilience::breaker::BreakerLayer::new(REDIS_SERVICE, settings.service(REDIS_SERVICE).breaker)
        .map(drop)
        .map_err(|source| ConfigError::Service {
            key: format!("services.{REDIS_SERVICE}.breaker.{}", source.field()),
            message: source.problem().to_owned(),
        })
}

/// HELP texts of this module's metrics.
pub(crate) fn describe() {
    redis::describe();
    bus::describe();
}
