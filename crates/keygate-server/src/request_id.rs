//! `x-request-id` on every response, and a tracing span per request carrying it; and
//! the request's audit context (where it came from, its id) for the routes.

use std::future::{Ready, ready};
use std::time::Instant;

use actix_web::body::MessageBody;
use actix_web::dev::{Payload, ServiceRequest, ServiceResponse};
use actix_web::http::header::{HeaderName, HeaderValue};
use actix_web::middleware::Next;
use actix_web::{HttpMessage, HttpRequest, web};
use rand::RngCore;
use tracing::Instrument;

use crate::error::ServerError;
use crate::services::audit::RequestMeta;
use crate::state::AppState;

pub const HEADER: &str = "x-request-id";

/// The id of the request being served, in request extensions.
#[derive(Clone, Debug)]
pub struct RequestId(pub String);

impl RequestId {
    /// `req_` + 24 lowercase hex digits (96 random bits), in one allocation: this runs
    /// on every request.
    fn new() -> Self {
        const HEX: &[u8; 16] = b"0123456789abcdef";
        let mut b = [0u8; 12];
        rand::rng().fill_bytes(&mut b);
        let mut s = String::with_capacity(4 + 2 * b.len());
        s.push_str("req_");
        for x in b {
            s.push(char::from(HEX[usize::from(x >> 4)]));
            s.push(char::from(HEX[usize::from(x & 0x0f)]));
        }
        Self(s)
    }

    /// An inbound id is kept only if it is short and plain, so it is safe in logs.
    fn from_inbound(v: &HeaderValue) -> Option<Self> {
        let s = v.to_str().ok()?;
        let ok = !s.is_empty()
            && s.len() <= 128
            && s.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"-_.:".contains(&b));
        ok.then(|| Self(s.to_owned()))
    }
}

/// The request's audit context (`services::audit::RequestMeta`): the client's address
/// (trusted-proxy aware, `Throttles::address`), this request's id, the server's clock.
impl actix_web::FromRequest for RequestMeta {
    type Error = ServerError;
    type Future = Ready<Result<Self, ServerError>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        ready(meta_of(req))
    }
}

fn meta_of(req: &HttpRequest) -> Result<RequestMeta, ServerError> {
    let st = req
        .app_data::<web::Data<AppState>>()
        .ok_or_else(|| ServerError::Internal("app state missing".into()))?;
    Ok(RequestMeta {
        source_ip: st.throttles.address(req.peer_addr(), req.headers()),
        request_id: req.extensions().get::<RequestId>().map(|id| id.0.clone()),
        clock: st.clock.clone(),
    })
}

pub async fn middleware(
    req: ServiceRequest,
    next: Next<impl MessageBody>,
) -> Result<ServiceResponse<impl MessageBody>, actix_web::Error> {
    let id = req
        .headers()
        .get(HEADER)
        .and_then(RequestId::from_inbound)
        .unwrap_or_else(RequestId::new);
    req.extensions_mut().insert(id.clone());
    let span = tracing::info_span!(
        "request",
        request_id = %id.0,
        method = %req.method(),
        path = %req.path(),
    );
    let start = Instant::now();
    let mut res = next.call(req).instrument(span.clone()).await?;
    if let Ok(v) = HeaderValue::from_str(&id.0) {
        res.headers_mut().insert(HeaderName::from_static(HEADER), v);
    }
    let status = res.status().as_u16();
    span.in_scope(|| {
        tracing::info!(
            status,
            elapsed_us = start.elapsed().as_micros() as u64,
            "response headers sent"
        )
    });
    Ok(res)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_ids_are_req_and_24_lowercase_hex_digits_and_differ() {
        let (a, b) = (RequestId::new().0, RequestId::new().0);
        for id in [&a, &b] {
            let hex = id.strip_prefix("req_").unwrap();
            assert_eq!(hex.len(), 24, "{id}");
            assert!(
                hex.bytes().all(|c| matches!(c, b'0'..=b'9' | b'a'..=b'f')),
                "{id}"
            );
            assert!(RequestId::from_inbound(&HeaderValue::from_str(id).unwrap()).is_some());
        }
        assert_ne!(a, b);
    }
}
