//! The audit log: every security and admin action leaves an entry — in order, with its
//! actor, target, source address and request id, never a secret — that survives a
//! restart; `GET /admin/audit` (read scope) filters and pages it newest first; a
//! person's `GET /api/audit` holds only the entries that concern them.

use keygate_testkit::browser::Browser;
use keygate_testkit::soft_passkey::SoftPasskey;
use keygate_testkit::{
    ADMIN_KEY, FAKE_OPENAI_KEY, TestApp, manual_clock, spawn_app, spawn_app_with,
    spawn_app_with_clock,
};
use reqwest::{Method, Response};
use serde_json::{Value, json};

use crate::connect::{APP, VERIFIER, approve_redirect, code_from, exchange, popup};
use crate::helpers::{assert_openai_error, json_of, param_of};

const SECOND_KEY: &str = "sk-test-keygate-second-key-00000000000000ABCD";

/// What one entry should say.
struct Expect {
    action: &'static str,
    actor: (&'static str, Option<String>),
    user: Option<String>,
    target: Option<(&'static str, Option<String>)>,
    request_id: String,
}

/// The expectations of a test, in the order the actions happened.
#[derive(Default)]
struct Script(Vec<Expect>);

impl Script {
    /// `action` by `actor` on `user`'s behalf, answered by `res` (whose `x-request-id`
    /// the entry must carry).
    fn saw(
        &mut self,
        res: &Response,
        action: &'static str,
        actor: (&'static str, Option<&str>),
        user: Option<&str>,
        target: Option<(&'static str, Option<&str>)>,
    ) {
        let request_id = res.headers()["x-request-id"].to_str().unwrap().to_owned();
        self.0.push(Expect {
            action,
            actor: (actor.0, actor.1.map(str::to_owned)),
            user: user.map(str::to_owned),
            target: target.map(|(k, id)| (k, id.map(str::to_owned))),
            request_id,
        });
    }
}

fn person(id: &str) -> (&'static str, Option<&str>) {
    ("person", Some(id))
}

const BOOTSTRAP: (&str, Option<&str>) = ("admin_key", Some("bootstrap"));

/// Every entry of the log, newest first, followed page by page with `key`.
async fn whole_log(app: &TestApp, key: &str, query: &str) -> Vec<Value> {
    let mut out = Vec::new();
    let mut path = format!("/admin/audit?limit=7{query}");
    loop {
        let res = app
            .client
            .get(app.url(&path))
            .bearer_auth(key)
            .send()
            .await
            .unwrap();
        let next = res
            .headers()
            .get("link")
            .map(|l| l.to_str().unwrap().to_owned());
        let page = json_of(res, 200).await;
        out.extend(page.as_array().unwrap().iter().cloned());
        match next {
            Some(link) => {
                path = link
                    .trim_start_matches('<')
                    .split('>')
                    .next()
                    .unwrap()
                    .to_owned()
            }
            None => return out,
        }
    }
}

/// The person's own entries, newest first.
async fn own_log(b: &Browser) -> Vec<Value> {
    json_of(b.get("/api/audit?limit=1000").await, 200)
        .await
        .as_array()
        .unwrap()
        .clone()
}

fn check(entries: &[Value], script: &Script) {
    let got: Vec<&str> = entries
        .iter()
        .rev()
        .map(|e| e["action"].as_str().unwrap())
        .collect();
    let want: Vec<&str> = script.0.iter().map(|e| e.action).collect();
    assert_eq!(got, want, "the actions, oldest first");
    for (e, x) in entries.iter().rev().zip(&script.0) {
        let what = format!("{} {e}", x.action);
        assert_eq!(e["actor"]["kind"], x.actor.0, "{what}");
        assert_eq!(e["actor"]["id"], json!(x.actor.1), "{what}");
        assert_eq!(e["user"], json!(x.user), "{what}");
        match &x.target {
            None => assert!(e["target"].is_null(), "{what}"),
            Some((kind, id)) => {
                assert_eq!(e["target"]["kind"], *kind, "{what}");
                assert!(e["target"]["id"].is_string(), "{what}");
                if let Some(id) = id {
                    assert_eq!(e["target"]["id"], *id, "{what}");
                }
            }
        }
        assert_eq!(e["request_id"], x.request_id, "{what}");
        assert_eq!(e["source_ip"], "127.0.0.1", "{what}");
        let at = e["at"].as_str().unwrap();
        assert!(
            at.len() == 27 && at.ends_with('Z') && at.as_bytes()[19] == b'.',
            "{what}"
        );
        assert!(e["detail"].is_object(), "{what}");
        assert_eq!(e["id"].as_str().unwrap().len(), 32, "{what}");
    }
    // Newest first, strictly: ids are the log's keys.
    assert!(
        entries
            .windows(2)
            .all(|w| w[0]["id"].as_str() > w[1]["id"].as_str())
    );
}

/// The secret part of a `kg_…` or `kga_…` key (after its id).
fn secret_of(key: &str) -> &str {
    &key[key.len() - 20..]
}

#[tokio::test]
async fn every_action_is_recorded_in_order_with_its_actor_and_no_secret() {
    let app = spawn_app().await;
    let mut log = Script::default();
    let mut secrets: Vec<String> =
        vec![FAKE_OPENAI_KEY.into(), SECOND_KEY.into(), ADMIN_KEY.into()];

    // --- the person: sign-up, their key, a grant's whole life, passkeys ----------
    let mut b = app.browser();
    let res = b.register("Ann").await;
    let cookie = res.headers()["set-cookie"].to_str().unwrap().to_owned();
    let session = cookie.split(';').next().unwrap().split('=').nth(1).unwrap();
    secrets.push(session.to_owned());
    let signup_req = res.headers()["x-request-id"].to_str().unwrap().to_owned();
    let ann = json_of(res, 201).await["user"]["id"]
        .as_str()
        .unwrap()
        .to_owned();
    log.0.push(Expect {
        action: "user.signed_up",
        actor: ("person", Some(ann.clone())),
        user: Some(ann.clone()),
        target: Some(("user", Some(ann.clone()))),
        request_id: signup_req,
    });

    let res = b
        .request(Method::PUT, "/api/key")
        .header("x-request-id", "audit-test-key-stored")
        .json(&json!({"api_key": FAKE_OPENAI_KEY}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.headers()["x-request-id"], "audit-test-key-stored");
    log.saw(
        &res,
        "key.stored",
        person(&ann),
        Some(&ann),
        Some(("openai_key", None)),
    );
    assert_eq!(res.status(), 204);
    let res = b
        .send(Method::PUT, "/api/key", json!({"api_key": SECOND_KEY}))
        .await;
    log.saw(
        &res,
        "key.replaced",
        person(&ann),
        Some(&ann),
        Some(("openai_key", None)),
    );
    assert_eq!(res.status(), 204);

    let res = b.post("/api/grants", json!({"name": "CLI"})).await;
    log.saw(
        &res,
        "grant.created",
        person(&ann),
        Some(&ann),
        Some(("grant", None)),
    );
    let made = json_of(res, 201).await;
    let gid = made["grant"]["id"].as_str().unwrap().to_owned();
    secrets.push(secret_of(made["api_key"].as_str().unwrap()).to_owned());
    fix_target(&mut log, "grant", &gid);
    for (method, path, body, action, status) in [
        (
            Method::PATCH,
            format!("/api/grants/{gid}"),
            json!({"name": "CLI 2"}),
            "grant.changed",
            200,
        ),
        (
            Method::POST,
            format!("/api/grants/{gid}/rotate"),
            json!({}),
            "grant.rotated",
            200,
        ),
        (
            Method::POST,
            format!("/api/grants/{gid}/disable"),
            json!({}),
            "grant.disabled",
            200,
        ),
        (
            Method::POST,
            format!("/api/grants/{gid}/enable"),
            json!({}),
            "grant.enabled",
            200,
        ),
        (
            Method::DELETE,
            format!("/api/grants/{gid}"),
            json!({}),
            "grant.revoked",
            204,
        ),
        (
            Method::DELETE,
            format!("/api/grants/{gid}"),
            json!({}),
            "grant.removed",
            204,
        ),
    ] {
        let res = b.send(method, &path, body).await;
        log.saw(
            &res,
            action,
            person(&ann),
            Some(&ann),
            Some(("grant", Some(&gid))),
        );
        let got = res.status().as_u16();
        let text = res.text().await.unwrap();
        assert_eq!(got, status, "{action}: {text}");
        if action == "grant.rotated" {
            let v: Value = serde_json::from_str(&text).unwrap();
            secrets.push(secret_of(v["api_key"].as_str().unwrap()).to_owned());
        }
    }

    let mut phone = SoftPasskey::new(&app.address);
    let res = b.add_passkey(&mut phone, Some("Phone")).await;
    log.saw(
        &res,
        "passkey.added",
        person(&ann),
        Some(&ann),
        Some(("passkey", None)),
    );
    let pk = json_of(res, 201).await["id"].as_str().unwrap().to_owned();
    fix_target(&mut log, "passkey", &pk);
    let res = b
        .send(Method::DELETE, &format!("/api/passkeys/{pk}"), json!({}))
        .await;
    log.saw(
        &res,
        "passkey.removed",
        person(&ann),
        Some(&ann),
        Some(("passkey", Some(&pk))),
    );
    assert_eq!(res.status(), 204);

    // --- connecting apps: popup approve and deny, redirect approve and deny --------
    let res = popup(&mut b, json!({})).await;
    log.saw(
        &res,
        "grant.created",
        person(&ann),
        Some(&ann),
        Some(("grant", None)),
    );
    log.saw(
        &res,
        "connect.approved",
        person(&ann),
        Some(&ann),
        Some(("grant", None)),
    );
    let v = json_of(res, 201).await;
    secrets.push(secret_of(v["api_key"].as_str().unwrap()).to_owned());
    let res = b
        .post(
            "/api/connect/deny",
            json!({"origin": APP, "app_name": "Notes"}),
        )
        .await;
    log.saw(&res, "connect.denied", person(&ann), Some(&ann), None);
    assert_eq!(res.status(), 204);

    let res = approve_redirect(&mut b, &[]).await;
    log.saw(&res, "connect.approved", person(&ann), Some(&ann), None);
    let code = code_from(&res);
    secrets.push(code.clone());
    let res = exchange(&app, &code, VERIFIER).await;
    // The person approved it; the app's server collects it.
    log.saw(
        &res,
        "grant.created",
        person(&ann),
        Some(&ann),
        Some(("grant", None)),
    );
    let v = json_of(res, 200).await;
    secrets.push(secret_of(v["api_key"].as_str().unwrap()).to_owned());
    let res = b
        .request(Method::POST, "/connect/deny")
        .form(&[
            ("redirect_uri", "https://notes.example/oauth/callback"),
            ("state", "s"),
            ("app_name", "Notes"),
        ])
        .send()
        .await
        .unwrap();
    log.saw(&res, "connect.denied", person(&ann), Some(&ann), None);
    assert_eq!(res.status(), 302);

    let res = b.send(Method::DELETE, "/api/key", json!({})).await;
    log.saw(
        &res,
        "key.deleted",
        person(&ann),
        Some(&ann),
        Some(("openai_key", None)),
    );
    assert_eq!(res.status(), 204);

    let mut laptop = b.with_same_passkey();
    let res = laptop.login().await;
    log.saw(
        &res,
        "user.signed_in",
        person(&ann),
        Some(&ann),
        Some(("passkey", None)),
    );
    assert_eq!(res.status(), 200);

    // --- the operator: a person, their key, an admin key acting on a grant ---------
    let res = app
        .admin(Method::POST, "/admin/users")
        .json(&json!({"name": "Bob"}))
        .send()
        .await
        .unwrap();
    let bob_req = res.headers()["x-request-id"].to_str().unwrap().to_owned();
    let bob = json_of(res, 201).await["id"].as_str().unwrap().to_owned();
    log.0.push(Expect {
        action: "user.created",
        actor: ("admin_key", Some("bootstrap".into())),
        user: Some(bob.clone()),
        target: Some(("user", Some(bob.clone()))),
        request_id: bob_req,
    });
    let res = app.put_openai_key(&bob, FAKE_OPENAI_KEY).await;
    log.saw(
        &res,
        "key.stored",
        BOOTSTRAP,
        Some(&bob),
        Some(("openai_key", None)),
    );
    assert_eq!(res.status(), 204);
    let res = app
        .admin(Method::POST, "/admin/keys")
        .json(&json!({"name": "ops", "scope": "write"}))
        .send()
        .await
        .unwrap();
    log.saw(
        &res,
        "admin_key.created",
        BOOTSTRAP,
        None,
        Some(("admin_key", None)),
    );
    let k = json_of(res, 201).await;
    let (kid, kga) = (
        k["id"].as_str().unwrap().to_owned(),
        k["key"].as_str().unwrap().to_owned(),
    );
    secrets.push(secret_of(&kga).to_owned());
    fix_target(&mut log, "admin_key", &kid);
    let ops = ("admin_key", Some(kid.as_str()));
    let res = app
        .client
        .post(app.url(&format!("/admin/users/{bob}/grants")))
        .bearer_auth(&kga)
        .json(&json!({"name": "svc"}))
        .send()
        .await
        .unwrap();
    log.saw(
        &res,
        "grant.created",
        ops,
        Some(&bob),
        Some(("grant", None)),
    );
    let made = json_of(res, 201).await;
    let bg = made["grant"]["id"].as_str().unwrap().to_owned();
    secrets.push(secret_of(made["api_key"].as_str().unwrap()).to_owned());
    fix_target(&mut log, "grant", &bg);
    for (method, path, body, action) in [
        (
            Method::PATCH,
            format!("/admin/grants/{bg}"),
            json!({"models": ["gpt-4o"]}),
            "grant.changed",
        ),
        (
            Method::POST,
            format!("/admin/grants/{bg}/rotate"),
            json!({"grace_seconds": 60}),
            "grant.rotated",
        ),
        (
            Method::POST,
            format!("/admin/grants/{bg}/disable"),
            json!({}),
            "grant.disabled",
        ),
        (
            Method::POST,
            format!("/admin/grants/{bg}/enable"),
            json!({}),
            "grant.enabled",
        ),
        (
            Method::DELETE,
            format!("/admin/grants/{bg}"),
            json!({}),
            "grant.revoked",
        ),
        (
            Method::DELETE,
            format!("/admin/grants/{bg}"),
            json!({}),
            "grant.removed",
        ),
    ] {
        let res = app
            .client
            .request(method, app.url(&path))
            .bearer_auth(&kga)
            .json(&body)
            .send()
            .await
            .unwrap();
        log.saw(&res, action, ops, Some(&bob), Some(("grant", Some(&bg))));
        let ok = res.status().is_success();
        let text = res.text().await.unwrap();
        assert!(ok, "{action}: {text}");
        if action == "grant.rotated" {
            let v: Value = serde_json::from_str(&text).unwrap();
            secrets.push(secret_of(v["api_key"].as_str().unwrap()).to_owned());
        }
    }
    let res = app
        .admin(Method::DELETE, &format!("/admin/keys/{kid}"))
        .send()
        .await
        .unwrap();
    log.saw(
        &res,
        "admin_key.revoked",
        BOOTSTRAP,
        None,
        Some(("admin_key", Some(&kid))),
    );
    assert_eq!(res.status(), 204);

    // --- the person leaves ----------------------------------------------------------
    let res = b.send(Method::DELETE, "/api/account", json!({})).await;
    log.saw(
        &res,
        "account.deleted",
        person(&ann),
        Some(&ann),
        Some(("user", Some(&ann))),
    );
    assert_eq!(res.status(), 204);

    let entries = whole_log(&app, ADMIN_KEY, "").await;
    check(&entries, &log);

    // Every listed action left its entry (operator_key.* belong to the operator key's
    // tests, master_key.* and store.backed_up to master_keys.rs and backup.rs).
    let seen: std::collections::BTreeSet<&str> = entries
        .iter()
        .map(|e| e["action"].as_str().unwrap())
        .collect();
    for action in keygate_core::audit::Action::ALL {
        let name = action.as_str();
        assert!(
            seen.contains(name)
                || name.starts_with("operator_key.")
                || name.starts_with("master_key.")
                || name == "store.backed_up",
            "no {name} entry"
        );
    }

    // What the entries say, spot-checked, and nothing secret anywhere in them.
    let find = |action: &str| {
        entries
            .iter()
            .rev()
            .find(|e| e["action"] == action)
            .unwrap()
            .clone()
    };
    assert_eq!(find("grant.created")["detail"]["name"], "CLI");
    assert_eq!(find("grant.changed")["detail"]["fields"], json!(["name"]));
    assert_eq!(find("key.replaced")["detail"]["last4"], "ABCD");
    assert_eq!(find("passkey.added")["detail"]["name"], "Phone");
    assert_eq!(find("connect.approved")["detail"]["origin"], APP);
    assert_eq!(find("connect.denied")["detail"]["mode"], "popup");
    assert_eq!(find("admin_key.created")["detail"]["scope"], "write");
    let text = serde_json::to_string(&entries).unwrap();
    for secret in &secrets {
        assert!(
            !text.contains(secret.as_str()),
            "a secret in the log: {secret}"
        );
    }
}

/// The last expectation's target id, known only from the answer.
fn fix_target(log: &mut Script, kind: &'static str, id: &str) {
    let last = log.0.last_mut().unwrap();
    last.target = Some((kind, Some(id.to_owned())));
}

/// A person with a session, a stored key and one grant; their id.
async fn someone(app: &TestApp, name: &str) -> (Browser, String) {
    let mut b = app.browser();
    let id = b.signed_up(name).await["id"].as_str().unwrap().to_owned();
    let res = b
        .send(Method::PUT, "/api/key", json!({"api_key": FAKE_OPENAI_KEY}))
        .await;
    assert_eq!(res.status(), 204);
    let res = b.post("/api/grants", json!({"name": "CLI"})).await;
    assert_eq!(res.status(), 201);
    (b, id)
}

#[tokio::test]
async fn entries_survive_a_restart() {
    let app = spawn_app().await;
    let (_, ann) = someone(&app, "Ann").await;
    let before = whole_log(&app, ADMIN_KEY, "").await;
    assert_eq!(before.len(), 3);
    let data = app.stop().await;
    let path = data.path().to_path_buf();
    let app = spawn_app_with(|c| c.data_dir = Some(path)).await;
    assert_eq!(whole_log(&app, ADMIN_KEY, "").await, before);
    // New entries go on after the old ones.
    let res = app.put_openai_key(&ann, FAKE_OPENAI_KEY).await;
    assert_eq!(res.status(), 204);
    let after = whole_log(&app, ADMIN_KEY, "").await;
    assert_eq!(after.len(), 4);
    assert_eq!(after[0]["action"], "key.replaced");
    assert!(after[0]["id"].as_str() > before[0]["id"].as_str());
    assert_eq!(&after[1..], &before[..]);
    drop(data);
}

#[tokio::test]
async fn a_person_sees_only_their_own_entries() {
    let app = spawn_app().await;
    let (ann_b, ann) = someone(&app, "Ann").await;
    let (bob_b, bob) = someone(&app, "Bob").await;
    // An operator's action on Ann's account is hers too, without the operator's address.
    assert_eq!(
        app.put_openai_key(&ann, FAKE_OPENAI_KEY).await.status(),
        204
    );

    let mine = own_log(&ann_b).await;
    let actions: Vec<&str> = mine.iter().map(|e| e["action"].as_str().unwrap()).collect();
    assert_eq!(
        actions,
        [
            "key.replaced",
            "grant.created",
            "key.stored",
            "user.signed_up"
        ]
    );
    assert!(mine.iter().all(|e| e["user"] == ann.as_str()));
    assert_eq!(
        mine[0]["actor"],
        json!({"kind": "admin_key", "id": "bootstrap"})
    );
    assert!(mine[0]["source_ip"].is_null());
    assert_eq!(mine[1]["source_ip"], "127.0.0.1");
    let theirs = own_log(&bob_b).await;
    assert_eq!(theirs.len(), 3);
    assert!(theirs.iter().all(|e| e["user"] == bob.as_str()));

    // Ann's cursor is no way into Bob's entries, nor the operator's log's into Ann's.
    let res = ann_b.get("/api/audit?limit=1").await;
    let cursor = res.headers()["x-next-cursor"].to_str().unwrap().to_owned();
    let link = res.headers()["link"].to_str().unwrap().to_owned();
    assert_eq!(
        link,
        format!("</api/audit?limit=1&cursor={cursor}>; rel=\"next\"")
    );
    let page = json_of(bob_b.get(&format!("/api/audit?cursor={cursor}")).await, 200).await;
    assert_eq!(page, json!([]));
    let res = app
        .admin(Method::GET, "/admin/audit?limit=1")
        .send()
        .await
        .unwrap();
    let whole = res.headers()["x-next-cursor"].to_str().unwrap().to_owned();
    let page = json_of(ann_b.get(&format!("/api/audit?cursor={whole}")).await, 200).await;
    assert_eq!(page, json!([]));
    // Following Ann's own pages gives all of hers, one by one.
    let second = json_of(
        ann_b
            .get(&format!("/api/audit?limit=1&cursor={cursor}"))
            .await,
        200,
    )
    .await;
    assert_eq!(second[0]["action"], "grant.created");

    // Anonymous: 401; a session cookie is not an admin key; junk is a 400 naming it.
    assert_openai_error(app.browser().get("/api/audit").await, 401, "not_signed_in").await;
    let res = ann_b.get("/admin/audit").await;
    assert_eq!(res.status(), 401);
    assert_eq!(
        param_of(ann_b.get("/api/audit?limit=0").await).await,
        "limit"
    );
    assert_eq!(
        param_of(ann_b.get("/api/audit?cursor=***").await).await,
        "cursor"
    );
}

#[tokio::test]
async fn the_operators_log_needs_a_read_key() {
    let app = spawn_app().await;
    someone(&app, "Ann").await;
    let res = app
        .admin(Method::POST, "/admin/keys")
        .json(&json!({"name": "auditor", "scope": "read"}))
        .send()
        .await
        .unwrap();
    let read = json_of(res, 201).await["key"].as_str().unwrap().to_owned();
    let entries = whole_log(&app, &read, "").await;
    assert_eq!(entries[0]["action"], "admin_key.created");
    assert_eq!(entries.len(), 4);

    let res = app
        .client
        .get(app.url("/admin/audit"))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 401);
    let res = app
        .client
        .get(app.url("/admin/audit"))
        .bearer_auth("kga_not-a-real-key-at-all-000000000000000")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 401);
    // Reading is all a read key does: the log has no way to change it.
    for method in [Method::POST, Method::DELETE, Method::PUT, Method::PATCH] {
        let res = app
            .client
            .request(method.clone(), app.url("/admin/audit"))
            .bearer_auth(ADMIN_KEY)
            .json(&json!({}))
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 404, "{method}");
    }
    let res = app
        .client
        .delete(app.url("/api/audit"))
        .header("origin", &app.address)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 404);
}

#[tokio::test]
async fn filters_and_pages() {
    let clock = manual_clock();
    // 2026-11-30T12:00:00Z, then a day later for the second person.
    clock.set(1_795_996_800 + 12 * 3600);
    let app = spawn_app_with_clock(clock, |_| {}).await;
    let (_, ann) = someone(&app, "Ann").await;
    app.clock.advance(86_400);
    let (_, bob) = someone(&app, "Bob").await;

    let all = whole_log(&app, ADMIN_KEY, "").await;
    assert_eq!(all.len(), 6);
    assert_eq!(all[5]["at"], "2026-11-30T12:00:00.000000Z");
    assert_eq!(all[0]["at"], "2026-12-01T12:00:00.000000Z");
    let count = |q: &'static str| {
        let app = &app;
        async move { whole_log(app, ADMIN_KEY, q).await.len() }
    };
    assert_eq!(count("&action=grant.created").await, 2);
    assert_eq!(
        whole_log(&app, ADMIN_KEY, &format!("&user={ann}"))
            .await
            .len(),
        3
    );
    let bobs = whole_log(&app, ADMIN_KEY, &format!("&user={bob}&action=key.stored")).await;
    assert_eq!((bobs.len(), &bobs[0]["user"]), (1, &json!(bob)));
    // Dates are whole days; date-times count to the end of their second.
    assert_eq!(count("&from=2026-12-01").await, 3);
    assert_eq!(count("&to=2026-11-30").await, 3);
    assert_eq!(count("&from=2026-11-30&to=2026-11-30").await, 3);
    assert_eq!(count("&to=2026-11-30T12:00:00Z").await, 3);
    assert_eq!(count("&from=2026-11-30T12:00:01Z").await, 3);
    assert_eq!(count("&from=2026-12-01T12:00:00%2B00:00").await, 3);
    assert_eq!(count("&from=2026-12-02").await, 0);

