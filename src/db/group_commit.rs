//! Group commit for SQLite's single writer.
//!
//! SQLite has one write lock per database, and with `synchronous = FULL` every commit waits
//! for the disk. Taking turns (one transaction, one fsync, the next) makes the disk the
//! ceiling however many requests are waiting. Instead, this process's writers queue here, and
//! whoever finds no batch running becomes the *leader*: it takes every write waiting, runs
//! them one after the other inside one `BEGIN IMMEDIATE` transaction, each in its own
//! savepoint, and commits once. Then it wakes their threads.
//!
//! The batches of a pool's database run on one connection kept for them (the pool's
//! [`Writer`]), whichever thread leads. In WAL mode a connection drops its whole page cache
//! when it finds that another connection committed since its last read, so a batch run on its
//! leader's own connection began by reading its pages from the file again whenever the
//! previous batch had another leader (at 4 clients, 22 `pread` calls per booking against 3.5
//! at one client). The kept connection sees only its own commits, and its cache stays. A
//! database without a writer (a connection opened outside a pool, an in-memory database, or a
//! writer that could not open its connection) runs its batches on the leader's connection.
//!
//! What each write sees and does is exactly what it would see and do alone: the writes run
//! serially under the database's write lock (the lock that makes every check-then-write on
//! SQLite safe), each sees the writes before it, and a write that fails is rolled back to its
//! savepoint without touching the others. What changes is only when they become durable:
//! together, at the batch's commit, and no thread answers before that commit returned. If the
//! commit (or `BEGIN`) fails, every write of the batch fails with that error and none is
//! acknowledged.
//!
//! Only writes to the same database (from the same pool) share a batch: every SQLite
//! connection medbook opens can name its database ([`register`]); a connection that cannot
//! (one opened elsewhere) commits alone.
//!
//! A write waiting here runs on the leader's thread, borrowing the waiting thread's data; the
//! waiting thread does not return (and its borrows stay valid) until the leader has marked its
//! write finished. That is the one `unsafe` of this module.

use std::any::Any;
use std::fmt;
use std::panic::{self, AssertUnwindSafe};
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError, Weak};
use std::time::{Duration, Instant};

use diesel::connection::{AnsiTransactionManager, SimpleConnection, TransactionManager};
use diesel::result::{ConnectionError, Error};
use diesel::sqlite::SqliteConnection;
use diesel::{Connection, QueryResult, RunQueryDsl};

use super::DbConn;

diesel::define_sql_function! {
    /// The process-wide number of the SQLite database a connection is on (see [`register`]).
    fn medbook_database() -> diesel::sql_types::BigInt;
}

/// The SQLite databases this process opened, each with the writer of the pool that opened it
/// (none for a connection opened outside a pool, or in memory); a number is its index + 1.
/// Two pools on one file get two numbers, so that each pool's writes run on its own writer,
/// with its own settings (`busy_timeout`, say), and the batches of one number, on one
/// connection: they are still never run at once, since one batch at a time leads.
/// In-memory databases are private to their connection: each gets a new number.
static DATABASES: Mutex<Vec<Database>> = Mutex::new(Vec::new());

struct Database {
    /// The canonical path.
    path: String,
    /// The writer of the pool that opened it. Weak: the pool owns it, and it closes with the
    /// pool. (While this is kept, no other writer can have its address.)
    writer: Option<Weak<Writer>>,
}

impl Database {
    fn is(&self, path: &str, writer: Option<&Arc<Writer>>) -> bool {
        self.path == path
            && match (&self.writer, writer) {
                (Some(known), Some(writer)) => std::ptr::eq(known.as_ptr(), Arc::as_ptr(writer)),
                (None, None) => true,
                _ => false,
            }
    }
}

/// Lets a new connection to `path` name its database (and the pool it came from, by `writer`,
/// its pool's writer), so that only writes to one database share a batch, and the batch runs
/// on that writer.
pub(super) fn register(
    conn: &SqliteConnection,
    path: &str,
    writer: Option<&Arc<Writer>>,
) -> QueryResult<()> {
    let in_memory = path.is_empty() || path == ":memory:" || path.contains("mode=memory");
    // Another connection could not open an in-memory database: its batches run on their
    // leader's connection.
    let writer = writer.filter(|_| !in_memory);
    let key = std::fs::canonicalize(path)
        .map(|p| p.to_string_lossy().into_owned())
        .unwrap_or_else(|_| path.to_owned());
    let number = {
        let mut databases = DATABASES.lock().unwrap_or_else(PoisonError::into_inner);
        match databases.iter().position(|known| known.is(&key, writer)) {
            Some(i) if !in_memory => i + 1,
            _ => {
                databases.push(Database {
                    path: key,
                    writer: writer.map(Arc::downgrade),
                });
                databases.len()
            }
        }
    } as i64;
    medbook_database_utils::register_impl(conn, move || number)
}

