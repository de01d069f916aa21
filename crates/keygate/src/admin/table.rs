//! Tables for people: the admin API's JSON laid out in columns (lists) or as field /
//! value lines (one object). Scripts use `--json`, which bypasses all of this.

use comfy_table::{Table, presets};
use keygate_core::calendar::to_rfc3339;
use serde_json::Value;

/// What a grant or admin key answer says when it carries a secret.
pub const SHOWN_ONCE: &str = "This key is shown only now: keygate keeps only its hash. \
    Copy it to where it is used; if it is lost, rotate or create another.";

pub fn users(items: &[Value]) -> String {
    list(items, "users", &["ID", "NAME", "CREATED"], |u| {
        vec![
            text(&u["id"]),
            text(&u["name"]),
            time(&u["created_at"], "-"),
        ]
    })
}

pub fn user(u: &Value) -> String {
    fields(&[
        ("id", text(&u["id"])),
        ("name", text(&u["name"])),
        ("created", time(&u["created_at"], "-")),
    ])
}

pub fn grants(items: &[Value]) -> String {
    list(
        items,
        "grants",
        &[
            "ID",
            "USER",
            "NAME",
            "STATE",
            "ORIGIN",
            "MODELS",
            "PLAN",
            "EXPIRES",
            "LAST USED",
        ],
        |g| {
            vec![
                text(&g["id"]),
                text(&g["user_id"]),
                text(&g["name"]),
                text(&g["state"]),
                text(&g["origin"]),
                models(&g["models"]),
                text(&g["plan"]),
                time(&g["expires_at"], "never"),
                time(&g["last_used_at"], "never"),
            ]
        },
    )
}

pub fn grant(g: &Value) -> String {
    fields(&grant_fields(g))
}

fn grant_fields(g: &Value) -> Vec<(&'static str, String)> {
    vec![
        ("id", text(&g["id"])),
        ("user", text(&g["user_id"])),
        ("name", text(&g["name"])),
        ("state", text(&g["state"])),
        ("origin", text(&g["origin"])),
        ("models", models(&g["models"])),
        ("scopes", text(&g["scopes"])),
        ("plan", text(&g["plan"])),
        ("limits", limits(&g["limits"])),
        ("expires", time(&g["expires_at"], "never")),
        ("created", time(&g["created_at"], "-")),
        ("last used", time(&g["last_used_at"], "never")),
        ("revoked", time(&g["revoked_at"], "-")),
        ("old key valid until", time(&g["rotated_until"], "-")),
    ]
}

/// `{"api_key","base_url","grant"}`: the grant, then its key and what to do with it.
pub fn issued(v: &Value) -> String {
    let mut rows = grant_fields(&v["grant"]);
    rows.push(("base URL", text(&v["base_url"])));
    rows.push(("API key", text(&v["api_key"])));
    format!("{}\n{SHOWN_ONCE}", fields(&rows))
}

pub fn keys(items: &[Value]) -> String {
    list(
        items,
        "admin keys",
        &["ID", "NAME", "SCOPE", "CREATED", "EXPIRES"],
        |k| {
            vec![
                text(&k["id"]),
                text(&k["name"]),
                text(&k["scope"]),
                time(&k["created_at"], "-"),
                time(&k["expires_at"], "never"),
            ]
        },
    )
}

pub fn new_key(k: &Value) -> String {
    let table = fields(&[
        ("id", text(&k["id"])),
        ("name", text(&k["name"])),
        ("scope", text(&k["scope"])),
        ("created", time(&k["created_at"], "-")),
        ("expires", time(&k["expires_at"], "never")),
        ("key", text(&k["key"])),
    ]);
    format!("{table}\n{SHOWN_ONCE}")
}

