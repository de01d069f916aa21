//! A grant's own limits, enforced before the upstream is called: rpm/tpm
//! (`rate_limit_exceeded` + `Retry-After`/`retry-after-ms`), concurrency, budgets
//! (`insufficient_quota`, `x-should-retry: false`), unpriced models, the
//! `x-ratelimit-*` headers, and budgets that hold under 64 concurrent clients.

use std::time::Duration;

use keygate_testkit::{TestApp, manual_clock, spawn_app, spawn_app_with_clock};
use reqwest::Method;
use serde_json::{Value, json};

use crate::helpers::{assert_openai_error, chat};

fn header<'a>(res: &'a reqwest::Response, name: &str) -> Option<&'a str> {
    res.headers().get(name).and_then(|v| v.to_str().ok())
}

/// Polls the grant's usage report until `done` holds (the last answer's account is
/// settled a moment after its last byte left); panics after 10 s.
pub async fn usage_when(app: &TestApp, grant_id: &str, done: impl Fn(&Value) -> bool) -> Value {
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let report = app.usage(grant_id, "").await;
        if done(&report) {
            return report;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "usage never settled: {report}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

pub fn requests_in(report: &Value) -> u64 {
    report["days"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["requests"].as_u64().unwrap())
        .sum()
}

#[tokio::test]
async fn rpm_refuses_with_retry_after_and_refills_over_the_minute() {
    let app = spawn_app_with_clock(manual_clock(), |_| {}).await;
    let g = app.limited_grant(json!({"rpm": 2})).await;
    let res = app.chat_completions(&g.api_key, &chat("gpt-4o-mini")).await;
    assert_eq!(res.status(), 200);
    assert_eq!(header(&res, "x-ratelimit-limit-requests"), Some("2"));
    assert_eq!(header(&res, "x-ratelimit-remaining-requests"), Some("1"));
    assert_eq!(header(&res, "x-ratelimit-reset-requests"), Some("30s"));
    assert!(header(&res, "x-ratelimit-limit-tokens").is_none());
    assert_eq!(
        app.chat_completions(&g.api_key, &chat("gpt-4o-mini"))
            .await
            .status(),
        200
    );
    let res = app.chat_completions(&g.api_key, &chat("gpt-4o-mini")).await;
    assert_eq!(header(&res, "retry-after"), Some("30"));
    assert_eq!(header(&res, "retry-after-ms"), Some("30000"));
    assert_eq!(header(&res, "x-ratelimit-remaining-requests"), Some("0"));
    assert_eq!(header(&res, "x-ratelimit-reset-requests"), Some("1m0s"));
    let body = assert_openai_error(res, 429, "rate_limit_exceeded").await;
    let message = body["error"]["message"].as_str().unwrap();
    assert!(message.contains("requests per minute"), "{message}");
    assert!(message.contains("limit 2"), "{message}");
    assert_eq!(app.mock.request_count(), 2, "the upstream was not called");
    app.clock.advance(30);
    assert_eq!(
        app.chat_completions(&g.api_key, &chat("gpt-4o-mini"))
            .await
            .status(),
        200
    );
    assert_eq!(app.mock.request_count(), 3);
}

#[tokio::test]
async fn ratelimit_headers_replace_the_upstreams_only_for_limited_grants() {
    let app = spawn_app().await;
    // The mock's 429 carries OpenAI's own x-ratelimit-* for the whole organization.
    let free = app.enrolled_grant(None).await;
    let res = app
        .v1(Method::POST, "/chat/completions", &free.api_key)
        .header("x-mock-scenario", "error-429")
        .json(&chat("gpt-4o-mini"))
        .send()
        .await
        .unwrap();
    assert_eq!(header(&res, "x-ratelimit-limit-requests"), Some("500"));
    let limited = app.limited_grant(json!({"rpm": 60, "tpm": 10000})).await;
    let res = app
        .v1(Method::POST, "/chat/completions", &limited.api_key)
        .header("x-mock-scenario", "error-429")
        .json(&chat("gpt-4o-mini"))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 429);
    assert_eq!(header(&res, "x-ratelimit-limit-requests"), Some("60"));
    assert_eq!(header(&res, "x-ratelimit-remaining-requests"), Some("59"));
    assert_eq!(header(&res, "x-ratelimit-limit-tokens"), Some("10000"));
    assert!(header(&res, "x-ratelimit-reset-tokens").is_some());
    assert_eq!(
        res.headers()
            .get_all("x-ratelimit-limit-requests")
            .iter()
            .count(),
        1
    );
}

#[tokio::test]
async fn a_request_larger_than_tpm_never_fits() {
    let app = spawn_app().await;
    let g = app.limited_grant(json!({"tpm": 50})).await;
    let mut body = chat("gpt-4o-mini");
    body["max_tokens"] = json!(100);
    let res = app.chat_completions(&g.api_key, &body).await;
    assert!(header(&res, "retry-after").is_none());
    assert_eq!(header(&res, "x-should-retry"), Some("false"));
    let body = assert_openai_error(res, 429, "rate_limit_exceeded").await;
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("tokens per minute")
    );
    assert_eq!(app.mock.request_count(), 0);
}

