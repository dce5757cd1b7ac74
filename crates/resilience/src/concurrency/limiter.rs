//! The state one concurrency limit shares between all its service copies:
//! the semaphore, the queue counter, the adaptive limit and the statistics.

use std::{
    sync::{
        Arc,
        atomic::{AtomicU64, AtomicUsize, Ordering},
    },
    time::Duration,
};

use parking_lot::Mutex;
use tokio::{sync::Semaphore, time::Instant};

use super::{
    config::{AdaptiveConfig, ConcurrencyConfig},
    error::{QueueFull, QueueTimeout},
    stats::{Metrics, WaitHistogram},
};

/// Shared by every copy of one `ConcurrencyLimit`, created once by the layer.
pub(crate) struct Limiter {
    pub(crate) name: Arc<str>,
    pub(crate) max_queue: usize,
    pub(crate) queue_timeout: Duration,
    /// Permits are taken with `try_acquire`/`acquire` and immediately forgotten;
    /// [`Permit`]'s drop gives them back with `add_permits` (or keeps them when
    /// the limit went down meanwhile, see `debt`).
    pub(crate) semaphore: Semaphore,
    /// The current limit: permits in the semaphore plus those held, minus `debt`.
    pub(crate) limit: AtomicUsize,
    /// Permits to drop instead of giving back, owed after the limit went down
    /// while they were held.
    debt: AtomicUsize,
    adaptive: Option<Adaptive>,
    pub(crate) in_flight: AtomicUsize,
    pub(crate) in_flight_high_water: AtomicUsize,
    pub(crate) queued: AtomicUsize,
    pub(crate) queued_high_water: AtomicUsize,
    pub(crate) admitted: AtomicU64,
    pub(crate) rejected_queue_full: AtomicU64,
    pub(crate) rejected_queue_timeout: AtomicU64,
    pub(crate) wait: WaitHistogram,
    metrics: Metrics,
}

struct Adaptive {
    config: AdaptiveConfig,
    /// Serializes resizes; never held across an await.
    resize: Mutex<()>,
}

impl Limiter {
    pub(crate) fn new(name: Arc<str>, config: &ConcurrencyConfig) -> Self {
        let metrics = Metrics::new(&name);
        metrics.limit.set(config.max_concurrent as f64);
        Self {
            max_queue: config.max_queue,
            queue_timeout: config.queue_timeout,
            semaphore: Semaphore::new(config.max_concurrent),
            limit: AtomicUsize::new(config.max_concurrent),
            debt: AtomicUsize::new(0),
            adaptive: config.adaptive.clone().map(|config| Adaptive {
                config,
                resize: Mutex::new(()),
            }),
            in_flight: AtomicUsize::new(0),
            in_flight_high_water: AtomicUsize::new(0),
            queued: AtomicUsize::new(0),
            queued_high_water: AtomicUsize::new(0),
            admitted: AtomicU64::new(0),
            rejected_queue_full: AtomicU64::new(0),
            rejected_queue_timeout: AtomicU64::new(0),
            wait: WaitHistogram::default(),
            metrics,
            name,
        }
    }

    /// A permit now, if one is free (the hot path: no allocation, no await).
    pub(crate) fn try_admit(self: &Arc<Self>) -> Option<Permit> {
        let permit = self.semaphore.try_acquire().ok()?;
        permit.forget();
        Some(self.admitted())
    }

    /// Wraps a permit taken from the semaphore (and already forgotten).
    pub(crate) fn admitted(self: &Arc<Self>) -> Permit {
        let in_flight = self.in_flight.fetch_add(1, Ordering::Relaxed) + 1;
        raise(&self.in_flight_high_water, in_flight);
        self.admitted.fetch_add(1, Ordering::Relaxed);
        self.metrics.admitted.increment(1);
        self.metrics.in_flight.increment(1.0);
        Permit {
            started: self.adaptive.as_ref().map(|_| (Instant::now(), in_flight)),
            limiter: Arc::clone(self),
        }
    }

