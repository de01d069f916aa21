use keygate_testkit::{FAKE_OPENAI_KEY, spawn_app};
use reqwest::Method;
use serde_json::{Value, json};

use crate::helpers::chat;

#[tokio::test]
async fn chat_completion_is_forwarded_with_the_persons_key() {
    let app = spawn_app().await;
    let g = app.enrolled_grant(None).await;
    let res = app.chat_completions(&g.api_key, &chat("gpt-4o-mini")).await;
    assert_eq!(res.status(), 200);
    assert!(res.headers().contains_key("x-request-id"));
    assert!(
        res.headers()["x-upstream-request-id"]
            .to_str()
            .unwrap()
            .starts_with("req_")
    );
    let v: Value = res.json().await.unwrap();
    assert_eq!(v["object"], "chat.completion");
    assert_eq!(
        v["choices"][0]["message"]["content"],
        "Hello from the mock!"
    );

    let seen = app.mock.requests();
    assert_eq!(seen.len(), 1);
    assert_eq!(seen[0].method, "POST");
    assert_eq!(seen[0].path, "/v1/chat/completions");
    assert_eq!(
        seen[0].header("authorization"),
        Some(format!("Bearer {FAKE_OPENAI_KEY}").as_str())
    );
    assert_eq!(
        seen[0].json().unwrap(),
        chat("gpt-4o-mini"),
        "body must be forwarded unchanged"
    );
}

#[tokio::test]
async fn every_path_method_and_query_is_forwarded() {
    let app = spawn_app().await;
    // Files and vector stores need their scopes (issue 9); with them, they pass as sent.
    let g = app
        .enrolled_grant_with_scopes(&["inference", "files", "assistants"])
        .await;
    let cases = [
        (Method::GET, "/files?purpose=fine-tune&limit=2"),
        (Method::DELETE, "/files/file-abc"),
        (Method::GET, "/models/gpt-4o"),
        (Method::POST, "/moderations"),
        (Method::GET, "/vector_stores/vs_1/files?order=desc"),
    ];
    for (method, path) in cases {
        let mut req = app.v1(method.clone(), path, &g.api_key);
        if method == Method::POST {
            req = req.json(&json!({"input": "hi"}));
        }
        let res = req.send().await.unwrap();
        assert_eq!(res.status(), 200, "{method} {path}");
        let last = app.mock.requests().pop().unwrap();
        assert_eq!(last.method, method.as_str());
        assert_eq!(last.path, format!("/v1{path}"));
    }
    let res = app
        .v1(Method::GET, "/models", &g.api_key)
        .send()
        .await
        .unwrap();
    let v: Value = res.json().await.unwrap();
    assert!(
        v["data"]
            .as_array()
            .unwrap()
            .iter()
            .any(|m| m["id"] == "gpt-4o-mini")
    );
}

#[tokio::test]
async fn credentials_cookies_and_hop_by_hop_headers_never_reach_upstream() {
    let app = spawn_app().await;
    let g = app.enrolled_grant(None).await;
    let res = app
        .v1(Method::GET, "/models", &g.api_key)
        .header("x-mock-scenario", "echo-headers")
        .header("cookie", "session=browser-secret")
        .header("connection", "keep-alive, x-private")
        .header("x-private", "hop")
        .header("proxy-authorization", "Basic eDp5")
        .header("openai-organization", "org-not-yours")
        .header("origin", "https://app.example")
        .header("x-stainless-lang", "js")
        .header("openai-beta", "assistants=v2")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    let v: Value = res.json().await.unwrap();
    let h = v["headers"].as_object().unwrap();
    assert_eq!(h["authorization"], format!("Bearer {FAKE_OPENAI_KEY}"));
    for absent in [
        "cookie",
        "x-private",
        "proxy-authorization",
        "openai-organization",
        "origin",
    ] {
        assert!(
            !h.contains_key(absent),
            "{absent} reached the upstream: {v}"
        );
    }
    assert!(
        !v.to_string().contains(&g.api_key),
        "grant key reached the upstream"
    );
    assert_eq!(h["x-stainless-lang"], "js");
    assert_eq!(h["openai-beta"], "assistants=v2");
}

