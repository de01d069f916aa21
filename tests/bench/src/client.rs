//! The load generator: hyper's HTTP/1.1 client connection on plain TCP (nodelay),
//! keep-alive, one request in flight per connection. Timings start right before the
//! request is handed to the connection and stop at the first body byte (ttfb) and at
//! the end of the body (total).

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::Request;
use hyper::body::Incoming;
use hyper::client::conn::http1::{self, SendRequest};
use hyper::header::{AUTHORIZATION, CONTENT_TYPE, HOST, HeaderValue};
use hyper_util::rt::TokioIo;
use serde_json::{Value, json};
use tokio::net::TcpStream;

use crate::procstat;

#[derive(clap::Args, Clone)]
pub struct TargetArgs {
    /// The chat completions endpoint, e.g. http://127.0.0.1:18080/v1/chat/completions
    #[arg(long)]
    pub url: String,
    /// Sent as `Authorization: Bearer KEY`.
    #[arg(long, default_value = "sk-bench")]
    pub key: String,
    #[arg(long, default_value = "gpt-4o-mini")]
    pub model: String,
}

struct Target {
    addr: String,
    host: HeaderValue,
    path: String,
    auth: HeaderValue,
}

impl Target {
    fn parse(args: &TargetArgs) -> Self {
        let rest = args
            .url
            .strip_prefix("http://")
            .expect("--url must start with http://");
        let (authority, path) = match rest.find('/') {
            Some(i) => (&rest[..i], &rest[i..]),
            None => (rest, "/"),
        };
        Self {
            addr: authority.to_owned(),
            host: HeaderValue::from_str(authority).expect("host"),
            path: path.to_owned(),
            auth: HeaderValue::from_str(&format!("Bearer {}", args.key)).expect("key"),
        }
    }

    fn request(&self, body: &Bytes) -> Request<Full<Bytes>> {
        let mut req = Request::post(self.path.as_str())
            .body(Full::new(body.clone()))
            .expect("request");
        let h = req.headers_mut();
        h.insert(HOST, self.host.clone());
        h.insert(AUTHORIZATION, self.auth.clone());
        h.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
        req
    }
}

fn chat_body(model: &str, stream: bool) -> Bytes {
    let mut v = json!({
        "model": model,
        "messages": [{"role": "user", "content": "Say hello."}],
    });
    if stream {
        v["stream"] = Value::Bool(true);
    }
    Bytes::from(v.to_string())
}

type Sender = SendRequest<Full<Bytes>>;

async fn connect(addr: &str) -> Result<Sender, String> {
    let tcp = TcpStream::connect(addr)
        .await
        .map_err(|e| format!("connect {addr}: {e}"))?;
    let _ = tcp.set_nodelay(true);
    let (sender, conn) = http1::handshake(TokioIo::new(tcp))
        .await
        .map_err(|e| format!("handshake: {e}"))?;
    tokio::spawn(async move {
        let _ = conn.await;
    });
    Ok(sender)
}

struct Outcome {
    ok: bool,
    ttfb: Duration,
    total: Duration,
}

