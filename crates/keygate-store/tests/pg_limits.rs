//! The limiter's windows in PostgreSQL (`migrations/0002_limits.sql`,
//! `keygate_store::pg_limits_*`) against a real server: they decide exactly as the pure
//! policy and the in-memory limiter do, hold a budget and a concurrency cap under many
//! concurrent connections, and leave a grant without limits alone.
//!
//! Needs `KG_TEST_PG_URL` (a maintenance URL: each test creates its own database);
//! without it the tests skip with a printed line, unless `KG_REQUIRE_PG=1`.

// Integration-test helpers are test code too; clippy only exempts #[test] fns. The
// skip line and the figures are printed on purpose.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::print_stdout
)]

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU32, Ordering};
use std::time::{Duration, Instant};

use keygate_core::calendar::{self, Period};
use keygate_core::ids::GrantId;
use keygate_core::limits::{Budget, Limits, ModelLimits};
use keygate_core::money::Usd;
use keygate_core::policy::{self, Deny, Estimate, Rules, Spend, UsageWindow};
use keygate_store::{
    LeaseId, LimitAsk, LimitLease, LimitRefusal, ModelAsk, pg_limits_acquire, pg_limits_forget,
    pg_limits_heartbeat, pg_limits_settle,
};
use proptest::prelude::*;
use tokio_postgres::{Client, NoTls};

const LIMITS_SQL: &str = include_str!("../../../migrations/0002_limits.sql");

/// The columns of migration 0001's `usage` table that the limits functions read.
const USAGE_SQL: &str = "CREATE TABLE IF NOT EXISTS usage (grant_id text NOT NULL, \
     day integer NOT NULL, model text NOT NULL, requests bigint NOT NULL DEFAULT 0, \
     usd_nanos bigint NOT NULL DEFAULT 0, prompt_tokens bigint NOT NULL DEFAULT 0, \
     completion_tokens bigint NOT NULL DEFAULT 0, PRIMARY KEY (grant_id, day, model))";

/// The node that owns the leases these tests take (see the reclaim tests for several).
const NODE: &str = "node-a";

// --- a database per test -------------------------------------------------------------

fn maintenance_url(test: &str) -> Option<String> {
    match std::env::var("KG_TEST_PG_URL") {
        Ok(url) if !url.is_empty() => Some(url),
        _ => {
            assert!(
                std::env::var("KG_REQUIRE_PG").as_deref() != Ok("1"),
                "KG_REQUIRE_PG=1 but KG_TEST_PG_URL is not set"
            );
            println!("skipped {test}: KG_TEST_PG_URL is not set (no PostgreSQL)");
            None
        }
    }
}

struct TestDb {
    config: tokio_postgres::Config,
    name: String,
    maintenance: Client,
}

async fn connect(config: &tokio_postgres::Config) -> Client {
    let (client, conn) = config.connect(NoTls).await.unwrap();
    tokio::spawn(async move {
        let _ = conn.await;
    });
    client
}

impl TestDb {
    /// A fresh database with the `usage` columns and the limits migration.
    async fn new(url: &str) -> TestDb {
        let base: tokio_postgres::Config = url.parse().unwrap();
        let maintenance = connect(&base).await;
        let name = format!("kg_limits_{}", rand::random::<u64>());
        maintenance
            .batch_execute(&format!("CREATE DATABASE {name}"))
            .await
            .unwrap();
        let mut config = base.clone();
        config.dbname(&name);
        let db = TestDb {
            config,
            name,
            maintenance,
        };
        let c = db.client().await;
        c.batch_execute(USAGE_SQL).await.unwrap();
        c.batch_execute(LIMITS_SQL).await.unwrap();
        db
    }

    async fn client(&self) -> Client {
        connect(&self.config).await
    }

    async fn drop_db(self) {
        let _ = self
            .maintenance
            .batch_execute(&format!("DROP DATABASE {} WITH (FORCE)", self.name))
            .await;
    }
}

fn usd(d: f64) -> Usd {
    Usd::from_dollars(d).unwrap()
}

fn ask<'a>(
    grant: &'a GrantId,
    limits: &'a Limits,
    model: Option<&'a str>,
    estimate: Estimate,
    now_ms: u64,
) -> LimitAsk<'a> {
    LimitAsk {
        lease: LeaseId::generate(),
        grant,
        now_ms,
        rules: Rules::of(limits),
        budget_period: limits.budget.as_ref().map(|b| b.period),
        estimate,
        model: model.map(|name| ModelAsk {
            name,
            row_name: name,
            overrides: limits
                .for_model(name)
                .map(|o| (Rules::of_model(o), o.budget.as_ref().map(|b| b.period))),
        }),
    }
}

// --- the reference: the in-memory limiter (keygate-server/src/limiter.rs) ------------

#[derive(Default, Debug)]
struct RefWindow {
    usage: UsageWindow,
    period: Option<(Period, u64)>,
}

#[derive(Default)]
struct RefLimiter {
    grant: RefWindow,
    models: HashMap<String, RefWindow>,
    /// Usage rows: (day, model, usd nanos, tokens).
    rows: Vec<(u32, String, u64, u64)>,
}

#[derive(Clone, Debug)]
struct RefLease {
    model: Option<String>,
    grant_budget: Option<Budget>,
    model_budget: Option<Budget>,
    grant_lease: policy::Lease,
    model_lease: Option<policy::Lease>,
}

