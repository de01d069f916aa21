use keygate_testkit::mock_openai::REJECTED_KEY_PREFIX;
use keygate_testkit::{FAKE_OPENAI_KEY, spawn_app, spawn_app_with};
use reqwest::Method;
use serde_json::{Value, json};

use crate::helpers::{assert_openai_error, chat};

#[tokio::test]
async fn without_a_session_everything_is_401() {
    let app = spawn_app().await;
    let b = app.browser();
    for (method, path) in [
        (Method::GET, "/api/me"),
        (Method::GET, "/api/key"),
        (Method::PUT, "/api/key"),
        (Method::GET, "/api/grants"),
        (Method::POST, "/api/grants"),
        (Method::GET, "/api/passkeys"),
        (Method::DELETE, "/api/account"),
    ] {
        let res = b
            .send(
                method.clone(),
                path,
                json!({"api_key": "sk-x", "name": "x"}),
            )
            .await;
        assert_openai_error(res, 401, "not_signed_in").await;
    }
    let res = b
        .request(Method::GET, "/api/me")
        .header("cookie", "keygate_session=forged")
        .send()
        .await
        .unwrap();
    assert_openai_error(res, 401, "not_signed_in").await;
}

#[tokio::test]
async fn csrf_foreign_or_missing_origin_changes_nothing() {
    let app = spawn_app().await;
    let mut b = app.browser();
    b.signed_up("Csrf").await;
    for origin in [
        Some("https://evil.example"),
        Some("null"),
        Some("http://localhost:1"),
        None,
    ] {
        let mut req = b
            .client
            .post(format!("{}/api/grants", app.address))
            .json(&json!({"name": "evil"}));
        if let Some(o) = origin {
            req = req.header("origin", o);
        }
        assert_openai_error(req.send().await.unwrap(), 403, "csrf_failed").await;
    }
    let res = b
        .client
        .post(format!("{}/api/auth/logout", app.address))
        .header("origin", "https://evil.example")
        .send()
        .await
        .unwrap();
    assert_openai_error(res, 403, "csrf_failed").await;
    let grants: Value = b.get("/api/grants").await.json().await.unwrap();
    assert!(
        grants.as_array().unwrap().is_empty(),
        "a CSRF request created a grant"
    );
    assert_eq!(
        b.get("/api/me").await.status(),
        200,
        "a CSRF logout signed us out"
    );
}

#[tokio::test]
async fn idle_sessions_expire() {
    // Times are whole seconds: 2 s lasts at least 1 s and is surely over after 3.1 s.
    let app = spawn_app_with(|c| c.session_idle_timeout_secs = Some(2)).await;
    let mut b = app.browser();
    b.signed_up("Idle").await;
    assert_eq!(b.get("/api/me").await.status(), 200);
    tokio::time::sleep(std::time::Duration::from_millis(3100)).await;
    assert_openai_error(b.get("/api/me").await, 401, "not_signed_in").await;
}

#[tokio::test]
async fn sessions_expire_absolutely_even_when_used() {
    // Whole seconds: 4 s lasts at least 3 s (used for 1.5 s), and is over 5.1 s in.
    let app = spawn_app_with(|c| c.session_absolute_timeout_secs = Some(4)).await;
    let mut b = app.browser();
    b.signed_up("Busy").await;
    for _ in 0..3 {
        assert_eq!(b.get("/api/me").await.status(), 200);
        tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    }
    tokio::time::sleep(std::time::Duration::from_millis(3600)).await;
    assert_openai_error(b.get("/api/me").await, 401, "not_signed_in").await;
}

