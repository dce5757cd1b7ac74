//! A time-bucketed sliding window of call counts and latencies, for the
//! in-process statistics (`/admin/stats`) and for performance budgets.
//!
//! The window is a ring of [`SLOTS`] + 1 time slots. Each slot holds the calls
//! that ended during its slice of time: a count, a failure count, the sum and
//! maximum of their durations, and a histogram of fixed log-scale buckets. A
//! slot is reused (zeroed) when time comes round to it again, so the window
//! slides without one record per call and without a background task.
//!
//! Recording is two or three relaxed atomic adds. Only the first call to land
//! in a slot after it went stale takes a short lock to zero it; readers never
//! lock. A call that raced a slot's reset can be counted in the newer slice
//! (it ended at the boundary); summaries are statistics, not accounting.
//!
//! Latency buckets: one per microsecond below 16 µs, then 16 per power of two
//! up to 2²⁷ µs (≈ 134 s), plus one overflow bucket. Interpolating inside a
//! bucket keeps a percentile within about 3 % of the exact value.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use parking_lot::Mutex;

use crate::clock::Clock;

/// Number of time slots a window is divided into (the ring holds one more:
/// the slot being filled now).
pub(crate) const SLOTS: u64 = 12;

/// log2 of the number of sub-buckets per power of two.
const SUB_BITS: u32 = 4;
/// Sub-buckets per power of two; also the number of one-microsecond buckets.
const SUB: u64 = 1 << SUB_BITS;
/// Durations of 2^MAX_OCTAVE µs and more share the overflow bucket.
const MAX_OCTAVE: u32 = 27;
/// Index of the overflow bucket.
const OVERFLOW: usize = (SUB + (MAX_OCTAVE - SUB_BITS) as u64 * SUB) as usize;
/// Number of latency buckets per slot.
pub(crate) const BUCKETS: usize = OVERFLOW + 1;

/// The bucket a duration falls into.
fn bucket_of(elapsed: Duration) -> usize {
    let micros = u64::try_from(elapsed.as_micros()).unwrap_or(u64::MAX);
    if micros < SUB {
        return micros as usize;
    }
    let octave = 63 - micros.leading_zeros();
    if octave >= MAX_OCTAVE {
        return OVERFLOW;
    }
    let sub = (micros >> (octave - SUB_BITS)) - SUB;
    (SUB + u64::from(octave - SUB_BITS) * SUB + sub) as usize
}

/// Lower and upper bound of a (non-overflow) bucket, in microseconds.
fn bucket_bounds(index: usize) -> (f64, f64) {
    let index = index as u64;
    if index < SUB {
        return (index as f64, (index + 1) as f64);
    }
    let k = index - SUB;
    let shift = k / SUB;
    let sub = k % SUB;
    (
        ((SUB + sub) << shift) as f64,
        ((SUB + sub + 1) << shift) as f64,
    )
}

/// The calls that ended during one slice of time.
struct Slot {
    /// Which slice this slot holds: its sequence number + 1 (0: never used).
    tag: AtomicU64,
    // No call count: it is the sum of the buckets (one atomic add less per call).
    failures: AtomicU64,
    sum_nanos: AtomicU64,
    max_nanos: AtomicU64,
    buckets: [AtomicU64; BUCKETS],
}

impl Slot {
    fn new() -> Self {
        Self {
            tag: AtomicU64::new(0),
            failures: AtomicU64::new(0),
            sum_nanos: AtomicU64::new(0),
            max_nanos: AtomicU64::new(0),
            buckets: std::array::from_fn(|_| AtomicU64::new(0)),
        }
    }

    fn clear(&self) {
        self.failures.store(0, Ordering::Relaxed);
        self.sum_nanos.store(0, Ordering::Relaxed);
        self.max_nanos.store(0, Ordering::Relaxed);
        for bucket in &self.buckets {
            bucket.store(0, Ordering::Relaxed);
        }
    }
}

