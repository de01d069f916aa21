//! A running test environment for test suites outside Rust (the official Python and
//! Node SDKs, the browser tests): a mock OpenAI upstream, keygate on port 0 in front of
//! it, and a few grants. Prints one JSON line describing it, then runs until stdin
//! closes or SIGTERM/SIGINT.
//!
//! keygate's clock is the system clock plus an offset, which the suites move forward
//! through `control_url` (`POST {control_url}/advance?secs=N` → 204; see
//! `keygate_testkit::clock_control`): real requests take real time, and a test can still
//! get past a time limit such as the fresh window after a passkey check. Moving it is
//! for the whole testenv, so a test that moves it puts it back (`POST {control_url}/reset`).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::BTreeMap;
use std::io::{Read, Write};

use keygate_core::calendar::Period;
use keygate_core::limits::{Budget, Plan};
use keygate_core::money::Usd;
use keygate_core::time::Clock;
use keygate_testkit::{ADMIN_KEY, FAKE_OPENAI_KEY, clock_control, spawn_app_with_clock};
use serde_json::json;

const MAX_BODY_BYTES: u64 = 1024 * 1024;
/// The operator's (fake) OpenAI key, lent by the `lent` plan.
const OPERATOR_KEY: &str = "sk-proj-testenv-operator-key-000000000000OPER";

#[tokio::main]
async fn main() {
    let app = spawn_app_with_clock(Clock::system_offset(), |c| {
        c.max_body_bytes = Some(MAX_BODY_BYTES);
        // The SDK suites make several requests per test; two workers like production.
        c.workers = Some(2);
        // Whole suites sign up and sign in many people from this one loopback address;
        // the per-address throttles have their own tests (api/anonymous.rs).
        c.auth_rate_per_minute = Some(100_000);
        c.auth_burst = Some(100_000);
        // The plan the browser suite's apps ask for (tests/browser/connect*.test.mjs): its
        // limits are the ceiling the consent page shows and lets the person lower.
        c.plans = Some(BTreeMap::from([
            (
                "starter".to_string(),
                Plan {
                    rpm: Some(60),
                    max_concurrency: Some(4),
                    budget: Some(Budget {
                        usd: Usd::from_dollars(5.0),
                        tokens: None,
                        period: Period::Month,
                    }),
                    ..Plan::default()
                },
            ),
            (
                // Lends the operator's key (set below) to people without one
                // (tests/browser/connect-operator.test.mjs).
                "lent".to_string(),
                Plan {
                    use_operator_key: true,
                    ..Plan::default()
                },
            ),
        ]));
    })
    .await;
    let res = app
        .admin(reqwest::Method::PUT, "/admin/operator-key")
        .json(&json!({"api_key": OPERATOR_KEY}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 204, "operator key");
    let all = app.enrolled_grant(None).await;
    let restricted = app.enrolled_grant(Some(&["gpt-4o-mini"])).await;
    let revoked = app.enrolled_grant(None).await;
    assert_eq!(app.revoke(&revoked.grant_id).await.status(), 204);
    let lonely = app.create_user("No Key Yet").await;
    let not_enrolled = app.create_grant(&lonely, "app", None).await;

    // The demo app on its own origin (127.0.0.1 vs keygate's localhost).
    let public = url::Url::parse(&app.address).unwrap();
    let (demo, demo_addr) =
        keygate_server::demo::build("127.0.0.1:0".parse().unwrap(), &public).expect("demo server");
    tokio::spawn(demo);
    let (control, control_addr) = clock_control::serve(app.clock.clone()).expect("clock control");
    let control_handle = control.handle();
    tokio::spawn(control);

    let mock = app.mock.base_url();
    let env = json!({
        "base_url": app.base_url,
        "public_url": app.address,
        "mock_url": mock.trim_end_matches("/v1"),
        "demo_url": format!("http://{demo_addr}"),
        "control_url": format!("http://{control_addr}"),
        "admin_key": ADMIN_KEY,
        // The (fake) OpenAI key the mock accepts, for suites that make their own people
        // and grants through the admin API (grants with limits: tests/sdk).
        "openai_key": FAKE_OPENAI_KEY,
        // The operator's key, which the `lent` plan lends to people without one.
        "operator_key": OPERATOR_KEY,
        "max_body_bytes": MAX_BODY_BYTES,
        "keys": {
            "all": all.api_key,
            "restricted": restricted.api_key,
            "revoked": revoked.api_key,
            "not_enrolled": not_enrolled["api_key"],
        },
    });
    let mut out = std::io::stdout().lock();
    writeln!(out, "{env}").unwrap();
    out.flush().unwrap();
    drop(out);

    let stdin_closed = tokio::task::spawn_blocking(|| {
        let mut sink = Vec::new();
        let _ = std::io::stdin().read_to_end(&mut sink);
    });
    let mut term =
        tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).unwrap();
    tokio::select! {
        _ = stdin_closed => {}
        _ = term.recv() => {}
        _ = tokio::signal::ctrl_c() => {}
    }
    control_handle.stop(false).await;
    app.stop().await;
}
