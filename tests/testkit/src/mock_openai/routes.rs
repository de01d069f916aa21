//! The `/v1` endpoints and the scenarios.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use hyper::header::{CONTENT_TYPE, HeaderName, HeaderValue};
use hyper::{HeaderMap, Method, Response, StatusCode};
use serde_json::{Value, json};

use super::Shared;
use super::body::{MockBody, Pacing, Step, StreamGuard, paced_steps};
use super::fixtures::{self, REPLY_PIECES};
use super::scenario::{Knobs, Scenario};
use super::sse;

pub(crate) struct Ctx {
    pub method: Method,
    /// Without the query.
    pub path: String,
    pub query: Option<String>,
    pub headers: HeaderMap,
    pub body: Bytes,
    pub shared: Arc<Shared>,
    pub started: Instant,
}

type Resp = Response<MockBody>;

const DEFAULT_MODEL: &str = "gpt-4o-mini";
const BIG_RESPONSE_LEN: usize = 5 * 1024 * 1024;
const BIG_RESPONSE_CHUNK: usize = 64 * 1024;
const LONG_STREAM_LIMIT: Duration = Duration::from_secs(60);
const DEFAULT_EMBEDDING_DIMENSIONS: u64 = 1536;

pub(crate) async fn handle(ctx: Ctx) -> Resp {
    let mut resp = respond(&ctx).await;
    add_openai_headers(&mut resp, ctx.started);
    resp
}

/// Keys starting with this are refused like a revoked OpenAI key (401), so tests can
/// check how keygate treats a key OpenAI does not accept.
pub const REJECTED_KEY_PREFIX: &str = "sk-reject";

async fn respond(ctx: &Ctx) -> Resp {
    let bearer = ctx
        .headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    let refused =
        bearer.is_some_and(|k| k.starts_with(REJECTED_KEY_PREFIX) || ctx.shared.is_rejected(k));
    if refused {
        return error_response(
            StatusCode::UNAUTHORIZED,
            "Incorrect API key provided. You can find your API key at https://platform.openai.com/account/api-keys.",
            "invalid_request_error",
            Some("invalid_api_key"),
        );
    }
    if let Some(scope) = bearer.and_then(|k| ctx.shared.missing_scope(k, &ctx.path)) {
        return error_response(
            StatusCode::UNAUTHORIZED,
            &format!(
                "You have insufficient permissions for this operation. Missing scopes: \
                 {scope}. Check that you have the correct role in your organization (Reader, \
                 Writer, Owner) and project (Member, Owner), and if you're using a restricted \
                 API key, that it has the necessary scopes."
            ),
            "invalid_request_error",
            None,
        );
    }
    let knobs = match Knobs::from_headers(&ctx.headers) {
        Ok(knobs) => knobs,
        Err(msg) => {
            return error_response(
                StatusCode::BAD_REQUEST,
                &msg,
                "invalid_request_error",
                Some("invalid_mock_header"),
            );
        }
    };
    let delay = knobs.delay;
    match knobs.scenario {
        Scenario::Normal => route(ctx, delay),
        Scenario::SlowFirstByte => {
            tokio::time::sleep(delay).await;
            route(ctx, Duration::ZERO)
        }
        Scenario::Error { status, quota } => scenario_error(ctx, status, quota),
        Scenario::EchoHeaders => echo_headers(ctx),
        Scenario::BigResponse => big_response(),
        // Answered by closing the connection (`super::serve`), never here.
        Scenario::ResetBeforeHead => internal_error("mock: reset-before-head"),
        Scenario::GarbageSse => sse_response(garbage_sse(), &ctx.shared),
        Scenario::HugeError { status } => huge_error(status),
        Scenario::Redirect { port } => {
            let mut resp = Response::new(MockBody::full(Bytes::new()));
            *resp.status_mut() = StatusCode::TEMPORARY_REDIRECT;
            append_header(
                &mut resp,
                "location",
                &format!("http://127.0.0.1:{port}{}", ctx.path),
            );
            resp
        }
        Scenario::ResetMidStream => stream_scenario(ctx, Pacing::FailAfter(2)),
        Scenario::StallMidStream => stream_scenario(ctx, Pacing::StallAfter(2, delay)),
        Scenario::LongStream => long_stream(ctx, delay),
        Scenario::SetCookie => {
            let mut resp = route(ctx, Duration::ZERO);
            for (name, value) in [
                ("set-cookie", "session=upstream-secret; Path=/"),
                ("connection", "keep-alive, x-hop"),
                ("x-hop", "should-not-pass"),
                ("keep-alive", "timeout=5"),
                ("proxy-authenticate", "Basic"),
                ("trailer", "x-foo"),
                ("x-upstream-extra", "kept"),
            ] {
                append_header(&mut resp, name, value);
            }
            resp
        }
    }
}

