use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use keygate_testkit::browser::Browser;
use keygate_testkit::{
    FAKE_OPENAI_KEY, TestApp, manual_clock, spawn_app, spawn_app_with, spawn_app_with_clock,
};
use reqwest::Method;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use crate::helpers::{assert_openai_error, chat, chat_stream};

pub(crate) const APP: &str = "https://notes.example";
const REDIRECT: &str = "https://notes.example/oauth/callback?tenant=1";
pub(crate) const VERIFIER: &str = "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk-extra-entropy";

pub(crate) fn challenge(verifier: &str) -> String {
    URL_SAFE_NO_PAD.encode(Sha256::digest(verifier.as_bytes()))
}

pub(crate) async fn person(app: &TestApp) -> Browser {
    let mut b = app.browser();
    b.signed_up("Connector").await;
    assert_eq!(
        b.send(Method::PUT, "/api/key", json!({"api_key": FAKE_OPENAI_KEY}))
            .await
            .status(),
        204
    );
    b
}

/// The redirect-mode approval as the connect page submits it: a passkey assertion,
/// then a top-level form post.
pub(crate) async fn approve_redirect(b: &mut Browser, extra: &[(&str, &str)]) -> reqwest::Response {
    let started: Value = b
        .post("/api/connect/approve/start", json!({}))
        .await
        .json()
        .await
        .unwrap();
    let cred = b.passkey.get(&started["options"]).unwrap();
    let mut form: Vec<(String, String)> = vec![
        (
            "ceremony".into(),
            started["ceremony"].as_str().unwrap().into(),
        ),
        ("credential".into(), cred.to_string()),
        ("redirect_uri".into(), REDIRECT.into()),
        ("state".into(), "xyz-state".into()),
        ("code_challenge".into(), challenge(VERIFIER)),
        ("code_challenge_method".into(), "S256".into()),
        ("app_name".into(), "Notes".into()),
        ("models".into(), "gpt-4o-mini".into()),
    ];
    for (k, v) in extra {
        form.retain(|(fk, _)| fk != k);
        form.push(((*k).into(), (*v).into()));
    }
    b.request(Method::POST, "/connect/approve")
        .form(&form)
        .send()
        .await
        .unwrap()
}

/// The popup's approval of `APP` ("Notes") as the connect page sends it, with `extra`
/// fields (`plan`, `limits`, `reuse_grant_id`, ...) set in the body.
pub(crate) async fn popup(b: &mut Browser, extra: Value) -> reqwest::Response {
    let started: Value = b
        .post("/api/connect/approve/start", json!({}))
        .await
        .json()
        .await
        .unwrap();
    let cred = b.passkey.get(&started["options"]).unwrap();
    let mut body = json!({
        "ceremony": started["ceremony"], "credential": cred, "origin": APP, "app_name": "Notes",
    });
    for (k, v) in extra.as_object().unwrap() {
        body[k] = v.clone();
    }
    b.post("/api/connect/approve/finish", body).await
}

pub(crate) fn code_from(res: &reqwest::Response) -> String {
    assert_eq!(res.status(), 302, "expected a redirect");
    let location = url::Url::parse(res.headers()["location"].to_str().unwrap()).unwrap();
    assert_eq!(location.origin().ascii_serialization(), APP);
    assert_eq!(location.path(), "/oauth/callback");
    let q: std::collections::HashMap<String, String> =
        location.query_pairs().into_owned().collect();
    assert_eq!(q["tenant"], "1", "the redirect's own query was lost");
    assert_eq!(q["state"], "xyz-state");
    q["code"].clone()
}

pub(crate) async fn exchange(app: &TestApp, code: &str, verifier: &str) -> reqwest::Response {
    app.client
        .post(app.url("/api/connect/token"))
        .json(&json!({"code": code, "code_verifier": verifier}))
        .send()
        .await
        .unwrap()
}

pub(crate) fn connect_url(params: &[(&str, &str)]) -> String {
    let mut url = url::Url::parse("http://x/connect").unwrap();
    for (k, v) in params {
        url.query_pairs_mut().append_pair(k, v);
    }
    format!("/connect?{}", url.query().unwrap())
}

pub(crate) fn good_params(ch: &str) -> Vec<(&'static str, String)> {
    vec![
        ("response_type", "code".into()),
        ("redirect_uri", REDIRECT.into()),
        ("state", "xyz-state".into()),
        ("code_challenge", ch.into()),
        ("code_challenge_method", "S256".into()),
        ("app_name", "Notes".into()),
    ]
}

