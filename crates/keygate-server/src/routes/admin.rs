//! `/admin/*`: for operators (and tests) holding `KEYGATE_ADMIN_KEY` or an admin key
//! (`kga_…`) of enough scope.

use actix_web::dev::Payload;
use actix_web::http::Method;
use actix_web::{FromRequest, HttpRequest, HttpResponse, web};
use futures::future::LocalBoxFuture;
use keygate_core::admin_scope::AdminScope;
use keygate_core::ids::{AdminKeyId, GrantId, UserId};
use serde_json::Value;

use super::page::{self, PageQuery};
use super::reports::{GrantsParams, SummaryParams};
use super::wire::{CreateAdminKey, CreateGrant, Name, PutKey, Rotate};
use crate::error::ServerError;
use crate::services::admin_keys::{self, AdminCaller};
use crate::services::audit::{self, RequestMeta};
use crate::services::error::{Limit, ServiceError};
use crate::services::grants::{self, Caller, GrantPatch};
use crate::services::{admin, backup, master_keys, operator_key, reports, users};
use crate::state::AppState;

/// Proof that the request carried an admin key whose scope covers it: the bootstrap
/// `KEYGATE_ADMIN_KEY` (scope `admin`) or a stored `kga_…` key.
pub struct Admin(pub AdminCaller);

impl FromRequest for Admin {
    type Error = ServerError;
    type Future = LocalBoxFuture<'static, Result<Self, ServerError>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        let req = req.clone();
        Box::pin(async move { check_admin(&req).await })
    }
}

async fn check_admin(req: &HttpRequest) -> Result<Admin, ServerError> {
    let st = req
        .app_data::<web::Data<AppState>>()
        .ok_or_else(|| ServerError::Internal("app state missing".into()))?;
    if !st.admin_enabled() {
        return Err(ServiceError::AdminDisabled.into());
    }
    // The key is checked first (in constant time): a right key always passes, from
    // any address, throttled or not, so nobody sharing an address with the operator
    // (behind a proxy without `trusted_proxies`, everyone) can lock them out. Wrong keys
    // (and unknown, revoked or expired stored keys) are throttled per address: once an
    // address has spent its budget its wrong keys get 429 + Retry-After instead of 401
    // until the budget refills (docs/DECISIONS.md).
    let token = crate::proxy::bearer_token(req)?;
    let caller = if st.is_admin_key(token) {
        Some(AdminCaller {
            id: None,
            scope: AdminScope::Admin,
        })
    } else {
        admin_keys::check(&st.store, token, st.clock.now()).await?
    };
    if let Some(caller) = caller {
        // A right key of too small a scope is not a guess: 403, never throttled. The
        // path is the one the router matched (percent-decoded), not the raw request
        // line: `/admin/k%65ys` routes to `/admin/keys` and must need what it needs.
        let needed = AdminScope::needed_for(
            matches!(*req.method(), Method::GET | Method::HEAD),
            req.match_info().as_str(),
        );
        if !caller.scope.covers(needed) {
            return Err(ServiceError::InsufficientScope { needed }.into());
        }
        return Ok(Admin(caller));
    }
    let throttle = &st.throttles.admin_failures;
    let client = st.throttles.client(req.peer_addr(), req.headers());
    let slow_down = |secs| ServiceError::RateLimited {
        limit: Limit::AdminKeys,
        retry_after: secs,
    };
    throttle.gate(client).map_err(slow_down)?;
    tracing::warn!(%client, "wrong admin key");
    throttle.failed(client).map_err(slow_down)?;
    Err(ServiceError::NotAdminKey.into())
}

/// `POST /admin/keys {"name","scope","expires_at"?}`: the key is in this answer only.
pub async fn create_key(
    Admin(a): Admin,
    meta: RequestMeta,
    st: web::Data<AppState>,
    body: web::Json<CreateAdminKey>,
) -> Result<HttpResponse, ServerError> {
    let now = st.clock.now();
    let (name, scope, expires_at) = body.into_inner().parse(now)?;
    let by = meta.admin(&a);
    let new = admin_keys::create(&st.store, &name, scope, expires_at, now, &by).await?;
    Ok(HttpResponse::Created().json(new))
}

