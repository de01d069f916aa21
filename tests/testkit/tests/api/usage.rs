//! Usage, always counted: exact against the mock's own `usage` for JSON chat, chat
//! SSE (asked for or not: the app never sees the chunk keygate asked for), Responses
//! SSE and embeddings; abandoned and cut streams counted and marked estimated; errors
//! counted as errors; budgets reset on the UTC calendar; a restart keeps the count.

use std::time::Duration;

use keygate_testkit::{TestApp, manual_clock, spawn_app, spawn_app_with_clock};
use reqwest::Method;
use serde_json::{Value, json};

use crate::helpers::{assert_openai_error, chat, chat_stream};
use crate::limits::{requests_in, usage_when};

/// 2026-11-30T00:00:00Z, a Monday.
const MON_2026_11_30: u64 = 1_795_996_800;

/// The only row of a report (one day, one model).
fn only_row(report: &Value) -> &Value {
    let days = report["days"].as_array().unwrap();
    assert_eq!(days.len(), 1, "{report}");
    &days[0]
}

fn nanos(v: &Value) -> u64 {
    (v.as_f64().unwrap() * 1e9).round() as u64
}

/// The `usage` the mock reported inside an SSE body (the last event that has one).
fn sse_usage(body: &str) -> Value {
    body.lines()
        .rev()
        .filter_map(|l| l.strip_prefix("data: "))
        .filter_map(|d| serde_json::from_str::<Value>(d).ok())
        .filter_map(|v| {
            v.get("usage")
                .filter(|u| u.is_object())
                .cloned()
                .or_else(|| {
                    v.pointer("/response/usage")
                        .filter(|u| u.is_object())
                        .cloned()
                })
        })
        .next()
        .unwrap_or(Value::Null)
}

async fn settled(app: &TestApp, grant_id: &str, n: u64) -> Value {
    usage_when(app, grant_id, |r| requests_in(r) == n).await
}

#[tokio::test]
async fn json_chat_is_counted_exactly_and_priced() {
    let app = spawn_app().await;
    let g = app.enrolled_grant(None).await;
    let res = app.chat_completions(&g.api_key, &chat("gpt-4o-mini")).await;
    let answer: Value = res.json().await.unwrap();
    let report = settled(&app, &g.grant_id, 1).await;
    let row = only_row(&report);
    assert_eq!(row["model"], "gpt-4o-mini");
    assert_eq!(row["prompt_tokens"], answer["usage"]["prompt_tokens"]);
    assert_eq!(
        row["completion_tokens"],
        answer["usage"]["completion_tokens"]
    );
    assert_eq!(
        (row["errors"].clone(), row["estimated"].clone()),
        (json!(0), json!(0))
    );
    // gpt-4o-mini: $0.15 / $0.60 per million = 150 / 600 nanodollars a token.
    assert_eq!(nanos(&row["usd"]), 8 * 150 + 5 * 600);
    assert_eq!(report["summary"]["requests"], 1);
    assert_eq!(report["summary"]["tokens"], 13);
}

#[tokio::test]
async fn chat_sse_asked_for_usage_is_counted_and_passed_on() {
    let app = spawn_app().await;
    let g = app.enrolled_grant(None).await;
    let mut body = chat_stream("gpt-4o-mini");
    body["stream_options"] = json!({"include_usage": true});
    let text = app
        .chat_completions(&g.api_key, &body)
        .await
        .text()
        .await
        .unwrap();
    let usage = sse_usage(&text);
    assert_eq!(usage["completion_tokens"], 5, "{text}");
    let report = settled(&app, &g.grant_id, 1).await;
    let row = only_row(&report);
    assert_eq!(row["prompt_tokens"], usage["prompt_tokens"]);
    assert_eq!(row["completion_tokens"], usage["completion_tokens"]);
    assert_eq!(row["estimated"], 0);
}

#[tokio::test]
async fn chat_sse_not_asked_for_usage_is_counted_and_the_app_never_sees_it() {
    let app = spawn_app().await;
    let g = app.enrolled_grant(None).await;
    let text = app
        .chat_completions(&g.api_key, &chat_stream("gpt-4o-mini"))
        .await
        .text()
        .await
        .unwrap();
    // keygate asked upstream on the app's behalf...
    let sent = app.mock.requests()[0].json().unwrap();
    assert_eq!(sent["stream_options"]["include_usage"], true);
    // ...and the app got what OpenAI would have sent it: no usage chunk, no
    // `"usage":null` on the other chunks.
    assert!(!text.contains("usage"), "{text}");
    assert!(text.ends_with("data: [DONE]\n\n"), "{text}");
    assert_eq!(text.matches("data: ").count(), 8, "{text}");
    let report = settled(&app, &g.grant_id, 1).await;
    let row = only_row(&report);
    assert_eq!(row["prompt_tokens"], 8);
    assert_eq!(row["completion_tokens"], 5);
    assert_eq!(row["estimated"], 0);
}

