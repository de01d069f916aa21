//! `GET /v1/key` (an app's view of its own key: limits, usage, what is left, rate
//! state; never a secret, not counted against rpm, CORS for the bound origin) and
//! `GET /v1/models` filtered to what a model-limited grant may use.

use keygate_testkit::spawn_app;
use reqwest::Method;
use serde_json::{Value, json};

use crate::helpers::{assert_openai_error, chat};

/// Binds a grant to a browser origin, as the connect flow does.
async fn bind_origin(app: &keygate_testkit::TestApp, grant_id: &str, origin: &str) {
    let id = keygate_core::ids::GrantId::parse(grant_id).unwrap();
    app.state
        .store
        .update_grant(&id, &|g| g.origin = Some(origin.to_owned()))
        .await
        .unwrap()
        .unwrap();
}
use crate::limits::{requests_in, usage_when};

#[tokio::test]
async fn the_key_describes_itself_without_a_secret_and_costs_no_rpm() {
    let app = spawn_app().await;
    let g = app
        .limited_grant(json!({"rpm": 2, "tpm": 1000,
                              "budget": {"usd": 5, "period": "month"}}))
        .await;
    let info = app.key_info(&g.api_key).await;
    assert_eq!(info["id"], g.grant_id.as_str());
    assert_eq!(info["name"], "test app");
    assert_eq!(info["models"], json!([]));
    assert_eq!(info["limits"]["rpm"], 2);
    assert_eq!(info["limits"]["budget"]["usd"], 5.0);
    assert_eq!(info["expires_at"], Value::Null);
    assert_eq!(info["usage"]["period"], "month");
    assert!(
        info["usage"]["period_start"]
            .as_str()
            .unwrap()
            .ends_with("-01T00:00:00Z")
    );
    assert_eq!(info["usage"]["requests"], 0);
    assert_eq!(info["remaining"], json!({"usd": 5.0, "tokens": null}));
    assert_eq!(info["rate_limit"]["remaining_requests"], 2);
    assert_eq!(info["rate_limit"]["remaining_tokens"], 1000);
    let text = info.to_string();
    assert!(
        !text.contains(&g.api_key) && !text.contains("secret"),
        "{text}"
    );
    // Not counted against rpm: both requests per minute are still there.
    for _ in 0..5 {
        let res = app
            .v1(Method::GET, "/key", &g.api_key)
            .send()
            .await
            .unwrap();
        assert_eq!(
            res.headers().get("x-ratelimit-remaining-requests").unwrap(),
            "2"
        );
    }
    for _ in 0..2 {
        let res = app.chat_completions(&g.api_key, &chat("gpt-4o-mini")).await;
        assert_eq!(res.status(), 200);
        let _ = res.bytes().await;
    }
    usage_when(&app, &g.grant_id, |r| requests_in(r) == 2).await;
    let info = app.key_info(&g.api_key).await;
    assert_eq!(info["usage"]["requests"], 2);
    assert_eq!(info["usage"]["tokens"], 26);
    assert_eq!(info["rate_limit"]["remaining_requests"], 0);
    assert!(info["rate_limit"]["reset_requests_s"].as_f64().unwrap() > 0.0);
    let left = info["remaining"]["usd"].as_f64().unwrap();
    assert!(left < 5.0 && left > 4.99, "{info}");
    assert_eq!(app.mock.request_count(), 2, "/v1/key is never forwarded");
}

#[tokio::test]
async fn the_key_endpoint_authenticates_like_the_proxy_and_answers_its_origin() {
    let app = spawn_app().await;
    let res = app
        .client
        .get(format!("{}/key", app.base_url))
        .send()
        .await
        .unwrap();
    assert_openai_error(res, 401, "missing_api_key").await;
    let g = app.enrolled_grant(None).await;
    bind_origin(&app, &g.grant_id, "https://app.example").await;
    let key = g.api_key.as_str();
    let res = app
        .v1(Method::GET, "/key", key)
        .header("origin", "https://app.example")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    assert_eq!(
        res.headers().get("access-control-allow-origin").unwrap(),
        "https://app.example"
    );
    let res = app
        .v1(Method::GET, "/key", key)
        .header("origin", "https://evil.example")
        .send()
        .await
        .unwrap();
    assert!(res.headers().get("access-control-allow-origin").is_none());
    assert_openai_error(res, 403, "origin_not_allowed").await;
    // The browser's preflight is answered.
    let res = app
        .client
        .request(Method::OPTIONS, format!("{}/key", app.base_url))
        .header("origin", "https://app.example")
        .header("access-control-request-method", "GET")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 204);
    assert_eq!(app.revoke(&g.grant_id).await.status(), 204);
    let res = app.v1(Method::GET, "/key", key).send().await.unwrap();
    assert_openai_error(res, 401, "revoked_api_key").await;
}

#[tokio::test]
async fn cors_exposes_the_rate_limit_and_retry_headers() {
    let app = spawn_app().await;
    let g = app.limited_grant(json!({"rpm": 1})).await;
    bind_origin(&app, &g.grant_id, "https://app.example").await;
    let key = g.api_key.as_str();
    let send = || {
        app.v1(Method::POST, "/chat/completions", key)
            .header("origin", "https://app.example")
            .json(&chat("gpt-4o-mini"))
            .send()
    };
    assert_eq!(send().await.unwrap().status(), 200);
    let res = send().await.unwrap();
    assert_eq!(res.status(), 429);
    let expose = res
        .headers()
        .get("access-control-expose-headers")
        .unwrap()
        .to_str()
        .unwrap();
    for h in [
        "retry-after",
        "retry-after-ms",
        "x-should-retry",
        "x-ratelimit-remaining-requests",
    ] {
        assert!(
            expose.split(", ").any(|e| e.trim() == h),
            "{h} not in {expose}"
        );
    }
}

#[tokio::test]
async fn a_model_limited_grant_lists_only_its_models() {
    let app = spawn_app().await;
    let g = app
        .enrolled_grant(Some(&["gpt-4o-mini", "not-upstream"]))
        .await;
    let res = app
        .v1(Method::GET, "/models", &g.api_key)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    let len: usize = res
        .headers()
        .get("content-length")
        .unwrap()
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    let body = res.bytes().await.unwrap();
    assert_eq!(body.len(), len);
    let list: Value = serde_json::from_slice(&body).unwrap();
    let ids: Vec<&str> = list["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["gpt-4o-mini"]);
    assert_eq!(list["object"], "list");
    let res = app
        .v1(Method::GET, "/models/gpt-4o-mini", &g.api_key)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    let before = app.mock.request_count();
    let res = app
        .v1(Method::GET, "/models/gpt-4o", &g.api_key)
        .send()
        .await
        .unwrap();
    assert_openai_error(res, 403, "model_not_allowed").await;
    assert_eq!(app.mock.request_count(), before);
    // An unrestricted grant sees the whole list.
    let all = app.enrolled_grant(None).await;
    let list: Value = app
        .v1(Method::GET, "/models", &all.api_key)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(list["data"].as_array().unwrap().len(), 3);
}
