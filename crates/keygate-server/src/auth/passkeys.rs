//! WebAuthn with webauthn-rs: discoverable passkeys, user verification required,
//! attestation `none`, ES256/RS256. Ceremony state lives server-side in the store,
//! single use (taken, not read) and short-lived: an anonymous ceremony under a random
//! id, a signed-in one under its person, kind and starting session (see `save`).
//!
//! Two adjustments to webauthn-rs's passkey options, both client-side hints the server
//! does not rely on: registration asks for a *resident* (discoverable) credential so
//! usernameless sign-in works, and sign-in is a normal modal prompt rather than
//! conditional mediation.

use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use keygate_core::audit::Action;
use keygate_core::ids::{PasskeyId, UserId};
use keygate_core::time::{Clock, UnixTime};
use keygate_store::{
    CeremonyRecord, PasskeyInsert, PasskeyRecord, Store, UserRecord, is_person_ceremony_id,
    person_ceremony_id, person_ceremony_prefix,
};
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
use crate::services::audit::{Audit, Target};
use crate::services::error::ServiceError;
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
    clock: Clock,
}

/// The signed-in session that starts or finishes a ceremony: its person and the
/// session's public id (a signed-in ceremony belongs to one session, not the person).
#[derive(Clone, Copy)]
pub struct Signer<'a> {
    pub user: &'a UserId,
    pub session: &'a str,
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
            clock: config.clock.clone(),
        }
    }

    /// Why passkeys are off, if they are (logged as a warning at start).
    pub fn unavailable_reason(&self) -> Option<&str> {
        self.inner.as_ref().err().map(String::as_str)
    }

    fn webauthn(&self) -> Result<&Webauthn, ServerError> {
        self.inner
            .as_deref()
            .map_err(|why| ServiceError::PasskeysUnavailable(why.clone()).into())
    }

    // --- registration of a new person ------------------------------------------

    pub async fn register_start(&self, store: &Store, name: &str) -> Result<Started, ServerError> {
        let name = parse_name(name, "name")?;
        let user_id = UserId::generate();
        let (ccr, state) = self
            .webauthn()?
            .start_passkey_registration(user_handle(&user_id), &name, &name, None)
            .map_err(internal)?;
        let options = creation_options(&ccr)?;
        self.save(
            store,
            REGISTER,
            &state,
            None,
            Some(user_id),
            Some(name),
            options,
        )
        .await
    }

    pub async fn register_finish(
        &self,
        store: &Store,
        ceremony: &str,
        credential: Value,
    ) -> Result<UserRecord, ServerError> {
        let c = self.take(store, ceremony, REGISTER, None).await?;
        let state: PasskeyRegistration = decode_state(&c.state)?;
        let cred: RegisterPublicKeyCredential = parse_credential(credential)?;
        let passkey = self
            .webauthn()?
            .finish_passkey_registration(&cred, &state)
            .map_err(|e| rejected(Step::SignUp, e))?;
        let (Some(user_id), Some(name)) = (c.user_id, c.name) else {
            return Err(ServerError::Internal(
                "register ceremony without user".into(),
            ));
        };
        let now = self.clock.now();
        let user = UserRecord {
            id: user_id,
            name,
            created_at: now,
        };
        let record = new_record(&user.id, "Passkey 1", &passkey, now)?;
        match store.insert_user_with_passkey(&user, &record).await? {
            PasskeyInsert::Inserted => {}
            PasskeyInsert::CredentialTaken | PasskeyInsert::NoSuchUser => {
                tracing::info!("registration refused: credential id already registered");
                return Err(ServiceError::CredentialAlreadyRegistered.into());
            }
        }
        store.flush().await?;
        tracing::info!(user_id = %user.id, "person registered with a passkey");
        Ok(user)
    }

    // --- usernameless sign-in ----------------------------------------------------

    pub async fn login_start(&self, store: &Store) -> Result<Started, ServerError> {
        let (rcr, state) = self
            .webauthn()?
            .start_discoverable_authentication()
            .map_err(internal)?;
        let mut options = serde_json::to_value(&rcr).map_err(internal)?;
        if let Some(obj) = options.as_object_mut() {
            obj.remove("mediation");
        }
        self.save(store, LOGIN, &state, None, None, None, options)
            .await
    }

    pub async fn login_finish(
        &self,
        store: &Store,
        ceremony: &str,
        credential: Value,
    ) -> Result<(UserRecord, PasskeyRecord), ServerError> {
        let c = self.take(store, ceremony, LOGIN, None).await?;
        let state: DiscoverableAuthentication = decode_state(&c.state)?;
        let cred: PublicKeyCredential = parse_credential(credential)?;
        let webauthn = self.webauthn()?;
        let (handle, cred_id) = webauthn
            .identify_discoverable_authentication(&cred)
            .map_err(|e| rejected(Step::SignIn, e))?;
        let unknown = || ServiceError::CeremonyFailed(NOT_REGISTERED.to_owned());
        let mut record = store
            .passkey_by_credential(&URL_SAFE_NO_PAD.encode(cred_id))
            .await?
            .ok_or_else(unknown)?;
        if user_handle(&record.user_id) != handle {
            return Err(unknown().into());
        }
        let mut passkey: Passkey = decode_state(&record.passkey)?;
        let result = webauthn
            .finish_discoverable_authentication_v2(&cred, state, &passkey)
            .map_err(|e| rejected(Step::SignIn, e))?;
        update_record(&mut record, &mut passkey, &result, self.clock.now())?;
        store.put_passkey(&record).await?;
        let user = store.user(&record.user_id).await?.ok_or_else(unknown)?;
        Ok((user, record))
    }

    // --- step-up for the signed-in person ----------------------------------------

    /// A passkey assertion by the signed-in person, for `kind` (step-up, approvals),
    /// started by (and finishable only by) the session `by`.
    pub async fn assertion_start(
        &self,
        store: &Store,
        by: Signer<'_>,
        kind: &'static str,
    ) -> Result<Started, ServerError> {
        let passkeys = user_passkeys(store, by.user).await?;
        let (rcr, state) = self
            .webauthn()?
            .start_passkey_authentication(&passkeys)
            .map_err(internal)?;
        let options = serde_json::to_value(&rcr).map_err(internal)?;
        self.save(
            store,
            kind,
            &state,
            Some(by.session),
            Some(by.user.clone()),
            None,
            options,
        )
        .await
    }

    pub async fn assertion_finish(
        &self,
        store: &Store,
        by: Signer<'_>,
        ceremony: &str,
        credential: Value,
        kind: &'static str,
    ) -> Result<(), ServerError> {
        let user = by.user;
        let c = self.take(store, ceremony, kind, Some(by)).await?;
        if c.user_id.as_ref() != Some(user) {
            return Err(ServiceError::CeremonyFailed(OTHER_SESSION.to_owned()).into());
        }
        let state: PasskeyAuthentication = decode_state(&c.state)?;
        let cred: PublicKeyCredential = parse_credential(credential)?;
        let result = self
            .webauthn()?
            .finish_passkey_authentication(&cred, &state)
            .map_err(|e| rejected(Step::Check, e))?;
        let mut record = store
            .passkey_by_credential(&URL_SAFE_NO_PAD.encode(AsRef::<[u8]>::as_ref(result.cred_id())))
            .await?
            .filter(|r| &r.user_id == user)
            .ok_or_else(|| {
                ServiceError::CeremonyFailed(
                    "That passkey belongs to another account. Choose one of your own passkeys."
                        .to_owned(),
                )
            })?;
        let mut passkey: Passkey = decode_state(&record.passkey)?;
        update_record(&mut record, &mut passkey, &result, self.clock.now())?;
        store.put_passkey(&record).await?;
        Ok(())
    }

    // --- adding another passkey --------------------------------------------------

    pub async fn add_start(
        &self,
        store: &Store,
        user: &UserRecord,
        session: &str,
    ) -> Result<Started, ServerError> {
        let existing = user_passkeys(store, &user.id).await?;
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
        self.save(
            store,
            ADD,
            &state,
            Some(session),
            Some(user.id.clone()),
            None,
            options,
        )
        .await
    }

    pub async fn add_finish(
        &self,
        store: &Store,
        by: Signer<'_>,
        ceremony: &str,
        credential: Value,
        name: Option<&str>,
        audit: &Audit,
    ) -> Result<PasskeyRecord, ServerError> {
        let user = by.user;
        let c = self.take(store, ceremony, ADD, Some(by)).await?;
        if c.user_id.as_ref() != Some(user) {
            return Err(ServiceError::CeremonyFailed(OTHER_SESSION.to_owned()).into());
        }
        let state: PasskeyRegistration = decode_state(&c.state)?;
        let cred: RegisterPublicKeyCredential = parse_credential(credential)?;
        let passkey = self
            .webauthn()?
            .finish_passkey_registration(&cred, &state)
            .map_err(|e| rejected(Step::Add, e))?;
        let count = store.passkeys_for_user(user).await?.len();
        let name = match name {
            Some(n) => parse_name(n, "name")?,
            None => format!("Passkey {}", count + 1),
        };
        let record = new_record(user, &name, &passkey, self.clock.now())?;
        match store.insert_passkey(&record).await? {
            PasskeyInsert::Inserted => {}
            PasskeyInsert::CredentialTaken => {
                tracing::info!(user_id = %user, "passkey refused: credential id already registered");
                return Err(ServiceError::CredentialAlreadyRegistered.into());
            }
            PasskeyInsert::NoSuchUser => return Err(ServiceError::NotSignedIn.into()),
        }
        let detail = serde_json::json!({"name": record.name});
        let target = Some(Target::Passkey(&record.id));
        audit
            .record(store, Action::PasskeyAdded, Some(user), target, detail)
            .await?;
        tracing::info!(user_id = %user, passkey_id = %record.id, "passkey added");
        Ok(record)
    }

    // --- ceremony storage --------------------------------------------------------

    /// Stores a ceremony. A signed-in ceremony (step-up, adding a passkey, approving a
    /// connection) is keyed by person, kind and the starting session's public id
    /// (`keygate_store::person_ceremony_id`), so it replaces only that session's
    /// previous one of that kind — never another session's, not even the same
    /// person's: a live session holds at most one live ceremony per kind, and those are
    /// not counted by the anonymous live-ceremony cap. Anonymous ones (sign-up,
    /// sign-in) get a random id.
    #[allow(clippy::too_many_arguments)]
    async fn save<S: serde::Serialize>(
        &self,
        store: &Store,
        kind: &str,
        state: &S,
        session: Option<&str>,
        user_id: Option<UserId>,
        name: Option<String>,
        options: Value,
    ) -> Result<Started, ServerError> {
        let id = match (signed_in(kind), &user_id, session) {
            (false, _, None) => random_token(),
            (true, Some(user), Some(session)) if valid_session_id(session) => {
                person_ceremony_id(user, kind, session)
            }
            _ => {
                return Err(ServerError::Internal(
                    "signed-in ceremony without its person and session".into(),
                ));
            }
        };
        let record = CeremonyRecord {
            kind: kind.to_owned(),
            state: serde_json::to_string(state).map_err(internal)?,
            user_id,
            name,
            expires_at: self.clock.now() + self.ceremony_ttl.as_secs(),
        };
        store.put_ceremony(&id, &record).await?;
        Ok(Started {
            ceremony: id,
            options,
        })
    }

    /// Takes a ceremony of `kind` for its finish. A signed-in kind is looked up only
    /// under the id built from `by` (the calling session's person, `kind` and public
    /// id): any other id — another person's, or another session's of the same person
    /// — is refused before the store is touched, so nobody can spend a ceremony that
    /// another session started. An anonymous kind never takes a person's ceremony.
    async fn take(
        &self,
        store: &Store,
        id: &str,
        kind: &str,
        by: Option<Signer<'_>>,
    ) -> Result<CeremonyRecord, ServerError> {
        let gone = || ServiceError::CeremonyFailed(EXPIRED.to_owned());
        if id.is_empty() || id.len() > 128 {
            return Err(gone().into());
        }
        match (signed_in(kind), by) {
            (true, Some(by))
                if valid_session_id(by.session)
                    && id == person_ceremony_id(by.user, kind, by.session) => {}
            // This session's ceremony of another kind: not this one.
            (true, Some(by))
                if valid_session_id(by.session)
                    && id.starts_with(&person_ceremony_prefix(by.user))
                    && id.ends_with(&format!("~{}", by.session)) =>
            {
                return Err(gone().into());
            }
            (true, _) if is_person_ceremony_id(id) => {
                return Err(ServiceError::CeremonyFailed(OTHER_SESSION.to_owned()).into());
            }
            (true, _) => return Err(gone().into()),
            (false, _) if is_person_ceremony_id(id) => return Err(gone().into()),
            (false, _) => {}
        }
        let c = store.take_ceremony(id).await?.ok_or_else(gone)?;
        if c.kind != kind || c.expires_at <= self.clock.now() {
            return Err(gone().into());
        }
        Ok(c)
    }
}

