//! What anonymous clients can make keygate hold: ceremony starts, sign-ups and failed
//! sign-ins are throttled per client address, live ceremonies are capped, expired
//! ceremonies and connect codes are swept, wrong admin keys are throttled; and the
//! headers that keep keys out of caches and URLs out of referrers.

use std::net::IpAddr;

use futures::StreamExt;
use keygate_testkit::{ADMIN_KEY, FAKE_OPENAI_KEY, TestApp, spawn_app, spawn_app_with};
use reqwest::Method;
use serde_json::{Value, json};

/// A client whose connections come from `local` (any 127.x.y.z is this machine).
fn client_from(local: &str) -> reqwest::Client {
    reqwest::Client::builder()
        .local_address(local.parse::<IpAddr>().ok())
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
}

/// `POST /api/...` as keygate's own page would send it (with its Origin), on `client`,
/// to the socket's real address.
async fn api_post(
    app: &TestApp,
    client: &reqwest::Client,
    path: &str,
    body: Value,
) -> reqwest::Response {
    client
        .post(format!("{}{path}", app.local_address))
        .header("origin", &app.address)
        .json(&body)
        .send()
        .await
        .unwrap()
}

async fn start(app: &TestApp, client: &reqwest::Client, i: usize) -> reqwest::Response {
    start_as(app, client, i, None).await
}

/// [`start`], through a proxy that says the client is `forwarded_for` when given.
async fn start_as(
    app: &TestApp,
    client: &reqwest::Client,
    i: usize,
    forwarded_for: Option<&str>,
) -> reqwest::Response {
    let (path, body) = if i.is_multiple_of(2) {
        ("/api/auth/register/start", json!({"name": format!("n{i}")}))
    } else {
        ("/api/auth/login/start", json!({}))
    };
    let mut req = client
        .post(format!("{}{path}", app.local_address))
        .header("origin", &app.address)
        .json(&body);
    if let Some(xff) = forwarded_for {
        req = req.header("x-forwarded-for", xff);
    }
    req.send().await.unwrap()
}

/// A 429 `rate_limit_exceeded` with a usable `Retry-After`.
async fn assert_throttled(res: reqwest::Response) -> u64 {
    assert_eq!(res.status(), 429);
    let secs: u64 = res
        .headers()
        .get("retry-after")
        .expect("Retry-After")
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!(secs >= 1, "Retry-After {secs}");
    let body: Value = res.json().await.unwrap();
    assert_eq!(body["error"]["code"], "rate_limit_exceeded", "{body}");
    secs
}

/// Resident set size of this process (the server runs inside the test process).
fn rss_bytes() -> u64 {
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap();
    let pages: u64 = statm.split_whitespace().nth(1).unwrap().parse().unwrap();
    pages * 4096
}

/// Sends `n` anonymous ceremony starts (sign-up and sign-in alternating, 16 at a time)
/// from loopback; returns how many were answered 200. Every other answer must be a
/// 429 with a `Retry-After`.
async fn flood(app: &TestApp, n: usize) -> usize {
    let client = client_from("127.0.0.1");
    let statuses: Vec<(u16, Option<u64>)> = futures::stream::iter(0..n)
        .map(|i| {
            let client = &client;
            async move {
                let res = start(app, client, i).await;
                let retry = res
                    .headers()
                    .get("retry-after")
                    .and_then(|v| v.to_str().ok()?.parse().ok());
                (res.status().as_u16(), retry)
            }
        })
        .buffer_unordered(16)
        .collect()
        .await;
    let ok = statuses.iter().filter(|(s, _)| *s == 200).count();
    for (status, retry) in &statuses {
        if *status != 200 {
            assert_eq!(*status, 429);
            assert!(retry.is_some_and(|r| r >= 1), "Retry-After {retry:?}");
        }
    }
    ok
}

const STARTS: usize = 10_000;
const WARM_UP: usize = 1_000;
const MIB: u64 = 1024 * 1024;

