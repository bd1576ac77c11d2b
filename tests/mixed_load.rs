//! A mixed load: every change the API offers, from many clients at once, on both backends.
//!
//! Bookings, reschedules, status moves (unconditional, with a body `version`, with
//! `If-Match`), reasons, prescriptions and their updates and acknowledgements, ratings and
//! their updates, and users deactivated and reactivated, all racing on three doctors and six
//! patients whose calendars overlap. Every answer must be one the contract names for that
//! request. Afterwards every acknowledged change must be in the database as it was answered,
//! and the invariants must hold: no two active appointments of a doctor or a patient overlap;
//! each appointment has one history row per version, a chain of moves the contract allows,
//! made by someone allowed to make them; prescriptions and ratings belong to completed
//! appointments, one each at most; a doctor's average is the average of their ratings; and
//! nothing acknowledged is missing, nothing unacknowledged is there.
//!
//! The choices are random: the seed is printed, and `MEDBOOK_MIXED_SEED` repeats a run's
//! choices (the interleaving is the machine's).

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;

use common::{slot, Actor, Answer, TestApp};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use reqwest::{Method, RequestBuilder, StatusCode};
use serde_json::{json, Value};

both_backends!(a_mixed_load_keeps_every_invariant_and_every_answer);

/// The same load on PostgreSQL through two medbook servers sharing the database (the
/// several-processes deployment): each request goes to one or the other in turn.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn postgres_two_processes_keep_every_invariant_and_every_answer() {
    let Some(app) = TestApp::start(common::Backend::Postgres).await else {
        return;
    };
    let other = common::Process::start(&app.db_url, &[]);
    mixed_load(&app, vec![app.base.clone(), other.base.clone()]).await;
}

/// The same load through two medbook processes on one SQLite file, as during a restart that
/// starts the new process before the old one has stopped: every write takes the file's write
/// lock, whichever process it comes from, so the answers and the invariants are the same.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sqlite_two_processes_on_one_file_keep_every_invariant_and_every_answer() {
    let app = TestApp::start(common::Backend::Sqlite).await.unwrap();
    // As generous as the test app's own (tests run in parallel on a shared machine).
    let other = common::Process::start(
        &app.db_url,
        &[
            ("MEDBOOK_POOL_TIMEOUT_MS", "15000"),
            ("MEDBOOK_SQLITE_BUSY_TIMEOUT_MS", "15000"),
        ],
    );
    mixed_load(&app, vec![app.base.clone(), other.base.clone()]).await;
}

async fn a_mixed_load_keeps_every_invariant_and_every_answer(app: TestApp) {
    mixed_load(&app, vec![app.base.clone()]).await;
}

const WORKERS: u64 = 12;
const OPS: usize = 80;
const DOCTORS: usize = 3;
const PATIENTS: usize = 6;
const STATUSES: [&str; 6] = [
    "pending",
    "confirmed",
    "in_progress",
    "completed",
    "cancelled",
    "rejected",
];

/// A user the workers act as; the token changes when a deactivated user logs in again.
struct Person {
    id: i64,
    email: String,
    token: Mutex<String>,
}

impl Person {
    /// The person `actor` is (their email read back, for a new login).
    async fn of(app: &TestApp, actor: Actor) -> Person {
        let email = app.get("/api/v1/me", &actor).await.body["email"]
            .as_str()
            .unwrap()
            .to_owned();
        Person {
            id: actor.id,
            email,
            token: Mutex::new(actor.token),
        }
    }

    fn token(&self) -> String {
        self.token.lock().unwrap().clone()
    }
}

/// Who acts: an appointment's patient or doctor, or the admin.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Who {
    Patient(usize),
    Doctor(usize),
    Admin,
}

