//! Building and running the application (zero2prod's `Application`): bind first, so a
//! test can ask for port 0 and read back the real port; then serve until stopped.

use std::net::TcpListener;
use std::time::Duration;

use actix_web::dev::Server;
use actix_web::middleware::from_fn;
use actix_web::{App, HttpServer, web};
use keygate_core::keyring::Keyring;
use keygate_store::{Store, StoreOptions};
use thiserror::Error;

use crate::config::Config;
use crate::keyfile::{self, KeyFileError};
use crate::state::AppState;
use crate::{request_id, routes, upstream};

/// keygate's own JSON bodies (admin API, later the vault API) are small.
const MAX_API_JSON_BYTES: usize = 64 * 1024;

#[derive(Debug, Error)]
pub enum StartError {
    #[error("data directory {path}: {source}")]
    DataDir {
        path: String,
        source: std::io::Error,
    },
    #[error(transparent)]
    KeyFile(#[from] KeyFileError),
    #[error("store: {0}")]
    Store(#[from] keygate_store::StoreError),
    #[error("could not listen on {addr}: {source}")]
    Bind {
        addr: String,
        source: std::io::Error,
    },
    #[error("upstream client: {0}")]
    Upstream(#[from] reqwest::Error),
}

pub struct Application {
    port: u16,
    server: Server,
    state: AppState,
}

impl Application {
    /// Opens the store, loads the keyring, binds the port. Nothing is served until
    /// [`Application::run_until_stopped`].
    pub fn build(config: Config) -> Result<Self, StartError> {
        keyfile::create_private_dir(&config.data_dir).map_err(|source| StartError::DataDir {
            path: config.data_dir.display().to_string(),
            source,
        })?;
        let keyring = keyfile::load_or_create(&config)?;
        Self::build_with_keyring(config, keyring)
    }

    pub fn build_with_keyring(mut config: Config, keyring: Keyring) -> Result<Self, StartError> {
        let store = Store::open(
            &keyfile::store_path(&config.data_dir),
            &StoreOptions {
                cache_capacity: config.store_cache_bytes,
            },
        )?;
        let listener = TcpListener::bind(config.listen).map_err(|source| StartError::Bind {
            addr: config.listen.to_string(),
            source,
        })?;
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
        let state = AppState::new(config, store, keyring, client);
        tracing::info!(
            port,
            kids = ?state.keyring.kids().collect::<Vec<_>>(),
            base_url = %state.config.base_url(),
            upstream = %state.config.upstream_url,
            admin_api = state.admin_enabled(),
            "keygate ready"
        );
        if let Some(why) = state.passkeys.unavailable_reason() {
            tracing::warn!("passkeys are disabled: {why}");
        }
        let data = web::Data::new(state.clone());
        let mut server = HttpServer::new(move || {
            App::new()
                .wrap(from_fn(request_id::middleware))
                .app_data(data.clone())
                .configure(|cfg| routes::configure(cfg, MAX_API_JSON_BYTES))
        })
        .on_connect(|conn, _ext| {
            // Small SSE events must leave as soon as they are written.
            if let Some(tcp) = conn.downcast_ref::<actix_web::rt::net::TcpStream>() {
                let _ = tcp.set_nodelay(true);
            }
        })
        // A client that closes its side has gone away: drop its response, and with it
        // the upstream request, even while the upstream is silent (nothing to write
        // would otherwise reveal the disconnect until the idle timeout).
        .h1_allow_half_closed(false)
        .shutdown_timeout(shutdown.as_secs().max(1))
        .listen(listener)
        .map_err(|source| StartError::Bind {
            addr: format!("port {port}"),
            source,
        })?;
        if let Some(n) = workers {
            server = server.workers(n);
        }
        Ok(Self {
            port,
            server: server.run(),
            state,
        })
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
    /// last-used times and flushes the store.
    pub async fn run_until_stopped(self) -> std::io::Result<()> {
        let flusher = self
            .state
            .last_used
            .spawn_flusher(self.state.store.clone(), Duration::from_secs(1));
        let sweeper = spawn_sweeper(&self.state);
        let resealer = {
            let (store, keyring) = (self.state.store.clone(), self.state.keyring.clone());
            tokio::spawn(async move {
                if let Err(e) = crate::services::vault::reseal_all(&store, &keyring).await {
                    tracing::error!(error = %e, "re-sealing vault records failed");
                }
            })
        };
        let result = self.server.await;
        // Abort the background tasks and wait until they are gone: each holds a store
        // handle, and sled's lock is released only when the last handle drops.
        for task in [flusher, sweeper] {
            task.abort();
            let _ = task.await;
        }
        // The re-seal pass is short and bounded: let it finish rather than stop halfway.
        let _ = resealer.await;
        self.state.last_used.write_to(&self.state.store);
        if let Err(e) = self.state.store.flush().await {
            tracing::error!(error = %e, "final store flush failed");
        }
        tracing::info!("keygate stopped");
        result
    }
}

/// Drops expired sessions and ceremonies once a minute.
fn spawn_sweeper(state: &AppState) -> tokio::task::JoinHandle<()> {
    let store = state.store.clone();
    let idle = state.config.session_idle_timeout.as_secs();
    let absolute = state.config.session_absolute_timeout.as_secs();
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_secs(60));
        loop {
            tick.tick().await;
            let now = keygate_core::time::now();
            if let Err(e) = store.sweep_sessions(now, idle, absolute) {
                tracing::warn!(error = %e, "session sweep failed");
            }
            if let Err(e) = store.sweep_ceremonies(now) {
                tracing::warn!(error = %e, "ceremony sweep failed");
            }
        }
    })
}
