//! OpenAI's `x-ratelimit-*` headers for the grant's own rpm/tpm, on every `/v1`
//! answer of a grant that has them, replacing the upstream's headers of the same names
//! (which describe the person's whole OpenAI organization, not this app's share).

use actix_web::HttpResponse;
use actix_web::http::header::{HeaderName, HeaderValue};
use keygate_core::policy::openai_duration;

use crate::limiter::RateSnapshot;

pub fn decorate(res: &mut HttpResponse, snapshot: &RateSnapshot) {
    let headers = res.headers_mut();
    for (kind, state) in [("requests", snapshot.requests), ("tokens", snapshot.tokens)] {
        let Some((limit, remaining, reset_ms)) = state else {
            continue;
        };
        for (name, value) in [
            (format!("x-ratelimit-limit-{kind}"), limit.to_string()),
            (
                format!("x-ratelimit-remaining-{kind}"),
                remaining.to_string(),
            ),
            (
                format!("x-ratelimit-reset-{kind}"),
                openai_duration(reset_ms),
            ),
        ] {
            if let (Ok(n), Ok(v)) = (
                HeaderName::from_bytes(name.as_bytes()),
                HeaderValue::from_str(&value),
            ) {
                headers.insert(n, v);
            }
        }
    }
}
