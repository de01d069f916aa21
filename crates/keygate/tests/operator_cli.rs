//! `keygate keys set-operator` / `clear-operator`: the operator's OpenAI key set offline
//! from standard input (never the command line), used by a server started afterwards,
//! and refused with one line pointing to the admin API while a server holds the store.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::io::Write;
use std::process::{Output, Stdio};

use common::{ADMIN_KEY, keygate, run, serve};
use keygate_testkit::mock_openai::MockOpenAi;
use serde_json::{Value, json};

const OPERATOR_KEY: &str = "sk-proj-operator-cli-key-0123456789abcdefCLIK";

/// `keygate ARGS` with `stdin` piped in.
fn run_with_stdin(args: &[&str], envs: &[(&str, &str)], stdin: &str) -> Output {
    let mut cmd = keygate();
    cmd.args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    for (k, v) in envs {
        cmd.env(k, v);
    }
    let mut child = cmd.spawn().expect("keygate runs");
    // The child may exit before reading (a locked store): a broken pipe is fine.
    let _ = child.stdin.take().unwrap().write_all(stdin.as_bytes());
    child.wait_with_output().unwrap()
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

#[tokio::test]
async fn set_operator_reads_stdin_offline_and_the_server_lends_the_key() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let config = dir.path().join("keygate.toml");
    std::fs::write(&config, "[plans.lent]\nuse_operator_key = true\n").unwrap();
    let env = [
        ("KEYGATE_DATA_DIR", data.to_str().unwrap()),
        ("KEYGATE_CONFIG", config.to_str().unwrap()),
    ];

    // No data directory yet: said, with the fix, and nothing is read or made.
    let out = run_with_stdin(&["keys", "set-operator"], &env, OPERATOR_KEY);
    assert!(!out.status.success());
    let err = text(&out.stderr);
    assert!(err.contains("keygate init"), "{err}");
    assert!(!err.contains(OPERATOR_KEY));
    assert!(run(&["init"], &env).status.success());

    // Never from the command line (refused without repeating it).
    let out = run(&["keys", "set-operator", OPERATOR_KEY], &env);
    assert!(!out.status.success());
    let err = text(&out.stderr);
    assert!(err.contains("never from the command line"), "{err}");
    assert!(!err.contains(OPERATOR_KEY), "{err}");
    // Nothing on stdin, an OpenAI admin key: refused, not echoed.
    let out = run_with_stdin(&["keys", "set-operator"], &env, "\n");
    assert!(!out.status.success());
    assert!(text(&out.stderr).contains("no key on standard input"));
    let admin = "sk-admin-0123456789abcdefghijklmnopqrstuv";
    let out = run_with_stdin(&["keys", "set-operator"], &env, admin);
    assert!(!out.status.success());
    let err = text(&out.stderr);
    assert!(
        err.starts_with("keygate: ") && err.contains("admin key"),
        "{err}"
    );
    assert!(!err.contains(admin), "{err}");

    let out = run_with_stdin(
        &["keys", "set-operator"],
        &env,
        &format!("  {OPERATOR_KEY}\n"),
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    let said = text(&out.stdout);
    assert!(
        said.contains("operator OpenAI key sealed under master key"),
        "{said}"
    );
    for stream in [&out.stdout, &out.stderr] {
        assert!(!text(stream).contains(OPERATOR_KEY));
    }

    // A server started on that data directory lends it to a person without a key.
    let mock = MockOpenAi::start().await;
    let mut server = serve(
        &data,
        &mock.base_url(),
        dir.path().join("log"),
        &[("KEYGATE_CONFIG", config.to_str().unwrap())],
    )
    .await;
    let client = reqwest::Client::new();
    let url = |p: &str| format!("{}{p}", server.address);
    let shown: Value = client
        .get(url("/admin/operator-key"))
        .bearer_auth(ADMIN_KEY)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(shown["set"], true, "{shown}");
    let user: Value = client
        .post(url("/admin/users"))
        .bearer_auth(ADMIN_KEY)
        .json(&json!({"name": "Keyless"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let grant: Value = client
        .post(url(&format!(
            "/admin/users/{}/grants",
            user["id"].as_str().unwrap()
        )))
        .bearer_auth(ADMIN_KEY)
        .json(&json!({"name": "app", "plan": "lent"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let res = client
        .post(url("/v1/chat/completions"))
        .bearer_auth(grant["api_key"].as_str().unwrap())
        .json(&json!({"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    assert_eq!(
        mock.requests()[0].header("authorization"),
        Some(format!("Bearer {OPERATOR_KEY}").as_str())
    );

    // While it runs, the store is its: one line pointing to the admin API.
    let other = "sk-proj-another-operator-key-000000000000";
    let out = run_with_stdin(&["keys", "set-operator"], &env, other);
    assert!(!out.status.success());
    let err = text(&out.stderr);
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(
        err.contains("in use by a running keygate") && err.contains("PUT /admin/operator-key"),
        "{err}"
    );
    assert!(!err.contains(other));
    let out = run(&["keys", "clear-operator"], &env);
    assert!(!out.status.success());
    assert!(text(&out.stderr).contains("PUT /admin/operator-key"));
    assert!(server.terminate());

    // Stopped: cleared offline, and said whether there was one.
    let out = run(&["keys", "clear-operator"], &env);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout).trim(), "operator OpenAI key deleted");
    let out = run(&["keys", "clear-operator"], &env);
    assert_eq!(text(&out.stdout).trim(), "no operator OpenAI key was set");

    let log = std::fs::read(dir.path().join("log")).unwrap();
    assert!(
        !log.windows(OPERATOR_KEY.len())
            .any(|w| w == OPERATOR_KEY.as_bytes()),
        "operator key in the server log"
    );
}

#[test]
fn help_names_the_operator_commands_and_how_to_pipe_the_key() {
    let out = run(&["keys", "--help"], &[]);
    let help = text(&out.stdout);
    assert!(
        help.contains("set-operator") && help.contains("clear-operator"),
        "{help}"
    );
    let out = run(&["keys", "set-operator", "--help"], &[]);
    assert!(out.status.success());
    let help = text(&out.stdout);
    assert!(
        help.contains("standard input") && help.contains("PUT /admin/operator-key"),
        "{help}"
    );
}

/// Runs `keygate ARGS` on a pseudo-terminal (util-linux `script`), types `typed` once
/// the prompt is up, and returns everything the terminal showed. `None` (the test is
/// skipped) where `script` is missing.
fn on_a_terminal(args: &[&str], envs: &[(&str, &str)], typed: &str) -> Option<String> {
    use std::io::Read;
    use std::sync::{Arc, Mutex};
    use std::time::{Duration, Instant};
    if std::process::Command::new("script")
        .arg("--version")
        .output()
        .is_err()
    {
        let _ = writeln!(
            std::io::stderr(),
            "skipped: no `script` to make a pseudo-terminal"
        );
        return None;
    }
    let quoted = std::iter::once(env!("CARGO_BIN_EXE_keygate"))
        .chain(args.iter().copied())
        .map(|a| format!("'{a}'"))
        .collect::<Vec<_>>()
        .join(" ");
    let mut cmd = std::process::Command::new("script");
    cmd.args(["-qec", &quoted, "/dev/null"]);
    for (k, _) in std::env::vars() {
        if k.starts_with("KEYGATE_") {
            cmd.env_remove(k);
        }
    }
    for (k, v) in envs {
        cmd.env(k, v);
    }
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let shown = Arc::new(Mutex::new(Vec::new()));
    let mut stdout = child.stdout.take().unwrap();
    let reader = {
        let shown = Arc::clone(&shown);
        std::thread::spawn(move || {
            let mut buf = [0u8; 256];
            while let Ok(n) = stdout.read(&mut buf) {
                if n == 0 {
                    break;
                }
                shown.lock().unwrap().extend_from_slice(&buf[..n]);
            }
        })
    };
    let deadline = Instant::now() + Duration::from_secs(30);
    while !text(&shown.lock().unwrap()).contains("OpenAI key") {
        assert!(
            Instant::now() < deadline,
            "no prompt: {}",
            text(&shown.lock().unwrap())
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let mut stdin = child.stdin.take().unwrap();
    stdin.write_all(format!("{typed}\n").as_bytes()).unwrap();
    while child.try_wait().unwrap().is_none() {
        assert!(Instant::now() < deadline, "did not finish");
        std::thread::sleep(Duration::from_millis(20));
    }
    drop(stdin);
    reader.join().unwrap();
    let out = text(&shown.lock().unwrap());
    Some(out)
}

/// A key typed at the prompt is never shown on the terminal: neither by
/// `keygate keys set-operator` nor by `keygate admin operator-key set`.
#[test]
fn a_key_typed_on_a_terminal_is_not_echoed() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let env = [("KEYGATE_DATA_DIR", data.to_str().unwrap())];
    assert!(run(&["init"], &env).status.success());
    let typed = "sk-proj-typed-on-a-terminal-000000000TYPD";
    let Some(shown) = on_a_terminal(&["keys", "set-operator"], &env, typed) else {
        return;
    };
    assert!(shown.contains("sealed under master key"), "{shown}");
    assert!(!shown.contains("TYPD"), "echoed: {shown}");

    // The admin CLI reads the key before it calls the server (here: nobody listens).
    let port = common::free_port().to_string();
    let url = format!("http://127.0.0.1:{port}");
    let shown = on_a_terminal(
        &["admin", "--url", &url, "operator-key", "set"],
        &[("KEYGATE_ADMIN_KEY", ADMIN_KEY)],
        typed,
    )
    .unwrap();
    assert!(shown.contains("cannot connect"), "{shown}");
    assert!(!shown.contains("TYPD"), "echoed: {shown}");
}

/// A key given on the command line is refused without being repeated, by both commands
/// (in any position, after `--` too).
#[test]
fn a_key_on_the_command_line_is_refused_without_repeating_it() {
    let key = "sk-proj-given-as-an-argument-0000000ARGV";
    for args in [
        vec!["keys", "set-operator", key],
        vec!["keys", "set-operator", "--", key],
        vec!["keys", "set-operator", "x", key],
        vec!["admin", "operator-key", "set", key],
        vec!["admin", "operator-key", "set", "--", key],
        vec!["admin", "operator-key", "set", "x", key],
        vec!["admin", "--json", "operator-key", "set", key],
    ] {
        let out = run(&args, &[("KEYGATE_ADMIN_KEY", ADMIN_KEY)]);
        assert!(!out.status.success(), "{args:?}");
        let err = text(&out.stderr);
        assert!(!err.contains("ARGV"), "{args:?} repeated the key: {err}");
        assert!(!text(&out.stdout).contains("ARGV"), "{args:?}");
        assert!(err.contains("standard input"), "{args:?}: {err}");
        assert_eq!(err.lines().count(), 1, "{args:?}: {err}");
    }
}
