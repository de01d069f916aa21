//! What a person, an operator or an app did that keygate refuses, in domain terms.
//! Services, the auth extractors and the routes return these (inside
//! [`ServerError`](crate::error::ServerError)); only `crate::error` decides the status,
//! `type`, `code`, `param` and retry hints each one gets on the wire.

use std::borrow::Cow;

use thiserror::Error;

#[derive(Debug, Error, PartialEq, Eq)]
pub enum ServiceError {
    /// Nothing of that kind with that id (or not the caller's).
    #[error("not found: {0:?}")]
    NotFound(Missing),
    /// A field (`param`) or the request as a whole (`None`) is not acceptable.
    #[error("invalid {param:?}: {message}")]
    Invalid {
        /// A field name; nested ones are dotted (`limits.budget.usd`).
        param: Option<Cow<'static, str>>,
        message: String,
    },
    /// A body, form or query string the extractors could not read.
    #[error("unreadable {0:?}")]
    Unreadable(Unreadable),
    /// A body larger than the API accepts (the JSON and form extractors' limits).
    #[error("body larger than {limit} bytes")]
    TooLarge { limit: u64 },
    /// The body stopped arriving before its deadline (`client_deadline`).
    #[error("request body timed out")]
    BodyTimeout,
    #[error("not signed in")]
    NotSignedIn,
    #[error("no fresh passkey check")]
    FreshPasskeyRequired,
    #[error("state-changing request from a foreign or missing Origin")]
    CsrfFailed,
    #[error("the last passkey cannot be removed")]
    LastPasskey,
    /// A WebAuthn ceremony did not succeed; the text is for the person, in plain words.
    #[error("ceremony failed: {0}")]
    CeremonyFailed(String),
    /// Passkeys cannot work with this configuration; the text says why.
    #[error("passkeys unavailable: {0}")]
    PasskeysUnavailable(String),
    #[error("credential id already registered")]
    CredentialAlreadyRegistered,
    /// An OpenAI admin key (`sk-admin-...`) offered to the vault.
    #[error("OpenAI admin key refused")]
    AdminKeyNotAllowed,
    /// OpenAI refused the pasted key at storing time; `detail` is OpenAI's error code.
    #[error("OpenAI refused the key ({detail})")]
    KeyRejected { detail: String },
    /// The redirect flow's code exchange failed.
    #[error("code invalid: {0:?}")]
    CodeInvalid(CodeProblem),
    /// The admin API is off (no `KEYGATE_ADMIN_KEY`).
    #[error("admin API disabled")]
    AdminDisabled,
    #[error("wrong admin key")]
    NotAdminKey,
    /// A valid admin key whose scope does not cover the request.
    #[error("admin key scope too small (needs {needed:?})")]
    InsufficientScope {
        needed: keygate_core::admin_scope::AdminScope,
    },
    /// A master key change that cannot be made (rotation, retirement).
    #[error("master key change refused: {0:?}")]
    MasterKey(MasterKeyRefusal),
    /// A per-address throttle or the live-ceremony cap.
    #[error("rate limited ({limit:?}), retry after {retry_after} s")]
    RateLimited { limit: Limit, retry_after: u64 },
}

/// Why a master key cannot be rotated or retired.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MasterKeyRefusal {
    /// The keyring comes from `KEYGATE_MASTER_KEYS` (or the caller): keygate has no file
    /// to write a new key to that a restart would read.
    FromEnvironment,
    /// The active key cannot be retired.
    Active(String),
    /// Sealed records still use this key.
    InUse { kid: String, records: usize },
}

/// What was not found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Missing {
    User,
    Grant,
    Passkey,
    Session,
    AdminKey,
    /// A connection (grant) of this app to reuse.
    Connection,
    /// An active connection to re-key.
    ActiveConnection,
    /// A master key id the keyring does not have.
    MasterKey,
    /// A plan named in the configuration (`GET /api/connect/plan?name=`).
    Plan,
    /// A page or asset, or a malformed id in a path.
    Page,
    /// No route at all for this method and path.
    Route {
        method: String,
        path: String,
    },
}

/// Which kind of request data could not be read, and serde's or actix's reason (it
/// names fields and positions, never values).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Unreadable {
    JsonContentType,
    Json(String),
    FormContentType,
    Form(String),
    Query(String),
}

/// Why a connect code was refused. Every attempt spends the code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CodeProblem {
    Malformed,
    Unknown,
    Expired,
    VerifierMismatch,
    RedirectMismatch,
    PersonGone,
}

/// Which throttle said no.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Limit {
    /// Wrong admin keys from one address.
    AdminKeys,
    /// Passkey ceremony starts, sign-ups or failed sign-ins from one address.
    Passkeys,
    /// Live anonymous ceremonies, all addresses together.
    Ceremonies,
}

impl ServiceError {
    pub fn invalid(param: impl Into<Cow<'static, str>>, message: impl Into<String>) -> Self {
        Self::Invalid {
            param: Some(param.into()),
            message: message.into(),
        }
    }
}
