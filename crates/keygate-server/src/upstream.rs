//! The upstream client: pooled, keep-alive, no redirects, no overall timeout (the
//! proxy enforces first-byte and idle timeouts itself so each has its own error). One
//! is built at start (checked there) and one per actix worker (`AppState::for_worker`).

use std::time::Duration;

use crate::config::Config;

pub fn client(config: &Config) -> Result<reqwest::Client, reqwest::Error> {
    reqwest::Client::builder()
        .connect_timeout(config.upstream.connect)
        .pool_idle_timeout(Duration::from_secs(90))
        .pool_max_idle_per_host(1024)
        .tcp_nodelay(true)
        .tcp_keepalive(Duration::from_secs(30))
        .redirect(reqwest::redirect::Policy::none())
        .user_agent(concat!("keygate/", env!("CARGO_PKG_VERSION")))
        .build()
}

