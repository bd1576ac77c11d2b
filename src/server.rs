//! Start-up: pool, migrations, bootstrap admin, and the HTTP server shared by `main` and the
//! integration tests.

use std::net::SocketAddr;
use std::sync::Arc;

use actix_web::dev::Server;
use actix_web::http::header;
use actix_web::{middleware, web, App, HttpServer};

use crate::config::{Backend, Config};
use crate::db::{
    build_pool, check_database, check_sqlite_file, run_migrations, Contention, DbErrorClass,
    DbPool, RetryPolicy,
};
use crate::error::AppError;
use crate::telemetry::Telemetry;
use crate::{auth, routes, services};

/// What every handler can reach.
pub struct AppState {
    pub pool: DbPool,
    /// Retry policy and lock statistics of the locking paths.
    pub contention: Contention,
    pub telemetry: Arc<Telemetry>,
    /// Bearer token `/metrics` requires, if set.
    pub metrics_token: Option<String>,
    /// Origins that may call the API from a browser.
    pub cors: crate::cors::AllowedOrigins,
    /// How long a token authenticates after it was issued (`None`: until logout).
    pub token_ttl: Option<chrono::Duration>,
    /// Permits for password hashing: `MEDBOOK_PASSWORD_HASHES` at a time (`routes::auth`).
    pub password_hashing: tokio::sync::Semaphore,
}

/// Builds the pool, checks the database ([`check_sqlite_file`], [`check_database`]), applies
/// migrations, re-keys the emails they listed and creates the bootstrap admin if configured.
pub fn prepare(config: &Config) -> Result<web::Data<AppState>, String> {
    if config.backend() == Backend::Sqlite {
        let path = crate::db::pool::sqlite_path(&config.database_url);
        let mut plain = <diesel::SqliteConnection as diesel::Connection>::establish(path)
            .map_err(|e| cannot_connect(config, &e))?;
        check_sqlite_file(&mut plain, path, config.sqlite_busy_timeout)?;
    }
    let telemetry = Arc::new(Telemetry::default());
    let pool = build_pool(config, Arc::clone(&telemetry));
    let mut conn = pool.get().map_err(|e| cannot_connect(config, &e))?;
    check_database(&mut conn)?;
    run_migrations(&mut conn)?;
    rekey_pending_emails(&mut conn)?;
    match (&config.admin_email, &config.admin_password) {
        (Some(email), Some(password)) => bootstrap_admin(&mut conn, email, password)?,
        (Some(_), None) | (None, Some(_)) => log::warn!(
            "only one of MEDBOOK_ADMIN_EMAIL and MEDBOOK_ADMIN_PASSWORD is set: \
             no bootstrap admin is created (it takes both)"
        ),
        (None, None) => {}
    }
    Ok(web::Data::new(AppState {
        pool,
        contention: Contention {
            policy: RetryPolicy {
                retries: config.retry_attempts,
                ..RetryPolicy::default()
            },
            stats: Arc::clone(&telemetry.locks),
        },
        telemetry,
        metrics_token: config.metrics_token.clone(),
        cors: config.cors.clone(),
        token_ttl: config
            .token_ttl
            .and_then(|ttl| chrono::Duration::from_std(ttl).ok()),
        password_hashing: tokio::sync::Semaphore::new(config.password_hashes),
    }))
}

/// Re-keys the emails a migration listed ([`services::users::rekey_pending_emails`]). On a
/// database that takes no writes now they wait, as the bootstrap admin does, for a start
/// that can write; a login with the listed users' other spelling finds no one until then.
fn rekey_pending_emails(conn: &mut crate::db::DbConn) -> Result<(), String> {
    match services::users::rekey_pending_emails(conn) {
        Ok(done) => {
            if !done.rekeyed.is_empty() {
                log::info!(
                    "emails re-keyed to lower case in Unicode's normal form: {} users",
                    done.rekeyed.len()
                );
            }
            Ok(())
        }
        Err(e) if crate::db::classify(&e) == DbErrorClass::Unavailable => {
            log::warn!(
                "the emails a migration listed could not be re-keyed ({e}): they are at the \
                 next start on a database that takes writes"
            );
            Ok(())
        }
        Err(e) => Err(format!(
            "re-keying the emails a migration listed failed: {e}"
        )),
    }
}

