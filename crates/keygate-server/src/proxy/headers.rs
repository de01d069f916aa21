//! Header rewriting, both directions, as pure functions (table-tested below).
//!
//! Upstream never receives the app's credentials, cookies, hop-by-hop headers, the
//! app's origin, or headers that would pick another OpenAI org/project than the
//! person's. The app never receives upstream cookies, hop-by-hop headers, upstream CORS
//! headers, `alt-svc` or the person's org/project ids; the upstream's request id is kept as `x-upstream-request-id`.

/// RFC 9110 §7.6.1 hop-by-hop headers plus the de-facto `proxy-connection`.
const HOP_BY_HOP: [&str; 9] = [
    "connection",
    "keep-alive",
    "proxy-connection",
    "proxy-authenticate",
    "proxy-authorization",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
];

const NEVER_UPSTREAM: [&str; 18] = [
    "host",
    // actix answered any `100-continue` already; the upstream gets the whole body.
    "expect",
    "authorization",
    "cookie",
    "content-length",
    // Upstream answers uncompressed so usage can be read from it.
    "accept-encoding",
    "openai-organization",
    "openai-project",
    "api-key",
    "x-api-key",
    "origin",
    "referer",
    "forwarded",
    "x-forwarded-for",
    "x-forwarded-host",
    "x-forwarded-proto",
    "x-real-ip",
    "x-request-id",
];

const NEVER_DOWNSTREAM: [&str; 7] = [
    "set-cookie",
    // These name the person's OpenAI organisation and project: not the app's business.
    "openai-organization",
    "openai-project",
    "set-cookie2",
    "content-length",
    "alt-svc",
    "x-request-id",
];

/// Names listed in `Connection` are hop-by-hop for this message too.
fn connection_listed<'a>(connection_values: impl Iterator<Item = &'a [u8]>) -> Vec<String> {
    connection_values
        .filter_map(|v| std::str::from_utf8(v).ok())
        .flat_map(|v| v.split(','))
        .map(|t| t.trim().to_ascii_lowercase())
        .filter(|t| !t.is_empty())
        .collect()
}

fn keep(name: &str, never: &[&str], listed: &[String]) -> bool {
    !HOP_BY_HOP.contains(&name) && !never.contains(&name) && !listed.iter().any(|l| l == name)
}

/// Inbound (app → keygate) headers to forward, as `(lowercase name, value bytes)`.
pub fn upstream_headers(inbound: &[(&str, &[u8])]) -> Vec<(String, Vec<u8>)> {
    let listed = connection_listed(
        inbound
            .iter()
            .filter(|(n, _)| n.eq_ignore_ascii_case("connection"))
            .map(|(_, v)| *v),
    );
    inbound
        .iter()
        .map(|(n, v)| (n.to_ascii_lowercase(), *v))
        .filter(|(n, _)| keep(n, &NEVER_UPSTREAM, &listed))
        .map(|(n, v)| (n, v.to_vec()))
        .collect()
}

/// Upstream (OpenAI → keygate) headers to pass to the app.
pub fn downstream_headers(upstream: &[(&str, &[u8])]) -> Vec<(String, Vec<u8>)> {
    let listed = connection_listed(
        upstream
            .iter()
            .filter(|(n, _)| n.eq_ignore_ascii_case("connection"))
            .map(|(_, v)| *v),
    );
    let mut out: Vec<(String, Vec<u8>)> = upstream
        .iter()
        .map(|(n, v)| (n.to_ascii_lowercase(), *v))
        .filter(|(n, _)| keep(n, &NEVER_DOWNSTREAM, &listed) && !n.starts_with("access-control-"))
        .map(|(n, v)| (n, v.to_vec()))
        .collect();
    if let Some((_, v)) = upstream
        .iter()
        .find(|(n, _)| n.eq_ignore_ascii_case("x-request-id"))
    {
        out.push(("x-upstream-request-id".into(), v.to_vec()));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(h: Vec<(String, Vec<u8>)>) -> Vec<String> {
        h.into_iter().map(|(n, _)| n).collect()
    }

    #[test]
    fn upstream_table() {
        let inbound: Vec<(&str, &[u8])> = vec![
            ("Authorization", b"Bearer kg_x"),
            ("Cookie", b"a=b"),
            ("Host", b"keygate"),
            ("Connection", b"keep-alive, X-Private"),
            ("X-Private", b"1"),
            ("Keep-Alive", b"timeout=5"),
            ("TE", b"trailers"),
            ("Transfer-Encoding", b"chunked"),
            ("Upgrade", b"h2c"),
            ("Proxy-Authorization", b"Basic x"),
            ("OpenAI-Organization", b"org-evil"),
            ("api-key", b"k"),
            ("Origin", b"https://app.example"),
            ("Accept-Encoding", b"gzip"),
            ("Content-Length", b"10"),
            ("Expect", b"100-continue"),
            ("Content-Type", b"application/json"),
            ("Accept", b"text/event-stream"),
            ("User-Agent", b"OpenAI/Python 1.0"),
            ("x-stainless-lang", b"python"),
            ("OpenAI-Beta", b"assistants=v2"),
        ];
        assert_eq!(
            names(upstream_headers(&inbound)),
            [
                "content-type",
                "accept",
                "user-agent",
                "x-stainless-lang",
                "openai-beta"
            ]
        );
    }

    #[test]
    fn downstream_table() {
        let upstream: Vec<(&str, &[u8])> = vec![
            ("Set-Cookie", b"__cf_bm=x"),
            ("Connection", b"keep-alive, x-hop"),
            ("x-hop", b"1"),
            ("Keep-Alive", b"timeout=5"),
            ("Proxy-Authenticate", b"Basic"),
            ("Trailer", b"x-foo"),
            ("Transfer-Encoding", b"chunked"),
            ("Content-Length", b"5"),
            ("Alt-Svc", b"h3=\":443\""),
            ("Access-Control-Allow-Origin", b"*"),
            ("Content-Type", b"text/event-stream"),
            ("x-request-id", b"req_upstream"),
            ("openai-processing-ms", b"12"),
            ("openai-organization", b"user-abc"),
            ("x-ratelimit-remaining-requests", b"99"),
        ];
        let out = downstream_headers(&upstream);
        assert_eq!(
            names(out.clone()),
            [
                "content-type",
                "openai-processing-ms",
                "x-ratelimit-remaining-requests",
                "x-upstream-request-id"
            ]
        );
        assert_eq!(out[3].1, b"req_upstream");
    }
}
