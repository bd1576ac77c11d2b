//! The failures diesel reports only as `Unknown` — PostgreSQL deadlocks and lock timeouts,
//! SQLite BUSY and a read-only file, a full disk on either — forced for real, recognised,
//! retried or answered with their 409 or 503.

mod common;

use std::time::Duration;

use common::{deadlock_booking, slot, Backend, TestApp};
use diesel::connection::SimpleConnection;
use diesel::prelude::*;
use medbook::db::{classify, DbErrorClass};
use reqwest::StatusCode;

async fn postgres_app(tweak: impl FnOnce(&mut medbook::config::Config)) -> Option<TestApp> {
    TestApp::start_with(Backend::Postgres, tweak).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn postgres_deadlock_is_recognised_and_the_retry_recovers() {
    if let Some(app) = postgres_app(|_| {}).await {
        a_deadlock_is_retried_and_books(&app).await;
    }
}

/// A booking whose first attempt meets a deadlock books on the retry.
async fn a_deadlock_is_retried_and_books(app: &TestApp) {
    let doctor = app.doctor().await;
    let patient = app.patient().await;
    assert!(doctor.id < patient.id, "the booking locks the doctor first");
    let (url, d, p) = (app.db_url.clone(), doctor.id, patient.id);
    let blocker = tokio::task::spawn_blocking(move || deadlock_booking(&url, d, p, 1))
        .await
        .unwrap();
    let answer = app.book(&patient, &doctor, &slot(3, 10, 0), 30).await;
    blocker.join().unwrap();
    assert_eq!(answer.status, StatusCode::CREATED, "{:?}", answer.body);
    assert_eq!(app.count("SELECT COUNT(*) FROM appointments"), 1);
    assert_eq!(app.count("SELECT COUNT(*) FROM appointment_history"), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn postgres_deadlocks_beyond_the_retries_answer_deadlock_detected() {
    let Some(app) = postgres_app(|_| {}).await else {
        return;
    };
    let doctor = app.doctor().await;
    let patient = app.patient().await;
    let (url, d, p) = (app.db_url.clone(), doctor.id, patient.id);
    // The first attempt and each of the 3 retries meet a deadlock.
    let blocker = tokio::task::spawn_blocking(move || deadlock_booking(&url, d, p, 4))
        .await
        .unwrap();
    let answer = app.book(&patient, &doctor, &slot(3, 11, 0), 30).await;
    blocker.join().unwrap();
    assert_eq!(answer.status, StatusCode::CONFLICT, "{:?}", answer.body);
    assert_eq!(answer.code(), "DEADLOCK_DETECTED");
    assert_eq!(answer.body["error"], "Try again, access conflict detected");
    assert_eq!(app.count("SELECT COUNT(*) FROM appointments"), 0);
    // Nothing is left locked: the next booking goes through.
    let again = app.book(&patient, &doctor, &slot(3, 11, 0), 30).await;
    assert_eq!(again.status, StatusCode::CREATED, "{:?}", again.body);
}

/// An optimistic update (here a confirmation) whose statement is chosen as a deadlock's
/// victim is run again, like a booking, instead of answering `409 DEADLOCK_DETECTED` at once
/// (which claimed retries that never ran). Another session holds the doctor's row, which the
/// confirmation's history row references (its foreign-key check waits, the confirmation
/// holding the appointment's row), then asks for the appointment's row: a genuine deadlock.
/// This session waits 30 s before its deadlock check, the app's 1 s, so PostgreSQL aborts the
/// confirmation.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn postgres_a_deadlocked_optimistic_update_is_retried() {
    let Some(app) = postgres_app(|_| {}).await else {
        return;
    };
    let doctor = app.doctor().await;
    let patient = app.patient().await;
    let id = app.booked(&patient, &doctor, &slot(3, 9, 0)).await;
    let mut other = common::hold_user_row(&app.db_url, doctor.id);
    other.batch_execute("SET deadlock_timeout = '30s'").unwrap();
    let url = app.db_url.clone();
    let other = tokio::task::spawn_blocking(move || {
        common::wait_for_lock_waiter(&url);
        other
            .batch_execute(&format!(
                "SELECT id FROM appointments WHERE id = {id} FOR UPDATE; COMMIT"
            ))
            .expect("the confirmation, not this session, is the deadlock's victim");
    });
    let confirmed = app
        .put(
            &format!("/api/v1/appointments/{id}"),
            &doctor,
            serde_json::json!({"status": "confirmed", "version": 1}),
        )
        .await;
    other.await.unwrap();
    assert_eq!(confirmed.status, StatusCode::OK, "{:?}", confirmed.body);
    assert_eq!(confirmed.body["version"], 2);
    let stats = app.get("/api/v1/admin/lock-stats", &app.admin).await;
    assert_eq!(stats.body["retry_count"], 1, "{:?}", stats.body);
    assert_eq!(
        app.count(&format!(
            "SELECT COUNT(*) FROM appointment_history WHERE appointment_id = {id}"
        )),
        2
    );
}

/// How long the lock-timeout tests' app waits for a row lock.
const SHORT_LOCK_TIMEOUT: Duration = Duration::from_millis(300);

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn postgres_lock_timeout_answers_lock_timeout() {
    let Some(app) = postgres_app(|c| c.pg_lock_timeout = SHORT_LOCK_TIMEOUT).await else {
        return;
    };
    let doctor = app.doctor().await;
    let patient = app.patient().await;
    let holder = common::hold_user_row(&app.db_url, doctor.id);
    a_booking_meets_the_lock_timeout(&app, &doctor, &patient, holder).await;
}

/// With `holder` holding the doctor's row, a booking answers `409 LOCK_TIMEOUT`; once it lets
/// go, the booking goes through.
async fn a_booking_meets_the_lock_timeout(
    app: &TestApp,
    doctor: &common::Actor,
    patient: &common::Actor,
    mut holder: PgConnection,
) {
    let answer = app.book(patient, doctor, &slot(3, 12, 0), 30).await;
    assert_eq!(answer.status, StatusCode::CONFLICT, "{:?}", answer.body);
    assert_eq!(answer.code(), "LOCK_TIMEOUT");
    holder.batch_execute("ROLLBACK").unwrap();
    let again = app.book(patient, doctor, &slot(3, 12, 0), 30).await;
    assert_eq!(again.status, StatusCode::CREATED, "{:?}", again.body);
}

/// A keyed booking as `patient`: (status, code, whether it was a replay).
async fn keyed_booking(
    app: &TestApp,
    patient: &common::Actor,
    body: &serde_json::Value,
) -> (StatusCode, String, bool) {
    let answer = keyed_booking_answer(app, patient, body).await;
    let replayed = answer.header("idempotent-replayed") == "true";
    (answer.status, answer.code().to_owned(), replayed)
}

/// The whole answer to [`keyed_booking`]'s request.
async fn keyed_booking_answer(
    app: &TestApp,
    patient: &common::Actor,
    body: &serde_json::Value,
) -> common::Answer {
    app.send(
        app.client
            .post(format!("{}/api/v1/appointments", app.base))
            .bearer_auth(&patient.token)
            .header("Idempotency-Key", "held-up")
            .json(body),
    )
    .await
}

/// A transient failure (here a lock timeout) is not stored under the request's key: the key
/// is released in the same hand-off, and the retry runs the request. The release is retried
/// like every write: its first attempt here is a deadlock's victim (without the retry the key
/// stayed claimed: 409 `IDEMPOTENCY_KEY_IN_USE` until its lease ran out).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn postgres_a_key_whose_request_failed_for_a_transient_reason_runs_again() {
    let Some(app) = postgres_app(|c| c.pg_lock_timeout = SHORT_LOCK_TIMEOUT).await else {
        return;
    };
    let doctor = app.doctor().await;
    let patient = app.patient().await;
    fail_once_with_deadlock(&app, "BEFORE DELETE");
    let body = serde_json::json!({"doctor_id": doctor.id, "scheduled_at": slot(3, 12, 0), "type": "in_person"});
    let mut holder = common::hold_user_row(&app.db_url, doctor.id);
    let first = keyed_booking(&app, &patient, &body).await;
    assert_eq!(
        first,
        (StatusCode::CONFLICT, "LOCK_TIMEOUT".to_owned(), false)
    );
    assert_eq!(app.count("SELECT COUNT(*) FROM idempotency_keys"), 0);
    assert_eq!(app.count("SELECT last_value FROM test_fault_calls"), 2);
    holder.batch_execute("ROLLBACK").unwrap();
    let retry = keyed_booking(&app, &patient, &body).await;
    assert_eq!(retry, (StatusCode::CREATED, String::new(), false));
    let repeat = keyed_booking(&app, &patient, &body).await;
    assert_eq!(repeat, (StatusCode::CREATED, String::new(), true));
}

/// Makes the next statement that fires `trigger` (a trigger on `idempotency_keys`, e.g.
/// `BEFORE DELETE`) fail once with a real PostgreSQL deadlock error (SQLSTATE 40P01, the
/// server's own message), and every later one pass. A sequence counts the calls: it is not
/// rolled back with the failed statement.
fn fail_once_with_deadlock(app: &TestApp, trigger: &str) {
    app.sql(&format!(
        "CREATE SEQUENCE test_fault_calls;
         CREATE FUNCTION test_fault() RETURNS trigger LANGUAGE plpgsql AS $$
         BEGIN
           IF nextval('test_fault_calls') = 1 THEN
             RAISE EXCEPTION 'deadlock detected' USING ERRCODE = 'deadlock_detected';
           END IF;
           RETURN COALESCE(NEW, OLD);
         END $$;
         CREATE TRIGGER test_fault {trigger} ON idempotency_keys
           FOR EACH ROW EXECUTE FUNCTION test_fault();"
    ));
}

/// Storing a keyed request's final error is retried like every write: its first attempt here
/// is a deadlock's victim, and the error is still stored, so a repeat gets it again as a
/// replay (without the retry the key was released and the repeat ran the request again).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn postgres_storing_a_keyed_final_error_is_retried() {
    let Some(app) = postgres_app(|_| {}).await else {
        return;
    };
    let doctor = app.doctor().await;
    let patient = app.patient().await;
    let other = app.patient().await;
    let at = slot(3, 12, 0);
    app.booked(&other, &doctor, &at).await;
    fail_once_with_deadlock(&app, "BEFORE UPDATE");
    let body = serde_json::json!({"doctor_id": doctor.id, "scheduled_at": at, "type": "in_person"});
    let first = keyed_booking(&app, &patient, &body).await;
    assert_eq!(
        first,
        (StatusCode::CONFLICT, "SLOT_TAKEN".to_owned(), false)
    );
    assert_eq!(app.count("SELECT last_value FROM test_fault_calls"), 2);
    let repeat = keyed_booking(&app, &patient, &body).await;
    assert_eq!(
        repeat,
        (StatusCode::CONFLICT, "SLOT_TAKEN".to_owned(), true)
    );
    let stats = app.get("/api/v1/admin/lock-stats", &app.admin).await;
    assert_eq!(stats.body["retry_count"], 1, "{:?}", stats.body);
}

