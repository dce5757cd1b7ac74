//! The type-erased face of a cache for the registry, `/admin/stats` and
//! operator actions: stats, invalidation and warm-up without knowing `K`/`V`.

use std::fmt;
use std::sync::Arc;

use serde::Serialize;

use super::typed::ErasedCache;

/// A cloneable handle to one cache, whatever its key and value types.
#[derive(Clone)]
pub struct CacheHandle {
    cache: Arc<dyn ErasedCache>,
}

impl CacheHandle {
    pub(crate) fn new(cache: impl ErasedCache) -> Self {
        CacheHandle {
            cache: Arc::new(cache),
        }
    }

    /// The cache's name.
    pub fn name(&self) -> &str {
        self.cache.name()
    }

    /// Counters and sizes at this moment.
    pub fn snapshot(&self) -> CacheSnapshot {
        self.cache.snapshot()
    }

    /// Removes every entry tagged `tag`; returns how many were removed.
    pub async fn invalidate_tag(&self, tag: &str) -> u64 {
        self.cache.invalidate_tag(tag).await
    }

    /// Removes every entry.
    pub async fn invalidate_all(&self) {
        self.cache.invalidate_all().await
    }

    /// Runs the cache's registered warm-up loads.
    pub async fn warm(&self) -> Vec<WarmResult> {
        self.cache.warm().await
    }
}

impl fmt::Debug for CacheHandle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CacheHandle")
            .field("name", &self.name())
            .finish()
    }
}

/// A cache's counters and sizes at one moment.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct CacheSnapshot {
    /// The cache's name.
    pub name: String,
    /// Entries held, fresh or kept for stale-if-error (approximate).
    pub entries: u64,
    /// Sum of the entries' weights (equals `entries` without a weigher).
    pub weighted_size: u64,
    /// Lookups answered with a fresh value.
    pub hits: u64,
    /// Lookups that loaded (or failed to load) a value.
    pub misses: u64,
    /// Lookups answered with an expired value because the load failed.
    pub stale: u64,
    /// `hits / (hits + misses + stale)`; 0 before the first lookup.
    pub hit_rate: f64,
    /// Loads that returned a value.
    pub loads_success: u64,
    /// Loads that failed (or returned a failure response).
    pub loads_failure: u64,
    /// Successful loads not stored because an invalidation raced them.
    pub loads_dropped: u64,
    /// Background refresh-ahead loads started.
    pub refreshes: u64,
    /// Entries removed, by cause.
    pub evictions: EvictionCounts,
    /// Tags in the tag index.
    pub tags: u64,
    /// (tag, key) pairs in the tag index.
    pub tagged_keys: u64,
    /// Loads running now.
    pub in_flight: u64,
}

/// Entries removed from a cache, by cause.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct EvictionCounts {
    /// Past their stale window (or their ttl without `stale_if_error`).
    pub expired: u64,
    /// Pushed out (or not admitted) by the size bound.
    pub size: u64,
    /// Invalidated (by key, tag or all).
    pub explicit: u64,
    /// Replaced by a newer value of the same key.
    pub replaced: u64,
}

/// How one warm-up load went.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct WarmResult {
    /// The warm-up's registered name.
    pub name: String,
    /// Its error, if it failed.
    pub error: Option<String>,
}
