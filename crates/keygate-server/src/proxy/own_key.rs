//! Phase 1b: the caller's own OpenAI key (`X-OpenAI-Key`, "bring your own key"), read
//! right after authentication and before anything else looks at the request.
//!
//! A caller with a valid grant may send its own OpenAI key for one request: that key is
//! used instead of the vault's (the vault is not opened), limits still apply, and the
//! key is never stored or logged: it lives in an [`OpenAiKey`] (no `Debug` of the
//! value) until the upstream request is built, and the header itself is never
//! forwarded (`headers::NEVER_UPSTREAM`). The grant's plan decides whether such a key
//! is required (`requires_own_key`) or refused (`allow_own_key = false`).

use actix_web::HttpRequest;
use keygate_core::limits::{OwnKey, Plan};
use keygate_core::secret::OpenAiKey;

use super::error::ProxyError;

/// The header name (lowercase, as actix stores it).
pub const HEADER: &str = "x-openai-key";

/// The caller's own key, if it sent one and its plan lets it; `Ok(None)` when none was
/// sent and none is required. `plan` is the grant's plan (`None`: no plan, or a plan
/// no longer configured: own keys allowed, not required).
pub fn read(req: &HttpRequest, plan: Option<&Plan>) -> Result<Option<OpenAiKey>, ProxyError> {
    let key = parse(req.headers().get_all(HEADER).map(|v| v.as_bytes()))?;
    match (key, plan.map_or(OwnKey::Allowed, Plan::own_key)) {
        (Some(_), OwnKey::Forbidden) => Err(ProxyError::OwnKeyNotAllowed),
        (None, OwnKey::Required) => Err(ProxyError::OwnKeyRequired),
        (key, _) => Ok(key),
    }
}

/// The header's values as a usable key: at most one value, ASCII, a key
/// [`OpenAiKey::parse`] accepts (no spaces, at most 512 characters), not an admin key.
fn parse<'a>(mut values: impl Iterator<Item = &'a [u8]>) -> Result<Option<OpenAiKey>, ProxyError> {
    let Some(first) = values.next() else {
        return Ok(None);
    };
    if values.next().is_some() {
        return Err(ProxyError::OwnKeyInvalid("it was sent more than once"));
    }
    let text = std::str::from_utf8(first)
        .ok()
        .filter(|t| t.is_ascii())
        .ok_or(ProxyError::OwnKeyInvalid(
            "it may contain only printable ASCII characters",
        ))?;
    let key = OpenAiKey::parse(text).map_err(|e| {
        ProxyError::OwnKeyInvalid(match e {
            keygate_core::CoreError::InvalidOpenAiKey(why) => why,
            _ => "it is not an OpenAI key",
        })
    })?;
    if key.is_admin_key() {
        return Err(ProxyError::OwnKeyAdmin);
    }
    Ok(Some(key))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parsed(values: &[&[u8]]) -> Result<Option<String>, ProxyError> {
        parse(values.iter().copied()).map(|k| k.map(|k| k.expose_secret().to_owned()))
    }

    #[test]
    fn one_printable_ascii_non_admin_key_or_nothing() {
        assert_eq!(parsed(&[]), Ok(None));
        assert_eq!(parsed(&[b" sk-proj-abc "]), Ok(Some("sk-proj-abc".into())));
        assert_eq!(parsed(&[b"sk-admin-abc"]), Err(ProxyError::OwnKeyAdmin));
        for bad in [
            &[b"sk-a".as_slice(), b"sk-b".as_slice()][..],
            &["sk-\u{e9}".as_bytes()],
            &[b"sk-\xff"],
            &[b""],
            &[b"sk with space"],
            &["a".repeat(513).as_bytes()],
        ] {
            assert!(
                matches!(parsed(bad), Err(ProxyError::OwnKeyInvalid(_))),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn the_plan_requires_or_forbids() {
        let req = |key: Option<&str>| {
            let mut r = actix_web::test::TestRequest::default();
            if let Some(k) = key {
                r = r.insert_header((HEADER, k));
            }
            r.to_http_request()
        };
        let required = Plan {
            requires_own_key: true,
            ..Plan::default()
        };
        let forbidden = Plan {
            allow_own_key: Some(false),
            ..Plan::default()
        };
        let plain = Plan::default();
        assert_eq!(
            read(&req(None), Some(&required)).err(),
            Some(ProxyError::OwnKeyRequired)
        );
        assert!(matches!(
            read(&req(Some("sk-x")), Some(&required)),
            Ok(Some(_))
        ));
        assert_eq!(
            read(&req(Some("sk-x")), Some(&forbidden)).err(),
            Some(ProxyError::OwnKeyNotAllowed)
        );
        assert!(matches!(read(&req(None), Some(&forbidden)), Ok(None)));
        assert!(matches!(
            read(&req(Some("sk-x")), Some(&plain)),
            Ok(Some(_))
        ));
        assert!(matches!(read(&req(Some("sk-x")), None), Ok(Some(_))));
        assert!(matches!(read(&req(None), None), Ok(None)));
    }
}
