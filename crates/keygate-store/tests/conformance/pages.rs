//! Every `*_page`: a full walk returns every record once, in the documented order,
//! whatever the page size; a cursor is opaque, and a crafted one (another person's
//! grant id, another query's cursor, bytes outside the range, garbage) is not an error
//! and never yields a record outside the caller's range.

use keygate_core::audit::Action;
use keygate_core::ids::{GrantId, UserId};
use keygate_store::{AuditQuery, GrantFilter, GrantRecord, GrantState, Store};

use crate::audit::walk as walk_audit;
use crate::fixtures::*;

crate::conformance!(
    grant_pages_filter_and_walk_in_id_order,
    crafted_grant_cursors_stay_in_the_callers_range,
    people_pages_walk_in_id_order,
    admin_key_pages_walk_oldest_first,
    crafted_audit_cursors_stay_in_the_callers_range,
);

/// Cursors nobody was given: empty, short, long, past every key, not UTF-8, a
/// would-be injection.
fn crafted() -> Vec<Vec<u8>> {
    vec![
        vec![],
        vec![0],
        b"a".to_vec(),
        b"zzzzzzzzzzzzzzzzzzzzzzzz".to_vec(),
        vec![0xff; 40],
        vec![0xc3, 0x28, 0x00, 0xfe],
        b"' OR 1=1 --".to_vec(),
        b"{\"id\":null}".to_vec(),
        u64::MAX.to_be_bytes().to_vec(),
        [u64::MAX.to_be_bytes(), u64::MAX.to_be_bytes()].concat(),
        0u64.to_be_bytes().to_vec(),
    ]
}

/// Every page of grants `filter` picks, with pages of `limit`.
async fn walk_grants(store: &Store, filter: &GrantFilter, limit: usize) -> Vec<GrantId> {
    let (mut seen, mut after) = (Vec::new(), None::<Vec<u8>>);
    loop {
        let (page, next) = store
            .grants_page(filter, after.as_deref(), limit)
            .await
            .unwrap();
        assert!(page.len() <= limit);
        // A cursor is given only when more records follow: no empty last page.
        assert!(
            after.is_none() || !page.is_empty(),
            "an empty page after a cursor"
        );
        assert!(page.iter().all(|g| filter.matches(g)), "{filter:?}");
        seen.extend(page.into_iter().map(|g| g.id));
        match next {
            Some(n) => after = Some(n),
            None => return seen,
        }
    }
}

/// Seven grants of Ada and Bob, some bound to an origin, one revoked; their ids sorted.
async fn seven_grants(store: &Store) -> (UserId, UserId, Vec<GrantRecord>) {
    let (ada, bob) = (user(store).await, user(store).await);
    let mut all = Vec::new();
    for i in 0..7u64 {
        let owner = if i % 2 == 0 { &ada.id } else { &bob.id };
        let mut g = grant_record(owner, i);
        g.origin = (i < 3).then(|| "https://app.example".to_owned());
        store.insert_grant(&g).await.unwrap();
        if i == 4 {
            g = store.revoke_grant(&g.id, 9).await.unwrap().unwrap();
        }
        all.push(g);
    }
    all.sort_by(|a, b| a.id.cmp(&b.id));
    (ada.id, bob.id, all)
}

async fn grant_pages_filter_and_walk_in_id_order(store: Store) {
    let (ada, _bob, all) = seven_grants(&store).await;
    let ids: Vec<GrantId> = all.iter().map(|g| g.id.clone()).collect();
    for limit in [1, 2, 3, 7, 100] {
        assert_eq!(
            walk_grants(&store, &GrantFilter::default(), limit).await,
            ids,
            "limit {limit}"
        );
    }
    // The whole records, not only their ids.
    let (page, next) = store
        .grants_page(&GrantFilter::default(), None, 100)
        .await
        .unwrap();
    assert_eq!((page, next), (all.clone(), None));

    let ada_only = GrantFilter {
        user: Some(ada.clone()),
        ..GrantFilter::default()
    };
    let adas: Vec<GrantId> = all
        .iter()
        .filter(|g| g.user_id == ada)
        .map(|g| g.id.clone())
        .collect();
    assert_eq!(adas.len(), 4);
    for limit in [1, 3, 4] {
        assert_eq!(walk_grants(&store, &ada_only, limit).await, adas);
    }
    let revoked = GrantFilter {
        user: Some(ada.clone()),
        state: Some(GrantState::Revoked),
        ..GrantFilter::default()
    };
    assert_eq!(walk_grants(&store, &revoked, 2).await.len(), 1);
    let any_revoked = GrantFilter {
        state: Some(GrantState::Revoked),
        ..GrantFilter::default()
    };
    assert_eq!(walk_grants(&store, &any_revoked, 1).await.len(), 1);
    let origin = GrantFilter {
        origin: Some("https://app.example".into()),
        ..GrantFilter::default()
    };
    assert_eq!(walk_grants(&store, &origin, 2).await.len(), 3);
    let other_origin = GrantFilter {
        origin: Some("https://app.example.evil".into()),
        ..GrantFilter::default()
    };
    assert!(walk_grants(&store, &other_origin, 2).await.is_empty());
    let nobody = GrantFilter {
        user: Some(UserId::generate()),
        ..GrantFilter::default()
    };
    assert_eq!(
        store.grants_page(&nobody, None, 10).await.unwrap(),
        (vec![], None)
    );
    // An empty page is a page (limit 0 does not loop or fail).
    let (page, _) = store
        .grants_page(&GrantFilter::default(), None, 0)
        .await
        .unwrap();
    assert!(page.is_empty());
}

