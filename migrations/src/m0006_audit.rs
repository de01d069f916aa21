//! Schema version 6: the audit log (append-only) and its per-person copy.

use crate::MigrationError;
use crate::trees::{AUDIT, AUDIT_BY_USER};

/// The audit trees (see [`crate::trees::AUDIT`] and [`crate::trees::AUDIT_BY_USER`]).
pub const TREES: [&str; 2] = [AUDIT, AUDIT_BY_USER];

pub fn apply(db: &sled::Db) -> Result<(), MigrationError> {
    for tree in TREES {
        db.open_tree(tree)?;
    }
    Ok(())
}
