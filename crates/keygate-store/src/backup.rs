//! Backups: a point-in-time copy of every tree, and a new store made from one.
//!
//! **Consistency.** Every write — one record, or one multi-tree transaction — holds the
//! store's write gate (`table.rs`) while it runs. [`SledStore::snapshot`] freezes the gate
//! (waiting for the writes under way to finish) and copies every tree while it is
//! frozen. The result is the store at that instant, across all trees: each write that
//! finished before it, none that started after it, and no half of a transaction (a
//! grant without its index entry, an audit entry without its per-person copy). Writes
//! wait for the copy — proportional to the size of the store; reads, the proxy
//! included, never wait. The copy is encoded outside the gate. (docs/OPERATIONS.md has
//! figures.)
//!
//! **What is in it.** Every tree's keys and values as stored: the vault's sealed JWEs
//! (never a plaintext key), hashes of grant secrets and session ids, the audit log.
//! The master keyring is never in the store, so never in a backup.
//!
//! **Format** (`keygate-backup` version 1): the line `keygate-backup 1\n`; a header
//! (u32 big-endian length, then JSON: schema version, creation time, the id floor,
//! each tree's name and entry count); each tree's entries in key order as
//! (u32 length, key, u32 length, value); then the SHA-256 of everything before it, so
//! a truncated or altered file is refused before anything is restored.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use keygate_core::ids::UserId;
use keygate_core::time::UnixTime;
use keygate_migrations::trees;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use sled::IVec;
use thiserror::Error;

use crate::records::{OperatorKeyRecord, VaultRecord};
use crate::table::decode;
use crate::{SledStore, StoreError, StoreOptions};

const MAGIC: &[u8] = b"keygate-backup 1\n";
const DIGEST_LEN: usize = 32;
/// The key in the `meta` tree holding the id floor (see [`SledStore::next_id`]).
const ID_FLOOR_KEY: &str = "id_floor";

#[derive(Debug, Error)]
pub enum BackupError {
    #[error("BK0001 this is not a keygate backup")]
    NotABackup,
    #[error("BK0002 the backup is damaged or incomplete (its checksum does not match)")]
    Damaged,
    #[error("BK0003 the backup cannot be read: {0}")]
    Format(String),
    #[error(
        "BK0004 the backup holds store schema {found}, newer than this keygate knows ({known}); \
         restore it with a keygate at least as new as the one that made it"
    )]
    NewerSchema { found: u32, known: u32 },
    #[error("BK0005 {0} is not empty; restore only into a new or empty directory")]
    NotEmpty(String),
    #[error("BK0006 {path}: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Every tree by name, each with its entries in key order.
type Trees = Vec<(IVec, Vec<(IVec, IVec)>)>;

/// The store at one instant (see the module docs), held in memory.
pub struct Snapshot {
    header: Header,
    trees: Trees,
}

#[derive(Serialize, Deserialize)]
struct Header {
    schema_version: u32,
    created_at: UnixTime,
    id_floor: u64,
    trees: Vec<TreeHeader>,
}

#[derive(Serialize, Deserialize)]
struct TreeHeader {
    name: String,
    entries: u64,
}

/// What a backup holds, for the command line to say (no record contents).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SnapshotSummary {
    pub schema_version: u32,
    pub created_at: UnixTime,
    /// Every tree and how many entries it has.
    pub trees: Vec<(String, u64)>,
}

impl SnapshotSummary {
    pub fn entries(&self) -> u64 {
        self.trees.iter().map(|(_, n)| n).sum()
    }
}

impl SledStore {
    /// Copies every tree as it stands at one instant (see the module docs). `now` is
    /// recorded as the backup's time.
    pub fn snapshot(&self, now: UnixTime) -> Result<Snapshot, StoreError> {
        let (copied, id_floor) = self.copy_at_one_instant()?;
        let trees = copied
            .iter()
            .map(|(name, entries)| TreeHeader {
                name: String::from_utf8_lossy(name).into_owned(),
                entries: entries.len() as u64,
            })
            .collect();
        Ok(Snapshot {
            header: Header {
                schema_version: self.schema_version()?,
                created_at: now,
                id_floor,
                trees,
            },
            trees: copied,
        })
    }
}

