//! Runs the built `keygate` binary (CARGO_BIN_EXE_keygate) as a child process.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

pub const ADMIN_KEY: &str = "cli-test-admin-key-0123456789-abcdef";

pub fn keygate() -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_keygate"));
    // Only what each test sets; no stray KEYGATE_* from the developer's shell.
    for (k, _) in std::env::vars() {
        if k.starts_with("KEYGATE_") {
            cmd.env_remove(k);
        }
    }
    cmd
}

pub fn run(args: &[&str], envs: &[(&str, &str)]) -> Output {
    let mut cmd = keygate();
    cmd.args(args).stdin(Stdio::null());
    for (k, v) in envs {
        cmd.env(k, v);
    }
    cmd.output().expect("keygate runs")
}

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

pub struct Server {
    pub child: Child,
    pub address: String,
    pub log: PathBuf,
}

/// `keygate serve` with stderr/stdout going to `log`; waits until `/healthz` answers.
pub async fn serve(
    data_dir: &Path,
    upstream: &str,
    log: PathBuf,
    extra: &[(&str, &str)],
) -> Server {
    let port = free_port();
    let file = std::fs::File::create(&log).unwrap();
    let mut cmd = keygate();
    cmd.arg("serve")
        .env("KEYGATE_DATA_DIR", data_dir)
        .env("KEYGATE_LISTEN", format!("127.0.0.1:{port}"))
        .env("KEYGATE_UPSTREAM_URL", upstream)
        .env("KEYGATE_ADMIN_KEY", ADMIN_KEY)
        .env("KEYGATE_SHUTDOWN_TIMEOUT_SECS", "10")
        // The mock upstream's scenario knobs travel as request headers through keygate.
        .env(
            "KEYGATE_FORWARD_HEADERS",
            keygate_testkit::MOCK_FORWARD_HEADERS,
        )
        .stdin(Stdio::null())
        .stdout(file.try_clone().unwrap())
        .stderr(file);
    for (k, v) in extra {
        cmd.env(k, v);
    }
    let child = cmd.spawn().expect("spawn keygate serve");
    let address = format!("http://127.0.0.1:{port}");
    let deadline = Instant::now() + Duration::from_secs(30);
    let client = reqwest::Client::new();
    loop {
        if client
            .get(format!("{address}/healthz"))
            .send()
            .await
            .is_ok()
        {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "keygate did not start: {}",
            std::fs::read_to_string(&log).unwrap_or_default()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Server {
        child,
        address,
        log,
    }
}

/// `keygate serve` at `http://localhost:PORT` (so passkeys work) with stdout and stderr
/// in two files under `dir`; waits until `/healthz` answers. Returns the stdout file.
pub async fn serve_split(
    dir: &std::path::Path,
    envs: &[(&str, &str)],
) -> (Server, std::path::PathBuf) {
    let port = free_port();
    let stdout = dir.join(format!("stdout-{port}"));
    let log = dir.join(format!("stderr-{port}"));
    let mut cmd = keygate();
    cmd.arg("serve")
        .env("KEYGATE_LISTEN", format!("127.0.0.1:{port}"))
        .env("KEYGATE_PUBLIC_URL", format!("http://localhost:{port}"))
        .env("KEYGATE_UPSTREAM_URL", "http://127.0.0.1:1/v1")
        .stdin(std::process::Stdio::null())
        .stdout(std::fs::File::create(&stdout).unwrap())
        .stderr(std::fs::File::create(&log).unwrap());
    for (k, v) in envs {
        cmd.env(k, v);
    }
    let child = cmd.spawn().unwrap();
    let address = format!("http://127.0.0.1:{port}");
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while reqwest::get(format!("{address}/healthz")).await.is_err() {
        assert!(
            std::time::Instant::now() < deadline,
            "keygate did not start: {}",
            std::fs::read_to_string(&log).unwrap_or_default()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    (
        Server {
            child,
            address,
            log,
        },
        stdout,
    )
}

impl Server {
    /// SIGTERM, then wait; returns whether it exited successfully.
    pub fn terminate(&mut self) -> bool {
        let status = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(status.success());
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status.success();
            }
            if Instant::now() > deadline {
                let _ = self.child.kill();
                return false;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A person with `openai_key` stored and a grant, through the admin API of the keygate
/// at `address`; returns the grant's API key.
pub async fn person(address: &str, openai_key: &str) -> String {
    use serde_json::{Value, json};
    let http = reqwest::Client::new();
    let admin = |m: reqwest::Method, p: &str| {
        http.request(m, format!("{address}{p}"))
            .bearer_auth(ADMIN_KEY)
    };
    let user: Value = admin(reqwest::Method::POST, "/admin/users")
        .json(&json!({"name": "Ada"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let id = user["id"].as_str().unwrap();
    let res = admin(
        reqwest::Method::PUT,
        &format!("/admin/users/{id}/openai-key"),
    )
    .json(&json!({"api_key": openai_key}))
    .send()
    .await
    .unwrap();
    assert_eq!(res.status(), 204);
    let grant: Value = admin(reqwest::Method::POST, &format!("/admin/users/{id}/grants"))
        .json(&json!({"name": "app"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    grant["api_key"].as_str().unwrap().to_owned()
}
