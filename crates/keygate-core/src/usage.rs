//! Token usage of one answer, as OpenAI reports it (or as keygate estimated it when
//! the answer was cut short).

use serde::{Deserialize, Serialize};

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

/// Usage from a parsed `usage` object: Chat Completions, legacy Completions and
/// Embeddings (`prompt_tokens`, `completion_tokens`, `prompt_tokens_details.
/// cached_tokens`) or the Responses API (`input_tokens`, `output_tokens`,
/// `input_tokens_details.cached_tokens`).
pub fn from_value(usage: &serde_json::Value) -> Option<Usage> {
    let n = |p: &str| usage.pointer(p).and_then(serde_json::Value::as_u64);
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
/// near the end of every answer that has one).
/// FOUNDATION STUB: parses only a complete small body; issue-10 core work replaces it.
pub fn from_json_tail(tail: &[u8]) -> Option<Usage> {
    let v: serde_json::Value = serde_json::from_slice(tail).ok()?;
    from_value(v.get("usage")?)
}

/// When an app streams Chat Completions without asking for usage, the body with
/// `stream_options.include_usage: true` added (`None`: nothing to change).
/// FOUNDATION STUB: issue-10 core work implements it.
pub fn ask_for_usage(_body: &[u8]) -> Option<Vec<u8>> {
    None
}

/// Reads an SSE answer as it passes: finds its usage (chat's final usage chunk,
/// Responses' `response.completed`), keeps the streamed completion text (for an
/// estimate when the stream is cut), and, when keygate asked for usage on the app's
/// behalf, removes what that added (`"usage":null` on each chunk and the usage-only
/// chunk) so the app sees what OpenAI would have sent it.
/// FOUNDATION STUB: passes bytes through and finds nothing; issue-10 core work implements it.
#[derive(Debug, Default)]
pub struct SseScanner {
    strip: bool,
    usage: Option<Usage>,
    text: String,
}

impl SseScanner {
    pub fn new(strip_injected_usage: bool) -> Self {
        Self {
            strip: strip_injected_usage,
            ..Self::default()
        }
    }

    /// Bytes from the upstream in; the bytes to send the app now out.
    pub fn feed(&mut self, chunk: bytes::Bytes) -> bytes::Bytes {
        let _ = self.strip;
        chunk
    }

    /// The end of the upstream body: whatever is still held back.
    pub fn finish(&mut self) -> bytes::Bytes {
        bytes::Bytes::new()
    }

    pub fn usage(&self) -> Option<Usage> {
        self.usage
    }

    /// The completion text streamed so far (capped), for an estimate.
    pub fn streamed_text(&self) -> &str {
        &self.text
    }
}
