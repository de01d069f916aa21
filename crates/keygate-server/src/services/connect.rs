//! "Sign in with OpenAI": approving an app, and the redirect + PKCE code exchange.
//!
//! Popup mode creates the grant at approval and hands the key straight to the popup
//! page. Redirect mode stores the approval under the SHA-256 of a random code; the
//! grant and its key are minted only when the app exchanges the code with the right
//! PKCE verifier, so nothing secret waits in the store.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use keygate_core::audit::Action;
use keygate_core::ids::{GrantId, UserId};
use keygate_core::limits::{Limits, OwnKey};
use keygate_core::origin::{AppOrigin, RedirectUri};
use keygate_core::scope::{self, Scope};
use keygate_core::secret::sha256_hex;
use keygate_core::time::UnixTime;
use keygate_store::{CodeRecord, GrantRecord, Store};
use serde::Serialize;
use serde_json::Value;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::auth::passkeys::{CONNECT_APPROVE, Signer, random_token};
use crate::config::Config;
use crate::error::ServerError;
use crate::services::audit::{Audit, RequestMeta, Target};
use crate::services::error::{CodeProblem, Missing, ServiceError};
use crate::services::grants::{self, Caller, GrantSpec, GrantView, NewGrant, Reapproval};
use crate::state::AppState;

/// What the person approved for an app.
pub struct Approval {
    pub origin: AppOrigin,
    pub app_name: String,
    /// `None` = all models.
    pub models: Option<Vec<String>>,
    /// The plan the app asked for (`None`: `default_plan`, if any).
    pub plan: Option<String>,
    /// The limits the person approved, after lowering what the app asked for; held to
    /// the plan. `None`: the plan's.
    pub limits: Option<Limits>,
    /// When the grant stops working; `None`: never.
    pub expires_at: Option<UnixTime>,
    /// The endpoint scopes approved; `None` when the app asked for none: a new grant
    /// gets `["inference"]`, a re-keyed one keeps its scopes.
    pub scopes: Option<Vec<Scope>>,
    pub reuse_grant_id: Option<GrantId>,
}

/// The validated query of a redirect-mode `GET /connect`.
pub struct RedirectRequest {
    pub redirect_uri: RedirectUri,
    pub state: String,
    pub code_challenge: String,
}

const MAX_APP_NAME: usize = 100;

pub fn parse_app_name(raw: Option<&str>, origin: &AppOrigin) -> Result<String, ServerError> {
    match raw.map(str::trim).filter(|s| !s.is_empty()) {
        None => Ok(origin
            .as_str()
            .trim_start_matches("https://")
            .trim_start_matches("http://")
            .to_owned()),
        Some(n) if n.chars().count() > MAX_APP_NAME || n.chars().any(char::is_control) => {
            Err(ServiceError::invalid(
                "app_name",
                format!("app_name must be at most {MAX_APP_NAME} plain characters"),
            )
            .into())
        }
        Some(n) => Ok(n.to_owned()),
    }
}

/// An app origin for a grant: https, or plain http only on localhost / 127.0.0.1 —
/// the same rule as for redirect URIs, so both connect modes bind alike.
pub fn parse_origin(raw: &str) -> Result<AppOrigin, ServerError> {
    let bad = |m: &str| -> ServerError { ServiceError::invalid("origin", m).into() };
    let origin = AppOrigin::parse(raw)
        .map_err(|_| bad("`origin` must be a web origin such as https://app.example"))?;
    let local = origin.as_str().starts_with("http://localhost")
        || origin.as_str().starts_with("http://127.0.0.1");
    let local = local
        && matches!(
            origin
                .as_str()
                .trim_start_matches("http://")
                .split(':')
                .next(),
            Some("localhost" | "127.0.0.1")
        );
    if origin.as_str().starts_with("https://") || local {
        Ok(origin)
    } else {
        Err(bad(
            "apps must be served over https (plain http is allowed only for localhost and 127.0.0.1)",
        ))
    }
}

/// Models from the redirect query / form: comma-separated, empty = all.
pub fn parse_models_csv(raw: Option<&str>) -> Option<Vec<String>> {
    let list: Vec<String> = raw
        .unwrap_or("")
        .split(',')
        .map(str::trim)
        .filter(|m| !m.is_empty())
        .map(str::to_owned)
        .collect();
    (!list.is_empty()).then_some(list)
}

