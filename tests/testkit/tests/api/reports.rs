//! Reports (issue 11, point 2): paged lists (`/admin/users`, `/admin/keys`,
//! `/admin/grants` with filters) walked with `Link` / `X-Next-Cursor`; usage summaries
//! (`/admin/usage`, the person's own `/api/usage`) grouped every way, equal to what the
//! proxy counted and to the per-grant reports, as JSON and as CSV read back by a real
//! CSV parser; and what an attacker gets: a read-scope key reads, a session does not
//! reach `/admin`, a person never sees another's grants, junk parameters are 400s.

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use keygate_testkit::{TestApp, manual_clock, spawn_app, spawn_app_with_clock};
use reqwest::{Method, Response};
use serde_json::{Value, json};

use crate::helpers::{assert_openai_error, chat, json_of, param_of};

const ONE_DAY: u64 = 86_400;
const COUNTERS: [&str; 6] = [
    "requests",
    "errors",
    "prompt_tokens",
    "cached_tokens",
    "completion_tokens",
    "estimated",
];

fn header<'a>(res: &'a Response, name: &str) -> Option<&'a str> {
    res.headers().get(name).and_then(|v| v.to_str().ok())
}

/// Follows a paged list from `path` to its end; returns every item and the number of
/// pages. Every page but the last carries both `Link` and `X-Next-Cursor`, naming the
/// same cursor; the last carries neither.
async fn walk(app: &TestApp, path: &str, key: &str) -> (Vec<Value>, usize) {
    let (mut items, mut pages) = (Vec::new(), 0);
    let mut next = Some(path.to_owned());
    while let Some(path) = next.take() {
        let res = app
            .client
            .get(app.url(&path))
            .bearer_auth(key)
            .send()
            .await
            .unwrap();
        let link = header(&res, "link").map(str::to_owned);
        let cursor = header(&res, "x-next-cursor").map(str::to_owned);
        let page = json_of(res, 200).await;
        items.extend(page.as_array().unwrap().iter().cloned());
        pages += 1;
        assert!(pages < 100, "the walk never ends");
        match (link, cursor) {
            (Some(link), Some(cursor)) => {
                let target = link
                    .strip_prefix('<')
                    .and_then(|l| l.strip_suffix(">; rel=\"next\""))
                    .unwrap_or_else(|| panic!("Link: {link}"));
                assert!(target.ends_with(&format!("cursor={cursor}")), "{link}");
                next = Some(target.to_owned());
            }
            (None, None) => {}
            other => panic!("Link and X-Next-Cursor go together: {other:?}"),
        }
    }
    (items, pages)
}

fn ids(items: &[Value]) -> Vec<String> {
    items
        .iter()
        .map(|v| v["id"].as_str().unwrap().to_owned())
        .collect()
}

async fn admin_get(app: &TestApp, path: &str) -> Response {
    app.admin(Method::GET, path).send().await.unwrap()
}

async fn summary(app: &TestApp, query: &str) -> Value {
    json_of(admin_get(app, &format!("/admin/usage{query}")).await, 200).await
}

