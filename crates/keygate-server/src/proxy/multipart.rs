//! The `model` of a multipart body (audio, images), read so that keygate and OpenAI
//! cannot disagree about it.
//!
//! The boundary is the one `keygate_core::content_type` read from the single
//! Content-Type header, exactly as sent (it is case-sensitive): a header that names
//! two boundaries, or one that parsers could read differently, never gets here.
//! The body is read twice, by multer and by a strict scan of every part's headers
//! here; a part both readers do not name alike, a `Content-Disposition` given twice,
//! folded or with `name*=` / several `name` parameters, or a `model` part spelled
//! another way (`Model`, `MODEL`) makes the body ambiguous: 400, never forwarded.

use bytes::Bytes;
use futures::StreamExt as _;

use super::error::{BodyProblem, ProxyError};
use crate::error::ServerError;

pub async fn model(boundary: &str, body: Bytes) -> Result<Option<String>, ServerError> {
    let bad = || ProxyError::Body(BodyProblem::MultipartUnparseable);
    let parts = scan(&body, boundary).ok_or_else(ambiguous)?;
    let boundary = boundary.to_owned();

    let stream = futures::stream::once(async move { Ok::<Bytes, std::io::Error>(body) });
    let mut form = multer::Multipart::new(stream, boundary);
    let mut model = None;
    let mut index = 0;
    while let Some(field) = form.next_field().await.map_err(|_| bad())? {
        let strict = parts.get(index).ok_or_else(ambiguous)?;
        index += 1;
        if field.name() != strict.name.as_deref() {
            return Err(ambiguous());
        }
        if strict.name.as_deref() == Some("model") {
            if model.is_some() {
                return Err(ProxyError::Body(BodyProblem::ModelRepeated).into());
            }
            let text = field.text().await.map_err(|_| bad())?;
            if Some(text.as_bytes()) != strict.content.as_deref() {
                return Err(ambiguous());
            }
            model = Some(text);
        } else {
            // Drain the part so the next one can be read.
            let mut field = field;
            while let Some(chunk) = field.next().await {
                chunk.map_err(|_| bad())?;
            }
        }
    }
    if index != parts.len() {
        return Err(ambiguous());
    }
    Ok(model)
}

fn ambiguous() -> ServerError {
    ProxyError::Body(BodyProblem::MultipartAmbiguous).into()
}

/// A part as the strict scan reads it.
#[derive(Debug, PartialEq, Eq)]
struct Part {
    name: Option<String>,
    /// The body of a part named `model`.
    content: Option<Vec<u8>>,
}

/// Reads every part's headers strictly (RFC 7578). `None` when anything is ambiguous.
fn scan(body: &[u8], boundary: &str) -> Option<Vec<Part>> {
    let delimiter = format!("\r\n--{boundary}");
    let delimiter = delimiter.as_bytes();
    // The first delimiter may start the body (no preceding CRLF).
    let mut rest: &[u8] = match body.strip_prefix(&delimiter[2..]) {
        Some(r) => r,
        None => &body[find(body, delimiter)? + delimiter.len()..],
    };
    let mut parts = Vec::new();
    loop {
        if rest.starts_with(b"--") {
            return Some(parts);
        }
        // Transport padding, then CRLF.
        let eol = find(rest, b"\r\n")?;
        if !rest[..eol].iter().all(|b| *b == b' ' || *b == b'\t') {
            return None;
        }
        rest = &rest[eol + 2..];
        let head_end = find(rest, b"\r\n\r\n")
            .map(|i| (i, i + 4))
            .or_else(|| rest.starts_with(b"\r\n").then_some((0, 2)))?;
        let head = &rest[..head_end.0];
        rest = &rest[head_end.1..];
        let content_end = find(rest, delimiter)?;
        let content = &rest[..content_end];
        rest = &rest[content_end + delimiter.len()..];

        let name = part_name(head)?;
        if name
            .as_deref()
            .is_some_and(|n| n != "model" && n.trim().eq_ignore_ascii_case("model"))
        {
            return None;
        }
        let content = (name.as_deref() == Some("model")).then(|| content.to_vec());
        parts.push(Part { name, content });
    }
}

