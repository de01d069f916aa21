//! Issue 12: the proxy reads grants (and sealed vault records) through the store's
//! caches. Every way a grant changes — through the admin API and through the person's
//! `/api` alike — is seen by
//! the VERY NEXT proxied request: each test first makes a request that succeeds (so the
//! grant is cached), changes the grant, and the next request is refused (or, for a
//! change that widens, served). Expiry and a rotation's grace are read from the clock
//! every time, never cached as a verdict.

use keygate_core::calendar::to_rfc3339;
use keygate_testkit::browser::Browser;
use keygate_testkit::{TestApp, manual_clock, spawn_app_with_clock};
use reqwest::Method;
use serde_json::{Value, json};

use crate::connect::person;
use crate::helpers::{assert_openai_error, chat, json_of};

async fn admin(app: &TestApp, method: Method, path: &str, body: Value) -> reqwest::Response {
    app.admin(method, path).json(&body).send().await.unwrap()
}

/// The key works now (and is therefore cached).
async fn served(app: &TestApp, key: &str) {
    let res = app.chat_completions(key, &chat("gpt-4o")).await;
    assert_eq!(res.status(), 200, "{}", res.text().await.unwrap());
}

async fn refused(app: &TestApp, key: &str, status: u16, code: &str) {
    assert_openai_error(
        app.chat_completions(key, &chat("gpt-4o")).await,
        status,
        code,
    )
    .await;
}

/// A signed-in person (fresh session) with a key and a grant made through `/api`.
async fn person_with_grant(app: &TestApp) -> (Browser, String, String) {
    let b = person(app).await;
    let made = json_of(b.post("/api/grants", json!({"name": "notes"})).await, 201).await;
    let id = made["grant"]["id"].as_str().unwrap().to_owned();
    let key = made["api_key"].as_str().unwrap().to_owned();
    (b, id, key)
}

#[tokio::test]
async fn revoke_and_remove_take_effect_on_the_next_request() {
    let app = spawn_app_with_clock(manual_clock(), |_| {}).await;
    // The operator revokes.
    let g = app.enrolled_grant(None).await;
    served(&app, &g.api_key).await;
    served(&app, &g.api_key).await;
    assert_eq!(app.revoke(&g.grant_id).await.status(), 204);
    refused(&app, &g.api_key, 401, "revoked_api_key").await;
    // ... and removes the revoked grant: unknown from then on.
    let res = admin(
        &app,
        Method::DELETE,
        &format!("/admin/grants/{}", g.grant_id),
        json!({}),
    )
    .await;
    assert!(res.status().is_success(), "{}", res.status());
    refused(&app, &g.api_key, 401, "invalid_api_key").await;

    // The person revokes through /api.
    let (b, id, key) = person_with_grant(&app).await;
    served(&app, &key).await;
    assert_eq!(
        b.send(Method::DELETE, &format!("/api/grants/{id}"), json!({}))
            .await
            .status(),
        204
    );
    refused(&app, &key, 401, "revoked_api_key").await;
    assert_eq!(
        b.send(Method::DELETE, &format!("/api/grants/{id}"), json!({}))
            .await
            .status(),
        204
    );
    refused(&app, &key, 401, "invalid_api_key").await;
}

#[tokio::test]
async fn disable_and_enable_take_effect_on_the_next_request() {
    let app = spawn_app_with_clock(manual_clock(), |_| {}).await;
    let (b, id, key) = person_with_grant(&app).await;
    served(&app, &key).await;
    assert_eq!(
        b.post(&format!("/api/grants/{id}/disable"), json!({}))
            .await
            .status(),
        200
    );
    refused(&app, &key, 401, "invalid_api_key").await;
    assert_eq!(
        b.post(&format!("/api/grants/{id}/enable"), json!({}))
            .await
            .status(),
        200
    );
    served(&app, &key).await;
    let res = admin(
        &app,
        Method::POST,
        &format!("/admin/grants/{id}/disable"),
        json!({}),
    )
    .await;
    assert_eq!(res.status(), 200);
    refused(&app, &key, 401, "invalid_api_key").await;
    let res = admin(
        &app,
        Method::POST,
        &format!("/admin/grants/{id}/enable"),
        json!({}),
    )
    .await;
    assert_eq!(res.status(), 200);
    served(&app, &key).await;
}

