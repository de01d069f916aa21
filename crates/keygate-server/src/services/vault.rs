//! The person's OpenAI key: storing it (sealed), what the dashboard shows about it,
//! what the proxy learns about it from OpenAI's answers, and the re-seal pass.
//!
//! A record is always opened bound to where it was looked up — the user id it is filed
//! under — never to its own fields, so a record copied under another person's id does
//! not open.

use keygate_core::audit::Action;
use keygate_core::ids::{KeyId, UserId};
use keygate_core::key_verdict::{self, Verdict};
use keygate_core::keyring::Keyring;
use keygate_core::secret::OpenAiKey;
use keygate_core::time::UnixTime;
use keygate_core::vault::{self, Binding, SealedKey, UnsealedKey};
use keygate_store::{Store, VaultRecord};
use secrecy::{ExposeSecret, SecretString};
use serde::Serialize;

use crate::error::ServerError;
use crate::services::audit::{Audit, Target};
use crate::services::error::ServiceError;
use crate::state::AppState;

/// Parses a pasted key; refuses OpenAI admin keys (`sk-admin-...`) before anything
/// else happens with them (they are never sent to OpenAI for validation either).
pub(crate) fn parse_key(raw_key: &str) -> Result<OpenAiKey, ServerError> {
    let key = OpenAiKey::parse(raw_key).map_err(|e| {
        ServiceError::invalid("api_key", format!("The OpenAI key was not accepted: {e}"))
    })?;
    if key.is_admin_key() {
        return Err(ServiceError::AdminKeyNotAllowed.into());
    }
    Ok(key)
}

/// Where a stored key stands, as the dashboard shows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum KeyStatus {
    /// No key stored.
    None,
    /// Stored, but OpenAI has not confirmed it yet (the check at storing time could not
    /// reach OpenAI, or checks are off); the first proxied answer decides.
    Unverified,
    /// OpenAI accepted it (at storing time or on a proxied request).
    Verified,
    /// OpenAI refused it on a proxied request: the person must replace it.
    Rejected,
}

/// `GET /api/key`.
#[derive(Debug, Serialize)]
pub struct KeyView {
    pub enrolled: bool,
    pub last4: Option<String>,
    pub created_at: Option<UnixTime>,
    pub last_validated_at: Option<UnixTime>,
    pub status: KeyStatus,
    pub rejected_at: Option<UnixTime>,
}

impl KeyView {
    pub fn of(record: Option<&VaultRecord>) -> Self {
        let status = match record {
            None => KeyStatus::None,
            Some(r) if r.rejected_at.is_some() => KeyStatus::Rejected,
            Some(r) if r.last_validated_at.is_some() => KeyStatus::Verified,
            Some(_) => KeyStatus::Unverified,
        };
        Self {
            enrolled: record.is_some(),
            last4: record.map(|r| r.last4.clone()),
            created_at: record.map(|r| r.created_at),
            last_validated_at: record.and_then(|r| r.last_validated_at),
            status,
            rejected_at: record.and_then(|r| r.rejected_at),
        }
    }
}

/// What the dashboard shows about `user`'s key.
pub async fn key_view(store: &Store, user: &UserId) -> Result<KeyView, ServerError> {
    Ok(KeyView::of(store.vault(user).await?.as_ref()))
}

/// Seals and stores (or replaces) a person's OpenAI key; durable before returning.
pub async fn put_key(
    store: &Store,
    keyring: &Keyring,
    user: &UserId,
    raw_key: &str,
    now: UnixTime,
    audit: &Audit,
) -> Result<VaultRecord, ServerError> {
    put_key_validated(store, keyring, user, raw_key, false, now, audit).await
}

