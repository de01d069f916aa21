//! Phase 4: open the person's sealed OpenAI key for this one request.

use keygate_core::openai_error::OpenAiError;
use keygate_core::vault::{self, Binding, SealedKey, UnsealedKey};

use super::AuthenticatedGrant;
use crate::error::ServerError;
use crate::state::AppState;

pub fn unseal(st: &AppState, grant: &AuthenticatedGrant) -> Result<UnsealedKey, ServerError> {
    let user = &grant.record().user_id;
    let record = st
        .store
        .vault(user)?
        .ok_or_else(OpenAiError::key_not_enrolled)?;
    let sealed = SealedKey::from_compact(record.sealed).map_err(ServerError::Vault)?;
    let binding = Binding {
        user_id: record.user_id,
        key_id: record.key_id,
    };
    vault::open(&st.keyring, &sealed, &binding).map_err(|e| {
        tracing::error!(user_id = %user, kid = sealed.kid(), error = %e, "vault record did not open");
        ServerError::Vault(e)
    })
}
