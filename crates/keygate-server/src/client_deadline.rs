//! Deadlines on what a client sends, so a slow client (slowloris) cannot hold a
//! connection and a worker's attention forever.
//!
//! actix-http times only the head of a connection's *first* request
//! (`client_request_timeout`) and has no timeout on request bodies: a client that
//! sends one quick request and then dribbles the next head a byte at a time, or that
//! announces a body and never sends it, kept its connection open indefinitely
//! (docs/SECURITY.md, "Hostile input"). Two rules close that:
//!
//! - **Heads.** Each accepted connection is wrapped in [`GuardedIo`], which knows (from
//!   [`middleware`], through the connection's extensions) whether a request is being
//!   served. While none is, a request head must be complete within
//!   `client_head_timeout` of its first byte; past it, reads end (EOF) and actix closes
//!   the connection after writing what it has. The first request's head is timed by
//!   actix itself (from the accept, answered 408), and a silent idle connection is
//!   closed by actix's keep-alive timer (5 s).
//! - **Bodies.** [`middleware`] wraps every request's payload: more than
//!   `client_body_idle_timeout` without a byte, or more than `client_body_timeout` for
//!   the whole body, and the payload fails with a [`BodyTimeout`] I/O error, which the
//!   proxy and the JSON/form extractors answer with 408 `request_timeout`; the
//!   connection is then closed (what is left of the body cannot be told from a next
//!   request).
//!
//! Everything here runs on the connection's own actix worker thread (the I/O, the
//! dispatcher and the request's service share it), so the shared state is an `Rc`.

use std::cell::Cell;
use std::future::Future;
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll};
use std::time::Duration;

use actix_web::body::{BodySize, MessageBody};
use actix_web::dev::{Payload, ServiceRequest, ServiceResponse};
use actix_web::error::PayloadError;
use actix_web::middleware::Next;
use actix_web::{HttpMessage, web};
use bytes::Bytes;
use futures::Stream;
use pin_project_lite::pin_project;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio::time::{Instant, Sleep};

use crate::state::AppState;

/// A deadline noticed this long after it passed was not the client's doing: keygate
/// itself was not running (the process was paused, the machine stalled). The client then
/// gets [`GRACE`] more instead of being cut for keygate's absence.
const STALL: Duration = Duration::from_millis(500);
const GRACE: Duration = Duration::from_secs(1);

fn stalled(now: Instant, deadline: Instant) -> bool {
    now.saturating_duration_since(deadline) > STALL
}

/// The configured deadlines (`Config::client`).
#[derive(Clone, Copy, Debug)]
pub struct ClientDeadlines {
    /// A request head: the first from the accept, the next ones from their first byte.
    pub head: Duration,
    /// The longest silence inside a request body.
    pub body_idle: Duration,
    /// A whole request body.
    pub body: Duration,
}

/// The I/O error a payload fails with when a body deadline passed. The proxy and the
/// extractors' error handlers look for it ([`is_body_timeout`]).
#[derive(Debug, thiserror::Error)]
#[error("the request body did not arrive in time")]
pub struct BodyTimeout;

/// Whether a payload error is a passed body deadline.
pub fn is_body_timeout(err: &PayloadError) -> bool {
    match err {
        PayloadError::Io(e) => e.get_ref().is_some_and(|inner| inner.is::<BodyTimeout>()),
        _ => false,
    }
}

/// Per connection: how many of its requests are being served, and when the first
/// byte of the next head arrived while none was.
#[derive(Clone)]
pub struct ConnState(Rc<Inner>);

struct Inner {
    busy: Cell<u32>,
    head_started: Cell<Option<Instant>>,
}

impl ConnState {
    fn new() -> Self {
        Self(Rc::new(Inner {
            busy: Cell::new(0),
            head_started: Cell::new(None),
        }))
    }

    /// The head deadline: while no request is being served and a head has begun.
    fn head_deadline(&self, head: Duration) -> Option<Instant> {
        if self.0.busy.get() > 0 {
            return None;
        }
        self.0.head_started.get().map(|at| at + head)
    }

    /// Bytes arrived: when no request is being served, a head has begun (if it had
    /// not already). `true` when this started one.
    fn bytes_arrived(&self) -> bool {
        let starts = self.0.busy.get() == 0 && self.0.head_started.get().is_none();
        if starts {
            self.0.head_started.set(Some(Instant::now()));
        }
        starts
    }

    fn enter(&self) -> Busy {
        self.0.busy.set(self.0.busy.get() + 1);
        self.0.head_started.set(None);
        Busy(self.clone())
    }
}

/// A request being served; dropped with its answer's body.
struct Busy(ConnState);

impl Drop for Busy {
    fn drop(&mut self) {
        let inner = &(self.0).0;
        inner.busy.set(inner.busy.get().saturating_sub(1));
        inner.head_started.set(None);
    }
}

/// A client connection whose reads end once a request head is overdue.
pub struct GuardedIo {
    io: TcpStream,
    state: ConnState,
    head: Duration,
    timer: Pin<Box<Sleep>>,
    armed_for: Option<Instant>,
}

impl GuardedIo {
    pub fn new(io: TcpStream, head: Duration) -> Self {
        Self {
            io,
            state: ConnState::new(),
            head,
            timer: Box::pin(tokio::time::sleep(head)),
            armed_for: None,
        }
    }

