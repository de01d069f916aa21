//! Stateless nodes (issue 14, point 3): three real keygate servers on one PostgreSQL
//! database, the same keys and public URL, as behind a load balancer that is not sticky.
//! Every step of a flow may land on any node: a passkey ceremony started on one node
//! finishes on another, a session made on one is valid on all, a connect code issued by
//! one is redeemed on another (once), and a change made on one node is seen by every
//! other on its very next request.
//!
//! Propagation is measured, not just asserted: from the answer of the change to the
//! first request of each other node that shows it. keygate reads grants and vault
//! records from PostgreSQL per request (no cache there), so the expected figure is one
//! request, a few milliseconds. The only timed assertion is the issue's own bound (1 s),
//! which a per-request read meets with a wide margin even on a loaded CI machine;
//! anything slower would mean a cache crept in.
//!
//! Needs PostgreSQL (`KG_TEST_PG_URL`); skipped with a printed line without it,
//! unless `KG_REQUIRE_PG=1`.
// The propagation figures are this module's report (docs/_issue14/cluster.md quotes
// them): printed, never asserted beyond the bound.
#![allow(clippy::print_stdout)]

use std::future::Future;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use keygate_testkit::browser::Browser;
use keygate_testkit::cluster::TestCluster;
use keygate_testkit::{FAKE_OPENAI_KEY, TestApp, manual_clock};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use crate::connect::{VERIFIER, approve_redirect, code_from, connect_url, good_params, popup};
use crate::helpers::{assert_openai_error, chat, json_of};

/// The bound for a change to reach every node.
const BOUND: Duration = Duration::from_secs(1);

const A: usize = 0;
const B: usize = 1;
const C: usize = 2;

async fn cluster() -> Option<TestCluster> {
    TestCluster::spawn(3, |_| {}).await
}

/// Register start on one node, finish on another (the ceremony state is in the store).
async fn sign_up_across(c: &TestCluster, b: &mut Browser, start: usize, finish: usize) -> Value {
    let started = json_of(
        b.via(&c.urls[start])
            .post("/api/auth/register/start", json!({"name": "Roaming"}))
            .await,
        200,
    )
    .await;
    let credential = b.passkey.create(&started["options"]).unwrap();
    let res = b
        .via(&c.urls[finish])
        .post(
            "/api/auth/register/finish",
            json!({"ceremony": started["ceremony"], "credential": credential}),
        )
        .await;
    json_of(res, 201).await["user"].clone()
}

/// Sign-in start on one node, finish on another.
async fn sign_in_across(c: &TestCluster, b: &mut Browser, start: usize, finish: usize) {
    let started = json_of(
        b.via(&c.urls[start])
            .post("/api/auth/login/start", json!({}))
            .await,
        200,
    )
    .await;
    let credential = b.passkey.get(&started["options"]).unwrap();
    let res = b
        .via(&c.urls[finish])
        .post(
            "/api/auth/login/finish",
            json!({"ceremony": started["ceremony"], "credential": credential}),
        )
        .await;
    json_of(res, 200).await;
}

/// Step-up: reauth start on one node, finish on another.
async fn reauth_across(c: &TestCluster, b: &mut Browser, start: usize, finish: usize) {
    let started = json_of(
        b.via(&c.urls[start])
            .post("/api/auth/reauth/start", json!({}))
            .await,
        200,
    )
    .await;
    let credential = b.passkey.get(&started["options"]).unwrap();
    let res = b
        .via(&c.urls[finish])
        .post(
            "/api/auth/reauth/finish",
            json!({"ceremony": started["ceremony"], "credential": credential}),
        )
        .await;
    let status = res.status();
    assert!(
        status.is_success(),
        "reauth finish: {status} {:?}",
        res.text().await
    );
}

async fn me_status(c: &TestCluster, b: &mut Browser, node: usize) -> StatusCode {
    b.via(&c.urls[node]).get("/api/me").await.status()
}

