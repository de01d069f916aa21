//! The admin API over HTTP: one request at a time on a current-thread runtime, the key
//! in a sensitive `Authorization` header, paged lists followed to their end, and every
//! failure turned into one line that never holds the key.

use std::time::Duration;

use anyhow::{Context, anyhow, bail};
use reqwest::header::{AUTHORIZATION, HeaderValue};
use reqwest::{Method, StatusCode};
use secrecy::{ExposeSecret, SecretString};
use serde_json::Value;
use serde_json::value::RawValue;
use url::Url;

/// How long to wait for a connection, and for a whole answer.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
const ANSWER_TIMEOUT: Duration = Duration::from_secs(60);
/// The most items one page may hold (the server's own maximum).
const MAX_PAGE: usize = 1000;
/// An error message longer than this is cut: one line stays one readable line.
const MAX_MESSAGE_CHARS: usize = 400;

pub struct Client {
    base: Url,
    key: SecretString,
    http: reqwest::Client,
    rt: tokio::runtime::Runtime,
}

/// A successful answer: its body as sent.
pub struct Reply {
    pub body: Vec<u8>,
    next: Option<String>,
}

impl Reply {
    /// The body as JSON (for tables); `--json` prints [`Reply::body`] itself.
    pub fn json(&self) -> anyhow::Result<Value> {
        serde_json::from_slice(&self.body).map_err(|_| anyhow!("the answer was not JSON"))
    }
}

impl Client {
    /// A client for the keygate at `url` (`http` or `https`, optionally with a path
    /// prefix), authenticating with `key`.
    pub fn new(url: &str, key: SecretString) -> anyhow::Result<Self> {
        let base = parse_base(url)?;
        let http = reqwest::Client::builder()
            .connect_timeout(CONNECT_TIMEOUT)
            .timeout(ANSWER_TIMEOUT)
            // A redirect is reported, not followed: the key is not sent on elsewhere.
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!("keygate-admin/", env!("CARGO_PKG_VERSION")))
            .build()
            .context("could not set up the HTTP client")?;
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .context("could not start the runtime")?;
        Ok(Self {
            base,
            key,
            http,
            rt,
        })
    }

    /// One request; a non-2xx answer is an error naming the server's `code` and message.
    pub fn send(
        &self,
        method: Method,
        path: &str,
        query: &[(&str, String)],
        body: Option<&Value>,
    ) -> anyhow::Result<Reply> {
        let url = self.url(path, query);
        let mut auth = HeaderValue::from_str(&format!("Bearer {}", self.key.expose_secret()))
            .map_err(|_| {
                anyhow!("the admin key holds characters no key has (check KEYGATE_ADMIN_KEY or the key file)")
            })?;
        auth.set_sensitive(true);
        let mut req = self.http.request(method, url).header(AUTHORIZATION, auth);
        if let Some(body) = body {
            req = req
                .header(reqwest::header::CONTENT_TYPE, "application/json")
                .body(body.to_string());
        }
        let answer = self.rt.block_on(async {
            let res = req.send().await?;
            let status = res.status();
            let location = res
                .headers()
                .get(reqwest::header::LOCATION)
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned);
            let next = res
                .headers()
                .get("x-next-cursor")
                .and_then(|v| v.to_str().ok())
                .filter(|v| !v.is_empty())
                .map(str::to_owned);
            let body = res.bytes().await?.to_vec();
            Ok::<_, reqwest::Error>((status, location, next, body))
        });
        let (status, location, next, body) = answer.map_err(|e| self.transport_error(&e))?;
        if status.is_success() {
            return Ok(Reply { body, next });
        }
        if status.is_redirection() {
            // The target is the server's text too: masked like its messages.
            let to = location.map_or_else(
                || "elsewhere".into(),
                |l| one_line(&l, self.key.expose_secret()),
            );
            bail!(
                "{} answered HTTP {} (a redirect to {to}): point --url at keygate itself",
                self.shown_base(),
                status.as_u16()
            );
        }
        Err(anyhow!(self.server_error(status, &body)))
    }

    /// Every item of a paged list: page after page (`X-Next-Cursor`) until there is no
    /// next one, or until `limit` items. Items are kept as the server sent them.
    pub fn list(
        &self,
        path: &str,
        query: &[(&str, String)],
        limit: Option<usize>,
    ) -> anyhow::Result<Vec<Box<RawValue>>> {
        let mut items: Vec<Box<RawValue>> = Vec::new();
        let mut cursor: Option<String> = None;
        loop {
            let mut q = query.to_vec();
            if let Some(limit) = limit {
                let left = limit.saturating_sub(items.len()).clamp(1, MAX_PAGE);
                q.push(("limit", left.to_string()));
            }
            if let Some(c) = &cursor {
                q.push(("cursor", c.clone()));
            }
            let reply = self.send(Method::GET, path, &q, None)?;
            let page: Vec<Box<RawValue>> = serde_json::from_slice(&reply.body).map_err(|_| {
                anyhow!(
                    "the answer to GET {path} from {} is not a list keygate gives: is --url right?",
                    self.shown_base()
                )
            })?;
            let empty = page.is_empty();
            items.extend(page);
            if let Some(limit) = limit
                && items.len() >= limit
            {
                items.truncate(limit);
                break;
            }
            match reply.next {
                // A page with nothing on it that still points on would never end.
                Some(next) if !empty && cursor.as_deref() != Some(next.as_str()) => {
                    cursor = Some(next);
                }
                Some(_) => bail!("the server's paging of GET {path} does not advance"),
                None => break,
            }
        }
        Ok(items)
    }

    fn url(&self, path: &str, query: &[(&str, String)]) -> Url {
        let mut url = self.base.clone();
        let joined = format!(
            "{}/{}",
            self.base.path().trim_end_matches('/'),
            path.trim_start_matches('/')
        );
        url.set_path(&joined);
        if !query.is_empty() {
            let mut pairs = url.query_pairs_mut();
            for (k, v) in query {
                pairs.append_pair(k, v);
            }
        }
        url
    }

    fn shown_base(&self) -> String {
        self.base.as_str().trim_end_matches('/').to_owned()
    }

    /// A request that got no HTTP answer: which server, and why, in a few words.
    fn transport_error(&self, e: &reqwest::Error) -> anyhow::Error {
        let base = self.shown_base();
        let root = root_cause(e);
        if e.is_timeout() {
            anyhow!(
                "no answer from {base} within {} s",
                ANSWER_TIMEOUT.as_secs()
            )
        } else if e.is_connect() {
            anyhow!("cannot connect to {base}: {root} (is keygate running there? see --url)")
        } else {
            anyhow!("request to {base} failed: {root}")
        }
    }

    /// An error answer as one line: the server's OpenAI-shaped `code` and `message`
    /// (with `param` when the message does not name it), or its status when the answer
    /// is not keygate's (a proxy's page, say).
    fn server_error(&self, status: StatusCode, body: &[u8]) -> String {
        let parsed: Option<Value> = serde_json::from_slice(body).ok();
        let error = parsed.as_ref().and_then(|v| v.get("error"));
        let text = |k: &str| {
            error
                .and_then(|e| e.get(k))
                .and_then(Value::as_str)
                .map(|s| one_line(s, self.key.expose_secret()))
        };
        match (text("code"), text("message")) {
            (code, Some(message)) => {
                let code = code
                    .or_else(|| text("type"))
                    .unwrap_or_else(|| "error".into());
                let param = text("param")
                    .filter(|p| !message.contains(p.as_str()))
                    .map(|p| format!(" (param: {p})"))
                    .unwrap_or_default();
                format!("{code}: {message}{param} (HTTP {})", status.as_u16())
            }
            _ => format!(
                "HTTP {} from {} (not an answer keygate gives: is --url right?)",
                status,
                self.shown_base()
            ),
        }
    }
}

