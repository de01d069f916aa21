//! Per-client-address throttles and the cap on live passkey ceremonies: what keeps
//! anonymous clients from growing the store or the process without bound, and what
//! slows down guessing the admin key.
//!
//! - **Anonymous passkey traffic** ([`Throttles::auth`]): every ceremony start
//!   (`/api/auth/register/start`, `/api/auth/login/start`) and every sign-up
//!   (`/api/auth/register/finish`) spends one cell of the address's budget before the
//!   handler runs (governor's GCRA: `auth_rate_per_minute`, bursts of `auth_burst`).
//! - **Failed sign-ins** ([`Throttles::sign_in_failures`]): a sign-in finish that
//!   answers 4xx spends one cell of a second budget of the same size; the failure that
//!   finds it empty is answered 429, and so is every sign-in finish from that address
//!   until `Retry-After` has passed. Successful sign-ins cost nothing.
//! - **Wrong admin keys** ([`Throttles::admin_failures`]): the same shape with
//!   `admin_failures_per_minute`, checked *after* the key: the right key always passes,
//!   a wrong key from a throttled address gets 429 instead of 401; other addresses are
//!   unaffected and successes never count.
//! - **Live ceremonies** ([`CeremonyCap`]): every *anonymous* ceremony start takes a
//!   slot; at `max_ceremonies` they are answered 429 until finishes or the sweeper free
//!   some. Ceremonies of a signed-in person (step-up, adding a passkey, approving a
//!   connection) are neither counted nor refused by the cap: each is stored under one
//!   key per person, kind and session, so a new start replaces that session's previous
//!   one and a session holds at most three, whatever it sends — a person at most three
//!   per live session (`keygate_store::put_ceremony`).
//!   An anonymous flood cannot block them, and they cannot fill the cap.
//! - **Recorded denials** ([`Throttles::denials`]): per person, not per address — how
//!   many connect "no"s a session can write into the audit log.
//!
//! The client address is the TCP peer's, never a header, unless the peer is one of the
//! configured `trusted_proxies`: then the right-most `X-Forwarded-For` entry that is not
//! itself a trusted proxy. IPv6 clients are keyed by their /64 (one host usually holds
//! a whole /64); anonymous ceremony starts and sign-ups from IPv6 also spend from a
//! budget of their /56 (a home or small site's usual allocation), [`WIDE_FACTOR`] times
//! the per-address one, so one /56 cannot act as 256 clients. A holder of a /48 or
//! more still counts as many clients (see docs/DECISIONS.md). The keyed state stays bounded: [`Throttles::retain_recent`] runs from
//! the sweeper and drops every address whose state is back to fresh, and a table that
//! still grows past [`MAX_TRACKED`] is pruned inline.

use std::collections::HashMap;
use std::hash::Hash;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::num::NonZeroU32;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use actix_web::ResponseError as _;
use actix_web::body::{EitherBody, MessageBody};
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::header::HeaderMap;
use actix_web::middleware::Next;
use actix_web::web;
use governor::clock::{Clock, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota};
use keygate_core::ids::UserId;
use keygate_store::Store;

use crate::config::ThrottleSettings;
use crate::error::ServerError;
use crate::services::error::{Limit, ServiceError};
use crate::state::AppState;

/// Above this many tracked addresses in one table, stale entries are pruned inline
/// rather than waiting for the sweeper.
pub const MAX_TRACKED: usize = 100_000;

/// An IPv6 /56's anonymous budget, in multiples of one address's.
pub const WIDE_FACTOR: u32 = 4;

/// A person's connect denials the audit log records: a burst of this many, then
/// [`DENIALS_PER_MINUTE`] (see [`Throttles::denials`]).
pub const DENIALS_BURST: u32 = 10;
pub const DENIALS_PER_MINUTE: u32 = 1;

/// How often, at most, a full ceremony cap looks at the store again.
const RECOUNT_EVERY: Duration = Duration::from_secs(1);

