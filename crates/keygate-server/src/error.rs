//! The server's request errors, mapped to HTTP in exactly one place. [`ServerError`]
//! nests the domain errors — [`ServiceError`] (services, auth, routes), [`ProxyError`]
//! (the proxy's phases), [`UpstreamError`] — beside store, vault and internal failures;
//! [`ServerError::to_openai`] is the only code that picks a status, `type`, `code`,
//! `param` and retry hints (from the `keygate_core::openai_error` catalogue), and the
//! [`ResponseError`] impl below is the only one. Every body is OpenAI-shaped; internal
//! details go to the log under a code, never to the client, and never include secret
//! material.

use actix_web::http::StatusCode;
use actix_web::http::header::{HeaderMap, HeaderValue, RETRY_AFTER};
use actix_web::{HttpResponse, ResponseError};
use keygate_core::CoreError;
use keygate_core::openai_error::OpenAiError;
use keygate_store::StoreError;
use thiserror::Error;

use crate::proxy::error::{BodyProblem, ProxyError, RateKind};
use crate::services::error::{
    CodeProblem, Limit, MasterKeyRefusal, Missing, ServiceError, Unreadable,
};

#[derive(Debug, Error)]
pub enum ServerError {
    /// Refused by a service, an auth extractor or a route (the caller's doing).
    #[error(transparent)]
    Service(#[from] ServiceError),
    /// Refused by a phase of the `/v1` proxy (the app's doing).
    #[error(transparent)]
    Proxy(#[from] ProxyError),
    #[error("SV0001 upstream: {0}")]
    Upstream(#[from] UpstreamError),
    #[error("SV0002 store: {0}")]
    Store(#[from] StoreError),
    #[error("SV0003 vault record could not be opened: {0}")]
    Vault(CoreError),
    #[error("SV0004 {0}")]
    Internal(String),
}

/// What went wrong talking to the upstream; each has its own message and status.
#[derive(Debug, Error)]
pub enum UpstreamError {
    #[error("timed out connecting to the upstream after {0:?}")]
    ConnectTimeout(std::time::Duration),
    #[error("could not connect to the upstream")]
    Connect,
    #[error("the upstream did not answer within {0:?}")]
    FirstByteTimeout(std::time::Duration),
    #[error("the request to the upstream failed")]
    Request,
    /// The answer had started streaming when the connection broke.
    #[error("the upstream connection broke mid-response")]
    BrokeMidStream,
    /// The answer had started streaming, then nothing came for this long.
    #[error("the upstream went idle mid-response for {0:?}")]
    IdleMidStream(std::time::Duration),
}

impl ServerError {
    /// The error as the app sees it: the one place a status and `code` are chosen.
    pub fn to_openai(&self) -> OpenAiError {
        match self {
            ServerError::Service(e) => service(e),
            ServerError::Proxy(e) => proxy(e),
            ServerError::Upstream(u) => match u {
                UpstreamError::ConnectTimeout(_) => {
                    OpenAiError::upstream_timeout(format!("keygate {u}. Try again later."))
                }
                UpstreamError::FirstByteTimeout(_) => {
                    OpenAiError::upstream_timeout(format!("keygate: {u}. Try again later."))
                }
                UpstreamError::Connect | UpstreamError::Request => {
                    OpenAiError::upstream_unavailable(format!("keygate {u}. Try again later."))
                }
                UpstreamError::BrokeMidStream => OpenAiError::upstream_unavailable(
                    "The upstream connection broke before the response was complete.",
                ),
                UpstreamError::IdleMidStream(idle) => OpenAiError::upstream_timeout(format!(
                    "The upstream sent nothing for {idle:?} mid-response."
                )),
            },
            ServerError::Store(StoreError::Unsupported(what)) => {
                OpenAiError::unsupported_on_this_store(what)
            }
            ServerError::Store(_) | ServerError::Internal(_) => {
                OpenAiError::internal("keygate had an internal error; it has been logged.")
            }
            ServerError::Vault(_) => OpenAiError::internal(
                "keygate could not open the stored OpenAI key for this API key; the operator \
                 has been told in the log.",
            ),
        }
    }

    /// Whether the caller caused it (not logged as a failure of keygate).
    fn is_client(&self) -> bool {
        matches!(self, ServerError::Service(_) | ServerError::Proxy(_))
    }
}

fn service(e: &ServiceError) -> OpenAiError {
    use ServiceError as S;
    match e {
        S::NotFound(what) => OpenAiError::not_found(match what {
            Missing::User => "No such user.".to_owned(),
            Missing::Grant => "No such grant.".to_owned(),
            Missing::Passkey => "No such passkey.".to_owned(),
            Missing::Session => "No such session.".to_owned(),
            Missing::AdminKey => "No such admin key.".to_owned(),
            Missing::Connection => "No such connection for this app.".to_owned(),
            Missing::ActiveConnection => "No such active connection.".to_owned(),
            Missing::Plan => "No such plan.".to_owned(),
            Missing::MasterKey => "No such master key in the keyring.".to_owned(),
            Missing::Page => "Not found.".to_owned(),
            Missing::Route { method, path } => format!("No route for {method} {path}."),
        }),
        S::Invalid { param, message } => {
            let e = OpenAiError::invalid_request(message.clone());
            match param {
                Some(p) => e.with_param(p.clone()),
                None => e,
            }
        }
        S::Unreadable(what) => OpenAiError::invalid_request(match what {
            Unreadable::JsonContentType => {
                "Send the body as JSON with Content-Type: application/json.".to_owned()
            }
            Unreadable::Json(why) => format!("The JSON body could not be parsed: {why}"),
            Unreadable::FormContentType => {
                "Send the form as application/x-www-form-urlencoded.".to_owned()
            }
            Unreadable::Form(why) => format!("The form is not valid: {why}"),
            Unreadable::Query(why) => format!("The query string is not valid: {why}"),
        }),
        S::TooLarge { limit } => OpenAiError::request_too_large(*limit),
        S::BodyTimeout => OpenAiError::request_timeout(),
        S::NotSignedIn => OpenAiError::not_signed_in(),
        S::FreshPasskeyRequired => OpenAiError::fresh_passkey_required(),
        S::CsrfFailed => OpenAiError::csrf_failed(),
        S::LastPasskey => OpenAiError::last_passkey(),
        S::CeremonyFailed(message) => OpenAiError::ceremony_failed(message.clone()),
        S::PasskeysUnavailable(why) => OpenAiError::passkeys_unavailable(why.clone()),
        S::CredentialAlreadyRegistered => OpenAiError::credential_already_registered(),
        S::AdminKeyNotAllowed => OpenAiError::admin_key_not_allowed(),
        S::KeyRejected { detail } => OpenAiError::key_rejected(format!(
            "OpenAI did not accept this key ({detail}). Check that you copied the whole key \
             and that it is active at platform.openai.com/api-keys."
        )),
        S::CodeInvalid(why) => OpenAiError::invalid_grant(match why {
            CodeProblem::Malformed => "The code is not valid.",
            CodeProblem::Unknown => "The code is not valid: unknown, already used, or expired.",
            CodeProblem::Expired => {
                "The code has expired (codes last 5 minutes). Start the connection again."
            }
            CodeProblem::VerifierMismatch => {
                "The code_verifier does not match the code_challenge; the code is now spent."
            }
            CodeProblem::RedirectMismatch => {
                "redirect_uri does not match the one the code was issued for; the code is now \
                 spent."
            }
            CodeProblem::PersonGone => {
                "The person who approved this code has deleted their account."
            }
        }),
        S::AdminDisabled => OpenAiError::invalid_api_key(
            "the admin API is disabled; set KEYGATE_ADMIN_KEY to enable it",
        ),
        S::NotAdminKey => OpenAiError::invalid_api_key("this is not the admin key"),
        S::InsufficientScope { needed } => OpenAiError::insufficient_scope(needed.as_str()),
        S::MasterKey(why) => match why {
            MasterKeyRefusal::FromEnvironment => OpenAiError::keyring_from_environment(),
            MasterKeyRefusal::Active(kid) => OpenAiError::master_key_active(kid),
            MasterKeyRefusal::InUse { kid, records } => {
                OpenAiError::master_key_in_use(kid, *records)
            }
        },
        S::RateLimited { limit, retry_after } => {
            let secs = *retry_after;
            let message = match limit {
                Limit::AdminKeys => format!(
                    "Too many wrong admin keys from your address. Try again in {secs} seconds."
                ),
                Limit::Passkeys => format!(
                    "Too many passkey requests from your network. Try again in {secs} seconds."
                ),
                Limit::Ceremonies => format!(
                    "keygate has too many sign-ins in progress. Try again in {secs} seconds."
                ),
            };
            OpenAiError::rate_limit_exceeded(message, secs)
        }
    }
}

fn proxy(e: &ProxyError) -> OpenAiError {
    use ProxyError as P;
    match e {
        P::MissingApiKey => OpenAiError::missing_api_key(),
        P::InvalidApiKey(why) => OpenAiError::invalid_api_key(why),
        P::ExpiredApiKey => OpenAiError::expired_api_key(),
        P::RevokedApiKey => OpenAiError::revoked_api_key(),
        P::OriginNotAllowed(origin) => OpenAiError::origin_not_allowed(origin),
        P::InvalidPath(why) => OpenAiError::invalid_path(why),
        P::EndpointNotAllowed(path) => OpenAiError::endpoint_not_allowed(path),
        P::TooLarge { limit } => OpenAiError::request_too_large(*limit),
        P::BodyTimeout => OpenAiError::request_timeout(),
        P::Body(problem) => body(*problem),
        P::ModelNotAllowed(model) => OpenAiError::model_not_allowed(model),
        P::ModelRequired => OpenAiError::model_required(),
        P::RateLimited {
            what,
            limit,
            retry_after_ms,
        } => {
            let unit = match what {
                RateKind::Requests => "requests",
                RateKind::Tokens => "tokens",
            };
            OpenAiError::rate_limit_ms(
                unit,
                format!(
                    "Rate limit reached for this API key on {unit} per minute: limit {limit}. \
                     Please try again in {}.",
                    keygate_core::policy::openai_duration(*retry_after_ms)
                ),
                *retry_after_ms,
            )
        }
        P::TooManyTokens { limit, requested } => OpenAiError::rate_limit_never(format!(
            "This request needs up to {requested} tokens (prompt plus max_tokens), more than \
             this API key's limit of {limit} tokens per minute. Lower max_tokens or shorten \
             the prompt."
        )),
        P::ConcurrencyLimit(limit) => OpenAiError::concurrency_limit_exceeded(*limit),
        P::BudgetSpent {
            what,
            period,
            model,
            resets_at,
        } => {
            let whose = match model {
                Some(m) => format!("budget for {m}"),
                None => "budget".to_owned(),
            };
            OpenAiError::insufficient_quota(format!(
                "This API key's {whose} of {what} per {period} is spent (or this request's \
                 worst case does not fit what is left). It resets at {resets_at}."
            ))
        }
        P::ModelNotPriced(model) => OpenAiError::model_not_priced(model.as_deref()),
        P::TierNotPriced(tier) => OpenAiError::tier_not_priced(tier),
        P::OwnKeyRequired => OpenAiError::own_key_required(),
        P::OwnKeyNotAllowed => OpenAiError::own_key_not_allowed(),
        P::OwnKeyInvalid(why) => OpenAiError::invalid_own_key(why),
        P::OwnKeyAdmin => OpenAiError::admin_key_not_allowed().with_param("x-openai-key"),
        P::KeyNotEnrolled => OpenAiError::key_not_enrolled(),
        P::UnsupportedMethod => OpenAiError::invalid_request("unsupported HTTP method"),
        P::OwnerKeyRejected => OpenAiError::owner_key_rejected(),
        P::OwnerKeyForbidden { missing_scopes } => {
            OpenAiError::owner_key_forbidden(missing_scopes.as_deref())
        }
        P::OperatorKeyRejected => OpenAiError::operator_key_rejected(),
        P::OperatorKeyForbidden { missing_scopes } => {
            OpenAiError::operator_key_forbidden(missing_scopes.as_deref())
        }
    }
}

fn body(problem: BodyProblem) -> OpenAiError {
    use BodyProblem as B;
    let (message, param) = match problem {
        B::ContentType(why) => {
            return OpenAiError::invalid_request(format!(
                "keygate refuses an ambiguous Content-Type that parsers could read \
                 differently: {why}. Send one Content-Type header with each parameter once."
            ));
        }
        B::ContentLengthNotANumber => ("Content-Length is not a number", None),
        B::Compressed => (
            "keygate does not accept compressed request bodies (Content-Encoding); send the \
             body uncompressed.",
            None,
        ),
        B::JsonNotAnObject => (
            "We could not parse the JSON body of your request. The body must be a JSON object.",
            None,
        ),
        B::NotUtf8 => (
            "We could not parse the JSON body of your request: it is not valid UTF-8.",
            None,
        ),
        B::ModelNotAString => ("`model` must be a string", Some("model")),
        B::ModelTooLong => (
            "`model` is longer than any model id (at most 256 bytes)",
            Some("model"),
        ),
        B::KeyRepeated => (
            "The JSON body names one of `model`, `stream`, `stream_options`, `tools`, \
             `max_tokens`, `max_completion_tokens`, `max_output_tokens`, `n`, `best_of` or \
             `service_tier` \
             more than once; JSON parsers disagree on which one counts. Send each key once.",
            None,
        ),
        B::Unreadable => ("the request body could not be read", None),
        B::MultipartUnparseable => ("the multipart body could not be parsed", None),
        B::ModelRepeated => ("`model` is given more than once", Some("model")),
        B::MultipartAmbiguous => (
            "the multipart body names its parts ambiguously (`name*=`, several `name`s or \
             Content-Disposition headers, folded headers, or `model` spelled another way such \
             as `Model`); send one part named exactly `model`",
            Some("model"),
        ),
    };
    let e = OpenAiError::invalid_request(message);
    match param {
        Some(p) => e.with_param(p),
        None => e,
    }
}

impl ResponseError for ServerError {
    fn status_code(&self) -> StatusCode {
        StatusCode::from_u16(self.to_openai().status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR)
    }

    fn error_response(&self) -> HttpResponse {
        match self {
            e if e.is_client() => {}
            ServerError::Upstream(e) => tracing::warn!(error = %e, "upstream failure"),
            other => tracing::error!(error = %other, "request failed"),
        }
        render(&self.to_openai())
    }
}

/// The error as JSON, or as a small page for a browser navigating (a page load or a
/// form post of the connect flow). Same status either way.
pub fn respond(headers: &HeaderMap, e: &ServerError) -> HttpResponse {
    if wants_html(headers) {
        render_html(&e.to_openai())
    } else {
        e.error_response()
    }
}

/// Renders an OpenAI-shaped error with its retry hints.
fn render(e: &OpenAiError) -> HttpResponse {
    let status = StatusCode::from_u16(e.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let mut res = HttpResponse::build(status);
    res.content_type("application/json");
    if let Some(secs) = e.retry_after {
        res.insert_header((RETRY_AFTER, HeaderValue::from(secs)));
    }
    if let Some(ms) = e.retry_after_ms {
        res.insert_header(("retry-after-ms", HeaderValue::from(ms)));
    }
    if let Some(retry) = e.should_retry {
        res.insert_header(("x-should-retry", if retry { "true" } else { "false" }));
    }
    res.body(e.to_json())
}

/// Whether the client is a browser navigating (a page load or form post).
fn wants_html(headers: &HeaderMap) -> bool {
    headers
        .get(actix_web::http::header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|a| a.contains("text/html"))
}

/// The same error as a small page, for top-level navigations (connect flow).
fn render_html(e: &OpenAiError) -> HttpResponse {
    let status = StatusCode::from_u16(e.status).unwrap_or(StatusCode::BAD_REQUEST);
    HttpResponse::build(status)
        .content_type("text/html; charset=utf-8")
        .insert_header((
            actix_web::http::header::CONTENT_SECURITY_POLICY,
            crate::routes::web_pages::PAGE_CSP,
        ))
        .insert_header((
            actix_web::http::header::REFERRER_POLICY,
            crate::routes::web_pages::REFERRER_POLICY,
        ))
        .body(format!(
            "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\">\
             <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
             <title>keygate: this request can't be completed</title>\
             <link rel=\"stylesheet\" href=\"/css/app.css\"></head><body><main class=\"error-page\">\
             <h1>This connection request can't be completed</h1><p>{}</p>\
             <p><small>Error code: <code>{}</code>. Tell the app's developer; nothing was shared.</small></p>\
             </main></body></html>",
            escape(&e.message),
            escape(e.code.unwrap_or("error"))
        ))
}

fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
        .replace('\'', "&#39;")
}

#[cfg(test)]
mod tests {
    use super::*;
    use keygate_core::content_type::ContentTypeError;
    use std::time::Duration;

    /// Every variant of every error the server can answer with, and its status and code.
    #[test]
    fn every_variant_maps_to_its_status_and_code() {
        use ServiceError as S;
        let not_found = |m: Missing| S::NotFound(m).into();
        let table: Vec<(ServerError, u16, &str)> = vec![
            // --- services, auth, routes
            (not_found(Missing::User), 404, "not_found"),
            (not_found(Missing::Grant), 404, "not_found"),
            (not_found(Missing::Passkey), 404, "not_found"),
            (not_found(Missing::Session), 404, "not_found"),
            (not_found(Missing::AdminKey), 404, "not_found"),
            (not_found(Missing::Connection), 404, "not_found"),
            (not_found(Missing::ActiveConnection), 404, "not_found"),
            (not_found(Missing::Plan), 404, "not_found"),
            (not_found(Missing::Page), 404, "not_found"),
            (
                not_found(Missing::Route {
                    method: "GET".into(),
                    path: "/x".into(),
                }),
                404,
                "not_found",
            ),
            (S::invalid("name", "x").into(), 400, "invalid_request"),
            (
                S::Invalid {
                    param: None,
                    message: "x".into(),
                }
                .into(),
                400,
                "invalid_request",
            ),
            (
                S::Unreadable(Unreadable::JsonContentType).into(),
                400,
                "invalid_request",
            ),
            (
                S::Unreadable(Unreadable::Json("x".into())).into(),
                400,
                "invalid_request",
            ),
            (
                S::Unreadable(Unreadable::FormContentType).into(),
                400,
                "invalid_request",
            ),
            (
                S::Unreadable(Unreadable::Form("x".into())).into(),
                400,
                "invalid_request",
            ),
            (
                S::Unreadable(Unreadable::Query("x".into())).into(),
                400,
                "invalid_request",
            ),
            (S::TooLarge { limit: 0 }.into(), 413, "request_too_large"),
            (S::BodyTimeout.into(), 408, "request_timeout"),
            (S::NotSignedIn.into(), 401, "not_signed_in"),
            (
                S::FreshPasskeyRequired.into(),
                403,
                "fresh_passkey_required",
            ),
            (S::CsrfFailed.into(), 403, "csrf_failed"),
            (S::LastPasskey.into(), 409, "last_passkey"),
            (S::CeremonyFailed("x".into()).into(), 400, "ceremony_failed"),
            (
                S::PasskeysUnavailable("x".into()).into(),
                503,
                "passkeys_unavailable",
            ),
            (
                S::CredentialAlreadyRegistered.into(),
                409,
                "credential_already_registered",
            ),
            (S::AdminKeyNotAllowed.into(), 400, "admin_key_not_allowed"),
            (
                S::KeyRejected { detail: "x".into() }.into(),
                400,
                "key_rejected",
            ),
            (S::AdminDisabled.into(), 401, "invalid_api_key"),
            (S::NotAdminKey.into(), 401, "invalid_api_key"),
            (
                S::InsufficientScope {
                    needed: keygate_core::admin_scope::AdminScope::Write,
                }
                .into(),
                403,
                "insufficient_scope",
            ),
            // --- proxy phases
            (ProxyError::MissingApiKey.into(), 401, "missing_api_key"),
            (
                ProxyError::InvalidApiKey("x".into()).into(),
                401,
                "invalid_api_key",
            ),
            (ProxyError::ExpiredApiKey.into(), 401, "expired_api_key"),
            (ProxyError::RevokedApiKey.into(), 401, "revoked_api_key"),
            (
                ProxyError::OriginNotAllowed("https://a.example".into()).into(),
                403,
                "origin_not_allowed",
            ),
            (
                ProxyError::InvalidPath("x".into()).into(),
                400,
                "invalid_path",
            ),
            (
                ProxyError::EndpointNotAllowed("/v1/files".into()).into(),
                403,
                "endpoint_not_allowed",
            ),
            (
                ProxyError::TooLarge { limit: 1 }.into(),
                413,
                "request_too_large",
            ),
            (ProxyError::BodyTimeout.into(), 408, "request_timeout"),
            (
                ProxyError::ModelNotAllowed("m".into()).into(),
                403,
                "model_not_allowed",
            ),
            (
                ProxyError::RateLimited {
                    what: RateKind::Requests,
                    limit: 1,
                    retry_after_ms: 1,
                }
                .into(),
                429,
                "rate_limit_exceeded",
            ),
            (
                ProxyError::TooManyTokens {
                    limit: 1,
                    requested: 2,
                }
                .into(),
                429,
                "rate_limit_exceeded",
            ),
            (
                ProxyError::ConcurrencyLimit(1).into(),
                429,
                "concurrency_limit_exceeded",
            ),
            (
                ProxyError::BudgetSpent {
                    what: "$1.00".into(),
                    period: "day",
                    model: None,
                    resets_at: "x".into(),
                }
                .into(),
                429,
                "insufficient_quota",
            ),
            (
                ProxyError::ModelNotPriced(Some("m".into())).into(),
                403,
                "model_not_priced",
            ),
            (
                ProxyError::TierNotPriced("priority".into()).into(),
                403,
                "model_not_priced",
            ),
            (ProxyError::OwnKeyRequired.into(), 400, "own_key_required"),
            (
                ProxyError::OwnKeyNotAllowed.into(),
                403,
                "own_key_not_allowed",
            ),
            (
                ProxyError::OwnKeyInvalid("sent more than once").into(),
                400,
                "invalid_own_key",
            ),
            (ProxyError::OwnKeyAdmin.into(), 400, "admin_key_not_allowed"),
            (ProxyError::KeyNotEnrolled.into(), 409, "key_not_enrolled"),
            (ProxyError::UnsupportedMethod.into(), 400, "invalid_request"),
            (
                ProxyError::OwnerKeyRejected.into(),
                424,
                "owner_key_rejected",
            ),
            (
                ProxyError::OwnerKeyForbidden {
                    missing_scopes: Some("api.responses.write".into()),
                }
                .into(),
                424,
                "owner_key_rejected",
            ),
            (
                ProxyError::OperatorKeyRejected.into(),
                424,
                "owner_key_rejected",
            ),
            (
                ProxyError::OperatorKeyForbidden {
                    missing_scopes: None,
                }
                .into(),
                424,
                "owner_key_rejected",
            ),
            (ProxyError::ModelRequired.into(), 403, "model_not_allowed"),
            // --- upstream and keygate itself
            (
                UpstreamError::ConnectTimeout(Duration::from_secs(1)).into(),
                504,
                "upstream_timeout",
            ),
            (
                UpstreamError::FirstByteTimeout(Duration::from_secs(1)).into(),
                504,
                "upstream_timeout",
            ),
            (UpstreamError::Connect.into(), 502, "upstream_unavailable"),
            (UpstreamError::Request.into(), 502, "upstream_unavailable"),
            (
                UpstreamError::BrokeMidStream.into(),
                502,
                "upstream_unavailable",
            ),
            (
                UpstreamError::IdleMidStream(Duration::from_secs(1)).into(),
                504,
                "upstream_timeout",
            ),
            (StoreError::Encode("x".into()).into(), 500, "internal_error"),
            (
                StoreError::Unsupported(keygate_store::PG_BACKUP).into(),
                501,
                "unsupported_on_this_store",
            ),
            (ServerError::Internal("x".into()), 500, "internal_error"),
            (
                ServerError::Vault(CoreError::Unseal("x")),
                500,
                "internal_error",
            ),
        ];
        let mut table = table;
        for problem in [
            CodeProblem::Malformed,
            CodeProblem::Unknown,
            CodeProblem::Expired,
            CodeProblem::VerifierMismatch,
            CodeProblem::RedirectMismatch,
            CodeProblem::PersonGone,
        ] {
            table.push((S::CodeInvalid(problem).into(), 400, "invalid_grant"));
        }
        for (why, code) in [
            (
                MasterKeyRefusal::FromEnvironment,
                "keyring_from_environment",
            ),
            (MasterKeyRefusal::Active("mk-a".into()), "master_key_active"),
            (
                MasterKeyRefusal::InUse {
                    kid: "mk-a".into(),
                    records: 2,
                },
                "master_key_in_use",
            ),
        ] {
            table.push((S::MasterKey(why).into(), 409, code));
        }
        for limit in [Limit::AdminKeys, Limit::Passkeys, Limit::Ceremonies] {
            table.push((
                S::RateLimited {
                    limit,
                    retry_after: 3,
                }
                .into(),
                429,
                "rate_limit_exceeded",
            ));
        }
        for problem in [
            BodyProblem::ContentLengthNotANumber,
            BodyProblem::Compressed,
            BodyProblem::JsonNotAnObject,
            BodyProblem::NotUtf8,
            BodyProblem::ModelNotAString,
            BodyProblem::ModelTooLong,
            BodyProblem::Unreadable,
            BodyProblem::MultipartUnparseable,
            BodyProblem::ModelRepeated,
            BodyProblem::MultipartAmbiguous,
            BodyProblem::KeyRepeated,
            BodyProblem::ContentType(ContentTypeError::Repeated),
            BodyProblem::ContentType(ContentTypeError::Malformed),
            BodyProblem::ContentType(ContentTypeError::RepeatedParameter),
            BodyProblem::ContentType(ContentTypeError::ExtendedParameter),
            BodyProblem::ContentType(ContentTypeError::QuotedValue),
            BodyProblem::ContentType(ContentTypeError::MissingBoundary),
            BodyProblem::ContentType(ContentTypeError::BadBoundary),
        ] {
            table.push((ProxyError::Body(problem).into(), 400, "invalid_request"));
        }
        let mut seen = std::collections::BTreeSet::new();
        for (err, status, code) in table {
            let res = err.error_response();
            assert_eq!(res.status().as_u16(), status, "{err:?}");
            assert_eq!(err.to_openai().code, Some(code), "{err:?}");
            seen.insert(variant(&err));
        }
        assert_eq!(seen.len(), VARIANTS, "a variant is missing from the table");
    }

    /// How many variants [`variant`] names. A new variant does not compile there until
    /// it gets a name; then this count and the table above must grow with it.
    const VARIANTS: usize = 64;

    /// Every leaf variant by name: an exhaustive match (no `_`), so a new error variant
    /// fails to compile here until it is named, and then the table test fails until it
    /// is in the table.
    fn variant(e: &ServerError) -> &'static str {
        use ServiceError as S;
        match e {
            ServerError::Service(s) => match s {
                S::NotFound(_) => "NotFound",
                S::Invalid { .. } => "Invalid",
                S::Unreadable(u) => match u {
                    Unreadable::JsonContentType => "Unreadable::JsonContentType",
                    Unreadable::Json(_) => "Unreadable::Json",
                    Unreadable::FormContentType => "Unreadable::FormContentType",
                    Unreadable::Form(_) => "Unreadable::Form",
                    Unreadable::Query(_) => "Unreadable::Query",
                },
                S::TooLarge { .. } => "TooLarge",
                S::BodyTimeout => "BodyTimeout",
                S::NotSignedIn => "NotSignedIn",
                S::FreshPasskeyRequired => "FreshPasskeyRequired",
                S::CsrfFailed => "CsrfFailed",
                S::LastPasskey => "LastPasskey",
                S::CeremonyFailed(_) => "CeremonyFailed",
                S::PasskeysUnavailable(_) => "PasskeysUnavailable",
                S::CredentialAlreadyRegistered => "CredentialAlreadyRegistered",
                S::AdminKeyNotAllowed => "AdminKeyNotAllowed",
                S::KeyRejected { .. } => "KeyRejected",
                S::CodeInvalid(_) => "CodeInvalid",
                S::AdminDisabled => "AdminDisabled",
                S::NotAdminKey => "NotAdminKey",
                S::InsufficientScope { .. } => "InsufficientScope",
                S::RateLimited { .. } => "RateLimited",
                S::MasterKey(m) => match m {
                    MasterKeyRefusal::FromEnvironment => "MasterKey::FromEnvironment",
                    MasterKeyRefusal::Active(_) => "MasterKey::Active",
                    MasterKeyRefusal::InUse { .. } => "MasterKey::InUse",
                },
            },
            ServerError::Proxy(p) => match p {
                ProxyError::MissingApiKey => "MissingApiKey",
                ProxyError::InvalidApiKey(_) => "InvalidApiKey",
                ProxyError::ExpiredApiKey => "ExpiredApiKey",
                ProxyError::RevokedApiKey => "RevokedApiKey",
                ProxyError::OriginNotAllowed(_) => "OriginNotAllowed",
                ProxyError::InvalidPath(_) => "InvalidPath",
                ProxyError::EndpointNotAllowed(_) => "EndpointNotAllowed",
                ProxyError::TooLarge { .. } => "Proxy::TooLarge",
                ProxyError::BodyTimeout => "Proxy::BodyTimeout",
                ProxyError::Body(_) => "Body",
                ProxyError::ModelNotAllowed(_) => "ModelNotAllowed",
                ProxyError::ModelRequired => "ModelRequired",
                ProxyError::RateLimited { .. } => "Proxy::RateLimited",
                ProxyError::TooManyTokens { .. } => "TooManyTokens",
                ProxyError::ConcurrencyLimit(_) => "ConcurrencyLimit",
                ProxyError::BudgetSpent { .. } => "BudgetSpent",
                ProxyError::ModelNotPriced(_) => "ModelNotPriced",
                ProxyError::TierNotPriced(_) => "TierNotPriced",
                ProxyError::OwnKeyRequired => "OwnKeyRequired",
                ProxyError::OwnKeyNotAllowed => "OwnKeyNotAllowed",
                ProxyError::OwnKeyInvalid(_) => "OwnKeyInvalid",
                ProxyError::OwnKeyAdmin => "OwnKeyAdmin",
                ProxyError::KeyNotEnrolled => "KeyNotEnrolled",
                ProxyError::UnsupportedMethod => "UnsupportedMethod",
                ProxyError::OwnerKeyRejected => "OwnerKeyRejected",
                ProxyError::OwnerKeyForbidden { .. } => "OwnerKeyForbidden",
                ProxyError::OperatorKeyRejected => "OperatorKeyRejected",
                ProxyError::OperatorKeyForbidden { .. } => "OperatorKeyForbidden",
            },
            ServerError::Upstream(u) => match u {
                UpstreamError::ConnectTimeout(_) => "ConnectTimeout",
                UpstreamError::Connect => "Connect",
                UpstreamError::FirstByteTimeout(_) => "FirstByteTimeout",
                UpstreamError::Request => "Request",
                UpstreamError::BrokeMidStream => "BrokeMidStream",
                UpstreamError::IdleMidStream(_) => "IdleMidStream",
            },
            ServerError::Store(StoreError::Unsupported(_)) => "Store::Unsupported",
            ServerError::Store(_) => "Store",
            ServerError::Vault(_) => "Vault",
            ServerError::Internal(_) => "Internal",
        }
    }

    #[test]
    fn params_and_retry_hints_travel_with_the_variant() {
        let e = ServerError::from(ProxyError::ModelRequired).to_openai();
        assert_eq!(e.param.as_deref(), Some("model"));
        assert!(e.message.contains("must name one of them"));
        let e = ServerError::from(ProxyError::OwnerKeyForbidden {
            missing_scopes: Some("api.responses.write".into()),
        })
        .error_response();
        assert_eq!(e.headers().get("x-should-retry").unwrap(), "false");
        let e = ServerError::from(ProxyError::Body(BodyProblem::ContentType(
            ContentTypeError::RepeatedParameter,
        )))
        .to_openai();
        assert!(e.message.contains("more than once"), "{}", e.message);
        let e = ServerError::from(ServiceError::invalid("models", "x")).to_openai();
        assert_eq!(e.param.as_deref(), Some("models"));
        let e = ServerError::from(ProxyError::Body(BodyProblem::ModelRepeated)).to_openai();
        assert_eq!(e.param.as_deref(), Some("model"));
        let e = ServerError::from(ProxyError::EndpointNotAllowed("/v1/files".into())).to_openai();
        assert_eq!(e.param.as_deref(), Some("/v1/files"));
        let e = ServerError::from(ServiceError::RateLimited {
            limit: Limit::AdminKeys,
            retry_after: 7,
        })
        .error_response();
        assert_eq!(e.headers().get(RETRY_AFTER).unwrap(), "7");
        let e = ServerError::from(ProxyError::KeyNotEnrolled).error_response();
        assert_eq!(e.headers().get("x-should-retry").unwrap(), "false");
    }

    /// A sled-only operation on a PostgreSQL store: 501 with a code the operator can
    /// act on, a message naming what to use instead, and no retry by the SDKs.
    #[test]
    fn an_operation_the_store_lacks_is_501_and_says_what_to_use() {
        let err = ServerError::from(StoreError::Unsupported(keygate_store::PG_BACKUP));
        let res = err.error_response();
        assert_eq!(res.status().as_u16(), 501);
        assert_eq!(res.headers().get("x-should-retry").unwrap(), "false");
        let e = err.to_openai();
        assert_eq!(e.code, Some("unsupported_on_this_store"));
        assert!(
            e.message
                .starts_with("a backup through keygate (a PostgreSQL store")
        );
        assert!(e.message.contains("pg_dump") && e.message.contains("pg_restore"));
        assert!(e.message.contains("master keyring"), "{}", e.message);
        // Any other store failure stays a bare 500.
        let e = ServerError::from(StoreError::Postgres("connection refused".into())).to_openai();
        assert_eq!((e.status, e.code), (500, Some("internal_error")));
        assert!(!e.message.contains("connection refused"));
    }

    #[test]
    fn limit_refusals_carry_their_headers() {
        let res = ServerError::from(ProxyError::RateLimited {
            what: RateKind::Tokens,
            limit: 100,
            retry_after_ms: 1_500,
        })
        .error_response();
        assert_eq!(res.headers().get(RETRY_AFTER).unwrap(), "2");
        assert_eq!(res.headers().get("retry-after-ms").unwrap(), "1500");
        // OpenAI's `type` says which limit: "tokens" here, "requests" for rpm.
        let kind = |what| {
            ServerError::from(ProxyError::RateLimited {
                what,
                limit: 1,
                retry_after_ms: 1,
            })
            .to_openai()
            .kind
        };
        assert_eq!(kind(RateKind::Tokens), "tokens");
        assert_eq!(kind(RateKind::Requests), "requests");
        let res = ServerError::from(ProxyError::TooManyTokens {
            limit: 1,
            requested: 2,
        })
        .error_response();
        assert!(res.headers().get(RETRY_AFTER).is_none());
        assert_eq!(res.headers().get("x-should-retry").unwrap(), "false");
        let res = ServerError::from(ProxyError::ConcurrencyLimit(2)).error_response();
        assert_eq!(res.headers().get(RETRY_AFTER).unwrap(), "1");
        let e = ServerError::from(ProxyError::ModelNotPriced(Some("my-model".into()))).to_openai();
        assert_eq!(e.param.as_deref(), Some("model"));
        assert!(e.message.contains("my-model"));
    }

    #[test]
    fn retry_hints_become_headers() {
        let res = render(&OpenAiError::rate_limit_exceeded("slow down", 7));
        assert_eq!(res.headers().get(RETRY_AFTER).unwrap(), "7");
        let res = render(&OpenAiError::key_not_enrolled());
        assert_eq!(res.headers().get("x-should-retry").unwrap(), "false");
    }
}
