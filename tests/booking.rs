//! The booking path under concurrency, on both backends.

mod common;

use common::{slot, Actor, TestApp};
use medbook::db::{classify, DbErrorClass};
use reqwest::{Method, StatusCode};
use serde_json::json;

both_backends!(
    concurrent_bookings_of_one_slot_yield_one_winner,
    concurrent_overlapping_bookings_yield_one_winner,
    cancelled_or_rejected_slot_can_be_booked_again,
    patient_cannot_hold_two_overlapping_appointments,
    doctor_deactivated_during_bookings_refuses_every_later_one,
    booking_rules_answer_with_the_documented_codes,
    lists_are_scoped_to_the_caller_and_paginate,
    doctors_directory_and_busy_intervals,
    the_database_refuses_overlaps_whatever_the_code_does,
);

async fn concurrent_bookings_of_one_slot_yield_one_winner(app: TestApp) {
    let doctor = app.doctor().await;
    let patients = app.patients(50).await;
    let at = slot(3, 10, 0);
    let answers =
        futures_util::future::join_all(patients.iter().map(|p| app.book(p, &doctor, &at, 30)))
            .await;
    let created = answers
        .iter()
        .filter(|a| a.status == StatusCode::CREATED)
        .count();
    let taken: Vec<_> = answers
        .iter()
        .filter(|a| a.status == StatusCode::CONFLICT)
        .collect();
    assert_eq!(
        created,
        1,
        "{:?}",
        answers.iter().map(|a| &a.body).collect::<Vec<_>>()
    );
    assert_eq!(taken.len(), 49);
    for answer in taken {
        assert_eq!(answer.code(), "SLOT_TAKEN");
        assert!(answer.body["error"]
            .as_str()
            .unwrap()
            .contains("Doctor already has appointment at this time"));
    }
    let active = app.count(&format!(
        "SELECT COUNT(*) FROM appointments WHERE doctor_id = {} AND status IN ('pending','confirmed','in_progress')",
        doctor.id
    ));
    assert_eq!(active, 1);
    assert_eq!(app.count("SELECT COUNT(*) FROM appointment_history"), 1);
}

async fn concurrent_overlapping_bookings_yield_one_winner(app: TestApp) {
    let doctor = app.doctor().await;
    let patients = app.patients(30).await;
    let (app_ref, doctor_ref) = (&app, &doctor);
    // Starts 0, 5, …, 25 minutes past 14:00, 30 minutes long: every pair overlaps.
    let answers = futures_util::future::join_all(patients.iter().enumerate().map(|(i, p)| {
        let at = slot(4, 14, (i % 6) as u32 * 5);
        async move { app_ref.book(p, doctor_ref, &at, 30).await }
    }))
    .await;
    common::assert_one_winner(&answers, "SLOT_TAKEN");
    app.assert_no_overlaps();
    // Touching intervals do not overlap: the slot right after is free.
    let first = answers
        .iter()
        .find(|a| a.status == StatusCode::CREATED)
        .unwrap();
    let ends_at = first.body["ends_at"].as_str().unwrap().to_owned();
    let next = app.book(&app.patient().await, &doctor, &ends_at, 30).await;
    assert_eq!(next.status, StatusCode::CREATED, "{:?}", next.body);
}

async fn cancelled_or_rejected_slot_can_be_booked_again(app: TestApp) {
    let doctor = app.doctor().await;
    let at = slot(5, 9, 0);
    for final_status in ["cancelled", "rejected"] {
        let first = app.booked(&app.patient().await, &doctor, &at).await;
        let again = app.book(&app.patient().await, &doctor, &at, 30).await;
        assert_eq!(again.code(), "SLOT_TAKEN");
        app.sql(&format!(
            "UPDATE appointments SET status = '{final_status}' WHERE id = {first}"
        ));
        let rebooked = app.book(&app.patient().await, &doctor, &at, 30).await;
        assert_eq!(rebooked.status, StatusCode::CREATED, "{:?}", rebooked.body);
        app.sql(&format!(
            "UPDATE appointments SET status = 'cancelled' WHERE id = {}",
            rebooked.id()
        ));
    }
}

