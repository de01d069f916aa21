//! A grant's life after creation, through the public API: its limits and expiry shown
//! everywhere, changed with PATCH (the person within the plan, an operator beyond),
//! rotated with a grace, disabled and enabled, revoked then removed, re-keyed by a
//! reconnecting app. Time is the server's manual clock: no sleeps.

use keygate_core::calendar::to_rfc3339;
use keygate_testkit::browser::Browser;
use keygate_testkit::{TestApp, manual_clock, spawn_app, spawn_app_with, spawn_app_with_clock};
use reqwest::{Method, Response};
use serde_json::{Value, json};

use crate::connect::{VERIFIER, approve_redirect, code_from, exchange, person, popup};
use crate::helpers::{assert_openai_error, chat, json_of, listed};

async fn admin(app: &TestApp, method: Method, path: &str, body: Option<Value>) -> Response {
    let req = app.admin(method, path);
    match body {
        Some(b) => req.json(&b),
        None => req,
    }
    .send()
    .await
    .unwrap()
}

/// A grant made by the signed-in person through `POST /api/grants` (fresh session).
async fn person_grant(b: &Browser, body: Value) -> Value {
    json_of(b.post("/api/grants", body).await, 201).await
}

fn status_of(res: &Response) -> u16 {
    res.status().as_u16()
}

const LIMITS_IN: &str = r#"{"rpm": 60, "max_concurrency": 2,
    "budget": {"usd": 5, "period": "month"}, "models": {"gpt-4o": {"tpm": 1000}}}"#;

/// `LIMITS_IN` as every grant JSON shows it: all fields, absent ones null.
fn limits_out() -> Value {
    json!({"rpm": 60, "tpm": null, "max_concurrency": 2,
           "budget": {"usd": 5.0, "tokens": null, "period": "month"},
           "models": {"gpt-4o": {"rpm": null, "tpm": 1000, "budget": null}}})
}

#[tokio::test]
async fn limits_and_expiry_round_trip_in_every_create_path_and_every_list() {
    let app = spawn_app().await;
    let limits: Value = serde_json::from_str(LIMITS_IN).unwrap();
    // Any offset in, UTC out.
    let (expiry_in, expiry_out) = ("2031-01-01T01:00:00+01:00", "2031-01-01T00:00:00Z");

    // The operator.
    let user = app.create_user("Ada").await;
    let made = app
        .create_grant_with(
            &user,
            &json!({"name": "ops", "limits": limits, "expires_at": expiry_in}),
        )
        .await;
    assert_eq!(made["grant"]["limits"], limits_out());
    assert_eq!(made["grant"]["expires_at"], expiry_out);
    assert_eq!(made["grant"]["rotated_until"], Value::Null);
    let list = json_of(
        admin(
            &app,
            Method::GET,
            &format!("/admin/users/{user}/grants"),
            None,
        )
        .await,
        200,
    )
    .await;
    assert_eq!(list[0]["limits"], limits_out());
    assert_eq!(list[0]["expires_at"], expiry_out);
    // A grant without limits shows every field null; without expiry, null.
    let plain = app.create_grant(&user, "plain", None).await;
    assert_eq!(
        plain["grant"]["limits"],
        json!({"rpm": null, "tpm": null, "max_concurrency": null, "budget": null})
    );
    assert_eq!(plain["grant"]["expires_at"], Value::Null);

    // The person, from the dashboard.
    let mut b = person(&app).await;
    let mine = person_grant(
        &b,
        json!({"name": "mine", "limits": limits, "expires_at": expiry_in}),
    )
    .await;
    let id = mine["grant"]["id"].as_str().unwrap();
    assert_eq!(mine["grant"]["limits"], limits_out());
    let shown = listed(&b, id).await.unwrap();
    assert_eq!(shown["limits"], limits_out());
    assert_eq!(shown["expires_at"], expiry_out);
    // Shown one at a time too, to its owner and to the operator.
    let one = json_of(b.get(&format!("/api/grants/{id}")).await, 200).await;
    assert_eq!(one, shown);
    let res = admin(&app, Method::GET, &format!("/admin/grants/{id}"), None).await;
    assert_eq!(json_of(res, 200).await, shown);
    let other = person(&app).await;
    assert_openai_error(
        other.get(&format!("/api/grants/{id}")).await,
        404,
        "not_found",
    )
    .await;

    // The popup approval.
    let res = popup(&mut b, json!({"limits": limits, "expires_at": expiry_in})).await;
    let approved = json_of(res, 201).await;
    assert_eq!(approved["grant"]["limits"], limits_out());
    assert_eq!(approved["grant"]["expires_at"], expiry_out);
    let shown = listed(&b, approved["grant"]["id"].as_str().unwrap())
        .await
        .unwrap();
    assert_eq!(shown["limits"], limits_out());

    // The redirect flow: limits as JSON text in the form, carried by the code.
    let res = approve_redirect(&mut b, &[("limits", LIMITS_IN), ("expires_at", expiry_in)]).await;
    let code = code_from(&res);
    let exchanged = json_of(exchange(&app, &code, VERIFIER).await, 200).await;
    let shown = listed(&b, exchanged["grant_id"].as_str().unwrap())
        .await
        .unwrap();
    assert_eq!(shown["limits"], limits_out());
    assert_eq!(shown["expires_at"], expiry_out);
}

