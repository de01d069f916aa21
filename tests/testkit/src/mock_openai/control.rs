//! `/__mock/*`: inspect and reset the mock from scripts that are not written in Rust.

use hyper::{Method, Response, StatusCode};
use serde_json::{Value, json};

use super::Shared;
use super::body::MockBody;
use super::routes::{error_response, json_response};

pub(crate) fn handle(
    method: &Method,
    op: &str,
    body: &[u8],
    shared: &Shared,
) -> Response<MockBody> {
    match (method, op) {
        (&Method::GET, "requests") => {
            let requests: Vec<Value> = shared
                .lock_requests()
                .iter()
                .map(|r| {
                    let mut headers = serde_json::Map::new();
                    for (name, value) in &r.headers {
                        match headers.get_mut(name) {
                            Some(Value::String(existing)) => {
                                existing.push_str(", ");
                                existing.push_str(value);
                            }
                            _ => {
                                headers.insert(name.clone(), Value::String(value.clone()));
                            }
                        }
                    }
                    json!({
                        "method": r.method,
                        "path": r.path,
                        "headers": headers,
                        "body": String::from_utf8_lossy(&r.body),
                        "body_len": r.body.len(),
                    })
                })
                .collect();
            json_response(StatusCode::OK, &Value::Array(requests))
        }
        (&Method::GET, "stats") => json_response(StatusCode::OK, &shared.stats()),
        (&Method::POST, "reject-key") => {
            let key = String::from_utf8_lossy(body).trim().to_owned();
            shared.reject_key(&key);
            json_response(StatusCode::OK, &shared.stats())
        }
        (&Method::POST, "restrict-key") => {
            let req: Value = serde_json::from_slice(body).unwrap_or(Value::Null);
            match (
                req["key"].as_str(),
                req["path"].as_str(),
                req["scope"].as_str(),
            ) {
                (Some(key), Some(path), Some(scope)) => {
                    shared.restrict_key(key, path, scope);
                    json_response(StatusCode::OK, &shared.stats())
                }
                _ => error_response(
                    StatusCode::BAD_REQUEST,
                    "mock control: restrict-key takes {\"key\",\"path\",\"scope\"}",
                    "invalid_request_error",
                    None,
                ),
            }
        }
        (&Method::POST, "reset") => {
            shared.reset();
            json_response(StatusCode::OK, &shared.stats())
        }
        _ => error_response(
            StatusCode::NOT_FOUND,
            &format!("mock control: no {method} /__mock/{op}"),
            "invalid_request_error",
            None,
        ),
    }
}