#[tokio::test]
async fn logout_ends_the_session_for_good() {
    let app = spawn_app().await;
    let mut b = app.browser();
    b.signed_up("Bye").await;
    let cookie = b
        .client
        .get(format!("{}/api/me", app.address))
        .send()
        .await
        .unwrap();
    assert_eq!(cookie.status(), 200);
    // Remember the raw cookie to replay it after logout.
    let started: Value = b
        .post("/api/auth/login/start", json!({}))
        .await
        .json()
        .await
        .unwrap();
    let cred = b.passkey.get(&started["options"]).unwrap();
    let res = b
        .post(
            "/api/auth/login/finish",
            json!({"ceremony": started["ceremony"], "credential": cred}),
        )
        .await;
    let raw = res.headers()["set-cookie"]
        .to_str()
        .unwrap()
        .split(';')
        .next()
        .unwrap()
        .to_owned();
    let res = b.post("/api/auth/logout", json!({})).await;
    assert_eq!(res.status(), 204);
    assert!(
        res.headers()["set-cookie"]
            .to_str()
            .unwrap()
            .contains("Max-Age=0")
    );
    assert_eq!(b.get("/api/me").await.status(), 401);
    let replay = app
        .client
        .get(app.url("/api/me"))
        .header("cookie", raw)
        .send()
        .await
        .unwrap();
    assert_openai_error(replay, 401, "not_signed_in").await;
}

#[tokio::test]
async fn sensitive_actions_need_a_fresh_passkey_check() {
    // Whole seconds: a 2 s window lasts at least 1 s and is surely over after 3.1 s.
    let app = spawn_app_with(|c| c.fresh_window_secs = Some(2)).await;
    let mut b = app.browser();
    b.signed_up("Step Up").await;
    assert_eq!(
        b.send(Method::PUT, "/api/key", json!({"api_key": FAKE_OPENAI_KEY}))
            .await
            .status(),
        204
    );
    tokio::time::sleep(std::time::Duration::from_millis(3100)).await;
    // Not fresh any more: replacing or deleting the key, removing a passkey, deleting
    // the account all ask for a passkey first, and change nothing.
    assert_openai_error(
        b.send(Method::PUT, "/api/key", json!({"api_key": "sk-other"}))
            .await,
        403,
        "fresh_passkey_required",
    )
    .await;
    assert_openai_error(
        b.send(Method::DELETE, "/api/key", json!({})).await,
        403,
        "fresh_passkey_required",
    )
    .await;
    assert_openai_error(
        b.send(Method::DELETE, "/api/account", json!({})).await,
        403,
        "fresh_passkey_required",
    )
    .await;
    let list: Value = b.get("/api/passkeys").await.json().await.unwrap();
    let pid = list[0]["id"].as_str().unwrap();
    assert_openai_error(
        b.send(Method::DELETE, &format!("/api/passkeys/{pid}"), json!({}))
            .await,
        403,
        "fresh_passkey_required",
    )
    .await;
    let key: Value = b.get("/api/key").await.json().await.unwrap();
    assert_eq!(key["enrolled"], true);
    // Ordinary actions still work.
    assert_eq!(
        b.post("/api/grants", json!({"name": "fine"}))
            .await
            .status(),
        201
    );

    assert_eq!(b.reauth().await.status(), 204);
    assert_eq!(
        b.send(
            Method::PUT,
            "/api/key",
            json!({"api_key": "sk-replaced-9876"})
        )
        .await
        .status(),
        204
    );
    let key: Value = b.get("/api/key").await.json().await.unwrap();
    assert_eq!(key["last4"], "9876");
    assert_eq!(
        b.send(Method::DELETE, "/api/key", json!({})).await.status(),
        204
    );
    assert_eq!(
        b.get("/api/key").await.json::<Value>().await.unwrap()["enrolled"],
        false
    );
}