/// A purge's batch is retried like every write: its first `DELETE` here is a deadlock's
/// victim, and every expired key is still purged (without the retry the purge gave up until
/// its next round, ten minutes later).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn postgres_a_purge_batch_that_loses_a_deadlock_is_retried() {
    let Some(app) = postgres_app(|_| {}).await else {
        return;
    };
    let patient = app.patient().await;
    app.sql(&format!(
        "INSERT INTO idempotency_keys (user_id, idempotency_key, fingerprint, state, claimed_at, expires_at) \
         SELECT {}, 'old-' || g, 'f', 'in_flight', now() - interval '2 days', now() - interval '1 day' \
         FROM generate_series(1, 3) g",
        patient.id
    ));
    fail_once_with_deadlock(&app, "BEFORE DELETE");
    let contention = medbook::db::Contention::default();
    let mut conn = app.service_pool().get().unwrap();
    let purged =
        medbook::services::idempotency::purge_expired(&mut conn, &contention, medbook::time::now());
    assert_eq!(purged.unwrap(), 3);
    assert_eq!(app.count("SELECT COUNT(*) FROM idempotency_keys"), 0);
    // The failed first row, then the three rows of the retry.
    assert_eq!(app.count("SELECT last_value FROM test_fault_calls"), 4);
    assert_eq!(contention.stats.view().retry_count, 1);
}

