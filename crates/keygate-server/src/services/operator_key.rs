//! The operator's OpenAI key: one optional key that a plan with `use_operator_key`
//! lends to people who have stored none of their own.
//!
//! It is sealed exactly like a person's key (`keygate_core::vault`, the master keyring,
//! A256GCMKW + A256GCM) and kept in its own tree, but bound to
//! `keygate_core::vault::OPERATOR_SUBJECT` instead of a user id: a person's record copied
//! into the operator's place does not open, nor the operator's under a person's id. The
//! key is never shown again (the view says whether one is set, under which master key
//! and since when), never logged, and re-sealed with the vault records after a master
//! key rotation. Set online through the admin API (scope `admin`), or offline with
//! `keygate keys set-operator` while no server holds the store.

use std::path::Path;

use keygate_core::calendar::to_rfc3339;
use keygate_core::ids::KeyId;
use keygate_core::keyring::Keyring;
use keygate_core::time::{Clock, UnixTime};
use keygate_core::vault::{self, OperatorBinding, SealedKey, UnsealedKey};
use keygate_store::{OperatorKeyRecord, Store, StoreError, StoreOptions};
use secrecy::{ExposeSecret, SecretString};
use serde::Serialize;
use thiserror::Error;

use crate::config::Config;
use crate::error::ServerError;
use crate::keyfile::{self, KeyFileError};
use crate::services::audit::{self, Audit};
use crate::services::vault::parse_key;

/// `GET /admin/operator-key`: whether a key is set, never the key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct OperatorKeyView {
    pub set: bool,
    /// The master key id it is sealed under (after a rotation, the new one once the
    /// re-seal pass ran).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub kid: Option<String>,
    /// When it was set, RFC 3339 UTC.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub updated_at: Option<String>,
}

impl OperatorKeyView {
    fn of(record: Option<&OperatorKeyRecord>) -> Self {
        Self {
            set: record.is_some(),
            kid: record.map(|r| r.kid.clone()),
            updated_at: record.map(|r| to_rfc3339(r.updated_at)),
        }
    }
}

pub async fn view(store: &Store) -> Result<OperatorKeyView, ServerError> {
    Ok(OperatorKeyView::of(store.operator_key().await?.as_ref()))
}

/// Seals and stores (or replaces) the operator's key; durable before returning. Not
/// checked with the upstream (the operator vouches for it, as for a person's key set
/// through the admin API); an OpenAI admin key (`sk-admin-…`) is refused.
pub async fn set(
    store: &Store,
    keyring: &Keyring,
    key: &SecretString,
    now: UnixTime,
    audit: &Audit,
) -> Result<OperatorKeyView, ServerError> {
    let key = parse_key(key.expose_secret())?;
    let binding = OperatorBinding {
        key_id: KeyId::generate(),
    };
    let sealed = vault::seal(keyring, &binding, &key, None, None, now)
        .map_err(|e| ServerError::Internal(e.to_string()))?;
    let record = OperatorKeyRecord {
        key_id: binding.key_id,
        sealed: sealed.as_compact().to_owned(),
        kid: sealed.kid().to_owned(),
        updated_at: now,
    };
    store.put_operator_key(&record).await?;
    // Flushes the record with its audit entry.
    audit::operator_key_set(store, audit, &record.kid).await?;
    tracing::info!(kid = %record.kid, "operator OpenAI key sealed and stored");
    Ok(OperatorKeyView::of(Some(&record)))
}

/// Removes the operator's key (nothing to do when none is set); durable before
/// returning. Returns whether there was one.
pub async fn delete(store: &Store, audit: &Audit) -> Result<bool, ServerError> {
    let existed = store.delete_operator_key().await?;
    if existed {
        audit::operator_key_deleted(store, audit).await?;
        tracing::info!("operator OpenAI key deleted");
    } else {
        // A concurrent call removed it and may not have flushed yet: "deleted" is only
        // said once it is durable.
        store.flush().await?;
    }
    Ok(existed)
}

/// Opens the operator's record, bound to the operator's subject and the record's key id.
pub fn open(keyring: &Keyring, record: &OperatorKeyRecord) -> Result<UnsealedKey, ServerError> {
    let sealed = SealedKey::from_compact(record.sealed.clone()).map_err(ServerError::Vault)?;
    let binding = OperatorBinding {
        key_id: record.key_id.clone(),
    };
    vault::open(keyring, &sealed, &binding).map_err(|e| {
        tracing::error!(kid = sealed.kid(), error = %e, "operator key record did not open");
        ServerError::Vault(e)
    })
}

/// Whether the operator's record is sealed under a key other than the active one.
pub async fn needs_reseal(store: &Store, keyring: &Keyring) -> Result<bool, ServerError> {
    Ok(store
        .operator_key()
        .await?
        .is_some_and(|r| SealedKey::from_compact(r.sealed).is_ok_and(|s| s.needs_reseal(keyring))))
}

