//! One typed table over a sled tree, instead of get/put/decode/scan/sweep copied per
//! tree. A [`Table`] knows its tree's name (from `keygate_migrations::trees`, where
//! every name is declared once), so every `Corrupt` error names the tree it came from;
//! its record type converts to and from the versioned on-disk enum through
//! [`Versioned`], so callers only ever see the latest shape.
//!
//! Writes that span trees stay sled transactions in `store.rs` and `auth.rs`: they
//! [`Table::encode`] once, before the transaction (a conflict re-runs the closure, and
//! an encoding failure is no reason to abort one), and insert the bytes through
//! [`Table::tree`] inside it. They only test keys for presence in there, so no decode
//! helper is needed inside a transaction.

use std::marker::PhantomData;
use std::sync::{Arc, PoisonError, RwLock, RwLockReadGuard, RwLockWriteGuard};

use keygate_core::ids::UserId;
use serde::Serialize;
use serde::de::DeserializeOwned;
use sled::{IVec, Tree};

use crate::StoreError;

/// A record stored as a versioned enum tagged `"v"` (`StoredGrant::V1(GrantRecord)`…).
/// A migration adds `V2` and never edits `V1`; `from_stored` brings every version up to
/// the latest shape, which is the only one code works with.
pub(crate) trait Versioned: Clone {
    /// The on-disk enum.
    type Stored: Serialize + DeserializeOwned;
    /// This record as the latest version.
    fn into_stored(self) -> Self::Stored;
    /// Any stored version, as the latest shape.
    fn from_stored(stored: Self::Stored) -> Self;
}

/// The store's write gate, so a backup sees one point in time across every tree
/// (`backup.rs`): each write — one record, or one multi-tree transaction — holds it
/// shared while it runs; [`Gate::freeze`] holds it exclusively while a snapshot copies
/// the trees, so no write is half in it. Taken only around single sled calls and
/// transactions, never nested (a nested shared hold could wait on a queued freeze).
#[derive(Clone, Default)]
pub(crate) struct Gate(Arc<RwLock<()>>);

impl Gate {
    /// Held (shared) by a write for its duration.
    pub(crate) fn write(&self) -> RwLockReadGuard<'_, ()> {
        self.0.read().unwrap_or_else(PoisonError::into_inner)
    }

    /// Held (exclusively) by a snapshot: writes wait, reads go on.
    pub(crate) fn freeze(&self) -> RwLockWriteGuard<'_, ()> {
        self.0.write().unwrap_or_else(PoisonError::into_inner)
    }
}

/// A tree of `key → R` records.
pub(crate) struct Table<R> {
    tree: Tree,
    name: &'static str,
    gate: Gate,
    record: PhantomData<fn() -> R>,
}

// By hand: a derive would ask `R: Clone` of a type it only names.
impl<R> Clone for Table<R> {
    fn clone(&self) -> Self {
        Self {
            tree: self.tree.clone(),
            name: self.name,
            gate: self.gate.clone(),
            record: PhantomData,
        }
    }
}

impl<R: Versioned> Table<R> {
    pub(crate) fn open(db: &sled::Db, name: &'static str, gate: &Gate) -> Result<Self, StoreError> {
        Ok(Self {
            tree: db.open_tree(name)?,
            name,
            gate: gate.clone(),
            record: PhantomData,
        })
    }

