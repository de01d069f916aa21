//! The operator's OpenAI key (issue 11 point 8): set, shown (never the key) and deleted
//! through `/admin/operator-key` with scope `admin` only; lent by a plan with
//! `use_operator_key = true` to people who stored no key of their own (their own
//! stored key, and the caller's `X-OpenAI-Key`, win); usage charged to the grant as
//! always; a 401 for it never marks the person's vault; sealed at rest, kept across
//! restarts and re-sealed after a master key rotation.

use keygate_server::config::RawConfig;
use keygate_testkit::{
    ADMIN_KEY, FAKE_OPENAI_KEY, TestApp, manual_clock, spawn_app, spawn_app_with,
    spawn_app_with_clock,
};
use reqwest::{Method, Response};
use serde_json::{Value, json};

use crate::helpers::{assert_openai_error, chat, json_of};
use crate::limits::{requests_in, usage_when};

const OPERATOR_KEY: &str = "sk-proj-operator-key-of-this-keygate-0123OPRK";
const CALLER_KEY: &str = "sk-proj-the-callers-own-key-0123456789CALL";

/// `lent` lends the operator's key; `plain` does not.
fn plans(c: &mut RawConfig) {
    c.plans = Some(
        serde_json::from_value(json!({
            "lent": {"use_operator_key": true, "rpm": 100},
            "plain": {"rpm": 100},
            "lent_small": {"use_operator_key": true, "budget": {"tokens": 20, "period": "day"}},
        }))
        .unwrap(),
    );
}

async fn put_operator_key(app: &TestApp, key: &str) -> Response {
    app.admin(Method::PUT, "/admin/operator-key")
        .json(&json!({"api_key": key}))
        .send()
        .await
        .unwrap()
}

async fn shown(app: &TestApp) -> Value {
    let res = app
        .admin(Method::GET, "/admin/operator-key")
        .send()
        .await
        .unwrap();
    json_of(res, 200).await
}

async fn delete_operator_key(app: &TestApp) -> Response {
    app.admin(Method::DELETE, "/admin/operator-key")
        .send()
        .await
        .unwrap()
}

/// A grant for `user` on `plan` (none: no plan): `(grant id, api key)`.
async fn grant_on(app: &TestApp, user: &str, plan: Option<&str>) -> (String, String) {
    let mut body = json!({"name": "operator key app"});
    if let Some(p) = plan {
        body["plan"] = json!(p);
    }
    let created = app.create_grant_with(user, &body).await;
    (
        created["grant"]["id"].as_str().unwrap().to_owned(),
        created["api_key"].as_str().unwrap().to_owned(),
    )
}

/// The `Authorization` the mock saw on its last request.
fn last_authorization(app: &TestApp) -> Option<String> {
    app.mock
        .requests()
        .last()
        .and_then(|r| r.header("authorization").map(str::to_owned))
}

async fn admin_key_of_scope(app: &TestApp, scope: &str) -> String {
    let res = app
        .admin(Method::POST, "/admin/keys")
        .json(&json!({"name": scope, "scope": scope}))
        .send()
        .await
        .unwrap();
    json_of(res, 201).await["key"].as_str().unwrap().to_owned()
}

fn contains(haystack: &[u8], needle: &str) -> bool {
    haystack
        .windows(needle.len())
        .any(|w| w == needle.as_bytes())
}

fn files_under(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut files = Vec::new();
    let mut todo = vec![dir.to_path_buf()];
    while let Some(d) = todo.pop() {
        for entry in std::fs::read_dir(&d).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                todo.push(path);
            } else {
                files.push(path);
            }
        }
    }
    files
}

