//! Process configuration, read once from the environment (and `.env`).

use std::ops::RangeInclusive;
use std::time::Duration;

/// Which database a `DATABASE_URL` selects.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Postgres,
    Sqlite,
}

/// Everything medbook reads from its environment. See the README's configuration table.
#[derive(Debug, Clone)]
pub struct Config {
    pub database_url: String,
    pub listen: String,
    pub admin_email: Option<String>,
    pub admin_password: Option<String>,
    pub pool_size: u32,
    pub pool_timeout: Duration,
    pub pg_lock_timeout: Duration,
    pub pg_statement_timeout: Duration,
    pub sqlite_busy_timeout: Duration,
    /// What SQLite may keep in memory for all connections together, page caches above all
    /// (`MEDBOOK_SQLITE_MEMORY_MIB`; 0: no limit). See [`default_sqlite_memory_mib`].
    pub sqlite_memory_mib: u64,
    /// Passwords hashed at once, at least one (`MEDBOOK_PASSWORD_HASHES`). See
    /// [`default_password_hashes`].
    pub password_hashes: usize,
    pub retry_attempts: u32,
    /// HTTP worker threads; 0: actix-web's default, one per core.
    pub workers: usize,
    pub metrics_token: Option<String>,
    /// Origins that may call the API from a browser (`MEDBOOK_CORS_ORIGINS`).
    pub cors: crate::cors::AllowedOrigins,
    /// How long a token authenticates after it was issued (`MEDBOOK_TOKEN_TTL_HOURS`; `None`:
    /// until logout or deactivation).
    pub token_ttl: Option<Duration>,
}

impl Config {
    /// Reads the configuration. A value that cannot mean what it says (not a number, a number
    /// out of its range, a listen address that is not `host:port`) is a start-up error naming
    /// the variable, found before the database is touched: taken as it was, `0` connections
    /// or a `0` ms pool timeout panicked at start, a pool size past 2³² wrapped around to a
    /// small one, and a lock timeout past PostgreSQL's range refused every connection.
    pub fn from_env() -> Result<Config, String> {
        let var = |name: &str| std::env::var(name).ok().filter(|v| !v.trim().is_empty());
        let setting = |name: &str,
                       default: u64,
                       range: RangeInclusive<u64>|
         -> Result<u64, String> { bounded(name, var(name), default, range) };
        let millis =
            |name: &str, default: u64, range: RangeInclusive<u64>| -> Result<Duration, String> {
                setting(name, default, range).map(Duration::from_millis)
            };
        let pool_size =
            setting("MEDBOOK_POOL_SIZE", default_pool_size(), 1..=MAX_POOL_SIZE)? as u32;
        let listen = var("MEDBOOK_LISTEN").unwrap_or_else(|| "127.0.0.1:8080".to_owned());
        check_listen(&listen)?;
        Ok(Config {
            database_url: var("DATABASE_URL").unwrap_or_else(|| "medbook.db".to_owned()),
            listen,
            admin_email: var("MEDBOOK_ADMIN_EMAIL"),
            admin_password: var("MEDBOOK_ADMIN_PASSWORD"),
            pool_size,
            pool_timeout: millis("MEDBOOK_POOL_TIMEOUT_MS", 2_000, 1..=u64::MAX)?,
            pg_lock_timeout: millis("MEDBOOK_LOCK_TIMEOUT_MS", 5_000, 0..=MAX_TIMEOUT_MS)?,
            pg_statement_timeout: millis(
                "MEDBOOK_STATEMENT_TIMEOUT_MS",
                15_000,
                0..=MAX_TIMEOUT_MS,
            )?,
            sqlite_busy_timeout: millis(
                "MEDBOOK_SQLITE_BUSY_TIMEOUT_MS",
                5_000,
                0..=MAX_TIMEOUT_MS,
            )?,
            sqlite_memory_mib: number(
                "MEDBOOK_SQLITE_MEMORY_MIB",
                var("MEDBOOK_SQLITE_MEMORY_MIB"),
                default_sqlite_memory_mib(pool_size),
            )?,
            password_hashes: password_hashes(var("MEDBOOK_PASSWORD_HASHES"))?,
            retry_attempts: setting("MEDBOOK_RETRY_ATTEMPTS", 3, 0..=MAX_RETRY_ATTEMPTS)? as u32,
            workers: setting("MEDBOOK_WORKERS", 0, 1..=MAX_WORKERS)? as usize,
            metrics_token: var("MEDBOOK_METRICS_TOKEN"),
            cors: crate::cors::AllowedOrigins::parse(var("MEDBOOK_CORS_ORIGINS").as_deref())?,
            token_ttl: token_ttl(var("MEDBOOK_TOKEN_TTL_HOURS"))?,
        })
    }