/// The two floods measure the process's memory: they run one at a time.
static FLOODS: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

#[tokio::test]
async fn ten_thousand_anonymous_ceremony_starts_stop_at_the_ceremony_cap() {
    const CAP: usize = 2_000;
    // A rate so generous that only the live-ceremony cap can bite.
    let app = spawn_app_with(|c| {
        c.auth_rate_per_minute = Some(10_000_000);
        c.auth_burst = Some(1_000_000);
        c.max_ceremonies = Some(CAP as u64);
    })
    .await;
    let _alone = FLOODS.lock().await;
    // Memory is measured after a warm-up (thread arenas, caches, the sled log).
    let mut ok = flood(&app, WARM_UP).await;
    let before = rss_bytes();
    ok += flood(&app, STARTS - WARM_UP).await;
    assert!(ok <= CAP, "{ok} ceremonies started past the cap of {CAP}");
    let live = app.state.store.ceremony_count().await.unwrap();
    assert!(live <= CAP, "{live} ceremonies in the store (cap {CAP})");
    assert_eq!(
        live, ok,
        "every 200 is one stored ceremony, nothing else is"
    );
    // One loopback client: one tracked address, whatever the request count.
    assert!(app.state.throttles.tracked() <= 2);
    let grown = rss_bytes().saturating_sub(before);
    // Far less in practice (a few MiB): sled keeps the records on disk behind a
    // bounded cache. A leak of a few KiB per request would show here.
    assert!(grown < 64 * MIB, "the process grew by {} MiB", grown / MIB);

    // A refused start stores nothing, and the cap holds for the next ones too.
    let client = client_from("127.0.0.1");
    assert_throttled(start(&app, &client, 0).await).await;
    assert_eq!(app.state.store.ceremony_count().await.unwrap(), live);
}

#[tokio::test]
async fn ten_thousand_anonymous_ceremony_starts_stop_at_the_per_address_rate() {
    // The default cap, and a rate that bites: five at once, then one a minute.
    let app = spawn_app_with(|c| {
        c.auth_rate_per_minute = Some(1);
        c.auth_burst = Some(5);
    })
    .await;
    let _alone = FLOODS.lock().await;
    let mut ok = flood(&app, WARM_UP).await;
    let before = rss_bytes();
    ok += flood(&app, STARTS - WARM_UP).await;
    // The burst, plus at most one cell refilled while the test runs.
    assert!((5..=6).contains(&ok), "{ok} starts allowed");
    assert_eq!(app.state.store.ceremony_count().await.unwrap(), ok);
    assert!(app.state.throttles.tracked() <= 2);
    let grown = rss_bytes().saturating_sub(before);
    // Far less in practice (a few MiB): sled keeps the records on disk behind a
    // bounded cache. A leak of a few KiB per request would show here.
    assert!(grown < 64 * MIB, "the process grew by {} MiB", grown / MIB);
}

#[tokio::test]
async fn ceremony_starts_are_throttled_per_address_and_forwarded_for_is_not_believed() {
    let app = spawn_app_with(|c| {
        c.auth_rate_per_minute = Some(1);
        c.auth_burst = Some(5);
    })
    .await;
    let local = client_from("127.0.0.1");
    let mut ok = 0;
    let mut refused = 0;
    for i in 0..200u32 {
        // A different X-Forwarded-For every time: not believed without trusted_proxies.
        let path = if i.is_multiple_of(2) {
            "/api/auth/register/start"
        } else {
            "/api/auth/login/start"
        };
        let body = if i.is_multiple_of(2) {
            json!({"name": "x"})
        } else {
            json!({})
        };
        let res = local
            .post(format!("{}{path}", app.local_address))
            .header("origin", &app.address)
            .header("x-forwarded-for", format!("198.51.100.{}", i % 250))
            .json(&body)
            .send()
            .await
            .unwrap();
        if res.status() == 200 {
            ok += 1;
        } else {
            assert_throttled(res).await;
            refused += 1;
        }
    }
    // The burst, plus at most one cell refilled at one a minute.
    assert!((5..=6).contains(&ok), "{ok} starts allowed");
    assert_eq!(ok + refused, 200);
    assert_eq!(app.state.store.ceremony_count().await.unwrap(), ok);

    // Another address has its own budget.
    let other = client_from("127.0.0.2");
    let res = start(&app, &other, 0).await;
    assert_eq!(res.status(), 200);
}