/// Asks the upstream whether it accepts `raw_key` (`GET /models`). A refusal of the key
/// itself (`invalid_api_key`, `account_deactivated`: `keygate_core::key_verdict`) is the
/// person's to fix; a 401/403 for a permission the key lacks stores it unverified; any other failure (OpenAI down, network) does not block
/// storing the key. Returns whether the key was positively validated.
pub async fn validate_with_upstream(st: &AppState, raw_key: &str) -> Result<bool, ServerError> {
    let key = parse_key(raw_key)?;
    let url = crate::upstream::join(&st.config.upstream_url, "/models", None);
    let mut auth =
        reqwest::header::HeaderValue::try_from(format!("Bearer {}", key.expose_secret()))
            .map_err(|_| ServiceError::invalid("api_key", "The OpenAI key is not valid"))?;
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
            let status = r.status().as_u16();
            let body = r.bytes().await.unwrap_or_default();
            let (code, _) = key_verdict::read_error(&body);
            if key_verdict::verdict(status, code.as_deref()) == Verdict::Refused {
                let detail = code.unwrap_or_else(|| "refused".into());
                return Err(ServiceError::KeyRejected { detail }.into());
            }
            // A restricted key that may not list models (or another refusal that is
            // not about the key itself) is a working key: stored, not yet verified.
            tracing::warn!(
                status,
                code = code.as_deref(),
                "OpenAI refused listing models with this key, not the key; storing it unverified"
            );
            Ok(false)
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

/// Stores a key the person pasted: checked with the upstream first when
/// `validate_openai_keys` is on (a refusal is the person's to fix; an unreachable
/// upstream stores it unverified), then sealed and stored.
pub async fn store_key(
    st: &AppState,
    user: &UserId,
    key: &SecretString,
    audit: &Audit,
) -> Result<VaultRecord, ServerError> {
    let raw = key.expose_secret();
    let validated = if st.config.validate_openai_keys {
        validate_with_upstream(st, raw).await?
    } else {
        false
    };
    let now = st.clock.now();
    put_key_validated(
        &st.store,
        &st.keyring.current(),
        user,
        raw,
        validated,
        now,
        audit,
    )
    .await
}

/// Deletes the person's stored key; durable before returning. (Deleting none is no
/// action: nothing to record.)
pub async fn delete_key(store: &Store, user: &UserId, audit: &Audit) -> Result<(), ServerError> {
    let deleted = match store.vault(user).await? {
        Some(old) if store.delete_vault(user).await? => Some(old),
        _ => None,
    };
    match deleted {
        Some(old) => {
            let detail = serde_json::json!({"last4": old.last4});
            let target = Some(Target::OpenAiKey(&old.key_id));
            audit
                .record(store, Action::KeyDeleted, Some(user), target, detail)
                .await?;
        }
        // None here, or a concurrent call deleted it: answer once that is durable too.
        None => store.flush().await?,
    }
    tracing::info!(user_id = %user, "OpenAI key deleted");
    Ok(())
}

pub async fn put_key_validated(
    store: &Store,
    keyring: &Keyring,
    user: &UserId,
    raw_key: &str,
    validated: bool,
    now: UnixTime,
    audit: &Audit,
) -> Result<VaultRecord, ServerError> {
    let key = parse_key(raw_key)?;
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
        rejected_at: None,
    };
    let replaced = store.vault(user).await?.is_some();
    store.put_vault(user, &record).await?;
    let action = if replaced {
        Action::KeyReplaced
    } else {
        Action::KeyStored
    };
    // The last four characters, as the dashboard shows them: never the key.
    let detail = serde_json::json!({"last4": record.last4, "verified": validated});
    let target = Some(Target::OpenAiKey(&record.key_id));
    audit
        .record(store, action, Some(user), target, detail)
        .await?;
    tracing::info!(user_id = %user, kid = %record.kid, "OpenAI key sealed and stored");
    Ok(record)
}

/// Opens `record` as `user`'s key: bound to the id it was looked up by, not to the
/// record's own `user_id` field.
pub fn open_record(
    keyring: &Keyring,
    user: &UserId,
    record: &VaultRecord,
) -> Result<UnsealedKey, ServerError> {
    let sealed = SealedKey::from_compact(record.sealed.clone()).map_err(ServerError::Vault)?;
    let binding = Binding {
        user_id: user.clone(),
        key_id: record.key_id.clone(),
    };
    vault::open(keyring, &sealed, &binding).map_err(|e| {
        tracing::error!(user_id = %user, kid = sealed.kid(), error = %e, "vault record did not open");
        ServerError::Vault(e)
    })
}

