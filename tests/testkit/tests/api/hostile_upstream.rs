//! A hostile or broken upstream: it closes the connection before answering, sends
//! garbage on an SSE stream, a 10 MiB error body, or a redirect to another host. Each
//! reaches the app as a clear answer, the usage is counted, the person's key goes
//! nowhere else, and a bystander is served throughout (docs/SECURITY.md, "Hostile
//! input"). Resets and stalls mid-stream and before the head are in proxy_stream.rs.

use keygate_testkit::mock_openai::{HUGE_ERROR_LEN, MockOpenAi, garbage_sse_events};
use keygate_testkit::spawn_app;
use reqwest::Method;
use serde_json::{Value, json};

use crate::helpers::{assert_openai_error, chat};
use crate::limits::{requests_in, usage_when};

#[tokio::test]
async fn an_upstream_that_closes_before_answering_is_502_and_counted() {
    let app = spawn_app().await;
    let g = app.enrolled_grant(None).await;
    let bystander = app.bystander().await;
    for _ in 0..3 {
        let res = app
            .v1(Method::POST, "/chat/completions", &g.api_key)
            .header("x-mock-scenario", "reset-before-head")
            .json(&chat("gpt-4o-mini"))
            .send()
            .await
            .unwrap();
        assert_openai_error(res, 502, "upstream_unavailable").await;
    }
    // Counted as errors (OpenAI may have started on them).
    let report = usage_when(&app, &g.grant_id, |r| requests_in(r) == 3).await;
    assert_eq!(report["days"][0]["errors"], 3, "{report}");
    bystander.finish(&app, 5).await;
}

/// Garbage on a 200 stream is passed on as it came (keygate is not the app's SSE
/// parser), never stops the server, and the call is counted once.
#[tokio::test]
async fn garbage_sse_is_passed_on_byte_for_byte_and_counted_once() {
    let app = spawn_app().await;
    let g = app.enrolled_grant(None).await;
    let bystander = app.bystander().await;
    let body = json!({"model": "gpt-4o-mini", "stream": true,
        "stream_options": {"include_usage": true},
        "messages": [{"role": "user", "content": "Hi"}]});
    let res = app
        .v1(Method::POST, "/chat/completions", &g.api_key)
        .header("x-mock-scenario", "garbage-sse")
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    let got = res.bytes().await.unwrap();
    let sent: Vec<u8> = garbage_sse_events().concat();
    assert!(
        got == sent,
        "the stream was changed ({} vs {} bytes)",
        got.len(),
        sent.len()
    );
    let report = usage_when(&app, &g.grant_id, |r| requests_in(r) == 1).await;
    let day = &report["days"][0];
    // An absurd count is capped per answer, so the counters cannot saturate (after
    // which every later count would be lost).
    let cap = keygate_core::usage::MAX_TOKENS_PER_ANSWER;
    assert_eq!(day["prompt_tokens"], cap, "{report}");
    assert_eq!(day["completion_tokens"], cap, "{report}");
    // And the app asked for no usage: keygate still strips nothing it did not add.
    let plain = json!({"model": "gpt-4o-mini", "stream": true,
        "messages": [{"role": "user", "content": "Hi"}]});
    let res = app
        .v1(Method::POST, "/chat/completions", &g.api_key)
        .header("x-mock-scenario", "garbage-sse")
        .json(&plain)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    let got = res.bytes().await.unwrap();
    assert!(got.len() >= 2 * 1024 * 1024, "{}", got.len());
    let report = usage_when(&app, &g.grant_id, |r| requests_in(r) == 2).await;
    assert_eq!(report["days"][0]["prompt_tokens"], 2 * cap, "{report}");
    bystander.finish(&app, 5).await;
}

/// A 10 MiB error body: streamed through to the app (never buffered whole), with the
/// person's account ids scrubbed from its start; a 401's is read only as far as its
/// verdict needs (16 KiB) and answered 424.
#[tokio::test]
async fn a_ten_mib_error_body_is_streamed_or_cut_short() {
    let app = spawn_app().await;
    let g = app.enrolled_grant(None).await;
    let bystander = app.bystander().await;
    let res = app
        .v1(Method::POST, "/chat/completions", &g.api_key)
        .header("x-mock-scenario", "huge-error-500")
        .json(&chat("gpt-4o-mini"))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 500);
    assert_eq!(res.bytes().await.unwrap().len(), HUGE_ERROR_LEN);
    let res = app
        .v1(Method::POST, "/chat/completions", &g.api_key)
        .header("x-mock-scenario", "huge-error-401")
        .json(&chat("gpt-4o-mini"))
        .send()
        .await
        .unwrap();
    assert_openai_error(res, 424, "owner_key_rejected").await;
    // Not OpenAI's `invalid_api_key`: the person's key is not marked rejected.
    let key: Value = app
        .admin(Method::GET, &format!("/admin/users/{}", g.user_id))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(!key.to_string().contains("\"rejected\""), "{key}");
    usage_when(&app, &g.grant_id, |r| requests_in(r) == 2).await;
    bystander.finish(&app, 5).await;
}

/// keygate's upstream client follows no redirect: the person's key never goes to the
/// host a redirect names.
#[tokio::test]
async fn an_upstream_redirect_to_another_host_is_never_followed() {
    let app = spawn_app().await;
    let g = app.enrolled_grant(None).await;
    let bystander = app.bystander().await;
    let evil = MockOpenAi::start().await;
    let res = app
        .v1(Method::GET, "/models", &g.api_key)
        .header(
            "x-mock-scenario",
            format!("redirect-{}", evil.addr().port()),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 307);
    assert_eq!(evil.request_count(), 0, "the redirect was followed");
    bystander.finish(&app, 5).await;
}
