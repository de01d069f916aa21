//! Token counts for reservations: a request's prompt counted with OpenAI's tokenizer
//! for the model family (tiktoken-rs), and the output it may produce.
//!
//! The prompt count is an estimate made before the upstream answers, used to reserve
//! budget and tpm; it is settled to OpenAI's own `usage` afterwards. It follows
//! OpenAI's published counting recipe for chat (3 tokens per message, 1 more for a
//! `name`, 3 to prime the reply) so that for text-only chat it matches or slightly
//! exceeds the real `prompt_tokens`. Tool definitions are counted as their JSON text,
//! which is longer than the form OpenAI feeds the model, so they err on the high side.
//! Images, audio and files are never tokenized (their base64 would count thousands of
//! meaningless tokens): each gets a fixed allowance, below.

use std::cell::Cell;
use std::sync::OnceLock;

use serde_json::Value;
use tiktoken_rs::CoreBPE;

/// One image input (`image_url` / `input_image`): a high-detail image of up to 6 tiles
/// of 512 px at 85 + 170 per tile (GPT-4o's and GPT-4.1's rate), which covers a 4:3 or
/// 3:2 photo at full detail. A very elongated high-detail image (8 tiles, 1,445) costs
/// more; a low-detail one costs 85. Models that bill images at a multiple of this in
/// tokens have their own figure in [`image_tokens`].
pub const IMAGE_TOKENS: u64 = 85 + 6 * 170;

/// One audio input (`input_audio`): about a minute and a half of speech at GPT-4o's
/// audio rate (roughly 10 tokens a second). A fixed allowance, not a measurement: the
/// settle step corrects it to the real usage.
pub const AUDIO_TOKENS: u64 = 1_000;

/// One file input (`file` / `input_file`, e.g. a PDF, whose pages OpenAI feeds as text
/// and images): two images' worth. A fixed allowance, corrected when the answer ends.
pub const FILE_TOKENS: u64 = 2 * IMAGE_TOKENS;

/// Text beyond this many bytes in one string is not tokenized: its tokens are
/// extrapolated from the ratio measured on the first part, so a huge body cannot hold
/// a request thread for long.
const TOKENIZE_AT_MOST: usize = 256 * 1024;

/// OpenAI's chat overhead: every message is wrapped in 3 tokens, a `name` adds 1, and
/// the reply is primed with 3.
const PER_MESSAGE: u64 = 3;
const PER_NAME: u64 = 1;
const REPLY_PRIMING: u64 = 3;

/// Text tokenized for one request body at most, across all its strings: the
/// tokenizer runs on the request's thread, and a body of many strings each under
/// [`TOKENIZE_AT_MOST`] (up to `max_body_bytes`, 32 MiB by default) would otherwise
/// cost seconds of CPU. Strings past it are counted at the ratio measured on the text
/// tokenized before them.
const TOKENIZE_PER_REQUEST: usize = 1024 * 1024;

/// Tokens in `text` for `model`.
pub fn count(model: &str, text: &str) -> u64 {
    counted(model, text, TOKENIZE_AT_MOST).tokens
}

/// A count of which only the first `head` bytes were tokenized.
struct Counted {
    tokens: u64,
    head: usize,
    head_tokens: u64,
}

/// Tokens in `text`, tokenizing at most `at_most` bytes (a char boundary at or
/// below it) and extrapolating the rest at the ratio measured on them. `at_most` is
/// at least 4 (one char) whenever `text` is longer.
fn counted(model: &str, text: &str, at_most: usize) -> Counted {
    let none = Counted {
        tokens: 0,
        head: 0,
        head_tokens: 0,
    };
    if text.is_empty() {
        return none;
    }
    let Some(bpe) = encoder(model) else {
        // The tokenizer's tables failed to load (they are compiled in, so this is not
        // expected): fall back to an over-estimate rather than refusing requests.
        return Counted {
            tokens: text.len() as u64,
            ..none
        };
    };
    let mut cut = text.len().min(at_most);
    while !text.is_char_boundary(cut) {
        cut -= 1;
    }
    if cut == 0 {
        return none;
    }
    let head_tokens = tokenize(bpe, &text[..cut]);
    let rest = (text.len() - cut) as u64;
    Counted {
        tokens: head_tokens + (rest * head_tokens).div_ceil(cut as u64),
        head: cut,
        head_tokens,
    }
}