/// `GET /admin/keys?limit=&cursor=`: paged, oldest first.
pub async fn list_keys(
    _: Admin,
    st: web::Data<AppState>,
    req: HttpRequest,
    q: web::Query<PageQuery>,
) -> Result<HttpResponse, ServerError> {
    let page = admin_keys::list(&st.store, &q.parse()?).await?;
    Ok(page::respond(&req, page))
}

pub async fn revoke_key(
    Admin(a): Admin,
    meta: RequestMeta,
    st: web::Data<AppState>,
    id: web::Path<AdminKeyId>,
) -> Result<HttpResponse, ServerError> {
    admin_keys::revoke(&st.store, &id, &meta.admin(&a)).await?;
    Ok(HttpResponse::NoContent().finish())
}

/// `GET /admin/backup`: the whole store at one instant, as a `keygate-backup` file
/// (sealed keys stay sealed; the master keyring is not in it).
pub async fn backup(
    Admin(a): Admin,
    meta: RequestMeta,
    st: web::Data<AppState>,
) -> Result<HttpResponse, ServerError> {
    let taken = backup::take(&st, &meta.admin(&a)).await?;
    let day = keygate_core::calendar::day_string(keygate_core::calendar::day_number(
        taken.summary.created_at,
    ));
    Ok(HttpResponse::Ok()
        .content_type("application/octet-stream")
        .insert_header((
            "content-disposition",
            format!("attachment; filename=\"keygate-{day}.kgbackup\""),
        ))
        .insert_header((
            "x-keygate-backup-entries",
            taken.summary.entries().to_string(),
        ))
        .body(taken.bytes))
}

/// `GET /admin/master-keys`: kids, records per kid, what the re-seal has left.
pub async fn master_keys(_: Admin, st: web::Data<AppState>) -> Result<HttpResponse, ServerError> {
    Ok(HttpResponse::Ok().json(master_keys::show(&st).await?))
}

/// `POST /admin/master-keys`: a new active master key; re-sealing runs in the background.
pub async fn rotate_master_key(
    Admin(a): Admin,
    meta: RequestMeta,
    st: web::Data<AppState>,
) -> Result<HttpResponse, ServerError> {
    let view = master_keys::rotate(&st, &meta.admin(&a)).await?;
    Ok(HttpResponse::Created().json(view))
}

/// `DELETE /admin/master-keys/{kid}`: 204, or 409 while records use it / it is active.
pub async fn retire_master_key(
    Admin(a): Admin,
    meta: RequestMeta,
    st: web::Data<AppState>,
    kid: web::Path<String>,
) -> Result<HttpResponse, ServerError> {
    master_keys::retire(&st, &kid, &meta.admin(&a)).await?;
    Ok(HttpResponse::NoContent().finish())
}

/// `PUT /admin/operator-key {"api_key"}`: sealed and flushed; never echoed.
pub async fn put_operator_key(
    Admin(a): Admin,
    meta: RequestMeta,
    st: web::Data<AppState>,
    body: web::Json<PutKey>,
) -> Result<HttpResponse, ServerError> {
    let by = meta.admin(&a);
    operator_key::set(
        &st.store,
        &st.keyring.current(),
        &body.api_key,
        st.clock.now(),
        &by,
    )
    .await?;
    Ok(HttpResponse::NoContent().finish())
}

/// `GET /admin/operator-key`: `{"set","kid","updated_at"}`, never the key.
pub async fn get_operator_key(
    _: Admin,
    st: web::Data<AppState>,
) -> Result<HttpResponse, ServerError> {
    Ok(HttpResponse::Ok().json(operator_key::view(&st.store).await?))
}

