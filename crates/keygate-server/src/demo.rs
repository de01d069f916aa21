//! `keygate demo`: serves the demo app (`web/demo/`) on its own origin, next to a
//! running keygate, so "Sign in with OpenAI" can be tried across two origins.

use std::net::{SocketAddr, TcpListener};

use actix_web::dev::Server;
use actix_web::http::header::{CACHE_CONTROL, CONTENT_TYPE};
use actix_web::{App, HttpResponse, HttpServer, web};
use rust_embed::RustEmbed;
use url::Url;

#[derive(RustEmbed)]
#[folder = "../../web/demo/"]
#[exclude = "*.md"]
struct DemoAssets;

struct DemoConfig {
    vault: String,
    csp: String,
}

/// Binds `listen` (port 0 picks one) and returns the server and the bound address.
pub fn build(listen: SocketAddr, vault: &Url) -> std::io::Result<(Server, SocketAddr)> {
    let vault_origin = vault.origin().ascii_serialization();
    let config = web::Data::new(DemoConfig {
        vault: vault.as_str().trim_end_matches('/').to_owned(),
        csp: format!(
            "default-src 'self'; script-src 'self' {vault_origin}; connect-src 'self' {vault_origin}; \
             img-src 'self' data:; frame-ancestors 'none'"
        ),
    });
    let listener = TcpListener::bind(listen)?;
    let addr = listener.local_addr()?;
    let server = HttpServer::new(move || {
        App::new()
            .app_data(config.clone())
            .route("/config.json", web::get().to(config_json))
            .route("/", web::get().to(index))
            .route("/{file:.*}", web::get().to(asset))
    })
    .workers(1)
    .listen(listener)?
    .run();
    Ok((server, addr))
}

async fn config_json(c: web::Data<DemoConfig>) -> HttpResponse {
    HttpResponse::Ok()
        .insert_header((CACHE_CONTROL, "no-store"))
        .json(serde_json::json!({ "vault": c.vault }))
}

async fn index(c: web::Data<DemoConfig>) -> HttpResponse {
    serve(&c, "index.html")
}

async fn asset(c: web::Data<DemoConfig>, path: web::Path<String>) -> HttpResponse {
    serve(&c, &path)
}

fn serve(c: &DemoConfig, path: &str) -> HttpResponse {
    match DemoAssets::get(path) {
        Some(file) => HttpResponse::Ok()
            .insert_header((CONTENT_TYPE, file.metadata.mimetype()))
            .insert_header((CACHE_CONTROL, "no-cache"))
            .insert_header(("content-security-policy", c.csp.as_str()))
            .insert_header(("x-content-type-options", "nosniff"))
            .body(file.data.into_owned()),
        None => HttpResponse::NotFound().body("not found"),
    }
}
