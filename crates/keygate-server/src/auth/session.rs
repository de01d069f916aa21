//! Cookie sessions. The cookie holds a random 256-bit id; the store holds only its
//! SHA-256. Sessions expire when idle and absolutely; a passkey assertion makes a
//! session *fresh* for `fresh_window` (5 minutes by default), which sensitive actions require ([`FreshSession`]).

use std::future::Future;
use std::pin::Pin;

use actix_web::cookie::{Cookie, SameSite, time::Duration as CookieDuration};
use actix_web::dev::Payload;
use actix_web::{FromRequest, HttpRequest, web};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use keygate_core::ids::UserId;
use keygate_core::secret::sha256_hex;
use keygate_core::time::UnixTime;
use keygate_store::{SessionInsert, SessionRecord, Store, UserRecord};
use rand::RngCore;
use serde::Serialize;

use crate::auth::passkeys::{Signer, random_token};
use crate::config::Config;
use crate::error::ServerError;
use crate::services::error::{Missing, ServiceError};
use crate::state::AppState;

/// Write `last_seen_at` at most this often, so reads stay reads.
const TOUCH_EVERY_SECS: u64 = 60;

/// The cookie's name: `__Host-` prefixed (and `Secure`) when keygate is served over
/// https; plain for `http://localhost` development, where browsers reject both.
pub fn cookie_name(config: &Config) -> &'static str {
    if is_https(config) {
        "__Host-keygate_session"
    } else {
        "keygate_session"
    }
}

fn is_https(config: &Config) -> bool {
    config.public_url.scheme() == "https"
}

/// Most sessions one person keeps: signing in once more ends their oldest session,
/// so a script signing in over and over cannot grow the store without bound.
pub const MAX_SESSIONS_PER_PERSON: usize = 20;

/// How much of a `User-Agent` the sessions list keeps.
const MAX_USER_AGENT_CHARS: usize = 200;

/// Starts a fresh session for `user`; returns the cookie to set. `user_agent` is the
/// browser's `User-Agent` header, shown in the person's sessions list.
pub async fn create(
    st: &AppState,
    user: &UserId,
    user_agent: Option<&str>,
) -> Result<Cookie<'static>, ServerError> {
    let (store, config) = (&st.store, &st.config);
    let id = random_token();
    let now = st.clock.now();
    let record = SessionRecord {
        user_id: user.clone(),
        created_at: now,
        last_seen_at: now,
        fresh_until: now + config.fresh_window.as_secs(),
        public_id: public_id(),
        user_agent: user_agent.and_then(clean_user_agent),
        seq: 0,
    };
    match store
        .insert_session(&sha256_hex(&id), &record, MAX_SESSIONS_PER_PERSON)
        .await?
    {
        SessionInsert::Inserted { ended } => {
            if ended > 0 {
                tracing::info!(user_id = %user, ended, "oldest sessions ended (per-person cap)");
            }
        }
        SessionInsert::NoSuchUser => return Err(ServiceError::NotSignedIn.into()),
    }
    store.flush().await?;
    Ok(build_cookie(
        config,
        id,
        config.session_absolute_timeout.as_secs() as i64,
    ))
}

/// The request's `User-Agent`, if it is readable text.
pub fn user_agent(req: &HttpRequest) -> Option<&str> {
    req.headers()
        .get(actix_web::http::header::USER_AGENT)
        .and_then(|v| v.to_str().ok())
}

/// The `User-Agent` as the sessions list shows it: printable, at most 200 characters.
fn clean_user_agent(raw: &str) -> Option<String> {
    let ua: String = raw
        .chars()
        .filter(|c| !c.is_control())
        .take(MAX_USER_AGENT_CHARS)
        .collect();
    let ua = ua.trim();
    (!ua.is_empty()).then(|| ua.to_owned())
}

/// A session's public name: random, unrelated to its cookie.
fn public_id() -> String {
    let mut b = [0u8; 12];
    rand::rng().fill_bytes(&mut b);
    URL_SAFE_NO_PAD.encode(b)
}

/// A session as its person sees it in the sessions list.
#[derive(Debug, Serialize)]
pub struct SessionView {
    pub id: String,
    pub created_at: UnixTime,
    pub last_seen_at: UnixTime,
    pub user_agent: Option<String>,
    pub current: bool,
}

/// Whether a session is over: idle too long, or past its absolute lifetime.
fn expired(record: &SessionRecord, config: &Config, now: UnixTime) -> bool {
    let idle = config.session_idle_timeout.as_secs();
    let absolute = config.session_absolute_timeout.as_secs();
    now >= record.last_seen_at.saturating_add(idle)
        || now >= record.created_at.saturating_add(absolute)
}

/// The signed-in person's live sessions, oldest first, this one marked `current`
/// (expired ones that wait for the sweep are left out).
pub async fn list(st: &AppState, current: &UserSession) -> Result<Vec<SessionView>, ServerError> {
    let (store, config) = (&st.store, &st.config);
    let now = st.clock.now();
    let mut out = Vec::new();
    for (hash, mut rec) in store.sessions_for_user(current.user_id()).await? {
        if expired(&rec, config, now) {
            continue;
        }
        if rec.public_id.is_empty() {
            rec.public_id = public_id();
            store.put_session(&hash, &rec).await?;
        }
        out.push(SessionView {
            id: rec.public_id,
            created_at: rec.created_at,
            last_seen_at: rec.last_seen_at,
            user_agent: rec.user_agent,
            current: hash == current.hash,
        });
    }
    Ok(out)
}

/// What [`end_one`] ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ended {
    /// This very session (the browser should drop its cookie).
    Current,
    Other,
}