#[tokio::test]
async fn rotation_takes_effect_on_the_next_request_and_the_grace_ends_on_the_clock() {
    let app = spawn_app_with_clock(manual_clock(), |_| {}).await;
    let g = app.enrolled_grant(None).await;
    let path = format!("/admin/grants/{}/rotate", g.grant_id);
    served(&app, &g.api_key).await;
    // No grace: the old key stops at once, the new one works at once.
    let rotated = json_of(admin(&app, Method::POST, &path, json!({})).await, 200).await;
    let second = rotated["api_key"].as_str().unwrap().to_owned();
    refused(&app, &g.api_key, 401, "invalid_api_key").await;
    served(&app, &second).await;
    // With a grace: both work (and are cached) until the clock passes it, then the
    // old one is refused with nothing written in between.
    let rotated = json_of(
        admin(&app, Method::POST, &path, json!({"grace_seconds": 10})).await,
        200,
    )
    .await;
    let third = rotated["api_key"].as_str().unwrap().to_owned();
    served(&app, &second).await;
    served(&app, &third).await;
    app.clock.advance(9);
    served(&app, &second).await;
    app.clock.advance(1);
    refused(&app, &second, 401, "invalid_api_key").await;
    served(&app, &third).await;

    // The person rotates through /api.
    let (b, id, key) = person_with_grant(&app).await;
    served(&app, &key).await;
    let rotated = json_of(
        b.post(&format!("/api/grants/{id}/rotate"), json!({})).await,
        200,
    )
    .await;
    refused(&app, &key, 401, "invalid_api_key").await;
    served(&app, rotated["api_key"].as_str().unwrap()).await;
}

#[tokio::test]
async fn narrowing_patches_take_effect_on_the_next_request() {
    let app = spawn_app_with_clock(manual_clock(), |_| {}).await;
    // The operator narrows the models, then the scopes.
    let g = app.enrolled_grant(None).await;
    let path = format!("/admin/grants/{}", g.grant_id);
    served(&app, &g.api_key).await;
    let res = admin(
        &app,
        Method::PATCH,
        &path,
        json!({"models": ["gpt-4o-mini"]}),
    )
    .await;
    assert_eq!(res.status(), 200);
    refused(&app, &g.api_key, 403, "model_not_allowed").await;
    let res = admin(&app, Method::PATCH, &path, json!({"models": []})).await;
    assert_eq!(res.status(), 200);
    served(&app, &g.api_key).await;
    let res = admin(&app, Method::PATCH, &path, json!({"scopes": ["files"]})).await;
    assert_eq!(res.status(), 200);
    refused(&app, &g.api_key, 403, "endpoint_not_allowed").await;

    // The person narrows models, scopes and limits through /api.
    let (b, id, key) = person_with_grant(&app).await;
    let path = format!("/api/grants/{id}");
    served(&app, &key).await;
    assert_eq!(
        b.send(Method::PATCH, &path, json!({"models": ["gpt-4o-mini"]}))
            .await
            .status(),
        200
    );
    refused(&app, &key, 403, "model_not_allowed").await;
    assert_eq!(
        b.send(Method::PATCH, &path, json!({"models": []}))
            .await
            .status(),
        200
    );
    served(&app, &key).await;
    assert_eq!(
        b.send(Method::PATCH, &path, json!({"limits": {"rpm": 1}}))
            .await
            .status(),
        200
    );
    served(&app, &key).await;
    refused(&app, &key, 429, "rate_limit_exceeded").await;
    assert_eq!(
        b.send(Method::PATCH, &path, json!({"scopes": ["files"]}))
            .await
            .status(),
        200
    );
    refused(&app, &key, 403, "endpoint_not_allowed").await;
}

