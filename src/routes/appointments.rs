//! Appointments: booking, reading, the lifecycle, history.

use actix_web::http::{Method, StatusCode};
use actix_web::{web, HttpRequest, HttpResponse};
use serde::Deserialize;
use serde_json::json;
use utoipa::IntoParams;

use super::openapi::{
    AppointmentPage, ErrorDoc, HistoryList, IdempotencyKey, IfMatch, IfNoneMatch,
};
use super::{def, idempotent, RouteDef};
use crate::auth::Bearer;
use crate::domain::Status;
use crate::error::AppError;
use crate::extract::{parse_query, path_id, time_param, Expected, Json, NoQuery};
use crate::models::appointment::AppointmentView;
use crate::models::prescription::PrescriptionView;
use crate::server::AppState;
use crate::services::appointments::{self, ListFilter, UpdateInput};
use crate::services::booking::{self, BookingInput};
use crate::services::pagination::{parse_limit, Cursor};
use crate::services::prescriptions;

pub(crate) fn routes() -> Vec<RouteDef> {
    vec![
        def(
            Method::POST,
            "/api/v1/appointments",
            web::route().to(create),
        ),
        def(Method::GET, "/api/v1/appointments", web::route().to(list)),
        def(
            Method::GET,
            "/api/v1/appointments/{id}",
            web::route().to(get),
        ),
        def(
            Method::PUT,
            "/api/v1/appointments/{id}",
            web::route().to(update),
        ),
        def(
            Method::PATCH,
            "/api/v1/appointments/{id}",
            web::route().to(patch),
        ),
        def(
            Method::GET,
            "/api/v1/appointments/{id}/history",
            web::route().to(history),
        ),
        def(
            Method::GET,
            "/api/v1/appointments/{id}/prescription",
            web::route().to(prescription),
        ),
    ]
}

/// Books an appointment: the one path with pessimistic locking.
#[utoipa::path(post, operation_id = "appointments_create", path = "/api/v1/appointments", tag = "appointments", security(("bearer" = [])),
    request_body = BookingInput, params(IdempotencyKey),
    responses(
        (status = 201, description = "Booked, status pending, version 1", body = AppointmentView,
            headers(("ETag" = String), ("Location" = String))),
        (status = 400, description = "Not JSON", body = ErrorDoc),
        (status = 401, description = "UNAUTHENTICATED", body = ErrorDoc),
        (status = 403, description = "Doctors do not book; patients book only for themselves", body = ErrorDoc),
        (status = 404, description = "Unknown doctor, or not a doctor", body = ErrorDoc),
        (status = 409, description = "SLOT_TAKEN, PATIENT_BUSY, DOCTOR_INACTIVE, PATIENT_INACTIVE, DEADLOCK_DETECTED, LOCK_TIMEOUT, IDEMPOTENCY_KEY_IN_USE", body = ErrorDoc),
        (status = 413, description = "Body over 64 KiB", body = ErrorDoc),
        (status = 422, description = "VALIDATION_FAILED (past time, duration, type), IDEMPOTENCY_KEY_MISMATCH", body = ErrorDoc),
        (status = 503, description = "Database unavailable", body = ErrorDoc, headers(("Retry-After" = String))),
    ))]
pub(crate) async fn create(
    state: web::Data<AppState>,
    req: HttpRequest,
    bearer: Bearer,
    _: NoQuery,
    Json(input): Json<BookingInput>,
) -> Result<HttpResponse, AppError> {
    let contention = state.contention.clone();
    idempotent::post(&state, &req, bearer, move |conn, caller| {
        let booked = booking::book(conn, caller, &input, &contention)?;
        let location = format!("/api/v1/appointments/{}", booked.id);
        idempotent::json(
            StatusCode::CREATED,
            Some(location),
            booked.version,
            &booked.view(),
        )
    })
    .await
}

/// `?status=&from=&to=&limit=&cursor=`.
#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub(crate) struct ListQuery {
    /// One status.
    status: Option<String>,
    /// `scheduled_at` at or after this time (RFC 3339 or `YYYY-MM-DD HH:MM:SS` UTC, in the
    /// years 0001–9999 in UTC; an offset's `+` sent as `%2B`).
    from: Option<String>,
    /// `scheduled_at` before this time (after `from`, if both are given).
    to: Option<String>,
    /// Page size, 1–100 (default 50).
    limit: Option<String>,
    /// `next_cursor` of the previous page.
    cursor: Option<String>,
}

