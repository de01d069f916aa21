//! Typed configuration. A TOML file plus `KEYGATE_*` environment variables (which win)
//! deserialise into [`RawConfig`] (unknown keys are errors); [`RawConfig::validate`]
//! turns it into [`Config`], reporting every problem at once, before any port opens.

use keygate_core::limits::Plan;
use keygate_core::price::{Price, PriceTable};
use keygate_core::time::Clock;
use std::collections::BTreeMap;
use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use figment::Figment;
use figment::providers::{Format, Serialized, Toml};
use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;
use url::Url;

const DEFAULT_UPSTREAM: &str = "https://api.openai.com/v1";
pub const MIN_ADMIN_KEY_LEN: usize = 32;

/// The configuration as written: every field optional, defaults applied in `validate`.
/// The admin and master keys are typed secrets: `Debug` prints `[REDACTED]` for them
/// (secrecy's own `Debug`), and nothing here can be serialised back out.
#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawConfig {
    pub data_dir: Option<PathBuf>,
    pub listen: Option<String>,
    pub public_url: Option<String>,
    pub upstream_url: Option<String>,
    pub admin_key: Option<SecretString>,
    pub metrics_token: Option<SecretString>,
    pub master_keys: Option<SecretString>,
    pub max_body_bytes: Option<u64>,
    pub upstream_connect_timeout_ms: Option<u64>,
    pub upstream_first_byte_timeout_ms: Option<u64>,
    pub upstream_idle_timeout_ms: Option<u64>,
    pub client_head_timeout_ms: Option<u64>,
    pub client_body_idle_timeout_ms: Option<u64>,
    pub client_body_timeout_secs: Option<u64>,
    pub shutdown_timeout_secs: Option<u64>,
    pub workers: Option<usize>,
    pub store_cache_bytes: Option<u64>,
    /// `postgres://…`: the shared PostgreSQL store (unset: sled in `data_dir`). A
    /// secret: the URL may hold a password.
    pub store_url: Option<SecretString>,
    pub log_format: Option<String>,
    pub rp_id: Option<String>,
    pub rp_origin: Option<String>,
    pub session_idle_timeout_secs: Option<u64>,
    pub session_absolute_timeout_secs: Option<u64>,
    pub ceremony_ttl_secs: Option<u64>,
    pub fresh_window_secs: Option<u64>,
    pub validate_openai_keys: Option<bool>,
    /// Extra inbound header names forwarded to the upstream (comma list).
    pub forward_headers: Option<String>,
    pub auth_rate_per_minute: Option<u64>,
    pub auth_burst: Option<u64>,
    pub max_ceremonies: Option<u64>,
    pub admin_failures_per_minute: Option<u64>,
    pub trusted_proxies: Option<String>,
    /// `[prices."MODEL"]`: USD per million tokens, over the built-in table.
    pub prices: Option<BTreeMap<String, Price>>,
    /// `[plans.NAME]`: limits a grant on the plan gets.
    pub plans: Option<BTreeMap<String, Plan>>,
    /// The plan of a grant whose app asked for none.
    pub default_plan: Option<String>,
    /// How long the old key of a reconnected app keeps working.
    pub reconnect_grace_secs: Option<u64>,
    /// Audit entries older than this many days are swept (unset: kept forever).
    pub audit_retention_days: Option<u64>,
}

/// The checked configuration.
pub struct Config {
    pub data_dir: PathBuf,
    pub listen: SocketAddr,
    /// Origin (and optional path prefix) under which people and apps reach keygate,
    /// without a trailing slash.
    pub public_url: Url,
    /// False when `public_url` was derived from `listen`; then it follows the port
    /// actually bound (port 0 in tests).
    pub public_url_explicit: bool,
    /// The OpenAI-compatible API base, without a trailing slash.
    pub upstream_url: Url,
    pub admin_key: Option<SecretString>,
    /// Bearer token `GET /metrics` requires; `None`: open.
    pub metrics_token: Option<SecretString>,
    /// `KEYGATE_MASTER_KEYS`; when absent the key file in `data_dir` is used.
    pub master_keys: Option<SecretString>,
    pub max_body_bytes: u64,
    pub upstream: UpstreamTimeouts,
    /// How long a client may take to send a request head and body (slow clients).
    pub client: crate::client_deadline::ClientDeadlines,
    pub shutdown_timeout: Duration,
    /// HTTP worker threads; `None` = one per core.
    pub workers: Option<usize>,
    pub store_cache_bytes: u64,
    /// The PostgreSQL store several nodes share; `None`: sled in `data_dir`.
    pub store_url: Option<StoreUrl>,
    pub log_format: LogFormat,
    /// WebAuthn relying party id; `None` = the public URL's host.
    pub rp_id: Option<String>,
    /// WebAuthn origin; `None` = the public URL's origin.
    pub rp_origin: Option<Url>,
    pub session_idle_timeout: Duration,
    pub session_absolute_timeout: Duration,
    pub ceremony_ttl: Duration,
    /// How long a passkey assertion counts as fresh for sensitive actions.
    pub fresh_window: Duration,
    /// Check a pasted OpenAI key against the upstream's `/models` before storing it.
    pub validate_openai_keys: bool,
    /// Inbound header names forwarded upstream besides the built-in allowlist
    /// (`proxy::headers`), lowercase; never a credential, cookie or client address.
    pub forward_headers: Vec<String>,
    /// Anonymous passkey traffic and admin-key failures, per client address.
    pub throttle: ThrottleSettings,
    /// Model prices: built-in table plus `[prices]`.
    pub prices: PriceTable,
    /// Named plans from the config file.
    pub plans: BTreeMap<String, Plan>,
    /// The plan of a grant whose app asked for none; must name a plan in `plans`.
    pub default_plan: Option<String>,
    /// When an app reconnects from the same origin (connect `reuse_grant_id`), its old
    /// key keeps working this long (a rotation with grace), so a tab still using it is
    /// not cut off mid-conversation.
    pub reconnect_grace_secs: u64,
    /// How long audit entries are kept (`None`: forever); the minute sweeper removes
    /// older ones.
    pub audit_retention: Option<Duration>,
    /// Where the server reads "now" (expiry, freshness, sweeps, `created_at`): the system
    /// clock, unless a test put a manual one here before building the application.
    pub clock: Clock,
}

