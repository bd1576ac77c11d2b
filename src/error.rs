//! The one error type of the API and its one JSON shape:
//! `{"error": "…", "code": "…", "details"?: {…}, "current"?: {…}}`.

use std::collections::BTreeMap;

use actix_web::http::{header, StatusCode};
use actix_web::{HttpResponse, ResponseError};
use serde::Serialize;

use crate::db::{classify, DbErrorClass};

/// The 409 codes of the contract.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConflictCode {
    SlotTaken,
    PatientBusy,
    DoctorInactive,
    PatientInactive,
    VersionConflict,
    PrescriptionExists,
    RatingExists,
    AlreadyAcknowledged,
    EmailTaken,
    DeadlockDetected,
    LockTimeout,
    IdempotencyKeyInUse,
}

impl ConflictCode {
    /// The machine-readable code.
    pub fn as_str(self) -> &'static str {
        match self {
            ConflictCode::SlotTaken => "SLOT_TAKEN",
            ConflictCode::PatientBusy => "PATIENT_BUSY",
            ConflictCode::DoctorInactive => "DOCTOR_INACTIVE",
            ConflictCode::PatientInactive => "PATIENT_INACTIVE",
            ConflictCode::VersionConflict => "VERSION_CONFLICT",
            ConflictCode::PrescriptionExists => "PRESCRIPTION_EXISTS",
            ConflictCode::RatingExists => "RATING_EXISTS",
            ConflictCode::AlreadyAcknowledged => "ALREADY_ACKNOWLEDGED",
            ConflictCode::EmailTaken => "EMAIL_TAKEN",
            ConflictCode::DeadlockDetected => "DEADLOCK_DETECTED",
            ConflictCode::LockTimeout => "LOCK_TIMEOUT",
            ConflictCode::IdempotencyKeyInUse => "IDEMPOTENCY_KEY_IN_USE",
        }
    }
}

/// Per-field validation messages.
pub type Details = BTreeMap<String, String>;

