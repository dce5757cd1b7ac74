//! [`ConcurrencyHandle`]: statistics of one concurrency limit.

use std::sync::{Arc, atomic::Ordering};

use super::{ConcurrencySnapshot, limiter::Limiter};

/// A cheap, cloneable view of one concurrency limit's shared state.
#[derive(Clone)]
pub struct ConcurrencyHandle {
    limiter: Arc<Limiter>,
}

impl ConcurrencyHandle {
    pub(crate) fn new(limiter: Arc<Limiter>) -> Self {
        Self { limiter }
    }

    /// The limit's name.
    pub fn name(&self) -> &str {
        &self.limiter.name
    }

    /// The current limit (moves between bounds when adaptive).
    pub fn limit(&self) -> usize {
        self.limiter.limit.load(Ordering::Acquire)
    }

    /// Calls holding a permit now.
    pub fn in_flight(&self) -> usize {
        self.limiter.in_flight.load(Ordering::Relaxed)
    }

    /// Calls waiting for a permit now.
    pub fn queued(&self) -> usize {
        self.limiter.queued.load(Ordering::Relaxed)
    }

    /// All statistics at once.
    pub fn snapshot(&self) -> ConcurrencySnapshot {
        let l = &self.limiter;
        ConcurrencySnapshot {
            name: l.name.to_string(),
            limit: self.limit(),
            in_flight: self.in_flight(),
            in_flight_high_water: l.in_flight_high_water.load(Ordering::Relaxed),
            queued: self.queued(),
            queued_high_water: l.queued_high_water.load(Ordering::Relaxed),
            max_queue: l.max_queue,
            admitted: l.admitted.load(Ordering::Relaxed),
            rejected_queue_full: l.rejected_queue_full.load(Ordering::Relaxed),
            rejected_queue_timeout: l.rejected_queue_timeout.load(Ordering::Relaxed),
            wait: l.wait.snapshot(),
        }
    }
}

impl std::fmt::Debug for ConcurrencyHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConcurrencyHandle")
            .field("name", &self.limiter.name)
            .field("limit", &self.limit())
            .field("in_flight", &self.in_flight())
            .field("queued", &self.queued())
            .finish()
    }
}
