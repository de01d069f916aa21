//! Token usage of one answer, as OpenAI reports it (or as keygate estimated it when
//! the answer was cut short): from a JSON answer's tail, from an SSE stream as it
//! passes, and the request rewrite that makes a stream report it.

use std::borrow::Cow;

use bytes::{Bytes, BytesMut};
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// Tokens of one answer. `cached_tokens` is the part of `prompt_tokens` served from
/// OpenAI's prompt cache (billed at the cached-input price).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Usage {
    pub prompt_tokens: u64,
    pub cached_tokens: u64,
    pub completion_tokens: u64,
}

impl Usage {
    pub fn total(&self) -> u64 {
        self.prompt_tokens.saturating_add(self.completion_tokens)
    }
}

/// The most tokens of each kind one answer is believed to have used: far more than any
/// can (a 2M-token context times OpenAI's most choices, 128, is under 2^28), so a
/// broken or hostile upstream's absurd count cannot saturate the u64 counters, after
/// which every later count would be lost.
pub const MAX_TOKENS_PER_ANSWER: u64 = 1 << 30;

/// Usage from a parsed `usage` object: Chat Completions, legacy Completions and
/// Embeddings (`prompt_tokens`, `completion_tokens`, `prompt_tokens_details.
/// cached_tokens`) or the Responses API (`input_tokens`, `output_tokens`,
/// `input_tokens_details.cached_tokens`).
pub fn from_value(usage: &Value) -> Option<Usage> {
    let n = |p: &str| {
        usage
            .pointer(p)
            .and_then(Value::as_u64)
            .map(|v| v.min(MAX_TOKENS_PER_ANSWER))
    };
    let prompt = n("/prompt_tokens").or_else(|| n("/input_tokens"))?;
    Some(Usage {
        prompt_tokens: prompt,
        cached_tokens: n("/prompt_tokens_details/cached_tokens")
            .or_else(|| n("/input_tokens_details/cached_tokens"))
            .unwrap_or(0),
        completion_tokens: n("/completion_tokens")
            .or_else(|| n("/output_tokens"))
            .unwrap_or(0),
    })
}

/// The `usage` of a JSON answer, from the last bytes of its body (OpenAI puts `usage`
/// near the end of every answer that has one; the tail may start mid-document).
///
/// Takes the last `"usage"` key whose value is an object that reads as usage, and
/// parses that one object, ignoring whatever follows it (the Responses API puts
/// `user` and `metadata` after it).
pub fn from_json_tail(tail: &[u8]) -> Option<Usage> {
    const KEY: &[u8] = b"\"usage\"";
    let mut end = tail.len();
    while let Some(at) = rfind(&tail[..end], KEY) {
        end = at;
        // A key follows `{` or `,` (or the cut at the tail's start).
        let before = tail[..at].iter().rev().find(|b| !b.is_ascii_whitespace());
        if !matches!(before, None | Some(b'{' | b',')) {
            continue;
        }
        let rest = skip_ws(tail, at + KEY.len());
        if tail.get(rest) != Some(&b':') {
            continue;
        }
        let value = skip_ws(tail, rest + 1);
        if tail.get(value) != Some(&b'{') {
            continue;
        }
        let mut values = serde_json::Deserializer::from_slice(&tail[value..]).into_iter::<Value>();
        if let Some(Ok(v)) = values.next()
            && let Some(usage) = from_value(&v)
        {
            return Some(usage);
        }
    }
    None
}

