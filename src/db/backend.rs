//! Where the services' behaviour differs by database (vaultwarden's `db_run!` idea): write
//! transactions and row locks, which diesel's `MultiConnection` cannot express. (The rest of
//! `db` also looks inside `DbConn`, for connection set-up, SQLite group commit and
//! [`on_backend!`](crate::on_backend), without changing what a statement does.)

use diesel::connection::{SimpleConnection, TransactionManager};
use diesel::prelude::*;

use super::group_commit::SQLITE_WRITERS;
use super::DbConn;
use crate::models::user::User;
use crate::schema::users;

/// Runs `f` in a write transaction.
///
/// PostgreSQL: an ordinary `BEGIN` (READ COMMITTED); row locks are taken explicitly where
/// needed. SQLite: `BEGIN IMMEDIATE`, which takes the database's single write lock up front,
/// so a transaction that reads before it writes can never fail half-way with
/// `SQLITE_BUSY_SNAPSHOT`; waiting for the lock is bounded by `busy_timeout`. The writes of
/// this process that wait at the same time share that transaction, each in a savepoint, and
/// one commit ([`super::group_commit`]). Nested in another transaction it is a savepoint, on
/// both backends.
pub fn write_transaction<T, E, F>(conn: &mut DbConn, f: F) -> Result<T, E>
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
        DbConn::Pg(_) => conn.transaction(f),
        // This process's SQLite writers queue in-process instead of polling the file lock with
        // `busy_timeout`'s sleeps (which cost up to tens of milliseconds per wait under load),
        // and the writes waiting together share one commit; `busy_timeout` still covers
        // writers in other processes.
        DbConn::Sqlite(_) => SQLITE_WRITERS.write(conn, f),
    }
}

fn in_transaction(conn: &mut DbConn) -> bool {
    transaction_depth(conn) > 0
}

/// How many transactions deep `conn` is (0: none; more than 1: in savepoints).
fn transaction_depth(conn: &mut DbConn) -> u32 {
    <DbConn as Connection>::TransactionManager::transaction_manager_status_mut(conn)
        .transaction_depth()
        .ok()
        .flatten()
        .map_or(0, |depth| depth.get())
}

/// Locks the given users' rows for the rest of the transaction, in ascending id order (so two
/// bookings can never wait on each other in a cycle), and returns the rows that exist.
///
/// PostgreSQL: `SELECT … FOR UPDATE`, one row at a time in id order. SQLite: the surrounding
/// [`write_transaction`] already holds the database's only write lock, so a plain read is
/// enough. Must be called inside [`write_transaction`].
pub fn lock_users_in_order(conn: &mut DbConn, ids: &[i32]) -> QueryResult<Vec<User>> {
    let mut ids = ids.to_vec();
    ids.sort_unstable();
    ids.dedup();
    let mut rows = Vec::with_capacity(ids.len());
    for id in ids {
        let row = match conn {
            DbConn::Pg(pg) => users::table
                .find(id)
                .for_update()
                .first::<User>(pg)
                .optional()?,
            DbConn::Sqlite(sqlite) => users::table.find(id).first::<User>(sqlite).optional()?,
        };
        rows.extend(row);
    }
    Ok(rows)
}

/// Lets the surrounding write transaction commit without waiting for the disk, where that
/// loses nothing: for a row whose only purpose is to be seen by other transactions at once,
/// and which is made durable by the later transaction that builds on it.
///
/// PostgreSQL: `SET LOCAL synchronous_commit = off` (this transaction only). Its commit is
/// visible at once; its WAL is flushed within a fraction of a second, or by the next durable
/// commit, since WAL is flushed in order: a transaction that read or changed the row commits
/// after it and its flush covers it. A crash can lose the row only if nothing durable built on
/// it yet. SQLite: nothing (its `synchronous` setting is per connection, and the writes that
/// wait together share one commit). Called inside [`write_transaction`]; nested in another
/// transaction it does nothing, since the setting would reach the outer transaction's commit.
pub fn commit_without_waiting_for_disk(conn: &mut DbConn) -> QueryResult<()> {
    if transaction_depth(conn) != 1 {
        return Ok(());
    }
    match conn {
        DbConn::Pg(pg) => pg.batch_execute("SET LOCAL synchronous_commit = off"),
        DbConn::Sqlite(_) => Ok(()),
    }
}
