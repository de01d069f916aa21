//! The grant cache: decoded grant records by id, for the proxy's per-request lookup
//! ([`Store::grant_cached`](crate::Store::grant_cached)), so a request costs no sled
//! read and no JSON decode for a grant seen recently.
//!
//! It is kept coherent by the store itself: every store function that writes the
//! grants tree evicts what it wrote after writing it (or clears the cache), so no
//! caller can forget. A reader that missed inserts what it read only if no grant write
//! finished meanwhile (a generation counter, bumped by every eviction under the same
//! lock), so a record read before a write can never be cached after it.
//!
//! It caches records, never verdicts: state, expiry and a rotation's grace are checked
//! against the clock by the caller on every request, and the record holds only hashes
//! of secrets. Only grants that exist are cached (an unknown id is a miss every time),
//! and at most `capacity` of them, so ids sprayed by an attacker cannot grow it.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use keygate_core::ids::GrantId;

use crate::records::GrantRecord;

pub(crate) struct GrantCache {
    inner: Mutex<Inner>,
    capacity: usize,
}

#[derive(Default)]
struct Inner {
    map: HashMap<GrantId, Arc<GrantRecord>>,
    /// Bumped by every eviction: a miss started before it may not insert.
    generation: u64,
}

impl GrantCache {
    pub(crate) fn new(capacity: usize) -> Self {
        Self {
            inner: Mutex::new(Inner::default()),
            capacity,
        }
    }

    pub(crate) fn get(&self, id: &GrantId) -> Option<Arc<GrantRecord>> {
        self.lock().map.get(id).cloned()
    }

    /// To be read before the store is, on a miss; handed back to [`Self::insert`].
    pub(crate) fn generation(&self) -> u64 {
        self.lock().generation
    }

    /// Caches `record`, read from the store after `generation` was taken, unless a
    /// grant write finished since. A full cache drops some other entry first.
    pub(crate) fn insert(&self, generation: u64, record: Arc<GrantRecord>) {
        if self.capacity == 0 {
            return;
        }
        let mut inner = self.lock();
        if inner.generation != generation {
            return;
        }
        if inner.map.len() >= self.capacity
            && !inner.map.contains_key(&record.id)
            && let Some(victim) = inner.map.keys().next().cloned()
        {
            inner.map.remove(&victim);
        }
        inner.map.insert(record.id.clone(), record);
    }

    /// Called after every write of grant `id` (whether it succeeded or not).
    pub(crate) fn evict(&self, id: &GrantId) {
        let mut inner = self.lock();
        inner.map.remove(id);
        inner.generation = inner.generation.wrapping_add(1);
    }

    /// Called after a write that may have touched any grant (a person's deletion).
    pub(crate) fn clear(&self) {
        let mut inner = self.lock();
        inner.map.clear();
        inner.generation = inner.generation.wrapping_add(1);
    }

    /// Nothing panics while the lock is held; should something ever have, the map is
    /// still consistent (every mutation is one call), so the cache goes on.
    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }
}
