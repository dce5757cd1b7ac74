//! The typed cache for domain code: `get_or_load(key, tags, loader)`, with
//! tags, single flight, refresh-ahead, stale-if-error and warm-up.
//!
//! How the pieces fit:
//! - The store is a moka `sync::Cache<K, Arc<Entry<V>>>` (foldhash-hashed):
//!   its calls never wait on anything but short internal locks, and its `get`
//!   skips the future machinery of `future::Cache` (≈ 300 instructions a
//!   hit, measured). moka's own TTL is `ttl + stale_if_error` and only reclaims memory; freshness is judged from
//!   the times each entry carries, on the cache's clock (tokio time with
//!   the `test-util` feature, so tests can pause the clock). An expired
//!   entry stays in the store until its stale window ends, which is what
//!   stale-if-error serves from.
//! - The hit path is a read of the front table ([`super::front`]: a slot per
//!   key hash pointing at a hot entry, one lock-free load), one clock read,
//!   a counter increment and a clone of the value: no allocation, no lock,
//!   no tag work, no shared write but the counter's stripe and the value's
//!   clone. Otherwise (and for one front hit in 32 per thread, so moka's
//!   policy still sees hot keys used) it is one moka lookup, which offers
//!   the entry to the front table.
//! - A miss joins or starts one *flight* per key. The loader runs in its own
//!   task, so callers going away do not cancel it; every caller waits on a
//!   watch channel for its result.
//! - A load takes a [`Ticket`] (the tag index's epoch, its tags pinned) when it
//!   starts. When it ends it commits under the read side of the *fill gate*:
//!   check the ticket, index the key under its tags, insert into the store.
//!   Invalidations bump generations and take the tag's keys under the write
//!   side, so no invalidation can slip between the check, the indexing and the
//!   insert (the trap of indexing and inserting as two unguarded steps).

use std::collections::HashMap;
use std::future::Future;
use std::hash::Hash;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use futures_util::future::BoxFuture;
use moka::ops::compute::{CompResult, Op};
use parking_lot::Mutex;
use tokio::sync::{RwLock, watch};

use super::config::{CacheConfig, DEFAULT_MAX_ENTRIES};
use super::error::LoadError;
use super::front::{self, Front, Retirable};
use super::handle::{CacheHandle, CacheSnapshot, EvictionCounts, WarmResult};
use super::stats::Stats;
use super::tags::{FillId, Tag, TagIndex, Ticket};
use crate::BoxError;
use crate::ConfigError;
use crate::clock::Clock;

/// The store's key hasher: foldhash, seeded per cache (see the module doc).
type Hasher = foldhash::fast::RandomState;

/// A typed, tagged, single-flight cache (cheap to clone: an `Arc` inside).
///
/// Values are cloned out on every hit: wrap big values in an `Arc`.
/// See the [module documentation](super) for an example.
pub struct Cache<K, V> {
    inner: Arc<Inner<K, V>>,
}

impl<K, V> Clone for Cache<K, V> {
    fn clone(&self) -> Self {
        Cache {
            inner: Arc::clone(&self.inner),
        }
    }
}

impl<K, V> std::fmt::Debug for Cache<K, V> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cache")
            .field("name", &self.inner.name)
            .field("config", &self.inner.config)
            .finish_non_exhaustive()
    }
}

/// Weighs one entry for a `max_bytes` bound.
type Weigher<K, V> = Arc<dyn Fn(&K, &V) -> u32 + Send + Sync + 'static>;

/// A registered warm-up load.
type WarmupFn<K, V> =
    Arc<dyn Fn(Cache<K, V>) -> BoxFuture<'static, Result<(), BoxError>> + Send + Sync + 'static>;

/// A warm-up load and its name.
type Warmup<K, V> = (Arc<str>, WarmupFn<K, V>);

/// A user loader's future, turned into one the cache stores fresh.
type FreshLoad<Fut, V> =
    futures_util::future::MapOk<futures_util::future::ErrInto<Fut, BoxError>, fn(V) -> Loaded<V>>;

