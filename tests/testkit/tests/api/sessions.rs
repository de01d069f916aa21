use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use keygate_testkit::mock_openai::REJECTED_KEY_PREFIX;
use keygate_testkit::soft_passkey::SoftPasskey;
use keygate_testkit::{FAKE_OPENAI_KEY, TestApp, manual_clock, spawn_app, spawn_app_with_clock};
use reqwest::Method;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use crate::helpers::{assert_openai_error, chat};

#[tokio::test]
async fn without_a_session_everything_is_401() {
    let app = spawn_app().await;
    let b = app.browser();
    for (method, path) in [
        (Method::GET, "/api/me"),
        (Method::GET, "/api/key"),
        (Method::PUT, "/api/key"),
        (Method::GET, "/api/grants"),
        (Method::POST, "/api/grants"),
        (Method::GET, "/api/passkeys"),
        (Method::DELETE, "/api/account"),
    ] {
        let res = b
            .send(
                method.clone(),
                path,
                json!({"api_key": "sk-x", "name": "x"}),
            )
            .await;
        assert_openai_error(res, 401, "not_signed_in").await;
    }
    let res = b
        .request(Method::GET, "/api/me")
        .header("cookie", "keygate_session=forged")
        .send()
        .await
        .unwrap();
    assert_openai_error(res, 401, "not_signed_in").await;
}

#[tokio::test]
async fn csrf_foreign_or_missing_origin_changes_nothing() {
    let app = spawn_app().await;
    let mut b = app.browser();
    b.signed_up("Csrf").await;
    for origin in [
        Some("https://evil.example"),
        Some("null"),
        Some("http://localhost:1"),
        None,
    ] {
        let mut req = b
            .client
            .post(format!("{}/api/grants", app.address))
            .json(&json!({"name": "evil"}));
        if let Some(o) = origin {
            req = req.header("origin", o);
        }
        assert_openai_error(req.send().await.unwrap(), 403, "csrf_failed").await;
    }
    let res = b
        .client
        .post(format!("{}/api/auth/logout", app.address))
        .header("origin", "https://evil.example")
        .send()
        .await
        .unwrap();
    assert_openai_error(res, 403, "csrf_failed").await;
    let grants: Value = b.get("/api/grants").await.json().await.unwrap();
    assert!(
        grants.as_array().unwrap().is_empty(),
        "a CSRF request created a grant"
    );
    assert_eq!(
        b.get("/api/me").await.status(),
        200,
        "a CSRF logout signed us out"
    );
}

#[tokio::test]
async fn idle_sessions_expire() {
    // The default idle timeout (24 h), crossed on the server's manual clock: no sleep.
    const HOUR: u64 = 3600;
    let app = spawn_app_with_clock(manual_clock(), |_| {}).await;
    let mut b = app.browser();
    b.signed_up("Idle").await;
    assert_eq!(b.get("/api/me").await.status(), 200);
    // Each use within the idle timeout keeps the session alive...
    for _ in 0..2 {
        app.clock.advance(23 * HOUR);
        assert_eq!(b.get("/api/me").await.status(), 200);
    }
    // ...and a day without one ends it.
    app.clock.advance(24 * HOUR);
    assert_openai_error(b.get("/api/me").await, 401, "not_signed_in").await;
}

#[tokio::test]
async fn sessions_expire_absolutely_even_when_used() {
    // The default absolute lifetime (7 days) on the manual clock: used every 23 hours
    // (never idle for the 24 h idle timeout), it still ends after 7 days.
    const HOUR: u64 = 3600;
    let app = spawn_app_with_clock(manual_clock(), |_| {}).await;
    let mut b = app.browser();
    b.signed_up("Busy").await;
    for _ in 0..7 {
        assert_eq!(b.get("/api/me").await.status(), 200);
        app.clock.advance(23 * HOUR);
    }
    // 161 hours in: alive. 184 hours in: past 168.
    assert_eq!(b.get("/api/me").await.status(), 200);
    app.clock.advance(23 * HOUR);
    assert_openai_error(b.get("/api/me").await, 401, "not_signed_in").await;
}

