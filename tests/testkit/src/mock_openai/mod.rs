//! A mock OpenAI upstream that speaks the real wire format.
//!
//! [`MockOpenAi::start`] binds `127.0.0.1:0` and serves on a dedicated thread with its own
//! tokio runtime, so it works the same under `#[tokio::test]`, `#[actix_web::test]`, and even
//! while the test thread blocks (e.g. on a Python or Node script). It is written on hyper rather
//! than actix-web because actix-web refuses to send a custom `Connection` response header, which
//! the `set-cookie` scenario needs to test hop-by-hop header stripping.
//!
//! Behaviour is chosen per request with the `x-mock-scenario` header (see [`scenario`]) and the
//! optional `x-mock-delay-ms` header. Every request except the `/__mock/*` control API is
//! recorded before it is answered.
//!
//! Control API (for scripts outside Rust):
//! - `GET /__mock/requests`: JSON array of `{method, path, headers: {name: value}, body, body_len}`
//! - `GET /__mock/stats`: `{"requests":N,"cancelled_streams":N,"completed_streams":N,
//!   "max_concurrent":N}`
//! - `POST /__mock/reset`: clears recorded requests and counters, answers with the stats.
//! - `POST /__mock/reject-key` with the key as the body: requests made with it get 401
//!   `invalid_api_key` from then on (like [`MockOpenAi::reject_key`]).
//! - `POST /__mock/restrict-key` with `{"key","path","scope"}`: requests made with the key
//!   to that path get the 401 of a restricted key lacking `scope` ("Missing scopes",
//!   `code: null`; like [`MockOpenAi::restrict_key`]).
//!
//! Deterministic content: chat answers are always [`REPLY_TEXT`], streamed as [`REPLY_PIECES`];
//! `completion_tokens` / `output_tokens` is the number of pieces (5) and `prompt_tokens` is
//! estimated as `3 + Σ(4 + ceil(chars/4))` over the messages (see [`fixtures`]).

mod body;
mod control;
pub mod fixtures;
mod routes;
pub mod scenario;
mod sse;

use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use hyper::body::{Body as _, Incoming};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use tokio::sync::oneshot;

pub use fixtures::{REPLY_PIECES, REPLY_TEXT};
pub use routes::{HUGE_ERROR_LEN, REJECTED_KEY_PREFIX, garbage_sse_events};

use body::MockBody;

/// A running mock OpenAI upstream. Dropping it stops the server.
pub struct MockOpenAi {
    addr: SocketAddr,
    shared: Arc<Shared>,
    // Dropping the sender wakes the accept loop, which then shuts the runtime down.
    _stop: oneshot::Sender<()>,
}

/// One request as the mock received it.
#[derive(Clone, Debug)]
pub struct RecordedRequest {
    pub method: String,
    /// Path plus `?query` when there is one, e.g. `/v1/files?purpose=x`.
    pub path: String,
    /// Header names are lowercase; a header sent several times appears several times.
    pub headers: Vec<(String, String)>,
    pub body: Bytes,
}

impl RecordedRequest {
    /// First value of a header (name compared case-insensitively).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// The body parsed as JSON, if it is JSON.
    pub fn json(&self) -> Option<serde_json::Value> {
        serde_json::from_slice(&self.body).ok()
    }
}

/// State shared between the server thread and the test.
#[derive(Default)]
pub(crate) struct Shared {
    requests: Mutex<Vec<RecordedRequest>>,
    cancelled_streams: AtomicUsize,
    completed_streams: AtomicUsize,
    /// Requests being answered now (until the response head is sent), and the most at once.
    open: AtomicUsize,
    max_open: AtomicUsize,
    /// Keys answered 401 `invalid_api_key` from now on (as OpenAI does for a key that
    /// was revoked after it was stored).
    rejected_keys: Mutex<Vec<String>>,
    /// `(key, path, scope)`: requests made with `key` to `path` get OpenAI's 401 for a
    /// restricted key lacking a permission ("Missing scopes: <scope>", `code: null`).
    restricted: Mutex<Vec<(String, String, String)>>,
}

impl Shared {
    pub(crate) fn is_rejected(&self, key: &str) -> bool {
        self.rejected_keys
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .any(|k| k == key)
    }

    /// The permission `key` lacks for `path`, if it was restricted there.
    pub(crate) fn missing_scope(&self, key: &str, path: &str) -> Option<String> {
        self.restricted
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .find(|(k, p, _)| k == key && p == path)
            .map(|(_, _, scope)| scope.clone())
    }

    fn restrict_key(&self, key: &str, path: &str, scope: &str) {
        self.restricted
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push((key.to_owned(), path.to_owned(), scope.to_owned()));
    }

    fn reject_key(&self, key: &str) {
        self.rejected_keys
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(key.to_owned());
    }