fn tokenize(bpe: &CoreBPE, text: &str) -> u64 {
    #[cfg(test)]
    TOKENIZED.with(|t| t.set(t.get() + text.len()));
    bpe.encode_ordinary(text).len() as u64
}

#[cfg(test)]
thread_local! {
    /// Bytes given to the tokenizer on this thread (tests measure the CPU bound).
    static TOKENIZED: std::cell::Cell<usize> = const { std::cell::Cell::new(0) };
}

/// Loads the tokenizers now, so the first request does not pay for it (about a tenth
/// of a second each). Call once at startup; harmless to call again.
pub fn preload() {
    let _ = o200k();
    let _ = cl100k();
}

/// The prompt tokens of a request body (messages, input, prompt, instructions, tools),
/// with a fixed allowance for images, audio and files.
///
/// Understands Chat Completions (`messages`, `tools`, `functions`), the Responses API
/// (`input`, `instructions`, `tools`), Embeddings and Moderations (`input`) and legacy
/// Completions (`prompt`). A body it does not recognise counts 0.
pub fn estimate_prompt(model: &str, body: &Value) -> u64 {
    let c = Counter {
        model,
        left: Cell::new(TOKENIZE_PER_REQUEST),
        measured: Cell::new((0, 0)),
    };
    let mut n = 0u64;
    if let Some(messages) = body.get("messages").and_then(Value::as_array) {
        n += messages.iter().map(|m| c.message(m)).sum::<u64>() + REPLY_PRIMING;
    }
    if let Some(prompt) = body.get("prompt") {
        n += c.plain_input(prompt);
    }
    if let Some(suffix) = body.get("suffix").and_then(Value::as_str) {
        n += c.text(suffix);
    }
    if let Some(input) = body.get("input") {
        n += if is_plain_input_model(model) {
            c.plain_input(input)
        } else {
            c.responses_input(input) + REPLY_PRIMING
        };
    }
    if let Some(instructions) = body.get("instructions").and_then(Value::as_str) {
        n += PER_MESSAGE + c.text(instructions);
    }
    for key in ["tools", "functions"] {
        if let Some(v) = body.get(key).filter(|v| !v.is_null()) {
            n += c.json(v);
        }
    }
    // A JSON schema for structured output is shown to the model too.
    for ptr in ["/response_format/json_schema", "/text/format/schema"] {
        if let Some(v) = body.pointer(ptr) {
            n += c.json(v);
        }
    }
    n
}

/// The output the request allows: `max_tokens`, `max_completion_tokens` or
/// `max_output_tokens`, whichever it sets (`null` counts as not set).
pub fn requested_output(body: &Value) -> Option<u64> {
    ["max_completion_tokens", "max_tokens", "max_output_tokens"]
        .iter()
        .find_map(|k| body.get(*k).and_then(Value::as_u64))
}

/// How many answers the request asks for: Chat Completions' `n`, legacy Completions'
/// `n` and `best_of` (the larger: `best_of` answers are generated and billed, `n`
/// returned). Each may be as long as the output limit, so the reservation multiplies
/// by this; 1 when unset.
pub fn choices(body: &Value) -> u64 {
    ["n", "best_of"]
        .iter()
        .filter_map(|k| body.get(*k).and_then(Value::as_u64))
        .max()
        .unwrap_or(1)
        .max(1)
}

/// The tokens OpenAI bills for one image on `model`. GPT-4o mini bills images at
/// 2,833 + 5,667 per tile (33 times GPT-4o's count, priced to cost the same); the
/// GPT-4.1 / GPT-5 mini and nano and o4-mini patch models bill at most 1,536 patches
/// times a multiplier. Others: [`IMAGE_TOKENS`].
pub fn image_tokens(model: &str) -> u64 {
    let m = base_model(model);
    if m.starts_with("gpt-4o-mini") {
        2_833 + 6 * 5_667
    } else if m.starts_with("gpt-4.1-nano") || m.starts_with("gpt-5-nano") {
        1_536 * 246 / 100
    } else if m.starts_with("o4-mini") {
        1_536 * 172 / 100
    } else if m.starts_with("gpt-4.1-mini") || m.starts_with("gpt-5-mini") {
        1_536 * 162 / 100
    } else {
        IMAGE_TOKENS
    }
}