/// Builds a [`Cache`]; needed only to set a weigher.
pub struct CacheBuilder<K, V> {
    name: Arc<str>,
    config: CacheConfig,
    weigher: Option<Weigher<K, V>>,
}

impl<K, V> std::fmt::Debug for CacheBuilder<K, V> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CacheBuilder")
            .field("name", &self.name)
            .field("config", &self.config)
            .field("weigher", &self.weigher.is_some())
            .finish()
    }
}

/// Per-load options: the original `executeWithCache(key, fn, {ttl, tags,
/// refreshThreshold})`. Unset fields fall back to the cache's config.
#[derive(Clone, Copy, Debug, Default)]
pub struct LoadOptions<'a> {
    /// Tags to store the loaded value under.
    pub tags: &'a [&'a str],
    /// A shorter ttl for this value. It can shorten the cache's `ttl`, not
    /// lengthen it (the store's own expiry is set from the config); zero is
    /// ignored.
    pub ttl: Option<Duration>,
    /// This value's refresh-ahead threshold (between 0 and 1, exclusive;
    /// other values are ignored).
    pub refresh_threshold: Option<f64>,
}

impl<'a> LoadOptions<'a> {
    /// Options with these tags and the config's timings.
    pub fn tags(tags: &'a [&'a str]) -> Self {
        LoadOptions {
            tags,
            ..LoadOptions::default()
        }
    }
}

/// How long one stored value stays fresh, and when a hit refreshes it.
#[derive(Clone, Copy, Debug)]
struct Freshness {
    ttl: Duration,
    refresh_after: Option<Duration>,
}

/// One cached value and what the cache knows about it.
///
/// Aligned to a cache line so that, inside its `Arc`, the fields every hit
/// reads do not share a line with the reference counts every hit writes
/// (measured: a hot key read from two threads otherwise ping-pongs).
#[repr(align(64))]
pub(crate) struct Entry<V> {
    value: V,
    fill: FillId,
    tags: Box<[Tag]>,
    /// Nanoseconds of the cache's clock (see [`Inner::clock`]).
    fresh_until: u64,
    stale_until: u64,
    refresh_at: Option<u64>,
    /// Set by the first hit that starts a refresh-ahead: one refresh per entry.
    refreshing: AtomicBool,
    /// Set when moka replaces or evicts this entry: the front table no
    /// longer serves it (see [`super::front`]).
    retired: AtomicBool,
}

impl<V> Entry<V> {
    fn retire(&self) {
        self.retired.store(true, Ordering::Release);
    }
}

impl<V> Retirable for Entry<V> {
    fn is_retired(&self) -> bool {
        self.retired.load(Ordering::Acquire)
    }
}

/// What a loader hands back to the cache: the value and whether to keep it.
pub(crate) struct Loaded<V> {
    pub(crate) value: V,
    pub(crate) store: Store,
}

/// Whether a loaded value is stored.
pub(crate) enum Store {
    /// Store it, indexed under the load's tags plus these (learned from the
    /// value itself, e.g. a response's `CacheTags`).
    Fresh(Vec<Tag>),
    /// Hand it to the waiting callers but do not store it.
    Skip,
    /// The value describes a failure (an HTTP 5xx): serve a stale value
    /// instead when there is one, else this value; do not store it.
    Failed,
}

/// What a flight reports to its waiters.
#[derive(Clone)]
struct Landed<V> {
    value: V,
    failed: bool,
}

type FlightResult<V> = Result<Landed<V>, LoadError>;

struct Flight<V> {
    result: watch::Receiver<Option<FlightResult<V>>>,
    /// Set by `invalidate(key)`/`insert(key)` while the load runs: its value
    /// must not land as fresh.
    invalidated: AtomicBool,
}

struct Inner<K, V> {
    name: Arc<str>,
    config: CacheConfig,
    store: moka::sync::Cache<K, Arc<Entry<V>>, Hasher>,
    /// Hot entries, read before `store` (see [`super::front`]).
    front: Front<K, Entry<V>>,
    /// The time entries are stamped with and judged by.
    clock: Clock,
    index: Arc<Mutex<TagIndex<K>>>,
    stats: Arc<Stats>,
    flights: Mutex<HashMap<K, Arc<Flight<V>>>>,
    /// Read side: a load's check-index-insert. Write side: invalidations.
    gate: RwLock<()>,
    warmups: Mutex<Vec<Warmup<K, V>>>,
}

