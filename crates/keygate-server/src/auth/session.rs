//! Cookie sessions. The cookie holds a random 256-bit id; the store holds only its
//! SHA-256. Sessions expire when idle and absolutely; a passkey assertion makes a
//! session *fresh* for `fresh_window` (5 minutes by default), which sensitive actions require ([`FreshSession`]).

use std::future::Future;
use std::pin::Pin;

use actix_web::cookie::{Cookie, SameSite, time::Duration as CookieDuration};
use actix_web::dev::Payload;
use actix_web::{FromRequest, HttpRequest, web};
use keygate_core::ids::UserId;
use keygate_core::openai_error::OpenAiError;
use keygate_core::secret::sha256_hex;
use keygate_core::time;
use keygate_store::{SessionRecord, Store, UserRecord};

use crate::auth::passkeys::random_token;
use crate::config::Config;
use crate::error::ServerError;
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

/// Starts a fresh session for `user`; returns the cookie to set.
pub async fn create(
    store: &Store,
    config: &Config,
    user: &UserId,
) -> Result<Cookie<'static>, ServerError> {
    let id = random_token();
    let now = time::now();
    store.insert_session(
        &sha256_hex(&id),
        &SessionRecord {
            user_id: user.clone(),
            created_at: now,
            last_seen_at: now,
            fresh_until: now + config.fresh_window.as_secs(),
        },
    )?;
    store.flush().await?;
    Ok(build_cookie(
        config,
        id,
        config.session_absolute_timeout.as_secs() as i64,
    ))
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

/// A [`UserSession`] whose last passkey assertion is under 5 minutes old.
pub struct FreshSession(pub UserSession);

impl UserSession {
    pub fn user_id(&self) -> &UserId {
        &self.user.id
    }

    /// Marks the session fresh after a passkey assertion.
    pub async fn mark_fresh(&self, store: &Store, config: &Config) -> Result<(), ServerError> {
        let mut rec = self.record.clone();
        rec.fresh_until = time::now() + config.fresh_window.as_secs();
        store.put_session(&self.hash, &rec)?;
        store.flush().await?;
        Ok(())
    }

    /// Ends this session (logout).
    pub async fn end(&self, store: &Store) -> Result<(), ServerError> {
        store.delete_session(&self.hash)?;
        store.flush().await?;
        Ok(())
    }
}

fn load(req: &HttpRequest) -> Result<UserSession, ServerError> {
    let st = req
        .app_data::<web::Data<AppState>>()
        .ok_or_else(|| ServerError::Internal("app state missing".into()))?;
    let cookie = req
        .cookie(cookie_name(&st.config))
        .filter(|c| !c.value().is_empty() && c.value().len() <= 128)
        .ok_or_else(OpenAiError::not_signed_in)?;
    let hash = sha256_hex(cookie.value());
    let mut record = st
        .store
        .session(&hash)?
        .ok_or_else(OpenAiError::not_signed_in)?;
    let now = time::now();
    let idle = st.config.session_idle_timeout.as_secs();
    let absolute = st.config.session_absolute_timeout.as_secs();
    if now >= record.last_seen_at.saturating_add(idle)
        || now >= record.created_at.saturating_add(absolute)
    {
        st.store.delete_session(&hash)?;
        return Err(OpenAiError::not_signed_in().into());
    }
    let user = match st.store.user(&record.user_id)? {
        Some(u) => u,
        None => {
            st.store.delete_session(&hash)?;
            return Err(OpenAiError::not_signed_in().into());
        }
    };
    if now >= record.last_seen_at + TOUCH_EVERY_SECS {
        record.last_seen_at = now;
        st.store.put_session(&hash, &record)?;
    }
    Ok(UserSession { hash, record, user })
}

impl FromRequest for UserSession {
    type Error = ServerError;
    type Future = Pin<Box<dyn Future<Output = Result<Self, ServerError>>>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        let result = load(req);
        Box::pin(async move { result })
    }
}

impl FromRequest for FreshSession {
    type Error = ServerError;
    type Future = Pin<Box<dyn Future<Output = Result<Self, ServerError>>>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        let result = load(req).and_then(|s| {
            if time::now() < s.record.fresh_until {
                Ok(FreshSession(s))
            } else {
                Err(OpenAiError::fresh_passkey_required().into())
            }
        });
        Box::pin(async move { result })
    }
}