/// `--url` as a base: http(s), no credentials, query or fragment.
fn parse_base(raw: &str) -> anyhow::Result<Url> {
    // Every message repeats the URL as given, without any `user:password@` in it (also
    // when it does not parse: `http://u:pw@host:99999`).
    let shown = without_credentials(raw.trim());
    let url = Url::parse(raw.trim())
        .map_err(|e| anyhow!("--url {shown:?} is not a URL ({e}); e.g. http://127.0.0.1:8080"))?;
    if !url.username().is_empty() || url.password().is_some() {
        bail!("--url must not hold a user name or password: the admin key is the credential");
    }
    if !matches!(url.scheme(), "http" | "https") || url.host().is_none() {
        bail!("--url {shown:?} must be an http:// or https:// address");
    }
    if url.query().is_some() || url.fragment().is_some() {
        bail!("--url {shown:?} must not have a query or fragment");
    }
    Ok(url)
}

/// `raw` with whatever precedes an `@` in its authority (`user:password@`) replaced by
/// `…`; read by hand, since it is also used on text that is not a URL.
fn without_credentials(raw: &str) -> String {
    let (scheme, rest) = raw.split_once("://").unwrap_or(("", raw));
    let end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    match rest[..end].rfind('@') {
        Some(at) if scheme.is_empty() => format!("…@{}", &rest[at + 1..]),
        Some(at) => format!("{scheme}://…@{}", &rest[at + 1..]),
        None => raw.to_owned(),
    }
}

/// The innermost cause's text (e.g. "Connection refused (os error 111)").
fn root_cause(e: &(dyn std::error::Error + 'static)) -> String {
    let mut cause: &(dyn std::error::Error + 'static) = e;
    while let Some(next) = cause.source() {
        cause = next;
    }
    cause.to_string()
}

/// Text from the server made safe for one line of a terminal: control characters
/// (newlines, escapes) become spaces, long text is cut, and the key — which keygate
/// never echoes — is masked should anything in between do so.
fn one_line(s: &str, key: &str) -> String {
    let mut out: String = s
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    if !key.is_empty() && out.contains(key) {
        out = out.replace(key, "[admin key]");
    }
    if out.chars().count() > MAX_MESSAGE_CHARS {
        out = out.chars().take(MAX_MESSAGE_CHARS).collect::<String>() + "…";
    }
    out.trim().to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base_urls() {
        assert!(parse_base("http://127.0.0.1:8080").is_ok());
        assert!(parse_base("https://vault.example/keygate/").is_ok());
        for bad in [
            "ftp://x",
            "not a url",
            "http://u:p@host",
            "http://h/?a=1",
            "mailto:x@y",
        ] {
            assert!(parse_base(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn credentials_are_never_repeated() {
        for (raw, shown) in [
            ("http://u:pw@host:99999/x", "http://…@host:99999/x"),
            ("http://u:p@w@host", "http://…@host"),
            ("u:pw@host", "…@host"),
            ("http://host/a@b", "http://host/a@b"),
            ("http://host:1", "http://host:1"),
        ] {
            assert_eq!(without_credentials(raw), shown, "{raw}");
        }
    }

    #[test]
    fn server_text_stays_one_line_without_the_key() {
        assert_eq!(one_line("a\nb\x1b[31mc", "k"), "a b [31mc");
        assert_eq!(
            one_line("your key sekrit", "sekrit"),
            "your key [admin key]"
        );
        assert!(one_line(&"x".repeat(1000), "k").chars().count() <= MAX_MESSAGE_CHARS + 1);
    }
}
