//! Deleting a person: everything of theirs goes at once (vault, grants, passkeys and
//! their credential ids, sessions, their ceremonies and codes); their usage rows,
//! grant owner records and audit entries stay; nothing of anyone else's is touched.

use keygate_core::audit::Action;
use keygate_store::{AuditQuery, PasskeyInsert, SessionInsert, Store, StoreError};

use crate::fixtures::*;

crate::conformance!(
    deleting_a_person_removes_everything_of_theirs_but_usage_owners_and_audit,
    nothing_attached_while_a_person_is_deleted_outlives_them,
);

async fn deleting_a_person_removes_everything_of_theirs_but_usage_owners_and_audit(store: Store) {
    let (a, a_pk) = registered(&store, "cred-a").await;
    let (b, b_pk) = registered(&store, "cred-b").await;
    let a2 = passkey_record(&a.id, "cred-a2");
    assert_eq!(
        store.insert_passkey(&a2).await.unwrap(),
        PasskeyInsert::Inserted
    );
    for who in [&a, &b] {
        store
            .put_vault(&who.id, &vault_record(&who.id, "a.b.c.d.e"))
            .await
            .unwrap();
    }
    let (ga1, ga2) = (grant(&store, &a.id, 1).await, grant(&store, &a.id, 2).await);
    let gb = grant(&store, &b.id, 1).await;
    // The cached reads have seen them (a deletion must not leave them served).
    assert!(store.grant_cached(&ga1.id).await.unwrap().is_some());
    assert!(store.vault_cached(&a.id).await.unwrap().is_some());
    store
        .add_usage(&[
            delta(&ga1.id, 10, "gpt-4o", 1),
            delta(&gb.id, 10, "gpt-4o", 2),
        ])
        .await
        .unwrap();
    let entry = store
        .append_audit(audit_entry(5, Action::GrantCreated, Some(&a.id)))
        .await
        .unwrap();
    store
        .put_code("code-a", &code(&a.id, u64::MAX))
        .await
        .unwrap();
    store
        .put_code("code-b", &code(&b.id, u64::MAX))
        .await
        .unwrap();
    store
        .put_ceremony("cer-a", &ceremony(Some(&a.id), "{}", u64::MAX))
        .await
        .unwrap();
    let person_cer = keygate_store::person_ceremony_id(&a.id, "reauth", "s1");
    store
        .put_ceremony(&person_cer, &ceremony(Some(&a.id), "{}", u64::MAX))
        .await
        .unwrap();
    store
        .put_ceremony("cer-b", &ceremony(Some(&b.id), "{}", u64::MAX))
        .await
        .unwrap();
    store
        .put_ceremony("cer-anon", &ceremony(None, "{}", u64::MAX))
        .await
        .unwrap();
    for (h, who) in [("sa1", &a), ("sa2", &a), ("sb", &b)] {
        let _ = store
            .insert_session(h, &session_record(&who.id, 1), 20)
            .await
            .unwrap();
    }

    assert!(store.delete_user(&a.id).await.unwrap());
    assert!(!store.delete_user(&a.id).await.unwrap(), "already gone");

    // Everything of A's is gone.
    assert!(store.user(&a.id).await.unwrap().is_none());
    assert!(store.vault(&a.id).await.unwrap().is_none());
    assert!(store.vault_cached(&a.id).await.unwrap().is_none());
    for g in [&ga1, &ga2] {
        assert!(store.grant(&g.id).await.unwrap().is_none());
        assert!(store.grant_cached(&g.id).await.unwrap().is_none());
    }
    assert!(store.grants_for_user(&a.id).await.unwrap().is_empty());
    assert!(store.passkeys_for_user(&a.id).await.unwrap().is_empty());
    for pk in [&a_pk, &a2] {
        assert!(store.passkey(&pk.id).await.unwrap().is_none());
        assert!(
            store
                .passkey_by_credential(&pk.credential_id)
                .await
                .unwrap()
                .is_none()
        );
    }
    assert!(store.sessions_for_user(&a.id).await.unwrap().is_empty());
    assert!(store.session("sa1").await.unwrap().is_none());
    assert!(store.take_code("code-a").await.unwrap().is_none());
    assert!(store.take_ceremony("cer-a").await.unwrap().is_none());
    assert!(store.take_ceremony(&person_cer).await.unwrap().is_none());
    assert!(
        !store
            .vault_entries()
            .await
            .unwrap()
            .iter()
            .any(|(u, _)| *u == a.id)
    );

    // Nothing new can be attached to them.
    assert!(matches!(
        store.insert_grant(&grant_record(&a.id, 3)).await,
        Err(StoreError::NotFound { what: "user" })
    ));
    assert_eq!(
        store
            .insert_passkey(&passkey_record(&a.id, "cred-late"))
            .await
            .unwrap(),
        PasskeyInsert::NoSuchUser
    );
    assert_eq!(
        store
            .insert_session("late", &session_record(&a.id, 1), 20)
            .await
            .unwrap(),
        SessionInsert::NoSuchUser
    );
    // Their credential ids are free again.
    registered(&store, "cred-a").await;

    // What stays: usage, owner records, audit.
    assert_eq!(
        store
            .usage_total(&ga1.id, 0, 100, None)
            .await
            .unwrap()
            .requests,
        1
    );
    let mut ever = vec![ga1.id.clone(), ga2.id.clone()];
    ever.sort();
    assert_eq!(store.grant_ids_ever(&a.id).await.unwrap(), ever);
    assert_eq!(
        store.grant_owners().await.unwrap().get(&ga1.id),
        Some(&a.id)
    );
    let q = AuditQuery {
        user: Some(a.id.clone()),
        ..AuditQuery::default()
    };
    assert_eq!(store.audit_page(&q, None, 10).await.unwrap().0, vec![entry]);

    // Nobody else's anything was touched.
    assert!(store.user(&b.id).await.unwrap().is_some());
    assert!(store.vault(&b.id).await.unwrap().is_some());
    assert_eq!(store.grant(&gb.id).await.unwrap(), Some(gb.clone()));
    assert_eq!(
        store.passkey_by_credential("cred-b").await.unwrap(),
        Some(b_pk)
    );
    assert!(store.session("sb").await.unwrap().is_some());
    assert!(store.take_code("code-b").await.unwrap().is_some());
    assert!(store.take_ceremony("cer-b").await.unwrap().is_some());
    assert!(store.take_ceremony("cer-anon").await.unwrap().is_some());
    assert_eq!(
        store
            .usage_total(&gb.id, 0, 100, None)
            .await
            .unwrap()
            .requests,
        2
    );
}

