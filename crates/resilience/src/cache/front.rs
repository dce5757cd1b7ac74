//! The hit path's front table: a small direct-mapped table of hot entries,
//! read before the moka store.
//!
//! Why: a moka `get` costs ≈ 120–180 ns on this project's machines (hash,
//! epoch pin, the `Arc` clone of the entry, and the read log its eviction
//! policy drains, which the `sync` cache drains on the caller's thread). A
//! hit served from this table is a hash, one `arc-swap` load (no shared
//! write), a key comparison, two atomic loads and the clone of the value.
//! No crate offers a read-mostly front for moka, so it is written here; it
//! holds no value of its own: every slot points at an entry that moka holds
//! (or held), and moka stays the store, its size bound and its eviction.
//!
//! # Rules that keep it exact
//! - A slot is filled only from a moka hit, with the table's *epoch* read
//!   **before** that `get`. A hit through the slot needs the slot's epoch to
//!   equal the current one.
//! - Every invalidation (key, tag, whole cache) removes from moka first and
//!   then bumps the epoch (`Release`). A reader that sees the new epoch did
//!   its moka `get` after the removal, so it cannot have picked up a removed
//!   entry; a slot filled before carries an older epoch and misses. Hence,
//!   once an invalidation returns, no slot serves what it removed.
//! - Replacing a key's entry (a load's commit, an `insert`) *retires* the old
//!   entry inside moka's per-key compute; a retired entry is never served
//!   from a slot. Eviction for size or expiry retires it too (listener).
//! - Freshness is still judged on each entry's own times.
//! - One front hit in [`TOUCH_EVERY`] per thread takes the moka path instead,
//!   so moka's eviction policy keeps seeing hot keys as recently used.

use std::hash::{BuildHasher, Hash};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use arc_swap::ArcSwapOption;

/// Slots per cache (a power of two): 8 KiB of pointers.
const SLOTS: usize = 1024;

/// One front hit in this many (per thread) goes to moka instead.
pub(crate) const TOUCH_EVERY: u32 = 32;

/// A slot's content: the key, what moka held for it, and the epoch read
/// before the `get` that found it.
pub(crate) struct Slot<K, E> {
    key: K,
    entry: Arc<E>,
    epoch: u64,
}

/// The table. `E` is the cache's entry type.
pub(crate) struct Front<K, E> {
    slots: Box<[ArcSwapOption<Slot<K, E>>]>,
    epoch: AtomicU64,
    hasher: foldhash::fast::FixedState,
}

/// What an entry tells the table about itself.
pub(crate) trait Retirable {
    /// Whether the entry was replaced or evicted in moka.
    fn is_retired(&self) -> bool;
}

/// The guard of a slot read; keeps the slot alive while its entry is used.
pub(crate) type Guard<K, E> = arc_swap::Guard<Option<Arc<Slot<K, E>>>>;