    fn lock_requests(&self) -> MutexGuard<'_, Vec<RecordedRequest>> {
        // A panic while holding the lock cannot leave the Vec half-updated; keep going.
        self.requests.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn record(&self, req: RecordedRequest) {
        self.lock_requests().push(req);
    }

    fn reset(&self) {
        self.lock_requests().clear();
        self.cancelled_streams.store(0, Ordering::SeqCst);
        self.completed_streams.store(0, Ordering::SeqCst);
        self.max_open.store(0, Ordering::SeqCst);
    }

    fn stats(&self) -> serde_json::Value {
        serde_json::json!({
            "requests": self.lock_requests().len(),
            "cancelled_streams": self.cancelled_streams.load(Ordering::SeqCst),
            "completed_streams": self.completed_streams.load(Ordering::SeqCst),
            "max_concurrent": self.max_open.load(Ordering::SeqCst),
        })
    }
}

impl MockOpenAi {
    /// Starts the mock on `127.0.0.1:0` (own thread and runtime; callable from any async test).
    ///
    /// Panics if the loopback port cannot be bound; use [`MockOpenAi::try_start`] to get the error.
    pub async fn start() -> MockOpenAi {
        match Self::try_start() {
            Ok(mock) => mock,
            Err(err) => start_failed(&err),
        }
    }

    /// Like [`MockOpenAi::start`], but returns setup errors. Does not need an async context.
    pub fn try_start() -> std::io::Result<MockOpenAi> {
        let listener = std::net::TcpListener::bind(("127.0.0.1", 0))?;
        listener.set_nonblocking(true)?;
        let addr = listener.local_addr()?;
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("mock-openai-rt")
            .enable_all()
            .build()?;
        let shared = Arc::new(Shared::default());
        let (stop_tx, stop_rx) = oneshot::channel();
        let thread_shared = Arc::clone(&shared);
        std::thread::Builder::new()
            .name("mock-openai".to_owned())
            .spawn(move || {
                runtime.block_on(accept_loop(listener, thread_shared, stop_rx));
                // In-flight connections are dropped (not awaited).
                runtime.shutdown_background();
            })?;
        Ok(MockOpenAi {
            addr,
            shared,
            _stop: stop_tx,
        })
    }