#[tokio::test]
async fn redirect_flow_end_to_end() {
    let app = spawn_app().await;
    let mut b = person(&app).await;
    let ch = challenge(VERIFIER);
    let params = good_params(&ch);
    let refs: Vec<(&str, &str)> = params.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let page = b.get(&connect_url(&refs)).await;
    assert_eq!(page.status(), 200);
    assert!(page.text().await.unwrap().contains("<html"));

    let code = code_from(&approve_redirect(&mut b, &[]).await);
    let res = exchange(&app, &code, VERIFIER).await;
    assert_eq!(res.status(), 200);
    assert_eq!(res.headers()["cache-control"], "no-store");
    let v: Value = res.json().await.unwrap();
    let key = v["api_key"].as_str().unwrap();
    assert_eq!(v["base_url"], app.base_url);
    assert!(key.contains(v["grant_id"].as_str().unwrap()));

    // The grant is bound to the redirect's origin, named after the app, models kept.
    let grants: Value = b.get("/api/grants").await.json().await.unwrap();
    let g = grants
        .as_array()
        .unwrap()
        .iter()
        .find(|g| g["id"] == v["grant_id"])
        .unwrap();
    assert_eq!(g["origin"], APP);
    assert_eq!(g["name"], "Notes");
    assert_eq!(g["models"], json!(["gpt-4o-mini"]));
    assert_eq!(
        app.chat_completions(key, &chat("gpt-4o-mini"))
            .await
            .status(),
        200
    );

    // Replayed code: refused.
    assert_openai_error(exchange(&app, &code, VERIFIER).await, 400, "invalid_grant").await;
}

#[tokio::test]
async fn a_wrong_verifier_spends_the_code() {
    let app = spawn_app().await;
    let mut b = person(&app).await;
    let code = code_from(&approve_redirect(&mut b, &[]).await);
    let wrong = "x".repeat(50);
    let body = assert_openai_error(exchange(&app, &code, &wrong).await, 400, "invalid_grant").await;
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("code_verifier")
    );
    assert_openai_error(exchange(&app, &code, VERIFIER).await, 400, "invalid_grant").await;
    assert_openai_error(
        exchange(&app, "never-issued", VERIFIER).await,
        400,
        "invalid_grant",
    )
    .await;
    let res = app
        .client
        .post(app.url("/api/connect/token"))
        .json(&json!({"code": code}))
        .send()
        .await
        .unwrap();
    assert_openai_error(res, 400, "invalid_request").await;
}

#[tokio::test]
async fn a_mismatched_redirect_uri_spends_the_code() {
    let app = spawn_app().await;
    let mut b = person(&app).await;
    let code = code_from(&approve_redirect(&mut b, &[]).await);
    let res = app
        .client
        .post(app.url("/api/connect/token"))
        .json(&json!({"code": code, "code_verifier": VERIFIER, "redirect_uri": "https://notes.example/other"}))
        .send()
        .await
        .unwrap();
    let body = assert_openai_error(res, 400, "invalid_grant").await;
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("redirect_uri")
    );
    assert_openai_error(exchange(&app, &code, VERIFIER).await, 400, "invalid_grant").await;

    // The matching redirect_uri is accepted.
    let code = code_from(&approve_redirect(&mut b, &[]).await);
    let res = app
        .client
        .post(app.url("/api/connect/token"))
        .json(&json!({"code": code, "code_verifier": VERIFIER, "redirect_uri": REDIRECT}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
}

#[tokio::test]
async fn codes_expire() {
    // A TTL of 2 s on the server's manual clock: still valid 1 s later, expired at 2 s.
    let app = spawn_app_with_clock(manual_clock(), |c| c.ceremony_ttl_secs = Some(2)).await;
    let mut b = person(&app).await;
    let code = code_from(&approve_redirect(&mut b, &[]).await);
    app.clock.advance(2);
    let body =
        assert_openai_error(exchange(&app, &code, VERIFIER).await, 400, "invalid_grant").await;
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("expired")
    );
}