    /// The tree's name, as errors report it.
    pub(crate) fn name(&self) -> &'static str {
        self.name
    }

    /// The raw tree, for transactions and key-only reads.
    pub(crate) fn tree(&self) -> &Tree {
        &self.tree
    }

    /// The bytes stored for `record`: its latest version, as JSON.
    pub(crate) fn encode(&self, record: &R) -> Result<Vec<u8>, StoreError> {
        serde_json::to_vec(&record.clone().into_stored())
            .map_err(|e| StoreError::Encode(e.to_string()))
    }

    /// A stored value read back; `Corrupt` (naming this tree) when it does not parse.
    pub(crate) fn decode(&self, bytes: &[u8]) -> Result<R, StoreError> {
        decode(self.name, bytes)
    }

    /// A `Corrupt` error naming this tree.
    pub(crate) fn corrupt(&self, reason: impl Into<String>) -> StoreError {
        StoreError::Corrupt {
            tree: self.name,
            reason: reason.into(),
        }
    }

    pub(crate) fn get(&self, key: impl AsRef<[u8]>) -> Result<Option<R>, StoreError> {
        self.tree.get(key)?.map(|v| self.decode(&v)).transpose()
    }

    pub(crate) fn contains(&self, key: impl AsRef<[u8]>) -> Result<bool, StoreError> {
        Ok(self.tree.contains_key(key)?)
    }

    /// Stores (or replaces) the record under `key`.
    pub(crate) fn put(&self, key: impl AsRef<[u8]>, record: &R) -> Result<(), StoreError> {
        let bytes = self.encode(record)?;
        let _w = self.gate.write();
        self.tree.insert(key, bytes)?;
        Ok(())
    }

    /// Replaces the record under `key` only while one is there: never brings back a
    /// record removed meanwhile.
    pub(crate) fn put_existing(&self, key: impl AsRef<[u8]>, record: &R) -> Result<(), StoreError> {
        let new = self.encode(record)?;
        let _w = self.gate.write();
        self.tree
            .fetch_and_update(key, |old| old.map(|_| new.clone()))?;
        Ok(())
    }

    /// Removes and returns the record under `key`, in one step: of two concurrent
    /// takes, one gets the record and the other `None`.
    pub(crate) fn take(&self, key: impl AsRef<[u8]>) -> Result<Option<R>, StoreError> {
        let taken = {
            let _w = self.gate.write();
            self.tree.remove(key)?
        };
        taken.map(|v| self.decode(&v)).transpose()
    }

    /// Removes the record under `key`; returns whether there was one.
    pub(crate) fn remove(&self, key: impl AsRef<[u8]>) -> Result<bool, StoreError> {
        let _w = self.gate.write();
        Ok(self.tree.remove(key)?.is_some())
    }

    /// Compare-and-swap: replaces the record under `key` with `new` only if it is still
    /// exactly `old` (byte for byte, as encoded). Returns whether it did.
    pub(crate) fn compare_and_swap(
        &self,
        key: impl AsRef<[u8]>,
        old: &R,
        new: &R,
    ) -> Result<bool, StoreError> {
        let (old, new) = (self.encode(old)?, self.encode(new)?);
        let _w = self.gate.write();
        let swapped = self.tree.compare_and_swap(key, Some(old), Some(new))?;
        Ok(swapped.is_ok())
    }

    /// Atomically applies `change` to the record under `key`; returns the updated
    /// record, or `None` if there is none. A record that does not decode is left as it
    /// is and reported `Corrupt`.
    pub(crate) fn update(
        &self,
        key: impl AsRef<[u8]>,
        change: impl Fn(&mut R),
    ) -> Result<Option<R>, StoreError> {
        let mut failure = None;
        let _w = self.gate.write();
        let updated = self.tree.update_and_fetch(key, |old| {
            // sled re-runs this when another writer got in first; only the last run counts.
            failure = None;
            let old = old?;
            let changed = self.decode(old).and_then(|mut rec| {
                change(&mut rec);
                self.encode(&rec)
            });
            match changed {
                Ok(bytes) => Some(bytes),
                Err(e) => {
                    failure = Some(e);
                    Some(old.to_vec())
                }
            }
        })?;
        if let Some(e) = failure {
            return Err(e);
        }
        updated.map(|v| self.decode(&v)).transpose()
    }

    /// Every record with its key, in key order; a record that does not decode is a
    /// `Corrupt` item.
    pub(crate) fn entries(&self) -> impl Iterator<Item = Result<(IVec, R), StoreError>> + '_ {
        self.tree.iter().map(|item| {
            let (key, value) = item?;
            Ok((key, self.decode(&value)?))
        })
    }

    /// Up to `limit` records under `prefix` that `keep` picks, in key order, starting
    /// after the key `after` (a page's cursor; one outside `prefix` yields nothing, so a
    /// caller confined to a prefix stays in it). The second value is the key to continue
    /// after when more records under `prefix` may follow.
    pub(crate) fn page(
        &self,
        prefix: &[u8],
        after: Option<&[u8]>,
        limit: usize,
        keep: impl Fn(&R) -> bool,
    ) -> Result<(Vec<R>, Option<Vec<u8>>), StoreError> {
        use std::ops::Bound;
        let start = match after {
            Some(a) if !a.starts_with(prefix) => return Ok((Vec::new(), None)),
            Some(a) => Bound::Excluded(a.to_vec()),
            None => Bound::Included(prefix.to_vec()),
        };
        let (mut keys, mut items) = (Vec::new(), Vec::new());
        for item in self.tree.range::<Vec<u8>, _>((start, Bound::Unbounded)) {
            let (key, value) = item?;
            if !key.starts_with(prefix) {
                break;
            }
            let record = self.decode(&value)?;
            if !keep(&record) {
                continue;
            }
            if items.len() == limit {
                // One more record follows: the page ends at its last item.
                let next = keys.last().map(|k: &IVec| k.to_vec());
                return Ok((items, next));
            }
            keys.push(key);
            items.push(record);
        }
        Ok((items, None))
    }

    /// Up to `limit` records with keys in `low..high` that `keep` picks, in descending
    /// key order (newest first, for trees keyed by time), starting before the key
    /// `after` (a page's cursor; one outside `low..high` yields nothing, so a caller
    /// confined to a range stays in it). The second value is the key to continue
    /// before when more records in the range may follow.
    pub(crate) fn page_desc(
        &self,
        low: &[u8],
        high: &[u8],
        after: Option<&[u8]>,
        limit: usize,
        keep: impl Fn(&R) -> bool,
    ) -> Result<(Vec<R>, Option<Vec<u8>>), StoreError> {
        let end = match after {
            Some(a) if a < low || a >= high => return Ok((Vec::new(), None)),
            Some(a) => a,
            None => high,
        };
        if low >= end {
            return Ok((Vec::new(), None));
        }
        let (mut last, mut items) = (None::<IVec>, Vec::new());
        for item in self.tree.range(low..end).rev() {
            let (key, value) = item?;
            let record = self.decode(&value)?;
            if !keep(&record) {
                continue;
            }
            if items.len() == limit {
                // One more record follows: the page ends at its last item.
                return Ok((items, last.map(|k| k.to_vec())));
            }
            last = Some(key);
            items.push(record);
        }
        Ok((items, None))
    }

    /// Every record, in key order.
    pub(crate) fn values(&self) -> Result<Vec<R>, StoreError> {
        self.entries().map(|e| e.map(|(_, r)| r)).collect()
    }

    /// The keys of the records `matches` picks; records that do not decode are skipped.
    pub(crate) fn keys_where(&self, matches: impl Fn(&R) -> bool) -> Result<Vec<IVec>, StoreError> {
        let mut keys = Vec::new();
        for item in self.tree.iter() {
            let (key, value) = item?;
            if self.decode(&value).is_ok_and(|r| matches(&r)) {
                keys.push(key);
            }
        }
        Ok(keys)
    }

    /// Removes every record `expired` picks, and every record that does not decode
    /// (for short-lived, single-use records: one that cannot be read is of no use).
    /// Returns how many it removed.
    pub(crate) fn sweep(&self, expired: impl Fn(&R) -> bool) -> Result<usize, StoreError> {
        let mut n = 0;
        for item in self.tree.iter() {
            let (key, value) = item?;
            if self.decode(&value).map(|r| expired(&r)).unwrap_or(true) {
                let _w = self.gate.write();
                self.tree.remove(key)?;
                n += 1;
            }
        }
        Ok(n)
    }

    /// How many records there are. A full scan (sled keeps no count): callers limit how
    /// often they ask.
    pub(crate) fn count(&self) -> usize {
        self.tree.len()
    }
}

