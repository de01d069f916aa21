//! Endpoint scopes: which `/v1` endpoints a grant may reach.
//!
//! Three pure steps, in the order the proxy runs them:
//!
//! 1. [`canonicalize`] the RAW request path (as it arrived, not decoded). A path that
//!    another component could read differently from us — `//`, `%2F`, a
//!    percent-encoded unreserved character (`%66iles`), `;` parameters, `.`/`..`
//!    segments, a backslash, any byte outside ASCII raw or percent-encoded
//!    (`%C0%AE`) — is refused ([`PathError`], 400 `invalid_path`), never
//!    interpreted. What passes is a path whose literal segments mean the same to every
//!    reader, so the classifier cannot be fooled by an encoding.
//! 2. [`classify`] `(method, canonical path)` → the [`Access`] it needs: one
//!    [`Scope`], [`Access::Never`] (`/v1/organization/*`, never forwarded), or
//!    [`Access::Unknown`] (refused: an endpoint keygate does not know is not granted).
//! 3. [`Access::allowed_by`] the grant's scopes.
//!
//! The table lives in [`classify`] and is written out in `docs/API.md`.

use std::fmt;

use serde::{Deserialize, Serialize};

/// A family of OpenAI endpoints a grant may be allowed to reach.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Scope {
    /// Use models: chat, completions, responses (create), embeddings, moderations,
    /// audio, images, and list/get models.
    Inference,
    /// Upload, list, download and delete files (and multi-part uploads).
    Files,
    /// Start, list and cancel batch jobs.
    Batches,
    /// Start and manage fine-tuning jobs (and delete fine-tuned models).
    FineTuning,
    /// Assistants, threads (runs, messages) and vector stores.
    Assistants,
    /// Read, update and delete stored chat completions and responses.
    Stored,
}

impl Scope {
    /// Every scope, in the order they are listed to people.
    pub const ALL: [Scope; 6] = [
        Scope::Inference,
        Scope::Files,
        Scope::Batches,
        Scope::FineTuning,
        Scope::Assistants,
        Scope::Stored,
    ];

    /// The wire name (`fine_tuning`, ...).
    pub fn as_str(self) -> &'static str {
        match self {
            Scope::Inference => "inference",
            Scope::Files => "files",
            Scope::Batches => "batches",
            Scope::FineTuning => "fine_tuning",
            Scope::Assistants => "assistants",
            Scope::Stored => "stored",
        }
    }

    /// Parses a wire name exactly (no trimming, no case folding).
    pub fn parse(name: &str) -> Option<Scope> {
        Scope::ALL.into_iter().find(|s| s.as_str() == name)
    }

    /// What a grant gets when nobody asked for scopes: `["inference"]`.
    pub fn default_set() -> Vec<Scope> {
        vec![Scope::Inference]
    }
}

impl fmt::Display for Scope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Why a list of scope names was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ScopesError {
    Unknown(String),
    Empty,
}

impl fmt::Display for ScopesError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            // The name is the caller's own input, cut short so it cannot flood a message.
            ScopesError::Unknown(name) => {
                let shown: String = name.chars().take(40).collect();
                write!(
                    f,
                    "unknown scope `{shown}`; the scopes are {}",
                    Scope::ALL.map(Scope::as_str).join(", ")
                )
            }
            ScopesError::Empty => f.write_str("`scopes` must name at least one scope"),
        }
    }
}

/// A requested scope list: `None` → the default (`inference`); names parsed exactly;
/// duplicates dropped; the result in [`Scope::ALL`] order. An empty list is refused (a
/// grant that can reach nothing is a mistake, not a request).
pub fn parse_scopes<S: AsRef<str>>(raw: Option<&[S]>) -> Result<Vec<Scope>, ScopesError> {
    let Some(raw) = raw else {
        return Ok(Scope::default_set());
    };
    let mut out = Vec::with_capacity(raw.len().min(Scope::ALL.len()));
    for name in raw {
        let name = name.as_ref();
        let scope = Scope::parse(name).ok_or_else(|| ScopesError::Unknown(name.to_owned()))?;
        if !out.contains(&scope) {
            out.push(scope);
        }
    }
    if out.is_empty() {
        return Err(ScopesError::Empty);
    }
    out.sort();
    Ok(out)
}

