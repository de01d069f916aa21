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
