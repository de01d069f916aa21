//! THE store interface: everything keygate keeps, as one async trait that each backend
//! implements — sled embedded in the data dir (`sled_backend.rs`, the default) and
//! PostgreSQL shared by several nodes (`postgres/`). One conformance suite
//! (`tests/conformance/`) runs against both, so a behaviour the server relies on is a
//! behaviour of the interface, not of one backend.
//!
//! Contract every backend keeps (the suite checks each):
//! - records go in and come out in the shapes of [`crate::records`]; secrets stay what
//!   they are there (sealed JWEs, SHA-256 hashes): a backend never sees plaintext;
//! - every method that "atomically" does something does it in one transaction: two
//!   nodes racing on it cannot both win (`take_*` hand a record out once,
//!   `replace_*` compare and swap, `insert_*` refuse a taken credential id / a deleted
//!   person, `delete_passkey_unless_last` never removes the last one);
//! - a write is durable when its future resolves, except where a method says "not
//!   flushed" (sled batches those until [`StoreBackend::flush`]; PostgreSQL commits each);
//! - page cursors are opaque bytes that only the backend that made them understands,
//!   and a crafted one cannot leave the caller's range.

use std::collections::HashMap;
use std::sync::Arc;

use async_trait::async_trait;
use keygate_core::ids::{AdminKeyId, GrantId, PasskeyId, UserId};
use keygate_core::time::UnixTime;

use crate::StoreError;
use crate::audit::AuditQuery;
use crate::auth::{DeletePasskey, PasskeyInsert, SessionInsert};
use crate::backup::Snapshot;
use crate::records::{
    AdminKeyRecord, AuditRecord, CeremonyRecord, CodeRecord, GrantRecord, OperatorKeyRecord,
    PasskeyRecord, SessionRecord, UserRecord, VaultRecord,
};
use crate::store::GrantFilter;
use crate::sweep::Swept;
use crate::usage::{UsageCounts, UsageDelta, UsageRow};
use crate::{LimitAsk, LimitLease, LimitRefusal};
use keygate_core::policy::Spend;

/// A page of records and the cursor of the next page (`None`: this was the last).
pub type Page<T> = (Vec<T>, Option<Vec<u8>>);

/// A change applied to a grant inside [`StoreBackend::update_grant`]'s transaction.
/// May run more than once (a conflict re-runs it): it must only edit the record.
pub type GrantChange<'a> = &'a (dyn Fn(&mut GrantRecord) + Send + Sync);

/// Which backend a store is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BackendKind {
    Sled,
    Postgres,
}

/// One stored item, backend-neutral: what `keygate store copy` moves between backends.
/// [`StoreBackend::import`] writes each as it is (upsert by its key), so importing the
/// same entries twice leaves the same store (usage rows are set, not added).
#[derive(Clone, Debug, PartialEq)]
pub enum Entry {
    User(UserRecord),
    Vault(UserId, VaultRecord),
    OperatorKey(OperatorKeyRecord),
    Grant(GrantRecord),
    /// A grant's owner, kept after the grant is removed (usage outlives grants).
    GrantOwner(UserId, GrantId),
    Passkey(PasskeyRecord),
    /// A session under the SHA-256 (hex) of its cookie value.
    Session(String, SessionRecord),
    Ceremony(String, CeremonyRecord),
    /// A connect code under the SHA-256 (hex) of the code.
    Code(String, CodeRecord),
    Usage(UsageDelta),
    AdminKey(AdminKeyRecord),
    Audit(AuditRecord),
}

impl Entry {
    /// The kind's name, as `keygate store copy` counts them.
    pub fn kind(&self) -> &'static str {
        match self {
            Entry::User(_) => "users",
            Entry::Vault(..) => "vault",
            Entry::OperatorKey(_) => "operator_key",
            Entry::Grant(_) => "grants",
            Entry::GrantOwner(..) => "grant_owners",
            Entry::Passkey(_) => "passkeys",
            Entry::Session(..) => "sessions",
            Entry::Ceremony(..) => "ceremonies",
            Entry::Code(..) => "connect_codes",
            Entry::Usage(_) => "usage",
            Entry::AdminKey(_) => "admin_keys",
            Entry::Audit(_) => "audit",
        }
    }
}