/// Rows written past the booking path (a bug, a hand-written statement): the database itself
/// refuses overlapping active appointments and an `ends_at` that is not the start plus the
/// duration, on PostgreSQL by its constraints and on SQLite by the triggers that stand for
/// them, and medbook tells which one refused.
async fn the_database_refuses_overlaps_whatever_the_code_does(app: TestApp) {
    let (d1, d2) = (&app.doctor().await, &app.doctor().await);
    let (p1, p2) = (&app.patient().await, &app.patient().await);
    let doctor = Err(DbErrorClass::ExclusionViolation {
        constraint: Some("appointments_doctor_no_overlap".to_owned()),
    });
    let patient = Err(DbErrorClass::ExclusionViolation {
        constraint: Some("appointments_patient_no_overlap".to_owned()),
    });
    let run = |sql: &str| {
        app.connection()
            .batch_execute(sql)
            .map_err(|e| classify(&e))
    };
    let day = "2031-03-04";
    let (t0900, t1000, t1015, t1030) = ("09:00:00", "10:00:00", "10:15:00", "10:30:00");
    let (t1045, t1100, t1130, t1300) = ("10:45:00", "11:00:00", "11:30:00", "13:00:00");
    // (patient, doctor, start, end, minutes, status, what the database answers)
    let inserts = [
        (p1, d1, t1000, t1030, 30, "pending", Ok(())),
        // The doctor's time, by another patient, starting inside it or around it.
        (p2, d1, t1015, t1045, 30, "pending", doctor.clone()),
        (p2, d1, t0900, t1300, 240, "confirmed", doctor.clone()),
        // The patient's time, with another doctor.
        (p1, d2, t1015, t1045, 30, "pending", patient.clone()),
        // Touching is not overlapping, and an inactive appointment holds no time.
        (p2, d1, t1030, t1100, 30, "pending", Ok(())),
        (p1, d2, t1015, t1045, 30, "cancelled", Ok(())),
        // An end that is not the start plus the duration.
        (
            p1,
            d1,
            t1100,
            t1300,
            30,
            "pending",
            Err(DbErrorClass::CheckViolation),
        ),
    ];
    for (patient, doctor, start, end, minutes, status, expected) in inserts {
        let sql = format!(
            "INSERT INTO appointments (patient_id, doctor_id, scheduled_at, duration_minutes, \
             ends_at, type, reason, status, version, created_at, updated_at) VALUES ({}, {}, \
             '{day} {start}', {minutes}, '{day} {end}', 'in_person', NULL, '{status}', 1, \
             '2026-01-01 00:00:00', '2026-01-01 00:00:00')",
            patient.id, doctor.id
        );
        assert_eq!(run(&sql), expected, "{sql}");
    }
    let status = |from: &str, to: &str| {
        format!("UPDATE appointments SET status = '{to}' WHERE status = '{from}'")
    };
    let moved = |from: &str, start: &str, end: &str| {
        format!(
            "UPDATE appointments SET scheduled_at = '{day} {start}', ends_at = '{day} {end}' \
             WHERE scheduled_at = '{day} {from}'"
        )
    };
    let updates = [
        // Made active again over the patient's other appointment.
        (status("cancelled", "pending"), patient),
        // Moved onto the doctor's other appointment.
        (moved(t1030, t1015, t1045), doctor),
        // Status changes and moves to free time pass.
        (status("pending", "confirmed"), Ok(())),
        (moved(t1030, t1100, t1130), Ok(())),
    ];
    for (sql, expected) in updates {
        assert_eq!(run(&sql), expected, "{sql}");
    }
    assert_eq!(app.count("SELECT COUNT(*) FROM appointments"), 3);
    app.assert_no_overlaps();
    // The API reads and books around those rows as around its own.
    let booked = app.book(p2, d1, &format!("{day}T10:20:00Z"), 30).await;
    assert_eq!(
        (booked.status, booked.code()),
        (StatusCode::CONFLICT, "SLOT_TAKEN")
    );
}