/// A tmpfs of a few MiB, mounted for one test on a directory of its own and unmounted when
/// dropped: a disk that really fills up. Mounting needs root (as in CI, where it is
/// required); elsewhere the test is skipped.
struct SmallDisk {
    dir: tempfile::TempDir,
    /// The tablespace made on it, dropped with it.
    tablespace: Option<String>,
}

impl SmallDisk {
    fn mount() -> Option<SmallDisk> {
        let dir = tempfile::tempdir().unwrap();
        let mounted = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", "size=4m,mode=0777", "tmpfs"])
            .arg(dir.path())
            .output();
        match mounted {
            Ok(out) if out.status.success() => Some(SmallDisk {
                dir,
                tablespace: None,
            }),
            other => {
                assert!(
                    !common::postgres_required(),
                    "CI=true but the disk-full tests cannot mount a tmpfs (they need root): {other:?}"
                );
                eprintln!("SKIPPED disk-full test: cannot mount a tmpfs (needs root): {other:?}");
                None
            }
        }
    }

    fn path(&self, name: &str) -> std::path::PathBuf {
        self.dir.path().join(name)
    }

    /// A PostgreSQL tablespace on this disk (the server runs on this machine, as the OS user
    /// `postgres`, who must own its directory).
    fn tablespace(&mut self) -> String {
        use std::os::unix::fs::chown;
        let name = format!("medbook_small_disk_{}", std::process::id());
        let location = self.path("pg");
        std::fs::create_dir(&location).unwrap();
        let uid = std::process::Command::new("id")
            .args(["-u", "postgres"])
            .output()
            .unwrap();
        let uid: u32 = String::from_utf8(uid.stdout)
            .unwrap()
            .trim()
            .parse()
            .unwrap();
        chown(&location, Some(uid), None).unwrap();
        PgConnection::establish(&common::pg_admin_url())
            .unwrap()
            .batch_execute(&format!(
                "CREATE TABLESPACE {name} LOCATION '{}'",
                location.display()
            ))
            .unwrap();
        self.tablespace = Some(name.clone());
        name
    }

    /// Fills what is left of the disk with a file, which [`SmallDisk::free`] removes.
    fn fill(&self) {
        use std::io::Write;
        let mut filler = std::fs::File::create(self.path("filler")).unwrap();
        let page = [0u8; 4096];
        while filler.write_all(&page).is_ok() {}
        assert_eq!(
            std::fs::File::create(self.path("one-more"))
                .and_then(|mut f| f.write_all(&page))
                .unwrap_err()
                .raw_os_error(),
            Some(28), // ENOSPC
        );
    }

    fn free(&self) {
        std::fs::remove_file(self.path("filler")).unwrap();
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        if let Some(name) = &self.tablespace {
            if let Ok(mut admin) = PgConnection::establish(&common::pg_admin_url()) {
                let _ = admin.batch_execute(&format!("DROP TABLESPACE IF EXISTS {name}"));
            }
        }
        let _ = std::process::Command::new("umount")
            .arg("-l")
            .arg(self.dir.path())
            .output();
    }
}

