//! The grant routes from an attacker's side: no session, a leaked grant key, a foreign
//! page (CSRF), a stolen session cookie that is not fresh, another person's grant ids,
//! and an app that asks the consent page for more than the plan, in odd shapes. Each
//! test states what the attacker tries and what must still hold afterwards.

use keygate_core::calendar::to_rfc3339;
use keygate_core::ids::GrantId;
use keygate_testkit::{TestApp, manual_clock, spawn_app_with, spawn_app_with_clock};
use reqwest::{Method, Response};
use serde_json::{Value, json};

use crate::connect::{
    APP, VERIFIER, approve_redirect, challenge, code_from, connect_url, exchange, good_params,
    person, popup,
};
use crate::helpers::{assert_openai_error, chat, json_of, listed, param_of};

/// `free`: rpm 60 and $5 a month, the default; `open`: no limits.
fn plans(c: &mut keygate_server::config::RawConfig) {
    c.plans = Some(
        serde_json::from_value(json!({
            "free": {"rpm": 60, "budget": {"usd": 5, "period": "month"}},
            "open": {},
        }))
        .unwrap(),
    );
    c.default_plan = Some("free".into());
}

async fn status(app: &TestApp, key: &str) -> u16 {
    app.chat_completions(key, &chat("gpt-4o"))
        .await
        .status()
        .as_u16()
}

async fn admin(app: &TestApp, method: Method, path: &str, body: Value) -> Response {
    app.admin(method, path).json(&body).send().await.unwrap()
}

/// Every state-changing grant route, as (method, path) for grant `id`.
fn changing_routes(id: &str) -> Vec<(Method, String, Value)> {
    let path = format!("/api/grants/{id}");
    vec![
        (Method::PATCH, path.clone(), json!({"name": "pwned"})),
        (
            Method::POST,
            format!("{path}/rotate"),
            json!({"grace_seconds": 600}),
        ),
        (Method::POST, format!("{path}/disable"), json!({})),
        (Method::POST, format!("{path}/enable"), json!({})),
        (Method::DELETE, path, json!({})),
    ]
}

/// No session: every grant route is 401, even with the grant's own key as a bearer
/// (a leaked key is not a session); nor does that key open `/admin`.
#[tokio::test]
async fn without_a_session_a_leaked_grant_key_reaches_no_grant_route() {
    let app = spawn_app_with(plans).await;
    let b = person(&app).await;
    let made = json_of(b.post("/api/grants", json!({"name": "notes"})).await, 201).await;
    let id = made["grant"]["id"].as_str().unwrap().to_owned();
    let key = made["api_key"].as_str().unwrap().to_owned();
    let before = listed(&b, &id).await.unwrap();

    let anon = app.browser();
    let mut routes = changing_routes(&id);
    routes.push((Method::GET, "/api/grants".into(), Value::Null));
    routes.push((Method::GET, format!("/api/grants/{id}"), Value::Null));
    routes.push((Method::GET, format!("/api/grants/{id}/usage"), Value::Null));
    routes.push((Method::POST, "/api/grants".into(), json!({"name": "x"})));
    for (method, path, body) in &routes {
        for bearer in [None, Some(key.as_str())] {
            let mut req = anon.request(method.clone(), path);
            if let Some(k) = bearer {
                req = req.bearer_auth(k);
            }
            if !body.is_null() {
                req = req.json(body);
            }
            let res = req.send().await.unwrap();
            assert_openai_error(res, 401, "not_signed_in").await;
        }
    }
    for (method, path) in [
        (Method::GET, format!("/admin/grants/{id}")),
        (Method::PATCH, format!("/admin/grants/{id}")),
        (Method::POST, format!("/admin/grants/{id}/rotate")),
        (Method::POST, format!("/admin/grants/{id}/enable")),
        (Method::DELETE, format!("/admin/grants/{id}")),
        (Method::GET, format!("/admin/grants/{id}/usage")),
    ] {
        let res = app
            .client
            .request(method, app.url(&path))
            .bearer_auth(&key)
            .json(&json!({"limits": null}))
            .send()
            .await
            .unwrap();
        assert_openai_error(res, 401, "invalid_api_key").await;
    }
    assert_eq!(listed(&b, &id).await.unwrap(), before, "nothing changed");
    assert_eq!(status(&app, &key).await, 200);
}

