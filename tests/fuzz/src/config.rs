//! The config loader: a TOML file read by `RawConfig::load` (figment, unknown keys
//! refused) and checked by `RawConfig::validate`, exactly as `keygate serve --config`
//! does (plus any `KEYGATE_*` variable of the fuzzing process: none in CI).
//!
//! A case is a document built from `data`: known settings with values of every type,
//! `[plans.NAME]` and `[prices."MODEL"]` tables with right and wrong fields, unknown
//! and misspelt keys, the secret settings (`admin_key`, `metrics_token`,
//! `master_keys`) holding a canary as a string or a number, and raw bytes.
//!
//! Invariants: nothing panics; every problem reported names where it is — a dotted
//! key (`plans.free.budget.usd`, `` `admin_key` in FILE ``, `listen
//! (KEYGATE_LISTEN)`) or, for a document that is not TOML, the file with a line and
//! column (or, for a file that is not UTF-8, the file); and no message repeats the
//! value of a secret setting.

use std::io::Write;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicUsize, Ordering};

use keygate_server::RawConfig;
use keygate_server::config::SETTINGS;

use crate::Input;

/// The secret settings' value in a case: found in an error message, it leaked.
const CANARY: &str = "739146281055293746";

const SECRETS: [&str; 3] = ["admin_key", "metrics_token", "master_keys"];

fn dir() -> &'static tempfile::TempDir {
    static DIR: OnceLock<tempfile::TempDir> = OnceLock::new();
    DIR.get_or_init(|| tempfile::tempdir().expect("a temp dir"))
}

/// One fuzz case.
pub fn check(data: &[u8]) {
    let mut input = Input::new(data);
    let doc = if input.byte().is_multiple_of(8) {
        input.rest().to_vec()
    } else {
        build(&mut input).into_bytes()
    };
    check_document(&doc);
}

/// Loads and validates `doc` as a config file; checks what is reported.
pub fn check_document(doc: &[u8]) {
    static N: AtomicUsize = AtomicUsize::new(0);
    let path = dir().path().join(format!(
        "keygate-{}.toml",
        N.fetch_add(1, Ordering::Relaxed)
    ));
    {
        let mut f = std::fs::File::create(&path).expect("create");
        f.write_all(doc).expect("write");
    }
    let result = RawConfig::load(Some(&path)).and_then(RawConfig::validate);
    let _ = std::fs::remove_file(&path);
    let Err(e) = result else { return };
    let file = path.display().to_string();
    let text = String::from_utf8_lossy(doc);
    assert!(!e.0.is_empty(), "an error without a problem");
    for problem in &e.0 {
        assert!(
            !problem.contains(CANARY),
            "a secret setting's value is in the error: {problem}\n--- document ---\n{text}"
        );
        assert!(
            names_where(problem, &file),
            "the problem does not name its setting: {problem}\n--- document ---\n{text}"
        );
    }
}

/// Whether `problem` says where it is (see the module docs).
fn names_where(problem: &str, file: &str) -> bool {
    // Read from the file: "`a.b.c` in FILE: …", or FILE itself for a syntax error.
    if let Some(rest) = problem.strip_prefix('`') {
        let Some((key, after)) = rest.split_once('`') else {
            return false;
        };
        return !key.is_empty() && after.starts_with(&format!(" in {file}: "));
    }
    if let Some(rest) = problem.strip_prefix(file) {
        // A TOML syntax error says where; a file that is not UTF-8 is wrong as a whole.
        return rest.starts_with(": ") && (rest.contains("line ") || rest.contains("valid UTF-8"));
    }
    // Checked after reading: "setting (KEYGATE_SETTING): …" or "plans.NAME…: …".
    if let Some((head, _)) = problem.split_once(": ") {
        if let Some((setting, env)) = head.split_once(" (") {
            return SETTINGS.iter().any(|s| s.key == setting)
                && env == format!("{})", s_env(setting));
        }
        // A plan's name is the operator's own text and may hold anything.
        return head.starts_with("plans.");
    }
    false
}

fn s_env(setting: &str) -> String {
    format!("KEYGATE_{}", setting.to_ascii_uppercase())
}

/// A TOML document of up to 16 settings and tables.
fn build(input: &mut Input<'_>) -> String {
    let mut top = String::new();
    let mut tables = String::new();
    for _ in 0..input.below(16) {
        match input.byte() % 10 {
            0..=3 => {
                let s = &SETTINGS[input.below(SETTINGS.len())];
                top.push_str(&format!("{} = {}\n", s.key, value(input)));
            }
            4 => {
                let key = SECRETS[input.below(SECRETS.len())];
                let v = match input.byte() % 4 {
                    0 => CANARY.to_owned(),
                    1 => format!("\"{CANARY}{CANARY}\""),
                    2 => format!("[\"{CANARY}\"]"),
                    // Unterminated: a syntax error on the secret's own line.
                    _ => format!("\"{CANARY}"),
                };
                top.push_str(&format!("{key} = {v}\n"));
            }
            5 => {
                // A misspelt or unknown key.
                let s = &SETTINGS[input.below(SETTINGS.len())];
                let mut k = s.key.to_owned();
                if input.bool() {
                    k.pop();
                } else {
                    k.push('s');
                }
                top.push_str(&format!("{k} = {}\n", value(input)));
            }
            6 | 7 => {
                let name = ["free", "pro", "bad name", "x", ""][input.below(5)];
                tables.push_str(&format!("[plans.\"{name}\"]\n"));
                for _ in 0..input.below(5) {
                    let field = [
                        "rpm",
                        "tpm",
                        "max_concurrency",
                        "default_max_tokens",
                        "requires_own_key",
                        "allow_own_key",
                        "use_operator_key",
                        "budget",
                        "models",
                        "colour",
                    ][input.below(10)];
                    tables.push_str(&format!("{field} = {}\n", value(input)));
                }
                if input.bool() {
                    tables.push_str(&format!(
                        "[plans.\"{name}\".budget]\nusd = {}\nperiod = {}\n",
                        value(input),
                        value(input)
                    ));
                }
                if input.bool() {
                    tables.push_str(&format!(
                        "[plans.\"{name}\".models.\"gpt-4o\"]\nrpm = {}\n",
                        value(input)
                    ));
                }
            }
            8 => {
                tables.push_str("[prices.\"gpt-fuzz\"]\n");
                for field in [
                    "input_per_mtok",
                    "output_per_mtok",
                    "cached_input_per_mtok",
                    "x",
                ] {
                    if input.bool() {
                        tables.push_str(&format!("{field} = {}\n", value(input)));
                    }
                }
            }
            _ => {
                let raw = String::from_utf8_lossy(input.bytes(40)).into_owned();
                top.push_str(&raw);
                top.push('\n');
            }
        }
    }
    top + &tables
}

/// A TOML value of some type, often a plausible one for a setting.
fn value(input: &mut Input<'_>) -> String {
    match input.byte() % 14 {
        0 => "0".into(),
        1 => "1".into(),
        2 => "-1".into(),
        3 => "4294967296".into(),
        4 => "true".into(),
        5 => "2.5".into(),
        6 => "\"\"".into(),
        7 => "\"127.0.0.1:8080\"".into(),
        8 => "\"https://example.com/v1\"".into(),
        9 => "\"day\"".into(),
        10 => "[1, 2]".into(),
        11 => "{ a = 1 }".into(),
        12 => "\"json\"".into(),
        _ => format!("{}", input.below(100_000)),
    }
}
