//! [`Store`]: the handle the server holds — one backend behind the [`StoreBackend`]
//! interface, shared by reference count. Its methods are the interface's (through
//! `Deref`); what it adds is opening a backend.

use std::ops::Deref;
use std::path::Path;
use std::sync::Arc;

use crate::StoreError;
use crate::api::StoreBackend;
use crate::store::{SledStore, StoreOptions};

#[derive(Clone)]
pub struct Store(Arc<dyn StoreBackend>);

impl Store {
    /// Opens (creating if needed) the embedded sled store in `dir` and runs its
    /// migrations. sled allows one open per process and directory.
    pub fn open(dir: &Path, options: &StoreOptions) -> Result<Self, StoreError> {
        Ok(Self(Arc::new(SledStore::open(dir, options)?)))
    }

    /// Connects to the PostgreSQL store at `url` (`postgres://…`), applying pending SQL
    /// migrations (`migrations/*.sql`) first, once across nodes starting together.
    pub async fn connect(url: &str, options: &StoreOptions) -> Result<Self, StoreError> {
        crate::postgres::connect(url, options).await
    }

    /// A store over any backend.
    pub fn from_backend(backend: Arc<dyn StoreBackend>) -> Self {
        Self(backend)
    }
}

impl Deref for Store {
    type Target = dyn StoreBackend;

    fn deref(&self) -> &Self::Target {
        self.0.as_ref()
    }
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Store({:?})", self.0.kind())
    }
}
