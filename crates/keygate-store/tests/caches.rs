//! The sled backend's read-through caches (`SledStore::grant_cached`,
//! `SledStore::vault_cached`) at the sizes only sled has: bounded, full, disabled, and
//! the race rule of `RecordCache` between threads (tested once, on grants: both caches
//! are the same type). That every write is seen by the next cached read is a behaviour
//! of the interface, in the conformance suite (`tests/conformance/caches.rs`).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use keygate_core::ids::{GrantId, KeyId, UserId};
use keygate_core::scope::Scope;
use keygate_store::{GrantRecord, GrantState, SledStore, StoreOptions, UserRecord, VaultRecord};

fn open(entries: usize) -> (tempfile::TempDir, SledStore) {
    let dir = tempfile::tempdir().unwrap();
    let store = SledStore::open(
        dir.path(),
        &StoreOptions {
            grant_cache_entries: entries,
            vault_cache_entries: entries,
            ..StoreOptions::default()
        },
    )
    .unwrap();
    (dir, store)
}

fn user(store: &SledStore) -> UserId {
    let u = UserRecord {
        id: UserId::generate(),
        name: "Ada".into(),
        created_at: 10,
    };
    store.insert_user(&u).unwrap();
    u.id
}

fn grant(store: &SledStore, user: &UserId) -> GrantRecord {
    let g = GrantRecord {
        id: GrantId::generate(),
        user_id: user.clone(),
        name: "app".into(),
        origin: None,
        models: vec!["gpt-4o-mini".into()],
        state: GrantState::Active,
        secret_hash: "ab".repeat(32),
        created_at: 1,
        last_used_at: None,
        revoked_at: None,
        expires_at: None,
        plan: None,
        scopes: vec![Scope::Inference],
        limits: Default::default(),
        previous_secret_hash: None,
        previous_until: None,
    };
    store.insert_grant(&g).unwrap();
    g
}

/// The cached read agrees with the uncached one.
fn coherent(store: &SledStore, id: &GrantId) -> Option<GrantRecord> {
    let cached = store.grant_cached(id).unwrap().map(|g| (*g).clone());
    assert_eq!(cached, store.grant(id).unwrap(), "cache and store disagree");
    cached
}

#[test]
fn unknown_ids_are_not_cached_and_the_cache_is_bounded() {
    let (_dir, store) = open(2);
    let u = user(&store);
    for _ in 0..1000 {
        assert!(store.grant_cached(&GrantId::generate()).unwrap().is_none());
    }
    // More grants than entries: each read is still right, and writes still show.
    let grants: Vec<_> = (0..5).map(|_| grant(&store, &u)).collect();
    for _ in 0..3 {
        for g in &grants {
            assert!(coherent(&store, &g.id).is_some());
        }
    }
    for g in &grants {
        store.revoke_grant(&g.id, 3).unwrap();
    }
    for g in &grants {
        assert_eq!(coherent(&store, &g.id).unwrap().state, GrantState::Revoked);
    }
    // A cache of size 0 is no cache.
    let (_dir0, none) = open(0);
    let u0 = user(&none);
    let g0 = grant(&none, &u0);
    none.revoke_grant(&g0.id, 1).unwrap();
    assert_eq!(coherent(&none, &g0.id).unwrap().state, GrantState::Revoked);
}

/// Readers missing the cache while a writer changes the grant: once the writer is
/// done, the cache holds the last write, never a record read before it.
#[test]
fn a_read_that_raced_a_write_never_caches_the_old_record() {
    let (_dir, store) = open(16);
    let u = user(&store);
    let g = grant(&store, &u);
    for round in 0..20 {
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let readers: Vec<_> = (0..3)
            .map(|_| {
                let (store, id, stop) = (store.clone(), g.id.clone(), stop.clone());
                std::thread::spawn(move || {
                    while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                        store.grant_cached(&id).unwrap();
                    }
                })
            })
            .collect();
        for i in 0..50 {
            store
                .update_grant(&g.id, |r| r.name = format!("{round}-{i}"))
                .unwrap();
        }
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        for r in readers {
            r.join().unwrap();
        }
        assert_eq!(coherent(&store, &g.id).unwrap().name, format!("{round}-49"));
    }
}

// --- the vault cache ---------------------------------------------------------------

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
fn cached(store: &SledStore, user: &UserId) -> Option<VaultRecord> {
    let hit = store.vault_cached(user).unwrap().map(|r| (*r).clone());
    assert_eq!(hit, store.vault(user).unwrap(), "cache and store disagree");
    hit
}

#[test]
fn a_full_or_disabled_cache_still_reads_right() {
    for entries in [0, 2] {
        let (_dir, store) = open(entries);
        let people: Vec<UserId> = (0..6).map(|_| user(&store)).collect();
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
        let nobody = user(&store);
        assert_eq!(cached(&store, &nobody), None);
        let r = record(&nobody, "z.y.x.w.v");
        store.put_vault(&nobody, &r).unwrap();
        assert_eq!(cached(&store, &nobody), Some(r));
    }
}
