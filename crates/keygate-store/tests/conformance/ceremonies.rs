//! Ceremonies and connect codes: handed out once (also to 16 racing tasks), a signed-in
//! session's ceremony of one kind replaced, counted; everything short-lived swept.

use keygate_core::ids::UserId;
use keygate_store::{SessionRecord, Store, Swept};

use crate::fixtures::*;

crate::conformance!(
    a_ceremony_is_taken_once,
    a_connect_code_is_taken_once,
    racing_takes_of_a_ceremony_hand_it_out_once,
    racing_takes_of_a_code_hand_it_out_once,
    a_sessions_ceremony_of_one_kind_is_replaced_and_not_counted_as_anonymous,
    expired_sessions_ceremonies_and_codes_are_swept_and_live_ones_stay,
);

async fn a_ceremony_is_taken_once(store: Store) {
    let ada = UserId::generate();
    assert!(store.take_ceremony("nope").await.unwrap().is_none());
    let c = ceremony(Some(&ada), "{\"challenge\":\"abc\"}", 500);
    store.put_ceremony("cer-1", &c).await.unwrap();
    assert_eq!(store.ceremony_count().await.unwrap(), 1);
    assert_eq!(store.take_ceremony("cer-1").await.unwrap(), Some(c));
    assert!(store.take_ceremony("cer-1").await.unwrap().is_none());
    assert_eq!(store.ceremony_count().await.unwrap(), 0);
    // Stored again under the same id, it can be taken again (a new start).
    let anon = ceremony(None, "{}", 600);
    store.put_ceremony("cer-1", &anon).await.unwrap();
    assert_eq!(store.take_ceremony("cer-1").await.unwrap(), Some(anon));
}

async fn a_connect_code_is_taken_once(store: Store) {
    let ada = UserId::generate();
    assert!(store.take_code("nope").await.unwrap().is_none());
    let c = code(&ada, 500);
    store.put_code("code-hash", &c).await.unwrap();
    assert_eq!(store.code_count().await.unwrap(), 1);
    assert_eq!(store.take_code("code-hash").await.unwrap(), Some(c));
    assert!(store.take_code("code-hash").await.unwrap().is_none());
    assert_eq!(store.code_count().await.unwrap(), 0);
}

async fn racing_takes_of_a_ceremony_hand_it_out_once(store: Store) {
    for round in 0..5 {
        let id = format!("cer-{round}");
        store
            .put_ceremony(&id, &ceremony(None, &format!("s{round}"), 500))
            .await
            .unwrap();
        let results = race(16, |_| {
            let (store, id) = (store.clone(), id.clone());
            async move { store.take_ceremony(&id).await.unwrap() }
        })
        .await;
        let got: Vec<_> = results.into_iter().flatten().collect();
        assert_eq!(got.len(), 1, "round {round}: {got:?}");
        assert_eq!(got[0].state, format!("s{round}"));
    }
    assert_eq!(store.ceremony_count().await.unwrap(), 0);
}

async fn racing_takes_of_a_code_hand_it_out_once(store: Store) {
    let ada = UserId::generate();
    for round in 0..5 {
        let hash = format!("code-{round}");
        store
            .put_code(&hash, &code(&ada, 500 + round))
            .await
            .unwrap();
        let results = race(16, |_| {
            let (store, hash) = (store.clone(), hash.clone());
            async move { store.take_code(&hash).await.unwrap() }
        })
        .await;
        let got: Vec<_> = results.into_iter().flatten().collect();
        assert_eq!(got.len(), 1, "round {round}: {got:?}");
        assert_eq!(got[0].expires_at, 500 + round);
    }
    assert_eq!(store.code_count().await.unwrap(), 0);
}

