//! Export and import (what `keygate store copy` is built on): everything comes out
//! backend-neutral, goes into an empty store of either backend as it was, and a second
//! import changes nothing. The imported store then works like the original: indexes,
//! per-person views, and numbering that continues above every imported number.

use keygate_core::audit::Action;
use keygate_core::ids::UserId;
use keygate_store::{AuditQuery, CopyError, Entry, PasskeyInsert, SessionInsert, Store};

use crate::fixtures::*;
use crate::harness;

crate::conformance!(an_empty_store_exports_nothing);
crate::conformance_pair!(
    export_then_import_into_an_empty_store_gives_the_same_store,
    importing_twice_changes_nothing,
    copy_verifies_is_idempotent_follows_the_source_and_refuses_another_store,
);

/// What `populate` made, to check the imported store by.
pub struct Populated {
    ada: UserId,
    bob: UserId,
    removed_grant: keygate_core::ids::GrantId,
    max_session_seq: u64,
    max_audit_seq: u64,
}

/// One of everything the store keeps, including what outlives its owner.
pub async fn populate(store: &Store) -> Populated {
    let (ada, _) = registered(store, "cred-ada").await;
    store
        .insert_passkey(&passkey_record(&ada.id, "cred-ada-2"))
        .await
        .map(|r| assert_eq!(r, PasskeyInsert::Inserted))
        .unwrap();
    let bob = user(store).await;
    store
        .put_vault(
            &ada.id,
            &vault_record(&ada.id, "eyJhbGciOiJBMjU2R0NNS1cifQ.k.iv.ct.tag"),
        )
        .await
        .unwrap();
    store
        .put_operator_key(&operator_key("op.k.iv.ct.tag", "mk-1"))
        .await
        .unwrap();
    let mut kept = grant(store, &ada.id, 1).await;
    kept.origin = Some("https://app.example".into());
    kept = store
        .update_grant(&kept.id, &|g| g.origin = Some("https://app.example".into()))
        .await
        .unwrap()
        .unwrap();
    let removed = grant(store, &ada.id, 2).await;
    assert!(store.delete_grant(&removed.id).await.unwrap());
    let bobs = grant(store, &bob.id, 3).await;
    store.revoke_grant(&bobs.id, 4).await.unwrap();
    let mut max_session_seq = 0;
    for (h, at) in [("s-1", 100), ("s-2", 200)] {
        assert_eq!(
            store
                .insert_session(h, &session_record(&ada.id, at), 20)
                .await
                .unwrap(),
            SessionInsert::Inserted { ended: 0 }
        );
        max_session_seq = max_session_seq.max(store.session(h).await.unwrap().unwrap().seq);
    }
    store
        .put_ceremony("anon-ceremony", &ceremony(None, "{\"c\":1}", u64::MAX / 2))
        .await
        .unwrap();
    store
        .put_ceremony(
            &keygate_store::person_ceremony_id(&ada.id, "reauth", "pub-100"),
            &ceremony(Some(&ada.id), "{\"c\":2}", u64::MAX / 2),
        )
        .await
        .unwrap();
    store
        .put_code("code-hash", &code(&ada.id, u64::MAX / 2))
        .await
        .unwrap();
    store
        .add_usage(&[
            delta(&kept.id, 10, "gpt-4o", 3),
            delta(&kept.id, 11, "", 1),
            delta(&removed.id, 10, "gpt-4o-mini", 2),
            delta(&bobs.id, 12, "o1", 5),
        ])
        .await
        .unwrap();
    store.insert_admin_key(&admin_key("ci", 5)).await.unwrap();
    let mut max_audit_seq = 0;
    for (at, action, who) in [
        (1, Action::UserSignedUp, Some(&ada.id)),
        (2, Action::GrantCreated, Some(&bob.id)),
        (3, Action::AdminKeyCreated, None),
    ] {
        let r = store
            .append_audit(audit_entry(at, action, who))
            .await
            .unwrap();
        max_audit_seq = max_audit_seq.max(r.seq);
    }
    store.flush().await.unwrap();
    Populated {
        ada: ada.id,
        bob: bob.id,
        removed_grant: removed.id,
        max_session_seq,
        max_audit_seq,
    }
}

