//! A request's `Content-Type`, read so that keygate and every parser behind it agree.
//!
//! The proxy decides how to read a body (JSON, or multipart with a boundary) from this
//! header, and OpenAI reads the same header again. Parsers disagree on inputs the RFCs
//! leave odd: `mime` (and so `multer`) takes the *first* of two `boundary` parameters,
//! others take the last; some split on `;` without honouring quotes; some decode RFC
//! 2231 `boundary*=` values. [`parse`] therefore accepts only a form every reader
//! reads alike and refuses the rest ([`ContentTypeError`], 400): exactly one header,
//! `type/subtype` tokens, each parameter `name=value` with a token name (no `*`) given
//! once (names compared case-insensitively), a value that is a token or a quoted string
//! with no `"`, `\` or `;` inside, and for `multipart/*` exactly one `boundary` of
//! RFC 2046 characters (1–70, not ending in a space).
//!
//! It applies to every grant: a request must not work for a grant with all models and
//! then fail once the person restricts models, and no real client sends these forms.

use std::fmt;

/// A checked `Content-Type`: its lowercased essence and, for multipart, the boundary
/// exactly as sent (a boundary is case-sensitive).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContentType {
    essence: String,
    boundary: Option<String>,
}

impl ContentType {
    /// `type/subtype`, lowercased.
    pub fn essence(&self) -> &str {
        &self.essence
    }

    pub fn is_multipart_form(&self) -> bool {
        self.essence == "multipart/form-data"
    }

    pub fn is_json(&self) -> bool {
        self.essence == "application/json" || self.essence.ends_with("+json")
    }

    /// The multipart boundary, unquoted (present for every `multipart/*`).
    pub fn boundary(&self) -> Option<&str> {
        self.boundary.as_deref()
    }
}

/// Why a `Content-Type` was refused. The text names the problem, never echoes the value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ContentTypeError {
    /// The header was sent more than once.
    Repeated,
    /// Not `type/subtype` of tokens, a parameter without `=`, a bad token or quoting,
    /// or bytes outside visible ASCII.
    Malformed,
    /// A parameter named twice (`boundary=a; Boundary=b`).
    RepeatedParameter,
    /// An RFC 2231 parameter (`boundary*=`, `boundary*0=`).
    ExtendedParameter,
    /// A quoted value holding `\`, `;` or `"`.
    QuotedValue,
    /// `multipart/*` without a `boundary`.
    MissingBoundary,
    /// A boundary outside RFC 2046's characters or length.
    BadBoundary,
}

impl fmt::Display for ContentTypeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ContentTypeError::Repeated => "the Content-Type header is sent more than once",
            ContentTypeError::Malformed => {
                "the Content-Type header is not `type/subtype` with `; name=value` parameters"
            }
            ContentTypeError::RepeatedParameter => {
                "a Content-Type parameter is given more than once (such as two `boundary`s)"
            }
            ContentTypeError::ExtendedParameter => {
                "a Content-Type parameter uses RFC 2231 `*` syntax (such as `boundary*=`)"
            }
            ContentTypeError::QuotedValue => {
                "a quoted Content-Type parameter contains a backslash, `;` or `\"`"
            }
            ContentTypeError::MissingBoundary => "the multipart Content-Type has no `boundary`",
            ContentTypeError::BadBoundary => {
                "the multipart boundary is not 1-70 letters, digits or '()+_,-./:=? (RFC 2046)"
            }
        })
    }
}

/// Checks every `Content-Type` value of a request (`values` as received, in order).
/// `Ok(None)` when there is none.
pub fn parse<'a>(
    mut values: impl Iterator<Item = &'a [u8]>,
) -> Result<Option<ContentType>, ContentTypeError> {
    let Some(first) = values.next() else {
        return Ok(None);
    };
    if values.next().is_some() {
        return Err(ContentTypeError::Repeated);
    }
    parse_one(first).map(Some)
}

fn parse_one(raw: &[u8]) -> Result<ContentType, ContentTypeError> {
    if !raw.iter().all(|b| (0x20..0x7f).contains(b) || *b == b'\t') {
        return Err(ContentTypeError::Malformed);
    }
    let raw = std::str::from_utf8(raw).map_err(|_| ContentTypeError::Malformed)?;
    let mut rest = raw.trim_matches([' ', '\t']);
    let (essence, after) = rest.split_at(rest.find(';').unwrap_or(rest.len()));
    rest = after;
    let essence = essence.trim_end_matches([' ', '\t']);
    let (kind, sub) = essence.split_once('/').ok_or(ContentTypeError::Malformed)?;
    if !is_token(kind) || !is_token(sub) {
        return Err(ContentTypeError::Malformed);
    }
    let essence = essence.to_ascii_lowercase();

    let mut names: Vec<String> = Vec::new();
    let mut boundary = None;
    while let Some(after) = rest.strip_prefix(';') {
        let param = after.trim_start_matches([' ', '\t']);
        let eq = param.find('=').ok_or(ContentTypeError::Malformed)?;
        let name = &param[..eq];
        if name.contains('*') {
            return Err(ContentTypeError::ExtendedParameter);
        }
        if !is_token(name) {
            return Err(ContentTypeError::Malformed);
        }
        let (value, after_value) = value(&param[eq + 1..])?;
        rest = after_value.trim_start_matches([' ', '\t']);
        let name = name.to_ascii_lowercase();
        if names.contains(&name) {
            return Err(ContentTypeError::RepeatedParameter);
        }
        if name == "boundary" {
            boundary = Some(value.to_owned());
        }
        names.push(name);
    }
    if !rest.is_empty() {
        return Err(ContentTypeError::Malformed);
    }
    if essence.starts_with("multipart/") {
        let b = boundary
            .as_deref()
            .ok_or(ContentTypeError::MissingBoundary)?;
        let ok = (1..=70).contains(&b.len())
            && !b.ends_with(' ')
            && b.bytes()
                .all(|c| c.is_ascii_alphanumeric() || b"'()+_,-./:=? ".contains(&c));
        if !ok {
            return Err(ContentTypeError::BadBoundary);
        }
    } else {
        boundary = None;
    }
    Ok(ContentType { essence, boundary })
}

