//! Database access: the backend-neutral connection, the pool, migrations, and the few
//! operations that differ between PostgreSQL and SQLite (see [`backend`]).

pub mod backend;
pub mod errors;
mod group_commit;
pub mod pool;
pub mod prepared;
pub mod retry;
mod threads;

use diesel::pg::PgConnection;
use diesel::sqlite::SqliteConnection;

pub use backend::{
    lock_users_in_order, write_transaction, write_transaction_without_waiting_for_disk,
};
pub use errors::{classify, DbErrorClass};
pub use pool::{
    build_pool, check_database, check_sqlite_file, run_blocking, run_migrations, DbPool,
};
pub use prepared::FixedShapeDsl;
pub use retry::{retried_write, with_retry, Contention, RetryPolicy};
pub use threads::ThreadCounts;

/// SQLite group commit so far in this process: (batches, writes in them); zeros on PostgreSQL.
pub fn sqlite_write_batches() -> (u64, u64) {
    group_commit::SQLITE_WRITERS.counts()
}

/// SQLite's heap in this process now, and its soft limit (`MEDBOOK_SQLITE_MEMORY_MIB`; 0: no
/// limit), in bytes; zeros on PostgreSQL.
pub fn sqlite_memory() -> (i64, i64) {
    // SAFETY: both only read SQLite's global counters; a negative argument leaves the limit
    // as it is.
    unsafe {
        (
            libsqlite3_sys::sqlite3_memory_used(),
            libsqlite3_sys::sqlite3_soft_heap_limit64(-1),
        )
    }
}

/// One connection type for both databases. Everything outside [`backend`] is written
/// against this type and never asks which database it is on.
#[derive(diesel::MultiConnection)]
pub enum DbConn {
    Pg(PgConnection),
    Sqlite(SqliteConnection),
}

/// Runs `$body` with `$c` bound to the concrete connection inside a [`DbConn`], so that the
/// statement goes to diesel's `PgConnection`/`SqliteConnection` directly.
///
/// Through the derived `MultiConnection` every execution renders the statement to SQL again,
/// once per pass over it (caching check, binds), even when its prepared statement is cached:
/// that was ~60 % of the heap allocations of a booking (a `perf probe` on `malloc`). The
/// hot-path statements use this; the rest stay on `DbConn`. `$body` is written once and
/// type-checked for each backend.
#[macro_export]
macro_rules! on_backend {
    ($conn:expr, |$c:ident| $body:expr) => {
        match $conn {
            $crate::db::DbConn::Pg($c) => $body,
            $crate::db::DbConn::Sqlite($c) => $body,
        }
    };
}

/// The backend type of [`DbConn`], for boxed queries.
pub type DbBackend = <DbConn as diesel::Connection>::Backend;