/// A store's export in one order (entries have none of their own).
pub async fn sorted_export(store: &Store) -> Vec<Entry> {
    let mut entries = store.export().await.unwrap();
    entries.sort_by_cached_key(|e| format!("{e:?}"));
    entries
}

/// What a populated store exports, by kind.
fn kinds(entries: &[Entry]) -> std::collections::BTreeMap<&'static str, u64> {
    let mut counts = std::collections::BTreeMap::new();
    for e in entries {
        *counts.entry(e.kind()).or_default() += 1;
    }
    counts
}

/// The imported store works like the original, beyond holding equal entries.
pub async fn check_imported(store: &Store, p: &Populated) {
    assert_eq!(
        store
            .passkey_by_credential("cred-ada-2")
            .await
            .unwrap()
            .map(|pk| pk.user_id),
        Some(p.ada.clone())
    );
    assert_eq!(store.passkeys_for_user(&p.ada).await.unwrap().len(), 2);
    assert_eq!(store.grants_for_user(&p.ada).await.unwrap().len(), 1);
    assert_eq!(store.grant_ids_ever(&p.ada).await.unwrap().len(), 2);
    assert!(
        store
            .grant_ids_ever(&p.ada)
            .await
            .unwrap()
            .contains(&p.removed_grant)
    );
    assert_eq!(
        store
            .usage_total(&p.removed_grant, 0, 100, None)
            .await
            .unwrap()
            .requests,
        2
    );
    assert_eq!(store.sessions_for_user(&p.ada).await.unwrap().len(), 2);
    assert!(store.vault_cached(&p.ada).await.unwrap().is_some());
    assert_eq!(store.anonymous_ceremony_count().await.unwrap(), 1);
    let bobs_log = AuditQuery {
        user: Some(p.bob.clone()),
        ..AuditQuery::default()
    };
    assert_eq!(
        store.audit_page(&bobs_log, None, 10).await.unwrap().0.len(),
        1
    );
    // A credential id imported is taken.
    let (carol, _) = registered(store, "cred-carol").await;
    assert_eq!(
        store
            .insert_passkey(&passkey_record(&carol.id, "cred-ada"))
            .await
            .unwrap(),
        PasskeyInsert::CredentialTaken
    );
    // Numbers given out after the import are above every imported one.
    let _ = store
        .insert_session("s-new", &session_record(&p.ada, 300), 20)
        .await
        .unwrap();
    let new_session = store.session("s-new").await.unwrap().unwrap();
    assert!(new_session.seq > p.max_session_seq);
    let new_entry = store
        .append_audit(audit_entry(4, Action::UserSignedIn, None))
        .await
        .unwrap();
    assert!(new_entry.seq > p.max_audit_seq);
}

async fn an_empty_store_exports_nothing(store: Store) {
    assert!(store.export().await.unwrap().is_empty());
    store.import(&[]).await.unwrap();
    assert!(store.export().await.unwrap().is_empty());
}

async fn export_then_import_into_an_empty_store_gives_the_same_store(from: Store, to: Store) {
    let p = populate(&from).await;
    let exported = sorted_export(&from).await;
    assert_eq!(
        kinds(&exported),
        [
            ("admin_keys", 1),
            ("audit", 3),
            ("ceremonies", 2),
            ("connect_codes", 1),
            ("grant_owners", 3),
            ("grants", 2),
            ("operator_key", 1),
            ("passkeys", 2),
            ("sessions", 2),
            ("usage", 4),
            ("users", 2),
            ("vault", 1),
        ]
        .into_iter()
        .collect()
    );
    to.import(&exported).await.unwrap();
    assert_eq!(sorted_export(&to).await, exported);
    check_imported(&to, &p).await;
}

