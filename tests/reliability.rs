//! Reliability: idempotent POSTs, database outages, graceful shutdown, crashes, and several
//! processes on one PostgreSQL database.

mod common;

use std::time::{Duration, Instant};

use common::{
    assert_no_overlaps_in, count_in, pg_admin_url, slot, Backend, Client, Explain, Process,
    ScratchDb, StatementLog, TestApp,
};
use diesel::connection::SimpleConnection;
use diesel::prelude::*;
use reqwest::StatusCode;
use serde_json::{json, Value};

both_backends!(
    idempotent_post_replays_and_rejects_a_different_request,
    concurrent_requests_with_one_key_create_one_appointment,
    expired_and_abandoned_keys_are_claimed_again,
    a_final_error_that_cannot_be_stored_is_answered_and_frees_its_key,
    expired_keys_are_purged_in_short_transactions,
    expired_tokens_are_found_by_index_and_purged_in_short_transactions,
    sigterm_lets_an_in_flight_booking_commit,
    sigkill_mid_load_loses_no_acknowledged_booking,
    sigkill_with_idempotency_keys_neither_loses_nor_repeats_work,
);

async fn with_key(
    app: &TestApp,
    path: &str,
    token: &str,
    key: &str,
    body: Value,
) -> (StatusCode, reqwest::header::HeaderMap, String) {
    let response = app
        .client
        .post(format!("{}{path}", app.base))
        .bearer_auth(token)
        .header("Idempotency-Key", key)
        .json(&body)
        .send()
        .await
        .unwrap();
    (
        response.status(),
        response.headers().clone(),
        response.text().await.unwrap(),
    )
}

/// Sends the same request twice with one key; returns the status after checking that the
/// second answer repeats the first byte for byte.
async fn twice(
    app: &TestApp,
    path: &str,
    token: &str,
    key: &str,
    body: Value,
) -> (StatusCode, String) {
    let (first, _, first_text) = with_key(app, path, token, key, body.clone()).await;
    let (second, headers, second_text) = with_key(app, path, token, key, body).await;
    assert_eq!(
        (second, &second_text),
        (first, &first_text),
        "{path}: the repeat is a replay"
    );
    assert_eq!(headers["idempotent-replayed"], "true");
    (first, first_text)
}

async fn idempotent_post_replays_and_rejects_a_different_request(app: TestApp) {
    let doctor = app.doctor().await;
    let patient = app.patient().await;
    let body = json!({"doctor_id": doctor.id, "scheduled_at": slot(3, 10, 0), "type": "in_person"});
    let (first, headers, text) = with_key(
        &app,
        "/api/v1/appointments",
        &patient.token,
        "booking-1",
        body.clone(),
    )
    .await;
    assert_eq!(first, StatusCode::CREATED, "{text}");
    assert!(headers.get("idempotent-replayed").is_none());
    let (again, replay_headers, replay) = with_key(
        &app,
        "/api/v1/appointments",
        &patient.token,
        "booking-1",
        body.clone(),
    )
    .await;
    assert_eq!(again, StatusCode::CREATED);
    assert_eq!(replay, text, "replayed byte for byte");
    assert_eq!(replay_headers["idempotent-replayed"], "true");
    assert_eq!(replay_headers["location"], headers["location"]);
    assert_eq!(replay_headers["etag"], headers["etag"]);
    assert_eq!(app.count("SELECT COUNT(*) FROM appointments"), 1);

    let other_body =
        json!({"doctor_id": doctor.id, "scheduled_at": slot(3, 11, 0), "type": "in_person"});
    let (mismatch, _, text) = with_key(
        &app,
        "/api/v1/appointments",
        &patient.token,
        "booking-1",
        other_body.clone(),
    )
    .await;
    assert_eq!(mismatch, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(text.contains("IDEMPOTENCY_KEY_MISMATCH"));
    // Keys belong to their user: another patient's "booking-1" is a new request.
    let other = app.patient().await;
    let (own, _, _) = with_key(
        &app,
        "/api/v1/appointments",
        &other.token,
        "booking-1",
        other_body,
    )
    .await;
    assert_eq!(own, StatusCode::CREATED);

    // A final error is replayed too; a malformed key is refused.
    let unknown = json!({"doctor_id": 999999, "scheduled_at": slot(3, 12, 0), "type": "in_person"});
    let (missing, _, first_404) = with_key(
        &app,
        "/api/v1/appointments",
        &patient.token,
        "k-404",
        unknown.clone(),
    )
    .await;
    assert_eq!(missing, StatusCode::NOT_FOUND);
    let (again, headers, second_404) = with_key(
        &app,
        "/api/v1/appointments",
        &patient.token,
        "k-404",
        unknown,
    )
    .await;
    assert_eq!((again, second_404), (StatusCode::NOT_FOUND, first_404));
    assert_eq!(headers["idempotent-replayed"], "true");
    let (bad, _, _) = with_key(
        &app,
        "/api/v1/appointments",
        &patient.token,
        "has space",
        body,
    )
    .await;
    assert_eq!(bad, StatusCode::BAD_REQUEST);

    // Other POSTs: prescriptions, acknowledgment, ratings, admin user creation.
    let id = app.booked(&patient, &doctor, &slot(4, 9, 0)).await;
    app.walk(id, &doctor, &["confirmed", "in_progress", "completed"])
        .await;
    let prescription = json!({"appointment_id": id, "medications": [{"name": "A", "dosage": "1", "frequency": "daily"}]});
    let (status, text) = twice(
        &app,
        "/api/v1/prescriptions",
        &doctor.token,
        "rx",
        prescription,
    )
    .await;
    assert_eq!(status, StatusCode::CREATED);
    let pid = serde_json::from_str::<Value>(&text).unwrap()["id"]
        .as_i64()
        .unwrap();
    let ack = format!("/api/v1/prescriptions/{pid}/acknowledge");
    assert_eq!(
        twice(&app, &ack, &patient.token, "ack", json!({})).await.0,
        StatusCode::OK
    );
    let rating = json!({"appointment_id": id, "score": 5});
    assert_eq!(
        twice(&app, "/api/v1/ratings", &patient.token, "rate", rating)
            .await
            .0,
        StatusCode::CREATED
    );
    let user = json!({"name": "Dr Twice", "email": "twice@medbook.test", "password": "doctor-pass", "role": "doctor"});
    assert_eq!(
        twice(
            &app,
            "/api/v1/admin/users",
            &app.admin.token,
            "mk-user",
            user
        )
        .await
        .0,
        StatusCode::CREATED
    );
    assert_eq!(
        app.count("SELECT COUNT(*) FROM users WHERE email = 'twice@medbook.test'"),
        1
    );
}

async fn concurrent_requests_with_one_key_create_one_appointment(app: TestApp) {
    let doctor = app.doctor().await;
    let patient = app.patient().await;
    let body = json!({"doctor_id": doctor.id, "scheduled_at": slot(3, 10, 0), "type": "in_person"});
    let answers = futures_util::future::join_all((0..20).map(|_| {
        with_key(
            &app,
            "/api/v1/appointments",
            &patient.token,
            "same-key",
            body.clone(),
        )
    }))
    .await;
    assert_eq!(app.count("SELECT COUNT(*) FROM appointments"), 1);
    let created: Vec<&String> = answers
        .iter()
        .filter(|(s, _, _)| *s == StatusCode::CREATED)
        .map(|(_, _, t)| t)
        .collect();
    assert!(!created.is_empty());
    assert!(
        created.iter().all(|t| *t == created[0]),
        "every 201 is the same response"
    );
    for (status, _, text) in &answers {
        assert!(
            *status == StatusCode::CREATED
                || (*status == StatusCode::CONFLICT && text.contains("IDEMPOTENCY_KEY_IN_USE")),
            "{status}: {text}"
        );
    }
    // Once the first finished, a repeat is a replay.
    let (status, headers, text) = with_key(
        &app,
        "/api/v1/appointments",
        &patient.token,
        "same-key",
        body,
    )
    .await;
    assert_eq!(
        (status, text.as_str()),
        (StatusCode::CREATED, created[0].as_str())
    );
    assert_eq!(headers["idempotent-replayed"], "true");
}

/// A final error is stored under its key for replay; if storing it fails (here a trigger
/// refuses the record), the request still gets its own error, not the storing's, and the key
/// is freed: nothing was committed, so the retry runs the request again instead of meeting
/// `IDEMPOTENCY_KEY_IN_USE` until the claim's lease runs out.
async fn a_final_error_that_cannot_be_stored_is_answered_and_frees_its_key(app: TestApp) {
    let doctor = app.doctor().await;
    let (holder, patient) = (app.patient().await, app.patient().await);
    let at = slot(3, 14, 0);
    let held = app.booked(&holder, &doctor, &at).await;
    app.sql(match app.backend {
        Backend::Postgres => {
            "CREATE FUNCTION refuse_record() RETURNS trigger LANGUAGE plpgsql AS \
             $$ BEGIN RAISE EXCEPTION 'refused by the test'; END $$; \
             CREATE TRIGGER refuse_record BEFORE UPDATE ON idempotency_keys FOR EACH ROW \
             WHEN (NEW.response_status = 409) EXECUTE FUNCTION refuse_record();"
        }
        Backend::Sqlite => {
            "CREATE TRIGGER refuse_record BEFORE UPDATE ON idempotency_keys \
             WHEN NEW.response_status = 409 BEGIN SELECT RAISE(ABORT, 'refused by the test'); END;"
        }
    });
    let body = json!({"doctor_id": doctor.id, "scheduled_at": at, "type": "in_person"});
    let path = "/api/v1/appointments";
    let (status, headers, text) = with_key(&app, path, &patient.token, "k", body.clone()).await;
    assert_eq!(status, StatusCode::CONFLICT, "{text}");
    assert!(text.contains("\"SLOT_TAKEN\""), "{text}");
    assert!(headers.get("idempotent-replayed").is_none());
    assert_eq!(app.count("SELECT COUNT(*) FROM idempotency_keys"), 0);
    // Logged at error level, and counted for the operators' alerts.
    let metrics = app
        .client
        .get(format!("{}/metrics", app.base))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics
            .lines()
            .any(|l| l == "medbook_idempotency_failures_total 1"),
        "{metrics}"
    );
    // The slot frees up; the retry with the same key runs and books it.
    let cancelled = app
        .put(
            &format!("/api/v1/appointments/{held}"),
            &holder,
            json!({"status": "cancelled"}),
        )
        .await;
    assert_eq!(cancelled.status, StatusCode::OK, "{:?}", cancelled.body);
    let (retry, _, text) = with_key(&app, path, &patient.token, "k", body.clone()).await;
    assert_eq!(retry, StatusCode::CREATED, "{text}");
    let (repeat, headers, replay) = with_key(&app, path, &patient.token, "k", body).await;
    assert_eq!((repeat, replay), (StatusCode::CREATED, text));
    assert_eq!(headers["idempotent-replayed"], "true");
}

