//! `keygate admin users list|show|create|delete`.

use keygate_testkit::spawn_app;
use reqwest::Method;

use crate::{Cli, field, ids, line_with};

#[tokio::test]
async fn users_create_show_list_and_delete() {
    let app = spawn_app().await;
    let cli = Cli::new(&app);
    assert_eq!(cli.ok(&["users", "list"]).await.trim(), "No users.");
    assert_eq!(cli.json(&["users", "list"]).await, serde_json::json!([]));

    // Created in a table, and in the server's JSON.
    let table = cli.ok(&["users", "create", "Ada Lovelace"]).await;
    assert_eq!(field(&table, "name"), "Ada Lovelace");
    let ada = field(&table, "id").to_owned();
    let bob = cli.json(&["users", "create", "Bob"]).await;
    assert_eq!(bob["name"], "Bob");
    assert!(bob["created_at"].as_u64().unwrap() > 1_700_000_000);
    let bob = bob["id"].as_str().unwrap().to_owned();

    // The list: a header and one line per person; --json the server's objects.
    let table = cli.ok(&["users", "list"]).await;
    let lines: Vec<&str> = table.lines().collect();
    assert_eq!(lines.len(), 3, "{table}");
    assert!(
        lines[0].starts_with("ID") && lines[0].contains("NAME") && lines[0].contains("CREATED")
    );
    assert!(line_with(&table, &ada).contains("Ada Lovelace"));
    assert!(line_with(&table, &bob).contains("Bob"));
    let listed = cli.json(&["users", "list"]).await;
    let mut got = ids(&listed);
    got.sort();
    let mut want = vec![ada.clone(), bob.clone()];
    want.sort();
    assert_eq!(got, want);
    // Exactly what GET /admin/users answers.
    let served: serde_json::Value = app
        .admin(Method::GET, "/admin/users")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(listed, served);

    let table = cli.ok(&["users", "show", &ada]).await;
    assert_eq!(field(&table, "id"), ada);
    assert_eq!(field(&table, "name"), "Ada Lovelace");
    assert!(field(&table, "created").ends_with('Z'), "{table}");
    assert_eq!(cli.json(&["users", "show", &bob]).await["name"], "Bob");

    // Delete: a sentence for people, nothing for scripts; then the person is gone.
    let said = cli.ok(&["users", "delete", &ada]).await;
    assert!(
        said.contains("Deleted user") && said.contains(&ada),
        "{said}"
    );
    assert_eq!(cli.ok(&["users", "delete", &bob, "--json"]).await, "");
    assert_eq!(cli.ok(&["users", "list"]).await.trim(), "No users.");
    for verb in ["show", "delete"] {
        let line = cli.fails(&["users", verb, &ada]).await;
        assert!(line.contains("not_found") && line.contains("404"), "{line}");
    }
    let line = cli.fails(&["users", "create", "  "]).await;
    assert!(line.contains("invalid_request"), "{line}");
}

/// More people than one page: the list follows `X-Next-Cursor` to the end, and
/// `--limit` stops early.
#[tokio::test]
async fn users_list_follows_every_page() {
    let app = spawn_app().await;
    let mut made = Vec::new();
    for i in 0..105 {
        made.push(app.create_user(&format!("person {i}")).await);
    }
    made.sort();
    let cli = Cli::new(&app);
    let all = cli.json(&["users", "list"]).await;
    let mut got = ids(&all);
    assert_eq!(got.len(), 105);
    got.sort();
    assert_eq!(got, made, "every person exactly once");
    let table = cli.ok(&["users", "list"]).await;
    assert_eq!(table.lines().count(), 106, "header + 105");

    for (limit, n) in [("1", 1), ("3", 3), ("100", 100), ("104", 104), ("500", 105)] {
        let some = cli.json(&["users", "list", "--limit", limit]).await;
        assert_eq!(ids(&some).len(), n, "--limit {limit}");
        assert_eq!(
            ids(&some),
            ids(&all)[..n],
            "--limit {limit}: the first ones"
        );
    }
    let table = cli.ok(&["users", "list", "--limit", "2"]).await;
    assert_eq!(table.lines().count(), 3);
}
