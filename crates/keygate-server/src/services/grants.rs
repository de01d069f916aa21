//! Grants: creating them (with a plan and limits), showing them, changing them, and
//! the key's lifecycle (rotate with grace, disable / enable, revoke, remove).
//!
//! Who may set what: the person (dashboard, connect approval) may only tighten the
//! grant's plan (`Limits::within`); an operator (admin API) may set anything. A plan's
//! limits are copied into the grant when it is created, so later edits of a plan reach
//! new grants only.

use std::borrow::Cow;
use std::sync::atomic::{AtomicBool, Ordering};

use keygate_core::calendar::{parse_rfc3339, to_rfc3339};
use keygate_core::ids::{GrantId, UserId};
use keygate_core::limits::{LimitError, Limits};
use keygate_core::money::MAX_DOLLARS;
use keygate_core::scope::{self, Scope};
use keygate_core::time::UnixTime;
use keygate_core::token;
use keygate_store::{GrantRecord, GrantState, Store};
use secrecy::{ExposeSecret, SecretString};
use serde::{Serialize, Serializer};
use serde_json::Value;
use serde_path_to_error::Segment;

use crate::config::{Config, MAX_GRACE_SECS, is_plan_name};
use crate::error::ServerError;
use crate::services::audit::{Audit, Target};
use crate::services::error::{Missing, ServiceError};
use crate::services::users::parse_name;
use keygate_core::audit::Action;
use serde_json::json;

const MAX_MODELS: usize = 256;

/// A new grant and its token, which exists only in this value: shown once.
pub struct NewGrant {
    pub token: SecretString,
    pub grant: GrantRecord,
}

impl NewGrant {
    /// The answer that hands the key out (grant creation, rotation, popup approval).
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
    pub scopes: Vec<Scope>,
    pub state: GrantState,
    pub created_at: UnixTime,
    pub last_used_at: Option<UnixTime>,
    pub revoked_at: Option<UnixTime>,
    /// RFC 3339 UTC (`2026-12-30T00:00:00Z`), as the issue asks; the other times
    /// stay Unix seconds.
    pub expires_at: Option<String>,
    pub plan: Option<String>,
    pub limits: Limits,
    /// Until when the secret replaced by the last rotation still works (Unix seconds;
    /// `null` when no old secret is valid any more or the rotation had no grace).
    pub rotated_until: Option<UnixTime>,
}

impl From<&GrantRecord> for GrantView {
    fn from(g: &GrantRecord) -> Self {
        Self {
            id: g.id.to_string(),
            user_id: g.user_id.to_string(),
            name: g.name.clone(),
            origin: g.origin.clone(),
            models: g.models.clone(),
            scopes: g.scopes.clone(),
            state: g.state,
            created_at: g.created_at,
            last_used_at: g.last_used_at,
            revoked_at: g.revoked_at,
            expires_at: g.expires_at.map(to_rfc3339),
            plan: g.plan.clone(),
            limits: g.limits.clone(),
            rotated_until: g.previous_secret_hash.as_ref().and(g.previous_until),
        }
    }
}

/// Who is asking for a grant's plan and limits. The person (and an app, through the
/// person's approval) may only tighten the plan; an operator may set anything.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Caller {
    Person,
    Operator,
}

// --- parsing ---------------------------------------------------------------------

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

fn bad(param: impl Into<Cow<'static, str>>, message: impl Into<String>) -> ServerError {
    ServiceError::invalid(param, message).into()
}

fn limit_error(e: LimitError) -> ServerError {
    bad(e.field, e.message)
}

/// `limits` as sent: the wire shape of [`Limits`], read by its own serde impl through
/// `serde_path_to_error`, so that every refusal names its field: a wrong type
/// (`limits.rpm`), an unknown field (`limits.rpn`), a missing `period`
/// (`limits.budget.period`); then [`Limits::validate`] (zero, a budget without `usd`
/// or `tokens`).
pub fn parse_limits(v: &Value) -> Result<Limits, ServerError> {
    if let Some(field) = array_in(v, "limits") {
        return Err(bad(field.clone(), format!("`{field}` must be an object")));
    }
    let limits: Limits = serde_path_to_error::deserialize(v).map_err(limits_refusal)?;
    limits.validate().map_err(limit_error)?;
    Ok(limits)
}

/// Where `v` holds a JSON array, if anywhere: serde reads a struct from an array too
/// (`[60]` as `{"rpm": 60}`), and no part of `limits` is a list.
fn array_in(v: &Value, at: &str) -> Option<String> {
    match v {
        Value::Array(_) => Some(at.to_owned()),
        Value::Object(m) => m
            .iter()
            .find_map(|(k, v)| array_in(v, &format!("{at}.{k}"))),
        _ => None,
    }
}

