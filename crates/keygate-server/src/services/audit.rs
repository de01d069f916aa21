//! The audit log: every security and admin action is recorded here, by the service
//! that does it, with one call to [`Audit::record`] — after the action's own writes,
//! flushed with them before the answer is sent. And the two readers: the operator's
//! (`GET /admin/audit`, filtered) and the person's own (`GET /api/audit`).
//!
//! An [`Audit`] says who acts and from where: the route builds it from the caller (a
//! session's person, an admin key) and the request ([`RequestMeta`]: the client's
//! address, trusted-proxy aware, and the request id). Services take it as an argument
//! and never see the request itself.
//!
//! An entry never holds a secret: `detail` carries names, origins, scopes, the fields
//! a change touched, a key's last four characters — never a key, token, hash or
//! session id.

use std::net::IpAddr;

use keygate_core::audit::{Action, Actor};
use keygate_core::calendar::{parse_day, parse_rfc3339, to_rfc3339_micros};
use keygate_core::ids::{AdminKeyId, GrantId, KeyId, PasskeyId, UserId};
use keygate_core::time::Clock;
use keygate_store::{AuditQuery, AuditRecord, AuditTarget, Store};
use serde::Serialize;
use serde_json::Value;

use crate::error::ServerError;
use crate::routes::page::{Page, PageRequest};
use crate::services::admin_keys::AdminCaller;
use crate::services::error::ServiceError;

/// Where a request came from. The route layer fills it in (an extractor, see
/// `request_id.rs`); services only pass it on inside an [`Audit`].
#[derive(Clone, Debug, Default)]
pub struct RequestMeta {
    /// The client's address: the peer's, or the one a trusted proxy forwarded.
    pub source_ip: Option<IpAddr>,
    pub request_id: Option<String>,
    /// The server's clock, which stamps the entry.
    pub clock: Clock,
}

impl RequestMeta {
    /// The signed-in person acts.
    pub fn person(&self, user: &UserId) -> Audit {
        self.by(Actor::Person(user.clone()))
    }

    /// An operator acts with this admin key.
    pub fn admin(&self, caller: &AdminCaller) -> Audit {
        self.by(match &caller.id {
            Some(id) => Actor::AdminKey(id.clone()),
            None => Actor::Bootstrap,
        })
    }

    pub fn by(&self, actor: Actor) -> Audit {
        Audit {
            actor,
            meta: self.clone(),
        }
    }
}

/// Who does an action, from where: what every audited service takes.
#[derive(Clone, Debug)]
pub struct Audit {
    actor: Actor,
    meta: RequestMeta,
}

