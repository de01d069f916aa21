//! The upstream client: pooled, keep-alive, no redirects, no overall timeout (the
//! proxy enforces first-byte and idle timeouts itself so each has its own error). One
//! is built at start (checked there) and one per actix worker (`AppState::for_worker`).

use std::sync::OnceLock;
use std::time::Duration;

use url::Url;

use crate::config::Config;

pub fn client(config: &Config) -> Result<reqwest::Client, reqwest::Error> {
    let builder = match shared_tls() {
        Some(tls) => reqwest::Client::builder().tls_backend_preconfigured(tls),
        None => reqwest::Client::builder(),
    };
    builder
        .connect_timeout(config.upstream.connect)
        .pool_idle_timeout(Duration::from_secs(90))
        .pool_max_idle_per_host(1024)
        .tcp_nodelay(true)
        .tcp_keepalive(Duration::from_secs(30))
        .redirect(reqwest::redirect::Policy::none())
        .user_agent(concat!("keygate/", env!("CARGO_PKG_VERSION")))
        .build()
}

/// One TLS setup (OpenSSL context with the system's root certificates) for every
/// upstream client of the process: each actix worker has its own client, and each
/// client building its own would load the root store again (≈2 MiB per worker). The
/// settings are reqwest's defaults for native-tls (verification on, SNI, built-in
/// roots, no ALPN). `None` if it cannot be built: each client then builds its own.
fn shared_tls() -> Option<native_tls::TlsConnector> {
    static TLS: OnceLock<Option<native_tls::TlsConnector>> = OnceLock::new();
    TLS.get_or_init(|| {
        native_tls::TlsConnector::builder()
            .build()
            .map_err(|e| tracing::warn!(error = %e, "shared TLS setup failed; one per client"))
            .ok()
    })
    .clone()
}

/// The upstream URL of a request: the configured base (parsed and checked once, at
/// start: `Config::upstream_url`, no trailing slash, no query) + `rest`, the canonical
/// path after `/v1` (`keygate_core::scope::canonicalize` alone decides it), + the
/// query. The base is cloned and only its path and query are set, so nothing in a
/// request can change the scheme, host or port, and no host is parsed per request.
pub fn join(base: &Url, rest: &str, query: Option<&str>) -> Url {
    let prefix = base.path().trim_end_matches('/');
    let mut path = String::with_capacity(prefix.len() + rest.len());
    path.push_str(prefix);
    path.push_str(rest);
    let mut url = base.clone();
    url.set_path(&path);
    url.set_query(query);
    url
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What `join` replaced: the whole URL formatted and parsed again per request.
    fn reparsed(base: &Url, rest: &str, query: Option<&str>) -> Url {
        let mut s = format!("{}{}", base.as_str().trim_end_matches('/'), rest);
        if let Some(q) = query {
            s.push('?');
            s.push_str(q);
        }
        Url::parse(&s).unwrap()
    }

    #[test]
    fn join_matches_parsing_the_whole_url() {
        let bases = [
            "https://api.openai.com/v1",
            "http://127.0.0.1:9999/v1",
            "http://127.0.0.1:9999",
            "https://gw.example/openai/v1",
        ];
        let rests = [
            "",
            "/",
            "/models",
            "/chat/completions",
            "/files/file-abc/content",
            "/a:b@c/d!$&'()*+,=",
            "/x%20y",
        ];
        let queries = [
            None,
            Some(""),
            Some("a=1&b=2"),
            Some("q=x y\"<>"),
            Some("a=%2F"),
        ];
        for base in bases {
            // Parsed as the configuration parses it: no trailing slash.
            let base = Url::parse(base.trim_end_matches('/')).unwrap();
            for rest in rests {
                for query in queries {
                    assert_eq!(
                        join(&base, rest, query).as_str(),
                        reparsed(&base, rest, query).as_str(),
                        "{base} + {rest} ? {query:?}"
                    );
                }
            }
        }
    }

    #[test]
    fn nothing_in_a_path_or_query_changes_the_host() {
        let base = Url::parse("https://api.openai.com/v1").unwrap();
        for rest in [
            "//evil.example/x",
            "/@evil.example",
            "/../../x",
            "/%2e%2e/x",
        ] {
            for query in [None, Some("@evil.example"), Some("#frag"), Some("//evil")] {
                let url = join(&base, rest, query);
                assert_eq!(url.host_str(), Some("api.openai.com"), "{url}");
                assert_eq!(url.port(), None);
                assert_eq!(url.scheme(), "https");
            }
        }
        // Dot segments would leave the base's path (as a parse of the whole URL would
        // too): the canonical-path check refuses them before a URL is ever built.
        for raw in ["/v1/../../x", "/v1/%2e%2e/x", "/v1/./x"] {
            assert!(keygate_core::scope::canonicalize(raw).is_err(), "{raw}");
        }
        let path = keygate_core::scope::canonicalize("/v1//evil.example/x");
        if let Ok(path) = path {
            let rest = path.as_str().strip_prefix("/v1").unwrap_or(path.as_str());
            let url = join(&base, rest, None);
            assert_eq!(url.host_str(), Some("api.openai.com"));
            assert!(url.path().starts_with("/v1/"), "{url}");
        }
    }
}
