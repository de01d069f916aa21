//! `GET /v1/models` through a model-limited grant lists only the models it may use:
//! the upstream's (small) list is read, filtered to the allowed ids, and passed on
//! with its status and headers (the length is the new body's). `GET /v1/models/{id}`
//! of another model is refused before the upstream is called (`authorize.rs`).

use actix_web::HttpRequest;
use futures::StreamExt as _;

use super::{AuthenticatedGrant, ProxyCtx};
use crate::state::AppState;

/// The most of a model list read. A list that is longer, breaks, or does not parse is
/// replaced by the allowed ids alone: never passed on unfiltered.
const MODELS_BODY_LIMIT: usize = 4 * 1024 * 1024;

pub async fn filter(
    st: &AppState,
    grant: &AuthenticatedGrant,
    req: &HttpRequest,
    ctx: &ProxyCtx,
    upstream: reqwest::Response,
) -> reqwest::Response {
    let allowed = &grant.record().models;
    if allowed.is_empty()
        || req.method() != actix_web::http::Method::GET
        || ctx.path.as_str() != "/v1/models"
        || !upstream.status().is_success()
    {
        return upstream;
    }
    let (status, version, mut headers) = (
        upstream.status(),
        upstream.version(),
        upstream.headers().clone(),
    );
    let mut stream = upstream.bytes_stream();
    let mut body = Vec::new();
    let idle = st.config.upstream.idle;
    let complete = loop {
        match tokio::time::timeout(idle, stream.next()).await {
            Ok(Some(Ok(chunk))) if body.len() + chunk.len() <= MODELS_BODY_LIMIT => {
                body.extend_from_slice(&chunk);
            }
            Ok(None) => break true,
            _ => break false,
        }
    };
    // A list that cannot be read whole is not passed on: it would list every model.
    let filtered = complete
        .then(|| serde_json::from_slice::<serde_json::Value>(&body).ok())
        .flatten()
        .map(|mut list| {
            if let Some(data) = list.get_mut("data").and_then(|d| d.as_array_mut()) {
                data.retain(|m| {
                    m.get("id")
                        .and_then(serde_json::Value::as_str)
                        .is_some_and(|id| allowed.iter().any(|a| a == id))
                });
            }
            list.to_string()
        })
        .unwrap_or_else(|| {
            serde_json::json!({"object": "list", "data": allowed.iter().map(|id| {
                serde_json::json!({"id": id, "object": "model", "created": 0, "owned_by": "system"})
            }).collect::<Vec<_>>()})
            .to_string()
        });
    headers.remove(reqwest::header::CONTENT_LENGTH);
    headers.remove(reqwest::header::CONTENT_ENCODING);
    let mut res = http::Response::new(reqwest::Body::from(filtered));
    *res.status_mut() = status;
    *res.version_mut() = version;
    *res.headers_mut() = headers;
    reqwest::Response::from(res)
}
