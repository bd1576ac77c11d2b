//! HTTP handlers: extract, authorize, call one service fn inside `run_blocking`, respond.
//! All routes are registered here, for `main` and the tests alike.

mod admin;
mod appointments;
mod auth;
mod doctors;
mod health;
mod prescriptions;
mod ratings;

use actix_web::http::{header, StatusCode};
use actix_web::{web, HttpResponse};
use serde::Serialize;

use crate::error::AppError;
use crate::extract::etag;

/// Registers every route.
pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(health::healthz)
        .service(health::readyz)
        .service(
            web::scope("/api/v1")
                .configure(auth::configure)
                .configure(admin::configure)
                .configure(doctors::configure)
                .configure(appointments::configure)
                .configure(prescriptions::configure)
                .configure(ratings::configure),
        )
        .default_service(web::to(not_found));
}

async fn not_found() -> Result<HttpResponse, AppError> {
    Err(AppError::NotFound)
}

/// A JSON response of a versioned resource, with its `ETag`.
pub fn versioned<T: Serialize>(status: StatusCode, version: i32, body: &T) -> HttpResponse {
    HttpResponse::build(status)
        .insert_header(etag(version))
        .json(body)
}

/// 201 with `Location` and `ETag`.
pub fn created<T: Serialize>(location: String, version: i32, body: &T) -> HttpResponse {
    HttpResponse::Created()
        .insert_header((header::LOCATION, location))
        .insert_header(etag(version))
        .json(body)
}
