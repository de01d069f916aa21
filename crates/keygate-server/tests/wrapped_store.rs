//! The server over sled behind a wrapper that behaves as a PostgreSQL store would where
//! the two differ: it says it is PostgreSQL and refuses `snapshot` as that backend
//! does (`StoreError::Unsupported`), and its usage writes can take time (a network
//! round trip, an await a task can be stopped at).
//!
//! - `GET /admin/backup` answers 501 `unsupported_on_this_store` through the real
//!   routes, extractors and error mapping, and everything else keeps working;
//! - stopping the usage flusher while it writes loses no counter.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use actix_web::{App, test, web};
use async_trait::async_trait;
use keygate_core::ids::{AdminKeyId, GrantId, PasskeyId, UserId};
use keygate_core::keyring::Keyring;
use keygate_core::policy::Spend;
use keygate_core::time::UnixTime;
use keygate_server::master_keys::MasterKeys;
use keygate_server::state::AppState;
use keygate_server::{Config, keyfile::KeySource};
use keygate_store::{
    AdminKeyRecord, AuditQuery, AuditRecord, BackendKind, CeremonyRecord, CodeRecord,
    DeletePasskey, Entry, GrantChange, GrantFilter, GrantRecord, LimitAsk, LimitLease,
    LimitRefusal, OperatorKeyRecord, Page, PasskeyInsert, PasskeyRecord, SessionInsert,
    SessionRecord, Snapshot, Store, StoreBackend, StoreError, StoreOptions, Swept, UsageCounts,
    UsageDelta, UsageRow, UserRecord, VaultRecord,
};

const ADMIN_KEY: &str = "unsupported-store-test-admin-key-0123456789";

/// sled, answering as a store without snapshots, whose `add_usage` waits `slow_usage`
/// before writing.
struct Wrapped(Store, Duration);

#[async_trait]
impl StoreBackend for Wrapped {
    fn kind(&self) -> BackendKind {
        BackendKind::Postgres
    }

    async fn snapshot(&self, _now: UnixTime) -> Result<Snapshot, StoreError> {
        Err(StoreError::Unsupported(keygate_store::PG_BACKUP))
    }

    async fn schema_version(&self) -> Result<u32, StoreError> {
        self.0.schema_version().await
    }

    async fn flush(&self) -> Result<(), StoreError> {
        self.0.flush().await
    }

    async fn ping(&self) -> Result<(), StoreError> {
        self.0.ping().await
    }

    async fn export(&self) -> Result<Vec<Entry>, StoreError> {
        self.0.export().await
    }

    async fn import(&self, entries: &[Entry]) -> Result<(), StoreError> {
        self.0.import(entries).await
    }

    async fn insert_admin_key(&self, key: &AdminKeyRecord) -> Result<(), StoreError> {
        self.0.insert_admin_key(key).await
    }

    async fn admin_key(&self, id: &AdminKeyId) -> Result<Option<AdminKeyRecord>, StoreError> {
        self.0.admin_key(id).await
    }

    async fn admin_keys(&self) -> Result<Vec<AdminKeyRecord>, StoreError> {
        self.0.admin_keys().await
    }

    async fn admin_keys_page(
        &self,
        after: Option<&[u8]>,
        limit: usize,
    ) -> Result<Page<AdminKeyRecord>, StoreError> {
        self.0.admin_keys_page(after, limit).await
    }

    async fn delete_admin_key(&self, id: &AdminKeyId) -> Result<bool, StoreError> {
        self.0.delete_admin_key(id).await
    }

    async fn insert_user(&self, user: &UserRecord) -> Result<(), StoreError> {
        self.0.insert_user(user).await
    }

    async fn user(&self, id: &UserId) -> Result<Option<UserRecord>, StoreError> {
        self.0.user(id).await
    }

    async fn users(&self) -> Result<Vec<UserRecord>, StoreError> {
        self.0.users().await
    }

    async fn users_page(
        &self,
        after: Option<&[u8]>,
        limit: usize,
    ) -> Result<Page<UserRecord>, StoreError> {
        self.0.users_page(after, limit).await
    }

    async fn delete_user(&self, user: &UserId) -> Result<bool, StoreError> {
        self.0.delete_user(user).await
    }

    async fn put_vault(&self, user: &UserId, record: &VaultRecord) -> Result<(), StoreError> {
        self.0.put_vault(user, record).await
    }

