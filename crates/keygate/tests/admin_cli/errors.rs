//! Where the key comes from, and every way a command can fail: each a non-zero exit
//! and one line, never the key.

use keygate_testkit::{ADMIN_KEY, spawn_app};

use crate::{Cli, common};

#[tokio::test]
async fn the_key_comes_from_the_environment_or_a_key_file() {
    let app = spawn_app().await;
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("admin.key");
    private_file(&file, &format!("{ADMIN_KEY}\n"));
    let file = file.to_str().unwrap();
    let bare = Cli::at(&app.local_address);

    // The file alone; the file over a wrong variable (given on purpose, it wins).
    assert_eq!(
        bare.ok(&["--key-file", file, "users", "list"]).await.trim(),
        "No users."
    );
    let wrong_env = Cli::at(&app.local_address).key("wrong-key-wrong-key-wrong-key-wrong");
    assert_eq!(
        wrong_env
            .ok(&["users", "list", "--key-file", file])
            .await
            .trim(),
        "No users."
    );
    let line = wrong_env.fails(&["users", "list"]).await;
    assert!(
        line.contains("invalid_api_key") && line.contains("401"),
        "{line}"
    );

    // A wrong key in the file.
    let bad = dir.path().join("bad.key");
    private_file(&bad, "not-the-admin-key-not-the-admin-key\n");
    let line = bare
        .fails(&["--key-file", bad.to_str().unwrap(), "users", "list"])
        .await;
    assert!(line.contains("invalid_api_key"), "{line}");
    assert!(!line.contains("not-the-admin-key"), "key echoed: {line}");

    // No key anywhere; an empty variable or file; a missing, unreadable or huge file.
    let line = bare.fails(&["users", "list"]).await;
    assert!(
        line.contains("KEYGATE_ADMIN_KEY") && line.contains("--key-file"),
        "{line}"
    );
    let line = Cli::at(&app.local_address)
        .env("KEYGATE_ADMIN_KEY", "")
        .fails(&["users", "list"])
        .await;
    assert!(line.contains("KEYGATE_ADMIN_KEY is empty"), "{line}");
    let empty = dir.path().join("empty.key");
    private_file(&empty, "\n");
    let missing = dir.path().join("missing.key");
    let huge = dir.path().join("huge.key");
    private_file(&huge, &"k".repeat(10_000));
    for (path, says) in [
        (empty.as_path(), "is empty"),
        (missing.as_path(), "No such file"),
        (dir.path(), "Is a directory"),
        (huge.as_path(), "not a key file"),
    ] {
        let p = path.to_str().unwrap();
        let line = Cli::new(&app)
            .fails(&["--key-file", p, "users", "list"])
            .await;
        assert!(line.contains(p) && line.contains(says), "{line}");
    }
}

/// A key file only its owner may read (as it should be; see the warning test below).
fn private_file(path: &std::path::Path, text: &str) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::write(path, text).unwrap();
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).unwrap();
}

/// A key file others may read still works, with a warning naming the file and the fix
/// (the server warns the same way about its master key file); never the key.
#[tokio::test]
async fn a_key_file_others_can_read_is_used_with_a_warning() {
    use std::os::unix::fs::PermissionsExt;
    let app = spawn_app().await;
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("admin.key");
    private_file(&file, &format!("{ADMIN_KEY}\n"));
    let path = file.to_str().unwrap();
    let cli = Cli::at(&app.local_address);
    for mode in [0o640, 0o604, 0o644] {
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(mode)).unwrap();
        let run = cli.run(&["--key-file", path, "users", "list"]).await;
        assert!(run.success, "{mode:o}: {}", run.stderr);
        assert_eq!(run.stdout.trim(), "No users.");
        let lines: Vec<&str> = run.stderr.lines().collect();
        assert_eq!(lines.len(), 1, "{mode:o}: {}", run.stderr);
        assert!(
            lines[0].starts_with("keygate: warning: ")
                && lines[0].contains(path)
                && lines[0].contains("chmod 600"),
            "{}",
            lines[0]
        );
    }
    // 0600 (and 0400): no warning.
    for mode in [0o600, 0o400] {
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(mode)).unwrap();
        let out = cli.ok(&["--key-file", path, "users", "list"]).await;
        assert_eq!(out.trim(), "No users.");
    }
}

