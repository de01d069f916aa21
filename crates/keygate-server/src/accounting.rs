//! Usage counters per (grant, UTC day, model), batched in memory and written by a
//! flusher at most a second apart (and at shutdown), so no request waits on a store
//! write. The store ADDS each batch's deltas in one transaction; a batch is drained
//! exactly once, and put back if the write fails, so nothing is counted twice or lost
//! while the process lives.
//!
//! Readers that need "everything so far" (the limiter loading a budget period, the
//! usage reports) read the store and the pending deltas under the flush lock, so a
//! batch being written is never missed nor seen twice. That lock is held across the
//! store's await, so it is an async (tokio) mutex; the pending counters' lock is a
//! plain one, never held across an await (a request records without waiting).

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use keygate_core::ids::GrantId;
use keygate_store::{Store, StoreError, UsageCounts, UsageDelta, UsageRow};

/// Pending counters by grant, then model, then day: nested so that adding to a row
/// that exists borrows its keys (no allocation on a request's way out).
#[derive(Default)]
struct Pending(HashMap<GrantId, HashMap<String, HashMap<u32, UsageCounts>>>);

impl Pending {
    fn add(&mut self, grant: &GrantId, day: u32, model: &str, counts: &UsageCounts) {
        let models = match self.0.get_mut(grant) {
            Some(m) => m,
            None => self.0.entry(grant.clone()).or_default(),
        };
        let days = match models.get_mut(model) {
            Some(d) => d,
            None => models.entry(model.to_owned()).or_default(),
        };
        days.entry(day).or_default().add(counts);
    }

    /// One grant's counters: (day, model, counts).
    fn of<'a>(&'a self, grant: &GrantId) -> impl Iterator<Item = (u32, &'a str, &'a UsageCounts)> {
        self.0.get(grant).into_iter().flat_map(|models| {
            models
                .iter()
                .flat_map(|(m, days)| days.iter().map(move |(d, c)| (*d, m.as_str(), c)))
        })
    }
}

#[derive(Clone, Default)]
pub struct Accounting(Arc<Inner>);

#[derive(Default)]
struct Inner {
    pending: Mutex<Pending>,
    /// Held while a batch travels from `pending` to the store.
    flush: tokio::sync::Mutex<()>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // Counters are plain sums: a panic elsewhere cannot leave them half-updated.
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl Accounting {
    /// Adds `counts` to the row of `grant`, `day`, `model` (in memory until flushed).
    pub fn record(&self, grant: &GrantId, day: u32, model: &str, counts: &UsageCounts) {
        lock(&self.0.pending).add(grant, day, model, counts);
    }

    /// Writes the pending deltas; called by the flusher and at shutdown. Returns whether
    /// there were any (so the flusher knows whether there is something to make durable).
    pub async fn write_to(&self, store: &Store) -> Result<bool, StoreError> {
        let _writing = self.0.flush.lock().await;
        let batch = std::mem::take(&mut *lock(&self.0.pending));
        if batch.0.is_empty() {
            return Ok(false);
        }
        let deltas: Vec<UsageDelta> = batch
            .0
            .iter()
            .flat_map(|(grant_id, models)| {
                models.iter().flat_map(move |(model, days)| {
                    days.iter().map(move |(day, counts)| UsageDelta {
                        grant_id: grant_id.clone(),
                        day: *day,
                        model: model.clone(),
                        counts: *counts,
                    })
                })
            })
            .collect();
        if let Err(e) = store.add_usage(&deltas).await {
            // Not written: back into the pending counters, for the next attempt.
            let mut pending = lock(&self.0.pending);
            for d in &deltas {
                pending.add(&d.grant_id, d.day, &d.model, &d.counts);
            }
            return Err(e);
        }
        Ok(true)
    }

    /// Every `every`: writes the pending batch and, when there was one, makes it durable
    /// (sled's own background flush would otherwise leave it in memory for up to another
    /// 500 ms). A flush counted in `keygate_store_flush_seconds{writer="usage"}` has
    /// therefore reached the disk: what the usage reports showed before it started
    /// survives a crash (docs/OPERATIONS.md, "Durability and soak").
    ///
    /// It ends when `stop` changes, between two writes — never by being aborted: a batch
    /// is drained from the pending counters before it is written, so a write cut off
    /// halfway (an await into a database) would lose it.
    pub fn spawn_flusher(
        &self,
        store: Store,
        every: Duration,
        metrics: Arc<crate::metrics::Metrics>,
        mut stop: tokio::sync::watch::Receiver<bool>,
    ) -> tokio::task::JoinHandle<()> {
        let this = self.clone();
        tokio::spawn(async move {
            let mut interval = tokio::time::interval(every);
            interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tokio::select! {
                    // A stop asked while a write ran wins over the tick due meanwhile.
                    biased;
                    _ = stop.changed() => return,
                    _ = interval.tick() => {}
                }
                let started = std::time::Instant::now();
                match this.write_to(&store).await {
                    Ok(true) => {
                        if let Err(e) = store.flush().await {
                            // Written, not yet synced: sled's own flush retries it.
                            tracing::warn!(error = %e, "usage counters written but not synced to disk");
                        }
                    }
                    Ok(false) => {}
                    Err(e) => {
                        tracing::warn!(error = %e, "could not write usage counters; kept for the next try");
                    }
                }
                metrics.observe_flush("usage", started.elapsed());
            }
        })
    }