/// Per-address limits (see `throttle.rs` and docs/CONFIG.md).
#[derive(Clone, Debug)]
pub struct ThrottleSettings {
    /// Ceremony starts and sign-ups per minute per address; failed sign-ins have a
    /// budget of the same size.
    pub auth_per_minute: u32,
    pub auth_burst: u32,
    /// Live anonymous WebAuthn ceremonies in the store, all addresses together (a
    /// signed-in person's are bounded per person instead).
    pub max_ceremonies: usize,
    /// Wrong admin keys per minute per address (also the burst).
    pub admin_failures_per_minute: u32,
    /// Reverse proxies whose `X-Forwarded-For` is believed; empty = the peer address.
    pub trusted_proxies: Vec<IpAddr>,
}

#[derive(Clone, Copy, Debug)]
pub struct UpstreamTimeouts {
    pub connect: Duration,
    pub first_byte: Duration,
    pub idle: Duration,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LogFormat {
    Text,
    Json,
}

/// Every problem found, one per line, each naming its setting.
#[derive(Debug)]
pub struct ConfigError(pub Vec<String>);

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "invalid configuration:")?;
        for p in &self.0 {
            writeln!(f, "  - {p}")?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigError {}

impl RawConfig {
    /// Reads the optional file, then `KEYGATE_*` variables from the process environment.
    pub fn load(file: Option<&Path>) -> Result<Self, ConfigError> {
        let mut figment = Figment::new();
        if let Some(path) = file {
            if !path.is_file() {
                return Err(ConfigError(vec![format!(
                    "config file {}: not found or not a file",
                    path.display()
                )]));
            }
            figment = figment.merge(Toml::file(path));
        }
        figment = figment.merge(Serialized::defaults(env_overrides()?));
        figment.extract().map_err(|e| {
            ConfigError(
                e.into_iter()
                    .map(|e| {
                        // Name the setting where it was written: a key in the file, or
                        // the variable.
                        let file = e
                            .metadata
                            .as_ref()
                            .and_then(|m| m.source.as_ref())
                            .and_then(|s| s.file_path())
                            .map(|p| p.display().to_string());
                        // Nested keys (`[plans.free]`, `[prices."gpt-4o"]`) are named
                        // by their whole dotted path: `plans.free.budget.usd`.
                        // An empty key (`"" = 1`) is named as written, not as nothing.
                        let key = (!e.path.is_empty()).then(|| {
                            e.path
                                .iter()
                                .map(|k| if k.is_empty() { "\"\"" } else { k.as_str() })
                                .collect::<Vec<_>>()
                                .join(".")
                        });
                        let secret = e
                            .path
                            .first()
                            .and_then(|k| setting_for(k))
                            .is_some_and(|s| s.kind == Kind::Secret);
                        let name = match (key, file) {
                            (Some(k), Some(f)) => format!("`{k}` in {f}"),
                            (Some(k), None) => format!("KEYGATE_{}", k.to_ascii_uppercase()),
                            (None, Some(f)) => f,
                            (None, None) => "configuration".into(),
                        };
                        let what = match &e.kind {
                            figment::error::Kind::UnknownField(field, _) if e.path.len() > 1 => {
                                format!("unknown field `{field}`")
                            }
                            figment::error::Kind::UnknownField(field, _) => format!(
                                "unknown setting{}",
                                closest_setting(field)
                                    .map(|s| format!("; did you mean `{}`?", s.key))
                                    .unwrap_or_default()
                            ),
                            // A wrong type would be reported with the value in it.
                            _ if secret => "must be text (its value is not repeated here: \
                                             it is a secret)"
                                .to_owned(),
                            figment::error::Kind::Message(m) => without_source_lines(m),
                            other => other.to_string(),
                        };
                        format!("{name}: {what}")
                    })
                    .collect(),
            )
        })
    }

    pub fn validate(self) -> Result<Config, ConfigError> {
        let mut problems = Vec::new();
        let mut problem = |setting: &str, msg: String| {
            problems.push(format!(
                "{setting} (KEYGATE_{}): {msg}",
                setting.to_ascii_uppercase()
            ))
        };

        let listen_raw = self.listen.as_deref().unwrap_or("127.0.0.1:8080");
        let listen = match listen_raw.parse::<SocketAddr>() {
            Ok(a) => Some(a),
            Err(_) => {
                problem(
                    "listen",
                    format!("`{listen_raw}` is not an address like 127.0.0.1:8080"),
                );
                None
            }
        };

        let public_url = match (&self.public_url, listen) {
            (Some(raw), _) => parse_base_url(raw)
                .map_err(|m| problem("public_url", m))
                .ok(),
            (None, Some(addr)) => parse_base_url(&format!("http://{addr}")).ok(),
            (None, None) => None,
        };
        let upstream_url = parse_base_url(self.upstream_url.as_deref().unwrap_or(DEFAULT_UPSTREAM))
            .map_err(|m| problem("upstream_url", m))
            .ok();

        // Both are bearer secrets compared in constant time: long enough not to be
        // guessed, and printable so they survive headers and shells.
        let mut bearer = |name: &'static str, value: Option<&SecretString>| match value
            .map(|k| k.expose_secret().trim())
        {
            Some(k) if k.len() < MIN_ADMIN_KEY_LEN => {
                problem(
                    name,
                    format!(
                        "must be at least {MIN_ADMIN_KEY_LEN} characters (generate one with `openssl rand -hex 32`)"
                    ),
                );
                None
            }
            Some(k) if !k.bytes().all(|b| b.is_ascii_graphic()) => {
                problem(
                    name,
                    "may contain only printable ASCII without spaces".into(),
                );
                None
            }
            Some(k) => Some(SecretString::from(k)),
            None => None,
        };
        let admin_key = bearer("admin_key", self.admin_key.as_ref());
        let metrics_token = bearer(
            "metrics_token",
            self.metrics_token
                .as_ref()
                .filter(|t| !t.expose_secret().trim().is_empty()),
        );
        let master_keys = match self.master_keys {
            Some(text) => match keygate_core::keyring::Keyring::parse(text.expose_secret()) {
                Ok(_) => Some(text),
                Err(e) => {
                    problem("master_keys", e.to_string());
                    None
                }
            },
            None => None,
        };

        let store_url = match &self.store_url {
            Some(raw) => StoreUrl::parse(raw.expose_secret())
                .map_err(|m| problem("store_url", m))
                .ok(),
            None => None,
        };

        let max_body_bytes = self.max_body_bytes.unwrap_or(32 * 1024 * 1024);
        if max_body_bytes == 0 {
            problem("max_body_bytes", "must be greater than 0".into());
        }
        let ms =
            |v: Option<u64>, default: u64, name: &str, problem: &mut dyn FnMut(&str, String)| {
                let v = v.unwrap_or(default);
                if v == 0 {
                    problem(name, "must be greater than 0".into());
                }
                Duration::from_millis(v)
            };
        let upstream = UpstreamTimeouts {
            connect: ms(
                self.upstream_connect_timeout_ms,
                10_000,
                "upstream_connect_timeout_ms",
                &mut problem,
            ),
            first_byte: ms(
                self.upstream_first_byte_timeout_ms,
                600_000,
                "upstream_first_byte_timeout_ms",
                &mut problem,
            ),
            idle: ms(
                self.upstream_idle_timeout_ms,
                300_000,
                "upstream_idle_timeout_ms",
                &mut problem,
            ),
        };
        let client = crate::client_deadline::ClientDeadlines {
            head: ms(
                self.client_head_timeout_ms,
                10_000,
                "client_head_timeout_ms",
                &mut problem,
            ),
            body_idle: ms(
                self.client_body_idle_timeout_ms,
                30_000,
                "client_body_idle_timeout_ms",
                &mut problem,
            ),
            body: ms(
                self.client_body_timeout_secs
                    .map(|s| s.saturating_mul(1000)),
                600_000,
                "client_body_timeout_secs",
                &mut problem,
            ),
        };
        if self.workers == Some(0) {
            problem("workers", "must be at least 1".into());
        }
        let log_format = match self.log_format.as_deref().unwrap_or("text") {
            "text" => LogFormat::Text,
            "json" => LogFormat::Json,
            other => {
                problem("log_format", format!("`{other}` is not one of: text, json"));
                LogFormat::Text
            }
        };

        let rp_origin = self.rp_origin.as_deref().and_then(|raw| {
            parse_base_url(raw)
                .map_err(|m| problem("rp_origin", m))
                .ok()
        });
        let secs =
            |v: Option<u64>, default: u64, name: &str, problem: &mut dyn FnMut(&str, String)| {
                let v = v.unwrap_or(default);
                if v == 0 {
                    problem(name, "must be greater than 0".into());
                }
                Duration::from_secs(v)
            };
        let session_idle_timeout = secs(
            self.session_idle_timeout_secs,
            24 * 3600,
            "session_idle_timeout_secs",
            &mut problem,
        );
        let session_absolute_timeout = secs(
            self.session_absolute_timeout_secs,
            7 * 24 * 3600,
            "session_absolute_timeout_secs",
            &mut problem,
        );
        let ceremony_ttl = secs(
            self.ceremony_ttl_secs,
            300,
            "ceremony_ttl_secs",
            &mut problem,
        );
        let fresh_window = secs(
            self.fresh_window_secs,
            300,
            "fresh_window_secs",
            &mut problem,
        );

        let forward_headers = crate::proxy::headers::parse_forward_headers(
            self.forward_headers.as_deref().unwrap_or(""),
        )
        .unwrap_or_else(|m| {
            problem("forward_headers", m);
            Vec::new()
        });
        let positive =
            |v: Option<u64>, default: u64, name: &str, problem: &mut dyn FnMut(&str, String)| {
                let v = v.unwrap_or(default);
                match u32::try_from(v) {
                    Ok(n) if n > 0 => n,
                    _ => {
                        problem(name, format!("must be between 1 and {}", u32::MAX));
                        1
                    }
                }
            };
        let throttle = ThrottleSettings {
            auth_per_minute: positive(
                self.auth_rate_per_minute,
                30,
                "auth_rate_per_minute",
                &mut problem,
            ),
            auth_burst: positive(self.auth_burst, 30, "auth_burst", &mut problem),
            max_ceremonies: positive(self.max_ceremonies, 10_000, "max_ceremonies", &mut problem)
                as usize,
            admin_failures_per_minute: positive(
                self.admin_failures_per_minute,
                10,
                "admin_failures_per_minute",
                &mut problem,
            ),
            trusted_proxies: parse_ip_list(self.trusted_proxies.as_deref().unwrap_or(""))
                .unwrap_or_else(|bad| {
                    problem(
                        "trusted_proxies",
                        format!(
                            "`{bad}` is not an IP address (give addresses separated by commas)"
                        ),
                    );
                    Vec::new()
                }),
        };

        if self
            .reconnect_grace_secs
            .is_some_and(|g| g > MAX_GRACE_SECS)
        {
            problem(
                "reconnect_grace_secs",
                format!("must be at most {MAX_GRACE_SECS} (a week)"),
            );
        }
        let audit_retention = match self.audit_retention_days {
            None => None,
            Some(d) if (1..=MAX_AUDIT_RETENTION_DAYS).contains(&d) => {
                Some(Duration::from_secs(d * 86_400))
            }
            Some(_) => {
                problem(
                    "audit_retention_days",
                    format!(
                        "must be a whole number of days from 1 to {MAX_AUDIT_RETENTION_DAYS} \
                         (leave it unset to keep the audit log forever)"
                    ),
                );
                None
            }
        };
        let plans = self.plans.unwrap_or_default();
        problems.extend(plan_problems(&plans, self.default_plan.as_deref()));

        match (listen, public_url, upstream_url) {
            (Some(listen), Some(public_url), Some(upstream_url)) if problems.is_empty() => {
                Ok(Config {
                    data_dir: self
                        .data_dir
                        .unwrap_or_else(|| PathBuf::from("./keygate-data")),
                    listen,
                    public_url,
                    public_url_explicit: self.public_url.is_some(),
                    upstream_url,
                    admin_key,
                    metrics_token,
                    master_keys,
                    max_body_bytes,
                    upstream,
                    client,
                    shutdown_timeout: Duration::from_secs(self.shutdown_timeout_secs.unwrap_or(30)),
                    workers: self.workers,
                    store_cache_bytes: self.store_cache_bytes.unwrap_or(16 * 1024 * 1024),
                    store_url,
                    log_format,
                    rp_id: self.rp_id,
                    rp_origin,
                    session_idle_timeout,
                    session_absolute_timeout,
                    ceremony_ttl,
                    fresh_window,
                    validate_openai_keys: self.validate_openai_keys.unwrap_or(true),
                    forward_headers,
                    throttle,
                    prices: PriceTable::builtin().with(self.prices.unwrap_or_default()),
                    plans,
                    default_plan: self.default_plan,
                    reconnect_grace_secs: self.reconnect_grace_secs.unwrap_or(600),
                    audit_retention,
                    clock: Clock::system(),
                })
            }
            _ => Err(ConfigError(problems)),
        }
    }
}

/// The longest `audit_retention_days` (a hundred years: "forever" is leaving it unset).
pub const MAX_AUDIT_RETENTION_DAYS: u64 = 36_500;

/// Longest grace a rotation may give the old key (also `reconnect_grace_secs`): a week.
pub const MAX_GRACE_SECS: u64 = 7 * 24 * 3600;

/// What is wrong with `[plans.NAME]` and `default_plan`, each naming its key
/// (`plans.free.budget.usd: ...`). Types, negative numbers and unknown fields were
/// already refused when the file was read; this checks what serde cannot.
fn plan_problems(plans: &BTreeMap<String, Plan>, default_plan: Option<&str>) -> Vec<String> {
    let mut out = Vec::new();
    for (name, plan) in plans {
        if !is_plan_name(name) {
            out.push(format!(
                "plans.{name}: a plan name is 1–64 letters, digits, `-`, `_` or `.`"
            ));
        }
        if let Err(e) = plan.limits().validate() {
            let field = e.field.strip_prefix("limits").unwrap_or(&e.field);
            out.push(format!("plans.{name}{field}: {}", e.message));
        }
        if plan.default_max_tokens == Some(0) {
            out.push(format!(
                "plans.{name}.default_max_tokens: must be at least 1"
            ));
        }
        if plan.requires_own_key && !plan.allows_own_key() {
            out.push(format!(
                "plans.{name}.requires_own_key: a plan cannot require the caller's own key \
                 and forbid it (allow_own_key = false)"
            ));
        }
        if plan.requires_own_key && plan.use_operator_key {
            out.push(format!(
                "plans.{name}.use_operator_key: a plan that requires the caller's own key \
                 (requires_own_key = true) never uses a stored key, the operator's included"
            ));
        }
    }
    if let Some(d) = default_plan
        && !plans.contains_key(d)
    {
        let known = if plans.is_empty() {
            "no plans are configured".to_owned()
        } else {
            format!(
                "the plans are: {}",
                plans.keys().cloned().collect::<Vec<_>>().join(", ")
            )
        };
        out.push(format!(
            "default_plan (KEYGATE_DEFAULT_PLAN): no plan named \"{d}\" ({known})"
        ));
    }
    out
}

/// A TOML syntax error without the lines of the file it quotes: the line at fault
/// may hold a secret (an unterminated `admin_key = "…` or `master_keys`), and the
/// error goes to the terminal and the service's logs. The position and the reason stay:
/// `TOML parse error at line 4, column 34: invalid basic string`.
fn without_source_lines(message: &str) -> String {
    let quoted = |line: &str| {
        let t = line.trim_start();
        t.starts_with('|')
            || t.split_once(" |")
                .is_some_and(|(n, _)| n.parse::<u64>().is_ok())
    };
    message
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !quoted(l))
        .collect::<Vec<_>>()
        .join(": ")
}