/// A stored value of tree `tree` read back as its latest shape; `Corrupt` (naming the
/// tree) when it does not parse. Also reads a backup's records (`backup.rs`).
pub(crate) fn decode<R: Versioned>(tree: &'static str, bytes: &[u8]) -> Result<R, StoreError> {
    serde_json::from_slice(bytes)
        .map(R::from_stored)
        .map_err(|e| StoreError::Corrupt {
            tree,
            reason: e.to_string(),
        })
}

/// A record as the JSON value both backends store: its latest version, tagged `"v"`
/// (PostgreSQL keeps it as `jsonb`, sled as the same JSON in bytes).
pub(crate) fn encode_value<R: Versioned>(record: &R) -> Result<serde_json::Value, StoreError> {
    serde_json::to_value(record.clone().into_stored())
        .map_err(|e| StoreError::Encode(e.to_string()))
}

/// A stored JSON value of table `tree` read back as its latest shape, like [`decode`].
pub(crate) fn decode_value<R: Versioned>(
    tree: &'static str,
    value: serde_json::Value,
) -> Result<R, StoreError> {
    serde_json::from_value(value)
        .map(R::from_stored)
        .map_err(|e| StoreError::Corrupt {
            tree,
            reason: e.to_string(),
        })
}

/// A tree of keys that point elsewhere: a per-person index (`user id ‖ id → ()`) or a
/// unique lookup (`credential id → passkey id`).
#[derive(Clone)]
pub(crate) struct Index {
    tree: Tree,
    name: &'static str,
}

