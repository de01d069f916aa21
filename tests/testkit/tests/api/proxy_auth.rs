use keygate_core::ids::GrantId;
use keygate_testkit::{manual_clock, spawn_app, spawn_app_with_clock};
use reqwest::Method;
use reqwest::header::{AUTHORIZATION, HeaderValue};

use crate::helpers::{assert_openai_error, chat};

/// Every malformed `Authorization` is a 401 in OpenAI's shape and never reaches upstream.
#[tokio::test]
async fn malformed_authorization_headers_are_401_and_never_forwarded() {
    let app = spawn_app().await;
    let g = app.enrolled_grant(None).await;
    let long = format!("Bearer {}", "k".repeat(8 * 1024));
    let cases: Vec<(&str, Vec<Vec<u8>>, &str)> = vec![
        ("missing", vec![], "missing_api_key"),
        ("empty", vec![b"".to_vec()], "missing_api_key"),
        ("bearer alone", vec![b"Bearer".to_vec()], "missing_api_key"),
        ("bearer space", vec![b"Bearer ".to_vec()], "missing_api_key"),
        (
            "basic",
            vec![b"Basic dXNlcjpwYXNz".to_vec()],
            "invalid_api_key",
        ),
        (
            "token without scheme",
            vec![g.api_key.as_bytes().to_vec()],
            "invalid_api_key",
        ),
        ("8 KiB", vec![long.into_bytes()], "invalid_api_key"),
        (
            "non-ascii",
            vec![b"Bearer kg_\xff\xfe\xfd".to_vec()],
            "invalid_api_key",
        ),
        (
            "two keys in one",
            vec![format!("Bearer {} {}", g.api_key, g.api_key).into_bytes()],
            "invalid_api_key",
        ),
        (
            "comma list",
            vec![format!("Bearer {},Bearer {}", g.api_key, g.api_key).into_bytes()],
            "invalid_api_key",
        ),
        (
            "two headers",
            vec![
                format!("Bearer {}", g.api_key).into_bytes(),
                format!("Bearer {}", g.api_key).into_bytes(),
            ],
            "invalid_api_key",
        ),
        (
            "openai key",
            vec![b"Bearer sk-proj-abcdef".to_vec()],
            "invalid_api_key",
        ),
        (
            "truncated",
            vec![format!("Bearer {}", &g.api_key[..g.api_key.len() - 1]).into_bytes()],
            "invalid_api_key",
        ),
    ];
    for (name, values, code) in cases {
        let mut req = app
            .client
            .post(format!("{}/chat/completions", app.base_url))
            .json(&chat("gpt-4o-mini"));
        for v in values {
            req = req.header(AUTHORIZATION, HeaderValue::from_bytes(&v).unwrap());
        }
        let res = req.send().await.unwrap();
        let body = assert_openai_error(res, 401, code).await;
        assert!(
            !body.to_string().contains(&g.api_key[20..]),
            "{name}: key echoed"
        );
    }
    assert_eq!(
        app.mock.request_count(),
        0,
        "a malformed request reached the upstream"
    );
}

#[tokio::test]
async fn bearer_scheme_is_case_insensitive() {
    let app = spawn_app().await;
    let g = app.enrolled_grant(None).await;
    for scheme in ["bearer", "BEARER", "BeArEr"] {
        let res = app
            .client
            .get(format!("{}/models", app.base_url))
            .header(AUTHORIZATION, format!("{scheme} {}", g.api_key))
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 200, "{scheme}");
    }
}

#[tokio::test]
async fn well_formed_but_wrong_keys_are_invalid() {
    let app = spawn_app().await;
    let g = app.enrolled_grant(None).await;
    // A different, valid-looking token for the same grant id: right checksum, wrong secret.
    let other = app.enrolled_grant(None).await;
    let forged = other.api_key.replace(&other.grant_id, &g.grant_id);
    let res = app.chat_completions(&forged, &chat("gpt-4o-mini")).await;
    assert_openai_error(res, 401, "invalid_api_key").await;
    // An unknown grant.
    app.revoke(&other.grant_id).await;
    let unknown = format!("kg_{}{}", "a".repeat(16), &g.api_key[19..]);
    let res = app.chat_completions(&unknown, &chat("gpt-4o-mini")).await;
    assert_openai_error(res, 401, "invalid_api_key").await;
    assert_eq!(app.mock.request_count(), 0);
}

