//! Phase 3: may this grant make this call? Pure checks on what phases 1–2 learned.

use actix_web::HttpRequest;
use actix_web::http::Method;
use keygate_core::openai_error::OpenAiError;
use keygate_core::time;

use super::{AuthenticatedGrant, ProxyCtx};
use crate::error::ServerError;
use crate::state::AppState;

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
                return Err(OpenAiError::model_not_allowed(model).into());
            }
        } else if req.method() == Method::POST && is_batch(req.path()) {
            // A batch names its models inside an uploaded file we never read.
            return Err(OpenAiError::model_not_allowed("batch")
                .with_param("model")
                .into());
        }
    }
    st.last_used.note(grant.id(), time::now());
    Ok(())
}

fn is_batch(path: &str) -> bool {
    path == "/v1/batches" || path.starts_with("/v1/batches/")
}
