//! Bring your own key, per request (issue 11 point 6): `X-OpenAI-Key: sk-...` from a
//! caller with a valid grant is used for that one request instead of the vault's key
//! (the vault is not opened), limits still apply, the header is never forwarded as
//! such, and the grant's plan may require or forbid it.

use keygate_server::config::RawConfig;
use keygate_testkit::browser::Browser;
use keygate_testkit::{FAKE_OPENAI_KEY, TestApp, spawn_app, spawn_app_with};
use reqwest::Method;
use reqwest::header::HeaderValue;
use serde_json::{Value, json};

use crate::helpers::{assert_openai_error, chat};

const OWN_KEY: &str = "sk-proj-own-key-of-the-caller-0123456789OWNK";

fn plans(c: &mut RawConfig) {
    c.plans = Some(
        serde_json::from_value(json!({
            "byok_only": {"requires_own_key": true},
            "vault_only": {"allow_own_key": false},
            "one_per_minute": {"rpm": 1},
        }))
        .unwrap(),
    );
}

/// A grant on `plan` (none: no plan) for a new person; `with_key`: the person stores
/// [`FAKE_OPENAI_KEY`] first.
async fn grant_on(app: &TestApp, plan: Option<&str>, with_key: bool) -> String {
    let user = app.create_user("Byok Person").await;
    if with_key {
        assert_eq!(
            app.put_openai_key(&user, FAKE_OPENAI_KEY).await.status(),
            204
        );
    }
    let mut body = json!({"name": "byok app"});
    if let Some(p) = plan {
        body["plan"] = json!(p);
    }
    let created = app.create_grant_with(&user, &body).await;
    created["api_key"].as_str().unwrap().to_owned()
}

async fn chat_own(app: &TestApp, grant: &str, own: &[&[u8]]) -> reqwest::Response {
    let mut req = app.v1(Method::POST, "/chat/completions", grant);
    for v in own {
        req = req.header("X-OpenAI-Key", HeaderValue::from_bytes(v).unwrap());
    }
    req.json(&chat("gpt-4o-mini")).send().await.unwrap()
}

fn authorization(app: &TestApp, i: usize) -> Option<String> {
    app.mock.requests()[i]
        .header("authorization")
        .map(str::to_owned)
}

#[tokio::test]
async fn the_callers_key_is_used_for_that_one_request_and_the_vault_key_on_the_next() {
    let app = spawn_app().await;
    let grant = grant_on(&app, None, true).await;
    let res = chat_own(&app, &grant, &[OWN_KEY.as_bytes()]).await;
    assert_eq!(res.status(), 200);
    let res = app.chat_completions(&grant, &chat("gpt-4o-mini")).await;
    assert_eq!(res.status(), 200);
    assert_eq!(authorization(&app, 0), Some(format!("Bearer {OWN_KEY}")));
    assert_eq!(
        authorization(&app, 1),
        Some(format!("Bearer {FAKE_OPENAI_KEY}"))
    );
    for r in app.mock.requests() {
        assert!(r.header("x-openai-key").is_none(), "forwarded as is");
        assert!(
            r.headers
                .iter()
                .filter(|(n, _)| n == "authorization")
                .count()
                == 1,
            "one Authorization"
        );
    }
}

#[tokio::test]
async fn the_vault_is_not_opened_a_person_without_a_stored_key_can_be_called_through() {
    let app = spawn_app().await;
    let grant = grant_on(&app, None, false).await;
    let res = app.chat_completions(&grant, &chat("gpt-4o-mini")).await;
    assert_openai_error(res, 409, "key_not_enrolled").await;
    let res = chat_own(&app, &grant, &[OWN_KEY.as_bytes()]).await;
    assert_eq!(res.status(), 200);
    assert_eq!(authorization(&app, 0), Some(format!("Bearer {OWN_KEY}")));
}

#[tokio::test]
async fn unusable_headers_are_400_and_never_reach_openai() {
    let app = spawn_app().await;
    let grant = grant_on(&app, None, true).await;
    let long = format!("sk-{}", "a".repeat(600));
    for bad in [
        &[b"sk-one".as_slice(), b"sk-two".as_slice()][..],
        &[b"sk-caf\xe9"],
        &[long.as_bytes()],
        &[b"sk with space"],
    ] {
        let res = chat_own(&app, &grant, bad).await;
        let body = assert_openai_error(res, 400, "invalid_own_key").await;
        assert_eq!(body["error"]["param"], "x-openai-key");
        assert!(!body.to_string().contains("sk-one"));
    }
    let admin = "sk-admin-0123456789abcdefghijklmnopqrstuvwxyz";
    let res = chat_own(&app, &grant, &[admin.as_bytes()]).await;
    let body = assert_openai_error(res, 400, "admin_key_not_allowed").await;
    assert!(!body.to_string().contains(admin));
    // Only a caller with a valid grant: without one, its own key does not help.
    let res = chat_own(&app, "kg_not_a_grant", &[OWN_KEY.as_bytes()]).await;
    assert_openai_error(res, 401, "invalid_api_key").await;
    assert_eq!(app.mock.request_count(), 0);
}

