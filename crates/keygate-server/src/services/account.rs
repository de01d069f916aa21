//! The signed-in person's own account: their passkeys (list, rename, remove) and
//! deleting the account with everything in it.

use keygate_core::audit::Action;
use keygate_core::ids::{PasskeyId, UserId};
use keygate_core::time::UnixTime;
use keygate_store::{DeletePasskey, PasskeyRecord, Store};
use serde::Serialize;

use crate::error::ServerError;
use crate::services::audit::{Audit, Target};
use crate::services::error::{Missing, ServiceError};
use crate::services::users::parse_name;

/// A passkey as its person sees it (never the public key or credential id).
#[derive(Debug, Serialize)]
pub struct PasskeyView {
    pub id: String,
    pub name: String,
    pub created_at: UnixTime,
    pub last_used_at: Option<UnixTime>,
    pub backup_eligible: bool,
    pub backup_state: bool,
}

impl From<&PasskeyRecord> for PasskeyView {
    fn from(p: &PasskeyRecord) -> Self {
        Self {
            id: p.id.to_string(),
            name: p.name.clone(),
            created_at: p.created_at,
            last_used_at: p.last_used_at,
            backup_eligible: p.backup_eligible,
            backup_state: p.backup_state,
        }
    }
}

pub async fn passkeys(store: &Store, user: &UserId) -> Result<Vec<PasskeyView>, ServerError> {
    Ok(store
        .passkeys_for_user(user)
        .await?
        .iter()
        .map(PasskeyView::from)
        .collect())
}

pub async fn rename_passkey(
    store: &Store,
    user: &UserId,
    id: &PasskeyId,
    name: &str,
) -> Result<PasskeyView, ServerError> {
    let mut pk = own_passkey(store, user, id).await?;
    pk.name = parse_name(name, "name")?;
    store.put_passkey(&pk).await?;
    store.flush().await?;
    Ok(PasskeyView::from(&pk))
}

/// Removes one of the person's passkeys (never the last one) and ends every other
/// session of theirs: whoever holds one of those may have been the reason for the
/// removal. `keep_session` is the store key of the session asking, which stays.
/// Returns how many sessions were ended.
pub async fn remove_passkey(
    store: &Store,
    user: &UserId,
    id: &PasskeyId,
    keep_session: &str,
    audit: &Audit,
) -> Result<usize, ServerError> {
    let pk = own_passkey(store, user, id).await?;
    match store.delete_passkey_unless_last(&pk).await? {
        DeletePasskey::Last => Err(ServiceError::LastPasskey.into()),
        DeletePasskey::Gone => Err(not_found().into()),
        DeletePasskey::Deleted => {
            let ended = store
                .delete_sessions_for_user(&pk.user_id, Some(keep_session))
                .await?;
            let detail = serde_json::json!({"name": pk.name, "sessions_ended": ended});
            let target = Some(Target::Passkey(&pk.id));
            audit
                .record(store, Action::PasskeyRemoved, Some(user), target, detail)
                .await?;
            tracing::info!(user_id = %pk.user_id, passkey_id = %pk.id, ended, "passkey removed; other sessions ended");
            Ok(ended)
        }
    }
}

/// Deletes the person and everything of theirs (see `Store::delete_user`) but the
/// audit log's entries about them, which outlive them (docs/DECISIONS.md).
pub async fn delete(store: &Store, user: &UserId, audit: &Audit) -> Result<(), ServerError> {
    let existed = store.delete_user(user).await?;
    if existed {
        let target = Some(Target::User(user));
        let detail = serde_json::json!({});
        audit
            .record(store, Action::AccountDeleted, Some(user), target, detail)
            .await?;
    } else {
        store.flush().await?;
    }
    tracing::info!(user_id = %user, "account deleted");
    Ok(())
}

async fn own_passkey(
    store: &Store,
    user: &UserId,
    id: &PasskeyId,
) -> Result<PasskeyRecord, ServerError> {
    store
        .passkey(id)
        .await?
        .filter(|p| &p.user_id == user)
        .ok_or_else(|| not_found().into())
}

fn not_found() -> ServiceError {
    ServiceError::NotFound(Missing::Passkey)
}
