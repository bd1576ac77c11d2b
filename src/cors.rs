//! Calls from browser apps on other origins (CORS), for the origins `MEDBOOK_CORS_ORIGINS`
//! names. Without it no CORS header is sent, and a browser app can only call the API from its
//! own origin (a preflight is the JSON 405 of any `OPTIONS`, a method no path has).
//!
//! Written here rather than taken from `actix-cors`, whose refusals are plain-text `400`s: a
//! refused preflight is the API's JSON `403`, like every other error.

use actix_web::body::{EitherBody, MessageBody};
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::header::{self, HeaderMap, HeaderValue};
use actix_web::http::Method;
use actix_web::middleware::Next;
use actix_web::{web, HttpResponse, ResponseError};

use crate::error::AppError;
use crate::server::AppState;

/// The response headers a browser app may read (the rest are hidden from its script).
const EXPOSED: &str = "ETag, Location, Retry-After, Idempotent-Replayed, WWW-Authenticate";
/// The methods the API has.
const METHODS: &str = "GET, HEAD, POST, PUT, PATCH";
/// How long a browser may reuse a preflight's answer, in seconds.
const MAX_AGE: &str = "3600";

/// Which origins may call the API from a browser.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum AllowedOrigins {
    /// None (the default): no CORS headers at all.
    #[default]
    None,
    /// `*`: any origin. The API authenticates by bearer token, which a browser never sends on
    /// its own (unlike a cookie), so a page on another origin can only use a token it has.
    Any,
    /// These origins, compared exactly (`https://app.example.com`, `http://localhost:5173`).
    List(Vec<String>),
}

impl AllowedOrigins {
    /// Reads `MEDBOOK_CORS_ORIGINS`: `*`, or origins separated by commas. Anything else (a
    /// path, a trailing slash, a missing scheme) is a start-up error: a browser sends the
    /// origin without them, so such an entry would never match.
    pub fn parse(raw: Option<&str>) -> Result<AllowedOrigins, String> {
        let Some(raw) = raw.map(str::trim).filter(|r| !r.is_empty()) else {
            return Ok(AllowedOrigins::None);
        };
        if raw == "*" {
            return Ok(AllowedOrigins::Any);
        }
        let origins = raw
            .split(',')
            .map(str::trim)
            .filter(|o| !o.is_empty())
            .map(|origin| {
                let host = origin
                    .strip_prefix("https://")
                    .or_else(|| origin.strip_prefix("http://"));
                match host {
                    Some(host)
                        if !host.is_empty()
                            && !host.contains(['/', '?', '#', '*', ' '])
                            && HeaderValue::from_str(origin).is_ok() =>
                    {
                        Ok(origin.to_ascii_lowercase())
                    }
                    _ => Err(format!(
                        "MEDBOOK_CORS_ORIGINS: {origin:?} is not an origin \
                         (scheme://host[:port], no path), nor \"*\""
                    )),
                }
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(AllowedOrigins::List(origins))
    }

    /// The `Access-Control-Allow-Origin` value for a request from `origin`, if it is allowed.
    fn allow(&self, origin: &HeaderValue) -> Option<HeaderValue> {
        match self {
            AllowedOrigins::None => None,
            AllowedOrigins::Any => Some(HeaderValue::from_static("*")),
            AllowedOrigins::List(list) => {
                let origin_text = origin.to_str().ok()?;
                // Scheme and host are case-insensitive; browsers send them lowercased.
                list.iter()
                    .any(|allowed| allowed.eq_ignore_ascii_case(origin_text))
                    .then(|| origin.clone())
            }
        }
    }
}

/// The middleware: answers preflights, and marks the answers to allowed origins as readable.
pub async fn cors(
    req: ServiceRequest,
    next: Next<impl MessageBody>,
) -> Result<ServiceResponse<EitherBody<impl MessageBody>>, actix_web::Error> {
    let state = req.app_data::<web::Data<AppState>>().cloned();
    let (Some(state), Some(origin)) = (state, req.headers().get(header::ORIGIN).cloned()) else {
        return Ok(next.call(req).await?.map_into_left_body());
    };
    let allow = state.cors.allow(&origin);
    let preflight = req.method() == Method::OPTIONS
        && req
            .headers()
            .contains_key(header::ACCESS_CONTROL_REQUEST_METHOD);
    if preflight {
        let response = match &allow {
            Some(allow) => preflight_answer(&req, allow.clone()),
            None => AppError::forbidden(format!(
                "Origin {} may not call this API from a browser (MEDBOOK_CORS_ORIGINS)",
                origin.to_str().unwrap_or("?")
            ))
            .error_response(),
        };
        let mut response = req.into_response(response);
        vary_on_origin(&state.cors, response.headers_mut());
        return Ok(response.map_into_right_body());
    }
    match next.call(req).await {
        Ok(mut response) => {
            mark(&state.cors, allow, response.headers_mut());
            Ok(response.map_into_left_body())
        }
        Err(mut err) => {
            err.add_response_mapper(move |mut response| {
                mark(&state.cors, allow.clone(), response.headers_mut());
                response
            });
            Err(err)
        }
    }
}

/// `204` with what the browser asked about allowed: the methods the API has, and the request
/// headers the page wants to send (the API ignores those it does not know).
fn preflight_answer(req: &ServiceRequest, allow: HeaderValue) -> HttpResponse {
    let mut answer = HttpResponse::NoContent();
    answer
        .insert_header((header::ACCESS_CONTROL_ALLOW_ORIGIN, allow))
        .insert_header((
            header::ACCESS_CONTROL_ALLOW_METHODS,
            HeaderValue::from_static(METHODS),
        ))
        .insert_header((
            header::ACCESS_CONTROL_MAX_AGE,
            HeaderValue::from_static(MAX_AGE),
        ));
    if let Some(asked) = req.headers().get(header::ACCESS_CONTROL_REQUEST_HEADERS) {
        answer.insert_header((header::ACCESS_CONTROL_ALLOW_HEADERS, asked.clone()));
    }
    answer.finish()
}

fn mark(allowed: &AllowedOrigins, allow: Option<HeaderValue>, headers: &mut HeaderMap) {
    if let Some(allow) = allow {
        headers.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, allow);
        headers.insert(
            header::ACCESS_CONTROL_EXPOSE_HEADERS,
            HeaderValue::from_static(EXPOSED),
        );
    }
    vary_on_origin(allowed, headers);
}

/// An answer that depends on the `Origin` says so, so that a cache does not hand one origin's
/// answer to another (with `*` it does not depend on it).
fn vary_on_origin(allowed: &AllowedOrigins, headers: &mut HeaderMap) {
    if matches!(allowed, AllowedOrigins::List(_)) {
        headers.append(header::VARY, HeaderValue::from_static("Origin"));
    }
}

#[cfg(test)]
mod tests {
    use super::AllowedOrigins;
    use actix_web::http::header::HeaderValue;