#[tokio::test]
async fn tpm_counts_what_answers_really_used() {
    let app = spawn_app_with_clock(manual_clock(), |_| {}).await;
    let g = app.limited_grant(json!({"tpm": 100})).await;
    let mut body = chat("gpt-4o-mini");
    body["max_tokens"] = json!(60);
    // The answer uses all 60 output tokens: what is left cannot hold another 60+.
    let res = app
        .v1(Method::POST, "/chat/completions", &g.api_key)
        .header("x-mock-completion-tokens", "60")
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    let _ = res.bytes().await;
    usage_when(&app, &g.grant_id, |r| requests_in(r) == 1).await;
    // Settled at 8 + 60 = 68 tokens: 32 left, and the next request reserves 60 + its
    // prompt.
    let res = app.chat_completions(&g.api_key, &body).await;
    let retry_ms: u64 = header(&res, "retry-after-ms").unwrap().parse().unwrap();
    assert!(retry_ms > 0 && retry_ms <= 60_000, "{retry_ms}");
    let body_json = assert_openai_error(res, 429, "rate_limit_exceeded").await;
    assert!(
        body_json["error"]["message"]
            .as_str()
            .unwrap()
            .contains("tokens per minute")
    );
    assert_eq!(app.mock.request_count(), 1);
    app.clock.advance(60);
    assert_eq!(app.chat_completions(&g.api_key, &body).await.status(), 200);
}