#[tokio::test]
async fn expiry_is_read_from_the_clock_on_every_request() {
    let app = spawn_app_with_clock(manual_clock(), |_| {}).await;
    let g = app.enrolled_grant(None).await;
    served(&app, &g.api_key).await;
    let at = app.clock.now() + 5;
    let res = admin(
        &app,
        Method::PATCH,
        &format!("/admin/grants/{}", g.grant_id),
        json!({"expires_at": to_rfc3339(at)}),
    )
    .await;
    assert_eq!(res.status(), 200);
    served(&app, &g.api_key).await;
    app.clock.advance(4);
    served(&app, &g.api_key).await;
    app.clock.advance(1);
    refused(&app, &g.api_key, 401, "expired_api_key").await;

    // Set through /api, the same.
    let (b, id, key) = person_with_grant(&app).await;
    served(&app, &key).await;
    let at = app.clock.now() + 3;
    let res = b
        .send(
            Method::PATCH,
            &format!("/api/grants/{id}"),
            json!({"expires_at": to_rfc3339(at)}),
        )
        .await;
    assert_eq!(res.status(), 200);
    served(&app, &key).await;
    app.clock.advance(3);
    refused(&app, &key, 401, "expired_api_key").await;
}

#[tokio::test]
async fn account_deletion_takes_effect_on_the_next_request() {
    let app = spawn_app_with_clock(manual_clock(), |_| {}).await;
    // The person leaves.
    let (b, _id, key) = person_with_grant(&app).await;
    served(&app, &key).await;
    assert_eq!(
        b.send(Method::DELETE, "/api/account", json!({}))
            .await
            .status(),
        204
    );
    refused(&app, &key, 401, "invalid_api_key").await;
    // The operator deletes a person.
    let g = app.enrolled_grant(None).await;
    served(&app, &g.api_key).await;
    let res = admin(
        &app,
        Method::DELETE,
        &format!("/admin/users/{}", g.user_id),
        json!({}),
    )
    .await;
    assert!(res.status().is_success(), "{}", res.status());
    refused(&app, &g.api_key, 401, "invalid_api_key").await;
}

/// The `Authorization` the mock OpenAI saw on its most recent request.
fn last_upstream_key(app: &TestApp) -> Option<String> {
    app.mock
        .requests()
        .last()
        .and_then(|r| r.header("authorization").map(str::to_owned))
}

/// The proxy reads the person's sealed key through the store's vault cache too (still
/// sealed; opened per request). A key replaced or deleted through `/api` — and the
/// person's deletion — is seen by the very next proxied request.
#[tokio::test]
async fn a_replaced_or_deleted_openai_key_is_used_or_refused_on_the_next_request() {
    const SECOND_KEY: &str = "sk-test-keygate-second-key-00000000000000ABCD";
    let app = spawn_app_with_clock(manual_clock(), |_| {}).await;
    let (b, _id, key) = person_with_grant(&app).await;
    served(&app, &key).await;
    served(&app, &key).await;
    assert_eq!(
        last_upstream_key(&app),
        Some(format!("Bearer {}", keygate_testkit::FAKE_OPENAI_KEY))
    );

    assert_eq!(
        b.send(Method::PUT, "/api/key", json!({"api_key": SECOND_KEY}))
            .await
            .status(),
        204
    );
    served(&app, &key).await;
    assert_eq!(
        last_upstream_key(&app),
        Some(format!("Bearer {SECOND_KEY}"))
    );

    assert_eq!(
        b.send(Method::DELETE, "/api/key", json!({})).await.status(),
        204
    );
    let seen = app.mock.request_count();
    refused(&app, &key, 409, "key_not_enrolled").await;
    assert_eq!(app.mock.request_count(), seen, "nothing went upstream");

    // Stored again, then the person deletes their account: the grant and the key go.
    assert_eq!(
        b.send(Method::PUT, "/api/key", json!({"api_key": SECOND_KEY}))
            .await
            .status(),
        204
    );
    served(&app, &key).await;
    let res = b.send(Method::DELETE, "/api/account", json!({})).await;
    assert!(res.status().is_success(), "{}", res.status());
    refused(&app, &key, 401, "invalid_api_key").await;
}
