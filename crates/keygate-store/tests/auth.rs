//! Passkeys, sessions and account deletion on a real sled directory: the writes that
//! span trees, and what they refuse.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use keygate_core::ids::{PasskeyId, UserId};
use keygate_store::{
    CeremonyRecord, CodeRecord, DeletePasskey, PasskeyInsert, PasskeyRecord, SessionInsert,
    SessionRecord, SledStore, StoreError, StoreOptions, UserRecord,
};

/// Reopens a directory whose previous handle was just dropped: sled's background
/// flusher can hold the directory lock for a moment after the drop.
fn reopen(dir: &std::path::Path) -> SledStore {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        match SledStore::open(dir, &StoreOptions::default()) {
            Err(StoreError::Locked { .. }) if std::time::Instant::now() < deadline => {
                std::thread::sleep(std::time::Duration::from_millis(50));
            }
            other => return other.unwrap(),
        }
    }
}

/// Raw sled on a directory whose store was just dropped (same wait as [`reopen`]).
fn raw_sled(dir: &std::path::Path) -> sled::Db {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        match sled::open(dir) {
            Err(sled::Error::Io(_)) if std::time::Instant::now() < deadline => {
                std::thread::sleep(std::time::Duration::from_millis(50));
            }
            other => return other.unwrap(),
        }
    }
}

fn open() -> (tempfile::TempDir, SledStore) {
    let dir = tempfile::tempdir().unwrap();
    let store = SledStore::open(dir.path(), &StoreOptions::default()).unwrap();
    (dir, store)
}

fn user() -> UserRecord {
    UserRecord {
        id: UserId::generate(),
        name: "Ada".into(),
        created_at: 10,
    }
}

fn passkey(user: &UserId, credential_id: &str) -> PasskeyRecord {
    PasskeyRecord {
        id: PasskeyId::generate(),
        user_id: user.clone(),
        name: "Passkey".into(),
        credential_id: credential_id.into(),
        passkey: "{}".into(),
        created_at: 1,
        last_used_at: None,
        sign_count: 0,
        backup_eligible: false,
        backup_state: false,
    }
}

fn session(user: &UserId, created_at: u64) -> SessionRecord {
    SessionRecord {
        user_id: user.clone(),
        created_at,
        last_seen_at: created_at,
        fresh_until: created_at,
        public_id: format!("pub-{created_at}"),
        user_agent: None,
        seq: 0,
    }
}

fn registered(store: &SledStore, credential_id: &str) -> (UserRecord, PasskeyRecord) {
    let u = user();
    let pk = passkey(&u.id, credential_id);
    assert_eq!(
        store.insert_user_with_passkey(&u, &pk).unwrap(),
        PasskeyInsert::Inserted
    );
    (u, pk)
}

#[test]
fn a_credential_id_is_registered_once_and_a_squatter_changes_nothing() {
    let (_dir, store) = open();
    let (a, a_pk) = registered(&store, "cred-A");

    // Registering a new person with A's credential id: neither person nor passkey.
    let b = user();
    let squat = passkey(&b.id, "cred-A");
    assert_eq!(
        store.insert_user_with_passkey(&b, &squat).unwrap(),
        PasskeyInsert::CredentialTaken
    );
    assert!(store.user(&b.id).unwrap().is_none());
    assert!(store.passkey(&squat.id).unwrap().is_none());

    // An existing person adding A's credential id: refused too.
    let (c, _) = registered(&store, "cred-C");
    let squat = passkey(&c.id, "cred-A");
    assert_eq!(
        store.insert_passkey(&squat).unwrap(),
        PasskeyInsert::CredentialTaken
    );
    assert_eq!(store.passkeys_for_user(&c.id).unwrap().len(), 1);

    // The credential still leads to A's passkey; deleting C leaves it alone.
    assert!(store.delete_user(&c.id).unwrap());
    assert_eq!(
        store.passkey_by_credential("cred-A").unwrap().unwrap(),
        a_pk
    );
    assert_eq!(store.passkeys_for_user(&a.id).unwrap(), [a_pk]);
}

#[test]
fn adding_a_passkey_needs_the_person() {
    let (_dir, store) = open();
    let ghost = passkey(&UserId::generate(), "cred-ghost");
    assert_eq!(
        store.insert_passkey(&ghost).unwrap(),
        PasskeyInsert::NoSuchUser
    );
    assert!(store.passkey_by_credential("cred-ghost").unwrap().is_none());
}

