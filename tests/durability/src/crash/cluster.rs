//! Cluster mode (issue 14): several real `keygate serve` processes on ONE PostgreSQL
//! database, the same master keyring and public URL, like stateless nodes behind a load
//! balancer. First a smoke of hand-off across the processes (a passkey sign-up started
//! on one node and finished on another, a grant made on one and used on the others, a
//! revocation on one refused by the others, a sign-out on one ending the session
//! everywhere); then a node killed with a request in flight on a grant with
//! `max_concurrency: 1`, whose place the surviving nodes reclaim; then crash cycles:
//! the crash harness's workers spread over the nodes, ONE node killed with SIGKILL at
//! a random moment (every 5th cycle a graceful stop), every acknowledged write checked
//! through the surviving nodes, the node restarted, and serving the next cycle.
//!
//! Not checked here, unlike the one-node mode: usage counters. Each node batches its
//! own (≤ 1 s) and shows its own unflushed ones, so "shown, then lost at a kill" has no
//! single view to read across nodes; what a kill may lose is the killed node's last
//! batch, as on one node (docs/_issue14/cluster.md).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail, ensure};
use keygate_testkit::browser::Browser;
use keygate_testkit::mock_openai::MockOpenAi;
use reqwest::Method;
use serde_json::{Value, json};

use super::{
    Ctx, Figures, Opts, Shard, check_audit, check_mock, join_workers, new_shards, route, verify,
    work,
};
use crate::keygate::{self, Keygate, Launch};
use crate::util::Rng;

pub(super) async fn run(opts: Opts) -> Result<()> {
    let started = Instant::now();
    let cluster = opts
        .cluster
        .as_ref()
        .context("cluster mode without a cluster")?;
    let n = cluster.nodes.max(2);
    let mock = Arc::new(MockOpenAi::try_start().context("start the mock OpenAI")?);
    let dir = tempfile::Builder::new()
        .prefix("keygate-cluster-")
        .tempdir()?;
    // One keyring for every node, as an operator distributes it (never in the database).
    let keyring = keygate_core::keyring::Keyring::generate()
        .map_err(|e| anyhow!("generate a master keyring: {e}"))?;
    let master_keys = keyring.to_text().to_string();
    // The load balancer's address: the public URL (passkeys' origin, browsers' Origin).
    // Nothing listens there; requests go to the nodes.
    let public = format!("http://localhost:{}", keygate::free_port()?);
    let bin = keygate::binary()?;
    let launches: Vec<Launch> = (0..n)
        .map(|i| {
            Ok(Launch {
                bin: bin.clone(),
                data_dir: dir.path().join(format!("node{i}")),
                port: keygate::free_port()?,
                upstream: mock.base_url(),
                rust_log: std::env::var("KG_DURA_RUST_LOG").unwrap_or_else(|_| "warn".into()),
                log: dir.path().join(format!("node{i}.log")),
                env: vec![
                    ("KEYGATE_WORKERS".into(), "1".into()),
                    ("KEYGATE_SHUTDOWN_TIMEOUT_SECS".into(), "5".into()),
                    ("KEYGATE_AUTH_RATE_PER_MINUTE".into(), "10000".into()),
                    ("KEYGATE_STORE_URL".into(), cluster.store_url.clone()),
                    ("KEYGATE_MASTER_KEYS".into(), master_keys.clone()),
                ],
                public: Some(public.clone()),
            })
        })
        .collect::<Result<_>>()?;
    println!(
        "cluster durability: {n} nodes on one PostgreSQL database, {} cycles, {} workers, seed {} \
         (KG_DURA_SEED), keygate {}, logs in {}",
        opts.cycles,
        opts.workers,
        opts.seed,
        bin.display(),
        dir.path().display()
    );
    let dying: Vec<Arc<AtomicBool>> = (0..n).map(|_| Arc::new(AtomicBool::new(false))).collect();
    let base = Ctx {
        client: reqwest::Client::builder()
            .timeout(Duration::from_secs(60))
            .pool_idle_timeout(Duration::from_secs(2))
            .redirect(reqwest::redirect::Policy::none())
            .build()?,
        base: launches[0].local_url(),
        public: public.clone(),
        node: launches[0].node_url(),
        mock,
        seed: opts.seed,
        dying: Arc::clone(&dying[0]),
        stop: Arc::default(),
        flushes_seen: Arc::default(),
        unprovoked: Arc::default(),
    };
    let ctxs: Vec<Ctx> = (0..n).map(|i| base.on(&launches[i], &dying[i])).collect();

    let result = async {
        let mut procs: Vec<Option<Keygate>> = Vec::new();
        for l in &launches {
            procs.push(Some(l.spawn()?));
        }
        for p in procs.iter_mut().flatten() {
            p.ready(&base.client, Duration::from_secs(120)).await?;
        }
        let one_place = smoke(&ctxs).await.context("hand-off smoke")?;
        killed_nodes_place_comes_back(&ctxs, &launches, &mut procs, &one_place)
            .await
            .context("a killed node's leases")?;
        crash_cycles(&opts, &launches, &ctxs, &mut procs).await
    }
    .await;
    match result {
        Ok(fig) => {
            println!(
                "cluster durability: {n} nodes, cycles {} (SIGKILL of one node under load {}, \
                 SIGKILL while starting {}, graceful {}), acked writes {}, acked writes checked \
                 through surviving nodes {}, in doubt resolved {}, proxied requests {}, entity \
                 checks {}, audit entries checked {}, lost {}, requests unanswered without a \
                 kill {}, {:.0}s",
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
                fig.lost,
                fig.unprovoked,
                started.elapsed().as_secs_f64()
            );
            Ok(())
        }
        Err(e) => {
            println!("cluster durability: FAILED (seed {}): {e:#}", opts.seed);
            for l in &launches {
                println!(
                    "{} (end):\n{}",
                    l.log.display(),
                    keygate::log_tail(&l.log, 15)
                );
            }
            let kept = dir.keep();
            println!("logs kept in {}", kept.display());
            Err(e)
        }
    }
}

