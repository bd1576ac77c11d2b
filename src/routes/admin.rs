//! Admin user management.

use actix_web::http::{Method, StatusCode};
use actix_web::{web, HttpRequest, HttpResponse};

use super::auth::hash_in_background;
use super::openapi::{ErrorDoc, IdempotencyKey, IfMatch};
use super::{def, idempotent, RouteDef};
use crate::auth::Bearer;
use crate::db::run_blocking;
use crate::error::AppError;
use crate::extract::{path_id, Expected, Json, NoQuery};
use crate::models::user::UserView;
use crate::server::AppState;
use crate::services::auth::ensure_email_free;
use crate::services::users::{self, CreateUserInput, UpdateUserInput};

pub(crate) fn routes() -> Vec<RouteDef> {
    vec![
        def(
            Method::POST,
            "/api/v1/admin/users",
            web::route().to(create_user),
        ),
        def(
            Method::PATCH,
            "/api/v1/admin/users/{id}",
            web::route().to(update_user),
        ),
    ]
}

/// Creates a user of any role (admin only).
#[utoipa::path(post, operation_id = "admin_create_user", path = "/api/v1/admin/users", tag = "admin", security(("bearer" = [])),
    request_body = CreateUserInput, params(IdempotencyKey),
    responses(
        (status = 201, description = "Created", body = UserView,
            headers(("ETag" = String), ("Location" = String))),
        (status = 400, description = "Not JSON", body = ErrorDoc),
        (status = 401, description = "UNAUTHENTICATED", body = ErrorDoc),
        (status = 403, description = "Not an admin", body = ErrorDoc),
        (status = 409, description = "EMAIL_TAKEN", body = ErrorDoc),
        (status = 422, description = "VALIDATION_FAILED", body = ErrorDoc),
    ))]
pub(crate) async fn create_user(
    state: web::Data<AppState>,
    req: HttpRequest,
    bearer: Bearer,
    _: NoQuery,
    Json(input): Json<CreateUserInput>,
) -> Result<HttpResponse, AppError> {
    // Admin first: nothing below (not even validation) is for anyone else.
    state
        .as_caller(bearer.clone(), |_, caller| caller.require_admin())
        .await?;
    let role = input.check()?;
    if !req.headers().contains_key(idempotent::IDEMPOTENCY_KEY) {
        // A taken email costs no hash. (With a key, a repeat must reach its replay instead.)
        let email = input.email.trim().to_owned();
        run_blocking(&state.pool, move |conn| ensure_email_free(conn, &email)).await?;
    }
    // Hashed before the key is claimed and outside any transaction.
    let hash = hash_in_background(&state, input.password.clone()).await?;
    let contention = state.contention.clone();
    idempotent::post(&state, &req, bearer, move |conn, _| {
        let user = users::create(conn, &input, role, &hash, &contention)?;
        let location = format!("/api/v1/admin/users/{}", user.id);
        idempotent::json(
            StatusCode::CREATED,
            Some(location),
            user.version,
            &user.view(),
        )
    })
    .await
}

/// Activates, deactivates or renames a user (admin only), optimistically.
///
/// Deactivation ends the user's sessions: their tokens stop working, also after a
/// reactivation.
#[utoipa::path(patch, operation_id = "admin_update_user", path = "/api/v1/admin/users/{id}", tag = "admin", security(("bearer" = [])),
    request_body = UpdateUserInput,
    params(("id" = i32, Path, description = "User id"), IfMatch),
    responses(
        (status = 200, description = "Updated, version + 1 (a change to what it already is: as it is, same version)", body = UserView, headers(("ETag" = String))),
        (status = 400, description = "Not JSON, a malformed If-Match, or an If-None-Match (for reads only)", body = ErrorDoc),
        (status = 401, description = "UNAUTHENTICATED", body = ErrorDoc),
        (status = 403, description = "Not an admin", body = ErrorDoc),
        (status = 404, description = "No such user", body = ErrorDoc),
        (status = 409, description = "VERSION_CONFLICT (with current)", body = ErrorDoc),
        (status = 412, description = "If-Match does not match", body = ErrorDoc),
        (status = 422, description = "VALIDATION_FAILED", body = ErrorDoc),
    ))]
pub(crate) async fn update_user(
    state: web::Data<AppState>,
    req: HttpRequest,
    bearer: Bearer,
    _: NoQuery,
    Json(input): Json<UpdateUserInput>,
) -> Result<HttpResponse, AppError> {
    let id = path_id(&req, "id")?;
    let expected = Expected::from_request(&req, input.version)?;
    let contention = state.contention.clone();
    let user = state
        .as_caller(bearer, move |conn, caller| {
            users::update(conn, caller, id, &input, expected, &contention)
        })
        .await?;
    Ok(super::versioned(StatusCode::OK, user.version, &user.view()))
}
