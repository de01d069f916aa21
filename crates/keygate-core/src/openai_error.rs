//! Errors in OpenAI's wire shape, `{"error":{"message","type","param","code"}}`, so the
//! official SDKs raise the exception a developer expects (AuthenticationError for 401,
//! PermissionDeniedError for 403, RateLimitError for 429, ...).

use serde::Serialize;

/// An error as the app will see it. `status` and the retry hints travel beside the body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OpenAiError {
    pub status: u16,
    pub message: String,
    pub kind: &'static str,
    pub param: Option<String>,
    pub code: Option<&'static str>,
    /// Seconds, sent as `Retry-After`.
    pub retry_after: Option<u64>,
    /// Sent as `x-should-retry`, which the official SDKs obey over their own defaults.
    pub should_retry: Option<bool>,
    /// Milliseconds, sent as `retry-after-ms` (the official SDKs prefer it).
    pub retry_after_ms: Option<u64>,
}

#[derive(Serialize)]
struct Envelope<'a> {
    error: Body<'a>,
}

#[derive(Serialize)]
struct Body<'a> {
    message: &'a str,
    #[serde(rename = "type")]
    kind: &'a str,
    param: Option<&'a str>,
    code: Option<&'a str>,
}

const INVALID_REQUEST: &str = "invalid_request_error";

impl OpenAiError {
    fn new(
        status: u16,
        kind: &'static str,
        code: &'static str,
        message: impl Into<String>,
    ) -> Self {
        Self {
            status,
            message: message.into(),
            kind,
            param: None,
            code: Some(code),
            retry_after: None,
            should_retry: None,
            retry_after_ms: None,
        }
    }

    pub fn with_param(mut self, param: impl Into<String>) -> Self {
        self.param = Some(param.into());
        self
    }

    /// The JSON body.
    pub fn to_json(&self) -> String {
        let envelope = Envelope {
            error: Body {
                message: &self.message,
                kind: self.kind,
                param: self.param.as_deref(),
                code: self.code,
            },
        };
        // Serialising plain strings cannot fail; fall back to a fixed body regardless.
        serde_json::to_string(&envelope).unwrap_or_else(|_| {
            r#"{"error":{"message":"internal error","type":"server_error","param":null,"code":null}}"#
                .to_owned()
        })
    }

    pub fn missing_api_key() -> Self {
        Self::new(
            401,
            INVALID_REQUEST,
            "missing_api_key",
            "You didn't provide an API key. Send your keygate key in an Authorization header: \
             `Authorization: Bearer kg_...`.",
        )
    }

    /// `why` says what was wrong with the header or key, never the key itself.
    pub fn invalid_api_key(why: &str) -> Self {
        Self::new(
            401,
            INVALID_REQUEST,
            "invalid_api_key",
            format!("Incorrect API key provided: {why}."),
        )
    }

    pub fn expired_api_key() -> Self {
        Self::new(
            401,
            INVALID_REQUEST,
            "expired_api_key",
            "This API key has expired.",
        )
    }

    pub fn revoked_api_key() -> Self {
        Self::new(
            401,
            INVALID_REQUEST,
            "revoked_api_key",
            "This API key has been revoked by its owner.",
        )
    }

    pub fn model_not_allowed(model: &str) -> Self {
        Self::new(
            403,
            INVALID_REQUEST,
            "model_not_allowed",
            format!("This API key is not allowed to use the model `{model}`."),
        )
        .with_param("model")
    }

    /// A model-limited grant called an endpoint that runs a model without naming one
    /// (OpenAI would pick a default, or an assistant's model).
    pub fn model_required() -> Self {
        Self::new(
            403,
            INVALID_REQUEST,
            "model_not_allowed",
            "This API key may only use certain models, so this request must name one of them \
             in `model`; without it OpenAI would choose a model itself.",
        )
        .with_param("model")
    }

    pub fn rate_limit_exceeded(message: impl Into<String>, retry_after_secs: u64) -> Self {
        let mut e = Self::new(429, "requests", "rate_limit_exceeded", message);
        e.retry_after = Some(retry_after_secs.max(1));
        e
    }

    /// A grant's own rate limit on `unit` (`"requests"` or `"tokens"`, OpenAI's error
    /// `type` for each): `Retry-After` in whole seconds (rounded up) and `retry-after-ms`.
    pub fn rate_limit_ms(
        unit: &'static str,
        message: impl Into<String>,
        retry_after_ms: u64,
    ) -> Self {
        let mut e = Self::new(429, unit, "rate_limit_exceeded", message);
        e.retry_after = Some(retry_after_ms.div_ceil(1000).max(1));
        e.retry_after_ms = Some(retry_after_ms);
        e
    }

