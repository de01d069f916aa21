//! Usage counters per grant, UTC day and model: written by the server's accounting
//! flusher (batched deltas, ADDED to the stored row in one transaction, so a batch
//! counts exactly once), read by the limiter (a budget period's total) and the usage
//! reports. Rows outlive their grant: a person's reports keep a removed app's usage.
//!
//! Key: grant id ‖ 0x00 ‖ day number (u32, big endian) ‖ model. A grant's rows, in day
//! order, are one range scan.

use keygate_core::ids::{GrantId, ID_LEN};
use serde::{Deserialize, Serialize};
use sled::Transactional;
use sled::transaction::{ConflictableTransactionError, TransactionError};

use crate::StoreError;
use crate::store::SledStore;

/// The counters of one row (or a sum of rows, or a delta to add).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct UsageCounts {
    #[serde(default)]
    pub requests: u64,
    #[serde(default)]
    pub errors: u64,
    #[serde(default)]
    pub prompt_tokens: u64,
    #[serde(default)]
    pub cached_tokens: u64,
    #[serde(default)]
    pub completion_tokens: u64,
    /// Cost in nanodollars.
    #[serde(default)]
    pub usd_nanos: u64,
    /// Requests whose tokens were estimated (a stream cut short).
    #[serde(default)]
    pub estimated: u64,
}

impl UsageCounts {
    pub fn add(&mut self, other: &UsageCounts) {
        self.requests = self.requests.saturating_add(other.requests);
        self.errors = self.errors.saturating_add(other.errors);
        self.prompt_tokens = self.prompt_tokens.saturating_add(other.prompt_tokens);
        self.cached_tokens = self.cached_tokens.saturating_add(other.cached_tokens);
        self.completion_tokens = self
            .completion_tokens
            .saturating_add(other.completion_tokens);
        self.usd_nanos = self.usd_nanos.saturating_add(other.usd_nanos);
        self.estimated = self.estimated.saturating_add(other.estimated);
    }

    /// Prompt plus completion tokens (what a token budget counts).
    pub fn tokens(&self) -> u64 {
        self.prompt_tokens.saturating_add(self.completion_tokens)
    }

    pub fn is_empty(&self) -> bool {
        *self == UsageCounts::default()
    }
}

/// One stored row.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UsageRow {
    pub day: u32,
    /// The model the request named (empty when it named none).
    pub model: String,
    pub counts: UsageCounts,
}

/// A delta to add to one row.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UsageDelta {
    pub grant_id: GrantId,
    pub day: u32,
    pub model: String,
    pub counts: UsageCounts,
}

#[derive(Serialize, Deserialize)]
#[serde(tag = "v")]
enum StoredUsage {
    #[serde(rename = "1")]
    V1(UsageCounts),
}

fn prefix(grant: &GrantId) -> Vec<u8> {
    let mut k = Vec::with_capacity(grant.as_str().len() + 1);
    k.extend_from_slice(grant.as_str().as_bytes());
    k.push(0);
    k
}

fn key(grant: &GrantId, day: u32, model: &str) -> Vec<u8> {
    let mut k = prefix(grant);
    k.extend_from_slice(&day.to_be_bytes());
    k.extend_from_slice(model.as_bytes());
    k
}

impl SledStore {
    fn decode_usage(&self, bytes: &[u8]) -> Result<UsageCounts, StoreError> {
        match serde_json::from_slice::<StoredUsage>(bytes) {
            Ok(StoredUsage::V1(c)) => Ok(c),
            Err(e) => Err(StoreError::Corrupt {
                tree: keygate_migrations::trees::USAGE,
                reason: e.to_string(),
            }),
        }
    }

    /// Adds every delta to its row, all in one transaction (all or nothing).
    pub fn add_usage(&self, deltas: &[UsageDelta]) -> Result<(), StoreError> {
        if deltas.is_empty() {
            return Ok(());
        }
        let tree = &self.usage;
        let _w = self.gate.write();
        let result = (tree,).transaction(|(t,)| {
            for d in deltas {
                let k = key(&d.grant_id, d.day, &d.model);
                let mut counts = match t.get(&k)? {
                    Some(bytes) => self
                        .decode_usage(&bytes)
                        .map_err(ConflictableTransactionError::Abort)?,
                    None => UsageCounts::default(),
                };
                counts.add(&d.counts);
                let bytes = serde_json::to_vec(&StoredUsage::V1(counts)).map_err(|e| {
                    ConflictableTransactionError::Abort(StoreError::Encode(e.to_string()))
                })?;
                t.insert(k, bytes)?;
            }
            Ok(())
        });
        match result {
            Ok(()) => Ok(()),
            Err(TransactionError::Abort(e)) => Err(e),
            Err(TransactionError::Storage(e)) => Err(e.into()),
        }
    }

    /// Sets one row to exactly `row.counts` (an import: idempotent, unlike
    /// [`SledStore::add_usage`]).
    pub(crate) fn set_usage(&self, row: &UsageDelta) -> Result<(), StoreError> {
        let bytes = serde_json::to_vec(&StoredUsage::V1(row.counts))
            .map_err(|e| StoreError::Encode(e.to_string()))?;
        self.usage
            .insert(key(&row.grant_id, row.day, &row.model), bytes)?;
        Ok(())
    }