async fn expired_and_abandoned_keys_are_claimed_again(app: TestApp) {
    let doctor = app.doctor().await;
    let patient = app.patient().await;
    let body = |hour| json!({"doctor_id": doctor.id, "scheduled_at": slot(3, hour, 0), "type": "in_person"});
    assert_eq!(
        with_key(&app, "/api/v1/appointments", &patient.token, "k", body(9))
            .await
            .0,
        StatusCode::CREATED
    );
    // A request still running holds its key…
    app.sql("UPDATE idempotency_keys SET state = 'in_flight'");
    let (busy, _, text) =
        with_key(&app, "/api/v1/appointments", &patient.token, "k", body(9)).await;
    assert_eq!(busy, StatusCode::CONFLICT, "{text}");
    assert!(text.contains("IDEMPOTENCY_KEY_IN_USE"));
    // …until its lease ran out (it died): then the key is claimed again and the request runs.
    let old = if app.backend == Backend::Postgres {
        "now() - interval '1 hour'"
    } else {
        "datetime('now', '-1 hour')"
    };
    app.sql(&format!("UPDATE idempotency_keys SET claimed_at = {old}"));
    let (rerun, _, text) =
        with_key(&app, "/api/v1/appointments", &patient.token, "k", body(9)).await;
    assert_eq!(
        rerun,
        StatusCode::CONFLICT,
        "the slot is the first run's: {text}"
    );
    assert!(text.contains("SLOT_TAKEN"));
    // After 24 h a key may be used for anything, and expired records are purged.
    app.sql(&format!("UPDATE idempotency_keys SET expires_at = {old}"));
    assert_eq!(
        with_key(&app, "/api/v1/appointments", &patient.token, "k", body(11))
            .await
            .0,
        StatusCode::CREATED
    );
    app.sql(&format!("UPDATE idempotency_keys SET expires_at = {old}"));
    let purged = {
        let pool = app.service_pool();
        let mut conn = pool.get().unwrap();
        medbook::services::idempotency::purge_expired(
            &mut conn,
            &Default::default(),
            medbook::time::now(),
        )
        .unwrap()
    };
    assert_eq!(purged, 1);
    assert_eq!(app.count("SELECT COUNT(*) FROM idempotency_keys"), 0);
}

/// Expired records are purged a batch per transaction (a busy server's ten minutes of keys in
/// one `DELETE` would hold SQLite's write lock for seconds); records that have not expired
/// stay.
async fn expired_keys_are_purged_in_short_transactions(app: TestApp) {
    let patient = app.patient().await;
    let expired = 2 * medbook::services::PURGE_BATCH + 500;
    let (rows, day_ago, two_days_ago, tomorrow) = match app.backend {
        Backend::Postgres => (
            format!("SELECT g FROM generate_series(1, {expired}) g"),
            "now() - interval '1 day'",
            "now() - interval '2 days'",
            "now() + interval '1 day'",
        ),
        Backend::Sqlite => (
            format!("WITH RECURSIVE s(g) AS (SELECT 1 UNION ALL SELECT g + 1 FROM s WHERE g < {expired}) SELECT g FROM s"),
            "datetime('now', '-1 day')",
            "datetime('now', '-2 days')",
            "datetime('now', '+1 day')",
        ),
    };
    app.sql(&format!(
        "INSERT INTO idempotency_keys (user_id, idempotency_key, fingerprint, state, claimed_at, expires_at) \
         SELECT {id}, 'old-' || g, 'f', 'in_flight', {two_days_ago}, {day_ago} FROM ({rows}) AS r; \
         INSERT INTO idempotency_keys (user_id, idempotency_key, fingerprint, state, claimed_at, expires_at) \
         VALUES ({id}, 'new-1', 'f', 'in_flight', {day_ago}, {tomorrow}), \
                ({id}, 'new-2', 'f', 'in_flight', {day_ago}, {tomorrow});",
        id = patient.id
    ));
    let pool = app.service_pool();
    let mut conn = pool.get().unwrap();
    let log = StatementLog::attach_with_writer(&mut conn, &pool);
    let purged = medbook::services::idempotency::purge_expired(
        &mut conn,
        &Default::default(),
        medbook::time::now(),
    )
    .unwrap();
    assert_eq!(purged as i64, expired);
    assert_eq!(app.count("SELECT COUNT(*) FROM idempotency_keys"), 2);
    // Three batches (1000, 1000, 500), each its own transaction: a COMMIT after each DELETE.
    let statements = log.take_run();
    assert_eq!(
        purge_shape(&statements, "idempotency_keys"),
        ["DELETE", "COMMIT", "DELETE", "COMMIT", "DELETE", "COMMIT", "COMMIT"],
        "{statements:#?}"
    );
}

/// The statements of a purge that deleted something: a `DELETE` of `table` and a `COMMIT`
/// per batch, then the `COMMIT` of the batch that found nothing.
fn purge_shape(statements: &[String], table: &str) -> Vec<&'static str> {
    let delete = format!(r#"DELETE FROM "{table}""#);
    statements
        .iter()
        .filter_map(|s| {
            if s.starts_with(&delete) {
                Some("DELETE")
            } else if s.starts_with("COMMIT") {
                Some("COMMIT")
            } else {
                None
            }
        })
        .collect()
}

