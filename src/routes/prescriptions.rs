//! Prescriptions.

use actix_web::http::{Method, StatusCode};
use actix_web::{web, HttpRequest, HttpResponse};

use super::openapi::{ErrorDoc, IdempotencyKey, IfMatch, IfNoneMatch};
use super::{def, idempotent, RouteDef};
use crate::auth::Bearer;
use crate::error::AppError;
use crate::extract::{path_id, Expected, Json, NoQuery};
use crate::models::prescription::PrescriptionView;
use crate::server::AppState;
use crate::services::prescriptions::{self, AcknowledgeInput, CreateInput, UpdateInput};

pub(crate) fn routes() -> Vec<RouteDef> {
    vec![
        def(
            Method::POST,
            "/api/v1/prescriptions",
            web::route().to(create),
        ),
        def(
            Method::GET,
            "/api/v1/prescriptions/{id}",
            web::route().to(get),
        ),
        def(
            Method::PUT,
            "/api/v1/prescriptions/{id}",
            web::route().to(update),
        ),
        def(
            Method::POST,
            "/api/v1/prescriptions/{id}/acknowledge",
            web::route().to(acknowledge),
        ),
    ]
}

/// Writes the prescription of a completed appointment (its doctor only; one per appointment).
#[utoipa::path(post, operation_id = "prescriptions_create", path = "/api/v1/prescriptions", tag = "prescriptions", security(("bearer" = [])),
    request_body = CreateInput, params(IdempotencyKey),
    responses(
        (status = 201, description = "Created", body = PrescriptionView, headers(("ETag" = String), ("Location" = String))),
        (status = 400, description = "Not JSON", body = ErrorDoc),
        (status = 401, description = "UNAUTHENTICATED", body = ErrorDoc),
        (status = 403, description = "Not the appointment's doctor", body = ErrorDoc),
        (status = 404, description = "Appointment missing or not visible", body = ErrorDoc),
        (status = 409, description = "PRESCRIPTION_EXISTS, IDEMPOTENCY_KEY_IN_USE", body = ErrorDoc),
        (status = 422, description = "APPOINTMENT_NOT_COMPLETED, VALIDATION_FAILED, IDEMPOTENCY_KEY_MISMATCH", body = ErrorDoc),
    ))]
pub(crate) async fn create(
    state: web::Data<AppState>,
    req: HttpRequest,
    bearer: Bearer,
    _: NoQuery,
    Json(input): Json<CreateInput>,
) -> Result<HttpResponse, AppError> {
    let contention = state.contention.clone();
    idempotent::post(&state, &req, bearer, move |conn, caller| {
        let created = prescriptions::create(conn, caller, &input, &contention)?;
        let location = format!("/api/v1/prescriptions/{}", created.id);
        idempotent::json(
            StatusCode::CREATED,
            Some(location),
            created.version,
            &created.view(),
        )
    })
    .await
}

/// A prescription: its doctor, its patient or an admin.
#[utoipa::path(get, operation_id = "prescriptions_get", path = "/api/v1/prescriptions/{id}", tag = "prescriptions", security(("bearer" = [])),
    params(("id" = i32, Path, description = "Prescription id"), IfNoneMatch),
    responses(
        (status = 200, description = "The prescription", body = PrescriptionView, headers(("ETag" = String))),
        (status = 304, description = "Not modified: If-None-Match names the current version", headers(("ETag" = String))),
        (status = 401, description = "UNAUTHENTICATED", body = ErrorDoc),
        (status = 404, description = "Missing or not visible", body = ErrorDoc),
    ))]
pub(crate) async fn get(
    state: web::Data<AppState>,
    req: HttpRequest,
    bearer: Bearer,
    _: NoQuery,
) -> Result<HttpResponse, AppError> {
    let id = path_id(&req, "id")?;
    let found = state
        .as_caller(bearer, move |conn, caller| {
            prescriptions::get(conn, caller, id)
        })
        .await?;
    Ok(super::versioned(
        StatusCode::OK,
        found.version,
        &found.view(),
    ))
}

/// Changes medications or notes (its doctor, until acknowledged).
#[utoipa::path(put, operation_id = "prescriptions_update", path = "/api/v1/prescriptions/{id}", tag = "prescriptions", security(("bearer" = [])),
    request_body = UpdateInput,
    params(("id" = i32, Path, description = "Prescription id"), IfMatch),
    responses(
        (status = 200, description = "Changed, version + 1 (a change to what it already is: as it is, same version)", body = PrescriptionView, headers(("ETag" = String))),
        (status = 400, description = "Not JSON, a malformed If-Match, or an If-None-Match (for reads only)", body = ErrorDoc),
        (status = 401, description = "UNAUTHENTICATED", body = ErrorDoc),
        (status = 403, description = "Not its doctor", body = ErrorDoc),
        (status = 404, description = "Missing or not visible", body = ErrorDoc),
        (status = 409, description = "ALREADY_ACKNOWLEDGED, VERSION_CONFLICT (with current)", body = ErrorDoc),
        (status = 412, description = "If-Match does not match", body = ErrorDoc),
        (status = 422, description = "VALIDATION_FAILED", body = ErrorDoc),
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
        .as_caller(bearer, move |conn, caller| {
            prescriptions::update(conn, caller, id, &input, expected, &contention)
        })
        .await?;
    Ok(super::versioned(
        StatusCode::OK,
        updated.version,
        &updated.view(),
    ))
}

/// The patient acknowledges the prescription, once.
#[utoipa::path(post, operation_id = "prescriptions_acknowledge", path = "/api/v1/prescriptions/{id}/acknowledge", tag = "prescriptions", security(("bearer" = [])),
    request_body(content = AcknowledgeInput, description = "Optional; an empty body is {}"),
    params(("id" = i32, Path, description = "Prescription id"), IfMatch, IdempotencyKey),
    responses(
        (status = 200, description = "Acknowledged", body = PrescriptionView, headers(("ETag" = String))),
        (status = 400, description = "Not JSON, a malformed If-Match, or an If-None-Match (for reads only)", body = ErrorDoc),
        (status = 401, description = "UNAUTHENTICATED", body = ErrorDoc),
        (status = 403, description = "Not its patient", body = ErrorDoc),
        (status = 404, description = "Missing or not visible", body = ErrorDoc),
        (status = 409, description = "ALREADY_ACKNOWLEDGED, VERSION_CONFLICT", body = ErrorDoc),
        (status = 412, description = "If-Match does not match", body = ErrorDoc),
    ))]
pub(crate) async fn acknowledge(
    state: web::Data<AppState>,
    req: HttpRequest,
    bearer: Bearer,
    _: NoQuery,
    Json(input): Json<AcknowledgeInput>,
) -> Result<HttpResponse, AppError> {
    let id = path_id(&req, "id")?;
    let expected = Expected::from_request(&req, input.version)?;
    let contention = state.contention.clone();
    idempotent::post(&state, &req, bearer, move |conn, caller| {
        let updated = prescriptions::acknowledge(conn, caller, id, expected, &contention)?;
        idempotent::json(StatusCode::OK, None, updated.version, &updated.view())
    })
    .await
}
