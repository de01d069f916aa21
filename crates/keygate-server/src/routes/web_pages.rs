//! The pages and scripts in `web/`, embedded into the binary.

use actix_web::http::header::{CACHE_CONTROL, CONTENT_TYPE};
use actix_web::{HttpResponse, web};
use keygate_core::openai_error::OpenAiError;
use rust_embed::RustEmbed;

use crate::error::ServerError;

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

fn serve(path: &str) -> Result<HttpResponse, ServerError> {
    let file = Assets::get(path).ok_or_else(|| OpenAiError::not_found("Not found."))?;
    let mut res = HttpResponse::Ok();
    if path.starts_with("sdk/") {
        // The SDK is a public script apps on any origin import.
        res.insert_header(("access-control-allow-origin", "*"));
    }
    Ok(res
        .insert_header((CONTENT_TYPE, file.metadata.mimetype()))
        .insert_header((CACHE_CONTROL, "no-cache"))
        .insert_header(("x-content-type-options", "nosniff"))
        .insert_header((
            "content-security-policy",
            "default-src 'self'; frame-ancestors 'none'",
        ))
        .body(file.data.into_owned()))
}
