//! Hostile HTTP at the wire: malformed, oversized and smuggling-shaped heads sent over
//! a raw socket, invalid UTF-8 and deeply nested JSON, and `/v1` targets that try to
//! name another host. Each is refused with a clear status (an OpenAI-shaped body
//! wherever a handler runs), the connection is closed when the framing cannot be
//! trusted, nothing reaches the upstream that should not, and a bystander is served
//! throughout and loses nothing (docs/SECURITY.md, "Hostile input").

use std::time::Duration;

use keygate_testkit::mock_openai::MockOpenAi;
use keygate_testkit::raw::{RawConn, exchange};
use keygate_testkit::{ADMIN_KEY, TestApp, spawn_app};
use reqwest::Method;
use serde_json::json;

use crate::helpers::assert_openai_error;

const WAIT: Duration = Duration::from_secs(5);

/// The mock's requests that the bystander did not make (it only calls chat).
fn others(app: &TestApp) -> Vec<String> {
    app.mock
        .requests()
        .into_iter()
        .filter(|r| r.path != "/v1/chat/completions")
        .map(|r| format!("{} {}", r.method, r.path))
        .collect()
}

fn body_of(text: &str) -> &str {
    text.split_once("\r\n\r\n").map_or("", |(_, b)| b)
}

#[tokio::test]
async fn malformed_request_heads_are_400_and_the_connection_closed() {
    let app = spawn_app().await;
    let g = app.enrolled_grant(None).await;
    let bystander = app.bystander().await;
    let key = &g.api_key;
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("garbage request line", b"HELLO THERE\r\n\r\n".to_vec()),
        ("no version", b"GET /v1/models\r\nHost: x\r\n\r\n".to_vec()),
        ("bad method token", b"G(T /healthz HTTP/1.1\r\nHost: x\r\n\r\n".to_vec()),
        ("header without a colon", b"GET /healthz HTTP/1.1\r\nHost: x\r\nNoColon\r\n\r\n".to_vec()),
        ("space in a header name", b"GET /healthz HTTP/1.1\r\nHost: x\r\nBad Name: v\r\n\r\n".to_vec()),
        ("NUL in a header value", b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-A: a\x00b\r\n\r\n".to_vec()),
        ("bare CR in a header value", b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-A: a\rb\r\n\r\n".to_vec()),
        ("obs-fold continuation", b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-A: a\r\n b\r\n\r\n".to_vec()),
        ("no Host in HTTP/1.1", b"GET /healthz HTTP/1.1\r\nX-A: a\r\n\r\n".to_vec()),
        ("two Hosts", b"GET /healthz HTTP/1.1\r\nHost: x\r\nHost: y\r\n\r\n".to_vec()),
        (
            "a key with a bad Content-Length",
            format!("POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {key}\r\nContent-Length: 1x\r\n\r\n{{}}").into_bytes(),
        ),
    ];
    for (name, request) in cases {
        let mut conn = exchange(app.port, &request, WAIT).await;
        assert_eq!(conn.status(), Some(400), "{name}: {}", conn.text());
        assert!(conn.closed_within(WAIT).await, "{name}: left open");
        assert_eq!(conn.responses(), 1, "{name}");
    }
    assert_eq!(others(&app), Vec::<String>::new());
    bystander.finish(&app, 5).await;
}

#[tokio::test]
async fn oversized_heads_are_431_and_the_connection_closed() {
    let app = spawn_app().await;
    let bystander = app.bystander().await;
    let big_value = format!(
        "GET /healthz HTTP/1.1\r\nHost: x\r\nX-Big: {}\r\n\r\n",
        "a".repeat(200 * 1024)
    );
    let many: String = (0..100).map(|i| format!("X-H{i}: v\r\n")).collect();
    let many = format!("GET /healthz HTTP/1.1\r\nHost: x\r\n{many}\r\n");
    let long_target = format!(
        "GET /v1/models?q={} HTTP/1.1\r\nHost: x\r\n\r\n",
        "a".repeat(200 * 1024)
    );
    for (name, request) in [
        ("a 200 KiB header", big_value),
        ("100 headers", many),
        ("a 200 KiB target", long_target),
    ] {
        let mut conn = exchange(app.port, request.as_bytes(), WAIT).await;
        assert_eq!(conn.status(), Some(431), "{name}: {}", conn.text());
        assert!(conn.closed_within(WAIT).await, "{name}: left open");
    }
    // Big but within the limits (96 headers, 128 KiB head) is served.
    let fine: String = (0..90)
        .map(|i| format!("X-H{i}: {}\r\n", "v".repeat(1000)))
        .collect();
    let conn = exchange(
        app.port,
        format!("GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n{fine}\r\n").as_bytes(),
        WAIT,
    )
    .await;
    assert_eq!(conn.status(), Some(200), "{}", conn.text());
    bystander.finish(&app, 5).await;
}

/// HTTP/1.1 request smuggling: every head whose body length two parsers could read
/// differently is refused before any handler runs, the connection is closed, and the
/// request hidden behind it never runs (it would reach the upstream with the key).
#[tokio::test]
async fn smuggling_shaped_heads_are_400_and_the_hidden_request_never_runs() {
    let app = spawn_app().await;
    let g = app.enrolled_grant(None).await;
    let bystander = app.bystander().await;
    let key = &g.api_key;
    let hidden = format!(
        "GET /v1/models?smuggled=1 HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {key}\r\n\r\n"
    );
    let post = format!(
        "POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {key}\r\nContent-Type: application/json\r\n"
    );
    let chunked_end = format!("0\r\n\r\n{hidden}");
    let cases: Vec<(&str, String)> = vec![
        (
            "CL then TE",
            format!(
                "{post}Content-Length: {}\r\nTransfer-Encoding: chunked\r\n\r\n{chunked_end}",
                chunked_end.len()
            ),
        ),
        (
            "TE then CL",
            format!("{post}Transfer-Encoding: chunked\r\nContent-Length: 4\r\n\r\n{chunked_end}"),
        ),
        (
            "two different CLs",
            format!(
                "{post}Content-Length: 0\r\nContent-Length: {}\r\n\r\n{hidden}",
                hidden.len()
            ),
        ),
        (
            "two equal CLs",
            format!("{post}Content-Length: 0\r\nContent-Length: 0\r\n\r\n{hidden}"),
        ),
        (
            "a CL list",
            format!("{post}Content-Length: 0, {}\r\n\r\n{hidden}", hidden.len()),
        ),
        (
            "a signed CL",
            format!("{post}Content-Length: +0\r\n\r\n{hidden}"),
        ),
        (
            "two TEs",
            format!(
                "{post}Transfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n{chunked_end}"
            ),
        ),
        (
            "TE list",
            format!("{post}Transfer-Encoding: gzip, chunked\r\n\r\n{chunked_end}"),
        ),
        (
            "TE not chunked",
            format!("{post}Transfer-Encoding: xchunked\r\n\r\n{chunked_end}"),
        ),
        (
            "space before the colon",
            format!("{post}Transfer-Encoding : chunked\r\n\r\n{chunked_end}"),
        ),
        (
            "folded TE",
            format!("{post}Transfer-Encoding:\r\n chunked\r\n\r\n{chunked_end}"),
        ),
        (
            "TE in HTTP/1.0",
            format!(
                "POST /v1/chat/completions HTTP/1.0\r\nHost: x\r\nAuthorization: Bearer {key}\r\nTransfer-Encoding: chunked\r\n\r\n{chunked_end}"
            ),
        ),
    ];
    for (name, request) in cases {
        let mut conn = exchange(app.port, request.as_bytes(), WAIT).await;
        assert_eq!(conn.status(), Some(400), "{name}: {}", conn.text());
        assert!(conn.closed_within(WAIT).await, "{name}: left open");
        assert_eq!(conn.responses(), 1, "{name}: {}", conn.text());
    }
    assert_eq!(others(&app), Vec::<String>::new(), "a hidden request ran");
    assert!(
        app.mock
            .requests()
            .iter()
            .all(|r| !r.path.contains("smuggled"))
    );
    bystander.finish(&app, 5).await;
}

/// A chunked body whose framing breaks inside the body (a chunk size that overflows,
/// a chunk longer than announced): the proxy never forwards it, and what follows it
/// on the connection is never read as a request.
#[tokio::test]
async fn a_broken_chunked_body_is_refused_and_nothing_after_it_runs() {
    let app = spawn_app().await;
    let g = app.enrolled_grant(None).await;
    let bystander = app.bystander().await;
    let key = &g.api_key;
    let hidden = format!(
        "GET /v1/models?smuggled=1 HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {key}\r\n\r\n"
    );
    let post = format!(
        "POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {key}\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n"
    );
    for (name, body) in [
        (
            "overflowing size",
            format!("fffffffffffffffffff\r\n{{}}\r\n0\r\n\r\n{hidden}"),
        ),
        (
            "longer than announced",
            format!("2\r\n{{\"model\":1}}\r\n0\r\n\r\n{hidden}"),
        ),
        ("not hex", format!("zz\r\n{{}}\r\n0\r\n\r\n{hidden}")),
    ] {
        let mut conn = exchange(app.port, format!("{post}{body}").as_bytes(), WAIT).await;
        assert_eq!(conn.status(), Some(400), "{name}: {}", conn.text());
        assert!(conn.closed_within(WAIT).await, "{name}: left open");
        assert!(conn.responses() <= 1, "{name}: {}", conn.text());
    }
    assert_eq!(others(&app), Vec::<String>::new(), "a hidden request ran");
    assert_eq!(
        app.mock
            .requests()
            .iter()
            .filter(|r| r.body.len() < 20)
            .count(),
        0,
        "a broken body reached the upstream"
    );
    bystander.finish(&app, 5).await;
}

#[tokio::test]
async fn invalid_utf8_and_deeply_nested_json_are_400_or_openais_to_refuse() {
    let app = spawn_app().await;
    let plain = app.enrolled_grant(None).await;
    let limited = app.limited_grant(json!({"tpm": 1_000_000})).await;
    let models = app.enrolled_grant(Some(&["gpt-4o-mini"])).await;
    let bystander = app.bystander().await;
    let post = |key: &str, body: Vec<u8>| {
        app.v1(Method::POST, "/chat/completions", key)
            .header("content-type", "application/json")
            .body(body)
            .send()
    };

    // Invalid UTF-8 inside a JSON string: no JSON parser accepts it.
    let mut bad = br#"{"model":"gpt-4o-mini","messages":[{"role":"user","content":""#.to_vec();
    bad.extend_from_slice(b"\xff\xfe\xc0\xaf");
    bad.extend_from_slice(br#""}]}"#);
    for key in [&plain.api_key, &limited.api_key, &models.api_key] {
        let res = post(key, bad.clone()).await.unwrap();
        let err = assert_openai_error(res, 400, "invalid_request").await;
        assert!(
            err["error"]["message"].as_str().unwrap().contains("UTF-8"),
            "{err}"
        );
    }
    let mut bad_model = br#"{"model":"gpt-4o-mini"#.to_vec();
    bad_model.extend_from_slice(b"\xff\"}");
    assert_openai_error(
        post(&plain.api_key, bad_model).await.unwrap(),
        400,
        "invalid_request",
    )
    .await;
    assert!(
        app.mock
            .requests()
            .iter()
            .all(|r| !r.body.windows(2).any(|w| w == b"\xff\xfe"))
    );

    // 100,000 levels of arrays (~200 KB): keygate reads `model` and `stream` without
    // recursing; a grant whose limits need the prompt's tokens parses it all and is
    // refused at serde_json's depth limit, as is a model-limited grant's `tools`.
    let depth = 100_000;
    let nested = |field: &str| {
        format!(
            r#"{{"model":"gpt-4o-mini","messages":[{{"role":"user","content":"hi"}}],"{field}":{}{}}}"#,
            "[".repeat(depth),
            "]".repeat(depth)
        )
        .into_bytes()
    };
    assert_openai_error(
        post(&limited.api_key, nested("x")).await.unwrap(),
        400,
        "invalid_request",
    )
    .await;
    assert_openai_error(
        post(&models.api_key, nested("tools")).await.unwrap(),
        400,
        "invalid_request",
    )
    .await;
    let res = post(&plain.api_key, nested("x")).await.unwrap();
    // Passed on whole: OpenAI decides (the mock, like OpenAI, refuses what it cannot parse).
    assert_eq!(res.status(), 400);
    let whole = nested("x").len();
    let forwarded = app
        .mock
        .requests()
        .iter()
        .filter(|r| r.body.len() == whole)
        .count();
    assert_eq!(
        forwarded, 1,
        "only the plain grant's call went upstream, whole"
    );

    // keygate's own API: the same, OpenAI-shaped (10,000 levels: within its 64 KiB).
    let admin_nested = format!(r#"{{"name":{}{}}}"#, "[".repeat(10_000), "]".repeat(10_000));
    for body in [bad.clone(), admin_nested.into_bytes()] {
        let res = app
            .admin(Method::POST, "/admin/users")
            .header("content-type", "application/json")
            .body(body)
            .send()
            .await
            .unwrap();
        assert_openai_error(res, 400, "invalid_request").await;
    }
    bystander.finish(&app, 5).await;
}

/// keygate's own JSON API takes at most 64 KiB, announced or chunked.
#[tokio::test]
async fn api_bodies_over_the_limit_are_413_announced_or_chunked() {
    let app = spawn_app().await;
    let bystander = app.bystander().await;
    let big = serde_json::to_vec(&json!({"name": "x".repeat(128 * 1024)})).unwrap();
    let res = app
        .admin(Method::POST, "/admin/users")
        .header("content-type", "application/json")
        .body(big.clone())
        .send()
        .await
        .unwrap();
    assert_openai_error(res, 413, "request_too_large").await;
    let chunks: Vec<Result<Vec<u8>, std::io::Error>> =
        big.chunks(8192).map(|c| Ok(c.to_vec())).collect();
    let res = app
        .admin(Method::POST, "/admin/users")
        .header("content-type", "application/json")
        .body(reqwest::Body::wrap_stream(futures::stream::iter(chunks)))
        .send()
        .await
        .unwrap();
    assert_openai_error(res, 413, "request_too_large").await;
    // Announced: answered before the body is sent.
    let mut conn = RawConn::connect(app.port).await;
    conn.send(
        format!(
            "POST /admin/users HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {ADMIN_KEY}\r\n\
             Content-Type: application/json\r\nContent-Length: {}\r\n\r\n",
            1u64 << 40
        )
        .as_bytes(),
    )
    .await;
    conn.read_for(Duration::from_secs(2)).await;
    assert_eq!(conn.status(), Some(413), "{}", conn.text());
    assert!(body_of(&conn.text()).contains("request_too_large"));
    let users: serde_json::Value = app
        .admin(Method::GET, "/admin/users")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        users.as_array().unwrap().len(),
        1,
        "only the bystander: {users}"
    );
    bystander.finish(&app, 5).await;
}

/// Request targets that name another host — absolute-form, a `Host` or forwarding
/// header, an `@`, doubled or encoded slashes, backslashes, dot segments — never send
/// the person's key anywhere but the configured upstream: keygate takes only the path
/// (canonical, or refused) and joins it to the upstream it was configured with.
#[tokio::test]
async fn no_target_sends_the_key_to_another_host() {
    let app = spawn_app().await;
    let g = app.enrolled_grant(None).await;
    let bystander = app.bystander().await;
    let evil = MockOpenAi::start().await;
    let evil_host = evil
        .base_url()
        .trim_start_matches("http://")
        .trim_end_matches("/v1")
        .to_owned();
    let key = &g.api_key;
    let targets = [
        format!("http://{evil_host}/v1/models"),
        format!("https://{evil_host}/v1/models"),
        format!("//{evil_host}/v1/models"),
        format!("/v1//{evil_host}/v1/models"),
        format!("/v1/@{evil_host}/v1/models"),
        format!("/v1/models@{evil_host}"),
        format!("/v1/%2F%2F{evil_host}/v1/models"),
        format!("/v1/..%2F..%2F{evil_host}/v1/models"),
        format!("/v1/\\\\{evil_host}\\v1\\models"),
        format!("/v1/../../{evil_host}/v1/models"),
        format!("/v1/models?next=http://{evil_host}/v1/models"),
        format!("{evil_host}:80"),
        "*".to_owned(),
    ];
    for target in &targets {
        for extra in [
            "",
            "X-Forwarded-Host: EVIL\r\nX-Forwarded-Proto: http\r\nForwarded: host=EVIL\r\n",
        ] {
            let extra = extra.replace("EVIL", &evil_host);
            let req = format!(
                "GET {target} HTTP/1.1\r\nHost: {evil_host}\r\nAuthorization: Bearer {key}\r\n{extra}Connection: close\r\n\r\n"
            );
            let conn = exchange(app.port, req.as_bytes(), WAIT).await;
            assert!(
                conn.status().is_some(),
                "{target}: no answer: {}",
                conn.text()
            );
        }
    }
    let connect = format!(
        "CONNECT {evil_host} HTTP/1.1\r\nHost: {evil_host}\r\nAuthorization: Bearer {key}\r\n\r\n"
    );
    let conn = exchange(app.port, connect.as_bytes(), WAIT).await;
    assert!(conn.status().is_some_and(|s| s >= 400), "{}", conn.text());

    assert_eq!(evil.request_count(), 0, "the other host was called");
    // What did reach the configured upstream went to its /v1, with the person's key.
    for r in app.mock.requests() {
        assert!(r.path.starts_with("/v1/"), "{}", r.path);
        assert!(
            !r.path.contains(&evil_host) || r.path.starts_with("/v1/models?next="),
            "{}",
            r.path
        );
    }
    bystander.finish(&app, 5).await;
}

/// Clients that vanish mid-stream — some dropping the response, some resetting the
/// socket — cancel their upstream requests, each is counted for what was streamed,
/// and the bystander never notices.
#[tokio::test]
async fn clients_that_vanish_mid_stream_cancel_the_upstream_and_are_counted() {
    let app = spawn_app().await;
    let g = app.enrolled_grant(None).await;
    let bystander = app.bystander().await;
    let body = json!({"model": "gpt-4o-mini", "stream": true,
        "messages": [{"role": "user", "content": "Hi"}]});
    for _ in 0..4 {
        let mut res = app
            .v1(Method::POST, "/chat/completions", &g.api_key)
            .header("x-mock-scenario", "long-stream")
            .json(&body)
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 200);
        assert!(res.chunk().await.unwrap().is_some());
        drop(res);
    }
    let raw = serde_json::to_string(&body).unwrap();
    for _ in 0..4 {
        let mut conn = RawConn::connect(app.port).await;
        conn.send(
            format!(
                "POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {}\r\n\
                 x-mock-scenario: long-stream\r\nContent-Type: application/json\r\n\
                 Content-Length: {}\r\n\r\n{raw}",
                g.api_key,
                raw.len()
            )
            .as_bytes(),
        )
        .await;
        conn.read_for(Duration::from_millis(300)).await;
        assert_eq!(conn.status(), Some(200), "{}", conn.text());
        conn.reset();
    }
    assert!(
        app.mock
            .wait_for_cancelled(8, Duration::from_secs(10))
            .await,
        "upstream streams left running: {} cancelled",
        app.mock.cancelled_streams()
    );
    crate::limits::usage_when(&app, &g.grant_id, |r| crate::limits::requests_in(r) == 8).await;
    bystander.finish(&app, 5).await;
}
