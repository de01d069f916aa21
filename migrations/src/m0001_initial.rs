//! Schema version 1: the trees of the first release and the store's creation time.

use crate::{META_TREE, MigrationError};

/// users: user id → user record; vault: user id → sealed OpenAI key record;
/// grants: grant id → grant record; grants_by_user: user id ‖ grant id → ().
pub const TREES: [&str; 4] = ["users", "vault", "grants", "grants_by_user"];

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
