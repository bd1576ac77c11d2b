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
use actix_web::{guard, web, HttpResponse, Route};
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
/// A `GET` route answers `HEAD` too (HTTP requires both of a server): the same handler, and
/// actix-http sends the status and headers without the body.
pub(crate) fn def(method: Method, path: &'static str, route: Route) -> RouteDef {
    let route = if method == Method::GET {
        route.guard(guard::Any(guard::Get()).or(guard::Head()))
    } else {
        route.method(method.clone())
    };
    RouteDef {
        route,
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

/// Registers every route; a method a path does not have is the JSON `405` with the path's
/// `Allow` header, and a path no route has the JSON 404.
///
/// actix matches a path template such as `/{id}` with a regex and tries resources in
/// registration order, so the routes are grouped: one scope per `/api/v1/<family>` (its
/// prefix is plain text, compared without a regex) holding one resource per path (whose methods
/// are its routes). A request then runs the regexes of its own family only, where a flat list
/// ran those of every templated route registered before it.
pub fn configure(cfg: &mut web::ServiceConfig) {
    for (prefix, resources) in grouped(route_table()) {
        let resources = resources.into_iter().map(|(path, defs)| {
            let allow = allowed_methods(&defs);
            defs.into_iter()
                .map(|def| def.route)
                .fold(web::resource(path), actix_web::Resource::route)
                .default_service(web::to(move || {
                    let allow = allow.clone();
                    async move { Err::<HttpResponse, _>(AppError::MethodNotAllowed { allow }) }
                }))
        });
        if prefix.is_empty() {
            resources.for_each(|resource| {
                cfg.service(resource);
            });
        } else {
            cfg.service(resources.fold(web::scope(prefix), actix_web::Scope::service));
        }
    }
    cfg.default_service(web::to(not_found));
}

/// The `Allow` header of a path with these routes: their methods, `HEAD` after each `GET`.
fn allowed_methods(defs: &[RouteDef]) -> String {
    let mut methods = Vec::new();
    for def in defs {
        methods.push(def.method.as_str());
        if def.method == Method::GET {
            methods.push(Method::HEAD.as_str());
        }
    }
    methods.join(", ")
}

/// Routes by scope prefix (`""` for those outside `/api/v1/`) and then by path within it, in
/// the order of `routes`.
type Grouped = Vec<(&'static str, Vec<(&'static str, Vec<RouteDef>)>)>;

fn grouped(routes: Vec<RouteDef>) -> Grouped {
    let mut groups: Grouped = Vec::new();
    for def in routes {
        let (prefix, rest) = split_family(def.path);
        let at = groups
            .iter()
            .position(|(p, _)| *p == prefix)
            .unwrap_or_else(|| {
                groups.push((prefix, Vec::new()));
                groups.len() - 1
            });
        let paths = &mut groups[at].1;
        match paths.iter_mut().find(|(p, _)| *p == rest) {
            Some((_, same_path)) => same_path.push(def),
            None => paths.push((rest, vec![def])),
        }
    }
    groups
}

/// `/api/v1/appointments/{id}` → (`/api/v1/appointments`, `/{id}`); a path outside `/api/v1/`
/// → (`""`, the path).
fn split_family(path: &'static str) -> (&'static str, &'static str) {
    const API: &str = "/api/v1/";
    match path.strip_prefix(API) {
        Some(rest) => path.split_at(rest.find('/').map_or(path.len(), |end| API.len() + end)),
        None => ("", path),
    }
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
