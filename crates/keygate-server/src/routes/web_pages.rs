//! The pages and scripts in `web/`, embedded into the binary.

use actix_web::http::header::{
    CACHE_CONTROL, CONTENT_SECURITY_POLICY, CONTENT_TYPE, HeaderValue,
    REFERRER_POLICY as REFERRER_POLICY_HEADER,
};
use actix_web::{HttpResponse, web};
use rust_embed::RustEmbed;

use crate::error::ServerError;
use crate::services::error::{Missing, ServiceError};

#[derive(RustEmbed)]
#[folder = "../../web/"]
#[exclude = "*.md"]
#[exclude = "node_modules/*"]
#[exclude = "demo/*"]
struct Assets;

pub async fn index() -> Result<HttpResponse, ServerError> {
    serve("index.html")
}

pub async fn login() -> Result<HttpResponse, ServerError> {
    serve("login.html")
}

pub async fn dashboard() -> Result<HttpResponse, ServerError> {
    serve("dashboard.html")
}

pub async fn asset(path: web::Path<String>) -> Result<HttpResponse, ServerError> {
    serve(&path)
}

pub fn serve_page(path: &str) -> Result<HttpResponse, ServerError> {
    serve(path)
}

/// The policy every page runs under: its own scripts and styles only, never framed, and
/// forms post only to keygate.
pub const PAGE_CSP: &str = "default-src 'self'; frame-ancestors 'none'; form-action 'self'";

/// Pages never tell another site where the person was (URLs can carry connect
/// parameters).
pub const REFERRER_POLICY: &str = "no-referrer";

/// A page whose form post is answered with a redirect to `redirect_origin` (the
/// connect page in redirect mode): browsers apply `form-action` to that redirect too,
/// so the app's exact origin is allowed besides keygate's own.
pub fn serve_page_redirecting_to(
    path: &str,
    redirect_origin: &str,
) -> Result<HttpResponse, ServerError> {
    let mut res = serve(path)?;
    // An origin is `scheme://host[:port]`; anything else is not put into the policy.
    let plain = redirect_origin
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b".-:/[]".contains(&b));
    if plain && let Ok(v) = HeaderValue::from_str(&format!("{PAGE_CSP} {redirect_origin}")) {
        res.headers_mut().insert(CONTENT_SECURITY_POLICY, v);
    }
    Ok(res)
}

fn serve(path: &str) -> Result<HttpResponse, ServerError> {
    let file = Assets::get(path).ok_or(ServiceError::NotFound(Missing::Page))?;
    let mut res = HttpResponse::Ok();
    if path.starts_with("sdk/") {
        // The SDK is a public script apps on any origin import.
        res.insert_header(("access-control-allow-origin", "*"));
    }
    Ok(res
        .insert_header((CONTENT_TYPE, file.metadata.mimetype()))
        .insert_header((CACHE_CONTROL, "no-cache"))
        .insert_header(("x-content-type-options", "nosniff"))
        .insert_header((CONTENT_SECURITY_POLICY, PAGE_CSP))
        .insert_header((REFERRER_POLICY_HEADER, REFERRER_POLICY))
        .body(file.data.into_owned()))
}