impl Index {
    pub(crate) fn open(db: &sled::Db, name: &'static str) -> Result<Self, StoreError> {
        Ok(Self {
            tree: db.open_tree(name)?,
            name,
        })
    }

    pub(crate) fn name(&self) -> &'static str {
        self.name
    }

    pub(crate) fn tree(&self) -> &Tree {
        &self.tree
    }

    /// The full index keys filed under `user`, in key order.
    pub(crate) fn keys_for(&self, user: &UserId) -> Result<Vec<IVec>, StoreError> {
        Ok(self
            .tree
            .scan_prefix(user.as_str())
            .keys()
            .collect::<Result<_, _>>()?)
    }

    /// The ids filed under `user` (the key past the user id), in key order.
    pub(crate) fn ids_for<T>(
        &self,
        user: &UserId,
        parse: impl Fn(&str) -> Option<T>,
    ) -> Result<Vec<T>, StoreError> {
        self.keys_for(user)?
            .iter()
            .map(|key| {
                key.get(user.as_str().len()..)
                    .and_then(|b| std::str::from_utf8(b).ok())
                    .and_then(&parse)
                    .ok_or_else(|| self.corrupt("bad index key"))
            })
            .collect()
    }

    /// The id `key` points to, if any.
    pub(crate) fn lookup<T>(
        &self,
        key: impl AsRef<[u8]>,
        parse: impl Fn(&str) -> Option<T>,
    ) -> Result<Option<T>, StoreError> {
        let Some(value) = self.tree.get(key)? else {
            return Ok(None);
        };
        std::str::from_utf8(&value)
            .ok()
            .and_then(parse)
            .map(Some)
            .ok_or_else(|| self.corrupt("bad id"))
    }

    fn corrupt(&self, reason: &str) -> StoreError {
        StoreError::Corrupt {
            tree: self.name,
            reason: reason.into(),
        }
    }
}

/// The key of a per-person index entry: `user id ‖ id`.
pub(crate) fn pair_key(a: &str, b: &str) -> Vec<u8> {
    let mut k = Vec::with_capacity(a.len() + b.len());
    k.extend_from_slice(a.as_bytes());
    k.extend_from_slice(b.as_bytes());
    k
}

#[cfg(test)]
mod tests {
    use serde::{Deserialize, Serialize};

    use super::*;

    /// The latest shape of a test record; `V1` had no `expires_at`.
    #[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
    struct Note {
        text: String,
        expires_at: u64,
    }

    #[derive(Serialize, Deserialize)]
    struct NoteV1 {
        text: String,
    }

    #[derive(Serialize, Deserialize)]
    #[serde(tag = "v")]
    enum StoredNote {
        #[serde(rename = "1")]
        V1(NoteV1),
        #[serde(rename = "2")]
        V2(Note),
    }

    impl Versioned for Note {
        type Stored = StoredNote;
        fn into_stored(self) -> StoredNote {
            StoredNote::V2(self)
        }
        fn from_stored(stored: StoredNote) -> Self {
            match stored {
                StoredNote::V1(old) => Note {
                    text: old.text,
                    expires_at: 0,
                },
                StoredNote::V2(note) => note,
            }
        }
    }

    fn note(text: &str, expires_at: u64) -> Note {
        Note {
            text: text.into(),
            expires_at,
        }
    }

    fn table() -> (sled::Db, Table<Note>) {
        let db = sled::Config::new().temporary(true).open().unwrap();
        let table = Table::open(&db, "notes", &Gate::default()).unwrap();
        (db, table)
    }

