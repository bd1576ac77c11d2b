//! The hot-path statements stay prepared on PostgreSQL: after a few bookings and optimistic
//! updates through the services, every statement of those paths is a named prepared statement
//! of the connection, prepared once (diesel prepares uncacheable statements as the unnamed
//! statement, which `pg_prepared_statements` does not list, and parses and plans them anew
//! on every call).

mod common;

use chrono::Duration;
use diesel::dsl::sql;
use diesel::prelude::*;
use diesel::sql_types::Text;
use medbook::db::{Contention, DbConn};
use medbook::domain::Role;
use medbook::extract::Expected;
use medbook::services::appointments::{self, UpdateInput};
use medbook::services::booking::{self, BookingInput};
use medbook::services::patch::Patch;
use medbook::time::InputTime;

use common::{Backend, ScratchDb};

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

#[test]
fn postgres_booking_and_update_statements_are_prepared_once() {
    let dir = tempfile::tempdir().unwrap();
    let Some(db) = ScratchDb::new(Backend::Postgres, dir.path()) else {
        return;
    };
    let config = medbook::config::Config::for_database(&db.url);
    let pool = medbook::db::build_pool(&config, std::sync::Arc::default());
    let mut conn = pool.get().expect("connection");
    medbook::db::run_migrations(&mut conn).expect("migrations");
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
        appointments::update(
            &mut conn,
            &patient,
            booked.id,
            found,
            &update,
            Expected::Latest,
            &contention,
        )
        .expect("updated");
    }
    for (prefix, statements) in [
        (r#"INSERT INTO "appointments""#, 1),
        (r#"INSERT INTO "appointment_history""#, 1),
        (r#"UPDATE "appointments""#, 1),
        (r#"LEFT OUTER JOIN "appointments""#, 1),
    ] {
        assert_eq!(prepared(&mut conn, &[prefix]), statements, "{prefix}");
    }
    // Both token lookups are prepared once each, and neither reads the password hash: they
    // run on every request and need only the user's id, role and active flag.
    assert_eq!(prepared(&mut conn, &["\"api_tokens\"", "SELECT"]), 2);
    assert_eq!(prepared(&mut conn, &["\"api_tokens\"", "password_hash"]), 0);
}
