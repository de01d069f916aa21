use keygate_core::ids::{KeyId, UserId};
use keygate_core::keyring::Keyring;
use keygate_core::openai_error::OpenAiError;
use keygate_core::secret::OpenAiKey;
use keygate_core::time;
use keygate_core::vault::{self, Binding};
use keygate_store::{Store, VaultRecord};

use crate::error::ServerError;
use crate::state::AppState;

/// Seals and stores (or replaces) a person's OpenAI key; durable before returning.
pub async fn put_key(
    store: &Store,
    keyring: &Keyring,
    user: &UserId,
    raw_key: &str,
) -> Result<VaultRecord, ServerError> {
    put_key_validated(store, keyring, user, raw_key, false).await
}

/// Asks the upstream whether it accepts `raw_key` (`GET /models`). A refusal (401/403)
/// is the person's to fix; any other failure (OpenAI down, network) does not block
/// storing the key. Returns whether the key was positively validated.
pub async fn validate_with_upstream(st: &AppState, raw_key: &str) -> Result<bool, ServerError> {
    let key = OpenAiKey::parse(raw_key).map_err(|e| {
        OpenAiError::invalid_request(format!("The OpenAI key was not accepted: {e}"))
            .with_param("api_key")
    })?;
    let url = format!(
        "{}/models",
        st.config.upstream_url.as_str().trim_end_matches('/')
    );
    let mut auth =
        reqwest::header::HeaderValue::try_from(format!("Bearer {}", key.expose_secret())).map_err(
            |_| OpenAiError::invalid_request("The OpenAI key is not valid").with_param("api_key"),
        )?;
    auth.set_sensitive(true);
    let res = st
        .upstream
        .get(url)
        .header(reqwest::header::AUTHORIZATION, auth)
        .timeout(std::time::Duration::from_secs(10))
        .send()
        .await;
    match res {
        Ok(r) if r.status().is_success() => Ok(true),
        Ok(r) if r.status() == 401 || r.status() == 403 => {
            let detail = r
                .bytes()
                .await
                .ok()
                .and_then(|b| serde_json::from_slice::<serde_json::Value>(&b).ok())
                .and_then(|v| v["error"]["code"].as_str().map(str::to_owned))
                .unwrap_or_else(|| "refused".into());
            Err(OpenAiError::key_rejected(format!(
                "OpenAI did not accept this key ({detail}). Check that you copied the whole key and that it is active at platform.openai.com/api-keys."
            ))
            .into())
        }
        Ok(r) => {
            tracing::warn!(
                status = r.status().as_u16(),
                "could not validate an OpenAI key; storing it unvalidated"
            );
            Ok(false)
        }
        Err(e) => {
            tracing::warn!(error = %e, "could not reach the upstream to validate a key; storing it unvalidated");
            Ok(false)
        }
    }
}

pub async fn put_key_validated(
    store: &Store,
    keyring: &Keyring,
    user: &UserId,
    raw_key: &str,
    validated: bool,
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
        last_validated_at: validated.then_some(now),
    };
    store.put_vault(&record)?;
    store.flush().await?;
    tracing::info!(user_id = %user, kid = %record.kid, "OpenAI key sealed and stored");
    Ok(record)
}

/// Re-seals every vault record made under an older master key with the active one
/// (after `keygate keys rotate`). Online: each record is replaced atomically, and a
/// record that does not open is left as it is and logged. Returns how many changed.
pub async fn reseal_all(store: &Store, keyring: &Keyring) -> Result<usize, ServerError> {
    let mut changed = 0;
    for record in store.vault_records()? {
        let Ok(sealed) = keygate_core::vault::SealedKey::from_compact(record.sealed.clone()) else {
            tracing::error!(user_id = %record.user_id, "vault record is not a JWE; left as is");
            continue;
        };
        if !sealed.needs_reseal(keyring) {
            continue;
        }
        let binding = Binding {
            user_id: record.user_id.clone(),
            key_id: record.key_id.clone(),
        };
        let opened = match vault::open(keyring, &sealed, &binding) {
            Ok(o) => o,
            Err(e) => {
                tracing::error!(user_id = %record.user_id, kid = sealed.kid(), error = %e, "vault record did not open; left as is");
                continue;
            }
        };
        let resealed = vault::seal(
            keyring,
            &binding,
            &opened.key,
            opened.org.as_deref(),
            opened.project.as_deref(),
            opened.issued_at,
        )
        .map_err(|e| ServerError::Internal(e.to_string()))?;
        let updated = VaultRecord {
            sealed: resealed.as_compact().to_owned(),
            kid: resealed.kid().to_owned(),
            ..record.clone()
        };
        // Only replace what we read: a key replaced meanwhile keeps the newer record.
        if store.replace_vault(&record, &updated)? {
            changed += 1;
        }
    }
    if changed > 0 {
        store.flush().await?;
        tracing::info!(
            records = changed,
            kid = keyring.active_kid(),
            "re-sealed vault records under the active master key"
        );
    }
    Ok(changed)
}
