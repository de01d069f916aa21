//! Response bodies: a whole buffer, or a paced sequence of chunks (one body frame per step).

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use hyper::body::{Body, Frame, SizeHint};

use super::Shared;

/// One step of a paced body.
pub(crate) enum Step {
    /// Yield this chunk as its own body frame.
    Send(Bytes),
    /// Wait (the server flushes what it has meanwhile).
    Sleep(Duration),
    /// Return `Pending` once so the server writes out what it has buffered.
    Flush,
    /// End the body with an error: the connection is closed without the final chunk.
    Fail(&'static str),
}

pub(crate) type Steps = Box<dyn Iterator<Item = Step> + Send>;

/// Counts a stream as completed or cancelled when its body is dropped.
pub(crate) struct StreamGuard {
    shared: Arc<Shared>,
    outcome: Option<Outcome>,
}

#[derive(Clone, Copy)]
enum Outcome {
    Completed,
    /// Deliberately broken by the scenario: counts as neither completed nor cancelled.
    Aborted,
}

impl StreamGuard {
    pub(crate) fn new(shared: Arc<Shared>) -> Self {
        StreamGuard {
            shared,
            outcome: None,
        }
    }
}

impl Drop for StreamGuard {
    fn drop(&mut self) {
        match self.outcome {
            None => {
                self.shared.cancelled_streams.fetch_add(1, Ordering::SeqCst);
            }
            Some(Outcome::Completed) => {
                self.shared.completed_streams.fetch_add(1, Ordering::SeqCst);
            }
            Some(Outcome::Aborted) => {}
        }
    }
}

pub(crate) struct MockBody {
    inner: Inner,
}

enum Inner {
    Full(Option<Bytes>),
    Paced {
        steps: Steps,
        sleep: Option<Pin<Box<tokio::time::Sleep>>>,
        guard: Option<StreamGuard>,
        done: bool,
    },
}

impl MockBody {
    pub(crate) fn full(bytes: impl Into<Bytes>) -> Self {
        let bytes: Bytes = bytes.into();
        MockBody {
            inner: Inner::Full((!bytes.is_empty()).then_some(bytes)),
        }
    }

    pub(crate) fn paced(steps: Steps, guard: Option<StreamGuard>) -> Self {
        MockBody {
            inner: Inner::Paced {
                steps,
                sleep: None,
                guard,
                done: false,
            },
        }
    }
}

impl Body for MockBody {
    type Data = Bytes;
    type Error = std::io::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        match &mut self.get_mut().inner {
            Inner::Full(bytes) => Poll::Ready(bytes.take().map(|b| Ok(Frame::data(b)))),
            Inner::Paced {
                steps,
                sleep,
                guard,
                done,
            } => loop {
                if *done {
                    return Poll::Ready(None);
                }
                if let Some(timer) = sleep {
                    if timer.as_mut().poll(cx).is_pending() {
                        return Poll::Pending;
                    }
                    *sleep = None;
                }
                match steps.next() {
                    None => {
                        *done = true;
                        if let Some(guard) = guard {
                            guard.outcome = Some(Outcome::Completed);
                        }
                        return Poll::Ready(None);
                    }
                    Some(Step::Send(bytes)) => return Poll::Ready(Some(Ok(Frame::data(bytes)))),
                    Some(Step::Sleep(duration)) => {
                        if !duration.is_zero() {
                            *sleep = Some(Box::pin(tokio::time::sleep(duration)));
                        }
                    }
                    Some(Step::Flush) => {
                        cx.waker().wake_by_ref();
                        return Poll::Pending;
                    }
                    Some(Step::Fail(msg)) => {
                        *done = true;
                        if let Some(guard) = guard {
                            guard.outcome = Some(Outcome::Aborted);
                        }
                        return Poll::Ready(Some(Err(std::io::Error::new(
                            std::io::ErrorKind::ConnectionAborted,
                            msg,
                        ))));
                    }
                }
            },
        }
    }

    fn is_end_stream(&self) -> bool {
        match &self.inner {
            Inner::Full(bytes) => bytes.is_none(),
            Inner::Paced { done, .. } => *done,
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.inner {
            Inner::Full(Some(bytes)) => SizeHint::with_exact(bytes.len() as u64),
            Inner::Full(None) => SizeHint::with_exact(0),
            Inner::Paced { .. } => SizeHint::default(),
        }
    }
}

/// How a list of events is paced.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Pacing {
    /// Wait this long before each event after the first (zero: just flush between events).
    Every(Duration),
    /// Send `n` events, wait, then send the rest without waiting.
    StallAfter(usize, Duration),
    /// Send `n` events, then break the connection.
    FailAfter(usize),
}

pub(crate) fn paced_steps(events: Vec<Bytes>, pacing: Pacing) -> Steps {
    let mut steps = Vec::with_capacity(events.len() * 2 + 2);
    for (i, event) in events.into_iter().enumerate() {
        if i > 0 {
            match pacing {
                Pacing::Every(d) if !d.is_zero() => steps.push(Step::Sleep(d)),
                Pacing::StallAfter(n, d) if i == n => steps.push(Step::Sleep(d)),
                Pacing::FailAfter(n) if i == n => {
                    // Let the server flush what was sent before the connection breaks.
                    steps.push(Step::Sleep(Duration::from_millis(20)));
                    steps.push(Step::Fail("mock: reset-mid-stream"));
                    break;
                }
                _ => steps.push(Step::Flush),
            }
        }
        steps.push(Step::Send(event));
    }
    Box::new(steps.into_iter())
}
