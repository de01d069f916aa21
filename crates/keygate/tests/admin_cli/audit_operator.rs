//! TO ENABLE AFTER MERGE: the verbs whose routes other helpers of issue 11 build —
//! `GET /admin/audit` (audit) and `/admin/operator-key` (operator). Register with
//! `mod after_merge;` in `main.rs` once those routes are on the branch; until then
//! every test here fails on a 404 route.

use keygate_testkit::{TestApp, spawn_app};
use reqwest::Method;
use serde_json::{Value, json};

use crate::{Cli, field, line_with};

async fn server_json(app: &TestApp, path: &str) -> Value {
    let res = app.admin(Method::GET, path).send().await.unwrap();
    assert_eq!(res.status(), 200, "{path}");
    res.json().await.unwrap()
}

// --- audit -----------------------------------------------------------------------------

#[tokio::test]
async fn audit_lists_newest_first_with_filters_and_pages() {
    let app = spawn_app().await;
    let cli = Cli::new(&app);
    let uid = cli.json(&["users", "create", "Audited"]).await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let made = cli
        .json(&["grants", "create", "--user", &uid, "--name", "app"])
        .await;
    let gid = made["grant"]["id"].as_str().unwrap().to_owned();
    cli.ok(&["grants", "revoke", &gid]).await;
    let other = app.create_user("Someone else").await;

    let all = cli.json(&["audit"]).await;
    assert_eq!(all, server_json(&app, "/admin/audit").await);
    let actions: Vec<&str> = all
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["action"].as_str().unwrap())
        .collect();
    assert_eq!(
        actions,
        [
            "user.created",
            "grant.revoked",
            "grant.created",
            "user.created"
        ],
        "newest first"
    );
    assert_eq!(all[1]["actor"]["kind"], "admin_key");
    assert_eq!(all[1]["target"]["id"], gid.as_str());
    assert!(
        !all.to_string().contains("kg_"),
        "a secret in the audit log"
    );

    let mine = cli.json(&["audit", "--user", &uid]).await;
    assert_eq!(mine.as_array().unwrap().len(), 3);
    assert!(
        mine.as_array()
            .unwrap()
            .iter()
            .all(|e| e["user"] == uid.as_str())
    );
    let theirs = cli.json(&["audit", "--user", &other]).await;
    assert_eq!(theirs.as_array().unwrap().len(), 1);
    let revoked = cli.json(&["audit", "--action", "grant.revoked"]).await;
    assert_eq!(revoked.as_array().unwrap().len(), 1);
    assert_eq!(
        cli.json(&["audit", "--limit", "2"])
            .await
            .as_array()
            .unwrap()
            .len(),
        2
    );
    let later = cli.json(&["audit", "--from", "2999-01-01"]).await;
    assert_eq!(later, json!([]));

    let table = cli.ok(&["audit"]).await;
    let lines: Vec<&str> = table.lines().collect();
    assert!(
        lines[0].starts_with("AT") && lines[0].contains("ACTION"),
        "{table}"
    );
    assert_eq!(lines.len(), 5, "{table}");
    assert!(line_with(&table, "grant.revoked").contains(&gid));
    assert!(line_with(&table, "grant.created").contains("admin_key"));

    let line = cli.fails(&["audit", "--from", "last week"]).await;
    assert!(
        line.contains("invalid_request") && line.contains("from"),
        "{line}"
    );
    let line = cli.fails(&["audit", "--limit", "0"]).await;
    assert!(line.contains("--limit"), "{line}");

    // More entries than one page: followed to the end.
    for i in 0..101 {
        app.create_user(&format!("p{i}")).await;
    }
    let every = cli.json(&["audit"]).await;
    assert_eq!(every.as_array().unwrap().len(), 105);
    assert_eq!(cli.ok(&["audit", "--limit", "3"]).await.lines().count(), 4);

    // Deleting a person from the CLI is audited as the admin key's doing, and the
    // entries about them outlive them.
    cli.ok(&["users", "delete", &other]).await;
    let deleted = cli.json(&["audit", "--action", "account.deleted"]).await;
    assert_eq!(deleted.as_array().unwrap().len(), 1);
    assert_eq!(deleted[0]["user"], other.as_str());
    assert_eq!(deleted[0]["actor"]["kind"], "admin_key");
    let theirs = cli.json(&["audit", "--user", &other]).await;
    assert_eq!(theirs.as_array().unwrap().len(), 2);
}

// --- operator key ----------------------------------------------------------------------

#[tokio::test]
async fn operator_key_set_show_delete() {
    let app = spawn_app().await;
    let operator_key = "sk-operator-test-key-0000000000000000ZYXW";
    let cli = Cli::new(&app).secret(operator_key);
    assert_eq!(
        cli.ok(&["operator-key", "show"]).await.trim(),
        "No operator key is set."
    );
    assert_eq!(
        cli.json(&["operator-key", "show"]).await,
        json!({"set": false})
    );

    let line = Cli::new(&app)
        .stdin("")
        .fails(&["operator-key", "set"])
        .await;
    assert!(line.contains("standard input"), "{line}");
    let line = Cli::new(&app)
        .stdin("sk-admin-not-allowed-0000000000")
        .secret("sk-admin-not-allowed-0000000000")
        .fails(&["operator-key", "set"])
        .await;
    assert!(line.contains("admin_key_not_allowed"), "{line}");

    let said = Cli::new(&app)
        .secret(operator_key)
        .stdin(&format!("{operator_key}\n"))
        .ok(&["operator-key", "set"])
        .await;
    assert!(said.contains("stored"), "{said}");
    let table = cli.ok(&["operator-key", "show"]).await;
    assert_eq!(field(&table, "operator key"), "set");
    let shown = cli.json(&["operator-key", "show"]).await;
    assert_eq!(shown["set"], true);
    assert!(shown["kid"].is_string());

    // Scope `admin` only.
    let made: Value = app
        .admin(Method::POST, "/admin/keys")
        .json(&json!({"name": "w", "scope": "write"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let writer = Cli::new(&app).key(made["key"].as_str().unwrap());
    for args in [vec!["operator-key", "show"], vec!["operator-key", "delete"]] {
        let line = writer.fails(&args).await;
        assert!(line.contains("insufficient_scope"), "{args:?}: {line}");
    }
    let line = writer
        .stdin(operator_key)
        .secret(operator_key)
        .fails(&["operator-key", "set"])
        .await;
    assert!(line.contains("insufficient_scope"), "{line}");

    assert!(
        cli.ok(&["operator-key", "delete"])
            .await
            .contains("deleted")
    );
    assert_eq!(
        cli.json(&["operator-key", "show"]).await,
        json!({"set": false})
    );
}