#[tokio::test]
async fn behind_a_trusted_proxy_the_forwarded_client_is_throttled() {
    let app = spawn_app_with(|c| {
        c.auth_rate_per_minute = Some(1);
        c.auth_burst = Some(2);
        c.trusted_proxies = Some("127.0.0.1".into());
    })
    .await;
    let proxy = client_from("127.0.0.1");
    let via = |xff: &'static str| {
        proxy
            .post(format!("{}/api/auth/login/start", app.local_address))
            .header("origin", &app.address)
            .header("x-forwarded-for", xff)
            .json(&json!({}))
            .send()
    };
    // What the client itself wrote in front of the proxy's entry is not believed.
    assert_eq!(via("1.2.3.4, 198.51.100.1").await.unwrap().status(), 200);
    assert_eq!(via("5.6.7.8, 198.51.100.1").await.unwrap().status(), 200);
    assert_throttled(via("198.51.100.1").await.unwrap()).await;
    assert_eq!(via("198.51.100.2").await.unwrap().status(), 200);
}

#[tokio::test]
async fn sign_ups_spend_from_the_same_budget() {
    let app = spawn_app_with(|c| {
        c.auth_rate_per_minute = Some(1);
        c.auth_burst = Some(3);
    })
    .await;
    let client = client_from("127.0.0.1");
    let finish = || {
        api_post(
            &app,
            &client,
            "/api/auth/register/finish",
            json!({"ceremony": "no-such-ceremony", "credential": {}}),
        )
    };
    for _ in 0..3 {
        let res = finish().await;
        assert!(
            res.status().is_client_error() && res.status() != 429,
            "{}",
            res.status()
        );
    }
    assert_throttled(finish().await).await;
    // ... and with it the starts of that address.
    assert_throttled(start(&app, &client, 0).await).await;
}

#[tokio::test]
async fn failed_sign_ins_are_throttled_and_successful_ones_cost_nothing() {
    let app = spawn_app_with(|c| {
        c.auth_rate_per_minute = Some(1);
        c.auth_burst = Some(5);
    })
    .await;
    // Sign up (2 cells of the start budget) and sign in twice (2 more).
    let mut person = app.browser();
    person.signed_up("Failing Fiona").await;
    for _ in 0..2 {
        assert_eq!(person.login().await.status(), 200);
    }
    // The failure budget is whole: five failures are answered as failures...
    let client = client_from("127.0.0.1");
    let fail = || {
        api_post(
            &app,
            &client,
            "/api/auth/login/finish",
            json!({"ceremony": "no-such-ceremony", "credential": {}}),
        )
    };
    for i in 0..5 {
        let res = fail().await;
        assert!(
            res.status().is_client_error() && res.status() != 429,
            "failure {i}: {}",
            res.status()
        );
    }
    // ... the sixth is 429, and so is every sign-in finish from this address for now.
    assert_throttled(fail().await).await;
    assert_throttled(fail().await).await;
    // Another address is not affected.
    let other = client_from("127.0.0.2");
    let res = api_post(
        &app,
        &other,
        "/api/auth/login/finish",
        json!({"ceremony": "no-such-ceremony", "credential": {}}),
    )
    .await;
    assert!(res.status().is_client_error() && res.status() != 429);
}