/// With a token lifetime, the purge deletes the expired tokens as it does expired keys, 1000
/// per transaction, and finds them through the index on their issue time. Before, it read
/// the whole table every 10 minutes however few had expired, and on SQLite it did so holding
/// the only write lock, in one `DELETE` of them all. A live token stays and still works.
async fn expired_tokens_are_found_by_index_and_purged_in_short_transactions(app: TestApp) {
    use diesel::sql_types::{Integer, Text};
    let patient = app.patient().await;
    let live = app.count("SELECT COUNT(*) FROM api_tokens");
    let expired = 2 * medbook::services::PURGE_BATCH + 500;
    let (rows, two_days_ago) = match app.backend {
        Backend::Postgres => (
            format!("SELECT g FROM generate_series(1, {expired}) g"),
            "now() - interval '2 days'",
        ),
        Backend::Sqlite => (
            format!("WITH RECURSIVE s(g) AS (SELECT 1 UNION ALL SELECT g + 1 FROM s WHERE g < {expired}) SELECT g FROM s"),
            "datetime('now', '-2 days')",
        ),
    };
    app.sql(&format!(
        "INSERT INTO api_tokens (user_id, token_hash, created_at, session_epoch) \
         SELECT {id}, 'old-' || g, {two_days_ago}, 0 FROM ({rows}) AS r",
        id = patient.id
    ));
    let cutoff = medbook::time::now() - chrono::Duration::days(1);
    let pool = app.service_pool();
    let mut conn = pool.get().unwrap();

    // A batch's read is an index range on created_at, in issue order: no scan, no sort.
    let batch =
        || medbook::models::token::issued_before_query(cutoff, medbook::services::PURGE_BATCH);
    match app.backend {
        Backend::Postgres => {
            // Here nearly every row is expired, so reading them all and sorting wins on cost;
            // in service, with the live sessions' tokens beside few expired ones, the index
            // range does. Only whether the index serves the statement, in order, is in question.
            let others =
                "SET enable_seqscan = off; SET enable_bitmapscan = off; SET enable_sort = off";
            conn.batch_execute(others).unwrap();
            let plan: Vec<String> = Explain::<_, Text>::new("EXPLAIN (COSTS OFF) ", batch())
                .load(&mut conn)
                .unwrap();
            conn.batch_execute("RESET ALL").unwrap();
            let plan = plan.join("\n");
            assert!(
                plan.contains("Index Scan using api_tokens_created_at_idx")
                    && !plan.contains("Seq Scan")
                    && !plan.contains("Sort"),
                "{plan}"
            );
        }
        Backend::Sqlite => {
            let plan: Vec<(i32, i32, i32, String)> =
                Explain::<_, (Integer, Integer, Integer, Text)>::new(
                    "EXPLAIN QUERY PLAN ",
                    batch(),
                )
                .load(&mut conn)
                .unwrap();
            let details: Vec<&str> = plan.iter().map(|row| row.3.as_str()).collect();
            assert_eq!(
                details,
                ["SEARCH api_tokens USING COVERING INDEX api_tokens_created_at_idx (created_at<?)"]
            );
        }
    }

    let log = StatementLog::attach_with_writer(&mut conn, &pool);
    let purged =
        medbook::services::auth::purge_expired_tokens(&mut conn, &Default::default(), cutoff)
            .unwrap();
    assert_eq!(purged as i64, expired);
    // Three batches (1000, 1000, 500), each its own transaction.
    let statements = log.take_run();
    assert_eq!(
        purge_shape(&statements, "api_tokens"),
        ["DELETE", "COMMIT", "DELETE", "COMMIT", "DELETE", "COMMIT", "COMMIT"],
        "{statements:#?}"
    );
    assert_eq!(app.count("SELECT COUNT(*) FROM api_tokens"), live);
    assert_eq!(app.get("/api/v1/me", &patient).await.status, StatusCode::OK);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sqlite_work_queued_past_the_pool_timeout_is_503_and_never_runs() {
    queued_past_the_pool_timeout(Backend::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn postgres_work_queued_past_the_pool_timeout_is_503_and_never_runs() {
    queued_past_the_pool_timeout(Backend::Postgres).await;
}

/// A 503 `UNAVAILABLE` that tells the client when to try again.
fn assert_unavailable(answer: &common::Answer, what: &str) {
    assert_eq!(
        answer.status,
        StatusCode::SERVICE_UNAVAILABLE,
        "{what}: {:?}",
        answer.body
    );
    assert_eq!(answer.code(), "UNAVAILABLE", "{what}");
    assert_eq!(answer.header("retry-after"), "1", "{what}");
}

/// One connection, so one database thread: a booking that waits for a lock holds it, and
/// requests behind it answer 503 at the pool time-out. A booking answered 503 so is never made,
/// not even once the thread is free again.
async fn queued_past_the_pool_timeout(backend: Backend) {
    let Some(app) = TestApp::start_with(backend, |c| {
        c.pool_size = 1;
        c.pool_timeout = Duration::from_millis(400);
        c.pg_lock_timeout = Duration::from_secs(30);
        c.sqlite_busy_timeout = Duration::from_secs(30);
    })
    .await
    else {
        return;
    };
    let doctor = app.doctor().await;
    let patient = app.patient().await;
    let mut holder = app.connection();
    holder
        .batch_execute(&match backend {
            Backend::Sqlite => "BEGIN IMMEDIATE".to_owned(),
            Backend::Postgres => {
                format!(
                    "BEGIN; SELECT id FROM users WHERE id = {} FOR UPDATE",
                    doctor.id
                )
            }
        })
        .unwrap();
    let first_slot = slot(2, 9, 0);
    let waiting = app.book(&patient, &doctor, &first_slot, 30);
    let behind = async {
        // Until the booking holds the thread, reads still get through.
        let deadline = Instant::now() + Duration::from_secs(20);
        let refused = loop {
            let answer = app.get("/api/v1/me", &patient).await;
            if answer.status != StatusCode::OK {
                break answer;
            }
            assert!(
                Instant::now() < deadline,
                "the booking never took the thread"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        };
        assert_unavailable(&refused, "a read behind the booking");
        let queued = app.book(&patient, &doctor, &slot(3, 9, 0), 30).await;
        assert_unavailable(&queued, "a booking behind the booking");
        holder.batch_execute("ROLLBACK").unwrap();
    };
    let (waited, ()) = tokio::join!(waiting, behind);
    assert_eq!(waited.status, StatusCode::CREATED, "{:?}", waited.body);
    // The thread is free again; the abandoned booking was ahead of this read in the queue.
    assert_eq!(app.get("/api/v1/me", &patient).await.status, StatusCode::OK);
    assert_eq!(app.count("SELECT COUNT(*) FROM appointments"), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn postgres_outage_answers_503_and_recovers_without_restart() {
    let Some(app) = TestApp::start_with(Backend::Postgres, |c| {
        c.pool_timeout = Duration::from_millis(800);
        c.pool_size = 3;
    })
    .await
    else {
        return;
    };
    let doctor = app.doctor().await;
    let patient = app.patient().await;
    let name = app.db_url.rsplit('/').next().unwrap().to_owned();
    let mut admin = PgConnection::establish(&pg_admin_url()).unwrap();
    admin
        .batch_execute(&format!(
            "ALTER DATABASE {name} ALLOW_CONNECTIONS false; \
             SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = '{name}'"
        ))
        .unwrap();
    for path in [
        "/api/v1/me",
        "/api/v1/me",
        "/api/v1/me",
        "/api/v1/me",
        "/readyz",
    ] {
        let started = Instant::now();
        let answer = app.get(path, &patient).await;
        assert_unavailable(&answer, path);
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "no hang: {:?}",
            started.elapsed()
        );
        assert!(
            !answer.body.to_string().contains(&name),
            "no database detail"
        );
    }
    admin
        .batch_execute(&format!("ALTER DATABASE {name} ALLOW_CONNECTIONS true"))
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    while app.get("/readyz", &patient).await.status != StatusCode::OK {
        assert!(Instant::now() < deadline, "did not recover");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let booked = app.book(&patient, &doctor, &slot(3, 10, 0), 30).await;
    assert_eq!(booked.status, StatusCode::CREATED, "{:?}", booked.body);
}

/// When the server ends the pool's connections (a restart, an administrator's
/// `pg_terminate_backend`), the first request to use a dead one answers 503, and the pool
/// then tests the connections it hands out: the next requests are served, where each pooled
/// connection used to cost a request a 503 of its own.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn postgres_connections_the_server_ended_cost_one_request_not_one_each() {
    const POOL: i64 = 4;
    let Some(app) = TestApp::start_with(Backend::Postgres, |c| {
        c.pool_timeout = Duration::from_secs(5);
        c.pool_size = POOL as u32;
    })
    .await
    else {
        return;
    };
    let patient = app.patient().await;
    let name = app.db_url.rsplit('/').next().unwrap().to_owned();
    let mut admin = PgConnection::establish(&pg_admin_url()).unwrap();
    let backends = || {
        count_in(
            Backend::Postgres,
            &pg_admin_url(),
            &format!(
                "SELECT count(*) FROM pg_stat_activity WHERE datname = '{name}' \
                 AND backend_type = 'client backend'"
            ),
        )
    };
    // Fill the pool: requests at once until it holds all its connections.
    let deadline = Instant::now() + Duration::from_secs(20);
    while backends() < POOL {
        assert!(Instant::now() < deadline, "the pool did not fill");
        let burst = (0..16).map(|_| app.get("/api/v1/me", &patient));
        for answer in futures_util::future::join_all(burst).await {
            assert_eq!(answer.status, StatusCode::OK);
        }
    }
    admin
        .batch_execute(&format!(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = '{name}'"
        ))
        .unwrap();
    let mut statuses = Vec::new();
    for _ in 0..POOL + 2 {
        let answer = app.get("/api/v1/me", &patient).await;
        if answer.status != StatusCode::OK {
            assert_unavailable(&answer, "a request on a dead connection");
        }
        statuses.push(answer.status.as_u16());
    }
    let failed = statuses.iter().filter(|&&s| s != 200).count();
    assert!(failed <= 1, "one 503 at most: {statuses:?}");
    assert_eq!(statuses.last(), Some(&200), "{statuses:?}");
}

/// What a start (`medbook::server::prepare`, all it does before the server binds) answers for
/// `config`, run off the async workers as `main` runs it.
async fn start_with(config: medbook::config::Config) -> Result<(), String> {
    tokio::task::spawn_blocking(move || medbook::server::prepare(&config).map(|_| ()))
        .await
        .unwrap()
}

/// A database that takes no writes (as a standby does after a fail-over, or a database set
/// read-only for maintenance) answers every write 503 with `Retry-After`, writes nothing and
/// keeps no key busy, while reads go on; a process started meanwhile serves it the same way;
/// once it takes writes again the next connections book. (A read-only transaction was a 500.)
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn postgres_a_database_that_takes_no_writes_answers_them_503_and_recovers() {
    let Some(app) = TestApp::start_with(Backend::Postgres, |c| {
        c.pool_timeout = Duration::from_secs(2);
        c.pool_size = 1;
    })
    .await
    else {
        return;
    };
    let name = app.db_url.rsplit('/').next().unwrap().to_owned();
    let mut admin = PgConnection::establish(&pg_admin_url()).unwrap();
    let (doctor, patient) = (app.doctor().await, app.patient().await);
    common::set_database_default(&app.db_url, "default_transaction_read_only", "on");
    // The pool's connection opened before that: end it, so that the next one is read-only.
    admin
        .batch_execute(&format!(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = '{name}'"
        ))
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    while app.get("/api/v1/me", &patient).await.status != StatusCode::OK {
        assert!(Instant::now() < deadline, "reads did not come back");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let booking =
        json!({"doctor_id": doctor.id, "scheduled_at": slot(3, 10, 0), "type": "in_person"});
    let keyed = || {
        app.send(
            app.client
                .post(format!("{}/api/v1/appointments", app.base))
                .bearer_auth(&patient.token)
                .header("Idempotency-Key", "read-only")
                .json(&booking),
        )
    };
    assert_unavailable(
        &app.book(&patient, &doctor, &slot(3, 10, 0), 30).await,
        "booking",
    );
    assert_unavailable(&keyed().await, "keyed booking");
    let login = app
        .send(
            app.client
                .post(format!("{}/api/v1/auth/login", app.base))
                .json(&json!({"email": common::ADMIN_EMAIL, "password": common::ADMIN_PASSWORD})),
        )
        .await;
    assert_unavailable(&login, "login");
    assert_eq!(app.get("/api/v1/me", &patient).await.status, StatusCode::OK);
    assert_eq!(app.count("SELECT COUNT(*) FROM appointments"), 0);
    assert_eq!(app.count("SELECT COUNT(*) FROM idempotency_keys"), 0);

    // A process started now (a restart during a fail-over) serves it as the running one does.
    // It used to stop at the migrations: diesel creates its table before it reads what is
    // applied, even with nothing to apply.
    let url = app.db_url.clone();
    let late = tokio::task::spawn_blocking(move || Process::start(&url, &[]))
        .await
        .unwrap();
    assert!(
        late.log().contains("the database takes no writes"),
        "{}",
        late.log()
    );
    let http = reqwest::Client::new();
    let me = http
        .get(format!("{}/api/v1/me", late.base))
        .bearer_auth(&patient.token)
        .send()
        .await
        .unwrap();
    assert_eq!(me.status(), StatusCode::OK);
    let write = http
        .post(format!("{}/api/v1/appointments", late.base))
        .bearer_auth(&patient.token)
        .json(&booking)
        .send()
        .await
        .unwrap();
    assert_eq!(write.status(), StatusCode::SERVICE_UNAVAILABLE);
    drop(late);
    // So does one asked for a bootstrap admin it cannot create now, or with an email key to
    // bring to today's form (a migration's list, README): it says so and goes on.
    PgConnection::establish(&app.db_url)
        .unwrap()
        .batch_execute(&format!(
            "BEGIN READ WRITE; INSERT INTO email_keys_pending (user_id) VALUES ({}); COMMIT",
            patient.id
        ))
        .unwrap();
    let mut config = medbook::config::Config::for_database(&app.db_url);
    config.admin_email = Some("later@medbook.test".to_owned());
    config.admin_password = Some("long enough".to_owned());
    start_with(config)
        .await
        .expect("starts without the admin or the re-keying");
    assert_eq!(
        app.count("SELECT COUNT(*) FROM users WHERE email = 'later@medbook.test'"),
        0
    );
    assert_eq!(
        app.count("SELECT COUNT(*) FROM email_keys_pending"),
        1,
        "left for a start that can write"
    );
    // With a migration not applied, the start stops and says why.
    PgConnection::establish(&app.db_url)
        .unwrap()
        .batch_execute(
            "BEGIN READ WRITE; DELETE FROM __diesel_schema_migrations WHERE version = \
             (SELECT MAX(version) FROM __diesel_schema_migrations); COMMIT",
        )
        .unwrap();
    let config = medbook::config::Config::for_database(&app.db_url);
    let refused = start_with(config)
        .await
        .expect_err("a migration cannot be applied");
    assert!(
        refused.starts_with("the database takes no writes")
            && refused.contains("lacks medbook's migration"),
        "{refused}"
    );

    admin
        .batch_execute(&format!(
            "ALTER DATABASE {name} RESET default_transaction_read_only"
        ))
        .unwrap();
    // The connection that met the read-only transaction was dropped; one opened before the
    // reset may still meet it once more.
    let mut answer = keyed().await;
    for _ in 0..3 {
        if answer.status != StatusCode::SERVICE_UNAVAILABLE {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
        answer = keyed().await;
    }
    assert_eq!(answer.status, StatusCode::CREATED, "{:?}", answer.body);
    assert_eq!(answer.header("idempotent-replayed"), "");
}

/// SQLite's twin of the above: a file opened read-only (`DATABASE_URL=file:…?mode=ro`, as for
/// a copy served during maintenance) answers every write 503 with `Retry-After` and writes
/// nothing, while reads and the tokens issued before go on. (`SQLITE_READONLY` was a 500.)
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sqlite_a_database_opened_read_only_answers_writes_503_and_reads_go_on() {
    let app = TestApp::start(Backend::Sqlite).await.unwrap();
    let (doctor, patient) = (app.doctor().await, app.patient().await);
    let booked = app.booked(&patient, &doctor, &slot(3, 10, 0)).await;
    let read_only = Process::start(&format!("file:{}?mode=ro", app.db_url), &[]);
    let at = |path: &str| format!("{}{path}", read_only.base);
    let booking =
        json!({"doctor_id": doctor.id, "scheduled_at": slot(4, 10, 0), "type": "in_person"});
    let post = |path: &str, token: &str, body: &Value| {
        app.client.post(at(path)).bearer_auth(token).json(body)
    };
    assert_unavailable(
        &app.send(post("/api/v1/appointments", &patient.token, &booking))
            .await,
        "booking",
    );
    assert_unavailable(
        &app.send(
            post("/api/v1/appointments", &patient.token, &booking).header("Idempotency-Key", "ro"),
        )
        .await,
        "keyed booking",
    );
    let confirm = app
        .client
        .put(at(&format!("/api/v1/appointments/{booked}")))
        .bearer_auth(&doctor.token)
        .json(&json!({"status": "confirmed"}));
    assert_unavailable(&app.send(confirm).await, "status change");
    let login = json!({"email": common::ADMIN_EMAIL, "password": common::ADMIN_PASSWORD});
    assert_unavailable(
        &app.send(app.client.post(at("/api/v1/auth/login")).json(&login))
            .await,
        "login",
    );

    let read = app
        .send(
            app.client
                .get(at(&format!("/api/v1/appointments/{booked}")))
                .bearer_auth(&patient.token),
        )
        .await;
    assert_eq!(read.status, StatusCode::OK, "{:?}", read.body);
    assert_eq!(read.body["status"], "pending");
    let ready = app.send(app.client.get(at("/readyz"))).await;
    assert_eq!(ready.status, StatusCode::OK);
    assert_eq!(app.count("SELECT COUNT(*) FROM appointments"), 1);
    assert_eq!(app.count("SELECT COUNT(*) FROM idempotency_keys"), 0);
    let log = read_only.log();
    assert!(!log.contains("INTERNAL"), "{log}");
}

/// In a database shared with other applications medbook can keep to a schema of its own
/// (`?options=-csearch_path%3Dmedbook`, README): its tables, `btree_gist` and the migrations'
/// table all go there, and the booking path's locks and constraints work as in `public`.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn postgres_medbook_keeps_to_a_schema_of_its_own() {
    let Some(app) = TestApp::start_with(Backend::Postgres, |c| {
        let mut conn = PgConnection::establish(&c.database_url).unwrap();
        conn.batch_execute("CREATE SCHEMA medbook").unwrap();
        c.database_url = format!("{}?options=-csearch_path%3Dmedbook", c.database_url);
    })
    .await
    else {
        return;
    };
    let (doctor, patient) = (app.doctor().await, app.patient().await);
    let at = slot(3, 10, 0);
    app.booked(&patient, &doctor, &at).await;
    let other = app.patient().await;
    let taken = app.book(&other, &doctor, &at, 30).await;
    assert_eq!(taken.code(), "SLOT_TAKEN", "{:?}", taken.body);
    let tables = |schema: &str| {
        app.count(&format!(
            "SELECT COUNT(*) FROM information_schema.tables WHERE table_schema = '{schema}'"
        ))
    };
    assert_eq!(tables("public"), 0);
    assert_eq!(
        tables("medbook"),
        9,
        "8 tables and __diesel_schema_migrations"
    );
    assert_eq!(
        app.count(
            "SELECT COUNT(*) FROM pg_extension e JOIN pg_namespace n ON n.oid = e.extnamespace \
             WHERE e.extname = 'btree_gist' AND n.nspname = 'medbook'"
        ),
        1
    );
}

/// A PostgreSQL database whose encoding cannot hold every script is refused at start, with
/// what to change (on a LATIN1 database a registration with a Chinese name was a 500); a
/// UTF-8 one of the same server starts.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn postgres_a_database_that_cannot_hold_every_script_is_refused_at_start() {
    let Some(app) = TestApp::start(Backend::Postgres).await else {
        return;
    };
    let name = format!("medbook_latin1_{}", std::process::id());
    let mut admin = PgConnection::establish(&pg_admin_url()).unwrap();
    for statement in [
        format!("DROP DATABASE IF EXISTS {name}"),
        format!(
            "CREATE DATABASE {name} ENCODING 'LATIN1' TEMPLATE template0 \
             LC_COLLATE 'C' LC_CTYPE 'C'"
        ),
    ] {
        admin.batch_execute(&statement).unwrap();
    }
    let (base, _) = app.db_url.rsplit_once('/').unwrap();
    let config = medbook::config::Config::for_database(&format!("{base}/{name}"));
    let refused = start_with(config)
        .await
        .expect_err("a LATIN1 database is refused");
    assert!(
        refused.contains("encoding is LATIN1") && refused.contains("ENCODING 'UTF8'"),
        "{refused}"
    );
    assert_eq!(
        count_in(
            Backend::Postgres,
            &format!("{base}/{name}"),
            "SELECT COUNT(*) FROM pg_tables WHERE schemaname = 'public'"
        ),
        0,
        "refused before migrating"
    );
    admin
        .batch_execute(&format!("DROP DATABASE {name} WITH (FORCE)"))
        .unwrap();
    // The test database itself (UTF8) started: it answers.
    assert_eq!(app.get("/readyz", &app.admin).await.status, StatusCode::OK);
}

/// Migrations that fail leave the database as it was: here a database of another application
/// whose `users` table stands in the way of medbook's first migration. (Each migration was a
/// transaction of its own, and diesel's `__diesel_schema_migrations` was left behind, empty.)
/// The error adds what PostgreSQL's leaves out: the schema's tables and the remedy.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_migrations_that_fail_leave_the_database_as_it_was() {
    let Some(_app) = TestApp::start(Backend::Postgres).await else {
        return;
    };
    let name = format!("medbook_other_{}", std::process::id());
    let mut admin = PgConnection::establish(&pg_admin_url()).unwrap();
    for statement in [
        format!("DROP DATABASE IF EXISTS {name}"),
        format!("CREATE DATABASE {name}"),
    ] {
        admin.batch_execute(&statement).unwrap();
    }
    let admin_url = pg_admin_url();
    let (base, _) = admin_url.rsplit_once('/').unwrap();
    let url = format!("{base}/{name}");
    PgConnection::establish(&url)
        .unwrap()
        .batch_execute("CREATE TABLE users (id serial PRIMARY KEY, login text)")
        .unwrap();
    let config = medbook::config::Config::for_database(&url);
    let refused = start_with(config)
        .await
        .expect_err("medbook's users table cannot be created");
    assert!(
        refused.starts_with("migrations failed")
            && refused.contains("relation \"users\" already exists")
            && refused.contains("holds tables medbook did not make: public.users;")
            && refused.contains("give medbook a schema of its own"),
        "{refused}"
    );
    // A schema of its own that has not been created yet is named.
    let config = medbook::config::Config::for_database(&format!(
        "{url}?options=-csearch_path%3Dmedbook_missing"
    ));
    let refused = start_with(config)
        .await
        .expect_err("there is no schema to create in");
    assert!(
        refused.contains("no schema on the search_path exists: medbook_missing;"),
        "{refused}"
    );
    let count = |query| count_in(Backend::Postgres, &url, query);
    assert_eq!(
        count(
            "SELECT COUNT(*) FROM pg_tables WHERE schemaname = 'public' AND tablename <> 'users'"
        ),
        0,
        "no table left behind"
    );
    assert_eq!(
        count("SELECT COUNT(*) FROM pg_extension WHERE extname = 'btree_gist'"),
        0
    );
    assert_eq!(
        count(
            "SELECT COUNT(*) FROM pg_locks WHERE locktype = 'advisory' \
             AND database = (SELECT oid FROM pg_database WHERE datname = current_database())"
        ),
        0,
        "the migrations' lock went with their transaction"
    );
    admin
        .batch_execute(&format!("DROP DATABASE {name} WITH (FORCE)"))
        .unwrap();
}

/// A server that ends idle sessions (`idle_session_timeout`) does not end the pool's: they
/// stay idle between requests by design, and a request that met one the server had ended
/// was a 503.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn postgres_a_server_idle_session_timeout_leaves_the_pool_alone() {
    let Some(app) = TestApp::start_with(Backend::Postgres, |c| {
        common::set_database_default(&c.database_url, "idle_session_timeout", "'300ms'");
        c.pool_size = 2;
    })
    .await
    else {
        return;
    };
    let patient = app.patient().await;
    for round in 0..3 {
        tokio::time::sleep(Duration::from_millis(700)).await;
        let answers =
            futures_util::future::join_all((0..4).map(|_| app.get("/api/v1/me", &patient))).await;
        for answer in answers {
            assert_eq!(
                answer.status,
                StatusCode::OK,
                "round {round}: {:?}",
                answer.body
            );
        }
    }
    assert_eq!(
        app.count("SELECT COUNT(*) FROM pg_settings WHERE name = 'idle_session_timeout' AND setting = '300'"),
        1,
        "a session of its own meets the database's default"
    );
}

/// Holds the database's write path so that a booking stays in flight: the doctor's row on
/// PostgreSQL, the write lock on SQLite. Released by `COMMIT`.
fn hold_booking_path(
    backend: Backend,
    url: &str,
    doctor_id: i64,
) -> Box<dyn SimpleConnection + Send> {
    match backend {
        Backend::Postgres => Box::new(common::hold_user_row(url, doctor_id)),
        Backend::Sqlite => {
            let mut c = SqliteConnection::establish(url).unwrap();
            c.batch_execute("BEGIN IMMEDIATE").unwrap();
            Box::new(c)
        }
    }
}

async fn sigterm_lets_an_in_flight_booking_commit(app: TestApp) {
    // The process under test is a real medbook on the same database as `app`.
    let server = Process::start(&app.db_url, &[]);
    let client = Client::new(&server.base);
    let admin = client
        .login(common::ADMIN_EMAIL, common::ADMIN_PASSWORD)
        .await;
    let doctor = client.doctor(&admin, 1).await;
    let patient = client.patient(1).await;
    let mut holder = hold_booking_path(app.backend, &app.db_url, doctor.id);
    let booking = {
        let client = Client::new(&server.base);
        let body =
            json!({"doctor_id": doctor.id, "scheduled_at": slot(3, 10, 0), "type": "in_person"});
        let token = patient.token.clone();
        tokio::spawn(async move {
            client
                .post("/api/v1/appointments", Some(&token), body)
                .await
        })
    };
    // The booking is in flight once it waits for the held path. PostgreSQL shows the wait;
    // SQLite's busy handler does not, so there the test waits for the booking's database
    // work to start (it cannot finish while the write lock is held).
    match app.backend {
        Backend::Postgres => {
            let url = app.db_url.clone();
            tokio::task::spawn_blocking(move || common::wait_for_lock_waiter(&url))
                .await
                .unwrap();
        }
        Backend::Sqlite => common::wait_for_database_work(&server.base).await,
    }
    server.signal("TERM");
    // Shutdown has begun with the booking still waiting; the path frees up only after actix's
    // first check for finished connections (1 s after the signal), so a server that gave
    // in-flight requests no time (`shutdown_timeout(0)`) drops this one (checked).
    tokio::time::sleep(Duration::from_millis(1500)).await;
    tokio::task::spawn_blocking(move || holder.batch_execute("COMMIT").unwrap())
        .await
        .unwrap();
    let (status, body) = booking
        .await
        .unwrap()
        .expect("the in-flight request is answered");
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let mut server = server;
    let exit = server.child.wait().unwrap();
    assert!(exit.success(), "graceful exit: {exit}\n{}", server.log());
    assert_eq!(
        app.count(&format!(
            "SELECT COUNT(*) FROM appointments WHERE id = {}",
            body["id"]
        )),
        1
    );
    assert_eq!(
        app.count(&format!(
            "SELECT COUNT(*) FROM appointment_history WHERE appointment_id = {}",
            body["id"]
        )),
        1
    );
}

/// Sends KILL to `server` once `after` has passed and `acknowledged()` has reached `at_least`,
/// whichever comes later: on a slow host the first answers come late, and a kill at a fixed
/// moment could come before any, leaving nothing acknowledged to look for after the restart.
async fn kill_mid_load(
    server: &Process,
    after: Duration,
    at_least: usize,
    acknowledged: impl Fn() -> usize,
) {
    tokio::time::sleep(after).await;
    common::wait_until(&format!("{at_least} acknowledged requests"), || {
        std::future::ready(acknowledged() >= at_least)
    })
    .await;
    server.signal("KILL");
}

async fn sigkill_mid_load_loses_no_acknowledged_booking(app: TestApp) {
    let server = Process::start(&app.db_url, &[]);
    let client = std::sync::Arc::new(Client::new(&server.base));
    let admin = client
        .login(common::ADMIN_EMAIL, common::ADMIN_PASSWORD)
        .await;
    let mut doctors = Vec::new();
    for n in 0..3 {
        doctors.push(client.doctor(&admin, 100 + n).await);
    }
    let mut patients = Vec::new();
    for n in 0..12 {
        patients.push(client.patient(100 + n).await);
    }
    // Bookings in waves until the kill; slots collide on purpose.
    let acknowledged = std::sync::Arc::new(std::sync::Mutex::new(Vec::<(i64, String)>::new()));
    let mut tasks = Vec::new();
    for i in 0..240usize {
        let client = std::sync::Arc::clone(&client);
        let acknowledged = std::sync::Arc::clone(&acknowledged);
        let (doctor, patient) = (doctors[i % 3].id, patients[i % 12].token.clone());
        let at = slot(
            5 + (i % 4) as i64,
            8 + (i % 9) as u32,
            ((i * 7) % 4) as u32 * 15,
        );
        tasks.push(tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis((i as u64 % 40) * 10)).await;
            let body = json!({"doctor_id": doctor, "scheduled_at": at, "type": "in_person", "duration_minutes": 30});
            let answer = client.post("/api/v1/appointments", Some(&patient), body).await;
            if let Ok((StatusCode::CREATED, body)) = &answer {
                acknowledged.lock().unwrap().push((body["id"].as_i64().unwrap(), body["scheduled_at"].as_str().unwrap().to_owned()));
            }
            answer.is_ok()
        }));
    }
    kill_mid_load(&server, Duration::from_millis(200), 10, || {
        acknowledged.lock().unwrap().len()
    })
    .await;
    let mut unanswered = 0;
    for task in tasks {
        if !task.await.unwrap() {
            unanswered += 1;
        }
    }
    drop(server);
    assert!(
        unanswered > 0,
        "the kill came while bookings were in flight"
    );
    let acknowledged = acknowledged.lock().unwrap().clone();
    assert!(
        acknowledged.len() >= 10,
        "at least 10 bookings were acknowledged before the kill"
    );

    // Restart on the same database: everything acknowledged is there, nothing overlaps, and
    // every appointment has its history row.
    let restarted = Process::start(&app.db_url, &[]);
    let after = Client::new(&restarted.base);
    let admin = after
        .login(common::ADMIN_EMAIL, common::ADMIN_PASSWORD)
        .await;
    for (id, at) in &acknowledged {
        let response = after
            .http
            .get(format!("{}/api/v1/appointments/{id}", after.base))
            .bearer_auth(&admin.token)
            .send()
            .await
            .unwrap();
        assert_eq!(
            response.status(),
            StatusCode::OK,
            "acknowledged booking {id} is lost"
        );
        let body: Value = response.json().await.unwrap();
        assert_eq!(body["scheduled_at"].as_str(), Some(at.as_str()));
    }
    assert_no_overlaps_in(app.backend, &app.db_url);
    let appointments = count_in(
        app.backend,
        &app.db_url,
        "SELECT COUNT(*) FROM appointments",
    );
    let with_history = count_in(
        app.backend,
        &app.db_url,
        "SELECT COUNT(DISTINCT appointment_id) FROM appointment_history WHERE version = 1",
    );
    assert_eq!(
        appointments, with_history,
        "a booking and its history row commit together"
    );
    assert!(appointments >= acknowledged.len() as i64);
}