    /// A grant's usage from `from_day` to `to_day` (stored and pending), of one model
    /// or all.
    pub async fn total(
        &self,
        store: &Store,
        grant: &GrantId,
        from_day: u32,
        to_day: u32,
        model: Option<&str>,
    ) -> Result<UsageCounts, StoreError> {
        let _consistent = self.0.flush.lock().await;
        let mut total = store.usage_total(grant, from_day, to_day, model).await?;
        for (day, m, counts) in lock(&self.0.pending).of(grant) {
            if (from_day..=to_day).contains(&day) && model.is_none_or(|x| x == m) {
                total.add(counts);
            }
        }
        Ok(total)
    }

    /// A grant's rows from `from_day` to `to_day` (stored and pending), by day, model.
    pub async fn rows(
        &self,
        store: &Store,
        grant: &GrantId,
        from_day: u32,
        to_day: u32,
    ) -> Result<Vec<UsageRow>, StoreError> {
        let _consistent = self.0.flush.lock().await;
        // Merged in a map: a grant may have many rows (one per model name it sent), and
        // a search per pending counter would make a report quadratic.
        let mut merged: std::collections::BTreeMap<(u32, String), UsageCounts> = store
            .usage_rows(grant, from_day, to_day)
            .await?
            .into_iter()
            .map(|r| ((r.day, r.model), r.counts))
            .collect();
        for (day, model, counts) in lock(&self.0.pending).of(grant) {
            if (from_day..=to_day).contains(&day) {
                merged
                    .entry((day, model.to_owned()))
                    .or_default()
                    .add(counts);
            }
        }
        Ok(merged
            .into_iter()
            .map(|((day, model), counts)| UsageRow { day, model, counts })
            .collect())
    }

    /// Every grant's rows from `from_day` to `to_day` (stored and pending), by grant,
    /// day, model: what the usage summaries add up.
    pub async fn rows_all(
        &self,
        store: &Store,
        from_day: u32,
        to_day: u32,
    ) -> Result<Vec<(GrantId, UsageRow)>, StoreError> {
        let _consistent = self.0.flush.lock().await;
        let mut merged: std::collections::BTreeMap<(GrantId, u32, String), UsageCounts> = store
            .usage_rows_all(from_day, to_day)
            .await?
            .into_iter()
            .map(|(g, r)| ((g, r.day, r.model), r.counts))
            .collect();
        for (grant, models) in &lock(&self.0.pending).0 {
            for (model, days) in models {
                for (day, counts) in days {
                    if (from_day..=to_day).contains(day) {
                        merged
                            .entry((grant.clone(), *day, model.clone()))
                            .or_default()
                            .add(counts);
                    }
                }
            }
        }
        Ok(merged
            .into_iter()
            .map(|((grant, day, model), counts)| (grant, UsageRow { day, model, counts }))
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use keygate_store::StoreOptions;

    fn one() -> UsageCounts {
        UsageCounts {
            requests: 1,
            prompt_tokens: 10,
            ..UsageCounts::default()
        }
    }

    /// A row both stored and pending is reported once, with both parts; a failed or
    /// repeated flush counts nothing twice.
    #[tokio::test]
    async fn rows_and_totals_merge_stored_and_pending_once() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path(), &StoreOptions::default()).unwrap();
        let acc = Accounting::default();
        let g = GrantId::generate();
        acc.record(&g, 5, "m", &one());
        assert!(acc.write_to(&store).await.unwrap());
        assert!(
            !acc.write_to(&store).await.unwrap(),
            "an empty batch writes nothing"
        );
        acc.record(&g, 5, "m", &one());
        acc.record(&g, 5, "a", &one());
        acc.record(&g, 7, "m", &one());
        acc.record(&GrantId::generate(), 5, "m", &one());
        let rows = acc.rows(&store, &g, 0, 6).await.unwrap();
        let got: Vec<(u32, &str, u64)> = rows
            .iter()
            .map(|r| (r.day, r.model.as_str(), r.counts.requests))
            .collect();
        assert_eq!(got, [(5, "a", 1), (5, "m", 2)]);
        assert_eq!(acc.total(&store, &g, 0, 7, None).await.unwrap().requests, 4);
        assert_eq!(
            acc.total(&store, &g, 0, 7, Some("m"))
                .await
                .unwrap()
                .requests,
            3
        );
        let all = acc.rows_all(&store, 0, 6).await.unwrap();
        assert_eq!(all.iter().map(|(_, r)| r.counts.requests).sum::<u64>(), 4);
        acc.write_to(&store).await.unwrap();
        assert_eq!(acc.total(&store, &g, 0, 7, None).await.unwrap().requests, 4);
        assert_eq!(acc.rows_all(&store, 0, 7).await.unwrap().len(), 4);
    }
}