/// The answer to a write on a full disk: 503 `UNAVAILABLE` with `Retry-After`, and nothing
/// of the database's own words.
fn assert_disk_full_answer(answer: &common::Answer) {
    assert_eq!(
        (answer.status, answer.code()),
        (StatusCode::SERVICE_UNAVAILABLE, "UNAVAILABLE"),
        "{:?}",
        answer.body
    );
    assert_eq!(answer.header("retry-after"), "1");
    let text = answer.body.to_string();
    assert!(!text.contains("disk") && !text.contains("extend"), "{text}");
}

/// Reads need no room: the caller's list still answers on a full disk.
async fn assert_reads_go_on(app: &TestApp, caller: &common::Actor) {
    let list = app.get("/api/v1/appointments", caller).await;
    assert_eq!(list.status, StatusCode::OK, "{:?}", list.body);
}

/// A booking on a PostgreSQL whose disk is full (the appointments table is on a small disk,
/// filled up: "could not extend file", SQLSTATE 53100) answers 503 `UNAVAILABLE` with
/// `Retry-After` instead of a 500, stores nothing, and frees its idempotency key; once there
/// is room the same keyed request books.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn postgres_a_write_on_a_full_disk_is_unavailable_and_runs_once_there_is_room() {
    let Some(mut disk) = SmallDisk::mount() else {
        return;
    };
    let Some(app) = postgres_app(|_| {}).await else {
        return;
    };
    let doctor = app.doctor().await;
    let patient = app.patient().await;
    let tablespace = disk.tablespace();
    app.sql(&format!(
        "ALTER TABLE appointments SET TABLESPACE {tablespace}"
    ));
    disk.fill();
    let body = serde_json::json!({"doctor_id": doctor.id, "scheduled_at": slot(3, 9, 0), "type": "in_person"});
    assert_disk_full_answer(&keyed_booking_answer(&app, &patient, &body).await);
    assert_eq!(app.count("SELECT COUNT(*) FROM appointments"), 0);
    assert_reads_go_on(&app, &patient).await;
    disk.free();
    assert_eq!(
        keyed_booking(&app, &patient, &body).await,
        (StatusCode::CREATED, String::new(), false)
    );
    assert_eq!(app.count("SELECT COUNT(*) FROM appointments"), 1);
}

/// The same on SQLite, whose file (and its WAL) is on a small disk that fills up: the first
/// booking that needs more room than is left answers 503 `UNAVAILABLE` ("database or disk is
/// full", `SQLITE_FULL`), and once there is room bookings succeed again, every one that was
/// answered 201 is there, and none that was refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sqlite_a_write_on_a_full_disk_is_unavailable_and_runs_once_there_is_room() {
    let Some(disk) = SmallDisk::mount() else {
        return;
    };
    let file = disk.path("medbook.db").to_string_lossy().into_owned();
    let app = TestApp::start_with(Backend::Sqlite, |c| c.database_url = file)
        .await
        .unwrap();
    let doctor = app.doctor().await;
    let patient = app.patient().await;
    disk.fill();
    // The n-th booking's slot; the refused one is tried again once there is room.
    let nth = |n: i64| slot(3 + n / 8, 9 + n as u32 % 8, 0);
    let mut booked = 0;
    let full = loop {
        let answer = app.book(&patient, &doctor, &nth(booked), 30).await;
        if answer.status != StatusCode::CREATED {
            break answer;
        }
        booked += 1;
        assert!(booked < 1000, "the disk never filled up");
    };
    assert_disk_full_answer(&full);
    assert_reads_go_on(&app, &patient).await;
    disk.free();
    let after = app.book(&patient, &doctor, &nth(booked), 30).await;
    assert_eq!(after.status, StatusCode::CREATED, "{:?}", after.body);
    assert_eq!(app.count("SELECT COUNT(*) FROM appointments"), booked + 1);
}

/// A keyed request whose connection dies under it (its backend terminated while it waited
/// for a lock) answers 503, and its claim is released through another connection, so that
/// the retry runs instead of meeting `IDEMPOTENCY_KEY_IN_USE` until the lease runs out.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn postgres_a_key_whose_connection_died_is_released_through_another() {
    let Some(app) = postgres_app(|_| {}).await else {
        return;
    };
    let app = std::sync::Arc::new(app);
    let doctor = app.doctor().await;
    let patient = app.patient().await;
    let body = serde_json::json!({"doctor_id": doctor.id, "scheduled_at": slot(3, 13, 0), "type": "in_person"});
    let mut holder = common::hold_user_row(&app.db_url, doctor.id);
    let first = tokio::spawn({
        let (app, patient, body) = (std::sync::Arc::clone(&app), patient.clone(), body.clone());
        async move { keyed_booking(&app, &patient, &body).await }
    });
    let url = app.db_url.clone();
    tokio::task::spawn_blocking(move || {
        common::wait_for_lock_waiter(&url);
        PgConnection::establish(&url)
            .unwrap()
            .batch_execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
                 WHERE datname = current_database() AND wait_event_type = 'Lock'",
            )
            .unwrap();
    })
    .await
    .unwrap();
    let (status, code, _) = first.await.unwrap();
    assert_eq!(
        (status, code.as_str()),
        (StatusCode::SERVICE_UNAVAILABLE, "UNAVAILABLE")
    );
    assert_eq!(app.count("SELECT COUNT(*) FROM idempotency_keys"), 0);
    holder.batch_execute("ROLLBACK").unwrap();
    let retry = keyed_booking(&app, &patient, &body).await;
    assert_eq!(retry, (StatusCode::CREATED, String::new(), false));
}

