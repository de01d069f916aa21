//! Limits shared by every node (`limits_acquire`, `limits_settle`, `limits_held`,
//! `limits_heartbeat`):
//! PostgreSQL keeps them; a sled store (one node, whose limiter keeps them in memory)
//! says `Unsupported` and holds nothing. The decision itself is proved equal to the
//! pure policy in `tests/pg_limits.rs`; here, the interface's contract.

use keygate_core::calendar::Period;
use keygate_core::limits::Limits;
use keygate_core::money::Usd;
use keygate_core::policy::{Deny, Estimate, Rules, Spend};
use keygate_store::{BackendKind, LeaseId, LimitAsk, Store, StoreError};

use crate::fixtures::*;

crate::conformance!(limits_are_held_shared_and_released_where_the_backend_shares_them);

fn ask<'a>(grant: &'a keygate_core::ids::GrantId, rules: Rules, now_ms: u64) -> LimitAsk<'a> {
    LimitAsk {
        lease: LeaseId::generate(),
        grant,
        now_ms,
        rules,
        budget_period: None,
        estimate: Estimate::default(),
        model: None,
    }
}

async fn limits_are_held_shared_and_released_where_the_backend_shares_them(store: Store) {
    let u = user(&store).await;
    let g = grant(&store, &u.id, 1).await;
    let one = Rules {
        max_concurrency: Some(1),
        ..Rules::default()
    };
    if store.kind() == BackendKind::Sled {
        assert!(matches!(
            store.limits_acquire(&ask(&g.id, one, 1_000)).await,
            Err(StoreError::Unsupported(_))
        ));
        assert!(matches!(
            store.limits_held(&g.id).await,
            Err(StoreError::Unsupported(_))
        ));
        assert!(matches!(
            store
                .limits_heartbeat(std::time::Duration::from_secs(10))
                .await,
            Err(StoreError::Unsupported(_))
        ));
        return;
    }
    // This store's node is alive (the reclaim it starts finds nobody's leases).
    store
        .limits_heartbeat(std::time::Duration::from_secs(10))
        .await
        .unwrap();
    // No limit: nothing held, nothing stored, nothing to settle.
    let free = store
        .limits_acquire(&ask(&g.id, Rules::default(), 1_000))
        .await
        .unwrap()
        .unwrap();
    assert!(!free.is_held());
    assert_eq!(
        store.limits_held(&g.id).await.unwrap(),
        (0, Spend::default())
    );

    let first = store
        .limits_acquire(&ask(&g.id, one, 1_000))
        .await
        .unwrap()
        .unwrap();
    assert!(first.is_held());
    assert_eq!(store.limits_held(&g.id).await.unwrap().0, 1);
    let refused = store
        .limits_acquire(&ask(&g.id, one, 1_001))
        .await
        .unwrap()
        .unwrap_err();
    assert_eq!(refused.deny, Deny::Concurrency { limit: 1 });
    assert!(!refused.model);
    // A limits edit (reloads the spend) keeps what is in flight.
    store
        .update_grant(&g.id, &|g| {
            g.limits = Limits {
                max_concurrency: Some(1),
                rpm: Some(100),
                ..Limits::default()
            }
        })
        .await
        .unwrap();
    assert_eq!(store.limits_held(&g.id).await.unwrap().0, 1);
    store
        .limits_settle(&first, Spend::default(), 1_002)
        .await
        .unwrap();
    assert_eq!(store.limits_held(&g.id).await.unwrap().0, 0);
    let again = store
        .limits_acquire(&ask(&g.id, one, 1_003))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(store.limits_held(&g.id).await.unwrap().0, 1);
    store
        .limits_settle(&again, Spend::default(), 1_004)
        .await
        .unwrap();

    // Spend settled in the window but not yet in `usage` (a node's unflushed batch)
    // survives an edit of the limits: the reload keeps the larger figure.
    let budget = Rules {
        budget_usd: Some(Usd::from_nanos(100)),
        ..Rules::default()
    };
    let priced = |usd: u64, now_ms: u64| LimitAsk {
        budget_period: Some(Period::Month),
        estimate: Estimate {
            tokens: 1,
            usd: Some(Usd::from_nanos(usd)),
        },
        ..ask(&g.id, budget, now_ms)
    };
    let spent = store
        .limits_acquire(&priced(60, 2_000))
        .await
        .unwrap()
        .unwrap();
    let used = Spend {
        usd: Usd::from_nanos(60),
        tokens: 1,
    };
    store.limits_settle(&spent, used, 2_001).await.unwrap();
    store
        .update_grant(&g.id, &|g| g.limits.rpm = Some(99))
        .await
        .unwrap();
    let refused = store
        .limits_acquire(&priced(60, 2_002))
        .await
        .unwrap()
        .unwrap_err();
    assert!(
        matches!(refused.deny, Deny::Budget { .. }),
        "60 of 100 spent before the edit: 60 more must not fit ({:?})",
        refused.deny
    );

    // A removed grant's windows go with it.
    assert!(store.delete_grant(&g.id).await.unwrap());
    assert_eq!(
        store.limits_held(&g.id).await.unwrap(),
        (0, Spend::default())
    );
    drop(again);
}