impl RefLimiter {
    fn load_period(&self, w: &mut RefWindow, model: Option<&str>, budget: &Budget, now: u64) {
        let start = budget.period.start(now);
        if w.period == Some((budget.period, start)) {
            return;
        }
        let end = budget.period.next_start(now);
        let (first, last) = (
            calendar::day_number(start),
            calendar::day_number(end).saturating_sub(1),
        );
        let mut total = Spend::default();
        for (day, m, usd, tokens) in &self.rows {
            if (first..=last).contains(day) && model.is_none_or(|x| x == m) {
                total = total.plus(Spend {
                    usd: Usd::from_nanos(*usd),
                    tokens: *tokens,
                });
            }
        }
        w.usage.settled = total;
        w.usage.resets_at = end;
        w.period = Some((budget.period, start));
    }

    fn prepare(
        &self,
        w: &mut RefWindow,
        model: Option<&str>,
        rules: &Rules,
        budget: Option<&Budget>,
        now_ms: u64,
    ) {
        w.usage.conform(rules, now_ms);
        match budget {
            None => {
                w.period = None;
                w.usage.settled = Spend::default();
            }
            Some(b) => self.load_period(w, model, b, now_ms / 1000),
        }
    }

    fn acquire(
        &mut self,
        limits: &Limits,
        model: Option<&str>,
        estimate: Estimate,
        now_ms: u64,
    ) -> Result<RefLease, LimitRefusal> {
        let rules = Rules::of(limits);
        let mut g = std::mem::take(&mut self.grant);
        self.prepare(&mut g, None, &rules, limits.budget.as_ref(), now_ms);
        let decided = policy::decide_rules(&rules, &g.usage, &estimate, now_ms);
        self.grant = g;
        let lease = decided.map_err(|deny| LimitRefusal { deny, model: false })?;
        let mut model_lease = None;
        if let Some((name, o)) = model.and_then(|m| limits.for_model(m).map(|o| (m, o))) {
            let rules = Rules::of_model(o);
            let mut w = self.models.remove(name).unwrap_or_default();
            self.prepare(&mut w, Some(name), &rules, o.budget.as_ref(), now_ms);
            let decided = policy::decide_rules(&rules, &w.usage, &estimate, now_ms);
            if let Ok(l) = &decided {
                w.usage.apply(l, now_ms);
            }
            self.models.insert(name.to_owned(), w);
            model_lease = Some(decided.map_err(|deny| LimitRefusal { deny, model: true })?);
        } else if let Some(m) = model
            && let Some(w) = self.models.get_mut(m)
        {
            if w.usage.in_flight == 0 {
                self.models.remove(m);
            } else {
                w.period = None;
            }
        }
        self.grant.usage.apply(&lease, now_ms);
        Ok(RefLease {
            model: model.map(str::to_owned),
            grant_budget: limits.budget.clone(),
            model_budget: model
                .and_then(|m| limits.for_model(m))
                .and_then(|o| o.budget.clone()),
            grant_lease: lease,
            model_lease,
        })
    }

    /// Limiter::settle: roll both windows, record the usage row, settle. (The
    /// in-memory limiter rolls the model window after recording, so a model window
    /// reloaded at settle time counts that answer twice; the SQL rolls both first, as
    /// the limiter's own comment intends, and so does this reference.)
    fn settle(&mut self, lease: &RefLease, actual: Spend, now_ms: u64) {
        let now = now_ms / 1000;
        let mut g = std::mem::take(&mut self.grant);
        if let Some(b) = &lease.grant_budget {
            self.load_period(&mut g, None, b, now);
        }
        let mut model_window = None;
        if let (Some(ml), Some(m)) = (&lease.model_lease, &lease.model)
            && let Some(mut w) = self.models.remove(m)
        {
            if let Some(b) = &lease.model_budget {
                self.load_period(&mut w, Some(m), b, now);
            }
            model_window = Some((m.clone(), ml, w));
        }
        self.rows.push((
            calendar::day_number(now),
            lease.model.clone().unwrap_or_default(),
            actual.usd.nanos(),
            actual.tokens,
        ));
        g.usage.settle(&lease.grant_lease, actual, now_ms);
        self.grant = g;
        if let Some((m, ml, mut w)) = model_window {
            w.usage.settle(ml, actual, now_ms);
            self.models.insert(m, w);
        }
    }

    fn rate(&self, now_ms: u64) -> keygate_store::RateState {
        let view = |b: &Option<policy::Bucket>| {
            b.map(|b| (b.limit(), b.available(now_ms), b.reset_ms(now_ms)))
        };
        keygate_store::RateState {
            requests: view(&self.grant.usage.requests),
            tokens: view(&self.grant.usage.tokens),
        }
    }
}

/// A window's state as text, the same way for both sides (a `Bucket`'s fields are
/// private: its `Debug` shows them all).
fn ref_state(w: &RefWindow) -> String {
    format!(
        "requests={:?} tokens={:?} in_flight={} reserved=({},{}) settled=({},{}) resets_at={} period={:?}",
        w.usage.requests,
        w.usage.tokens,
        w.usage.in_flight,
        w.usage.reserved.usd.nanos(),
        w.usage.reserved.tokens,
        w.usage.settled.usd.nanos(),
        w.usage.settled.tokens,
        w.usage.resets_at,
        w.period.map(|(p, s)| (p.as_str().to_owned(), s)),
    )
}