#[tokio::test]
async fn upstream_cookies_and_hop_by_hop_headers_never_reach_the_app() {
    let app = spawn_app().await;
    let g = app.enrolled_grant(None).await;
    let res = app
        .v1(Method::GET, "/models", &g.api_key)
        .header("x-mock-scenario", "set-cookie")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    for absent in [
        "set-cookie",
        "x-hop",
        "keep-alive",
        "proxy-authenticate",
        "trailer",
    ] {
        assert!(
            !res.headers().contains_key(absent),
            "{absent} reached the app"
        );
    }
    assert_eq!(res.headers()["x-upstream-extra"], "kept");
    assert!(res.headers().contains_key("x-request-id"));
}

#[tokio::test]
async fn upstream_errors_pass_through_with_their_status_and_hints() {
    let app = spawn_app().await;
    let g = app.enrolled_grant(None).await;
    let res = app
        .v1(Method::POST, "/chat/completions", &g.api_key)
        .header("x-mock-scenario", "error-429")
        .json(&chat("gpt-4o-mini"))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 429);
    assert!(res.headers().contains_key("retry-after"));
    let v: Value = res.json().await.unwrap();
    assert_eq!(v["error"]["code"], "rate_limit_exceeded");
    // OpenAI's message names the person's organization: the app never learns it.
    let message = v["error"]["message"].as_str().unwrap();
    assert!(
        message.starts_with("Rate limit reached for gpt-4o-mini in organization org-…"),
        "{message}"
    );
    assert!(!message.contains("Mock0rgId"), "{message}");
}

#[tokio::test]
async fn non_json_bodies_stream_through_intact() {
    let app = spawn_app().await;
    // Uploading files needs the `files` scope (issue 9).
    let g = app
        .enrolled_grant_with_scopes(&["inference", "files"])
        .await;
    let payload: Vec<u8> = (0..300_000u32).map(|i| (i % 251) as u8).collect();
    let chunks: Vec<Result<Vec<u8>, std::io::Error>> =
        payload.chunks(10_000).map(|c| Ok(c.to_vec())).collect();
    let res = app
        .v1(Method::POST, "/files", &g.api_key)
        .header("content-type", "application/octet-stream")
        .body(reqwest::Body::wrap_stream(futures::stream::iter(chunks)))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    let seen = app.mock.requests().pop().unwrap();
    assert_eq!(seen.body.as_ref(), payload.as_slice());
}

#[tokio::test]
async fn large_responses_pass_through_intact() {
    let app = spawn_app().await;
    let g = app.enrolled_grant(None).await;
    let res = app
        .v1(Method::GET, "/models", &g.api_key)
        .header("x-mock-scenario", "big-response")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    assert_eq!(res.bytes().await.unwrap().len(), 5 * 1024 * 1024);
}

/// Raw requests: an HTTP client would resolve the dot segments itself.
#[tokio::test]
async fn dot_segments_cannot_escape_v1() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let app = spawn_app().await;
    let g = app.enrolled_grant(None).await;
    for path in [
        "/v1/%2e%2e/admin",
        "/v1/files/%2E%2E/%2e%2e/x",
        "/v1/a/%2f/b",
        "/v1/./models",
    ] {
        let mut sock = tokio::net::TcpStream::connect(("127.0.0.1", app.port))
            .await
            .unwrap();
        let req = format!(
            "GET {path} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {}\r\nConnection: close\r\n\r\n",
            g.api_key
        );
        sock.write_all(req.as_bytes()).await.unwrap();
        let mut out = Vec::new();
        sock.read_to_end(&mut out).await.unwrap();
        let text = String::from_utf8_lossy(&out);
        assert!(text.starts_with("HTTP/1.1 400"), "{path}: {text}");
        assert!(text.contains("invalid_request"), "{path}: {text}");
    }
    assert_eq!(app.mock.request_count(), 0);
}

