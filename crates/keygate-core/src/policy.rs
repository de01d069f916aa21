//! May this grant make this call now, and what does it reserve? Pure math, no I/O: the
//! server's limiter (`keygate-server/src/limiter.rs`) keeps a [`UsageWindow`] per grant
//! (and per grant + model with overrides), asks [`decide`] under one lock, and applies
//! the [`Lease`] it returns; when the answer ends it [`UsageWindow::settle`]s the lease
//! to what was really used.
//!
//! * Requests and tokens per minute are token buckets: capacity = the per-minute
//!   limit, refilled continuously over 60 s (millisecond clock). A bucket may go into
//!   debt when an answer used more tokens than it reserved; the debt is paid back by
//!   the refill before the next request fits.
//! * Concurrency counts leases in flight.
//! * A budget (USD and/or tokens per calendar period) is spent by settled usage plus
//!   the reservations in flight: a request is refused when its worst case does not
//!   fit what is left, so concurrent requests cannot overspend it together.

use crate::money::Usd;
use crate::price::PriceTable;
use crate::scope::ModelUse;
use crate::time::UnixTime;
use crate::usage::Usage;

/// Bucket levels are kept in "token-milliseconds" (tokens × 60 000): a bucket of
/// `limit` per minute refills exactly `limit` units per millisecond, with no rounding.
const SCALE: i128 = 60_000;

/// A per-minute token bucket (requests or tokens).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Bucket {
    limit: u64,
    /// Tokens × [`SCALE`]; negative when in debt.
    level: i128,
    at_ms: u64,
}

impl Bucket {
    /// A full bucket of `limit` per minute.
    pub fn full(limit: u64, now_ms: u64) -> Self {
        Self {
            limit,
            level: i128::from(limit) * SCALE,
            at_ms: now_ms,
        }
    }

    pub fn limit(&self) -> u64 {
        self.limit
    }

    /// The level at `now_ms` (refilled, capped at the capacity).
    fn level_at(&self, now_ms: u64) -> i128 {
        let elapsed = i128::from(now_ms.saturating_sub(self.at_ms));
        let cap = i128::from(self.limit) * SCALE;
        (self.level + elapsed * i128::from(self.limit)).min(cap)
    }

    fn refill(&mut self, now_ms: u64) {
        self.level = self.level_at(now_ms);
        self.at_ms = self.at_ms.max(now_ms);
    }

    /// Whole tokens available now (0 when in debt).
    pub fn available(&self, now_ms: u64) -> u64 {
        u64::try_from((self.level_at(now_ms) / SCALE).max(0)).unwrap_or(u64::MAX)
    }

    /// Milliseconds until `n` tokens are available: `Some(0)` now, `None` never (more
    /// than the capacity).
    pub fn wait_ms(&self, n: u64, now_ms: u64) -> Option<u64> {
        if n > self.limit {
            return None;
        }
        let missing = i128::from(n) * SCALE - self.level_at(now_ms);
        if missing <= 0 {
            return Some(0);
        }
        let rate = i128::from(self.limit.max(1));
        u64::try_from((missing + rate - 1) / rate).ok()
    }

    /// Milliseconds until the bucket is full again (OpenAI's `x-ratelimit-reset-*`).
    pub fn reset_ms(&self, now_ms: u64) -> u64 {
        let missing = i128::from(self.limit) * SCALE - self.level_at(now_ms);
        let rate = i128::from(self.limit.max(1));
        u64::try_from(((missing + rate - 1) / rate).max(0)).unwrap_or(u64::MAX)
    }

    /// Takes `n` tokens (may go into debt: the caller checked [`Bucket::wait_ms`]).
    pub fn take(&mut self, n: u64, now_ms: u64) {
        self.refill(now_ms);
        self.level -= i128::from(n) * SCALE;
    }

    /// Gives back `n` tokens that were reserved and not used (never above capacity).
    pub fn give_back(&mut self, n: u64, now_ms: u64) {
        self.refill(now_ms);
        let cap = i128::from(self.limit) * SCALE;
        self.level = (self.level + i128::from(n) * SCALE).min(cap);
    }