/// What an entry is about.
#[derive(Clone, Copy, Debug)]
pub enum Target<'a> {
    User(&'a UserId),
    Grant(&'a GrantId),
    Passkey(&'a PasskeyId),
    OpenAiKey(&'a KeyId),
    AdminKey(&'a AdminKeyId),
    /// The operator's shared OpenAI key (there is one: its target id is `operator`).
    OperatorKey,
    /// A master key, by its kid (never the key).
    MasterKey(&'a str),
}

impl Target<'_> {
    fn stored(self) -> AuditTarget {
        let (kind, id) = match self {
            Target::User(id) => ("user", id.as_str()),
            Target::Grant(id) => ("grant", id.as_str()),
            Target::Passkey(id) => ("passkey", id.as_str()),
            Target::OpenAiKey(id) => ("openai_key", id.as_str()),
            Target::AdminKey(id) => ("admin_key", id.as_str()),
            Target::OperatorKey => ("operator_key", "operator"),
            Target::MasterKey(kid) => ("master_key", kid),
        };
        AuditTarget {
            kind: kind.into(),
            id: id.into(),
        }
    }
}

impl Audit {
    /// keygate itself acts (the command line, a background task): no request.
    pub fn system(clock: Clock) -> Self {
        Self {
            actor: Actor::System,
            meta: RequestMeta {
                clock,
                ..RequestMeta::default()
            },
        }
    }

    pub fn actor(&self) -> &Actor {
        &self.actor
    }

    /// Appends an entry for `action` and flushes the store, so this entry and every
    /// write before it (the action's own) are durable when it returns: call it after
    /// the action's writes, before answering. A failure is the action's failure (500):
    /// an action the log cannot record is not answered as a success.
    pub async fn record(
        &self,
        store: &Store,
        action: Action,
        user: Option<&UserId>,
        target: Option<Target<'_>>,
        detail: Value,
    ) -> Result<(), ServerError> {
        let record = AuditRecord {
            at_ns: self.meta.clock.now_nanos(),
            seq: 0,
            action,
            actor: self.actor.clone(),
            user: user.cloned(),
            target: target.map(Target::stored),
            source_ip: self.meta.source_ip.map(|ip| ip.to_string()),
            request_id: self.meta.request_id.clone(),
            detail: match detail {
                Value::Object(m) => m,
                _ => serde_json::Map::new(),
            },
        };
        let written = match store.append_audit(record).await {
            Ok(_) => store.flush().await,
            Err(e) => Err(e),
        };
        written.map_err(|e| {
            tracing::error!(%action, error = %e, "audit entry could not be written; failing the action's answer");
            ServerError::from(e)
        })
    }
}

/// The operator's shared OpenAI key was stored (`operator_key.set`): for the
/// operator-key routes and `keygate keys set-operator` (with [`Audit::system`]).
/// `kid` is the master key it is sealed under (not a secret).
pub async fn operator_key_set(store: &Store, by: &Audit, kid: &str) -> Result<(), ServerError> {
    let detail = serde_json::json!({ "kid": kid });
    by.record(
        store,
        Action::OperatorKeySet,
        None,
        Some(Target::OperatorKey),
        detail,
    )
    .await
}

/// The operator's shared OpenAI key was deleted (`operator_key.deleted`).
pub async fn operator_key_deleted(store: &Store, by: &Audit) -> Result<(), ServerError> {
    by.record(
        store,
        Action::OperatorKeyDeleted,
        None,
        Some(Target::OperatorKey),
        serde_json::json!({}),
    )
    .await
}

// --- reading -----------------------------------------------------------------------

/// An entry on the wire.
#[derive(Debug, Serialize)]
pub struct AuditView {
    pub id: String,
    /// RFC 3339 UTC, to the microsecond.
    pub at: String,
    pub action: Action,
    pub actor: ActorView,
    pub user: Option<UserId>,
    pub target: Option<AuditTarget>,
    pub source_ip: Option<String>,
    pub request_id: Option<String>,
    pub detail: serde_json::Map<String, Value>,
}

#[derive(Debug, Serialize)]
pub struct ActorView {
    pub kind: &'static str,
    pub id: Option<String>,
}

impl From<AuditRecord> for AuditView {
    fn from(r: AuditRecord) -> Self {
        Self {
            id: r.id(),
            at: to_rfc3339_micros(r.at_ns),
            action: r.action,
            actor: ActorView {
                kind: r.actor.kind(),
                id: r.actor.id().map(str::to_owned),
            },
            user: r.user,
            target: r.target,
            source_ip: r.source_ip,
            request_id: r.request_id,
            detail: r.detail,
        }
    }
}

const NANOS: u64 = 1_000_000_000;
const DAY_SECS: u64 = 86_400;

/// `GET /admin/audit`'s filters as sent: `user` (an id), `action` (a wire name),
/// `from` and `to` (RFC 3339 or `YYYY-MM-DD`, both inclusive: a date to its end, a
/// date-time to the end of its second). Each bad one is a 400 naming it.
pub fn filter(
    user: Option<&str>,
    action: Option<&str>,
    from: Option<&str>,
    to: Option<&str>,
) -> Result<AuditQuery, ServiceError> {
    let user = given(user)
        .map(|u| {
            UserId::parse(u).map_err(|_| ServiceError::invalid("user", "`user` must be a user id"))
        })
        .transpose()?;
    let action = given(action)
        .map(|a| {
            Action::parse(a).ok_or_else(|| {
                ServiceError::invalid(
                    "action",
                    "`action` must be one of the audit log's action names (docs/API.md)",
                )
            })
        })
        .transpose()?;
    let from_ns = given(from).map(|f| instant(f, "from", false)).transpose()?;
    let until_ns = given(to).map(|t| instant(t, "to", true)).transpose()?;
    if let (Some(f), Some(u)) = (from_ns, until_ns)
        && u <= f
    {
        return Err(ServiceError::invalid(
            "to",
            "`to` must not be before `from`",
        ));
    }
    Ok(AuditQuery {
        user,
        action,
        from_ns,
        until_ns,
    })
}

/// A query parameter given with a value (an empty one is as good as none).
fn given(v: Option<&str>) -> Option<&str> {
    v.map(str::trim).filter(|v| !v.is_empty())
}

/// `raw` as nanoseconds: its start, or (`end`) the first instant after it.
fn instant(raw: &str, param: &'static str, end: bool) -> Result<u64, ServiceError> {
    let secs = match parse_day(raw) {
        Some(day) => u64::from(day) * DAY_SECS + if end { DAY_SECS } else { 0 },
        None => {
            parse_rfc3339(raw).ok_or_else(|| {
                ServiceError::invalid(
                    param,
                    format!("`{param}` must be a date (2026-11-30) or an RFC 3339 date-time"),
                )
            })? + u64::from(end)
        }
    };
    Ok(secs.saturating_mul(NANOS))
}

/// One page of the log (the operator's view), newest first.
pub async fn list(
    store: &Store,
    q: &AuditQuery,
    page: &PageRequest,
) -> Result<Page<AuditView>, ServerError> {
    let (items, next) = store
        .audit_page(q, page.after.as_deref(), page.limit)
        .await?;
    Ok(Page { items, next }.map(AuditView::from))
}

/// One page of the entries that concern `user`, newest first (the person's own view).
/// What an operator did to them shows without the operator's address.
pub async fn own(
    store: &Store,
    user: &UserId,
    page: &PageRequest,
) -> Result<Page<AuditView>, ServerError> {
    let q = AuditQuery {
        user: Some(user.clone()),
        ..AuditQuery::default()
    };
    Ok(list(store, &q, page).await?.map(|mut v| {
        if v.actor.kind != "person" {
            v.source_ip = None;
        }
        v
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn param(r: Result<AuditQuery, ServiceError>) -> String {
        match r {
            Err(ServiceError::Invalid { param: Some(p), .. }) => p.into_owned(),
            other => panic!("not a 400 with a param: {other:?}"),
        }
    }

    #[test]
    fn filters_parse_and_name_the_bad_one() {
        let user = UserId::generate();
        let q = filter(
            Some(user.as_str()),
            Some("grant.created"),
            Some("2026-11-30"),
            Some("2026-11-30"),
        )
        .unwrap();
        assert_eq!(q.user.as_ref(), Some(&user));
        assert_eq!(q.action, Some(Action::GrantCreated));
        // A date is the whole day: from its start to the next day's start.
        let day = 1_795_996_800; // 2026-11-30T00:00:00Z
        assert_eq!(q.from_ns, Some(day * NANOS));
        assert_eq!(q.until_ns, Some((day + DAY_SECS) * NANOS));
        // A date-time counts to the end of its second.
        let q = filter(
            None,
            None,
            Some("2026-11-30T12:00:00Z"),
            Some("2026-11-30T12:00:00.5Z"),
        )
        .unwrap();
        assert_eq!(q.from_ns, Some((day + 12 * 3600) * NANOS));
        assert_eq!(q.until_ns, Some((day + 12 * 3600 + 1) * NANOS));
        assert_eq!(
            filter(None, Some(""), None, None).unwrap(),
            AuditQuery::default()
        );

        assert_eq!(param(filter(Some("nobody"), None, None, None)), "user");
        assert_eq!(
            param(filter(None, Some("grant.create"), None, None)),
            "action"
        );
        assert_eq!(param(filter(None, None, Some("yesterday"), None)), "from");
        assert_eq!(param(filter(None, None, None, Some("2026-02-31"))), "to");
        assert_eq!(
            param(filter(None, None, Some("2026-12-01"), Some("2026-11-30"))),
            "to"
        );
    }

    #[test]
    fn entries_read_as_the_wire_shape() {
        let user = UserId::generate();
        let record = AuditRecord {
            at_ns: 1_795_996_800 * NANOS + 123_456_789,
            seq: 7,
            action: Action::GrantCreated,
            actor: Actor::Bootstrap,
            user: Some(user.clone()),
            target: Some(Target::User(&user).stored()),
            source_ip: Some("203.0.113.9".into()),
            request_id: Some("req_1".into()),
            detail: serde_json::Map::new(),
        };
        let v = serde_json::to_value(AuditView::from(record)).unwrap();
        assert_eq!(
            v,
            serde_json::json!({
                "id": format!("{:016x}{:016x}", 1_795_996_800 * NANOS + 123_456_789, 7),
                "at": "2026-11-30T00:00:00.123456Z", "action": "grant.created",
                "actor": {"kind": "admin_key", "id": "bootstrap"},
                "user": user.as_str(), "target": {"kind": "user", "id": user.as_str()},
                "source_ip": "203.0.113.9", "request_id": "req_1", "detail": {},
            })
        );
    }
}
