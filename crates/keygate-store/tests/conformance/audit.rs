//! The audit log: the store numbers entries (unique, increasing, also when 32 tasks
//! append at once), pages newest first with filters, keeps a per-person view, and the
//! retention sweep removes old entries from both.

use std::collections::HashSet;

use keygate_core::audit::Action;
use keygate_core::ids::UserId;
use keygate_store::{AuditQuery, AuditRecord, Store};

use crate::fixtures::*;

crate::conformance!(
    entries_round_trip_numbered_and_page_newest_first_with_filters,
    concurrent_appends_get_unique_increasing_numbers,
    the_retention_sweep_removes_old_entries_and_their_copies,
);

fn actions(v: &[AuditRecord]) -> Vec<(u64, Action)> {
    v.iter().map(|r| (r.at_ns / S, r.action)).collect()
}

/// Every page of `q` with pages of `limit`, in order.
pub async fn walk(store: &Store, q: &AuditQuery, limit: usize) -> Vec<AuditRecord> {
    let (mut seen, mut after) = (Vec::new(), None::<Vec<u8>>);
    loop {
        let (page, next) = store.audit_page(q, after.as_deref(), limit).await.unwrap();
        assert!(page.len() <= limit);
        // A cursor is given only when more records follow: no empty last page.
        assert!(
            after.is_none() || !page.is_empty(),
            "an empty page after a cursor"
        );
        seen.extend(page);
        match next {
            Some(n) => after = Some(n),
            None => return seen,
        }
    }
}

async fn entries_round_trip_numbered_and_page_newest_first_with_filters(store: Store) {
    let (ann, bob) = (UserId::generate(), UserId::generate());
    let mut stored = Vec::new();
    for (at, action, user) in [
        (10, Action::UserSignedUp, Some(&ann)),
        (10, Action::GrantCreated, Some(&ann)),
        (20, Action::UserSignedUp, Some(&bob)),
        (30, Action::AdminKeyCreated, None),
        (40, Action::GrantRevoked, Some(&ann)),
    ] {
        let given = audit_entry(at, action, user);
        let back = store.append_audit(given.clone()).await.unwrap();
        // As given, numbered.
        assert_eq!(
            AuditRecord {
                seq: 0,
                ..back.clone()
            },
            given
        );
        stored.push(back);
    }
    let seqs: Vec<u64> = stored.iter().map(|r| r.seq).collect();
    assert!(seqs.windows(2).all(|w| w[0] < w[1]), "{seqs:?}");
    store.flush().await.unwrap();

    let all = AuditQuery::default();
    let (page, next) = store.audit_page(&all, None, 2).await.unwrap();
    assert_eq!(
        actions(&page),
        [(40, Action::GrantRevoked), (30, Action::AdminKeyCreated)]
    );
    let (page, next) = store.audit_page(&all, next.as_deref(), 2).await.unwrap();
    // Same nanosecond: the later append first.
    assert_eq!(
        actions(&page),
        [(20, Action::UserSignedUp), (10, Action::GrantCreated)]
    );
    let (page, next) = store.audit_page(&all, next.as_deref(), 2).await.unwrap();
    assert_eq!(
        (actions(&page), next),
        (vec![(10, Action::UserSignedUp)], None)
    );
    let mut newest_first = stored.clone();
    newest_first.reverse();
    for limit in [1, 3, 5, 100] {
        assert_eq!(
            walk(&store, &all, limit).await,
            newest_first,
            "limit {limit}"
        );
    }

    // One person's entries (the per-person view).
    let ann_q = AuditQuery {
        user: Some(ann.clone()),
        ..Default::default()
    };
    assert_eq!(
        actions(&walk(&store, &ann_q, 1).await),
        [
            (40, Action::GrantRevoked),
            (10, Action::GrantCreated),
            (10, Action::UserSignedUp)
        ]
    );
    let nobody = AuditQuery {
        user: Some(UserId::generate()),
        ..Default::default()
    };
    assert_eq!(
        store.audit_page(&nobody, None, 10).await.unwrap(),
        (vec![], None)
    );

    // Time window (from inclusive, until exclusive) and action.
    let window = AuditQuery {
        from_ns: Some(10 * S),
        until_ns: Some(40 * S),
        ..Default::default()
    };
    assert_eq!(walk(&store, &window, 2).await.len(), 4);
    let narrow = AuditQuery {
        from_ns: Some(20 * S),
        until_ns: Some(20 * S + 1),
        ..Default::default()
    };
    assert_eq!(
        actions(&walk(&store, &narrow, 10).await),
        [(20, Action::UserSignedUp)]
    );
    let signups = AuditQuery {
        action: Some(Action::UserSignedUp),
        from_ns: Some(11 * S),
        ..Default::default()
    };
    assert_eq!(
        actions(&walk(&store, &signups, 10).await),
        [(20, Action::UserSignedUp)]
    );
    let ann_signups = AuditQuery {
        user: Some(ann.clone()),
        action: Some(Action::UserSignedUp),
        ..Default::default()
    };
    assert_eq!(
        actions(&walk(&store, &ann_signups, 1).await),
        [(10, Action::UserSignedUp)]
    );
    let ann_window = AuditQuery {
        user: Some(ann.clone()),
        until_ns: Some(40 * S),
        ..Default::default()
    };
    assert_eq!(walk(&store, &ann_window, 10).await.len(), 2);
    let empty_window = AuditQuery {
        from_ns: Some(30 * S),
        until_ns: Some(30 * S),
        ..Default::default()
    };
    assert!(walk(&store, &empty_window, 10).await.is_empty());
}

