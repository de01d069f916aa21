//! The real `keygate` binary as a child process: started on a data directory, waited
//! for, killed with SIGKILL or stopped with SIGTERM.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

/// The admin key every harness start configures (≥ 32 characters).
pub const ADMIN_KEY: &str = "durability-admin-key-0123456789-abcdef";

/// The `keygate` executable: `KG_KEYGATE_BIN`, else the one cargo built next to this
/// harness (same target directory and profile; one level up when the harness runs as
/// a test from `deps/`).
pub fn binary() -> Result<PathBuf> {
    if let Some(bin) = std::env::var_os("KG_KEYGATE_BIN") {
        return Ok(PathBuf::from(bin));
    }
    let me = std::env::current_exe().context("where is this harness")?;
    let dir = me.parent().context("the harness has no directory")?;
    let bin = [dir.join("keygate"), dir.join("../keygate")]
        .into_iter()
        .find(|b| b.is_file())
        .unwrap_or_else(|| dir.join("keygate"));
    if !bin.is_file() {
        bail!(
            "no keygate binary at {}: build it first (cargo build -p keygate) or set KG_KEYGATE_BIN",
            bin.display()
        );
    }
    Ok(bin)
}

/// A free loopback port, kept for every start of a run: the public URL (and so the
/// passkeys' origin and the browsers' cookies) must not change across restarts.
pub fn free_port() -> Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

/// How to start keygate; [`Launch::spawn`] may be called once per restart.
pub struct Launch {
    pub bin: PathBuf,
    pub data_dir: PathBuf,
    pub port: u16,
    pub upstream: String,
    pub rust_log: String,
    /// stdout and stderr of every start go here (appended).
    pub log: PathBuf,
    pub env: Vec<(String, String)>,
    /// The public URL, when it is not the node's own `http://localhost:PORT`: several
    /// nodes behind one (load balancer's) address share it (cluster mode).
    pub public: Option<String>,
}

impl Launch {
    /// `http://localhost:PORT`: keygate's public URL (WebAuthn needs a host name).
    pub fn public_url(&self) -> String {
        self.public.clone().unwrap_or_else(|| self.node_url())
    }

    /// `http://localhost:PORT`: the node itself, by a host name its browsers' cookies
    /// go to (the public URL's host, whatever its port).
    pub fn node_url(&self) -> String {
        format!("http://localhost:{}", self.port)
    }

    /// `http://127.0.0.1:PORT`: where the harness's own client connects.
    pub fn local_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    pub fn spawn(&self) -> Result<Keygate> {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .with_context(|| format!("open {}", self.log.display()))?;
        let mut cmd = Command::new(&self.bin);
        // Only what the harness sets: no stray KEYGATE_* from the caller's shell.
        for (k, _) in std::env::vars() {
            if k.starts_with("KEYGATE_") {
                cmd.env_remove(k);
            }
        }
        cmd.arg("serve")
            .env("KEYGATE_DATA_DIR", &self.data_dir)
            .env("KEYGATE_LISTEN", format!("127.0.0.1:{}", self.port))
            .env("KEYGATE_PUBLIC_URL", self.public_url())
            .env("KEYGATE_UPSTREAM_URL", &self.upstream)
            .env("KEYGATE_ADMIN_KEY", ADMIN_KEY)
            .env(
                "KEYGATE_FORWARD_HEADERS",
                keygate_testkit::MOCK_FORWARD_HEADERS,
            )
            .env("RUST_LOG", &self.rust_log)
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log);
        for (k, v) in &self.env {
            cmd.env(k, v);
        }
        let child = cmd
            .spawn()
            .with_context(|| format!("start {}", self.bin.display()))?;
        Ok(Keygate {
            pid: child.id(),
            child,
            base: self.local_url(),
            log: self.log.clone(),
        })
    }
}

/// A running (or dead) keygate process. Dropping it kills it.
pub struct Keygate {
    child: Child,
    pub pid: u32,
    pub base: String,
    pub log: PathBuf,
}

impl Keygate {
    /// Waits until `/readyz` answers 200 (the store opened and answers). An exit or
    /// `timeout` first is an error carrying the end of the log.
    pub async fn ready(&mut self, client: &reqwest::Client, timeout: Duration) -> Result<()> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.child.try_wait()? {
                bail!(
                    "keygate exited while starting ({status}): the store did not open?\n{}",
                    log_tail(&self.log, 40)
                );
            }
            if let Ok(res) = client.get(format!("{}/readyz", self.base)).send().await
                && res.status() == 200
            {
                return Ok(());
            }
            if Instant::now() > deadline {
                bail!(
                    "keygate not ready after {timeout:?}\n{}",
                    log_tail(&self.log, 40)
                );
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Whether the process has exited (by itself: before any kill).
    pub fn exited(&mut self) -> Result<bool> {
        Ok(self.child.try_wait()?.is_some())
    }

    /// SIGKILL, and reap it.
    pub fn kill(&mut self) -> Result<()> {
        // std's Child::kill sends SIGKILL on Unix.
        self.child.kill().context("SIGKILL keygate")?;
        self.child.wait().context("reap keygate")?;
        Ok(())
    }

    /// SIGTERM (graceful shutdown: drain, write the batched counters, flush), then waits.
    pub fn terminate(&mut self, timeout: Duration) -> Result<ExitStatus> {
        let sent = Command::new("kill")
            .args(["-TERM", &self.pid.to_string()])
            .status()
            .context("run kill -TERM")?;
        if !sent.success() {
            bail!("kill -TERM {} failed", self.pid);
        }
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.child.try_wait()? {
                return Ok(status);
            }
            if Instant::now() > deadline {
                self.kill()?;
                bail!("keygate did not stop within {timeout:?} of SIGTERM");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Keygate {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The last `n` lines of a log file (for error messages).
pub fn log_tail(path: &Path, n: usize) -> String {
    let text = std::fs::read(path).unwrap_or_default();
    let text = String::from_utf8_lossy(&text);
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}
