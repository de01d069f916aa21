//! Endpoint scopes (issue 9, finding 1): a grant reaches only what it was granted; paths
//! are canonical before any check; `/v1/organization/*` is never forwarded.

use keygate_testkit::browser::Browser;
use keygate_testkit::{TestApp, spawn_app};
use reqwest::Method;
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::helpers::{assert_openai_error, chat};

/// What a default (inference-only) grant must not reach, with a body where one is sent.
fn beyond_inference() -> Vec<(Method, &'static str)> {
    vec![
        (Method::GET, "/files"),
        (Method::GET, "/files/file-abc/content"),
        (Method::DELETE, "/files/file-abc"),
        (Method::POST, "/uploads"),
        (Method::GET, "/chat/completions"),
        (Method::GET, "/chat/completions/chatcmpl-1"),
        (Method::GET, "/chat/completions/chatcmpl-1/messages"),
        (Method::DELETE, "/chat/completions/chatcmpl-1"),
        (Method::GET, "/responses/resp_1"),
        (Method::GET, "/responses/resp_1/input_items"),
        (Method::DELETE, "/responses/resp_1"),
        (Method::POST, "/fine_tuning/jobs"),
        (Method::GET, "/fine_tuning/jobs"),
        (Method::DELETE, "/models/ft:gpt-4o-mini:org:x:1"),
        (Method::POST, "/batches"),
        (Method::POST, "/assistants"),
        (Method::POST, "/threads/thread_1/runs"),
        (Method::GET, "/vector_stores"),
        (Method::GET, "/organization/users"),
        (Method::POST, "/organization/admin_api_keys"),
        (Method::POST, "/realtime/sessions"),
    ]
}

async fn call(app: &TestApp, key: &str, method: Method, path: &str) -> reqwest::Response {
    let mut req = app.v1(method.clone(), path, key);
    if method == Method::POST {
        req = req.json(&json!({"model": "gpt-4o-mini", "training_file": "file-1"}));
    }
    req.send().await.unwrap()
}

#[tokio::test]
async fn a_default_grant_reaches_only_inference() {
    let app = spawn_app().await;
    let g = app.enrolled_grant(None).await;
    for (method, path) in beyond_inference() {
        let res = call(&app, &g.api_key, method.clone(), path).await;
        let body = assert_openai_error(res, 403, "endpoint_not_allowed").await;
        assert_eq!(
            body["error"]["param"],
            format!("/v1{path}"),
            "{method} {path}"
        );
    }
    assert_eq!(app.mock.request_count(), 0, "a refused call reached OpenAI");

    // Inference itself is untouched.
    assert_eq!(
        app.chat_completions(&g.api_key, &chat("gpt-4o-mini"))
            .await
            .status(),
        200
    );
    for (method, path, body) in [
        (Method::GET, "/models", None),
        (Method::GET, "/models/gpt-4o-mini", None),
        (
            Method::POST,
            "/embeddings",
            Some(json!({"model": "text-embedding-3-small", "input": "hi"})),
        ),
        (
            Method::POST,
            "/responses",
            Some(json!({"model": "gpt-4o-mini", "input": "hi"})),
        ),
        (Method::POST, "/moderations", Some(json!({"input": "hi"}))),
    ] {
        let mut req = app.v1(method.clone(), path, &g.api_key);
        if let Some(b) = body {
            req = req.json(&b);
        }
        assert_eq!(req.send().await.unwrap().status(), 200, "{method} {path}");
    }
    let list: Value = app
        .admin(Method::GET, &format!("/admin/users/{}/grants", g.user_id))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(list[0]["scopes"], json!(["inference"]));
}