/// `/admin/usage` once the accounting has `n` requests in it (answers are counted when
/// they end, just after the app has read them).
async fn settled(app: &TestApp, n: u64) -> Value {
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let s = summary(app, "").await;
        if s["total"]["requests"] == n {
            return s;
        }
        assert!(std::time::Instant::now() < deadline, "never settled: {s}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn nanos(v: &Value) -> u64 {
    (v.as_f64().unwrap() * 1e9).round() as u64
}

/// A row's (or a total's) counters, dollars as nanodollars.
fn counts(v: &Value) -> Vec<u64> {
    let mut c: Vec<u64> = COUNTERS.iter().map(|k| v[*k].as_u64().unwrap()).collect();
    c.push(nanos(&v["usd"]));
    c
}

fn add(a: &mut Vec<u64>, b: &[u64]) {
    if a.is_empty() {
        a.resize(b.len(), 0);
    }
    for (x, y) in a.iter_mut().zip(b) {
        *x += y;
    }
}

/// The sum of a per-grant report's rows (`GET /admin/grants/{id}/usage`).
async fn per_grant(app: &TestApp, grant: &str) -> Vec<u64> {
    let report = app.usage(grant, "").await;
    let mut sum = vec![0; COUNTERS.len() + 1];
    for row in report["days"].as_array().unwrap() {
        add(&mut sum, &counts(row));
    }
    sum
}

/// A chat completion with `n` completion tokens, as the mock reports them; returns the
/// mock's own `usage`.
async fn chat_with(app: &TestApp, key: &str, model: &str, n: u32) -> Value {
    let res = app
        .v1(Method::POST, "/chat/completions", key)
        .header("x-mock-completion-tokens", n.to_string())
        .json(&chat(model))
        .send()
        .await
        .unwrap();
    let answer = json_of(res, 200).await;
    answer["usage"].clone()
}

/// Every row of a summary carries exactly the `group_by` keys, in the order asked,
/// then the counters — checked on the raw text, since a parsed object forgets order.
fn assert_row_shape(text: &str, group_by: &[&str]) {
    let v: Value = serde_json::from_str(text).unwrap();
    let want: Vec<&str> = group_by
        .iter()
        .copied()
        .chain(COUNTERS)
        .chain(["usd"])
        .collect();
    for row in v["rows"].as_array().unwrap() {
        let mut have: Vec<&str> = row
            .as_object()
            .unwrap()
            .keys()
            .map(String::as_str)
            .collect();
        have.sort_unstable();
        let mut sorted = want.clone();
        sorted.sort_unstable();
        assert_eq!(have, sorted, "{row}");
    }
    let first = text.find("\"rows\":[{").map(|i| &text[i..]).unwrap_or("");
    let mut at = 0;
    for key in group_by.iter().chain(&["requests", "usd", "estimated"]) {
        let pos = first[at..]
            .find(&format!("\"{key}\":"))
            .unwrap_or_else(|| panic!("{key} out of order in {first}"));
        at += pos;
    }
}

// --- paged lists --------------------------------------------------------------------

#[tokio::test]
async fn users_are_paged_each_once_with_link_and_cursor_until_the_last_page() {
    let app = spawn_app().await;
    let mut made = HashSet::new();
    for i in 0..7 {
        made.insert(app.create_user(&format!("Person {i}")).await);
    }
    let (items, pages) = walk(&app, "/admin/users?limit=3", keygate_testkit::ADMIN_KEY).await;
    assert_eq!(pages, 3);
    let seen = ids(&items);
    assert_eq!(seen.len(), 7, "every user once");
    assert_eq!(seen.iter().cloned().collect::<HashSet<_>>(), made);
    // The default page holds them all, and says nothing of a next page.
    let res = admin_get(&app, "/admin/users").await;
    assert!(header(&res, "link").is_none() && header(&res, "x-next-cursor").is_none());
    assert_eq!(json_of(res, 200).await.as_array().unwrap().len(), 7);
    // Exactly full: no next page either.
    let res = admin_get(&app, "/admin/users?limit=7").await;
    assert!(header(&res, "x-next-cursor").is_none());

    for bad in [
        "limit=0",
        "limit=1001",
        "limit=ten",
        "limit=-1",
        "limit=2.5",
    ] {
        let res = admin_get(&app, &format!("/admin/users?{bad}")).await;
        assert_eq!(param_of(res).await, "limit", "{bad}");
    }
    for bad in [
        "cursor=***",
        "cursor=a",
        &format!("cursor={}", "A".repeat(600)),
    ] {
        let res = admin_get(&app, &format!("/admin/users?{bad}")).await;
        assert_eq!(param_of(res).await, "cursor", "{bad}");
    }
}

#[tokio::test]
async fn admin_keys_are_paged_oldest_first() {
    let app = spawn_app_with_clock(manual_clock(), |_| {}).await;
    let mut made = Vec::new();
    for i in 0..5 {
        let res = app
            .admin(Method::POST, "/admin/keys")
            .json(&json!({"name": format!("key {i}"), "scope": "read"}))
            .send()
            .await
            .unwrap();
        made.push(json_of(res, 201).await["id"].as_str().unwrap().to_owned());
        app.clock.advance(1);
    }
    let (items, pages) = walk(&app, "/admin/keys?limit=2", keygate_testkit::ADMIN_KEY).await;
    assert_eq!(pages, 3);
    assert_eq!(ids(&items), made, "oldest first, each once");
    assert!(items.iter().all(|k| k.get("key").is_none()));
    // A key revoked mid-walk does not lose the walk its place.
    let res = admin_get(&app, "/admin/keys?limit=2").await;
    let cursor = header(&res, "x-next-cursor").unwrap().to_owned();
    let res = app
        .admin(Method::DELETE, &format!("/admin/keys/{}", made[1]))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 204);
    let rest = json_of(
        admin_get(&app, &format!("/admin/keys?cursor={cursor}")).await,
        200,
    )
    .await;
    assert_eq!(ids(rest.as_array().unwrap()), made[2..]);
    let res = admin_get(&app, "/admin/keys?limit=0").await;
    assert_eq!(param_of(res).await, "limit");
}