/// The caller's appointments (patient/doctor: their own; admin: all), by `scheduled_at`.
#[utoipa::path(get, operation_id = "appointments_list", path = "/api/v1/appointments", tag = "appointments", security(("bearer" = [])),
    params(ListQuery),
    responses(
        (status = 200, description = "A page of appointments", body = AppointmentPage),
        (status = 400, description = "Unknown parameter or bad cursor", body = ErrorDoc),
        (status = 401, description = "UNAUTHENTICATED", body = ErrorDoc),
        (status = 422, description = "Bad status, time, range or limit", body = ErrorDoc),
    ))]
pub(crate) async fn list(
    state: web::Data<AppState>,
    req: HttpRequest,
    bearer: Bearer,
) -> Result<HttpResponse, AppError> {
    let query: ListQuery = parse_query(&req)?;
    let status = query
        .status
        .as_deref()
        .map(|raw| {
            Status::parse(raw)
                .ok_or_else(|| AppError::invalid("status", format!("unknown status {raw:?}")))
        })
        .transpose()?;
    let filter = ListFilter {
        status,
        from: time_param("from", query.from.as_deref())?,
        to: time_param("to", query.to.as_deref())?,
        limit: parse_limit(query.limit.as_deref())?,
        cursor: query.cursor.as_deref().map(Cursor::decode).transpose()?,
    };
    let page = state
        .as_caller(bearer, move |conn, caller| {
            appointments::list(conn, caller, &filter)
        })
        .await?;
    Ok(HttpResponse::Ok().json(page.map(|a| a.view())))
}

/// One appointment: its patient, its doctor or an admin.
#[utoipa::path(get, operation_id = "appointments_get", path = "/api/v1/appointments/{id}", tag = "appointments", security(("bearer" = [])),
    params(("id" = i32, Path, description = "Appointment id"), IfNoneMatch),
    responses(
        (status = 200, description = "The appointment", body = AppointmentView, headers(("ETag" = String))),
        (status = 304, description = "Not modified: If-None-Match names the current version", headers(("ETag" = String))),
        (status = 401, description = "UNAUTHENTICATED", body = ErrorDoc),
        (status = 404, description = "Missing or not visible to the caller", body = ErrorDoc),
    ))]
pub(crate) async fn get(
    state: web::Data<AppState>,
    req: HttpRequest,
    bearer: Bearer,
    _: NoQuery,
) -> Result<HttpResponse, AppError> {
    let id = path_id(&req, "id")?;
    let found = state
        .as_caller_with_appointment(bearer, id, move |_, caller, found| {
            appointments::get(caller, found)
        })
        .await?;
    Ok(super::versioned(
        StatusCode::OK,
        found.version,
        &found.view(),
    ))
}

/// Moves the status, reschedules (`scheduled_at`/`duration_minutes`, back to pending) or
/// changes the reason; optimistic (`version` in the body → 409, `If-Match` → 412).
#[utoipa::path(put, operation_id = "appointments_update", path = "/api/v1/appointments/{id}", tag = "appointments", security(("bearer" = [])),
    request_body = UpdateInput,
    params(("id" = i32, Path, description = "Appointment id"), IfMatch),
    responses(
        (status = 200, description = "Changed, version + 1 (a change to what it already is: as it is, same version)", body = AppointmentView, headers(("ETag" = String))),
        (status = 400, description = "Not JSON, a malformed If-Match, or an If-None-Match (for reads only)", body = ErrorDoc),
        (status = 401, description = "UNAUTHENTICATED", body = ErrorDoc),
        (status = 403, description = "The move is allowed to someone else", body = ErrorDoc),
        (status = 404, description = "Missing or not visible", body = ErrorDoc),
        (status = 409, description = "VERSION_CONFLICT (with current), SLOT_TAKEN, PATIENT_BUSY, DEADLOCK_DETECTED, LOCK_TIMEOUT", body = ErrorDoc),
        (status = 412, description = "If-Match does not match", body = ErrorDoc),
        (status = 422, description = "INVALID_TRANSITION or VALIDATION_FAILED", body = ErrorDoc),
    ))]