    /// A configuration with defaults for `database_url`, as tests and tools use it.
    pub fn for_database(database_url: &str) -> Config {
        Config {
            database_url: database_url.to_owned(),
            listen: "127.0.0.1:0".to_owned(),
            admin_email: None,
            admin_password: None,
            pool_size: 8,
            pool_timeout: Duration::from_secs(2),
            pg_lock_timeout: Duration::from_secs(5),
            pg_statement_timeout: Duration::from_secs(15),
            sqlite_busy_timeout: Duration::from_secs(5),
            sqlite_memory_mib: default_sqlite_memory_mib(8),
            password_hashes: default_password_hashes(cores()),
            retry_attempts: 3,
            workers: 2,
            metrics_token: None,
            cors: crate::cors::AllowedOrigins::None,
            token_ttl: None,
        }
    }

    /// The backend selected by the URL scheme.
    pub fn backend(&self) -> Backend {
        backend_of(&self.database_url)
    }

    /// Blocking threads per HTTP worker, for password hashing (`routes::auth` lets
    /// `password_hashes` run at a time). Database work runs on the pool's own threads, at most
    /// one per connection (`db::run_blocking`).
    pub fn blocking_threads(&self) -> usize {
        cores()
    }
}

/// SQLite's memory for the whole process, in MiB, for a pool of `pool_size` connections: 1 MiB
/// a connection (8 MiB at the default 8). It is a soft limit (SQLite's `soft_heap_limit`)
/// that SQLite keeps to by reusing the least recently used cached pages, of whichever
/// connection, instead of growing. Without it each pooled connection keeps up to 2 MB of
/// pages once it has read that much of a large database, all of it resident at once under a
/// read-heavy mix; with it a busy connection still caches up to 2 MB while the others are
/// idle. A connection's memory beside its cache (schema, prepared statements) is under a
/// third of a MiB (8 connections after a write load: 2.0–2.3 MiB, caches included), so the
/// limit leaves room for caches at any pool size.
pub fn default_sqlite_memory_mib(pool_size: u32) -> u64 {
    u64::from(pool_size)
}

/// Passwords hashed at once on `cores` cores: one per two cores (at least one). Each argon2id
/// hash takes 19 MiB and a core's worth of CPU for ~20 ms, and a login burst must take
/// neither the memory nor the CPU the bookings need. On 2 cores that is one at a time: 19 MiB
/// of the process's peak instead of 38, and about 40 logins a second in a burst, against
/// about 50 with two (BENCHMARKS.md, "What changed", round after run Z).
pub fn default_password_hashes(cores: usize) -> usize {
    (cores / 2).max(1)
}

/// Most passwords hashed at once: each hash holds 19 MiB, so 256 is near 5 GiB (and a
/// semaphore of 2⁶¹ permits or more panicked at start).
pub const MAX_PASSWORD_HASHES: u64 = 256;

/// `MEDBOOK_PASSWORD_HASHES`: unset, [`default_password_hashes`]; 0 is an error (no login
/// could ever finish).
fn password_hashes(value: Option<String>) -> Result<usize, String> {
    let default = default_password_hashes(cores()) as u64;
    bounded(
        "MEDBOOK_PASSWORD_HASHES",
        value,
        default,
        1..=MAX_PASSWORD_HASHES,
    )
    .map(|n| n as usize)
}

/// The longest token lifetime `MEDBOOK_TOKEN_TTL_HOURS` takes: ten years.
const MAX_TOKEN_TTL_HOURS: u64 = 24 * 366 * 10;

/// `MEDBOOK_TOKEN_TTL_HOURS`: unset or 0, tokens last until logout or deactivation.
fn token_ttl(value: Option<String>) -> Result<Option<Duration>, String> {
    match number("MEDBOOK_TOKEN_TTL_HOURS", value, 0)? {
        0 => Ok(None),
        hours @ 1..=MAX_TOKEN_TTL_HOURS => Ok(Some(Duration::from_secs(hours * 3600))),
        hours => Err(format!(
            "MEDBOOK_TOKEN_TTL_HOURS must be at most {MAX_TOKEN_TTL_HOURS} (ten years), got {hours}"
        )),
    }
}

