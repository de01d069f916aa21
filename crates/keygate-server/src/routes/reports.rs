//! The HTTP side of the reports (`GET /admin/grants`, `/admin/usage`, `/api/usage`):
//! their query strings, and the answer's format — CSV when `Accept` asks for
//! `text/csv`, JSON otherwise.

use std::future::{Ready, ready};

use actix_web::dev::Payload;
use actix_web::http::header::{ACCEPT, CONTENT_TYPE, VARY};
use actix_web::{FromRequest, HttpRequest, HttpResponse};
use serde::Deserialize;

use super::page::PageQuery;
use crate::error::ServerError;
use crate::services::error::ServiceError;
use crate::services::reports::{self, GrantQuery, SummaryQuery, UsageSummary};

/// `GET /admin/grants?user=&state=&origin=&limit=&cursor=`.
#[derive(Debug, Default, Deserialize)]
pub struct GrantsParams {
    pub user: Option<String>,
    pub state: Option<String>,
    pub origin: Option<String>,
    pub limit: Option<String>,
    pub cursor: Option<String>,
}

impl GrantsParams {
    pub fn filter(&self) -> GrantQuery<'_> {
        GrantQuery {
            user: self.user.as_deref(),
            state: self.state.as_deref(),
            origin: self.origin.as_deref(),
        }
    }

    pub fn page(&self) -> PageQuery {
        PageQuery {
            limit: self.limit.clone(),
            cursor: self.cursor.clone(),
        }
    }
}

/// `?from=&to=&group_by=` of a usage summary, read by hand: `group_by` may repeat
/// (`group_by=user&group_by=day`), which the query extractor cannot take. `from` or
/// `to` given twice is 400 naming it; other parameters are ignored, as elsewhere.
pub struct SummaryParams(pub SummaryQuery);

impl FromRequest for SummaryParams {
    type Error = ServerError;
    type Future = Ready<Result<Self, ServerError>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        ready(parse_summary_query(req.query_string()).map(SummaryParams))
    }
}

fn parse_summary_query(query: &str) -> Result<SummaryQuery, ServerError> {
    let mut q = SummaryQuery::default();
    for (name, value) in url::form_urlencoded::parse(query.as_bytes()) {
        let once = |slot: &mut Option<String>, param: &'static str| {
            if slot.replace(value.clone().into_owned()).is_some() {
                return Err(ServiceError::invalid(
                    param,
                    format!("`{param}` is given more than once"),
                ));
            }
            Ok(())
        };
        match name.as_ref() {
            "from" => once(&mut q.from, "from")?,
            "to" => once(&mut q.to, "to")?,
            "group_by" => q.group_by.push(value.into_owned()),
            _ => {}
        }
    }
    Ok(q)
}

/// 200 with the summary as CSV when the client asked for it, as JSON otherwise.
pub fn respond(req: &HttpRequest, summary: &UsageSummary) -> HttpResponse {
    let mut res = HttpResponse::Ok();
    res.insert_header((VARY, "accept"));
    let accept = req
        .headers()
        .get_all(ACCEPT)
        .filter_map(|v| v.to_str().ok())
        .collect::<Vec<_>>()
        .join(",");
    if wants_csv(&accept) {
        res.insert_header((CONTENT_TYPE, "text/csv; charset=utf-8"))
            .body(reports::to_csv(summary))
    } else {
        res.json(summary)
    }
}

/// Whether `Accept` names `text/csv` with a quality at least that of JSON (what
/// `application/json`, `application/*` or `*/*` give it). `text/*` and `*/*` alone
/// never pick CSV: a browser's default `Accept` gets JSON.
fn wants_csv(accept: &str) -> bool {
    let (mut csv, mut json) = (0.0_f32, 0.0_f32);
    for range in accept.split(',') {
        let mut parts = range.split(';');
        let media = parts.next().unwrap_or("").trim().to_ascii_lowercase();
        let q = parts
            .filter_map(|p| p.trim().strip_prefix("q="))
            .find_map(|v| v.trim().parse::<f32>().ok())
            .unwrap_or(1.0);
        match media.as_str() {
            "text/csv" => csv = csv.max(q),
            "application/json" | "application/*" | "*/*" => json = json.max(q),
            _ => {}
        }
    }
    csv > 0.0 && csv >= json
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn csv_only_when_asked_for_at_least_as_much_as_json() {
        for yes in [
            "text/csv",
            "TEXT/CSV; charset=utf-8",
            "text/csv, */*;q=0.5",
            "application/json;q=0.5, text/csv",
            "text/csv, application/json",
        ] {
            assert!(wants_csv(yes), "{yes}");
        }
        for no in [
            "",
            "application/json",
            "*/*",
            "text/*",
            "text/html,application/xhtml+xml,*/*;q=0.8",
            "text/csv;q=0",
            "text/csv;q=0.2, application/json",
        ] {
            assert!(!wants_csv(no), "{no}");
        }
    }

    #[test]
    fn summary_queries_take_repeated_group_by_and_refuse_repeated_dates() {
        let q =
            parse_summary_query("group_by=user&group_by=day%2Cmodel&from=2026-11-01&x=1").unwrap();
        assert_eq!(q.group_by, ["user", "day,model"]);
        assert_eq!(q.from.as_deref(), Some("2026-11-01"));
        assert_eq!(q.to, None);
        for bad in ["from=a&from=b", "to=2026-01-01&to=2026-01-01"] {
            assert!(parse_summary_query(bad).is_err(), "{bad}");
        }
    }
}
