//! The optimistic lifecycle: status moves, versions, reschedules, history, prescriptions and
//! ratings, under concurrency, on both backends.

mod common;

use std::collections::BTreeMap;

use common::{slot, Actor, Answer, TestApp};
use medbook::domain::{transition, Party, Status};
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

both_backends!(
    confirm_racing_cancel_has_one_winner_per_round,
    unversioned_concurrent_moves_apply_a_reachable_sequence,
    stale_versions_get_412_or_409_with_current,
    full_lifecycle_and_who_may_move_it,
    concurrent_reschedules_into_one_free_slot_have_one_winner,
    reschedule_keeps_the_id_and_returns_to_pending,
    concurrent_prescriptions_yield_one,
    prescriptions_update_and_acknowledge_once,
    concurrent_ratings_yield_one_and_feed_the_average,
    null_clears_an_optional_text_and_leaving_it_out_keeps_it,
    an_unchanged_time_beside_a_status_or_reason_is_no_reschedule,
    a_time_that_moved_since_the_request_was_judged_is_409,
    a_change_that_changes_nothing_writes_nothing,
);

/// A database whose sessions default to SERIALIZABLE (a DBA's choice medbook may meet) gives
/// the same answers: medbook's sessions run READ COMMITTED, as its transactions are written
/// for. Without that, a lost race in these two was `DEADLOCK_DETECTED` (serialization
/// failures, retried until the retries ran out) instead of `VERSION_CONFLICT`.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn postgres_a_stricter_default_isolation_leaves_the_races_answered_as_documented() {
    for race in [0, 1] {
        let Some(app) = TestApp::start_with(common::Backend::Postgres, |c| {
            common::set_database_default(
                &c.database_url,
                "default_transaction_isolation",
                "'serializable'",
            );
        })
        .await
        else {
            return;
        };
        assert_eq!(
            app.count(
                "SELECT COUNT(*) FROM pg_settings WHERE name = 'default_transaction_isolation' \
                 AND setting = 'serializable'"
            ),
            1,
            "a session of its own meets the database's default"
        );
        match race {
            0 => confirm_racing_cancel_has_one_winner_per_round(app).await,
            _ => unversioned_concurrent_moves_apply_a_reachable_sequence(app).await,
        }
    }
}

/// A status change is not held up by the user-row locks of a booking or reschedule, and so
/// cannot deadlock with one. The reschedule locks the doctor's row, then waits for the
/// patient's (held here); meanwhile the doctor confirms the appointment. The confirmation's
/// history row references the doctor, and that foreign-key check takes a `KEY SHARE` lock on
/// the doctor's row. Under the booking path's former `FOR UPDATE` it waited for the
/// reschedule, which then needed the appointment row the confirmation held: a deadlock, and
/// the confirmation, which is not retried, answered `409 DEADLOCK_DETECTED` (found by
/// `tests/mixed_load.rs`). `FOR NO KEY UPDATE` still excludes other bookings and a
/// deactivation, but not foreign-key checks.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn postgres_a_status_change_does_not_wait_for_a_reschedules_row_locks() {
    use diesel::connection::SimpleConnection;

    let Some(app) = TestApp::start(common::Backend::Postgres).await else {
        return;
    };
    let doctor = app.doctor().await;
    let patient = app.patient().await;
    assert!(
        doctor.id < patient.id,
        "the reschedule locks the doctor first"
    );
    let id = app.booked(&patient, &doctor, &slot(3, 9, 0)).await;

    let mut holder = common::hold_user_row(&app.db_url, patient.id);
    let reschedule = {
        let (client, url, token) = (
            app.client.clone(),
            format!("{}{}", app.base, appointment(id)),
            patient.token.clone(),
        );
        tokio::spawn(async move {
            let answer = client
                .put(url)
                .bearer_auth(token)
                .json(&json!({"scheduled_at": slot(4, 9, 0)}))
                .send()
                .await
                .unwrap();
            (answer.status(), answer.json::<Value>().await.unwrap())
        })
    };
    let url = app.db_url.clone();
    tokio::task::spawn_blocking(move || common::wait_for_lock_waiter(&url))
        .await
        .unwrap();

    // The reschedule holds the doctor's row and waits: the confirmation goes through.
    let confirmed = tokio::time::timeout(
        std::time::Duration::from_secs(10),
        set_status(&app, id, &doctor, "confirmed", None),
    )
    .await
    .expect("the confirmation waited for the reschedule's row lock");
    assert_eq!(confirmed.status, StatusCode::OK, "{:?}", confirmed.body);
    assert_eq!(confirmed.body["version"], 2);

    holder.batch_execute("COMMIT").unwrap();
    let (status, moved) = reschedule.await.unwrap();
    // It lost the race to version 2 and applied itself to it (it sent no version).
    assert_eq!(status, StatusCode::OK, "{moved:?}");
    assert_eq!(
        (moved["status"].as_str(), moved["version"].as_i64()),
        (Some("pending"), Some(3))
    );
    let history = app
        .get(&format!("{}/history", appointment(id)), &patient)
        .await;
    let actions: Vec<&str> = history.body["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|row| row["action"].as_str().unwrap())
        .collect();
    assert_eq!(actions, ["created", "confirmed", "rescheduled"]);
}

