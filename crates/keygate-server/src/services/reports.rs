//! Reports over many grants: the operator's grant list with filters (`GET
//! /admin/grants`), and usage summed by person, grant, model and/or day — everyone's
//! (`GET /admin/usage`) or one person's own (`GET /api/usage`) — as JSON or CSV.
//!
//! Usage rows are keyed by grant and outlive it; the person a row belongs to comes
//! from the store's owner records (`Store::grant_owners`), which are kept when a grant
//! is removed. Everything is read through the accounting (stored rows plus counters
//! not yet flushed), so a summary is current to the last finished request and its
//! totals equal the per-grant reports'.

use std::collections::BTreeMap;

use keygate_core::calendar;
use keygate_core::ids::{GrantId, UserId};
use keygate_core::money::Usd;
use keygate_core::origin::AppOrigin;
use keygate_store::{GrantFilter, GrantState, Store, UsageCounts};
use serde::ser::SerializeMap;
use serde::{Serialize, Serializer};

use crate::error::ServerError;
use crate::routes::page::{Page, PageRequest};
use crate::services::error::ServiceError;
use crate::services::grants::GrantView;
use crate::services::usage::day_range;
use crate::state::AppState;

// --- the operator's grant list ---------------------------------------------------

/// `GET /admin/grants` filters as sent (an empty value is no filter).
#[derive(Debug, Default)]
pub struct GrantQuery<'a> {
    pub user: Option<&'a str>,
    pub state: Option<&'a str>,
    pub origin: Option<&'a str>,
}

impl GrantQuery<'_> {
    /// The filter, or 400 naming the parameter that is not a user id, a state or an
    /// origin.
    pub fn parse(&self) -> Result<GrantFilter, ServiceError> {
        fn given(v: Option<&str>) -> Option<&str> {
            v.filter(|s| !s.is_empty())
        }
        let user = given(self.user)
            .map(|u| {
                UserId::parse(u)
                    .map_err(|_| ServiceError::invalid("user", "`user` is not a user id"))
            })
            .transpose()?;
        let state = given(self.state)
            .map(|s| match s {
                "active" => Ok(GrantState::Active),
                "disabled" => Ok(GrantState::Disabled),
                "revoked" => Ok(GrantState::Revoked),
                _ => Err(ServiceError::invalid(
                    "state",
                    "`state` must be active, disabled or revoked",
                )),
            })
            .transpose()?;
        let origin = given(self.origin)
            .map(|o| {
                AppOrigin::parse(o)
                    .map(|o| o.as_str().to_owned())
                    .map_err(|_| {
                        ServiceError::invalid(
                            "origin",
                            "`origin` must be an origin, scheme://host[:port]",
                        )
                    })
            })
            .transpose()?;
        Ok(GrantFilter {
            user,
            state,
            origin,
        })
    }
}

/// One page of every person's grants (removed ones are gone; revoked ones listed), in
/// id order, that `filter` picks.
pub async fn grants_page(
    store: &Store,
    filter: &GrantFilter,
    page: &PageRequest,
) -> Result<Page<GrantView>, ServerError> {
    let (grants, next) = store
        .grants_page(filter, page.after.as_deref(), page.limit)
        .await?;
    Ok(Page {
        items: grants.iter().map(GrantView::from).collect(),
        next,
    })
}

// --- usage summaries -------------------------------------------------------------

/// What a summary's rows are grouped by.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum GroupBy {
    User,
    Grant,
    Model,
    Day,
}

impl GroupBy {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::User => "user",
            Self::Grant => "grant",
            Self::Model => "model",
            Self::Day => "day",
        }
    }

    fn parse(s: &str) -> Option<Self> {
        [Self::User, Self::Grant, Self::Model, Self::Day]
            .into_iter()
            .find(|g| g.as_str() == s)
    }
}

/// A summary's query as sent: `from`, `to`, and every `group_by` value (each may be a
/// comma-separated list).
#[derive(Debug, Default)]
pub struct SummaryQuery {
    pub from: Option<String>,
    pub to: Option<String>,
    pub group_by: Vec<String>,
}

