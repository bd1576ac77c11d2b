//! The scenarios, their set-up, the timed run, and the invariant check.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use chrono::{Duration as ChronoDuration, NaiveDateTime, Utc};
use futures_util::stream::{self, StreamExt};
use indicatif::{ProgressBar, ProgressStyle};
use rand::Rng;
use reqwest::Method;
use serde_json::{json, Value};

use crate::client::{Api, User};
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
}

impl Kind {
    pub fn parse(s: &str) -> Option<Kind> {
        Some(match s {
            "spread" => Kind::Spread,
            "contended" => Kind::Contended,
            "hot-doctor" => Kind::HotDoctor,
            "status" => Kind::Status,
            "read" => Kind::Read,
            _ => return None,
        })
    }

    fn name(self) -> &'static str {
        match self {
            Kind::Spread => "spread",
            Kind::Contended => "contended",
            Kind::HotDoctor => "hot-doctor",
            Kind::Status => "status",
            Kind::Read => "read",
        }
    }
}

/// Slots are 30 minutes from tomorrow 00:00 UTC; random scenarios use the first year.
const SLOTS_PER_YEAR: i64 = 365 * 48;
/// Set-up appointments and contended slots live after the first year, apart from the rest.
const SETUP_SLOTS_FROM: i64 = SLOTS_PER_YEAR + 48;
const CONTENDED_SLOTS_FROM: i64 = 2 * SLOTS_PER_YEAR;
const SETUP_APPOINTMENTS: usize = 400;

fn slot_time(base: NaiveDateTime, k: i64) -> String {
    let t = base + ChronoDuration::minutes(30 * k);
    format!("{}Z", t.format("%Y-%m-%dT%H:%M:%S"))
}

struct World {
    admin: User,
    doctors: Vec<i64>,
    patients: Vec<User>,
    appointments: Vec<i64>,
    base: NaiveDateTime,
}

