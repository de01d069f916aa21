//! The master keyring a running keygate uses, which a rotation replaces while it
//! serves (`services::master_keys`).
//!
//! Every seal and open asks for [`MasterKeys::current`] at that moment and uses what it
//! got for that one record: a request never sees half a rotation. A new keyring is put
//! in place only after the key file holding it is durable, so no record is ever sealed
//! under a key that a restart would not find.

use std::path::{Path, PathBuf};
use std::sync::{Arc, PoisonError, RwLock};

use keygate_core::keyring::Keyring;
use tokio::sync::{Mutex, MutexGuard, Notify};

use crate::keyfile::KeySource;

pub struct MasterKeys {
    current: RwLock<Arc<Keyring>>,
    /// The key file a rotation rewrites; `None` when the keyring came from
    /// `KEYGATE_MASTER_KEYS` or from the caller (then there is nothing keygate could
    /// write a new key to that a restart would read again).
    file: Option<PathBuf>,
    /// One rotation or retirement at a time.
    changing: Mutex<()>,
    /// Wakes the re-seal task (after a rotation).
    wake: Notify,
}

impl MasterKeys {
    pub fn new(keyring: Keyring, source: &KeySource) -> Self {
        let file = match source {
            KeySource::File { path, .. } => Some(path.clone()),
            KeySource::Env | KeySource::Given => None,
        };
        Self {
            current: RwLock::new(Arc::new(keyring)),
            file,
            changing: Mutex::new(()),
            wake: Notify::new(),
        }
    }

    /// The keyring in use now. Take it once per record sealed or opened, right where it
    /// is used (not before an await), so a rotation applies from the next record on.
    pub fn current(&self) -> Arc<Keyring> {
        self.current
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// The key file rotations write, if the keyring came from one.
    pub fn file(&self) -> Option<&Path> {
        self.file.as_deref()
    }

    /// Held while the keyring changes, so two rotations cannot both add a key.
    pub async fn lock_changes(&self) -> MutexGuard<'_, ()> {
        self.changing.lock().await
    }

    /// Puts `keyring` in use (its key file is already written and synced).
    pub fn replace(&self, keyring: Keyring) {
        *self.current.write().unwrap_or_else(PoisonError::into_inner) = Arc::new(keyring);
    }

    /// Asks the re-seal task for a pass.
    pub fn wake_resealer(&self) {
        self.wake.notify_one();
    }

    /// Waits until [`MasterKeys::wake_resealer`] is called (a call made while no one
    /// waits is kept for the next wait).
    pub async fn resealer_woken(&self) {
        self.wake.notified().await;
    }
}
