use keygate_testkit::browser::Browser;
use reqwest::Response;
use serde_json::Value;

/// Asserts an OpenAI-shaped error with this status and code; returns the body.
pub async fn assert_openai_error(res: Response, status: u16, code: &str) -> Value {
    assert_eq!(res.status().as_u16(), status, "status");
    assert!(
        res.headers().contains_key("x-request-id"),
        "x-request-id missing"
    );
    assert_eq!(
        res.headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok()),
        Some("application/json")
    );
    let body: Value = res.json().await.expect("JSON error body");
    let err = &body["error"];
    assert_eq!(err["code"], code, "{body}");
    assert!(
        err["message"].as_str().is_some_and(|m| !m.is_empty()),
        "{body}"
    );
    assert!(err["type"].is_string(), "{body}");
    assert!(err.as_object().unwrap().contains_key("param"), "{body}");
    body
}

pub fn chat(model: &str) -> Value {
    serde_json::json!({"model": model, "messages": [{"role": "user", "content": "Hi"}]})
}

pub fn chat_stream(model: &str) -> Value {
    serde_json::json!({"model": model, "stream": true, "messages": [{"role": "user", "content": "Hi"}]})
}

/// The body of a response with this status (the body is shown when it is another).
pub async fn json_of(res: Response, status: u16) -> Value {
    let got = res.status().as_u16();
    let body: Value = res.json().await.unwrap_or(Value::Null);
    assert_eq!(got, status, "{body}");
    body
}

/// The `param` a 400 `invalid_request` names.
pub async fn param_of(res: Response) -> Value {
    assert_openai_error(res, 400, "invalid_request").await["error"]["param"].clone()
}

/// The person's grant with this id, as their list shows it (`None`: not listed).
pub async fn listed(b: &Browser, id: &str) -> Option<Value> {
    let all: Value = b.get("/api/grants").await.json().await.unwrap();
    all.as_array()
        .unwrap()
        .iter()
        .find(|g| g["id"] == id)
        .cloned()
}
