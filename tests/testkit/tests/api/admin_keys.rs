//! Admin keys (`kga_…`) and their scopes: `read` may only GET, `write` may change
//! people and grants, only `admin` (and the bootstrap `KEYGATE_ADMIN_KEY`) may manage
//! admin keys. Too little scope is 403 `insufficient_scope`; unknown, revoked and
//! expired keys are wrong keys (401, throttled per address).

use keygate_core::calendar::to_rfc3339;
use keygate_testkit::{TestApp, manual_clock, spawn_app, spawn_app_with, spawn_app_with_clock};
use reqwest::Method;
use serde_json::{Value, json};

use crate::helpers::assert_openai_error;

/// Creates an admin key with the bootstrap key; returns the whole answer.
async fn create_key(app: &TestApp, body: Value) -> Value {
    let res = app
        .admin(Method::POST, "/admin/keys")
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 201);
    res.json().await.unwrap()
}

async fn key_of_scope(app: &TestApp, scope: &str) -> String {
    let made = create_key(app, json!({"name": format!("{scope} key"), "scope": scope})).await;
    made["key"].as_str().unwrap().to_owned()
}

fn with_key(app: &TestApp, key: &str, method: Method, path: &str) -> reqwest::RequestBuilder {
    app.client.request(method, app.url(path)).bearer_auth(key)
}

#[tokio::test]
async fn a_new_key_is_shown_once_and_listed_without_its_secret() {
    let app = spawn_app().await;
    let made = create_key(&app, json!({"name": "ci", "scope": "read"})).await;
    let key = made["key"].as_str().unwrap();
    assert!(key.starts_with("kga_"), "{key}");
    assert_eq!(key.len(), keygate_core::token::admin::TOKEN_LEN);
    assert_eq!(made["scope"], "read");
    assert_eq!(made["name"], "ci");
    assert!(made["expires_at"].is_null());
    let id = made["id"].as_str().unwrap();
    assert!(key.contains(id));

    let res = app.admin(Method::GET, "/admin/keys").send().await.unwrap();
    assert_eq!(res.status(), 200);
    let text = res.text().await.unwrap();
    assert!(!text.contains(&key[key.len() - 20..]), "secret in the list");
    let list: Value = serde_json::from_str(&text).unwrap();
    let list = list.as_array().unwrap();
    assert_eq!(list.len(), 1);
    assert_eq!(list[0]["id"], id);
    assert_eq!(list[0]["scope"], "read");
    assert!(list[0].get("key").is_none());
}

#[tokio::test]
async fn bad_create_bodies_are_400_naming_the_field() {
    let app = spawn_app().await;
    for (body, param) in [
        (json!({"name": "x", "scope": "root"}), "scope"),
        (json!({"name": "x", "scope": 3}), "scope"),
        (json!({"name": " ", "scope": "read"}), "name"),
        (
            json!({"name": "x", "scope": "read", "expires_at": "tomorrow"}),
            "expires_at",
        ),
        (
            json!({"name": "x", "scope": "read", "expires_at": "2001-01-01T00:00:00Z"}),
            "expires_at",
        ),
    ] {
        let res = app
            .admin(Method::POST, "/admin/keys")
            .json(&body)
            .send()
            .await
            .unwrap();
        let err = assert_openai_error(res, 400, "invalid_request").await;
        assert_eq!(err["error"]["param"], param, "{body}");
    }
}

#[tokio::test]
async fn read_scope_may_only_get() {
    let app = spawn_app().await;
    let user = app.create_user("Ada").await;
    let read = key_of_scope(&app, "read").await;
    for path in ["/admin/users", &format!("/admin/users/{user}")] {
        let res = with_key(&app, &read, Method::GET, path)
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 200, "{path}");
    }
    let res = with_key(&app, &read, Method::POST, "/admin/users")
        .json(&json!({"name": "Bob"}))
        .send()
        .await
        .unwrap();
    let err = assert_openai_error(res, 403, "insufficient_scope").await;
    assert!(err["error"]["message"].as_str().unwrap().contains("write"));
    let res = with_key(
        &app,
        &read,
        Method::POST,
        &format!("/admin/users/{user}/grants"),
    )
    .json(&json!({"name": "app"}))
    .send()
    .await
    .unwrap();
    assert_openai_error(res, 403, "insufficient_scope").await;
    for (method, path) in [
        (Method::GET, "/admin/keys".to_owned()),
        (Method::POST, "/admin/keys".to_owned()),
        (Method::DELETE, "/admin/keys/AAAAAAAAAAAAAAAA".to_owned()),
    ] {
        let res = with_key(&app, &read, method, &path)
            .json(&json!({"name": "x", "scope": "admin"}))
            .send()
            .await
            .unwrap();
        assert_openai_error(res, 403, "insufficient_scope").await;
    }
}

