//! Read-through caches of decoded records for the proxy's per-request lookups, so a
//! request costs no sled read and no JSON decode for a record seen recently: grants by
//! id ([`SledStore::grant_cached`](crate::SledStore::grant_cached)) and sealed vault records by
//! person ([`SledStore::vault_cached`](crate::SledStore::vault_cached)).
//!
//! Each is kept coherent by the store itself: every store function that writes the
//! cached tree evicts what it wrote after writing it (or clears the cache), so no
//! caller can forget. A reader that missed inserts what it read only if no write to that
//! tree finished meanwhile (a generation counter, bumped by every eviction under the
//! same lock), so a record read before a write can never be cached after it.
//!
//! They cache records, never verdicts: a grant's state, expiry and rotation grace are
//! checked against the clock by the caller on every request, and a grant record holds
//! only hashes of secrets; a vault record stays sealed (the JWE is opened per request,
//! so no OpenAI key is ever held in plaintext beyond one request). Only records that
//! exist are cached (an unknown id is a miss every time), and at most `capacity` of
//! them, so ids sprayed by an attacker cannot grow a cache.

use std::collections::HashMap;
use std::hash::Hash;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

pub(crate) struct RecordCache<K, V> {
    inner: Mutex<Inner<K, V>>,
    capacity: usize,
}

struct Inner<K, V> {
    map: HashMap<K, Arc<V>>,
    /// Bumped by every eviction: a miss started before it may not insert.
    generation: u64,
}

impl<K: Eq + Hash + Clone, V> RecordCache<K, V> {
    pub(crate) fn new(capacity: usize) -> Self {
        Self {
            inner: Mutex::new(Inner {
                map: HashMap::new(),
                generation: 0,
            }),
            capacity,
        }
    }

    fn get(&self, id: &K) -> Option<Arc<V>> {
        self.lock().map.get(id).cloned()
    }

    /// The cached record of `id`, else what `load` reads from the store (cached when
    /// it exists and no write finished while it was read).
    pub(crate) fn read_through<E>(
        &self,
        id: &K,
        load: impl FnOnce() -> Result<Option<V>, E>,
    ) -> Result<Option<Arc<V>>, E> {
        if let Some(hit) = self.get(id) {
            return Ok(Some(hit));
        }
        let generation = self.generation();
        let Some(record) = load()? else {
            return Ok(None);
        };
        let record = Arc::new(record);
        self.insert(generation, id.clone(), record.clone());
        Ok(Some(record))
    }

    /// To be read before the store is, on a miss; handed back to [`Self::insert`].
    fn generation(&self) -> u64 {
        self.lock().generation
    }

    /// Caches `record`, filed under `id` and read from the store after `generation` was
    /// taken, unless a write finished since. A full cache drops some other entry first.
    fn insert(&self, generation: u64, id: K, record: Arc<V>) {
        if self.capacity == 0 {
            return;
        }
        let mut inner = self.lock();
        if inner.generation != generation {
            return;
        }
        if inner.map.len() >= self.capacity
            && !inner.map.contains_key(&id)
            && let Some(victim) = inner.map.keys().next().cloned()
        {
            inner.map.remove(&victim);
        }
        inner.map.insert(id, record);
    }

    /// Called after every write of record `id` (whether it succeeded or not).
    pub(crate) fn evict(&self, id: &K) {
        let mut inner = self.lock();
        inner.map.remove(id);
        inner.generation = inner.generation.wrapping_add(1);
    }

    /// Called after a write that may have touched any record (a person's deletion).
    pub(crate) fn clear(&self) {
        let mut inner = self.lock();
        inner.map.clear();
        inner.generation = inner.generation.wrapping_add(1);
    }

    /// Nothing panics while the lock is held; should something ever have, the map is
    /// still consistent (every mutation is one call), so the cache goes on.
    fn lock(&self) -> MutexGuard<'_, Inner<K, V>> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }
}
