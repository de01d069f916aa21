//! `spawn_app`: the real keygate `Application` on port 0, with its own temp data dir
//! and its own mock OpenAI upstream, plus a client with one method per endpoint.

use std::sync::Once;

use keygate_core::time::Clock;
use keygate_server::config::RawConfig;
use keygate_server::{Application, Config};
use serde_json::{Value, json};
use tempfile::TempDir;

use crate::mock_openai::MockOpenAi;

/// At least 32 characters, the minimum admin key length.
pub const ADMIN_KEY: &str = "test-admin-key-0123456789abcdef-0123";
/// The mock upstream's knob headers, forwarded by keygate in tests (`forward_headers`).
pub const MOCK_FORWARD_HEADERS: &str = "x-mock-scenario, x-mock-delay-ms, x-mock-completion-tokens";
/// A fake OpenAI key whose every occurrence can be searched for.
pub const FAKE_OPENAI_KEY: &str = "sk-test-keygate-fake-key-0000000000000000WXYZ";

pub struct TestApp {
    /// keygate's public URL: `http://localhost:PORT` unless a test set another.
    pub address: String,
    /// `http://127.0.0.1:PORT`: where the socket really is.
    pub local_address: String,
    pub port: u16,
    /// `address + "/v1"`: what apps configure as `baseURL`.
    pub base_url: String,
    pub client: reqwest::Client,
    pub mock: MockOpenAi,
    pub data_dir: TempDir,
    /// The running server's state (its store, throttles), for tests that look inside.
    pub state: keygate_server::state::AppState,
    /// The server's clock: the system clock, or the manual one given to
    /// [`spawn_app_with_clock`], which the test moves with `advance`/`set`.
    pub clock: Clock,
    handle: actix_web::dev::ServerHandle,
    server: Option<tokio::task::JoinHandle<std::io::Result<()>>>,
}

/// A person with a stored OpenAI key and one grant.
pub struct TestGrant {
    pub user_id: String,
    pub grant_id: String,
    pub api_key: String,
}

static TRACING: Once = Once::new();

fn init_tracing() {
    TRACING.call_once(|| {
        if std::env::var_os("TEST_LOG").is_some() {
            keygate_server::telemetry::init(
                keygate_server::config::LogFormat::Text,
                std::io::stderr,
                false,
            );
        }
    });
}

pub async fn spawn_app() -> TestApp {
    spawn_app_with(|_| {}).await
}

/// Like [`spawn_app`], letting the test adjust the configuration first.
pub async fn spawn_app_with(adjust: impl FnOnce(&mut RawConfig)) -> TestApp {
    spawn_app_with_clock(Clock::system(), adjust).await
}

/// A manual clock standing at the real time, for [`spawn_app_with_clock`].
pub fn manual_clock() -> Clock {
    Clock::manual(keygate_core::time::now())
}

/// Like [`spawn_app_with`], with the server reading "now" from `clock` (a manual one
/// lets a test cross expiry times without sleeping: `app.clock.advance(secs)`).
pub async fn spawn_app_with_clock(clock: Clock, adjust: impl FnOnce(&mut RawConfig)) -> TestApp {
    init_tracing();
    let mock = MockOpenAi::start().await;
    let data_dir = tempfile::tempdir().expect("temp dir");
    // A known port, so the public URL can be `http://localhost:PORT`: a host that can
    // be a WebAuthn rp id (an IP address cannot).
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port")
        .port();
    let mut raw = RawConfig {
        data_dir: Some(data_dir.path().to_path_buf()),
        listen: Some(format!("127.0.0.1:{port}")),
        public_url: Some(format!("http://localhost:{port}")),
        upstream_url: Some(mock.base_url()),
        admin_key: Some(ADMIN_KEY.into()),
        workers: Some(1),
        shutdown_timeout_secs: Some(1),
        // The mock upstream's scenario knobs travel as request headers through keygate.
        forward_headers: Some(MOCK_FORWARD_HEADERS.into()),
        ..RawConfig::default()
    };
    adjust(&mut raw);
    let app = build_when_store_free(raw, &clock).await;
    let port = app.port();
    let handle = app.handle();
    let public = app.state().config.public_url.clone();
    let state = app.state().clone();
    let server = tokio::spawn(app.run_until_stopped());
    let address = public.as_str().trim_end_matches('/').to_owned();
    TestApp {
        local_address: format!("http://127.0.0.1:{port}"),
        base_url: format!("{address}/v1"),
        address,
        port,
        client: reqwest::Client::builder()
            // Below keygate's 5 s keep-alive, as `Browser`'s.
            .pool_idle_timeout(std::time::Duration::from_secs(2))
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .expect("client"),
        mock,
        data_dir,
        state,
        clock,
        handle,
        server: Some(server),
    }
}

