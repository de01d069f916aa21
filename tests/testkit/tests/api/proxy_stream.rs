use std::time::{Duration, Instant};

use futures::StreamExt;
use keygate_testkit::{spawn_app, spawn_app_with};
use reqwest::Method;
use serde_json::Value;

use crate::helpers::{assert_openai_error, chat, chat_stream};

/// Reads the whole SSE body, noting when each chunk arrived.
async fn read_timed(res: reqwest::Response) -> (Vec<(Duration, Vec<u8>)>, Option<reqwest::Error>) {
    let start = Instant::now();
    let mut out = Vec::new();
    let mut stream = res.bytes_stream();
    while let Some(item) = stream.next().await {
        match item {
            Ok(b) => out.push((start.elapsed(), b.to_vec())),
            Err(e) => return (out, Some(e)),
        }
    }
    (out, None)
}

fn concat(chunks: &[(Duration, Vec<u8>)]) -> String {
    String::from_utf8(chunks.iter().flat_map(|(_, b)| b.clone()).collect()).unwrap()
}

#[tokio::test]
async fn sse_is_passed_through_event_by_event() {
    let app = spawn_app().await;
    let g = app.enrolled_grant(None).await;
    let res = app
        .v1(Method::POST, "/chat/completions", &g.api_key)
        .header("x-mock-delay-ms", "150")
        .json(&chat_stream("gpt-4o-mini"))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    assert!(
        res.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/event-stream")
    );
    assert!(res.headers().contains_key("x-request-id"));
    let (chunks, err) = read_timed(res).await;
    assert!(err.is_none());
    let text = concat(&chunks);
    let events: Vec<&str> = text.split("\n\n").filter(|e| !e.is_empty()).collect();
    assert!(events.last().unwrap().contains("[DONE]"));
    let content: String = events
        .iter()
        .filter_map(|e| e.strip_prefix("data: "))
        .filter(|d| *d != "[DONE]")
        .map(|d| serde_json::from_str::<Value>(d).unwrap())
        .filter_map(|v| {
            v["choices"][0]["delta"]["content"]
                .as_str()
                .map(str::to_owned)
        })
        .collect();
    assert_eq!(content, "Hello from the mock!");
    // Not buffered: events arrive spread over the mock's delays, not all at the end.
    assert!(
        chunks.len() >= 5,
        "events were coalesced: {} chunks",
        chunks.len()
    );
    let first = chunks.first().unwrap().0;
    let last = chunks.last().unwrap().0;
    assert!(
        last - first >= Duration::from_millis(500),
        "first {first:?} last {last:?}"
    );
}

