use keygate_testkit::{FAKE_OPENAI_KEY, spawn_app, spawn_app_with};
use reqwest::Method;
use serde_json::{Value, json};

use crate::helpers::{assert_openai_error, chat};

#[tokio::test]
async fn admin_key_is_required() {
    let app = spawn_app().await;
    let res = app
        .client
        .post(app.url("/admin/users"))
        .json(&json!({"name": "x"}))
        .send()
        .await
        .unwrap();
    assert_openai_error(res, 401, "missing_api_key").await;
    let res = app
        .client
        .post(app.url("/admin/users"))
        .bearer_auth("not-the-admin-key-at-all")
        .json(&json!({"name": "x"}))
        .send()
        .await
        .unwrap();
    assert_openai_error(res, 401, "invalid_api_key").await;
    let res = app
        .client
        .get(app.url("/admin/users"))
        .header("authorization", "Basic YTpi")
        .send()
        .await
        .unwrap();
    assert_openai_error(res, 401, "invalid_api_key").await;
}

#[tokio::test]
async fn admin_api_is_off_without_an_admin_key() {
    let app = spawn_app_with(|c| c.admin_key = None).await;
    let res = app.admin(Method::GET, "/admin/users").send().await.unwrap();
    let body = assert_openai_error(res, 401, "invalid_api_key").await;
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("KEYGATE_ADMIN_KEY")
    );
}