/// The connection that runs the write batches of one pool's database (see the module's
/// documentation), opened when a batch first needs it. The pool owns it: it closes with the
/// pool.
pub struct Writer {
    open: Box<dyn Fn() -> Result<DbConn, ConnectionError> + Send + Sync>,
    conn: Mutex<Option<DbConn>>,
    /// When the connection last failed to open, while it has not opened since. Taken only
    /// under `conn`'s lock.
    failed_at: Mutex<Option<Instant>>,
    /// How long after a failed open the next batch tries again.
    reopen_after: Duration,
}

/// How long after a writer's connection failed to open the next batch tries again: a cause
/// that lasts (no file descriptor left, say) costs one attempt and one log line a second, not
/// one per batch.
const REOPEN_AFTER: Duration = Duration::from_secs(1);

impl Writer {
    /// A writer that opens its connection with `open` (with the pool's settings).
    pub(super) fn new(
        open: impl Fn() -> Result<DbConn, ConnectionError> + Send + Sync + 'static,
    ) -> Writer {
        Writer {
            open: Box::new(open),
            conn: Mutex::new(None),
            failed_at: Mutex::new(None),
            reopen_after: REOPEN_AFTER,
        }
    }

    /// The connection, opened first if it is not open; `None` if it cannot be opened, or if
    /// it failed to open less than `reopen_after` ago (then it is not tried): the batch runs
    /// on its leader's connection.
    pub(super) fn connection(&self) -> Option<MutexGuard<'_, Option<DbConn>>> {
        let mut conn = self.conn.lock().unwrap_or_else(PoisonError::into_inner);
        if conn.is_none() {
            let mut failed_at = self
                .failed_at
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            if failed_at.is_some_and(|at| at.elapsed() < self.reopen_after) {
                return None;
            }
            match (self.open)() {
                Ok(opened) => {
                    if failed_at.take().is_some() {
                        log::info!("SQLite: the connection for write batches opened");
                    }
                    *conn = Some(opened);
                }
                Err(err) => {
                    if failed_at.is_none() {
                        log::warn!(
                            "SQLite: the connection for write batches did not open ({err}); \
                             batches run on their leaders' connections, and it is tried again \
                             every {} ms",
                            self.reopen_after.as_millis()
                        );
                    } else {
                        log::debug!(
                            "SQLite: the connection for write batches did not open ({err})"
                        );
                    }
                    *failed_at = Some(Instant::now());
                    return None;
                }
            }
        }
        Some(conn)
    }
}

impl fmt::Debug for Writer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let open = self.conn.try_lock().map(|conn| conn.is_some());
        f.debug_struct("Writer").field("open", &open.ok()).finish()
    }
}

/// The live writer of database `number`, if it has one.
fn writer_of(number: i64) -> Option<Arc<Writer>> {
    let databases = DATABASES.lock().unwrap_or_else(PoisonError::into_inner);
    let index = usize::try_from(number).ok()?.checked_sub(1)?;
    databases.get(index)?.writer.as_ref()?.upgrade()
}

/// The database `conn` is on, if it was [`register`]ed.
fn database_of(conn: &mut DbConn) -> Option<i64> {
    match conn {
        DbConn::Sqlite(sqlite) => diesel::select(medbook_database()).get_result(sqlite).ok(),
        DbConn::Pg(_) => None,
    }
}

/// At most this many writes share one commit (bounds the wait of the first of them).
const MAX_BATCH: usize = 64;

/// One queued write, as the leader runs it: returns whether it succeeded (its savepoint is
/// released) or failed (rolled back to it). Its typed result goes to the waiting thread
/// through the closure's own captures.
type Work<'a> = dyn FnMut(&mut DbConn) -> bool + Send + 'a;

/// How a write of a batch ended, from the leader to the waiting thread.
enum Outcome {
    /// Not run yet.
    Pending,
    /// Its savepoint was released and the batch committed (or it failed by itself and was
    /// rolled back to its savepoint: its closure holds its error).
    Finished,
    /// The batch's `BEGIN`, a savepoint command or the `COMMIT` failed: this error instead.
    BatchFailed(Error),
    /// Its closure panicked on the leader's thread; the waiting thread resumes the panic.
    Panicked(Box<dyn Any + Send>),
}

/// A queued write: its database, the work, and where the leader reports its outcome. The
/// last two live on the waiting thread's stack.
#[derive(Clone, Copy)]
struct Entry {
    database: Option<i64>,
    /// Whether its commit must wait for the disk (see [`GroupCommit::write`]).
    durable: bool,
    work: *mut Work<'static>,
    outcome: *mut Outcome,
}

