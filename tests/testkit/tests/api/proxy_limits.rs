use keygate_testkit::spawn_app_with;
use reqwest::Method;
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::helpers::assert_openai_error;

const LIMIT: u64 = 64 * 1024;

#[tokio::test]
async fn oversized_json_is_413_and_never_forwarded() {
    let app = spawn_app_with(|c| c.max_body_bytes = Some(LIMIT)).await;
    let g = app.enrolled_grant(None).await;
    let big = json!({"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "x".repeat(LIMIT as usize)}]});
    let res = app.chat_completions(&g.api_key, &big).await;
    assert_eq!(res.headers()["x-should-retry"], "false");
    assert_openai_error(res, 413, "request_too_large").await;

    // Chunked (no Content-Length): refused once the limit is crossed.
    let bytes = serde_json::to_vec(&big).unwrap();
    let chunks: Vec<Result<Vec<u8>, std::io::Error>> =
        bytes.chunks(8192).map(|c| Ok(c.to_vec())).collect();
    let res = app
        .v1(Method::POST, "/chat/completions", &g.api_key)
        .header("content-type", "application/json")
        .body(reqwest::Body::wrap_stream(futures::stream::iter(chunks)))
        .send()
        .await
        .unwrap();
    assert_openai_error(res, 413, "request_too_large").await;
    assert_eq!(app.mock.request_count(), 0);

    // Just under the limit passes.
    let ok = json!({"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "x".repeat(LIMIT as usize - 200)}]});
    assert_eq!(app.chat_completions(&g.api_key, &ok).await.status(), 200);
}

/// A `Content-Length` above the limit is answered before a byte of body is read.
#[tokio::test]
async fn announced_oversize_is_refused_before_the_body_is_sent() {
    let app = spawn_app_with(|c| c.max_body_bytes = Some(LIMIT)).await;
    let g = app.enrolled_grant(None).await;
    let mut sock = tokio::net::TcpStream::connect(("127.0.0.1", app.port))
        .await
        .unwrap();
    let head = format!(
        "POST /v1/audio/transcriptions HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {}\r\n\
         Content-Type: application/octet-stream\r\nContent-Length: {}\r\n\r\n",
        g.api_key,
        LIMIT * 1000
    );
    sock.write_all(head.as_bytes()).await.unwrap();
    let mut buf = vec![0u8; 4096];
    let n = tokio::time::timeout(std::time::Duration::from_secs(10), sock.read(&mut buf))
        .await
        .expect("answered without waiting for the body")
        .unwrap();
    let text = String::from_utf8_lossy(&buf[..n]);
    assert!(text.starts_with("HTTP/1.1 413"), "{text}");
    assert!(text.contains("request_too_large"), "{text}");
    assert_eq!(app.mock.request_count(), 0);
}

#[tokio::test]
async fn oversized_streamed_upload_is_413() {
    let app = spawn_app_with(|c| c.max_body_bytes = Some(LIMIT)).await;
    // Uploading files needs the `files` scope (issue 9).
    let g = app
        .enrolled_grant_with_scopes(&["inference", "files"])
        .await;
    let chunks: Vec<Result<Vec<u8>, std::io::Error>> =
        (0..20).map(|_| Ok(vec![7u8; 8192])).collect();
    let res = app
        .v1(Method::POST, "/files", &g.api_key)
        .header("content-type", "application/octet-stream")
        .body(reqwest::Body::wrap_stream(futures::stream::iter(chunks)))
        .send()
        .await
        .unwrap();
    assert_openai_error(res, 413, "request_too_large").await;
    // The upstream may have seen the start of the upload, but never a complete request.
    assert!(
        app.mock
            .requests()
            .iter()
            .all(|r| r.body.len() as u64 <= LIMIT)
    );
}

#[tokio::test]
async fn bad_json_and_bad_content_length_are_400() {
    let app = spawn_app_with(|c| c.max_body_bytes = Some(LIMIT)).await;
    let g = app.enrolled_grant(None).await;
    for body in ["{", "[1,2]", r#"{"model": 5}"#] {
        let res = app
            .v1(Method::POST, "/chat/completions", &g.api_key)
            .header("content-type", "application/json")
            .body(body)
            .send()
            .await
            .unwrap();
        assert_openai_error(res, 400, "invalid_request").await;
    }
    assert_eq!(app.mock.request_count(), 0);
}

/// A `model` longer than any model id is refused before the upstream: it would be
/// logged and named in the usage rows.
#[tokio::test]
async fn a_model_name_longer_than_any_model_id_is_400() {
    let app = keygate_testkit::spawn_app().await;
    let g = app.enrolled_grant(None).await;
    let body = json!({"model": "m".repeat(257), "messages": [{"role": "user", "content": "hi"}]});
    let res = app.chat_completions(&g.api_key, &body).await;
    let err = assert_openai_error(res, 400, "invalid_request").await;
    assert_eq!(err["error"]["param"], "model");
    assert_eq!(app.mock.request_count(), 0);
    let ok = json!({"model": "m".repeat(256), "messages": [{"role": "user", "content": "hi"}]});
    // 256 bytes pass keygate (the mock then answers for the unknown model).
    let res = app.chat_completions(&g.api_key, &ok).await;
    assert_ne!(res.status(), 400);
    assert_eq!(app.mock.request_count(), 1);
}