/// Scopes from the redirect query / form: a comma list (`inference,files`); absent or
/// empty = none asked; an unknown name is a 400 naming `scopes`.
pub fn parse_scopes_csv(raw: Option<&str>) -> Result<Option<Vec<Scope>>, ServerError> {
    match raw.map(str::trim).filter(|s| !s.is_empty()) {
        None => Ok(None),
        Some(list) => scope::parse_scope_list(list)
            .map(Some)
            .map_err(|e| ServiceError::invalid("scopes", e.to_string()).into()),
    }
}

/// Checks a redirect-mode request: response_type=code, a usable redirect_uri, a state,
/// and an S256 code challenge (the only method keygate accepts).
pub fn parse_redirect_request(
    response_type: Option<&str>,
    redirect_uri: Option<&str>,
    state: Option<&str>,
    code_challenge: Option<&str>,
    method: Option<&str>,
) -> Result<RedirectRequest, ServerError> {
    let bad = |param: &'static str, msg: String| -> ServerError {
        ServiceError::invalid(param, msg).into()
    };
    if response_type != Some("code") {
        return Err(bad("response_type", "response_type must be `code`".into()));
    }
    let redirect_uri = RedirectUri::parse(redirect_uri.unwrap_or(""))
        .map_err(|e| bad("redirect_uri", e.to_string()))?;
    let state = state.unwrap_or("");
    if state.is_empty() || state.len() > 512 {
        return Err(bad(
            "state",
            "state is required (1–512 characters) so the app can match the answer to its request"
                .into(),
        ));
    }
    match method {
        Some("S256") => {}
        Some(other) => {
            return Err(bad(
                "code_challenge_method",
                format!("code_challenge_method `{other}` is not supported; use S256"),
            ));
        }
        None => {
            return Err(bad(
                "code_challenge_method",
                "code_challenge_method=S256 is required".into(),
            ));
        }
    }
    let challenge = code_challenge.unwrap_or("");
    let valid = challenge.len() == 43
        && URL_SAFE_NO_PAD
            .decode(challenge)
            .is_ok_and(|b| b.len() == 32);
    if !valid {
        return Err(bad(
            "code_challenge",
            "code_challenge must be base64url(SHA-256(code_verifier)), 43 characters".into(),
        ));
    }
    Ok(RedirectRequest {
        redirect_uri,
        state: state.to_owned(),
        code_challenge: challenge.to_owned(),
    })
}

/// The person's connections bound to `origin` that a re-approval can re-key.
pub async fn existing(
    store: &Store,
    user: &UserId,
    origin: &AppOrigin,
    now: UnixTime,
) -> Result<Vec<GrantView>, ServerError> {
    Ok(store
        .grants_for_user(user)
        .await?
        .iter()
        .filter(|g| grants::re_keyable(g, now) && g.origin.as_deref() == Some(origin.as_str()))
        .map(GrantView::from)
        .collect())
}

/// Popup mode: the person's passkey assertion approves `approval`; the grant (new or
/// re-keyed) and its key go straight back to the popup page.
pub async fn approve(
    st: &AppState,
    by: Signer<'_>,
    ceremony: &str,
    credential: Value,
    approval: Approval,
    audit: &Audit,
) -> Result<NewGrant, ServerError> {
    check(st, by.user, &approval).await?;
    st.passkeys
        .assertion_finish(&st.store, by, ceremony, credential, CONNECT_APPROVE)
        .await?;
    let user = by.user;
    let detail = approval_detail(&approval, "popup");
    let new = grant_for(&st.store, &st.config, user, approval, st.clock.now(), audit).await?;
    let target = Some(Target::Grant(&new.grant.id));
    audit
        .record(
            &st.store,
            Action::ConnectApproved,
            Some(user),
            target,
            detail,
        )
        .await?;
    tracing::info!(user_id = %user, grant_id = %new.grant.id, origin = ?new.grant.origin, "app connected");
    Ok(new)
}

/// Redirect mode: the person's passkey assertion approves `approval`; returns where
/// to send the browser: `redirect_uri?code&state`.
pub async fn approve_redirect(
    st: &AppState,
    by: Signer<'_>,
    ceremony: &str,
    credential: Value,
    request: &RedirectRequest,
    approval: Approval,
    audit: &Audit,
) -> Result<String, ServerError> {
    check(st, by.user, &approval).await?;
    st.passkeys
        .assertion_finish(&st.store, by, ceremony, credential, CONNECT_APPROVE)
        .await?;
    let user = by.user;
    let detail = approval_detail(&approval, "redirect");
    let code = issue_code(
        &st.store,
        user,
        request,
        approval,
        st.clock.now() + st.config.ceremony_ttl.as_secs(),
    )
    .await?;
    // The grant is made when the app exchanges the code (`grant.created` then).
    audit
        .record(&st.store, Action::ConnectApproved, Some(user), None, detail)
        .await?;
    tracing::info!(user_id = %user, origin = %request.redirect_uri.origin(), "redirect connect approved");
    Ok(request
        .redirect_uri
        .with_query(&[("code", &code), ("state", &request.state)]))
}