/// After a change answered at `t0`, polls every node in `nodes` (all at once) with
/// `shows` until it shows the change; prints when the showing request was sent and
/// answered and how many requests it took, and asserts the bound on the SEND
/// time: a request sent within 1 s of the change already got the new state. (The
/// answer's own latency is the machine's, not propagation: on a starved CI machine one
/// request may take long, and that must not fail the test.) `shows(i)` makes ONE
/// request to node `i`.
async fn seen_everywhere<F, Fut>(what: &str, nodes: &[usize], t0: Instant, shows: F)
where
    F: Fn(usize) -> Fut,
    Fut: Future<Output = bool>,
{
    let shows = &shows;
    let polls = nodes.iter().map(|&i| async move {
        let mut requests = 0u32;
        loop {
            requests += 1;
            let sent = t0.elapsed();
            assert!(
                sent < BOUND,
                "{what}: node {i} still did not show it {sent:?} after the change ({} requests)",
                requests - 1
            );
            if shows(i).await {
                return (i, sent, t0.elapsed(), requests);
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    });
    for (i, sent, answered, requests) in futures::future::join_all(polls).await {
        println!(
            "cluster propagation: {what}: node {i} showed it on request {requests}, sent {:.1} ms \
             and answered {:.1} ms after the change's answer",
            sent.as_secs_f64() * 1000.0,
            answered.as_secs_f64() * 1000.0
        );
    }
}

/// A proxied chat request with `key` to node `i`: its status.
async fn chat_status(node: &TestApp, key: &str, model: &str) -> StatusCode {
    node.chat_completions(key, &chat(model)).await.status()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ceremonies_and_sessions_hand_off_across_nodes() {
    let Some(c) = cluster().await else { return };
    // Sign-up started on A, finished on B; the session works on C.
    let mut b = c.browser();
    let user = sign_up_across(&c, &mut b, A, B).await;
    for node in [A, B, C] {
        let me = json_of(b.via(&c.urls[node]).get("/api/me").await, 200).await;
        assert_eq!(me["id"], user["id"], "node {node}");
    }
    // Sign-in on another device: started on B, finished on C; valid on A.
    let mut laptop = b.with_same_passkey();
    sign_in_across(&c, &mut laptop, B, C).await;
    let me = json_of(laptop.via(&c.urls[A]).get("/api/me").await, 200).await;
    assert_eq!(me["id"], user["id"]);
    // A ceremony finishes once, whichever node is asked the second time.
    let started = json_of(
        laptop
            .via(&c.urls[A])
            .post("/api/auth/login/start", json!({}))
            .await,
        200,
    )
    .await;
    let credential = laptop.passkey.get(&started["options"]).unwrap();
    let body = json!({"ceremony": started["ceremony"], "credential": credential});
    let first = laptop
        .via(&c.urls[B])
        .post("/api/auth/login/finish", body.clone())
        .await;
    assert_eq!(first.status(), 200);
    let again = laptop
        .via(&c.urls[C])
        .post("/api/auth/login/finish", body)
        .await;
    assert_openai_error(again, 400, "ceremony_failed").await;

    // Step-up started on A, finished on B; the sensitive action on C is allowed. (On
    // the laptop, whose copy of the passkey signed last: the other copy's use counter
    // is behind now, and every node refuses it — the counter is shared too.)
    reauth_across(&c, &mut laptop, A, B).await;
    let res = laptop
        .via(&c.urls[C])
        .send(Method::PUT, "/api/key", json!({"api_key": FAKE_OPENAI_KEY}))
        .await;
    assert_eq!(res.status(), 204, "a fresh session made on B, used on C");

    // Signing out on C ends that session on every node at once.
    let res = laptop
        .via(&c.urls[C])
        .post("/api/auth/logout", json!({}))
        .await;
    assert!(res.status().is_success(), "logout: {}", res.status());
    let t0 = Instant::now();
    let laptop = std::sync::Arc::new(tokio::sync::Mutex::new(laptop));
    seen_everywhere("sign-out", &[A, B], t0, |i| {
        let laptop = laptop.clone();
        let url = c.urls[i].clone();
        async move {
            let mut l = laptop.lock().await;
            l.via(&url).get("/api/me").await.status() == 401
        }
    })
    .await;
    // The other device's session is untouched.
    assert_eq!(me_status(&c, &mut b, A).await, 200);
    c.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connect_codes_hand_off_across_nodes_and_redeem_once() {
    let Some(c) = cluster().await else { return };
    let mut b = c.browser();
    sign_up_across(&c, &mut b, A, A).await;
    let res = b
        .send(Method::PUT, "/api/key", json!({"api_key": FAKE_OPENAI_KEY}))
        .await;
    assert_eq!(res.status(), 204);

    // Redirect + PKCE: the page and the approval on A, the code exchanged on B, the
    // grant used on C.
    let ch = crate::connect::challenge(VERIFIER);
    let params = good_params(&ch);
    let refs: Vec<(&str, &str)> = params.iter().map(|(k, v)| (*k, v.as_str())).collect();
    assert_eq!(
        b.via(&c.urls[A]).get(&connect_url(&refs)).await.status(),
        200
    );
    let code = code_from(&approve_redirect(&mut b, &[]).await);
    let exchange = |node: usize| {
        c.nodes[node]
            .client
            .post(format!("{}/api/connect/token", c.urls[node]))
            .json(&json!({"code": code, "code_verifier": VERIFIER}))
            .send()
    };
    let got = json_of(exchange(B).await.unwrap(), 200).await;
    assert_eq!(got["base_url"], format!("{}/v1", c.public_url));
    let key = got["api_key"].as_str().unwrap();
    assert_eq!(chat_status(&c.nodes[C], key, "gpt-4o-mini").await, 200);
    // A second exchange of the same code, on another node: refused.
    assert_openai_error(exchange(C).await.unwrap(), 400, "invalid_grant").await;
    assert_openai_error(exchange(A).await.unwrap(), 400, "invalid_grant").await;

    // Popup: the ceremony started and finished on B (the helper's one node), the key
    // used on A and C.
    b.via(&c.urls[B]);
    let res = popup(&mut b, json!({})).await;
    let approved = json_of(res, 201).await;
    let key = approved["api_key"].as_str().unwrap();
    for node in [A, C] {
        assert_eq!(
            chat_status(&c.nodes[node], key, "gpt-4o-mini").await,
            200,
            "node {node}"
        );
    }
    c.stop().await;
}

/// A grant (all models) of a person signed up through node A, with a key stored.
async fn person_with_grant(c: &TestCluster) -> (Browser, String, String) {
    let mut b = c.browser();
    sign_up_across(c, &mut b, A, B).await;
    let res = b
        .via(&c.urls[A])
        .send(Method::PUT, "/api/key", json!({"api_key": FAKE_OPENAI_KEY}))
        .await;
    assert_eq!(res.status(), 204);
    let created = json_of(b.post("/api/grants", json!({"name": "app"})).await, 201).await;
    let id = created["grant"]["id"].as_str().unwrap().to_owned();
    let key = created["api_key"].as_str().unwrap().to_owned();
    for node in [A, B, C] {
        assert_eq!(chat_status(&c.nodes[node], &key, "gpt-4o").await, 200);
    }
    (b, id, key)
}

/// `shows` for a proxied request that must now be refused with `status` and `code`.
fn refused<'a>(
    c: &'a TestCluster,
    key: &'a str,
    model: &'a str,
    status: u16,
    code: &'a str,
) -> impl Fn(usize) -> std::pin::Pin<Box<dyn Future<Output = bool> + 'a>> {
    move |i| {
        Box::pin(async move {
            let res = c.nodes[i].chat_completions(key, &chat(model)).await;
            if res.status().as_u16() != status {
                return false;
            }
            let body: Value = res.json().await.unwrap_or(Value::Null);
            body["error"]["code"] == code
        })
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_change_on_one_node_is_seen_by_every_other_on_its_next_request() {
    // One manual clock for every node: a rotation's grace ends everywhere at once.
    let Some(c) = TestCluster::spawn_with_clock(3, manual_clock(), |_| {}).await else {
        return;
    };
    let admin = |node: usize, method: Method, path: &str| {
        c.nodes[node]
            .admin(method, path)
            .header("content-type", "application/json")
    };

    // Revoke on A (the person, from the dashboard): refused on B and C.
    let (mut b, id, key) = person_with_grant(&c).await;
    let res = b
        .via(&c.urls[A])
        .send(Method::DELETE, &format!("/api/grants/{id}"), json!({}))
        .await;
    assert!(res.status().is_success(), "revoke: {}", res.status());
    let t0 = Instant::now();
    seen_everywhere(
        "revoke",
        &[B, C],
        t0,
        refused(&c, &key, "gpt-4o", 401, "revoked_api_key"),
    )
    .await;

    // Disable on B (the operator): refused on A and C; enable on C: works on A and B.
    let (_b2, id, key) = person_with_grant(&c).await;
    let res = admin(B, Method::POST, &format!("/admin/grants/{id}/disable"))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    let t0 = Instant::now();
    seen_everywhere(
        "disable",
        &[A, C],
        t0,
        refused(&c, &key, "gpt-4o", 401, "invalid_api_key"),
    )
    .await;
    let res = admin(C, Method::POST, &format!("/admin/grants/{id}/enable"))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    let t0 = Instant::now();
    seen_everywhere("enable", &[A, B], t0, |i| {
        let key = key.clone();
        let node = &c.nodes[i];
        async move { chat_status(node, &key, "gpt-4o").await == 200 }
    })
    .await;

    // PATCH narrowing models on C: the dropped model refused on A and B.
    let res = admin(C, Method::PATCH, &format!("/admin/grants/{id}"))
        .json(&json!({"models": ["gpt-4o-mini"]}))
        .send()
        .await
        .unwrap();
    json_of(res, 200).await;
    let t0 = Instant::now();
    seen_everywhere(
        "PATCH models",
        &[A, B],
        t0,
        refused(&c, &key, "gpt-4o", 403, "model_not_allowed"),
    )
    .await;

    // Rotate without grace on A: the old secret refused on B and C at once, the new
    // one works there.
    let rotated = json_of(
        admin(A, Method::POST, &format!("/admin/grants/{id}/rotate"))
            .json(&json!({}))
            .send()
            .await
            .unwrap(),
        200,
    )
    .await;
    let t0 = Instant::now();
    seen_everywhere(
        "rotate (no grace)",
        &[B, C],
        t0,
        refused(&c, &key, "gpt-4o-mini", 401, "invalid_api_key"),
    )
    .await;
    let key = rotated["api_key"].as_str().unwrap().to_owned();
    assert_eq!(chat_status(&c.nodes[C], &key, "gpt-4o-mini").await, 200);

    // Rotate with a grace on B: the old secret keeps working on every node until the
    // grace ends, then it is refused on every node.
    let rotated = json_of(
        admin(B, Method::POST, &format!("/admin/grants/{id}/rotate"))
            .json(&json!({"grace_seconds": 60}))
            .send()
            .await
            .unwrap(),
        200,
    )
    .await;
    let new_key = rotated["api_key"].as_str().unwrap().to_owned();
    for node in [A, B, C] {
        assert_eq!(chat_status(&c.nodes[node], &key, "gpt-4o-mini").await, 200);
        assert_eq!(
            chat_status(&c.nodes[node], &new_key, "gpt-4o-mini").await,
            200
        );
    }
    c.nodes[A].clock.advance(60);
    let t0 = Instant::now();
    seen_everywhere(
        "rotation grace over",
        &[A, B, C],
        t0,
        refused(&c, &key, "gpt-4o-mini", 401, "invalid_api_key"),
    )
    .await;

    // Replacing the OpenAI key on A (the person, after a step-up on B): the very next
    // request on B and C carries the new key upstream.
    let (mut b, _id, key) = person_with_grant(&c).await;
    reauth_across(&c, &mut b, B, B).await;
    let replacement = "sk-test-keygate-replacement-00000000000000QRST";
    let res = b
        .via(&c.urls[A])
        .send(Method::PUT, "/api/key", json!({"api_key": replacement}))
        .await;
    assert_eq!(res.status(), 204);
    let t0 = Instant::now();
    let probes = std::sync::atomic::AtomicU32::new(0);
    seen_everywhere("replace the OpenAI key", &[B, C], t0, |i| {
        let key = key.clone();
        let (c, probes) = (&c, &probes);
        async move {
            // The nodes are polled at once: each request is found in the mock by its
            // own id, not as "the last one".
            let id = format!("probe-{i}-{}", probes.fetch_add(1, Ordering::SeqCst));
            let res = c.nodes[i]
                .v1(Method::POST, "/chat/completions", &key)
                .header("x-client-request-id", &id)
                .json(&chat("gpt-4o"))
                .send()
                .await
                .unwrap();
            assert_eq!(res.status(), 200);
            let seen = c
                .mock
                .requests()
                .into_iter()
                .find(|r| r.header("x-client-request-id") == Some(id.as_str()))
                .expect("the probe reached the mock");
            seen.header("authorization") == Some(format!("Bearer {replacement}").as_str())
        }
    })
    .await;

    // Deleting the OpenAI key on C: 409 key_not_enrolled on A and B.
    let res = b
        .via(&c.urls[C])
        .send(Method::DELETE, "/api/key", json!({}))
        .await;
    assert_eq!(res.status(), 204);
    let t0 = Instant::now();
    seen_everywhere(
        "delete the OpenAI key",
        &[A, B],
        t0,
        refused(&c, &key, "gpt-4o", 409, "key_not_enrolled"),
    )
    .await;

    // Deleting the account on B: its grants refused and its sessions ended on A and C.
    let (b, _id, key) = person_with_grant(&c).await;
    let mut b = b;
    let res = b
        .via(&c.urls[B])
        .send(Method::DELETE, "/api/account", json!({}))
        .await;
    assert_eq!(res.status(), 204);
    let t0 = Instant::now();
    seen_everywhere(
        "delete the account (grant)",
        &[A, C],
        t0,
        refused(&c, &key, "gpt-4o", 401, "invalid_api_key"),
    )
    .await;
    for node in [A, C] {
        assert_eq!(me_status(&c, &mut b, node).await, 401, "node {node}");
    }
    c.stop().await;
}

/// Issue 14, point 4 over HTTP: 64 clients spread over 3 nodes, one grant with a USD
/// budget and a concurrency cap, a slow upstream. The nodes share the limits through
/// PostgreSQL (`limit_windows`): with a limiter per node (as on sled) three nodes
/// together overspend and exceed the cap, which is how this test was first seen to
/// fail.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn limits_hold_across_three_nodes() {
    const CLIENTS: usize = 64;
    const CAP: usize = 4;
    let Some(c) = cluster().await else { return };
    // gpt-4o: a priced model; max_tokens makes each reservation known in advance.
    // Budget: a handful of reserved requests' worth, far fewer than 64.
    let (_b, id, key) = person_with_grant(&c).await;
    c.nodes[A]
        .set_limits(
            &id,
            json!({"max_concurrency": CAP, "budget": {"usd": 0.05, "period": "month"}}),
            None,
        )
        .await;
    c.mock.reset();
    let body = json!({
        "model": "gpt-4o", "max_tokens": 1000,
        "messages": [{"role": "user", "content": "Hi"}],
    });
    let tasks: Vec<_> = (0..CLIENTS)
        .map(|i| {
            let node = &c.nodes[i % 3];
            let req = node
                .v1(Method::POST, "/chat/completions", &key)
                // The mock holds each answer's head 200 ms, counted as in flight.
                .header("x-mock-scenario", "slow-first-byte")
                .header("x-mock-delay-ms", "200")
                // Each answer spends what it reserved: an overspend shows in dollars.
                .header("x-mock-completion-tokens", "1000")
                .json(&body);
            async move {
                let res = req.send().await.unwrap();
                let status = res.status().as_u16();
                let v: Value = res.json().await.unwrap_or(Value::Null);
                (status, v["error"]["code"].as_str().map(str::to_owned))
            }
        })
        .collect();
    let answers = futures::future::join_all(tasks).await;
    let mut ok = 0;
    for (status, code) in &answers {
        match (status, code.as_deref()) {
            (200, _) => ok += 1,
            (429, Some("concurrency_limit_exceeded" | "insufficient_quota")) => {}
            other => panic!("unexpected answer {other:?}"),
        }
    }
    assert!(ok > 0, "nothing got through");
    assert!(
        c.mock.max_concurrent() <= CAP,
        "the mock saw {} concurrent requests, cap {CAP}",
        c.mock.max_concurrent()
    );
    // Usage is batched per node (≤ 1 s): wait for every node's flush.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let usage = c.nodes[B].usage(&id, "").await;
    let usd = usage["summary"]["usd"].as_f64().unwrap();
    println!(
        "cluster limits: {ok} of {CLIENTS} answered, mock max concurrency {}, spent ${usd}",
        c.mock.max_concurrent()
    );
    assert!(usd <= 0.05 + 1e-9, "spent ${usd} of a $0.05 budget");
    c.stop().await;
}

/// A master key rotated or retired through one node would change that node's keyring
/// only: the others would meet records sealed under a key they lack. Refused on a
/// shared store, naming what to do instead; the keyring and the records are untouched.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_master_keyring_is_not_changed_through_one_node() {
    let Some(c) = cluster().await else { return };
    let (_b, _id, key) = person_with_grant(&c).await;
    let before: Value = json_of(
        c.nodes[A]
            .admin(Method::GET, "/admin/master-keys")
            .send()
            .await
            .unwrap(),
        200,
    )
    .await;
    let res = c.nodes[A]
        .admin(Method::POST, "/admin/master-keys")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 501);
    let v: Value = res.json().await.unwrap();
    assert_eq!(v["error"]["code"], "unsupported_on_this_store");
    assert!(
        v["error"]["message"]
            .as_str()
            .unwrap()
            .contains("give every node the new keyring"),
        "{v}"
    );
    let kid = before["active"].as_str().unwrap();
    let res = c.nodes[B]
        .admin(Method::DELETE, &format!("/admin/master-keys/{kid}"))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 501);
    let after: Value = json_of(
        c.nodes[A]
            .admin(Method::GET, "/admin/master-keys")
            .send()
            .await
            .unwrap(),
        200,
    )
    .await;
    assert_eq!(after, before);
    for node in [A, B, C] {
        assert_eq!(
            chat_status(&c.nodes[node], &key, "gpt-4o").await,
            200,
            "node {node}"
        );
    }
    c.stop().await;
}