/// A `limits` value serde refused, as a 400 naming the field. The messages are ours,
/// in words, and never repeat the value sent (serde's would); an unknown field keeps
/// serde's message, which lists the known ones.
fn limits_refusal(e: serde_path_to_error::Error<serde_json::Error>) -> ServerError {
    let inner = e.inner().to_string();
    let mut keys: Vec<&str> = e
        .path()
        .iter()
        .filter_map(|s| match s {
            Segment::Map { key } => Some(key.as_str()),
            _ => None,
        })
        .collect();
    // A missing field is reported at its parent: name the field itself.
    if let Some(missing) = inner
        .strip_prefix("missing field `")
        .and_then(|rest| rest.split('`').next())
    {
        keys.push(missing);
    }
    let field = std::iter::once("limits")
        .chain(keys.iter().copied())
        .collect::<Vec<_>>()
        .join(".");
    // `limits.models.<id>` is a model id, whatever its name.
    let leaf = match keys.as_slice() {
        ["models", _] => None,
        [.., last] => Some(*last),
        [] => None,
    };
    let message = match leaf {
        _ if inner.starts_with("unknown field") => format!("`{field}`: {inner}"),
        Some("rpm" | "tpm" | "max_concurrency" | "tokens") => {
            format!("`{field}` must be a whole number of at least 1, or null")
        }
        Some("usd") => {
            format!("`{field}` must be a number of dollars above 0, at most {MAX_DOLLARS}")
        }
        Some("period") => format!("`{field}` must be \"day\", \"week\" or \"month\""),
        _ => format!("`{field}` must be an object"),
    };
    bad(field, message)
}

/// `expires_at` as sent: an RFC 3339 date-time after `now`, or `null` (never).
pub fn parse_expires_at(v: &Value, now: UnixTime) -> Result<Option<UnixTime>, ServerError> {
    let at = match v {
        Value::Null => return Ok(None),
        Value::String(s) => parse_rfc3339(s).ok_or_else(|| {
            bad(
                "expires_at",
                "`expires_at` must be an RFC 3339 date-time such as 2026-12-31T00:00:00Z, or null",
            )
        })?,
        _ => {
            return Err(bad(
                "expires_at",
                "`expires_at` must be an RFC 3339 date-time string, or null",
            ));
        }
    };
    in_future(Some(at), now)?;
    Ok(Some(at))
}

/// An expiry must be after `now` (checked again where an approval may have waited:
/// a redirect code is exchanged minutes after the person approved).
fn in_future(expires_at: Option<UnixTime>, now: UnixTime) -> Result<(), ServerError> {
    if expires_at.is_some_and(|at| at <= now) {
        return Err(bad("expires_at", "`expires_at` must be in the future"));
    }
    Ok(())
}

/// `plan` as sent: a plan name, or `null` / `""` (none). Whether it exists is checked
/// against the configuration when it is used.
pub fn parse_plan(v: &Value) -> Result<Option<String>, ServerError> {
    match v {
        Value::Null => Ok(None),
        Value::String(s) if s.trim().is_empty() => Ok(None),
        Value::String(s) if is_plan_name(s.trim()) => Ok(Some(s.trim().to_owned())),
        _ => Err(bad(
            "plan",
            "`plan` must be a plan name (letters, digits, - _ .), or null",
        )),
    }
}

/// A grant's `plan`, `limits` and `expires_at` as a JSON body sends them (creating a
/// grant, the popup's approval); `null` or absent: none (the default plan, its
/// limits, no expiry).
pub struct Terms {
    pub plan: Option<String>,
    pub limits: Option<Limits>,
    pub expires_at: Option<UnixTime>,
}

impl Terms {
    pub fn parse(
        plan: Option<&Value>,
        limits: Option<&Value>,
        expires_at: Option<&Value>,
        now: UnixTime,
    ) -> Result<Self, ServerError> {
        Ok(Self {
            plan: plan.map(parse_plan).transpose()?.flatten(),
            limits: limits
                .filter(|v| !v.is_null())
                .map(parse_limits)
                .transpose()?,
            expires_at: expires_at
                .map(|v| parse_expires_at(v, now))
                .transpose()?
                .flatten(),
        })
    }
}

/// The grace for a rotation, 0 (default) to a week.
pub fn parse_grace(v: Option<&Value>) -> Result<u64, ServerError> {
    match v {
        None | Some(Value::Null) => Ok(0),
        Some(v) => v.as_u64().filter(|g| *g <= MAX_GRACE_SECS).ok_or_else(|| {
            bad(
                "grace_seconds",
                format!("`grace_seconds` must be a whole number from 0 to {MAX_GRACE_SECS}"),
            )
        }),
    }
}

// --- plans -----------------------------------------------------------------------

/// A grant's plan and limits, decided.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Settled {
    pub plan: Option<String>,
    pub limits: Limits,
}

/// Decides a new grant's plan and limits: the plan asked for, else `default_plan`,
/// else none (an unknown plan is a 400 naming `plan`); the limits given (held to the
/// plan when `by` is the person), else the plan's.
pub fn settle(
    config: &Config,
    by: Caller,
    plan: Option<String>,
    limits: Option<Limits>,
) -> Result<Settled, ServerError> {
    let plan = plan.or_else(|| config.default_plan.clone());
    let ceiling = match &plan {
        Some(name) => Some(
            config
                .plans
                .get(name)
                .ok_or_else(|| bad("plan", format!("there is no plan named \"{name}\"")))?
                .limits(),
        ),
        None => None,
    };
    let limits = match (limits, ceiling) {
        (Some(given), Some(ceiling)) => {
            if by == Caller::Person {
                given.within(&ceiling).map_err(limit_error)?;
            }
            given
        }
        (Some(given), None) => given,
        (None, Some(ceiling)) => ceiling,
        (None, None) => Limits::default(),
    };
    Ok(Settled { plan, limits })
}