#[tokio::test]
async fn logout_ends_the_session_for_good() {
    let app = spawn_app().await;
    let mut b = app.browser();
    b.signed_up("Bye").await;
    let cookie = b
        .client
        .get(format!("{}/api/me", app.address))
        .send()
        .await
        .unwrap();
    assert_eq!(cookie.status(), 200);
    // Remember the raw cookie to replay it after logout.
    let started: Value = b
        .post("/api/auth/login/start", json!({}))
        .await
        .json()
        .await
        .unwrap();
    let cred = b.passkey.get(&started["options"]).unwrap();
    let res = b
        .post(
            "/api/auth/login/finish",
            json!({"ceremony": started["ceremony"], "credential": cred}),
        )
        .await;
    let raw = res.headers()["set-cookie"]
        .to_str()
        .unwrap()
        .split(';')
        .next()
        .unwrap()
        .to_owned();
    let res = b.post("/api/auth/logout", json!({})).await;
    assert_eq!(res.status(), 204);
    assert!(
        res.headers()["set-cookie"]
            .to_str()
            .unwrap()
            .contains("Max-Age=0")
    );
    assert_eq!(b.get("/api/me").await.status(), 401);
    let replay = app
        .client
        .get(app.url("/api/me"))
        .header("cookie", raw)
        .send()
        .await
        .unwrap();
    assert_openai_error(replay, 401, "not_signed_in").await;
}

#[tokio::test]
async fn sensitive_actions_need_a_fresh_passkey_check() {
    // The default fresh window (5 minutes), crossed on the server's manual clock.
    let app = spawn_app_with_clock(manual_clock(), |_| {}).await;
    let mut b = app.browser();
    b.signed_up("Step Up").await;
    app.clock.advance(299);
    assert_eq!(
        b.send(Method::PUT, "/api/key", json!({"api_key": FAKE_OPENAI_KEY}))
            .await
            .status(),
        204
    );
    app.clock.advance(1);
    // Not fresh any more: replacing or deleting the key, removing a passkey, deleting
    // the account all ask for a passkey first, and change nothing.
    assert_openai_error(
        b.send(Method::PUT, "/api/key", json!({"api_key": "sk-other"}))
            .await,
        403,
        "fresh_passkey_required",
    )
    .await;
    assert_openai_error(
        b.send(Method::DELETE, "/api/key", json!({})).await,
        403,
        "fresh_passkey_required",
    )
    .await;
    assert_openai_error(
        b.send(Method::DELETE, "/api/account", json!({})).await,
        403,
        "fresh_passkey_required",
    )
    .await;
    let list: Value = b.get("/api/passkeys").await.json().await.unwrap();
    let pid = list[0]["id"].as_str().unwrap();
    assert_openai_error(
        b.send(Method::DELETE, &format!("/api/passkeys/{pid}"), json!({}))
            .await,
        403,
        "fresh_passkey_required",
    )
    .await;
    let key: Value = b.get("/api/key").await.json().await.unwrap();
    assert_eq!(key["enrolled"], true);
    // Creating a grant used to be an ordinary action; since issue 9 it needs a fresh
    // passkey check too (a stolen session must not mint keys), while reading does not.
    assert_openai_error(
        b.post("/api/grants", json!({"name": "not fresh"})).await,
        403,
        "fresh_passkey_required",
    )
    .await;
    assert_eq!(b.get("/api/grants").await.status(), 200);

    assert_eq!(b.reauth().await.status(), 204);
    assert_eq!(
        b.send(
            Method::PUT,
            "/api/key",
            json!({"api_key": "sk-replaced-9876"})
        )
        .await
        .status(),
        204
    );
    let key: Value = b.get("/api/key").await.json().await.unwrap();
    assert_eq!(key["last4"], "9876");
    assert_eq!(
        b.send(Method::DELETE, "/api/key", json!({})).await.status(),
        204
    );
    assert_eq!(
        b.get("/api/key").await.json::<Value>().await.unwrap()["enrolled"],
        false
    );
}

