//! The store itself, people, vault records, the operator's key and admin keys: what
//! goes in comes out, compare-and-swap swaps only what it was shown, unknown ids are
//! `None`/`false`.

use keygate_core::ids::{AdminKeyId, UserId};
use keygate_store::{BackendKind, Store, StoreError, VaultRecord};

use crate::fixtures::*;

crate::conformance!(
    the_store_answers_and_says_what_it_is,
    people_round_trip_and_unknown_ones_are_none,
    vault_records_round_trip_under_the_person_they_are_filed_under,
    a_vault_swap_with_a_stale_record_changes_nothing,
    the_operator_key_round_trips_and_swaps_only_what_it_was_shown,
    admin_keys_are_stored_listed_and_removed,
);

async fn the_store_answers_and_says_what_it_is(store: Store) {
    store.ping().await.unwrap();
    store.flush().await.unwrap();
    let version = store.schema_version().await.unwrap();
    assert!(version >= 1, "schema version {version}");
    match store.kind() {
        BackendKind::Sled => {
            assert_eq!(version, keygate_migrations::LATEST);
            store.snapshot(1).await.unwrap();
        }
        // PostgreSQL is backed up with its own tools: the error says so.
        BackendKind::Postgres => match store.snapshot(1).await {
            Err(StoreError::Unsupported(what)) => assert!(what.contains("pg_dump"), "{what}"),
            other => panic!("snapshot on PostgreSQL: {:?}", other.map(|_| ())),
        },
    }
}

async fn people_round_trip_and_unknown_ones_are_none(store: Store) {
    assert!(store.users().await.unwrap().is_empty());
    assert!(store.user(&UserId::generate()).await.unwrap().is_none());
    let ada = user(&store).await;
    let mut bob = user_record();
    bob.name = "Bob \u{1F511} O'Brien; DROP TABLE users".into();
    bob.created_at = u64::MAX / 4;
    store.insert_user(&bob).await.unwrap();
    assert_eq!(store.user(&ada.id).await.unwrap(), Some(ada.clone()));
    assert_eq!(store.user(&bob.id).await.unwrap(), Some(bob.clone()));
    let mut all = store.users().await.unwrap();
    all.sort_by(|a, b| a.id.cmp(&b.id));
    let mut expected = vec![ada.clone(), bob.clone()];
    expected.sort_by(|a, b| a.id.cmp(&b.id));
    assert_eq!(all, expected);
    // Inserting again overwrites (a rename, say).
    let renamed = keygate_store::UserRecord {
        name: "Ada L.".into(),
        ..ada.clone()
    };
    store.insert_user(&renamed).await.unwrap();
    assert_eq!(store.user(&ada.id).await.unwrap(), Some(renamed));
    assert_eq!(store.users().await.unwrap().len(), 2);
    assert!(!store.delete_user(&UserId::generate()).await.unwrap());
}

async fn vault_records_round_trip_under_the_person_they_are_filed_under(store: Store) {
    let ada = user(&store).await;
    assert!(store.vault(&ada.id).await.unwrap().is_none());
    assert!(!store.delete_vault(&ada.id).await.unwrap());
    let mut first = vault_record(&ada.id, "a.b.c.d.e");
    first.last_validated_at = Some(12);
    first.rejected_at = Some(13);
    store.put_vault(&ada.id, &first).await.unwrap();
    assert_eq!(store.vault(&ada.id).await.unwrap(), Some(first.clone()));

    // Filed under the id it is stored for, whatever its own fields say.
    let bob = user(&store).await;
    let foreign = vault_record(&ada.id, "f.g.h.i.j");
    store.put_vault(&bob.id, &foreign).await.unwrap();
    assert_eq!(store.vault(&bob.id).await.unwrap(), Some(foreign.clone()));
    assert_eq!(store.vault(&ada.id).await.unwrap(), Some(first.clone()));

    let mut entries = store.vault_entries().await.unwrap();
    entries.sort_by(|a, b| a.0.cmp(&b.0));
    let mut expected = vec![(ada.id.clone(), first.clone()), (bob.id.clone(), foreign)];
    expected.sort_by(|a, b| a.0.cmp(&b.0));
    assert_eq!(entries, expected);

    // Replaced by another key.
    let second = vault_record(&ada.id, "k.l.m.n.o");
    store.put_vault(&ada.id, &second).await.unwrap();
    assert_eq!(store.vault(&ada.id).await.unwrap(), Some(second));
    assert!(store.delete_vault(&ada.id).await.unwrap());
    assert!(store.vault(&ada.id).await.unwrap().is_none());
    assert!(!store.delete_vault(&ada.id).await.unwrap());
    assert_eq!(store.vault_entries().await.unwrap().len(), 1);
}

