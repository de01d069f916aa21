//! The server's one error enum, mapped to HTTP in exactly one place
//! ([`ResponseError`] below). Every body is OpenAI-shaped; internal details go to the
//! log under a code, never to the client, and never include secret material.

use actix_web::http::StatusCode;
use actix_web::http::header::{HeaderValue, RETRY_AFTER};
use actix_web::{HttpResponse, ResponseError};
use keygate_core::CoreError;
use keygate_core::openai_error::OpenAiError;
use keygate_store::StoreError;
use thiserror::Error;

#[derive(Debug, Error)]
pub enum ServerError {
    /// A decided, client-facing error (bad key, policy, too large, ...).
    #[error("{}", .0.message)]
    Client(OpenAiError),
    #[error("SV0001 upstream: {0}")]
    Upstream(#[from] UpstreamError),
    #[error("SV0002 store: {0}")]
    Store(#[from] StoreError),
    #[error("SV0003 vault record could not be opened: {0}")]
    Vault(CoreError),
    #[error("SV0004 {0}")]
    Internal(String),
}

/// What went wrong talking to the upstream; each has its own message and status.
#[derive(Debug, Error)]
pub enum UpstreamError {
    #[error("timed out connecting to the upstream after {0:?}")]
    ConnectTimeout(std::time::Duration),
    #[error("could not connect to the upstream")]
    Connect,
    #[error("the upstream did not answer within {0:?}")]
    FirstByteTimeout(std::time::Duration),
    #[error("the request to the upstream failed")]
    Request,
}

impl From<OpenAiError> for ServerError {
    fn from(e: OpenAiError) -> Self {
        ServerError::Client(e)
    }
}

impl ServerError {
    /// The error as the app sees it.
    pub fn to_openai(&self) -> OpenAiError {
        match self {
            ServerError::Client(e) => e.clone(),
            ServerError::Upstream(u) => match u {
                UpstreamError::ConnectTimeout(_) => {
                    OpenAiError::upstream_timeout(format!("keygate {u}. Try again later."))
                }
                UpstreamError::FirstByteTimeout(_) => {
                    OpenAiError::upstream_timeout(format!("keygate: {u}. Try again later."))
                }
                UpstreamError::Connect | UpstreamError::Request => {
                    OpenAiError::upstream_unavailable(format!("keygate {u}. Try again later."))
                }
            },
            ServerError::Store(_) | ServerError::Internal(_) => {
                OpenAiError::internal("keygate had an internal error; it has been logged.")
            }
            ServerError::Vault(_) => OpenAiError::internal(
                "keygate could not open the stored OpenAI key for this API key; the operator \
                 has been told in the log.",
            ),
        }
    }
}

impl ResponseError for ServerError {
    fn status_code(&self) -> StatusCode {
        StatusCode::from_u16(self.to_openai().status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR)
    }

    fn error_response(&self) -> HttpResponse {
        match self {
            ServerError::Client(_) => {}
            ServerError::Upstream(e) => tracing::warn!(error = %e, "upstream failure"),
            other => tracing::error!(error = %other, "request failed"),
        }
        render(&self.to_openai())
    }
}

/// Renders an OpenAI-shaped error with its retry hints.
pub fn render(e: &OpenAiError) -> HttpResponse {
    let status = StatusCode::from_u16(e.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let mut res = HttpResponse::build(status);
    res.content_type("application/json");
    if let Some(secs) = e.retry_after {
        res.insert_header((RETRY_AFTER, HeaderValue::from(secs)));
    }
    if let Some(retry) = e.should_retry {
        res.insert_header(("x-should-retry", if retry { "true" } else { "false" }));
    }
    res.body(e.to_json())
}

/// Whether the client is a browser navigating (a page load or form post).
pub fn wants_html(headers: &actix_web::http::header::HeaderMap) -> bool {
    headers
        .get(actix_web::http::header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|a| a.contains("text/html"))
}

/// The same error as a small page, for top-level navigations (connect flow).
pub fn render_html(e: &OpenAiError) -> HttpResponse {
    let status = StatusCode::from_u16(e.status).unwrap_or(StatusCode::BAD_REQUEST);
    HttpResponse::build(status)
        .content_type("text/html; charset=utf-8")
        .insert_header((
            actix_web::http::header::CONTENT_SECURITY_POLICY,
            crate::routes::web_pages::PAGE_CSP,
        ))
        .insert_header((
            actix_web::http::header::REFERRER_POLICY,
            crate::routes::web_pages::REFERRER_POLICY,
        ))
        .body(format!(
            "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\">\
             <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
             <title>keygate: this request can't be completed</title>\
             <link rel=\"stylesheet\" href=\"/css/app.css\"></head><body><main class=\"error-page\">\
             <h1>This connection request can't be completed</h1><p>{}</p>\
             <p><small>Error code: <code>{}</code>. Tell the app's developer; nothing was shared.</small></p>\
             </main></body></html>",
            escape(&e.message),
            escape(e.code.unwrap_or("error"))
        ))
}

fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
        .replace('\'', "&#39;")
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn every_variant_maps_to_its_status_and_code() {
        let table: Vec<(ServerError, u16, &str)> = vec![
            (
                OpenAiError::missing_api_key().into(),
                401,
                "missing_api_key",
            ),
            (
                OpenAiError::request_too_large(1).into(),
                413,
                "request_too_large",
            ),
            (
                UpstreamError::ConnectTimeout(Duration::from_secs(1)).into(),
                504,
                "upstream_timeout",
            ),
            (
                UpstreamError::FirstByteTimeout(Duration::from_secs(1)).into(),
                504,
                "upstream_timeout",
            ),
            (UpstreamError::Connect.into(), 502, "upstream_unavailable"),
            (UpstreamError::Request.into(), 502, "upstream_unavailable"),
            (ServerError::Internal("x".into()), 500, "internal_error"),
            (
                ServerError::Vault(CoreError::Unseal("x")),
                500,
                "internal_error",
            ),
        ];
        for (err, status, code) in table {
            let res = err.error_response();
            assert_eq!(res.status().as_u16(), status, "{err:?}");
            assert_eq!(err.to_openai().code, Some(code));
        }
    }

    #[test]
    fn retry_hints_become_headers() {
        let res = render(&OpenAiError::rate_limit_exceeded("slow down", 7));
        assert_eq!(res.headers().get(RETRY_AFTER).unwrap(), "7");
        let res = render(&OpenAiError::key_not_enrolled());
        assert_eq!(res.headers().get("x-should-retry").unwrap(), "false");
    }
}
