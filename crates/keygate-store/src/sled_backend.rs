//! The sled backend: [`SledStore`]'s methods (synchronous: sled answers from memory or
//! its own page cache without waiting on anything) behind the async [`StoreBackend`].
//! Each trait method calls the inherent method of the same name — `SledStore::name`
//! resolves to the inherent one, which is where the sled code lives (`store.rs`,
//! `auth.rs`, `audit.rs`, `usage.rs`, `sweep.rs`, `backup.rs`, `export.rs`).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use keygate_core::ids::{AdminKeyId, GrantId, PasskeyId, UserId};
use keygate_core::time::UnixTime;

use crate::{LimitAsk, LimitLease, LimitRefusal, StoreError};
use keygate_core::policy::Spend;

/// What sled does not do (one node's limits live in its memory).
const SHARED_LIMITS: &str = "limits shared across nodes";
use crate::api::{BackendKind, Entry, GrantChange, Page, StoreBackend};
use crate::audit::AuditQuery;
use crate::auth::{DeletePasskey, PasskeyInsert, SessionInsert};
use crate::backup::Snapshot;
use crate::records::{
    AdminKeyRecord, AuditRecord, CeremonyRecord, CodeRecord, GrantRecord, OperatorKeyRecord,
    PasskeyRecord, SessionRecord, UserRecord, VaultRecord,
};
use crate::store::{GrantFilter, SledStore};
use crate::sweep::Swept;
use crate::usage::{UsageCounts, UsageDelta, UsageRow};

/// Writes `impl StoreBackend for SledStore` with one forwarding method per line, so
/// the list reads like the trait and cannot forward to the wrong method.
macro_rules! forward {
    ($( fn $name:ident(&self $(, $arg:ident: $ty:ty)*) -> $ret:ty; )*) => {
        #[async_trait]
        impl StoreBackend for SledStore {
            fn kind(&self) -> BackendKind {
                BackendKind::Sled
            }

            async fn flush(&self) -> Result<(), StoreError> {
                SledStore::flush(self).await
            }

            // One node: its limiter keeps the windows in memory (see api.rs).
            async fn limits_acquire(
                &self,
                _ask: &LimitAsk<'_>,
            ) -> Result<Result<LimitLease, LimitRefusal>, StoreError> {
                Err(StoreError::Unsupported(SHARED_LIMITS))
            }

            async fn limits_settle(
                &self,
                _lease: &LimitLease,
                _actual: Spend,
                _now_ms: u64,
            ) -> Result<(), StoreError> {
                Err(StoreError::Unsupported(SHARED_LIMITS))
            }

            async fn limits_held(&self, _grant: &GrantId) -> Result<(u32, Spend), StoreError> {
                Err(StoreError::Unsupported(SHARED_LIMITS))
            }

            async fn limits_heartbeat(&self, _ttl: Duration) -> Result<(), StoreError> {
                Err(StoreError::Unsupported(SHARED_LIMITS))
            }

            $( async fn $name(&self $(, $arg: $ty)*) -> $ret {
                SledStore::$name(self $(, $arg)*)
            } )*
        }
    };
}

