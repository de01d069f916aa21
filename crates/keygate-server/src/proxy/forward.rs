//! Phase 5: send the request upstream with the person's key, within the connect and
//! first-byte timeouts.

use std::sync::atomic::Ordering;

use actix_web::HttpRequest;
use keygate_core::scope::CanonicalPath;
use keygate_core::vault::UnsealedKey;
use reqwest::header::{HeaderMap, HeaderName, HeaderValue};
use tokio_stream::wrappers::ReceiverStream;

use super::ProxyCtx;
use super::body::RequestBody;
use super::error::ProxyError;
use super::headers::upstream_headers;
use crate::error::{ServerError, UpstreamError};
use crate::state::AppState;

pub async fn forward(
    st: &AppState,
    req: &HttpRequest,
    body: RequestBody,
    key: &UnsealedKey,
    ctx: &ProxyCtx,
) -> Result<reqwest::Response, ServerError> {
    let url = upstream_url(st, &ctx.path, req.uri().query());
    let method = reqwest::Method::from_bytes(req.method().as_str().as_bytes())
        .map_err(|_| ProxyError::UnsupportedMethod)?;

    let mut headers = HeaderMap::new();
    let inbound: Vec<(&str, &[u8])> = req
        .headers()
        .iter()
        .map(|(n, v)| (n.as_str(), v.as_bytes()))
        .collect();
    for (name, value) in upstream_headers(&inbound, &st.config.forward_headers) {
        if let (Ok(n), Ok(v)) = (
            HeaderName::from_bytes(name.as_bytes()),
            HeaderValue::from_bytes(&value),
        ) {
            headers.append(n, v);
        }
    }
    let mut auth = HeaderValue::try_from(format!("Bearer {}", key.key.expose_secret()))
        .map_err(|_| ServerError::Internal("stored key is not a valid header value".into()))?;
    auth.set_sensitive(true);
    headers.insert(reqwest::header::AUTHORIZATION, auth);
    // Said explicitly: without the header an upstream may pick any coding (RFC 9110
    // §12.5.3), and the account phase reads usage from the answer's plain bytes.
    headers.insert(
        reqwest::header::ACCEPT_ENCODING,
        HeaderValue::from_static("identity"),
    );
    for (name, value) in [
        ("openai-organization", &key.org),
        ("openai-project", &key.project),
    ] {
        if let Some(v) = value.as_deref().and_then(|v| HeaderValue::from_str(v).ok()) {
            headers.insert(HeaderName::from_static(name), v);
        }
    }

    let mut too_large = None;
    let mut timed_out = None;
    let body = match body {
        RequestBody::Empty => None,
        RequestBody::Buffered(bytes) => Some(reqwest::Body::from(bytes)),
        RequestBody::Streaming {
            chunks,
            content_length,
            too_large: flag,
            timed_out: late,
        } => {
            if let Some(len) = content_length {
                headers.insert(reqwest::header::CONTENT_LENGTH, HeaderValue::from(len));
            }
            too_large = Some(flag);
            timed_out = Some(late);
            Some(reqwest::Body::wrap_stream(ReceiverStream::new(chunks)))
        }
    };
    let mut builder = st.upstream.request(method, url).headers(headers);
    if let Some(body) = body {
        builder = builder.body(body);
    }
    let timeouts = st.config.upstream;
    let sent = tokio::time::timeout(timeouts.first_byte, builder.send()).await;
    let over_limit = || too_large.as_ref().is_some_and(|f| f.load(Ordering::SeqCst));
    let body_late = || timed_out.as_ref().is_some_and(|f| f.load(Ordering::SeqCst));
    match sent {
        // The app's body stopped coming: its fault, not the upstream's.
        _ if body_late() => Err(ProxyError::BodyTimeout.into()),
        Err(_) => Err(UpstreamError::FirstByteTimeout(timeouts.first_byte).into()),
        Ok(Ok(res)) if over_limit() => {
            drop(res);
            Err(body_too_large(st))
        }
        Ok(Ok(res)) => Ok(res),
        Ok(Err(_)) if over_limit() => Err(body_too_large(st)),
        Ok(Err(e)) if e.is_connect() && (e.is_timeout() || is_timeout_source(&e)) => {
            Err(UpstreamError::ConnectTimeout(timeouts.connect).into())
        }
        Ok(Err(e)) if e.is_connect() => {
            tracing::warn!(error = %e, "upstream connect failed");
            Err(UpstreamError::Connect.into())
        }
        Ok(Err(e)) => {
            tracing::warn!(error = %e, "upstream request failed");
            Err(UpstreamError::Request.into())
        }
    }
}

/// Whether a [`forward`] error means the upstream never got the whole request (so
/// nothing can have run or been billed): no connection, or a body cut at the limit.
/// A first-byte timeout or a failure after connecting may have been billed.
pub fn never_sent(e: &ServerError) -> bool {
    matches!(
        e,
        ServerError::Upstream(UpstreamError::Connect | UpstreamError::ConnectTimeout(_))
            | ServerError::Proxy(
                ProxyError::TooLarge { .. }
                    | ProxyError::BodyTimeout
                    | ProxyError::UnsupportedMethod
            )
    )
}

fn body_too_large(st: &AppState) -> ServerError {
    ProxyError::TooLarge {
        limit: st.config.max_body_bytes,
    }
    .into()
}

fn is_timeout_source(e: &reqwest::Error) -> bool {
    let mut source: Option<&dyn std::error::Error> = std::error::Error::source(e);
    while let Some(s) = source {
        if s.to_string().to_ascii_lowercase().contains("timed out") {
            return true;
        }
        source = s.source();
    }
    false
}

/// `upstream_url` + the canonical path after `/v1` + the query (`upstream::join`: the
/// base was parsed once at start; only its path and query are set here).
fn upstream_url(st: &AppState, path: &CanonicalPath, query: Option<&str>) -> reqwest::Url {
    let rest = path.as_str().strip_prefix("/v1").unwrap_or(path.as_str());
    crate::upstream::join(&st.config.upstream_url, rest, query)
}
