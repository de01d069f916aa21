//! Schema version 4: per-grant, per-day, per-model usage counters.

use crate::MigrationError;
use crate::trees::USAGE;

/// Usage rows (see [`crate::trees::USAGE`] for the key).
pub const TREES: [&str; 1] = [USAGE];

pub fn apply(db: &sled::Db) -> Result<(), MigrationError> {
    for tree in TREES {
        db.open_tree(tree)?;
    }
    Ok(())
}