#[tokio::test]
async fn expired_ceremonies_and_connect_codes_are_swept_and_free_the_cap() {
    let app = spawn_app_with(|c| c.max_ceremonies = Some(3)).await;
    let store = &app.state.store;
    let ceremony = |expires_at: u64| -> keygate_store::CeremonyRecord {
        serde_json::from_value(json!({
            "kind": "login", "state": "{}", "user_id": null, "name": null,
            "expires_at": expires_at,
        }))
        .unwrap()
    };
    let code = |expires_at: u64| -> keygate_store::CodeRecord {
        serde_json::from_value(json!({
            "user_id": "aaaaaaaaaaaaaaaa", "redirect_uri": "https://app.example/cb",
            "origin": "https://app.example", "code_challenge": "x", "app_name": "app",
            "models": null, "plan": null, "reuse_grant_id": null,
            "expires_at": expires_at,
        }))
        .unwrap()
    };
    for i in 0..3 {
        store
            .put_ceremony(&format!("old{i}"), &ceremony(1))
            .await
            .unwrap();
        store.put_code(&format!("old{i}"), &code(1)).await.unwrap();
    }
    store.put_code("live", &code(u64::MAX / 2)).await.unwrap();
    // Expired but not yet swept, they still fill the cap.
    app.state.throttles.ceremonies.recount(store).await;
    let client = client_from("127.0.0.1");
    assert_throttled(start(&app, &client, 1).await).await;

    // One pass of the background sweeper (it runs every minute).
    let swept = keygate_server::app::sweep_once(&app.state).await;
    assert_eq!((swept.ceremonies, swept.codes), (3, 3));
    assert_eq!(store.ceremony_count().await.unwrap(), 0);
    assert_eq!(store.code_count().await.unwrap(), 1, "the live code stays");
    assert_eq!(start(&app, &client, 1).await.status(), 200);
}

#[tokio::test]
async fn a_signed_in_flood_neither_fills_the_cap_nor_is_blocked_by_an_anonymous_one() {
    const CAP: usize = 20;
    // A rate so generous that only the live-ceremony cap can bite.
    let app = spawn_app_with(|c| {
        c.auth_rate_per_minute = Some(10_000_000);
        c.auth_burst = Some(1_000_000);
        c.max_ceremonies = Some(CAP as u64);
    })
    .await;
    let mut person = app.browser();
    person.signed_up("Flooder").await;
    let mut other = app.browser();
    other.signed_up("Bystander").await;
    assert_eq!(app.state.store.ceremony_count().await.unwrap(), 0);

    // One account, from two sessions, starts far more step-ups, passkey additions and
    // connect approvals than the cap: every start is answered, and each session holds
    // one live ceremony per kind (a start replaces that session's previous one, never
    // the other session's), so the store holds three per session: six. The bound per
    // person is their live sessions (at most 20) times the three kinds.
    let mut second = person.with_same_passkey();
    assert_eq!(second.login().await.status(), 200);
    // (The two browsers share one authenticator: keep its signature counter in step.)
    person.passkey = second.passkey.clone();
    let sessions = [&person, &second];
    for path in [
        "/api/auth/reauth/start",
        "/api/passkeys/start",
        "/api/connect/approve/start",
    ] {
        let statuses: Vec<u16> = futures::stream::iter(0..10 * CAP)
            .map(|i| {
                let s = sessions[i % 2];
                async move { s.post(path, json!({})).await.status().as_u16() }
            })
            .buffer_unordered(16)
            .collect()
            .await;
        assert!(statuses.iter().all(|s| *s == 200), "{path}: {statuses:?}");
    }
    assert_eq!(app.state.store.ceremony_count().await.unwrap(), 6);

    // Anonymous sign-in still works: the cap is for anonymous ceremonies only. (The two
    // sign-ups' ceremonies are finished, but the in-memory count learns that on its
    // next recount — at most once a second when full, or the sweeper's; do it now.)
    app.state
        .throttles
        .ceremonies
        .recount(&app.state.store)
        .await;
    let client = client_from("127.0.0.1");
    let mut anonymous = 0;
    while api_post(&app, &client, "/api/auth/login/start", json!({}))
        .await
        .status()
        == 200
    {
        anonymous += 1;
        assert!(anonymous <= CAP, "past the cap");
    }
    assert_eq!(anonymous, CAP);
    assert_throttled(api_post(&app, &client, "/api/auth/login/start", json!({})).await).await;

    // With the anonymous cap full, a signed-in step-up still works end to end.
    assert_eq!(person.reauth().await.status(), 204);

    // A person's ceremony id names them, but nobody else can spend it: another person's
    // finish is refused before the store is touched, and the owner's still works.
    let started: Value = person
        .post("/api/auth/reauth/start", json!({}))
        .await
        .json()
        .await
        .unwrap();
    let credential = person.passkey.get(&started["options"]).unwrap();
    let res = other
        .post(
            "/api/auth/reauth/finish",
            json!({"ceremony": started["ceremony"], "credential": credential}),
        )
        .await;
    assert_eq!(res.status(), 400);
    let res = api_post(
        &app,
        &client,
        "/api/auth/login/finish",
        json!({"ceremony": started["ceremony"], "credential": credential}),
    )
    .await;
    assert_eq!(res.status(), 400);
    let res = person
        .post(
            "/api/auth/reauth/finish",
            json!({"ceremony": started["ceremony"], "credential": credential}),
        )
        .await;
    assert_eq!(res.status(), 204);
}