/// The `name` of a part from its header block; `None` (outer) when ambiguous.
fn part_name(head: &[u8]) -> Option<Option<String>> {
    let head = std::str::from_utf8(head).ok()?;
    let mut disposition = None;
    for line in head.split("\r\n").filter(|l| !l.is_empty()) {
        if line.starts_with([' ', '\t']) {
            return None; // obs-fold
        }
        let (field, value) = line.split_once(':')?;
        if field.trim().eq_ignore_ascii_case("content-disposition") {
            if disposition.is_some() || field != field.trim() {
                return None;
            }
            disposition = Some(value.trim());
        }
    }
    let Some(disposition) = disposition else {
        return Some(None);
    };
    let params = split_params(disposition);
    if !params.first()?.eq_ignore_ascii_case("form-data") {
        return None;
    }
    let mut name = None;
    for param in &params[1..] {
        let Some((key, value)) = param.split_once('=') else {
            continue;
        };
        let key = key.trim().to_ascii_lowercase();
        if key.starts_with("name*") {
            return None;
        }
        if key == "name" {
            if name.is_some() {
                return None;
            }
            name = Some(unquote(value.trim())?);
        }
    }
    Some(name)
}

/// `"a\"b"` → `a"b`; an unquoted token as it is.
fn unquote(value: &str) -> Option<String> {
    let Some(inner) = value.strip_prefix('"') else {
        return Some(value.to_owned());
    };
    let inner = inner.strip_suffix('"')?;
    let mut out = String::with_capacity(inner.len());
    let mut chars = inner.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => out.push(chars.next()?),
            '"' => return None,
            c => out.push(c),
        }
    }
    Some(out)
}

/// `form-data; name="a;b"; filename=x` → `form-data`, `name="a;b"`, `filename=x`:
/// split on `;` outside double quotes (backslash escapes inside them).
fn split_params(value: &str) -> Vec<&str> {
    let mut out = Vec::new();
    let (mut start, mut quoted, mut escaped) = (0, false, false);
    for (i, c) in value.char_indices() {
        match c {
            _ if escaped => escaped = false,
            '\\' if quoted => escaped = true,
            '"' => quoted = !quoted,
            ';' if !quoted => {
                out.push(value[start..i].trim());
                start = i + 1;
            }
            _ => {}
        }
    }
    out.push(value[start..].trim());
    out
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn body(parts: &[(&str, &str)]) -> Vec<u8> {
        let mut b = String::new();
        for (head, value) in parts {
            b.push_str(&format!("--XyZ\r\n{head}\r\n\r\n{value}\r\n"));
        }
        b.push_str("--XyZ--\r\n");
        b.into_bytes()
    }

    fn names(parts: &[(&str, &str)]) -> Option<Vec<Option<String>>> {
        scan(&body(parts), "XyZ").map(|p| p.into_iter().map(|p| p.name).collect())
    }

    #[test]
    fn plain_parts() {
        let got = scan(
            &body(&[
                ("Content-Disposition: form-data; name=\"model\"", "gpt-4o"),
                (
                    "content-disposition: form-data; name=file; filename=\"a;name=b.wav\"\r\nContent-Type: audio/wav",
                    "RIFF",
                ),
                ("Content-Type: text/plain", "no name"),
            ]),
            "XyZ",
        )
        .unwrap();
        assert_eq!(
            got,
            [
                Part {
                    name: Some("model".into()),
                    content: Some(b"gpt-4o".to_vec())
                },
                Part {
                    name: Some("file".into()),
                    content: None
                },
                Part {
                    name: None,
                    content: None
                },
            ]
        );
        assert_eq!(
            names(&[("Content-Disposition: form-data; name=\"a\\\"b\"", "x")]),
            Some(vec![Some("a\"b".into())])
        );
    }

    #[test]
    fn ambiguous_parts() {
        for head in [
            "Content-Disposition: form-data; name*=UTF-8''model",
            "Content-Disposition: form-data; name=\"x\"; name=\"model\"",
            "Content-Disposition: form-data; name=\"x\"; NAME=\"model\"",
            "Content-Disposition: form-data; name=\"Model\"",
            "Content-Disposition: form-data; name=\"MODEL \"",
            "Content-Disposition: form-data; name=\"x\"\r\nContent-Disposition: form-data; name=\"model\"",
            "Content-Disposition: form-data;\r\n name=\"model\"",
            "Content-Disposition : form-data; name=\"model\"",
            "Content-Disposition: attachment; name=\"model\"",
            "Content-Disposition: form-data; name=\"unterminated",
        ] {
            assert_eq!(names(&[(head, "v")]), None, "{head}");
        }
        // The boundary is case-sensitive: a body delimited otherwise is not read.
        assert!(
            scan(
                &body(&[("Content-Disposition: form-data; name=a", "v")]),
                "xyz"
            )
            .is_none()
        );
    }
}
