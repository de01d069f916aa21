//! The limiter's windows in PostgreSQL, shared by every node (issue 14, point 4).
//!
//! The state of `keygate_core::policy::UsageWindow` (rpm/tpm buckets, requests in
//! flight, budget reservations and settled spend, the budget period) lives in the
//! table `limit_windows`, one row per grant (scope `''`) and per grant + model with
//! overrides (scope = the model's name). A request with a limit makes ONE statement to
//! acquire (`keygate_limits_acquire`) and ONE to settle (`keygate_limits_settle`):
//! PL/pgSQL functions in `migrations/0002_limits.sql` that lock the grant's rows and
//! decide and apply in the database, so requests on many nodes serialise per grant and
//! can never overspend a budget together (no read-modify-write in the client). The math
//! is the pure policy's; `tests/pg_limits.rs` proves the two give the same answers.
//!
//! A grant without any limit makes no statement at all ([`LimitAsk::has_limits`]).
//!
//! Each lease taken is a row of `limit_leases` owned by the node that took it, and a
//! settle ends it by id — once: a settle retried after a lost answer, or one that
//! comes after its lease was reclaimed, changes nothing. A node calls [`heartbeat`]
//! every few seconds; that marks it alive and reclaims the leases of nodes that stopped
//! (killed, or cut off from the database), so their places and reservations come back
//! within the time to live instead of staying taken for good.
//!
//! Call them on a pooled client (autocommit) or in a READ COMMITTED transaction: a new
//! window's row is created with `INSERT … ON CONFLICT DO NOTHING` and then locked, which
//! under REPEATABLE READ would fail with a serialisation error when two nodes create it
//! at once.

use std::time::Duration;

use keygate_core::calendar::{self, Period};
use keygate_core::ids::GrantId;
use keygate_core::money::Usd;
use keygate_core::policy::{self, BudgetKind, BudgetLimit, Deny, Estimate, Rules, Spend};
use tokio_postgres::GenericClient;
use tokio_postgres::types::ToSql;

use super::pg_error;
use crate::StoreError;

/// A lease's id in `limit_leases`, chosen by the node before it asks: should the
/// acquire's answer be lost (a connection dropped after the commit), the node still
/// knows which lease to end ([`LimitLease::abandoned`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LeaseId(i64);

impl LeaseId {
    /// A random positive id (63 bits: a collision within one grant's leases in flight
    /// is beyond any real count).
    pub fn generate() -> Self {
        Self(i64::try_from(rand::random::<u64>() >> 1).unwrap_or(i64::MAX))
    }
}

/// What one request asks of the limits.
#[derive(Clone, Debug)]
pub struct LimitAsk<'a> {
    /// The id its lease takes, if it is accepted.
    pub lease: LeaseId,
    pub grant: &'a GrantId,
    pub now_ms: u64,
    /// The grant-wide limits (`Rules::of(&grant.limits)`).
    pub rules: Rules,
    /// The period of the grant-wide budget, if it has one.
    pub budget_period: Option<Period>,
    pub estimate: Estimate,
    /// The model the request named.
    pub model: Option<ModelAsk<'a>>,
}

/// The request's model and, when the grant has overrides for it, those.
#[derive(Clone, Debug)]
pub struct ModelAsk<'a> {
    /// The name as the request gave it (the window's key).
    pub name: &'a str,
    /// The name its usage rows carry (cut like every row's: the limiter's
    /// `row_model`), whose sum a budget window loads when it starts a period.
    pub row_name: &'a str,
    /// `Rules::of_model(overrides)` and the period of the overrides' budget.
    pub overrides: Option<(Rules, Option<Period>)>,
}

impl LimitAsk<'_> {
    /// Whether the request is under any limit; without one, [`acquire`] touches no row.
    pub fn has_limits(&self) -> bool {
        self.rules != Rules::default()
            || self
                .model
                .as_ref()
                .is_some_and(|m| m.overrides.is_some() && !m.name.is_empty())
    }
}

/// Which window refused.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LimitRefusal {
    pub deny: Deny,
    /// The model's overrides refused (else the grant-wide limits).
    pub model: bool,
}

/// The rpm/tpm state after an acquire, for `x-ratelimit-*`: (limit, remaining, ms to
/// full).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RateState {
    pub requests: Option<(u64, u64, u64)>,
    pub tokens: Option<(u64, u64, u64)>,
}

/// What an accepted request holds in the windows until [`settle`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LimitLease {
    /// Its row in `limit_leases` (unused when not held).
    id: LeaseId,
    grant: GrantId,
    /// False for a request under no limit: nothing to settle.
    held: bool,
    grant_lease: policy::Lease,
    budget_period: Option<Period>,
    model: Option<ModelLease>,
    rate: RateState,
}

