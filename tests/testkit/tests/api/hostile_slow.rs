//! Slow clients (slowloris): a request head or body that dribbles in or stops is cut
//! off at its deadline, with a 408 where an answer can still be written, and the
//! connection closed; a bystander is served throughout and loses nothing
//! (docs/SECURITY.md, "Hostile input").

use std::time::Duration;

use keygate_testkit::raw::RawConn;
use keygate_testkit::{TestApp, spawn_app_with};

/// Short deadlines so the tests are quick; a slowloris keeps going for many of them.
async fn app() -> TestApp {
    spawn_app_with(|c| {
        c.client_head_timeout_ms = Some(1_000);
        c.client_body_idle_timeout_ms = Some(500);
        c.client_body_timeout_secs = Some(2);
    })
    .await
}

/// Dribbles `lines` one at a time, `every` apart, until the server closes the
/// connection; `true` if it did before the last one (the dribble lasts much longer
/// than any deadline).
async fn dribble(conn: &mut RawConn, lines: usize, every: Duration) -> bool {
    for i in 0..lines {
        if !conn.send(format!("X-Slow-{i}: a\r\n").as_bytes()).await {
            return true;
        }
        if conn.closed_within(every).await {
            return true;
        }
    }
    false
}

fn body_of(text: &str) -> &str {
    text.split_once("\r\n\r\n").map_or("", |(_, b)| b)
}

#[tokio::test]
async fn a_first_request_head_that_dribbles_is_408_and_closed() {
    let app = app().await;
    let bystander = app.bystander().await;
    let mut conn = RawConn::connect(app.port).await;
    conn.send(b"GET /healthz HTTP/1.1\r\nHost: x\r\n").await;
    assert!(
        dribble(&mut conn, 40, Duration::from_millis(250)).await,
        "a 10 s dribble outlived the 1 s head deadline: {}",
        conn.text()
    );
    assert_eq!(conn.status(), Some(408), "{}", conn.text());
    bystander.finish(&app, 5).await;
}

