//! keygate-bench: the measurement tool behind `tests/bench/run.sh` (see docs/BENCHMARKS.md).
//!
//! Subcommands, each printing one JSON object on stdout:
//! - `upstream`: a zero-work OpenAI-compatible upstream (fixed answers, no waiting);
//! - `latency`: sequential requests on one keep-alive connection (concurrency 1);
//! - `throughput`: N keep-alive connections in a closed loop for a fixed time;
//! - `hold`: opens many idle streams through a proxy and reads the proxy's RSS.
//!
//! It is a measurement tool, not a test: it asserts nothing about timings.

// A measurement tool, not product code: failing loudly and printing results is its job.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::print_stdout,
    clippy::print_stderr
)]

mod client;
mod procstat;
mod upstream;

use std::net::SocketAddr;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "keygate-bench", about = "keygate's benchmark harness")]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Serve a zero-work OpenAI upstream on `listen` until killed.
    Upstream {
        #[arg(long)]
        listen: SocketAddr,
        /// Runtime threads (1 = a current-thread runtime).
        #[arg(long, default_value_t = 1)]
        threads: usize,
    },
    /// Concurrency 1: `warmup` then `n` sequential requests on one keep-alive
    /// connection; latency percentiles (and time to first body byte with --stream).
    Latency {
        #[command(flatten)]
        target: client::TargetArgs,
        #[arg(long, default_value_t = 500)]
        warmup: usize,
        #[arg(long, default_value_t = 5000)]
        n: usize,
        #[arg(long)]
        stream: bool,
        /// Also measure this URL (e.g. the upstream itself), alternating requests with
        /// --url; its figures go under "baseline".
        #[arg(long)]
        baseline_url: Option<String>,
        #[arg(long, default_value = "sk-bench")]
        baseline_key: String,
        /// Split the run into this many rounds, each on new connections.
        #[arg(long, default_value_t = 1)]
        rounds: usize,
        /// `name=pid`: processes (with their children) whose CPU time is read.
        #[arg(long)]
        watch: Vec<String>,
        /// Clock ticks per second of /proc/PID/stat (`getconf CLK_TCK`).
        #[arg(long, default_value_t = 100)]
        clk_tck: u64,
    },
    /// Closed loop on `concurrency` keep-alive connections: warm up, then count
    /// completions for `secs` seconds.
    Throughput {
        #[command(flatten)]
        target: client::TargetArgs,
        #[arg(long, default_value_t = 64)]
        concurrency: usize,
        #[arg(long, default_value_t = 2.0)]
        warmup_secs: f64,
        #[arg(long, default_value_t = 10.0)]
        secs: f64,
        /// Load generator runtime threads (1 = a current-thread runtime).
        #[arg(long, default_value_t = 1)]
        threads: usize,
        #[arg(long)]
        stream: bool,
        /// `name=pid`: processes (with their children) whose CPU time is read over
        /// the measured window.
        #[arg(long)]
        watch: Vec<String>,
        /// Clock ticks per second of /proc/PID/stat (`getconf CLK_TCK`).
        #[arg(long, default_value_t = 100)]
        clk_tck: u64,
    },
    /// Open `n` streams that the upstream holds open after the first event; read the
    /// RSS of `pid` before, with all open, and after closing them.
    Hold {
        #[command(flatten)]
        target: client::TargetArgs,
        #[arg(long, default_value_t = 1000)]
        n: usize,
        #[arg(long)]
        pid: u32,
        /// The zero-work upstream's base (http://host:port), to read its open-stream count.
        #[arg(long)]
        upstream: String,
        #[arg(long, default_value_t = 2000)]
        settle_ms: u64,
        /// After closing, how long to wait for the upstream to see its streams go.
        #[arg(long, default_value_t = 10_000)]
        release_wait_ms: u64,
    },
}

fn main() {
    let cli = Cli::parse();
    let out = match cli.cmd {
        Cmd::Upstream { listen, threads } => {
            upstream::serve(listen, threads);
            return;
        }
        Cmd::Latency {
            target,
            warmup,
            n,
            stream,
            baseline_url,
            baseline_key,
            rounds,
            watch,
            clk_tck,
        } => {
            let baseline = baseline_url.map(|url| client::TargetArgs {
                url,
                key: baseline_key,
                model: target.model.clone(),
            });
            client::latency(
                &target,
                baseline.as_ref(),
                client::LatencyOpts {
                    warmup,
                    n,
                    stream,
                    rounds,
                    watch: parse_watch(&watch),
                    clk_tck,
                },
            )
        }
        Cmd::Throughput {
            target,
            concurrency,
            warmup_secs,
            secs,
            threads,
            stream,
            watch,
            clk_tck,
        } => client::throughput(
            &target,
            client::ThroughputOpts {
                concurrency,
                warmup_secs,
                secs,
                threads,
                stream,
                watch: parse_watch(&watch),
                clk_tck,
            },
        ),
        Cmd::Hold {
            target,
            n,
            pid,
            upstream,
            settle_ms,
            release_wait_ms,
        } => client::hold(&target, n, pid, &upstream, settle_ms, release_wait_ms),
    };
    println!("{out}");
}

fn parse_watch(watch: &[String]) -> Vec<(String, u32)> {
    watch
        .iter()
        .map(|w| {
            let (name, pid) = w.split_once('=').expect("--watch name=pid");
            (name.to_owned(), pid.parse().expect("--watch name=pid"))
        })
        .collect()
}
