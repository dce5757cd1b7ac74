//! A retry budget shared by every copy of one retry layer: over a sliding
//! window, retries may be at most `ratio × calls + min_per_second × window`.
//!
//! Written here rather than using tower's `TpsBudget`, which over-admits
//! retries when its ratio is below one (tower issue 857). The window is ten
//! time slots, each a pair of atomic counters tagged with the slot's number,
//! so counting a call is one compare-and-swap and stale slots expire by
//! themselves. A withdrawal re-checks the sums if another retry raced it, so
//! concurrent callers cannot overdraw the budget together.
//!
//! The call path does not read the clock: a call is counted in a cached slot
//! number, refreshed from the clock on the first and every
//! [`REFRESH_EVERY`]th call of a slot and on every withdrawal. Under light traffic a call
//! may so be counted in an older slot than its own: it leaves the window
//! early, which can only lower the budget, never raise it.

use std::{
    sync::atomic::{AtomicU64, Ordering},
    time::Duration,
};

use tokio::time::Instant;

use super::config::RetryBudgetConfig;

const SLOTS: usize = 10;
/// Calls of one slot between two clock reads on the call path.
pub(crate) const REFRESH_EVERY: u64 = 32;
const COUNT_BITS: u32 = 32;
const COUNT_MASK: u64 = (1 << COUNT_BITS) - 1;

pub(crate) struct RetryBudget {
    ratio: f64,
    /// Retries allowed per window whatever the traffic.
    reserve: u64,
    start: Instant,
    slot_nanos: u64,
    /// The latest slot number seen (not truncated).
    cached_epoch: AtomicU64,
    calls: [AtomicU64; SLOTS],
    retries: [AtomicU64; SLOTS],
}

/// A slot's value: its number (`epoch`, truncated) in the high bits, its
/// count in the low bits.
fn pack(epoch: u64, count: u64) -> u64 {
    (epoch << COUNT_BITS) | count.min(COUNT_MASK)
}

fn unpack(value: u64) -> (u64, u64) {
    (value >> COUNT_BITS, value & COUNT_MASK)
}

/// Slot numbers wrap at 32 bits; compare them modulo that.
const EPOCH_MASK: u64 = u64::MAX >> COUNT_BITS;

impl RetryBudget {
    pub(crate) fn new(config: &RetryBudgetConfig) -> Self {
        let window = config.window;
        let reserve = (f64::from(config.min_per_second) * window.as_secs_f64()).floor() as u64;
        Self {
            ratio: config.ratio,
            reserve,
            start: Instant::now(),
            slot_nanos: u64::try_from(window.as_nanos() / SLOTS as u128)
                .unwrap_or(u64::MAX)
                .max(1),
            cached_epoch: AtomicU64::new(0),
            calls: Default::default(),
            retries: Default::default(),
        }
    }

    /// The slot number of `now`, not truncated.
    fn epoch(&self, now: Instant) -> u64 {
        let nanos =
            u64::try_from(now.saturating_duration_since(self.start).as_nanos()).unwrap_or(u64::MAX);
        nanos / self.slot_nanos
    }

    /// Reads the clock and moves the cached slot number forward.
    fn current_epoch(&self) -> u64 {
        let epoch = self.epoch(Instant::now());
        self.cached_epoch
            .fetch_max(epoch, Ordering::AcqRel)
            .max(epoch)
    }

    /// Counts one call, in the cached slot; every [`REFRESH_EVERY`]th call
    /// of a slot reads the clock to move the cache on.
    pub(crate) fn deposit(&self) {
        let epoch = self.cached_epoch.load(Ordering::Acquire) & EPOCH_MASK;
        let slot = &self.calls[epoch as usize % SLOTS];
        let mut counted = 0;
        let _ = slot.fetch_update(Ordering::AcqRel, Ordering::Acquire, |value| {
            let (stored, count) = unpack(value);
            let newer = stored.wrapping_sub(epoch) & EPOCH_MASK;
            let next = if newer < SLOTS as u64 {
                // This slot, or a newer one a faster caller already moved
                // it to: count the call there rather than wipe the slot.
                pack(stored, count + 1)
            } else {
                pack(epoch, 1)
            };
            counted = unpack(next).1;
            Some(next)
        });
        if counted % REFRESH_EVERY == 1 {
            self.current_epoch();
        }
    }

    /// Takes one retry from the budget, if the window allows it.
    pub(crate) fn withdraw(&self) -> bool {
        let epoch = self.current_epoch() & EPOCH_MASK;
        let slot = &self.retries[epoch as usize % SLOTS];
        loop {
            let current = slot.load(Ordering::Acquire);
            let balance = self.balance_at(epoch);
            if balance <= 0 {
                return false;
            }
            let (stored, count) = unpack(current);
            let next = if stored == epoch {
                pack(epoch, count + 1)
            } else {
                pack(epoch, 1)
            };
            // Fails if a concurrent retry got in first: re-check the balance.
            if slot
                .compare_exchange(current, next, Ordering::AcqRel, Ordering::Acquire)
                .is_ok()
            {
                return true;
            }
        }
    }