/// Parses a comma list (`inference,files`) as used in the redirect flow's query.
pub fn parse_scope_list(raw: &str) -> Result<Vec<Scope>, ScopesError> {
    let names: Vec<&str> = raw.split(',').map(str::trim).collect();
    parse_scopes(Some(names.as_slice()))
}

// --- canonical paths -----------------------------------------------------------------

/// A `/v1` path that passed [`canonicalize`]: only obtainable from there.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CanonicalPath(String);

impl CanonicalPath {
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The segments after `/v1` (`/v1/files/f` → `["files", "f"]`; `/v1` → `[]`).
    pub fn segments(&self) -> Vec<&str> {
        match self.0.strip_prefix("/v1/") {
            Some(rest) => rest.split('/').collect(),
            None => Vec::new(),
        }
    }
}

/// Why a path is not canonical. The text names the problem, never echoes the path.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PathError {
    NotV1,
    EmptySegment,
    DotSegment,
    Backslash,
    Parameters,
    EncodedSeparator,
    EncodedUnreserved,
    EncodedPercent,
    EncodedControl,
    EncodedNonAscii,
    BadEncoding,
    BadCharacter,
    TooLong,
}

impl fmt::Display for PathError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            PathError::NotV1 => "it does not start with /v1/",
            PathError::EmptySegment => "it has an empty segment (`//` or a trailing `/`)",
            PathError::DotSegment => "it has a `.` or `..` segment",
            PathError::Backslash => "it contains a backslash",
            PathError::Parameters => "it contains `;` parameters",
            PathError::EncodedSeparator => "it contains an encoded `/` or `\\` (%2F, %5C)",
            PathError::EncodedUnreserved => {
                "it percent-encodes a character that needs no encoding (a letter, digit, `-`, `.`, `_` or `~`)"
            }
            PathError::EncodedPercent => "it contains an encoded `%` (%25)",
            PathError::EncodedControl => "it contains an encoded control character",
            PathError::EncodedNonAscii => {
                "it percent-encodes a byte outside ASCII (%80-%FF); OpenAI's paths are ASCII"
            }
            PathError::BadEncoding => "it contains a `%` not followed by two hex digits",
            PathError::BadCharacter => "it contains a character not allowed in a path",
            PathError::TooLong => "it is too long",
        })
    }
}

/// Longest path accepted; OpenAI's are far shorter.
pub const MAX_PATH_LEN: usize = 2048;

/// Checks a RAW request path (without the query) and returns it unchanged when every
/// reader would agree on its segments. Never decodes or repairs: a path that is not
/// already canonical is refused.
pub fn canonicalize(raw: &str) -> Result<CanonicalPath, PathError> {
    if raw.len() > MAX_PATH_LEN {
        return Err(PathError::TooLong);
    }
    if raw != "/v1" && !raw.starts_with("/v1/") {
        return Err(PathError::NotV1);
    }
    let bytes = raw.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'\\' => return Err(PathError::Backslash),
            b';' => return Err(PathError::Parameters),
            b'%' => {
                let decoded = bytes
                    .get(i + 1..i + 3)
                    .and_then(|h| std::str::from_utf8(h).ok())
                    .and_then(|h| u8::from_str_radix(h, 16).ok())
                    .ok_or(PathError::BadEncoding)?;
                match decoded {
                    b'/' | b'\\' => return Err(PathError::EncodedSeparator),
                    b'%' => return Err(PathError::EncodedPercent),
                    b if is_unreserved(b) => return Err(PathError::EncodedUnreserved),
                    b if b < 0x20 || b == 0x7f => return Err(PathError::EncodedControl),
                    // Overlong UTF-8 (`%C0%AE` = `.`) and other non-ASCII bytes: a reader
                    // that decodes leniently could see a separator or a dot segment.
                    b if b >= 0x80 => return Err(PathError::EncodedNonAscii),
                    _ => {}
                }
                i += 3;
                continue;
            }
            b'/' => {}
            b if is_unreserved(b) || is_sub_delim(b) || b == b':' || b == b'@' => {}
            _ => return Err(PathError::BadCharacter),
        }
        i += 1;
    }
    if raw != "/v1" {
        for seg in raw["/v1/".len()..].split('/') {
            match seg {
                "" => return Err(PathError::EmptySegment),
                "." | ".." => return Err(PathError::DotSegment),
                _ => {}
            }
        }
    }
    Ok(CanonicalPath(raw.to_owned()))
}

