//! Phase 7: account. Owned by the response stream, it reads the answer's usage as the
//! bytes pass — SSE through `keygate_core::usage::SseScanner` (which also removes the
//! usage chunk keygate asked for on the app's behalf), JSON by keeping the last
//! [`TAIL`] bytes for `usage::from_json_tail` (references to the chunks, no copies) —
//! and when the stream ends *or is dropped* it prices the usage and settles the lease.
//!
//! * A complete answer with usage: counted exactly.
//! * An SSE answer cut short (the app went away, the upstream broke or stalled), or
//!   one that never said its usage: estimated — the prompt (counted now if the
//!   reservation did not) plus the streamed text's tokens — and marked `estimated`.
//! * A JSON answer cut short: the prompt plus the output it allowed, `estimated`
//!   (OpenAI bills the whole answer even if nobody reads it).
//! * An error answer (non-2xx): one request, one error, no tokens.
//! * A request sent and never answered (a first-byte timeout, the app gone while
//!   waiting): one error, counted at its worst case, `estimated` — OpenAI may have run
//!   it. One that never left (no connection): one error, no tokens.
//! * Only a call that runs a model is read for usage: retrieving a stored answer
//!   (`GET /v1/chat/completions/{id}`, `GET /v1/responses/{id}`, or updating one) shows
//!   the usage of a run already counted, and counting it again would double it.
//! * An answer in a content coding keygate cannot read (it never asks for one, but an
//!   upstream may send it anyway) is estimated like a cut JSON answer: the prompt plus
//!   the output it allowed, so a budget cannot be escaped by an unreadable answer.
//!
//! Usage is charged to the UTC day the answer ends.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use keygate_core::tokens;
use keygate_core::usage::{self, SseScanner, Usage};
use keygate_store::UsageCounts;

use super::ProxyCtx;
use crate::config::Config;
use crate::limiter::Lease;
use crate::metrics::Metrics;

/// How much of a JSON answer's end is kept: OpenAI's `usage` is its last field.
const TAIL: usize = 16 * 1024;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    Completed,
    Abandoned,
    UpstreamBroke,
    IdleTimeout,
}

enum Tap {
    /// The request left for the upstream and no answer has come back (yet).
    Sent,
    /// Nothing to read (binary answers, errors, calls that run no model).
    None,
    /// A model's answer keygate cannot read (compressed): estimated.
    Opaque,
    Sse(Box<SseScanner>),
    Json(Tail),
}

/// The last [`TAIL`] bytes of a body, as the chunks that hold them.
#[derive(Default)]
struct Tail {
    chunks: VecDeque<Bytes>,
    len: usize,
}

impl Tail {
    fn push(&mut self, chunk: &Bytes) {
        self.len += chunk.len();
        self.chunks.push_back(chunk.clone());
        while let Some(front) = self.chunks.front() {
            if self.len - front.len() < TAIL {
                break;
            }
            self.len -= front.len();
            self.chunks.pop_front();
        }
    }

    fn bytes(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.len);
        for c in &self.chunks {
            out.extend_from_slice(c);
        }
        let start = out.len().saturating_sub(TAIL);
        out.split_off(start)
    }
}

/// What the answer's headers say its body is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BodyKind {
    Sse,
    Json,
    /// In a content coding other than `identity`: its bytes cannot be read.
    Encoded,
    Other,
}

pub struct Account {
    config: Arc<Config>,
    metrics: Arc<Metrics>,
    /// When the request left for the upstream.
    sent: Instant,
    /// The upstream answered: its whole time is observed when the answer ends.
    answered: bool,
    /// Counted in `keygate_open_streams` until the end.
    open: bool,
    lease: Option<Lease>,
    model: Option<String>,
    runs_model: bool,
    success: bool,
    strip_usage: bool,
    tap: Tap,
    body: Option<Bytes>,
    prompt_tokens: Option<u64>,
    max_output: Option<u64>,
}

impl Account {
    /// Takes over the lease as the request leaves for the upstream: from then on
    /// OpenAI may run (and bill) it even if no answer ever comes back (a first-byte
    /// timeout, the app gone while waiting), so an account dropped before an answer
    /// counts the request's worst case. `runs_model`: whether the call runs a model
    /// (only then is there anything to bill, or any usage in its answer that is new).
    pub fn new(
        config: Arc<Config>,
        metrics: Arc<Metrics>,
        lease: Lease,
        ctx: &mut ProxyCtx,
        runs_model: bool,
    ) -> Self {
        Self {
            config,
            metrics,
            sent: Instant::now(),
            answered: false,
            open: false,
            lease: Some(lease),
            model: ctx.model.take(),
            runs_model,
            success: false,
            strip_usage: ctx.strip_usage,
            tap: Tap::Sent,
            body: ctx.body.take(),
            prompt_tokens: ctx.prompt_tokens,
            max_output: ctx.max_output,
        }
    }

    /// The request never reached the upstream (no connection): nothing can be billed.
    pub fn not_sent(&mut self) {
        self.tap = Tap::None;
    }

    /// The upstream answered with `status` (its body not read yet) after `first_byte`.
    pub fn answered(&mut self, status: u16, first_byte: Duration) {
        self.success = (200..300).contains(&status);
        self.tap = Tap::None;
        self.answered = true;
        self.metrics
            .upstream_first_byte(self.model_label(), first_byte);
    }

    fn model_label(&self) -> &str {
        Metrics::model_label(&self.config.prices, self.model.as_deref())
    }

