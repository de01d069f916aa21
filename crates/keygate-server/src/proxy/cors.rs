//! CORS for browsers calling the proxy directly. Preflights carry no credentials, so
//! they are answered for any origin; the actual answer is readable only by the grant's
//! bound origin (and a request from another origin is refused before that, in
//! `authenticate::usable`). Grants without an origin (admin, dashboard) get no CORS.

use actix_web::http::Method;
use actix_web::http::header::{HeaderName, HeaderValue};
use actix_web::{HttpRequest, HttpResponse};

use crate::auth::csrf::request_origin;

/// Response headers a browser app may read (request ids, rate-limit hints).
const EXPOSE: &str = "x-request-id, x-upstream-request-id, openai-processing-ms, openai-version, \
                      retry-after, retry-after-ms, x-should-retry, x-ratelimit-limit-requests, \
                      x-ratelimit-limit-tokens, x-ratelimit-remaining-requests, \
                      x-ratelimit-remaining-tokens, x-ratelimit-reset-requests, \
                      x-ratelimit-reset-tokens";

pub fn is_preflight(req: &HttpRequest) -> bool {
    req.method() == Method::OPTIONS && req.headers().contains_key("access-control-request-method")
}

pub fn preflight(req: &HttpRequest) -> HttpResponse {
    let mut res = HttpResponse::NoContent();
    let Some(origin) = request_origin(req.headers()) else {
        return res.finish();
    };
    // Echo the requested headers: the official SDK sends its own `x-stainless-*` set,
    // which changes between versions. Only header *names* pass here, never values.
    let requested = req
        .headers()
        .get("access-control-request-headers")
        .and_then(|v| v.to_str().ok())
        .filter(|h| {
            h.len() <= 2048
                && h.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"-_, ".contains(&b))
        })
        .unwrap_or("authorization, content-type");
    res.insert_header(("access-control-allow-origin", origin))
        .insert_header((
            "access-control-allow-methods",
            "GET, POST, PUT, PATCH, DELETE, OPTIONS",
        ))
        .insert_header(("access-control-allow-headers", requested))
        .insert_header(("access-control-max-age", "600"))
        .insert_header(("vary", "Origin, Access-Control-Request-Headers"));
    res.finish()
}

/// The origin to allow on an actual response: the request's, if it is the grant's.
pub fn allowed_origin(req: &HttpRequest, bound: Option<&str>) -> Option<HeaderValue> {
    let origin = request_origin(req.headers())?;
    (Some(origin) == bound)
        .then(|| HeaderValue::from_str(origin).ok())
        .flatten()
}

pub fn decorate(res: &mut HttpResponse, allow: Option<HeaderValue>) {
    let headers = res.headers_mut();
    headers.append(
        HeaderName::from_static("vary"),
        HeaderValue::from_static("Origin"),
    );
    if let Some(origin) = allow {
        headers.insert(
            HeaderName::from_static("access-control-allow-origin"),
            origin,
        );
        headers.insert(
            HeaderName::from_static("access-control-expose-headers"),
            HeaderValue::from_static(EXPOSE),
        );
    }
}
