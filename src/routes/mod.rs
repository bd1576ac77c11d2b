//! HTTP handlers: extract, authorize, call one service fn inside `run_blocking`, respond.
//! Every route is listed once, in [`route_table`], which `configure` registers and the tests
//! compare with the OpenAPI document.

pub(crate) mod admin;
pub(crate) mod appointments;
pub(crate) mod auth;
pub(crate) mod doctors;
pub(crate) mod health;
pub(crate) mod idempotent;
pub(crate) mod observability;
pub mod openapi;
pub(crate) mod prescriptions;
pub(crate) mod ratings;

use actix_web::http::{Method, StatusCode};
use actix_web::{web, HttpResponse, Route};
use serde::Serialize;

use crate::error::AppError;
use crate::extract::etag;

/// One route: method, path template (actix syntax, `{id}`), handler.
pub struct RouteDef {
    pub method: Method,
    pub path: &'static str,
    route: Route,
}

/// A route for `method` and `path`, whose handler is attached to `route` (`web::route().to(h)`).
pub(crate) fn def(method: Method, path: &'static str, route: Route) -> RouteDef {
    RouteDef {
        route: route.method(method.clone()),
        method,
        path,
    }
}

/// Every route of the service.
pub fn route_table() -> Vec<RouteDef> {
    let mut routes = health::routes();
    for api in [
        auth::routes(),
        admin::routes(),
        doctors::routes(),
        appointments::routes(),
        prescriptions::routes(),
        ratings::routes(),
        openapi::routes(),
        observability::routes(),
    ] {
        routes.extend(api);
    }
    routes
}

/// Registers every route, and the JSON 404 for everything else.
pub fn configure(cfg: &mut web::ServiceConfig) {
    for RouteDef { path, route, .. } in route_table() {
        cfg.route(path, route);
    }
    cfg.default_service(web::to(not_found));
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