// SAFETY: the pointers are dereferenced only by the leader while the waiting thread is blocked
// in `GroupCommit::write` until the leader has finished the entry, and the work is `Send`.
unsafe impl Send for Entry {}

struct Queue {
    leader: bool,
    waiting: Vec<Entry>,
}

/// The writers of one process (one database per process).
pub(super) struct GroupCommit {
    queue: Mutex<Queue>,
    finished: Condvar,
    /// Batches run, and the writes in them (for `/metrics`: their ratio is the batch size).
    batches: AtomicU64,
    writes: AtomicU64,
}

pub(super) static SQLITE_WRITERS: GroupCommit = GroupCommit::new();

impl GroupCommit {
    const fn new() -> GroupCommit {
        GroupCommit {
            queue: Mutex::new(Queue {
                leader: false,
                waiting: Vec::new(),
            }),
            finished: Condvar::new(),
            batches: AtomicU64::new(0),
            writes: AtomicU64::new(0),
        }
    }

    /// Batches run so far, and the writes in them.
    pub(super) fn counts(&self) -> (u64, u64) {
        (self.batches.load(Relaxed), self.writes.load(Relaxed))
    }

    fn lock(&self) -> MutexGuard<'_, Queue> {
        self.queue.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Runs `f` in a write transaction shared with whatever other writes are waiting, and
    /// returns once that transaction committed or failed. The batch runs on its database's
    /// [`Writer`], or on `conn` if the database has none and this thread leads the batch.
    ///
    /// A batch commits with `synchronous = FULL` (it waits for the disk) if any of its writes
    /// is `durable`, else with `NORMAL`: in WAL mode that commit is visible at once and
    /// reaches the disk with the next FULL commit's sync of the WAL, which is written in
    /// order (or with the next checkpoint).
    pub(super) fn write<T, E, F>(&self, conn: &mut DbConn, durable: bool, f: F) -> Result<T, E>
    where
        F: FnOnce(&mut DbConn) -> Result<T, E> + Send,
        T: Send,
        E: From<Error> + Send,
    {
        let mut f = Some(f);
        let mut result: Option<Result<T, E>> = None;
        let mut work = |conn: &mut DbConn| {
            let f = f.take().expect("a write runs once");
            let r = f(conn);
            let ok = r.is_ok();
            result = Some(r);
            ok
        };
        let database = database_of(conn);
        let mut outcome = Outcome::Pending;
        let outcome_ptr: *mut Outcome = &mut outcome;
        {
            let work: &mut Work<'_> = &mut work;
            // SAFETY: the lifetime is erased only for the queue; this function does not return
            // before the entry is finished (the loop below), so the borrow outlives every use.
            let work: *mut Work<'static> = unsafe { std::mem::transmute(work) };
            let mut queue = self.lock();
            queue.waiting.push(Entry {
                database,
                durable,
                work,
                outcome: outcome_ptr,
            });
            loop {
                // SAFETY: `outcome` is written by a leader only under the queue lock, held here.
                if !matches!(unsafe { &*outcome_ptr }, Outcome::Pending) {
                    break;
                }
                if !queue.leader {
                    queue.leader = true;
                    // The oldest writes to this thread's database (on this thread's
                    // connection); a write whose database is unknown goes alone.
                    let mut batch = Vec::new();
                    queue.waiting.retain(|entry| {
                        let take = batch.len() < MAX_BATCH
                            && match database {
                                Some(_) => entry.database == database,
                                None => std::ptr::eq(entry.outcome, outcome_ptr),
                            };
                        if take {
                            batch.push(*entry);
                        }
                        !take
                    });
                    drop(queue);
                    // One leader at a time takes the writer's lock (besides instrumentation,
                    // `DbPool::with_sqlite_writer`), so it does not wait for it.
                    let writer = database.and_then(writer_of);
                    let mut kept = writer.as_deref().and_then(Writer::connection);
                    let batch_conn = match kept.as_mut().and_then(|kept| kept.as_mut()) {
                        Some(kept) => kept,
                        None => &mut *conn,
                    };
                    // A panic outside the writes' own closures (in diesel, say) must not leave
                    // the queue without a leader and the batch's threads waiting forever.
                    let outcomes =
                        panic::catch_unwind(AssertUnwindSafe(|| run_batch(batch_conn, &batch)))
                            .unwrap_or_else(|_| {
                                rollback(batch_conn);
                                batch
                                    .iter()
                                    .map(|_| failed(&Error::BrokenTransactionManager))
                                    .collect()
                            });
                    // A writer left inside a transaction it could not end is closed; the next
                    // batch opens a new one.
                    if let Some(slot) = kept.as_mut() {
                        if slot.as_mut().is_some_and(is_broken) {
                            **slot = None;
                        }
                    }
                    drop(kept);
                    self.batches.fetch_add(1, Relaxed);
                    self.writes.fetch_add(batch.len() as u64, Relaxed);
                    queue = self.lock();
                    for (entry, result) in batch.iter().zip(outcomes) {
                        // SAFETY: the entry's thread is blocked in this function (under the
                        // queue lock now held) until it sees a non-pending outcome.
                        unsafe { *entry.outcome = result };
                    }
                    queue.leader = false;
                    self.finished.notify_all();
                    continue;
                }
                queue = self.finished.wait(queue).unwrap_or_else(|e| e.into_inner());
            }
        }
        // SAFETY: finished: no leader touches the entry any more.
        match std::mem::replace(unsafe { &mut *outcome_ptr }, Outcome::Pending) {
            Outcome::Finished => result.expect("a finished write has a result"),
            Outcome::BatchFailed(err) => Err(err.into()),
            Outcome::Panicked(payload) => panic::resume_unwind(payload),
            Outcome::Pending => unreachable!("left the loop with a pending write"),
        }
    }
}

