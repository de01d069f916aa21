//! Tests of the mock OpenAI upstream itself, through a real HTTP client.

// Test helpers outside #[test] functions: clippy's allow-unwrap-in-tests does not cover them.
#![allow(clippy::unwrap_used)]

use std::io::{Read, Write};
use std::time::{Duration, Instant};

use futures::StreamExt;
use keygate_testkit::mock_openai::{MockOpenAi, REPLY_TEXT};
use serde_json::{Value, json};

fn client() -> reqwest::Client {
    reqwest::Client::new()
}

async fn post(
    mock: &MockOpenAi,
    path: &str,
    body: Value,
    scenario: &[(&str, &str)],
) -> reqwest::Response {
    let mut req = client()
        .post(format!("{}{path}", mock.base_url()))
        .header("authorization", "Bearer sk-upstream")
        .json(&body);
    for (k, v) in scenario {
        req = req.header(*k, *v);
    }
    req.send().await.unwrap()
}

/// Splits an SSE body into its `data:` payloads.
fn sse_data(text: &str) -> Vec<String> {
    text.split("\n\n")
        .filter(|e| !e.is_empty())
        .map(|e| {
            e.lines()
                .find_map(|l| l.strip_prefix("data: "))
                .unwrap()
                .to_owned()
        })
        .collect()
}

fn chat_body(stream: bool) -> Value {
    json!({"model": "gpt-4o-mini", "stream": stream, "messages": [{"role": "user", "content": "Hi"}]})
}

#[tokio::test]
async fn non_stream_chat_has_openai_shape() {
    let mock = MockOpenAi::start().await;
    assert!(mock.base_url().starts_with("http://127.0.0.1:"));
    assert!(mock.base_url().ends_with("/v1"));
    let resp = post(&mock, "/chat/completions", chat_body(false), &[]).await;
    assert_eq!(resp.status(), 200);
    let h = resp.headers();
    assert_eq!(h["content-type"], "application/json");
    assert!(h["x-request-id"].to_str().unwrap().starts_with("req_"));
    assert!(h.contains_key("openai-processing-ms"));
    assert!(h.contains_key("openai-version"));
    let v: Value = resp.json().await.unwrap();
    assert!(v["id"].as_str().unwrap().starts_with("chatcmpl-"));
    assert_eq!(v["object"], "chat.completion");
    assert!(v["created"].is_u64());
    assert_eq!(v["model"], "gpt-4o-mini");
    assert!(v["system_fingerprint"].is_string());
    let choice = &v["choices"][0];
    assert_eq!(choice["index"], 0);
    assert_eq!(choice["message"]["role"], "assistant");
    assert_eq!(choice["message"]["content"], REPLY_TEXT);
    assert!(choice["message"]["refusal"].is_null());
    assert!(choice["logprobs"].is_null());
    assert_eq!(choice["finish_reason"], "stop");
    assert_eq!(v["usage"]["prompt_tokens"], 8);
    assert_eq!(v["usage"]["completion_tokens"], 5);
    assert_eq!(v["usage"]["total_tokens"], 13);
    assert!(v["usage"]["prompt_tokens_details"].is_object());
    assert!(v["usage"]["completion_tokens_details"].is_object());

    let reqs = mock.requests();
    assert_eq!(mock.request_count(), 1);
    assert_eq!(reqs[0].method, "POST");
    assert_eq!(reqs[0].path, "/v1/chat/completions");
    assert_eq!(reqs[0].header("Authorization"), Some("Bearer sk-upstream"));
    assert_eq!(reqs[0].json().unwrap()["model"], "gpt-4o-mini");
}

