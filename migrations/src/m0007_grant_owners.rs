//! Schema version 7: who owns each grant, kept after the grant is removed, so usage can
//! be reported per person (`GET /api/usage`, `GET /admin/usage?group_by=user`).
//!
//! Backfilled from `grants_by_user`: every grant still stored gets its owner. Grants
//! removed before this step left no trace of their owner; their usage rows report
//! `user: null` (docs/DECISIONS.md).

use crate::MigrationError;
use crate::trees::{GRANT_OWNERS, GRANTS_BY_USER};

/// The owner records (see [`crate::trees::GRANT_OWNERS`]).
pub const TREES: [&str; 1] = [GRANT_OWNERS];

pub fn apply(db: &sled::Db) -> Result<(), MigrationError> {
    let [owners] = TREES.map(|t| db.open_tree(t));
    let owners = owners?;
    // Same key shape (`user id ‖ grant id`): the index's keys are copied as they are.
    for key in db.open_tree(GRANTS_BY_USER)?.iter().keys() {
        owners.insert(key?, &[])?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn owners_are_backfilled_from_the_per_person_index() {
        let db = sled::Config::new().temporary(true).open().unwrap();
        let idx = db.open_tree(GRANTS_BY_USER).unwrap();
        idx.insert("uuuuuuuuuuuuuuuugggggggggggggggg", &[]).unwrap();
        idx.insert("uuuuuuuuuuuuuuuuhhhhhhhhhhhhhhhh", &[]).unwrap();
        apply(&db).unwrap();
        apply(&db).unwrap();
        let owners = db.open_tree(GRANT_OWNERS).unwrap();
        let keys: Vec<_> = owners.iter().keys().map(Result::unwrap).collect();
        assert_eq!(keys.len(), 2);
        assert_eq!(&keys[0][..], b"uuuuuuuuuuuuuuuugggggggggggggggg");
    }
}
