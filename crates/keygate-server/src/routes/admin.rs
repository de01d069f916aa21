//! `/admin/*`: for operators (and tests) holding `KEYGATE_ADMIN_KEY`.

use std::future::{Ready, ready};

use actix_web::dev::Payload;
use actix_web::{FromRequest, HttpRequest, HttpResponse, web};
use secrecy::ExposeSecret;
use serde::Deserialize;

use crate::error::ServerError;
use crate::services::error::{Limit, ServiceError};
use crate::services::grants::GrantView;
use crate::services::{grants, users, vault};
use crate::state::AppState;

/// Proof that the request carried the admin key.
pub struct Admin;

impl FromRequest for Admin {
    type Error = ServerError;
    type Future = Ready<Result<Self, ServerError>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        ready(check_admin(req))
    }
}

fn check_admin(req: &HttpRequest) -> Result<Admin, ServerError> {
    let st = req
        .app_data::<web::Data<AppState>>()
        .ok_or_else(|| ServerError::Internal("app state missing".into()))?;
    if !st.admin_enabled() {
        return Err(ServiceError::AdminDisabled.into());
    }
    // Wrong keys are throttled per address, and the throttle comes before the check:
    // a throttled address learns nothing about any key it sends until Retry-After has
    // passed. Right keys never spend from the budget, and other addresses are never
    // affected (docs/DECISIONS.md).
    let throttle = &st.throttles.admin_failures;
    let client = st.throttles.client(req.peer_addr(), req.headers());
    let slow_down = |secs| ServiceError::RateLimited {
        limit: Limit::AdminKeys,
        retry_after: secs,
    };
    throttle.gate(client).map_err(slow_down)?;
    let token = crate::proxy::bearer_token(req)?;
    if st.is_admin_key(token) {
        return Ok(Admin);
    }
    tracing::warn!(%client, "wrong admin key");
    throttle.failed(client).map_err(slow_down)?;
    Err(ServiceError::NotAdminKey.into())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateUser {
    name: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PutKey {
    api_key: secrecy::SecretString,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateGrant {
    name: String,
    #[serde(default)]
    models: Option<Vec<String>>,
    #[serde(default)]
    scopes: Option<Vec<String>>,
}

pub async fn create_user(
    _: Admin,
    st: web::Data<AppState>,
    body: web::Json<CreateUser>,
) -> Result<HttpResponse, ServerError> {
    let user = users::create(&st.store, &body.name).await?;
    Ok(HttpResponse::Created().json(user))
}

pub async fn list_users(_: Admin, st: web::Data<AppState>) -> Result<HttpResponse, ServerError> {
    Ok(HttpResponse::Ok().json(st.store.users()?))
}

pub async fn get_user(
    _: Admin,
    st: web::Data<AppState>,
    id: web::Path<String>,
) -> Result<HttpResponse, ServerError> {
    Ok(HttpResponse::Ok().json(users::get(&st.store, &id)?))
}

pub async fn put_openai_key(
    _: Admin,
    st: web::Data<AppState>,
    id: web::Path<String>,
    body: web::Json<PutKey>,
) -> Result<HttpResponse, ServerError> {
    let user = users::get(&st.store, &id)?;
    vault::put_key(
        &st.store,
        &st.keyring,
        &user.id,
        body.api_key.expose_secret(),
    )
    .await?;
    Ok(HttpResponse::NoContent().finish())
}

pub async fn create_grant(
    _: Admin,
    st: web::Data<AppState>,
    id: web::Path<String>,
    body: web::Json<CreateGrant>,
) -> Result<HttpResponse, ServerError> {
    let user = users::get(&st.store, &id)?;
    let body = body.into_inner();
    let new = grants::create(
        &st.store,
        &user.id,
        grants::GrantSpec {
            name: body.name,
            models: body.models,
            scopes: body.scopes,
            ..Default::default()
        },
    )
    .await?;
    Ok(HttpResponse::Created().json(serde_json::json!({
        "api_key": new.token.expose_secret(),
        "base_url": st.config.base_url(),
        "grant": GrantView::from(&new.grant),
    })))
}

pub async fn list_grants(
    _: Admin,
    st: web::Data<AppState>,
    id: web::Path<String>,
) -> Result<HttpResponse, ServerError> {
    let user = users::get(&st.store, &id)?;
    Ok(HttpResponse::Ok().json(grants::list(&st.store, &user.id)?))
}

pub async fn revoke_grant(
    _: Admin,
    st: web::Data<AppState>,
    id: web::Path<String>,
) -> Result<HttpResponse, ServerError> {
    grants::revoke(&st.store, &id, None).await?;
    Ok(HttpResponse::NoContent().finish())
}
