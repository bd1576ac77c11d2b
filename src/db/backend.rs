//! Where the services' behaviour differs by database (vaultwarden's `db_run!` idea): write
//! transactions and row locks, which diesel's `MultiConnection` cannot express. (The rest of
//! `db` also looks inside `DbConn`, for connection set-up, SQLite group commit and
//! [`on_backend!`](crate::on_backend), without changing what a statement does.)

use diesel::connection::{AnsiTransactionManager, SimpleConnection, TransactionManager};
use diesel::prelude::*;

use super::group_commit::SQLITE_WRITERS;
use super::DbConn;
use crate::models::user::UserStanding;
use crate::schema::users;

/// Runs `f` in a write transaction.
///
/// PostgreSQL: an ordinary `BEGIN` (READ COMMITTED); row locks are taken explicitly where
/// needed. SQLite: `BEGIN IMMEDIATE`, which takes the database's single write lock up front,
/// so a transaction that reads before it writes can never fail half-way with
/// `SQLITE_BUSY_SNAPSHOT`; waiting for the lock is bounded by `busy_timeout`. The writes of
/// this process that wait at the same time share that transaction, each in a savepoint, and
/// one commit (group commit: the private module `db::group_commit`). Nested in another transaction it is a savepoint, on
/// both backends. Its commit waits for the disk.
pub fn write_transaction<T, E, F>(conn: &mut DbConn, f: F) -> Result<T, E>
where
    F: FnOnce(&mut DbConn) -> Result<T, E> + Send,
    T: Send,
    E: From<diesel::result::Error> + Send,
{
    write(conn, true, f)
}

/// [`write_transaction`] whose commit does not wait for the disk, where that loses nothing:
/// for a row whose only purpose is to be seen by other transactions at once, and which is
/// made durable by the later transaction that builds on it.
///
/// PostgreSQL: `SET LOCAL synchronous_commit = off` (this transaction only). Its commit is
/// visible at once; its WAL is flushed within a fraction of a second, or by the next durable
/// commit, since WAL is flushed in order: a transaction that read or changed the row commits
/// after it and its flush covers it. SQLite: the batch it commits in runs with `synchronous
/// = NORMAL` unless another write of the batch must be durable; in WAL mode the commit is
/// visible at once and the next durable commit's sync of the WAL (written in order) carries
/// it to the disk. On both, a crash can lose the row only if nothing durable built on it yet.
/// Nested in another transaction it is an ordinary savepoint: the outer commit decides.
pub fn write_transaction_without_waiting_for_disk<T, E, F>(conn: &mut DbConn, f: F) -> Result<T, E>
where
    F: FnOnce(&mut DbConn) -> Result<T, E> + Send,
    T: Send,
    E: From<diesel::result::Error> + Send,
{
    write(conn, false, f)
}

fn write<T, E, F>(conn: &mut DbConn, durable: bool, f: F) -> Result<T, E>
where
    F: FnOnce(&mut DbConn) -> Result<T, E> + Send,
    T: Send,
    E: From<diesel::result::Error> + Send,
{
    // Nested in another write transaction: a savepoint (SQLite's write lock is already held).
    if in_transaction(conn) {
        return conn.transaction(f);
    }
    match conn {
        DbConn::Pg(_) if durable => conn.transaction(f),
        // One round trip for both (a `SET LOCAL` after diesel's `BEGIN` was one more).
        DbConn::Pg(_) => {
            pg_transaction_begun_with(conn, "BEGIN; SET LOCAL synchronous_commit = off", f)
        }
        // This process's SQLite writers queue in-process instead of polling the file lock with
        // `busy_timeout`'s sleeps (which cost up to tens of milliseconds per wait under load),
        // and the writes waiting together share one commit; `busy_timeout` still covers
        // writers in other processes.
        DbConn::Sqlite(_) => SQLITE_WRITERS.write(conn, durable, f),
    }
}

/// diesel's `Connection::transaction` on PostgreSQL, opened by `begin` instead of `BEGIN`
/// (through `DbConn` the opening statement cannot be chosen). `begin` must start with `BEGIN`.
fn pg_transaction_begun_with<T, E, F>(conn: &mut DbConn, begin: &str, f: F) -> Result<T, E>
where
    F: FnOnce(&mut DbConn) -> Result<T, E>,
    E: From<diesel::result::Error>,
{
    type Manager = <DbConn as Connection>::TransactionManager;
    let DbConn::Pg(pg) = conn else {
        unreachable!("a PostgreSQL transaction on PostgreSQL")
    };
    if let Err(err) = AnsiTransactionManager::begin_transaction_sql(pg, begin) {
        // If `BEGIN` ran and a statement after it failed, the server holds an aborted
        // transaction that diesel does not know about: end it (a no-op otherwise).
        let _ = pg.batch_execute("ROLLBACK");
        return Err(err.into());
    }
    // As diesel's own `TransactionManager::transaction` from here on.
    match f(conn) {
        Ok(value) => {
            Manager::commit_transaction(conn)?;
            Ok(value)
        }
        Err(err) => match Manager::rollback_transaction(conn) {
            Ok(()) | Err(diesel::result::Error::BrokenTransactionManager) => Err(err),
            Err(rollback) => Err(rollback.into()),
        },
    }
}

