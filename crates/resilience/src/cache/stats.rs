//! Counters of one cache: in-process atomics for snapshots and Prometheus
//! handles (created once, at build time) for scraping.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

use metrics::{Counter, Gauge};
use moka::notification::RemovalCause;

/// Prometheus and in-process counters of one cache.
pub(crate) struct Stats {
    hits: Tally,
    misses: Tally,
    stale: Tally,
    loads_ok: Tally,
    loads_failed: Tally,
    loads_dropped: AtomicU64,
    refreshes: Tally,
    evicted_expired: Tally,
    evicted_size: Tally,
    evicted_explicit: Tally,
    evicted_replaced: Tally,
    entries: Gauge,
}

/// One counter, kept twice: an atomic for snapshots, a metrics handle for
/// Prometheus (a no-op when no recorder is installed).
struct Tally {
    count: AtomicU64,
    counter: Counter,
}

impl Tally {
    fn new(counter: Counter) -> Self {
        Tally {
            count: AtomicU64::new(0),
            counter,
        }
    }

    #[inline]
    fn add(&self) {
        self.count.fetch_add(1, Relaxed);
        self.counter.increment(1);
    }

    fn get(&self) -> u64 {
        self.count.load(Relaxed)
    }
}

/// Counter values at one moment.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct Counts {
    pub(crate) hits: u64,
    pub(crate) misses: u64,
    pub(crate) stale: u64,
    pub(crate) loads_ok: u64,
    pub(crate) loads_failed: u64,
    pub(crate) loads_dropped: u64,
    pub(crate) refreshes: u64,
    pub(crate) evicted_expired: u64,
    pub(crate) evicted_size: u64,
    pub(crate) evicted_explicit: u64,
    pub(crate) evicted_replaced: u64,
}

const REQUESTS: &str = "resilience_cache_requests_total";
const LOADS: &str = "resilience_cache_loads_total";
const EVICTIONS: &str = "resilience_cache_evictions_total";
const REFRESHES: &str = "resilience_cache_refreshes_total";
const ENTRIES: &str = "resilience_cache_entries";

/// HELP texts for the cache's metrics.
#[allow(
    dead_code,
    reason = "called through cache::describe by crate::metrics::describe_all"
)]
pub(crate) fn describe() {
    metrics::describe_counter!(
        REQUESTS,
        "Cache lookups by result: hit (fresh), miss (loaded or failed), stale (expired value served because the load failed)"
    );
    metrics::describe_counter!(LOADS, "Cache loads by outcome (success|failure)");
    metrics::describe_counter!(
        EVICTIONS,
        "Entries removed from the cache by cause (expired|size|explicit|replaced)"
    );
    metrics::describe_counter!(REFRESHES, "Background refresh-ahead loads started");
    metrics::describe_gauge!(ENTRIES, "Entries held by the cache (approximate)");
}

impl Stats {
    pub(crate) fn new(name: &str) -> Self {
        let requests = |result: &'static str| {
            Tally::new(metrics::counter!(REQUESTS, "name" => name.to_owned(), "result" => result))
        };
        let loads = |outcome: &'static str| {
            Tally::new(metrics::counter!(LOADS, "name" => name.to_owned(), "outcome" => outcome))
        };
        let evictions = |cause: &'static str| {
            Tally::new(metrics::counter!(EVICTIONS, "name" => name.to_owned(), "cause" => cause))
        };
        Stats {
            hits: requests("hit"),
            misses: requests("miss"),
            stale: requests("stale"),
            loads_ok: loads("success"),
            loads_failed: loads("failure"),
            loads_dropped: AtomicU64::new(0),
            refreshes: Tally::new(metrics::counter!(REFRESHES, "name" => name.to_owned())),
            evicted_expired: evictions("expired"),
            evicted_size: evictions("size"),
            evicted_explicit: evictions("explicit"),
            evicted_replaced: evictions("replaced"),
            entries: metrics::gauge!(ENTRIES, "name" => name.to_owned()),
        }
    }

    #[inline]
    pub(crate) fn hit(&self) {
        self.hits.add();
    }

    pub(crate) fn miss(&self) {
        self.misses.add();
    }

    pub(crate) fn stale(&self) {
        self.stale.add();
    }

    pub(crate) fn load(&self, ok: bool) {
        if ok {
            self.loads_ok.add();
        } else {
            self.loads_failed.add();
        }
    }

    /// A load finished after an invalidation it depended on: not stored.
    pub(crate) fn dropped(&self) {
        self.loads_dropped.fetch_add(1, Relaxed);
    }

    pub(crate) fn refresh(&self) {
        self.refreshes.add();
    }

    pub(crate) fn evicted(&self, cause: RemovalCause) {
        match cause {
            RemovalCause::Expired => self.evicted_expired.add(),
            RemovalCause::Size => self.evicted_size.add(),
            RemovalCause::Explicit => self.evicted_explicit.add(),
            RemovalCause::Replaced => self.evicted_replaced.add(),
        }
    }

    pub(crate) fn set_entries(&self, entries: u64) {
        self.entries.set(entries as f64);
    }

    pub(crate) fn counts(&self) -> Counts {
        Counts {
            hits: self.hits.get(),
            misses: self.misses.get(),
            stale: self.stale.get(),
            loads_ok: self.loads_ok.get(),
            loads_failed: self.loads_failed.get(),
            loads_dropped: self.loads_dropped.load(Relaxed),
            refreshes: self.refreshes.get(),
            evicted_expired: self.evicted_expired.get(),
            evicted_size: self.evicted_size.get(),
            evicted_explicit: self.evicted_explicit.get(),
            evicted_replaced: self.evicted_replaced.get(),
        }
    }
}