/// A plan name as apps send it (`plan` in the connect flow): 1–64 of `[A-Za-z0-9._-]`.
pub fn is_plan_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
}

/// `KEYGATE_*` variables as a map of typed values. Read by hand rather than through
/// figment's `Env`, which guesses types from the text: a numeric admin key must stay a
/// string, and a mistyped variable name must be an error, not silently ignored.
fn env_overrides() -> Result<serde_json::Map<String, serde_json::Value>, ConfigError> {
    let mut map = serde_json::Map::new();
    let mut problems = Vec::new();
    for (name, value) in std::env::vars_os() {
        let Some(name) = name.to_str() else { continue };
        let Some(key) = name.strip_prefix("KEYGATE_") else {
            continue;
        };
        let key = key.to_ascii_lowercase();
        // KEYGATE_CONFIG names the file; KEYGATE_URL is where `keygate admin` finds a
        // running server. Neither is a server setting, and both may be set in the
        // shell an operator starts the server from.
        if key == "config" || key == "url" {
            continue;
        }
        let Some(value) = value.to_str() else {
            problems.push(format!("{name}: not valid UTF-8"));
            continue;
        };
        let Some(setting) = setting_for(&key) else {
            let hint = closest_setting(&key)
                .map(|s| format!("did you mean {}? ", s.env()))
                .unwrap_or_default();
            problems.push(format!(
                "{name}: unknown setting; {hint}(`keygate serve --help` lists them all)"
            ));
            continue;
        };
        match setting.kind {
            Kind::Bool => match value.trim().to_ascii_lowercase().as_str() {
                "true" | "1" | "yes" => {
                    map.insert(key, true.into());
                }
                "false" | "0" | "no" => {
                    map.insert(key, false.into());
                }
                _ => problems.push(format!("{name}: `{value}` is not true or false")),
            },
            Kind::Number => match value.trim().parse::<u64>() {
                Ok(n) => {
                    map.insert(key, n.into());
                }
                Err(_) => problems.push(format!("{name}: `{value}` is not a whole number")),
            },
            Kind::Text | Kind::Secret => {
                map.insert(key, value.into());
            }
        }
    }
    if problems.is_empty() {
        Ok(map)
    } else {
        Err(ConfigError(problems))
    }
}

