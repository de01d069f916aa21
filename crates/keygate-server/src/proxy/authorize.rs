//! Phase 3: may this grant make this call? Pure checks on what phases 1–2 learned.
//!
//! [`endpoint`] runs first, right after authentication and before the body is read or
//! the key unsealed: the raw path must be canonical (400 `invalid_path`) and its
//! endpoint covered by the grant's scopes (403 `endpoint_not_allowed`).

use actix_web::HttpRequest;
use keygate_core::calendar;
use keygate_core::limits::{Budget, Limits, Plan};
use keygate_core::policy::{BudgetLimit, Deny, Estimate, Rules};
use keygate_core::scope::{self, CanonicalPath, ModelUse};

use super::error::{ProxyError, RateKind};
use super::{AuthenticatedGrant, ProxyCtx};
use crate::error::ServerError;
use crate::limiter::{Lease, Refusal};
use crate::state::AppState;

/// The request's canonical path, if the grant's scopes reach its endpoint.
pub fn endpoint(
    grant: &AuthenticatedGrant,
    req: &HttpRequest,
) -> Result<CanonicalPath, ServerError> {
    let path = scope::canonicalize(req.uri().path())
        .map_err(|e| ProxyError::InvalidPath(e.to_string()))?;
    let access = scope::classify(req.method().as_str(), &path);
    if !access.allowed_by(&grant.record().scopes) {
        tracing::info!(grant_id = %grant.id(), access = ?access, "endpoint not allowed for this grant");
        return Err(ProxyError::EndpointNotAllowed(path.as_str().to_owned()).into());
    }
    Ok(path)
}

/// The body's `model` against the grant's list. For a model-limited grant, a call that
/// runs a model must name an allowed one (`scope::model_use`: OpenAI would otherwise
/// pick a default image model, or an assistant's model), and a batch (whose models
/// are in a file keygate does not read) is refused.
pub fn authorize(
    st: &AppState,
    grant: &AuthenticatedGrant,
    req: &HttpRequest,
    ctx: &ProxyCtx,
) -> Result<(), ServerError> {
    let allowed = &grant.record().models;
    if !allowed.is_empty() {
        // `GET /v1/models/{id}` of a model the grant may not use: as if it were absent
        // from the (filtered) list.
        if req.method() == actix_web::http::Method::GET
            && let ["models", id] = ctx.path.segments().as_slice()
            && !allowed.iter().any(|m| m == id)
        {
            return Err(ProxyError::ModelNotAllowed((*id).to_owned()).into());
        }
        match (
            &ctx.model,
            scope::model_use(req.method().as_str(), &ctx.path),
        ) {
            // A batch names its models inside an uploaded file keygate never reads, a
            // fine-tuning grader deep in its body; a top-level `model` beside them would
            // prove nothing, so these are refused first.
            (_, ModelUse::Hidden) => {
                let what = if ctx.path.segments().first().copied() == Some("batches") {
                    "batch"
                } else {
                    "fine-tuning"
                };
                return Err(ProxyError::ModelNotAllowed(what.into()).into());
            }
            (Some(model), _) if !allowed.iter().any(|m| m == model) => {
                return Err(ProxyError::ModelNotAllowed(model.clone()).into());
            }
            (Some(_), _) | (None, ModelUse::None) => {}
            (None, ModelUse::Named) => return Err(ProxyError::ModelRequired.into()),
        }
        // A tool that runs a model of its own (image generation inside a response) is
        // held to the same list; one that names none runs OpenAI's default.
        for tool_model in &ctx.tool_models {
            match tool_model {
                Some(model) if !allowed.iter().any(|m| m == model) => {
                    return Err(ProxyError::ModelNotAllowed(model.clone()).into());
                }
                Some(_) => {}
                None => return Err(ProxyError::ModelRequired.into()),
            }
        }
    }
    st.last_used.note(grant.id(), st.clock.now());
    Ok(())
}

/// Whether the grant's limits need the request's token count (tpm or a budget, for
/// the grant or any of its models).
pub fn needs_tokens(limits: &Limits) -> bool {
    Rules::of(limits).needs_tokens()
        || limits
            .models
            .values()
            .any(|m| Rules::of_model(m).needs_tokens())
}

