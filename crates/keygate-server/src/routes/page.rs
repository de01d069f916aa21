//! Paged lists (`GET /admin/users`, `/admin/grants`, `/admin/audit`, `/api/audit`, …):
//! `?limit=&cursor=` in; out, the page as a JSON array (the shape these lists always
//! had) with the next page's address in `Link: <…>; rel="next"` and the bare cursor in
//! `X-Next-Cursor`. No such headers: this was the last page.
//!
//! A cursor is the store key of the last item served, base64url-encoded. It is opaque
//! to clients but not secret and not trusted: it only says where a range scan starts,
//! and every scan stays inside the range its caller may see (a person's cursor cannot
//! reach another person's entries).

use actix_web::http::header::{HeaderName, HeaderValue, LINK};
use actix_web::{HttpRequest, HttpResponse};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde::{Deserialize, Serialize};

use crate::services::error::ServiceError;

/// Items per page when `limit` is not given.
pub const DEFAULT_LIMIT: usize = 100;
/// The largest `limit` accepted.
pub const MAX_LIMIT: usize = 1000;
/// A cursor longer than this is not one of ours.
const MAX_CURSOR_CHARS: usize = 512;

pub const NEXT_CURSOR: HeaderName = HeaderName::from_static("x-next-cursor");

/// The query parameters of a paged list; other parameters of the same query string are
/// read by the route's own struct (`#[serde(flatten)]` is avoided: it turns numbers
/// into strings).
#[derive(Debug, Default, Deserialize)]
pub struct PageQuery {
    pub limit: Option<String>,
    pub cursor: Option<String>,
}

/// Where a page starts and how long it is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PageRequest {
    pub limit: usize,
    /// The store key of the last item of the previous page; the page starts after it.
    pub after: Option<Vec<u8>>,
}

impl PageQuery {
    pub fn parse(&self) -> Result<PageRequest, ServiceError> {
        let limit = match self.limit.as_deref() {
            None => DEFAULT_LIMIT,
            Some(raw) => match raw.parse::<usize>() {
                Ok(n) if (1..=MAX_LIMIT).contains(&n) => n,
                _ => {
                    return Err(ServiceError::invalid(
                        "limit",
                        format!("limit must be a whole number from 1 to {MAX_LIMIT}"),
                    ));
                }
            },
        };
        let after = match self.cursor.as_deref() {
            None | Some("") => None,
            Some(raw) => Some(decode(raw).ok_or_else(|| {
                ServiceError::invalid("cursor", "cursor is not one this server gave out")
            })?),
        };
        Ok(PageRequest { limit, after })
    }
}

fn decode(raw: &str) -> Option<Vec<u8>> {
    if raw.len() > MAX_CURSOR_CHARS {
        return None;
    }
    URL_SAFE_NO_PAD.decode(raw).ok().filter(|k| !k.is_empty())
}

/// One page of items and, when there may be more, the key to continue after.
#[derive(Debug)]
pub struct Page<T> {
    pub items: Vec<T>,
    pub next: Option<Vec<u8>>,
}

impl<T> Page<T> {
    pub fn map<U>(self, f: impl FnMut(T) -> U) -> Page<U> {
        Page {
            items: self.items.into_iter().map(f).collect(),
            next: self.next,
        }
    }
}

/// 200 with the page as a JSON array, and the next page's address when there is one.
pub fn respond<T: Serialize>(req: &HttpRequest, page: Page<T>) -> HttpResponse {
    let mut res = HttpResponse::Ok();
    if let Some(next) = page.next.as_deref() {
        let cursor = URL_SAFE_NO_PAD.encode(next);
        let link = format!("<{}>; rel=\"next\"", next_url(req, &cursor));
        if let (Ok(link), Ok(cursor)) =
            (HeaderValue::from_str(&link), HeaderValue::from_str(&cursor))
        {
            res.insert_header((LINK, link));
            res.insert_header((NEXT_CURSOR, cursor));
        }
    }
    res.json(page.items)
}

/// The same path and query with `cursor` replaced (relative: the server does not know
/// which host name the client used).
fn next_url(req: &HttpRequest, cursor: &str) -> String {
    let mut query: Vec<(String, String)> =
        url::form_urlencoded::parse(req.query_string().as_bytes())
            .filter(|(k, _)| k != "cursor")
            .map(|(k, v)| (k.into_owned(), v.into_owned()))
            .collect();
    query.push(("cursor".into(), cursor.into()));
    let encoded = url::form_urlencoded::Serializer::new(String::new())
        .extend_pairs(query)
        .finish();
    format!("{}?{}", req.path(), encoded)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn q(limit: Option<&str>, cursor: Option<&str>) -> PageQuery {
        PageQuery {
            limit: limit.map(Into::into),
            cursor: cursor.map(Into::into),
        }
    }

    #[test]
    fn limits_default_and_are_bounded() {
        assert_eq!(
            q(None, None).parse().map(|p| p.limit).ok(),
            Some(DEFAULT_LIMIT)
        );
        assert_eq!(q(Some("1"), None).parse().map(|p| p.limit).ok(), Some(1));
        for bad in ["0", "1001", "-1", "ten", "", "1.5"] {
            assert!(q(Some(bad), None).parse().is_err(), "{bad}");
        }
    }

    #[test]
    fn cursors_round_trip_and_junk_is_refused() {
        let key = b"user\0\x01\x02".to_vec();
        let raw = URL_SAFE_NO_PAD.encode(&key);
        assert_eq!(
            q(None, Some(&raw)).parse().ok().and_then(|p| p.after),
            Some(key)
        );
        assert_eq!(q(None, Some("")).parse().ok().and_then(|p| p.after), None);
        for bad in ["***", "a", &"A".repeat(600)] {
            assert!(q(None, Some(bad)).parse().is_err(), "{bad}");
        }
    }
}