/// What the audit log says about an approval: the app, where from, how, and which
/// connection it re-keys (if any).
fn approval_detail(approval: &Approval, mode: &str) -> Value {
    serde_json::json!({
        "app_name": approval.app_name,
        "origin": approval.origin.as_str(),
        "mode": mode,
        "reuse_grant_id": approval.reuse_grant_id,
    })
}

/// The person said no to an app (the popup's or the redirect page's Deny). Recorded
/// within the person's budget (`Throttles::denials`); past it the "no" is answered
/// all the same and not recorded: it changes nothing in keygate, and a stolen session
/// must not be able to grow the log without bound. The name is the app's own: one
/// that would not do for a grant is recorded as the origin's, never refused — the
/// person's "no" must reach the app.
pub async fn deny(
    st: &AppState,
    user: &UserId,
    origin: &AppOrigin,
    app_name: Option<&str>,
    mode: &str,
    audit: &Audit,
) -> Result<(), ServerError> {
    // The name is the app's (from its query string) and only labels the entry: one
    // keygate would not show is replaced by the origin's host, never refused, so the
    // person's "no" always reaches the app.
    let app_name = parse_app_name(app_name, origin).or_else(|_| parse_app_name(None, origin))?;
    if st.throttles.denials.check(user.clone()).is_err() {
        tracing::debug!(user_id = %user, "connect denial not recorded: the person's budget is spent");
        return Ok(());
    }
    let detail = serde_json::json!({"app_name": app_name, "origin": origin.as_str(), "mode": mode});
    audit
        .record(&st.store, Action::ConnectDenied, Some(user), None, detail)
        .await
}

/// Is what the person approved allowed (a plan that exists, limits within it; for a
/// re-key, a connection of theirs to re-key and limits within its own plan)? Checked
/// before the passkey assertion is spent, so a bad request can be fixed and approved
/// again.
pub async fn check(st: &AppState, user: &UserId, approval: &Approval) -> Result<(), ServerError> {
    match &approval.reuse_grant_id {
        Some(id) => grants::check_reapproval(
            &st.config,
            &reusable(&st.store, user, id, &approval.origin).await?,
            approval.limits.as_ref(),
        ),
        None => grants::settle(
            &st.config,
            Caller::Person,
            approval.plan.clone(),
            approval.limits.clone(),
        )
        .map(|_| ()),
    }
}

/// The person's grant bound to `origin` that an approval re-keys. Another person's,
/// or one bound to another origin, is answered like one that does not exist.
async fn reusable(
    store: &Store,
    user: &UserId,
    id: &GrantId,
    origin: &AppOrigin,
) -> Result<GrantRecord, ServerError> {
    store
        .grant(id)
        .await?
        .filter(|g| g.user_id == *user && g.origin.as_deref() == Some(origin.as_str()))
        .ok_or_else(|| ServiceError::NotFound(Missing::Connection).into())
}

/// Creates (or re-keys) the grant for an approval. Re-keying an app's existing
/// connection keeps its old key working for `reconnect_grace_secs` and keeps the
/// grant's plan (whatever plan the app asks for now); it applies limits only when the
/// approval carries them, held to that plan (otherwise the grant keeps its own, which
/// the person may have lowered since).
pub async fn grant_for(
    store: &Store,
    config: &Config,
    user: &UserId,
    approval: Approval,
    now: UnixTime,
    audit: &Audit,
) -> Result<NewGrant, ServerError> {
    if let Some(id) = &approval.reuse_grant_id {
        let existing = reusable(store, user, id, &approval.origin).await?;
        // `approval.plan` is not used: a re-key keeps the grant's plan.
        let again = Reapproval {
            scopes: approval.scopes,
            limits: approval.limits,
            expires_at: approval.expires_at,
        };
        return grants::rekey(store, config, &existing.id, user, again, now, audit).await;
    }
    grants::create(
        store,
        config,
        user,
        GrantSpec {
            name: approval.app_name,
            models: approval.models,
            scopes: approval
                .scopes
                .map(|list| list.iter().map(|s| s.as_str().to_owned()).collect()),
            origin: Some(approval.origin.to_string()),
            plan: approval.plan,
            limits: approval.limits,
            expires_at: approval.expires_at,
        },
        Caller::Person,
        now,
        audit,
    )
    .await
}