/// The throttles of one running server.
pub struct Throttles {
    pub auth: RateThrottle,
    /// Anonymous starts and sign-ups per IPv6 /56 (IPv4 clients do not spend here).
    pub auth_wide: RateThrottle,
    pub sign_in_failures: FailureThrottle,
    pub admin_failures: FailureThrottle,
    pub ceremonies: CeremonyCap,
    /// `connect.denied` entries per person. A "no" changes nothing in keygate and costs
    /// its sender nothing but a request, so past this budget it is answered as usual
    /// and not recorded: a stolen session cannot grow the log (and flush the store)
    /// without bound.
    pub denials: RateThrottle<UserId>,
    trusted_proxies: Vec<IpAddr>,
    /// When an untrusted peer's `X-Forwarded-For` was last logged.
    untrusted_forwarded: Mutex<Option<Instant>>,
}

/// How often, at most, an ignored `X-Forwarded-For` is logged.
const FORWARDED_WARNING_EVERY: Duration = Duration::from_secs(60);

impl Throttles {
    pub fn new(s: &ThrottleSettings, ceremony_ttl: Duration) -> Self {
        let one = NonZeroU32::MIN;
        let per_minute = NonZeroU32::new(s.auth_per_minute).unwrap_or(one);
        let burst = NonZeroU32::new(s.auth_burst).unwrap_or(one);
        let admin = NonZeroU32::new(s.admin_failures_per_minute).unwrap_or(one);
        Self {
            auth: RateThrottle::new(per_minute, burst),
            auth_wide: RateThrottle::new(
                per_minute.saturating_mul(NonZeroU32::new(WIDE_FACTOR).unwrap_or(one)),
                burst.saturating_mul(NonZeroU32::new(WIDE_FACTOR).unwrap_or(one)),
            ),
            sign_in_failures: FailureThrottle::new(per_minute, burst),
            admin_failures: FailureThrottle::new(admin, admin),
            ceremonies: CeremonyCap::new(s.max_ceremonies, ceremony_ttl),
            denials: RateThrottle::new(
                NonZeroU32::new(DENIALS_PER_MINUTE).unwrap_or(one),
                NonZeroU32::new(DENIALS_BURST).unwrap_or(one),
            ),
            trusted_proxies: s.trusted_proxies.clone(),
            untrusted_forwarded: Mutex::new(None),
        }
    }

    /// The address a request is throttled under (see the module docs).
    pub fn client(&self, peer: Option<SocketAddr>, headers: &HeaderMap) -> IpAddr {
        bucket(
            self.address(peer, headers)
                .unwrap_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED)),
        )
    }

    /// The client's own address, whole (what the audit log records): the peer's, or
    /// the one trusted proxies forwarded (see the module docs). `None` without a peer.
    pub fn address(&self, peer: Option<SocketAddr>, headers: &HeaderMap) -> Option<IpAddr> {
        let peer = canonical(peer?.ip());
        if !self.trusted_proxies.contains(&peer) {
            if headers.contains_key("x-forwarded-for") {
                self.ignored_forwarded_for(peer);
            }
            return Some(peer);
        }
        let forwarded = headers
            .get_all("x-forwarded-for")
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .map(str::trim)
            .collect::<Vec<_>>();
        for entry in forwarded.iter().rev() {
            match entry.parse::<IpAddr>().map(canonical) {
                Ok(ip) if self.trusted_proxies.contains(&ip) => continue,
                Ok(ip) => return Some(ip),
                // Anything unparsable was written by someone we do not trust: stop at
                // the last address we do.
                Err(_) => break,
            }
        }
        Some(peer)
    }

    /// An `X-Forwarded-For` from a peer not in `trusted_proxies` is ignored; behind a
    /// reverse proxy that means every client shares the proxy's budgets, so say so in
    /// the log — once a minute at most, not once per request. Returns whether it logged.
    fn ignored_forwarded_for(&self, peer: IpAddr) -> bool {
        let Ok(mut last) = self.untrusted_forwarded.lock() else {
            return false;
        };
        if last.is_some_and(|t| t.elapsed() < FORWARDED_WARNING_EVERY) {
            return false;
        }
        *last = Some(Instant::now());
        tracing::warn!(
            %peer,
            "X-Forwarded-For from a peer not in trusted_proxies is ignored: if keygate is \
             behind a reverse proxy, every client shares that proxy's throttle budgets; \
             set trusted_proxies (docs/CONFIG.md)"
        );
        true
    }

    /// Spends from the anonymous budgets of `client` (as returned by
    /// [`client`](Self::client)): its own first, then its IPv6 /56's — so requests one
    /// /64 sends past its own budget do not spend its neighbours' shared one.
    pub fn check_anonymous(&self, client: IpAddr) -> Result<(), u64> {
        self.auth.check(client)?;
        match wide_bucket(client) {
            Some(wide) => self.auth_wide.check(wide),
            None => Ok(()),
        }
    }

    /// Forgets every address whose state is back to fresh; run by the sweeper.
    pub fn retain_recent(&self) {
        self.auth.retain_recent();
        self.auth_wide.retain_recent();
        self.sign_in_failures.retain_recent();
        self.admin_failures.retain_recent();
        self.denials.retain_recent();
    }

    /// Addresses currently tracked, all tables together (for tests and logs).
    pub fn tracked(&self) -> usize {
        self.auth.len()
            + self.auth_wide.len()
            + self.sign_in_failures.len()
            + self.admin_failures.len()
            + self.denials.len()
    }
}