/// `GET /admin/usage`: one column per group key, the counters, and a total line.
pub fn usage(v: &Value) -> String {
    let groups: Vec<String> = v["group_by"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(Value::as_str)
                .map(str::to_owned)
                .collect()
        })
        .unwrap_or_default();
    const COUNTERS: [(&str, &str); 7] = [
        ("requests", "REQUESTS"),
        ("errors", "ERRORS"),
        ("prompt_tokens", "PROMPT"),
        ("cached_tokens", "CACHED"),
        ("completion_tokens", "COMPLETION"),
        ("usd", "USD"),
        ("estimated", "ESTIMATED"),
    ];
    let mut header: Vec<String> = groups.iter().map(|g| g.to_uppercase()).collect();
    header.extend(COUNTERS.iter().map(|(_, h)| (*h).to_owned()));
    let counters = |row: &Value| -> Vec<String> {
        COUNTERS
            .iter()
            .map(|(k, _)| match *k {
                "usd" => dollars(&row[*k]),
                _ => text(&row[*k]),
            })
            .collect()
    };
    let mut table = new_table(header);
    let rows = v["rows"].as_array().map(Vec::as_slice).unwrap_or_default();
    for row in rows {
        let mut cells: Vec<String> = groups.iter().map(|g| text(&row[g.as_str()])).collect();
        cells.extend(counters(row));
        table.add_row(cells);
    }
    if !groups.is_empty() {
        let mut cells: Vec<String> = vec![String::new(); groups.len()];
        cells[0] = "TOTAL".into();
        cells.extend(counters(&v["total"]));
        table.add_row(cells);
    } else if rows.is_empty() {
        table.add_row(counters(&v["total"]));
    }
    format!(
        "usage from {} to {} (UTC days)\n{}",
        text(&v["from"]),
        text(&v["to"]),
        render(&table)
    )
}

/// `GET /admin/audit`: newest first, one line per entry.
pub fn audit(items: &[Value]) -> String {
    list(
        items,
        "audit entries",
        &[
            "AT",
            "ACTION",
            "ACTOR",
            "USER",
            "TARGET",
            "SOURCE IP",
            "DETAIL",
        ],
        |e| {
            let actor = match (e["actor"]["kind"].as_str(), e["actor"]["id"].as_str()) {
                (Some(kind), Some(id)) => format!("{kind} {id}"),
                (Some(kind), None) => kind.to_owned(),
                _ => "-".into(),
            };
            let target = match (e["target"]["kind"].as_str(), e["target"]["id"].as_str()) {
                (Some(kind), Some(id)) => format!("{kind} {id}"),
                (Some(kind), None) => kind.to_owned(),
                _ => "-".into(),
            };
            vec![
                text(&e["at"]),
                text(&e["action"]),
                actor,
                text(&e["user"]),
                target,
                text(&e["source_ip"]),
                text(&e["detail"]),
            ]
        },
    )
}

/// `GET /admin/operator-key`: whether one is set, its master key id and when.
pub fn operator_key(v: &Value) -> String {
    if v["set"].as_bool() == Some(true) {
        fields(&[
            ("operator key", "set".into()),
            ("sealed under", text(&v["kid"])),
            ("updated", time(&v["updated_at"], "-")),
        ])
    } else {
        "No operator key is set.".into()
    }
}

// --- building blocks ---------------------------------------------------------------

fn list(
    items: &[Value],
    what: &str,
    header: &[&str],
    row: impl Fn(&Value) -> Vec<String>,
) -> String {
    if items.is_empty() {
        return format!("No {what}.");
    }
    let mut table = new_table(header.iter().map(|h| (*h).to_owned()).collect());
    for item in items {
        table.add_row(row(item));
    }
    render(&table)
}

/// Field / value lines for one object.
fn fields(rows: &[(&str, String)]) -> String {
    let mut table = Table::new();
    table.load_preset(presets::NOTHING);
    for (k, v) in rows {
        table.add_row(vec![(*k).to_owned(), v.clone()]);
    }
    render(&table)
}

/// Columns separated by two spaces, no borders: readable, and easy to cut with awk.
fn new_table(header: Vec<String>) -> Table {
    let mut table = Table::new();
    table.load_preset(presets::NOTHING).set_header(header);
    table
}

fn render(table: &Table) -> String {
    let mut table = table.clone();
    let n = table.column_count();
    for (i, col) in table.column_iter_mut().enumerate() {
        col.set_padding((0, if i + 1 == n { 0 } else { 2 }));
    }
    table
        .to_string()
        .lines()
        .map(str::trim_end)
        .collect::<Vec<_>>()
        .join("\n")
}

/// A JSON value in a cell: strings as they are, `null` as `-`, lists joined by commas,
/// objects as `key=value` pairs. Control characters become spaces, so a name cannot
/// move the cursor or break the table.
fn text(v: &Value) -> String {
    let s = match v {
        Value::Null => "-".to_owned(),
        Value::String(s) => s.clone(),
        Value::Array(a) if a.is_empty() => "-".to_owned(),
        Value::Array(a) => a.iter().map(text).collect::<Vec<_>>().join(", "),
        Value::Object(m) => m
            .iter()
            .filter(|(_, v)| !v.is_null())
            .map(|(k, v)| match v {
                Value::Object(_) | Value::Array(_) => format!("{k}={v}"),
                _ => format!("{k}={}", text(v)),
            })
            .collect::<Vec<_>>()
            .join(" "),
        other => other.to_string(),
    };
    s.chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect()
}

