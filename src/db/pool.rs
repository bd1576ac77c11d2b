//! The r2d2 pool, per-connection settings, embedded migrations and the `run_blocking` bridge
//! from async handlers to blocking diesel code, on threads of its own.

use diesel::connection::{SimpleConnection, TransactionManager};
use diesel::prelude::*;
use diesel_migrations::{embed_migrations, EmbeddedMigrations, MigrationHarness};

use std::ops::Deref;
use std::sync::atomic::{AtomicU64, AtomicU8, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::group_commit::Writer;
use super::threads::{DbThreads, ThreadCounts};
use super::{DbConn, DbErrorClass};
use crate::config::{Backend, Config};
use crate::error::AppError;
use crate::telemetry::Telemetry;

const PG_MIGRATIONS: EmbeddedMigrations = embed_migrations!("migrations/postgres");
const SQLITE_MIGRATIONS: EmbeddedMigrations = embed_migrations!("migrations/sqlite");

/// The shared pool of [`DbConn`]s, and the threads that use them: at most one per connection,
/// shared by all HTTP workers (see [`run_blocking`]). Derefs to the r2d2 pool.
#[derive(Clone, Debug)]
pub struct DbPool {
    connections: r2d2::Pool<ConnectionManager>,
    /// SQLite: the connection manager's writer (r2d2 does not hand out its manager).
    sqlite_writer: Option<Arc<Writer>>,
    threads: Arc<DbThreads>,
    telemetry: Arc<Telemetry>,
    /// Until when (milliseconds after `epoch`; 0: not at all) checked-out connections are
    /// tested first (see [`DbPool::checkout`]).
    suspect_until_ms: Arc<AtomicU64>,
    /// What `suspect_until_ms` counts from: the pool's creation.
    epoch: Instant,
}

/// How long after a connection turned out dead the pool tests each connection it hands out.
const SUSPECT_FOR: Duration = Duration::from_secs(10);

impl Deref for DbPool {
    type Target = r2d2::Pool<ConnectionManager>;

    fn deref(&self) -> &Self::Target {
        &self.connections
    }
}

impl DbPool {
    /// Runs `f` on the connection this pool's SQLite write batches run on (see
    /// `group_commit`), opened first if it is not open: for instrumentation. `None` on
    /// PostgreSQL, or if that connection cannot be opened.
    pub fn with_sqlite_writer<R>(&self, f: impl FnOnce(&mut DbConn) -> R) -> Option<R> {
        let writer = self.sqlite_writer.as_ref()?;
        let mut conn = writer.connection()?;
        conn.as_mut().map(f)
    }

    /// Marks the pool's connections suspect for [`SUSPECT_FOR`]: called when one turned out
    /// dead (see [`DbPool::checkout`]).
    fn suspect_connections(&self) {
        let until = self.epoch.elapsed() + SUSPECT_FOR;
        let until = u64::try_from(until.as_millis()).unwrap_or(u64::MAX);
        self.suspect_until_ms.fetch_max(until, Ordering::Relaxed);
    }

    fn suspect(&self) -> bool {
        let now = u64::try_from(self.epoch.elapsed().as_millis()).unwrap_or(u64::MAX);
        now < self.suspect_until_ms.load(Ordering::Relaxed)
    }

    /// The database threads now: started, idle, and the work waiting for one.
    pub fn thread_counts(&self) -> ThreadCounts {
        self.threads.counts()
    }

    /// A connection for work queued at `queued`: the pool time-out covers the wait for a
    /// thread and the wait for a connection together, so a request that queued longer than
    /// that answers 503 without touching the database.
    ///
    /// Connections are not tested when handed out (a round trip per request), so a connection
    /// the server ended (a restart, an administrator's `pg_terminate_backend`) fails the first
    /// request that uses it, with a 503. Once one has ([`DbPool::suspect_connections`]),
    /// every connection the pool holds is suspect: for [`SUSPECT_FOR`] each is tested before
    /// it is handed out, and a dead one is dropped for the next (or a new one). A restart
    /// then costs a 503 only to the requests already on a dead connection, not one per
    /// pooled connection.
    fn checkout(
        &self,
        queued: Instant,
    ) -> Result<r2d2::PooledConnection<ConnectionManager>, AppError> {
        let timeout = self.connections.connection_timeout();
        let result = loop {
            let conn = match timeout.checked_sub(queued.elapsed()) {
                Some(left) if !left.is_zero() => {
                    self.connections.get_timeout(left).map_err(AppError::pool)
                }
                _ => Err(AppError::Unavailable(format!(
                    "connection pool: no connection within {timeout:?}"
                ))),
            };
            match conn {
                Ok(mut conn) if self.suspect() => {
                    if conn.batch_execute("SELECT 1").is_ok() {
                        break Ok(conn);
                    }
                    // Dropped, not returned: the next turn takes another or opens one.
                    conn.broken = true;
                }
                other => break other,
            }
        };
        match &result {
            Ok(_) => self.telemetry.pool_wait.record(queued.elapsed()),
            Err(_) => {
                self.telemetry.pool_timeouts.fetch_add(1, Ordering::Relaxed);
            }
        }
        result
    }
}

/// Opens connections of the backend the URL names, with medbook's session settings.
///
/// diesel's derived `MultiConnection::establish` tries every backend and discards their errors;
/// choosing by scheme keeps the real one ("password authentication failed", …) for the logs.
#[derive(Clone, Debug)]
pub struct ConnectionManager {
    url: String,
    backend: Backend,
    session_sql: String,
    /// How long a new SQLite connection keeps trying to apply its settings (`busy_timeout`).
    busy_timeout: Duration,
    /// SQLite's soft heap limit for the process, in bytes (0: none).
    sqlite_memory: i64,
    /// SQLite: the connection this pool's database runs its write batches on (one more than
    /// the pool's; see `group_commit`), offered by each connection the pool opens.
    writer: Option<Arc<Writer>>,
}

impl ConnectionManager {
    /// A manager for `config.database_url` with the configured timeouts.
    pub fn new(config: &Config) -> Self {
        let backend = config.backend();
        let session_sql = match backend {
            // The transactions are written for READ COMMITTED (each statement sees what
            // committed before it; the booking's row locks, the constraints and the version
            // predicates do the rest). A stricter default set for the server, the database or
            // the role would turn a lost optimistic race into a serialization failure: 409
            // `DEADLOCK_DETECTED` once the retries ran out, instead of `VERSION_CONFLICT` with
            // `current`.
            //
            // The pool keeps connections idle by design and closes them itself (r2d2's idle
            // time-out): a server `idle_session_timeout` (PostgreSQL 14) would end them under
            // it, and the next request on such a connection was a 503. `set_config` runs only
            // where the setting exists.
            Backend::Postgres => format!(
                "SET lock_timeout = {}; SET statement_timeout = {}; SET TIME ZONE 'UTC'; \
                 SET default_transaction_isolation = 'read committed'; \
                 SELECT set_config('idle_session_timeout', '0', false) \
                 WHERE current_setting('idle_session_timeout', true) IS NOT NULL;",
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
        let mut manager = ConnectionManager {
            url,
            backend,
            session_sql,
            busy_timeout: config.sqlite_busy_timeout,
            sqlite_memory: i64::try_from(config.sqlite_memory_mib.saturating_mul(1 << 20))
                .unwrap_or(i64::MAX),
            writer: None,
        };
        if backend == Backend::Sqlite {
            // The writer opens its connection as the pool does, without a writer of its own.
            let opener = manager.clone();
            manager.writer = Some(Arc::new(Writer::new(move || opener.open())));
        }
        manager
    }

    /// Opens a connection of the URL's backend and applies the session settings.
    fn open(&self) -> Result<DbConn, diesel::ConnectionError> {
        let mut conn = match self.backend {
            Backend::Postgres => {
                let mut conn = diesel::PgConnection::establish(&self.url)?;
                super::errors::english_messages(&mut conn)
                    .map_err(diesel::ConnectionError::BadConnection)?;
                DbConn::Pg(conn)
            }
            Backend::Sqlite => {
                keep_sqlite_plans();
                limit_sqlite_memory(self.sqlite_memory);
                let conn = diesel::SqliteConnection::establish(&self.url)?;
                super::group_commit::register(&conn, &self.url, self.writer.as_ref())
                    .map_err(diesel::ConnectionError::CouldntSetupConfiguration)?;
                DbConn::Sqlite(conn)
            }
        };
        self.apply_session(&mut conn)
            .map_err(diesel::ConnectionError::CouldntSetupConfiguration)?;
        Ok(conn)
    }

    /// Applies the session settings (all of them can be applied again).
    ///
    /// A new SQLite file is switched to WAL by the first connections that open it, and the
    /// switch needs the file to itself: SQLite answers a connection that meets another one
    /// doing it BUSY at once, without waiting out `busy_timeout` (waiting could deadlock). At
    /// start-up the migrations' connection and the pool's first idle one meet there (one
    /// fresh start in four logged "database is locked"), so BUSY is retried here, for as long
    /// as `busy_timeout` would have waited.
    fn apply_session(&self, conn: &mut DbConn) -> QueryResult<()> {
        let deadline = Instant::now() + self.busy_timeout;
        loop {
            match conn.batch_execute(&self.session_sql) {
                Err(e)
                    if super::classify(&e) == DbErrorClass::Busy && Instant::now() < deadline =>
                {
                    std::thread::sleep(Duration::from_millis(2));
                }
                applied => return applied,
            }
        }
    }
}

/// Sets SQLite's soft heap limit (`config::default_sqlite_memory_mib` says why). It is one
/// setting for the process, not per connection or per database: every pool in the process
/// sets the same configured value.
fn limit_sqlite_memory(bytes: i64) {
    // SAFETY: a plain setter, safe to call from any thread at any time.
    unsafe { libsqlite3_sys::sqlite3_soft_heap_limit64(bytes) };
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
    let size = config.pool_size.max(1);
    let manager = ConnectionManager::new(config);
    DbPool {
        sqlite_writer: manager.writer.clone(),
        connections: r2d2::Pool::builder()
            .max_size(size)
            .min_idle(Some(1))
            .connection_timeout(config.pool_timeout)
            .test_on_check_out(false)
            .build_unchecked(manager),
        threads: Arc::new(DbThreads::new(
            size as usize,
            "medbook-db",
            Duration::from_secs(60),
        )),
        telemetry,
        suspect_until_ms: Arc::new(AtomicU64::new(0)),
        epoch: Instant::now(),
    }
}

/// Refuses a database that cannot keep what medbook is sent.
///
/// PostgreSQL converts text into the database's encoding, and one that is not UTF-8 has no
/// room for most of the world's scripts: on a `LATIN1` database a registration, or a login,
/// with a Chinese name or email was a `500` ("has no equivalent in encoding"). (SQLite stores
/// text as UTF-8 or UTF-16, either of which holds every character.)
///
/// A SQLite database without a file (in memory: `:memory:`, `file::memory:?cache=shared`,
/// `…?mode=memory`; or temporary: `sqlite://` names none) belongs to the connection that
/// opened it, or at most to this process: with `:memory:` the migrations ran on one
/// connection of the pool and every request on another met "no such table" (a `500`, while
/// `/readyz` said ready), and whatever it held would be gone at exit. SQLite itself says
/// whether the main database has a file (`pragma_database_list` gives an empty name for one
/// in memory or a temporary one), however the URL spelled it.
///
/// A new SQLite file is made readable by its owner only (`keep_to_owner`).
///
/// Checked once at start-up, before the migrations.
pub fn check_database(conn: &mut DbConn) -> Result<(), String> {
    #[derive(QueryableByName)]
    struct Count {
        #[diesel(sql_type = diesel::sql_types::BigInt)]
        count: i64,
    }
    let pg = match conn {
        DbConn::Pg(pg) => pg,
        DbConn::Sqlite(sqlite) => {
            let Name { name: file } = diesel::sql_query(
                "SELECT file AS name FROM pragma_database_list WHERE name = 'main'",
            )
            .get_result(sqlite)
            .map_err(|e| format!("reading the database's file name: {e}"))?;
            if file.is_empty() {
                return Err(
                    "DATABASE_URL names a SQLite database without a file (in memory, or \
                     temporary): each of the pool's connections would see a database of its own, \
                     and nothing would be kept at exit; give a file path (a file on a tmpfs such \
                     as /dev/shm is kept in memory too)"
                        .to_owned(),
                );
            }
            let Count { count } = diesel::sql_query("SELECT COUNT(*) AS count FROM sqlite_schema")
                .get_result(sqlite)
                .map_err(|e| format!("reading the database's schema: {e}"))?;
            if count == 0 {
                keep_to_owner(&file);
            }
            return Ok(());
        }
    };
    let Name { name: encoding } =
        diesel::sql_query("SELECT current_setting('server_encoding') AS name")
            .get_result(pg)
            .map_err(|e| format!("reading the database's encoding: {e}"))?;
    if encoding == "UTF8" {
        return Ok(());
    }
    Err(format!(
        "the database's encoding is {encoding}, which cannot hold every name, email or reason \
         medbook is sent; create it with ENCODING 'UTF8' (CREATE DATABASE … ENCODING 'UTF8' \
         TEMPLATE template0)"
    ))
}

/// Refuses a SQLite file that is not medbook's, before anything changes it.
///
/// A PostgreSQL database may be shared with other applications (README: a schema of
/// medbook's own), but a SQLite file is one application's database. Pointed at another
/// application's file (a `DATABASE_URL` meant for something else, a `.env` found in a parent
/// directory), medbook used to switch it to WAL mode and add its tables beside the other
/// application's, or stop half-way when a name was taken ("table users already exists"),
/// having switched it all the same. A file that holds tables (or views) but records none of
/// medbook's migrations is refused here, on a connection that sets nothing and writes
/// nothing: a new file (no tables) or one medbook migrated (also with the diesel CLI) passes.
/// A file that is not a SQLite database is named as such at once (the pool only timed out on
/// it).
///
/// Checked once at start-up, before the pool opens its first connection, on a plain
/// connection to `path` (`sqlite_path` of the URL).
pub fn check_sqlite_file(
    conn: &mut diesel::SqliteConnection,
    path: &str,
    busy_timeout: Duration,
) -> Result<(), String> {
    let unreadable = |e: diesel::result::Error| match e {
        diesel::result::Error::DatabaseError(_, ref info)
            if info.message() == "file is not a database" =>
        {
            format!("{path:?} is not a SQLite database ({e}); give medbook a file of its own")
        }
        e => format!("reading the schema of the SQLite database {path:?}: {e}"),
    };
    // A process migrating this file at the same moment holds its write lock; reading waits.
    conn.batch_execute(&format!(
        "PRAGMA busy_timeout = {}",
        busy_timeout.as_millis()
    ))
    .map_err(unreadable)?;
    let tables: Vec<String> = diesel::sql_query(
        "SELECT name FROM sqlite_schema WHERE type IN ('table', 'view') \
         AND name NOT LIKE 'sqlite\\_%' ESCAPE '\\' AND name <> '__diesel_schema_migrations' \
         ORDER BY name",
    )
    .load::<Name>(conn)
    .map_err(unreadable)?
    .into_iter()
    .map(|t| t.name)
    .collect();
    if tables.is_empty() {
        return Ok(());
    }
    let ours = versions::<diesel::sqlite::Sqlite>(&SQLITE_MIGRATIONS)?;
    if recorded_versions(conn)
        .iter()
        .any(|version| ours.contains(version))
    {
        return Ok(());
    }
    Err(format!(
        "the SQLite database {path:?} holds tables ({}) but no record of medbook's \
         migrations: it looks like another application's, and it was left as it is; give \
         medbook a file of its own (a new path is created)",
        first_five(&tables)
    ))
}

/// The first five of `names`, and "…" if there are more.
fn first_five(names: &[String]) -> String {
    let mut shown = names[..names.len().min(5)].join(", ");
    if names.len() > 5 {
        shown.push_str(", …");
    }
    shown
}

/// A name, or a version, read by `sql_query`.
#[derive(QueryableByName)]
struct Name {
    #[diesel(sql_type = diesel::sql_types::Text)]
    name: String,
}

/// The versions of a set of embedded migrations, as `__diesel_schema_migrations` records them.
fn versions<DB: diesel::backend::Backend>(
    source: &EmbeddedMigrations,
) -> Result<Vec<String>, String>
where
    EmbeddedMigrations: diesel::migration::MigrationSource<DB>,
{
    let migrations = diesel::migration::MigrationSource::<DB>::migrations(source)
        .map_err(|e| format!("reading medbook's migrations: {e}"))?;
    Ok(migrations
        .iter()
        .map(|m| m.name().version().to_string())
        .collect())
}

/// The versions the database records as applied, read without writing (diesel's own reading
/// first creates its table); none if it has no record.
fn recorded_versions<C>(conn: &mut C) -> Vec<String>
where
    C: diesel::connection::LoadConnection,
    for<'a> diesel::query_builder::SqlQuery: diesel::query_dsl::LoadQuery<'a, C, Name>,
{
    diesel::sql_query("SELECT version AS name FROM __diesel_schema_migrations")
        .load::<Name>(conn)
        .map(|rows| rows.into_iter().map(|r| r.name).collect())
        // No such table: nothing was recorded.
        .unwrap_or_default()
}

/// Makes a new SQLite database file, and its `-wal` and `-shm` files, readable and writable by
/// their owner only. SQLite creates them as the umask allows (`0644` as a rule: readable by
/// every local user), and this file holds prescriptions and password hashes; PostgreSQL keeps
/// its data directory `0700`. SQLite gives a `-wal` or `-shm` file it creates later the
/// database file's mode. Only a database with nothing in it yet is changed: an operator's
/// `chmod` of an existing one stays. A file whose mode cannot be changed is logged, not fatal.
fn keep_to_owner(file: &str) {
    #[cfg(unix)]
    for path in [
        file.to_owned(),
        format!("{file}-wal"),
        format!("{file}-shm"),
    ] {
        use std::os::unix::fs::PermissionsExt;
        let set = std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600));
        match set {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                log::warn!("could not make {path} readable by its owner only: {e}");
            }
            _ => {}
        }
    }
}

