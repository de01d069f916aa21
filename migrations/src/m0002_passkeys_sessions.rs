//! Schema version 2: passkeys, sessions and WebAuthn ceremonies.

use crate::MigrationError;
use crate::trees::{
    CEREMONIES, CREDENTIAL_IDS, PASSKEYS, PASSKEYS_BY_USER, SESSIONS, SESSIONS_BY_USER,
};

/// Passkeys with their per-user and credential-id indexes, sessions with their per-user
/// index, and WebAuthn ceremonies (see [`crate::trees`]).
pub const TREES: [&str; 6] = [
    PASSKEYS,
    PASSKEYS_BY_USER,
    CREDENTIAL_IDS,
    SESSIONS,
    SESSIONS_BY_USER,
    CEREMONIES,
];

pub fn apply(db: &sled::Db) -> Result<(), MigrationError> {
    for tree in TREES {
        db.open_tree(tree)?;
    }
    Ok(())
}
