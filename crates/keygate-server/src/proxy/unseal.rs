//! Phase 4: the OpenAI key for this one request, first found of: the caller's own
//! (`X-OpenAI-Key`, read in `own_key.rs`); the person's sealed key, opened; the
//! operator's key, when the grant's plan has `use_operator_key` and one is set. Else 409
//! `key_not_enrolled`.
//!
//! The record is looked up by the grant's user id and opened bound to that id (the
//! JWE's `sub`), never to the record's own fields: a whole record copied under another
//! person's id does not open. With the caller's own key the vault is not read at all:
//! a person with no stored key can still be called through. The operator's record is
//! bound to the operator's own subject, so no person's record opens in its place.

use keygate_core::ids::{KeyId, UserId};
use keygate_core::limits::Plan;
use keygate_core::secret::OpenAiKey;
use keygate_core::vault::UnsealedKey;

use super::AuthenticatedGrant;
use super::error::ProxyError;
use crate::error::ServerError;
use crate::metrics::UnsealSource;
use crate::services::{operator_key, vault};
use crate::state::AppState;

/// The key for this request and where it came from (what the verdict phase may mark).
pub struct Unsealed {
    pub key: UnsealedKey,
    pub source: Source,
}

/// Whose key a request is made with.
pub enum Source {
    /// The caller's own (`X-OpenAI-Key`): OpenAI's answer is about it; nothing is marked.
    Own,
    /// The person's vault record.
    Stored(Stored),
    /// The operator's key, lent by the grant's plan; never marks the person's record.
    Operator,
}

impl Source {
    /// For logs: `own`, `stored` or `operator` (never an id).
    pub fn label(&self) -> &'static str {
        match self {
            Source::Own => "own",
            Source::Stored(_) => "stored",
            Source::Operator => "operator",
        }
    }
}

/// The vault record a key was opened from.
pub struct Stored {
    pub user_id: UserId,
    pub key_id: KeyId,
    /// Not yet confirmed by OpenAI, or marked rejected: the next answer is worth noting.
    pub unconfirmed: bool,
}

/// `plan`: the grant's plan as configured now (`None`: no plan, or one the
/// configuration no longer has: no operator key).
pub async fn unseal(
    st: &AppState,
    grant: &AuthenticatedGrant,
    own: Option<OpenAiKey>,
    plan: Option<&Plan>,
) -> Result<Unsealed, ServerError> {
    if let Some(key) = own {
        return Ok(Unsealed {
            key: UnsealedKey {
                key,
                org: None,
                project: None,
                issued_at: st.clock.now(),
            },
            source: Source::Own,
        });
    }
    let user = &grant.record().user_id;
    // Through the store's cache of sealed records (evicted by every vault write): the
    // JWE itself is opened here, for this request only.
    if let Some(record) = st.store.vault_cached(user).await? {
        let key = vault::open_record(&st.keyring.current(), user, &record)
            .inspect_err(|_| st.metrics.unsealed(UnsealSource::Vault, false))?;
        st.metrics.unsealed(UnsealSource::Vault, true);
        return Ok(Unsealed {
            key,
            source: Source::Stored(Stored {
                user_id: user.clone(),
                key_id: record.key_id.clone(),
                unconfirmed: record.last_validated_at.is_none() || record.rejected_at.is_some(),
            }),
        });
    }
    if plan.is_some_and(|p| p.use_operator_key)
        && let Some(record) = st.store.operator_key().await?
    {
        let key = operator_key::open(&st.keyring.current(), &record)
            .inspect_err(|_| st.metrics.unsealed(UnsealSource::Operator, false))?;
        st.metrics.unsealed(UnsealSource::Operator, true);
        return Ok(Unsealed {
            key,
            source: Source::Operator,
        });
    }
    Err(ProxyError::KeyNotEnrolled.into())
}