/// Start-up's answer to a database it cannot open. PostgreSQL's message names the server and
/// the database; SQLite's ("Unable to open the database file") names nothing, so the path is
/// added, and a URL of another scheme (`mysql://…`, `postgress://…`) is told which schemes
/// select PostgreSQL: anything else is a SQLite file path, as API.md says. Such a URL's
/// password is not shown.
fn cannot_connect(config: &Config, err: &impl std::fmt::Display) -> String {
    let url = &config.database_url;
    if config.backend() == Backend::Postgres {
        return format!("cannot connect to the database: {err}");
    }
    let other_scheme = url.split_once("://").filter(|(scheme, _)| {
        *scheme != "sqlite"
            && !scheme.is_empty()
            && scheme
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "+-.".contains(c))
    });
    let Some((scheme, rest)) = other_scheme else {
        return format!("cannot open the SQLite database {url:?}: {err}");
    };
    // A URL meant for another server may carry its password: that stays out of the log (all
    // up to the last `@`, should the password hold a `/` or an `@`).
    let shown = match rest.rsplit_once('@') {
        Some((userinfo, host)) if userinfo.contains(':') => {
            let user = userinfo.split(':').next().unwrap_or("");
            format!("{scheme}://{user}:***@{host}")
        }
        _ => url.clone(),
    };
    format!(
        "cannot open the SQLite database {shown:?}: {err} ({scheme}:// selects no database: \
         postgres:// and postgresql:// select PostgreSQL, anything else is a SQLite file path)"
    )
}

/// Creates the bootstrap admin if no user has `email` yet. The email and password must pass
/// the checks a registration's pass: an admin with a password the API would refuse to any
/// user stops the start instead.
fn bootstrap_admin(
    conn: &mut crate::db::DbConn,
    email: &str,
    password: &str,
) -> Result<(), String> {
    let email = email.trim();
    let existing = crate::models::user::find_by_email(conn, email)
        .map_err(|e| format!("bootstrap admin lookup failed: {e}"))?;
    if let Some(user) = existing {
        if let Some(warning) = not_an_admin(&user) {
            log::warn!("{warning}");
        }
        return Ok(());
    }
    let mut problems = services::validate::Problems::default();
    problems.email("MEDBOOK_ADMIN_EMAIL", email);
    problems.password("MEDBOOK_ADMIN_PASSWORD", password);
    problems
        .into_text()
        .map_err(|problems| format!("the bootstrap admin cannot be created: {problems}"))?;
    // Hashed with no transaction open; `ensure_admin` still tolerates a concurrent start.
    let hash = auth::hash_password(password).map_err(|e| e.detail())?;
    match services::users::ensure_admin(conn, email, &hash) {
        Ok(true) => log::info!("created bootstrap admin {email}"),
        Ok(false) => {}
        // A database that takes no writes now (a standby, read-only) is served as it is
        // (`db::pool::up_to_date_read_only`); the admin is for a start that can write.
        Err(AppError::Database(e)) if crate::db::classify(&e) == DbErrorClass::Unavailable => {
            log::warn!(
                "the bootstrap admin {email} could not be created ({e}): it is created at the \
                 next start on a database that takes writes"
            );
        }
        Err(e) => {
            return Err(format!(
                "the bootstrap admin cannot be created: {}",
                e.detail()
            ))
        }
    }
    Ok(())
}

/// What start-up says when `MEDBOOK_ADMIN_EMAIL` names a user who is not an active admin:
/// the operator asked for an admin and has none by that email, and the start should not pass
/// for having one. (API.md creates the admin only where no user has the email.)
fn not_an_admin(user: &crate::models::user::User) -> Option<String> {
    let (what, remedy) = match (user.role.as_str(), user.is_active) {
        ("admin", true) => return None,
        ("admin", false) => (
            "a deactivated admin".to_owned(),
            "an active admin may reactivate it, or set an email no user has",
        ),
        (role, _) => (
            format!("a {role}, not an admin"),
            "a role does not change; set an email no user has",
        ),
    };
    Some(format!(
        "MEDBOOK_ADMIN_EMAIL names an existing user (id {}) who is {what}: no admin is created \
         ({remedy})",
        user.id
    ))
}

