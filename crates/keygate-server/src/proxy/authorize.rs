//! Phase 3: may this grant make this call? Pure checks on what phases 1–2 learned.
//!
//! [`endpoint`] runs first, right after authentication and before the body is read or
//! the key unsealed: the raw path must be canonical (400 `invalid_path`) and its
//! endpoint covered by the grant's scopes (403 `endpoint_not_allowed`).

use actix_web::HttpRequest;
use actix_web::http::Method;
use keygate_core::scope::{self, CanonicalPath};

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

pub fn authorize(
    st: &AppState,
    grant: &AuthenticatedGrant,
    req: &HttpRequest,
    ctx: &ProxyCtx,
) -> Result<(), ServerError> {
    let allowed = &grant.record().models;
    if !allowed.is_empty() {
        if let Some(model) = &ctx.model {
            if !allowed.iter().any(|m| m == model) {
                return Err(ProxyError::ModelNotAllowed(model.clone()).into());
            }
        } else if req.method() == Method::POST && is_batch(&ctx.path) {
            // A batch names its models inside an uploaded file we never read.
            return Err(ProxyError::ModelNotAllowed("batch".into()).into());
        }
    }
    st.last_used.note(grant.id(), st.clock.now());
    Ok(())
}

fn is_batch(path: &CanonicalPath) -> bool {
    path.segments().first() == Some(&"batches")
}
