//! The doctor directory.

use actix_web::http::Method;
use actix_web::{web, HttpRequest, HttpResponse};
use chrono::Duration;
use serde::Deserialize;
use serde_json::json;
use utoipa::IntoParams;

use super::openapi::{BusyList, DoctorPage, ErrorDoc};
use super::{def, RouteDef};
use crate::auth::Bearer;
use crate::error::AppError;
use crate::extract::{parse_query, path_id, time_param, NoQuery};
use crate::server::AppState;
use crate::services::doctors::{self, DoctorView};
use crate::services::pagination::{parse_limit, Cursor};

pub(crate) fn routes() -> Vec<RouteDef> {
    vec![
        def(Method::GET, "/api/v1/doctors", web::route().to(list)),
        def(Method::GET, "/api/v1/doctors/{id}", web::route().to(get)),
        def(
            Method::GET,
            "/api/v1/doctors/{id}/busy",
            web::route().to(busy),
        ),
    ]
}

/// `?limit=&cursor=`.
#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub(crate) struct ListQuery {
    /// Page size, 1–100 (default 50).
    limit: Option<String>,
    /// `next_cursor` of the previous page.
    cursor: Option<String>,
}

/// `?from=&to=`.
#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub(crate) struct BusyQuery {
    /// Start of the range (RFC 3339 or `YYYY-MM-DD HH:MM:SS` UTC, in the years 0001–9999 in
    /// UTC; an offset's `+` sent as `%2B`); default now.
    from: Option<String>,
    /// End of the range, exclusive; default `from` + 7 days; at most 62 days after `from`.
    to: Option<String>,
}

/// Active doctors with their rating summary.
#[utoipa::path(get, operation_id = "doctors_list", path = "/api/v1/doctors", tag = "doctors", security(("bearer" = [])),
    params(ListQuery),
    responses(
        (status = 200, description = "A page of active doctors", body = DoctorPage),
        (status = 400, description = "Unknown parameter or bad cursor", body = ErrorDoc),
        (status = 401, description = "UNAUTHENTICATED", body = ErrorDoc),
        (status = 422, description = "limit out of range", body = ErrorDoc),
    ))]
pub(crate) async fn list(
    state: web::Data<AppState>,
    req: HttpRequest,
    bearer: Bearer,
) -> Result<HttpResponse, AppError> {
    let query: ListQuery = parse_query(&req)?;
    let limit = parse_limit(query.limit.as_deref())?;
    let cursor = query.cursor.as_deref().map(Cursor::decode).transpose()?;
    let page = state
        .as_caller(bearer, move |conn, _| doctors::list(conn, limit, cursor))
        .await?;
    Ok(HttpResponse::Ok().json(page))
}

/// One active doctor.
#[utoipa::path(get, operation_id = "doctors_get", path = "/api/v1/doctors/{id}", tag = "doctors", security(("bearer" = [])),
    params(("id" = i32, Path, description = "Doctor id")),
    responses(
        (status = 200, description = "The doctor", body = DoctorView),
        (status = 401, description = "UNAUTHENTICATED", body = ErrorDoc),
        (status = 404, description = "No such active doctor", body = ErrorDoc),
    ))]
pub(crate) async fn get(
    state: web::Data<AppState>,
    req: HttpRequest,
    bearer: Bearer,
    _: NoQuery,
) -> Result<HttpResponse, AppError> {
    let id = path_id(&req, "id")?;
    let doctor = state
        .as_caller(bearer, move |conn, _| doctors::get(conn, id))
        .await?;
    Ok(HttpResponse::Ok().json(doctor))
}

/// A doctor's busy intervals (active appointments) in a range, without patient data.
#[utoipa::path(get, operation_id = "doctors_busy", path = "/api/v1/doctors/{id}/busy", tag = "doctors", security(("bearer" = [])),
    params(("id" = i32, Path, description = "Doctor id"), BusyQuery),
    responses(
        (status = 200, description = "Busy intervals overlapping [from, to)", body = BusyList),
        (status = 400, description = "Unknown parameter", body = ErrorDoc),
        (status = 401, description = "UNAUTHENTICATED", body = ErrorDoc),
        (status = 404, description = "No such active doctor", body = ErrorDoc),
        (status = 422, description = "Bad time or range", body = ErrorDoc),
    ))]
pub(crate) async fn busy(
    state: web::Data<AppState>,
    req: HttpRequest,
    bearer: Bearer,
) -> Result<HttpResponse, AppError> {
    let id = path_id(&req, "id")?;
    let query: BusyQuery = parse_query(&req)?;
    let from = time_param("from", query.from.as_deref())?.unwrap_or_else(crate::time::now);
    // `from` is at most `time::LATEST`, so the week after it is a time chrono holds; past
    // `LATEST` it would no longer compare as a time on SQLite.
    let to = time_param("to", query.to.as_deref())?
        .unwrap_or_else(|| (from + Duration::days(7)).min(crate::time::LATEST));
    let items = state
        .as_caller(bearer, move |conn, _| doctors::busy(conn, id, from, to))
        .await?;
    Ok(HttpResponse::Ok().json(json!({ "items": items })))
}