#[tokio::test]
async fn create_bodies_are_refused_naming_the_field() {
    let app = spawn_app().await;
    let user = app.create_user("Ada").await;
    let b = person(&app).await;
    for (body, param) in [
        (json!({"limits": {"rpm": "60"}}), "limits.rpm"),
        (json!({"limits": {"rpm": 0}}), "limits.rpm"),
        (json!({"limits": {"rpn": 1}}), "limits.rpn"),
        (
            json!({"limits": {"budget": {"usd": -5, "period": "month"}}}),
            "limits.budget.usd",
        ),
        (
            json!({"limits": {"budget": {"usd": "5", "period": "month"}}}),
            "limits.budget.usd",
        ),
        (
            json!({"limits": {"budget": {"period": "month"}}}),
            "limits.budget",
        ),
        (
            json!({"limits": {"budget": {"usd": 5, "period": "year"}}}),
            "limits.budget.period",
        ),
        (json!({"expires_at": "2020-01-01T00:00:00Z"}), "expires_at"),
        (json!({"expires_at": "next tuesday"}), "expires_at"),
        (json!({"expires_at": 1_900_000_000}), "expires_at"),
        (json!({"plan": "gold"}), "plan"),
        (json!({"plan": "no such plan!"}), "plan"),
    ] {
        let mut full = json!({"name": "x"});
        for (k, v) in body.as_object().unwrap() {
            full[k] = v.clone();
        }
        let res = admin(
            &app,
            Method::POST,
            &format!("/admin/users/{user}/grants"),
            Some(full.clone()),
        )
        .await;
        let err = assert_openai_error(res, 400, "invalid_request").await;
        assert_eq!(err["error"]["param"], param, "admin {full}");
        let err = assert_openai_error(
            b.post("/api/grants", full.clone()).await,
            400,
            "invalid_request",
        )
        .await;
        assert_eq!(err["error"]["param"], param, "person {full}");
    }
    // Nothing was created by any of them.
    let list = json_of(
        admin(
            &app,
            Method::GET,
            &format!("/admin/users/{user}/grants"),
            None,
        )
        .await,
        200,
    )
    .await;
    assert_eq!(list, json!([]));
}

/// `free`: rpm 60, $5 a month; `pro`: more, and the default for nobody.
fn two_plans(c: &mut keygate_server::config::RawConfig) {
    c.plans = Some(
        serde_json::from_value(json!({
            "free": {"rpm": 60, "budget": {"usd": 5, "period": "month"}},
            "pro": {"rpm": 600, "budget": {"usd": 50, "period": "month"},
                    "models": {"gpt-4o": {"rpm": 10}}},
        }))
        .unwrap(),
    );
    c.default_plan = Some("free".into());
}

