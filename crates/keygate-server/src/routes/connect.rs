//! The connect flow's routes: the popup/redirect page, its JSON API, the redirect
//! form posts that answer with a real 302, and the PKCE token endpoint.

use actix_web::http::header::LOCATION;
use actix_web::{HttpRequest, HttpResponse, web};
use keygate_core::ids::GrantId;
use keygate_core::limits::Limits;
use keygate_core::time::UnixTime;
use serde::Deserialize;
use serde_json::Value;

use super::api::started;
use super::wire::Empty;
use crate::auth::UserSession;
use crate::auth::csrf::request_origin;
use crate::auth::passkeys::CONNECT_APPROVE;
use crate::error::ServerError;
use crate::routes::web_pages;
use crate::services::audit::RequestMeta;
use crate::services::connect::{self, Approval, RedirectRequest};
use crate::services::error::{Missing, ServiceError};
use crate::services::grants::{self, Terms};
use crate::state::AppState;

#[derive(Deserialize)]
pub struct ConnectQuery {
    response_type: Option<String>,
    redirect_uri: Option<String>,
    state: Option<String>,
    code_challenge: Option<String>,
    code_challenge_method: Option<String>,
    scopes: Option<String>,
    plan: Option<String>,
    /// What the app asks for, as a JSON object (the page shows it and lets the
    /// person lower it).
    limits: Option<String>,
}

/// `GET /connect`: the popup or redirect page. A redirect-mode request is checked
/// here, before any page is shown; a bad one never redirects anywhere.
pub async fn page(
    req: HttpRequest,
    st: web::Data<AppState>,
    q: web::Query<ConnectQuery>,
) -> Result<HttpResponse, ServerError> {
    let redirect_mode =
        q.response_type.is_some() || q.redirect_uri.is_some() || q.code_challenge.is_some();
    if redirect_mode {
        match connect::parse_redirect_request(
            q.response_type.as_deref(),
            q.redirect_uri.as_deref(),
            q.state.as_deref(),
            q.code_challenge.as_deref(),
            q.code_challenge_method.as_deref(),
        )
        .and_then(|r| connect::parse_scopes_csv(q.scopes.as_deref()).map(|_| r))
        .and_then(|r| asked_terms(&st, q.plan.as_deref(), q.limits.as_deref()).map(|_| r))
        {
            Err(e) => return Ok(error_for(&req, &e)),
            // The approve form is answered with a redirect to the app: CSP form-action
            // must allow its origin.
            Ok(r) => {
                return web_pages::serve_page_redirecting_to(
                    "connect.html",
                    &r.redirect_uri.origin().to_string(),
                );
            }
        }
    }
    web_pages::serve_page("connect.html")
}

#[derive(Deserialize)]
pub struct ExistingQuery {
    origin: String,
}

pub async fn existing(
    s: UserSession,
    st: web::Data<AppState>,
    q: web::Query<ExistingQuery>,
) -> Result<HttpResponse, ServerError> {
    let origin = connect::parse_origin(&q.origin)?;
    Ok(HttpResponse::Ok()
        .json(connect::existing(&st.store, s.user_id(), &origin, st.clock.now()).await?))
}

#[derive(Deserialize)]
pub struct PlanQuery {
    name: Option<String>,
}

/// `GET /api/connect/plan?name=`: a plan's ceiling for the consent page (public: the
/// page shows it before the person signs in).
pub async fn plan(
    st: web::Data<AppState>,
    q: web::Query<PlanQuery>,
) -> Result<HttpResponse, ServerError> {
    Ok(HttpResponse::Ok().json(connect::plan(&st.config, q.name.as_deref())?))
}