/// A sliding window of call statistics. See the module documentation.
pub(crate) struct Window {
    span: Duration,
    slot_nanos: u64,
    /// ⌈2⁶⁴ / slot_nanos⌉: finds an instant's slot with a multiply instead
    /// of a 64-bit division on every call. Exact at slot boundaries; an
    /// instant within `at · slot_nanos / 2⁶⁴` ns (microseconds after days of
    /// uptime) before a boundary lands in the next slot.
    slot_reciprocal: u128,
    slots: Box<[Slot]>,
    rotation: Mutex<()>,
    /// The window's time: nanoseconds since it was created.
    clock: Clock,
}

impl std::fmt::Debug for Window {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Window").field("span", &self.span).finish()
    }
}

impl Window {
    /// A window over the last `span` (which must be at least [`SLOTS`] ns).
    pub(crate) fn new(span: Duration) -> Self {
        let slot_nanos = u64::try_from(span.as_nanos() / u128::from(SLOTS))
            .unwrap_or(u64::MAX)
            .max(1);
        Self {
            span,
            slot_nanos,
            slot_reciprocal: (1u128 << 64).div_ceil(u128::from(slot_nanos)),
            slots: (0..=SLOTS).map(|_| Slot::new()).collect(),
            rotation: Mutex::new(()),
            clock: Clock::new(),
        }
    }

    /// The length of time the window covers.
    pub(crate) fn span(&self) -> Duration {
        self.span
    }

    /// Nanoseconds since the window's creation, the time that
    /// [`Window::record`] and [`Window::summary`] take (see [`crate::clock`]).
    #[inline]
    pub(crate) fn now(&self) -> u64 {
        self.clock.now()
    }

    /// The sequence number of the slot holding instant `at`.
    fn slot_of(&self, at: u64) -> u64 {
        ((u128::from(at) * self.slot_reciprocal) >> 64) as u64
    }

    /// Records one call that ended at `at` (see [`Window::now`]).
    pub(crate) fn record(&self, at: u64, elapsed: Duration, failure: bool) {
        let seq = self.slot_of(at);
        let slot = &self.slots[(seq % (SLOTS + 1)) as usize];
        let tag = seq + 1;
        if slot.tag.load(Ordering::Acquire) != tag {
            self.rotate(slot, tag);
        }
        let nanos = u64::try_from(elapsed.as_nanos()).unwrap_or(u64::MAX);
        if failure {
            slot.failures.fetch_add(1, Ordering::Relaxed);
        }
        slot.sum_nanos.fetch_add(nanos, Ordering::Relaxed);
        if nanos > slot.max_nanos.load(Ordering::Relaxed) {
            slot.max_nanos.fetch_max(nanos, Ordering::Relaxed);
        }
        slot.buckets[bucket_of(elapsed)].fetch_add(1, Ordering::Relaxed);
    }

    /// Zeroes a stale slot for slice `tag`; rare (once per slot per slice).
    #[cold]
    fn rotate(&self, slot: &Slot, tag: u64) {
        let _rotating = self.rotation.lock();
        // Another call rotated it first, or a later slice already owns it
        // (this call was descheduled across a whole window): count it there.
        if slot.tag.load(Ordering::Acquire) >= tag {
            return;
        }
        slot.clear();
        slot.tag.store(tag, Ordering::Release);
    }

