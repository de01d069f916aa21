use keygate_testkit::soft_passkey::SoftPasskey;
use keygate_testkit::{manual_clock, spawn_app, spawn_app_with, spawn_app_with_clock};
use reqwest::Method;
use serde_json::{Value, json};

use crate::helpers::{assert_openai_error, chat};

type Tamper = Box<dyn Fn(&mut SoftPasskey)>;

#[tokio::test]
async fn register_signs_in_with_a_proper_session_cookie() {
    let app = spawn_app().await;
    let mut b = app.browser();
    let res = b.register("Ada Lovelace").await;
    assert_eq!(res.status(), 201);
    let cookie = res.headers()["set-cookie"].to_str().unwrap().to_owned();
    assert!(cookie.starts_with("keygate_session="), "{cookie}");
    assert!(
        cookie.contains("HttpOnly") && cookie.contains("SameSite=Lax") && cookie.contains("Path=/"),
        "{cookie}"
    );
    assert!(
        !cookie.contains("Secure"),
        "plain-http localhost must not get Secure: {cookie}"
    );
    let v: Value = res.json().await.unwrap();
    assert_eq!(v["user"]["name"], "Ada Lovelace");
    let me: Value = b.get("/api/me").await.json().await.unwrap();
    assert_eq!(me["id"], v["user"]["id"]);
    let list: Value = b.get("/api/passkeys").await.json().await.unwrap();
    assert_eq!(list.as_array().unwrap().len(), 1);
    for field in ["id", "name", "created_at", "last_used_at"] {
        assert!(list[0].as_object().unwrap().contains_key(field), "{field}");
    }
}

#[tokio::test]
async fn options_are_webauthn_rs_json_for_discoverable_verified_passkeys() {
    let app = spawn_app().await;
    let b = app.browser();
    let v: Value = b
        .post("/api/auth/register/start", json!({"name": "x"}))
        .await
        .json()
        .await
        .unwrap();
    let pk = &v["options"]["publicKey"];
    assert_eq!(pk["rp"]["id"], "localhost");
    assert_eq!(pk["authenticatorSelection"]["userVerification"], "required");
    assert_eq!(pk["authenticatorSelection"]["residentKey"], "required");
    assert_eq!(pk["attestation"], "none");
    let algs: Vec<i64> = pk["pubKeyCredParams"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["alg"].as_i64().unwrap())
        .collect();
    assert!(algs.contains(&-7) && algs.contains(&-257), "{algs:?}");
    let v: Value = b
        .post("/api/auth/login/start", json!({}))
        .await
        .json()
        .await
        .unwrap();
    let pk = &v["options"]["publicKey"];
    assert!(
        pk["allowCredentials"]
            .as_array()
            .is_none_or(|a| a.is_empty()),
        "sign-in must be usernameless"
    );
    assert_eq!(pk["userVerification"], "required");
    assert!(v["options"].get("mediation").is_none());
}

#[tokio::test]
async fn usernameless_sign_in_from_another_browser_updates_the_counter() {
    let app = spawn_app().await;
    let mut first = app.browser();
    let user = first.signed_up("Grace").await;
    let mut second = first.with_same_passkey();
    assert_eq!(second.get("/api/me").await.status(), 401);
    let res = second.login().await;
    assert_eq!(res.status(), 200);
    assert!(
        res.headers()["set-cookie"]
            .to_str()
            .unwrap()
            .starts_with("keygate_session=")
    );
    let me: Value = second.get("/api/me").await.json().await.unwrap();
    assert_eq!(me["id"], user["id"]);
    let list: Value = second.get("/api/passkeys").await.json().await.unwrap();
    assert!(
        list[0]["last_used_at"].is_u64(),
        "last use not recorded: {list}"
    );
    // The counter moved forward: a clone of the authenticator from before that sign-in
    // presents an old counter and is refused as a possible cloned credential.
    let mut stale = first.with_same_passkey();
    assert_openai_error(stale.login().await, 400, "ceremony_failed").await;
}

