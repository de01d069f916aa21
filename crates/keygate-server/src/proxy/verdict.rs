//! Phase 5b: what OpenAI's answer says about the person's key.
//!
//! Only the person's key authenticates keygate to the upstream, so an upstream 401 or
//! 403 is about that key (or what it may do), never about the app's keygate key: the
//! app gets 424 `owner_key_rejected` (`x-should-retry: false`) instead of an answer
//! that looks like its own key is bad. Which 401/403 means the key itself is dead is
//! pure policy in `keygate_core::key_verdict`: only OpenAI's `invalid_api_key` and
//! `account_deactivated` codes mark the vault record rejected (the dashboard asks for
//! a new key). Any other 401/403 — a restricted key lacking a permission ("Missing
//! scopes: api.responses.write", `code: null`), a region — is refused for this call
//! only, with a message saying what the key lacks, and nothing is marked. To tell them
//! apart, the (small) error body of a 401/403 is read, bounded in size and time. A 2xx
//! answer confirms an unverified or rejected key; only then is the record written
//! (rarely: off the hot path). Any other error answer is passed on with the person's
//! OpenAI organization and project ids taken out of its body. A request made with the
//! caller's own key (`X-OpenAI-Key`) has no record to mark: every answer, a 401/403
//! included, is passed on (scrubbed the same way), since it is about the caller's key.
//! A request made with the operator's key (the grant's plan lends it to a person with
//! no key of their own) has no record of the person's to mark either: a 401/403 is 424
//! `owner_key_rejected` saying the operator's key was refused, logged (a warning when
//! the key itself is dead) and counted in `keygate_operator_key_refusals_total`; the
//! person's vault is never touched, and the operator's record is not marked (the
//! operator learns it from the logs and the metric).

use futures::StreamExt as _;
use keygate_core::key_verdict::{self, Verdict};

use super::error::ProxyError;
use super::unseal::{Source, Unsealed};
use crate::error::ServerError;
use crate::services::vault;
use crate::state::AppState;

/// The most of an upstream error body read: a 401/403's to learn its `code`, any
/// other's to take the person's account ids out of it.
const ERROR_BODY_LIMIT: usize = 16 * 1024;

/// Passes the upstream answer on, or turns a refusal of the person's key into 424.
pub async fn judge(
    st: &AppState,
    key: &Unsealed,
    upstream: reqwest::Response,
) -> Result<reqwest::Response, ServerError> {
    let status = upstream.status().as_u16();
    let key = match &key.source {
        Source::Stored(stored) => stored,
        Source::Own => {
            // The caller's own key (`X-OpenAI-Key`): OpenAI's answer, a 401/403 too, is
            // about the key the caller sent; it is passed on and no vault record is marked.
            if status >= 400 {
                return Ok(without_account_ids(upstream, st.config.upstream.idle).await);
            }
            return Ok(upstream);
        }
        Source::Operator => return operator(st, status, upstream).await,
    };
    if !matches!(status, 401 | 403) {
        if key_verdict::verdict(status, None) == Verdict::Accepted
            && key.unconfirmed
            && let Err(e) =
                vault::mark_validated(&st.store, &key.user_id, &key.key_id, st.clock.now()).await
        {
            tracing::error!(error = %e, "could not record that the stored key works");
        }
        if status >= 400 {
            return Ok(without_account_ids(upstream, st.config.upstream.idle).await);
        }
        return Ok(upstream);
    }
    let body = error_body(upstream, st.config.upstream.idle).await;
    let (code, missing_scopes) = key_verdict::read_error(&body);
    match key_verdict::verdict(status, code.as_deref()) {
        Verdict::Refused => {
            if let Err(e) =
                vault::mark_rejected(&st.store, &key.user_id, &key.key_id, st.clock.now()).await
            {
                tracing::error!(error = %e, "could not mark the stored key rejected");
            }
            Err(ProxyError::OwnerKeyRejected.into())
        }
        _ => {
            tracing::info!(
                user_id = %key.user_id,
                status,
                code = code.as_deref(),
                "OpenAI refused this call with the stored key; not marked"
            );
            Err(ProxyError::OwnerKeyForbidden { missing_scopes }.into())
        }
    }
}