    /// A request that can never fit a rate limit (more tokens than the per-minute
    /// limit): no `Retry-After`, and `x-should-retry: false`.
    pub fn rate_limit_never(message: impl Into<String>) -> Self {
        let mut e = Self::new(429, "tokens", "rate_limit_exceeded", message);
        e.should_retry = Some(false);
        e
    }

    pub fn concurrency_limit_exceeded(limit: u32) -> Self {
        let mut e = Self::new(
            429,
            "requests",
            "concurrency_limit_exceeded",
            format!(
                "This API key allows {limit} concurrent request(s), and that many are in \
                 progress. Retry when one has finished."
            ),
        );
        e.retry_after = Some(1);
        e
    }

    pub fn model_not_priced(model: Option<&str>) -> Self {
        let message = match model {
            Some(m) => format!(
                "This API key has a budget in dollars, and keygate knows no price for the \
                 model '{m}', so it cannot keep the budget. Use a model with a known price \
                 (or ask the operator to add one under [prices])."
            ),
            None => "This API key has a budget in dollars; name the `model` of the request so \
                     keygate can price it."
                .to_owned(),
        };
        Self::new(403, INVALID_REQUEST, "model_not_priced", message).with_param("model")
    }

    /// A USD budget and a `service_tier` whose prices keygate does not know.
    pub fn tier_not_priced(tier: &str) -> Self {
        let message = format!(
            "This API key has a budget in dollars, and keygate knows standard and flex \
             prices only, not those of the service tier '{tier}', so it cannot keep the \
             budget. Leave `service_tier` out or send `auto`, `default` or `flex`."
        );
        Self::new(403, INVALID_REQUEST, "model_not_priced", message).with_param("service_tier")
    }

    pub fn insufficient_quota(message: impl Into<String>) -> Self {
        let mut e = Self::new(429, "insufficient_quota", "insufficient_quota", message);
        e.should_retry = Some(false);
        e
    }

    pub fn request_too_large(limit_bytes: u64) -> Self {
        let mut e = Self::new(
            413,
            INVALID_REQUEST,
            "request_too_large",
            format!("The request body is larger than this server's limit of {limit_bytes} bytes."),
        );
        e.should_retry = Some(false);
        e
    }

    /// A request body that stopped arriving (a slow or stuck client): 408, the
    /// connection is closed.
    pub fn request_timeout() -> Self {
        Self::new(
            408,
            INVALID_REQUEST,
            "request_timeout",
            "The request body did not arrive in time; send it again without pausing.",
        )
    }

    pub fn key_not_enrolled() -> Self {
        let mut e = Self::new(
            409,
            INVALID_REQUEST,
            "key_not_enrolled",
            "The owner of this API key has not stored an OpenAI key in keygate yet.",
        );
        e.should_retry = Some(false);
        e
    }

    /// The grant's scopes do not cover this endpoint (or it is never forwarded, like
    /// `/v1/organization/*`). `param` is the request path.
    pub fn endpoint_not_allowed(path: &str) -> Self {
        Self::new(
            403,
            INVALID_REQUEST,
            "endpoint_not_allowed",
            format!("This API key is not allowed to call `{path}`: its scopes do not cover this endpoint."),
        )
        .with_param(path)
    }

    /// A `/v1` path that is not in canonical form (`//`, `%2F`, a percent-encoded
    /// unreserved character, `;` parameters, `.`/`..` segments, a backslash). `why`
    /// names the problem, never echoes the path.
    pub fn invalid_path(why: &str) -> Self {
        let mut e = Self::new(
            400,
            INVALID_REQUEST,
            "invalid_path",
            format!("The request path is not in canonical form: {why}."),
        );
        e.should_retry = Some(false);
        e
    }

    /// An OpenAI admin key (`sk-admin-...`) offered to the vault: it can manage the
    /// whole organization, so keygate never stores one.
    pub fn admin_key_not_allowed() -> Self {
        Self::new(
            400,
            INVALID_REQUEST,
            "admin_key_not_allowed",
            "This is an OpenAI admin key (sk-admin-...). keygate only stores project or user API keys; \
             create one at platform.openai.com -> API keys.",
        )
        .with_param("api_key")
    }