/// A booking whose token does not belong to an active patient is answered before it locks
/// (or waits for) anybody's row. (Checking the token inside the booking's row locks was tried
/// and reverted; this keeps any such change from letting bad tokens lock doctors' rows.)
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn postgres_bookings_that_do_not_authenticate_lock_nothing() {
    let Some(app) = postgres_app(|c| c.pg_lock_timeout = SHORT_LOCK_TIMEOUT).await else {
        return;
    };
    let doctor = app.doctor().await;
    let other_doctor = app.doctor().await;
    let patient = app.patient().await;
    let inactive = app.patient().await;
    app.sql(&format!(
        "UPDATE users SET is_active = false WHERE id = {}",
        inactive.id
    ));
    let mut holder = common::hold_user_row(&app.db_url, doctor.id);
    let body = serde_json::json!({"doctor_id": doctor.id, "scheduled_at": slot(3, 13, 0), "type": "in_person"});
    let post = |token: String| {
        let body = body.clone();
        let app = &app;
        async move {
            app.call(
                reqwest::Method::POST,
                "/api/v1/appointments",
                Some(&token),
                Some(body),
            )
            .await
        }
    };
    // Had any of these waited for the doctor's row, they would answer 409 LOCK_TIMEOUT.
    for (token, status) in [
        ("not-a-real-token".to_owned(), StatusCode::UNAUTHORIZED),
        (inactive.token.clone(), StatusCode::UNAUTHORIZED),
        (other_doctor.token.clone(), StatusCode::FORBIDDEN),
    ] {
        let answer = post(token).await;
        assert_eq!(answer.status, status, "{:?}", answer.body);
    }
    // A patient's booking does take the lock (so the cases above were tested under it).
    let answer = post(patient.token.clone()).await;
    assert_eq!(answer.code(), "LOCK_TIMEOUT", "{:?}", answer.body);
    holder.batch_execute("ROLLBACK").unwrap();
    assert_eq!(app.count("SELECT COUNT(*) FROM appointments"), 0);
    let answer = post(patient.token.clone()).await;
    assert_eq!(answer.status, StatusCode::CREATED, "{:?}", answer.body);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn postgres_errors_without_a_diesel_kind_are_classified() {
    let Some(app) = postgres_app(|_| {}).await else {
        return;
    };
    let mut a = PgConnection::establish(&app.db_url).unwrap();
    let mut b = PgConnection::establish(&app.db_url).unwrap();
    a.batch_execute("BEGIN; LOCK TABLE users IN ACCESS EXCLUSIVE MODE")
        .unwrap();
    let err = b
        .batch_execute("SET lock_timeout = 100; SELECT COUNT(*) FROM users")
        .unwrap_err();
    assert_eq!(classify(&err), DbErrorClass::LockTimeout, "{err}");
    a.batch_execute("ROLLBACK").unwrap();
    let err = b
        .batch_execute("SET statement_timeout = 50; SELECT pg_sleep(1)")
        .unwrap_err();
    assert_eq!(classify(&err), DbErrorClass::Unavailable, "{err}");
    let err = b.batch_execute("SELECT * FROM no_such_table").unwrap_err();
    assert_eq!(classify(&err), DbErrorClass::Other, "{err}");
}

/// A write to a SQLite file opened read-only reaches diesel as `Unknown` ("attempt to write a
/// readonly database"): it is recognised as a database that takes no writes now.
#[test]
fn sqlite_a_write_to_a_database_opened_read_only_is_classified() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ro.db");
    let mut writable = SqliteConnection::establish(path.to_str().unwrap()).unwrap();
    writable
        .batch_execute("CREATE TABLE t (x INTEGER)")
        .unwrap();
    let mut read_only =
        SqliteConnection::establish(&format!("file:{}?mode=ro", path.display())).unwrap();
    read_only.batch_execute("SELECT COUNT(*) FROM t").unwrap();
    let err = read_only
        .batch_execute("INSERT INTO t VALUES (1)")
        .unwrap_err();
    assert_eq!(classify(&err), DbErrorClass::Unavailable, "{err}");
}

/// The language the foreign-language tests give PostgreSQL (initdb takes `lc_messages`
/// from the system's locale, so a server set up in Germany may well speak German).
const GERMAN: &str = "de_DE.UTF-8";

/// A language PostgreSQL has no translation for: its messages stay English, under a setting
/// whose name does not say so.
const DUTCH: &str = "nl_NL.UTF-8";