#[tokio::test]
async fn the_person_patches_within_the_plan_and_the_operator_beyond_it() {
    let app = spawn_app_with(two_plans).await;
    let b = person(&app).await;
    let made = person_grant(&b, json!({"name": "notes"})).await;
    let id = made["grant"]["id"].as_str().unwrap().to_owned();
    let key = made["api_key"].as_str().unwrap().to_owned();
    assert_eq!(made["grant"]["plan"], "free");
    assert_eq!(made["grant"]["limits"]["rpm"], 60);
    let path = format!("/api/grants/{id}");

    // Lower: fine, shown at once and in the list.
    let tighter = json!({"rpm": 30, "budget": {"usd": 2.5, "period": "month"}});
    let res = b
        .send(
            Method::PATCH,
            &path,
            json!({"limits": tighter, "name": "Notes (work)"}),
        )
        .await;
    let patched = json_of(res, 200).await;
    assert_eq!(patched["limits"]["rpm"], 30);
    assert_eq!(patched["limits"]["budget"]["usd"], 2.5);
    assert_eq!(patched["name"], "Notes (work)");
    assert_eq!(listed(&b, &id).await.unwrap()["limits"], patched["limits"]);

    // Above the plan, removing a plan limit, a looser period: 400 naming the field.
    for (limits, param) in [
        (
            json!({"rpm": 61, "budget": {"usd": 5, "period": "month"}}),
            "limits.rpm",
        ),
        (
            json!({"rpm": 60, "budget": {"usd": 5.01, "period": "month"}}),
            "limits.budget.usd",
        ),
        (
            json!({"budget": {"usd": 5, "period": "month"}}),
            "limits.rpm",
        ),
        (json!({"rpm": 60}), "limits.budget"),
        (
            json!({"rpm": 60, "budget": {"usd": 1, "period": "day"}}),
            "limits.budget.period",
        ),
        (Value::Null, "limits.rpm"),
        (
            json!({"rpm": 60, "budget": {"usd": 5, "period": "month"}, "burst": 1}),
            "limits.burst",
        ),
    ] {
        let res = b
            .send(Method::PATCH, &path, json!({"limits": limits}))
            .await;
        let err = assert_openai_error(res, 400, "invalid_request").await;
        assert_eq!(err["error"]["param"], param, "{limits}");
    }
    // Sending the grant's own plan back is fine (a dashboard may send the whole grant).
    let res = b.send(Method::PATCH, &path, json!({"plan": "free"})).await;
    assert_eq!(status_of(&res), 200);
    // The person cannot change the plan, nor set a past expiry.
    let err = assert_openai_error(
        b.send(Method::PATCH, &path, json!({"plan": "pro"})).await,
        400,
        "invalid_request",
    )
    .await;
    assert_eq!(err["error"]["param"], "plan");
    let err = assert_openai_error(
        b.send(
            Method::PATCH,
            &path,
            json!({"expires_at": "2001-01-01T00:00:00Z"}),
        )
        .await,
        400,
        "invalid_request",
    )
    .await;
    assert_eq!(err["error"]["param"], "expires_at");
    // Nothing of that changed the grant.
    assert_eq!(listed(&b, &id).await.unwrap()["limits"], patched["limits"]);

    // Without the CSRF Origin: 403; without a session: 401.
    let res = b
        .client
        .request(Method::PATCH, app.url(&path))
        .json(&json!({"name": "x"}))
        .send()
        .await
        .unwrap();
    assert_openai_error(res, 403, "csrf_failed").await;
    let stranger = app.browser();
    assert_openai_error(
        stranger
            .send(Method::PATCH, &path, json!({"name": "x"}))
            .await,
        401,
        "not_signed_in",
    )
    .await;

    // The change holds from the very next proxied request.
    let res = b
        .send(Method::PATCH, &path, json!({"models": ["gpt-4o-mini"]}))
        .await;
    assert_eq!(status_of(&res), 200);
    assert_openai_error(
        app.chat_completions(&key, &chat("gpt-4o")).await,
        403,
        "model_not_allowed",
    )
    .await;
    assert_eq!(
        app.chat_completions(&key, &chat("gpt-4o-mini"))
            .await
            .status(),
        200
    );

    // The operator is not held to the plan ...
    let admin_path = format!("/admin/grants/{id}");
    let res = admin(
        &app,
        Method::PATCH,
        &admin_path,
        Some(json!({"limits": {"rpm": 5000}})),
    )
    .await;
    let by_op = json_of(res, 200).await;
    assert_eq!(by_op["limits"]["rpm"], 5000);
    assert_eq!(by_op["limits"]["budget"], Value::Null);
    // ... and may move the grant to another plan: its limits come along.
    let res = admin(
        &app,
        Method::PATCH,
        &admin_path,
        Some(json!({"plan": "pro"})),
    )
    .await;
    let moved = json_of(res, 200).await;
    assert_eq!(moved["plan"], "pro");
    assert_eq!(moved["limits"]["rpm"], 600);
    assert_eq!(moved["limits"]["models"]["gpt-4o"]["rpm"], 10);
    // Naming the plan it is already on changes nothing.
    let res = admin(
        &app,
        Method::PATCH,
        &admin_path,
        Some(json!({"limits": {"rpm": 7}})),
    )
    .await;
    assert_eq!(json_of(res, 200).await["limits"]["rpm"], 7);
    let res = admin(
        &app,
        Method::PATCH,
        &admin_path,
        Some(json!({"plan": "pro"})),
    )
    .await;
    assert_eq!(json_of(res, 200).await["limits"]["rpm"], 7);
    let res = admin(
        &app,
        Method::PATCH,
        &admin_path,
        Some(json!({"plan": "gold"})),
    )
    .await;
    let err = assert_openai_error(res, 400, "invalid_request").await;
    assert_eq!(err["error"]["param"], "plan");
    // Now the person is held to `pro`.
    let res = b
        .send(Method::PATCH, &path, json!({"limits": {"rpm": 601, "budget": {"usd": 1, "period": "month"}, "models": {"gpt-4o": {"rpm": 10}}}}))
        .await;
    let err = assert_openai_error(res, 400, "invalid_request").await;
    assert_eq!(err["error"]["param"], "limits.rpm");
    let res = b
        .send(
            Method::PATCH,
            &path,
            json!({"limits": {"rpm": 600, "budget": {"usd": 1, "period": "month"}}}),
        )
        .await;
    let err = assert_openai_error(res, 400, "invalid_request").await;
    assert_eq!(err["error"]["param"], "limits.models.gpt-4o.rpm");
    // Unknown grants: 404.
    let res = admin(
        &app,
        Method::PATCH,
        "/admin/grants/aaaaaaaaaaaaaaaaaaaaaa",
        Some(json!({})),
    )
    .await;
    assert_openai_error(res, 404, "not_found").await;
}