    // Pages: newest first, `Link` and `X-Next-Cursor` until the last.
    let res = app
        .admin(Method::GET, "/admin/audit?limit=4&action=")
        .send()
        .await
        .unwrap();
    let cursor = res.headers()["x-next-cursor"].to_str().unwrap().to_owned();
    let first = json_of(res, 200).await;
    assert_eq!(first.as_array().unwrap()[..], all[..4]);
    let res = app
        .admin(
            Method::GET,
            &format!("/admin/audit?limit=4&cursor={cursor}"),
        )
        .send()
        .await
        .unwrap();
    assert!(res.headers().get("link").is_none());
    assert_eq!(json_of(res, 200).await.as_array().unwrap()[..], all[4..]);

    // Junk: a 400 naming the parameter.
    for (query, param) in [
        ("limit=1001", "limit"),
        ("cursor=%%%", "cursor"),
        ("user=nobody", "user"),
        ("action=grant.exploded", "action"),
        ("from=yesterday", "from"),
        ("to=2026-13-01", "to"),
        ("from=2026-12-02&to=2026-12-01", "to"),
    ] {
        let res = app
            .admin(Method::GET, &format!("/admin/audit?{query}"))
            .send()
            .await
            .unwrap();
        assert_eq!(param_of(res).await, param, "{query}");
    }
}