    /// A plan requires the caller's own OpenAI key (`X-OpenAI-Key`) and none was sent.
    pub fn own_key_required() -> Self {
        let mut e = Self::new(
            400,
            INVALID_REQUEST,
            "own_key_required",
            "This API key's plan requires your own OpenAI key: send it in the X-OpenAI-Key \
             header.",
        )
        .with_param("x-openai-key");
        e.should_retry = Some(false);
        e
    }

    /// A plan forbids the caller's own OpenAI key (`allow_own_key = false`).
    pub fn own_key_not_allowed() -> Self {
        let mut e = Self::new(
            403,
            INVALID_REQUEST,
            "own_key_not_allowed",
            "This API key's plan does not accept your own OpenAI key: leave out the \
             X-OpenAI-Key header.",
        )
        .with_param("x-openai-key");
        e.should_retry = Some(false);
        e
    }

    /// An `X-OpenAI-Key` header keygate cannot use; `why` names the problem, never the
    /// value.
    pub fn invalid_own_key(why: &str) -> Self {
        Self::new(
            400,
            INVALID_REQUEST,
            "invalid_own_key",
            format!("The X-OpenAI-Key header is not usable: {why}."),
        )
        .with_param("x-openai-key")
    }

    /// OpenAI refused the person's stored key (its 401/403). The app cannot fix this by
    /// retrying: the key owner must replace the key in keygate.
    pub fn owner_key_rejected() -> Self {
        let mut e = Self::new(
            424,
            INVALID_REQUEST,
            "owner_key_rejected",
            "OpenAI rejected the key stored by the owner of this API key. The key owner must \
             update their OpenAI key in keygate.",
        );
        e.should_retry = Some(false);
        e
    }

    /// OpenAI refused this call with the person's stored key, but not the key itself
    /// (a restricted key lacking a permission, a model or region it may not use): the
    /// same 424 `owner_key_rejected`, saying the key still works and what it lacks.
    /// `missing` is OpenAI's list of missing permissions (`api.responses.write`).
    pub fn owner_key_forbidden(missing: Option<&str>) -> Self {
        let lacks = lacks(missing);
        let mut e = Self::new(
            424,
            INVALID_REQUEST,
            "owner_key_rejected",
            format!(
                "OpenAI refused this call (424: a dependency failed): the OpenAI key stored \
                 by the owner of this API key {lacks}. The key still works for other calls; \
                 the key owner must give it this permission at platform.openai.com or store \
                 a key that has it."
            ),
        );
        e.should_retry = Some(false);
        e
    }

    /// OpenAI refused the operator's key, which this grant used because its person has
    /// stored none (a plan with `use_operator_key`): the same 424 `owner_key_rejected`,
    /// but neither the app nor the person can fix it; the operator must.
    pub fn operator_key_rejected() -> Self {
        let mut e = Self::new(
            424,
            INVALID_REQUEST,
            "owner_key_rejected",
            "OpenAI rejected the OpenAI key this keygate's operator provides for people who \
             have not stored their own. The operator must replace it; the key owner may \
             also store their own OpenAI key in keygate.",
        );
        e.should_retry = Some(false);
        e
    }

    /// OpenAI refused this call with the operator's key, but not the key itself (a
    /// permission, model or region it lacks; `missing` as in [`Self::owner_key_forbidden`]).
    pub fn operator_key_forbidden(missing: Option<&str>) -> Self {
        let lacks = lacks(missing);
        let mut e = Self::new(
            424,
            INVALID_REQUEST,
            "owner_key_rejected",
            format!(
                "OpenAI refused this call (424: a dependency failed): the OpenAI key this \
                 keygate's operator provides for people who have not stored their own \
                 {lacks}. The operator must give it this permission, or the key owner may \
                 store their own OpenAI key in keygate."
            ),
        );
        e.should_retry = Some(false);
        e
    }

    /// A WebAuthn credential id that is already registered (to anyone).
    pub fn credential_already_registered() -> Self {
        Self::new(
            409,
            INVALID_REQUEST,
            "credential_already_registered",
            "This passkey is already registered. Sign in with it instead, or create a new passkey.",
        )
    }

    /// An anonymous throttle (per client address): `rate_limit_exceeded` with a fixed
    /// message and `Retry-After`.
    pub fn too_many_requests(retry_after_secs: u64) -> Self {
        let secs = retry_after_secs.max(1);
        Self::rate_limit_exceeded(
            format!("Too many requests from your address. Try again in {secs} seconds."),
            secs,
        )
    }

