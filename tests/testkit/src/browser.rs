//! A minimal stand-in for a browser talking to keygate's `/api`: a cookie jar, the
//! `Origin` header browsers send on state-changing requests, and a soft passkey.

use reqwest::{Method, Response};
use serde_json::{Value, json};

use crate::soft_passkey::SoftPasskey;

pub struct Browser {
    pub client: reqwest::Client,
    /// keygate's public URL, also this browser's `Origin`.
    pub origin: String,
    /// Where requests go: `origin`, unless [`Browser::via`] points the browser at one
    /// node of a cluster (behind a load balancer, the public URL and the node differ).
    pub base: String,
    pub passkey: SoftPasskey,
    /// The `User-Agent` this browser sends (none by default).
    pub user_agent: Option<String>,
}

impl Browser {
    pub fn new(origin: &str) -> Self {
        Self {
            client: reqwest::Client::builder()
                .cookie_store(true)
                // Below keygate's 5 s keep-alive: an idle pooled connection is never
                // reused just as keygate closes it ("connection closed before message
                // completed" — seen once in the cluster harness).
                .pool_idle_timeout(std::time::Duration::from_secs(2))
                .redirect(reqwest::redirect::Policy::none())
                .build()
                .expect("client"),
            origin: origin.to_owned(),
            base: origin.to_owned(),
            passkey: SoftPasskey::new(origin),
            user_agent: None,
        }
    }

    /// Another browser (new cookie jar) carrying the same authenticator.
    pub fn with_same_passkey(&self) -> Self {
        let mut b = Self::new(&self.origin);
        b.base.clone_from(&self.base);
        b.passkey = self.passkey.clone();
        b
    }

    /// Sends the next requests to `base` (a node's `http://localhost:PORT`), keeping
    /// this browser's `Origin`, cookie jar and passkey: as a load balancer would route
    /// them. Cookies are per host, not per port, so they follow to every `localhost`
    /// node.
    pub fn via(&mut self, base: &str) -> &mut Self {
        base.clone_into(&mut self.base);
        self
    }

    pub fn request(&self, method: Method, path: &str) -> reqwest::RequestBuilder {
        let mut req = self
            .client
            .request(method.clone(), format!("{}{}", self.base, path));
        if let Some(ua) = &self.user_agent {
            req = req.header("user-agent", ua);
        }
        if matches!(method, Method::GET | Method::HEAD) {
            req
        } else {
            req.header("origin", &self.origin)
        }
    }

    pub async fn get(&self, path: &str) -> Response {
        self.request(Method::GET, path)
            .send()
            .await
            .expect("request")
    }

    pub async fn send(&self, method: Method, path: &str, body: Value) -> Response {
        self.request(method, path)
            .json(&body)
            .send()
            .await
            .expect("request")
    }

    pub async fn post(&self, path: &str, body: Value) -> Response {
        self.send(Method::POST, path, body).await
    }

    async fn start(&self, path: &str, body: Value) -> Value {
        let res = self.post(path, body).await;
        assert_eq!(res.status(), 200, "{path}");
        res.json().await.expect("json")
    }

    /// A ceremony start that reports instead of panicking (see [`Browser::try_register`]).
    async fn try_start(&self, path: &str, body: Value) -> Result<Value, String> {
        let res = self
            .request(Method::POST, path)
            .json(&body)
            .send()
            .await
            .map_err(|e| format!("{path}: {e}"))?;
        if res.status() != 200 {
            return Err(format!("{path}: status {}", res.status()));
        }
        res.json().await.map_err(|e| format!("{path}: {e}"))
    }

    /// Registers a new person with this browser's passkey; returns the finish response.
    pub async fn register(&mut self, name: &str) -> Response {
        self.try_register(name).await.expect("register")
    }

    /// Like [`Browser::register`], but an unreachable keygate or a refused start is an
    /// `Err` instead of a panic: for harnesses that kill keygate mid-request
    /// (tests/durability) and must tell "not acknowledged" from a failure.
    pub async fn try_register(&mut self, name: &str) -> Result<Response, String> {
        let started = self
            .try_start("/api/auth/register/start", json!({ "name": name }))
            .await?;
        let credential = self
            .passkey
            .create(&started["options"])
            .map_err(|e| format!("authenticator create: {e}"))?;
        self.request(Method::POST, "/api/auth/register/finish")
            .json(&json!({"ceremony": started["ceremony"], "credential": credential}))
            .send()
            .await
            .map_err(|e| format!("/api/auth/register/finish: {e}"))
    }

    /// Registers and asserts success; returns the user JSON.
    pub async fn signed_up(&mut self, name: &str) -> Value {
        let res = self.register(name).await;
        assert_eq!(res.status(), 201, "register");
        let v: Value = res.json().await.expect("json");
        v["user"].clone()
    }

    /// Usernameless sign-in with this browser's passkey.
    pub async fn login(&mut self) -> Response {
        let started = self.start("/api/auth/login/start", json!({})).await;
        let credential = self
            .passkey
            .get(&started["options"])
            .expect("authenticator get");
        self.post(
            "/api/auth/login/finish",
            json!({"ceremony": started["ceremony"], "credential": credential}),
        )
        .await
    }

    /// A fresh passkey assertion for the signed-in person (step-up).
    pub async fn reauth(&mut self) -> Response {
        self.try_reauth().await.expect("reauth")
    }

    /// Like [`Browser::reauth`], with failures as `Err` (see [`Browser::try_register`]).
    pub async fn try_reauth(&mut self) -> Result<Response, String> {
        let started = self.try_start("/api/auth/reauth/start", json!({})).await?;
        let credential = self
            .passkey
            .get(&started["options"])
            .map_err(|e| format!("authenticator get: {e}"))?;
        self.request(Method::POST, "/api/auth/reauth/finish")
            .json(&json!({"ceremony": started["ceremony"], "credential": credential}))
            .send()
            .await
            .map_err(|e| format!("/api/auth/reauth/finish: {e}"))
    }

    /// Adds a passkey from `device` to the signed-in person.
    pub async fn add_passkey(&self, device: &mut SoftPasskey, name: Option<&str>) -> Response {
        let started = self.start("/api/passkeys/start", json!({})).await;
        let credential = device
            .create(&started["options"])
            .expect("authenticator create");
        let mut body = json!({"ceremony": started["ceremony"], "credential": credential});
        if let Some(n) = name {
            body["name"] = json!(n);
        }
        self.post("/api/passkeys/finish", body).await
    }
}
