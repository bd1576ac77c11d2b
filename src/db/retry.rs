//! Retrying whole transactions that lost to a deadlock, a serialization failure or SQLite BUSY.

use std::fmt::Display;
use std::sync::Arc;
use std::time::Duration;

use rand::Rng;

use super::{write_transaction, DbConn, DbErrorClass};
use crate::error::{AppError, ConflictCode};
use crate::telemetry::LockStats;

/// How often and how patiently a transaction is retried.
#[derive(Debug, Clone, Copy)]
pub struct RetryPolicy {
    /// Retries after the first attempt (so `retries + 1` attempts in all).
    pub retries: u32,
    /// Backoff before the first retry; doubled for each further one (100/200/400 ms).
    pub base_delay: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            retries: 3,
            base_delay: Duration::from_millis(100),
        }
    }
}

impl RetryPolicy {
    /// The backoff before retry number `retry` (0-based): base × 2^retry plus up to 50 %
    /// jitter, so that the losers of one deadlock do not collide again in lockstep.
    pub fn delay(&self, retry: u32) -> Duration {
        let base = self.base_delay * 2u32.saturating_pow(retry);
        let jitter_ms = rand::thread_rng().gen_range(0..=base.as_millis() as u64 / 2);
        base + Duration::from_millis(jitter_ms)
    }
}

/// What the locking paths need besides a connection: the retry policy and the statistics.
#[derive(Debug, Clone, Default)]
pub struct Contention {
    pub policy: RetryPolicy,
    pub stats: Arc<LockStats>,
}

/// Runs `op` (a whole transaction; it gets the attempt number, from 1) and runs it again when
/// it failed for a transient reason.
///
/// `label` and `ids` name the operation in the `RETRY`/`DEADLOCK` log lines (`ids` is only
/// formatted for them: `format_args!` costs nothing when nothing fails). When the retries
/// run out the caller gets 409 `DEADLOCK_DETECTED`. Runs on a blocking thread: it sleeps.
pub fn with_retry<T>(
    contention: &Contention,
    label: &str,
    ids: impl Display,
    mut op: impl FnMut(u32) -> Result<T, AppError>,
) -> Result<T, AppError> {
    let policy = contention.policy;
    let mut retry = 0;
    loop {
        let err = match op(retry + 1) {
            Ok(value) => return Ok(value),
            Err(err) => err,
        };
        let Some(class) = err.db_class().filter(|class| class.is_retryable()) else {
            return Err(err);
        };
        let deadlock = class == DbErrorClass::Deadlock;
        if retry >= policy.retries {
            contention.stats.exhausted(deadlock);
            log::error!(
                "DEADLOCK {label} {ids}: retries exhausted after {} attempts ({class:?})",
                retry + 1
            );
            return Err(AppError::conflict(
                ConflictCode::DeadlockDetected,
                "Try again, access conflict detected",
            ));
        }
        contention.stats.retried(deadlock);
        let delay = policy.delay(retry);
        retry += 1;
        log::warn!(
            "RETRY {label} {ids}: attempt {} failed ({class:?}), retrying in {} ms",
            retry,
            delay.as_millis()
        );
        std::thread::sleep(delay);
    }
}

/// One write of a request: `f` in a [`write_transaction`], run again by [`with_retry`] when a
/// deadlock, a serialization failure or SQLite BUSY rolled it back (`f` gets the attempt
/// number, from 1).
pub fn retried_write<T: Send>(
    conn: &mut DbConn,
    contention: &Contention,
    label: &str,
    ids: impl Display,
    mut f: impl FnMut(&mut DbConn, u32) -> Result<T, AppError> + Send,
) -> Result<T, AppError> {
    with_retry(contention, label, ids, |attempt| {
        write_transaction(conn, |conn| f(conn, attempt))
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use diesel::result::{DatabaseErrorKind, Error};

    fn deadlock() -> AppError {
        AppError::Database(Error::DatabaseError(
            DatabaseErrorKind::Unknown,
            Box::new("deadlock detected".to_owned()),
        ))
    }

    fn fast() -> Contention {
        Contention {
            policy: RetryPolicy {
                retries: 3,
                base_delay: Duration::from_millis(1),
            },
            stats: Arc::default(),
        }
    }

    #[test]
    fn delays_double_with_bounded_jitter() {
        let policy = RetryPolicy::default();
        for (retry, base) in [(0, 100), (1, 200), (2, 400)] {
            let delay = policy.delay(retry).as_millis();
            assert!(delay >= base && delay <= base * 3 / 2, "{retry}: {delay}");
        }
    }

    #[test]
    fn transient_failure_is_retried_until_success() {
        let mut calls = 0;
        let contention = fast();
        let result = with_retry(&contention, "test", "", |attempt| {
            calls += 1;
            assert_eq!(attempt, calls);
            if calls < 3 {
                Err(deadlock())
            } else {
                Ok(calls)
            }
        });
        assert_eq!(result.unwrap(), 3);
        let view = contention.stats.view();
        assert_eq!((view.retry_count, view.deadlock_count), (2, 2));
    }

    #[test]
    fn exhausted_retries_become_deadlock_detected() {
        let mut calls = 0;
        let contention = fast();
        let err = with_retry(&contention, "test", "", |_| -> Result<(), _> {
            calls += 1;
            Err(deadlock())
        })
        .unwrap_err();
        assert_eq!(calls, 4);
        let view = contention.stats.view();
        assert_eq!(
            (
                view.retry_count,
                view.retries_exhausted,
                view.deadlock_count
            ),
            (3, 1, 4)
        );
        assert_eq!(err.code(), "DEADLOCK_DETECTED");
    }

    #[test]
    fn other_errors_are_not_retried() {
        let mut calls = 0;
        let err = with_retry(&fast(), "test", "", |_| -> Result<(), _> {
            calls += 1;
            Err(AppError::NotFound)
        })
        .unwrap_err();
        assert_eq!(calls, 1);
        assert_eq!(err.code(), "NOT_FOUND");
    }
}
