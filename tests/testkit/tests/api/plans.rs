//! Plans from the configuration: which plan a new grant gets (asked for, else
//! `default_plan`, else none), its limits copied into the grant, the person and apps
//! held to it, the operator not, and the consent page's `GET /api/connect/plan`.

use keygate_server::config::RawConfig;
use keygate_testkit::{TestApp, spawn_app, spawn_app_with};
use reqwest::{Method, Response};
use serde_json::{Value, json};

use crate::connect::{
    VERIFIER, approve_redirect, challenge, code_from, connect_url, exchange, good_params, person,
    popup,
};
use crate::helpers::{assert_openai_error, param_of};

fn plans(c: &mut RawConfig) {
    c.plans = Some(
        serde_json::from_value(json!({
            "free": {"rpm": 20, "max_concurrency": 2,
                     "budget": {"usd": 5, "period": "month"}, "default_max_tokens": 1024},
            "pro": {"rpm": 120, "budget": {"usd": 50, "tokens": 20_000_000, "period": "month"},
                    "models": {"gpt-4o": {"rpm": 30, "budget": {"usd": 20, "period": "week"}}}},
        }))
        .unwrap(),
    );
    c.default_plan = Some("free".into());
}

fn free_limits() -> Value {
    json!({"rpm": 20, "tpm": null, "max_concurrency": 2,
           "budget": {"usd": 5.0, "tokens": null, "period": "month"}})
}

fn pro_limits() -> Value {
    json!({"rpm": 120, "tpm": null, "max_concurrency": null,
           "budget": {"usd": 50.0, "tokens": 20_000_000, "period": "month"},
           "models": {"gpt-4o": {"rpm": 30, "tpm": null,
                                 "budget": {"usd": 20.0, "tokens": null, "period": "week"}}}})
}

async fn admin_create(app: &TestApp, user: &str, body: Value) -> Response {
    app.admin(Method::POST, &format!("/admin/users/{user}/grants"))
        .json(&body)
        .send()
        .await
        .unwrap()
}

async fn created(res: Response) -> Value {
    let status = res.status();
    let v: Value = res.json().await.unwrap();
    assert_eq!(status, 201, "{v}");
    v["grant"].clone()
}

#[tokio::test]
async fn a_new_grant_gets_the_asked_plan_else_the_default_and_its_limits_are_copied() {
    let app = spawn_app_with(plans).await;
    let user = app.create_user("Ada").await;
    let g = created(admin_create(&app, &user, json!({"name": "a"})).await).await;
    assert_eq!((&g["plan"], &g["limits"]), (&json!("free"), &free_limits()));
    let g = created(admin_create(&app, &user, json!({"name": "b", "plan": "pro"})).await).await;
    assert_eq!((&g["plan"], &g["limits"]), (&json!("pro"), &pro_limits()));
    // Given limits replace the plan's (the operator is not held to it).
    let g = created(
        admin_create(
            &app,
            &user,
            json!({"name": "c", "plan": "free", "limits": {"rpm": 999}}),
        )
        .await,
    )
    .await;
    assert_eq!(g["plan"], "free");
    assert_eq!(g["limits"]["rpm"], 999);
    assert_eq!(g["limits"]["budget"], Value::Null);
    // An unknown plan: 400 naming `plan`, for everyone.
    assert_eq!(
        param_of(admin_create(&app, &user, json!({"name": "d", "plan": "gold"})).await).await,
        "plan"
    );

    // The person: within the plan only.
    let b = person(&app).await;
    let g = created(b.post("/api/grants", json!({"name": "mine"})).await).await;
    assert_eq!((&g["plan"], &g["limits"]), (&json!("free"), &free_limits()));
    let lower = json!({"rpm": 10, "max_concurrency": 1, "budget": {"usd": 1, "period": "month"}});
    let g = created(
        b.post("/api/grants", json!({"name": "low", "limits": lower}))
            .await,
    )
    .await;
    assert_eq!(g["limits"]["budget"]["usd"], 1.0);
    let higher = json!({"rpm": 10, "max_concurrency": 1, "budget": {"usd": 6, "period": "month"}});
    let res = b
        .post("/api/grants", json!({"name": "high", "limits": higher}))
        .await;
    assert_eq!(param_of(res).await, "limits.budget.usd");
    let res = b
        .post("/api/grants", json!({"name": "x", "plan": "gold"}))
        .await;
    assert_eq!(param_of(res).await, "plan");
    // Pro, lowered everywhere including its per-model budget.
    let pro_low = json!({"rpm": 60, "budget": {"usd": 10, "tokens": 1000, "period": "month"},
                         "models": {"gpt-4o": {"rpm": 5, "budget": {"usd": 2, "period": "week"}}}});
    let g = created(
        b.post(
            "/api/grants",
            json!({"name": "pro", "plan": "pro", "limits": pro_low}),
        )
        .await,
    )
    .await;
    assert_eq!(g["limits"]["models"]["gpt-4o"]["budget"]["usd"], 2.0);
}

