//! Test harness: the real app on a real, fresh database per test, over real HTTP.
//!
//! SQLite: a temp file. PostgreSQL: a new database per test on the server named by
//! `MEDBOOK_TEST_PG_URL` (default `postgres://postgres@127.0.0.1:5432/postgres`), dropped
//! afterwards. Without a reachable PostgreSQL the PostgreSQL variants are skipped with a
//! message — unless `CI=true`, where they fail.
#![allow(dead_code)]

use std::marker::PhantomData;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use chrono::{Duration as ChronoDuration, Utc};
use diesel::connection::SimpleConnection;
use diesel::prelude::*;
use diesel::query_builder::{AstPass, Query, QueryFragment, QueryId};
use medbook::config::Config;
use medbook::db::{DbBackend, DbConn};
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

pub const ADMIN_EMAIL: &str = "admin@medbook.test";
pub const ADMIN_PASSWORD: &str = "admin-password";
pub const PASSWORD: &str = "patient-password";

/// Defines `NAME::sqlite` and `NAME::postgres` tests that run `async fn NAME(TestApp)`.
#[macro_export]
macro_rules! both_backends {
    ($($name:ident),+ $(,)?) => {$(
        mod $name {
            #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
            async fn sqlite() {
                let app = $crate::common::TestApp::start($crate::common::Backend::Sqlite).await.unwrap();
                super::$name(app).await;
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
            async fn postgres() {
                if let Some(app) = $crate::common::TestApp::start($crate::common::Backend::Postgres).await {
                    super::$name(app).await;
                }
            }
        }
    )+};
}

/// Defines `NAME::sqlite` and `NAME::postgres` tests that run `async fn NAME(Backend)`: for
/// tests that start apps of their own configuration (`TestApp::start_with`).
#[macro_export]
macro_rules! both_backends_configured {
    ($($name:ident),+ $(,)?) => {$(
        mod $name {
            #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
            async fn sqlite() {
                super::$name($crate::common::Backend::Sqlite).await;
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
            async fn postgres() {
                super::$name($crate::common::Backend::Postgres).await;
            }
        }
    )+};
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

/// A user the tests act as.
#[derive(Debug, Clone)]
pub struct Actor {
    pub id: i64,
    pub token: String,
}

/// An HTTP answer.
#[derive(Debug)]
pub struct Answer {
    pub status: StatusCode,
    pub headers: reqwest::header::HeaderMap,
    pub body: Value,
}

impl Answer {
    pub fn code(&self) -> &str {
        self.body["code"].as_str().unwrap_or("")
    }
    /// The message of a 422's `details` for `field` ("" if there is none).
    pub fn detail(&self, field: &str) -> &str {
        self.body["details"][field].as_str().unwrap_or("")
    }
    pub fn id(&self) -> i64 {
        self.body["id"].as_i64().expect("body has an id")
    }
    pub fn header(&self, name: &str) -> &str {
        self.headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
    }
}

/// The running app and its database.
pub struct TestApp {
    pub base: String,
    pub client: reqwest::Client,
    pub backend: Backend,
    pub db_url: String,
    pub admin: Actor,
    handle: actix_web::dev::ServerHandle,
    thread: Option<JoinHandle<()>>,
    pg_drop: Option<(String, String)>,
    _dir: Option<tempfile::TempDir>,
}

static COUNTER: AtomicUsize = AtomicUsize::new(0);

/// Whether PostgreSQL tests must run (CI) rather than be skipped when it is unreachable.
pub fn postgres_required() -> bool {
    std::env::var("CI").is_ok_and(|v| v == "true" || v == "1")
}

/// Sets a default for every new session of the PostgreSQL database at `url` (as a DBA might
/// with `ALTER DATABASE … SET`); `value` is SQL.
pub fn set_database_default(url: &str, parameter: &str, value: &str) {
    let (_, name) = url.rsplit_once('/').expect("URL has a database");
    PgConnection::establish(&pg_admin_url())
        .unwrap()
        .batch_execute(&format!("ALTER DATABASE {name} SET {parameter} = {value}"))
        .unwrap();
}

pub fn pg_admin_url() -> String {
    std::env::var("MEDBOOK_TEST_PG_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".to_owned())
}

/// Creates a fresh PostgreSQL database; `None` (skip) if the server is unreachable outside CI.
fn create_pg_database() -> Option<(String, String, String)> {
    let admin_url = pg_admin_url();
    let mut admin = match PgConnection::establish(&admin_url) {
        Ok(conn) => conn,
        Err(e) if !postgres_required() => {
            eprintln!("SKIPPED PostgreSQL test: cannot connect to {admin_url}: {e} (set CI=true to require it)");
            return None;
        }
        Err(e) => panic!("CI=true but PostgreSQL at {admin_url} is unreachable: {e}"),
    };
    let name = format!(
        "medbook_test_{}_{}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::SeqCst)
    );
    for statement in [
        format!("DROP DATABASE IF EXISTS {name}"),
        format!("CREATE DATABASE {name}"),
    ] {
        admin
            .batch_execute(&statement)
            .expect("create test database");
    }
    let (base, _) = admin_url.rsplit_once('/').expect("URL has a database");
    Some((format!("{base}/{name}"), admin_url, name))
}

impl TestApp {
    pub async fn start(backend: Backend) -> Option<TestApp> {
        Self::start_with(backend, |_| {}).await
    }

    /// Starts the app with a tweaked configuration.
    pub async fn start_with(backend: Backend, tweak: impl FnOnce(&mut Config)) -> Option<TestApp> {
        let (db_url, pg_drop, dir) = match backend {
            Backend::Sqlite => {
                let dir = tempfile::tempdir().expect("temp dir");
                let path = dir.path().join("medbook.db");
                (path.to_string_lossy().into_owned(), None, Some(dir))
            }
            Backend::Postgres => {
                let (url, admin_url, name) = tokio::task::spawn_blocking(create_pg_database)
                    .await
                    .unwrap()?;
                (url, Some((admin_url, name)), None)
            }
        };
        let mut config = Config::for_database(&db_url);
        config.admin_email = Some(ADMIN_EMAIL.to_owned());
        config.admin_password = Some(ADMIN_PASSWORD.to_owned());
        // Generous: the machine is shared and the tests run in parallel.
        config.pool_timeout = Duration::from_secs(15);
        config.sqlite_busy_timeout = Duration::from_secs(15);
        tweak(&mut config);
        // The tweak may put the SQLite file elsewhere (tests/db_errors.rs: on a small disk).
        let db_url = config.database_url.clone();
        let (tx, rx) = std::sync::mpsc::channel();
        let thread = std::thread::spawn(move || {
            actix_web::rt::System::new().block_on(async move {
                let state = medbook::server::prepare(&config).expect("app prepares");
                let (server, addrs) = medbook::server::bind(state, &config).expect("app binds");
                tx.send((server.handle(), addrs[0])).unwrap();
                let _ = server.await;
            })
        });
        let (handle, addr) =
            tokio::task::spawn_blocking(move || rx.recv().expect("server started"))
                .await
                .unwrap();
        let client = reqwest::Client::builder()
            .timeout(Duration::from_secs(60))
            .build()
            .unwrap();
        let mut app = TestApp {
            base: format!("http://{addr}"),
            client,
            backend,
            db_url,
            admin: Actor {
                id: 0,
                token: String::new(),
            },
            handle,
            thread: Some(thread),
            pg_drop,
            _dir: dir,
        };
        app.admin = app.login(ADMIN_EMAIL, ADMIN_PASSWORD).await;
        Some(app)
    }

    /// Sends a request; `path` is relative to the server root.
    pub async fn call(
        &self,
        method: Method,
        path: &str,
        token: Option<&str>,
        body: Option<Value>,
    ) -> Answer {
        let mut req = self.client.request(method, format!("{}{path}", self.base));
        if let Some(token) = token {
            req = req.bearer_auth(token);
        }
        if let Some(body) = body {
            req = req.json(&body);
        }
        self.send(req).await
    }

    /// Sends a prepared request and reads the JSON answer (Null for an empty body).
    pub async fn send(&self, req: reqwest::RequestBuilder) -> Answer {
        let response = req.send().await.expect("request sent");
        let status = response.status();
        let headers = response.headers().clone();
        let bytes = response.bytes().await.expect("body read");
        let body = if bytes.is_empty() {
            Value::Null
        } else {
            serde_json::from_slice(&bytes).unwrap_or_else(|_| {
                panic!(
                    "non-JSON body for {status}: {}",
                    String::from_utf8_lossy(&bytes)
                )
            })
        };
        Answer {
            status,
            headers,
            body,
        }
    }

    pub async fn get(&self, path: &str, actor: &Actor) -> Answer {
        self.call(Method::GET, path, Some(&actor.token), None).await
    }

    /// `GET /doctors/{id}/busy?from=&to=` as `actor`.
    pub async fn busy(&self, doctor: &Actor, from: &str, to: &str, actor: &Actor) -> Answer {
        let path = format!("/api/v1/doctors/{}/busy?from={from}&to={to}", doctor.id);
        self.get(&path, actor).await
    }

    pub async fn post(&self, path: &str, actor: &Actor, body: Value) -> Answer {
        self.call(Method::POST, path, Some(&actor.token), Some(body))
            .await
    }

    pub async fn put(&self, path: &str, actor: &Actor, body: Value) -> Answer {
        self.call(Method::PUT, path, Some(&actor.token), Some(body))
            .await
    }

    pub async fn login(&self, email: &str, password: &str) -> Actor {
        let answer = self
            .call(
                Method::POST,
                "/api/v1/auth/login",
                None,
                Some(json!({"email": email, "password": password})),
            )
            .await;
        assert_eq!(
            answer.status,
            StatusCode::OK,
            "login {email}: {:?}",
            answer.body
        );
        Actor {
            id: answer.body["user"]["id"].as_i64().unwrap(),
            token: answer.body["token"].as_str().unwrap().to_owned(),
        }
    }

    /// Registers a new patient with a unique email.
    pub async fn patient(&self) -> Actor {
        let n = COUNTER.fetch_add(1, Ordering::SeqCst);
        let answer = self
            .call(
                Method::POST,
                "/api/v1/auth/register",
                None,
                Some(json!({"name": format!("Patient {n}"), "email": format!("patient{n}@medbook.test"), "password": PASSWORD})),
            )
            .await;
        assert_eq!(answer.status, StatusCode::CREATED, "{:?}", answer.body);
        Actor {
            id: answer.body["user"]["id"].as_i64().unwrap(),
            token: answer.body["token"].as_str().unwrap().to_owned(),
        }
    }

    /// Registers `n` patients concurrently.
    pub async fn patients(&self, n: usize) -> Vec<Actor> {
        futures_util::future::join_all((0..n).map(|_| self.patient())).await
    }

    /// Creates a doctor through the admin API and logs them in.
    pub async fn doctor(&self) -> Actor {
        let n = COUNTER.fetch_add(1, Ordering::SeqCst);
        let email = format!("doctor{n}@medbook.test");
        let answer = self
            .post(
                "/api/v1/admin/users",
                &self.admin,
                json!({"name": format!("Dr {n}"), "email": email, "password": PASSWORD, "role": "doctor", "specialty": "general"}),
            )
            .await;
        assert_eq!(answer.status, StatusCode::CREATED, "{:?}", answer.body);
        self.login(&email, PASSWORD).await
    }

    /// Deactivates a user through the admin API.
    pub async fn deactivate(&self, user_id: i64) -> Answer {
        self.call(
            Method::PATCH,
            &format!("/api/v1/admin/users/{user_id}"),
            Some(&self.admin.token),
            Some(json!({"is_active": false})),
        )
        .await
    }

    /// Books `doctor` for `patient` at `at` (RFC 3339) for `minutes`.
    pub async fn book(&self, patient: &Actor, doctor: &Actor, at: &str, minutes: i64) -> Answer {
        self.post(
            "/api/v1/appointments",
            patient,
            json!({"doctor_id": doctor.id, "scheduled_at": at, "duration_minutes": minutes, "type": "video_consultation"}),
        )
        .await
    }

    /// Books and asserts 201; returns the appointment's id.
    pub async fn booked(&self, patient: &Actor, doctor: &Actor, at: &str) -> i64 {
        let answer = self.book(patient, doctor, at, 30).await;
        assert_eq!(answer.status, StatusCode::CREATED, "{:?}", answer.body);
        answer.id()
    }

    /// Moves an appointment through the given statuses as `actor`, asserting each step.
    pub async fn walk(&self, id: i64, actor: &Actor, statuses: &[&str]) {
        for status in statuses {
            let answer = self
                .put(
                    &format!("/api/v1/appointments/{id}"),
                    actor,
                    json!({"status": status}),
                )
                .await;
            assert_eq!(
                answer.status,
                StatusCode::OK,
                "to {status}: {:?}",
                answer.body
            );
        }
    }

    /// Runs SQL directly on the test database (for set-up the API does not offer).
    pub fn sql(&self, statements: &str) {
        self.connection()
            .batch_execute(statements)
            .expect("test SQL runs");
    }

    /// A scalar count from the test database.
    pub fn count(&self, query: &str) -> i64 {
        count_in(self.backend, &self.db_url, query)
    }

    /// A pool on the test database, for calling the services and models directly.
    pub fn service_pool(&self) -> medbook::db::DbPool {
        medbook::db::build_pool(&Config::for_database(&self.db_url), Default::default())
    }

    /// A direct connection to the test database.
    pub fn connection(&self) -> Box<dyn SimpleConnection> {
        match self.backend {
            Backend::Postgres => Box::new(PgConnection::establish(&self.db_url).unwrap()),
            Backend::Sqlite => Box::new(sqlite_connection(&self.db_url)),
        }
    }

    /// Asserts the database invariant: no two active appointments of one doctor, or of one
    /// patient, overlap.
    pub fn assert_no_overlaps(&self) {
        assert_no_overlaps_in(self.backend, &self.db_url);
    }
}

/// A test's own connection to a SQLite database. It waits for the write lock as the service's
/// connections do: without a `busy_timeout`, a statement that met a write of the server's
/// (the idempotency purge a restarted server runs, say) failed at once with "database is
/// locked".
fn sqlite_connection(url: &str) -> SqliteConnection {
    let mut conn = SqliteConnection::establish(url).unwrap();
    conn.batch_execute("PRAGMA busy_timeout = 15000")
        .expect("busy_timeout is set");
    conn
}

/// A scalar count from a database.
pub fn count_in(backend: Backend, url: &str, query: &str) -> i64 {
    #[derive(QueryableByName)]
    struct Row {
        #[diesel(sql_type = diesel::sql_types::BigInt)]
        n: i64,
    }
    let sql = format!("SELECT CAST(({query}) AS BIGINT) AS n");
    match backend {
        Backend::Postgres => {
            let mut conn = PgConnection::establish(url).unwrap();
            diesel::sql_query(sql)
                .get_result::<Row>(&mut conn)
                .unwrap()
                .n
        }
        Backend::Sqlite => {
            let mut conn = sqlite_connection(url);
            diesel::sql_query(sql)
                .get_result::<Row>(&mut conn)
                .unwrap()
                .n
        }
    }
}

/// Asserts the database invariant: no two active appointments of one doctor, or of one
/// patient, overlap.
pub fn assert_no_overlaps_in(backend: Backend, url: &str) {
    for who in ["doctor_id", "patient_id"] {
        let overlapping = count_in(
            backend,
            url,
            &format!(
                "SELECT COUNT(*) FROM appointments a JOIN appointments b \
                 ON a.{who} = b.{who} AND a.id < b.id \
                 AND a.scheduled_at < b.ends_at AND b.scheduled_at < a.ends_at \
                 WHERE a.status IN ('pending','confirmed','in_progress') \
                 AND b.status IN ('pending','confirmed','in_progress')"
            ),
        );
        assert_eq!(overlapping, 0, "overlapping active appointments by {who}");
    }
}

impl Drop for TestApp {
    fn drop(&mut self) {
        drop(self.handle.stop(false));
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
        if let Some((admin_url, name)) = self.pg_drop.take() {
            if let Ok(mut admin) = PgConnection::establish(&admin_url) {
                let _ =
                    admin.batch_execute(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"));
            }
        }
    }
}

/// Exactly one of `answers` is a 201; every other is a 409 with `loser_code`.
pub fn assert_one_winner(answers: &[Answer], loser_code: &str) {
    let created = answers
        .iter()
        .filter(|a| a.status == StatusCode::CREATED)
        .count();
    assert_eq!(
        created,
        1,
        "{:?}",
        answers.iter().map(|a| &a.body).collect::<Vec<_>>()
    );
    for answer in answers.iter().filter(|a| a.status != StatusCode::CREATED) {
        assert_eq!(
            (answer.status, answer.code()),
            (StatusCode::CONFLICT, loser_code),
            "{:?}",
            answer.body
        );
    }
}

/// A slot `days` from now at `hour:minute` UTC, RFC 3339.
pub fn slot(days: i64, hour: u32, minute: u32) -> String {
    let day = (Utc::now() + ChronoDuration::days(days)).date_naive();
    let at = day.and_hms_opt(hour, minute, 0).unwrap();
    format!("{}Z", at.format("%Y-%m-%dT%H:%M:%S"))
}

/// Waits until some session of the test database waits for a row lock.
pub fn wait_for_lock_waiter(db_url: &str) {
    let mut watcher = PgConnection::establish(db_url).unwrap();
    #[derive(QueryableByName)]
    struct Waiting {
        #[diesel(sql_type = diesel::sql_types::BigInt)]
        n: i64,
    }
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let waiting: Waiting = diesel::sql_query(
            "SELECT COUNT(*) AS n FROM pg_stat_activity \
             WHERE datname = current_database() AND wait_event_type = 'Lock'",
        )
        .get_result(&mut watcher)
        .unwrap();
        if waiting.n > 0 {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "no booking ever waited for the lock"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// A session holding `user_id`'s row lock (`FOR UPDATE`) until its transaction ends.
pub fn hold_user_row(db_url: &str, user_id: i64) -> PgConnection {
    let mut holder = PgConnection::establish(db_url).unwrap();
    holder
        .batch_execute(&format!(
            "BEGIN; SELECT id FROM users WHERE id = {user_id} FOR UPDATE"
        ))
        .unwrap();
    holder
}

/// Holds the patient's row, waits for the booking to queue behind it (holding the doctor's
/// row), then asks for the doctor's row: a genuine deadlock. This session waits 30 s before
/// running the deadlock check, the app's sessions 1 s, so PostgreSQL aborts the booking.
/// Returns once the patient's row is held for the first round; the rounds run in a thread.
///
/// The patient's row stays held from the first round to the last: each round takes the
/// doctor's row inside a savepoint and rolls back to it, which releases only that lock. (The
/// rounds used to commit and take the patient's row again, racing the booking's retry: on a
/// busy CI host the retry, 100 ms later, sometimes came first, took both rows and succeeded.)
pub fn deadlock_booking(
    db_url: &str,
    doctor_id: i64,
    patient_id: i64,
    rounds: usize,
) -> std::thread::JoinHandle<()> {
    let mut conn = PgConnection::establish(db_url).unwrap();
    conn.batch_execute("SET deadlock_timeout = '30s'").unwrap();
    conn.batch_execute(&format!(
        "BEGIN; SELECT id FROM users WHERE id = {patient_id} FOR UPDATE"
    ))
    .unwrap();
    let db_url = db_url.to_owned();
    std::thread::spawn(move || deadlock_rounds(conn, &db_url, doctor_id, rounds))
}

fn deadlock_rounds(mut conn: PgConnection, db_url: &str, doctor_id: i64, rounds: usize) {
    for _ in 0..rounds {
        wait_for_lock_waiter(db_url);
        conn.batch_execute(&format!(
            "SAVEPOINT doctor; SELECT id FROM users WHERE id = {doctor_id} FOR UPDATE"
        ))
        .expect("the booking, not this session, is chosen as the deadlock victim");
        conn.batch_execute("ROLLBACK TO SAVEPOINT doctor").unwrap();
    }
    conn.batch_execute("COMMIT").unwrap();
}

/// A medbook process started from the built binary (for crash, shutdown and multi-process
/// tests). Its stderr is collected in the background.
pub struct Process {
    pub child: std::process::Child,
    pub base: String,
    log: std::sync::Arc<std::sync::Mutex<String>>,
}

impl Process {
    /// Starts `medbook` on a free port against `database_url`.
    pub fn start(database_url: &str, extra_env: &[(&str, &str)]) -> Process {
        use std::io::Read;
        let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_medbook"));
        command
            .env("DATABASE_URL", database_url)
            .env("MEDBOOK_LISTEN", "127.0.0.1:0")
            .env("MEDBOOK_ADMIN_EMAIL", ADMIN_EMAIL)
            .env("MEDBOOK_ADMIN_PASSWORD", ADMIN_PASSWORD)
            .env("RUST_LOG", "info")
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped());
        for (k, v) in extra_env {
            command.env(k, v);
        }
        let mut child = command.spawn().expect("medbook starts");
        let mut stderr = child.stderr.take().unwrap();
        let log = std::sync::Arc::new(std::sync::Mutex::new(String::new()));
        let sink = std::sync::Arc::clone(&log);
        std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            while let Ok(n) = stderr.read(&mut buf) {
                if n == 0 {
                    break;
                }
                sink.lock()
                    .unwrap()
                    .push_str(&String::from_utf8_lossy(&buf[..n]));
            }
        });
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let text = log.lock().unwrap().clone();
            if let Some(rest) = text.split("listening on ").nth(1) {
                let base = rest.split_whitespace().next().unwrap().to_owned();
                return Process { child, base, log };
            }
            if let Ok(Some(status)) = child.try_wait() {
                panic!("medbook exited with {status}:\n{text}");
            }
            assert!(Instant::now() < deadline, "medbook did not start:\n{text}");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// What the process logged so far.
    pub fn log(&self) -> String {
        self.log.lock().unwrap().clone()
    }

    /// Sends a signal (`"TERM"`, `"KILL"`).
    pub fn signal(&self, name: &str) {
        std::process::Command::new("kill")
            .arg(format!("-{name}"))
            .arg(self.child.id().to_string())
            .status()
            .unwrap();
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A throwaway database for process tests: a SQLite file in `dir` or a fresh PostgreSQL
/// database (dropped when the guard goes). `None` if PostgreSQL is unavailable outside CI.
pub struct ScratchDb {
    pub url: String,
    pg_drop: Option<(String, String)>,
}

impl ScratchDb {
    pub fn new(backend: Backend, dir: &std::path::Path) -> Option<ScratchDb> {
        match backend {
            Backend::Sqlite => Some(ScratchDb {
                url: dir.join("medbook.db").to_string_lossy().into_owned(),
                pg_drop: None,
            }),
            Backend::Postgres => {
                let (url, admin, name) = create_pg_database()?;
                Some(ScratchDb {
                    url,
                    pg_drop: Some((admin, name)),
                })
            }
        }
    }
}

impl ScratchDb {
    /// A pool on this database with the migrations run, for calling services and models
    /// directly.
    pub fn migrated_pool(&self) -> medbook::db::DbPool {
        let pool = medbook::db::build_pool(&Config::for_database(&self.url), Default::default());
        medbook::db::run_migrations(&mut pool.get().expect("connection")).expect("migrations");
        pool
    }
}

/// What diesel reports of one connection's statements from [`StatementLog::attach`] on: the
/// SQL (without binds) of each statement run and of each it put into the connection's
/// prepared-statement cache, in order. SQLite's backtick quotes are shown as double quotes,
/// so one text fits both databases.
#[derive(Clone, Default)]
pub struct StatementLog(std::sync::Arc<std::sync::Mutex<StatementEvents>>);

#[derive(Default)]
struct StatementEvents {
    run: Vec<String>,
    cached: Vec<String>,
}

impl StatementLog {
    /// Starts recording `conn`'s statements (replacing any instrumentation it had).
    pub fn attach(conn: &mut DbConn) -> StatementLog {
        let log = StatementLog::default();
        log.record(conn);
        log
    }

    /// [`attach`](Self::attach), and also records the statements of the connection `pool`'s
    /// SQLite write batches run on (`DbPool::with_sqlite_writer`), in one order: a SQLite
    /// write taken from `conn` runs there.
    pub fn attach_with_writer(conn: &mut DbConn, pool: &medbook::db::DbPool) -> StatementLog {
        let log = StatementLog::attach(conn);
        pool.with_sqlite_writer(|writer| log.record(writer));
        log
    }

    fn record(&self, conn: &mut DbConn) {
        use diesel::connection::InstrumentationEvent;
        let events = std::sync::Arc::clone(&self.0);
        conn.set_instrumentation(move |event: InstrumentationEvent<'_>| {
            let sql = |text: String| {
                let text = text.split(" -- binds").next().unwrap_or_default();
                text.replace('`', "\"")
            };
            let mut events = events.lock().unwrap();
            match event {
                InstrumentationEvent::StartQuery { query, .. } => {
                    events.run.push(sql(query.to_string()))
                }
                InstrumentationEvent::CacheQuery { sql: text, .. } => {
                    events.cached.push(sql(text.to_owned()))
                }
                _ => {}
            }
        });
    }

    /// The statements run so far, in order; the log starts again empty.
    pub fn take_run(&self) -> Vec<String> {
        let mut events = self.0.lock().unwrap();
        events.cached.clear();
        std::mem::take(&mut events.run)
    }

    /// (put into the cache, run): how often a statement starting with `prefix` was each.
    pub fn count(&self, prefix: &str) -> (usize, usize) {
        let events = self.0.lock().unwrap();
        let matching = |sqls: &[String]| sqls.iter().filter(|s| s.starts_with(prefix)).count();
        (matching(&events.cached), matching(&events.run))
    }
}

impl Drop for ScratchDb {
    fn drop(&mut self) {
        if let Some((admin_url, name)) = self.pg_drop.take() {
            if let Ok(mut admin) = PgConnection::establish(&admin_url) {
                let _ =
                    admin.batch_execute(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"));
            }
        }
    }
}

/// `/metrics` of the server at `base`.
pub async fn metrics_at(
    client: &reqwest::Client,
    base: &str,
    token: Option<&str>,
) -> (StatusCode, String) {
    let mut req = client.get(format!("{base}/metrics"));
    if let Some(token) = token {
        req = req.bearer_auth(token);
    }
    let response = req.send().await.unwrap();
    (response.status(), response.text().await.unwrap())
}

/// The value of the sample `prefix` (a name, with its labels if it has any) in a `/metrics`
/// text.
pub fn metric_line(text: &str, prefix: &str) -> Option<f64> {
    text.lines()
        .find(|l| l.starts_with(prefix) && l[prefix.len()..].starts_with(' '))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

/// Polls `done` every 5 ms until it holds; panics after 30 s, saying what it waited for.
pub async fn wait_until<F: std::future::Future<Output = bool>>(
    waiting_for: &str,
    mut done: impl FnMut() -> F,
) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while !done().await {
        assert!(Instant::now() < deadline, "waited 30 s for {waiting_for}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// Waits until the server at `base` runs a request's database work: one of its database
/// threads is busy (`/metrics`). For a request whose wait the database does not show (a
/// SQLite write waiting in its busy handler); the caller knows no other request is running.
pub async fn wait_for_database_work(base: &str) {
    let client = &reqwest::Client::new();
    wait_until("database work to start", || async move {
        let (status, text) = metrics_at(client, base, None).await;
        assert_eq!(status, StatusCode::OK, "{text}");
        let threads = metric_line(&text, "medbook_db_threads").expect("medbook_db_threads");
        let idle = metric_line(&text, "medbook_db_threads_idle").expect("medbook_db_threads_idle");
        threads > idle
    })
    .await
}

/// A client for a [`Process`]: log in, register, book.
pub struct Client {
    pub base: String,
    pub http: reqwest::Client,
}

impl Client {
    pub fn new(base: &str) -> Client {
        Client {
            base: base.to_owned(),
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(30))
                .build()
                .unwrap(),
        }
    }

    pub async fn post(
        &self,
        path: &str,
        token: Option<&str>,
        body: Value,
    ) -> Result<(StatusCode, Value), reqwest::Error> {
        let mut req = self.http.post(format!("{}{path}", self.base)).json(&body);
        if let Some(token) = token {
            req = req.bearer_auth(token);
        }
        let response = req.send().await?;
        let status = response.status();
        Ok((status, response.json().await.unwrap_or(Value::Null)))
    }

    pub async fn login(&self, email: &str, password: &str) -> Actor {
        let (status, body) = self
            .post(
                "/api/v1/auth/login",
                None,
                json!({"email": email, "password": password}),
            )
            .await
            .unwrap();
        assert_eq!(status, StatusCode::OK, "{body}");
        Actor {
            id: body["user"]["id"].as_i64().unwrap(),
            token: body["token"].as_str().unwrap().to_owned(),
        }
    }

    pub async fn patient(&self, n: usize) -> Actor {
        let (status, body) = self
            .post("/api/v1/auth/register", None, json!({"name": "P", "email": format!("p{n}-{}@medbook.test", std::process::id()), "password": PASSWORD}))
            .await
            .unwrap();
        assert_eq!(status, StatusCode::CREATED, "{body}");
        Actor {
            id: body["user"]["id"].as_i64().unwrap(),
            token: body["token"].as_str().unwrap().to_owned(),
        }
    }

    pub async fn doctor(&self, admin: &Actor, n: usize) -> Actor {
        let email = format!("d{n}-{}@medbook.test", std::process::id());
        let (status, body) = self
            .post(
                "/api/v1/admin/users",
                Some(&admin.token),
                json!({"name": "D", "email": email, "password": PASSWORD, "role": "doctor"}),
            )
            .await
            .unwrap();
        assert_eq!(status, StatusCode::CREATED, "{body}");
        self.login(&email, PASSWORD).await
    }
}

/// A user made directly through the service (no HTTP, no password), as the caller of
/// service-level tests; `label` keeps the e-mail addresses of one database apart.
pub fn service_caller(
    conn: &mut DbConn,
    role: medbook::domain::Role,
    label: &str,
) -> medbook::auth::Caller {
    let input = medbook::services::users::CreateUserInput {
        name: label.into(),
        email: format!("{label}-{}@example.com", role.as_str()),
        password: String::new(),
        role: role.as_str().into(),
        specialty: None,
    };
    let id =
        medbook::services::users::create(conn, &input, role, "not-a-login", &Default::default())
            .expect("user")
            .id;
    medbook::auth::Caller {
        id,
        role,
        token_hash: String::new(),
    }
}

/// `prefix` + a query: `EXPLAIN …` of exactly the statement the service runs, binds included.
pub struct Explain<Q, ST> {
    prefix: &'static str,
    query: Q,
    rows: PhantomData<ST>,
}

impl<Q, ST> Explain<Q, ST> {
    pub fn new(prefix: &'static str, query: Q) -> Self {
        Explain {
            prefix,
            query,
            rows: PhantomData,
        }
    }
}

impl<Q: QueryFragment<DbBackend>, ST> QueryFragment<DbBackend> for Explain<Q, ST> {
    fn walk_ast<'b>(&'b self, mut out: AstPass<'_, 'b, DbBackend>) -> QueryResult<()> {
        out.unsafe_to_cache_prepared();
        out.push_sql(self.prefix);
        self.query.walk_ast(out.reborrow())
    }
}

impl<Q, ST: 'static> QueryId for Explain<Q, ST> {
    type QueryId = ();
    const HAS_STATIC_QUERY_ID: bool = false;
}

impl<Q, ST: diesel::sql_types::SqlType> Query for Explain<Q, ST> {
    type SqlType = ST;
}

impl<Q, ST> RunQueryDsl<DbConn> for Explain<Q, ST> {}