    /// The answer's body is about to stream: `body` is what its `Content-Type` and
    /// `Content-Encoding` say.
    pub fn read(&mut self, body: BodyKind) {
        if !self.open {
            self.open = true;
            self.metrics.stream_opened();
        }
        if !(self.success && self.runs_model) {
            return;
        }
        self.tap = match body {
            BodyKind::Other => Tap::None,
            BodyKind::Sse => Tap::Sse(Box::new(SseScanner::new(self.strip_usage))),
            BodyKind::Json => Tap::Json(Tail::default()),
            BodyKind::Encoded => Tap::Opaque,
        };
    }

    pub fn model(&self) -> Option<&str> {
        self.model.as_deref()
    }

    /// A chunk from the upstream in, the bytes for the app out (SSE may hold some back).
    pub fn feed(&mut self, chunk: Bytes) -> Bytes {
        match &mut self.tap {
            Tap::None | Tap::Opaque | Tap::Sent => chunk,
            Tap::Sse(scanner) => scanner.feed(chunk),
            Tap::Json(tail) => {
                tail.push(&chunk);
                chunk
            }
        }
    }

    /// The upstream body ended: what is still held back.
    pub fn finish(&mut self) -> Bytes {
        match &mut self.tap {
            Tap::Sse(scanner) => scanner.finish(),
            _ => Bytes::new(),
        }
    }

    /// The answer is over (or dropped): count it and settle the lease.
    pub fn end(&mut self, outcome: Outcome) {
        let Some(mut lease) = self.lease.take() else {
            return;
        };
        if self.open {
            self.open = false;
            self.metrics.stream_closed();
        }
        if self.answered {
            self.metrics
                .upstream_total(self.model_label(), self.sent.elapsed());
        }
        let counts = self.counts(outcome);
        self.metrics.usage(self.model_label(), &counts);
        let model = self.model.as_deref().unwrap_or_default();
        if !self.success && self.config.prices.get(model).is_none() {
            lease.count_without_model();
        }
        lease.settle(&counts);
    }

    fn counts(&self, outcome: Outcome) -> UsageCounts {
        let mut counts = UsageCounts {
            requests: 1,
            ..UsageCounts::default()
        };
        if let Tap::Sent = self.tap {
            // No answer: an error for the app, perhaps billed all the same.
            counts.errors = 1;
            if self.runs_model && self.model.is_some() {
                self.worst_case(&mut counts);
            }
            return counts;
        }
        if !self.success {
            counts.errors = 1;
            return counts;
        }
        let model = self.model.as_deref().unwrap_or_default();
        let (usage, estimated) = match &self.tap {
            Tap::None | Tap::Sent => (None, false),
            Tap::Sse(scanner) => match scanner.usage() {
                Some(u) => (Some(u), false),
                None => (
                    Some(Usage {
                        prompt_tokens: self.prompt_estimate(model),
                        cached_tokens: 0,
                        completion_tokens: tokens::count(model, scanner.streamed_text()),
                    }),
                    true,
                ),
            },
            Tap::Json(tail) if outcome == Outcome::Completed => {
                (usage::from_json_tail(&tail.bytes()), false)
            }
            Tap::Json(_) | Tap::Opaque if self.model.is_some() => {
                self.worst_case(&mut counts);
                return counts;
            }
            Tap::Json(_) | Tap::Opaque => (None, false),
        };
        if let Some(u) = usage {
            self.count(&mut counts, &u, estimated);
        }
        counts
    }

    /// The prompt plus all the output the request allowed, marked estimated: what an
    /// answer nobody read whole may have cost (OpenAI bills it all the same).
    fn worst_case(&self, counts: &mut UsageCounts) {
        let model = self.model.as_deref().unwrap_or_default();
        let usage = Usage {
            prompt_tokens: self.prompt_estimate(model),
            cached_tokens: 0,
            completion_tokens: self.max_output.unwrap_or(0),
        };
        self.count(counts, &usage, true);
    }

    fn count(&self, counts: &mut UsageCounts, u: &Usage, estimated: bool) {
        counts.prompt_tokens = u.prompt_tokens;
        counts.cached_tokens = u.cached_tokens;
        counts.completion_tokens = u.completion_tokens;
        counts.estimated = u64::from(estimated);
        counts.usd_nanos = self
            .config
            .prices
            .get(self.model.as_deref().unwrap_or_default())
            .map_or(0, |p| p.cost(u).nanos());
    }

    /// The prompt's tokens: counted already for the reservation, or counted now.
    fn prompt_estimate(&self, model: &str) -> u64 {
        self.prompt_tokens.unwrap_or_else(|| {
            self.body
                .as_ref()
                .and_then(|b| serde_json::from_slice::<serde_json::Value>(b).ok())
                .map_or(0, |v| tokens::estimate_prompt(model, &v))
        })
    }
}

impl Drop for Account {
    fn drop(&mut self) {
        // Normally ended by the stream's meter; this covers any other path.
        self.end(Outcome::Abandoned);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tail_keeps_the_last_bytes_without_copying_chunks() {
        let mut t = Tail::default();
        for i in 0..100u8 {
            t.push(&Bytes::from(vec![i; 1000]));
        }
        let b = t.bytes();
        assert_eq!(b.len(), TAIL);
        assert_eq!(*b.last().unwrap(), 99);
        assert!(t.chunks.len() <= TAIL / 1000 + 2);
        let mut t = Tail::default();
        t.push(&Bytes::from_static(b"{\"usage\":{}}"));
        assert_eq!(t.bytes(), b"{\"usage\":{}}");
    }
}
