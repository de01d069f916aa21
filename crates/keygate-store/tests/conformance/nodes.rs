//! Several nodes on one PostgreSQL store (each its own `Store::connect`, its own pool,
//! as separate keygate processes): what one node writes, the next read on any other
//! sees — a revocation included, on the proxy's cached lookups — and what is handed
//! out once is handed out once across nodes. Only PostgreSQL is shared; sled is held
//! by one process (its own tests show the lock).

use std::collections::HashSet;

use keygate_core::audit::Action;
use keygate_core::ids::UserId;
use keygate_store::{GrantRecord, GrantState, SessionInsert, Store, UsageCounts};

use crate::fixtures::*;
use crate::harness::{self, Backend};

/// The test database and two nodes on it; `None` without a PostgreSQL server.
async fn two_nodes() -> Option<(Backend, Store, Store)> {
    let backend = harness::postgres().await?;
    let a = backend.store();
    let b = backend.another_node().await?;
    Some((backend, a, b))
}

/// The node task `i` of a race runs on: every other one.
fn node(i: usize, a: &Store, b: &Store) -> Store {
    if i.is_multiple_of(2) {
        a.clone()
    } else {
        b.clone()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 8)]
async fn a_revocation_on_one_node_is_seen_by_the_next_cached_read_on_another() {
    let Some((backend, a, b)) = two_nodes().await else {
        return;
    };
    let ada = user(&a).await;
    let g = grant(&a, &ada.id, 1).await;
    let v = vault_record(&ada.id, "a.b.c.d.e");
    a.put_vault(&ada.id, &v).await.unwrap();
    // B has served the grant and the key (whatever it may keep of them).
    assert_eq!(b.grant_cached(&g.id).await.unwrap().as_deref(), Some(&g));
    assert_eq!(b.vault_cached(&ada.id).await.unwrap().as_deref(), Some(&v));

    a.update_grant(&g.id, &|r| r.state = GrantState::Disabled)
        .await
        .unwrap();
    assert_eq!(
        b.grant_cached(&g.id).await.unwrap().unwrap().state,
        GrantState::Disabled
    );
    a.revoke_grant(&g.id, 5).await.unwrap();
    assert_eq!(
        b.grant_cached(&g.id).await.unwrap().unwrap().state,
        GrantState::Revoked
    );
    let rotated = vault_record(&ada.id, "f.g.h.i.j");
    a.put_vault(&ada.id, &rotated).await.unwrap();
    assert_eq!(
        b.vault_cached(&ada.id).await.unwrap().as_deref(),
        Some(&rotated)
    );
    assert!(a.delete_user(&ada.id).await.unwrap());
    assert!(b.grant_cached(&g.id).await.unwrap().is_none());
    assert!(b.vault_cached(&ada.id).await.unwrap().is_none());
    drop((a, b));
    backend.drop_database().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 8)]
async fn ceremonies_sessions_and_codes_hand_off_between_nodes() {
    let Some((backend, a, b)) = two_nodes().await else {
        return;
    };
    // A passkey registered on A signs in on B.
    let (ada, pk) = registered(&a, "cred-ada").await;
    assert_eq!(
        b.passkey_by_credential("cred-ada").await.unwrap(),
        Some(pk.clone())
    );
    // A ceremony started on A finishes on B, once, whichever node each try lands on.
    a.put_ceremony("cer", &ceremony(None, "{\"challenge\":1}", u64::MAX / 2))
        .await
        .unwrap();
    let taken = race(16, |i| {
        let store = node(i, &a, &b);
        async move { store.take_ceremony("cer").await.unwrap() }
    })
    .await;
    assert_eq!(taken.iter().flatten().count(), 1, "{taken:?}");
    // A session made on A is valid on B, ended on B, gone on A.
    assert_eq!(
        a.insert_session("sess", &session_record(&ada.id, 1), 20)
            .await
            .unwrap(),
        SessionInsert::Inserted { ended: 0 }
    );
    assert_eq!(
        b.session("sess").await.unwrap(),
        a.session("sess").await.unwrap()
    );
    b.delete_session("sess").await.unwrap();
    assert!(a.session("sess").await.unwrap().is_none());
    // A connect code issued by A is redeemed once, on either.
    a.put_code("code", &code(&ada.id, u64::MAX / 2))
        .await
        .unwrap();
    let redeemed = race(16, |i| {
        let store = node(i, &a, &b);
        async move { store.take_code("code").await.unwrap() }
    })
    .await;
    assert_eq!(redeemed.iter().flatten().count(), 1);
    drop((a, b));
    backend.drop_database().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 8)]
async fn writes_from_two_nodes_lose_nothing_and_number_uniquely() {
    let Some((backend, a, b)) = two_nodes().await else {
        return;
    };
    let ada = user(&a).await;
    let g = grant(&a, &ada.id, 1).await;
    race(32, |i| {
        let (store, id, g_id) = (node(i, &a, &b), g.id.clone(), g.id.clone());
        async move {
            store
                .update_grant(&id, &move |r: &mut GrantRecord| {
                    r.models.push(format!("m-{i}"))
                })
                .await
                .unwrap();
            store
                .add_usage(&[delta(&g_id, 20, "gpt-4o", 1)])
                .await
                .unwrap();
        }
    })
    .await;
    assert_eq!(b.grant(&g.id).await.unwrap().unwrap().models.len(), 33);
    let mut expected = UsageCounts::default();
    for _ in 0..32 {
        expected.add(&delta(&g.id, 20, "gpt-4o", 1).counts);
    }
    assert_eq!(a.usage_total(&g.id, 20, 20, None).await.unwrap(), expected);
    // Audit and session numbers come from one sequence: unique across nodes.
    let who = UserId::generate();
    let numbered = race(32, |i| {
        let (store, who) = (node(i, &a, &b), who.clone());
        async move {
            store
                .append_audit(audit_entry(1, Action::GrantChanged, Some(&who)))
                .await
                .unwrap()
                .seq
        }
    })
    .await;
    assert_eq!(numbered.iter().collect::<HashSet<_>>().len(), 32);
    drop((a, b));
    backend.drop_database().await;
}
