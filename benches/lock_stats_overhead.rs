//! What the lock statistics cost on the booking path.
//!
//! Two measurements, run on demand (`cargo bench --bench lock_stats_overhead`):
//! 1. the bookings themselves, through `services::booking::book` on a real database, in
//!    interleaved rounds with statistics on and off (medians of the rounds compared);
//! 2. the statistics' own work per booking (`acquired` + hold guard + slot-conflict record) in
//!    a tight loop, as a fraction of the median booking time.
//!
//! Database: `MEDBOOK_BENCH_DATABASE_URL` (PostgreSQL URL or SQLite path); default a temp
//! SQLite file.

use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::Duration as ChronoDuration;
use medbook::auth::Caller;
use medbook::config::Config;
use medbook::db::{build_pool, run_migrations, Contention, RetryPolicy};
use medbook::domain::Role;
use medbook::models::user::{self, NewUser};
use medbook::services::booking::{self, BookingInput};
use medbook::telemetry::{LockStats, Telemetry};
use medbook::time::InputTime;

const ROUNDS: usize = 12;
const BOOKINGS_PER_ROUND: usize = 150;

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    v[v.len() / 2]
}

fn main() {
    let dir = tempfile::tempdir().unwrap();
    let url = std::env::var("MEDBOOK_BENCH_DATABASE_URL")
        .unwrap_or_else(|_| dir.path().join("bench.db").to_string_lossy().into_owned());
    let config = Config::for_database(&url);
    let pool = build_pool(&config, Arc::new(Telemetry::default()));
    let mut conn = pool.get().expect("database reachable");
    run_migrations(&mut conn).unwrap();
    let now = medbook::time::now();
    let run = now.and_utc().timestamp_micros();
    let mut new_user = |role: Role, n: usize| {
        let email = format!("bench-{run}-{n}@example.com");
        user::insert(
            &mut conn,
            &NewUser {
                name: "Bench",
                email: &email,
                password_hash: "not-a-login",
                role: role.as_str(),
                specialty: None,
                is_active: true,
                version: 1,
                created_at: now,
                updated_at: now,
            },
        )
        .unwrap()
        .id
    };
    let doctor = new_user(Role::Doctor, 0);
    let patient = new_user(Role::Patient, 1);
    drop(conn);

    let stats = Arc::new(LockStats::default());
    let contention = Contention {
        policy: RetryPolicy::default(),
        stats: Arc::clone(&stats),
    };
    let caller = Caller {
        id: patient,
        role: Role::Patient,
        token_hash: String::new(),
    };
    // Consecutive 30-minute slots from a year ahead (the doctor is new on every run).
    let base = now + ChronoDuration::days(365);
    let mut next_slot = 0i64;
    let mut per_booking = |enabled: bool| -> f64 {
        stats.set_enabled(enabled);
        let mut conn = pool.get().unwrap();
        let started = Instant::now();
        for _ in 0..BOOKINGS_PER_ROUND {
            let input = BookingInput {
                doctor_id: doctor,
                scheduled_at: InputTime(base + ChronoDuration::minutes(next_slot * 30)),
                type_: "in_person".to_owned(),
                reason: None,
                duration_minutes: Some(30),
                patient_id: None,
            };
            next_slot += 1;
            booking::book(&mut conn, &caller, &input, &contention).expect("bench booking");
        }
        started.elapsed().as_secs_f64() * 1e6 / BOOKINGS_PER_ROUND as f64
    };
    per_booking(true); // warm-up
    let (mut on, mut off) = (Vec::new(), Vec::new());
    for round in 0..ROUNDS {
        // Alternate which goes first, so drift on a shared machine hits both alike.
        if round % 2 == 0 {
            on.push(per_booking(true));
            off.push(per_booking(false));
        } else {
            off.push(per_booking(false));
            on.push(per_booking(true));
        }
    }
    let (on, off) = (median(on), median(off));

    // The statistics' own work per booking, in isolation.
    let iterations: i32 = 1_000_000;
    let loop_stats = Arc::new(LockStats::default());
    let started = Instant::now();
    for i in 0..iterations {
        let hold = loop_stats.acquired(i % 50, Duration::from_micros(40));
        if i % 10 == 0 {
            loop_stats.slot_conflict(i % 50);
        }
        drop(hold);
    }
    let stats_ns = started.elapsed().as_nanos() as f64 / f64::from(iterations);

    println!(
        "database: {}",
        if url.starts_with("postgres") {
            "PostgreSQL"
        } else {
            "SQLite (temp file)"
        }
    );
    println!("bookings: {ROUNDS} rounds x {BOOKINGS_PER_ROUND}, each mode; medians per booking");
    println!("  statistics on : {on:9.1} us");
    println!("  statistics off: {off:9.1} us");
    println!(
        "  difference    : {:+9.2} % (noise of the machine included)",
        (on - off) / off * 100.0
    );
    println!(
        "statistics work alone: {stats_ns:.0} ns per booking = {:.4} % of a booking",
        stats_ns / 1000.0 / off * 100.0
    );
}
