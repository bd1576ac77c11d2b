//! Operators' views: `/metrics`, the lock statistics, and the `/admin` dashboard page.

use actix_web::http::{header, Method};
use actix_web::{web, HttpRequest, HttpResponse};
use sha2::{Digest, Sha256};

use super::openapi::ErrorDoc;
use super::{def, RouteDef};
use crate::auth::Bearer;
use crate::error::AppError;
use crate::extract::NoQuery;
use crate::server::AppState;
use crate::telemetry::{self, LockStatsView};

pub(crate) fn routes() -> Vec<RouteDef> {
    vec![
        def(Method::GET, "/metrics", web::route().to(metrics)),
        def(
            Method::GET,
            "/api/v1/admin/lock-stats",
            web::route().to(lock_stats),
        ),
        def(Method::GET, "/admin", web::route().to(dashboard)),
    ]
}

/// Prometheus metrics (OpenMetrics text). Open unless `MEDBOOK_METRICS_TOKEN` is set; then
/// that bearer token is required.
#[utoipa::path(get, operation_id = "observability_metrics", path = "/metrics", tag = "operations",
    responses(
        (status = 200, description = "Metrics in the Prometheus/OpenMetrics text format", content_type = "application/openmetrics-text"),
        (status = 401, description = "MEDBOOK_METRICS_TOKEN is set and was not given", body = ErrorDoc),
    ))]
pub(crate) async fn metrics(
    state: web::Data<AppState>,
    req: HttpRequest,
) -> Result<HttpResponse, AppError> {
    if let Some(expected) = &state.metrics_token {
        let given = crate::auth::bearer_token(&req).unwrap_or_default();
        // Compare digests, so the comparison time does not depend on the token.
        if Sha256::digest(given.as_bytes()) != Sha256::digest(expected.as_bytes()) {
            return Err(AppError::Unauthenticated);
        }
    }
    let text = telemetry::render(&state.telemetry, &state.pool)
        .map_err(|e| AppError::internal(format!("metrics encoding: {e}")))?;
    Ok(HttpResponse::Ok()
        .content_type("application/openmetrics-text; version=1.0.0; charset=utf-8")
        .body(text))
}

/// Lock statistics of this process (admin only).
#[utoipa::path(get, operation_id = "observability_lock_stats", path = "/api/v1/admin/lock-stats", tag = "admin",
    security(("bearer" = [])),
    responses(
        (status = 200, description = "Lock statistics since start", body = LockStatsView),
        (status = 401, description = "UNAUTHENTICATED", body = ErrorDoc),
        (status = 403, description = "Not an admin", body = ErrorDoc),
    ))]
pub(crate) async fn lock_stats(
    state: web::Data<AppState>,
    bearer: Bearer,
    _: NoQuery,
) -> Result<HttpResponse, AppError> {
    state
        .as_caller(bearer, |_, caller| caller.require_admin())
        .await?;
    Ok(HttpResponse::Ok().json(state.telemetry.locks.view()))
}

/// The live lock dashboard: one self-contained page (no CDN) that signs in and polls
/// the lock statistics.
#[utoipa::path(get, operation_id = "observability_dashboard", path = "/admin", tag = "operations",
    responses((status = 200, description = "The dashboard page", content_type = "text/html")))]
pub(crate) async fn dashboard() -> HttpResponse {
    HttpResponse::Ok()
        .content_type("text/html; charset=utf-8")
        .insert_header((header::CONTENT_SECURITY_POLICY, dashboard_policy()))
        .body(DASHBOARD)
}

const DASHBOARD: &str = include_str!("../../static/admin.html");

/// The dashboard's Content-Security-Policy: its one inline script (by hash) and styles, calls
/// to this server only, and no framing (it has a sign-in form: no other site may overlay it).
/// An injected script or a request elsewhere is refused by the browser.
fn dashboard_policy() -> &'static str {
    static POLICY: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    POLICY.get_or_init(|| {
        use base64::Engine;
        let script = DASHBOARD
            .split_once("<script>")
            .and_then(|(_, rest)| rest.split_once("</script>"))
            .map_or("", |(script, _)| script);
        let hash = base64::engine::general_purpose::STANDARD.encode(Sha256::digest(script));
        format!(
            "default-src 'none'; script-src 'sha256-{hash}'; style-src 'unsafe-inline'; \
             connect-src 'self'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
        )
    })
}