#[tokio::test]
async fn expiry_set_with_patch_ends_the_key_on_time_and_null_clears_it() {
    let app = spawn_app_with_clock(manual_clock(), |_| {}).await;
    let g = app.enrolled_grant(None).await;
    let path = format!("/admin/grants/{}", g.grant_id);
    let at = app.clock.now() + 60;
    let res = admin(
        &app,
        Method::PATCH,
        &path,
        Some(json!({"expires_at": to_rfc3339(at)})),
    )
    .await;
    assert_eq!(json_of(res, 200).await["expires_at"], to_rfc3339(at));
    app.clock.advance(59);
    assert_eq!(
        app.chat_completions(&g.api_key, &chat("gpt-4o"))
            .await
            .status(),
        200
    );
    app.clock.advance(1);
    assert_openai_error(
        app.chat_completions(&g.api_key, &chat("gpt-4o")).await,
        401,
        "expired_api_key",
    )
    .await;
    // Cleared: the key works again.
    let res = admin(
        &app,
        Method::PATCH,
        &path,
        Some(json!({"expires_at": null})),
    )
    .await;
    assert_eq!(json_of(res, 200).await["expires_at"], Value::Null);
    assert_eq!(
        app.chat_completions(&g.api_key, &chat("gpt-4o"))
            .await
            .status(),
        200
    );
}