#[tokio::test]
async fn a_plan_may_require_or_forbid_the_callers_key_and_its_limits_still_apply() {
    let app = spawn_app_with(plans).await;
    let required = grant_on(&app, Some("byok_only"), true).await;
    let res = app.chat_completions(&required, &chat("gpt-4o-mini")).await;
    assert_openai_error(res, 400, "own_key_required").await;
    assert_eq!(
        chat_own(&app, &required, &[OWN_KEY.as_bytes()])
            .await
            .status(),
        200
    );

    let forbidden = grant_on(&app, Some("vault_only"), true).await;
    let res = chat_own(&app, &forbidden, &[OWN_KEY.as_bytes()]).await;
    assert_openai_error(res, 403, "own_key_not_allowed").await;
    let res = app.chat_completions(&forbidden, &chat("gpt-4o-mini")).await;
    assert_eq!(res.status(), 200);
    assert_eq!(app.mock.request_count(), 2);

    let limited = grant_on(&app, Some("one_per_minute"), true).await;
    assert_eq!(
        chat_own(&app, &limited, &[OWN_KEY.as_bytes()])
            .await
            .status(),
        200
    );
    let res = chat_own(&app, &limited, &[OWN_KEY.as_bytes()]).await;
    assert_openai_error(res, 429, "rate_limit_exceeded").await;
    assert_eq!(app.mock.request_count(), 3);
}

async fn key_state(b: &Browser) -> Value {
    b.get("/api/key").await.json().await.unwrap()
}

/// OpenAI refusing the caller's own key is the caller's answer (passed on), and the
/// person's stored key is not marked rejected.
#[tokio::test]
async fn openai_refusing_the_callers_key_does_not_mark_the_stored_key() {
    let app = spawn_app().await;
    let mut b = app.browser();
    b.signed_up("Owner").await;
    let res = b
        .send(Method::PUT, "/api/key", json!({"api_key": FAKE_OPENAI_KEY}))
        .await;
    assert_eq!(res.status(), 204);
    let created: Value = b
        .post("/api/grants", json!({"name": "notes"}))
        .await
        .json()
        .await
        .unwrap();
    let grant = created["api_key"].as_str().unwrap().to_owned();
    assert_eq!(key_state(&b).await["status"], "verified");

    app.mock.reject_key(OWN_KEY);
    let res = chat_own(&app, &grant, &[OWN_KEY.as_bytes()]).await;
    assert_eq!(res.status(), 401);
    let body: Value = res.json().await.unwrap();
    assert_eq!(body["error"]["code"], "invalid_api_key");
    let after = key_state(&b).await;
    assert_eq!(after["status"], "verified");
    assert!(after["rejected_at"].is_null());
    let res = app.chat_completions(&grant, &chat("gpt-4o-mini")).await;
    assert_eq!(res.status(), 200);
}

/// An app learns its plan's own-key rule before its first call: `own_key` in `GET
/// /v1/key` and in the consent page's `GET /api/connect/plan`.
#[tokio::test]
async fn apps_are_told_whether_their_own_key_is_required_allowed_or_forbidden() {
    let app = spawn_app_with(plans).await;
    for (plan, rule) in [
        (Some("byok_only"), "required"),
        (Some("vault_only"), "forbidden"),
        (Some("one_per_minute"), "allowed"),
        (None, "allowed"),
    ] {
        let grant = grant_on(&app, plan, true).await;
        let res = app.v1(Method::GET, "/key", &grant).send().await.unwrap();
        assert_eq!(res.status(), 200);
        let info: Value = res.json().await.unwrap();
        assert_eq!(info["own_key"], rule, "{plan:?}: {info}");
        let query = plan.map_or(String::new(), |p| format!("?name={p}"));
        let view: Value = app
            .browser()
            .get(&format!("/api/connect/plan{query}"))
            .await
            .json()
            .await
            .unwrap();
        assert_eq!(view["own_key"], rule, "{plan:?}: {view}");
    }
    // Asking is not a model call.
    assert_eq!(app.mock.request_count(), 0);
}
