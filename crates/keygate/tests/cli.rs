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
            .contains("schema version 8")
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
    let err = String::from_utf8(out.stderr).unwrap();
    assert!(err.contains("master key file"), "{err}");
    assert!(
        err.contains("KEYGATE_MASTER_KEYS") && err.contains("KEYGATE_DATA_DIR"),
        "{err}"
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

// --- issue 9: start-up that says where to go, errors said once, nothing made early ---

#[cfg(unix)]
fn mode(p: &std::path::Path) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(p).unwrap().permissions().mode() & 0o777
}

#[tokio::test]
async fn serve_says_where_to_go_where_the_data_is_and_what_to_back_up() {
    let dir = tempfile::tempdir().unwrap();
    // An existing data directory, as an operator would make it.
    let data = dir.path().join("data");
    std::fs::create_dir(&data).unwrap();
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&data, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    let data_env = data.to_str().unwrap();
    let (mut server, stdout) =
        common::serve_split(dir.path(), &[("KEYGATE_DATA_DIR", data_env)]).await;
    let port = server.address.rsplit(':').next().unwrap().to_owned();
    assert!(server.terminate());
    let said = std::fs::read_to_string(&stdout).unwrap();
    let data_abs = std::fs::canonicalize(&data).unwrap();
    let key_file = data_abs.join("master.keys");
    for expected in [
        format!("http://localhost:{port}/login"),
        format!("baseURL:    http://localhost:{port}/v1"),
        format!("Data:       {}", data_abs.display()),
        format!("Master key: {}", key_file.display()),
        format!("Back up {}", key_file.display()),
    ] {
        assert!(said.contains(&expected), "missing {expected:?} in:\n{said}");
    }
    // The store is private even inside a data directory that already existed.
    #[cfg(unix)]
    assert_eq!(mode(&data.join("store")), 0o700);

    // The second start uses the key file it finds: nothing new to back up.
    let (mut server, stdout) =
        common::serve_split(dir.path(), &[("KEYGATE_DATA_DIR", data_env)]).await;
    assert!(server.terminate());
    let said = std::fs::read_to_string(&stdout).unwrap();
    assert!(
        said.contains(&format!("Master key: {}", key_file.display())),
        "{said}"
    );
    assert!(!said.contains("Back up"), "{said}");

    // Keys from the environment: said so, and no key file is made.
    let other = dir.path().join("other");
    let keys = std::fs::read_to_string(&key_file).unwrap();
    let entry = keys.lines().last().unwrap().to_owned();
    let (mut server, stdout) = common::serve_split(
        dir.path(),
        &[
            ("KEYGATE_DATA_DIR", other.to_str().unwrap()),
            ("KEYGATE_MASTER_KEYS", &entry),
        ],
    )
    .await;
    assert!(server.terminate());
    let said = std::fs::read_to_string(&stdout).unwrap();
    assert!(
        said.contains("Master key: from KEYGATE_MASTER_KEYS"),
        "{said}"
    );
    assert!(
        !said.contains(entry.split(':').nth(1).unwrap()),
        "key printed"
    );
    assert!(!other.join("master.keys").exists());
}

#[test]
fn serve_help_lists_every_setting_with_its_default() {
    let out = run(&["serve", "--help"], &[]);
    assert!(out.status.success());
    let help = String::from_utf8(out.stdout).unwrap();
    for s in keygate_server::config::SETTINGS {
        let line = help
            .lines()
            .find(|l| l.trim_start().starts_with(&format!("{} ", s.env())))
            .unwrap_or_else(|| panic!("{} missing from:\n{help}", s.env()));
        assert!(
            line.contains(&format!("[default: {}]", s.default)),
            "{line}"
        );
    }
    // Every variable the server reads is in that list: an unknown one is refused.
    for s in keygate_server::config::SETTINGS {
        let out = run(&["serve"], &[(&s.env(), "x"), ("KEYGATE_LISTEN", "bad")]);
        let err = String::from_utf8(out.stderr).unwrap();
        assert!(!err.contains("unknown setting"), "{}: {err}", s.env());
    }
}