/// Two processes purging at once on PostgreSQL can read the same batch, and the `DELETE` that
/// comes second removes none of it. That must not end its purge while expired rows remain (it
/// did: the loop stopped at the first batch that deleted nothing, leaving the rest until its
/// next run). Played for real: another session deletes the oldest batch and holds its commit
/// until this purge's `DELETE` of the same rows waits for it. (SQLite has one writer at a
/// time and a batch reads and deletes under it, so two purges there cannot meet.)
#[test]
fn postgres_a_purge_goes_on_past_a_batch_another_process_deleted_first() {
    let dir = tempfile::tempdir().unwrap();
    let Some(db) = ScratchDb::new(Backend::Postgres, dir.path()) else {
        return;
    };
    let pool = db.migrated_pool();
    let batch = medbook::services::PURGE_BATCH;
    let mut other = PgConnection::establish(&db.url).unwrap();
    other
        .batch_execute(&format!(
            "INSERT INTO users (name, email, email_key, password_hash, role, created_at, updated_at) \
             VALUES ('p', 'p@example.com', 'p@example.com', '-', 'patient', now(), now()); \
             INSERT INTO api_tokens (user_id, token_hash, created_at, session_epoch) \
             SELECT (SELECT id FROM users WHERE email_key = 'p@example.com'), 'old-' || g, \
                    timestamp '2020-01-01' + g * interval '1 second', 0 \
             FROM generate_series(1, {}) g",
            batch + 500
        ))
        .unwrap();
    other
        .batch_execute(&format!(
            "BEGIN; DELETE FROM api_tokens WHERE id IN \
             (SELECT id FROM api_tokens ORDER BY created_at LIMIT {batch})"
        ))
        .unwrap();
    let purge = std::thread::spawn(move || {
        let mut conn = pool.get().unwrap();
        let cutoff = medbook::time::now() - chrono::Duration::days(1);
        medbook::services::auth::purge_expired_tokens(&mut conn, &Default::default(), cutoff)
            .unwrap()
    });
    common::wait_for_lock_waiter(&db.url);
    other.batch_execute("COMMIT").unwrap();
    assert_eq!(purge.join().unwrap(), 500);
    assert_eq!(
        count_in(
            Backend::Postgres,
            &db.url,
            "SELECT COUNT(*) FROM api_tokens"
        ),
        0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_processes_on_one_postgres_database_book_one_slot_once() {
    let dir = tempfile::tempdir().unwrap();
    let Some(db) = tokio::task::spawn_blocking({
        let path = dir.path().to_owned();
        move || ScratchDb::new(Backend::Postgres, &path)
    })
    .await
    .unwrap() else {
        return;
    };
    // Started together: the migrations are serialized by an advisory lock.
    let (a, b) = {
        let (url_a, url_b) = (db.url.clone(), db.url.clone());
        let a = std::thread::spawn(move || Process::start(&url_a, &[]));
        let b = std::thread::spawn(move || Process::start(&url_b, &[]));
        (a.join().unwrap(), b.join().unwrap())
    };
    let (ca, cb) = (Client::new(&a.base), Client::new(&b.base));
    let admin = ca.login(common::ADMIN_EMAIL, common::ADMIN_PASSWORD).await;
    let doctor = ca.doctor(&admin, 7).await;
    let mut patients = Vec::new();
    for n in 0..40 {
        patients.push(if n % 2 == 0 {
            ca.patient(200 + n).await
        } else {
            cb.patient(200 + n).await
        });
    }
    let at = slot(6, 10, 0);
    let answers = futures_util::future::join_all(patients.iter().enumerate().map(|(n, p)| {
        let client = if n % 2 == 0 { &ca } else { &cb };
        let body = json!({"doctor_id": doctor.id, "scheduled_at": at, "type": "in_person"});
        async move {
            client
                .post("/api/v1/appointments", Some(&p.token), body)
                .await
                .unwrap()
        }
    }))
    .await;
    let created = answers
        .iter()
        .filter(|(s, _)| *s == StatusCode::CREATED)
        .count();
    assert_eq!(created, 1, "{answers:?}");
    assert!(answers
        .iter()
        .filter(|(s, _)| *s != StatusCode::CREATED)
        .all(|(s, b)| *s == StatusCode::CONFLICT && b["code"] == "SLOT_TAKEN"));
    assert_eq!(
        count_in(
            Backend::Postgres,
            &db.url,
            "SELECT COUNT(*) FROM appointments"
        ),
        1
    );
    drop((a, b));
}

/// Processes started together on a new SQLite file all start: the migrations run in one
/// write transaction, so one process applies them while the others wait and find nothing
/// left. (They read the same pending list, and all but one failed to start with "table users
/// already exists" in most rounds of three.)
#[test]
fn sqlite_processes_started_together_on_a_new_file_all_migrate_and_serve() {
    for round in 0..4 {
        let dir = tempfile::tempdir().unwrap();
        let url = dir.path().join("medbook.db").to_string_lossy().into_owned();
        let started: Vec<_> = (0..3)
            .map(|_| {
                let url = url.clone();
                // Waiting for another's migrations as long as the test app would.
                let wait = [("MEDBOOK_SQLITE_BUSY_TIMEOUT_MS", "15000")];
                std::thread::spawn(move || Process::start(&url, &wait))
            })
            .collect();
        let servers: Vec<Process> = started
            .into_iter()
            .map(|s| {
                s.join()
                    .unwrap_or_else(|_| panic!("round {round}: a start failed"))
            })
            .collect();
        let migrations = std::fs::read_dir("migrations/sqlite").unwrap().count() as i64;
        let count = |query| count_in(Backend::Sqlite, &url, query);
        assert_eq!(
            count("SELECT COUNT(*) FROM __diesel_schema_migrations"),
            migrations
        );
        assert_eq!(count("SELECT COUNT(*) FROM users WHERE role = 'admin'"), 1);
        let applied: usize = servers
            .iter()
            .map(|s| s.log().matches("applied migration").count())
            .sum();
        assert_eq!(applied as i64, migrations, "each applied once");
    }
}

async fn sigkill_with_idempotency_keys_neither_loses_nor_repeats_work(app: TestApp) {
    let server = Process::start(&app.db_url, &[]);
    let client = std::sync::Arc::new(Client::new(&server.base));
    let admin = client
        .login(common::ADMIN_EMAIL, common::ADMIN_PASSWORD)
        .await;
    let doctor = client.doctor(&admin, 300).await;
    let patient = client.patient(300).await;
    let request = |n: usize| {
        let body = json!({"doctor_id": doctor.id, "scheduled_at": slot(9, 8 + (n / 4) as u32, (n % 4) as u32 * 15), "type": "in_person", "duration_minutes": 15});
        (format!("order-{n}"), body)
    };
    let send = |base: String, token: String, key: String, body: Value| async move {
        let response = reqwest::Client::new()
            .post(format!("{base}/api/v1/appointments"))
            .bearer_auth(token)
            .header("Idempotency-Key", key)
            .json(&body)
            .timeout(Duration::from_secs(30))
            .send()
            .await?;
        let status = response.status();
        Ok::<_, reqwest::Error>((status, response.text().await?))
    };
    let created = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let mut tasks = Vec::new();
    for n in 0..40 {
        let (key, body) = request(n);
        let (base, token) = (server.base.clone(), patient.token.clone());
        let created = std::sync::Arc::clone(&created);
        tasks.push(tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(n as u64 * 5)).await;
            let answer = send(base, token, key, body).await;
            if matches!(answer, Ok((StatusCode::CREATED, _))) {
                created.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            }
            answer
        }));
    }
    kill_mid_load(&server, Duration::from_millis(120), 3, || {
        created.load(std::sync::atomic::Ordering::SeqCst)
    })
    .await;
    let mut first = Vec::new();
    for task in tasks {
        first.push(task.await.unwrap().ok());
    }
    drop(server);
    let acknowledged = first
        .iter()
        .filter(|r| matches!(r, Some((StatusCode::CREATED, _))))
        .count();
    eprintln!("before the kill: {acknowledged} of 40 orders acknowledged");
    assert!(
        acknowledged >= 3,
        "at least 3 orders were acknowledged before the kill"
    );
    assert!(
        first.iter().any(Option::is_none),
        "the kill came while orders were in flight"
    );

    // The client retries every request with its key after the restart. Claims whose request
    // died with the process are in use until their lease runs out; let it run out.
    let restarted = Process::start(&app.db_url, &[]);
    let old = if app.backend == Backend::Postgres {
        "now() - interval '1 hour'"
    } else {
        "datetime('now', '-1 hour')"
    };
    app.sql(&format!(
        "UPDATE idempotency_keys SET claimed_at = {old} WHERE state = 'in_flight'"
    ));
    for (n, earlier) in first.iter().enumerate() {
        let (key, body) = request(n);
        let (status, text) = send(restarted.base.clone(), patient.token.clone(), key, body)
            .await
            .unwrap();
        assert_eq!(
            status,
            StatusCode::CREATED,
            "retry of order-{n} (first answer {earlier:?}): {text}"
        );
        if let Some((StatusCode::CREATED, first_text)) = earlier {
            assert_eq!(
                &text, first_text,
                "an acknowledged order is replayed, not redone"
            );
        }
    }
    // Exactly one appointment per key: none lost, none made twice.
    assert_eq!(
        count_in(
            app.backend,
            &app.db_url,
            &format!(
                "SELECT COUNT(*) FROM appointments WHERE patient_id = {}",
                patient.id
            )
        ),
        40
    );
    assert_eq!(
        count_in(
            app.backend,
            &app.db_url,
            "SELECT COUNT(*) FROM idempotency_keys WHERE state = 'completed'"
        ),
        40
    );
    assert_no_overlaps_in(app.backend, &app.db_url);
}

