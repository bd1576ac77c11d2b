//! The hot-path statements stay prepared: after a few bookings and optimistic updates through
//! the services, every statement of those paths is a named prepared statement of the
//! PostgreSQL connection, prepared once (diesel prepares uncacheable statements as the unnamed
//! statement, which `pg_prepared_statements` does not list, and parses and plans them anew
//! on every call); the `Idempotency-Key` statements are checked on both databases, by what
//! diesel reports putting into its statement cache. A booking and a token check read no
//! password hash.

mod common;

use chrono::Duration;
use diesel::dsl::sql;
use diesel::prelude::*;
use diesel::sql_types::Text;
use medbook::db::{Contention, DbConn};
use medbook::domain::Role;
use medbook::extract::Expected;
use medbook::models::idempotency as record;
use medbook::services::appointments::{self, UpdateInput};
use medbook::services::booking::{self, BookingInput};
use medbook::services::idempotency::{self, StoredResponse};
use medbook::services::patch::Patch;
use medbook::time::InputTime;

use common::{Backend, ScratchDb, StatementLog};

/// How many of this connection's named prepared statements contain every one of `texts`.
fn prepared(conn: &mut DbConn, texts: &[&str]) -> usize {
    let statements: Vec<String> =
        diesel::select(sql::<Text>("statement FROM pg_prepared_statements"))
            .load(conn)
            .expect("pg_prepared_statements");
    statements
        .iter()
        .filter(|statement| texts.iter().all(|text| statement.contains(text)))
        .count()
}

/// How PostgreSQL's optimistic update with its history row begins.
const UPDATE_LOGGED: &str = "WITH changed AS (UPDATE appointments SET status = ";