async fn pg_states(c: &Client, grant: &GrantId) -> HashMap<String, String> {
    let rows = c
        .query(
            "SELECT scope, rpm_limit, rpm_level::text, rpm_at, tpm_limit, tpm_level::text, \
             tpm_at, in_flight, reserved_usd::text, reserved_tokens::text, settled_usd::text, \
             settled_tokens::text, resets_at, period_kind, period_start \
             FROM limit_windows WHERE grant_id = $1",
            &[&grant.as_str()],
        )
        .await
        .unwrap();
    let bucket = |l: Option<i64>, v: Option<String>, at: Option<i64>| match (l, v, at) {
        (Some(l), Some(v), Some(at)) => {
            format!("Some(Bucket {{ limit: {l}, level: {v}, at_ms: {at} }})")
        }
        _ => "None".to_owned(),
    };
    rows.iter()
        .map(|r| {
            let period: Option<(String, u64)> = r
                .get::<_, Option<String>>(13)
                .map(|k| (k, r.get::<_, Option<i64>>(14).unwrap() as u64));
            (
                r.get::<_, String>(0),
                format!(
                    "requests={} tokens={} in_flight={} reserved=({},{}) settled=({},{}) resets_at={} period={:?}",
                    bucket(r.get(1), r.get(2), r.get(3)),
                    bucket(r.get(4), r.get(5), r.get(6)),
                    r.get::<_, i64>(7),
                    r.get::<_, String>(8),
                    r.get::<_, String>(9),
                    r.get::<_, String>(10),
                    r.get::<_, String>(11),
                    r.get::<_, i64>(12),
                    period,
                ),
            )
        })
        .collect()
}

// --- (1) the SQL decides exactly as the pure policy ----------------------------------

#[derive(Clone, Debug)]
enum Op {
    Acquire {
        tokens: u64,
        /// Nanodollars; None: not priced.
        usd: Option<u64>,
        model: Option<&'static str>,
    },
    /// Settles one open lease with `pct`% of what it reserved (over 100: more tokens
    /// than reserved, the tpm bucket goes into debt).
    Settle {
        pick: usize,
        pct: u64,
    },
    Wait {
        ms: u64,
    },
    Edit(Limits),
}

fn budget_strategy() -> impl Strategy<Value = Option<Budget>> {
    prop::option::weighted(
        0.5,
        (
            prop::option::of(1_000u64..3_000_000),
            prop::option::of(100u64..3_000),
            prop_oneof![Just(Period::Day), Just(Period::Week)],
        )
            .prop_filter_map("a budget needs usd or tokens", |(u, t, period)| {
                (u.is_some() || t.is_some()).then(|| Budget {
                    usd: u.map(Usd::from_nanos),
                    tokens: t,
                    period,
                })
            }),
    )
}

fn limits_strategy() -> impl Strategy<Value = Limits> {
    (
        prop::option::of(1u32..6),
        prop::option::of(50u64..1_000),
        prop::option::of(1u32..4),
        budget_strategy(),
        prop::option::weighted(
            0.6,
            (
                prop::option::of(0u32..4),
                prop::option::of(20u64..500),
                budget_strategy(),
            ),
        ),
    )
        .prop_map(|(rpm, tpm, conc, budget, m1)| {
            let mut l = Limits {
                rpm,
                tpm,
                max_concurrency: conc,
                budget,
                ..Limits::default()
            };
            if let Some((rpm, tpm, budget)) = m1 {
                l.models
                    .insert("m1".to_owned(), ModelLimits { rpm, tpm, budget });
            }
            // Without any limit no statement is made (tested on its own below); the
            // windows would then not see those requests, unlike the in-memory ones.
            if Rules::of(&l) == Rules::default() {
                l.rpm = Some(3);
            }
            l
        })
}

fn op_strategy() -> impl Strategy<Value = Op> {
    prop_oneof![
        5 => (
            0u64..400,
            prop::option::weighted(0.9, 0u64..600_000),
            prop_oneof![Just(None), Just(Some("m1")), Just(Some("m2"))]
        )
            .prop_map(|(tokens, usd, model)| Op::Acquire { tokens, usd, model }),
        3 => (any::<usize>(), 0u64..=150).prop_map(|(pick, pct)| Op::Settle { pick, pct }),
        3 => prop_oneof![
            4 => 0u64..30_000,
            1 => 3_600_000u64..40_000_000,
        ]
        .prop_map(|ms| Op::Wait { ms }),
        1 => limits_strategy().prop_map(Op::Edit),
    ]
}

