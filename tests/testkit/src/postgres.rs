//! A fresh PostgreSQL database per test, on the server `tests/lib/postgres.sh` started
//! (`KEYGATE_TEST_PG_URL`, a maintenance URL). Without one a test skips with a printed
//! line — unless `KG_REQUIRE_PG=1` (tests/run.sh sets it), when it fails.

use std::sync::atomic::{AtomicU64, Ordering};

/// One test's database; [`TestDatabase::drop_database`] removes it.
pub struct TestDatabase {
    /// A URL for keygate (`store_url`), the password included.
    pub url: String,
    name: String,
    admin: tokio_postgres::Client,
}

/// The maintenance URL, or `None` (after a printed line) when there is none and none
/// is required.
pub fn maintenance_url() -> Option<String> {
    match std::env::var("KEYGATE_TEST_PG_URL") {
        Ok(url) if !url.is_empty() => Some(url),
        _ => {
            assert!(
                std::env::var("KG_REQUIRE_PG").as_deref() != Ok("1"),
                "KG_REQUIRE_PG=1 but KEYGATE_TEST_PG_URL is unset: start PostgreSQL with \
                 tests/lib/postgres.sh (kg_pg_start)"
            );
            eprintln!("skipping: KEYGATE_TEST_PG_URL is unset (tests/lib/postgres.sh)");
            None
        }
    }
}

/// A new, empty database named `kg_<prefix>_<unique>`; `None` when there is no server
/// (see the module docs).
pub async fn fresh_database(prefix: &str) -> Option<TestDatabase> {
    static N: AtomicU64 = AtomicU64::new(0);
    let maintenance = maintenance_url()?;
    let (admin, connection) = tokio_postgres::connect(&maintenance, tokio_postgres::NoTls)
        .await
        .expect("connect to the test PostgreSQL");
    tokio::spawn(connection);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .subsec_nanos();
    let name = format!(
        "kg_{prefix}_{}_{}_{nanos}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    );
    admin
        .batch_execute(&format!("CREATE DATABASE {name}"))
        .await
        .expect("create the test database");
    let mut url = url::Url::parse(&maintenance).expect("maintenance URL");
    url.set_path(&name);
    Some(TestDatabase {
        url: url.to_string(),
        name,
        admin,
    })
}

impl TestDatabase {
    /// Removes the database, ending any connection still open to it.
    pub async fn drop_database(self) {
        self.admin
            .batch_execute(&format!(
                "DROP DATABASE IF EXISTS {} WITH (FORCE)",
                self.name
            ))
            .await
            .expect("drop the test database");
    }
}