#[tokio::test]
async fn the_vault_api_stores_lists_and_refuses_keys() {
    let app = spawn_app().await;
    let mut b = app.browser();
    b.signed_up("Vault").await;
    let key: Value = b.get("/api/key").await.json().await.unwrap();
    // `status` and `rejected_at` were added by issue 9 (owner_key_rejected).
    assert_eq!(
        key,
        json!({"enrolled": false, "last4": null, "created_at": null, "last_validated_at": null,
               "status": "none", "rejected_at": null})
    );
    let res = b
        .send(
            Method::PUT,
            "/api/key",
            json!({"api_key": format!("{REJECTED_KEY_PREFIX}-bad-key")}),
        )
        .await;
    let body = assert_openai_error(res, 400, "key_rejected").await;
    assert!(!body.to_string().contains("-bad-key"));
    assert_eq!(
        b.get("/api/key").await.json::<Value>().await.unwrap()["enrolled"],
        false
    );

    let res = b
        .send(Method::PUT, "/api/key", json!({"api_key": FAKE_OPENAI_KEY}))
        .await;
    assert_eq!(res.status(), 204);
    assert!(res.text().await.unwrap().is_empty());
    let key: Value = b.get("/api/key").await.json().await.unwrap();
    assert_eq!(key["enrolled"], true);
    assert_eq!(key["last4"], "WXYZ");
    assert!(key["last_validated_at"].is_u64());
    assert!(!key.to_string().contains(FAKE_OPENAI_KEY));

    // Grants: create, use through the proxy, list without secrets, revoke.
    let res = b
        .post(
            "/api/grants",
            json!({"name": "notebook", "models": ["gpt-4o-mini"]}),
        )
        .await;
    assert_eq!(res.status(), 201);
    let created: Value = res.json().await.unwrap();
    let api_key = created["api_key"].as_str().unwrap();
    assert_eq!(created["base_url"], app.base_url);
    assert_eq!(
        app.chat_completions(api_key, &chat("gpt-4o-mini"))
            .await
            .status(),
        200
    );
    let list = b.get("/api/grants").await.text().await.unwrap();
    assert!(!list.contains(&api_key[20..]));
    let gid = created["grant"]["id"].as_str().unwrap();
    let mut other = app.browser();
    other.signed_up("Mallory").await;
    assert_openai_error(
        other
            .send(Method::DELETE, &format!("/api/grants/{gid}"), json!({}))
            .await,
        404,
        "not_found",
    )
    .await;
    assert_eq!(
        b.send(Method::DELETE, &format!("/api/grants/{gid}"), json!({}))
            .await
            .status(),
        204
    );
    assert_openai_error(
        app.chat_completions(api_key, &chat("gpt-4o-mini")).await,
        401,
        "revoked_api_key",
    )
    .await;
}

#[tokio::test]
async fn deleting_the_account_removes_everything_at_once() {
    let app = spawn_app().await;
    let mut b = app.browser();
    let user = b.signed_up("Leaving").await;
    b.send(Method::PUT, "/api/key", json!({"api_key": FAKE_OPENAI_KEY}))
        .await;
    let created: Value = b
        .post("/api/grants", json!({"name": "app"}))
        .await
        .json()
        .await
        .unwrap();
    let api_key = created["api_key"].as_str().unwrap().to_owned();
    assert_eq!(
        app.chat_completions(&api_key, &chat("gpt-4o-mini"))
            .await
            .status(),
        200
    );
    let mut laptop = b.with_same_passkey();
    assert_eq!(laptop.login().await.status(), 200);

    let res = b.send(Method::DELETE, "/api/account", json!({})).await;
    assert_eq!(res.status(), 204);
    assert_openai_error(
        app.chat_completions(&api_key, &chat("gpt-4o-mini")).await,
        401,
        "invalid_api_key",
    )
    .await;
    assert_eq!(b.get("/api/me").await.status(), 401);
    assert_eq!(
        laptop.get("/api/me").await.status(),
        401,
        "other sessions survived"
    );
    let mut again = b.with_same_passkey();
    assert_openai_error(again.login().await, 400, "ceremony_failed").await;
    let res = app
        .admin(
            Method::GET,
            &format!("/admin/users/{}", user["id"].as_str().unwrap()),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 404);
}

