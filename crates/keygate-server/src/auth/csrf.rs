//! CSRF defence for the cookie-authenticated API: a state-changing request must carry
//! an `Origin` equal to keygate's own public origin. Browsers always send `Origin` on
//! cross-site and same-site POST/PUT/PATCH/DELETE `fetch`es, so a missing one means
//! "not our page" too. Endpoints that are not cookie-authenticated opt out.

use actix_web::body::{EitherBody, MessageBody};
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::Method;
use actix_web::http::header::{HeaderMap, ORIGIN};
use actix_web::middleware::Next;
use actix_web::web;

use crate::error::{ServerError, respond};
use crate::services::error::ServiceError;
use crate::state::AppState;

/// Paths under `/api` that apps call from their servers (no cookie, no Origin).
const EXEMPT: [&str; 1] = ["/api/connect/token"];

/// The request's `Origin` header, if it is readable text.
pub fn request_origin(headers: &HeaderMap) -> Option<&str> {
    headers.get(ORIGIN).and_then(|v| v.to_str().ok())
}

pub async fn middleware(
    req: ServiceRequest,
    next: Next<impl MessageBody>,
) -> Result<ServiceResponse<EitherBody<impl MessageBody>>, actix_web::Error> {
    let safe = matches!(*req.method(), Method::GET | Method::HEAD | Method::OPTIONS);
    if safe || EXEMPT.contains(&req.path()) {
        return next
            .call(req)
            .await
            .map(ServiceResponse::map_into_left_body);
    }
    let expected = req
        .app_data::<web::Data<AppState>>()
        .map(|st| st.config.public_origin());
    let origin = request_origin(req.headers());
    match (origin, expected) {
        (Some(o), Some(e)) if o == e => next
            .call(req)
            .await
            .map(ServiceResponse::map_into_left_body),
        _ => {
            tracing::info!(path = %req.path(), origin = ?origin, "refused: foreign or missing Origin");
            let res = respond(req.headers(), &ServerError::from(ServiceError::CsrfFailed));
            Ok(req.into_response(res).map_into_right_body())
        }
    }
}
