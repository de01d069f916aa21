//! `keygate admin`: the real binary against a live keygate (the testkit's server on a
//! port, real sled). Every verb in a table and in `--json`, and its failures: each is a
//! non-zero exit with exactly one line on stderr, `keygate: …`, and the admin key never
//! appears in any output.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

#[path = "../common/mod.rs"]
mod common;

mod audit_operator;
mod errors;
mod grants;
mod help;
mod keys;
mod reports;
mod users;

use std::io::Write;
use std::process::Stdio;

use keygate_testkit::{ADMIN_KEY, TestApp};
use serde_json::Value;

/// What one run of `keygate admin …` did.
pub struct Run {
    pub args: Vec<String>,
    pub success: bool,
    pub stdout: String,
    pub stderr: String,
}

/// How to run it: against which server, with which key, what on stdin.
pub struct Cli {
    url: String,
    envs: Vec<(String, String)>,
    stdin: Option<String>,
    /// Secrets that must never be printed by this run.
    secrets: Vec<String>,
}

impl Cli {
    /// Against `app`, with the bootstrap admin key in `KEYGATE_ADMIN_KEY`.
    pub fn new(app: &TestApp) -> Self {
        Self::at(&app.local_address).env("KEYGATE_ADMIN_KEY", ADMIN_KEY)
    }

    /// Against `url`, with no key at all.
    pub fn at(url: &str) -> Self {
        Self {
            url: url.to_owned(),
            envs: Vec::new(),
            stdin: None,
            secrets: vec![ADMIN_KEY.to_owned()],
        }
    }

    pub fn env(mut self, k: &str, v: &str) -> Self {
        self.envs.retain(|(name, _)| name != k);
        self.envs.push((k.to_owned(), v.to_owned()));
        if k == "KEYGATE_ADMIN_KEY" && !v.is_empty() {
            self.secrets.push(v.to_owned());
        }
        self
    }

    pub fn without_env(mut self, k: &str) -> Self {
        self.envs.retain(|(name, _)| name != k);
        self
    }

    /// Another key in `KEYGATE_ADMIN_KEY` (also never to be printed).
    pub fn key(self, key: &str) -> Self {
        self.env("KEYGATE_ADMIN_KEY", key)
    }

    /// Something else this run must never print (e.g. a key given on stdin).
    pub fn secret(mut self, s: &str) -> Self {
        self.secrets.push(s.to_owned());
        self
    }

    pub fn stdin(mut self, text: &str) -> Self {
        self.stdin = Some(text.to_owned());
        self
    }

    /// Runs `keygate admin --url URL ARGS…` off the async runtime (the server under
    /// test runs on it).
    pub async fn run(&self, args: &[&str]) -> Run {
        let mut cmd = common::keygate();
        cmd.arg("admin").arg("--url").arg(&self.url).args(args);
        for (k, v) in &self.envs {
            cmd.env(k, v);
        }
        cmd.stdout(Stdio::piped()).stderr(Stdio::piped());
        cmd.stdin(if self.stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        });
        let stdin = self.stdin.clone();
        let output = tokio::task::spawn_blocking(move || {
            let mut child = cmd.spawn().expect("keygate runs");
            if let Some(text) = stdin {
                let mut pipe = child.stdin.take().unwrap();
                pipe.write_all(text.as_bytes()).unwrap();
            }
            child.wait_with_output().unwrap()
        })
        .await
        .unwrap();
        let run = Run {
            args: args.iter().map(|a| (*a).to_owned()).collect(),
            success: output.status.success(),
            stdout: String::from_utf8(output.stdout).unwrap(),
            stderr: String::from_utf8(output.stderr).unwrap(),
        };
        for secret in &self.secrets {
            assert!(
                !run.stdout.contains(secret) && !run.stderr.contains(secret),
                "{:?} printed the admin key",
                run.args
            );
        }
        run
    }

    /// Runs and expects success; returns stdout.
    pub async fn ok(&self, args: &[&str]) -> String {
        self.run(args).await.ok()
    }

    /// Runs with `--json` and expects success; returns the parsed output.
    pub async fn json(&self, args: &[&str]) -> Value {
        let mut with = args.to_vec();
        with.push("--json");
        let out = self.ok(&with).await;
        serde_json::from_str(&out).unwrap_or_else(|e| panic!("{with:?}: {e}: {out}"))
    }

    /// Runs and expects failure; returns the one error line.
    pub async fn fails(&self, args: &[&str]) -> String {
        self.run(args).await.fails()
    }
}

impl Run {
    pub fn ok(self) -> String {
        assert!(
            self.success,
            "{:?} failed: {}{}",
            self.args, self.stderr, self.stdout
        );
        assert!(self.stderr.is_empty(), "{:?}: {}", self.args, self.stderr);
        self.stdout
    }

    /// A failure: non-zero exit, nothing on stdout, one line `keygate: …` on stderr.
    pub fn fails(self) -> String {
        assert!(!self.success, "{:?} succeeded: {}", self.args, self.stdout);
        assert!(self.stdout.is_empty(), "{:?}: {}", self.args, self.stdout);
        let lines: Vec<&str> = self.stderr.lines().collect();
        assert_eq!(
            lines.len(),
            1,
            "{:?}: not one line: {}",
            self.args,
            self.stderr
        );
        assert!(
            lines[0].starts_with("keygate: "),
            "{:?}: {}",
            self.args,
            lines[0]
        );
        lines[0].to_owned()
    }
}

/// The table line that holds `needle`.
pub fn line_with<'a>(table: &'a str, needle: &str) -> &'a str {
    table
        .lines()
        .find(|l| l.contains(needle))
        .unwrap_or_else(|| panic!("no line with {needle:?} in:\n{table}"))
}

/// The value of a `field  value` line of a one-object table.
pub fn field<'a>(table: &'a str, name: &str) -> &'a str {
    table
        .lines()
        .find_map(|l| {
            l.strip_prefix(name)
                .filter(|rest| rest.starts_with("  "))
                .map(str::trim)
        })
        .unwrap_or_else(|| panic!("no field {name:?} in:\n{table}"))
}

pub fn ids(list: &Value) -> Vec<String> {
    list.as_array()
        .unwrap()
        .iter()
        .map(|i| i["id"].as_str().unwrap().to_owned())
        .collect()
}