#[tokio::test]
async fn a_retention_sweeps_old_entries_only() {
    let clock = manual_clock();
    let app = spawn_app_with_clock(clock, |c| c.audit_retention_days = Some(1)).await;
    someone(&app, "Ann").await;
    app.clock.advance(86_400 + 1);
    let (_, bob) = someone(&app, "Bob").await;
    keygate_server::app::sweep_once(&app.state).await;
    // Ann's entries are a day and a second old: gone. Bob's stay.
    let left = whole_log(&app, ADMIN_KEY, "").await;
    assert_eq!(left.len(), 3);
    assert!(left.iter().all(|e| e["user"] == bob.as_str()));
    // Without a retention nothing is ever swept.
    let app = spawn_app_with_clock(manual_clock(), |_| {}).await;
    someone(&app, "Ann").await;
    app.clock.advance(3650 * 86_400);
    keygate_server::app::sweep_once(&app.state).await;
    assert_eq!(whole_log(&app, ADMIN_KEY, "").await.len(), 3);
}

/// The `connect.denied` entries among `entries`.
fn denials(entries: &[Value]) -> usize {
    entries
        .iter()
        .filter(|e| e["action"] == "connect.denied")
        .count()
}

#[tokio::test]
async fn a_session_cannot_flood_the_log_with_denials() {
    let app = spawn_app().await;
    let (ann_b, ann) = someone(&app, "Ann").await;
    let (bob_b, _) = someone(&app, "Bob").await;
    let before = whole_log(&app, ADMIN_KEY, "").await.len();

    // A stolen cookie saying "no" over and over, to varied apps, both ways: every
    // answer is the usual one (the app must still hear "no"), but only the first few
    // leave an entry.
    let tries = 3 * keygate_server::throttle::DENIALS_BURST as usize;
    for i in 0..tries {
        let origin = format!("https://app{i}.example");
        if i % 2 == 0 {
            let res = ann_b
                .post("/api/connect/deny", json!({"origin": origin}))
                .await;
            assert_eq!(res.status(), 204);
        } else {
            let res = ann_b
                .request(Method::POST, "/connect/deny")
                .form(&[
                    ("redirect_uri", format!("{origin}/cb").as_str()),
                    ("state", "s"),
                ])
                .send()
                .await
                .unwrap();
            assert_eq!(res.status(), 302);
            let to = res.headers()["location"].to_str().unwrap();
            assert!(to.contains("error=access_denied"), "{to}");
        }
    }
    // The burst, and one more only if a whole minute passed meanwhile (a slow machine).
    let burst = keygate_server::throttle::DENIALS_BURST as usize;
    let recorded = denials(&own_log(&ann_b).await);
    assert!((burst..=burst + 1).contains(&recorded), "{recorded}");
    let all = whole_log(&app, ADMIN_KEY, "").await;
    assert_eq!(all.len(), before + recorded);

    // Real actions are still recorded, and another person's budget is their own.
    let res = ann_b.post("/api/grants", json!({"name": "after"})).await;
    assert_eq!(res.status(), 201);
    assert_eq!(own_log(&ann_b).await[0]["action"], "grant.created");
    let res = bob_b
        .post("/api/connect/deny", json!({"origin": APP}))
        .await;
    assert_eq!(res.status(), 204);
    assert_eq!(denials(&own_log(&bob_b).await), 1);
    assert!(
        whole_log(&app, ADMIN_KEY, &format!("&user={ann}"))
            .await
            .iter()
            .all(|e| e["user"] == ann.as_str())
    );
}

