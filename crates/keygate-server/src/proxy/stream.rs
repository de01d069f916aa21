//! Phase 6: the answer, streamed back chunk by chunk as it arrives.
//!
//! The body is polled straight from the upstream connection: no buffering, so SSE
//! events reach the app as they are produced, and dropping the response (the app went
//! away) drops the upstream request. If the upstream stalls past the idle timeout or
//! breaks, the stream ends *abnormally* — the connection is cut without the final
//! chunk, never with a fabricated `[DONE]`. For SSE, when the break falls between
//! events, an OpenAI-shaped `error` event goes first so the SDKs raise a clear error.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use actix_web::body::SizedStream;
use actix_web::http::StatusCode;
use actix_web::http::header::{HeaderName, HeaderValue};
use actix_web::{HttpRequest, HttpResponse};
use bytes::Bytes;
use futures::Stream;
use pin_project_lite::pin_project;

use super::account::{Account, BodyKind, Outcome};
use super::headers::downstream_headers;
use super::{AuthenticatedGrant, ProxyCtx};
use crate::error::{ServerError, UpstreamError};
use crate::state::AppState;

pub fn respond(
    st: &AppState,
    req: &HttpRequest,
    upstream: reqwest::Response,
    grant: AuthenticatedGrant,
    ctx: ProxyCtx,
    mut account: Account,
) -> HttpResponse {
    let status =
        StatusCode::from_u16(upstream.status().as_u16()).unwrap_or(StatusCode::BAD_GATEWAY);
    let mut res = HttpResponse::build(status);
    let upstream_headers = upstream.headers();
    let pairs: Vec<(&str, &[u8])> = upstream_headers
        .iter()
        .map(|(n, v)| (n.as_str(), v.as_bytes()))
        .collect();
    for (name, value) in downstream_headers(&pairs) {
        if let (Ok(n), Ok(v)) = (
            HeaderName::from_bytes(name.as_bytes()),
            HeaderValue::from_bytes(&value),
        ) {
            res.append_header((n, v));
        }
    }
    let content_type = |prefix: &str| {
        upstream_headers
            .get(reqwest::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|ct| {
                ct.trim_start()
                    .get(..prefix.len())
                    .is_some_and(|p| p.eq_ignore_ascii_case(prefix))
            })
    };
    let is_sse = content_type("text/event-stream");
    // keygate asks for `identity`; an upstream that compresses anyway cannot be read.
    let encoded = upstream_headers
        .get_all(reqwest::header::CONTENT_ENCODING)
        .iter()
        .any(|v| {
            !v.to_str()
                .is_ok_and(|v| v.trim().eq_ignore_ascii_case("identity"))
        });
    let body_kind = match () {
        () if encoded => BodyKind::Encoded,
        () if is_sse => BodyKind::Sse,
        () if content_type("application/json") => BodyKind::Json,
        () => BodyKind::Other,
    };
    account.read(body_kind);
    if is_sse {
        // Tell buffering reverse proxies in front of keygate to pass events through.
        res.insert_header(("x-accel-buffering", "no"));
    }
    let content_length = upstream.content_length();
    let no_body = req.method() == actix_web::http::Method::HEAD
        || status == StatusCode::NO_CONTENT
        || status == StatusCode::NOT_MODIFIED;
    if no_body {
        account.end(Outcome::Completed);
        return res.finish();
    }
    let meter = Meter {
        grant_id: grant.id().to_string(),
        model: account.model().map(str::to_owned),
        request_id: ctx.request_id,
        started: ctx.started,
        bytes: 0,
        outcome: Outcome::Abandoned,
        account,
    };
    let body = UpstreamBody {
        inner: upstream.bytes_stream(),
        idle: tokio::time::sleep(st.config.upstream.idle),
        idle_after: st.config.upstream.idle,
        sse: is_sse,
        at_boundary: true,
        last_byte: None,
        state: State::Streaming,
        meter,
    };
    match content_length {
        Some(len) if !is_sse => res.body(SizedStream::new(len, body)),
        _ => res.streaming(body),
    }
}

enum State {
    Streaming,
    /// Fail on the next poll; `flushed` once we have returned `Pending` one time, so
    /// actix writes out the error event before it sees the error and cuts the line.
    Fail {
        err: std::io::Error,
        flushed: bool,
    },
    Done,
}

/// Owned by the response stream: when the stream ends *or is dropped* it logs how the
/// response went and settles its account (usage counted, lease released).
struct Meter {
    grant_id: String,
    model: Option<String>,
    request_id: String,
    started: std::time::Instant,
    bytes: u64,
    outcome: Outcome,
    account: Account,
}

