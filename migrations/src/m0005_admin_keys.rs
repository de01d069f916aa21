//! Schema version 5: operator admin keys (stored as the SHA-256 of their secret).

use crate::MigrationError;
use crate::trees::ADMIN_KEYS;

/// Admin key records (see [`crate::trees::ADMIN_KEYS`]).
pub const TREES: [&str; 1] = [ADMIN_KEYS];

pub fn apply(db: &sled::Db) -> Result<(), MigrationError> {
    for tree in TREES {
        db.open_tree(tree)?;
    }
    Ok(())
}
