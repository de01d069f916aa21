//! Schema version 8: the operator's OpenAI key (one sealed record, a plan's fallback for
//! people who stored no key of their own).

use crate::MigrationError;
use crate::trees::OPERATOR_KEY;

/// The operator key's tree (see [`crate::trees::OPERATOR_KEY`]).
pub const TREES: [&str; 1] = [OPERATOR_KEY];

pub fn apply(db: &sled::Db) -> Result<(), MigrationError> {
    for tree in TREES {
        db.open_tree(tree)?;
    }
    Ok(())
}
