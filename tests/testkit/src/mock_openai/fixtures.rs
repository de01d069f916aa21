//! Response templates from `tests/testkit/fixtures/openai/` and the helpers that fill them.
//!
//! A template value that is exactly the string `"{{name}}"` is replaced by the variable `name`
//! (which may be a number, a string, or any JSON value).

use std::collections::hash_map::RandomState;
use std::hash::{BuildHasher, Hasher};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use serde_json::Value;

pub const CHAT: &str = include_str!("../../fixtures/openai/chat.json");
pub const CHAT_STREAMING: &str = include_str!("../../fixtures/openai/chat_streaming.jsonl");
pub const EMBEDDINGS: &str = include_str!("../../fixtures/openai/embeddings.json");
pub const MODELS: &str = include_str!("../../fixtures/openai/models.json");
pub const RESPONSES: &str = include_str!("../../fixtures/openai/responses.json");
pub const RESPONSES_STREAMING: &str =
    include_str!("../../fixtures/openai/responses_streaming.jsonl");

/// The assistant text of every chat / responses answer.
pub const REPLY_TEXT: &str = "Hello from the mock!";
/// How [`REPLY_TEXT`] is split into stream deltas (also the completion token count).
pub const REPLY_PIECES: [&str; 5] = ["Hello", " from", " the", " mock", "!"];

pub(crate) type Vars<'a> = [(&'a str, Value)];

pub(crate) fn parse(name: &str, text: &str) -> Result<Value, String> {
    serde_json::from_str(text).map_err(|e| format!("mock fixture {name} is not valid JSON: {e}"))
}

pub(crate) fn parse_lines(name: &str, text: &str) -> Result<Vec<Value>, String> {
    text.lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| parse(name, l))
        .collect()
}

/// Replaces every `"{{name}}"` string value by the matching variable.
pub(crate) fn fill(value: &mut Value, vars: &Vars<'_>) {
    match value {
        Value::String(s) => {
            if let Some(name) = s.strip_prefix("{{").and_then(|s| s.strip_suffix("}}"))
                && let Some((_, v)) = vars.iter().find(|(k, _)| *k == name)
            {
                *value = v.clone();
            }
        }
        Value::Array(items) => items.iter_mut().for_each(|v| fill(v, vars)),
        Value::Object(map) => map.values_mut().for_each(|v| fill(v, vars)),
        _ => {}
    }
}

pub(crate) fn load(name: &str, text: &str, vars: &Vars<'_>) -> Result<Value, String> {
    let mut v = parse(name, text)?;
    fill(&mut v, vars);
    Ok(v)
}

pub(crate) fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// A random u64 without an RNG dependency (std's randomly keyed SipHash).
pub(crate) fn random_u64() -> u64 {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let mut h = RandomState::new().build_hasher();
    h.write_u64(COUNTER.fetch_add(1, Ordering::Relaxed));
    h.write_u128(
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0),
    );
    h.finish()
}

const ALNUM: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";

pub(crate) fn random_alnum(len: usize) -> String {
    let mut out = String::with_capacity(len);
    let mut bits = random_u64();
    let mut left = 10;
    for _ in 0..len {
        if left == 0 {
            bits = random_u64();
            left = 10;
        }
        out.push(char::from(ALNUM[(bits % ALNUM.len() as u64) as usize]));
        bits /= ALNUM.len() as u64;
        left -= 1;
    }
    out
}

pub(crate) fn random_hex(len: usize) -> String {
    let mut out = String::with_capacity(len + 16);
    while out.len() < len {
        out.push_str(&format!("{:016x}", random_u64()));
    }
    out.truncate(len);
    out
}

/// `chatcmpl-` + 29 alphanumerics, like OpenAI.
pub(crate) fn chat_id() -> String {
    format!("chatcmpl-{}", random_alnum(29))
}

/// `req_` + 32 hex digits, like OpenAI's `x-request-id`.
pub(crate) fn request_id() -> String {
    format!("req_{}", random_hex(32))
}

fn tokens_for_chars(chars: usize) -> u64 {
    chars.div_ceil(4) as u64
}

/// Text of a message `content` (a string or an array of parts with `text`).
fn content_chars(content: &Value) -> usize {
    match content {
        Value::String(s) => s.chars().count(),
        Value::Array(parts) => parts
            .iter()
            .map(|p| match p {
                Value::String(s) => s.chars().count(),
                _ => p
                    .get("text")
                    .and_then(Value::as_str)
                    .map_or(0, |s| s.chars().count()),
            })
            .sum(),
        _ => 0,
    }
}

/// Prompt tokens of a chat request: `3 + Σ(4 + ceil(chars/4))` over `messages`.
pub fn chat_prompt_tokens(request: &Value) -> u64 {
    let messages = request
        .get("messages")
        .and_then(Value::as_array)
        .map(Vec::as_slice)
        .unwrap_or_default();
    3 + messages
        .iter()
        .map(|m| 4 + tokens_for_chars(m.get("content").map_or(0, content_chars)))
        .sum::<u64>()
}

