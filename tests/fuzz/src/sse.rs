//! The SSE usage scanner (`usage::SseScanner`): the proxy feeds it every chunk of a
//! streamed answer as it arrives from the upstream, in whatever pieces TCP made.
//!
//! A case is a stream built from `data` — pieces of real chat and Responses streams
//! (with and without the usage chunk keygate asks for, LF or CRLF), comments, `[DONE]`,
//! events whose JSON is cut or changed, raw bytes — and a set of cut points.
//!
//! Invariants, for both modes (passing through, and stripping the usage keygate asked
//! for):
//! - any chunking gives exactly what the whole buffer fed at once gives: the same
//!   bytes out, the same usage, the same streamed text;
//! - passing through changes nothing: the bytes out are the bytes in;
//! - stripping removes only what keygate added: for a real chat stream with usage it
//!   gives the same stream without it, and it finds the same usage and text as
//!   passing through does on any input.

use std::sync::OnceLock;

use bytes::Bytes;
use keygate_core::usage::{SseScanner, Usage};

use crate::Input;

const CHAT_LINES: &str = include_str!("../../testkit/fixtures/openai/chat_streaming.jsonl");
const RESPONSES_LINES: &str =
    include_str!("../../testkit/fixtures/openai/responses_streaming.jsonl");

/// One fuzz case.
pub fn check(data: &[u8]) {
    let mut input = Input::new(data);
    let eol = if input.bool() { "\r\n" } else { "\n" };
    let stream = build(&mut input, eol);
    let cuts = cuts(&mut input, stream.len());
    let (whole_pass, pass) = run(false, &stream, &[]);
    let (chunked_pass, pass_chunked) = run(false, &stream, &cuts);
    assert_eq!(whole_pass, stream, "passing through changed the bytes");
    assert_eq!(chunked_pass, stream, "passing through changed the bytes");
    assert_eq!(pass, pass_chunked, "chunking changed what was read");
    let (whole_strip, strip) = run(true, &stream, &[]);
    let (chunked_strip, strip_chunked) = run(true, &stream, &cuts);
    assert_eq!(
        whole_strip, chunked_strip,
        "chunking changed the stripped bytes"
    );
    assert_eq!(strip, strip_chunked, "chunking changed what was read");
    assert_eq!(strip, pass, "stripping changed what was read");
    assert!(whole_strip.len() <= stream.len(), "stripping added bytes");
}

/// The real chat stream with the usage keygate asks for, cut anywhere, stripped,
/// equals the stream OpenAI sends without it; usage and text are the fixture's.
pub fn check_real_chat(data: &[u8]) {
    let mut input = Input::new(data);
    let eol = if input.bool() { "\r\n" } else { "\n" };
    let (with, without) = if eol == "\n" {
        &streams().0
    } else {
        &streams().1
    };
    let cuts = cuts(&mut input, with.len());
    let (out, seen) = run(true, with, &cuts);
    assert_eq!(&out, without);
    assert_eq!(
        seen.usage,
        Some(Usage {
            prompt_tokens: 19,
            cached_tokens: 0,
            completion_tokens: 5
        })
    );
    assert_eq!(seen.text, "Hello from the mock!");
}

/// What a scanner read from a stream.
#[derive(Debug, PartialEq, Eq)]
struct Seen {
    usage: Option<Usage>,
    text: String,
}

fn run(strip: bool, stream: &[u8], cuts: &[usize]) -> (Vec<u8>, Seen) {
    let mut s = SseScanner::new(strip);
    let mut out = Vec::new();
    let mut at = 0;
    for &c in cuts.iter().chain(std::iter::once(&stream.len())) {
        out.extend_from_slice(&s.feed(Bytes::copy_from_slice(&stream[at..c])));
        at = c;
    }
    out.extend_from_slice(&s.finish());
    let seen = Seen {
        usage: s.usage(),
        text: s.streamed_text().to_owned(),
    };
    (out, seen)
}

/// Sorted cut points in `0..=len`.
fn cuts(input: &mut Input<'_>, len: usize) -> Vec<usize> {
    let n = input.below(24);
    let mut cuts: Vec<usize> = (0..n).map(|_| input.below(len + 1)).collect();
    cuts.sort_unstable();
    cuts
}

/// The fixtures' events, read once: chat with usage, chat without, Responses.
type Events = (Vec<String>, Vec<String>, Vec<(String, String)>);

fn events() -> &'static Events {
    static E: OnceLock<Events> = OnceLock::new();
    E.get_or_init(|| (chat_events(true), chat_events(false), responses_events()))
}

