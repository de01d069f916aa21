//! `keygate store copy`: everything in one store written into another — sled to
//! PostgreSQL when a site scales out, and back — still sealed (the entries are the
//! records as stored; nothing here opens a JWE or needs the keyring).
//!
//! Idempotent by construction: [`StoreBackend::import`] replaces an item filed under
//! the same key ([`Entry::key`]) and sets usage rows rather than adding to them, so a
//! copy run again after an interruption, or after the source changed, ends with the
//! target equal to the source. What it refuses is a target holding items the source
//! does not have: that is some other store, and merging two would be a guess.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use thiserror::Error;

use crate::api::Entry;
use crate::{Store, StoreError};

/// What a copy did: every kind with how many entries the source had — and, verified
/// after the write, the target has.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct CopyReport {
    pub counts: BTreeMap<&'static str, u64>,
    /// Entries already in the target exactly as in the source (a repeated copy).
    pub unchanged: u64,
}

#[derive(Debug, Error)]
pub enum CopyError {
    #[error(transparent)]
    Store(#[from] StoreError),
    /// `foreign`: how many of each kind, e.g. "1 audit, 1 users".
    #[error(
        "the target holds entries the source does not have ({foreign}): it is another \
         store; copy into an empty one (or the one an earlier copy from this source made)"
    )]
    ForeignTarget { foreign: String },
    #[error(
        "verification failed: after the copy the target has {target} {kind} entries \
         ({differ} differing from the source), the source {in_source}"
    )]
    Mismatch {
        kind: &'static str,
        in_source: u64,
        target: u64,
        differ: u64,
    },
}

/// Entries by (kind, key).
fn index(entries: Vec<Entry>) -> HashMap<(&'static str, String), Entry> {
    entries
        .into_iter()
        .map(|e| ((e.kind(), e.key()), e))
        .collect()
}

fn counts(entries: &HashMap<(&'static str, String), Entry>) -> BTreeMap<&'static str, u64> {
    let mut counts = BTreeMap::new();
    for (kind, _) in entries.keys() {
        *counts.entry(*kind).or_insert(0) += 1;
    }
    counts
}

/// Copies every entry of `from` into `to`, then reads `to` back and checks it holds
/// exactly the source's entries. The source should not change meanwhile (stop the
/// keygate serving it); if it did, run the copy again.
pub async fn copy(from: &Store, to: &Store) -> Result<CopyReport, CopyError> {
    let entries = from.export().await?;
    let source = index(entries.clone());
    let before = index(to.export().await?);
    let mut foreign: BTreeMap<&'static str, u64> = BTreeMap::new();
    for key in before.keys() {
        if !source.contains_key(key) {
            *foreign.entry(key.0).or_insert(0) += 1;
        }
    }
    if !foreign.is_empty() {
        let foreign = foreign
            .iter()
            .map(|(kind, n)| format!("{n} {kind}"))
            .collect::<Vec<_>>()
            .join(", ");
        return Err(CopyError::ForeignTarget { foreign });
    }
    let unchanged = source
        .iter()
        .filter(|(k, e)| before.get(*k) == Some(*e))
        .count() as u64;
    to.import(&entries).await?;
    to.flush().await?;

    let after = index(to.export().await?);
    let (want, got) = (counts(&source), counts(&after));
    let kinds: BTreeSet<&'static str> = want.keys().chain(got.keys()).copied().collect();
    for kind in kinds {
        let source_n = want.get(kind).copied().unwrap_or(0);
        let target = got.get(kind).copied().unwrap_or(0);
        let differ = source
            .iter()
            .filter(|((k, key), e)| *k == kind && after.get(&(kind, key.clone())) != Some(*e))
            .count() as u64;
        if source_n != target || differ > 0 {
            return Err(CopyError::Mismatch {
                kind,
                in_source: source_n,
                target,
                differ,
            });
        }
    }
    Ok(CopyReport {
        counts: want,
        unchanged,
    })
}