/// Re-seals the operator's record under the active master key when it was sealed under
/// an older one (part of `vault::reseal_all`, which flushes). A record that does not
/// open is left as it is and logged; one replaced meanwhile keeps the newer record.
/// Returns whether it changed.
pub async fn reseal(store: &Store, keyring: &Keyring) -> Result<bool, ServerError> {
    let Some(record) = store.operator_key().await? else {
        return Ok(false);
    };
    let Ok(sealed) = SealedKey::from_compact(record.sealed.clone()) else {
        tracing::error!("operator key record is not a JWE; left as is");
        return Ok(false);
    };
    if !sealed.needs_reseal(keyring) {
        return Ok(false);
    }
    let Ok(opened) = open(keyring, &record) else {
        tracing::error!("operator key record left as is");
        return Ok(false);
    };
    let binding = OperatorBinding {
        key_id: record.key_id.clone(),
    };
    let resealed = vault::seal(keyring, &binding, &opened.key, None, None, opened.issued_at)
        .map_err(|e| ServerError::Internal(e.to_string()))?;
    let updated = OperatorKeyRecord {
        sealed: resealed.as_compact().to_owned(),
        kid: resealed.kid().to_owned(),
        ..record.clone()
    };
    Ok(store.replace_operator_key(&record, &updated).await?)
}

// --- offline: `keygate keys set-operator` / `clear-operator` --------------------------

/// Why the operator key could not be changed offline.
#[derive(Debug, Error)]
pub enum OfflineError {
    /// sled lets one process open the store: a server is running on it.
    #[error(
        "the store {path} is in use by a running keygate; set the operator key through it \
         instead: PUT /admin/operator-key with an admin-scope key (keygate admin operator-key set)"
    )]
    Locked { path: String },
    #[error("master keyring")]
    KeyFile(#[from] KeyFileError),
    #[error("data directory {path}")]
    DataDir {
        path: String,
        source: std::io::Error,
    },
    #[error("store")]
    Store(#[source] StoreError),
    /// The store is PostgreSQL (`at`: host and database, never the password): shared
    /// by the running nodes, so the key is set through one of them.
    #[error(
        "the store is PostgreSQL ({at}), shared by the running keygate nodes; set the operator \
         key through one of them: PUT /admin/operator-key with an admin-scope key (keygate admin \
         operator-key set)"
    )]
    Postgres { at: String },
    /// The key itself was refused (not an OpenAI key, an `sk-admin-…` key).
    #[error("{0}")]
    Refused(String),
    #[error("{0}")]
    Failed(ServerError),
}

/// The store and keyring opened by `keygate keys set-operator` / `clear-operator`, with
/// no server running (sled lets one process open the store): opened before the key is
/// read, so a running server is reported before anyone types a key.
pub struct OfflineStore {
    store: Store,
    keyring: Keyring,
}

/// Opens the keyring (from `KEYGATE_MASTER_KEYS` or the key file, never creating one),
/// then the store (running pending migrations, as `keygate migrate` does).
pub fn open_offline(config: &Config) -> Result<OfflineStore, OfflineError> {
    if let Some(url) = &config.store_url {
        return Err(OfflineError::Postgres { at: url.redacted() });
    }
    let keyring = keyfile::load_existing(config)?;
    let store = offline_store(&config.data_dir)?;
    Ok(OfflineStore { store, keyring })
}

impl OfflineStore {
    /// Seals and stores the key, as `PUT /admin/operator-key` does.
    pub async fn set(
        &self,
        key: &SecretString,
        now: UnixTime,
    ) -> Result<OperatorKeyView, OfflineError> {
        set(&self.store, &self.keyring, key, now, &offline_actor())
            .await
            .map_err(refused)
    }

    /// Removes the key; whether one was set.
    pub async fn clear(&self) -> Result<bool, OfflineError> {
        delete(&self.store, &offline_actor()).await.map_err(refused)
    }
}

/// `keygate keys set-operator|clear-operator` act as the system: no request, no key.
fn offline_actor() -> Audit {
    Audit::system(Clock::system())
}

fn offline_store(data_dir: &Path) -> Result<Store, OfflineError> {
    let dir = keyfile::prepare_store_dir(data_dir).map_err(|source| OfflineError::DataDir {
        path: data_dir.display().to_string(),
        source,
    })?;
    Store::open(&dir, &StoreOptions::default()).map_err(|e| match e {
        StoreError::Locked { path } => OfflineError::Locked { path },
        other => OfflineError::Store(other),
    })
}