#[tokio::test]
async fn bad_connect_requests_never_redirect() {
    let app = spawn_app().await;
    let b = person(&app).await;
    let ch = challenge(VERIFIER);
    let cases: Vec<(&str, &str, &str)> = vec![
        ("code_challenge_method", "plain", "code_challenge_method"),
        ("redirect_uri", "http://notes.example/cb", "redirect_uri"),
        (
            "redirect_uri",
            "https://notes.example/cb#frag",
            "redirect_uri",
        ),
        ("redirect_uri", "javascript:alert(1)", "redirect_uri"),
        ("redirect_uri", "/relative", "redirect_uri"),
        ("state", "", "state"),
        ("code_challenge", "short", "code_challenge"),
        ("response_type", "token", "response_type"),
    ];
    for (key, value, param) in cases {
        let mut params = good_params(&ch);
        params.retain(|(k, _)| *k != key);
        params.push((key, value.into()));
        let refs: Vec<(&str, &str)> = params.iter().map(|(k, v)| (*k, v.as_str())).collect();
        let res = b.get(&connect_url(&refs)).await;
        assert!(
            !res.headers().contains_key("location"),
            "{key}={value} redirected"
        );
        let body = assert_openai_error(res, 400, "invalid_request").await;
        assert_eq!(body["error"]["param"], param, "{key}={value}");
    }
    // A browser gets a readable page with the same status.
    let mut params = good_params(&ch);
    params.retain(|(k, _)| *k != "code_challenge_method");
    params.push(("code_challenge_method", "plain".into()));
    let refs: Vec<(&str, &str)> = params.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let res = b
        .request(Method::GET, &connect_url(&refs))
        .header("accept", "text/html")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 400);
    let html = res.text().await.unwrap();
    assert!(html.contains("S256") && html.contains("<h1>"), "{html}");
    // A popup-mode page needs no parameters.
    assert_eq!(b.get("/connect?mode=popup&nonce=abc").await.status(), 200);
}

#[tokio::test]
async fn approval_needs_a_session_a_passkey_and_our_origin() {
    let app = spawn_app().await;
    let mut b = person(&app).await;
    // A forged passkey ceremony id.
    let res = b
        .request(Method::POST, "/connect/approve")
        .form(&[
            ("ceremony", "forged"),
            ("credential", "{}"),
            ("redirect_uri", REDIRECT),
            ("state", "s"),
            ("code_challenge", challenge(VERIFIER).as_str()),
            ("code_challenge_method", "S256"),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 400);
    assert!(!res.headers().contains_key("location"));
    // From a foreign page.
    let res = b
        .client
        .post(format!("{}/connect/approve", app.address))
        .header("origin", "https://evil.example")
        .form(&[("ceremony", "x")])
        .send()
        .await
        .unwrap();
    assert_openai_error(res, 403, "csrf_failed").await;
    // Without a session.
    let stranger = app.browser();
    let res = stranger
        .request(Method::POST, "/connect/approve")
        .form(&[
            ("ceremony", "x"),
            ("credential", "{}"),
            ("redirect_uri", REDIRECT),
            ("state", "s"),
            ("code_challenge", challenge(VERIFIER).as_str()),
            ("code_challenge_method", "S256"),
        ])
        .send()
        .await
        .unwrap();
    assert_openai_error(res, 401, "not_signed_in").await;
    // The approval assertion is not interchangeable with a step-up one.
    let started: Value = b
        .post("/api/auth/reauth/start", json!({}))
        .await
        .json()
        .await
        .unwrap();
    let cred = b.passkey.get(&started["options"]).unwrap();
    let res = approve_redirect(&mut b, &[]).await;
    assert_eq!(res.status(), 302);
    let res = b
        .request(Method::POST, "/connect/approve")
        .form(&[
            ("ceremony", started["ceremony"].as_str().unwrap()),
            ("credential", cred.to_string().as_str()),
            ("redirect_uri", REDIRECT),
            ("state", "s"),
            ("code_challenge", challenge(VERIFIER).as_str()),
            ("code_challenge_method", "S256"),
        ])
        .send()
        .await
        .unwrap();
    assert_openai_error(res, 400, "ceremony_failed").await;
}

#[tokio::test]
async fn deny_redirects_with_access_denied() {
    let app = spawn_app().await;
    let b = person(&app).await;
    let res = b
        .request(Method::POST, "/connect/deny")
        .form(&[("redirect_uri", REDIRECT), ("state", "xyz-state")])
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 302);
    let location = res.headers()["location"].to_str().unwrap();
    assert!(
        location.starts_with(
            "https://notes.example/oauth/callback?tenant=1&error=access_denied&state=xyz-state"
        ),
        "{location}"
    );
    let res = b
        .request(Method::POST, "/connect/deny")
        .form(&[("redirect_uri", "http://evil.example/cb"), ("state", "s")])
        .send()
        .await
        .unwrap();
    assert_openai_error(res, 400, "invalid_request").await;
}