#[tokio::test]
async fn grants_are_listed_across_people_filtered_and_paged() {
    let app = spawn_app().await;
    let (ada, bob) = (app.create_user("Ada").await, app.create_user("Bob").await);
    let mut all = Vec::new();
    for (owner, n) in [(&ada, 4), (&bob, 3)] {
        for i in 0..n {
            let made = app.create_grant(owner, &format!("app {i}"), None).await;
            all.push(made["grant"]["id"].as_str().unwrap().to_owned());
        }
    }
    // Bound origins come from the connect flow; set two straight in the store.
    for id in [&all[0], &all[5]] {
        let gid = keygate_core::ids::GrantId::parse(id).unwrap();
        app.state
            .store
            .update_grant(&gid, &|g| g.origin = Some("https://notes.example".into()))
            .await
            .unwrap();
    }
    assert_eq!(app.revoke(&all[1]).await.status(), 204); // revoked
    let res = app
        .admin(Method::POST, &format!("/admin/grants/{}/disable", all[2]))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    // Removed: revoked, then deleted again.
    assert_eq!(app.revoke(&all[6]).await.status(), 204);
    assert_eq!(app.revoke(&all[6]).await.status(), 204);
    let removed = all.pop().unwrap();

    let admin = keygate_testkit::ADMIN_KEY;
    let (items, pages) = walk(&app, "/admin/grants?limit=2", admin).await;
    assert_eq!(pages, 3);
    let mut listed = ids(&items);
    assert!(!listed.contains(&removed));
    listed.sort();
    let mut want = all.clone();
    want.sort();
    assert_eq!(listed, want, "every grant once, in id order");
    // Each item is the grant object of GET /admin/grants/{id}, never a secret.
    for item in &items {
        let one = json_of(
            admin_get(
                &app,
                &format!("/admin/grants/{}", item["id"].as_str().unwrap()),
            )
            .await,
            200,
        )
        .await;
        assert_eq!(*item, one);
        assert!(item.get("secret_hash").is_none() && item.get("api_key").is_none());
    }

    let filtered = |q: String| {
        let app = &app;
        async move { ids(&walk(app, &format!("/admin/grants?{q}"), admin).await.0) }
    };
    let set = |v: Vec<String>| v.into_iter().collect::<HashSet<_>>();
    assert_eq!(
        set(filtered(format!("user={ada}&limit=1")).await),
        set(all[..4].to_vec())
    );
    assert_eq!(filtered("state=revoked".into()).await, [all[1].clone()]);
    assert_eq!(filtered("state=disabled".into()).await, [all[2].clone()]);
    assert_eq!(filtered("state=active".into()).await.len(), 4);
    assert_eq!(
        set(filtered("origin=https%3A%2F%2Fnotes.example%2F".into()).await),
        set(vec![all[0].clone(), all[5].clone()])
    );
    assert_eq!(
        filtered(format!("origin=https://notes.example&user={bob}")).await,
        [all[5].clone()]
    );
    assert_eq!(
        filtered(format!("user={bob}&state=revoked")).await,
        Vec::<String>::new()
    );
    // A person nobody is: an empty list, not an error.
    assert!(filtered("user=aaaaaaaaaaaaaaaa".into()).await.is_empty());

    for (q, param) in [
        ("user=not-an-id", "user"),
        ("state=deleted", "state"),
        ("state=Active", "state"),
        ("origin=notes.example", "origin"),
        ("origin=https://notes.example/path", "origin"),
        ("limit=0", "limit"),
        ("cursor=%%%", "cursor"),
    ] {
        let res = admin_get(&app, &format!("/admin/grants?{q}")).await;
        assert_eq!(param_of(res).await, param, "{q}");
    }
}