#[tokio::test]
async fn a_rotated_key_keeps_working_until_the_grace_ends_and_only_the_newest_old_one() {
    let app = spawn_app_with_clock(manual_clock(), |_| {}).await;
    let g = app.enrolled_grant(None).await;
    let rotate = |grace: Value| {
        let path = format!("/admin/grants/{}/rotate", g.grant_id);
        let app = &app;
        async move {
            admin(
                app,
                Method::POST,
                &path,
                Some(json!({"grace_seconds": grace})),
            )
            .await
        }
    };
    let works = |key: String| {
        let app = &app;
        async move {
            app.chat_completions(&key, &chat("gpt-4o"))
                .await
                .status()
                .as_u16()
        }
    };

    let first = json_of(rotate(json!(60)).await, 200).await;
    let second_key = first["api_key"].as_str().unwrap().to_owned();
    assert_ne!(second_key, g.api_key);
    assert_eq!(first["base_url"], app.base_url);
    assert_eq!(first["grant"]["rotated_until"], app.clock.now() + 60);
    assert_eq!(works(second_key.clone()).await, 200);
    app.clock.advance(59);
    assert_eq!(
        works(g.api_key.clone()).await,
        200,
        "old key at grace - 1 s"
    );
    app.clock.advance(1);
    let res = app.chat_completions(&g.api_key, &chat("gpt-4o")).await;
    assert_openai_error(res, 401, "invalid_api_key").await;
    assert_eq!(works(second_key.clone()).await, 200);

    // Twice in a row: only the secret replaced last keeps its grace.
    let third = json_of(rotate(json!(100)).await, 200).await;
    let third_key = third["api_key"].as_str().unwrap().to_owned();
    let fourth = json_of(rotate(json!(100)).await, 200).await;
    let fourth_key = fourth["api_key"].as_str().unwrap().to_owned();
    assert_eq!(works(second_key.clone()).await, 401, "two rotations ago");
    assert_eq!(works(third_key.clone()).await, 200, "the newest old key");
    assert_eq!(works(fourth_key.clone()).await, 200);

    // Without grace the old key stops at once, and nothing shows as rotated.
    let fifth = json_of(rotate(Value::Null).await, 200).await;
    assert_eq!(fifth["grant"]["rotated_until"], Value::Null);
    assert_eq!(works(fourth_key).await, 401);
    assert_eq!(works(third_key).await, 401);
    assert_eq!(
        works(fifth["api_key"].as_str().unwrap().to_owned()).await,
        200
    );

    // The grace is bounded: a week.
    let err = assert_openai_error(rotate(json!(604_801)).await, 400, "invalid_request").await;
    assert_eq!(err["error"]["param"], "grace_seconds");
    let err = assert_openai_error(rotate(json!(-1)).await, 400, "invalid_request").await;
    assert_eq!(err["error"]["param"], "grace_seconds");
}

#[tokio::test]
async fn the_person_rotates_with_a_fresh_passkey_check() {
    let app = spawn_app_with_clock(manual_clock(), |_| {}).await;
    let mut b = person(&app).await;
    let made = person_grant(&b, json!({"name": "notes"})).await;
    let id = made["grant"]["id"].as_str().unwrap();
    let old = made["api_key"].as_str().unwrap();
    let path = format!("/api/grants/{id}/rotate");
    let res = b.post(&path, json!({"grace_seconds": 30})).await;
    let rotated = json_of(res, 200).await;
    let new = rotated["api_key"].as_str().unwrap();
    assert_eq!(rotated["grant"]["rotated_until"], app.clock.now() + 30);
    assert_eq!(
        listed(&b, id).await.unwrap()["rotated_until"],
        app.clock.now() + 30
    );
    assert_eq!(
        app.chat_completions(old, &chat("gpt-4o")).await.status(),
        200
    );
    assert_eq!(
        app.chat_completions(new, &chat("gpt-4o")).await.status(),
        200
    );
    app.clock.advance(30);
    assert_openai_error(
        app.chat_completions(old, &chat("gpt-4o")).await,
        401,
        "invalid_api_key",
    )
    .await;

    // Past the fresh window: step up first.
    app.clock.advance(301);
    assert_openai_error(
        b.post(&path, json!({})).await,
        403,
        "fresh_passkey_required",
    )
    .await;
    assert_eq!(b.reauth().await.status(), 204);
    assert_eq!(b.post(&path, json!({})).await.status(), 200);
}

