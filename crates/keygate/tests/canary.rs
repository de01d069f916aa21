//! The canary: a unique fake OpenAI key goes into keygate; traffic of every kind runs
//! with `RUST_LOG=debug`; then the data directory, the logs and every response are
//! searched for the key (and the grant secret, the master key, a caller's own key and
//! the operator's key). None may appear, except the grant key in the one response that
//! hands it out.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::{ADMIN_KEY, serve};
use futures::StreamExt;
use keygate_testkit::mock_openai::MockOpenAi;
use serde_json::json;

fn random_suffix() -> String {
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    format!("{t:x}{:x}", std::process::id())
}

fn files_under(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let entry = entry.unwrap();
        if entry.file_type().unwrap().is_dir() {
            out.extend(files_under(&entry.path()));
        } else {
            out.push(entry.path());
        }
    }
    out
}

fn contains(haystack: &[u8], needle: &str) -> bool {
    haystack
        .windows(needle.len())
        .any(|w| w == needle.as_bytes())
}

#[tokio::test]
async fn secrets_never_appear_in_the_store_logs_or_responses() {
    let canary = format!("sk-canary-{}-ZQXJ", random_suffix());
    let operator = format!("sk-operator-canary-{}-OPRC", random_suffix());
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let log = dir.path().join("keygate.log");
    // A plan that lends the operator's key to people who stored none.
    let config = dir.path().join("keygate.toml");
    std::fs::write(&config, "[plans.lent]\nuse_operator_key = true\n").unwrap();
    let mock = MockOpenAi::start().await;
    let mut server = serve(
        &data,
        &mock.base_url(),
        log.clone(),
        &[
            ("RUST_LOG", "debug"),
            ("KEYGATE_CONFIG", config.to_str().unwrap()),
        ],
    )
    .await;
    let client = reqwest::Client::new();
    let url = |p: &str| format!("{}{p}", server.address);
    let mut responses: Vec<Vec<u8>> = Vec::new();
    macro_rules! keep {
        ($res:expr) => {{
            let res = $res;
            let mut text = format!("{:?}", res.headers()).into_bytes();
            let status = res.status();
            let mut stream = res.bytes_stream();
            while let Some(chunk) = stream.next().await {
                match chunk {
                    Ok(b) => text.extend_from_slice(&b),
                    Err(_) => break,
                }
            }
            responses.push(text);
            status
        }};
    }

    let user: serde_json::Value = client
        .post(url("/admin/users"))
        .bearer_auth(ADMIN_KEY)
        .json(&json!({"name": "Canary"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let uid = user["id"].as_str().unwrap().to_owned();
    let put = client
        .put(url(&format!("/admin/users/{uid}/openai-key")))
        .bearer_auth(ADMIN_KEY)
        .json(&json!({"api_key": canary}));
    assert_eq!(keep!(put.send().await.unwrap()), 204);
    let created: serde_json::Value = client
        .post(url(&format!("/admin/users/{uid}/grants")))
        .bearer_auth(ADMIN_KEY)
        .json(&json!({"name": "canary app", "models": ["gpt-4o-mini", "text-embedding-3-small"]}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let grant_key = created["api_key"].as_str().unwrap().to_owned();
    let grant_secret = grant_key[grant_key.len() - 49..].to_owned();

    let chat = json!({"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]});
    let stream = json!({"model": "gpt-4o-mini", "stream": true, "messages": [{"role": "user", "content": "hi"}]});
    let v1 = |method: reqwest::Method, p: &str| {
        client
            .request(method, url(&format!("/v1{p}")))
            .bearer_auth(&grant_key)
    };
    assert_eq!(
        keep!(
            v1(reqwest::Method::POST, "/chat/completions")
                .json(&chat)
                .send()
                .await
                .unwrap()
        ),
        200
    );
    assert_eq!(
        keep!(
            v1(reqwest::Method::POST, "/chat/completions")
                .json(&stream)
                .send()
                .await
                .unwrap()
        ),
        200
    );
    let emb = json!({"model": "text-embedding-3-small", "input": "hi"});
    assert_eq!(
        keep!(
            v1(reqwest::Method::POST, "/embeddings")
                .json(&emb)
                .send()
                .await
                .unwrap()
        ),
        200
    );
    assert_eq!(
        keep!(v1(reqwest::Method::GET, "/models").send().await.unwrap()),
        200
    );
    let denied = json!({"model": "gpt-4o", "messages": []});
    assert_eq!(
        keep!(
            v1(reqwest::Method::POST, "/chat/completions")
                .json(&denied)
                .send()
                .await
                .unwrap()
        ),
        403
    );
    for scenario in ["error-429", "error-500", "reset-mid-stream", "set-cookie"] {
        keep!(
            v1(reqwest::Method::POST, "/chat/completions")
                .header("x-mock-scenario", scenario)
                .json(&stream)
                .send()
                .await
                .unwrap()
        );
    }
    // Bring your own key (`X-OpenAI-Key`): used, passed an upstream error, refused by
    // OpenAI, sent twice, an admin key. None of it may be logged or stored either.
    let own = format!("sk-own-canary-{}-OWNK", random_suffix());
    let own_admin = format!("sk-admin-canary-{}-OWNA", random_suffix());
    let own_chat = |body: &serde_json::Value, keys: &[&str]| {
        let mut req = v1(reqwest::Method::POST, "/chat/completions");
        for k in keys {
            req = req.header("x-openai-key", *k);
        }
        req.json(body)
    };
    for body in [&chat, &stream] {
        assert_eq!(keep!(own_chat(body, &[&own]).send().await.unwrap()), 200);
    }
    keep!(
        own_chat(&stream, &[&own])
            .header("x-mock-scenario", "error-429")
            .send()
            .await
            .unwrap()
    );
    mock.reject_key(&own);
    assert_eq!(keep!(own_chat(&chat, &[&own]).send().await.unwrap()), 401);
    assert_eq!(
        keep!(own_chat(&chat, &[&own, &own]).send().await.unwrap()),
        400
    );
    assert_eq!(
        keep!(own_chat(&chat, &[&own_admin]).send().await.unwrap()),
        400
    );
    // The operator's key: set, shown, lent to a person without a key (JSON, stream),
    // refused by OpenAI, replaced, deleted. Never logged, stored or answered either.
    let put = client
        .put(url("/admin/operator-key"))
        .bearer_auth(ADMIN_KEY)
        .json(&json!({"api_key": operator}));
    assert_eq!(keep!(put.send().await.unwrap()), 204);
    let show = client
        .get(url("/admin/operator-key"))
        .bearer_auth(ADMIN_KEY);
    assert_eq!(keep!(show.send().await.unwrap()), 200);
    let keyless: serde_json::Value = client
        .post(url("/admin/users"))
        .bearer_auth(ADMIN_KEY)
        .json(&json!({"name": "Keyless"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let lent: serde_json::Value = client
        .post(url(&format!(
            "/admin/users/{}/grants",
            keyless["id"].as_str().unwrap()
        )))
        .bearer_auth(ADMIN_KEY)
        .json(&json!({"name": "lent app", "plan": "lent"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let lent_key = lent["api_key"].as_str().unwrap().to_owned();
    let lent_chat = |body: &serde_json::Value| {
        client
            .post(url("/v1/chat/completions"))
            .bearer_auth(&lent_key)
            .json(body)
    };
    for body in [&chat, &stream] {
        assert_eq!(keep!(lent_chat(body).send().await.unwrap()), 200);
    }
    keep!(
        lent_chat(&stream)
            .header("x-mock-scenario", "error-429")
            .send()
            .await
            .unwrap()
    );
    mock.reject_key(&operator);
    assert_eq!(keep!(lent_chat(&chat).send().await.unwrap()), 424);
    let operator_admin = format!("sk-admin-operator-canary-{}-OPRA", random_suffix());
    let put = client
        .put(url("/admin/operator-key"))
        .bearer_auth(ADMIN_KEY)
        .json(&json!({"api_key": operator_admin}));
    assert_eq!(keep!(put.send().await.unwrap()), 400);
    let del = client
        .delete(url("/admin/operator-key"))
        .bearer_auth(ADMIN_KEY);
    assert_eq!(keep!(del.send().await.unwrap()), 204);
    assert_eq!(keep!(lent_chat(&chat).send().await.unwrap()), 409);

    let bad = client
        .post(url("/v1/chat/completions"))
        .bearer_auth(format!("{grant_key}x"))
        .json(&chat);
    assert_eq!(keep!(bad.send().await.unwrap()), 401);
    let list = client
        .get(url(&format!("/admin/users/{uid}/grants")))
        .bearer_auth(ADMIN_KEY);
    assert_eq!(keep!(list.send().await.unwrap()), 200);
    // Revoke, then use: the refusal path is logged too.
    let del = client
        .delete(url(&format!(
            "/admin/grants/{}",
            created["grant"]["id"].as_str().unwrap()
        )))
        .bearer_auth(ADMIN_KEY);
    assert_eq!(keep!(del.send().await.unwrap()), 204);
    assert_eq!(
        keep!(
            v1(reqwest::Method::POST, "/chat/completions")
                .json(&chat)
                .send()
                .await
                .unwrap()
        ),
        401
    );
    assert!(server.terminate(), "keygate did not shut down cleanly");

    // The traffic really carried the canary to the upstream: this test can fail.
    let forwarded = mock.requests();
    assert!(
        forwarded
            .iter()
            .any(|r| r.header("authorization") == Some(format!("Bearer {canary}").as_str()))
    );
    assert!(
        forwarded
            .iter()
            .any(|r| r.header("authorization") == Some(format!("Bearer {own}").as_str()))
    );
    assert!(
        forwarded
            .iter()
            .any(|r| r.header("authorization") == Some(format!("Bearer {operator}").as_str()))
    );

    let logs = std::fs::read(&log).unwrap();
    assert!(
        contains(&logs, "DEBUG"),
        "RUST_LOG=debug did not take effect"
    );
    let master = std::fs::read_to_string(data.join("master.keys")).unwrap();
    let master_key = master
        .lines()
        .last()
        .unwrap()
        .split_once(':')
        .unwrap()
        .1
        .to_owned();
    let needles = [
        canary.as_str(),
        &canary[10..30],
        grant_secret.as_str(),
        master_key.as_str(),
        own.as_str(),
        &own[10..30],
        own_admin.as_str(),
        operator.as_str(),
        &operator[12..32],
        operator_admin.as_str(),
    ];

    for needle in needles {
        assert!(!contains(&logs, needle), "secret in logs: {needle}");
    }
    for file in files_under(&data) {
        if file.ends_with("master.keys") {
            continue;
        }
        let bytes = std::fs::read(&file).unwrap();
        for needle in needles {
            assert!(
                !contains(&bytes, needle),
                "secret in {}: {needle}",
                file.display()
            );
        }
    }
    for body in &responses {
        for needle in needles {
            assert!(
                !contains(body, needle),
                "secret in a response: {}",
                String::from_utf8_lossy(body)
            );
        }
    }
    // The grant key appears exactly where it is handed out, and only there.
    assert!(
        files_under(&data)
            .iter()
            .all(|f| !contains(&std::fs::read(f).unwrap(), &grant_key))
    );
}

#[tokio::test]
async fn passkey_ceremonies_leave_no_webauthn_dumps_in_debug_logs() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let (mut server, _) = common::serve_split(
        dir.path(),
        &[
            ("KEYGATE_DATA_DIR", data.to_str().unwrap()),
            ("RUST_LOG", "debug"),
        ],
    )
    .await;
    let port = server.address.rsplit(':').next().unwrap().to_owned();
    let mut browser = keygate_testkit::browser::Browser::new(&format!("http://localhost:{port}"));
    browser.signed_up("Quiet Quentin").await;
    let mut again = browser.with_same_passkey();
    assert_eq!(again.login().await.status(), 200);
    assert!(server.terminate());
    let log = std::fs::read_to_string(&server.log).unwrap();
    // The traffic was logged at debug (so the filter was really `debug`)...
    assert!(log.contains("DEBUG"), "no debug lines at all");
    // ... but nothing from webauthn-rs below info: it dumps credentials and client data.
    for line in log.lines() {
        assert!(
            !(line.contains("webauthn_rs") && (line.contains("DEBUG") || line.contains("TRACE"))),
            "{line}"
        );
    }
    assert!(
        !log.contains("attested credential data"),
        "credential dump in the log"
    );
}
