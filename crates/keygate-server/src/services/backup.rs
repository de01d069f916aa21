//! Backups of a running keygate (`GET /admin/backup`) and restores into a new data
//! directory (`keygate restore`). The snapshot's consistency is the store's
//! (`keygate_store::Snapshot`: one instant across every tree); what this adds is the
//! audit entry, and on restore the check that the keyring opens every sealed record
//! before anything is written.

use std::collections::BTreeMap;
use std::path::Path;

use keygate_core::audit::Action;
use keygate_core::keyring::Keyring;
use keygate_store::{BackupError, Snapshot, SnapshotSummary};
use thiserror::Error;

use crate::error::ServerError;
use crate::keyfile::{self, KeyFileError};
use crate::services::audit::Audit;
use crate::state::AppState;

/// A backup's bytes and what they hold.
pub struct Backup {
    pub bytes: Vec<u8>,
    pub summary: SnapshotSummary,
}

/// Takes a snapshot while serving (writes wait for the copy, off the request's worker
/// thread), encodes it and records a `store.backed_up` audit entry (after the copy: the
/// backup does not hold its own entry).
pub async fn take(st: &AppState, by: &Audit) -> Result<Backup, ServerError> {
    let store = st.store.clone();
    let now = st.clock.now();
    let started = std::time::Instant::now();
    // Copying and encoding (a SHA-256 over the whole store) are long, blocking work:
    // off the worker thread, which serves other connections meanwhile.
    // The backend's future is driven on this blocking thread (sled copies right there).
    let runtime = tokio::runtime::Handle::current();
    let (summary, copied, bytes) = tokio::task::spawn_blocking(move || {
        let snapshot = runtime.block_on(store.snapshot(now))?;
        let copied = started.elapsed();
        Ok::<_, ServerError>((snapshot.summary(), copied, snapshot.to_bytes()?))
    })
    .await
    .map_err(|e| ServerError::Internal(format!("backup task: {e}")))??;
    tracing::info!(
        entries = summary.entries(),
        bytes = bytes.len(),
        copy_ms = copied.as_millis() as u64,
        "backup taken"
    );
    let detail = serde_json::json!({"entries": summary.entries(), "bytes": bytes.len()});
    by.record(&st.store, Action::StoreBackedUp, None, None, detail)
        .await?;
    Ok(Backup { bytes, summary })
}

/// Why a restore did not happen. Nothing was written in any case but `Write`.
#[derive(Debug, Error)]
pub enum RestoreError {
    #[error("{0}")]
    Backup(#[from] BackupError),
    #[error("the backup's records cannot be read: {0}")]
    Records(keygate_store::StoreError),
    /// The keyring lacks keys the backup's records were sealed under, or has a key of
    /// that name that does not open them. Nothing is written.
    #[error(
        "the master keyring does not open this backup: {failed} of {total} sealed keys do not open \
         ({detail}); use the keyring that was in use when the backup was taken (its master.keys, \
         or KEYGATE_MASTER_KEYS); nothing was written"
    )]
    WrongKeyring {
        failed: usize,
        total: usize,
        detail: String,
    },
    #[error("{0}")]
    KeyFile(#[from] KeyFileError),
}

/// Opens every sealed record of the backup (people's keys and the operator's) with
/// `keyring`. Returns how many opened — all of them — or says which kids failed.
pub fn check_keyring(snapshot: &Snapshot, keyring: &Keyring) -> Result<usize, RestoreError> {
    let vault = snapshot.vault_records().map_err(RestoreError::Records)?;
    let operator = snapshot.operator_key().map_err(RestoreError::Records)?;
    let total = vault.len() + usize::from(operator.is_some());
    // kid → (missing from the keyring?, how many failed)
    let mut failed: BTreeMap<String, (bool, usize)> = BTreeMap::new();
    let mut note = |sealed: &str| {
        let kid = keygate_core::vault::SealedKey::from_compact(sealed.to_owned())
            .map(|s| s.kid().to_owned())
            .unwrap_or_else(|_| "?".into());
        let missing = !keyring.contains(&kid);
        failed.entry(kid).or_insert((missing, 0)).1 += 1;
    };
    for (user, record) in &vault {
        if crate::services::vault::open_record(keyring, user, record).is_err() {
            note(&record.sealed);
        }
    }
    if let Some(record) = &operator
        && crate::services::operator_key::open(keyring, record).is_err()
    {
        note(&record.sealed);
    }
    if failed.is_empty() {
        return Ok(total);
    }
    let detail = failed
        .iter()
        .map(|(kid, (missing, n))| {
            let why = if *missing {
                "not in this keyring"
            } else {
                "a different key of that name"
            };
            format!("{n} under {kid}: {why}")
        })
        .collect::<Vec<_>>()
        .join("; ");
    Err(RestoreError::WrongKeyring {
        failed: failed.values().map(|(_, n)| n).sum(),
        total,
        detail,
    })
}

/// What a restore made.
#[derive(Debug)]
pub struct Restored {
    pub summary: SnapshotSummary,
    pub sealed_records: usize,
    pub key_file_written: bool,
}

/// Restores `bytes` (a backup file) into `data_dir`, which must be missing or empty:
/// the file is read and checked whole, the keyring must open every sealed record, and
/// only then is the store written (`data_dir/store`), plus the key file
/// (`data_dir/master.keys`, 0600) when `write_key_file` (the keyring came from a file
/// rather than `KEYGATE_MASTER_KEYS`).
pub fn restore(
    bytes: &[u8],
    data_dir: &Path,
    keyring: &Keyring,
    write_key_file: bool,
) -> Result<Restored, RestoreError> {
    let io = |source| {
        RestoreError::Backup(BackupError::Io {
            path: data_dir.display().to_string(),
            source,
        })
    };
    if data_dir.exists() && std::fs::read_dir(data_dir).map_err(io)?.next().is_some() {
        return Err(BackupError::NotEmpty(data_dir.display().to_string()).into());
    }
    let snapshot = Snapshot::from_bytes(bytes)?;
    let sealed_records = check_keyring(&snapshot, keyring)?;
    keyfile::create_private_dir(data_dir).map_err(io)?;
    let store_dir = keyfile::prepare_store_dir(data_dir).map_err(io)?;
    snapshot.restore_into(&store_dir)?;
    if write_key_file {
        keyfile::write_new(&keyfile::key_file_path(data_dir), keyring)?;
    }
    Ok(Restored {
        summary: snapshot.summary(),
        sealed_records,
        key_file_written: write_key_file,
    })
}
