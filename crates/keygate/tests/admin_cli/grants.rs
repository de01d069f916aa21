//! `keygate admin grants show|create|patch|rotate|disable|enable|revoke` and
//! `grants list --user` (the filtered lists are in `after_merge.rs`).

use keygate_testkit::{FAKE_OPENAI_KEY, TestApp, spawn_app};
use serde_json::{Value, json};

use crate::{Cli, field, ids, line_with};

fn chat() -> Value {
    json!({"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]})
}

async fn status_with(app: &TestApp, key: &str) -> u16 {
    app.chat_completions(key, &chat()).await.status().as_u16()
}

async fn person(app: &TestApp) -> String {
    let uid = app.create_user("Grant Holder").await;
    assert_eq!(
        app.put_openai_key(&uid, FAKE_OPENAI_KEY).await.status(),
        204
    );
    uid
}

#[tokio::test]
async fn a_grant_from_creation_to_removal() {
    let app = spawn_app().await;
    let cli = Cli::new(&app);
    let uid = person(&app).await;
    assert_eq!(
        cli.ok(&["grants", "list", "--user", &uid]).await.trim(),
        "No grants."
    );

    // Created in table mode: the key is printed once, and said to be.
    let table = cli
        .ok(&[
            "grants",
            "create",
            "--user",
            &uid,
            "--name",
            "Notes app",
            "--model",
            "gpt-4o-mini",
            "--model",
            "gpt-4o",
            "--limits",
            r#"{"rpm":60,"budget":{"usd":5,"period":"month"}}"#,
            "--expires-at",
            "2099-01-01T00:00:00Z",
        ])
        .await;
    let key = field(&table, "API key").to_owned();
    assert!(key.starts_with("kg_"), "{table}");
    assert!(table.contains("shown only now"), "{table}");
    assert_eq!(field(&table, "base URL"), app.base_url);
    assert_eq!(field(&table, "models"), "gpt-4o-mini, gpt-4o");
    assert_eq!(field(&table, "limits"), "rpm 60, budget $5/month");
    assert_eq!(field(&table, "expires"), "2099-01-01T00:00:00Z");
    assert_eq!(field(&table, "state"), "active");
    let gid = field(&table, "id").to_owned();
    assert_eq!(status_with(&app, &key).await, 200);

    // --json: the server's answer, key included.
    let made = cli
        .json(&[
            "grants",
            "create",
            "--user",
            &uid,
            "--name",
            "Second",
            "--scope",
            "inference",
            "--scope",
            "files",
        ])
        .await;
    assert!(made["api_key"].as_str().unwrap().starts_with("kg_"));
    assert_eq!(made["grant"]["scopes"], json!(["inference", "files"]));
    let second = made["grant"]["id"].as_str().unwrap().to_owned();

    // One person's grants, as a table and as JSON; never a secret.
    let table = cli.ok(&["grants", "list", "--user", &uid]).await;
    assert_eq!(table.lines().count(), 3, "{table}");
    assert!(
        line_with(&table, &gid).contains("Notes app") && line_with(&table, &gid).contains("active")
    );
    assert!(line_with(&table, &second).contains("Second"));
    assert!(!table.contains("kg_"));
    let listed = cli.json(&["grants", "list", "--user", &uid]).await;
    let mut got = ids(&listed);
    got.sort();
    let mut want = vec![gid.clone(), second.clone()];
    want.sort();
    assert_eq!(got, want);
    assert!(!listed.to_string().contains("kg_"));
    assert_eq!(
        ids(&cli
            .json(&["grants", "list", "--user", &uid, "--limit", "1"])
            .await)
        .len(),
        1
    );

    let table = cli.ok(&["grants", "show", &gid]).await;
    assert_eq!(field(&table, "name"), "Notes app");
    assert_eq!(field(&table, "user"), uid);
    assert_eq!(
        cli.json(&["grants", "show", &gid]).await["id"],
        gid.as_str()
    );

    // Patch: only what is given changes; --no-… clears.
    let patched = cli
        .json(&[
            "grants",
            "patch",
            &gid,
            "--name",
            "Notes",
            "--all-models",
            "--no-expiry",
        ])
        .await;
    assert_eq!(patched["name"], "Notes");
    assert_eq!(patched["models"], json!([]));
    assert_eq!(patched["expires_at"], Value::Null);
    assert_eq!(patched["limits"]["rpm"], 60, "limits untouched");
    let table = cli
        .ok(&["grants", "patch", &gid, "--limits", r#"{"tpm":1000}"#])
        .await;
    assert_eq!(field(&table, "limits"), "tpm 1000");
    assert_eq!(field(&table, "models"), "all");
    let cleared = cli.json(&["grants", "patch", &gid, "--no-limits"]).await;
    assert_eq!(cleared["limits"]["tpm"], Value::Null);
    let line = cli.fails(&["grants", "patch", &gid]).await;
    assert!(line.contains("nothing to change"), "{line}");
    let line = cli
        .fails(&["grants", "patch", &gid, "--limits", r#"{"rpm":0}"#])
        .await;
    assert!(
        line.contains("invalid_request") && line.contains("limits.rpm"),
        "{line}"
    );

    // Disable / enable: the key is refused, then works again.
    let table = cli.ok(&["grants", "disable", &gid]).await;
    assert_eq!(field(&table, "state"), "disabled");
    assert_eq!(status_with(&app, &key).await, 401);
    assert_eq!(
        cli.json(&["grants", "enable", &gid]).await["state"],
        "active"
    );
    assert_eq!(status_with(&app, &key).await, 200);

    // Rotate: a new key, printed once; the old one lasts the grace.
    let table = cli.ok(&["grants", "rotate", &gid, "--grace", "600"]).await;
    let new_key = field(&table, "API key").to_owned();
    assert!(table.contains("shown only now"));
    assert_ne!(new_key, key);
    assert_ne!(field(&table, "old key valid until"), "-");
    assert_eq!(status_with(&app, &new_key).await, 200);
    assert_eq!(status_with(&app, &key).await, 200, "grace");
    let rotated = cli.json(&["grants", "rotate", &gid, "--grace", "0"]).await;
    let newest = rotated["api_key"].as_str().unwrap().to_owned();
    assert_eq!(status_with(&app, &newest).await, 200);
    assert_eq!(status_with(&app, &new_key).await, 401, "no grace");

    // Revoke: refused at once; again is an error, not a silent removal; --remove
    // removes it.
    let said = cli.ok(&["grants", "revoke", &gid]).await;
    assert!(
        said.contains("Revoked grant") && said.contains(&gid),
        "{said}"
    );
    assert_eq!(status_with(&app, &newest).await, 401);
    assert_eq!(
        cli.json(&["grants", "show", &gid]).await["state"],
        "revoked"
    );
    let line = cli.fails(&["grants", "revoke", &gid]).await;
    assert!(
        line.contains("already revoked") && line.contains("--remove"),
        "{line}"
    );
    assert_eq!(
        cli.json(&["grants", "show", &gid]).await["state"],
        "revoked"
    );
    let said = cli.ok(&["grants", "revoke", &gid, "--remove"]).await;
    assert!(said.contains("Removed"), "{said}");
    // Revoke and remove in one go; --json prints nothing.
    assert_eq!(
        cli.ok(&["grants", "revoke", &second, "--remove", "--json"])
            .await,
        ""
    );
    assert_eq!(
        cli.ok(&["grants", "list", "--user", &uid]).await.trim(),
        "No grants."
    );

    // Every verb on a grant that is gone: 404 not_found, one line.
    for args in [
        vec!["grants", "show", &gid],
        vec!["grants", "patch", &gid, "--name", "x"],
        vec!["grants", "rotate", &gid],
        vec!["grants", "disable", &gid],
        vec!["grants", "enable", &gid],
        vec!["grants", "revoke", &gid],
    ] {
        let line = cli.fails(&args).await;
        assert!(
            line.contains("not_found") && line.contains("404"),
            "{args:?}: {line}"
        );
    }
}

#[tokio::test]
async fn grant_creation_errors_are_the_servers_in_one_line() {
    let app = spawn_app().await;
    let cli = Cli::new(&app);
    let uid = person(&app).await;
    let line = cli
        .fails(&[
            "grants",
            "create",
            "--user",
            "aaaaaaaaaaaaaaaa",
            "--name",
            "x",
        ])
        .await;
    assert!(line.contains("not_found"), "{line}");
    let line = cli
        .fails(&["grants", "list", "--user", "aaaaaaaaaaaaaaaa"])
        .await;
    assert!(line.contains("not_found"), "{line}");
    let line = cli
        .fails(&[
            "grants", "create", "--user", &uid, "--name", "x", "--plan", "nope",
        ])
        .await;
    assert!(
        line.contains("invalid_request") && line.contains("plan"),
        "{line}"
    );
    let line = cli
        .fails(&[
            "grants",
            "create",
            "--user",
            &uid,
            "--name",
            "x",
            "--scope",
            "everything",
        ])
        .await;
    assert!(
        line.contains("invalid_request") && line.contains("scopes"),
        "{line}"
    );
    let line = cli
        .fails(&[
            "grants",
            "create",
            "--user",
            &uid,
            "--name",
            "x",
            "--expires-at",
            "2001-01-01T00:00:00Z",
        ])
        .await;
    assert!(
        line.contains("invalid_request") && line.contains("expires_at"),
        "{line}"
    );
    let line = cli
        .fails(&[
            "grants", "create", "--user", &uid, "--name", "x", "--limits", "[60]",
        ])
        .await;
    assert!(
        line.contains("--limits") && line.contains("JSON object"),
        "{line}"
    );
    let line = cli
        .fails(&["grants", "rotate", "aaaaaaaaaaaaaaaa", "--grace", "soon"])
        .await;
    assert!(line.contains("--grace"), "{line}");
    assert_eq!(
        cli.ok(&["grants", "list", "--user", &uid]).await.trim(),
        "No grants."
    );
}