/// The limits step: the request's worst case (prompt tokens + the output it allows, or
/// the plan's `default_max_tokens`, priced for its model) decided by
/// `keygate_core::policy` through the limiter, which hands back the lease the answer
/// will settle. `plan`: the grant's plan as configured now.
pub async fn limits(
    st: &AppState,
    grant: &AuthenticatedGrant,
    plan: Option<&Plan>,
    req: &HttpRequest,
    ctx: &ProxyCtx,
) -> Result<Lease, ServerError> {
    let record = grant.record();
    let limits = &record.limits;
    let model = ctx.model.as_deref();
    let estimate = if needs_tokens(limits) {
        let prompt = ctx.prompt_tokens.unwrap_or(0);
        let output = ctx
            .max_output
            .or_else(|| {
                plan.and_then(|p| p.default_max_tokens)
                    .map(|t| t.saturating_mul(ctx.choices))
            })
            .unwrap_or(0);
        Estimate::of(
            &st.config.prices,
            model,
            scope::model_use(req.method().as_str(), &ctx.path),
            prompt,
            output,
            premium_tier(ctx),
        )
    } else {
        Estimate::default()
    };
    st.limiter
        .acquire(grant.id(), limits, model, estimate)
        .await
        .map_err(|why| match why {
            Refusal::Store(e) => ServerError::from(e),
            Refusal::Deny(deny) => {
                st.metrics.refused(&deny, false);
                refused_by(grant, ctx, deny, limits.budget.as_ref(), None)
            }
            Refusal::Model(deny) => {
                st.metrics.refused(&deny, true);
                let budget = model
                    .and_then(|m| limits.for_model(m))
                    .and_then(|o| o.budget.as_ref());
                refused_by(grant, ctx, deny, budget, model)
            }
        })
}

/// The error for a refusal by the grant's own limits (`model: None`) or by those of
/// the request's model, whose `budget` it was.
fn refused_by(
    grant: &AuthenticatedGrant,
    ctx: &ProxyCtx,
    deny: Deny,
    budget: Option<&Budget>,
    model: Option<&str>,
) -> ServerError {
    tracing::info!(grant_id = %grant.id(), ?deny, model, "refused by the grant's limits");
    match deny {
        Deny::ModelNotPriced if premium_tier(ctx) => {
            ProxyError::TierNotPriced(ctx.service_tier.clone().unwrap_or_default()).into()
        }
        deny => refused(deny, budget, model, ctx.model.as_deref()).into(),
    }
}

/// A `service_tier` that costs more than the price table says (`priority`, `scale`).
fn premium_tier(ctx: &ProxyCtx) -> bool {
    ctx.service_tier
        .as_deref()
        .is_some_and(|t| !matches!(t, "auto" | "default" | "flex"))
}

/// `budget` is the one that refused (the grant's, or `budget_of`'s overrides'), and
/// `model` the request's.
fn refused(
    deny: Deny,
    budget: Option<&Budget>,
    budget_of: Option<&str>,
    model: Option<&str>,
) -> ProxyError {
    match deny {
        Deny::Requests {
            limit,
            retry_after_ms,
        } => ProxyError::RateLimited {
            what: RateKind::Requests,
            limit,
            retry_after_ms,
        },
        Deny::Tokens {
            limit,
            retry_after_ms,
        } => ProxyError::RateLimited {
            what: RateKind::Tokens,
            limit,
            retry_after_ms,
        },
        Deny::TokensNeverFit { limit, requested } => ProxyError::TooManyTokens { limit, requested },
        Deny::Concurrency { limit } => ProxyError::ConcurrencyLimit(limit),
        Deny::Budget {
            limit, resets_at, ..
        } => ProxyError::BudgetSpent {
            what: match limit {
                BudgetLimit::Usd(u) => format!("${}", u.dollars()),
                BudgetLimit::Tokens(t) => format!("{t} tokens"),
            },
            period: budget.map_or("month", |b| b.period.as_str()),
            model: budget_of.map(str::to_owned),
            resets_at: calendar::to_rfc3339(resets_at),
        },
        Deny::ModelNotPriced => ProxyError::ModelNotPriced(model.map(str::to_owned)),
    }
}
