//! Phase 4: the OpenAI key for this one request: the caller's own (`X-OpenAI-Key`,
//! read in `own_key.rs`) when it sent one, else the person's sealed key, opened.
//!
//! The record is looked up by the grant's user id and opened bound to that id (the
//! JWE's `sub`), never to the record's own fields: a whole record copied under another
//! person's id does not open. With the caller's own key the vault is not read at all:
//! a person with no stored key can still be called through.

use keygate_core::ids::{KeyId, UserId};
use keygate_core::secret::OpenAiKey;
use keygate_core::vault::UnsealedKey;

use super::AuthenticatedGrant;
use super::error::ProxyError;
use crate::error::ServerError;
use crate::services::vault;
use crate::state::AppState;

/// The key for this request and, when it came from the vault, what the verdict phase
/// needs to know about its record.
pub struct Unsealed {
    pub key: UnsealedKey,
    /// `None`: the caller's own key, which the verdict phase never marks.
    pub stored: Option<Stored>,
}

/// The vault record a key was opened from.
pub struct Stored {
    pub user_id: UserId,
    pub key_id: KeyId,
    /// Not yet confirmed by OpenAI, or marked rejected: the next answer is worth noting.
    pub unconfirmed: bool,
}

pub fn unseal(
    st: &AppState,
    grant: &AuthenticatedGrant,
    own: Option<OpenAiKey>,
) -> Result<Unsealed, ServerError> {
    if let Some(key) = own {
        return Ok(Unsealed {
            key: UnsealedKey {
                key,
                org: None,
                project: None,
                issued_at: st.clock.now(),
            },
            stored: None,
        });
    }
    let user = &grant.record().user_id;
    let record = st.store.vault(user)?.ok_or(ProxyError::KeyNotEnrolled)?;
    let key = vault::open_record(&st.keyring, user, &record)
        .inspect_err(|_| st.metrics.unsealed(false))?;
    st.metrics.unsealed(true);
    Ok(Unsealed {
        key,
        stored: Some(Stored {
            user_id: user.clone(),
            key_id: record.key_id,
            unconfirmed: record.last_validated_at.is_none() || record.rejected_at.is_some(),
        }),
    })
}
