//! The scenarios, their set-up, the timed run, and the invariant check.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use actix_web::ResponseError;
use chrono::{Duration as ChronoDuration, NaiveDateTime, Utc};
use futures_util::stream::{self, StreamExt};
use indicatif::{ProgressBar, ProgressStyle};
use rand::Rng;
use reqwest::Method;
use serde::Serialize;
use serde_json::{json, Value};

use crate::client::{Api, User};
use crate::conn::{Call, Conn, Outcome};
use crate::report::Report;
use crate::Options;

/// What the clients do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Random doctor, the client's own patient, random future slot.
    Spread,
    /// All clients book one doctor; their i-th requests all target the same slot.
    Contended,
    /// All clients book one doctor at random slots.
    HotDoctor,
    /// Optimistic updates (a new reason) of random existing appointments.
    Status,
    /// `GET` of random existing appointments.
    Read,
    /// Half bookings (as [`Kind::Spread`], among [`MIXED_DOCTORS`] doctors), half reason
    /// changes of random existing appointments by their own doctor: bookings and optimistic
    /// updates that touch the same doctors' rows at once (a booking locks its doctor's row; the
    /// update's history row takes a foreign-key lock on it).
    Mixed,
    /// `GET /healthz`: the HTTP exchange alone, no database. With [`Kind::PingDb`], the least
    /// any request costs (the SQLite table's "HTTP bound").
    Ping,
    /// `GET /readyz`: the HTTP exchange, the hand-off to a blocking thread and one `SELECT 1`.
    PingDb,
}

impl Kind {
    const ALL: [Kind; 8] = [
        Kind::Spread,
        Kind::Contended,
        Kind::HotDoctor,
        Kind::Status,
        Kind::Read,
        Kind::Mixed,
        Kind::Ping,
        Kind::PingDb,
    ];

    pub fn parse(s: &str) -> Option<Kind> {
        Kind::ALL.into_iter().find(|kind| kind.name() == s)
    }

    fn name(self) -> &'static str {
        match self {
            Kind::Spread => "spread",
            Kind::Contended => "contended",
            Kind::HotDoctor => "hot-doctor",
            Kind::Status => "status",
            Kind::Read => "read",
            Kind::Mixed => "mixed",
            Kind::Ping => "ping",
            Kind::PingDb => "ping-db",
        }
    }
}

/// Slots are 30 minutes from tomorrow 00:00 UTC. Random scenarios (and `inproc`, and
/// `bench/pgbench/booking.sql`) draw from the first nine years: wide enough that a patient's
/// calendar stays mostly free during a run, so nearly every request books (a refused one is
/// cheaper: it commits nothing), whichever side is faster.
const RANDOM_SLOTS: i64 = 9 * 365 * 48;
/// Set-up appointments and contended slots live after those, apart from the rest and still
/// within medbook's 10-year booking horizon.
const SETUP_SLOTS_FROM: i64 = RANDOM_SLOTS + 48;
const CONTENDED_SLOTS_FROM: i64 = RANDOM_SLOTS + 14 * 48;
const SETUP_APPOINTMENTS: usize = 400;
/// How many doctors [`Kind::Mixed`] spreads its bookings and updates over: few enough that a
/// doctor's booking and an update of one of their appointments often run at once.
const MIXED_DOCTORS: usize = 8;

fn slot_time(base: NaiveDateTime, k: i64) -> String {
    let t = base + ChronoDuration::minutes(30 * k);
    format!("{}Z", t.format("%Y-%m-%dT%H:%M:%S"))
}

struct World {
    admin: User,
    doctors: Vec<i64>,
    patients: Vec<User>,
    appointments: Vec<i64>,
    /// Each set-up appointment's doctor, as an index into `doctors` (and `doctor_users`).
    appointment_doctors: Vec<usize>,
    /// The doctors logged in ([`Kind::Mixed`] only: its updates are made by the doctor).
    doctor_users: Vec<User>,
    base: NaiveDateTime,
    /// Bookings name their patient (`patient_id`): the floor server has no token to read it
    /// from. medbook itself is sent what a patient's app sends.
    name_patient: bool,
    /// With `--idempotency-keys`: this run's prefix of the `Idempotency-Key` every booking
    /// carries (a new key per request, as a client that retries safely sends).
    idempotency_keys: Option<String>,
}