/// The `group_by` keys in the order asked. An unknown or empty name, or one named
/// twice (a row cannot carry a key twice), is 400 `param: "group_by"`.
pub fn parse_group_by(raw: &[String]) -> Result<Vec<GroupBy>, ServiceError> {
    let mut keys = Vec::new();
    for name in raw.iter().flat_map(|v| v.split(',')) {
        let key = GroupBy::parse(name.trim()).ok_or_else(|| {
            ServiceError::invalid(
                "group_by",
                "`group_by` takes user, grant, model and day (repeated or comma-separated)",
            )
        })?;
        if keys.contains(&key) {
            return Err(ServiceError::invalid(
                "group_by",
                format!("`group_by` names {} twice", key.as_str()),
            ));
        }
        keys.push(key);
    }
    Ok(keys)
}

/// A usage summary: rows grouped by `group_by` (no grouping: one row, the total).
#[derive(Debug, Serialize)]
pub struct UsageSummary {
    pub from: String,
    pub to: String,
    pub group_by: Vec<GroupBy>,
    pub rows: Vec<SummaryRow>,
    pub total: Counters,
}

/// One group: its keys' values (aligned with the summary's `group_by`; `None` is
/// `null`: a request that named no model, a grant whose owner cannot be known) and its
/// counters. On the wire the keys come first, in the order asked, then the counters.
#[derive(Debug)]
pub struct SummaryRow {
    pub keys: Vec<(GroupBy, Option<String>)>,
    pub counts: Counters,
}

/// Summed counters, in the wire's order and names.
#[derive(Debug, Default, Clone, Copy)]
pub struct Counters(pub UsageCounts);

/// The counters' names, in the order every row (JSON and CSV) carries them.
const COUNTER_COLUMNS: [&str; 7] = [
    "requests",
    "errors",
    "prompt_tokens",
    "cached_tokens",
    "completion_tokens",
    "usd",
    "estimated",
];

impl Counters {
    fn write<M: SerializeMap>(&self, map: &mut M) -> Result<(), M::Error> {
        let c = &self.0;
        map.serialize_entry("requests", &c.requests)?;
        map.serialize_entry("errors", &c.errors)?;
        map.serialize_entry("prompt_tokens", &c.prompt_tokens)?;
        map.serialize_entry("cached_tokens", &c.cached_tokens)?;
        map.serialize_entry("completion_tokens", &c.completion_tokens)?;
        map.serialize_entry("usd", &Usd::from_nanos(c.usd_nanos))?;
        map.serialize_entry("estimated", &c.estimated)
    }

    /// The CSV cells, in [`COUNTER_COLUMNS`] order; dollars written exactly, in
    /// decimal (never `1.26e-5`, which a spreadsheet may read as text).
    fn cells(&self) -> [String; 7] {
        let c = &self.0;
        [
            c.requests.to_string(),
            c.errors.to_string(),
            c.prompt_tokens.to_string(),
            c.cached_tokens.to_string(),
            c.completion_tokens.to_string(),
            Usd::from_nanos(c.usd_nanos).exact(),
            c.estimated.to_string(),
        ]
    }
}

impl Serialize for Counters {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut map = s.serialize_map(Some(COUNTER_COLUMNS.len()))?;
        self.write(&mut map)?;
        map.end()
    }
}

impl Serialize for SummaryRow {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut map = s.serialize_map(Some(self.keys.len() + COUNTER_COLUMNS.len()))?;
        for (key, value) in &self.keys {
            map.serialize_entry(key.as_str(), value)?;
        }
        self.counts.write(&mut map)?;
        map.end()
    }
}

/// `GET /admin/usage`: every grant's usage, removed grants' included.
pub async fn everyone(st: &AppState, q: &SummaryQuery) -> Result<UsageSummary, ServerError> {
    let (from, to) = day_range(q.from.as_deref(), q.to.as_deref(), st.clock.now())?;
    let group_by = parse_group_by(&q.group_by)?;
    // The owners are read only when asked for (one scan of a small tree).
    let owners = if group_by.contains(&GroupBy::User) {
        st.store.grant_owners().await?
    } else {
        Default::default()
    };
    let rows = st.accounting.rows_all(&st.store, from, to).await?;
    let rows = rows
        .iter()
        .map(|(grant, row)| (owners.get(grant), grant, row));
    Ok(summarize(from, to, group_by, rows))
}

/// `GET /api/usage`: the usage of every grant `user` ever had — revoked and removed
/// ones too (their rows stay theirs), never anyone else's.
pub async fn own(
    st: &AppState,
    user: &UserId,
    q: &SummaryQuery,
) -> Result<UsageSummary, ServerError> {
    let (from, to) = day_range(q.from.as_deref(), q.to.as_deref(), st.clock.now())?;
    let group_by = parse_group_by(&q.group_by)?;
    let mut rows = Vec::new();
    for grant in st.store.grant_ids_ever(user).await? {
        for row in st.accounting.rows(&st.store, &grant, from, to).await? {
            rows.push((grant.clone(), row));
        }
    }
    let rows = rows.iter().map(|(grant, row)| (Some(user), grant, row));
    Ok(summarize(from, to, group_by, rows))
}