/// Input tokens of a responses request: like chat, with a string `input` and `instructions`
/// each counted as one message.
pub fn responses_input_tokens(request: &Value) -> u64 {
    let mut total = 3;
    if let Some(instructions) = request.get("instructions").and_then(Value::as_str) {
        total += 4 + tokens_for_chars(instructions.chars().count());
    }
    match request.get("input") {
        Some(Value::String(s)) => total += 4 + tokens_for_chars(s.chars().count()),
        Some(Value::Array(items)) => {
            for item in items {
                let chars = match item {
                    Value::String(s) => s.chars().count(),
                    _ => item.get("content").map_or(0, content_chars),
                };
                total += 4 + tokens_for_chars(chars);
            }
        }
        _ => {}
    }
    total
}

/// One embeddings input: its text (for the vector) and token count.
pub(crate) struct EmbeddingInput {
    pub seed: String,
    pub tokens: u64,
}

/// Splits an embeddings `input` (string, array of strings, token array, array of token arrays).
pub(crate) fn embedding_inputs(input: &Value) -> Option<Vec<EmbeddingInput>> {
    fn one(v: &Value) -> Option<EmbeddingInput> {
        match v {
            Value::String(s) => Some(EmbeddingInput {
                seed: s.clone(),
                tokens: tokens_for_chars(s.chars().count()).max(1),
            }),
            Value::Array(tokens) if tokens.iter().all(Value::is_number) => Some(EmbeddingInput {
                seed: v.to_string(),
                tokens: tokens.len() as u64,
            }),
            _ => None,
        }
    }
    match input {
        Value::String(_) => Some(vec![one(input)?]),
        Value::Array(items) if !items.is_empty() && items.iter().all(Value::is_number) => {
            Some(vec![one(input)?])
        }
        Value::Array(items) if !items.is_empty() => items.iter().map(one).collect(),
        _ => None,
    }
}

/// A deterministic unit-length vector derived from `seed`.
pub fn embedding_vector(seed: &str, dimensions: usize) -> Vec<f32> {
    // FNV-1a for the seed, then xorshift64*.
    let mut state = seed.bytes().fold(0xcbf2_9ce4_8422_2325_u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
    }) | 1;
    let mut values: Vec<f32> = (0..dimensions)
        .map(|_| {
            state ^= state >> 12;
            state ^= state << 25;
            state ^= state >> 27;
            let x = state.wrapping_mul(0x2545_f491_4f6c_dd1d) >> 40; // 24 bits
            (x as f32 / (1u64 << 23) as f32) - 1.0
        })
        .collect();
    let norm = values.iter().map(|v| v * v).sum::<f32>().sqrt();
    if norm > 0.0 {
        values.iter_mut().for_each(|v| *v /= norm);
    }
    values
}

/// Standard base64 (with padding) of the little-endian f32s, as OpenAI's `encoding_format: base64`.
pub fn embedding_base64(values: &[f32]) -> String {
    let bytes: Vec<u8> = values.iter().flat_map(|v| v.to_le_bytes()).collect();
    base64_encode(&bytes)
}

fn base64_encode(bytes: &[u8]) -> String {
    const TABLE: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let b = [
            chunk[0],
            chunk.get(1).copied().unwrap_or(0),
            chunk.get(2).copied().unwrap_or(0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        out.push(char::from(TABLE[(n >> 18) as usize & 63]));
        out.push(char::from(TABLE[(n >> 12) as usize & 63]));
        out.push(if chunk.len() > 1 {
            char::from(TABLE[(n >> 6) as usize & 63])
        } else {
            '='
        });
        out.push(if chunk.len() > 2 {
            char::from(TABLE[n as usize & 63])
        } else {
            '='
        });
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_matches_rfc4648_vectors() {
        assert_eq!(base64_encode(b""), "");
        assert_eq!(base64_encode(b"f"), "Zg==");
        assert_eq!(base64_encode(b"fo"), "Zm8=");
        assert_eq!(base64_encode(b"foo"), "Zm9v");
        assert_eq!(base64_encode(b"foobar"), "Zm9vYmFy");
    }

    #[test]
    fn fixtures_parse() {
        for (name, text) in [
            ("chat", CHAT),
            ("embeddings", EMBEDDINGS),
            ("models", MODELS),
            ("responses", RESPONSES),
        ] {
            parse(name, text).unwrap();
        }
        assert_eq!(parse_lines("cs", CHAT_STREAMING).unwrap().len(), 8);
        assert!(parse_lines("rs", RESPONSES_STREAMING).unwrap().len() > 5);
    }

    #[test]
    fn embedding_is_deterministic_and_normalised() {
        let a = embedding_vector("hello", 16);
        assert_eq!(a, embedding_vector("hello", 16));
        assert_ne!(a, embedding_vector("world", 16));
        let norm: f32 = a.iter().map(|v| v * v).sum::<f32>().sqrt();
        assert!((norm - 1.0).abs() < 1e-4);
    }

    #[test]
    fn token_estimates() {
        let req = serde_json::json!({"messages":[{"role":"user","content":"Hi"}]});
        assert_eq!(chat_prompt_tokens(&req), 8);
        let req = serde_json::json!({"input":"Hi"});
        assert_eq!(responses_input_tokens(&req), 8);
    }
}