/// What names this run's users apart from other runs' on the same database: the microsecond
/// and the process id (bench/rss-burst.sh starts eight runs at once, and two of them once read
/// the same microsecond: 409 EMAIL_TAKEN).
fn run_id() -> String {
    format!("{:x}-{}", Utc::now().timestamp_micros(), std::process::id())
}

async fn setup(api: &Api, options: &Options) -> World {
    let run = run_id();
    let admin = api
        .login(&options.admin_email, &options.admin_password)
        .await;
    let doctors_wanted = match options.scenario {
        Kind::Contended | Kind::HotDoctor => 1,
        Kind::Mixed => MIXED_DOCTORS,
        _ => options.doctors,
    };
    let doctor_logins: Vec<(i64, String)> = stream::iter(0..doctors_wanted)
        .map(|n| {
            let (api, admin, email) = (
                api.clone(),
                admin.clone(),
                format!("bench-d{n}-{run}@example.com"),
            );
            async move { (api.create_doctor(&admin, &email).await, email) }
        })
        .buffer_unordered(8)
        .collect()
        .await;
    let doctors: Vec<i64> = doctor_logins.iter().map(|(id, _)| *id).collect();
    let mut doctor_users = Vec::new();
    if options.scenario == Kind::Mixed {
        for (_, email) in &doctor_logins {
            doctor_users.push(api.login(email, crate::client::PASSWORD).await);
        }
    }
    let patients: Vec<User> = stream::iter(0..options.clients)
        .map(|n| {
            let (api, email) = (api.clone(), format!("bench-p{n}-{run}@example.com"));
            async move { api.register(&email).await }
        })
        .buffer_unordered(8)
        .collect()
        .await;
    let base = (Utc::now() + ChronoDuration::days(1))
        .date_naive()
        .and_hms_opt(0, 0, 0)
        .unwrap();
    let (mut appointments, mut appointment_doctors) = (Vec::new(), Vec::new());
    if matches!(options.scenario, Kind::Status | Kind::Read | Kind::Mixed) {
        let booked: Vec<Option<(i64, usize)>> = stream::iter(0..SETUP_APPOINTMENTS)
            .map(|i| {
                let api = api.clone();
                let patient = patients[i % patients.len()].clone();
                let doctor = i % doctors.len();
                let body = json!({
                    "doctor_id": doctors[doctor],
                    "scheduled_at": slot_time(base, SETUP_SLOTS_FROM + i as i64),
                    "type": "video_consultation",
                });
                async move {
                    let (status, answer) = api
                        .call(
                            Method::POST,
                            "/api/v1/appointments",
                            Some(&patient.token),
                            Some(&body),
                        )
                        .await
                        .ok()?;
                    let id = answer["id"].as_i64().filter(|_| status.as_u16() == 201)?;
                    Some((id, doctor))
                }
            })
            .buffer_unordered(8)
            .collect()
            .await;
        (appointments, appointment_doctors) = booked.into_iter().flatten().unzip();
        assert!(
            !appointments.is_empty(),
            "set-up could not book any appointment"
        );
    }
    World {
        admin,
        doctors,
        patients,
        appointments,
        appointment_doctors,
        doctor_users,
        base,
        name_patient: options.target_url.is_some(),
        idempotency_keys: options.idempotency_keys.then(|| format!("bench-{run}")),
    }
}

/// A booking's body, as a patient's app sends it.
#[derive(Serialize)]
struct Booking {
    doctor_id: i64,
    scheduled_at: String,
    #[serde(rename = "type")]
    kind: &'static str,
    /// Only for the floor server (see [`World::name_patient`]).
    #[serde(skip_serializing_if = "Option::is_none")]
    patient_id: Option<i64>,
}

/// The body of `status`'s update: a new reason.
#[derive(Serialize)]
struct Reason {
    reason: String,
}