    /// A changed limit (the grant was edited): keep what was used, within the new cap.
    pub fn set_limit(&mut self, limit: u64, now_ms: u64) {
        if limit == self.limit {
            return;
        }
        self.refill(now_ms);
        let used = i128::from(self.limit) * SCALE - self.level;
        self.limit = limit;
        self.level = (i128::from(limit) * SCALE - used).min(i128::from(limit) * SCALE);
    }
}

/// Usage counted against a budget: dollars and tokens.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Spend {
    pub usd: Usd,
    pub tokens: u64,
}

impl Spend {
    pub fn plus(self, other: Spend) -> Spend {
        Spend {
            usd: self.usd + other.usd,
            tokens: self.tokens.saturating_add(other.tokens),
        }
    }

    pub fn minus(self, other: Spend) -> Spend {
        Spend {
            usd: self.usd.saturating_sub(other.usd),
            tokens: self.tokens.saturating_sub(other.tokens),
        }
    }
}

/// What one request may cost at most: its prompt tokens plus the output it allows
/// (`tokens`), priced (`usd`, `None` when the model has no known price or no model
/// was named).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Estimate {
    pub tokens: u64,
    pub usd: Option<Usd>,
}

impl Estimate {
    /// The worst case of a request: `prompt` tokens plus `output`, priced for `model`.
    /// `runs` says whether the call runs a model (`scope::model_use`): one that runs
    /// none costs nothing by the token; one that runs a model it does not name (OpenAI
    /// picks), or at a dearer `premium_tier` than the table's standard prices, cannot
    /// be priced.
    pub fn of(
        prices: &PriceTable,
        model: Option<&str>,
        runs: ModelUse,
        prompt: u64,
        output: u64,
        premium_tier: bool,
    ) -> Self {
        let usage = Usage {
            prompt_tokens: prompt,
            cached_tokens: 0,
            completion_tokens: output,
        };
        let price = |m: &str| prices.get(m).map(|p| p.cost(&usage));
        let usd = match (model, runs) {
            (_, ModelUse::Named | ModelUse::Hidden) if premium_tier => None,
            (Some(m), ModelUse::None) => Some(price(m).unwrap_or(Usd::ZERO)),
            (Some(m), _) => price(m),
            (None, ModelUse::None) => Some(Usd::ZERO),
            (None, _) => None,
        };
        Self {
            tokens: usage.total(),
            usd,
        }
    }
}

/// The state one set of limits is decided against (the limiter owns it).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct UsageWindow {
    pub requests: Option<Bucket>,
    pub tokens: Option<Bucket>,
    pub in_flight: u32,
    /// Usage settled in the budget's current period.
    pub settled: Spend,
    /// Reservations of the requests in flight.
    pub reserved: Spend,
    /// When the budget's current period ends (for the refusal's message).
    pub resets_at: UnixTime,
}

/// What an accepted request holds until its answer ends.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Lease {
    /// Counted against rpm (every request is).
    pub request: bool,
    /// Tokens taken from the tpm bucket.
    pub tokens: u64,
    /// Reserved against the budget.
    pub reserved: Spend,
}

/// Why a request is refused.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Deny {
    /// Requests per minute spent; the next fits after `retry_after_ms`.
    Requests {
        limit: u64,
        retry_after_ms: u64,
    },
    /// Tokens per minute spent; this request's tokens fit after `retry_after_ms`.
    Tokens {
        limit: u64,
        retry_after_ms: u64,
    },
    /// This request alone needs more tokens than the per-minute limit: it never fits.
    TokensNeverFit {
        limit: u64,
        requested: u64,
    },
    Concurrency {
        limit: u32,
    },
    /// The reservation does not fit what is left of the budget.
    Budget {
        kind: BudgetKind,
        limit: BudgetLimit,
        resets_at: UnixTime,
    },
    /// A USD budget, and a model whose price is unknown (or none named).
    ModelNotPriced,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BudgetKind {
    Usd,
    Tokens,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BudgetLimit {
    Usd(Usd),
    Tokens(u64),
}

/// The limits one window is held to (a grant's own, or one model's overrides).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Rules {
    pub rpm: Option<u32>,
    pub tpm: Option<u64>,
    pub max_concurrency: Option<u32>,
    pub budget_usd: Option<Usd>,
    pub budget_tokens: Option<u64>,
}