/// Another node attaching grants, passkeys and sessions while the person is deleted:
/// whatever each insert answered, nothing of the person is left afterwards.
async fn nothing_attached_while_a_person_is_deleted_outlives_them(store: Store) {
    for round in 0..5 {
        let (a, first) = registered(&store, &format!("cred-{round}")).await;
        let grants: Vec<_> = (0..8).map(|i| grant_record(&a.id, i)).collect();
        let passkeys: Vec<_> = (0..4)
            .map(|i| passkey_record(&a.id, &format!("cred-{round}-{i}")))
            .collect();
        let sessions: Vec<String> = (0..4).map(|i| format!("s-{round}-{i}")).collect();
        race(17, |i| {
            let store = store.clone();
            let (a, grants, passkeys, sessions) = (
                a.clone(),
                grants.clone(),
                passkeys.clone(),
                sessions.clone(),
            );
            async move {
                match i {
                    0 => assert!(store.delete_user(&a.id).await.unwrap()),
                    1..=8 => match store.insert_grant(&grants[i - 1]).await {
                        Ok(()) | Err(StoreError::NotFound { what: "user" }) => {}
                        Err(e) => panic!("insert_grant: {e}"),
                    },
                    9..=12 => {
                        let _ = store.insert_passkey(&passkeys[i - 9]).await.unwrap();
                    }
                    _ => {
                        let _ = store
                            .insert_session(&sessions[i - 13], &session_record(&a.id, 1), 20)
                            .await
                            .unwrap();
                    }
                }
            }
        })
        .await;
        assert!(store.user(&a.id).await.unwrap().is_none());
        assert!(store.grants_for_user(&a.id).await.unwrap().is_empty());
        for g in &grants {
            assert!(store.grant(&g.id).await.unwrap().is_none(), "round {round}");
            assert!(store.grant_cached(&g.id).await.unwrap().is_none());
        }
        assert!(store.passkeys_for_user(&a.id).await.unwrap().is_empty());
        for pk in passkeys.iter().chain([&first]) {
            assert!(
                store.passkey(&pk.id).await.unwrap().is_none(),
                "round {round}"
            );
            assert!(
                store
                    .passkey_by_credential(&pk.credential_id)
                    .await
                    .unwrap()
                    .is_none()
            );
        }
        assert!(store.sessions_for_user(&a.id).await.unwrap().is_empty());
        for h in &sessions {
            assert!(store.session(h).await.unwrap().is_none(), "round {round}");
        }
    }
}