/// Builds the application, waiting (≤ 10 s) while the data dir's store is still locked:
/// a test restarting on the same directory may run while the previous server's worker
/// threads are still dropping their handles, after its server future has resolved. A
/// real restart is a new process and never sees this.
async fn build_when_store_free(raw: RawConfig, clock: &Clock) -> Application {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let mut config: Config = raw.clone().validate().expect("valid test config");
        config.clock = clock.clone();
        match Application::build(config).await {
            Ok(app) => return app,
            Err(keygate_server::app::StartError::Store(keygate_store::StoreError::Locked {
                ..
            })) if std::time::Instant::now() < deadline => {
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
            }
            Err(e) => panic!("application builds: {e}"),
        }
    }
}

/// Opens the store of a stopped test app's data directory, waiting (up to 10 s) for the
/// previous server's handles to drop, as [`build_when_store_free`] does.
pub async fn open_store_when_free(data_dir: &std::path::Path) -> keygate_store::Store {
    let path = keygate_server::keyfile::store_path(data_dir);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        match keygate_store::Store::open(&path, &keygate_store::StoreOptions::default()) {
            Ok(store) => return store,
            Err(keygate_store::StoreError::Locked { .. })
                if std::time::Instant::now() < deadline =>
            {
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
            }
            Err(e) => panic!("store opens: {e}"),
        }
    }
}

