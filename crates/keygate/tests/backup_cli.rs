//! `keygate backup`, `keygate restore` and `keygate keys rotate|status|retire` against a
//! real `keygate serve` (through its admin API) and on a stopped data directory.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::process::Output;
use std::time::{Duration, Instant};

use common::{ADMIN_KEY, person, run, serve};
use keygate_testkit::mock_openai::MockOpenAi;
use serde_json::json;

const OPENAI_KEY: &str = "sk-proj-backup-cli-person-key-0123456789abcdBKUP";

fn text(out: &Output) -> (String, String) {
    (
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn ok(out: Output) -> String {
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "stdout: {stdout}\nstderr: {stderr}");
    stdout
}

fn fails(out: Output) -> String {
    let (stdout, stderr) = text(&out);
    assert!(!out.status.success(), "succeeded: {stdout}");
    assert_eq!(stderr.lines().count(), 1, "one line: {stderr}");
    stderr
}

async fn chat_ok(address: &str, api_key: &str) {
    let res = reqwest::Client::new()
        .post(format!("{address}/v1/chat/completions"))
        .bearer_auth(api_key)
        .json(&json!({"model": "gpt-4o", "messages": [{"role": "user", "content": "Hi"}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
}

#[cfg(unix)]
fn mode(path: &std::path::Path) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path).unwrap().permissions().mode() & 0o777
}

#[tokio::test]
async fn backup_rotate_retire_and_restore_through_a_running_keygate() {
    let mock = MockOpenAi::start().await;
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let mut server = serve(&data, &mock.base_url(), dir.path().join("log"), &[]).await;
    let api_key = person(&server.address, OPENAI_KEY).await;
    let d = data.to_str().unwrap();
    let online = [
        ("KEYGATE_DATA_DIR", d),
        ("KEYGATE_ADMIN_KEY", ADMIN_KEY),
        ("KEYGATE_URL", server.address.as_str()),
    ];

    // A backup through the running keygate: 0600, never over an existing file.
    let file = dir.path().join("one.kgbackup");
    let f = file.to_str().unwrap();
    let said = ok(run(&["backup", f], &online));
    assert!(
        said.contains("backup written to") && said.contains("master keyring is not in it"),
        "{said}"
    );
    #[cfg(unix)]
    assert_eq!(mode(&file), 0o600);
    let bytes = std::fs::read(&file).unwrap();
    assert!(!String::from_utf8_lossy(&bytes).contains(OPENAI_KEY));
    assert!(fails(run(&["backup", f], &online)).contains("already exists"));
    // Offline while a keygate holds the store: said, pointing at the online way.
    let other = dir.path().join("two.kgbackup");
    let err = fails(run(
        &["backup", "--offline", other.to_str().unwrap()],
        &online,
    ));
    assert!(err.contains("running keygate holds the store"), "{err}");
    assert!(!other.exists());
    // The keyring the backup was sealed with, kept apart (as an operator would).
    let old_keys = dir.path().join("master.keys.copy");
    std::fs::copy(data.join("master.keys"), &old_keys).unwrap();

    // Rotation through the running keygate; the re-seal runs in the background.
    let said = ok(run(&["keys", "rotate"], &online));
    assert!(said.contains("new active master key"), "{said}");
    let deadline = Instant::now() + Duration::from_secs(30);
    let status = loop {
        let s = ok(run(&["keys", "status"], &online));
        if s.contains("0 records wait") {
            break s;
        }
        assert!(Instant::now() < deadline, "{s}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let kids: Vec<&str> = status
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .filter(|w| w.starts_with("mk-"))
        .collect();
    assert_eq!(kids.len(), 2, "{status}");
    let (new, old) = (kids[0], kids[1]);
    assert!(
        status.contains(&format!("{new} (active)  1 sealed records")),
        "{status}"
    );
    let err = fails(run(&["keys", "retire", new], &online));
    assert!(err.contains("master_key_active"), "{err}");
    assert!(ok(run(&["keys", "retire", old], &online)).contains("retired"));
    chat_ok(&server.address, &api_key).await;

    // The current keyring no longer holds the backup's key: refused, nothing written.
    let restored = dir.path().join("restored");
    let r = restored.to_str().unwrap();
    let err = fails(run(
        &[
            "restore",
            f,
            "--data-dir",
            r,
            "--master-keys",
            data.join("master.keys").to_str().unwrap(),
        ],
        &[],
    ));
    assert!(
        err.contains(&format!("1 under {old}: not in this keyring")),
        "{err}"
    );
    assert!(!restored.exists());
    let err = fails(run(&["restore", f, "--data-dir", r], &[]));
    assert!(err.contains("--master-keys"), "{err}");
    // With the keyring of the time: restored, and it serves the same grant.
    let said = ok(run(
        &[
            "restore",
            f,
            "--data-dir",
            r,
            "--master-keys",
            old_keys.to_str().unwrap(),
        ],
        &[],
    ));
    assert!(said.contains("opened all 1 sealed keys"), "{said}");
    #[cfg(unix)]
    assert_eq!(mode(&restored.join("master.keys")), 0o600);
    assert!(
        fails(run(
            &[
                "restore",
                f,
                "--data-dir",
                r,
                "--master-keys",
                old_keys.to_str().unwrap()
            ],
            &[],
        ))
        .contains("not empty")
    );
    let second = serve(&restored, &mock.base_url(), dir.path().join("log2"), &[]).await;
    chat_ok(&second.address, &api_key).await;
    drop(second);

    // Stopped: backup --offline, and a rotation that re-seals right away.
    assert!(server.terminate());
    let offline = [("KEYGATE_DATA_DIR", d)];
    let said = ok(run(
        &["backup", "--offline", other.to_str().unwrap()],
        &offline,
    ));
    assert!(said.contains("backup written to"), "{said}");
    let out = run(&["keys", "rotate"], &offline);
    let (_, stderr) = text(&out);
    ok(out);
    assert!(
        stderr.contains("re-sealed 1 of 1 records (0 remaining)"),
        "{stderr}"
    );
    let s = ok(run(&["keys", "status"], &offline));
    assert!(s.contains("0 records wait"), "{s}");
}

#[test]
fn help_shows_an_example_for_the_new_commands() {
    for args in [
        vec!["backup", "--help"],
        vec!["restore", "--help"],
        vec!["keys", "rotate", "--help"],
        vec!["keys", "retire", "--help"],
        vec!["keys", "status", "--help"],
    ] {
        let out = ok(run(&args, &[]));
        assert!(out.contains("Example"), "{args:?}: {out}");
    }
}