#[derive(Debug)]
struct Case {
    start_ms: u64,
    limits: Limits,
    /// Usage rows already there: (days before today, model, usd nanos, tokens).
    rows: Vec<(u32, &'static str, u64, u64)>,
    ops: Vec<Op>,
}

fn case_strategy() -> impl Strategy<Value = Case> {
    (
        0u64..86_400_000 * 30,
        limits_strategy(),
        prop::collection::vec(
            (
                0u32..3,
                prop_oneof![Just(""), Just("m1"), Just("m2")],
                0u64..1_000_000,
                0u64..1_000,
            ),
            0..4,
        ),
        prop::collection::vec(op_strategy(), 1..60),
    )
        .prop_map(|(off, limits, rows, ops)| Case {
            start_ms: 1_795_996_800_000 + off,
            limits,
            rows,
            ops,
        })
}

async fn run_case(c: &Client, case: Case) -> Result<(), TestCaseError> {
    let grant = GrantId::generate();
    let mut reference = RefLimiter::default();
    let mut now_ms = case.start_ms;
    let mut limits = case.limits;
    let today = calendar::day_number(now_ms / 1000);
    for (ago, model, usd, tokens) in case.rows {
        let day = today - ago;
        c.execute(
            "INSERT INTO usage (grant_id, day, model, usd_nanos, prompt_tokens) \
             VALUES ($1, $2, $3, $4, $5) ON CONFLICT (grant_id, day, model) DO UPDATE SET \
             usd_nanos = usage.usd_nanos + excluded.usd_nanos, \
             prompt_tokens = usage.prompt_tokens + excluded.prompt_tokens",
            &[
                &grant.as_str(),
                &(day as i32),
                &model,
                &(usd as i64),
                &(tokens as i64),
            ],
        )
        .await
        .unwrap();
        reference.rows.push((day, model.to_owned(), usd, tokens));
    }
    let mut open: Vec<(LimitLease, RefLease)> = Vec::new();
    for op in case.ops {
        match op {
            Op::Acquire { tokens, usd, model } => {
                let estimate = Estimate {
                    tokens,
                    usd: usd.map(Usd::from_nanos),
                };
                let sql =
                    pg_limits_acquire(c, NODE, &ask(&grant, &limits, model, estimate, now_ms))
                        .await
                        .unwrap();
                let pure = reference.acquire(&limits, model, estimate, now_ms);
                match (sql, pure) {
                    (Ok(s), Ok(p)) => {
                        prop_assert_eq!(s.grant_lease(), &p.grant_lease);
                        prop_assert_eq!(s.model_lease(), p.model_lease.as_ref());
                        prop_assert_eq!(s.rate(), reference.rate(now_ms));
                        open.push((s, p));
                    }
                    (Err(s), Err(p)) => prop_assert_eq!(s, p),
                    (s, p) => prop_assert!(false, "sql {s:?} but policy {p:?}"),
                }
            }
            Op::Settle { pick, pct } => {
                if open.is_empty() {
                    continue;
                }
                let (s, p) = open.remove(pick % open.len());
                let reserved = p.grant_lease.reserved;
                let actual = Spend {
                    usd: Usd::from_nanos(reserved.usd.nanos() * pct / 100),
                    tokens: p.grant_lease.tokens.max(reserved.tokens) * pct / 100,
                };
                pg_limits_settle(c, &s, actual, now_ms).await.unwrap();
                // The node's usage row for the answer (batched in real life).
                c.execute(
                    "INSERT INTO usage (grant_id, day, model, usd_nanos, prompt_tokens) \
                     VALUES ($1, $2, $3, $4, $5) ON CONFLICT (grant_id, day, model) DO UPDATE \
                     SET usd_nanos = usage.usd_nanos + excluded.usd_nanos, \
                     prompt_tokens = usage.prompt_tokens + excluded.prompt_tokens",
                    &[
                        &grant.as_str(),
                        &(calendar::day_number(now_ms / 1000) as i32),
                        &p.model.clone().unwrap_or_default(),
                        &(actual.usd.nanos() as i64),
                        &(actual.tokens as i64),
                    ],
                )
                .await
                .unwrap();
                reference.settle(&p, actual, now_ms);
            }
            Op::Wait { ms } => now_ms += ms,
            Op::Edit(l) => limits = l,
        }
        let pg = pg_states(c, &grant).await;
        let mut want: HashMap<String, String> = reference
            .models
            .iter()
            .map(|(m, w)| (m.clone(), ref_state(w)))
            .collect();
        // A window never used (no request yet) has no row: the same as an empty one.
        if pg.contains_key("") || reference.grant.usage != UsageWindow::default() {
            want.insert(String::new(), ref_state(&reference.grant));
        }
        prop_assert_eq!(pg, want);
    }
    Ok(())
}

#[test]
fn sql_decides_exactly_as_the_pure_policy() {
    let Some(url) = maintenance_url("sql_decides_exactly_as_the_pure_policy") else {
        return;
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let db = rt.block_on(TestDb::new(&url));
    let client = rt.block_on(db.client());
    let cases = std::env::var("KG_PG_LIMITS_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(64);
    let config = ProptestConfig {
        cases,
        failure_persistence: None,
        ..ProptestConfig::default()
    };
    proptest!(config, |(case in case_strategy())| {
        rt.block_on(run_case(&client, case))?;
    });
    rt.block_on(db.drop_db());
}

// --- (2) many nodes against one budget and one concurrency cap -----------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn budget_and_concurrency_hold_across_64_tasks_on_8_connections() {
    let Some(url) = maintenance_url("budget_and_concurrency_hold_across_64_tasks_on_8_connections")
    else {
        return;
    };
    let db = TestDb::new(&url).await;
    let grant = Arc::new(GrantId::generate());
    const CAP: u32 = 6;
    let budget = usd(0.05);
    let limits = Arc::new(Limits {
        max_concurrency: Some(CAP),
        budget: Some(Budget {
            usd: Some(budget),
            tokens: None,
            period: Period::Month,
        }),
        ..Limits::default()
    });
    let mut clients = Vec::new();
    for _ in 0..8 {
        clients.push(Arc::new(db.client().await));
    }
    // What the test knows to be held: raised after an acquire commits, lowered before
    // its settle starts, so it never exceeds the database's own count.
    let in_flight = Arc::new(AtomicU32::new(0));
    let held_nanos = Arc::new(AtomicI64::new(0));
    let (refused_budget, refused_cap) = (Arc::new(AtomicU32::new(0)), Arc::new(AtomicU32::new(0)));
    let mut tasks = Vec::new();
    for t in 0..64u64 {
        let c = clients[(t % 8) as usize].clone();
        let (grant, limits) = (grant.clone(), limits.clone());
        let (in_flight, held_nanos) = (in_flight.clone(), held_nanos.clone());
        let (refused_budget, refused_cap) = (refused_budget.clone(), refused_cap.clone());
        tasks.push(tokio::spawn(async move {
            // Until the budget refuses: 8 answers at most; a refusal by the cap is
            // tried again shortly.
            let mut i = 0u64;
            let deadline = Instant::now() + Duration::from_secs(60);
            while i < 8 {
                // A broken cap can leave the count stuck above it: fail, don't hang.
                assert!(Instant::now() < deadline, "task {t} never got through");
                // $0.0004–$0.0019 per request at worst (its max_tokens priced).
                let worst = 400_000 + (t * 7 + i * 13) % 16 * 100_000;
                let estimate = Estimate {
                    tokens: 100,
                    usd: Some(Usd::from_nanos(worst)),
                };
                let now_ms = 1_795_996_800_000;
                match pg_limits_acquire(
                    &*c,
                    NODE,
                    &ask(&grant, &limits, Some("gpt-4o"), estimate, now_ms),
                )
                .await
                .unwrap()
                {
                    Ok(lease) => {
                        let n = in_flight.fetch_add(1, Ordering::SeqCst) + 1;
                        assert!(n <= CAP, "{n} requests in flight, cap {CAP}");
                        let held =
                            held_nanos.fetch_add(worst as i64, Ordering::SeqCst) + worst as i64;
                        assert!(
                            held <= budget.nanos() as i64,
                            "{held} nanodollars reserved or spent of {}",
                            budget.nanos()
                        );
                        // The slow answer; it uses 50–100 % of its worst case.
                        tokio::time::sleep(Duration::from_millis(15)).await;
                        let used = worst * (50 + (t + i) % 51) / 100;
                        in_flight.fetch_sub(1, Ordering::SeqCst);
                        held_nanos.fetch_sub((worst - used) as i64, Ordering::SeqCst);
                        let actual = Spend {
                            usd: Usd::from_nanos(used),
                            tokens: 100,
                        };
                        pg_limits_settle(&*c, &lease, actual, now_ms).await.unwrap();
                        i += 1;
                    }
                    Err(LimitRefusal {
                        deny: Deny::Budget { .. },
                        ..
                    }) => {
                        refused_budget.fetch_add(1, Ordering::SeqCst);
                        break;
                    }
                    Err(LimitRefusal {
                        deny: Deny::Concurrency { .. },
                        ..
                    }) => {
                        refused_cap.fetch_add(1, Ordering::SeqCst);
                        tokio::time::sleep(Duration::from_millis(3)).await;
                    }
                    Err(other) => panic!("unexpected refusal {other:?}"),
                }
            }
        }));
    }
    // A watcher reads the row meanwhile: at no committed moment is more reserved and
    // spent than the budget, or more in flight than the cap.
    let stop = Arc::new(AtomicBool::new(false));
    let watcher = {
        let (c, grant, stop) = (db.client().await, grant.clone(), stop.clone());
        tokio::spawn(async move {
            let mut looks = 0;
            while !stop.load(Ordering::SeqCst) {
                if let Some(r) = c
                    .query_opt(
                        "SELECT (reserved_usd + settled_usd)::text, in_flight \
                         FROM limit_windows WHERE grant_id = $1 AND scope = ''",
                        &[&grant.as_str()],
                    )
                    .await
                    .unwrap()
                {
                    let spent: i64 = r.get::<_, String>(0).parse().unwrap();
                    assert!(spent <= budget.nanos() as i64, "row holds {spent}");
                    assert!(r.get::<_, i64>(1) <= i64::from(CAP));
                    looks += 1;
                }
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
            looks
        })
    };
    for t in tasks {
        t.await.unwrap();
    }
    stop.store(true, Ordering::SeqCst);
    assert!(watcher.await.unwrap() > 0);
    let row = clients[0]
        .query_one(
            "SELECT settled_usd::text, reserved_usd::text, in_flight FROM limit_windows \
             WHERE grant_id = $1 AND scope = ''",
            &[&grant.as_str()],
        )
        .await
        .unwrap();
    let settled: i64 = row.get::<_, String>(0).parse().unwrap();
    assert_eq!(
        settled,
        held_nanos.load(Ordering::SeqCst),
        "every settlement counted"
    );
    assert!(settled <= budget.nanos() as i64);
    assert_eq!(row.get::<_, String>(1), "0");
    assert_eq!(row.get::<_, i64>(2), 0);
    assert_eq!(
        count(&clients[0], "limit_leases").await,
        0,
        "every lease ended"
    );
    // The test reached both limits (else it proved nothing).
    assert!(
        refused_budget.load(Ordering::SeqCst) > 0,
        "budget never reached"
    );
    assert!(refused_cap.load(Ordering::SeqCst) > 0, "cap never reached");
    println!(
        "64 tasks: settled {settled} of {} nanodollars; refused {} by budget, {} by the cap",
        budget.nanos(),
        refused_budget.load(Ordering::SeqCst),
        refused_cap.load(Ordering::SeqCst)
    );
    db.drop_db().await;
}

// --- (3) a grant without limits touches nothing; figures ----------------------------

async fn window_rows(c: &Client) -> i64 {
    count(c, "limit_windows").await
}

async fn count(c: &Client, table: &str) -> i64 {
    c.query_one(&format!("SELECT count(*) FROM {table}"), &[])
        .await
        .unwrap()
        .get(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_grant_without_limits_touches_no_row() {
    let Some(url) = maintenance_url("a_grant_without_limits_touches_no_row") else {
        return;
    };
    let db = TestDb::new(&url).await;
    let c = db.client().await;
    let free = GrantId::generate();
    let none = Limits::default();
    // A model with overrides elsewhere is not this request's model: still nothing.
    let mut other_model = Limits::default();
    other_model.models.insert(
        "m1".to_owned(),
        ModelLimits {
            rpm: Some(1),
            ..ModelLimits::default()
        },
    );
    for limits in [&none, &other_model] {
        for _ in 0..3 {
            let lease = pg_limits_acquire(
                &c,
                NODE,
                &ask(&free, limits, Some("gpt-4o"), Estimate::default(), 1_000),
            )
            .await
            .unwrap()
            .unwrap();
            assert!(!lease.is_held());
            pg_limits_settle(&c, &lease, Spend::default(), 1_000)
                .await
                .unwrap();
        }
    }
    assert_eq!(window_rows(&c).await, 0);
    assert_eq!(count(&c, "limit_leases").await, 0);
    // The same with a limit makes its rows (so the count above could have failed).
    let limited = GrantId::generate();
    let rpm = Limits {
        rpm: Some(10),
        ..Limits::default()
    };
    let lease = pg_limits_acquire(
        &c,
        NODE,
        &ask(&limited, &rpm, None, Estimate::default(), 1_000),
    )
    .await
    .unwrap()
    .unwrap();
    assert!(lease.is_held());
    assert_eq!(window_rows(&c).await, 1);
    assert_eq!(count(&c, "limit_leases").await, 1);
    db.drop_db().await;
}

/// A budget removed (no limit left: requests make no statement) and put back: after
/// the edit's `pg_limits_forget`, the window counts what was spent meanwhile.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_edit_reloads_spend_made_while_unlimited() {
    let Some(url) = maintenance_url("an_edit_reloads_spend_made_while_unlimited") else {
        return;
    };
    let db = TestDb::new(&url).await;
    let c = db.client().await;
    let grant = GrantId::generate();
    let now_ms = 1_795_996_800_000 + 3_600_000;
    let budget = Limits {
        budget: Some(Budget {
            usd: None,
            tokens: Some(100),
            period: Period::Day,
        }),
        ..Limits::default()
    };
    let est = |tokens| Estimate { tokens, usd: None };
    let lease = pg_limits_acquire(&c, NODE, &ask(&grant, &budget, None, est(40), now_ms))
        .await
        .unwrap()
        .unwrap();
    pg_limits_settle(
        &c,
        &lease,
        Spend {
            usd: Usd::ZERO,
            tokens: 40,
        },
        now_ms,
    )
    .await
    .unwrap();
    // Unlimited for a while: 50 tokens spent, counted in the usage rows only.
    let none = Limits::default();
    let free = pg_limits_acquire(&c, NODE, &ask(&grant, &none, None, est(50), now_ms))
        .await
        .unwrap()
        .unwrap();
    assert!(!free.is_held());
    c.execute(
        "INSERT INTO usage (grant_id, day, model, prompt_tokens) VALUES ($1, $2, '', 90)",
        &[
            &grant.as_str(),
            &(calendar::day_number(now_ms / 1000) as i32),
        ],
    )
    .await
    .unwrap();
    // Without the reload, 40 of 100 would look spent and 50 more would fit.
    pg_limits_forget(&c, &grant).await.unwrap();
    let refused = pg_limits_acquire(&c, NODE, &ask(&grant, &budget, None, est(50), now_ms))
        .await
        .unwrap();
    assert!(
        matches!(
            &refused,
            Err(LimitRefusal {
                deny: Deny::Budget { .. },
                model: false
            })
        ),
        "{refused:?}"
    );
    assert!(
        pg_limits_acquire(&c, NODE, &ask(&grant, &budget, None, est(10), now_ms))
            .await
            .unwrap()
            .is_ok()
    );
    db.drop_db().await;
}

/// Latency of one acquire and one settle on loopback (printed, for the docs; never
/// asserted).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn statement_latency_figures() {
    let Some(url) = maintenance_url("statement_latency_figures") else {
        return;
    };
    let db = TestDb::new(&url).await;
    let c = db.client().await;
    let grant = GrantId::generate();
    let mut limits = Limits {
        rpm: Some(1_000_000),
        tpm: Some(100_000_000),
        max_concurrency: Some(100),
        budget: Some(Budget {
            usd: Some(usd(1_000.0)),
            tokens: None,
            period: Period::Day,
        }),
        ..Limits::default()
    };
    limits.models.insert(
        "m1".to_owned(),
        ModelLimits {
            rpm: Some(1_000_000),
            ..ModelLimits::default()
        },
    );
    let (mut acq, mut set) = (Vec::new(), Vec::new());
    for i in 0..400u64 {
        let now_ms = 1_795_996_800_000 + i;
        let estimate = Estimate {
            tokens: 500,
            usd: Some(usd(0.001)),
        };
        let t = Instant::now();
        let lease = pg_limits_acquire(
            &c,
            NODE,
            &ask(&grant, &limits, Some("m1"), estimate, now_ms),
        )
        .await
        .unwrap()
        .unwrap();
        acq.push(t.elapsed());
        let t = Instant::now();
        pg_limits_settle(
            &c,
            &lease,
            Spend {
                usd: usd(0.0005),
                tokens: 300,
            },
            now_ms,
        )
        .await
        .unwrap();
        set.push(t.elapsed());
    }
    let pct = |v: &mut Vec<Duration>, p: usize| {
        v.sort();
        v[(v.len() * p / 100).min(v.len() - 1)]
    };
    println!(
        "limits on PostgreSQL, loopback, grant + model window: acquire p50 {:?} p99 {:?}; settle p50 {:?} p99 {:?}",
        pct(&mut acq, 50),
        pct(&mut acq, 99),
        pct(&mut set, 50),
        pct(&mut set, 99)
    );
    db.drop_db().await;
}

// --- (4) leases of a node that stops -------------------------------------------------

/// Each window of the grant: (scope, in flight, reserved USD nanos, settled USD nanos).
async fn held(c: &Client, grant: &GrantId) -> Vec<(String, i64, i64, i64)> {
    c.query(
        "SELECT scope, in_flight, reserved_usd::bigint, settled_usd::bigint \
         FROM limit_windows WHERE grant_id = $1 ORDER BY scope",
        &[&grant.as_str()],
    )
    .await
    .unwrap()
    .iter()
    .map(|r| (r.get(0), r.get(1), r.get(2), r.get(3)))
    .collect()
}

/// A node killed with a request in flight: its lease holds the grant's only place and
/// a reservation in the grant's and the model's budget. Another node's heartbeat
/// leaves it while the dead node's time to live runs, then reclaims it — the place
/// comes back, the reservation counts as spent (nobody counted the answer) — and a
/// late settle from the "dead" node (it was only slow) adds only what its answer cost
/// beyond that. A live node's leases, however old, are never reclaimed by another.
/// Fails without the lease rows: nothing ever gave the place back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stopped_nodes_leases_are_reclaimed_by_another_nodes_heartbeat() {
    let Some(url) =
        maintenance_url("a_stopped_nodes_leases_are_reclaimed_by_another_nodes_heartbeat")
    else {
        return;
    };
    let db = TestDb::new(&url).await;
    let c = db.client().await;
    // Long enough that a loaded machine still makes the beats and statements below
    // well within it.
    let ttl = Duration::from_secs(2);
    let past_ttl = ttl + Duration::from_millis(500);
    let grant = GrantId::generate();
    let limits: Limits = serde_json::from_value(serde_json::json!({
        "max_concurrency": 1,
        "budget": {"usd": 10.0, "period": "month"},
        "models": {"gpt-4o": {"budget": {"usd": 10.0, "period": "month"}}},
    }))
    .unwrap();
    let estimate = Estimate {
        tokens: 1000,
        usd: Some(usd(0.30)),
    };
    let now_ms = 1_795_996_800_000;
    let take = |node: &'static str| {
        let (c, grant, limits) = (&c, &grant, &limits);
        async move {
            pg_limits_acquire(
                c,
                node,
                &ask(grant, limits, Some("gpt-4o"), estimate, now_ms),
            )
            .await
            .unwrap()
        }
    };
    let full = |res: Result<LimitLease, LimitRefusal>| {
        matches!(
            res,
            Err(LimitRefusal {
                deny: Deny::Concurrency { limit: 1 },
                ..
            })
        )
    };
    let beat = |node: &'static str| {
        let c = &c;
        async move { pg_limits_heartbeat(c, node, ttl).await.unwrap() }
    };
    let nanos = |d: f64| usd(d).nanos() as i64;
    let open_leases = || async {
        c.query_one(
            "SELECT count(*) FROM limit_leases WHERE reclaimed_at IS NULL",
            &[],
        )
        .await
        .unwrap()
        .get::<_, i64>(0)
    };