/// One request of the scenario by client `c` (its `i`-th), on the client's own connection.
async fn request(conn: &mut Conn, world: &World, kind: Kind, c: usize, i: i64) -> Outcome {
    let patient = &world.patients[c];
    let booking = |doctor: i64, k: i64| {
        let body = Booking {
            doctor_id: doctor,
            scheduled_at: slot_time(world.base, k),
            kind: "video_consultation",
            patient_id: world.name_patient.then_some(patient.id),
        };
        Some(serde_json::to_vec(&body).expect("a booking serializes"))
    };
    let (method, path, by, body) = {
        let mut rng = rand::thread_rng();
        // Half of `mixed` is `spread`'s booking; the other half is `status`'s update, by the
        // appointment's doctor instead of the admin.
        let kind = match kind {
            Kind::Mixed if rng.gen_bool(0.5) => Kind::Spread,
            kind => kind,
        };
        const APPOINTMENTS: &str = "/api/v1/appointments";
        match kind {
            Kind::Spread => {
                let doctor = world.doctors[rng.gen_range(0..world.doctors.len())];
                let body = booking(doctor, rng.gen_range(0..RANDOM_SLOTS));
                (Method::POST, APPOINTMENTS.to_owned(), patient, body)
            }
            Kind::HotDoctor => {
                let body = booking(world.doctors[0], rng.gen_range(0..RANDOM_SLOTS));
                (Method::POST, APPOINTMENTS.to_owned(), patient, body)
            }
            Kind::Contended => {
                let body = booking(world.doctors[0], CONTENDED_SLOTS_FROM + i);
                (Method::POST, APPOINTMENTS.to_owned(), patient, body)
            }
            Kind::Status | Kind::Mixed => {
                let n = rng.gen_range(0..world.appointments.len());
                let by = match kind {
                    Kind::Mixed => &world.doctor_users[world.appointment_doctors[n]],
                    _ => &world.admin,
                };
                let path = format!("{APPOINTMENTS}/{}", world.appointments[n]);
                let reason = Reason {
                    reason: format!("bench {c}/{i}"),
                };
                let body = Some(serde_json::to_vec(&reason).expect("a reason serializes"));
                (Method::PUT, path, by, body)
            }
            Kind::Read => {
                let id = world.appointments[rng.gen_range(0..world.appointments.len())];
                (
                    Method::GET,
                    format!("{APPOINTMENTS}/{id}"),
                    &world.admin,
                    None,
                )
            }
            Kind::Ping => (Method::GET, "/healthz".to_owned(), patient, None),
            Kind::PingDb => (Method::GET, "/readyz".to_owned(), patient, None),
        }
    };
    let key = match (&world.idempotency_keys, method == Method::POST) {
        (Some(prefix), true) => Some(format!("{prefix}-{c}-{i}")),
        _ => None,
    };
    conn.send(Call {
        method,
        path: &path,
        authorization: &by.authorization,
        body,
        idempotency_key: key.as_deref(),
    })
    .await
}

