//! Every route keygate serves, in one table.

mod admin;
pub(crate) mod api;
mod connect;
mod health;
mod openapi;
pub(crate) mod page;
mod reports;
pub(crate) mod web_pages;
mod wire;

use actix_web::http::header::CACHE_CONTROL;
use actix_web::middleware::{DefaultHeaders, from_fn};
use actix_web::{HttpRequest, HttpResponse, error, guard, web};

use crate::auth::csrf;
use crate::error::{ServerError, respond};
use crate::services::error::{Missing, ServiceError, Unreadable};
use crate::{client_deadline, proxy, throttle};

pub fn configure(cfg: &mut web::ServiceConfig, max_json_bytes: usize) {
    cfg.app_data(json_config(max_json_bytes))
        // A malformed id in a path (`/api/grants/{id}`) is simply not found.
        .app_data(web::PathConfig::default().error_handler(|_, _| {
            let e = ServerError::from(ServiceError::NotFound(Missing::Page));
            let res = actix_web::ResponseError::error_response(&e);
            error::InternalError::from_response("bad path", res).into()
        }))
        .app_data(web::QueryConfig::default().error_handler(|err, req| {
            let e = ServerError::from(ServiceError::Unreadable(Unreadable::Query(err.to_string())));
            error::InternalError::from_response(err, respond(req.headers(), &e)).into()
        }))
        .app_data(web::FormConfig::default().error_handler(|err, req| {
            let e = ServerError::from(match &err {
                error::UrlencodedError::Overflow { .. } => ServiceError::TooLarge { limit: 0 },
                error::UrlencodedError::Payload(p) if client_deadline::is_body_timeout(p) => {
                    ServiceError::BodyTimeout
                }
                error::UrlencodedError::ContentType => {
                    ServiceError::Unreadable(Unreadable::FormContentType)
                }
                _ => ServiceError::Unreadable(Unreadable::Form(err.to_string())),
            });
            error::InternalError::from_response(err, respond(req.headers(), &e)).into()
        }))
        .route("/healthz", web::get().to(health::healthz))
        .route("/readyz", web::get().to(health::readyz))
        .route("/metrics", web::get().to(crate::metrics::serve))
        .route("/openapi.yaml", web::get().to(openapi::serve))
        .service(
            web::scope("/admin")
                .wrap(no_store())
                .route("/keys", web::post().to(admin::create_key))
                .route("/keys", web::get().to(admin::list_keys))
                .route("/keys/{id}", web::delete().to(admin::revoke_key))
                .route("/backup", web::get().to(admin::backup))
                .route("/master-keys", web::get().to(admin::master_keys))
                .route("/master-keys", web::post().to(admin::rotate_master_key))
                .route(
                    "/master-keys/{kid}",
                    web::delete().to(admin::retire_master_key),
                )
                .route("/operator-key", web::put().to(admin::put_operator_key))
                .route("/operator-key", web::get().to(admin::get_operator_key))
                .route(
                    "/operator-key",
                    web::delete().to(admin::delete_operator_key),
                )
                .route("/users", web::post().to(admin::create_user))
                .route("/users", web::get().to(admin::list_users))
                .route("/users/{id}", web::get().to(admin::get_user))
                .route("/users/{id}", web::delete().to(admin::delete_user))
                .route(
                    "/users/{id}/openai-key",
                    web::put().to(admin::put_openai_key),
                )
                .route("/users/{id}/grants", web::post().to(admin::create_grant))
                .route("/users/{id}/grants", web::get().to(admin::list_grants))
                .route("/grants", web::get().to(admin::list_all_grants))
                .route("/usage", web::get().to(admin::usage_summary))
                .route("/grants/{id}", web::get().to(admin::show_grant))
                .route("/grants/{id}", web::delete().to(admin::delete_grant))
                .route("/grants/{id}", web::patch().to(admin::patch_grant))
                .route("/grants/{id}/rotate", web::post().to(admin::rotate_grant))
                .route("/grants/{id}/disable", web::post().to(admin::disable_grant))
                .route("/grants/{id}/enable", web::post().to(admin::enable_grant))
                .route("/grants/{id}/usage", web::get().to(admin::grant_usage))
                .route("/audit", web::get().to(admin::audit_log))
                .default_service(web::to(not_found)),
        )
        .service(
            web::scope("/api")
                .wrap(from_fn(csrf::middleware))
                .wrap(no_store())
                // Anonymous passkey ceremonies: per-address throttles and the live-ceremony
                // cap. A signed-in person's starts (reauth, adding a passkey, approving a
                // connection) need neither: each replaces that session's previous ceremony
                // of its kind (one key per person, kind and session, see
                // auth/passkeys.rs).
                .service(
                    web::resource("/auth/register/start")
                        .guard(guard::Post())
                        .to(api::register_start)
                        .wrap(from_fn(throttle::anonymous_start)),
                )
                .service(
                    web::resource("/auth/register/finish")
                        .guard(guard::Post())
                        .to(api::register_finish)
                        .wrap(from_fn(throttle::sign_up)),
                )
                .service(
                    web::resource("/auth/login/start")
                        .guard(guard::Post())
                        .to(api::login_start)
                        .wrap(from_fn(throttle::anonymous_start)),
                )
                .service(
                    web::resource("/auth/login/finish")
                        .guard(guard::Post())
                        .to(api::login_finish)
                        .wrap(from_fn(throttle::sign_in_finish)),
                )
                .route("/auth/reauth/start", web::post().to(api::reauth_start))
                .route("/auth/reauth/finish", web::post().to(api::reauth_finish))
                .route("/auth/logout", web::post().to(api::logout))
                .route("/me", web::get().to(api::me))
                .route("/key", web::get().to(api::get_key))
                .route("/key", web::put().to(api::put_key))
                .route("/key", web::delete().to(api::delete_key))
                .route("/grants", web::get().to(api::list_grants))
                .route("/grants", web::post().to(api::create_grant))
                .route("/grants/{id}", web::get().to(api::show_grant))
                .route("/grants/{id}", web::delete().to(api::delete_grant))
                .route("/grants/{id}", web::patch().to(api::patch_grant))
                .route("/grants/{id}/rotate", web::post().to(api::rotate_grant))
                .route("/grants/{id}/disable", web::post().to(api::disable_grant))
                .route("/grants/{id}/enable", web::post().to(api::enable_grant))
                .route("/grants/{id}/usage", web::get().to(api::grant_usage))
                .route("/usage", web::get().to(api::usage_summary))
                .route("/passkeys", web::get().to(api::list_passkeys))
                .route("/passkeys/start", web::post().to(api::add_passkey_start))
                .route("/passkeys/finish", web::post().to(api::add_passkey_finish))
                .route("/passkeys/{id}", web::patch().to(api::rename_passkey))
                .route("/passkeys/{id}", web::delete().to(api::delete_passkey))
                .route("/sessions", web::get().to(api::list_sessions))
                .route(
                    "/sessions/revoke-others",
                    web::post().to(api::revoke_other_sessions),
                )
                .route("/sessions/{id}", web::delete().to(api::end_session))
                .route("/account", web::delete().to(api::delete_account))
                .route("/audit", web::get().to(api::audit))
                .route("/connect/deny", web::post().to(connect::deny))
                .route("/connect/existing", web::get().to(connect::existing))
                .route("/connect/plan", web::get().to(connect::plan))
                .route(
                    "/connect/approve/start",
                    web::post().to(connect::approve_start),
                )
                .route(
                    "/connect/approve/finish",
                    web::post().to(connect::approve_finish),
                )
                .route("/connect/token", web::post().to(connect::token))
                .route(
                    "/connect/token",
                    web::method(actix_web::http::Method::OPTIONS).to(connect::token_preflight),
                )
                .default_service(web::to(not_found)),
        )
        .service(
            web::scope("/v1")
                // keygate's own answer about the key (not forwarded, not counted).
                .route("/key", web::get().to(proxy::key_info))
                .default_service(web::to(proxy::proxy_v1)),
        )
        .route("/v1", web::to(proxy::proxy_v1))
        .route("/", web::get().to(web_pages::index))
        .route("/login", web::get().to(web_pages::login))
        .route("/connect", web::get().to(connect::page))
        .service(
            web::scope("/connect")
                .wrap(from_fn(csrf::middleware))
                .wrap(no_store())
                .route("/approve", web::post().to(connect::approve_form))
                .route("/deny", web::post().to(connect::deny_form)),
        )
        .route("/dashboard", web::get().to(web_pages::dashboard))
        .route("/{file:.*}", web::get().to(web_pages::asset))
        .default_service(web::to(not_found));
}