#[test]
fn deleting_a_person_removes_only_credential_entries_that_are_theirs() {
    let (_dir, store) = open();
    let (a, a_pk) = registered(&store, "cred-shared");
    // A record left by the old, unchecked code: B's passkey claims the same credential
    // id, but the index names A's passkey.
    let (b, _) = registered(&store, "cred-B");
    let stray = passkey(&b.id, "cred-shared");
    let dir_path = _dir.path().to_owned();
    drop(store);
    {
        let db = raw_sled(&dir_path);
        db.open_tree("passkeys")
            .unwrap()
            .insert(
                stray.id.as_str(),
                serde_json::to_vec(&serde_json::json!({
                    "v": "1",
                    "id": stray.id, "user_id": b.id, "name": "stray",
                    "credential_id": "cred-shared", "passkey": "{}", "created_at": 2,
                    "last_used_at": null, "sign_count": 0,
                    "backup_eligible": false, "backup_state": false,
                }))
                .unwrap(),
            )
            .unwrap();
        let mut key = b.id.as_str().as_bytes().to_vec();
        key.extend_from_slice(stray.id.as_str().as_bytes());
        db.open_tree("passkeys_by_user")
            .unwrap()
            .insert(key, &[])
            .unwrap();
        db.flush().unwrap();
    }
    let store = reopen(&dir_path);
    assert_eq!(store.passkeys_for_user(&b.id).unwrap().len(), 2);
    assert!(store.delete_user(&b.id).unwrap());
    assert_eq!(
        store.passkey_by_credential("cred-shared").unwrap().unwrap(),
        a_pk,
        "deleting B removed A's credential entry"
    );
    assert!(store.passkey_by_credential("cred-B").unwrap().is_none());
    assert_eq!(store.passkeys_for_user(&a.id).unwrap().len(), 1);
}

#[test]
fn the_last_passkey_stays_whatever_the_order() {
    let (_dir, store) = open();
    let (a, first) = registered(&store, "cred-1");
    let second = passkey(&a.id, "cred-2");
    assert_eq!(
        store.insert_passkey(&second).unwrap(),
        PasskeyInsert::Inserted
    );
    assert_eq!(
        store.delete_passkey_unless_last(&first).unwrap(),
        DeletePasskey::Deleted
    );
    assert_eq!(
        store.delete_passkey_unless_last(&second).unwrap(),
        DeletePasskey::Last
    );
    assert_eq!(
        store.delete_passkey_unless_last(&first).unwrap(),
        DeletePasskey::Gone
    );
    assert!(store.passkey_by_credential("cred-1").unwrap().is_none());
    // The credential id is free again once its passkey is gone.
    let again = passkey(&a.id, "cred-1");
    assert_eq!(
        store.insert_passkey(&again).unwrap(),
        PasskeyInsert::Inserted
    );
}

#[test]
fn concurrent_removals_never_leave_a_person_without_a_passkey() {
    for _ in 0..20 {
        let (_dir, store) = open();
        let (a, first) = registered(&store, "cred-1");
        let second = passkey(&a.id, "cred-2");
        assert_eq!(
            store.insert_passkey(&second).unwrap(),
            PasskeyInsert::Inserted
        );
        let results: Vec<DeletePasskey> = std::thread::scope(|s| {
            let h1 = s.spawn(|| store.delete_passkey_unless_last(&first).unwrap());
            let h2 = s.spawn(|| store.delete_passkey_unless_last(&second).unwrap());
            vec![h1.join().unwrap(), h2.join().unwrap()]
        });
        assert_eq!(
            store.passkeys_for_user(&a.id).unwrap().len(),
            1,
            "{results:?}"
        );
        assert!(results.contains(&DeletePasskey::Last), "{results:?}");
    }
}

#[test]
fn sessions_are_capped_and_the_oldest_ends() {
    let (_dir, store) = open();
    let (a, _) = registered(&store, "cred");
    for i in 0..3 {
        assert_eq!(
            store
                .insert_session(&format!("h{i}"), &session(&a.id, 100 + i), 3)
                .unwrap(),
            SessionInsert::Inserted { ended: 0 }
        );
    }
    assert_eq!(
        store.insert_session("h3", &session(&a.id, 200), 3).unwrap(),
        SessionInsert::Inserted { ended: 1 }
    );
    assert!(store.session("h0").unwrap().is_none(), "the oldest ends");
    let left: Vec<String> = store
        .sessions_for_user(&a.id)
        .unwrap()
        .into_iter()
        .map(|(h, _)| h)
        .collect();
    assert_eq!(left, ["h1", "h2", "h3"]);
    // Nobody else's sessions count.
    let (b, _) = registered(&store, "cred-b");
    assert_eq!(
        store.insert_session("hb", &session(&b.id, 1), 3).unwrap(),
        SessionInsert::Inserted { ended: 0 }
    );
    assert_eq!(
        store
            .insert_session("hx", &session(&UserId::generate(), 1), 3)
            .unwrap(),
        SessionInsert::NoSuchUser
    );
}