#[tokio::test]
async fn a_clock_stepped_back_or_standing_still_loses_no_entry() {
    let clock = manual_clock();
    clock.set(1_795_996_800 + 12 * 3600);
    let app = spawn_app_with_clock(clock, |_| {}).await;
    // Three entries in the same second (the manual clock stands still): distinct ids,
    // in the order they happened.
    let (b, ann) = someone(&app, "Ann").await;
    let same = own_log(&b).await;
    let actions: Vec<&str> = same.iter().map(|e| e["action"].as_str().unwrap()).collect();
    assert_eq!(actions, ["grant.created", "key.stored", "user.signed_up"]);
    assert!(same.iter().all(|e| e["at"] == same[0]["at"]));
    // The clock steps back an hour (an NTP correction): the next entries are kept, at
    // the time the clock gave them, none replacing another.
    app.clock.set(1_795_996_800 + 11 * 3600);
    assert_eq!(
        app.put_openai_key(&ann, FAKE_OPENAI_KEY).await.status(),
        204
    );
    let res = b.post("/api/grants", json!({"name": "second"})).await;
    assert_eq!(res.status(), 201);
    let all = whole_log(&app, ADMIN_KEY, "").await;
    assert_eq!(all.len(), 5);
    let mut ids: Vec<&str> = all.iter().map(|e| e["id"].as_str().unwrap()).collect();
    ids.dedup();
    assert_eq!(ids.len(), 5);
    let mine = own_log(&b).await;
    assert_eq!(mine.len(), 5);
    assert_eq!(
        mine.iter()
            .map(|e| e["action"].as_str().unwrap())
            .collect::<Vec<_>>(),
        [
            "grant.created",
            "key.stored",
            "user.signed_up",
            "grant.created",
            "key.replaced"
        ],
        "newest first by the time recorded; same-time entries in the order made"
    );
    assert_eq!(mine[3]["at"], "2026-11-30T11:00:00.000000Z");
}

