//! Usage counters: deltas add up (exactly, under 32 concurrent writers), a batch
//! counts once, reads select by grant, inclusive day range and model.

use keygate_core::ids::GrantId;
use keygate_store::{Store, UsageCounts, UsageRow};

use crate::fixtures::*;

crate::conformance!(
    deltas_add_up_and_ranges_select_by_grant_day_and_model,
    concurrent_batches_sum_exactly,
);

async fn deltas_add_up_and_ranges_select_by_grant_day_and_model(store: Store) {
    // Usage rows do not need a stored grant (they outlive grants).
    let (a, b) = (GrantId::generate(), GrantId::generate());
    store.add_usage(&[]).await.unwrap();
    assert!(store.usage_rows(&a, 0, u32::MAX).await.unwrap().is_empty());
    assert!(
        store
            .usage_total(&a, 0, u32::MAX, None)
            .await
            .unwrap()
            .is_empty()
    );
    store
        .add_usage(&[
            delta(&a, 10, "gpt-4o", 1),
            delta(&a, 10, "gpt-4o-mini", 2),
            delta(&a, 11, "gpt-4o", 3),
            delta(&b, 10, "gpt-4o", 7),
            delta(&a, 300, "", 1),
            delta(&a, 0, "gpt-4o", 1),
            delta(&a, u32::MAX, "gpt-4o", 1),
            // The same row twice in one batch: both count.
            delta(&b, 12, "o1", 1),
            delta(&b, 12, "o1", 1),
        ])
        .await
        .unwrap();
    store
        .add_usage(&[delta(&a, 10, "gpt-4o", 1)])
        .await
        .unwrap();

    // Counts add field by field (a delta of 1 twice is not a delta of 2: errors = n / 2).
    let mut twice = delta(&a, 0, "", 1).counts;
    twice.add(&delta(&a, 0, "", 1).counts);
    let rows = store.usage_rows(&a, 10, 11).await.unwrap();
    assert_eq!(
        rows,
        vec![
            UsageRow {
                day: 10,
                model: "gpt-4o".into(),
                counts: twice,
            },
            UsageRow {
                day: 10,
                model: "gpt-4o-mini".into(),
                counts: delta(&a, 0, "", 2).counts,
            },
            UsageRow {
                day: 11,
                model: "gpt-4o".into(),
                counts: delta(&a, 0, "", 3).counts,
            },
        ]
    );
    assert_eq!(store.usage_rows(&b, 12, 12).await.unwrap()[0].counts, twice);
    let days: Vec<u32> = store
        .usage_rows(&a, 0, u32::MAX)
        .await
        .unwrap()
        .iter()
        .map(|r| r.day)
        .collect();
    assert_eq!(days, [0, 10, 10, 11, 300, u32::MAX]);
    assert!(store.usage_rows(&a, 12, 299).await.unwrap().is_empty());
    assert!(
        store.usage_rows(&a, 11, 10).await.unwrap().is_empty(),
        "empty range"
    );

    let total = |grant: &GrantId, from: u32, to: u32, model: Option<&'static str>| {
        let store = store.clone();
        let grant = grant.clone();
        async move {
            store
                .usage_total(&grant, from, to, model)
                .await
                .unwrap()
                .requests
        }
    };
    assert_eq!(total(&a, 0, 1000, None).await, 9);
    assert_eq!(total(&a, 0, u32::MAX, None).await, 10);
    assert_eq!(total(&a, 10, 10, Some("gpt-4o")).await, 2);
    assert_eq!(total(&a, 10, 10, Some("gpt-4o-mini")).await, 2);
    assert_eq!(
        total(&a, 10, 10, Some("gpt")).await,
        0,
        "a model, not a prefix"
    );
    assert_eq!(total(&a, 0, u32::MAX, Some("")).await, 1);
    assert_eq!(total(&a, 11, 299, None).await, 3);
    assert_eq!(total(&b, 0, u32::MAX, None).await, 9);
    let all_fields = store.usage_total(&a, 10, 10, None).await.unwrap();
    let mut expected = twice;
    expected.add(&delta(&a, 0, "", 2).counts);
    assert_eq!(all_fields, expected);

    // Every grant's rows in a range, each grant's own in day then model order.
    let all = store.usage_rows_all(10, 11).await.unwrap();
    assert_eq!(all.len(), 4);
    assert_eq!(all.iter().filter(|(g, _)| *g == b).count(), 1);
    let a_rows: Vec<(u32, &str)> = all
        .iter()
        .filter(|(g, _)| *g == a)
        .map(|(_, r)| (r.day, r.model.as_str()))
        .collect();
    assert_eq!(
        a_rows,
        [(10, "gpt-4o"), (10, "gpt-4o-mini"), (11, "gpt-4o")]
    );
    assert!(store.usage_rows_all(13, 299).await.unwrap().is_empty());
    assert_eq!(store.usage_rows_all(0, u32::MAX).await.unwrap().len(), 8);
}

async fn concurrent_batches_sum_exactly(store: Store) {
    let (hot, other) = (GrantId::generate(), GrantId::generate());
    // 32 flushers (as 32 nodes' would), each a batch touching the same hot row, a row
    // of its own and a row shared with half the others.
    race(32, |i| {
        let (store, hot, other) = (store.clone(), hot.clone(), other.clone());
        async move {
            let n = i as u64 + 1;
            store
                .add_usage(&[
                    delta(&hot, 20, "gpt-4o", n),
                    delta(&other, 20 + (i as u32 % 2), "gpt-4o", 1),
                    delta(&hot, 100 + i as u32, "gpt-4o", 1),
                ])
                .await
                .unwrap();
        }
    })
    .await;
    let mut expected = UsageCounts::default();
    for n in 1..=32 {
        expected.add(&delta(&hot, 0, "", n).counts);
    }
    assert_eq!(
        store.usage_total(&hot, 20, 20, None).await.unwrap(),
        expected
    );
    assert_eq!(
        store
            .usage_total(&hot, 100, 131, None)
            .await
            .unwrap()
            .requests,
        32
    );
    assert_eq!(store.usage_rows(&hot, 100, 200).await.unwrap().len(), 32);
    let other_rows = store.usage_rows(&other, 0, 100).await.unwrap();
    assert_eq!(
        other_rows
            .iter()
            .map(|r| (r.day, r.counts.requests))
            .collect::<Vec<_>>(),
        [(20, 16), (21, 16)]
    );
}
