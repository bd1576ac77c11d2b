//! Liveness and readiness.

use actix_web::{get, web, HttpResponse};
use diesel::connection::SimpleConnection;
use serde_json::json;

use crate::db::run_blocking;
use crate::error::AppError;
use crate::server::AppState;

/// `GET /healthz`: the process is up.
#[get("/healthz")]
pub async fn healthz() -> HttpResponse {
    HttpResponse::Ok().json(json!({ "status": "ok" }))
}

/// `GET /readyz`: the database answers (else 503 with `Retry-After`).
#[get("/readyz")]
pub async fn readyz(state: web::Data<AppState>) -> Result<HttpResponse, AppError> {
    run_blocking(&state.pool, |conn| {
        conn.batch_execute("SELECT 1")
            .map_err(|e| AppError::Unavailable(format!("readiness check: {e}")))
    })
    .await?;
    Ok(HttpResponse::Ok().json(json!({ "status": "ready" })))
}