#[tokio::test]
async fn ceremonies_are_single_use() {
    let app = spawn_app().await;
    let mut b = app.browser();
    let started: Value = b
        .post("/api/auth/register/start", json!({"name": "Once"}))
        .await
        .json()
        .await
        .unwrap();
    let cred = b.passkey.create(&started["options"]).unwrap();
    let body = json!({"ceremony": started["ceremony"], "credential": cred});
    assert_eq!(
        b.post("/api/auth/register/finish", body.clone())
            .await
            .status(),
        201
    );
    let res = b.post("/api/auth/register/finish", body).await;
    assert_openai_error(res, 400, "ceremony_failed").await;

    let started: Value = b
        .post("/api/auth/login/start", json!({}))
        .await
        .json()
        .await
        .unwrap();
    let cred = b.passkey.get(&started["options"]).unwrap();
    let body = json!({"ceremony": started["ceremony"], "credential": cred});
    assert_eq!(
        b.post("/api/auth/login/finish", body.clone())
            .await
            .status(),
        200
    );
    assert_openai_error(
        b.post("/api/auth/login/finish", body).await,
        400,
        "ceremony_failed",
    )
    .await;

    // A ceremony of one kind cannot finish another.
    let started: Value = b
        .post("/api/auth/login/start", json!({}))
        .await
        .json()
        .await
        .unwrap();
    let cred = b.passkey.get(&started["options"]).unwrap();
    let res = b
        .post(
            "/api/auth/register/finish",
            json!({"ceremony": started["ceremony"], "credential": cred}),
        )
        .await;
    assert_openai_error(res, 400, "ceremony_failed").await;
    let res = b
        .post(
            "/api/auth/login/finish",
            json!({"ceremony": "made-up", "credential": {}}),
        )
        .await;
    assert_openai_error(res, 400, "ceremony_failed").await;
}

#[tokio::test]
async fn expired_ceremonies_fail() {
    let app = spawn_app_with_clock(manual_clock(), |c| c.ceremony_ttl_secs = Some(1)).await;
    let mut b = app.browser();
    let started: Value = b
        .post("/api/auth/register/start", json!({"name": "Late"}))
        .await
        .json()
        .await
        .unwrap();
    let cred = b.passkey.create(&started["options"]).unwrap();
    app.clock.advance(1);
    let res = b
        .post(
            "/api/auth/register/finish",
            json!({"ceremony": started["ceremony"], "credential": cred}),
        )
        .await;
    let body = assert_openai_error(res, 400, "ceremony_failed").await;
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("expired")
    );
    assert_eq!(b.get("/api/me").await.status(), 401);
}

#[tokio::test]
async fn foreign_origin_wrong_rp_id_and_missing_user_verification_are_refused() {
    let app = spawn_app().await;
    let port = app.port;
    let cases: Vec<(&str, Tamper)> = vec![
        (
            "foreign origin",
            Box::new(move |p| p.claimed_origin = Some(format!("http://evil.example:{port}"))),
        ),
        (
            "other port",
            Box::new(move |p| p.claimed_origin = Some(format!("http://localhost:{}", port + 1))),
        ),
        (
            "wrong rp id",
            Box::new(|p| p.claimed_rp_id = Some("evil.example".into())),
        ),
        (
            "no user verification",
            Box::new(|p| p.verifies_user = false),
        ),
    ];
    for (name, tamper) in cases {
        let mut b = app.browser();
        tamper(&mut b.passkey);
        let res = b.register(name).await;
        assert_openai_error(res, 400, "ceremony_failed").await;
        assert_eq!(b.get("/api/me").await.status(), 401, "{name}");
    }
    // The same checks at sign-in: a good registration, then a tampered assertion.
    let mut good = app.browser();
    good.signed_up("Honest").await;
    for tamper in [
        Box::new(move |p: &mut SoftPasskey| {
            p.claimed_origin = Some(format!("http://evil.example:{port}"))
        }) as Tamper,
        Box::new(|p: &mut SoftPasskey| p.claimed_rp_id = Some("evil.example".into())),
        Box::new(|p: &mut SoftPasskey| p.verifies_user = false),
    ] {
        let mut b = good.with_same_passkey();
        tamper(&mut b.passkey);
        assert_openai_error(b.login().await, 400, "ceremony_failed").await;
        assert_eq!(b.get("/api/me").await.status(), 401);
    }
    let users: Value = app
        .admin(Method::GET, "/admin/users")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        users.as_array().unwrap().len(),
        1,
        "a refused registration created a user"
    );
}

