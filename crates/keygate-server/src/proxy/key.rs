//! `GET /v1/key`: an app asks keygate about its own key — limits, expiry, this
//! period's usage, what is left, its rate-limit state — with the grant's bearer, so it
//! can show "you have $3.20 left this month". Authenticated and checked (state, expiry,
//! origin) exactly like a proxied request, answered with CORS for the bound origin,
//! never forwarded, and not counted against rpm. Never shows a secret.

use actix_web::{HttpRequest, HttpResponse, web};

use super::{authenticate, cors, ratelimit};
use crate::error::ServerError;
use crate::services::usage;
use crate::state::AppState;

pub async fn key_info(req: HttpRequest, st: web::Data<AppState>) -> HttpResponse {
    let grant = match authenticate::identify(&st, &req) {
        Ok(g) => g,
        Err(e) => return actix_web::ResponseError::error_response(&e),
    };
    let allow = cors::allowed_origin(&req, grant.origin.as_deref());
    let rated = (grant.limits.rpm.is_some() || grant.limits.tpm.is_some())
        .then(|| (grant.id.clone(), grant.limits.clone()));
    let answer: Result<_, ServerError> = authenticate::usable(grant, &req, st.clock.now())
        .and_then(|g| usage::key_info(&st, g.record()));
    let mut res = match answer {
        Ok(info) => HttpResponse::Ok()
            .insert_header((actix_web::http::header::CACHE_CONTROL, "no-store"))
            .json(info),
        Err(e) => actix_web::ResponseError::error_response(&e),
    };
    if let Some((id, limits)) = rated {
        ratelimit::decorate(&mut res, &st.limiter.snapshot(&id, &limits));
    }
    cors::decorate(&mut res, allow);
    res
}