/// Ends one of the signed-in person's sessions, named by its public id. Someone
/// else's session, or an unknown id, is "not found". Ending *another* session needs a
/// fresh session (a stolen cookie must not sign the owner out of their devices);
/// ending this one is a plain sign-out.
pub async fn end_one(
    store: &Store,
    current: &UserSession,
    public_id: &str,
    now: UnixTime,
) -> Result<Ended, ServerError> {
    let found = store
        .sessions_for_user(current.user_id())
        .await?
        .into_iter()
        .find(|(_, rec)| !rec.public_id.is_empty() && rec.public_id == public_id);
    let Some((hash, _)) = found else {
        return Err(ServiceError::NotFound(Missing::Session).into());
    };
    if hash != current.hash && !current.is_fresh(now) {
        return Err(ServiceError::FreshPasskeyRequired.into());
    }
    store.delete_session(&hash).await?;
    store.flush().await?;
    tracing::info!(user_id = %current.user_id(), "session ended by its person");
    Ok(if hash == current.hash {
        Ended::Current
    } else {
        Ended::Other
    })
}

/// Ends every session of the signed-in person except this one; returns how many.
/// Routes call it with a [`FreshSession`] only.
pub async fn end_others(store: &Store, current: &UserSession) -> Result<usize, ServerError> {
    let ended = store
        .delete_sessions_for_user(current.user_id(), Some(&current.hash))
        .await?;
    store.flush().await?;
    tracing::info!(user_id = %current.user_id(), ended, "other sessions ended");
    Ok(ended)
}

/// A cookie that deletes the session cookie.
pub fn removal(config: &Config) -> Cookie<'static> {
    build_cookie(config, String::new(), 0)
}

fn build_cookie(config: &Config, value: String, max_age: i64) -> Cookie<'static> {
    Cookie::build(cookie_name(config), value)
        .path("/")
        .http_only(true)
        .secure(is_https(config))
        .same_site(SameSite::Lax)
        .max_age(CookieDuration::seconds(max_age))
        .finish()
}

/// The signed-in person of this request, from a valid, unexpired session.
pub struct UserSession {
    hash: String,
    pub record: SessionRecord,
    pub user: UserRecord,
}

/// A [`UserSession`] whose last passkey assertion is within `fresh_window` (5 minutes
/// by default): signing up, signing in and `/api/auth/reauth` each make one.
pub struct FreshSession(pub UserSession);

impl UserSession {
    pub fn user_id(&self) -> &UserId {
        &self.user.id
    }

    /// This session as the starter and finisher of a signed-in passkey ceremony: its
    /// person and public id (a ceremony belongs to the session that started it).
    pub fn signer(&self) -> Signer<'_> {
        Signer {
            user: &self.user.id,
            session: &self.record.public_id,
        }
    }

    /// The store key of this session (SHA-256 of its cookie value; not a secret).
    pub(crate) fn hash(&self) -> &str {
        &self.hash
    }

    /// Whether a passkey assertion made this session fresh recently enough for step-up.
    pub fn is_fresh(&self, now: UnixTime) -> bool {
        now < self.record.fresh_until
    }

    /// Marks the session fresh after a passkey assertion.
    pub async fn mark_fresh(&self, st: &AppState) -> Result<(), ServerError> {
        let mut rec = self.record.clone();
        rec.fresh_until = st.clock.now() + st.config.fresh_window.as_secs();
        st.store.put_session(&self.hash, &rec).await?;
        st.store.flush().await?;
        Ok(())
    }

    /// Ends this session (logout).
    pub async fn end(&self, store: &Store) -> Result<(), ServerError> {
        store.delete_session(&self.hash).await?;
        store.flush().await?;
        Ok(())
    }
}

async fn load(req: &HttpRequest) -> Result<UserSession, ServerError> {
    let st = req
        .app_data::<web::Data<AppState>>()
        .ok_or_else(|| ServerError::Internal("app state missing".into()))?;
    let cookie = req
        .cookie(cookie_name(&st.config))
        .filter(|c| !c.value().is_empty() && c.value().len() <= 128)
        .ok_or(ServiceError::NotSignedIn)?;
    let hash = sha256_hex(cookie.value());
    let mut record = st
        .store
        .session(&hash)
        .await?
        .ok_or(ServiceError::NotSignedIn)?;
    let now = st.clock.now();
    if expired(&record, &st.config, now) {
        st.store.delete_session(&hash).await?;
        return Err(ServiceError::NotSignedIn.into());
    }
    let user = match st.store.user(&record.user_id).await? {
        Some(u) => u,
        None => {
            st.store.delete_session(&hash).await?;
            return Err(ServiceError::NotSignedIn.into());
        }
    };
    let legacy = record.public_id.is_empty();
    if legacy {
        record.public_id = public_id();
    }
    if legacy || now >= record.last_seen_at + TOUCH_EVERY_SECS {
        record.last_seen_at = now;
        st.store.put_session(&hash, &record).await?;
    }
    Ok(UserSession { hash, record, user })
}

impl FromRequest for UserSession {
    type Error = ServerError;
    type Future = Pin<Box<dyn Future<Output = Result<Self, ServerError>>>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        let req = req.clone();
        Box::pin(async move { load(&req).await })
    }
}

impl FromRequest for FreshSession {
    type Error = ServerError;
    type Future = Pin<Box<dyn Future<Output = Result<Self, ServerError>>>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        let now = req
            .app_data::<web::Data<AppState>>()
            .map(|st| st.clock.now());
        let req = req.clone();
        Box::pin(async move {
            let s = load(&req).await?;
            if now.is_some_and(|now| s.is_fresh(now)) {
                Ok(FreshSession(s))
            } else {
                Err(ServiceError::FreshPasskeyRequired.into())
            }
        })
    }
}