fn route(ctx: &Ctx, delay: Duration) -> Resp {
    let path = ctx.path.as_str();
    match (&ctx.method, path) {
        (&Method::POST, "/v1/chat/completions") => chat(ctx, delay),
        (&Method::POST, "/v1/responses") => responses(ctx, delay),
        (&Method::POST, "/v1/embeddings") => embeddings(ctx),
        (&Method::GET, "/v1/models") => models(),
        (&Method::GET, _) if path.starts_with("/v1/models/") => model(&path["/v1/models/".len()..]),
        (&Method::GET, _) if path.starts_with("/v1/chat/completions/") => {
            stored_chat(&path["/v1/chat/completions/".len()..])
        }
        _ if path == "/v1" || path.starts_with("/v1/") => echo(ctx),
        _ => error_response(
            StatusCode::NOT_FOUND,
            &format!("Invalid URL ({} {})", ctx.method, path),
            "invalid_request_error",
            None,
        ),
    }
}

// ---- responses and headers ----------------------------------------------------------------

fn append_header(resp: &mut Resp, name: &'static str, value: &str) {
    if let Ok(value) = HeaderValue::from_str(value) {
        resp.headers_mut()
            .append(HeaderName::from_static(name), value);
    }
}

fn set_header_if_absent(resp: &mut Resp, name: &'static str, value: &str) {
    if !resp.headers().contains_key(name) {
        append_header(resp, name, value);
    }
}

/// The headers OpenAI puts on every API response.
pub(crate) fn add_openai_headers(resp: &mut Resp, started: Instant) {
    set_header_if_absent(resp, "x-request-id", &fixtures::request_id());
    set_header_if_absent(
        resp,
        "openai-processing-ms",
        &started.elapsed().as_millis().to_string(),
    );
    set_header_if_absent(resp, "openai-version", "2020-10-01");
    set_header_if_absent(resp, "openai-organization", "user-mock");
}

pub(crate) fn json_response(status: StatusCode, value: &Value) -> Resp {
    let mut resp = Response::new(MockBody::full(value.to_string()));
    *resp.status_mut() = status;
    resp.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    resp
}

fn error_with_param(
    status: StatusCode,
    message: &str,
    kind: &str,
    param: Option<&str>,
    code: Option<&str>,
) -> Resp {
    json_response(
        status,
        &json!({"error": {"message": message, "type": kind, "param": param, "code": code}}),
    )
}

/// `{"error":{"message","type","param":null,"code"}}`
pub(crate) fn error_response(
    status: StatusCode,
    message: &str,
    kind: &str,
    code: Option<&str>,
) -> Resp {
    error_with_param(status, message, kind, None, code)
}

fn internal_error(msg: &str) -> Resp {
    error_response(
        StatusCode::INTERNAL_SERVER_ERROR,
        msg,
        "server_error",
        Some("mock_internal"),
    )
}

fn sse_response(steps: super::body::Steps, shared: &Arc<Shared>) -> Resp {
    let guard = StreamGuard::new(Arc::clone(shared));
    let mut resp = Response::new(MockBody::paced(steps, Some(guard)));
    resp.headers_mut().insert(
        CONTENT_TYPE,
        HeaderValue::from_static("text/event-stream; charset=utf-8"),
    );
    resp
}

// ---- request parsing ----------------------------------------------------------------------

fn json_body(ctx: &Ctx) -> Result<Value, Box<Resp>> {
    match serde_json::from_slice::<Value>(&ctx.body) {
        Ok(v) if v.is_object() => Ok(v),
        _ => Err(Box::new(error_response(
            StatusCode::BAD_REQUEST,
            "We could not parse the JSON body of your request. (HINT: This likely means you \
             aren't using your HTTP library correctly. The OpenAI API expects a JSON payload, \
             but what was sent was not valid JSON. If you have trouble figuring out how to fix \
             this, please contact us through our help center at help.openai.com.)",
            "invalid_request_error",
            None,
        ))),
    }
}

