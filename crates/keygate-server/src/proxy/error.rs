//! What the `/v1` proxy refuses, phase by phase, in domain terms. Only `crate::error`
//! turns these into OpenAI's wire codes (`missing_api_key`, `model_not_allowed`, ...).
//! The Bearer-header parser's errors ([`ProxyError::MissingApiKey`],
//! [`ProxyError::InvalidApiKey`]) also answer the admin API, which reads the same header.

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
    #[error("bad body: {0:?}")]
    Body(BodyProblem),
    #[error("model {0} not allowed")]
    ModelNotAllowed(String),
    // --- unseal and forward ----------------------------------------------------
    #[error("no OpenAI key stored")]
    KeyNotEnrolled,
    #[error("unsupported method")]
    UnsupportedMethod,
    #[error("path does not make an upstream URL")]
    UnroutablePath,
    /// OpenAI refused the person's stored key (its 401/403).
    #[error("OpenAI refused the owner's key")]
    OwnerKeyRejected,
}

/// What was wrong with a request body the proxy peeked into.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyProblem {
    ContentLengthNotANumber,
    Compressed,
    JsonNotAnObject,
    ModelNotAString,
    Unreadable,
    MultipartUnparseable,
    ModelRepeated,
    MultipartAmbiguous,
}