#[tokio::test]
async fn concurrency_cap_refuses_with_retry_after_one() {
    let app = spawn_app().await;
    let g = app.limited_grant(json!({"max_concurrency": 2})).await;
    let slow = |app: &TestApp| {
        app.v1(Method::POST, "/chat/completions", &g.api_key)
            .header("x-mock-scenario", "stall-mid-stream")
            .header("x-mock-delay-ms", "30000")
            .json(&json!({"model": "gpt-4o-mini", "stream": true,
                          "messages": [{"role": "user", "content": "Hi"}]}))
            .send()
    };
    let a = slow(&app).await.unwrap();
    let b = slow(&app).await.unwrap();
    assert_eq!((a.status().as_u16(), b.status().as_u16()), (200, 200));
    let res = app.chat_completions(&g.api_key, &chat("gpt-4o-mini")).await;
    assert_eq!(header(&res, "retry-after"), Some("1"));
    assert_openai_error(res, 429, "concurrency_limit_exceeded").await;
    assert_eq!(app.mock.request_count(), 2);
    // An app that goes away gives its place back.
    drop(a);
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let res = app.chat_completions(&g.api_key, &chat("gpt-4o-mini")).await;
        if res.status() == 200 {
            break;
        }
        assert_eq!(res.status(), 429);
        assert!(
            std::time::Instant::now() < deadline,
            "place never given back"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    drop(b);
}

#[tokio::test]
async fn concurrency_cap_is_exact_under_64_clients() {
    let app = spawn_app().await;
    let g = app.limited_grant(json!({"max_concurrency": 4})).await;
    let mut tasks = Vec::new();
    for _ in 0..64 {
        let req = app
            .v1(Method::POST, "/chat/completions", &g.api_key)
            .header("x-mock-scenario", "slow-first-byte")
            .header("x-mock-delay-ms", "300")
            .json(&chat("gpt-4o-mini"));
        tasks.push(tokio::spawn(async move {
            let res = req.send().await.unwrap();
            let status = res.status().as_u16();
            let body: Value = res.json().await.unwrap();
            (status, body)
        }));
    }
    let mut ok = 0;
    let mut refused = 0;
    for t in tasks {
        let (status, body) = t.await.unwrap();
        match status {
            200 => ok += 1,
            429 => {
                assert_eq!(body["error"]["code"], "concurrency_limit_exceeded");
                refused += 1;
            }
            other => panic!("unexpected {other}: {body}"),
        }
    }
    assert_eq!(ok + refused, 64);
    assert!(refused > 0, "the cap never bit");
    assert_eq!(app.mock.request_count(), ok);
    assert_eq!(
        app.mock.max_concurrent(),
        4,
        "at most 4 at once, and 4 reached"
    );
}

#[tokio::test]
async fn a_usd_budget_refuses_an_unpriced_model_naming_it() {
    let app = spawn_app().await;
    let g = app
        .limited_grant(json!({"budget": {"usd": 1, "period": "month"}}))
        .await;
    let res = app
        .chat_completions(&g.api_key, &chat("my-private-finetune"))
        .await;
    let body = assert_openai_error(res, 403, "model_not_priced").await;
    assert_eq!(body["error"]["param"], "model");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("my-private-finetune")
    );
    // A model-running call naming no model cannot be priced either.
    let res = app
        .chat_completions(&g.api_key, &json!({"messages": []}))
        .await;
    assert_openai_error(res, 403, "model_not_priced").await;
    assert_eq!(app.mock.request_count(), 0);
    // A call that runs no model costs nothing by the token.
    let res = app
        .v1(Method::GET, "/models", &g.api_key)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
}

/// Per-token prices of gpt-4o-mini in nanodollars: $0.15 and $0.60 per million.
const MINI_IN: u64 = 150;
const MINI_OUT: u64 = 600;

async fn hammer(app: &TestApp, api_key: &str, body: Value, completion: u64) -> (u64, u64) {
    let mut tasks = Vec::new();
    for _ in 0..64 {
        let req = app
            .v1(Method::POST, "/chat/completions", api_key)
            .header("x-mock-scenario", "slow-first-byte")
            .header("x-mock-delay-ms", "200")
            .header("x-mock-completion-tokens", completion.to_string())
            .json(&body);
        tasks.push(tokio::spawn(async move {
            let res = req.send().await.unwrap();
            let status = res.status().as_u16();
            let should_retry = res
                .headers()
                .get("x-should-retry")
                .map(|v| v.to_str().unwrap().to_owned());
            let body: Value = res.json().await.unwrap();
            (status, should_retry, body)
        }));
    }
    let (mut ok, mut quota) = (0, 0);
    for t in tasks {
        let (status, should_retry, body) = t.await.unwrap();
        match status {
            200 => ok += 1,
            429 => {
                assert_eq!(body["error"]["code"], "insufficient_quota", "{body}");
                assert_eq!(should_retry.as_deref(), Some("false"));
                quota += 1;
            }
            other => panic!("unexpected {other}: {body}"),
        }
    }
    (ok, quota)
}

#[tokio::test]
async fn a_usd_budget_holds_under_64_concurrent_clients_with_max_tokens() {
    let app = spawn_app().await;
    // Each answer: 8 prompt + 100 completion tokens = 61 200 nanodollars; the
    // reservation is somewhat more (the estimated prompt + max_tokens 100).
    let budget_nanos: u64 = 1_000_000; // $0.001: ~16 answers
    let g = app
        .limited_grant(json!({"budget": {"usd": 0.001, "period": "day"}}))
        .await;
    let mut body = chat("gpt-4o-mini");
    body["max_tokens"] = json!(100);
    let (ok, quota) = hammer(&app, &g.api_key, body, 100).await;
    assert!(quota > 0, "the budget never bit");
    assert!(ok > 0);
    assert_eq!(
        app.mock.request_count() as u64,
        ok,
        "refused ones never reached OpenAI"
    );
    let report = usage_when(&app, &g.grant_id, |r| requests_in(r) == ok).await;
    let spent = (report["summary"]["usd"].as_f64().unwrap() * 1e9).round() as u64;
    assert_eq!(spent, ok * (8 * MINI_IN + 100 * MINI_OUT), "{report}");
    assert!(spent <= budget_nanos, "overspent: {spent} > {budget_nanos}");
    let info = app.key_info(&g.api_key).await;
    assert!(info["remaining"]["usd"].as_f64().unwrap() >= 0.0);
}

