//! Shared state handed to every route.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use keygate_core::ids::GrantId;
use keygate_core::time::{Clock, UnixTime};
use keygate_store::Store;
use secrecy::ExposeSecret;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::accounting::Accounting;
use crate::auth::Passkeys;
use crate::config::Config;
use crate::limiter::Limiter;
use crate::master_keys::MasterKeys;
use crate::metrics::Metrics;
use crate::throttle::Throttles;
use crate::upstream;

#[derive(Clone)]
pub struct AppState {
    pub config: Arc<Config>,
    pub store: Store,
    /// The master keyring in use (`master_keys.rs`): `keyring.current()` per record.
    pub keyring: Arc<MasterKeys>,
    /// The pooled client for upstream calls: one per actix worker (see
    /// [`AppState::for_worker`]), so a worker drives its own upstream connections.
    pub upstream: reqwest::Client,
    pub last_used: LastUsed,
    pub passkeys: Passkeys,
    /// Per-address throttles and the live-ceremony cap.
    pub throttles: Arc<Throttles>,
    /// "Now" for every decision by time (from `Config::clock`; shared by clones).
    pub clock: Clock,
    /// Usage counters, batched and flushed at most a second apart.
    pub accounting: Accounting,
    /// Every grant's rate, concurrency and budget state (`limiter.rs`).
    pub limiter: Limiter,
    /// Prometheus metrics (`metrics.rs`).
    pub metrics: Arc<Metrics>,
    admin_key_hash: Option<[u8; 32]>,
}

impl AppState {
    pub async fn new(
        config: Config,
        store: Store,
        keyring: MasterKeys,
        upstream: reqwest::Client,
    ) -> Result<Self, prometheus::Error> {
        let admin_key_hash = config
            .admin_key
            .as_ref()
            .map(|k| Sha256::digest(k.expose_secret().as_bytes()).into());
        let passkeys = Passkeys::new(&config);
        let throttles = Arc::new(Throttles::new(&config.throttle, config.ceremony_ttl));
        // A restart starts from what the store already holds.
        throttles.ceremonies.recount(&store).await;
        let accounting = Accounting::default();
        let limiter = Limiter::new(store.clone(), accounting.clone(), config.clock.clone());
        let metrics = Arc::new(Metrics::new(&config.prices)?);
        Ok(Self {
            metrics,
            accounting,
            limiter,
            passkeys,
            throttles,
            clock: config.clock.clone(),
            config: Arc::new(config),
            store,
            keyring: Arc::new(keyring),
            upstream,
            last_used: LastUsed::default(),
            admin_key_hash,
        })
    }

    /// This state with an upstream client of its own, for one actix worker: the same
    /// settings (`upstream::client`), its own connection pool. Every other field is
    /// shared with `self` (reference counted). Should building the client fail here (it
    /// did not at start), the worker shares the start-up client instead.
    pub fn for_worker(&self) -> Self {
        let mut worker = self.clone();
        match upstream::client(&self.config) {
            Ok(client) => worker.upstream = client,
            Err(e) => {
                tracing::warn!(error = %e, "per-worker upstream client failed; sharing one");
            }
        }
        worker
    }

    pub fn admin_enabled(&self) -> bool {
        self.admin_key_hash.is_some()
    }

    /// Constant-time check of a presented admin key (compared as SHA-256 digests so the
    /// time does not depend on the key's length either).
    pub fn is_admin_key(&self, presented: &str) -> bool {
        let Some(expected) = &self.admin_key_hash else {
            return false;
        };
        let got: [u8; 32] = Sha256::digest(presented.as_bytes()).into();
        got.ct_eq(expected).into()
    }
}

/// `last_used_at` updates, batched: the proxy notes a use in memory and a background
/// task writes them at most once a second, so requests never wait on a store write.
#[derive(Clone, Default)]
pub struct LastUsed(Arc<Mutex<HashMap<GrantId, UnixTime>>>);

impl LastUsed {
    pub fn note(&self, grant: &GrantId, at: UnixTime) {
        if let Ok(mut map) = self.0.lock() {
            map.insert(grant.clone(), at);
        }
    }

    pub fn drain(&self) -> Vec<(GrantId, UnixTime)> {
        match self.0.lock() {
            Ok(mut map) => map.drain().collect(),
            Err(_) => Vec::new(),
        }
    }

    /// Writes pending updates; called by the flusher and at shutdown.
    pub async fn write_to(&self, store: &Store) {
        let batch = self.drain();
        if batch.is_empty() {
            return;
        }
        if let Err(e) = store.touch_grants(&batch).await {
            tracing::warn!(error = %e, "could not record last-used times");
        }
    }

    /// Ends when `stop` changes, between two writes (never aborted mid-write, as the
    /// usage flusher: a drained batch must not be cut off).
    pub fn spawn_flusher(
        &self,
        store: Store,
        every: Duration,
        metrics: Arc<Metrics>,
        mut stop: tokio::sync::watch::Receiver<bool>,
    ) -> tokio::task::JoinHandle<()> {
        let this = self.clone();
        tokio::spawn(async move {
            // Ticks missed while one write ran long are skipped, not bunched up.
            let mut interval = tokio::time::interval(every);
            interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tokio::select! {
                    // A stop asked while a write ran wins over the tick due meanwhile.
                    biased;
                    _ = stop.changed() => return,
                    _ = interval.tick() => {}
                }
                let started = std::time::Instant::now();
                this.write_to(&store).await;
                metrics.observe_flush("last_used", started.elapsed());
            }
        })
    }
}