/// Applies the embedded migrations of the connection's backend.
///
/// Several medbook processes may start at once against one database, and diesel reads which
/// migrations are applied before it runs each pending one in a transaction of its own: two
/// processes read the same list and both ran the same migration, and the second one's start
/// failed ("table users already exists", seen with three processes on a new SQLite file in
/// most tries). So one process migrates while the others wait, then find nothing left to do.
/// The whole run is one transaction, each migration a savepoint in it: on PostgreSQL it
/// first takes a transaction-level advisory lock (released by the commit or the rollback,
/// whatever happened), on SQLite it is `BEGIN IMMEDIATE` (the file's write lock). The wait is
/// bounded by `MEDBOOK_LOCK_TIMEOUT_MS` and `MEDBOOK_SQLITE_BUSY_TIMEOUT_MS`.
///
/// A run that fails leaves the database as it was, on both backends (their DDL is
/// transactional): the version before can go on serving it, and a database that was never
/// medbook's keeps no trace of it (on PostgreSQL, a failed first migration left an empty
/// `__diesel_schema_migrations` behind). A future migration that cannot run in a transaction
/// (`CREATE INDEX CONCURRENTLY`) is to be applied with the diesel CLI before the version that
/// brings it starts. A PostgreSQL that takes no writes is only read (`up_to_date_read_only`).
pub fn run_migrations(conn: &mut DbConn) -> Result<(), String> {
    // "medbook" in ASCII.
    const MIGRATION_LOCK: i64 = 0x006d_6564_626f_6f6b;
    // The versions applied, as text: diesel's own borrow the connection.
    let names = |versions: Vec<diesel::migration::MigrationVersion>| {
        versions.iter().map(ToString::to_string).collect::<Vec<_>>()
    };
    let applied = match conn {
        DbConn::Pg(pg) => {
            if takes_no_writes(pg)? {
                return up_to_date_read_only(pg);
            }
            pg.transaction(|pg| {
                pg.batch_execute(&format!("SELECT pg_advisory_xact_lock({MIGRATION_LOCK})"))
                    .map_err(|e| format!("migration lock: {e}"))?;
                pg.run_pending_migrations(PG_MIGRATIONS).map(names)
            })
        }
        DbConn::Sqlite(sqlite) => sqlite.immediate_transaction(|sqlite| {
            sqlite.run_pending_migrations(SQLITE_MIGRATIONS).map(names)
        }),
    };
    let applied = applied.map_err(|e| {
        let hint = match conn {
            DbConn::Pg(pg) => shared_database_hint(pg),
            DbConn::Sqlite(_) => None,
        };
        format!(
            "migrations failed, none was applied: {e}{}",
            hint.unwrap_or_default()
        )
    })?;
    for version in applied {
        log::info!("applied migration {version}");
    }
    Ok(())
}