impl<K, V> CacheBuilder<K, V>
where
    K: Hash + Eq + Clone + Send + Sync + 'static,
    V: Clone + Send + Sync + 'static,
{
    /// Weigh entries for a `max_bytes` bound (by default every entry weighs
    /// `size_of::<(K, V)>()`, which only suits fixed-size values).
    pub fn weigher(mut self, weigher: impl Fn(&K, &V) -> u32 + Send + Sync + 'static) -> Self {
        self.weigher = Some(Arc::new(weigher));
        self
    }

    /// Validates the config and builds the cache.
    pub fn build(self) -> Result<Cache<K, V>, ConfigError> {
        let CacheBuilder {
            name,
            config,
            weigher,
        } = self;
        config.validate()?;
        let index: Arc<Mutex<TagIndex<K>>> = Arc::new(Mutex::new(TagIndex::new()));
        let stats = Arc::new(Stats::new(&name));
        let listener = {
            let index = Arc::clone(&index);
            let stats = Arc::clone(&stats);
            move |key: Arc<K>, entry: Arc<Entry<V>>, cause| {
                entry.retire();
                stats.evicted(cause);
                index.lock().remove(&*key, entry.fill, &entry.tags);
            }
        };
        let builder = moka::sync::Cache::builder()
            .name(&name)
            .time_to_live(config.retention())
            .eviction_listener(listener);
        let store = match (config.max_entries, config.max_bytes) {
            (_, Some(max_bytes)) => {
                let weigher = weigher.unwrap_or_else(|| {
                    Arc::new(|_: &K, _: &V| u32::try_from(size_of::<(K, V)>()).unwrap_or(u32::MAX))
                });
                builder
                    .max_capacity(max_bytes)
                    .weigher(move |key, entry: &Arc<Entry<V>>| weigher(key, &entry.value))
                    .build_with_hasher(Hasher::default())
            }
            (max_entries, None) => builder
                .max_capacity(max_entries.unwrap_or(DEFAULT_MAX_ENTRIES))
                .build_with_hasher(Hasher::default()),
        };
        Ok(Cache {
            inner: Arc::new(Inner {
                name,
                config,
                store,
                front: Front::new(),
                clock: Clock::new(),
                index,
                stats,
                flights: Mutex::new(HashMap::new()),
                gate: RwLock::new(()),
                warmups: Mutex::new(Vec::new()),
            }),
        })
    }
}

fn to_tags(tags: &[&str]) -> Box<[Tag]> {
    tags.iter().map(|tag| Tag::from(*tag)).collect()
}