#[test]
fn within_one_second_the_first_created_is_the_oldest() {
    let (_dir, store) = open();
    let (a, _) = registered(&store, "cred");
    // Hashes in reverse alphabetical order, all created in the same second.
    for h in ["z", "y", "x"] {
        let _ = store.insert_session(h, &session(&a.id, 7), 2).unwrap();
    }
    let left: Vec<String> = store
        .sessions_for_user(&a.id)
        .unwrap()
        .into_iter()
        .map(|(h, _)| h)
        .collect();
    assert_eq!(left, ["y", "x"]);
}

#[test]
fn an_ended_session_is_not_brought_back_by_a_late_update() {
    let (_dir, store) = open();
    let (a, _) = registered(&store, "cred");
    let s = session(&a.id, 5);
    let _ = store.insert_session("h", &s, 20).unwrap();
    store.delete_session("h").unwrap();
    store.put_session("h", &s).unwrap();
    assert!(store.session("h").unwrap().is_none());
    assert!(store.sessions_for_user(&a.id).unwrap().is_empty());
}

#[test]
fn ending_other_sessions_keeps_the_current_one() {
    let (_dir, store) = open();
    let (a, _) = registered(&store, "cred");
    for h in ["h1", "h2", "h3"] {
        let _ = store.insert_session(h, &session(&a.id, 1), 20).unwrap();
    }
    assert_eq!(
        store.delete_sessions_for_user(&a.id, Some("h2")).unwrap(),
        2
    );
    let left: Vec<String> = store
        .sessions_for_user(&a.id)
        .unwrap()
        .into_iter()
        .map(|(h, _)| h)
        .collect();
    assert_eq!(left, ["h2"]);
}

#[test]
fn deleting_a_person_takes_their_codes_and_ceremonies_and_nothing_else() {
    let (_dir, store) = open();
    let (a, _) = registered(&store, "cred-a");
    let (b, _) = registered(&store, "cred-b");
    // Built from JSON so fields added later with defaults need no change here.
    let code = |u: &UserId| -> CodeRecord {
        serde_json::from_value(serde_json::json!({
            "user_id": u, "redirect_uri": "https://app.example/cb",
            "origin": "https://app.example", "code_challenge": "x", "app_name": "app",
            "models": null, "plan": null, "reuse_grant_id": null, "expires_at": u64::MAX,
        }))
        .unwrap()
    };
    let ceremony = |u: Option<&UserId>| CeremonyRecord {
        kind: "reauth".into(),
        state: "{}".into(),
        user_id: u.cloned(),
        name: None,
        expires_at: u64::MAX,
    };
    store.put_code("code-a", &code(&a.id)).unwrap();
    store.put_code("code-b", &code(&b.id)).unwrap();
    store.put_ceremony("cer-a", &ceremony(Some(&a.id))).unwrap();
    store.put_ceremony("cer-b", &ceremony(Some(&b.id))).unwrap();
    store.put_ceremony("cer-anon", &ceremony(None)).unwrap();
    let _ = store.insert_session("sa", &session(&a.id, 1), 20).unwrap();
    let _ = store.insert_session("sb", &session(&b.id, 1), 20).unwrap();

    assert!(store.delete_user(&a.id).unwrap());
    assert!(!store.delete_user(&a.id).unwrap(), "already gone");
    assert!(store.take_code("code-a").unwrap().is_none());
    assert!(store.take_ceremony("cer-a").unwrap().is_none());
    assert!(store.session("sa").unwrap().is_none());
    assert!(store.user(&a.id).unwrap().is_none());
    assert!(store.passkey_by_credential("cred-a").unwrap().is_none());

    assert!(store.take_code("code-b").unwrap().is_some());
    assert!(store.take_ceremony("cer-b").unwrap().is_some());
    assert!(store.take_ceremony("cer-anon").unwrap().is_some());
    assert!(store.session("sb").unwrap().is_some());
    assert!(store.passkey_by_credential("cred-b").unwrap().is_some());
}

#[test]
fn grants_are_stored_only_for_people_who_exist() {
    let (_dir, store) = open();
    let ghost = UserId::generate();
    let grant: keygate_store::GrantRecord = serde_json::from_value(serde_json::json!({
        "id": keygate_core::ids::GrantId::generate(), "user_id": ghost, "name": "app",
        "origin": null, "models": [], "state": "active", "secret_hash": "ab".repeat(32),
        "created_at": 1, "last_used_at": null, "revoked_at": null,
    }))
    .unwrap();
    assert!(matches!(
        store.insert_grant(&grant),
        Err(StoreError::NotFound { what: "user" })
    ));
    assert!(store.grant(&grant.id).unwrap().is_none());
    assert!(store.grants_for_user(&ghost).unwrap().is_empty());
}