/// After a failed run on a PostgreSQL database new to medbook (none of its migrations
/// recorded), what PostgreSQL's message leaves out, read from the catalog (not from the
/// message): a schema that already holds tables wants a schema of medbook's own, in a
/// database shared with other applications (a name medbook needs, `users` say, was taken);
/// a `search_path` none of whose schemas exists ("no schema has been selected to create in")
/// wants the schema created.
fn shared_database_hint(pg: &mut diesel::PgConnection) -> Option<String> {
    let ours = versions::<diesel::pg::Pg>(&PG_MIGRATIONS).ok()?;
    if recorded_versions(pg).iter().any(|v| ours.contains(v)) {
        return None;
    }
    let Name { name: search_path } = diesel::sql_query(
        "SELECT CASE WHEN current_schema() IS NULL THEN current_setting('search_path') \
         ELSE '' END AS name",
    )
    .get_result(pg)
    .ok()?;
    if !search_path.is_empty() {
        return Some(format!(
            " (no schema on the search_path exists: {search_path}; create medbook's schema \
             first, CREATE SCHEMA …)"
        ));
    }
    let tables: Vec<String> = diesel::sql_query(
        "SELECT table_schema || '.' || table_name AS name FROM information_schema.tables \
         WHERE table_schema = current_schema() AND table_type = 'BASE TABLE' \
         AND table_name <> '__diesel_schema_migrations' ORDER BY table_name LIMIT 6",
    )
    .load::<Name>(pg)
    .ok()?
    .into_iter()
    .map(|t| t.name)
    .collect();
    if tables.is_empty() {
        return None;
    }
    Some(format!(
        " (the schema already holds tables medbook did not make: {}; in a database \
         shared with other applications, give medbook a schema of its own, \
         ?options=-csearch_path%3Dmedbook in DATABASE_URL, see the README)",
        first_five(&tables)
    ))
}

