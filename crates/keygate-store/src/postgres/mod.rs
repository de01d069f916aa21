//! The PostgreSQL backend (issue 14): being built on branch wt-pg; until it lands,
//! connecting says so.

pub(crate) mod limits;

use crate::{Store, StoreError, StoreOptions};

pub(crate) async fn connect(_url: &str, _options: &StoreOptions) -> Result<Store, StoreError> {
    Err(StoreError::Unsupported("the PostgreSQL backend"))
}
