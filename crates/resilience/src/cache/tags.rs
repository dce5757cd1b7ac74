//! The tag index: tag → keys carrying it, plus the per-tag generations that
//! keep a load which raced an invalidation from landing as fresh.
//!
//! Every key in a tag's set is stored with the id of the fill that put it
//! there, so a late eviction notice for an older fill of the same key never
//! unindexes a newer one. A tag's state lives while it has keys or a load
//! pinned to it; the store's eviction listener removes keys as entries leave,
//! so the index never holds more keys than the store holds entries.

use std::collections::HashMap;
use std::collections::hash_map::Entry as MapEntry;
use std::hash::Hash;
use std::sync::Arc;

/// A tag name.
pub type Tag = Arc<str>;

/// Id of one fill (one insert of one key), unique within a cache.
pub(crate) type FillId = u64;

struct TagState<K> {
    /// Keys carrying this tag, each with the fill that indexed it.
    keys: HashMap<K, FillId>,
    /// The index epoch at this tag's last invalidation (or at its creation).
    generation: u64,
    /// Loads in flight that named this tag when they started.
    pins: u32,
}

impl<K> TagState<K> {
    fn new(generation: u64) -> Self {
        TagState {
            keys: HashMap::new(),
            generation,
            pins: 0,
        }
    }

    fn is_unused(&self) -> bool {
        self.keys.is_empty() && self.pins == 0
    }
}

/// What a load remembers from its start, to judge its result at the end.
#[derive(Debug)]
pub(crate) struct Ticket {
    start_epoch: u64,
    tags: Box<[Tag]>,
}

impl Ticket {
    pub(crate) fn tags(&self) -> &[Tag] {
        &self.tags
    }
}

pub(crate) struct TagIndex<K> {
    tags: HashMap<Tag, TagState<K>>,
    /// Bumped by every invalidation (of a tag or of everything).
    epoch: u64,
    /// The epoch of the last `invalidate_all`.
    all_epoch: u64,
    next_fill: FillId,
}

impl<K: Hash + Eq + Clone> TagIndex<K> {
    pub(crate) fn new() -> Self {
        TagIndex {
            tags: HashMap::new(),
            epoch: 0,
            all_epoch: 0,
            next_fill: 0,
        }
    }

    /// A load starts: remember the epoch and pin its tags so their
    /// generations survive until it ends.
    pub(crate) fn begin(&mut self, tags: Box<[Tag]>) -> Ticket {
        let epoch = self.epoch;
        for tag in tags.iter() {
            self.tags
                .entry(Tag::clone(tag))
                .or_insert_with(|| TagState::new(epoch))
                .pins += 1;
        }
        Ticket {
            start_epoch: epoch,
            tags,
        }
    }

    /// A load ends (whatever its outcome): unpin its tags.
    pub(crate) fn end(&mut self, ticket: &Ticket) {
        for tag in ticket.tags.iter() {
            if let MapEntry::Occupied(mut state) = self.tags.entry(Tag::clone(tag)) {
                state.get_mut().pins = state.get().pins.saturating_sub(1);
                if state.get().is_unused() {
                    state.remove();
                }
            }
        }
    }

    /// `true` when nothing the load depends on was invalidated since it
    /// started. `late_tags` are tags learned only from the loaded value: for
    /// one without state the index cannot tell, so any invalidation since the
    /// start counts against it (a needless miss, never a stale hit).
    pub(crate) fn is_current(&self, ticket: &Ticket, late_tags: &[Tag]) -> bool {
        let start = ticket.start_epoch;
        if self.all_epoch > start {
            return false;
        }
        ticket
            .tags
            .iter()
            .chain(late_tags)
            .all(|tag| match self.tags.get(tag) {
                Some(state) => state.generation <= start,
                None => self.epoch <= start,
            })
    }

    /// Index `key` under `tags` for a new fill and return the fill's id.
    pub(crate) fn index(&mut self, key: &K, tags: &[Tag]) -> FillId {
        self.next_fill += 1;
        let fill = self.next_fill;
        let epoch = self.epoch;
        for tag in tags {
            self.tags
                .entry(Tag::clone(tag))
                .or_insert_with(|| TagState::new(epoch))
                .keys
                .insert(key.clone(), fill);
        }
        fill
    }

    /// An entry left the store: unindex it where the index still points at
    /// this very fill.
    pub(crate) fn remove(&mut self, key: &K, fill: FillId, tags: &[Tag]) {
        for tag in tags {
            if let Some(state) = self.tags.get_mut(tag) {
                if state.keys.get(key) == Some(&fill) {
                    state.keys.remove(key);
                }
                if state.is_unused() {
                    self.tags.remove(tag);
                }
            }
        }
    }

    /// Invalidate `tag`: move its generation past every running load and hand
    /// back the keys (with their fills) to remove from the store.
    pub(crate) fn invalidate_tag(&mut self, tag: &str) -> HashMap<K, FillId> {
        self.epoch += 1;
        let epoch = self.epoch;
        let Some(state) = self.tags.get_mut(tag) else {
            return HashMap::new();
        };
        state.generation = epoch;
        let keys = std::mem::take(&mut state.keys);
        if state.is_unused() {
            self.tags.remove(tag);
        }
        keys
    }

    /// Invalidate everything: every running load lands as stale and the
    /// index forgets every key (pinned tags keep an empty state).
    pub(crate) fn invalidate_all(&mut self) {
        self.epoch += 1;
        self.all_epoch = self.epoch;
        self.tags.retain(|_, state| {
            state.keys.clear();
            state.pins > 0
        });
    }

    /// Number of (tag, key) pairs indexed.
    pub(crate) fn indexed_keys(&self) -> usize {
        self.tags.values().map(|state| state.keys.len()).sum()
    }

    /// Number of tags with state (keys or pinned loads).
    pub(crate) fn tag_count(&self) -> usize {
        self.tags.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tags(names: &[&str]) -> Box<[Tag]> {
        names.iter().map(|name| Tag::from(*name)).collect()
    }

    #[test]
    fn invalidation_during_a_load_marks_it_stale() {
        let mut index = TagIndex::<u32>::new();
        let ticket = index.begin(tags(&["a"]));
        assert!(index.is_current(&ticket, &[]));
        index.invalidate_tag("b");
        assert!(index.is_current(&ticket, &[]), "another tag moved");
        index.invalidate_tag("a");
        assert!(!index.is_current(&ticket, &[]));
        index.end(&ticket);
        assert_eq!(index.tag_count(), 0);
    }

    #[test]
    fn late_tags_are_judged_conservatively() {
        let mut index = TagIndex::<u32>::new();
        let ticket = index.begin(tags(&[]));
        let fill = index.index(&7, &tags(&["known"]));
        assert!(index.is_current(&ticket, &tags(&["known", "unknown"])));
        index.invalidate_tag("elsewhere");
        assert!(
            index.is_current(&ticket, &tags(&["known"])),
            "known tag kept its generation"
        );
        assert!(!index.is_current(&ticket, &tags(&["unknown"])));
        index.remove(&7, fill, &tags(&["known"]));
        assert_eq!(index.indexed_keys(), 0);
        assert_eq!(index.tag_count(), 0);
    }

    #[test]
    fn an_old_fill_does_not_unindex_a_new_one() {
        let mut index = TagIndex::<u32>::new();
        let old = index.index(&1, &tags(&["t"]));
        let new = index.index(&1, &tags(&["t"]));
        index.remove(&1, old, &tags(&["t"]));
        assert_eq!(index.indexed_keys(), 1);
        let keys = index.invalidate_tag("t");
        assert_eq!(keys.get(&1), Some(&new));
    }
}