#[tokio::test]
async fn stream_events_arrive_one_by_one_with_delay() {
    let mock = MockOpenAi::start().await;
    let started = Instant::now();
    let resp = post(
        &mock,
        "/chat/completions",
        chat_body(true),
        &[("x-mock-delay-ms", "100")],
    )
    .await;
    assert_eq!(resp.status(), 200);
    assert_eq!(
        resp.headers()["content-type"],
        "text/event-stream; charset=utf-8"
    );
    assert!(resp.headers().get("content-length").is_none());
    let mut body = resp.bytes_stream();
    let mut arrivals = Vec::new();
    let mut text = String::new();
    while let Some(chunk) = body.next().await {
        let chunk = chunk.unwrap();
        arrivals.push(started.elapsed());
        text.push_str(std::str::from_utf8(&chunk).unwrap());
    }
    // 8 events (role, 5 content, finish, [DONE]); each is its own chunk thanks to the delay.
    assert!(arrivals.len() >= 8, "{arrivals:?}");
    let first = arrivals[0];
    let last = arrivals[arrivals.len() - 1];
    assert!(last - first >= Duration::from_millis(500), "{arrivals:?}");
    assert!(first < last / 2, "{arrivals:?}");

    let events = sse_data(&text);
    assert_eq!(events.last().unwrap(), "[DONE]");
    let chunks: Vec<Value> = events[..events.len() - 1]
        .iter()
        .map(|e| serde_json::from_str(e).unwrap())
        .collect();
    assert_eq!(
        chunks[0]["choices"][0]["delta"],
        json!({"role": "assistant", "content": "", "refusal": null})
    );
    let content: String = chunks
        .iter()
        .filter_map(|c| c["choices"][0]["delta"]["content"].as_str())
        .collect();
    assert_eq!(content, REPLY_TEXT);
    for c in &chunks {
        assert_eq!(c["object"], "chat.completion.chunk");
        assert_eq!(c["model"], "gpt-4o-mini");
        assert_eq!(c["id"], chunks[0]["id"]);
        assert!(c.get("usage").is_none(), "no usage unless asked for");
    }
    let last_chunk = chunks.last().unwrap();
    assert_eq!(last_chunk["choices"][0]["finish_reason"], "stop");
    assert_eq!(last_chunk["choices"][0]["delta"], json!({}));
    assert_eq!(mock.completed_streams(), 1);
    assert_eq!(mock.cancelled_streams(), 0);
}

#[tokio::test]
async fn stream_include_usage_adds_usage_chunk() {
    let mock = MockOpenAi::start().await;
    let mut body = chat_body(true);
    body["stream_options"] = json!({"include_usage": true});
    let text = post(&mock, "/chat/completions", body, &[])
        .await
        .text()
        .await
        .unwrap();
    let events = sse_data(&text);
    assert_eq!(events.last().unwrap(), "[DONE]");
    let chunks: Vec<Value> = events[..events.len() - 1]
        .iter()
        .map(|e| serde_json::from_str(e).unwrap())
        .collect();
    let (usage_chunk, others) = chunks.split_last().unwrap();
    for c in others {
        assert!(c["usage"].is_null() && c.get("usage").is_some());
        assert_eq!(c["choices"].as_array().unwrap().len(), 1);
    }
    assert_eq!(usage_chunk["choices"], json!([]));
    assert_eq!(usage_chunk["usage"]["prompt_tokens"], 8);
    assert_eq!(usage_chunk["usage"]["completion_tokens"], 5);
    assert_eq!(usage_chunk["usage"]["total_tokens"], 13);
}

fn b64_decode(s: &str) -> Vec<u8> {
    const T: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = Vec::new();
    let mut acc = 0u32;
    let mut bits = 0;
    for c in s.bytes().filter(|&c| c != b'=') {
        acc = (acc << 6) | T.iter().position(|&t| t == c).unwrap() as u32;
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
        }
    }
    out
}

#[tokio::test]
async fn embeddings_float_and_base64() {
    let mock = MockOpenAi::start().await;
    let v: Value = post(
        &mock,
        "/embeddings",
        json!({"model": "text-embedding-3-small", "input": "hello", "dimensions": 8}),
        &[],
    )
    .await
    .json()
    .await
    .unwrap();
    assert_eq!(v["object"], "list");
    assert_eq!(v["model"], "text-embedding-3-small");
    assert_eq!(v["data"].as_array().unwrap().len(), 1);
    assert_eq!(v["data"][0]["object"], "embedding");
    assert_eq!(v["data"][0]["index"], 0);
    let floats: Vec<f32> = v["data"][0]["embedding"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f.as_f64().unwrap() as f32)
        .collect();
    assert_eq!(floats.len(), 8);
    assert_eq!(v["usage"]["prompt_tokens"], 2);
    assert_eq!(v["usage"]["total_tokens"], 2);

    let v: Value = post(
        &mock,
        "/embeddings",
        json!({"model": "text-embedding-3-small", "input": ["hello", "world"], "encoding_format": "base64"}),
        &[],
    )
    .await
    .json()
    .await
    .unwrap();
    let data = v["data"].as_array().unwrap();
    assert_eq!(data.len(), 2);
    assert_eq!(data[1]["index"], 1);
    let bytes = b64_decode(data[0]["embedding"].as_str().unwrap());
    assert_eq!(bytes.len(), 1536 * 4);
    let decoded: Vec<f32> = bytes
        .chunks(4)
        .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        .collect();
    let norm: f32 = decoded.iter().map(|x| x * x).sum::<f32>().sqrt();
    assert!((norm - 1.0).abs() < 1e-3, "{norm}");
    // Same text, same vector, whichever encoding.
    assert_eq!(&decoded[..8].len(), &8);
    let again = keygate_testkit::mock_openai::fixtures::embedding_vector("hello", 1536);
    assert_eq!(decoded, again);
    assert_ne!(data[0]["embedding"], data[1]["embedding"]);
}