/// When an app streams Chat Completions (or legacy Completions) without asking for
/// usage, the body with `stream_options.include_usage: true` added (`None`: nothing to
/// change, or not such a body).
///
/// The app's bytes are kept: with no `stream_options`, the member is added before the
/// final `}`; an existing `stream_options` object is changed through a re-serialised
/// body (same meaning, possibly another key order). Only bodies with `messages` or
/// `prompt` are touched: the Responses API has no `include_usage` (it always reports
/// usage in `response.completed`).
pub fn ask_for_usage(body: &[u8]) -> Option<Vec<u8>> {
    let mut v: Value = serde_json::from_slice(body).ok()?;
    let obj = v.as_object_mut()?;
    if obj.get("stream").and_then(Value::as_bool) != Some(true)
        || !(obj.contains_key("messages") || obj.contains_key("prompt"))
    {
        return None;
    }
    match obj.get_mut("stream_options") {
        None => {
            let close = body.iter().rposition(|b| !b.is_ascii_whitespace())?;
            let mut out = Vec::with_capacity(body.len() + 40);
            out.extend_from_slice(&body[..close]);
            out.extend_from_slice(br#","stream_options":{"include_usage":true}"#);
            out.extend_from_slice(&body[close..]);
            Some(out)
        }
        Some(opts) => {
            if opts.is_null() {
                *opts = Value::Object(serde_json::Map::new());
            }
            let opts = opts.as_object_mut()?;
            if opts.get("include_usage").and_then(Value::as_bool) == Some(true) {
                return None;
            }
            opts.insert("include_usage".to_owned(), Value::Bool(true));
            serde_json::to_vec(&v).ok()
        }
    }
}

/// Completion text kept for an estimate of a cut stream; beyond it only bytes count.
const TEXT_CAP: usize = 1024 * 1024;
/// An SSE event longer than this is passed on without being read.
const MAX_EVENT: usize = 1024 * 1024;

/// Reads an SSE answer as it passes: finds its usage (chat's final usage chunk,
/// Responses' `response.completed` / `.incomplete` / `.failed`), keeps the streamed
/// completion text (for an estimate when the stream is cut), and, when keygate asked
/// for usage on the app's behalf, removes what that added (`"usage":null` on each
/// chunk and the usage-only chunk) so the app sees what OpenAI would have sent it.
///
/// Without stripping, every chunk is returned as it came (the same `Bytes`) and the
/// scanner keeps only the unfinished event on the side. With stripping, complete
/// events go out as they complete and only an unfinished event is held back.
#[derive(Debug, Default)]
pub struct SseScanner {
    strip: bool,
    usage: Option<Usage>,
    text: String,
    /// Completion text bytes seen beyond [`TEXT_CAP`].
    text_overflow: u64,
    /// The unfinished event (from its first byte).
    pending: BytesMut,
    /// How far into `pending` the line scan has got, and whether it is inside a
    /// line (false at a line start: the state `Default` gives).
    scanned: usize,
    in_line: bool,
    /// The current event outgrew [`MAX_EVENT`]: passed on unread until it ends.
    oversized: bool,
}

impl SseScanner {
    pub fn new(strip_injected_usage: bool) -> Self {
        Self {
            strip: strip_injected_usage,
            ..Self::default()
        }
    }

    /// Bytes from the upstream in; the bytes to send the app now out.
    pub fn feed(&mut self, chunk: Bytes) -> Bytes {
        if chunk.is_empty() {
            return chunk;
        }
        self.pending.extend_from_slice(&chunk);
        let mut out = BytesMut::new();
        self.drain_events(&mut out);
        if self.strip { out.freeze() } else { chunk }
    }

    /// The end of the upstream body: whatever is still held back (an event the
    /// upstream never finished), unchanged. Its usage is still read if it has any.
    pub fn finish(&mut self) -> Bytes {
        let rest = self.pending.split().freeze();
        if !self.oversized && !rest.is_empty() {
            self.observe_event(&rest);
        }
        self.scanned = 0;
        self.in_line = false;
        self.oversized = false;
        if self.strip { rest } else { Bytes::new() }
    }

    pub fn usage(&self) -> Option<Usage> {
        self.usage
    }

    /// The completion text streamed so far (capped), for an estimate.
    pub fn streamed_text(&self) -> &str {
        &self.text
    }

    /// The completion tokens of what was streamed so far: the kept text tokenized for
    /// `model`, plus a byte-based estimate (4 bytes a token) of text past the cap.
    pub fn estimated_completion_tokens(&self, model: &str) -> u64 {
        crate::tokens::count(model, &self.text) + self.text_overflow.div_ceil(4)
    }

    /// Takes every complete event off `pending`, reads it, and (stripping) appends
    /// what the app should get to `out`.
    fn drain_events(&mut self, out: &mut BytesMut) {
        loop {
            match scan_lines(&self.pending, self.scanned, !self.in_line) {
                Scan::EventEnd(end) => {
                    let event = self.pending.split_to(end).freeze();
                    self.scanned = 0;
                    self.in_line = false;
                    if std::mem::take(&mut self.oversized) {
                        self.emit(out, &event);
                    } else {
                        let keep = self.observe_event(&event);
                        if self.strip {
                            keep.write(&event, out);
                        }
                    }
                }
                Scan::Partial(at, line_empty) => {
                    self.scanned = at;
                    self.in_line = !line_empty;
                    if self.pending.len() > MAX_EVENT || self.oversized {
                        // Too big to read: pass what has been scanned on now and
                        // keep only the unscanned byte (a `\r` awaiting its `\n`).
                        self.oversized = true;
                        let head = self.pending.split_to(at).freeze();
                        self.emit(out, &head);
                        self.scanned = 0;
                    }
                    return;
                }
            }
        }
    }

    fn emit(&self, out: &mut BytesMut, bytes: &[u8]) {
        if self.strip {
            out.extend_from_slice(bytes);
        }
    }

    /// Reads one complete event: usage and completion text. Returns what stripping
    /// does to it.
    fn observe_event(&mut self, event: &[u8]) -> Keep {
        let Some((data, range)) = event_data(event) else {
            return Keep::All;
        };
        if data.starts_with(b"[DONE]") {
            return Keep::All;
        }
        // The typed read borrows and skips what it does not need (several times
        // faster than a `Value` per chunk); a shape it does not expect gets the
        // general `Value` read.
        let seen = match serde_json::from_slice::<wire::Event<'_>>(&data) {
            Ok(ev) => self.observe_typed(&ev),
            Err(_) => match serde_json::from_slice::<Value>(&data) {
                Ok(v) => self.observe_value(&v),
                Err(_) => return Keep::All,
            },
        };
        if !self.strip || !seen.chat {
            return Keep::All;
        }
        if seen.no_choices && seen.usage {
            return Keep::Nothing;
        }
        match (range, null_usage_member(&data)) {
            (Some(r), Some((a, b))) => Keep::Without(r.0 + a, r.0 + b),
            _ => Keep::All,
        }
    }

    fn observe_typed(&mut self, ev: &wire::Event<'_>) -> Seen {
        if let Some(kind) = ev.kind.as_deref() {
            if FINAL_EVENTS.contains(&kind) {
                let response = ev.response.map(|r| serde_json::from_str::<Value>(r.get()));
                if let Some(u) = response
                    .and_then(Result::ok)
                    .as_ref()
                    .and_then(|r| r.get("usage"))
                    .and_then(from_value)
                {
                    self.usage = Some(u);
                }
            } else if DELTA_EVENTS.contains(&kind)
                && let Some(Ok(d)) = ev
                    .delta
                    .map(|d| serde_json::from_str::<Cow<'_, str>>(d.get()))
            {
                self.add_text(&d);
            }
            return Seen::default();
        }
        let usage = ev
            .usage
            .and_then(|u| serde_json::from_str::<Value>(u.get()).ok())
            .filter(Value::is_object);
        if let Some(u) = usage.as_ref().and_then(from_value) {
            self.usage = Some(u);
        }
        let Some(choices) = &ev.choices else {
            return Seen::default();
        };
        for choice in choices {
            if let Some(t) = &choice.text {
                self.add_text(t);
            }
            let Some(delta) = &choice.delta else {
                continue;
            };
            let calls = delta
                .tool_calls
                .iter()
                .flatten()
                .filter_map(|c| c.function.as_ref());
            let texts = [&delta.content, &delta.refusal]
                .into_iter()
                .flatten()
                .chain(delta.function_call.iter().flat_map(|f| f.arguments.iter()))
                .chain(calls.flat_map(|f| f.name.iter().chain(f.arguments.iter())));
            for t in texts {
                self.add_text(t);
            }
        }
        Seen {
            chat: true,
            no_choices: choices.is_empty(),
            usage: usage.is_some(),
        }
    }

    fn observe_value(&mut self, v: &Value) -> Seen {
        if let Some(kind) = v.get("type").and_then(Value::as_str) {
            if FINAL_EVENTS.contains(&kind) {
                if let Some(u) = v.pointer("/response/usage").and_then(from_value) {
                    self.usage = Some(u);
                }
            } else if DELTA_EVENTS.contains(&kind)
                && let Some(d) = v.get("delta").and_then(Value::as_str)
            {
                self.add_text(d);
            }
            return Seen::default();
        }
        let usage = v.get("usage").filter(|u| u.is_object());
        if let Some(u) = usage.and_then(from_value) {
            self.usage = Some(u);
        }
        let Some(choices) = v.get("choices").and_then(Value::as_array) else {
            return Seen::default();
        };
        for choice in choices {
            // Legacy Completions stream `text`; chat streams a `delta`.
            if let Some(t) = choice.get("text").and_then(Value::as_str) {
                self.add_text(t);
            }
            let Some(delta) = choice.get("delta") else {
                continue;
            };
            for p in ["/content", "/refusal", "/function_call/arguments"] {
                if let Some(t) = delta.pointer(p).and_then(Value::as_str) {
                    self.add_text(t);
                }
            }
            for call in delta
                .get("tool_calls")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
            {
                for p in ["/function/name", "/function/arguments"] {
                    if let Some(t) = call.pointer(p).and_then(Value::as_str) {
                        self.add_text(t);
                    }
                }
            }
        }
        Seen {
            chat: true,
            no_choices: choices.is_empty(),
            usage: usage.is_some(),
        }
    }

    fn add_text(&mut self, t: &str) {
        let room = TEXT_CAP.saturating_sub(self.text.len());
        if t.len() <= room {
            self.text.push_str(t);
            return;
        }
        let mut cut = room;
        while !t.is_char_boundary(cut) {
            cut -= 1;
        }
        self.text.push_str(&t[..cut]);
        self.text_overflow += (t.len() - cut) as u64;
    }
}

/// Responses API events whose `response` carries the final usage.
const FINAL_EVENTS: &[&str] = &[
    "response.completed",
    "response.incomplete",
    "response.failed",
];

/// Responses API events whose `delta` is generated text (billed as output).
const DELTA_EVENTS: &[&str] = &[
    "response.output_text.delta",
    "response.function_call_arguments.delta",
    "response.custom_tool_call_input.delta",
    "response.refusal.delta",
    "response.reasoning_text.delta",
    "response.reasoning_summary_text.delta",
];

/// What one event was, for stripping.
#[derive(Default)]
struct Seen {
    /// A Chat Completions (or legacy Completions) chunk: has `choices`.
    chat: bool,
    no_choices: bool,
    /// Has a `usage` object.
    usage: bool,
}

/// The parts of a streamed event the scanner reads; everything else is skipped.
mod wire {
    use std::borrow::Cow;

    use serde::Deserialize;
    use serde_json::value::RawValue;

    #[derive(Deserialize)]
    pub(super) struct Event<'a> {
        #[serde(rename = "type", borrow, default)]
        pub kind: Option<Cow<'a, str>>,
        #[serde(borrow, default)]
        pub delta: Option<&'a RawValue>,
        #[serde(borrow, default)]
        pub choices: Option<Vec<Choice<'a>>>,
        #[serde(borrow, default)]
        pub usage: Option<&'a RawValue>,
        #[serde(borrow, default)]
        pub response: Option<&'a RawValue>,
    }

    #[derive(Deserialize)]
    pub(super) struct Choice<'a> {
        #[serde(borrow, default)]
        pub text: Option<Cow<'a, str>>,
        #[serde(borrow, default)]
        pub delta: Option<Delta<'a>>,
    }

    #[derive(Deserialize)]
    pub(super) struct Delta<'a> {
        #[serde(borrow, default)]
        pub content: Option<Cow<'a, str>>,
        #[serde(borrow, default)]
        pub refusal: Option<Cow<'a, str>>,
        #[serde(borrow, default)]
        pub function_call: Option<Function<'a>>,
        #[serde(borrow, default)]
        pub tool_calls: Option<Vec<ToolCall<'a>>>,
    }

    #[derive(Deserialize)]
    pub(super) struct ToolCall<'a> {
        #[serde(borrow, default)]
        pub function: Option<Function<'a>>,
    }

    #[derive(Deserialize)]
    pub(super) struct Function<'a> {
        #[serde(borrow, default)]
        pub name: Option<Cow<'a, str>>,
        #[serde(borrow, default)]
        pub arguments: Option<Cow<'a, str>>,
    }
}

