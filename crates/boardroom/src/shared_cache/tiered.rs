//! [`TieredCache`]: the resilience crate's typed cache (L1) with the Redis
//! second level (L2) behind its loader.
//!
//! The L1 is untouched: a hit never reaches this module's code beyond one
//! branch. On an L1 miss, the L1's single flight runs the wrapped loader:
//! 1. look the key up in L2 (one round trip: the value, or the epoch and
//!    the generations of the load's tags);
//! 2. on an L2 hit, decode and return it (the L1 stores it under its tags);
//! 3. otherwise run the real loader (the database) and write its value back
//!    to L2 in the background, guarded by the stamp read in step 1, so a
//!    load that raced an invalidation is never written.
//!
//! Redis unavailable (breaker open, timeout, error) or an undecodable value
//! → step 3 without the write: L1 and the database only.
//!
//! **Serialization: JSON** (serde_json). The values are the API's own types
//! (`User`, with timestamps and enums), so JSON costs no extra code; it is
//! self-describing, so during a rolling deploy an instance reading an entry
//! written by another version tolerates an added optional field (a
//! positional format such as postcard or bincode would misread it); and an
//! operator can read entries with `redis-cli`. A profile is ≈ 400 bytes.
//!
//! **TTLs**: L2 entries live the cache's `ttl`; an L1 entry filled from L2
//! lives `ttl` in that L1. Without any invalidation a value can therefore be
//! served at most `2 × ttl` after it was read from the database; with one
//! (every mutation invalidates) both levels drop it at once.

use std::{hash::Hash, sync::Arc, time::Duration};

use resilience::{
    BoxError,
    cache::{Cache, LoadError},
};
use serde::{Serialize, de::DeserializeOwned};
use uuid::Uuid;

use super::{SharedCache, redis::Lookup, redis::RedisL2};

/// How a cache key is written in Redis.
pub trait L2Key {
    /// The key's text (unique per key within one cache).
    fn l2_key(&self) -> String;
}

impl L2Key for Uuid {
    fn l2_key(&self) -> String {
        self.to_string()
    }
}

impl L2Key for (Option<Uuid>, Uuid) {
    fn l2_key(&self) -> String {
        match self.0 {
            Some(scope) => format!("{scope}:{}", self.1),
            None => format!("operator:{}", self.1),
        }
    }
}

/// An L1 cache with an optional Redis second level. Cheap to clone.
pub struct TieredCache<K, V> {
    l1: Cache<K, V>,
    l2: Option<Arc<Second>>,
}

impl<K, V> Clone for TieredCache<K, V> {
    fn clone(&self) -> Self {
        Self {
            l1: self.l1.clone(),
            l2: self.l2.clone(),
        }
    }
}

impl<K, V> std::fmt::Debug for TieredCache<K, V> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TieredCache")
            .field("l1", &self.l1)
            .field("l2", &self.l2.is_some())
            .finish()
    }
}

/// The L2 part of one cache.
struct Second {
    redis: RedisL2,
    name: Arc<str>,
    ttl: Duration,
}

impl<K, V> TieredCache<K, V>
where
    K: Hash + Eq + Clone + Send + Sync + L2Key + 'static,
    V: Clone + Send + Sync + Serialize + DeserializeOwned + 'static,
{
    /// `l1` backed by `shared`'s L2 (when enabled), whose entries live `ttl`.
    pub fn new(l1: Cache<K, V>, shared: &SharedCache, ttl: Duration) -> Self {
        let l2 = shared.l2().map(|redis| {
            let name: Arc<str> = l1.name().into();
            shared.register_l2_cache(Arc::clone(&name));
            Arc::new(Second {
                redis: redis.clone(),
                name,
                ttl,
            })
        });
        Self { l1, l2 }
    }

    /// The in-process level.
    pub fn l1(&self) -> &Cache<K, V> {
        &self.l1
    }

    /// The fresh value for `key` from L1, else L2, else `loader` (see the
    /// module documentation); stored under `tags` in both levels.
    pub async fn get_or_load<F, Fut, E>(
        &self,
        key: K,
        tags: Vec<String>,
        loader: F,
    ) -> Result<V, LoadError>
    where
        F: FnOnce() -> Fut + Send + 'static,
        Fut: Future<Output = Result<V, E>> + Send + 'static,
        E: Into<BoxError> + 'static,
    {
        let Some(second) = &self.l2 else {
            let refs: Vec<&str> = tags.iter().map(String::as_str).collect();
            return self.l1.get_or_load(key, &refs, loader).await;
        };
        // One allocation more than L1 alone: the tags shared with the loader.
        let tags: Arc<[String]> = tags.into();
        let refs: Vec<&str> = tags.iter().map(String::as_str).collect();
        let second = Arc::clone(second);
        let load_key = key.clone();
        let load_tags = Arc::clone(&tags);
        self.l1
            .get_or_load(key, &refs, move || {
                through_l2(second, load_key, load_tags, loader)
            })
            .await
    }
}

/// The L1 loader: L2, then the real loader with a guarded write-back.
async fn through_l2<K, V, F, Fut, E>(
    second: Arc<Second>,
    key: K,
    tags: Arc<[String]>,
    loader: F,
) -> Result<V, BoxError>
where
    K: L2Key,
    V: Serialize + DeserializeOwned + Send + 'static,
    F: FnOnce() -> Fut,
    Fut: Future<Output = Result<V, E>>,
    E: Into<BoxError>,
{
    let key = key.l2_key();
    let stamp = match second.redis.lookup(&second.name, &key, &tags).await {
        Some(Lookup::Hit(bytes)) => match serde_json::from_slice::<V>(&bytes) {
            Ok(value) => return Ok(value),
            Err(error) => {
                // Written by an incompatible version: load, do not overwrite.
                tracing::warn!(%error, cache = %second.name, "cache L2: undecodable entry; loading");
                None
            }
        },
        Some(Lookup::Miss(stamp)) => Some(stamp),
        None => None,
    };
    let value = match loader().await {
        Ok(value) => value,
        Err(error) => return Err(error.into()),
    };
    if let Some(stamp) = stamp {
        match serde_json::to_vec(&value) {
            Ok(bytes) => {
                tokio::spawn(async move {
                    second
                        .redis
                        .store(&second.name, &key, &tags, stamp, bytes, second.ttl)
                        .await;
                });
            }
            Err(error) => {
                tracing::warn!(%error, cache = %second.name, "cache L2: cannot encode a value")
            }
        }
    }
    Ok(value)
}
