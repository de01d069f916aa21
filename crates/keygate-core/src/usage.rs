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