#[tokio::test]
async fn error_scenarios() {
    let mock = MockOpenAi::start().await;
    let resp = post(
        &mock,
        "/chat/completions",
        chat_body(false),
        &[("x-mock-scenario", "error-429")],
    )
    .await;
    assert_eq!(resp.status(), 429);
    assert_eq!(resp.headers()["retry-after"], "1");
    assert!(
        resp.headers()
            .contains_key("x-ratelimit-remaining-requests")
    );
    assert!(resp.headers().contains_key("x-request-id"));
    let v: Value = resp.json().await.unwrap();
    assert_eq!(v["error"]["type"], "requests");
    assert_eq!(v["error"]["code"], "rate_limit_exceeded");
    assert!(v["error"]["param"].is_null());
    assert!(
        v["error"]["message"]
            .as_str()
            .unwrap()
            .contains("gpt-4o-mini")
    );

    let resp = post(
        &mock,
        "/chat/completions",
        chat_body(true),
        &[("x-mock-scenario", "error-500")],
    )
    .await;
    assert_eq!(resp.status(), 500);
    let v: Value = resp.json().await.unwrap();
    assert_eq!(v["error"]["type"], "server_error");

    let resp = post(
        &mock,
        "/embeddings",
        json!({}),
        &[("x-mock-scenario", "error-401")],
    )
    .await;
    assert_eq!(resp.status(), 401);
    let v: Value = resp.json().await.unwrap();
    assert_eq!(v["error"]["code"], "invalid_api_key");

    let resp = post(
        &mock,
        "/chat/completions",
        chat_body(false),
        &[("x-mock-scenario", "error-429-quota")],
    )
    .await;
    assert_eq!(resp.status(), 429);
    assert_eq!(resp.headers()["x-should-retry"], "false");
    let v: Value = resp.json().await.unwrap();
    assert_eq!(v["error"]["code"], "insufficient_quota");

    let resp = post(
        &mock,
        "/chat/completions",
        chat_body(false),
        &[("x-mock-scenario", "no-such")],
    )
    .await;
    assert_eq!(resp.status(), 400);
    assert_eq!(mock.request_count(), 5, "every request is recorded");
}

#[tokio::test]
async fn reset_mid_stream_is_a_body_error() {
    let mock = MockOpenAi::start().await;
    let resp = post(
        &mock,
        "/chat/completions",
        chat_body(true),
        &[("x-mock-scenario", "reset-mid-stream")],
    )
    .await;
    assert_eq!(resp.status(), 200);
    let mut body = resp.bytes_stream();
    let mut text = String::new();
    let mut failed = false;
    while let Some(chunk) = body.next().await {
        match chunk {
            Ok(c) => text.push_str(std::str::from_utf8(&c).unwrap()),
            Err(_) => {
                failed = true;
                break;
            }
        }
    }
    assert!(failed, "the body must end with an error, got {text:?}");
    assert_eq!(sse_data(&text).len(), 2, "{text:?}");
    assert!(!text.contains("[DONE]"));
    assert_eq!(mock.completed_streams(), 0);
    assert_eq!(mock.cancelled_streams(), 0);
}

/// Raw HTTP/1.1 so the wire bytes themselves can be checked. Runs without any async runtime.
fn raw_request(mock: &MockOpenAi, head: &str, body: &str) -> String {
    let mut s = std::net::TcpStream::connect(mock.addr()).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(
        s,
        "{head}\r\nhost: {}\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
        mock.addr(),
        body.len()
    )
    .unwrap();
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out);
    String::from_utf8_lossy(&out).into_owned()
}

