//! The one optimistic-update loop: every update is a single
//! `UPDATE … WHERE id = ? AND version = ?`; no row locks are held between read and write.

use std::fmt::Display;

use crate::db::{with_retry, Contention, DbConn};
use crate::error::AppError;
use crate::extract::Expected;
use crate::models::Versioned;

/// How many times a change without an expected version is re-validated and re-applied after
/// losing a race before the caller gets 409.
pub const LATEST_ATTEMPTS: u32 = 3;

/// Reads the current row, checks the caller's expected version, and applies the change.
///
/// - `load` reads the current row (404 if it is gone or not visible).
/// - `frozen` rejects rows that can no longer change at all (e.g. an acknowledged
///   prescription); it is checked before the version so the caller learns the real reason.
/// - `apply` re-checks the rules against the row it is given and runs the conditional UPDATE
///   (with `version = row.version()` in the WHERE clause) in a transaction; `Ok(None)` means
///   0 rows matched: someone else changed the row first.
///
/// With `Expected::Body`/`IfMatch` a mismatch is 409 (with `current`) or 412. With
/// `Expected::Latest` a lost race is retried against the new row, then 409.
///
/// An attempt that fails on a deadlock, a serialization failure or SQLite BUSY is run again
/// whole (a fresh read, the rules, the write) by [`with_retry`], with the booking path's
/// backoff; `what` names the row in its log lines. `apply`'s writes must be one transaction
/// (a savepoint inside a keyed POST's) or one statement, so that a failed attempt left
/// nothing behind.
pub fn update_versioned<R: Versioned, T>(
    conn: &mut DbConn,
    contention: &Contention,
    what: impl Display,
    expected: Expected,
    mut load: impl FnMut(&mut DbConn) -> Result<R, AppError>,
    frozen: impl Fn(&R) -> Result<(), AppError>,
    mut apply: impl FnMut(&mut DbConn, &R) -> Result<Option<T>, AppError>,
) -> Result<T, AppError> {
    with_retry(contention, "update", what, |_| {
        attempt(conn, expected, &mut load, &frozen, &mut apply)
    })
}

/// One attempt of [`update_versioned`].
fn attempt<R: Versioned, T>(
    conn: &mut DbConn,
    expected: Expected,
    load: &mut impl FnMut(&mut DbConn) -> Result<R, AppError>,
    frozen: &impl Fn(&R) -> Result<(), AppError>,
    apply: &mut impl FnMut(&mut DbConn, &R) -> Result<Option<T>, AppError>,
) -> Result<T, AppError> {
    for _ in 0..LATEST_ATTEMPTS {
        let current = load(conn)?;
        frozen(&current)?;
        check_expected(expected, &current)?;
        if let Some(updated) = apply(conn, &current)? {
            return Ok(updated);
        }
        if expected != Expected::Latest {
            let current = load(conn)?;
            frozen(&current)?;
            return Err(mismatch(expected, &current));
        }
        log::debug!(
            "ATOMIC optimistic update lost a race at version {}",
            current.version()
        );
    }
    let current = load(conn)?;
    frozen(&current)?;
    Err(AppError::version_conflict(current.to_json()))
}

/// 409/412 when the caller expected another version than `current`'s.
pub fn check_expected<R: Versioned>(expected: Expected, current: &R) -> Result<(), AppError> {
    match expected {
        Expected::Body(v) | Expected::IfMatch(v) if v != current.version() => {
            Err(mismatch(expected, current))
        }
        _ => Ok(()),
    }
}

fn mismatch<R: Versioned>(expected: Expected, current: &R) -> AppError {
    match expected {
        Expected::IfMatch(_) => AppError::PreconditionFailed {
            current: current.to_json(),
        },
        _ => AppError::version_conflict(current.to_json()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Row(i32);
    impl Versioned for Row {
        fn version(&self) -> i32 {
            self.0
        }
        fn to_json(&self) -> serde_json::Value {
            serde_json::json!({ "version": self.0 })
        }
    }

    #[test]
    fn mismatches_are_409_from_the_body_and_412_from_if_match() {
        assert!(check_expected(Expected::Body(2), &Row(2)).is_ok());
        assert!(check_expected(Expected::Latest, &Row(7)).is_ok());
        assert_eq!(
            check_expected(Expected::Body(1), &Row(2))
                .unwrap_err()
                .code(),
            "VERSION_CONFLICT"
        );
        assert_eq!(
            check_expected(Expected::IfMatch(1), &Row(2))
                .unwrap_err()
                .code(),
            "PRECONDITION_FAILED"
        );
    }
}
