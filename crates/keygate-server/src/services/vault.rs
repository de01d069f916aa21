use keygate_core::ids::{KeyId, UserId};
use keygate_core::keyring::Keyring;
use keygate_core::openai_error::OpenAiError;
use keygate_core::secret::OpenAiKey;
use keygate_core::time;
use keygate_core::vault::{self, Binding};
use keygate_store::{Store, VaultRecord};

use crate::error::ServerError;

/// Seals and stores (or replaces) a person's OpenAI key; durable before returning.
pub async fn put_key(
    store: &Store,
    keyring: &Keyring,
    user: &UserId,
    raw_key: &str,
) -> Result<VaultRecord, ServerError> {
    let key = OpenAiKey::parse(raw_key).map_err(|e| {
        OpenAiError::invalid_request(format!("The OpenAI key was not accepted: {e}"))
            .with_param("api_key")
    })?;
    let now = time::now();
    let binding = Binding {
        user_id: user.clone(),
        key_id: KeyId::generate(),
    };
    let sealed = vault::seal(keyring, &binding, &key, None, None, now)
        .map_err(|e| ServerError::Internal(e.to_string()))?;
    let record = VaultRecord {
        user_id: binding.user_id,
        key_id: binding.key_id,
        kid: sealed.kid().to_owned(),
        sealed: sealed.as_compact().to_owned(),
        last4: key.last4(),
        created_at: now,
        last_validated_at: None,
    };
    store.put_vault(&record)?;
    store.flush().await?;
    tracing::info!(user_id = %user, kid = %record.kid, "OpenAI key sealed and stored");
    Ok(record)
}