// --- usage summaries ------------------------------------------------------------------

#[tokio::test]
async fn usage_summaries_equal_what_the_proxy_counted_grouped_every_way() {
    let app = spawn_app_with_clock(manual_clock(), |_| {}).await;
    let a1 = app.enrolled_grant(None).await;
    let a2_made = app.create_grant(&a1.user_id, "second app", None).await;
    let a2 = a2_made["api_key"].as_str().unwrap().to_owned();
    let a2_id = a2_made["grant"]["id"].as_str().unwrap().to_owned();
    let b = app.enrolled_grant(None).await;

    // Day one.
    let mut mock_prompt = 0;
    let mut mock_completion = 0;
    for (key, model, n) in [
        (&a1.api_key, "gpt-4o-mini", 5),
        (&a1.api_key, "gpt-4o", 7),
        (&a2, "gpt-4o-mini", 11),
        (&b.api_key, "gpt-4o-mini", 3),
    ] {
        let u = chat_with(&app, key, model, n).await;
        mock_prompt += u["prompt_tokens"].as_u64().unwrap();
        mock_completion += u["completion_tokens"].as_u64().unwrap();
        assert_eq!(u["completion_tokens"], n);
    }
    // A call that names no model: its row has `model: null`.
    let res = app
        .v1(Method::GET, "/models", &b.api_key)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    let _ = res.bytes().await;
    // Day two.
    app.clock.advance(ONE_DAY);
    for (key, n) in [(&a1.api_key, 2), (&b.api_key, 9)] {
        let u = chat_with(&app, key, "gpt-4o-mini", n).await;
        mock_prompt += u["prompt_tokens"].as_u64().unwrap();
        mock_completion += u["completion_tokens"].as_u64().unwrap();
    }

    let plain = settled(&app, 7).await;
    let total = counts(&plain["total"]);
    // Exactly what the mock reported, and the per-grant reports add up to it.
    assert_eq!(plain["total"]["prompt_tokens"], mock_prompt);
    assert_eq!(plain["total"]["completion_tokens"], mock_completion);
    assert_eq!(plain["total"]["errors"], 0);
    assert_eq!(plain["group_by"], json!([]));
    assert_eq!(plain["rows"].as_array().unwrap().len(), 1);
    assert_eq!(counts(&plain["rows"][0]), total);
    let mut grants_sum = Vec::new();
    let mut by_grant_report = HashMap::new();
    for g in [&a1.grant_id, &a2_id, &b.grant_id] {
        let sum = per_grant(&app, g).await;
        add(&mut grants_sum, &sum);
        by_grant_report.insert(g.clone(), sum);
    }
    assert_eq!(grants_sum, total);
    // Default range: the last 30 days to today.
    let today =
        keygate_core::calendar::day_string(keygate_core::calendar::day_number(app.clock.now()));
    assert_eq!(plain["to"], today.as_str());

    for (query, keys) in [
        ("?group_by=user", vec!["user"]),
        ("?group_by=grant", vec!["grant"]),
        ("?group_by=model", vec!["model"]),
        ("?group_by=day", vec!["day"]),
        ("?group_by=user&group_by=day", vec!["user", "day"]),
        ("?group_by=day,user", vec!["day", "user"]),
        (
            "?group_by=grant%2Cmodel&group_by=day",
            vec!["grant", "model", "day"],
        ),
        (
            "?group_by=model,day,grant,user",
            vec!["model", "day", "grant", "user"],
        ),
    ] {
        let res = admin_get(&app, &format!("/admin/usage{query}")).await;
        assert_eq!(res.status(), 200);
        let text = res.text().await.unwrap();
        assert_row_shape(&text, &keys);
        let s: Value = serde_json::from_str(&text).unwrap();
        assert_eq!(s["group_by"], json!(keys), "{query}");
        assert_eq!(counts(&s["total"]), total, "{query}");
        let rows = s["rows"].as_array().unwrap();
        let mut sum = Vec::new();
        for r in rows {
            add(&mut sum, &counts(r));
        }
        assert_eq!(sum, total, "rows add up to the total: {query}");
        // Sorted by their keys (`null` first), each group once.
        let tuples: Vec<Vec<Option<String>>> = rows
            .iter()
            .map(|r| {
                keys.iter()
                    .map(|k| r[*k].as_str().map(str::to_owned))
                    .collect()
            })
            .collect();
        let mut sorted = tuples.clone();
        sorted.sort();
        sorted.dedup();
        assert_eq!(tuples, sorted, "{query}");
    }

    let by = |s: &Value, key: &str| -> HashMap<String, Vec<u64>> {
        s["rows"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| (r[key].as_str().unwrap_or("null").to_owned(), counts(r)))
            .collect()
    };
    let grants = by(&summary(&app, "?group_by=grant").await, "grant");
    assert_eq!(
        grants, by_grant_report,
        "each grant's row is its own report"
    );
    let users = by(&summary(&app, "?group_by=user").await, "user");
    let mut ada = by_grant_report[&a1.grant_id].clone();
    add(&mut ada, &by_grant_report[&a2_id]);
    assert_eq!(users[&a1.user_id], ada);
    assert_eq!(users[&b.user_id], by_grant_report[&b.grant_id]);
    assert_eq!(users.len(), 2);
    let models = by(&summary(&app, "?group_by=model").await, "model");
    assert_eq!(models["null"][0], 1, "GET /v1/models names no model");
    assert_eq!(models["gpt-4o"][0], 1);
    assert_eq!(models["gpt-4o-mini"][0], 5);
    let days = summary(&app, "?group_by=day").await;
    let days = days["rows"].as_array().unwrap();
    assert_eq!(days.len(), 2);
    assert_eq!(
        (days[0]["requests"].clone(), days[1]["requests"].clone()),
        (json!(5), json!(2))
    );
    assert_eq!(days[1]["day"], today.as_str());

    // A range holding only day one.
    let q = format!(
        "?from={0}&to={0}&group_by=day",
        days[0]["day"].as_str().unwrap()
    );
    let one = summary(&app, &q).await;
    assert_eq!(one["total"]["requests"], 5);
    assert_eq!(one["from"], days[0]["day"]);
    // A range with nothing: no rows when grouped, one zero row when not.
    let empty = summary(&app, "?from=2020-01-01&to=2020-01-31&group_by=user").await;
    assert!(empty["rows"].as_array().unwrap().is_empty());
    assert_eq!(empty["total"]["requests"], 0);
    let empty = summary(&app, "?from=2020-01-01&to=2020-01-31").await;
    assert_eq!(empty["rows"][0]["requests"], 0);
}

