//! Token counts for reservations: a request's prompt counted with OpenAI's tokenizer
//! for the model family, and the output it may produce.
//! FOUNDATION STUB: counts ~4 bytes per token; issue-10 core work uses tiktoken-rs.

/// Tokens in `text` for `model`.
pub fn count(_model: &str, text: &str) -> u64 {
    (text.len() as u64).div_ceil(4)
}

/// The prompt tokens of a request body (messages, input, prompt, instructions, tools),
/// with a fixed allowance for images, audio and files.
pub fn estimate_prompt(model: &str, body: &serde_json::Value) -> u64 {
    count(model, &body.to_string())
}

/// The output the request allows: `max_tokens`, `max_completion_tokens` or
/// `max_output_tokens`, whichever it sets.
pub fn requested_output(body: &serde_json::Value) -> Option<u64> {
    ["max_completion_tokens", "max_tokens", "max_output_tokens"]
        .iter()
        .find_map(|k| body.get(*k).and_then(serde_json::Value::as_u64))
}
