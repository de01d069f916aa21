//! Phase 1: who is calling? `Authorization: Bearer kg_...` → an active grant.
//!
//! Every malformed header is a 401 in OpenAI's shape before any lookup: missing,
//! empty, other schemes, several values, non-ASCII bytes, oversized values. The token's
//! checksum is verified before the store is read; the secret hash is compared in
//! constant time before the grant's state is revealed.

use std::sync::Arc;

use actix_web::HttpRequest;
use actix_web::http::header::AUTHORIZATION;
use keygate_core::ids::GrantId;
use keygate_core::time::UnixTime;
use keygate_core::token::{self, SecretHash};
use keygate_store::{GrantRecord, GrantState};

use super::error::ProxyError;
use crate::auth::csrf::request_origin;
use crate::error::ServerError;
use crate::state::AppState;

/// Longest Authorization value worth parsing; ours are ~76 bytes.
const MAX_AUTHORIZATION_LEN: usize = 512;

/// A grant whose token was verified and which may be used now.
#[derive(Debug)]
pub struct AuthenticatedGrant(Arc<GrantRecord>);

impl AuthenticatedGrant {
    pub fn id(&self) -> &GrantId {
        &self.0.id
    }

    pub fn record(&self) -> &GrantRecord {
        &self.0
    }
}

/// Finds the grant the presented token belongs to (format, checksum, constant-time
/// secret check). Says nothing yet about whether it may be used.
///
/// The record comes through the store's grant cache (`Store::grant_cached`), which the
/// store keeps coherent with every grant write; the secret check below and the state,
/// expiry and origin checks of [`usable`] run on every request all the same.
///
/// After a rotation with grace, the replaced secret is accepted while `now <
/// previous_until`. Both hashes are compared, in constant time, on every request (the
/// current one again when there is no old secret), so the time taken does not
/// tell which one matched or whether the grant was rotated.
pub async fn identify(st: &AppState, req: &HttpRequest) -> Result<Arc<GrantRecord>, ServerError> {
    let presented = bearer_token(req)?;
    let parsed = token::parse(presented).map_err(|e| ProxyError::InvalidApiKey(e.to_string()))?;
    let unknown = || ProxyError::InvalidApiKey("the key is not known to this keygate".into());
    let grant = st
        .store
        .grant_cached(&parsed.grant_id)
        .await?
        .ok_or_else(unknown)?;
    let corrupt = || ServerError::Internal(format!("grant {} has a corrupt secret hash", grant.id));
    let stored = SecretHash::from_hex(&grant.secret_hash).ok_or_else(corrupt)?;
    let previous = match grant.previous_secret_hash.as_deref() {
        Some(hex) => Some(SecretHash::from_hex(hex).ok_or_else(corrupt)?),
        None => None,
    };
    // Without an old secret the current one is compared a second time: the same work,
    // its answer ignored.
    let is_current = stored.ct_eq(&parsed.hash);
    let matches_other = previous.unwrap_or(stored).ct_eq(&parsed.hash);
    let is_previous = previous.is_some() & matches_other;
    let in_grace = grant
        .previous_until
        .is_some_and(|until| st.clock.now() < until);
    if is_current | (is_previous & in_grace) {
        Ok(grant)
    } else {
        Err(unknown().into())
    }
}

/// May the identified grant be used now, from here? State, expiry, and the bound
/// origin: a browser request (it has an `Origin`) from another origin is refused.
pub fn usable(
    grant: Arc<GrantRecord>,
    req: &HttpRequest,
    now: UnixTime,
) -> Result<AuthenticatedGrant, ServerError> {
    match grant.state {
        GrantState::Active => {}
        GrantState::Revoked => return Err(ProxyError::RevokedApiKey.into()),
        GrantState::Disabled => {
            return Err(ProxyError::InvalidApiKey("the key has been disabled".into()).into());
        }
    }
    if grant.expires_at.is_some_and(|at| at <= now) {
        return Err(ProxyError::ExpiredApiKey.into());
    }
    if let (Some(bound), Some(origin)) = (grant.origin.as_deref(), request_origin(req.headers()))
        && bound != origin
    {
        return Err(ProxyError::OriginNotAllowed(origin.to_owned()).into());
    }
    Ok(AuthenticatedGrant(grant))
}

/// Extracts the token from exactly one well-formed `Authorization: Bearer <token>`.
pub fn bearer_token(req: &HttpRequest) -> Result<&str, ProxyError> {
    let mut values = req.headers().get_all(AUTHORIZATION);
    let value = values.next().ok_or(ProxyError::MissingApiKey)?;
    if values.next().is_some() {
        return Err(invalid("send exactly one Authorization header"));
    }
    if value.len() > MAX_AUTHORIZATION_LEN {
        return Err(invalid("the Authorization header is too long"));
    }
    let value = value
        .to_str()
        .map_err(|_| invalid("the Authorization header is not plain ASCII"))?
        .trim();
    if value.is_empty() {
        return Err(ProxyError::MissingApiKey);
    }
    let (scheme, rest) = value.split_once(' ').unwrap_or((value, ""));
    if !scheme.eq_ignore_ascii_case("bearer") {
        return Err(invalid(
            "use the Bearer scheme: `Authorization: Bearer kg_...`",
        ));
    }
    let token = rest.trim();
    if token.is_empty() {
        return Err(ProxyError::MissingApiKey);
    }
    if token.contains(|c: char| c.is_ascii_whitespace() || c == ',') {
        return Err(invalid("send exactly one key"));
    }
    Ok(token)
}

fn invalid(why: &str) -> ProxyError {
    ProxyError::InvalidApiKey(why.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;
    use actix_web::test::TestRequest;

    fn with(values: &[&[u8]]) -> HttpRequest {
        let mut req = TestRequest::default();
        for v in values {
            req = req.append_header((
                AUTHORIZATION,
                actix_web::http::header::HeaderValue::from_bytes(v).unwrap(),
            ));
        }
        req.to_http_request()
    }

    #[test]
    fn header_shapes() {
        let code = |values: &[&[u8]]| {
            bearer_token(&with(values))
                .err()
                .and_then(|e| ServerError::from(e).to_openai().code)
        };
        assert_eq!(code(&[]), Some("missing_api_key"));
        assert_eq!(code(&[b""]), Some("missing_api_key"));
        assert_eq!(code(&[b"Bearer"]), Some("missing_api_key"));
        assert_eq!(code(&[b"Bearer   "]), Some("missing_api_key"));
        assert_eq!(code(&[b"Basic dXNlcjpwYXNz"]), Some("invalid_api_key"));
        assert_eq!(code(&[b"kg_abc"]), Some("invalid_api_key"));
        assert_eq!(code(&[b"Bearer a b"]), Some("invalid_api_key"));
        assert_eq!(code(&[b"Bearer a,Bearer b"]), Some("invalid_api_key"));
        assert_eq!(code(&[b"Bearer a", b"Bearer b"]), Some("invalid_api_key"));
        assert_eq!(code(&[b"Bearer \xff\xfe"]), Some("invalid_api_key"));
        let long = format!("Bearer {}", "a".repeat(8192));
        assert_eq!(code(&[long.as_bytes()]), Some("invalid_api_key"));
        assert_eq!(bearer_token(&with(&[b"bearer tok"])).unwrap(), "tok");
        assert_eq!(bearer_token(&with(&[b"BEARER tok"])).unwrap(), "tok");
    }
}
