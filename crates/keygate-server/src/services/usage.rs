//! Usage reports: a grant's per-day rows (`GET /api/grants/{id}/usage`, `GET
//! /admin/grants/{id}/usage`), its current period's totals and what is left of its
//! budget, and the app's own view of its key (`GET /v1/key`). Everything is read
//! through the accounting (stored rows plus counters not yet flushed), so a report is
//! current to the last finished request.

use keygate_core::calendar::{self, Period};
use keygate_core::ids::{GrantId, UserId};
use keygate_core::limits::{Limits, OwnKey, Plan};
use keygate_core::money::Usd;
use keygate_core::scope::Scope;
use keygate_core::time::UnixTime;
use keygate_store::GrantRecord;
use serde::Serialize;

use crate::error::ServerError;
use crate::services::error::{Missing, ServiceError};
use crate::state::AppState;

/// Longest report, in days.
pub const MAX_DAYS: u32 = 366;
/// The default report: the last 30 days, today included.
const DEFAULT_DAYS: u32 = 30;

/// A period's totals (the budget's period, else the calendar month).
#[derive(Debug, Serialize)]
pub struct PeriodUsage {
    pub period: &'static str,
    pub period_start: String,
    pub resets_at: String,
    pub requests: u64,
    pub tokens: u64,
    pub usd: Usd,
}

/// What is left of the budget this period (`null`: no such budget).
#[derive(Debug, Serialize)]
pub struct Remaining {
    pub usd: Option<Usd>,
    pub tokens: Option<u64>,
}

#[derive(Debug, Serialize)]
pub struct DayRow {
    pub day: String,
    /// The model the requests named (`null` when they named none).
    pub model: Option<String>,
    pub requests: u64,
    pub errors: u64,
    pub prompt_tokens: u64,
    pub cached_tokens: u64,
    pub completion_tokens: u64,
    pub usd: Usd,
    /// Requests counted from a stream cut short (tokens estimated).
    pub estimated: u64,
}

#[derive(Debug, Serialize)]
pub struct UsageReport {
    pub grant_id: String,
    pub from: String,
    pub to: String,
    pub days: Vec<DayRow>,
    pub summary: PeriodUsage,
    pub remaining: Remaining,
}

#[derive(Debug, Serialize)]
pub struct RateLimitView {
    pub remaining_requests: Option<u64>,
    pub remaining_tokens: Option<u64>,
    pub reset_requests_s: Option<f64>,
    pub reset_tokens_s: Option<f64>,
}

/// `GET /v1/key`: the grant as its app may see it (never a secret).
#[derive(Debug, Serialize)]
pub struct KeyInfo {
    pub id: String,
    pub name: String,
    pub origin: Option<String>,
    pub models: Vec<String>,
    pub scopes: Vec<Scope>,
    pub limits: Limits,
    pub expires_at: Option<String>,
    pub plan: Option<String>,
    /// Whether the app must, may or may not send its own key (`X-OpenAI-Key`).
    pub own_key: OwnKey,
    pub usage: PeriodUsage,
    pub remaining: Remaining,
    pub rate_limit: RateLimitView,
}

/// The grant's usage in its budget's current period (the month without a budget),
/// and what is left of the budget after the reservations in flight.
pub async fn period(
    st: &AppState,
    grant: &GrantRecord,
    now: UnixTime,
) -> Result<(PeriodUsage, Remaining), ServerError> {
    let budget = grant.limits.budget.as_ref();
    let period = budget.map_or(Period::Month, |b| b.period);
    let (start, end) = (period.start(now), period.next_start(now));
    let total = st
        .accounting
        .total(
            &st.store,
            &grant.id,
            calendar::day_number(start),
            calendar::day_number(end).saturating_sub(1),
            None,
        )
        .await?;
    let usd = Usd::from_nanos(total.usd_nanos);
    let reserved = st.limiter.reserved(&grant.id).await?;
    let remaining = Remaining {
        usd: budget
            .and_then(|b| b.usd)
            .map(|cap| cap.saturating_sub(usd + reserved.usd)),
        tokens: budget
            .and_then(|b| b.tokens)
            .map(|cap| cap.saturating_sub(total.tokens().saturating_add(reserved.tokens))),
    };
    Ok((
        PeriodUsage {
            period: period.as_str(),
            period_start: calendar::to_rfc3339(start),
            resets_at: calendar::to_rfc3339(end),
            requests: total.requests,
            tokens: total.tokens(),
            usd,
        },
        remaining,
    ))
}