/// OpenAI refused `user`'s key `key_id` (401 to a proxied request): mark it rejected,
/// unless the person replaced it meanwhile (compare-and-swap on the record).
pub async fn mark_rejected(
    store: &Store,
    user: &UserId,
    key_id: &KeyId,
    now: UnixTime,
) -> Result<bool, ServerError> {
    let marked = update_same_key(store, user, key_id, |r| {
        if r.rejected_at.is_some() {
            return false;
        }
        r.rejected_at = Some(now);
        true
    })
    .await?;
    if marked {
        tracing::warn!(user_id = %user, "OpenAI refused the stored key; marked rejected");
    }
    Ok(marked)
}

/// OpenAI accepted `user`'s key `key_id` (a 2xx answer): record that it is verified
/// and no longer rejected. Only the first such answer writes (the proxy calls this only
/// when the record is unverified or rejected).
pub async fn mark_validated(
    store: &Store,
    user: &UserId,
    key_id: &KeyId,
    now: UnixTime,
) -> Result<bool, ServerError> {
    update_same_key(store, user, key_id, |r| {
        if r.last_validated_at.is_some() && r.rejected_at.is_none() {
            return false;
        }
        r.last_validated_at = Some(now);
        r.rejected_at = None;
        true
    })
    .await
}

/// Applies `change` to `user`'s record if it still holds key `key_id`; retried a few
/// times when another writer (the re-seal pass) got there first.
async fn update_same_key(
    store: &Store,
    user: &UserId,
    key_id: &KeyId,
    change: impl Fn(&mut VaultRecord) -> bool,
) -> Result<bool, ServerError> {
    for _ in 0..4 {
        let Some(current) = store.vault(user).await? else {
            return Ok(false);
        };
        if current.key_id != *key_id {
            return Ok(false);
        }
        let mut next = current.clone();
        if !change(&mut next) {
            return Ok(false);
        }
        if store.replace_vault(user, &current, &next).await? {
            return Ok(true);
        }
    }
    Ok(false)
}

/// Re-seals every record made under an older master key with the active one, the
/// operator's key included, in one pass (`master_keys::reseal_pass`, which the running
/// server's re-seal task drives with progress). Returns how many changed.
pub async fn reseal_all(store: &Store, keyring: &Keyring) -> Result<usize, ServerError> {
    let done = crate::services::master_keys::reseal_pass(store, keyring, &|_| {}).await?;
    Ok(done.done)
}