/// What the app gets of one event when stripping.
enum Keep {
    All,
    Nothing,
    /// The event without bytes `start..end` (the `"usage":null` member).
    Without(usize, usize),
}

impl Keep {
    fn write(&self, event: &[u8], out: &mut BytesMut) {
        match *self {
            Keep::All => out.extend_from_slice(event),
            Keep::Nothing => {}
            Keep::Without(a, b) => {
                out.extend_from_slice(&event[..a]);
                out.extend_from_slice(&event[b..]);
            }
        }
    }
}

enum Scan {
    /// The first event ends just before this index (after its blank line).
    EventEnd(usize),
    /// No event end yet: resume the scan here, with this line-empty state.
    Partial(usize, bool),
}

/// Scans SSE lines from `from` (where the line so far is empty when `line_empty`).
/// Lines end with `\r\n`, `\n` or `\r`; an empty line ends the event. A `\r` as the
/// last byte is left unscanned: its `\n` may be in the next chunk.
fn scan_lines(buf: &[u8], from: usize, mut line_empty: bool) -> Scan {
    let mut i = from;
    while i < buf.len() {
        let Some(off) = buf[i..].iter().position(|&b| b == b'\n' || b == b'\r') else {
            return Scan::Partial(buf.len(), false);
        };
        if off > 0 {
            line_empty = false;
        }
        i += off;
        let len = if buf[i] == b'\n' {
            1
        } else {
            match buf.get(i + 1) {
                None => return Scan::Partial(i, line_empty),
                Some(b'\n') => 2,
                Some(_) => 1,
            }
        };
        i += len;
        if line_empty {
            return Scan::EventEnd(i);
        }
        line_empty = true;
    }
    Scan::Partial(i, line_empty)
}