/// RFC 3986 unreserved: ALPHA / DIGIT / "-" / "." / "_" / "~".
fn is_unreserved(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~')
}

/// RFC 3986 sub-delims, minus `;` (refused above: matrix parameters).
fn is_sub_delim(b: u8) -> bool {
    matches!(
        b,
        b'!' | b'$' | b'&' | b'\'' | b'(' | b')' | b'*' | b'+' | b',' | b'='
    )
}

// --- classification ----------------------------------------------------------------------

/// What a request needs from a grant.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// Allowed to grants holding this scope.
    Scope(Scope),
    /// Never forwarded, whatever the grant (`/v1/organization/*`).
    Never,
    /// Not an endpoint keygate knows; refused.
    Unknown,
}

impl Access {
    pub fn allowed_by(self, scopes: &[Scope]) -> bool {
        match self {
            Access::Scope(s) => scopes.contains(&s),
            Access::Never | Access::Unknown => false,
        }
    }
}

/// The scope `(method, path)` needs. `method` is the upper-case HTTP method.
pub fn classify(method: &str, path: &CanonicalPath) -> Access {
    use Scope::*;
    let segs = path.segments();
    let get = method == "GET";
    let post = method == "POST";
    let delete = method == "DELETE";
    let family = |scope: Scope| {
        if get || post || delete {
            Access::Scope(scope)
        } else {
            Access::Unknown
        }
    };
    match segs.as_slice() {
        ["organization", ..] => Access::Never,

        // Inference: create calls and the model list.
        ["chat", "completions"] if post => Access::Scope(Inference),
        ["completions"] if post => Access::Scope(Inference),
        ["responses"] if post => Access::Scope(Inference),
        ["responses", "input_tokens"] if post => Access::Scope(Inference),
        ["embeddings"] if post => Access::Scope(Inference),
        ["moderations"] if post => Access::Scope(Inference),
        ["audio", "speech" | "transcriptions" | "translations"] if post => Access::Scope(Inference),
        ["images", "generations" | "edits" | "variations"] if post => Access::Scope(Inference),
        ["models"] if get => Access::Scope(Inference),
        ["models", _] if get => Access::Scope(Inference),
        // Deleting a model only works on fine-tuned models.
        ["models", _] if delete => Access::Scope(FineTuning),

        // Stored chat completions: list, get, update (POST), delete, messages.
        ["chat", "completions"] if get => Access::Scope(Stored),
        ["chat", "completions", _] if get || post || delete => Access::Scope(Stored),
        ["chat", "completions", _, "messages"] if get => Access::Scope(Stored),
        // Stored responses: get, delete, their input items, cancel (background mode).
        ["responses", _] if get || delete => Access::Scope(Stored),
        ["responses", _, "input_items"] if get => Access::Scope(Stored),
        ["responses", _, "cancel"] if post => Access::Scope(Stored),

        ["files" | "uploads", ..] => family(Files),
        ["batches", ..] => family(Batches),
        ["fine_tuning", ..] => family(FineTuning),
        ["assistants" | "threads" | "vector_stores", ..] => family(Assistants),

        _ => Access::Unknown,
    }
}