/// A token or a quoted string at the start of `s`; returns it (unquoted) and the rest.
fn value(s: &str) -> Result<(&str, &str), ContentTypeError> {
    if let Some(inner) = s.strip_prefix('"') {
        let end = inner.find('"').ok_or(ContentTypeError::Malformed)?;
        let quoted = &inner[..end];
        if quoted.contains(['\\', ';']) {
            return Err(ContentTypeError::QuotedValue);
        }
        return Ok((quoted, &inner[end + 1..]));
    }
    let end = s.find([';', ' ', '\t']).unwrap_or(s.len());
    let token = &s[..end];
    if !is_token(token) {
        return Err(ContentTypeError::Malformed);
    }
    Ok((token, &s[end..]))
}

/// RFC 9110 token: one or more tchar.
fn is_token(s: &str) -> bool {
    !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn one(v: &str) -> Result<Option<ContentType>, ContentTypeError> {
        parse(std::iter::once(v.as_bytes()))
    }

    #[test]
    fn plain_forms_pass() {
        let ct = one("application/json").unwrap().unwrap();
        assert!(ct.is_json() && !ct.is_multipart_form());
        assert_eq!(ct.boundary(), None);
        let ct = one("Application/JSON; charset=UTF-8").unwrap().unwrap();
        assert_eq!(ct.essence(), "application/json");
        let ct = one("multipart/form-data; boundary=AbC-123")
            .unwrap()
            .unwrap();
        assert!(ct.is_multipart_form());
        assert_eq!(ct.boundary(), Some("AbC-123"));
        let ct = one("multipart/form-data;boundary=\"----=_Part 0:x\"")
            .unwrap()
            .unwrap();
        assert_eq!(ct.boundary(), Some("----=_Part 0:x"));
        let ct = one("multipart/form-data; charset=utf-8; boundary=----WebKitFormBoundaryx")
            .unwrap()
            .unwrap();
        assert_eq!(ct.boundary(), Some("----WebKitFormBoundaryx"));
        assert_eq!(
            one("text/plain ; charset=\"a b\" ")
                .unwrap()
                .unwrap()
                .essence(),
            "text/plain"
        );
        assert_eq!(parse(std::iter::empty()), Ok(None));
    }

    #[test]
    fn ambiguous_forms_are_refused() {
        use ContentTypeError as E;
        let table = [
            (
                "multipart/form-data; boundary=AaA; boundary=BbB",
                E::RepeatedParameter,
            ),
            (
                "multipart/form-data; boundary=AaA; Boundary=BbB",
                E::RepeatedParameter,
            ),
            (
                "multipart/form-data; boundary=\"AaA\"; boundary=BbB",
                E::RepeatedParameter,
            ),
            (
                "application/json; charset=a; CHARSET=b",
                E::RepeatedParameter,
            ),
            (
                "multipart/form-data; boundary*=UTF-8''BbB; boundary=AaA",
                E::ExtendedParameter,
            ),
            ("multipart/form-data; boundary*0=BbB", E::ExtendedParameter),
            (
                "multipart/form-data; x=\"; boundary=BbB\"; boundary=AaA",
                E::QuotedValue,
            ),
            ("multipart/form-data; boundary=\"A\\\"aA\"", E::QuotedValue),
            ("multipart/form-data", E::MissingBoundary),
            ("multipart/form-data; charset=utf-8", E::MissingBoundary),
            ("multipart/form-data; boundary=\"\"", E::BadBoundary),
            ("multipart/form-data; boundary=a!b", E::BadBoundary),
            ("multipart/form-data; boundary=\"ab \"", E::BadBoundary),
            ("multipart/form-data; boundary=AaA BbB", E::Malformed),
            ("multipart/form-data; boundary=AaA,BbB", E::Malformed),
            ("multipart/form-data; boundary", E::Malformed),
            ("multipart/form-data; boundary=", E::Malformed),
            ("multipart/form-data; boundary=\"AaA", E::Malformed),
            ("multipart/form-data boundary=AaA", E::Malformed),
            ("json", E::Malformed),
            ("application/json;", E::Malformed),
            ("application/json; charset=utf-8 x", E::Malformed),
            ("", E::Malformed),
        ];
        for (value, err) in table {
            assert_eq!(one(value), Err(err), "{value}");
        }
        let long = format!("multipart/form-data; boundary={}", "a".repeat(71));
        assert_eq!(one(&long), Err(E::BadBoundary));
        assert_eq!(
            parse(["text/plain".as_bytes(), b"multipart/form-data; boundary=x"].into_iter()),
            Err(E::Repeated)
        );
        assert_eq!(
            parse(std::iter::once(
                &b"multipart/form-data; boundary=\xc3\xa9"[..]
            )),
            Err(E::Malformed)
        );
        assert!(!E::BadBoundary.to_string().is_empty());
    }
}