#[tokio::test]
async fn disable_refuses_the_key_and_enable_restores_it() {
    let app = spawn_app().await;
    let mut b = person(&app).await;
    let made = person_grant(&b, json!({"name": "notes"})).await;
    let id = made["grant"]["id"].as_str().unwrap().to_owned();
    let key = made["api_key"].as_str().unwrap().to_owned();

    let off = json_of(
        b.post(&format!("/api/grants/{id}/disable"), json!({}))
            .await,
        200,
    )
    .await;
    assert_eq!(off["state"], "disabled");
    assert_eq!(listed(&b, &id).await.unwrap()["state"], "disabled");
    let err = assert_openai_error(
        app.chat_completions(&key, &chat("gpt-4o")).await,
        401,
        "invalid_api_key",
    )
    .await;
    let message = err["error"]["message"].as_str().unwrap();
    assert!(message.contains("the key has been disabled"), "{message}");
    let on = json_of(
        b.post(&format!("/api/grants/{id}/enable"), json!({})).await,
        200,
    )
    .await;
    assert_eq!(on["state"], "active");
    assert_eq!(
        app.chat_completions(&key, &chat("gpt-4o")).await.status(),
        200
    );

    // The operator too; and a disabled grant can still be rotated.
    let res = admin(
        &app,
        Method::POST,
        &format!("/admin/grants/{id}/disable"),
        None,
    )
    .await;
    assert_eq!(json_of(res, 200).await["state"], "disabled");
    assert_eq!(
        app.chat_completions(&key, &chat("gpt-4o")).await.status(),
        401
    );
    b.reauth().await;
    let rotated = json_of(
        b.post(&format!("/api/grants/{id}/rotate"), json!({})).await,
        200,
    )
    .await;
    assert_eq!(rotated["grant"]["state"], "disabled");
    let res = admin(
        &app,
        Method::POST,
        &format!("/admin/grants/{id}/enable"),
        None,
    )
    .await;
    assert_eq!(json_of(res, 200).await["state"], "active");
    let new_key = rotated["api_key"].as_str().unwrap();
    assert_eq!(
        app.chat_completions(new_key, &chat("gpt-4o"))
            .await
            .status(),
        200
    );

    // Revoked: neither can bring it back.
    assert_eq!(
        b.send(Method::DELETE, &format!("/api/grants/{id}"), json!({}))
            .await
            .status(),
        204
    );
    for path in [
        format!("/api/grants/{id}/enable"),
        format!("/api/grants/{id}/disable"),
    ] {
        assert_openai_error(b.post(&path, json!({})).await, 404, "not_found").await;
    }
    let res = admin(
        &app,
        Method::POST,
        &format!("/admin/grants/{id}/enable"),
        None,
    )
    .await;
    assert_openai_error(res, 404, "not_found").await;
    let res = b
        .send(
            Method::PATCH,
            &format!("/api/grants/{id}"),
            json!({"name": "back"}),
        )
        .await;
    assert_openai_error(res, 404, "not_found").await;
    assert_openai_error(
        app.chat_completions(new_key, &chat("gpt-4o")).await,
        401,
        "revoked_api_key",
    )
    .await;
}