/// A report's days from `from` to `to` (`YYYY-MM-DD`, both included) as day numbers:
/// by default the last 30 days, today (UTC, at `now`) included; at most [`MAX_DAYS`].
/// A bad date names its parameter; `from` after `to` or too long a range names `from`.
pub fn day_range(
    from: Option<&str>,
    to: Option<&str>,
    now: UnixTime,
) -> Result<(u32, u32), ServiceError> {
    let day = |param: &'static str, v: Option<&str>, default: u32| match v {
        None => Ok(default),
        Some(s) => calendar::parse_day(s).ok_or_else(|| {
            ServiceError::invalid(param, format!("`{param}` must be a date, YYYY-MM-DD"))
        }),
    };
    let to = day("to", to, calendar::day_number(now))?;
    let from = day("from", from, to.saturating_sub(DEFAULT_DAYS - 1))?;
    if from > to {
        return Err(ServiceError::invalid(
            "from",
            "`from` must not be after `to`",
        ));
    }
    if to - from >= MAX_DAYS {
        return Err(ServiceError::invalid(
            "from",
            format!("a report covers at most {MAX_DAYS} days"),
        ));
    }
    Ok((from, to))
}

/// A grant's per-day usage from `from` to `to` (`YYYY-MM-DD`, both included; default
/// the last 30 days). `owner`: the person asking, who sees only their own grants
/// (revoked ones too); `None` for an operator.
pub async fn report(
    st: &AppState,
    owner: Option<&UserId>,
    id: &GrantId,
    from: Option<&str>,
    to: Option<&str>,
) -> Result<UsageReport, ServerError> {
    let grant = st
        .store
        .grant(id)
        .await?
        .filter(|g| owner.is_none_or(|u| *u == g.user_id))
        .ok_or(ServiceError::NotFound(Missing::Grant))?;
    let now = st.clock.now();
    let (from, to) = day_range(from, to, now)?;
    let days = st
        .accounting
        .rows(&st.store, &grant.id, from, to)
        .await?
        .into_iter()
        .map(|r| DayRow {
            day: calendar::day_string(r.day),
            model: (!r.model.is_empty()).then_some(r.model),
            requests: r.counts.requests,
            errors: r.counts.errors,
            prompt_tokens: r.counts.prompt_tokens,
            cached_tokens: r.counts.cached_tokens,
            completion_tokens: r.counts.completion_tokens,
            usd: Usd::from_nanos(r.counts.usd_nanos),
            estimated: r.counts.estimated,
        })
        .collect();
    let (summary, remaining) = period(st, &grant, now).await?;
    Ok(UsageReport {
        grant_id: grant.id.to_string(),
        from: calendar::day_string(from),
        to: calendar::day_string(to),
        days,
        summary,
        remaining,
    })
}

/// `GET /v1/key` for an authenticated, usable grant.
pub async fn key_info(st: &AppState, grant: &GrantRecord) -> Result<KeyInfo, ServerError> {
    let (usage, remaining) = period(st, grant, st.clock.now()).await?;
    let rate = st.limiter.snapshot(&grant.id, &grant.limits);
    let secs = |ms: u64| ms as f64 / 1000.0;
    Ok(KeyInfo {
        id: grant.id.to_string(),
        name: grant.name.clone(),
        origin: grant.origin.clone(),
        models: grant.models.clone(),
        scopes: grant.scopes.clone(),
        limits: grant.limits.clone(),
        expires_at: grant.expires_at.map(calendar::to_rfc3339),
        plan: grant.plan.clone(),
        own_key: st
            .config
            .plan_named(grant.plan.as_deref())
            .map_or(OwnKey::Allowed, Plan::own_key),
        usage,
        remaining,
        rate_limit: RateLimitView {
            remaining_requests: rate.requests.map(|(_, r, _)| r),
            remaining_tokens: rate.tokens.map(|(_, r, _)| r),
            reset_requests_s: rate.requests.map(|(_, _, ms)| secs(ms)),
            reset_tokens_s: rate.tokens.map(|(_, _, ms)| secs(ms)),
        },
    })
}
