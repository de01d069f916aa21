//! The person's key as the proxy uses it (issue 9): admin keys are never stored, a
//! record opens only for the person it is filed under, and OpenAI refusing the key is
//! the key owner's problem (424 `owner_key_rejected`), shown on their dashboard.

use keygate_testkit::browser::Browser;
use keygate_testkit::{FAKE_OPENAI_KEY, TestApp, spawn_app, spawn_app_with};
use reqwest::Method;
use serde_json::{Value, json};

use crate::helpers::{assert_openai_error, chat, chat_stream};

const ADMIN_OPENAI_KEY: &str = "sk-admin-0123456789abcdefghijklmnopqrstuvwxyz";

async fn key_state(b: &Browser) -> Value {
    b.get("/api/key").await.json().await.unwrap()
}

/// A signed-up person with `key` stored and a grant made on the dashboard.
async fn person_with_grant(app: &TestApp, key: &str) -> (Browser, String) {
    let mut b = app.browser();
    b.signed_up("Owner").await;
    let res = b
        .send(Method::PUT, "/api/key", json!({"api_key": key}))
        .await;
    assert_eq!(res.status(), 204);
    let created: Value = b
        .post("/api/grants", json!({"name": "notes"}))
        .await
        .json()
        .await
        .unwrap();
    (b, created["api_key"].as_str().unwrap().to_owned())
}

#[tokio::test]
async fn openai_admin_keys_are_never_stored() {
    let app = spawn_app().await;
    let uid = app.create_user("Admin Key Holder").await;
    let res = app.put_openai_key(&uid, ADMIN_OPENAI_KEY).await;
    let body = assert_openai_error(res, 400, "admin_key_not_allowed").await;
    assert_eq!(body["error"]["param"], "api_key");
    assert!(!body.to_string().contains(ADMIN_OPENAI_KEY));

    let mut b = app.browser();
    b.signed_up("Dashboard").await;
    let res = b
        .send(
            Method::PUT,
            "/api/key",
            json!({"api_key": format!("  {ADMIN_OPENAI_KEY}\n")}),
        )
        .await;
    assert_openai_error(res, 400, "admin_key_not_allowed").await;
    assert_eq!(key_state(&b).await["status"], "none");
    // Not even sent to OpenAI to be checked.
    assert_eq!(app.mock.request_count(), 0);
}

/// Finding 4: a whole vault record copied (in the store itself) under another person's
/// id does not open for that person's grants: unseal binds to where it looked.
#[tokio::test]
async fn a_vault_record_copied_under_another_person_does_not_open() {
    let app = spawn_app().await;
    let victim = app.create_user("Victim").await;
    assert_eq!(
        app.put_openai_key(&victim, "sk-victim-key-00000000000000000000")
            .await
            .status(),
        204
    );
    let victim_grant = app.create_grant(&victim, "victim app", None).await;
    let attacker = app.enrolled_grant(None).await;
    let data = app.stop().await;
    let path = data.path().to_path_buf();

    {
        let store = keygate_testkit::open_store_when_free(&path).await;
        let victim_id = keygate_core::ids::UserId::parse(&victim).unwrap();
        let attacker_id = keygate_core::ids::UserId::parse(&attacker.user_id).unwrap();
        let record = store.vault(&victim_id).await.unwrap().unwrap();
        store.put_vault(&attacker_id, &record).await.unwrap();
        store.flush().await.unwrap();
    }

    let app = spawn_app_with(|c| c.data_dir = Some(path.clone())).await;
    let res = app
        .chat_completions(&attacker.api_key, &chat("gpt-4o-mini"))
        .await;
    assert_openai_error(res, 500, "internal_error").await;
    assert_eq!(app.mock.request_count(), 0, "a key was forwarded");
    // The victim's own grant is unaffected.
    let res = app
        .chat_completions(
            victim_grant["api_key"].as_str().unwrap(),
            &chat("gpt-4o-mini"),
        )
        .await;
    assert_eq!(res.status(), 200);
    assert_eq!(
        app.mock.requests()[0].header("authorization"),
        Some("Bearer sk-victim-key-00000000000000000000")
    );
    drop(data);
}

/// "A stored OpenAI key that OpenAI rejects is blamed on the app": no longer. The app
/// gets 424 `owner_key_rejected` (not retried), the dashboard says `rejected`, and
/// storing a new key clears it.
#[tokio::test]
async fn a_key_openai_refuses_is_the_owners_to_fix() {
    let app = spawn_app().await;
    let (mut b, grant) = person_with_grant(&app, FAKE_OPENAI_KEY).await;
    let before = key_state(&b).await;
    assert_eq!(before["status"], "verified");
    assert!(before["rejected_at"].is_null());

    // OpenAI revokes the key after it was stored.
    app.mock.reject_key(FAKE_OPENAI_KEY);
    let res = app.chat_completions(&grant, &chat("gpt-4o-mini")).await;
    assert_eq!(res.headers()["x-should-retry"], "false");
    let body = assert_openai_error(res, 424, "owner_key_rejected").await;
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("must update their OpenAI key in keygate")
    );
    let res = app
        .chat_completions(&grant, &chat_stream("gpt-4o-mini"))
        .await;
    assert_openai_error(res, 424, "owner_key_rejected").await;
    let after = key_state(&b).await;
    assert_eq!(after["status"], "rejected");
    assert!(after["rejected_at"].is_u64());
    assert_eq!(after["last4"], "WXYZ");

    // The owner replaces the key: cleared, and the app works again.
    b.reauth().await;
    let res = b
        .send(
            Method::PUT,
            "/api/key",
            json!({"api_key": "sk-replacement-key-000000000000ABCD"}),
        )
        .await;
    assert_eq!(res.status(), 204);
    let replaced = key_state(&b).await;
    assert_eq!(replaced["status"], "verified");
    assert!(replaced["rejected_at"].is_null());
    assert_eq!(
        app.chat_completions(&grant, &chat("gpt-4o-mini"))
            .await
            .status(),
        200
    );
}

