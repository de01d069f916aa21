//! Schema version 2: passkeys, sessions and WebAuthn ceremonies.

use crate::MigrationError;

/// passkeys: passkey id → record; passkeys_by_user: user id ‖ passkey id → ();
/// credential_ids: WebAuthn credential id → passkey id; sessions: SHA-256(session id)
/// → record; sessions_by_user: user id ‖ hash → (); ceremonies: ceremony id → state.
pub const TREES: [&str; 6] = [
    "passkeys",
    "passkeys_by_user",
    "credential_ids",
    "sessions",
    "sessions_by_user",
    "ceremonies",
];

pub fn apply(db: &sled::Db) -> Result<(), MigrationError> {
    for tree in TREES {
        db.open_tree(tree)?;
    }
    Ok(())
}