/// `DELETE /admin/operator-key`: 204 whether or not one was set.
pub async fn delete_operator_key(
    Admin(a): Admin,
    meta: RequestMeta,
    st: web::Data<AppState>,
) -> Result<HttpResponse, ServerError> {
    operator_key::delete(&st.store, &meta.admin(&a)).await?;
    Ok(HttpResponse::NoContent().finish())
}

pub async fn create_user(
    Admin(a): Admin,
    meta: RequestMeta,
    st: web::Data<AppState>,
    body: web::Json<Name>,
) -> Result<HttpResponse, ServerError> {
    let user = users::create(&st.store, &body.name, st.clock.now(), &meta.admin(&a)).await?;
    Ok(HttpResponse::Created().json(user))
}

pub async fn list_users(
    _: Admin,
    st: web::Data<AppState>,
    req: HttpRequest,
    q: web::Query<PageQuery>,
) -> Result<HttpResponse, ServerError> {
    let page = users::list(&st.store, &q.parse()?).await?;
    Ok(page::respond(&req, page))
}

pub async fn get_user(
    _: Admin,
    st: web::Data<AppState>,
    id: web::Path<UserId>,
) -> Result<HttpResponse, ServerError> {
    Ok(HttpResponse::Ok().json(admin::get_user(&st.store, &id).await?))
}

/// `DELETE /admin/users/{id}`: the person and everything of theirs, as their own
/// `DELETE /api/account` would; an unknown id is 404.
pub async fn delete_user(
    Admin(a): Admin,
    meta: RequestMeta,
    st: web::Data<AppState>,
    id: web::Path<UserId>,
) -> Result<HttpResponse, ServerError> {
    admin::delete_user(&st.store, &id, &meta.admin(&a)).await?;
    Ok(HttpResponse::NoContent().finish())
}

pub async fn put_openai_key(
    Admin(a): Admin,
    meta: RequestMeta,
    st: web::Data<AppState>,
    id: web::Path<UserId>,
    body: web::Json<PutKey>,
) -> Result<HttpResponse, ServerError> {
    let (now, by) = (st.clock.now(), meta.admin(&a));
    admin::put_key(
        &st.store,
        &st.keyring.current(),
        &id,
        &body.api_key,
        now,
        &by,
    )
    .await?;
    Ok(HttpResponse::NoContent().finish())
}

pub async fn create_grant(
    Admin(a): Admin,
    meta: RequestMeta,
    st: web::Data<AppState>,
    id: web::Path<UserId>,
    body: web::Json<CreateGrant>,
) -> Result<HttpResponse, ServerError> {
    let now = st.clock.now();
    let spec = body.into_inner().into_spec(now)?;
    let by = meta.admin(&a);
    let new = admin::create_grant(&st.store, &st.config, &id, spec, now, &by).await?;
    Ok(HttpResponse::Created().json(new.issued(st.config.base_url())))
}

pub async fn list_grants(
    _: Admin,
    st: web::Data<AppState>,
    id: web::Path<UserId>,
) -> Result<HttpResponse, ServerError> {
    Ok(HttpResponse::Ok().json(admin::list_grants(&st.store, &id).await?))
}

pub async fn show_grant(
    _: Admin,
    st: web::Data<AppState>,
    id: web::Path<GrantId>,
) -> Result<HttpResponse, ServerError> {
    Ok(HttpResponse::Ok().json(grants::show(&st.store, &id, None).await?))
}

/// An operator's change: not held to the plan; may move the grant to another plan.
pub async fn patch_grant(
    Admin(a): Admin,
    meta: RequestMeta,
    st: web::Data<AppState>,
    id: web::Path<GrantId>,
    body: web::Json<Value>,
) -> Result<HttpResponse, ServerError> {
    let patch = GrantPatch::parse(&body, st.clock.now())?;
    let view = grants::patch(
        &st.store,
        &st.config,
        &id,
        None,
        patch,
        Caller::Operator,
        true,
        &meta.admin(&a),
    )
    .await?;
    Ok(HttpResponse::Ok().json(view))
}