/// Which of OpenAI's encodings a model uses.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Encoding {
    O200kBase,
    Cl100kBase,
}

/// The encoding of `model`: cl100k_base for GPT-4 (not 4o/4.1/4.5), GPT-3.5, the
/// embedding models and the `-002` base models; o200k_base for everything newer, and
/// for names it does not know (new models use it).
pub fn encoding_for(model: &str) -> Encoding {
    let m = base_model(model);
    let o200k = ["gpt-4o", "gpt-4.1", "gpt-4.5", "chatgpt-4o"];
    let cl100k = m == "gpt-4"
        || (m.starts_with("gpt-4-") && !o200k.iter().any(|p| m.starts_with(p)))
        || m.starts_with("gpt-3.5")
        || m.starts_with("gpt-35")
        || m.starts_with("text-embedding-")
        || m.starts_with("davinci-002")
        || m.starts_with("babbage-002");
    if cl100k {
        Encoding::Cl100kBase
    } else {
        Encoding::O200kBase
    }
}

/// `ft:gpt-4o-mini-2024-07-18:org::id` → `gpt-4o-mini-2024-07-18`.
fn base_model(model: &str) -> &str {
    model
        .strip_prefix("ft:")
        .and_then(|m| m.split(':').next())
        .unwrap_or(model)
}

/// Models whose `input` is plain text or token arrays with no chat wrapping.
fn is_plain_input_model(model: &str) -> bool {
    let m = base_model(model);
    m.contains("embedding") || m.contains("moderation")
}

fn encoder(model: &str) -> Option<&'static CoreBPE> {
    match encoding_for(model) {
        Encoding::O200kBase => o200k(),
        Encoding::Cl100kBase => cl100k(),
    }
}

// Loaded once per process. tiktoken-rs' own singletons unwrap a load error; these keep
// it as `None` (never expected: the tables are compiled into the binary).
fn o200k() -> Option<&'static CoreBPE> {
    static BPE: OnceLock<Option<CoreBPE>> = OnceLock::new();
    BPE.get_or_init(|| tiktoken_rs::o200k_base().ok()).as_ref()
}

fn cl100k() -> Option<&'static CoreBPE> {
    static BPE: OnceLock<Option<CoreBPE>> = OnceLock::new();
    BPE.get_or_init(|| tiktoken_rs::cl100k_base().ok()).as_ref()
}

struct Counter<'a> {
    model: &'a str,
    /// Bytes this request may still tokenize ([`TOKENIZE_PER_REQUEST`]).
    left: Cell<usize>,
    /// Bytes tokenized so far and their tokens: the ratio for text past the bound.
    measured: Cell<(u64, u64)>,
}

