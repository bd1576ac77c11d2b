//! Appointments: booking, reading, the lifecycle, history.

use actix_web::http::StatusCode;
use actix_web::{web, HttpRequest, HttpResponse};
use serde::Deserialize;
use serde_json::json;

use crate::auth::Caller;
use crate::db::run_blocking;
use crate::domain::Status;
use crate::error::AppError;
use crate::extract::{parse_query, path_id, Expected, Json};
use crate::server::AppState;
use crate::services::appointments::{self, ListFilter, UpdateInput};
use crate::services::booking::{self, BookingInput};
use crate::services::pagination::{parse_limit, Cursor};
use crate::services::prescriptions;

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.route("/appointments", web::post().to(create))
        .route("/appointments", web::get().to(list))
        .route("/appointments/{id}", web::get().to(get))
        .route("/appointments/{id}", web::put().to(update))
        .route("/appointments/{id}", web::patch().to(update))
        .route("/appointments/{id}/history", web::get().to(history))
        .route(
            "/appointments/{id}/prescription",
            web::get().to(prescription),
        );
}

/// `POST /api/v1/appointments`: the locked booking path.
async fn create(
    state: web::Data<AppState>,
    caller: Caller,
    Json(input): Json<BookingInput>,
) -> Result<HttpResponse, AppError> {
    let policy = state.retry;
    let booked = run_blocking(&state.pool, move |conn| {
        booking::book(conn, &caller, &input, policy)
    })
    .await?;
    Ok(super::created(
        format!("/api/v1/appointments/{}", booked.id),
        booked.version,
        &booked.view(),
    ))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ListQuery {
    status: Option<String>,
    from: Option<String>,
    to: Option<String>,
    limit: Option<String>,
    cursor: Option<String>,
}

/// `GET /api/v1/appointments`: the caller's own, by `scheduled_at`.
async fn list(
    state: web::Data<AppState>,
    req: HttpRequest,
    caller: Caller,
) -> Result<HttpResponse, AppError> {
    let query: ListQuery = parse_query(&req)?;
    let time = |field: &str, raw: Option<&str>| {
        raw.map(|raw| crate::time::parse(raw).map_err(|e| AppError::invalid(field, e)))
            .transpose()
    };
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
        from: time("from", query.from.as_deref())?,
        to: time("to", query.to.as_deref())?,
        limit: parse_limit(query.limit.as_deref())?,
        cursor: query.cursor.as_deref().map(Cursor::decode).transpose()?,
    };
    let page = run_blocking(&state.pool, move |conn| {
        appointments::list(conn, &caller, &filter)
    })
    .await?;
    Ok(HttpResponse::Ok().json(page.map(|a| a.view())))
}

/// `GET /api/v1/appointments/{id}`, with `ETag`.
async fn get(
    state: web::Data<AppState>,
    req: HttpRequest,
    caller: Caller,
) -> Result<HttpResponse, AppError> {
    let id = path_id(&req, "id")?;
    let found = run_blocking(&state.pool, move |conn| {
        appointments::get(conn, &caller, id)
    })
    .await?;
    Ok(super::versioned(
        StatusCode::OK,
        found.version,
        &found.view(),
    ))
}

/// `PUT`/`PATCH /api/v1/appointments/{id}`: status move, reschedule or reason.
async fn update(
    state: web::Data<AppState>,
    req: HttpRequest,
    caller: Caller,
    Json(input): Json<UpdateInput>,
) -> Result<HttpResponse, AppError> {
    let id = path_id(&req, "id")?;
    let expected = Expected::from_request(&req, input.version)?;
    let policy = state.retry;
    let updated = run_blocking(&state.pool, move |conn| {
        appointments::update(conn, &caller, id, &input, expected, policy)
    })
    .await?;
    Ok(super::versioned(
        StatusCode::OK,
        updated.version,
        &updated.view(),
    ))
}

/// `GET /api/v1/appointments/{id}/history`.
async fn history(
    state: web::Data<AppState>,
    req: HttpRequest,
    caller: Caller,
) -> Result<HttpResponse, AppError> {
    let id = path_id(&req, "id")?;
    let items = run_blocking(&state.pool, move |conn| {
        appointments::history(conn, &caller, id)
    })
    .await?;
    Ok(HttpResponse::Ok().json(json!({ "items": items })))
}

/// `GET /api/v1/appointments/{id}/prescription`.
async fn prescription(
    state: web::Data<AppState>,
    req: HttpRequest,
    caller: Caller,
) -> Result<HttpResponse, AppError> {
    let id = path_id(&req, "id")?;
    let found = run_blocking(&state.pool, move |conn| {
        prescriptions::for_appointment(conn, &caller, id)
    })
    .await?;
    Ok(super::versioned(
        StatusCode::OK,
        found.version,
        &found.view(),
    ))
}
