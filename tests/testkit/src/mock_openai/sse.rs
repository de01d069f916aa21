//! Server-sent events in OpenAI's framing, built from the JSONL fixtures.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use bytes::Bytes;
use serde_json::{Value, json};

use super::body::Step;
use super::fixtures::{self, REPLY_PIECES};

/// `data: {json}\n\n`
pub(crate) fn data_event(value: &Value) -> Bytes {
    Bytes::from(format!("data: {value}\n\n"))
}

/// `data: [DONE]\n\n`
pub(crate) fn done_event() -> Bytes {
    Bytes::from_static(b"data: [DONE]\n\n")
}

/// `event: name\ndata: {json}\n\n` (Responses API framing).
pub(crate) fn named_event(name: &str, value: &Value) -> Bytes {
    Bytes::from(format!("event: {name}\ndata: {value}\n\n"))
}

fn is_usage_chunk(chunk: &Value) -> bool {
    chunk
        .get("choices")
        .and_then(Value::as_array)
        .is_some_and(Vec::is_empty)
}

/// The chat chunk templates with id, created and model filled in (token counts left open).
fn chat_templates(model: &str) -> Result<Vec<Value>, String> {
    let vars = [
        ("id", json!(fixtures::chat_id())),
        ("created", json!(fixtures::unix_now())),
        ("model", json!(model)),
    ];
    let mut lines = fixtures::parse_lines("chat_streaming.jsonl", fixtures::CHAT_STREAMING)?;
    lines.iter_mut().for_each(|l| fixtures::fill(l, &vars));
    Ok(lines)
}