impl TestApp {
    /// A fresh "browser": its own cookie jar and its own passkey authenticator.
    pub fn browser(&self) -> crate::browser::Browser {
        crate::browser::Browser::new(&self.address)
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.address, path)
    }

    pub fn admin(&self, method: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
        self.client
            .request(method, self.url(path))
            .bearer_auth(ADMIN_KEY)
    }

    pub async fn create_user(&self, name: &str) -> String {
        let res = self
            .admin(reqwest::Method::POST, "/admin/users")
            .json(&json!({ "name": name }))
            .send()
            .await
            .expect("request");
        assert_eq!(res.status(), 201, "create user");
        let v: Value = res.json().await.expect("json");
        v["id"].as_str().expect("id").to_owned()
    }

    pub async fn put_openai_key(&self, user_id: &str, key: &str) -> reqwest::Response {
        self.admin(
            reqwest::Method::PUT,
            &format!("/admin/users/{user_id}/openai-key"),
        )
        .json(&json!({ "api_key": key }))
        .send()
        .await
        .expect("request")
    }

    pub async fn create_grant(&self, user_id: &str, name: &str, models: Option<&[&str]>) -> Value {
        let mut body = json!({ "name": name });
        if let Some(m) = models {
            body["models"] = json!(m);
        }
        self.create_grant_with(user_id, &body).await
    }

    /// `POST /admin/users/{id}/grants` with this body; asserts 201.
    pub async fn create_grant_with(&self, user_id: &str, body: &Value) -> Value {
        let res = self
            .admin(
                reqwest::Method::POST,
                &format!("/admin/users/{user_id}/grants"),
            )
            .json(body)
            .send()
            .await
            .expect("request");
        assert_eq!(res.status(), 201, "create grant");
        res.json().await.expect("json")
    }

    pub async fn revoke(&self, grant_id: &str) -> reqwest::Response {
        self.admin(
            reqwest::Method::DELETE,
            &format!("/admin/grants/{grant_id}"),
        )
        .send()
        .await
        .expect("request")
    }

    /// A new person with [`FAKE_OPENAI_KEY`] stored and a grant (all models, or `models`).
    pub async fn enrolled_grant(&self, models: Option<&[&str]>) -> TestGrant {
        let user_id = self.create_user("Test Person").await;
        assert_eq!(
            self.put_openai_key(&user_id, FAKE_OPENAI_KEY)
                .await
                .status(),
            204
        );
        let created = self.create_grant(&user_id, "test app", models).await;
        TestGrant {
            user_id,
            grant_id: created["grant"]["id"]
                .as_str()
                .expect("grant id")
                .to_owned(),
            api_key: created["api_key"].as_str().expect("api key").to_owned(),
        }
    }

    /// Like [`TestApp::enrolled_grant`], with these endpoint scopes (all models).
    pub async fn enrolled_grant_with_scopes(&self, scopes: &[&str]) -> TestGrant {
        self.enrolled_grant_with(&json!({"name": "test app", "scopes": scopes}))
            .await
    }

    /// A new person with [`FAKE_OPENAI_KEY`] stored and a grant made from `grant_body`
    /// (the JSON of `POST /admin/users/{id}/grants`).
    pub async fn enrolled_grant_with(&self, grant_body: &Value) -> TestGrant {
        let user_id = self.create_user("Test Person").await;
        assert_eq!(
            self.put_openai_key(&user_id, FAKE_OPENAI_KEY)
                .await
                .status(),
            204
        );
        let created = self.create_grant_with(&user_id, grant_body).await;
        TestGrant {
            user_id,
            grant_id: created["grant"]["id"]
                .as_str()
                .expect("grant id")
                .to_owned(),
            api_key: created["api_key"].as_str().expect("api key").to_owned(),
        }
    }

    /// A request to the proxy, `path` relative to `/v1`.
    pub fn v1(
        &self,
        method: reqwest::Method,
        path: &str,
        api_key: &str,
    ) -> reqwest::RequestBuilder {
        self.client
            .request(method, format!("{}{}", self.base_url, path))
            .bearer_auth(api_key)
    }

    pub async fn chat_completions(&self, api_key: &str, body: &Value) -> reqwest::Response {
        self.v1(reqwest::Method::POST, "/chat/completions", api_key)
            .json(body)
            .send()
            .await
            .expect("request")
    }

    /// Sets a grant's limits (and plan) straight in the store, as an operator's edit
    /// would; the proxy reads them on the next request.
    pub async fn set_limits(&self, grant_id: &str, limits: Value, plan: Option<&str>) {
        let limits: keygate_core::limits::Limits =
            serde_json::from_value(limits).expect("limits JSON");
        limits.validate().expect("valid limits");
        let id = keygate_core::ids::GrantId::parse(grant_id).expect("grant id");
        self.state
            .store
            .update_grant(&id, &|g| {
                g.limits = limits.clone();
                g.plan = plan.map(str::to_owned);
            })
            .await
            .expect("store")
            .expect("grant exists");
    }

    /// A new person with a key and a grant with these limits (all models).
    pub async fn limited_grant(&self, limits: Value) -> TestGrant {
        let g = self.enrolled_grant(None).await;
        self.set_limits(&g.grant_id, limits, None).await;
        g
    }

    /// `GET /v1/key` with the grant's key.
    pub async fn key_info(&self, api_key: &str) -> Value {
        let res = self
            .v1(reqwest::Method::GET, "/key", api_key)
            .send()
            .await
            .expect("request");
        assert_eq!(res.status(), 200, "GET /v1/key");
        res.json().await.expect("json")
    }

    /// `GET /admin/grants/{id}/usage` (with `query`, e.g. `?from=2026-11-01`).
    pub async fn usage(&self, grant_id: &str, query: &str) -> Value {
        let res = self
            .admin(
                reqwest::Method::GET,
                &format!("/admin/grants/{grant_id}/usage{query}"),
            )
            .send()
            .await
            .expect("request");
        assert_eq!(res.status(), 200, "usage report");
        res.json().await.expect("json")
    }

    /// Stops the server gracefully and waits for it (store flushed, sled lock
    /// released); hands back the data dir so a test can start again on it.
    pub async fn stop(mut self) -> TempDir {
        self.handle.stop(true).await;
        if let Some(server) = self.server.take() {
            let _ = server.await;
        }
        let empty = tempfile::tempdir().expect("temp dir");
        std::mem::replace(&mut self.data_dir, empty)
    }
}

impl Drop for TestApp {
    fn drop(&mut self) {
        let handle = self.handle.clone();
        if let Ok(rt) = tokio::runtime::Handle::try_current() {
            rt.spawn(async move { handle.stop(false).await });
        }
    }
}