#[tokio::test]
async fn no_key_enrolled_is_409() {
    let app = spawn_app().await;
    let uid = app.create_user("No Key").await;
    let created = app.create_grant(&uid, "app", None).await;
    let res = app
        .chat_completions(created["api_key"].as_str().unwrap(), &chat("gpt-4o-mini"))
        .await;
    assert_eq!(res.headers()["x-should-retry"], "false");
    assert_openai_error(res, 409, "key_not_enrolled").await;
    assert_eq!(app.mock.request_count(), 0);
}

#[tokio::test]
async fn models_outside_the_grant_are_403_and_never_forwarded() {
    let app = spawn_app().await;
    // With the `batches` scope too, so the batch case below reaches the model check.
    let g = app
        .enrolled_grant_with(&serde_json::json!({
            "name": "test app",
            "models": ["gpt-4o-mini", "text-embedding-3-small"],
            "scopes": ["inference", "batches"],
        }))
        .await;
    let res = app.chat_completions(&g.api_key, &chat("gpt-4o")).await;
    let body = assert_openai_error(res, 403, "model_not_allowed").await;
    assert_eq!(body["error"]["param"], "model");
    // Duplicate `model` keys could be read differently upstream: refused.
    let res = app
        .v1(Method::POST, "/chat/completions", &g.api_key)
        .header("content-type", "application/json")
        .body(r#"{"model":"gpt-4o-mini","model":"gpt-4o","messages":[]}"#)
        .send()
        .await
        .unwrap();
    assert_openai_error(res, 400, "invalid_request").await;
    // A JSON body under another Content-Type (or none) is still read for its model.
    for ct in [Some("text/plain"), None] {
        let mut req = app
            .v1(Method::POST, "/chat/completions", &g.api_key)
            .body(r#"{"model":"gpt-4o","messages":[]}"#);
        if let Some(ct) = ct {
            req = req.header("content-type", ct);
        }
        assert_openai_error(req.send().await.unwrap(), 403, "model_not_allowed").await;
    }
    // Multipart bodies (audio, images) are checked too.
    let form = reqwest::multipart::Form::new()
        .text("model", "whisper-1")
        .part(
            "file",
            reqwest::multipart::Part::bytes(vec![0u8; 64]).file_name("a.wav"),
        );
    let res = app
        .v1(Method::POST, "/audio/transcriptions", &g.api_key)
        .multipart(form)
        .send()
        .await
        .unwrap();
    assert_openai_error(res, 403, "model_not_allowed").await;
    // Batches name their models in a file keygate does not read.
    let res = app
        .v1(Method::POST, "/batches", &g.api_key)
        .json(&serde_json::json!({"input_file_id": "file-1", "endpoint": "/v1/chat/completions"}))
        .send()
        .await
        .unwrap();
    assert_openai_error(res, 403, "model_not_allowed").await;
    // An allowed top-level `model` beside it proves nothing about the file's models.
    let res = app
        .v1(Method::POST, "/batches", &g.api_key)
        .json(&serde_json::json!({"input_file_id": "file-1", "endpoint": "/v1/chat/completions", "model": "gpt-4o-mini"}))
        .send()
        .await
        .unwrap();
    assert_openai_error(res, 403, "model_not_allowed").await;
    assert_eq!(app.mock.request_count(), 0);

    // The allowed ones pass.
    assert_eq!(
        app.chat_completions(&g.api_key, &chat("gpt-4o-mini"))
            .await
            .status(),
        200
    );
    let res = app
        .v1(Method::POST, "/embeddings", &g.api_key)
        .json(&serde_json::json!({"model": "text-embedding-3-small", "input": "hi"}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    let form = reqwest::multipart::Form::new()
        .text("model", "gpt-4o-mini")
        .text("x", "y");
    let res = app
        .v1(Method::POST, "/audio/transcriptions", &g.api_key)
        .multipart(form)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    assert_eq!(app.mock.request_count(), 3);
}

fn multipart_body(boundary: &str, parts: &[(&str, &str)]) -> String {
    let mut body = String::new();
    for (disposition, value) in parts {
        body.push_str(&format!("--{boundary}\r\n{disposition}\r\n\r\n{value}\r\n"));
    }
    body.push_str(&format!("--{boundary}--\r\n"));
    body
}

/// Finding 6: the multipart boundary is case-sensitive. Read with a lowercased copy of
/// the header, keygate saw other parts than OpenAI would: here an allowed model in
/// parts keygate saw, and a forbidden one in the parts OpenAI sees.
#[tokio::test]
async fn the_multipart_model_is_read_with_the_boundary_as_sent() {
    let app = spawn_app().await;
    let g = app.enrolled_grant(Some(&["gpt-4o-mini"])).await;
    let decoy = multipart_body(
        "abcdef",
        &[(
            "Content-Disposition: form-data; name=\"model\"",
            "gpt-4o-mini",
        )],
    );
    let body = multipart_body(
        "AbCdEf",
        &[
            ("Content-Disposition: form-data; name=\"model\"", "gpt-4o"),
            ("Content-Disposition: form-data; name=\"prompt\"", &decoy),
        ],
    );
    let res = app
        .v1(Method::POST, "/audio/transcriptions", &g.api_key)
        .header("content-type", "multipart/form-data; boundary=AbCdEf")
        .body(body)
        .send()
        .await
        .unwrap();
    assert_openai_error(res, 403, "model_not_allowed").await;
    assert_eq!(app.mock.request_count(), 0);
}

/// Finding 6: a `model` part others could read differently is refused.
#[tokio::test]
async fn ambiguous_multipart_model_parts_are_refused() {
    let app = spawn_app().await;
    let g = app.enrolled_grant(Some(&["gpt-4o-mini"])).await;
    let file = "Content-Disposition: form-data; name=\"file\"; filename=\"a.wav\"";
    let cases: Vec<Vec<(&str, &str)>> = vec![
        vec![
            (
                "Content-Disposition: form-data; name*=UTF-8''model",
                "gpt-4o",
            ),
            (
                "Content-Disposition: form-data; name=\"model\"",
                "gpt-4o-mini",
            ),
        ],
        vec![
            (
                "Content-Disposition: form-data; name=\"x\"; name=\"model\"",
                "gpt-4o",
            ),
            (
                "Content-Disposition: form-data; name=\"model\"",
                "gpt-4o-mini",
            ),
        ],
        vec![
            ("Content-Disposition: form-data; name=\"Model\"", "gpt-4o"),
            (
                "Content-Disposition: form-data; name=\"model\"",
                "gpt-4o-mini",
            ),
        ],
        vec![
            ("Content-Disposition: form-data; name=\"MODEL\"", "gpt-4o"),
            (file, "RIFF"),
        ],
        vec![
            (
                "Content-Disposition: form-data; name=\"model\"\r\nContent-Disposition: form-data; name=\"other\"",
                "gpt-4o-mini",
            ),
            (file, "RIFF"),
        ],
        vec![
            (
                "Content-Disposition: form-data; name=\"model\"",
                "gpt-4o-mini",
            ),
            ("Content-Disposition: form-data; name=\"model\"", "gpt-4o"),
        ],
    ];
    for parts in cases {
        let res = app
            .v1(Method::POST, "/audio/transcriptions", &g.api_key)
            .header("content-type", "multipart/form-data; boundary=b0und")
            .body(multipart_body("b0und", &parts))
            .send()
            .await
            .unwrap();
        let body = assert_openai_error(res, 400, "invalid_request").await;
        assert_eq!(body["error"]["param"], "model", "{parts:?}");
    }
    assert_eq!(app.mock.request_count(), 0);
    // One plain `model` part passes.
    let res = app
        .v1(Method::POST, "/audio/transcriptions", &g.api_key)
        .header("content-type", "multipart/form-data; boundary=b0und")
        .body(multipart_body(
            "b0und",
            &[
                (
                    "Content-Disposition: form-data; name=\"model\"",
                    "gpt-4o-mini",
                ),
                (file, "RIFF"),
            ],
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
}

/// Proxy review, finding 1: `multer` (via `mime`) takes the first of two `boundary`
/// parameters, other parsers the last. The body below reads as `model=gpt-4o-mini`
/// with boundary `AaA` and as `model=gpt-4o` with boundary `BbB`; before the fix a
/// grant limited to gpt-4o-mini got 200 with both spellings of the header. Now any
/// Content-Type that parsers could read differently is 400, for every grant, and
/// nothing reaches OpenAI.
#[tokio::test]
async fn an_ambiguous_content_type_is_400_and_never_forwarded() {
    let app = spawn_app().await;
    let limited = app.enrolled_grant(Some(&["gpt-4o-mini"])).await;
    let unlimited = app.enrolled_grant(None).await;
    let model = "Content-Disposition: form-data; name=\"model\"";
    let inner = multipart_body("AaA", &[(model, "gpt-4o-mini")]);
    let body = multipart_body(
        "BbB",
        &[
            (model, "gpt-4o"),
            ("Content-Disposition: form-data; name=\"x\"", &inner),
        ],
    );
    let headers: &[&[&str]] = &[
        &["multipart/form-data; boundary=AaA; boundary=BbB"],
        &["multipart/form-data; boundary=BbB; boundary=AaA"],
        &["multipart/form-data; boundary=AaA; Boundary=BbB"],
        &["multipart/form-data; boundary=\"AaA\"; boundary=BbB"],
        &["multipart/form-data; boundary*=UTF-8''BbB; boundary=AaA"],
        &["multipart/form-data; x=\"; boundary=BbB\"; boundary=AaA"],
        &["multipart/form-data; boundary=AaA\\"],
        // Two Content-Type headers: keygate read the first, both were forwarded.
        &[
            "multipart/form-data; boundary=AaA",
            "multipart/form-data; boundary=BbB",
        ],
        &["application/json", "multipart/form-data; boundary=BbB"],
    ];
    for key in [&limited.api_key, &unlimited.api_key] {
        for values in headers {
            let mut req = app.v1(Method::POST, "/audio/transcriptions", key);
            for v in *values {
                req = req.header("content-type", *v);
            }
            let res = req.body(body.clone()).send().await.unwrap();
            let err = assert_openai_error(res, 400, "invalid_request").await;
            let message = err["error"]["message"].as_str().unwrap();
            assert!(message.contains("Content-Type"), "{values:?}: {message}");
        }
    }
    assert_eq!(
        app.mock.request_count(),
        0,
        "an ambiguous body was forwarded"
    );

    // One plain boundary: read as sent, and the model checked.
    for (boundary, status) in [("AaA", 200), ("BbB", 403)] {
        let res = app
            .v1(Method::POST, "/audio/transcriptions", &limited.api_key)
            .header(
                "content-type",
                format!("multipart/form-data; boundary=\"{boundary}\""),
            )
            .body(body.clone())
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), status, "{boundary}");
    }
    assert_eq!(app.mock.request_count(), 1);
    let sent = &app.mock.requests()[0];
    let cts: Vec<_> = sent
        .headers
        .iter()
        .filter(|(n, _)| n == "content-type")
        .collect();
    assert_eq!(cts.len(), 1, "{cts:?}");
}

/// Proxy review, finding 3: a grant limited to some models could leave `model` out and
/// let OpenAI choose (its default image model, an assistant's model). Calls that run a
/// model must now name an allowed one; continuations of a run need not.
#[tokio::test]
async fn a_model_limited_grant_must_name_its_model() {
    let app = spawn_app().await;
    let g = app
        .enrolled_grant_with(&serde_json::json!({
            "name": "test app",
            "models": ["gpt-4o-mini"],
            "scopes": ["inference", "assistants", "fine_tuning"],
        }))
        .await;
    let refused = [
        (
            "/images/generations",
            serde_json::json!({"prompt": "a cat"}),
        ),
        (
            "/threads/thread_1/runs",
            serde_json::json!({"assistant_id": "asst_1"}),
        ),
        (
            "/threads/runs",
            serde_json::json!({"assistant_id": "asst_1", "thread": {}}),
        ),
        ("/assistants", serde_json::json!({"name": "helper"})),
        (
            "/assistants/asst_1",
            serde_json::json!({"instructions": "x"}),
        ),
        ("/moderations", serde_json::json!({"input": "hi"})),
        (
            "/responses",
            serde_json::json!({"prompt": {"id": "pmpt_1"}, "input": "hi"}),
        ),
        (
            "/chat/completions",
            serde_json::json!({"model": null, "messages": []}),
        ),
    ];
    for (path, body) in &refused {
        let res = app
            .v1(Method::POST, path, &g.api_key)
            .json(body)
            .send()
            .await
            .unwrap();
        let err = assert_openai_error(res, 403, "model_not_allowed").await;
        assert_eq!(err["error"]["param"], "model", "{path}");
        assert!(
            err["error"]["message"]
                .as_str()
                .unwrap()
                .contains("must name one of them"),
            "{path}: {err}"
        );
    }
    // Models named (or defaulted) deeper in the body are held to the same list.
    let nested = [
        (
            "/responses",
            serde_json::json!({"model": "gpt-4o-mini", "input": "draw",
                               "tools": [{"type": "image_generation"}]}),
        ),
        (
            "/responses",
            serde_json::json!({"model": "gpt-4o-mini", "input": "draw",
                               "tools": [{"type": "image_generation", "model": "gpt-image-1"}]}),
        ),
        (
            "/fine_tuning/jobs",
            serde_json::json!({"model": "gpt-4o-mini", "training_file": "file-1"}),
        ),
        (
            "/fine_tuning/alpha/graders/run",
            serde_json::json!({"grader": {"type": "score_model", "model": "o3"}}),
        ),
    ];
    for (path, body) in &nested {
        let res = app
            .v1(Method::POST, path, &g.api_key)
            .json(body)
            .send()
            .await
            .unwrap();
        assert_openai_error(res, 403, "model_not_allowed").await;
    }
    // A multipart image edit without a `model` part too.
    let form = reqwest::multipart::Form::new()
        .text("prompt", "a hat")
        .part(
            "image",
            reqwest::multipart::Part::bytes(vec![0u8; 16]).file_name("a.png"),
        );
    let res = app
        .v1(Method::POST, "/images/edits", &g.api_key)
        .multipart(form)
        .send()
        .await
        .unwrap();
    assert_openai_error(res, 403, "model_not_allowed").await;
    assert_eq!(app.mock.request_count(), 0);

    // Naming the model passes; so do continuations that cannot name one.
    let allowed = [
        (
            "/images/generations",
            serde_json::json!({"model": "gpt-4o-mini", "prompt": "a cat"}),
        ),
        (
            "/threads/thread_1/runs",
            serde_json::json!({"assistant_id": "asst_1", "model": "gpt-4o-mini"}),
        ),
        (
            "/threads/thread_1/runs/run_1/submit_tool_outputs",
            serde_json::json!({"tool_outputs": []}),
        ),
        ("/threads/thread_1/runs/run_1/cancel", serde_json::json!({})),
        ("/threads", serde_json::json!({})),
        (
            "/responses",
            serde_json::json!({"model": "gpt-4o-mini", "input": "hi",
                               "tools": [{"type": "function", "name": "f"}]}),
        ),
    ];
    for (path, body) in &allowed {
        let res = app
            .v1(Method::POST, path, &g.api_key)
            .json(body)
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 200, "{path}");
    }
    assert_eq!(app.mock.request_count(), allowed.len());

    // A grant with every model may leave `model` out, as OpenAI allows.
    let all = app.enrolled_grant(None).await;
    let res = app
        .v1(Method::POST, "/images/generations", &all.api_key)
        .json(&serde_json::json!({"prompt": "a cat"}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
}

/// A grant past its `expires_at` is 401 `expired_api_key`: crossed on the server's
/// manual clock, no sleep. (Grants get an expiry from the store here; no API sets one
/// yet.)
#[tokio::test]
async fn an_expired_grant_is_401_expired_api_key() {
    let app = spawn_app_with_clock(manual_clock(), |_| {}).await;
    let g = app.enrolled_grant(None).await;
    let id = GrantId::parse(&g.grant_id).unwrap();
    let until = app.clock.now() + 60;
    app.state
        .store
        .update_grant(&id, &|grant| grant.expires_at = Some(until))
        .await
        .unwrap()
        .unwrap();
    app.clock.advance(59);
    let res = app.chat_completions(&g.api_key, &chat("gpt-4o-mini")).await;
    assert_eq!(res.status(), 200);
    app.clock.advance(1);
    let res = app.chat_completions(&g.api_key, &chat("gpt-4o-mini")).await;
    assert_openai_error(res, 401, "expired_api_key").await;
}
