//! Grants: stored only for people who exist, changed atomically (no lost update under
//! 32 concurrent writers), revoked, touched, removed with their owner record kept.

use keygate_core::ids::{GrantId, UserId};
use keygate_core::scope::Scope;
use keygate_store::{GrantRecord, GrantState, Store, StoreError};

use crate::fixtures::*;

crate::conformance!(
    grants_round_trip_every_field,
    grants_are_stored_only_for_people_who_exist,
    unknown_grants_are_none_and_updates_of_them_too,
    concurrent_updates_of_one_grant_lose_nothing,
    revoking_marks_once_and_forgets_the_previous_secret,
    touch_never_moves_last_used_backwards,
    deleting_a_grant_keeps_its_owner_record,
    a_persons_grants_are_listed_oldest_first,
);

async fn grants_round_trip_every_field(store: Store) {
    let ada = user(&store).await;
    let mut g = grant_record(&ada.id, 3);
    g.origin = Some("https://app.example".into());
    g.models = vec!["gpt-4o".into(), "gpt-4o-mini".into()];
    g.state = GrantState::Disabled;
    g.expires_at = Some(1_000);
    g.plan = Some("free".into());
    g.scopes = vec![Scope::Inference];
    g.limits =
        serde_json::from_value(serde_json::json!({"rpm": 10, "tpm": 5000, "max_concurrency": 2}))
            .unwrap();
    g.previous_secret_hash = Some("ef".repeat(32));
    g.previous_until = Some(50);
    g.last_used_at = Some(4);
    store.insert_grant(&g).await.unwrap();
    assert_eq!(store.grant(&g.id).await.unwrap(), Some(g.clone()));
    assert_eq!(
        store.grant_cached(&g.id).await.unwrap().as_deref(),
        Some(&g)
    );
    assert_eq!(
        store.grants_for_user(&ada.id).await.unwrap(),
        vec![g.clone()]
    );
    assert_eq!(
        store.grant_ids_ever(&ada.id).await.unwrap(),
        vec![g.id.clone()]
    );
    assert_eq!(
        store.grant_owners().await.unwrap().get(&g.id),
        Some(&ada.id)
    );
}

async fn grants_are_stored_only_for_people_who_exist(store: Store) {
    let ghost = UserId::generate();
    let g = grant_record(&ghost, 1);
    assert!(matches!(
        store.insert_grant(&g).await,
        Err(StoreError::NotFound { what: "user" })
    ));
    assert!(store.grant(&g.id).await.unwrap().is_none());
    assert!(store.grants_for_user(&ghost).await.unwrap().is_empty());
    assert!(store.grant_ids_ever(&ghost).await.unwrap().is_empty());
    assert!(!store.grant_owners().await.unwrap().contains_key(&g.id));

    // Nor for a person deleted meanwhile.
    let ada = user(&store).await;
    assert!(store.delete_user(&ada.id).await.unwrap());
    let late = grant_record(&ada.id, 1);
    assert!(matches!(
        store.insert_grant(&late).await,
        Err(StoreError::NotFound { what: "user" })
    ));
    assert!(store.grant(&late.id).await.unwrap().is_none());
}

async fn unknown_grants_are_none_and_updates_of_them_too(store: Store) {
    let id = GrantId::generate();
    assert!(store.grant(&id).await.unwrap().is_none());
    assert!(store.grant_cached(&id).await.unwrap().is_none());
    assert!(
        store
            .update_grant(&id, &|g| g.name = "x".into())
            .await
            .unwrap()
            .is_none()
    );
    assert!(store.revoke_grant(&id, 1).await.unwrap().is_none());
    assert!(!store.delete_grant(&id).await.unwrap());
    // Touching a grant that is gone is not an error (a batch may outlive a grant).
    store.touch_grants(&[(id.clone(), 5)]).await.unwrap();
    store.touch_grants(&[]).await.unwrap();
    assert!(store.grant(&id).await.unwrap().is_none());
}

async fn concurrent_updates_of_one_grant_lose_nothing(store: Store) {
    let ada = user(&store).await;
    let g = grant(&store, &ada.id, 1).await;
    let results = race(32, |i| {
        let (store, id) = (store.clone(), g.id.clone());
        async move {
            store
                .update_grant(&id, &move |r: &mut GrantRecord| {
                    r.models.push(format!("m-{i}"))
                })
                .await
                .unwrap()
                .unwrap()
        }
    })
    .await;
    // Each caller got back a record holding its own change.
    for (i, r) in results.iter().enumerate() {
        assert!(r.models.contains(&format!("m-{i}")), "{i}: {:?}", r.models);
    }
    let stored = store.grant(&g.id).await.unwrap().unwrap();
    let mut models = stored.models.clone();
    models.sort();
    let mut expected: Vec<String> = (0..32).map(|i| format!("m-{i}")).collect();
    expected.push("gpt-4o-mini".into());
    expected.sort();
    assert_eq!(models, expected);
    // The change touched only what it changed.
    assert_eq!(
        GrantRecord {
            models: g.models.clone(),
            ..stored
        },
        g
    );
}

