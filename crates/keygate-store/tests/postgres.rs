//! What only the PostgreSQL backend has: SQL migrations applied once by nodes starting
//! together, pending ones reported, a changed file refused; no plaintext secret in any
//! table; errors that never carry a bound value. (Every interface method's behaviour
//! is the conformance suite's, run against both backends.)
//!
//! Needs a server: `KG_TEST_PG_URL` (a maintenance URL; `tests/lib/postgres.sh`
//! starts one and sets it). Each test makes its own database. Without the variable the
//! tests skip with a line, unless `KG_REQUIRE_PG=1`: then they fail.

// Integration-test helpers are test code too; clippy only exempts #[test] fns.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::print_stderr
)]

use std::sync::atomic::{AtomicU32, Ordering};

use keygate_core::ids::{AdminKeyId, GrantId, KeyId, PasskeyId, UserId};
use keygate_core::keyring::Keyring;
use keygate_core::scope::Scope;
use keygate_core::secret::{OpenAiKey, sha256_hex};
use keygate_core::vault::{Binding, seal};
use keygate_migrations::sql::MIGRATIONS;
use keygate_store::{
    AdminKeyRecord, Entry, GrantRecord, GrantState, PasskeyRecord, SessionRecord, Store,
    StoreError, StoreOptions, UserRecord, VaultRecord, postgres_pending_migrations,
};
use tokio_postgres::NoTls;

/// A fresh, empty database on the test server; dropped when this goes out of scope
/// (best effort, on a thread of its own: drop cannot wait on the runtime).
struct TestDb {
    admin_url: String,
    name: String,
    url: String,
}

impl TestDb {
    /// `None` (after printing why) when no server is configured and none is required.
    async fn create(test: &str) -> Option<TestDb> {
        let Ok(admin_url) = std::env::var("KG_TEST_PG_URL") else {
            if std::env::var("KG_REQUIRE_PG").as_deref() == Ok("1") {
                panic!("KG_REQUIRE_PG=1 but KG_TEST_PG_URL is not set");
            }
            eprintln!("skipping {test}: KG_TEST_PG_URL is not set (tests/lib/postgres.sh)");
            return None;
        };
        static N: AtomicU32 = AtomicU32::new(0);
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .subsec_nanos();
        let name = format!(
            "kg_pg_{}_{}_{}",
            std::process::id(),
            nanos,
            N.fetch_add(1, Ordering::Relaxed)
        );
        let client = admin(&admin_url).await;
        client
            .batch_execute(&format!("CREATE DATABASE {name}"))
            .await
            .unwrap();
        let (base, _) = admin_url
            .split('?')
            .next()
            .unwrap()
            .rsplit_once('/')
            .unwrap();
        let url = format!("{base}/{name}");
        Some(TestDb {
            admin_url,
            name,
            url,
        })
    }

    /// A plain client on the test database itself (for looking behind the store).
    async fn client(&self) -> tokio_postgres::Client {
        admin(&self.url).await
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        let (url, name) = (self.admin_url.clone(), self.name.clone());
        let _ = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async {
                admin(&url)
                    .await
                    .batch_execute(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
                    .await
            })
        })
        .join();
    }
}

async fn admin(url: &str) -> tokio_postgres::Client {
    let (client, conn) = tokio_postgres::connect(url, NoTls).await.unwrap();
    tokio::spawn(conn);
    client
}