/// Hand-off across the real processes; prints how long a revocation and a sign-out
/// took to be seen by the other nodes (per-request reads: expected one request).
/// Answers the key of a grant with `max_concurrency: 1`, for the next step.
async fn smoke(ctxs: &[Ctx]) -> Result<String> {
    let (a, b, c) = (&ctxs[0], &ctxs[1], &ctxs[2 % ctxs.len()]);
    let mut browser = Browser::new(&a.public);
    // Sign-up: the ceremony started on A, finished on B.
    let started: Value = browser
        .via(&a.node)
        .post("/api/auth/register/start", json!({"name": "Roaming"}))
        .await
        .json()
        .await?;
    let credential = browser
        .passkey
        .create(&started["options"])
        .map_err(|e| anyhow!("authenticator: {e}"))?;
    let res = browser
        .via(&b.node)
        .post(
            "/api/auth/register/finish",
            json!({"ceremony": started["ceremony"], "credential": credential}),
        )
        .await;
    ensure!(
        res.status() == 201,
        "sign-up finished on another node: {}",
        res.status()
    );
    // The session made on B works on C; the key stored through C, a grant made on A.
    ensure!(
        browser.via(&c.node).get("/api/me").await.status() == 200,
        "session on C"
    );
    let res = browser
        .send(
            Method::PUT,
            "/api/key",
            json!({"api_key": "sk-cluster-smoke-0000000000000000ABCD"}),
        )
        .await;
    ensure!(res.status() == 204, "key stored on C: {}", res.status());
    let created: Value = browser
        .via(&a.node)
        .post("/api/grants", json!({"name": "smoke"}))
        .await
        .json()
        .await?;
    let id = created["grant"]["id"]
        .as_str()
        .context("grant id")?
        .to_owned();
    let key = created["api_key"].as_str().context("api key")?.to_owned();
    let one_place: Value = browser
        .via(&b.node)
        .post(
            "/api/grants",
            json!({"name": "one place", "limits": {"max_concurrency": 1}}),
        )
        .await
        .json()
        .await?;
    let one_place = one_place["api_key"]
        .as_str()
        .context("api key of the one-place grant")?
        .to_owned();
    for ctx in ctxs {
        let status = chat(ctx, &key).await?.0;
        ensure!(status == 200, "the grant on node {}: {status}", ctx.base);
    }
    // Revoked on B: refused by every other node from its next request.
    let res = browser
        .via(&b.node)
        .send(Method::DELETE, &format!("/api/grants/{id}"), json!({}))
        .await;
    ensure!(res.status().is_success(), "revoke: {}", res.status());
    let t0 = Instant::now();
    for ctx in ctxs {
        let (status, body) = chat(ctx, &key).await?;
        ensure!(
            status == 401 && body.contains("revoked_api_key"),
            "node {} after the revocation: {status} {body}",
            ctx.base
        );
    }
    let revoke_ms = t0.elapsed().as_secs_f64() * 1000.0;
    // Signed out on C: the session ends on A and B.
    let res = browser
        .via(&c.node)
        .post("/api/auth/logout", json!({}))
        .await;
    ensure!(res.status().is_success(), "sign-out: {}", res.status());
    for ctx in ctxs {
        let status = browser.via(&ctx.node).get("/api/me").await.status();
        ensure!(
            status == 401,
            "session after sign-out on node {}: {status}",
            ctx.base
        );
    }
    println!(
        "cluster smoke: sign-up started on node 0 and finished on node 1, session valid on \
         node 2; a grant made on node 0 used on all {}; revoked on node 1 and refused by \
         every node on its first request ({revoke_ms:.1} ms for all of them); signed out on \
         node 2, refused everywhere",
        ctxs.len()
    );
    Ok(one_place)
}

