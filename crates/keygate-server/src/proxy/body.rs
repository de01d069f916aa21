//! Phase 2: the request body. Bounded everywhere: a `Content-Length` over the limit is
//! refused before a byte is read; JSON bodies are buffered (up to the limit) only to
//! learn `model` and `stream` and are forwarded unchanged; other bodies stream through
//! a counting pump. The `Content-Type` is checked first, for every request: sent once,
//! in a form every parser reads alike (`keygate_core::content_type`), else 400. When
//! the grant restricts models, multipart bodies are buffered to read their `model`
//! field (with the one boundary exactly as the client sent it, and any ambiguous
//! `model` part refused) and every other body must be JSON. Compressed
//! bodies (`Content-Encoding`) are refused: keygate could not read them for policy.
//!
//! For usage, a JSON body is also kept (a cheap reference to the same bytes) for an
//! estimate if the answer is cut short; for grants with tpm or a budget its prompt
//! tokens and requested output are counted for the reservation; and a streaming chat or
//! completions request that does not ask for usage is changed to ask for it
//! (`stream_options.include_usage`), its answer then stripped of that chunk.
//!
//! Limits on a streamed body are enforced as it passes: a chunked body without
//! `Content-Length` that outgrows the limit has by then been partly sent upstream; the
//! upstream request is cut and the app gets 413 (docs/API.md says so).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use actix_web::http::header::{CONTENT_ENCODING, CONTENT_LENGTH, CONTENT_TYPE, TRANSFER_ENCODING};
use actix_web::{HttpRequest, web};
use bytes::{Bytes, BytesMut};
use futures::StreamExt;
use keygate_core::content_type::{self, ContentType};
use keygate_core::{scope, tokens, usage};
use serde::Deserialize;
use serde::de::IgnoredAny;
use tokio::sync::mpsc;

use super::ProxyCtx;
use super::error::{BodyProblem, ProxyError};
use crate::error::ServerError;

/// Longer than any OpenAI model id (fine-tuned ones run ~60 bytes): a `model` is logged
/// and named in usage, so an app cannot make either carry megabytes.
const MAX_MODEL_LEN: usize = 256;

/// The body as it will be sent upstream.
pub enum RequestBody {
    Empty,
    Buffered(Bytes),
    Streaming {
        chunks: mpsc::Receiver<Result<Bytes, std::io::Error>>,
        content_length: Option<u64>,
        /// Set by the pump when the body outgrew the limit mid-stream.
        too_large: Arc<AtomicBool>,
        /// Set by the pump when the body stopped arriving (`client_deadline`).
        timed_out: Arc<AtomicBool>,
    },
}

#[derive(Deserialize)]
struct Peek<'a> {
    #[serde(default)]
    model: Option<serde_json::Value>,
    #[serde(default)]
    stream: Option<serde_json::Value>,
    /// Left as text in the one pass over the body; read only for model-limited grants
    /// (tools can run models of their own).
    #[serde(default, borrow)]
    tools: Option<&'a serde_json::value::RawValue>,
    // Never read here: declared so that a body naming one of them twice is refused
    // (the derive rejects a repeated field). Which copy counts differs between JSON
    // parsers; keygate's reservation and usage request must read what OpenAI reads.
    /// `priority` (and the older `scale`) cost more than the price table says.
    #[serde(default)]
    service_tier: Option<serde_json::Value>,
    #[serde(default, rename = "stream_options")]
    _stream_options: Option<IgnoredAny>,
    #[serde(default, rename = "max_tokens")]
    _max_tokens: Option<IgnoredAny>,
    #[serde(default, rename = "max_completion_tokens")]
    _max_completion_tokens: Option<IgnoredAny>,
    #[serde(default, rename = "max_output_tokens")]
    _max_output_tokens: Option<IgnoredAny>,
    #[serde(default, rename = "n")]
    _n: Option<IgnoredAny>,
    #[serde(default, rename = "best_of")]
    _best_of: Option<IgnoredAny>,
}