/// How a `KEYGATE_*` value is read.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Text,
    Number,
    Bool,
    /// Text that is never echoed.
    Secret,
}

/// One setting: its TOML key (the variable is `KEYGATE_` + the key in capitals), how
/// its value is read, its default, and one line on what it does. The one list behind
/// the variables accepted, `keygate serve --help`, and docs/CONFIG.md.
#[derive(Clone, Copy, Debug)]
pub struct Setting {
    pub key: &'static str,
    pub kind: Kind,
    pub default: &'static str,
    pub meaning: &'static str,
}

impl Setting {
    /// The environment variable for this setting.
    pub fn env(&self) -> String {
        format!("KEYGATE_{}", self.key.to_ascii_uppercase())
    }
}

const fn setting(
    key: &'static str,
    kind: Kind,
    default: &'static str,
    meaning: &'static str,
) -> Setting {
    Setting {
        key,
        kind,
        default,
        meaning,
    }
}

/// Every setting, in the order `keygate serve --help` lists them.
pub const SETTINGS: &[Setting] = &[
    setting(
        "data_dir",
        Kind::Text,
        "./keygate-data",
        "master key file and store",
    ),
    setting(
        "listen",
        Kind::Text,
        "127.0.0.1:8080",
        "address to listen on",
    ),
    setting(
        "public_url",
        Kind::Text,
        "http:// + listen",
        "where people and apps reach keygate (passkeys need a host name)",
    ),
    setting(
        "upstream_url",
        Kind::Text,
        DEFAULT_UPSTREAM,
        "the OpenAI-compatible API to forward to",
    ),
    setting(
        "admin_key",
        Kind::Secret,
        "unset: admin API off",
        "bearer key for /admin/*, at least 32 characters",
    ),
    setting(
        "metrics_token",
        Kind::Secret,
        "unset: /metrics open",
        "bearer token GET /metrics requires",
    ),
    setting(
        "master_keys",
        Kind::Secret,
        "unset: the key file",
        "kid:base64url(32 bytes), comma-separated, first active",
    ),
    setting(
        "max_body_bytes",
        Kind::Number,
        "33554432",
        "largest request body the proxy accepts",
    ),
    setting(
        "upstream_connect_timeout_ms",
        Kind::Number,
        "10000",
        "connecting to the upstream",
    ),
    setting(
        "upstream_first_byte_timeout_ms",
        Kind::Number,
        "600000",
        "until the upstream's response headers",
    ),
    setting(
        "upstream_idle_timeout_ms",
        Kind::Number,
        "300000",
        "silence between response chunks",
    ),
    setting(
        "client_head_timeout_ms",
        Kind::Number,
        "10000",
        "a client's request head, from connecting or its previous answer",
    ),
    setting(
        "client_body_idle_timeout_ms",
        Kind::Number,
        "30000",
        "silence inside a client's request body (408)",
    ),
    setting(
        "client_body_timeout_secs",
        Kind::Number,
        "600",
        "a client's whole request body (408)",
    ),
    setting(
        "shutdown_timeout_secs",
        Kind::Number,
        "30",
        "how long SIGTERM waits for in-flight streams",
    ),
    setting(
        "workers",
        Kind::Number,
        "one per core",
        "HTTP worker threads",
    ),
    setting(
        "store_cache_bytes",
        Kind::Number,
        "16777216",
        "sled's page cache",
    ),
    setting(
        "store_url",
        Kind::Secret,
        "unset: sled in data_dir",
        "postgres://user:password@host:port/db — a PostgreSQL store shared by several nodes",
    ),
    setting(
        "log_format",
        Kind::Text,
        "text",
        "text or json (level: RUST_LOG)",
    ),
    setting(
        "rp_id",
        Kind::Text,
        "public URL's host",
        "WebAuthn relying-party id",
    ),
    setting(
        "rp_origin",
        Kind::Text,
        "public URL's origin",
        "WebAuthn origin",
    ),
    setting(
        "session_idle_timeout_secs",
        Kind::Number,
        "86400",
        "an unused session ends",
    ),
    setting(
        "session_absolute_timeout_secs",
        Kind::Number,
        "604800",
        "a session ends regardless",
    ),
    setting(
        "fresh_window_secs",
        Kind::Number,
        "300",
        "a passkey check counts for sensitive actions",
    ),
    setting(
        "ceremony_ttl_secs",
        Kind::Number,
        "300",
        "lifetime of a passkey ceremony and a connect code",
    ),
    setting(
        "validate_openai_keys",
        Kind::Bool,
        "true",
        "check a pasted OpenAI key with the upstream first",
    ),
    setting(
        "auth_rate_per_minute",
        Kind::Number,
        "30",
        "passkey ceremony starts and sign-ups per client address (failed sign-ins: as many)",
    ),
    setting(
        "auth_burst",
        Kind::Number,
        "30",
        "how many of those may come at once",
    ),
    setting(
        "max_ceremonies",
        Kind::Number,
        "10000",
        "live anonymous passkey ceremonies (sign-up, sign-in), all clients together",
    ),
    setting(
        "admin_failures_per_minute",
        Kind::Number,
        "10",
        "wrong admin keys per client address before 429",
    ),
    setting(
        "forward_headers",
        Kind::Text,
        "none",
        "extra request header names forwarded upstream, comma-separated",
    ),
    setting(
        "trusted_proxies",
        Kind::Text,
        "none: the peer address",
        "proxy IPs whose X-Forwarded-For names the client",
    ),
    setting(
        "default_plan",
        Kind::Text,
        "none",
        "plan of a grant whose app asks for none (plans and prices: config file only)",
    ),
    setting(
        "reconnect_grace_secs",
        Kind::Number,
        "600",
        "an app reconnecting from its origin: how long its old key keeps working",
    ),
    setting(
        "audit_retention_days",
        Kind::Number,
        "none: kept forever",
        "audit log entries older than this many days are removed",
    ),
];