impl Entry {
    /// What the entry is filed under in its kind: two entries with the same kind and
    /// key are two versions of one item (an import replaces one with the other).
    pub fn key(&self) -> String {
        match self {
            Entry::User(u) => u.id.to_string(),
            Entry::Vault(user, _) => user.to_string(),
            Entry::OperatorKey(_) => String::new(),
            Entry::Grant(g) => g.id.to_string(),
            Entry::GrantOwner(user, grant) => format!("{user}/{grant}"),
            Entry::Passkey(pk) => pk.id.to_string(),
            Entry::Session(hash, _) | Entry::Code(hash, _) => hash.clone(),
            Entry::Ceremony(id, _) => id.clone(),
            Entry::Usage(row) => format!("{}/{}/{}", row.grant_id, row.day, row.model),
            Entry::AdminKey(k) => k.id.to_string(),
            Entry::Audit(a) => a.id(),
        }
    }
}

/// How many entries of each kind a store holds (kind name → count).
pub type EntryCounts = HashMap<&'static str, u64>;

/// The store. Shared as [`crate::Store`] (an `Arc<dyn StoreBackend>`).
#[async_trait]
pub trait StoreBackend: Send + Sync + 'static {
    fn kind(&self) -> BackendKind;

    // --- the store itself --------------------------------------------------------

    /// The schema version this store is at (sled: its tree migrations; PostgreSQL:
    /// the last SQL migration applied).
    async fn schema_version(&self) -> Result<u32, StoreError>;
    /// Makes every write so far durable (security-relevant writes call this before
    /// answering).
    async fn flush(&self) -> Result<(), StoreError>;
    /// A cheap read that proves the store answers (`/readyz`).
    async fn ping(&self) -> Result<(), StoreError>;
    /// Every tree at one instant, for `keygate backup` (sled only: a PostgreSQL store
    /// is backed up with PostgreSQL's tools; `Unsupported` there).
    async fn snapshot(&self, now: UnixTime) -> Result<Snapshot, StoreError>;
    /// Everything stored, backend-neutral (see [`Entry`]).
    async fn export(&self) -> Result<Vec<Entry>, StoreError>;
    /// Writes every entry as it is (idempotent, see [`Entry`]).
    async fn import(&self, entries: &[Entry]) -> Result<(), StoreError>;

    // --- admin keys --------------------------------------------------------------

    async fn insert_admin_key(&self, key: &AdminKeyRecord) -> Result<(), StoreError>;
    async fn admin_key(&self, id: &AdminKeyId) -> Result<Option<AdminKeyRecord>, StoreError>;
    async fn admin_keys(&self) -> Result<Vec<AdminKeyRecord>, StoreError>;
    /// Oldest first (ties by id), after the cursor of the last key served.
    async fn admin_keys_page(
        &self,
        after: Option<&[u8]>,
        limit: usize,
    ) -> Result<Page<AdminKeyRecord>, StoreError>;
    async fn delete_admin_key(&self, id: &AdminKeyId) -> Result<bool, StoreError>;

    // --- people ------------------------------------------------------------------

    async fn insert_user(&self, user: &UserRecord) -> Result<(), StoreError>;
    async fn user(&self, id: &UserId) -> Result<Option<UserRecord>, StoreError>;
    async fn users(&self) -> Result<Vec<UserRecord>, StoreError>;
    /// In id order, after the cursor of the last person served.
    async fn users_page(
        &self,
        after: Option<&[u8]>,
        limit: usize,
    ) -> Result<Page<UserRecord>, StoreError>;
    /// Removes a person and everything of theirs (vault, grants, passkeys, sessions,
    /// their ceremonies), atomically; usage rows, owner records and audit entries stay.
    async fn delete_user(&self, user: &UserId) -> Result<bool, StoreError>;

    // --- vault -------------------------------------------------------------------

    async fn put_vault(&self, user: &UserId, record: &VaultRecord) -> Result<(), StoreError>;
    async fn vault(&self, user: &UserId) -> Result<Option<VaultRecord>, StoreError>;
    /// The proxy's lookup: the same record as [`StoreBackend::vault`], possibly from a
    /// cache that every vault write through this store keeps coherent.
    async fn vault_cached(&self, user: &UserId) -> Result<Option<Arc<VaultRecord>>, StoreError>;
    /// Compare-and-swap: replaces the record only if it is still exactly `old`.
    async fn replace_vault(
        &self,
        user: &UserId,
        old: &VaultRecord,
        new: &VaultRecord,
    ) -> Result<bool, StoreError>;
    async fn delete_vault(&self, user: &UserId) -> Result<bool, StoreError>;
    /// Every vault record with its person (the re-seal pass).
    async fn vault_entries(&self) -> Result<Vec<(UserId, VaultRecord)>, StoreError>;

    // --- the operator's key ------------------------------------------------------

    async fn put_operator_key(&self, record: &OperatorKeyRecord) -> Result<(), StoreError>;
    async fn operator_key(&self) -> Result<Option<OperatorKeyRecord>, StoreError>;
    /// Compare-and-swap, like [`StoreBackend::replace_vault`].
    async fn replace_operator_key(
        &self,
        old: &OperatorKeyRecord,
        new: &OperatorKeyRecord,
    ) -> Result<bool, StoreError>;
    async fn delete_operator_key(&self) -> Result<bool, StoreError>;

    // --- grants ------------------------------------------------------------------

    /// Stores a new grant and its owner record, only while the person exists
    /// (`NotFound { what: "user" }` otherwise).
    async fn insert_grant(&self, grant: &GrantRecord) -> Result<(), StoreError>;
    async fn grant(&self, id: &GrantId) -> Result<Option<GrantRecord>, StoreError>;
    /// The proxy's lookup: like [`StoreBackend::grant`], possibly cached; the cache is
    /// coherent with every write through this store and, for a shared store, with
    /// writes made by other nodes within the bound the backend documents.
    async fn grant_cached(&self, id: &GrantId) -> Result<Option<Arc<GrantRecord>>, StoreError>;
    /// Grants in id order that `filter` picks, after the cursor of the last one served.
    async fn grants_page(
        &self,
        filter: &GrantFilter,
        after: Option<&[u8]>,
        limit: usize,
    ) -> Result<Page<GrantRecord>, StoreError>;
    /// Every grant id `user` ever had, removed ones included, in id order.
    async fn grant_ids_ever(&self, user: &UserId) -> Result<Vec<GrantId>, StoreError>;
    /// The owner of every grant ever stored.
    async fn grant_owners(&self) -> Result<HashMap<GrantId, UserId>, StoreError>;
    /// A person's grants, oldest first.
    async fn grants_for_user(&self, user: &UserId) -> Result<Vec<GrantRecord>, StoreError>;
    /// Atomically applies `change`; the updated record, `None` if there is no such grant.
    async fn update_grant(
        &self,
        id: &GrantId,
        change: GrantChange<'_>,
    ) -> Result<Option<GrantRecord>, StoreError>;
    /// Marks a grant revoked and forgets a rotated-away secret.
    async fn revoke_grant(
        &self,
        id: &GrantId,
        now: UnixTime,
    ) -> Result<Option<GrantRecord>, StoreError>;
    /// Removes a grant (its owner record stays). Whether it existed.
    async fn delete_grant(&self, id: &GrantId) -> Result<bool, StoreError>;
    /// Records `last_used_at` (never moving it backwards) for a batch of grants.
    async fn touch_grants(&self, used: &[(GrantId, UnixTime)]) -> Result<(), StoreError>;

    // --- passkeys ----------------------------------------------------------------

    /// A new person with their first passkey, both or neither.
    async fn insert_user_with_passkey(
        &self,
        user: &UserRecord,
        pk: &PasskeyRecord,
    ) -> Result<PasskeyInsert, StoreError>;
    async fn insert_passkey(&self, pk: &PasskeyRecord) -> Result<PasskeyInsert, StoreError>;
    /// Overwrites an existing passkey (its counter, its last use).
    async fn put_passkey(&self, pk: &PasskeyRecord) -> Result<(), StoreError>;
    async fn passkey(&self, id: &PasskeyId) -> Result<Option<PasskeyRecord>, StoreError>;
    async fn passkey_by_credential(
        &self,
        credential_id_b64: &str,
    ) -> Result<Option<PasskeyRecord>, StoreError>;
    async fn passkeys_for_user(&self, user: &UserId) -> Result<Vec<PasskeyRecord>, StoreError>;
    async fn delete_passkey_unless_last(
        &self,
        pk: &PasskeyRecord,
    ) -> Result<DeletePasskey, StoreError>;

    // --- sessions ----------------------------------------------------------------

    /// Stores a session, ending the person's oldest ones beyond `cap`.
    async fn insert_session(
        &self,
        hash: &str,
        s: &SessionRecord,
        cap: usize,
    ) -> Result<SessionInsert, StoreError>;
    async fn session(&self, hash: &str) -> Result<Option<SessionRecord>, StoreError>;
    async fn put_session(&self, hash: &str, s: &SessionRecord) -> Result<(), StoreError>;
    async fn sessions_for_user(
        &self,
        user: &UserId,
    ) -> Result<Vec<(String, SessionRecord)>, StoreError>;
    async fn delete_session(&self, hash: &str) -> Result<(), StoreError>;
    /// Ends every session of the person but `keep`; how many ended.
    async fn delete_sessions_for_user(
        &self,
        user: &UserId,
        keep: Option<&str>,
    ) -> Result<usize, StoreError>;

    // --- ceremonies and connect codes (each handed out once) ----------------------

    async fn put_ceremony(&self, id: &str, c: &CeremonyRecord) -> Result<(), StoreError>;
    /// Removes and returns a ceremony: of two callers racing, one gets it.
    async fn take_ceremony(&self, id: &str) -> Result<Option<CeremonyRecord>, StoreError>;
    /// Ceremonies not tied to a signed-in person (the anonymous cap counts these).
    async fn anonymous_ceremony_count(&self) -> Result<usize, StoreError>;
    async fn ceremony_count(&self) -> Result<usize, StoreError>;
    async fn put_code(&self, hash: &str, c: &CodeRecord) -> Result<(), StoreError>;
    /// Removes and returns a connect code: of two callers racing, one gets it.
    async fn take_code(&self, hash: &str) -> Result<Option<CodeRecord>, StoreError>;
    async fn code_count(&self) -> Result<usize, StoreError>;
    /// Removes every session, ceremony and code expired at `now` (sessions: `idle`
    /// seconds after last use or `absolute` after sign-in).
    async fn sweep_expired(
        &self,
        now: UnixTime,
        idle: u64,
        absolute: u64,
    ) -> Result<Swept, StoreError>;

    // --- usage -------------------------------------------------------------------

    /// Adds every delta to its row (grant, day, model), all or nothing.
    async fn add_usage(&self, deltas: &[UsageDelta]) -> Result<(), StoreError>;
    /// A grant's rows for days `from_day..=to_day`, in day then model order.
    async fn usage_rows(
        &self,
        grant: &GrantId,
        from_day: u32,
        to_day: u32,
    ) -> Result<Vec<UsageRow>, StoreError>;
    /// Every grant's rows for days `from_day..=to_day`.
    async fn usage_rows_all(
        &self,
        from_day: u32,
        to_day: u32,
    ) -> Result<Vec<(GrantId, UsageRow)>, StoreError>;
    /// The sum of a grant's rows for days `from_day..=to_day` (one model's, if given).
    async fn usage_total(
        &self,
        grant: &GrantId,
        from_day: u32,
        to_day: u32,
        model: Option<&str>,
    ) -> Result<UsageCounts, StoreError>;

    // --- audit -------------------------------------------------------------------

    /// Appends an entry, numbering it (`seq`); returns it as stored. Not flushed.
    async fn append_audit(&self, record: AuditRecord) -> Result<AuditRecord, StoreError>;
    /// Newest first, after the cursor of the last entry served.
    async fn audit_page(
        &self,
        q: &AuditQuery,
        after: Option<&[u8]>,
        limit: usize,
    ) -> Result<Page<AuditRecord>, StoreError>;
    /// Removes entries older than `cutoff_ns` (a configured retention); how many.
    async fn sweep_audit_before(&self, cutoff_ns: u64) -> Result<usize, StoreError>;

    // --- limits shared by every node ---------------------------------------------
    // PostgreSQL keeps every limited grant's windows (rpm/tpm buckets, requests in
    // flight, budget reservations and spend: `limit_windows`) so that all nodes share
    // them, one statement per acquire and per settle. A sled store has one node, whose
    // limiter keeps them in memory (keygate-server's `limiter.rs`): there these answer
    // `Unsupported`.

    /// Decides a request under its limits and takes its lease, both windows (the
    /// grant's and its model's overrides) or neither; `Ok(Err(_))` is a refusal. (An
    /// `update_grant` that changes a grant's limits makes its windows reload their
    /// spend: spend made while a budget was absent was in no window.)
    async fn limits_acquire(
        &self,
        ask: &LimitAsk<'_>,
    ) -> Result<Result<LimitLease, LimitRefusal>, StoreError>;
    /// Ends a lease with what the answer really used.
    async fn limits_settle(
        &self,
        lease: &LimitLease,
        actual: Spend,
        now_ms: u64,
    ) -> Result<(), StoreError>;
    /// The grant's requests in flight and what they reserve against its own budget.
    async fn limits_held(&self, grant: &GrantId) -> Result<(u32, Spend), StoreError>;
    /// Marks this node (this store handle) alive for `ttl` more — an error when that
    /// could not be recorded — and starts, in the background (one at a time, logged),
    /// the reclaim of the leases of nodes that are not: killed, or cut off from the
    /// database, with requests in flight; each is settled as if it had spent all it
    /// reserved. A node calls it well within `ttl`, or its own leases are reclaimed
    /// while its requests still run.
    async fn limits_heartbeat(&self, ttl: std::time::Duration) -> Result<(), StoreError>;
}