/// A foreign page riding the person's cookie (CSRF): no Origin, or another one, is 403
/// on every state-changing grant route, even with a fresh session; nothing changes.
#[tokio::test]
async fn every_state_changing_grant_route_checks_the_origin() {
    let app = spawn_app_with(plans).await;
    let b = person(&app).await;
    let made = json_of(b.post("/api/grants", json!({"name": "notes"})).await, 201).await;
    let id = made["grant"]["id"].as_str().unwrap().to_owned();
    let key = made["api_key"].as_str().unwrap().to_owned();
    // Disabled, so that `enable` would change something too.
    assert_eq!(
        b.post(&format!("/api/grants/{id}/disable"), json!({}))
            .await
            .status(),
        200
    );
    let before = listed(&b, &id).await.unwrap();
    for (method, path, body) in changing_routes(&id) {
        for origin in [None, Some("https://evil.example"), Some("null")] {
            let mut req = b.client.request(method.clone(), app.url(&path)).json(&body);
            if let Some(o) = origin {
                req = req.header("origin", o);
            }
            let res = req.send().await.unwrap();
            assert_openai_error(res, 403, "csrf_failed").await;
        }
    }
    assert_eq!(listed(&b, &id).await.unwrap(), before, "nothing changed");
    assert_eq!(status(&app, &key).await, 401, "still disabled");
}