/// The `KEYGATE_*` settings with their defaults, for `keygate serve --help`.
pub fn env_help() -> String {
    let width = SETTINGS.iter().map(|s| s.env().len()).max().unwrap_or(0);
    let mut out = String::from(
        "Settings (KEYGATE_* environment variables, which win over the same key in lower case \
         in the --config TOML file; see docs/CONFIG.md):\n",
    );
    for s in SETTINGS {
        out.push_str(&format!(
            "  {:width$}  {} [default: {}]\n",
            s.env(),
            s.meaning,
            s.default
        ));
    }
    out
}

fn setting_for(key: &str) -> Option<&'static Setting> {
    SETTINGS.iter().find(|s| s.key == key)
}

/// The setting a mistyped key most likely meant (at most two edits away).
fn closest_setting(key: &str) -> Option<&'static Setting> {
    SETTINGS
        .iter()
        .map(|s| (edit_distance(key, s.key), s))
        .filter(|(d, _)| *d <= 2)
        .min_by_key(|(d, _)| *d)
        .map(|(_, s)| s)
}

fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut prev = row[0];
        row[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let cur = row[j + 1];
            row[j + 1] = (prev + usize::from(ca != *cb)).min(row[j] + 1).min(cur + 1);
            prev = cur;
        }
    }
    row[b.len()]
}

impl Config {
    /// The configuration the testkit uses: everything in `dir`, port 0, the given
    /// upstream, a fixed admin key.
    pub fn for_tests(dir: &Path, upstream_url: &str, admin_key: &str) -> Result<Self, ConfigError> {
        RawConfig {
            data_dir: Some(dir.to_path_buf()),
            listen: Some("127.0.0.1:0".into()),
            upstream_url: Some(upstream_url.into()),
            admin_key: Some(admin_key.into()),
            workers: Some(1),
            shutdown_timeout_secs: Some(1),
            ..RawConfig::default()
        }
        .validate()
    }

