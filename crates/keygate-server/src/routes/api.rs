//! `/api/*`: the person's own API, used by keygate's pages (and any client with a
//! session cookie). Every state-changing call passes the CSRF Origin check first.

use actix_web::{HttpRequest, HttpResponse, web};
use keygate_core::ids::{GrantId, PasskeyId};
use serde_json::{Value, json};

use super::wire::{CreateGrant, Empty, Finish, Name, PutKey, Rotate};
use crate::auth::passkeys::REAUTH;
use crate::auth::{FreshSession, UserSession, flows, session};
use crate::error::ServerError;
use crate::services::account::{self, PasskeyView};
use crate::services::audit::RequestMeta;
use crate::services::grants::{self, Caller, GrantPatch};
use crate::services::users::UserView;
use crate::services::vault;
use crate::state::AppState;

pub(crate) fn started(s: crate::auth::passkeys::Started) -> HttpResponse {
    HttpResponse::Ok().json(json!({"ceremony": s.ceremony, "options": s.options}))
}

// --- sign-up, sign-in, step-up, sign-out -----------------------------------------

pub async fn register_start(
    st: web::Data<AppState>,
    body: web::Json<Name>,
) -> Result<HttpResponse, ServerError> {
    Ok(started(
        st.passkeys.register_start(&st.store, &body.name).await?,
    ))
}

pub async fn register_finish(
    req: HttpRequest,
    meta: RequestMeta,
    st: web::Data<AppState>,
    body: web::Json<Finish>,
) -> Result<HttpResponse, ServerError> {
    let body = body.into_inner();
    let done = flows::sign_up(
        &st,
        &body.ceremony,
        body.credential,
        session::user_agent(&req),
        &meta,
    )
    .await?;
    Ok(HttpResponse::Created()
        .cookie(done.cookie)
        .json(json!({ "user": done.user })))
}

pub async fn login_start(
    st: web::Data<AppState>,
    _: web::Json<Empty>,
) -> Result<HttpResponse, ServerError> {
    Ok(started(st.passkeys.login_start(&st.store).await?))
}

pub async fn login_finish(
    req: HttpRequest,
    meta: RequestMeta,
    st: web::Data<AppState>,
    body: web::Json<Finish>,
) -> Result<HttpResponse, ServerError> {
    let body = body.into_inner();
    let done = flows::sign_in(
        &st,
        &body.ceremony,
        body.credential,
        session::user_agent(&req),
        &meta,
    )
    .await?;
    Ok(HttpResponse::Ok()
        .cookie(done.cookie)
        .json(json!({ "user": done.user })))
}

pub async fn reauth_start(
    s: UserSession,
    st: web::Data<AppState>,
    _: web::Json<Empty>,
) -> Result<HttpResponse, ServerError> {
    Ok(started(
        st.passkeys
            .assertion_start(&st.store, s.signer(), REAUTH)
            .await?,
    ))
}

pub async fn reauth_finish(
    s: UserSession,
    st: web::Data<AppState>,
    body: web::Json<Finish>,
) -> Result<HttpResponse, ServerError> {
    let body = body.into_inner();
    flows::confirm(&st, &s, &body.ceremony, body.credential).await?;
    Ok(HttpResponse::NoContent().finish())
}

pub async fn logout(s: UserSession, st: web::Data<AppState>) -> Result<HttpResponse, ServerError> {
    s.end(&st.store).await?;
    Ok(HttpResponse::NoContent()
        .cookie(session::removal(&st.config))
        .finish())
}

pub async fn me(s: UserSession) -> Result<HttpResponse, ServerError> {
    Ok(HttpResponse::Ok().json(UserView::from(&s.user)))
}

// --- the OpenAI key --------------------------------------------------------------

pub async fn get_key(s: UserSession, st: web::Data<AppState>) -> Result<HttpResponse, ServerError> {
    Ok(HttpResponse::Ok().json(vault::key_view(&st.store, s.user_id()).await?))
}

/// Storing a key, the first one included, needs a fresh passkey check: a stolen session
/// must not plant its own key (and read the person's traffic through it).
pub async fn put_key(
    s: FreshSession,
    meta: RequestMeta,
    st: web::Data<AppState>,
    body: web::Json<PutKey>,
) -> Result<HttpResponse, ServerError> {
    let by = meta.person(s.0.user_id());
    vault::store_key(&st, s.0.user_id(), &body.api_key, &by).await?;
    Ok(HttpResponse::NoContent().finish())
}

pub async fn delete_key(
    s: FreshSession,
    meta: RequestMeta,
    st: web::Data<AppState>,
) -> Result<HttpResponse, ServerError> {
    vault::delete_key(&st.store, s.0.user_id(), &meta.person(s.0.user_id())).await?;
    Ok(HttpResponse::NoContent().finish())
}

// --- grants ----------------------------------------------------------------------