pub async fn read(
    req: &HttpRequest,
    mut payload: web::Payload,
    limit: u64,
    need_model: bool,
    need_tokens: bool,
    ctx: &mut ProxyCtx,
) -> Result<RequestBody, ServerError> {
    // Exactly one Content-Type, in a form every parser reads alike (for every grant:
    // see `keygate_core::content_type`); the multipart boundary comes from it.
    let content_type = content_type::parse(
        req.headers()
            .get_all(CONTENT_TYPE)
            .map(actix_web::http::header::HeaderValue::as_bytes),
    )
    .map_err(|e| ProxyError::Body(BodyProblem::ContentType(e)))?;
    let content_length = match req.headers().get(CONTENT_LENGTH) {
        None => None,
        Some(v) => Some(
            v.to_str()
                .ok()
                .and_then(|s| s.trim().parse::<u64>().ok())
                .ok_or(ProxyError::Body(BodyProblem::ContentLengthNotANumber))?,
        ),
    };
    if content_length.is_some_and(|n| n > limit) {
        return Err(ProxyError::TooLarge { limit }.into());
    }
    let chunked = req.headers().contains_key(TRANSFER_ENCODING);
    if content_length == Some(0) || (content_length.is_none() && !chunked) {
        return Ok(RequestBody::Empty);
    }
    let compressed = req.headers().get_all(CONTENT_ENCODING).any(|v| {
        v.to_str()
            .map_or(true, |v| !v.trim().eq_ignore_ascii_case("identity"))
    });
    if compressed {
        return Err(ProxyError::Body(BodyProblem::Compressed).into());
    }
    let is_multipart = content_type
        .as_ref()
        .is_some_and(ContentType::is_multipart_form);
    // For a model-restricted grant every non-multipart body is read as JSON (OpenAI's
    // endpoints take nothing else), so a missing or odd Content-Type cannot smuggle a
    // model past the check.
    let is_json =
        content_type.as_ref().is_some_and(ContentType::is_json) || (need_model && !is_multipart);

    if is_json {
        let bytes = buffer(&mut payload, limit, content_length).await?;
        // JSON is UTF-8 (RFC 8259). serde_json skips the fields keygate does not read
        // without checking their bytes, so a body OpenAI refuses could otherwise pass.
        if std::str::from_utf8(&bytes).is_err() {
            return Err(ProxyError::Body(BodyProblem::NotUtf8).into());
        }
        let peek: Peek = serde_json::from_slice(&bytes).map_err(|e| {
            // serde's own wording for a field it met twice (`duplicate field `n``).
            if e.is_data() && e.to_string().starts_with("duplicate field") {
                ProxyError::Body(BodyProblem::KeyRepeated)
            } else {
                ProxyError::Body(BodyProblem::JsonNotAnObject)
            }
        })?;
        ctx.model = match peek.model {
            None | Some(serde_json::Value::Null) => None,
            Some(serde_json::Value::String(m)) if m.len() > MAX_MODEL_LEN => {
                return Err(ProxyError::Body(BodyProblem::ModelTooLong).into());
            }
            Some(serde_json::Value::String(m)) => Some(m),
            Some(_) => {
                return Err(ProxyError::Body(BodyProblem::ModelNotAString).into());
            }
        };
        ctx.stream = matches!(peek.stream, Some(serde_json::Value::Bool(true)));
        ctx.service_tier = match peek.service_tier {
            None | Some(serde_json::Value::Null) => None,
            Some(serde_json::Value::String(t)) => Some(t),
            Some(other) => Some(other.to_string()),
        };
        if need_model && let Some(tools) = peek.tools {
            let tools: serde_json::Value = serde_json::from_str(tools.get())
                .map_err(|_| ProxyError::Body(BodyProblem::JsonNotAnObject))?;
            ctx.tool_models = scope::tool_models(Some(&tools));
        }
        if need_tokens {
            // The reservation: a second, full parse, only for grants with tpm or a budget.
            let body: serde_json::Value = serde_json::from_slice(&bytes)
                .map_err(|_| ProxyError::Body(BodyProblem::JsonNotAnObject))?;
            let model = ctx.model.as_deref().unwrap_or_default();
            ctx.prompt_tokens = Some(tokens::estimate_prompt(model, &body));
            // `n` answers of up to the limit each (OpenAI bills them all).
            ctx.choices = tokens::choices(&body);
            ctx.max_output = tokens::requested_output(&body).map(|t| t.saturating_mul(ctx.choices));
        }
        let mut bytes = bytes;
        let completions = matches!(
            ctx.path.as_str(),
            "/v1/chat/completions" | "/v1/completions"
        );
        if ctx.stream
            && completions
            && let Some(asked) = usage::ask_for_usage(&bytes)
        {
            // The app streams without asking for usage: ask on its behalf (usage is always
            // counted) and take the extra chunk out of its answer again.
            bytes = Bytes::from(asked);
            ctx.strip_usage = true;
        }
        ctx.body = Some(bytes.clone());
        return Ok(RequestBody::Buffered(bytes));
    }
    if is_multipart && need_model {
        let bytes = buffer(&mut payload, limit, content_length).await?;
        let boundary = content_type
            .as_ref()
            .and_then(ContentType::boundary)
            .ok_or(ProxyError::Body(BodyProblem::MultipartUnparseable))?;
        ctx.model = super::multipart::model(boundary, bytes.clone()).await?;
        return Ok(RequestBody::Buffered(bytes));
    }
    Ok(pump(payload, limit, content_length))
}