impl Rules {
    pub fn of(limits: &crate::limits::Limits) -> Self {
        Self {
            rpm: limits.rpm,
            tpm: limits.tpm,
            max_concurrency: limits.max_concurrency,
            budget_usd: limits.budget.as_ref().and_then(|b| b.usd),
            budget_tokens: limits.budget.as_ref().and_then(|b| b.tokens),
        }
    }

    pub fn of_model(limits: &crate::limits::ModelLimits) -> Self {
        Self {
            rpm: limits.rpm,
            tpm: limits.tpm,
            max_concurrency: None,
            budget_usd: limits.budget.as_ref().and_then(|b| b.usd),
            budget_tokens: limits.budget.as_ref().and_then(|b| b.tokens),
        }
    }

    /// Whether deciding needs the request's token count (tpm or a budget).
    pub fn needs_tokens(&self) -> bool {
        self.tpm.is_some() || self.budget_usd.is_some() || self.budget_tokens.is_some()
    }
}

/// May a request with this estimate go ahead under `limits`, given `window`? The lease
/// says what to take; [`UsageWindow::apply`] takes it. Checked in this order: model
/// not priced, budget, a request larger than tpm, concurrency, rpm, tpm (what cannot
/// be fixed by waiting first).
pub fn decide(
    limits: &crate::limits::Limits,
    window: &UsageWindow,
    estimate: &Estimate,
    now_ms: u64,
) -> Result<Lease, Deny> {
    decide_rules(&Rules::of(limits), window, estimate, now_ms)
}

/// [`decide`] for any [`Rules`] (a model's overrides use this).
pub fn decide_rules(
    rules: &Rules,
    window: &UsageWindow,
    estimate: &Estimate,
    now_ms: u64,
) -> Result<Lease, Deny> {
    let mut reserved = Spend::default();
    if let Some(limit) = rules.budget_usd {
        let Some(usd) = estimate.usd else {
            return Err(Deny::ModelNotPriced);
        };
        let spent = window.settled.usd + window.reserved.usd;
        if spent >= limit || spent + usd > limit {
            return Err(Deny::Budget {
                kind: BudgetKind::Usd,
                limit: BudgetLimit::Usd(limit),
                resets_at: window.resets_at,
            });
        }
        reserved.usd = usd;
    }
    if let Some(limit) = rules.budget_tokens {
        let spent = window.settled.tokens.saturating_add(window.reserved.tokens);
        if spent >= limit || spent.saturating_add(estimate.tokens) > limit {
            return Err(Deny::Budget {
                kind: BudgetKind::Tokens,
                limit: BudgetLimit::Tokens(limit),
                resets_at: window.resets_at,
            });
        }
        reserved.tokens = estimate.tokens;
    }
    if let Some(limit) = rules.tpm
        && estimate.tokens > limit
    {
        return Err(Deny::TokensNeverFit {
            limit,
            requested: estimate.tokens,
        });
    }
    if let Some(limit) = rules.max_concurrency
        && window.in_flight >= limit
    {
        return Err(Deny::Concurrency { limit });
    }
    if let (Some(limit), Some(bucket)) = (rules.rpm, &window.requests) {
        let wait = bucket.wait_ms(1, now_ms).unwrap_or(60_000);
        if wait > 0 {
            return Err(Deny::Requests {
                limit: u64::from(limit),
                retry_after_ms: wait,
            });
        }
    }
    let mut tokens = 0;
    if let (Some(limit), Some(bucket)) = (rules.tpm, &window.tokens) {
        match bucket.wait_ms(estimate.tokens, now_ms) {
            Some(0) => tokens = estimate.tokens,
            Some(wait) => {
                return Err(Deny::Tokens {
                    limit,
                    retry_after_ms: wait,
                });
            }
            None => {
                return Err(Deny::TokensNeverFit {
                    limit,
                    requested: estimate.tokens,
                });
            }
        }
    }
    Ok(Lease {
        request: rules.rpm.is_some(),
        tokens,
        reserved,
    })
}