impl Counter<'_> {
    fn text(&self, s: &str) -> u64 {
        let left = self.left.get();
        if left >= 4 {
            let c = counted(self.model, s, left.min(TOKENIZE_AT_MOST));
            if c.head > 0 {
                self.left.set(left - c.head);
                let (bytes, tokens) = self.measured.get();
                self.measured
                    .set((bytes + c.head as u64, tokens + c.head_tokens));
                return c.tokens;
            }
            if s.is_empty() || encoder(self.model).is_none() {
                return c.tokens;
            }
        }
        let (bytes, tokens) = self.measured.get();
        (s.len() as u64 * tokens).div_ceil(bytes.max(1))
    }

    fn json(&self, v: &Value) -> u64 {
        match v {
            Value::String(s) => self.text(s),
            _ => self.text(&v.to_string()),
        }
    }

    /// A chat message: role, content, name, tool calls, tool call id, refusal.
    fn message(&self, m: &Value) -> u64 {
        let Some(obj) = m.as_object() else {
            return PER_MESSAGE + self.json(m);
        };
        let mut n = PER_MESSAGE;
        for (key, v) in obj {
            n += match key.as_str() {
                "content" => self.content(v),
                "name" => PER_NAME + v.as_str().map_or(0, |s| self.text(s)),
                "tool_calls" => v
                    .as_array()
                    .map_or(0, |calls| calls.iter().map(|c| self.tool_call(c)).sum()),
                "function_call" => self.tool_call(&serde_json::json!({ "function": v })),
                // An earlier audio answer is referred to by id; its tokens are not
                // knowable here.
                "audio" => 0,
                _ => v.as_str().map_or(0, |s| self.text(s)),
            };
        }
        n
    }

    /// A call the assistant made: its function name and arguments.
    fn tool_call(&self, call: &Value) -> u64 {
        let f = call
            .get("function")
            .or_else(|| call.get("custom"))
            .unwrap_or(call);
        let s = |k: &str| f.get(k).and_then(Value::as_str).map_or(0, |s| self.text(s));
        s("name") + s("arguments") + s("input")
    }

    /// `content`: a string, or an array of typed parts.
    fn content(&self, v: &Value) -> u64 {
        match v {
            Value::String(s) => self.text(s),
            Value::Array(parts) => parts.iter().map(|p| self.part(p)).sum(),
            Value::Null => 0,
            other => self.json(other),
        }
    }

    /// One content part of chat or the Responses API.
    fn part(&self, p: &Value) -> u64 {
        let field = |k: &str| p.get(k).and_then(Value::as_str).map_or(0, |s| self.text(s));
        match p.get("type").and_then(Value::as_str) {
            Some("text" | "input_text" | "output_text") => field("text"),
            Some("refusal") => field("refusal"),
            Some("image_url" | "input_image" | "image") => image_tokens(self.model),
            Some("input_audio" | "audio") => AUDIO_TOKENS,
            Some("file" | "input_file") => FILE_TOKENS,
            _ => match p {
                Value::String(s) => self.text(s),
                other => self.strings(other),
            },
        }
    }

    /// The Responses API's `input`: a string (one user message) or a list of items.
    fn responses_input(&self, input: &Value) -> u64 {
        match input {
            Value::String(s) => PER_MESSAGE + self.text(s),
            Value::Array(items) => items.iter().map(|i| self.item(i)).sum(),
            _ => 0,
        }
    }

    /// One Responses input item: a message, a function call or its output, or another
    /// item whose strings are counted.
    fn item(&self, item: &Value) -> u64 {
        match item.get("type").and_then(Value::as_str) {
            None | Some("message") => self.message(item),
            Some("function_call" | "custom_tool_call") => PER_MESSAGE + self.tool_call(item),
            Some("function_call_output" | "custom_tool_call_output") => {
                PER_MESSAGE + item.get("output").map_or(0, |v| self.content(v))
            }
            Some(_) => PER_MESSAGE + self.strings(item),
        }
    }

    /// `input` / `prompt` of Embeddings, Moderations and legacy Completions: a string,
    /// a list of strings, a token array (its length) or a list of token arrays.
    fn plain_input(&self, v: &Value) -> u64 {
        match v {
            Value::String(s) => self.text(s),
            Value::Number(_) => 1,
            Value::Array(items) => items.iter().map(|i| self.plain_input(i)).sum(),
            Value::Object(_) => self.part(v),
            _ => 0,
        }
    }

    /// Every string in a value except binary payloads (base64 data, encrypted content,
    /// data URLs), for item kinds the counter does not know.
    fn strings(&self, v: &Value) -> u64 {
        match v {
            Value::String(s) if s.starts_with("data:") => 0,
            Value::String(s) => self.text(s),
            Value::Array(a) => a.iter().map(|x| self.strings(x)).sum(),
            Value::Object(o) => o
                .iter()
                .filter(|(k, _)| !BINARY_FIELDS.contains(&k.as_str()))
                .map(|(_, x)| self.strings(x))
                .sum(),
            _ => 0,
        }
    }
}

