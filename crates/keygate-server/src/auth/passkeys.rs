//! WebAuthn with webauthn-rs: discoverable passkeys, user verification required,
//! attestation `none`, ES256/RS256. Ceremony state lives server-side in the store,
//! keyed by a random ceremony id, single use (taken, not read) and short-lived.
//!
//! Two adjustments to webauthn-rs's passkey options, both client-side hints the server
//! does not rely on: registration asks for a *resident* (discoverable) credential so
//! usernameless sign-in works, and sign-in is a normal modal prompt rather than
//! conditional mediation.

use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use keygate_core::ids::{PasskeyId, UserId};
use keygate_core::openai_error::OpenAiError;
use keygate_core::time::{self, UnixTime};
use keygate_store::{CeremonyRecord, PasskeyRecord, Store, UserRecord};
use rand::RngCore;
use serde_json::Value;
use url::Url;
use webauthn_rs::prelude::{
    DiscoverableAuthentication, Passkey, PasskeyAuthentication, PasskeyRegistration,
    PublicKeyCredential, RegisterPublicKeyCredential, Uuid,
};
use webauthn_rs::{Webauthn, WebauthnBuilder};

use crate::config::Config;
use crate::error::ServerError;
use crate::services::users::parse_name;

const REGISTER: &str = "register";
const LOGIN: &str = "login";
pub const REAUTH: &str = "reauth";
/// The passkey assertion that approves a connect request.
pub const CONNECT_APPROVE: &str = "connect_approve";
const ADD: &str = "add_passkey";

/// The passkey service, or why passkeys cannot work with this configuration.
#[derive(Clone)]
pub struct Passkeys {
    inner: Result<std::sync::Arc<Webauthn>, String>,
    ceremony_ttl: Duration,
}

/// A started ceremony: what the browser needs.
pub struct Started {
    pub ceremony: String,
    pub options: Value,
}

impl Passkeys {
    pub fn new(config: &Config) -> Self {
        Self {
            inner: build(config).map(std::sync::Arc::new),
            ceremony_ttl: config.ceremony_ttl,
        }
    }

    /// Why passkeys are off, if they are (logged as a warning at start).
    pub fn unavailable_reason(&self) -> Option<&str> {
        self.inner.as_ref().err().map(String::as_str)
    }

    fn webauthn(&self) -> Result<&Webauthn, ServerError> {
        self.inner
            .as_deref()
            .map_err(|why| OpenAiError::passkeys_unavailable(why.clone()).into())
    }

    // --- registration of a new person ------------------------------------------

    pub fn register_start(&self, store: &Store, name: &str) -> Result<Started, ServerError> {
        let name = parse_name(name, "name")?;
        let user_id = UserId::generate();
        let (ccr, state) = self
            .webauthn()?
            .start_passkey_registration(user_handle(&user_id), &name, &name, None)
            .map_err(internal)?;
        let options = creation_options(&ccr)?;
        self.save(store, REGISTER, &state, Some(user_id), Some(name), options)
    }

    pub async fn register_finish(
        &self,
        store: &Store,
        ceremony: &str,
        credential: Value,
    ) -> Result<UserRecord, ServerError> {
        let c = self.take(store, ceremony, REGISTER)?;
        let state: PasskeyRegistration = decode_state(&c.state)?;
        let cred: RegisterPublicKeyCredential = parse_credential(credential)?;
        let passkey = self
            .webauthn()?
            .finish_passkey_registration(&cred, &state)
            .map_err(|e| rejected("registration", e))?;
        let (Some(user_id), Some(name)) = (c.user_id, c.name) else {
            return Err(ServerError::Internal(
                "register ceremony without user".into(),
            ));
        };
        let now = time::now();
        let user = UserRecord {
            id: user_id,
            name,
            created_at: now,
        };
        store.insert_user(&user)?;
        store.insert_passkey(&new_record(&user.id, "Passkey 1", &passkey, now)?)?;
        store.flush().await?;
        tracing::info!(user_id = %user.id, "person registered with a passkey");
        Ok(user)
    }