/// IPv4-mapped IPv6 addresses are the IPv4 client they carry.
fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(IpAddr::V6(v6), IpAddr::V4),
        v4 => v4,
    }
}

/// The key an address is counted under: IPv4 as is, IPv6 by its /64.
fn bucket(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => {
            let mut s = v6.segments();
            s[4..].fill(0);
            IpAddr::V6(Ipv6Addr::from(s))
        }
        v4 => v4,
    }
}

/// The /56 an IPv6 client's anonymous traffic is also counted under; none for IPv4.
fn wide_bucket(ip: IpAddr) -> Option<IpAddr> {
    match ip {
        IpAddr::V6(v6) => {
            let mut s = v6.segments();
            s[3] &= 0xff00;
            s[4..].fill(0);
            Some(IpAddr::V6(Ipv6Addr::from(s)))
        }
        IpAddr::V4(_) => None,
    }
}

/// `Retry-After` in whole seconds, at least one.
fn whole_secs(d: Duration) -> u64 {
    d.as_secs() + u64::from(d.subsec_nanos() > 0)
}

/// A per-address budget (or per-`K`: [`Throttles::denials`] is per person); every
/// check spends a cell.
pub struct RateThrottle<K: Hash + Eq + Clone = IpAddr> {
    limiter: DefaultKeyedRateLimiter<K>,
    clock: DefaultClock,
    pruned: Mutex<Option<Instant>>,
}

impl<K: Hash + Eq + Clone> RateThrottle<K> {
    pub fn new(per_minute: NonZeroU32, burst: NonZeroU32) -> Self {
        Self {
            limiter: DefaultKeyedRateLimiter::keyed(
                Quota::per_minute(per_minute).allow_burst(burst),
            ),
            clock: DefaultClock::default(),
            pruned: Mutex::new(None),
        }
    }

    /// Spends a cell for `client`; `Err(seconds)` when its budget is empty.
    pub fn check(&self, client: K) -> Result<(), u64> {
        self.prune_if_large();
        self.limiter
            .check_key(&client)
            .map_err(|not_until| whole_secs(not_until.wait_time_from(self.clock.now())).max(1))
    }

    pub fn retain_recent(&self) {
        self.limiter.retain_recent();
        self.limiter.shrink_to_fit();
    }

    pub fn len(&self) -> usize {
        self.limiter.len()
    }

    pub fn is_empty(&self) -> bool {
        self.limiter.is_empty()
    }

    /// Between sweeps a flood of new addresses could grow the table: past
    /// [`MAX_TRACKED`], drop the fresh entries now (at most once a second).
    fn prune_if_large(&self) {
        if self.limiter.len() <= MAX_TRACKED {
            return;
        }
        let Ok(mut last) = self.pruned.lock() else {
            return;
        };
        if last.is_some_and(|t| t.elapsed() < RECOUNT_EVERY) {
            return;
        }
        *last = Some(Instant::now());
        drop(last);
        self.retain_recent();
    }
}

