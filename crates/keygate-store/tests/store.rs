//! What only the sled backend does: reopening a directory, its lock, records corrupted
//! on disk. Every behaviour of the store interface is in the conformance suite
//! (`tests/conformance/`), run against sled and PostgreSQL.

// Integration-test helpers are test code too; clippy only exempts #[test] fns.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use keygate_core::ids::{GrantId, KeyId, UserId};
use keygate_core::scope::Scope;
use keygate_store::{
    GrantRecord, GrantState, SledStore, StoreError, StoreOptions, UserRecord, VaultRecord,
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

fn user() -> UserRecord {
    UserRecord {
        id: UserId::generate(),
        name: "Ada".into(),
        created_at: 10,
    }
}

fn grant(user: &UserId, created_at: u64) -> GrantRecord {
    GrantRecord {
        id: GrantId::generate(),
        user_id: user.clone(),
        name: "app".into(),
        origin: None,
        models: vec!["gpt-4o-mini".into()],
        state: GrantState::Active,
        secret_hash: "ab".repeat(32),
        created_at,
        last_used_at: None,
        revoked_at: None,
        expires_at: None,
        plan: None,
        scopes: vec![Scope::Inference, Scope::Files],
        limits: Default::default(),
        previous_secret_hash: None,
        previous_until: None,
    }
}

#[tokio::test]
async fn everything_survives_a_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let u = user();
    let g1 = grant(&u.id, 2);
    let g2 = grant(&u.id, 1);
    let v = VaultRecord {
        user_id: u.id.clone(),
        key_id: KeyId::generate(),
        sealed: "a.b.c.d.e".into(),
        kid: "mk-1".into(),
        last4: "WXYZ".into(),
        created_at: 11,
        last_validated_at: None,
        rejected_at: Some(12),
    };
    {
        let store = SledStore::open(dir.path(), &StoreOptions::default()).unwrap();
        store.insert_user(&u).unwrap();
        store.put_vault(&u.id, &v).unwrap();
        store.insert_grant(&g1).unwrap();
        store.insert_grant(&g2).unwrap();
        store.revoke_grant(&g1.id, 99).unwrap().unwrap();
        store.touch_grants(&[(g2.id.clone(), 50)]).unwrap();
        store.flush().await.unwrap();
    }
    let store = reopen(dir.path());
    assert_eq!(store.schema_version().unwrap(), keygate_migrations::LATEST);
    assert_eq!(store.user(&u.id).unwrap().unwrap(), u);
    assert_eq!(store.users().unwrap().len(), 1);
    assert_eq!(store.vault(&u.id).unwrap().unwrap(), v);
    let grants = store.grants_for_user(&u.id).unwrap();
    assert_eq!(
        grants.iter().map(|g| &g.id).collect::<Vec<_>>(),
        [&g2.id, &g1.id]
    );
    let revoked = store.grant(&g1.id).unwrap().unwrap();
    assert_eq!(
        (revoked.state, revoked.revoked_at),
        (GrantState::Revoked, Some(99))
    );
    assert_eq!(store.grant(&g2.id).unwrap().unwrap().last_used_at, Some(50));
    assert!(
        store
            .grants_for_user(&UserId::generate())
            .unwrap()
            .is_empty()
    );
}

#[test]
fn a_second_open_in_the_same_process_is_reported_as_locked() {
    let dir = tempfile::tempdir().unwrap();
    let _first = SledStore::open(dir.path(), &StoreOptions::default()).unwrap();
    match SledStore::open(dir.path(), &StoreOptions::default()) {
        Err(StoreError::Locked { .. }) => {}
        other => panic!("expected Locked, got {other:?}"),
    }
}

#[test]
fn corrupt_records_are_errors_not_panics() {
    let dir = tempfile::tempdir().unwrap();
    let id = GrantId::generate();
    {
        let db = sled::open(dir.path()).unwrap();
        keygate_migrations::run(&db).unwrap();
        db.open_tree("grants")
            .unwrap()
            .insert(id.as_str(), b"{not json")
            .unwrap();
        db.flush().unwrap();
    }
    let store = reopen(dir.path());
    assert!(matches!(store.grant(&id), Err(StoreError::Corrupt { .. })));
}

#[tokio::test]
async fn admin_keys_are_stored_listed_removed_and_survive_a_reopen() {
    use keygate_core::admin_scope::AdminScope;
    use keygate_core::ids::AdminKeyId;
    use keygate_store::AdminKeyRecord;

    let dir = tempfile::tempdir().unwrap();
    let key = AdminKeyRecord {
        id: AdminKeyId::generate(),
        name: "ci".into(),
        scope: AdminScope::Write,
        secret_hash: "ab".repeat(32),
        created_at: 5,
        expires_at: Some(99),
    };
    {
        let store = SledStore::open(dir.path(), &StoreOptions::default()).unwrap();
        assert!(store.admin_key(&key.id).unwrap().is_none());
        store.insert_admin_key(&key).unwrap();
        store.flush().await.unwrap();
    }
    let store = reopen(dir.path());
    assert_eq!(store.admin_key(&key.id).unwrap(), Some(key.clone()));
    assert_eq!(store.admin_keys().unwrap(), vec![key.clone()]);
    assert!(store.delete_admin_key(&key.id).unwrap());
    assert!(!store.delete_admin_key(&key.id).unwrap());
    assert!(store.admin_keys().unwrap().is_empty());
}