/// A stolen session cookie past its fresh window tries every way to widen a grant in
/// one PATCH: type tricks, nulls, a duplicated key, a longer period, a removed
/// per-model limit, a state or plan field. Each is refused (403 fresh_passkey_required
/// or 400) and nothing changes, not even a name sent beside it.
#[tokio::test]
async fn a_stale_session_cannot_widen_a_grant_by_any_patch() {
    let app = spawn_app_with_clock(manual_clock(), plans).await;
    let b = person(&app).await;
    let now = app.clock.now();
    let made = json_of(
        b.post(
            "/api/grants",
            json!({"name": "notes", "plan": "open", "models": ["gpt-4o-mini"],
                   "limits": {"rpm": 10, "budget": {"usd": 1, "period": "month"},
                              "models": {"gpt-4o-mini": {"tpm": 100}}},
                   "expires_at": to_rfc3339(now + 86_400)}),
        )
        .await,
        201,
    )
    .await;
    let id = made["grant"]["id"].as_str().unwrap().to_owned();
    let key = made["api_key"].as_str().unwrap().to_owned();
    let path = format!("/api/grants/{id}");
    assert_eq!(
        b.post(&format!("{path}/disable"), json!({})).await.status(),
        200
    );
    let before = listed(&b, &id).await.unwrap();
    app.clock.advance(301);

    let kept = json!({"rpm": 10, "budget": {"usd": 1, "period": "month"},
                      "models": {"gpt-4o-mini": {"tpm": 100}}});
    let mut widening = vec![
        json!({"limits": {}}),
        json!({"limits": null}),
        json!({"name": "looks harmless", "limits": null}),
        json!({"limits": {"rpm": 10, "budget": null, "models": {"gpt-4o-mini": {"tpm": 100}}}}),
        // $1 a day is more than $1 a month.
        json!({"limits": {"rpm": 10, "budget": {"usd": 1, "period": "day"},
                          "models": {"gpt-4o-mini": {"tpm": 100}}}}),
        // The per-model cap dropped, or its model renamed away.
        json!({"limits": {"rpm": 10, "budget": {"usd": 1, "period": "month"}}}),
        json!({"limits": {"rpm": 10, "budget": {"usd": 1, "period": "month"},
                          "models": {"GPT-4o-mini": {"tpm": 100}}}}),
        // A token budget in place of the dollar one.
        json!({"limits": {"rpm": 10, "budget": {"tokens": 1, "period": "month"},
                          "models": {"gpt-4o-mini": {"tpm": 100}}}}),
        json!({"models": []}),
        json!({"models": ["gpt-4o-mini", "gpt-4o"]}),
        json!({"scopes": ["inference", "files"]}),
        json!({"expires_at": null}),
        json!({"expires_at": "9999-12-31T23:59:59Z"}),
    ];
    // The same limits with one per-model cap one higher.
    let mut raised = kept.clone();
    raised["models"]["gpt-4o-mini"]["tpm"] = json!(101);
    widening.push(json!({ "limits": raised }));
    for body in widening {
        let res = b.send(Method::PATCH, &path, body.clone()).await;
        assert_openai_error(res, 403, "fresh_passkey_required").await;
    }
    for (body, param) in [
        (json!({"models": null}), "models"),
        (json!({"scopes": null}), "scopes"),
        (json!({"scopes": ["organization"]}), "scopes"),
        (json!({"expires_at": 0}), "expires_at"),
        (json!({"expires_at": "2027-03-00T00:00:00Z"}), "expires_at"),
        (json!({"limits": {"rpm": 1e1}}), "limits.rpm"),
        (json!({"limits": {"rpm": "10"}}), "limits.rpm"),
        (json!({"limits": [10]}), "limits"),
        (json!({"limits": {"rpm": 4_294_967_296u64}}), "limits.rpm"),
        (json!({"state": "active"}), "state"),
        (json!({"plan": "free"}), "plan"),
        (json!({"plan": null}), "plan"),
    ] {
        let res = b.send(Method::PATCH, &path, body.clone()).await;
        assert_eq!(param_of(res).await, param, "{body}");
    }
    // A key sent twice: the last one counts, and it is judged as sent.
    let res = b
        .request(Method::PATCH, &path)
        .header("content-type", "application/json")
        .body(r#"{"limits": {"rpm": 1}, "limits": {}}"#)
        .send()
        .await
        .unwrap();
    assert_openai_error(res, 403, "fresh_passkey_required").await;
    // Nor enable it, nor rotate it for a key of its own.
    let res = b.post(&format!("{path}/enable"), json!({})).await;
    assert_openai_error(res, 403, "fresh_passkey_required").await;
    let res = b
        .post(&format!("{path}/rotate"), json!({"grace_seconds": 0}))
        .await;
    assert_openai_error(res, 403, "fresh_passkey_required").await;

    assert_eq!(listed(&b, &id).await.unwrap(), before, "nothing changed");
    assert_eq!(status(&app, &key).await, 401, "still disabled");
    // Tightening still works with the stale session.
    let res = b
        .send(
            Method::PATCH,
            &path,
            json!({"limits": {"rpm": 5, "budget": {"usd": 0.5, "period": "month"},
                              "models": {"gpt-4o-mini": {"tpm": 50}}}}),
        )
        .await;
    assert_eq!(json_of(res, 200).await["limits"]["rpm"], 5);
}

/// A rotation's old secret works only while the grant does: disabling ends its grace
/// (enabling again does not revive it), revoking ends it, removing the revoked grant
/// ends every key for good, and nothing brings a removed grant back.
#[tokio::test]
async fn the_old_secret_dies_with_disable_revoke_and_remove() {
    let app = spawn_app_with_clock(manual_clock(), |_| {}).await;
    let g = app.enrolled_grant(None).await;
    let grant = format!("/admin/grants/{}", g.grant_id);
    let rotate_path = format!("{grant}/rotate");
    let rotate = || {
        admin(
            &app,
            Method::POST,
            &rotate_path,
            json!({"grace_seconds": 600}),
        )
    };

    let second = json_of(rotate().await, 200).await;
    let second_key = second["api_key"].as_str().unwrap().to_owned();
    assert_eq!(status(&app, &g.api_key).await, 200, "in grace");
    let off = json_of(
        admin(&app, Method::POST, &format!("{grant}/disable"), json!({})).await,
        200,
    )
    .await;
    assert_eq!(off["rotated_until"], Value::Null);
    let on = json_of(
        admin(&app, Method::POST, &format!("{grant}/enable"), json!({})).await,
        200,
    )
    .await;
    assert_eq!(on["rotated_until"], Value::Null);
    let res = app.chat_completions(&g.api_key, &chat("gpt-4o")).await;
    assert_openai_error(res, 401, "invalid_api_key").await;
    assert_eq!(status(&app, &second_key).await, 200);

    // Revoked: the key replaced by a rotation just before is not valid either.
    let third = json_of(rotate().await, 200).await;
    let third_key = third["api_key"].as_str().unwrap().to_owned();
    assert_eq!(status(&app, &second_key).await, 200, "in grace");
    assert_eq!(app.revoke(&g.grant_id).await.status(), 204);
    let shown = json_of(admin(&app, Method::GET, &grant, Value::Null).await, 200).await;
    assert_eq!(shown["rotated_until"], Value::Null);
    for key in [&second_key, &third_key] {
        assert_eq!(status(&app, key).await, 401);
    }
    // A revoked grant cannot be rotated (for a fresh key) nor changed.
    let res = rotate().await;
    assert_openai_error(res, 404, "not_found").await;
    let res = admin(&app, Method::PATCH, &grant, json!({"name": "back"})).await;
    assert_openai_error(res, 404, "not_found").await;

    // Removed: every key is unknown, and using one does not recreate the record.
    assert_eq!(app.revoke(&g.grant_id).await.status(), 204);
    for key in [&g.api_key, &second_key, &third_key] {
        let res = app.chat_completions(key, &chat("gpt-4o")).await;
        assert_openai_error(res, 401, "invalid_api_key").await;
    }
    for (method, path) in [
        (Method::GET, grant.clone()),
        (Method::POST, format!("{grant}/rotate")),
        (Method::POST, format!("{grant}/enable")),
        (Method::DELETE, grant.clone()),
    ] {
        let res = admin(&app, method, &path, json!({})).await;
        assert_openai_error(res, 404, "not_found").await;
    }
    let list = json_of(
        admin(
            &app,
            Method::GET,
            &format!("/admin/users/{}/grants", g.user_id),
            Value::Null,
        )
        .await,
        200,
    )
    .await;
    assert_eq!(list, json!([]));
}

/// The person's own rotation: a revoked grant is 404 (no new key for it), like the
/// operator's.
#[tokio::test]
async fn the_person_cannot_rotate_a_revoked_grant() {
    let app = spawn_app_with(plans).await;
    let b = person(&app).await;
    let made = json_of(b.post("/api/grants", json!({"name": "notes"})).await, 201).await;
    let id = made["grant"]["id"].as_str().unwrap().to_owned();
    let path = format!("/api/grants/{id}");
    assert_eq!(b.send(Method::DELETE, &path, json!({})).await.status(), 204);
    let res = b
        .post(&format!("{path}/rotate"), json!({"grace_seconds": 60}))
        .await;
    assert_openai_error(res, 404, "not_found").await;
    assert_eq!(listed(&b, &id).await.unwrap()["state"], "revoked");
}

/// A malicious app at consent: whatever it asks for (through the popup body or the
/// redirect query), in whatever shape, the grant never exceeds the plan, and odd
/// values are a 400 naming the field, never a crash.
#[tokio::test]
async fn an_app_cannot_get_more_than_the_plan_at_consent() {
    let app = spawn_app_with(plans).await;
    let mut b = person(&app).await;
    let deep = format!("{}1{}", "[".repeat(5000), "]".repeat(5000));
    for (extra, param) in [
        (json!({"limits": {}}), "limits.rpm"),
        (
            json!({"limits": {"rpm": 60, "budget": {"usd": 1e308, "period": "month"}}}),
            "limits.budget.usd",
        ),
        (
            json!({"limits": {"rpm": 60, "budget": {"usd": -1, "period": "month"}}}),
            "limits.budget.usd",
        ),
        // Rounds to $0: a budget nothing fits in.
        (
            json!({"limits": {"rpm": 60, "budget": {"usd": 1e-12, "period": "month"}}}),
            "limits.budget.usd",
        ),
        (
            json!({"limits": {"rpm": 4_294_967_356u64, "budget": {"usd": 5, "period": "month"}}}),
            "limits.rpm",
        ),
        (
            json!({"limits": {"rpm": 60, "tpm": 18_446_744_073_709_551_615u64 as f64,
                              "budget": {"usd": 5, "period": "month"}}}),
            "limits.tpm",
        ),
        (
            json!({"limits": {"rpm": 60, "budget": {"usd": 5, "tokens": -1, "period": "month"}}}),
            "limits.budget.tokens",
        ),
        (json!({"limits": "{\"rpm\": 1}"}), "limits"),
        (json!({"plan": "open", "limits": [60]}), "limits"),
        (json!({"plan": "../free"}), "plan"),
        (json!({"plan": "FREE"}), "plan"),
        (json!({"plan": "frее"}), "plan"),
        (json!({"plan": "x".repeat(10_000)}), "plan"),
        (json!({"plan": 1}), "plan"),
        (json!({"expires_at": "2001-01-01T00:00:00Z"}), "expires_at"),
        (json!({"expires_at": "2027-03-00T00:00:00Z"}), "expires_at"),
        (
            json!({"expires_at": "2030-01-01T00:00:00+-1:00"}),
            "expires_at",
        ),
        (json!({"expires_at": 4_102_444_800u64}), "expires_at"),
    ] {
        let res = popup(&mut b, extra.clone()).await;
        assert_eq!(param_of(res).await, param, "{extra}");
    }
    // Thousands of per-model entries (each only tightening) would bloat the record
    // every request reads.
    let many: serde_json::Map<String, Value> = (0..300)
        .map(|i| (format!("m{i}"), json!({"rpm": 1})))
        .collect();
    let res = popup(
        &mut b,
        json!({"limits": {"rpm": 60, "budget": {"usd": 5, "period": "month"}, "models": many}}),
    )
    .await;
    assert_eq!(param_of(res).await, "limits.models");
    // Nested past serde_json's depth limit: an unreadable body, not a crash.
    let started: Value = b
        .post("/api/connect/approve/start", json!({}))
        .await
        .json()
        .await
        .unwrap();
    let body = format!(
        r#"{{"ceremony": {}, "credential": {{}}, "origin": "{APP}", "limits": {deep}}}"#,
        started["ceremony"]
    );
    let res = b
        .request(Method::POST, "/api/connect/approve/finish")
        .header("content-type", "application/json")
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 400);

    // The redirect query: refused on the page, before the person is asked.
    let ch = challenge(VERIFIER);
    let with = |extra: &[(&str, &str)]| {
        let params = good_params(&ch);
        let mut refs: Vec<(&str, &str)> = params.iter().map(|(k, v)| (*k, v.as_str())).collect();
        refs.extend_from_slice(extra);
        connect_url(&refs)
    };
    let deep_object = format!("{}1{}", r#"{"budget":"#.repeat(300), "}".repeat(300));
    for (extra, param) in [
        (vec![("limits", "{}")], "limits.rpm"),
        (vec![("limits", deep.as_str())], "limits"),
        (vec![("limits", deep_object.as_str())], "limits"),
        (
            vec![(
                "limits",
                r#"{"rpm": 60, "budget": {"usd": 1e999, "period": "month"}}"#,
            )],
            "limits",
        ),
        (vec![("plan", "free\u{0}")], "plan"),
        (vec![("plan", "<script>")], "plan"),
    ] {
        let res = b.get(&with(&extra)).await;
        assert!(!res.headers().contains_key("location"));
        assert_eq!(param_of(res).await, param, "{extra:?}");
    }
    // The approve form is held to the plan whatever the page showed.
    let res = approve_redirect(&mut b, &[("limits", r#"{"rpm": 61}"#)]).await;
    assert_eq!(res.status(), 400);
    let res = approve_redirect(&mut b, &[("limits", "{}")]).await;
    assert_eq!(res.status(), 400);
    // Nothing above was granted.
    let all: Value = b.get("/api/grants").await.json().await.unwrap();
    assert_eq!(all, json!([]));
}

/// An app that knows another person's grant id (it is in that person's key) cannot
/// re-key it through its own user's approval, nor learn that it exists: the answer is
/// the one for an id nobody has, and the victim's key is not rotated.
#[tokio::test]
async fn reconnecting_to_another_persons_grant_is_not_found_and_rotates_nothing() {
    let app = spawn_app_with(plans).await;
    let mut victim = person(&app).await;
    let theirs = json_of(popup(&mut victim, json!({})).await, 201).await;
    let id = theirs["grant"]["id"].as_str().unwrap();
    let key = theirs["api_key"].as_str().unwrap();

    let mut attacker = person(&app).await;
    let res = popup(&mut attacker, json!({"reuse_grant_id": id})).await;
    let err = assert_openai_error(res, 404, "not_found").await;
    let res = popup(
        &mut attacker,
        json!({"reuse_grant_id": GrantId::generate().to_string()}),
    )
    .await;
    let unknown = assert_openai_error(res, 404, "not_found").await;
    assert_eq!(err, unknown, "the answer tells nothing about the id");
    let res = approve_redirect(&mut attacker, &[("reuse_grant_id", id)]).await;
    if res.status() == 302 {
        let code = code_from(&res);
        let res = exchange(&app, &code, VERIFIER).await;
        assert_openai_error(res, 404, "not_found").await;
    }
    let shown = listed(&victim, id).await.unwrap();
    assert_eq!(shown["rotated_until"], Value::Null);
    assert_eq!(status(&app, key).await, 200);
}

/// A redirect-mode reconnection whose approved expiry passed while its code waited:
/// the exchange is refused (400 `expires_at`), and the existing grant and its key are
/// left as they were (not re-keyed into an already expired grant).
#[tokio::test]
async fn a_reconnect_code_whose_expiry_passed_is_refused_and_rekeys_nothing() {
    let app = spawn_app_with_clock(manual_clock(), plans).await;
    let mut b = person(&app).await;
    let first = json_of(popup(&mut b, json!({})).await, 201).await;
    let id = first["grant"]["id"].as_str().unwrap();
    let key = first["api_key"].as_str().unwrap();
    let soon = to_rfc3339(app.clock.now() + 60);
    let res = approve_redirect(&mut b, &[("reuse_grant_id", id), ("expires_at", &soon)]).await;
    let code = code_from(&res);
    app.clock.advance(61);
    let res = exchange(&app, &code, VERIFIER).await;
    assert_eq!(param_of(res).await, "expires_at");
    let shown = listed(&b, id).await.unwrap();
    assert_eq!(shown["expires_at"], Value::Null);
    assert_eq!(shown["rotated_until"], Value::Null);
    assert_eq!(status(&app, key).await, 200);
}

/// Day 0 of a month in a date (`2027-03-00`) once overflowed the calendar math: every
/// place that reads a date answers 400 naming the field.
#[tokio::test]
async fn day_zero_dates_are_refused_everywhere() {
    let app = spawn_app_with(plans).await;
    let b = person(&app).await;
    let made = json_of(b.post("/api/grants", json!({"name": "notes"})).await, 201).await;
    let id = made["grant"]["id"].as_str().unwrap();
    for date in ["2027-03-00T00:00:00Z", "2027-01-00T00:00:00Z"] {
        let res = b
            .post("/api/grants", json!({"name": "x", "expires_at": date}))
            .await;
        assert_eq!(param_of(res).await, "expires_at");
        let res = b
            .send(
                Method::PATCH,
                &format!("/api/grants/{id}"),
                json!({"expires_at": date}),
            )
            .await;
        assert_eq!(param_of(res).await, "expires_at");
    }
    let res = b
        .get(&format!(
            "/api/grants/{id}/usage?from=2027-03-00&to=2027-03-01"
        ))
        .await;
    assert_eq!(res.status(), 400);
    // The server is still answering.
    assert_eq!(b.get("/api/grants").await.status(), 200);
}

/// The largest numbers each limit's type holds are limits like any other: requests go
/// through, with the rate-limit headers, and nothing in the policy math overflows.
#[tokio::test]
async fn the_largest_limits_are_served_without_overflow() {
    let app = spawn_app_with(|_| {}).await;
    let g = app
        .enrolled_grant_with(&json!({"name": "huge", "limits": {
            "rpm": u32::MAX, "tpm": u64::MAX, "max_concurrency": u32::MAX,
            "budget": {"usd": 1e9, "tokens": u64::MAX, "period": "month"},
            "models": {"gpt-4o": {"rpm": u32::MAX, "tpm": u64::MAX,
                                  "budget": {"usd": 1e9, "tokens": u64::MAX, "period": "day"}}}}}))
        .await;
    for _ in 0..3 {
        let res = app.chat_completions(&g.api_key, &chat("gpt-4o")).await;
        assert_eq!(res.status(), 200);
        assert!(res.headers().contains_key("x-ratelimit-remaining-tokens"));
    }
    let info = app.key_info(&g.api_key).await;
    assert_eq!(info["limits"]["tpm"], json!(u64::MAX));
}

/// Re-keying an existing connection keeps its plan and the limits the person set (the
/// consent page hides plan and limits for a re-key and says so). An app asking again
/// with a looser plan, or its own plan to reset what the person lowered, gets a new key
/// and nothing more.
#[tokio::test]
async fn a_reconnect_cannot_move_the_plan_or_reset_lowered_limits() {
    let app = spawn_app_with(plans).await;
    let mut b = person(&app).await;
    let first = json_of(popup(&mut b, json!({"plan": "free"})).await, 201).await;
    let id = first["grant"]["id"].as_str().unwrap().to_owned();
    let lowered = json!({"rpm": 10, "budget": {"usd": 1, "period": "month"}});
    let res = b
        .send(
            Method::PATCH,
            &format!("/api/grants/{id}"),
            json!({ "limits": lowered }),
        )
        .await;
    let before = json_of(res, 200).await["limits"].clone();

    // A plan this keygate does not have is not even looked at.
    for asked in ["open", "free", "gold"] {
        let again = popup(&mut b, json!({"reuse_grant_id": id, "plan": asked})).await;
        let again = json_of(again, 201).await;
        assert_eq!(again["grant"]["plan"], "free", "asked {asked}");
        assert_eq!(again["grant"]["limits"], before, "asked {asked}");
    }
    let res = approve_redirect(&mut b, &[("reuse_grant_id", &id), ("plan", "open")]).await;
    let code = code_from(&res);
    json_of(exchange(&app, &code, VERIFIER).await, 200).await;
    let shown = listed(&b, &id).await.unwrap();
    assert_eq!(
        (&shown["plan"], &shown["limits"]),
        (&json!("free"), &before)
    );

    // Limits sent with a re-key are held to the grant's own plan, whatever plan is named.
    let res = popup(
        &mut b,
        json!({"reuse_grant_id": id, "plan": "open", "limits": {"rpm": 1000}}),
    )
    .await;
    assert_eq!(param_of(res).await, "limits.rpm");
    let res = popup(
        &mut b,
        json!({"reuse_grant_id": id, "limits": {"rpm": 5, "budget": {"usd": 1, "period": "month"}}}),
    )
    .await;
    assert_eq!(json_of(res, 201).await["grant"]["limits"]["rpm"], 5);
}

/// Another person's grant id is answered exactly like an id nobody has, on every grant
/// route (reads included), so ids cannot be probed for existence.
#[tokio::test]
async fn another_persons_grant_id_is_answered_like_an_unknown_one() {
    let app = spawn_app_with(plans).await;
    let victim = person(&app).await;
    let made = json_of(
        victim.post("/api/grants", json!({"name": "theirs"})).await,
        201,
    )
    .await;
    let theirs = made["grant"]["id"].as_str().unwrap().to_owned();
    let mut attacker = person(&app).await;
    attacker.reauth().await;
    let unknown = GrantId::generate().to_string();
    let unknown = unknown.as_str();
    let answer = |id: &str| {
        let mut routes = changing_routes(id);
        routes.push((Method::GET, format!("/api/grants/{id}"), Value::Null));
        routes.push((Method::GET, format!("/api/grants/{id}/usage"), Value::Null));
        routes
    };
    for ((method, path, body), (_, unknown_path, _)) in
        answer(&theirs).into_iter().zip(answer(unknown))
    {
        let send = |path: String| {
            let mut req = attacker.request(method.clone(), &path);
            if !body.is_null() {
                req = req.json(&body);
            }
            req.send()
        };
        let a = assert_openai_error(send(path.clone()).await.unwrap(), 404, "not_found").await;
        let b = assert_openai_error(send(unknown_path).await.unwrap(), 404, "not_found").await;
        assert_eq!(a, b, "{method} {path}");
    }
    assert_eq!(listed(&victim, &theirs).await.unwrap()["name"], "theirs");
}

/// An expired connection is neither offered for re-keying nor re-keyed: a re-key keeps
/// the grant's expiry, so it would hand the app a key that is dead on arrival.
#[tokio::test]
async fn an_expired_connection_is_not_offered_nor_re_keyed() {
    let app = spawn_app_with_clock(manual_clock(), plans).await;
    let mut b = person(&app).await;
    let soon = to_rfc3339(app.clock.now() + 60);
    let first = json_of(popup(&mut b, json!({"expires_at": soon})).await, 201).await;
    let id = first["grant"]["id"].as_str().unwrap().to_owned();
    let existing = format!("/api/connect/existing?origin={APP}");
    let offered = json_of(b.get(&existing).await, 200).await;
    assert_eq!(offered.as_array().unwrap().len(), 1);
    app.clock.advance(60);
    assert_eq!(json_of(b.get(&existing).await, 200).await, json!([]));
    let res = popup(&mut b, json!({"reuse_grant_id": id})).await;
    assert_openai_error(res, 404, "not_found").await;
    let shown = listed(&b, &id).await.unwrap();
    assert_eq!(shown["rotated_until"], Value::Null, "not re-keyed");
    // A new connection is what works.
    assert_eq!(popup(&mut b, json!({})).await.status(), 201);
}