/// A budget that only failures spend, with a gate in front: once a failure finds the
/// budget empty, the address is refused until the budget has a cell again.
///
/// The map of blocked addresses holds at most `max_blocked` entries (normally
/// [`MAX_TRACKED`]): when it is full of addresses that are all still blocked, the one
/// closest to the end of its block is dropped to make room. That address is then no
/// longer refused by [`gate`](Self::gate), but its governor budget is still empty, so
/// its next failure blocks it again.
pub struct FailureThrottle {
    rate: RateThrottle,
    blocked: Mutex<HashMap<IpAddr, Instant>>,
    max_blocked: usize,
}

impl FailureThrottle {
    pub fn new(per_minute: NonZeroU32, burst: NonZeroU32) -> Self {
        Self::with_max(per_minute, burst, MAX_TRACKED)
    }

    fn with_max(per_minute: NonZeroU32, burst: NonZeroU32, max_blocked: usize) -> Self {
        Self {
            rate: RateThrottle::new(per_minute, burst),
            blocked: Mutex::new(HashMap::new()),
            max_blocked: max_blocked.max(1),
        }
    }

    /// Before the attempt: `Err(seconds)` while `client` is blocked.
    pub fn gate(&self, client: IpAddr) -> Result<(), u64> {
        let Ok(mut blocked) = self.blocked.lock() else {
            return Ok(());
        };
        let now = Instant::now();
        match blocked.get(&client) {
            Some(until) if *until > now => Err(whole_secs(*until - now).max(1)),
            Some(_) => {
                blocked.remove(&client);
                Ok(())
            }
            None => Ok(()),
        }
    }

    /// After a failed attempt: spends a cell; `Err(seconds)` when the budget was empty
    /// (the address is blocked from now on for that long).
    pub fn failed(&self, client: IpAddr) -> Result<(), u64> {
        let Err(secs) = self.rate.check(client) else {
            return Ok(());
        };
        if let Ok(mut blocked) = self.blocked.lock() {
            let now = Instant::now();
            if blocked.len() >= self.max_blocked && !blocked.contains_key(&client) {
                blocked.retain(|_, until| *until > now);
                // Still full: every entry is blocked; make room by dropping the one
                // whose block ends first (it is the least protection lost).
                while blocked.len() >= self.max_blocked {
                    let Some(soonest) = blocked
                        .iter()
                        .min_by_key(|(_, until)| **until)
                        .map(|(ip, _)| *ip)
                    else {
                        break;
                    };
                    blocked.remove(&soonest);
                }
            }
            blocked.insert(client, now + Duration::from_secs(secs));
        }
        Err(secs)
    }

    fn blocked_len(&self) -> usize {
        self.blocked.lock().map_or(0, |b| b.len())
    }

    pub fn retain_recent(&self) {
        self.rate.retain_recent();
        if let Ok(mut blocked) = self.blocked.lock() {
            let now = Instant::now();
            blocked.retain(|_, until| *until > now);
            blocked.shrink_to_fit();
        }
    }