    async fn vault(&self, user: &UserId) -> Result<Option<VaultRecord>, StoreError> {
        self.0.vault(user).await
    }

    async fn vault_cached(&self, user: &UserId) -> Result<Option<Arc<VaultRecord>>, StoreError> {
        self.0.vault_cached(user).await
    }

    async fn replace_vault(
        &self,
        user: &UserId,
        old: &VaultRecord,
        new: &VaultRecord,
    ) -> Result<bool, StoreError> {
        self.0.replace_vault(user, old, new).await
    }

    async fn delete_vault(&self, user: &UserId) -> Result<bool, StoreError> {
        self.0.delete_vault(user).await
    }

    async fn vault_entries(&self) -> Result<Vec<(UserId, VaultRecord)>, StoreError> {
        self.0.vault_entries().await
    }

    async fn put_operator_key(&self, record: &OperatorKeyRecord) -> Result<(), StoreError> {
        self.0.put_operator_key(record).await
    }

    async fn operator_key(&self) -> Result<Option<OperatorKeyRecord>, StoreError> {
        self.0.operator_key().await
    }

    async fn replace_operator_key(
        &self,
        old: &OperatorKeyRecord,
        new: &OperatorKeyRecord,
    ) -> Result<bool, StoreError> {
        self.0.replace_operator_key(old, new).await
    }

    async fn delete_operator_key(&self) -> Result<bool, StoreError> {
        self.0.delete_operator_key().await
    }

    async fn insert_grant(&self, grant: &GrantRecord) -> Result<(), StoreError> {
        self.0.insert_grant(grant).await
    }

    async fn grant(&self, id: &GrantId) -> Result<Option<GrantRecord>, StoreError> {
        self.0.grant(id).await
    }

    async fn grant_cached(&self, id: &GrantId) -> Result<Option<Arc<GrantRecord>>, StoreError> {
        self.0.grant_cached(id).await
    }

    async fn grants_page(
        &self,
        filter: &GrantFilter,
        after: Option<&[u8]>,
        limit: usize,
    ) -> Result<Page<GrantRecord>, StoreError> {
        self.0.grants_page(filter, after, limit).await
    }

    async fn grant_ids_ever(&self, user: &UserId) -> Result<Vec<GrantId>, StoreError> {
        self.0.grant_ids_ever(user).await
    }

    async fn grant_owners(&self) -> Result<HashMap<GrantId, UserId>, StoreError> {
        self.0.grant_owners().await
    }

    async fn grants_for_user(&self, user: &UserId) -> Result<Vec<GrantRecord>, StoreError> {
        self.0.grants_for_user(user).await
    }

    async fn update_grant(
        &self,
        id: &GrantId,
        change: GrantChange<'_>,
    ) -> Result<Option<GrantRecord>, StoreError> {
        self.0.update_grant(id, change).await
    }

    async fn revoke_grant(
        &self,
        id: &GrantId,
        now: UnixTime,
    ) -> Result<Option<GrantRecord>, StoreError> {
        self.0.revoke_grant(id, now).await
    }

    async fn delete_grant(&self, id: &GrantId) -> Result<bool, StoreError> {
        self.0.delete_grant(id).await
    }

    async fn touch_grants(&self, used: &[(GrantId, UnixTime)]) -> Result<(), StoreError> {
        self.0.touch_grants(used).await
    }

    async fn insert_user_with_passkey(
        &self,
        user: &UserRecord,
        pk: &PasskeyRecord,
    ) -> Result<PasskeyInsert, StoreError> {
        self.0.insert_user_with_passkey(user, pk).await
    }

    async fn insert_passkey(&self, pk: &PasskeyRecord) -> Result<PasskeyInsert, StoreError> {
        self.0.insert_passkey(pk).await
    }

    async fn put_passkey(&self, pk: &PasskeyRecord) -> Result<(), StoreError> {
        self.0.put_passkey(pk).await
    }

    async fn passkey(&self, id: &PasskeyId) -> Result<Option<PasskeyRecord>, StoreError> {
        self.0.passkey(id).await
    }

    async fn passkey_by_credential(
        &self,
        credential_id_b64: &str,
    ) -> Result<Option<PasskeyRecord>, StoreError> {
        self.0.passkey_by_credential(credential_id_b64).await
    }

    async fn passkeys_for_user(&self, user: &UserId) -> Result<Vec<PasskeyRecord>, StoreError> {
        self.0.passkeys_for_user(user).await
    }