fn usage_vars(prompt_tokens: u64, completion_tokens: u64) -> [(&'static str, Value); 3] {
    [
        ("prompt_tokens", json!(prompt_tokens)),
        ("completion_tokens", json!(completion_tokens)),
        ("total_tokens", json!(prompt_tokens + completion_tokens)),
    ]
}

/// Finishes a chunk: token counts, and `"usage": null` on ordinary chunks when usage was asked for.
fn finish_chunk(mut chunk: Value, include_usage: bool, vars: &fixtures::Vars<'_>) -> Value {
    fixtures::fill(&mut chunk, vars);
    if include_usage
        && !is_usage_chunk(&chunk)
        && let Some(map) = chunk.as_object_mut()
    {
        map.insert("usage".to_owned(), Value::Null);
    }
    chunk
}

/// A whole chat completion stream, ending with `data: [DONE]`: the fixture's five
/// content chunks, or `completion_tokens` of them (`x-mock-completion-tokens`).
pub(crate) fn chat_events(
    model: &str,
    include_usage: bool,
    prompt_tokens: u64,
    completion_tokens: Option<u64>,
) -> Result<Vec<Bytes>, String> {
    let completion = completion_tokens.unwrap_or(REPLY_PIECES.len() as u64);
    let vars = usage_vars(prompt_tokens, completion);
    let mut templates: Vec<Value> = chat_templates(model)?
        .into_iter()
        .filter(|c| include_usage || !is_usage_chunk(c))
        .collect();
    if let Some(n) = completion_tokens {
        let is_content = |c: &Value| {
            c.pointer("/choices/0/delta/content")
                .is_some_and(|v| v != "")
        };
        let first = templates
            .iter()
            .position(is_content)
            .ok_or("no content chunk")?;
        let content = templates[first].clone();
        templates.retain(|c| !is_content(c));
        let pieces = (0..n).map(|i| {
            let mut chunk = content.clone();
            if let Some(delta) = chunk.pointer_mut("/choices/0/delta/content") {
                *delta = json!(REPLY_PIECES[(i as usize) % REPLY_PIECES.len()]);
            }
            chunk
        });
        templates.splice(first..first, pieces);
    }
    let mut events: Vec<Bytes> = templates
        .into_iter()
        .map(|c| data_event(&finish_chunk(c, include_usage, &vars)))
        .collect();
    events.push(done_event());
    Ok(events)
}

/// A whole Responses API stream (`response.created` ... `response.completed`).
pub(crate) fn responses_events(
    model: &str,
    input_tokens: u64,
    output_tokens: Option<u64>,
) -> Result<Vec<Bytes>, String> {
    let vars = responses_vars(model, input_tokens, output_tokens);
    let mut lines =
        fixtures::parse_lines("responses_streaming.jsonl", fixtures::RESPONSES_STREAMING)?;
    lines
        .iter_mut()
        .map(|line| {
            fixtures::fill(line, &vars);
            let name = line
                .get("type")
                .and_then(Value::as_str)
                .ok_or("responses_streaming.jsonl: event without type")?;
            Ok(named_event(name, line))
        })
        .collect()
}

pub(crate) fn responses_vars(
    model: &str,
    input_tokens: u64,
    output_tokens: Option<u64>,
) -> Vec<(&'static str, Value)> {
    let output_tokens = output_tokens.unwrap_or(REPLY_PIECES.len() as u64);
    vec![
        ("id", json!(format!("resp_{}", fixtures::random_hex(48)))),
        ("msg_id", json!(format!("msg_{}", fixtures::random_hex(48)))),
        ("created", json!(fixtures::unix_now())),
        ("model", json!(model)),
        ("input_tokens", json!(input_tokens)),
        ("output_tokens", json!(output_tokens)),
        ("total_tokens", json!(input_tokens + output_tokens)),
    ]
}

/// Chat chunks one per `interval` until `limit` has passed, then a normal ending.
pub(crate) struct LongStream {
    role: Option<Value>,
    content: Value,
    tail: Vec<Value>,
    include_usage: bool,
    prompt_tokens: u64,
    interval: Duration,
    until: Instant,
    sent: u64,
    queue: VecDeque<Step>,
    finished: bool,
}

impl LongStream {
    pub(crate) fn new(
        model: &str,
        include_usage: bool,
        prompt_tokens: u64,
        interval: Duration,
        limit: Duration,
    ) -> Result<LongStream, String> {
        let mut templates = chat_templates(model)?.into_iter();
        let role = templates.next().ok_or("chat_streaming.jsonl is empty")?;
        let content = templates
            .next()
            .ok_or("chat_streaming.jsonl has no content chunk")?;
        // Skip the remaining content chunks; keep the finish (and usage) chunks.
        let tail = templates
            .filter(|c| {
                is_usage_chunk(c)
                    || c.pointer("/choices/0/finish_reason")
                        .is_some_and(|f| !f.is_null())
            })
            .filter(|c| include_usage || !is_usage_chunk(c))
            .collect();
        Ok(LongStream {
            role: Some(role),
            content,
            tail,
            include_usage,
            prompt_tokens,
            interval,
            until: Instant::now() + limit,
            sent: 0,
            queue: VecDeque::new(),
            finished: false,
        })
    }

    fn refill(&mut self) {
        // Only the usage chunk has token placeholders; it is filled at the end.
        let no_vars: [(&str, Value); 0] = [];
        if let Some(role) = self.role.take() {
            let chunk = finish_chunk(role, self.include_usage, &no_vars);
            self.queue.push_back(Step::Send(data_event(&chunk)));
            return;
        }
        if self.finished {
            return;
        }
        self.queue.push_back(if self.interval.is_zero() {
            Step::Flush
        } else {
            Step::Sleep(self.interval)
        });
        if Instant::now() < self.until {
            let piece = REPLY_PIECES[(self.sent as usize) % REPLY_PIECES.len()];
            let mut chunk = self.content.clone();
            if let Some(delta) = chunk.pointer_mut("/choices/0/delta/content") {
                *delta = json!(piece);
            }
            self.sent += 1;
            let chunk = finish_chunk(chunk, self.include_usage, &no_vars);
            self.queue.push_back(Step::Send(data_event(&chunk)));
        } else {
            self.finished = true;
            let vars = usage_vars(self.prompt_tokens, self.sent);
            for chunk in std::mem::take(&mut self.tail) {
                let chunk = finish_chunk(chunk, self.include_usage, &vars);
                self.queue.push_back(Step::Send(data_event(&chunk)));
            }
            self.queue.push_back(Step::Send(done_event()));
        }
    }
}

impl Iterator for LongStream {
    type Item = Step;

    fn next(&mut self) -> Option<Step> {
        if self.queue.is_empty() {
            self.refill();
        }
        self.queue.pop_front()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(event: &Bytes) -> Value {
        let text = std::str::from_utf8(event).unwrap();
        let json = text.strip_prefix("data: ").unwrap().trim_end();
        serde_json::from_str(json).unwrap()
    }

    #[test]
    fn chat_events_without_usage() {
        let events = chat_events("m", false, 8, None).unwrap();
        assert_eq!(events.len(), 8); // role + 5 content + finish + [DONE]
        assert_eq!(events.last().unwrap(), &done_event());
        for e in &events[..7] {
            let v = parse(e);
            assert_eq!(v["model"], "m");
            assert!(v.get("usage").is_none());
            assert!(v["created"].is_u64());
        }
        assert_eq!(parse(&events[6])["choices"][0]["finish_reason"], "stop");
    }

    #[test]
    fn chat_events_with_usage() {
        let events = chat_events("m", true, 8, None).unwrap();
        assert_eq!(events.len(), 9);
        for e in &events[..7] {
            assert!(parse(e)["usage"].is_null());
        }
        let usage = parse(&events[7]);
        assert_eq!(usage["choices"], json!([]));
        assert_eq!(usage["usage"]["prompt_tokens"], 8);
        assert_eq!(usage["usage"]["completion_tokens"], 5);
        assert_eq!(usage["usage"]["total_tokens"], 13);
    }

    #[test]
    fn chat_events_with_n_completion_tokens() {
        let events = chat_events("m", true, 8, Some(12)).unwrap();
        assert_eq!(events.len(), 16); // role + 12 content + finish + usage + [DONE]
        assert_eq!(parse(&events[14])["usage"]["completion_tokens"], 12);
        assert_eq!(parse(&events[1])["choices"][0]["delta"]["content"], "Hello");
    }

    #[test]
    fn long_stream_ends_after_limit() {
        let steps: Vec<Step> = LongStream::new("m", true, 8, Duration::ZERO, Duration::ZERO)
            .unwrap()
            .collect();
        let sent: Vec<Bytes> = steps
            .into_iter()
            .filter_map(|s| match s {
                Step::Send(b) => Some(b),
                _ => None,
            })
            .collect();
        assert_eq!(sent.len(), 4); // role, finish, usage, [DONE]
        assert_eq!(parse(&sent[2])["usage"]["completion_tokens"], 0);
    }
}