    pub fn len(&self) -> usize {
        self.rate.len() + self.blocked_len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// A global cap on live anonymous ceremonies. Starts reserve a slot before the handler runs (and
/// give it back when no ceremony was made); a full cap looks at the store again at most
/// once a second, since finishes take ceremonies out; the sweeper resets the count after
/// removing expired ones.
pub struct CeremonyCap {
    max: usize,
    retry_after: u64,
    inner: Mutex<CapState>,
}

struct CapState {
    /// Ceremonies in the store plus starts in flight (an over-estimate, never under).
    live: usize,
    in_flight: usize,
    /// Starts that stored a ceremony, ever (wrapping): what a recount adds back for
    /// those made while it read the store.
    made: u64,
    recounted: Option<Instant>,
    /// Whether this full episode was logged (once, not per refused request).
    warned: bool,
}

impl CeremonyCap {
    pub fn new(max: usize, ttl: Duration) -> Self {
        Self {
            max,
            // Slots free up when ceremonies finish or expire; a minute at most.
            retry_after: ttl.as_secs().clamp(1, 60),
            inner: Mutex::new(CapState {
                live: 0,
                in_flight: 0,
                made: 0,
                recounted: None,
                warned: false,
            }),
        }
    }

    pub fn max(&self) -> usize {
        self.max
    }

    /// Reserves a slot for a ceremony about to start; `Err(seconds)` when full. The
    /// slot is given back when dropped unless [`Slot::made`] says a ceremony was
    /// stored: a request abandoned halfway (the client went away while its body was
    /// read) cannot leak one.
    pub async fn admit(&self, store: &Store) -> Result<Slot<'_>, u64> {
        let recount = {
            let Ok(mut s) = self.inner.lock() else {
                return Err(self.retry_after);
            };
            let due =
                s.live >= self.max && s.recounted.is_none_or(|t| t.elapsed() >= RECOUNT_EVERY);
            if due {
                // Claimed now: of the requests finding the cap full, one recounts.
                s.recounted = Some(Instant::now());
            }
            due.then_some(s.made)
        };
        // The store is read with no lock held (another request may decide meanwhile).
        if let Some(made_before) = recount {
            self.apply_count(store, made_before).await;
        }
        let Ok(mut s) = self.inner.lock() else {
            return Err(self.retry_after);
        };
        if s.live >= self.max {
            if !s.warned {
                s.warned = true;
                tracing::warn!(
                    max = self.max,
                    "live ceremony cap reached; refusing new ceremonies"
                );
            }
            return Err(self.retry_after);
        }
        s.warned = false;
        s.live += 1;
        s.in_flight += 1;
        Ok(Slot {
            cap: self,
            made: false,
        })
    }

    /// Sets the count from the store: its anonymous ceremonies, plus the starts in
    /// flight, plus ceremonies made since `made_before` was read (the store's count may
    /// have been taken before they were stored: counted twice rather than missed).
    async fn apply_count(&self, store: &Store, made_before: u64) {
        let stored = match store.anonymous_ceremony_count().await {
            Ok(n) => n,
            Err(e) => {
                tracing::warn!(error = %e, "could not count live ceremonies; keeping the estimate");
                return;
            }
        };
        if let Ok(mut s) = self.inner.lock() {
            let since = usize::try_from(s.made.wrapping_sub(made_before)).unwrap_or(usize::MAX);
            s.live = stored.saturating_add(s.in_flight).saturating_add(since);
        }
    }

    fn done(&self, made: bool) {
        if let Ok(mut s) = self.inner.lock() {
            s.in_flight = s.in_flight.saturating_sub(1);
            if made {
                s.made = s.made.wrapping_add(1);
            } else {
                s.live = s.live.saturating_sub(1);
            }
        }
    }

    /// After a sweep: the store's count is the truth again.
    pub async fn recount(&self, store: &Store) {
        let made_before = match self.inner.lock() {
            Ok(mut s) => {
                s.recounted = Some(Instant::now());
                s.made
            }
            Err(_) => return,
        };
        self.apply_count(store, made_before).await;
    }
}

/// A reserved ceremony slot (see [`CeremonyCap::admit`]).
pub struct Slot<'a> {
    cap: &'a CeremonyCap,
    made: bool,
}

impl Slot<'_> {
    /// The start stored a ceremony: the slot stays taken until a recount.
    pub fn made(mut self) {
        self.made = true;
    }
}

impl Drop for Slot<'_> {
    fn drop(&mut self) {
        self.cap.done(self.made);
    }
}

// --- middleware ---------------------------------------------------------------------

/// What a throttled route is, for [`guard`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Action {
    /// An anonymous ceremony start (sign-up or sign-in).
    AnonymousStart,
    /// Creating an account (`register/finish`).
    SignUp,
    /// Finishing a sign-in: only failures count.
    SignInFinish,
}

/// `/api/auth/register/start`, `/api/auth/login/start`.
pub async fn anonymous_start(
    req: ServiceRequest,
    next: Next<impl MessageBody>,
) -> Result<ServiceResponse<EitherBody<impl MessageBody>>, actix_web::Error> {
    guard(Action::AnonymousStart, req, next).await
}

/// `/api/auth/register/finish`.
pub async fn sign_up(
    req: ServiceRequest,
    next: Next<impl MessageBody>,
) -> Result<ServiceResponse<EitherBody<impl MessageBody>>, actix_web::Error> {
    guard(Action::SignUp, req, next).await
}