/// Runs the batch in one `BEGIN IMMEDIATE … COMMIT`, each write in its own savepoint.
///
/// Every batch sets the `synchronous` level its commit needs right before its `BEGIN` (SQLite
/// refuses to change it inside a transaction), so a durable batch never depends on how an
/// earlier batch left the connection: if the setting fails, the batch does not begin.
fn run_batch(conn: &mut DbConn, batch: &[Entry]) -> Vec<Outcome> {
    let DbConn::Sqlite(inner) = conn else {
        unreachable!("group commit is for SQLite")
    };
    let durable = batch.iter().any(|entry| entry.durable);
    let begin = if durable {
        "PRAGMA synchronous = FULL; BEGIN IMMEDIATE"
    } else {
        "PRAGMA synchronous = NORMAL; BEGIN IMMEDIATE"
    };
    let outcomes = match AnsiTransactionManager::begin_transaction_sql(inner, begin) {
        Ok(()) => run_writes(conn, batch),
        Err(err) => batch.iter().map(|_| failed(&err)).collect(),
    };
    if !durable {
        // Back to the connection's setting (FULL), for anything that commits outside a batch.
        // Durability does not depend on it: the next durable batch sets FULL itself.
        if let Err(err) = conn.batch_execute("PRAGMA synchronous = FULL") {
            log::warn!("SQLite synchronous = FULL not restored after a batch: {err}");
        }
    }
    outcomes
}

/// The batch's writes and its commit, inside the transaction [`run_batch`] began.
fn run_writes(conn: &mut DbConn, batch: &[Entry]) -> Vec<Outcome> {
    let mut outcomes = Vec::with_capacity(batch.len());
    for entry in batch {
        // SAFETY: see `Entry`: the waiting thread is blocked until this entry is finished.
        let work = unsafe { &mut *entry.work };
        let mut panicked = None;
        let step = conn.transaction::<(), Error, _>(|conn| {
            match panic::catch_unwind(AssertUnwindSafe(|| work(conn))) {
                Ok(true) => Ok(()),
                Ok(false) => Err(Error::RollbackTransaction),
                Err(payload) => {
                    panicked = Some(payload);
                    Err(Error::RollbackTransaction)
                }
            }
        });
        match (step, panicked) {
            (_, Some(payload)) => outcomes.push(Outcome::Panicked(payload)),
            (Ok(()) | Err(Error::RollbackTransaction), None) => outcomes.push(Outcome::Finished),
            // The savepoint itself failed: the transaction cannot be trusted. Every write of
            // the batch fails with this error (none is acknowledged).
            (Err(err), None) => {
                rollback(conn);
                return batch.iter().map(|_| failed(&err)).collect();
            }
        }
    }
    if let Err(err) = <DbConn as Connection>::TransactionManager::commit_transaction(conn) {
        rollback(conn);
        return batch.iter().map(|_| failed(&err)).collect();
    }
    outcomes
}

/// Whether `conn` is left in a transaction diesel could not end.
fn is_broken(conn: &mut DbConn) -> bool {
    <DbConn as Connection>::TransactionManager::is_broken_transaction_manager(conn)
}

fn rollback(conn: &mut DbConn) {
    if let Err(err) = <DbConn as Connection>::TransactionManager::rollback_transaction(conn) {
        log::error!("rollback of a failed write batch failed: {err}");
    }
}

/// The batch's error for one of its writes (diesel's errors are not `Clone`): the same kind
/// and message, which is all the error classification reads.
fn failed(err: &Error) -> Outcome {
    Outcome::BatchFailed(match err {
        Error::DatabaseError(kind, info) => {
            Error::DatabaseError(*kind, Box::new(info.message().to_owned()))
        }
        other => Error::QueryBuilderError(other.to_string().into()),
    })
}