fn required_model(req: &Value) -> Result<String, Box<Resp>> {
    match req.get("model").and_then(Value::as_str) {
        Some(m) if !m.is_empty() => Ok(m.to_owned()),
        _ => Err(Box::new(error_response(
            StatusCode::BAD_REQUEST,
            "you must provide a model parameter",
            "invalid_request_error",
            None,
        ))),
    }
}

/// A JSON object body with a `model`.
fn model_request(ctx: &Ctx) -> Result<(Value, String), Box<Resp>> {
    let req = json_body(ctx)?;
    let model = required_model(&req)?;
    Ok((req, model))
}

/// `x-mock-completion-tokens: N`: the answer produces N completion (output) tokens,
/// capped by the request's `max_tokens` / `max_completion_tokens` /
/// `max_output_tokens` as OpenAI caps them.
fn completion_knob(ctx: &Ctx, req: &Value) -> Option<u64> {
    let n: u64 = ctx
        .headers
        .get(super::scenario::COMPLETION_TOKENS_HEADER)?
        .to_str()
        .ok()?
        .trim()
        .parse()
        .ok()?;
    let cap = ["max_completion_tokens", "max_tokens", "max_output_tokens"]
        .iter()
        .find_map(|k| req.get(*k).and_then(Value::as_u64));
    Some(cap.map_or(n, |c| n.min(c)))
}

fn is_stream(req: &Value) -> bool {
    req.get("stream").and_then(Value::as_bool).unwrap_or(false)
}

fn include_usage(req: &Value) -> bool {
    req.pointer("/stream_options/include_usage")
        .and_then(Value::as_bool)
        .unwrap_or(false)
}

fn loose_model(ctx: &Ctx) -> String {
    serde_json::from_slice::<Value>(&ctx.body)
        .ok()
        .and_then(|v| v.get("model").and_then(Value::as_str).map(str::to_owned))
        .unwrap_or_else(|| DEFAULT_MODEL.to_owned())
}

// ---- endpoints ----------------------------------------------------------------------------

fn chat(ctx: &Ctx, delay: Duration) -> Resp {
    let (req, model) = match model_request(ctx) {
        Ok(v) => v,
        Err(resp) => return *resp,
    };
    let prompt_tokens = fixtures::chat_prompt_tokens(&req);
    let knob = completion_knob(ctx, &req);
    if is_stream(&req) {
        return match sse::chat_events(&model, include_usage(&req), prompt_tokens, knob) {
            Ok(events) => sse_response(paced_steps(events, Pacing::Every(delay)), &ctx.shared),
            Err(msg) => internal_error(&msg),
        };
    }
    let completion_tokens = knob.unwrap_or(REPLY_PIECES.len() as u64);
    let vars = [
        ("id", json!(fixtures::chat_id())),
        ("created", json!(fixtures::unix_now())),
        ("model", json!(model)),
        ("prompt_tokens", json!(prompt_tokens)),
        ("completion_tokens", json!(completion_tokens)),
        ("total_tokens", json!(prompt_tokens + completion_tokens)),
    ];
    match fixtures::load("chat.json", fixtures::CHAT, &vars) {
        Ok(v) => json_response(StatusCode::OK, &v),
        Err(msg) => internal_error(&msg),
    }
}

fn responses(ctx: &Ctx, delay: Duration) -> Resp {
    let (req, model) = match model_request(ctx) {
        Ok(v) => v,
        Err(resp) => return *resp,
    };
    let input_tokens = fixtures::responses_input_tokens(&req);
    let knob = completion_knob(ctx, &req);
    if is_stream(&req) {
        return match sse::responses_events(&model, input_tokens, knob) {
            Ok(events) => sse_response(paced_steps(events, Pacing::Every(delay)), &ctx.shared),
            Err(msg) => internal_error(&msg),
        };
    }
    let vars = sse::responses_vars(&model, input_tokens, knob);
    match fixtures::load("responses.json", fixtures::RESPONSES, &vars) {
        Ok(v) => json_response(StatusCode::OK, &v),
        Err(msg) => internal_error(&msg),
    }
}