    /// The public URL's origin (`scheme://host[:port]`), which browsers send as `Origin`.
    pub fn public_origin(&self) -> String {
        self.public_url.origin().ascii_serialization()
    }

    /// The configured plan a grant names (`None`: it names none, or one this
    /// configuration no longer has).
    pub fn plan_named(&self, name: Option<&str>) -> Option<&Plan> {
        name.and_then(|n| self.plans.get(n))
    }

    /// `public_url + "/v1"`: what apps configure as their OpenAI `baseURL`.
    pub fn base_url(&self) -> String {
        format!("{}/v1", self.public_url.as_str().trim_end_matches('/'))
    }

    pub fn admin_key_exposed(&self) -> Option<&str> {
        self.admin_key.as_ref().map(|k| k.expose_secret())
    }
}

impl fmt::Debug for Config {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Config")
            .field("data_dir", &self.data_dir)
            .field("listen", &self.listen)
            .field("public_url", &self.public_url.as_str())
            .field("upstream_url", &self.upstream_url.as_str())
            .field("admin_key", &self.admin_key.as_ref().map(|_| "<set>"))
            .field(
                "metrics_token",
                &self.metrics_token.as_ref().map(|_| "<set>"),
            )
            .field("master_keys", &self.master_keys.as_ref().map(|_| "<set>"))
            .field("max_body_bytes", &self.max_body_bytes)
            .field("store_url", &self.store_url)
            .field("upstream", &self.upstream)
            .field("throttle", &self.throttle)
            .finish_non_exhaustive()
    }
}

/// The PostgreSQL store's URL. It may carry a password (in its user part or a
/// `password=` parameter), so it is a secret: `Debug` and [`StoreUrl::redacted`] show
/// only the host, port and database, and a bad value is never repeated in an error.
#[derive(Clone)]
pub struct StoreUrl(SecretString);

impl StoreUrl {
    /// A `postgres://` (or `postgresql://`) URL with a host. The message names what is
    /// wrong without quoting the value.
    pub fn parse(raw: &str) -> Result<Self, String> {
        const NOT_REPEATED: &str = "(the value is not repeated here: it may hold a password)";
        let raw = raw.trim();
        let url = Url::parse(raw).map_err(|_| {
            format!("must be a URL like postgres://user:password@host:5432/keygate {NOT_REPEATED}")
        })?;
        if !matches!(url.scheme(), "postgres" | "postgresql") {
            return Err(format!(
                "must start with postgres:// (unset it to use sled in data_dir) {NOT_REPEATED}"
            ));
        }
        if url.host_str().is_none_or(str::is_empty) {
            return Err(format!("has no host {NOT_REPEATED}"));
        }
        Ok(Self(SecretString::from(raw)))
    }

    /// The URL to connect with (password included): for `Store::connect` only.
    pub fn expose(&self) -> &str {
        self.0.expose_secret()
    }

    /// `host:port/database`, for logs and messages.
    pub fn redacted(&self) -> String {
        match Url::parse(self.0.expose_secret()) {
            Ok(url) => format!(
                "{}:{}{}",
                url.host_str().unwrap_or("?"),
                url.port().unwrap_or(5432),
                url.path()
            ),
            Err(_) => "?".to_owned(),
        }
    }
}

impl fmt::Debug for StoreUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "StoreUrl(postgres://{})", self.redacted())
    }
}

/// `"10.0.0.1, ::1"` → addresses; the first entry that is not an address on error.
fn parse_ip_list(raw: &str) -> Result<Vec<IpAddr>, String> {
    raw.split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|s| s.parse::<IpAddr>().map_err(|_| s.to_owned()))
        .collect()
}

