//! Conditional reads: a `GET` or `HEAD` whose `If-None-Match` names the resource's current
//! `ETag` answers `304 Not Modified`, with that `ETag` and no body (RFC 9110 §13.1.2: an
//! origin server evaluates `If-None-Match`, and for `GET`/`HEAD` answers `304` when it fails).
//! A client that keeps what it read (its own copy: answers are `no-store` for shared and
//! browser caches) can poll a resource without reading it again when it has not changed.
//!
//! The resource is read as without the header (visibility, `404`s and `401`s are the same);
//! only a `200` with an `ETag` can become a `304`.

use actix_web::body::{EitherBody, MessageBody};
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::header::{self, HeaderValue};
use actix_web::http::{Method, StatusCode};
use actix_web::middleware::Next;
use actix_web::HttpResponse;

/// Middleware: a `200` to a `GET`/`HEAD` whose `If-None-Match` matches its `ETag` becomes a
/// `304` carrying the same `ETag`.
pub async fn not_modified(
    req: ServiceRequest,
    next: Next<impl MessageBody>,
) -> Result<ServiceResponse<EitherBody<impl MessageBody>>, actix_web::Error> {
    let conditional = matches!(*req.method(), Method::GET | Method::HEAD)
        && req.headers().contains_key(header::IF_NONE_MATCH);
    let response = next.call(req).await?;
    let named = (conditional && response.status() == StatusCode::OK)
        .then(|| response.headers().get(header::ETAG))
        .flatten()
        .filter(|etag| {
            response
                .request()
                .headers()
                .get_all(header::IF_NONE_MATCH)
                .any(|condition| names(condition, etag))
        })
        .cloned();
    let Some(etag) = named else {
        return Ok(response.map_into_left_body());
    };
    let request = response.request().clone();
    let answer = HttpResponse::NotModified()
        .insert_header((header::ETAG, etag))
        .finish();
    Ok(ServiceResponse::new(request, answer).map_into_right_body())
}

/// Whether an `If-Match`-style list (`"3"`, `"3", W/"4"`, `*`) names `etag`, by the weak
/// comparison `If-None-Match` uses (`W/` is ignored). A list that does not parse names nothing.
fn names(condition: &HeaderValue, etag: &HeaderValue) -> bool {
    let (Ok(condition), Ok(etag)) = (condition.to_str(), etag.to_str()) else {
        return false;
    };
    let Some(etag) = opaque(etag) else {
        return false;
    };
    condition.trim() == "*" || condition.split(',').any(|tag| opaque(tag) == Some(etag))
}

/// The opaque tag of an entity tag (`"3"` of `W/"3"`), if it is one.
fn opaque(tag: &str) -> Option<&str> {
    let tag = tag.trim();
    let tag = tag.strip_prefix("W/").unwrap_or(tag);
    (tag.len() >= 2 && tag.starts_with('"') && tag.ends_with('"')).then_some(tag)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(condition: &str, etag: &str) -> bool {
        names(
            &HeaderValue::from_str(condition).unwrap(),
            &HeaderValue::from_str(etag).unwrap(),
        )
    }

    #[test]
    fn a_condition_names_an_etag_by_weak_comparison() {
        assert!(check("\"3\"", "\"3\""));
        assert!(check("W/\"3\"", "\"3\""));
        assert!(check("\"1\", W/\"3\" ,\"9\"", "\"3\""));
        assert!(check("*", "\"3\""));
        assert!(!check("\"4\"", "\"3\""));
        assert!(!check("\"30\"", "\"3\""));
        assert!(!check("3", "\"3\""), "an unquoted tag is no tag");
        assert!(!check("", "\"3\""));
    }
}
