//! THE limiter: every piece of per-grant limit state lives here, behind [`Limiter`]'s
//! few methods (`acquire`, the [`Lease`] it hands out, `snapshot`, `reserved`).
//!
//! Where the state lives depends on the store. On sled (one node) it is this process's
//! memory, as described below. On PostgreSQL (several nodes) it is the store's shared
//! `limit_windows` (`StoreBackend::limits_*`): a limited request makes one statement
//! to acquire and, once answered, one to settle — spawned, so the answer never waits
//! on it — and a grant without limits makes none; the decision is the same pure policy,
//! run by PL/pgSQL under the grant's row locks. Only the rpm/tpm figures for headers
//! are kept here then (the last acquire's on this node). Each lease there belongs to
//! this node, which keeps itself alive with a heartbeat ([`Limiter::spawn_heartbeat`]);
//! the leases of a node that stops (killed with requests in flight) are reclaimed by
//! the others' heartbeats after [`NODE_TTL`].
//!
//! Per grant (and per grant + model for a model with overrides in `limits.models`): a
//! `keygate_core::policy::UsageWindow` — rpm/tpm buckets, requests in flight, and the
//! budget spent in its current period = settled usage (loaded once per period from
//! the usage rows, stored and pending, then kept in memory) + reservations in flight.
//! Deciding and applying a lease happen under one lock per grant, so concurrent
//! requests cannot overspend a budget together; a period's total is read from the
//! store before that, with no lock held across the await (`acquire` says how a
//! settlement racing that read is still counted). Limits are read from the grant record
//! on every request, so an edit applies to the very next one.
//!
//! A [`Lease`] is settled by the proxy's account phase, which takes it over as the
//! request leaves for the upstream (an answer's real usage, or the worst case of a
//! request sent and never answered); one dropped unsettled (refused or failed before
//! anything was sent) is counted as an error with no tokens.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use keygate_core::calendar::{self, Period};
use keygate_core::ids::GrantId;
use keygate_core::limits::{Budget, Limits};
use keygate_core::money::Usd;
use keygate_core::policy::{self, Deny, Estimate, Rules, Spend, UsageWindow};
use keygate_core::time::Clock;
use keygate_store::{
    BackendKind, LeaseId, LimitAsk, LimitLease, LimitRefusal, ModelAsk, RateState, Store,
    StoreError, UsageCounts,
};

use crate::accounting::Accounting;

#[derive(Clone)]
pub struct Limiter(Arc<Inner>);

struct Inner {
    slots: Mutex<HashMap<GrantId, Arc<Mutex<Slot>>>>,
    accounting: Accounting,
    store: Store,
    clock: Clock,
    /// The store keeps the windows, shared by every node (PostgreSQL).
    shared: bool,
    /// Shared windows: the rpm/tpm state the last acquire on this node saw, per grant.
    rates: Mutex<HashMap<GrantId, RateState>>,
    /// Shared windows: per grant, this node's statements on its windows at once (see
    /// [`GRANT_STATEMENTS`]).
    gates: Mutex<HashMap<GrantId, Arc<Gate>>>,
    /// Where shared settles run: the runtime the limiter was made on (the server's
    /// main one, which outlives the workers: a settle spawned on a worker's runtime
    /// would be dropped with it at a graceful stop). `None` outside a runtime.
    settle_rt: Option<tokio::runtime::Handle>,
    /// Shared settles not finished yet, for [`Limiter::settled`].
    settling: std::sync::atomic::AtomicUsize,
}

/// A grant's statements on its shared windows from this node: acquires and settles
/// queue apart, so a crowd of acquires never holds back the settles that free places.
struct Gate {
    acquire: tokio::sync::Semaphore,
    settle: tokio::sync::Semaphore,
}

/// What a request asks of the shared windows, but the grant and model names: `Copy`,
/// so the acquire's task can take it along.
#[derive(Clone, Copy)]
struct AskParts {
    rules: Rules,
    budget_period: Option<Period>,
    estimate: Estimate,
    overrides: Option<(Rules, Option<Period>)>,
}

impl AskParts {
    fn ask<'a>(
        self,
        lease: LeaseId,
        grant: &'a GrantId,
        model: Option<&'a str>,
        now_ms: u64,
    ) -> LimitAsk<'a> {
        LimitAsk {
            lease,
            grant,
            now_ms,
            rules: self.rules,
            budget_period: self.budget_period,
            estimate: self.estimate,
            model: model.map(|m| ModelAsk {
                name: m,
                row_name: row_model(m),
                overrides: self.overrides,
            }),
        }
    }
}

/// One grant's state.
#[derive(Default)]
struct Slot {
    grant: Window,
    models: HashMap<String, Window>,
    /// Settlements of this grant so far (wrapping): a budget total read from the store
    /// while none landed is exact (see [`Limiter::acquire`]).
    settles: u64,
    /// What every settlement of this grant added, ever: what a total read while some
    /// landed adds back (those may or may not be in what it read).
    settled_ever: Spend,
}

/// A [`UsageWindow`] and the budget period its `settled` belongs to.
#[derive(Default)]
struct Window {
    usage: UsageWindow,
    period: Option<(Period, u64)>,
}

