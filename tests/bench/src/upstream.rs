//! The zero-work upstream: `POST /v1/chat/completions` answered at once with a fixed
//! `chat.completion`, or (`"stream": true`) a fixed SSE stream of chunks + `[DONE]`.
//! A body naming the model `bench-hold` gets the first SSE event and then an open
//! stream that never sends more, until the client goes away. `GET /bench/stats` tells
//! how many requests were served and how many held streams are open right now.

use std::collections::VecDeque;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body_util::BodyExt;
use hyper::body::{Body, Frame, Incoming, SizeHint};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;

static REQUESTS: AtomicU64 = AtomicU64::new(0);
static HOLD_OPEN: AtomicI64 = AtomicI64::new(0);
static HOLD_TOTAL: AtomicU64 = AtomicU64::new(0);

const COMPLETION: &str = r#"{"id":"chatcmpl-bench","object":"chat.completion","created":1700000000,"model":"gpt-4o-mini-2024-07-18","choices":[{"index":0,"message":{"role":"assistant","content":"Hello!","refusal":null},"logprobs":null,"finish_reason":"stop"}],"usage":{"prompt_tokens":9,"completion_tokens":2,"total_tokens":11},"system_fingerprint":"fp_bench"}"#;

const CHUNK_ROLE: &str = "data: {\"id\":\"chatcmpl-bench\",\"object\":\"chat.completion.chunk\",\"created\":1700000000,\"model\":\"gpt-4o-mini-2024-07-18\",\"system_fingerprint\":\"fp_bench\",\"choices\":[{\"index\":0,\"delta\":{\"role\":\"assistant\",\"content\":\"\"},\"logprobs\":null,\"finish_reason\":null}]}\n\n";
const CHUNK_HELLO: &str = "data: {\"id\":\"chatcmpl-bench\",\"object\":\"chat.completion.chunk\",\"created\":1700000000,\"model\":\"gpt-4o-mini-2024-07-18\",\"system_fingerprint\":\"fp_bench\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\"Hello\"},\"logprobs\":null,\"finish_reason\":null}]}\n\n";
const CHUNK_BANG: &str = "data: {\"id\":\"chatcmpl-bench\",\"object\":\"chat.completion.chunk\",\"created\":1700000000,\"model\":\"gpt-4o-mini-2024-07-18\",\"system_fingerprint\":\"fp_bench\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\"!\"},\"logprobs\":null,\"finish_reason\":null}]}\n\n";
const CHUNK_STOP: &str = "data: {\"id\":\"chatcmpl-bench\",\"object\":\"chat.completion.chunk\",\"created\":1700000000,\"model\":\"gpt-4o-mini-2024-07-18\",\"system_fingerprint\":\"fp_bench\",\"choices\":[{\"index\":0,\"delta\":{},\"logprobs\":null,\"finish_reason\":\"stop\"}]}\n\n";
const CHUNK_USAGE: &str = "data: {\"id\":\"chatcmpl-bench\",\"object\":\"chat.completion.chunk\",\"created\":1700000000,\"model\":\"gpt-4o-mini-2024-07-18\",\"system_fingerprint\":\"fp_bench\",\"choices\":[],\"usage\":{\"prompt_tokens\":9,\"completion_tokens\":2,\"total_tokens\":11}}\n\n";
const DONE: &str = "data: [DONE]\n\n";

pub fn serve(listen: SocketAddr, threads: usize) {
    let rt = if threads <= 1 {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
    } else {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(threads)
            .enable_all()
            .build()
    }
    .expect("runtime");
    rt.block_on(async move {
        let listener = TcpListener::bind(listen).await.expect("bind upstream");
        eprintln!("keygate-bench upstream listening on {listen}");
        loop {
            let Ok((tcp, _)) = listener.accept().await else {
                continue;
            };
            let _ = tcp.set_nodelay(true);
            tokio::spawn(async move {
                let _ = http1::Builder::new()
                    .serve_connection(TokioIo::new(tcp), service_fn(handle))
                    .await;
            });
        }
    });
}