#[tokio::test]
async fn responses_sse_is_counted_from_response_completed() {
    let app = spawn_app().await;
    let g = app.enrolled_grant(None).await;
    let text = app
        .v1(Method::POST, "/responses", &g.api_key)
        .header("x-mock-completion-tokens", "42")
        .json(&json!({"model": "gpt-4o", "input": "Hello there", "stream": true}))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let usage = sse_usage(&text);
    assert_eq!(usage["output_tokens"], 42, "{text}");
    let report = settled(&app, &g.grant_id, 1).await;
    let row = only_row(&report);
    assert_eq!(row["model"], "gpt-4o");
    assert_eq!(row["prompt_tokens"], usage["input_tokens"]);
    assert_eq!(row["completion_tokens"], 42);
    assert_eq!(row["estimated"], 0);
    let input = usage["input_tokens"].as_u64().unwrap();
    // gpt-4o: $2.50 / $10 per million.
    assert_eq!(nanos(&row["usd"]), input * 2_500 + 42 * 10_000);
}

#[tokio::test]
async fn embeddings_are_counted_from_their_json_tail() {
    let app = spawn_app().await;
    let g = app.enrolled_grant(None).await;
    let answer: Value = app
        .v1(Method::POST, "/embeddings", &g.api_key)
        .json(&json!({"model": "text-embedding-3-small",
                      "input": ["the first text to embed", "and a second one"]}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let prompt = answer["usage"]["prompt_tokens"].as_u64().unwrap();
    assert!(prompt > 0);
    let report = settled(&app, &g.grant_id, 1).await;
    let row = only_row(&report);
    assert_eq!(row["prompt_tokens"], prompt);
    assert_eq!(row["completion_tokens"], 0);
    assert_eq!(row["estimated"], 0);
    assert_eq!(nanos(&row["usd"]), prompt * 20);
}

#[tokio::test]
async fn an_abandoned_stream_is_counted_for_what_was_streamed() {
    let app = spawn_app().await;
    let g = app.enrolled_grant(None).await;
    let mut res = app
        .v1(Method::POST, "/chat/completions", &g.api_key)
        .header("x-mock-scenario", "long-stream")
        .header("x-mock-delay-ms", "20")
        .json(&chat_stream("gpt-4o-mini"))
        .send()
        .await
        .unwrap();
    let mut seen = String::new();
    while seen.matches("content").count() < 4 {
        let chunk = res.chunk().await.unwrap().unwrap();
        seen.push_str(&String::from_utf8_lossy(&chunk));
    }
    drop(res);
    assert!(
        app.mock
            .wait_for_cancelled(1, Duration::from_secs(10))
            .await
    );
    let report = settled(&app, &g.grant_id, 1).await;
    let row = only_row(&report);
    assert_eq!(row["estimated"], 1, "{report}");
    assert!(row["prompt_tokens"].as_u64().unwrap() > 0, "{report}");
    assert!(row["completion_tokens"].as_u64().unwrap() >= 1, "{report}");
    assert!(nanos(&row["usd"]) > 0);
}

#[tokio::test]
async fn an_upstream_cut_mid_stream_is_counted_as_estimated() {
    let app = spawn_app().await;
    let g = app.enrolled_grant(None).await;
    let res = app
        .v1(Method::POST, "/chat/completions", &g.api_key)
        .header("x-mock-scenario", "reset-mid-stream")
        .json(&chat_stream("gpt-4o-mini"))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    let _ = res.bytes().await; // ends abnormally
    let report = settled(&app, &g.grant_id, 1).await;
    let row = only_row(&report);
    assert_eq!(row["estimated"], 1, "{report}");
    assert_eq!(row["errors"], 0);
    assert!(row["prompt_tokens"].as_u64().unwrap() > 0, "{report}");
}

#[tokio::test]
async fn error_answers_count_as_errors_without_tokens() {
    let app = spawn_app().await;
    let g = app.enrolled_grant(None).await;
    let res = app
        .v1(Method::POST, "/chat/completions", &g.api_key)
        .header("x-mock-scenario", "error-500")
        .json(&chat("gpt-4o-mini"))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 500);
    let _ = res.bytes().await;
    let report = settled(&app, &g.grant_id, 1).await;
    let row = only_row(&report);
    assert_eq!(row["errors"], 1);
    assert_eq!(row["prompt_tokens"], 0);
    assert_eq!(nanos(&row["usd"]), 0);
}

/// A token budget of 20 allows one 13-token answer per period.
async fn budget_resets(period: &str, start: u64, reset_after: u64) {
    let clock = manual_clock();
    clock.set(start);
    let app = spawn_app_with_clock(clock, |_| {}).await;
    let g = app
        .limited_grant(json!({"budget": {"tokens": 20, "period": period}}))
        .await;
    let ok = app.chat_completions(&g.api_key, &chat("gpt-4o-mini")).await;
    assert_eq!(ok.status(), 200);
    let _ = ok.bytes().await;
    settled(&app, &g.grant_id, 1).await;
    let res = app.chat_completions(&g.api_key, &chat("gpt-4o-mini")).await;
    assert_openai_error(res, 429, "insufficient_quota").await;
    let info = app.key_info(&g.api_key).await;
    assert_eq!(info["usage"]["period"], period);
    assert_eq!(info["usage"]["tokens"], 13);
    assert_eq!(info["remaining"]["tokens"], 7);
    let resets = info["usage"]["resets_at"].as_str().unwrap().to_owned();
    // One second before the reset: still spent.
    app.clock.set(start + reset_after - 1);
    let res = app.chat_completions(&g.api_key, &chat("gpt-4o-mini")).await;
    assert_openai_error(res, 429, "insufficient_quota").await;
    app.clock.set(start + reset_after);
    let res = app.chat_completions(&g.api_key, &chat("gpt-4o-mini")).await;
    assert_eq!(res.status(), 200, "{period} budget did not reset");
    let _ = res.bytes().await;
    let info = app.key_info(&g.api_key).await;
    assert_eq!(info["usage"]["period_start"].as_str().unwrap(), resets);
    assert_eq!(app.mock.request_count(), 2);
}

#[tokio::test]
async fn a_daily_budget_resets_at_midnight_utc() {
    budget_resets("day", MON_2026_11_30 + 12 * 3600, 12 * 3600).await;
}

#[tokio::test]
async fn a_weekly_budget_resets_on_monday_utc() {
    // Sunday 2026-11-29 12:00 → Monday 2026-11-30 00:00.
    budget_resets("week", MON_2026_11_30 - 12 * 3600, 12 * 3600).await;
}

#[tokio::test]
async fn a_monthly_budget_resets_on_the_first_utc() {
    // 2026-11-30 18:00 → 2026-12-01 00:00.
    budget_resets("month", MON_2026_11_30 + 18 * 3600, 6 * 3600).await;
}

#[tokio::test]
async fn a_restart_mid_period_keeps_the_count_without_double_counting() {
    let clock = manual_clock();
    clock.set(MON_2026_11_30 + 3600);
    let app = spawn_app_with_clock(clock.clone(), |_| {}).await;
    let g = app
        .limited_grant(json!({"budget": {"tokens": 30, "period": "month"}}))
        .await;
    for _ in 0..2 {
        let res = app.chat_completions(&g.api_key, &chat("gpt-4o-mini")).await;
        assert_eq!(res.status(), 200);
        let _ = res.bytes().await;
    }
    settled(&app, &g.grant_id, 2).await;
    let data = app.stop().await;
    let path = data.path().to_path_buf();
    // Written once at shutdown (or by the flusher before it), never twice.
    {
        let store = keygate_testkit::open_store_when_free(&path).await;
        let id = keygate_core::ids::GrantId::parse(&g.grant_id).unwrap();
        let total = store.usage_total(&id, 0, u32::MAX, None).await.unwrap();
        assert_eq!((total.requests, total.tokens()), (2, 26));
    }
    let app = spawn_app_with_clock(clock, |c| c.data_dir = Some(path)).await;
    let report = app.usage(&g.grant_id, "").await;
    assert_eq!(requests_in(&report), 2, "{report}");
    assert_eq!(report["summary"]["tokens"], 26);
    // 26 of 30 spent before the restart: the next request's reservation does not fit.
    let res = app.chat_completions(&g.api_key, &chat("gpt-4o-mini")).await;
    assert_openai_error(res, 429, "insufficient_quota").await;
    drop(data);
}

#[tokio::test]
async fn usage_reports_are_the_persons_own_and_check_their_dates() {
    let app = spawn_app().await;
    let mut b = app.browser();
    let me = b.signed_up("Reporter").await;
    let mine = app
        .create_grant(me["id"].as_str().unwrap(), "mine", None)
        .await;
    let mine = mine["grant"]["id"].as_str().unwrap();
    let other = app.enrolled_grant(None).await;
    let res = b.get(&format!("/api/grants/{mine}/usage")).await;
    assert_eq!(res.status(), 200);
    let report: Value = res.json().await.unwrap();
    assert_eq!(report["grant_id"], mine);
    assert_eq!(report["days"], json!([]));
    assert_eq!(report["remaining"], json!({"usd": null, "tokens": null}));
    let res = b
        .get(&format!("/api/grants/{}/usage", other.grant_id))
        .await;
    assert_openai_error(res, 404, "not_found").await;
    for (query, param) in [
        ("?from=2026-13-01", "from"),
        ("?to=yesterday", "to"),
        ("?from=2026-11-30&to=2026-11-01", "from"),
        ("?from=2024-01-01&to=2026-11-30", "from"),
    ] {
        let res = b.get(&format!("/api/grants/{mine}/usage{query}")).await;
        let body = assert_openai_error(res, 400, "invalid_request").await;
        assert_eq!(body["error"]["param"], param, "{query}");
    }
    let report = app.usage(mine, "?from=2026-11-01&to=2026-11-30").await;
    assert_eq!(
        (report["from"].clone(), report["to"].clone()),
        (json!("2026-11-01"), json!("2026-11-30"))
    );
}

/// Review finding: retrieving a stored answer shows the usage of a run already
/// counted; counting it again would double the person's usage (and spend a token
/// budget on nothing).
#[tokio::test]
async fn retrieving_a_stored_answer_counts_no_tokens_again() {
    let app = spawn_app().await;
    let g = app
        .enrolled_grant_with_scopes(&["inference", "stored"])
        .await;
    let res = app
        .v1(Method::GET, "/chat/completions/chatcmpl-stored", &g.api_key)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    let answer: Value = res.json().await.unwrap();
    assert_eq!(answer["usage"]["prompt_tokens"], 100, "{answer}");
    let report = settled(&app, &g.grant_id, 1).await;
    let row = only_row(&report);
    assert_eq!(row["prompt_tokens"], 0, "{report}");
    assert_eq!(row["completion_tokens"], 0, "{report}");
    assert_eq!(row["errors"], 0, "{report}");
}

/// Review finding: usage is read from the answer's plain bytes, so keygate asks the
/// upstream for no content coding at all (a request without `Accept-Encoding` lets a
/// server pick any), whatever the app asked for.
#[tokio::test]
async fn the_upstream_is_asked_for_an_uncompressed_answer() {
    let app = spawn_app().await;
    let g = app.enrolled_grant(None).await;
    let res = app
        .v1(Method::POST, "/chat/completions", &g.api_key)
        .header("x-mock-scenario", "echo-headers")
        .header("accept-encoding", "gzip, br")
        .json(&chat("gpt-4o-mini"))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    let v: Value = res.json().await.unwrap();
    assert_eq!(v["headers"]["accept-encoding"], "identity", "{v}");
}

/// Review finding: an app that hung up while OpenAI was still working on a JSON answer
/// (or a first-byte timeout) released its reservation and counted nothing, though
/// OpenAI runs and bills the request all the same — repeated, a budget held nothing.
/// It is counted at its worst case, estimated, like a JSON answer cut short.
#[tokio::test]
async fn a_request_abandoned_before_its_answer_counts_its_worst_case() {
    let app = spawn_app().await;
    let g = app
        .limited_grant(json!({"budget": {"tokens": 100000, "period": "day"}}))
        .await;
    let mut body = chat("gpt-4o-mini");
    body["max_tokens"] = json!(500);
    let sent = app
        .v1(Method::POST, "/chat/completions", &g.api_key)
        .header("x-mock-scenario", "slow-first-byte")
        .header("x-mock-delay-ms", "3000")
        .timeout(Duration::from_millis(300))
        .json(&body)
        .send()
        .await;
    assert!(sent.is_err(), "the app gave up before the answer");
    let report = settled(&app, &g.grant_id, 1).await;
    let row = only_row(&report);
    assert_eq!(row["completion_tokens"], 500, "{report}");
    assert!(row["prompt_tokens"].as_u64().unwrap() > 0, "{report}");
    assert_eq!(row["estimated"], 1, "{report}");
    assert!(nanos(&row["usd"]) > 0, "{report}");
}

/// Review finding: every made-up model name got a usage row of its own, kept for
/// good, though OpenAI refuses it at no cost: a leaked key could add rows without
/// end. A failed request on a model with no price is counted under no model.
#[tokio::test]
async fn failed_requests_on_unpriced_names_share_one_row() {
    let app = spawn_app().await;
    let g = app.enrolled_grant(None).await;
    for name in ["made-up-1", "made-up-2", "gpt-4o-mini"] {
        let res = app
            .v1(Method::POST, "/chat/completions", &g.api_key)
            .header("x-mock-scenario", "error-404")
            .json(&chat(name))
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 404);
        let _ = res.bytes().await;
    }
    let report = settled(&app, &g.grant_id, 3).await;
    let days = report["days"].as_array().unwrap();
    let models: Vec<&Value> = days.iter().map(|d| &d["model"]).collect();
    assert_eq!(models, [&Value::Null, &json!("gpt-4o-mini")], "{report}");
    assert_eq!(days[0]["errors"], 2, "{report}");
}