/// Whether the PostgreSQL session takes no writes: a standby (after a fail-over, say), or a
/// database or role set `default_transaction_read_only`.
fn takes_no_writes(pg: &mut diesel::PgConnection) -> Result<bool, String> {
    #[derive(QueryableByName)]
    struct ReadOnly {
        #[diesel(sql_type = diesel::sql_types::Bool)]
        read_only: bool,
    }
    diesel::sql_query("SELECT current_setting('transaction_read_only') = 'on' AS read_only")
        .get_result::<ReadOnly>(pg)
        .map(|r| r.read_only)
        .map_err(|e| format!("reading whether the database takes writes: {e}"))
}

/// A PostgreSQL that takes no writes can be served as a running process serves it, reads
/// going on and writes answering `503` until it takes them (README, "Database outages"),
/// if it needs no migration: diesel cannot even look (it creates its table first), so the
/// record is read here. With migrations pending the start stops and says so.
fn up_to_date_read_only(pg: &mut diesel::PgConnection) -> Result<(), String> {
    let recorded = recorded_versions(pg);
    let pending: Vec<String> = versions::<diesel::pg::Pg>(&PG_MIGRATIONS)?
        .into_iter()
        .filter(|version| !recorded.contains(version))
        .collect();
    if pending.is_empty() {
        log::warn!(
            "the database takes no writes (a standby, or default_transaction_read_only): \
             nothing to migrate; reads are served, and writes answer 503 until it takes them"
        );
        return Ok(());
    }
    Err(format!(
        "the database takes no writes (a standby, or default_transaction_read_only), and it \
         lacks medbook's migrations {}: start against the primary",
        pending.join(", ")
    ))
}