#[tokio::test]
async fn several_passkeys_but_never_zero() {
    let app = spawn_app().await;
    let mut b = app.browser();
    b.signed_up("Keys").await;
    let list: Value = b.get("/api/passkeys").await.json().await.unwrap();
    let first_id = list[0]["id"].as_str().unwrap().to_owned();
    let res = b
        .send(
            Method::DELETE,
            &format!("/api/passkeys/{first_id}"),
            json!({}),
        )
        .await;
    assert_openai_error(res, 409, "last_passkey").await;

    // The same authenticator cannot register twice (excludeCredentials).
    let mut same = b.passkey.clone();
    let started: Value = b
        .post("/api/passkeys/start", json!({}))
        .await
        .json()
        .await
        .unwrap();
    assert!(same.create(&started["options"]).is_err());

    let mut phone = SoftPasskey::new(&app.address);
    let res = b.add_passkey(&mut phone, Some("Phone")).await;
    assert_eq!(res.status(), 201);
    let added: Value = res.json().await.unwrap();
    assert_eq!(added["name"], "Phone");
    let res = b
        .send(
            Method::PATCH,
            &format!("/api/passkeys/{}", added["id"].as_str().unwrap()),
            json!({"name": "My phone"}),
        )
        .await;
    assert_eq!(res.status(), 200);
    assert_eq!(res.json::<Value>().await.unwrap()["name"], "My phone");

    assert_eq!(
        b.send(
            Method::DELETE,
            &format!("/api/passkeys/{first_id}"),
            json!({})
        )
        .await
        .status(),
        204
    );
    let list: Value = b.get("/api/passkeys").await.json().await.unwrap();
    assert_eq!(list.as_array().unwrap().len(), 1);
    assert_eq!(list[0]["name"], "My phone");

    // The removed passkey no longer signs in; the phone does.
    let mut old = b.with_same_passkey();
    assert_openai_error(old.login().await, 400, "ceremony_failed").await;
    let mut from_phone = app.browser();
    from_phone.passkey = phone;
    assert_eq!(from_phone.login().await.status(), 200);

    // Someone else's passkey id is not found.
    let mut other = app.browser();
    other.signed_up("Other").await;
    let res = other
        .send(
            Method::DELETE,
            &format!("/api/passkeys/{}", added["id"].as_str().unwrap()),
            json!({}),
        )
        .await;
    assert_openai_error(res, 404, "not_found").await;
}

#[tokio::test]
async fn an_ip_address_public_url_keeps_the_proxy_but_explains_passkeys() {
    let app = spawn_app_with(|c| {
        let port = c
            .listen
            .as_ref()
            .unwrap()
            .rsplit(':')
            .next()
            .unwrap()
            .to_owned();
        c.public_url = Some(format!("http://127.0.0.1:{port}"));
    })
    .await;
    let g = app.enrolled_grant(None).await;
    assert_eq!(
        app.chat_completions(&g.api_key, &chat("gpt-4o-mini"))
            .await
            .status(),
        200
    );
    let b = app.browser();
    let res = b
        .post("/api/auth/register/start", json!({"name": "x"}))
        .await;
    let body = assert_openai_error(res, 503, "passkeys_unavailable").await;
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("localhost"),
        "{body}"
    );
}