fn appointment(id: i64) -> String {
    format!("/api/v1/appointments/{id}")
}

async fn set_status(
    app: &TestApp,
    id: i64,
    actor: &Actor,
    status: &str,
    version: Option<i64>,
) -> Answer {
    let mut body = json!({ "status": status });
    if let Some(v) = version {
        body["version"] = json!(v);
    }
    app.put(&appointment(id), actor, body).await
}

async fn confirm_racing_cancel_has_one_winner_per_round(app: TestApp) {
    let doctor = app.doctor().await;
    let patient = app.patient().await;
    for round in 0..20u32 {
        let id = app
            .booked(
                &patient,
                &doctor,
                &slot(3 + i64::from(round / 10), 8 + round % 10, 0),
            )
            .await;
        let (confirm, cancel) = tokio::join!(
            set_status(&app, id, &doctor, "confirmed", Some(1)),
            set_status(&app, id, &patient, "cancelled", Some(1)),
        );
        let (winner, loser, status) = match (confirm.status, cancel.status) {
            (StatusCode::OK, StatusCode::CONFLICT) => (&confirm, &cancel, "confirmed"),
            (StatusCode::CONFLICT, StatusCode::OK) => (&cancel, &confirm, "cancelled"),
            other => panic!(
                "round {round}: {other:?} {:?} {:?}",
                confirm.body, cancel.body
            ),
        };
        assert_eq!(loser.code(), "VERSION_CONFLICT");
        assert_eq!(loser.body["current"]["status"], status);
        assert_eq!(winner.body["version"], 2);
        let now = app.get(&appointment(id), &patient).await;
        assert_eq!(
            (now.body["status"].as_str(), now.body["version"].as_i64()),
            (Some(status), Some(2))
        );
        let history = app
            .get(&format!("{}/history", appointment(id)), &patient)
            .await;
        let items = history.body["items"].as_array().unwrap();
        assert_eq!(items.len(), 2, "round {round}");
        assert_eq!(items[1]["to_status"], status);
        assert_eq!(items[1]["version"], 2);
    }
}

async fn unversioned_concurrent_moves_apply_a_reachable_sequence(app: TestApp) {
    let doctor = app.doctor().await;
    let patient = app.patient().await;
    let id = app.booked(&patient, &doctor, &slot(3, 9, 0)).await;
    let admin = app.admin.clone();
    let moves: Vec<(&Actor, Party, &str)> = vec![
        (&doctor, Party::Doctor, "confirmed"),
        (&doctor, Party::Doctor, "confirmed"),
        (&doctor, Party::Doctor, "in_progress"),
        (&doctor, Party::Doctor, "in_progress"),
        (&doctor, Party::Doctor, "completed"),
        (&doctor, Party::Doctor, "completed"),
        (&doctor, Party::Doctor, "rejected"),
        (&patient, Party::Patient, "cancelled"),
        (&admin, Party::Admin, "cancelled"),
        (&doctor, Party::Doctor, "cancelled"),
    ];
    let answers = futures_util::future::join_all(
        moves
            .iter()
            .map(|(actor, _, to)| set_status(&app, id, actor, to, None)),
    )
    .await;
    let mut winners = BTreeMap::new();
    for ((_, party, to), answer) in moves.iter().zip(&answers) {
        match answer.status {
            StatusCode::OK => {
                let version = answer.body["version"].as_i64().unwrap();
                assert!(
                    winners.insert(version, (*party, *to)).is_none(),
                    "two winners of version {version}"
                );
            }
            StatusCode::CONFLICT => assert_eq!(answer.code(), "VERSION_CONFLICT"),
            StatusCode::UNPROCESSABLE_ENTITY => assert_eq!(answer.code(), "INVALID_TRANSITION"),
            StatusCode::FORBIDDEN => {}
            other => panic!("unexpected {other}: {:?}", answer.body),
        }
    }
    assert!(!winners.is_empty());
    // The winners, in version order, are a valid walk from pending.
    let mut state = Status::Pending;
    for (expected_version, (version, (party, to))) in (2..).zip(&winners) {
        assert_eq!(*version, expected_version, "versions are contiguous");
        let to = Status::parse(to).unwrap();
        assert_eq!(
            transition(state, to, *party),
            Ok(()),
            "{state:?} -> {to:?} by {party:?}"
        );
        state = to;
    }
    let now = app.get(&appointment(id), &patient).await;
    assert_eq!(now.body["status"], state.as_str());
    assert_eq!(
        now.body["version"].as_i64().unwrap(),
        1 + winners.len() as i64
    );
    let history = app
        .get(&format!("{}/history", appointment(id)), &patient)
        .await;
    let items = history.body["items"].as_array().unwrap();
    assert_eq!(
        items.len(),
        1 + winners.len(),
        "one history row per applied change"
    );
    for item in &items[1..] {
        let (_, to) = winners[&item["version"].as_i64().unwrap()];
        assert_eq!(item["to_status"], to);
    }
}