#[test]
fn concurrent_registrations_of_one_credential_id_make_one_person() {
    for _ in 0..20 {
        let (_dir, store) = open();
        let people: Vec<(UserRecord, PasskeyRecord)> = (0..4)
            .map(|_| {
                let u = user();
                let pk = passkey(&u.id, "cred-race");
                (u, pk)
            })
            .collect();
        let results: Vec<PasskeyInsert> = std::thread::scope(|s| {
            let handles: Vec<_> = people
                .iter()
                .map(|(u, pk)| s.spawn(|| store.insert_user_with_passkey(u, pk).unwrap()))
                .collect();
            handles.into_iter().map(|h| h.join().unwrap()).collect()
        });
        let winners = results
            .iter()
            .filter(|r| **r == PasskeyInsert::Inserted)
            .count();
        assert_eq!(winners, 1, "{results:?}");
        assert_eq!(store.users().unwrap().len(), 1);
        let owner = store.passkey_by_credential("cred-race").unwrap().unwrap();
        assert_eq!(store.users().unwrap()[0].id, owner.user_id);
    }
}

#[test]
fn a_late_passkey_update_does_not_bring_back_a_removed_passkey() {
    let (_dir, store) = open();
    let (u, first) = registered(&store, "cred-first");
    let second = passkey(&u.id, "cred-second");
    assert_eq!(
        store.insert_passkey(&second).unwrap(),
        PasskeyInsert::Inserted
    );

    // An update while the passkey exists is applied.
    let mut used = second.clone();
    used.sign_count = 7;
    store.put_passkey(&used).unwrap();
    assert_eq!(store.passkey(&second.id).unwrap().unwrap().sign_count, 7);

    // A sign-in that read the record before the removal writes it back after: nothing.
    assert_eq!(
        store.delete_passkey_unless_last(&second).unwrap(),
        DeletePasskey::Deleted
    );
    used.sign_count = 8;
    store.put_passkey(&used).unwrap();
    assert!(store.passkey(&second.id).unwrap().is_none());
    assert!(
        store
            .passkey_by_credential("cred-second")
            .unwrap()
            .is_none()
    );

    // The same when the whole person is deleted.
    assert!(store.delete_user(&u.id).unwrap());
    store.put_passkey(&first).unwrap();
    assert!(store.passkey(&first.id).unwrap().is_none());
}

#[test]
fn a_sessions_ceremony_of_one_kind_is_replaced_and_not_counted_as_anonymous() {
    let (_dir, store) = open();
    let u = user();
    let ceremony = |state: &str| -> CeremonyRecord {
        serde_json::from_value(serde_json::json!({
            "kind": "reauth", "state": state, "user_id": u.id.as_str(), "name": null,
            "expires_at": u64::MAX / 2,
        }))
        .unwrap()
    };
    let id = keygate_store::person_ceremony_id(&u.id, "reauth", "sessionA");
    assert_eq!(id, format!("{}~reauth~sessionA", u.id.as_str()));
    assert!(id.starts_with(&keygate_store::person_ceremony_prefix(&u.id)));
    assert!(keygate_store::is_person_ceremony_id(&id));
    // Another session of the same person has its own key, as has another kind.
    let other_session = keygate_store::person_ceremony_id(&u.id, "reauth", "sessionB");
    assert_ne!(id, other_session);
    for i in 0..100 {
        store
            .put_ceremony(&id, &ceremony(&format!("s{i}")))
            .unwrap();
    }
    store
        .put_ceremony(&other_session, &ceremony("other session"))
        .unwrap();
    store
        .put_ceremony(
            &keygate_store::person_ceremony_id(&u.id, "add_passkey", "sessionA"),
            &ceremony("add"),
        )
        .unwrap();
    store
        .put_ceremony("randomAnonymousId_-", &ceremony("anon"))
        .unwrap();
    assert!(!keygate_store::is_person_ceremony_id("randomAnonymousId_-"));
    assert_eq!(store.ceremony_count().unwrap(), 4);
    assert_eq!(store.anonymous_ceremony_count().unwrap(), 1);
    // The newest start of that session is the one left; the other session's is intact.
    assert_eq!(store.take_ceremony(&id).unwrap().unwrap().state, "s99");
    assert_eq!(
        store.take_ceremony(&other_session).unwrap().unwrap().state,
        "other session"
    );
}
