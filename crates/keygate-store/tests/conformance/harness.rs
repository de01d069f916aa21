//! A fresh, empty store of each backend for one test.

use keygate_core::ids::UserId;
use keygate_store::{BackendKind, Store, StoreOptions};

/// One test's store and what keeps it alive (the temp dir; the database to drop).
pub struct Backend {
    store: Store,
    place: Place,
}

enum Place {
    /// Removed when the test ends.
    Sled { _dir: tempfile::TempDir },
    Postgres {
        admin: tokio_postgres::Client,
        database: String,
        url: String,
    },
}

impl Backend {
    pub fn store(&self) -> Store {
        self.store.clone()
    }

    /// Another node on the same database (its own pool), as a second keygate process
    /// would connect. `None` for sled, which one process holds alone.
    pub async fn another_node(&self) -> Option<Store> {
        match &self.place {
            Place::Sled { .. } => None,
            Place::Postgres { url, .. } => Some(
                Store::connect(url, &StoreOptions::default())
                    .await
                    .unwrap_or_else(|e| panic!("a second Store::connect: {e}")),
            ),
        }
    }

    /// Drops the test's database (PostgreSQL; nothing for sled, whose temp dir goes
    /// with `self`). `FORCE` ends the store's pooled connections, which may outlive
    /// the last handle for a moment.
    pub async fn drop_database(self) {
        let Backend { store, place } = self;
        drop(store);
        if let Place::Postgres {
            admin, database, ..
        } = place
        {
            admin
                .batch_execute(&format!("DROP DATABASE IF EXISTS {database} WITH (FORCE)"))
                .await
                .unwrap();
        }
    }
}

/// The sled store in a new temp dir.
pub fn sled() -> Backend {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path(), &StoreOptions::default()).unwrap();
    assert_eq!(store.kind(), BackendKind::Sled);
    Backend {
        store,
        place: Place::Sled { _dir: dir },
    }
}

/// The maintenance URL of the test PostgreSQL server; `None` (after a printed line)
/// when there is none and none is required.
pub fn pg_url() -> Option<String> {
    match std::env::var("KG_TEST_PG_URL") {
        Ok(url) if !url.is_empty() => Some(url),
        _ => {
            assert!(
                std::env::var("KG_REQUIRE_PG").as_deref() != Ok("1"),
                "KG_REQUIRE_PG=1 but KG_TEST_PG_URL is unset: start PostgreSQL with \
                 tests/lib/postgres.sh (kg_pg_start)"
            );
            eprintln!(
                "skipped (PostgreSQL): KG_TEST_PG_URL is unset \
                 (tests/lib/postgres.sh starts a server)"
            );
            None
        }
    }
}

/// A PostgreSQL store on a new database (`kg_conf_<random>`) of the test server, its
/// migrations applied by `Store::connect`. `None` when there is no server (see
/// [`pg_url`]).
pub async fn postgres() -> Option<Backend> {
    let url = pg_url()?;
    let (admin, connection) = tokio_postgres::connect(&url, tokio_postgres::NoTls)
        .await
        .unwrap_or_else(|e| panic!("connecting to KG_TEST_PG_URL: {e}"));
    tokio::spawn(connection);
    // An identifier cannot be a bound parameter; this one is made here from a random
    // id (lowercase base32), never from input.
    let database = format!("kg_conf_{}", UserId::generate().as_str());
    admin
        .batch_execute(&format!("CREATE DATABASE {database}"))
        .await
        .unwrap();
    let mut db_url = url::Url::parse(&url).unwrap();
    db_url.set_path(&format!("/{database}"));
    let store = Store::connect(db_url.as_str(), &StoreOptions::default())
        .await
        .unwrap_or_else(|e| panic!("Store::connect on a fresh database: {e}"));
    assert_eq!(store.kind(), BackendKind::Postgres);
    Some(Backend {
        store,
        place: Place::Postgres {
            admin,
            database,
            url: db_url.to_string(),
        },
    })
}