    /// Sums the calls that ended during the last `over` (at most the window's
    /// span, rounded up to whole slots) before `at`.
    pub(crate) fn summary(&self, at: u64, over: Duration) -> Summary {
        let seq = self.slot_of(at);
        let full_slots = u64::try_from(over.as_nanos().div_ceil(u128::from(self.slot_nanos)))
            .unwrap_or(u64::MAX)
            .min(SLOTS);
        let oldest = seq.saturating_sub(full_slots);
        let mut summary = Summary {
            covered: Duration::from_nanos(
                (seq - oldest) * self.slot_nanos + at.saturating_sub(seq * self.slot_nanos),
            ),
            ..Summary::default()
        };
        let mut sum_nanos: u128 = 0;
        let mut max_nanos = 0;
        for slot in self.slots.iter() {
            let tag = slot.tag.load(Ordering::Acquire);
            if tag == 0 || tag - 1 < oldest || tag - 1 > seq {
                continue;
            }
            summary.failures += slot.failures.load(Ordering::Relaxed);
            sum_nanos += u128::from(slot.sum_nanos.load(Ordering::Relaxed));
            max_nanos = max_nanos.max(slot.max_nanos.load(Ordering::Relaxed));
            for (total, bucket) in summary.buckets.iter_mut().zip(&slot.buckets) {
                let calls = bucket.load(Ordering::Relaxed);
                *total += calls;
                summary.count += calls;
            }
        }
        summary.max = Duration::from_nanos(max_nanos);
        if summary.count > 0 {
            summary.mean = Duration::from_nanos(
                u64::try_from(sum_nanos / u128::from(summary.count)).unwrap_or(u64::MAX),
            );
        }
        summary
    }
}

/// Statistics of the calls in (part of) a window.
#[derive(Clone, Debug)]
pub(crate) struct Summary {
    /// Calls that ended in the window.
    pub(crate) count: u64,
    /// Of those, failures.
    pub(crate) failures: u64,
    /// How much time the summed slots actually cover (less than the window
    /// right after start).
    pub(crate) covered: Duration,
    /// Mean duration.
    pub(crate) mean: Duration,
    /// Longest duration.
    pub(crate) max: Duration,
    buckets: [u64; BUCKETS],
}

impl Default for Summary {
    fn default() -> Self {
        Self {
            count: 0,
            failures: 0,
            covered: Duration::ZERO,
            mean: Duration::ZERO,
            max: Duration::ZERO,
            buckets: [0; BUCKETS],
        }
    }
}

impl Summary {
    /// Failures / calls (0 without calls).
    pub(crate) fn error_rate(&self) -> f64 {
        if self.count == 0 {
            0.0
        } else {
            self.failures as f64 / self.count as f64
        }
    }

    /// Calls per second over the covered time.
    pub(crate) fn rate_per_second(&self) -> f64 {
        let seconds = self.covered.as_secs_f64();
        if seconds > 0.0 {
            self.count as f64 / seconds
        } else {
            0.0
        }
    }