#[tokio::test]
async fn each_scope_opens_its_endpoints_and_no_others() {
    let app = spawn_app().await;
    let files = app
        .enrolled_grant_with_scopes(&["inference", "files"])
        .await;
    for (method, path) in [
        (Method::GET, "/files"),
        (Method::GET, "/files/file-abc/content"),
        (Method::DELETE, "/files/file-abc"),
    ] {
        let res = call(&app, &files.api_key, method.clone(), path).await;
        assert_eq!(res.status(), 200, "{method} {path}");
        assert_eq!(
            app.mock.requests().pop().unwrap().path,
            format!("/v1{path}")
        );
    }
    for (method, path) in [
        (Method::GET, "/chat/completions/chatcmpl-1"),
        (Method::POST, "/fine_tuning/jobs"),
        (Method::GET, "/vector_stores"),
    ] {
        let res = call(&app, &files.api_key, method, path).await;
        assert_openai_error(res, 403, "endpoint_not_allowed").await;
    }

    let stored = app.enrolled_grant_with_scopes(&["stored"]).await;
    let res = call(
        &app,
        &stored.api_key,
        Method::GET,
        "/chat/completions/chatcmpl-1",
    )
    .await;
    assert_eq!(res.status(), 200);
    let res = call(&app, &stored.api_key, Method::DELETE, "/responses/resp_1").await;
    assert_eq!(res.status(), 200);
    // Without `inference`, creating is not allowed.
    let res = app
        .chat_completions(&stored.api_key, &chat("gpt-4o-mini"))
        .await;
    assert_openai_error(res, 403, "endpoint_not_allowed").await;

    let tuning = app.enrolled_grant_with_scopes(&["fine_tuning"]).await;
    assert_eq!(
        call(&app, &tuning.api_key, Method::POST, "/fine_tuning/jobs")
            .await
            .status(),
        200
    );
    let assistants = app.enrolled_grant_with_scopes(&["assistants"]).await;
    assert_eq!(
        call(&app, &assistants.api_key, Method::GET, "/vector_stores")
            .await
            .status(),
        200
    );
    let batches = app.enrolled_grant_with_scopes(&["batches"]).await;
    assert_eq!(
        call(&app, &batches.api_key, Method::POST, "/batches")
            .await
            .status(),
        200
    );
}

#[tokio::test]
async fn organization_endpoints_are_never_forwarded() {
    let app = spawn_app().await;
    let all = app
        .enrolled_grant_with_scopes(&[
            "inference",
            "files",
            "batches",
            "fine_tuning",
            "assistants",
            "stored",
        ])
        .await;
    for (method, path) in [
        (Method::GET, "/organization/users"),
        (Method::GET, "/organization/projects/proj_1/api_keys"),
        (Method::POST, "/organization/admin_api_keys"),
        (Method::GET, "/organization/costs"),
    ] {
        let res = call(&app, &all.api_key, method, path).await;
        assert_openai_error(res, 403, "endpoint_not_allowed").await;
    }
    assert_eq!(app.mock.request_count(), 0);
}

/// Sends a raw request (an HTTP client would normalise the path itself) and returns
/// the whole answer as text.
async fn raw(app: &TestApp, method: &str, path: &str, key: &str) -> String {
    let mut sock = tokio::net::TcpStream::connect(("127.0.0.1", app.port))
        .await
        .unwrap();
    let req = format!(
        "{method} {path} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {key}\r\n\
         Content-Length: 0\r\nConnection: close\r\n\r\n"
    );
    sock.write_all(req.as_bytes()).await.unwrap();
    let mut out = Vec::new();
    sock.read_to_end(&mut out).await.unwrap();
    String::from_utf8_lossy(&out).into_owned()
}

#[tokio::test]
async fn encoded_and_doubled_paths_are_400_never_a_bypass() {
    let app = spawn_app().await;
    let default = app.enrolled_grant(None).await;
    let files = app
        .enrolled_grant_with_scopes(&["inference", "files"])
        .await;
    let attempts = [
        ("GET", "/v1//files"),
        ("GET", "/v1/%66iles"),
        ("GET", "/v1/fi%6Ces/file-1/content"),
        ("GET", "/v1/files%2F.."),
        ("GET", "/v1/models/x%2F..%2F..%2Ffiles"),
        ("POST", "/v1/chat/completions;x=1"),
        ("GET", "/v1/./files"),
        ("GET", "/v1/models/../files"),
        ("GET", "/v1/models/%2e%2e/files"),
        ("GET", "/v1/models\\..\\files"),
        ("GET", "/v1/organization%2Fusers"),
        ("GET", "/v1//organization/users"),
        ("GET", "/v1/files/"),
        // Proxy review, finding 4: overlong UTF-8 (`%C0%AE` = `.`, `%C0%AF` = `/`)
        // and any other byte outside ASCII, percent-encoded.
        ("GET", "/v1/models/%C0%AE%C0%AE%C0%AFfiles"),
        ("GET", "/v1/models/%c0%ae%c0%ae%c0%affiles"),
        ("GET", "/v1/models/gpt-4o%C3%A9"),
        ("GET", "/v1/models/%FF"),
    ];
    for key in [&default.api_key, &files.api_key] {
        for (method, path) in attempts {
            let text = raw(&app, method, path, key).await;
            assert!(text.starts_with("HTTP/1.1 400"), "{method} {path}: {text}");
            assert!(text.contains("\"invalid_path\""), "{method} {path}: {text}");
            assert!(
                !text.contains(path),
                "the refused path is echoed: {path}: {text}"
            );
        }
    }
    assert_eq!(app.mock.request_count(), 0);
    // The same endpoints, written plainly, behave as their scopes say.
    assert!(
        raw(&app, "GET", "/v1/files", &files.api_key)
            .await
            .starts_with("HTTP/1.1 200")
    );
    assert!(
        raw(&app, "GET", "/v1/files", &default.api_key)
            .await
            .starts_with("HTTP/1.1 403")
    );
}