/// `/api/auth/login/finish`.
pub async fn sign_in_finish(
    req: ServiceRequest,
    next: Next<impl MessageBody>,
) -> Result<ServiceResponse<EitherBody<impl MessageBody>>, actix_web::Error> {
    guard(Action::SignInFinish, req, next).await
}

async fn guard<B: MessageBody>(
    action: Action,
    req: ServiceRequest,
    next: Next<B>,
) -> Result<ServiceResponse<EitherBody<B>>, actix_web::Error> {
    let Some(st) = req.app_data::<web::Data<AppState>>().cloned() else {
        return Ok(next.call(req).await?.map_into_left_body());
    };
    let t = &st.throttles;
    let client = t.client(req.peer_addr(), req.headers());
    let refuse = |req: ServiceRequest, e: ServiceError| {
        Ok(req
            .into_response(ServerError::from(e).error_response())
            .map_into_right_body())
    };
    let busy = |secs| ServiceError::RateLimited {
        limit: Limit::Passkeys,
        retry_after: secs,
    };

    // Before the handler: the per-address budgets.
    let spent = match action {
        Action::AnonymousStart | Action::SignUp => t.check_anonymous(client),
        Action::SignInFinish => t.sign_in_failures.gate(client),
    };
    if let Err(secs) = spent {
        // Debug only: a flood would otherwise be a flood of log lines.
        tracing::debug!(?action, %client, retry_after = secs, "throttled");
        return refuse(req, busy(secs));
    }

    // Then the global cap, for anything that stores an anonymous ceremony.
    let starts = action == Action::AnonymousStart;
    let admitted = if starts {
        Some(t.ceremonies.admit(&st.store).await)
    } else {
        None
    };
    let slot = match admitted {
        Some(Err(secs)) => {
            return refuse(
                req,
                ServiceError::RateLimited {
                    limit: Limit::Ceremonies,
                    retry_after: secs,
                },
            );
        }
        Some(Ok(slot)) => Some(slot),
        None => None,
    };
    let res = next.call(req).await?;
    if let Some(slot) = slot
        && res.status().is_success()
    {
        slot.made();
    }

    // After the handler: a failed sign-in spends from the failure budget; the one that
    // finds it empty is already answered 429.
    if action == Action::SignInFinish
        && res.status().is_client_error()
        && let Err(secs) = t.sign_in_failures.failed(client)
    {
        tracing::info!(%client, retry_after = secs, "failed sign-ins throttled");
        let (req, _) = res.into_parts();
        let res = ServerError::from(busy(secs)).error_response();
        return Ok(ServiceResponse::new(req, res).map_into_right_body());
    }
    Ok(res.map_into_left_body())
}

#[cfg(test)]
mod tests {
    use super::*;
    use actix_web::http::header::HeaderValue;

    fn settings(proxies: &[&str]) -> ThrottleSettings {
        ThrottleSettings {
            auth_per_minute: 1,
            auth_burst: 2,
            max_ceremonies: 10,
            admin_failures_per_minute: 2,
            trusted_proxies: proxies.iter().map(|p| p.parse().unwrap()).collect(),
        }
    }

    fn xff(v: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(
            actix_web::http::header::HeaderName::from_static("x-forwarded-for"),
            HeaderValue::from_str(v).unwrap(),
        );
        h
    }

    #[test]
    fn forwarded_for_is_ignored_unless_the_peer_is_a_trusted_proxy() {
        let t = Throttles::new(&settings(&[]), Duration::from_secs(300));
        let peer = Some("203.0.113.9:5000".parse().unwrap());
        assert_eq!(
            t.client(peer, &xff("198.51.100.1")),
            "203.0.113.9".parse::<IpAddr>().unwrap()
        );

        let t = Throttles::new(&settings(&["10.0.0.1"]), Duration::from_secs(300));
        let via_proxy = Some("10.0.0.1:5000".parse().unwrap());
        // The right-most entry not itself a proxy; what the client wrote before it is
        // not believed.
        assert_eq!(
            t.client(via_proxy, &xff("1.1.1.1, 198.51.100.1, 10.0.0.1")),
            "198.51.100.1".parse::<IpAddr>().unwrap()
        );
        assert_eq!(
            t.client(via_proxy, &xff("garbage")),
            "10.0.0.1".parse::<IpAddr>().unwrap()
        );
        assert_eq!(
            t.client(peer, &xff("198.51.100.1")),
            "203.0.113.9".parse::<IpAddr>().unwrap()
        );
    }