/// What the person may raise a grant's limits to: its plan's limits as configured
/// now; for a plan the configuration no longer has, the grant's own limits (they may
/// only go down); none without a plan (the person's own key, the person's call).
fn ceiling_for(config: &Config, grant: &GrantRecord) -> Option<Limits> {
    let name = grant.plan.as_ref()?;
    Some(
        config
            .plans
            .get(name)
            .map_or_else(|| grant.limits.clone(), |p| p.limits()),
    )
}

// --- creating and listing --------------------------------------------------------

/// What a new grant is for: its name, models (none = all), endpoint scopes (none =
/// inference), bound origin, plan and limits (none = the plan's), expiry.
#[derive(Default)]
pub struct GrantSpec {
    pub name: String,
    pub models: Option<Vec<String>>,
    pub scopes: Option<Vec<String>>,
    pub origin: Option<String>,
    pub plan: Option<String>,
    pub limits: Option<Limits>,
    pub expires_at: Option<UnixTime>,
}

/// Mints a grant for `user` at `now`; its token exists only in the returned value.
pub async fn create(
    store: &Store,
    config: &Config,
    user: &UserId,
    spec: GrantSpec,
    by: Caller,
    now: UnixTime,
    audit: &Audit,
) -> Result<NewGrant, ServerError> {
    let GrantSpec {
        name,
        models,
        scopes,
        origin,
        plan,
        limits,
        expires_at,
    } = spec;
    let name = parse_name(&name, "name")?;
    let models = parse_models(models)?;
    let scopes = parse_scopes(scopes.as_deref())?;
    let settled = settle(config, by, plan, limits)?;
    in_future(expires_at, now)?;
    let id = GrantId::generate();
    let issued = token::issue(&id);
    let grant = GrantRecord {
        id,
        user_id: user.clone(),
        name,
        origin,
        models,
        state: GrantState::Active,
        secret_hash: issued.hash.to_hex(),
        created_at: now,
        last_used_at: None,
        revoked_at: None,
        expires_at,
        plan: settled.plan,
        scopes,
        limits: settled.limits,
        previous_secret_hash: None,
        previous_until: None,
    };
    store.insert_grant(&grant).await?;
    let detail = json!({"name": grant.name, "origin": grant.origin, "plan": grant.plan,
        "scopes": grant.scopes, "models": grant.models});
    audit
        .record(
            store,
            Action::GrantCreated,
            Some(user),
            Some(Target::Grant(&grant.id)),
            detail,
        )
        .await?;
    tracing::info!(grant_id = %grant.id, user_id = %user, plan = ?grant.plan, "grant created");
    Ok(NewGrant {
        token: issued.token,
        grant,
    })
}

pub async fn list(store: &Store, user: &UserId) -> Result<Vec<GrantView>, ServerError> {
    Ok(store
        .grants_for_user(user)
        .await?
        .iter()
        .map(GrantView::from)
        .collect())
}

// --- changing --------------------------------------------------------------------

/// `PATCH …/grants/{id}`: each field absent = unchanged; `limits: null` and
/// `expires_at: null` clear them. `plan` is the operator's alone.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct GrantPatch {
    pub name: Option<String>,
    pub models: Option<Vec<String>>,
    pub scopes: Option<Vec<Scope>>,
    pub limits: Option<Option<Limits>>,
    pub expires_at: Option<Option<UnixTime>>,
    pub plan: Option<Option<String>>,
}

impl GrantPatch {
    /// The fields this patch sets (what the audit log says a change touched).
    pub fn fields(&self) -> Vec<&'static str> {
        [
            ("name", self.name.is_some()),
            ("models", self.models.is_some()),
            ("scopes", self.scopes.is_some()),
            ("limits", self.limits.is_some()),
            ("expires_at", self.expires_at.is_some()),
            ("plan", self.plan.is_some()),
        ]
        .into_iter()
        .filter_map(|(f, set)| set.then_some(f))
        .collect()
    }

    /// Reads a PATCH body; every refusal names its field (an unknown one too). A
    /// `plan` is read for everyone: the person may send the grant's own plan back
    /// unchanged, and `patch` refuses them any other.
    pub fn parse(body: &Value, now: UnixTime) -> Result<Self, ServerError> {
        let known = ["name", "models", "scopes", "limits", "expires_at", "plan"];
        let m = body
            .as_object()
            .ok_or_else(|| bad("body", "the body must be a JSON object"))?;
        if let Some(k) = m.keys().find(|k| !known.contains(&k.as_str())) {
            return Err(bad(
                k.clone(),
                format!("unknown field `{k}`; known: {}", known.join(", ")),
            ));
        }
        let strings = |key: &'static str| -> Result<Option<Vec<String>>, ServerError> {
            match m.get(key) {
                None => Ok(None),
                Some(v) => serde_json::from_value::<Vec<String>>(v.clone())
                    .map(Some)
                    .map_err(|_| bad(key, format!("`{key}` must be a list of strings"))),
            }
        };
        let name = match m.get("name") {
            None => None,
            Some(Value::String(s)) => Some(parse_name(s, "name")?),
            Some(_) => return Err(bad("name", "`name` must be a string")),
        };
        Ok(Self {
            name,
            models: strings("models")?
                .map(|m| parse_models(Some(m)))
                .transpose()?,
            scopes: strings("scopes")?
                .map(|s| parse_scopes(Some(&s)))
                .transpose()?,
            limits: match m.get("limits") {
                None => None,
                Some(Value::Null) => Some(None),
                Some(v) => Some(Some(parse_limits(v)?)),
            },
            expires_at: m
                .get("expires_at")
                .map(|v| parse_expires_at(v, now))
                .transpose()?,
            plan: m.get("plan").map(parse_plan).transpose()?,
        })
    }
}