    // --- usernameless sign-in ----------------------------------------------------

    pub fn login_start(&self, store: &Store) -> Result<Started, ServerError> {
        let (rcr, state) = self
            .webauthn()?
            .start_discoverable_authentication()
            .map_err(internal)?;
        let mut options = serde_json::to_value(&rcr).map_err(internal)?;
        if let Some(obj) = options.as_object_mut() {
            obj.remove("mediation");
        }
        self.save(store, LOGIN, &state, None, None, options)
    }

    pub async fn login_finish(
        &self,
        store: &Store,
        ceremony: &str,
        credential: Value,
    ) -> Result<UserRecord, ServerError> {
        let c = self.take(store, ceremony, LOGIN)?;
        let state: DiscoverableAuthentication = decode_state(&c.state)?;
        let cred: PublicKeyCredential = parse_credential(credential)?;
        let webauthn = self.webauthn()?;
        let (handle, cred_id) = webauthn
            .identify_discoverable_authentication(&cred)
            .map_err(|e| rejected("sign-in", e))?;
        let unknown = || {
            OpenAiError::ceremony_failed(
                "This passkey is not registered with keygate (it may belong to a deleted account).",
            )
        };
        let mut record = store
            .passkey_by_credential(&URL_SAFE_NO_PAD.encode(cred_id))?
            .ok_or_else(unknown)?;
        if user_handle(&record.user_id) != handle {
            return Err(unknown().into());
        }
        let mut passkey: Passkey = decode_state(&record.passkey)?;
        let result = webauthn
            .finish_discoverable_authentication_v2(&cred, state, &passkey)
            .map_err(|e| rejected("sign-in", e))?;
        update_record(&mut record, &mut passkey, &result)?;
        store.put_passkey(&record)?;
        let user = store.user(&record.user_id)?.ok_or_else(unknown)?;
        Ok(user)
    }

    // --- step-up for the signed-in person ----------------------------------------

    /// A passkey assertion by the signed-in person, for `kind` (step-up, approvals).
    pub fn assertion_start(
        &self,
        store: &Store,
        user: &UserId,
        kind: &'static str,
    ) -> Result<Started, ServerError> {
        let passkeys = user_passkeys(store, user)?;
        let (rcr, state) = self
            .webauthn()?
            .start_passkey_authentication(&passkeys)
            .map_err(internal)?;
        let options = serde_json::to_value(&rcr).map_err(internal)?;
        self.save(store, kind, &state, Some(user.clone()), None, options)
    }

    pub fn assertion_finish(
        &self,
        store: &Store,
        user: &UserId,
        ceremony: &str,
        credential: Value,
        kind: &'static str,
    ) -> Result<(), ServerError> {
        let c = self.take(store, ceremony, kind)?;
        if c.user_id.as_ref() != Some(user) {
            return Err(OpenAiError::ceremony_failed(
                "This passkey check belongs to another session.",
            )
            .into());
        }
        let state: PasskeyAuthentication = decode_state(&c.state)?;
        let cred: PublicKeyCredential = parse_credential(credential)?;
        let result = self
            .webauthn()?
            .finish_passkey_authentication(&cred, &state)
            .map_err(|e| rejected("check", e))?;
        let mut record = store
            .passkey_by_credential(
                &URL_SAFE_NO_PAD.encode(AsRef::<[u8]>::as_ref(result.cred_id())),
            )?
            .filter(|r| &r.user_id == user)
            .ok_or_else(|| OpenAiError::ceremony_failed("That passkey is not one of yours."))?;
        let mut passkey: Passkey = decode_state(&record.passkey)?;
        update_record(&mut record, &mut passkey, &result)?;
        store.put_passkey(&record)?;
        Ok(())
    }

    // --- adding another passkey --------------------------------------------------

    pub fn add_start(&self, store: &Store, user: &UserRecord) -> Result<Started, ServerError> {
        let existing = user_passkeys(store, &user.id)?;
        let exclude = existing.iter().map(|p| p.cred_id().clone()).collect();
        let (ccr, state) = self
            .webauthn()?
            .start_passkey_registration(
                user_handle(&user.id),
                &user.name,
                &user.name,
                Some(exclude),
            )
            .map_err(internal)?;
        let options = creation_options(&ccr)?;
        self.save(store, ADD, &state, Some(user.id.clone()), None, options)
    }