    #[test]
    fn an_ignored_forwarded_for_is_logged_at_most_once_a_minute() {
        let t = Throttles::new(&settings(&[]), Duration::from_secs(300));
        let peer: IpAddr = "203.0.113.9".parse().unwrap();
        assert!(t.ignored_forwarded_for(peer));
        for _ in 0..100 {
            assert!(!t.ignored_forwarded_for(peer));
            let _ = t.client(Some("203.0.113.9:1".parse().unwrap()), &xff("198.51.100.1"));
        }
    }

    #[test]
    fn an_ipv6_56_shares_a_wider_anonymous_budget() {
        // Per address: bursts of 2; per /56: WIDE_FACTOR times that.
        let t = Throttles::new(&settings(&[]), Duration::from_secs(300));
        let from = |a: &str| t.client(Some(a.parse().unwrap()), &HeaderMap::new());
        let wide = 2 * WIDE_FACTOR as usize;
        let mut ok = 0;
        // Every /64 of one /56 (2001:db8:0:100::/56): only the /56's budget is spent.
        for i in 0..256u32 {
            let c = from(&format!("[2001:db8:0:1{i:02x}::1]:1"));
            while t.check_anonymous(c).is_ok() {
                ok += 1;
            }
        }
        assert_eq!(ok, wide, "one /56 is {WIDE_FACTOR} clients, not 256");
        // The neighbouring /56 and IPv4 clients are unaffected.
        assert!(t.check_anonymous(from("[2001:db8:0:200::1]:1")).is_ok());
        let v4 = from("192.0.2.1:1");
        assert!(t.check_anonymous(v4).is_ok());
        assert!(t.check_anonymous(v4).is_ok());
        assert!(t.check_anonymous(v4).is_err());
    }

    #[test]
    fn ipv6_clients_share_their_64() {
        let t = Throttles::new(&settings(&[]), Duration::from_secs(300));
        let a = t.client(
            Some("[2001:db8:1:2:aaaa::1]:1".parse().unwrap()),
            &HeaderMap::new(),
        );
        let b = t.client(
            Some("[2001:db8:1:2:bbbb::2]:1".parse().unwrap()),
            &HeaderMap::new(),
        );
        let c = t.client(
            Some("[2001:db8:1:3::1]:1".parse().unwrap()),
            &HeaderMap::new(),
        );
        assert_eq!(a, b);
        assert_ne!(a, c);
        let mapped = t.client(
            Some("[::ffff:192.0.2.7]:1".parse().unwrap()),
            &HeaderMap::new(),
        );
        assert_eq!(mapped, "192.0.2.7".parse::<IpAddr>().unwrap());
        // The address itself (what the audit log records) is whole.
        let whole = t.address(
            Some("[2001:db8:1:2:aaaa::1]:1".parse().unwrap()),
            &HeaderMap::new(),
        );
        assert_eq!(whole, "2001:db8:1:2:aaaa::1".parse::<IpAddr>().ok());
        assert_eq!(t.address(None, &HeaderMap::new()), None);
        let t = Throttles::new(&settings(&["10.0.0.1"]), Duration::from_secs(300));
        let forwarded = t.address(
            Some("10.0.0.1:5000".parse().unwrap()),
            &xff("2001:db8:9::7, 10.0.0.1"),
        );
        assert_eq!(forwarded, "2001:db8:9::7".parse::<IpAddr>().ok());
    }