fn embeddings(ctx: &Ctx) -> Resp {
    let (req, model) = match model_request(ctx) {
        Ok(v) => v,
        Err(resp) => return *resp,
    };
    let Some(input) = req.get("input") else {
        return error_with_param(
            StatusCode::BAD_REQUEST,
            "'input' is a required property",
            "invalid_request_error",
            Some("input"),
            None,
        );
    };
    let Some(inputs) = fixtures::embedding_inputs(input) else {
        return error_with_param(
            StatusCode::BAD_REQUEST,
            "'$.input' is invalid. Please check the API reference: \
             https://platform.openai.com/docs/api-reference.",
            "invalid_request_error",
            Some("input"),
            None,
        );
    };
    let base64 = match req.get("encoding_format") {
        None | Some(Value::Null) => false,
        Some(Value::String(f)) if f == "float" => false,
        Some(Value::String(f)) if f == "base64" => true,
        Some(_) => {
            return error_with_param(
                StatusCode::BAD_REQUEST,
                "Invalid value for 'encoding_format': expected 'float' or 'base64'.",
                "invalid_request_error",
                Some("encoding_format"),
                Some("invalid_value"),
            );
        }
    };
    let dimensions = req
        .get("dimensions")
        .and_then(Value::as_u64)
        .unwrap_or(DEFAULT_EMBEDDING_DIMENSIONS)
        .clamp(1, 3072) as usize;
    let data: Vec<Value> = inputs
        .iter()
        .enumerate()
        .map(|(index, input)| {
            let vector = fixtures::embedding_vector(&input.seed, dimensions);
            let embedding = if base64 {
                json!(fixtures::embedding_base64(&vector))
            } else {
                json!(vector)
            };
            json!({"object": "embedding", "index": index, "embedding": embedding})
        })
        .collect();
    let prompt_tokens: u64 = inputs.iter().map(|i| i.tokens).sum();
    let vars = [
        ("data", Value::Array(data)),
        ("model", json!(model)),
        ("prompt_tokens", json!(prompt_tokens)),
    ];
    match fixtures::load("embeddings.json", fixtures::EMBEDDINGS, &vars) {
        Ok(v) => json_response(StatusCode::OK, &v),
        Err(msg) => internal_error(&msg),
    }
}

fn models() -> Resp {
    match fixtures::parse("models.json", fixtures::MODELS) {
        Ok(v) => json_response(StatusCode::OK, &v),
        Err(msg) => internal_error(&msg),
    }
}

fn model(id: &str) -> Resp {
    let list = match fixtures::parse("models.json", fixtures::MODELS) {
        Ok(v) => v,
        Err(msg) => return internal_error(&msg),
    };
    let found = list
        .get("data")
        .and_then(Value::as_array)
        .and_then(|models| {
            models
                .iter()
                .find(|m| m.get("id").and_then(Value::as_str) == Some(id))
        });
    match found {
        Some(m) => json_response(StatusCode::OK, m),
        None => error_with_param(
            StatusCode::NOT_FOUND,
            &format!("The model '{id}' does not exist"),
            "invalid_request_error",
            Some("model"),
            Some("model_not_found"),
        ),
    }
}

/// A stored chat completion, retrieved (`GET /v1/chat/completions/{id}`): the run's
/// object with its `usage`, as OpenAI shows it again on every retrieval.
fn stored_chat(id: &str) -> Resp {
    json_response(
        StatusCode::OK,
        &json!({
            "id": id, "object": "chat.completion", "created": fixtures::unix_now(),
            "model": "gpt-4o-mini-2024-07-18",
            "choices": [{"index": 0, "message": {"role": "assistant", "content": "Hi"},
                         "finish_reason": "stop"}],
            "usage": {"prompt_tokens": 100, "completion_tokens": 50, "total_tokens": 150},
        }),
    )
}

fn echo(ctx: &Ctx) -> Resp {
    json_response(
        StatusCode::OK,
        &json!({
            "object": "mock.echo",
            "method": ctx.method.as_str(),
            "path": ctx.path,
            "query": ctx.query,
            "content_type": ctx.headers.get(CONTENT_TYPE).map(|v| String::from_utf8_lossy(v.as_bytes())),
            "body_len": ctx.body.len(),
        }),
    )
}

// ---- scenarios ----------------------------------------------------------------------------

