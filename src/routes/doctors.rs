//! The doctor directory.

use actix_web::{web, HttpRequest, HttpResponse};
use chrono::Duration;
use serde::Deserialize;
use serde_json::json;

use crate::auth::Caller;
use crate::db::run_blocking;
use crate::error::AppError;
use crate::extract::{parse_query, path_id};
use crate::server::AppState;
use crate::services::doctors;
use crate::services::pagination::{parse_limit, Cursor};

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.route("/doctors", web::get().to(list))
        .route("/doctors/{id}", web::get().to(get))
        .route("/doctors/{id}/busy", web::get().to(busy));
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ListQuery {
    limit: Option<String>,
    cursor: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct BusyQuery {
    from: Option<String>,
    to: Option<String>,
}

/// `GET /api/v1/doctors`: active doctors with their rating summary.
async fn list(
    state: web::Data<AppState>,
    req: HttpRequest,
    _caller: Caller,
) -> Result<HttpResponse, AppError> {
    let query: ListQuery = parse_query(&req)?;
    let limit = parse_limit(query.limit.as_deref())?;
    let cursor = query.cursor.as_deref().map(Cursor::decode).transpose()?;
    let page = run_blocking(&state.pool, move |conn| doctors::list(conn, limit, cursor)).await?;
    Ok(HttpResponse::Ok().json(page))
}

/// `GET /api/v1/doctors/{id}`.
async fn get(
    state: web::Data<AppState>,
    req: HttpRequest,
    _caller: Caller,
) -> Result<HttpResponse, AppError> {
    let id = path_id(&req, "id")?;
    let doctor = run_blocking(&state.pool, move |conn| doctors::get(conn, id)).await?;
    Ok(HttpResponse::Ok().json(doctor))
}

/// `GET /api/v1/doctors/{id}/busy?from=&to=`: defaults to the next 7 days from now.
async fn busy(
    state: web::Data<AppState>,
    req: HttpRequest,
    _caller: Caller,
) -> Result<HttpResponse, AppError> {
    let id = path_id(&req, "id")?;
    let query: BusyQuery = parse_query(&req)?;
    let time = |field: &str, raw: Option<&str>| {
        raw.map(|raw| crate::time::parse(raw).map_err(|e| AppError::invalid(field, e)))
            .transpose()
    };
    let from = time("from", query.from.as_deref())?.unwrap_or_else(crate::time::now);
    let to = time("to", query.to.as_deref())?.unwrap_or(from + Duration::days(7));
    let items = run_blocking(&state.pool, move |conn| doctors::busy(conn, id, from, to)).await?;
    Ok(HttpResponse::Ok().json(json!({ "items": items })))
}