#[cfg(test)]
mod tests {
    use std::sync::mpsc;
    use std::thread::{self, ThreadId};
    use std::time::Duration;

    use diesel::connection::SimpleConnection;
    use diesel::dsl::sql;
    use diesel::prelude::*;
    use diesel::sqlite::SqliteConnection;

    use super::*;

    struct Db {
        _dir: tempfile::TempDir,
        path: String,
        busy_ms: u32,
    }

    impl Db {
        fn new() -> Db {
            let dir = tempfile::tempdir().unwrap();
            let path = dir.path().join("t.db").to_string_lossy().into_owned();
            let db = Db {
                _dir: dir,
                path,
                busy_ms: 5000,
            };
            db.conn()
                .batch_execute("PRAGMA journal_mode = WAL; CREATE TABLE t (n INTEGER PRIMARY KEY)")
                .unwrap();
            db
        }

        fn conn(&self) -> DbConn {
            open(&self.path, self.busy_ms, None).unwrap()
        }

        /// A connection that offers `writer` for the database, as the pool's do.
        fn conn_offering(&self, writer: &Arc<Writer>) -> DbConn {
            open(&self.path, self.busy_ms, Some(writer)).unwrap()
        }

        /// A writer for this database, as the pool makes one.
        fn writer(&self) -> Arc<Writer> {
            let (path, busy_ms) = (self.path.clone(), self.busy_ms);
            Arc::new(Writer::new(move || open(&path, busy_ms, None)))
        }
    }

    fn open(
        path: &str,
        busy_ms: u32,
        writer: Option<&Arc<Writer>>,
    ) -> Result<DbConn, ConnectionError> {
        let sqlite = SqliteConnection::establish(path)?;
        register(&sqlite, path, writer).map_err(ConnectionError::CouldntSetupConfiguration)?;
        let mut conn = DbConn::Sqlite(sqlite);
        conn.batch_execute(&format!("PRAGMA busy_timeout = {busy_ms}"))
            .map_err(ConnectionError::CouldntSetupConfiguration)?;
        Ok(conn)
    }

    impl Db {
        fn rows(&self) -> Vec<i64> {
            let mut conn = self.conn();
            let all: String = diesel::select(sql::<diesel::sql_types::Text>(
                "(SELECT coalesce(group_concat(n, ','), '') FROM (SELECT n FROM t ORDER BY n))",
            ))
            .get_result(&mut conn)
            .unwrap();
            all.split(',')
                .filter(|s| !s.is_empty())
                .map(|s| s.parse().unwrap())
                .collect()
        }
    }

    fn insert(conn: &mut DbConn, n: i64) -> Result<ThreadId, Error> {
        conn.batch_execute(&format!("INSERT INTO t (n) VALUES ({n})"))?;
        Ok(thread::current().id())
    }

    fn waiting(writers: &GroupCommit) -> usize {
        writers.lock().waiting.len()
    }

    /// Starts a write that holds the batch (as its leader) until `release` is sent.
    fn held_leader(
        writers: &'static GroupCommit,
        db: &Db,
    ) -> (mpsc::Sender<()>, thread::JoinHandle<()>) {
        let (release, hold) = mpsc::channel::<()>();
        let (started, running) = mpsc::channel();
        let mut conn = db.conn();
        let leader = thread::spawn(move || {
            writers
                .write(&mut conn, true, move |conn| {
                    started.send(()).unwrap();
                    hold.recv().unwrap();
                    insert(conn, 0)
                })
                .unwrap();
        });
        running.recv().unwrap();
        (release, leader)
    }

    /// A queued write's thread: its id and what its write returned (or its panic).
    type Queued<T> = thread::JoinHandle<(ThreadId, thread::Result<Result<T, Error>>)>;