/// Sums rows (owner, grant, row) into groups, sorted by their keys (`null` first).
fn summarize<'a>(
    from: u32,
    to: u32,
    group_by: Vec<GroupBy>,
    rows: impl Iterator<Item = (Option<&'a UserId>, &'a GrantId, &'a keygate_store::UsageRow)>,
) -> UsageSummary {
    let mut groups: BTreeMap<Vec<Option<String>>, UsageCounts> = BTreeMap::new();
    let mut total = UsageCounts::default();
    for (owner, grant, row) in rows {
        let key = group_by
            .iter()
            .map(|g| match g {
                GroupBy::User => owner.map(UserId::to_string),
                GroupBy::Grant => Some(grant.to_string()),
                GroupBy::Model => (!row.model.is_empty()).then(|| row.model.clone()),
                GroupBy::Day => Some(calendar::day_string(row.day)),
            })
            .collect();
        groups.entry(key).or_default().add(&row.counts);
        total.add(&row.counts);
    }
    if group_by.is_empty() {
        // No grouping: exactly one row, the total (zero when nothing was used).
        groups.entry(Vec::new()).or_default();
    }
    let rows = groups
        .into_iter()
        .map(|(values, counts)| SummaryRow {
            keys: group_by.iter().copied().zip(values).collect(),
            counts: Counters(counts),
        })
        .collect();
    UsageSummary {
        from: calendar::day_string(from),
        to: calendar::day_string(to),
        group_by,
        rows,
        total: Counters(total),
    }
}

// --- CSV ---------------------------------------------------------------------------

/// The summary as CSV (RFC 4180: CRLF line ends, a header line, fields quoted when
/// they hold a comma, quote or line break). The total is not a line: it is the sum of
/// the lines. Cells are neutralised against CSV injection: one starting with `=`,
/// `+`, `-`, `@`, a tab or a carriage return — which a spreadsheet could run as a
/// formula — gets a leading `'`. Model names are the app's own strings.
pub fn to_csv(summary: &UsageSummary) -> String {
    let mut out = String::new();
    let header = summary
        .group_by
        .iter()
        .map(|g| g.as_str())
        .chain(COUNTER_COLUMNS);
    line(&mut out, header);
    for row in &summary.rows {
        let keys = row.keys.iter().map(|(_, v)| v.as_deref().unwrap_or(""));
        let counters = row.counts.cells();
        line(&mut out, keys.chain(counters.iter().map(String::as_str)));
    }
    out
}

fn line<'a>(out: &mut String, cells: impl Iterator<Item = &'a str>) {
    for (i, cell) in cells.enumerate() {
        if i > 0 {
            out.push(',');
        }
        out.push_str(&csv_cell(cell));
    }
    out.push_str("\r\n");
}

