//! Master key rotation while serving: a new active key (written to the key file, then
//! used), the background re-seal of every record under an older key with its progress
//! (a log line and `keygate_reseal_remaining` / `keygate_resealed_records_total`), and
//! retiring a key once no record uses it. The same functions serve `keygate keys
//! rotate|retire` when no keygate runs (docs/OPERATIONS.md, "Master key rotation").

use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, Instant};

use keygate_core::audit::Action;
use keygate_core::keyring::Keyring;
use keygate_core::vault::SealedKey;
use keygate_store::Store;
use serde::{Deserialize, Serialize};

use crate::error::ServerError;
use crate::keyfile;
use crate::services::audit::{Audit, Target};
use crate::services::error::{MasterKeyRefusal, Missing, ServiceError};
use crate::state::AppState;

/// A progress line at most this often during a pass (and one at its end).
const PROGRESS_EVERY: Duration = Duration::from_secs(1);
/// Records re-sealed between two yields to the runtime.
const YIELD_EVERY: usize = 64;
/// Passes one wake-up may run: another starts only when the previous one changed
/// something and records under an older key remain (a key stored with the previous
/// keyring while the pass ran). Records that do not open stay and are logged.
const MAX_PASSES: usize = 5;

/// Rotating or retiring through the API changes this node's key file only. With a
/// shared store the other nodes would then meet records sealed under a key they do
/// not have (or keep one this node dropped): refused there — every node is given the
/// new keyring instead (docs/OPERATIONS.md, "Scale-out").
fn one_node_keyring(store: &Store) -> Result<(), ServerError> {
    if store.kind() == keygate_store::BackendKind::Postgres {
        return Err(keygate_store::StoreError::Unsupported(
            "changing the master keyring through one node of a shared store (give every \
             node the new keyring: docs/OPERATIONS.md, Scale-out)",
        )
        .into());
    }
    Ok(())
}

/// `GET /admin/master-keys`: the kids (never the keys), how many sealed records
/// (people's keys and the operator's) use each, and how many still wait for the re-seal.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct KeyringView {
    pub active: String,
    pub keys: Vec<KidView>,
    pub reseal_remaining: usize,
    /// `file` (rotations possible) or `environment` (`KEYGATE_MASTER_KEYS`).
    pub source: String,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct KidView {
    pub kid: String,
    pub active: bool,
    pub records: usize,
}

/// How a re-seal pass went.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Progress {
    /// Records under an older key when the pass began.
    pub total: usize,
    /// Re-sealed so far.
    pub done: usize,
    /// Still under an older key (not yet reached, replaced meanwhile, or not opening).
    pub remaining: usize,
}

/// How many sealed records name each kid in their JWE header (the truth the re-seal
/// goes by), people's keys and the operator's key together. A record that is not a JWE
/// counts under `?`.
pub async fn records_by_kid(store: &Store) -> Result<BTreeMap<String, usize>, ServerError> {
    let mut counts = BTreeMap::new();
    let sealed = store
        .vault_entries()
        .await?
        .into_iter()
        .map(|(_, r)| r.sealed)
        .chain(store.operator_key().await?.map(|r| r.sealed));
    for compact in sealed {
        let kid = SealedKey::from_compact(compact)
            .map(|s| s.kid().to_owned())
            .unwrap_or_else(|_| "?".into());
        *counts.entry(kid).or_insert(0) += 1;
    }
    Ok(counts)
}

pub async fn view(
    store: &Store,
    keyring: &Keyring,
    from_file: bool,
) -> Result<KeyringView, ServerError> {
    let counts = records_by_kid(store).await?;
    let active = keyring.active_kid().to_owned();
    let reseal_remaining = counts
        .iter()
        .filter(|(kid, _)| **kid != active)
        .map(|(_, n)| n)
        .sum();
    Ok(KeyringView {
        keys: keyring
            .kids()
            .map(|kid| KidView {
                kid: kid.to_owned(),
                active: kid == active,
                records: counts.get(kid).copied().unwrap_or(0),
            })
            .collect(),
        active,
        reseal_remaining,
        source: if from_file { "file" } else { "environment" }.into(),
    })
}

/// The running server's view.
pub async fn show(st: &AppState) -> Result<KeyringView, ServerError> {
    view(
        &st.store,
        &st.keyring.current(),
        st.keyring.file().is_some(),
    )
    .await
}

/// Adds a new active master key while serving: the key file is replaced (synced)
/// first, then the new keyring is used for every seal from the next one on, and the
/// re-seal task is woken. Older keys stay, so every record keeps opening throughout.
pub async fn rotate(st: &AppState, by: &Audit) -> Result<KeyringView, ServerError> {
    one_node_keyring(&st.store)?;
    let file = st
        .keyring
        .file()
        .ok_or(ServiceError::MasterKey(MasterKeyRefusal::FromEnvironment))?;
    let _one_at_a_time = st.keyring.lock_changes().await;
    let previous = st.keyring.current();
    let next = rotated(file, &previous)?;
    let kid = next.active_kid().to_owned();
    st.keyring.replace(next);
    st.keyring.wake_resealer();
    tracing::info!(
        kid,
        previous = previous.active_kid(),
        "new active master key; re-sealing records in the background"
    );
    let detail = serde_json::json!({"kid": kid, "previous": previous.active_kid()});
    by.record(
        &st.store,
        Action::MasterKeyRotated,
        None,
        Some(Target::MasterKey(&kid)),
        detail,
    )
    .await?;
    show(st).await
}