    assert_eq!(beat("dying").await, 0);
    let orphan = take("dying").await.unwrap();
    assert!(full(take("other").await), "the place is taken");
    // Within the dying node's time to live nothing is reclaimed.
    assert_eq!(beat("other").await, 0);
    assert!(full(take("other").await));
    tokio::time::sleep(past_ttl).await;
    assert_eq!(beat("other").await, 1);
    assert_eq!(
        held(&c, &grant).await,
        vec![
            (String::new(), 0, 0, nanos(0.30)),
            ("gpt-4o".to_owned(), 0, 0, nanos(0.30)),
        ],
        "the place given back; the reservation counted as spent in both windows"
    );
    assert_eq!(open_leases().await, 0);
    assert_eq!(beat("other").await, 0, "reclaimed once");
    // The dying node was only slow: its answer cost less than it reserved — nothing
    // more to count.
    let cheap = Spend {
        usd: usd(0.10),
        tokens: 10,
    };
    assert!(!pg_limits_settle(&c, &orphan, cheap, now_ms).await.unwrap());
    assert_eq!(
        held(&c, &grant).await[0],
        (String::new(), 0, 0, nanos(0.30))
    );

    // A live node's lease, however old, is never reclaimed by another node.
    assert_eq!(beat("alive").await, 0);
    let mine = take("alive").await.unwrap();
    tokio::time::sleep(past_ttl).await;
    assert_eq!(beat("alive").await, 0);
    assert_eq!(beat("other").await, 0, "alive's lease stays alive's");
    assert!(pg_limits_settle(&c, &mine, cheap, now_ms).await.unwrap());
    assert_eq!(
        held(&c, &grant).await[0],
        (String::new(), 0, 0, nanos(0.40))
    );

