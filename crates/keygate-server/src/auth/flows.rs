//! Signing up, signing in and confirming with a passkey: one ceremony, then what it
//! earns (a new session, or a fresh one). Routes call exactly one of these.

use actix_web::cookie::Cookie;
use keygate_core::audit::Action;
use keygate_store::UserRecord;
use serde_json::Value;

use crate::auth::UserSession;
use crate::auth::passkeys::REAUTH;
use crate::auth::session;
use crate::error::ServerError;
use crate::services::audit::{RequestMeta, Target};
use crate::services::users::UserView;
use crate::state::AppState;

/// A person who just proved themselves with a passkey, and their new session cookie.
pub struct SignedIn {
    pub user: UserView,
    pub cookie: Cookie<'static>,
}

/// Finishes a sign-up ceremony: the person, their first passkey, a fresh session.
pub async fn sign_up(
    st: &AppState,
    ceremony: &str,
    credential: Value,
    user_agent: Option<&str>,
    meta: &RequestMeta,
) -> Result<SignedIn, ServerError> {
    let user = st
        .passkeys
        .register_finish(&st.store, ceremony, credential)
        .await?;
    let signed_in = start_session(st, &user, user_agent).await?;
    let target = Some(Target::User(&user.id));
    meta.person(&user.id)
        .record(
            &st.store,
            Action::UserSignedUp,
            Some(&user.id),
            target,
            serde_json::json!({}),
        )
        .await?;
    Ok(signed_in)
}

/// Finishes a usernameless sign-in ceremony: a fresh session.
pub async fn sign_in(
    st: &AppState,
    ceremony: &str,
    credential: Value,
    user_agent: Option<&str>,
    meta: &RequestMeta,
) -> Result<SignedIn, ServerError> {
    let (user, passkey) = st
        .passkeys
        .login_finish(&st.store, ceremony, credential)
        .await?;
    tracing::info!(user_id = %user.id, "signed in with a passkey");
    let signed_in = start_session(st, &user, user_agent).await?;
    let detail = serde_json::json!({"passkey_name": passkey.name});
    meta.person(&user.id)
        .record(
            &st.store,
            Action::UserSignedIn,
            Some(&user.id),
            Some(Target::Passkey(&passkey.id)),
            detail,
        )
        .await?;
    Ok(signed_in)
}

async fn start_session(
    st: &AppState,
    user: &UserRecord,
    user_agent: Option<&str>,
) -> Result<SignedIn, ServerError> {
    let cookie = session::create(st, &user.id, user_agent).await?;
    Ok(SignedIn {
        user: UserView::from(user),
        cookie,
    })
}

/// Finishes a step-up ceremony: this session is fresh again.
pub async fn confirm(
    st: &AppState,
    s: &UserSession,
    ceremony: &str,
    credential: Value,
) -> Result<(), ServerError> {
    st.passkeys
        .assertion_finish(&st.store, s.signer(), ceremony, credential, REAUTH)
        .await?;
    s.mark_fresh(st).await
}