/// Headers as a JSON object; a header sent several times is joined with ", ".
pub(crate) fn headers_json(headers: &HeaderMap) -> Value {
    let mut map = serde_json::Map::new();
    for name in headers.keys() {
        let joined = headers
            .get_all(name)
            .iter()
            .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
            .collect::<Vec<_>>()
            .join(", ");
        map.insert(name.as_str().to_owned(), Value::String(joined));
    }
    Value::Object(map)
}

fn echo_headers(ctx: &Ctx) -> Resp {
    json_response(
        StatusCode::OK,
        &json!({
            "headers": headers_json(&ctx.headers),
            "method": ctx.method.as_str(),
            "path": ctx.path,
            "query": ctx.query,
        }),
    )
}

fn scenario_error(ctx: &Ctx, status: u16, quota: bool) -> Resp {
    let Ok(status_code) = StatusCode::from_u16(status) else {
        return internal_error("mock: invalid status");
    };
    let model = loose_model(ctx);
    let (message, kind, param, code): (String, &str, Option<&str>, Option<&str>) = match status {
        429 if quota => (
            "You exceeded your current quota, please check your plan and billing details. For \
             more information on this error, read the docs: \
             https://platform.openai.com/docs/guides/error-codes/api-errors."
                .to_owned(),
            "insufficient_quota",
            None,
            Some("insufficient_quota"),
        ),
        429 => (
            format!(
                "Rate limit reached for {model} in organization org-Mock0rgId5xYz9Qw3Er7T on requests per min \
                 (RPM): Limit 500, Used 500, Requested 1. Please try again in 1s. Visit \
                 https://platform.openai.com/account/rate-limits to learn more."
            ),
            "requests",
            None,
            Some("rate_limit_exceeded"),
        ),
        400 => (
            "Invalid request (mock error-400).".to_owned(),
            "invalid_request_error",
            None,
            None,
        ),
        401 => (
            "Incorrect API key provided: sk-mock*****************1234. You can find your API \
             key at https://platform.openai.com/account/api-keys."
                .to_owned(),
            "invalid_request_error",
            None,
            Some("invalid_api_key"),
        ),
        403 => (
            "Country, region, or territory not supported".to_owned(),
            "request_forbidden",
            None,
            Some("unsupported_country_region_territory"),
        ),
        404 => (
            format!("The model `{model}` does not exist or you do not have access to it."),
            "invalid_request_error",
            None,
            Some("model_not_found"),
        ),
        413 => (
            "Request too large.".to_owned(),
            "invalid_request_error",
            None,
            Some("request_too_large"),
        ),
        500 => (
            "The server had an error while processing your request. Sorry about that!".to_owned(),
            "server_error",
            None,
            None,
        ),
        502 => ("Bad gateway.".to_owned(), "server_error", None, None),
        503 => (
            "The engine is currently overloaded, please try again later.".to_owned(),
            "server_error",
            None,
            None,
        ),
        504 => ("Gateway timeout.".to_owned(), "server_error", None, None),
        _ if status >= 500 => (
            format!("Mock upstream error {status}."),
            "server_error",
            None,
            None,
        ),
        _ => (
            format!("Mock client error {status}."),
            "invalid_request_error",
            None,
            None,
        ),
    };
    let mut resp = error_with_param(status_code, &message, kind, param, code);
    if status == 429 {
        if quota {
            append_header(&mut resp, "x-should-retry", "false");
        } else {
            for (name, value) in [
                ("retry-after", "1"),
                ("x-ratelimit-limit-requests", "500"),
                ("x-ratelimit-limit-tokens", "200000"),
                ("x-ratelimit-remaining-requests", "0"),
                ("x-ratelimit-remaining-tokens", "199990"),
                ("x-ratelimit-reset-requests", "1s"),
                ("x-ratelimit-reset-tokens", "3ms"),
            ] {
                append_header(&mut resp, name, value);
            }
        }
    }
    resp
}

fn big_response() -> Resp {
    padded_json(
        br#"{"object":"mock.big","data":""#,
        b'x',
        br#""}"#,
        BIG_RESPONSE_LEN,
    )
}