#[derive(Clone, Debug, PartialEq, Eq)]
struct ModelLease {
    name: String,
    row_name: String,
    lease: policy::Lease,
    budget_period: Option<Period>,
}

impl LimitLease {
    /// The lease `ask` may have taken when its acquire failed without a clear answer
    /// (the commit may have landed): settling it ends that lease if it exists, and
    /// does nothing if it does not.
    pub fn abandoned(ask: &LimitAsk<'_>) -> Self {
        Self {
            id: ask.lease,
            grant: ask.grant.clone(),
            held: ask.has_limits(),
            grant_lease: policy::Lease::default(),
            budget_period: None,
            model: None,
            rate: RateState::default(),
        }
    }

    pub fn grant_lease(&self) -> &policy::Lease {
        &self.grant_lease
    }

    pub fn model_lease(&self) -> Option<&policy::Lease> {
        self.model.as_ref().map(|m| &m.lease)
    }

    pub fn rate(&self) -> RateState {
        self.rate
    }

    /// Whether settling it makes a statement.
    pub fn is_held(&self) -> bool {
        self.held
    }
}

/// A budget period at `now`, as the SQL functions take it: kind, start, end (unix
/// seconds), first and last UTC day of its usage rows.
struct Bounds {
    kind: &'static str,
    start: i64,
    end: i64,
    first_day: i32,
    last_day: i32,
}

fn bounds(period: Option<Period>, now_ms: u64) -> Option<Bounds> {
    let period = period?;
    let now = now_ms / 1000;
    let (start, end) = (period.start(now), period.next_start(now));
    Some(Bounds {
        kind: period.as_str(),
        start: big(start),
        end: big(end),
        first_day: day(calendar::day_number(start)),
        last_day: day(calendar::day_number(end).saturating_sub(1)),
    })
}