async fn crafted_grant_cursors_stay_in_the_callers_range(store: Store) {
    let (ada, bob, all) = seven_grants(&store).await;
    let ada_only = GrantFilter {
        user: Some(ada.clone()),
        ..GrantFilter::default()
    };
    let adas: Vec<GrantId> = all
        .iter()
        .filter(|g| g.user_id == ada)
        .map(|g| g.id.clone())
        .collect();
    // Cursors given out for another query: Bob's pages, the unfiltered pages.
    let mut cursors = crafted();
    for filter in [
        GrantFilter {
            user: Some(bob.clone()),
            ..GrantFilter::default()
        },
        GrantFilter::default(),
    ] {
        let mut after = None::<Vec<u8>>;
        loop {
            let (_, next) = store
                .grants_page(&filter, after.as_deref(), 1)
                .await
                .unwrap();
            match next {
                Some(n) => {
                    cursors.push(n.clone());
                    after = Some(n);
                }
                None => break,
            }
        }
    }
    // Another person's grant ids, as text.
    cursors.extend(
        all.iter()
            .filter(|g| g.user_id == bob)
            .map(|g| g.id.as_str().as_bytes().to_vec()),
    );
    for cursor in &cursors {
        let (page, next) = store
            .grants_page(&ada_only, Some(cursor), 100)
            .await
            .unwrap_or_else(|e| panic!("cursor {cursor:?}: {e}"));
        assert!(next.is_none(), "100 is more than Ada has");
        let got: Vec<GrantId> = page.into_iter().map(|g| g.id).collect();
        // Some of Ada's grants, in order, none twice, nobody else's.
        assert!(
            got.iter().all(|id| adas.contains(id)),
            "cursor {cursor:?}: {got:?}"
        );
        assert!(
            got.windows(2).all(|w| w[0] < w[1]),
            "cursor {cursor:?}: {got:?}"
        );
        // With a state filter too.
        let active = GrantFilter {
            state: Some(GrantState::Active),
            ..ada_only.clone()
        };
        let (page, _) = store.grants_page(&active, Some(cursor), 100).await.unwrap();
        assert!(page.iter().all(|g| active.matches(g)));
        // Unfiltered, a crafted cursor still yields grants in order and none twice.
        let (page, _) = store
            .grants_page(&GrantFilter::default(), Some(cursor), 100)
            .await
            .unwrap();
        let got: Vec<&GrantId> = page.iter().map(|g| &g.id).collect();
        assert!(
            got.windows(2).all(|w| w[0] < w[1]),
            "cursor {cursor:?}: {got:?}"
        );
    }
}

async fn people_pages_walk_in_id_order(store: Store) {
    let mut people = Vec::new();
    for _ in 0..6 {
        people.push(user(&store).await);
    }
    people.sort_by(|a, b| a.id.cmp(&b.id));
    for limit in [1, 2, 5, 6, 50] {
        let (mut seen, mut after) = (Vec::new(), None::<Vec<u8>>);
        loop {
            let (page, next) = store.users_page(after.as_deref(), limit).await.unwrap();
            assert!(page.len() <= limit);
            // A cursor is given only when more records follow: no empty last page.
            assert!(
                after.is_none() || !page.is_empty(),
                "an empty page after a cursor"
            );
            seen.extend(page);
            match next {
                Some(n) => after = Some(n),
                None => break,
            }
        }
        assert_eq!(seen, people, "limit {limit}");
    }
    for cursor in crafted() {
        let (page, _) = store
            .users_page(Some(&cursor), 100)
            .await
            .unwrap_or_else(|e| panic!("cursor {cursor:?}: {e}"));
        assert!(page.iter().all(|u| people.contains(u)));
        assert!(page.windows(2).all(|w| w[0].id < w[1].id));
    }
}

