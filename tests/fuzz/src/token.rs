//! The `Authorization` header and the grant (or admin) token in it.
//!
//! Invariants:
//! - the header parser accepts only exactly one value of the form `Bearer <token>`
//!   (scheme in any case), at most 512 bytes, ASCII, and hands back that token trimmed,
//!   non-empty, without whitespace or commas;
//! - a token is accepted only if its checksum, recomputed here independently (CRC-32
//!   of everything before it, 6 base62 digits), matches, its length and prefix are
//!   right, and the hash handed back is SHA-256 of its secret part;
//! - a single changed byte of a valid token is always refused (CRC-32 catches every
//!   burst of up to 32 bits), and any edit that still parses has a different secret;
//! - no refusal's error body repeats the secret part of what was presented.

use actix_web::http::header::{AUTHORIZATION, HeaderValue};
use actix_web::test::TestRequest;
use keygate_core::ids::{AdminKeyId, GrantId, ID_LEN};
use keygate_core::token::{self, admin};
use keygate_server::error::ServerError;
use keygate_server::proxy::bearer_token;
use sha2::{Digest, Sha256};

use crate::Input;

const BASE62: &[u8; 62] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";
const SECRET_LEN: usize = 43;
const CHECKSUM_LEN: usize = 6;

/// One fuzz case: a header built from `data` (random or a mutated valid token).
pub fn check(data: &[u8]) {
    let mut input = Input::new(data);
    match input.byte() % 4 {
        // Raw bytes as the token itself.
        0 => check_token(&String::from_utf8_lossy(input.rest())),
        // Raw bytes as one or more header values.
        1 => {
            let n = 1 + input.below(3);
            let values: Vec<&[u8]> = (0..n).map(|_| input.bytes(600)).collect();
            check_header(&values, None);
        }
        // A valid token, edited.
        _ => {
            let admin_kind = input.bool();
            let (good, secret) = issue(admin_kind);
            let edited = mutate(&good, &mut input);
            let single_substitution = edited.len() == good.len()
                && edited
                    .iter()
                    .zip(good.bytes())
                    .filter(|(a, b)| **a != *b)
                    .count()
                    == 1;
            let edited = String::from_utf8_lossy(&edited).into_owned();
            if edited != good {
                let accepted = if admin_kind {
                    admin::parse(&edited).map(|p| p.hash).ok()
                } else {
                    token::parse(&edited).map(|p| p.hash).ok()
                };
                if single_substitution {
                    assert!(
                        accepted.is_none(),
                        "one changed byte was accepted: {edited}"
                    );
                }
                if let Some(hash) = accepted {
                    let original = sha256(&secret);
                    assert!(
                        hash != keygate_core_hash(&original),
                        "an edited token kept the original secret: {edited}"
                    );
                }
            }
            check_token(&edited);
            // And the same through the header parser, as a proxied request sees it.
            let scheme =
                ["Bearer ", "bearer ", "BEARER  ", "Basic ", "", "Bearer\t"][input.below(6)];
            let value = format!("{scheme}{edited}");
            check_header(&[value.as_bytes()], Some(&secret));
        }
    }
}

/// Parses `s` as a grant and as an admin token; whatever is accepted must be right.
pub fn check_token(s: &str) {
    if let Ok(p) = token::parse(s) {
        assert_well_formed(s, token::PREFIX);
        assert_eq!(p.grant_id.as_str(), &s[3..3 + ID_LEN]);
        assert!(GrantId::parse(p.grant_id.as_str()).is_ok());
        assert!(p.hash == keygate_core_hash(&sha256(secret_of(s, token::PREFIX))));
    }
    if let Ok(p) = admin::parse(s) {
        assert_well_formed(s, admin::PREFIX);
        assert!(AdminKeyId::parse(p.id.as_str()).is_ok());
        assert!(p.hash == keygate_core_hash(&sha256(secret_of(s, admin::PREFIX))));
    }
}

