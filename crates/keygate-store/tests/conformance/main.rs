//! The store conformance suite: every behaviour of the [`StoreBackend`] interface,
//! written once as `async fn case(store: Store)` and run against each backend by
//! [`conformance!`]: `sled` on a fresh temp dir, `postgres` on a fresh database of the
//! server named by `KG_TEST_PG_URL` (tests/lib/postgres.sh starts one). A
//! behaviour the server relies on is a behaviour of the interface, so both backends
//! must pass every case; what only one backend does (sled's reopen and lock, sled's
//! cache sizes, PostgreSQL's migrations) is tested beside that backend instead.
//!
//! Without `KG_TEST_PG_URL` the `postgres` instantiations print a line and pass,
//! unless `KG_REQUIRE_PG=1` (set by tests/run.sh), where they fail.
//!
//! `cargo test -p keygate-store --test conformance -- sled` runs one backend.

// Integration-test helpers are test code too; clippy only exempts #[test] fns.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::print_stderr
)]

mod fixtures;
mod harness;

mod audit;
mod caches;
mod ceremonies;
mod copy;
mod deletion;
mod grants;
mod limits;
mod nodes;
mod pages;
mod passkeys;
mod records;
mod sessions;
mod usage;

/// Every method of the interface is called by this suite: a method added to
/// `StoreBackend` fails this test until a case exercises it.
#[test]
fn every_interface_method_is_exercised() {
    let api = include_str!("../../src/api.rs");
    let suite = [
        include_str!("audit.rs"),
        include_str!("caches.rs"),
        include_str!("ceremonies.rs"),
        include_str!("copy.rs"),
        include_str!("deletion.rs"),
        include_str!("grants.rs"),
        include_str!("harness.rs"),
        include_str!("limits.rs"),
        include_str!("nodes.rs"),
        include_str!("pages.rs"),
        include_str!("passkeys.rs"),
        include_str!("records.rs"),
        include_str!("sessions.rs"),
        include_str!("usage.rs"),
    ]
    .concat();
    let interface = api
        .split("pub trait StoreBackend")
        .nth(1)
        .expect("the trait in api.rs");
    let methods: Vec<&str> = interface
        .lines()
        .filter_map(|l| {
            let l = l.trim();
            l.strip_prefix("async fn ")
                .or_else(|| l.strip_prefix("fn "))
        })
        .filter_map(|rest| rest.split(['(', '<']).next())
        .collect();
    assert!(methods.len() > 60, "read {} methods", methods.len());
    let missing: Vec<&&str> = methods
        .iter()
        .filter(|m| !suite.contains(&format!(".{m}(")))
        .collect();
    assert!(missing.is_empty(), "methods no case calls: {missing:?}");
}

/// `conformance!(case_a, case_b)`: for each `async fn case(store: Store)` in the
/// calling module, a module `case` with two tests, `sled` and `postgres`, each handing
/// the case a fresh, empty store of its backend.
#[macro_export]
macro_rules! conformance {
    ($($case:ident),* $(,)?) => {
        $(
            mod $case {
                #[tokio::test(flavor = "multi_thread", worker_threads = 8)]
                async fn sled() {
                    let backend = $crate::harness::sled();
                    super::$case(backend.store()).await;
                }

                #[tokio::test(flavor = "multi_thread", worker_threads = 8)]
                async fn postgres() {
                    let Some(backend) = $crate::harness::postgres().await else {
                        return;
                    };
                    super::$case(backend.store()).await;
                    backend.drop_database().await;
                }
            }
        )*
    };
}

/// `conformance_pair!(case)`: like [`conformance!`] for `async fn case(a: Store, b:
/// Store)`, two fresh, empty stores of the same backend (what moves data between them).
#[macro_export]
macro_rules! conformance_pair {
    ($($case:ident),* $(,)?) => {
        $(
            mod $case {
                #[tokio::test(flavor = "multi_thread", worker_threads = 8)]
                async fn sled() {
                    let (a, b) = ($crate::harness::sled(), $crate::harness::sled());
                    super::$case(a.store(), b.store()).await;
                }

                #[tokio::test(flavor = "multi_thread", worker_threads = 8)]
                async fn postgres() {
                    let Some(a) = $crate::harness::postgres().await else {
                        return;
                    };
                    let Some(b) = $crate::harness::postgres().await else {
                        return;
                    };
                    super::$case(a.store(), b.store()).await;
                    a.drop_database().await;
                    b.drop_database().await;
                }
            }
        )*
    };
}