#[tokio::test]
async fn write_scope_changes_people_and_grants_but_not_admin_keys() {
    let app = spawn_app().await;
    let write = key_of_scope(&app, "write").await;
    let res = with_key(&app, &write, Method::POST, "/admin/users")
        .json(&json!({"name": "Bob"}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 201);
    let user: Value = res.json().await.unwrap();
    let user = user["id"].as_str().unwrap();
    let res = with_key(
        &app,
        &write,
        Method::POST,
        &format!("/admin/users/{user}/grants"),
    )
    .json(&json!({"name": "app"}))
    .send()
    .await
    .unwrap();
    assert_eq!(res.status(), 201);
    let grant: Value = res.json().await.unwrap();
    let grant = grant["grant"]["id"].as_str().unwrap();
    let res = with_key(
        &app,
        &write,
        Method::POST,
        &format!("/admin/grants/{grant}/disable"),
    )
    .send()
    .await
    .unwrap();
    assert_eq!(res.status(), 200);
    let res = with_key(&app, &write, Method::GET, &format!("/admin/grants/{grant}"))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    let res = with_key(
        &app,
        &write,
        Method::DELETE,
        &format!("/admin/grants/{grant}"),
    )
    .send()
    .await
    .unwrap();
    assert_eq!(res.status(), 204);
    for method in [Method::GET, Method::POST] {
        let res = with_key(&app, &write, method, "/admin/keys")
            .json(&json!({"name": "x", "scope": "admin"}))
            .send()
            .await
            .unwrap();
        assert_openai_error(res, 403, "insufficient_scope").await;
    }
}

#[tokio::test]
async fn admin_scope_manages_admin_keys() {
    let app = spawn_app().await;
    let admin = key_of_scope(&app, "admin").await;
    let res = with_key(&app, &admin, Method::POST, "/admin/keys")
        .json(&json!({"name": "made by a key", "scope": "write"}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 201);
    let made: Value = res.json().await.unwrap();
    let id = made["id"].as_str().unwrap();
    let res = with_key(&app, &admin, Method::GET, "/admin/keys")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    let list: Value = res.json().await.unwrap();
    assert_eq!(list.as_array().unwrap().len(), 2);
    let res = with_key(&app, &admin, Method::DELETE, &format!("/admin/keys/{id}"))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 204);
    let res = with_key(&app, &admin, Method::DELETE, &format!("/admin/keys/{id}"))
        .send()
        .await
        .unwrap();
    assert_openai_error(res, 404, "not_found").await;
    // An admin key may also do what write and read keys do.
    let res = with_key(&app, &admin, Method::POST, "/admin/users")
        .json(&json!({"name": "Cy"}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 201);
}

#[tokio::test]
async fn a_revoked_key_is_refused_on_the_next_request() {
    let app = spawn_app().await;
    let made = create_key(&app, json!({"name": "gone soon", "scope": "write"})).await;
    let key = made["key"].as_str().unwrap();
    let id = made["id"].as_str().unwrap();
    let res = with_key(&app, key, Method::GET, "/admin/users")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    let res = app
        .admin(Method::DELETE, &format!("/admin/keys/{id}"))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 204);
    let res = with_key(&app, key, Method::GET, "/admin/users")
        .send()
        .await
        .unwrap();
    assert_openai_error(res, 401, "invalid_api_key").await;
}

#[tokio::test]
async fn an_expired_key_is_refused() {
    let app = spawn_app_with_clock(manual_clock(), |_| {}).await;
    let at = app.clock.now() + 60;
    let made = create_key(
        &app,
        json!({"name": "short", "scope": "read", "expires_at": to_rfc3339(at)}),
    )
    .await;
    assert_eq!(made["expires_at"], json!(at));
    let key = made["key"].as_str().unwrap();
    let res = with_key(&app, key, Method::GET, "/admin/users")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    app.clock.advance(60);
    let res = with_key(&app, key, Method::GET, "/admin/users")
        .send()
        .await
        .unwrap();
    assert_openai_error(res, 401, "invalid_api_key").await;
}

#[tokio::test]
async fn the_key_is_nowhere_in_the_data_dir() {
    let app = spawn_app().await;
    let mut keys = Vec::new();
    for scope in ["read", "write", "admin"] {
        keys.push(key_of_scope(&app, scope).await);
    }
    // Used once each, so anything a request might write has been written.
    for key in &keys {
        let res = with_key(&app, key, Method::GET, "/admin/users")
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 200);
    }
    let dir = app.stop().await;
    let mut files = Vec::new();
    let mut todo = vec![dir.path().to_path_buf()];
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
    assert!(!files.is_empty());
    for key in &keys {
        // The whole key and its secret part alone (the id before it is not secret).
        let secret = &key[keygate_core::token::admin::PREFIX.len() + 17..];
        for file in &files {
            let bytes = std::fs::read(file).unwrap();
            for needle in [key.as_bytes(), secret.as_bytes()] {
                assert!(
                    !bytes.windows(needle.len()).any(|w| w == needle),
                    "admin key bytes in {}",
                    file.display()
                );
            }
        }
    }
}