impl Drop for Meter {
    fn drop(&mut self) {
        self.account.end(self.outcome);
        tracing::info!(
            request_id = %self.request_id,
            grant_id = %self.grant_id,
            model = self.model.as_deref(),
            bytes = self.bytes,
            outcome = ?self.outcome,
            elapsed_ms = self.started.elapsed().as_millis() as u64,
            "upstream response finished"
        );
    }
}

pin_project! {
    struct UpstreamBody<S> {
        #[pin]
        inner: S,
        #[pin]
        idle: tokio::time::Sleep,
        idle_after: Duration,
        sse: bool,
        at_boundary: bool,
        last_byte: Option<u8>,
        state: State,
        meter: Meter,
    }
}

impl<S> Stream for UpstreamBody<S>
where
    S: Stream<Item = Result<Bytes, reqwest::Error>>,
{
    type Item = Result<Bytes, std::io::Error>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let mut this = self.project();
        match std::mem::replace(this.state, State::Streaming) {
            State::Streaming => {}
            State::Fail {
                err,
                flushed: false,
            } => {
                *this.state = State::Fail { err, flushed: true };
                cx.waker().wake_by_ref();
                return Poll::Pending;
            }
            State::Fail { err, flushed: true } => {
                *this.state = State::Done;
                return Poll::Ready(Some(Err(err)));
            }
            State::Done => {
                *this.state = State::Done;
                return Poll::Ready(None);
            }
        }
        loop {
            return match this.inner.as_mut().poll_next(cx) {
                Poll::Ready(Some(Ok(chunk))) => {
                    let deadline = tokio::time::Instant::now() + *this.idle_after;
                    this.idle.as_mut().reset(deadline);
                    let chunk = this.meter.account.feed(chunk);
                    if chunk.is_empty() {
                        // All held back (an SSE event not complete yet): read on.
                        continue;
                    }
                    this.meter.bytes += chunk.len() as u64;
                    track_boundary(this.at_boundary, this.last_byte, &chunk);
                    Poll::Ready(Some(Ok(chunk)))
                }
                Poll::Ready(None) => {
                    this.meter.outcome = Outcome::Completed;
                    *this.state = State::Done;
                    let rest = this.meter.account.finish();
                    if rest.is_empty() {
                        Poll::Ready(None)
                    } else {
                        this.meter.bytes += rest.len() as u64;
                        Poll::Ready(Some(Ok(rest)))
                    }
                }
                Poll::Ready(Some(Err(e))) => {
                    tracing::warn!(request_id = %this.meter.request_id, error = %e, "upstream broke mid-response");
                    this.meter.outcome = Outcome::UpstreamBroke;
                    let err = UpstreamError::BrokeMidStream;
                    Poll::Ready(Some(fail(this.state, *this.sse && *this.at_boundary, err)))
                }
                Poll::Pending => match this.idle.as_mut().poll(cx) {
                    Poll::Ready(()) => {
                        tracing::warn!(request_id = %this.meter.request_id, "upstream idle timeout mid-response");
                        this.meter.outcome = Outcome::IdleTimeout;
                        let err = UpstreamError::IdleMidStream(*this.idle_after);
                        Poll::Ready(Some(fail(this.state, *this.sse && *this.at_boundary, err)))
                    }
                    Poll::Pending => Poll::Pending,
                },
            };
        }
    }
}

/// Ends the stream abnormally; for SSE at an event boundary, an `error` event first.
fn fail(state: &mut State, error_event: bool, err: UpstreamError) -> Result<Bytes, std::io::Error> {
    let err = ServerError::from(err).to_openai();
    let io = std::io::Error::other(err.message.clone());
    if error_event {
        let event = Bytes::from(format!("data: {}\n\n", err.to_json()));
        *state = State::Fail {
            err: io,
            flushed: false,
        };
        Ok(event)
    } else {
        *state = State::Done;
        Err(io)
    }
}

/// SSE events end with a blank line; remember whether the bytes so far end on one.
fn track_boundary(at_boundary: &mut bool, last_byte: &mut Option<u8>, chunk: &[u8]) {
    let Some(&end) = chunk.last() else { return };
    let prev = if chunk.len() >= 2 {
        chunk.get(chunk.len() - 2).copied()
    } else {
        *last_byte
    };
    *at_boundary = end == b'\n' && matches!(prev, Some(b'\n'));
    *last_byte = Some(end);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn boundary_tracking() {
        let (mut at, mut last) = (true, None);
        track_boundary(&mut at, &mut last, b"data: {}\n\n");
        assert!(at);
        track_boundary(&mut at, &mut last, b"data: {\"a\"");
        assert!(!at);
        track_boundary(&mut at, &mut last, b"}\n");
        assert!(!at);
        track_boundary(&mut at, &mut last, b"\n");
        assert!(at);
        track_boundary(&mut at, &mut last, b"");
        assert!(at);
    }
}