#[tokio::test]
async fn https_public_urls_get_a_host_prefixed_secure_cookie() {
    let app = spawn_app_with(|c| {
        c.public_url = Some("https://vault.example".into());
    })
    .await;
    let mut b = app.browser();
    b.origin = "https://vault.example".into();
    b.passkey = SoftPasskey::new("https://vault.example");
    // The request goes to the test server; Origin and the passkey say vault.example.
    let started: Value = b
        .client
        .post(format!("{}/api/auth/register/start", app.local_address))
        .header("origin", "https://vault.example")
        .json(&json!({"name": "Secure"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let cred = b.passkey.create(&started["options"]).unwrap();
    let res = b
        .client
        .post(format!("{}/api/auth/register/finish", app.local_address))
        .header("origin", "https://vault.example")
        .json(&json!({"ceremony": started["ceremony"], "credential": cred}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 201);
    let cookie = res.headers()["set-cookie"].to_str().unwrap();
    assert!(cookie.starts_with("__Host-keygate_session="), "{cookie}");
    assert!(
        cookie.contains("Secure") && cookie.contains("HttpOnly") && cookie.contains("Path=/"),
        "{cookie}"
    );
    assert!(!cookie.contains("Domain"), "{cookie}");
}

/// The squatting attack: someone who learnt a person's credential id (it is not
/// secret: every sign-in prompt for that person lists it) registers their own key
/// under the same id. Before, the credential-id index was overwritten and the first
/// person could no longer sign in.
#[tokio::test]
async fn a_credential_id_cannot_be_squatted_and_its_owner_still_signs_in() {
    let app = spawn_app().await;
    let mut ada = app.browser();
    let ada_user = ada.signed_up("Ada").await;
    let ada_cred = ada.passkey.credential_ids()[0].clone();

    // Signing up with Ada's credential id: refused, and no account is made.
    let mut mallory = app.browser();
    mallory.passkey.next_credential_id = Some(ada_cred.clone());
    let res = mallory.register("Mallory").await;
    let body = assert_openai_error(res, 409, "credential_already_registered").await;
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("already registered"),
        "{body}"
    );
    assert_eq!(mallory.get("/api/me").await.status(), 401);

    // Adding Ada's credential id to an existing account: refused too.
    let mut eve = app.browser();
    eve.signed_up("Eve").await;
    let mut squatter = SoftPasskey::new(&app.address);
    squatter.next_credential_id = Some(ada_cred);
    let res = eve.add_passkey(&mut squatter, None).await;
    assert_openai_error(res, 409, "credential_already_registered").await;
    let eves: Value = eve.get("/api/passkeys").await.json().await.unwrap();
    assert_eq!(eves.as_array().unwrap().len(), 1);

    // Eve leaves; her account's deletion touches nothing of Ada's.
    assert_eq!(
        eve.send(Method::DELETE, "/api/account", json!({}))
            .await
            .status(),
        204
    );
    let users: Value = app
        .admin(Method::GET, "/admin/users")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(users.as_array().unwrap().len(), 1, "{users}");

    let mut again = ada.with_same_passkey();
    assert_eq!(again.login().await.status(), 200);
    let me: Value = again.get("/api/me").await.json().await.unwrap();
    assert_eq!(me["id"], ada_user["id"]);
}

/// What people read when a passkey fails: what happened and what to do, never
/// webauthn-rs's developer text.
#[tokio::test]
async fn passkey_failures_say_what_happened_and_what_to_do() {
    let app = spawn_app().await;
    let port = app.port;
    let message = |body: &Value| body["error"]["message"].as_str().unwrap().to_owned();
    let no_jargon = |m: &str| {
        for jargon in [
            "relying party",
            "The clients",
            "compromised",
            "credential",
            "CBOR",
            "Authentication has failed",
        ] {
            assert!(!m.contains(jargon), "{jargon:?} in {m:?}");
        }
    };

    // A page at another origin relaying the ceremony.
    let mut b = app.browser();
    b.passkey.claimed_origin = Some(format!("http://evil.example:{port}"));
    let body = assert_openai_error(b.register("Wrong place").await, 400, "ceremony_failed").await;
    let m = message(&body);
    assert!(m.contains("different web address"), "{m}");
    assert!(m.contains("try creating your account again"), "{m}");
    no_jargon(&m);

    // The same answer twice.
    let mut b = app.browser();
    let started: Value = b
        .post("/api/auth/register/start", json!({"name": "Twice"}))
        .await
        .json()
        .await
        .unwrap();
    let cred = b.passkey.create(&started["options"]).unwrap();
    let finish = json!({"ceremony": started["ceremony"], "credential": cred});
    assert_eq!(
        b.post("/api/auth/register/finish", finish.clone())
            .await
            .status(),
        201
    );
    let body = assert_openai_error(
        b.post("/api/auth/register/finish", finish).await,
        400,
        "ceremony_failed",
    )
    .await;
    let m = message(&body);
    assert!(m.contains("expired or was already used"), "{m}");
    no_jargon(&m);

    // A passkey this keygate never registered (the sign-up was never finished).
    let mut stranger = app.browser();
    let started: Value = stranger
        .post(
            "/api/auth/register/start",
            json!({"name": "Never finished"}),
        )
        .await
        .json()
        .await
        .unwrap();
    stranger.passkey.create(&started["options"]).unwrap();
    let body = assert_openai_error(stranger.login().await, 400, "ceremony_failed").await;
    let m = message(&body);
    assert!(m.contains("isn't registered here"), "{m}");
    assert!(m.contains("create an account"), "{m}");
    no_jargon(&m);

    // A cloned authenticator (its counter went backwards).
    let mut stale = b.with_same_passkey();
    assert_eq!(b.login().await.status(), 200);
    let body = assert_openai_error(stale.login().await, 400, "ceremony_failed").await;
    let m = message(&body);
    assert!(m.contains("another passkey"), "{m}");
    no_jargon(&m);

    // No user verification.
    let mut lazy = b.with_same_passkey();
    lazy.passkey.verifies_user = false;
    let body = assert_openai_error(lazy.login().await, 400, "ceremony_failed").await;
    let m = message(&body);
    assert!(m.contains("didn't confirm it's you"), "{m}");
    no_jargon(&m);
}
