//! Prescriptions.

use actix_web::http::StatusCode;
use actix_web::{web, HttpRequest, HttpResponse};

use crate::auth::Caller;
use crate::db::run_blocking;
use crate::error::AppError;
use crate::extract::{path_id, Expected, Json};
use crate::server::AppState;
use crate::services::prescriptions::{self, AcknowledgeInput, CreateInput, UpdateInput};

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.route("/prescriptions", web::post().to(create))
        .route("/prescriptions/{id}", web::get().to(get))
        .route("/prescriptions/{id}", web::put().to(update))
        .route("/prescriptions/{id}", web::patch().to(update))
        .route(
            "/prescriptions/{id}/acknowledge",
            web::post().to(acknowledge),
        );
}

/// `POST /api/v1/prescriptions`.
async fn create(
    state: web::Data<AppState>,
    caller: Caller,
    Json(input): Json<CreateInput>,
) -> Result<HttpResponse, AppError> {
    let created = run_blocking(&state.pool, move |conn| {
        prescriptions::create(conn, &caller, &input)
    })
    .await?;
    Ok(super::created(
        format!("/api/v1/prescriptions/{}", created.id),
        created.version,
        &created.view(),
    ))
}

/// `GET /api/v1/prescriptions/{id}`.
async fn get(
    state: web::Data<AppState>,
    req: HttpRequest,
    caller: Caller,
) -> Result<HttpResponse, AppError> {
    let id = path_id(&req, "id")?;
    let found = run_blocking(&state.pool, move |conn| {
        prescriptions::get(conn, &caller, id)
    })
    .await?;
    Ok(super::versioned(
        StatusCode::OK,
        found.version,
        &found.view(),
    ))
}

/// `PUT /api/v1/prescriptions/{id}`.
async fn update(
    state: web::Data<AppState>,
    req: HttpRequest,
    caller: Caller,
    Json(input): Json<UpdateInput>,
) -> Result<HttpResponse, AppError> {
    let id = path_id(&req, "id")?;
    let expected = Expected::from_request(&req, input.version)?;
    let updated = run_blocking(&state.pool, move |conn| {
        prescriptions::update(conn, &caller, id, &input, expected)
    })
    .await?;
    Ok(super::versioned(
        StatusCode::OK,
        updated.version,
        &updated.view(),
    ))
}

/// `POST /api/v1/prescriptions/{id}/acknowledge`.
async fn acknowledge(
    state: web::Data<AppState>,
    req: HttpRequest,
    caller: Caller,
    Json(input): Json<AcknowledgeInput>,
) -> Result<HttpResponse, AppError> {
    let id = path_id(&req, "id")?;
    let expected = Expected::from_request(&req, input.version)?;
    let updated = run_blocking(&state.pool, move |conn| {
        prescriptions::acknowledge(conn, &caller, id, expected)
    })
    .await?;
    Ok(super::versioned(
        StatusCode::OK,
        updated.version,
        &updated.view(),
    ))
}
