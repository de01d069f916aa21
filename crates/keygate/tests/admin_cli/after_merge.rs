//! TO ENABLE AFTER MERGE: the verbs whose routes other helpers of issue 11 build —
//! `GET /admin/grants` (filtered, paged), `GET /admin/usage`, `GET /admin/audit` and
//! `/admin/operator-key`. Register with `mod after_merge;` in `main.rs` once those
//! routes are on the branch; until then every test here fails on a 404 route.

use keygate_testkit::{TestApp, spawn_app};
use reqwest::Method;
use serde_json::{Value, json};

use crate::{Cli, field, ids, line_with};

async fn chat(app: &TestApp, key: &str) {
    let body = json!({"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]});
    assert_eq!(app.chat_completions(key, &body).await.status(), 200);
}

async fn server_json(app: &TestApp, path: &str) -> Value {
    let res = app.admin(Method::GET, path).send().await.unwrap();
    assert_eq!(res.status(), 200, "{path}");
    res.json().await.unwrap()
}

// --- grants list without --user: GET /admin/grants ------------------------------------

#[tokio::test]
async fn grants_list_across_people_by_state_and_origin() {
    let app = spawn_app().await;
    let cli = Cli::new(&app);
    let a = app.enrolled_grant(None).await;
    let b = app.enrolled_grant(None).await;
    let b2 = app.create_grant(&b.user_id, "second", None).await["grant"]["id"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(cli.ok(&["grants", "revoke", &b2]).await.contains("Revoked"));

    let all = cli.json(&["grants", "list"]).await;
    let mut got = ids(&all);
    got.sort();
    let mut want = vec![a.grant_id.clone(), b.grant_id.clone(), b2.clone()];
    want.sort();
    assert_eq!(got, want);
    assert_eq!(all, server_json(&app, "/admin/grants").await);
    let table = cli.ok(&["grants", "list"]).await;
    assert_eq!(table.lines().count(), 4, "{table}");
    assert!(line_with(&table, &b2).contains("revoked"));
    assert!(line_with(&table, &a.grant_id).contains(&a.user_id));

    let revoked = cli.json(&["grants", "list", "--state", "revoked"]).await;
    assert_eq!(ids(&revoked), [b2.clone()]);
    let active = cli.json(&["grants", "list", "--state", "active"]).await;
    assert_eq!(ids(&active).len(), 2);
    let bs = cli
        .json(&["grants", "list", "--user", &b.user_id, "--state", "active"])
        .await;
    assert_eq!(ids(&bs), [b.grant_id.clone()]);
    let none = cli
        .ok(&["grants", "list", "--origin", "https://nobody.example"])
        .await;
    assert_eq!(none.trim(), "No grants.");
    let line = cli
        .fails(&["grants", "list", "--origin", "not an origin"])
        .await;
    assert!(
        line.contains("invalid_request") && line.contains("origin"),
        "{line}"
    );
}

#[tokio::test]
async fn grants_list_follows_every_page() {
    let app = spawn_app().await;
    let uid = app.create_user("Many grants").await;
    for i in 0..103 {
        app.create_grant(&uid, &format!("g{i}"), None).await;
    }
    let cli = Cli::new(&app);
    let all = cli.json(&["grants", "list"]).await;
    assert_eq!(ids(&all).len(), 103);
    let mut unique = ids(&all);
    unique.dedup();
    assert_eq!(unique.len(), 103);
    assert_eq!(
        ids(&cli.json(&["grants", "list", "--limit", "7"]).await).len(),
        7
    );
    assert_eq!(cli.ok(&["grants", "list"]).await.lines().count(), 104);
    // Admin keys are paged the same way.
    assert_eq!(cli.json(&["keys", "list", "--limit", "1"]).await, json!([]));
}

// --- usage -----------------------------------------------------------------------------

#[tokio::test]
async fn usage_totals_and_groups() {
    let app = spawn_app().await;
    let cli = Cli::new(&app);
    let a = app.enrolled_grant(None).await;
    let b = app.enrolled_grant(None).await;
    for _ in 0..2 {
        chat(&app, &a.api_key).await;
    }
    chat(&app, &b.api_key).await;

    let total = cli.json(&["usage"]).await;
    assert_eq!(total["group_by"], json!([]));
    assert_eq!(total["total"]["requests"], 3);
    assert_eq!(total, server_json(&app, "/admin/usage").await);

    let grouped = cli.json(&["usage", "--group-by", "user,day"]).await;
    assert_eq!(grouped["group_by"], json!(["user", "day"]));
    let rows = grouped["rows"].as_array().unwrap();
    assert_eq!(rows.len(), 2);
    let of = |u: &str| rows.iter().find(|r| r["user"] == u).unwrap()["requests"].clone();
    assert_eq!(of(&a.user_id), 2);
    assert_eq!(of(&b.user_id), 1);
    let repeated = cli
        .json(&["usage", "--group-by", "user", "--group-by", "day"])
        .await;
    assert_eq!(repeated, grouped);
    let by_model = cli.json(&["usage", "--group-by", "model"]).await;
    assert_eq!(by_model["rows"][0]["model"], "gpt-4o-mini");

    let table = cli.ok(&["usage", "--group-by", "user"]).await;
    let lines: Vec<&str> = table.lines().collect();
    assert!(lines[0].starts_with("usage from"), "{table}");
    assert!(
        lines[1].starts_with("USER") && lines[1].contains("REQUESTS"),
        "{table}"
    );
    assert!(line_with(&table, &a.user_id).contains(" 2 "), "{table}");
    assert!(line_with(&table, "TOTAL").contains(" 3 "), "{table}");

    let day = keygate_core::calendar::day_string(keygate_core::calendar::day_number(
        keygate_core::time::now(),
    ));
    let today = cli.json(&["usage", "--from", &day, "--to", &day]).await;
    assert_eq!(today["from"], day.as_str());
    assert_eq!(today["total"]["requests"], 3);

    for (args, param) in [
        (vec!["usage", "--from", "2026-13-01"], "from"),
        (vec!["usage", "--to", "yesterday"], "to"),
        (
            vec!["usage", "--from", "2026-11-30", "--to", "2026-11-01"],
            "from",
        ),
    ] {
        let line = cli.fails(&args).await;
        assert!(
            line.contains("invalid_request") && line.contains(param),
            "{args:?}: {line}"
        );
    }
    let as_reader = read_key(&app).await;
    assert_eq!(as_reader.json(&["usage"]).await["total"]["requests"], 3);
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

    let line = Cli::new(&app).stdin("").fails(&["operator-key", "set"]).await;
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

async fn read_key(app: &TestApp) -> Cli {
    let made: Value = app
        .admin(Method::POST, "/admin/keys")
        .json(&json!({"name": "r", "scope": "read"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    Cli::new(app).key(made["key"].as_str().unwrap())
}