// --- models ------------------------------------------------------------------------------

/// How a request chooses the model it runs on, for grants limited to some models.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ModelUse {
    /// The call runs no model, or continues something already started
    /// (`runs/{id}/submit_tool_outputs`, `cancel`): nothing to check.
    None,
    /// The call runs a model chosen by the body's `model`, and OpenAI picks one when it
    /// is missing (a default image model, an assistant's or a stored prompt's model): a
    /// model-limited grant must name one of its models.
    Named,
    /// The models are named where keygate does not read (a batch's input file): a
    /// model-limited grant may not make the call at all.
    Hidden,
}

/// How `(method, path)` picks its model. `method` is the upper-case HTTP method.
pub fn model_use(method: &str, path: &CanonicalPath) -> ModelUse {
    if method != "POST" {
        return ModelUse::None;
    }
    match path.segments().as_slice() {
        ["chat", "completions"]
        | ["completions"]
        | ["responses"]
        | ["responses", "input_tokens"]
        | ["embeddings"]
        | ["moderations"]
        | ["audio", "speech" | "transcriptions" | "translations"]
        | ["images", "generations" | "edits" | "variations"]
        // Assistants: create and update (each names the model its runs use).
        | ["assistants"]
        | ["assistants", _]
        // Runs: create a thread and run it, or run an existing thread.
        | ["threads", "runs"]
        | ["threads", _, "runs"] => ModelUse::Named,
        ["batches"] => ModelUse::Hidden,
        // A fine-tuning job names its base model on top, but a reinforcement job's
        // grader (and a grader run) names its own model deep inside the body.
        ["fine_tuning", "jobs"] | ["fine_tuning", "alpha", "graders", ..] => ModelUse::Hidden,
        _ => ModelUse::None,
    }
}

