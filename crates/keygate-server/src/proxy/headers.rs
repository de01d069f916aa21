//! Header rewriting, both directions, as pure functions (table-tested below).
//!
//! Upstream receives only an ALLOWLIST of the app's headers: what the official SDKs and
//! OpenAI's API use ([`FORWARD_UPSTREAM`], `x-stainless-*`), plus names the operator
//! adds (`forward_headers`, checked by [`parse_forward_headers`]). Everything else —
//! the app's credentials, cookies, hop-by-hop headers, its origin, client addresses
//! (`via`, `x-forwarded-*`, `cf-connecting-ip`, `true-client-ip`), rewrite hints
//! (`x-original-url`), and headers that would pick another OpenAI org/project than
//! the person's — stays here. The app never receives upstream cookies, hop-by-hop
//! headers, upstream CORS headers, `alt-svc` or the person's org/project ids; the
//! upstream's request id is kept as `x-upstream-request-id`.

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

/// Inbound headers forwarded upstream (lowercase). `content-length` is set by the
/// client library from the body actually sent; `accept-encoding` is left out so the
/// upstream answers uncompressed (usage is read from it); `content-encoding` is not
/// needed: compressed request bodies are refused before this point.
pub const FORWARD_UPSTREAM: [&str; 7] = [
    "accept",
    "accept-language",
    "content-type",
    "idempotency-key",
    "openai-beta",
    "user-agent",
    "x-client-request-id",
];

/// Prefixes forwarded upstream: the official SDKs' platform and retry hints.
const FORWARD_UPSTREAM_PREFIXES: [&str; 1] = ["x-stainless-"];

/// Never forwarded, even when an operator lists them in `forward_headers`.
const NEVER_UPSTREAM: [&str; 25] = [
    "host",
    // actix answered any `100-continue` already; the upstream gets the whole body.
    "expect",
    "authorization",
    "cookie",
    "cookie2",
    "content-length",
    "content-encoding",
    "accept-encoding",
    "openai-organization",
    "openai-project",
    "api-key",
    "x-api-key",
    // The caller's own OpenAI key: sent upstream only as `Authorization`, never as is.
    "x-openai-key",
    "origin",
    "referer",
    "forwarded",
    "via",
    "x-forwarded-for",
    "x-forwarded-host",
    "x-forwarded-proto",
    "x-real-ip",
    "true-client-ip",
    "cf-connecting-ip",
    "x-original-url",
    "x-request-id",
];

/// Checks the operator's extra forwarded header names (`forward_headers`, a comma
/// list): valid header names, lowercased, none of the never-forwarded or hop-by-hop
/// ones.
pub fn parse_forward_headers(raw: &str) -> Result<Vec<String>, String> {
    let mut out = Vec::new();
    for name in raw.split(',').map(str::trim).filter(|n| !n.is_empty()) {
        let lower = name.to_ascii_lowercase();
        let token = lower
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b));
        if !token {
            return Err(format!("`{name}` is not a header name"));
        }
        if NEVER_UPSTREAM.contains(&lower.as_str())
            || HOP_BY_HOP.contains(&lower.as_str())
            || lower.starts_with("x-forwarded-")
            || lower.starts_with("proxy-")
        {
            return Err(format!("`{name}` is never forwarded to the upstream"));
        }
        if !out.contains(&lower) {
            out.push(lower);
        }
    }
    Ok(out)
}

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

/// Inbound (app → keygate) headers to forward, as `(lowercase name, value bytes)`:
/// the allowlist, plus the operator's `extra` names (already checked, lowercase).
pub fn upstream_headers(inbound: &[(&str, &[u8])], extra: &[String]) -> Vec<(String, Vec<u8>)> {
    let listed = connection_listed(
        inbound
            .iter()
            .filter(|(n, _)| n.eq_ignore_ascii_case("connection"))
            .map(|(_, v)| *v),
    );
    let allowed = |n: &str| {
        FORWARD_UPSTREAM.contains(&n)
            || FORWARD_UPSTREAM_PREFIXES.iter().any(|p| n.starts_with(p))
            || extra.iter().any(|e| e == n)
    };
    inbound
        .iter()
        .map(|(n, v)| (lowercase(n), *v))
        .filter(|(n, _)| allowed(n) && keep(n, &NEVER_UPSTREAM, &listed))
        .map(|(n, v)| (n.into_owned(), v.to_vec()))
        .collect()
}

