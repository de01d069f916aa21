//! keygate's crash durability harness and soak, run against the real `keygate` binary.
//!
//! ```text
//! keygate-durability crash   # KG_DURA_CYCLES (default 30), KG_DURA_WORKERS (3), KG_DURA_SEED
//! keygate-durability soak    # KG_SOAK_REQUESTS (default 20000), KG_SOAK_CONCURRENCY (8)
//! keygate-durability cluster # KG_DURA_NODES (3) on PostgreSQL (KG_TEST_PG_URL),
//!                            # KG_DURA_CYCLES (10), KG_DURA_WORKERS (6), KG_DURA_SEED
//! ```
//!
//! Both print their figures on stdout and exit non-zero on the first broken promise
//! (docs/OPERATIONS.md, "Durability and soak"). `tests/durability/run.sh` builds and runs
//! both with CI sizes.
// A command-line harness: its report is its output, and a failure is a message and an
// exit code (anyhow), never a panic.
#![allow(clippy::print_stdout)]

mod crash;
mod keygate;
mod soak;
mod util;

use anyhow::{Context, Result, bail};

fn env_u64(name: &str, default: u64) -> Result<u64> {
    match std::env::var(name) {
        Ok(v) => v
            .trim()
            .parse()
            .with_context(|| format!("{name} must be a whole number, not {v:?}")),
        Err(_) => Ok(default),
    }
}

fn main() -> std::process::ExitCode {
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            println!("keygate-durability: no runtime: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run()) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            println!("keygate-durability: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

async fn run() -> Result<()> {
    run_mode(&std::env::args().nth(1).unwrap_or_default()).await
}

async fn run_mode(mode: &str) -> Result<()> {
    match mode {
        "crash" => {
            crash::run(crash::Opts {
                cycles: env_u64("KG_DURA_CYCLES", 30)?,
                seed: env_u64("KG_DURA_SEED", util::time_seed())?,
                workers: env_u64("KG_DURA_WORKERS", 3)?.max(1) as usize,
                cluster: None,
            })
            .await
        }
        "cluster" => {
            // Its own database on the test server, dropped after a pass (kept after a
            // failure, for a post-mortem).
            let Some(db) = keygate_testkit::cluster::TestDatabase::create("kg_dura").await else {
                bail!(
                    "cluster mode needs PostgreSQL: set KG_TEST_PG_URL (tests/cluster/run.sh does)"
                );
            };
            crash::run(crash::Opts {
                cycles: env_u64("KG_DURA_CYCLES", 10)?,
                seed: env_u64("KG_DURA_SEED", util::time_seed())?,
                workers: env_u64("KG_DURA_WORKERS", 6)?.max(1) as usize,
                cluster: Some(crash::Cluster {
                    nodes: env_u64("KG_DURA_NODES", 3)?.max(2) as usize,
                    store_url: db.url.clone(),
                }),
            })
            .await?;
            db.drop_database().await;
            Ok(())
        }
        "soak" => {
            soak::run(soak::Opts {
                requests: env_u64("KG_SOAK_REQUESTS", 20_000)?,
                concurrency: env_u64("KG_SOAK_CONCURRENCY", 8)?.max(1) as usize,
                seed: env_u64("KG_DURA_SEED", util::time_seed())?,
            })
            .await
        }
        _ => bail!(
            "usage: keygate-durability crash|soak|cluster\n  \
             crash: SIGKILL keygate under load and check every acknowledged write \
             (KG_DURA_CYCLES=30, KG_DURA_WORKERS=3, KG_DURA_SEED)\n  \
             soak: KG_SOAK_REQUESTS=20000 mixed requests with a canary OpenAI key \
             (KG_SOAK_CONCURRENCY=8)\n  \
             cluster: KG_DURA_NODES=3 nodes on PostgreSQL (KG_TEST_PG_URL), one SIGKILLed \
             per cycle, acknowledged writes checked through the others (KG_DURA_CYCLES=10)"
        ),
    }
}

/// How `tests/durability/run.sh` runs the harness: as an ignored test of this binary,
/// built by `cargo test --workspace` with the suite's own feature set, so after the
/// suite nothing is compiled again (a plain `cargo build -p keygate -p
/// keygate-durability` unifies features differently and rebuilds most of keygate).
#[cfg(test)]
mod run_sh {
    #[test]
    #[ignore = "minutes long, needs the keygate binary: run by tests/durability/run.sh"]
    fn harness() {
        let modes = std::env::var("KG_DURA_MODE").unwrap_or_else(|_| "both".into());
        let modes: &[&str] = match modes.as_str() {
            "crash" => &["crash"],
            "soak" => &["soak"],
            "cluster" => &["cluster"],
            _ => &["crash", "soak"],
        };
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("tokio runtime");
        for mode in modes {
            if let Err(e) = runtime.block_on(super::run_mode(mode)) {
                panic!("{mode}: {e:#}");
            }
        }
    }
}