    pub fn peer_addr(&self) -> Option<std::net::SocketAddr> {
        self.io.peer_addr().ok()
    }

    pub fn set_nodelay(&self) {
        let _ = self.io.set_nodelay(true);
    }

    /// What [`middleware`] finds in the connection's extensions.
    pub fn state(&self) -> ConnState {
        self.state.clone()
    }

    /// `true` when the head deadline has passed (and the timer is armed otherwise, so
    /// a client that goes silent mid-head is noticed too).
    fn overdue(&mut self, cx: &mut Context<'_>) -> bool {
        let Some(mut deadline) = self.state.head_deadline(self.head) else {
            return false;
        };
        let now = Instant::now();
        if now >= deadline {
            if !stalled(now, deadline) {
                return true;
            }
            // keygate itself was not running: the client gets a fresh grace.
            self.state.0.head_started.set(Some(now + GRACE - self.head));
            deadline = now + GRACE;
        }
        if self.armed_for != Some(deadline) {
            self.timer.as_mut().reset(deadline);
            self.armed_for = Some(deadline);
        }
        // Ready only if the deadline passed meanwhile; judged again on the next poll.
        if self.timer.as_mut().poll(cx).is_ready() {
            cx.waker().wake_by_ref();
        }
        false
    }
}

impl AsyncRead for GuardedIo {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        // Read first, judge only when nothing has come: bytes that did arrive are never
        // thrown away (after a pause of the whole process, say), and a client that
        // dribbles is still caught by the next read that finds nothing.
        match Pin::new(&mut this.io).poll_read(cx, buf) {
            Poll::Ready(Ok(())) => {
                if buf.filled().len() > before && this.state.bytes_arrived() {
                    // Arms the timer (and registers this task with it).
                    let _ = this.overdue(cx);
                }
                Poll::Ready(Ok(()))
            }
            // EOF, not an error: actix then writes out what it has and closes.
            Poll::Pending if this.overdue(cx) => Poll::Ready(Ok(())),
            other => other,
        }
    }
}

impl AsyncWrite for GuardedIo {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.get_mut().io).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.get_mut().io).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }
}

/// Marks the connection busy while a request is served (until its answer's body is
/// finished or dropped), and puts the body deadlines on its payload.
pub async fn middleware(
    mut req: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
) -> Result<ServiceResponse<impl MessageBody>, actix_web::Error> {
    let busy = req.conn_data::<ConnState>().map(ConnState::enter);
    let deadlines = req
        .app_data::<web::Data<AppState>>()
        .map(|st| st.config.client);
    let timed_out = Rc::new(Cell::new(false));
    if let Some(d) = deadlines {
        let payload = req.take_payload();
        req.set_payload(Payload::Stream {
            payload: Box::pin(TimedPayload {
                inner: payload,
                idle_after: d.body_idle,
                idle: tokio::time::sleep(d.body_idle),
                whole: tokio::time::sleep(d.body),
                timed_out: timed_out.clone(),
                done: false,
            }),
        });
    }
    let mut res = next.call(req).await?;
    if timed_out.get() {
        // The rest of the body may still come: it must not be read as a next request.
        res.response_mut()
            .head_mut()
            .set_connection_type(actix_web::http::ConnectionType::Close);
    }
    Ok(res.map_body(move |_, body| BusyBody { body, _busy: busy }))
}

pin_project! {
    struct TimedPayload {
        inner: Payload,
        idle_after: Duration,
        #[pin]
        idle: Sleep,
        #[pin]
        whole: Sleep,
        timed_out: Rc<Cell<bool>>,
        done: bool,
    }
}

impl Stream for TimedPayload {
    type Item = Result<Bytes, PayloadError>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let mut this = self.project();
        if *this.done {
            return Poll::Ready(None);
        }
        match Pin::new(&mut *this.inner).poll_next(cx) {
            Poll::Ready(Some(Ok(chunk))) => {
                this.idle.as_mut().reset(Instant::now() + *this.idle_after);
                return Poll::Ready(Some(Ok(chunk)));
            }
            Poll::Ready(other) => {
                *this.done = other.is_none();
                return Poll::Ready(other);
            }
            Poll::Pending => {}
        }
        let now = Instant::now();
        let mut fired = false;
        for mut sleep in [this.idle.as_mut(), this.whole.as_mut()] {
            if sleep.as_mut().poll(cx).is_ready() {
                if stalled(now, sleep.deadline()) {
                    // keygate itself was not running: the client gets a fresh grace.
                    sleep.as_mut().reset(now + GRACE);
                    let _ = sleep.as_mut().poll(cx);
                } else {
                    fired = true;
                }
            }
        }
        if fired {
            *this.done = true;
            this.timed_out.set(true);
            return Poll::Ready(Some(Err(PayloadError::Io(std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                BodyTimeout,
            )))));
        }
        Poll::Pending
    }
}

pin_project! {
    /// The answer's body; the request counts as served until it is finished or dropped.
    struct BusyBody<B> {
        #[pin]
        body: B,
        _busy: Option<Busy>,
    }
}

impl<B: MessageBody> MessageBody for BusyBody<B> {
    type Error = B::Error;

    fn size(&self) -> BodySize {
        self.body.size()
    }

    fn poll_next(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Bytes, Self::Error>>> {
        self.project().body.poll_next(cx)
    }
}