/// A setting that cannot mean what it says stops the process at once, with exit code 2 and a
/// line naming the variable and what it takes, before the database is touched (no file is
/// created). Taken as they were, `0` connections and a `0` ms pool timeout panicked at start,
/// 100 000 workers and 2⁶⁴ − 1 password hashes at once panicked after the migrations, a
/// pool size past 2³² wrapped around to 1, and a lock timeout past PostgreSQL's range
/// refused every connection until start-up gave up.
#[test]
fn settings_that_cannot_mean_what_they_say_stop_the_start_before_the_database() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("medbook.db");
    for (name, value, said) in [
        (
            "MEDBOOK_POOL_SIZE",
            "0",
            "must be between 1 and 1024, got 0",
        ),
        (
            "MEDBOOK_POOL_SIZE",
            "4294967297",
            "must be between 1 and 1024",
        ),
        ("MEDBOOK_POOL_TIMEOUT_MS", "0", "must be at least 1, got 0"),
        ("MEDBOOK_WORKERS", "100000", "must be between 1 and 512"),
        (
            "MEDBOOK_LOCK_TIMEOUT_MS",
            "99999999999",
            "between 0 and 2147483647",
        ),
        (
            "MEDBOOK_STATEMENT_TIMEOUT_MS",
            "-5",
            "must be a non-negative integer",
        ),
        (
            "MEDBOOK_SQLITE_BUSY_TIMEOUT_MS",
            "3000000000",
            "between 0 and 2147483647",
        ),
        (
            "MEDBOOK_RETRY_ATTEMPTS",
            "4294967297",
            "must be between 0 and 10",
        ),
        (
            "MEDBOOK_PASSWORD_HASHES",
            "18446744073709551615",
            "must be between 1 and 256",
        ),
        (
            "MEDBOOK_LISTEN",
            "notanaddr",
            "must be host:port (e.g. 127.0.0.1:8080), got \"notanaddr\"",
        ),
        (
            "MEDBOOK_LISTEN",
            "127.0.0.1:99999",
            "got \"127.0.0.1:99999\"",
        ),
    ] {
        // In the scratch directory: a developer's own `.env` in the checkout stays out of it.
        let (code, stderr) = run_to_exit_in(
            dir.path(),
            &[
                ("DATABASE_URL", db.to_str().unwrap()),
                ("MEDBOOK_LISTEN", "127.0.0.1:0"),
                (name, value),
            ],
        );
        assert_eq!(code, Some(2), "{name}={value}: {stderr}");
        assert!(
            stderr.contains(&format!("configuration: {name} ")) && stderr.contains(said),
            "{name}={value}: {stderr}"
        );
        assert!(!stderr.contains("panicked"), "{name}={value}: {stderr}");
        assert!(!db.exists(), "{name}={value} touched the database");
    }

    // One of the two bootstrap-admin variables without the other is said at start, not
    // silently ignored.
    let process = Process::start(
        db.to_str().unwrap(),
        &[
            ("MEDBOOK_ADMIN_PASSWORD", ""),
            ("MEDBOOK_ADMIN_EMAIL", "root@medbook.test"),
        ],
    );
    assert!(
        process
            .log()
            .contains("only one of MEDBOOK_ADMIN_EMAIL and MEDBOOK_ADMIN_PASSWORD is set"),
        "{}",
        process.log()
    );
}

