//! Building and running the application (zero2prod's `Application`): bind first, so a
//! test can ask for port 0 and read back the real port; then serve until stopped.

use std::net::TcpListener;
use std::time::Duration;

use actix_service::ServiceFactoryExt as _;
use actix_web::dev::Server;
use actix_web::middleware::from_fn;
use actix_web::{App, web};
use keygate_core::keyring::Keyring;
use keygate_store::{Store, StoreOptions};
use thiserror::Error;

use crate::client_deadline::{self, GuardedIo};
use crate::config::Config;
use crate::keyfile::{self, KeyFileError, KeySource};
use crate::master_keys::MasterKeys;
use crate::state::AppState;
use crate::{metrics, request_id, routes, upstream};

/// keygate's own JSON bodies (admin API, later the vault API) are small.
const MAX_API_JSON_BYTES: usize = 64 * 1024;

#[derive(Debug, Error)]
pub enum StartError {
    #[error("data directory {path}")]
    DataDir {
        path: String,
        source: std::io::Error,
    },
    #[error(transparent)]
    KeyFile(#[from] KeyFileError),
    #[error("store")]
    Store(#[from] keygate_store::StoreError),
    /// `at` is the URL without its user or password (`StoreUrl::redacted`).
    #[error("PostgreSQL store at {at}")]
    PostgresStore {
        at: String,
        source: keygate_store::StoreError,
    },
    #[error("could not listen on {addr}")]
    Bind {
        addr: String,
        source: std::io::Error,
    },
    #[error("metrics")]
    Metrics(#[from] prometheus::Error),
    #[error("upstream client")]
    Upstream(#[from] reqwest::Error),
}

pub struct Application {
    port: u16,
    server: Server,
    state: AppState,
    key_source: KeySource,
}

impl Application {
    /// Binds the port, then (and only then, so a taken port leaves nothing behind)
    /// creates the data directory, loads or generates the keyring, and opens the store
    /// (sled in the data dir, or PostgreSQL at `store_url`). Nothing is served until
    /// [`Application::run_until_stopped`].
    pub async fn build(config: Config) -> Result<Self, StartError> {
        let listener = bind(&config)?;
        keyfile::create_private_dir(&config.data_dir).map_err(|source| StartError::DataDir {
            path: config.data_dir.display().to_string(),
            source,
        })?;
        let (keyring, source) = keyfile::load_or_create(&config)?;
        Self::start(config, listener, keyring, source).await
    }

    pub async fn build_with_keyring(config: Config, keyring: Keyring) -> Result<Self, StartError> {
        let listener = bind(&config)?;
        Self::start(config, listener, keyring, KeySource::Given).await
    }

    async fn start(
        mut config: Config,
        listener: TcpListener,
        keyring: Keyring,
        key_source: KeySource,
    ) -> Result<Self, StartError> {
        let store = open_store(&config).await?;
        let port = listener
            .local_addr()
            .map_err(|source| StartError::Bind {
                addr: config.listen.to_string(),
                source,
            })?
            .port();
        if !config.public_url_explicit && config.listen.port() != port {
            let mut bound = config.listen;
            bound.set_port(port);
            if let Ok(url) = url::Url::parse(&format!("http://{bound}")) {
                config.public_url = url;
            }
        }
        let client = upstream::client(&config)?;
        let shutdown = config.shutdown_timeout;
        let workers = config.workers;
        let state =
            AppState::new(config, store, MasterKeys::new(keyring, &key_source), client).await?;
        tracing::info!(
            port,
            kids = ?state.keyring.current().kids().collect::<Vec<_>>(),
            base_url = %state.config.base_url(),
            store = ?state.store.kind(),
            upstream = %state.config.upstream_url,
            admin_api = state.admin_enabled(),
            "keygate ready"
        );
        if let Some(why) = state.passkeys.unavailable_reason() {
            tracing::warn!("passkeys are disabled: {why}");
        }
        let server =
            serve(listener, &state, shutdown, workers).map_err(|source| StartError::Bind {
                addr: format!("port {port}"),
                source,
            })?;
        Ok(Self {
            port,
            server,
            state,
            key_source,
        })
    }

    /// Where the master keyring came from, and whether this start generated it.
    pub fn key_source(&self) -> &KeySource {
        &self.key_source
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    pub fn state(&self) -> &AppState {
        &self.state
    }

    pub fn handle(&self) -> actix_web::dev::ServerHandle {
        self.server.handle()
    }

    /// Serves until SIGINT/SIGTERM (graceful: in-flight requests and streams get up to
    /// the shutdown timeout) or until the handle stops it; then writes pending
    /// last-used times and usage counters and flushes the store.
    pub async fn run_until_stopped(self) -> std::io::Result<()> {
        let (stop, stopping) = tokio::sync::watch::channel(false);
        let flusher = self.state.last_used.spawn_flusher(
            self.state.store.clone(),
            Duration::from_secs(1),
            self.state.metrics.clone(),
            stopping.clone(),
        );
        let usage_flusher = self.state.accounting.spawn_flusher(
            self.state.store.clone(),
            Duration::from_secs(1),
            self.state.metrics.clone(),
            stopping,
        );
        let sweeper = spawn_sweeper(&self.state);
        // A pass at start (records left under an older key by a rotation made while
        // keygate was stopped), then one after each rotation made through the admin API.
        let resealer = crate::services::master_keys::spawn_resealer(self.state.clone());
        let heartbeat = self.state.limiter.spawn_heartbeat();
        let result = self.server.await;
        // Stop the background tasks and wait until they are gone: each holds a store
        // handle, and sled's lock is released only when the last handle drops. The
        // flushers are told to stop and finish the write they are in (a batch is
        // drained before it is written: aborted mid-write on a database, it would be
        // lost). The re-seal task is aborted between two records (each is swapped
        // atomically); what it did not reach is re-sealed at the next start.
        let _ = stop.send(true);
        // Shared-limit settles spawned by the drained streams land before the heartbeat
        // stops (bounded: one still retrying is reclaimed by the other nodes after
        // `limiter::NODE_TTL`, charged its reservation).
        if !self.state.limiter.settled(Duration::from_secs(10)).await {
            tracing::warn!(
                "stopping with shared-limit settles unfinished: the other nodes reclaim \
                 those leases"
            );
        }
        for task in [sweeper, resealer].into_iter().chain(heartbeat) {
            task.abort();
            let _ = task.await;
        }
        for task in [flusher, usage_flusher] {
            let _ = task.await;
        }
        self.state.last_used.write_to(&self.state.store).await;
        // Streams drained by the shutdown have settled their usage by now.
        if let Err(e) = self.state.accounting.write_to(&self.state.store).await {
            tracing::error!(error = %e, "could not write the last usage counters");
        }
        if let Err(e) = self.state.store.flush().await {
            tracing::error!(error = %e, "final store flush failed");
        }
        tracing::info!("keygate stopped");
        result
    }
}

/// The HTTP server on `listener`: actix-web's `App` on actix-http's service, as
/// `HttpServer` would build it, except that each accepted connection is wrapped in a
/// [`GuardedIo`] so a request head that dribbles in is cut off on every request of a
/// keep-alive connection, not only the first (`client_deadline`).
fn serve(
    listener: TcpListener,
    state: &AppState,
    shutdown: Duration,
    workers: Option<usize>,
) -> std::io::Result<Server> {
    let shared = state.clone();
    let addr = listener.local_addr()?;
    let host = addr.to_string();
    let head = state.config.client.head;
    let builder = actix_server::Server::build();
    // Tells each connection when a graceful stop begins, so idle kept-alive connections
    // close at once instead of holding the stop up (as `HttpServer` does).
    let stopping = builder.graceful_shutdown_signal();
    let mut builder = builder.shutdown_timeout(shutdown.as_secs().max(1)).listen(
        "keygate",
        listener,
        move || {
            // Runs once on each worker thread: the worker gets its own upstream client,
            // so the pooled connections it opens are driven by its own runtime and a
            // request never hops to another worker for its upstream I/O (hyper runs a
            // connection on the runtime that opened it). Everything else is shared.
            let data = web::Data::new(shared.for_worker());
            let app = App::new()
                .wrap(from_fn(metrics::middleware))
                .wrap(from_fn(request_id::middleware))
                .wrap(from_fn(client_deadline::middleware))
                .app_data(data)
                .configure(|cfg| routes::configure(cfg, MAX_API_JSON_BYTES));
            let host = host.clone();
            let app = actix_service::map_config(
                actix_service::IntoServiceFactory::into_factory(app)
                    .map_err(|err: actix_web::Error| err.error_response()),
                move |()| actix_web::dev::AppConfig::__priv_test_new(false, host.clone(), addr),
            );
            let stopping = stopping.clone();
            let http = actix_http::HttpService::build()
                .graceful_shutdown_signal(move || {
                    let stopping = stopping.clone();
                    async move { stopping.notified().await }
                })
                // The first request's head: actix's own timer (it answers 408);
                // later ones: `GuardedIo`.
                .client_request_timeout(head)
                .client_disconnect_timeout(Duration::from_secs(1))
                // A client that closes its side has gone away: drop its response, and
                // with it the upstream request, even while the upstream is silent
                // (nothing to write would otherwise reveal the disconnect until the
                // idle timeout).
                .h1_allow_half_closed(false)
                .local_addr(addr)
                .on_connect_ext(|io: &GuardedIo, ext: &mut actix_web::dev::Extensions| {
                    ext.insert(io.state());
                })
                .finish(app);
            actix_service::fn_service(move |io: actix_web::rt::net::TcpStream| async move {
                let io = GuardedIo::new(io, head);
                // Small SSE events must leave as soon as they are written.
                io.set_nodelay();
                let peer = io.peer_addr();
                Ok::<_, actix_http::error::DispatchError>((io, actix_http::Protocol::Http1, peer))
            })
            .and_then(http)
        },
    )?;
    if let Some(n) = workers {
        builder = builder.workers(n);
    }
    Ok(builder.run())
}

/// The store the configuration names: PostgreSQL at `store_url` (shared by every node;
/// the data dir still holds the master key file), else sled in `data_dir/store`.
async fn open_store(config: &Config) -> Result<Store, StartError> {
    let options = StoreOptions {
        cache_capacity: config.store_cache_bytes,
        ..StoreOptions::default()
    };
    if let Some(url) = &config.store_url {
        // The host and database only: the URL may hold a password.
        tracing::info!(store = %url.redacted(), "connecting to the PostgreSQL store");
        return Store::connect(url.expose(), &options)
            .await
            .map_err(|source| StartError::PostgresStore {
                at: url.redacted(),
                source,
            });
    }
    let store_dir =
        keyfile::prepare_store_dir(&config.data_dir).map_err(|source| StartError::DataDir {
            path: keyfile::store_path(&config.data_dir).display().to_string(),
            source,
        })?;
    Ok(Store::open(&store_dir, &options)?)
}

/// Binds the listening socket: the first thing a start does.
fn bind(config: &Config) -> Result<TcpListener, StartError> {
    TcpListener::bind(config.listen).map_err(|source| StartError::Bind {
        addr: config.listen.to_string(),
        source,
    })
}

/// Runs [`sweep_once`] once a minute.
fn spawn_sweeper(state: &AppState) -> tokio::task::JoinHandle<()> {
    let state = state.clone();
    tokio::spawn(async move {
        // The first pass a full interval after start (the state counted the store's
        // ceremonies when it was built).
        let mut tick =
            tokio::time::interval_at(tokio::time::Instant::now() + SWEEP_EVERY, SWEEP_EVERY);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            sweep_once(&state).await;
        }
    })
}

/// The audit log's retention (`audit_retention_days`): entries older than it go.
/// Kept forever when it is not set.
async fn sweep_audit(state: &AppState) {
    let Some(keep) = state.config.audit_retention else {
        return;
    };
    let keep_ns = u64::try_from(keep.as_nanos()).unwrap_or(u64::MAX);
    let cutoff = state.clock.now_nanos().saturating_sub(keep_ns);
    match state.store.sweep_audit_before(cutoff).await {
        Ok(0) => {}
        Ok(n) => tracing::info!(removed = n, "audit entries past their retention removed"),
        Err(e) => tracing::warn!(error = %e, "sweeping the audit log failed"),
    }
}

/// How often the background sweeper runs.
pub const SWEEP_EVERY: Duration = Duration::from_secs(60);

/// One pass of the background sweeper: drops expired sessions, ceremonies and connect
/// codes, resets the live-ceremony count from the store, forgets throttled addresses
/// whose state is back to fresh, and the limiter state of idle grants.
pub async fn sweep_once(state: &AppState) -> keygate_store::Swept {
    let swept = state
        .store
        .sweep_expired(
            state.clock.now(),
            state.config.session_idle_timeout.as_secs(),
            state.config.session_absolute_timeout.as_secs(),
        )
        .await
        .unwrap_or_else(|e| {
            tracing::warn!(error = %e, "sweeping expired records failed");
            keygate_store::Swept::default()
        });
    sweep_audit(state).await;
    state.throttles.ceremonies.recount(&state.store).await;
    state.throttles.retain_recent();
    state.limiter.forget_idle();
    if swept != keygate_store::Swept::default() {
        tracing::debug!(?swept, "swept expired records");
    }
    swept
}