impl<K, V> Cache<K, V>
where
    K: Hash + Eq + Clone + Send + Sync + 'static,
    V: Clone + Send + Sync + 'static,
{
    /// A cache named `name` (the `name` label of its metrics).
    pub fn new(name: impl Into<Arc<str>>, config: CacheConfig) -> Result<Self, ConfigError> {
        Self::builder(name, config).build()
    }

    /// A builder, to set a weigher before building.
    pub fn builder(name: impl Into<Arc<str>>, config: CacheConfig) -> CacheBuilder<K, V> {
        CacheBuilder {
            name: name.into(),
            config,
            weigher: None,
        }
    }

    /// The cache's name.
    pub fn name(&self) -> &str {
        &self.inner.name
    }

    /// The config the cache was built from.
    pub fn config(&self) -> &CacheConfig {
        &self.inner.config
    }

    /// The fresh value for `key`, or `loader`'s value.
    ///
    /// - A fresh hit returns a clone of the cached value. If the entry is
    ///   older than `refresh_threshold × ttl`, the first such hit also starts
    ///   one background refresh with this `loader`.
    /// - On a miss, concurrent callers of one key share one load; it runs in
    ///   its own task, so it completes even if every caller goes away. Its
    ///   value is stored under `tags` unless one of them (or the key, or the
    ///   whole cache) was invalidated while it ran: then it is returned to its
    ///   callers but not stored.
    /// - If the load fails and `stale_if_error` allows, the expired value is
    ///   returned instead of the error.
    pub async fn get_or_load<F, Fut, E>(
        &self,
        key: K,
        tags: &[&str],
        loader: F,
    ) -> Result<V, LoadError>
    where
        F: FnOnce() -> Fut + Send + 'static,
        Fut: Future<Output = Result<V, E>> + Send + 'static,
        E: Into<BoxError> + 'static,
    {
        self.fetch(key, LoadOptions::tags(tags), false, store_fresh(loader))
            .await
    }

    /// [`Cache::get_or_load`] with per-load options (ttl, refresh threshold).
    pub async fn get_or_load_with<F, Fut, E>(
        &self,
        key: K,
        options: LoadOptions<'_>,
        loader: F,
    ) -> Result<V, LoadError>
    where
        F: FnOnce() -> Fut + Send + 'static,
        Fut: Future<Output = Result<V, E>> + Send + 'static,
        E: Into<BoxError> + 'static,
    {
        self.fetch(key, options, false, store_fresh(loader)).await
    }

    /// Loads `key` now even if a fresh value is cached (joining a load already
    /// running for it), stores it under `tags` and returns it.
    pub async fn refresh<F, Fut, E>(&self, key: K, tags: &[&str], loader: F) -> Result<V, LoadError>
    where
        F: FnOnce() -> Fut + Send + 'static,
        Fut: Future<Output = Result<V, E>> + Send + 'static,
        E: Into<BoxError> + 'static,
    {
        self.fetch(key, LoadOptions::tags(tags), true, store_fresh(loader))
            .await
    }

    /// The machinery behind every read; `loader` says itself whether its
    /// value is stored.
    pub(crate) async fn fetch<F, Fut>(
        &self,
        key: K,
        options: LoadOptions<'_>,
        force: bool,
        loader: F,
    ) -> Result<V, LoadError>
    where
        F: FnOnce() -> Fut + Send + 'static,
        Fut: Future<Output = Result<Loaded<V>, BoxError>> + Send + 'static,
    {
        if !force {
            let (slot, epoch) = self.inner.front.read(&key);
            let stored;
            let entry = match Front::entry(&slot, &key, epoch) {
                Some(entry) if !front::touch_moka() => Some(entry),
                _ => {
                    stored = self.inner.store.get(&key);
                    stored.as_ref().map(|entry| {
                        self.inner.front.fill(&key, entry, epoch, &slot);
                        &**entry
                    })
                }
            };
            if let Some(entry) = entry {
                let now = self.inner.clock.now();
                if now < entry.fresh_until {
                    if let Some(refresh_at) = entry.refresh_at
                        && now >= refresh_at
                        && !entry.refreshing.load(Ordering::Relaxed)
                        && !entry.refreshing.swap(true, Ordering::AcqRel)
                        && self.start_flight(&key, options, loader, true).is_some()
                    {
                        self.inner.stats.refresh();
                    }
                    self.inner.stats.hit();
                    return Ok(entry.value.clone());
                }
            }
        }
        self.load(key, options, loader).await
    }

    /// A miss: wait for the key's flight (starting it if needed).
    async fn load<F, Fut>(
        &self,
        key: K,
        options: LoadOptions<'_>,
        loader: F,
    ) -> Result<V, LoadError>
    where
        F: FnOnce() -> Fut + Send + 'static,
        Fut: Future<Output = Result<Loaded<V>, BoxError>> + Send + 'static,
    {
        let Some(mut result) = self.start_flight(&key, options, loader, false) else {
            // start_flight only declines for refreshes.
            return Err(LoadError::panicked(Arc::clone(&self.inner.name)));
        };
        let landed = match result.wait_for(Option::is_some).await {
            Ok(value) => value.clone(),
            Err(_) => None,
        }
        .unwrap_or_else(|| Err(LoadError::panicked(Arc::clone(&self.inner.name))));
        let stats = &self.inner.stats;
        match landed {
            Ok(Landed {
                value,
                failed: false,
            }) => {
                stats.miss();
                Ok(value)
            }
            Ok(Landed {
                value,
                failed: true,
            }) => match self.stale_value(&key).await {
                Some(stale) => {
                    stats.stale();
                    Ok(stale)
                }
                None => {
                    stats.miss();
                    Ok(value)
                }
            },
            Err(error) => match self.stale_value(&key).await {
                Some(stale) => {
                    stats.stale();
                    Ok(stale)
                }
                None => {
                    stats.miss();
                    Err(error)
                }
            },
        }
    }

    /// Joins the running flight for `key` or starts one. A refresh does not
    /// join: it returns `None` when a load is already running.
    fn start_flight<F, Fut>(
        &self,
        key: &K,
        options: LoadOptions<'_>,
        loader: F,
        refresh: bool,
    ) -> Option<watch::Receiver<Option<FlightResult<V>>>>
    where
        F: FnOnce() -> Fut + Send + 'static,
        Fut: Future<Output = Result<Loaded<V>, BoxError>> + Send + 'static,
    {
        let (sender, flight) = {
            let mut flights = self.inner.flights.lock();
            if let Some(flight) = flights.get(key) {
                return (!refresh).then(|| flight.result.clone());
            }
            let (sender, receiver) = watch::channel(None);
            let flight = Arc::new(Flight {
                result: receiver,
                invalidated: AtomicBool::new(false),
            });
            flights.insert(key.clone(), Arc::clone(&flight));
            (sender, flight)
        };
        let receiver = flight.result.clone();
        let ticket = self.inner.index.lock().begin(to_tags(options.tags));
        let guard = FlightGuard {
            freshness: self.inner.freshness(&options),
            inner: Arc::clone(&self.inner),
            key: key.clone(),
            flight,
            ticket,
        };
        tokio::spawn(run_flight(guard, sender, loader));
        Some(receiver)
    }

    /// The cached value for `key` if it may be served stale now.
    async fn stale_value(&self, key: &K) -> Option<V> {
        self.inner.config.stale_if_error?;
        let entry = self.inner.store.get(key)?;
        (self.inner.clock.now() < entry.stale_until).then(|| entry.value.clone())
    }

    /// The fresh value for `key`, if any (counted as a hit or a miss).
    pub async fn get(&self, key: &K) -> Option<V> {
        let (slot, epoch) = self.inner.front.read(key);
        let stored;
        let entry = match Front::entry(&slot, key, epoch) {
            Some(entry) if !front::touch_moka() => Some(entry),
            _ => {
                stored = self.inner.store.get(key);
                stored.as_ref().map(|entry| {
                    self.inner.front.fill(key, entry, epoch, &slot);
                    &**entry
                })
            }
        };
        match entry.filter(|entry| self.inner.clock.now() < entry.fresh_until) {
            Some(entry) => {
                self.inner.stats.hit();
                Some(entry.value.clone())
            }
            None => {
                self.inner.stats.miss();
                None
            }
        }
    }

    /// Stores `value` under `key` and `tags`, fresh from now. A load of `key`
    /// running meanwhile will not overwrite it.
    pub async fn insert(&self, key: K, value: V, tags: &[&str]) {
        let _gate = self.inner.gate.write().await;
        if let Some(flight) = self.inner.flights.lock().get(&key) {
            flight.invalidated.store(true, Ordering::Release);
        }
        let tags = to_tags(tags);
        let fill = self.inner.index.lock().index(&key, &tags);
        let freshness = self.inner.freshness(&LoadOptions::default());
        let entry = self.inner.new_entry(value, fill, tags, freshness);
        self.inner.replace(key, entry);
        self.inner.stats.set_entries(self.inner.store.entry_count());
    }

    /// Removes `key`; a load of it running meanwhile will not store its value.
    pub async fn invalidate(&self, key: &K) {
        {
            let _gate = self.inner.gate.write().await;
            if let Some(flight) = self.inner.flights.lock().get(key) {
                flight.invalidated.store(true, Ordering::Release);
            }
        }
        if let Some(entry) = self.inner.store.remove(key) {
            entry.retire();
        }
        self.inner.front.invalidate();
    }

    /// Removes every entry tagged `tag` and returns how many were removed;
    /// loads that named `tag` and are running meanwhile will not store their
    /// values. Costs O(entries with that tag).
    pub async fn invalidate_tag(&self, tag: &str) -> u64 {
        let keys = {
            let _gate = self.inner.gate.write().await;
            self.inner.index.lock().invalidate_tag(tag)
        };
        let mut removed = 0;
        for (key, fill) in keys {
            // Remove only the very fill that was indexed: a newer one (loaded
            // after this invalidation) stays.
            let result = self
                .inner
                .store
                .entry(key)
                .and_compute_with(|current| match current {
                    Some(entry) if entry.value().fill == fill => Op::Remove,
                    _ => Op::Nop,
                });
            if let CompResult::Removed(entry) = result {
                entry.value().retire();
                removed += 1;
            }
        }
        // After the removals: no front slot filled before them serves again.
        self.inner.front.invalidate();
        self.inner.stats.set_entries(self.inner.store.entry_count());
        removed
    }

    /// Removes every entry; loads running meanwhile will not store their values.
    pub async fn invalidate_all(&self) {
        let _gate = self.inner.gate.write().await;
        self.inner.index.lock().invalidate_all();
        self.inner.store.invalidate_all();
        self.inner.front.invalidate();
        self.inner.front.clear();
    }

    /// Registers a warm-up load, run by [`Cache::warm`]. It receives the
    /// cache and fills it (typically with [`Cache::refresh`] or
    /// [`Cache::insert`]).
    pub fn add_warmup<F, Fut, E>(&self, name: impl Into<Arc<str>>, warmup: F)
    where
        F: Fn(Cache<K, V>) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<(), E>> + Send + 'static,
        E: Into<BoxError> + 'static,
    {
        let run: WarmupFn<K, V> = Arc::new(move |cache| {
            let load = warmup(cache);
            Box::pin(async move { load.await.map_err(Into::into) })
        });
        self.inner.warmups.lock().push((name.into(), run));
    }

    /// Runs every registered warm-up load concurrently (at start, and on
    /// demand) and reports how each went.
    pub async fn warm(&self) -> Vec<WarmResult> {
        let warmups = self.inner.warmups.lock().clone();
        let runs = warmups.into_iter().map(|(name, run)| {
            let load = run(self.clone());
            async move {
                let error = load.await.err().map(|error| error.to_string());
                if let Some(error) = &error {
                    tracing::warn!(cache = %self.inner.name, warmup = %name, %error, "cache warm-up failed");
                }
                WarmResult {
                    name: name.to_string(),
                    error,
                }
            }
        });
        futures_util::future::join_all(runs).await
    }

    /// Runs moka's pending maintenance (evictions, expirations and their
    /// notifications) now instead of lazily.
    pub async fn run_pending_tasks(&self) {
        self.inner.store.run_pending_tasks();
        self.inner.stats.set_entries(self.inner.store.entry_count());
    }

    /// Entries held (approximate until [`Cache::run_pending_tasks`]).
    pub fn entry_count(&self) -> u64 {
        self.inner.store.entry_count()
    }

    /// Number of (tag, key) pairs in the tag index. Bounded by the entries
    /// held times their tags.
    pub fn tag_index_len(&self) -> usize {
        self.inner.index.lock().indexed_keys()
    }

    /// Counters and sizes at this moment.
    pub fn snapshot(&self) -> CacheSnapshot {
        let counts = self.inner.stats.counts();
        let entries = self.inner.store.entry_count();
        self.inner.stats.set_entries(entries);
        let (tags, tagged_keys) = {
            let index = self.inner.index.lock();
            (index.tag_count(), index.indexed_keys())
        };
        let lookups = counts.hits + counts.misses + counts.stale;
        CacheSnapshot {
            name: self.inner.name.to_string(),
            entries,
            weighted_size: self.inner.store.weighted_size(),
            hits: counts.hits,
            misses: counts.misses,
            stale: counts.stale,
            hit_rate: if lookups == 0 {
                0.0
            } else {
                counts.hits as f64 / lookups as f64
            },
            loads_success: counts.loads_ok,
            loads_failure: counts.loads_failed,
            loads_dropped: counts.loads_dropped,
            refreshes: counts.refreshes,
            evictions: EvictionCounts {
                expired: counts.evicted_expired,
                size: counts.evicted_size,
                explicit: counts.evicted_explicit,
                replaced: counts.evicted_replaced,
            },
            tags: tags as u64,
            tagged_keys: tagged_keys as u64,
            in_flight: self.inner.flights.lock().len() as u64,
        }
    }

    /// The type-erased face of this cache, for the registry and admin routes.
    pub fn handle(&self) -> CacheHandle {
        CacheHandle::new(self.clone())
    }
}

