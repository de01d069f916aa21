//! The store's read-through caches (`SledStore::grant_cached`, `SledStore::vault_cached`): every
//! write through the store — to a grant; to a vault record: stored, replaced, re-sealed
//! or marked, deleted; a person deleted — is seen by the very next cached read, on every
//! clone of the store. (Both are the same `RecordCache`: its race rule is tested once,
//! on grants.)

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
fn every_grant_write_is_seen_by_the_next_cached_read() {
    let (_dir, store) = open(16);
    // A clone (what each actix worker's state holds) shares the cache.
    let other = store.clone();
    let u = user(&store);
    let g = grant(&store, &u);
    assert_eq!(coherent(&other, &g.id).unwrap().state, GrantState::Active);

    store
        .update_grant(&g.id, |g| g.state = GrantState::Disabled)
        .unwrap();
    assert_eq!(coherent(&other, &g.id).unwrap().state, GrantState::Disabled);
    store
        .update_grant(&g.id, |g| {
            g.state = GrantState::Active;
            g.models = vec!["gpt-4o".into()];
            g.scopes = vec![];
            g.expires_at = Some(5);
            g.secret_hash = "cd".repeat(32);
            g.previous_secret_hash = Some("ab".repeat(32));
            g.previous_until = Some(7);
        })
        .unwrap();
    let seen = coherent(&other, &g.id).unwrap();
    assert_eq!(seen.models, vec!["gpt-4o".to_owned()]);
    assert_eq!(seen.secret_hash, "cd".repeat(32));
    assert_eq!(seen.previous_until, Some(7));

    store.touch_grants(&[(g.id.clone(), 9)]).unwrap();
    assert_eq!(coherent(&other, &g.id).unwrap().last_used_at, Some(9));

    store.revoke_grant(&g.id, 11).unwrap();
    let revoked = coherent(&other, &g.id).unwrap();
    assert_eq!(revoked.state, GrantState::Revoked);
    assert_eq!(revoked.previous_secret_hash, None);

    assert!(store.delete_grant(&g.id).unwrap());
    assert!(coherent(&other, &g.id).is_none());

    // A person's deletion takes every grant of theirs out of the cache.
    let (a, b) = (grant(&store, &u), grant(&store, &u));
    assert!(coherent(&other, &a.id).is_some());
    assert!(coherent(&other, &b.id).is_some());
    assert!(store.delete_user(&u).unwrap());
    assert!(coherent(&other, &a.id).is_none());
    assert!(coherent(&other, &b.id).is_none());
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
fn every_vault_write_is_seen_by_the_next_cached_read() {
    let (_dir, store) = open(16);
    // Another clone, as another worker holds it: the cache is shared.
    let worker = store.clone();
    let ada = user(&store);
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