async fn patient_cannot_hold_two_overlapping_appointments(app: TestApp) {
    let (a, b) = (app.doctor().await, app.doctor().await);
    let patient = app.patient().await;
    app.booked(&patient, &a, &slot(6, 10, 0)).await;
    let clash = app.book(&patient, &b, &slot(6, 10, 15), 30).await;
    assert_eq!(clash.status, StatusCode::CONFLICT);
    assert_eq!(clash.code(), "PATIENT_BUSY");
    // Concurrently, one patient booking two doctors at one time: one wins.
    let other = app.patient().await;
    let at = slot(7, 11, 0);
    let (x, y) = tokio::join!(app.book(&other, &a, &at, 30), app.book(&other, &b, &at, 30));
    let mut statuses = [x.status.as_u16(), y.status.as_u16()];
    statuses.sort();
    assert_eq!(statuses, [201, 409]);
    assert!(x.code() == "PATIENT_BUSY" || y.code() == "PATIENT_BUSY");
    app.assert_no_overlaps();
}

async fn doctor_deactivated_during_bookings_refuses_every_later_one(app: TestApp) {
    let doctor = app.doctor().await;
    let patients = app.patients(20).await;
    let (app_ref, doctor_ref) = (&app, &doctor);
    let bookings = futures_util::future::join_all(patients.iter().enumerate().map(|(i, p)| {
        let at = slot(8, 8 + (i / 2) as u32, (i % 2) as u32 * 30);
        async move { app_ref.book(p, doctor_ref, &at, 30).await }
    }));
    let deactivate = async {
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        let answer = app.deactivate(doctor.id).await;
        (answer, chrono::Utc::now().naive_utc())
    };
    let (answers, (deactivated, answered_at)) = tokio::join!(bookings, deactivate);
    assert_eq!(deactivated.status, StatusCode::OK, "{:?}", deactivated.body);
    assert_eq!(deactivated.body["is_active"], false);
    let mut created = 0;
    for answer in &answers {
        match answer.status {
            StatusCode::CREATED => {
                created += 1;
                let at = medbook::time::parse(answer.body["created_at"].as_str().unwrap()).unwrap();
                assert!(
                    at < answered_at,
                    "a booking was created after the deactivation"
                );
            }
            StatusCode::CONFLICT => assert_eq!(answer.code(), "DOCTOR_INACTIVE"),
            other => panic!("unexpected {other}: {:?}", answer.body),
        }
    }
    assert_eq!(
        app.count(&format!(
            "SELECT COUNT(*) FROM appointments WHERE doctor_id = {}",
            doctor.id
        )),
        created
    );
    let late = app
        .book(&app.patient().await, &doctor, &slot(9, 10, 0), 30)
        .await;
    assert_eq!(late.code(), "DOCTOR_INACTIVE");
    assert!(!app.get("/api/v1/doctors", &app.admin).await.body["items"]
        .as_array()
        .unwrap()
        .iter()
        .any(|d| d["id"] == doctor.id));
}

