//! The binary's command line: help, configuration errors, init/keys/migrate, and a
//! graceful SIGTERM that lets an in-flight stream finish.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::time::Duration;

use common::{ADMIN_KEY, run, serve};
use futures::StreamExt;
use keygate_testkit::mock_openai::MockOpenAi;
use serde_json::json;

#[test]
fn help_works_for_every_command() {
    for args in [
        vec!["--help"],
        vec!["serve", "--help"],
        vec!["init", "--help"],
        vec!["migrate", "--help"],
        vec!["keys", "--help"],
        vec!["keys", "list", "--help"],
        vec!["keys", "rotate", "--help"],
    ] {
        let out = run(&args, &[]);
        assert!(out.status.success(), "{args:?}");
        let text = String::from_utf8(out.stdout).unwrap();
        assert!(text.contains("Usage: keygate"), "{args:?}: {text}");
    }
    assert!(!run(&["frobnicate"], &[]).status.success());
}

#[test]
fn bad_configuration_fails_at_start_naming_the_setting() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().to_str().unwrap();
    let cases: Vec<(Vec<(&str, &str)>, &str)> = vec![
        (vec![("KEYGATE_LISTEN", "not-an-address")], "KEYGATE_LISTEN"),
        (
            vec![("KEYGATE_UPSTREAM_URL", "ftp://x")],
            "KEYGATE_UPSTREAM_URL",
        ),
        (vec![("KEYGATE_PUBLIC_URL", "nope")], "KEYGATE_PUBLIC_URL"),
        (vec![("KEYGATE_ADMIN_KEY", "short")], "KEYGATE_ADMIN_KEY"),
        (
            vec![("KEYGATE_MASTER_KEYS", "k1:abc")],
            "KEYGATE_MASTER_KEYS",
        ),
        (
            vec![("KEYGATE_MAX_BODY_BYTES", "lots")],
            "KEYGATE_MAX_BODY_BYTES",
        ),
        (vec![("KEYGATE_LSITEN", "127.0.0.1:1")], "KEYGATE_LSITEN"),
    ];
    for (envs, name) in cases {
        let mut envs = envs.clone();
        envs.push(("KEYGATE_DATA_DIR", d));
        let out = run(&["serve"], &envs);
        assert!(!out.status.success(), "{name}");
        let err = String::from_utf8(out.stderr).unwrap();
        assert!(err.contains(name), "{name}: {err}");
        assert!(
            !err.contains("short\n") && !err.contains("abc"),
            "secret echoed: {err}"
        );
    }
    // A config file with an unknown key, and a missing file.
    let file = dir.path().join("keygate.toml");
    std::fs::write(&file, "listen = \"127.0.0.1:1\"\nlisen = \"x\"\n").unwrap();
    let out = run(
        &["serve", "--config", file.to_str().unwrap()],
        &[("KEYGATE_DATA_DIR", d)],
    );
    assert!(!out.status.success());
    assert!(String::from_utf8(out.stderr).unwrap().contains("lisen"));
    let out = run(&["serve", "--config", "/nonexistent/keygate.toml"], &[]);
    assert!(!out.status.success());
    assert!(
        String::from_utf8(out.stderr)
            .unwrap()
            .contains("/nonexistent/keygate.toml")
    );
}

#[test]
fn init_keys_and_migrate() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let env = [("KEYGATE_DATA_DIR", data.to_str().unwrap())];
    let out = run(&["init"], &env);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let file = data.join("master.keys");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(
            std::fs::metadata(&file).unwrap().permissions().mode() & 0o777,
            0o600
        );
    }
    let key_text = std::fs::read_to_string(&file).unwrap();
    let (kid, key) = key_text.lines().last().unwrap().split_once(':').unwrap();
    assert!(
        !run(&["init"], &env).status.success(),
        "init must not overwrite"
    );

    let out = run(&["keys", "list"], &env);
    let listed = String::from_utf8(out.stdout).unwrap();
    assert_eq!(listed.trim(), format!("{kid} (active)"));
    assert!(!listed.contains(key));

    assert!(run(&["keys", "rotate"], &env).status.success());
    let listed = String::from_utf8(run(&["keys", "list"], &env).stdout).unwrap();
    let lines: Vec<&str> = listed.lines().collect();
    assert_eq!(lines.len(), 2);
    assert!(lines[0].ends_with("(active)") && lines[1] == kid);

    let out = run(&["migrate"], &env);
    assert!(out.status.success());
    assert!(
        String::from_utf8(out.stdout)
            .unwrap()
            .contains("schema version 3")
    );
}

#[tokio::test]
async fn serve_refuses_to_mint_a_new_key_beside_an_existing_store() {
    let dir = tempfile::tempdir().unwrap();
    let mock = MockOpenAi::start().await;
    let mut server = serve(dir.path(), &mock.base_url(), dir.path().join("log1"), &[]).await;
    assert!(server.terminate());
    std::fs::remove_file(dir.path().join("master.keys")).unwrap();
    let out = run(
        &["serve"],
        &[("KEYGATE_DATA_DIR", dir.path().to_str().unwrap())],
    );
    assert!(!out.status.success());
    assert!(
        String::from_utf8(out.stderr)
            .unwrap()
            .contains("master key file")
    );
}

#[tokio::test]
async fn sigterm_drains_an_in_flight_stream_then_exits_cleanly() {
    let dir = tempfile::tempdir().unwrap();
    let mock = MockOpenAi::start().await;
    let mut server = serve(
        &dir.path().join("data"),
        &mock.base_url(),
        dir.path().join("log"),
        &[],
    )
    .await;
    let client = reqwest::Client::new();
    let admin = |path: &str| {
        client
            .post(format!("{}{path}", server.address))
            .bearer_auth(ADMIN_KEY)
    };
    let user: serde_json::Value = admin("/admin/users")
        .json(&json!({"name": "A"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let uid = user["id"].as_str().unwrap();
    let res = client
        .put(format!("{}/admin/users/{uid}/openai-key", server.address))
        .bearer_auth(ADMIN_KEY)
        .json(&json!({"api_key": "sk-drain-test"}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 204);
    let grant: serde_json::Value = admin(&format!("/admin/users/{uid}/grants"))
        .json(&json!({"name": "g"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let res = client
        .post(format!("{}/v1/chat/completions", server.address))
        .bearer_auth(grant["api_key"].as_str().unwrap())
        .header("x-mock-delay-ms", "300")
        .json(&json!({"model": "gpt-4o-mini", "stream": true, "messages": []}))
        .send()
        .await
        .unwrap();
    let mut stream = res.bytes_stream();
    let first = stream.next().await.unwrap().unwrap();
    assert!(!first.is_empty());
    let pid = server.child.id();
    let terminated = tokio::task::spawn_blocking(move || {
        std::process::Command::new("kill")
            .args(["-TERM", &pid.to_string()])
            .status()
            .unwrap()
    });
    let mut rest = Vec::new();
    while let Some(chunk) = tokio::time::timeout(Duration::from_secs(10), stream.next())
        .await
        .unwrap()
    {
        rest.extend_from_slice(&chunk.expect("stream cut by shutdown"));
    }
    assert!(terminated.await.unwrap().success());
    assert!(
        String::from_utf8(rest).unwrap().contains("[DONE]"),
        "the in-flight stream was not drained"
    );
    let status = tokio::task::spawn_blocking(move || server.child.wait().unwrap())
        .await
        .unwrap();
    assert!(status.success(), "exit status {status:?}");
}