pub async fn list_grants(
    s: UserSession,
    st: web::Data<AppState>,
) -> Result<HttpResponse, ServerError> {
    Ok(HttpResponse::Ok().json(grants::list(&st.store, s.user_id()).await?))
}

/// Minting a grant hands out the person's key's power: a fresh passkey check first.
pub async fn create_grant(
    s: FreshSession,
    meta: RequestMeta,
    st: web::Data<AppState>,
    body: web::Json<CreateGrant>,
) -> Result<HttpResponse, ServerError> {
    let now = st.clock.now();
    let spec = body.into_inner().into_spec(now)?;
    let new = grants::create(
        &st.store,
        &st.config,
        s.0.user_id(),
        spec,
        Caller::Person,
        now,
        &meta.person(s.0.user_id()),
    )
    .await?;
    Ok(HttpResponse::Created().json(new.issued(st.config.base_url())))
}

pub async fn show_grant(
    s: UserSession,
    st: web::Data<AppState>,
    id: web::Path<GrantId>,
) -> Result<HttpResponse, ServerError> {
    Ok(HttpResponse::Ok().json(grants::show(&st.store, &id, Some(s.user_id())).await?))
}

/// Changing limits, models, scopes, name or expiry: a session is enough to tighten a
/// grant; widening it needs a fresh one (decided in `grants::patch`). The person is
/// held to the grant's plan.
pub async fn patch_grant(
    s: UserSession,
    meta: RequestMeta,
    st: web::Data<AppState>,
    id: web::Path<GrantId>,
    body: web::Json<Value>,
) -> Result<HttpResponse, ServerError> {
    let now = st.clock.now();
    let patch = GrantPatch::parse(&body, now)?;
    let view = grants::patch(
        &st.store,
        &st.config,
        &id,
        Some(s.user_id()),
        patch,
        Caller::Person,
        s.is_fresh(now),
        &meta.person(s.user_id()),
    )
    .await?;
    Ok(HttpResponse::Ok().json(view))
}

/// A new key is shown, like creating one: a fresh passkey check first.
pub async fn rotate_grant(
    s: FreshSession,
    meta: RequestMeta,
    st: web::Data<AppState>,
    id: web::Path<GrantId>,
    body: web::Json<Rotate>,
) -> Result<HttpResponse, ServerError> {
    let grace = body.grace()?;
    let (user, now) = (s.0.user_id(), st.clock.now());
    let new = grants::rotate(&st.store, &id, Some(user), grace, now, &meta.person(user)).await?;
    Ok(HttpResponse::Ok().json(new.issued(st.config.base_url())))
}

pub async fn disable_grant(
    s: UserSession,
    meta: RequestMeta,
    st: web::Data<AppState>,
    id: web::Path<GrantId>,
) -> Result<HttpResponse, ServerError> {
    let by = meta.person(s.user_id());
    let view = grants::set_enabled(&st.store, &id, Some(s.user_id()), false, &by).await?;
    Ok(HttpResponse::Ok().json(view))
}

/// Enabling gives a key its power back: a fresh passkey check first (disabling needs
/// only the session: a stolen cookie may stop a key, never revive one).
pub async fn enable_grant(
    s: FreshSession,
    meta: RequestMeta,
    st: web::Data<AppState>,
    id: web::Path<GrantId>,
) -> Result<HttpResponse, ServerError> {
    let by = meta.person(s.0.user_id());
    let view = grants::set_enabled(&st.store, &id, Some(s.0.user_id()), true, &by).await?;
    Ok(HttpResponse::Ok().json(view))
}

/// Revokes an active or disabled grant; removes an already revoked one from the list.
pub async fn delete_grant(
    s: UserSession,
    meta: RequestMeta,
    st: web::Data<AppState>,
    id: web::Path<GrantId>,
) -> Result<HttpResponse, ServerError> {
    let (user, now) = (s.user_id(), st.clock.now());
    grants::delete(&st.store, &id, Some(user), now, &meta.person(user)).await?;
    Ok(HttpResponse::NoContent().finish())
}

// --- passkeys --------------------------------------------------------------------

pub async fn list_passkeys(
    s: UserSession,
    st: web::Data<AppState>,
) -> Result<HttpResponse, ServerError> {
    Ok(HttpResponse::Ok().json(account::passkeys(&st.store, s.user_id()).await?))
}

/// Adding a passkey gives lasting access: a fresh passkey check first (start and finish).
pub async fn add_passkey_start(
    s: FreshSession,
    st: web::Data<AppState>,
    _: web::Json<Empty>,
) -> Result<HttpResponse, ServerError> {
    Ok(started(
        st.passkeys
            .add_start(&st.store, &s.0.user, &s.0.record.public_id)
            .await?,
    ))
}

