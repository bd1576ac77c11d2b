//! The r2d2 pool, per-connection settings, embedded migrations and the `run_blocking` bridge
//! from async handlers to blocking diesel code.

use diesel::connection::{SimpleConnection, TransactionManager};
use diesel::prelude::*;
use diesel_migrations::{embed_migrations, EmbeddedMigrations, MigrationHarness};

use std::sync::Arc;

use super::{DbConn, DbErrorClass};
use crate::config::{Backend, Config};
use crate::error::AppError;
use crate::telemetry::Telemetry;

const PG_MIGRATIONS: EmbeddedMigrations = embed_migrations!("migrations/postgres");
const SQLITE_MIGRATIONS: EmbeddedMigrations = embed_migrations!("migrations/sqlite");

/// The shared pool of [`DbConn`]s.
pub type DbPool = r2d2::Pool<ConnectionManager>;

/// Opens connections of the backend the URL names, with medbook's session settings.
///
/// diesel's derived `MultiConnection::establish` tries every backend and discards their errors;
/// choosing by scheme keeps the real one ("password authentication failed", …) for the logs.
#[derive(Debug)]
pub struct ConnectionManager {
    url: String,
    backend: Backend,
    session_sql: String,
}

impl ConnectionManager {
    /// A manager for `config.database_url` with the configured timeouts.
    pub fn new(config: &Config) -> Self {
        let backend = config.backend();
        let session_sql = match backend {
            Backend::Postgres => format!(
                "SET lock_timeout = {}; SET statement_timeout = {}; SET TIME ZONE 'UTC';",
                config.pg_lock_timeout.as_millis(),
                config.pg_statement_timeout.as_millis()
            ),
            // WAL lets readers work beside the one writer; synchronous=FULL keeps every
            // acknowledged booking on disk across a power loss.
            Backend::Sqlite => format!(
                "PRAGMA busy_timeout = {}; PRAGMA journal_mode = WAL; \
                 PRAGMA synchronous = FULL; PRAGMA foreign_keys = ON;",
                config.sqlite_busy_timeout.as_millis()
            ),
        };
        let url = match backend {
            Backend::Postgres => config.database_url.clone(),
            Backend::Sqlite => sqlite_path(&config.database_url).to_owned(),
        };
        ConnectionManager {
            url,
            backend,
            session_sql,
        }
    }

    /// Opens a connection of the URL's backend and applies the session settings.
    fn open(&self) -> Result<DbConn, diesel::ConnectionError> {
        let mut conn = match self.backend {
            Backend::Postgres => DbConn::Pg(diesel::PgConnection::establish(&self.url)?),
            Backend::Sqlite => {
                keep_sqlite_plans();
                let conn = diesel::SqliteConnection::establish(&self.url)?;
                super::group_commit::register(&conn, &self.url)
                    .map_err(diesel::ConnectionError::CouldntSetupConfiguration)?;
                DbConn::Sqlite(conn)
            }
        };
        conn.batch_execute(&self.session_sql)
            .map_err(diesel::ConnectionError::CouldntSetupConfiguration)?;
        Ok(conn)
    }
}

/// Turns on SQLite's query planner stability guarantee (QPSG) for every connection this
/// process opens from now on.
///
/// Without it SQLite plans a statement with the values bound at its first run wherever they
/// could change the plan (a bound `status` compared with the partial unique index's
/// predicate, for one), then marks the statement expired as soon as such a parameter is
/// bound again and compiles it anew on the next step: every cached statement of a booking
/// was recompiled on every use (`perf probe` on `sqlite3Reprepare`: 4 per booking). With it a
/// prepared statement keeps its plan, which is what statement caching is for; the plans do
/// not need the values (every hot query has an index that fits it whatever the values).
/// diesel does not expose the `sqlite3*` handle, so the setting goes in through
/// `sqlite3_auto_extension`, which SQLite runs for each connection it opens afterwards.
fn keep_sqlite_plans() {
    use libsqlite3_sys as ffi;
    use std::os::raw::{c_char, c_int};

    unsafe extern "C" fn enable_qpsg(
        db: *mut ffi::sqlite3,
        _err: *mut *mut c_char,
        _api: *const ffi::sqlite3_api_routines,
    ) -> c_int {
        // SAFETY: SQLite calls this with the connection it is opening.
        unsafe {
            ffi::sqlite3_db_config(
                db,
                ffi::SQLITE_DBCONFIG_ENABLE_QPSG,
                1 as c_int,
                std::ptr::null_mut::<c_int>(),
            )
        }
    }

    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        // SAFETY: registers a function with the signature SQLite expects; registering the same
        // function twice is a no-op.
        let rc = unsafe { ffi::sqlite3_auto_extension(Some(enable_qpsg)) };
        if rc != ffi::SQLITE_OK {
            log::warn!("SQLite query planner stability could not be enabled (code {rc})");
        }
    });
}

/// The file path of a SQLite `DATABASE_URL` (an optional `sqlite://` prefix is dropped).
pub fn sqlite_path(url: &str) -> &str {
    url.strip_prefix("sqlite://").unwrap_or(url)
}

/// A pooled connection and whether a request saw it fail at the connection level.
pub struct PoolConn {
    conn: DbConn,
    /// Set after an error of class `Unavailable` (server closed it, backend terminated, …):
    /// the pool then drops the connection instead of handing it out again.
    broken: bool,
}

impl std::ops::Deref for PoolConn {
    type Target = DbConn;
    fn deref(&self) -> &DbConn {
        &self.conn
    }
}

