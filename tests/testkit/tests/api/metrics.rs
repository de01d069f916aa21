//! `GET /metrics`: Prometheus text whose counters move as requests are made, behind
//! `metrics_token` when one is set, with no API key, grant id or person id in it.

use std::time::Duration;

use keygate_testkit::{ADMIN_KEY, FAKE_OPENAI_KEY, TestApp, spawn_app, spawn_app_with};
use serde_json::json;

use crate::helpers::{chat, chat_stream};

const TOKEN: &str = "metrics-token-for-tests-0123456789";

async fn scrape(app: &TestApp, token: Option<&str>) -> reqwest::Response {
    let mut req = app.client.get(app.url("/metrics"));
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    req.send().await.unwrap()
}

async fn text(app: &TestApp) -> String {
    let res = scrape(app, None).await;
    assert_eq!(res.status(), 200);
    assert!(
        res.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/plain; version=0.0.4")
    );
    res.text().await.unwrap()
}

/// The value of the series written exactly `series` (name and labels as printed).
fn value(text: &str, series: &str) -> f64 {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' '))
        .map_or(0.0, |v| v.trim().parse().unwrap())
}

/// Scrapes until `series` reaches `at_least` (usage is counted as the answer ends,
/// which may be just after the app has read it).
async fn when_at_least(app: &TestApp, series: &str, at_least: f64) -> String {
    for _ in 0..100 {
        let t = text(app).await;
        if value(&t, series) >= at_least {
            return t;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("{series} never reached {at_least}:\n{}", text(app).await);
}

#[tokio::test]
async fn counters_move_as_requests_are_made_and_no_id_or_secret_shows() {
    let app = spawn_app().await;
    let before = text(&app).await;
    let ok = r#"keygate_requests_total{class="2xx",group="v1",model="gpt-4o-mini"}"#;
    let other = r#"keygate_requests_total{class="2xx",group="v1",model="other"}"#;
    assert_eq!(value(&before, ok), 0.0, "pre-registered at 0");
    assert!(before.contains(ok));

    let g = app.enrolled_grant(None).await;
    let res = app.chat_completions(&g.api_key, &chat("gpt-4o-mini")).await;
    assert_eq!(res.status(), 200);
    res.bytes().await.unwrap();
    let res = app
        .chat_completions(&g.api_key, &chat_stream("gpt-4o-mini"))
        .await;
    assert_eq!(res.status(), 200);
    res.bytes().await.unwrap();
    // A model name that is not priced is `other`, never itself.
    let res = app
        .chat_completions(&g.api_key, &chat("my-private-model-name"))
        .await;
    res.bytes().await.unwrap();
    // A bad key: a 4xx of the v1 group without a model.
    let res = app.chat_completions("kg_nope", &chat("gpt-4o-mini")).await;
    assert_eq!(res.status(), 401);

    let t = when_at_least(
        &app,
        r#"keygate_tokens_total{kind="completion",model="gpt-4o-mini"}"#,
        1.0,
    )
    .await;
    assert_eq!(value(&t, ok), 2.0, "{t}");
    assert!(
        value(&t, other) + value(&t, &other.replace("2xx", "4xx")) >= 1.0,
        "{t}"
    );
    assert!(
        value(
            &t,
            r#"keygate_requests_total{class="4xx",group="v1",model="none"}"#
        ) >= 1.0
    );
    assert!(
        value(
            &t,
            r#"keygate_requests_total{class="2xx",group="admin",model="none"}"#
        ) >= 3.0
    );
    assert!(
        value(
            &t,
            r#"keygate_tokens_total{kind="prompt",model="gpt-4o-mini"}"#
        ) > 0.0
    );
    assert!(value(&t, r#"keygate_cost_usd_total{model="gpt-4o-mini"}"#) > 0.0);
    assert!(
        value(
            &t,
            r#"keygate_vault_unseals_total{result="ok",source="vault"}"#
        ) >= 2.0
    );
    assert!(
        value(
            &t,
            r#"keygate_upstream_first_byte_seconds_count{model="gpt-4o-mini"}"#
        ) >= 2.0
    );
    assert!(
        value(
            &t,
            r#"keygate_upstream_total_seconds_count{model="gpt-4o-mini"}"#
        ) >= 2.0
    );
    assert!(value(&t, r#"keygate_added_seconds_count{group="v1"}"#) >= 3.0);
    assert_eq!(value(&t, "keygate_open_streams"), 0.0, "{t}");

    for secret in [
        g.api_key.as_str(),
        g.grant_id.as_str(),
        g.user_id.as_str(),
        FAKE_OPENAI_KEY,
        ADMIN_KEY,
        "my-private-model-name",
    ] {
        assert!(!t.contains(secret), "{secret} in /metrics");
    }
}

#[tokio::test]
async fn limiter_refusals_are_counted_by_reason() {
    let app = spawn_app().await;
    let g = app.limited_grant(json!({"rpm": 1})).await;
    for _ in 0..2 {
        app.chat_completions(&g.api_key, &chat("gpt-4o-mini"))
            .await
            .bytes()
            .await
            .unwrap();
    }
    let t = text(&app).await;
    assert_eq!(
        value(
            &t,
            r#"keygate_limiter_refusals_total{limits="grant",reason="requests"}"#
        ),
        1.0,
        "{t}"
    );
}

#[tokio::test]
async fn the_token_protects_metrics() {
    let app = spawn_app_with(|c| c.metrics_token = Some(TOKEN.into())).await;
    assert_eq!(scrape(&app, None).await.status(), 401);
    assert_eq!(scrape(&app, Some("wrong")).await.status(), 401);
    assert_eq!(scrape(&app, Some(ADMIN_KEY)).await.status(), 401);
    let res = scrape(&app, Some(TOKEN)).await;
    assert_eq!(res.status(), 200);
    let body = res.text().await.unwrap();
    assert!(body.contains("keygate_requests_total"));
    assert!(!body.contains(TOKEN));
}

/// docs/grafana-keygate.json queries only metrics that `/metrics` serves.
#[tokio::test]
async fn the_grafana_dashboard_uses_served_names() {
    let app = spawn_app().await;
    // Series of a label vector appear once used: one answered request, one refused.
    let g = app.limited_grant(json!({"rpm": 1})).await;
    for _ in 0..2 {
        app.chat_completions(&g.api_key, &chat("gpt-4o-mini"))
            .await
            .bytes()
            .await
            .unwrap();
    }
    let served = when_at_least(
        &app,
        r#"keygate_tokens_total{kind="completion",model="gpt-4o-mini"}"#,
        1.0,
    )
    .await;
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../docs/grafana-keygate.json"
    );
    let dashboard = std::fs::read_to_string(path).unwrap();
    serde_json::from_str::<serde_json::Value>(&dashboard).unwrap();
    let mut names: Vec<&str> = dashboard
        .match_indices("keygate_")
        .map(|(i, _)| {
            let rest = &dashboard[i..];
            let end = rest
                .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                .unwrap_or(rest.len());
            &rest[..end]
        })
        .collect();
    names.sort_unstable();
    names.dedup();
    assert!(names.len() >= 10, "{names:?}");
    for name in names {
        assert!(
            served.contains(&format!("\n# TYPE {name} "))
                || served.contains(&format!("\n{name}{{"))
                || served.contains(&format!("\n{name} ")),
            "{name} is not served:\n{served}"
        );
    }
}
