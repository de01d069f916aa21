use actix_web::{HttpResponse, web};

use crate::state::AppState;

/// Liveness: the process answers.
pub async fn healthz() -> HttpResponse {
    HttpResponse::Ok().json(serde_json::json!({"status": "ok"}))
}

/// Readiness: the store answers and a master key is loaded.
pub async fn readyz(st: web::Data<AppState>) -> HttpResponse {
    match st.store.ping().await {
        Ok(()) => HttpResponse::Ok().json(serde_json::json!({"status": "ready"})),
        Err(e) => {
            tracing::error!(error = %e, "store not ready");
            HttpResponse::ServiceUnavailable()
                .json(serde_json::json!({"status": "store unavailable"}))
        }
    }
}