/// Finding 6: a chunked body on a path whose scope is refused never reaches OpenAI —
/// the scope is checked before the body is read.
#[tokio::test]
async fn a_refused_chunked_upload_never_reaches_the_upstream() {
    let app = spawn_app().await;
    let g = app.enrolled_grant(None).await;
    let chunks: Vec<Result<Vec<u8>, std::io::Error>> =
        (0..8).map(|_| Ok(vec![b'x'; 16 * 1024])).collect();
    let res = app
        .v1(Method::POST, "/files", &g.api_key)
        .header("content-type", "application/octet-stream")
        .body(reqwest::Body::wrap_stream(futures::stream::iter(chunks)))
        .send()
        .await;
    if let Ok(res) = res {
        assert_openai_error(res, 403, "endpoint_not_allowed").await;
    }
    assert_eq!(app.mock.request_count(), 0, "the upload reached OpenAI");
}

#[tokio::test]
async fn scopes_are_chosen_at_creation_and_checked() {
    let app = spawn_app().await;
    let uid = app.create_user("Scoped").await;
    let created = app
        .create_grant_with(
            &uid,
            &json!({"name": "a", "scopes": ["files", "inference", "files"]}),
        )
        .await;
    assert_eq!(created["grant"]["scopes"], json!(["inference", "files"]));
    for bad in [json!(["inference", "admin"]), json!([]), json!(["Files"])] {
        let res = app
            .admin(Method::POST, &format!("/admin/users/{uid}/grants"))
            .json(&json!({"name": "b", "scopes": bad}))
            .send()
            .await
            .unwrap();
        let body = assert_openai_error(res, 400, "invalid_request").await;
        assert_eq!(body["error"]["param"], "scopes", "{bad}");
    }

    // The person's own API: sign-up → create with scopes → listed with them.
    let mut b = app.browser();
    b.signed_up("Dashboard").await;
    let res = b
        .post(
            "/api/grants",
            json!({"name": "cli", "scopes": ["inference", "batches"]}),
        )
        .await;
    assert_eq!(res.status(), 201);
    let created: Value = res.json().await.unwrap();
    assert_eq!(created["grant"]["scopes"], json!(["inference", "batches"]));
    let res = b.post("/api/grants", json!({"name": "plain"})).await;
    assert_eq!(res.status(), 201);
    let list: Value = b.get("/api/grants").await.json().await.unwrap();
    let scopes_of = |name: &str| {
        list.as_array()
            .unwrap()
            .iter()
            .find(|g| g["name"] == name)
            .map(|g| g["scopes"].clone())
            .unwrap()
    };
    assert_eq!(scopes_of("cli"), json!(["inference", "batches"]));
    assert_eq!(scopes_of("plain"), json!(["inference"]));
    let res = b
        .post(
            "/api/grants",
            json!({"name": "bad", "scopes": ["everything"]}),
        )
        .await;
    let body = assert_openai_error(res, 400, "invalid_request").await;
    assert_eq!(body["error"]["param"], "scopes");
}

// --- the connect flow carries scopes --------------------------------------------------

const APP: &str = "https://notes.example";
const REDIRECT: &str = "https://notes.example/cb";
const VERIFIER: &str = "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk-scopes";

fn challenge() -> String {
    use base64::Engine;
    use sha2::Digest;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(sha2::Sha256::digest(VERIFIER))
}

async fn person(app: &TestApp) -> Browser {
    let mut b = app.browser();
    b.signed_up("Connector").await;
    let res = b
        .send(
            Method::PUT,
            "/api/key",
            json!({"api_key": keygate_testkit::FAKE_OPENAI_KEY}),
        )
        .await;
    assert_eq!(res.status(), 204);
    b
}