pub async fn approve_start(
    s: UserSession,
    st: web::Data<AppState>,
    _: web::Json<Empty>,
) -> Result<HttpResponse, ServerError> {
    Ok(started(
        st.passkeys
            .assertion_start(&st.store, s.signer(), CONNECT_APPROVE)
            .await?,
    ))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApproveFinish {
    ceremony: String,
    credential: Value,
    origin: String,
    #[serde(default)]
    app_name: Option<String>,
    #[serde(default)]
    models: Option<Vec<String>>,
    #[serde(default)]
    plan: Option<Value>,
    #[serde(default)]
    scopes: Option<Vec<String>>,
    #[serde(default)]
    reuse_grant_id: Option<String>,
    /// What the person approved (after lowering what the app asked for).
    #[serde(default)]
    limits: Option<Value>,
    #[serde(default)]
    expires_at: Option<Value>,
}

/// Popup mode: the approval is a passkey assertion; the key goes back to the page.
pub async fn approve_finish(
    s: UserSession,
    meta: RequestMeta,
    st: web::Data<AppState>,
    body: web::Json<ApproveFinish>,
) -> Result<HttpResponse, ServerError> {
    let body = body.into_inner();
    let approval = body.approval(st.clock.now())?;
    let by = meta.person(s.user_id());
    let new = connect::approve(
        &st,
        s.signer(),
        &body.ceremony,
        body.credential,
        approval,
        &by,
    )
    .await?;
    Ok(HttpResponse::Created().json(new.issued(st.config.base_url())))
}

impl ApproveFinish {
    /// What the person approved, read from the popup's body.
    fn approval(&self, now: UnixTime) -> Result<Approval, ServerError> {
        let body = self;
        let origin = connect::parse_origin(&body.origin)?;
        let terms = Terms::parse(
            body.plan.as_ref(),
            body.limits.as_ref(),
            body.expires_at.as_ref(),
            now,
        )?;
        Ok(Approval {
            app_name: connect::parse_app_name(body.app_name.as_deref(), &origin)?,
            origin,
            models: body.models.clone().filter(|m| !m.is_empty()),
            plan: terms.plan,
            limits: terms.limits,
            expires_at: terms.expires_at,
            scopes: body
                .scopes
                .as_deref()
                .map(|s| grants::parse_scopes(Some(s)))
                .transpose()?,
            reuse_grant_id: parse_reuse(body.reuse_grant_id.as_deref())?,
        })
    }
}

#[derive(Deserialize)]
pub struct ApproveForm {
    ceremony: String,
    credential: String,
    redirect_uri: String,
    state: String,
    code_challenge: String,
    code_challenge_method: String,
    #[serde(default)]
    app_name: Option<String>,
    #[serde(default)]
    models: Option<String>,
    #[serde(default)]
    plan: Option<String>,
    /// Comma list, as in the redirect query (`inference,files`).
    #[serde(default)]
    scopes: Option<String>,
    #[serde(default)]
    reuse_grant_id: Option<String>,
    /// The limits approved, as a JSON object; empty = the plan's.
    #[serde(default)]
    limits: Option<String>,
    /// RFC 3339; empty = never.
    #[serde(default)]
    expires_at: Option<String>,
}

impl ApproveForm {
    /// The redirect request the form repeats, and what the person approved.
    fn parse(&self, now: UnixTime) -> Result<(RedirectRequest, Approval), ServerError> {
        let request = connect::parse_redirect_request(
            Some("code"),
            Some(&self.redirect_uri),
            Some(&self.state),
            Some(&self.code_challenge),
            Some(&self.code_challenge_method),
        )?;
        let origin = request.redirect_uri.origin().clone();
        let approval = Approval {
            app_name: connect::parse_app_name(self.app_name.as_deref(), &origin)?,
            origin,
            models: connect::parse_models_csv(self.models.as_deref()),
            plan: clean_plan(self.plan.as_deref())?,
            limits: limits_text(self.limits.as_deref())?,
            expires_at: match self.expires_at.as_deref().map(str::trim) {
                None | Some("") => None,
                Some(t) => grants::parse_expires_at(&Value::String(t.to_owned()), now)?,
            },
            scopes: connect::parse_scopes_csv(self.scopes.as_deref())?,
            reuse_grant_id: parse_reuse(self.reuse_grant_id.as_deref())?,
        };
        Ok((request, approval))
    }
}

/// Redirect mode, a top-level form post: check everything, then `302 redirect_uri?code&state`.
pub async fn approve_form(
    req: HttpRequest,
    s: Option<UserSession>,
    meta: RequestMeta,
    st: web::Data<AppState>,
    form: web::Form<ApproveForm>,
) -> HttpResponse {
    let result = async {
        let s = s.ok_or(ServiceError::NotSignedIn)?;
        let f = form.into_inner();
        let (request, approval) = f.parse(st.clock.now())?;
        let credential: Value = serde_json::from_str(&f.credential)
            .map_err(|_| ServiceError::invalid("credential", "credential is not JSON"))?;
        let by = meta.person(s.user_id());
        connect::approve_redirect(
            &st,
            s.signer(),
            &f.ceremony,
            credential,
            &request,
            approval,
            &by,
        )
        .await
    }
    .await;
    match result {
        Ok(location) => HttpResponse::Found()
            .insert_header((LOCATION, location))
            .finish(),
        Err(e) => error_for(&req, &e),
    }
}

#[derive(Deserialize)]
pub struct DenyForm {
    redirect_uri: String,
    state: String,
    #[serde(default)]
    app_name: Option<String>,
}

/// Redirect mode: the person said no. `302 redirect_uri?error=access_denied&state`.
/// Recorded in the audit log when a person is signed in (an anonymous "no" concerns
/// nobody, and must not let anyone write entries).
pub async fn deny_form(
    req: HttpRequest,
    s: Option<UserSession>,
    meta: RequestMeta,
    st: web::Data<AppState>,
    form: web::Form<DenyForm>,
) -> HttpResponse {
    let result = async {
        let uri = keygate_core::origin::RedirectUri::parse(&form.redirect_uri)
            .map_err(|e| ServiceError::invalid("redirect_uri", e.to_string()))?;
        if let Some(s) = &s {
            let by = meta.person(s.user_id());
            let app_name = form.app_name.as_deref();
            connect::deny(&st, s.user_id(), uri.origin(), app_name, "redirect", &by).await?;
        }
        Ok::<_, ServerError>(uri.with_query(&[("error", "access_denied"), ("state", &form.state)]))
    }
    .await;
    match result {
        Ok(location) => HttpResponse::Found()
            .insert_header((LOCATION, location))
            .finish(),
        Err(e) => error_for(&req, &e),
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DenyBody {
    origin: String,
    #[serde(default)]
    app_name: Option<String>,
}

/// `POST /api/connect/deny {"origin","app_name"?}` → 204: the popup's "Deny", for the
/// audit log (the popup tells the app itself).
pub async fn deny(
    s: UserSession,
    meta: RequestMeta,
    st: web::Data<AppState>,
    body: web::Json<DenyBody>,
) -> Result<HttpResponse, ServerError> {
    let origin = connect::parse_origin(&body.origin)?;
    let by = meta.person(s.user_id());
    let app_name = body.app_name.as_deref();
    connect::deny(&st, s.user_id(), &origin, app_name, "popup", &by).await?;
    Ok(HttpResponse::NoContent().finish())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TokenRequest {
    code: String,
    code_verifier: String,
    #[serde(default)]
    redirect_uri: Option<String>,
}

/// `POST /api/connect/token`: code + verifier → key. Called by app servers (no cookie)
/// or by the app's own page, which then gets CORS for exactly its origin.
pub async fn token(
    req: HttpRequest,
    meta: RequestMeta,
    st: web::Data<AppState>,
    body: web::Json<TokenRequest>,
) -> Result<HttpResponse, ServerError> {
    let (new, origin) = connect::exchange(
        &st.store,
        &st.config,
        &body.code,
        &body.code_verifier,
        body.redirect_uri.as_deref(),
        st.clock.now(),
        &meta,
    )
    .await?;
    tracing::info!(grant_id = %new.grant.id, "connect code exchanged");
    let mut res = HttpResponse::Ok();
    if request_origin(req.headers()) == Some(origin.as_str()) {
        res.insert_header(("access-control-allow-origin", origin.as_str()));
        res.insert_header(("vary", "Origin"));
    }
    res.insert_header(("cache-control", "no-store"));
    Ok(res.json(new.exchanged(st.config.base_url())))
}

/// CORS preflight for the token endpoint (a browser app exchanging its own code).
pub async fn token_preflight(req: HttpRequest) -> HttpResponse {
    let mut res = HttpResponse::NoContent();
    if let Some(o) = request_origin(req.headers()) {
        res.insert_header(("access-control-allow-origin", o))
            .insert_header(("access-control-allow-methods", "POST"))
            .insert_header(("access-control-allow-headers", "content-type"))
            .insert_header(("access-control-max-age", "600"))
            .insert_header(("vary", "Origin"));
    }
    res.finish()
}

fn clean_plan(raw: Option<&str>) -> Result<Option<String>, ServerError> {
    grants::parse_plan(&raw.map_or(Value::Null, |p| Value::String(p.to_owned())))
}

/// `limits` from a query string or form: a JSON object as text; empty = none.
fn limits_text(raw: Option<&str>) -> Result<Option<Limits>, ServerError> {
    match raw.map(str::trim).filter(|s| !s.is_empty()) {
        None => Ok(None),
        Some(text) => {
            let v: Value = serde_json::from_str(text)
                .map_err(|_| ServiceError::invalid("limits", "`limits` must be a JSON object"))?;
            grants::parse_limits(&v).map(Some)
        }
    }
}

/// What a redirect-mode request asks for (a plan, limits): refused on the page, before
/// the person is asked, when the plan does not exist or the limits exceed it.
fn asked_terms(st: &AppState, plan: Option<&str>, limits: Option<&str>) -> Result<(), ServerError> {
    let plan = clean_plan(plan)?;
    let limits = limits_text(limits)?;
    grants::settle(&st.config, grants::Caller::Person, plan, limits).map(|_| ())
}

fn parse_reuse(raw: Option<&str>) -> Result<Option<GrantId>, ServerError> {
    match raw.map(str::trim).filter(|s| !s.is_empty()) {
        None => Ok(None),
        Some(id) => GrantId::parse(id)
            .map(Some)
            .map_err(|_| ServiceError::NotFound(Missing::Connection).into()),
    }
}

/// Browsers get a readable page; API clients the OpenAI-shaped JSON. Same status.
fn error_for(req: &HttpRequest, e: &ServerError) -> HttpResponse {
    crate::error::respond(req.headers(), e)
}
