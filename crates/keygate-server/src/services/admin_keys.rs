//! Admin keys: minted (`kga_…`, shown once), listed, revoked; and the check that turns a
//! presented admin key into the scope it holds. Only the SHA-256 of a key's secret is
//! stored, and it is compared in constant time.

use keygate_core::admin_scope::AdminScope;
use keygate_core::audit::Action;
use keygate_core::ids::AdminKeyId;
use keygate_core::time::UnixTime;
use keygate_core::token::{SecretHash, admin};
use keygate_store::{AdminKeyRecord, Store};
use secrecy::{ExposeSecret, SecretString};
use serde::Serialize;

use crate::error::ServerError;
use crate::routes::page::{Page, PageRequest};
use crate::services::audit::{Audit, Target};
use crate::services::error::{Missing, ServiceError};
use crate::services::users::parse_name;

/// An admin key as listed: never its secret.
#[derive(Debug, Serialize)]
pub struct AdminKeyView {
    pub id: AdminKeyId,
    pub name: String,
    pub scope: AdminScope,
    pub created_at: UnixTime,
    pub expires_at: Option<UnixTime>,
}

/// A key just created: the only answer that carries `key`.
#[derive(Serialize)]
pub struct NewAdminKey {
    #[serde(flatten)]
    pub view: AdminKeyView,
    #[serde(serialize_with = "expose")]
    pub key: SecretString,
}

fn expose<S: serde::Serializer>(k: &SecretString, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(k.expose_secret())
}

/// Who is calling the admin API: the bootstrap key (`id: None`) or a stored key.
#[derive(Debug, Clone)]
pub struct AdminCaller {
    pub id: Option<AdminKeyId>,
    pub scope: AdminScope,
}

impl From<&AdminKeyRecord> for AdminKeyView {
    fn from(r: &AdminKeyRecord) -> Self {
        Self {
            id: r.id.clone(),
            name: r.name.clone(),
            scope: r.scope,
            created_at: r.created_at,
            expires_at: r.expires_at,
        }
    }
}

/// Mints and stores a key; flushed before the key is returned.
pub async fn create(
    store: &Store,
    name: &str,
    scope: AdminScope,
    expires_at: Option<UnixTime>,
    now: UnixTime,
    audit: &Audit,
) -> Result<NewAdminKey, ServerError> {
    let name = parse_name(name, "name")?;
    let id = AdminKeyId::generate();
    let issued = admin::issue(&id);
    let record = AdminKeyRecord {
        id,
        name,
        scope,
        secret_hash: issued.hash.to_hex(),
        created_at: now,
        expires_at,
    };
    store.insert_admin_key(&record).await?;
    let detail = serde_json::json!({"name": record.name, "scope": scope,
        "expires_at": expires_at.map(keygate_core::calendar::to_rfc3339)});
    let target = Some(Target::AdminKey(&record.id));
    audit
        .record(store, Action::AdminKeyCreated, None, target, detail)
        .await?;
    tracing::info!(admin_key_id = %record.id, scope = scope.as_str(), "admin key created");
    Ok(NewAdminKey {
        view: AdminKeyView::from(&record),
        key: issued.token,
    })
}

/// One page of admin keys, oldest first.
pub async fn list(store: &Store, page: &PageRequest) -> Result<Page<AdminKeyView>, ServerError> {
    let (keys, next) = store
        .admin_keys_page(page.after.as_deref(), page.limit)
        .await?;
    Ok(Page {
        items: keys.iter().map(AdminKeyView::from).collect(),
        next,
    })
}

/// Removes the key: the next request with it is refused. Flushed before returning.
pub async fn revoke(store: &Store, id: &AdminKeyId, audit: &Audit) -> Result<(), ServerError> {
    let Some(old) = store.admin_key(id).await? else {
        return Err(ServiceError::NotFound(Missing::AdminKey).into());
    };
    if !store.delete_admin_key(id).await? {
        return Err(ServiceError::NotFound(Missing::AdminKey).into());
    }
    let detail = serde_json::json!({"name": old.name, "scope": old.scope});
    audit
        .record(
            store,
            Action::AdminKeyRevoked,
            None,
            Some(Target::AdminKey(id)),
            detail,
        )
        .await?;
    tracing::info!(admin_key_id = %id, "admin key revoked");
    Ok(())
}

/// The stored key `presented` is, if it is one, unexpired at `now`, with its secret
/// matching (in constant time). Malformed, unknown, expired and wrong keys are all
/// `None`: the caller treats them alike.
pub async fn check(
    store: &Store,
    presented: &str,
    now: UnixTime,
) -> Result<Option<AdminCaller>, ServerError> {
    let Ok(parsed) = admin::parse(presented) else {
        return Ok(None);
    };
    let Some(record) = store.admin_key(&parsed.id).await? else {
        return Ok(None);
    };
    let Some(stored) = SecretHash::from_hex(&record.secret_hash) else {
        return Ok(None);
    };
    if !stored.ct_eq(&parsed.hash) {
        return Ok(None);
    }
    if record.expires_at.is_some_and(|at| at <= now) {
        return Ok(None);
    }
    Ok(Some(AdminCaller {
        id: Some(record.id),
        scope: record.scope,
    }))
}