/// Wraps a user loader: its value is stored fresh under the load's tags.
fn store_fresh<V, F, Fut, E>(loader: F) -> impl FnOnce() -> FreshLoad<Fut, V>
where
    F: FnOnce() -> Fut,
    Fut: Future<Output = Result<V, E>>,
    E: Into<BoxError>,
{
    use futures_util::TryFutureExt;
    move || {
        let fresh: fn(V) -> Loaded<V> = |value| Loaded {
            value,
            store: Store::Fresh(Vec::new()),
        };
        loader().err_into::<BoxError>().map_ok(fresh)
    }
}

impl<K, V> Inner<K, V>
where
    K: Hash + Eq + Clone + Send + Sync + 'static,
    V: Clone + Send + Sync + 'static,
{
    /// The config's timings, overridden by a load's valid options.
    fn freshness(&self, options: &LoadOptions<'_>) -> Freshness {
        let ttl = options
            .ttl
            .filter(|ttl| !ttl.is_zero())
            .map_or(self.config.ttl, |ttl| ttl.min(self.config.ttl));
        let threshold = options
            .refresh_threshold
            .filter(|threshold| *threshold > 0.0 && *threshold < 1.0)
            .or(self.config.refresh_threshold);
        Freshness {
            ttl,
            refresh_after: threshold.map(|threshold| ttl.mul_f64(threshold)),
        }
    }

    fn new_entry(
        &self,
        value: V,
        fill: FillId,
        tags: Box<[Tag]>,
        freshness: Freshness,
    ) -> Arc<Entry<V>> {
        let now = self.clock.now();
        let nanos = |d: Duration| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX);
        let fresh_until = now.saturating_add(nanos(freshness.ttl));
        let stale_if_error = self.config.stale_if_error.unwrap_or(Duration::ZERO);
        Arc::new(Entry {
            value,
            fill,
            tags,
            fresh_until,
            stale_until: fresh_until.saturating_add(nanos(stale_if_error)),
            refresh_at: freshness
                .refresh_after
                .map(|after| now.saturating_add(nanos(after))),
            refreshing: AtomicBool::new(false),
            retired: AtomicBool::new(false),
        })
    }

    /// Stores a loaded value unless something it depends on was invalidated
    /// since its load started. The check, the indexing and the insert happen
    /// under the read side of the gate, so no invalidation falls between them.
    async fn commit(&self, guard: &FlightGuard<K, V>, value: V, late_tags: Vec<Tag>) {
        let FlightGuard {
            key,
            flight,
            ticket,
            freshness,
            ..
        } = guard;
        let _gate = self.gate.read().await;
        let entry = {
            let mut index = self.index.lock();
            if flight.invalidated.load(Ordering::Acquire) || !index.is_current(ticket, &late_tags) {
                drop(index);
                self.stats.dropped();
                return;
            }
            let mut tags = ticket.tags().to_vec();
            for tag in late_tags {
                if !tags.contains(&tag) {
                    tags.push(tag);
                }
            }
            let tags = tags.into_boxed_slice();
            let fill = index.index(key, &tags);
            drop(index);
            self.new_entry(value, fill, tags, *freshness)
        };
        self.replace(key.clone(), entry);
        self.stats.set_entries(self.store.entry_count());
    }

    /// Stores `entry` under `key`, retiring the entry it replaces inside
    /// moka's per-key compute, so the front table stops serving that one.
    fn replace(&self, key: K, entry: Arc<Entry<V>>) {
        self.store.entry(key).and_upsert_with(|old| {
            if let Some(old) = old {
                old.value().retire();
            }
            entry
        });
    }
}