/// A `.env` that cannot be read whole stops the start (exit code 2, the line named), before
/// the database is touched. Its loading stops at the first line it cannot parse, and the
/// `DATABASE_URL` below such a line was silently dropped: the server ran on `medbook.db`, a
/// new and empty database, instead of the configured one.
#[test]
fn a_dotenv_that_cannot_be_read_whole_stops_the_start() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join(".env"),
        "MEDBOOK_LISTEN=127.0.0.1:0\nBROKEN LINE\nDATABASE_URL=configured.db\n",
    )
    .unwrap();
    let (code, stderr) = run_to_exit_in(dir.path(), &[]);
    assert_eq!(code, Some(2), "{stderr}");
    assert!(
        stderr.contains("configuration: cannot read .env: ") && stderr.contains("BROKEN LINE"),
        "{stderr}"
    );
    let files: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|entry| entry.unwrap().file_name())
        .collect();
    assert_eq!(files, [".env"], "no database was created");

    // Mended, it is read to its last line (whose setting is judged).
    std::fs::write(
        dir.path().join(".env"),
        "MEDBOOK_LISTEN=127.0.0.1:0\nDATABASE_URL=configured.db\nMEDBOOK_POOL_SIZE=0\n",
    )
    .unwrap();
    let (code, stderr) = run_to_exit_in(dir.path(), &[]);
    assert_eq!(code, Some(2), "{stderr}");
    assert!(stderr.contains("configuration: MEDBOOK_POOL_SIZE must be between 1 and 1024"));
}

