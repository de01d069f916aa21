//! Every tree's name, declared once. The migration steps create the trees under these
//! names, `keygate_store::Store::open` opens them, and the store's errors name them.
//!
//! A name here is part of the on-disk format and never changes: a step that renames a
//! tree adds a new constant and keeps the old one for the steps that created it.

/// The schema version and the store's creation time.
pub const META: &str = "meta";
/// user id → user record.
pub const USERS: &str = "users";
/// user id → sealed OpenAI key record.
pub const VAULT: &str = "vault";
/// grant id → grant record.
pub const GRANTS: &str = "grants";
/// user id ‖ grant id → ().
pub const GRANTS_BY_USER: &str = "grants_by_user";
/// passkey id → passkey record.
pub const PASSKEYS: &str = "passkeys";
/// user id ‖ passkey id → ().
pub const PASSKEYS_BY_USER: &str = "passkeys_by_user";
/// WebAuthn credential id (base64url) → passkey id.
pub const CREDENTIAL_IDS: &str = "credential_ids";
/// SHA-256(session id) → session record.
pub const SESSIONS: &str = "sessions";
/// user id ‖ SHA-256(session id) → ().
pub const SESSIONS_BY_USER: &str = "sessions_by_user";
/// ceremony id → WebAuthn ceremony in progress.
pub const CEREMONIES: &str = "ceremonies";
/// SHA-256(code) → pending redirect-flow approval.
pub const CONNECT_CODES: &str = "connect_codes";
/// grant id ‖ 0x00 ‖ day number (u32, big endian) ‖ model → usage counters of that
/// grant, UTC day and model (a grant's rows, in day order, are one range scan).
pub const USAGE: &str = "usage";
/// admin key id → admin key record (name, scope, SHA-256 of the secret, expiry).
pub const ADMIN_KEYS: &str = "admin_keys";
/// nanoseconds since the epoch (u64, big endian) ‖ sequence (u64, big endian) → audit
/// entry: the whole log in time order, one range scan for any period.
pub const AUDIT: &str = "audit";
/// user id ‖ nanoseconds ‖ sequence → the same audit entry, for the entries that
/// concern that person (`GET /api/audit`, `GET /admin/audit?user=`): one range scan.
pub const AUDIT_BY_USER: &str = "audit_by_user";
/// user id ‖ grant id → (): the owner of every grant ever stored, written with the
/// grant and kept when the grant is removed (and when its person deletes their
/// account), so usage rows — which outlive their grant — can be summed per person.
pub const GRANT_OWNERS: &str = "grant_owners";
/// `"operator"` → the operator's sealed OpenAI key record (at most one), bound to
/// `keygate_core::vault::OPERATOR_SUBJECT`, never to a user id.
pub const OPERATOR_KEY: &str = "operator_key";