    #[test]
    fn records_round_trip_as_the_latest_version() {
        let (_db, t) = table();
        t.put("a", &note("hello", 5)).unwrap();
        assert_eq!(t.get("a").unwrap(), Some(note("hello", 5)));
        let raw = t.tree().get("a").unwrap().unwrap();
        assert_eq!(&raw[..], br#"{"v":"2","text":"hello","expires_at":5}"#);

        // An older version reads as the latest shape.
        t.tree()
            .insert("old", br#"{"v":"1","text":"before"}"#)
            .unwrap();
        assert_eq!(t.get("old").unwrap(), Some(note("before", 0)));
        assert_eq!(t.values().unwrap().len(), 2);
        assert_eq!(t.count(), 2);

        let changed = t.update("a", |n| n.expires_at = 9).unwrap();
        assert_eq!(changed, Some(note("hello", 9)));
        assert_eq!(t.update("missing", |n| n.expires_at = 9).unwrap(), None);
        assert!(
            !t.compare_and_swap("a", &note("hello", 5), &note("x", 1))
                .unwrap()
        );
        assert!(
            t.compare_and_swap("a", &note("hello", 9), &note("x", 1))
                .unwrap()
        );

        assert_eq!(t.take("a").unwrap(), Some(note("x", 1)));
        assert_eq!(t.take("a").unwrap(), None);
    }

    #[test]
    fn a_corrupt_record_is_an_error_naming_the_tree() {
        let (_db, t) = table();
        t.tree().insert("bad", b"{not json").unwrap();
        for result in [t.get("bad"), t.update("bad", |_| {})] {
            match result {
                Err(StoreError::Corrupt { tree, .. }) => assert_eq!(tree, "notes"),
                other => panic!("expected Corrupt, got {other:?}"),
            }
        }
        // The failed update left the bytes alone.
        assert_eq!(&t.tree().get("bad").unwrap().unwrap()[..], b"{not json");
        assert!(matches!(
            t.values(),
            Err(StoreError::Corrupt { tree: "notes", .. })
        ));
    }

    #[test]
    fn sweep_removes_expired_and_unreadable_records_only() {
        let (_db, t) = table();
        t.put("old", &note("old", 100)).unwrap();
        t.put("new", &note("new", 300)).unwrap();
        t.tree().insert("bad", b"{not json").unwrap();
        assert_eq!(t.keys_where(|n| n.expires_at > 0).unwrap().len(), 2);

        assert_eq!(t.sweep(|n| n.expires_at <= 200).unwrap(), 2);
        assert_eq!(t.count(), 1);
        assert_eq!(t.get("new").unwrap(), Some(note("new", 300)));
    }

    #[test]
    fn pages_walk_a_prefix_and_stay_inside_it() {
        let (_db, t) = table();
        for (k, at) in [("a/1", 1), ("a/2", 2), ("a/3", 3), ("a/4", 4), ("b/1", 5)] {
            t.put(k, &note(k, at)).unwrap();
        }
        let texts = |v: &[Note]| v.iter().map(|n| n.text.clone()).collect::<Vec<_>>();
        let (first, next) = t.page(b"a/", None, 2, |_| true).unwrap();
        assert_eq!(texts(&first), ["a/1", "a/2"]);
        assert_eq!(next.as_deref(), Some(&b"a/2"[..]));
        let (second, next) = t.page(b"a/", next.as_deref(), 2, |_| true).unwrap();
        assert_eq!(texts(&second), ["a/3", "a/4"]);
        // Exactly full and nothing after: no cursor.
        assert_eq!(next, None);
        // A filter skips without ending the page early.
        let (odd, next) = t.page(b"a/", None, 2, |n| n.expires_at % 2 == 1).unwrap();
        assert_eq!(
            (texts(&odd), next),
            (vec!["a/1".into(), "a/3".into()], None)
        );
        // A cursor from elsewhere reaches nothing.
        assert!(
            t.page(b"a/", Some(b"b/0"), 10, |_| true)
                .unwrap()
                .0
                .is_empty()
        );
        assert!(
            t.page(b"b/", Some(b"a/9"), 10, |_| true)
                .unwrap()
                .0
                .is_empty()
        );
        // The empty prefix is the whole table.
        assert_eq!(t.page(b"", None, 10, |_| true).unwrap().0.len(), 5);
    }

    #[test]
    fn descending_pages_walk_a_range_newest_first_and_stay_inside_it() {
        let (_db, t) = table();
        for (k, at) in [
            ("a/1", 1),
            ("a/2", 2),
            ("a/3", 3),
            ("a/4", 4),
            ("a/5", 5),
            ("b/1", 6),
        ] {
            t.put(k, &note(k, at)).unwrap();
        }
        let texts = |v: &[Note]| v.iter().map(|n| n.text.clone()).collect::<Vec<_>>();
        // The whole of `a/`, two at a time, newest first.
        let (first, next) = t.page_desc(b"a/", b"a0", None, 2, |_| true).unwrap();
        assert_eq!(texts(&first), ["a/5", "a/4"]);
        assert_eq!(next.as_deref(), Some(&b"a/4"[..]));
        let (second, next) = t
            .page_desc(b"a/", b"a0", next.as_deref(), 2, |_| true)
            .unwrap();
        assert_eq!(texts(&second), ["a/3", "a/2"]);
        let (third, next) = t
            .page_desc(b"a/", b"a0", next.as_deref(), 2, |_| true)
            .unwrap();
        assert_eq!((texts(&third), next), (vec!["a/1".to_owned()], None));
        // Exactly full and nothing after: no cursor.
        let (all, next) = t.page_desc(b"a/", b"a0", None, 5, |_| true).unwrap();
        assert_eq!((all.len(), next), (5, None));
        // The range is half-open: `high` itself is out, `low` in.
        let (mid, _) = t.page_desc(b"a/2", b"a/4", None, 10, |_| true).unwrap();
        assert_eq!(texts(&mid), ["a/3", "a/2"]);
        // A filter skips without ending the page early.
        let (odd, next) = t
            .page_desc(b"a/", b"a0", None, 2, |n| n.expires_at % 2 == 1)
            .unwrap();
        assert_eq!(texts(&odd), ["a/5", "a/3"]);
        let (rest, next) = t
            .page_desc(b"a/", b"a0", next.as_deref(), 2, |n| n.expires_at % 2 == 1)
            .unwrap();
        assert_eq!((texts(&rest), next), (vec!["a/1".to_owned()], None));
        // A cursor from outside the range reaches nothing, on either side.
        for outside in [&b"b/1"[..], b"a0", b"a.", b"\x00"] {
            let (got, next) = t
                .page_desc(b"a/", b"a0", Some(outside), 10, |_| true)
                .unwrap();
            assert!(got.is_empty() && next.is_none(), "{outside:?}");
        }
        // An empty or inverted range is empty.
        assert!(
            t.page_desc(b"a/3", b"a/3", None, 10, |_| true)
                .unwrap()
                .0
                .is_empty()
        );
        assert!(
            t.page_desc(b"b", b"a", None, 10, |_| true)
                .unwrap()
                .0
                .is_empty()
        );
        // A corrupt record in range is an error naming the tree.
        t.tree().insert("a/6", b"{not json").unwrap();
        assert!(matches!(
            t.page_desc(b"a/", b"a0", None, 10, |_| true),
            Err(StoreError::Corrupt { tree: "notes", .. })
        ));
    }

    #[test]
    fn index_ids_parse_past_the_user_id() {
        let db = sled::Config::new().temporary(true).open().unwrap();
        let idx = Index::open(&db, "notes_by_user").unwrap();
        let user = UserId::generate();
        let other = UserId::generate();
        idx.tree()
            .insert(pair_key(user.as_str(), "n1"), &[])
            .unwrap();
        idx.tree()
            .insert(pair_key(user.as_str(), "n2"), &[])
            .unwrap();
        idx.tree()
            .insert(pair_key(other.as_str(), "n3"), &[])
            .unwrap();
        let ids = idx.ids_for(&user, |s| Some(s.to_owned())).unwrap();
        assert_eq!(ids, ["n1", "n2"]);
        match idx.ids_for(&user, |_| None::<String>) {
            Err(StoreError::Corrupt { tree, .. }) => assert_eq!(tree, "notes_by_user"),
            other => panic!("expected Corrupt, got {other:?}"),
        }
    }
}
