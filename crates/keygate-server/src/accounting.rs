//! Usage counters per (grant, UTC day, model), batched in memory and written by a
//! flusher at most a second apart (and at shutdown), so no request waits on a store
//! write. The store ADDS each batch's deltas in one transaction; a batch is drained
//! exactly once, and put back if the write fails, so nothing is counted twice or lost
//! while the process lives.
//!
//! Readers that need "everything so far" (the limiter loading a budget period, the
//! usage reports) read the store and the pending deltas under the flush lock, so a
//! batch being written is never missed nor seen twice.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use keygate_core::ids::GrantId;
use keygate_store::{Store, StoreError, UsageCounts, UsageDelta, UsageRow};

type Key = (GrantId, u32, String);

#[derive(Clone, Default)]
pub struct Accounting(Arc<Inner>);

#[derive(Default)]
struct Inner {
    pending: Mutex<HashMap<Key, UsageCounts>>,
    /// Held while a batch travels from `pending` to the store.
    flush: Mutex<()>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // Counters are plain sums: a panic elsewhere cannot leave them half-updated.
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl Accounting {
    /// Adds `counts` to the row of `grant`, `day`, `model` (in memory until flushed).
    pub fn record(&self, grant: &GrantId, day: u32, model: &str, counts: &UsageCounts) {
        let mut pending = lock(&self.0.pending);
        match pending.get_mut(&(grant.clone(), day, model.to_owned())) {
            Some(row) => row.add(counts),
            None => {
                pending.insert((grant.clone(), day, model.to_owned()), *counts);
            }
        }
    }

    /// Writes the pending deltas; called by the flusher and at shutdown.
    pub fn write_to(&self, store: &Store) -> Result<(), StoreError> {
        let _writing = lock(&self.0.flush);
        let batch: Vec<(Key, UsageCounts)> = lock(&self.0.pending).drain().collect();
        if batch.is_empty() {
            return Ok(());
        }
        let deltas: Vec<UsageDelta> = batch
            .iter()
            .map(|((grant_id, day, model), counts)| UsageDelta {
                grant_id: grant_id.clone(),
                day: *day,
                model: model.clone(),
                counts: *counts,
            })
            .collect();
        if let Err(e) = store.add_usage(&deltas) {
            // Not written: back into the pending counters, for the next attempt.
            let mut pending = lock(&self.0.pending);
            for (key, counts) in batch {
                pending.entry(key).or_default().add(&counts);
            }
            return Err(e);
        }
        Ok(())
    }

    pub fn spawn_flusher(&self, store: Store, every: Duration) -> tokio::task::JoinHandle<()> {
        let this = self.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(every);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                if let Err(e) = this.write_to(&store) {
                    tracing::warn!(error = %e, "could not write usage counters; kept for the next try");
                }
            }
        })
    }

    /// A grant's usage from `from_day` to `to_day` (stored and pending), of one model
    /// or all.
    pub fn total(
        &self,
        store: &Store,
        grant: &GrantId,
        from_day: u32,
        to_day: u32,
        model: Option<&str>,
    ) -> Result<UsageCounts, StoreError> {
        let _consistent = lock(&self.0.flush);
        let mut total = store.usage_total(grant, from_day, to_day, model)?;
        for ((g, day, m), counts) in lock(&self.0.pending).iter() {
            if g == grant && (from_day..=to_day).contains(day) && model.is_none_or(|x| x == m) {
                total.add(counts);
            }
        }
        Ok(total)
    }

    /// A grant's rows from `from_day` to `to_day` (stored and pending), by day, model.
    pub fn rows(
        &self,
        store: &Store,
        grant: &GrantId,
        from_day: u32,
        to_day: u32,
    ) -> Result<Vec<UsageRow>, StoreError> {
        let _consistent = lock(&self.0.flush);
        let mut rows = store.usage_rows(grant, from_day, to_day)?;
        for ((g, day, model), counts) in lock(&self.0.pending).iter() {
            if g != grant || !(from_day..=to_day).contains(day) {
                continue;
            }
            match rows.iter_mut().find(|r| r.day == *day && r.model == *model) {
                Some(row) => row.counts.add(counts),
                None => rows.push(UsageRow {
                    day: *day,
                    model: model.clone(),
                    counts: *counts,
                }),
            }
        }
        rows.sort_by(|a, b| (a.day, &a.model).cmp(&(b.day, &b.model)));
        Ok(rows)
    }
}