    pub async fn add_finish(
        &self,
        store: &Store,
        user: &UserId,
        ceremony: &str,
        credential: Value,
        name: Option<&str>,
    ) -> Result<PasskeyRecord, ServerError> {
        let c = self.take(store, ceremony, ADD)?;
        if c.user_id.as_ref() != Some(user) {
            return Err(
                OpenAiError::ceremony_failed("This ceremony belongs to another session.").into(),
            );
        }
        let state: PasskeyRegistration = decode_state(&c.state)?;
        let cred: RegisterPublicKeyCredential = parse_credential(credential)?;
        let passkey = self
            .webauthn()?
            .finish_passkey_registration(&cred, &state)
            .map_err(|e| rejected("registration", e))?;
        let count = store.passkeys_for_user(user)?.len();
        let name = match name {
            Some(n) => parse_name(n, "name")?,
            None => format!("Passkey {}", count + 1),
        };
        let record = new_record(user, &name, &passkey, time::now())?;
        if store
            .passkey_by_credential(&record.credential_id)?
            .is_some()
        {
            return Err(OpenAiError::ceremony_failed("This passkey is already registered.").into());
        }
        store.insert_passkey(&record)?;
        store.flush().await?;
        tracing::info!(user_id = %user, passkey_id = %record.id, "passkey added");
        Ok(record)
    }

    // --- ceremony storage --------------------------------------------------------

    fn save<S: serde::Serialize>(
        &self,
        store: &Store,
        kind: &str,
        state: &S,
        user_id: Option<UserId>,
        name: Option<String>,
        options: Value,
    ) -> Result<Started, ServerError> {
        let id = random_token();
        let record = CeremonyRecord {
            kind: kind.to_owned(),
            state: serde_json::to_string(state).map_err(internal)?,
            user_id,
            name,
            expires_at: time::now() + self.ceremony_ttl.as_secs(),
        };
        store.put_ceremony(&id, &record)?;
        Ok(Started {
            ceremony: id,
            options,
        })
    }

    fn take(&self, store: &Store, id: &str, kind: &str) -> Result<CeremonyRecord, ServerError> {
        let gone = || {
            OpenAiError::ceremony_failed(
                "This passkey request has expired or was already used. Please try again.",
            )
        };
        if id.is_empty() || id.len() > 128 {
            return Err(gone().into());
        }
        let c = store.take_ceremony(id)?.ok_or_else(gone)?;
        if c.kind != kind || c.expires_at <= time::now() {
            return Err(gone().into());
        }
        Ok(c)
    }
}

/// webauthn-rs wants a UUID per person; a user id is 16 ASCII bytes, exactly a UUID's
/// size, so the handle is the id itself and needs no storage of its own.
pub fn user_handle(user: &UserId) -> Uuid {
    let mut b = [0u8; 16];
    for (dst, src) in b.iter_mut().zip(user.as_str().bytes()) {
        *dst = src;
    }
    Uuid::from_bytes(b)
}

pub fn random_token() -> String {
    let mut b = [0u8; 32];
    rand::rng().fill_bytes(&mut b);
    URL_SAFE_NO_PAD.encode(b)
}

fn build(config: &Config) -> Result<Webauthn, String> {
    let origin: Url = config.rp_origin.clone().unwrap_or_else(|| {
        Url::parse(&config.public_origin()).unwrap_or_else(|_| config.public_url.clone())
    });
    let rp_id = match &config.rp_id {
        Some(id) => id.clone(),
        None => match origin.host() {
            Some(url::Host::Domain(d)) => d.to_owned(),
            Some(host) => {
                return Err(format!(
                    "Passkeys need a domain name, but keygate's public URL uses the IP address {host}. \
                     Open keygate at http://localhost:{port} or set KEYGATE_PUBLIC_URL to a domain \
                     (https://vault.example.com).",
                    port = origin.port_or_known_default().unwrap_or(80)
                ));
            }
            None => return Err("keygate's public URL has no host".into()),
        },
    };
    WebauthnBuilder::new(&rp_id, &origin)
        .and_then(|b| b.rp_name("keygate").build())
        .map_err(|e| {
            format!("Passkeys are not available with rp_id {rp_id} and origin {origin}: {e}. Set KEYGATE_RP_ID / KEYGATE_PUBLIC_URL.")
        })
}

