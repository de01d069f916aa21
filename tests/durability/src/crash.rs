//! Crash durability: keygate under mixed load, killed with SIGKILL at random moments
//! and restarted on the same data directory, N cycles. After every restart every
//! acknowledged write is checked against a model of what the harness was told.
//!
//! The model is split into shards, one per load worker: a worker only touches its own
//! people and grants, one request at a time, so its model is exact except for the one
//! request a kill interrupts. That request is *in doubt* (keygate may or may not have
//! made it durable): after the restart the harness looks at what keygate has and
//! accepts exactly the state before it or after it, nothing else.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail, ensure};
use futures::StreamExt;
use keygate_testkit::browser::Browser;
use keygate_testkit::mock_openai::MockOpenAi;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use crate::keygate::{self, ADMIN_KEY, Launch};
use crate::util::{Rng, metric};

mod cluster;

pub struct Opts {
    pub cycles: u64,
    pub seed: u64,
    pub workers: usize,
    /// Cluster mode: this many nodes on one PostgreSQL database; `None`: one node on
    /// sled in its data directory.
    pub cluster: Option<Cluster>,
}

/// Several nodes sharing one PostgreSQL store, master keyring and public URL. Workers
/// are spread over the nodes; each kill (or graceful stop) hits ONE node at random; the
/// acknowledged writes are then checked through the surviving nodes, the node is
/// restarted and serves the next cycle's load (and checks).
pub struct Cluster {
    pub nodes: usize,
    /// The database every node uses (`KEYGATE_STORE_URL`).
    pub store_url: String,
}

/// The counters printed at the end (docs/OPERATIONS.md quotes a run's).
#[derive(Default, Debug)]
struct Figures {
    cycles: u64,
    kills: u64,
    kills_while_starting: u64,
    graceful_stops: u64,
    acked_writes: u64,
    acked_writes_checked: u64,
    in_doubt: u64,
    proxied: u64,
    entities_checked: u64,
    dead_keys: u64,
    usage_checks: u64,
    durable_snapshots: u64,
    shown_then_lost_max: u64,
    shown_then_lost_total: u64,
    lost: u64,
    unprovoked: u64,
    audit_entries_checked: u64,
}

const USAGE_FLUSHES: &str = "keygate_store_flush_seconds_count{writer=\"usage\"}";

/// How many people a shard keeps before it deletes one, and grants per person.
const MAX_PEOPLE: usize = 5;
const MAX_GRANTS: usize = 4;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum GState {
    Active,
    Disabled,
    Revoked,
    Removed,
}

impl GState {
    fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "active" => Self::Active,
            "disabled" => Self::Disabled,
            "revoked" => Self::Revoked,
            _ => return None,
        })
    }
}

/// A write whose answer never came (keygate was killed): before or after, nothing else.
#[derive(Clone, Debug)]
enum GrantDoubt {
    State { before: GState, after: GState },
    Rotate,
    Name { before: String, after: String },
}

struct Grant {
    id: String,
    name: String,
    /// The current `kg_…` key; `None` after a rotation whose answer was lost.
    key: Option<String>,
    /// Keys rotated away: must be refused forever (the last few are kept to check).
    dead_keys: Vec<String>,
    state: GState,
    doubt: Option<GrantDoubt>,
    /// Never rotated, disabled or revoked: how the person's vault key is observed.
    probe: bool,
}

struct Person {
    id: String,
    name: String,
    /// The OpenAI key in the person's vault record.
    key: Option<String>,
    key_doubt: Option<(Option<String>, Option<String>)>,
    grants: Vec<Grant>,
    /// People who signed up with a passkey manage their own key (`/api/key`).
    browser: Option<Browser>,
    deleted: bool,
    delete_doubt: bool,
}

/// What a grant's usage (`requests`) may be at the next check.
#[derive(Clone, Copy, Default, Debug)]
struct Bounds {
    /// Shown by keygate and proven durable (a usage flush finished after it), or the
    /// value at the last check.
    floor: u64,
    /// Every request that may have been counted.
    ceil: u64,
    /// Requests whose answer never came.
    unknown: u64,
}