    /// Writes `ns` from one thread each, once all of them wait behind the held leader.
    fn queued_writes<T: Send + 'static>(
        writers: &'static GroupCommit,
        db: &Db,
        ns: Vec<i64>,
        write: fn(&mut DbConn, i64) -> Result<T, Error>,
    ) -> Vec<Queued<T>> {
        queued_writes_of(writers, || db.conn(), ns, |_| true, write)
    }

    /// [`queued_writes`] on connections from `connect`, each durable or not as `durable` says.
    fn queued_writes_of<T: Send + 'static>(
        writers: &'static GroupCommit,
        connect: impl Fn() -> DbConn,
        ns: Vec<i64>,
        durable: fn(i64) -> bool,
        write: fn(&mut DbConn, i64) -> Result<T, Error>,
    ) -> Vec<Queued<T>> {
        let count = waiting(writers) + ns.len();
        let handles: Vec<_> = ns
            .into_iter()
            .map(|n| {
                let mut conn = connect();
                thread::spawn(move || {
                    let me = thread::current().id();
                    let result = panic::catch_unwind(AssertUnwindSafe(|| {
                        writers.write(&mut conn, durable(n), |conn| write(conn, n))
                    }));
                    (me, result)
                })
            })
            .collect();
        while waiting(writers) < count {
            thread::sleep(Duration::from_millis(5));
        }
        handles
    }

    /// Lets the held leader finish, then waits for the queued writes.
    fn settle<T>(
        (release, leader): (mpsc::Sender<()>, thread::JoinHandle<()>),
        queued: Vec<Queued<T>>,
    ) -> Vec<(ThreadId, thread::Result<Result<T, Error>>)> {
        release.send(()).unwrap();
        leader.join().unwrap();
        queued.into_iter().map(|h| h.join().unwrap()).collect()
    }

    /// The connection's `synchronous` level (2: FULL, 1: NORMAL), as a write sees it.
    fn synchronous(conn: &mut DbConn) -> Result<i32, Error> {
        diesel::select(sql::<diesel::sql_types::Integer>(
            "synchronous FROM pragma_synchronous",
        ))
        .get_result(conn)
    }

    #[test]
    fn a_batch_waits_for_the_disk_if_any_of_its_writes_must() {
        static WRITERS: GroupCommit = GroupCommit::new();
        let db = Db::new();
        let mut conn = db.conn();
        // Alone: a durable write commits with FULL, one that only has to be seen with NORMAL,
        // and the connection is left at FULL either way.
        assert_eq!(WRITERS.write(&mut conn, true, synchronous), Ok(2));
        assert_eq!(WRITERS.write(&mut conn, false, synchronous), Ok(1));
        assert_eq!(synchronous(&mut conn), Ok(2));
        // A batch of three where only the third must be durable: all three commit with FULL.
        let leader = held_leader(&WRITERS, &db);
        let mixed = queued_writes_of(
            &WRITERS,
            || db.conn(),
            vec![1, 2, 3],
            |n| n == 3,
            |conn, _| synchronous(conn),
        );
        for (_, result) in settle(leader, mixed) {
            assert_eq!(result.unwrap(), Ok(2));
        }
        // A batch where none must: NORMAL for all of it (on another database: each held leader
        // writes the same row).
        let other = Db::new();
        let leader = held_leader(&WRITERS, &other);
        let relaxed = queued_writes_of(
            &WRITERS,
            || other.conn(),
            vec![4, 5, 6],
            |_| false,
            |conn, _| synchronous(conn),
        );
        for (_, result) in settle(leader, relaxed) {
            assert_eq!(result.unwrap(), Ok(1));
        }
        assert_eq!(
            WRITERS.counts(),
            (6, 10),
            "two alone, two held leaders, two batches of 3"
        );
        // A durable batch does not rely on how the connection was left: it sets FULL itself.
        conn.batch_execute("PRAGMA synchronous = OFF").unwrap();
        assert_eq!(WRITERS.write(&mut conn, true, synchronous), Ok(2));
    }

    #[test]
    fn a_relaxed_batch_that_cannot_begin_leaves_its_connection_at_full() {
        static WRITERS: GroupCommit = GroupCommit::new();
        let db = Db {
            busy_ms: 0,
            ..Db::new()
        };
        let mut other = db.conn();
        other.batch_execute("BEGIN IMMEDIATE").unwrap();
        let mut conn = db.conn();
        let refused = WRITERS.write(&mut conn, false, |conn| insert(conn, 1));
        assert!(refused.is_err(), "{refused:?}");
        assert_eq!(synchronous(&mut conn), Ok(2));
        other.batch_execute("ROLLBACK").unwrap();
    }

    #[test]
    fn writes_waiting_together_share_one_transaction_and_commit() {
        static WRITERS: GroupCommit = GroupCommit::new();
        let db = Db::new();
        let leader = held_leader(&WRITERS, &db);
        let followers = queued_writes(&WRITERS, &db, (1..=8).collect(), insert);
        let ran_on: Vec<(ThreadId, ThreadId)> = settle(leader, followers)
            .into_iter()
            .map(|(me, result)| (me, result.unwrap().unwrap()))
            .collect();
        // The eight waited together: one of them led the next batch and ran the other seven
        // on its own thread and connection.
        let foreign = ran_on.iter().filter(|(me, on)| me != on).count();
        assert_eq!(foreign, 7, "{ran_on:?}");
        assert_eq!(WRITERS.counts(), (2, 9));
        assert_eq!(db.rows(), (0..=8).collect::<Vec<_>>());
    }

    #[test]
    fn writes_to_different_databases_never_share_a_batch() {
        static WRITERS: GroupCommit = GroupCommit::new();
        let (a, b) = (Db::new(), Db::new());
        let leader = held_leader(&WRITERS, &a);
        let to_a = queued_writes(&WRITERS, &a, vec![1, 2, 3], insert);
        let to_b = queued_writes(&WRITERS, &b, vec![4, 5, 6], insert);
        let threads = |queued: Vec<(ThreadId, thread::Result<Result<ThreadId, Error>>)>| {
            let ran: Vec<(ThreadId, ThreadId)> = queued
                .into_iter()
                .map(|(me, result)| (me, result.unwrap().unwrap()))
                .collect();
            let own: Vec<ThreadId> = ran.iter().map(|(me, _)| *me).collect();
            // Each ran on the thread of a write to its own database (its batch's leader).
            assert!(ran.iter().all(|(_, on)| own.contains(on)), "{ran:?}");
            ran.iter().filter(|(me, on)| me != on).count()
        };
        let ran_a = settle(leader, to_a);
        let ran_b = to_b.into_iter().map(|h| h.join().unwrap()).collect();
        // Still batched: each database's three writes shared one batch.
        assert_eq!(threads(ran_a), 2);
        assert_eq!(threads(ran_b), 2);
        assert_eq!(a.rows(), vec![0, 1, 2, 3]);
        assert_eq!(b.rows(), vec![4, 5, 6]);
    }

    #[test]
    fn a_failing_write_is_rolled_back_alone() {
        static WRITERS: GroupCommit = GroupCommit::new();
        let db = Db::new();
        let leader = held_leader(&WRITERS, &db);
        // 13 inserts its row, then fails: only its own savepoint is rolled back.
        let followers = queued_writes(&WRITERS, &db, vec![11, 12, 13, 14], |conn, n| {
            insert(conn, n)?;
            if n == 13 {
                return Err(Error::NotFound);
            }
            Ok(n)
        });
        let results: Vec<_> = settle(leader, followers)
            .into_iter()
            .map(|(_, result)| result.unwrap())
            .collect();
        let mut ok: Vec<i64> = results
            .iter()
            .filter_map(|r| r.as_ref().ok())
            .copied()
            .collect();
        ok.sort_unstable();
        assert_eq!(ok, vec![11, 12, 14], "{results:?}");
        assert!(results.iter().any(|r| matches!(r, Err(Error::NotFound))));
        assert_eq!(db.rows(), vec![0, 11, 12, 14]);
    }

    #[test]
    fn a_panicking_write_panics_in_its_own_thread_and_the_others_commit() {
        static WRITERS: GroupCommit = GroupCommit::new();
        let db = Db::new();
        let leader = held_leader(&WRITERS, &db);
        let followers = queued_writes(&WRITERS, &db, vec![21, 22, 23], |conn, n| {
            insert(conn, n)?;
            assert_ne!(n, 22, "write 22 panics");
            Ok(n)
        });
        let panicked: Vec<bool> = settle(leader, followers)
            .into_iter()
            .map(|(_, result)| result.is_err())
            .collect();
        assert_eq!(panicked.iter().filter(|p| **p).count(), 1);
        assert_eq!(db.rows(), vec![0, 21, 23]);
    }

    #[test]
    fn when_the_batch_cannot_begin_every_write_of_it_fails() {
        static WRITERS: GroupCommit = GroupCommit::new();
        // The held leader works on another database; the queued writes' connections give up
        // on a busy lock at once, and another connection (as another process would) holds
        // their database's write lock: their batch's BEGIN IMMEDIATE fails.
        let elsewhere = Db::new();
        let db = Db {
            busy_ms: 0,
            ..Db::new()
        };
        let mut other = db.conn();
        other.batch_execute("BEGIN IMMEDIATE").unwrap();
        let leader = held_leader(&WRITERS, &elsewhere);
        let followers = queued_writes(&WRITERS, &db, vec![31, 32, 33], insert);
        for (_, result) in settle(leader, followers) {
            let err = result.unwrap().unwrap_err();
            assert_eq!(
                crate::db::classify(&err),
                crate::db::DbErrorClass::Busy,
                "{err}"
            );
        }
        other.batch_execute("ROLLBACK").unwrap();
        assert_eq!(db.rows(), Vec::<i64>::new());
        assert_eq!(elsewhere.rows(), vec![0]);
    }

    /// Whether `conn` has the temporary table `mark` (a temporary table belongs to the
    /// connection that made it: a way to tell connections apart).
    fn has_mark(conn: &mut DbConn) -> bool {
        conn.batch_execute("SELECT 1 FROM temp.mark LIMIT 0")
            .is_ok()
    }

    /// A write of `n` that answers whether it ran on the connection with the mark.
    fn insert_and_find_mark(conn: &mut DbConn, n: i64) -> Result<bool, Error> {
        insert(conn, n)?;
        Ok(has_mark(conn))
    }

    #[test]
    fn every_batch_of_a_database_runs_on_its_writer_whichever_thread_leads() {
        static WRITERS: GroupCommit = GroupCommit::new();
        let db = Db::new();
        let writer = db.writer();
        let (mut a, mut b) = (db.conn_offering(&writer), db.conn_offering(&writer));
        // One thread's write leaves a mark on the connection it ran on; another thread's
        // write, led from its own connection, finds it there: both ran on the writer.
        let marked = WRITERS.write(&mut a, true, |conn| {
            conn.batch_execute("CREATE TEMP TABLE mark (x)")?;
            insert(conn, 1)
        });
        assert!(marked.is_ok(), "{marked:?}");
        let other = thread::spawn(move || {
            let found = WRITERS.write(&mut b, true, |conn| insert_and_find_mark(conn, 2));
            (found, has_mark(&mut b))
        });
        assert_eq!(other.join().unwrap(), (Ok(true), false));
        assert!(!has_mark(&mut a), "the leaders' own connections");
        // A batch of writes waiting together runs there too.
        let leader = held_leader(&WRITERS, &db);
        let queued = queued_writes_of(
            &WRITERS,
            || db.conn_offering(&writer),
            vec![3, 4, 5],
            |_| true,
            insert_and_find_mark,
        );
        for (_, result) in settle(leader, queued) {
            assert_eq!(result.unwrap(), Ok(true));
        }
        assert_eq!(db.rows(), vec![0, 1, 2, 3, 4, 5]);
    }

    #[test]
    fn without_a_writer_a_batch_runs_on_its_leaders_connection() {
        static WRITERS: GroupCommit = GroupCommit::new();
        // The leader's connection has the mark: the write finds it there.
        let write_on = |mut conn: DbConn| {
            conn.batch_execute("CREATE TEMP TABLE mark (x)").unwrap();
            WRITERS.write(&mut conn, true, |conn| insert_and_find_mark(conn, 1))
        };
        // A writer that cannot open its connection.
        let refused = Db::new();
        let broken = Arc::new(Writer::new(|| {
            Err(ConnectionError::BadConnection("refused".into()))
        }));
        assert_eq!(write_on(refused.conn_offering(&broken)), Ok(true));
        // A writer whose pool is gone.
        let gone = Db::new();
        let writer = gone.writer();
        let conn = gone.conn_offering(&writer);
        drop(writer);
        assert_eq!(write_on(conn), Ok(true));
        assert_eq!((refused.rows(), gone.rows()), (vec![1], vec![1]));
    }

    /// A writer whose connection failed to open is not tried again by every batch: once in
    /// `reopen_after`; and once it opens, the batches run on it again.
    #[test]
    fn a_writer_that_failed_to_open_is_tried_again_only_after_a_while() {
        static WRITERS: GroupCommit = GroupCommit::new();
        let db = Db::new();
        let (path, busy_ms) = (db.path.clone(), db.busy_ms);
        let attempts = Arc::new(AtomicU64::new(0));
        let refusals = Arc::new(AtomicU64::new(1));
        let opener = |reopen_after| {
            let (attempts, refusals, path) = (attempts.clone(), refusals.clone(), path.clone());
            Arc::new(Writer {
                reopen_after,
                ..Writer::new(move || {
                    attempts.fetch_add(1, Relaxed);
                    if refusals
                        .fetch_update(Relaxed, Relaxed, |n| n.checked_sub(1))
                        .is_ok()
                    {
                        return Err(ConnectionError::BadConnection("refused".into()));
                    }
                    let mut conn = open(&path, busy_ms, None)?;
                    conn.batch_execute("CREATE TEMP TABLE mark (x)").unwrap();
                    Ok(conn)
                })
            })
        };
        let write = |writer: &Arc<Writer>, n| {
            WRITERS.write(&mut db.conn_offering(writer), true, |conn| {
                insert_and_find_mark(conn, n)
            })
        };
        // Refused once: the batches within the next hour run on their leaders' connections,
        // without another attempt.
        let slow = opener(Duration::from_secs(3600));
        for n in 1..=3 {
            assert_eq!(write(&slow, n), Ok(false));
        }
        assert_eq!(attempts.load(Relaxed), 1);
        // Refused once, tried again at once: the next batch opens it and runs there.
        refusals.store(1, Relaxed);
        let quick = opener(Duration::ZERO);
        assert_eq!(write(&quick, 4), Ok(false));
        assert_eq!(write(&quick, 5), Ok(true));
        assert_eq!(write(&quick, 6), Ok(true));
        assert_eq!(attempts.load(Relaxed), 3);
        assert_eq!(db.rows(), vec![1, 2, 3, 4, 5, 6]);
    }
}