/// Four connections per core, 8 to 16: enough to keep the database busy while requests wait on
/// the network and on its commits, few enough that a 2-core database is not thrashed (8 there;
/// see BENCHMARKS.md).
pub fn default_pool_size() -> u64 {
    pool_size_for(cores())
}

/// [`default_pool_size`] on `cores` cores. At least 8, also on one core: a connection spends
/// its time waiting on the database, not on medbook's CPU, so a one-core medbook in front of
/// a database on its own core answered 3–17 % more requests a second at 16 and 64 clients
/// with 8 connections than with 4 (BENCHMARKS.md, round after run AD).
fn pool_size_for(cores: usize) -> u64 {
    (cores as u64 * 4).clamp(8, 16)
}

/// The cores this process may use (2 if that cannot be read).
pub fn cores() -> usize {
    std::thread::available_parallelism().map_or(2, |n| n.get())
}

/// `postgres://` and `postgresql://` select PostgreSQL; anything else is a SQLite path.
pub fn backend_of(url: &str) -> Backend {
    if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        Backend::Postgres
    } else {
        Backend::Sqlite
    }
}

fn number(name: &str, value: Option<String>, default: u64) -> Result<u64, String> {
    match value {
        None => Ok(default),
        Some(v) => v
            .trim()
            .parse()
            .map_err(|_| format!("{name} must be a non-negative integer, got {v:?}")),
    }
}

/// Most database connections (and database threads) a process takes: each connection has a
/// thread, and PostgreSQL's own default `max_connections` is 100 for all processes together.
pub const MAX_POOL_SIZE: u64 = 1024;

/// Longest lock, statement and busy timeout, in ms: PostgreSQL's `lock_timeout` and
/// `statement_timeout` and SQLite's `busy_timeout` are 32-bit (about 24.8 days).
pub const MAX_TIMEOUT_MS: u64 = i32::MAX as u64;

/// Most retries of a transaction: the backoff doubles each time, so the tenth already waits
/// 51–77 s, with the request's connection held.
pub const MAX_RETRY_ATTEMPTS: u64 = 10;

/// Most HTTP worker threads (actix-web's own limit).
pub const MAX_WORKERS: u64 = 512;

/// [`number`], and in `range`: outside it is an error naming the variable and the range. The
/// default is taken as it is.
fn bounded(
    name: &str,
    value: Option<String>,
    default: u64,
    range: RangeInclusive<u64>,
) -> Result<u64, String> {
    let given = value.is_some();
    let n = number(name, value, default)?;
    if !given || range.contains(&n) {
        return Ok(n);
    }
    Err(match (*range.start(), *range.end()) {
        (min, u64::MAX) => format!("{name} must be at least {min}, got {n}"),
        (min, max) => format!("{name} must be between {min} and {max}, got {n}"),
    })
}