#[test]
fn an_unknown_file_key_is_named_as_the_key_in_that_file() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("keygate.toml");
    std::fs::write(&file, "lisen = \"127.0.0.1:1\"\n").unwrap();
    let out = run(&["serve", "--config", file.to_str().unwrap()], &[]);
    assert!(!out.status.success());
    let err = String::from_utf8(out.stderr).unwrap();
    assert!(
        err.contains(&format!("`lisen` in {}", file.display())),
        "{err}"
    );
    assert!(err.contains("did you mean `listen`?"), "{err}");
    assert!(!err.contains("KEYGATE_LISEN"), "named as a variable: {err}");
}

#[test]
fn an_unknown_variable_is_named_as_the_variable() {
    let out = run(&["serve"], &[("KEYGATE_LISTN", "127.0.0.1:1")]);
    assert!(!out.status.success());
    let err = String::from_utf8(out.stderr).unwrap();
    assert!(err.contains("KEYGATE_LISTN: unknown setting"), "{err}");
    assert!(err.contains("did you mean KEYGATE_LISTEN?"), "{err}");
    assert!(!err.contains("listn ("), "named by its file key: {err}");
}

#[test]
fn admin_keys_shorter_than_32_characters_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let short = "k".repeat(31);
    let out = run(
        &["serve"],
        &[
            ("KEYGATE_ADMIN_KEY", &short),
            ("KEYGATE_DATA_DIR", dir.path().to_str().unwrap()),
        ],
    );
    assert!(!out.status.success());
    let err = String::from_utf8(out.stderr).unwrap();
    assert!(
        err.contains("KEYGATE_ADMIN_KEY") && err.contains("at least 32"),
        "{err}"
    );
    assert!(!err.contains(&short), "admin key echoed: {err}");
}

#[test]
fn errors_say_their_cause_once_and_how_to_fix_it() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("missing");
    let out = run(
        &["keys", "list"],
        &[("KEYGATE_DATA_DIR", missing.to_str().unwrap())],
    );
    assert!(!out.status.success());
    let err = String::from_utf8(out.stderr).unwrap();
    assert_eq!(err.matches("No such file or directory").count(), 1, "{err}");
    assert!(
        err.contains(missing.join("master.keys").to_str().unwrap()),
        "{err}"
    );
    assert!(
        err.contains("keygate init") && err.contains("KEYGATE_DATA_DIR"),
        "{err}"
    );

    // A data directory that cannot be made (its parent is a file).
    let file = dir.path().join("a-file");
    std::fs::write(&file, "x").unwrap();
    let port = common::free_port().to_string();
    let out = run(
        &["serve"],
        &[
            ("KEYGATE_DATA_DIR", file.join("data").to_str().unwrap()),
            ("KEYGATE_LISTEN", &format!("127.0.0.1:{port}")),
        ],
    );
    assert!(!out.status.success());
    let err = String::from_utf8(out.stderr).unwrap();
    assert_eq!(err.matches("Not a directory").count(), 1, "{err}");
    assert!(err.contains("KEYGATE_DATA_DIR"), "{err}");
}

#[test]
fn a_taken_port_is_named_and_nothing_is_created_on_disk() {
    let dir = tempfile::tempdir().unwrap();
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let data = dir.path().join("fresh-data");
    let out = run(
        &["serve"],
        &[
            ("KEYGATE_DATA_DIR", data.to_str().unwrap()),
            ("KEYGATE_LISTEN", &addr),
        ],
    );
    assert!(!out.status.success());
    let err = String::from_utf8(out.stderr).unwrap();
    assert!(
        err.contains(&format!("could not listen on {addr}")),
        "{err}"
    );
    assert_eq!(err.matches("Address already in use").count(), 1, "{err}");
    assert!(err.contains("KEYGATE_LISTEN"), "{err}");
    assert!(
        !data.exists(),
        "created {} before the port was bound",
        data.display()
    );
}

#[cfg(unix)]
#[test]
fn migrate_makes_the_store_private_inside_an_existing_data_dir() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let out = run(
        &["migrate"],
        &[("KEYGATE_DATA_DIR", dir.path().to_str().unwrap())],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(mode(&dir.path().join("store")), 0o700);
}
