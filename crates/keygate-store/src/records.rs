//! Versioned records, kanidm-style: each tree stores an enum tagged `"v"`; a migration
//! adds `V2` and never edits `V1`. Code works with the latest shape only: each record's
//! [`Versioned`] impl is the one place that knows the versions.

use keygate_core::admin_scope::AdminScope;
use keygate_core::audit::{Action, Actor};
use keygate_core::ids::{AdminKeyId, GrantId, KeyId, PasskeyId, UserId};
use keygate_core::limits::Limits;
use keygate_core::scope::Scope;
use keygate_core::time::UnixTime;
use serde::{Deserialize, Serialize};

use crate::table::Versioned;

/// A person.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct UserRecord {
    pub id: UserId,
    pub name: String,
    pub created_at: UnixTime,
}

/// A person's sealed OpenAI key and the plaintext metadata shown beside it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct VaultRecord {
    pub user_id: UserId,
    pub key_id: KeyId,
    /// Compact JWE (see `keygate_core::vault`); never the key itself.
    pub sealed: String,
    /// The master `kid` the JWE was sealed under, for the re-seal loop.
    pub kid: String,
    pub last4: String,
    pub created_at: UnixTime,
    pub last_validated_at: Option<UnixTime>,
    /// When OpenAI last refused this key (its 401/403 to a proxied request); cleared
    /// when a new key is stored or OpenAI accepts this one again.
    #[serde(default)]
    pub rejected_at: Option<UnixTime>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum GrantState {
    Active,
    Disabled,
    Revoked,
}

/// What an app holds instead of the person's key.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct GrantRecord {
    pub id: GrantId,
    pub user_id: UserId,
    pub name: String,
    /// The app origin the grant is bound to (connect flow); `None` for admin/dashboard.
    pub origin: Option<String>,
    /// Models allowed; empty means all.
    pub models: Vec<String>,
    pub state: GrantState,
    /// Lowercase hex SHA-256 of the token's secret part.
    pub secret_hash: String,
    pub created_at: UnixTime,
    pub last_used_at: Option<UnixTime>,
    pub revoked_at: Option<UnixTime>,
    #[serde(default)]
    pub expires_at: Option<UnixTime>,
    /// The plan the app asked for at connect time (limits arrive with plans support).
    #[serde(default)]
    pub plan: Option<String>,
    /// The endpoint families this grant may reach. Grants stored before scopes existed
    /// read as `["inference"]`: tightened on purpose (docs/DECISIONS.md).
    #[serde(default = "Scope::default_set")]
    pub scopes: Vec<Scope>,
    /// rpm, tpm, concurrency, budget (copied from the plan at creation, tightened by
    /// the person; changed with PATCH). Grants from before limits: none.
    #[serde(default)]
    pub limits: Limits,
    /// The secret hash replaced by the last rotation, valid until `previous_until`
    /// (the rotation's grace), then refused.
    #[serde(default)]
    pub previous_secret_hash: Option<String>,
    #[serde(default)]
    pub previous_until: Option<UnixTime>,
}

/// An approved redirect-flow connection waiting for its code to be exchanged. The
/// grant (and its secret) is only minted at exchange, so nothing secret waits here.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CodeRecord {
    pub user_id: UserId,
    pub redirect_uri: String,
    pub origin: String,
    /// base64url(SHA-256(code_verifier)), S256 only.
    pub code_challenge: String,
    pub app_name: String,
    pub models: Option<Vec<String>>,
    pub plan: Option<String>,
    pub reuse_grant_id: Option<GrantId>,
    pub expires_at: UnixTime,
    /// The scopes approved; `None` when the app asked for none (and for codes issued
    /// before scopes existed): a new grant gets `["inference"]`.
    #[serde(default)]
    pub scopes: Option<Vec<Scope>>,
    /// The limits the person approved (`None`: the plan's; codes from before limits).
    #[serde(default)]
    pub limits: Option<Limits>,
    /// When the grant should expire, as approved (`None`: never).
    #[serde(default)]
    pub grant_expires_at: Option<UnixTime>,
}

#[derive(Serialize, Deserialize)]
#[serde(tag = "v")]
pub(crate) enum StoredCode {
    #[serde(rename = "1")]
    V1(CodeRecord),
}

impl Versioned for CodeRecord {
    type Stored = StoredCode;
    fn into_stored(self) -> StoredCode {
        StoredCode::V1(self)
    }
    fn from_stored(stored: StoredCode) -> Self {
        match stored {
            StoredCode::V1(r) => r,
        }
    }
}

/// A registered passkey. `passkey` is webauthn-rs's serialised credential (public key,
/// counter, backup flags): opaque to the store, which does not depend on webauthn-rs.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PasskeyRecord {
    pub id: PasskeyId,
    pub user_id: UserId,
    pub name: String,
    /// base64url of the WebAuthn credential id.
    pub credential_id: String,
    pub passkey: String,
    pub created_at: UnixTime,
    pub last_used_at: Option<UnixTime>,
    pub sign_count: u32,
    pub backup_eligible: bool,
    pub backup_state: bool,
}