/// A budget window whose settled usage must be read from the store before deciding.
struct Stale {
    /// `None`: the grant's own window; else the model's (its overrides' budget).
    model: Option<String>,
    period: (Period, u64),
    end: u64,
}

/// A total read for a [`Stale`] window, and the slot's settlement count and sum when
/// the read began.
struct Loaded {
    stale: Stale,
    total: Spend,
    settles: u64,
    settled_ever: Spend,
}

/// How long a node's leases in the shared windows outlive its last heartbeat: then
/// any other node reclaims them. Long against the beat (a few missed beats — a
/// database failover, a stalled pool — do not lose a live node's leases), short
/// against a grant's patience (a killed node's places come back in seconds).
pub const NODE_TTL: std::time::Duration = std::time::Duration::from_secs(10);
/// Statements on one grant's shared windows a node runs at once; the rest of its
/// requests for that grant queue here, in memory. They serialise on the grant's row
/// lock in PostgreSQL anyway, and each one waiting there holds a pooled connection: a
/// busy (or hostile) grant would otherwise take the node's whole pool and stall every
/// other request — sign-ins, other grants — behind it. Two, not one, so the next
/// statement's round trip overlaps the current one's lock.
const GRANT_STATEMENTS: usize = 2;
/// How long a request waits for its turn at its grant's gate: the pool's own wait,
/// which bounded it before there was a gate.
const GATE_WAIT: std::time::Duration = std::time::Duration::from_secs(30);
/// How often a node on shared windows beats.
const HEARTBEAT_EVERY: std::time::Duration = std::time::Duration::from_secs(2);

/// Rounds of reading budget totals [`Limiter::acquire`] makes before it accepts a read
/// that settlements raced (then counting those settlements twice rather than missing
/// them: it may refuse a little early, never overspend).
const EXACT_READS: usize = 3;
/// Rounds after which an acquire gives up (a period that keeps moving: not expected).
const MAX_READS: usize = 8;

/// Why [`Limiter::acquire`] said no.
#[derive(Debug)]
pub enum Refusal {
    /// The grant-wide limits.
    Deny(Deny),
    /// The overrides of the request's model (`limits.models`).
    Model(Deny),
    Store(StoreError),
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// The rpm/tpm state for `x-ratelimit-*` and `/v1/key`: (limit, remaining, ms to full).
#[derive(Clone, Copy, Debug, Default)]
pub struct RateSnapshot {
    pub requests: Option<(u64, u64, u64)>,
    pub tokens: Option<(u64, u64, u64)>,
}

impl Slot {
    /// The budget windows `limits` (and the model's overrides) need that do not hold
    /// the current period's settled usage yet.
    fn stale(&self, limits: &Limits, model: Option<&str>, now: u64) -> Vec<Stale> {
        let mut out = Vec::new();
        let mut check = |w: Option<&Window>, budget: Option<&Budget>, model: Option<&str>| {
            if let Some(b) = budget {
                let period = (b.period, b.period.start(now));
                if w.and_then(|w| w.period) != Some(period) {
                    out.push(Stale {
                        model: model.map(str::to_owned),
                        period,
                        end: b.period.next_start(now),
                    });
                }
            }
        };
        check(Some(&self.grant), limits.budget.as_ref(), None);
        if let Some(m) = model
            && let Some(o) = limits.for_model(m)
        {
            check(self.models.get(m), o.budget.as_ref(), Some(m));
        }
        out
    }

    /// Puts a total read from the store into its window: as read when no settlement
    /// landed since the read began; with those settlements added when `force` (they
    /// may be in the total too: an over-count, never an under-count); else not at all
    /// (false: read again).
    fn load(&mut self, l: Loaded, force: bool) -> bool {
        let exact = self.settles == l.settles;
        if !exact && !force {
            return false;
        }
        let raced = if exact {
            Spend::default()
        } else {
            self.settled_ever.minus(l.settled_ever)
        };
        let w = match &l.stale.model {
            None => &mut self.grant,
            Some(m) => self.models.entry(m.clone()).or_default(),
        };
        // Another request loaded it meanwhile: its total is as good, and what settled
        // since is in it.
        if w.period != Some(l.stale.period) {
            w.usage.settled = l.total.plus(raced);
            w.usage.resets_at = l.stale.end;
            w.period = Some(l.stale.period);
        }
        true
    }
}

impl Limiter {
    pub fn new(store: Store, accounting: Accounting, clock: Clock) -> Self {
        Self(Arc::new(Inner {
            slots: Mutex::new(HashMap::new()),
            accounting,
            shared: store.kind() == BackendKind::Postgres,
            store,
            clock,
            rates: Mutex::new(HashMap::new()),
            gates: Mutex::new(HashMap::new()),
            settle_rt: tokio::runtime::Handle::try_current().ok(),
            settling: std::sync::atomic::AtomicUsize::new(0),
        }))
    }

    /// The grant's gate for statements on its shared windows.
    fn gate(&self, grant: &GrantId) -> Arc<Gate> {
        let mut gates = lock(&self.0.gates);
        if let Some(gate) = gates.get(grant) {
            return gate.clone();
        }
        gates
            .entry(grant.clone())
            .or_insert_with(|| {
                Arc::new(Gate {
                    acquire: tokio::sync::Semaphore::new(GRANT_STATEMENTS),
                    settle: tokio::sync::Semaphore::new(1),
                })
            })
            .clone()
    }