fn parse_base_url(raw: &str) -> Result<Url, String> {
    let url = Url::parse(raw.trim()).map_err(|e| format!("`{raw}` is not a URL ({e})"))?;
    if url.scheme() != "http" && url.scheme() != "https" {
        return Err(format!("`{raw}` must start with http:// or https://"));
    }
    if url.host().is_none() {
        return Err(format!("`{raw}` has no host"));
    }
    if url.query().is_some() || url.fragment().is_some() {
        return Err(format!("`{raw}` must not have a query or fragment"));
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err(format!("`{raw}` must not contain credentials"));
    }
    // Normalise away a trailing slash so joining paths is plain concatenation.
    let trimmed = url.as_str().trim_end_matches('/').to_owned();
    Url::parse(&trimmed).map_err(|e| format!("`{raw}` is not a URL ({e})"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults() {
        let c = RawConfig::default().validate().unwrap();
        assert_eq!(c.listen.to_string(), "127.0.0.1:8080");
        assert_eq!(c.base_url(), "http://127.0.0.1:8080/v1");
        assert_eq!(c.upstream_url.as_str(), "https://api.openai.com/v1");
        assert_eq!(c.data_dir, PathBuf::from("./keygate-data"));
        assert_eq!(c.max_body_bytes, 32 * 1024 * 1024);
    }

    #[test]
    fn every_problem_is_reported_and_named() {
        let err = RawConfig {
            listen: Some("nope".into()),
            upstream_url: Some("ftp://x".into()),
            public_url: Some("https://vault.example/?q=1".into()),
            admin_key: Some("short".into()),
            master_keys: Some("k1:zz".into()),
            max_body_bytes: Some(0),
            log_format: Some("xml".into()),
            ..RawConfig::default()
        }
        .validate()
        .unwrap_err()
        .to_string();
        for name in [
            "KEYGATE_LISTEN",
            "KEYGATE_UPSTREAM_URL",
            "KEYGATE_PUBLIC_URL",
            "KEYGATE_ADMIN_KEY",
            "KEYGATE_MASTER_KEYS",
            "KEYGATE_MAX_BODY_BYTES",
            "KEYGATE_LOG_FORMAT",
        ] {
            assert!(err.contains(name), "{name} missing from: {err}");
        }
        assert!(!err.contains("short"), "admin key echoed: {err}");
    }

    #[test]
    fn public_url_trailing_slash_is_normalised() {
        let c = RawConfig {
            public_url: Some("https://vault.example/".into()),
            ..RawConfig::default()
        }
        .validate()
        .unwrap();
        assert_eq!(c.base_url(), "https://vault.example/v1");
    }

    #[test]
    fn admin_key_needs_32_characters() {
        let with = |k: &str| {
            RawConfig {
                admin_key: Some(k.into()),
                ..RawConfig::default()
            }
            .validate()
        };
        let err = with(&"k".repeat(31)).unwrap_err().to_string();
        assert!(
            err.contains("KEYGATE_ADMIN_KEY") && err.contains("32"),
            "{err}"
        );
        assert!(with(&"k".repeat(32)).is_ok());
    }

    #[test]
    fn a_metrics_token_is_held_to_the_admin_key_rule() {
        let with = |t: &str| {
            RawConfig {
                metrics_token: Some(t.into()),
                ..RawConfig::default()
            }
            .validate()
        };
        let err = with("short").unwrap_err().to_string();
        assert!(err.contains("METRICS_TOKEN") && err.contains("32"), "{err}");
        let err = with(&format!("{} x", "k".repeat(32)))
            .unwrap_err()
            .to_string();
        assert!(err.contains("printable"), "{err}");
        // Empty means "not set", as before.
        assert!(with("  ").is_ok_and(|c| c.metrics_token.is_none()));
        assert!(with(&"k".repeat(32)).is_ok_and(|c| c.metrics_token.is_some()));
    }

    #[test]
    fn raw_config_debug_redacts_the_keys() {
        let raw = RawConfig {
            admin_key: Some("admin-key-0123456789-secret-0123456789".into()),
            master_keys: Some("k1:c2VjcmV0LW1hc3Rlci1rZXktbWF0ZXJpYWwtMDAwMDAwMA".into()),
            ..RawConfig::default()
        };
        let shown = format!("{raw:?}");
        assert!(!shown.contains("0123456789"), "{shown}");
        assert!(!shown.contains("c2VjcmV0"), "{shown}");
    }

    #[test]
    fn every_setting_is_in_the_help_with_its_default() {
        let help = env_help();
        for s in SETTINGS {
            assert!(help.contains(&s.env()), "{} missing", s.env());
            assert!(help.contains(s.default), "{} default missing", s.env());
        }
        assert_eq!(closest_setting("listn").map(|s| s.key), Some("listen"));
        assert!(closest_setting("completely_else").is_none());
    }

    #[test]
    fn throttle_settings_are_checked() {
        let err = RawConfig {
            auth_rate_per_minute: Some(0),
            trusted_proxies: Some("10.0.0.1, proxy.example".into()),
            ..RawConfig::default()
        }
        .validate()
        .unwrap_err()
        .to_string();
        assert!(err.contains("KEYGATE_AUTH_RATE_PER_MINUTE"), "{err}");
        assert!(
            err.contains("KEYGATE_TRUSTED_PROXIES") && err.contains("proxy.example"),
            "{err}"
        );
        let c = RawConfig {
            trusted_proxies: Some("10.0.0.1, ::1".into()),
            ..RawConfig::default()
        }
        .validate()
        .unwrap();
        assert_eq!(c.throttle.trusted_proxies.len(), 2);
        assert_eq!(c.throttle.auth_per_minute, 30);
        assert_eq!(c.throttle.max_ceremonies, 10_000);
    }

    #[test]
    fn a_store_url_is_checked_and_never_shown() {
        const PASSWORD: &str = "pw-2b1e9c7d";
        let cfg = |url: &str| {
            RawConfig {
                store_url: Some(url.into()),
                ..RawConfig::default()
            }
            .validate()
        };
        let c = cfg(&format!(
            "postgres://kg:{PASSWORD}@db.internal:6543/keygate?sslmode=require"
        ))
        .unwrap();
        let url = c.store_url.as_ref().unwrap();
        assert_eq!(url.redacted(), "db.internal:6543/keygate");
        assert!(url.expose().contains(PASSWORD));
        let shown = format!("{c:?}");
        assert!(shown.contains("db.internal:6543/keygate"), "{shown}");
        assert!(!shown.contains(PASSWORD), "{shown}");
        // A password as a parameter is hidden too.
        let c = cfg(&format!("postgresql://db/keygate?password={PASSWORD}")).unwrap();
        assert!(!format!("{c:?}").contains(PASSWORD));
        assert_eq!(c.store_url.unwrap().redacted(), "db:5432/keygate");
        for bad in [
            format!("mysql://kg:{PASSWORD}@db/keygate"),
            format!("kg:{PASSWORD}@db/keygate"),
            format!("postgres://kg:{PASSWORD}@/keygate"),
            format!("host=db password={PASSWORD}"),
        ] {
            let err = cfg(&bad).unwrap_err().to_string();
            assert!(err.contains("KEYGATE_STORE_URL"), "{err}");
            assert!(!err.contains(PASSWORD), "{bad}: {err}");
        }
        // Written in the file with a wrong type: the value is not echoed either.
        let err = from_toml(&format!(
            "store_url = [\"postgres://kg:{PASSWORD}@db/x\"]\n"
        ))
        .unwrap_err();
        assert!(err.contains("store_url"), "{err}");
        assert!(!err.contains(PASSWORD), "{err}");
        assert!(cfg("").is_err());
        assert!(RawConfig::default().validate().unwrap().store_url.is_none());
    }

    /// Reads `toml` as a config file (plus any `KEYGATE_*` of the test process, none
    /// in CI) and validates it; the error text, or the config.
    fn from_toml(toml: &str) -> Result<Config, String> {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("keygate.toml");
        std::fs::write(&path, toml).unwrap();
        RawConfig::load(Some(&path))
            .and_then(RawConfig::validate)
            .map_err(|e| e.to_string())
    }

    /// Found by the fuzz target `config` (tests/fuzz): a TOML syntax error quoted the
    /// line at fault, and a wrong type quoted the value — an admin or master key in
    /// the terminal and the service's logs.
    #[test]
    fn errors_never_repeat_a_secret() {
        // Digits only, and small enough for a TOML integer.
        const SECRET: &str = "739146281055293746";
        for toml in [
            format!("admin_key = \"{SECRET}\nlisten = \"x\"\n"),
            format!("master_keys = \"{SECRET}\n"),
            format!("admin_key = {SECRET}\n"),
            format!("metrics_token = [\"{SECRET}\"]\n"),
            format!("master_keys = {{ k = \"{SECRET}\" }}\n"),
        ] {
            let e = from_toml(&toml).expect_err("refused");
            assert!(!e.contains(SECRET), "{e}");
        }
        // What is left still says where and why.
        fails_naming(
            &format!("admin_key = \"{SECRET}\n"),
            "TOML parse error at line 1, column",
        );
        fails_naming(&format!("admin_key = {SECRET}\n"), "`admin_key` in ");
        fails_naming(&format!("admin_key = {SECRET}\n"), "must be text");
    }

    /// Found by the fuzz target `config`: an empty key was named "``".
    #[test]
    fn an_empty_key_is_named_as_written() {
        fails_naming("'' = 'a'\n", "`\"\"` in ");
        fails_naming("[plans.free]\n\"\" = 1\n", "`plans.free.\"\"` in ");
    }

    fn fails_naming(toml: &str, needle: &str) {
        match from_toml(toml) {
            Ok(_) => panic!("accepted: {toml}"),
            Err(e) => assert!(e.contains(needle), "`{needle}` not in: {e}"),
        }
    }

    #[test]
    fn plans_are_checked_naming_the_key() {
        fails_naming(
            "[plans.free]\nrpm = 0\n",
            "plans.free.rpm: must be at least 1",
        );
        fails_naming(
            "[plans.free]\nbudget = { period = \"month\" }\n",
            "plans.free.budget: a budget needs",
        );
        fails_naming(
            "[plans.free]\nbudget = { usd = -1, period = \"month\" }\n",
            "plans.free.budget.usd",
        );
        fails_naming(
            "[plans.free]\nbudget = { usd = 1, period = \"year\" }\n",
            "plans.free.budget.period",
        );
        fails_naming(
            "[plans.free]\nbudget = { tokens = 0, period = \"day\" }\n",
            "plans.free.budget.tokens: must be at least 1",
        );
        fails_naming(
            "[plans.free]\ndefault_max_tokens = 0\n",
            "plans.free.default_max_tokens: must be at least 1",
        );
        fails_naming(
            "[plans.byok]\nrequires_own_key = true\nallow_own_key = false\n",
            "plans.byok.requires_own_key: a plan cannot require",
        );
        fails_naming(
            "[plans.byok]\nrequires_own_key = true\nuse_operator_key = true\n",
            "plans.byok.use_operator_key: a plan that requires",
        );
        fails_naming(
            "[plans.pro.models.\"gpt-4o\"]\ntpm = 0\n",
            "plans.pro.models.gpt-4o.tpm: must be at least 1",
        );
        fails_naming("[plans.free]\nrpn = 5\n", "unknown field `rpn`");
        fails_naming("[plans.free]\nrpn = 5\n", "plans.free");
        fails_naming("[plans.\"no way\"]\nrpm = 5\n", "plans.no way: a plan name");
        fails_naming("[plans.free]\nrpm = \"many\"\n", "plans.free.rpm");
    }

    #[test]
    fn default_plan_must_name_a_plan() {
        fails_naming(
            "default_plan = \"x\"\n",
            "default_plan (KEYGATE_DEFAULT_PLAN): no plan named \"x\"",
        );
        fails_naming(
            "default_plan = \"x\"\n[plans.free]\nrpm = 5\n",
            "the plans are: free",
        );
        let c = from_toml("default_plan = \"free\"\n[plans.free]\nrpm = 5\n").unwrap();
        assert_eq!(c.default_plan.as_deref(), Some("free"));
        assert_eq!(c.plans["free"].rpm, Some(5));
    }

    #[test]
    fn prices_are_checked_naming_the_key() {
        fails_naming(
            "[prices.\"gpt-4o\"]\ninput_per_mtok = -2.5\n",
            "prices.gpt-4o.input_per_mtok",
        );
        fails_naming(
            "[prices.\"gpt-4o\"]\ninput_per_mtok = 2.5\noutput_per_mtoks = 1\n",
            "unknown field `output_per_mtoks`",
        );
        fails_naming(
            "[prices.\"gpt-4o\"]\noutput_per_mtok = 1\n",
            "prices.gpt-4o",
        );
        let c = from_toml(
            "[prices.\"my-model\"]\ninput_per_mtok = 1\noutput_per_mtok = 2\n\
             [prices.\"gpt-4o\"]\ninput_per_mtok = 9\noutput_per_mtok = 9\n",
        )
        .unwrap();
        let dollars = |m: &str| c.prices.get(m).map(|p| p.input_per_mtok.dollars());
        assert_eq!(dollars("my-model"), Some(1.0));
        assert_eq!(
            dollars("gpt-4o"),
            Some(9.0),
            "the file overrides the built-in"
        );
        assert!(c.prices.get("gpt-4o-mini").is_some(), "built-ins stay");
    }

    #[test]
    fn reconnect_grace_has_a_default_and_a_ceiling() {
        assert_eq!(from_toml("").unwrap().reconnect_grace_secs, 600);
        assert_eq!(
            from_toml("reconnect_grace_secs = 0\n")
                .unwrap()
                .reconnect_grace_secs,
            0
        );
        fails_naming(
            "reconnect_grace_secs = 604801\n",
            "reconnect_grace_secs (KEYGATE_RECONNECT_GRACE_SECS): must be at most 604800",
        );
    }

    #[test]
    fn audit_retention_is_forever_unless_set() {
        assert_eq!(from_toml("").unwrap().audit_retention, None);
        assert_eq!(
            from_toml("audit_retention_days = 90\n")
                .unwrap()
                .audit_retention,
            Some(Duration::from_secs(90 * 86_400))
        );
        for bad in ["0", "36501"] {
            fails_naming(
                &format!("audit_retention_days = {bad}\n"),
                "audit_retention_days (KEYGATE_AUDIT_RETENTION_DAYS): must be a whole number of days",
            );
        }
    }

    /// The complete example in docs/CONFIG.md is a configuration that starts.
    #[test]
    fn the_documented_plans_example_is_valid() {
        let doc = include_str!("../../../docs/CONFIG.md");
        let example = doc
            .split("```toml")
            .skip(1)
            .filter_map(|block| block.split("```").next())
            .find(|block| block.contains("[plans."))
            .expect("docs/CONFIG.md has a TOML example with plans");
        let c = from_toml(example).unwrap_or_else(|e| panic!("{e}"));
        assert!(c.plans.len() >= 2, "two plans");
        assert!(
            c.plans.values().any(|p| !p.models.is_empty()),
            "per-model overrides"
        );
        assert!(c.default_plan.is_some());
    }

    #[test]
    fn debug_hides_secrets() {
        let c = RawConfig {
            // 32+ characters: the minimum admin key length (issue 9).
            admin_key: Some("admin-key-0123456789-secret-0123456789".into()),
            ..RawConfig::default()
        }
        .validate()
        .unwrap();
        assert!(!format!("{c:?}").contains("0123456789"));
    }
}
