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
            (Some(model), _) if !allowed.iter().any(|m| m == model) => {
                return Err(ProxyError::ModelNotAllowed(model.clone()).into());
            }
            (Some(_), _) | (None, ModelUse::None) => {}
            (None, ModelUse::Named) => return Err(ProxyError::ModelRequired.into()),
            // A batch names its models inside an uploaded file we never read.
            (None, ModelUse::Hidden) => {
                return Err(ProxyError::ModelNotAllowed("batch".into()).into());
            }
        }
    }
    st.last_used.note(grant.id(), st.clock.now());
    Ok(())
}
