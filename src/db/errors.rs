//! What a diesel error means for medbook, decided by diesel's error kind.

use diesel::result::{DatabaseErrorKind, Error};

/// The classes of database failure that medbook treats differently.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DbErrorClass {
    NotFound,
    /// A unique index refused the write; PostgreSQL names the constraint, SQLite does not.
    UniqueViolation {
        constraint: Option<String>,
    },
    /// An exclusion constraint refused the write (on SQLite, the trigger that stands for it).
    ExclusionViolation {
        constraint: Option<String>,
    },
    ForeignKeyViolation,
    CheckViolation,
    /// Transient: retried by [`super::with_retry`].
    Deadlock,
    /// Transient: retried by [`super::with_retry`].
    SerializationFailure,
    /// Transient (SQLite's `busy_timeout` ran out): retried by [`super::with_retry`].
    Busy,
    /// PostgreSQL's `lock_timeout` ran out: the caller gets 409 `LOCK_TIMEOUT`.
    LockTimeout,
    /// The statement ran past `statement_timeout`, or the connection is gone: 503.
    Unavailable,
    Other,
}

impl DbErrorClass {
    /// Whether running the whole transaction again may succeed.
    pub fn is_retryable(&self) -> bool {
        matches!(
            self,
            DbErrorClass::Deadlock | DbErrorClass::SerializationFailure | DbErrorClass::Busy
        )
    }
}

/// Classifies a diesel error by its kind.
pub fn classify(err: &Error) -> DbErrorClass {
    let Error::DatabaseError(kind, info) = err else {
        return match err {
            Error::NotFound => DbErrorClass::NotFound,
            Error::BrokenTransactionManager => DbErrorClass::Unavailable,
            _ => DbErrorClass::Other,
        };
    };
    let constraint = || info.constraint_name().map(str::to_owned);
    match kind {
        DatabaseErrorKind::UniqueViolation => DbErrorClass::UniqueViolation {
            constraint: constraint(),
        },
        DatabaseErrorKind::ExclusionViolation => DbErrorClass::ExclusionViolation {
            constraint: constraint(),
        },
        DatabaseErrorKind::ForeignKeyViolation => DbErrorClass::ForeignKeyViolation,
        DatabaseErrorKind::CheckViolation => DbErrorClass::CheckViolation,
        DatabaseErrorKind::SerializationFailure => DbErrorClass::SerializationFailure,
        DatabaseErrorKind::ClosedConnection | DatabaseErrorKind::UnableToSendCommand => {
            DbErrorClass::Unavailable
        }
        DatabaseErrorKind::Unknown => classify_unknown(info.message()),
        _ => DbErrorClass::Other,
    }
}

/// The SQLite triggers' messages that stand for PostgreSQL's exclusion constraints.
const SQLITE_EXCLUSION_GUARDS: [&str; 2] = [
    "appointments_doctor_no_overlap",
    "appointments_patient_no_overlap",
];

/// The SQLite trigger's message that stands for PostgreSQL's `ends_at` CHECK.
const SQLITE_ENDS_AT_GUARD: &str = "appointments_ends_at_check";

/// The one unavoidable look at message text.
///
/// diesel 2.3 reports PostgreSQL's deadlock (SQLSTATE 40P01), lock timeout (55P03) and query
/// cancellation (57014), and SQLite's `SQLITE_BUSY`, only as `DatabaseErrorKind::Unknown`
/// without the SQLSTATE or result code, so the primary message is all there is. These are the
/// servers' fixed primary messages (PostgreSQL with `lc_messages` in English or C, as set up by
/// default). `tests/db_errors.rs` proves on real databases that each one is recognised.
///
/// SQLite has no exclusion constraints and cannot add a CHECK to an existing table; the
/// triggers of migration `2026-12-02-000005_overlap_guards` stand for PostgreSQL's, and
/// `RAISE(ABORT, name)` reaches diesel as `Unknown` too, its message exactly the name of the
/// PostgreSQL constraint it stands for (`tests/booking.rs` proves it on both databases).
fn classify_unknown(message: &str) -> DbErrorClass {
    if SQLITE_EXCLUSION_GUARDS.contains(&message) {
        DbErrorClass::ExclusionViolation {
            constraint: Some(message.to_owned()),
        }
    } else if message == SQLITE_ENDS_AT_GUARD {
        DbErrorClass::CheckViolation
    } else if message.starts_with("deadlock detected") {
        DbErrorClass::Deadlock
    } else if message.starts_with("canceling statement due to lock timeout")
        || message.starts_with("could not obtain lock")
    {
        DbErrorClass::LockTimeout
    } else if message.starts_with("canceling statement due to statement timeout")
        || message.starts_with("terminating connection")
    {
        DbErrorClass::Unavailable
    } else if message.starts_with("database is locked")
        || message.starts_with("database table is locked")
    {
        DbErrorClass::Busy
    } else {
        DbErrorClass::Other
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn unknown(message: &str) -> Error {
        Error::DatabaseError(DatabaseErrorKind::Unknown, Box::new(message.to_owned()))
    }

    #[test]
    fn kinds_decide_without_message_text() {
        let unique = Error::DatabaseError(
            DatabaseErrorKind::UniqueViolation,
            Box::new("deadlock detected".to_owned()),
        );
        assert_eq!(
            classify(&unique),
            DbErrorClass::UniqueViolation { constraint: None }
        );
        assert_eq!(classify(&Error::NotFound), DbErrorClass::NotFound);
        let serialization = Error::DatabaseError(
            DatabaseErrorKind::SerializationFailure,
            Box::new(String::new()),
        );
        assert!(classify(&serialization).is_retryable());
    }

    #[test]
    fn unknown_errors_are_classified_by_primary_message() {
        assert_eq!(
            classify(&unknown("deadlock detected")),
            DbErrorClass::Deadlock
        );
        assert_eq!(
            classify(&unknown("canceling statement due to lock timeout")),
            DbErrorClass::LockTimeout
        );
        assert_eq!(classify(&unknown("database is locked")), DbErrorClass::Busy);
        assert_eq!(classify(&unknown("syntax error")), DbErrorClass::Other);
        assert_eq!(
            classify(&unknown("appointments_patient_no_overlap")),
            DbErrorClass::ExclusionViolation {
                constraint: Some("appointments_patient_no_overlap".into())
            }
        );
        // A guard's name inside other text is no guard's refusal.
        assert_eq!(
            classify(&unknown("no such trigger: appointments_doctor_no_overlap")),
            DbErrorClass::Other
        );
        assert!(!DbErrorClass::LockTimeout.is_retryable());
    }
}