/// Registration options asking for a discoverable credential.
fn creation_options(ccr: &impl serde::Serialize) -> Result<Value, ServerError> {
    let mut options = serde_json::to_value(ccr).map_err(internal)?;
    if let Some(sel) = options
        .get_mut("publicKey")
        .and_then(|pk| pk.get_mut("authenticatorSelection"))
        .and_then(Value::as_object_mut)
    {
        sel.insert("residentKey".into(), "required".into());
        sel.insert("requireResidentKey".into(), true.into());
    }
    Ok(options)
}

fn user_passkeys(store: &Store, user: &UserId) -> Result<Vec<Passkey>, ServerError> {
    store
        .passkeys_for_user(user)?
        .iter()
        .map(|r| decode_state(&r.passkey))
        .collect()
}

fn new_record(
    user: &UserId,
    name: &str,
    passkey: &Passkey,
    now: UnixTime,
) -> Result<PasskeyRecord, ServerError> {
    let cred = passkey_credential_view(passkey)?;
    Ok(PasskeyRecord {
        id: PasskeyId::generate(),
        user_id: user.clone(),
        name: name.to_owned(),
        credential_id: URL_SAFE_NO_PAD.encode(AsRef::<[u8]>::as_ref(passkey.cred_id())),
        passkey: serde_json::to_string(passkey).map_err(internal)?,
        created_at: now,
        last_used_at: None,
        sign_count: cred.0,
        backup_eligible: cred.1,
        backup_state: cred.2,
    })
}

/// (counter, backup eligible, backup state) as stored inside webauthn-rs's `Passkey`.
fn passkey_credential_view(passkey: &Passkey) -> Result<(u32, bool, bool), ServerError> {
    let v = serde_json::to_value(passkey).map_err(internal)?;
    let cred = &v["cred"];
    Ok((
        cred["counter"].as_u64().unwrap_or(0) as u32,
        cred["backup_eligible"].as_bool().unwrap_or(false),
        cred["backup_state"].as_bool().unwrap_or(false),
    ))
}

fn update_record(
    record: &mut PasskeyRecord,
    passkey: &mut Passkey,
    result: &webauthn_rs::prelude::AuthenticationResult,
) -> Result<(), ServerError> {
    passkey.update_credential(result);
    record.passkey = serde_json::to_string(passkey).map_err(internal)?;
    record.sign_count = result.counter();
    record.backup_eligible = result.backup_eligible();
    record.backup_state = result.backup_state();
    record.last_used_at = Some(time::now());
    Ok(())
}

fn parse_credential<T: serde::de::DeserializeOwned>(v: Value) -> Result<T, ServerError> {
    serde_json::from_value(v).map_err(|_| {
        OpenAiError::invalid_request(
            "`credential` is not a WebAuthn credential (send PublicKeyCredential.toJSON()).",
        )
        .with_param("credential")
        .into()
    })
}

fn decode_state<T: serde::de::DeserializeOwned>(s: &str) -> Result<T, ServerError> {
    serde_json::from_str(s)
        .map_err(|e| ServerError::Internal(format!("stored WebAuthn state unreadable: {e}")))
}

fn internal(e: impl std::fmt::Display) -> ServerError {
    ServerError::Internal(format!("webauthn: {e}"))
}

fn rejected(what: &str, e: webauthn_rs::prelude::WebauthnError) -> ServerError {
    tracing::info!(error = ?e, "passkey {what} rejected");
    OpenAiError::ceremony_failed(format!(
        "The passkey {what} was not accepted ({e}). Please try again."
    ))
    .into()
}