/// `--help` and `--version` answer on stdout with exit code 0, as an operator expects; an
/// argument medbook does not take is named, with the usage, and exit code 2.
#[test]
fn the_binary_answers_help_and_version_and_names_an_unknown_argument() {
    let run = |args: &[&str]| {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_medbook"))
            .args(args)
            .env("DATABASE_URL", "/nonexistent/never-opened.db")
            .output()
            .expect("medbook runs");
        let text = |bytes: &[u8]| String::from_utf8_lossy(bytes).into_owned();
        (out.status.code(), text(&out.stdout), text(&out.stderr))
    };
    for flag in ["--help", "-h"] {
        let (code, stdout, _) = run(&[flag]);
        assert_eq!(code, Some(0), "{flag}");
        assert!(
            stdout.starts_with("usage: medbook [serve | openapi"),
            "{stdout}"
        );
    }
    for flag in ["--version", "-V"] {
        let (code, stdout, _) = run(&[flag]);
        assert_eq!(code, Some(0), "{flag}");
        assert_eq!(stdout, format!("medbook {}\n", env!("CARGO_PKG_VERSION")));
    }
    let (code, stdout, stderr) = run(&["--port", "80"]);
    assert_eq!(code, Some(2));
    assert_eq!(stdout, "");
    assert!(
        stderr.starts_with("medbook: unknown arguments [\"--port\", \"80\"]\nusage: medbook"),
        "{stderr}"
    );

    // A reader that stops early (`medbook openapi | head`) ends the output quietly (it was a
    // panic with a backtrace, exit code 101); one that cannot take it is told, exit code 1.
    let openapi = |stdout: std::process::Stdio| {
        let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_medbook"))
            .arg("openapi")
            .stdout(stdout)
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("medbook runs");
        drop(child.stdout.take());
        let out = child.wait_with_output().unwrap();
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let (code, stderr) = openapi(std::process::Stdio::piped());
    assert_eq!((code, stderr.as_str()), (Some(0), ""));
    let full = std::fs::OpenOptions::new()
        .write(true)
        .open("/dev/full")
        .unwrap();
    let (code, stderr) = openapi(full.into());
    assert_eq!(code, Some(1), "{stderr}");
    assert!(
        stderr.starts_with("medbook: cannot write to stdout: "),
        "{stderr}"
    );
}

/// Runs `medbook` in working directory `dir` with `env`, and none of this process's
/// `DATABASE_URL` or `MEDBOOK_*` (a `.env` in `dir` may set them), until it exits (at most
/// 20 s: one still running then is killed and fails the test); its exit code and stderr.
fn run_to_exit_in(dir: &std::path::Path, env: &[(&str, &str)]) -> (Option<i32>, String) {
    use std::io::Read;
    let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_medbook"));
    for (name, _) in std::env::vars() {
        if name == "DATABASE_URL" || name.starts_with("MEDBOOK_") {
            command.env_remove(name);
        }
    }
    let mut child = command
        .current_dir(dir)
        .envs(env.iter().copied())
        .env("RUST_LOG", "info")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("medbook runs");
    let deadline = Instant::now() + Duration::from_secs(20);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("medbook {env:?} was still running after 20 s");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let mut stderr = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut stderr)
        .unwrap();
    (status.code(), stderr)
}