    async fn delete_passkey_unless_last(
        &self,
        pk: &PasskeyRecord,
    ) -> Result<DeletePasskey, StoreError> {
        self.0.delete_passkey_unless_last(pk).await
    }

    async fn insert_session(
        &self,
        hash: &str,
        s: &SessionRecord,
        cap: usize,
    ) -> Result<SessionInsert, StoreError> {
        self.0.insert_session(hash, s, cap).await
    }

    async fn session(&self, hash: &str) -> Result<Option<SessionRecord>, StoreError> {
        self.0.session(hash).await
    }

    async fn put_session(&self, hash: &str, s: &SessionRecord) -> Result<(), StoreError> {
        self.0.put_session(hash, s).await
    }

    async fn sessions_for_user(
        &self,
        user: &UserId,
    ) -> Result<Vec<(String, SessionRecord)>, StoreError> {
        self.0.sessions_for_user(user).await
    }

    async fn delete_session(&self, hash: &str) -> Result<(), StoreError> {
        self.0.delete_session(hash).await
    }

    async fn delete_sessions_for_user(
        &self,
        user: &UserId,
        keep: Option<&str>,
    ) -> Result<usize, StoreError> {
        self.0.delete_sessions_for_user(user, keep).await
    }

    async fn put_ceremony(&self, id: &str, c: &CeremonyRecord) -> Result<(), StoreError> {
        self.0.put_ceremony(id, c).await
    }

    async fn take_ceremony(&self, id: &str) -> Result<Option<CeremonyRecord>, StoreError> {
        self.0.take_ceremony(id).await
    }

    async fn anonymous_ceremony_count(&self) -> Result<usize, StoreError> {
        self.0.anonymous_ceremony_count().await
    }

    async fn ceremony_count(&self) -> Result<usize, StoreError> {
        self.0.ceremony_count().await
    }

    async fn put_code(&self, hash: &str, c: &CodeRecord) -> Result<(), StoreError> {
        self.0.put_code(hash, c).await
    }

    async fn take_code(&self, hash: &str) -> Result<Option<CodeRecord>, StoreError> {
        self.0.take_code(hash).await
    }

    async fn code_count(&self) -> Result<usize, StoreError> {
        self.0.code_count().await
    }

    async fn sweep_expired(
        &self,
        now: UnixTime,
        idle: u64,
        absolute: u64,
    ) -> Result<Swept, StoreError> {
        self.0.sweep_expired(now, idle, absolute).await
    }

    async fn add_usage(&self, deltas: &[UsageDelta]) -> Result<(), StoreError> {
        tokio::time::sleep(self.1).await;
        self.0.add_usage(deltas).await
    }

    async fn usage_rows(
        &self,
        grant: &GrantId,
        from_day: u32,
        to_day: u32,
    ) -> Result<Vec<UsageRow>, StoreError> {
        self.0.usage_rows(grant, from_day, to_day).await
    }

    async fn usage_rows_all(
        &self,
        from_day: u32,
        to_day: u32,
    ) -> Result<Vec<(GrantId, UsageRow)>, StoreError> {
        self.0.usage_rows_all(from_day, to_day).await
    }

    async fn usage_total(
        &self,
        grant: &GrantId,
        from_day: u32,
        to_day: u32,
        model: Option<&str>,
    ) -> Result<UsageCounts, StoreError> {
        self.0.usage_total(grant, from_day, to_day, model).await
    }

    async fn append_audit(&self, record: AuditRecord) -> Result<AuditRecord, StoreError> {
        self.0.append_audit(record).await
    }

    async fn audit_page(
        &self,
        q: &AuditQuery,
        after: Option<&[u8]>,
        limit: usize,
    ) -> Result<Page<AuditRecord>, StoreError> {
        self.0.audit_page(q, after, limit).await
    }

    async fn sweep_audit_before(&self, cutoff_ns: u64) -> Result<usize, StoreError> {
        self.0.sweep_audit_before(cutoff_ns).await
    }

    async fn limits_acquire(
        &self,
        ask: &LimitAsk<'_>,
    ) -> Result<Result<LimitLease, LimitRefusal>, StoreError> {
        self.0.limits_acquire(ask).await
    }

    async fn limits_settle(
        &self,
        lease: &LimitLease,
        actual: Spend,
        now_ms: u64,
    ) -> Result<(), StoreError> {
        self.0.limits_settle(lease, actual, now_ms).await
    }