async fn admin_key_pages_walk_oldest_first(store: Store) {
    let mut keys = Vec::new();
    for (i, at) in [5u64, 1, 3, 3, 3, 9].into_iter().enumerate() {
        let k = admin_key(&format!("k{i}"), at);
        store.insert_admin_key(&k).await.unwrap();
        keys.push(k);
    }
    keys.sort_by(|a, b| (a.created_at, &a.id).cmp(&(b.created_at, &b.id)));
    for limit in [1, 2, 4, 6, 50] {
        let (mut seen, mut after) = (Vec::new(), None::<Vec<u8>>);
        loop {
            let (page, next) = store
                .admin_keys_page(after.as_deref(), limit)
                .await
                .unwrap();
            assert!(page.len() <= limit);
            // A cursor is given only when more records follow: no empty last page.
            assert!(
                after.is_none() || !page.is_empty(),
                "an empty page after a cursor"
            );
            seen.extend(page);
            match next {
                Some(n) => after = Some(n),
                None => break,
            }
        }
        assert_eq!(seen, keys, "limit {limit}");
    }
    // A removed key's cursor still says where to go on.
    let (first, next) = store.admin_keys_page(None, 2).await.unwrap();
    assert!(store.delete_admin_key(&first[1].id).await.unwrap());
    let (rest, _) = store.admin_keys_page(next.as_deref(), 50).await.unwrap();
    assert_eq!(rest, keys[2..].to_vec());
    for cursor in crafted() {
        let (page, _) = store
            .admin_keys_page(Some(&cursor), 100)
            .await
            .unwrap_or_else(|e| panic!("cursor {cursor:?}: {e}"));
        assert!(page.iter().all(|k| keys.contains(k)));
        assert!(
            page.windows(2)
                .all(|w| (w[0].created_at, &w[0].id) < (w[1].created_at, &w[1].id))
        );
    }
}

async fn crafted_audit_cursors_stay_in_the_callers_range(store: Store) {
    let (ann, bob) = (UserId::generate(), UserId::generate());
    for i in 0..12u64 {
        let who = match i % 3 {
            0 => Some(&ann),
            1 => Some(&bob),
            _ => None,
        };
        store
            .append_audit(audit_entry(10 + i, Action::GrantChanged, who))
            .await
            .unwrap();
    }
    let ann_q = AuditQuery {
        user: Some(ann.clone()),
        from_ns: Some(11 * S),
        until_ns: Some(20 * S),
        ..Default::default()
    };
    let in_range = |r: &keygate_store::AuditRecord| {
        r.user.as_ref() == Some(&ann) && r.at_ns >= 11 * S && r.at_ns < 20 * S
    };
    let anns = walk_audit(&store, &ann_q, 1).await;
    assert_eq!(anns.len(), 3, "13, 16 and 19 s");
    assert!(anns.iter().all(in_range));

    // Cursors of other queries: Bob's pages, the whole log's pages.
    let mut cursors = crafted();
    for q in [
        AuditQuery {
            user: Some(bob.clone()),
            ..Default::default()
        },
        AuditQuery::default(),
    ] {
        let mut after = None::<Vec<u8>>;
        loop {
            let (_, next) = store.audit_page(&q, after.as_deref(), 1).await.unwrap();
            match next {
                Some(n) => {
                    cursors.push(n.clone());
                    after = Some(n);
                }
                None => break,
            }
        }
    }
    for cursor in &cursors {
        let (page, _) = store
            .audit_page(&ann_q, Some(cursor), 100)
            .await
            .unwrap_or_else(|e| panic!("cursor {cursor:?}: {e}"));
        assert!(page.iter().all(in_range), "cursor {cursor:?}: {page:?}");
        assert!(page.iter().all(|r| anns.contains(r)));
        assert!(
            page.windows(2)
                .all(|w| (w[0].at_ns, w[0].seq) > (w[1].at_ns, w[1].seq))
        );
        // The whole log with a window: still inside the window.
        let window = AuditQuery {
            from_ns: Some(12 * S),
            until_ns: Some(15 * S),
            ..Default::default()
        };
        let (page, _) = store.audit_page(&window, Some(cursor), 100).await.unwrap();
        assert!(
            page.iter().all(|r| r.at_ns >= 12 * S && r.at_ns < 15 * S),
            "cursor {cursor:?}: {page:?}"
        );
    }
}