#[tokio::test]
async fn answers_are_never_cached_and_a_repeated_filter_is_refused() {
    let app = spawn_app().await;
    let (b, ann) = someone(&app, "Ann").await;
    let no_store = |res: &Response| {
        assert_eq!(
            res.headers()
                .get("cache-control")
                .map(|v| v.to_str().unwrap()),
            Some("no-store"),
            "{}",
            res.url()
        );
        assert!(
            res.headers().get("access-control-allow-origin").is_none(),
            "{}",
            res.url()
        );
    };
    no_store(&b.get("/api/audit").await);
    no_store(&b.get("/api/audit?limit=0").await);
    no_store(&b.get("/api/usage").await);
    let res = b.post("/api/connect/deny", json!({"origin": APP})).await;
    assert_eq!(res.status(), 204);
    no_store(&res);
    for path in ["/admin/audit", "/admin/grants", "/admin/usage"] {
        let res = app.admin(Method::GET, path).send().await.unwrap();
        assert_eq!(res.status(), 200, "{path}");
        no_store(&res);
    }
    let res = app
        .admin(Method::GET, "/admin/usage")
        .header("accept", "text/csv")
        .send()
        .await
        .unwrap();
    no_store(&res);

    // A filter given twice is not silently one of them.
    let other = keygate_core::ids::UserId::generate();
    for query in [
        format!("/admin/audit?user={ann}&user={other}"),
        format!("/admin/grants?user={ann}&user={other}"),
        "/admin/audit?limit=1&limit=2".to_owned(),
    ] {
        let res = app.admin(Method::GET, &query).send().await.unwrap();
        assert_eq!(res.status(), 400, "{query}");
        no_store(&res);
    }
    // Another person's id in the person's own list is no filter at all.
    let res = b.get(&format!("/api/audit?user={other}")).await;
    assert_eq!(json_of(res, 200).await.as_array().unwrap().len(), 4);
}