forward! {
    fn schema_version(&self) -> Result<u32, StoreError>;
    fn ping(&self) -> Result<(), StoreError>;
    fn snapshot(&self, now: UnixTime) -> Result<Snapshot, StoreError>;
    fn export(&self) -> Result<Vec<Entry>, StoreError>;
    fn import(&self, entries: &[Entry]) -> Result<(), StoreError>;

    fn insert_admin_key(&self, key: &AdminKeyRecord) -> Result<(), StoreError>;
    fn admin_key(&self, id: &AdminKeyId) -> Result<Option<AdminKeyRecord>, StoreError>;
    fn admin_keys(&self) -> Result<Vec<AdminKeyRecord>, StoreError>;
    fn admin_keys_page(&self, after: Option<&[u8]>, limit: usize) -> Result<Page<AdminKeyRecord>, StoreError>;
    fn delete_admin_key(&self, id: &AdminKeyId) -> Result<bool, StoreError>;

    fn insert_user(&self, user: &UserRecord) -> Result<(), StoreError>;
    fn user(&self, id: &UserId) -> Result<Option<UserRecord>, StoreError>;
    fn users(&self) -> Result<Vec<UserRecord>, StoreError>;
    fn users_page(&self, after: Option<&[u8]>, limit: usize) -> Result<Page<UserRecord>, StoreError>;
    fn delete_user(&self, user: &UserId) -> Result<bool, StoreError>;

    fn put_vault(&self, user: &UserId, record: &VaultRecord) -> Result<(), StoreError>;
    fn vault(&self, user: &UserId) -> Result<Option<VaultRecord>, StoreError>;
    fn vault_cached(&self, user: &UserId) -> Result<Option<Arc<VaultRecord>>, StoreError>;
    fn replace_vault(&self, user: &UserId, old: &VaultRecord, new: &VaultRecord) -> Result<bool, StoreError>;
    fn delete_vault(&self, user: &UserId) -> Result<bool, StoreError>;
    fn vault_entries(&self) -> Result<Vec<(UserId, VaultRecord)>, StoreError>;

    fn put_operator_key(&self, record: &OperatorKeyRecord) -> Result<(), StoreError>;
    fn operator_key(&self) -> Result<Option<OperatorKeyRecord>, StoreError>;
    fn replace_operator_key(&self, old: &OperatorKeyRecord, new: &OperatorKeyRecord) -> Result<bool, StoreError>;
    fn delete_operator_key(&self) -> Result<bool, StoreError>;

    fn insert_grant(&self, grant: &GrantRecord) -> Result<(), StoreError>;
    fn grant(&self, id: &GrantId) -> Result<Option<GrantRecord>, StoreError>;
    fn grant_cached(&self, id: &GrantId) -> Result<Option<Arc<GrantRecord>>, StoreError>;
    fn grants_page(&self, filter: &GrantFilter, after: Option<&[u8]>, limit: usize) -> Result<Page<GrantRecord>, StoreError>;
    fn grant_ids_ever(&self, user: &UserId) -> Result<Vec<GrantId>, StoreError>;
    fn grant_owners(&self) -> Result<HashMap<GrantId, UserId>, StoreError>;
    fn grants_for_user(&self, user: &UserId) -> Result<Vec<GrantRecord>, StoreError>;
    fn update_grant(&self, id: &GrantId, change: GrantChange<'_>) -> Result<Option<GrantRecord>, StoreError>;
    fn revoke_grant(&self, id: &GrantId, now: UnixTime) -> Result<Option<GrantRecord>, StoreError>;
    fn delete_grant(&self, id: &GrantId) -> Result<bool, StoreError>;
    fn touch_grants(&self, used: &[(GrantId, UnixTime)]) -> Result<(), StoreError>;

    fn insert_user_with_passkey(&self, user: &UserRecord, pk: &PasskeyRecord) -> Result<PasskeyInsert, StoreError>;
    fn insert_passkey(&self, pk: &PasskeyRecord) -> Result<PasskeyInsert, StoreError>;
    fn put_passkey(&self, pk: &PasskeyRecord) -> Result<(), StoreError>;
    fn passkey(&self, id: &PasskeyId) -> Result<Option<PasskeyRecord>, StoreError>;
    fn passkey_by_credential(&self, credential_id_b64: &str) -> Result<Option<PasskeyRecord>, StoreError>;
    fn passkeys_for_user(&self, user: &UserId) -> Result<Vec<PasskeyRecord>, StoreError>;
    fn delete_passkey_unless_last(&self, pk: &PasskeyRecord) -> Result<DeletePasskey, StoreError>;

    fn insert_session(&self, hash: &str, s: &SessionRecord, cap: usize) -> Result<SessionInsert, StoreError>;
    fn session(&self, hash: &str) -> Result<Option<SessionRecord>, StoreError>;
    fn put_session(&self, hash: &str, s: &SessionRecord) -> Result<(), StoreError>;
    fn sessions_for_user(&self, user: &UserId) -> Result<Vec<(String, SessionRecord)>, StoreError>;
    fn delete_session(&self, hash: &str) -> Result<(), StoreError>;
    fn delete_sessions_for_user(&self, user: &UserId, keep: Option<&str>) -> Result<usize, StoreError>;

    fn put_ceremony(&self, id: &str, c: &CeremonyRecord) -> Result<(), StoreError>;
    fn take_ceremony(&self, id: &str) -> Result<Option<CeremonyRecord>, StoreError>;
    fn anonymous_ceremony_count(&self) -> Result<usize, StoreError>;
    fn ceremony_count(&self) -> Result<usize, StoreError>;
    fn put_code(&self, hash: &str, c: &CodeRecord) -> Result<(), StoreError>;
    fn take_code(&self, hash: &str) -> Result<Option<CodeRecord>, StoreError>;
    fn code_count(&self) -> Result<usize, StoreError>;
    fn sweep_expired(&self, now: UnixTime, idle: u64, absolute: u64) -> Result<Swept, StoreError>;

    fn add_usage(&self, deltas: &[UsageDelta]) -> Result<(), StoreError>;
    fn usage_rows(&self, grant: &GrantId, from_day: u32, to_day: u32) -> Result<Vec<UsageRow>, StoreError>;
    fn usage_rows_all(&self, from_day: u32, to_day: u32) -> Result<Vec<(GrantId, UsageRow)>, StoreError>;
    fn usage_total(&self, grant: &GrantId, from_day: u32, to_day: u32, model: Option<&str>) -> Result<UsageCounts, StoreError>;

    fn append_audit(&self, record: AuditRecord) -> Result<AuditRecord, StoreError>;
    fn audit_page(&self, q: &AuditQuery, after: Option<&[u8]>, limit: usize) -> Result<Page<AuditRecord>, StoreError>;
    fn sweep_audit_before(&self, cutoff_ns: u64) -> Result<usize, StoreError>;
}
