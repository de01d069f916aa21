use keygate_core::ids::{GrantId, UserId};
use keygate_core::scope::{self, Scope};
use keygate_core::time::UnixTime;
use keygate_core::token;
use keygate_store::{GrantRecord, GrantState, Store};
use secrecy::{ExposeSecret, SecretString};
use serde::{Serialize, Serializer};

use crate::error::ServerError;
use crate::services::error::{Missing, ServiceError};
use crate::services::users::parse_name;

const MAX_MODELS: usize = 256;

/// A new grant and its token, which exists only in this value: shown once.
pub struct NewGrant {
    pub token: SecretString,
    pub grant: GrantRecord,
}

impl NewGrant {
    /// The answer that hands the key out (grant creation, popup approval).
    pub fn issued(self, base_url: String) -> IssuedGrant {
        IssuedGrant {
            grant: GrantView::from(&self.grant),
            api_key: self.token,
            base_url,
        }
    }

    /// The redirect flow's code-exchange answer.
    pub fn exchanged(self, base_url: String) -> ExchangedGrant {
        ExchangedGrant {
            grant_id: self.grant.id.to_string(),
            api_key: self.token,
            base_url,
        }
    }
}

/// `{api_key, base_url, grant}`: the one time a grant's key is shown. No `Debug`.
#[derive(Serialize)]
pub struct IssuedGrant {
    #[serde(serialize_with = "expose")]
    pub api_key: SecretString,
    pub base_url: String,
    pub grant: GrantView,
}

/// `{api_key, base_url, grant_id}`: the code exchange's answer. No `Debug`.
#[derive(Serialize)]
pub struct ExchangedGrant {
    #[serde(serialize_with = "expose")]
    pub api_key: SecretString,
    pub base_url: String,
    pub grant_id: String,
}

/// The key leaves keygate exactly here, in the answer that hands it out.
fn expose<S: Serializer>(key: &SecretString, out: S) -> Result<S::Ok, S::Error> {
    out.serialize_str(key.expose_secret())
}

/// What a grant looks like on the wire; never carries a secret or its hash.
#[derive(Serialize)]
pub struct GrantView {
    pub id: String,
    pub user_id: String,
    pub name: String,
    pub origin: Option<String>,
    pub models: Vec<String>,
    pub state: GrantState,
    pub created_at: UnixTime,
    pub last_used_at: Option<UnixTime>,
    pub expires_at: Option<UnixTime>,
    pub revoked_at: Option<UnixTime>,
    pub plan: Option<String>,
    pub scopes: Vec<Scope>,
}

impl From<&GrantRecord> for GrantView {
    fn from(g: &GrantRecord) -> Self {
        Self {
            id: g.id.to_string(),
            user_id: g.user_id.to_string(),
            name: g.name.clone(),
            origin: g.origin.clone(),
            models: g.models.clone(),
            state: g.state,
            created_at: g.created_at,
            last_used_at: g.last_used_at,
            expires_at: g.expires_at,
            revoked_at: g.revoked_at,
            plan: g.plan.clone(),
            scopes: g.scopes.clone(),
        }
    }
}

/// Model ids: trimmed, non-empty, printable, de-duplicated, order kept.
pub fn parse_models(raw: Option<Vec<String>>) -> Result<Vec<String>, ServerError> {
    let mut out: Vec<String> = Vec::new();
    for m in raw.unwrap_or_default() {
        let m = m.trim().to_owned();
        if m.is_empty() || m.len() > 128 || !m.bytes().all(|b| b.is_ascii_graphic()) {
            return Err(ServiceError::invalid(
                "models",
                "each entry of `models` must be a model id of 1–128 printable characters",
            )
            .into());
        }
        if !out.contains(&m) {
            out.push(m);
        }
    }
    if out.len() > MAX_MODELS {
        return Err(ServiceError::invalid("models", format!("at most {MAX_MODELS} models")).into());
    }
    Ok(out)
}