    // A lease of a node that never beat is reclaimed once older than the time to live,
    // not before; its late settle, dearer than its reservation (no max_tokens), adds
    // the difference: a reclaim never makes an answer cheaper.
    let ghost = take("never-beat").await.unwrap();
    assert_eq!(beat("other").await, 0);
    tokio::time::sleep(past_ttl).await;
    assert_eq!(beat("other").await, 1);
    assert_eq!(
        held(&c, &grant).await[0],
        (String::new(), 0, 0, nanos(0.70))
    );
    let dear = Spend {
        usd: usd(0.50),
        tokens: 2000,
    };
    assert!(!pg_limits_settle(&c, &ghost, dear, now_ms).await.unwrap());
    assert_eq!(
        held(&c, &grant).await,
        vec![
            (String::new(), 0, 0, nanos(0.90)),
            ("gpt-4o".to_owned(), 0, 0, nanos(0.90)),
        ]
    );
    assert!(
        !pg_limits_settle(&c, &ghost, dear, now_ms).await.unwrap(),
        "and only once"
    );
    assert_eq!(held(&c, &grant).await[0].3, nanos(0.90));
    assert_eq!(count(&c, "limit_leases").await, 0);
    db.drop_db().await;
}

/// A settle retried after its answer was lost (the commit landed) ends its lease once:
/// the other request in flight still counts. Fails with a settle that only decrements.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_settle_retried_ends_its_lease_once() {
    let Some(url) = maintenance_url("a_settle_retried_ends_its_lease_once") else {
        return;
    };
    let db = TestDb::new(&url).await;
    let c = db.client().await;
    let grant = GrantId::generate();
    let limits = Limits {
        max_concurrency: Some(2),
        ..Limits::default()
    };
    let now_ms = 1_795_996_800_000;
    let mut leases = Vec::new();
    for _ in 0..2 {
        let a = ask(&grant, &limits, None, Estimate::default(), now_ms);
        leases.push(pg_limits_acquire(&c, NODE, &a).await.unwrap().unwrap());
    }
    for expect in [true, false, false] {
        let ended = pg_limits_settle(&c, &leases[0], Spend::default(), now_ms)
            .await
            .unwrap();
        assert_eq!(ended, expect);
    }
    assert_eq!(
        held(&c, &grant).await[0].1,
        1,
        "the second request still counts"
    );
    let a = ask(&grant, &limits, None, Estimate::default(), now_ms);
    let third = pg_limits_acquire(&c, NODE, &a).await.unwrap().unwrap();
    let a = ask(&grant, &limits, None, Estimate::default(), now_ms);
    assert!(
        pg_limits_acquire(&c, NODE, &a).await.unwrap().is_err(),
        "two in flight: the cap holds"
    );
    for lease in [&leases[1], &third] {
        assert!(
            pg_limits_settle(&c, lease, Spend::default(), now_ms)
                .await
                .unwrap()
        );
    }
    assert_eq!(held(&c, &grant).await[0].1, 0);
    db.drop_db().await;
}

