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
    /// The statement ran past `statement_timeout`, the connection is gone, or the database
    /// takes no writes now (PostgreSQL's read-only transaction: a standby after a fail-over,
    /// or a database set `default_transaction_read_only`; SQLite's `SQLITE_READONLY`: a file
    /// opened `?mode=ro`): 503, and the pool drops the connection, so the next one may reach
    /// the new primary.
    Unavailable,
    /// The database's disk is full: SQLite's `SQLITE_FULL`, or PostgreSQL could not extend a
    /// table's file (SQLSTATE 53100). 503 like an unreachable database: nothing was written,
    /// and the client may try again later; writes succeed again as soon as there is room.
    /// Unlike [`DbErrorClass::Unavailable`] the connection is not dropped: it is not at fault.
    StorageFull,
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
        DatabaseErrorKind::ClosedConnection
        | DatabaseErrorKind::UnableToSendCommand
        | DatabaseErrorKind::ReadOnlyTransaction => DbErrorClass::Unavailable,
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
/// diesel 2.3 reports PostgreSQL's deadlock (SQLSTATE 40P01), lock timeout (55P03), query
/// cancellation (57014) and full disk (53100), and SQLite's `SQLITE_BUSY`, `SQLITE_FULL` and
/// `SQLITE_READONLY`, only as `DatabaseErrorKind::Unknown` without the SQLSTATE or result
/// code, so the primary message is all there is. These are the servers' fixed primary
/// messages; PostgreSQL translates its messages into the session's `lc_messages`, so every
/// PostgreSQL connection is made to report them in English first ([`english_messages`]).
/// `tests/db_errors.rs` proves on real databases that each one is recognised (a full disk on
/// a small disk filled up, a SQLite file opened read-only), on a database whose sessions
/// default to German as well.
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
    } else if message == "database or disk is full" || message.starts_with("could not extend file")
    {
        DbErrorClass::StorageFull
    } else if message == "attempt to write a readonly database" {
        DbErrorClass::Unavailable
    } else {
        DbErrorClass::Other
    }
}

/// Makes this PostgreSQL session report errors in English, which `classify_unknown` needs.
///
/// A server set up in another language (initdb takes `lc_messages` from the system's locale)
/// would otherwise answer a deadlock as "Verklemmung (Deadlock) entdeckt": medbook would not
/// recognise it, and every deadlock, lock timeout and statement timeout would be a `500`
/// instead of a retry, a `409` or a `503`. A session whose setting names English (`C`,
/// `POSIX`, `en_…`) is left as it is; any other is set to `C`, which a superuser may do, and a
/// role that was granted it (`GRANT SET ON PARAMETER lc_messages`, PostgreSQL 15). Where the
/// role may not, the session's own answer decides: a statement time-out, provoked, must be
/// recognised. (An empty setting takes the server's environment, which may well be English.)
/// A session that fails that is refused with what to change: medbook does not run where it
/// cannot tell a deadlock. Runs before the session settings, which set the time-out again.
pub fn english_messages(conn: &mut diesel::PgConnection) -> Result<(), String> {
    use diesel::connection::SimpleConnection;
    use diesel::prelude::*;

    #[derive(QueryableByName)]
    struct Session {
        #[diesel(sql_type = diesel::sql_types::Text)]
        lc_messages: String,
        #[diesel(sql_type = diesel::sql_types::Text)]
        role: String,
    }
    let Session {
        lc_messages: current,
        role,
    } = diesel::sql_query(
        "SELECT current_setting('lc_messages') AS lc_messages, current_user::text AS role",
    )
    .get_result(conn)
    .map_err(|e| format!("reading lc_messages: {e}"))?;
    if reads_english(&current) {
        return Ok(());
    }
    // Any refusal will do: whatever the reason, the setting stays as it is.
    let refused = match conn.batch_execute("SET lc_messages = 'C'") {
        Ok(()) => return Ok(()),
        Err(e) => e,
    };
    let probe = conn
        .batch_execute("SET statement_timeout = 1; SELECT pg_sleep(1)")
        .err();
    if probe.as_ref().map(classify) == Some(DbErrorClass::Unavailable) {
        return Ok(());
    }
    let answer = probe.map_or_else(|| "none".to_owned(), |e| e.to_string());
    Err(format!(
        "PostgreSQL reports errors to role {role} in lc_messages = '{current}' (a statement \
         timeout reads \"{answer}\"), and the role may not change it ({refused}). medbook \
         recognises deadlocks, lock timeouts and statement timeouts by PostgreSQL's English \
         messages and would answer them with 500. As a superuser, run ALTER ROLE \"{role}\" \
         SET lc_messages = 'C' (or GRANT SET ON PARAMETER lc_messages TO \"{role}\")"
    ))
}

/// Whether an `lc_messages` setting names English messages.
fn reads_english(setting: &str) -> bool {
    let setting = setting.to_ascii_lowercase();
    let language = setting.split(['.', '@']).next().unwrap_or_default();
    language == "c"
        || language == "posix"
        || language == "en"
        || language.starts_with("en_")
        || language.starts_with("english") // Windows: "English_United States.1252"
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
        let read_only = Error::DatabaseError(
            DatabaseErrorKind::ReadOnlyTransaction,
            Box::new(String::new()),
        );
        assert_eq!(classify(&read_only), DbErrorClass::Unavailable);
    }

    #[test]
    fn only_english_message_settings_are_kept() {
        for english in [
            "C",
            "C.UTF-8",
            "C.utf8",
            "POSIX",
            "en_US.UTF-8",
            "en_GB",
            "en",
            "English_United States.1252",
        ] {
            assert!(reads_english(english), "{english}");
        }
        // "" takes the server's own environment, which may be any language: the session's own
        // answer decides (tests/db_errors.rs).
        for other in [
            "",
            "de_DE.UTF-8",
            "fr_FR",
            "ca_ES@valencia",
            "eo",
            "cy_GB",
            "enx",
        ] {
            assert!(!reads_english(other), "{other}");
        }
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
        assert_eq!(
            classify(&unknown("database or disk is full")),
            DbErrorClass::StorageFull
        );
        assert_eq!(
            classify(&unknown(
                "could not extend file \"base/16384/16390\": No space left on device"
            )),
            DbErrorClass::StorageFull
        );
        assert!(!DbErrorClass::StorageFull.is_retryable());
        assert_eq!(
            classify(&unknown("attempt to write a readonly database")),
            DbErrorClass::Unavailable
        );
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
