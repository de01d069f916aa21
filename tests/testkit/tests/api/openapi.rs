//! `docs/openapi.yaml` against the router, both ways, and `GET /openapi.yaml`.
//!
//! actix-web cannot list its routes, so the route table is read from its one source,
//! `crates/keygate-server/src/routes/mod.rs`, with `syn`: the chain of `.route(…)` /
//! `.service(web::scope(…))` / `web::resource(…).guard(…)` calls in `configure`. Any
//! call the reader does not know fails the test with the code it could not read, so a
//! new way of registering routes cannot slip past it. The other direction is asked of
//! the real server: every operation the description names is sent, and none may get
//! the router's "no such route" answer.
//!
//! The validator itself (openapi-spec-validator) runs in tests/sdk/python/test_openapi.py.

use std::collections::BTreeSet;
use std::path::PathBuf;

use keygate_testkit::spawn_app;
use quote::ToTokens;
use reqwest::Method;
use syn::{Expr, ExprCall, ExprMethodCall, Item, Lit, Stmt};
use yaml_rust2::YamlLoader;

/// What a route registered for every method (`web::to`, a scope's `default_service`)
/// must list in the description: each method a path item can name.
const ANY_METHOD: [&str; 8] = [
    "GET", "PUT", "POST", "DELETE", "OPTIONS", "HEAD", "PATCH", "TRACE",
];

type Operation = (String, String);

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn spec_text() -> String {
    std::fs::read_to_string(repo().join("docs/openapi.yaml")).expect("docs/openapi.yaml")
}

/// (METHOD, path) of every operation in the description.
fn described() -> BTreeSet<Operation> {
    let docs = YamlLoader::load_from_str(&spec_text()).expect("docs/openapi.yaml is YAML");
    assert_eq!(
        docs[0]["info"]["version"].as_str(),
        Some(env!("CARGO_PKG_VERSION")),
        "docs/openapi.yaml's info.version is keygate's version"
    );
    let paths = docs[0]["paths"].as_hash().expect("`paths` is a mapping");
    let mut ops = BTreeSet::new();
    for (path, item) in paths {
        let path = path.as_str().expect("a path is a string");
        let item = item.as_hash().expect("a path item is a mapping");
        for key in item.keys() {
            let key = key.as_str().expect("a path item key is a string");
            let method = key.to_ascii_uppercase();
            if ANY_METHOD.contains(&method.as_str()) {
                ops.insert((method, path.to_owned()));
            } else {
                assert!(
                    ["summary", "description", "parameters", "servers"].contains(&key),
                    "{path}: unexpected key `{key}`"
                );
            }
        }
    }
    ops
}

// --- the route table, read from routes/mod.rs ---------------------------------------

/// (METHOD, path) of every route `routes::configure` registers; `*` = any method.
fn routed() -> BTreeSet<Operation> {
    let file = repo().join("crates/keygate-server/src/routes/mod.rs");
    let src = std::fs::read_to_string(&file).expect("routes/mod.rs");
    let ast = syn::parse_file(&src).expect("routes/mod.rs parses");
    let configure = ast
        .items
        .iter()
        .find_map(|item| match item {
            Item::Fn(f) if f.sig.ident == "configure" => Some(f),
            _ => None,
        })
        .expect("routes/mod.rs has `fn configure`");
    let mut table = Table::default();
    for stmt in &configure.block.stmts {
        match stmt {
            Stmt::Expr(expr, _) => table.chain(expr, ""),
            other => unreadable(other),
        }
    }
    table.0
}

#[derive(Default)]
struct Table(BTreeSet<Operation>);

impl Table {
    fn add(&mut self, method: &str, path: String) {
        assert!(
            self.0.insert((method.to_owned(), path.clone())),
            "{method} {path} is registered twice"
        );
    }

    /// A builder chain: `cfg…`, `web::scope("/p")…` (under `prefix`), or
    /// `web::resource("/p")…`.
    fn chain(&mut self, expr: &Expr, prefix: &str) {
        let (base, calls) = unchain(expr);
        match base {
            Expr::Path(p) if p.path.is_ident("cfg") && prefix.is_empty() => {
                self.calls(&calls, prefix)
            }
            Expr::Call(call) if callee(call) == "web::scope" => {
                let prefix = format!("{prefix}{}", literal(&call.args[0]));
                self.calls(&calls, &prefix)
            }
            Expr::Call(call) if callee(call) == "web::resource" => {
                let path = join(prefix, &literal(&call.args[0]));
                self.resource(&calls, path)
            }
            other => unreadable(other),
        }
    }