    /// `http://127.0.0.1:PORT/v1`
    pub fn base_url(&self) -> String {
        format!("http://{}/v1", self.addr)
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Every request received (except the `/__mock/*` control API), in arrival order.
    pub fn requests(&self) -> Vec<RecordedRequest> {
        self.shared.lock_requests().clone()
    }

    pub fn request_count(&self) -> usize {
        self.shared.lock_requests().len()
    }

    /// Waits until more than `seen` requests have arrived (a request the test sent is
    /// now held by the mock), at most `within`; whether they did.
    pub async fn wait_for_more_than(&self, seen: usize, within: std::time::Duration) -> bool {
        let deadline = std::time::Instant::now() + within;
        while self.request_count() <= seen {
            if std::time::Instant::now() >= deadline {
                return false;
            }
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
        true
    }

    /// SSE responses whose body was dropped before it finished (the client went away).
    pub fn cancelled_streams(&self) -> usize {
        self.shared.cancelled_streams.load(Ordering::SeqCst)
    }

    /// SSE responses whose body was sent to the end. A deliberate `reset-mid-stream` counts as
    /// neither completed nor cancelled.
    pub fn completed_streams(&self) -> usize {
        self.shared.completed_streams.load(Ordering::SeqCst)
    }

    /// From now on, requests made with `key` are refused with 401 `invalid_api_key`, as
    /// OpenAI refuses a key that was revoked after it was stored in keygate.
    pub fn reject_key(&self, key: &str) {
        self.shared.reject_key(key);
    }

    /// From now on, requests made with `key` to `path` (e.g. `/v1/responses`) are
    /// refused as OpenAI refuses a restricted project key that lacks the permission
    /// `scope` (e.g. `api.responses.write`): 401, "You have insufficient permissions for
    /// this operation. Missing scopes: <scope>. ...", `code: null`. The key keeps
    /// working everywhere else.
    pub fn restrict_key(&self, key: &str, path: &str, scope: &str) {
        self.shared.restrict_key(key, path, scope);
    }

    /// The most requests the mock was answering at the same time (from receipt to the
    /// response head: with `slow-first-byte`, the whole wait).
    pub fn max_concurrent(&self) -> usize {
        self.shared.max_open.load(Ordering::SeqCst)
    }

    /// Clears recorded requests and the stream counters.
    pub fn reset(&self) {
        self.shared.reset();
    }

    /// Polls until at least `n` streams were cancelled; false if `timeout` passed first.
    pub async fn wait_for_cancelled(&self, n: usize, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        loop {
            if self.cancelled_streams() >= n {
                return true;
            }
            if Instant::now() >= deadline {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}

impl std::fmt::Debug for MockOpenAi {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MockOpenAi")
            .field("addr", &self.addr)
            .finish_non_exhaustive()
    }
}

// A test helper that cannot bind a loopback port cannot do anything useful: fail the test loudly.
#[allow(clippy::panic)]
fn start_failed(err: &std::io::Error) -> ! {
    panic!("mock OpenAI upstream failed to start: {err}")
}

async fn accept_loop(
    listener: std::net::TcpListener,
    shared: Arc<Shared>,
    mut stop: oneshot::Receiver<()>,
) {
    let listener = match tokio::net::TcpListener::from_std(listener) {
        Ok(listener) => listener,
        Err(err) => {
            tracing::error!(%err, "mock openai: cannot register listener");
            return;
        }
    };
    loop {
        tokio::select! {
            _ = &mut stop => break,
            accepted = listener.accept() => match accepted {
                Ok((stream, _peer)) => {
                    let _ = stream.set_nodelay(true);
                    let shared = Arc::clone(&shared);
                    tokio::spawn(async move {
                        let service = service_fn(move |req| serve(req, Arc::clone(&shared)));
                        if let Err(err) = http1::Builder::new()
                            .serve_connection(TokioIo::new(stream), service)
                            .await
                        {
                            tracing::debug!(%err, "mock openai: connection ended with an error");
                        }
                    });
                }
                Err(err) => {
                    tracing::warn!(%err, "mock openai: accept failed");
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
            },
        }
    }
}

/// Counts a request as open while it is being answered.
struct OpenGuard(Arc<Shared>);

impl OpenGuard {
    fn new(shared: &Arc<Shared>) -> Self {
        let now = shared.open.fetch_add(1, Ordering::SeqCst) + 1;
        shared.max_open.fetch_max(now, Ordering::SeqCst);
        Self(Arc::clone(shared))
    }
}

impl Drop for OpenGuard {
    fn drop(&mut self) {
        self.0.open.fetch_sub(1, Ordering::SeqCst);
    }
}

async fn read_body(mut body: Incoming) -> (Bytes, Option<hyper::Error>) {
    let mut buf = BytesMut::new();
    loop {
        match std::future::poll_fn(|cx| Pin::new(&mut body).poll_frame(cx)).await {
            None => return (buf.freeze(), None),
            Some(Ok(frame)) => {
                if let Ok(data) = frame.into_data() {
                    buf.extend_from_slice(&data);
                }
            }
            Some(Err(err)) => return (buf.freeze(), Some(err)),
        }
    }
}

/// The `reset-before-head` scenario's "error": the connection is closed unanswered.
#[derive(Debug)]
struct ResetBeforeHead;

impl std::fmt::Display for ResetBeforeHead {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("mock: reset-before-head")
    }
}

impl std::error::Error for ResetBeforeHead {}

async fn serve(
    req: Request<Incoming>,
    shared: Arc<Shared>,
) -> Result<Response<MockBody>, ResetBeforeHead> {
    let started = Instant::now();
    let (parts, body) = req.into_parts();
    let (body, body_err) = read_body(body).await;
    let path = parts.uri.path().to_owned();
    let query = parts.uri.query().map(str::to_owned);

    if let Some(op) = path.strip_prefix("/__mock/") {
        return Ok(control::handle(&parts.method, op, &body, &shared));
    }

    let _open = OpenGuard::new(&shared);
    shared.record(RecordedRequest {
        method: parts.method.as_str().to_owned(),
        path: match &query {
            Some(q) => format!("{path}?{q}"),
            None => path.clone(),
        },
        headers: parts
            .headers
            .iter()
            .map(|(k, v)| {
                (
                    k.as_str().to_owned(),
                    String::from_utf8_lossy(v.as_bytes()).into_owned(),
                )
            })
            .collect(),
        body: body.clone(),
    });

    if let Some(err) = body_err {
        let mut resp = routes::error_response(
            hyper::StatusCode::BAD_REQUEST,
            &format!("mock: failed to read the request body: {err}"),
            "invalid_request_error",
            None,
        );
        routes::add_openai_headers(&mut resp, started);
        return Ok(resp);
    }

    if matches!(
        scenario::Knobs::from_headers(&parts.headers).map(|k| k.scenario),
        Ok(scenario::Scenario::ResetBeforeHead)
    ) {
        // hyper closes the connection when the service fails: no response at all.
        return Err(ResetBeforeHead);
    }

    let ctx = routes::Ctx {
        method: parts.method,
        path,
        query,
        headers: parts.headers,
        body,
        shared,
        started,
    };
    Ok(routes::handle(ctx).await)
}