#[tokio::test]
async fn deleting_a_revoked_grant_removes_it_from_the_list() {
    let app = spawn_app().await;
    let b = person(&app).await;
    let made = person_grant(&b, json!({"name": "notes"})).await;
    let id = made["grant"]["id"].as_str().unwrap().to_owned();
    let path = format!("/api/grants/{id}");
    assert_eq!(b.send(Method::DELETE, &path, json!({})).await.status(), 204);
    assert_eq!(listed(&b, &id).await.unwrap()["state"], "revoked");
    assert_eq!(b.send(Method::DELETE, &path, json!({})).await.status(), 204);
    assert!(listed(&b, &id).await.is_none(), "removed from the list");
    assert_openai_error(
        b.send(Method::DELETE, &path, json!({})).await,
        404,
        "not_found",
    )
    .await;

    // The operator: the same two steps.
    let g = app.enrolled_grant(None).await;
    let user_grants = format!("/admin/users/{}/grants", g.user_id);
    assert_eq!(app.revoke(&g.grant_id).await.status(), 204);
    let list = json_of(admin(&app, Method::GET, &user_grants, None).await, 200).await;
    assert_eq!(list[0]["state"], "revoked");
    assert_eq!(app.revoke(&g.grant_id).await.status(), 204);
    let list = json_of(admin(&app, Method::GET, &user_grants, None).await, 200).await;
    assert_eq!(list, json!([]));
    assert_openai_error(app.revoke(&g.grant_id).await, 404, "not_found").await;
    assert_openai_error(
        app.chat_completions(&g.api_key, &chat("gpt-4o")).await,
        401,
        "invalid_api_key",
    )
    .await;
}

#[tokio::test]
async fn a_reconnecting_app_keeps_its_old_key_for_the_reconnect_grace() {
    let app = spawn_app_with_clock(manual_clock(), |c| c.reconnect_grace_secs = Some(100)).await;
    let mut b = person(&app).await;
    let first = json_of(popup(&mut b, json!({})).await, 201).await;
    let id = first["grant"]["id"].as_str().unwrap();
    let old = first["api_key"].as_str().unwrap();
    let again = json_of(popup(&mut b, json!({"reuse_grant_id": id})).await, 201).await;
    assert_eq!(again["grant"]["id"], id);
    assert_eq!(again["grant"]["rotated_until"], app.clock.now() + 100);
    let new = again["api_key"].as_str().unwrap();
    app.clock.advance(99);
    assert_eq!(
        app.chat_completions(old, &chat("gpt-4o")).await.status(),
        200
    );
    assert_eq!(
        app.chat_completions(new, &chat("gpt-4o")).await.status(),
        200
    );
    app.clock.advance(1);
    assert_openai_error(
        app.chat_completions(old, &chat("gpt-4o")).await,
        401,
        "invalid_api_key",
    )
    .await;
    assert_eq!(
        app.chat_completions(new, &chat("gpt-4o")).await.status(),
        200
    );

    // With a grace of 0 the old key stops at once (the behaviour before grace existed).
    let app = spawn_app_with(|c| c.reconnect_grace_secs = Some(0)).await;
    let mut b = person(&app).await;
    let first = json_of(popup(&mut b, json!({})).await, 201).await;
    let id = first["grant"]["id"].as_str().unwrap();
    let again = json_of(popup(&mut b, json!({"reuse_grant_id": id})).await, 201).await;
    assert_eq!(again["grant"]["rotated_until"], Value::Null);
    let res = app
        .chat_completions(first["api_key"].as_str().unwrap(), &chat("gpt-4o"))
        .await;
    assert_openai_error(res, 401, "invalid_api_key").await;
}