/// A node killed (SIGKILL) with a request in flight on a grant with `max_concurrency:
/// 1`: its lease in PostgreSQL keeps the place taken, so another node refuses the
/// grant — until the surviving nodes' heartbeats reclaim the dead node's leases (its
/// time to live, 10 s, after its last beat). Then the grant is served again; the node
/// is restarted. Prints how long the place stayed taken.
async fn killed_nodes_place_comes_back(
    ctxs: &[Ctx],
    launches: &[Launch],
    procs: &mut [Option<Keygate>],
    key: &str,
) -> Result<()> {
    let (a, b) = (&ctxs[0], &ctxs[1]);
    let before = a.mock.request_count();
    // The mock holds the answer's head for a minute: in flight when node 0 dies.
    let stuck = a
        .client
        .post(format!("{}/v1/chat/completions", a.base))
        .bearer_auth(key)
        .header("x-mock-scenario", "slow-first-byte")
        .header("x-mock-delay-ms", "60000")
        .json(&json!({"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]}))
        .send();
    let stuck = tokio::spawn(stuck);
    ensure!(
        a.mock
            .wait_for_more_than(before, Duration::from_secs(20))
            .await,
        "the held request never reached the mock"
    );
    let (status, body) = chat(b, key).await?;
    ensure!(
        status == 429 && body.contains("concurrency_limit_exceeded"),
        "node 1 while node 0 holds the only place: {status} {body}"
    );
    procs[0].as_mut().context("node 0 is not running")?.kill()?;
    let killed = Instant::now();
    let _ = stuck.await;
    let (mut refused, deadline) = (0u32, killed + Duration::from_secs(60));
    loop {
        let (status, body) = chat(b, key).await?;
        match status {
            200 => break,
            429 if body.contains("concurrency_limit_exceeded") => refused += 1,
            _ => bail!("node 1 after node 0 was killed: {status} {body}"),
        }
        ensure!(
            Instant::now() < deadline,
            "the killed node's place was never given back ({refused} refusals in 60 s)"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let taken_for = killed.elapsed().as_secs_f64();
    ensure!(
        refused > 0,
        "the place was free right after the kill: was it held?"
    );
    let mut again = launches[0].spawn()?;
    again
        .ready(&a.client, Duration::from_secs(120))
        .await
        .context("node 0 did not come back")?;
    procs[0] = Some(again);
    println!(
        "cluster leases: node 0 killed holding a grant's only place (max_concurrency 1); \
         node 1 refused the grant {refused} times, then served it {taken_for:.1} s after the \
         kill (the dead node's lease reclaimed by a surviving node's heartbeat); node 0 \
         restarted"
    );
    Ok(())
}

async fn chat(ctx: &Ctx, key: &str) -> Result<(u16, String)> {
    let res = ctx
        .client
        .post(format!("{}/v1/chat/completions", ctx.base))
        .bearer_auth(key)
        .json(&json!({"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]}))
        .send()
        .await?;
    Ok((res.status().as_u16(), res.text().await.unwrap_or_default()))
}

async fn crash_cycles(
    opts: &Opts,
    launches: &[Launch],
    ctxs: &[Ctx],
    procs: &mut [Option<Keygate>],
) -> Result<Figures> {
    let n = launches.len();
    let base = &ctxs[0];
    let mut rng = Rng::new(opts.seed);
    let mut shards = new_shards(opts);
    let mut fig = Figures::default();
    let mut dead = std::collections::HashSet::new();
    let mut audit_since = keygate_core::time::now().saturating_sub(2);
    for cycle in 0..opts.cycles {
        // 1. Load on every node: worker k on node k mod n.
        let victim = rng.below(n as u64) as usize;
        let graceful = cycle % 5 == 4;
        for d in ctxs {
            d.dying.store(false, Ordering::SeqCst);
        }
        base.stop.store(false, Ordering::SeqCst);
        let dead_before_load = dead.clone();
        let workers: Vec<_> = shards
            .drain(..)
            .map(|mut s| {
                let ctx = ctxs[s.idx % n].clone();
                route(&ctx, &mut s);
                tokio::spawn(work(Arc::new(ctx), s))
            })
            .collect();
        tokio::time::sleep(Duration::from_millis(300 + rng.below(2200))).await;
        let victim_proc = procs[victim]
            .as_mut()
            .context("the victim node is not running")?;
        if graceful {
            base.stop.store(true, Ordering::SeqCst);
            shards = join_workers(workers).await?;
            ctxs[victim].dying.store(true, Ordering::SeqCst);
            let status = victim_proc.terminate(Duration::from_secs(60))?;
            ensure!(
                status.success(),
                "cycle {cycle}: graceful stop of node {victim}: {status}"
            );
            fig.graceful_stops += 1;
        } else {
            ensure!(
                !victim_proc.exited()?,
                "cycle {cycle}: node {victim} exited by itself under load\n{}",
                keygate::log_tail(&launches[victim].log, 30)
            );
            ctxs[victim].dying.store(true, Ordering::SeqCst);
            victim_proc.kill()?;
            base.stop.store(true, Ordering::SeqCst);
            shards = join_workers(workers).await?;
            fig.kills += 1;
        }
        procs[victim] = None;
        fig.cycles += 1;

        // 2. Every acknowledged write, through the surviving nodes.
        let survivors: Vec<usize> = (0..n).filter(|&i| i != victim).collect();
        check_through(
            &mut shards,
            ctxs,
            &survivors,
            &mut dead,
            &dead_before_load,
            &mut fig,
        )
        .await
        .with_context(|| format!("cycle {cycle}: after node {victim} went down"))?;
        check_audit(&ctxs[survivors[0]], &mut shards, audit_since, &mut fig)
            .await
            .with_context(|| format!("cycle {cycle}: audit log"))?;
        audit_since = keygate_core::time::now().saturating_sub(2);

        // 3. The node comes back (now and then killed once more while it connects and
        //    checks the migrations), and serves the next cycle.
        if rng.chance(10) {
            let mut early = launches[victim].spawn()?;
            tokio::time::sleep(Duration::from_millis(rng.below(250))).await;
            early.kill()?;
            fig.kills_while_starting += 1;
        }
        let mut again = launches[victim].spawn()?;
        again
            .ready(&base.client, Duration::from_secs(120))
            .await
            .with_context(|| format!("cycle {cycle}: node {victim} did not come back"))?;
        procs[victim] = Some(again);
        if cycle % 5 == 4 || cycle + 1 == opts.cycles {
            println!(
                "  cycle {:>4}: acked writes {:>6}, in doubt {:>4}, proxied {:>6}, checks {:>7}",
                cycle + 1,
                shards.iter().map(|s| s.acked).sum::<u64>(),
                shards.iter().map(|s| s.in_doubt).sum::<u64>(),
                shards.iter().map(|s| s.proxied).sum::<u64>(),
                fig.entities_checked
            );
        }
    }
    // 4. The end: every node (the restarted ones too) shows every acknowledged write.
    let all: Vec<usize> = (0..n).collect();
    let snapshot = dead.clone();
    check_through(&mut shards, ctxs, &all, &mut dead, &snapshot, &mut fig)
        .await
        .context("at the end, through every node")?;
    for (i, p) in procs.iter_mut().enumerate() {
        if let Some(p) = p.as_mut() {
            let status = p.terminate(Duration::from_secs(60))?;
            ensure!(status.success(), "node {i}'s last stop failed: {status}");
        }
    }
    fig.acked_writes = shards.iter().map(|s| s.acked).sum();
    fig.in_doubt = shards.iter().map(|s| s.in_doubt).sum();
    fig.proxied = shards.iter().map(|s| s.proxied).sum();
    fig.unprovoked = base.unprovoked.load(Ordering::SeqCst);
    if fig.cycles == 0 {
        bail!("no crash cycle ran (KG_DURA_CYCLES=0)");
    }
    Ok(fig)
}

/// Verifies every shard (shard k through `nodes[k mod len]`) and the OpenAI keys the
/// mock received.
async fn check_through(
    shards: &mut [Shard],
    ctxs: &[Ctx],
    nodes: &[usize],
    dead: &mut std::collections::HashSet<String>,
    dead_before: &std::collections::HashSet<String>,
    fig: &mut Figures,
) -> Result<()> {
    let acked_before: u64 = shards.iter().map(|s| s.acked).sum();
    let checks = futures::future::join_all(shards.iter_mut().map(|s| {
        let ctx = &ctxs[nodes[s.idx % nodes.len()]];
        route(ctx, s);
        verify(ctx, s)
    }))
    .await;
    for c in checks {
        c?;
    }
    fig.acked_writes_checked = acked_before;
    fig.entities_checked = shards.iter().map(|s| s.checked).sum();
    check_mock(&ctxs[nodes[0]], shards, dead_before, fig).context("keys the mock received")?;
    for s in shards.iter_mut() {
        dead.extend(s.newly_dead.drain(..));
    }
    fig.dead_keys = dead.len() as u64;
    Ok(())
}