    pub fn upstream_timeout(message: impl Into<String>) -> Self {
        Self::new(504, "server_error", "upstream_timeout", message)
    }

    pub fn upstream_unavailable(message: impl Into<String>) -> Self {
        Self::new(502, "server_error", "upstream_unavailable", message)
    }

    /// The vault API's own errors (pages read `code` and react to it).
    pub fn not_signed_in() -> Self {
        Self::new(
            401,
            INVALID_REQUEST,
            "not_signed_in",
            "You are not signed in, or your session has expired. Sign in again.",
        )
    }

    pub fn fresh_passkey_required() -> Self {
        Self::new(
            403,
            INVALID_REQUEST,
            "fresh_passkey_required",
            "Confirm with your passkey to continue: this action needs a passkey check from the last 5 minutes.",
        )
    }

    pub fn csrf_failed() -> Self {
        Self::new(
            403,
            INVALID_REQUEST,
            "csrf_failed",
            "This request did not come from keygate's own pages (its Origin header is missing or foreign).",
        )
    }

    pub fn ceremony_failed(message: impl Into<String>) -> Self {
        Self::new(400, INVALID_REQUEST, "ceremony_failed", message)
    }

    pub fn passkeys_unavailable(message: impl Into<String>) -> Self {
        Self::new(503, "server_error", "passkeys_unavailable", message)
    }

    pub fn last_passkey() -> Self {
        Self::new(
            409,
            INVALID_REQUEST,
            "last_passkey",
            "This is your only passkey. Add another one before removing it.",
        )
    }

    pub fn key_rejected(message: impl Into<String>) -> Self {
        Self::new(400, INVALID_REQUEST, "key_rejected", message).with_param("api_key")
    }

    pub fn origin_not_allowed(origin: &str) -> Self {
        Self::new(
            403,
            INVALID_REQUEST,
            "origin_not_allowed",
            format!("This API key belongs to another app; it cannot be used from {origin}."),
        )
    }

    /// The redirect flow's token endpoint: a bad, used or expired code, or a wrong verifier.
    pub fn invalid_grant(message: impl Into<String>) -> Self {
        Self::new(400, INVALID_REQUEST, "invalid_grant", message)
    }

    pub fn invalid_request(message: impl Into<String>) -> Self {
        Self::new(400, INVALID_REQUEST, "invalid_request", message)
    }

    /// An admin key whose scope does not cover this request (`needed`: the scope that
    /// would).
    pub fn insufficient_scope(needed: &str) -> Self {
        Self::new(
            403,
            INVALID_REQUEST,
            "insufficient_scope",
            format!(
                "This admin key's scope does not allow this request; it needs scope `{needed}`."
            ),
        )
    }

    /// A rotation asked of a keygate whose keyring comes from `KEYGATE_MASTER_KEYS`.
    pub fn keyring_from_environment() -> Self {
        Self::new(
            409,
            INVALID_REQUEST,
            "keyring_from_environment",
            "The master keyring comes from KEYGATE_MASTER_KEYS, which keygate cannot change: \
             put a new kid:key first in it and restart keygate (the re-seal runs at start).",
        )
    }

    pub fn master_key_active(kid: &str) -> Self {
        Self::new(
            409,
            INVALID_REQUEST,
            "master_key_active",
            format!(
                "{kid} is the active master key and cannot be retired; rotate first, then \
                 retire it once no record uses it."
            ),
        )
    }

    pub fn master_key_in_use(kid: &str, records: usize) -> Self {
        let what = if records == 1 {
            "1 sealed record still uses".to_owned()
        } else {
            format!("{records} sealed records still use")
        };
        Self::new(
            409,
            INVALID_REQUEST,
            "master_key_in_use",
            format!(
                "{what} master key {kid}; wait for the re-seal to finish \
                 (GET /admin/master-keys shows what remains), then retire it."
            ),
        )
    }

    /// A sled-only operation (a backup through keygate, a restore) asked of a keygate
    /// whose store is PostgreSQL: 501, not retried (it never will be available there).
    pub fn unsupported_on_this_store(what: &str) -> Self {
        let mut e = Self::new(
            501,
            "server_error",
            "unsupported_on_this_store",
            format!("{what}: not available on this keygate's store."),
        );
        e.should_retry = Some(false);
        e
    }

    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(404, INVALID_REQUEST, "not_found", message)
    }

    pub fn internal(message: impl Into<String>) -> Self {
        Self::new(500, "server_error", "internal_error", message)
    }

    pub fn service_unavailable(message: impl Into<String>) -> Self {
        Self::new(503, "server_error", "service_unavailable", message)
    }
}

