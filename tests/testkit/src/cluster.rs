//! [`TestCluster`]: several real keygate servers (in-process, each on its own port and
//! data dir) sharing ONE fresh PostgreSQL database, the same master keys, admin key and
//! public URL — what a load balancer in front of stateless nodes looks like. A
//! [`crate::browser::Browser`] reaches a chosen node with [`crate::browser::Browser::via`]
//! and keeps its public `Origin` and its cookie jar (cookies are per host, not per port,
//! so a session cookie set by one `localhost` node is sent to every other).
//!
//! Needs `KG_TEST_PG_URL` (a maintenance URL: the cluster creates its own database
//! with it; tests/lib/postgres.sh starts a server). Unset, [`TestCluster::spawn`] prints
//! a line and answers `None` — unless `KG_REQUIRE_PG=1`, then it fails.

use keygate_core::time::Clock;
use keygate_server::config::RawConfig;

use crate::app::{TestApp, spawn_app_with_clock};
use crate::mock_openai::MockOpenAi;

pub struct TestCluster {
    /// The nodes, each a full [`TestApp`] (its own port, data dir and, unused, mock);
    /// each node's `address` and `base_url` are the node itself (its helpers reach
    /// it), while its configured public URL is the cluster's [`TestCluster::public_url`].
    pub nodes: Vec<TestApp>,
    /// The public URL every node is configured with (the "load balancer"): the
    /// browsers' `Origin` and the passkeys' relying party. Nothing listens there.
    pub public_url: String,
    /// `http://localhost:PORT` of each node, in `nodes` order: what [`Browser::via`]
    /// takes (a `localhost` URL, so the browser's cookies go with it).
    ///
    /// [`Browser::via`]: crate::browser::Browser::via
    pub urls: Vec<String>,
    /// The one upstream every node forwards to.
    pub mock: MockOpenAi,
    /// The cluster's own database URL (`KG_TEST_PG_URL` with its database).
    pub store_url: String,
    database: TestDatabase,
}

/// A new, empty database on the test PostgreSQL server, for one test or harness run.
pub struct TestDatabase {
    /// `KG_TEST_PG_URL` with this database: what `store_url` takes.
    pub url: String,
    name: String,
    maintenance: tokio_postgres::Client,
}

impl TestDatabase {
    /// `CREATE DATABASE <prefix>_<random>` with the maintenance URL; `None` when there
    /// is no test server (see [`pg_url`]). `prefix`: lowercase letters and `_`.
    pub async fn create(prefix: &str) -> Option<TestDatabase> {
        assert!(
            prefix.bytes().all(|b| b.is_ascii_lowercase() || b == b'_'),
            "a database prefix is lowercase letters and _"
        );
        let maintenance_url = pg_url()?;
        let (maintenance, connection) =
            tokio_postgres::connect(&maintenance_url, tokio_postgres::NoTls)
                .await
                .unwrap_or_else(|e| panic!("connecting to KG_TEST_PG_URL: {e}"));
        tokio::spawn(connection);
        // An identifier cannot be a bound parameter: this one is made here from a
        // checked prefix and a random id (lowercase base32), never from input.
        let name = format!(
            "{prefix}_{}",
            keygate_core::ids::UserId::generate().as_str()
        );
        maintenance
            .batch_execute(&format!("CREATE DATABASE {name}"))
            .await
            .expect("CREATE DATABASE");
        let mut url = url::Url::parse(&maintenance_url).expect("KG_TEST_PG_URL is a URL");
        url.set_path(&format!("/{name}"));
        Some(TestDatabase {
            url: url.to_string(),
            name,
            maintenance,
        })
    }

    /// Drops the database. `FORCE`: stopped nodes' pooled connections may outlive
    /// them by a moment.
    pub async fn drop_database(self) {
        let _ = self
            .maintenance
            .batch_execute(&format!(
                "DROP DATABASE IF EXISTS {} WITH (FORCE)",
                self.name
            ))
            .await;
    }
}