async fn setup(api: &Api, options: &Options) -> World {
    let run = format!("{:x}", Utc::now().timestamp_micros());
    let admin = api
        .login(&options.admin_email, &options.admin_password)
        .await;
    let doctors_wanted = match options.scenario {
        Kind::Contended | Kind::HotDoctor => 1,
        _ => options.doctors,
    };
    let doctors: Vec<i64> = stream::iter(0..doctors_wanted)
        .map(|n| {
            let (api, admin, email) = (
                api.clone(),
                admin.clone(),
                format!("bench-d{n}-{run}@example.com"),
            );
            async move { api.create_doctor(&admin, &email).await }
        })
        .buffer_unordered(8)
        .collect()
        .await;
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
    let mut appointments = Vec::new();
    if matches!(options.scenario, Kind::Status | Kind::Read) {
        let booked: Vec<Option<i64>> = stream::iter(0..SETUP_APPOINTMENTS)
            .map(|i| {
                let api = api.clone();
                let patient = patients[i % patients.len()].clone();
                let body = json!({
                    "doctor_id": doctors[i % doctors.len()],
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
                    (status.as_u16() == 201)
                        .then(|| answer["id"].as_i64())
                        .flatten()
                }
            })
            .buffer_unordered(8)
            .collect()
            .await;
        appointments = booked.into_iter().flatten().collect();
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
        base,
    }
}

/// One request of the scenario by client `c` (its `i`-th).
async fn request(
    api: &Api,
    world: &World,
    kind: Kind,
    c: usize,
    i: i64,
) -> Result<(u16, Value), reqwest::Error> {
    let patient = &world.patients[c];
    let booking = |doctor: i64, k: i64| json!({"doctor_id": doctor, "scheduled_at": slot_time(world.base, k), "type": "video_consultation"});
    let (method, path, token, body) = {
        let mut rng = rand::thread_rng();
        match kind {
            Kind::Spread => {
                let doctor = world.doctors[rng.gen_range(0..world.doctors.len())];
                (
                    Method::POST,
                    "/api/v1/appointments".to_owned(),
                    &patient.token,
                    Some(booking(doctor, rng.gen_range(0..SLOTS_PER_YEAR))),
                )
            }
            Kind::HotDoctor => (
                Method::POST,
                "/api/v1/appointments".to_owned(),
                &patient.token,
                Some(booking(world.doctors[0], rng.gen_range(0..SLOTS_PER_YEAR))),
            ),
            Kind::Contended => (
                Method::POST,
                "/api/v1/appointments".to_owned(),
                &patient.token,
                Some(booking(world.doctors[0], CONTENDED_SLOTS_FROM + i)),
            ),
            Kind::Status => {
                let id = world.appointments[rng.gen_range(0..world.appointments.len())];
                (
                    Method::PUT,
                    format!("/api/v1/appointments/{id}"),
                    &world.admin.token,
                    Some(json!({"reason": format!("bench {c}/{i}")})),
                )
            }
            Kind::Read => {
                let id = world.appointments[rng.gen_range(0..world.appointments.len())];
                (
                    Method::GET,
                    format!("/api/v1/appointments/{id}"),
                    &world.admin.token,
                    None,
                )
            }
        }
    };
    api.call(method, &path, Some(token), body.as_ref())
        .await
        .map(|(s, b)| (s.as_u16(), b))
}

/// Sets up, runs the scenario, and checks the invariant.
pub async fn run(options: &Options) -> Report {
    let api = Api::new(&options.url);
    let world = Arc::new(setup(&api, options).await);
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
    let results: Vec<(Vec<u64>, HashMap<String, u64>)> =
        futures_util::future::join_all((0..options.clients).map(|c| {
            let (api, world, done) = (api.clone(), Arc::clone(&world), Arc::clone(&done));
            let kind = options.scenario;
            tokio::spawn(async move {
                let mut latencies = Vec::new();
                let mut outcomes: HashMap<String, u64> = HashMap::new();
                let mut i = 0i64;
                while Instant::now() < stop_at {
                    let sent = Instant::now();
                    let result = request(&api, &world, kind, c, i).await;
                    let took = sent.elapsed();
                    i += 1;
                    done.fetch_add(1, Ordering::Relaxed);
                    if sent < measure_from || Instant::now() > stop_at {
                        continue;
                    }
                    latencies.push(took.as_micros() as u64);
                    let outcome = match result {
                        Ok((status, body)) => match body["code"].as_str() {
                            Some(code) if status >= 400 => format!("{status} {code}"),
                            _ => status.to_string(),
                        },
                        Err(e) => format!("error: {}", e.without_url()),
                    };
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
        for (k, n) in outcomes {
            *report.outcomes.entry(k).or_default() += n;
        }
    }
    if options.verify
        && matches!(
            options.scenario,
            Kind::Spread | Kind::Contended | Kind::HotDoctor
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
async fn verify(api: &Api, admin: &User) -> (bool, usize) {
    let all = api.all_appointments(admin).await;
    let active: Vec<&Value> = all
        .iter()
        .filter(|a| {
            matches!(
                a["status"].as_str(),
                Some("pending" | "confirmed" | "in_progress")
            )
        })
        .collect();
    let mut ok = true;
    for key in ["doctor_id", "patient_id"] {
        let mut by_owner: HashMap<i64, Vec<(String, String)>> = HashMap::new();
        for a in &active {
            by_owner.entry(a[key].as_i64().unwrap()).or_default().push((
                a["scheduled_at"].as_str().unwrap().to_owned(),
                a["ends_at"].as_str().unwrap().to_owned(),
            ));
        }
        for intervals in by_owner.values_mut() {
            intervals.sort();
            for pair in intervals.windows(2) {
                // RFC 3339 UTC strings of one format compare as times.
                if pair[1].0 < pair[0].1 {
                    eprintln!("overlap by {key}: {pair:?}");
                    ok = false;
                }
            }
        }
    }
    (ok, all.len())
}

/// The booking transaction in a tight loop through the medbook library on one connection.
pub fn inproc(database_url: &str, duration: Duration) -> Report {
    use medbook::auth::Caller;
    use medbook::config::Config;
    use medbook::db::{build_pool, run_migrations, Contention};
    use medbook::domain::Role;
    use medbook::models::user::{self, NewUser};
    use medbook::services::booking::{self, BookingInput};
    use medbook::time::InputTime;

    let config = Config::for_database(database_url);
    let pool = build_pool(&config, Arc::default());
    let mut conn = pool.get().expect("database reachable");
    run_migrations(&mut conn).expect("migrations");
    let now = medbook::time::now();
    let run = now.and_utc().timestamp_micros();
    let mut new_user = |role: Role| {
        let email = format!("inproc-{}-{run}@example.com", role.as_str());
        user::insert(
            &mut conn,
            &NewUser {
                name: "In-process",
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
        .expect("user")
        .id
    };
    let (doctor, patient) = (new_user(Role::Doctor), new_user(Role::Patient));
    let caller = Caller {
        id: patient,
        role: Role::Patient,
        token_hash: String::new(),
    };
    let contention = Contention::default();
    let base = (Utc::now() + ChronoDuration::days(1))
        .date_naive()
        .and_hms_opt(0, 0, 0)
        .unwrap();
    let mut report = Report {
        scenario: "inproc-booking".into(),
        clients: 1,
        elapsed: duration,
        ..Report::default()
    };
    let outcomes = Arc::new(Mutex::new(HashMap::<String, u64>::new()));
    let started = Instant::now();
    let mut k = 0i64;
    while started.elapsed() < duration {
        let input = BookingInput {
            doctor_id: doctor,
            scheduled_at: InputTime(base + ChronoDuration::minutes(30 * k)),
            type_: "video_consultation".to_owned(),
            reason: None,
            duration_minutes: None,
            patient_id: None,
        };
        k += 1;
        let sent = Instant::now();
        let result = booking::book(&mut conn, &caller, &input, &contention);
        report.latencies_us.push(sent.elapsed().as_micros() as u64);
        let key = match result {
            Ok(_) => "201".to_owned(),
            Err(e) => e.code().to_owned(),
        };
        *outcomes.lock().unwrap().entry(key).or_default() += 1;
    }
    report.elapsed = started.elapsed();
    report.outcomes = outcomes
        .lock()
        .unwrap()
        .iter()
        .map(|(k, v)| (k.clone(), *v))
        .collect();
    report
}