    /// Retries still allowed now.
    pub(crate) fn available(&self) -> u64 {
        u64::try_from(self.balance_at(self.current_epoch() & EPOCH_MASK)).unwrap_or(0)
    }

    /// Calls and retries counted in the window now.
    pub(crate) fn window_counts(&self) -> (u64, u64) {
        let epoch = self.current_epoch() & EPOCH_MASK;
        (sum(&self.calls, epoch), sum(&self.retries, epoch))
    }

    fn balance_at(&self, epoch: u64) -> i64 {
        let calls = sum(&self.calls, epoch);
        let retries = sum(&self.retries, epoch);
        let allowed = (self.ratio * calls as f64).floor() as u64 + self.reserve;
        i64::try_from(allowed).unwrap_or(i64::MAX) - i64::try_from(retries).unwrap_or(i64::MAX)
    }
}

/// Sum of the slots that belong to the window ending at `epoch`.
fn sum(slots: &[AtomicU64; SLOTS], epoch: u64) -> u64 {
    slots
        .iter()
        .map(|slot| {
            let (stored, count) = unpack(slot.load(Ordering::Acquire));
            let age = epoch.wrapping_sub(stored) & EPOCH_MASK;
            if age < SLOTS as u64 { count } else { 0 }
        })
        .sum()
}

impl std::fmt::Debug for RetryBudget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RetryBudget")
            .field("ratio", &self.ratio)
            .field("reserve", &self.reserve)
            .field(
                "window",
                &Duration::from_nanos(self.slot_nanos * SLOTS as u64),
            )
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn budget(ratio: f64, min_per_second: u32) -> RetryBudget {
        RetryBudget::new(&RetryBudgetConfig {
            ratio,
            min_per_second,
            window: Duration::from_secs(10),
        })
    }

    #[tokio::test(start_paused = true)]
    async fn ratio_below_one_holds() {
        let budget = budget(0.1, 0);
        for _ in 0..1_000 {
            budget.deposit();
        }
        let granted = (0..1_000).filter(|_| budget.withdraw()).count();
        assert_eq!(granted, 100);
    }

    #[tokio::test(start_paused = true)]
    async fn reserve_is_per_second_of_window() {
        let budget = budget(0.0, 2);
        let granted = (0..100).filter(|_| budget.withdraw()).count();
        assert_eq!(granted, 20);
    }

    #[tokio::test(start_paused = true)]
    async fn old_calls_leave_the_window() {
        let budget = budget(0.5, 0);
        for _ in 0..100 {
            budget.deposit();
        }
        assert_eq!(budget.available(), 50);
        tokio::time::advance(Duration::from_secs(5)).await;
        assert_eq!(budget.available(), 50);
        tokio::time::advance(Duration::from_secs(6)).await;
        assert_eq!(budget.available(), 0);
        assert!(!budget.withdraw());
    }

    #[test]
    fn concurrent_withdrawals_do_not_overdraw() {
        let budget = std::sync::Arc::new(budget(0.1, 0));
        for _ in 0..1_000 {
            budget.deposit();
        }
        let threads: Vec<_> = (0..4)
            .map(|_| {
                let budget = budget.clone();
                std::thread::spawn(move || (0..1_000).filter(|_| budget.withdraw()).count())
            })
            .collect();
        let granted: usize = threads.into_iter().map(|t| t.join().unwrap()).sum();
        assert_eq!(granted, 100);
    }
}

#[cfg(test)]
mod cached_clock_tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn calls_counted_in_a_stale_slot_never_raise_the_budget() {
        let budget = RetryBudget::new(&RetryBudgetConfig {
            ratio: 1.0,
            min_per_second: 0,
            window: Duration::from_secs(10),
        });
        budget.deposit();
        tokio::time::advance(Duration::from_secs(8)).await;
        // Counted in the slot of t = 0: the cache is refreshed on the first
        // and every 32nd call of a slot, not on these.
        for _ in 0..10 {
            budget.deposit();
        }
        assert_eq!(budget.available(), 11);
        tokio::time::advance(Duration::from_secs(3)).await;
        // Gone with t = 0's slot, two seconds early: the budget only shrank.
        assert_eq!(budget.available(), 0);
        // Reading the clock (as a withdrawal or `available` does) moves the
        // cache on: the next call lands in its own slot.
        budget.deposit();
        tokio::time::advance(Duration::from_secs(9)).await;
        assert_eq!(budget.available(), 1);
    }
}