#[tokio::test]
async fn the_vault_api_stores_lists_and_refuses_keys() {
    let app = spawn_app().await;
    let mut b = app.browser();
    b.signed_up("Vault").await;
    let key: Value = b.get("/api/key").await.json().await.unwrap();
    // `status` and `rejected_at` were added by issue 9 (owner_key_rejected).
    assert_eq!(
        key,
        json!({"enrolled": false, "last4": null, "created_at": null, "last_validated_at": null,
               "status": "none", "rejected_at": null})
    );
    let res = b
        .send(
            Method::PUT,
            "/api/key",
            json!({"api_key": format!("{REJECTED_KEY_PREFIX}-bad-key")}),
        )
        .await;
    let body = assert_openai_error(res, 400, "key_rejected").await;
    assert!(!body.to_string().contains("-bad-key"));
    assert_eq!(
        b.get("/api/key").await.json::<Value>().await.unwrap()["enrolled"],
        false
    );

    let res = b
        .send(Method::PUT, "/api/key", json!({"api_key": FAKE_OPENAI_KEY}))
        .await;
    assert_eq!(res.status(), 204);
    assert!(res.text().await.unwrap().is_empty());
    let key: Value = b.get("/api/key").await.json().await.unwrap();
    assert_eq!(key["enrolled"], true);
    assert_eq!(key["last4"], "WXYZ");
    assert!(key["last_validated_at"].is_u64());
    assert!(!key.to_string().contains(FAKE_OPENAI_KEY));

    // Grants: create, use through the proxy, list without secrets, revoke.
    let res = b
        .post(
            "/api/grants",
            json!({"name": "notebook", "models": ["gpt-4o-mini"]}),
        )
        .await;
    assert_eq!(res.status(), 201);
    let created: Value = res.json().await.unwrap();
    let api_key = created["api_key"].as_str().unwrap();
    assert_eq!(created["base_url"], app.base_url);
    assert_eq!(
        app.chat_completions(api_key, &chat("gpt-4o-mini"))
            .await
            .status(),
        200
    );
    let list = b.get("/api/grants").await.text().await.unwrap();
    assert!(!list.contains(&api_key[20..]));
    let gid = created["grant"]["id"].as_str().unwrap();
    let mut other = app.browser();
    other.signed_up("Mallory").await;
    assert_openai_error(
        other
            .send(Method::DELETE, &format!("/api/grants/{gid}"), json!({}))
            .await,
        404,
        "not_found",
    )
    .await;
    assert_eq!(
        b.send(Method::DELETE, &format!("/api/grants/{gid}"), json!({}))
            .await
            .status(),
        204
    );
    assert_openai_error(
        app.chat_completions(api_key, &chat("gpt-4o-mini")).await,
        401,
        "revoked_api_key",
    )
    .await;
}

#[tokio::test]
async fn deleting_the_account_removes_everything_at_once() {
    let app = spawn_app().await;
    let mut b = app.browser();
    let user = b.signed_up("Leaving").await;
    b.send(Method::PUT, "/api/key", json!({"api_key": FAKE_OPENAI_KEY}))
        .await;
    let created: Value = b
        .post("/api/grants", json!({"name": "app"}))
        .await
        .json()
        .await
        .unwrap();
    let api_key = created["api_key"].as_str().unwrap().to_owned();
    assert_eq!(
        app.chat_completions(&api_key, &chat("gpt-4o-mini"))
            .await
            .status(),
        200
    );
    let mut laptop = b.with_same_passkey();
    assert_eq!(laptop.login().await.status(), 200);

    let res = b.send(Method::DELETE, "/api/account", json!({})).await;
    assert_eq!(res.status(), 204);
    assert_openai_error(
        app.chat_completions(&api_key, &chat("gpt-4o-mini")).await,
        401,
        "invalid_api_key",
    )
    .await;
    assert_eq!(b.get("/api/me").await.status(), 401);
    assert_eq!(
        laptop.get("/api/me").await.status(),
        401,
        "other sessions survived"
    );
    let mut again = b.with_same_passkey();
    assert_openai_error(again.login().await, 400, "ceremony_failed").await;
    let res = app
        .admin(
            Method::GET,
            &format!("/admin/users/{}", user["id"].as_str().unwrap()),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 404);
}
