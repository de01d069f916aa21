//! `grants list` across people (`GET /admin/grants`: filters, pages) and `usage`
//! (`GET /admin/usage`), the reports of issue 11 point 2.

use keygate_testkit::{TestApp, spawn_app};
use reqwest::Method;
use serde_json::{Value, json};

use crate::{Cli, ids, line_with};

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
    assert_eq!(ids(&revoked), [b2.as_str()]);
    let active = cli.json(&["grants", "list", "--state", "active"]).await;
    assert_eq!(ids(&active).len(), 2);
    let bs = cli
        .json(&["grants", "list", "--user", &b.user_id, "--state", "active"])
        .await;
    assert_eq!(ids(&bs), [b.grant_id.as_str()]);
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