/// The operator's key: a 401/403 is the operator's to fix, never the person's record.
async fn operator(
    st: &AppState,
    status: u16,
    upstream: reqwest::Response,
) -> Result<reqwest::Response, ServerError> {
    if !matches!(status, 401 | 403) {
        if status >= 400 {
            return Ok(without_account_ids(upstream, st.config.upstream.idle).await);
        }
        return Ok(upstream);
    }
    let body = error_body(upstream, st.config.upstream.idle).await;
    let (code, missing_scopes) = key_verdict::read_error(&body);
    if key_verdict::verdict(status, code.as_deref()) == Verdict::Refused {
        st.metrics.operator_key_refused(true);
        tracing::warn!(
            status,
            code = code.as_deref(),
            "OpenAI refused the operator's OpenAI key: replace it (PUT /admin/operator-key)"
        );
        return Err(ProxyError::OperatorKeyRejected.into());
    }
    st.metrics.operator_key_refused(false);
    tracing::info!(
        status,
        code = code.as_deref(),
        "OpenAI refused this call with the operator's OpenAI key"
    );
    Err(ProxyError::OperatorKeyForbidden { missing_scopes }.into())
}

/// An upstream error answer (429, 400, 5xx…) passed on with the person's OpenAI
/// organization, project and user ids taken out of its body
/// (`key_verdict::scrub_account_ids`): OpenAI's rate-limit messages name them. Error
/// bodies are small; one that is not complete within [`ERROR_BODY_LIMIT`] bytes (or
/// before `idle` passes) is passed on as it comes, unchanged.
async fn without_account_ids(
    upstream: reqwest::Response,
    idle: std::time::Duration,
) -> reqwest::Response {
    let (status, version, headers) = (
        upstream.status(),
        upstream.version(),
        upstream.headers().clone(),
    );
    let mut stream = upstream.bytes_stream();
    let (head, complete) = read_head(&mut stream, idle).await;
    let body = if complete {
        reqwest::Body::from(key_verdict::scrub_account_ids(&head).unwrap_or(head))
    } else {
        // Too long, failed or stalled: what came, then the rest (or its error).
        let head = futures::stream::once(async move { Ok(bytes::Bytes::from(head)) });
        reqwest::Body::wrap_stream(head.chain(stream))
    };
    let mut res = http::Response::new(body);
    *res.status_mut() = status;
    *res.version_mut() = version;
    *res.headers_mut() = headers;
    reqwest::Response::from(res)
}

/// Up to [`ERROR_BODY_LIMIT`] bytes of the body, or what arrived before `idle` passed.
async fn error_body(upstream: reqwest::Response, idle: std::time::Duration) -> Vec<u8> {
    let (mut head, _) = read_head(&mut upstream.bytes_stream(), idle).await;
    head.truncate(ERROR_BODY_LIMIT);
    head
}

/// Reads the start of a body: chunks until it holds [`ERROR_BODY_LIMIT`] bytes, the
/// body ends, fails, or stays silent for `idle`. `true` when that was the whole body.
async fn read_head<S>(stream: &mut S, idle: std::time::Duration) -> (Vec<u8>, bool)
where
    S: futures::Stream<Item = reqwest::Result<bytes::Bytes>> + Unpin,
{
    let mut head = Vec::new();
    while head.len() < ERROR_BODY_LIMIT {
        match tokio::time::timeout(idle, stream.next()).await {
            Ok(Some(Ok(chunk))) => head.extend_from_slice(&chunk),
            Ok(None) => return (head, true),
            _ => break,
        }
    }
    (head, false)
}