/// Owns a running flight's registration: dropping it (when the load ends, or
/// if the loader panics) unregisters the flight and unpins its tags.
struct FlightGuard<K: Hash + Eq + Clone, V> {
    inner: Arc<Inner<K, V>>,
    key: K,
    flight: Arc<Flight<V>>,
    ticket: Ticket,
    freshness: Freshness,
}

impl<K: Hash + Eq + Clone, V> Drop for FlightGuard<K, V> {
    fn drop(&mut self) {
        {
            let mut flights = self.inner.flights.lock();
            if flights
                .get(&self.key)
                .is_some_and(|flight| Arc::ptr_eq(flight, &self.flight))
            {
                flights.remove(&self.key);
            }
        }
        self.inner.index.lock().end(&self.ticket);
    }
}

/// The detached task of one load.
async fn run_flight<K, V, F, Fut>(
    guard: FlightGuard<K, V>,
    sender: watch::Sender<Option<FlightResult<V>>>,
    loader: F,
) where
    K: Hash + Eq + Clone + Send + Sync + 'static,
    V: Clone + Send + Sync + 'static,
    F: FnOnce() -> Fut + Send + 'static,
    Fut: Future<Output = Result<Loaded<V>, BoxError>> + Send + 'static,
{
    let inner = &guard.inner;
    let landed = match loader().await {
        Ok(Loaded { value, store }) => match store {
            Store::Fresh(late_tags) => {
                inner.stats.load(true);
                inner.commit(&guard, value.clone(), late_tags).await;
                Ok(Landed {
                    value,
                    failed: false,
                })
            }
            Store::Skip => {
                inner.stats.load(true);
                Ok(Landed {
                    value,
                    failed: false,
                })
            }
            Store::Failed => {
                inner.stats.load(false);
                Ok(Landed {
                    value,
                    failed: true,
                })
            }
        },
        Err(error) => {
            inner.stats.load(false);
            Err(LoadError::loader(Arc::clone(&inner.name), error))
        }
    };
    // Unregister before publishing: a caller arriving now finds the stored
    // value (or starts a new load), never a finished flight.
    drop(guard);
    sender.send_replace(Some(landed));
}