impl UsageWindow {
    /// Makes the buckets match `rules` (created full, resized, or dropped).
    pub fn conform(&mut self, rules: &Rules, now_ms: u64) {
        conform_bucket(&mut self.requests, rules.rpm.map(u64::from), now_ms);
        conform_bucket(&mut self.tokens, rules.tpm, now_ms);
    }

    /// Takes what `lease` holds.
    pub fn apply(&mut self, lease: &Lease, now_ms: u64) {
        if lease.request
            && let Some(b) = &mut self.requests
        {
            b.take(1, now_ms);
        }
        if lease.tokens > 0
            && let Some(b) = &mut self.tokens
        {
            b.take(lease.tokens, now_ms);
        }
        self.in_flight = self.in_flight.saturating_add(1);
        self.reserved = self.reserved.plus(lease.reserved);
    }

    /// Ends `lease` with what the answer really used: the reservation is released,
    /// the real usage settled, and the tpm bucket given back what was not used (or
    /// charged the excess, into debt if need be).
    pub fn settle(&mut self, lease: &Lease, actual: Spend, now_ms: u64) {
        self.in_flight = self.in_flight.saturating_sub(1);
        self.reserved = self.reserved.minus(lease.reserved);
        self.settled = self.settled.plus(actual);
        if let Some(b) = &mut self.tokens {
            if actual.tokens < lease.tokens {
                b.give_back(lease.tokens - actual.tokens, now_ms);
            } else {
                b.take(actual.tokens - lease.tokens, now_ms);
            }
        }
    }
}

fn conform_bucket(bucket: &mut Option<Bucket>, limit: Option<u64>, now_ms: u64) {
    match (bucket.as_mut(), limit) {
        (_, None) => *bucket = None,
        (None, Some(l)) => *bucket = Some(Bucket::full(l, now_ms)),
        (Some(b), Some(l)) => b.set_limit(l, now_ms),
    }
}

