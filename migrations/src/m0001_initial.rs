//! Schema version 1: the trees of the first release and the store's creation time.

use crate::trees::{GRANTS, GRANTS_BY_USER, USERS, VAULT};
use crate::{META_TREE, MigrationError};

/// Users, vault records, grants and the per-user grant index (see [`crate::trees`]).
pub const TREES: [&str; 4] = [USERS, VAULT, GRANTS, GRANTS_BY_USER];

pub fn apply(db: &sled::Db) -> Result<(), MigrationError> {
    for tree in TREES {
        db.open_tree(tree)?;
    }
    let created = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    db.open_tree(META_TREE)?
        .compare_and_swap(
            "created_at",
            None as Option<&[u8]>,
            Some(&created.to_be_bytes()),
        )?
        .ok();
    Ok(())
}