fn csv_cell(raw: &str) -> String {
    let cell = if raw.starts_with(['=', '+', '-', '@', '\t', '\r']) {
        format!("'{raw}")
    } else {
        raw.to_owned()
    };
    if cell.contains([',', '"', '\r', '\n']) {
        format!("\"{}\"", cell.replace('"', "\"\""))
    } else {
        cell
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use keygate_store::UsageRow;

    fn strings(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| (*s).to_owned()).collect()
    }

    #[test]
    fn group_by_repeats_or_commas_in_the_order_asked() {
        assert_eq!(
            parse_group_by(&strings(&["user", "day"])),
            Ok(vec![GroupBy::User, GroupBy::Day])
        );
        assert_eq!(
            parse_group_by(&strings(&["model,grant", "day"])),
            Ok(vec![GroupBy::Model, GroupBy::Grant, GroupBy::Day])
        );
        assert_eq!(parse_group_by(&[]), Ok(vec![]));
        for bad in [
            &["users"][..],
            &["user,"],
            &[""],
            &["user", "user"],
            &["User"],
        ] {
            match parse_group_by(&strings(bad)) {
                Err(ServiceError::Invalid { param: Some(p), .. }) => assert_eq!(p, "group_by"),
                other => panic!("{bad:?}: {other:?}"),
            }
        }
    }

    #[test]
    fn grant_filters_name_the_bad_parameter() {
        let param = |q: GrantQuery| match q.parse() {
            Err(ServiceError::Invalid { param: Some(p), .. }) => p.into_owned(),
            other => panic!("{other:?}"),
        };
        assert_eq!(
            param(GrantQuery {
                user: Some("nope"),
                ..Default::default()
            }),
            "user"
        );
        assert_eq!(
            param(GrantQuery {
                state: Some("gone"),
                ..Default::default()
            }),
            "state"
        );
        assert_eq!(
            param(GrantQuery {
                origin: Some("https://a.example/path"),
                ..Default::default()
            }),
            "origin"
        );
        let f = GrantQuery {
            user: Some(""),
            state: Some("revoked"),
            origin: Some("https://app.example/"),
        }
        .parse()
        .unwrap();
        assert_eq!(f.user, None);
        assert_eq!(f.state, Some(GrantState::Revoked));
        assert_eq!(f.origin.as_deref(), Some("https://app.example"));
    }

    fn row(day: u32, model: &str, requests: u64, usd_nanos: u64) -> UsageRow {
        UsageRow {
            day,
            model: model.into(),
            counts: UsageCounts {
                requests,
                usd_nanos,
                ..UsageCounts::default()
            },
        }
    }

    #[test]
    fn groups_are_summed_sorted_and_total() {
        let (u, g1, g2) = (UserId::generate(), GrantId::generate(), GrantId::generate());
        let data = [
            (Some(&u), &g1, row(20_000, "gpt-4o", 1, 10)),
            (Some(&u), &g2, row(20_000, "gpt-4o", 2, 20)),
            (None, &g2, row(19_999, "", 4, 40)),
        ];
        let it = || data.iter().map(|(o, g, r)| (*o, *g, r));
        let s = summarize(19_999, 20_000, vec![GroupBy::Model], it());
        let json = serde_json::to_value(&s).unwrap();
        assert_eq!(json["rows"][0]["model"], serde_json::Value::Null);
        assert_eq!(json["rows"][1]["model"], "gpt-4o");
        assert_eq!(json["rows"][1]["requests"], 3);
        assert_eq!(json["total"]["requests"], 7);
        assert_eq!(json["group_by"], serde_json::json!(["model"]));

        let s = summarize(19_999, 20_000, vec![], it());
        assert_eq!(s.rows.len(), 1);
        assert_eq!(s.rows[0].counts.0.requests, 7);
        let empty = summarize(1, 2, vec![], std::iter::empty());
        assert_eq!(empty.rows.len(), 1);
        assert!(
            summarize(1, 2, vec![GroupBy::Day], std::iter::empty())
                .rows
                .is_empty()
        );

        // Keys first, in the order asked, then the counters.
        let s = summarize(19_999, 20_000, vec![GroupBy::Day, GroupBy::User], it());
        let text = serde_json::to_string(&s.rows[0]).unwrap();
        assert!(
            text.starts_with(r#"{"day":"2024-10-03","user":null,"requests":4,"#),
            "{text}"
        );
    }

    #[test]
    fn csv_quotes_and_neutralises_cells() {
        assert_eq!(csv_cell("gpt-4o"), "gpt-4o");
        assert_eq!(csv_cell("=cmd|' /C calc'!A0"), "'=cmd|' /C calc'!A0");
        assert_eq!(csv_cell("@SUM(1)"), "'@SUM(1)");
        assert_eq!(csv_cell("+1"), "'+1");
        assert_eq!(csv_cell("-1"), "'-1");
        assert_eq!(csv_cell("\tx"), "'\tx");
        assert_eq!(csv_cell("\r=x"), "\"'\r=x\"");
        assert_eq!(csv_cell("a,\"b\""), "\"a,\"\"b\"\"\"");
        assert_eq!(csv_cell("=a,b"), "\"'=a,b\"");
        assert_eq!(csv_cell(""), "");
    }

    #[test]
    fn csv_has_a_header_and_a_line_per_row() {
        let g = GrantId::generate();
        let data = [(None, &g, row(20_000, "=cmd", 1, 12_600))];
        let s = summarize(
            20_000,
            20_000,
            vec![GroupBy::Model, GroupBy::Day],
            data.iter().map(|(o, g, r)| (*o, *g, r)),
        );
        assert_eq!(
            to_csv(&s),
            "model,day,requests,errors,prompt_tokens,cached_tokens,completion_tokens,usd,estimated\r\n\
             '=cmd,2024-10-04,1,0,0,0,0,0.0000126,0\r\n"
        );
    }
}