/// Whether the server can report errors in German, and take Dutch: the locales must exist
/// where it runs, and have existed when it started (`scripts/ensure-postgres.sh` makes sure of
/// both), and its German messages must be installed. Outside CI a server that cannot is a
/// skip.
fn server_speaks_german() -> bool {
    let Ok(mut admin) = PgConnection::establish(&common::pg_admin_url()) else {
        return false; // reported by the app's own start as a skip, or a failure in CI
    };
    let answer = admin
        .batch_execute(&format!(
            "SET lc_messages = '{DUTCH}'; SET lc_messages = '{GERMAN}'; SELECT 1/0"
        ))
        .unwrap_err()
        .to_string();
    if answer == "Division durch Null" {
        return true;
    }
    assert!(
        !common::postgres_required(),
        "CI=true but PostgreSQL cannot report errors in {GERMAN} or take {DUTCH} ({answer}): run scripts/ensure-postgres.sh"
    );
    eprintln!("SKIPPED PostgreSQL test: the server cannot report errors in {GERMAN} or take {DUTCH} ({answer}); scripts/ensure-postgres.sh sets that up");
    false
}

/// Makes every new session of the database at `url` report errors in German.
fn in_german(url: &str) {
    common::set_database_default(url, "lc_messages", &format!("'{GERMAN}'"));
}

/// The app on a database whose sessions report errors in German unless they say otherwise
/// (`None`: skipped).
async fn app_in_german(tweak: impl FnOnce(&mut medbook::config::Config)) -> Option<TestApp> {
    if !server_speaks_german() {
        return None;
    }
    let app = postgres_app(|c| {
        in_german(&c.database_url);
        tweak(c);
    })
    .await?;
    let err = PgConnection::establish(&app.db_url)
        .unwrap()
        .batch_execute("SELECT 1/0")
        .unwrap_err();
    assert_eq!(err.to_string(), "Division durch Null");
    Some(app)
}

/// On a server that reports errors in another language, medbook's sessions still recognise
/// a lock timeout (by its English message): each connection switches itself to English.
/// Without that, the lock timeout was a 500, as it reads to any other session here.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn postgres_a_server_in_another_language_still_answers_lock_timeout() {
    let Some(app) = app_in_german(|c| c.pg_lock_timeout = SHORT_LOCK_TIMEOUT).await else {
        return;
    };
    let doctor = app.doctor().await;
    let patient = app.patient().await;
    let holder = common::hold_user_row(&app.db_url, doctor.id);
    let mut plain = PgConnection::establish(&app.db_url).unwrap();
    let err = plain
        .batch_execute(&format!(
            "SET lock_timeout = 100; SELECT id FROM users WHERE id = {} FOR UPDATE",
            doctor.id
        ))
        .unwrap_err();
    assert_eq!(classify(&err), DbErrorClass::Other, "{err}");
    a_booking_meets_the_lock_timeout(&app, &doctor, &patient, holder).await;
}

/// The same for a deadlock: recognised, and the retry books (without the switch to English,
/// a 500).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn postgres_a_server_in_another_language_still_retries_a_deadlock() {
    if let Some(app) = app_in_german(|_| {}).await {
        a_deadlock_is_retried_and_books(&app).await;
    }
}

/// A role that may not change `lc_messages`, on a database that reports errors in another
/// language, is refused at start with what to change, instead of serving 500s for every
/// deadlock; the same role starts once the database speaks English (by a setting that names
/// it, or one whose language has no translation), or once it is granted the setting.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn postgres_a_role_that_cannot_switch_to_english_is_refused_at_start() {
    if !server_speaks_german() {
        return;
    }
    let name = format!("medbook_plain_{}", std::process::id());
    let mut admin = PgConnection::establish(&common::pg_admin_url()).unwrap();
    // One statement each: DROP and CREATE DATABASE cannot run in a batch's transaction.
    let drop_all = [
        format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"),
        format!(
            "DO $$ BEGIN IF EXISTS (SELECT FROM pg_roles WHERE rolname = '{name}') THEN \
             REVOKE SET ON PARAMETER lc_messages FROM {name}; DROP ROLE {name}; END IF; END $$"
        ),
    ];
    let set_up = [
        format!("CREATE ROLE {name} LOGIN"),
        format!("CREATE DATABASE {name} OWNER {name}"),
        format!("ALTER DATABASE {name} SET lc_messages = '{GERMAN}'"),
    ];
    for statement in drop_all.iter().chain(&set_up) {
        admin.batch_execute(statement).unwrap();
    }
    let mut url = reqwest::Url::parse(&common::pg_admin_url()).unwrap();
    url.set_username(&name).unwrap();
    url.set_path(&name);
    let mut config = medbook::config::Config::for_database(url.as_str());
    config.pool_timeout = Duration::from_secs(1);
    let start = move || medbook::server::prepare(&config).map(|state| state.pool.clone());

    let refused = tokio::task::spawn_blocking(start.clone())
        .await
        .unwrap()
        .map(|_| ())
        .expect_err("a role that cannot switch to English is refused");
    assert!(
        refused.contains("lc_messages = 'de_DE.UTF-8' (a statement timeout reads \"storniere")
            && refused.contains(&format!("ALTER ROLE \"{name}\" SET lc_messages = 'C'")),
        "{refused}"
    );

    // A setting whose name is not English but whose messages are (no translation): the
    // session's own answer lets the role start without changing anything; so does English.
    for setting in [
        format!("SET lc_messages = '{DUTCH}'"),
        "RESET lc_messages".to_owned(),
    ] {
        admin
            .batch_execute(&format!("ALTER DATABASE {name} {setting}"))
            .unwrap();
        let pool = tokio::task::spawn_blocking(start.clone()).await.unwrap();
        assert!(pool.is_ok(), "{setting}: {:?}", pool.err());
    }

    admin
        .batch_execute(&format!(
            "ALTER DATABASE {name} SET lc_messages = '{GERMAN}'; \
             GRANT SET ON PARAMETER lc_messages TO {name}"
        ))
        .unwrap();
    let pool = tokio::task::spawn_blocking(start).await.unwrap().unwrap();
    let setting = medbook::db::run_blocking(&pool, |conn| {
        #[derive(QueryableByName)]
        struct Setting {
            #[diesel(sql_type = diesel::sql_types::Text)]
            lc_messages: String,
        }
        Ok(
            diesel::sql_query("SELECT current_setting('lc_messages') AS lc_messages")
                .get_result::<Setting>(conn)?
                .lc_messages,
        )
    })
    .await
    .unwrap();
    assert_eq!(setting, "C");
    drop(pool);
    for statement in &drop_all {
        admin.batch_execute(statement).unwrap();
    }
}