/// The real chat stream (with usage, without) for LF and for CRLF.
type Pair = (Vec<u8>, Vec<u8>);

fn streams() -> &'static (Pair, Pair) {
    static S: OnceLock<(Pair, Pair)> = OnceLock::new();
    S.get_or_init(|| {
        let pair = |eol| (chat_stream(true, eol), chat_stream(false, eol));
        (pair("\n"), pair("\r\n"))
    })
}

/// A stream of up to 24 pieces chosen by `input`.
fn build(input: &mut Input<'_>, eol: &str) -> Vec<u8> {
    let (chat, chat_plain, responses) = events();
    let mut out = Vec::new();
    for _ in 0..input.below(24) {
        match input.byte() % 10 {
            0 | 1 => {
                let e = &chat[input.below(chat.len())];
                out.extend_from_slice(format!("data: {e}{eol}{eol}").as_bytes());
            }
            2 => {
                let e = &chat_plain[input.below(chat_plain.len())];
                out.extend_from_slice(format!("data: {e}{eol}{eol}").as_bytes());
            }
            3 => {
                let (name, e) = &responses[input.below(responses.len())];
                out.extend_from_slice(format!("event: {name}{eol}data: {e}{eol}{eol}").as_bytes());
            }
            4 => {
                let other = [
                    ": keep-alive",
                    "data: [DONE]",
                    "id: 7",
                    "retry: 100",
                    "event: error",
                    "data:{\"usage\":null}",
                    "data: {\"choices\":[],\"usage\":{\"prompt_tokens\":3}}",
                    "",
                ];
                out.extend_from_slice(other[input.below(other.len())].as_bytes());
                out.extend_from_slice(eol.as_bytes());
                if input.bool() {
                    out.extend_from_slice(eol.as_bytes());
                }
            }
            5 => {
                // An event with its JSON cut or one byte changed.
                let e = chat[input.below(chat.len())].as_bytes();
                let mut e = e[..input.below(e.len() + 1)].to_vec();
                if !e.is_empty() && input.bool() {
                    let i = input.below(e.len());
                    e[i] = input.byte();
                }
                out.extend_from_slice(b"data: ");
                out.extend_from_slice(&e);
                out.extend_from_slice(eol.as_bytes());
                out.extend_from_slice(eol.as_bytes());
            }
            6 => {
                // A multi-line data field.
                let e = &chat[input.below(chat.len())];
                let (a, b) = e.split_at(e.len() / 2);
                out.extend_from_slice(format!("data: {a}{eol}data: {b}{eol}{eol}").as_bytes());
            }
            7 => out
                .extend_from_slice(["\r", "\n", "\r\n", "\n\n", "\r\r"][input.below(5)].as_bytes()),
            _ => out.extend_from_slice(input.bytes(64)),
        }
    }
    out
}

/// The chat stream's event payloads as the mock (and OpenAI) send them: with
/// `include_usage`, every chunk carries `"usage":null` and a usage-only chunk comes
/// last; without, neither.
fn chat_events(include_usage: bool) -> Vec<String> {
    CHAT_LINES
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(fill)
        .filter_map(|line| {
            let usage_chunk = line.contains("\"choices\":[]");
            match (include_usage, usage_chunk) {
                (false, true) => None,
                (true, false) => Some(format!("{},\"usage\":null}}", &line[..line.len() - 1])),
                _ => Some(line),
            }
        })
        .collect()
}

fn chat_stream(include_usage: bool, eol: &str) -> Vec<u8> {
    let mut out = String::new();
    for e in chat_events(include_usage) {
        out.push_str(&format!("data: {e}{eol}{eol}"));
    }
    out.push_str(&format!("data: [DONE]{eol}{eol}"));
    out.into_bytes()
}

fn responses_events() -> Vec<(String, String)> {
    RESPONSES_LINES
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(fill)
        .map(|line| {
            let name = serde_json::from_str::<serde_json::Value>(&line)
                .ok()
                .and_then(|v| v["type"].as_str().map(str::to_owned))
                .unwrap_or_default();
            (name, line)
        })
        .collect()
}

/// Fills the fixture's `"{{name}}"` placeholders the way the mock does.
fn fill(line: &str) -> String {
    [
        ("id", "\"chatcmpl-B9MBs8CjcvOU2jLn4n570S5qMJKcT\""),
        ("msg_id", "\"msg_67c9fdcecf488190bdd9a0409de3a1ec07b8b0ad\""),
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