/// Sets up, runs the scenario, and checks the invariant.
pub async fn run(options: &Options) -> Report {
    let api = Api::new(&options.url);
    let world = Arc::new(setup(&api, options).await);
    if let Some(file) = &options.started_file {
        if let Err(e) = std::fs::write(file, "") {
            eprintln!("cannot create {file}: {e}");
            std::process::exit(1);
        }
    }
    let started = Instant::now();
    let measure_from = started + options.warmup;
    let stop_at = measure_from + options.duration;
    let done = Arc::new(AtomicU64::new(0));
    let progress = if options.quiet {
        ProgressBar::hidden()
    } else {
        let bar = ProgressBar::new((options.warmup + options.duration).as_millis() as u64);
        bar.set_style(
            ProgressStyle::with_template("{prefix} [{bar:30}] {elapsed}/{duration} {msg}")
                .unwrap()
                .progress_chars("=> "),
        );
        bar.set_prefix(format!("{} × {}", options.scenario.name(), options.clients));
        bar
    };
    let ticker = {
        let (progress, done) = (progress.clone(), Arc::clone(&done));
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(Duration::from_millis(200)).await;
                progress.set_position(started.elapsed().as_millis() as u64);
                progress.set_message(format!("{} requests", done.load(Ordering::Relaxed)));
            }
        })
    };
    // Each client sends its measured requests on a connection of its own (`conn.rs`), to
    // whichever server they go to.
    let target = options
        .target_url
        .as_deref()
        .unwrap_or(&options.url)
        .to_owned();
    let results: Vec<(Vec<u64>, HashMap<Outcome, u64>)> =
        futures_util::future::join_all((0..options.clients).map(|c| {
            let (world, done) = (Arc::clone(&world), Arc::clone(&done));
            let mut conn = Conn::new(&target);
            let kind = options.scenario;
            tokio::spawn(async move {
                let mut latencies = Vec::new();
                let mut outcomes: HashMap<Outcome, u64> = HashMap::new();
                let mut i = 0i64;
                while Instant::now() < stop_at {
                    let sent = Instant::now();
                    let outcome = request(&mut conn, &world, kind, c, i).await;
                    let took = sent.elapsed();
                    i += 1;
                    done.fetch_add(1, Ordering::Relaxed);
                    if sent < measure_from || Instant::now() > stop_at {
                        continue;
                    }
                    latencies.push(took.as_micros() as u64);
                    *outcomes.entry(outcome).or_default() += 1;
                }
                (latencies, outcomes)
            })
        }))
        .await
        .into_iter()
        .map(|r| r.expect("client task"))
        .collect();
    ticker.abort();
    progress.finish_and_clear();

    let mut report = Report {
        scenario: options.scenario.name().to_owned(),
        clients: options.clients,
        elapsed: options.duration,
        ..Report::default()
    };
    for (latencies, outcomes) in results {
        report.latencies_us.extend(latencies);
        for (outcome, n) in outcomes {
            let key = match outcome {
                Ok((status, Some(code))) => format!("{status} {code}"),
                Ok((status, None)) => status.to_string(),
                Err(e) => format!("error: {e}"),
            };
            *report.outcomes.entry(key).or_default() += n;
        }
    }
    if options.verify
        && matches!(
            options.scenario,
            Kind::Spread | Kind::Contended | Kind::HotDoctor | Kind::Mixed
        )
    {
        let (ok, checked) = verify(&api, &world.admin).await;
        report.invariant_ok = Some(ok);
        report
            .notes
            .push(format!("invariant checked over {checked} appointments"));
    }
    report
}

/// No two active appointments of a doctor, or of a patient, overlap (read through the API).
/// Returns whether that holds, and how many appointments were read.
async fn verify(api: &Api, admin: &User) -> (bool, usize) {
    let all = api.all_appointments(admin).await;
    let overlaps = overlapping(&all);
    for overlap in &overlaps {
        eprintln!("{overlap}");
    }
    (overlaps.is_empty(), all.len())
}

/// An appointment's (start, end, id).
type Interval = (
    chrono::DateTime<chrono::Utc>,
    chrono::DateTime<chrono::Utc>,
    i64,
);