#[tokio::test]
async fn without_max_tokens_the_overshoot_is_bounded_by_what_was_in_flight() {
    let app = spawn_app().await;
    let g = app
        .limited_grant(json!({"budget": {"usd": 0.001, "period": "day"}}))
        .await;
    // No max_tokens and no plan default: only the prompt is reserved; each answer
    // then produces 100 output tokens nobody reserved.
    let (ok, _quota) = hammer(&app, &g.api_key, chat("gpt-4o-mini"), 100).await;
    let report = usage_when(&app, &g.grant_id, |r| requests_in(r) == ok).await;
    let spent = (report["summary"]["usd"].as_f64().unwrap() * 1e9).round() as u64;
    let per_answer_unreserved = 100 * MINI_OUT;
    let bound = 1_000_000 + 64 * per_answer_unreserved;
    assert!(spent <= bound, "{spent} > {bound}");
    assert!(spent > 0);
}

#[tokio::test]
async fn a_token_budget_refuses_with_its_reset_time() {
    let app = spawn_app_with_clock(manual_clock(), |_| {}).await;
    let g = app
        .limited_grant(json!({"budget": {"tokens": 20, "period": "day"}}))
        .await;
    // 8 prompt + 5 completion = 13 tokens.
    let res = app.chat_completions(&g.api_key, &chat("gpt-4o-mini")).await;
    assert_eq!(res.status(), 200);
    let _ = res.bytes().await;
    usage_when(&app, &g.grant_id, |r| requests_in(r) == 1).await;
    let res = app.chat_completions(&g.api_key, &chat("gpt-4o-mini")).await;
    assert_eq!(header(&res, "x-should-retry"), Some("false"));
    let body = assert_openai_error(res, 429, "insufficient_quota").await;
    let message = body["error"]["message"].as_str().unwrap();
    assert!(message.contains("20 tokens per day"), "{message}");
    assert!(message.contains("T00:00:00Z"), "{message}");
    assert_eq!(app.mock.request_count(), 1);
}

#[tokio::test]
async fn a_models_overrides_apply_on_top_of_the_grants_limits() {
    let app = spawn_app().await;
    let g = app
        .limited_grant(json!({"rpm": 100, "models": {"gpt-4o": {"rpm": 1}}}))
        .await;
    assert_eq!(
        app.chat_completions(&g.api_key, &chat("gpt-4o"))
            .await
            .status(),
        200
    );
    let res = app.chat_completions(&g.api_key, &chat("gpt-4o")).await;
    assert_openai_error(res, 429, "rate_limit_exceeded").await;
    let res = app.chat_completions(&g.api_key, &chat("gpt-4o-mini")).await;
    assert_eq!(res.status(), 200);
    assert_eq!(header(&res, "x-ratelimit-limit-requests"), Some("100"));
}

#[tokio::test]
async fn limits_changed_in_the_store_apply_to_the_next_request() {
    let app = spawn_app().await;
    let g = app.enrolled_grant(None).await;
    assert_eq!(
        app.chat_completions(&g.api_key, &chat("gpt-4o-mini"))
            .await
            .status(),
        200
    );
    app.set_limits(
        &g.grant_id,
        json!({"budget": {"usd": 1, "period": "day"}}),
        None,
    )
    .await;
    let res = app.chat_completions(&g.api_key, &chat("unpriced")).await;
    assert_openai_error(res, 403, "model_not_priced").await;
}