async fn concurrent_appends_get_unique_increasing_numbers(store: Store) {
    let ann = UserId::generate();
    let before = store
        .append_audit(audit_entry(1, Action::UserSignedIn, Some(&ann)))
        .await
        .unwrap();
    let results = race(32, |i| {
        let (store, ann) = (store.clone(), ann.clone());
        async move {
            let user = (i % 2 == 0).then_some(&ann);
            store
                .append_audit(audit_entry(5, Action::GrantChanged, user))
                .await
                .unwrap()
        }
    })
    .await;
    let seqs: HashSet<u64> = results.iter().map(|r| r.seq).collect();
    assert_eq!(seqs.len(), 32, "every entry its own number");
    assert!(seqs.iter().all(|s| *s > before.seq));
    let after = store
        .append_audit(audit_entry(1, Action::UserSignedIn, None))
        .await
        .unwrap();
    assert!(seqs.iter().all(|s| *s < after.seq));
    // All 32 at the same nanosecond are listed, none twice, ordered by number.
    let all = walk(&store, &AuditQuery::default(), 7).await;
    assert_eq!(all.len(), 34);
    let at_5: Vec<u64> = all
        .iter()
        .filter(|r| r.at_ns == 5 * S)
        .map(|r| r.seq)
        .collect();
    assert_eq!(at_5.len(), 32);
    assert!(
        at_5.windows(2).all(|w| w[0] > w[1]),
        "newest first: {at_5:?}"
    );
    let ann_q = AuditQuery {
        user: Some(ann.clone()),
        ..Default::default()
    };
    assert_eq!(walk(&store, &ann_q, 5).await.len(), 17);
}

async fn the_retention_sweep_removes_old_entries_and_their_copies(store: Store) {
    let (ann, bob) = (UserId::generate(), UserId::generate());
    for (at, action, user) in [
        (10, Action::UserSignedUp, Some(&ann)),
        (20, Action::UserSignedUp, Some(&bob)),
        (25, Action::AdminKeyCreated, None),
        (30, Action::GrantCreated, Some(&bob)),
        (40, Action::GrantRevoked, Some(&ann)),
    ] {
        store
            .append_audit(audit_entry(at, action, user))
            .await
            .unwrap();
    }
    assert_eq!(store.sweep_audit_before(10 * S).await.unwrap(), 0);
    // Everything before 25 s goes (25 s itself stays), copies included.
    assert_eq!(store.sweep_audit_before(25 * S).await.unwrap(), 2);
    assert_eq!(
        actions(&walk(&store, &AuditQuery::default(), 10).await),
        [
            (40, Action::GrantRevoked),
            (30, Action::GrantCreated),
            (25, Action::AdminKeyCreated)
        ]
    );
    let ann_q = AuditQuery {
        user: Some(ann.clone()),
        ..Default::default()
    };
    assert_eq!(
        actions(&walk(&store, &ann_q, 10).await),
        [(40, Action::GrantRevoked)]
    );
    let bob_q = AuditQuery {
        user: Some(bob.clone()),
        ..Default::default()
    };
    assert_eq!(
        actions(&walk(&store, &bob_q, 10).await),
        [(30, Action::GrantCreated)]
    );
    assert_eq!(store.sweep_audit_before(u64::MAX).await.unwrap(), 3);
    assert!(walk(&store, &AuditQuery::default(), 10).await.is_empty());
    assert!(walk(&store, &bob_q, 10).await.is_empty());
}