/// A signed-in browser. Keyed by the SHA-256 of the cookie's session id.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SessionRecord {
    pub user_id: UserId,
    pub created_at: UnixTime,
    pub last_seen_at: UnixTime,
    /// Until when a passkey assertion counts as fresh (step-up for sensitive actions).
    pub fresh_until: UnixTime,
    /// A random id naming this session in the sessions list and `DELETE
    /// /api/sessions/{id}`: public, unrelated to the cookie or its hash. Empty only in
    /// records written before it existed (the server assigns one on next use).
    #[serde(default)]
    pub public_id: String,
    /// The browser's `User-Agent` when the session began, trimmed (shown in the list).
    #[serde(default)]
    pub user_agent: Option<String>,
    /// Creation order within the store (set by `StoreBackend::insert_session`), so "the oldest
    /// session" is well defined within one second too.
    #[serde(default)]
    pub seq: u64,
}

/// A WebAuthn ceremony in progress: single use, short-lived.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CeremonyRecord {
    pub kind: String,
    /// webauthn-rs's serialised ceremony state (the challenge; not a long-term secret).
    pub state: String,
    pub user_id: Option<UserId>,
    pub name: Option<String>,
    pub expires_at: UnixTime,
}

#[derive(Serialize, Deserialize)]
#[serde(tag = "v")]
pub(crate) enum StoredPasskey {
    #[serde(rename = "1")]
    V1(PasskeyRecord),
}

impl Versioned for PasskeyRecord {
    type Stored = StoredPasskey;
    fn into_stored(self) -> StoredPasskey {
        StoredPasskey::V1(self)
    }
    fn from_stored(stored: StoredPasskey) -> Self {
        match stored {
            StoredPasskey::V1(r) => r,
        }
    }
}

#[derive(Serialize, Deserialize)]
#[serde(tag = "v")]
pub(crate) enum StoredSession {
    #[serde(rename = "1")]
    V1(SessionRecord),
}

impl Versioned for SessionRecord {
    type Stored = StoredSession;
    fn into_stored(self) -> StoredSession {
        StoredSession::V1(self)
    }
    fn from_stored(stored: StoredSession) -> Self {
        match stored {
            StoredSession::V1(r) => r,
        }
    }
}

#[derive(Serialize, Deserialize)]
#[serde(tag = "v")]
pub(crate) enum StoredCeremony {
    #[serde(rename = "1")]
    V1(CeremonyRecord),
}

impl Versioned for CeremonyRecord {
    type Stored = StoredCeremony;
    fn into_stored(self) -> StoredCeremony {
        StoredCeremony::V1(self)
    }
    fn from_stored(stored: StoredCeremony) -> Self {
        match stored {
            StoredCeremony::V1(r) => r,
        }
    }
}

#[derive(Serialize, Deserialize)]
#[serde(tag = "v")]
pub(crate) enum StoredUser {
    #[serde(rename = "1")]
    V1(UserRecord),
}

impl Versioned for UserRecord {
    type Stored = StoredUser;
    fn into_stored(self) -> StoredUser {
        StoredUser::V1(self)
    }
    fn from_stored(stored: StoredUser) -> Self {
        match stored {
            StoredUser::V1(r) => r,
        }
    }
}

#[derive(Serialize, Deserialize)]
#[serde(tag = "v")]
pub(crate) enum StoredVault {
    #[serde(rename = "1")]
    V1(VaultRecord),
}

impl Versioned for VaultRecord {
    type Stored = StoredVault;
    fn into_stored(self) -> StoredVault {
        StoredVault::V1(self)
    }
    fn from_stored(stored: StoredVault) -> Self {
        match stored {
            StoredVault::V1(r) => r,
        }
    }
}

#[derive(Serialize, Deserialize)]
#[serde(tag = "v")]
pub(crate) enum StoredGrant {
    #[serde(rename = "1")]
    V1(GrantRecord),
}

impl Versioned for GrantRecord {
    type Stored = StoredGrant;
    fn into_stored(self) -> StoredGrant {
        StoredGrant::V1(self)
    }
    fn from_stored(stored: StoredGrant) -> Self {
        match stored {
            StoredGrant::V1(r) => r,
        }
    }
}

/// An operator's admin key. The key itself is never stored: only the SHA-256 of its
/// secret part, compared in constant time.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AdminKeyRecord {
    pub id: AdminKeyId,
    pub name: String,
    pub scope: AdminScope,
    /// Lowercase hex SHA-256 of the key's secret part.
    pub secret_hash: String,
    pub created_at: UnixTime,
    /// After this the key is refused like a wrong one (`None`: never).
    pub expires_at: Option<UnixTime>,
}