/// Applies `patch` to a grant (of `owner`, when given: another person's is 404, as is
/// a revoked one). The person is held to the plan's ceiling; an operator is not, and
/// moving a grant to another plan without new `limits` gives it that plan's limits
/// (naming the plan it is already on changes nothing).
///
/// A person's change that gives the app more than it has (a scope or model added,
/// a limit raised or removed, the expiry pushed back or cleared) needs a `fresh`
/// session, like creating a grant: a stolen session cookie may tighten a grant, never
/// widen one for an app the thief controls. Durable before returning: the next
/// proxied request sees the new limits.
// Who asks (`by`, `fresh`: what they may change) and who is recorded (`audit`) are
// separate questions; a struct bundling them would only move the list elsewhere.
#[allow(clippy::too_many_arguments)]
pub async fn patch(
    store: &Store,
    config: &Config,
    id: &GrantId,
    owner: Option<&UserId>,
    patch: GrantPatch,
    by: Caller,
    fresh: bool,
    audit: &Audit,
) -> Result<GrantView, ServerError> {
    let existing = changeable(store, id, owner).await?;
    if by == Caller::Person
        && let Some(asked) = &patch.plan
        && *asked != existing.plan
    {
        return Err(bad(
            "plan",
            "only an operator can move a grant to another plan",
        ));
    }
    let mut plan = existing.plan.clone();
    let mut limits = patch.limits.clone();
    // Only a real move changes anything: the same plan sent back is a no-op.
    if let Some(new_plan) = patch.plan.as_ref().filter(|p| **p != existing.plan) {
        if let Some(name) = new_plan
            && !config.plans.contains_key(name)
        {
            return Err(bad("plan", format!("there is no plan named \"{name}\"")));
        }
        plan = new_plan.clone();
        if limits.is_none()
            && let Some(p) = config.plan_named(new_plan.as_deref())
        {
            limits = Some(Some(p.limits()));
        }
    }
    let limits = limits.map(Option::unwrap_or_default);
    if by == Caller::Person
        && let Some(new) = &limits
        && let Some(ceiling) = ceiling_for(config, &existing)
    {
        new.within(&ceiling).map_err(limit_error)?;
    }
    // Judged against the record being written, inside the atomic update: a check
    // against the copy read above could be raced by another change (the person's own
    // tightening landing in between would be undone by a stale session's "tightening").
    let needs_fresh = AtomicBool::new(false);
    let moved = (plan != existing.plan).then_some(plan);
    let updated = update_unless_revoked(store, id, |g| {
        let widening = by == Caller::Person && !fresh && widens(g, &patch, limits.as_ref());
        needs_fresh.store(widening, Ordering::Relaxed);
        if widening {
            return;
        }
        if let Some(n) = &patch.name {
            g.name = n.clone();
        }
        if let Some(m) = &patch.models {
            g.models = m.clone();
        }
        if let Some(s) = &patch.scopes {
            g.scopes = s.clone();
        }
        if let Some(l) = &limits {
            g.limits = l.clone();
        }
        if let Some(e) = patch.expires_at {
            g.expires_at = e;
        }
        // Only a real move (the operator's): a change racing an operator's move of the
        // plan must not put the old plan back.
        if let Some(p) = &moved {
            g.plan = p.clone();
        }
    })
    .await?;
    if needs_fresh.load(Ordering::Relaxed) {
        return Err(ServiceError::FreshPasskeyRequired.into());
    }
    let detail = json!({"name": updated.name, "fields": patch.fields(), "plan": updated.plan});
    audit
        .record(
            store,
            Action::GrantChanged,
            Some(&updated.user_id),
            Some(Target::Grant(id)),
            detail,
        )
        .await?;
    tracing::info!(grant_id = %id, by = ?by, "grant changed");
    Ok(GrantView::from(&updated))
}

/// Would the change give the grant more than it has now?
fn widens(g: &GrantRecord, p: &GrantPatch, limits: Option<&Limits>) -> bool {
    let scopes = p
        .scopes
        .as_ref()
        .is_some_and(|new| new.iter().any(|s| !g.scopes.contains(s)));
    // An empty list is every model.
    let models = p.models.as_ref().is_some_and(|new| {
        !g.models.is_empty() && (new.is_empty() || new.iter().any(|m| !g.models.contains(m)))
    });
    let limits = limits.is_some_and(|new| new.within(&g.limits).is_err());
    let expiry = match (g.expires_at, p.expires_at) {
        (Some(_), Some(None)) => true,
        (Some(old), Some(Some(new))) => new > old,
        _ => false,
    };
    scopes || models || limits || expiry
}