/// The maintenance URL of the test PostgreSQL server; `None` (after a printed line)
/// when none is configured and none is required.
#[allow(clippy::print_stderr)]
pub fn pg_url() -> Option<String> {
    match std::env::var("KG_TEST_PG_URL") {
        Ok(url) if !url.is_empty() => Some(url),
        _ => {
            // The skip is reported where a test's output goes: a silent skip would
            // read as a pass.
            assert!(
                std::env::var("KG_REQUIRE_PG").as_deref() != Ok("1"),
                "KG_REQUIRE_PG=1 but KG_TEST_PG_URL is unset: start PostgreSQL with \
                 tests/lib/postgres.sh (kg_pg_start)"
            );
            eprintln!(
                "skipped (cluster, PostgreSQL): KG_TEST_PG_URL is unset \
                 (tests/lib/postgres.sh starts a server)"
            );
            None
        }
    }
}

impl TestCluster {
    /// `n` nodes on a new database, the system clock; see [`TestCluster::spawn_with_clock`].
    pub async fn spawn(n: usize, adjust: impl Fn(&mut RawConfig)) -> Option<TestCluster> {
        Self::spawn_with_clock(n, Clock::system(), adjust).await
    }

    /// `n` nodes on a new database (`kg_cluster_<random>`), every node reading "now"
    /// from `clock` (one manual clock moves them all). `adjust` runs on each node's
    /// configuration after the cluster's settings (it may not change the store, keys
    /// or public URL without breaking the cluster). `None` when PostgreSQL is absent.
    pub async fn spawn_with_clock(
        n: usize,
        clock: Clock,
        adjust: impl Fn(&mut RawConfig),
    ) -> Option<TestCluster> {
        let database = TestDatabase::create("kg_cluster").await?;
        let store_url = database.url.clone();

        let mock = MockOpenAi::start().await;
        // The load balancer's address: a port reserved and released, so nothing else
        // is likely to take it during the test; no node listens there.
        let lb_port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("free port")
            .port();
        let public_url = format!("http://localhost:{lb_port}");
        let master_keys = format!("c1:{}", random_key());
        let mut nodes = Vec::with_capacity(n);
        for _ in 0..n {
            let mut node = spawn_app_with_clock(clock.clone(), |raw| {
                raw.store_url = Some(store_url.clone().into());
                raw.master_keys = Some(master_keys.clone().into());
                raw.public_url = Some(public_url.clone());
                raw.upstream_url = Some(mock.base_url());
                adjust(raw);
            })
            .await;
            // The node's own helpers (`admin`, `chat_completions`, `usage`, ...) reach
            // that node, not the public URL where nothing listens.
            node.address = format!("http://localhost:{}", node.port);
            node.base_url = format!("{}/v1", node.address);
            nodes.push(node);
        }
        let urls = nodes
            .iter()
            .map(|n| format!("http://localhost:{}", n.port))
            .collect();
        Some(TestCluster {
            nodes,
            public_url,
            urls,
            mock,
            store_url,
            database,
        })
    }

    /// A fresh browser whose `Origin` is the public URL, sending to node 0 until
    /// [`crate::browser::Browser::via`] points it elsewhere.
    pub fn browser(&self) -> crate::browser::Browser {
        let mut b = crate::browser::Browser::new(&self.public_url);
        b.via(&self.urls[0]);
        b
    }

    /// Stops every node and drops the cluster's database.
    pub async fn stop(self) {
        let TestCluster {
            nodes, database, ..
        } = self;
        for node in nodes {
            node.stop().await;
        }
        database.drop_database().await;
    }
}

/// 32 random bytes, base64url: one master key, shared by every node of the cluster.
fn random_key() -> String {
    use base64::Engine;
    let mut bytes = [0u8; 32];
    openssl::rand::rand_bytes(&mut bytes).expect("random bytes");
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}