/// Binds the HTTP server; returns it (not yet awaited) and the bound addresses.
/// SIGTERM/SIGINT stop it gracefully: in-flight requests finish within 30 s.
pub fn bind(
    state: web::Data<AppState>,
    config: &Config,
) -> std::io::Result<(Server, Vec<SocketAddr>)> {
    let cors = config.cors != crate::cors::AllowedOrigins::None;
    let mut server = HttpServer::new(move || {
        App::new()
            .app_data(state.clone())
            // Innermost: the metrics and the access log count a 304 as one.
            .wrap(middleware::from_fn(crate::conditional::not_modified))
            .wrap(middleware::from_fn(
                crate::auth::check_token_of_refused_request,
            ))
            .wrap(middleware::from_fn(crate::telemetry::http::track))
            // Outside the token check and the metrics, so that every answer to an allowed origin
            // is readable, refusals included, and a preflight is answered before they run.
            .wrap(middleware::Condition::new(
                cors,
                middleware::from_fn(crate::cors::cors),
            ))
            // Answers carry health data and tokens: no cache (a browser's included) may keep
            // them, and a browser must not read a JSON answer as anything else. Outermost, so
            // that every answer has them, preflights and refusals included.
            .wrap(
                middleware::DefaultHeaders::new()
                    .add((header::CACHE_CONTROL, "no-store"))
                    .add((header::X_CONTENT_TYPE_OPTIONS, "nosniff")),
            )
            // The access log costs a regex match and formatting per request: only when shown.
            .wrap(middleware::Condition::new(
                log::log_enabled!(target: "actix_web::middleware::logger", log::Level::Info),
                middleware::Logger::new("%a \"%r\" %s %b %Dms"),
            ))
            .configure(routes::configure)
    })
    .shutdown_timeout(30)
    .worker_max_blocking_threads(config.blocking_threads());
    if config.workers > 0 {
        server = server.workers(config.workers);
    }
    let server = server.bind(&config.listen)?;
    let addrs = server.addrs();
    Ok((server.run(), addrs))
}