/// One grant (of `owner`, when given), revoked ones too.
pub async fn show(
    store: &Store,
    id: &GrantId,
    owner: Option<&UserId>,
) -> Result<GrantView, ServerError> {
    Ok(GrantView::from(&owned(store, id, owner).await?))
}

/// Issues a new secret for a grant (of `owner`, when given; active or disabled). With
/// a grace, the secret it replaces keeps working until `now + grace_secs` (only that
/// one: a rotation forgets any older secret); without, it stops at once.
pub async fn rotate(
    store: &Store,
    id: &GrantId,
    owner: Option<&UserId>,
    grace_secs: u64,
    now: UnixTime,
    audit: &Audit,
) -> Result<NewGrant, ServerError> {
    changeable(store, id, owner).await?;
    let new = rotate_with(store, id, grace_secs, now, |_| {}).await?;
    let g = &new.grant;
    let detail = json!({"name": g.name, "grace_seconds": grace_secs});
    audit
        .record(
            store,
            Action::GrantRotated,
            Some(&g.user_id),
            Some(Target::Grant(id)),
            detail,
        )
        .await?;
    tracing::info!(grant_id = %id, grace_secs, "grant rotated");
    Ok(new)
}

/// The terms a re-approved connection changes (connect reuse). `None` = keep. There
/// is no plan: re-keying never moves a grant to another plan (the plan an app asks for
/// applies to new connections; the consent page hides plan and limits for a re-key).
#[derive(Default)]
pub struct Reapproval {
    pub scopes: Option<Vec<Scope>>,
    /// Held to the grant's own plan, like the person's PATCH.
    pub limits: Option<Limits>,
    pub expires_at: Option<UnixTime>,
}

/// Can an app's connection get a new key by re-approval? Active and not expired: a
/// re-key keeps the expiry, so an expired one would hand out a key dead on arrival
/// (the app connects anew instead).
pub fn re_keyable(g: &GrantRecord, now: UnixTime) -> bool {
    g.state == GrantState::Active && g.expires_at.is_none_or(|at| at > now)
}

/// May a re-approval of `existing` set `limits`? Held to the grant's own plan, like
/// the person's PATCH (a re-key never changes the plan).
pub fn check_reapproval(
    config: &Config,
    existing: &GrantRecord,
    limits: Option<&Limits>,
) -> Result<(), ServerError> {
    if let Some(limits) = limits
        && let Some(ceiling) = ceiling_for(config, existing)
    {
        limits.within(&ceiling).map_err(limit_error)?;
    }
    Ok(())
}

/// A reconnecting app: a new key for an existing ACTIVE grant of `owner`; the old key
/// keeps working for the configured `reconnect_grace_secs`. What the person approved
/// again (scopes, limits within the grant's plan, expiry) replaces what the grant had;
/// its plan and the limits the person set stay unless the approval carries limits.
pub async fn rekey(
    store: &Store,
    config: &Config,
    id: &GrantId,
    owner: &UserId,
    again: Reapproval,
    now: UnixTime,
    audit: &Audit,
) -> Result<NewGrant, ServerError> {
    let grace_secs = config.reconnect_grace_secs;
    let not_found = || ServiceError::NotFound(Missing::ActiveConnection);
    let existing = store.grant(id).await?.ok_or_else(not_found)?;
    if existing.user_id != *owner || !re_keyable(&existing, now) {
        return Err(not_found().into());
    }
    in_future(again.expires_at, now)?;
    check_reapproval(config, &existing, again.limits.as_ref())?;
    let new = rotate_with(store, id, grace_secs, now, |g| {
        if let Some(s) = &again.scopes {
            g.scopes = s.clone();
        }
        if let Some(l) = &again.limits {
            g.limits = l.clone();
        }
        if again.expires_at.is_some() {
            g.expires_at = again.expires_at;
        }
    })
    .await
    .map_err(|e| match e {
        ServerError::Service(ServiceError::NotFound(_)) => not_found().into(),
        other => other,
    })?;
    let detail = json!({"name": new.grant.name, "grace_seconds": grace_secs, "reconnect": true});
    audit
        .record(
            store,
            Action::GrantRotated,
            Some(owner),
            Some(Target::Grant(id)),
            detail,
        )
        .await?;
    tracing::info!(grant_id = %id, grace_secs, "grant re-keyed");
    Ok(new)
}

async fn rotate_with(
    store: &Store,
    id: &GrantId,
    grace_secs: u64,
    now: UnixTime,
    also: impl Fn(&mut GrantRecord) + Send + Sync,
) -> Result<NewGrant, ServerError> {
    let issued = token::issue(id);
    let hash = issued.hash.to_hex();
    let grant = update_unless_revoked(store, id, |g| {
        let old = std::mem::replace(&mut g.secret_hash, hash.clone());
        if grace_secs > 0 {
            g.previous_secret_hash = Some(old);
            g.previous_until = Some(now.saturating_add(grace_secs));
        } else {
            forget_previous_secret(g);
        }
        also(g);
    })
    .await?;
    Ok(NewGrant {
        token: issued.token,
        grant,
    })
}