/// Holds SQLite's write lock from another connection for `hold`.
fn hold_sqlite_write_lock(path: &str, hold: Duration) -> std::thread::JoinHandle<()> {
    let lock = SqliteWriteLock::take(path);
    std::thread::spawn(move || {
        std::thread::sleep(hold);
        lock.release();
    })
}

/// SQLite's write lock, held by another connection until [`SqliteWriteLock::release`] (or
/// until it is dropped: the connection closes and its transaction rolls back).
struct SqliteWriteLock(SqliteConnection);

impl SqliteWriteLock {
    fn take(path: &str) -> Self {
        let mut conn = SqliteConnection::establish(path).unwrap();
        conn.batch_execute("BEGIN IMMEDIATE").unwrap();
        Self(conn)
    }

    fn release(mut self) {
        self.0.batch_execute("COMMIT").unwrap();
    }
}

/// Every write retries SQLite BUSY (before, only the booking path did; the first BUSY of any
/// other write was `409 DEADLOCK_DETECTED`): each request below meets another connection's
/// write lock, held until the request's first attempt has given up on it (a retry is
/// counted), and succeeds.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sqlite_busy_on_every_write_is_retried() {
    use reqwest::Method;
    use serde_json::{json, Value};

    let app = TestApp::start_with(Backend::Sqlite, |c| {
        c.sqlite_busy_timeout = Duration::from_millis(150)
    })
    .await
    .unwrap();
    let doctor = app.doctor().await;
    let patient = app.patient().await;
    let id = app.booked(&patient, &doctor, &slot(3, 9, 0)).await;
    let done = app.booked(&patient, &doctor, &slot(3, 11, 0)).await;
    app.walk(done, &doctor, &["confirmed", "in_progress", "completed"])
        .await;
    let medications = json!([{"name": "A", "dosage": "1", "frequency": "daily"}]);
    let request = |method: Method, path: &str, token: Option<&str>, body: Value| {
        let mut req = app.client.request(method, format!("{}{path}", app.base));
        if let Some(token) = token {
            req = req.bearer_auth(token);
        }
        if body.is_null() {
            req
        } else {
            req.json(&body)
        }
    };
    let (doctor_token, patient_token, admin) = (
        Some(doctor.token.as_str()),
        Some(patient.token.as_str()),
        Some(app.admin.token.as_str()),
    );
    let writes = vec![
        ("booking", request(Method::POST, "/api/v1/appointments", patient_token,
            json!({"doctor_id": doctor.id, "scheduled_at": slot(3, 15, 0), "type": "in_person"}))),
        ("confirm", request(Method::PUT, &format!("/api/v1/appointments/{id}"), doctor_token,
            json!({"status": "confirmed"}))),
        ("rename", request(Method::PATCH, &format!("/api/v1/admin/users/{}", patient.id), admin,
            json!({"name": "Renamed"}))),
        ("prescribe", request(Method::POST, "/api/v1/prescriptions", doctor_token,
            json!({"appointment_id": done, "medications": medications}))),
        ("rate", request(Method::POST, "/api/v1/ratings", patient_token,
            json!({"appointment_id": done, "score": 5}))),
        ("keyed booking", request(Method::POST, "/api/v1/appointments", patient_token,
            json!({"doctor_id": doctor.id, "scheduled_at": slot(3, 13, 0), "type": "in_person"}))
            .header("Idempotency-Key", "busy-1")),
        ("register", request(Method::POST, "/api/v1/auth/register", None,
            json!({"name": "New", "email": "new@medbook.test", "password": common::PASSWORD}))),
        ("login", request(Method::POST, "/api/v1/auth/login", None,
            json!({"email": "new@medbook.test", "password": common::PASSWORD}))),
        ("create user", request(Method::POST, "/api/v1/admin/users", admin,
            json!({"name": "Dr New", "email": "dr.new@medbook.test", "password": common::PASSWORD, "role": "doctor"}))),
        ("logout", request(Method::POST, "/api/v1/auth/logout", patient_token, Value::Null)),
    ];
    let retries = || async {
        let stats = app.get("/api/v1/admin/lock-stats", &app.admin).await;
        stats.body["retry_count"].as_u64().unwrap()
    };
    for (what, req) in writes {
        // The lock goes once the request has met it as BUSY (its retry is counted), not after
        // a fixed time: a request that took long to reach its write (a password hash) would
        // otherwise find the lock gone and test nothing.
        let before = retries().await;
        let lock = SqliteWriteLock::take(&app.db_url);
        let send = app.send(req);
        tokio::pin!(send);
        let retried = format!("{what}'s retry on BUSY");
        let answer = tokio::select! {
            () = common::wait_until(&retried, || {
                let now = retries();
                async move { now.await > before }
            }) => {
                lock.release();
                send.await
            }
            // Answered with the lock still held: not a success, asserted below.
            answer = &mut send => answer,
        };
        assert!(
            answer.status.is_success(),
            "{what}: {} {:?}",
            answer.status,
            answer.body
        );
    }
    assert_eq!(app.count("SELECT COUNT(*) FROM prescriptions"), 1);
    assert_eq!(app.count("SELECT COUNT(*) FROM ratings"), 1);
}

