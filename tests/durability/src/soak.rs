//! Soak: N mixed requests (JSON and streamed answers, abandoned streams, upstream
//! errors and broken streams, refusals, grant rotations, the key stored again) through
//! the real keygate at `RUST_LOG=trace`, with a canary OpenAI key. Every response (head
//! and body), `/metrics` (scraped through the run), the logs and the data directory are
//! searched for the canary: 0 hits. keygate's RSS and open file descriptors are sampled
//! through the run and must stay flat after the warm-up (the curve is printed).

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail, ensure};
use futures::StreamExt;
use keygate_testkit::mock_openai::MockOpenAi;
use serde_json::{Value, json};

use crate::keygate::{self, ADMIN_KEY, Launch};
use crate::util::{Rng, StreamScan, contains, files_under};

pub struct Opts {
    pub requests: u64,
    pub concurrency: usize,
    pub seed: u64,
}

/// Grants the load spreads over (each rotated now and then).
const GRANTS: usize = 4;
/// One grant rotation every this many requests, and the canary stored again every
/// `RESTORE_EVERY`.
const ROTATE_EVERY: u64 = 400;
const RESTORE_EVERY: u64 = 2_500;

#[derive(Clone, Copy, Debug)]
struct Sample {
    done: u64,
    secs: f64,
    rss_kib: u64,
    fds: u64,
}

struct Shared {
    client: reqwest::Client,
    base: String,
    keys: RwLock<Vec<String>>,
    grant_ids: Vec<String>,
    user_id: String,
    canary: String,
    needles: Vec<Vec<u8>>,
    next: AtomicU64,
    done: AtomicU64,
    total: u64,
    hits: AtomicU64,
    bodies: AtomicU64,
    bytes: AtomicU64,
    /// `op status` → count.
    statuses: Mutex<BTreeMap<String, u64>>,
    finished: AtomicBool,
}

