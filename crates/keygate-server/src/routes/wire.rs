//! Request bodies shared by several routes, each defined once. Responses are the
//! services' view types (`UserView`, `GrantView`, `IssuedGrant`, ...).

use keygate_core::time::UnixTime;
use secrecy::SecretString;
use serde::Deserialize;
use serde_json::Value;

use crate::error::ServerError;
use crate::services::grants::{self, GrantSpec, Terms};

/// `{"name": ...}`: signing up, renaming a passkey, creating a user (admin).
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Name {
    pub name: String,
}

/// `{}`: ceremony starts.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Empty {}

/// A finished WebAuthn ceremony.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Finish {
    pub ceremony: String,
    pub credential: Value,
    /// The new passkey's name (adding a passkey only).
    #[serde(default)]
    pub name: Option<String>,
}

/// `PUT /api/key`, `PUT /admin/users/{id}/openai-key`, `PUT /admin/operator-key`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PutKey {
    pub api_key: SecretString,
}

/// `POST /api/grants`, `POST /admin/users/{id}/grants`. `limits`, `plan` and
/// `expires_at` are read as JSON values and parsed by hand, so that a wrong type is a
/// 400 naming its field (`limits.budget.usd`) rather than serde's position.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateGrant {
    pub name: String,
    #[serde(default)]
    pub models: Option<Vec<String>>,
    #[serde(default)]
    pub scopes: Option<Vec<String>>,
    #[serde(default)]
    pub limits: Option<Value>,
    #[serde(default)]
    pub plan: Option<Value>,
    #[serde(default)]
    pub expires_at: Option<Value>,
}

impl CreateGrant {
    pub fn into_spec(self, now: UnixTime) -> Result<GrantSpec, ServerError> {
        let terms = Terms::parse(
            self.plan.as_ref(),
            self.limits.as_ref(),
            self.expires_at.as_ref(),
            now,
        )?;
        Ok(GrantSpec {
            name: self.name,
            models: self.models,
            scopes: self.scopes,
            origin: None,
            plan: terms.plan,
            limits: terms.limits,
            expires_at: terms.expires_at,
        })
    }
}

/// `POST /admin/keys {"name","scope","expires_at"?}`. `scope` and `expires_at` are read
/// as JSON values so a wrong one is a 400 naming its field.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateAdminKey {
    pub name: String,
    pub scope: Value,
    #[serde(default)]
    pub expires_at: Option<Value>,
}

impl CreateAdminKey {
    pub fn parse(
        self,
        now: UnixTime,
    ) -> Result<
        (
            String,
            keygate_core::admin_scope::AdminScope,
            Option<UnixTime>,
        ),
        ServerError,
    > {
        let scope = serde_json::from_value(self.scope).map_err(|_| {
            ServerError::from(crate::services::error::ServiceError::invalid(
                "scope",
                "`scope` must be \"read\", \"write\" or \"admin\"",
            ))
        })?;
        let expires_at = match self.expires_at.as_ref() {
            Some(v) => grants::parse_expires_at(v, now)?,
            None => None,
        };
        Ok((self.name, scope, expires_at))
    }
}

/// `POST …/grants/{id}/rotate {"grace_seconds"?}`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Rotate {
    #[serde(default)]
    pub grace_seconds: Option<Value>,
}

impl Rotate {
    pub fn grace(&self) -> Result<u64, ServerError> {
        grants::parse_grace(self.grace_seconds.as_ref())
    }
}