pub async fn rotate_grant(
    Admin(a): Admin,
    meta: RequestMeta,
    st: web::Data<AppState>,
    id: web::Path<GrantId>,
    body: web::Json<Rotate>,
) -> Result<HttpResponse, ServerError> {
    let grace = body.grace()?;
    let (now, by) = (st.clock.now(), meta.admin(&a));
    let new = grants::rotate(&st.store, &id, None, grace, now, &by).await?;
    Ok(HttpResponse::Ok().json(new.issued(st.config.base_url())))
}

pub async fn disable_grant(
    Admin(a): Admin,
    meta: RequestMeta,
    st: web::Data<AppState>,
    id: web::Path<GrantId>,
) -> Result<HttpResponse, ServerError> {
    let view = grants::set_enabled(&st.store, &id, None, false, &meta.admin(&a)).await?;
    Ok(HttpResponse::Ok().json(view))
}

pub async fn enable_grant(
    Admin(a): Admin,
    meta: RequestMeta,
    st: web::Data<AppState>,
    id: web::Path<GrantId>,
) -> Result<HttpResponse, ServerError> {
    let view = grants::set_enabled(&st.store, &id, None, true, &meta.admin(&a)).await?;
    Ok(HttpResponse::Ok().json(view))
}

/// Revokes an active or disabled grant; removes an already revoked one.
pub async fn delete_grant(
    Admin(a): Admin,
    meta: RequestMeta,
    st: web::Data<AppState>,
    id: web::Path<GrantId>,
) -> Result<HttpResponse, ServerError> {
    grants::delete(&st.store, &id, None, st.clock.now(), &meta.admin(&a)).await?;
    Ok(HttpResponse::NoContent().finish())
}

/// `GET /admin/grants/{id}/usage?from&to`: any grant's per-day usage.
pub async fn grant_usage(
    _: Admin,
    st: web::Data<AppState>,
    id: web::Path<GrantId>,
    q: web::Query<crate::routes::api::UsageQuery>,
) -> Result<HttpResponse, ServerError> {
    let report =
        crate::services::usage::report(&st, None, &id, q.from.as_deref(), q.to.as_deref()).await?;
    Ok(HttpResponse::Ok().json(report))
}

// --- reports: every grant, filtered; usage summaries (issue 11, point 2) ----------

/// `GET /admin/grants?user=&state=&origin=&limit=&cursor=`: paged, in id order.
pub async fn list_all_grants(
    _: Admin,
    st: web::Data<AppState>,
    req: HttpRequest,
    q: web::Query<GrantsParams>,
) -> Result<HttpResponse, ServerError> {
    let (filter, page) = (q.filter().parse()?, q.page().parse()?);
    let page = reports::grants_page(&st.store, &filter, &page).await?;
    Ok(page::respond(&req, page))
}

/// `GET /admin/usage?from=&to=&group_by=`: everyone's usage, JSON or CSV.
pub async fn usage_summary(
    _: Admin,
    st: web::Data<AppState>,
    req: HttpRequest,
    q: SummaryParams,
) -> Result<HttpResponse, ServerError> {
    let summary = reports::everyone(&st, &q.0).await?;
    Ok(super::reports::respond(&req, &summary))
}
/// `GET /admin/audit?user=&action=&from=&to=&limit=&cursor=`: the audit log, newest first.
#[derive(serde::Deserialize)]
pub struct AuditQuery {
    user: Option<String>,
    action: Option<String>,
    from: Option<String>,
    to: Option<String>,
}

pub async fn audit_log(
    _: Admin,
    st: web::Data<AppState>,
    req: HttpRequest,
    q: web::Query<AuditQuery>,
    p: web::Query<PageQuery>,
) -> Result<HttpResponse, ServerError> {
    let (user, action) = (q.user.as_deref(), q.action.as_deref());
    let filter = audit::filter(user, action, q.from.as_deref(), q.to.as_deref())?;
    let page = audit::list(&st.store, &filter, &p.parse()?).await?;
    Ok(page::respond(&req, page))
}
