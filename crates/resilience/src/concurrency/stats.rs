//! Prometheus series and in-process statistics of a concurrency limit.

use std::{
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::Duration,
};

use metrics::{Counter, Gauge, Histogram};
use serde::Serialize;

pub(super) const IN_FLIGHT: &str = "resilience_concurrency_in_flight";
pub(super) const QUEUED: &str = "resilience_concurrency_queued";
pub(super) const LIMIT: &str = "resilience_concurrency_limit";
pub(super) const ADMITTED: &str = "resilience_concurrency_admitted_total";
pub(super) const REJECTED: &str = "resilience_concurrency_rejected_total";
pub(super) const WAIT: &str = "resilience_concurrency_wait_seconds";

/// Metric handles, looked up once when the layer is built.
pub(crate) struct Metrics {
    pub(crate) in_flight: Gauge,
    pub(crate) queued: Gauge,
    pub(crate) limit: Gauge,
    pub(crate) admitted: Counter,
    pub(crate) rejected_queue_full: Counter,
    pub(crate) rejected_queue_timeout: Counter,
    pub(crate) wait: Histogram,
}

impl Metrics {
    pub(crate) fn new(name: &Arc<str>) -> Self {
        let name = Arc::clone(name);
        Self {
            in_flight: metrics::gauge!(IN_FLIGHT, "name" => Arc::clone(&name)),
            queued: metrics::gauge!(QUEUED, "name" => Arc::clone(&name)),
            limit: metrics::gauge!(LIMIT, "name" => Arc::clone(&name)),
            admitted: metrics::counter!(ADMITTED, "name" => Arc::clone(&name)),
            rejected_queue_full: metrics::counter!(
                REJECTED, "name" => Arc::clone(&name), "reason" => "queue_full"
            ),
            rejected_queue_timeout: metrics::counter!(
                REJECTED, "name" => Arc::clone(&name), "reason" => "queue_timeout"
            ),
            wait: metrics::histogram!(WAIT, "name" => name),
        }
    }
}

/// Upper bounds of the in-process wait histogram, in milliseconds.
const WAIT_BOUNDS_MS: [u64; 12] = [1, 5, 10, 25, 50, 100, 250, 500, 1_000, 2_500, 5_000, 10_000];

/// Lock-free wait-time histogram for `snapshot()`.
#[derive(Default)]
pub(crate) struct WaitHistogram {
    /// One counter per bound, then one for "above the last bound".
    buckets: [AtomicU64; WAIT_BOUNDS_MS.len() + 1],
    sum_micros: AtomicU64,
}

impl WaitHistogram {
    pub(crate) fn record(&self, waited: Duration) {
        let ms = waited.as_secs_f64() * 1_000.0;
        let index = WAIT_BOUNDS_MS
            .iter()
            .position(|&bound| ms <= bound as f64)
            .unwrap_or(WAIT_BOUNDS_MS.len());
        self.buckets[index].fetch_add(1, Ordering::Relaxed);
        let micros = u64::try_from(waited.as_micros()).unwrap_or(u64::MAX);
        self.sum_micros.fetch_add(micros, Ordering::Relaxed);
    }

    pub(crate) fn snapshot(&self) -> WaitSnapshot {
        let mut cumulative = 0;
        let buckets = self
            .buckets
            .iter()
            .enumerate()
            .map(|(index, count)| {
                cumulative += count.load(Ordering::Relaxed);
                WaitBucket {
                    le_seconds: WAIT_BOUNDS_MS.get(index).map(|&ms| ms as f64 / 1_000.0),
                    count: cumulative,
                }
            })
            .collect();
        WaitSnapshot {
            count: cumulative,
            sum_seconds: self.sum_micros.load(Ordering::Relaxed) as f64 / 1e6,
            buckets,
        }
    }
}

/// Wait times of the calls that had to queue.
#[derive(Clone, Debug, Serialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct WaitSnapshot {
    /// How many calls waited.
    pub count: u64,
    /// Their total wait.
    pub sum_seconds: f64,
    /// Cumulative buckets, Prometheus style.
    pub buckets: Vec<WaitBucket>,
}

/// One cumulative bucket: calls that waited at most `le_seconds`.
#[derive(Clone, Debug, Serialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct WaitBucket {
    /// Upper bound; `None` is +Inf.
    pub le_seconds: Option<f64>,
    /// Calls that waited at most this long.
    pub count: u64,
}

/// Point-in-time statistics of one concurrency limit.
#[derive(Clone, Debug, Serialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ConcurrencySnapshot {
    /// The limit's name.
    pub name: String,
    /// The current limit (moves when adaptive).
    pub limit: usize,
    /// Calls holding a permit now.
    pub in_flight: usize,
    /// The most calls that held a permit at once.
    pub in_flight_high_water: usize,
    /// Calls waiting for a permit now.
    pub queued: usize,
    /// The most calls that waited at once.
    pub queued_high_water: usize,
    /// The queue's capacity.
    pub max_queue: usize,
    /// Calls that got a permit, since start.
    pub admitted: u64,
    /// Calls rejected because the queue was full.
    pub rejected_queue_full: u64,
    /// Calls rejected after waiting `queue_timeout`.
    pub rejected_queue_timeout: u64,
    /// Wait times of the calls that had to queue.
    pub wait: WaitSnapshot,
}