/// Deletes expired idempotency records, and tokens past `MEDBOOK_TOKEN_TTL_HOURS`, now and
/// then, for as long as the server runs. (An expired token is refused whether or not it was
/// deleted yet: this only keeps the table small.)
pub fn spawn_purger(state: web::Data<AppState>) {
    actix_web::rt::spawn(async move {
        let mut every = actix_web::rt::time::interval(std::time::Duration::from_secs(600));
        loop {
            every.tick().await;
            let contention = state.contention.clone();
            let purged = crate::db::run_blocking(&state.pool, move |conn| {
                services::idempotency::purge_expired(conn, &contention, crate::time::now())
            })
            .await;
            match purged {
                Ok(0) => {}
                Ok(n) => log::info!("ATOMIC purged {n} expired idempotency keys"),
                Err(e) => log::warn!("purging idempotency keys failed: {}", e.detail()),
            }
            let Some(ttl) = state.token_ttl else {
                continue;
            };
            let contention = state.contention.clone();
            let purged = crate::db::run_blocking(&state.pool, move |conn| {
                services::auth::purge_expired_tokens(conn, &contention, crate::time::now() - ttl)
            })
            .await;
            match purged {
                Ok(0) => {}
                Ok(n) => log::info!("purged {n} expired tokens"),
                Err(e) => log::warn!("purging expired tokens failed: {}", e.detail()),
            }
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_state_hashes_as_many_passwords_at_once_as_configured() {
        let dir = tempfile::tempdir().unwrap();
        let mut config = Config::for_database(dir.path().join("state.db").to_str().unwrap());
        for hashes in [1, 3] {
            config.password_hashes = hashes;
            let state = prepare(&config).unwrap();
            assert_eq!(state.password_hashing.available_permits(), hashes);
        }
    }

    fn users(config: &Config) -> Vec<(String, String)> {
        use diesel::prelude::*;
        let pool = build_pool(config, Arc::default());
        crate::schema::users::table
            .select((crate::schema::users::email, crate::schema::users::role))
            .load(&mut **pool.get().unwrap())
            .unwrap()
    }

    #[test]
    fn a_bootstrap_admin_the_api_would_refuse_stops_the_start() {
        let dir = tempfile::tempdir().unwrap();
        let mut config = Config::for_database(dir.path().join("admin.db").to_str().unwrap());
        config.admin_email = Some("root@medbook.test".to_owned());
        config.admin_password = Some("short".to_owned());
        let refused = prepare(&config).map(|_| ()).unwrap_err();
        assert_eq!(
            refused,
            "the bootstrap admin cannot be created: \
             MEDBOOK_ADMIN_PASSWORD must be at least 8 characters"
        );
        config.admin_email = Some("root".to_owned());
        let refused = prepare(&config).map(|_| ()).unwrap_err();
        assert!(
            refused.contains("MEDBOOK_ADMIN_EMAIL must be an email address")
                && refused.contains("MEDBOOK_ADMIN_PASSWORD must be at least 8"),
            "{refused}"
        );
        assert_eq!(users(&config), vec![], "nothing was created");

        // A good one is created (its email trimmed, as a registration's is) ...
        config.admin_email = Some(" root@medbook.test ".to_owned());
        config.admin_password = Some("long enough".to_owned());
        prepare(&config).unwrap();
        let admin = vec![("root@medbook.test".to_owned(), "admin".to_owned())];
        assert_eq!(users(&config), admin);
        // ... and once it exists the variables are not used: a restart with another password
        // starts, and changes nothing.
        config.admin_password = Some("short".to_owned());
        prepare(&config).unwrap();
        config.admin_password = None;
        prepare(&config).unwrap();
        assert_eq!(users(&config), admin);
    }

    #[test]
    fn an_admin_email_of_a_user_who_is_no_active_admin_is_warned_of() {
        let dir = tempfile::tempdir().unwrap();
        let mut config = Config::for_database(dir.path().join("roles.db").to_str().unwrap());
        config.admin_email = Some("root@medbook.test".to_owned());
        config.admin_password = Some("long enough".to_owned());
        prepare(&config).unwrap();
        let user = |email: &str| {
            let pool = build_pool(&config, Arc::default());
            let mut conn = pool.get().unwrap();
            crate::models::user::find_by_email(&mut conn, email)
                .unwrap()
                .unwrap()
        };
        let mut admin = user("root@medbook.test");
        assert_eq!(not_an_admin(&admin), None);
        admin.is_active = false;
        let said = not_an_admin(&admin).unwrap();
        assert!(
            said.contains("who is a deactivated admin: no admin is created"),
            "{said}"
        );
        let mut patient = admin.clone();
        patient.role = "patient".to_owned();
        patient.is_active = true;
        let said = not_an_admin(&patient).unwrap();
        assert!(
            said.starts_with(&format!(
                "MEDBOOK_ADMIN_EMAIL names an existing user (id {}) who is a patient, not an admin",
                patient.id
            )),
            "{said}"
        );
    }

    #[test]
    fn a_sqlite_database_without_a_file_is_refused_at_start() {
        for url in [
            ":memory:",
            "sqlite://:memory:",
            "file::memory:?cache=shared",
            "file:medbook?mode=memory",
            "sqlite://",
        ] {
            let refused = prepare(&Config::for_database(url)).map(|_| ()).unwrap_err();
            assert!(
                refused.starts_with("DATABASE_URL names a SQLite database without a file"),
                "{url}: {refused}"
            );
        }
        // A `file:` URI that names a file is a file.
        let dir = tempfile::tempdir().unwrap();
        let uri = format!("file:{}", dir.path().join("uri.db").display());
        prepare(&Config::for_database(&uri)).unwrap();
        assert!(dir.path().join("uri.db").exists());
    }

    /// A new SQLite database holds prescriptions and password hashes: it is not left readable
    /// by every local user (SQLite created it `0644`).
    #[cfg(unix)]
    #[test]
    fn a_new_sqlite_database_is_readable_by_its_owner_only() {
        use std::os::unix::fs::PermissionsExt;
        let mode =
            |path: &std::path::Path| std::fs::metadata(path).unwrap().permissions().mode() & 0o777;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("owner.db");
        let config = Config::for_database(path.to_str().unwrap());
        let state = prepare(&config).unwrap();
        for file in ["owner.db", "owner.db-wal", "owner.db-shm"] {
            assert_eq!(mode(&dir.path().join(file)), 0o600, "{file}");
        }
        drop(state);
        // An existing database keeps the mode its operator gave it.
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o640)).unwrap();
        let _state = prepare(&config).unwrap();
        assert_eq!(mode(&path), 0o640);
    }

    /// A SQLite file is one application's database: medbook neither moves into another
    /// application's file nor changes it on its way to refusing it.
    #[test]
    fn a_sqlite_file_of_another_application_is_refused_and_left_as_it_is() {
        use diesel::connection::SimpleConnection;
        use diesel::prelude::*;
        #[derive(QueryableByName, Debug, PartialEq)]
        struct Name {
            #[diesel(sql_type = diesel::sql_types::Text)]
            name: String,
        }
        let dir = tempfile::tempdir().unwrap();
        let read = |path: &std::path::Path, sql: &str| -> Vec<String> {
            let mut conn = SqliteConnection::establish(path.to_str().unwrap()).unwrap();
            let rows: Vec<Name> = diesel::sql_query(sql).load(&mut conn).unwrap();
            rows.into_iter().map(|r| r.name).collect()
        };
        let tables = "SELECT name FROM sqlite_schema WHERE type IN ('table', 'view') ORDER BY name";
        let journal = "SELECT journal_mode AS name FROM pragma_journal_mode";
        // Tables of its own, one of them named as one of medbook's; and another diesel
        // application's file, with its own migrations recorded.
        for (file, setup) in [
            (
                "notes.db",
                "CREATE TABLE notes (id INTEGER PRIMARY KEY, body TEXT);",
            ),
            (
                "users.db",
                "CREATE TABLE users (id INTEGER PRIMARY KEY, login TEXT);",
            ),
            ("view.db", "CREATE VIEW today AS SELECT date('now') AS day;"),
            (
                "diesel.db",
                "CREATE TABLE __diesel_schema_migrations (version VARCHAR(50) PRIMARY KEY, \
                 run_on TIMESTAMP NOT NULL DEFAULT CURRENT_TIMESTAMP); \
                 INSERT INTO __diesel_schema_migrations (version) VALUES ('20200101000000'); \
                 CREATE TABLE posts (id INTEGER PRIMARY KEY);",
            ),
        ] {
            let path = dir.path().join(file);
            SqliteConnection::establish(path.to_str().unwrap())
                .unwrap()
                .batch_execute(setup)
                .unwrap();
            let before = read(&path, tables);
            let refused = prepare(&Config::for_database(path.to_str().unwrap()))
                .map(|_| ())
                .unwrap_err();
            assert!(
                refused.contains("but no record of medbook's migrations")
                    && refused.contains(&before.last().unwrap().to_string()),
                "{file}: {refused}"
            );
            assert_eq!(read(&path, tables), before, "{file}: no table added");
            assert_eq!(
                read(&path, journal),
                ["delete"],
                "{file}: not switched to WAL"
            );
        }

        // A file that is not a database is named as such, at once.
        let junk = dir.path().join("junk.db");
        std::fs::write(
            &junk,
            "not a database, but long enough to hold a header ...",
        )
        .unwrap();
        let refused = prepare(&Config::for_database(junk.to_str().unwrap()))
            .map(|_| ())
            .unwrap_err();
        assert_eq!(
            refused,
            format!(
                "{junk:?} is not a SQLite database (file is not a database); give medbook a \
                 file of its own"
            )
        );

        // medbook's own file starts again, as does one with nothing in it.
        let own = dir.path().join("own.db");
        let config = Config::for_database(own.to_str().unwrap());
        drop(prepare(&config).unwrap());
        prepare(&config).unwrap();
        let empty = dir.path().join("empty.db");
        std::fs::File::create(&empty).unwrap();
        prepare(&Config::for_database(empty.to_str().unwrap())).unwrap();

        // A URL of another server is opened as a SQLite path, and its password is not shown.
        let refused = prepare(&Config::for_database("mysql://root:s3cret@db/x"))
            .map(|_| ())
            .unwrap_err();
        assert!(
            refused.contains("mysql://root:***@db/x") && !refused.contains("s3cret"),
            "{refused}"
        );
    }

    #[test]
    fn a_sqlite_database_that_cannot_be_opened_is_named_with_its_path() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("no-such-dir").join("medbook.db");
        let mut config = Config::for_database(missing.to_str().unwrap());
        config.pool_timeout = std::time::Duration::from_millis(200);
        let refused = prepare(&config).map(|_| ()).unwrap_err();
        assert!(
            refused.starts_with(&format!("cannot open the SQLite database {missing:?}: ")),
            "{refused}"
        );
        assert!(!refused.contains("selects no database"), "{refused}");

        let err = "Unable to open the database file";
        for (url, scheme) in [
            ("mysql://root@127.0.0.1/test", Some("mysql")),
            ("postgress://u@h/db", Some("postgress")),
            ("sqlite://data/medbook.db", None),
            ("data/medbook.db", None),
        ] {
            let said = cannot_connect(&Config::for_database(url), &err);
            assert!(said.contains(url) && said.contains(err), "{said}");
            let hint = scheme.map(|s| {
                format!(
                    "({s}:// selects no database: postgres:// and postgresql:// select PostgreSQL"
                )
            });
            match hint {
                Some(hint) => assert!(said.contains(&hint), "{said}"),
                None => assert!(!said.contains("selects no database"), "{said}"),
            }
        }
        let said = cannot_connect(&Config::for_database("mysql://root:s3cret@db:3306/x"), &err);
        assert!(!said.contains("s3cret"), "{said}");
        assert!(said.contains("\"mysql://root:***@db:3306/x\""), "{said}");
        let said = cannot_connect(&Config::for_database("mysql://root:a/b@c@db/x"), &err);
        assert!(said.contains("\"mysql://root:***@db/x\""), "{said}");
        let postgres = cannot_connect(&Config::for_database("postgres://u@h/db"), &"refused");
        assert_eq!(postgres, "cannot connect to the database: refused");
    }
}