async fn handle(req: Request<Incoming>) -> Result<Response<BenchBody>, Infallible> {
    let path = req.uri().path().to_owned();
    if req.method() == Method::GET && path == "/bench/stats" {
        let stats = serde_json::json!({
            "requests": REQUESTS.load(Ordering::Relaxed),
            "hold_open": HOLD_OPEN.load(Ordering::Relaxed),
            "hold_total": HOLD_TOTAL.load(Ordering::Relaxed),
        });
        return Ok(json(StatusCode::OK, Bytes::from(stats.to_string())));
    }
    if req.method() != Method::POST || !path.ends_with("/chat/completions") {
        return Ok(json(
            StatusCode::NOT_FOUND,
            Bytes::from_static(br#"{"error":{"message":"not found","type":"invalid_request_error","param":null,"code":null}}"#),
        ));
    }
    REQUESTS.fetch_add(1, Ordering::Relaxed);
    let body = match req.into_body().collect().await {
        Ok(b) => b.to_bytes(),
        Err(_) => Bytes::new(),
    };
    if !stream_requested(&body) {
        return Ok(json(
            StatusCode::OK,
            Bytes::from_static(COMPLETION.as_bytes()),
        ));
    }
    let mut frames = VecDeque::with_capacity(6);
    frames.push_back(Bytes::from_static(CHUNK_ROLE.as_bytes()));
    let hold = if find(&body, b"bench-hold").is_some() {
        HOLD_OPEN.fetch_add(1, Ordering::Relaxed);
        HOLD_TOTAL.fetch_add(1, Ordering::Relaxed);
        Some(HoldGuard)
    } else {
        frames.push_back(Bytes::from_static(CHUNK_HELLO.as_bytes()));
        frames.push_back(Bytes::from_static(CHUNK_BANG.as_bytes()));
        frames.push_back(Bytes::from_static(CHUNK_STOP.as_bytes()));
        if find(&body, b"include_usage").is_some() {
            frames.push_back(Bytes::from_static(CHUNK_USAGE.as_bytes()));
        }
        frames.push_back(Bytes::from_static(DONE.as_bytes()));
        None
    };
    let mut res = Response::new(BenchBody {
        frames,
        hold,
        exact: None,
    });
    let h = res.headers_mut();
    h.insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static("text/event-stream; charset=utf-8"),
    );
    h.insert(
        hyper::header::CACHE_CONTROL,
        hyper::header::HeaderValue::from_static("no-cache"),
    );
    Ok(res)
}

fn json(status: StatusCode, bytes: Bytes) -> Response<BenchBody> {
    let len = bytes.len() as u64;
    let mut res = Response::new(BenchBody {
        frames: VecDeque::from([bytes]),
        hold: None,
        exact: Some(len),
    });
    *res.status_mut() = status;
    res.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static("application/json"),
    );
    res
}

/// `"stream"` followed by `:` and `true`, whatever the whitespace (peers re-serialise
/// the body with their own spacing).
fn stream_requested(body: &[u8]) -> bool {
    let needle = b"\"stream\"";
    let mut from = 0;
    while let Some(i) = find(&body[from..], needle) {
        let rest = &body[from + i + needle.len()..];
        let rest = trim_ws(rest);
        if let Some(rest) = rest.strip_prefix(b":")
            && trim_ws(rest).starts_with(b"true")
        {
            return true;
        }
        from += i + needle.len();
    }
    false
}

fn trim_ws(mut b: &[u8]) -> &[u8] {
    while let Some((first, rest)) = b.split_first() {
        if first.is_ascii_whitespace() {
            b = rest;
        } else {
            break;
        }
    }
    b
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

struct HoldGuard;

impl Drop for HoldGuard {
    fn drop(&mut self) {
        HOLD_OPEN.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Frames ready at once; then either the end, or (held) an open stream forever.
pub struct BenchBody {
    frames: VecDeque<Bytes>,
    hold: Option<HoldGuard>,
    exact: Option<u64>,
}

impl Body for BenchBody {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        let this = self.get_mut();
        if let Some(b) = this.frames.pop_front() {
            return Poll::Ready(Some(Ok(Frame::data(b))));
        }
        if this.hold.is_some() {
            // Never woken: the connection task is polled again only when the client
            // side does something (closes), and then this body is dropped.
            Poll::Pending
        } else {
            Poll::Ready(None)
        }
    }

    fn is_end_stream(&self) -> bool {
        self.frames.is_empty() && self.hold.is_none()
    }

    fn size_hint(&self) -> SizeHint {
        match self.exact {
            Some(n) => SizeHint::with_exact(n),
            None => SizeHint::default(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::stream_requested;

    #[test]
    fn detects_stream_flag_with_any_spacing() {
        assert!(stream_requested(br#"{"model":"m","stream":true}"#));
        assert!(stream_requested(br#"{"model": "m", "stream" : true}"#));
        assert!(!stream_requested(br#"{"model":"m","stream":false}"#));
        assert!(!stream_requested(
            br#"{"stream_options":{"include_usage":true}}"#
        ));
        assert!(!stream_requested(br#"{"model":"m"}"#));
    }
}