    /// A grant's rows from `from_day` to `to_day` (both included), by day then model.
    pub fn usage_rows(
        &self,
        grant: &GrantId,
        from_day: u32,
        to_day: u32,
    ) -> Result<Vec<UsageRow>, StoreError> {
        let p = prefix(grant);
        let start = key(grant, from_day, "");
        let mut out = Vec::new();
        for entry in self.usage.range(start..) {
            let (k, v) = entry?;
            let Some(rest) = k.strip_prefix(p.as_slice()) else {
                break;
            };
            let (day, model) = rest
                .split_at_checked(4)
                .ok_or_else(|| StoreError::Corrupt {
                    tree: keygate_migrations::trees::USAGE,
                    reason: "short key".into(),
                })?;
            let day = u32::from_be_bytes([day[0], day[1], day[2], day[3]]);
            if day > to_day {
                break;
            }
            out.push(UsageRow {
                day,
                model: String::from_utf8_lossy(model).into_owned(),
                counts: self.decode_usage(&v)?,
            });
        }
        Ok(out)
    }

    /// Every grant's rows from `from_day` to `to_day` (both included), by grant, day,
    /// model — removed grants' too. It seeks from one grant's range to the next, so it
    /// reads the rows in range plus one key per grant, not every row ever written.
    pub fn usage_rows_all(
        &self,
        from_day: u32,
        to_day: u32,
    ) -> Result<Vec<(GrantId, UsageRow)>, StoreError> {
        let mut out = Vec::new();
        let mut seek = Vec::new();
        while let Some(entry) = self.usage.range(seek.as_slice()..).next() {
            let (k, _) = entry?;
            let grant = k
                .get(..ID_LEN)
                .filter(|_| k.get(ID_LEN) == Some(&0))
                .and_then(|id| std::str::from_utf8(id).ok())
                .and_then(|id| GrantId::parse(id).ok())
                .ok_or_else(|| StoreError::Corrupt {
                    tree: keygate_migrations::trees::USAGE,
                    reason: "bad grant id in key".into(),
                })?;
            for row in self.usage_rows(&grant, from_day, to_day)? {
                out.push((grant.clone(), row));
            }
            // grant id ‖ 0x01 sorts after every key of this grant and before the next.
            seek = [grant.as_str().as_bytes(), &[1]].concat();
        }
        Ok(out)
    }

    /// The sum of a grant's rows from `from_day` to `to_day`, of one model or all.
    pub fn usage_total(
        &self,
        grant: &GrantId,
        from_day: u32,
        to_day: u32,
        model: Option<&str>,
    ) -> Result<UsageCounts, StoreError> {
        let mut total = UsageCounts::default();
        for row in self.usage_rows(grant, from_day, to_day)? {
            if model.is_none_or(|m| m == row.model) {
                total.add(&row.counts);
            }
        }
        Ok(total)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::StoreOptions;

    #[test]
    fn deltas_add_up_and_ranges_scan_one_grant() {
        let dir = tempfile::tempdir().unwrap();
        let store = SledStore::open(dir.path(), &StoreOptions::default()).unwrap();
        let (a, b) = (GrantId::generate(), GrantId::generate());
        let delta = |g: &GrantId, day, model: &str, n| UsageDelta {
            grant_id: g.clone(),
            day,
            model: model.into(),
            counts: UsageCounts {
                requests: n,
                prompt_tokens: 10 * n,
                usd_nanos: 100 * n,
                ..UsageCounts::default()
            },
        };
        store
            .add_usage(&[
                delta(&a, 10, "gpt-4o", 1),
                delta(&a, 10, "gpt-4o-mini", 2),
                delta(&a, 11, "gpt-4o", 3),
                delta(&b, 10, "gpt-4o", 7),
                delta(&a, 300, "", 1),
            ])
            .unwrap();
        store.add_usage(&[delta(&a, 10, "gpt-4o", 1)]).unwrap();
        let rows = store.usage_rows(&a, 10, 11).unwrap();
        assert_eq!(rows.len(), 3);
        assert_eq!(rows[0].model, "gpt-4o");
        assert_eq!(rows[0].counts.requests, 2);
        assert_eq!(store.usage_total(&a, 0, 1000, None).unwrap().requests, 8);
        assert_eq!(
            store
                .usage_total(&a, 10, 10, Some("gpt-4o"))
                .unwrap()
                .usd_nanos,
            200
        );
        assert_eq!(store.usage_total(&a, 11, 299, None).unwrap().requests, 3);
        assert_eq!(
            store.usage_total(&b, 0, u32::MAX, None).unwrap().requests,
            7
        );

        // Every grant's rows in a range, each grant's own in day order.
        let all = store.usage_rows_all(10, 11).unwrap();
        assert_eq!(all.len(), 4);
        assert_eq!(all.iter().filter(|(g, _)| *g == b).count(), 1);
        let days: Vec<u32> = all
            .iter()
            .filter(|(g, _)| *g == a)
            .map(|(_, r)| r.day)
            .collect();
        assert_eq!(days, [10, 10, 11]);
        assert!(store.usage_rows_all(12, 299).unwrap().is_empty());
        assert_eq!(store.usage_rows_all(0, u32::MAX).unwrap().len(), 5);
    }
}