/// Lets the type-erased handle reach a typed cache.
pub(crate) trait ErasedCache: Send + Sync + 'static {
    fn name(&self) -> &str;
    fn snapshot(&self) -> CacheSnapshot;
    fn invalidate_tag<'a>(&'a self, tag: &'a str) -> BoxFuture<'a, u64>;
    fn invalidate_all(&self) -> BoxFuture<'_, ()>;
    fn warm(&self) -> BoxFuture<'_, Vec<WarmResult>>;
}

impl<K, V> ErasedCache for Cache<K, V>
where
    K: Hash + Eq + Clone + Send + Sync + 'static,
    V: Clone + Send + Sync + 'static,
{
    fn name(&self) -> &str {
        Cache::name(self)
    }

    fn snapshot(&self) -> CacheSnapshot {
        Cache::snapshot(self)
    }

    fn invalidate_tag<'a>(&'a self, tag: &'a str) -> BoxFuture<'a, u64> {
        Box::pin(Cache::invalidate_tag(self, tag))
    }

    fn invalidate_all(&self) -> BoxFuture<'_, ()> {
        Box::pin(Cache::invalidate_all(self))
    }

    fn warm(&self) -> BoxFuture<'_, Vec<WarmResult>> {
        Box::pin(Cache::warm(self))
    }
}