/// A summary as CSV, parsed by the `csv` crate: the header and every record.
fn parse_csv(text: &str) -> (Vec<String>, Vec<Vec<String>>) {
    let mut reader = csv::ReaderBuilder::new().from_reader(text.as_bytes());
    let header = reader
        .headers()
        .unwrap()
        .iter()
        .map(str::to_owned)
        .collect();
    let records = reader
        .records()
        .map(|r| r.unwrap().iter().map(str::to_owned).collect())
        .collect();
    (header, records)
}

async fn csv_of(res: Response) -> (Vec<String>, Vec<Vec<String>>) {
    assert_eq!(res.status(), 200);
    assert_eq!(
        header(&res, "content-type"),
        Some("text/csv; charset=utf-8")
    );
    let text = res.text().await.unwrap();
    assert!(text.ends_with("\r\n"), "{text:?}");
    parse_csv(&text)
}

#[tokio::test]
async fn usage_csv_reads_back_with_a_csv_parser_and_formulas_are_neutralised() {
    let app = spawn_app().await;
    let g = app.enrolled_grant(None).await;
    // Model names are the app's own strings, and they land in the report.
    let formula = "=HYPERLINK(\"http://evil.example\",\"click\")";
    for model in ["gpt-4o-mini", "=cmd", "@SUM(A1)", "+1", "-2", formula] {
        chat_with(&app, &g.api_key, model, 4).await;
    }
    settled(&app, 6).await;

    let json = summary(&app, "?group_by=model,day").await;
    let res = app
        .admin(Method::GET, "/admin/usage?group_by=model,day")
        .header("accept", "text/csv")
        .send()
        .await
        .unwrap();
    assert_eq!(header(&res, "vary"), Some("accept"));
    let (head, records) = csv_of(res).await;
    assert_eq!(
        head,
        [
            "model",
            "day",
            "requests",
            "errors",
            "prompt_tokens",
            "cached_tokens",
            "completion_tokens",
            "usd",
            "estimated"
        ]
    );
    let rows = json["rows"].as_array().unwrap();
    assert_eq!(records.len(), rows.len());
    for (record, row) in records.iter().zip(rows) {
        let model = row["model"].as_str().unwrap();
        let cell = &record[0];
        if model.starts_with(['=', '+', '-', '@']) {
            assert_eq!(*cell, format!("'{model}"), "neutralised");
        } else {
            assert_eq!(cell, model);
        }
        assert_eq!(record[1], row["day"].as_str().unwrap());
        for (i, key) in head.iter().enumerate().skip(2) {
            if key == "usd" {
                let usd: f64 = record[i].parse().unwrap();
                assert_eq!((usd * 1e9).round() as u64, nanos(&row["usd"]));
                assert!(
                    !record[i].contains('e'),
                    "decimal, not exponent: {}",
                    record[i]
                );
            } else {
                assert_eq!(record[i], row[key.as_str()].to_string(), "{key}");
            }
        }
    }
    let cells: Vec<&str> = records.iter().map(|r| r[0].as_str()).collect();
    assert!(cells.contains(&"'=cmd"), "{cells:?}");
    assert!(cells.contains(&format!("'{formula}").as_str()), "{cells:?}");
    assert!(cells.iter().all(|c| !c.starts_with(['=', '+', '-', '@'])));

    // No grouping: the counters alone, one line. JSON when CSV is not preferred.
    let res = app
        .admin(Method::GET, "/admin/usage")
        .header("accept", "text/csv")
        .send()
        .await
        .unwrap();
    let (head, records) = csv_of(res).await;
    assert_eq!(head.len(), 7);
    assert_eq!(records.len(), 1);
    assert_eq!(records[0][0], "6");
    assert_eq!(records[0][2], json["total"]["prompt_tokens"].to_string());
    assert_eq!(records[0][4], "24");
    for accept in [
        "application/json",
        "*/*",
        "text/csv;q=0.1, application/json",
    ] {
        let res = app
            .admin(Method::GET, "/admin/usage")
            .header("accept", accept)
            .send()
            .await
            .unwrap();
        assert_eq!(
            header(&res, "content-type"),
            Some("application/json"),
            "{accept}"
        );
    }
    // Errors stay OpenAI-shaped JSON, CSV asked or not.
    let res = app
        .admin(Method::GET, "/admin/usage?group_by=nope")
        .header("accept", "text/csv")
        .send()
        .await
        .unwrap();
    assert_openai_error(res, 400, "invalid_request").await;
}

