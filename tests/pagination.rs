//! A page deep into `GET /appointments` costs what the first page costs: the statement starts
//! its index scan at the cursor instead of scanning from the first appointment and filtering
//! out every page before it (which made reading a long list cost the square of its length:
//! the benchmark's invariant check read 375 563 appointments in 6 minutes).
//!
//! Read from the plans of the statement `services::appointments::list` runs, on each database:
//! PostgreSQL's `EXPLAIN ANALYZE` (how many rows the scan threw away) and SQLite's
//! `EXPLAIN QUERY PLAN` (which index constraint the scan has).

mod common;

use chrono::Duration;
use diesel::connection::SimpleConnection;
use diesel::prelude::*;
use diesel::sql_types::{Integer, Text};
use medbook::auth::Caller;
use medbook::db::DbConn;
use medbook::domain::Role;
use medbook::models::appointment::{self, NewAppointment};
use medbook::services::appointments::{list, list_query, ListFilter};
use medbook::services::pagination::Cursor;

use common::{service_caller, Backend, Explain, ScratchDb};

const APPOINTMENTS: i32 = 1200;
const PAGE: i64 = 10;

/// A patient and a doctor with `APPOINTMENTS` back-to-back appointments, and an admin.
fn world(backend: Backend, url: &str) -> (medbook::db::DbPool, [Caller; 3]) {
    let config = medbook::config::Config::for_database(url);
    let pool = medbook::db::build_pool(&config, std::sync::Arc::default());
    let mut conn = pool.get().expect("connection");
    medbook::db::run_migrations(&mut conn).expect("migrations");
    let [patient, doctor, admin] = [Role::Patient, Role::Doctor, Role::Admin]
        .map(|role| service_caller(&mut conn, role, "pages"));
    let start = medbook::time::now() + Duration::days(1);
    conn.transaction(|conn| {
        for k in 0..APPOINTMENTS {
            let at = start + Duration::minutes(30 * i64::from(k));
            appointment::insert(
                conn,
                &NewAppointment {
                    patient_id: patient.id,
                    doctor_id: doctor.id,
                    scheduled_at: at,
                    duration_minutes: 30,
                    ends_at: at + Duration::minutes(30),
                    type_: "video_consultation",
                    reason: None,
                    status: "pending",
                    version: 1,
                    created_at: start,
                    updated_at: start,
                },
            )?;
        }
        diesel::QueryResult::Ok(())
    })
    .expect("appointments");
    let analyze = match backend {
        Backend::Postgres => "ANALYZE appointments",
        Backend::Sqlite => "ANALYZE",
    };
    conn.batch_execute(analyze).expect("analyze");
    drop(conn);
    (pool, [patient, doctor, admin])
}

/// Reads the caller's whole list page by page and checks that every page follows the one
/// before, in order, and that the last says there is no more. Returns the filter of the page
/// of `PAGE` that follows the first 90 % of the list.
fn walk_to_a_deep_page(conn: &mut DbConn, caller: &Caller) -> ListFilter {
    let mut filter = ListFilter {
        limit: 100,
        ..ListFilter::default()
    };
    let mut seen = Vec::new();
    let mut deep = None;
    loop {
        if deep.is_none() && seen.len() >= APPOINTMENTS as usize * 9 / 10 {
            deep = Some(ListFilter {
                limit: PAGE,
                ..filter.clone()
            });
        }
        let page = list(conn, caller, &filter).expect("page");
        seen.extend(page.items.iter().map(|a| (a.scheduled_at, a.id)));
        match page.next_cursor {
            Some(next) => filter.cursor = Some(Cursor::decode(&next).unwrap()),
            None => break,
        }
    }
    assert_eq!(seen.len(), APPOINTMENTS as usize);
    assert!(seen.windows(2).all(|w| w[0] < w[1]), "pages out of order");
    deep.expect("a page after the first 90 %")
}

#[test]
fn postgres_a_deep_page_starts_its_scan_at_the_cursor() {
    let dir = tempfile::tempdir().unwrap();
    let Some(db) = ScratchDb::new(Backend::Postgres, dir.path()) else {
        return;
    };
    let (pool, callers) = world(Backend::Postgres, &db.url);
    let conn = &mut *pool.get().expect("connection");
    for caller in &callers {
        let filter = walk_to_a_deep_page(conn, caller);
        let plan: Vec<String> = Explain::<_, Text>::new(
            "EXPLAIN (ANALYZE, COSTS OFF, TIMING OFF) ",
            list_query(caller, &filter),
        )
        .load(conn)
        .expect("explain");
        let plan = plan.join("\n");
        // Rows the scan read and threw away: the pages before the cursor, if it started at
        // the first appointment (1 080 here); none when it starts at the cursor.
        let removed: u64 = plan
            .lines()
            .filter_map(|line| line.trim().strip_prefix("Rows Removed by Filter: "))
            .map(|n| n.parse::<u64>().unwrap())
            .sum();
        assert!(
            removed < 2 * PAGE as u64,
            "{:?}: {removed} rows read and dropped for one page of {PAGE}:\n{plan}",
            caller.role
        );
        assert!(
            !plan.contains("Seq Scan"),
            "{:?}: a page scans the table:\n{plan}",
            caller.role
        );
    }
}

#[test]
fn sqlite_a_deep_page_starts_its_scan_at_the_cursor() {
    let dir = tempfile::tempdir().unwrap();
    let db = ScratchDb::new(Backend::Sqlite, dir.path()).unwrap();
    let (pool, callers) = world(Backend::Sqlite, &db.url);
    let conn = &mut *pool.get().expect("connection");
    for caller in &callers {
        let filter = walk_to_a_deep_page(conn, caller);
        let plan: Vec<(i32, i32, i32, String)> =
            Explain::<_, (Integer, Integer, Integer, Text)>::new(
                "EXPLAIN QUERY PLAN ",
                list_query(caller, &filter),
            )
            .load(conn)
            .expect("explain");
        let details: Vec<&str> = plan.iter().map(|row| row.3.as_str()).collect();
        // "SEARCH appointments USING INDEX … (… scheduled_at>?)": the scan starts at the
        // cursor. Without it: "SCAN appointments USING INDEX …" or "(patient_id=?)" alone.
        assert!(
            details
                .iter()
                .any(|d| d.starts_with("SEARCH appointments") && d.contains("scheduled_at>")),
            "{:?}: {details:?}",
            caller.role
        );
        assert!(
            !details.iter().any(|d| d.contains("TEMP B-TREE")),
            "{:?}: a page sorts the list: {details:?}",
            caller.role
        );
    }
}