    /// The calls on `cfg` or a scope.
    fn calls(&mut self, calls: &[&ExprMethodCall], prefix: &str) {
        for call in calls {
            match call.method.to_string().as_str() {
                "app_data" | "wrap" => {}
                "route" => {
                    let path = join(prefix, &literal(&call.args[0]));
                    match route_method(&call.args[1]) {
                        Some(m) => self.add(&m, path),
                        None => self.add("*", path),
                    }
                }
                "service" => self.chain(&call.args[0], prefix),
                // `web::to(not_found)` is the "no such route" answer; anything else
                // answers every path under the scope.
                "default_service" => match &call.args[0] {
                    Expr::Call(to) if callee(to) == "web::to" => {
                        let handler = to.args[0].to_token_stream().to_string();
                        if handler != "not_found" {
                            self.add("*", join(prefix, "/{path}"));
                        }
                    }
                    other => unreadable(other),
                },
                _ => unreadable(*call),
            }
        }
    }

    /// `web::resource(path)` with `.guard(guard::Post())` and `.to(…)`, or `.route(…)`s.
    fn resource(&mut self, calls: &[&ExprMethodCall], path: String) {
        let mut guard = None;
        let mut handled = false;
        for call in calls {
            match call.method.to_string().as_str() {
                "wrap" => {}
                "guard" => match &call.args[0] {
                    Expr::Call(g) => {
                        let name = callee(g);
                        let method = name
                            .strip_prefix("guard::")
                            .unwrap_or_else(|| unreadable(g));
                        guard = Some(method.to_ascii_uppercase());
                    }
                    other => unreadable(other),
                },
                "to" => handled = true,
                "route" => match route_method(&call.args[0]) {
                    Some(m) => self.add(&m, path.clone()),
                    None => self.add("*", path.clone()),
                },
                _ => unreadable(*call),
            }
        }
        if handled {
            match guard {
                Some(m) => self.add(&m, path),
                None => self.add("*", path),
            }
        }
    }
}

/// `web::get().to(h)` → GET, `web::method(Method::OPTIONS).to(h)` → OPTIONS,
/// `web::to(h)` → any method (`None`).
fn route_method(expr: &Expr) -> Option<String> {
    match expr {
        Expr::Call(call) if callee(call) == "web::to" => None,
        Expr::MethodCall(to) if to.method == "to" => match &*to.receiver {
            Expr::Call(call) => match callee(call).as_str() {
                "web::method" => match &call.args[0] {
                    Expr::Path(p) => Some(
                        p.path
                            .segments
                            .last()
                            .map(|s| s.ident.to_string())
                            .unwrap_or_else(|| unreadable(p)),
                    ),
                    other => unreadable(other),
                },
                name => match name.strip_prefix("web::") {
                    Some(m @ ("get" | "post" | "put" | "patch" | "delete" | "head")) => {
                        Some(m.to_ascii_uppercase())
                    }
                    _ => unreadable(call),
                },
            },
            other => unreadable(other),
        },
        other => unreadable(other),
    }
}

/// `a.b(…).c(…)` → (`a`, [`b(…)`, `c(…)`]), in call order.
fn unchain(mut expr: &Expr) -> (&Expr, Vec<&ExprMethodCall>) {
    let mut calls = Vec::new();
    while let Expr::MethodCall(call) = expr {
        calls.push(call);
        expr = &call.receiver;
    }
    calls.reverse();
    (expr, calls)
}

fn callee(call: &ExprCall) -> String {
    call.func.to_token_stream().to_string().replace(' ', "")
}

fn literal(expr: &Expr) -> String {
    match expr {
        Expr::Lit(l) => match &l.lit {
            Lit::Str(s) => s.value(),
            _ => unreadable(l),
        },
        other => unreadable(other),
    }
}

/// A scope prefix and a route path, with actix's `{name:regex}` written `{name}`.
fn join(prefix: &str, path: &str) -> String {
    let mut out = String::new();
    let mut in_param = false;
    let mut skipping = false;
    for c in format!("{prefix}{path}").chars() {
        match c {
            '{' => in_param = true,
            '}' => {
                in_param = false;
                skipping = false;
            }
            ':' if in_param => skipping = true,
            _ if skipping => continue,
            _ => {}
        }
        if !skipping {
            out.push(c);
        }
    }
    if out.is_empty() { "/".into() } else { out }
}