/// Runs blocking database work on the pool's own threads, never on an async worker.
///
/// There are at most as many threads as connections, shared by all HTTP workers: work beyond
/// that waits in one queue, in arrival order, and a thread that finishes takes the next piece
/// without sleeping; otherwise the thread that went idle last takes it (`db::threads`). (A
/// blocking pool per HTTP worker, larger than the connection pool, parked its surplus threads
/// on the pool's lock and woke them one by one as connections came back; BENCHMARKS.md.) Work
/// that is still queued after the pool time-out is dropped unrun and answers 503
/// `UNAVAILABLE`; work that started waits for a connection only as long as is left.
pub async fn run_blocking<T, F>(pool: &DbPool, f: F) -> Result<T, AppError>
where
    F: FnOnce(&mut DbConn) -> Result<T, AppError> + Send + 'static,
    T: Send + 'static,
{
    let queued = Instant::now();
    let timeout = pool.connection_timeout();
    // Whichever side moves it from QUEUED first decides: the thread runs the work, or the
    // caller gives up on it. Work that was answered 503 can never commit afterwards.
    let state = Arc::new(AtomicU8::new(QUEUED));
    let (done, mut result) = tokio::sync::oneshot::channel();
    let job = {
        let (pool, state) = (pool.clone(), Arc::clone(&state));
        move || {
            if !claim(&state, STARTED) {
                return;
            }
            let _ = done.send(pool.checkout(queued).and_then(|mut conn| {
                let result = f(&mut conn);
                if let Err(err) = &result {
                    if err.db_class() == Some(DbErrorClass::Unavailable) {
                        // Do not hand this connection out again; the pool opens a fresh one.
                        // The others may be as dead: test them before they are handed out.
                        conn.broken = true;
                        pool.suspect_connections();
                    }
                }
                result
            }));
        }
    };
    if pool.threads.execute(Box::new(job)).is_err() {
        return Err(AppError::Unavailable(
            "the database threads are closed".into(),
        ));
    }
    let finished = match actix_web::rt::time::timeout(timeout, &mut result).await {
        Ok(finished) => finished,
        Err(_) if claim(&state, ABANDONED) => {
            pool.telemetry.pool_timeouts.fetch_add(1, Ordering::Relaxed);
            return Err(AppError::Unavailable(format!(
                "no database thread within {timeout:?}"
            )));
        }
        // It started in time: its wait for a connection is bounded by the time that was left.
        Err(_) => result.await,
    };
    // No result: the work panicked (it had started), or the pool dropped it unrun.
    finished.unwrap_or_else(|_| match state.load(Ordering::Acquire) {
        STARTED => Err(AppError::internal("database work panicked")),
        _ => Err(AppError::Unavailable(
            "the database threads dropped the work unrun".into(),
        )),
    })
}