#[tokio::test]
async fn adding_a_passkey_creating_a_grant_and_the_first_key_need_a_fresh_check() {
    // A 2 s window, crossed on the server's manual clock.
    let app = spawn_app_with_clock(manual_clock(), |c| c.fresh_window_secs = Some(2)).await;
    let mut b = app.browser();
    b.signed_up("Fresh").await;
    // Started while fresh, finished when not: the finish checks again.
    let started: Value = b
        .post("/api/passkeys/start", json!({}))
        .await
        .json()
        .await
        .unwrap();
    let mut phone = SoftPasskey::new(&app.address);
    let cred = phone.create(&started["options"]).unwrap();
    app.clock.advance(3);

    // The first key: before issue 9 a plain session could store it.
    assert_openai_error(
        b.send(Method::PUT, "/api/key", json!({"api_key": FAKE_OPENAI_KEY}))
            .await,
        403,
        "fresh_passkey_required",
    )
    .await;
    assert_openai_error(
        b.post("/api/grants", json!({"name": "stale"})).await,
        403,
        "fresh_passkey_required",
    )
    .await;
    assert_openai_error(
        b.post("/api/passkeys/start", json!({})).await,
        403,
        "fresh_passkey_required",
    )
    .await;
    assert_openai_error(
        b.post(
            "/api/passkeys/finish",
            json!({"ceremony": started["ceremony"], "credential": cred}),
        )
        .await,
        403,
        "fresh_passkey_required",
    )
    .await;
    let key: Value = b.get("/api/key").await.json().await.unwrap();
    assert_eq!(key["enrolled"], false);
    let grants: Value = b.get("/api/grants").await.json().await.unwrap();
    assert!(grants.as_array().unwrap().is_empty());
    let passkeys: Value = b.get("/api/passkeys").await.json().await.unwrap();
    assert_eq!(passkeys.as_array().unwrap().len(), 1);

    // After a passkey check, each works.
    assert_eq!(b.reauth().await.status(), 204);
    assert_eq!(
        b.send(Method::PUT, "/api/key", json!({"api_key": FAKE_OPENAI_KEY}))
            .await
            .status(),
        204
    );
    assert_eq!(
        b.post("/api/grants", json!({"name": "fresh"}))
            .await
            .status(),
        201
    );
    assert_eq!(b.add_passkey(&mut phone, Some("Phone")).await.status(), 201);
}

/// The raw `name=value` of the session cookie a response set.
fn session_cookie(res: &reqwest::Response) -> String {
    res.headers()["set-cookie"]
        .to_str()
        .unwrap()
        .split(';')
        .next()
        .unwrap()
        .to_owned()
}

async fn me_with_cookie(app: &TestApp, cookie: &str) -> u16 {
    app.client
        .get(app.url("/api/me"))
        .header("cookie", cookie)
        .send()
        .await
        .unwrap()
        .status()
        .as_u16()
}

#[tokio::test]
async fn removing_a_passkey_ends_every_other_session() {
    let app = spawn_app().await;
    let mut laptop = app.browser();
    laptop.signed_up("Careful").await;
    let mut phone_key = SoftPasskey::new(&app.address);
    assert_eq!(
        laptop
            .add_passkey(&mut phone_key, Some("Phone"))
            .await
            .status(),
        201
    );
    // A second browser on the laptop's passkey, and the phone signed in with its own.
    let mut tablet = laptop.with_same_passkey();
    assert_eq!(tablet.login().await.status(), 200);
    let mut phone = app.browser();
    phone.passkey = phone_key;
    assert_eq!(phone.login().await.status(), 200);

    let list: Value = laptop.get("/api/passkeys").await.json().await.unwrap();
    let phone_id = list
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == "Phone")
        .unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_eq!(
        laptop
            .send(
                Method::DELETE,
                &format!("/api/passkeys/{phone_id}"),
                json!({})
            )
            .await
            .status(),
        204
    );
    assert_eq!(
        laptop.get("/api/me").await.status(),
        200,
        "this session stays"
    );
    assert_openai_error(phone.get("/api/me").await, 401, "not_signed_in").await;
    assert_openai_error(tablet.get("/api/me").await, 401, "not_signed_in").await;
    let sessions: Value = laptop.get("/api/sessions").await.json().await.unwrap();
    assert_eq!(sessions.as_array().unwrap().len(), 1, "{sessions}");
}