fn unreadable(code: &dyn ToTokens) -> ! {
    panic!(
        "tests/testkit/tests/api/openapi.rs cannot read this part of routes/mod.rs; \
         teach it (and describe the route in docs/openapi.yaml): {}",
        code.to_token_stream()
    )
}

// --- the tests ----------------------------------------------------------------------

#[test]
fn the_route_reader_reads_what_it_must() {
    assert_eq!(join("/api", "/grants/{id}"), "/api/grants/{id}");
    assert_eq!(join("", "/{file:.*}"), "/{file}");
    assert_eq!(join("", "/"), "/");
    let table = routed();
    for op in [
        ("GET", "/healthz"),
        ("POST", "/api/auth/register/start"),
        ("OPTIONS", "/api/connect/token"),
        ("*", "/v1"),
        ("*", "/v1/{path}"),
        ("GET", "/v1/key"),
        ("GET", "/{file}"),
        ("POST", "/connect/approve"),
        ("GET", "/openapi.yaml"),
    ] {
        assert!(
            table.contains(&(op.0.to_owned(), op.1.to_owned())),
            "{op:?} not read"
        );
    }
}

/// Every route is described, every described operation is routed.
#[test]
fn the_description_and_the_router_match() {
    let described = described();
    let mut routed_ops = BTreeSet::new();
    for (method, path) in routed() {
        if method == "*" {
            routed_ops.extend(ANY_METHOD.iter().map(|m| (m.to_string(), path.clone())));
        } else {
            routed_ops.insert((method, path));
        }
    }
    let mut problems = Vec::new();
    for op in routed_ops.difference(&described) {
        problems.push(format!("routed but not in docs/openapi.yaml: {op:?}"));
    }
    for op in described.difference(&routed_ops) {
        problems.push(format!("in docs/openapi.yaml but not routed: {op:?}"));
    }
    assert!(problems.is_empty(), "{problems:#?}");
}

/// Every operation the description names, sent to the real server without
/// credentials (but with keygate's own `Origin`, so the CSRF check lets it reach the
/// router): none may get the router's "no such route" 404, nor the static-file miss
/// that answers an unknown `GET` path.
#[tokio::test]
async fn every_described_operation_reaches_a_route() {
    let app = spawn_app().await;
    let b = app.browser();
    let mut misses = Vec::new();
    let mut sent = 0;
    for (method, path) in described() {
        let concrete = path
            .replace("{file}", "index.js")
            .replace("{path}", "models")
            .replace("{id}", "aaaaaaaaaaaaaaaa")
            .replace("{kid}", "mk-aaaaa");
        assert!(!concrete.contains('{'), "a path parameter to fill: {path}");
        let m = Method::from_bytes(method.as_bytes()).unwrap();
        let res = b.request(m, &concrete).send().await.unwrap();
        sent += 1;
        let status = res.status().as_u16();
        let body = res.text().await.unwrap_or_default();
        let missed = status == 404
            && (body.is_empty()
                || body.contains("No route for")
                || body.contains("\"Not found.\""));
        if missed {
            misses.push(format!("{method} {concrete}: {status} {body}"));
        }
    }
    assert!(misses.is_empty(), "no such route: {misses:#?}");
    assert!(sent >= 70, "only {sent} operations sent");
}

#[tokio::test]
async fn the_description_is_served_as_committed() {
    let app = spawn_app().await;
    let res = app
        .client
        .get(app.url("/openapi.yaml"))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    let h = res.headers().clone();
    assert_eq!(h["content-type"], "application/yaml");
    assert_eq!(h["cache-control"], "public, max-age=3600");
    assert_eq!(h["access-control-allow-origin"], "*");
    let etag = h["etag"].to_str().unwrap().to_owned();
    assert_eq!(res.text().await.unwrap(), spec_text());
    let res = app
        .client
        .get(app.url("/openapi.yaml"))
        .header("if-none-match", &etag)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 304);
    assert!(res.text().await.unwrap().is_empty());
    let weak = format!("\"other\", W/{etag}");
    let res = app
        .client
        .get(app.url("/openapi.yaml"))
        .header("if-none-match", weak)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 304);
    let res = app
        .client
        .get(app.url("/openapi.yaml"))
        .header("if-none-match", "\"stale\"")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    // No credentials needed, none read: a bearer or a cookie changes nothing.
    let res = app
        .client
        .get(app.url("/openapi.yaml"))
        .bearer_auth("kg_nonsense")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
}

