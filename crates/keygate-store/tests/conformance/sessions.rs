//! Sessions: capped per person (the oldest ends, by creation time then creation
//! order), never brought back by a late update, ended all but one.

use keygate_core::ids::UserId;
use keygate_store::{SessionInsert, SessionRecord, Store};

use crate::fixtures::*;

crate::conformance!(
    sessions_round_trip_and_are_numbered_in_creation_order,
    sessions_are_capped_and_the_oldest_ends,
    within_one_second_the_first_created_is_the_oldest,
    an_ended_session_is_not_brought_back_by_a_late_update,
    ending_other_sessions_keeps_the_current_one,
);

fn hashes(list: Vec<(String, SessionRecord)>) -> Vec<String> {
    list.into_iter().map(|(h, _)| h).collect()
}

async fn sessions_round_trip_and_are_numbered_in_creation_order(store: Store) {
    let (a, _) = registered(&store, "cred").await;
    assert!(store.session("nope").await.unwrap().is_none());
    let s = session_record(&a.id, 5);
    assert_eq!(
        store.insert_session("h1", &s, 20).await.unwrap(),
        SessionInsert::Inserted { ended: 0 }
    );
    let _ = store.insert_session("h2", &s, 20).await.unwrap();
    let (one, two) = (
        store.session("h1").await.unwrap().unwrap(),
        store.session("h2").await.unwrap().unwrap(),
    );
    // The store numbers sessions; everything else is as given.
    assert!(one.seq < two.seq, "{} < {}", one.seq, two.seq);
    assert_eq!(
        SessionRecord {
            seq: 0,
            ..one.clone()
        },
        s
    );
    let seen = SessionRecord {
        last_seen_at: 9,
        fresh_until: 300,
        ..one.clone()
    };
    store.put_session("h1", &seen).await.unwrap();
    assert_eq!(store.session("h1").await.unwrap(), Some(seen.clone()));
    assert_eq!(
        store.sessions_for_user(&a.id).await.unwrap(),
        vec![("h1".to_owned(), seen), ("h2".to_owned(), two)]
    );
    store.delete_session("h1").await.unwrap();
    store.delete_session("h1").await.unwrap();
    store.delete_session("never-was").await.unwrap();
    assert!(store.session("h1").await.unwrap().is_none());
    assert_eq!(
        hashes(store.sessions_for_user(&a.id).await.unwrap()),
        ["h2"]
    );
}

async fn sessions_are_capped_and_the_oldest_ends(store: Store) {
    let (a, _) = registered(&store, "cred").await;
    for i in 0..3 {
        assert_eq!(
            store
                .insert_session(&format!("h{i}"), &session_record(&a.id, 100 + i), 3)
                .await
                .unwrap(),
            SessionInsert::Inserted { ended: 0 }
        );
    }
    assert_eq!(
        store
            .insert_session("h3", &session_record(&a.id, 200), 3)
            .await
            .unwrap(),
        SessionInsert::Inserted { ended: 1 }
    );
    assert!(
        store.session("h0").await.unwrap().is_none(),
        "the oldest ends"
    );
    assert_eq!(
        hashes(store.sessions_for_user(&a.id).await.unwrap()),
        ["h1", "h2", "h3"]
    );
    // A lower cap ends as many as it takes.
    assert_eq!(
        store
            .insert_session("h4", &session_record(&a.id, 300), 2)
            .await
            .unwrap(),
        SessionInsert::Inserted { ended: 2 }
    );
    assert_eq!(
        hashes(store.sessions_for_user(&a.id).await.unwrap()),
        ["h3", "h4"]
    );
    // Nobody else's sessions count.
    let (b, _) = registered(&store, "cred-b").await;
    assert_eq!(
        store
            .insert_session("hb", &session_record(&b.id, 1), 2)
            .await
            .unwrap(),
        SessionInsert::Inserted { ended: 0 }
    );
    assert_eq!(store.sessions_for_user(&a.id).await.unwrap().len(), 2);
    // Nor can a session be made for nobody.
    assert_eq!(
        store
            .insert_session("hx", &session_record(&UserId::generate(), 1), 3)
            .await
            .unwrap(),
        SessionInsert::NoSuchUser
    );
    assert!(store.session("hx").await.unwrap().is_none());
}

async fn within_one_second_the_first_created_is_the_oldest(store: Store) {
    let (a, _) = registered(&store, "cred").await;
    // Hashes in reverse alphabetical order, all created in the same second.
    for h in ["z", "y", "x"] {
        let _ = store
            .insert_session(h, &session_record(&a.id, 7), 2)
            .await
            .unwrap();
    }
    assert_eq!(
        hashes(store.sessions_for_user(&a.id).await.unwrap()),
        ["y", "x"]
    );
}

async fn an_ended_session_is_not_brought_back_by_a_late_update(store: Store) {
    let (a, _) = registered(&store, "cred").await;
    let s = session_record(&a.id, 5);
    let _ = store.insert_session("h", &s, 20).await.unwrap();
    store.delete_session("h").await.unwrap();
    store.put_session("h", &s).await.unwrap();
    assert!(store.session("h").await.unwrap().is_none());
    assert!(store.sessions_for_user(&a.id).await.unwrap().is_empty());
    // Nor after its person is gone, nor one that never was.
    let _ = store.insert_session("g", &s, 20).await.unwrap();
    assert!(store.delete_user(&a.id).await.unwrap());
    store.put_session("g", &s).await.unwrap();
    store.put_session("never", &s).await.unwrap();
    assert!(store.session("g").await.unwrap().is_none());
    assert!(store.session("never").await.unwrap().is_none());
}

async fn ending_other_sessions_keeps_the_current_one(store: Store) {
    let (a, _) = registered(&store, "cred").await;
    let (b, _) = registered(&store, "cred-b").await;
    for h in ["h1", "h2", "h3"] {
        let _ = store
            .insert_session(h, &session_record(&a.id, 1), 20)
            .await
            .unwrap();
    }
    let _ = store
        .insert_session("hb", &session_record(&b.id, 1), 20)
        .await
        .unwrap();
    assert_eq!(
        store
            .delete_sessions_for_user(&a.id, Some("h2"))
            .await
            .unwrap(),
        2
    );
    assert_eq!(
        hashes(store.sessions_for_user(&a.id).await.unwrap()),
        ["h2"]
    );
    // Another person's session hash as `keep` keeps nothing of theirs.
    assert_eq!(
        store
            .delete_sessions_for_user(&a.id, Some("hb"))
            .await
            .unwrap(),
        1
    );
    assert!(store.session("h2").await.unwrap().is_none());
    assert!(store.session("hb").await.unwrap().is_some());
    assert_eq!(
        store.delete_sessions_for_user(&b.id, None).await.unwrap(),
        1
    );
    assert!(store.session("hb").await.unwrap().is_none());
    assert_eq!(
        store.delete_sessions_for_user(&b.id, None).await.unwrap(),
        0
    );
}
