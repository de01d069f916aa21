//! Schema version 3: authorization codes of the redirect + PKCE connect flow.

use crate::MigrationError;
use crate::trees::CONNECT_CODES;

/// Pending redirect-flow approvals (single use, minutes-long; see [`crate::trees`]).
pub const TREES: [&str; 1] = [CONNECT_CODES];

pub fn apply(db: &sled::Db) -> Result<(), MigrationError> {
    for tree in TREES {
        db.open_tree(tree)?;
    }
    Ok(())
}