/// Scope names as sent (`None` = the default, `["inference"]`); an unknown name or an
/// empty list is a 400 naming `scopes`.
pub fn parse_scopes(raw: Option<&[String]>) -> Result<Vec<Scope>, ServerError> {
    scope::parse_scopes(raw).map_err(|e| ServiceError::invalid("scopes", e.to_string()).into())
}

/// What a new grant is for: its name, models (none = all), endpoint scopes (none =
/// inference), bound origin and plan.
#[derive(Default)]
pub struct GrantSpec {
    pub name: String,
    pub models: Option<Vec<String>>,
    pub scopes: Option<Vec<String>>,
    pub origin: Option<String>,
    pub plan: Option<String>,
}

/// Mints a grant for `user` at `now`; its token exists only in the returned value.
pub async fn create(
    store: &Store,
    user: &UserId,
    spec: GrantSpec,
    now: UnixTime,
) -> Result<NewGrant, ServerError> {
    let GrantSpec {
        name,
        models,
        scopes,
        origin,
        plan,
    } = spec;
    let scopes = parse_scopes(scopes.as_deref())?;
    let id = GrantId::generate();
    let issued = token::issue(&id);
    let grant = GrantRecord {
        id,
        user_id: user.clone(),
        name: parse_name(&name, "name")?,
        origin,
        models: parse_models(models)?,
        state: GrantState::Active,
        secret_hash: issued.hash.to_hex(),
        created_at: now,
        last_used_at: None,
        revoked_at: None,
        expires_at: None,
        plan,
        scopes,
        limits: Default::default(),
        previous_secret_hash: None,
        previous_until: None,
    };
    store.insert_grant(&grant)?;
    store.flush().await?;
    tracing::info!(grant_id = %grant.id, user_id = %user, "grant created");
    Ok(NewGrant {
        token: issued.token,
        grant,
    })
}

pub fn list(store: &Store, user: &UserId) -> Result<Vec<GrantView>, ServerError> {
    Ok(store
        .grants_for_user(user)?
        .iter()
        .map(GrantView::from)
        .collect())
}

/// Issues a new key for an existing active grant of `owner`; the old key stops working.
/// With `scopes`, the grant's scopes become exactly those (a re-approval shows them).
pub async fn rekey(
    store: &Store,
    id: &GrantId,
    owner: &UserId,
    scopes: Option<Vec<Scope>>,
) -> Result<NewGrant, ServerError> {
    let not_found = || ServiceError::NotFound(Missing::ActiveConnection);
    let existing = store.grant(id)?.ok_or_else(not_found)?;
    if existing.user_id != *owner || existing.state != GrantState::Active {
        return Err(not_found().into());
    }
    let issued = token::issue(id);
    let hash = issued.hash.to_hex();
    let grant = store
        .update_grant(id, |g| {
            g.secret_hash = hash.clone();
            if let Some(s) = &scopes {
                g.scopes = s.clone();
            }
        })?
        .ok_or_else(not_found)?;
    store.flush().await?;
    tracing::info!(grant_id = %id, "grant re-keyed");
    Ok(NewGrant {
        token: issued.token,
        grant,
    })
}

/// Revokes a grant; with `owner`, only if it belongs to that person. Durable before
/// returning, so the very next request with the token is refused.
pub async fn revoke(
    store: &Store,
    id: &GrantId,
    owner: Option<&UserId>,
    now: UnixTime,
) -> Result<GrantRecord, ServerError> {
    let not_found = || ServiceError::NotFound(Missing::Grant);
    let existing = store.grant(id)?.ok_or_else(not_found)?;
    if owner.is_some_and(|o| *o != existing.user_id) {
        return Err(not_found().into());
    }
    let revoked = store.revoke_grant(id, now)?.ok_or_else(not_found)?;
    store.flush().await?;
    tracing::info!(grant_id = %id, "grant revoked");
    Ok(revoked)
}