#[test]
fn raw_wire_reset_and_hop_headers() {
    let mock = MockOpenAi::try_start().unwrap();
    let body = chat_body(true).to_string();
    let out = raw_request(
        &mock,
        "POST /v1/chat/completions HTTP/1.1\r\nx-mock-scenario: reset-mid-stream",
        &body,
    );
    assert!(out.starts_with("HTTP/1.1 200 OK\r\n"), "{out}");
    assert!(out.contains("transfer-encoding: chunked\r\n"), "{out}");
    assert!(!out.ends_with("0\r\n\r\n"), "no terminating chunk: {out}");

    let out = raw_request(
        &mock,
        "POST /v1/chat/completions HTTP/1.1\r\nx-mock-scenario: set-cookie",
        &chat_body(false).to_string(),
    );
    let head = out.split("\r\n\r\n").next().unwrap().to_ascii_lowercase();
    for line in [
        "set-cookie: session=upstream-secret; path=/",
        "connection: keep-alive, x-hop",
        "x-hop: should-not-pass",
        "keep-alive: timeout=5",
        "proxy-authenticate: basic",
        "trailer: x-foo",
        "x-upstream-extra: kept",
    ] {
        assert!(head.contains(line), "{line} missing in {head}");
    }
}

#[tokio::test]
async fn long_stream_cancellation_is_counted() {
    let mock = MockOpenAi::start().await;
    let resp = post(
        &mock,
        "/chat/completions",
        chat_body(true),
        &[
            ("x-mock-scenario", "long-stream"),
            ("x-mock-delay-ms", "20"),
        ],
    )
    .await;
    assert_eq!(resp.status(), 200);
    let mut body = resp.bytes_stream();
    for _ in 0..3 {
        body.next().await.unwrap().unwrap();
    }
    assert_eq!(mock.cancelled_streams(), 0);
    drop(body);
    assert!(mock.wait_for_cancelled(1, Duration::from_secs(5)).await);
    assert_eq!(mock.cancelled_streams(), 1);
    assert_eq!(mock.completed_streams(), 0);
}

#[tokio::test]
async fn stall_and_slow_first_byte() {
    let mock = MockOpenAi::start().await;
    let started = Instant::now();
    let resp = post(
        &mock,
        "/chat/completions",
        chat_body(true),
        &[
            ("x-mock-scenario", "stall-mid-stream"),
            ("x-mock-delay-ms", "600"),
        ],
    )
    .await;
    let mut body = resp.bytes_stream();
    let mut arrivals = Vec::new();
    let mut text = String::new();
    while let Some(chunk) = body.next().await {
        arrivals.push(started.elapsed());
        text.push_str(std::str::from_utf8(&chunk.unwrap()).unwrap());
    }
    assert!(arrivals[1] < Duration::from_millis(500), "{arrivals:?}");
    assert!(
        *arrivals.last().unwrap() >= Duration::from_millis(600),
        "{arrivals:?}"
    );
    assert!(text.ends_with("data: [DONE]\n\n"));
    assert_eq!(mock.completed_streams(), 1);

    let started = Instant::now();
    let resp = post(
        &mock,
        "/chat/completions",
        chat_body(false),
        &[
            ("x-mock-scenario", "slow-first-byte"),
            ("x-mock-delay-ms", "300"),
        ],
    )
    .await;
    assert!(started.elapsed() >= Duration::from_millis(300));
    assert_eq!(resp.status(), 200);
    let v: Value = resp.json().await.unwrap();
    assert_eq!(v["object"], "chat.completion");
}

#[tokio::test]
async fn echo_headers_big_response_and_catch_all() {
    let mock = MockOpenAi::start().await;
    let v: Value = client()
        .get(format!("{}/files?purpose=x", mock.base_url()))
        .header("x-mock-scenario", "echo-headers")
        .header("x-custom", "1")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(v["headers"]["x-custom"], "1");
    assert_eq!(v["headers"]["x-mock-scenario"], "echo-headers");

    let v: Value = client()
        .get(format!("{}/files?purpose=x", mock.base_url()))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        v,
        json!({"object": "mock.echo", "method": "GET", "path": "/v1/files", "query": "purpose=x", "content_type": null, "body_len": 0})
    );
    let v: Value = client()
        .delete(format!("{}/files/abc", mock.base_url()))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(v["method"], "DELETE");
    assert_eq!(v["path"], "/v1/files/abc");
    let reqs = mock.requests();
    assert_eq!(reqs[1].path, "/v1/files?purpose=x");
    assert_eq!(reqs[2].method, "DELETE");

    let resp = client()
        .post(format!("{}/chat/completions", mock.base_url()))
        .header("x-mock-scenario", "big-response")
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let bytes = resp.bytes().await.unwrap();
    assert_eq!(bytes.len(), 5 * 1024 * 1024);
    let v: Value = serde_json::from_slice(&bytes).unwrap();
    assert_eq!(v["object"], "mock.big");
}