/// Re-seals one vault record under the active key, if it was sealed under another.
/// Online: the record is replaced atomically, and only if it is still the one read (a
/// key replaced meanwhile keeps the newer record); a record that does not open (for the
/// id it is filed under) is left as it is and logged. Not flushed. Returns whether it
/// changed.
pub async fn reseal_record(
    store: &Store,
    keyring: &Keyring,
    user: &UserId,
    record: &VaultRecord,
) -> Result<bool, ServerError> {
    let Ok(sealed) = SealedKey::from_compact(record.sealed.clone()) else {
        tracing::error!(user_id = %user, "vault record is not a JWE; left as is");
        return Ok(false);
    };
    if !sealed.needs_reseal(keyring) {
        return Ok(false);
    }
    let Ok(opened) = open_record(keyring, user, record) else {
        tracing::error!(user_id = %user, "vault record left as is");
        return Ok(false);
    };
    let binding = Binding {
        user_id: user.clone(),
        key_id: record.key_id.clone(),
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
    Ok(store.replace_vault(user, record, &updated).await?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use keygate_store::StoreOptions;

    fn store() -> (tempfile::TempDir, Store) {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path(), &StoreOptions::default()).unwrap();
        (dir, store)
    }

    fn audit() -> Audit {
        Audit::system(keygate_core::time::Clock::manual(10))
    }

    #[tokio::test]
    async fn admin_keys_are_refused_before_anything_else() {
        let (_dir, store) = store();
        let keyring = Keyring::generate().unwrap();
        let user = UserId::generate();
        let err = put_key(
            &store,
            &keyring,
            &user,
            "sk-admin-abcdef0123456789",
            10,
            &audit(),
        )
        .await
        .unwrap_err();
        assert_eq!(err.to_openai().code, Some("admin_key_not_allowed"));
        assert!(store.vault(&user).await.unwrap().is_none());
    }

    /// Finding 4: a whole record filed under another person's id neither opens nor is
    /// re-sealed; the re-seal pass binds to the id it found the record under.
    #[tokio::test]
    async fn records_bind_to_where_they_are_filed() {
        let (_dir, store) = store();
        let mut keyring = Keyring::generate().unwrap();
        let (x, y) = (UserId::generate(), UserId::generate());
        let rx = put_key(&store, &keyring, &x, "sk-x-0000000000000000", 10, &audit())
            .await
            .unwrap();
        store.put_vault(&y, &rx).await.unwrap();
        assert!(open_record(&keyring, &x, &rx).is_ok());
        assert!(matches!(
            open_record(&keyring, &y, &rx),
            Err(ServerError::Vault(_))
        ));

        keyring.add_generated().unwrap();
        assert_eq!(reseal_all(&store, &keyring).await.unwrap(), 1);
        let x_now = store.vault(&x).await.unwrap().unwrap();
        assert_eq!(x_now.kid, keyring.active_kid());
        assert!(open_record(&keyring, &x, &x_now).is_ok());
        let y_now = store.vault(&y).await.unwrap().unwrap();
        assert_eq!(y_now, rx, "the misplaced record was re-sealed");
    }

    #[tokio::test]
    async fn rejection_and_validation_only_touch_the_key_they_are_about() {
        let (_dir, store) = store();
        let keyring = Keyring::generate().unwrap();
        let user = UserId::generate();
        let old = put_key(
            &store,
            &keyring,
            &user,
            "sk-old-0000000000000000",
            10,
            &audit(),
        )
        .await
        .unwrap();
        assert_eq!(KeyView::of(Some(&old)).status, KeyStatus::Unverified);

        // The person replaced the key while a request with the old one was in flight.
        let new = put_key_validated(
            &store,
            &keyring,
            &user,
            "sk-new-0000000000000000",
            true,
            20,
            &audit(),
        )
        .await
        .unwrap();
        assert!(!mark_rejected(&store, &user, &old.key_id, 50).await.unwrap());
        assert_eq!(store.vault(&user).await.unwrap().unwrap(), new);

        assert!(mark_rejected(&store, &user, &new.key_id, 60).await.unwrap());
        assert!(!mark_rejected(&store, &user, &new.key_id, 70).await.unwrap());
        let rejected = store.vault(&user).await.unwrap().unwrap();
        assert_eq!(rejected.rejected_at, Some(60));
        let view = KeyView::of(Some(&rejected));
        assert_eq!(
            (view.status, view.rejected_at),
            (KeyStatus::Rejected, Some(60))
        );

        // OpenAI accepts it again: no longer rejected.
        assert!(
            mark_validated(&store, &user, &new.key_id, 80)
                .await
                .unwrap()
        );
        let back = store.vault(&user).await.unwrap().unwrap();
        assert_eq!((back.rejected_at, back.last_validated_at), (None, Some(80)));
        assert_eq!(KeyView::of(Some(&back)).status, KeyStatus::Verified);
        assert!(
            !mark_validated(&store, &user, &new.key_id, 90)
                .await
                .unwrap()
        );
        assert_eq!(KeyView::of(None).status, KeyStatus::None);

        // A new key starts clean.
        mark_rejected(&store, &user, &new.key_id, 95).await.unwrap();
        let fresh = put_key(
            &store,
            &keyring,
            &user,
            "sk-third-000000000000000",
            100,
            &audit(),
        )
        .await
        .unwrap();
        assert_eq!(fresh.rejected_at, None);
    }
}