#[tokio::test]
async fn a_server_that_is_not_there_or_not_keygate() {
    let app = spawn_app().await;
    let port = common::free_port();
    let down = Cli::at(&format!("http://127.0.0.1:{port}")).key(ADMIN_KEY);
    for args in [
        vec!["users", "list"],
        vec!["users", "create", "x"],
        vec!["grants", "show", "aaaaaaaaaaaaaaaa"],
        vec!["keys", "list"],
        vec!["usage"],
        vec!["audit"],
        vec!["operator-key", "show"],
    ] {
        let line = down.fails(&args).await;
        assert!(
            line.contains("cannot connect to") && line.contains(&port.to_string()),
            "{line}"
        );
        assert!(line.to_lowercase().contains("connection refused"), "{line}");
    }
    // KEYGATE_URL is read too (and --url wins over it).
    let cli = Cli::at("http://127.0.0.1:1")
        .key(ADMIN_KEY)
        .env("KEYGATE_URL", &app.local_address);
    let line = cli.fails(&["users", "list"]).await;
    assert!(line.contains("127.0.0.1:1"), "{line}");
    let mut cmd = common::keygate();
    cmd.args(["admin", "users", "list"])
        .env("KEYGATE_URL", &app.local_address)
        .env("KEYGATE_ADMIN_KEY", ADMIN_KEY);
    let out = tokio::task::spawn_blocking(move || cmd.output())
        .await
        .unwrap()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // Not keygate: the mock OpenAI answers /admin/users with something else.
    let line = Cli::at(&app.mock.base_url())
        .key(ADMIN_KEY)
        .fails(&["users", "list"])
        .await;
    assert!(line.contains("is --url right?"), "{line}");
}

#[tokio::test]
async fn bad_flag_values_fail_in_one_line_before_any_request() {
    let app = spawn_app().await;
    let cli = Cli::new(&app);
    for (args, says) in [
        (vec!["users", "list", "--limit", "0"], "--limit"),
        (vec!["users", "list", "--limit", "many"], "--limit"),
        (vec!["users", "list", "--limt", "3"], "--limit"),
        (vec!["users", "show"], "<ID>"),
        (vec!["users", "show", "../keys"], "not a user id"),
        (vec!["users", "delete", "a/b"], "not a user id"),
        (vec!["users", "frobnicate"], "frobnicate"),
        (vec!["grants", "show", "x?y"], "not a grant id"),
        (vec!["grants", "list", "--state", "sleeping"], "--state"),
        (vec!["grants", "create", "--user", "u"], "--name"),
        (
            vec![
                "grants", "create", "--user", "u", "--name", "n", "--limits", "{",
            ],
            "--limits",
        ),
        (
            vec!["grants", "patch", "g", "--plan", "p", "--no-plan"],
            "--no-plan",
        ),
        (
            vec!["grants", "patch", "g", "--model", "m", "--all-models"],
            "--all-models",
        ),
        (
            vec!["keys", "create", "--name", "n", "--scope", "root"],
            "--scope",
        ),
        (vec!["keys", "revoke", "a b"], "not an admin key id"),
        (vec!["usage", "--group-by", "week"], "--group-by"),
        (vec!["usage", "--group-by", "user,hour"], "--group-by"),
        (vec!["audit", "--limit", "-3"], "-3"),
        (vec!["audit", "--user", "../../x"], "not a user id"),
    ] {
        let line = cli.fails(&args).await;
        assert!(line.contains(says), "{args:?}: {line}");
    }
    for (url, says) in [
        (
            "ftp://example.com",
            "must be an http:// or https:// address",
        ),
        ("not a url", "is not a URL"),
        ("http://admin:pw@127.0.0.1:1", "user name or password"),
        ("http://127.0.0.1:1/?x=1", "query"),
        // A URL that does not parse is repeated, but never its password.
        ("http://admin:pw@127.0.0.1:99999", "is not a URL"),
        ("http://admin:pw@exa mple.com", "is not a URL"),
        ("http://admin:pw@[::1", "is not a URL"),
    ] {
        let line = Cli::at(url).key(ADMIN_KEY).fails(&["users", "list"]).await;
        assert!(
            line.contains("--url") && line.contains(says),
            "{url}: {line}"
        );
        assert!(!line.contains("pw@") && !line.contains(":pw"), "{line}");
    }
    // Nothing reached the server.
    assert_eq!(cli.ok(&["users", "list"]).await.trim(), "No users.");
    // A server-side refusal of a value it checks is one line too.
    let line = cli.fails(&["users", "create", &"n".repeat(10_000)]).await;
    assert!(line.contains("invalid_request"), "{line}");
}

