//! The proxy's lookups (`grant_cached`, `vault_cached`): whatever a backend caches,
//! the next read through any clone of the store sees every write made through it —
//! also when reads race the writes.

use keygate_core::ids::{GrantId, UserId};
use keygate_store::{GrantRecord, GrantState, Store, VaultRecord};

use crate::fixtures::*;

crate::conformance!(
    every_grant_write_is_seen_by_the_next_cached_read,
    every_vault_write_is_seen_by_the_next_cached_read,
    a_read_that_raced_a_write_never_keeps_the_old_record,
);

/// The cached read, after checking it agrees with the uncached one.
async fn coherent(store: &Store, id: &GrantId) -> Option<GrantRecord> {
    let cached = store.grant_cached(id).await.unwrap().map(|g| (*g).clone());
    assert_eq!(
        cached,
        store.grant(id).await.unwrap(),
        "cache and store disagree"
    );
    cached
}

async fn cached(store: &Store, user: &UserId) -> Option<VaultRecord> {
    let hit = store
        .vault_cached(user)
        .await
        .unwrap()
        .map(|r| (*r).clone());
    assert_eq!(
        hit,
        store.vault(user).await.unwrap(),
        "cache and store disagree"
    );
    hit
}

async fn every_grant_write_is_seen_by_the_next_cached_read(store: Store) {
    // A clone (what each actix worker's state holds).
    let other = store.clone();
    let u = user(&store).await.id;
    let g = grant(&store, &u, 1).await;
    assert_eq!(
        coherent(&other, &g.id).await.unwrap().state,
        GrantState::Active
    );

    store
        .update_grant(&g.id, &|g| g.state = GrantState::Disabled)
        .await
        .unwrap();
    assert_eq!(
        coherent(&other, &g.id).await.unwrap().state,
        GrantState::Disabled
    );
    store
        .update_grant(&g.id, &|g| {
            g.state = GrantState::Active;
            g.models = vec!["gpt-4o".into()];
            g.scopes = vec![];
            g.expires_at = Some(5);
            g.secret_hash = "cd".repeat(32);
            g.previous_secret_hash = Some("ab".repeat(32));
            g.previous_until = Some(7);
        })
        .await
        .unwrap();
    let seen = coherent(&other, &g.id).await.unwrap();
    assert_eq!(seen.models, vec!["gpt-4o".to_owned()]);
    assert_eq!(seen.secret_hash, "cd".repeat(32));
    assert_eq!(seen.previous_until, Some(7));

    store.touch_grants(&[(g.id.clone(), 9)]).await.unwrap();
    assert_eq!(coherent(&other, &g.id).await.unwrap().last_used_at, Some(9));

    store.revoke_grant(&g.id, 11).await.unwrap();
    let revoked = coherent(&other, &g.id).await.unwrap();
    assert_eq!(revoked.state, GrantState::Revoked);
    assert_eq!(revoked.previous_secret_hash, None);

    assert!(store.delete_grant(&g.id).await.unwrap());
    assert!(coherent(&other, &g.id).await.is_none());

    // Stored again (an import, say) after being read as absent.
    store
        .import(&[keygate_store::Entry::Grant(g.clone())])
        .await
        .unwrap();
    assert_eq!(coherent(&other, &g.id).await, Some(g.clone()));

    // A person's deletion takes every grant of theirs.
    let (a, b) = (grant(&store, &u, 2).await, grant(&store, &u, 3).await);
    assert!(coherent(&other, &a.id).await.is_some());
    assert!(coherent(&other, &b.id).await.is_some());
    assert!(store.delete_user(&u).await.unwrap());
    assert!(coherent(&other, &a.id).await.is_none());
    assert!(coherent(&other, &b.id).await.is_none());
}

async fn every_vault_write_is_seen_by_the_next_cached_read(store: Store) {
    let worker = store.clone();
    let ada = user(&store).await.id;
    assert_eq!(cached(&worker, &ada).await, None);

    let first = vault_record(&ada, "a.b.c.d.e");
    store.put_vault(&ada, &first).await.unwrap();
    assert_eq!(cached(&worker, &ada).await, Some(first.clone()));

    // Replaced by a new key (the person pasted another one).
    let second = vault_record(&ada, "f.g.h.i.j");
    store.put_vault(&ada, &second).await.unwrap();
    assert_eq!(cached(&worker, &ada).await, Some(second.clone()));

    // Re-sealed or marked (compare-and-swap), and a swap that lost changes nothing.
    let resealed = VaultRecord {
        sealed: "k.l.m.n.o".into(),
        kid: "mk-2".into(),
        ..second.clone()
    };
    assert!(store.replace_vault(&ada, &second, &resealed).await.unwrap());
    assert_eq!(cached(&worker, &ada).await, Some(resealed.clone()));
    assert!(!store.replace_vault(&ada, &second, &first).await.unwrap());
    assert_eq!(cached(&worker, &ada).await, Some(resealed.clone()));

    // Deleted.
    assert!(store.delete_vault(&ada).await.unwrap());
    assert_eq!(cached(&worker, &ada).await, None);

    // Imported, then stored again, then the person deleted.
    store
        .import(&[keygate_store::Entry::Vault(ada.clone(), second.clone())])
        .await
        .unwrap();
    assert_eq!(cached(&worker, &ada).await, Some(second));
    store.put_vault(&ada, &first).await.unwrap();
    assert_eq!(cached(&worker, &ada).await, Some(first));
    assert!(store.delete_user(&ada).await.unwrap());
    assert_eq!(cached(&worker, &ada).await, None);
}

/// Readers missing the cache while a writer changes the grant: once the writer is
/// done, the cached read gives the last write, never a record read before it.
async fn a_read_that_raced_a_write_never_keeps_the_old_record(store: Store) {
    let u = user(&store).await.id;
    let g = grant(&store, &u, 1).await;
    for round in 0..5 {
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let readers: Vec<_> = (0..3)
            .map(|_| {
                let (store, id, stop) = (store.clone(), g.id.clone(), stop.clone());
                tokio::spawn(async move {
                    while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                        store.grant_cached(&id).await.unwrap();
                    }
                })
            })
            .collect();
        for i in 0..30 {
            store
                .update_grant(&g.id, &move |r| r.name = format!("{round}-{i}"))
                .await
                .unwrap();
        }
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        for r in readers {
            r.await.unwrap();
        }
        assert_eq!(
            coherent(&store, &g.id).await.unwrap().name,
            format!("{round}-29")
        );
    }
}
