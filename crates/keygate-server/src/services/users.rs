use keygate_core::audit::Action;
use keygate_core::ids::UserId;
use keygate_core::time::UnixTime;
use keygate_store::{Store, UserRecord};
use serde::Serialize;

use crate::error::ServerError;
use crate::routes::page::{Page, PageRequest};
use crate::services::audit::{Audit, Target};
use crate::services::error::{Missing, ServiceError};

const MAX_NAME_CHARS: usize = 200;

/// A person as the wire shows them (the store record stays off the wire).
#[derive(Debug, Serialize)]
pub struct UserView {
    pub id: String,
    pub name: String,
    pub created_at: UnixTime,
}

impl From<&UserRecord> for UserView {
    fn from(u: &UserRecord) -> Self {
        Self {
            id: u.id.to_string(),
            name: u.name.clone(),
            created_at: u.created_at,
        }
    }
}

/// A display name: trimmed, 1–200 characters, no control characters.
pub fn parse_name(raw: &str, what: &'static str) -> Result<String, ServiceError> {
    let name = raw.trim();
    if name.is_empty() {
        return Err(ServiceError::invalid(
            what,
            format!("`{what}` must not be empty"),
        ));
    }
    if name.chars().count() > MAX_NAME_CHARS || name.chars().any(char::is_control) {
        return Err(ServiceError::invalid(
            what,
            format!(
                "`{what}` must be at most {MAX_NAME_CHARS} characters without control characters"
            ),
        ));
    }
    Ok(name.to_owned())
}

pub async fn create(
    store: &Store,
    name: &str,
    now: UnixTime,
    audit: &Audit,
) -> Result<UserView, ServerError> {
    let user = UserRecord {
        id: UserId::generate(),
        name: parse_name(name, "name")?,
        created_at: now,
    };
    store.insert_user(&user).await?;
    let target = Some(Target::User(&user.id));
    audit
        .record(
            store,
            Action::UserCreated,
            Some(&user.id),
            target,
            serde_json::json!({}),
        )
        .await?;
    tracing::info!(user_id = %user.id, "user created");
    Ok(UserView::from(&user))
}

/// One page of everyone, as the admin API lists them.
pub async fn list(store: &Store, page: &PageRequest) -> Result<Page<UserView>, ServerError> {
    let (users, next) = store.users_page(page.after.as_deref(), page.limit).await?;
    Ok(Page {
        items: users.iter().map(UserView::from).collect(),
        next,
    })
}

/// The person with this id, or "no such user".
pub async fn get(store: &Store, id: &UserId) -> Result<UserRecord, ServerError> {
    store
        .user(id)
        .await?
        .ok_or_else(|| ServiceError::NotFound(Missing::User).into())
}
