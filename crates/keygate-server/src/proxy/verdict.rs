//! Phase 5b: what OpenAI's answer says about the person's key.
//!
//! Only the person's key authenticates keygate to the upstream, so an upstream 401 or
//! 403 is about that key (or what it may do), never about the app's keygate key. The
//! app gets 424 `owner_key_rejected` (`x-should-retry: false`) instead of an answer
//! that looks like its own key is bad. A 401 — OpenAI does not accept the key at all —
//! also marks the vault record rejected so the person sees it on the dashboard; a 403
//! (no permission for this model or endpoint, or a region OpenAI does not serve) does
//! not, since the key still works for other calls. A 2xx answer confirms an unverified
//! or rejected key; only then is the record written (rarely: off the hot path).

use super::error::ProxyError;
use super::unseal::Unsealed;
use crate::error::ServerError;
use crate::services::vault;
use crate::state::AppState;

/// What an upstream status says about the key that made the call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// 401: the key is not accepted (invalid, revoked, deactivated).
    Refused,
    /// 403: the key may not do this.
    Forbidden,
    /// 2xx: the key works.
    Accepted,
    /// Anything else says nothing about the key.
    Silent,
}

pub fn verdict(status: u16) -> Verdict {
    match status {
        401 => Verdict::Refused,
        403 => Verdict::Forbidden,
        200..=299 => Verdict::Accepted,
        _ => Verdict::Silent,
    }
}

/// Passes the upstream answer on, or turns a refusal of the person's key into 424.
pub fn judge(
    st: &AppState,
    key: &Unsealed,
    upstream: reqwest::Response,
) -> Result<reqwest::Response, ServerError> {
    match verdict(upstream.status().as_u16()) {
        Verdict::Refused => {
            drop(upstream);
            if let Err(e) =
                vault::mark_rejected(&st.store, &key.user_id, &key.key_id, st.clock.now())
            {
                tracing::error!(error = %e, "could not mark the stored key rejected");
            }
            Err(ProxyError::OwnerKeyRejected.into())
        }
        Verdict::Forbidden => {
            drop(upstream);
            tracing::info!(user_id = %key.user_id, "OpenAI answered 403 to the stored key");
            Err(ProxyError::OwnerKeyRejected.into())
        }
        Verdict::Accepted if key.unconfirmed => {
            if let Err(e) =
                vault::mark_validated(&st.store, &key.user_id, &key.key_id, st.clock.now())
            {
                tracing::error!(error = %e, "could not record that the stored key works");
            }
            Ok(upstream)
        }
        Verdict::Accepted | Verdict::Silent => Ok(upstream),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses() {
        assert_eq!(verdict(401), Verdict::Refused);
        assert_eq!(verdict(403), Verdict::Forbidden);
        assert_eq!(verdict(200), Verdict::Accepted);
        assert_eq!(verdict(204), Verdict::Accepted);
        for s in [400, 404, 409, 413, 429, 500, 502, 503] {
            assert_eq!(verdict(s), Verdict::Silent, "{s}");
        }
    }
}