    /// Waits (at most `within`) until every shared settle spawned so far has finished;
    /// whether they all did. For a graceful stop: a lease left unsettled is reclaimed
    /// by the other nodes only after [`NODE_TTL`], and charged its whole reservation.
    pub async fn settled(&self, within: std::time::Duration) -> bool {
        let deadline = tokio::time::Instant::now() + within;
        while self.0.settling.load(std::sync::atomic::Ordering::SeqCst) > 0 {
            if tokio::time::Instant::now() >= deadline {
                return false;
            }
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
        true
    }

    fn slot(&self, grant: &GrantId) -> Arc<Mutex<Slot>> {
        let mut slots = lock(&self.0.slots);
        // Looked up first: the id is cloned only for a grant not seen yet.
        if let Some(slot) = slots.get(grant) {
            return slot.clone();
        }
        slots.entry(grant.clone()).or_default().clone()
    }

    /// Decides a request under the grant's limits (and its model's overrides) and, if
    /// it may go ahead, takes its lease — atomically per grant. `model` is the model the
    /// request named (its usage row's model).
    ///
    /// A budget's settled usage is read from the store once per period, with no lock
    /// held (the read awaits the store); the decision and the taking happen afterwards
    /// under the grant's lock, in one step, so two requests can never both take what
    /// only one fits. A settlement landing while the total was read makes the read
    /// uncertain (is it in there?): it is read again, and after a few rounds that
    /// settlement is counted on top (see [`Slot::load`]).
    pub async fn acquire(
        &self,
        grant: &GrantId,
        limits: &Limits,
        model: Option<&str>,
        estimate: Estimate,
    ) -> Result<Lease, Refusal> {
        if self.0.shared {
            return self.acquire_shared(grant, limits, model, estimate).await;
        }
        let slot = self.slot(grant);
        let mut loaded: Vec<Loaded> = Vec::new();
        for round in 0..=MAX_READS {
            let now = self.0.clock.now();
            let (stale, settles, settled_ever) = {
                let mut s = lock(&slot);
                for l in loaded.drain(..) {
                    s.load(l, round > EXACT_READS);
                }
                let stale = s.stale(limits, model, now);
                if stale.is_empty() {
                    return self.decide(&mut s, grant, limits, model, estimate);
                }
                (stale, s.settles, s.settled_ever)
            };
            for st in stale {
                let total = self
                    .0
                    .accounting
                    .total(
                        &self.0.store,
                        grant,
                        calendar::day_number(st.period.1),
                        calendar::day_number(st.end).saturating_sub(1),
                        // The rows' name (cut like every row's), so a long override
                        // name still matches.
                        st.model.as_deref().map(row_model),
                    )
                    .await
                    .map_err(Refusal::Store)?;
                loaded.push(Loaded {
                    stale: st,
                    total: Spend {
                        usd: Usd::from_nanos(total.usd_nanos),
                        tokens: total.tokens(),
                    },
                    settles,
                    settled_ever,
                });
            }
        }
        Err(Refusal::Store(StoreError::Transaction(
            "a budget's period kept changing while its usage was read".into(),
        )))
    }

    /// The decision and the taking, under the grant's lock, every budget window loaded.
    fn decide(
        &self,
        s: &mut Slot,
        grant: &GrantId,
        limits: &Limits,
        model: Option<&str>,
        estimate: Estimate,
    ) -> Result<Lease, Refusal> {
        let now_ms = self.0.clock.now_ms();
        let rules = Rules::of(limits);
        prepare(&mut s.grant, &rules, limits.budget.as_ref(), now_ms);
        let lease = policy::decide_rules(&rules, &s.grant.usage, &estimate, now_ms)
            .map_err(Refusal::Deny)?;
        let mut model_lease = None;
        if let Some((name, overrides)) = model.and_then(|m| limits.for_model(m).map(|o| (m, o))) {
            let rules = Rules::of_model(overrides);
            let w = s.models.entry(name.to_owned()).or_default();
            prepare(w, &rules, overrides.budget.as_ref(), now_ms);
            let l = policy::decide_rules(&rules, &w.usage, &estimate, now_ms)
                .map_err(Refusal::Model)?;
            w.usage.apply(&l, now_ms);
            model_lease = Some(l);
        } else if let Some(m) = model
            && let Some(w) = s.models.get_mut(m)
        {
            // Overrides removed since the last request: forget their window — unless
            // leases are still out in it. Their settlement comes back here, and should
            // the overrides return, the window must still know those reservations (a
            // fresh one would let new requests reserve the same budget again). Its
            // spend is reloaded then: requests in between were not counted in it.
            if w.usage.in_flight == 0 {
                s.models.remove(m);
            } else {
                w.period = None;
            }
        }
        s.grant.usage.apply(&lease, now_ms);
        Ok(Lease {
            limiter: self.clone(),
            grant: grant.clone(),
            model: model.unwrap_or_default().to_owned(),
            limits_budget: limits.budget.clone(),
            model_budget: model
                .and_then(|m| limits.for_model(m))
                .and_then(|o| o.budget.clone()),
            grant_lease: lease,
            model_lease,
            anonymous_row: false,
            settled: false,
            shared: None,
        })
    }

    /// [`Limiter::acquire`] on the store's shared windows: one statement, which
    /// decides and takes atomically per grant across every node.
    async fn acquire_shared(
        &self,
        grant: &GrantId,
        limits: &Limits,
        model: Option<&str>,
        estimate: Estimate,
    ) -> Result<Lease, Refusal> {
        let now_ms = self.0.clock.now_ms();
        let parts = AskParts {
            rules: Rules::of(limits),
            budget_period: limits.budget.as_ref().map(|b| b.period),
            estimate,
            overrides: model
                .and_then(|m| limits.for_model(m))
                .map(|o| (Rules::of_model(o), o.budget.as_ref().map(|b| b.period))),
        };
        let ask = parts.ask(LeaseId::generate(), grant, model, now_ms);
        let decided = if ask.has_limits() {
            self.acquire_in_task(ask.lease, grant, model, now_ms, parts)
                .await?
        } else {
            // No statement to run, so nothing a client going away could leave taken:
            // no task, no gate.
            self.0.store.limits_acquire(&ask).await
        };
        let held = match decided {
            Ok(Ok(held)) => held,
            Ok(Err(r)) if r.model => return Err(Refusal::Model(r.deny)),
            Ok(Err(r)) => return Err(Refusal::Deny(r.deny)),
            Err(e) => return Err(Refusal::Store(e)),
        };
        if held.is_held() {
            lock(&self.0.rates).insert(grant.clone(), held.rate());
        }
        Ok(Lease {
            limiter: self.clone(),
            grant: grant.clone(),
            model: model.unwrap_or_default().to_owned(),
            limits_budget: limits.budget.clone(),
            model_budget: model
                .and_then(|m| limits.for_model(m))
                .and_then(|o| o.budget.clone()),
            grant_lease: *held.grant_lease(),
            model_lease: held.model_lease().copied(),
            anonymous_row: false,
            settled: false,
            shared: Some(held),
        })
    }

    /// The acquire statement of a limited request, in a task of its own: were it
    /// awaited here, a client going away would drop this future after PostgreSQL
    /// committed the lease but before a `Lease` existed to give it back — a place and a
    /// reservation taken for good. The task always ends what it took: handed over, or
    /// settled as unused.
    async fn acquire_in_task(
        &self,
        lease: LeaseId,
        grant: &GrantId,
        model: Option<&str>,
        now_ms: u64,
        parts: AskParts,
    ) -> Result<Result<Result<LimitLease, LimitRefusal>, StoreError>, Refusal> {
        let (tx, rx) = tokio::sync::oneshot::channel();
        let (store, owned_grant, owned_model) = (
            self.0.store.clone(),
            grant.clone(),
            model.map(str::to_owned),
        );
        let (gate, limiter) = (self.gate(grant), self.clone());
        tokio::spawn(async move {
            let permit = match tokio::time::timeout(GATE_WAIT, gate.acquire.acquire()).await {
                Ok(Ok(permit)) => permit,
                // Never closed; a timeout is answered like the pool's.
                _ => {
                    let _ = tx.send(Err(StoreError::Transaction(
                        "timed out waiting for the grant's limits".into(),
                    )));
                    return;
                }
            };
            // The client left while this waited: nothing is taken yet, so nothing to
            // give back — and nothing to do.
            if tx.is_closed() {
                return;
            }
            let ask = parts.ask(lease, &owned_grant, owned_model.as_deref(), now_ms);
            let decided = store.limits_acquire(&ask).await;
            drop(permit);
            // A failed statement may still have committed (its answer lost with the
            // connection): the lease it would have taken is ended by its id, which is
            // a no-op if it never was taken.
            let unclear = decided
                .as_ref()
                .is_err()
                .then(|| LimitLease::abandoned(&ask));
            match tx.send(decided) {
                Err(Ok(Ok(held))) => limiter.spawn_settle(gate, held, Spend::default(), now_ms),
                _ => {
                    if let Some(held) = unclear {
                        limiter.spawn_settle(gate, held, Spend::default(), now_ms);
                    }
                }
            }
        });
        rx.await.map_err(|_| {
            Refusal::Store(StoreError::Transaction(
                "the shared limits' acquire task ended without an answer".into(),
            ))
        })
    }

    /// On shared windows: a task that keeps this node's leases alive and reclaims
    /// those of nodes that stopped, every [`HEARTBEAT_EVERY`] (the first beat at once,
    /// before the node serves much). `None` on one node's in-memory windows.
    pub fn spawn_heartbeat(&self) -> Option<tokio::task::JoinHandle<()>> {
        if !self.0.shared {
            return None;
        }
        let store = self.0.store.clone();
        Some(tokio::spawn(async move {
            let mut tick = tokio::time::interval(HEARTBEAT_EVERY);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            let mut alive_since = tokio::time::Instant::now();
            loop {
                tick.tick().await;
                // (The store bounds each beat well within the TTL, and reclaims dead
                // nodes' leases beside it, logging what it did.)
                match store.limits_heartbeat(NODE_TTL).await {
                    Ok(()) => alive_since = tokio::time::Instant::now(),
                    Err(e) => tracing::warn!(error = %e, "shared-limits heartbeat failed"),
                }
                let silent = alive_since.elapsed();
                if silent >= NODE_TTL / 2 {
                    tracing::error!(
                        silent_ms = u64::try_from(silent.as_millis()).unwrap_or(u64::MAX),
                        "no shared-limits heartbeat has landed for a while: after the node \
                         TTL other nodes take this node for dead and reclaim the leases of \
                         its requests in flight"
                    );
                }
            }
        }))
    }

    /// rpm/tpm now, for the answer's headers (full buckets for a grant not seen yet).
    /// Shared windows: as the last acquire on this node left them.
    pub fn snapshot(&self, grant: &GrantId, limits: &Limits) -> RateSnapshot {
        if self.0.shared {
            let rate = lock(&self.0.rates).get(grant).copied().unwrap_or_default();
            return RateSnapshot {
                requests: rate.requests,
                tokens: rate.tokens,
            };
        }
        let now_ms = self.0.clock.now_ms();
        let slot = self.slot(grant);
        let mut s = lock(&slot);
        s.grant.usage.conform(&Rules::of(limits), now_ms);
        let view = |b: &Option<policy::Bucket>| {
            b.map(|b| (b.limit(), b.available(now_ms), b.reset_ms(now_ms)))
        };
        RateSnapshot {
            requests: view(&s.grant.usage.requests),
            tokens: view(&s.grant.usage.tokens),
        }
    }

    /// Drops the state of grants with nothing in flight and full buckets (what a fresh
    /// start would rebuild: the budget is reloaded from the usage rows); returns how
    /// many were dropped. Run by the background sweeper, so idle grants cost no memory.
    pub fn forget_idle(&self) -> usize {
        if self.0.shared {
            // A gate someone holds (a statement queued or running) stays.
            lock(&self.0.gates).retain(|_, gate| Arc::strong_count(gate) > 1);
            let mut rates = lock(&self.0.rates);
            let n = rates.len();
            rates.clear();
            return n;
        }
        let now_ms = self.0.clock.now_ms();
        let mut slots = lock(&self.0.slots);
        let before = slots.len();
        slots.retain(|_, slot| {
            // A slot someone holds (a lease being settled, a request deciding or
            // reading its budget's total) stays.
            if Arc::strong_count(slot) > 1 {
                return true;
            }
            let s = lock(slot);
            let full =
                |b: &Option<policy::Bucket>| b.is_none_or(|b| b.available(now_ms) >= b.limit());
            let busy = |w: &Window| {
                w.usage.in_flight > 0 || !full(&w.usage.requests) || !full(&w.usage.tokens)
            };
            busy(&s.grant) || s.models.values().any(busy)
        });
        before - slots.len()
    }

    /// What the grant's requests in flight have reserved against its budget (on every
    /// node, for shared windows).
    pub async fn reserved(&self, grant: &GrantId) -> Result<Spend, StoreError> {
        if self.0.shared {
            return Ok(self.0.store.limits_held(grant).await?.1);
        }
        let slots = lock(&self.0.slots);
        Ok(slots
            .get(grant)
            .map(|slot| lock(slot).grant.usage.reserved)
            .unwrap_or_default())
    }

    /// Requests of the grant in flight.
    pub fn in_flight(&self, grant: &GrantId) -> u32 {
        let slots = lock(&self.0.slots);
        slots
            .get(grant)
            .map(|slot| lock(slot).grant.usage.in_flight)
            .unwrap_or_default()
    }

    /// Ends a lease (synchronously: it runs from `Drop` too, so it never reads the
    /// store). A budget window whose period ended meanwhile is marked for a reload, which
    /// the next request makes — and which includes this answer, recorded here first.
    fn settle(&self, lease: &Lease, counts: &UsageCounts) {
        let (now, now_ms) = (self.0.clock.now(), self.0.clock.now_ms());
        let actual = Spend {
            usd: Usd::from_nanos(counts.usd_nanos),
            tokens: counts.tokens(),
        };
        if let Some(held) = &lease.shared {
            self.record(lease, counts, now);
            if held.is_held() {
                self.settle_shared(&lease.grant, held.clone(), actual, now_ms);
            }
            return;
        }
        let slot = self.slot(&lease.grant);
        let mut s = lock(&slot);
        self.record(lease, counts, now);
        // Under the same lock as the record: an acquire reading a total knows whether
        // this landed during its read.
        s.settles = s.settles.wrapping_add(1);
        s.settled_ever = s.settled_ever.plus(actual);
        // The answer is charged to the UTC day it ends: a window still on an ended
        // period reloads (the reload counts this answer, recorded above).
        roll(&mut s.grant, lease.limits_budget.as_ref(), now);
        s.grant.usage.settle(&lease.grant_lease, actual, now_ms);
        if let Some(ml) = &lease.model_lease
            && let Some(w) = s.models.get_mut(&lease.model)
        {
            roll(w, lease.model_budget.as_ref(), now);
            w.usage.settle(ml, actual, now_ms);
        }
    }

    /// Counts the answer in the usage rows (batched by `accounting`).
    fn record(&self, lease: &Lease, counts: &UsageCounts, now: u64) {
        self.0.accounting.record(
            &lease.grant,
            calendar::day_number(now),
            // A model with overrides keeps its name: its window reloads its spend
            // from the rows of that name.
            if lease.anonymous_row && lease.model_lease.is_none() {
                ""
            } else {
                row_model(&lease.model)
            },
            counts,
        );
    }

    /// Settles a shared lease in the background: the answer is already out, and
    /// `Lease::drop` cannot wait. Until it lands the request still counts as in flight
    /// (a request deciding meanwhile sees one more: refused a little early, never
    /// late). See [`settle_in_store`] for failures.
    fn settle_shared(&self, grant: &GrantId, held: LimitLease, actual: Spend, now_ms: u64) {
        self.spawn_settle(self.gate(grant), held, actual, now_ms);
    }

    /// Runs [`settle_in_store`] on the settle runtime, counted for [`Limiter::settled`].
    fn spawn_settle(&self, gate: Arc<Gate>, held: LimitLease, actual: Spend, now_ms: u64) {
        let Some(rt) = self
            .0
            .settle_rt
            .clone()
            .or_else(|| tokio::runtime::Handle::try_current().ok())
        else {
            tracing::error!(
                "no runtime to settle a request in the shared limits: its place and \
                 reservation stay taken until the other nodes reclaim them"
            );
            return;
        };
        let store = self.0.store.clone();
        let counted = Settling::new(self.clone());
        rt.spawn(async move {
            settle_in_store(&store, &gate.settle, &held, actual, now_ms).await;
            drop(counted);
        });
    }
}

/// One shared settle under way, counted in `Inner::settling` until it ends (or its
/// task is dropped).
struct Settling(Limiter);

impl Settling {
    fn new(limiter: Limiter) -> Self {
        limiter
            .0
            .settling
            .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        Self(limiter)
    }
}

impl Drop for Settling {
    fn drop(&mut self) {
        self.0
            .0
            .settling
            .fetch_sub(1, std::sync::atomic::Ordering::SeqCst);
    }
}

/// Settles a shared lease, retrying a failed statement a few times (a dropped
/// connection, a failover). A retry is safe: a settle ends its lease once, so one whose
/// commit landed but whose answer was lost changes nothing the second time. One that
/// never lands keeps its place and reservation while this node lives (logged; it
/// is reclaimed only when the node stops): hence retries for minutes, not seconds.
async fn settle_in_store(
    store: &Store,
    gate: &tokio::sync::Semaphore,
    held: &LimitLease,
    actual: Spend,
    now_ms: u64,
) {
    // (The gate is never closed: a permit always comes.)
    const BACKOFF_MS: [u64; 8] = [0, 100, 1_000, 5_000, 30_000, 60_000, 120_000, 300_000];
    let mut last = None;
    for wait in BACKOFF_MS {
        tokio::time::sleep(std::time::Duration::from_millis(wait)).await;
        let _permit = gate.acquire().await.ok();
        match store.limits_settle(held, actual, now_ms).await {
            Ok(()) => return,
            Err(e) => last = Some(e),
        }
    }
    if let Some(e) = last {
        tracing::error!(
            error = %e,
            "could not settle a request in the shared limits: its place and reservation \
             stay taken until this node stops"
        );
    }
}

/// Brings a window's buckets to the rules; without a budget, forgets its spend.
fn prepare(w: &mut Window, rules: &Rules, budget: Option<&Budget>, now_ms: u64) {
    w.usage.conform(rules, now_ms);
    if budget.is_none() {
        w.period = None;
        w.usage.settled = Spend::default();
    }
}

/// Marks a budget window for a reload when its period is over.
fn roll(w: &mut Window, budget: Option<&Budget>, now: u64) {
    if let Some(b) = budget
        && w.period
            .is_some_and(|p| p != (b.period, b.period.start(now)))
    {
        w.period = None;
    }
}

/// The longest model name a usage row keeps. The name is the app's own string (an
/// unrestricted grant may send any): without a cap, a leaked key could store a
/// megabyte-long row per request. OpenAI's ids are far shorter.
const ROW_MODEL_MAX: usize = 128;

fn row_model(model: &str) -> &str {
    let mut end = model.len().min(ROW_MODEL_MAX);
    while !model.is_char_boundary(end) {
        end -= 1;
    }
    &model[..end]
}

/// What an accepted request holds: its place in the concurrency count and its
/// reservations. Settle it with the real usage ([`Lease::settle`]); dropped unsettled,
/// it counts the request as an error with no tokens.
pub struct Lease {
    limiter: Limiter,
    grant: GrantId,
    model: String,
    limits_budget: Option<Budget>,
    model_budget: Option<Budget>,
    grant_lease: policy::Lease,
    model_lease: Option<policy::Lease>,
    /// Count the usage row under no model (see [`Lease::count_without_model`]).
    anonymous_row: bool,
    settled: bool,
    /// The lease in the store's shared windows (PostgreSQL), else `None`.
    shared: Option<LimitLease>,
}

impl std::fmt::Debug for Lease {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Lease")
            .field("grant", &self.grant)
            .field("reserved", &self.grant_lease.reserved)
            .finish_non_exhaustive()
    }
}

impl Lease {
    /// Counts the usage row under no model name: for a request that failed on a model
    /// nobody priced. The name is the app's own string; rows are kept for good, and a
    /// leaked key could otherwise add one per made-up name (OpenAI refuses them with
    /// 404, costing nothing). A name keeps its row when it is priced, answered, or has
    /// overrides in the grant's limits.
    pub fn count_without_model(&mut self) {
        self.anonymous_row = true;
    }