/// The header parser on `values` (each one `Authorization` header, in order).
fn check_header(values: &[&[u8]], secret: Option<&str>) {
    let mut req = TestRequest::default();
    let mut sent = Vec::new();
    for v in values {
        // Bytes a header value cannot hold never reach a handler.
        if let Ok(h) = HeaderValue::from_bytes(v) {
            sent.push(h.clone());
            req = req.append_header((AUTHORIZATION, h));
        }
    }
    let req = req.to_http_request();
    match bearer_token(&req) {
        Ok(tok) => {
            assert_eq!(sent.len(), 1, "accepted with {} headers", sent.len());
            let raw = sent[0].as_bytes();
            assert!(raw.len() <= 512);
            let text = std::str::from_utf8(raw).expect("accepted a non-UTF-8 header");
            assert!(text.is_ascii());
            let text = text.trim();
            assert!(
                text.len() > 7 && text[..7].eq_ignore_ascii_case("bearer "),
                "accepted without the Bearer scheme: {text:?}"
            );
            assert_eq!(tok, text[7..].trim());
            assert!(!tok.is_empty());
            assert!(!tok.contains(|c: char| c.is_ascii_whitespace() || c == ','));
            check_token(tok);
        }
        Err(e) => {
            let err = ServerError::from(e).to_openai();
            assert_eq!(err.status, 401, "a bad Authorization header is a 401");
            let text = err.to_json();
            if let Some(secret) = secret {
                assert!(!text.contains(secret), "the error repeats the secret");
            }
        }
    }
}

fn assert_well_formed(s: &str, prefix: &str) {
    let len = prefix.len() + ID_LEN + 1 + SECRET_LEN + CHECKSUM_LEN;
    assert_eq!(s.len(), len, "accepted a token of the wrong length: {s:?}");
    assert!(s.starts_with(prefix));
    let (body, sum) = s.split_at(len - CHECKSUM_LEN);
    assert_eq!(
        sum,
        checksum(body),
        "accepted a token whose checksum is wrong: {s:?}"
    );
    assert_eq!(&s[prefix.len() + ID_LEN..prefix.len() + ID_LEN + 1], "_");
    assert!(
        secret_of(s, prefix)
            .bytes()
            .all(|b| b.is_ascii_alphanumeric())
    );
}

fn secret_of<'s>(s: &'s str, prefix: &str) -> &'s str {
    let start = prefix.len() + ID_LEN + 1;
    &s[start..start + SECRET_LEN]
}

/// CRC-32 of `body` as six base62 digits, written from the format's description.
fn checksum(body: &str) -> String {
    let mut n = u64::from(crc32fast::hash(body.as_bytes()));
    let mut out = vec![b'0'; CHECKSUM_LEN];
    for slot in out.iter_mut().rev() {
        *slot = BASE62[(n % 62) as usize];
        n /= 62;
    }
    String::from_utf8(out).unwrap_or_default()
}

fn sha256(s: &str) -> [u8; 32] {
    Sha256::digest(s.as_bytes()).into()
}

/// keygate-core's `SecretHash` of a digest, through its public hex form.
fn keygate_core_hash(digest: &[u8; 32]) -> token::SecretHash {
    let hex: String = digest.iter().map(|b| format!("{b:02x}")).collect();
    token::SecretHash::from_hex(&hex).expect("64 hex digits")
}

/// A fresh valid token (grant or admin) and its secret part.
fn issue(admin_kind: bool) -> (String, String) {
    let good = if admin_kind {
        admin::issue(&AdminKeyId::generate())
            .expose_secret()
            .to_owned()
    } else {
        token::issue(&GrantId::generate())
            .expose_secret()
            .to_owned()
    };
    let prefix = if admin_kind {
        admin::PREFIX
    } else {
        token::PREFIX
    };
    let secret = secret_of(&good, prefix).to_owned();
    (good, secret)
}

/// Applies up to four edits chosen by `input` to `good`.
fn mutate(good: &str, input: &mut Input<'_>) -> Vec<u8> {
    let mut t = good.as_bytes().to_vec();
    let edits = 1 + input.below(4);
    for _ in 0..edits {
        let at = input.below(t.len() + 1);
        match input.byte() % 8 {
            // Replace one byte: often with a base62 character, so the shape survives.
            0 | 1 if at < t.len() => t[at] = BASE62[input.below(62)],
            2 if at < t.len() => t[at] = input.byte(),
            3 => t.insert(at, BASE62[input.below(62)]),
            4 if at < t.len() => {
                t.remove(at);
            }
            5 => t.truncate(at),
            6 if at < t.len() && t[at].is_ascii_alphabetic() => t[at] ^= 0x20,
            _ => {
                let other = input.below(t.len().max(1));
                if at < t.len() && other < t.len() {
                    t.swap(at, other);
                }
            }
        }
    }
    t
}