/// Someone holding another person's session cookie (or just their own account) can
/// neither see, change, rotate, disable, enable nor delete a grant that is not theirs:
/// every such call is 404, and the grant is untouched.
#[tokio::test]
async fn a_person_cannot_touch_anyone_elses_grant() {
    let app = spawn_app_with(two_plans).await;
    let victim = person(&app).await;
    let made = person_grant(&victim, json!({"name": "victim's app"})).await;
    let id = made["grant"]["id"].as_str().unwrap().to_owned();
    let key = made["api_key"].as_str().unwrap().to_owned();
    let before = listed(&victim, &id).await.unwrap();

    let attacker = person(&app).await;
    assert!(listed(&attacker, &id).await.is_none());
    let path = format!("/api/grants/{id}");
    for res in [
        attacker
            .send(
                Method::PATCH,
                &path,
                json!({"limits": {"rpm": 1, "budget": {"usd": 1, "period": "month"}}}),
            )
            .await,
        attacker
            .post(&format!("{path}/rotate"), json!({"grace_seconds": 600}))
            .await,
        attacker.post(&format!("{path}/disable"), json!({})).await,
        attacker.post(&format!("{path}/enable"), json!({})).await,
        attacker.send(Method::DELETE, &path, json!({})).await,
    ] {
        assert_openai_error(res, 404, "not_found").await;
    }
    assert_eq!(listed(&victim, &id).await.unwrap(), before);
    assert_eq!(
        app.chat_completions(&key, &chat("gpt-4o")).await.status(),
        200
    );

    // With the victim's own session, the plan still bounds what can be set.
    let res = victim
        .send(
            Method::PATCH,
            &path,
            json!({"limits": {"rpm": 100000, "budget": {"usd": 1000, "period": "month"}}}),
        )
        .await;
    let err = assert_openai_error(res, 400, "invalid_request").await;
    assert_eq!(err["error"]["param"], "limits.rpm");
    let res = victim
        .send(Method::PATCH, &path, json!({"limits": null}))
        .await;
    assert_openai_error(res, 400, "invalid_request").await;
    assert_eq!(listed(&victim, &id).await.unwrap(), before);
}

#[tokio::test]
async fn widening_a_grant_needs_a_fresh_passkey_check_and_tightening_does_not() {
    let app = spawn_app_with_clock(manual_clock(), |_| {}).await;
    let mut b = person(&app).await;
    let now = app.clock.now();
    let made = person_grant(
        &b,
        json!({"name": "n", "models": ["gpt-4o-mini", "gpt-4o"], "limits": {"rpm": 60},
               "expires_at": to_rfc3339(now + 86_400)}),
    )
    .await;
    let id = made["grant"]["id"].as_str().unwrap().to_owned();
    let path = format!("/api/grants/{id}");
    // Past the fresh window of the sign-up.
    app.clock.advance(301);
    for body in [
        json!({"limits": {"rpm": 30}}),
        json!({"models": ["gpt-4o-mini"]}),
        json!({"expires_at": to_rfc3339(now + 3_600)}),
        json!({"name": "renamed", "scopes": ["inference"]}),
    ] {
        let res = b.send(Method::PATCH, &path, body.clone()).await;
        assert_eq!(status_of(&res), 200, "{body}");
    }
    assert_eq!(
        b.post(&format!("{path}/disable"), json!({})).await.status(),
        200
    );
    let before = listed(&b, &id).await.unwrap();
    for body in [
        json!({"limits": {"rpm": 31}}),
        json!({"limits": null}),
        json!({"models": []}),
        json!({"models": ["gpt-4o"]}),
        json!({"scopes": ["inference", "files"]}),
        json!({"expires_at": null}),
        json!({"expires_at": to_rfc3339(now + 7_200)}),
    ] {
        let res = b.send(Method::PATCH, &path, body.clone()).await;
        assert_openai_error(res, 403, "fresh_passkey_required").await;
    }
    let res = b.post(&format!("{path}/enable"), json!({})).await;
    assert_openai_error(res, 403, "fresh_passkey_required").await;
    assert_eq!(listed(&b, &id).await.unwrap(), before, "nothing changed");
    // After the passkey check every one of them goes through.
    assert_eq!(b.reauth().await.status(), 204);
    let res = b
        .send(
            Method::PATCH,
            &path,
            json!({"limits": null, "models": [], "scopes": ["inference", "files"], "expires_at": null}),
        )
        .await;
    let widened = json_of(res, 200).await;
    assert_eq!(widened["models"], json!([]));
    assert_eq!(widened["expires_at"], Value::Null);
    assert_eq!(widened["limits"]["rpm"], Value::Null);
    assert_eq!(
        b.post(&format!("{path}/enable"), json!({})).await.status(),
        200
    );
}