/// The overlaps among the active appointments (as the API shows them), one line each.
fn overlapping(appointments: &[Value]) -> Vec<String> {
    let active: Vec<&Value> = appointments
        .iter()
        .filter(|a| {
            a["status"]
                .as_str()
                .is_some_and(|s| medbook::domain::status::ACTIVE.contains(&s))
        })
        .collect();
    let mut found = Vec::new();
    for key in ["doctor_id", "patient_id"] {
        let mut by_owner: HashMap<i64, Vec<Interval>> = HashMap::new();
        for a in &active {
            // An answer the check cannot read is a finding, not something to skip.
            let time = |field: &str| {
                a[field]
                    .as_str()
                    .and_then(|t| chrono::DateTime::parse_from_rfc3339(t).ok())
                    .map(|t| t.with_timezone(&chrono::Utc))
            };
            let (Some(owner), Some(from), Some(to), Some(id)) = (
                a[key].as_i64(),
                time("scheduled_at"),
                time("ends_at"),
                a["id"].as_i64(),
            ) else {
                found.push(format!("unreadable appointment: {a}"));
                continue;
            };
            by_owner.entry(owner).or_default().push((from, to, id));
        }
        for (owner, intervals) in &mut by_owner {
            // Sorted by start, any overlap shows between neighbours: if a later interval
            // starts before an earlier one ends, so does the one right after the earlier.
            // (Compared as times: as text, "10:30:00.5Z" sorts before "10:30:00Z".)
            intervals.sort_unstable();
            for pair in intervals.windows(2) {
                if pair[1].0 < pair[0].1 {
                    let show = |t: &chrono::DateTime<chrono::Utc>| {
                        t.to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true)
                    };
                    found.push(format!(
                        "overlap for {key} {owner}: appointment {} ({}–{}) and {} ({}–{})",
                        pair[0].2,
                        show(&pair[0].0),
                        show(&pair[0].1),
                        pair[1].2,
                        show(&pair[1].0),
                        show(&pair[1].1)
                    ));
                }
            }
        }
    }
    found
}

/// A database with `doctors` doctors and one patient, made directly through the medbook
/// library, for the in-process loops.
struct InProcess {
    pool: medbook::db::DbPool,
    doctors: Vec<i32>,
    caller: medbook::auth::Caller,
    base: NaiveDateTime,
}

impl InProcess {
    fn new(database_url: &str, doctors: usize) -> InProcess {
        use medbook::domain::Role;
        use medbook::services::users::{self, CreateUserInput};

        let config = medbook::config::Config::for_database(database_url);
        let pool = medbook::db::build_pool(&config, Arc::default());
        let mut conn = pool.get().expect("database reachable");
        medbook::db::run_migrations(&mut conn).expect("migrations");
        let run = run_id();
        let mut new_user = |role: Role, n: usize| {
            let input = CreateUserInput {
                name: "In-process".into(),
                email: format!("inproc-{}{n}-{run}@example.com", role.as_str()),
                password: String::new(),
                role: role.as_str().into(),
                specialty: None,
            };
            users::create(&mut conn, &input, role, "not-a-login", &Default::default())
                .expect("user")
                .id
        };
        let doctors = (0..doctors.max(1))
            .map(|n| new_user(Role::Doctor, n))
            .collect();
        let patient = new_user(Role::Patient, 0);
        drop(conn);
        InProcess {
            pool,
            doctors,
            caller: medbook::auth::Caller {
                id: patient,
                role: Role::Patient,
                token_hash: String::new(),
            },
            base: (Utc::now() + ChronoDuration::days(1))
                .date_naive()
                .and_hms_opt(0, 0, 0)
                .unwrap(),
        }
    }

    /// Books the `k`-th 30-minute slot from tomorrow with `doctor` through
    /// `services::booking::book`.
    fn book(
        &self,
        conn: &mut medbook::db::DbConn,
        contention: &medbook::db::Contention,
        doctor: i32,
        k: i64,
    ) -> Result<(), medbook::AppError> {
        let input = medbook::services::booking::BookingInput {
            doctor_id: doctor,
            scheduled_at: medbook::time::InputTime(self.base + ChronoDuration::minutes(30 * k)),
            type_: "video_consultation".to_owned(),
            reason: None,
            duration_minutes: None,
            patient_id: None,
        };
        medbook::services::booking::book(conn, &self.caller, &input, contention).map(drop)
    }
}

