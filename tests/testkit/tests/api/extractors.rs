//! Every extractor rejects in one shape: JSON bodies, query strings and forms that do
//! not parse answer OpenAI's error JSON (or, for a browser navigating, a small page),
//! never actix's plain-text default.

use keygate_testkit::spawn_app;
use reqwest::Method;

use crate::helpers::assert_openai_error;

#[tokio::test]
async fn a_query_that_does_not_parse_is_an_openai_error() {
    let app = spawn_app().await;
    let mut b = app.browser();
    b.signed_up("Query").await;
    // `origin` is required by /api/connect/existing; a second `origin` is a duplicate.
    let res = b.get("/api/connect/existing").await;
    let body = assert_openai_error(res, 400, "invalid_request").await;
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("query string"),
        "{body}"
    );
    let res = b
        .get("/api/connect/existing?origin=https://a.example&origin=https://b.example")
        .await;
    assert_openai_error(res, 400, "invalid_request").await;
}

#[tokio::test]
async fn a_form_that_does_not_parse_is_an_openai_error_or_a_page_for_browsers() {
    let app = spawn_app().await;
    let b = app.browser();
    // The deny form needs redirect_uri and state.
    let res = b
        .request(Method::POST, "/connect/deny")
        .form(&[("state", "s")])
        .send()
        .await
        .unwrap();
    let body = assert_openai_error(res, 400, "invalid_request").await;
    assert!(
        body["error"]["message"].as_str().unwrap().contains("form"),
        "{body}"
    );

    let res = b
        .request(Method::POST, "/connect/deny")
        .header("accept", "text/html,application/xhtml+xml")
        .form(&[("state", "s")])
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 400);
    assert!(
        res.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/html")
    );
    let page = res.text().await.unwrap();
    assert!(page.contains("invalid_request"), "{page}");
}

#[tokio::test]
async fn a_form_with_the_wrong_content_type_is_an_openai_error() {
    let app = spawn_app().await;
    let b = app.browser();
    let res = b
        .request(Method::POST, "/connect/deny")
        .header("content-type", "text/plain")
        .body("redirect_uri=x&state=y")
        .send()
        .await
        .unwrap();
    assert_openai_error(res, 400, "invalid_request").await;
}

#[tokio::test]
async fn a_malformed_id_in_a_path_is_not_found_in_openai_shape() {
    let app = spawn_app().await;
    for path in [
        "/admin/users/not-an-id",
        "/admin/users/not-an-id/grants",
        "/admin/grants/UPPERCASE0000000",
    ] {
        let method = if path.starts_with("/admin/grants") {
            Method::DELETE
        } else {
            Method::GET
        };
        let res = app.admin(method, path).send().await.unwrap();
        assert_openai_error(res, 404, "not_found").await;
    }
    let mut b = app.browser();
    b.signed_up("Paths").await;
    for (method, path) in [
        (Method::DELETE, "/api/grants/x"),
        (Method::PATCH, "/api/passkeys/x"),
        (Method::DELETE, "/api/passkeys/x"),
    ] {
        let res = b.send(method, path, serde_json::json!({"name": "n"})).await;
        assert_openai_error(res, 404, "not_found").await;
    }
}