impl SledStore {
    /// The copy behind [`SledStore::snapshot`]: every tree, sorted by name, and an id floor.
    fn copy_at_one_instant(&self) -> Result<(Trees, u64), StoreError> {
        let mut names = self.db.tree_names();
        names.sort();
        let trees = names
            .iter()
            .map(|n| self.db.open_tree(n))
            .collect::<Result<Vec<_>, _>>()?;
        // The gate frozen for the whole copy: every write that began before it has
        // finished, none starts until the copy is made. (An incremental copy that
        // watched the trees with sled subscribers let writes go on meanwhile, but a
        // subscriber stops reporting after a write that changes nothing, which could
        // leave written keys out of the copy and fill its queue until writers blocked
        // under the gate: docs/DECISIONS.md, "Issue 13 — backup".)
        let frozen = self.gate.freeze();
        let copies = trees
            .iter()
            .map(|t| t.iter().collect::<Result<BTreeMap<IVec, IVec>, _>>())
            .collect::<Result<Vec<_>, _>>()?;
        let id_floor = self.next_id()?;
        drop(frozen);
        let copied = names
            .into_iter()
            .zip(copies)
            .map(|(name, copy)| (name, copy.into_iter().collect()))
            .collect();
        Ok((copied, id_floor))
    }
}

impl Snapshot {
    pub fn summary(&self) -> SnapshotSummary {
        SnapshotSummary {
            schema_version: self.header.schema_version,
            created_at: self.header.created_at,
            trees: self
                .header
                .trees
                .iter()
                .map(|t| (t.name.clone(), t.entries))
                .collect(),
        }
    }

    /// The backup file's bytes (format in the module docs).
    pub fn to_bytes(&self) -> Result<Vec<u8>, StoreError> {
        let header =
            serde_json::to_vec(&self.header).map_err(|e| StoreError::Encode(e.to_string()))?;
        let size: usize = self
            .trees
            .iter()
            .flat_map(|(_, e)| e.iter())
            .map(|(k, v)| 8 + k.len() + v.len())
            .sum();
        let mut out = Vec::with_capacity(MAGIC.len() + 4 + header.len() + size + DIGEST_LEN);
        out.extend_from_slice(MAGIC);
        push_chunk(&mut out, &header)?;
        for (_, entries) in &self.trees {
            for (k, v) in entries {
                push_chunk(&mut out, k)?;
                push_chunk(&mut out, v)?;
            }
        }
        let digest = Sha256::digest(&out);
        out.extend_from_slice(&digest);
        Ok(out)
    }