/// `MEDBOOK_LISTEN` must be an address to listen on: `host:port` or `[v6]:port`, the host
/// an IP address or a name that resolves.
fn check_listen(listen: &str) -> Result<(), String> {
    use std::net::ToSocketAddrs;
    match listen.to_socket_addrs().map(|mut addrs| addrs.next()) {
        Ok(Some(_)) => Ok(()),
        Ok(None) => Err(format!(
            "MEDBOOK_LISTEN {listen:?} names no address to listen on"
        )),
        Err(e) => Err(format!(
            "MEDBOOK_LISTEN must be host:port (e.g. 127.0.0.1:8080), got {listen:?}: {e}"
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn url_scheme_selects_backend() {
        assert_eq!(backend_of("postgres://u@h/db"), Backend::Postgres);
        assert_eq!(backend_of("postgresql://u@h/db"), Backend::Postgres);
        assert_eq!(backend_of("medbook.db"), Backend::Sqlite);
        assert_eq!(backend_of("sqlite://data/medbook.db"), Backend::Sqlite);
    }

    #[test]
    fn malformed_numbers_name_the_variable() {
        let err = number("MEDBOOK_POOL_SIZE", Some("many".into()), 8).unwrap_err();
        assert!(err.contains("MEDBOOK_POOL_SIZE"));
        assert_eq!(number("X", None, 8).unwrap(), 8);
    }

    #[test]
    fn numbers_out_of_their_range_name_the_variable_and_the_range() {
        let pool = |v: &str| bounded("MEDBOOK_POOL_SIZE", Some(v.into()), 8, 1..=MAX_POOL_SIZE);
        assert_eq!(pool("12"), Ok(12));
        assert_eq!(pool("1024"), Ok(1024));
        assert_eq!(
            pool("0"),
            Err("MEDBOOK_POOL_SIZE must be between 1 and 1024, got 0".to_owned())
        );
        // Past 2^32 it wrapped around to 1 when cast.
        assert!(pool("4294967297")
            .unwrap_err()
            .contains("between 1 and 1024"));
        let timeout = |v: &str| {
            bounded(
                "MEDBOOK_POOL_TIMEOUT_MS",
                Some(v.into()),
                2000,
                1..=u64::MAX,
            )
        };
        assert_eq!(
            timeout("0"),
            Err("MEDBOOK_POOL_TIMEOUT_MS must be at least 1, got 0".to_owned())
        );
        assert_eq!(timeout("18446744073709551615"), Ok(u64::MAX));
        let lock = |v: &str| {
            bounded(
                "MEDBOOK_LOCK_TIMEOUT_MS",
                Some(v.into()),
                5000,
                0..=MAX_TIMEOUT_MS,
            )
        };
        assert_eq!(lock("0"), Ok(0));
        assert_eq!(lock("2147483647"), Ok(2147483647));
        assert!(lock("2147483648").is_err());
        // Unset: the default, whatever the range.
        assert_eq!(bounded("MEDBOOK_WORKERS", None, 0, 1..=MAX_WORKERS), Ok(0));
        assert!(bounded("MEDBOOK_WORKERS", Some("0".into()), 0, 1..=MAX_WORKERS).is_err());
        assert!(bounded("MEDBOOK_WORKERS", Some("513".into()), 0, 1..=MAX_WORKERS).is_err());
        assert!(bounded(
            "MEDBOOK_RETRY_ATTEMPTS",
            Some("11".into()),
            3,
            0..=MAX_RETRY_ATTEMPTS
        )
        .is_err());
        assert!(bounded(
            "MEDBOOK_RETRY_ATTEMPTS",
            Some("-1".into()),
            3,
            0..=MAX_RETRY_ATTEMPTS
        )
        .unwrap_err()
        .contains("non-negative integer"));
    }

    #[test]
    fn the_listen_address_is_checked_before_anything_starts() {
        for good in [
            "127.0.0.1:0",
            "0.0.0.0:8080",
            "[::1]:8080",
            "localhost:8080",
        ] {
            assert_eq!(check_listen(good), Ok(()), "{good}");
        }
        for bad in [
            "notanaddr",
            "127.0.0.1",
            "127.0.0.1:99999",
            ":8080",
            "127.0.0.1:http",
        ] {
            let err = check_listen(bad).unwrap_err();
            assert!(err.starts_with("MEDBOOK_LISTEN"), "{bad}: {err}");
            assert!(err.contains(&format!("{bad:?}")), "{bad}: {err}");
        }
    }

    #[test]
    fn token_lifetime_is_in_hours_and_bounded() {
        assert_eq!(token_ttl(None), Ok(None));
        assert_eq!(token_ttl(Some("0".into())), Ok(None));
        assert_eq!(
            token_ttl(Some("720".into())),
            Ok(Some(Duration::from_secs(720 * 3600)))
        );
        assert!(token_ttl(Some("999999999999".into())).is_err());
        assert!(token_ttl(Some("-1".into())).is_err());
    }

    #[test]
    fn the_pool_has_four_connections_per_core_from_8_to_16() {
        for (cores, size) in [(1, 8), (2, 8), (3, 12), (4, 16), (64, 16)] {
            assert_eq!(pool_size_for(cores), size, "{cores} cores");
        }
        assert_eq!(default_pool_size(), pool_size_for(cores()));
    }

    #[test]
    fn one_password_is_hashed_at_a_time_per_two_cores_unless_configured() {
        for (cores, at_once) in [(1, 1), (2, 1), (3, 1), (4, 2), (16, 8)] {
            assert_eq!(default_password_hashes(cores), at_once, "{cores} cores");
        }
        assert_eq!(password_hashes(None), Ok(default_password_hashes(cores())));
        assert_eq!(password_hashes(Some("2".into())), Ok(2));
        let zero = password_hashes(Some("0".into())).unwrap_err();
        assert!(zero.contains("MEDBOOK_PASSWORD_HASHES"), "{zero}");
        assert_eq!(password_hashes(Some("256".into())), Ok(256));
        assert!(password_hashes(Some("18446744073709551615".into())).is_err());
        assert!(password_hashes(Some("two".into())).is_err());
    }
}
