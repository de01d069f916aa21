//! `keygate admin keys list|create|revoke`, and what each scope may do from the CLI.

use keygate_testkit::spawn_app;

use crate::{Cli, field, ids, line_with};

#[tokio::test]
async fn admin_keys_created_listed_and_revoked() {
    let app = spawn_app().await;
    let cli = Cli::new(&app);
    assert_eq!(cli.ok(&["keys", "list"]).await.trim(), "No admin keys.");

    let table = cli
        .ok(&["keys", "create", "--name", "grafana", "--scope", "read"])
        .await;
    let reader = field(&table, "key").to_owned();
    assert!(reader.starts_with("kga_"), "{table}");
    assert!(table.contains("shown only now"), "{table}");
    assert_eq!(field(&table, "scope"), "read");
    assert_eq!(field(&table, "expires"), "never");
    let reader_id = field(&table, "id").to_owned();
    let made = cli
        .json(&[
            "keys",
            "create",
            "--name",
            "ci",
            "--scope",
            "write",
            "--expires-at",
            "2099-01-01T00:00:00Z",
        ])
        .await;
    let writer = made["key"].as_str().unwrap().to_owned();
    let writer_id = made["id"].as_str().unwrap().to_owned();
    assert_eq!(made["scope"], "write");

    let table = cli.ok(&["keys", "list"]).await;
    assert_eq!(table.lines().count(), 3, "{table}");
    assert!(line_with(&table, &reader_id).contains("grafana"));
    assert!(line_with(&table, &writer_id).contains("write"));
    assert!(!table.contains(&reader) && !table.contains(&writer));
    let listed = cli.json(&["keys", "list"]).await;
    let mut got = ids(&listed);
    got.sort();
    let mut want = [reader_id.clone(), writer_id.clone()];
    want.sort();
    assert_eq!(got, want);
    assert!(listed[0].get("key").is_none());

    // The new keys work from the CLI, each within its scope.
    let as_reader = Cli::new(&app).key(&reader);
    let as_writer = Cli::new(&app).key(&writer);
    assert_eq!(as_reader.ok(&["users", "list"]).await.trim(), "No users.");
    for args in [
        vec!["users", "create", "X"],
        vec!["users", "delete", "aaaaaaaaaaaaaaaa"],
        vec!["grants", "disable", "aaaaaaaaaaaaaaaa"],
        vec!["keys", "list"],
    ] {
        let line = as_reader.fails(&args).await;
        assert!(
            line.contains("insufficient_scope") && line.contains("403"),
            "{args:?}: {line}"
        );
    }
    let uid = as_writer.json(&["users", "create", "Made by CI"]).await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    for args in [
        vec!["keys", "list"],
        vec!["keys", "create", "--name", "x", "--scope", "read"],
        vec!["keys", "revoke", &reader_id],
    ] {
        let line = as_writer.fails(&args).await;
        assert!(
            line.contains("insufficient_scope") && line.contains("`admin`"),
            "{args:?}: {line}"
        );
    }
    assert!(
        as_writer
            .ok(&["users", "delete", &uid])
            .await
            .contains("Deleted")
    );

    // Revoked: refused from the next command on; a second revoke is not found.
    let said = cli.ok(&["keys", "revoke", &reader_id]).await;
    assert!(
        said.contains("Revoked admin key") && said.contains(&reader_id),
        "{said}"
    );
    let line = as_reader.fails(&["users", "list"]).await;
    assert!(
        line.contains("invalid_api_key") && line.contains("401"),
        "{line}"
    );
    let line = cli.fails(&["keys", "revoke", &reader_id]).await;
    assert!(line.contains("not_found"), "{line}");
    assert_eq!(cli.ok(&["keys", "revoke", &writer_id, "--json"]).await, "");
    assert_eq!(cli.ok(&["keys", "list"]).await.trim(), "No admin keys.");

    let line = cli
        .fails(&[
            "keys",
            "create",
            "--name",
            "x",
            "--scope",
            "read",
            "--expires-at",
            "yesterday",
        ])
        .await;
    assert!(
        line.contains("invalid_request") && line.contains("expires_at"),
        "{line}"
    );
}