/// `name` in lowercase, copied only when it is not already (names parsed by the `http`
/// crate always are): headers that are dropped cost no allocation.
fn lowercase(name: &str) -> std::borrow::Cow<'_, str> {
    if name.bytes().any(|b| b.is_ascii_uppercase()) {
        std::borrow::Cow::Owned(name.to_ascii_lowercase())
    } else {
        std::borrow::Cow::Borrowed(name)
    }
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
        .map(|(n, v)| (lowercase(n), *v))
        .filter(|(n, _)| keep(n, &NEVER_DOWNSTREAM, &listed) && !n.starts_with("access-control-"))
        .map(|(n, v)| (n.into_owned(), v.to_vec()))
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
    fn names_are_judged_the_same_in_any_case() {
        let mixed: Vec<(&str, &[u8])> = vec![
            ("Authorization", b"Bearer kg_x"),
            ("Content-Type", b"application/json"),
            ("X-Stainless-Lang", b"js"),
            ("Set-Cookie", b"a=b"),
            ("X-Request-Id", b"up-1"),
            ("Connection", b"X-Private"),
            ("X-Private", b"1"),
        ];
        let lower: Vec<(String, &[u8])> = mixed
            .iter()
            .map(|(n, v)| (n.to_ascii_lowercase(), *v))
            .collect();
        let lower: Vec<(&str, &[u8])> = lower.iter().map(|(n, v)| (n.as_str(), *v)).collect();
        assert_eq!(upstream_headers(&mixed, &[]), upstream_headers(&lower, &[]));
        assert_eq!(downstream_headers(&mixed), downstream_headers(&lower));
        assert_eq!(
            names(upstream_headers(&lower, &[])),
            vec!["content-type", "x-stainless-lang"]
        );
    }

    #[test]
    fn upstream_table() {
        let inbound: Vec<(&str, &[u8])> = vec![
            ("Authorization", b"Bearer kg_x"),
            ("Cookie", b"a=b"),
            ("Cookie2", b"$Version=1"),
            ("Host", b"keygate"),
            ("Connection", b"keep-alive, X-Private, Accept-Language"),
            ("X-Private", b"1"),
            ("Keep-Alive", b"timeout=5"),
            ("TE", b"trailers"),
            ("Transfer-Encoding", b"chunked"),
            ("Upgrade", b"h2c"),
            ("Proxy-Authorization", b"Basic x"),
            ("OpenAI-Organization", b"org-evil"),
            ("OpenAI-Project", b"proj-evil"),
            ("api-key", b"k"),
            ("X-OpenAI-Key", b"sk-own"),
            ("Origin", b"https://app.example"),
            ("Referer", b"https://app.example/page"),
            ("Accept-Encoding", b"gzip"),
            ("Content-Encoding", b"gzip"),
            ("Content-Length", b"10"),
            ("Expect", b"100-continue"),
            ("Via", b"1.1 corp-proxy"),
            ("True-Client-IP", b"10.0.0.1"),
            ("CF-Connecting-IP", b"10.0.0.2"),
            ("X-Forwarded-For", b"10.0.0.3"),
            ("X-Original-URL", b"/admin"),
            ("X-Rewrite-URL", b"/admin"),
            ("X-Anything", b"1"),
            ("traceparent", b"00-abc-def-01"),
            ("Accept-Language", b"en"),
            ("Content-Type", b"application/json"),
            ("Accept", b"text/event-stream"),
            ("User-Agent", b"OpenAI/Python 1.0"),
            ("x-stainless-lang", b"python"),
            ("X-Stainless-Retry-Count", b"0"),
            ("OpenAI-Beta", b"assistants=v2"),
            ("Idempotency-Key", b"stainless-python-retry-1"),
            ("X-Client-Request-Id", b"abc"),
            ("x-mock-scenario", b"normal"),
        ];
        assert_eq!(
            names(upstream_headers(&inbound, &[])),
            [
                "content-type",
                "accept",
                "user-agent",
                "x-stainless-lang",
                "x-stainless-retry-count",
                "openai-beta",
                "idempotency-key",
                "x-client-request-id",
            ]
        );
        let extra = parse_forward_headers("X-Mock-Scenario, x-mock-delay-ms").unwrap();
        assert!(names(upstream_headers(&inbound, &extra)).contains(&"x-mock-scenario".into()));
    }

    #[test]
    fn operator_extras_cannot_reopen_what_is_never_forwarded() {
        assert_eq!(
            parse_forward_headers(" x-a ,X-B,,x-a").unwrap(),
            ["x-a", "x-b"]
        );
        assert_eq!(parse_forward_headers("").unwrap(), Vec::<String>::new());
        for bad in [
            "authorization",
            "Cookie",
            "openai-organization",
            "X-OpenAI-Key",
            "x-forwarded-port",
            "proxy-foo",
            "connection",
            "via",
            "cf-connecting-ip",
            "bad name",
            "x:y",
        ] {
            assert!(parse_forward_headers(bad).is_err(), "{bad}");
        }
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