/// A byte range `start..end`.
type Span = (usize, usize);

/// An event's `data` (several `data:` lines joined with `\n`), and when it came from
/// a single line, that line's value range within the event (for surgery).
fn event_data(event: &[u8]) -> Option<(Vec<u8>, Option<Span>)> {
    let mut data: Option<Vec<u8>> = None;
    let mut range = None;
    let mut lines = 0usize;
    let mut start = 0;
    while start < event.len() {
        let end = event[start..]
            .iter()
            .position(|&b| b == b'\n' || b == b'\r')
            .map_or(event.len(), |o| start + o);
        let line = &event[start..end];
        let value_at = if line == b"data" {
            Some(end)
        } else {
            line.strip_prefix(b"data:").map(|v| {
                let skip = usize::from(v.first() == Some(&b' '));
                end - v.len() + skip
            })
        };
        if let Some(at) = value_at {
            lines += 1;
            let d = data.get_or_insert_with(Vec::new);
            if lines > 1 {
                d.push(b'\n');
            }
            d.extend_from_slice(&event[at..end]);
            range = Some((at, end));
        }
        // Next line: past `\r\n`, `\n` or `\r`.
        start = end + 1;
        if event.get(end) == Some(&b'\r') && event.get(end + 1) == Some(&b'\n') {
            start += 1;
        }
    }
    data.map(|d| (d, range.filter(|_| lines == 1)))
}

/// The byte range to cut so that the JSON object `json` loses its top-level
/// `"usage": null` member (with the comma that joins it to a neighbour), keeping every
/// other byte.
fn null_usage_member(json: &[u8]) -> Option<(usize, usize)> {
    let mut i = skip_ws(json, 0);
    if json.get(i) != Some(&b'{') {
        return None;
    }
    i += 1;
    // The end of the previous member's value: cutting from there takes the comma
    // (and the blanks around it) with the member.
    let mut comma_before: Option<usize> = None;
    loop {
        i = skip_ws(json, i);
        if json.get(i) != Some(&b'"') {
            return None;
        }
        let key_start = i;
        i = end_of_string(json, i)?;
        let key = &json[key_start..i];
        i = skip_ws(json, i);
        if json.get(i) != Some(&b':') {
            return None;
        }
        i = skip_ws(json, i + 1);
        let value_start = i;
        i = end_of_value(json, i)?;
        if key == b"\"usage\"" && &json[value_start..i] == b"null" {
            return Some(match comma_before {
                Some(c) => (c, i),
                None => {
                    // The first member: take the comma after it (if any) instead.
                    let next = skip_ws(json, i);
                    if json.get(next) == Some(&b',') {
                        (key_start, skip_ws(json, next + 1))
                    } else {
                        (key_start, i)
                    }
                }
            });
        }
        let value_end = i;
        i = skip_ws(json, i);
        match json.get(i) {
            Some(b',') => {
                comma_before = Some(value_end);
                i += 1;
            }
            _ => return None,
        }
    }
}

/// Index just past the string starting at `i` (a `"`).
fn end_of_string(json: &[u8], mut i: usize) -> Option<usize> {
    i += 1;
    while i < json.len() {
        match json[i] {
            b'\\' => i += 2,
            b'"' => return Some(i + 1),
            _ => i += 1,
        }
    }
    None
}