fn all_pending() -> Vec<(u32, String)> {
    MIGRATIONS
        .iter()
        .map(|m| (m.version, m.name.to_owned()))
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn eight_nodes_starting_together_apply_each_migration_exactly_once() {
    let Some(db) = TestDb::create("eight_nodes").await else {
        return;
    };
    let starts: Vec<_> = (0..8)
        .map(|_| {
            let url = db.url.clone();
            tokio::spawn(async move { Store::connect(&url, &StoreOptions::default()).await })
        })
        .collect();
    for start in starts {
        let store = start.await.unwrap().expect("every node starts");
        assert_eq!(
            store.schema_version().await.unwrap(),
            MIGRATIONS.len() as u32
        );
    }
    let rows = db
        .client()
        .await
        .query(
            "SELECT version, name, checksum FROM keygate_schema_migrations ORDER BY version",
            &[],
        )
        .await
        .unwrap();
    let applied: Vec<(u32, String)> = rows
        .iter()
        .map(|r| (r.get::<_, i32>(0) as u32, r.get(1)))
        .collect();
    assert_eq!(applied, all_pending(), "each migration recorded once");
    // A ninth node later applies nothing and still starts.
    Store::connect(&db.url, &StoreOptions::default())
        .await
        .unwrap();
    let n: i64 = db
        .client()
        .await
        .query_one("SELECT count(*) FROM keygate_schema_migrations", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(n as usize, MIGRATIONS.len());
}

#[tokio::test(flavor = "multi_thread")]
async fn pending_migrations_are_reported_before_and_none_after() {
    let Some(db) = TestDb::create("pending").await else {
        return;
    };
    assert_eq!(
        postgres_pending_migrations(&db.url).await.unwrap(),
        all_pending()
    );
    // Reporting applied nothing.
    let exists: bool = db
        .client()
        .await
        .query_one(
            "SELECT to_regclass('users') IS NOT NULL OR to_regclass('keygate_schema_migrations') IS NOT NULL",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert!(!exists);
    Store::connect(&db.url, &StoreOptions::default())
        .await
        .unwrap();
    assert_eq!(
        postgres_pending_migrations(&db.url).await.unwrap(),
        Vec::<(u32, String)>::new()
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_changed_or_unknown_migration_refuses_to_start() {
    let Some(db) = TestDb::create("changed").await else {
        return;
    };
    Store::connect(&db.url, &StoreOptions::default())
        .await
        .unwrap();
    let client = db.client().await;
    client
        .execute(
            "UPDATE keygate_schema_migrations SET checksum = 'edited' WHERE version = 1",
            &[],
        )
        .await
        .unwrap();
    for err in [
        Store::connect(&db.url, &StoreOptions::default())
            .await
            .unwrap_err(),
        postgres_pending_migrations(&db.url).await.unwrap_err(),
    ] {
        assert!(
            matches!(
                err,
                StoreError::Migration(keygate_migrations::MigrationError::ChangedSql {
                    version: 1,
                    ..
                })
            ),
            "{err}"
        );
    }

    // Put it back; a database a newer keygate migrated is refused too.
    client
        .batch_execute("DELETE FROM keygate_schema_migrations WHERE version = 1")
        .await
        .unwrap();
    let first = &MIGRATIONS[0];
    let sum: String = {
        use sha2::Digest;
        sha2::Sha256::digest(first.sql.as_bytes())
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect()
    };
    client
        .execute(
            "INSERT INTO keygate_schema_migrations (version, name, checksum) VALUES (1, $1, $2), (999, 'future', 'x')",
            &[&first.name, &sum],
        )
        .await
        .unwrap();
    let err = Store::connect(&db.url, &StoreOptions::default())
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            StoreError::Migration(keygate_migrations::MigrationError::TooNew { found: 999, .. })
        ),
        "{err}"
    );
}

/// Every secret keygate handles, written through the store the way the server writes
/// it (sealed or hashed), and then every row of every table read back as text.
#[tokio::test(flavor = "multi_thread")]
async fn no_table_holds_a_plaintext_secret() {
    let Some(db) = TestDb::create("plaintext").await else {
        return;
    };
    let store = Store::connect(&db.url, &StoreOptions::default())
        .await
        .unwrap();
    let openai_key = "sk-proj-plaintext-canary-key-0000000000000000PGSQL";
    let grant_secret = "GRANTsecretPLAINTEXT0123456789abcdefghijklmnop";
    let session_id = "SESSIONidPLAINTEXT0123456789abcdefghij";
    let admin_secret = "ADMINsecretPLAINTEXT0123456789abcdefghij";
    let code = "CONNECTcodePLAINTEXT0123456789abcdefghij";

    let user = UserId::generate();
    store
        .insert_user(&UserRecord {
            id: user.clone(),
            name: "Ada".into(),
            created_at: 1,
        })
        .await
        .unwrap();
    let keyring = Keyring::generate().unwrap();
    let key_id = KeyId::generate();
    let binding = Binding {
        user_id: user.clone(),
        key_id: key_id.clone(),
    };
    let sealed = seal(
        &keyring,
        &binding,
        &OpenAiKey::parse(openai_key).unwrap(),
        None,
        None,
        1,
    )
    .unwrap();
    store
        .put_vault(
            &user,
            &VaultRecord {
                user_id: user.clone(),
                key_id,
                sealed: sealed.as_compact().to_owned(),
                kid: sealed.kid().to_owned(),
                last4: "stuv".into(),
                created_at: 1,
                last_validated_at: None,
                rejected_at: None,
            },
        )
        .await
        .unwrap();
    let grant = GrantRecord {
        id: GrantId::generate(),
        user_id: user.clone(),
        name: "app".into(),
        origin: Some("https://app.example".into()),
        models: vec![],
        state: GrantState::Active,
        secret_hash: sha256_hex(grant_secret),
        created_at: 1,
        last_used_at: None,
        revoked_at: None,
        expires_at: None,
        plan: None,
        scopes: vec![Scope::Inference],
        limits: Default::default(),
        previous_secret_hash: None,
        previous_until: None,
    };
    store.insert_grant(&grant).await.unwrap();
    let session: SessionRecord = serde_json::from_value(serde_json::json!({
        "user_id": user.as_str(), "created_at": 1, "last_seen_at": 1, "fresh_until": 1,
        "public_id": "p", "user_agent": null, "seq": 0,
    }))
    .unwrap();
    let _ = store
        .insert_session(&sha256_hex(session_id), &session, 5)
        .await
        .unwrap();
    store
        .insert_admin_key(&AdminKeyRecord {
            id: AdminKeyId::generate(),
            name: "ops".into(),
            scope: keygate_core::admin_scope::AdminScope::Admin,
            secret_hash: sha256_hex(admin_secret),
            created_at: 1,
            expires_at: None,
        })
        .await
        .unwrap();
    let code_record = serde_json::from_value(serde_json::json!({
        "user_id": user.as_str(), "redirect_uri": "https://app.example/cb",
        "origin": "https://app.example", "code_challenge": "x", "app_name": "app",
        "models": null, "plan": null, "reuse_grant_id": null, "expires_at": 99,
    }))
    .unwrap();
    store
        .put_code(&sha256_hex(code), &code_record)
        .await
        .unwrap();

    let client = db.client().await;
    let tables: Vec<String> = client
        .query(
            "SELECT table_name::text FROM information_schema.tables WHERE table_schema = 'public'",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert!(tables.len() >= 12, "{tables:?}");
    let mut dump = String::new();
    for t in &tables {
        // Table names come from the catalogue, not from input.
        for row in client
            .query(&format!("SELECT t::text FROM \"{t}\" t"), &[])
            .await
            .unwrap()
        {
            dump.push_str(row.get::<_, &str>(0));
            dump.push('\n');
        }
    }
    assert!(
        dump.contains(sealed.as_compact()),
        "the sealed JWE is stored"
    );
    assert!(
        dump.contains(&sha256_hex(grant_secret)),
        "the grant hash is stored"
    );
    for secret in [openai_key, grant_secret, session_id, admin_secret, code] {
        assert!(!dump.contains(secret), "a plaintext secret in the database");
    }
}

/// PostgreSQL quotes row data in an error's detail and context ("Key (credential_id)=
/// (…) already exists", "JSON data, line 1: …"): the store's error text carries
/// neither.
#[tokio::test(flavor = "multi_thread")]
async fn an_error_never_carries_a_bound_value() {
    let Some(db) = TestDb::create("errors").await else {
        return;
    };
    let store = Store::connect(&db.url, &StoreOptions::default())
        .await
        .unwrap();
    let user = UserId::generate();
    let passkey = |credential: &str| PasskeyRecord {
        id: PasskeyId::generate(),
        user_id: user.clone(),
        name: "key".into(),
        credential_id: credential.into(),
        passkey: "{}".into(),
        created_at: 1,
        last_used_at: None,
        sign_count: 0,
        backup_eligible: false,
        backup_state: false,
    };
    // The same credential id under two passkey ids: the UNIQUE constraint refuses.
    let err = store
        .import(&[
            Entry::Passkey(passkey("CREDENTIALvalue42")),
            Entry::Passkey(passkey("CREDENTIALvalue42")),
        ])
        .await
        .unwrap_err();
    let text = err.to_string();
    assert!(matches!(err, StoreError::Postgres(_)), "{text}");
    assert!(text.contains("23505"), "{text}");
    assert!(!text.contains("CREDENTIALvalue42"), "{text}");

    // A NUL in a record: jsonb refuses it and quotes the document in its context.
    let err = store
        .insert_user(&UserRecord {
            id: user.clone(),
            name: "NAMEvalue42\u{0}".into(),
            created_at: 1,
        })
        .await
        .unwrap_err();
    let text = err.to_string();
    assert!(matches!(err, StoreError::Postgres(_)), "{text}");
    assert!(!text.contains("NAMEvalue42"), "{text}");
    // A failed import wrote nothing (one transaction).
    assert_eq!(store.export().await.unwrap(), vec![]);
}

// --- the same calls on both backends -----------------------------------------------

/// Everything the script writes, made once so both backends get identical records.
struct Fixture {
    users: Vec<UserRecord>,
    grants: Vec<GrantRecord>,
    passkeys: Vec<PasskeyRecord>,
    admin_keys: Vec<AdminKeyId>,
}

fn fixture() -> Fixture {
    let users: Vec<UserRecord> = (0..4)
        .map(|i| UserRecord {
            id: UserId::generate(),
            name: format!("user{i}"),
            created_at: 10 + i,
        })
        .collect();
    let mut grants = Vec::new();
    for (i, u) in users.iter().enumerate().take(3) {
        for j in 0..3u64 {
            grants.push(GrantRecord {
                id: GrantId::generate(),
                user_id: u.id.clone(),
                name: format!("app{i}{j}"),
                origin: Some(format!("https://app{}.example", j % 2)),
                models: vec![],
                state: if j == 2 {
                    GrantState::Revoked
                } else {
                    GrantState::Active
                },
                secret_hash: sha256_hex(&format!("s{i}{j}")),
                created_at: 100 + j,
                last_used_at: None,
                revoked_at: None,
                expires_at: None,
                plan: None,
                scopes: vec![Scope::Inference],
                limits: Default::default(),
                previous_secret_hash: None,
                previous_until: None,
            });
        }
    }
    let passkeys = (0..4)
        .map(|i| PasskeyRecord {
            id: PasskeyId::generate(),
            user_id: users[i % 2].id.clone(),
            name: format!("pk{i}"),
            credential_id: format!("cred{i}"),
            passkey: "{}".into(),
            created_at: 5 + i as u64,
            last_used_at: None,
            sign_count: 0,
            backup_eligible: false,
            backup_state: false,
        })
        .collect();
    Fixture {
        users,
        grants,
        passkeys,
        admin_keys: (0..4).map(|_| AdminKeyId::generate()).collect(),
    }
}

fn session(user: &UserId, at: u64) -> SessionRecord {
    serde_json::from_value(serde_json::json!({
        "user_id": user.as_str(), "created_at": at, "last_seen_at": at, "fresh_until": at,
        "public_id": format!("p{at}"), "user_agent": null, "seq": 0,
    }))
    .unwrap()
}

fn audit(at_s: u64, action: &str, user: Option<&UserId>) -> keygate_store::AuditRecord {
    serde_json::from_value(serde_json::json!({
        "at_ns": at_s * 1_000_000_000, "seq": 0, "action": action,
        "actor": {"kind": "system"}, "user": user.map(|u| u.as_str()), "target": null,
        "source_ip": null, "request_id": null, "detail": {},
    }))
    .unwrap()
}

/// Walks every page of `fetch`, noting each page (`fetch` gets the cursor).
async fn walk<T, F, Fut>(log: &mut Vec<String>, what: &str, mut fetch: F) -> Vec<Vec<u8>>
where
    T: std::fmt::Debug,
    F: FnMut(Option<Vec<u8>>) -> Fut,
    Fut: std::future::Future<Output = Result<keygate_store::Page<T>, StoreError>>,
{
    let (mut cursor, mut cursors) = (None, Vec::new());
    for _ in 0..50 {
        let (items, next) = fetch(cursor.clone()).await.unwrap();
        log.push(format!("{what}: {items:?} more={}", next.is_some()));
        match next {
            Some(n) => {
                cursors.push(n.clone());
                cursor = Some(n);
            }
            None => return cursors,
        }
    }
    panic!("{what}: the walk does not end");
}

/// Sequence numbers differ between backends by design (sled's id generator, a
/// PostgreSQL SEQUENCE): the log compares records with them zeroed.
fn unseq(text: String) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text.as_str();
    while let Some(i) = rest.find("seq: ") {
        out.push_str(&rest[..i + 5]);
        rest = rest[i + 5..].trim_start_matches(|c: char| c.is_ascii_digit());
        out.push('_');
    }
    out.push_str(rest);
    out
}

/// A script touching every method, answering a log of what each call returned.
async fn script(store: &Store, f: &Fixture) -> Vec<String> {
    use keygate_store::{AuditQuery, GrantFilter, UsageCounts, UsageDelta};
    let mut log = Vec::new();
    macro_rules! note {
        ($e:expr) => {
            log.push(unseq(format!("{} => {:?}", stringify!($e), $e)))
        };
    }
    let (u0, u1, u2, u3) = (
        &f.users[0].id,
        &f.users[1].id,
        &f.users[2].id,
        &f.users[3].id,
    );
    // People and passkeys.
    note!(
        store
            .insert_user_with_passkey(&f.users[0], &f.passkeys[0])
            .await
    );
    note!(
        store
            .insert_user_with_passkey(&f.users[1], &f.passkeys[0])
            .await
    );
    note!(store.user(u1).await);
    note!(
        store
            .insert_user_with_passkey(&f.users[1], &f.passkeys[1])
            .await
    );
    note!(store.insert_user(&f.users[2]).await);
    note!(store.insert_passkey(&f.passkeys[2]).await);
    let mut taken = f.passkeys[3].clone();
    taken.credential_id = "cred2".into();
    note!(store.insert_passkey(&taken).await);
    let mut orphan = f.passkeys[3].clone();
    orphan.user_id = u3.clone();
    note!(store.insert_passkey(&orphan).await);
    note!(store.passkey_by_credential("cred2").await);
    note!(store.passkey_by_credential("nope").await);
    note!(store.passkeys_for_user(u0).await);
    note!(store.delete_passkey_unless_last(&f.passkeys[1]).await);
    note!(store.delete_passkey_unless_last(&f.passkeys[2]).await);
    note!(store.delete_passkey_unless_last(&f.passkeys[0]).await);
    note!(store.delete_passkey_unless_last(&f.passkeys[2]).await);
    let mut used = f.passkeys[2].clone();
    used.sign_count = 7;
    note!(store.put_passkey(&used).await);
    note!(store.passkey(&used.id).await);
    note!(store.put_passkey(&f.passkeys[3]).await);
    note!(store.passkey(&f.passkeys[3].id).await);
    walk(&mut log, "users", |c| async move {
        store.users_page(c.as_deref(), 1).await
    })
    .await;
    note!(store.users().await.map(|v| v.len()));

    // Grants.
    for g in &f.grants {
        note!(store.insert_grant(g).await);
    }
    let mut stray = f.grants[0].clone();
    stray.id = GrantId::generate();
    stray.user_id = u3.clone();
    note!(store.insert_grant(&stray).await);
    let filters = [
        GrantFilter::default(),
        GrantFilter {
            user: Some(u1.clone()),
            ..Default::default()
        },
        GrantFilter {
            state: Some(GrantState::Revoked),
            ..Default::default()
        },
        GrantFilter {
            user: Some(u0.clone()),
            origin: Some("https://app1.example".into()),
            state: Some(GrantState::Active),
        },
    ];
    for filter in &filters {
        walk(&mut log, "grants", |c| async move {
            store.grants_page(filter, c.as_deref(), 2).await
        })
        .await;
    }
    // Crafted cursors: another person's grant id, garbage, beyond everything.
    let other = f.grants[0].id.as_str().as_bytes().to_vec();
    for cursor in [
        other,
        vec![0xff, 0xfe, 0],
        b"0".to_vec(),
        b"zzzzzz".to_vec(),
    ] {
        note!(store.grants_page(&filters[1], Some(&cursor), 10).await);
    }
    note!(store.grants_for_user(u0).await);
    note!(
        store
            .update_grant(&f.grants[0].id, &|g| g.name = "renamed".into())
            .await
    );
    note!(
        store
            .update_grant(&GrantId::generate(), &|g| g.name = "x".into())
            .await
    );
    note!(store.revoke_grant(&f.grants[1].id, 500).await);
    note!(
        store
            .touch_grants(&[(f.grants[3].id.clone(), 600), (f.grants[3].id.clone(), 550)])
            .await
    );
    note!(store.grant_cached(&f.grants[3].id).await);
    note!(store.delete_grant(&f.grants[4].id).await);
    note!(store.delete_grant(&f.grants[4].id).await);
    note!(store.grant(&f.grants[4].id).await);
    note!(store.grant_ids_ever(u1).await);
    let mut owners: Vec<_> = store.grant_owners().await.unwrap().into_iter().collect();
    owners.sort();
    note!(owners);

    // Vault and the operator key.
    let vault = |sealed: &str| VaultRecord {
        user_id: u0.clone(),
        key_id: KeyId::generate(),
        sealed: sealed.into(),
        kid: "k1".into(),
        last4: "abcd".into(),
        created_at: 1,
        last_validated_at: None,
        rejected_at: None,
    };
    let (v1, v2, v3) = (vault("jwe1"), vault("jwe2"), vault("jwe3"));
    note!(store.put_vault(u0, &v1).await);
    note!(store.replace_vault(u0, &v2, &v3).await);
    note!(store.replace_vault(u0, &v1, &v2).await);
    note!(
        store
            .vault_cached(u0)
            .await
            .map(|v| v.map(|v| v.sealed.clone()))
    );
    note!(store.replace_vault(u1, &v1, &v2).await);
    note!(store.vault_entries().await.map(|v| v.len()));
    let op = |sealed: &str| -> keygate_store::OperatorKeyRecord {
        serde_json::from_value(serde_json::json!({
            "key_id": "aaaaaaaaaaaaaaaa", "sealed": sealed, "kid": "k1", "last4": "abcd",
            "updated_at": 1,
        }))
        .unwrap()
    };
    note!(store.replace_operator_key(&op("a"), &op("b")).await);
    note!(store.put_operator_key(&op("a")).await);
    note!(store.replace_operator_key(&op("b"), &op("c")).await);
    note!(store.replace_operator_key(&op("a"), &op("b")).await);
    note!(store.operator_key().await);
    note!(store.delete_operator_key().await);
    note!(store.delete_operator_key().await);

    // Sessions, ceremonies, codes.
    for (i, h) in ["h1", "h2", "h3", "h4"].iter().enumerate() {
        note!(store.insert_session(h, &session(u0, 1000), 2 + i / 3).await);
    }
    note!(store.insert_session("hx", &session(u3, 1000), 2).await);
    note!(store.sessions_for_user(u0).await);
    let mut seen = store.session("h4").await.unwrap().unwrap();
    seen.last_seen_at = 1500;
    note!(store.put_session("h4", &seen).await);
    note!(store.put_session("h1", &seen).await);
    note!(store.session("h1").await);
    note!(store.insert_session("h5", &session(u1, 900), 5).await);
    note!(store.insert_session("h6", &session(u1, 2000), 5).await);
    note!(store.delete_sessions_for_user(u0, Some("h4")).await);
    note!(store.sessions_for_user(u0).await);
    let ceremony = |user: Option<&UserId>, exp: u64| -> keygate_store::CeremonyRecord {
        serde_json::from_value(serde_json::json!({
            "kind": "login", "state": "{}", "user_id": user.map(|u| u.as_str()),
            "name": null, "expires_at": exp,
        }))
        .unwrap()
    };
    let person = keygate_store::person_ceremony_id(u0, "register", "sess");
    note!(store.put_ceremony("anon1", &ceremony(None, 1500)).await);
    note!(store.put_ceremony("anon2", &ceremony(None, 3000)).await);
    note!(store.put_ceremony(&person, &ceremony(Some(u0), 3000)).await);
    note!(store.put_ceremony("anon3", &ceremony(Some(u1), 3000)).await);
    note!(store.anonymous_ceremony_count().await);
    note!(store.ceremony_count().await);
    note!(store.take_ceremony("anon2").await);
    note!(store.take_ceremony("anon2").await);
    let code = |user: &UserId, exp: u64| -> keygate_store::CodeRecord {
        serde_json::from_value(serde_json::json!({
            "user_id": user.as_str(), "redirect_uri": "https://app.example/cb",
            "origin": "https://app.example", "code_challenge": "x", "app_name": "app",
            "models": null, "plan": null, "reuse_grant_id": null, "expires_at": exp,
        }))
        .unwrap()
    };
    note!(store.put_code("c1", &code(u0, 1500)).await);
    note!(store.put_code("c2", &code(u1, 3000)).await);
    note!(store.put_code("c3", &code(u1, 3000)).await);
    note!(store.take_code("c3").await);
    note!(store.take_code("c3").await);
    note!(store.code_count().await);
    note!(store.sweep_expired(1600, 550, 10_000).await);
    note!(store.sweep_expired(1600, 50, 500).await);
    note!(store.ceremony_count().await);

    // Usage.
    let delta = |g: &GrantId, day: u32, model: &str, n: u64| UsageDelta {
        grant_id: g.clone(),
        day,
        model: model.into(),
        counts: UsageCounts {
            requests: n,
            prompt_tokens: 10 * n,
            completion_tokens: 20 * n,
            usd_nanos: 1000 * n,
            ..Default::default()
        },
    };
    let (g0, g1) = (&f.grants[0].id, &f.grants[4].id);
    note!(
        store
            .add_usage(&[
                delta(g0, 20, "gpt-b", 1),
                delta(g0, 20, "gpt-a", 2),
                delta(g0, 21, "gpt-a", 3),
                delta(g1, 19, "", 4),
            ])
            .await
    );
    note!(
        store
            .add_usage(&[delta(g0, 20, "gpt-a", 5), delta(g0, 25, "gpt-a", 1)])
            .await
    );
    note!(store.add_usage(&[]).await);
    note!(store.usage_rows(g0, 20, 21).await);
    note!(store.usage_rows(g0, 0, u32::MAX).await);
    note!(store.usage_rows_all(19, 20).await.map(|v| v.len()));
    note!(store.usage_total(g0, 20, 25, None).await);
    note!(store.usage_total(g0, 20, 25, Some("gpt-a")).await);
    note!(store.usage_total(g0, 30, 40, None).await);

    // Audit.
    let mut seqs = Vec::new();
    for (at, action, user) in [
        (10, "user.signed_up", Some(u0)),
        (10, "passkey.added", Some(u0)),
        (20, "user.signed_up", Some(u1)),
        (30, "user.signed_in", None),
        (40, "passkey.removed", Some(u0)),
        (40, "user.signed_in", Some(u0)),
    ] {
        seqs.push(
            store
                .append_audit(audit(at, action, user))
                .await
                .unwrap()
                .seq,
        );
    }
    log.push(format!(
        "audit seqs increase: {}",
        seqs.windows(2).all(|w| w[0] < w[1])
    ));
    let queries = [
        AuditQuery::default(),
        AuditQuery {
            user: Some(u0.clone()),
            ..Default::default()
        },
        AuditQuery {
            action: serde_json::from_value(serde_json::json!("user.signed_up")).ok(),
            ..Default::default()
        },
        AuditQuery {
            from_ns: Some(10_000_000_000),
            until_ns: Some(40_000_000_000),
            ..Default::default()
        },
    ];
    let mut all_cursors = Vec::new();
    for q in &queries {
        let cursors = walk(&mut log, "audit", |c| async move {
            store.audit_page(q, c.as_deref(), 2).await.map(|(v, n)| {
                (
                    v.into_iter()
                        .map(|r| unseq(format!("{r:?}")))
                        .collect::<Vec<_>>(),
                    n,
                )
            })
        })
        .await;
        all_cursors.push(cursors);
    }
    // Crafted: the whole log's cursor on a person's query, a person's on another's,
    // garbage, a cursor outside the time range.
    let bob = AuditQuery {
        user: Some(u1.clone()),
        ..Default::default()
    };
    for (q, cursor) in [
        (&queries[1], all_cursors[0][0].clone()),
        (&bob, all_cursors[1][0].clone()),
        (&queries[0], vec![1, 2, 3]),
        (&queries[3], 50_000_000_000u64.to_be_bytes().repeat(2)),
    ] {
        let (items, next) = store.audit_page(q, Some(&cursor), 10).await.unwrap();
        log.push(format!("crafted audit cursor: {} {:?}", items.len(), next));
    }
    note!(store.sweep_audit_before(20_000_000_000).await);
    note!(
        store
            .audit_page(&AuditQuery::default(), None, 10)
            .await
            .map(|(v, _)| v.len())
    );

    // Admin keys.
    for (i, at) in [30u64, 10, 20, 10].iter().enumerate() {
        note!(
            store
                .insert_admin_key(&AdminKeyRecord {
                    id: f.admin_keys[i].clone(),
                    name: format!("k{i}"),
                    scope: keygate_core::admin_scope::AdminScope::Read,
                    secret_hash: sha256_hex(&format!("a{i}")),
                    created_at: *at,
                    expires_at: None,
                })
                .await
        );
    }
    walk(&mut log, "admin keys", |c| async move {
        store
            .admin_keys_page(c.as_deref(), 3)
            .await
            .map(|(v, n)| (v.into_iter().map(|k| k.name).collect::<Vec<_>>(), n))
    })
    .await;

    // Deleting a person takes everything of theirs but usage, owners and audit.
    note!(store.delete_user(u0).await);
    note!(store.delete_user(u0).await);
    note!(store.user(u0).await);
    note!(store.vault(u0).await);
    note!(store.grants_for_user(u0).await);
    note!(store.passkeys_for_user(u0).await);
    note!(store.sessions_for_user(u0).await);
    note!(store.grant_ids_ever(u0).await.map(|v| v.len()));
    note!(store.usage_rows(g0, 0, u32::MAX).await.map(|v| v.len()));
    note!(store.ceremony_count().await);
    note!(store.code_count().await);
    note!(store.insert_grant(&f.grants[0]).await);
    note!(store.insert_session("late", &session(u0, 1), 3).await);
    let _ = u2;

    let mut export: Vec<String> = store
        .export()
        .await
        .unwrap()
        .iter()
        .map(|e| unseq(format!("{e:?}")))
        .collect();
    export.sort();
    log.extend(export);
    log
}

/// The backend's contract is sled's behaviour: one script of calls over every method
/// answers the same, call by call, on both (sequence numbers aside), and the two
/// exports agree.
#[tokio::test(flavor = "multi_thread")]
async fn the_same_calls_answer_the_same_on_sled_and_postgres() {
    let Some(db) = TestDb::create("same_calls").await else {
        return;
    };
    let f = fixture();
    let dir = tempfile::tempdir().unwrap();
    let sled = Store::open(dir.path(), &StoreOptions::default()).unwrap();
    let pg = Store::connect(&db.url, &StoreOptions::default())
        .await
        .unwrap();
    let on_sled = script(&sled, &f).await;
    let on_pg = script(&pg, &f).await;
    for (i, (s, p)) in on_sled.iter().zip(&on_pg).enumerate() {
        assert_eq!(s, p, "call {i} differs");
    }
    assert_eq!(on_sled.len(), on_pg.len());
    if std::env::var("KG_PG_SHOW").is_ok() {
        eprintln!("{}", on_pg.join("\n"));
    }

    // sled → PostgreSQL → sled carries everything (sequence numbers included).
    let copy = TestDb::create("same_calls_copy").await.unwrap();
    let pg2 = Store::connect(&copy.url, &StoreOptions::default())
        .await
        .unwrap();
    let from_sled = sled.export().await.unwrap();
    pg2.import(&from_sled).await.unwrap();
    pg2.import(&from_sled).await.unwrap();
    let dir2 = tempfile::tempdir().unwrap();
    let back = Store::open(dir2.path(), &StoreOptions::default()).unwrap();
    back.import(&pg2.export().await.unwrap()).await.unwrap();
    let sorted = |v: Vec<Entry>| {
        let mut s: Vec<String> = v.iter().map(|e| format!("{e:?}")).collect();
        s.sort();
        s
    };
    let original = sorted(from_sled);
    assert_eq!(sorted(pg2.export().await.unwrap()), original);
    assert_eq!(sorted(back.export().await.unwrap()), original);
    // What the copy numbers next comes after everything it imported.
    let max_seq = sled.export().await.unwrap().iter().fold(0, |m, e| match e {
        Entry::Audit(r) => m.max(r.seq),
        Entry::Session(_, s) => m.max(s.seq),
        _ => m,
    });
    let next = pg2
        .append_audit(audit(99, "user.signed_in", None))
        .await
        .unwrap();
    assert!(next.seq > max_seq, "{} <= {max_seq}", next.seq);
}

// --- races between nodes ---------------------------------------------------------

/// Two nodes (each its own pool) racing on what must happen once: a code or ceremony
/// handed out once, a credential id registered once, the last passkey kept, no grant
/// update or usage delta lost, no grant outliving its deleted person.
#[tokio::test(flavor = "multi_thread")]
async fn two_nodes_racing_never_both_win() {
    use keygate_store::{DeletePasskey, PasskeyInsert, UsageCounts, UsageDelta};
    let Some(db) = TestDb::create("races").await else {
        return;
    };
    let a = Store::connect(&db.url, &StoreOptions::default())
        .await
        .unwrap();
    let b = Store::connect(&db.url, &StoreOptions::default())
        .await
        .unwrap();
    let node = |i: usize| {
        if i.is_multiple_of(2) {
            a.clone()
        } else {
            b.clone()
        }
    };
    let f = fixture();
    let user = f.users[0].id.clone();
    a.insert_user(&f.users[0]).await.unwrap();

    // A connect code and a ceremony, taken by 16 tasks over two nodes.
    let code: keygate_store::CodeRecord = serde_json::from_value(serde_json::json!({
        "user_id": user.as_str(), "redirect_uri": "https://app.example/cb",
        "origin": "https://app.example", "code_challenge": "x", "app_name": "app",
        "models": null, "plan": null, "reuse_grant_id": null, "expires_at": 99,
    }))
    .unwrap();
    a.put_code("code", &code).await.unwrap();
    let ceremony: keygate_store::CeremonyRecord = serde_json::from_value(serde_json::json!({
        "kind": "login", "state": "{}", "user_id": null, "name": null, "expires_at": 99,
    }))
    .unwrap();
    b.put_ceremony("cer", &ceremony).await.unwrap();
    let takes: Vec<_> = (0..16)
        .map(|i| {
            let s = node(i);
            tokio::spawn(async move {
                (
                    s.take_code("code").await.unwrap().is_some(),
                    s.take_ceremony("cer").await.unwrap().is_some(),
                )
            })
        })
        .collect();
    let (mut codes, mut ceremonies) = (0, 0);
    for t in takes {
        let (c, e) = t.await.unwrap();
        codes += usize::from(c);
        ceremonies += usize::from(e);
    }
    assert_eq!((codes, ceremonies), (1, 1));

    // One credential id, 16 passkeys.
    let inserts: Vec<_> = (0..16)
        .map(|i| {
            let s = node(i);
            let mut pk = f.passkeys[0].clone();
            pk.id = PasskeyId::generate();
            pk.user_id = user.clone();
            pk.credential_id = "contested".into();
            tokio::spawn(async move { s.insert_passkey(&pk).await.unwrap() })
        })
        .collect();
    let mut won = 0;
    for t in inserts {
        if t.await.unwrap() == PasskeyInsert::Inserted {
            won += 1;
        }
    }
    assert_eq!(won, 1);

    // Two passkeys, both removed at once from two nodes: one stays. (Repeated: the
    // interleaving differs run to run.)
    for round in 0..8 {
        for pk in a.passkeys_for_user(&user).await.unwrap() {
            let _ = a.delete_passkey_unless_last(&pk).await.unwrap();
        }
        let mut second = f.passkeys[1].clone();
        second.id = PasskeyId::generate();
        second.user_id = user.clone();
        second.credential_id = format!("second{round}");
        assert_eq!(
            a.insert_passkey(&second).await.unwrap(),
            PasskeyInsert::Inserted
        );
        let both = a.passkeys_for_user(&user).await.unwrap();
        assert_eq!(both.len(), 2);
        let (pa, pb) = (both[0].clone(), both[1].clone());
        let (ra, rb) = tokio::join!(
            a.delete_passkey_unless_last(&pa),
            b.delete_passkey_unless_last(&pb)
        );
        let outcomes = [ra.unwrap(), rb.unwrap()];
        assert!(outcomes.contains(&DeletePasskey::Last), "{outcomes:?}");
        assert_eq!(a.passkeys_for_user(&user).await.unwrap().len(), 1);
    }

    // 32 updates of one grant, and 32 usage batches on one row, over two nodes.
    let grant = {
        let mut g = f.grants[0].clone();
        g.user_id = user.clone();
        g
    };
    a.insert_grant(&grant).await.unwrap();
    let tasks: Vec<_> = (0..32)
        .map(|i| {
            let s = node(i);
            let id = grant.id.clone();
            tokio::spawn(async move {
                s.update_grant(&id, &|g| g.models.push("m".into()))
                    .await
                    .unwrap();
                s.add_usage(&[UsageDelta {
                    grant_id: id,
                    day: 7,
                    model: "gpt".into(),
                    counts: UsageCounts {
                        requests: 1,
                        usd_nanos: 1_000,
                        ..Default::default()
                    },
                }])
                .await
                .unwrap();
            })
        })
        .collect();
    for t in tasks {
        t.await.unwrap();
    }
    assert_eq!(a.grant(&grant.id).await.unwrap().unwrap().models.len(), 32);
    let total = b.usage_total(&grant.id, 0, 10, None).await.unwrap();
    assert_eq!((total.requests, total.usd_nanos), (32, 32_000));

    // A person deleted on one node while the other mints grants for them: afterwards
    // no grant of theirs remains.
    for _ in 0..8 {
        let person = UserRecord {
            id: UserId::generate(),
            name: "p".into(),
            created_at: 1,
        };
        a.insert_user(&person).await.unwrap();
        let minting: Vec<_> = (0..8)
            .map(|_| {
                let s = b.clone();
                let mut g = grant.clone();
                g.id = GrantId::generate();
                g.user_id = person.id.clone();
                tokio::spawn(async move { s.insert_grant(&g).await })
            })
            .collect();
        assert!(a.delete_user(&person.id).await.unwrap());
        for m in minting {
            match m.await.unwrap() {
                Ok(()) | Err(StoreError::NotFound { what: "user" }) => {}
                Err(e) => panic!("{e}"),
            }
        }
        assert_eq!(a.grants_for_user(&person.id).await.unwrap(), vec![]);
    }
}

// --- TLS -------------------------------------------------------------------------

/// How many of the test database's connections are encrypted, server side.
async fn tls_connections(db: &TestDb) -> i64 {
    db.client()
        .await
        .query_one(
            "SELECT count(*) FROM pg_stat_ssl s JOIN pg_stat_activity a USING (pid) \
             WHERE a.datname = current_database() AND s.ssl",
            &[],
        )
        .await
        .unwrap()
        .get(0)
}

/// `sslmode=require` encrypts; `verify-full` checks the certificate against
/// `sslrootcert` (and refuses one it cannot trust); a URL without `sslmode` encrypts
/// when the server offers TLS (libpq's `prefer`); `sslmode=disable` stays plain. The
/// server is the test server with its self-signed certificate (`KG_TEST_PG_CA`).
#[tokio::test(flavor = "multi_thread")]
async fn tls_when_the_url_asks_verified_when_it_says_so() {
    let Some(db) = TestDb::create("tls").await else {
        return;
    };
    let Ok(ca) = std::env::var("KG_TEST_PG_CA") else {
        if std::env::var("KG_REQUIRE_PG").as_deref() == Ok("1") {
            panic!("KG_REQUIRE_PG=1 but the test server has no TLS (KG_TEST_PG_CA)");
        }
        eprintln!("skipping tls: KG_TEST_PG_CA is not set");
        return;
    };
    let plain = Store::connect(
        &format!("{}?sslmode=disable", db.url),
        &StoreOptions::default(),
    )
    .await
    .unwrap();
    plain.ping().await.unwrap();
    assert_eq!(tls_connections(&db).await, 0);

    // Review finding: no `sslmode` connected in plain text, where libpq prefers TLS.
    let preferred = Store::connect(&db.url, &StoreOptions::default())
        .await
        .unwrap();
    preferred.ping().await.unwrap();
    assert_eq!(tls_connections(&db).await, 1);
    drop(preferred);
    // Its pooled connection may outlive the handle briefly.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while tls_connections(&db).await != 0 {
        assert!(
            std::time::Instant::now() < deadline,
            "the pool never closed"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }

    let required = Store::connect(
        &format!("{}?sslmode=require", db.url),
        &StoreOptions::default(),
    )
    .await
    .unwrap();
    required.ping().await.unwrap();
    assert_eq!(tls_connections(&db).await, 1);

    let verified = Store::connect(
        &format!("{}?sslmode=verify-full&sslrootcert={ca}", db.url),
        &StoreOptions::default(),
    )
    .await
    .unwrap();
    verified.ping().await.unwrap();
    assert_eq!(tls_connections(&db).await, 2);

    // Not signed by anything the system trusts: refused, and the error does not show
    // the URL's password.
    let err = Store::connect(
        &format!("{}?sslmode=verify-full", db.url),
        &StoreOptions::default(),
    )
    .await
    .unwrap_err();
    let password = db
        .url
        .split_once("://")
        .and_then(|(_, rest)| rest.split_once('@'))
        .and_then(|(auth, _)| auth.split_once(':'))
        .map(|(_, pw)| pw.to_owned())
        .unwrap();
    let text = err.to_string();
    assert!(matches!(err, StoreError::Postgres(_)), "{text}");
    assert!(!text.contains(&password), "{text}");
    drop((plain, required, verified));
}

// --- a COMMIT whose answer is lost ----------------------------------------------------

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Cut {
    /// The COMMIT reaches the server; its answer never reaches the client.
    AfterCommit,
    /// The connection breaks before the COMMIT is sent on.
    BeforeCommit,
}

/// A TCP proxy in front of the test server that breaks one connection at its next
/// COMMIT once armed (tokio-postgres commits with a simple query, `Q` "COMMIT").
/// Speaks just enough of the frontend protocol to find message boundaries; the URL
/// through it says `sslmode=disable` so the bytes are readable.
struct CommitCutter {
    url: String,
    armed: std::sync::Arc<std::sync::Mutex<Option<Cut>>>,
    fired: std::sync::Arc<AtomicU32>,
}

impl CommitCutter {
    async fn start(target_url: &str) -> CommitCutter {
        use tokio::net::{TcpListener, TcpStream};
        let config: tokio_postgres::Config = target_url.parse().unwrap();
        let host = match &config.get_hosts()[0] {
            tokio_postgres::config::Host::Tcp(h) => h.clone(),
            #[allow(unreachable_patterns)]
            other => panic!("the test server is not on TCP: {other:?}"),
        };
        let target = format!("{host}:{}", config.get_ports()[0]);
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let armed = std::sync::Arc::new(std::sync::Mutex::new(None::<Cut>));
        let fired = std::sync::Arc::new(AtomicU32::new(0));
        let (a, f) = (armed.clone(), fired.clone());
        tokio::spawn(async move {
            loop {
                let Ok((client, _)) = listener.accept().await else {
                    return;
                };
                let server = TcpStream::connect(&target).await.unwrap();
                tokio::spawn(Self::relay(client, server, a.clone(), f.clone()));
            }
        });
        // The same URL with the proxy's address.
        let (scheme_auth, rest) = target_url.split_once('@').unwrap();
        let (_, path) = rest.split_once('/').unwrap();
        let path = path.split('?').next().unwrap();
        CommitCutter {
            url: format!("{scheme_auth}@127.0.0.1:{port}/{path}?sslmode=disable"),
            armed,
            fired,
        }
    }

    fn arm(&self, cut: Cut) {
        *self.armed.lock().unwrap() = Some(cut);
    }

    async fn relay(
        client: tokio::net::TcpStream,
        server: tokio::net::TcpStream,
        armed: std::sync::Arc<std::sync::Mutex<Option<Cut>>>,
        fired: std::sync::Arc<AtomicU32>,
    ) {
        use std::sync::atomic::AtomicBool;
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let (mut client_rd, mut client_wr) = client.into_split();
        let (mut server_rd, mut server_wr) = server.into_split();
        let swallow = std::sync::Arc::new(AtomicBool::new(false));
        let s = swallow.clone();
        // Server to client, until the server closes — or, after a cut COMMIT, its answer
        // is read and dropped and the client's connection closed.
        let back = tokio::spawn(async move {
            let mut buf = vec![0u8; 64 * 1024];
            loop {
                let n = server_rd.read(&mut buf).await.unwrap_or(0);
                if n == 0 || s.load(Ordering::SeqCst) {
                    let _ = client_wr.shutdown().await;
                    return;
                }
                if client_wr.write_all(&buf[..n]).await.is_err() {
                    return;
                }
            }
        });
        // Client to server, message by message (the startup message has no type byte).
        let mut pending: Vec<u8> = Vec::new();
        let mut started = false;
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            let n = client_rd.read(&mut buf).await.unwrap_or(0);
            if n == 0 {
                break;
            }
            pending.extend_from_slice(&buf[..n]);
            loop {
                let (head, len_at) = if started { (1, 1) } else { (0, 0) };
                if pending.len() < len_at + 4 {
                    break;
                }
                let len =
                    u32::from_be_bytes(pending[len_at..len_at + 4].try_into().unwrap()) as usize;
                let total = head + len;
                if pending.len() < total {
                    break;
                }
                let message: Vec<u8> = pending.drain(..total).collect();
                started = true;
                let commit = head == 1 && message[0] == b'Q' && &message[5..] == b"COMMIT\0";
                let cut = if commit {
                    armed.lock().unwrap().take()
                } else {
                    None
                };
                match cut {
                    Some(Cut::BeforeCommit) => {
                        fired.fetch_add(1, Ordering::SeqCst);
                        let _ = server_wr.shutdown().await;
                        let _ = back.await;
                        return;
                    }
                    Some(Cut::AfterCommit) => {
                        fired.fetch_add(1, Ordering::SeqCst);
                        swallow.store(true, Ordering::SeqCst);
                        let _ = server_wr.write_all(&message).await;
                        let _ = back.await;
                        return;
                    }
                    None => {
                        if server_wr.write_all(&message).await.is_err() {
                            return;
                        }
                    }
                }
            }
        }
        let _ = server_wr.shutdown().await;
        let _ = back.await;
    }
}

/// Review finding (issue 14): a usage batch whose COMMIT landed but whose answer was
/// lost (the connection broke at that instant) was reported as failed, so the node
/// wrote it again at its next flush — counted twice in every report and budget load.
/// Now the batch carries an id and the writer asks whether it landed. Through a proxy
/// that swallows one COMMIT's answer the write succeeds and counts once (without the
/// fix it fails); one cut before its COMMIT fails and counts nothing.
#[tokio::test(flavor = "multi_thread")]
async fn a_usage_batch_whose_commit_answer_is_lost_counts_once() {
    use keygate_store::{UsageCounts, UsageDelta};
    let Some(db) = TestDb::create("usage_commit").await else {
        return;
    };
    let direct = Store::connect(&db.url, &StoreOptions::default())
        .await
        .unwrap();
    let cutter = CommitCutter::start(&db.url).await;
    let store = Store::connect(&cutter.url, &StoreOptions::default())
        .await
        .unwrap();
    let g = GrantId::generate();
    let delta = |requests: u64| UsageDelta {
        grant_id: g.clone(),
        day: 20_000,
        model: "gpt-4o".into(),
        counts: UsageCounts {
            requests,
            ..UsageCounts::default()
        },
    };
    let counted = || async {
        direct
            .usage_total(&g, 0, u32::MAX, None)
            .await
            .unwrap()
            .requests
    };

    cutter.arm(Cut::AfterCommit);
    store
        .add_usage(&[delta(1)])
        .await
        .expect("the batch landed: its lost answer is no failure");
    assert_eq!(cutter.fired.load(Ordering::SeqCst), 1, "the cut happened");
    assert_eq!(counted().await, 1);

    cutter.arm(Cut::BeforeCommit);
    assert!(store.add_usage(&[delta(10)]).await.is_err());
    assert_eq!(cutter.fired.load(Ordering::SeqCst), 2);
    assert_eq!(
        counted().await,
        1,
        "nothing of a batch that never committed"
    );

    store.add_usage(&[delta(100)]).await.unwrap();
    assert_eq!(counted().await, 101);
    drop((store, direct));
}