#[tokio::test]
async fn last_used_is_recorded() {
    let app = spawn_app().await;
    let g = app.enrolled_grant(None).await;
    assert_eq!(
        app.chat_completions(&g.api_key, &chat("gpt-4o-mini"))
            .await
            .status(),
        200
    );
    // Batched at most once a second.
    let mut last_used = Value::Null;
    for _ in 0..30 {
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        let list: Value = app
            .admin(Method::GET, &format!("/admin/users/{}/grants", g.user_id))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        last_used = list[0]["last_used_at"].clone();
        if last_used.is_u64() {
            break;
        }
    }
    assert!(last_used.is_u64(), "last_used_at never recorded");
}

/// Finding 6: inbound headers reach the upstream through an allowlist. Client
/// addresses, proxy hints and anything unknown stay at keygate; what the official SDKs
/// send passes.
#[tokio::test]
async fn only_allowlisted_headers_reach_the_upstream() {
    let app = spawn_app().await;
    let g = app.enrolled_grant(None).await;
    let res = app
        .v1(Method::POST, "/chat/completions", &g.api_key)
        .header("x-mock-scenario", "echo-headers")
        .header("via", "1.1 corp-proxy")
        .header("true-client-ip", "203.0.113.7")
        .header("cf-connecting-ip", "203.0.113.8")
        .header("x-forwarded-for", "203.0.113.9")
        .header("x-real-ip", "203.0.113.10")
        .header("forwarded", "for=203.0.113.11")
        .header("x-original-url", "/v1/organization/users")
        .header("x-rewrite-url", "/v1/organization/users")
        .header("cookie2", "$Version=1")
        .header("referer", "https://app.example/secret-page")
        .header("openai-project", "proj_not_yours")
        .header("x-app-internal", "tenant-42")
        .header(
            "traceparent",
            "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
        )
        .header("user-agent", "OpenAI/JS 5.0.0")
        .header("accept", "application/json")
        .header("x-stainless-os", "Linux")
        .header("x-stainless-retry-count", "0")
        .header("openai-beta", "assistants=v2")
        .header("idempotency-key", "stainless-node-retry-abc")
        .json(&crate::helpers::chat("gpt-4o-mini"))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    let v: Value = res.json().await.unwrap();
    let h = v["headers"].as_object().unwrap();
    for absent in [
        "via",
        "true-client-ip",
        "cf-connecting-ip",
        "x-forwarded-for",
        "x-real-ip",
        "forwarded",
        "x-original-url",
        "x-rewrite-url",
        "cookie2",
        "referer",
        "openai-project",
        "x-app-internal",
        "traceparent",
    ] {
        assert!(
            !h.contains_key(absent),
            "{absent} reached the upstream: {v}"
        );
    }
    for (name, value) in [
        ("user-agent", "OpenAI/JS 5.0.0"),
        ("accept", "application/json"),
        ("content-type", "application/json"),
        ("x-stainless-os", "Linux"),
        ("x-stainless-retry-count", "0"),
        ("openai-beta", "assistants=v2"),
        ("idempotency-key", "stainless-node-retry-abc"),
    ] {
        assert_eq!(
            h.get(name).and_then(Value::as_str),
            Some(value),
            "{name}: {v}"
        );
    }
    assert_eq!(h["authorization"], format!("Bearer {FAKE_OPENAI_KEY}"));
}

/// A compressed body could not be read for policy, and would reach OpenAI mislabelled
/// if its `Content-Encoding` were dropped: refused.
#[tokio::test]
async fn compressed_request_bodies_are_refused() {
    let app = spawn_app().await;
    let g = app.enrolled_grant(None).await;
    let res = app
        .v1(Method::POST, "/audio/transcriptions", &g.api_key)
        .header("content-type", "application/octet-stream")
        .header("content-encoding", "gzip")
        .body(vec![0x1f, 0x8b, 0, 0])
        .send()
        .await
        .unwrap();
    crate::helpers::assert_openai_error(res, 400, "invalid_request").await;
    assert_eq!(app.mock.request_count(), 0);
}