/// A u64 as PostgreSQL's bigint. Amounts above i64::MAX (9.2 billion dollars in
/// nanos, 9.2e18 tokens) are beyond any real limit: they saturate.
fn big(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

fn day(d: u32) -> i32 {
    i32::try_from(d).unwrap_or(i32::MAX)
}

fn unsigned(v: i64) -> u64 {
    u64::try_from(v).unwrap_or(0)
}

const ACQUIRE: &str = "SELECT deny, deny_model, deny_limit, retry_after_ms, resets_at, \
     g_request, g_lease_tokens, g_res_usd, g_res_tokens, \
     m_request, m_lease_tokens, m_res_usd, m_res_tokens, \
     rpm_limit, rpm_remaining, rpm_reset_ms, tpm_limit, tpm_remaining, tpm_reset_ms \
     FROM keygate_limits_acquire($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, \
     $14, $15, $16, $17, $18, $19, $20, $21, $22, $23, $24, $25, $26, $27, $28)";

const SETTLE: &str = "SELECT keygate_limits_settle($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, \
     $11, $12, $13, $14, $15, $16)";

/// The lease of a request under no limit: nothing held, nothing to settle.
pub fn acquire_unlimited(
    ask: &LimitAsk<'_>,
) -> Result<Result<LimitLease, LimitRefusal>, StoreError> {
    Ok(Ok(LimitLease {
        id: ask.lease,
        grant: ask.grant.clone(),
        held: false,
        grant_lease: policy::Lease::default(),
        budget_period: None,
        model: None,
        rate: RateState::default(),
    }))
}

/// Decides a request under its grant's limits and its model's overrides and, when it
/// may go ahead, takes its lease in both windows (both or neither) — in one statement,
/// atomic per grant across every node. `Ok(Err(_))` is a refusal. `node` owns the
/// lease: should it stop calling [`heartbeat`], another node reclaims it.
pub async fn acquire(
    client: &impl GenericClient,
    node: &str,
    ask: &LimitAsk<'_>,
) -> Result<Result<LimitLease, LimitRefusal>, StoreError> {
    let model_name = ask.model.as_ref().map(|m| m.name).filter(|n| !n.is_empty());
    if !ask.has_limits() {
        return acquire_unlimited(ask);
    }
    let now = big(ask.now_ms);
    let g = bounds(
        ask.budget_period.filter(|_| has_budget(&ask.rules)),
        ask.now_ms,
    );
    let overrides = ask
        .model
        .as_ref()
        .filter(|m| !m.name.is_empty())
        .and_then(|m| m.overrides);
    let m_rules = overrides.map(|(r, _)| r).unwrap_or_default();
    let m = bounds(
        overrides.and_then(|(r, p)| p.filter(|_| has_budget(&r))),
        ask.now_ms,
    );
    let r = &ask.rules;
    let est_tokens = big(ask.estimate.tokens);
    let est_usd = ask.estimate.usd.map(|u| big(u.nanos()));
    let (g_rpm, g_tpm, g_conc) = (
        r.rpm.map(i64::from),
        r.tpm.map(big),
        r.max_concurrency.map(i64::from),
    );
    let (g_usd, g_tokens) = (
        r.budget_usd.map(|u| big(u.nanos())),
        r.budget_tokens.map(big),
    );
    let row_name = ask.model.as_ref().map(|m| m.row_name);
    let m_has = overrides.is_some();
    let (m_rpm, m_tpm) = (m_rules.rpm.map(i64::from), m_rules.tpm.map(big));
    let (m_usd, m_tokens) = (
        m_rules.budget_usd.map(|u| big(u.nanos())),
        m_rules.budget_tokens.map(big),
    );
    let grant_id = ask.grant.as_str();
    let (g_kind, g_start, g_end, g_first, g_last) = split(&g);
    let (m_kind, m_start, m_end, m_first, m_last) = split(&m);
    let params: [&(dyn ToSql + Sync); 28] = [
        &node,
        &ask.lease.0,
        &grant_id,
        &now,
        &est_tokens,
        &est_usd,
        &g_rpm,
        &g_tpm,
        &g_conc,
        &g_usd,
        &g_tokens,
        &g_kind,
        &g_start,
        &g_end,
        &g_first,
        &g_last,
        &model_name,
        &row_name,
        &m_has,
        &m_rpm,
        &m_tpm,
        &m_usd,
        &m_tokens,
        &m_kind,
        &m_start,
        &m_end,
        &m_first,
        &m_last,
    ];
    let row = client.query_one(ACQUIRE, &params).await.map_err(pg_error)?;
    let get = |i: usize| -> Result<Option<i64>, StoreError> {
        row.try_get::<_, Option<i64>>(i).map_err(pg_error)
    };
    let flag = |i: usize| -> Result<Option<bool>, StoreError> {
        row.try_get::<_, Option<bool>>(i).map_err(pg_error)
    };
    let deny: Option<String> = row.try_get(0).map_err(pg_error)?;
    if let Some(deny) = deny {
        let limit = unsigned(get(2)?.unwrap_or_default());
        let retry_after_ms = unsigned(get(3)?.unwrap_or_default());
        let resets_at = unsigned(get(4)?.unwrap_or_default());
        let deny = match deny.as_str() {
            "model_not_priced" => Deny::ModelNotPriced,
            "budget_usd" => Deny::Budget {
                kind: BudgetKind::Usd,
                limit: BudgetLimit::Usd(Usd::from_nanos(limit)),
                resets_at,
            },
            "budget_tokens" => Deny::Budget {
                kind: BudgetKind::Tokens,
                limit: BudgetLimit::Tokens(limit),
                resets_at,
            },
            "tokens_never_fit" => Deny::TokensNeverFit {
                limit,
                requested: ask.estimate.tokens,
            },
            "concurrency" => Deny::Concurrency {
                limit: u32::try_from(limit).unwrap_or(u32::MAX),
            },
            "requests" => Deny::Requests {
                limit,
                retry_after_ms,
            },
            "tokens" => Deny::Tokens {
                limit,
                retry_after_ms,
            },
            _ => {
                return Err(StoreError::Postgres(
                    "keygate_limits_acquire answered an unknown refusal".to_owned(),
                ));
            }
        };
        return Ok(Err(LimitRefusal {
            deny,
            model: flag(1)?.unwrap_or(false),
        }));
    }
    let lease_at = |i: usize| -> Result<Option<policy::Lease>, StoreError> {
        let Some(request) = flag(i)? else {
            return Ok(None);
        };
        Ok(Some(policy::Lease {
            request,
            tokens: unsigned(get(i + 1)?.unwrap_or_default()),
            reserved: Spend {
                usd: Usd::from_nanos(unsigned(get(i + 2)?.unwrap_or_default())),
                tokens: unsigned(get(i + 3)?.unwrap_or_default()),
            },
        }))
    };
    let bucket = |i: usize| -> Result<Option<(u64, u64, u64)>, StoreError> {
        Ok(match (get(i)?, get(i + 1)?, get(i + 2)?) {
            (Some(l), Some(a), Some(r)) => Some((unsigned(l), unsigned(a), unsigned(r))),
            _ => None,
        })
    };
    let grant_lease = lease_at(5)?.unwrap_or_default();
    let model = match (lease_at(9)?, ask.model.as_ref()) {
        (Some(lease), Some(m)) => Some(ModelLease {
            name: m.name.to_owned(),
            row_name: m.row_name.to_owned(),
            lease,
            budget_period: overrides.and_then(|(r, p)| p.filter(|_| has_budget(&r))),
        }),
        _ => None,
    };
    Ok(Ok(LimitLease {
        id: ask.lease,
        grant: ask.grant.clone(),
        held: true,
        grant_lease,
        budget_period: ask.budget_period.filter(|_| has_budget(&ask.rules)),
        model,
        rate: RateState {
            requests: bucket(13)?,
            tokens: bucket(16)?,
        },
    }))
}

/// Ends a lease with what the answer really used (`actual`), in one statement: each
/// window it holds releases its place and reservations, adds the spend, and gives back
/// (or charges) tpm tokens, after rolling to the budget's current period. False: the
/// lease had ended already (settled before, or reclaimed by [`heartbeat`]) and nothing
/// changed — so a settle may be retried safely.
pub async fn settle(
    client: &impl GenericClient,
    lease: &LimitLease,
    actual: Spend,
    now_ms: u64,
) -> Result<bool, StoreError> {
    if !lease.held {
        return Ok(false);
    }
    let g = bounds(lease.budget_period, now_ms);
    let m = bounds(lease.model.as_ref().and_then(|m| m.budget_period), now_ms);
    let (g_kind, g_start, g_end, g_first, g_last) = split(&g);
    let (m_kind, m_start, m_end, m_first, m_last) = split(&m);
    let grant_id = lease.grant.as_str();
    let now = big(now_ms);
    let (a_usd, a_tokens) = (big(actual.usd.nanos()), big(actual.tokens));
    let row_name = lease.model.as_ref().map(|m| m.row_name.as_str());
    let params: [&(dyn ToSql + Sync); 16] = [
        &lease.id.0,
        &grant_id,
        &now,
        &a_usd,
        &a_tokens,
        &g_kind,
        &g_start,
        &g_end,
        &g_first,
        &g_last,
        &row_name,
        &m_kind,
        &m_start,
        &m_end,
        &m_first,
        &m_last,
    ];
    let row = client.query_one(SETTLE, &params).await.map_err(pg_error)?;
    row.try_get(0).map_err(pg_error)
}

/// A heartbeat: [`alive`], then [`reclaim`] (on one connection: the store spreads
/// them over two). How many leases it reclaimed.
pub async fn heartbeat(
    client: &impl GenericClient,
    node: &str,
    ttl: Duration,
) -> Result<u64, StoreError> {
    alive(client, node, ttl).await?;
    reclaim(client, ttl).await
}

/// Marks `node` alive for `ttl` more, by the database's clock (its own statement).
pub async fn alive(
    client: &impl GenericClient,
    node: &str,
    ttl: Duration,
) -> Result<(), StoreError> {
    client
        .execute(
            "SELECT keygate_limits_alive($1, $2)",
            &[&node, &millis(ttl)],
        )
        .await
        .map_err(pg_error)?;
    Ok(())
}

/// Reclaims the leases of nodes not alive for `ttl`: each settled as if its answer had
/// spent all it reserved (the upstream may have answered in full, and nobody counted
/// it). How many (at most 1000 a call; a window busy at that moment waits for a later
/// call, unless its lease is long overdue).
pub async fn reclaim(client: &impl GenericClient, ttl: Duration) -> Result<u64, StoreError> {
    let row = client
        .query_one("SELECT keygate_limits_reclaim($1)", &[&millis(ttl)])
        .await
        .map_err(pg_error)?;
    let reclaimed: i64 = row.try_get(0).map_err(pg_error)?;
    Ok(unsigned(reclaimed))
}

fn millis(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

/// After an edit of the grant's limits: each of its windows reloads its budget's spend
/// from the usage rows at its next request (requests made under no limit made no
/// statement, so no window counted them). One statement per edit.
pub async fn forget(client: &impl GenericClient, grant: &GrantId) -> Result<(), StoreError> {
    client
        .execute("SELECT keygate_limits_forget($1)", &[&grant.as_str()])
        .await
        .map_err(pg_error)?;
    Ok(())
}

fn has_budget(r: &Rules) -> bool {
    r.budget_usd.is_some() || r.budget_tokens.is_some()
}

type Split = (
    Option<&'static str>,
    Option<i64>,
    Option<i64>,
    Option<i32>,
    Option<i32>,
);

fn split(b: &Option<Bounds>) -> Split {
    match b {
        Some(b) => (
            Some(b.kind),
            Some(b.start),
            Some(b.end),
            Some(b.first_day),
            Some(b.last_day),
        ),
        None => (None, None, None, None, None),
    }
}