#[tokio::test]
async fn wrong_admin_keys_are_throttled_per_address_and_never_count_right_ones() {
    let app = spawn_app_with(|c| c.admin_failures_per_minute = Some(3)).await;
    let here = client_from("127.0.0.1");
    let users = |client: &reqwest::Client, key: &str| {
        client
            .get(format!("{}/admin/users", app.local_address))
            .bearer_auth(key)
            .send()
    };
    // Right keys never spend from the budget.
    for _ in 0..20 {
        assert_eq!(users(&here, ADMIN_KEY).await.unwrap().status(), 200);
    }
    for _ in 0..3 {
        assert_eq!(
            users(&here, "wrong-wrong-wrong-wrong-wrong-wrong")
                .await
                .unwrap()
                .status(),
            401
        );
    }
    assert_throttled(
        users(&here, "wrong-wrong-wrong-wrong-wrong-wrong")
            .await
            .unwrap(),
    )
    .await;
    // Wrong keys from this address stay throttled...
    assert_throttled(
        users(&here, "wrong-wrong-wrong-wrong-wrong-wrong")
            .await
            .unwrap(),
    )
    .await;
    // ... but the right key is never locked out, not even from the throttled address
    // (it used to get 429 here: behind a proxy without trusted_proxies every client
    // shares one address, so anyone could lock the operator out — issue 11 says a good
    // key is never locked out). The key is 32+ random characters, so letting the right
    // one through is no useful oracle.
    assert_eq!(users(&here, ADMIN_KEY).await.unwrap().status(), 200);
    assert_throttled(
        users(&here, "wrong-wrong-wrong-wrong-wrong-wrong")
            .await
            .unwrap(),
    )
    .await;
    // ... and the right key works from anywhere else.
    let elsewhere = client_from("127.0.0.2");
    assert_eq!(users(&elsewhere, ADMIN_KEY).await.unwrap().status(), 200);
    assert_eq!(
        users(&elsewhere, "wrong-wrong-wrong-wrong-wrong-wrong")
            .await
            .unwrap()
            .status(),
        401
    );
}

/// A connect approval's passkey assertion: `(ceremony, credential)`.
async fn approve_start(browser: &mut keygate_testkit::browser::Browser) -> (Value, Value) {
    let started: Value = browser
        .post("/api/connect/approve/start", json!({}))
        .await
        .json()
        .await
        .unwrap();
    let credential = browser.passkey.get(&started["options"]).unwrap();
    (started["ceremony"].clone(), credential)
}

