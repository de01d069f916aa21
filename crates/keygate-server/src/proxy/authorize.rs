//! Phase 3: may this grant make this call? Pure checks on what phases 1–2 learned.
//!
//! [`endpoint`] runs first, right after authentication and before the body is read or
//! the key unsealed: the raw path must be canonical (400 `invalid_path`) and its
//! endpoint covered by the grant's scopes (403 `endpoint_not_allowed`).

use actix_web::HttpRequest;
use keygate_core::scope::{self, CanonicalPath, ModelUse};

use super::error::ProxyError;
use super::{AuthenticatedGrant, ProxyCtx};
use crate::error::ServerError;
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