/// A 403 (no permission for this call, or a region OpenAI does not serve) is not the
/// app's fault either, but the key still works for other calls: 424, not marked.
#[tokio::test]
async fn an_upstream_403_is_424_without_marking_the_key() {
    let app = spawn_app().await;
    let (b, grant) = person_with_grant(&app, FAKE_OPENAI_KEY).await;
    let res = app
        .v1(Method::POST, "/chat/completions", &grant)
        .header("x-mock-scenario", "error-403")
        .json(&chat("gpt-4o-mini"))
        .send()
        .await
        .unwrap();
    assert_openai_error(res, 424, "owner_key_rejected").await;
    assert_eq!(key_state(&b).await["status"], "verified");
    // Other upstream errors pass through as they are.
    let res = app
        .v1(Method::POST, "/chat/completions", &grant)
        .header("x-mock-scenario", "error-400")
        .json(&chat("gpt-4o-mini"))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 400);
}

/// Proxy review, finding 2: OpenAI answers 401 also to a restricted project key that
/// lacks a permission ("Missing scopes: api.responses.write", `code: null`). Such a key
/// works for its other endpoints: the call is 424 saying what the key lacks, and the
/// key is not marked rejected (before the fix, every 401 marked it).
#[tokio::test]
async fn a_permission_401_is_424_without_marking_the_key() {
    let app = spawn_app().await;
    let (b, grant) = person_with_grant(&app, FAKE_OPENAI_KEY).await;
    app.mock
        .restrict_key(FAKE_OPENAI_KEY, "/v1/responses", "api.responses.write");
    let res = app
        .v1(Method::POST, "/responses", &grant)
        .json(&json!({"model": "gpt-4o-mini", "input": "hi"}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.headers()["x-should-retry"], "false");
    let body = assert_openai_error(res, 424, "owner_key_rejected").await;
    let message = body["error"]["message"].as_str().unwrap();
    assert!(message.contains("api.responses.write"), "{message}");
    assert!(message.contains("still works"), "{message}");
    assert!(
        !message.contains("Check that you have the correct role"),
        "{message}"
    );
    let state = key_state(&b).await;
    assert_eq!(state["status"], "verified");
    assert!(state["rejected_at"].is_null());
    // The key keeps working where it has the permission.
    assert_eq!(
        app.chat_completions(&grant, &chat("gpt-4o-mini"))
            .await
            .status(),
        200
    );
    // An invalid key (OpenAI's `invalid_api_key`) is still marked.
    app.mock.reject_key(FAKE_OPENAI_KEY);
    let res = app.chat_completions(&grant, &chat("gpt-4o-mini")).await;
    assert_openai_error(res, 424, "owner_key_rejected").await;
    assert_eq!(key_state(&b).await["status"], "rejected");
}

/// The same at storing time: a restricted key that may not list models is stored
/// (unverified), not refused as if OpenAI did not accept it.
#[tokio::test]
async fn a_key_that_may_not_list_models_is_stored_unverified() {
    let app = spawn_app().await;
    let key = "sk-proj-restricted-000000000000000000RSTR";
    app.mock.restrict_key(key, "/v1/models", "api.model.read");
    let (b, grant) = person_with_grant(&app, key).await;
    let state = key_state(&b).await;
    assert_eq!(state["status"], "unverified");
    // Its first successful call through the proxy verifies it.
    assert_eq!(
        app.chat_completions(&grant, &chat("gpt-4o-mini"))
            .await
            .status(),
        200
    );
    assert_eq!(key_state(&b).await["status"], "verified");
}

/// When the key could not be checked at storing time it is "unverified" — never
/// claimed as checked — and the first answer OpenAI gives through the proxy decides.
#[tokio::test]
async fn an_unchecked_key_is_unverified_until_openai_accepts_it() {
    let app = spawn_app_with(|c| c.validate_openai_keys = Some(false)).await;
    let (b, grant) = person_with_grant(&app, FAKE_OPENAI_KEY).await;
    let state = key_state(&b).await;
    assert_eq!(state["status"], "unverified");
    assert!(state["last_validated_at"].is_null());
    // An error that says nothing about the key changes nothing.
    let res = app
        .v1(Method::POST, "/chat/completions", &grant)
        .header("x-mock-scenario", "error-500")
        .json(&chat("gpt-4o-mini"))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 500);
    assert_eq!(key_state(&b).await["status"], "unverified");
    assert_eq!(
        app.chat_completions(&grant, &chat("gpt-4o-mini"))
            .await
            .status(),
        200
    );
    let state = key_state(&b).await;
    assert_eq!(state["status"], "verified");
    assert!(state["last_validated_at"].is_u64());
}

#[tokio::test]
async fn a_key_stored_while_openai_is_unreachable_is_unverified() {
    // Nothing listens on port 9 here: the check at storing time cannot reach "OpenAI".
    let app = spawn_app_with(|c| c.upstream_url = Some("http://127.0.0.1:9/v1".into())).await;
    let mut b = app.browser();
    b.signed_up("Offline").await;
    let res = b
        .send(Method::PUT, "/api/key", json!({"api_key": FAKE_OPENAI_KEY}))
        .await;
    assert_eq!(res.status(), 204);
    let state = key_state(&b).await;
    assert_eq!(state["enrolled"], true);
    assert_eq!(state["status"], "unverified");
    assert!(state["last_validated_at"].is_null());
}