/// Fields that carry base64 or opaque data, never text the model reads as tokens.
const BINARY_FIELDS: &[&str] = &[
    "data",
    "file_data",
    "image_url",
    "encrypted_content",
    "b64_json",
    "id",
    "call_id",
    "type",
    "status",
];

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn families_get_their_encoding() {
        use Encoding::*;
        for m in [
            "gpt-4o",
            "gpt-4o-mini-2024-07-18",
            "gpt-4.1-nano",
            "gpt-4.5-preview",
            "gpt-5",
            "gpt-5-mini",
            "o1",
            "o3-mini",
            "o4-mini",
            "chatgpt-4o-latest",
            "omni-moderation-latest",
            "ft:gpt-4o-mini-2024-07-18:acme::abc123",
            "some-future-model",
        ] {
            assert_eq!(encoding_for(m), O200kBase, "{m}");
        }
        for m in [
            "gpt-4",
            "gpt-4-0613",
            "gpt-4-turbo",
            "gpt-4-turbo-2024-04-09",
            "gpt-4-32k",
            "gpt-3.5-turbo",
            "gpt-3.5-turbo-instruct",
            "text-embedding-3-small",
            "text-embedding-ada-002",
            "ft:gpt-3.5-turbo-0125:acme::xyz",
        ] {
            assert_eq!(encoding_for(m), Cl100kBase, "{m}");
        }
    }

    #[test]
    fn counts_match_tiktoken() {
        // Reference values from OpenAI's tiktoken.
        assert_eq!(count("gpt-3.5-turbo", "hello world"), 2);
        assert_eq!(count("gpt-4o", "hello world"), 2);
        assert_eq!(count("gpt-4o", "tiktoken is great!"), 6);
        assert_eq!(count("gpt-4", "tiktoken is great!"), 6);
        assert_eq!(count("gpt-4o", ""), 0);
        // Special-token text in a prompt is ordinary text, not a crash.
        assert!(count("gpt-4o", "<|endoftext|>") > 1);
    }

    #[test]
    fn chat_follows_openai_recipe() {
        // OpenAI cookbook example ("How to count tokens with tiktoken"): these messages
        // are 129 prompt tokens for gpt-4o / gpt-4 per the API.
        let body = json!({"model": "gpt-4o", "messages": [
            {"role": "system", "content": "You are a helpful, pattern-following assistant that translates corporate jargon into plain English."},
            {"role": "system", "name": "example_user", "content": "New synergies will help drive top-line growth."},
            {"role": "system", "name": "example_assistant", "content": "Things working well together will increase revenue."},
            {"role": "system", "name": "example_user", "content": "Let's circle back when we have more bandwidth to touch base on opportunities for increased leverage."},
            {"role": "system", "name": "example_assistant", "content": "Let's talk later when we're less busy about how to do better."},
            {"role": "user", "content": "This late pivot means we don't have time to boil the ocean for the client deliverable."},
        ]});
        assert_eq!(estimate_prompt("gpt-4o", &body), 124);
        assert_eq!(estimate_prompt("gpt-4", &body), 129);
        let hi = json!({"messages": [{"role": "user", "content": "Hi"}]});
        // role (1) + content (1) + 3 + 3 priming.
        assert_eq!(estimate_prompt("gpt-4o-mini", &hi), 8);
    }

    #[test]
    fn parts_and_media_allowances() {
        let b64 = "A".repeat(200_000);
        let body = json!({"messages": [{"role": "user", "content": [
            {"type": "text", "text": "What is in this image?"},
            {"type": "image_url", "image_url": {"url": format!("data:image/png;base64,{b64}")}},
            {"type": "input_audio", "input_audio": {"data": b64, "format": "wav"}},
            {"type": "file", "file": {"file_data": b64, "filename": "a.pdf"}},
        ]}]});
        let text = count("gpt-4o", "What is in this image?") + count("gpt-4o", "user");
        assert_eq!(
            estimate_prompt("gpt-4o", &body),
            text + IMAGE_TOKENS + AUDIO_TOKENS + FILE_TOKENS + PER_MESSAGE + REPLY_PRIMING
        );
        assert!(image_tokens("gpt-4o-mini") > 30_000);
    }

    #[test]
    fn tools_and_calls_count() {
        let tools = json!([{"type": "function", "function": {"name": "get_weather",
            "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}}}]);
        let without = json!({"messages": [
            {"role": "user", "content": "Weather in Paris?"},
            {"role": "assistant", "content": null, "tool_calls": [{"id": "call_1", "type": "function",
                "function": {"name": "get_weather", "arguments": "{\"city\":\"Paris\"}"}}]},
            {"role": "tool", "tool_call_id": "call_1", "content": "18C and sunny"},
        ]});
        let mut with = without.clone();
        with["tools"] = tools.clone();
        let a = estimate_prompt("gpt-4o", &without);
        let b = estimate_prompt("gpt-4o", &with);
        assert_eq!(b - a, count("gpt-4o", &tools.to_string()));
        assert!(a > count("gpt-4o", "{\"city\":\"Paris\"}") + 3 * PER_MESSAGE);
    }

    #[test]
    fn responses_bodies() {
        let s = json!({"model": "gpt-5", "input": "Tell me a joke", "instructions": "Be brief."});
        let n = estimate_prompt("gpt-5", &s);
        assert_eq!(
            n,
            count("gpt-5", "Tell me a joke") + count("gpt-5", "Be brief.") + 2 * PER_MESSAGE + 3
        );
        let items = json!({"input": [
            {"role": "user", "content": [{"type": "input_text", "text": "Describe"},
                {"type": "input_image", "image_url": "data:image/png;base64,AAAA"}]},
            {"type": "function_call", "call_id": "c1", "name": "f", "arguments": "{}"},
            {"type": "function_call_output", "call_id": "c1", "output": "done"},
            {"type": "reasoning", "id": "rs_1", "summary": [], "encrypted_content": "x".repeat(5000)},
        ]});
        let n = estimate_prompt("gpt-4.1", &items);
        assert!(n > IMAGE_TOKENS && n < IMAGE_TOKENS + 40, "{n}");
    }

    #[test]
    fn embeddings_and_completions_inputs() {
        let m = "text-embedding-3-small";
        assert_eq!(estimate_prompt(m, &json!({"input": "hello world"})), 2);
        assert_eq!(
            estimate_prompt(m, &json!({"input": ["hello world", "hello"]})),
            3
        );
        assert_eq!(estimate_prompt(m, &json!({"input": [1, 2, 3]})), 3);
        assert_eq!(estimate_prompt(m, &json!({"input": [[1, 2], [3]]})), 3);
        let p = "gpt-3.5-turbo-instruct";
        assert_eq!(estimate_prompt(p, &json!({"prompt": "hello world"})), 2);
        assert_eq!(estimate_prompt(p, &json!({"prompt": [[1, 2, 3]]})), 3);
        assert_eq!(estimate_prompt(p, &json!({"nothing": true})), 0);
    }

    #[test]
    fn huge_text_is_extrapolated_not_absurd() {
        let text = "word ".repeat(200_000); // 1 MB, 200k tokens
        let n = count("gpt-4o", &text);
        assert!((199_000..=202_000).contains(&n), "{n}");
    }

    /// Review finding: each string was capped, the request was not, so a body of many
    /// strings (up to `max_body_bytes`) held a request thread for seconds.
    #[test]
    fn a_request_tokenizes_at_most_its_bound() {
        let part = "lorem ipsum dolor sit amet ".repeat(200 * 1024 / 27);
        let messages: Vec<Value> = (0..20)
            .map(|_| json!({"role": "user", "content": part}))
            .collect();
        TOKENIZED.with(|t| t.set(0));
        let n = estimate_prompt("gpt-4o", &json!({ "messages": messages }));
        let tokenized = TOKENIZED.with(std::cell::Cell::get);
        assert!(tokenized <= TOKENIZE_PER_REQUEST, "{tokenized}");
        // The strings past the bound are counted at the measured ratio.
        let one = count("gpt-4o", &part);
        let expected = 20 * (one + 3) + 3 + 20; // + per message, priming, "user"
        assert!(n.abs_diff(expected) <= expected / 100, "{n} vs {expected}");
    }

    #[test]
    fn several_choices_multiply_the_output() {
        assert_eq!(choices(&json!({})), 1);
        assert_eq!(choices(&json!({"n": 4})), 4);
        assert_eq!(choices(&json!({"n": 2, "best_of": 5})), 5);
        assert_eq!(choices(&json!({"n": 0, "best_of": null})), 1);
    }

    #[test]
    fn requested_output_ignores_null() {
        assert_eq!(requested_output(&json!({"max_tokens": null})), None);
        assert_eq!(
            requested_output(&json!({"max_tokens": null, "max_completion_tokens": 50})),
            Some(50)
        );
        assert_eq!(requested_output(&json!({"max_output_tokens": 7})), Some(7));
        assert_eq!(requested_output(&json!({"max_tokens": -1})), None);
    }
}
