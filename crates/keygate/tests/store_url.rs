//! `store_url` / `KEYGATE_STORE_URL` through the binary: the URL may hold a password,
//! which no start-up log, failure or refusal may show; and the sled-only commands
//! refuse a PostgreSQL store, saying what to use instead.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::run;

const PASSWORD: &str = "pw-6c1f0e9a7b";

/// A PostgreSQL URL on a loopback port where nothing listens.
fn unreachable_url() -> (String, String) {
    let port = common::free_port();
    let at = format!("127.0.0.1:{port}/keygate_nodes");
    (format!("postgres://kg:{PASSWORD}@{at}?sslmode=disable"), at)
}

fn all_output(out: &std::process::Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

#[test]
fn serve_on_an_unreachable_store_names_host_and_database_never_the_password() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let (url, at) = unreachable_url();
    let out = run(
        &["serve"],
        &[
            ("KEYGATE_DATA_DIR", data.to_str().unwrap()),
            ("KEYGATE_LISTEN", "127.0.0.1:0"),
            ("KEYGATE_STORE_URL", &url),
            ("RUST_LOG", "info"),
        ],
    );
    assert!(!out.status.success());
    let text = all_output(&out);
    assert!(!text.contains(PASSWORD), "password shown: {text}");
    assert!(!text.contains("kg:"), "user shown: {text}");
    // The log line before connecting and the failure both say where.
    assert!(
        text.contains("connecting to the PostgreSQL store"),
        "{text}"
    );
    assert!(
        text.contains(&format!("PostgreSQL store at {at}")),
        "{text}"
    );
    // The data dir holds the key file; no sled store was made beside the database.
    assert!(data.join("master.keys").exists());
    assert!(!data.join("store").exists(), "a sled store was created");
}

#[test]
fn a_store_url_that_is_not_postgres_is_refused_without_repeating_it() {
    let dir = tempfile::tempdir().unwrap();
    for bad in [
        format!("mysql://kg:{PASSWORD}@db/keygate"),
        format!("host=db password={PASSWORD}"),
    ] {
        let out = run(
            &["serve"],
            &[
                ("KEYGATE_DATA_DIR", dir.path().to_str().unwrap()),
                ("KEYGATE_STORE_URL", &bad),
            ],
        );
        assert!(!out.status.success());
        let text = all_output(&out);
        assert!(text.contains("KEYGATE_STORE_URL"), "{text}");
        assert!(!text.contains(PASSWORD), "{bad}: {text}");
    }
}

#[test]
fn sled_only_commands_refuse_a_postgres_store_and_say_what_to_use() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let d = data.to_str().unwrap();
    assert!(run(&["init"], &[("KEYGATE_DATA_DIR", d)]).status.success());
    let (url, at) = unreachable_url();
    let env = [("KEYGATE_DATA_DIR", d), ("KEYGATE_STORE_URL", url.as_str())];
    let file = dir.path().join("b.keygate-backup");
    let backup_file = file.to_str().unwrap();
    let key_file = data.join("master.keys");
    let restore_into = dir.path().join("restored");
    for (args, expect) in [
        (
            vec!["backup", "--offline", backup_file],
            "unsupported_on_this_store",
        ),
        (
            vec![
                "restore",
                backup_file,
                "--data-dir",
                restore_into.to_str().unwrap(),
                "--master-keys",
                key_file.to_str().unwrap(),
            ],
            "unsupported_on_this_store",
        ),
        (vec!["keys", "status"], "unsupported_on_this_store"),
        (vec!["keys", "rotate"], "unsupported_on_this_store"),
        (
            vec!["keys", "set-operator"],
            "keygate admin operator-key set",
        ),
        (
            vec!["keys", "clear-operator"],
            "keygate admin operator-key set",
        ),
    ] {
        let out = run(&args, &env);
        assert!(!out.status.success(), "{args:?} succeeded");
        let text = all_output(&out);
        assert!(text.contains(expect), "{args:?}: {text}");
        assert!(
            text.contains(&at),
            "{args:?} does not say which store: {text}"
        );
        assert!(
            !text.contains(PASSWORD),
            "{args:?} shows the password: {text}"
        );
        if expect == "unsupported_on_this_store" {
            assert!(text.contains("pg_dump"), "{args:?}: {text}");
        }
    }
    assert!(!file.exists(), "a backup file was written");
    assert!(!restore_into.exists(), "a restore wrote a data directory");
    assert!(!data.join("store").exists(), "a sled store was created");
}