/// A keygate whose config has the `starter` plan (no limits) that `approve_popup` asks
/// for: a plan the config does not have is refused (400 `plan`).
async fn spawn_with_starter_plan() -> TestApp {
    spawn_app_with(|c| c.plans = Some([("starter".to_owned(), Default::default())].into())).await
}

async fn approve_popup(b: &mut Browser, origin: &str, reuse: Option<&str>) -> reqwest::Response {
    let started: Value = b
        .post("/api/connect/approve/start", json!({}))
        .await
        .json()
        .await
        .unwrap();
    let cred = b.passkey.get(&started["options"]).unwrap();
    b.post(
        "/api/connect/approve/finish",
        json!({
            "ceremony": started["ceremony"], "credential": cred, "origin": origin,
            "app_name": "Chat Demo", "models": null, "plan": "starter", "reuse_grant_id": reuse,
        }),
    )
    .await
}

#[tokio::test]
async fn popup_approval_binds_the_grant_to_the_origin_and_can_reuse_it() {
    let app = spawn_with_starter_plan().await;
    let mut b = person(&app).await;
    let res = approve_popup(&mut b, APP, None).await;
    assert_eq!(res.status(), 201);
    let first: Value = res.json().await.unwrap();
    assert_eq!(first["grant"]["origin"], APP);
    assert_eq!(first["grant"]["name"], "Chat Demo");
    assert_eq!(first["grant"]["plan"], "starter");
    assert_eq!(first["base_url"], app.base_url);
    let existing: Value = b
        .get(&format!("/api/connect/existing?origin={APP}"))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(existing.as_array().unwrap().len(), 1);
    let none: Value = b
        .get("/api/connect/existing?origin=https://other.example")
        .await
        .json()
        .await
        .unwrap();
    assert!(none.as_array().unwrap().is_empty());
    assert_openai_error(
        b.get("/api/connect/existing?origin=not-an-origin").await,
        400,
        "invalid_request",
    )
    .await;

    // Reuse: a new key for the same grant; the old key keeps working for
    // `reconnect_grace_secs` (600 s: its end is tested in grant_lifecycle.rs).
    let gid = first["grant"]["id"].as_str().unwrap();
    let res = approve_popup(&mut b, APP, Some(gid)).await;
    assert_eq!(res.status(), 201);
    let second: Value = res.json().await.unwrap();
    assert_eq!(second["grant"]["id"], gid);
    assert_ne!(second["api_key"], first["api_key"]);
    assert_eq!(
        app.chat_completions(second["api_key"].as_str().unwrap(), &chat("gpt-4o"))
            .await
            .status(),
        200
    );
    assert_eq!(
        app.chat_completions(first["api_key"].as_str().unwrap(), &chat("gpt-4o"))
            .await
            .status(),
        200
    );
    assert!(second["grant"]["rotated_until"].is_u64());
    // Reusing a grant of another origin is refused.
    let res = approve_popup(&mut b, "https://other.example", Some(gid)).await;
    assert_openai_error(res, 404, "not_found").await;
    // A plain-http app origin is accepted only on localhost, as for redirect URIs.
    assert_openai_error(
        approve_popup(&mut b, "http://app.example", None).await,
        400,
        "invalid_request",
    )
    .await;
    assert_eq!(
        approve_popup(&mut b, "http://localhost:5173", None)
            .await
            .status(),
        201
    );
    // Without the passkey assertion nothing is created.
    let res = b
        .post(
            "/api/connect/approve/finish",
            json!({"ceremony": "nope", "credential": {}, "origin": APP}),
        )
        .await;
    assert_openai_error(res, 400, "ceremony_failed").await;
}