async fn a_sessions_ceremony_of_one_kind_is_replaced_and_not_counted_as_anonymous(store: Store) {
    let u = UserId::generate();
    let id = keygate_store::person_ceremony_id(&u, "reauth", "sessionA");
    let other_session = keygate_store::person_ceremony_id(&u, "reauth", "sessionB");
    for i in 0..20 {
        store
            .put_ceremony(&id, &ceremony(Some(&u), &format!("s{i}"), u64::MAX / 2))
            .await
            .unwrap();
    }
    store
        .put_ceremony(
            &other_session,
            &ceremony(Some(&u), "other session", u64::MAX / 2),
        )
        .await
        .unwrap();
    store
        .put_ceremony(
            &keygate_store::person_ceremony_id(&u, "add_passkey", "sessionA"),
            &ceremony(Some(&u), "add", u64::MAX / 2),
        )
        .await
        .unwrap();
    store
        .put_ceremony("randomAnonymousId_-", &ceremony(None, "anon", u64::MAX / 2))
        .await
        .unwrap();
    // An anonymous id is anonymous whatever the record says about a person.
    store
        .put_ceremony(
            "otherAnonymousId",
            &ceremony(Some(&u), "anon2", u64::MAX / 2),
        )
        .await
        .unwrap();
    assert_eq!(store.ceremony_count().await.unwrap(), 5);
    assert_eq!(store.anonymous_ceremony_count().await.unwrap(), 2);
    // The newest start of that session is the one left; the other session's is intact.
    assert_eq!(
        store.take_ceremony(&id).await.unwrap().unwrap().state,
        "s19"
    );
    assert_eq!(
        store
            .take_ceremony(&other_session)
            .await
            .unwrap()
            .unwrap()
            .state,
        "other session"
    );
    assert_eq!(store.ceremony_count().await.unwrap(), 3);
    assert!(
        store
            .take_ceremony("randomAnonymousId_-")
            .await
            .unwrap()
            .is_some()
    );
    assert_eq!(store.anonymous_ceremony_count().await.unwrap(), 1);
}

async fn expired_sessions_ceremonies_and_codes_are_swept_and_live_ones_stay(store: Store) {
    let (a, _) = registered(&store, "cred").await;
    let ghost = UserId::generate();
    // Sessions: idle 100 s, absolute 1000 s; now = 2000.
    let session = |created_at: u64, last_seen_at: u64| SessionRecord {
        last_seen_at,
        ..session_record(&a.id, created_at)
    };
    for (h, s) in [
        ("idle", session(1500, 1899)),      // last seen 101 s ago
        ("idle-edge", session(1500, 1900)), // exactly 100 s: expired
        ("absolute", session(1000, 1999)),  // signed in exactly 1000 s ago: expired
        ("live", session(1001, 1950)),
    ] {
        let _ = store.insert_session(h, &s, 20).await.unwrap();
    }
    store
        .put_ceremony("old", &ceremony(None, "o", 1999))
        .await
        .unwrap();
    store
        .put_ceremony("edge", &ceremony(None, "e", 2000))
        .await
        .unwrap();
    store
        .put_ceremony("new", &ceremony(Some(&a.id), "n", 2001))
        .await
        .unwrap();
    store.put_code("old", &code(&ghost, 100)).await.unwrap();
    store.put_code("edge", &code(&ghost, 2000)).await.unwrap();
    store.put_code("new", &code(&ghost, 3000)).await.unwrap();
    assert_eq!(
        (
            store.ceremony_count().await.unwrap(),
            store.code_count().await.unwrap()
        ),
        (3, 3)
    );

    let swept = store.sweep_expired(2000, 100, 1000).await.unwrap();
    assert_eq!(
        swept,
        Swept {
            sessions: 3,
            ceremonies: 2,
            codes: 2,
        }
    );
    assert_eq!(
        store
            .sessions_for_user(&a.id)
            .await
            .unwrap()
            .into_iter()
            .map(|(h, _)| h)
            .collect::<Vec<_>>(),
        ["live"]
    );
    assert!(store.session("idle").await.unwrap().is_none());
    assert_eq!(
        (
            store.ceremony_count().await.unwrap(),
            store.code_count().await.unwrap()
        ),
        (1, 1)
    );
    assert!(store.take_code("new").await.unwrap().is_some());
    assert!(store.take_ceremony("new").await.unwrap().is_some());
    // Nothing left to sweep.
    assert_eq!(
        store.sweep_expired(2000, 100, 1000).await.unwrap(),
        Swept::default()
    );
}