#[tokio::test]
async fn create_user_key_and_grant_then_list() {
    let app = spawn_app().await;
    let res = app
        .admin(Method::POST, "/admin/users")
        .json(&json!({"name": "  Ada  "}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 201);
    let user: Value = res.json().await.unwrap();
    assert_eq!(user["name"], "Ada");
    assert!(user["created_at"].as_u64().unwrap() > 1_700_000_000);
    let uid = user["id"].as_str().unwrap();

    let res = app.put_openai_key(uid, FAKE_OPENAI_KEY).await;
    assert_eq!(res.status(), 204);
    assert!(
        res.text().await.unwrap().is_empty(),
        "key must not be echoed"
    );

    let created = app
        .create_grant(
            uid,
            "my app",
            Some(&["gpt-4o-mini", "gpt-4o-mini", "gpt-4o"]),
        )
        .await;
    let key = created["api_key"].as_str().unwrap();
    assert!(key.starts_with("kg_") && key.len() >= 60, "{key}");
    assert_eq!(created["base_url"], app.base_url);
    let grant = &created["grant"];
    assert_eq!(grant["name"], "my app");
    assert_eq!(grant["models"], json!(["gpt-4o-mini", "gpt-4o"]));
    assert_eq!(grant["state"], "active");
    assert_eq!(grant["user_id"], uid);
    assert!(grant["last_used_at"].is_null());
    assert!(key.contains(grant["id"].as_str().unwrap()));

    let res = app
        .admin(Method::GET, &format!("/admin/users/{uid}/grants"))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    let text = res.text().await.unwrap();
    let secret = &key[key.len() - 49..];
    assert!(!text.contains(secret), "list leaks the secret");
    assert!(!text.contains("secret_hash"));
    let list: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(list.as_array().unwrap().len(), 1);
    assert_eq!(list[0]["id"], grant["id"]);
}

#[tokio::test]
async fn bad_admin_input_gets_clear_errors() {
    let app = spawn_app().await;
    let post = |body: &'static str| {
        app.admin(Method::POST, "/admin/users")
            .header("content-type", "application/json")
            .body(body)
            .send()
    };
    assert_openai_error(post("{not json").await.unwrap(), 400, "invalid_request").await;
    assert_openai_error(
        post(r#"{"name": ""}"#).await.unwrap(),
        400,
        "invalid_request",
    )
    .await;
    assert_openai_error(
        post(r#"{"name": "x", "admin": true}"#).await.unwrap(),
        400,
        "invalid_request",
    )
    .await;
    assert_openai_error(post(r#"{}"#).await.unwrap(), 400, "invalid_request").await;

    let uid = app.create_user("Bob").await;
    let res = app.put_openai_key(uid.as_str(), "has spaces in it").await;
    let body = assert_openai_error(res, 400, "invalid_request").await;
    assert_eq!(body["error"]["param"], "api_key");
    assert!(
        !body.to_string().contains("has spaces"),
        "key echoed in error"
    );

    let res = app
        .put_openai_key("aaaaaaaaaaaaaaaa", FAKE_OPENAI_KEY)
        .await;
    assert_openai_error(res, 404, "not_found").await;
    let res = app.put_openai_key("../../etc", FAKE_OPENAI_KEY).await;
    assert_openai_error(res, 404, "not_found").await;
    let res = app
        .admin(Method::POST, &format!("/admin/users/{uid}/grants"))
        .json(&json!({"name": "x", "models": ["ok", " "]}))
        .send()
        .await
        .unwrap();
    assert_openai_error(res, 400, "invalid_request").await;
    let res = app.revoke("aaaaaaaaaaaaaaaa").await;
    assert_openai_error(res, 404, "not_found").await;
}

#[tokio::test]
async fn revoked_grant_is_refused_from_the_very_next_request() {
    let app = spawn_app().await;
    let g = app.enrolled_grant(None).await;
    assert_eq!(
        app.chat_completions(&g.api_key, &chat("gpt-4o-mini"))
            .await
            .status(),
        200
    );
    let res = app.revoke(&g.grant_id).await;
    assert_eq!(res.status(), 204);
    let before = app.mock.request_count();
    let res = app.chat_completions(&g.api_key, &chat("gpt-4o-mini")).await;
    assert_openai_error(res, 401, "revoked_api_key").await;
    assert_eq!(
        app.mock.request_count(),
        before,
        "upstream called for a revoked grant"
    );
    let list: Value = app
        .admin(Method::GET, &format!("/admin/users/{}/grants", g.user_id))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(list[0]["state"], "revoked");
    assert!(list[0]["revoked_at"].is_u64());
}

#[tokio::test]
async fn replacing_the_key_uses_the_new_one() {
    let app = spawn_app().await;
    let g = app.enrolled_grant(None).await;
    assert_eq!(
        app.put_openai_key(&g.user_id, "sk-second-key-1111")
            .await
            .status(),
        204
    );
    let res = app
        .v1(Method::GET, "/models", &g.api_key)
        .header("x-mock-scenario", "echo-headers")
        .send()
        .await
        .unwrap();
    let v: Value = res.json().await.unwrap();
    assert_eq!(v["headers"]["authorization"], "Bearer sk-second-key-1111");
}

#[tokio::test]
async fn everything_survives_a_restart_on_the_same_data_dir() {
    let app = spawn_app().await;
    let g = app.enrolled_grant(Some(&["gpt-4o-mini"])).await;
    let data = app.stop().await;
    let path = data.path().to_path_buf();
    let app2 = spawn_app_with(|c| c.data_dir = Some(path)).await;
    assert_eq!(
        app2.chat_completions(&g.api_key, &chat("gpt-4o-mini"))
            .await
            .status(),
        200
    );
    let res = app2.chat_completions(&g.api_key, &chat("gpt-4o")).await;
    assert_openai_error(res, 403, "model_not_allowed").await;
    let res = app2
        .admin(Method::GET, &format!("/admin/users/{}", g.user_id))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    drop(data);
}

/// After a master key rotation, records are re-sealed under the new key in the
/// background, so the old key can eventually be retired.
#[tokio::test]
async fn rotated_master_keys_reseal_records_online() {
    use base64::Engine;
    let k = |b: u8| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode([b; 32]);
    let old = format!("k-old:{}", k(1));
    let both = format!("k-new:{},{old}", k(2));
    let new_only = format!("k-new:{}", k(2));

    let app = spawn_app_with(|c| c.master_keys = Some(old.as_str().into())).await;
    let g = app.enrolled_grant(None).await;
    let data = app.stop().await;
    let path = data.path().to_path_buf();

    let app = spawn_app_with(|c| {
        c.data_dir = Some(path.clone());
        c.master_keys = Some(both.as_str().into());
    })
    .await;
    assert_eq!(
        app.chat_completions(&g.api_key, &chat("gpt-4o-mini"))
            .await
            .status(),
        200
    );
    // Stopping waits for the background re-seal pass; then retire the old key entirely.
    app.stop().await;

    let app = spawn_app_with(|c| {
        c.data_dir = Some(path.clone());
        c.master_keys = Some(new_only.as_str().into());
    })
    .await;
    assert_eq!(
        app.chat_completions(&g.api_key, &chat("gpt-4o-mini"))
            .await
            .status(),
        200,
        "the record was not re-sealed under the new key"
    );
    drop(data);
}

/// `DELETE /admin/users/{id}`: the person goes as with their own `DELETE /api/account`
/// (sessions on every device, grants, key, passkeys), needs scope `write`, and an
/// unknown, already deleted or malformed id is 404.
#[tokio::test]
async fn an_operator_deletes_a_person_and_everything_of_theirs() {
    let app = spawn_app().await;
    let mut b = app.browser();
    let user = b.signed_up("Removed by the operator").await;
    let uid = user["id"].as_str().unwrap().to_owned();
    assert_eq!(
        app.put_openai_key(&uid, FAKE_OPENAI_KEY).await.status(),
        204
    );
    let created = app.create_grant(&uid, "app", None).await;
    let api_key = created["api_key"].as_str().unwrap().to_owned();
    let grant_id = created["grant"]["id"].as_str().unwrap().to_owned();
    assert_eq!(
        app.chat_completions(&api_key, &chat("gpt-4o-mini"))
            .await
            .status(),
        200
    );
    let other = app.create_user("Stays").await;

    // Too little scope, or a wrong key, changes nothing.
    let made: Value = app
        .admin(Method::POST, "/admin/keys")
        .json(&json!({"name": "reader", "scope": "read"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let read_key = made["key"].as_str().unwrap();
    let path = format!("/admin/users/{uid}");
    let res = app
        .client
        .delete(app.url(&path))
        .bearer_auth(read_key)
        .send()
        .await
        .unwrap();
    assert_openai_error(res, 403, "insufficient_scope").await;
    let res = app
        .client
        .delete(app.url(&path))
        .bearer_auth("not-the-admin-key-at-all-0123456789")
        .send()
        .await
        .unwrap();
    assert_openai_error(res, 401, "invalid_api_key").await;
    assert_eq!(b.get("/api/me").await.status(), 200);

    let res = app.admin(Method::DELETE, &path).send().await.unwrap();
    assert_eq!(res.status(), 204);
    assert!(res.text().await.unwrap().is_empty());
    assert_openai_error(
        app.chat_completions(&api_key, &chat("gpt-4o-mini")).await,
        401,
        "invalid_api_key",
    )
    .await;
    assert_eq!(b.get("/api/me").await.status(), 401, "session survived");
    let mut again = b.with_same_passkey();
    assert_openai_error(again.login().await, 400, "ceremony_failed").await;
    for gone in [path.clone(), format!("/admin/grants/{grant_id}")] {
        let res = app.admin(Method::GET, &gone).send().await.unwrap();
        assert_openai_error(res, 404, "not_found").await;
    }
    // Only that person: the other one is still listed.
    let listed: Value = app
        .admin(Method::GET, "/admin/users")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let ids: Vec<&str> = listed
        .as_array()
        .unwrap()
        .iter()
        .map(|u| u["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, [other.as_str()]);

    // Again, never existed, not an id at all: 404, nothing else touched.
    for id in [uid.as_str(), "aaaaaaaaaaaaaaaa", "not-an-id"] {
        let res = app
            .admin(Method::DELETE, &format!("/admin/users/{id}"))
            .send()
            .await
            .unwrap();
        assert_openai_error(res, 404, "not_found").await;
    }
    let res = app
        .admin(Method::GET, &format!("/admin/users/{other}"))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
}
