//! The rolling count window: a ring of time buckets of atomic counters.
//!
//! Time is cut into ticks of `monitoring_period / BUCKETS`; tick `t` lands in
//! bucket `t % BUCKETS`, which remembers the tick it holds. A bucket holding
//! an older tick is zeroed lazily by the first call that lands in it, and a
//! sum only counts buckets whose tick is one of the last `BUCKETS` ticks — so
//! the window slides even when nothing is recorded, and costs no memory per
//! call.
//!
//! Under contention a count can be lost at the instant a bucket is recycled
//! (a racing increment between the winner's tick swap and its zeroing); the
//! window is a health estimate, so this is accepted to keep the hot path to a
//! few relaxed atomics.

use std::sync::atomic::{AtomicU64, Ordering::*};

/// Number of buckets in the window.
pub(crate) const BUCKETS: u64 = 10;

/// Counts of one tick. Aligned to a cache line so neighbours do not share it.
#[derive(Default)]
#[repr(align(64))]
struct Bucket {
    tick: AtomicU64,
    calls: AtomicU64,
    failures: AtomicU64,
    slow: AtomicU64,
}

/// What the window holds now.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct Counts {
    pub(crate) calls: u64,
    pub(crate) failures: u64,
    pub(crate) slow: u64,
}

pub(crate) struct Window {
    buckets: [Bucket; BUCKETS as usize],
    /// Last tick that recorded a failure or a slow call, plus one (0: never).
    /// Lets a success skip the rule check when the window holds nothing bad.
    last_bad_tick: AtomicU64,
}

impl Window {
    pub(crate) fn new() -> Self {
        Self {
            buckets: Default::default(),
            last_bad_tick: AtomicU64::new(0),
        }
    }

    /// Records one call at `tick`.
    pub(crate) fn record(&self, tick: u64, failure: bool, slow: bool) {
        let bucket = &self.buckets[(tick % BUCKETS) as usize];
        let held = bucket.tick.load(Acquire);
        if held != tick {
            if held > tick {
                // Our clock read is a whole window older than another
                // thread's: the call belongs to a tick that is gone.
                return;
            }
            if bucket
                .tick
                .compare_exchange(held, tick, AcqRel, Acquire)
                .is_ok()
            {
                bucket.calls.store(0, Relaxed);
                bucket.failures.store(0, Relaxed);
                bucket.slow.store(0, Relaxed);
            }
        }
        bucket.calls.fetch_add(1, Relaxed);
        if failure {
            bucket.failures.fetch_add(1, Relaxed);
        }
        if slow {
            bucket.slow.fetch_add(1, Relaxed);
        }
        if failure || slow {
            self.last_bad_tick.fetch_max(tick + 1, Relaxed);
        }
    }

    /// Whether a failure or slow call was recorded in the window ending at `tick`.
    pub(crate) fn holds_bad(&self, tick: u64) -> bool {
        let last = self.last_bad_tick.load(Relaxed);
        last != 0 && tick < last - 1 + BUCKETS
    }

    /// Sums the buckets of the window ending at `tick`.
    pub(crate) fn counts(&self, tick: u64) -> Counts {
        let mut counts = Counts::default();
        for bucket in &self.buckets {
            let held = bucket.tick.load(Acquire);
            if held <= tick && tick - held < BUCKETS {
                counts.calls += bucket.calls.load(Relaxed);
                counts.failures += bucket.failures.load(Relaxed);
                counts.slow += bucket.slow.load(Relaxed);
            }
        }
        counts
    }

    /// Forgets everything (the breaker closed again or was reset).
    pub(crate) fn clear(&self) {
        for bucket in &self.buckets {
            bucket.calls.store(0, Relaxed);
            bucket.failures.store(0, Relaxed);
            bucket.slow.store(0, Relaxed);
        }
        self.last_bad_tick.store(0, Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slides_and_recycles_buckets() {
        let w = Window::new();
        w.record(0, true, false);
        w.record(0, false, false);
        w.record(5, true, true);
        assert_eq!(
            w.counts(5),
            Counts {
                calls: 3,
                failures: 2,
                slow: 1
            }
        );
        assert!(w.holds_bad(14));
        // Tick 0 leaves the window at tick 10, tick 5 at tick 15.
        assert_eq!(w.counts(10).calls, 1);
        assert!(!w.holds_bad(15));
        assert_eq!(w.counts(15), Counts::default());
        // Tick 20 reuses bucket 0 and zeroes it first.
        w.record(20, false, false);
        assert_eq!(w.counts(20).calls, 1);
        assert_eq!(w.counts(20).failures, 0);
        w.clear();
        assert_eq!(w.counts(20), Counts::default());
    }
}