impl std::ops::DerefMut for PoolConn {
    fn deref_mut(&mut self) -> &mut DbConn {
        &mut self.conn
    }
}

impl r2d2::ManageConnection for ConnectionManager {
    type Connection = PoolConn;
    type Error = diesel::ConnectionError;

    fn connect(&self) -> Result<PoolConn, Self::Error> {
        self.open().map(|conn| PoolConn {
            conn,
            broken: false,
        })
    }

    fn is_valid(&self, conn: &mut PoolConn) -> Result<(), Self::Error> {
        conn.batch_execute("SELECT 1")
            .map_err(diesel::ConnectionError::CouldntSetupConfiguration)
    }

    fn has_broken(&self, conn: &mut PoolConn) -> bool {
        conn.broken
            || std::thread::panicking()
            || <DbConn as Connection>::TransactionManager::is_broken_transaction_manager(conn)
    }
}

/// Builds the pool without waiting for the database: a pool that starts while the database is
/// down serves 503s and recovers by itself once it returns.
pub fn build_pool(config: &Config, telemetry: Arc<Telemetry>) -> DbPool {
    r2d2::Pool::builder()
        .max_size(config.pool_size.max(1))
        .min_idle(Some(1))
        .connection_timeout(config.pool_timeout)
        .test_on_check_out(false)
        .event_handler(Box::new(PoolEvents(telemetry)))
        .build_unchecked(ConnectionManager::new(config))
}

/// Feeds the pool's checkout waits and time-outs into the metrics.
#[derive(Debug)]
struct PoolEvents(Arc<Telemetry>);

impl r2d2::HandleEvent for PoolEvents {
    fn handle_checkout(&self, event: r2d2::event::CheckoutEvent) {
        self.0.pool_wait.record(event.duration());
    }

    fn handle_timeout(&self, _event: r2d2::event::TimeoutEvent) {
        self.0
            .pool_timeouts
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    }
}

/// Applies the embedded migrations of the connection's backend.
///
/// Several medbook processes may start at once against one PostgreSQL database: a session
/// advisory lock lets one migrate while the others wait, then find nothing left to do.
/// (SQLite's write lock serializes the migration transactions by itself.)
pub fn run_migrations(conn: &mut DbConn) -> Result<(), String> {
    const MIGRATION_LOCK: i64 = 0x006d_6564_626f_6f6b; // "medbook" in ASCII
    let migrations = match conn {
        DbConn::Pg(_) => PG_MIGRATIONS,
        DbConn::Sqlite(_) => SQLITE_MIGRATIONS,
    };
    let is_pg = matches!(conn, DbConn::Pg(_));
    if is_pg {
        conn.batch_execute(&format!("SELECT pg_advisory_lock({MIGRATION_LOCK})"))
            .map_err(|e| format!("migration lock: {e}"))?;
    }
    let result = conn
        .run_pending_migrations(migrations)
        .map(|applied| {
            for version in applied {
                log::info!("applied migration {version}");
            }
        })
        .map_err(|e| format!("migrations failed: {e}"));
    if is_pg {
        conn.batch_execute(&format!("SELECT pg_advisory_unlock({MIGRATION_LOCK})"))
            .map_err(|e| format!("migration unlock: {e}"))?;
    }
    result
}

/// Runs blocking database work on actix's blocking thread pool.
///
/// The pooled connection is taken inside the closure, so waiting for the pool blocks a
/// blocking thread and never an async worker; a pool time-out becomes 503 `UNAVAILABLE`.
pub async fn run_blocking<T, F>(pool: &DbPool, f: F) -> Result<T, AppError>
where
    F: FnOnce(&mut DbConn) -> Result<T, AppError> + Send + 'static,
    T: Send + 'static,
{
    let pool = pool.clone();
    actix_web::web::block(move || {
        let mut conn = pool.get().map_err(AppError::pool)?;
        let result = f(&mut conn);
        if let Err(err) = &result {
            if err.db_class() == Some(DbErrorClass::Unavailable) {
                // Do not hand this connection out again; the pool opens a fresh one.
                conn.broken = true;
            }
        }
        result
    })
    .await
    .map_err(|e| AppError::internal(format!("blocking task failed: {e}")))?
}

#[cfg(test)]
mod tests {
    use super::*;
    use libsqlite3_sys as ffi;
    use r2d2::ManageConnection;

    /// Whether a raw connection to `path` has the query planner stability guarantee on.
    fn qpsg_of_new_connection(path: &std::path::Path) -> i32 {
        let path = std::ffi::CString::new(path.to_str().unwrap()).unwrap();
        let mut db = std::ptr::null_mut();
        let mut enabled = -1;
        // SAFETY: plain SQLite C API use on a connection opened and closed here.
        unsafe {
            assert_eq!(ffi::sqlite3_open(path.as_ptr(), &mut db), ffi::SQLITE_OK);
            let rc = ffi::sqlite3_db_config(
                db,
                ffi::SQLITE_DBCONFIG_ENABLE_QPSG,
                -1,
                &mut enabled as *mut i32,
            );
            ffi::sqlite3_close(db);
            assert_eq!(rc, ffi::SQLITE_OK);
        }
        enabled
    }

    #[test]
    fn sqlite_connections_keep_their_query_plans() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("plans.db");
        let manager = ConnectionManager::new(&Config::for_database(path.to_str().unwrap()));
        let mut conn = manager.connect().unwrap();
        conn.batch_execute("SELECT 1").unwrap();
        // Opening a pooled connection installs the setting for every connection from then on,
        // so that SQLite never recompiles a cached statement because a bind changed.
        assert_eq!(qpsg_of_new_connection(&path), 1);
    }
}
