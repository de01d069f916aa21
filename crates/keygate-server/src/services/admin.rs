//! The operator's side of the admin API: the person's own services, for any person
//! named by id, who must exist ("no such user" otherwise).

use keygate_core::ids::UserId;
use keygate_core::keyring::Keyring;
use keygate_core::time::UnixTime;
use keygate_store::Store;
use secrecy::{ExposeSecret, SecretString};

use crate::config::Config;
use crate::error::ServerError;
use crate::services::audit::Audit;
use crate::services::grants::{self, Caller, GrantSpec, GrantView, NewGrant};
use crate::services::users::{self, UserView};
use crate::services::{account, vault};

pub async fn get_user(store: &Store, user: &UserId) -> Result<UserView, ServerError> {
    Ok(UserView::from(&users::get(store, user).await?))
}

/// Deletes a person the operator names, through the same service as the person's own
/// `DELETE /api/account`; unlike there, the person may not exist (404).
pub async fn delete_user(store: &Store, user: &UserId, audit: &Audit) -> Result<(), ServerError> {
    let user = users::get(store, user).await?;
    account::delete(store, &user.id, audit).await
}

/// Stores `user`'s OpenAI key (not checked with the upstream: the operator vouches).
pub async fn put_key(
    store: &Store,
    keyring: &Keyring,
    user: &UserId,
    key: &SecretString,
    now: UnixTime,
    audit: &Audit,
) -> Result<(), ServerError> {
    let user = users::get(store, user).await?;
    vault::put_key(store, keyring, &user.id, key.expose_secret(), now, audit).await?;
    Ok(())
}

/// An operator's grant: any limits, any plan the configuration has.
pub async fn create_grant(
    store: &Store,
    config: &Config,
    user: &UserId,
    spec: GrantSpec,
    now: UnixTime,
    audit: &Audit,
) -> Result<NewGrant, ServerError> {
    let user = users::get(store, user).await?;
    grants::create(store, config, &user.id, spec, Caller::Operator, now, audit).await
}

pub async fn list_grants(store: &Store, user: &UserId) -> Result<Vec<GrantView>, ServerError> {
    let user = users::get(store, user).await?;
    grants::list(store, &user.id).await
}