/// An acquire whose answer was lost after its commit (the connection dropped): the
/// node never learnt of the lease, but chose its id, and ends it by that id; the same
/// for an acquire that never committed changes nothing. Without the node's own id, such
/// a lease would hold its place for as long as its (live) node runs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lease_whose_answer_was_lost_is_ended_by_its_id() {
    let Some(url) = maintenance_url("a_lease_whose_answer_was_lost_is_ended_by_its_id") else {
        return;
    };
    let db = TestDb::new(&url).await;
    let c = db.client().await;
    let grant = GrantId::generate();
    let limits = Limits {
        max_concurrency: Some(1),
        ..Limits::default()
    };
    let now_ms = 1_795_996_800_000;
    let lost = ask(&grant, &limits, None, Estimate::default(), now_ms);
    // Committed; its answer "lost": the lease value is dropped unread.
    drop(pg_limits_acquire(&c, NODE, &lost).await.unwrap().unwrap());
    let next = ask(&grant, &limits, None, Estimate::default(), now_ms);
    assert!(pg_limits_acquire(&c, NODE, &next).await.unwrap().is_err());
    let never = ask(&grant, &limits, None, Estimate::default(), now_ms);
    assert!(
        !pg_limits_settle(&c, &LimitLease::abandoned(&never), Spend::default(), now_ms)
            .await
            .unwrap(),
        "no such lease: nothing to end"
    );
    assert_eq!(held(&c, &grant).await[0].1, 1);
    assert!(
        pg_limits_settle(&c, &LimitLease::abandoned(&lost), Spend::default(), now_ms)
            .await
            .unwrap()
    );
    assert_eq!(held(&c, &grant).await[0].1, 0);
    assert!(pg_limits_acquire(&c, NODE, &next).await.unwrap().is_ok());
    db.drop_db().await;
}