/// Removes `kid` from the keyring (and the key file) once no record uses it; never the
/// active key.
pub async fn retire(st: &AppState, kid: &str, by: &Audit) -> Result<(), ServerError> {
    one_node_keyring(&st.store)?;
    let file = st
        .keyring
        .file()
        .ok_or(ServiceError::MasterKey(MasterKeyRefusal::FromEnvironment))?;
    let _one_at_a_time = st.keyring.lock_changes().await;
    let next = retired(file, &st.store, &st.keyring.current(), kid).await?;
    st.keyring.replace(next);
    tracing::info!(kid, "master key retired");
    by.record(
        &st.store,
        Action::MasterKeyRetired,
        None,
        Some(Target::MasterKey(kid)),
        serde_json::json!({"kid": kid}),
    )
    .await
}

/// `keyring` plus a new active key, written to `file` (synced) before it is returned.
pub fn rotated(file: &Path, keyring: &Keyring) -> Result<Keyring, ServerError> {
    let mut next = keyring.duplicate().map_err(ServerError::Vault)?;
    next.add_generated().map_err(ServerError::Vault)?;
    keyfile::replace(file, &next).map_err(|e| ServerError::Internal(e.to_string()))?;
    Ok(next)
}

/// `keyring` without `kid`, written to `file` (synced) before it is returned; refused
/// for the active key, an unknown one, or one that sealed records still use.
pub async fn retired(
    file: &Path,
    store: &Store,
    keyring: &Keyring,
    kid: &str,
) -> Result<Keyring, ServerError> {
    if !keyring.contains(kid) {
        return Err(ServiceError::NotFound(Missing::MasterKey).into());
    }
    if keyring.active_kid() == kid {
        return Err(ServiceError::MasterKey(MasterKeyRefusal::Active(kid.to_owned())).into());
    }
    let records = records_by_kid(store).await?.get(kid).copied().unwrap_or(0);
    if records > 0 {
        return Err(ServiceError::MasterKey(MasterKeyRefusal::InUse {
            kid: kid.to_owned(),
            records,
        })
        .into());
    }
    let mut next = keyring.duplicate().map_err(ServerError::Vault)?;
    next.remove(kid);
    keyfile::replace(file, &next).map_err(|e| ServerError::Internal(e.to_string()))?;
    Ok(next)
}

/// One pass: every record sealed under an older key is opened and sealed again under
/// the active one, each swapped atomically (a record replaced meanwhile keeps the
/// newer one), then flushed. `progress` is told at the start, about once a second, and
/// at the end.
pub async fn reseal_pass(
    store: &Store,
    keyring: &Keyring,
    progress: &(dyn Fn(Progress) + Send + Sync),
) -> Result<Progress, ServerError> {
    let pending: Vec<_> = store
        .vault_entries()
        .await?
        .into_iter()
        .filter(|(_, r)| {
            SealedKey::from_compact(r.sealed.clone()).is_ok_and(|s| s.needs_reseal(keyring))
        })
        .collect();
    let operator = crate::services::operator_key::needs_reseal(store, keyring).await?;
    let total = pending.len() + usize::from(operator);
    let mut p = Progress {
        total,
        done: 0,
        remaining: total,
    };
    progress(p);
    if total == 0 {
        return Ok(p);
    }
    let mut said = Instant::now();
    for (i, (user, record)) in pending.iter().enumerate() {
        if crate::services::vault::reseal_record(store, keyring, user, record).await? {
            p.done += 1;
        }
        p.remaining = total - p.done;
        if said.elapsed() >= PROGRESS_EVERY {
            progress(p);
            said = Instant::now();
        }
        if i % YIELD_EVERY == YIELD_EVERY - 1 {
            tokio::task::yield_now().await;
        }
    }
    if operator {
        let changed = crate::services::operator_key::reseal(store, keyring).await?;
        p.done += usize::from(changed);
        p.remaining = total - p.done;
    }
    store.flush().await?;
    progress(p);
    Ok(p)
}

/// The re-seal task: a pass at start, and again whenever a rotation wakes it. Each pass
/// reports through the log and the metrics.
pub fn spawn_resealer(st: AppState) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        loop {
            run_passes(&st).await;
            st.keyring.resealer_woken().await;
        }
    })
}

async fn run_passes(st: &AppState) {
    for _ in 0..MAX_PASSES {
        // Held for the pass: a retirement counts the records under a kid only once no
        // pass is sealing with an older snapshot of the keyring (else a record sealed
        // by this pass under a kid retired meanwhile could never be opened again), and
        // a rotation waits for the pass under way.
        let _no_change_meanwhile = st.keyring.lock_changes().await;
        let keyring = st.keyring.current();
        let kid = keyring.active_kid().to_owned();
        let metrics = st.metrics.clone();
        let last_done = std::sync::atomic::AtomicUsize::new(0);
        let report = move |p: Progress| {
            let before = last_done.swap(p.done, std::sync::atomic::Ordering::Relaxed);
            metrics.resealed(p.done.saturating_sub(before));
            metrics.reseal_remaining(p.remaining);
            if p.total > 0 {
                tracing::info!(
                    kid = %kid,
                    resealed = p.done,
                    of = p.total,
                    remaining = p.remaining,
                    "re-sealing records under the active master key"
                );
            }
        };
        match reseal_pass(&st.store, &keyring, &report).await {
            Ok(p) if p.done > 0 && p.remaining > 0 => continue,
            Ok(p) if p.done > 0 => {
                // A key stored with the previous keyring while this pass ran is seen
                // by the next one.
                if pending_under_older(st).await.unwrap_or(0) > 0 {
                    continue;
                }
                return;
            }
            Ok(_) => return,
            Err(e) => {
                tracing::error!(error = %e, "re-sealing records failed");
                return;
            }
        }
    }
}

async fn pending_under_older(st: &AppState) -> Result<usize, ServerError> {
    let remaining = show(st).await?.reseal_remaining;
    st.metrics.reseal_remaining(remaining);
    Ok(remaining)
}