impl<K, E> Front<K, E>
where
    K: Hash + Eq + Clone,
    E: Retirable,
{
    pub(crate) fn new() -> Self {
        Front {
            slots: (0..SLOTS).map(|_| ArcSwapOption::empty()).collect(),
            epoch: AtomicU64::new(0),
            hasher: foldhash::fast::FixedState::default(),
        }
    }

    fn slot(&self, key: &K) -> &ArcSwapOption<Slot<K, E>> {
        // Truncation is the point: the low bits pick the slot.
        #[allow(clippy::cast_possible_truncation)]
        let index = (self.hasher.hash_one(key) as usize) & (SLOTS - 1);
        &self.slots[index]
    }

    /// Reads `key`'s slot. The guard must be kept while the hit's entry is
    /// used; `epoch` is the one to pass to [`Front::fill`] after a moka hit.
    pub(crate) fn read(&self, key: &K) -> (Guard<K, E>, u64) {
        let epoch = self.epoch.load(Ordering::Acquire);
        (self.slot(key).load(), epoch)
    }

    /// The entry in a slot read by [`Front::read`], if it is `key`'s, of the
    /// current epoch and not retired.
    pub(crate) fn entry<'a>(guard: &'a Guard<K, E>, key: &K, epoch: u64) -> Option<&'a E> {
        let slot = guard.as_ref()?;
        (slot.epoch == epoch && slot.key == *key && !slot.entry.is_retired())
            .then_some(&*slot.entry)
    }

    /// Offers an entry moka just returned for `key`, found with `epoch` read
    /// before the `get`. It takes the slot when the slot is empty, stale or
    /// retired; a slot holding another live key is taken over only now and
    /// then (one offer in eight), so two hot keys sharing a slot do not make
    /// every hit an allocation.
    pub(crate) fn fill(&self, key: &K, entry: &Arc<E>, epoch: u64, current: &Guard<K, E>) {
        let replace = match current.as_ref() {
            None => true,
            Some(slot) if Arc::ptr_eq(&slot.entry, entry) && slot.epoch == epoch => false,
            Some(slot) => {
                slot.epoch != epoch || slot.entry.is_retired() || slot.key == *key || sometimes(8)
            }
        };
        if replace {
            self.slot(key).store(Some(Arc::new(Slot {
                key: key.clone(),
                entry: Arc::clone(entry),
                epoch,
            })));
        }
    }

    /// Makes every slot filled before now miss. Call after removing from
    /// moka.
    pub(crate) fn invalidate(&self) {
        self.epoch.fetch_add(1, Ordering::Release);
    }

    /// Drops every slot's pointer (memory only: [`Front::invalidate`] is what
    /// makes them miss).
    pub(crate) fn clear(&self) {
        for slot in &*self.slots {
            slot.store(None);
        }
    }
}

/// True once in `n` calls on this thread.
fn sometimes(n: u32) -> bool {
    thread_local! {
        static TICK: std::cell::Cell<u32> = const { std::cell::Cell::new(0) };
    }
    TICK.with(|tick| {
        let next = tick.get().wrapping_add(1);
        tick.set(next);
        next % n == 0
    })
}

/// True once in [`TOUCH_EVERY`] front hits on this thread.
pub(crate) fn touch_moka() -> bool {
    sometimes(TOUCH_EVERY)
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::AtomicBool;

    use super::*;

    struct Item(AtomicBool);

    impl Retirable for Item {
        fn is_retired(&self) -> bool {
            self.0.load(Ordering::Acquire)
        }
    }

    fn item() -> Arc<Item> {
        Arc::new(Item(AtomicBool::new(false)))
    }

    #[test]
    fn a_filled_slot_hits_until_the_epoch_moves() {
        let front = Front::<u64, Item>::new();
        let entry = item();
        let (guard, epoch) = front.read(&7);
        assert!(Front::entry(&guard, &7, epoch).is_none());
        front.fill(&7, &entry, epoch, &guard);
        let (guard, epoch) = front.read(&7);
        assert!(Front::entry(&guard, &7, epoch).is_some());
        assert!(Front::entry(&guard, &8, epoch).is_none(), "another key");
        front.invalidate();
        let (guard, epoch) = front.read(&7);
        assert!(Front::entry(&guard, &7, epoch).is_none());
    }

    #[test]
    fn a_fill_that_read_the_epoch_before_an_invalidation_never_hits() {
        let front = Front::<u64, Item>::new();
        let entry = item();
        let (guard, before) = front.read(&7);
        front.invalidate();
        front.fill(&7, &entry, before, &guard);
        let (guard, now) = front.read(&7);
        assert!(Front::entry(&guard, &7, now).is_none());
    }

    #[test]
    fn a_retired_entry_is_not_served() {
        let front = Front::<u64, Item>::new();
        let entry = item();
        let (guard, epoch) = front.read(&7);
        front.fill(&7, &entry, epoch, &guard);
        entry.0.store(true, Ordering::Release);
        let (guard, epoch) = front.read(&7);
        assert!(Front::entry(&guard, &7, epoch).is_none());
    }
}