/// States of a piece of work handed to [`run_blocking`].
const QUEUED: u8 = 0;
const STARTED: u8 = 1;
const ABANDONED: u8 = 2;

/// Moves `state` from [`QUEUED`] to `to`; false if the other side moved it first.
fn claim(state: &AtomicU8, to: u8) -> bool {
    state
        .compare_exchange(QUEUED, to, Ordering::AcqRel, Ordering::Acquire)
        .is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use libsqlite3_sys as ffi;
    use r2d2::ManageConnection;
    use std::collections::HashSet;
    use std::sync::atomic::AtomicBool;
    use std::sync::Mutex;

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
    fn a_list_of_names_shows_five_and_says_there_are_more() {
        let names = |n: usize| (1..=n).map(|i| format!("t{i}")).collect::<Vec<_>>();
        assert_eq!(first_five(&names(1)), "t1");
        assert_eq!(first_five(&names(5)), "t1, t2, t3, t4, t5");
        assert_eq!(first_five(&names(6)), "t1, t2, t3, t4, t5, …");
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

    fn pool(dir: &tempfile::TempDir, size: u32, timeout: Duration) -> (DbPool, Arc<Telemetry>) {
        let mut config = Config::for_database(dir.path().join("threads.db").to_str().unwrap());
        config.pool_size = size;
        config.pool_timeout = timeout;
        let telemetry = Arc::new(Telemetry::default());
        (build_pool(&config, Arc::clone(&telemetry)), telemetry)
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn database_work_runs_on_one_thread_per_connection() {
        let dir = tempfile::tempdir().unwrap();
        let (pool, _) = pool(&dir, 2, Duration::from_secs(10));
        let seen = Arc::new(Mutex::new(HashSet::new()));
        let tasks: Vec<_> = (0..8)
            .map(|_| {
                let (pool, seen) = (pool.clone(), Arc::clone(&seen));
                tokio::spawn(async move {
                    run_blocking(&pool, move |conn| {
                        let me = std::thread::current();
                        assert_eq!(me.name(), Some("medbook-db"));
                        seen.lock().unwrap().insert(me.id());
                        conn.batch_execute("SELECT 1")?;
                        std::thread::sleep(Duration::from_millis(30));
                        Ok(())
                    })
                    .await
                })
            })
            .collect();
        for task in tasks {
            task.await
                .unwrap()
                .expect("queued work waits for a thread, then runs");
        }
        // Eight pieces of work at once, two connections: two threads did all of it.
        assert_eq!(seen.lock().unwrap().len(), 2);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn work_that_panics_answers_500_and_its_connection_is_not_reused() {
        let dir = tempfile::tempdir().unwrap();
        let (pool, _) = pool(&dir, 1, Duration::from_secs(10));
        let first = run_blocking(&pool, |conn| {
            conn.batch_execute("CREATE TEMP TABLE marker (x INTEGER)")?;
            Ok(std::thread::current().id())
        })
        .await
        .unwrap();
        let panicked = run_blocking(&pool, |conn| -> Result<(), AppError> {
            conn.batch_execute("SELECT 1")?;
            panic!("a bug in a service");
        })
        .await;
        assert!(
            matches!(panicked, Err(AppError::Internal(_))),
            "{panicked:?}"
        );
        // The one thread lives on, on a new connection (the temporary table went with the old).
        let (thread, marker) = run_blocking(&pool, |conn| {
            let marker = conn.batch_execute("SELECT x FROM marker").is_ok();
            Ok((std::thread::current().id(), marker))
        })
        .await
        .unwrap();
        assert_eq!(thread, first);
        assert!(!marker, "the connection a panic left is dropped");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn work_queued_longer_than_the_pool_timeout_answers_503_and_never_runs() {
        let dir = tempfile::tempdir().unwrap();
        let (pool, telemetry) = pool(&dir, 1, Duration::from_millis(200));
        let busy = tokio::spawn({
            let pool = pool.clone();
            async move {
                run_blocking(&pool, |_| {
                    std::thread::sleep(Duration::from_millis(1500));
                    Ok(())
                })
                .await
            }
        });
        tokio::time::sleep(Duration::from_millis(50)).await;
        let ran = Arc::new(AtomicBool::new(false));
        let queued = run_blocking(&pool, {
            let ran = Arc::clone(&ran);
            move |_| {
                ran.store(true, Ordering::SeqCst);
                Ok(())
            }
        })
        .await;
        assert!(
            matches!(queued, Err(AppError::Unavailable(_))),
            "{queued:?}"
        );
        // Answered at the time-out, while the only thread was still busy.
        assert!(!busy.is_finished());
        assert_eq!(telemetry.pool_timeouts.load(Ordering::Relaxed), 1);
        busy.await
            .unwrap()
            .expect("the work that held the thread finishes");
        // The abandoned work was dropped when the thread came to it, never run, and nothing is
        // stuck: the next piece of work runs.
        run_blocking(&pool, |conn| Ok(conn.batch_execute("SELECT 1")?))
            .await
            .unwrap();
        assert!(!ran.load(Ordering::SeqCst), "abandoned work never runs");
        assert_eq!(telemetry.pool_wait.snapshot().count, 2);
        assert_eq!(telemetry.pool_timeouts.load(Ordering::Relaxed), 1);
    }
}
