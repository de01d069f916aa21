//! What an upstream answer says about the person's OpenAI key.
//!
//! Only the person's key authenticates keygate to OpenAI, so an upstream 401 or 403 is
//! about that key, never about the app's keygate key. But not every 401 means the key
//! is dead: OpenAI also answers 401 to a *restricted* project key that lacks a
//! permission ("You have insufficient permissions for this operation. Missing scopes:
//! api.responses.write"), with `code: null`. Such a key works for its other endpoints.
//!
//! So [`verdict`] reads the error's `code` too: only `invalid_api_key` (wrong, revoked
//! or deleted key) and `account_deactivated` (every call with the key fails until the
//! owner acts at OpenAI) make the key [`Verdict::Refused`] — the vault record is marked
//! rejected and the dashboard asks for a new key (a later 2xx clears the mark). Every
//! other 401 or 403 is [`Verdict::Forbidden`]: this call is not allowed with this key,
//! nothing is marked.

/// What an upstream answer says about the key that made the call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// OpenAI does not accept the key at all: mark it rejected.
    Refused,
    /// The key may not make this call (a missing permission, a model or region it
    /// cannot use): the key still works for others; nothing is marked.
    Forbidden,
    /// 2xx: the key works.
    Accepted,
    /// Anything else says nothing about the key.
    Silent,
}

/// The upstream error codes that mean the key itself is not accepted.
pub const KEY_REFUSED_CODES: [&str; 2] = ["invalid_api_key", "account_deactivated"];

/// `status` and, for a 401/403, the `error.code` of OpenAI's body (`None` when absent,
/// `null` or unreadable).
pub fn verdict(status: u16, code: Option<&str>) -> Verdict {
    match status {
        401 | 403 if code.is_some_and(|c| KEY_REFUSED_CODES.contains(&c)) => Verdict::Refused,
        401 | 403 => Verdict::Forbidden,
        200..=299 => Verdict::Accepted,
        _ => Verdict::Silent,
    }
}

/// An upstream error body with the person's OpenAI account ids taken out. OpenAI's
/// error messages can name the organization and project the key belongs to ("Rate
/// limit reached for gpt-4o in organization org-… on tokens per min"); the app has no
/// business knowing them. Each `org-…`, `proj_…` and `user-…` id (the prefix followed
/// by at least 6 letters or digits) becomes the prefix and `…`. `None` when there was
/// nothing to take out, so the body can pass unchanged.
pub fn scrub_account_ids(body: &[u8]) -> Option<Vec<u8>> {
    const PREFIXES: [&[u8]; 3] = [b"org-", b"proj_", b"user-"];
    const MIN_ID: usize = 6;
    let mut out = Vec::with_capacity(body.len());
    let mut changed = false;
    let mut i = 0;
    while i < body.len() {
        let at_word_start = i == 0 || !body[i - 1].is_ascii_alphanumeric();
        let hit = PREFIXES.iter().find_map(|p| {
            if !at_word_start || !body[i..].starts_with(p) {
                return None;
            }
            let id = body[i + p.len()..]
                .iter()
                .take_while(|b| b.is_ascii_alphanumeric())
                .count();
            (id >= MIN_ID).then_some((p.len(), id))
        });
        match hit {
            Some((prefix, id)) => {
                out.extend_from_slice(&body[i..i + prefix]);
                out.extend_from_slice("…".as_bytes());
                i += prefix + id;
                changed = true;
            }
            None => {
                out.push(body[i]);
                i += 1;
            }
        }
    }
    changed.then_some(out)
}

/// The error `code` and the missing permissions (`Missing scopes: a, b`) of an OpenAI
/// error body. The permissions are kept only when they look like OpenAI's scope names
/// (`api.responses.write`): the rest of OpenAI's message may name the person's
/// organization or project and is never passed on.
pub fn read_error(body: &[u8]) -> (Option<String>, Option<String>) {
    let Ok(v) = serde_json::from_slice::<serde_json::Value>(body) else {
        return (None, None);
    };
    let code = v["error"]["code"].as_str().map(str::to_owned);
    let missing = v["error"]["message"]
        .as_str()
        .and_then(|m| m.split_once("Missing scopes:"))
        .map(|(_, rest)| {
            rest.split([',', ' '])
                .map(|s| s.trim_end_matches('.'))
                .take_while(|s| s.is_empty() || is_scope_name(s))
                .filter(|s| !s.is_empty())
                .take(8)
                .collect::<Vec<_>>()
                .join(", ")
        })
        .filter(|s| !s.is_empty());
    (code, missing)
}