#[tokio::test]
async fn wrong_admin_keys_are_throttled_but_a_good_stored_key_passes() {
    let app = spawn_app_with(|c| c.admin_failures_per_minute = Some(3)).await;
    let good = key_of_scope(&app, "read").await;
    // A well-formed key that was revoked: as wrong as any other.
    let made = create_key(&app, json!({"name": "revoked", "scope": "admin"})).await;
    let revoked = made["key"].as_str().unwrap().to_owned();
    let res = app
        .admin(
            Method::DELETE,
            &format!("/admin/keys/{}", made["id"].as_str().unwrap()),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 204);
    for _ in 0..3 {
        let res = with_key(&app, &revoked, Method::GET, "/admin/users")
            .send()
            .await
            .unwrap();
        assert_openai_error(res, 401, "invalid_api_key").await;
    }
    let res = with_key(&app, &revoked, Method::GET, "/admin/users")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 429);
    let retry: u64 = res
        .headers()
        .get("retry-after")
        .expect("Retry-After")
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!(retry >= 1);
    // The good key, from the same address, is never locked out; a right key of too
    // small a scope is 403, not a guess.
    let res = with_key(&app, &good, Method::GET, "/admin/users")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    let res = with_key(&app, &good, Method::POST, "/admin/users")
        .json(&json!({"name": "x"}))
        .send()
        .await
        .unwrap();
    assert_openai_error(res, 403, "insufficient_scope").await;
}

/// One raw request (an HTTP client would normalise the path itself): status and body.
async fn raw(app: &TestApp, method: &str, target: &str, key: &str, body: &str) -> (u16, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut sock = tokio::net::TcpStream::connect(("127.0.0.1", app.port))
        .await
        .unwrap();
    let req = format!(
        "{method} {target} HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {key}\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    sock.write_all(req.as_bytes()).await.unwrap();
    let mut out = Vec::new();
    sock.read_to_end(&mut out).await.unwrap();
    let text = String::from_utf8_lossy(&out).into_owned();
    let status = text
        .get(9..12)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("{method} {target}: no status in {text:?}"));
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default();
    (status, body)
}