/// Every way a request can fail.
#[derive(Debug, thiserror::Error)]
pub enum AppError {
    #[error("{0}")]
    BadRequest(String),
    #[error("{message}")]
    Validation { message: String, details: Details },
    #[error("{message}")]
    Unprocessable { code: &'static str, message: String },
    #[error("Authentication required")]
    Unauthenticated,
    #[error("{0}")]
    InvalidCredentials(String),
    #[error("{0}")]
    Forbidden(String),
    #[error("Not found")]
    NotFound,
    /// A method the path does not have; `allow` lists those it has (the `Allow` header).
    #[error("Method not allowed; this path allows {allow}")]
    MethodNotAllowed { allow: String },
    #[error("{message}")]
    Conflict {
        code: ConflictCode,
        message: String,
        current: Option<serde_json::Value>,
    },
    #[error("If-Match does not match the current version")]
    PreconditionFailed { current: serde_json::Value },
    #[error("Request body is larger than {0} bytes")]
    PayloadTooLarge(usize),
    #[error("Service temporarily unavailable, try again shortly")]
    Unavailable(String),
    #[error("database error")]
    Database(#[from] diesel::result::Error),
    #[error("Internal server error")]
    Internal(String),
}

impl AppError {
    /// What the server's log says of this error: with the detail its response leaves out (the
    /// database's message, what was unavailable).
    pub fn detail(&self) -> String {
        match self {
            AppError::Database(e) => format!("database error: {e}"),
            AppError::Internal(detail) | AppError::Unavailable(detail) if !detail.is_empty() => {
                detail.clone()
            }
            other => other.to_string(),
        }
    }

    /// 409 with `code`.
    pub fn conflict(code: ConflictCode, message: impl Into<String>) -> Self {
        AppError::Conflict {
            code,
            message: message.into(),
            current: None,
        }
    }

    /// 409 `VERSION_CONFLICT` carrying the current resource.
    pub fn version_conflict(current: serde_json::Value) -> Self {
        AppError::Conflict {
            code: ConflictCode::VersionConflict,
            message: "The resource was changed by someone else; re-read it and retry".to_owned(),
            current: Some(current),
        }
    }

    /// 422 `VALIDATION_FAILED` for one field.
    pub fn invalid(field: &str, message: impl Into<String>) -> Self {
        let mut details = Details::new();
        details.insert(field.to_owned(), message.into());
        AppError::validation(details)
    }

    /// 422 `VALIDATION_FAILED` for several fields.
    pub fn validation(details: Details) -> Self {
        AppError::Validation {
            message: "Validation failed".to_owned(),
            details,
        }
    }

    /// 403 with a message.
    pub fn forbidden(message: impl Into<String>) -> Self {
        AppError::Forbidden(message.into())
    }

    /// 500 with a detail that is logged, never sent.
    pub fn internal(detail: impl Into<String>) -> Self {
        AppError::Internal(detail.into())
    }

    /// A pool that could not hand out a connection in time: 503.
    pub fn pool(err: r2d2::Error) -> Self {
        AppError::Unavailable(format!("connection pool: {err}"))
    }

    /// The 409 code this error answers with, if it is a conflict.
    pub fn conflict_code(&self) -> Option<ConflictCode> {
        match self {
            AppError::Conflict { code, .. } => Some(*code),
            AppError::Database(e) => match classify(e) {
                DbErrorClass::Deadlock
                | DbErrorClass::SerializationFailure
                | DbErrorClass::Busy => Some(ConflictCode::DeadlockDetected),
                DbErrorClass::LockTimeout => Some(ConflictCode::LockTimeout),
                _ => None,
            },
            _ => None,
        }
    }

    /// The class of the database error inside, if this is one.
    pub fn db_class(&self) -> Option<DbErrorClass> {
        match self {
            AppError::Database(e) => Some(classify(e)),
            _ => None,
        }
    }

    /// The resolved form of a raw database error: what status and code it answers with.
    fn resolved(&self) -> (StatusCode, &'static str) {
        match self {
            AppError::BadRequest(_) => (StatusCode::BAD_REQUEST, "BAD_REQUEST"),
            AppError::Validation { .. } => (StatusCode::UNPROCESSABLE_ENTITY, "VALIDATION_FAILED"),
            AppError::Unprocessable { code, .. } => (StatusCode::UNPROCESSABLE_ENTITY, code),
            AppError::Unauthenticated | AppError::InvalidCredentials(_) => {
                (StatusCode::UNAUTHORIZED, "UNAUTHENTICATED")
            }
            AppError::Forbidden(_) => (StatusCode::FORBIDDEN, "FORBIDDEN"),
            AppError::NotFound => (StatusCode::NOT_FOUND, "NOT_FOUND"),
            AppError::MethodNotAllowed { .. } => {
                (StatusCode::METHOD_NOT_ALLOWED, "METHOD_NOT_ALLOWED")
            }
            AppError::Conflict { code, .. } => (StatusCode::CONFLICT, code.as_str()),
            AppError::PreconditionFailed { .. } => {
                (StatusCode::PRECONDITION_FAILED, "PRECONDITION_FAILED")
            }
            AppError::PayloadTooLarge(_) => (StatusCode::PAYLOAD_TOO_LARGE, "PAYLOAD_TOO_LARGE"),
            AppError::Unavailable(_) => (StatusCode::SERVICE_UNAVAILABLE, "UNAVAILABLE"),
            AppError::Internal(_) => (StatusCode::INTERNAL_SERVER_ERROR, "INTERNAL"),
            AppError::Database(e) => match classify(e) {
                DbErrorClass::NotFound => (StatusCode::NOT_FOUND, "NOT_FOUND"),
                DbErrorClass::Deadlock
                | DbErrorClass::SerializationFailure
                | DbErrorClass::Busy => (
                    StatusCode::CONFLICT,
                    ConflictCode::DeadlockDetected.as_str(),
                ),
                DbErrorClass::LockTimeout => {
                    (StatusCode::CONFLICT, ConflictCode::LockTimeout.as_str())
                }
                DbErrorClass::Unavailable | DbErrorClass::StorageFull => {
                    (StatusCode::SERVICE_UNAVAILABLE, "UNAVAILABLE")
                }
                // A constraint the service did not map is a bug in the service.
                _ => (StatusCode::INTERNAL_SERVER_ERROR, "INTERNAL"),
            },
        }
    }

    /// The machine-readable code sent in the body.
    pub fn code(&self) -> &'static str {
        self.resolved().1
    }

    /// The human-readable message sent in the body: never database detail.
    fn public_message(&self) -> String {
        match self {
            AppError::Database(_) => match self.code() {
                "NOT_FOUND" => "Not found".to_owned(),
                "DEADLOCK_DETECTED" => "Try again, access conflict detected".to_owned(),
                "LOCK_TIMEOUT" => "Timed out waiting for a lock; try again".to_owned(),
                "UNAVAILABLE" => AppError::Unavailable(String::new()).to_string(),
                _ => "Internal server error".to_owned(),
            },
            AppError::Unavailable(_) | AppError::Internal(_) => self.to_string(),
            other => other.to_string(),
        }
    }
}

#[derive(Serialize)]
struct ErrorBody<'a> {
    error: String,
    code: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    details: Option<&'a Details>,
    #[serde(skip_serializing_if = "Option::is_none")]
    current: Option<&'a serde_json::Value>,
}

impl ResponseError for AppError {
    fn status_code(&self) -> StatusCode {
        self.resolved().0
    }