/// Disables (`enabled = false`) or re-enables a grant (of `owner`, when given). Only
/// active ↔ disabled; a revoked grant is 404. Disabling also ends a rotation's grace.
/// Durable before returning. (The person's
/// route asks for a fresh session to enable: see `patch` on widening.)
pub async fn set_enabled(
    store: &Store,
    id: &GrantId,
    owner: Option<&UserId>,
    enabled: bool,
    audit: &Audit,
) -> Result<GrantView, ServerError> {
    changeable(store, id, owner).await?;
    let state = if enabled {
        GrantState::Active
    } else {
        GrantState::Disabled
    };
    let updated = update_unless_revoked(store, id, |g| {
        g.state = state;
        // Disabling is how a person cuts a key off: the secret a rotation replaced goes
        // too, so enabling again does not revive it (its grace ends here).
        if !enabled {
            forget_previous_secret(g);
        }
    })
    .await?;
    let action = if enabled {
        Action::GrantEnabled
    } else {
        Action::GrantDisabled
    };
    let detail = json!({"name": updated.name});
    audit
        .record(
            store,
            action,
            Some(&updated.user_id),
            Some(Target::Grant(id)),
            detail,
        )
        .await?;
    tracing::info!(grant_id = %id, enabled, "grant enabled or disabled");
    Ok(GrantView::from(&updated))
}

/// Ends the grace of the secret the last rotation replaced.
fn forget_previous_secret(g: &mut GrantRecord) {
    g.previous_secret_hash = None;
    g.previous_until = None;
}

/// What `DELETE …/grants/{id}` did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Deleted {
    Revoked,
    /// It was revoked already: now it is gone from the list (its usage rows stay).
    Removed,
}

/// `DELETE`: revokes an active or disabled grant; removes an already revoked one. With
/// `owner`, only that person's. Durable before returning.
pub async fn delete(
    store: &Store,
    id: &GrantId,
    owner: Option<&UserId>,
    now: UnixTime,
    audit: &Audit,
) -> Result<Deleted, ServerError> {
    let existing = owned(store, id, owner).await?;
    if existing.state == GrantState::Revoked {
        // Only the call that removed it records it (a concurrent one finds it gone).
        if store.delete_grant(id).await? {
            let detail = json!({"name": existing.name});
            let target = Some(Target::Grant(id));
            audit
                .record(
                    store,
                    Action::GrantRemoved,
                    Some(&existing.user_id),
                    target,
                    detail,
                )
                .await?;
        } else {
            // A concurrent call removed it: answer once its removal is durable too.
            store.flush().await?;
        }
        tracing::info!(grant_id = %id, "revoked grant removed");
        return Ok(Deleted::Removed);
    }
    revoke(store, id, owner, now, audit).await?;
    Ok(Deleted::Revoked)
}

/// Revokes a grant; with `owner`, only if it belongs to that person. Durable before
/// returning, so the very next request with the token is refused.
pub async fn revoke(
    store: &Store,
    id: &GrantId,
    owner: Option<&UserId>,
    now: UnixTime,
    audit: &Audit,
) -> Result<GrantRecord, ServerError> {
    owned(store, id, owner).await?;
    let revoked = store
        .revoke_grant(id, now)
        .await?
        .ok_or(ServiceError::NotFound(Missing::Grant))?;
    let detail = json!({"name": revoked.name});
    let target = Some(Target::Grant(id));
    audit
        .record(
            store,
            Action::GrantRevoked,
            Some(&revoked.user_id),
            target,
            detail,
        )
        .await?;
    tracing::info!(grant_id = %id, "grant revoked");
    Ok(revoked)
}

/// The grant, if it exists and (with `owner`) is theirs; 404 otherwise, so another
/// person's grant ids reveal nothing.
async fn owned(
    store: &Store,
    id: &GrantId,
    owner: Option<&UserId>,
) -> Result<GrantRecord, ServerError> {
    let not_found = || ServiceError::NotFound(Missing::Grant);
    let grant = store.grant(id).await?.ok_or_else(not_found)?;
    if owner.is_some_and(|o| *o != grant.user_id) {
        return Err(not_found().into());
    }
    Ok(grant)
}

/// [`owned`], and not revoked: a revoked grant cannot be changed (404).
async fn changeable(
    store: &Store,
    id: &GrantId,
    owner: Option<&UserId>,
) -> Result<GrantRecord, ServerError> {
    let grant = owned(store, id, owner).await?;
    if grant.state == GrantState::Revoked {
        return Err(ServiceError::NotFound(Missing::Grant).into());
    }
    Ok(grant)
}