/// Unix seconds as RFC 3339 UTC; strings (already RFC 3339) as they are.
fn time(v: &Value, none: &str) -> String {
    match v {
        Value::Null => none.to_owned(),
        Value::Number(n) => n.as_u64().map(to_rfc3339).unwrap_or_else(|| n.to_string()),
        other => text(other),
    }
}

/// A grant's `models`: `[]` means every model.
fn models(v: &Value) -> String {
    match v.as_array() {
        Some(a) if a.is_empty() => "all".into(),
        _ => text(v),
    }
}

fn dollars(v: &Value) -> String {
    match v.as_f64() {
        Some(usd) => format!("${usd:.6}")
            .trim_end_matches('0')
            .trim_end_matches('.')
            .to_owned(),
        None => text(v),
    }
}

/// A grant's limits in a few words: `rpm 60, budget $5/month, per model: gpt-4o`.
fn limits(v: &Value) -> String {
    let mut parts = Vec::new();
    for (key, name) in [
        ("rpm", "rpm"),
        ("tpm", "tpm"),
        ("max_concurrency", "concurrency"),
    ] {
        if let Some(n) = v[key].as_u64() {
            parts.push(format!("{name} {n}"));
        }
    }
    let budget = &v["budget"];
    if budget.is_object() {
        let period = budget["period"].as_str().unwrap_or("period");
        if !budget["usd"].is_null() {
            parts.push(format!("budget {}/{period}", dollars(&budget["usd"])));
        }
        if let Some(t) = budget["tokens"].as_u64() {
            parts.push(format!("budget {t} tokens/{period}"));
        }
    }
    if let Some(m) = v["models"].as_object().filter(|m| !m.is_empty()) {
        let names: Vec<&str> = m.keys().map(String::as_str).collect();
        parts.push(format!("per model: {}", names.join(", ")));
    }
    if parts.is_empty() {
        "none".into()
    } else {
        parts.join(", ")
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn lists_have_a_header_and_a_line_per_item() {
        let out = users(&[
            json!({"id": "aaaa", "name": "Ada", "created_at": 0}),
            json!({"id": "bbbb", "name": "Bob\nEvil", "created_at": 86400}),
        ]);
        let lines: Vec<&str> = out.lines().collect();
        assert_eq!(lines.len(), 3, "{out}");
        assert!(lines[0].starts_with("ID") && lines[0].contains("NAME"));
        assert!(lines[1].starts_with("aaaa") && lines[1].contains("1970-01-01T00:00:00Z"));
        assert!(lines[2].contains("Bob Evil"), "{out}");
        assert_eq!(users(&[]), "No users.");
    }

    #[test]
    fn limits_and_money_in_words() {
        let l = json!({"rpm": 60, "tpm": null, "max_concurrency": 2,
                       "budget": {"usd": 5.0, "tokens": null, "period": "month"},
                       "models": {"gpt-4o": {"rpm": 1}}});
        assert_eq!(
            limits(&l),
            "rpm 60, concurrency 2, budget $5/month, per model: gpt-4o"
        );
        assert_eq!(limits(&json!({})), "none");
        assert_eq!(dollars(&json!(0.0000126)), "$0.000013");
        assert_eq!(dollars(&json!(0)), "$0");
    }

    #[test]
    fn usage_has_group_columns_and_a_total() {
        let v = json!({"from": "2026-11-01", "to": "2026-11-30", "group_by": ["user", "day"],
            "rows": [{"user": "u1", "day": "2026-11-30", "requests": 3, "errors": 0,
                      "prompt_tokens": 24, "cached_tokens": 0, "completion_tokens": 15,
                      "usd": 0.5, "estimated": 0}],
            "total": {"requests": 3, "errors": 0, "prompt_tokens": 24, "cached_tokens": 0,
                      "completion_tokens": 15, "usd": 0.5, "estimated": 0}});
        let out = usage(&v);
        let lines: Vec<&str> = out.lines().collect();
        assert!(
            lines[1].starts_with("USER") && lines[1].contains("DAY"),
            "{out}"
        );
        assert!(
            lines[2].starts_with("u1") && lines[2].contains("$0.5"),
            "{out}"
        );
        assert!(lines[3].starts_with("TOTAL"), "{out}");
    }
}
