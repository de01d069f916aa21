//! `/api/*`: the person's own API, used by keygate's pages (and any client with a
//! session cookie). Every state-changing call passes the CSRF Origin check first.

use actix_web::{HttpResponse, web};
use keygate_core::ids::PasskeyId;
use keygate_core::openai_error::OpenAiError;
use keygate_core::time::UnixTime;
use keygate_store::{DeletePasskey, PasskeyRecord};
use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::auth::passkeys::REAUTH;
use crate::auth::{FreshSession, UserSession, session};
use crate::error::ServerError;
use crate::services::grants::{self, GrantView};
use crate::services::{users, vault};
use crate::state::AppState;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Name {
    name: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Empty {}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Finish {
    pub(crate) ceremony: String,
    pub(crate) credential: Value,
    #[serde(default)]
    name: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PutKey {
    api_key: SecretString,
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

#[derive(Serialize)]
struct PasskeyView {
    id: String,
    name: String,
    created_at: UnixTime,
    last_used_at: Option<UnixTime>,
    backup_eligible: bool,
    backup_state: bool,
}

impl From<&PasskeyRecord> for PasskeyView {
    fn from(p: &PasskeyRecord) -> Self {
        Self {
            id: p.id.to_string(),
            name: p.name.clone(),
            created_at: p.created_at,
            last_used_at: p.last_used_at,
            backup_eligible: p.backup_eligible,
            backup_state: p.backup_state,
        }
    }
}

pub(crate) fn started(s: crate::auth::passkeys::Started) -> HttpResponse {
    HttpResponse::Ok().json(json!({"ceremony": s.ceremony, "options": s.options}))
}

// --- sign-up, sign-in, step-up, sign-out -----------------------------------------

pub async fn register_start(
    st: web::Data<AppState>,
    body: web::Json<Name>,
) -> Result<HttpResponse, ServerError> {
    Ok(started(st.passkeys.register_start(&st.store, &body.name)?))
}

pub async fn register_finish(
    st: web::Data<AppState>,
    body: web::Json<Finish>,
) -> Result<HttpResponse, ServerError> {
    let body = body.into_inner();
    let user = st
        .passkeys
        .register_finish(&st.store, &body.ceremony, body.credential)
        .await?;
    let cookie = session::create(&st.store, &st.config, &user.id).await?;
    Ok(HttpResponse::Created()
        .cookie(cookie)
        .json(json!({ "user": user })))
}

pub async fn login_start(
    st: web::Data<AppState>,
    _: web::Json<Empty>,
) -> Result<HttpResponse, ServerError> {
    Ok(started(st.passkeys.login_start(&st.store)?))
}

pub async fn login_finish(
    st: web::Data<AppState>,
    body: web::Json<Finish>,
) -> Result<HttpResponse, ServerError> {
    let body = body.into_inner();
    let user = st
        .passkeys
        .login_finish(&st.store, &body.ceremony, body.credential)
        .await?;
    let cookie = session::create(&st.store, &st.config, &user.id).await?;
    tracing::info!(user_id = %user.id, "signed in with a passkey");
    Ok(HttpResponse::Ok()
        .cookie(cookie)
        .json(json!({ "user": user })))
}

pub async fn reauth_start(
    s: UserSession,
    st: web::Data<AppState>,
    _: web::Json<Empty>,
) -> Result<HttpResponse, ServerError> {
    Ok(started(st.passkeys.assertion_start(
        &st.store,
        s.user_id(),
        REAUTH,
    )?))
}

pub async fn reauth_finish(
    s: UserSession,
    st: web::Data<AppState>,
    body: web::Json<Finish>,
) -> Result<HttpResponse, ServerError> {
    let body = body.into_inner();
    st.passkeys.assertion_finish(
        &st.store,
        s.user_id(),
        &body.ceremony,
        body.credential,
        REAUTH,
    )?;
    s.mark_fresh(&st.store, &st.config).await?;
    Ok(HttpResponse::NoContent().finish())
}

pub async fn logout(s: UserSession, st: web::Data<AppState>) -> Result<HttpResponse, ServerError> {
    s.end(&st.store).await?;
    Ok(HttpResponse::NoContent()
        .cookie(session::removal(&st.config))
        .finish())
}

pub async fn me(s: UserSession) -> Result<HttpResponse, ServerError> {
    Ok(HttpResponse::Ok().json(&s.user))
}

// --- the OpenAI key --------------------------------------------------------------

pub async fn get_key(s: UserSession, st: web::Data<AppState>) -> Result<HttpResponse, ServerError> {
    Ok(HttpResponse::Ok().json(vault::key_view(&st.store, s.user_id())?))
}

/// Storing a first key needs a session; replacing one needs a fresh passkey check.
pub async fn put_key(
    s: UserSession,
    st: web::Data<AppState>,
    body: web::Json<PutKey>,
) -> Result<HttpResponse, ServerError> {
    let fresh = keygate_core::time::now() < s.record.fresh_until;
    if st.store.vault(s.user_id())?.is_some() && !fresh {
        return Err(OpenAiError::fresh_passkey_required().into());
    }
    let key = body.api_key.expose_secret();
    let validated = if st.config.validate_openai_keys {
        vault::validate_with_upstream(&st, key).await?
    } else {
        false
    };
    vault::put_key_validated(&st.store, &st.keyring, s.user_id(), key, validated).await?;
    Ok(HttpResponse::NoContent().finish())
}

pub async fn delete_key(
    s: FreshSession,
    st: web::Data<AppState>,
) -> Result<HttpResponse, ServerError> {
    st.store.delete_vault(s.0.user_id())?;
    st.store.flush().await?;
    tracing::info!(user_id = %s.0.user_id(), "OpenAI key deleted");
    Ok(HttpResponse::NoContent().finish())
}

// --- grants ----------------------------------------------------------------------

pub async fn list_grants(
    s: UserSession,
    st: web::Data<AppState>,
) -> Result<HttpResponse, ServerError> {
    Ok(HttpResponse::Ok().json(grants::list(&st.store, s.user_id())?))
}

pub async fn create_grant(
    s: UserSession,
    st: web::Data<AppState>,
    body: web::Json<CreateGrant>,
) -> Result<HttpResponse, ServerError> {
    let body = body.into_inner();
    let new = grants::create(
        &st.store,
        s.user_id(),
        grants::GrantSpec {
            name: body.name,
            models: body.models,
            scopes: body.scopes,
            ..Default::default()
        },
    )
    .await?;
    Ok(HttpResponse::Created().json(json!({
        "api_key": new.token.expose_secret(),
        "base_url": st.config.base_url(),
        "grant": GrantView::from(&new.grant),
    })))
}

pub async fn revoke_grant(
    s: UserSession,
    st: web::Data<AppState>,
    id: web::Path<String>,
) -> Result<HttpResponse, ServerError> {
    grants::revoke(&st.store, &id, Some(s.user_id())).await?;
    Ok(HttpResponse::NoContent().finish())
}

// --- passkeys --------------------------------------------------------------------

pub async fn list_passkeys(
    s: UserSession,
    st: web::Data<AppState>,
) -> Result<HttpResponse, ServerError> {
    let list: Vec<PasskeyView> = st
        .store
        .passkeys_for_user(s.user_id())?
        .iter()
        .map(PasskeyView::from)
        .collect();
    Ok(HttpResponse::Ok().json(list))
}

pub async fn add_passkey_start(
    s: UserSession,
    st: web::Data<AppState>,
    _: web::Json<Empty>,
) -> Result<HttpResponse, ServerError> {
    Ok(started(st.passkeys.add_start(&st.store, &s.user)?))
}

pub async fn add_passkey_finish(
    s: UserSession,
    st: web::Data<AppState>,
    body: web::Json<Finish>,
) -> Result<HttpResponse, ServerError> {
    let body = body.into_inner();
    let pk = st
        .passkeys
        .add_finish(
            &st.store,
            s.user_id(),
            &body.ceremony,
            body.credential,
            body.name.as_deref(),
        )
        .await?;
    Ok(HttpResponse::Created().json(PasskeyView::from(&pk)))
}

fn own_passkey(st: &AppState, s: &UserSession, id: &str) -> Result<PasskeyRecord, ServerError> {
    let not_found = || OpenAiError::not_found("No such passkey.");
    let id = PasskeyId::parse(id).map_err(|_| not_found())?;
    st.store
        .passkey(&id)?
        .filter(|p| &p.user_id == s.user_id())
        .ok_or_else(|| not_found().into())
}

pub async fn rename_passkey(
    s: UserSession,
    st: web::Data<AppState>,
    id: web::Path<String>,
    body: web::Json<Name>,
) -> Result<HttpResponse, ServerError> {
    let mut pk = own_passkey(&st, &s, &id)?;
    pk.name = users::parse_name(&body.name, "name")?;
    st.store.put_passkey(&pk)?;
    st.store.flush().await?;
    Ok(HttpResponse::Ok().json(PasskeyView::from(&pk)))
}

pub async fn delete_passkey(
    s: FreshSession,
    st: web::Data<AppState>,
    id: web::Path<String>,
) -> Result<HttpResponse, ServerError> {
    let pk = own_passkey(&st, &s.0, &id)?;
    match st.store.delete_passkey_unless_last(&pk)? {
        DeletePasskey::Last => Err(OpenAiError::last_passkey().into()),
        DeletePasskey::Deleted => {
            st.store.flush().await?;
            tracing::info!(user_id = %pk.user_id, passkey_id = %pk.id, "passkey removed");
            Ok(HttpResponse::NoContent().finish())
        }
    }
}

// --- the account -----------------------------------------------------------------

pub async fn delete_account(
    s: FreshSession,
    st: web::Data<AppState>,
) -> Result<HttpResponse, ServerError> {
    let user = s.0.user_id().clone();
    st.store.delete_user(&user)?;
    st.store.flush().await?;
    tracing::info!(user_id = %user, "account deleted");
    Ok(HttpResponse::NoContent()
        .cookie(session::removal(&st.config))
        .finish())
}