#[tokio::test]
async fn a_deny_reaches_the_app_whatever_name_the_app_declared() {
    let app = spawn_app().await;
    let (b, _) = someone(&app, "Ann").await;
    // The name comes from the app's own request: one keygate would not store must not
    // keep the person's "no" from reaching the app. The entry names the origin instead.
    for bad in ["Notes\u{7}", &"N".repeat(101)] {
        let res = b
            .request(Method::POST, "/connect/deny")
            .form(&[
                ("redirect_uri", "https://notes.example/oauth/callback"),
                ("state", "s"),
                ("app_name", bad),
            ])
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 302, "{bad:?}");
        let to = res.headers()["location"].to_str().unwrap();
        assert!(to.contains("error=access_denied&state=s"), "{to}");
        let res = b
            .post(
                "/api/connect/deny",
                json!({"origin": "https://notes.example", "app_name": bad}),
            )
            .await;
        assert_eq!(res.status(), 204, "{bad:?}");
    }
    let mine = own_log(&b).await;
    let denied: Vec<&Value> = mine
        .iter()
        .filter(|e| e["action"] == "connect.denied")
        .collect();
    assert_eq!(denied.len(), 4);
    assert!(
        denied
            .iter()
            .all(|e| e["detail"]["app_name"] == "notes.example"),
        "{denied:?}"
    );
}