#[tokio::test]
async fn cors_only_for_the_bound_origin() {
    let app = spawn_with_starter_plan().await;
    let mut b = person(&app).await;
    let key = approve_popup(&mut b, APP, None)
        .await
        .json::<Value>()
        .await
        .unwrap()["api_key"]
        .as_str()
        .unwrap()
        .to_owned();

    // Preflight: answered for any origin, echoing the SDK's headers.
    let upstream_calls = app.mock.request_count();
    let res = app
        .client
        .request(
            Method::OPTIONS,
            format!("{}/chat/completions", app.base_url),
        )
        .header("origin", "https://anyone.example")
        .header("access-control-request-method", "POST")
        .header(
            "access-control-request-headers",
            "authorization, content-type, x-stainless-os, x-stainless-retry-count",
        )
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 204);
    assert_eq!(
        res.headers()["access-control-allow-origin"],
        "https://anyone.example"
    );
    let allowed = res.headers()["access-control-allow-headers"]
        .to_str()
        .unwrap();
    assert!(allowed.contains("x-stainless-os") && allowed.contains("authorization"));
    assert!(
        res.headers()["access-control-allow-methods"]
            .to_str()
            .unwrap()
            .contains("POST")
    );
    assert_eq!(
        app.mock.request_count(),
        upstream_calls,
        "a preflight reached the upstream"
    );

    // The bound origin reads the answer, streaming included.
    let res = app
        .v1(Method::POST, "/chat/completions", &key)
        .header("origin", APP)
        .json(&chat_stream("gpt-4o-mini"))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    assert_eq!(res.headers()["access-control-allow-origin"], APP);
    assert!(
        res.headers()["access-control-expose-headers"]
            .to_str()
            .unwrap()
            .contains("x-request-id")
    );
    assert!(res.text().await.unwrap().contains("[DONE]"));

    // Another origin is refused outright, with nothing it could read.
    let before = app.mock.request_count();
    let res = app
        .v1(Method::POST, "/chat/completions", &key)
        .header("origin", "https://evil.example")
        .json(&chat("gpt-4o-mini"))
        .send()
        .await
        .unwrap();
    assert!(!res.headers().contains_key("access-control-allow-origin"));
    assert_openai_error(res, 403, "origin_not_allowed").await;
    assert_eq!(app.mock.request_count(), before);

    // Server-side use (no Origin) keeps working; a grant without an origin gets no CORS.
    assert_eq!(
        app.chat_completions(&key, &chat("gpt-4o-mini"))
            .await
            .status(),
        200
    );
    let plain = app.enrolled_grant(None).await;
    let res = app
        .v1(Method::GET, "/models", &plain.api_key)
        .header("origin", APP)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    assert!(!res.headers().contains_key("access-control-allow-origin"));
}

#[tokio::test]
async fn a_browser_app_can_exchange_its_own_code() {
    let app = spawn_app().await;
    let mut b = person(&app).await;
    let code = code_from(&approve_redirect(&mut b, &[]).await);
    let res = app
        .client
        .request(Method::OPTIONS, app.url("/api/connect/token"))
        .header("origin", APP)
        .header("access-control-request-method", "POST")
        .header("access-control-request-headers", "content-type")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 204);
    assert_eq!(res.headers()["access-control-allow-origin"], APP);
    let res = app
        .client
        .post(app.url("/api/connect/token"))
        .header("origin", APP)
        .json(&json!({"code": code, "code_verifier": VERIFIER}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    assert_eq!(res.headers()["access-control-allow-origin"], APP);
}

#[tokio::test]
async fn the_sdk_is_importable_from_any_origin() {
    let app = spawn_app().await;
    let res = app
        .client
        .get(app.url("/sdk/keygate.js"))
        .header("origin", APP)
        .send()
        .await
        .unwrap();
    if res.status() == 200 {
        assert_eq!(res.headers()["access-control-allow-origin"], "*");
        assert!(
            res.headers()["content-type"]
                .to_str()
                .unwrap()
                .contains("javascript")
        );
    } else {
        panic!("/sdk/keygate.js is not served: {}", res.status());
    }
}

#[tokio::test]
async fn the_demo_server_serves_its_own_origin_pointing_at_the_vault() {
    let vault = url::Url::parse("http://localhost:8080").unwrap();
    let (server, addr) =
        keygate_server::demo::build("127.0.0.1:0".parse().unwrap(), &vault).unwrap();
    let handle = server.handle();
    tokio::spawn(server);
    let client = reqwest::Client::new();
    let config: Value = client
        .get(format!("http://{addr}/config.json"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(config["vault"], "http://localhost:8080");
    let res = client.get(format!("http://{addr}/")).send().await.unwrap();
    assert_eq!(res.status(), 200);
    let csp = res.headers()["content-security-policy"]
        .to_str()
        .unwrap()
        .to_owned();
    assert!(
        csp.contains("connect-src 'self' http://localhost:8080"),
        "{csp}"
    );
    assert!(
        res.text()
            .await
            .unwrap()
            .to_ascii_lowercase()
            .contains("<!doctype html")
    );
    handle.stop(false).await;
}
