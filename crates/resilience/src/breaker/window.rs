//! The rolling count window: a ring of time buckets of atomic counters.
//!
//! Time is cut into ticks of `monitoring_period / BUCKETS` (whole
//! nanoseconds, rounded down); tick `t` lands in
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

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

/// Number of buckets in the window.
pub(crate) const BUCKETS: u64 = 10;

/// Turns nanoseconds into ticks without a division on the hot path.
///
/// A 64-bit `div` costs tens of cycles; this is one widening multiply and a
/// shift giving the same quotient (Granlund & Montgomery, "Division by
/// invariant integers using multiplication", 1994): with `l = ⌈log₂ d⌉`,
/// `k = 63 + l` and `m = ⌈2ᵏ / d⌉`, `⌊n·m / 2ᵏ⌋ = ⌊n / d⌋` for every
/// `n < 2⁶³`. Proof: `m = (2ᵏ + e) / d` with `0 ≤ e < d`, so
/// `n·m / 2ᵏ = n/d + n·e / (d·2ᵏ)` and the error term is below
/// `2⁶³·d / (d·2⁶³⁺ˡ) = 2⁻ˡ ≤ 1/d`, too small to reach the next multiple of
/// `1/d`. `2⁶³` ns is 292 years of uptime; past it the result stays monotone.
/// For `d ≥ 2`, `l ≥ 1`, so `k ≥ 64` and the shift is of the high word only.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Ticks {
    magic: u64,
    /// `k − 64`.
    shift: u32,
}

impl Ticks {
    /// Ticks of `tick_nanos` nanoseconds. At least 2 (a validated config
    /// gives at least 1 ms); smaller values are taken as 2.
    pub(crate) fn new(tick_nanos: u64) -> Self {
        debug_assert!(tick_nanos >= 2, "tick of {tick_nanos} ns");
        let d = tick_nanos.max(2);
        // ⌈log₂ d⌉ ≥ 1: the bit length of d − 1.
        let l = u64::BITS - (d - 1).leading_zeros();
        let d = u128::from(d);
        let magic = (1u128 << (63 + l)).div_ceil(d);
        Self {
            // m < 2⁶⁴: d > 2ˡ⁻¹ gives 2⁶³⁺ˡ / d < 2⁶⁴, and the ceiling of a
            // value below 2⁶⁴ − 1 (2⁶³⁺ˡ / (2ˡ⁻¹ + 1) is) stays below 2⁶⁴.
            magic: u64::try_from(magic)
                .expect("the multiplier fits in 64 bits for every divisor ≥ 2"),
            shift: l - 1,
        }
    }

    /// The tick holding `nanos`: `nanos / tick_nanos`.
    #[inline]
    pub(crate) fn of(self, nanos: u64) -> u64 {
        let high = (u128::from(nanos) * u128::from(self.magic)) >> 64;
        // The high word of a product of two 64-bit numbers fits in 64 bits.
        (high as u64) >> self.shift
    }
}

/// Counts of one tick. Aligned to a cache line so neighbours do not share it.
#[derive(Default)]
#[repr(align(64))]
struct Bucket {
    tick: AtomicU64,
    calls: AtomicU64,
    failures: AtomicU64,
    slow: AtomicU64,
}

impl Bucket {
    /// Moves the bucket on to `tick` (once per tick, by the first call in
    /// it). False when the call's tick is already gone.
    #[cold]
    #[inline(never)]
    fn enter(&self, held: u64, tick: u64) -> bool {
        if held > tick {
            // Our clock read is a whole window older than another thread's:
            // the call belongs to a tick that is gone.
            return false;
        }
        if self
            .tick
            .compare_exchange(held, tick, Relaxed, Relaxed)
            .is_ok()
        {
            self.calls.store(0, Relaxed);
            self.failures.store(0, Relaxed);
            self.slow.store(0, Relaxed);
        }
        true
    }
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
    #[inline]
    pub(crate) fn record(&self, tick: u64, failure: bool, slow: bool) {
        let bucket = &self.buckets[(tick % BUCKETS) as usize];
        // Relaxed is enough: the counters are only ever summed as an
        // estimate, never used to publish other memory.
        let held = bucket.tick.load(Relaxed);
        if held != tick && !bucket.enter(held, tick) {
            return;
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
    #[inline]
    pub(crate) fn holds_bad(&self, tick: u64) -> bool {
        let last = self.last_bad_tick.load(Relaxed);
        last != 0 && tick < last - 1 + BUCKETS
    }

    /// Sums the buckets of the window ending at `tick`.
    pub(crate) fn counts(&self, tick: u64) -> Counts {
        let mut counts = Counts::default();
        for bucket in &self.buckets {
            let held = bucket.tick.load(Relaxed);
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

    #[test]
    fn ticks_divide_exactly() {
        let mut divisors = vec![2, 3, 7, 10, 1_000_000, 6_000_000_000, 1 << 40];
        divisors.extend([(1u64 << 63) - 1, 1 << 63, (1 << 63) + 1, u64::MAX]);
        // A deterministic spread of odd divisors (an LCG).
        let mut x = 0x9e37_79b9_7f4a_7c15_u64;
        for _ in 0..2000 {
            x = x.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1);
            divisors.push((x >> (x % 63)).max(2));
        }
        for d in divisors {
            let ticks = Ticks::new(d);
            let mut numerators = vec![0, 1, d - 1, d, d.saturating_add(1), (1 << 63) - 1];
            for k in [2u64, 3, 1_000, 123_456_789] {
                if let Some(n) = d.checked_mul(k) {
                    numerators.extend([n - 1, n, n + 1]);
                }
            }
            for _ in 0..50 {
                x = x.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1);
                numerators.push(x >> 1);
            }
            for n in numerators.into_iter().filter(|&n| n < 1 << 63) {
                assert_eq!(ticks.of(n), n / d, "{n} / {d}");
            }
        }
    }
}