async fn approve_popup(b: &mut Browser, scopes: Value, reuse: Option<&str>) -> reqwest::Response {
    let started: Value = b
        .post("/api/connect/approve/start", json!({}))
        .await
        .json()
        .await
        .unwrap();
    let cred = b.passkey.get(&started["options"]).unwrap();
    let mut body = json!({
        "ceremony": started["ceremony"], "credential": cred, "origin": APP,
        "app_name": "Notes", "reuse_grant_id": reuse,
    });
    if !scopes.is_null() {
        body["scopes"] = scopes;
    }
    b.post("/api/connect/approve/finish", body).await
}

#[tokio::test]
async fn popup_approval_grants_the_scopes_asked_for() {
    let app = spawn_app().await;
    let mut b = person(&app).await;
    let res = approve_popup(&mut b, json!(["inference", "files"]), None).await;
    assert_eq!(res.status(), 201);
    let first: Value = res.json().await.unwrap();
    assert_eq!(first["grant"]["scopes"], json!(["inference", "files"]));
    let key = first["api_key"].as_str().unwrap();
    assert_eq!(
        app.v1(Method::GET, "/files", key)
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    let existing: Value = b
        .get(&format!("/api/connect/existing?origin={APP}"))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(existing[0]["scopes"], json!(["inference", "files"]));

    // Re-keying without asking keeps the scopes; asking sets exactly those.
    let gid = first["grant"]["id"].as_str().unwrap();
    let kept: Value = approve_popup(&mut b, Value::Null, Some(gid))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(kept["grant"]["scopes"], json!(["inference", "files"]));
    let narrowed: Value = approve_popup(&mut b, json!(["inference"]), Some(gid))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(narrowed["grant"]["scopes"], json!(["inference"]));
    let res = app
        .v1(Method::GET, "/files", narrowed["api_key"].as_str().unwrap())
        .send()
        .await
        .unwrap();
    assert_openai_error(res, 403, "endpoint_not_allowed").await;

    // No scopes asked: inference only. An unknown scope: nothing is created.
    let plain: Value = approve_popup(&mut b, Value::Null, None)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(plain["grant"]["scopes"], json!(["inference"]));
    let before = b.get("/api/grants").await.json::<Value>().await.unwrap();
    let res = approve_popup(&mut b, json!(["inference", "organization"]), None).await;
    let body = assert_openai_error(res, 400, "invalid_request").await;
    assert_eq!(body["error"]["param"], "scopes");
    let after = b.get("/api/grants").await.json::<Value>().await.unwrap();
    assert_eq!(before, after);
}

#[tokio::test]
async fn redirect_approval_carries_scopes_through_the_code() {
    let app = spawn_app().await;
    let mut b = person(&app).await;
    let page = format!(
        "/connect?response_type=code&redirect_uri={}&state=s1&code_challenge={}\
         &code_challenge_method=S256&scopes=inference,stored",
        urlencode(REDIRECT),
        challenge()
    );
    assert_eq!(b.get(&page).await.status(), 200);
    let bad = page.replace("scopes=inference,stored", "scopes=inference,admin");
    let res = b.get(&bad).await;
    assert_eq!(res.status(), 400);
    assert!(res.text().await.unwrap().contains("scopes"));

    let started: Value = b
        .post("/api/connect/approve/start", json!({}))
        .await
        .json()
        .await
        .unwrap();
    let cred = b.passkey.get(&started["options"]).unwrap();
    let form = [
        ("ceremony", started["ceremony"].as_str().unwrap().to_owned()),
        ("credential", cred.to_string()),
        ("redirect_uri", REDIRECT.to_owned()),
        ("state", "s1".to_owned()),
        ("code_challenge", challenge()),
        ("code_challenge_method", "S256".to_owned()),
        ("scopes", "inference,stored".to_owned()),
    ];
    let res = b
        .request(Method::POST, "/connect/approve")
        .form(&form)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 302);
    let location = url::Url::parse(res.headers()["location"].to_str().unwrap()).unwrap();
    let code = location
        .query_pairs()
        .find(|(k, _)| k == "code")
        .map(|(_, v)| v.into_owned())
        .unwrap();
    let res = app
        .client
        .post(app.url("/api/connect/token"))
        .json(&json!({"code": code, "code_verifier": VERIFIER}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    let v: Value = res.json().await.unwrap();
    let key = v["api_key"].as_str().unwrap();
    assert_eq!(
        app.v1(Method::GET, "/chat/completions/chatcmpl-1", key)
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    let res = app.v1(Method::GET, "/files", key).send().await.unwrap();
    assert_openai_error(res, 403, "endpoint_not_allowed").await;
}

fn urlencode(s: &str) -> String {
    url::form_urlencoded::byte_serialize(s.as_bytes()).collect()
}