#[tokio::test]
async fn set_shown_without_the_key_and_deleted_with_the_admin_scope_only() {
    let app = spawn_app().await;
    assert_eq!(shown(&app).await, json!({"set": false}));

    let res = put_operator_key(&app, OPERATOR_KEY).await;
    assert_eq!(res.status(), 204);
    assert!(res.text().await.unwrap().is_empty());
    let res = app
        .admin(Method::GET, "/admin/operator-key")
        .send()
        .await
        .unwrap();
    assert_eq!(res.headers()["cache-control"], "no-store");
    let text = res.text().await.unwrap();
    assert!(
        !text.contains(OPERATOR_KEY) && !text.contains("OPRK"),
        "{text}"
    );
    let view: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(view["set"], true);
    assert_eq!(view["kid"], app.state.keyring.current().active_kid());
    let updated = view["updated_at"].as_str().unwrap();
    assert!(
        updated.ends_with('Z') && updated.len() == 20,
        "not RFC 3339: {updated}"
    );
    assert_eq!(view.as_object().unwrap().len(), 3, "{view}");

    // read and write keys may neither set, see nor delete it; an admin-scope key may.
    for scope in ["read", "write"] {
        let key = admin_key_of_scope(&app, scope).await;
        for method in [Method::PUT, Method::GET, Method::DELETE] {
            let res = app
                .client
                .request(method.clone(), app.url("/admin/operator-key"))
                .bearer_auth(&key)
                .json(&json!({"api_key": "sk-proj-someone-elses-key-000000000000"}))
                .send()
                .await
                .unwrap();
            let err = assert_openai_error(res, 403, "insufficient_scope").await;
            assert!(
                err["error"]["message"].as_str().unwrap().contains("admin"),
                "{scope} {method}: {err}"
            );
        }
    }
    assert_eq!(
        shown(&app).await["updated_at"],
        updated,
        "changed by a refusal"
    );
    let admin = admin_key_of_scope(&app, "admin").await;
    let res = app
        .client
        .get(app.url("/admin/operator-key"))
        .bearer_auth(&admin)
        .send()
        .await
        .unwrap();
    assert_eq!(json_of(res, 200).await["set"], true);
    // No key, a wrong key: 401, as anywhere under /admin.
    let res = app
        .client
        .get(app.url("/admin/operator-key"))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 401);
    let res = app
        .client
        .put(app.url("/admin/operator-key"))
        .bearer_auth(format!("{ADMIN_KEY}x"))
        .json(&json!({"api_key": "sk-proj-attacker-0000000000000000"}))
        .send()
        .await
        .unwrap();
    assert_openai_error(res, 401, "invalid_api_key").await;

    // Bad bodies: an OpenAI admin key, no key, a field too many, not a key at all.
    let res = put_operator_key(&app, "sk-admin-0123456789abcdefghijklmnop").await;
    let err = assert_openai_error(res, 400, "admin_key_not_allowed").await;
    assert_eq!(err["error"]["param"], "api_key");
    assert!(!err.to_string().contains("0123456789abcdefghijklmnop"));
    for body in [
        json!({}),
        json!({"api_key": OPERATOR_KEY, "org": "x"}),
        json!({"api_key": "has spaces in it"}),
        json!({"api_key": ""}),
    ] {
        let res = app
            .admin(Method::PUT, "/admin/operator-key")
            .json(&body)
            .send()
            .await
            .unwrap();
        let err = assert_openai_error(res, 400, "invalid_request").await;
        assert!(!err.to_string().contains("has spaces"), "{err}");
    }
    assert_eq!(
        shown(&app).await["updated_at"],
        updated,
        "a refusal changed it"
    );
    // Nothing was ever sent to OpenAI to be checked.
    assert_eq!(app.mock.request_count(), 0);

    assert_eq!(delete_operator_key(&app).await.status(), 204);
    assert_eq!(shown(&app).await, json!({"set": false}));
    // Deleting when none is set is the same 204.
    assert_eq!(delete_operator_key(&app).await.status(), 204);
}

