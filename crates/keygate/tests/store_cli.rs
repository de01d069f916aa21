//! `keygate store copy` and `keygate migrate --check` with the real binary: a sled
//! store a real keygate wrote, copied to PostgreSQL and back; keygate serving from each
//! copy opens the sealed key with the same keyring; refusals say why in one line and
//! never print a password.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::path::Path;
use std::process::Output;

use common::{ADMIN_KEY, person, run, serve};
use keygate_testkit::cluster::TestDatabase;
use keygate_testkit::mock_openai::MockOpenAi;
use serde_json::json;

const OPENAI_KEY: &str = "sk-proj-store-copy-person-key-0123456789abcdCOPY";

fn ok(out: Output) -> String {
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "stdout: {stdout}\nstderr: {stderr}");
    stdout
}

fn fails(out: Output) -> String {
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(!out.status.success(), "succeeded: {stdout}");
    stdout + &stderr
}

/// A chat completion through keygate reaches the mock with the person's own key.
async fn chat_reaches_openai_with_the_key(address: &str, api_key: &str, mock: &MockOpenAi) {
    let res = reqwest::Client::new()
        .post(format!("{address}/v1/chat/completions"))
        .bearer_auth(api_key)
        .json(&json!({"model": "gpt-4o", "messages": [{"role": "user", "content": "Hi"}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    let last = mock.requests().pop().unwrap();
    assert_eq!(
        last.header("authorization"),
        Some(format!("Bearer {OPENAI_KEY}").as_str())
    );
}

/// A data dir holding only `from`'s master key file (the shared keyring).
fn data_dir_with_keyring(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    std::fs::copy(from.join("master.keys"), to.join("master.keys")).unwrap();
}

#[tokio::test]
async fn sled_to_postgres_and_back_serves_the_same_people_and_keys() {
    let Some(db) = TestDatabase::create("store_cli").await else {
        return;
    };
    let mock = MockOpenAi::start().await;
    let dir = tempfile::tempdir().unwrap();
    let (sled_a, pg_node, sled_b) = (
        dir.path().join("a"),
        dir.path().join("pg-node"),
        dir.path().join("b"),
    );

    // A real keygate writes the sled store.
    let mut server = serve(&sled_a, &mock.base_url(), dir.path().join("log-a"), &[]).await;
    let api_key = person(&server.address, OPENAI_KEY).await;
    chat_reaches_openai_with_the_key(&server.address, &api_key, &mock).await;
    let from_a = format!("sled:{}", sled_a.display());
    // Not while it runs: the copy must see a store nobody changes.
    let said = fails(run(
        &["store", "copy", "--from", &from_a, "--to", "postgres"],
        &[("KEYGATE_STORE_URL", db.url.as_str())],
    ));
    assert!(said.contains("a keygate is running"), "{said}");
    assert!(server.terminate());

    let pg = [("KEYGATE_STORE_URL", db.url.as_str())];
    // Nothing applied to the new database yet: listed, exit status 1.
    let said = fails(run(&["migrate", "--check"], &pg));
    assert!(said.contains("pending 0001"), "{said}");
    // The same on a current sled store: nothing pending.
    let sled_env = [("KEYGATE_DATA_DIR", sled_a.to_str().unwrap())];
    assert!(ok(run(&["migrate", "--check"], &sled_env)).contains("no pending migrations"));

    let said = ok(run(
        &["store", "copy", "--from", &from_a, "--to", "postgres"],
        &pg,
    ));
    assert!(said.contains("(0 already there unchanged)"), "{said}");
    for kind in ["users 1", "vault 1", "grants 1", "audit"] {
        assert!(said.contains(kind), "{kind}: {said}");
    }
    // Again: every entry already there, the same store.
    let again = ok(run(
        &["store", "copy", "--from", &from_a, "--to", "postgres"],
        &pg,
    ));
    let total = said
        .lines()
        .last()
        .unwrap()
        .split_whitespace()
        .nth(1)
        .unwrap()
        .to_owned();
    assert!(
        again.contains(&format!("copied {total} entries"))
            && again.contains(&format!("({total} already there unchanged)")),
        "{again}"
    );
    assert!(ok(run(&["migrate", "--check"], &pg)).contains("no pending migrations"));
    for secret in [OPENAI_KEY, &api_key] {
        assert!(!said.contains(secret) && !again.contains(secret));
    }

    // keygate on PostgreSQL, with the same keyring: the grant works, the key opens.
    data_dir_with_keyring(&sled_a, &pg_node);
    let mut server = serve(&pg_node, &mock.base_url(), dir.path().join("log-pg"), &pg).await;
    chat_reaches_openai_with_the_key(&server.address, &api_key, &mock).await;
    assert!(server.terminate());

    // And back to a new sled data dir.
    let to_b = format!("sled:{}", sled_b.display());
    ok(run(
        &["store", "copy", "--from", "postgres", "--to", &to_b],
        &pg,
    ));
    data_dir_with_keyring(&sled_a, &sled_b);
    let mut server = serve(&sled_b, &mock.base_url(), dir.path().join("log-b"), &[]).await;
    chat_reaches_openai_with_the_key(&server.address, &api_key, &mock).await;
    // Someone signs up on b: b is now a store of its own.
    let res = reqwest::Client::new()
        .post(format!("{}/admin/users", server.address))
        .bearer_auth(ADMIN_KEY)
        .json(&json!({"name": "Bo"}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 201);
    assert!(server.terminate());

    // A copy onto b from a source that never had Bo: another store, refused.
    let said = fails(run(
        &["store", "copy", "--from", &from_a, "--to", &to_b],
        &[],
    ));
    assert!(
        said.contains("the target holds entries the source does not have (1 audit, 1 users)"),
        "{said}"
    );
    db.drop_database().await;
}

#[test]
fn bad_locations_are_refused_in_one_line_without_the_password() {
    let dir = tempfile::tempdir().unwrap();
    let from = format!("sled:{}", dir.path().display());
    // No store there.
    let said = fails(run(
        &[
            "store",
            "copy",
            "--from",
            &from,
            "--to",
            "postgres://u:hunter2-secret@127.0.0.1:1/x",
        ],
        &[],
    ));
    assert!(said.contains("no sled store"), "{said}");
    assert!(!said.contains("hunter2-secret"), "{said}");
    // An unreachable database: named by host and database only.
    std::fs::create_dir_all(dir.path().join("store")).unwrap();
    let to = format!("sled:{}", dir.path().join("other").display());
    let said = fails(run(
        &[
            "store",
            "copy",
            "--from",
            "postgres://u:hunter2-secret@127.0.0.1:1/x",
            "--to",
            &to,
        ],
        &[],
    ));
    assert!(said.contains("127.0.0.1:1/x"), "{said}");
    assert!(!said.contains("hunter2-secret"), "{said}");
    // A URL clap would have quoted in its refusal (no host): not repeated either.
    let said = fails(run(
        &[
            "store",
            "copy",
            "--from",
            &from,
            "--to",
            "postgres://u:hunter2-secret@/x",
        ],
        &[],
    ));
    assert!(
        said.contains("--to") && !said.contains("hunter2-secret"),
        "{said}"
    );
    for (from, to) in [
        ("mysql://db/x", "sled:/tmp/x"),
        ("sled:", "sled:/tmp/x"),
        (&from[..], &from[..]),
    ] {
        let said = fails(run(&["store", "copy", "--from", from, "--to", to], &[]));
        assert_eq!(said.trim().lines().count(), 1, "{said}");
    }
}