/// The scope check reads the path the router matched (`match_info`), percent-decoded
/// exactly as the router decoded it. Every spelling of an admin-only path either routes
/// to its handler and needs `admin` (403 for a `write` or `read` key), or routes nowhere
/// (404, 400): none creates, lists or revokes an admin key, or sets, shows or deletes
/// the operator key. The bootstrap key, sent the same decoded spellings, reaches the
/// handlers: the 403s below are the scope check, not a miss.
#[tokio::test]
async fn no_spelling_of_an_admin_only_path_lets_a_smaller_scope_through() {
    const OPERATOR_KEY: &str = "sk-proj-operator-key-for-path-tests-000PATH";
    let app = spawn_app().await;
    let write = key_of_scope(&app, "write").await;
    let read = key_of_scope(&app, "read").await;
    let victim = create_key(&app, json!({"name": "victim", "scope": "admin"})).await;
    let victim_id = victim["id"].as_str().unwrap().to_owned();
    let res = app
        .admin(Method::PUT, "/admin/operator-key")
        .json(&json!({"api_key": OPERATOR_KEY}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 204);
    let keys_before: Value = app
        .admin(Method::GET, "/admin/keys")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let operator_before: Value = app
        .admin(Method::GET, "/admin/operator-key")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();

    let create = r#"{"name":"minted","scope":"admin"}"#;
    let put = r#"{"api_key":"sk-proj-attackers-own-key-0000000000EVIL"}"#;
    let v = victim_id.as_str();
    // (method, target, body, the status a write/read key gets: 403 = routed and refused)
    let cases: Vec<(&str, String, &str, u16)> = vec![
        // Percent-encoded letters: decoded by the router, so routed: the scope applies.
        ("POST", "/admin/k%65ys".into(), create, 403),
        ("POST", "/admin/%6B%65%79%73".into(), create, 403),
        ("POST", "/admin/k%65ys?scope=read".into(), create, 403),
        ("POST", "http://127.0.0.1/admin/k%65ys".into(), create, 403),
        ("GET", "/admin/k%65ys".into(), "", 403),
        ("GET", "/%61dmin/keys".into(), "", 403),
        ("DELETE", format!("/admin/k%65ys/{v}"), "", 403),
        // `{id}` takes any one segment: routed, so the scope applies before the id is read.
        ("DELETE", format!("/admin/keys/{v};x"), "", 403),
        ("DELETE", format!("/admin/keys/{v}%2F.."), "", 403),
        ("PUT", "/admin/operator%2Dkey".into(), put, 403),
        ("PUT", "/admin/%6Fperator-key".into(), put, 403),
        ("GET", "/admin/operator-k%65y".into(), "", 403),
        ("DELETE", "/admin/operator-k%65y".into(), "", 403),
        // Double encoding: `%25` stays `%25`, so `%2565` is not `e`: no route.
        ("POST", "/admin/k%2565ys".into(), create, 404),
        ("GET", "/admin/k%2565ys".into(), "", 404),
        ("PUT", "/admin/operator%252Dkey".into(), put, 404),
        // Doubled slashes, a trailing slash, dot segments, case, `;` parameters, an
        // encoded slash: not normalised by keygate, so no route at all.
        ("POST", "//admin//keys".into(), create, 404),
        ("POST", "/admin//keys".into(), create, 404),
        ("GET", "/admin//keys".into(), "", 404),
        ("POST", "/admin/keys/".into(), create, 404),
        ("GET", "/admin/keys/".into(), "", 404),
        ("PUT", "/admin/operator-key/".into(), put, 404),
        ("GET", "/admin/operator-key/".into(), "", 404),
        ("DELETE", "/admin/operator-key/".into(), "", 404),
        ("DELETE", format!("/admin/keys/{v}/"), "", 404),
        ("POST", "/admin/KEYS".into(), create, 404),
        ("GET", "/admin/Keys".into(), "", 404),
        ("PUT", "/admin/OPERATOR-KEY".into(), put, 404),
        ("POST", "/admin/keys;x=1".into(), create, 404),
        ("GET", "/admin/operator-key;x".into(), "", 404),
        ("POST", "/admin/./keys".into(), create, 404),
        ("POST", "/admin/users/../keys".into(), create, 404),
        ("PUT", "/admin/users/../operator-key".into(), put, 404),
        ("POST", "/admin/%2e/keys".into(), create, 404),
        ("POST", "/admin/users/%2e%2e/keys".into(), create, 404),
        ("POST", "/admin%2Fkeys".into(), create, 404),
        ("POST", "/admin/keys%2F".into(), create, 404),
        ("DELETE", format!("/admin/keys%2F{v}"), "", 404),
        ("POST", "/admin/keys%20".into(), create, 404),
        ("POST", "/admin/keys%00".into(), create, 404),
        ("GET", "/admin/keys%3F".into(), "", 404),
        ("GET", "/admin/keys%23".into(), "", 404),
    ];
    for key in [&write, &read] {
        for (method, target, body, expected) in &cases {
            let (status, answer) = raw(&app, method, target, key, body).await;
            assert_eq!(status, *expected, "{method} {target}: {answer}");
            if status == 403 {
                assert!(
                    answer.contains("insufficient_scope"),
                    "{method} {target}: {answer}"
                );
            }
            // (A 404 names the path it was sent, the victim's id with it.)
            let leaked = answer.contains("kga_")
                || answer.contains("\"set\"")
                || (answer.contains(v) && !target.contains(v));
            assert!(
                !leaked,
                "{method} {target} answered with admin data: {answer}"
            );
        }
    }

    // Nothing happened: the same keys (none minted, the victim not revoked), the same
    // operator key (not replaced, not deleted).
    let keys_after: Value = app
        .admin(Method::GET, "/admin/keys")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(keys_after, keys_before);
    let operator_after: Value = app
        .admin(Method::GET, "/admin/operator-key")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(operator_after, operator_before);

    // The encoded spellings do reach the handlers: with the bootstrap key they work.
    let bootstrap = keygate_testkit::ADMIN_KEY;
    let (status, answer) = raw(&app, "GET", "/admin/k%65ys", bootstrap, "").await;
    assert_eq!(status, 200, "{answer}");
    assert!(answer.contains(v), "{answer}");
    let (status, answer) = raw(&app, "GET", "/admin/operator-k%65y", bootstrap, "").await;
    assert_eq!(status, 200, "{answer}");
    assert!(answer.contains("\"set\":true"), "{answer}");
    let (status, _) = raw(&app, "DELETE", &format!("/admin/k%65ys/{v}"), bootstrap, "").await;
    assert_eq!(status, 204);
}
