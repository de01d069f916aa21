//! Passkeys: a credential id is registered once (also when 16 tasks race for it), the
//! last passkey stays (also when two removals race), a late update never brings a
//! removed passkey back.

use keygate_core::ids::{PasskeyId, UserId};
use keygate_store::{DeletePasskey, PasskeyInsert, PasskeyRecord, Store};

use crate::fixtures::*;

crate::conformance!(
    passkeys_round_trip_and_are_found_by_credential,
    a_credential_id_is_registered_once_and_a_squatter_changes_nothing,
    adding_a_passkey_needs_the_person,
    racing_registrations_of_one_credential_id_make_one_person,
    racing_additions_of_one_credential_id_add_one_passkey,
    the_last_passkey_stays_whatever_the_order,
    racing_removals_never_leave_a_person_without_a_passkey,
    a_late_passkey_update_does_not_bring_back_a_removed_passkey,
);

async fn passkeys_round_trip_and_are_found_by_credential(store: Store) {
    assert!(
        store
            .passkey(&PasskeyId::generate())
            .await
            .unwrap()
            .is_none()
    );
    assert!(store.passkey_by_credential("nope").await.unwrap().is_none());
    let (ada, first) = registered(&store, "cred-1").await;
    assert_eq!(store.user(&ada.id).await.unwrap(), Some(ada.clone()));
    let mut second = passkey_record(&ada.id, "cred-2_-AZaz09");
    second.created_at = 0;
    second.name = "Laptop \u{1F4BB}".into();
    second.backup_eligible = true;
    second.backup_state = true;
    second.sign_count = u32::MAX;
    second.last_used_at = Some(3);
    assert_eq!(
        store.insert_passkey(&second).await.unwrap(),
        PasskeyInsert::Inserted
    );
    assert_eq!(store.passkey(&first.id).await.unwrap(), Some(first.clone()));
    assert_eq!(
        store.passkey_by_credential("cred-2_-AZaz09").await.unwrap(),
        Some(second.clone())
    );
    // Oldest first.
    assert_eq!(
        store.passkeys_for_user(&ada.id).await.unwrap(),
        vec![second.clone(), first.clone()]
    );
    assert!(
        store
            .passkeys_for_user(&UserId::generate())
            .await
            .unwrap()
            .is_empty()
    );
    // An update is applied.
    let used = PasskeyRecord {
        sign_count: 7,
        last_used_at: Some(40),
        ..first.clone()
    };
    store.put_passkey(&used).await.unwrap();
    assert_eq!(store.passkey(&first.id).await.unwrap(), Some(used.clone()));
    assert_eq!(
        store.passkey_by_credential("cred-1").await.unwrap(),
        Some(used)
    );
}

async fn a_credential_id_is_registered_once_and_a_squatter_changes_nothing(store: Store) {
    let (a, a_pk) = registered(&store, "cred-A").await;

    // Registering a new person with A's credential id: neither person nor passkey.
    let b = user_record();
    let squat = passkey_record(&b.id, "cred-A");
    assert_eq!(
        store.insert_user_with_passkey(&b, &squat).await.unwrap(),
        PasskeyInsert::CredentialTaken
    );
    assert!(store.user(&b.id).await.unwrap().is_none());
    assert!(store.passkey(&squat.id).await.unwrap().is_none());

    // An existing person adding A's credential id: refused too; A themself too.
    let (c, _) = registered(&store, "cred-C").await;
    let squat = passkey_record(&c.id, "cred-A");
    assert_eq!(
        store.insert_passkey(&squat).await.unwrap(),
        PasskeyInsert::CredentialTaken
    );
    assert_eq!(store.passkeys_for_user(&c.id).await.unwrap().len(), 1);
    let twice = passkey_record(&a.id, "cred-A");
    assert_eq!(
        store.insert_passkey(&twice).await.unwrap(),
        PasskeyInsert::CredentialTaken
    );

    // The credential still leads to A's passkey; deleting C leaves it alone.
    assert!(store.delete_user(&c.id).await.unwrap());
    assert_eq!(
        store.passkey_by_credential("cred-A").await.unwrap(),
        Some(a_pk.clone())
    );
    assert_eq!(store.passkeys_for_user(&a.id).await.unwrap(), [a_pk]);
    assert!(
        store
            .passkey_by_credential("cred-C")
            .await
            .unwrap()
            .is_none()
    );
}

