//! Phase 4: open the person's sealed OpenAI key for this one request.
//!
//! The record is looked up by the grant's user id and opened bound to that id (the
//! JWE's `sub`), never to the record's own fields: a whole record copied under another
//! person's id does not open.

use keygate_core::ids::{KeyId, UserId};
use keygate_core::vault::UnsealedKey;

use super::AuthenticatedGrant;
use super::error::ProxyError;
use crate::error::ServerError;
use crate::services::vault;
use crate::state::AppState;

/// The opened key and what the verdict phase needs to know about its record.
pub struct Unsealed {
    pub key: UnsealedKey,
    pub user_id: UserId,
    pub key_id: KeyId,
    /// Not yet confirmed by OpenAI, or marked rejected: the next answer is worth noting.
    pub unconfirmed: bool,
}

pub fn unseal(st: &AppState, grant: &AuthenticatedGrant) -> Result<Unsealed, ServerError> {
    let user = &grant.record().user_id;
    let record = st.store.vault(user)?.ok_or(ProxyError::KeyNotEnrolled)?;
    let key = vault::open_record(&st.keyring, user, &record)
        .inspect_err(|_| st.metrics.unsealed(false))?;
    st.metrics.unsealed(true);
    Ok(Unsealed {
        key,
        user_id: user.clone(),
        key_id: record.key_id,
        unconfirmed: record.last_validated_at.is_none() || record.rejected_at.is_some(),
    })
}
