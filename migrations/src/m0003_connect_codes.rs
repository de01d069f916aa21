//! Schema version 3: authorization codes of the redirect + PKCE connect flow.

use crate::MigrationError;

/// connect_codes: SHA-256(code) → pending approval (single use, minutes-long).
pub const TREES: [&str; 1] = ["connect_codes"];

pub fn apply(db: &sled::Db) -> Result<(), MigrationError> {
    for tree in TREES {
        db.open_tree(tree)?;
    }
    Ok(())
}