#[test]
fn postgres_booking_and_update_statements_are_prepared_once() {
    let dir = tempfile::tempdir().unwrap();
    let Some(db) = ScratchDb::new(Backend::Postgres, dir.path()) else {
        return;
    };
    let mut conn = db.migrated_pool().get().expect("connection");
    let doctor = common::service_caller(&mut conn, Role::Doctor, "prepared").id;
    let patient = common::service_caller(&mut conn, Role::Patient, "prepared");
    let contention = Contention::default();
    let tomorrow = medbook::time::now() + Duration::days(1);
    for k in 0..3 {
        let booked = booking::book(
            &mut conn,
            &patient,
            &BookingInput {
                doctor_id: doctor,
                scheduled_at: InputTime(tomorrow + Duration::hours(k)),
                type_: "video_consultation".to_owned(),
                reason: None,
                duration_minutes: None,
                patient_id: None,
            },
            &contention,
        )
        .expect("booked");
        let update = UpdateInput {
            status: None,
            scheduled_at: None,
            duration_minutes: None,
            reason: Patch::Set(format!("reason {k}")),
            version: None,
        };
        // The token check that reads the appointment in the same query (GET/PUT/PATCH of one
        // appointment).
        let found = medbook::models::token::user_and_appointment(
            &mut conn,
            "no-such-token",
            medbook::auth::issued_after(None),
            booked.id,
        )
        .expect("token and appointment");
        assert!(found.is_none());
        let owner = medbook::models::token::user_for(
            &mut conn,
            "no-such-token",
            medbook::auth::issued_after(None),
        )
        .expect("token");
        assert!(owner.is_none());
        let found = medbook::models::appointment::find(&mut conn, booked.id).expect("read");
        let log = StatementLog::attach(&mut conn);
        let updated = appointments::update(
            &mut conn,
            &patient,
            booked.id,
            found,
            &update,
            Expected::Latest,
            &contention,
        )
        .expect("updated");
        // The update and its history row are one statement, atomic by itself: no transaction
        // around it, one round trip.
        let statements = log.take_run();
        assert_eq!(statements.len(), 1, "{statements:#?}");
        assert!(statements[0].starts_with(UPDATE_LOGGED), "{statements:#?}");
        assert_eq!(updated.version, 2);
        assert_eq!(
            updated.reason.as_deref(),
            Some(format!("reason {k}").as_str())
        );
        let history =
            medbook::models::history::for_appointment(&mut conn, booked.id).expect("history");
        let last = history.last().expect("a history row");
        assert_eq!(
            (last.version, last.action.as_str(), last.actor_id),
            (2, "updated", patient.id)
        );
    }
    for (prefix, statements) in [
        (r#"INSERT INTO "appointments""#, 1),
        (r#"INSERT INTO "appointment_history""#, 1),
        (UPDATE_LOGGED, 1),
        (r#"LEFT OUTER JOIN "appointments""#, 1),
    ] {
        assert_eq!(prepared(&mut conn, &[prefix]), statements, "{prefix}");
    }
    // Both token lookups are prepared once each, and neither reads the password hash: they
    // run on every request and need only the user's id, role and active flag.
    assert_eq!(prepared(&mut conn, &["\"api_tokens\"", "SELECT"]), 2);
    assert_eq!(prepared(&mut conn, &["\"api_tokens\"", "password_hash"]), 0);
}

/// The statements of an `Idempotency-Key` are prepared once per connection, like the work
/// they wrap: the claim, the response stored in the booking's transaction (on PostgreSQL
/// while its row locks are held) and the take-over of an abandoned claim. They are
/// `UPDATE`s run for a row count, and diesel's `execute` hands a statement on by reference,
/// which forgets `FixedShape`'s word that it may be kept: they were prepared anew on every
/// call, with one more round trip each on PostgreSQL.
async fn idempotency_statements_are_prepared_once(backend: Backend) {
    let dir = tempfile::tempdir().unwrap();
    let Some(db) = ScratchDb::new(backend, dir.path()) else {
        return;
    };
    let pool = db.migrated_pool();
    let mut conn = pool.get().expect("connection");
    let user = common::service_caller(&mut conn, Role::Patient, "idempotent").id;
    let log = StatementLog::attach_with_writer(&mut conn, &pool);
    let now = medbook::time::now();
    for k in 0..3 {
        let key = format!("key-{k}");
        let claim = idempotency::claim(&mut conn, user, &key, "fingerprint").expect("claim");
        assert!(matches!(claim, idempotency::Claim::Fresh), "{claim:?}");
        let response = StoredResponse {
            status: 201,
            headers: Vec::new(),
            body: format!("{{\"k\":{k}}}"),
        };
        idempotency::run_and_record(&mut conn, user, &key, |_| Ok(response.clone()))
            .expect("recorded");
        let record = record::find(&mut conn, user, &key)
            .expect("read")
            .expect("the record");
        assert_eq!(
            record.response_body.as_deref(),
            Some(response.body.as_str())
        );
        // The take-over of an abandoned claim, guarded by the `claimed_at` read.
        let later = now + Duration::minutes(k + 1);
        assert!(record::reclaim(&mut conn, &record, "fingerprint", later, later).expect("reclaim"));
        assert!(!record::reclaim(&mut conn, &record, "fingerprint", later, later).expect("again"));
    }
    for (prefix, runs) in [
        (r#"INSERT INTO "idempotency_keys""#, 3),
        (r#"UPDATE "idempotency_keys" SET "state" = "#, 3),
        (r#"UPDATE "idempotency_keys" SET "fingerprint" = "#, 6),
        (r#"SELECT "idempotency_keys"."id""#, 3),
    ] {
        assert_eq!(log.count(prefix), (1, runs), "{prefix}");
    }
    if backend == Backend::Postgres {
        // PostgreSQL's own word: kept as named statements of this connection.
        assert_eq!(
            prepared(&mut conn, &[r#"INSERT INTO "idempotency_keys""#]),
            1
        );
        assert_eq!(prepared(&mut conn, &[r#"UPDATE "idempotency_keys""#]), 2);
    }
}

both_backends_configured!(idempotency_statements_are_prepared_once);

/// A booking reads of the two users it locks only what it checks (id, role, active): not the
/// password hash, which has no business on the booking path (nor in its row locks' round
/// trips). The token check, which runs on every request, reads no more either.
async fn a_booking_reads_no_password_hash(backend: Backend) {
    let dir = tempfile::tempdir().unwrap();
    let Some(db) = ScratchDb::new(backend, dir.path()) else {
        return;
    };
    let pool = db.migrated_pool();
    let mut conn = pool.get().expect("connection");
    let doctor = common::service_caller(&mut conn, Role::Doctor, "no-hash").id;
    let patient = common::service_caller(&mut conn, Role::Patient, "no-hash");
    let log = StatementLog::attach_with_writer(&mut conn, &pool);
    medbook::models::token::user_for(
        &mut conn,
        "no-such-token",
        medbook::auth::issued_after(None),
    )
    .expect("token");
    booking::book(
        &mut conn,
        &patient,
        &BookingInput {
            doctor_id: doctor,
            scheduled_at: InputTime(medbook::time::now() + Duration::days(1)),
            type_: "video_consultation".to_owned(),
            reason: None,
            duration_minutes: None,
            patient_id: None,
        },
        &Contention::default(),
    )
    .expect("booked");
    let statements = log.take_run();
    let reads_users = statements
        .iter()
        .filter(|s| s.contains(r#"FROM "users""#))
        .count();
    // The two locked users; the token check reads its user through a join.
    assert_eq!(reads_users, 2, "{statements:#?}");
    assert!(
        statements
            .iter()
            .any(|s| s.contains(r#"INSERT INTO "appointments""#)),
        "{statements:#?}"
    );
    let with_hash: Vec<_> = statements
        .iter()
        .filter(|s| s.contains("password_hash"))
        .collect();
    assert!(with_hash.is_empty(), "{with_hash:#?}");
}

both_backends_configured!(a_booking_reads_no_password_hash);