/// The booking transaction in a tight loop through the medbook library on one connection, with
/// `spread`'s random doctor and slot, so that its mix of booked and refused requests is the one
/// medbook sees. With a `pause`, the loop sleeps that long before each transaction (the
/// latencies leave it out): the same work on a thread that sleeps between transactions, as a
/// one-client server's database thread does between requests.
pub fn inproc(database_url: &str, duration: Duration, doctors: usize, pause: Duration) -> Report {
    let world = InProcess::new(database_url, doctors);
    let mut conn = world.pool.get().expect("connection");
    let contention = medbook::db::Contention::default();
    let mut report = Report {
        scenario: "inproc-booking".into(),
        clients: 1,
        elapsed: duration,
        ..Report::default()
    };
    if !pause.is_zero() {
        report.notes.push(format!(
            "slept {} µs before each transaction (not in its latency)",
            pause.as_micros()
        ));
    }
    let mut rng = rand::thread_rng();
    let started = Instant::now();
    while started.elapsed() < duration {
        if !pause.is_zero() {
            std::thread::sleep(pause);
        }
        let doctor = world.doctors[rng.gen_range(0..world.doctors.len())];
        let slot = rng.gen_range(0..RANDOM_SLOTS);
        let sent = Instant::now();
        let outcome = match world.book(&mut conn, &contention, doctor, slot) {
            Ok(()) => "201".to_owned(),
            Err(e) => format!("{} {}", e.status_code().as_u16(), e.code()),
        };
        report.latencies_us.push(sent.elapsed().as_micros() as u64);
        *report.outcomes.entry(outcome).or_default() += 1;
    }
    report.elapsed = started.elapsed();
    report
}