/// The models a request's `tools` run on their own, beside its top-level `model`:
/// each tool that names a `model`, and each `image_generation` tool (which, without
/// one, runs OpenAI's default image model: `None`). Anything that is not a list of
/// objects names no model here.
pub fn tool_models(tools: Option<&serde_json::Value>) -> Vec<Option<String>> {
    let Some(serde_json::Value::Array(tools)) = tools else {
        return Vec::new();
    };
    tools
        .iter()
        .filter_map(|tool| {
            let model = tool.get("model");
            let image = tool.get("type").and_then(|t| t.as_str()) == Some("image_generation");
            match model {
                Some(serde_json::Value::String(m)) => Some(Some(m.clone())),
                // A model that is not a string cannot be checked: treat it as unnamed.
                Some(serde_json::Value::Null) | None if image => Some(None),
                Some(serde_json::Value::Null) | None => None,
                Some(_) => Some(None),
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn tools_that_run_a_model_of_their_own() {
        let tools = serde_json::json!([
            {"type": "function", "name": "f"},
            {"type": "image_generation"},
            {"type": "image_generation", "model": "gpt-image-1"},
            {"type": "web_search", "model": null},
            {"type": "custom", "model": 7},
        ]);
        assert_eq!(
            tool_models(Some(&tools)),
            vec![None, Some("gpt-image-1".to_owned()), None]
        );
        assert!(tool_models(None).is_empty());
        assert!(tool_models(Some(&serde_json::json!({"type": "image_generation"}))).is_empty());
    }

    #[test]
    fn fine_tuning_jobs_and_grader_runs_hide_models() {
        let hidden = |p: &str| model_use("POST", &canonicalize(p).unwrap());
        assert_eq!(hidden("/v1/fine_tuning/jobs"), ModelUse::Hidden);
        assert_eq!(
            hidden("/v1/fine_tuning/alpha/graders/run"),
            ModelUse::Hidden
        );
        assert_eq!(
            hidden("/v1/fine_tuning/jobs/ftjob-1/cancel"),
            ModelUse::None
        );
    }

    fn access(method: &str, path: &str) -> Access {
        classify(method, &canonicalize(path).unwrap())
    }

    #[test]
    fn names_round_trip() {
        for s in Scope::ALL {
            assert_eq!(Scope::parse(s.as_str()), Some(s));
            assert_eq!(
                serde_json::to_value(s).unwrap(),
                serde_json::Value::String(s.as_str().into())
            );
            let back: Scope = serde_json::from_value(serde_json::json!(s.as_str())).unwrap();
            assert_eq!(back, s);
        }
        assert_eq!(Scope::parse("Files"), None);
        assert_eq!(Scope::parse(" files"), None);
        assert_eq!(Scope::parse("fine-tuning"), None);
    }

    #[test]
    fn scope_lists() {
        let none: Option<&[&str]> = None;
        assert_eq!(parse_scopes(none), Ok(vec![Scope::Inference]));
        assert_eq!(
            parse_scopes(Some(&["stored", "files", "files", "inference"][..])),
            Ok(vec![Scope::Inference, Scope::Files, Scope::Stored])
        );
        assert_eq!(parse_scopes::<&str>(Some(&[])), Err(ScopesError::Empty));
        assert_eq!(
            parse_scopes(Some(&["inference", "admin"][..])),
            Err(ScopesError::Unknown("admin".into()))
        );
        assert_eq!(
            parse_scope_list("inference, files"),
            Ok(vec![Scope::Inference, Scope::Files])
        );
        assert!(parse_scope_list("").is_err());
        assert!(parse_scope_list("inference,").is_err());
        let long = "x".repeat(10_000);
        assert!(ScopesError::Unknown(long).to_string().len() < 200);
    }

    #[test]
    fn non_canonical_paths_are_refused() {
        let table = [
            ("/v1//files", PathError::EmptySegment),
            ("/v1/files/", PathError::EmptySegment),
            ("/v1/", PathError::EmptySegment),
            ("/v1/%66iles", PathError::EncodedUnreserved),
            ("/v1/fi%6Ces", PathError::EncodedUnreserved),
            ("/v1/files%2F..", PathError::EncodedSeparator),
            ("/v1/files%2f..", PathError::EncodedSeparator),
            ("/v1/files%5Cx", PathError::EncodedSeparator),
            ("/v1/%2e%2e/admin", PathError::EncodedUnreserved),
            ("/v1/files/%252e", PathError::EncodedPercent),
            ("/v1/files/a%00", PathError::EncodedControl),
            ("/v1/files/a%zz", PathError::BadEncoding),
            ("/v1/files/a%2", PathError::BadEncoding),
            ("/v1/chat/completions;x=1", PathError::Parameters),
            ("/v1/./files", PathError::DotSegment),
            ("/v1/files/..", PathError::DotSegment),
            ("/v1/files\\..", PathError::Backslash),
            ("/v1/files/a b", PathError::BadCharacter),
            ("/v1/files/a\"b", PathError::BadCharacter),
            ("/v1/files/é", PathError::BadCharacter),
            (
                "/v1/models/%C0%AE%C0%AE%C0%AFfiles",
                PathError::EncodedNonAscii,
            ),
            ("/v1/models/%c0%ae", PathError::EncodedNonAscii),
            ("/v1/files/%80", PathError::EncodedNonAscii),
            ("/v1/files/%FF", PathError::EncodedNonAscii),
            ("/v1/files/%C3%A9", PathError::EncodedNonAscii),
            ("/v1/files/\u{80}", PathError::BadCharacter),
            ("/v2/files", PathError::NotV1),
            ("/v1files", PathError::NotV1),
            ("/admin", PathError::NotV1),
        ];
        for (path, err) in table {
            assert_eq!(canonicalize(path), Err(err), "{path}");
        }
        assert_eq!(
            canonicalize(&format!("/v1/{}", "a".repeat(MAX_PATH_LEN))),
            Err(PathError::TooLong)
        );
    }

    #[test]
    fn canonical_paths_pass_unchanged() {
        for path in [
            "/v1",
            "/v1/models",
            "/v1/models/ft:gpt-4o-mini:org:custom:abc123",
            "/v1/models/ft%3Agpt-4o-mini",
            "/v1/files/file-abc_123",
            "/v1/threads/thread_1/runs/run_2/steps",
            "/v1/models/a@b.c~d",
        ] {
            assert_eq!(canonicalize(path).unwrap().as_str(), path);
        }
    }

    #[test]
    fn the_scope_table() {
        use Scope::*;
        let table: &[(&str, &str, Access)] = &[
            ("POST", "/v1/chat/completions", Access::Scope(Inference)),
            ("POST", "/v1/completions", Access::Scope(Inference)),
            ("POST", "/v1/responses", Access::Scope(Inference)),
            (
                "POST",
                "/v1/responses/input_tokens",
                Access::Scope(Inference),
            ),
            ("POST", "/v1/embeddings", Access::Scope(Inference)),
            ("POST", "/v1/moderations", Access::Scope(Inference)),
            ("POST", "/v1/audio/speech", Access::Scope(Inference)),
            ("POST", "/v1/audio/transcriptions", Access::Scope(Inference)),
            ("POST", "/v1/audio/translations", Access::Scope(Inference)),
            ("POST", "/v1/images/generations", Access::Scope(Inference)),
            ("POST", "/v1/images/edits", Access::Scope(Inference)),
            ("POST", "/v1/images/variations", Access::Scope(Inference)),
            ("GET", "/v1/models", Access::Scope(Inference)),
            ("GET", "/v1/models/gpt-4o", Access::Scope(Inference)),
            (
                "DELETE",
                "/v1/models/ft:gpt-4o:x",
                Access::Scope(FineTuning),
            ),
            ("GET", "/v1/chat/completions", Access::Scope(Stored)),
            ("GET", "/v1/chat/completions/cc_1", Access::Scope(Stored)),
            ("POST", "/v1/chat/completions/cc_1", Access::Scope(Stored)),
            ("DELETE", "/v1/chat/completions/cc_1", Access::Scope(Stored)),
            (
                "GET",
                "/v1/chat/completions/cc_1/messages",
                Access::Scope(Stored),
            ),
            ("GET", "/v1/responses/resp_1", Access::Scope(Stored)),
            ("DELETE", "/v1/responses/resp_1", Access::Scope(Stored)),
            (
                "GET",
                "/v1/responses/resp_1/input_items",
                Access::Scope(Stored),
            ),
            ("POST", "/v1/responses/resp_1/cancel", Access::Scope(Stored)),
            ("GET", "/v1/files", Access::Scope(Files)),
            ("POST", "/v1/files", Access::Scope(Files)),
            ("GET", "/v1/files/file-1/content", Access::Scope(Files)),
            ("DELETE", "/v1/files/file-1", Access::Scope(Files)),
            ("POST", "/v1/uploads/up_1/parts", Access::Scope(Files)),
            ("POST", "/v1/batches", Access::Scope(Batches)),
            ("POST", "/v1/batches/b_1/cancel", Access::Scope(Batches)),
            ("POST", "/v1/fine_tuning/jobs", Access::Scope(FineTuning)),
            (
                "GET",
                "/v1/fine_tuning/jobs/j/events",
                Access::Scope(FineTuning),
            ),
            ("POST", "/v1/assistants", Access::Scope(Assistants)),
            ("POST", "/v1/threads/t_1/runs", Access::Scope(Assistants)),
            (
                "GET",
                "/v1/vector_stores/vs_1/files",
                Access::Scope(Assistants),
            ),
            ("GET", "/v1/organization/users", Access::Never),
            ("POST", "/v1/organization/admin_api_keys", Access::Never),
            ("GET", "/v1/organization", Access::Never),
            // Not known: refused.
            ("GET", "/v1", Access::Unknown),
            ("GET", "/v1/responses", Access::Unknown),
            ("PUT", "/v1/files/f", Access::Unknown),
            ("PATCH", "/v1/chat/completions", Access::Unknown),
            ("GET", "/v1/embeddings", Access::Unknown),
            ("POST", "/v1/models", Access::Unknown),
            ("POST", "/v1/realtime/sessions", Access::Unknown),
            ("POST", "/v1/realtime/client_secrets", Access::Unknown),
            ("GET", "/v1/chat/completions/cc_1/other", Access::Unknown),
            (
                "POST",
                "/v1/chat/completions/cc_1/messages",
                Access::Unknown,
            ),
            ("HEAD", "/v1/models", Access::Unknown),
            ("GET", "/v1/Files", Access::Unknown),
        ];
        for (method, path, want) in table {
            assert_eq!(access(method, path), *want, "{method} {path}");
        }
        assert!(Access::Scope(Files).allowed_by(&[Inference, Files]));
        assert!(!Access::Scope(Files).allowed_by(&[Inference]));
        assert!(!Access::Never.allowed_by(&Scope::ALL));
        assert!(!Access::Unknown.allowed_by(&Scope::ALL));
    }

    #[test]
    fn which_calls_must_name_a_model() {
        use ModelUse::*;
        let table: &[(&str, &str, ModelUse)] = &[
            ("POST", "/v1/chat/completions", Named),
            ("POST", "/v1/completions", Named),
            ("POST", "/v1/responses", Named),
            ("POST", "/v1/responses/input_tokens", Named),
            ("POST", "/v1/embeddings", Named),
            ("POST", "/v1/moderations", Named),
            ("POST", "/v1/audio/speech", Named),
            ("POST", "/v1/audio/transcriptions", Named),
            ("POST", "/v1/audio/translations", Named),
            ("POST", "/v1/images/generations", Named),
            ("POST", "/v1/images/edits", Named),
            ("POST", "/v1/images/variations", Named),
            ("POST", "/v1/assistants", Named),
            ("POST", "/v1/assistants/asst_1", Named),
            ("POST", "/v1/threads/runs", Named),
            ("POST", "/v1/threads/thread_1/runs", Named),
            ("POST", "/v1/batches", Hidden),
            // Continuations and calls that run no model.
            (
                "POST",
                "/v1/threads/thread_1/runs/run_1/submit_tool_outputs",
                None,
            ),
            ("POST", "/v1/threads/thread_1/runs/run_1/cancel", None),
            ("POST", "/v1/threads/thread_1/runs/run_1", None),
            ("POST", "/v1/threads", None),
            ("POST", "/v1/threads/thread_1/messages", None),
            ("POST", "/v1/responses/resp_1/cancel", None),
            ("POST", "/v1/chat/completions/cc_1", None),
            ("POST", "/v1/batches/b_1/cancel", None),
            ("POST", "/v1/files", None),
            ("GET", "/v1/models", None),
            ("GET", "/v1/assistants/asst_1", None),
            ("DELETE", "/v1/assistants/asst_1", None),
            ("GET", "/v1/chat/completions", None),
        ];
        for (method, path, want) in table {
            assert_eq!(
                model_use(method, &canonicalize(path).unwrap()),
                *want,
                "{method} {path}"
            );
        }
    }

    /// Encodes every character of `s` as `%XX`.
    fn encode_all(s: &str) -> String {
        s.bytes().map(|b| format!("%{b:02X}")).collect()
    }

    fn segment() -> impl Strategy<Value = String> {
        prop_oneof![
            Just("files".to_owned()),
            Just("chat".to_owned()),
            Just("completions".to_owned()),
            Just("responses".to_owned()),
            Just("models".to_owned()),
            Just("organization".to_owned()),
            Just("fine_tuning".to_owned()),
            Just("messages".to_owned()),
            Just(".".to_owned()),
            Just("..".to_owned()),
            "[a-z_]{1,8}",
        ]
    }

    proptest! {
        /// Whatever is done to a plain path — a segment percent-encoded (wholly or one
        /// character), a slash doubled or encoded, `;` parameters, a dot segment
        /// inserted — the result is either refused or reaches exactly what the plain
        /// path reaches: never more.
        #[test]
        fn no_encoding_reaches_more_than_the_plain_path(
            segs in prop::collection::vec(segment(), 1..5),
            method in prop_oneof![Just("GET"), Just("POST"), Just("DELETE")],
            which in 0usize..5,
            pos in 0usize..16,
            mutation in 0u8..7,
        ) {
            let plain = format!("/v1/{}", segs.join("/"));
            let i = which % segs.len();
            let mut mutated = segs.clone();
            let seg = &segs[i];
            let j = pos % seg.len();
            let joined = match mutation {
                0 => { mutated[i] = encode_all(seg); mutated.join("/") }
                1 => {
                    let (a, b) = seg.split_at(j);
                    let (c, rest) = b.split_at(1);
                    mutated[i] = format!("{a}{}{rest}", encode_all(c));
                    mutated.join("/")
                }
                2 => { mutated.insert(i, String::new()); mutated.join("/") }
                3 => mutated.join("%2F"),
                4 => { mutated[i] = format!("{seg};x=1"); mutated.join("/") }
                5 => { mutated.insert(i, ".".into()); mutated.join("/") }
                _ => { mutated[i] = seg.to_ascii_uppercase(); mutated.join("/") }
            };
            let other = format!("/v1/{joined}");
            let plain_access = canonicalize(&plain).map(|p| classify(method, &p));
            if let Ok(p) = canonicalize(&other) {
                let got = classify(method, &p);
                // Anything that passed either is the plain path itself, or reaches
                // nothing, or reaches the same as the plain path.
                let same = plain_access == Ok(got);
                prop_assert!(
                    same || matches!(got, Access::Unknown | Access::Never) ,
                    "{other} → {got:?} but {plain} → {plain_access:?}"
                );
            }
        }

        /// A percent-encoded byte outside ASCII anywhere in the path (an overlong
        /// `%C0%AE` dot, `%C0%AF` slash, or any other) is refused, whatever surrounds it.
        #[test]
        fn non_ascii_encodings_are_refused(
            segs in prop::collection::vec(segment(), 1..4),
            which in 0usize..4,
            pos in 0usize..16,
            byte in 0x80u8..=0xff,
            lower in any::<bool>(),
        ) {
            let i = which % segs.len();
            let mut segs = segs;
            let j = pos % (segs[i].len() + 1);
            let enc = format!("%{byte:02X}");
            let enc = if lower { enc.to_ascii_lowercase() } else { enc };
            segs[i].insert_str(j, &enc);
            let path = format!("/v1/{}", segs.join("/"));
            // Bytes are checked before segments, so this is the reason even in a
            // `.`/`..` segment.
            prop_assert_eq!(canonicalize(&path), Err(PathError::EncodedNonAscii), "{}", path);
        }

        /// Arbitrary bytes never panic, and anything accepted is returned unchanged.
        #[test]
        fn canonicalize_is_total(raw in "/v1[/%a-zA-Z0-9._~;:@!$&'()*+,=\\\\-]{0,40}") {
            if let Ok(p) = canonicalize(&raw) {
                prop_assert_eq!(p.as_str(), raw.as_str());
                prop_assert!(!p.as_str().contains("//"));
                for s in p.segments() {
                    prop_assert!(s != "." && s != "..");
                }
            }
        }
    }
}