/// `Cache-Control: no-store` on every response of a scope that has none: `/api` and
/// `/admin` answers can carry an `api_key` (grant creation, connect approval and token
/// exchange) or personal data, and the connect form posts answer with a code.
fn no_store() -> DefaultHeaders {
    DefaultHeaders::new().add((CACHE_CONTROL, "no-store"))
}

/// JSON bodies of keygate's own API: bounded, and errors in OpenAI's shape.
fn json_config(limit: usize) -> web::JsonConfig {
    web::JsonConfig::default()
        .limit(limit)
        .error_handler(|err, _req| {
            let e = ServerError::from(match &err {
                error::JsonPayloadError::OverflowKnownLength { .. }
                | error::JsonPayloadError::Overflow { .. } => ServiceError::TooLarge { limit: 0 },
                error::JsonPayloadError::Payload(p) if client_deadline::is_body_timeout(p) => {
                    ServiceError::BodyTimeout
                }
                error::JsonPayloadError::ContentType => {
                    ServiceError::Unreadable(Unreadable::JsonContentType)
                }
                _ => ServiceError::Unreadable(Unreadable::Json(short(&err))),
            });
            let res = actix_web::ResponseError::error_response(&e);
            error::InternalError::from_response(err, res).into()
        })
}

/// serde's message names the field and position, never the value.
fn short(err: &error::JsonPayloadError) -> String {
    match err {
        error::JsonPayloadError::Deserialize(e) => e.to_string(),
        _ => "malformed body".into(),
    }
}

async fn not_found(req: HttpRequest) -> Result<HttpResponse, ServerError> {
    Err(ServiceError::NotFound(Missing::Route {
        method: req.method().to_string(),
        path: req.path().to_owned(),
    })
    .into())
}