pub async fn run(opts: Opts) -> Result<()> {
    let started = Instant::now();
    let mock = MockOpenAi::try_start().context("start the mock OpenAI")?;
    let dir = tempfile::Builder::new().prefix("keygate-soak-").tempdir()?;
    let launch = Launch {
        bin: keygate::binary()?,
        data_dir: dir.path().join("data"),
        port: keygate::free_port()?,
        upstream: mock.base_url(),
        rust_log: "trace".into(),
        log: dir.path().join("keygate.log"),
        env: vec![
            ("KEYGATE_WORKERS".into(), "2".into()),
            ("KEYGATE_SHUTDOWN_TIMEOUT_SECS".into(), "5".into()),
        ],
        public: None,
    };
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(60))
        .build()?;
    let mut kg = launch.spawn()?;
    kg.ready(&client, Duration::from_secs(120)).await?;
    let canary = format!(
        "sk-canary-soak-{:016x}{:08x}-ZQXJ",
        opts.seed,
        std::process::id()
    );
    // The whole key, and a piece of its middle (a log that cut or masked it).
    let needles = vec![
        canary.as_bytes().to_vec(),
        canary.as_bytes()[10..30].to_vec(),
    ];
    println!(
        "soak: {} requests, {} at a time, RUST_LOG=trace, keygate pid {}, data {}",
        opts.requests,
        opts.concurrency,
        kg.pid,
        launch.data_dir.display()
    );

    let admin = |m: reqwest::Method, path: &str| {
        client
            .request(m, format!("{}{path}", kg.base))
            .bearer_auth(ADMIN_KEY)
    };
    let user: Value = admin(reqwest::Method::POST, "/admin/users")
        .json(&json!({"name": "Soak"}))
        .send()
        .await?
        .json()
        .await?;
    let user_id = user["id"].as_str().context("user id")?.to_owned();
    let put = admin(
        reqwest::Method::PUT,
        &format!("/admin/users/{user_id}/openai-key"),
    )
    .json(&json!({"api_key": canary}))
    .send()
    .await?;
    ensure!(put.status() == 204, "store the canary: {}", put.status());
    let mut keys = Vec::new();
    let mut grant_ids = Vec::new();
    for i in 0..GRANTS {
        let v: Value = admin(
            reqwest::Method::POST,
            &format!("/admin/users/{user_id}/grants"),
        )
        .json(&json!({"name": format!("soak {i}")}))
        .send()
        .await?
        .json()
        .await?;
        keys.push(v["api_key"].as_str().context("api key")?.to_owned());
        grant_ids.push(v["grant"]["id"].as_str().context("grant id")?.to_owned());
    }
    let shared = Arc::new(Shared {
        client: client.clone(),
        base: kg.base.clone(),
        keys: RwLock::new(keys),
        grant_ids,
        user_id,
        canary: canary.clone(),
        needles,
        next: AtomicU64::new(0),
        done: AtomicU64::new(0),
        total: opts.requests,
        hits: AtomicU64::new(0),
        bodies: AtomicU64::new(0),
        bytes: AtomicU64::new(0),
        statuses: Mutex::new(BTreeMap::new()),
        finished: AtomicBool::new(false),
    });

    let sampler = tokio::spawn(sample(Arc::clone(&shared), kg.pid, started));
    let workers: Vec<_> = (0..opts.concurrency)
        .map(|i| {
            let shared = Arc::clone(&shared);
            let rng = Rng::new(opts.seed ^ ((i as u64 + 1) << 40));
            tokio::spawn(async move { work(shared, rng).await })
        })
        .collect();
    let mut failure = None;
    for w in workers {
        match w.await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => failure = failure.or(Some(e)),
            Err(e) => failure = failure.or(Some(anyhow!("worker: {e}"))),
        }
    }
    shared.finished.store(true, Ordering::SeqCst);
    let samples = sampler.await.map_err(|e| anyhow!("sampler: {e}"))??;
    if let Some(e) = failure {
        println!(
            "keygate's log (end):\n{}",
            keygate::log_tail(&launch.log, 20)
        );
        return Err(e);
    }
    let load_secs = started.elapsed().as_secs_f64();
    scan_metrics(&shared).await?;
    let status = kg.terminate(Duration::from_secs(60))?;
    ensure!(status.success(), "keygate's stop failed: {status}");

    // The canary really went upstream, on (nearly) every forwarded request: this soak
    // can fail.
    let carried = mock
        .requests()
        .iter()
        .filter(|r| r.header("authorization") == Some(format!("Bearer {canary}").as_str()))
        .count();
    ensure!(carried > 0, "the canary never reached the upstream");

    let log_bytes = std::fs::metadata(&launch.log)?.len();
    let log = std::fs::read(&launch.log)?;
    ensure!(
        contains(&log, b" TRACE "),
        "RUST_LOG=trace did not take effect"
    );
    let mut hits_logs = 0;
    for n in &shared.needles {
        if contains(&log, n) {
            hits_logs += 1;
        }
    }
    drop(log);
    let mut hits_data = Vec::new();
    let mut data_bytes = 0u64;
    for file in files_under(&launch.data_dir)? {
        if file.ends_with("master.keys") {
            continue;
        }
        let bytes = std::fs::read(&file)?;
        data_bytes += bytes.len() as u64;
        if shared.needles.iter().any(|n| contains(&bytes, n)) {
            hits_data.push(file.display().to_string());
        }
    }
    let hits_responses = shared.hits.load(Ordering::SeqCst);

    print_curve(&samples);
    let statuses = shared
        .statuses
        .lock()
        .map_err(|_| anyhow!("statuses lock"))?
        .clone();
    println!("soak: answers by kind and status: {statuses:?}");
    println!(
        "soak: {} requests in {:.0}s, canary forwarded upstream {} times; searched {} responses \
         ({} bytes), /metrics, {} bytes of trace logs, {} bytes of data directory: canary \
         found {} times (responses {}, logs {}, data {})",
        shared.done.load(Ordering::SeqCst),
        load_secs,
        carried,
        shared.bodies.load(Ordering::SeqCst),
        shared.bytes.load(Ordering::SeqCst),
        log_bytes,
        data_bytes,
        hits_responses + hits_logs + hits_data.len() as u64,
        hits_responses,
        hits_logs,
        hits_data.len()
    );
    ensure!(hits_responses == 0, "the canary appeared in a response");
    ensure!(hits_logs == 0, "the canary appeared in keygate's log");
    ensure!(
        hits_data.is_empty(),
        "the canary appeared in the data directory: {hits_data:?}"
    );
    flat(&samples)?;
    Ok(())
}