async fn stale_versions_get_412_or_409_with_current(app: TestApp) {
    let doctor = app.doctor().await;
    let patient = app.patient().await;
    let id = app.booked(&patient, &doctor, &slot(3, 10, 0)).await;
    let with_if_match = |tag: &'static str, body: Value| {
        app.send(
            app.client
                .put(format!("{}{}", app.base, appointment(id)))
                .bearer_auth(&doctor.token)
                .header("If-Match", tag)
                .json(&body),
        )
    };
    let confirmed = with_if_match("\"1\"", json!({"status": "confirmed"})).await;
    assert_eq!(confirmed.status, StatusCode::OK);
    assert_eq!(confirmed.header("etag"), "\"2\"");
    let stale = with_if_match("\"1\"", json!({"status": "in_progress"})).await;
    assert_eq!(
        (stale.status, stale.code()),
        (StatusCode::PRECONDITION_FAILED, "PRECONDITION_FAILED")
    );
    let stale_body = set_status(&app, id, &doctor, "in_progress", Some(1)).await;
    assert_eq!(stale_body.code(), "VERSION_CONFLICT");
    assert_eq!(stale_body.body["current"]["version"], 2);
    assert_eq!(stale_body.body["current"]["status"], "confirmed");
    let current = set_status(&app, id, &doctor, "in_progress", Some(2)).await;
    assert_eq!(current.status, StatusCode::OK);
    assert_eq!(current.body["version"], 3);
    let disagree = with_if_match("\"3\"", json!({"status": "completed", "version": 2})).await;
    assert_eq!(disagree.status, StatusCode::UNPROCESSABLE_ENTITY);
    let garbage = with_if_match("soon", json!({"status": "completed"})).await;
    assert_eq!(garbage.status, StatusCode::BAD_REQUEST);
}

