//! keygate-testenv's clock control: a tiny HTTP listener on its own loopback port that
//! moves the server's clock forward, so suites outside Rust (the browser tests) can cross
//! a time limit, such as the fresh window after a passkey check, without waiting.
//! Test support only: the product binary has no such endpoint.
//!
//! - `POST /advance?secs=N` → 204 once the clock reads N seconds later;
//! - `POST /reset` → 204 once it reads the system time again (a test that moved it puts it
//!   back, so later tests, and the pages' own clocks, agree with keygate's again).

use std::net::{Ipv4Addr, SocketAddr, TcpListener};

use actix_web::dev::Server;
use actix_web::{App, HttpResponse, HttpServer, web};
use keygate_core::time::Clock;
use serde::Deserialize;

/// Binds 127.0.0.1 on a free port and returns the server (to spawn) and its address.
pub fn serve(clock: Clock) -> std::io::Result<(Server, SocketAddr)> {
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))?;
    let addr = listener.local_addr()?;
    let clock = web::Data::new(clock);
    let server = HttpServer::new(move || {
        App::new()
            .app_data(clock.clone())
            .route("/advance", web::post().to(advance))
            .route("/reset", web::post().to(reset))
    })
    .workers(1)
    .listen(listener)?
    .run();
    Ok((server, addr))
}

#[derive(Deserialize)]
struct Advance {
    secs: u64,
}

async fn advance(clock: web::Data<Clock>, q: web::Query<Advance>) -> HttpResponse {
    clock.advance(q.secs);
    tracing::info!(secs = q.secs, now = clock.now(), "testenv clock advanced");
    HttpResponse::NoContent().finish()
}

async fn reset(clock: web::Data<Clock>) -> HttpResponse {
    clock.reset_offset();
    tracing::info!(now = clock.now(), "testenv clock reset to the system time");
    HttpResponse::NoContent().finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn advance_and_reset_move_the_clock_and_nothing_else_does() {
        let clock = Clock::system_offset();
        let (server, addr) = serve(clock.clone()).unwrap();
        let handle = server.handle();
        tokio::spawn(server);
        let client = reqwest::Client::new();
        let url = format!("http://{addr}/advance");

        let before = keygate_core::time::now();
        let res = client.post(format!("{url}?secs=301")).send().await.unwrap();
        assert_eq!(res.status(), 204);
        assert!(clock.now() >= before + 301 && clock.now() <= keygate_core::time::now() + 301);

        // Not a number, a GET, or another path: refused, the clock unmoved.
        for res in [
            client.post(format!("{url}?secs=-5")).send().await.unwrap(),
            client.post(&url).send().await.unwrap(),
            client.get(format!("{url}?secs=5")).send().await.unwrap(),
            client
                .post(format!("http://{addr}/set?secs=5"))
                .send()
                .await
                .unwrap(),
        ] {
            assert!(res.status().is_client_error(), "{}", res.status());
        }
        assert!(clock.now() <= keygate_core::time::now() + 301);

        // Reset: back to the system time.
        let res = client
            .post(format!("http://{addr}/reset"))
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 204);
        let before = keygate_core::time::now();
        assert!(clock.now() >= before && clock.now() <= keygate_core::time::now());
        handle.stop(true).await;
    }
}