// --- the enums the description lists, against the code ------------------------------

/// The `enum` of a schema under `components.schemas`.
fn schema_enum(name: &str) -> BTreeSet<String> {
    let docs = YamlLoader::load_from_str(&spec_text()).expect("docs/openapi.yaml is YAML");
    docs[0]["components"]["schemas"][name]["enum"]
        .as_vec()
        .unwrap_or_else(|| panic!("components.schemas.{name} has an `enum`"))
        .iter()
        .map(|v| v.as_str().expect("an enum value is a string").to_owned())
        .collect()
}

/// The Rust files under `dir`, recursively.
fn rust_files(dir: &std::path::Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).expect("a source directory") {
        let path = entry.expect("a directory entry").path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// A file's code without its `#[cfg(test)]` items, as a token string.
fn product_code(path: &std::path::Path) -> String {
    let src = std::fs::read_to_string(path).expect("a source file");
    let mut ast = syn::parse_file(&src).unwrap_or_else(|e| panic!("{path:?}: {e}"));
    ast.items.retain(|item| {
        let attrs = match item {
            Item::Mod(m) => &m.attrs,
            Item::Fn(f) => &f.attrs,
            Item::Impl(i) => &i.attrs,
            Item::Use(u) => &u.attrs,
            Item::Const(c) => &c.attrs,
            _ => return true,
        };
        !attrs
            .iter()
            .any(|a| a.to_token_stream().to_string().replace(' ', "") == "#[cfg(test)]")
    });
    ast.to_token_stream().to_string()
}

/// `code` of every `OpenAiError` constructor in keygate-core's catalogue, by name: the
/// third argument of its `Self::new(status, type, code, message)`.
fn error_constructors() -> Vec<(String, String)> {
    let file = repo().join("crates/keygate-core/src/openai_error.rs");
    let ast = syn::parse_file(&std::fs::read_to_string(&file).expect("openai_error.rs"))
        .expect("openai_error.rs parses");
    let mut out = Vec::new();
    for item in &ast.items {
        let Item::Impl(imp) = item else { continue };
        if imp.self_ty.to_token_stream().to_string() != "OpenAiError" {
            continue;
        }
        for f in &imp.items {
            let syn::ImplItem::Fn(f) = f else { continue };
            let body = f.block.to_token_stream().to_string();
            let Some((_, args)) = body.split_once("Self :: new (") else {
                continue;
            };
            let code = args
                .split(" , ")
                .nth(2)
                .and_then(|c| c.strip_prefix('"'))
                .and_then(|c| c.strip_suffix('"'))
                .filter(|c| c.bytes().all(|b| b.is_ascii_lowercase() || b == b'_'))
                .unwrap_or_else(|| panic!("cannot read the code of OpenAiError::{}", f.sig.ident));
            out.push((f.sig.ident.to_string(), code.to_owned()));
        }
    }
    assert!(out.len() >= 30, "only {} constructors read", out.len());
    out
}

/// The description's `ErrorCode` is every code keygate can send and no other: the codes
/// of the catalogue's constructors that product code (not tests) calls.
#[test]
fn the_error_codes_described_are_the_ones_keygate_sends() {
    let mut files = Vec::new();
    for dir in ["crates/keygate-server/src", "crates/keygate/src"] {
        rust_files(&repo().join(dir), &mut files);
    }
    let code: String = files.iter().map(|f| product_code(f)).collect();
    let sent: BTreeSet<String> = error_constructors()
        .into_iter()
        .filter(|(name, _)| code.contains(&format!("OpenAiError :: {name} (")))
        .map(|(_, code)| code)
        .collect();
    let described = schema_enum("ErrorCode");
    let mut problems = Vec::new();
    for c in sent.difference(&described) {
        problems.push(format!("sent but not in ErrorCode: {c}"));
    }
    for c in described.difference(&sent) {
        problems.push(format!("in ErrorCode but never sent: {c}"));
    }
    assert!(problems.is_empty(), "{problems:#?}");
}

/// The description's `AuditAction` is exactly the audit log's action names.
#[test]
fn the_audit_actions_described_are_the_logs() {
    let names: BTreeSet<String> = keygate_core::audit::Action::ALL
        .iter()
        .map(|a| a.as_str().to_owned())
        .collect();
    assert_eq!(schema_enum("AuditAction"), names);
}
