//! What only the PostgreSQL backend has: SQL migrations applied once by nodes starting
//! together, pending ones reported, a changed file refused; no plaintext secret in any
//! table; errors that never carry a bound value. (Every interface method's behaviour
//! is the conformance suite's, run against both backends.)
//!
//! Needs a server: `KEYGATE_TEST_PG_URL` (a maintenance URL; `tests/lib/postgres.sh`
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
        let Ok(admin_url) = std::env::var("KEYGATE_TEST_PG_URL") else {
            if std::env::var("KG_REQUIRE_PG").as_deref() == Ok("1") {
                panic!("KG_REQUIRE_PG=1 but KEYGATE_TEST_PG_URL is not set");
            }
            eprintln!("skipping {test}: KEYGATE_TEST_PG_URL is not set (tests/lib/postgres.sh)");
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
    let openai_key = "sk-proj-PLAINTEXTopenaiKEY0123456789abcdefghijklmnopqrstuv";
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