async fn full_lifecycle_and_who_may_move_it(app: TestApp) {
    let doctor = app.doctor().await;
    let other_doctor = app.doctor().await;
    let patient = app.patient().await;
    let stranger = app.patient().await;
    let id = app.booked(&patient, &doctor, &slot(3, 11, 0)).await;

    let by_patient = set_status(&app, id, &patient, "confirmed", None).await;
    assert_eq!(by_patient.status, StatusCode::FORBIDDEN);
    assert_eq!(
        set_status(&app, id, &stranger, "cancelled", None)
            .await
            .status,
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        set_status(&app, id, &other_doctor, "confirmed", None)
            .await
            .status,
        StatusCode::NOT_FOUND
    );
    let unknown = set_status(&app, id, &doctor, "teleported", None).await;
    assert_eq!(unknown.code(), "VALIDATION_FAILED");
    let empty = app.put(&appointment(id), &doctor, json!({})).await;
    assert_eq!(empty.status, StatusCode::UNPROCESSABLE_ENTITY);

    app.walk(id, &doctor, &["confirmed", "in_progress"]).await;
    let patient_cancel = set_status(&app, id, &patient, "cancelled", None).await;
    assert_eq!(patient_cancel.status, StatusCode::FORBIDDEN);
    app.walk(id, &doctor, &["completed"]).await;
    let back = set_status(&app, id, &doctor, "confirmed", None).await;
    assert_eq!(
        (back.status, back.code()),
        (StatusCode::UNPROCESSABLE_ENTITY, "INVALID_TRANSITION")
    );
    assert!(back.body["error"]
        .as_str()
        .unwrap()
        .contains("Invalid status transition"));

    let history = app
        .get(&format!("{}/history", appointment(id)), &doctor)
        .await;
    let steps: Vec<_> = history.body["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| h["to_status"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(steps, ["pending", "confirmed", "in_progress", "completed"]);
    assert_eq!(history.body["items"][1]["actor_id"], doctor.id);
    assert_eq!(history.body["items"][1]["from_status"], "pending");
    assert_eq!(
        app.get(&format!("{}/history", appointment(id)), &stranger)
            .await
            .status,
        StatusCode::NOT_FOUND
    );

    // An admin may cancel; a PATCH behaves as a PUT.
    let second = app.booked(&patient, &doctor, &slot(3, 12, 0)).await;
    let cancelled = app
        .call(
            Method::PATCH,
            &appointment(second),
            Some(&app.admin.token),
            Some(json!({"status": "cancelled"})),
        )
        .await;
    assert_eq!(cancelled.status, StatusCode::OK);
    assert_eq!(cancelled.body["status"], "cancelled");
    let reason = app
        .put(&appointment(second), &patient, json!({"reason": "late"}))
        .await;
    assert_eq!(reason.code(), "INVALID_TRANSITION");
}

async fn concurrent_reschedules_into_one_free_slot_have_one_winner(app: TestApp) {
    let doctor = app.doctor().await;
    let (p1, p2) = (app.patient().await, app.patient().await);
    let (s1, s2, target) = (slot(4, 9, 0), slot(4, 10, 0), slot(4, 15, 0));
    let a = app.booked(&p1, &doctor, &s1).await;
    let b = app.booked(&p2, &doctor, &s2).await;
    let (path_a, path_b) = (appointment(a), appointment(b));
    let (ra, rb) = tokio::join!(
        app.put(&path_a, &p1, json!({"scheduled_at": target})),
        app.put(&path_b, &p2, json!({"scheduled_at": target})),
    );
    let (winner, loser, loser_slot, loser_actor) = match (ra.status, rb.status) {
        (StatusCode::OK, StatusCode::CONFLICT) => (&ra, (b, &rb), &s2, &p2),
        (StatusCode::CONFLICT, StatusCode::OK) => (&rb, (a, &ra), &s1, &p1),
        other => panic!("{other:?}: {:?} {:?}", ra.body, rb.body),
    };
    assert_eq!(loser.1.code(), "SLOT_TAKEN");
    assert_eq!(winner.body["scheduled_at"], target.as_str());
    assert_eq!(winner.body["version"], 2);
    let kept = app.get(&appointment(loser.0), loser_actor).await;
    assert_eq!(kept.body["scheduled_at"], loser_slot.as_str());
    assert_eq!(kept.body["version"], 1);
    app.assert_no_overlaps();
}

async fn reschedule_keeps_the_id_and_returns_to_pending(app: TestApp) {
    let doctor = app.doctor().await;
    let patient = app.patient().await;
    let id = app.booked(&patient, &doctor, &slot(5, 9, 0)).await;
    app.walk(id, &doctor, &["confirmed"]).await;
    // Overlapping its own old slot is fine.
    let moved = app
        .put(
            &appointment(id),
            &patient,
            json!({"scheduled_at": slot(5, 9, 15), "duration_minutes": 45, "version": 2}),
        )
        .await;
    assert_eq!(moved.status, StatusCode::OK, "{:?}", moved.body);
    assert_eq!(moved.id(), id);
    assert_eq!(moved.body["status"], "pending");
    assert_eq!(moved.body["version"], 3);
    assert_eq!(moved.body["ends_at"], slot(5, 10, 0).as_str());
    let history = app
        .get(&format!("{}/history", appointment(id)), &patient)
        .await;
    let last = history.body["items"]
        .as_array()
        .unwrap()
        .last()
        .unwrap()
        .clone();
    assert_eq!(
        (
            last["action"].as_str(),
            last["from_status"].as_str(),
            last["version"].as_i64()
        ),
        (Some("rescheduled"), Some("confirmed"), Some(3))
    );
    let busy = app
        .busy(&doctor, &slot(5, 0, 0), &slot(6, 0, 0), &patient)
        .await;
    assert_eq!(
        busy.body["items"],
        json!([{"start": slot(5, 9, 15), "end": slot(5, 10, 0)}])
    );

    let past = app
        .put(
            &appointment(id),
            &patient,
            json!({"scheduled_at": "2001-01-01T00:00:00Z"}),
        )
        .await;
    assert!(past.body["details"]["scheduled_at"].is_string());
    let mixed = app
        .put(
            &appointment(id),
            &doctor,
            json!({"scheduled_at": slot(5, 11, 0), "status": "confirmed"}),
        )
        .await;
    assert_eq!(mixed.status, StatusCode::UNPROCESSABLE_ENTITY);
    let by_admin = app
        .put(
            &appointment(id),
            &app.admin,
            json!({"scheduled_at": slot(5, 11, 0)}),
        )
        .await;
    assert_eq!(by_admin.status, StatusCode::FORBIDDEN);
    app.walk(id, &doctor, &["confirmed", "in_progress"]).await;
    let too_late = app
        .put(
            &appointment(id),
            &doctor,
            json!({"scheduled_at": slot(5, 12, 0)}),
        )
        .await;
    assert_eq!(too_late.code(), "INVALID_TRANSITION");
}

/// A completed appointment of a fresh doctor and patient.
async fn completed(app: &TestApp, day: i64) -> (Actor, Actor, i64) {
    let doctor = app.doctor().await;
    let patient = app.patient().await;
    let id = app.booked(&patient, &doctor, &slot(day, 9, 0)).await;
    app.walk(id, &doctor, &["confirmed", "in_progress", "completed"])
        .await;
    (doctor, patient, id)
}

/// `doctor` prescribes `medications()`, "with food", for appointment `done`: (id, path).
async fn prescribe(app: &TestApp, doctor: &Actor, done: i64) -> (i64, String) {
    let rx = app
        .post(
            "/api/v1/prescriptions",
            doctor,
            json!({"appointment_id": done, "medications": medications(), "notes": "with food"}),
        )
        .await;
    assert_eq!(rx.status, StatusCode::CREATED, "{:?}", rx.body);
    (rx.id(), format!("/api/v1/prescriptions/{}", rx.id()))
}

/// `patient` rates appointment `done` 4, "kind": (id, path).
async fn rate(app: &TestApp, patient: &Actor, done: i64) -> (i64, String) {
    let rating = app
        .post(
            "/api/v1/ratings",
            patient,
            json!({"appointment_id": done, "score": 4, "comment": "kind"}),
        )
        .await;
    assert_eq!(rating.status, StatusCode::CREATED, "{:?}", rating.body);
    (rating.id(), format!("/api/v1/ratings/{}", rating.id()))
}

fn medications() -> Value {
    json!([{"name": "Amoxicillin", "dosage": "500 mg", "frequency": "3x daily", "duration_days": 7}])
}

async fn concurrent_prescriptions_yield_one(app: TestApp) {
    let (doctor, patient, id) = completed(&app, 3).await;
    let answers = futures_util::future::join_all((0..10).map(|_| {
        app.post(
            "/api/v1/prescriptions",
            &doctor,
            json!({"appointment_id": id, "medications": medications()}),
        )
    }))
    .await;
    common::assert_one_winner(&answers, "PRESCRIPTION_EXISTS");
    assert_eq!(
        app.count(&format!(
            "SELECT COUNT(*) FROM prescriptions WHERE appointment_id = {id}"
        )),
        1
    );

    let pending = app.booked(&patient, &doctor, &slot(4, 9, 0)).await;
    let early = app
        .post(
            "/api/v1/prescriptions",
            &doctor,
            json!({"appointment_id": pending, "medications": medications()}),
        )
        .await;
    assert_eq!(
        (early.status, early.code()),
        (
            StatusCode::UNPROCESSABLE_ENTITY,
            "APPOINTMENT_NOT_COMPLETED"
        )
    );
    let by_patient = app
        .post(
            "/api/v1/prescriptions",
            &patient,
            json!({"appointment_id": id, "medications": medications()}),
        )
        .await;
    assert_eq!(by_patient.status, StatusCode::FORBIDDEN);
    let other_doctor = app.doctor().await;
    let hidden = app
        .post(
            "/api/v1/prescriptions",
            &other_doctor,
            json!({"appointment_id": id, "medications": medications()}),
        )
        .await;
    assert_eq!(hidden.status, StatusCode::NOT_FOUND);
    for bad in [
        json!([]),
        json!([{"name": "", "dosage": "1", "frequency": "daily"}]),
        Value::Array(vec![medications()[0].clone(); 51]),
    ] {
        let answer = app
            .post(
                "/api/v1/prescriptions",
                &doctor,
                json!({"appointment_id": id, "medications": bad}),
            )
            .await;
        assert_eq!(answer.code(), "VALIDATION_FAILED", "{bad}");
    }
}

async fn prescriptions_update_and_acknowledge_once(app: TestApp) {
    let (doctor, patient, id) = completed(&app, 3).await;
    let created = app
        .post(
            "/api/v1/prescriptions",
            &doctor,
            json!({"appointment_id": id, "medications": medications(), "notes": "with food"}),
        )
        .await;
    assert_eq!(created.status, StatusCode::CREATED);
    assert!(created.body["acknowledged_at"].is_null());
    let pid = created.id();
    let path = format!("/api/v1/prescriptions/{pid}");
    assert_eq!(
        app.get(&path, &patient).await.body["medications"],
        medications()
    );
    assert_eq!(
        app.get(&format!("{}/prescription", appointment(id)), &patient)
            .await
            .id(),
        pid
    );
    assert_eq!(
        app.get(&path, &app.patient().await).await.status,
        StatusCode::NOT_FOUND
    );

    let updated = app
        .put(&path, &doctor, json!({"notes": "after food", "version": 1}))
        .await;
    assert_eq!(
        (updated.status, updated.body["version"].as_i64()),
        (StatusCode::OK, Some(2))
    );
    let stale = app
        .put(&path, &doctor, json!({"notes": "x", "version": 1}))
        .await;
    assert_eq!(stale.code(), "VERSION_CONFLICT");
    assert_eq!(
        app.put(&path, &patient, json!({"notes": "mine"}))
            .await
            .status,
        StatusCode::FORBIDDEN
    );

    let acknowledge = format!("{path}/acknowledge");
    let (first, second) = tokio::join!(
        app.post(&acknowledge, &patient, json!({})),
        app.post(&acknowledge, &patient, json!({})),
    );
    let mut statuses = [first.status.as_u16(), second.status.as_u16()];
    statuses.sort();
    assert_eq!(statuses, [200, 409]);
    assert!(first.code() == "ALREADY_ACKNOWLEDGED" || second.code() == "ALREADY_ACKNOWLEDGED");
    let late_edit = app
        .put(&path, &doctor, json!({"notes": "too late", "version": 3}))
        .await;
    assert_eq!(late_edit.code(), "ALREADY_ACKNOWLEDGED");
    let acknowledged = app.get(&path, &doctor).await;
    assert!(acknowledged.body["acknowledged_at"]
        .as_str()
        .unwrap()
        .ends_with('Z'));
    assert_eq!(acknowledged.body["version"], 3);
    assert_eq!(acknowledged.body["notes"], "after food");
    let by_doctor = app
        .post(&format!("{path}/acknowledge"), &doctor, json!({}))
        .await;
    assert_eq!(by_doctor.code(), "ALREADY_ACKNOWLEDGED");
}

async fn concurrent_ratings_yield_one_and_feed_the_average(app: TestApp) {
    let (doctor, patient, id) = completed(&app, 3).await;
    let answers = futures_util::future::join_all((1..=10).map(|i| {
        app.post(
            "/api/v1/ratings",
            &patient,
            json!({"appointment_id": id, "score": 1 + i % 5}),
        )
    }))
    .await;
    common::assert_one_winner(&answers, "RATING_EXISTS");
    let rating = answers
        .iter()
        .find(|a| a.status == StatusCode::CREATED)
        .unwrap();
    let path = format!("/api/v1/ratings/{}", rating.id());

    let changed = app
        .put(
            &path,
            &patient,
            json!({"score": 5, "comment": "great", "version": 1}),
        )
        .await;
    assert_eq!(
        (changed.status, changed.body["version"].as_i64()),
        (StatusCode::OK, Some(2))
    );
    assert_eq!(
        app.put(&path, &patient, json!({"score": 4, "version": 1}))
            .await
            .code(),
        "VERSION_CONFLICT"
    );
    assert_eq!(
        app.put(&path, &patient, json!({"score": 6})).await.code(),
        "VALIDATION_FAILED"
    );
    assert_eq!(
        app.put(&path, &doctor, json!({"score": 1})).await.status,
        StatusCode::FORBIDDEN
    );
    assert_eq!(app.get(&path, &doctor).await.body["score"], 5);

    // A second completed appointment with the same doctor, rated 2: the average is 3.5.
    let id2 = app.booked(&patient, &doctor, &slot(4, 9, 0)).await;
    app.walk(id2, &doctor, &["confirmed", "in_progress", "completed"])
        .await;
    let by_doctor = app
        .post(
            "/api/v1/ratings",
            &doctor,
            json!({"appointment_id": id2, "score": 2}),
        )
        .await;
    assert_eq!(by_doctor.status, StatusCode::FORBIDDEN);
    assert_eq!(
        app.post(
            "/api/v1/ratings",
            &patient,
            json!({"appointment_id": id2, "score": 2})
        )
        .await
        .status,
        StatusCode::CREATED
    );
    let summary = app
        .get(&format!("/api/v1/doctors/{}", doctor.id), &patient)
        .await;
    assert_eq!(summary.body["rating_count"], 2);
    assert_eq!(summary.body["rating_avg"], 3.5);
    let pending = app.booked(&patient, &doctor, &slot(5, 9, 0)).await;
    let early = app
        .post(
            "/api/v1/ratings",
            &patient,
            json!({"appointment_id": pending, "score": 3}),
        )
        .await;
    assert_eq!(early.code(), "APPOINTMENT_NOT_COMPLETED");
}

/// `reason`, `notes` and `comment` in an update: left out keeps the stored text, `null` clears
/// it (JSON Merge Patch). `null` was read as "left out": the answer was `200` with the old
/// text still there.
async fn null_clears_an_optional_text_and_leaving_it_out_keeps_it(app: TestApp) {
    let (doctor, patient, done) = completed(&app, 3).await;
    let cleared = |answer: &Answer, field: &str, version: i64| {
        assert_eq!(answer.status, StatusCode::OK, "{field}: {:?}", answer.body);
        assert!(answer.body[field].is_null(), "{field}: {:?}", answer.body);
        assert_eq!(answer.body["version"], version, "{field}");
    };

    // An appointment's reason: alone, beside a status move, beside a reschedule.
    let id = app.booked(&patient, &doctor, &slot(4, 9, 0)).await;
    let path = appointment(id);
    let set = app.put(&path, &patient, json!({"reason": "cough"})).await;
    assert_eq!(set.body["reason"], "cough");
    let kept = set_status(&app, id, &doctor, "confirmed", None).await;
    assert_eq!(kept.body["reason"], "cough", "left out: kept");
    cleared(
        &app.put(&path, &patient, json!({"reason": null})).await,
        "reason",
        4,
    );
    assert!(app.get(&path, &doctor).await.body["reason"].is_null());
    app.put(&path, &patient, json!({"reason": "fever"})).await;
    let moved = app
        .put(
            &path,
            &doctor,
            json!({"scheduled_at": slot(4, 11, 0), "reason": null}),
        )
        .await;
    cleared(&moved, "reason", 6);
    assert_eq!(moved.body["status"], "pending");
    app.put(&path, &patient, json!({"reason": "fever"})).await;
    let cancelled = app
        .put(
            &path,
            &patient,
            json!({"status": "cancelled", "reason": null}),
        )
        .await;
    cleared(&cancelled, "reason", 8);

    // A prescription's notes, beside new medications.
    let (_, rx_path) = prescribe(&app, &doctor, done).await;
    let fewer_days = json!([{"name": "Amoxicillin", "dosage": "500 mg", "frequency": "3x daily", "duration_days": 5}]);
    let kept = app
        .put(&rx_path, &doctor, json!({"medications": fewer_days}))
        .await;
    assert_eq!(kept.body["version"], 2);
    assert_eq!(kept.body["notes"], "with food", "left out: kept");
    cleared(
        &app.put(&rx_path, &doctor, json!({"notes": null})).await,
        "notes",
        3,
    );
    assert!(app.get(&rx_path, &patient).await.body["notes"].is_null());

    // A rating's comment, beside a new score.
    let (rating, rating_path) = rate(&app, &patient, done).await;
    let kept = app.put(&rating_path, &patient, json!({"score": 5})).await;
    assert_eq!(kept.body["comment"], "kind", "left out: kept");
    let both = app
        .put(&rating_path, &patient, json!({"score": 3, "comment": null}))
        .await;
    cleared(&both, "comment", 3);
    assert_eq!(both.body["score"], 3);
    assert!(app.get(&rating_path, &doctor).await.body["comment"].is_null());
    // The stored value is NULL, not an empty text.
    assert_eq!(
        app.count(&format!(
            "SELECT COUNT(*) FROM ratings WHERE id = {} AND comment IS NULL",
            rating
        )),
        1
    );
}

/// A form that sends the appointment's own time and duration back beside a status or a reason
/// does not reschedule: a reschedule would send a confirmed appointment back to `pending`
/// (and a status beside a time was a 422).
async fn an_unchanged_time_beside_a_status_or_reason_is_no_reschedule(app: TestApp) {
    let doctor = app.doctor().await;
    let patient = app.patient().await;
    let at = slot(6, 9, 0);
    let id = app.booked(&patient, &doctor, &at).await;
    let path = appointment(id);
    app.walk(id, &doctor, &["confirmed"]).await;

    let noted = app
        .put(
            &path,
            &patient,
            json!({"scheduled_at": at, "duration_minutes": 30, "reason": "bring results", "version": 2}),
        )
        .await;
    assert_eq!(noted.status, StatusCode::OK, "{:?}", noted.body);
    assert_eq!(
        (
            noted.body["status"].as_str(),
            noted.body["version"].as_i64()
        ),
        (Some("confirmed"), Some(3))
    );
    assert_eq!(noted.body["reason"], "bring results");
    let started = app
        .put(
            &path,
            &doctor,
            json!({"status": "in_progress", "scheduled_at": at, "duration_minutes": 30}),
        )
        .await;
    assert_eq!(started.status, StatusCode::OK, "{:?}", started.body);
    assert_eq!(started.body["status"], "in_progress");
    assert_eq!(started.body["scheduled_at"], at.as_str());
    let history = app.get(&format!("{path}/history"), &patient).await;
    let actions: Vec<_> = history.body["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["action"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(actions, ["created", "confirmed", "updated", "in_progress"]);
    // The time alone, sent again, changes nothing (`a_change_that_changes_nothing_writes_nothing`).
    let nothing = app.put(&path, &doctor, json!({"scheduled_at": at})).await;
    assert_eq!(
        (nothing.status, nothing.body["version"].as_i64()),
        (StatusCode::OK, Some(4))
    );

    // Someone who may not see the appointment learns nothing about its time: the same answer
    // for its own time and for another.
    let stranger = app.patient().await;
    let mut answers = Vec::new();
    for time in [at.clone(), slot(6, 11, 0)] {
        let answer = app
            .put(
                &path,
                &stranger,
                json!({"status": "cancelled", "scheduled_at": time}),
            )
            .await;
        answers.push((answer.status, answer.body));
    }
    assert_eq!(answers[0], answers[1]);
}

/// The "unchanged time" judgment is made again on every attempt: a change judged on a row
/// that was rescheduled before its UPDATE ran loses the race, and its retry, finding another
/// time than the one sent, answers 409 with the row instead of applying the status to the
/// moved appointment. (Through the service, to hand it the stale row the token read gave.)
async fn a_time_that_moved_since_the_request_was_judged_is_409(app: TestApp) {
    use medbook::db::Contention;
    use medbook::extract::Expected;
    use medbook::services::appointments::{update, UpdateInput};
    use medbook::services::patch::Patch;

    let doctor = app.doctor().await;
    let patient = app.patient().await;
    let at = slot(7, 9, 0);
    let id = app.booked(&patient, &doctor, &at).await;
    let pool = app.service_pool();
    let mut conn = pool.get().expect("connection");
    let stale = medbook::models::appointment::find(&mut conn, id as i32).expect("read");
    let moved = app
        .put(
            &appointment(id),
            &patient,
            json!({"scheduled_at": slot(7, 11, 0)}),
        )
        .await;
    assert_eq!(moved.status, StatusCode::OK, "{:?}", moved.body);

    let sent_time = chrono::DateTime::parse_from_rfc3339(&at)
        .unwrap()
        .naive_utc();
    let input = UpdateInput {
        status: Some("confirmed".into()),
        scheduled_at: Some(medbook::time::InputTime(sent_time)),
        duration_minutes: None,
        reason: Patch::Keep,
        version: None,
    };
    let caller = medbook::auth::Caller {
        id: doctor.id as i32,
        role: medbook::domain::Role::Doctor,
        token_hash: String::new(),
    };
    let answer = update(
        &mut conn,
        &caller,
        id as i32,
        stale,
        &input,
        Expected::Latest,
        &Contention::default(),
    );
    assert_eq!(answer.unwrap_err().code(), "VERSION_CONFLICT");
    let now = app.get(&appointment(id), &patient).await;
    assert_eq!(
        (now.body["status"].as_str(), now.body["version"].as_i64()),
        (Some("pending"), Some(2))
    );
}

/// A change that passes every check but leaves the resource as it is writes nothing: `200`
/// with the resource as it is, the same version and `ETag`, no history row. It wrote a new
/// version, so a retried `PUT` (or a form saved unchanged) moved the version on and made
/// everyone else's next change a `409`. A stale version is still refused, and so is a change
/// the caller may not make or that a final state forbids.
async fn a_change_that_changes_nothing_writes_nothing(app: TestApp) {
    let (doctor, patient, done) = completed(&app, 3).await;
    let unchanged = |answer: &Answer, version: i64| {
        assert_eq!(answer.status, StatusCode::OK, "{:?}", answer.body);
        assert_eq!(answer.body["version"], version, "{:?}", answer.body);
        assert_eq!(answer.header("etag"), format!("\"{version}\""));
    };

    // An appointment: its reason, `null` for no reason, its own time, each sent again.
    let at = slot(4, 9, 0);
    let id = app.booked(&patient, &doctor, &at).await;
    let path = appointment(id);
    unchanged(&app.put(&path, &patient, json!({"reason": null})).await, 1);
    let set = app.put(&path, &patient, json!({"reason": "cough"})).await;
    unchanged(&set, 2);
    for (actor, body) in [
        (&patient, json!({"reason": "cough"})),
        (&doctor, json!({"reason": "cough", "version": 2})),
        (
            &patient,
            json!({"scheduled_at": at, "duration_minutes": 30}),
        ),
    ] {
        let again = app.put(&path, actor, body).await;
        unchanged(&again, 2);
        assert_eq!(again.body, set.body);
    }
    let history = app.get(&format!("{path}/history"), &patient).await;
    assert_eq!(history.body["items"].as_array().unwrap().len(), 2);
    let stale = app
        .put(&path, &patient, json!({"reason": "cough", "version": 1}))
        .await;
    assert_eq!(stale.code(), "VERSION_CONFLICT");
    let stranger = app.patient().await;
    let hidden = app.put(&path, &stranger, json!({"reason": "cough"})).await;
    assert_eq!(hidden.status, StatusCode::NOT_FOUND);
    // A final appointment cannot be changed, not even to what it is.
    let cancelled = set_status(&app, id, &patient, "cancelled", None).await;
    assert_eq!(cancelled.body["version"], 3);
    let final_reason = app.put(&path, &patient, json!({"reason": "cough"})).await;
    assert_eq!(final_reason.code(), "INVALID_TRANSITION");

    // A prescription: the same medications and notes.
    let (rx, rx_path) = prescribe(&app, &doctor, done).await;
    let same = json!({"medications": medications(), "notes": "with food"});
    unchanged(&app.put(&rx_path, &doctor, same.clone()).await, 1);
    let not_hers = app.put(&rx_path, &patient, same.clone()).await;
    assert_eq!(not_hers.status, StatusCode::FORBIDDEN);

    // A rating: its score and comment.
    let (rating, rating_path) = rate(&app, &patient, done).await;
    unchanged(
        &app.put(
            &rating_path,
            &patient,
            json!({"score": 4, "comment": "kind"}),
        )
        .await,
        1,
    );

    // A user: the name (trimmed, as stored), the active flag, the specialty.
    let admin_path = format!("/api/v1/admin/users/{}", doctor.id);
    let me = app.get("/api/v1/me", &doctor).await;
    let name = me.body["name"].as_str().unwrap().to_owned();
    let user = app
        .call(
            Method::PATCH,
            &admin_path,
            Some(&app.admin.token),
            Some(json!({"name": format!(" {name} "), "is_active": true, "specialty": me.body["specialty"]})),
        )
        .await;
    unchanged(&user, 1);

    // Nothing was written: every version is where the changes above left it.
    for (table, id, version) in [
        ("appointments", id, 3),
        ("prescriptions", rx, 1),
        ("ratings", rating, 1),
        ("users", doctor.id, 1),
    ] {
        assert_eq!(
            app.count(&format!("SELECT version FROM {table} WHERE id = {id}")),
            version,
            "{table}"
        );
    }
}