/// Index just past the JSON value starting at `i`.
fn end_of_value(json: &[u8], mut i: usize) -> Option<usize> {
    match json.get(i)? {
        b'"' => end_of_string(json, i),
        b'{' | b'[' => {
            let mut depth = 0usize;
            while i < json.len() {
                match json[i] {
                    b'"' => {
                        i = end_of_string(json, i)?;
                        continue;
                    }
                    b'{' | b'[' => depth += 1,
                    b'}' | b']' => {
                        depth -= 1;
                        if depth == 0 {
                            return Some(i + 1);
                        }
                    }
                    _ => {}
                }
                i += 1;
            }
            None
        }
        _ => {
            let n = json[i..]
                .iter()
                .position(|b| matches!(b, b',' | b'}' | b']') || b.is_ascii_whitespace())
                .unwrap_or(json.len() - i);
            Some(i + n)
        }
    }
}

fn skip_ws(s: &[u8], mut i: usize) -> usize {
    while s.get(i).is_some_and(u8::is_ascii_whitespace) {
        i += 1;
    }
    i
}

fn rfind(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).rposition(|w| w == needle)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const CHAT_LINES: &str =
        include_str!("../../../tests/testkit/fixtures/openai/chat_streaming.jsonl");
    const RESPONSES_LINES: &str =
        include_str!("../../../tests/testkit/fixtures/openai/responses_streaming.jsonl");

    /// Fills the fixture's `"{{name}}"` placeholders the way the mock does.
    fn fill(line: &str) -> String {
        [
            ("id", "\"chatcmpl-B9MBs8CjcvOU2jLn4n570S5qMJKcT\""),
            (
                "msg_id",
                "\"msg_67c9fdcecf488190bdd9a0409de3a1ec07b8b0ad4e5eb654\"",
            ),
            ("created", "1741569952"),
            ("model", "\"gpt-4o-mini-2024-07-18\""),
            ("prompt_tokens", "19"),
            ("completion_tokens", "5"),
            ("total_tokens", "24"),
            ("input_tokens", "19"),
            ("output_tokens", "5"),
        ]
        .iter()
        .fold(line.to_owned(), |l, (k, v)| {
            l.replace(&format!("\"{{{{{k}}}}}\""), v)
        })
    }

    fn is_usage_chunk(line: &str) -> bool {
        line.contains("\"choices\":[]")
    }

    /// The chat stream as the mock (and OpenAI) sends it: with `include_usage`, every
    /// chunk carries `"usage":null` and a usage-only chunk comes last; without, neither.
    fn chat_stream(include_usage: bool, eol: &str) -> Vec<u8> {
        let mut out = String::new();
        for line in CHAT_LINES.lines().filter(|l| !l.trim().is_empty()) {
            let line = fill(line);
            let line = match (include_usage, is_usage_chunk(&line)) {
                (false, true) => continue,
                (true, false) => format!("{},\"usage\":null}}", &line[..line.len() - 1]),
                _ => line,
            };
            out.push_str(&format!("data: {line}{eol}{eol}"));
        }
        out.push_str(&format!("data: [DONE]{eol}{eol}"));
        out.into_bytes()
    }

    fn responses_stream() -> Vec<u8> {
        let mut out = String::new();
        for line in RESPONSES_LINES.lines().filter(|l| !l.trim().is_empty()) {
            let line = fill(line);
            let v: Value = serde_json::from_str(&line).unwrap();
            let name = v["type"].as_str().unwrap();
            out.push_str(&format!("event: {name}\ndata: {line}\n\n"));
        }
        out.into_bytes()
    }

    const MOCK_USAGE: Usage = Usage {
        prompt_tokens: 19,
        cached_tokens: 0,
        completion_tokens: 5,
    };

    /// Feeds `input` cut at `cuts`; returns everything the app got.
    fn run(scanner: &mut SseScanner, input: &[u8], cuts: &[usize]) -> Vec<u8> {
        let mut cuts: Vec<usize> = cuts.iter().map(|c| c % (input.len() + 1)).collect();
        cuts.sort_unstable();
        cuts.push(input.len());
        let mut out = Vec::new();
        let mut at = 0;
        for c in cuts {
            let piece = Bytes::copy_from_slice(&input[at..c]);
            at = c;
            out.extend_from_slice(&scanner.feed(piece));
        }
        out.extend_from_slice(&scanner.finish());
        out
    }

    #[test]
    fn default_is_a_pass_through_scanner() {
        let input = chat_stream(true, "\n");
        let mut s = SseScanner::default();
        assert_eq!(run(&mut s, b"\n", &[]), b"\n");
        assert_eq!(run(&mut s, &input, &[5, 900]), input);
        assert_eq!(s.usage(), Some(MOCK_USAGE));
    }

    #[test]
    fn pass_through_returns_each_chunk_itself_and_finds_usage() {
        let input = Bytes::from(chat_stream(true, "\n"));
        let mut s = SseScanner::new(false);
        let out = s.feed(input.clone());
        assert_eq!(out.as_ptr(), input.as_ptr());
        assert_eq!(out.len(), input.len());
        assert!(s.finish().is_empty());
        assert_eq!(s.usage(), Some(MOCK_USAGE));
        assert_eq!(s.streamed_text(), "Hello from the mock!");
        assert_eq!(s.estimated_completion_tokens("gpt-4o-mini"), 5);
    }

    #[test]
    fn stripping_gives_the_stream_openai_sends_without_usage() {
        for eol in ["\n", "\r\n"] {
            let mut s = SseScanner::new(true);
            let out = run(&mut s, &chat_stream(true, eol), &[]);
            assert_eq!(
                String::from_utf8(out).unwrap(),
                String::from_utf8(chat_stream(false, eol)).unwrap()
            );
            assert_eq!(s.usage(), Some(MOCK_USAGE));
            assert_eq!(s.streamed_text(), "Hello from the mock!");
        }
    }

    #[test]
    fn stripping_holds_only_the_unfinished_event() {
        let input = chat_stream(true, "\n");
        let first_end = input.windows(2).position(|w| w == b"\n\n").unwrap() + 2;
        let mut s = SseScanner::new(true);
        // The first event minus its last byte: nothing can go out yet.
        assert!(
            s.feed(Bytes::copy_from_slice(&input[..first_end - 1]))
                .is_empty()
        );
        let out = s.feed(Bytes::copy_from_slice(&input[first_end - 1..first_end + 5]));
        let expected = chat_stream(false, "\n");
        assert_eq!(&out[..], &expected[..out.len()]);
        assert!(out.ends_with(b"\n\n"));
        // A cut stream: the held-back part comes out unchanged at the end.
        assert_eq!(&s.finish()[..], &input[first_end..first_end + 5]);
    }

    #[test]
    fn responses_usage_and_text() {
        let input = responses_stream();
        for strip in [false, true] {
            let mut s = SseScanner::new(strip);
            let out = run(&mut s, &input, &[7, 300, 301, 2000]);
            assert_eq!(out, input, "responses events are never changed");
            assert_eq!(s.usage(), Some(MOCK_USAGE));
            assert_eq!(s.streamed_text(), "Hello from the mock!");
        }
        // response.incomplete carries usage too, with cached tokens.
        let ev = br#"event: response.incomplete
data: {"type":"response.incomplete","response":{"status":"incomplete","usage":{"input_tokens":100,"input_tokens_details":{"cached_tokens":64},"output_tokens":7,"total_tokens":107}}}

"#;
        let mut s = SseScanner::new(false);
        s.feed(Bytes::from_static(ev));
        assert_eq!(
            s.usage(),
            Some(Usage {
                prompt_tokens: 100,
                cached_tokens: 64,
                completion_tokens: 7
            })
        );
    }

    #[test]
    fn other_lines_pass_unchanged_when_stripping() {
        let input: &[u8] = b": keep-alive\n\nid: 7\nevent: message\ndata: not json\n\nretry: 100\n\n\ndata: [DONE]\n\n";
        let mut s = SseScanner::new(true);
        assert_eq!(run(&mut s, input, &[3, 20]), input);
        assert_eq!(s.usage(), None);
    }

    #[test]
    fn tool_calls_and_refusals_are_streamed_text() {
        let input = br#"data: {"choices":[{"index":0,"delta":{"tool_calls":[{"index":0,"id":"call_1","type":"function","function":{"name":"get_weather","arguments":""}}]}}]}

data: {"choices":[{"index":0,"delta":{"tool_calls":[{"index":0,"function":{"arguments":"{\"city\":"}}]}}]}

data: {"choices":[{"index":0,"delta":{"refusal":"No."}}]}

data: {"type":"response.function_call_arguments.delta","delta":"\"Paris\"}"}

"#;
        let mut s = SseScanner::new(false);
        run(&mut s, input, &[]);
        assert_eq!(s.streamed_text(), "get_weather{\"city\":No.\"Paris\"}");
    }

    #[test]
    fn an_unexpected_shape_is_still_read() {
        // `content` as an array is not what the typed read expects: the general read
        // still finds the usage and the text it can.
        let ev = br#"data: {"choices":[{"delta":{"content":[{"type":"text"}],"refusal":"no"}}],"usage":{"prompt_tokens":3,"completion_tokens":1}}

"#;
        let mut s = SseScanner::new(false);
        s.feed(Bytes::from_static(ev));
        assert_eq!(s.usage().map(|u| u.total()), Some(4));
        assert_eq!(s.streamed_text(), "no");
    }

    #[test]
    fn null_usage_surgery_keeps_other_bytes() {
        let cases: [(&str, &str); 5] = [
            (r#"{"a":1,"usage":null}"#, r#"{"a":1}"#),
            (r#"{"usage":null,"a":1}"#, r#"{"a":1}"#),
            (
                r#"{"a":1 , "usage" : null , "b":[{"usage":null}]}"#,
                r#"{"a":1 , "b":[{"usage":null}]}"#,
            ),
            (r#"{ "usage":null }"#, r#"{  }"#),
            (
                r#"{"s":"\"usage\":null","usage":null,"obfuscation":"x"}"#,
                r#"{"s":"\"usage\":null","obfuscation":"x"}"#,
            ),
        ];
        for (json, want) in cases {
            let (a, b) = null_usage_member(json.as_bytes()).unwrap();
            assert_eq!(format!("{}{}", &json[..a], &json[b..]), want);
        }
        assert!(null_usage_member(br#"{"a":{"usage":null}}"#).is_none());
        assert!(null_usage_member(br#"{"usage":{}}"#).is_none());
    }

    #[test]
    fn an_oversized_event_passes_unread_and_unbuffered() {
        let big = format!(
            "data: {{\"choices\":[],\"usage\":{{\"prompt_tokens\":1}},\"pad\":\"{}\"}}\n\n",
            "x".repeat(3 * MAX_EVENT)
        );
        let input = [big.as_bytes(), &chat_stream(true, "\n")].concat();
        let mut s = SseScanner::new(true);
        let mut out = Vec::new();
        for piece in input.chunks(64 * 1024) {
            out.extend_from_slice(&s.feed(Bytes::copy_from_slice(piece)));
            assert!(s.pending.len() <= MAX_EVENT + 64 * 1024);
        }
        out.extend_from_slice(&s.finish());
        assert_eq!(out, [big.as_bytes(), &chat_stream(false, "\n")].concat());
        assert_eq!(s.usage(), Some(MOCK_USAGE));
    }

    #[test]
    fn text_past_the_cap_is_counted_in_bytes() {
        let mut s = SseScanner::new(false);
        let piece = "abcd".repeat(64 * 1024); // 256 KiB
        for _ in 0..5 {
            let ev =
                format!("data: {{\"choices\":[{{\"delta\":{{\"content\":\"{piece}\"}}}}]}}\n\n");
            s.feed(Bytes::from(ev));
        }
        assert_eq!(s.streamed_text().len(), TEXT_CAP);
        assert_eq!(s.text_overflow, 256 * 1024);
        assert!(s.estimated_completion_tokens("gpt-4o") >= 64 * 1024);
    }

    proptest! {
        #[test]
        fn any_chunking_gives_the_same_output_and_usage(
            cuts in proptest::collection::vec(0usize..4096, 0..40),
            crlf in any::<bool>(),
        ) {
            let eol = if crlf { "\r\n" } else { "\n" };
            let with = chat_stream(true, eol);
            let mut pass = SseScanner::new(false);
            prop_assert_eq!(run(&mut pass, &with, &cuts), with.clone());
            prop_assert_eq!(pass.usage(), Some(MOCK_USAGE));
            prop_assert_eq!(pass.streamed_text(), "Hello from the mock!");
            let mut strip = SseScanner::new(true);
            prop_assert_eq!(run(&mut strip, &with, &cuts), chat_stream(false, eol));
            prop_assert_eq!(strip.usage(), Some(MOCK_USAGE));
            prop_assert_eq!(strip.streamed_text(), "Hello from the mock!");
        }

        #[test]
        fn a_cut_stream_returns_every_byte_it_got(
            cut in 0usize..2000,
            pieces in proptest::collection::vec(0usize..2000, 0..10),
        ) {
            let with = chat_stream(true, "\n");
            let cut = cut % with.len();
            let head = &with[..cut];
            let mut strip = SseScanner::new(true);
            let out = run(&mut strip, head, &pieces);
            // The complete events come out stripped, the unfinished one unchanged.
            let expected_full = chat_stream(false, "\n");
            prop_assert!(strip.streamed_text().len() <= "Hello from the mock!".len());
            let complete = head.windows(2).rposition(|w| w == b"\n\n").map_or(0, |p| p + 2);
            let mut s2 = SseScanner::new(true);
            let out2 = run(&mut s2, &head[..complete], &[]);
            prop_assert!(expected_full.starts_with(&out2));
            prop_assert_eq!(&out[out2.len()..], &head[complete..]);
        }
    }

    const CHAT_BODY: &str = r#"{
  "id": "chatcmpl-B9MHDbslfkBeAs8l4bebGdFOJ6PeG",
  "object": "chat.completion",
  "created": 1741570283,
  "model": "gpt-4o-2024-08-06",
  "choices": [
    {
      "index": 0,
      "message": {
        "role": "assistant",
        "content": "The image shows a wooden boardwalk; \"usage\": {\"prompt_tokens\": 1} is not the usage.",
        "refusal": null,
        "annotations": []
      },
      "logprobs": null,
      "finish_reason": "stop"
    }
  ],
  "usage": {
    "prompt_tokens": 1117,
    "completion_tokens": 46,
    "total_tokens": 1163,
    "prompt_tokens_details": {
      "cached_tokens": 1024,
      "audio_tokens": 0
    },
    "completion_tokens_details": {
      "reasoning_tokens": 0,
      "audio_tokens": 0,
      "accepted_prediction_tokens": 0,
      "rejected_prediction_tokens": 0
    }
  },
  "service_tier": "default",
  "system_fingerprint": "fp_fc9f1d7035"
}"#;

    const RESPONSES_BODY: &str = r#"{"id":"resp_67ccd2bed1ec8190b14f964abc0542670bb6a6b452d3795b","object":"response","created_at":1741476542,"status":"completed","error":null,"incomplete_details":null,"instructions":null,"max_output_tokens":null,"model":"gpt-4.1-2025-04-14","output":[{"type":"message","id":"msg_1","status":"completed","role":"assistant","content":[{"type":"output_text","text":"In a peaceful grove...","annotations":[]}]}],"parallel_tool_calls":true,"previous_response_id":null,"reasoning":{"effort":null,"summary":null},"store":true,"temperature":1.0,"text":{"format":{"type":"text"}},"tool_choice":"auto","tools":[],"top_p":1.0,"truncation":"disabled","usage":{"input_tokens":36,"input_tokens_details":{"cached_tokens":0},"output_tokens":87,"output_tokens_details":{"reasoning_tokens":0},"total_tokens":123},"user":null,"metadata":{"usage":"x"}}"#;

    const EMBEDDINGS_BODY: &str = r#"{
  "object": "list",
  "data": [
    {
      "object": "embedding",
      "index": 0,
      "embedding": [-0.006929283495992422, -0.005336422007530928, -4.547132266452536e-05, -0.024047505110502243]
    }
  ],
  "model": "text-embedding-3-small",
  "usage": {
    "prompt_tokens": 5,
    "total_tokens": 5
  }
}
"#;

    #[test]
    fn json_tail_usage_of_every_answer_kind() {
        assert_eq!(
            from_json_tail(CHAT_BODY.as_bytes()),
            Some(Usage {
                prompt_tokens: 1117,
                cached_tokens: 1024,
                completion_tokens: 46
            })
        );
        assert_eq!(
            from_json_tail(RESPONSES_BODY.as_bytes()),
            Some(Usage {
                prompt_tokens: 36,
                cached_tokens: 0,
                completion_tokens: 87
            })
        );
        assert_eq!(
            from_json_tail(EMBEDDINGS_BODY.as_bytes()),
            Some(Usage {
                prompt_tokens: 5,
                cached_tokens: 0,
                completion_tokens: 0
            })
        );
        let legacy = br#"{"id":"cmpl-1","object":"text_completion","choices":[{"text":"hi","index":0}],"usage":{"prompt_tokens":5,"completion_tokens":7,"total_tokens":12}}"#;
        assert_eq!(from_json_tail(legacy).map(|u| u.total()), Some(12));
    }

    #[test]
    fn json_tail_cut_anywhere_before_usage() {
        for body in [CHAT_BODY, RESPONSES_BODY, EMBEDDINGS_BODY] {
            let at = body.find("\"usage\"").unwrap();
            let whole = from_json_tail(body.as_bytes());
            for start in 0..at {
                assert_eq!(from_json_tail(&body.as_bytes()[start..]), whole, "{start}");
            }
            // Cut inside the usage object: not found (never a wrong figure).
            assert_eq!(from_json_tail(&body.as_bytes()[at + 12..]), None);
        }
        assert_eq!(from_json_tail(b"{\"usage\": null}"), None);
        assert_eq!(from_json_tail(b""), None);
        assert_eq!(
            from_json_tail(b"\"usage\":{\"prompt_tokens\":3}"),
            Some(Usage {
                prompt_tokens: 3,
                ..Usage::default()
            })
        );
    }

    #[test]
    fn ask_for_usage_adds_the_option_keeping_the_bytes() {
        let body =
            br#"{"model":"gpt-4o-mini","stream":true,"messages":[{"role":"user","content":"Hi"}]}"#;
        let out = ask_for_usage(body).unwrap();
        assert_eq!(
            String::from_utf8(out).unwrap(),
            r#"{"model":"gpt-4o-mini","stream":true,"messages":[{"role":"user","content":"Hi"}],"stream_options":{"include_usage":true}}"#
        );
        let pretty = b"{\n  \"stream\": true,\n  \"prompt\": \"x\"\n}\n";
        let out = ask_for_usage(pretty).unwrap();
        let v: Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(v["stream_options"]["include_usage"], Value::Bool(true));
        assert!(out.starts_with(b"{\n  \"stream\": true,\n  \"prompt\": \"x\"\n"));

        for (body, include) in [
            (
                r#"{"stream":true,"messages":[],"stream_options":{"include_obfuscation":false}}"#,
                true,
            ),
            (
                r#"{"stream":true,"messages":[],"stream_options":{"include_usage":false}}"#,
                true,
            ),
            (
                r#"{"stream":true,"messages":[],"stream_options":null}"#,
                true,
            ),
        ] {
            let v: Value =
                serde_json::from_slice(&ask_for_usage(body.as_bytes()).unwrap()).unwrap();
            assert_eq!(v["stream_options"]["include_usage"], Value::Bool(include));
            assert_eq!(v["stream"], Value::Bool(true));
        }
        let v: Value = serde_json::from_slice(
            &ask_for_usage(
                br#"{"stream":true,"messages":[],"stream_options":{"include_obfuscation":false}}"#,
            )
            .unwrap(),
        )
        .unwrap();
        assert_eq!(
            v["stream_options"]["include_obfuscation"],
            Value::Bool(false)
        );

        for unchanged in [
            &br#"{"stream":true,"messages":[],"stream_options":{"include_usage":true}}"#[..],
            br#"{"stream":false,"messages":[]}"#,
            br#"{"messages":[]}"#,
            br#"{"stream":true,"input":"hi"}"#,
            br#"[{"stream":true}]"#,
            br#"{"stream":true,"messages":[]"#,
            b"",
        ] {
            assert_eq!(ask_for_usage(unchanged), None);
        }
    }

    #[test]
    fn absurd_counts_are_capped_per_answer() {
        let v: Value = serde_json::from_str(
            r#"{"prompt_tokens":18446744073709551615,"completion_tokens":18446744073709551615,
                "prompt_tokens_details":{"cached_tokens":18446744073709551615}}"#,
        )
        .unwrap();
        let u = from_value(&v).unwrap();
        assert_eq!(u.prompt_tokens, MAX_TOKENS_PER_ANSWER);
        assert_eq!(u.completion_tokens, MAX_TOKENS_PER_ANSWER);
        assert_eq!(u.cached_tokens, MAX_TOKENS_PER_ANSWER);
        // Many such answers still add up without saturating.
        assert!(u.total().checked_mul(1 << 32).is_some());
    }
}