    fn error_response(&self) -> HttpResponse {
        let (status, code) = self.resolved();
        if status.is_server_error() {
            log::error!("{code}: {}", self.detail());
        } else {
            log::debug!("{code}: {}", self.detail());
        }
        let (details, current) = match self {
            AppError::Validation { details, .. } => (Some(details), None),
            AppError::Conflict { current, .. } => (None, current.as_ref()),
            AppError::PreconditionFailed { current } => (None, Some(current)),
            _ => (None, None),
        };
        let mut response = HttpResponse::build(status);
        match status {
            StatusCode::UNAUTHORIZED => {
                response.insert_header((header::WWW_AUTHENTICATE, "Bearer"));
            }
            StatusCode::SERVICE_UNAVAILABLE => {
                response.insert_header((header::RETRY_AFTER, "1"));
            }
            _ => {}
        }
        if let AppError::MethodNotAllowed { allow } = self {
            response.insert_header((header::ALLOW, allow.as_str()));
        }
        response.json(ErrorBody {
            error: self.public_message(),
            code,
            details,
            current,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use actix_web::body::MessageBody;
    use diesel::result::{DatabaseErrorKind, Error};

    fn body(err: &AppError) -> serde_json::Value {
        let bytes = err.error_response().into_body().try_into_bytes().unwrap();
        serde_json::from_slice(&bytes).unwrap()
    }

    fn db(kind: DatabaseErrorKind, message: &str) -> AppError {
        AppError::Database(Error::DatabaseError(kind, Box::new(message.to_owned())))
    }

    #[test]
    fn every_error_maps_to_its_status_and_code() {
        let cases: Vec<(AppError, u16, &str)> = vec![
            (AppError::BadRequest("x".into()), 400, "BAD_REQUEST"),
            (AppError::invalid("f", "bad"), 422, "VALIDATION_FAILED"),
            (AppError::Unauthenticated, 401, "UNAUTHENTICATED"),
            (AppError::forbidden("no"), 403, "FORBIDDEN"),
            (AppError::NotFound, 404, "NOT_FOUND"),
            (
                AppError::MethodNotAllowed {
                    allow: "GET, HEAD".to_owned(),
                },
                405,
                "METHOD_NOT_ALLOWED",
            ),
            (
                AppError::conflict(ConflictCode::SlotTaken, "taken"),
                409,
                "SLOT_TAKEN",
            ),
            (
                AppError::PreconditionFailed {
                    current: serde_json::json!({}),
                },
                412,
                "PRECONDITION_FAILED",
            ),
            (AppError::PayloadTooLarge(10), 413, "PAYLOAD_TOO_LARGE"),
            (AppError::Unavailable("pool".into()), 503, "UNAVAILABLE"),
            (AppError::internal("bug"), 500, "INTERNAL"),
            (
                db(DatabaseErrorKind::Unknown, "deadlock detected"),
                409,
                "DEADLOCK_DETECTED",
            ),
            (
                db(
                    DatabaseErrorKind::Unknown,
                    "canceling statement due to lock timeout",
                ),
                409,
                "LOCK_TIMEOUT",
            ),
            (
                db(DatabaseErrorKind::ClosedConnection, "gone"),
                503,
                "UNAVAILABLE",
            ),
            (
                db(DatabaseErrorKind::Unknown, "database or disk is full"),
                503,
                "UNAVAILABLE",
            ),
            (AppError::Database(Error::NotFound), 404, "NOT_FOUND"),
        ];
        for (err, status, code) in cases {
            assert_eq!(err.status_code().as_u16(), status, "{err:?}");
            assert_eq!(body(&err)["code"], code, "{err:?}");
        }
    }

    #[test]
    fn database_detail_never_reaches_the_body() {
        let err = db(
            DatabaseErrorKind::Unknown,
            "relation \"appointments\" does not exist",
        );
        let body = body(&err);
        assert_eq!(body["code"], "INTERNAL");
        assert!(!body.to_string().contains("appointments"));
        let err = AppError::internal("SELECT secret FROM users");
        assert!(!body_contains(&err, "SELECT"));
    }

    /// The log has what the body leaves out (a purge that failed said only "database error").
    #[test]
    fn the_log_detail_has_what_the_body_leaves_out() {
        let err = db(
            DatabaseErrorKind::Unknown,
            "attempt to write a readonly database",
        );
        assert_eq!(
            err.detail(),
            "database error: attempt to write a readonly database"
        );
        assert!(!body_contains(&err, "readonly"));
        let err = AppError::Unavailable("connection pool: timed out".into());
        assert_eq!(err.detail(), "connection pool: timed out");
        assert_eq!(
            AppError::Unavailable(String::new()).detail(),
            "Service temporarily unavailable, try again shortly"
        );
        assert_eq!(AppError::NotFound.detail(), "Not found");
    }

    fn body_contains(err: &AppError, needle: &str) -> bool {
        body(err).to_string().contains(needle)
    }

    #[test]
    fn unauthorized_unavailable_and_method_not_allowed_carry_their_headers() {
        let response = AppError::Unauthenticated.error_response();
        assert_eq!(
            response.headers().get(header::WWW_AUTHENTICATE).unwrap(),
            "Bearer"
        );
        let response = AppError::Unavailable("x".into()).error_response();
        assert_eq!(response.headers().get(header::RETRY_AFTER).unwrap(), "1");
        let response = AppError::MethodNotAllowed {
            allow: "POST".to_owned(),
        }
        .error_response();
        assert_eq!(response.headers().get(header::ALLOW).unwrap(), "POST");
    }

    #[test]
    fn version_conflict_carries_current() {
        let body = body(&AppError::version_conflict(
            serde_json::json!({"version": 3}),
        ));
        assert_eq!(body["code"], "VERSION_CONFLICT");
        assert_eq!(body["current"]["version"], 3);
    }
}