    async fn limits_held(&self, grant: &GrantId) -> Result<(u32, Spend), StoreError> {
        self.0.limits_held(grant).await
    }

    async fn limits_heartbeat(&self, ttl: std::time::Duration) -> Result<(), StoreError> {
        self.0.limits_heartbeat(ttl).await
    }
}

#[actix_web::test]
async fn a_backup_of_a_store_without_snapshots_is_501_and_the_rest_works() {
    let dir = tempfile::tempdir().unwrap();
    let sled = Store::open(dir.path(), &StoreOptions::default()).unwrap();
    let store = Store::from_backend(Arc::new(Wrapped(sled, Duration::ZERO)));
    let config = Config::for_tests(dir.path(), "http://127.0.0.1:9/v1", ADMIN_KEY).unwrap();
    let client = keygate_server::upstream::client(&config).unwrap();
    let keyring = MasterKeys::new(Keyring::generate().unwrap(), &KeySource::Given);
    let state = AppState::new(config, store, keyring, client).await.unwrap();
    let app = test::init_service(
        App::new()
            .app_data(web::Data::new(state))
            .configure(|cfg| keygate_server::routes::configure(cfg, 64 * 1024)),
    )
    .await;
    let admin = |path: &str| {
        test::TestRequest::get()
            .uri(path)
            .insert_header(("authorization", format!("Bearer {ADMIN_KEY}")))
            .to_request()
    };

    let res = test::call_service(&app, admin("/admin/backup")).await;
    assert_eq!(res.status().as_u16(), 501);
    assert_eq!(res.headers().get("x-should-retry").unwrap(), "false");
    let body: serde_json::Value = test::read_body_json(res).await;
    assert_eq!(body["error"]["code"], "unsupported_on_this_store");
    let message = body["error"]["message"].as_str().unwrap();
    assert!(message.contains("pg_dump"), "{message}");
    assert!(message.contains("master keyring"), "{message}");

    // The store answers everything else: the admin API reads it, /readyz pings it.
    let res = test::call_service(&app, admin("/admin/users")).await;
    assert_eq!(res.status().as_u16(), 200);
    let res = test::call_service(&app, test::TestRequest::get().uri("/readyz").to_request()).await;
    assert_eq!(res.status().as_u16(), 200);
    // No backup was recorded as taken.
    let res = test::call_service(&app, admin("/admin/audit")).await;
    assert_eq!(res.status().as_u16(), 200);
    let audit: serde_json::Value = test::read_body_json(res).await;
    assert!(
        !audit.to_string().contains("store.backed_up"),
        "a refused backup was audited: {audit}"
    );
}

/// The flusher is stopped while a batch is on its way to the store (drained from the
/// pending counters, the write awaiting): the batch still lands, and what was recorded
/// meanwhile is written by the last write at shutdown. Aborting the flusher there would
/// drop the batch.
#[tokio::test]
async fn stopping_the_usage_flusher_mid_write_loses_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let sled = Store::open(dir.path(), &StoreOptions::default()).unwrap();
    let store = Store::from_backend(Arc::new(Wrapped(sled, Duration::from_millis(300))));
    let metrics = Arc::new(
        keygate_server::metrics::Metrics::new(&keygate_core::price::PriceTable::builtin()).unwrap(),
    );
    let acc = keygate_server::accounting::Accounting::default();
    let g = GrantId::generate();
    let one = UsageCounts {
        requests: 1,
        prompt_tokens: 10,
        ..UsageCounts::default()
    };
    acc.record(&g, 7, "m", &one);
    let (stop, stopping) = tokio::sync::watch::channel(false);
    let flusher = acc.spawn_flusher(store.clone(), Duration::from_millis(10), metrics, stopping);
    // The first tick is at once: the batch is drained and its write is waiting.
    tokio::time::sleep(Duration::from_millis(100)).await;
    acc.record(&g, 7, "m", &one);
    stop.send(true).unwrap();
    flusher.await.unwrap();
    assert_eq!(
        store
            .usage_total(&g, 0, u32::MAX, None)
            .await
            .unwrap()
            .requests,
        1,
        "the batch in flight was written"
    );
    // Shutdown's last write takes the rest.
    assert!(acc.write_to(&store).await.unwrap());
    let total = store.usage_total(&g, 0, u32::MAX, None).await.unwrap();
    assert_eq!((total.requests, total.prompt_tokens), (2, 20));
}
