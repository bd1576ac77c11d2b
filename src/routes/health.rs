//! Liveness and readiness.

use actix_web::http::Method;
use actix_web::{web, HttpResponse};
use diesel::connection::SimpleConnection;
use serde_json::json;

use super::{def, RouteDef};
use crate::db::run_blocking;
use crate::error::AppError;
use crate::server::AppState;

pub(crate) fn routes() -> Vec<RouteDef> {
    vec![
        def(Method::GET, "/healthz", web::route().to(healthz)),
        def(Method::GET, "/readyz", web::route().to(readyz)),
    ]
}

/// The process is up.
#[utoipa::path(get, operation_id = "health_healthz", path = "/healthz", tag = "operations",
    responses((status = 200, description = "The process is up")))]
pub(crate) async fn healthz() -> HttpResponse {
    HttpResponse::Ok().json(json!({ "status": "ok" }))
}

/// The database answers.
#[utoipa::path(get, operation_id = "health_readyz", path = "/readyz", tag = "operations",
    responses(
        (status = 200, description = "The database answers"),
        (status = 503, description = "The database is unreachable", body = crate::routes::openapi::ErrorDoc,
            headers(("Retry-After" = String, description = "Seconds to wait"))),
    ))]
pub(crate) async fn readyz(state: web::Data<AppState>) -> Result<HttpResponse, AppError> {
    run_blocking(&state.pool, |conn| {
        conn.batch_execute("SELECT 1")
            .map_err(|e| AppError::Unavailable(format!("readiness check: {e}")))
    })
    .await?;
    Ok(HttpResponse::Ok().json(json!({ "status": "ready" })))
}