struct Shard {
    idx: usize,
    rng: Rng,
    people: Vec<Person>,
    /// Grant keys of deleted people and removed grants: refused forever.
    graveyard: Vec<String>,
    usage: HashMap<String, Bounds>,
    /// `x-client-request-id` → the OpenAI key the mock must have received with it.
    expect: Vec<(String, String)>,
    /// OpenAI keys replaced or deleted (acknowledged) since the last merge.
    newly_dead: Vec<String>,
    /// The audit entry each acknowledged write must have left: action, and the id of
    /// its target or of the person it concerns.
    audit: Vec<(&'static str, String)>,
    counter: u64,
    acked: u64,
    in_doubt: u64,
    proxied: u64,
    checked: u64,
}

/// What the harness shares with its workers. In cluster mode each worker gets a copy
/// pointed at its node ([`Ctx::on`]); the flags stay shared (`dying` per node).
#[derive(Clone)]
struct Ctx {
    client: reqwest::Client,
    base: String,
    public: String,
    /// The node as `http://localhost:PORT`, where browsers send (their `Origin` stays
    /// `public`). The same as `public` for one node.
    node: String,
    mock: Arc<MockOpenAi>,
    seed: u64,
    /// Set just before the SIGKILL: from then on a failed request is "not acknowledged".
    dying: Arc<AtomicBool>,
    /// Set when the workers should stop after their current operation.
    stop: Arc<AtomicBool>,
    /// Usage flushes seen (for the durability barrier).
    flushes_seen: Arc<AtomicU64>,
    /// Requests that got no answer while nobody was killing keygate (a starved machine:
    /// actix's 408 or a closed keep-alive connection). Treated as in doubt, and counted.
    unprovoked: Arc<AtomicU64>,
}

impl Ctx {
    /// This context aimed at another node (cluster mode), with that node's `dying` flag.
    fn on(&self, launch: &Launch, dying: &Arc<AtomicBool>) -> Ctx {
        Ctx {
            base: launch.local_url(),
            node: launch.node_url(),
            dying: Arc::clone(dying),
            ..self.clone()
        }
    }
}

/// Points every browser of the shard at `ctx`'s node.
fn route(ctx: &Ctx, s: &mut Shard) {
    for p in &mut s.people {
        if let Some(b) = p.browser.as_mut() {
            b.via(&ctx.node);
        }
    }
}

#[derive(PartialEq, Eq)]
enum Flow {
    Go,
    /// keygate went away under a request: the worker stops for this cycle.
    Stop,
}

enum Expect {
    /// 200 (or the scenario's status), and the mock sees this OpenAI key.
    Ok(String),
    /// 409 `key_not_enrolled`: the person has no key.
    NoKey,
    /// 401 with this code.
    Refused(&'static str),
    /// Anything: the state is being resolved.
    Any,
}

#[derive(Clone, Copy, Debug)]
enum Kind {
    Json,
    Stream,
    Abandoned,
    UpstreamError,
}

pub async fn run(opts: Opts) -> Result<()> {
    if opts.cluster.is_some() {
        return cluster::run(opts).await;
    }
    let started = Instant::now();
    let mock = Arc::new(MockOpenAi::try_start().context("start the mock OpenAI")?);
    let dir = tempfile::Builder::new()
        .prefix("keygate-durability-")
        .tempdir()?;
    let launch = Launch {
        bin: keygate::binary()?,
        data_dir: dir.path().join("data"),
        port: keygate::free_port()?,
        upstream: mock.base_url(),
        rust_log: std::env::var("KG_DURA_RUST_LOG").unwrap_or_else(|_| "warn".into()),
        log: dir.path().join("keygate.log"),
        env: vec![
            ("KEYGATE_WORKERS".into(), "2".into()),
            ("KEYGATE_SHUTDOWN_TIMEOUT_SECS".into(), "5".into()),
            // Every person signs up from 127.0.0.1.
            ("KEYGATE_AUTH_RATE_PER_MINUTE".into(), "10000".into()),
        ],
        public: None,
    };
    println!(
        "durability: {} cycles, {} workers, seed {} (KG_DURA_SEED), keygate {}, data {}",
        opts.cycles,
        opts.workers,
        opts.seed,
        launch.bin.display(),
        launch.data_dir.display()
    );
    let ctx = Arc::new(Ctx {
        client: reqwest::Client::builder()
            .timeout(Duration::from_secs(60))
            // Below actix's 5 s keep-alive: a pooled connection is not reused just as
            // keygate closes it.
            .pool_idle_timeout(Duration::from_secs(2))
            .redirect(reqwest::redirect::Policy::none())
            .build()?,
        base: launch.local_url(),
        public: launch.public_url(),
        node: launch.node_url(),
        mock,
        seed: opts.seed,
        dying: Arc::new(AtomicBool::new(false)),
        stop: Arc::new(AtomicBool::new(false)),
        flushes_seen: Arc::new(AtomicU64::new(0)),
        unprovoked: Arc::new(AtomicU64::new(0)),
    });
    let mut rng = Rng::new(opts.seed);
    let mut shards = new_shards(&opts);
    let mut fig = Figures::default();
    let mut dead: HashSet<String> = HashSet::new();
    let mut prev_graceful = false;
    let mut last_shown: HashMap<String, u64> = HashMap::new();
    let mut audit_since = keygate_core::time::now().saturating_sub(2);

    let result: Result<()> = async {
        for cycle in 0..=opts.cycles {
            let last = cycle == opts.cycles;
            let mut kg = launch.spawn()?;
            // Now and then a kill lands while keygate opens its store (and replays sled's log).
            if !last && cycle > 0 && rng.chance(8) {
                tokio::time::sleep(Duration::from_millis(rng.below(250))).await;
                kg.kill()?;
                fig.kills_while_starting += 1;
                fig.cycles += 1;
                prev_graceful = false;
                continue;
            }
            kg.ready(&ctx.client, Duration::from_secs(120))
                .await
                .with_context(|| format!("cycle {cycle}: the store did not open"))?;

            // 1. Usage, before this start counts anything: not lost past a figure proven
            //    durable, never double counted.
            check_usage(&ctx, &mut shards, prev_graceful, &last_shown, &mut fig)
                .await
                .with_context(|| format!("cycle {cycle}: usage"))?;
                        last_shown.clear();
            check_audit(&ctx, &mut shards, audit_since, &mut fig)
                .await
                .with_context(|| format!("cycle {cycle}: audit log"))?;
            // This start's own writes (probe grants) are checked at the next one.
            audit_since = keygate_core::time::now().saturating_sub(2);

            // 2. Every acknowledged write so far, as the model says.
            let acked_before: u64 = shards.iter().map(|s| s.acked).sum();
            let dead_at_verify = dead.clone();
            let verified = futures::future::join_all(
                shards.iter_mut().map(|s| verify(&ctx, s)),
            )
            .await;
            for v in verified {
                v.with_context(|| format!("cycle {cycle}: after restart"))?;
            }
            fig.acked_writes_checked = acked_before;
            fig.entities_checked = shards.iter().map(|s| s.checked).sum();
            check_mock(&ctx, &mut shards, &dead_at_verify, &mut fig)
                .with_context(|| format!("cycle {cycle}: keys the mock received"))?;
            for s in &mut shards {
                dead.extend(s.newly_dead.drain(..));
            }
            fig.dead_keys = dead.len() as u64;
            if last {
                let status = kg.terminate(Duration::from_secs(60))?;
                ensure!(status.success(), "keygate's last stop failed: {status}");
                break;
            }

            // 3. Load, then a kill at a random moment (every 5th cycle a graceful stop).
            let graceful = cycle % 5 == 4;
            let dead_before_load = dead.clone();
            ctx.stop.store(false, Ordering::SeqCst);
            ctx.dying.store(false, Ordering::SeqCst);
            let monitor = tokio::spawn(monitor(Arc::clone(&ctx)));
            let workers: Vec<_> = shards
                .drain(..)
                .map(|s| tokio::spawn(work(Arc::clone(&ctx), s)))
                .collect();
            tokio::time::sleep(Duration::from_millis(200 + rng.below(2800))).await;
            if graceful {
                ctx.stop.store(true, Ordering::SeqCst);
                shards = join_workers(workers).await?;
                ctx.dying.store(true, Ordering::SeqCst);
                let status = kg.terminate(Duration::from_secs(60))?;
                ensure!(status.success(), "cycle {cycle}: graceful stop failed: {status}");
                fig.graceful_stops += 1;
                        } else {
                ensure!(
                    !kg.exited()?,
                    "cycle {cycle}: keygate exited by itself under load\n{}",
                    keygate::log_tail(&launch.log, 30)
                );
                ctx.dying.store(true, Ordering::SeqCst);
                kg.kill()?;
                ctx.stop.store(true, Ordering::SeqCst);
                shards = join_workers(workers).await?;
                fig.kills += 1;
            }
            prev_graceful = graceful;
            let (durable, shown, snapshots) = monitor.await.map_err(|e| anyhow!("monitor: {e}"))?;
            fig.durable_snapshots += snapshots;
            last_shown = shown;
            for s in &mut shards {
                for (grant, b) in s.usage.iter_mut() {
                    if let Some(v) = durable.get(grant) {
                        b.floor = b.floor.max(*v);
                    }
                }
            }
            check_mock(&ctx, &mut shards, &dead_before_load, &mut fig)
                .with_context(|| format!("cycle {cycle}: keys the mock received under load"))?;
            for s in &mut shards {
                dead.extend(s.newly_dead.drain(..));
            }
            fig.cycles += 1;
            fig.acked_writes = shards.iter().map(|s| s.acked).sum();
            fig.in_doubt = shards.iter().map(|s| s.in_doubt).sum();
            fig.proxied = shards.iter().map(|s| s.proxied).sum();
            if cycle % 10 == 9 || cycle + 1 == opts.cycles {
                println!(
                    "  cycle {:>5}: acked writes {:>6}, in doubt {:>4}, proxied {:>6}, checks {:>7}, {:.0}s",
                    cycle + 1,
                    fig.acked_writes,
                    fig.in_doubt,
                    fig.proxied,
                    fig.entities_checked,
                    started.elapsed().as_secs_f64()
                );
            }
        }
        Ok(())
    }
    .await;
    if let Err(e) = result {
        println!("durability: FAILED (seed {}): {e:#}", opts.seed);
        println!(
            "keygate's log (end):\n{}",
            keygate::log_tail(&launch.log, 30)
        );
        // Keep the data directory for a post-mortem.
        let kept = dir.keep();
        println!("data directory kept at {}", kept.display());
        return Err(e);
    }
    fig.acked_writes = shards.iter().map(|s| s.acked).sum();
    fig.unprovoked = ctx.unprovoked.load(Ordering::SeqCst);
    println!(
        "durability: requests unanswered without a kill (machine starved): {}",
        fig.unprovoked
    );
    println!(
        "durability: cycles {} (SIGKILL under load {}, SIGKILL while starting {}, graceful {}), \
         acked writes {}, acked writes checked {}, in doubt resolved {}, proxied requests {}, \
         entity checks {}, audit entries checked {}, dead keys never seen again {}, usage checks {}, durable usage \
         snapshots {}, usage shown but lost at a kill: max {} / total {} requests, lost {}, \
         {:.0}s",
        fig.cycles,
        fig.kills,
        fig.kills_while_starting,
        fig.graceful_stops,
        fig.acked_writes,
        fig.acked_writes_checked,
        fig.in_doubt,
        fig.proxied,
        fig.entities_checked,
        fig.audit_entries_checked,
        fig.dead_keys,
        fig.usage_checks,
        fig.durable_snapshots,
        fig.shown_then_lost_max,
        fig.shown_then_lost_total,
        fig.lost,
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

/// One shard per worker, each with its own seeded random source.
fn new_shards(opts: &Opts) -> Vec<Shard> {
    (0..opts.workers)
        .map(|idx| Shard {
            idx,
            rng: Rng::new(opts.seed ^ ((idx as u64 + 1) << 32)),
            people: Vec::new(),
            graveyard: Vec::new(),
            usage: HashMap::new(),
            expect: Vec::new(),
            newly_dead: Vec::new(),
            audit: Vec::new(),
            counter: 0,
            acked: 0,
            in_doubt: 0,
            proxied: 0,
            checked: 0,
        })
        .collect()
}

async fn join_workers(workers: Vec<tokio::task::JoinHandle<Result<Shard>>>) -> Result<Vec<Shard>> {
    let mut shards = Vec::new();
    for w in workers {
        shards.push(w.await.map_err(|e| anyhow!("worker: {e}"))??);
    }
    shards.sort_by_key(|s| s.idx);
    Ok(shards)
}

// --- load -----------------------------------------------------------------------------

async fn work(ctx: Arc<Ctx>, mut s: Shard) -> Result<Shard> {
    while !ctx.stop.load(Ordering::SeqCst) {
        let flow = step(&ctx, &mut s)
            .await
            .with_context(|| format!("worker {}", s.idx))?;
        if flow == Flow::Stop {
            break;
        }
    }
    Ok(s)
}

/// One operation, chosen at random among those the shard's model allows.
async fn step(ctx: &Ctx, s: &mut Shard) -> Result<Flow> {
    let live: Vec<usize> = (0..s.people.len())
        .filter(|&i| !s.people[i].deleted)
        .collect();
    if live.len() < 2 {
        return if s.rng.chance(70) {
            create_person(ctx, s).await
        } else {
            sign_up(ctx, s).await
        };
    }
    let pi = live[s.rng.below(live.len() as u64) as usize];
    // proxied, create person, sign up, put key, delete key, create grant, rotate,
    // disable, enable, revoke/remove, rename, delete person
    let op = s.rng.weighted(&[40, 4, 2, 10, 4, 7, 6, 4, 4, 5, 3, 1]);
    let can_delete_key = s.people[pi].browser.is_some() && s.people[pi].key.is_some();
    let grants = s.people[pi]
        .grants
        .iter()
        .filter(|g| g.state != GState::Removed)
        .count();
    let pick = |s: &mut Shard, f: &dyn Fn(&Grant) -> bool| -> Option<usize> {
        let ok: Vec<usize> = (0..s.people[pi].grants.len())
            .filter(|&g| f(&s.people[pi].grants[g]))
            .collect();
        (!ok.is_empty()).then(|| ok[s.rng.below(ok.len() as u64) as usize])
    };
    let changeable = |g: &Grant| !g.probe && g.state != GState::Removed;
    match op {
        1 if live.len() < MAX_PEOPLE => create_person(ctx, s).await,
        2 if live.len() < MAX_PEOPLE => sign_up(ctx, s).await,
        3 => put_key(ctx, s, pi).await,
        4 if can_delete_key => delete_key(ctx, s, pi).await,
        5 if grants < MAX_GRANTS => create_grant(ctx, s, pi, false).await,
        6 => match pick(s, &|g| {
            changeable(g) && g.state == GState::Active && g.key.is_some()
        }) {
            Some(gi) => rotate(ctx, s, pi, gi).await,
            None => proxied_any(ctx, s, pi).await,
        },
        7 => match pick(s, &|g| changeable(g) && g.state == GState::Active) {
            Some(gi) => set_state(ctx, s, pi, gi, GState::Disabled).await,
            None => proxied_any(ctx, s, pi).await,
        },
        8 => match pick(s, &|g| changeable(g) && g.state == GState::Disabled) {
            Some(gi) => set_state(ctx, s, pi, gi, GState::Active).await,
            None => proxied_any(ctx, s, pi).await,
        },
        9 => match pick(s, &changeable) {
            Some(gi) => {
                let to = if s.people[pi].grants[gi].state == GState::Revoked {
                    GState::Removed
                } else {
                    GState::Revoked
                };
                set_state(ctx, s, pi, gi, to).await
            }
            None => proxied_any(ctx, s, pi).await,
        },
        10 => match pick(s, &|g| {
            g.state != GState::Removed && g.state != GState::Revoked
        }) {
            Some(gi) => rename(ctx, s, pi, gi).await,
            None => proxied_any(ctx, s, pi).await,
        },
        11 if live.len() > 2 => delete_person(ctx, s, pi).await,
        _ => proxied_any(ctx, s, pi).await,
    }
}

/// A proxied request through a random grant of the person, of a random kind.
async fn proxied_any(ctx: &Ctx, s: &mut Shard, pi: usize) -> Result<Flow> {
    let usable: Vec<usize> = (0..s.people[pi].grants.len())
        .filter(|&g| s.people[pi].grants[g].key.is_some())
        .collect();
    if usable.is_empty() {
        return create_grant(ctx, s, pi, false).await;
    }
    let gi = usable[s.rng.below(usable.len() as u64) as usize];
    let kind = match s.rng.weighted(&[50, 25, 15, 10]) {
        0 => Kind::Json,
        1 => Kind::Stream,
        2 => Kind::Abandoned,
        _ => Kind::UpstreamError,
    };
    let key = s.people[pi].grants[gi].key.clone().unwrap_or_default();
    proxied(ctx, s, pi, gi, &key, kind).await.map(|(f, _)| f)
}

/// What keygate must answer to `key` of grant `gi` of person `pi`, per the model.
fn expectation(p: &Person, g: &Grant, key: &str) -> Expect {
    if p.deleted || g.state == GState::Removed || g.key.as_deref() != Some(key) {
        return Expect::Refused("invalid_api_key");
    }
    if p.key_doubt.is_some() || g.doubt.is_some() {
        return Expect::Any;
    }
    match g.state {
        GState::Disabled => Expect::Refused("invalid_api_key"),
        GState::Revoked => Expect::Refused("revoked_api_key"),
        _ => match &p.key {
            Some(k) => Expect::Ok(k.clone()),
            None => Expect::NoKey,
        },
    }
}

/// One `/v1/chat/completions` request with `key`; checks the answer against the model
/// and counts it in the grant's usage bounds. Returns the request id it was sent with.
async fn proxied(
    ctx: &Ctx,
    s: &mut Shard,
    pi: usize,
    gi: usize,
    key: &str,
    kind: Kind,
) -> Result<(Flow, String)> {
    s.counter += 1;
    let reqid = format!("dura-{}-{}-{}", ctx.seed, s.idx, s.counter);
    let (expect, grant_id) = {
        let p = &s.people[pi];
        let g = &p.grants[gi];
        (expectation(p, g, key), g.id.clone())
    };
    let stream = !matches!(kind, Kind::Json);
    let mut req = ctx
        .client
        .post(format!("{}/v1/chat/completions", ctx.base))
        .bearer_auth(key)
        .header("x-client-request-id", &reqid)
        .json(&json!({
            "model": "gpt-4o-mini",
            "stream": stream,
            "messages": [{"role": "user", "content": "durability"}],
        }));
    if matches!(kind, Kind::UpstreamError) {
        req = req.header("x-mock-scenario", "error-500");
    }
    s.proxied += 1;
    let res = match req.send().await {
        Ok(res) => res,
        Err(e) => {
            let b = s.usage.entry(grant_id).or_default();
            b.ceil += 1;
            b.unknown += 1;
            return not_acked(ctx, &e).map(|f| (f, reqid));
        }
    };
    let status = res.status();
    if status == StatusCode::REQUEST_TIMEOUT {
        // actix gave up reading the request (a starved machine): never handled.
        return not_acked(ctx, &"408 Request Timeout").map(|f| (f, reqid));
    }
    // keygate counts what it let through: answered, refused upstream, or no key (409).
    if matches!(status.as_u16(), 200 | 409 | 500) {
        s.usage.entry(grant_id.clone()).or_default().ceil += 1;
    }
    let want = |code: u16| status.as_u16() == code;
    let ok = match &expect {
        Expect::Ok(openai_key) => {
            if want(if matches!(kind, Kind::UpstreamError) {
                500
            } else {
                200
            }) {
                s.expect.push((reqid.clone(), openai_key.clone()));
                true
            } else {
                false
            }
        }
        Expect::NoKey => want(409),
        Expect::Refused(_) => want(401),
        Expect::Any => true,
    };
    let body = match kind {
        Kind::Abandoned if status == 200 => {
            let mut chunks = res.bytes_stream();
            let _ = chunks.next().await;
            Vec::new()
        }
        _ => match res.bytes().await {
            Ok(b) => b.to_vec(),
            Err(e) => return not_acked(ctx, &e).map(|f| (f, reqid)),
        },
    };
    let text = String::from_utf8_lossy(&body);
    let code_ok = match &expect {
        Expect::NoKey => text.contains("key_not_enrolled"),
        Expect::Refused(code) => text.contains(code),
        _ => true,
    };
    if !ok || !code_ok {
        bail!(
            "grant {grant_id} ({}): answered {status} {}, expected {}",
            describe(&s.people[pi], gi),
            text.chars().take(300).collect::<String>(),
            match expect {
                Expect::Ok(_) => "a forwarded answer".to_owned(),
                Expect::NoKey => "409 key_not_enrolled".to_owned(),
                Expect::Refused(c) => format!("401 {c}"),
                Expect::Any => "anything".to_owned(),
            }
        );
    }
    if matches!(kind, Kind::Stream) && status == 200 && !text.trim_end().ends_with("data: [DONE]") {
        bail!("grant {grant_id}: a complete stream did not end with [DONE]");
    }
    Ok((Flow::Go, reqid))
}

/// The end of a (fake) key, enough to tell keys apart in a message.
fn tail(key: &str) -> &str {
    &key[key.len().saturating_sub(12)..]
}

fn describe(p: &Person, gi: usize) -> String {
    let g = &p.grants[gi];
    format!(
        "person {} deleted={} key={}, grant state {:?} probe={} doubt={:?}",
        p.id,
        p.deleted,
        p.key.as_deref().map_or("none", |k| &k[k.len() - 6..]),
        g.state,
        g.probe,
        g.doubt
    )
}

/// A request that got no answer: its write is in doubt and the worker stops for this
/// cycle. Expected while keygate is being killed; otherwise counted (and keygate having
/// exited by itself is caught before the kill).
fn not_acked(ctx: &Ctx, e: &dyn std::fmt::Display) -> Result<Flow> {
    if !ctx.dying.load(Ordering::SeqCst) {
        ctx.unprovoked.fetch_add(1, Ordering::SeqCst);
        println!("  (a request got no answer without a kill: {e})");
    }
    Ok(Flow::Stop)
}

/// An admin request: `Ok(None)` when the answer never came (keygate being killed).
async fn admin(
    ctx: &Ctx,
    method: Method,
    path: &str,
    body: Option<Value>,
) -> Result<Option<(StatusCode, Value)>> {
    let mut req = ctx
        .client
        .request(method, format!("{}{path}", ctx.base))
        .bearer_auth(ADMIN_KEY);
    if let Some(b) = body {
        req = req.json(&b);
    }
    match req.send().await {
        Ok(res) if res.status() == StatusCode::REQUEST_TIMEOUT => {
            not_acked(ctx, &"408 Request Timeout").map(|_| None)
        }
        Ok(res) => {
            let status = res.status();
            // The status line is sent after the write was flushed: that is the ack,
            // even if the body is lost to the kill.
            let v = res.json().await.unwrap_or(Value::Null);
            Ok(Some((status, v)))
        }
        Err(e) => not_acked(ctx, &e).map(|_| None),
    }
}

fn unique(ctx: &Ctx, s: &mut Shard, what: &str) -> String {
    s.counter += 1;
    format!(
        "{what}-{:x}-{}-{:06}",
        ctx.seed & 0xffff_ffff,
        s.idx,
        s.counter
    )
}

async fn create_person(ctx: &Ctx, s: &mut Shard) -> Result<Flow> {
    let name = unique(ctx, s, "person");
    let Some((status, v)) = admin(
        ctx,
        Method::POST,
        "/admin/users",
        Some(json!({ "name": name })),
    )
    .await?
    else {
        s.in_doubt += 1;
        return Ok(Flow::Stop);
    };
    ensure!(status == 201, "create person: {status} {v}");
    s.acked += 1;
    let Some(id) = v["id"].as_str() else {
        s.in_doubt += 1;
        return Ok(Flow::Stop);
    };
    s.audit.push(("user.created", id.to_owned()));
    s.people.push(Person {
        id: id.to_owned(),
        name,
        key: None,
        key_doubt: None,
        grants: Vec::new(),
        browser: None,
        deleted: false,
        delete_doubt: false,
    });
    let pi = s.people.len() - 1;
    create_grant(ctx, s, pi, true).await
}

/// A person signing up with a passkey (sessions and passkeys are flushed writes too).
async fn sign_up(ctx: &Ctx, s: &mut Shard) -> Result<Flow> {
    let name = unique(ctx, s, "passkey-person");
    let mut browser = Browser::new(&ctx.public);
    browser.via(&ctx.node);
    let res = match browser.try_register(&name).await {
        Ok(res) if res.status() != StatusCode::REQUEST_TIMEOUT => res,
        Ok(_) => {
            s.in_doubt += 1;
            return not_acked(ctx, &"408 Request Timeout");
        }
        Err(e) => {
            s.in_doubt += 1;
            return not_acked(ctx, &e);
        }
    };
    let status = res.status();
    ensure!(status == 201, "sign-up: {status}");
    s.acked += 1;
    let v: Value = res.json().await.unwrap_or(Value::Null);
    let Some(id) = v["user"]["id"].as_str() else {
        s.in_doubt += 1;
        return Ok(Flow::Stop);
    };
    s.audit.push(("user.signed_up", id.to_owned()));
    s.people.push(Person {
        id: id.to_owned(),
        name,
        key: None,
        key_doubt: None,
        grants: Vec::new(),
        browser: Some(browser),
        deleted: false,
        delete_doubt: false,
    });
    let pi = s.people.len() - 1;
    create_grant(ctx, s, pi, true).await
}

async fn create_grant(ctx: &Ctx, s: &mut Shard, pi: usize, probe: bool) -> Result<Flow> {
    let name = unique(ctx, s, "grant");
    let path = format!("/admin/users/{}/grants", s.people[pi].id);
    let Some((status, v)) = admin(ctx, Method::POST, &path, Some(json!({ "name": name }))).await?
    else {
        s.in_doubt += 1;
        return Ok(Flow::Stop);
    };
    ensure!(status == 201, "create grant: {status} {v}");
    s.acked += 1;
    let (Some(id), Some(key)) = (v["grant"]["id"].as_str(), v["api_key"].as_str()) else {
        s.in_doubt += 1;
        return Ok(Flow::Stop);
    };
    s.audit.push(("grant.created", id.to_owned()));
    s.usage.entry(id.to_owned()).or_default();
    s.people[pi].grants.push(Grant {
        id: id.to_owned(),
        name,
        key: Some(key.to_owned()),
        dead_keys: Vec::new(),
        state: GState::Active,
        doubt: None,
        probe,
    });
    Ok(Flow::Go)
}

/// Stores a new OpenAI key for the person: by an operator, or (passkey people, half the
/// time) by the person after a step-up.
async fn put_key(ctx: &Ctx, s: &mut Shard, pi: usize) -> Result<Flow> {
    let key = format!("sk-{}", unique(ctx, s, "dura-openai"));
    let old = s.people[pi].key.clone();
    let by_person = s.people[pi].browser.is_some() && s.rng.chance(50);
    let call = if by_person {
        person_call(
            ctx,
            &mut s.people[pi],
            Method::PUT,
            "/api/key",
            json!({"api_key": key}),
        )
        .await?
    } else {
        let path = format!("/admin/users/{}/openai-key", s.people[pi].id);
        match admin(ctx, Method::PUT, &path, Some(json!({"api_key": key}))).await? {
            Some((st, _)) => Call::Answered(st),
            None => Call::InDoubt,
        }
    };
    let status = match call {
        Call::Answered(st) => st,
        Call::NotSent => return Ok(Flow::Stop),
        Call::InDoubt => {
            s.people[pi].key_doubt = Some((old, Some(key)));
            s.in_doubt += 1;
            return Ok(Flow::Stop);
        }
    };
    ensure!(status == 204, "store a key: {status}");
    s.acked += 1;
    let action = if old.is_some() {
        "key.replaced"
    } else {
        "key.stored"
    };
    s.audit.push((action, s.people[pi].id.clone()));
    if let Some(old) = old {
        s.newly_dead.push(old);
    }
    s.people[pi].key = Some(key);
    Ok(Flow::Go)
}

async fn delete_key(ctx: &Ctx, s: &mut Shard, pi: usize) -> Result<Flow> {
    let old = s.people[pi].key.clone();
    match person_call(
        ctx,
        &mut s.people[pi],
        Method::DELETE,
        "/api/key",
        json!({}),
    )
    .await?
    {
        Call::NotSent => Ok(Flow::Stop),
        Call::Answered(status) => {
            ensure!(status == 204, "delete the key: {status}");
            s.acked += 1;
            s.audit.push(("key.deleted", s.people[pi].id.clone()));
            if let Some(old) = old {
                s.newly_dead.push(old);
            }
            s.people[pi].key = None;
            Ok(Flow::Go)
        }
        Call::InDoubt => {
            s.people[pi].key_doubt = Some((old, None));
            s.in_doubt += 1;
            Ok(Flow::Stop)
        }
    }
}

/// How a person's own change went.
enum Call {
    Answered(StatusCode),
    /// keygate went away during the step-up: the change itself was never sent.
    NotSent,
    InDoubt,
}

/// A step-up (fresh passkey assertion) then the person's own change.
async fn person_call(
    ctx: &Ctx,
    p: &mut Person,
    method: Method,
    path: &str,
    body: Value,
) -> Result<Call> {
    let Some(browser) = p.browser.as_mut() else {
        bail!("person {} has no browser", p.id);
    };
    // A failed step-up changed nothing the model tracks: the change was never sent.
    match browser.try_reauth().await {
        Ok(res) if res.status() == 204 => {}
        Ok(res) if res.status() == StatusCode::REQUEST_TIMEOUT => {
            return not_acked(ctx, &"408 Request Timeout").map(|_| Call::NotSent);
        }
        Ok(res) => bail!("step-up: {}", res.status()),
        Err(e) => return not_acked(ctx, &e).map(|_| Call::NotSent),
    }
    match browser.request(method, path).json(&body).send().await {
        Ok(res) if res.status() == StatusCode::REQUEST_TIMEOUT => {
            not_acked(ctx, &"408 Request Timeout").map(|_| Call::InDoubt)
        }
        Ok(res) => Ok(Call::Answered(res.status())),
        Err(e) => not_acked(ctx, &e).map(|_| Call::InDoubt),
    }
}

async fn rotate(ctx: &Ctx, s: &mut Shard, pi: usize, gi: usize) -> Result<Flow> {
    let path = format!("/admin/grants/{}/rotate", s.people[pi].grants[gi].id);
    let Some((status, v)) =
        admin(ctx, Method::POST, &path, Some(json!({"grace_seconds": 0}))).await?
    else {
        s.people[pi].grants[gi].doubt = Some(GrantDoubt::Rotate);
        s.in_doubt += 1;
        return Ok(Flow::Stop);
    };
    ensure!(status == 200, "rotate: {status} {v}");
    s.acked += 1;
    s.audit
        .push(("grant.rotated", s.people[pi].grants[gi].id.clone()));
    let g = &mut s.people[pi].grants[gi];
    if let Some(old) = g.key.take() {
        g.dead_keys.push(old);
    }
    g.key = v["api_key"].as_str().map(str::to_owned);
    if g.key.is_none() {
        g.doubt = Some(GrantDoubt::Rotate);
        s.in_doubt += 1;
        return Ok(Flow::Stop);
    }
    Ok(Flow::Go)
}

async fn set_state(ctx: &Ctx, s: &mut Shard, pi: usize, gi: usize, to: GState) -> Result<Flow> {
    let g = &s.people[pi].grants[gi];
    let (method, path, want) = match to {
        GState::Disabled => (Method::POST, format!("/admin/grants/{}/disable", g.id), 200),
        GState::Active => (Method::POST, format!("/admin/grants/{}/enable", g.id), 200),
        GState::Revoked | GState::Removed => {
            (Method::DELETE, format!("/admin/grants/{}", g.id), 204)
        }
    };
    let body = (method == Method::POST).then(|| json!({}));
    let before = g.state;
    let Some((status, v)) = admin(ctx, method, &path, body).await? else {
        s.people[pi].grants[gi].doubt = Some(GrantDoubt::State { before, after: to });
        s.in_doubt += 1;
        return Ok(Flow::Stop);
    };
    ensure!(status.as_u16() == want, "{path}: {status} {v}");
    s.acked += 1;
    let action = match to {
        GState::Active => "grant.enabled",
        GState::Disabled => "grant.disabled",
        GState::Revoked => "grant.revoked",
        GState::Removed => "grant.removed",
    };
    s.audit.push((action, s.people[pi].grants[gi].id.clone()));
    let g = &mut s.people[pi].grants[gi];
    g.state = to;
    if to == GState::Removed {
        s.graveyard.extend(g.key.iter().cloned());
    }
    Ok(Flow::Go)
}

async fn rename(ctx: &Ctx, s: &mut Shard, pi: usize, gi: usize) -> Result<Flow> {
    let name = unique(ctx, s, "renamed");
    let path = format!("/admin/grants/{}", s.people[pi].grants[gi].id);
    let before = s.people[pi].grants[gi].name.clone();
    let Some((status, v)) = admin(ctx, Method::PATCH, &path, Some(json!({ "name": name }))).await?
    else {
        s.people[pi].grants[gi].doubt = Some(GrantDoubt::Name {
            before,
            after: name,
        });
        s.in_doubt += 1;
        return Ok(Flow::Stop);
    };
    ensure!(status == 200, "rename: {status} {v}");
    s.acked += 1;
    s.audit
        .push(("grant.changed", s.people[pi].grants[gi].id.clone()));
    s.people[pi].grants[gi].name = name;
    Ok(Flow::Go)
}

async fn delete_person(ctx: &Ctx, s: &mut Shard, pi: usize) -> Result<Flow> {
    let path = format!("/admin/users/{}", s.people[pi].id);
    let Some((status, v)) = admin(ctx, Method::DELETE, &path, None).await? else {
        s.people[pi].delete_doubt = true;
        s.in_doubt += 1;
        return Ok(Flow::Stop);
    };
    ensure!(status == 204, "delete person: {status} {v}");
    s.acked += 1;
    s.audit.push(("account.deleted", s.people[pi].id.clone()));
    s.people[pi].deleted = true;
    s.newly_dead.extend(s.people[pi].key.take());
    Ok(Flow::Go)
}

/// While the load runs: reads everyone's usage, then waits for two usage flushes to
/// finish (the second started after the read, and writes and syncs all it showed):
/// from then on those figures must survive any kill.
async fn monitor(ctx: Arc<Ctx>) -> (HashMap<String, u64>, HashMap<String, u64>, u64) {
    let mut durable = HashMap::new();
    let mut shown = HashMap::new();
    let mut snapshots = 0;
    while !ctx.stop.load(Ordering::SeqCst) && !ctx.dying.load(Ordering::SeqCst) {
        let Ok(rows) = usage_by_grant(&ctx).await else {
            break;
        };
        shown = rows.clone();
        let Ok(start) = usage_flushes(&ctx).await else {
            break;
        };
        let mut done = false;
        while !ctx.dying.load(Ordering::SeqCst) && !ctx.stop.load(Ordering::SeqCst) {
            tokio::time::sleep(Duration::from_millis(100)).await;
            match usage_flushes(&ctx).await {
                Ok(n) if n >= start + 2 => {
                    done = true;
                    break;
                }
                Ok(_) => {}
                Err(_) => break,
            }
        }
        if !done {
            break;
        }
        snapshots += 1;
        for (g, v) in rows {
            let e = durable.entry(g).or_insert(0);
            *e = (*e).max(v);
        }
    }
    (durable, shown, snapshots)
}

async fn usage_flushes(ctx: &Ctx) -> Result<u64> {
    let text = ctx
        .client
        .get(format!("{}/metrics", ctx.base))
        .send()
        .await?
        .text()
        .await?;
    let n = metric(&text, USAGE_FLUSHES).context("no usage flush count in /metrics")? as u64;
    ctx.flushes_seen.fetch_max(n, Ordering::SeqCst);
    Ok(n)
}

/// `requests` per grant id, from `GET /admin/usage?group_by=grant` (removed grants too).
async fn usage_by_grant(ctx: &Ctx) -> Result<HashMap<String, u64>> {
    let res = ctx
        .client
        .get(format!("{}/admin/usage?group_by=grant", ctx.base))
        .bearer_auth(ADMIN_KEY)
        .send()
        .await?;
    ensure!(res.status() == 200, "usage summary: {}", res.status());
    let v: Value = res.json().await?;
    let rows = v["rows"].as_array().context("usage summary has no rows")?;
    Ok(rows
        .iter()
        .filter_map(|r| Some((r["grant"].as_str()?.to_owned(), r["requests"].as_u64()?)))
        .collect())
}

// --- checks after a restart -----------------------------------------------------------

/// Resolves what was in doubt, then checks every person, key and grant of the shard.
async fn verify(ctx: &Ctx, s: &mut Shard) -> Result<()> {
    let mut i = 0;
    while i < s.people.len() {
        if verify_person(ctx, s, i).await? {
            i += 1;
        } else {
            s.people.remove(i);
        }
    }
    let graveyard = std::mem::take(&mut s.graveyard);
    for key in &graveyard {
        let res = ctx
            .client
            .post(format!("{}/v1/chat/completions", ctx.base))
            .bearer_auth(key)
            .json(&json!({"model": "gpt-4o-mini", "messages": []}))
            .send()
            .await?;
        let status = res.status();
        let text = res.text().await.unwrap_or_default();
        ensure!(
            status == 401 && text.contains("invalid_api_key"),
            "a removed grant's or deleted person's key works again: {status} {text}"
        );
        s.checked += 1;
    }
    // Keep checking the most recent ones.
    s.graveyard = graveyard[graveyard.len().saturating_sub(24)..].to_vec();
    Ok(())
}

async fn get(ctx: &Ctx, path: &str) -> Result<(StatusCode, Value)> {
    admin(ctx, Method::GET, path, None)
        .await?
        .with_context(|| format!("GET {path}: no answer"))
}

/// Returns false when the person is gone (deleted, as acknowledged or resolved).
async fn verify_person(ctx: &Ctx, s: &mut Shard, pi: usize) -> Result<bool> {
    let id = s.people[pi].id.clone();
    let (status, user) = get(ctx, &format!("/admin/users/{id}")).await?;
    if s.people[pi].delete_doubt {
        s.people[pi].delete_doubt = false;
        s.people[pi].deleted = status == 404;
    }
    if s.people[pi].deleted {
        ensure!(
            status == 404,
            "person {id} was deleted (acknowledged) but is back: {status}"
        );
        let p = &mut s.people[pi];
        for g in &p.grants {
            s.graveyard.extend(g.key.iter().cloned());
            s.graveyard.extend(g.dead_keys.iter().cloned());
        }
        s.newly_dead.extend(p.key.take());
        if let Some((before, after)) = p.key_doubt.take() {
            s.newly_dead.extend(before);
            s.newly_dead.extend(after);
        }
        s.checked += 1;
        return Ok(false);
    }
    ensure!(
        status == 200,
        "person {id} (acknowledged) is missing: {status} {user}"
    );
    ensure!(
        user["name"] == s.people[pi].name.as_str(),
        "person {id}: name {} instead of {}",
        user["name"],
        s.people[pi].name
    );
    s.checked += 1;
    if let Some(b) = &s.people[pi].browser {
        // The session (flushed at sign-up) survives; so does the person behind it.
        let res = b.request(Method::GET, "/api/me").send().await?;
        ensure!(
            res.status() == 200,
            "person {id}: their session is gone: {}",
            res.status()
        );
        s.checked += 1;
    }

    for gi in 0..s.people[pi].grants.len() {
        resolve_grant(ctx, s, pi, gi).await?;
    }
    // A usable probe grant shows which OpenAI key the vault holds.
    let probe = s.people[pi]
        .grants
        .iter()
        .position(|g| g.probe && g.state == GState::Active && g.key.is_some() && g.doubt.is_none());
    let probe = match probe {
        Some(gi) => gi,
        None => {
            ensure!(
                create_grant(ctx, s, pi, true).await? == Flow::Go,
                "create a probe grant"
            );
            s.people[pi].grants.len() - 1
        }
    };
    if let Some((before, after)) = s.people[pi].key_doubt.clone() {
        let key = s.people[pi].grants[probe].key.clone().unwrap_or_default();
        // Any answer (the doubt is still set): the mock tells which key arrived.
        let (flow, reqid) = proxied(ctx, s, pi, probe, &key, Kind::Json).await?;
        ensure!(
            flow == Flow::Go,
            "person {id}: the probe request got no answer"
        );
        s.people[pi].key_doubt = None;
        let seen = seen_key(ctx, &reqid);
        ensure!(
            seen == before || seen == after,
            "person {id}: after an unacknowledged key change the vault holds neither the old nor the new key"
        );
        for k in [before, after].into_iter().flatten() {
            if Some(&k) != seen.as_ref() {
                s.newly_dead.push(k);
            }
        }
        s.people[pi].key = seen;
    }
    if let (Some(b), Some(key)) = (&s.people[pi].browser, &s.people[pi].key) {
        let v: Value = b
            .request(Method::GET, "/api/key")
            .send()
            .await?
            .json()
            .await?;
        ensure!(
            v["last4"].as_str() == Some(&key[key.len() - 4..]),
            "person {id}: /api/key shows {} for a key ending {}",
            v["last4"],
            &key[key.len() - 4..]
        );
        s.checked += 1;
    }

    for gi in 0..s.people[pi].grants.len() {
        let g = &s.people[pi].grants[gi];
        let (status, v) = get(ctx, &format!("/admin/grants/{}", g.id)).await?;
        if g.state == GState::Removed {
            ensure!(
                status == 404,
                "grant {} was removed but is back: {status}",
                g.id
            );
        } else {
            ensure!(
                status == 200,
                "grant {} (acknowledged) is missing: {status}",
                g.id
            );
            let state = v["state"].as_str().and_then(GState::parse);
            ensure!(
                state == Some(g.state)
                    && v["name"] == g.name.as_str()
                    && v["user_id"] == id.as_str(),
                "grant {}: {} / {} / {}, the model says {:?} / {} / {id}",
                g.id,
                v["state"],
                v["name"],
                v["user_id"],
                g.state,
                g.name
            );
        }
        s.checked += 1;
        let (key, dead) = (g.key.clone(), g.dead_keys.clone());
        if let Some(key) = key {
            let (flow, _) = proxied(ctx, s, pi, gi, &key, Kind::Json).await?;
            ensure!(
                flow == Flow::Go,
                "grant {}: no answer",
                s.people[pi].grants[gi].id
            );
            s.checked += 1;
        }
        for k in dead.iter().rev().take(2) {
            let (flow, _) = proxied(ctx, s, pi, gi, k, Kind::Json).await?;
            ensure!(
                flow == Flow::Go,
                "grant {}: no answer",
                s.people[pi].grants[gi].id
            );
            s.checked += 1;
        }
    }
    Ok(true)
}

/// Settles a grant write whose answer never came: keygate must hold the state before
/// or after it.
async fn resolve_grant(ctx: &Ctx, s: &mut Shard, pi: usize, gi: usize) -> Result<()> {
    let Some(doubt) = s.people[pi].grants[gi].doubt.take() else {
        return Ok(());
    };
    let gid = s.people[pi].grants[gi].id.clone();
    let (status, v) = get(ctx, &format!("/admin/grants/{gid}")).await?;
    let state = if status == 404 {
        Some(GState::Removed)
    } else {
        v["state"].as_str().and_then(GState::parse)
    };
    match doubt {
        GrantDoubt::State { before, after } => {
            let state = state.context("grant state unreadable")?;
            ensure!(
                state == before || state == after,
                "grant {gid}: {state:?} after an unacknowledged {before:?} → {after:?}"
            );
            let g = &mut s.people[pi].grants[gi];
            g.state = state;
            if state == GState::Removed {
                s.graveyard.extend(g.key.iter().cloned());
            }
        }
        GrantDoubt::Name { before, after } => {
            let name = v["name"].as_str().unwrap_or_default();
            ensure!(
                name == before || name == after,
                "grant {gid}: name {name:?} after an unacknowledged rename {before:?} → {after:?}"
            );
            s.people[pi].grants[gi].name = name.to_owned();
        }
        GrantDoubt::Rotate => {
            let Some(old) = s.people[pi].grants[gi].key.clone() else {
                return Ok(());
            };
            // GET /v1/key decides (and is not usage): the old key works or is refused.
            let res = ctx
                .client
                .get(format!("{}/v1/key", ctx.base))
                .bearer_auth(&old)
                .send()
                .await?;
            let g = &mut s.people[pi].grants[gi];
            match res.status().as_u16() {
                200 => {}
                401 => {
                    g.dead_keys.push(old);
                    g.key = None;
                }
                other => bail!("grant {gid}: GET /v1/key with its old key: {other}"),
            }
        }
    }
    Ok(())
}

/// The OpenAI key the mock received with request `reqid` (`None`: it never arrived).
fn seen_key(ctx: &Ctx, reqid: &str) -> Option<String> {
    ctx.mock
        .requests()
        .iter()
        .find(|r| r.header("x-client-request-id") == Some(reqid))
        .and_then(|r| r.header("authorization"))
        .and_then(|a| a.strip_prefix("Bearer "))
        .map(str::to_owned)
}

/// What reached the mock since the last check: no dead OpenAI key at all, and each
/// answered request with exactly the key the model expected. Then clears the mock.
fn check_mock(
    ctx: &Ctx,
    shards: &mut [Shard],
    dead: &HashSet<String>,
    fig: &mut Figures,
) -> Result<()> {
    let requests = ctx.mock.requests();
    let mut by_id: HashMap<&str, &str> = HashMap::new();
    for r in &requests {
        let key = r
            .header("authorization")
            .and_then(|a| a.strip_prefix("Bearer "))
            .unwrap_or_default();
        if dead.contains(key) {
            fig.lost += 1;
            bail!(
                "a replaced or deleted OpenAI key was unsealed and sent upstream (request {:?})",
                r.header("x-client-request-id")
            );
        }
        if let Some(id) = r.header("x-client-request-id") {
            by_id.insert(id, key);
        }
    }
    for s in shards.iter_mut() {
        for (id, key) in s.expect.drain(..) {
            let got = by_id.get(id.as_str()).copied();
            ensure!(
                got == Some(key.as_str()),
                "request {id} was answered but the mock saw {} instead of the person's current key …{}",
                got.map_or("nothing".to_owned(), |k| format!("…{}", tail(k))),
                tail(&key)
            );
        }
    }
    ctx.mock.reset();
    Ok(())
}

/// Right after a restart (nothing pending yet: what keygate shows is what it stored):
/// each grant's `requests` is at least what keygate showed and then proved durable, at
/// most what the harness sent; after a graceful stop, exactly what was answered. Then
/// the bounds start again from what keygate says.
async fn check_usage(
    ctx: &Ctx,
    shards: &mut [Shard],
    prev_graceful: bool,
    last_shown: &HashMap<String, u64>,
    fig: &mut Figures,
) -> Result<()> {
    // A request's usage is recorded as its answer ends, which may be a moment after the
    // client read the last byte: wait (bounded) until what is known to be counted is.
    let deadline = Instant::now() + Duration::from_secs(5);
    let rows = loop {
        let rows = usage_by_grant(ctx).await?;
        let behind = shards.iter().any(|s| {
            s.usage
                .iter()
                .any(|(g, b)| b.unknown == 0 && rows.get(g).copied().unwrap_or(0) < b.ceil)
        });
        if !behind || !prev_graceful || Instant::now() > deadline {
            break rows;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    if std::env::var_os("KG_DURA_VERBOSE").is_some() {
        println!(
            "    usage after restart: {} grants, {} requests; durable floors {:?}",
            rows.len(),
            rows.values().sum::<u64>(),
            shards
                .iter()
                .flat_map(|s| s.usage.iter().map(|(g, b)| (
                    g.clone(),
                    b.floor,
                    b.ceil,
                    rows.get(g).copied().unwrap_or(0)
                )))
                .collect::<Vec<_>>()
        );
    }
    let mut known: HashSet<&str> = HashSet::new();
    for s in shards.iter_mut() {
        for (g, b) in s.usage.iter_mut() {
            let u = rows.get(g).copied().unwrap_or(0);
            if u < b.floor {
                fig.lost += 1;
                bail!(
                    "grant {g}: usage went backwards: {} requests were shown and proven durable, {u} after the restart",
                    b.floor
                );
            }
            ensure!(
                u <= b.ceil,
                "grant {g}: usage double counted: {u} requests, at most {} were sent",
                b.ceil
            );
            if prev_graceful && b.unknown == 0 {
                ensure!(
                    u == b.ceil,
                    "grant {g}: after a graceful stop usage is {u} requests, {} were answered",
                    b.ceil
                );
            }
            if let Some(shown) = last_shown.get(g) {
                let lost = shown.saturating_sub(u);
                fig.shown_then_lost_max = fig.shown_then_lost_max.max(lost);
                fig.shown_then_lost_total += lost;
            }
            *b = Bounds {
                floor: u,
                ceil: u,
                unknown: 0,
            };
            fig.usage_checks += 1;
        }
    }
    for s in shards.iter() {
        known.extend(s.usage.keys().map(String::as_str));
    }
    for (g, u) in &rows {
        ensure!(
            *u == 0 || known.contains(g.as_str()),
            "usage of {u} requests for grant {g}, which no request of the harness used"
        );
    }
    Ok(())
}

/// Every acknowledged write since `since` (Unix seconds) left its audit entry, flushed
/// with it (`GET /admin/audit?from=`, all pages).
async fn check_audit(ctx: &Ctx, shards: &mut [Shard], since: u64, fig: &mut Figures) -> Result<()> {
    let from = keygate_core::calendar::to_rfc3339(since);
    let mut found: HashMap<(String, String), u64> = HashMap::new();
    let mut cursor = String::new();
    loop {
        let res = ctx
            .client
            .get(format!(
                "{}/admin/audit?from={from}&limit=1000&cursor={cursor}",
                ctx.base
            ))
            .bearer_auth(ADMIN_KEY)
            .send()
            .await?;
        ensure!(res.status() == 200, "audit log: {}", res.status());
        let next = res
            .headers()
            .get("x-next-cursor")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let entries: Vec<Value> = res.json().await?;
        for e in &entries {
            let action = e["action"].as_str().unwrap_or_default();
            let mut ids: Vec<&str> = [e["target"]["id"].as_str(), e["user"].as_str()]
                .into_iter()
                .flatten()
                .collect();
            ids.dedup();
            for id in ids {
                *found.entry((action.to_owned(), id.to_owned())).or_default() += 1;
            }
        }
        match next {
            Some(c) if !entries.is_empty() => cursor = c,
            _ => break,
        }
    }
    for s in shards.iter_mut() {
        for (action, id) in s.audit.drain(..) {
            let n = found.entry((action.to_owned(), id.clone())).or_default();
            if *n == 0 {
                fig.lost += 1;
                bail!("an acknowledged {action} of {id} left no audit entry");
            }
            *n -= 1;
            fig.audit_entries_checked += 1;
        }
    }
    Ok(())
}
