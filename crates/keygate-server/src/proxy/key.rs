//! `GET /v1/key`: an app asks keygate about its own key — limits, expiry, this
//! period's usage, what is left, its rate-limit state — with the grant's bearer, so it
//! can show "you have $3.20 left this month". Authenticated and checked (state, expiry,
//! origin) exactly like a proxied request, answered with CORS for the bound origin,
//! never forwarded, and not counted against rpm. Never shows a secret.

use actix_web::{HttpRequest, HttpResponse, web};

use super::authenticate;
use crate::error::ServerError;
use crate::services::usage;
use crate::state::AppState;

pub async fn key_info(req: HttpRequest, st: web::Data<AppState>) -> HttpResponse {
    let grant = match authenticate::identify(&st, &req).await {
        Ok(g) => g,
        Err(e) => return actix_web::ResponseError::error_response(&e),
    };
    let finish = super::Finish::of(&req, &grant);
    let answer: Result<_, ServerError> = match authenticate::usable(grant, &req, st.clock.now()) {
        Ok(g) => usage::key_info(&st, g.record()).await,
        Err(e) => Err(e),
    };
    let mut res = match answer {
        Ok(info) => HttpResponse::Ok()
            .insert_header((actix_web::http::header::CACHE_CONTROL, "no-store"))
            .json(info),
        Err(e) => actix_web::ResponseError::error_response(&e),
    };
    finish.apply(&st, &mut res);
    res
}