/// What the lock statistics cost a booking: bookings with statistics on and off in
/// interleaved rounds (medians compared), and the statistics' own work in a tight loop.
pub fn stats_overhead(database_url: &str) -> Report {
    const ROUNDS: usize = 12;
    const PER_ROUND: usize = 150;
    let world = InProcess::new(database_url, 1);
    let mut conn = world.pool.get().expect("connection");
    let contention = medbook::db::Contention::default();
    // One new doctor, consecutive slots: every booking succeeds.
    let mut k = 0i64;
    let mut per_booking = |enabled: bool| -> f64 {
        contention.stats.set_enabled(enabled);
        let started = Instant::now();
        for _ in 0..PER_ROUND {
            world
                .book(&mut conn, &contention, world.doctors[0], k)
                .expect("bench booking");
            k += 1;
        }
        started.elapsed().as_secs_f64() * 1e6 / PER_ROUND as f64
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
    let median = |mut v: Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    let (on, off) = (median(on), median(off));

    let iterations: i32 = 1_000_000;
    let stats = Arc::new(medbook::telemetry::LockStats::default());
    let started = Instant::now();
    for i in 0..iterations {
        let hold = stats.acquired(i % 50, Duration::from_micros(40));
        if i % 10 == 0 {
            stats.slot_conflict(i % 50);
        }
        drop(hold);
    }
    let stats_ns = started.elapsed().as_nanos() as f64 / f64::from(iterations);

    let mut report = Report {
        scenario: "stats-overhead".into(),
        clients: 1,
        ..Report::default()
    };
    report.notes = vec![
        format!("bookings: {ROUNDS} rounds x {PER_ROUND} each way; medians per booking"),
        format!("statistics on : {on:9.1} us"),
        format!("statistics off: {off:9.1} us"),
        format!(
            "difference    : {:+9.2} % (the machine's noise included)",
            (on - off) / off * 100.0
        ),
        format!(
            "statistics work alone: {stats_ns:.0} ns per booking = {:.4} % of a booking",
            stats_ns / 1000.0 / off * 100.0
        ),
    ];
    report
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An appointment as the API lists it: (id, doctor, patient, from, to, status), times on
    /// one day.
    type Row = (i64, i64, i64, &'static str, &'static str, &'static str);

    fn listed(rows: &[Row]) -> Vec<Value> {
        rows.iter()
            .map(|&(id, doctor, patient, from, to, status)| {
                json!({
                    "id": id, "doctor_id": doctor, "patient_id": patient,
                    "scheduled_at": format!("2030-01-01T{from}:00Z"),
                    "ends_at": format!("2030-01-01T{to}:00Z"),
                    "status": status,
                })
            })
            .collect()
    }

    #[test]
    fn every_scenario_is_found_by_its_name() {
        for kind in Kind::ALL {
            assert_eq!(Kind::parse(kind.name()), Some(kind));
        }
        assert_eq!(Kind::parse("mixed"), Some(Kind::Mixed));
        assert_eq!(Kind::parse("nonsense"), None);
    }

    #[test]
    fn overlaps_of_a_doctor_or_a_patient_are_found_and_nothing_else() {
        // (what, the list, what each finding must contain: one finding per entry)
        let cases: [(&str, &[Row], &[&str]); 4] = [
            (
                "back to back, or apart",
                &[
                    (1, 10, 20, "09:00", "09:30", "pending"),
                    (2, 10, 21, "09:30", "10:00", "confirmed"),
                    (3, 11, 20, "09:30", "10:00", "in_progress"),
                    (4, 11, 22, "11:00", "11:30", "pending"),
                ],
                &[],
            ),
            (
                "a doctor booked twice at once",
                &[
                    (1, 10, 20, "09:00", "09:30", "pending"),
                    (2, 10, 21, "09:15", "09:45", "confirmed"),
                ],
                &["doctor_id 10: appointment 1 (2030-01-01T09:00:00Z–2030-01-01T09:30:00Z) and 2"],
            ),
            (
                // 3 and 7 overlap; 5, another patient's, lies between them by id and by start.
                "a patient booked twice at once, with two doctors",
                &[
                    (7, 12, 30, "10:10", "10:40", "pending"),
                    (3, 10, 30, "09:00", "11:00", "confirmed"),
                    (5, 11, 31, "09:30", "10:00", "pending"),
                ],
                &["patient_id 30: appointment 3"],
            ),
            (
                "only active appointments hold a slot",
                &[
                    (1, 10, 20, "09:00", "09:30", "cancelled"),
                    (2, 10, 20, "09:00", "09:30", "completed"),
                    (3, 10, 20, "09:00", "09:30", "rejected"),
                    (4, 10, 20, "09:00", "09:30", "pending"),
                ],
                &[],
            ),
        ];
        for (what, rows, expected) in cases {
            let found = overlapping(&listed(rows));
            assert_eq!(found.len(), expected.len(), "{what}: {found:?}");
            for (finding, part) in found.iter().zip(expected) {
                assert!(finding.contains(part), "{what}: {finding}");
            }
        }
    }

    #[test]
    fn times_are_compared_as_times_not_as_text() {
        // As text, "10:30:00.5Z" sorts before "10:30:00Z", and "10:30:00Z" after "10:30:00.5Z".
        let appointment = |id: i64, patient: i64, from: &str, to: &str| {
            json!({
                "id": id, "doctor_id": 10, "patient_id": patient, "status": "pending",
                "scheduled_at": format!("2030-01-01T{from}"), "ends_at": format!("2030-01-01T{to}"),
            })
        };
        let back_to_back = [
            appointment(1, 20, "10:00:00Z", "10:30:00Z"),
            appointment(2, 21, "10:30:00.5Z", "11:00:00Z"),
        ];
        assert_eq!(overlapping(&back_to_back), Vec::<String>::new());
        let overlapping_by_half_a_second = [
            appointment(1, 20, "10:00:00.5Z", "10:30:00.5Z"),
            appointment(2, 21, "10:30:00Z", "11:00:00Z"),
        ];
        let found = overlapping(&overlapping_by_half_a_second);
        assert_eq!(found.len(), 1, "{found:?}");
        assert!(
            found[0].contains("doctor_id 10: appointment 1"),
            "{found:?}"
        );
        // An offset is a time like any other.
        let offset = [
            appointment(1, 20, "10:00:00Z", "10:30:00Z"),
            appointment(2, 21, "11:15:00+01:00", "11:45:00+01:00"),
        ];
        assert_eq!(overlapping(&offset).len(), 1);
    }

    #[test]
    fn an_appointment_without_its_times_is_reported() {
        let mut all = listed(&[
            (1, 10, 20, "09:00", "09:30", "pending"),
            (2, 10, 21, "09:15", "09:45", "pending"),
        ]);
        all[1].as_object_mut().unwrap().remove("ends_at");
        let found = overlapping(&all);
        assert!(
            !found.is_empty() && found.iter().all(|f| f.contains("unreadable")),
            "{found:?}"
        );
    }
}
