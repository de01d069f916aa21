use keygate_core::ids::UserId;
use keygate_core::openai_error::OpenAiError;
use keygate_core::time;
use keygate_store::{Store, UserRecord};

use crate::error::ServerError;

const MAX_NAME_CHARS: usize = 200;

/// A display name: trimmed, 1–200 characters, no control characters.
pub fn parse_name(raw: &str, what: &str) -> Result<String, ServerError> {
    let name = raw.trim();
    if name.is_empty() {
        return Err(
            OpenAiError::invalid_request(format!("`{what}` must not be empty"))
                .with_param(what)
                .into(),
        );
    }
    if name.chars().count() > MAX_NAME_CHARS || name.chars().any(char::is_control) {
        return Err(OpenAiError::invalid_request(format!(
            "`{what}` must be at most {MAX_NAME_CHARS} characters without control characters"
        ))
        .with_param(what)
        .into());
    }
    Ok(name.to_owned())
}

pub async fn create(store: &Store, name: &str) -> Result<UserRecord, ServerError> {
    let user = UserRecord {
        id: UserId::generate(),
        name: parse_name(name, "name")?,
        created_at: time::now(),
    };
    store.insert_user(&user)?;
    store.flush().await?;
    tracing::info!(user_id = %user.id, "user created");
    Ok(user)
}

pub fn get(store: &Store, id: &str) -> Result<UserRecord, ServerError> {
    let id = UserId::parse(id).map_err(|_| OpenAiError::not_found("No such user."))?;
    store
        .user(&id)?
        .ok_or_else(|| OpenAiError::not_found("No such user.").into())
}