#[tokio::test]
async fn models_and_responses() {
    let mock = MockOpenAi::start().await;
    let v: Value = client()
        .get(format!("{}/models", mock.base_url()))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(v["object"], "list");
    let ids: Vec<&str> = v["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["id"].as_str().unwrap())
        .collect();
    assert!(ids.contains(&"gpt-4o-mini") && ids.contains(&"text-embedding-3-small"));
    let resp = client()
        .get(format!("{}/models/gpt-4o", mock.base_url()))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.json::<Value>().await.unwrap()["object"], "model");
    let resp = client()
        .get(format!("{}/models/nope", mock.base_url()))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 404);
    assert_eq!(
        resp.json::<Value>().await.unwrap()["error"]["code"],
        "model_not_found"
    );

    let v: Value = post(
        &mock,
        "/responses",
        json!({"model": "gpt-4o-mini", "input": "Hi"}),
        &[],
    )
    .await
    .json()
    .await
    .unwrap();
    assert_eq!(v["object"], "response");
    assert_eq!(v["status"], "completed");
    assert_eq!(v["output"][0]["content"][0]["text"], REPLY_TEXT);
    assert_eq!(v["usage"]["input_tokens"], 8);
    assert_eq!(v["usage"]["output_tokens"], 5);

    let text = post(
        &mock,
        "/responses",
        json!({"model": "gpt-4o-mini", "input": "Hi", "stream": true}),
        &[],
    )
    .await
    .text()
    .await
    .unwrap();
    let events: Vec<(String, Value)> = text
        .split("\n\n")
        .filter(|e| !e.is_empty())
        .map(|e| {
            let mut lines = e.lines();
            let name = lines
                .next()
                .unwrap()
                .strip_prefix("event: ")
                .unwrap()
                .to_owned();
            let data = lines.next().unwrap().strip_prefix("data: ").unwrap();
            (name, serde_json::from_str(data).unwrap())
        })
        .collect();
    assert_eq!(events[0].0, "response.created");
    assert_eq!(events.last().unwrap().0, "response.completed");
    for (i, (name, data)) in events.iter().enumerate() {
        assert_eq!(&data["type"], name);
        assert_eq!(data["sequence_number"], i);
    }
    let deltas: String = events
        .iter()
        .filter(|(n, _)| n == "response.output_text.delta")
        .map(|(_, d)| d["delta"].as_str().unwrap())
        .collect();
    assert_eq!(deltas, REPLY_TEXT);
    assert!(!text.contains("[DONE]"));
}

#[tokio::test]
async fn control_api() {
    let mock = MockOpenAi::start().await;
    let base = format!("http://{}", mock.addr());
    post(&mock, "/chat/completions", chat_body(true), &[])
        .await
        .text()
        .await
        .unwrap();
    let stats: Value = client()
        .get(format!("{base}/__mock/stats"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        stats,
        json!({"requests": 1, "cancelled_streams": 0, "completed_streams": 1,
               "max_concurrent": 1})
    );
    let reqs: Value = client()
        .get(format!("{base}/__mock/requests"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(reqs[0]["method"], "POST");
    assert_eq!(reqs[0]["path"], "/v1/chat/completions");
    assert_eq!(reqs[0]["headers"]["authorization"], "Bearer sk-upstream");
    assert_eq!(
        serde_json::from_str::<Value>(reqs[0]["body"].as_str().unwrap()).unwrap(),
        chat_body(true)
    );
    let reset: Value = client()
        .post(format!("{base}/__mock/reset"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        reset,
        json!({"requests": 0, "cancelled_streams": 0, "completed_streams": 0,
               "max_concurrent": 0})
    );
    assert_eq!(mock.request_count(), 0, "control calls are not recorded");
}

#[actix_web::test]
async fn works_under_actix_runtime() {
    let mock = MockOpenAi::start().await;
    let resp = post(&mock, "/chat/completions", chat_body(false), &[]).await;
    assert_eq!(resp.status(), 200);
    assert!(mock.wait_for_cancelled(0, Duration::from_millis(1)).await);
    let addr = mock.addr();
    drop(mock);
    // The server stops once dropped.
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(
        client()
            .get(format!("http://{addr}/v1/models"))
            .send()
            .await
            .is_err()
    );
}