pub(crate) async fn update(
    state: web::Data<AppState>,
    req: HttpRequest,
    bearer: Bearer,
    _: NoQuery,
    Json(input): Json<UpdateInput>,
) -> Result<HttpResponse, AppError> {
    let id = path_id(&req, "id")?;
    let expected = Expected::from_request(&req, input.version)?;
    let contention = state.contention.clone();
    let updated = state
        .as_caller_with_appointment(bearer, id, move |conn, caller, found| {
            appointments::update(conn, caller, id, found, &input, expected, &contention)
        })
        .await?;
    Ok(super::versioned(
        StatusCode::OK,
        updated.version,
        &updated.view(),
    ))
}

/// The same as `PUT`.
#[utoipa::path(patch, operation_id = "appointments_patch", path = "/api/v1/appointments/{id}", tag = "appointments", security(("bearer" = [])),
    request_body = UpdateInput,
    params(("id" = i32, Path, description = "Appointment id"), IfMatch),
    responses(
        (status = 200, description = "Changed, version + 1 (a change to what it already is: as it is, same version)", body = AppointmentView, headers(("ETag" = String))),
        (status = 400, description = "Not JSON, a malformed If-Match, or an If-None-Match (for reads only)", body = ErrorDoc),
        (status = 401, description = "UNAUTHENTICATED", body = ErrorDoc),
        (status = 403, description = "The move is allowed to someone else", body = ErrorDoc),
        (status = 404, description = "Missing or not visible", body = ErrorDoc),
        (status = 409, description = "VERSION_CONFLICT (with current), SLOT_TAKEN, PATIENT_BUSY, DEADLOCK_DETECTED, LOCK_TIMEOUT", body = ErrorDoc),
        (status = 412, description = "If-Match does not match", body = ErrorDoc),
        (status = 422, description = "INVALID_TRANSITION or VALIDATION_FAILED", body = ErrorDoc),
    ))]
pub(crate) async fn patch(
    state: web::Data<AppState>,
    req: HttpRequest,
    bearer: Bearer,
    no_query: NoQuery,
    input: Json<UpdateInput>,
) -> Result<HttpResponse, AppError> {
    update(state, req, bearer, no_query, input).await
}

/// Every change of an appointment, oldest first.
#[utoipa::path(get, operation_id = "appointments_history", path = "/api/v1/appointments/{id}/history", tag = "appointments", security(("bearer" = [])),
    params(("id" = i32, Path, description = "Appointment id")),
    responses(
        (status = 200, description = "History rows, one per version", body = HistoryList),
        (status = 401, description = "UNAUTHENTICATED", body = ErrorDoc),
        (status = 404, description = "Missing or not visible", body = ErrorDoc),
    ))]
pub(crate) async fn history(
    state: web::Data<AppState>,
    req: HttpRequest,
    bearer: Bearer,
    _: NoQuery,
) -> Result<HttpResponse, AppError> {
    let id = path_id(&req, "id")?;
    let items = state
        .as_caller(bearer, move |conn, caller| {
            appointments::history(conn, caller, id)
        })
        .await?;
    Ok(HttpResponse::Ok().json(json!({ "items": items })))
}

/// The prescription of an appointment.
#[utoipa::path(get, operation_id = "appointments_prescription", path = "/api/v1/appointments/{id}/prescription", tag = "prescriptions", security(("bearer" = [])),
    params(("id" = i32, Path, description = "Appointment id"), IfNoneMatch),
    responses(
        (status = 200, description = "The prescription", body = PrescriptionView, headers(("ETag" = String))),
        (status = 304, description = "Not modified: If-None-Match names the current version", headers(("ETag" = String))),
        (status = 401, description = "UNAUTHENTICATED", body = ErrorDoc),
        (status = 404, description = "No prescription, or not visible", body = ErrorDoc),
    ))]
pub(crate) async fn prescription(
    state: web::Data<AppState>,
    req: HttpRequest,
    bearer: Bearer,
    _: NoQuery,
) -> Result<HttpResponse, AppError> {
    let id = path_id(&req, "id")?;
    let found = state
        .as_caller(bearer, move |conn, caller| {
            prescriptions::for_appointment(conn, caller, id)
        })
        .await?;
    Ok(super::versioned(
        StatusCode::OK,
        found.version,
        &found.view(),
    ))
}