fn is_scope_name(s: &str) -> bool {
    s.len() <= 64
        && s.contains('.')
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'.' || b == b'_')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_and_codes() {
        let table: &[(u16, Option<&str>, Verdict)] = &[
            (401, Some("invalid_api_key"), Verdict::Refused),
            (401, Some("account_deactivated"), Verdict::Refused),
            (403, Some("invalid_api_key"), Verdict::Refused),
            // A restricted key lacking a permission: code null.
            (401, None, Verdict::Forbidden),
            (401, Some("mismatched_project"), Verdict::Forbidden),
            (403, None, Verdict::Forbidden),
            (
                403,
                Some("unsupported_country_region_territory"),
                Verdict::Forbidden,
            ),
            (200, None, Verdict::Accepted),
            (204, None, Verdict::Accepted),
        ];
        for (status, code, want) in table {
            assert_eq!(verdict(*status, *code), *want, "{status} {code:?}");
        }
        for s in [400, 404, 409, 413, 429, 500, 502, 503] {
            assert_eq!(verdict(s, Some("invalid_api_key")), Verdict::Silent, "{s}");
        }
    }

    #[test]
    fn error_bodies() {
        let scopes = br#"{"error":{"message":"You have insufficient permissions for this operation. Missing scopes: api.responses.write. Check that you have the correct role in your organization (Reader, Writer, Owner) and project (Member, Owner), and if you're using a restricted API key, that it has the necessary scopes.","type":"invalid_request_error","param":null,"code":null}}"#;
        assert_eq!(
            read_error(scopes),
            (None, Some("api.responses.write".into()))
        );
        let two =
            br#"{"error":{"message":"Missing scopes: model.request, api.model.read","code":null}}"#;
        assert_eq!(
            read_error(two).1.as_deref(),
            Some("model.request, api.model.read")
        );
        let invalid = br#"{"error":{"message":"Incorrect API key provided: sk-a***z.","code":"invalid_api_key"}}"#;
        assert_eq!(read_error(invalid), (Some("invalid_api_key".into()), None));
        let region =
            br#"{"error":{"message":"Project `proj_abc` does not have access","code":null}}"#;
        assert_eq!(read_error(region), (None, None));
        assert_eq!(read_error(b"not json"), (None, None));
        let sneaky = br#"{"error":{"message":"Missing scopes: <script>, proj_abc","code":null}}"#;
        assert_eq!(read_error(sneaky), (None, None));
    }
    #[test]
    fn account_ids_are_taken_out_of_error_bodies() {
        let body = br#"{"error":{"message":"Rate limit reached for gpt-4o in organization org-AbC123xyz on tokens per min (TPM): Limit 30000. Project proj_9a8b7c6d5e.","type":"tokens","param":null,"code":"rate_limit_exceeded"}}"#;
        let out = String::from_utf8(scrub_account_ids(body).unwrap()).unwrap();
        assert!(
            !out.contains("AbC123xyz") && !out.contains("9a8b7c6d5e"),
            "{out}"
        );
        assert!(out.contains("organization org-… on tokens"), "{out}");
        assert!(out.contains("Project proj_…."), "{out}");
        let v: serde_json::Value = serde_json::from_str(&out).unwrap();
        assert_eq!(v["error"]["code"], "rate_limit_exceeded");
        // Nothing to take out: unchanged; short or embedded look-alikes stay.
        assert_eq!(
            scrub_account_ids(br#"{"error":{"message":"slow down"}}"#),
            None
        );
        assert_eq!(scrub_account_ids(b"an org-abc and cyborg-abcdefgh"), None);
    }
}