async fn importing_twice_changes_nothing(from: Store, to: Store) {
    populate(&from).await;
    let exported = sorted_export(&from).await;
    to.import(&exported).await.unwrap();
    let once = sorted_export(&to).await;
    to.import(&exported).await.unwrap();
    assert_eq!(sorted_export(&to).await, once);
    assert_eq!(once, exported);
    // Usage rows are set, not added: still the original totals.
    let total: u64 = to
        .usage_rows_all(0, u32::MAX)
        .await
        .unwrap()
        .iter()
        .map(|(_, r)| r.counts.requests)
        .sum();
    assert_eq!(total, 3 + 1 + 2 + 5);
    // Importing into a store that already holds the same records is also a no-op on
    // the source.
    from.import(&exported).await.unwrap();
    assert_eq!(sorted_export(&from).await, exported);
}

/// sled → PostgreSQL → sled: both backends hold the same entries at every step.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sled_to_postgres_and_back_is_equal() {
    let Some(pg) = harness::postgres().await else {
        return;
    };
    let (first, last) = (harness::sled(), harness::sled());
    let p = populate(&first.store()).await;
    let exported = sorted_export(&first.store()).await;
    pg.store().import(&exported).await.unwrap();
    let through_pg = sorted_export(&pg.store()).await;
    assert_eq!(through_pg, exported);
    last.store().import(&through_pg).await.unwrap();
    assert_eq!(sorted_export(&last.store()).await, exported);
    check_imported(&pg.store(), &p).await;
    check_imported(&last.store(), &p).await;
    pg.drop_database().await;
}

/// PostgreSQL → sled: what was made on PostgreSQL (its own numbering) lands in sled.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn postgres_to_sled_is_equal() {
    let Some(pg) = harness::postgres().await else {
        return;
    };
    let sled = harness::sled();
    let p = populate(&pg.store()).await;
    let exported = sorted_export(&pg.store()).await;
    sled.store().import(&exported).await.unwrap();
    assert_eq!(sorted_export(&sled.store()).await, exported);
    check_imported(&sled.store(), &p).await;
    pg.drop_database().await;
}

/// `keygate_store::copy` (what `keygate store copy` runs): the counts it reports are
/// the source's and the target's; run again it changes nothing; after the source
/// changed, a second run makes the target follow (a replaced record, a new one); a
/// target holding what the source never had is refused before anything is written.
async fn copy_verifies_is_idempotent_follows_the_source_and_refuses_another_store(
    from: Store,
    to: Store,
) {
    let p = populate(&from).await;
    let report = keygate_store::copy(&from, &to).await.unwrap();
    let exported = sorted_export(&from).await;
    assert_eq!(report.counts, kinds(&exported));
    assert_eq!(report.unchanged, 0);
    assert_eq!(sorted_export(&to).await, exported);

    let again = keygate_store::copy(&from, &to).await.unwrap();
    assert_eq!(again.unchanged, exported.len() as u64);
    assert_eq!(sorted_export(&to).await, exported);

    // The source moves on: a renamed person, one more person.
    let mut ada = from.user(&p.ada).await.unwrap().unwrap();
    ada.name = "Ada L.".into();
    from.insert_user(&ada).await.unwrap();
    user(&from).await;
    keygate_store::copy(&from, &to).await.unwrap();
    assert_eq!(sorted_export(&to).await, sorted_export(&from).await);
    assert_eq!(to.user(&p.ada).await.unwrap().unwrap().name, "Ada L.");

    // The target gains what the source never had: another store, refused, untouched.
    user(&to).await;
    let before = sorted_export(&to).await;
    user(&from).await;
    match keygate_store::copy(&from, &to).await {
        Err(CopyError::ForeignTarget { foreign }) if foreign == "1 users" => {}
        other => panic!("expected a refused foreign target, got {other:?}"),
    }
    assert_eq!(sorted_export(&to).await, before);
}