#[tokio::test]
async fn the_plans_default_max_tokens_is_reserved_when_the_request_sets_none() {
    let app = keygate_testkit::spawn_app_with(|c| {
        let plan: keygate_core::limits::Plan = serde_json::from_value(json!({
            "budget": {"usd": 0.0001, "period": "day"},
            "default_max_tokens": 1000
        }))
        .unwrap();
        c.plans = Some([("tiny".to_owned(), plan)].into());
    })
    .await;
    let g = app
        .enrolled_grant_with(&json!({"name": "planned", "plan": "tiny"}))
        .await;
    // 1000 output tokens at $0.60 per million is $0.0006: more than the $0.0001 budget.
    let res = app.chat_completions(&g.api_key, &chat("gpt-4o-mini")).await;
    assert_openai_error(res, 429, "insufficient_quota").await;
    // A request that caps its own output fits.
    let mut body = chat("gpt-4o-mini");
    body["max_tokens"] = json!(10);
    assert_eq!(app.chat_completions(&g.api_key, &body).await.status(), 200);
    assert_eq!(app.mock.request_count(), 1);
}

/// Review finding: `n` answers may each be as long as `max_tokens` (OpenAI bills them
/// all), so the reservation counts `n` of them; it counted one.
#[tokio::test]
async fn several_choices_reserve_each_ones_output() {
    let app = spawn_app().await;
    let g = app
        .limited_grant(json!({"budget": {"tokens": 1000, "period": "day"}}))
        .await;
    let mut body = chat("gpt-4o-mini");
    body["max_tokens"] = json!(300);
    body["n"] = json!(4);
    let res = app.chat_completions(&g.api_key, &body).await;
    assert_openai_error(res, 429, "insufficient_quota").await;
    assert_eq!(app.mock.request_count(), 0);
    body["n"] = json!(3);
    let res = app.chat_completions(&g.api_key, &body).await;
    assert_eq!(res.status(), 200);
}

/// Review finding: `{"max_tokens": 100000, "max_tokens": 10}` reserved the last copy
/// (serde's pick), while a parser that takes the first would let the answer run ten
/// thousand times longer. A key policy reads, sent twice, is refused.
#[tokio::test]
async fn a_key_policy_reads_sent_twice_is_refused() {
    let app = spawn_app().await;
    let g = app
        .limited_grant(json!({"budget": {"tokens": 1000, "period": "day"}}))
        .await;
    for body in [
        r#"{"model":"gpt-4o-mini","messages":[{"role":"user","content":"hi"}],"max_tokens":100000,"max_tokens":10}"#,
        r#"{"model":"gpt-4o-mini","messages":[{"role":"user","content":"hi"}],"stream":false,"stream":true}"#,
        r#"{"model":"gpt-4o-mini","messages":[{"role":"user","content":"hi"}],"n":1,"n":50}"#,
    ] {
        let res = app
            .v1(Method::POST, "/chat/completions", &g.api_key)
            .header("content-type", "application/json")
            .body(body)
            .send()
            .await
            .unwrap();
        let err = assert_openai_error(res, 400, "invalid_request").await;
        assert!(
            err["error"]["message"]
                .as_str()
                .unwrap()
                .contains("more than once"),
            "{err}"
        );
    }
    assert_eq!(app.mock.request_count(), 0);
}

/// Review finding: `service_tier: "priority"` costs up to twice the standard price the
/// table holds, so a USD budget could be overspent twofold; keygate has no price for
/// it and refuses it like an unpriced model. Flex (cheaper) and auto pass.
#[tokio::test]
async fn a_usd_budget_refuses_a_dearer_service_tier() {
    let app = spawn_app().await;
    let g = app
        .limited_grant(json!({"budget": {"usd": 5.0, "period": "month"}}))
        .await;
    let mut body = chat("gpt-4o-mini");
    body["service_tier"] = json!("priority");
    let res = app.chat_completions(&g.api_key, &body).await;
    let err = assert_openai_error(res, 403, "model_not_priced").await;
    assert_eq!(err["error"]["param"], "service_tier", "{err}");
    assert_eq!(app.mock.request_count(), 0);
    for tier in ["flex", "auto"] {
        body["service_tier"] = json!(tier);
        let res = app.chat_completions(&g.api_key, &body).await;
        assert_eq!(res.status(), 200, "{tier}");
    }
}
