//! Admin user management.

use actix_web::http::StatusCode;
use actix_web::{web, HttpRequest, HttpResponse};

use super::auth::hash_in_background;
use crate::auth::Caller;
use crate::db::run_blocking;
use crate::error::AppError;
use crate::extract::{path_id, Expected, Json};
use crate::server::AppState;
use crate::services::auth::ensure_email_free;
use crate::services::users::{self, CreateUserInput, UpdateUserInput};

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.route("/admin/users", web::post().to(create_user))
        .route("/admin/users/{id}", web::patch().to(update_user));
}

/// `POST /api/v1/admin/users`: any role.
async fn create_user(
    state: web::Data<AppState>,
    caller: Caller,
    Json(input): Json<CreateUserInput>,
) -> Result<HttpResponse, AppError> {
    caller.require_admin()?;
    let role = input.check()?;
    let email = input.email.trim().to_owned();
    run_blocking(&state.pool, move |conn| ensure_email_free(conn, &email)).await?;
    let hash = hash_in_background(input.password.clone()).await?;
    let user = run_blocking(&state.pool, move |conn| {
        users::create(conn, &input, role, &hash)
    })
    .await?;
    Ok(super::created(
        format!("/api/v1/admin/users/{}", user.id),
        user.version,
        &user.view(),
    ))
}

/// `PATCH /api/v1/admin/users/{id}`.
async fn update_user(
    state: web::Data<AppState>,
    req: HttpRequest,
    caller: Caller,
    Json(input): Json<UpdateUserInput>,
) -> Result<HttpResponse, AppError> {
    caller.require_admin()?;
    let id = path_id(&req, "id")?;
    let expected = Expected::from_request(&req, input.version)?;
    let user = run_blocking(&state.pool, move |conn| {
        users::update(conn, &caller, id, &input, expected)
    })
    .await?;
    Ok(super::versioned(StatusCode::OK, user.version, &user.view()))
}