pub async fn add_passkey_finish(
    s: FreshSession,
    meta: RequestMeta,
    st: web::Data<AppState>,
    body: web::Json<Finish>,
) -> Result<HttpResponse, ServerError> {
    let body = body.into_inner();
    let pk = st
        .passkeys
        .add_finish(
            &st.store,
            s.0.signer(),
            &body.ceremony,
            body.credential,
            body.name.as_deref(),
            &meta.person(s.0.user_id()),
        )
        .await?;
    Ok(HttpResponse::Created().json(PasskeyView::from(&pk)))
}

pub async fn rename_passkey(
    s: UserSession,
    st: web::Data<AppState>,
    id: web::Path<PasskeyId>,
    body: web::Json<Name>,
) -> Result<HttpResponse, ServerError> {
    let view = account::rename_passkey(&st.store, s.user_id(), &id, &body.name).await?;
    Ok(HttpResponse::Ok().json(view))
}

/// Removing a passkey also ends every other session of the person.
pub async fn delete_passkey(
    s: FreshSession,
    meta: RequestMeta,
    st: web::Data<AppState>,
    id: web::Path<PasskeyId>,
) -> Result<HttpResponse, ServerError> {
    let (user, by) = (s.0.user_id(), meta.person(s.0.user_id()));
    account::remove_passkey(&st.store, user, &id, s.0.hash(), &by).await?;
    Ok(HttpResponse::NoContent().finish())
}

// --- sessions --------------------------------------------------------------------

pub async fn list_sessions(
    s: UserSession,
    st: web::Data<AppState>,
) -> Result<HttpResponse, ServerError> {
    Ok(HttpResponse::Ok().json(session::list(&st, &s).await?))
}

/// Ends one of the person's sessions; ending this one also drops its cookie. Ending
/// another one needs a fresh session (checked in `end_one`, which knows which it is).
pub async fn end_session(
    s: UserSession,
    st: web::Data<AppState>,
    id: web::Path<String>,
) -> Result<HttpResponse, ServerError> {
    let mut res = HttpResponse::NoContent();
    if session::end_one(&st.store, &s, &id, st.clock.now()).await? == session::Ended::Current {
        res.cookie(session::removal(&st.config));
    }
    Ok(res.finish())
}

/// "Sign out everywhere else" (step-up: a stolen cookie must not end the owner's
/// other sessions).
pub async fn revoke_other_sessions(
    s: FreshSession,
    st: web::Data<AppState>,
) -> Result<HttpResponse, ServerError> {
    let ended = session::end_others(&st.store, &s.0).await?;
    Ok(HttpResponse::Ok().json(json!({ "ended": ended })))
}

// --- the account -----------------------------------------------------------------

pub async fn delete_account(
    s: FreshSession,
    meta: RequestMeta,
    st: web::Data<AppState>,
) -> Result<HttpResponse, ServerError> {
    account::delete(&st.store, s.0.user_id(), &meta.person(s.0.user_id())).await?;
    Ok(HttpResponse::NoContent()
        .cookie(session::removal(&st.config))
        .finish())
}

/// `?from=YYYY-MM-DD&to=YYYY-MM-DD` of a usage report.
#[derive(serde::Deserialize)]
pub struct UsageQuery {
    pub from: Option<String>,
    pub to: Option<String>,
}

/// `GET /api/grants/{id}/usage?from&to`: one of the person's grants, per day.
pub async fn grant_usage(
    s: UserSession,
    st: web::Data<AppState>,
    id: web::Path<GrantId>,
    q: web::Query<UsageQuery>,
) -> Result<HttpResponse, ServerError> {
    let report = crate::services::usage::report(
        &st,
        Some(s.user_id()),
        &id,
        q.from.as_deref(),
        q.to.as_deref(),
    )
    .await?;
    Ok(HttpResponse::Ok().json(report))
}

// --- reports (issue 11, point 2) ---------------------------------------------------

/// `GET /api/usage?from=&to=&group_by=`: the person's own usage (every grant they ever
/// had, removed ones too), JSON or CSV.
pub async fn usage_summary(
    s: UserSession,
    st: web::Data<AppState>,
    req: HttpRequest,
    q: super::reports::SummaryParams,
) -> Result<HttpResponse, ServerError> {
    let summary = crate::services::reports::own(&st, s.user_id(), &q.0).await?;
    Ok(super::reports::respond(&req, &summary))
}

// --- the audit log -----------------------------------------------------------------

/// `GET /api/audit?limit=&cursor=`: the entries that concern the person, newest first.
pub async fn audit(
    s: UserSession,
    st: web::Data<AppState>,
    req: HttpRequest,
    q: web::Query<super::page::PageQuery>,
) -> Result<HttpResponse, ServerError> {
    let page = crate::services::audit::own(&st.store, s.user_id(), &q.parse()?).await?;
    Ok(super::page::respond(&req, page))
}