async fn revoking_marks_once_and_forgets_the_previous_secret(store: Store) {
    let ada = user(&store).await;
    let g = grant(&store, &ada.id, 1).await;
    let rotated = store
        .update_grant(&g.id, &|r| {
            r.secret_hash = "cd".repeat(32);
            r.previous_secret_hash = Some("ab".repeat(32));
            r.previous_until = Some(70);
        })
        .await
        .unwrap()
        .unwrap();
    assert_eq!(rotated.previous_until, Some(70));
    let revoked = store.revoke_grant(&g.id, 99).await.unwrap().unwrap();
    assert_eq!(
        (revoked.state, revoked.revoked_at),
        (GrantState::Revoked, Some(99))
    );
    assert_eq!(
        (revoked.previous_secret_hash, revoked.previous_until),
        (None, None)
    );
    assert_eq!(revoked.secret_hash, "cd".repeat(32));
    // A second revocation keeps the first time.
    let again = store.revoke_grant(&g.id, 150).await.unwrap().unwrap();
    assert_eq!(again.revoked_at, Some(99));
    assert_eq!(store.grant(&g.id).await.unwrap(), Some(again));
}

async fn touch_never_moves_last_used_backwards(store: Store) {
    let ada = user(&store).await;
    let (a, b) = (
        grant(&store, &ada.id, 1).await,
        grant(&store, &ada.id, 2).await,
    );
    store
        .touch_grants(&[(a.id.clone(), 20), (b.id.clone(), 5)])
        .await
        .unwrap();
    store
        .touch_grants(&[(a.id.clone(), 10), (b.id.clone(), 6)])
        .await
        .unwrap();
    assert_eq!(
        store.grant(&a.id).await.unwrap().unwrap().last_used_at,
        Some(20)
    );
    assert_eq!(
        store.grant(&b.id).await.unwrap().unwrap().last_used_at,
        Some(6)
    );
    // Nothing else changed.
    let touched = store.grant(&a.id).await.unwrap().unwrap();
    assert_eq!(
        GrantRecord {
            last_used_at: None,
            ..touched
        },
        a
    );
}

async fn deleting_a_grant_keeps_its_owner_record(store: Store) {
    let ada = user(&store).await;
    let bob = user(&store).await;
    let (gone, kept) = (
        grant(&store, &ada.id, 1).await,
        grant(&store, &ada.id, 2).await,
    );
    let bobs = grant(&store, &bob.id, 1).await;
    assert!(store.delete_grant(&gone.id).await.unwrap());
    assert!(store.grant(&gone.id).await.unwrap().is_none());
    assert!(store.grant_cached(&gone.id).await.unwrap().is_none());
    let left: Vec<_> = store
        .grants_for_user(&ada.id)
        .await
        .unwrap()
        .into_iter()
        .map(|g| g.id)
        .collect();
    assert_eq!(left, vec![kept.id.clone()]);
    assert!(!store.delete_grant(&gone.id).await.unwrap(), "already gone");
    // Its owner record stays: its usage rows are still the person's.
    let mut ever = vec![gone.id.clone(), kept.id.clone()];
    ever.sort();
    assert_eq!(store.grant_ids_ever(&ada.id).await.unwrap(), ever);
    let owners = store.grant_owners().await.unwrap();
    assert_eq!(owners.len(), 3);
    assert_eq!(owners.get(&gone.id), Some(&ada.id));
    assert_eq!(owners.get(&kept.id), Some(&ada.id));
    assert_eq!(owners.get(&bobs.id), Some(&bob.id));
    assert_eq!(store.grant_ids_ever(&bob.id).await.unwrap(), vec![bobs.id]);
}

async fn a_persons_grants_are_listed_oldest_first(store: Store) {
    let ada = user(&store).await;
    let bob = user(&store).await;
    let mut made = Vec::new();
    for created_at in [5, 1, 3, 3, 9, 1] {
        made.push(grant(&store, &ada.id, created_at).await);
    }
    grant(&store, &bob.id, 2).await;
    made.sort_by(|a, b| (a.created_at, &a.id).cmp(&(b.created_at, &b.id)));
    assert_eq!(store.grants_for_user(&ada.id).await.unwrap(), made);
    assert_eq!(store.grants_for_user(&bob.id).await.unwrap().len(), 1);
    assert!(
        store
            .grants_for_user(&UserId::generate())
            .await
            .unwrap()
            .is_empty()
    );
}