/// Stores a redirect-mode approval, good until `expires_at`, and returns the one-time
/// code.
pub async fn issue_code(
    store: &Store,
    user: &UserId,
    request: &RedirectRequest,
    approval: Approval,
    expires_at: UnixTime,
) -> Result<String, ServerError> {
    let code = random_token();
    let record = CodeRecord {
        user_id: user.clone(),
        redirect_uri: request.redirect_uri.as_str().to_owned(),
        origin: approval.origin.to_string(),
        code_challenge: request.code_challenge.clone(),
        app_name: approval.app_name,
        models: approval.models,
        plan: approval.plan,
        reuse_grant_id: approval.reuse_grant_id,
        expires_at,
        scopes: approval.scopes,
        limits: approval.limits,
        grant_expires_at: approval.expires_at,
    };
    store.put_code(&sha256_hex(&code), &record).await?;
    store.flush().await?;
    Ok(code)
}

/// Exchanges a code for a key. Any attempt spends the code, right or wrong.
pub async fn exchange(
    store: &Store,
    config: &Config,
    code: &str,
    verifier: &str,
    redirect_uri: Option<&str>,
    now: UnixTime,
    meta: &RequestMeta,
) -> Result<(NewGrant, AppOrigin), ServerError> {
    let invalid = |why: CodeProblem| -> ServerError { ServiceError::CodeInvalid(why).into() };
    if code.is_empty() || code.len() > 128 {
        return Err(invalid(CodeProblem::Malformed));
    }
    let record = store
        .take_code(&sha256_hex(code))
        .await?
        .ok_or_else(|| invalid(CodeProblem::Unknown))?;
    store.flush().await?;
    if record.expires_at <= now {
        return Err(invalid(CodeProblem::Expired));
    }
    let verifier_ok = (43..=128).contains(&verifier.len())
        && verifier
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-._~".contains(&b));
    let computed = URL_SAFE_NO_PAD.encode(Sha256::digest(verifier.as_bytes()));
    if !verifier_ok || !bool::from(computed.as_bytes().ct_eq(record.code_challenge.as_bytes())) {
        return Err(invalid(CodeProblem::VerifierMismatch));
    }
    if let Some(uri) = redirect_uri
        && uri != record.redirect_uri
    {
        return Err(invalid(CodeProblem::RedirectMismatch));
    }
    if store.user(&record.user_id).await?.is_none() {
        return Err(invalid(CodeProblem::PersonGone));
    }
    let origin = AppOrigin::parse(&record.origin)
        .map_err(|_| ServerError::Internal("stored origin unreadable".into()))?;
    let approval = Approval {
        origin: origin.clone(),
        app_name: record.app_name,
        models: record.models,
        plan: record.plan,
        limits: record.limits,
        // An expiry that passed while the code waited is refused by `create`.
        expires_at: record.grant_expires_at,
        scopes: record.scopes,
        reuse_grant_id: record.reuse_grant_id,
    };
    // The person approved it: they are the actor, though the app's server asks.
    let audit = meta.person(&record.user_id);
    let new = grant_for(store, config, &record.user_id, approval, now, &audit).await?;
    Ok((new, origin))
}

/// `GET /api/connect/plan`: a plan's ceiling, for the consent page.
#[derive(Serialize)]
pub struct PlanView {
    pub name: Option<String>,
    pub limits: Limits,
    pub default_max_tokens: Option<u64>,
    /// The plan lends the operator's OpenAI key to people who stored none (whether the
    /// operator has set one is not said here).
    pub use_operator_key: bool,
    /// Whether apps on the plan must, may or may not send their own key.
    pub own_key: OwnKey,
}

/// The plan named `name`, else the default plan, else "no plan" (no limits); an
/// unknown name is 404.
pub fn plan(config: &Config, name: Option<&str>) -> Result<PlanView, ServerError> {
    let name = name
        .map(str::trim)
        .filter(|n| !n.is_empty())
        .map(str::to_owned)
        .or_else(|| config.default_plan.clone());
    let Some(name) = name else {
        return Ok(PlanView {
            name: None,
            limits: Limits::default(),
            default_max_tokens: None,
            use_operator_key: false,
            own_key: OwnKey::Allowed,
        });
    };
    let plan = config
        .plans
        .get(&name)
        .ok_or(ServiceError::NotFound(Missing::Plan))?;
    Ok(PlanView {
        limits: plan.limits(),
        default_max_tokens: plan.default_max_tokens,
        use_operator_key: plan.use_operator_key,
        own_key: plan.own_key(),
        name: Some(name),
    })
}