/// The issue's test: the operator's key is used only where the plan allows it, only
/// for people without a key of their own, never over the caller's own key.
#[tokio::test]
async fn the_operator_key_is_used_only_where_the_plan_allows() {
    let app = spawn_app_with(plans).await;
    let keyless = app.create_user("Keyless").await;
    let (lent_id, lent) = grant_on(&app, &keyless, Some("lent")).await;
    let (_, plain) = grant_on(&app, &keyless, Some("plain")).await;
    let (_, no_plan) = grant_on(&app, &keyless, None).await;

    // No operator key set yet: 409 as before, even on the plan that lends it.
    let res = app.chat_completions(&lent, &chat("gpt-4o-mini")).await;
    assert_openai_error(res, 409, "key_not_enrolled").await;

    assert_eq!(put_operator_key(&app, OPERATOR_KEY).await.status(), 204);
    let res = app.chat_completions(&lent, &chat("gpt-4o-mini")).await;
    assert_eq!(res.status(), 200);
    assert_eq!(
        last_authorization(&app),
        Some(format!("Bearer {OPERATOR_KEY}"))
    );
    // Usage is the grant's, as always (the 409 above counted one request and one
    // error, as any request the limits let through that fails before it is sent).
    let report = app.usage(&lent_id, "").await;
    let day = &report["days"][0];
    assert_eq!(
        (&day["requests"], &day["errors"]),
        (&json!(2), &json!(1)),
        "{report}"
    );
    assert!(day["completion_tokens"].as_u64().unwrap() > 0);
    assert_eq!(report["summary"]["requests"], 2);

    // The same person on a plan without the flag, or on no plan: 409, nothing sent.
    let sent = app.mock.request_count();
    for grant in [&plain, &no_plan] {
        let res = app.chat_completions(grant, &chat("gpt-4o-mini")).await;
        let err = assert_openai_error(res, 409, "key_not_enrolled").await;
        assert!(!err.to_string().contains("OPRK"));
    }
    assert_eq!(app.mock.request_count(), sent);

    // The caller's own key wins over the operator's.
    let res = app
        .v1(Method::POST, "/chat/completions", &lent)
        .header("x-openai-key", CALLER_KEY)
        .json(&chat("gpt-4o-mini"))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    assert_eq!(
        last_authorization(&app),
        Some(format!("Bearer {CALLER_KEY}"))
    );

    // A person with their own key, on the same plan: theirs, not the operator's.
    let keyed = app.create_user("Keyed").await;
    assert_eq!(
        app.put_openai_key(&keyed, FAKE_OPENAI_KEY).await.status(),
        204
    );
    let (_, keyed_lent) = grant_on(&app, &keyed, Some("lent")).await;
    let res = app
        .chat_completions(&keyed_lent, &chat("gpt-4o-mini"))
        .await;
    assert_eq!(res.status(), 200);
    assert_eq!(
        last_authorization(&app),
        Some(format!("Bearer {FAKE_OPENAI_KEY}"))
    );
    // And once the keyless person stores a key, theirs wins too.
    assert_eq!(
        app.put_openai_key(&keyless, "sk-proj-now-my-own-key-0000000000MINE")
            .await
            .status(),
        204
    );
    let res = app.chat_completions(&lent, &chat("gpt-4o-mini")).await;
    assert_eq!(res.status(), 200);
    assert_eq!(
        last_authorization(&app).as_deref(),
        Some("Bearer sk-proj-now-my-own-key-0000000000MINE")
    );

    // The consent page's plan view says which plans lend it.
    let plan: Value = app
        .client
        .get(app.url("/api/connect/plan?name=lent"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(plan["use_operator_key"], true);
    let plan: Value = app
        .client
        .get(app.url("/api/connect/plan?name=plain"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(plan["use_operator_key"], false);

    // Deleted: 409 again for the person without a key.
    let other = app.create_user("Also Keyless").await;
    let (_, other_lent) = grant_on(&app, &other, Some("lent")).await;
    assert_eq!(
        app.chat_completions(&other_lent, &chat("gpt-4o-mini"))
            .await
            .status(),
        200
    );
    assert_eq!(delete_operator_key(&app).await.status(), 204);
    let res = app
        .chat_completions(&other_lent, &chat("gpt-4o-mini"))
        .await;
    assert_openai_error(res, 409, "key_not_enrolled").await;

    // Opening it was counted as the operator's, never by person or grant.
    let metrics = app
        .client
        .get(app.url("/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let line = metrics
        .lines()
        .find(|l| l.starts_with(r#"keygate_vault_unseals_total{result="ok",source="operator"}"#))
        .unwrap();
    assert!(line.ends_with(" 2"), "{line}");
    assert!(!metrics.contains(&keyless) && !metrics.contains(&lent_id));
}

/// OpenAI refusing the operator's key is the operator's to fix: 424, the person's vault
/// untouched (a person with a key on the same plan is unaffected and not marked), a
/// warning in the logs and a count in the metrics.
#[tokio::test]
async fn an_operator_key_openai_refuses_never_marks_a_persons_vault() {
    let app = spawn_app_with(plans).await;
    assert_eq!(put_operator_key(&app, OPERATOR_KEY).await.status(), 204);
    let keyless = app.create_user("Keyless").await;
    let (_, lent) = grant_on(&app, &keyless, Some("lent")).await;
    let keyed = app.create_user("Keyed").await;
    assert_eq!(
        app.put_openai_key(&keyed, FAKE_OPENAI_KEY).await.status(),
        204
    );
    let (_, keyed_lent) = grant_on(&app, &keyed, Some("lent")).await;

    // A restricted operator key lacking a permission: this call only.
    app.mock
        .restrict_key(OPERATOR_KEY, "/v1/responses", "api.responses.write");
    let res = app
        .v1(Method::POST, "/responses", &lent)
        .json(&json!({"model": "gpt-4o-mini", "input": "hi"}))
        .send()
        .await
        .unwrap();
    let err = assert_openai_error(res, 424, "owner_key_rejected").await;
    let message = err["error"]["message"].as_str().unwrap();
    assert!(message.contains("operator") && message.contains("api.responses.write"));

    app.mock.reject_key(OPERATOR_KEY);
    for _ in 0..2 {
        let res = app.chat_completions(&lent, &chat("gpt-4o-mini")).await;
        assert_eq!(res.headers()["x-should-retry"], "false");
        let err = assert_openai_error(res, 424, "owner_key_rejected").await;
        let message = err["error"]["message"].as_str().unwrap();
        assert!(message.contains("operator must replace it"), "{message}");
        assert!(!message.contains("OPRK"));
    }
    let uid = |s: &str| keygate_core::ids::UserId::parse(s).unwrap();
    assert!(
        app.state
            .store
            .vault(&uid(&keyless))
            .await
            .unwrap()
            .is_none()
    );
    // The keyed person on the same plan is unaffected, and not marked.
    let res = app
        .chat_completions(&keyed_lent, &chat("gpt-4o-mini"))
        .await;
    assert_eq!(res.status(), 200);
    let record = app.state.store.vault(&uid(&keyed)).await.unwrap().unwrap();
    assert_eq!(record.rejected_at, None);
    // The keyless person stores a key: it starts clean and works.
    assert_eq!(
        app.put_openai_key(&keyless, "sk-proj-keyless-now-has-one-000000HAS1")
            .await
            .status(),
        204
    );
    assert_eq!(
        app.chat_completions(&lent, &chat("gpt-4o-mini"))
            .await
            .status(),
        200
    );
    let record = app
        .state
        .store
        .vault(&uid(&keyless))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(record.rejected_at, None);
    // The operator's record is kept as it was (the operator replaces it).
    assert_eq!(shown(&app).await["set"], true);

    let metrics = app
        .client
        .get(app.url("/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    for (series, n) in [
        (
            r#"keygate_operator_key_refusals_total{verdict="rejected"}"#,
            " 2",
        ),
        (
            r#"keygate_operator_key_refusals_total{verdict="forbidden"}"#,
            " 1",
        ),
    ] {
        let line = metrics.lines().find(|l| l.starts_with(series)).unwrap();
        assert!(line.ends_with(n), "{line}");
    }
}

/// Sealed at rest (its bytes are nowhere in the data directory), kept across a restart.
#[tokio::test]
async fn the_operator_key_survives_a_restart_and_is_never_stored_in_plaintext() {
    let app = spawn_app_with(plans).await;
    assert_eq!(put_operator_key(&app, OPERATOR_KEY).await.status(), 204);
    let user = app.create_user("Keyless").await;
    let (_, lent) = grant_on(&app, &user, Some("lent")).await;
    assert_eq!(
        app.chat_completions(&lent, &chat("gpt-4o-mini"))
            .await
            .status(),
        200
    );
    let before = shown(&app).await;
    let data = app.stop().await;
    let files = files_under(data.path());
    assert!(files.len() > 2);
    for file in &files {
        let bytes = std::fs::read(file).unwrap();
        for needle in [OPERATOR_KEY, &OPERATOR_KEY[8..30]] {
            assert!(
                !contains(&bytes, needle),
                "operator key bytes in {}",
                file.display()
            );
        }
    }

    let path = data.path().to_path_buf();
    let app = spawn_app_with(|c| {
        plans(c);
        c.data_dir = Some(path);
    })
    .await;
    assert_eq!(shown(&app).await, before);
    assert_eq!(
        app.chat_completions(&lent, &chat("gpt-4o-mini"))
            .await
            .status(),
        200
    );
    assert_eq!(
        last_authorization(&app),
        Some(format!("Bearer {OPERATOR_KEY}"))
    );
    drop(data);
}

/// After `keygate keys rotate`, the background re-seal pass re-seals the operator's key
/// with the vault records, so the old master key can be retired.
#[tokio::test]
async fn a_master_key_rotation_reseals_the_operator_key() {
    use base64::Engine;
    let k = |b: u8| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode([b; 32]);
    let old = format!("k-old:{}", k(1));
    let both = format!("k-new:{},{old}", k(2));
    let new_only = format!("k-new:{}", k(2));
    let with_keys = |keys: &str, path: Option<std::path::PathBuf>| {
        let keys = keys.to_owned();
        move |c: &mut RawConfig| {
            plans(c);
            c.master_keys = Some(keys.as_str().into());
            if let Some(p) = path {
                c.data_dir = Some(p);
            }
        }
    };

    let app = spawn_app_with(with_keys(&old, None)).await;
    assert_eq!(put_operator_key(&app, OPERATOR_KEY).await.status(), 204);
    assert_eq!(shown(&app).await["kid"], "k-old");
    let user = app.create_user("Keyless").await;
    let (_, lent) = grant_on(&app, &user, Some("lent")).await;
    let data = app.stop().await;
    let path = data.path().to_path_buf();

    // Both keys: it still opens, and stopping waits for the re-seal pass.
    let app = spawn_app_with(with_keys(&both, Some(path.clone()))).await;
    assert_eq!(
        app.chat_completions(&lent, &chat("gpt-4o-mini"))
            .await
            .status(),
        200
    );
    app.stop().await;

    // The old master key retired: the operator's key opens with the new one alone.
    let app = spawn_app_with(with_keys(&new_only, Some(path.clone()))).await;
    assert_eq!(shown(&app).await["kid"], "k-new");
    assert_eq!(
        app.chat_completions(&lent, &chat("gpt-4o-mini"))
            .await
            .status(),
        200,
        "the operator key was not re-sealed under the new master key"
    );
    assert_eq!(
        last_authorization(&app),
        Some(format!("Bearer {OPERATOR_KEY}"))
    );
    drop(data);
}

/// The scope check reads the path the router matched: a percent-encoded spelling of an
/// admin-only path (which routes to it) needs `admin` all the same.
#[tokio::test]
async fn an_encoded_admin_only_path_still_needs_the_admin_scope() {
    let app = spawn_app().await;
    let write = admin_key_of_scope(&app, "write").await;
    for (method, path) in [
        (Method::PUT, "/admin/operator%2Dkey"),
        (Method::GET, "/admin/%6Fperator-key"),
        (Method::POST, "/admin/k%65ys"),
        (Method::GET, "/admin/k%65ys"),
    ] {
        let res = app
            .client
            .request(method.clone(), format!("{}{path}", app.address))
            .bearer_auth(&write)
            .json(&json!({"api_key": OPERATOR_KEY, "name": "x", "scope": "admin"}))
            .send()
            .await
            .unwrap();
        assert_openai_error(res, 403, "insufficient_scope").await;
    }
    assert_eq!(shown(&app).await, json!({"set": false}));
    let keys: Value = json_of(
        app.admin(Method::GET, "/admin/keys").send().await.unwrap(),
        200,
    )
    .await;
    assert_eq!(keys.as_array().unwrap().len(), 1, "{keys}");
}

/// A lent key is held to the grant's limits exactly like a stored key: the budget bites
/// and the refused request never reaches OpenAI. The budget is per grant: a person may
/// pick a lending plan for a grant of their own (`POST /api/grants`, as an app may ask
/// for one at connect), and each such grant has its own budget, so what the operator
/// pays is bounded per grant, not per person (docs/SECURITY.md, docs/CONFIG.md: cap
/// the operator's key at OpenAI too).
#[tokio::test]
async fn a_lent_key_obeys_the_grants_budget_like_a_stored_key() {
    let app = spawn_app_with_clock(manual_clock(), plans).await;
    assert_eq!(put_operator_key(&app, OPERATOR_KEY).await.status(), 204);
    let mut person = app.browser();
    person.signed_up("Keyless Kim").await;
    let made = person
        .post(
            "/api/grants",
            json!({"name": "my own lent grant", "plan": "lent_small"}),
        )
        .await;
    let made = json_of(made, 201).await;
    assert_eq!(made["grant"]["plan"], "lent_small");
    let (id, key) = (
        made["grant"]["id"].as_str().unwrap().to_owned(),
        made["api_key"].as_str().unwrap().to_owned(),
    );
    // 8 prompt + 5 completion = 13 of the 20 tokens.
    let res = app.chat_completions(&key, &chat("gpt-4o-mini")).await;
    assert_eq!(res.status(), 200);
    let _ = res.bytes().await;
    assert_eq!(
        last_authorization(&app),
        Some(format!("Bearer {OPERATOR_KEY}"))
    );
    usage_when(&app, &id, |r| requests_in(r) == 1).await;
    let res = app.chat_completions(&key, &chat("gpt-4o-mini")).await;
    let body = assert_openai_error(res, 429, "insufficient_quota").await;
    assert!(!body.to_string().contains("OPRK"));
    assert_eq!(app.mock.request_count(), 1, "refused, yet sent");
    // The person cannot move a grant onto or off a lending plan themselves.
    let res = person
        .send(
            Method::PATCH,
            &format!("/api/grants/{id}"),
            json!({"plan": "plain"}),
        )
        .await;
    assert_openai_error(res, 400, "invalid_request").await;
    // Another grant on the same plan has a budget of its own (see above).
    let again = person
        .post(
            "/api/grants",
            json!({"name": "another", "plan": "lent_small"}),
        )
        .await;
    let again = json_of(again, 201).await;
    let res = app
        .chat_completions(again["api_key"].as_str().unwrap(), &chat("gpt-4o-mini"))
        .await;
    assert_eq!(res.status(), 200);
    assert_eq!(app.mock.request_count(), 2);
}

/// The person's own stored key wins even once OpenAI has refused it (marked rejected):
/// the operator's key does not silently take over (docs/DECISIONS.md, "Operator key").
#[tokio::test]
async fn a_rejected_stored_key_is_not_replaced_by_the_operators() {
    let app = spawn_app_with(plans).await;
    assert_eq!(put_operator_key(&app, OPERATOR_KEY).await.status(), 204);
    let user = app.create_user("Rejected Rita").await;
    let own = "sk-proj-ritas-key-that-openai-refuses-00REJ";
    assert_eq!(app.put_openai_key(&user, own).await.status(), 204);
    let (_, lent) = grant_on(&app, &user, Some("lent")).await;
    app.mock.reject_key(own);
    let res = app.chat_completions(&lent, &chat("gpt-4o-mini")).await;
    assert_openai_error(res, 424, "owner_key_rejected").await;
    let uid = keygate_core::ids::UserId::parse(&user).unwrap();
    let record = app.state.store.vault(&uid).await.unwrap().unwrap();
    assert!(record.rejected_at.is_some());
    let res = app.chat_completions(&lent, &chat("gpt-4o-mini")).await;
    assert_openai_error(res, 424, "owner_key_rejected").await;
    assert_eq!(last_authorization(&app), Some(format!("Bearer {own}")));
    assert!(
        app.mock
            .requests()
            .iter()
            .all(|r| r.header("authorization") == Some(format!("Bearer {own}").as_str())),
        "the operator's key was used"
    );
}

/// Whole records swapped between the trees never open: a person's sealed key written
/// into the operator's place is not lent to others, and the operator's sealed key
/// written under a person's id is not used as theirs. Nothing reaches OpenAI.
#[tokio::test]
async fn records_swapped_between_the_vault_and_the_operator_tree_never_open() {
    let app = spawn_app_with(plans).await;
    let store = &app.state.store;
    let uid = |s: &str| keygate_core::ids::UserId::parse(s).unwrap();
    let victim = app.create_user("Victim Vic").await;
    let victims_key = "sk-proj-victims-own-key-000000000000VICT";
    assert_eq!(app.put_openai_key(&victim, victims_key).await.status(), 204);
    let person = store.vault(&uid(&victim)).await.unwrap().unwrap();

    // The victim's record as the operator's: a keyless person on a lending plan.
    store
        .put_operator_key(&keygate_store::OperatorKeyRecord {
            key_id: person.key_id.clone(),
            sealed: person.sealed.clone(),
            kid: person.kid.clone(),
            updated_at: 1,
        })
        .await
        .unwrap();
    let keyless = app.create_user("Keyless Kai").await;
    let (_, lent) = grant_on(&app, &keyless, Some("lent")).await;
    let res = app.chat_completions(&lent, &chat("gpt-4o-mini")).await;
    assert_eq!(res.status(), 500);
    let text = res.text().await.unwrap();
    assert!(!text.contains("VICT"), "{text}");

    // The operator's record under the keyless person's id.
    assert_eq!(put_operator_key(&app, OPERATOR_KEY).await.status(), 204);
    let operator = store.operator_key().await.unwrap().unwrap();
    store
        .put_vault(
            &uid(&keyless),
            &keygate_store::VaultRecord {
                key_id: operator.key_id.clone(),
                sealed: operator.sealed.clone(),
                kid: operator.kid.clone(),
                ..person.clone()
            },
        )
        .await
        .unwrap();
    let (_, plain) = grant_on(&app, &keyless, Some("plain")).await;
    let res = app.chat_completions(&plain, &chat("gpt-4o-mini")).await;
    assert_eq!(res.status(), 500);
    let text = res.text().await.unwrap();
    assert!(!text.contains("OPRK"), "{text}");
    assert_eq!(app.mock.request_count(), 0);
}