    #[test]
    fn origins_are_parsed_and_bad_entries_refused() {
        assert_eq!(AllowedOrigins::parse(None), Ok(AllowedOrigins::None));
        assert_eq!(AllowedOrigins::parse(Some("  ")), Ok(AllowedOrigins::None));
        assert_eq!(AllowedOrigins::parse(Some("*")), Ok(AllowedOrigins::Any));
        assert_eq!(
            AllowedOrigins::parse(Some("https://App.example.com, http://localhost:5173")),
            Ok(AllowedOrigins::List(vec![
                "https://app.example.com".into(),
                "http://localhost:5173".into()
            ]))
        );
        for bad in [
            "app.example.com",
            "https://app.example.com/",
            "https://app.example.com/path",
            "https://*.example.com",
            "ftp://x.io",
            "https://",
            "https://a.io, *",
        ] {
            let refused = AllowedOrigins::parse(Some(bad));
            assert!(refused.is_err(), "{bad}: {refused:?}");
        }
    }

    #[test]
    fn only_listed_origins_are_allowed() {
        let list = AllowedOrigins::parse(Some("https://app.example.com")).unwrap();
        let allowed = HeaderValue::from_static("https://app.example.com");
        assert_eq!(list.allow(&allowed), Some(allowed.clone()));
        let other = HeaderValue::from_static("https://evil.example.com");
        assert_eq!(list.allow(&other), None);
        assert_eq!(
            list.allow(&HeaderValue::from_static("http://app.example.com")),
            None,
            "another scheme is another origin"
        );
        assert_eq!(
            AllowedOrigins::Any.allow(&other),
            Some(HeaderValue::from_static("*"))
        );
        assert_eq!(AllowedOrigins::None.allow(&allowed), None);
    }
}