/// Holds every window row of the grant locked, as a busy grant's would be, until
/// `ROLLBACK` is sent on the connection it answers.
async fn lock_windows(c: &TestCluster, grant: &str) -> tokio_postgres::Client {
    let (client, connection) = tokio_postgres::connect(&c.store_url, tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(connection);
    client.batch_execute("BEGIN").await.unwrap();
    client
        .execute(
            "SELECT 1 FROM limit_windows WHERE grant_id = $1 FOR UPDATE",
            &[&grant],
        )
        .await
        .unwrap();
    client
}

/// Review finding (issue 14): a shared-limits acquire is a statement PostgreSQL commits
/// even when the client that caused it is gone; awaited in the request's own future, a
/// client giving up while it waited left its place in `max_concurrency` taken for good.
/// Here the grant's window is held locked (as a busy grant's would be) while 12 clients
/// over the 3 nodes give up; once the lock goes, their acquires commit — and nothing
/// may stay held.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clients_giving_up_mid_acquire_leave_nothing_held() {
    let Some(c) = cluster().await else { return };
    let (_b, id, key) = person_with_grant(&c).await;
    c.nodes[A]
        .set_limits(&id, json!({"max_concurrency": 1}), None)
        .await;
    // One request makes the grant's window row.
    assert_eq!(chat_status(&c.nodes[A], &key, "gpt-4o").await, 200);
    let grant = keygate_core::ids::GrantId::parse(&id).unwrap();
    let held = |node: usize| {
        let store = c.nodes[node].state.store.clone();
        let grant = grant.clone();
        async move { store.limits_held(&grant).await.unwrap() }
    };
    let deadline = Instant::now() + Duration::from_secs(10);
    while held(A).await.0 > 0 {
        assert!(Instant::now() < deadline, "the first request never settled");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }

    let locker = lock_windows(&c, &id).await;
    let body = json!({"model": "gpt-4o", "messages": [{"role": "user", "content": "Hi"}]});
    let gave_up: Vec<_> = (0..12usize)
        .map(|i| {
            c.nodes[i % 3]
                .v1(Method::POST, "/chat/completions", &key)
                .timeout(Duration::from_millis(300))
                .json(&body)
                .send()
        })
        .collect();
    for r in futures::future::join_all(gave_up).await {
        assert!(
            r.unwrap_err().is_timeout(),
            "a client got an answer through the lock"
        );
    }
    locker.batch_execute("ROLLBACK").await.unwrap();

    // The waiting statements run now, one after another on the row; every one must
    // end with nothing held (without the fix the accepted one's place stays taken for
    // good: this waits in vain).
    let deadline = Instant::now() + Duration::from_secs(15);
    while held(B).await != (0, Default::default()) {
        assert!(
            Instant::now() < deadline,
            "places still held after every client went away: {:?}",
            held(B).await
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    for node in [A, B, C] {
        assert_eq!(
            chat_status(&c.nodes[node], &key, "gpt-4o").await,
            200,
            "node {node}"
        );
        // The settle is spawned after the answer: wait for it before the next one.
        let deadline = Instant::now() + Duration::from_secs(10);
        while held(node).await.0 > 0 {
            assert!(
                Instant::now() < deadline,
                "node {node}'s request never settled"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
    c.stop().await;
}

/// Review finding (issue 14): every request of a limited grant waiting on its window's
/// row lock held one of the node's 16 pooled connections, so one busy (or hostile)
/// grant could take the whole pool and stall every other request of the node — another
/// person's grant, a sign-in — for the pool's 30 s wait. Now a node runs at most two
/// statements per grant at once and queues the rest in memory. Here the grant's row is
/// held locked while 40 of its requests arrive at node A; another person's grant and
/// the dashboard on A must still answer (without the fix: timed out, pool exhausted).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_busy_grant_does_not_take_the_nodes_pool() {
    let Some(c) = cluster().await else { return };
    let (_b, id, key) = person_with_grant(&c).await;
    c.nodes[A]
        .set_limits(&id, json!({"max_concurrency": 100}), None)
        .await;
    let (mut other, other_id, other_key) = person_with_grant(&c).await;
    c.nodes[A]
        .set_limits(&other_id, json!({"max_concurrency": 5}), None)
        .await;
    // One request makes the busy grant's window row.
    assert_eq!(chat_status(&c.nodes[A], &key, "gpt-4o").await, 200);

    let locker = lock_windows(&c, &id).await;
    let body = json!({"model": "gpt-4o", "messages": [{"role": "user", "content": "Hi"}]});
    let busy: Vec<_> = (0..40)
        .map(|_| {
            let req = c.nodes[A]
                .v1(Method::POST, "/chat/completions", &key)
                .json(&body)
                .send();
            tokio::spawn(req)
        })
        .collect();
    // Let them all arrive and wait.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let other_chat = c.nodes[A]
        .v1(Method::POST, "/chat/completions", &other_key)
        .timeout(Duration::from_secs(10))
        .json(&body)
        .send()
        .await
        .expect("another grant's request on the node answered while one grant was busy");
    assert_eq!(other_chat.status(), 200);
    let me = other.via(&c.urls[A]).get("/api/me").await;
    assert_eq!(me.status(), 200, "the dashboard on the node");
    locker.batch_execute("ROLLBACK").await.unwrap();
    for r in busy {
        let res = r.await.unwrap().unwrap();
        assert_eq!(res.status(), 200, "a queued request of the busy grant");
    }
    c.stop().await;
}

/// Review finding (issue 14): a graceful stop drains the streams, whose shared-limit
/// settles are spawned after the answer — on the worker's runtime, dropped with the
/// worker, so a stopped node could leave its last requests' places taken until the
/// other nodes reclaimed them (10 s later, charged their whole reservation). Settles
/// now run on the server's main runtime and a stop waits for them: right after node A
/// stopped, the request it drained holds nothing. (In-process, a worker's settle
/// usually lands before its runtime goes, so this passes without the change too: it
/// guards the behaviour, not the mechanism.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_graceful_stop_settles_the_requests_it_drains() {
    let Some(mut c) = cluster().await else { return };
    let (_b, id, key) = person_with_grant(&c).await;
    c.nodes[A]
        .set_limits(
            &id,
            json!({"max_concurrency": 1, "budget": {"usd": 5, "period": "month"}}),
            None,
        )
        .await;
    let grant = keygate_core::ids::GrantId::parse(&id).unwrap();
    let store_b = c.nodes[B].state.store.clone();
    c.mock.reset();
    let before = c.mock.request_count();
    // Held 600 ms by the mock: in flight on A when A is told to stop, answered within
    // the drain (the tests' shutdown timeout is 1 s).
    let req = c.nodes[A]
        .v1(Method::POST, "/chat/completions", &key)
        .header("x-mock-scenario", "slow-first-byte")
        .header("x-mock-delay-ms", "600")
        .json(&json!({"model": "gpt-4o", "max_tokens": 100,
                      "messages": [{"role": "user", "content": "Hi"}]}))
        .send();
    let req = tokio::spawn(req);
    assert!(
        c.mock
            .wait_for_more_than(before, Duration::from_secs(10))
            .await,
        "the request never reached the mock"
    );
    let (held, _) = store_b.limits_held(&grant).await.unwrap();
    assert_eq!(held, 1, "in flight on A");
    let a = c.nodes.remove(A);
    a.stop().await;
    let res = req.await.unwrap().unwrap();
    assert_eq!(res.status(), 200, "drained, not cut");
    assert_eq!(
        store_b.limits_held(&grant).await.unwrap(),
        (0, Default::default()),
        "node A stopped with its drained request still holding its place"
    );
    c.stop().await;
}