    /// The `q`-quantile (0 < q ≤ 1) of durations, interpolated inside its
    /// bucket and never above the longest call seen.
    pub(crate) fn quantile(&self, q: f64) -> Duration {
        if self.count == 0 {
            return Duration::ZERO;
        }
        let rank = ((q * self.count as f64).ceil() as u64).clamp(1, self.count);
        let mut seen = 0;
        for (index, &in_bucket) in self.buckets.iter().enumerate() {
            if in_bucket == 0 {
                continue;
            }
            if seen + in_bucket >= rank {
                let max_micros = self.max.as_secs_f64() * 1e6;
                let (lower, upper) = if index == OVERFLOW {
                    (bucket_bounds(OVERFLOW).0, max_micros)
                } else {
                    bucket_bounds(index)
                };
                let fraction = (rank - seen) as f64 / in_bucket as f64;
                let micros = (lower + (upper - lower) * fraction).min(max_micros);
                return Duration::from_secs_f64(micros.max(0.0) / 1e6);
            }
            seen += in_bucket;
        }
        self.max
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_are_contiguous_and_ordered() {
        let mut previous_upper = 0.0;
        for index in 0..OVERFLOW {
            let (lower, upper) = bucket_bounds(index);
            assert_eq!(lower, previous_upper, "bucket {index}");
            assert!(upper > lower);
            previous_upper = upper;
        }
        assert_eq!(previous_upper, (1u64 << MAX_OCTAVE) as f64);
        for micros in [
            0u64,
            1,
            15,
            16,
            17,
            31,
            32,
            1000,
            99_999,
            1 << 26,
            (1 << 27) - 1,
        ] {
            let index = bucket_of(Duration::from_micros(micros));
            let (lower, upper) = bucket_bounds(index);
            assert!(
                lower <= micros as f64 && (micros as f64) < upper,
                "{micros} µs in bucket {index} [{lower}, {upper})"
            );
        }
        assert_eq!(bucket_of(Duration::from_secs(1000)), OVERFLOW);
    }

    #[test]
    fn quantiles_are_close_to_exact() {
        let window = Window::new(Duration::from_secs(60));
        // 1..=1000 ms, one call each.
        for ms in 1..=1000u64 {
            window.record(0, Duration::from_millis(ms), ms % 10 == 0);
        }
        let summary = window.summary(0, Duration::from_secs(60));
        assert_eq!(summary.count, 1000);
        assert_eq!(summary.failures, 100);
        for (q, exact) in [(0.5, 500.0), (0.95, 950.0), (0.99, 990.0)] {
            let got = summary.quantile(q).as_secs_f64() * 1e3;
            assert!(
                (got - exact).abs() / exact < 0.03,
                "q{q}: got {got} ms, want {exact}"
            );
        }
        assert_eq!(summary.quantile(1.0), Duration::from_secs(1));
        assert_eq!(summary.mean, Duration::from_micros(500_500));
    }

    #[test]
    fn slots_are_found_without_division() {
        for span in [1u64, 12, 60, 3600, 86_400] {
            let window = Window::new(Duration::from_secs(span));
            let slot = window.slot_nanos;
            for k in [0u64, 1, 2, 13, 1000, 1_000_000] {
                let start = k * slot;
                assert_eq!(
                    window.slot_of(start),
                    k,
                    "start of slot {k} ({span} s window)"
                );
                assert_eq!(window.slot_of(start + slot / 2), k);
            }
        }
    }

    #[test]
    fn concurrent_recording_loses_no_calls() {
        let window = std::sync::Arc::new(Window::new(Duration::from_secs(12)));
        let threads: Vec<_> = (0..4u64)
            .map(|thread| {
                let window = window.clone();
                std::thread::spawn(move || {
                    for i in 0..10_000u64 {
                        // All threads cross into a fresh slot at the same moments.
                        let at = (i / 1000) * 1_000_000_000;
                        window.record(at, Duration::from_micros(100 + thread), i % 4 == 0);
                    }
                })
            })
            .collect();
        for thread in threads {
            thread.join().unwrap();
        }
        let summary = window.summary(9_000_000_000, Duration::from_secs(12));
        assert_eq!(summary.count, 40_000);
        assert_eq!(summary.failures, 10_000);
        assert_eq!(summary.max, Duration::from_micros(103));
    }

    #[test]
    fn old_slots_fall_out_of_the_window() {
        let window = Window::new(Duration::from_secs(12)); // 1 s slots
        let second = 1_000_000_000;
        window.record(0, Duration::from_millis(5), true);
        window.record(5 * second, Duration::from_millis(5), false);
        let summary = window.summary(12 * second, Duration::from_secs(12));
        assert_eq!(summary.count, 2, "both within 12 s (plus the partial slot)");
        let summary = window.summary(13 * second, Duration::from_secs(12));
        assert_eq!(summary.count, 1, "the call at 0 s is older than the window");
        assert_eq!(summary.failures, 0);
        // Asking for a shorter span looks at fewer slots.
        let summary = window.summary(13 * second, Duration::from_secs(3));
        assert_eq!(summary.count, 0);
        // A slot reused after a full turn of the ring starts from zero.
        window.record(26 * second, Duration::from_millis(5), false);
        let summary = window.summary(26 * second, Duration::from_secs(1));
        assert_eq!(summary.count, 1);
    }
}