/// A JSON body of exactly `len` bytes (`prefix`, `fill` repeated, `suffix`), sent in
/// `BIG_RESPONSE_CHUNK`-sized frames.
fn padded_json(prefix: &[u8], fill: u8, suffix: &[u8], len: usize) -> Resp {
    let mut body = Vec::with_capacity(len);
    body.extend_from_slice(prefix);
    body.resize(len - suffix.len(), fill);
    body.extend_from_slice(suffix);
    let body = Bytes::from(body);
    let chunks: Vec<Step> = (0..len)
        .step_by(BIG_RESPONSE_CHUNK)
        .map(|start| Step::Send(body.slice(start..(start + BIG_RESPONSE_CHUNK).min(body.len()))))
        .collect();
    let mut resp = Response::new(MockBody::paced(Box::new(chunks.into_iter()), None));
    resp.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    resp
}

/// The size of a `huge-error-<status>` body.
pub const HUGE_ERROR_LEN: usize = 10 * 1024 * 1024;

/// `huge-error-<status>`: an OpenAI-shaped error whose message makes it 10 MiB.
fn huge_error(status: u16) -> Resp {
    let Ok(status) = StatusCode::from_u16(status) else {
        return internal_error("mock: invalid status");
    };
    let mut resp = padded_json(
        br#"{"error":{"message":""#,
        b'e',
        br#"","type":"server_error","param":null,"code":null}}"#,
        HUGE_ERROR_LEN,
    );
    *resp.status_mut() = status;
    resp
}

/// The events of `garbage-sse`, each its own body frame: what a broken or hostile
/// upstream could send on a 200 `text/event-stream`.
pub fn garbage_sse_events() -> Vec<Bytes> {
    let mut long = b"data: ".to_vec();
    long.resize(2 * 1024 * 1024, b'a');
    long.extend_from_slice(b"\n\n");
    vec![
        Bytes::from_static(b": a comment\n\n"),
        Bytes::from_static(b"data: {not json\n\n"),
        Bytes::from_static(b"data: \xff\xfe\x00 not utf-8\n\n"),
        Bytes::from_static(b"event: x\nid: 1\nretry: soon\nno-colon\n\n"),
        Bytes::from_static(b"data: {\"choices\":[{\"delta\":{\"content\":\"ok\"}}]}\r\n\r\n"),
        Bytes::from(long),
        Bytes::from_static(b"data: {\"choices\":[],\"usage\":\"not an object\"}\n\n"),
        Bytes::from_static(
            b"data: {\"choices\":[],\"usage\":{\"prompt_tokens\":18446744073709551615,\
              \"completion_tokens\":18446744073709551615,\"total_tokens\":-1}}\n\n",
        ),
        Bytes::from_static(b"data: {\"choices\":[],\"usage\":{\"prompt_tokens\":1e309}}\n\n"),
        Bytes::from_static(b"data: [DONE]\n\n"),
    ]
}

fn garbage_sse() -> super::body::Steps {
    let steps: Vec<Step> = garbage_sse_events()
        .into_iter()
        .flat_map(|e| [Step::Send(e), Step::Flush])
        .collect();
    Box::new(steps.into_iter())
}

/// `reset-mid-stream` / `stall-mid-stream`: always a stream, chat or Responses framing by path.
fn stream_scenario(ctx: &Ctx, pacing: Pacing) -> Resp {
    let req = serde_json::from_slice::<Value>(&ctx.body).unwrap_or(Value::Null);
    let model = loose_model(ctx);
    let knob = completion_knob(ctx, &req);
    let events = if ctx.path == "/v1/responses" {
        sse::responses_events(&model, fixtures::responses_input_tokens(&req), knob)
    } else {
        sse::chat_events(
            &model,
            include_usage(&req),
            fixtures::chat_prompt_tokens(&req),
            knob,
        )
    };
    match events {
        Ok(events) => sse_response(paced_steps(events, pacing), &ctx.shared),
        Err(msg) => internal_error(&msg),
    }
}

fn long_stream(ctx: &Ctx, interval: Duration) -> Resp {
    let req = serde_json::from_slice::<Value>(&ctx.body).unwrap_or(Value::Null);
    match sse::LongStream::new(
        &loose_model(ctx),
        include_usage(&req),
        fixtures::chat_prompt_tokens(&req),
        interval,
        LONG_STREAM_LIMIT,
    ) {
        Ok(stream) => sse_response(Box::new(stream), &ctx.shared),
        Err(msg) => internal_error(&msg),
    }
}