/// actix times only a connection's first head; keygate times every one.
#[tokio::test]
async fn a_later_head_on_a_kept_alive_connection_that_dribbles_is_cut() {
    let app = app().await;
    let bystander = app.bystander().await;
    let mut conn = RawConn::connect(app.port).await;
    conn.send(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n").await;
    conn.read_for(Duration::from_millis(300)).await;
    assert_eq!(conn.status(), Some(200), "{}", conn.text());
    conn.send(b"GET /healthz HTTP/1.1\r\nHost: x\r\n").await;
    assert!(
        dribble(&mut conn, 40, Duration::from_millis(250)).await,
        "a 10 s dribble of a second head outlived the 1 s head deadline"
    );
    assert_eq!(conn.responses(), 1, "{}", conn.text());
    bystander.finish(&app, 5).await;
}

/// A kept-alive connection that stays quiet between requests is not the head
/// deadline's business (actix's keep-alive closes it after 5 s): the next request on
/// it, sent in one go after more than the head deadline, is served.
#[tokio::test]
async fn a_quiet_kept_alive_connection_is_served_again() {
    let app = app().await;
    let mut conn = RawConn::connect(app.port).await;
    conn.send(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n").await;
    conn.read_for(Duration::from_millis(300)).await;
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    conn.send(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n").await;
    conn.read_for(Duration::from_millis(500)).await;
    assert_eq!(conn.responses(), 2, "{:?}", conn.text());
}

#[tokio::test]
async fn a_proxy_body_that_stops_is_408_and_never_forwarded() {
    let app = app().await;
    let g = app.enrolled_grant(None).await;
    let bystander = app.bystander().await;
    let mut conn = RawConn::connect(app.port).await;
    let head = format!(
        "POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {}\r\n\
         Content-Type: application/json\r\nContent-Length: 1000\r\n\r\n{{\"model\":",
        g.api_key
    );
    conn.send(head.as_bytes()).await;
    assert!(
        conn.closed_within(Duration::from_secs(10)).await,
        "a stopped body held the connection"
    );
    let text = conn.text();
    assert_eq!(conn.status(), Some(408), "{text}");
    assert!(
        body_of(&text).contains("\"code\":\"request_timeout\""),
        "{text}"
    );
    // JSON is read whole before anything is sent: only the bystander's calls went up.
    assert!(only_bystanders_went_up(&app));
    bystander.finish(&app, 5).await;
}

/// A streamed upload (not JSON: passed through as it arrives) that stops is cut too:
/// the upstream request is abandoned and the app gets 408, not an upstream error.
#[tokio::test]
async fn a_streamed_upload_that_stops_is_408() {
    let app = app().await;
    let g = app
        .enrolled_grant_with_scopes(&["inference", "files"])
        .await;
    let bystander = app.bystander().await;
    let mut conn = RawConn::connect(app.port).await;
    let head = format!(
        "POST /v1/files HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {}\r\n\
         Content-Type: application/octet-stream\r\nContent-Length: 100000\r\n\r\n",
        g.api_key
    );
    conn.send(head.as_bytes()).await;
    conn.send(&[7u8; 5000]).await;
    assert!(
        conn.closed_within(Duration::from_secs(10)).await,
        "a stopped upload held the connection"
    );
    let text = conn.text();
    assert_eq!(conn.status(), Some(408), "{text}");
    assert!(body_of(&text).contains("request_timeout"), "{text}");
    // The upstream may have seen the start of the upload, never all of it.
    assert!(
        app.mock
            .requests()
            .iter()
            .all(|r| r.path != "/v1/files" || r.body.len() < 100_000)
    );
    bystander.finish(&app, 5).await;
}

/// Bytes that keep coming, each before the idle deadline, but never the whole body:
/// cut at the whole-body deadline.
#[tokio::test]
async fn a_body_that_dribbles_is_cut_at_the_whole_body_deadline() {
    let app = app().await;
    let g = app.enrolled_grant(None).await;
    let bystander = app.bystander().await;
    let mut conn = RawConn::connect(app.port).await;
    let head = format!(
        "POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {}\r\n\
         Content-Type: application/json\r\nContent-Length: 100000\r\n\r\n{{\"model\":\"gpt-4o-mini\",\"x\":\"",
        g.api_key
    );
    conn.send(head.as_bytes()).await;
    let mut cut = false;
    for _ in 0..60 {
        if !conn.send(b"a").await || conn.closed_within(Duration::from_millis(200)).await {
            cut = true;
            break;
        }
    }
    assert!(cut, "a 12 s dribble outlived the 2 s body deadline");
    assert_eq!(conn.status(), Some(408), "{}", conn.text());
    assert!(only_bystanders_went_up(&app));
    bystander.finish(&app, 5).await;
}

/// Every upstream request is one of the bystander's complete chat calls (the attacks'
/// bodies never carry `messages`).
fn only_bystanders_went_up(app: &TestApp) -> bool {
    app.mock.requests().iter().all(|r| {
        r.path == "/v1/chat/completions" && r.body.windows(10).any(|w| w == b"\"messages\"")
    })
}

/// keygate's own JSON API has the same deadlines (its extractor answers the 408).
#[tokio::test]
async fn an_admin_body_that_stops_is_408() {
    let app = app().await;
    let bystander = app.bystander().await;
    let mut conn = RawConn::connect(app.port).await;
    let head = format!(
        "POST /admin/users HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {}\r\n\
         Content-Type: application/json\r\nContent-Length: 100\r\n\r\n{{\"name\":",
        keygate_testkit::ADMIN_KEY
    );
    conn.send(head.as_bytes()).await;
    assert!(conn.closed_within(Duration::from_secs(10)).await);
    let text = conn.text();
    assert_eq!(conn.status(), Some(408), "{text}");
    assert!(body_of(&text).contains("request_timeout"), "{text}");
    bystander.finish(&app, 5).await;
}