/// What the workers know and what they were told.
#[derive(Default)]
struct Record {
    /// Appointments booked: (id, patient index, doctor index).
    appointments: Vec<(i64, usize, usize)>,
    /// Prescriptions created: (id, appointment id, patient index, doctor index).
    prescriptions: Vec<(i64, i64, usize, usize)>,
    /// Ratings created: (id, appointment id, patient index, doctor index).
    ratings: Vec<(i64, i64, usize, usize)>,
    /// Appointment changes answered 200: (id, version, status, what).
    changes: Vec<(i64, i64, String, &'static str)>,
    /// Prescriptions whose acknowledgement was answered 200.
    acknowledged: Vec<i64>,
    /// Answers the contract does not name for their request.
    unexpected: Vec<String>,
    /// Every (request, status, code) answered, counted: printed, to show what ran.
    answered: BTreeMap<String, usize>,
}

struct World<'a> {
    app: &'a TestApp,
    /// The servers, taken in turn.
    bases: Vec<String>,
    next: AtomicUsize,
    doctors: Vec<Person>,
    patients: Vec<Person>,
    record: Mutex<Record>,
}

impl World<'_> {
    fn person(&self, who: Who) -> Option<&Person> {
        match who {
            Who::Patient(i) => Some(&self.patients[i]),
            Who::Doctor(i) => Some(&self.doctors[i]),
            Who::Admin => None,
        }
    }

    fn token(&self, who: Who) -> String {
        self.person(who)
            .map_or_else(|| self.app.admin.token.clone(), Person::token)
    }

    /// `method path` as `who`, with `body` unless it is `null`.
    fn request(&self, who: Who, method: Method, path: &str, body: &Value) -> RequestBuilder {
        let base = &self.bases[self.next.fetch_add(1, Ordering::Relaxed) % self.bases.len()];
        let req = self
            .app
            .client
            .request(method, format!("{base}{path}"))
            .bearer_auth(self.token(who));
        if body.is_null() {
            req
        } else {
            req.json(body)
        }
    }

    /// Sends `method path` as `who`, with `If-Match` if given.
    async fn call(
        &self,
        who: Who,
        method: Method,
        path: &str,
        if_match: Option<i64>,
        body: Value,
    ) -> Answer {
        let mut req = self.request(who, method, path, &body);
        if let Some(version) = if_match {
            req = req.header("If-Match", format!("\"{version}\""));
        }
        self.app.send(req).await
    }

    /// Checks an answer against the ones `allowed` names and counts it. A `401` is allowed
    /// for a user the admin may have deactivated (doctor 0 and patient 0), who then logs in
    /// again if they are active.
    async fn judge(&self, what: &str, who: Who, answer: &Answer, allowed: &[(u16, &str)]) {
        let status = answer.status.as_u16();
        let code = answer.code().to_owned();
        let key = format!("{what} {status} {code}");
        let toggled = matches!(who, Who::Patient(0) | Who::Doctor(0));
        let fine = allowed
            .iter()
            .any(|&(s, c)| s == status && (c.is_empty() || c == code))
            || (status == 401 && toggled);
        let needs_current = matches!(
            (status, code.as_str()),
            (409, "VERSION_CONFLICT") | (412, _)
        );
        {
            let mut record = self.record.lock().unwrap();
            *record.answered.entry(key.clone()).or_default() += 1;
            if !fine {
                record
                    .unexpected
                    .push(format!("{key} as {who:?}: {}", answer.body));
            } else if needs_current && answer.body["current"]["id"].as_i64().is_none() {
                record
                    .unexpected
                    .push(format!("{key} without current: {}", answer.body));
            }
        }
        if status == 401 && toggled {
            let person = self.person(who).unwrap();
            let login = self
                .app
                .call(
                    Method::POST,
                    "/api/v1/auth/login",
                    None,
                    Some(json!({"email": person.email, "password": common::PASSWORD})),
                )
                .await;
            if login.status == StatusCode::OK {
                *person.token.lock().unwrap() = login.body["token"].as_str().unwrap().to_owned();
            }
        }
    }

    /// The current version of `path`, read as the admin.
    async fn version(&self, path: &str) -> Option<i64> {
        let answer = self
            .call(Who::Admin, Method::GET, path, None, Value::Null)
            .await;
        answer.body["version"].as_i64()
    }

    /// A version to send, and how: none, in the body, or as `If-Match` (from a fresh read, so
    /// that it races the other workers' changes).
    async fn condition(&self, rng: &mut StdRng, path: &str, body: &mut Value) -> Option<i64> {
        match rng.gen_range(0..3) {
            0 => None,
            1 => {
                if let Some(version) = self.version(path).await {
                    body["version"] = json!(version);
                }
                None
            }
            _ => self.version(path).await,
        }
    }

    fn pick_appointment(&self, rng: &mut StdRng) -> Option<(i64, usize, usize)> {
        let record = self.record.lock().unwrap();
        (!record.appointments.is_empty())
            .then(|| record.appointments[rng.gen_range(0..record.appointments.len())])
    }

    /// One random request.
    async fn step(&self, rng: &mut StdRng, worker: u64, n: usize) {
        match rng.gen_range(0..100) {
            0..=17 => self.book(rng, None).await,
            18..=24 => self.book(rng, Some(format!("w{worker}-{n}"))).await,
            25..=49 => self.move_status(rng).await,
            50..=59 => self.reschedule(rng).await,
            60..=64 => self.change_reason(rng, n).await,
            65..=72 => self.prescribe(rng, n).await,
            73..=77 => self.change_prescription(rng, n).await,
            78..=82 => self.acknowledge(rng).await,
            83..=90 => self.rate(rng).await,
            91..=95 => self.change_rating(rng).await,
            _ => self.toggle(rng).await,
        }
    }

    /// A random slot: one of two days, 09:00–11:30 in half hours, 30 or 60 minutes, so that
    /// calendars collide often.
    fn slot(rng: &mut StdRng) -> (String, i64) {
        let start = rng.gen_range(0..6u32);
        let at = slot(
            2 + rng.gen_range(0..2),
            9 + start / 2,
            if start % 2 == 0 { 0 } else { 30 },
        );
        (at, if rng.gen_bool(0.5) { 30 } else { 60 })
    }

    /// A booking; with a key, sent twice at once: one runs, the other waits its turn as
    /// `409 IDEMPOTENCY_KEY_IN_USE` or gets its answer replayed, byte for byte.
    async fn book(&self, rng: &mut StdRng, key: Option<String>) {
        let patient = rng.gen_range(0..PATIENTS);
        let doctor = rng.gen_range(0..DOCTORS);
        let (at, minutes) = Self::slot(rng);
        let mut body = json!({"doctor_id": self.doctors[doctor].id, "scheduled_at": at,
                              "duration_minutes": minutes, "type": "in_person"});
        // An admin books for a patient now and then.
        let who = if rng.gen_bool(0.2) {
            body["patient_id"] = json!(self.patients[patient].id);
            Who::Admin
        } else {
            Who::Patient(patient)
        };
        let answers = match &key {
            None => vec![
                self.call(who, Method::POST, "/api/v1/appointments", None, body)
                    .await,
            ],
            Some(key) => {
                let send = || {
                    let req = self.request(who, Method::POST, "/api/v1/appointments", &body);
                    self.app.send(req.header("Idempotency-Key", key))
                };
                let (a, b) = tokio::join!(send(), send());
                vec![a, b]
            }
        };
        let ran: Vec<&Answer> = answers
            .iter()
            // A 401 (a deactivated patient's token) is refused before any key is claimed.
            .filter(|a| !matches!(a.code(), "IDEMPOTENCY_KEY_IN_USE" | "UNAUTHENTICATED"))
            .collect();
        let originals = ran
            .iter()
            .filter(|a| a.header("idempotent-replayed") != "true")
            .count();
        if originals > 1 || ran.windows(2).any(|w| w[0].body != w[1].body) {
            self.record.lock().unwrap().unexpected.push(format!(
                "key {key:?}: not one request and its replay: {:?}",
                ran.iter()
                    .map(|a| (&a.status, &a.headers, &a.body))
                    .collect::<Vec<_>>()
            ));
        }
        if let Some(answer) = ran.iter().find(|a| a.status == StatusCode::CREATED) {
            let booked = &answer.body;
            let mut record = self.record.lock().unwrap();
            if booked["patient_id"] != self.patients[patient].id
                || booked["doctor_id"] != self.doctors[doctor].id
                || booked["status"] != "pending"
                || booked["version"] != 1
            {
                record.unexpected.push(format!("booked as asked? {booked}"));
            }
            record.appointments.push((answer.id(), patient, doctor));
        }
        let what = if key.is_some() { "keyed book" } else { "book" };
        for answer in &answers {
            self.judge(
                what,
                who,
                answer,
                &[
                    (201, ""),
                    (409, "SLOT_TAKEN"),
                    (409, "PATIENT_BUSY"),
                    (409, "DOCTOR_INACTIVE"),
                    (409, "PATIENT_INACTIVE"),
                    (409, "IDEMPOTENCY_KEY_IN_USE"),
                ],
            )
            .await;
        }
    }

    fn party(rng: &mut StdRng, patient: usize, doctor: usize) -> Who {
        match rng.gen_range(0..5) {
            0 | 1 => Who::Doctor(doctor),
            2 | 3 => Who::Patient(patient),
            _ => Who::Admin,
        }
    }

    /// A change of an appointment: `body` plus a random condition, by PUT or PATCH. Allowed:
    /// the answers of every change, and `also`.
    async fn change_appointment(
        &self,
        rng: &mut StdRng,
        what: &'static str,
        who: Who,
        id: i64,
        mut body: Value,
        also: &[(u16, &str)],
    ) {
        let path = format!("/api/v1/appointments/{id}");
        let if_match = self.condition(rng, &path, &mut body).await;
        let method = if rng.gen_bool(0.5) {
            Method::PUT
        } else {
            Method::PATCH
        };
        let answer = self.call(who, method, &path, if_match, body).await;
        if answer.status == StatusCode::OK {
            let version = answer.body["version"].as_i64().unwrap();
            let status = answer.body["status"].as_str().unwrap().to_owned();
            self.record
                .lock()
                .unwrap()
                .changes
                .push((id, version, status, what));
        }
        let mut allowed = vec![
            (200, ""),
            (403, "FORBIDDEN"),
            (422, "INVALID_TRANSITION"),
            (409, "VERSION_CONFLICT"),
            (412, "PRECONDITION_FAILED"),
        ];
        allowed.extend_from_slice(also);
        self.judge(what, who, &answer, &allowed).await;
    }

    /// A known appointment and one of its parties (or the admin), at random.
    fn pick_party(&self, rng: &mut StdRng) -> Option<(i64, Who)> {
        let (id, patient, doctor) = self.pick_appointment(rng)?;
        Some((id, Self::party(rng, patient, doctor)))
    }

    async fn move_status(&self, rng: &mut StdRng) {
        let Some((id, patient, doctor)) = self.pick_appointment(rng) else {
            return;
        };
        // Mostly the doctor's next step, so that appointments get completed (and can be
        // prescribed for and rated); otherwise anyone, to anything.
        let next = match self
            .call(
                Who::Admin,
                Method::GET,
                &format!("/api/v1/appointments/{id}"),
                None,
                Value::Null,
            )
            .await
            .body["status"]
            .as_str()
        {
            Some("pending") => Some("confirmed"),
            Some("confirmed") => Some("in_progress"),
            Some("in_progress") => Some("completed"),
            _ => None,
        };
        let (who, to) = match next {
            Some(next) if rng.gen_bool(0.6) => (Who::Doctor(doctor), next),
            _ => (
                Self::party(rng, patient, doctor),
                STATUSES[rng.gen_range(0..STATUSES.len())],
            ),
        };
        self.change_appointment(rng, "status", who, id, json!({"status": to}), &[])
            .await;
    }

    async fn reschedule(&self, rng: &mut StdRng) {
        let Some((id, who)) = self.pick_party(rng) else {
            return;
        };
        let (at, minutes) = Self::slot(rng);
        self.change_appointment(
            rng,
            "reschedule",
            who,
            id,
            json!({"scheduled_at": at, "duration_minutes": minutes}),
            &[
                (409, "SLOT_TAKEN"),
                (409, "PATIENT_BUSY"),
                (409, "DOCTOR_INACTIVE"),
                (409, "PATIENT_INACTIVE"),
            ],
        )
        .await;
    }

    async fn change_reason(&self, rng: &mut StdRng, n: usize) {
        let Some((id, who)) = self.pick_party(rng) else {
            return;
        };
        // A reason no one sent before: every 200 is a write.
        let reason = format!("reason {n} {}", rng.gen::<u32>());
        self.change_appointment(rng, "reason", who, id, json!({"reason": reason}), &[])
            .await;
    }

    async fn prescribe(&self, rng: &mut StdRng, n: usize) {
        let Some((id, patient, doctor)) = self.pick_appointment(rng) else {
            return;
        };
        let who = Who::Doctor(doctor);
        let body = json!({"appointment_id": id, "notes": format!("notes {n}"),
            "medications": [{"name": "Ibuprofen", "dosage": "400 mg", "frequency": "as needed"}]});
        let answer = self
            .call(who, Method::POST, "/api/v1/prescriptions", None, body)
            .await;
        if answer.status == StatusCode::CREATED {
            self.record
                .lock()
                .unwrap()
                .prescriptions
                .push((answer.id(), id, patient, doctor));
        }
        self.judge(
            "prescribe",
            who,
            &answer,
            &[
                (201, ""),
                (409, "PRESCRIPTION_EXISTS"),
                (422, "APPOINTMENT_NOT_COMPLETED"),
            ],
        )
        .await;
    }

    fn pick_prescription(&self, rng: &mut StdRng) -> Option<(i64, i64, usize, usize)> {
        let record = self.record.lock().unwrap();
        (!record.prescriptions.is_empty())
            .then(|| record.prescriptions[rng.gen_range(0..record.prescriptions.len())])
    }

    async fn change_prescription(&self, rng: &mut StdRng, n: usize) {
        let Some((id, _, _, doctor)) = self.pick_prescription(rng) else {
            return;
        };
        let who = Who::Doctor(doctor);
        let path = format!("/api/v1/prescriptions/{id}");
        let mut body = json!({"notes": format!("changed {n} {}", rng.gen::<u32>())});
        let if_match = self.condition(rng, &path, &mut body).await;
        let answer = self.call(who, Method::PUT, &path, if_match, body).await;
        if answer.status == StatusCode::OK && !answer.body["acknowledged_at"].is_null() {
            self.record.lock().unwrap().unexpected.push(format!(
                "an acknowledged prescription changed: {}",
                answer.body
            ));
        }
        self.judge(
            "change prescription",
            who,
            &answer,
            &[
                (200, ""),
                (409, "ALREADY_ACKNOWLEDGED"),
                (409, "VERSION_CONFLICT"),
                (412, "PRECONDITION_FAILED"),
            ],
        )
        .await;
    }

    async fn acknowledge(&self, rng: &mut StdRng) {
        let Some((id, _, patient, _)) = self.pick_prescription(rng) else {
            return;
        };
        let who = Who::Patient(patient);
        let path = format!("/api/v1/prescriptions/{id}/acknowledge");
        let answer = self.call(who, Method::POST, &path, None, json!({})).await;
        if answer.status == StatusCode::OK {
            self.record.lock().unwrap().acknowledged.push(id);
        }
        self.judge(
            "acknowledge",
            who,
            &answer,
            &[(200, ""), (409, "ALREADY_ACKNOWLEDGED")],
        )
        .await;
    }

    async fn rate(&self, rng: &mut StdRng) {
        let Some((id, patient, doctor)) = self.pick_appointment(rng) else {
            return;
        };
        let who = Who::Patient(patient);
        let body = json!({"appointment_id": id, "score": rng.gen_range(1..=5)});
        let answer = self
            .call(who, Method::POST, "/api/v1/ratings", None, body)
            .await;
        if answer.status == StatusCode::CREATED {
            self.record
                .lock()
                .unwrap()
                .ratings
                .push((answer.id(), id, patient, doctor));
        }
        self.judge(
            "rate",
            who,
            &answer,
            &[
                (201, ""),
                (409, "RATING_EXISTS"),
                (422, "APPOINTMENT_NOT_COMPLETED"),
            ],
        )
        .await;
    }

    async fn change_rating(&self, rng: &mut StdRng) {
        let picked = {
            let record = self.record.lock().unwrap();
            (!record.ratings.is_empty())
                .then(|| record.ratings[rng.gen_range(0..record.ratings.len())])
        };
        let Some((id, _, patient, _)) = picked else {
            return;
        };
        let who = Who::Patient(patient);
        let path = format!("/api/v1/ratings/{id}");
        let mut body = json!({"score": rng.gen_range(1..=5)});
        let if_match = self.condition(rng, &path, &mut body).await;
        let answer = self.call(who, Method::PUT, &path, if_match, body).await;
        self.judge(
            "change rating",
            who,
            &answer,
            &[
                (200, ""),
                (409, "VERSION_CONFLICT"),
                (412, "PRECONDITION_FAILED"),
            ],
        )
        .await;
    }

    /// The admin deactivates or reactivates doctor 0 or patient 0.
    async fn toggle(&self, rng: &mut StdRng) {
        let person = if rng.gen_bool(0.5) {
            &self.doctors[0]
        } else {
            &self.patients[0]
        };
        let answer = self
            .call(
                Who::Admin,
                Method::PATCH,
                &format!("/api/v1/admin/users/{}", person.id),
                None,
                json!({"is_active": rng.gen_bool(0.5)}),
            )
            .await;
        self.judge("toggle", Who::Admin, &answer, &[(200, "")])
            .await;
    }
}