#[tokio::test]
async fn a_persons_own_usage_covers_their_grants_removed_ones_too_and_nobody_elses() {
    let app = spawn_app().await;
    let mut ada = app.browser();
    let me = ada.signed_up("Ada").await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_eq!(
        app.put_openai_key(&me, keygate_testkit::FAKE_OPENAI_KEY)
            .await
            .status(),
        204
    );
    let kept = app.create_grant(&me, "kept", None).await;
    let gone = app.create_grant(&me, "gone", None).await;
    let other = app.enrolled_grant(None).await;
    let key = |g: &Value| g["api_key"].as_str().unwrap().to_owned();
    let id = |g: &Value| g["grant"]["id"].as_str().unwrap().to_owned();
    chat_with(&app, &key(&kept), "gpt-4o-mini", 5).await;
    chat_with(&app, &key(&gone), "gpt-4o", 6).await;
    chat_with(&app, &key(&gone), "gpt-4o", 7).await;
    chat_with(&app, &other.api_key, "gpt-4o-mini", 20).await;
    settled(&app, 4).await;
    let kept_report = per_grant(&app, &id(&kept)).await;
    let gone_report = per_grant(&app, &id(&gone)).await;
    // The person removes the second app: revoke, then delete again.
    for _ in 0..2 {
        let res = ada
            .request(Method::DELETE, &format!("/api/grants/{}", id(&gone)))
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 204);
    }
    assert_eq!(
        ada.get(&format!("/api/grants/{}", id(&gone)))
            .await
            .status(),
        404
    );

    let res = ada.get("/api/usage?group_by=grant").await;
    assert_eq!(header(&res, "cache-control"), Some("no-store"));
    let text = res.text().await.unwrap();
    assert!(
        !text.contains(&other.grant_id) && !text.contains(&other.user_id),
        "{text}"
    );
    assert_row_shape(&text, &["grant"]);
    let mine: Value = serde_json::from_str(&text).unwrap();
    let rows = mine["rows"].as_array().unwrap();
    let by: HashMap<&str, Vec<u64>> = rows
        .iter()
        .map(|r| (r["grant"].as_str().unwrap(), counts(r)))
        .collect();
    assert_eq!(by.len(), 2, "{mine}");
    assert_eq!(by[id(&kept).as_str()], kept_report);
    assert_eq!(
        by[id(&gone).as_str()],
        gone_report,
        "a removed grant's usage still counts"
    );
    let mut both = kept_report.clone();
    add(&mut both, &gone_report);
    assert_eq!(counts(&mine["total"]), both);

    // A `user` parameter is no way into someone else's report: it is not read.
    let text = ada
        .get(&format!("/api/usage?group_by=grant&user={}", other.user_id))
        .await
        .text()
        .await
        .unwrap();
    assert!(!text.contains(&other.grant_id), "{text}");

    // group_by=user: one row, the person.
    let users = json_of(ada.get("/api/usage?group_by=user,model").await, 200).await;
    let rows = users["rows"].as_array().unwrap();
    assert!(rows.iter().all(|r| r["user"] == me.as_str()), "{users}");
    assert_eq!(rows.len(), 2);
    // Without a session: nothing.
    let theirs = app.browser();
    assert_eq!(
        theirs.get("/api/usage").await.status(),
        401,
        "no session, no usage"
    );

    // CSV for the person too.
    let res = ada
        .request(Method::GET, "/api/usage?group_by=grant")
        .header("accept", "text/csv")
        .send()
        .await
        .unwrap();
    let (head, records) = csv_of(res).await;
    assert_eq!(head[0], "grant");
    assert_eq!(records.len(), 2);
    let total: u64 = records.iter().map(|r| r[1].parse::<u64>().unwrap()).sum();
    assert_eq!(total, 3);

    // Junk parameters name themselves, for the person as for the operator.
    for (q, param) in [
        ("group_by=users", "group_by"),
        ("group_by=day,day", "group_by"),
        ("from=2026-13-01", "from"),
        ("to=yesterday", "to"),
        ("from=2026-02-01&to=2026-01-01", "from"),
        ("from=2024-01-01&to=2026-01-01", "from"),
        ("from=2026-01-01&from=2026-01-02", "from"),
    ] {
        let res = ada.get(&format!("/api/usage?{q}")).await;
        assert_eq!(param_of(res).await, param, "/api/usage?{q}");
        let res = admin_get(&app, &format!("/admin/usage?{q}")).await;
        assert_eq!(param_of(res).await, param, "/admin/usage?{q}");
    }

    // Deleting the account keeps the usage rows and whose they were: the operator's
    // totals do not change (docs/DECISIONS.md).
    let before = summary(&app, "?group_by=user").await;
    let res = ada
        .request(Method::DELETE, "/api/account")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 204);
    assert_eq!(summary(&app, "?group_by=user").await, before);
}

