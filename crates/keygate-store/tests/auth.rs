//! Passkeys on a real sled directory, where only sled can be: records written by older
//! code straight into its trees. Every behaviour of the store interface (passkeys,
//! sessions, account deletion, their races) is in the conformance suite
//! (`tests/conformance/`), run against sled and PostgreSQL.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use keygate_core::ids::{PasskeyId, UserId};
use keygate_store::{
    PasskeyInsert, PasskeyRecord, SledStore, StoreError, StoreOptions, UserRecord,
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