/// Whether the contract allows `actor` (patient, doctor or admin of the appointment) to move
/// it from `from` to `to` as the history row's `action`.
fn allowed_move(action: &str, from: &str, to: &str, actor: Who) -> bool {
    let doctor = matches!(actor, Who::Doctor(_));
    let active = matches!(from, "pending" | "confirmed" | "in_progress");
    match action {
        "rescheduled" => {
            matches!(from, "pending" | "confirmed") && to == "pending" && actor != Who::Admin
        }
        "updated" => from == to && active,
        _ if action != to => false,
        "confirmed" | "rejected" => from == "pending" && doctor,
        "in_progress" => from == "confirmed" && doctor,
        "completed" => from == "in_progress" && doctor,
        "cancelled" => match from {
            "pending" | "confirmed" => true,
            "in_progress" => !matches!(actor, Who::Patient(_)),
            _ => false,
        },
        _ => false,
    }
}

async fn mixed_load(app: &TestApp, bases: Vec<String>) {
    let seed = std::env::var("MEDBOOK_MIXED_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| rand::thread_rng().gen::<u64>());
    println!(
        "mixed load on {:?} through {} server(s): MEDBOOK_MIXED_SEED={seed}",
        app.backend,
        bases.len()
    );

    let mut doctors = Vec::new();
    for _ in 0..DOCTORS {
        doctors.push(Person::of(app, app.doctor().await).await);
    }
    let mut patients = Vec::new();
    for actor in app.patients(PATIENTS).await {
        patients.push(Person::of(app, actor).await);
    }
    let world = World {
        app,
        bases,
        next: AtomicUsize::new(0),
        doctors,
        patients,
        record: Mutex::default(),
    };

    futures_util::future::join_all((0..WORKERS).map(|w| {
        let world = &world;
        async move {
            let mut rng = StdRng::seed_from_u64(seed.wrapping_add(w));
            for n in 0..OPS {
                world.step(&mut rng, w, n).await;
            }
        }
    }))
    .await;

    let record = world.record.into_inner().unwrap();
    println!("answers: {:#?}", record.answered);
    assert!(
        record.unexpected.is_empty(),
        "answers the contract does not name (seed {seed}):\n{}",
        record.unexpected.join("\n")
    );

    app.assert_no_overlaps();

    // Nothing lost, nothing extra: the database holds exactly what was acknowledged.
    assert_eq!(
        app.count("SELECT COUNT(*) FROM appointments"),
        record.appointments.len() as i64
    );
    assert_eq!(
        app.count("SELECT COUNT(*) FROM prescriptions"),
        record.prescriptions.len() as i64
    );
    assert_eq!(
        app.count("SELECT COUNT(*) FROM ratings"),
        record.ratings.len() as i64
    );
    // Prescriptions and ratings belong to completed appointments, with their parties.
    for table in ["prescriptions", "ratings"] {
        assert_eq!(
            app.count(&format!(
                "SELECT COUNT(*) FROM {table} t JOIN appointments a ON a.id = t.appointment_id \
                 WHERE a.status <> 'completed' OR a.patient_id <> t.patient_id \
                 OR a.doctor_id <> t.doctor_id"
            )),
            0,
            "{table} of appointments not completed, or of other parties"
        );
    }
    let acknowledged: BTreeSet<i64> = record.acknowledged.iter().copied().collect();
    assert_eq!(
        acknowledged.len(),
        record.acknowledged.len(),
        "a prescription acknowledged twice"
    );
    assert_eq!(
        app.count("SELECT COUNT(*) FROM prescriptions WHERE acknowledged_at IS NOT NULL"),
        acknowledged.len() as i64
    );

    // Every appointment: its history is one row per version, a chain of allowed moves by
    // allowed actors, ending in its status.
    let patient_of: BTreeMap<i64, usize> = world
        .patients
        .iter()
        .enumerate()
        .map(|(i, p)| (p.id, i))
        .collect();
    let doctor_of: BTreeMap<i64, usize> = world
        .doctors
        .iter()
        .enumerate()
        .map(|(i, d)| (d.id, i))
        .collect();
    let mut histories = BTreeMap::new();
    let mut completed = 0;
    // Each doctor's active intervals, as the appointments read now show them.
    let mut active: BTreeMap<usize, BTreeSet<(String, String)>> = BTreeMap::new();
    for &(id, patient, doctor) in &record.appointments {
        let appointment = app
            .get(&format!("/api/v1/appointments/{id}"), &app.admin)
            .await
            .body;
        assert_eq!(appointment["patient_id"], world.patients[patient].id);
        assert_eq!(appointment["doctor_id"], world.doctors[doctor].id);
        let history = app
            .get(&format!("/api/v1/appointments/{id}/history"), &app.admin)
            .await
            .body["items"]
            .as_array()
            .unwrap()
            .clone();
        let version = appointment["version"].as_i64().unwrap();
        assert_eq!(history.len() as i64, version, "{id}: {history:?}");
        let mut status = String::new();
        for (i, row) in history.iter().enumerate() {
            assert_eq!(row["version"], i as i64 + 1, "{id}: {history:?}");
            let action = row["action"].as_str().unwrap();
            let to = row["to_status"].as_str().unwrap();
            let actor_id = row["actor_id"].as_i64().unwrap();
            let actor = if let Some(&p) = patient_of.get(&actor_id) {
                assert_eq!(p, patient, "{id}: another patient acted: {history:?}");
                Who::Patient(p)
            } else if let Some(&d) = doctor_of.get(&actor_id) {
                assert_eq!(d, doctor, "{id}: another doctor acted: {history:?}");
                Who::Doctor(d)
            } else {
                assert_eq!(actor_id, app.admin.id, "{id}: {history:?}");
                Who::Admin
            };
            if i == 0 {
                assert_eq!((action, to), ("created", "pending"), "{id}: {history:?}");
                assert!(row["from_status"].is_null());
            } else {
                let from = row["from_status"].as_str().unwrap();
                assert_eq!(from, status, "{id}: the chain breaks: {history:?}");
                assert!(
                    allowed_move(action, from, to, actor),
                    "{id}: {action} {from} → {to} by {actor:?}: {history:?}"
                );
            }
            status = to.to_owned();
        }
        assert_eq!(appointment["status"], status.as_str(), "{id}: {history:?}");
        if matches!(status.as_str(), "pending" | "confirmed" | "in_progress") {
            active.entry(doctor).or_default().insert((
                appointment["scheduled_at"].as_str().unwrap().to_owned(),
                appointment["ends_at"].as_str().unwrap().to_owned(),
            ));
        }
        completed += usize::from(status == "completed");
        histories.insert(id, history);
    }
    // Every change answered 200 is the history row of the version it answered, and no two
    // writes were answered with the same version (a reschedule to the time it already has
    // writes nothing and repeats the version, so it is not counted among the writes).
    let mut written = BTreeSet::new();
    for (id, version, status, what) in &record.changes {
        let row = &histories[id][*version as usize - 1];
        assert_eq!(row["to_status"], status.as_str(), "{id} v{version}: {row}");
        if *what != "reschedule" {
            assert!(
                written.insert((*id, *version)),
                "{id}: two writes answered as version {version}"
            );
            let action = row["action"].as_str().unwrap();
            match *what {
                "status" => assert_eq!(action, status, "{id} v{version}: {row}"),
                _ => assert_eq!(action, "updated", "{id} v{version}: {row}"),
            }
        }
    }

    // A doctor's busy times are exactly their active appointments (the load's two days).
    let mut intervals = 0;
    for (i, doctor) in world.doctors.iter().enumerate() {
        let path = format!(
            "/api/v1/doctors/{}/busy?from={}&to={}",
            doctor.id,
            slot(2, 0, 0),
            slot(4, 0, 0)
        );
        let busy = app.get(&path, &app.admin).await;
        if busy.status == StatusCode::NOT_FOUND {
            continue; // deactivated at the end: not listed
        }
        let shown: BTreeSet<(String, String)> = busy.body["items"]
            .as_array()
            .unwrap()
            .iter()
            .map(|b| {
                let at = |k: &str| b[k].as_str().unwrap().to_owned();
                (at("start"), at("end"))
            })
            .collect();
        intervals += shown.len();
        assert_eq!(shown, active.remove(&i).unwrap_or_default(), "doctor {i}");
    }
    assert!(intervals > 0, "no busy time to compare");

    // Averages are computed from the ratings as they are now.
    let mut scores: BTreeMap<usize, Vec<f64>> = BTreeMap::new();
    for &(id, _, _, doctor) in &record.ratings {
        let rating = app
            .get(&format!("/api/v1/ratings/{id}"), &app.admin)
            .await
            .body;
        scores
            .entry(doctor)
            .or_default()
            .push(rating["score"].as_f64().unwrap());
    }
    for (i, doctor) in world.doctors.iter().enumerate() {
        let summary = app
            .get(&format!("/api/v1/doctors/{}", doctor.id), &app.admin)
            .await;
        if summary.status == StatusCode::NOT_FOUND {
            continue; // deactivated at the end: not listed
        }
        let mine = scores.remove(&i).unwrap_or_default();
        assert_eq!(summary.body["rating_count"], mine.len(), "doctor {i}");
        if !mine.is_empty() {
            let avg = mine.iter().sum::<f64>() / mine.len() as f64;
            let shown = summary.body["rating_avg"].as_f64().unwrap();
            assert!((shown - avg).abs() < 0.006, "doctor {i}: {shown} vs {avg}");
        }
    }
    println!(
        "{} appointments ({completed} completed), {} changes answered, {} prescriptions \
         ({} acknowledged), {} ratings",
        record.appointments.len(),
        record.changes.len(),
        record.prescriptions.len(),
        acknowledged.len(),
        record.ratings.len()
    );
    assert!(
        record.appointments.len() >= 20 && !record.changes.is_empty(),
        "the load did too little to show anything"
    );
}