/// Whether `conn` is inside a transaction (diesel's own bookkeeping).
fn in_transaction(conn: &mut DbConn) -> bool {
    <DbConn as Connection>::TransactionManager::transaction_manager_status_mut(conn)
        .transaction_depth()
        .is_ok_and(|depth| depth.is_some())
}

/// Locks the given users' rows for the rest of the transaction, in ascending id order (so two
/// bookings can never wait on each other in a cycle), and returns, of the rows that exist,
/// what the booking checks (id, role, active).
///
/// PostgreSQL: `SELECT … FOR NO KEY UPDATE`, one row at a time in id order. That excludes
/// other bookings and reschedules of these users and a change of their rows (a deactivation),
/// but not the `KEY SHARE` locks of foreign-key checks: an insert that references a user (a
/// status change's history row, a token, a prescription) does not wait for a booking.
/// `FOR UPDATE` made it wait, and a status change, which holds its appointment's row when its
/// history row is checked, deadlocked with a reschedule of that appointment, which holds the
/// user's row when it updates the appointment. SQLite: the surrounding [`write_transaction`]
/// already holds the database's only write lock, so a plain read is enough. Must be called
/// inside [`write_transaction`].
pub fn lock_users_in_order(conn: &mut DbConn, ids: &[i32]) -> QueryResult<Vec<UserStanding>> {
    let mut ids = ids.to_vec();
    ids.sort_unstable();
    ids.dedup();
    let mut rows = Vec::with_capacity(ids.len());
    for id in ids {
        let user = users::table.find(id);
        let row = match conn {
            DbConn::Pg(pg) => user
                .select(UserStanding::as_select())
                .for_no_key_update()
                .first(pg)
                .optional()?,
            DbConn::Sqlite(sqlite) => user
                .select(UserStanding::as_select())
                .first(sqlite)
                .optional()?,
        };
        rows.extend(row);
    }
    Ok(rows)
}

#[cfg(test)]
mod tests {
    use super::*;
    use diesel::dsl::sql;
    use diesel::sql_types::Integer;

    /// A connection to the test server's admin database; `None` (skip) if it is unreachable
    /// outside CI, as in `tests/common`.
    fn postgres() -> Option<DbConn> {
        let url = std::env::var("MEDBOOK_TEST_PG_URL")
            .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".to_owned());
        match diesel::PgConnection::establish(&url) {
            Ok(conn) => Some(DbConn::Pg(conn)),
            Err(e) if !std::env::var("CI").is_ok_and(|v| v == "true" || v == "1") => {
                eprintln!("SKIPPED PostgreSQL test: cannot connect to {url}: {e} (set CI=true to require it)");
                None
            }
            Err(e) => panic!("CI=true but PostgreSQL at {url} is unreachable: {e}"),
        }
    }

    #[test]
    fn postgres_a_transaction_whose_opening_statements_fail_leaves_nothing_open() {
        let Some(mut conn) = postgres() else { return };
        // BEGIN runs, the statement after it fails: the server's transaction is ended too.
        let failed = pg_transaction_begun_with(
            &mut conn,
            "BEGIN; SELECT medbook_no_such_function()",
            |_| Ok::<_, diesel::result::Error>(()),
        );
        assert!(failed.is_err());
        assert!(!in_transaction(&mut conn));
        let one: i32 = diesel::select(sql::<Integer>("1"))
            .get_result(&mut conn)
            .expect("not in an aborted transaction");
        assert_eq!(one, 1);
        // Commits what its work did and rolls back on the work's error, as diesel's own.
        let value = pg_transaction_begun_with(&mut conn, "BEGIN", |conn| {
            diesel::select(sql::<Integer>("2")).get_result::<i32>(conn)
        });
        assert_eq!(value, Ok(2));
        let rolled_back = pg_transaction_begun_with(&mut conn, "BEGIN", |_| {
            Err::<(), _>(diesel::result::Error::NotFound)
        });
        assert_eq!(rolled_back, Err(diesel::result::Error::NotFound));
        assert!(!in_transaction(&mut conn));
    }
}
