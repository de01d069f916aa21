//! Per-request behaviour, chosen with the `x-mock-scenario` request header.
//!
//! | scenario            | behaviour |
//! |---------------------|-----------|
//! | absent, `normal`    | real answers; SSE events `x-mock-delay-ms` apart (default 0) |
//! | `error-<status>`    | that status with a realistic OpenAI error body (`error-429` adds `retry-after` and `x-ratelimit-*`) |
//! | `error-429-quota`   | 429 `insufficient_quota` with `x-should-retry: false` |
//! | `reset-mid-stream`  | SSE 200, 2 events, then the connection breaks (no final chunk, no `[DONE]`) |
//! | `stall-mid-stream`  | SSE 200, 2 events, a pause of `x-mock-delay-ms` (default 10 s), then the rest |
//! | `slow-first-byte`   | waits `x-mock-delay-ms` (default 10 s) before the response head, then normal |
//! | `long-stream`       | chat SSE, one content chunk every `x-mock-delay-ms` (default 50 ms) for up to 60 s |
//! | `set-cookie`        | normal answer plus `set-cookie` and hop-by-hop response headers, and `x-upstream-extra: kept` |
//! | `echo-headers`      | 200 `{"headers":{...}}` with every received header |
//! | `big-response`      | 200 JSON body of exactly 5 MiB, streamed in 64 KiB chunks |
//! | `reset-before-head` | the request is read, then the connection is closed without any response |
//! | `garbage-sse`       | SSE 200 of hostile events (`garbage_sse_events`): not JSON, not UTF-8, a 2 MiB line, absurd `usage` numbers; then `[DONE]` |
//! | `huge-error-<status>` | that status with a 10 MiB OpenAI-shaped error body, in 64 KiB chunks |
//! | `redirect-<port>`   | 307 to `http://127.0.0.1:<port>` + the request's path (another host) |
//!
//!
//! Independent of the scenario, `x-mock-completion-tokens: N` makes chat (JSON and
//! SSE, where it sends N content chunks) and Responses answers report N completion
//! (output) tokens, capped by the request's `max_tokens` / `max_completion_tokens` /
//! `max_output_tokens` as OpenAI caps them.
//!
//! The stream scenarios answer as a stream even if the request did not ask for `stream: true`;
//! on `/v1/responses` `reset-mid-stream` and `stall-mid-stream` use Responses API events,
//! everywhere else (and always for `long-stream`) chat completion chunks.

use std::time::Duration;

use hyper::HeaderMap;

pub const SCENARIO_HEADER: &str = "x-mock-scenario";
pub const DELAY_HEADER: &str = "x-mock-delay-ms";
pub const COMPLETION_TOKENS_HEADER: &str = "x-mock-completion-tokens";

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Scenario {
    Normal,
    Error { status: u16, quota: bool },
    ResetMidStream,
    StallMidStream,
    SlowFirstByte,
    LongStream,
    SetCookie,
    EchoHeaders,
    BigResponse,
    ResetBeforeHead,
    GarbageSse,
    HugeError { status: u16 },
    Redirect { port: u16 },
}

impl Scenario {
    pub fn parse(value: &str) -> Option<Scenario> {
        let value = value.trim();
        Some(match value {
            "" | "normal" => Scenario::Normal,
            "reset-mid-stream" => Scenario::ResetMidStream,
            "stall-mid-stream" => Scenario::StallMidStream,
            "slow-first-byte" => Scenario::SlowFirstByte,
            "long-stream" => Scenario::LongStream,
            "set-cookie" => Scenario::SetCookie,
            "echo-headers" => Scenario::EchoHeaders,
            "big-response" => Scenario::BigResponse,
            "reset-before-head" => Scenario::ResetBeforeHead,
            "garbage-sse" => Scenario::GarbageSse,
            _ if value.starts_with("huge-error-") => {
                let status: u16 = value["huge-error-".len()..].parse().ok()?;
                if !(400..=599).contains(&status) {
                    return None;
                }
                Scenario::HugeError { status }
            }
            _ if value.starts_with("redirect-") => Scenario::Redirect {
                port: value["redirect-".len()..].parse().ok()?,
            },
            _ => {
                let rest = value.strip_prefix("error-")?;
                let (status, quota) = match rest.strip_suffix("-quota") {
                    Some(status) => (status, true),
                    None => (rest, false),
                };
                let status: u16 = status.parse().ok()?;
                if !(400..=599).contains(&status) || (quota && status != 429) {
                    return None;
                }
                Scenario::Error { status, quota }
            }
        })
    }

    /// The delay used when `x-mock-delay-ms` is absent.
    pub fn default_delay(&self) -> Duration {
        match self {
            Scenario::StallMidStream | Scenario::SlowFirstByte => Duration::from_secs(10),
            Scenario::LongStream => Duration::from_millis(50),
            _ => Duration::ZERO,
        }
    }
}

/// The scenario and delay asked for by a request.
#[derive(Clone, Debug)]
pub(crate) struct Knobs {
    pub scenario: Scenario,
    pub delay: Duration,
}

impl Knobs {
    pub(crate) fn from_headers(headers: &HeaderMap) -> Result<Knobs, String> {
        let scenario = match headers.get(SCENARIO_HEADER) {
            None => Scenario::Normal,
            Some(v) => {
                let text = v.to_str().unwrap_or_default();
                Scenario::parse(text)
                    .ok_or_else(|| format!("mock: unknown {SCENARIO_HEADER} {text:?}"))?
            }
        };
        let delay = match headers.get(DELAY_HEADER) {
            None => scenario.default_delay(),
            Some(v) => v
                .to_str()
                .ok()
                .and_then(|s| s.trim().parse::<u64>().ok())
                .map(Duration::from_millis)
                .ok_or_else(|| format!("mock: {DELAY_HEADER} must be a number of milliseconds"))?,
        };
        Ok(Knobs { scenario, delay })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_scenarios() {
        assert_eq!(Scenario::parse("normal"), Some(Scenario::Normal));
        assert_eq!(
            Scenario::parse("error-429"),
            Some(Scenario::Error {
                status: 429,
                quota: false
            })
        );
        assert_eq!(
            Scenario::parse("error-429-quota"),
            Some(Scenario::Error {
                status: 429,
                quota: true
            })
        );
        assert_eq!(Scenario::parse("error-200"), None);
        assert_eq!(Scenario::parse("error-500-quota"), None);
        assert_eq!(Scenario::parse("nonsense"), None);
        assert_eq!(
            Scenario::parse("huge-error-500"),
            Some(Scenario::HugeError { status: 500 })
        );
        assert_eq!(Scenario::parse("huge-error-200"), None);
        assert_eq!(
            Scenario::parse("redirect-8080"),
            Some(Scenario::Redirect { port: 8080 })
        );
        assert_eq!(
            Scenario::parse("long-stream").map(|s| s.default_delay()),
            Some(Duration::from_millis(50))
        );
    }
}
