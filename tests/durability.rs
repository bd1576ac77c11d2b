//! What a commit waits for: every write transaction commits durably (PostgreSQL's default
//! `synchronous_commit = on`; SQLite `synchronous = FULL`), except the claim of an
//! `Idempotency-Key`, whose only job is to be seen by a repeat at once and which the durable
//! transaction that completes it carries to the disk (`db::commit_without_waiting_for_disk`).

mod common;

use diesel::dsl::sql;
use diesel::prelude::*;
use diesel::sql_types::{Integer, Text};
use medbook::db::{commit_without_waiting_for_disk, write_transaction, DbConn};
use medbook::domain::Role;
use medbook::services::idempotency::{self, Claim, StoredResponse};

use common::{Backend, ScratchDb, StatementLog};

const RELAXED: &str = "SET LOCAL synchronous_commit = off";

fn synchronous_commit(conn: &mut DbConn) -> String {
    diesel::select(sql::<Text>("current_setting('synchronous_commit')"))
        .get_result(conn)
        .expect("setting")
}

/// Claims `key` for `user` and returns the statements the claim ran.
fn claim_statements(conn: &mut DbConn, user: i32, key: &str) -> Vec<String> {
    let log = StatementLog::attach(conn);
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
    let mut conn = db.migrated_pool().get().expect("connection");
    let user = common::service_caller(&mut conn, Role::Patient, "durable").id;
    assert_eq!(synchronous_commit(&mut conn), "on", "the server's default");

    // Inside the transaction the setting is off, and it ends with the transaction: a `SET`
    // without `LOCAL` would leave every later transaction of this pooled connection relaxed.
    write_transaction(&mut conn, |conn| {
        commit_without_waiting_for_disk(conn)?;
        assert_eq!(synchronous_commit(conn), "off");
        Ok::<_, diesel::result::Error>(())
    })
    .expect("transaction");
    assert_eq!(synchronous_commit(&mut conn), "on");
    // Nested (a savepoint), it would relax the outer transaction's commit: it does nothing.
    write_transaction(&mut conn, |conn| {
        write_transaction(conn, commit_without_waiting_for_disk)?;
        assert_eq!(synchronous_commit(conn), "on");
        Ok::<_, diesel::result::Error>(())
    })
    .expect("nested");

    // The claim relaxes its own transaction, before its insert; the transaction of the work
    // (here a stored response) does not.
    let claim = claim_statements(&mut conn, user, "key");
    let insert = claim
        .iter()
        .position(|s| s.starts_with(r#"INSERT INTO "idempotency_keys""#))
        .expect("the claim's insert");
    assert_eq!(claim[..insert], ["BEGIN", RELAXED], "{claim:#?}");
    assert_eq!(claim[insert + 1..], ["COMMIT"], "{claim:#?}");
    let log = StatementLog::attach(&mut conn);
    let response = StoredResponse {
        status: 201,
        headers: Vec::new(),
        body: "{}".to_owned(),
    };
    idempotency::run_and_record(&mut conn, user, "key", |_| Ok(response)).expect("recorded");
    let work = log.take_run();
    assert!(
        work.iter()
            .any(|s| s.starts_with(r#"UPDATE "idempotency_keys""#)),
        "{work:#?}"
    );
    assert!(!work.iter().any(|s| s == RELAXED), "{work:#?}");
    assert_eq!(synchronous_commit(&mut conn), "on");
}

#[test]
fn sqlite_commits_stay_durable_around_a_claim() {
    let dir = tempfile::tempdir().unwrap();
    let db = ScratchDb::new(Backend::Sqlite, dir.path()).expect("sqlite");
    let mut conn = db.migrated_pool().get().expect("connection");
    let user = common::service_caller(&mut conn, Role::Patient, "durable").id;
    let synchronous = |conn: &mut DbConn| -> i32 {
        diesel::select(sql::<Integer>("synchronous FROM pragma_synchronous"))
            .get_result(conn)
            .expect("pragma")
    };
    assert_eq!(synchronous(&mut conn), 2, "FULL");
    let claim = claim_statements(&mut conn, user, "key");
    assert!(
        !claim.iter().any(|s| s.contains("synchronous")),
        "{claim:#?}"
    );
    assert_eq!(synchronous(&mut conn), 2, "FULL");
}