/// What a key that OpenAI refused one call lacks, for the 424 messages.
fn lacks(missing: Option<&str>) -> String {
    match missing {
        Some(m) => format!("lacks a permission this endpoint needs ({m})"),
        None => "may not make this call (a permission, model or region it lacks)".to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn body_has_openai_shape() {
        let v: serde_json::Value =
            serde_json::from_str(&OpenAiError::model_not_allowed("gpt-4o").to_json()).unwrap();
        assert_eq!(v["error"]["code"], "model_not_allowed");
        assert_eq!(v["error"]["type"], "invalid_request_error");
        assert_eq!(v["error"]["param"], "model");
        assert!(v["error"]["message"].as_str().unwrap().contains("gpt-4o"));
        let v: serde_json::Value =
            serde_json::from_str(&OpenAiError::missing_api_key().to_json()).unwrap();
        assert!(v["error"]["param"].is_null());
    }

    #[test]
    fn statuses_and_codes() {
        let table = [
            (OpenAiError::missing_api_key(), 401, "missing_api_key"),
            (OpenAiError::invalid_api_key("x"), 401, "invalid_api_key"),
            (OpenAiError::expired_api_key(), 401, "expired_api_key"),
            (OpenAiError::revoked_api_key(), 401, "revoked_api_key"),
            (
                OpenAiError::model_not_allowed("m"),
                403,
                "model_not_allowed",
            ),
            (
                OpenAiError::rate_limit_exceeded("x", 0),
                429,
                "rate_limit_exceeded",
            ),
            (
                OpenAiError::insufficient_quota("x"),
                429,
                "insufficient_quota",
            ),
            (OpenAiError::request_too_large(1), 413, "request_too_large"),
            (OpenAiError::key_not_enrolled(), 409, "key_not_enrolled"),
            (OpenAiError::upstream_timeout("x"), 504, "upstream_timeout"),
            (
                OpenAiError::upstream_unavailable("x"),
                502,
                "upstream_unavailable",
            ),
            (
                OpenAiError::endpoint_not_allowed("/v1/files"),
                403,
                "endpoint_not_allowed",
            ),
            (OpenAiError::invalid_path("x"), 400, "invalid_path"),
            (
                OpenAiError::admin_key_not_allowed(),
                400,
                "admin_key_not_allowed",
            ),
            (OpenAiError::owner_key_rejected(), 424, "owner_key_rejected"),
            (
                OpenAiError::owner_key_forbidden(None),
                424,
                "owner_key_rejected",
            ),
            (OpenAiError::model_required(), 403, "model_not_allowed"),
            (
                OpenAiError::credential_already_registered(),
                409,
                "credential_already_registered",
            ),
            (
                OpenAiError::too_many_requests(7),
                429,
                "rate_limit_exceeded",
            ),
            (
                OpenAiError::unsupported_on_this_store("backup"),
                501,
                "unsupported_on_this_store",
            ),
        ];
        for (e, status, code) in table {
            assert_eq!((e.status, e.code), (status, Some(code)));
        }
        assert_eq!(
            OpenAiError::rate_limit_exceeded("x", 0).retry_after,
            Some(1)
        );
        assert_eq!(
            OpenAiError::insufficient_quota("x").should_retry,
            Some(false)
        );
    }

    #[test]
    fn new_codes_carry_their_params_and_hints() {
        let e = OpenAiError::endpoint_not_allowed("/v1/files");
        assert_eq!(e.param.as_deref(), Some("/v1/files"));
        assert!(e.message.contains("/v1/files"));
        assert_eq!(
            OpenAiError::admin_key_not_allowed().param.as_deref(),
            Some("api_key")
        );
        let e = OpenAiError::owner_key_rejected();
        assert_eq!(e.should_retry, Some(false));
        assert!(e.message.contains("update their OpenAI key in keygate"));
        let e = OpenAiError::too_many_requests(0);
        assert_eq!(e.retry_after, Some(1));
        assert_eq!(OpenAiError::too_many_requests(30).retry_after, Some(30));
        assert!(OpenAiError::invalid_path("a doubled slash").param.is_none());
    }
}