#[tokio::test]
async fn responses_that_can_carry_an_api_key_are_never_cached() {
    let app = spawn_app().await;
    let no_store = |res: &reqwest::Response| {
        assert_eq!(
            res.headers()
                .get("cache-control")
                .map(|v| v.to_str().unwrap()),
            Some("no-store"),
            "{}",
            res.url()
        );
    };
    // Admin grant creation.
    let user = app.create_user("Cache Carla").await;
    let res = app
        .admin(Method::POST, &format!("/admin/users/{user}/grants"))
        .json(&json!({"name": "g"}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 201);
    no_store(&res);
    // The person's own grant creation.
    let mut browser = app.browser();
    browser.signed_up("Cache Carla").await;
    let res = browser.post("/api/grants", json!({"name": "g"})).await;
    assert_eq!(res.status(), 201);
    let body: Value = res.json().await.unwrap();
    assert!(body["api_key"].is_string());
    no_store(&browser.post("/api/grants", json!({"name": "g2"})).await);
    // Connect: the popup approval answers with the key.
    let res = browser
        .send(Method::PUT, "/api/key", json!({"api_key": FAKE_OPENAI_KEY}))
        .await;
    assert_eq!(res.status(), 204);
    let (ceremony, credential) = approve_start(&mut browser).await;
    let res = browser
        .post(
            "/api/connect/approve/finish",
            json!({"ceremony": ceremony, "credential": credential, "origin": "https://app.example"}),
        )
        .await;
    assert_eq!(res.status(), 201);
    no_store(&res);
    // Redirect mode: the form post answers with the code, the exchange with the key.
    let verifier = "a-verifier-long-enough-for-pkce-0123456789-abcdefghij";
    let challenge = {
        use base64::Engine;
        use sha2::Digest;
        base64::engine::general_purpose::URL_SAFE_NO_PAD
            .encode(sha2::Sha256::digest(verifier.as_bytes()))
    };
    let (ceremony, credential) = approve_start(&mut browser).await;
    let res = browser
        .request(Method::POST, "/connect/approve")
        .form(&[
            ("ceremony", ceremony.as_str().unwrap()),
            ("credential", &credential.to_string()),
            ("redirect_uri", "https://app.example/cb"),
            ("state", "s"),
            ("code_challenge", &challenge),
            ("code_challenge_method", "S256"),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 302);
    no_store(&res);
    let location = url::Url::parse(res.headers()["location"].to_str().unwrap()).unwrap();
    let code = location
        .query_pairs()
        .find(|(k, _)| k == "code")
        .unwrap()
        .1
        .into_owned();
    let res = app
        .client
        .post(app.url("/api/connect/token"))
        .json(&json!({"code": code, "code_verifier": verifier}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    no_store(&res);
    // Error answers too: every /api and /admin response is no-store.
    let res = app
        .client
        .post(app.url("/api/connect/token"))
        .json(&json!({"code": "nope", "code_verifier": "nope"}))
        .send()
        .await
        .unwrap();
    no_store(&res);
    no_store(&browser.get("/api/me").await);
    no_store(&app.admin(Method::GET, "/admin/users").send().await.unwrap());
}

#[tokio::test]
async fn pages_send_no_referrer_and_post_forms_only_to_keygate() {
    let app = spawn_app().await;
    for path in ["/", "/login", "/dashboard", "/connect"] {
        let res = app.client.get(app.url(path)).send().await.unwrap();
        assert_eq!(res.status(), 200, "{path}");
        let h = res.headers();
        assert_eq!(h.get("referrer-policy").unwrap(), "no-referrer", "{path}");
        let csp = h.get("content-security-policy").unwrap().to_str().unwrap();
        assert!(csp.contains("form-action 'self'"), "{path}: {csp}");
        assert!(csp.contains("default-src 'self'"), "{path}: {csp}");
    }
    // Redirect mode: the approve form is answered with a redirect to the app, which
    // form-action must allow (browsers check redirects after a form post too).
    let res = app
        .client
        .get(app.url(
            "/connect?response_type=code&redirect_uri=https%3A%2F%2Fapp.example%3A8443%2Fcb\
             &state=s&code_challenge=E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM\
             &code_challenge_method=S256",
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    let csp = res.headers()["content-security-policy"]
        .to_str()
        .unwrap()
        .to_owned();
    assert!(
        csp.contains("form-action 'self' https://app.example:8443"),
        "{csp}"
    );
    // The HTML error page of the connect flow.
    let res = app
        .client
        .get(app.url("/connect?response_type=code&redirect_uri=javascript:alert(1)"))
        .header("accept", "text/html")
        .send()
        .await
        .unwrap();
    assert!(res.status().is_client_error());
    assert_eq!(res.headers()["referrer-policy"], "no-referrer");
    let csp = res.headers()["content-security-policy"].to_str().unwrap();
    assert!(
        csp.contains("form-action 'self'") && !csp.contains("javascript"),
        "{csp}"
    );
}

/// The forged client of request `i`: every one a different address, half IPv4 and half
/// IPv6 (each in a /56 of its own, so only its own budgets apply).
fn forged(i: usize) -> String {
    if i.is_multiple_of(2) {
        format!("10.{}.{}.{}", (i >> 16) & 0xff, (i >> 8) & 0xff, i & 0xff)
    } else {
        format!("2001:db8:{:x}:{:x}00::1", i >> 8, i & 0xff)
    }
}

/// What an operator sees of anonymous traffic: (people, audit entries).
async fn people_and_audit(app: &TestApp) -> (usize, usize) {
    let people = app.state.store.users().await.unwrap().len();
    let audit: Vec<Value> = app
        .client
        .get(format!("{}/admin/audit?limit=1000", app.local_address))
        .bearer_auth(ADMIN_KEY)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    (people, audit.len())
}

#[tokio::test]
async fn ten_thousand_starts_from_as_many_forged_addresses_leave_at_most_the_cap() {
    const CAP: usize = 500;
    let app = keygate_testkit::spawn_app_with_clock(keygate_testkit::manual_clock(), |c| {
        // Every forged client is believed (they come through a trusted proxy), and each
        // has a budget of its own that one request never empties: only the cap bites.
        c.trusted_proxies = Some("127.0.0.1".into());
        c.max_ceremonies = Some(CAP as u64);
        // A cell refills in a millisecond: a client's state is fresh again at once.
        c.auth_rate_per_minute = Some(60_000);
    })
    .await;
    let _alone = FLOODS.lock().await;
    let proxy = client_from("127.0.0.1");
    let answers: Vec<(u16, Value, bool)> = futures::stream::iter(0..STARTS)
        .map(|i| {
            let (app, proxy) = (&app, &proxy);
            async move {
                let res = start_as(app, proxy, i, Some(&forged(i))).await;
                let status = res.status().as_u16();
                let retry = res.headers().contains_key("retry-after");
                (status, res.json().await.unwrap_or(Value::Null), retry)
            }
        })
        .buffer_unordered(16)
        .collect()
        .await;
    let ok = answers.iter().filter(|(s, _, _)| *s == 200).count();
    // Exactly the cap: every forged client was believed and had budget left, so
    // nothing but the cap refused them.
    assert_eq!(ok, CAP, "{ok} ceremonies started (cap {CAP})");
    for (status, body, retry) in answers.iter().filter(|(s, _, _)| *s != 200) {
        // The refusal is OpenAI's shape, with a time to come back.
        assert_eq!(*status, 429, "{body}");
        assert_eq!(body["error"]["code"], "rate_limit_exceeded", "{body}");
        assert_eq!(body["error"]["type"], "requests", "{body}");
        assert!(retry, "no Retry-After");
    }
    let live = app.state.store.ceremony_count().await.unwrap();
    assert_eq!(
        live, ok,
        "every 200 is one stored ceremony, nothing else is"
    );
    // Anonymous starts make no account and write no audit entry.
    assert_eq!(people_and_audit(&app).await, (0, 0));

    // The per-address state of 10,000 clients (IPv6 also per /56) is forgotten by the
    // sweeper once their budgets are full again.
    assert!(app.state.throttles.tracked() <= STARTS + STARTS / 2);
    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    // Past the ceremony TTL: the sweeper removes them all and the cap is free again.
    app.clock.advance(301);
    let swept = keygate_server::app::sweep_once(&app.state).await;
    assert_eq!(swept.ceremonies, live);
    assert_eq!(app.state.store.ceremony_count().await.unwrap(), 0);
    assert_eq!(app.state.throttles.tracked(), 0);
    assert_eq!(
        start_as(&app, &proxy, 1, Some("10.99.0.1")).await.status(),
        200
    );
}

#[tokio::test]
async fn failed_sign_ins_from_many_addresses_store_nothing() {
    let app = spawn_app_with(|c| {
        c.trusted_proxies = Some("127.0.0.1".into());
        c.auth_rate_per_minute = Some(1);
        c.auth_burst = Some(1);
    })
    .await;
    let proxy = client_from("127.0.0.1");
    const CLIENTS: usize = 1_000;
    let statuses: Vec<u16> = futures::stream::iter(0..2 * CLIENTS)
        .map(|i| {
            let proxy = &proxy;
            let app = &app;
            async move {
                // Each client fails twice: its burst of one, then the block.
                proxy
                    .post(format!("{}/api/auth/login/finish", app.local_address))
                    .header("origin", &app.address)
                    .header("x-forwarded-for", forged(i % CLIENTS))
                    .json(&json!({"ceremony": format!("forged-{i}"), "credential": {}}))
                    .send()
                    .await
                    .unwrap()
                    .status()
                    .as_u16()
            }
        })
        .buffered(16)
        .collect()
        .await;
    let refused = statuses.iter().filter(|s| **s == 429).count();
    assert_eq!(
        refused, CLIENTS,
        "each client's second failure is throttled"
    );
    assert!(
        statuses.iter().all(|s| *s == 429 || *s == 400),
        "{statuses:?}"
    );
    // Nothing of it reached the store: no ceremony, no account, no audit entry.
    assert_eq!(app.state.store.ceremony_count().await.unwrap(), 0);
    assert_eq!(people_and_audit(&app).await, (0, 0));
    // In memory: at most the failure budget and the block of each client (the blocked
    // map never holds more than throttle::MAX_TRACKED, see the unit tests).
    assert!(app.state.throttles.tracked() <= 2 * CLIENTS);
}

#[tokio::test]
async fn unknown_grant_keys_hold_nothing() {
    let app = spawn_app().await;
    // Well-formed keys with right checksums (anyone can compute one) for grants that
    // do not exist.
    let statuses: Vec<(u16, Value)> = futures::stream::iter(0..2_000)
        .map(|_| {
            let app = &app;
            let key = keygate_core::token::issue(&keygate_core::ids::GrantId::generate());
            async move {
                let res = app
                    .client
                    .post(format!("{}/v1/chat/completions", app.local_address))
                    .bearer_auth(key.expose_secret())
                    .json(&json!({"model": "gpt-4o-mini", "messages": []}))
                    .send()
                    .await
                    .unwrap();
                (res.status().as_u16(), res.json().await.unwrap())
            }
        })
        .buffer_unordered(16)
        .collect()
        .await;
    for (status, body) in &statuses {
        assert_eq!(*status, 401);
        assert_eq!(body["error"]["code"], "invalid_api_key", "{body}");
    }
    // Nothing was forwarded, no limiter window or usage row was made for them (the
    // grant cache holds only grants that exist: keygate-store's grant_cache tests).
    assert_eq!(app.mock.request_count(), 0);
    assert_eq!(app.state.limiter.forget_idle(), 0);
    assert_eq!(people_and_audit(&app).await, (0, 0));
}