/// OpenAI's duration format for `x-ratelimit-reset-*`: `0s`, `20ms`, `1s`, `1.5s`, `6m0s`.
pub fn openai_duration(ms: u64) -> String {
    // Go's `time.Duration` format, which OpenAI's headers use: zero is `0s`.
    if ms == 0 {
        return "0s".to_owned();
    }
    if ms < 1000 {
        return format!("{ms}ms");
    }
    let secs = ms / 1000;
    let frac = ms % 1000;
    let sec_part = |s: u64| {
        if frac == 0 {
            format!("{s}s")
        } else {
            let f = format!("{:03}", frac);
            format!("{s}.{}s", f.trim_end_matches('0'))
        }
    };
    if secs < 60 {
        sec_part(secs)
    } else if secs < 3600 {
        format!("{}m{}", secs / 60, sec_part(secs % 60))
    } else {
        format!("{}h{}m{}", secs / 3600, secs / 60 % 60, sec_part(secs % 60))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::limits::{Budget, Limits};
    use proptest::prelude::*;

    #[test]
    fn estimates_are_priced_only_when_they_can_be() {
        let t = PriceTable::builtin();
        let of =
            |model, runs, premium| Estimate::of(&t, model, runs, 1_000_000, 1_000_000, premium);
        // gpt-4o-mini: $0.15 in + $0.60 out per million.
        let e = of(Some("gpt-4o-mini"), ModelUse::Named, false);
        assert_eq!((e.tokens, e.usd), (2_000_000, Some(usd(0.75))));
        assert_eq!(of(Some("gpt-4o-mini"), ModelUse::Named, true).usd, None);
        assert_eq!(
            of(Some("nobody-priced-this"), ModelUse::Named, false).usd,
            None
        );
        assert_eq!(of(None, ModelUse::Named, false).usd, None);
        // A call that runs no model (a file list) costs nothing, whatever it names.
        assert_eq!(of(None, ModelUse::None, false).usd, Some(Usd::ZERO));
        assert_eq!(
            of(Some("nobody-priced-this"), ModelUse::None, false).usd,
            Some(Usd::ZERO)
        );
    }

    fn usd(d: f64) -> Usd {
        Usd::from_dollars(d).unwrap()
    }

    fn est(tokens: u64, dollars: f64) -> Estimate {
        Estimate {
            tokens,
            usd: Some(usd(dollars)),
        }
    }

    fn window(limits: &Limits, now: u64) -> UsageWindow {
        let mut w = UsageWindow::default();
        w.conform(&Rules::of(limits), now);
        w
    }

    #[test]
    fn rpm_bucket_refills_continuously() {
        let limits = Limits {
            rpm: Some(2),
            ..Limits::default()
        };
        let mut w = window(&limits, 0);
        for _ in 0..2 {
            let lease = decide(&limits, &w, &Estimate::default(), 0).unwrap();
            w.apply(&lease, 0);
        }
        assert_eq!(
            decide(&limits, &w, &Estimate::default(), 0),
            Err(Deny::Requests {
                limit: 2,
                retry_after_ms: 30_000
            })
        );
        // One request's worth comes back after 30 s (2 per minute).
        assert!(decide(&limits, &w, &Estimate::default(), 29_999).is_err());
        assert!(decide(&limits, &w, &Estimate::default(), 30_000).is_ok());
        assert_eq!(w.requests.unwrap().reset_ms(0), 60_000);
    }

    #[test]
    fn tpm_refusals_and_debt() {
        let limits = Limits {
            tpm: Some(100),
            ..Limits::default()
        };
        let mut w = window(&limits, 0);
        assert_eq!(
            decide(&limits, &w, &est(101, 0.0), 0),
            Err(Deny::TokensNeverFit {
                limit: 100,
                requested: 101
            })
        );
        let lease = decide(&limits, &w, &est(60, 0.0), 0).unwrap();
        w.apply(&lease, 0);
        assert_eq!(
            decide(&limits, &w, &est(60, 0.0), 0),
            Err(Deny::Tokens {
                limit: 100,
                retry_after_ms: 12_000
            })
        );
        // The answer used 150 tokens: 90 over the reservation, the bucket is in debt.
        w.settle(
            &lease,
            Spend {
                usd: Usd::ZERO,
                tokens: 150,
            },
            0,
        );
        assert_eq!(w.tokens.unwrap().available(0), 0);
        assert_eq!(w.tokens.unwrap().wait_ms(10, 0), Some(36_000));
        assert_eq!(w.in_flight, 0);
    }

    #[test]
    fn unused_reservation_is_given_back() {
        let limits = Limits {
            tpm: Some(100),
            ..Limits::default()
        };
        let mut w = window(&limits, 0);
        let lease = decide(&limits, &w, &est(80, 0.0), 0).unwrap();
        w.apply(&lease, 0);
        assert_eq!(w.tokens.unwrap().available(0), 20);
        w.settle(
            &lease,
            Spend {
                usd: Usd::ZERO,
                tokens: 30,
            },
            0,
        );
        assert_eq!(w.tokens.unwrap().available(0), 70);
    }

    #[test]
    fn concurrency_and_budget() {
        let limits = Limits {
            max_concurrency: Some(1),
            budget: Some(Budget {
                usd: Some(usd(1.0)),
                tokens: None,
                period: crate::calendar::Period::Day,
            }),
            ..Limits::default()
        };
        let mut w = window(&limits, 0);
        w.resets_at = 86_400;
        let lease = decide(&limits, &w, &est(10, 0.6), 0).unwrap();
        w.apply(&lease, 0);
        assert_eq!(
            decide(&limits, &w, &est(10, 0.1), 0),
            Err(Deny::Concurrency { limit: 1 })
        );
        w.settle(
            &lease,
            Spend {
                usd: usd(0.5),
                tokens: 10,
            },
            0,
        );
        assert_eq!(
            decide(&limits, &w, &est(10, 0.6), 0),
            Err(Deny::Budget {
                kind: BudgetKind::Usd,
                limit: BudgetLimit::Usd(usd(1.0)),
                resets_at: 86_400
            })
        );
        assert!(decide(&limits, &w, &est(10, 0.5), 0).is_ok());
        assert_eq!(
            decide(
                &limits,
                &w,
                &Estimate {
                    tokens: 1,
                    usd: None
                },
                0
            ),
            Err(Deny::ModelNotPriced)
        );
    }

    #[test]
    fn a_changed_limit_keeps_what_was_used() {
        let mut b = Bucket::full(10, 0);
        b.take(4, 0);
        b.set_limit(5, 0);
        assert_eq!(b.available(0), 1);
        b.set_limit(20, 0);
        assert_eq!(b.available(0), 16);
    }

    #[test]
    fn durations_in_openai_format() {
        assert_eq!(openai_duration(0), "0s");
        assert_eq!(openai_duration(20), "20ms");
        assert_eq!(openai_duration(1000), "1s");
        assert_eq!(openai_duration(1500), "1.5s");
        assert_eq!(openai_duration(360_000), "6m0s");
        assert_eq!(openai_duration(61_250), "1m1.25s");
        assert_eq!(openai_duration(3_600_000), "1h0m0s");
    }

    proptest! {
        /// Whatever the order of leases and settlements, when no answer uses more than
        /// it reserved, settled + reserved never exceeds the budget.
        #[test]
        fn budget_never_overspent(
            ops in proptest::collection::vec((0u8..3, 1u64..400_000_000, 0u64..=100), 1..200),
        ) {
            let limits = Limits {
                budget: Some(Budget {
                    usd: Some(usd(1.0)),
                    tokens: Some(5_000),
                    period: crate::calendar::Period::Month,
                }),
                ..Limits::default()
            };
            let cap = usd(1.0);
            let mut w = window(&limits, 0);
            let mut open: Vec<Lease> = Vec::new();
            for (op, nanos, pct) in ops {
                if op < 2 || open.is_empty() {
                    let e = Estimate { tokens: nanos % 2_000, usd: Some(Usd::from_nanos(nanos)) };
                    if let Ok(lease) = decide(&limits, &w, &e, 0) {
                        w.apply(&lease, 0);
                        open.push(lease);
                    }
                } else {
                    let lease = open.remove(nanos as usize % open.len());
                    let actual = Spend {
                        usd: Usd::from_nanos(lease.reserved.usd.nanos() * pct / 100),
                        tokens: lease.reserved.tokens * pct / 100,
                    };
                    w.settle(&lease, actual, 0);
                }
                prop_assert!(w.settled.usd + w.reserved.usd <= cap);
                prop_assert!(w.settled.tokens + w.reserved.tokens <= 5_000);
                prop_assert_eq!(w.in_flight as usize, open.len());
            }
        }

        /// A bucket never hands out more than its capacity plus what refilled.
        #[test]
        fn bucket_never_exceeds_its_rate(steps in proptest::collection::vec((0u64..5_000, 1u64..50), 1..100)) {
            let mut b = Bucket::full(100, 0);
            let (mut now, mut taken) = (0u64, 0u64);
            for (dt, n) in steps {
                now += dt;
                if b.wait_ms(n, now) == Some(0) {
                    b.take(n, now);
                    taken += n;
                }
                prop_assert!(u128::from(taken) <= 100 + u128::from(now) * 100 / 60_000);
            }
        }
    }
}