#[tokio::test]
async fn people_see_their_sessions_and_end_them() {
    let app = spawn_app().await;
    let mut laptop = app.browser();
    laptop.user_agent = Some("Laptop Browser/1.0".into());
    let res = laptop.register("Sessions").await;
    assert_eq!(res.status(), 201);
    let laptop_cookie = session_cookie(&res);
    let mut phone = laptop.with_same_passkey();
    let long_ua = format!("Phone Browser/2.0 {}", "x".repeat(400));
    phone.user_agent = Some(long_ua.clone());
    let res = phone.login().await;
    assert_eq!(res.status(), 200);
    let phone_cookie = session_cookie(&res);
    // One authenticator used from both browsers: keep its counter in step.
    laptop.passkey = phone.passkey.clone();

    let list: Value = laptop.get("/api/sessions").await.json().await.unwrap();
    let list = list.as_array().unwrap().clone();
    assert_eq!(list.len(), 2, "{list:?}");
    let mine = list.iter().find(|s| s["current"] == true).unwrap();
    let theirs = list.iter().find(|s| s["current"] == false).unwrap();
    assert_eq!(mine["user_agent"], "Laptop Browser/1.0");
    let ua = theirs["user_agent"].as_str().unwrap();
    assert!(long_ua.starts_with(ua) && ua.chars().count() == 200, "{ua}");
    for s in &list {
        for field in ["id", "created_at", "last_seen_at", "user_agent", "current"] {
            assert!(s.as_object().unwrap().contains_key(field), "{field}: {s}");
        }
        assert!(
            s["created_at"].is_u64() && s["last_seen_at"].is_u64(),
            "{s}"
        );
    }
    // The public id is neither a cookie nor a cookie's hash.
    let listed = serde_json::to_string(&list).unwrap();
    for cookie in [&laptop_cookie, &phone_cookie] {
        let value = cookie.split_once('=').unwrap().1;
        let digest = Sha256::digest(value.as_bytes());
        assert!(!listed.contains(value), "{listed}");
        assert!(!listed.contains(&hex(&digest)), "{listed}");
        assert!(
            !listed.contains(&URL_SAFE_NO_PAD.encode(digest)),
            "{listed}"
        );
    }

    // Someone else cannot end it (404), nor can a made-up id.
    let mut other = app.browser();
    other.signed_up("Other").await;
    let phone_id = theirs["id"].as_str().unwrap();
    assert_openai_error(
        other
            .send(
                Method::DELETE,
                &format!("/api/sessions/{phone_id}"),
                json!({}),
            )
            .await,
        404,
        "not_found",
    )
    .await;
    assert_openai_error(
        laptop
            .send(Method::DELETE, "/api/sessions/made-up", json!({}))
            .await,
        404,
        "not_found",
    )
    .await;
    assert_eq!(me_with_cookie(&app, &phone_cookie).await, 200);

    // Its person can.
    assert_eq!(
        laptop
            .send(
                Method::DELETE,
                &format!("/api/sessions/{phone_id}"),
                json!({})
            )
            .await
            .status(),
        204
    );
    assert_eq!(me_with_cookie(&app, &phone_cookie).await, 401);
    assert_eq!(laptop.get("/api/me").await.status(), 200);

    // "Sign out everywhere else": two more browsers, then one call ends both.
    let mut second = laptop.with_same_passkey();
    assert_eq!(second.login().await.status(), 200);
    let mut third = second.with_same_passkey();
    assert_eq!(third.login().await.status(), 200);
    let res = laptop.post("/api/sessions/revoke-others", json!({})).await;
    assert_eq!(res.status(), 200);
    assert_eq!(res.json::<Value>().await.unwrap(), json!({"ended": 2}));
    assert_eq!(second.get("/api/me").await.status(), 401);
    assert_eq!(third.get("/api/me").await.status(), 401);
    assert_eq!(laptop.get("/api/me").await.status(), 200);
    assert_eq!(
        other.get("/api/me").await.status(),
        200,
        "not someone else's"
    );

    // Ending the current session signs this browser out.
    let list: Value = laptop.get("/api/sessions").await.json().await.unwrap();
    let id = list[0]["id"].as_str().unwrap().to_owned();
    let res = laptop
        .send(Method::DELETE, &format!("/api/sessions/{id}"), json!({}))
        .await;
    assert_eq!(res.status(), 204);
    assert!(
        res.headers()["set-cookie"]
            .to_str()
            .unwrap()
            .contains("Max-Age=0")
    );
    assert_eq!(me_with_cookie(&app, &laptop_cookie).await, 401);
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[tokio::test]
async fn signing_in_past_the_cap_ends_the_oldest_session() {
    let app = spawn_app().await;
    let mut b = app.browser();
    let res = b.register("Many").await;
    assert_eq!(res.status(), 201);
    let oldest = session_cookie(&res);
    let mut second = String::new();
    // 20 more sign-ins (one browser keeps the authenticator's counter moving): the cap
    // is 20 sessions per person, so the 21st session ends the first.
    for i in 0..20 {
        let res = b.login().await;
        assert_eq!(res.status(), 200);
        if i == 0 {
            second = session_cookie(&res);
        }
    }
    assert_eq!(me_with_cookie(&app, &oldest).await, 401, "the oldest ended");
    assert_eq!(me_with_cookie(&app, &second).await, 200);
    let list: Value = b.get("/api/sessions").await.json().await.unwrap();
    assert_eq!(list.as_array().unwrap().len(), 20);
}

#[tokio::test]
async fn a_code_issued_before_the_account_was_deleted_cannot_be_exchanged() {
    let app = spawn_app().await;
    let mut b = app.browser();
    b.signed_up("Gone").await;
    assert_eq!(
        b.send(Method::PUT, "/api/key", json!({"api_key": FAKE_OPENAI_KEY}))
            .await
            .status(),
        204
    );
    let verifier = "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk-extra-entropy";
    let challenge = URL_SAFE_NO_PAD.encode(Sha256::digest(verifier.as_bytes()));
    let started: Value = b
        .post("/api/connect/approve/start", json!({}))
        .await
        .json()
        .await
        .unwrap();
    let cred = b.passkey.get(&started["options"]).unwrap().to_string();
    let res = b
        .request(Method::POST, "/connect/approve")
        .form(&[
            ("ceremony", started["ceremony"].as_str().unwrap()),
            ("credential", cred.as_str()),
            ("redirect_uri", "https://notes.example/cb"),
            ("state", "s"),
            ("code_challenge", challenge.as_str()),
            ("code_challenge_method", "S256"),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 302);
    let location = url::Url::parse(res.headers()["location"].to_str().unwrap()).unwrap();
    let code = location
        .query_pairs()
        .find(|(k, _)| k == "code")
        .unwrap()
        .1
        .into_owned();

    assert_eq!(
        b.send(Method::DELETE, "/api/account", json!({}))
            .await
            .status(),
        204
    );
    let res = app
        .client
        .post(app.url("/api/connect/token"))
        .json(&json!({"code": code, "code_verifier": verifier}))
        .send()
        .await
        .unwrap();
    assert_openai_error(res, 400, "invalid_grant").await;
    let users: Value = app
        .admin(Method::GET, "/admin/users")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(users.as_array().unwrap().is_empty(), "{users}");
}

#[tokio::test]
async fn a_stale_session_cannot_end_the_owners_other_sessions() {
    // A stolen cookie is a stale session: it must not sign the owner out of their
    // devices. Ending one's own current session stays a plain sign-out.
    let app = spawn_app_with_clock(manual_clock(), |_| {}).await;
    let mut laptop = app.browser();
    laptop.signed_up("Stale").await;
    let mut phone = laptop.with_same_passkey();
    assert_eq!(phone.login().await.status(), 200);
    laptop.passkey = phone.passkey.clone();
    app.clock.advance(301);

    let list: Value = laptop.get("/api/sessions").await.json().await.unwrap();
    let phone_id = list
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["current"] == false)
        .unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_openai_error(
        laptop
            .send(
                Method::DELETE,
                &format!("/api/sessions/{phone_id}"),
                json!({}),
            )
            .await,
        403,
        "fresh_passkey_required",
    )
    .await;
    assert_openai_error(
        laptop.post("/api/sessions/revoke-others", json!({})).await,
        403,
        "fresh_passkey_required",
    )
    .await;
    // Nothing ended.
    assert_eq!(phone.get("/api/me").await.status(), 200);
    assert_eq!(laptop.get("/api/me").await.status(), 200);
    // An unknown id is still 404 (not a step-up prompt for nothing).
    assert_openai_error(
        laptop
            .send(Method::DELETE, "/api/sessions/made-up", json!({}))
            .await,
        404,
        "not_found",
    )
    .await;

    // After a passkey check both work.
    assert_eq!(laptop.reauth().await.status(), 204);
    let res = laptop.post("/api/sessions/revoke-others", json!({})).await;
    assert_eq!(res.status(), 200);
    assert_eq!(res.json::<Value>().await.unwrap(), json!({"ended": 1}));
    assert_eq!(phone.get("/api/me").await.status(), 401);

    // Stale again: ending this very session needs no step-up.
    app.clock.advance(301);
    let list: Value = laptop.get("/api/sessions").await.json().await.unwrap();
    let mine = list[0]["id"].as_str().unwrap().to_owned();
    assert_eq!(
        laptop
            .send(Method::DELETE, &format!("/api/sessions/{mine}"), json!({}))
            .await
            .status(),
        204
    );
    assert_eq!(laptop.get("/api/me").await.status(), 401);
}

#[tokio::test]
async fn another_session_of_the_same_person_cannot_displace_or_spend_a_step_up() {
    // A thief holding a stolen, non-fresh cookie of the same person starts step-ups of
    // its own between the owner's start and finish: the owner's ceremony belongs to the
    // owner's session, so the owner still becomes fresh and can end the thief's session.
    let app = spawn_app_with_clock(manual_clock(), |_| {}).await;
    let mut owner = app.browser();
    owner.signed_up("Owner").await;
    let mut thief = owner.with_same_passkey();
    assert_eq!(thief.login().await.status(), 200);
    // (The two browsers share one authenticator here: keep its counter in step.)
    owner.passkey = thief.passkey.clone();
    app.clock.advance(301);
    assert_openai_error(
        owner.post("/api/sessions/revoke-others", json!({})).await,
        403,
        "fresh_passkey_required",
    )
    .await;

    let started: Value = owner
        .post("/api/auth/reauth/start", json!({}))
        .await
        .json()
        .await
        .unwrap();
    let credential = owner.passkey.get(&started["options"]).unwrap();
    // The thief's starts (every signed-in kind) neither replace nor expire the owner's.
    for path in ["/api/auth/reauth/start", "/api/connect/approve/start"] {
        let res = thief.post(path, json!({})).await;
        assert_eq!(res.status(), 200, "{path}");
        let theirs: Value = res.json().await.unwrap();
        assert_ne!(theirs["ceremony"], started["ceremony"]);
    }
    // The thief cannot finish, and so cannot consume, the owner's ceremony — not even
    // with a valid assertion in hand.
    let finish = json!({"ceremony": started["ceremony"], "credential": credential});
    assert_openai_error(
        thief.post("/api/auth/reauth/finish", finish.clone()).await,
        400,
        "ceremony_failed",
    )
    .await;
    assert_openai_error(
        thief.post("/api/sessions/revoke-others", json!({})).await,
        403,
        "fresh_passkey_required",
    )
    .await;

    // The owner's finish still takes the owner's own ceremony: fresh, the owner signs
    // the thief out.
    assert_eq!(
        owner.post("/api/auth/reauth/finish", finish).await.status(),
        204
    );
    let res = owner.post("/api/sessions/revoke-others", json!({})).await;
    assert_eq!(res.status(), 200);
    assert_eq!(res.json::<Value>().await.unwrap(), json!({"ended": 1}));
    assert_eq!(thief.get("/api/me").await.status(), 401);
    assert_eq!(owner.get("/api/me").await.status(), 200);
}
