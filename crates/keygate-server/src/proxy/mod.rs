//! The `/v1/*` proxy: its phases, read top to bottom in [`proxy_v1`] and `run`.
//!
//! authenticate (401 family) → the caller's own OpenAI key, `X-OpenAI-Key`
//! (`own_key.rs`: 400 malformed or `own_key_required`, 403 `own_key_not_allowed`) →
//! endpoint: canonical path and scope (400 `invalid_path`, 403 `endpoint_not_allowed`),
//! before any body byte is read → read the body far enough to learn `model`/`stream`
//! (413, 400) → authorize models (403), then limits (429/403 from
//! `keygate_core::policy` through the limiter: a lease) → unseal the person's key,
//! unless the caller sent its own (the vault is then not opened), else the operator's
//! when the grant's plan lends it (409 when there is none) → forward
//! upstream (502/504) → verdict on the key (424 when OpenAI refuses a stored key) →
//! stream the answer back as it arrives, with an idle timeout and an abnormal end
//! (never a fabricated `[DONE]`) when the upstream breaks → account (`account.rs`): the
//! usage is counted and the lease settled when the stream ends or is dropped.
//! `GET /v1/key` (`key.rs`) answers from keygate alone.

mod account;
mod authenticate;
mod authorize;
mod body;
mod cors;
pub mod error;
mod forward;
pub mod headers;
mod key;
mod models;
mod multipart;
mod own_key;
mod ratelimit;
mod stream;
mod unseal;
mod verdict;

use std::time::Instant;

use actix_web::{HttpMessage, HttpRequest, HttpResponse, web};
use keygate_core::scope::{self, CanonicalPath, ModelUse};

use crate::error::ServerError;
use crate::request_id::RequestId;
use crate::state::AppState;

pub use authenticate::{AuthenticatedGrant, bearer_token};
pub use key::key_info;

/// What the phases learn about one request.
#[derive(Debug)]
pub struct ProxyCtx {
    pub request_id: String,
    pub started: Instant,
    /// The request path, checked canonical and within the grant's scopes.
    pub path: CanonicalPath,
    pub model: Option<String>,
    /// Models that the body's tools run on their own (`None`: the tool's default),
    /// read only for model-limited grants.
    pub tool_models: Vec<Option<String>>,
    pub stream: bool,
    /// The JSON body as sent upstream (a reference, not a copy), for an estimate of a
    /// cut-short answer's prompt.
    pub body: Option<bytes::Bytes>,
    /// Counted only for grants whose limits need tokens (tpm, a budget).
    pub prompt_tokens: Option<u64>,
    /// `max_tokens` / `max_completion_tokens` / `max_output_tokens` times
    /// [`ProxyCtx::choices`], when counted.
    pub max_output: Option<u64>,
    /// Answers the request asks for (`n`, `best_of`), when counted; 1 otherwise.
    pub choices: u64,
    /// The body's `service_tier`, when it names one.
    pub service_tier: Option<String>,
    /// keygate asked for usage on the app's behalf: take it out of the answer.
    pub strip_usage: bool,
}

impl ProxyCtx {
    fn new(req: &HttpRequest, path: CanonicalPath) -> Self {
        Self {
            request_id: req
                .extensions()
                .get::<RequestId>()
                .map(|r| r.0.clone())
                .unwrap_or_default(),
            started: Instant::now(),
            path,
            model: None,
            tool_models: Vec::new(),
            stream: false,
            body: None,
            prompt_tokens: None,
            max_output: None,
            choices: 1,
            service_tier: None,
            strip_usage: false,
        }
    }
}