/// Applies `change` atomically unless the grant is revoked by then (a revocation that
/// raced this change wins); 404 when it is gone or revoked.
async fn update_unless_revoked(
    store: &Store,
    id: &GrantId,
    change: impl Fn(&mut GrantRecord) + Send + Sync,
) -> Result<GrantRecord, ServerError> {
    // The change may run more than once (a conflict re-runs it): the last run decides.
    let revoked = AtomicBool::new(false);
    let updated = store
        .update_grant(id, &|g| {
            let is_revoked = g.state == GrantState::Revoked;
            revoked.store(is_revoked, Ordering::Relaxed);
            if !is_revoked {
                change(g);
            }
        })
        .await?;
    match updated {
        Some(g) if !revoked.load(Ordering::Relaxed) => Ok(g),
        _ => Err(ServiceError::NotFound(Missing::Grant).into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use keygate_core::money::Usd;
    use serde_json::json;

    fn param(r: Result<impl std::fmt::Debug, ServerError>) -> String {
        match r {
            Err(ServerError::Service(ServiceError::Invalid { param: Some(p), .. })) => {
                p.into_owned()
            }
            other => panic!("not a 400 with a param: {other:?}"),
        }
    }

    #[test]
    fn limits_parse_and_name_the_bad_field() {
        let l = parse_limits(&json!({"rpm": 60, "budget": {"usd": 5, "period": "month"},
            "models": {"gpt-4o": {"tpm": 100}}}))
        .unwrap();
        assert_eq!(l.rpm, Some(60));
        assert_eq!(
            l.budget.as_ref().and_then(|b| b.usd),
            Usd::from_dollars(5.0)
        );
        assert_eq!(l.models["gpt-4o"].tpm, Some(100));
        assert_eq!(parse_limits(&json!({})).unwrap(), Limits::default());
        assert_eq!(
            parse_limits(&json!({"rpm": null, "models": null})).unwrap(),
            Limits::default()
        );
        for (body, field) in [
            (json!([]), "limits"),
            (json!({"rpm": "60"}), "limits.rpm"),
            (json!({"rpm": -1}), "limits.rpm"),
            (json!({"rpm": 1.5}), "limits.rpm"),
            (json!({"rpm": 0}), "limits.rpm"),
            (json!({"rpm": 5_000_000_000u64}), "limits.rpm"),
            (json!({"tpm": 0}), "limits.tpm"),
            (json!({"max_concurrency": 0}), "limits.max_concurrency"),
            (json!({"rpn": 1}), "limits.rpn"),
            (json!({"budget": {"period": "day"}}), "limits.budget"),
            (
                json!({"budget": {"usd": -1, "period": "day"}}),
                "limits.budget.usd",
            ),
            (
                json!({"budget": {"usd": "5", "period": "day"}}),
                "limits.budget.usd",
            ),
            (
                json!({"budget": {"usd": 1e12, "period": "day"}}),
                "limits.budget.usd",
            ),
            (
                json!({"budget": {"usd": 1, "period": "year"}}),
                "limits.budget.period",
            ),
            (json!({"budget": {"usd": 1}}), "limits.budget.period"),
            (
                json!({"budget": {"tokens": 0, "period": "day"}}),
                "limits.budget.tokens",
            ),
            (
                json!({"budget": {"usd": 1, "period": "day", "x": 1}}),
                "limits.budget.x",
            ),
            (json!({"models": []}), "limits.models"),
            (json!({"models": {"rpm": 5}}), "limits.models.rpm"),
            (json!({"budget": 5}), "limits.budget"),
            (json!([60]), "limits"),
            (json!({"budget": [5, null, "day"]}), "limits.budget"),
            (json!({"models": {"gpt-4o": [1]}}), "limits.models.gpt-4o"),
            (json!({"tpm": 1e3}), "limits.tpm"),
            (
                json!({"tpm": 18_446_744_073_709_551_615u64 as f64}),
                "limits.tpm",
            ),
            (json!({"rpm": 4_294_967_296u64}), "limits.rpm"),
            (
                json!({"budget": {"usd": 1e308, "period": "day"}}),
                "limits.budget.usd",
            ),
            (
                json!({"budget": {"usd": 0, "period": "day"}}),
                "limits.budget.usd",
            ),
            (
                json!({"models": {"gpt-4o": {"rpm": 0}}}),
                "limits.models.gpt-4o.rpm",
            ),
            (
                json!({"models": {"gpt-4o": {"max_concurrency": 1}}}),
                "limits.models.gpt-4o.max_concurrency",
            ),
            (
                json!({"models": {"gpt-4o": {"budget": {"usd": 1, "period": "x"}}}}),
                "limits.models.gpt-4o.budget.period",
            ),
        ] {
            assert_eq!(param(parse_limits(&body)), field, "{body}");
        }
    }

    #[test]
    fn limits_refusals_say_what_is_wanted_without_repeating_the_value() {
        let message = |v: Value| match parse_limits(&v) {
            Err(ServerError::Service(ServiceError::Invalid { message, .. })) => message,
            other => panic!("not a 400: {other:?}"),
        };
        let m = message(json!({"budget": {"usd": "sk-not-a-number", "period": "day"}}));
        assert!(m.contains("number of dollars") && !m.contains("sk-"), "{m}");
        let m = message(json!({"budget": {"usd": 1, "period": "sk-period"}}));
        assert!(m.contains("\"month\"") && !m.contains("sk-"), "{m}");
        let m = message(json!({"rpm": "sk-rpm"}));
        assert!(m.contains("whole number") && !m.contains("sk-"), "{m}");
        let m = message(json!({"budget": "sk-budget"}));
        assert!(m.contains("must be an object") && !m.contains("sk-"), "{m}");
        let m = message(json!({"rpn": 1}));
        assert!(
            m.contains("unknown field `rpn`") && m.contains("`rpm`"),
            "{m}"
        );
        let m = message(json!({"budget": {"usd": 1}}));
        assert!(m.contains("limits.budget.period"), "{m}");
    }

    #[test]
    fn expiry_plan_and_grace() {
        let now = 1_795_996_800; // 2026-11-30T00:00:00Z
        assert_eq!(
            parse_expires_at(&json!("2026-12-01T00:00:00Z"), now).unwrap(),
            Some(now + 86_400)
        );
        assert_eq!(parse_expires_at(&Value::Null, now).unwrap(), None);
        for bad in [json!("2026-11-30T00:00:00Z"), json!("tomorrow"), json!(5)] {
            assert_eq!(param(parse_expires_at(&bad, now)), "expires_at", "{bad}");
        }
        assert_eq!(parse_plan(&json!("free")).unwrap().as_deref(), Some("free"));
        assert_eq!(parse_plan(&json!("")).unwrap(), None);
        assert_eq!(param(parse_plan(&json!("no way"))), "plan");
        assert_eq!(param(parse_plan(&json!(3))), "plan");
        assert_eq!(parse_grace(None).unwrap(), 0);
        assert_eq!(parse_grace(Some(&json!(604_800))).unwrap(), 604_800);
        for bad in [json!(604_801), json!(-1), json!("60")] {
            assert_eq!(param(parse_grace(Some(&bad))), "grace_seconds", "{bad}");
        }
    }

    #[test]
    fn a_patch_names_its_bad_fields() {
        let now = 1_795_996_800;
        let p = GrantPatch::parse(
            &json!({"limits": null, "expires_at": null, "name": "x"}),
            now,
        )
        .unwrap();
        assert_eq!(p.limits, Some(None));
        assert_eq!(p.expires_at, Some(None));
        assert_eq!(p.name.as_deref(), Some("x"));
        assert_eq!(
            GrantPatch::parse(&json!({}), now).unwrap(),
            GrantPatch::default()
        );
        for (body, field) in [
            (json!({"plan": "no way"}), "plan"),
            (json!({"colour": 1}), "colour"),
            (json!({"models": "gpt-4o"}), "models"),
            (json!({"scopes": ["x"]}), "scopes"),
            (json!({"name": 1}), "name"),
            (json!({"expires_at": "soon"}), "expires_at"),
            (json!({"limits": {"rpm": "1"}}), "limits.rpm"),
        ] {
            assert_eq!(param(GrantPatch::parse(&body, now)), field, "{body}");
        }
        assert_eq!(param(GrantPatch::parse(&json!([]), now)), "body");
        let p = GrantPatch::parse(&json!({"plan": null}), now).unwrap();
        assert_eq!(p.plan, Some(None));
    }

    fn config(plans: Value, default_plan: Option<&str>) -> Config {
        crate::config::RawConfig {
            plans: Some(serde_json::from_value(plans).unwrap()),
            default_plan: default_plan.map(str::to_owned),
            ..Default::default()
        }
        .validate()
        .unwrap()
    }

    #[test]
    fn settling_a_plan() {
        let c = config(
            json!({"free": {"rpm": 10, "budget": {"usd": 5, "period": "month"}}, "open": {}}),
            Some("free"),
        );
        let free = c.plans["free"].limits();
        // No plan asked: the default one, with its limits.
        let s = settle(&c, Caller::Person, None, None).unwrap();
        assert_eq!((s.plan.as_deref(), &s.limits), (Some("free"), &free));
        // Tighter limits are kept; looser ones refused for the person, kept for operators.
        let tight =
            parse_limits(&json!({"rpm": 5, "budget": {"usd": 1, "period": "month"}})).unwrap();
        assert_eq!(
            settle(&c, Caller::Person, None, Some(tight.clone()))
                .unwrap()
                .limits,
            tight
        );
        let loose =
            parse_limits(&json!({"rpm": 50, "budget": {"usd": 1, "period": "month"}})).unwrap();
        assert_eq!(
            param(settle(&c, Caller::Person, None, Some(loose.clone()))),
            "limits.rpm"
        );
        assert_eq!(
            settle(&c, Caller::Operator, None, Some(loose.clone()))
                .unwrap()
                .limits,
            loose
        );
        // A plan without limits is no ceiling.
        assert_eq!(
            settle(&c, Caller::Person, Some("open".into()), Some(loose.clone()))
                .unwrap()
                .limits,
            loose
        );
        assert_eq!(
            param(settle(&c, Caller::Operator, Some("gold".into()), None)),
            "plan"
        );
        // Without a default plan and none asked: no plan, no limits.
        let bare = config(json!({}), None);
        assert_eq!(
            settle(&bare, Caller::Person, None, None).unwrap(),
            Settled {
                plan: None,
                limits: Limits::default()
            }
        );
    }
}
