//! What the `/v1` proxy refuses, phase by phase, in domain terms. Only `crate::error`
//! turns these into OpenAI's wire codes (`missing_api_key`, `model_not_allowed`, ...).
//! The Bearer-header parser's errors ([`ProxyError::MissingApiKey`],
//! [`ProxyError::InvalidApiKey`]) also answer the admin API, which reads the same header.

use keygate_core::content_type::ContentTypeError;
use thiserror::Error;

#[derive(Debug, Error, PartialEq, Eq)]
pub enum ProxyError {
    // --- authenticate ----------------------------------------------------------
    #[error("no API key")]
    MissingApiKey,
    /// What was wrong with the header or key, never the key itself.
    #[error("invalid API key: {0}")]
    InvalidApiKey(String),
    #[error("expired API key")]
    ExpiredApiKey,
    #[error("revoked API key")]
    RevokedApiKey,
    /// A browser request from another origin than the grant's.
    #[error("origin {0} not allowed")]
    OriginNotAllowed(String),
    // --- endpoint --------------------------------------------------------------
    /// The path is not canonical; the text names the problem, never echoes the path.
    #[error("non-canonical path: {0}")]
    InvalidPath(String),
    /// The grant's scopes do not reach this (canonical) path.
    #[error("endpoint {0} not allowed")]
    EndpointNotAllowed(String),
    // --- body and models -------------------------------------------------------
    #[error("body larger than {limit} bytes")]
    TooLarge { limit: u64 },
    /// The body stopped arriving before its deadline (`client_deadline`).
    #[error("request body timed out")]
    BodyTimeout,
    #[error("bad body: {0:?}")]
    Body(BodyProblem),
    #[error("model {0} not allowed")]
    ModelNotAllowed(String),
    /// A model-limited grant called an endpoint that runs a model without naming one.
    #[error("no model named, but the grant is limited to some models")]
    ModelRequired,
    // --- limits ---------------------------------------------------------------
    /// A per-minute limit is spent; the request fits after `retry_after_ms`.
    #[error("{what:?} per minute limit {limit} reached")]
    RateLimited {
        what: RateKind,
        limit: u64,
        retry_after_ms: u64,
    },
    /// The request alone needs more tokens than the per-minute limit: it never fits.
    #[error("request of {requested} tokens over the {limit} tokens per minute limit")]
    TooManyTokens { limit: u64, requested: u64 },
    #[error("{0} concurrent requests in flight")]
    ConcurrencyLimit(u32),
    /// The reservation does not fit what is left of a budget: `what` names it (`$5.00`,
    /// `1000 tokens`), `period` is `day`/`week`/`month`, `resets_at` RFC 3339.
    #[error("budget of {what} per {period} spent")]
    BudgetSpent {
        what: String,
        period: &'static str,
        model: Option<String>,
        resets_at: String,
    },
    /// A USD budget and a model without a known price (or no model named).
    #[error("model {0:?} has no price")]
    ModelNotPriced(Option<String>),
    /// A USD budget and a `service_tier` priced differently from the table
    /// (`priority`, `scale`).
    #[error("service tier {0:?} has no price")]
    TierNotPriced(String),
    // --- the caller's own OpenAI key (`X-OpenAI-Key`) ----------------------------
    /// The grant's plan requires the caller's own key and none was sent.
    #[error("own OpenAI key required")]
    OwnKeyRequired,
    /// The grant's plan forbids the caller's own key.
    #[error("own OpenAI key not allowed")]
    OwnKeyNotAllowed,
    /// An `X-OpenAI-Key` header that cannot be used; the text names the problem, never
    /// the value.
    #[error("unusable X-OpenAI-Key header: {0}")]
    OwnKeyInvalid(&'static str),
    /// An OpenAI admin key (`sk-admin-...`) sent as the caller's own key.
    #[error("own OpenAI key is an admin key")]
    OwnKeyAdmin,
    // --- unseal and forward ----------------------------------------------------
    #[error("no OpenAI key stored")]
    KeyNotEnrolled,
    #[error("unsupported method")]
    UnsupportedMethod,
    /// OpenAI does not accept the person's stored key at all (`invalid_api_key`,
    /// `account_deactivated`); the record is marked rejected.
    #[error("OpenAI refused the owner's key")]
    OwnerKeyRejected,
    /// OpenAI refused this call with the person's key (another 401/403: a restricted
    /// key lacking a permission, a region); the key is not marked. `missing_scopes` is
    /// OpenAI's list of missing permissions, when it gave one.
    #[error("OpenAI refused this call with the owner's key")]
    OwnerKeyForbidden { missing_scopes: Option<String> },
    /// OpenAI does not accept the operator's key (`invalid_api_key`,
    /// `account_deactivated`), used because the person stored none; nothing is marked.
    #[error("OpenAI refused the operator's key")]
    OperatorKeyRejected,
    /// OpenAI refused this call with the operator's key (another 401/403).
    #[error("OpenAI refused this call with the operator's key")]
    OperatorKeyForbidden { missing_scopes: Option<String> },
}

/// Which per-minute limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RateKind {
    Requests,
    Tokens,
}

/// What was wrong with a request body the proxy peeked into.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyProblem {
    /// A `Content-Type` that parsers could read differently (sent twice, a parameter
    /// twice, an odd boundary...).
    ContentType(ContentTypeError),
    ContentLengthNotANumber,
    Compressed,
    JsonNotAnObject,
    /// A JSON body that is not UTF-8.
    NotUtf8,
    ModelNotAString,
    /// A `model` longer than any model id (it would be logged and counted).
    ModelTooLong,
    Unreadable,
    MultipartUnparseable,
    ModelRepeated,
    MultipartAmbiguous,
    /// A JSON key that policy reads sent twice: parsers disagree on which counts.
    KeyRepeated,
}