async fn adding_a_passkey_needs_the_person(store: Store) {
    let ghost = passkey_record(&UserId::generate(), "cred-ghost");
    assert_eq!(
        store.insert_passkey(&ghost).await.unwrap(),
        PasskeyInsert::NoSuchUser
    );
    assert!(
        store
            .passkey_by_credential("cred-ghost")
            .await
            .unwrap()
            .is_none()
    );
    assert!(store.passkey(&ghost.id).await.unwrap().is_none());
    // The credential id was not taken by the refused insert.
    registered(&store, "cred-ghost").await;
}

async fn racing_registrations_of_one_credential_id_make_one_person(store: Store) {
    for round in 0..5 {
        let cred = format!("cred-race-{round}");
        let people: Vec<_> = (0..16)
            .map(|_| {
                let u = user_record();
                let pk = passkey_record(&u.id, &cred);
                (u, pk)
            })
            .collect();
        let results = race(16, |i| {
            let (store, (u, pk)) = (store.clone(), people[i].clone());
            async move { store.insert_user_with_passkey(&u, &pk).await.unwrap() }
        })
        .await;
        let winners: Vec<usize> = (0..16)
            .filter(|i| results[*i] == PasskeyInsert::Inserted)
            .collect();
        assert_eq!(winners.len(), 1, "{results:?}");
        assert!(
            results
                .iter()
                .all(|r| matches!(r, PasskeyInsert::Inserted | PasskeyInsert::CredentialTaken))
        );
        let (winner, winner_pk) = &people[winners[0]];
        assert_eq!(
            store.passkey_by_credential(&cred).await.unwrap().as_ref(),
            Some(winner_pk)
        );
        for (i, (u, pk)) in people.iter().enumerate() {
            let exists = store.user(&u.id).await.unwrap().is_some();
            assert_eq!(exists, i == winners[0], "person {i}");
            assert_eq!(store.passkey(&pk.id).await.unwrap().is_some(), exists);
        }
        assert_eq!(store.user(&winner.id).await.unwrap().as_ref(), Some(winner));
    }
    assert_eq!(store.users().await.unwrap().len(), 5);
}

async fn racing_additions_of_one_credential_id_add_one_passkey(store: Store) {
    let (ada, _) = registered(&store, "cred-own").await;
    let bob = user(&store).await;
    let candidates: Vec<_> = (0..16)
        .map(|i| passkey_record(if i % 2 == 0 { &ada.id } else { &bob.id }, "cred-contested"))
        .collect();
    let results = race(16, |i| {
        let (store, pk) = (store.clone(), candidates[i].clone());
        async move { store.insert_passkey(&pk).await.unwrap() }
    })
    .await;
    let winners: Vec<usize> = (0..16)
        .filter(|i| results[*i] == PasskeyInsert::Inserted)
        .collect();
    assert_eq!(winners.len(), 1, "{results:?}");
    assert_eq!(
        store.passkey_by_credential("cred-contested").await.unwrap(),
        Some(candidates[winners[0]].clone())
    );
    let total = store.passkeys_for_user(&ada.id).await.unwrap().len()
        + store.passkeys_for_user(&bob.id).await.unwrap().len();
    assert_eq!(total, 2, "the first passkey and the winner");
}