/// A batch of the background purge retries SQLite BUSY too: it meets another connection's
/// write lock, held until the purge has retried once, and still purges.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sqlite_busy_on_a_purge_batch_is_retried() {
    let app = TestApp::start(Backend::Sqlite).await.unwrap();
    let patient = app.patient().await;
    app.sql(&format!(
        "INSERT INTO idempotency_keys (user_id, idempotency_key, fingerprint, state, claimed_at, expires_at) \
         VALUES ({}, 'old', 'f', 'in_flight', datetime('now', '-2 days'), datetime('now', '-1 day'))",
        patient.id
    ));
    let config = medbook::config::Config {
        sqlite_busy_timeout: Duration::from_millis(150),
        ..medbook::config::Config::for_database(&app.db_url)
    };
    let pool = medbook::db::build_pool(&config, Default::default());
    let mut conn = pool.get().unwrap();
    let contention = medbook::db::Contention::default();
    let stats = contention.stats.clone();
    let lock = SqliteWriteLock::take(&app.db_url);
    let mut purge = tokio::task::spawn_blocking(move || {
        medbook::services::idempotency::purge_expired(&mut conn, &contention, medbook::time::now())
    });
    let purged = tokio::select! {
        () = common::wait_until("the purge's retry on BUSY", || {
            std::future::ready(stats.view().retry_count > 0)
        }) => {
            lock.release();
            purge.await
        }
        purged = &mut purge => purged,
    };
    assert_eq!(purged.unwrap().unwrap(), 1);
    assert_eq!(app.count("SELECT COUNT(*) FROM idempotency_keys"), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sqlite_busy_beyond_the_retries_answers_deadlock_detected() {
    let app = TestApp::start_with(Backend::Sqlite, |c| {
        c.sqlite_busy_timeout = Duration::from_millis(100)
    })
    .await
    .unwrap();
    let doctor = app.doctor().await;
    let patient = app.patient().await;
    let holder = hold_sqlite_write_lock(&app.db_url, Duration::from_secs(6));
    let answer = app.book(&patient, &doctor, &slot(3, 14, 0), 30).await;
    assert_eq!(answer.status, StatusCode::CONFLICT, "{:?}", answer.body);
    assert_eq!(answer.code(), "DEADLOCK_DETECTED");
    holder.join().unwrap();
    assert_eq!(app.count("SELECT COUNT(*) FROM appointments"), 0);

    // The same error, classified straight from the database.
    let mut a = SqliteConnection::establish(&app.db_url).unwrap();
    let mut b = SqliteConnection::establish(&app.db_url).unwrap();
    a.batch_execute("BEGIN IMMEDIATE").unwrap();
    let err = b
        .batch_execute("PRAGMA busy_timeout = 10; BEGIN IMMEDIATE")
        .unwrap_err();
    assert_eq!(classify(&err), DbErrorClass::Busy, "{err}");
    a.batch_execute("COMMIT").unwrap();
}

/// A new SQLite file is switched to WAL by the first connections, and that switch needs the
/// file to itself: SQLite answers the others BUSY at once, without waiting out
/// `busy_timeout`. At start-up the migrations' connection and the pool's first idle one race
/// for it (one fresh start in four logged "ERROR r2d2: database is locked"). Without the
/// retry in `ConnectionManager` this failed within the first 30 rounds in every run.
#[test]
fn sqlite_connections_opened_at_once_on_a_new_file_all_succeed() {
    use r2d2::ManageConnection;
    use std::sync::{Arc, Barrier};

    const THREADS: usize = 8;
    for round in 0..100 {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("new.db");
        let config = medbook::config::Config::for_database(path.to_str().unwrap());
        let manager = Arc::new(medbook::db::pool::ConnectionManager::new(&config));
        let start = Arc::new(Barrier::new(THREADS));
        let opened: Vec<_> = (0..THREADS)
            .map(|_| {
                let (manager, start) = (manager.clone(), start.clone());
                std::thread::spawn(move || {
                    start.wait();
                    manager.connect().map(drop).map_err(|e| e.to_string())
                })
            })
            .collect::<Vec<_>>()
            .into_iter()
            .map(|t| t.join().unwrap())
            .collect();
        let failed: Vec<_> = opened.iter().filter_map(|r| r.as_ref().err()).collect();
        assert!(failed.is_empty(), "round {round}: {failed:?}");
    }
}