#[tokio::test]
async fn without_a_default_plan_a_grant_has_no_plan_and_no_limits() {
    let app = spawn_app().await;
    let user = app.create_user("Ada").await;
    let g = created(admin_create(&app, &user, json!({"name": "a"})).await).await;
    assert_eq!(g["plan"], Value::Null);
    assert_eq!(
        g["limits"],
        json!({"rpm": null, "tpm": null, "max_concurrency": null, "budget": null})
    );
    // No plans at all: naming one is refused.
    assert_eq!(
        param_of(admin_create(&app, &user, json!({"name": "b", "plan": "free"})).await).await,
        "plan"
    );
}

#[tokio::test]
async fn the_consent_page_reads_a_plan_without_signing_in() {
    let app = spawn_app_with(plans).await;
    let anon = &app.client;
    let get = |q: &str| anon.get(app.url(&format!("/api/connect/plan{q}"))).send();
    let res = get("?name=pro").await.unwrap();
    assert_eq!(res.status(), 200);
    let v: Value = res.json().await.unwrap();
    assert_eq!(
        v,
        json!({"name": "pro", "limits": pro_limits(), "default_max_tokens": null,
               "use_operator_key": false, "own_key": "allowed"})
    );
    let v: Value = get("").await.unwrap().json().await.unwrap();
    assert_eq!(
        v,
        json!({"name": "free", "limits": free_limits(), "default_max_tokens": 1024,
               "use_operator_key": false, "own_key": "allowed"})
    );
    assert_openai_error(get("?name=gold").await.unwrap(), 404, "not_found").await;

    let bare = spawn_app().await;
    let v: Value = bare
        .client
        .get(bare.url("/api/connect/plan"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        v,
        json!({"name": null, "default_max_tokens": null, "use_operator_key": false,
               "own_key": "allowed", "limits": {"rpm": null, "tpm": null, "max_concurrency": null, "budget": null}})
    );
}

#[tokio::test]
async fn a_popup_approval_gets_what_the_person_chose_within_the_plan() {
    let app = spawn_app_with(plans).await;
    let mut b = person(&app).await;
    // Asked for pro, lowered by the person: the grant gets the lowered limits.
    let lowered = json!({"rpm": 60, "budget": {"usd": 3, "tokens": 5000, "period": "month"},
                         "models": {"gpt-4o": {"rpm": 30, "budget": {"usd": 1, "period": "week"}}}});
    let res = popup(
        &mut b,
        json!({"plan": "pro", "limits": lowered, "expires_at": "2031-06-01T00:00:00Z"}),
    )
    .await;
    let g = created(res).await;
    assert_eq!(g["plan"], "pro");
    assert_eq!(g["limits"]["budget"]["usd"], 3.0);
    assert_eq!(g["expires_at"], "2031-06-01T00:00:00Z");
    // Above the plan: refused, and the passkey assertion is not spent on it.
    let raised = json!({"rpm": 20, "max_concurrency": 2, "budget": {"usd": 50, "period": "month"}});
    let res = popup(&mut b, json!({"limits": raised})).await;
    assert_eq!(param_of(res).await, "limits.budget.usd");
    let res = popup(&mut b, json!({"plan": "gold"})).await;
    assert_eq!(param_of(res).await, "plan");
    let res = popup(&mut b, json!({"expires_at": "2001-01-01T00:00:00Z"})).await;
    assert_eq!(param_of(res).await, "expires_at");
    // No plan and no limits: the default plan's.
    let g = created(popup(&mut b, json!({})).await).await;
    assert_eq!((&g["plan"], &g["limits"]), (&json!("free"), &free_limits()));

    // Re-approving the connection with new limits replaces them; without, they stay.
    let id = g["id"].as_str().unwrap();
    let tighter = json!({"rpm": 5, "max_concurrency": 1, "budget": {"usd": 1, "period": "month"}});
    let again =
        created(popup(&mut b, json!({"reuse_grant_id": id, "limits": tighter})).await).await;
    assert_eq!(again["limits"]["rpm"], 5);
    let again = created(popup(&mut b, json!({"reuse_grant_id": id})).await).await;
    assert_eq!(again["limits"]["rpm"], 5);
}

#[tokio::test]
async fn the_redirect_flow_carries_the_plan_and_the_approved_limits() {
    let app = spawn_app_with(plans).await;
    let mut b = person(&app).await;
    let ch = challenge(VERIFIER);
    let url_with = |extra: &[(&str, &str)]| {
        let params = good_params(&ch);
        let mut refs: Vec<(&str, &str)> = params.iter().map(|(k, v)| (*k, v.as_str())).collect();
        refs.extend_from_slice(extra);
        connect_url(&refs)
    };
    // The page refuses an unknown plan and limits above the plan, before anything else.
    for (extra, param) in [
        (vec![("plan", "gold")], "plan"),
        (
            vec![("plan", "free"), ("limits", r#"{"rpm": 500}"#)],
            "limits.rpm",
        ),
        (vec![("limits", "not json")], "limits"),
        (vec![("limits", r#"{"rpm": 0}"#)], "limits.rpm"),
    ] {
        let res = b.get(&url_with(&extra)).await;
        assert!(!res.headers().contains_key("location"));
        assert_eq!(param_of(res).await, param);
    }
    assert_eq!(b.get(&url_with(&[("plan", "pro")])).await.status(), 200);

    // Approved with lowered limits and an expiry: the exchanged grant has them.
    let approved = r#"{"rpm": 100, "budget": {"usd": 7, "tokens": 1000000, "period": "month"}, "models": {"gpt-4o": {"rpm": 1, "budget": {"usd": 1, "period": "week"}}}}"#;
    let res = approve_redirect(
        &mut b,
        &[
            ("plan", "pro"),
            ("limits", approved),
            ("expires_at", "2031-01-01T00:00:00Z"),
        ],
    )
    .await;
    let code = code_from(&res);
    let v: Value = exchange(&app, &code, VERIFIER).await.json().await.unwrap();
    let grants: Value = b.get("/api/grants").await.json().await.unwrap();
    let g = grants
        .as_array()
        .unwrap()
        .iter()
        .find(|g| g["id"] == v["grant_id"])
        .unwrap();
    assert_eq!(g["plan"], "pro");
    assert_eq!(g["limits"]["rpm"], 100);
    assert_eq!(g["limits"]["budget"]["usd"], 7.0);
    assert_eq!(g["expires_at"], "2031-01-01T00:00:00Z");
    // The approve form is held to the plan too (no code issued).
    let res = approve_redirect(&mut b, &[("plan", "free"), ("limits", approved)]).await;
    assert_eq!(res.status(), 400);
}
