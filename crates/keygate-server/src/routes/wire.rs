//! Request bodies shared by several routes, each defined once. Responses are the
//! services' view types (`UserView`, `GrantView`, `IssuedGrant`, ...).

use secrecy::SecretString;
use serde::Deserialize;
use serde_json::Value;

use crate::services::grants::GrantSpec;

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

/// `PUT /api/key`, `PUT /admin/users/{id}/openai-key`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PutKey {
    pub api_key: SecretString,
}

/// `POST /api/grants`, `POST /admin/users/{id}/grants`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateGrant {
    pub name: String,
    #[serde(default)]
    pub models: Option<Vec<String>>,
    #[serde(default)]
    pub scopes: Option<Vec<String>>,
}

impl From<CreateGrant> for GrantSpec {
    fn from(body: CreateGrant) -> Self {
        GrantSpec {
            name: body.name,
            models: body.models,
            scopes: body.scopes,
            ..GrantSpec::default()
        }
    }
}