/// What a worker sends: the kind of request, and the statuses that are right for it.
#[derive(Clone, Copy, Debug)]
enum Op {
    Chat,
    Stream,
    Abandoned,
    UpstreamError(&'static str, u16),
    Broken,
    Embeddings,
    Models,
    KeyInfo,
    BadKey,
    BadJson,
    Report,
}

async fn work(sh: Arc<Shared>, mut rng: Rng) -> Result<()> {
    loop {
        let i = sh.next.fetch_add(1, Ordering::SeqCst);
        if i >= sh.total {
            return Ok(());
        }
        if i > 0 && i.is_multiple_of(ROTATE_EVERY) {
            rotate(&sh, (i / ROTATE_EVERY) as usize % GRANTS).await?;
        }
        if i > 0 && i.is_multiple_of(RESTORE_EVERY) {
            let res = sh
                .client
                .put(format!("{}/admin/users/{}/openai-key", sh.base, sh.user_id))
                .bearer_auth(ADMIN_KEY)
                .json(&json!({"api_key": sh.canary}))
                .send()
                .await?;
            scan_response(&sh, "store-key", res, None).await?;
        }
        let op = match rng.weighted(&[40, 18, 10, 3, 3, 3, 5, 5, 4, 3, 3, 2, 1]) {
            0 => Op::Chat,
            1 => Op::Stream,
            2 => Op::Abandoned,
            3 => Op::UpstreamError("error-500", 500),
            4 => Op::UpstreamError("error-429", 429),
            5 => Op::UpstreamError("error-400", 400),
            6 => Op::Broken,
            7 => Op::Embeddings,
            8 => Op::Models,
            9 => Op::KeyInfo,
            10 => Op::BadKey,
            11 => Op::BadJson,
            _ => Op::Report,
        };
        let key = {
            let keys = sh.keys.read().map_err(|_| anyhow!("keys lock"))?;
            keys[rng.below(keys.len() as u64) as usize].clone()
        };
        one(&sh, op, &key)
            .await
            .with_context(|| format!("request {i} ({op:?})"))?;
        sh.done.fetch_add(1, Ordering::SeqCst);
    }
}

async fn one(sh: &Shared, op: Op, key: &str) -> Result<()> {
    let chat = |stream: bool| {
        json!({"model": "gpt-4o-mini", "stream": stream,
               "messages": [{"role": "user", "content": "soak"}]})
    };
    let v1 = |m: reqwest::Method, path: &str| {
        sh.client
            .request(m, format!("{}/v1{path}", sh.base))
            .bearer_auth(key)
    };
    let post = reqwest::Method::POST;
    let (req, want, keep): (reqwest::RequestBuilder, &[u16], Option<usize>) = match op {
        Op::Chat => (
            v1(post, "/chat/completions").json(&chat(false)),
            &[200],
            None,
        ),
        Op::Stream => (
            v1(post, "/chat/completions").json(&chat(true)),
            &[200],
            None,
        ),
        Op::Abandoned => (
            v1(post, "/chat/completions")
                .header("x-mock-scenario", "long-stream")
                .header("x-mock-delay-ms", "5")
                .json(&chat(true)),
            &[200],
            Some(2),
        ),
        Op::UpstreamError(scenario, status) => (
            v1(post, "/chat/completions")
                .header("x-mock-scenario", scenario)
                .json(&chat(true)),
            match status {
                500 => &[500],
                429 => &[429],
                _ => &[400],
            },
            None,
        ),
        Op::Broken => (
            v1(post, "/chat/completions")
                .header("x-mock-scenario", "reset-mid-stream")
                .json(&chat(true)),
            &[200],
            None,
        ),
        Op::Embeddings => (
            v1(post, "/embeddings")
                .json(&json!({"model": "text-embedding-3-small", "input": "soak"})),
            &[200],
            None,
        ),
        Op::Models => (v1(reqwest::Method::GET, "/models"), &[200], None),
        Op::KeyInfo => (v1(reqwest::Method::GET, "/key"), &[200], None),
        Op::BadKey => (
            sh.client
                .post(format!("{}/v1/chat/completions", sh.base))
                .bearer_auth(format!("{key}x"))
                .json(&chat(false)),
            &[401],
            None,
        ),
        Op::BadJson => (
            v1(post, "/chat/completions")
                .header("content-type", "application/json")
                .body("{\"model\": \"gpt-4o-mini\", \"messages\": ["),
            &[400],
            None,
        ),
        Op::Report => {
            let grant = &sh.grant_ids[0];
            (
                sh.client
                    .get(format!("{}/admin/grants/{grant}/usage", sh.base))
                    .bearer_auth(ADMIN_KEY),
                &[200],
                None,
            )
        }
    };
    let res = req.send().await?;
    let status = res.status().as_u16();
    let name = format!("{op:?}")
        .split('(')
        .next()
        .unwrap_or("?")
        .to_owned();
    scan_response(sh, &name, res, keep).await?;
    ensure!(
        want.contains(&status),
        "answered {status}, expected {want:?}"
    );
    Ok(())
}

/// Searches a response's head and body (the first `keep` chunks only, for an abandoned
/// stream; a body that breaks is searched as far as it came) and counts its status.
async fn scan_response(
    sh: &Shared,
    op: &str,
    res: reqwest::Response,
    keep: Option<usize>,
) -> Result<()> {
    let status = res.status().as_u16();
    *sh.statuses
        .lock()
        .map_err(|_| anyhow!("statuses lock"))?
        .entry(format!("{op} {status}"))
        .or_default() += 1;
    let mut scan = StreamScan::new(&sh.needles);
    scan.feed(format!("{:?}", res.headers()).as_bytes());
    let mut body = res.bytes_stream();
    let mut chunks = 0;
    while let Some(chunk) = body.next().await {
        match chunk {
            Ok(b) => scan.feed(&b),
            Err(_) => break,
        }
        chunks += 1;
        if keep.is_some_and(|k| chunks >= k) {
            break;
        }
    }
    sh.hits.fetch_add(scan.hits as u64, Ordering::SeqCst);
    sh.bodies.fetch_add(1, Ordering::SeqCst);
    sh.bytes.fetch_add(scan.bytes, Ordering::SeqCst);
    Ok(())
}

/// Rotates grant `gi` with a grace period, so requests already holding the old key
/// still pass; the workers take the new key from now on.
async fn rotate(sh: &Shared, gi: usize) -> Result<()> {
    let res = sh
        .client
        .post(format!(
            "{}/admin/grants/{}/rotate",
            sh.base, sh.grant_ids[gi]
        ))
        .bearer_auth(ADMIN_KEY)
        .json(&json!({"grace_seconds": 60}))
        .send()
        .await?;
    ensure!(res.status() == 200, "rotate: {}", res.status());
    let text = res.bytes().await?;
    let mut scan = StreamScan::new(&sh.needles);
    scan.feed(&text);
    sh.hits.fetch_add(scan.hits as u64, Ordering::SeqCst);
    let v: Value = serde_json::from_slice(&text)?;
    let key = v["api_key"].as_str().context("rotated key")?.to_owned();
    sh.keys.write().map_err(|_| anyhow!("keys lock"))?[gi] = key;
    Ok(())
}

async fn scan_metrics(sh: &Shared) -> Result<()> {
    let text = sh
        .client
        .get(format!("{}/metrics", sh.base))
        .send()
        .await?
        .bytes()
        .await?;
    let mut scan = StreamScan::new(&sh.needles);
    scan.feed(&text);
    sh.hits.fetch_add(scan.hits as u64, Ordering::SeqCst);
    sh.bodies.fetch_add(1, Ordering::SeqCst);
    sh.bytes.fetch_add(scan.bytes, Ordering::SeqCst);
    Ok(())
}

/// Every 250 ms: keygate's resident memory and open descriptors (from /proc), and now
/// and then `/metrics` (searched for the canary too).
async fn sample(sh: Arc<Shared>, pid: u32, started: Instant) -> Result<Vec<Sample>> {
    let mut samples = Vec::new();
    let mut tick = 0u64;
    while !sh.finished.load(Ordering::SeqCst) {
        let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
            .context("read /proc/PID/status (the soak needs Linux)")?;
        let rss_kib = status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .context("no VmRSS")?;
        let fds = std::fs::read_dir(format!("/proc/{pid}/fd"))?.count() as u64;
        samples.push(Sample {
            done: sh.done.load(Ordering::SeqCst),
            secs: started.elapsed().as_secs_f64(),
            rss_kib,
            fds,
        });
        tick += 1;
        if tick.is_multiple_of(8) {
            scan_metrics(&sh).await?;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    Ok(samples)
}

/// About 20 rows of the samples: requests done, seconds, RSS, descriptors.
fn print_curve(samples: &[Sample]) {
    println!("soak: keygate's RSS and open fds through the run");
    println!(
        "  {:>8} {:>7} {:>9} {:>5}",
        "requests", "secs", "RSS MiB", "fds"
    );
    let step = (samples.len() / 20).max(1);
    for (i, s) in samples.iter().enumerate() {
        if i % step == 0 || i + 1 == samples.len() {
            println!(
                "  {:>8} {:>7.1} {:>9.1} {:>5}",
                s.done,
                s.secs,
                s.rss_kib as f64 / 1024.0,
                s.fds
            );
        }
    }
}

/// After the warm-up (the first fifth of the requests: pools filled, the tokenizer a
/// cut stream needs built), the last quarter's memory is within 25 % + 16 MiB of what
/// the warm-up ended with, and the descriptors never exceed the warm-up's most by
/// more than 16 (connections come and go with the load; a leak grows without bound).
fn flat(samples: &[Sample]) -> Result<()> {
    let total = samples.last().map_or(0, |s| s.done);
    let warm: Vec<&Sample> = samples.iter().filter(|s| s.done <= total / 5).collect();
    let after: Vec<&Sample> = samples.iter().filter(|s| s.done > total / 5).collect();
    if warm.len() < 2 || after.len() < 4 {
        println!(
            "soak: too few samples ({}) to judge the memory curve; run more requests",
            samples.len()
        );
        return Ok(());
    }
    let warm_rss = warm.last().map_or(0, |s| s.rss_kib);
    let warm_fds = warm.iter().map(|s| s.fds).max().unwrap_or(0);
    let tail = &after[after.len() * 3 / 4..];
    let mut tail_rss: Vec<u64> = tail.iter().map(|s| s.rss_kib).collect();
    tail_rss.sort_unstable();
    let median = tail_rss[tail_rss.len() / 2];
    let max_fds = after.iter().map(|s| s.fds).max().unwrap_or(0);
    println!(
        "soak: RSS at the end of the warm-up {:.1} MiB, median of the last quarter {:.1} MiB \
         ({:+.1} %); fds most during warm-up {warm_fds}, after {max_fds}",
        warm_rss as f64 / 1024.0,
        median as f64 / 1024.0,
        (median as f64 / warm_rss.max(1) as f64 - 1.0) * 100.0
    );
    if median > warm_rss + warm_rss / 4 + 16 * 1024 {
        bail!("keygate's memory kept growing after the warm-up");
    }
    if max_fds > warm_fds + 16 {
        bail!("keygate's open file descriptors kept growing after the warm-up");
    }
    Ok(())
}