    /// Ends the lease with the answer's usage (`counts` counts the request itself).
    pub fn settle(mut self, counts: &UsageCounts) {
        self.settled = true;
        self.limiter.settle(&self, counts);
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        if !self.settled {
            self.settled = true;
            let counts = UsageCounts {
                requests: 1,
                errors: 1,
                ..UsageCounts::default()
            };
            self.limiter.settle(self, &counts);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use keygate_store::StoreOptions;
    use serde_json::json;

    fn limiter() -> (tempfile::TempDir, Limiter, Clock) {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path(), &StoreOptions::default()).unwrap();
        let clock = Clock::manual(1_795_996_800);
        let limiter = Limiter::new(store, Accounting::default(), clock.clone());
        (dir, limiter, clock)
    }

    fn limits(v: serde_json::Value) -> Limits {
        serde_json::from_value(v).unwrap()
    }

    fn spent(usd_nanos: u64, tokens: u64) -> UsageCounts {
        UsageCounts {
            requests: 1,
            prompt_tokens: tokens,
            usd_nanos,
            ..UsageCounts::default()
        }
    }

    #[tokio::test]
    async fn budget_spend_survives_forgetting_and_counts_pending_usage() {
        let (_dir, l, _clock) = limiter();
        let g = GrantId::generate();
        let lim = limits(json!({"budget": {"tokens": 100, "period": "day"}}));
        let est = Estimate {
            tokens: 60,
            usd: None,
        };
        let lease = l.acquire(&g, &lim, Some("m"), est).await.unwrap();
        // In flight: the reservation blocks a second one.
        assert!(matches!(
            l.acquire(&g, &lim, Some("m"), est).await,
            Err(Refusal::Deny(Deny::Budget { .. }))
        ));
        assert_eq!(l.forget_idle(), 0, "a grant with a request in flight stays");
        lease.settle(&spent(0, 50));
        assert_eq!(l.in_flight(&g), 0);
        // Forgotten, then reloaded from the (unflushed) accounting: 50 of 100 spent.
        assert_eq!(l.forget_idle(), 1);
        assert!(matches!(
            l.acquire(&g, &lim, Some("m"), est).await,
            Err(Refusal::Deny(Deny::Budget { .. }))
        ));
        let small = Estimate {
            tokens: 50,
            usd: None,
        };
        drop(l.acquire(&g, &lim, Some("m"), small).await.unwrap());
    }

    #[tokio::test]
    async fn a_dropped_lease_is_an_error_and_frees_its_place() {
        let (_dir, l, _clock) = limiter();
        let g = GrantId::generate();
        let lim = limits(json!({"max_concurrency": 1}));
        let lease = l
            .acquire(&g, &lim, None, Estimate::default())
            .await
            .unwrap();
        assert!(matches!(
            l.acquire(&g, &lim, None, Estimate::default()).await,
            Err(Refusal::Deny(Deny::Concurrency { limit: 1 }))
        ));
        drop(lease);
        let total =
            l.0.accounting
                .total(&l.0.store, &g, 0, u32::MAX, None)
                .await
                .unwrap();
        assert_eq!((total.requests, total.errors), (1, 1));
        assert!(l.acquire(&g, &lim, None, Estimate::default()).await.is_ok());
    }

    /// Review finding: a model's overrides removed and put back while a request under
    /// them was in flight made a fresh window that forgot its reservation, so a second
    /// request could reserve the same model budget again.
    #[tokio::test]
    async fn overrides_removed_and_restored_mid_flight_keep_their_reservations() {
        let (_dir, l, _clock) = limiter();
        let g = GrantId::generate();
        let with = limits(json!({"models": {"m": {"budget": {"tokens": 100, "period": "day"}}}}));
        let without = limits(json!({}));
        let est = Estimate {
            tokens: 60,
            usd: None,
        };
        let first = l.acquire(&g, &with, Some("m"), est).await.unwrap();
        // Edited twice while `first` is in flight; a request in between.
        l.acquire(&g, &without, Some("m"), est)
            .await
            .unwrap()
            .settle(&spent(0, 10));
        assert!(
            matches!(
                l.acquire(&g, &with, Some("m"), est).await,
                Err(Refusal::Model(Deny::Budget { .. }))
            ),
            "60 of 100 are reserved, 10 spent: 60 more do not fit"
        );
        first.settle(&spent(0, 20));
        // Spent: 10 (between the edits, reloaded) + 20 = 30; 60 more fit, 80 do not.
        let big = Estimate {
            tokens: 80,
            usd: None,
        };
        assert!(l.acquire(&g, &with, Some("m"), big).await.is_err());
        assert!(l.acquire(&g, &with, Some("m"), est).await.is_ok());
    }

    /// Review finding: the usage row's model is the app's string; it is capped.
    #[tokio::test]
    async fn a_huge_model_name_is_cut_in_the_usage_row() {
        let (_dir, l, _clock) = limiter();
        let g = GrantId::generate();
        let name = "é".repeat(10_000);
        l.acquire(&g, &Limits::default(), Some(&name), Estimate::default())
            .await
            .unwrap()
            .settle(&spent(0, 1));
        let rows =
            l.0.accounting
                .rows(&l.0.store, &g, 0, u32::MAX)
                .await
                .unwrap();
        assert_eq!(rows.len(), 1);
        assert_eq!(rows[0].model, "é".repeat(ROW_MODEL_MAX / 2));
    }

    /// A total read while a settlement landed is not trusted as it is (the settlement
    /// may or may not be in it): read again, and at last counted with the settlement
    /// on top — a possible over-count, never an under-count.
    #[test]
    fn a_total_read_while_a_settlement_landed_is_read_again_then_counted_on_top() {
        let now = 1_795_996_800;
        let budget: Budget =
            serde_json::from_value(json!({"tokens": 1000, "period": "day"})).unwrap();
        let lim = limits(json!({"budget": {"tokens": 1000, "period": "day"}}));
        let mut slot = Slot::default();
        let stale = |slot: &Slot| slot.stale(&lim, None, now);
        assert_eq!(stale(&slot).len(), 1, "never loaded");
        let read = |slot: &Slot, total: u64| Loaded {
            stale: stale(slot).pop().unwrap(),
            total: Spend {
                usd: Usd::ZERO,
                tokens: total,
            },
            settles: slot.settles,
            settled_ever: slot.settled_ever,
        };
        let begun = read(&slot, 100);
        // A settlement of 30 tokens lands while the total is read.
        slot.settles += 1;
        slot.settled_ever = slot.settled_ever.plus(Spend {
            usd: Usd::ZERO,
            tokens: 30,
        });
        assert!(!slot.load(begun, false), "an uncertain read is not used");
        assert_eq!(stale(&slot).len(), 1, "still to be loaded");
        let begun = read(&slot, 100);
        slot.settles += 1;
        slot.settled_ever = slot.settled_ever.plus(Spend {
            usd: Usd::ZERO,
            tokens: 30,
        });
        assert!(slot.load(begun, true));
        assert_eq!(slot.grant.usage.settled.tokens, 130, "the racing 30 on top");
        assert_eq!(
            slot.grant.period,
            Some((budget.period, budget.period.start(now)))
        );
        assert!(stale(&slot).is_empty());
        // A read that nothing raced is taken as it is (here: a later period's).
        let tomorrow = now + 86_400;
        let mut fresh = Slot::default();
        let l = Loaded {
            stale: fresh.stale(&lim, None, tomorrow).pop().unwrap(),
            total: Spend {
                usd: Usd::ZERO,
                tokens: 7,
            },
            settles: 0,
            settled_ever: Spend::default(),
        };
        assert!(fresh.load(l, false));
        assert_eq!(fresh.grant.usage.settled.tokens, 7);
    }

    /// Many tasks on several threads take and settle leases of one budget while the
    /// limiter forgets the grant (so windows reload their total from the store) and
    /// the usage is flushed: what was let through never exceeds the budget.
    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn concurrent_acquires_with_reloads_and_flushes_never_overspend() {
        let (_dir, l, _clock) = limiter();
        let g = GrantId::generate();
        let lim = limits(json!({"budget": {"tokens": 1000, "period": "day"}}));
        let est = Estimate {
            tokens: 100,
            usd: None,
        };
        let admitted = Arc::new(std::sync::atomic::AtomicU64::new(0));
        let mut tasks = Vec::new();
        for t in 0..32 {
            let (l, g, lim, admitted) = (l.clone(), g.clone(), lim.clone(), admitted.clone());
            tasks.push(tokio::spawn(async move {
                for i in 0..20 {
                    if let Ok(lease) = l.acquire(&g, &lim, Some("m"), est).await {
                        admitted.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                        tokio::task::yield_now().await;
                        lease.settle(&spent(0, 100));
                    }
                    if (t + i) % 5 == 0 {
                        l.forget_idle();
                        l.0.accounting.write_to(&l.0.store).await.unwrap();
                    }
                }
            }));
        }
        for t in tasks {
            t.await.unwrap();
        }
        let admitted = admitted.load(std::sync::atomic::Ordering::SeqCst);
        assert!(
            admitted <= 10,
            "{admitted} leases of 100 tokens within 1000"
        );
        assert!(admitted >= 1);
        let total =
            l.0.accounting
                .total(&l.0.store, &g, 0, u32::MAX, None)
                .await
                .unwrap();
        assert_eq!(total.tokens(), admitted * 100);
    }

    #[tokio::test]
    async fn idle_grants_are_forgotten_once_their_buckets_are_full() {
        let (_dir, l, clock) = limiter();
        let g = GrantId::generate();
        let lim = limits(json!({"rpm": 2}));
        l.acquire(&g, &lim, None, Estimate::default())
            .await
            .unwrap()
            .settle(&spent(0, 0));
        assert_eq!(l.forget_idle(), 0, "a bucket still refilling is kept");
        clock.advance(30);
        assert_eq!(l.forget_idle(), 1);
    }
}
