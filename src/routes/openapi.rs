//! The OpenAPI 3.1 document, generated from the handlers' annotations and served at
//! `GET /api/v1/openapi.json` (no auth).

use std::collections::BTreeMap;

use actix_web::http::Method;
use actix_web::{web, HttpResponse};
use serde::Serialize;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{IntoParams, Modify, OpenApi, ToSchema};

use super::{def, RouteDef};
use crate::models::appointment::AppointmentView;
use crate::models::history::HistoryEntry;
use crate::models::user::UserView;
use crate::services::doctors::{BusyInterval, DoctorView};

pub(crate) fn routes() -> Vec<RouteDef> {
    vec![def(
        Method::GET,
        "/api/v1/openapi.json",
        web::route().to(document),
    )]
}

/// The error body of every non-2xx answer.
#[derive(Serialize, ToSchema)]
#[schema(as = Error)]
pub struct ErrorDoc {
    /// Human-readable message; never database detail.
    error: String,
    /// Machine-readable code, e.g. `SLOT_TAKEN`, `VERSION_CONFLICT`, `VALIDATION_FAILED`.
    code: String,
    /// Per-field messages (422 `VALIDATION_FAILED`).
    details: Option<BTreeMap<String, String>>,
    /// The current resource (409 `VERSION_CONFLICT`, 412).
    current: Option<serde_json::Value>,
}

/// The answer of register and login.
#[derive(Serialize, ToSchema)]
pub struct AuthResponse {
    user: UserView,
    /// Bearer token (256 random bits); stored by the server only as a SHA-256 hash.
    token: String,
}

/// A page of doctors.
#[derive(Serialize, ToSchema)]
pub struct DoctorPage {
    items: Vec<DoctorView>,
    next_cursor: Option<String>,
}

/// A page of appointments.
#[derive(Serialize, ToSchema)]
pub struct AppointmentPage {
    items: Vec<AppointmentView>,
    next_cursor: Option<String>,
}

/// An appointment's history.
#[derive(Serialize, ToSchema)]
pub struct HistoryList {
    items: Vec<HistoryEntry>,
}

/// A doctor's busy intervals.
#[derive(Serialize, ToSchema)]
pub struct BusyList {
    items: Vec<BusyInterval>,
}

/// `If-Match: "<version>"` — a mismatch answers 412.
#[derive(IntoParams)]
#[into_params(parameter_in = Header)]
pub struct IfMatch {
    /// The ETag (`"3"`) of the version the change is based on; `*` matches any.
    #[param(rename = "If-Match")]
    _if_match: Option<String>,
}

/// `If-None-Match: "<version>"` on a read — the current version answers 304 without a body.
#[derive(IntoParams)]
#[into_params(parameter_in = Header)]
pub struct IfNoneMatch {
    /// ETags (`"3"`, or a list) of versions the client has; `*` matches any.
    #[param(rename = "If-None-Match")]
    _if_none_match: Option<String>,
}

/// `Idempotency-Key` — the first answer is stored per (user, key) and replayed for a repeat.
#[derive(IntoParams)]
#[into_params(parameter_in = Header)]
pub struct IdempotencyKey {
    /// 1–255 visible characters.
    #[param(rename = "Idempotency-Key")]
    _idempotency_key: Option<String>,
}

struct BearerAuth;

impl Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
        );
    }
}

/// The document.
#[derive(OpenApi)]
#[openapi(
    info(title = "medbook", description = "Telemedicine appointments where concurrency never corrupts a booking."),
    modifiers(&BearerAuth),
    components(schemas(
        crate::domain::doc::AppointmentType,
        crate::domain::doc::AppointmentStatus,
        crate::domain::doc::Role,
    )),
    paths(
        super::health::healthz, super::health::readyz, document,
        super::auth::register, super::auth::login, super::auth::logout, super::auth::me,
        super::admin::create_user, super::admin::update_user,
        super::doctors::list, super::doctors::get, super::doctors::busy,
        super::appointments::create, super::appointments::list, super::appointments::get,
        super::appointments::update, super::appointments::patch, super::appointments::history,
        super::appointments::prescription,
        super::prescriptions::create, super::prescriptions::get, super::prescriptions::update,
        super::prescriptions::acknowledge,
        super::ratings::create, super::ratings::get, super::ratings::update,
        super::observability::metrics, super::observability::lock_stats, super::observability::dashboard,
    ),
    tags(
        (name = "auth"), (name = "admin"), (name = "doctors"), (name = "appointments"),
        (name = "prescriptions"), (name = "ratings"), (name = "operations"),
    )
)]
pub struct ApiDoc;

/// This document.
#[utoipa::path(get, operation_id = "openapi_document", path = "/api/v1/openapi.json", tag = "operations",
    responses((status = 200, description = "The OpenAPI 3.1 document", content_type = "application/json")))]
pub(crate) async fn document() -> HttpResponse {
    HttpResponse::Ok().json(ApiDoc::openapi())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::routes::route_table;

    #[test]
    fn every_route_is_documented_and_every_documented_route_exists() {
        let doc = serde_json::to_value(ApiDoc::openapi()).unwrap();
        let routes = route_table();
        for route in &routes {
            let method = route.method.as_str().to_ascii_lowercase();
            assert!(
                doc["paths"][route.path][&method].is_object(),
                "{} {} is missing from the OpenAPI document",
                route.method,
                route.path
            );
        }
        let documented: usize = doc["paths"]
            .as_object()
            .unwrap()
            .values()
            .map(|ops| ops.as_object().unwrap().len())
            .sum();
        assert_eq!(
            documented,
            routes.len(),
            "the document lists routes that do not exist"
        );
    }

    #[test]
    fn document_is_openapi_3_1_with_bearer_security() {
        let doc = serde_json::to_value(ApiDoc::openapi()).unwrap();
        assert!(doc["openapi"].as_str().unwrap().starts_with("3.1"));
        assert_eq!(
            doc["components"]["securitySchemes"]["bearer"]["scheme"],
            "bearer"
        );
        for schema in [
            "Error",
            "Appointment",
            "User",
            "Prescription",
            "Rating",
            "Doctor",
        ] {
            assert!(doc["components"]["schemas"][schema].is_object(), "{schema}");
        }
        let booking = &doc["paths"]["/api/v1/appointments"]["post"];
        for status in [
            "201", "400", "401", "403", "404", "409", "413", "422", "503",
        ] {
            assert!(
                booking["responses"][status].is_object(),
                "booking documents {status}"
            );
        }
    }
}