fn refused(e: ServerError) -> OfflineError {
    match e {
        ServerError::Service(_) => OfflineError::Refused(e.to_openai().message),
        other => OfflineError::Failed(other),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use keygate_core::ids::UserId;

    fn store() -> (tempfile::TempDir, Store) {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path(), &StoreOptions::default()).unwrap();
        (dir, store)
    }

    fn secret(s: &str) -> SecretString {
        SecretString::from(s.to_owned())
    }

    #[tokio::test]
    async fn set_show_open_delete() {
        let (_dir, store) = store();
        let keyring = Keyring::generate().unwrap();
        assert_eq!(
            view(&store).await.unwrap(),
            OperatorKeyView {
                set: false,
                kid: None,
                updated_at: None
            }
        );
        let shown = set(
            &store,
            &keyring,
            &secret("sk-operator-000000000000"),
            86_400,
            &offline_actor(),
        )
        .await
        .unwrap();
        assert_eq!(shown.kid.as_deref(), Some(keyring.active_kid()));
        assert_eq!(shown.updated_at.as_deref(), Some("1970-01-02T00:00:00Z"));
        assert_eq!(view(&store).await.unwrap(), shown);
        let record = store.operator_key().await.unwrap().unwrap();
        assert!(!record.sealed.contains("sk-operator"));
        let opened = open(&keyring, &record).unwrap();
        assert_eq!(opened.key.expose_secret(), "sk-operator-000000000000");
        assert!(delete(&store, &offline_actor()).await.unwrap());
        assert!(!delete(&store, &offline_actor()).await.unwrap());
        assert!(!view(&store).await.unwrap().set);
    }

    #[tokio::test]
    async fn admin_keys_are_refused() {
        let (_dir, store) = store();
        let keyring = Keyring::generate().unwrap();
        let err = set(
            &store,
            &keyring,
            &secret("sk-admin-0000000000000000"),
            1,
            &offline_actor(),
        )
        .await
        .unwrap_err();
        assert_eq!(err.to_openai().code, Some("admin_key_not_allowed"));
        assert!(store.operator_key().await.unwrap().is_none());
    }

    /// A person's record put in the operator's place does not open, and the operator's
    /// record filed under a person's id does not open as theirs.
    #[tokio::test]
    async fn person_and_operator_records_are_not_interchangeable() {
        let (_dir, store) = store();
        let keyring = Keyring::generate().unwrap();
        let user = UserId::generate();
        let person = crate::services::vault::put_key(
            &store,
            &keyring,
            &user,
            "sk-person-00000000000000",
            1,
            &offline_actor(),
        )
        .await
        .unwrap();
        let swapped = OperatorKeyRecord {
            key_id: person.key_id.clone(),
            sealed: person.sealed.clone(),
            kid: person.kid.clone(),
            updated_at: 1,
        };
        assert!(matches!(
            open(&keyring, &swapped),
            Err(ServerError::Vault(_))
        ));

        set(
            &store,
            &keyring,
            &secret("sk-operator-000000000000"),
            2,
            &offline_actor(),
        )
        .await
        .unwrap();
        let op = store.operator_key().await.unwrap().unwrap();
        let as_person = keygate_store::VaultRecord {
            key_id: op.key_id.clone(),
            sealed: op.sealed.clone(),
            kid: op.kid.clone(),
            ..person
        };
        assert!(matches!(
            crate::services::vault::open_record(&keyring, &user, &as_person),
            Err(ServerError::Vault(_))
        ));
    }

    #[tokio::test]
    async fn a_master_key_rotation_reseals_it_with_the_vault() {
        let (_dir, store) = store();
        let mut keyring = Keyring::generate().unwrap();
        let old_kid = keyring.active_kid().to_owned();
        set(
            &store,
            &keyring,
            &secret("sk-operator-000000000000"),
            5,
            &offline_actor(),
        )
        .await
        .unwrap();
        assert_eq!(
            crate::services::vault::reseal_all(&store, &keyring)
                .await
                .unwrap(),
            0
        );
        keyring.add_generated().unwrap();
        assert_eq!(
            crate::services::vault::reseal_all(&store, &keyring)
                .await
                .unwrap(),
            1
        );
        let record = store.operator_key().await.unwrap().unwrap();
        assert_ne!(record.kid, old_kid);
        assert_eq!(record.kid, keyring.active_kid());
        assert_eq!(record.updated_at, 5, "a re-seal is not a new key");
        assert_eq!(
            open(&keyring, &record).unwrap().key.expose_secret(),
            "sk-operator-000000000000"
        );
        // The old master key can be retired now.
        let text = keyring.to_text();
        let active = text.lines().find(|l| !l.starts_with('#')).unwrap();
        let new_only = Keyring::parse(active).unwrap();
        assert!(open(&new_only, &record).is_ok());
    }
}