    /// Reads a backup file's bytes: refused whole when it is not one, is damaged or
    /// truncated (checksum), or comes from a newer keygate.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, BackupError> {
        let Some(body) = bytes.strip_prefix(MAGIC) else {
            return Err(BackupError::NotABackup);
        };
        let Some(split) = bytes
            .len()
            .checked_sub(DIGEST_LEN)
            .filter(|n| *n >= MAGIC.len())
        else {
            return Err(BackupError::Damaged);
        };
        let (signed, digest) = bytes.split_at(split);
        if Sha256::digest(signed).as_slice() != digest {
            return Err(BackupError::Damaged);
        }
        let mut r = Reader(&body[..body.len() - DIGEST_LEN]);
        let header: Header = serde_json::from_slice(r.chunk()?)
            .map_err(|e| BackupError::Format(format!("header: {e}")))?;
        if header.schema_version > keygate_migrations::LATEST {
            return Err(BackupError::NewerSchema {
                found: header.schema_version,
                known: keygate_migrations::LATEST,
            });
        }
        let mut trees = Vec::with_capacity(header.trees.len());
        for t in &header.trees {
            let mut entries = Vec::new();
            for _ in 0..t.entries {
                let k = IVec::from(r.chunk()?);
                let v = IVec::from(r.chunk()?);
                entries.push((k, v));
            }
            trees.push((IVec::from(t.name.as_bytes()), entries));
        }
        if !r.0.is_empty() {
            return Err(BackupError::Format("bytes after the last tree".into()));
        }
        Ok(Self { header, trees })
    }

    fn tree(&self, name: &str) -> impl Iterator<Item = &(IVec, IVec)> {
        self.trees
            .iter()
            .filter(move |(n, _)| n.as_ref() == name.as_bytes())
            .flat_map(|(_, e)| e.iter())
    }

    /// Every vault record with the user id it is filed under (to check, before
    /// restoring, that the keyring opens them).
    pub fn vault_records(&self) -> Result<Vec<(UserId, VaultRecord)>, StoreError> {
        self.tree(trees::VAULT)
            .map(|(k, v)| {
                let user = std::str::from_utf8(k)
                    .ok()
                    .and_then(|k| UserId::parse(k).ok())
                    .ok_or_else(|| StoreError::Corrupt {
                        tree: trees::VAULT,
                        reason: "bad key".into(),
                    })?;
                Ok((user, decode(trees::VAULT, v)?))
            })
            .collect()
    }

    /// The operator's sealed key, if the backup has one.
    pub fn operator_key(&self) -> Result<Option<OperatorKeyRecord>, StoreError> {
        self.tree(trees::OPERATOR_KEY)
            .next()
            .map(|(_, v)| decode(trees::OPERATOR_KEY, v))
            .transpose()
    }

    /// Makes a new store in `dir` (missing or empty: never over existing data) holding
    /// exactly this snapshot, durable on return; then opens it once as keygate would
    /// (pending migrations of an older backup run there). The caller checks the keyring
    /// first.
    pub fn restore_into(&self, dir: &Path) -> Result<(), BackupError> {
        let io = |source| BackupError::Io {
            path: dir.display().to_string(),
            source,
        };
        if dir.exists() && std::fs::read_dir(dir).map_err(io)?.next().is_some() {
            return Err(BackupError::NotEmpty(dir.display().to_string()));
        }
        {
            let db = sled::Config::new()
                .path(dir)
                .mode(sled::Mode::LowSpace)
                .open()
                .map_err(StoreError::from)?;
            for (name, entries) in &self.trees {
                let tree = db.open_tree(name).map_err(StoreError::from)?;
                let mut batch = sled::Batch::default();
                for (k, v) in entries {
                    batch.insert(k.clone(), v.clone());
                }
                tree.apply_batch(batch).map_err(StoreError::from)?;
            }
            db.open_tree(trees::META)
                .and_then(|meta| meta.insert(ID_FLOOR_KEY, &self.header.id_floor.to_be_bytes()))
                .map_err(StoreError::from)?;
            db.flush().map_err(StoreError::from)?;
        }
        // sled releases its file lock when its background flusher has let go of the
        // handle just dropped, which can be a moment later: wait for it (bounded).
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        let store = loop {
            match SledStore::open(dir, &StoreOptions::default()) {
                Err(StoreError::Locked { .. }) if std::time::Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(50));
                }
                other => break other?,
            }
        };
        store.db.flush().map_err(StoreError::from)?;
        Ok(())
    }
}

impl SledStore {
    /// Makes the id floor at least `floor` (an import), now and from the next open
    /// on: the next number handed out is above `floor`, whether the store goes on
    /// serving or is reopened.
    pub(crate) fn raise_id_floor(&self, floor: u64) -> Result<(), StoreError> {
        let meta = self.db.open_tree(trees::META)?;
        if id_floor(&self.db)? < floor {
            meta.insert(ID_FLOOR_KEY, &floor.to_be_bytes())?;
        }
        self.id_floor
            .fetch_max(floor, std::sync::atomic::Ordering::SeqCst);
        Ok(())
    }
}

/// The id floor a restore wrote into `meta` (0 for a store never restored).
pub(crate) fn id_floor(db: &sled::Db) -> Result<u64, StoreError> {
    let meta = db.open_tree(trees::META)?;
    Ok(match meta.get(ID_FLOOR_KEY)? {
        Some(v) => <[u8; 8]>::try_from(v.as_ref())
            .map(u64::from_be_bytes)
            .map_err(|_| StoreError::Corrupt {
                tree: trees::META,
                reason: "bad id floor".into(),
            })?,
        None => 0,
    })
}

fn push_chunk(out: &mut Vec<u8>, bytes: &[u8]) -> Result<(), StoreError> {
    let len = u32::try_from(bytes.len())
        .map_err(|_| StoreError::Encode("a record larger than 4 GiB".into()))?;
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(bytes);
    Ok(())
}

struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn chunk(&mut self) -> Result<&'a [u8], BackupError> {
        let short = || BackupError::Format("ends in the middle of a record".into());
        let (len, rest) = self.0.split_first_chunk::<4>().ok_or_else(short)?;
        let len = usize::try_from(u32::from_be_bytes(*len)).map_err(|_| short())?;
        if rest.len() < len {
            return Err(short());
        }
        let (chunk, rest) = rest.split_at(len);
        self.0 = rest;
        Ok(chunk)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering};

    use keygate_core::ids::KeyId;

    use super::*;
    use crate::records::UserRecord;

    fn store() -> (tempfile::TempDir, SledStore) {
        let dir = tempfile::tempdir().unwrap();
        let store = SledStore::open(&dir.path().join("s"), &StoreOptions::default()).unwrap();
        (dir, store)
    }

    fn user(name: &str) -> UserRecord {
        UserRecord {
            id: UserId::generate(),
            name: name.into(),
            created_at: 1,
        }
    }

    fn vault(user: &UserId) -> VaultRecord {
        VaultRecord {
            user_id: user.clone(),
            key_id: KeyId::generate(),
            sealed: "a.b.c.d.e".into(),
            kid: "mk-old".into(),
            last4: "WXYZ".into(),
            created_at: 1,
            last_validated_at: None,
            rejected_at: None,
        }
    }

    #[test]
    fn a_restored_store_holds_exactly_what_was_snapshotted() {
        let (dir, store) = store();
        let ada = user("Ada");
        store.insert_user(&ada).unwrap();
        store.put_vault(&ada.id, &vault(&ada.id)).unwrap();
        let handed_out: Vec<u64> = (0..3).map(|_| store.next_id().unwrap()).collect();
        let snap = store.snapshot(42).unwrap();
        // Written after the snapshot: not in the backup.
        store.insert_user(&user("Later")).unwrap();

        let bytes = snap.to_bytes().unwrap();
        let back = Snapshot::from_bytes(&bytes).unwrap();
        assert_eq!(back.summary(), snap.summary());
        assert_eq!(back.summary().created_at, 42);
        assert_eq!(back.vault_records().unwrap()[0].0, ada.id);

        let target = dir.path().join("restored");
        back.restore_into(&target).unwrap();
        let restored = SledStore::open(&target, &StoreOptions::default()).unwrap();
        assert_eq!(restored.user(&ada.id).unwrap(), Some(ada.clone()));
        assert_eq!(restored.users_page(None, 10).unwrap().0.len(), 1);
        assert_eq!(restored.vault(&ada.id).unwrap().unwrap().kid, "mk-old");
        // Ids go on above every id the source had handed out.
        let next = restored.next_id().unwrap();
        assert!(
            handed_out.iter().all(|id| next > *id),
            "{next} {handed_out:?}"
        );
    }

    #[test]
    fn damaged_truncated_or_foreign_files_are_refused() {
        let (_dir, store) = store();
        store.insert_user(&user("Ada")).unwrap();
        let bytes = store.snapshot(1).unwrap().to_bytes().unwrap();
        assert!(matches!(
            Snapshot::from_bytes(b"hello"),
            Err(BackupError::NotABackup)
        ));
        for cut in [MAGIC.len(), bytes.len() / 2, bytes.len() - 1] {
            assert!(matches!(
                Snapshot::from_bytes(&bytes[..cut]),
                Err(BackupError::Damaged)
            ));
        }
        let mut flipped = bytes.clone();
        let middle = flipped.len() / 2;
        flipped[middle] ^= 1;
        assert!(matches!(
            Snapshot::from_bytes(&flipped),
            Err(BackupError::Damaged)
        ));
    }

    #[test]
    fn restore_refuses_a_directory_with_anything_in_it() {
        let (dir, store) = store();
        let snap = store.snapshot(1).unwrap();
        let target = dir.path().join("busy");
        std::fs::create_dir_all(&target).unwrap();
        std::fs::write(target.join("x"), b"keep me").unwrap();
        assert!(matches!(
            snap.restore_into(&target),
            Err(BackupError::NotEmpty(_))
        ));
        assert_eq!(std::fs::read(target.join("x")).unwrap(), b"keep me");
    }

    /// The figures in docs/OPERATIONS.md ("Backup"): a snapshot of stores of 10,000 and
    /// 100,000 entries while a writer writes about 1,000 times a second (through the
    /// gate, as the store's writes do; far more than keygate writes): how long the
    /// snapshot took and the longest one write waited.
    /// `cargo test -p keygate-store snapshot_figures -- --ignored --nocapture`
    #[test]
    #[ignore]
    fn snapshot_figures() {
        for n in [10_000usize, 100_000] {
            let (_dir, store) = store();
            let mut batch = sled::Batch::default();
            for i in 0..n {
                batch.insert(format!("{i:016}").as_bytes(), vec![b'x'; 120]);
            }
            store.usage.apply_batch(batch).unwrap();
            let stop = Arc::new(AtomicBool::new(false));
            let writer = {
                let (store, stop) = (store.clone(), stop.clone());
                std::thread::spawn(move || {
                    let (mut writes, mut longest) = (0u64, Duration::ZERO);
                    while !stop.load(Ordering::Relaxed) {
                        let started = std::time::Instant::now();
                        let _w = store.gate.write();
                        store
                            .usage
                            .insert(format!("{:016}", writes % 1000).as_bytes(), vec![b'y'; 120])
                            .unwrap();
                        drop(_w);
                        longest = longest.max(started.elapsed());
                        writes += 1;
                        std::thread::sleep(Duration::from_millis(1));
                    }
                    (writes, longest)
                })
            };
            std::thread::sleep(Duration::from_millis(50));
            let started = std::time::Instant::now();
            let snap = store.snapshot(1).unwrap();
            let took = started.elapsed();
            stop.store(true, Ordering::Relaxed);
            let (writes, longest) = writer.join().unwrap();
            let bytes = snap.to_bytes().unwrap();
            assert!(snap.summary().entries() as usize >= n);
            println!(
                "{n} entries: snapshot in {took:?} ({} bytes encoded); {writes} concurrent writes, the longest waited {longest:?}",
                bytes.len()
            );
        }
    }

    #[test]
    fn writes_during_the_copy_are_in_it_as_of_the_end() {
        let (_dir, store) = store();
        let mut batch = sled::Batch::default();
        for i in 0..20_000u32 {
            batch.insert(&i.to_be_bytes(), &0u32.to_be_bytes());
        }
        store.usage.apply_batch(batch).unwrap();
        // A writer keeps a pair of trees in step (as a transaction would) and a
        // counter moving: whatever the snapshot holds must be one consistent instant.
        let stop = Arc::new(AtomicBool::new(false));
        let writer = {
            let (store, stop) = (store.clone(), stop.clone());
            std::thread::spawn(move || {
                let mut round = 1u32;
                while !stop.load(Ordering::Relaxed) {
                    let _w = store.gate.write();
                    let key = (round % 20_000).to_be_bytes();
                    store.usage.insert(key, &round.to_be_bytes()).unwrap();
                    store
                        .grant_owners
                        .tree()
                        .insert(b"round", &round.to_be_bytes())
                        .unwrap();
                    drop(_w);
                    round += 1;
                }
            })
        };
        std::thread::sleep(Duration::from_millis(20));
        let snap = store.snapshot(1).unwrap();
        stop.store(true, Ordering::Relaxed);
        writer.join().unwrap();
        let round = snap
            .tree(trees::GRANT_OWNERS)
            .find(|(k, _)| k.as_ref() == b"round")
            .map(|(_, v)| u32::from_be_bytes(v.as_ref().try_into().unwrap()))
            .expect("the writer ran before the snapshot");
        // Every round up to `round` is in, none after it.
        for (k, v) in snap.tree(trees::USAGE) {
            let key = u32::from_be_bytes(k.as_ref().try_into().unwrap());
            let value = u32::from_be_bytes(v.as_ref().try_into().unwrap());
            // The last round that wrote this key (0: none, the value it started with).
            let last_write = if round >= key {
                round - (round - key) % 20_000
            } else {
                0
            };
            assert_eq!(value, last_write, "key {key} at round {round}");
        }
    }

    #[test]
    fn a_snapshot_waits_for_a_write_in_progress_and_writes_wait_for_it() {
        let (_dir, store) = store();
        let held = store.gate.write();
        let (tx, rx) = std::sync::mpsc::channel();
        let s2 = store.clone();
        let t = std::thread::spawn(move || {
            let snap = s2.snapshot(1).unwrap();
            tx.send(snap.summary().entries()).unwrap();
        });
        // The snapshot cannot start while a write holds the gate.
        assert!(
            rx.recv_timeout(std::time::Duration::from_millis(200))
                .is_err()
        );
        drop(held);
        rx.recv_timeout(std::time::Duration::from_secs(5)).unwrap();
        t.join().unwrap();
    }
}