    /// A place in the wait queue, or `None` when it is full.
    pub(crate) fn enqueue(self: &Arc<Self>) -> Option<QueueSlot> {
        let max = self.max_queue;
        let before = self
            .queued
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |queued| {
                (queued < max).then_some(queued + 1)
            })
            .ok()?;
        raise(&self.queued_high_water, before + 1);
        self.metrics.queued.increment(1.0);
        Some(QueueSlot {
            limiter: Arc::clone(self),
        })
    }

    pub(crate) fn queue_full(&self) -> QueueFull {
        self.rejected_queue_full.fetch_add(1, Ordering::Relaxed);
        self.metrics.rejected_queue_full.increment(1);
        QueueFull {
            name: Arc::clone(&self.name),
            max_queue: self.max_queue,
            retry_after: self.retry_after(),
        }
    }

    pub(crate) fn queue_timeout(&self) -> QueueTimeout {
        self.rejected_queue_timeout.fetch_add(1, Ordering::Relaxed);
        self.metrics.rejected_queue_timeout.increment(1);
        QueueTimeout {
            name: Arc::clone(&self.name),
            waited: self.queue_timeout,
            retry_after: self.retry_after(),
        }
    }

    /// What a rejected caller is told to wait: one queue timeout (at least a
    /// second, the granularity of an HTTP `Retry-After`).
    fn retry_after(&self) -> Duration {
        self.queue_timeout.max(Duration::from_secs(1))
    }

    pub(crate) fn record_wait(&self, waited: Duration) {
        self.wait.record(waited);
        self.metrics.wait.record(waited.as_secs_f64());
    }

    /// Gives one permit back, or keeps it to pay a debt left by a shrink.
    fn release(&self) {
        self.in_flight.fetch_sub(1, Ordering::Relaxed);
        self.metrics.in_flight.decrement(1.0);
        if self.debt.load(Ordering::Acquire) > 0
            && self
                .debt
                .fetch_update(Ordering::AcqRel, Ordering::Acquire, |debt| {
                    debt.checked_sub(1)
                })
                .is_ok()
        {
            return;
        }
        self.semaphore.add_permits(1);
    }

    /// AIMD step after one call finished.
    fn observe(&self, latency: Duration, failed: bool, in_flight_at_start: usize) {
        let Some(adaptive) = &self.adaptive else {
            return;
        };
        let config = &adaptive.config;
        let _resizing = adaptive.resize.lock();
        let current = self.limit.load(Ordering::Acquire);
        let target = if failed || latency > config.latency_target {
            ((current as f64 * config.backoff_ratio).floor() as usize).max(config.min_concurrent)
        } else if in_flight_at_start * 2 >= current {
            // Only grow a limit that is being used.
            (current + 1).min(config.max_concurrent)
        } else {
            current
        };
        self.resize(current, target);
    }

    /// Moves the limit from `current` to `target`. Callers hold `resize`.
    fn resize(&self, current: usize, target: usize) {
        if target > current {
            let mut grow = target - current;
            let paid = self
                .debt
                .fetch_update(Ordering::AcqRel, Ordering::Acquire, |debt| {
                    Some(debt.saturating_sub(grow))
                })
                .unwrap_or_else(|debt| debt)
                .min(grow);
            grow -= paid;
            if grow > 0 {
                self.semaphore.add_permits(grow);
            }
        } else if target < current {
            let shrink = current - target;
            // Free permits go at once; held ones when they come back.
            let forgotten = self.semaphore.forget_permits(shrink);
            if shrink > forgotten {
                self.debt.fetch_add(shrink - forgotten, Ordering::AcqRel);
            }
        } else {
            return;
        }
        self.limit.store(target, Ordering::Release);
        self.metrics.limit.set(target as f64);
    }
}

/// Raises a high-water mark; a plain load first, since it rarely moves.
fn raise(mark: &AtomicUsize, value: usize) {
    if value > mark.load(Ordering::Relaxed) {
        mark.fetch_max(value, Ordering::Relaxed);
    }
}

/// One admitted call. Dropping it (the call finished, failed or was
/// cancelled) gives the permit back.
pub(crate) struct Permit {
    limiter: Arc<Limiter>,
    /// When the call started and how many were in flight then (adaptive only).
    started: Option<(Instant, usize)>,
}

impl Permit {
    /// Feeds the adaptive limit with the finished call's latency and outcome.
    pub(crate) fn finished(&self, failed: bool) {
        if let Some((started, in_flight)) = self.started {
            self.limiter.observe(started.elapsed(), failed, in_flight);
        }
    }
}

impl Drop for Permit {
    fn drop(&mut self) {
        self.limiter.release();
    }
}

/// A place in the wait queue, freed when dropped (admitted, timed out or
/// cancelled).
pub(crate) struct QueueSlot {
    limiter: Arc<Limiter>,
}

impl QueueSlot {
    pub(crate) fn limiter(&self) -> &Arc<Limiter> {
        &self.limiter
    }
}

impl Drop for QueueSlot {
    fn drop(&mut self) {
        self.limiter.queued.fetch_sub(1, Ordering::AcqRel);
        self.limiter.metrics.queued.decrement(1.0);
    }
}
