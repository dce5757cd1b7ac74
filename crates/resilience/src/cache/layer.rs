//! [`CacheLayer`]: builds the HTTP cache once, shares it with every service.

use std::fmt;
use std::hash::Hash;
use std::sync::Arc;

use tower_layer::Layer;

use super::body::HttpEntry;
use super::config::CacheConfig;
use super::handle::CacheHandle;
use super::service::CacheService;
use super::typed::Cache;
use crate::ConfigError;

/// Largest response body buffered and cached by default: 1 MiB.
pub const DEFAULT_MAX_BODY_BYTES: usize = 1024 * 1024;

/// Caches `200` responses to `GET` (served to `HEAD` too) under a key the
/// user's function derives from the request, and applies the
/// [`InvalidateTags`](super::InvalidateTags) of successful mutations.
///
/// The cache is created here, when the layer is built: every service made by
/// [`Layer::layer`] shares it.
pub struct CacheLayer<K, F> {
    shared: Arc<Shared<K, F>>,
}

pub(crate) struct Shared<K, F> {
    pub(crate) cache: Cache<K, HttpEntry>,
    pub(crate) key: F,
    pub(crate) max_body_bytes: usize,
}

impl<K, F> CacheLayer<K, F>
where
    K: Hash + Eq + Clone + Send + Sync + 'static,
{
    /// A layer caching under the keys `key` returns (`None`: don't cache this
    /// request). The key must hold everything the response depends on —
    /// for Boardroom, always the caller's tenant.
    pub fn new(
        name: impl Into<Arc<str>>,
        config: CacheConfig,
        key: F,
    ) -> Result<Self, ConfigError> {
        Self::with_max_body_bytes(name, config, key, DEFAULT_MAX_BODY_BYTES)
    }

    /// Like [`CacheLayer::new`], buffering bodies up to `max_body_bytes`
    /// (bigger ones stream through uncached).
    pub fn with_max_body_bytes(
        name: impl Into<Arc<str>>,
        config: CacheConfig,
        key: F,
        max_body_bytes: usize,
    ) -> Result<Self, ConfigError> {
        let cache = Cache::builder(name, config)
            .weigher(|_key, entry: &HttpEntry| entry.weight())
            .build()?;
        Ok(CacheLayer {
            shared: Arc::new(Shared {
                cache,
                key,
                max_body_bytes,
            }),
        })
    }

    /// The cache's handle (stats, invalidation, warm-up) for the registry.
    pub fn handle(&self) -> CacheHandle {
        self.shared.cache.handle()
    }
}

impl<K, F> Clone for CacheLayer<K, F> {
    fn clone(&self) -> Self {
        CacheLayer {
            shared: Arc::clone(&self.shared),
        }
    }
}

impl<K, F> fmt::Debug for CacheLayer<K, F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CacheLayer")
            .field("cache", &self.shared.cache)
            .field("max_body_bytes", &self.shared.max_body_bytes)
            .finish()
    }
}

impl<S, K, F> Layer<S> for CacheLayer<K, F> {
    type Service = CacheService<S, K, F>;

    fn layer(&self, inner: S) -> Self::Service {
        CacheService::new(inner, Arc::clone(&self.shared))
    }
}
