//! Web origins and redirect URIs, parsed once into types (parse, don't validate).

use std::fmt;

use url::Url;

use crate::CoreError;

/// A web origin, `scheme://host[:port]`, normalised as browsers serialise it (what
/// `event.origin` and the `Origin` header carry). Only http and https.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct AppOrigin(String);

impl AppOrigin {
    pub fn parse(raw: &str) -> Result<Self, CoreError> {
        let url = Url::parse(raw.trim()).map_err(|_| CoreError::InvalidId("origin"))?;
        if !matches!(url.scheme(), "http" | "https") || url.host().is_none() {
            return Err(CoreError::InvalidId("origin"));
        }
        let origin = url.origin().ascii_serialization();
        // An origin has no path, query, fragment or credentials.
        if raw.trim().trim_end_matches('/') != origin {
            return Err(CoreError::InvalidId("origin"));
        }
        Ok(Self(origin))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for AppOrigin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for AppOrigin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "AppOrigin({})", self.0)
    }
}

/// Why a redirect URI was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum RedirectUriError {
    #[error("redirect_uri is not an absolute URL")]
    NotAUrl,
    #[error("redirect_uri must use https (plain http is allowed only for localhost and 127.0.0.1)")]
    Insecure,
    #[error("redirect_uri must not contain a fragment (#...)")]
    Fragment,
    #[error("redirect_uri must not contain credentials")]
    Credentials,
    #[error("redirect_uri is too long")]
    TooLong,
}

/// Where a server app receives its authorization code.
#[derive(Clone, PartialEq, Eq)]
pub struct RedirectUri {
    url: Url,
    origin: AppOrigin,
}

impl RedirectUri {
    pub fn parse(raw: &str) -> Result<Self, RedirectUriError> {
        if raw.len() > 2048 {
            return Err(RedirectUriError::TooLong);
        }
        if raw.contains('#') {
            return Err(RedirectUriError::Fragment);
        }
        let url = Url::parse(raw).map_err(|_| RedirectUriError::NotAUrl)?;
        if !url.username().is_empty() || url.password().is_some() {
            return Err(RedirectUriError::Credentials);
        }
        let local = matches!(
            url.host(),
            Some(url::Host::Domain("localhost"))
                | Some(url::Host::Ipv4(std::net::Ipv4Addr::LOCALHOST))
        );
        match url.scheme() {
            "https" => {}
            "http" if local => {}
            _ => return Err(RedirectUriError::Insecure),
        }
        if url.host().is_none() {
            return Err(RedirectUriError::NotAUrl);
        }
        let origin = AppOrigin(url.origin().ascii_serialization());
        Ok(Self { url, origin })
    }

    pub fn origin(&self) -> &AppOrigin {
        &self.origin
    }

    pub fn as_str(&self) -> &str {
        self.url.as_str()
    }

    /// The redirect with `pairs` appended to its query (its own query is kept).
    pub fn with_query(&self, pairs: &[(&str, &str)]) -> String {
        let mut url = self.url.clone();
        {
            let mut q = url.query_pairs_mut();
            for (k, v) in pairs {
                q.append_pair(k, v);
            }
        }
        url.to_string()
    }
}

impl fmt::Debug for RedirectUri {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "RedirectUri({})", self.url)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn origins() {
        for ok in [
            "https://app.example",
            "http://localhost:5173",
            "https://app.example/",
            "http://127.0.0.1:8080",
        ] {
            assert!(AppOrigin::parse(ok).is_ok(), "{ok}");
        }
        assert_eq!(
            AppOrigin::parse("HTTPS://App.Example:443")
                .map(|o| o.0)
                .ok(),
            None
        );
        assert_eq!(
            AppOrigin::parse("https://app.example:443")
                .unwrap_err()
                .to_string(),
            "CO0007 invalid identifier: origin"
        );
        for bad in [
            "null",
            "",
            "app.example",
            "ftp://x",
            "https://app.example/path",
            "https://u:p@app.example",
            "https://a.example?x",
        ] {
            assert!(AppOrigin::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn redirect_uris() {
        let r = RedirectUri::parse("https://app.example/cb?x=1").unwrap();
        assert_eq!(r.origin().as_str(), "https://app.example");
        assert_eq!(
            r.with_query(&[("code", "c d"), ("state", "s")]),
            "https://app.example/cb?x=1&code=c+d&state=s"
        );
        assert!(RedirectUri::parse("http://localhost:3000/cb").is_ok());
        assert!(RedirectUri::parse("http://127.0.0.1:3000/cb").is_ok());
        assert_eq!(
            RedirectUri::parse("http://app.example/cb").unwrap_err(),
            RedirectUriError::Insecure
        );
        assert_eq!(
            RedirectUri::parse("https://app.example/cb#frag").unwrap_err(),
            RedirectUriError::Fragment
        );
        assert_eq!(
            RedirectUri::parse("https://u:p@app.example/cb").unwrap_err(),
            RedirectUriError::Credentials
        );
        assert_eq!(
            RedirectUri::parse("/relative").unwrap_err(),
            RedirectUriError::NotAUrl
        );
        assert_eq!(
            RedirectUri::parse("javascript:alert(1)").unwrap_err(),
            RedirectUriError::Insecure
        );
        assert_eq!(
            RedirectUri::parse("http://localhost.evil.example/cb").unwrap_err(),
            RedirectUriError::Insecure
        );
    }
}