#[tokio::test]
async fn stream_bytes_equal_what_the_upstream_sent() {
    let app = spawn_app().await;
    let g = app.enrolled_grant(None).await;
    let direct = app
        .client
        .post(format!("{}/chat/completions", app.mock.base_url()))
        .json(&chat_stream("gpt-4o-mini"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let via = app
        .chat_completions(&g.api_key, &chat_stream("gpt-4o-mini"))
        .await
        .text()
        .await
        .unwrap();
    let strip = |s: &str| {
        s.lines()
            .map(|l| {
                serde_json::from_str::<Value>(l.trim_start_matches("data: "))
                    .map(|mut v| {
                        v["id"] = Value::Null;
                        v["created"] = Value::Null;
                        v.to_string()
                    })
                    .unwrap_or_else(|_| l.to_owned())
            })
            .collect::<Vec<_>>()
    };
    assert_eq!(strip(&via), strip(&direct));
}

#[tokio::test]
async fn a_broken_upstream_stream_ends_abnormally_without_a_fake_done() {
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
    let (chunks, err) = read_timed(res).await;
    assert!(
        err.is_some(),
        "the stream ended cleanly after an upstream break"
    );
    let text = concat(&chunks);
    assert!(!text.contains("[DONE]"), "fabricated [DONE]: {text}");
    assert!(
        text.contains("chat.completion.chunk"),
        "the events before the break were lost"
    );
    // At an event boundary, an OpenAI-shaped error event precedes the cut.
    let last = text.split("\n\n").filter(|e| !e.is_empty()).last().unwrap();
    let v: Value = serde_json::from_str(last.trim_start_matches("data: ")).unwrap();
    assert_eq!(v["error"]["code"], "upstream_unavailable");
}

#[tokio::test]
async fn an_idle_upstream_stream_times_out_with_its_own_error() {
    let app = spawn_app_with(|c| c.upstream_idle_timeout_ms = Some(300)).await;
    let g = app.enrolled_grant(None).await;
    let res = app
        .v1(Method::POST, "/chat/completions", &g.api_key)
        .header("x-mock-scenario", "stall-mid-stream")
        .header("x-mock-delay-ms", "5000")
        .json(&chat_stream("gpt-4o-mini"))
        .send()
        .await
        .unwrap();
    let (chunks, err) = tokio::time::timeout(Duration::from_secs(4), read_timed(res))
        .await
        .expect("idle timeout fired");
    assert!(err.is_some(), "an idle stream must end abnormally");
    let text = concat(&chunks);
    assert!(!text.contains("[DONE]"));
    let last = text.split("\n\n").filter(|e| !e.is_empty()).last().unwrap();
    let v: Value = serde_json::from_str(last.trim_start_matches("data: ")).unwrap();
    assert_eq!(v["error"]["code"], "upstream_timeout");
}

#[tokio::test]
async fn a_slow_first_byte_is_504() {
    let app = spawn_app_with(|c| c.upstream_first_byte_timeout_ms = Some(300)).await;
    let g = app.enrolled_grant(None).await;
    let res = app
        .v1(Method::POST, "/chat/completions", &g.api_key)
        .header("x-mock-scenario", "slow-first-byte")
        .header("x-mock-delay-ms", "5000")
        .json(&chat("gpt-4o-mini"))
        .send()
        .await
        .unwrap();
    let body = assert_openai_error(res, 504, "upstream_timeout").await;
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("did not answer")
    );
}

#[tokio::test]
async fn an_unreachable_upstream_is_502() {
    // A port that was just free: nothing listens there.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let app =
        spawn_app_with(|c| c.upstream_url = Some(format!("http://127.0.0.1:{port}/v1"))).await;
    let g = app.enrolled_grant(None).await;
    let res = app.chat_completions(&g.api_key, &chat("gpt-4o-mini")).await;
    assert_openai_error(res, 502, "upstream_unavailable").await;
}

#[tokio::test]
async fn a_connect_timeout_is_504_with_its_own_message() {
    // A listener whose accept queue is full: further SYNs are dropped, so connecting
    // hangs until keygate's connect timeout.
    let sock = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    sock.bind(
        &"127.0.0.1:0"
            .parse::<std::net::SocketAddr>()
            .unwrap()
            .into(),
    )
    .unwrap();
    sock.listen(0).unwrap();
    let addr = sock.local_addr().unwrap().as_socket().unwrap();
    let mut fillers = Vec::new();
    for _ in 0..8 {
        if let Ok(Ok(s)) = tokio::time::timeout(
            Duration::from_millis(200),
            tokio::net::TcpStream::connect(addr),
        )
        .await
        {
            fillers.push(s);
        }
    }
    let app = spawn_app_with(|c| {
        c.upstream_url = Some(format!("http://{addr}/v1"));
        c.upstream_connect_timeout_ms = Some(300);
    })
    .await;
    let g = app.enrolled_grant(None).await;
    let res = app.chat_completions(&g.api_key, &chat("gpt-4o-mini")).await;
    let body = assert_openai_error(res, 504, "upstream_timeout").await;
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("connecting"),
        "{body}"
    );
    drop(fillers);
}

#[tokio::test]
async fn a_client_disconnect_cancels_the_upstream_request() {
    let app = spawn_app().await;
    let g = app.enrolled_grant(None).await;
    let res = app
        .v1(Method::POST, "/chat/completions", &g.api_key)
        .header("x-mock-scenario", "long-stream")
        .header("x-mock-delay-ms", "50")
        .json(&chat_stream("gpt-4o-mini"))
        .send()
        .await
        .unwrap();
    let mut stream = res.bytes_stream();
    for _ in 0..3 {
        stream.next().await.unwrap().unwrap();
    }
    drop(stream);
    assert!(
        app.mock
            .wait_for_cancelled(1, Duration::from_secs(10))
            .await,
        "the upstream stream kept running after the client left"
    );
    assert_eq!(app.mock.completed_streams(), 0);
}

#[tokio::test]
async fn a_client_disconnect_cancels_even_a_silent_upstream() {
    let app = spawn_app().await;
    let g = app.enrolled_grant(None).await;
    let res = app
        .v1(Method::POST, "/chat/completions", &g.api_key)
        .header("x-mock-scenario", "stall-mid-stream")
        .header("x-mock-delay-ms", "30000")
        .json(&chat_stream("gpt-4o-mini"))
        .send()
        .await
        .unwrap();
    let mut stream = res.bytes_stream();
    stream.next().await.unwrap().unwrap();
    // The upstream now sends nothing for 30 s; the client leaves meanwhile.
    drop(stream);
    assert!(
        app.mock.wait_for_cancelled(1, Duration::from_secs(5)).await,
        "a silent upstream stream outlived its client"
    );
}
