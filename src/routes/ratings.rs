//! Ratings.

use actix_web::http::{Method, StatusCode};
use actix_web::{web, HttpRequest, HttpResponse};

use super::openapi::{ErrorDoc, IdempotencyKey, IfMatch, IfNoneMatch};
use super::{def, idempotent, RouteDef};
use crate::auth::Bearer;
use crate::error::AppError;
use crate::extract::{path_id, Expected, Json, NoQuery};
use crate::models::rating::Rating;
use crate::server::AppState;
use crate::services::ratings::{self, CreateInput, UpdateInput};

pub(crate) fn routes() -> Vec<RouteDef> {
    vec![
        def(Method::POST, "/api/v1/ratings", web::route().to(create)),
        def(Method::GET, "/api/v1/ratings/{id}", web::route().to(get)),
        def(Method::PUT, "/api/v1/ratings/{id}", web::route().to(update)),
    ]
}

/// Rates a completed appointment (its patient; one per appointment).
#[utoipa::path(post, operation_id = "ratings_create", path = "/api/v1/ratings", tag = "ratings", security(("bearer" = [])),
    request_body = CreateInput, params(IdempotencyKey),
    responses(
        (status = 201, description = "Created", body = Rating, headers(("ETag" = String), ("Location" = String))),
        (status = 400, description = "Not JSON", body = ErrorDoc),
        (status = 401, description = "UNAUTHENTICATED", body = ErrorDoc),
        (status = 403, description = "Not the appointment's patient", body = ErrorDoc),
        (status = 404, description = "Appointment missing or not visible", body = ErrorDoc),
        (status = 409, description = "RATING_EXISTS, IDEMPOTENCY_KEY_IN_USE", body = ErrorDoc),
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
        let created = ratings::create(conn, caller, &input, &contention)?;
        let location = format!("/api/v1/ratings/{}", created.id);
        idempotent::json(
            StatusCode::CREATED,
            Some(location),
            created.version,
            &created,
        )
    })
    .await
}

/// A rating: its patient, its doctor or an admin.
#[utoipa::path(get, operation_id = "ratings_get", path = "/api/v1/ratings/{id}", tag = "ratings", security(("bearer" = [])),
    params(("id" = i32, Path, description = "Rating id"), IfNoneMatch),
    responses(
        (status = 200, description = "The rating", body = Rating, headers(("ETag" = String))),
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
        .as_caller(bearer, move |conn, caller| ratings::get(conn, caller, id))
        .await?;
    Ok(super::versioned(StatusCode::OK, found.version, &found))
}

/// Changes score or comment (its patient), optimistically.
#[utoipa::path(put, operation_id = "ratings_update", path = "/api/v1/ratings/{id}", tag = "ratings", security(("bearer" = [])),
    request_body = UpdateInput,
    params(("id" = i32, Path, description = "Rating id"), IfMatch),
    responses(
        (status = 200, description = "Changed, version + 1 (a change to what it already is: as it is, same version)", body = Rating, headers(("ETag" = String))),
        (status = 400, description = "Not JSON, a malformed If-Match, or an If-None-Match (for reads only)", body = ErrorDoc),
        (status = 401, description = "UNAUTHENTICATED", body = ErrorDoc),
        (status = 403, description = "Not its patient", body = ErrorDoc),
        (status = 404, description = "Missing or not visible", body = ErrorDoc),
        (status = 409, description = "VERSION_CONFLICT (with current)", body = ErrorDoc),
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
            ratings::update(conn, caller, id, &input, expected, &contention)
        })
        .await?;
    Ok(super::versioned(StatusCode::OK, updated.version, &updated))
}