pub async fn proxy_v1(
    req: HttpRequest,
    payload: web::Payload,
    st: web::Data<AppState>,
) -> HttpResponse {
    if cors::is_preflight(&req) {
        return cors::preflight(&req);
    }
    let started = Instant::now();
    // A refusal's whole time is keygate's (a forwarded request's is observed in `run`).
    let refused = |e: &ServerError| {
        st.metrics.added("v1", started.elapsed());
        actix_web::ResponseError::error_response(e)
    };
    let grant = match authenticate::identify(&st, &req).await {
        Ok(g) => g,
        Err(e) => return refused(&e),
    };
    let finish = Finish::of(&req, &grant);
    let mut res = match run(&req, payload, &st, grant).await {
        Ok(res) => res,
        Err(e) => refused(&e),
    };
    finish.apply(&st, &mut res);
    res
}

/// What every answer to an identified grant carries, whatever it is (keygate's own,
/// a refusal, or the upstream's): CORS for exactly the grant's bound origin, and the
/// grant's own rpm/tpm state when it has those limits.
pub(crate) struct Finish {
    allow: Option<actix_web::http::header::HeaderValue>,
    rated: Option<(keygate_core::ids::GrantId, keygate_core::limits::Limits)>,
}

impl Finish {
    pub(crate) fn of(req: &HttpRequest, grant: &keygate_store::GrantRecord) -> Self {
        Self {
            allow: cors::allowed_origin(req, grant.origin.as_deref()),
            rated: (grant.limits.rpm.is_some() || grant.limits.tpm.is_some())
                .then(|| (grant.id.clone(), grant.limits.clone())),
        }
    }

    pub(crate) fn apply(self, st: &AppState, res: &mut HttpResponse) {
        if let Some((id, limits)) = self.rated {
            ratelimit::decorate(res, &st.limiter.snapshot(&id, &limits));
        }
        cors::decorate(res, self.allow);
    }
}

async fn run(
    req: &HttpRequest,
    payload: web::Payload,
    st: &AppState,
    grant: std::sync::Arc<keygate_store::GrantRecord>,
) -> Result<HttpResponse, ServerError> {
    let grant = authenticate::usable(grant, req, st.clock.now())?;
    let plan = st.config.plan_named(grant.record().plan.as_deref());
    let own_key = own_key::read(req, plan)?;
    let path = authorize::endpoint(&grant, req)?;
    let mut ctx = ProxyCtx::new(req, path);
    let started = ctx.started;
    let restricted = !grant.record().models.is_empty();
    let need_tokens = authorize::needs_tokens(&grant.record().limits);
    let body = body::read(
        req,
        payload,
        st.config.max_body_bytes,
        restricted,
        need_tokens,
        &mut ctx,
    )
    .await?;
    st.metrics
        .note_model(&st.config.prices, req, ctx.model.as_deref());
    authorize::authorize(st, &grant, req, &ctx)?;
    let lease = authorize::limits(st, &grant, plan, req, &ctx).await?;
    let key = unseal::unseal(st, &grant, own_key, plan).await?;
    tracing::debug!(grant_id = %grant.id(), model = ctx.model.as_deref(), stream = ctx.stream, key = key.source.label(), "forwarding");
    let runs_model = scope::model_use(req.method().as_str(), &ctx.path) != ModelUse::None;
    // The account phase holds the lease from the moment the request may be billed.
    let mut account = account::Account::new(
        st.config.clone(),
        st.metrics.clone(),
        lease,
        &mut ctx,
        runs_model,
    );
    let sent = Instant::now();
    let upstream = forward::forward(st, req, body, &key.key, &ctx)
        .await
        .inspect_err(|e| {
            if forward::never_sent(e) {
                account.not_sent();
            }
        })?;
    let first_byte = sent.elapsed();
    account.answered(upstream.status().as_u16(), first_byte);
    let upstream = verdict::judge(st, &key, upstream).await?;
    drop(key);
    let upstream = models::filter(st, &grant, req, &ctx, upstream).await;
    let res = stream::respond(st, req, upstream, grant, ctx, account);
    st.metrics
        .added("v1", started.elapsed().saturating_sub(first_byte));
    Ok(res)
}