#[tokio::test]
async fn a_read_key_reads_every_report_and_a_session_reaches_none() {
    let app = spawn_app().await;
    let g = app.enrolled_grant(None).await;
    chat_with(&app, &g.api_key, "gpt-4o-mini", 3).await;
    settled(&app, 1).await;
    let res = app
        .admin(Method::POST, "/admin/keys")
        .json(&json!({"name": "reports", "scope": "read"}))
        .send()
        .await
        .unwrap();
    let read = json_of(res, 201).await["key"].as_str().unwrap().to_owned();
    let as_read = |path: &str| app.client.get(app.url(path)).bearer_auth(&read).send();
    for path in [
        "/admin/users?limit=1",
        "/admin/grants?state=active",
        "/admin/usage?group_by=user",
    ] {
        assert_eq!(as_read(path).await.unwrap().status(), 200, "{path}");
    }
    let csv = app
        .client
        .get(app.url("/admin/usage?group_by=user"))
        .bearer_auth(&read)
        .header("accept", "text/csv")
        .send()
        .await
        .unwrap();
    let (_, records) = csv_of(csv).await;
    assert_eq!(records[0][0], g.user_id);
    // Listing admin keys stays the admin scope's.
    assert_openai_error(
        as_read("/admin/keys").await.unwrap(),
        403,
        "insufficient_scope",
    )
    .await;

    // A signed-in person's session cookie is not an admin key.
    let mut b = app.browser();
    b.signed_up("Mallory").await;
    for path in ["/admin/usage", "/admin/grants", "/admin/users"] {
        assert_eq!(b.get(path).await.status(), 401, "{path}");
    }
    // Nor is a grant's key.
    let res = app
        .client
        .get(app.url("/admin/usage"))
        .bearer_auth(&g.api_key)
        .send()
        .await
        .unwrap();
    assert_openai_error(res, 401, "invalid_api_key").await;
    // And the person's own report names nobody else.
    let own = json_of(b.get("/api/usage?group_by=grant").await, 200).await;
    assert!(own["rows"].as_array().unwrap().is_empty(), "{own}");
    assert_eq!(own["total"]["requests"], 0);
}