#[tokio::test]
async fn an_anonymous_client_writes_no_entry() {
    let app = spawn_app().await;
    let anon = app.browser();
    // Deny without a session: the app hears "no", the log hears nothing.
    let res = anon
        .request(Method::POST, "/connect/deny")
        .form(&[
            ("redirect_uri", "https://notes.example/oauth/callback"),
            ("state", "s"),
            ("app_name", "Notes"),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 302);
    let res = anon.post("/api/connect/deny", json!({"origin": APP})).await;
    assert_eq!(res.status(), 401);
    // Ceremony starts, a failed sign-in and sign-up, a junk code exchange.
    for (path, body) in [
        ("/api/auth/register/start", json!({"name": "x"})),
        ("/api/auth/login/start", json!({})),
        (
            "/api/auth/login/finish",
            json!({"ceremony": "nope", "credential": {}}),
        ),
        (
            "/api/auth/register/finish",
            json!({"ceremony": "nope", "credential": {}}),
        ),
        (
            "/api/connect/token",
            json!({"code": "junk", "code_verifier": VERIFIER}),
        ),
    ] {
        let res = anon.post(path, body).await;
        assert!(res.status().as_u16() < 500, "{path}: {}", res.status());
    }
    assert!(whole_log(&app, ADMIN_KEY, "").await.is_empty());
}