/// A dead node's lease on a grant whose window some request holds right now is skipped
/// (the heartbeat never queues behind a busy grant) — until it is overdue by three
/// times the TTL: then the reclaim waits for the window (up to its lock timeout), so a
/// grant busy all the time does not keep a dead node's places for ever.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_overdue_lease_on_a_busy_grant_is_still_reclaimed() {
    let Some(url) = maintenance_url("an_overdue_lease_on_a_busy_grant_is_still_reclaimed") else {
        return;
    };
    let db = TestDb::new(&url).await;
    let c = db.client().await;
    let ttl = Duration::from_secs(1);
    let grant = GrantId::generate();
    let limits = Limits {
        max_concurrency: Some(1),
        ..Limits::default()
    };
    let now_ms = 1_795_996_800_000;
    let a = ask(&grant, &limits, None, Estimate::default(), now_ms);
    pg_limits_heartbeat(&c, "dying", ttl).await.unwrap();
    let taken = Instant::now();
    drop(pg_limits_acquire(&c, "dying", &a).await.unwrap().unwrap());
    tokio::time::sleep(ttl + Duration::from_millis(300)).await;
    // The grant is busy: its window locked by a request (here, a held transaction).
    let busy = db.client().await;
    busy.batch_execute("BEGIN").await.unwrap();
    busy.execute(
        "SELECT 1 FROM limit_windows WHERE grant_id = $1 FOR UPDATE",
        &[&grant.as_str()],
    )
    .await
    .unwrap();
    assert_eq!(
        pg_limits_heartbeat(&c, "other", ttl).await.unwrap(),
        0,
        "dead but not overdue: skipped, at once"
    );
    assert!(
        taken.elapsed() < 3 * ttl,
        "the machine was too slow to test this"
    );
    tokio::time::sleep((3 * ttl + Duration::from_millis(300)).saturating_sub(taken.elapsed()))
        .await;
    // Overdue: the reclaim waits for the window; the request ends meanwhile.
    let release = tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(500)).await;
        busy.batch_execute("ROLLBACK").await.unwrap();
    });
    assert_eq!(pg_limits_heartbeat(&c, "other", ttl).await.unwrap(), 1);
    release.await.unwrap();
    assert_eq!(held(&c, &grant).await[0].1, 0);
    db.drop_db().await;
}