    #[test]
    fn failures_block_after_the_budget_and_successes_cost_nothing() {
        let t = FailureThrottle::new(NonZeroU32::MIN, NonZeroU32::new(2).unwrap());
        let ip: IpAddr = "192.0.2.1".parse().unwrap();
        for _ in 0..100 {
            assert!(t.gate(ip).is_ok(), "gates alone never block");
        }
        assert!(t.failed(ip).is_ok());
        assert!(t.failed(ip).is_ok());
        let secs = t.failed(ip).unwrap_err();
        assert!((1..=60).contains(&secs), "{secs}");
        assert!(t.gate(ip).is_err());
        assert!(t.gate("192.0.2.2".parse().unwrap()).is_ok());
    }

    #[test]
    fn the_blocked_map_stays_bounded_when_every_entry_is_still_blocked() {
        let t = FailureThrottle::with_max(NonZeroU32::MIN, NonZeroU32::MIN, 3);
        let ip = |i: u32| IpAddr::V4(Ipv4Addr::from(0xC000_0200 + i));
        for i in 0..50 {
            // The burst of one: the first failure passes, the second blocks.
            assert!(t.failed(ip(i)).is_ok());
            assert!(t.failed(ip(i)).is_err());
            assert!(t.blocked_len() <= 3, "{} tracked", t.blocked_len());
        }
        // The newest blocked addresses are the ones still refused.
        assert!(t.gate(ip(49)).is_err());
        assert!(t.gate(ip(0)).is_ok());
        // An evicted address's budget is still empty: its next failure blocks it again.
        assert!(t.failed(ip(0)).is_err());
        assert!(t.gate(ip(0)).is_err());
        assert!(t.blocked_len() <= 3);
    }

    #[tokio::test]
    async fn the_cap_counts_made_ceremonies_and_gets_abandoned_slots_back() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path(), &keygate_store::StoreOptions::default()).unwrap();
        let c: keygate_store::CeremonyRecord = serde_json::from_value(serde_json::json!({
            "kind": "login", "state": "{}", "user_id": null, "name": null,
            "expires_at": u64::MAX / 2,
        }))
        .unwrap();
        let cap = CeremonyCap::new(2, Duration::from_secs(300));
        let slot = cap.admit(&store).await.unwrap();
        store.put_ceremony("a", &c).await.unwrap();
        slot.made();
        // Refused, failed or abandoned (the future dropped mid-request): slot returned.
        for _ in 0..10 {
            drop(cap.admit(&store).await.unwrap());
        }
        let held = cap.admit(&store).await.unwrap();
        // Full: one stored, one in flight (a recount sees the same).
        assert_eq!(cap.admit(&store).await.err(), Some(60));
        store.put_ceremony("b", &c).await.unwrap();
        held.made();
        assert!(cap.admit(&store).await.is_err());
        // A finish takes one out; a full cap notices on its next recount.
        store.take_ceremony("a").await.unwrap();
        cap.recount(&store).await;
        assert!(cap.admit(&store).await.is_ok());
    }

    #[test]
    fn a_flood_of_new_addresses_is_pruned_without_waiting_for_the_sweeper() {
        // One cell per 10 µs: an address's state is fresh again almost at once.
        let t = RateThrottle::new(NonZeroU32::new(6_000_000).unwrap(), NonZeroU32::MIN);
        let ip = |i: u32| IpAddr::V4(Ipv4Addr::from(i));
        for i in 0..=MAX_TRACKED as u32 {
            let _ = t.check(ip(i));
        }
        assert_eq!(t.len(), MAX_TRACKED + 1);
        std::thread::sleep(Duration::from_millis(20));
        // The next new address finds the table past MAX_TRACKED and prunes it inline:
        // only states that are not fresh yet (none here) stay.
        for i in 0..1_000u32 {
            let _ = t.check(ip(u32::MAX - i));
        }
        assert!(t.len() <= 1_000, "{} tracked", t.len());
    }

    #[test]
    fn retain_recent_forgets_fresh_addresses() {
        let t = RateThrottle::new(NonZeroU32::new(6_000_000).unwrap(), NonZeroU32::MIN);
        for i in 0..1000u32 {
            let _ = t.check(IpAddr::V4(Ipv4Addr::from(i)));
        }
        assert_eq!(t.len(), 1000);
        // One cell per 10 µs: every state is fresh again almost at once.
        std::thread::sleep(Duration::from_millis(20));
        t.retain_recent();
        assert_eq!(t.len(), 0);
    }
}
