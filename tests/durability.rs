//! What a commit waits for: every write transaction commits durably (PostgreSQL's default
//! `synchronous_commit = on`; SQLite `synchronous = FULL`), except the claim of an
//! `Idempotency-Key`, whose only job is to be seen by a repeat at once and which the durable
//! transaction that completes it carries to the disk
//! (`db::write_transaction_without_waiting_for_disk`).

mod common;

use diesel::dsl::sql;
use diesel::prelude::*;
use diesel::sql_types::{Integer, Text};
use medbook::db::{write_transaction, write_transaction_without_waiting_for_disk, DbConn, DbPool};
use medbook::domain::Role;
use medbook::services::idempotency::{self, Claim, StoredResponse};

use common::{Backend, ScratchDb, StatementLog};

const RELAXED_BEGIN: &str = "BEGIN; SET LOCAL synchronous_commit = off";

fn synchronous_commit(conn: &mut DbConn) -> String {
    diesel::select(sql::<Text>("current_setting('synchronous_commit')"))
        .get_result(conn)
        .expect("setting")
}

/// Claims `key` for `user` and returns the statements the claim ran (on `conn`, and on the
/// connection `pool`'s SQLite write batches run on).
fn claim_statements(conn: &mut DbConn, pool: &DbPool, user: i32, key: &str) -> Vec<String> {
    let log = StatementLog::attach_with_writer(conn, pool);
    let claim = idempotency::claim(conn, user, key, "fingerprint").expect("claim");
    assert!(matches!(claim, Claim::Fresh), "{claim:?}");
    log.take_run()
}

#[test]
fn postgres_only_the_idempotency_claim_commits_without_waiting_for_the_disk() {
    let dir = tempfile::tempdir().unwrap();
    let Some(db) = ScratchDb::new(Backend::Postgres, dir.path()) else {
        return;
    };
    let pool = db.migrated_pool();
    let mut conn = pool.get().expect("connection");
    let user = common::service_caller(&mut conn, Role::Patient, "durable").id;
    assert_eq!(synchronous_commit(&mut conn), "on", "the server's default");

    // Inside the transaction the setting is off, and it ends with the transaction: a `SET`
    // without `LOCAL` would leave every later transaction of this pooled connection relaxed.
    write_transaction_without_waiting_for_disk(&mut conn, |conn| {
        assert_eq!(synchronous_commit(conn), "off");
        Ok::<_, diesel::result::Error>(())
    })
    .expect("transaction");
    assert_eq!(synchronous_commit(&mut conn), "on");
    // Nested (a savepoint), it would relax the outer transaction's commit: it does not.
    write_transaction(&mut conn, |conn| {
        write_transaction_without_waiting_for_disk(conn, |conn| {
            assert_eq!(synchronous_commit(conn), "on");
            Ok::<_, diesel::result::Error>(())
        })
    })
    .expect("nested");

    // The claim relaxes its own transaction, before its insert; the transaction of the work
    // (here a stored response) does not.
    let claim = claim_statements(&mut conn, &pool, user, "key");
    let insert = claim
        .iter()
        .position(|s| s.starts_with(r#"INSERT INTO "idempotency_keys""#))
        .expect("the claim's insert");
    assert_eq!(claim[..insert], [RELAXED_BEGIN], "{claim:#?}");
    assert_eq!(claim[insert + 1..], ["COMMIT"], "{claim:#?}");
    let log = StatementLog::attach(&mut conn);
    let response = StoredResponse {
        status: 201,
        headers: Vec::new(),
        body: "{}".to_owned(),
    };
    idempotency::run_and_record(&mut conn, user, "key", |_| Ok(response.clone()))
        .expect("recorded");
    let work = log.take_run();
    assert!(
        work.iter()
            .any(|s| s.starts_with(r#"UPDATE "idempotency_keys""#)),
        "{work:#?}"
    );
    assert!(
        !work.iter().any(|s| s.contains("synchronous_commit")),
        "{work:#?}"
    );
    assert_eq!(synchronous_commit(&mut conn), "on");
}

/// SQLite's level for the transaction a write runs in: 2 FULL (the commit waits for the
/// disk), 1 NORMAL (in WAL mode it does not).
fn sqlite_synchronous(conn: &mut DbConn) -> i32 {
    diesel::select(sql::<Integer>("synchronous FROM pragma_synchronous"))
        .get_result(conn)
        .expect("pragma")
}

#[test]
fn sqlite_only_the_idempotency_claim_commits_without_waiting_for_the_disk() {
    let dir = tempfile::tempdir().unwrap();
    let db = ScratchDb::new(Backend::Sqlite, dir.path()).expect("sqlite");
    let pool = db.migrated_pool();
    let mut conn = pool.get().expect("connection");
    let user = common::service_caller(&mut conn, Role::Patient, "durable").id;
    assert_eq!(sqlite_synchronous(&mut conn), 2, "FULL, the pool's setting");

    // The claim's transaction begins with NORMAL (SQLite takes the level only outside a
    // transaction)...
    let claim = claim_statements(&mut conn, &pool, user, "key");
    let begins = |run: &[String]| -> Vec<String> {
        run.iter()
            .filter(|s| s.ends_with("BEGIN IMMEDIATE"))
            .cloned()
            .collect()
    };
    assert_eq!(
        begins(&claim),
        ["PRAGMA synchronous = NORMAL; BEGIN IMMEDIATE"],
        "{claim:#?}"
    );
    // ...and leaves the connection it ran on (the pool's writer) at FULL, which the
    // transaction of the work sets again.
    assert_eq!(pool.with_sqlite_writer(sqlite_synchronous), Some(2));
    let log = StatementLog::attach_with_writer(&mut conn, &pool);
    let recorded = idempotency::run_and_record(&mut conn, user, "key", |conn| {
        assert_eq!(sqlite_synchronous(conn), 2);
        Ok(StoredResponse {
            status: 201,
            headers: Vec::new(),
            body: "{}".to_owned(),
        })
    });
    assert!(recorded.is_ok(), "{recorded:?}");
    let work = log.take_run();
    assert_eq!(
        begins(&work),
        ["PRAGMA synchronous = FULL; BEGIN IMMEDIATE"],
        "{work:#?}"
    );
}