/// Ceremonies started by a signed-in session (one live per person, kind and session).
fn signed_in(kind: &str) -> bool {
    matches!(kind, REAUTH | CONNECT_APPROVE | ADD)
}

/// A session public id usable in a ceremony id: non-empty and without the separator
/// (they are random base64url; an empty one would let sessions share a key).
fn valid_session_id(session: &str) -> bool {
    !session.is_empty() && !session.contains('~')
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

async fn user_passkeys(store: &Store, user: &UserId) -> Result<Vec<Passkey>, ServerError> {
    store
        .passkeys_for_user(user)
        .await?
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
    now: UnixTime,
) -> Result<(), ServerError> {
    passkey.update_credential(result);
    record.passkey = serde_json::to_string(passkey).map_err(internal)?;
    record.sign_count = result.counter();
    record.backup_eligible = result.backup_eligible();
    record.backup_state = result.backup_state();
    record.last_used_at = Some(now);
    Ok(())
}

fn parse_credential<T: serde::de::DeserializeOwned>(v: Value) -> Result<T, ServerError> {
    serde_json::from_value(v).map_err(|_| {
        ServiceError::invalid(
            "credential",
            "`credential` is not a WebAuthn credential (send PublicKeyCredential.toJSON()).",
        )
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

// --- what the person reads -------------------------------------------------------
//
// webauthn-rs's own error texts are written for developers ("The credential may have
// be compromised and should be inspected"); they go to the log, and the person reads
// what happened and what to do next.

const NOT_REGISTERED: &str = "This passkey isn't registered here. If you don't have an account yet, \
     create an account; if you do, sign in with the passkey you made for it.";
const EXPIRED: &str = "This passkey request has expired or was already used. Please try again.";
const OTHER_SESSION: &str =
    "This passkey request was started in another browser session. Please try again here.";

/// Which ceremony failed, for the wording.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Step {
    SignUp,
    SignIn,
    Check,
    Add,
}

fn rejected(step: Step, e: webauthn_rs::prelude::WebauthnError) -> ServerError {
    tracing::info!(error = ?e, step = ?step, "passkey rejected");
    ServiceError::CeremonyFailed(plain_message(step, &e)).into()
}

/// Plain words for a WebAuthn failure: what happened, and what to do.
fn plain_message(step: Step, e: &webauthn_rs::prelude::WebauthnError) -> String {
    use webauthn_rs::prelude::WebauthnError as W;
    let retry = match step {
        Step::SignUp => "Please try creating your account again.",
        Step::SignIn => "Please try signing in again.",
        Step::Check => "Please confirm with your passkey again.",
        Step::Add => "Please try adding the passkey again.",
    };
    let what = match e {
        W::InvalidRPOrigin | W::CredentialCrossOrigin | W::InvalidRPIDHash => {
            "Your passkey answered for a different web address than this keygate's, so it \
             wasn't accepted. Open keygate at its own address (not inside another site or \
             from an old link)."
        }
        W::MismatchedChallenge | W::ChallengeNotFound | W::InvalidClientDataType => {
            "That passkey answer belongs to another request (perhaps from another tab or an \
             earlier attempt)."
        }
        W::UserNotVerified | W::UserNotPresent | W::InconsistentUserVerificationPolicy => {
            "Your device didn't confirm it's you (with your screen lock, PIN, fingerprint or \
             face). Complete that check when your device asks; if it can't, use another \
             device or password manager."
        }
        W::CredentialPossibleCompromise => {
            "This passkey's use counter went backwards, which can mean it was copied, so \
             keygate didn't accept it. Sign in with another passkey, then check the passkeys \
             on your dashboard and remove any you don't recognise."
        }
        W::CredentialBackupEligibilityInconsistent => {
            "This passkey's backup setting changed since it was added, so keygate can no \
             longer trust it. Sign in with another passkey, then remove this one on your \
             dashboard and add it again."
        }
        W::CredentialNotFound | W::InvalidUserUniqueId => NOT_REGISTERED,
        W::CredentialAlreadyExists | W::CredentialExcludedFromRequest => {
            "This passkey is already registered here. Sign in with it, or choose another \
             device or password manager."
        }
        W::ParseBase64Failure(_)
        | W::ParseCBORFailure(_)
        | W::ParseJSONFailure(_)
        | W::ParseNOMFailure
        | W::ParseInsufficientBytesAvailable => {
            "Your browser sent a passkey answer keygate couldn't read. Try again, or use \
             another browser."
        }
        W::AuthenticationFailure | W::SignatureInvalid => {
            "The passkey's signature didn't check out, so it wasn't accepted. If this keeps \
             happening, use another passkey."
        }
        W::COSEKeyInvalidCBORValue
        | W::COSEKeyInvalidType
        | W::COSEKeyEDUnsupported
        | W::COSEKeyECDSAXYInvalid
        | W::COSEKeyRSANEInvalid
        | W::COSEKeyECDSAInvalidCurve
        | W::COSEKeyEDDSAXInvalid
        | W::COSEKeyEDDSAInvalidCurve
        | W::COSEKeyInvalidAlgorithm
        | W::CredentialInsecureCryptography
        | W::CredentialAlteredAlgFromRequest
        | W::AttestationNotSupported
        | W::MissingAttestationCredentialData => {
            "Your device offered a kind of passkey keygate can't use. Try another device or \
             password manager."
        }
        _ => {
            "keygate couldn't verify your passkey. If this keeps happening, try another \
             device or password manager."
        }
    };
    if what == NOT_REGISTERED {
        return what.to_owned();
    }
    format!("{what} {retry}")
}

#[cfg(test)]
mod tests {
    use super::*;
    use webauthn_rs::prelude::WebauthnError as W;

    #[test]
    fn webauthn_rs_texts_never_reach_the_person() {
        let errors = [
            W::InvalidRPOrigin,
            W::InvalidRPIDHash,
            W::MismatchedChallenge,
            W::UserNotVerified,
            W::CredentialPossibleCompromise,
            W::CredentialBackupEligibilityInconsistent,
            W::CredentialNotFound,
            W::CredentialExcludedFromRequest,
            W::ParseNOMFailure,
            W::COSEKeyInvalidType,
            W::AuthenticationFailure,
            W::Configuration,
            W::TrustFailure,
        ];
        for step in [Step::SignUp, Step::SignIn, Step::Check, Step::Add] {
            for e in &errors {
                let msg = plain_message(step, e);
                assert!(!msg.contains(&e.to_string()), "{e:?}: {msg}");
                for jargon in ["credential", "relying party", "compromised", "RP", "CBOR"] {
                    assert!(!msg.contains(jargon), "{e:?} says {jargon}: {msg}");
                }
                assert!(msg.ends_with('.'), "{msg}");
            }
        }
        assert!(plain_message(Step::SignIn, &W::CredentialNotFound).contains("create an account"));
        assert!(
            plain_message(Step::SignIn, &W::CredentialPossibleCompromise)
                .contains("another passkey")
        );
    }
}
