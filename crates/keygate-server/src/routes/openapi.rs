//! `GET /openapi.yaml`: the OpenAPI 3.1 description of every route keygate answers,
//! `docs/openapi.yaml` embedded into the binary, so the description a client fetches is
//! the one this build was tested against (tests/testkit/tests/api/openapi.rs checks the
//! file against the route table both ways).

use std::sync::LazyLock;

use actix_web::http::header::{self, HeaderValue};
use actix_web::{HttpRequest, HttpResponse};
use sha2::{Digest, Sha256};

/// The description, as committed.
pub const SPEC: &str = include_str!("../../../../docs/openapi.yaml");

/// A strong validator for the embedded bytes: clients revalidate with `If-None-Match`.
static ETAG: LazyLock<String> = LazyLock::new(|| {
    let digest = Sha256::digest(SPEC.as_bytes());
    let hex: String = digest.iter().take(16).map(|b| format!("{b:02x}")).collect();
    format!("\"{hex}\"")
});

/// Public and cacheable: it holds no secret and changes only with the binary.
pub async fn serve(req: HttpRequest) -> HttpResponse {
    let etag = ETAG.as_str();
    let fresh = req
        .headers()
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        // Weak comparison (RFC 9110 §13.1.2): `W/"x"` matches `"x"`.
        .is_some_and(|v| {
            v.split(',')
                .map(|t| t.trim().trim_start_matches("W/"))
                .any(|t| t == etag || t == "*")
        });
    let mut res = if fresh {
        HttpResponse::NotModified()
    } else {
        HttpResponse::Ok()
    };
    res.insert_header((header::ETAG, etag))
        .insert_header((header::CACHE_CONTROL, "public, max-age=3600"))
        // Anyone may read it, from any page (API explorers fetch it cross-origin).
        .insert_header((header::ACCESS_CONTROL_ALLOW_ORIGIN, "*"))
        .insert_header((header::X_CONTENT_TYPE_OPTIONS, "nosniff"));
    if fresh {
        return res.finish();
    }
    res.insert_header((
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/yaml"),
    ))
    .body(SPEC)
}