#[derive(Serialize, Deserialize)]
#[serde(tag = "v")]
pub(crate) enum StoredAdminKey {
    #[serde(rename = "1")]
    V1(AdminKeyRecord),
}

impl Versioned for AdminKeyRecord {
    type Stored = StoredAdminKey;
    fn into_stored(self) -> StoredAdminKey {
        StoredAdminKey::V1(self)
    }
    fn from_stored(stored: StoredAdminKey) -> Self {
        match stored {
            StoredAdminKey::V1(r) => r,
        }
    }
}

/// The operator's OpenAI key: a sealed JWE bound to `keygate_core::vault::OPERATOR_SUBJECT`
/// and `key_id` (never to a user id), and when it was set. At most one, under one key.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct OperatorKeyRecord {
    /// A new id each time the key is set: the JWE's `jti`.
    pub key_id: KeyId,
    /// Compact JWE (see `keygate_core::vault`); never the key itself.
    pub sealed: String,
    /// The master `kid` the JWE was sealed under, for the re-seal pass.
    pub kid: String,
    /// When the operator set this key (a re-seal keeps it).
    pub updated_at: UnixTime,
}

#[derive(Serialize, Deserialize)]
#[serde(tag = "v")]
pub(crate) enum StoredOperatorKey {
    #[serde(rename = "1")]
    V1(OperatorKeyRecord),
}

impl Versioned for OperatorKeyRecord {
    type Stored = StoredOperatorKey;
    fn into_stored(self) -> StoredOperatorKey {
        StoredOperatorKey::V1(self)
    }
    fn from_stored(stored: StoredOperatorKey) -> Self {
        match stored {
            StoredOperatorKey::V1(r) => r,
        }
    }
}

/// One entry of the audit log: what happened, when, who did it, to whom and from
/// where. Never a secret: no key, token, hash or session id in any field.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct AuditRecord {
    /// Nanoseconds since the Unix epoch.
    pub at_ns: u64,
    /// Set by [`crate::StoreBackend::append_audit`]: orders entries of the same nanosecond.
    pub seq: u64,
    pub action: Action,
    pub actor: Actor,
    /// The person the action concerns (what `?user=` and `/api/audit` select by).
    pub user: Option<UserId>,
    pub target: Option<AuditTarget>,
    /// The client's address (trusted-proxy aware), as text.
    pub source_ip: Option<String>,
    pub request_id: Option<String>,
    /// Non-secret facts (a grant's name, the fields a change touched, ...).
    pub detail: serde_json::Map<String, serde_json::Value>,
}

/// What an audit entry is about: `{kind: "grant", id: "…"}`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditTarget {
    pub kind: String,
    pub id: String,
}

impl AuditRecord {
    /// The entry's key in the log: nanoseconds ‖ sequence, both big endian, so the
    /// log's key order is time order.
    pub fn key(&self) -> [u8; 16] {
        let mut k = [0u8; 16];
        k[..8].copy_from_slice(&self.at_ns.to_be_bytes());
        k[8..].copy_from_slice(&self.seq.to_be_bytes());
        k
    }

    /// The entry's id on the wire: its key in lowercase hex (sortable like the log).
    pub fn id(&self) -> String {
        self.key().iter().map(|b| format!("{b:02x}")).collect()
    }
}

#[derive(Serialize, Deserialize)]
#[serde(tag = "v")]
pub(crate) enum StoredAudit {
    #[serde(rename = "1")]
    V1(AuditRecord),
}

impl Versioned for AuditRecord {
    type Stored = StoredAudit;
    fn into_stored(self) -> StoredAudit {
        StoredAudit::V1(self)
    }
    fn from_stored(stored: StoredAudit) -> Self {
        match stored {
            StoredAudit::V1(r) => r,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Records written before issue 9 have no `scopes` / `rejected_at`: old grants read
    /// as inference-only (tightened on purpose), old vault records as not rejected.
    #[test]
    fn records_from_before_scopes_read_with_safe_defaults() {
        let grant = serde_json::json!({"v": "1",
            "id": GrantId::generate().to_string(), "user_id": UserId::generate().to_string(),
            "name": "app", "origin": null, "models": [], "state": "active",
            "secret_hash": "ab", "created_at": 1, "last_used_at": null, "revoked_at": null});
        let g = GrantRecord::from_stored(serde_json::from_value::<StoredGrant>(grant).unwrap());
        assert_eq!(g.scopes, vec![Scope::Inference]);

        let vault = serde_json::json!({"v": "1",
            "user_id": UserId::generate().to_string(), "key_id": KeyId::generate().to_string(),
            "sealed": "a.b.c.d.e", "kid": "k", "last4": "WXYZ", "created_at": 1,
            "last_validated_at": null});
        let v = VaultRecord::from_stored(serde_json::from_value::<StoredVault>(vault).unwrap());
        assert_eq!(v.rejected_at, None);
    }
}
