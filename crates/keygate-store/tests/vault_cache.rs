//! The vault cache (`Store::vault_cached`): every vault write through the store — a key
//! stored, replaced, re-sealed or marked, deleted, the person deleted — is seen by the
//! very next cached read, on every clone of the store. (The cache's race rule is the
//! grant cache's, tested in `grant_cache.rs`: it is the same `RecordCache`.)

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use keygate_core::ids::{KeyId, UserId};
use keygate_store::{Store, StoreOptions, UserRecord, VaultRecord};

fn open(entries: usize) -> (tempfile::TempDir, Store) {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(
        dir.path(),
        &StoreOptions {
            vault_cache_entries: entries,
            ..StoreOptions::default()
        },
    )
    .unwrap();
    (dir, store)
}

fn person(store: &Store) -> UserId {
    let u = UserRecord {
        id: UserId::generate(),
        name: "Ada".into(),
        created_at: 10,
    };
    store.insert_user(&u).unwrap();
    u.id
}

fn record(user: &UserId, sealed: &str) -> VaultRecord {
    VaultRecord {
        user_id: user.clone(),
        key_id: KeyId::generate(),
        sealed: sealed.into(),
        kid: "mk-1".into(),
        last4: "WXYZ".into(),
        created_at: 11,
        last_validated_at: None,
        rejected_at: None,
    }
}

/// The cached read, after checking it agrees with the uncached one.
fn cached(store: &Store, user: &UserId) -> Option<VaultRecord> {
    let hit = store.vault_cached(user).unwrap().map(|r| (*r).clone());
    assert_eq!(hit, store.vault(user).unwrap(), "cache and store disagree");
    hit
}

#[test]
fn every_vault_write_is_seen_by_the_next_cached_read() {
    let (_dir, store) = open(16);
    // Another clone, as another worker holds it: the cache is shared.
    let worker = store.clone();
    let ada = person(&store);
    assert_eq!(cached(&worker, &ada), None);

    let first = record(&ada, "a.b.c.d.e");
    store.put_vault(&ada, &first).unwrap();
    assert_eq!(cached(&worker, &ada), Some(first.clone()));

    // Replaced by a new key (the person pasted another one).
    let second = record(&ada, "f.g.h.i.j");
    store.put_vault(&ada, &second).unwrap();
    assert_eq!(cached(&worker, &ada), Some(second.clone()));

    // Re-sealed or marked (compare-and-swap), and a swap that lost changes nothing.
    let resealed = VaultRecord {
        sealed: "k.l.m.n.o".into(),
        kid: "mk-2".into(),
        ..second.clone()
    };
    assert!(store.replace_vault(&ada, &second, &resealed).unwrap());
    assert_eq!(cached(&worker, &ada), Some(resealed.clone()));
    assert!(!store.replace_vault(&ada, &second, &first).unwrap());
    assert_eq!(cached(&worker, &ada), Some(resealed.clone()));

    // Deleted.
    assert!(store.delete_vault(&ada).unwrap());
    assert_eq!(cached(&worker, &ada), None);

    // Stored again, then the person deleted.
    store.put_vault(&ada, &first).unwrap();
    assert_eq!(cached(&worker, &ada), Some(first));
    assert!(store.delete_user(&ada).unwrap());
    assert_eq!(cached(&worker, &ada), None);
}

#[test]
fn a_full_or_disabled_cache_still_reads_right() {
    for entries in [0, 2] {
        let (_dir, store) = open(entries);
        let people: Vec<UserId> = (0..6).map(|_| person(&store)).collect();
        for (i, u) in people.iter().enumerate() {
            store
                .put_vault(u, &record(u, &format!("s.{i}.c.d.e")))
                .unwrap();
        }
        for _ in 0..3 {
            for (i, u) in people.iter().enumerate() {
                let hit = cached(&store, u).unwrap();
                assert_eq!(hit.sealed, format!("s.{i}.c.d.e"));
            }
        }
        // Someone with no key is a miss every time, never cached as absent.
        let nobody = person(&store);
        assert_eq!(cached(&store, &nobody), None);
        let r = record(&nobody, "z.y.x.w.v");
        store.put_vault(&nobody, &r).unwrap();
        assert_eq!(cached(&store, &nobody), Some(r));
    }
}
