//! Ratings.

use actix_web::http::StatusCode;
use actix_web::{web, HttpRequest, HttpResponse};

use crate::auth::Caller;
use crate::db::run_blocking;
use crate::error::AppError;
use crate::extract::{path_id, Expected, Json};
use crate::server::AppState;
use crate::services::ratings::{self, CreateInput, UpdateInput};

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.route("/ratings", web::post().to(create))
        .route("/ratings/{id}", web::get().to(get))
        .route("/ratings/{id}", web::put().to(update))
        .route("/ratings/{id}", web::patch().to(update));
}

/// `POST /api/v1/ratings`.
async fn create(
    state: web::Data<AppState>,
    caller: Caller,
    Json(input): Json<CreateInput>,
) -> Result<HttpResponse, AppError> {
    let created = run_blocking(&state.pool, move |conn| {
        ratings::create(conn, &caller, &input)
    })
    .await?;
    Ok(super::created(
        format!("/api/v1/ratings/{}", created.id),
        created.version,
        &created,
    ))
}

/// `GET /api/v1/ratings/{id}`.
async fn get(
    state: web::Data<AppState>,
    req: HttpRequest,
    caller: Caller,
) -> Result<HttpResponse, AppError> {
    let id = path_id(&req, "id")?;
    let found = run_blocking(&state.pool, move |conn| ratings::get(conn, &caller, id)).await?;
    Ok(super::versioned(StatusCode::OK, found.version, &found))
}

/// `PUT /api/v1/ratings/{id}`.
async fn update(
    state: web::Data<AppState>,
    req: HttpRequest,
    caller: Caller,
    Json(input): Json<UpdateInput>,
) -> Result<HttpResponse, AppError> {
    let id = path_id(&req, "id")?;
    let expected = Expected::from_request(&req, input.version)?;
    let updated = run_blocking(&state.pool, move |conn| {
        ratings::update(conn, &caller, id, &input, expected)
    })
    .await?;
    Ok(super::versioned(StatusCode::OK, updated.version, &updated))
}