async fn once(
    sender: &mut Sender,
    t: &Target,
    body: &Bytes,
    stream: bool,
) -> Result<Outcome, String> {
    sender
        .ready()
        .await
        .map_err(|e| format!("not ready: {e}"))?;
    let req = t.request(body);
    let t0 = Instant::now();
    let res = sender
        .send_request(req)
        .await
        .map_err(|e| format!("send: {e}"))?;
    let status = res.status();
    let mut b = res.into_body();
    let mut ttfb = None;
    let mut buf = Vec::with_capacity(2048);
    while let Some(frame) = b.frame().await {
        let frame = frame.map_err(|e| format!("body: {e}"))?;
        if let Ok(d) = frame.into_data()
            && !d.is_empty()
        {
            if ttfb.is_none() {
                ttfb = Some(t0.elapsed());
            }
            buf.extend_from_slice(&d);
        }
    }
    let total = t0.elapsed();
    let ok = status == 200
        && if stream {
            buf.ends_with(b"data: [DONE]\n\n")
        } else {
            find(&buf, b"chat.completion").is_some()
        };
    if !ok && std::env::var_os("KG_BENCH_DEBUG").is_some() {
        eprintln!("bad answer {status}: {}", String::from_utf8_lossy(&buf));
    }
    Ok(Outcome {
        ok,
        ttfb: ttfb.unwrap_or(total),
        total,
    })
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

fn runtime(threads: usize) -> tokio::runtime::Runtime {
    if threads <= 1 {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
    } else {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(threads)
            .enable_all()
            .build()
    }
    .expect("runtime")
}

/// Percentiles in microseconds of durations in nanoseconds.
fn summary(mut ns: Vec<u64>) -> Value {
    if ns.is_empty() {
        return Value::Null;
    }
    ns.sort_unstable();
    let pick = |q: f64| {
        let rank = ((q * ns.len() as f64).ceil() as usize).clamp(1, ns.len());
        us(ns[rank - 1])
    };
    let mean = ns.iter().sum::<u64>() as f64 / ns.len() as f64;
    json!({
        "n": ns.len(),
        "min": us(ns[0]),
        "p50": pick(0.50),
        "p90": pick(0.90),
        "p99": pick(0.99),
        "p999": pick(0.999),
        "max": us(ns[ns.len() - 1]),
        "mean": (mean / 100.0).round() / 10.0,
    })
}

fn us(ns: u64) -> f64 {
    (ns as f64 / 100.0).round() / 10.0
}

/// One path's samples in a latency run.
struct Series {
    target: Target,
    url: String,
    body: Bytes,
    sender: Option<Sender>,
    total: Vec<u64>,
    ttfb: Vec<u64>,
    errors: u64,
    reconnects: u64,
}

impl Series {
    fn new(args: &TargetArgs, stream: bool, n: usize) -> Self {
        Self {
            target: Target::parse(args),
            url: args.url.clone(),
            body: chat_body(&args.model, stream),
            sender: None,
            total: Vec::with_capacity(n),
            ttfb: Vec::with_capacity(n),
            errors: 0,
            reconnects: 0,
        }
    }

    /// One request; `record` false during warmup. Retries (untimed) on a closed
    /// keep-alive connection.
    async fn step(&mut self, stream: bool, record: bool) {
        loop {
            if self.sender.is_none() {
                self.sender = Some(connect(&self.target.addr).await.expect("connect"));
            }
            let Some(sender) = self.sender.as_mut() else {
                continue;
            };
            match once(sender, &self.target, &self.body, stream).await {
                Ok(o) => {
                    if record {
                        if o.ok {
                            self.total.push(o.total.as_nanos() as u64);
                            self.ttfb.push(o.ttfb.as_nanos() as u64);
                        } else {
                            self.errors += 1;
                        }
                    }
                    return;
                }
                Err(e) => {
                    self.reconnects += 1;
                    if self.reconnects > 100 {
                        panic!("too many failures on {}, last: {e}", self.url);
                    }
                    self.sender = None;
                }
            }
        }
    }

    fn report(self, stream: bool) -> Value {
        json!({
            "url": self.url,
            "errors": self.errors,
            "reconnects": self.reconnects,
            "total_us": summary(self.total),
            "ttfb_us": if stream { summary(self.ttfb) } else { Value::Null },
        })
    }
}

/// Round `i`'s part of `total` split over `rounds` (the first rounds take the remainder).
fn share(total: usize, rounds: usize, i: usize) -> usize {
    total / rounds + usize::from(i < total % rounds)
}

/// Concurrency 1. With a `baseline`, requests alternate baseline, target, baseline,
/// target, ... on two keep-alive connections, so both paths see the same machine
/// conditions (other load, CPU placement) and their difference is the added latency.
pub struct LatencyOpts {
    pub warmup: usize,
    pub n: usize,
    pub stream: bool,
    pub rounds: usize,
    pub watch: Vec<(String, u32)>,
    pub clk_tck: u64,
}

pub fn latency(args: &TargetArgs, baseline: Option<&TargetArgs>, o: LatencyOpts) -> Value {
    let LatencyOpts {
        warmup,
        n,
        stream,
        rounds,
        watch,
        clk_tck,
    } = o;
    let mut main = Series::new(args, stream, n);
    let mut base = baseline.map(|b| Series::new(b, stream, n));
    runtime(1).block_on(async move {
        let before = snapshot(&watch);
        let started = Instant::now();
        let rounds = rounds.max(1);
        for round in 0..rounds {
            // Each round on new connections: a multi-worker server hands each new
            // connection to another worker, so every placement gets sampled.
            main.sender = None;
            if let Some(b) = base.as_mut() {
                b.sender = None;
            }
            let (w, m) = (share(warmup, rounds, round), share(n, rounds, round));
            for i in 0..w + m {
                if let Some(b) = base.as_mut() {
                    b.step(stream, i >= w).await;
                }
                main.step(stream, i >= w).await;
            }
        }
        let elapsed = started.elapsed().as_secs_f64();
        let after = snapshot(&watch);
        let mut out = main.report(stream);
        out["stream"] = Value::Bool(stream);
        out["warmup"] = warmup.into();
        out["rounds"] = rounds.into();
        out["elapsed_s"] = elapsed.into();
        let usage = cpu_usage(&before, &after, &watch, clk_tck, None);
        out["machine_busy"] = usage["machine_busy"].clone();
        out["foreign_cores"] = usage["foreign_cores"].clone();
        out["cpu"] = usage["cpu"].clone();
        if let Some(b) = base {
            out["baseline"] = b.report(stream);
        }
        out
    })
}

pub struct ThroughputOpts {
    pub concurrency: usize,
    pub warmup_secs: f64,
    pub secs: f64,
    pub threads: usize,
    pub stream: bool,
    pub watch: Vec<(String, u32)>,
    pub clk_tck: u64,
}

struct Snapshot {
    at: Instant,
    procs: Vec<u64>,
    me: u64,
    machine: (u64, u64),
}

fn snapshot(watch: &[(String, u32)]) -> Snapshot {
    Snapshot {
        at: Instant::now(),
        procs: watch
            .iter()
            .map(|(_, pid)| procstat::tree_ticks(*pid))
            .collect(),
        me: procstat::tree_ticks(std::process::id()),
        machine: procstat::machine_ticks(),
    }
}

/// CPU used between two snapshots: per watched process tree and by this load
/// generator (cores, and µs per request when `requests` is given), the machine's busy
/// fraction, and "foreign" cores: busy time no watched process accounts for (other
/// people's work on the machine, plus a little kernel time charged to no process).
fn cpu_usage(
    a: &Snapshot,
    b: &Snapshot,
    watch: &[(String, u32)],
    clk_tck: u64,
    requests: Option<u64>,
) -> Value {
    let window = b.at.duration_since(a.at).as_secs_f64().max(1e-9);
    let tck = clk_tck as f64;
    let cpu = |ticks: u64| {
        let s = ticks as f64 / tck;
        let mut v = json!({ "cpu_s": s, "cores": s / window });
        if let Some(n) = requests.filter(|n| *n > 0) {
            v["us_per_req"] = (s * 1e6 / n as f64).into();
        }
        v
    };
    let mut procs = serde_json::Map::new();
    let mut ours = 0u64;
    for (i, (name, _)) in watch.iter().enumerate() {
        let d = b.procs[i].saturating_sub(a.procs[i]);
        ours += d;
        procs.insert(name.clone(), cpu(d));
    }
    let me = b.me.saturating_sub(a.me);
    ours += me;
    procs.insert("loadgen".into(), cpu(me));
    let busy = b.machine.0.saturating_sub(a.machine.0);
    let total = b.machine.1.saturating_sub(a.machine.1);
    json!({
        "cpu": procs,
        "machine_busy": if total > 0 { busy as f64 / total as f64 } else { 0.0 },
        "foreign_cores": busy.saturating_sub(ours) as f64 / tck / window,
    })
}

pub fn throughput(args: &TargetArgs, o: ThroughputOpts) -> Value {
    let t = Arc::new(Target::parse(args));
    let body = chat_body(&args.model, o.stream);
    let stream = o.stream;
    runtime(o.threads).block_on(async move {
        let start = Instant::now();
        let warm_end = start + Duration::from_secs_f64(o.warmup_secs);
        let end = warm_end + Duration::from_secs_f64(o.secs);
        let mut workers = Vec::with_capacity(o.concurrency);
        for _ in 0..o.concurrency {
            let t = t.clone();
            let body = body.clone();
            workers.push(tokio::spawn(async move {
                let mut sender: Option<Sender> = None;
                let mut lat = Vec::with_capacity(1 << 16);
                let (mut errors, mut reconnects) = (0u64, 0u64);
                loop {
                    if Instant::now() >= end {
                        break;
                    }
                    let s = match sender.as_mut() {
                        Some(s) => s,
                        None => match connect(&t.addr).await {
                            Ok(s) => sender.insert(s),
                            Err(_) => {
                                reconnects += 1;
                                tokio::time::sleep(Duration::from_millis(5)).await;
                                continue;
                            }
                        },
                    };
                    let r = once(s, &t, &body, stream).await;
                    let done = Instant::now();
                    let counted = done >= warm_end && done < end;
                    match r {
                        Ok(out) if out.ok => {
                            if counted {
                                lat.push(out.total.as_nanos() as u64);
                            }
                        }
                        Ok(_) => {
                            if counted {
                                errors += 1;
                            }
                        }
                        Err(_) => {
                            if counted {
                                errors += 1;
                            }
                            reconnects += 1;
                            sender = None;
                        }
                    }
                }
                (lat, errors, reconnects)
            }));
        }
        let watch = o.watch.clone();
        let sampler = tokio::spawn(async move {
            tokio::time::sleep_until(warm_end.into()).await;
            let w = watch.clone();
            let a = tokio::task::spawn_blocking(move || snapshot(&w))
                .await
                .expect("snapshot");
            tokio::time::sleep_until(end.into()).await;
            let b = tokio::task::spawn_blocking(move || snapshot(&watch))
                .await
                .expect("snapshot");
            (a, b)
        });
        let mut lat = Vec::new();
        let (mut errors, mut reconnects) = (0u64, 0u64);
        for w in workers {
            let (l, e, r) = w.await.expect("worker");
            lat.extend(l);
            errors += e;
            reconnects += r;
        }
        let (a, b) = sampler.await.expect("sampler");
        let completed = lat.len() as u64;
        let rps = completed as f64 / o.secs;
        let usage = cpu_usage(&a, &b, &o.watch, o.clk_tck, Some(completed));
        json!({
            "url": args.url,
            "stream": stream,
            "concurrency": o.concurrency,
            "threads": o.threads,
            "window_s": o.secs,
            "completed": completed,
            "errors": errors,
            "reconnects": reconnects,
            "rps": rps,
            "latency_us": summary(lat),
            "cpu": usage["cpu"],
            "machine_busy": usage["machine_busy"],
            "foreign_cores": usage["foreign_cores"],
        })
    })
}

async fn get_json(base: &str, path: &str) -> Value {
    let addr = base.trim_start_matches("http://").trim_end_matches('/');
    let Ok(mut s) = connect(addr).await else {
        return Value::Null;
    };
    let req = Request::get(path)
        .header(HOST, addr)
        .body(Full::new(Bytes::new()))
        .expect("request");
    let Ok(res) = s.send_request(req).await else {
        return Value::Null;
    };
    match res.into_body().collect().await {
        Ok(b) => serde_json::from_slice(&b.to_bytes()).unwrap_or(Value::Null),
        Err(_) => Value::Null,
    }
}

async fn open_held(t: Arc<Target>, body: Bytes) -> Result<(Sender, Incoming), String> {
    let mut s = connect(&t.addr).await?;
    s.ready().await.map_err(|e| e.to_string())?;
    let res = s
        .send_request(t.request(&body))
        .await
        .map_err(|e| e.to_string())?;
    if res.status() != 200 {
        return Err(format!("status {}", res.status()));
    }
    let mut b = res.into_body();
    loop {
        match b.frame().await {
            Some(Ok(f)) => {
                if f.data_ref().is_some_and(|d| !d.is_empty()) {
                    return Ok((s, b));
                }
            }
            Some(Err(e)) => return Err(e.to_string()),
            None => return Err("stream ended".into()),
        }
    }
}

pub fn hold(
    args: &TargetArgs,
    n: usize,
    pid: u32,
    upstream: &str,
    settle_ms: u64,
    release_wait_ms: u64,
) -> Value {
    let t = Arc::new(Target::parse(args));
    let body = chat_body("bench-hold", true);
    let upstream = upstream.to_owned();
    let settle = Duration::from_millis(settle_ms);
    runtime(1).block_on(async move {
        let up_before = get_json(&upstream, "/bench/stats").await;
        let rss_before = procstat::rss_kb(pid);
        let mem_before = procstat::mem(pid);
        let fds_before = procstat::fd_count(pid);
        let started = Instant::now();
        let gate = Arc::new(tokio::sync::Semaphore::new(50));
        let mut tasks = Vec::with_capacity(n);
        for _ in 0..n {
            let (t, body, gate) = (t.clone(), body.clone(), gate.clone());
            tasks.push(tokio::spawn(async move {
                let _permit = gate.acquire_owned().await.map_err(|e| e.to_string())?;
                open_held(t, body).await
            }));
        }
        let mut held = Vec::with_capacity(n);
        let mut failures = Vec::new();
        for task in tasks {
            match task.await.expect("task") {
                Ok(h) => held.push(h),
                Err(e) => failures.push(e),
            }
        }
        let open_s = started.elapsed().as_secs_f64();
        tokio::time::sleep(settle).await;
        let rss_with = procstat::rss_kb(pid);
        let up_with = get_json(&upstream, "/bench/stats").await;
        let mem_with = procstat::mem(pid);
        let fds_with = procstat::fd_count(pid);
        let open = held.len();
        let baseline = up_before["hold_open"].as_i64().unwrap_or(0);
        drop(held);
        // How long until the upstream sees its held streams go away, i.e. until the
        // proxy noticed that its clients left and cancelled the upstream requests.
        let closed_at = Instant::now();
        let mut released_after_s = None;
        while closed_at.elapsed() < Duration::from_millis(release_wait_ms) {
            tokio::time::sleep(Duration::from_millis(50)).await;
            let s = get_json(&upstream, "/bench/stats").await;
            if s["hold_open"].as_i64().is_some_and(|h| h <= baseline) {
                released_after_s = Some(closed_at.elapsed().as_secs_f64());
                break;
            }
        }
        tokio::time::sleep(settle).await;
        let rss_after = procstat::rss_kb(pid);
        let fds_after = procstat::fd_count(pid);
        let up_after = get_json(&upstream, "/bench/stats").await;
        let per_stream = match (rss_before, rss_with) {
            (Some(a), Some(b)) if open > 0 => Some((b as f64 - a as f64) * 1024.0 / open as f64),
            _ => None,
        };
        failures.truncate(5);
        json!({
            "url": args.url,
            "requested": n,
            "open": open,
            "failures_sample": failures,
            "open_s": open_s,
            "rss_before_kb": rss_before,
            "rss_with_kb": rss_with,
            "rss_after_close_kb": rss_after,
            "mem_before": mem_before,
            "mem_with": mem_with,
            "fds_before": fds_before,
            "fds_with": fds_with,
            "fds_after_close": fds_after,
            "release_wait_s": release_wait_ms as f64 / 1000.0,
            "upstream_released_after_s": released_after_s,
            "per_stream_bytes": per_stream,
            "upstream_before": up_before,
            "upstream_with": up_with,
            "upstream_after_close": up_after,
        })
    })
}
