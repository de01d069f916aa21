use keygate_testkit::spawn_app;

use crate::helpers::assert_openai_error;

#[tokio::test]
async fn healthz_and_readyz_answer() {
    let app = spawn_app().await;
    for path in ["/healthz", "/readyz"] {
        let res = app.client.get(app.url(path)).send().await.unwrap();
        assert_eq!(res.status(), 200, "{path}");
        assert!(res.headers().contains_key("x-request-id"));
    }
}

#[tokio::test]
async fn unknown_routes_are_openai_shaped_404s() {
    let app = spawn_app().await;
    let res = app.client.post(app.url("/nope")).send().await.unwrap();
    assert_openai_error(res, 404, "not_found").await;
    let res = app.client.get(app.url("/admin/nope")).send().await.unwrap();
    assert_openai_error(res, 404, "not_found").await;
}

#[tokio::test]
async fn a_plain_inbound_request_id_is_kept_and_a_hostile_one_replaced() {
    let app = spawn_app().await;
    let res = app
        .client
        .get(app.url("/healthz"))
        .header("x-request-id", "trace-123")
        .send()
        .await
        .unwrap();
    assert_eq!(res.headers()["x-request-id"], "trace-123");
    let res = app
        .client
        .get(app.url("/healthz"))
        .header("x-request-id", "evil\"id with spaces")
        .send()
        .await
        .unwrap();
    let id = res.headers()["x-request-id"].to_str().unwrap();
    assert!(id.starts_with("req_"), "{id}");
}

#[tokio::test]
async fn landing_page_is_served() {
    let app = spawn_app().await;
    let res = app.client.get(app.url("/")).send().await.unwrap();
    assert_eq!(res.status(), 200);
    assert!(
        res.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/html")
    );
    assert!(res.text().await.unwrap().contains("keygate"));
}