async fn buffer(
    payload: &mut web::Payload,
    limit: u64,
    hint: Option<u64>,
) -> Result<Bytes, ServerError> {
    let mut buf = BytesMut::with_capacity(hint.unwrap_or(8 * 1024).min(1024 * 1024) as usize);
    while let Some(chunk) = payload.next().await {
        let chunk = chunk.map_err(|e| {
            if crate::client_deadline::is_body_timeout(&e) {
                ProxyError::BodyTimeout
            } else {
                ProxyError::Body(BodyProblem::Unreadable)
            }
        })?;
        if (buf.len() + chunk.len()) as u64 > limit {
            return Err(ProxyError::TooLarge { limit }.into());
        }
        buf.extend_from_slice(&chunk);
    }
    Ok(buf.freeze())
}

/// Streams the body through a channel (actix's payload is not `Send`; reqwest's body
/// must be), stopping with an error once more than `limit` bytes arrived.
fn pump(mut payload: web::Payload, limit: u64, content_length: Option<u64>) -> RequestBody {
    let (tx, rx) = mpsc::channel(8);
    let too_large = Arc::new(AtomicBool::new(false));
    let flag = too_large.clone();
    let timed_out = Arc::new(AtomicBool::new(false));
    let late = timed_out.clone();
    actix_web::rt::spawn(async move {
        let mut seen: u64 = 0;
        while let Some(chunk) = payload.next().await {
            let item = match chunk {
                Ok(bytes) => {
                    seen += bytes.len() as u64;
                    if seen > limit {
                        flag.store(true, Ordering::SeqCst);
                        Err(std::io::Error::other("request body over the limit"))
                    } else {
                        Ok(bytes)
                    }
                }
                Err(e) => {
                    if crate::client_deadline::is_body_timeout(&e) {
                        late.store(true, Ordering::SeqCst);
                    }
                    Err(std::io::Error::other("client body read failed"))
                }
            };
            let stop = item.is_err();
            if tx.send(item).await.is_err() || stop {
                break;
            }
        }
    });
    RequestBody::Streaming {
        chunks: rx,
        content_length,
        too_large,
        timed_out,
    }
}