async fn a_vault_swap_with_a_stale_record_changes_nothing(store: Store) {
    let ada = user(&store).await;
    let first = vault_record(&ada.id, "a.b.c.d.e");
    let resealed = VaultRecord {
        sealed: "p.q.r.s.t".into(),
        kid: "mk-2".into(),
        ..first.clone()
    };
    // Nothing stored: nothing to swap, and nothing appears.
    assert!(
        !store
            .replace_vault(&ada.id, &first, &resealed)
            .await
            .unwrap()
    );
    assert!(store.vault(&ada.id).await.unwrap().is_none());

    store.put_vault(&ada.id, &first).await.unwrap();
    assert!(
        store
            .replace_vault(&ada.id, &first, &resealed)
            .await
            .unwrap()
    );
    assert_eq!(store.vault(&ada.id).await.unwrap(), Some(resealed.clone()));
    // `first` is stale now; so is a record that differs from the stored one in one
    // field only (a mark of `last_validated_at` made meanwhile).
    assert!(!store.replace_vault(&ada.id, &first, &first).await.unwrap());
    let marked = VaultRecord {
        last_validated_at: Some(99),
        ..resealed.clone()
    };
    assert!(!store.replace_vault(&ada.id, &marked, &first).await.unwrap());
    assert_eq!(store.vault(&ada.id).await.unwrap(), Some(resealed.clone()));

    // Racing swaps from the same `old`: exactly one wins.
    let results = race(16, |i| {
        let (store, ada, old) = (store.clone(), ada.id.clone(), resealed.clone());
        async move {
            let new = VaultRecord {
                sealed: format!("x.{i}.c.d.e"),
                ..old.clone()
            };
            store.replace_vault(&ada, &old, &new).await.unwrap()
        }
    })
    .await;
    assert_eq!(results.iter().filter(|won| **won).count(), 1, "{results:?}");
    let winner = results.iter().position(|won| *won).unwrap();
    assert_eq!(
        store.vault(&ada.id).await.unwrap().unwrap().sealed,
        format!("x.{winner}.c.d.e")
    );
}

async fn the_operator_key_round_trips_and_swaps_only_what_it_was_shown(store: Store) {
    assert!(store.operator_key().await.unwrap().is_none());
    assert!(!store.delete_operator_key().await.unwrap());
    let first = operator_key("a.b.c.d.e", "mk-1");
    let second = operator_key("f.g.h.i.j", "mk-2");
    assert!(!store.replace_operator_key(&first, &second).await.unwrap());
    assert!(store.operator_key().await.unwrap().is_none());

    store.put_operator_key(&first).await.unwrap();
    assert_eq!(store.operator_key().await.unwrap(), Some(first.clone()));
    assert!(store.replace_operator_key(&first, &second).await.unwrap());
    assert_eq!(store.operator_key().await.unwrap(), Some(second.clone()));
    // Stale: nothing changes.
    assert!(!store.replace_operator_key(&first, &first).await.unwrap());
    assert_eq!(store.operator_key().await.unwrap(), Some(second.clone()));
    // At most one: a put replaces it.
    let third = operator_key("k.l.m.n.o", "mk-3");
    store.put_operator_key(&third).await.unwrap();
    assert_eq!(store.operator_key().await.unwrap(), Some(third));
    assert!(store.delete_operator_key().await.unwrap());
    assert!(store.operator_key().await.unwrap().is_none());
    assert!(!store.delete_operator_key().await.unwrap());
}

async fn admin_keys_are_stored_listed_and_removed(store: Store) {
    assert!(store.admin_keys().await.unwrap().is_empty());
    assert!(
        store
            .admin_key(&AdminKeyId::generate())
            .await
            .unwrap()
            .is_none()
    );
    let ci = admin_key("ci", 5);
    let mut ops = admin_key("ops", 6);
    ops.expires_at = None;
    ops.scope = keygate_core::admin_scope::AdminScope::Read;
    store.insert_admin_key(&ci).await.unwrap();
    store.insert_admin_key(&ops).await.unwrap();
    assert_eq!(store.admin_key(&ci.id).await.unwrap(), Some(ci.clone()));
    assert_eq!(store.admin_key(&ops.id).await.unwrap(), Some(ops.clone()));
    let mut all = store.admin_keys().await.unwrap();
    all.sort_by(|a, b| a.id.cmp(&b.id));
    let mut expected = vec![ci.clone(), ops.clone()];
    expected.sort_by(|a, b| a.id.cmp(&b.id));
    assert_eq!(all, expected);
    assert!(store.delete_admin_key(&ci.id).await.unwrap());
    assert!(!store.delete_admin_key(&ci.id).await.unwrap());
    assert!(store.admin_key(&ci.id).await.unwrap().is_none());
    assert_eq!(store.admin_keys().await.unwrap(), vec![ops]);
}