/// A one-shot HTTP server answering `status` with `headers` and `body`; returns its
/// URL and the request it saw.
fn fake_server(
    status: &str,
    headers: &str,
    body: &str,
) -> (String, std::sync::mpsc::Receiver<String>) {
    use std::io::{Read, Write};
    let answer = format!(
        "HTTP/1.1 {status}\r\n{headers}Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        if let Some(stream) = listener.incoming().next() {
            let mut stream = stream.unwrap();
            let mut buf = vec![0u8; 8192];
            let n = stream.read(&mut buf).unwrap();
            let _ = tx.send(String::from_utf8_lossy(&buf[..n]).into_owned());
            stream.write_all(answer.as_bytes()).unwrap();
        }
    });
    (url, rx)
}

#[tokio::test]
async fn redirects_and_foreign_errors_are_reported_not_followed() {
    let (url, seen) = fake_server(
        "301 Moved Permanently",
        "Location: https://elsewhere.example/admin/users\r\n",
        "",
    );
    let line = Cli::at(&url).key(ADMIN_KEY).fails(&["users", "list"]).await;
    assert!(
        line.contains("301") && line.contains("https://elsewhere.example/admin/users"),
        "{line}"
    );
    // The key went to --url (as a bearer token), and only there.
    let request = seen.recv().unwrap();
    assert!(
        request.starts_with("GET /admin/users HTTP/1.1"),
        "{request}"
    );
    assert!(
        request.contains(&format!("authorization: Bearer {ADMIN_KEY}")),
        "{request}"
    );

    // A redirect whose target holds the key (a hostile or broken server echoing it):
    // reported, the key masked (`run` checks that it is printed nowhere).
    let (url, _) = fake_server(
        "302 Found",
        &format!("Location: https://elsewhere.example/?k={ADMIN_KEY}\r\n"),
        "",
    );
    let line = Cli::at(&url).key(ADMIN_KEY).fails(&["users", "list"]).await;
    assert!(
        line.contains("302") && line.contains("[admin key]"),
        "{line}"
    );

    let (url, _) = fake_server(
        "502 Bad Gateway",
        "Content-Type: text/html\r\n",
        "<html>\n<b>oops</b>\n</html>",
    );
    let line = Cli::at(&url)
        .key(ADMIN_KEY)
        .fails(&["users", "show", "abc"])
        .await;
    assert!(
        line.contains("HTTP 502") && line.contains("is --url right?"),
        "{line}"
    );
    assert!(!line.contains("oops"), "{line}");

    // An OpenAI-shaped error whose message spans lines stays one line.
    let (url, _) = fake_server(
        "400 Bad Request",
        "Content-Type: application/json\r\n",
        r#"{"error":{"message":"first\nsecond\u001b[2J","type":"x","param":"p","code":"bad_thing"}}"#,
    );
    let line = Cli::at(&url)
        .key(ADMIN_KEY)
        .fails(&["users", "create", "n"])
        .await;
    assert!(line.contains("bad_thing: first second"), "{line}");
    assert!(
        line.contains("(param: p)") && line.contains("HTTP 400"),
        "{line}"
    );
    assert!(!line.contains('\u{1b}'), "{line}");
}