async fn booking_rules_answer_with_the_documented_codes(app: TestApp) {
    let doctor = app.doctor().await;
    let patient = app.patient().await;
    let at = slot(10, 10, 0);
    let book = |body: serde_json::Value| app.post("/api/v1/appointments", &patient, body);

    // The horizon, then a time that is in UTC the year 10000: outside the years medbook takes.
    for (far, said) in [
        ("9999-12-31T23:00:00Z", "10 years"),
        ("9999-12-31T23:00:00-05:00", "0001 to 9999"),
    ] {
        let answer =
            book(json!({"doctor_id": doctor.id, "scheduled_at": far, "type": "in_person"})).await;
        assert_eq!(answer.code(), "VALIDATION_FAILED");
        assert!(
            answer.detail("scheduled_at").contains(said),
            "{far}: {:?}",
            answer.body
        );
    }
    let past = book(json!({"doctor_id": doctor.id, "scheduled_at": "2001-01-01T10:00:00Z", "type": "in_person"})).await;
    assert_eq!(
        (past.status, past.code()),
        (StatusCode::UNPROCESSABLE_ENTITY, "VALIDATION_FAILED")
    );
    assert!(past.body["details"]["scheduled_at"].is_string());

    for minutes in [4, 241] {
        let bad = book(json!({"doctor_id": doctor.id, "scheduled_at": at, "type": "in_person", "duration_minutes": minutes})).await;
        assert!(
            bad.body["details"]["duration_minutes"].is_string(),
            "{minutes}"
        );
    }
    let bad_type =
        book(json!({"doctor_id": doctor.id, "scheduled_at": at, "type": "telepathy"})).await;
    assert!(bad_type.body["details"]["type"].is_string());
    let bad_time =
        book(json!({"doctor_id": doctor.id, "scheduled_at": "next tuesday", "type": "in_person"}))
            .await;
    assert_eq!(bad_time.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(bad_time.body["details"]["scheduled_at"].is_string());
    // A leap second was a 500 on PostgreSQL (its end broke the table's CHECK).
    let leap = book(
        json!({"doctor_id": doctor.id, "scheduled_at": "2031-06-30T23:59:60Z", "type": "in_person"}),
    )
    .await;
    assert_eq!(
        (leap.status, leap.code()),
        (StatusCode::UNPROCESSABLE_ENTITY, "VALIDATION_FAILED")
    );
    assert!(leap.body["details"]["scheduled_at"]
        .as_str()
        .unwrap()
        .contains("leap second"));
    let missing = book(json!({"scheduled_at": at, "type": "in_person"})).await;
    assert_eq!(missing.status, StatusCode::UNPROCESSABLE_ENTITY);

    let unknown = book(json!({"doctor_id": 999999, "scheduled_at": at, "type": "in_person"})).await;
    assert_eq!(unknown.status, StatusCode::NOT_FOUND);
    let not_a_doctor =
        book(json!({"doctor_id": app.patient().await.id, "scheduled_at": at, "type": "in_person"}))
            .await;
    assert_eq!(not_a_doctor.status, StatusCode::NOT_FOUND);

    let by_doctor = app.book(&doctor, &doctor, &at, 30).await;
    assert_eq!(by_doctor.status, StatusCode::FORBIDDEN);

    // Offsets are converted to UTC; the plain form is taken as UTC.
    let day = &at[..10];
    let offset = book(json!({"doctor_id": doctor.id, "scheduled_at": format!("{day}T12:00:00+02:00"), "type": "in_person"})).await;
    assert_eq!(offset.status, StatusCode::CREATED, "{:?}", offset.body);
    assert_eq!(offset.body["scheduled_at"], format!("{day}T10:00:00Z"));
    assert_eq!(offset.body["ends_at"], format!("{day}T10:30:00Z"));
    assert_eq!(offset.body["status"], "pending");
    assert_eq!(offset.body["version"], 1);
    assert_eq!(offset.header("etag"), "\"1\"");
    assert_eq!(
        offset.header("location"),
        format!("/api/v1/appointments/{}", offset.id())
    );
    let plain = app
        .book(
            &app.patient().await,
            &doctor,
            &format!("{day} 10:10:00"),
            30,
        )
        .await;
    assert_eq!(plain.code(), "SLOT_TAKEN");

    // An admin books on behalf of a patient, and must name one.
    let for_patient = app
        .post("/api/v1/appointments", &app.admin, json!({"doctor_id": doctor.id, "patient_id": app.patient().await.id, "scheduled_at": slot(10, 15, 0), "type": "in_person"}))
        .await;
    assert_eq!(
        for_patient.status,
        StatusCode::CREATED,
        "{:?}",
        for_patient.body
    );
    let nobody = app
        .post(
            "/api/v1/appointments",
            &app.admin,
            json!({"doctor_id": doctor.id, "scheduled_at": slot(10, 16, 0), "type": "in_person"}),
        )
        .await;
    assert_eq!(nobody.status, StatusCode::UNPROCESSABLE_ENTITY);

    // An inactive patient cannot book.
    let inactive = app.patient().await;
    app.sql(&format!(
        "UPDATE users SET is_active = {} WHERE id = {}",
        if app.backend == common::Backend::Postgres {
            "false"
        } else {
            "0"
        },
        inactive.id
    ));
    let refused = app
        .call(Method::GET, "/api/v1/me", Some(&inactive.token), None)
        .await;
    assert_eq!(refused.status, StatusCode::UNAUTHORIZED);
    // Nor book for themselves.
    let own = app.book(&inactive, &doctor, &slot(10, 17, 0), 30).await;
    assert_eq!(own.status, StatusCode::UNAUTHORIZED);
    let by_admin = app
        .post("/api/v1/appointments", &app.admin, json!({"doctor_id": doctor.id, "patient_id": inactive.id, "scheduled_at": slot(10, 17, 0), "type": "in_person"}))
        .await;
    assert_eq!(by_admin.code(), "PATIENT_INACTIVE");
}

async fn lists_are_scoped_to_the_caller_and_paginate(app: TestApp) {
    let doctor = app.doctor().await;
    let (alice, bob) = (app.patient().await, app.patient().await);
    for hour in 8..13 {
        app.booked(&alice, &doctor, &slot(11, hour, 0)).await;
    }
    app.booked(&bob, &doctor, &slot(11, 14, 0)).await;

    let mut seen = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let path = match &cursor {
            Some(c) => format!("/api/v1/appointments?limit=2&cursor={c}"),
            None => "/api/v1/appointments?limit=2".to_owned(),
        };
        let page = app.get(&path, &alice).await;
        assert_eq!(page.status, StatusCode::OK, "{:?}", page.body);
        for item in page.body["items"].as_array().unwrap() {
            assert_eq!(item["patient_id"], alice.id);
            seen.push(item["scheduled_at"].as_str().unwrap().to_owned());
        }
        match page.body["next_cursor"].as_str() {
            Some(next) => cursor = Some(next.to_owned()),
            None => break,
        }
    }
    assert_eq!(seen.len(), 5);
    assert!(
        seen.windows(2).all(|w| w[0] < w[1]),
        "ordered by scheduled_at: {seen:?}"
    );
    assert_eq!(
        app.get("/api/v1/appointments", &doctor).await.body["items"]
            .as_array()
            .unwrap()
            .len(),
        6
    );
    assert_eq!(
        app.get("/api/v1/appointments", &app.admin).await.body["items"]
            .as_array()
            .unwrap()
            .len(),
        6
    );
    let filtered = app
        .get(
            &format!(
                "/api/v1/appointments?status=pending&from={}&to={}",
                slot(11, 9, 0),
                slot(11, 11, 0)
            ),
            &alice,
        )
        .await;
    assert_eq!(filtered.body["items"].as_array().unwrap().len(), 2);
    // The widest range medbook takes holds every appointment, on SQLite (which compares the
    // text) as on PostgreSQL.
    let widest = app
        .get(
            "/api/v1/appointments?from=0001-01-01T00:00:00Z&to=9999-12-31T23:59:59.999999Z",
            &alice,
        )
        .await;
    assert_eq!(widest.status, StatusCode::OK, "{:?}", widest.body);
    assert_eq!(widest.body["items"].as_array().unwrap().len(), 5);

    for bad in [
        "?limit=0",
        "?limit=101",
        "?status=done",
        "?from=yesterday",
        "?to=2031-06-30T23:59:60Z",
        // Years outside 0001–9999: PostgreSQL refused the first (a 500), and SQLite answered
        // the second with an empty list.
        "?from=-5000-01-01T00:00:00",
        "?to=%2B10000-01-01T00:00:00",
        // An empty or reversed range, as for a doctor's busy times.
        "?from=2031-06-01T10:00:00Z&to=2031-06-01T10:00:00Z",
        "?from=2031-06-02T00:00:00Z&to=2031-06-01T00:00:00Z",
    ] {
        let answer = app.get(&format!("/api/v1/appointments{bad}"), &alice).await;
        assert_eq!(answer.status, StatusCode::UNPROCESSABLE_ENTITY, "{bad}");
    }
    // An offset whose + was not encoded arrives as a space; the answer says so.
    let plus = app
        .get(
            "/api/v1/appointments?from=2031-06-01T10:00:00+02:00",
            &alice,
        )
        .await;
    assert_eq!(plus.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(
        plus.detail("from").ends_with("send the offset as %2B02:00"),
        "{:?}",
        plus.body
    );
    for bad in ["?color=blue", "?cursor=not-a-cursor"] {
        let answer = app.get(&format!("/api/v1/appointments{bad}"), &alice).await;
        assert_eq!(
            (answer.status, answer.code()),
            (StatusCode::BAD_REQUEST, "BAD_REQUEST"),
            "{bad}"
        );
    }

    // Another patient's appointment does not exist for bob.
    let alices = app.get("/api/v1/appointments", &alice).await.body["items"][0]["id"]
        .as_i64()
        .unwrap();
    let hidden = app
        .get(&format!("/api/v1/appointments/{alices}"), &bob)
        .await;
    assert_eq!(hidden.status, StatusCode::NOT_FOUND);
    let own = app
        .get(&format!("/api/v1/appointments/{alices}"), &alice)
        .await;
    assert_eq!(own.status, StatusCode::OK);
    assert_eq!(own.header("etag"), "\"1\"");
    assert_eq!(
        app.get("/api/v1/appointments/abc", &alice).await.status,
        StatusCode::NOT_FOUND
    );
}

async fn doctors_directory_and_busy_intervals(app: TestApp) {
    let doctor = app.doctor().await;
    let patient: Actor = app.patient().await;
    app.booked(&patient, &doctor, &slot(12, 10, 0)).await;
    let listed = app.get("/api/v1/doctors", &patient).await;
    let entry = listed.body["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|d| d["id"] == doctor.id)
        .cloned()
        .unwrap();
    assert_eq!(entry["specialty"], "general");
    assert_eq!(entry["rating_count"], 0);
    assert!(entry["rating_avg"].is_null());
    assert_eq!(
        app.get(&format!("/api/v1/doctors/{}", doctor.id), &patient)
            .await
            .body["id"],
        doctor.id
    );
    assert_eq!(
        app.get(&format!("/api/v1/doctors/{}", patient.id), &patient)
            .await
            .status,
        StatusCode::NOT_FOUND
    );

    let busy = app
        .busy(&doctor, &slot(12, 0, 0), &slot(13, 0, 0), &patient)
        .await;
    assert_eq!(busy.status, StatusCode::OK);
    assert_eq!(
        busy.body["items"],
        json!([{"start": slot(12, 10, 0), "end": slot(12, 10, 30)}])
    );
    let reversed = app
        .busy(&doctor, &slot(13, 0, 0), &slot(12, 0, 0), &patient)
        .await;
    assert_eq!(reversed.status, StatusCode::UNPROCESSABLE_ENTITY);

    // At the ends of the years medbook takes: the week after the last day is cut at its end
    // (it overflowed chrono past 262142 and dropped the connection), and the earliest range
    // reaches back before the year 0001 without leaving what the databases hold.
    let busy = |query: &str| format!("/api/v1/doctors/{}/busy?{query}", doctor.id);
    for query in [
        "from=9999-12-31T00:00:00Z",
        "from=0001-01-01T00:00:00Z&to=0001-01-02T00:00:00Z",
    ] {
        let answer = app.get(&busy(query), &patient).await;
        assert_eq!(
            (answer.status, &answer.body),
            (StatusCode::OK, &json!({"items": []})),
            "{query}"
        );
    }
    for query in [
        "from=%2B262142-12-31T00:00:00",
        "from=-262143-01-01T00:00:00&to=-262143-01-02T00:00:00",
        "from=-5000-01-01T00:00:00&to=-5000-01-02T00:00:00",
    ] {
        let answer = app.get(&busy(query), &patient).await;
        assert_eq!(
            (answer.status, answer.code()),
            (StatusCode::UNPROCESSABLE_ENTITY, "VALIDATION_FAILED"),
            "{query}: {:?}",
            answer.body
        );
        assert!(answer.detail("from").contains("0001 to 9999"), "{query}");
    }
}