async fn the_last_passkey_stays_whatever_the_order(store: Store) {
    let (a, first) = registered(&store, "cred-1").await;
    let second = passkey_record(&a.id, "cred-2");
    assert_eq!(
        store.insert_passkey(&second).await.unwrap(),
        PasskeyInsert::Inserted
    );
    assert_eq!(
        store.delete_passkey_unless_last(&first).await.unwrap(),
        DeletePasskey::Deleted
    );
    assert_eq!(
        store.delete_passkey_unless_last(&second).await.unwrap(),
        DeletePasskey::Last
    );
    assert_eq!(
        store.delete_passkey_unless_last(&first).await.unwrap(),
        DeletePasskey::Gone
    );
    assert!(
        store
            .passkey_by_credential("cred-1")
            .await
            .unwrap()
            .is_none()
    );
    assert_eq!(store.passkeys_for_user(&a.id).await.unwrap(), vec![second]);
    // The credential id is free again once its passkey is gone.
    let again = passkey_record(&a.id, "cred-1");
    assert_eq!(
        store.insert_passkey(&again).await.unwrap(),
        PasskeyInsert::Inserted
    );
    // Another person's passkeys do not count as this person's.
    let (b, b_pk) = registered(&store, "cred-b").await;
    assert_eq!(
        store.delete_passkey_unless_last(&b_pk).await.unwrap(),
        DeletePasskey::Last
    );
    assert_eq!(store.passkeys_for_user(&b.id).await.unwrap().len(), 1);
}

async fn racing_removals_never_leave_a_person_without_a_passkey(store: Store) {
    // Two removals (the dashboard's case), then every passkey of a person removed at
    // once: one always stays, and it is the one whose removal was refused.
    for (round, n) in [2usize, 2, 2, 2, 2, 8, 8, 8, 8, 8].into_iter().enumerate() {
        let (a, first) = registered(&store, &format!("cred-{round}-0")).await;
        let mut all = vec![first];
        for i in 1..n {
            let pk = passkey_record(&a.id, &format!("cred-{round}-{i}"));
            assert_eq!(
                store.insert_passkey(&pk).await.unwrap(),
                PasskeyInsert::Inserted
            );
            all.push(pk);
        }
        let results = race(n, |i| {
            let (store, pk) = (store.clone(), all[i].clone());
            async move { store.delete_passkey_unless_last(&pk).await.unwrap() }
        })
        .await;
        let left = store.passkeys_for_user(&a.id).await.unwrap();
        assert_eq!(left.len(), 1, "{results:?}");
        let refused: Vec<usize> = (0..n)
            .filter(|i| results[*i] == DeletePasskey::Last)
            .collect();
        assert_eq!(refused.len(), 1, "{results:?}");
        assert_eq!(
            results
                .iter()
                .filter(|r| **r == DeletePasskey::Deleted)
                .count(),
            n - 1
        );
        // The one left still signs in.
        let kept = &all[refused[0]];
        assert_eq!(left[0], *kept);
        assert_eq!(
            store
                .passkey_by_credential(&kept.credential_id)
                .await
                .unwrap()
                .as_ref(),
            Some(kept)
        );
    }
}

async fn a_late_passkey_update_does_not_bring_back_a_removed_passkey(store: Store) {
    let (u, first) = registered(&store, "cred-first").await;
    let second = passkey_record(&u.id, "cred-second");
    assert_eq!(
        store.insert_passkey(&second).await.unwrap(),
        PasskeyInsert::Inserted
    );
    // A sign-in that read the record before the removal writes it back after: nothing.
    assert_eq!(
        store.delete_passkey_unless_last(&second).await.unwrap(),
        DeletePasskey::Deleted
    );
    let mut used = second.clone();
    used.sign_count = 8;
    store.put_passkey(&used).await.unwrap();
    assert!(store.passkey(&second.id).await.unwrap().is_none());
    assert!(
        store
            .passkey_by_credential("cred-second")
            .await
            .unwrap()
            .is_none()
    );
    assert_eq!(store.passkeys_for_user(&u.id).await.unwrap().len(), 1);

    // The same when the whole person is deleted.
    assert!(store.delete_user(&u.id).await.unwrap());
    store.put_passkey(&first).await.unwrap();
    assert!(store.passkey(&first.id).await.unwrap().is_none());
    assert!(
        store
            .passkey_by_credential("cred-first")
            .await
            .unwrap()
            .is_none()
    );
    // And for a passkey that never existed.
    let never = passkey_record(&UserId::generate(), "cred-never");
    store.put_passkey(&never).await.unwrap();
    assert!(store.passkey(&never.id).await.unwrap().is_none());
}
