//! Lock statistics, /metrics, the dashboard page and what the logs may not contain.

mod common;

use std::io::Read;
use std::process::{Command, Stdio};
use std::time::Duration;

use common::{metric_line, metrics_at, slot, Backend, TestApp};
use reqwest::{Method, StatusCode};
use serde_json::json;

both_backends!(
    lock_stats_and_metrics_count_bookings_and_conflicts,
    dashboard_page_is_self_contained
);

async fn metrics_text(app: &TestApp, token: Option<&str>) -> (StatusCode, String) {
    metrics_at(&app.client, &app.base, token).await
}

async fn lock_stats_and_metrics_count_bookings_and_conflicts(app: TestApp) {
    let doctor = app.doctor().await;
    let patients = app.patients(8).await;
    let mut booked = Vec::new();
    for (i, p) in patients[..5].iter().enumerate() {
        booked.push(app.booked(p, &doctor, &slot(3, 9 + i as u32, 0)).await);
    }
    for p in &patients[5..] {
        assert_eq!(
            app.book(p, &doctor, &slot(3, 9, 0), 30).await.code(),
            "SLOT_TAKEN"
        );
    }
    let stats = app.get("/api/v1/admin/lock-stats", &app.admin).await;
    assert_eq!(stats.status, StatusCode::OK, "{:?}", stats.body);
    let s = &stats.body;
    assert_eq!(s["lock_acquisitions"], 8);
    assert_eq!(s["active_locks"], 0);
    assert_eq!(s["hold"]["count"], 8);
    assert_eq!(s["wait"]["count"], 8);
    assert_eq!(s["conflicts"], json!({"SLOT_TAKEN": 3}));
    assert_eq!(
        (
            s["retry_count"].as_u64(),
            s["deadlock_count"].as_u64(),
            s["lock_timeouts"].as_u64()
        ),
        (Some(0), Some(0), Some(0))
    );
    assert!(s["max_duration_ms"].as_f64().unwrap() >= s["avg_duration_ms"].as_f64().unwrap());
    assert!(s["p99_duration_ms"].as_f64().unwrap() <= s["max_duration_ms"].as_f64().unwrap());
    assert_eq!(s["top_contended_doctors"][0]["doctor_id"], doctor.id);
    assert_eq!(s["top_contended_doctors"][0]["slot_conflicts"], 3);
    assert_eq!(
        app.get("/api/v1/admin/lock-stats", &patients[0])
            .await
            .status,
        StatusCode::FORBIDDEN
    );

    let (status, text) = metrics_text(&app, None).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        metric_line(&text, "medbook_lock_acquisitions_total"),
        Some(8.0),
        "{text}"
    );
    assert_eq!(
        metric_line(&text, "medbook_conflicts_total{code=\"SLOT_TAKEN\"}"),
        Some(3.0)
    );
    assert_eq!(
        metric_line(&text, "medbook_lock_hold_seconds_count"),
        Some(8.0)
    );
    assert_eq!(metric_line(&text, "medbook_locks_active"), Some(0.0));
    assert_eq!(metric_line(&text, "medbook_deadlocks_total"), Some(0.0));
    assert_eq!(
        metric_line(&text, "medbook_http_requests_total{route=\"/api/v1/appointments\",method=\"POST\",status=\"201\"}"),
        Some(5.0)
    );
    assert_eq!(
        metric_line(&text, "medbook_http_requests_total{route=\"/api/v1/appointments\",method=\"POST\",status=\"409\"}"),
        Some(3.0)
    );
    assert!(text.contains("medbook_http_request_duration_seconds_bucket{"));
    // Requests are counted by the template of the route they matched; a method the path does
    // not have is the JSON 405, counted under the path's template; a path no route has is
    // "unmatched".
    let one = format!("/api/v1/appointments/{}", booked[0]);
    assert_eq!(app.get(&one, &patients[0]).await.status, StatusCode::OK);
    let wrong_method = app
        .call(Method::DELETE, &one, Some(&patients[0].token), None)
        .await;
    assert_eq!(
        (wrong_method.status, wrong_method.code()),
        (StatusCode::METHOD_NOT_ALLOWED, "METHOD_NOT_ALLOWED")
    );
    assert_eq!(wrong_method.header("allow"), "GET, HEAD, PUT, PATCH");
    let no_route = app.get(&format!("{one}/nothing"), &patients[0]).await;
    assert_eq!(
        (no_route.status, no_route.code()),
        (StatusCode::NOT_FOUND, "NOT_FOUND")
    );
    // Methods that are not standard share one label, whatever a client makes up: they cannot
    // create series without bound.
    for made_up in ["MADEUP1", "MADEUP2"] {
        let method = Method::from_bytes(made_up.as_bytes()).unwrap();
        let answer = app.call(method, "/healthz", None, None).await;
        assert_eq!(answer.status, StatusCode::METHOD_NOT_ALLOWED);
    }
    let (_, text) = metrics_text(&app, None).await;
    assert!(!text.contains("MADEUP"), "{text}");
    for (series, count) in [
        (
            "route=\"/api/v1/appointments/{id}\",method=\"GET\",status=\"200\"",
            1.0,
        ),
        (
            "route=\"/api/v1/appointments/{id}\",method=\"DELETE\",status=\"405\"",
            1.0,
        ),
        ("route=\"unmatched\",method=\"GET\",status=\"404\"", 1.0),
        ("route=\"/healthz\",method=\"other\",status=\"405\"", 2.0),
        (
            "route=\"/api/v1/admin/lock-stats\",method=\"GET\",status=\"200\"",
            1.0,
        ),
    ] {
        let line = format!("medbook_http_requests_total{{{series}}}");
        assert_eq!(metric_line(&text, &line), Some(count), "{line}\n{text}");
    }
    // Group commit: process-wide (other tests of this binary write too), so at least this
    // test's 8 booking transactions on SQLite, in at least one batch.
    let batches = metric_line(&text, "medbook_sqlite_write_batches_total").unwrap();
    let writes = metric_line(&text, "medbook_sqlite_batched_writes_total").unwrap();
    if app.backend == Backend::Sqlite {
        assert!(
            writes >= 8.0 && batches >= 1.0 && batches <= writes,
            "{batches} {writes}"
        );
    }
    assert!(metric_line(&text, "medbook_pool_connections").unwrap() >= 1.0);
    // The database threads: started on demand, at most one per connection; with every request
    // answered nothing waits for one.
    let threads = metric_line(&text, "medbook_db_threads").unwrap();
    let idle = metric_line(&text, "medbook_db_threads_idle").unwrap();
    assert!((1.0..=8.0).contains(&threads) && idle <= threads, "{text}");
    assert_eq!(metric_line(&text, "medbook_db_queued_work"), Some(0.0));
    assert_eq!(
        metric_line(&text, "medbook_pool_max_connections"),
        Some(8.0)
    );
    assert!(text.trim_end().ends_with("# EOF"));
    let histograms = cumulative_histograms(&text);
    // The lock statistics' two histograms, and one per HTTP series seen above.
    assert!(histograms >= 2 + 5, "{histograms} histograms\n{text}");
}

/// Checks every histogram in a Prometheus exposition: its `le` buckets never decrease, the
/// last is `+Inf` and equals the series' `_count` (each observation counted once). Returns how
/// many histogram series it checked.
fn cumulative_histograms(text: &str) -> usize {
    use std::collections::BTreeMap;
    // (metric name, labels other than le) -> the buckets' (le, value) in order.
    let mut series: BTreeMap<(String, String), Vec<(String, f64)>> = BTreeMap::new();
    for line in text.lines().filter(|l| !l.starts_with('#')) {
        let Some((name, rest)) = line.split_once("_bucket{") else {
            continue;
        };
        let (labels, value) = rest.rsplit_once("} ").unwrap();
        // `le="…"` and the series' own labels, in the order the exposition gives them (no
        // label value here holds `",`).
        let (le, others): (Vec<&str>, Vec<&str>) = labels
            .split_inclusive("\",")
            .map(|pair| pair.trim_end_matches(','))
            .partition(|pair| pair.starts_with("le="));
        let le = le[0].trim_start_matches("le=").trim_matches('"');
        series
            .entry((name.to_owned(), others.join(",")))
            .or_default()
            .push((le.to_owned(), value.parse().unwrap()));
    }
    for ((name, labels), buckets) in &series {
        assert!(
            buckets.windows(2).all(|w| w[0].1 <= w[1].1),
            "{name}{{{labels}}} buckets decrease: {buckets:?}"
        );
        let (le, last) = buckets.last().unwrap();
        assert_eq!(le, "+Inf", "{name}{{{labels}}}: {buckets:?}");
        let count = if labels.is_empty() {
            format!("{name}_count")
        } else {
            format!("{name}_count{{{labels}}}")
        };
        assert_eq!(
            metric_line(text, &count),
            Some(*last),
            "{name}{{{labels}}}: {buckets:?}"
        );
    }
    series.len()
}

async fn dashboard_page_is_self_contained(app: TestApp) {
    let response = app
        .client
        .get(format!("{}/admin", app.base))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert!(response.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/html"));
    // The browser runs the page's own script and nothing else, calls this server only, and
    // lets no other site frame the sign-in form (the Chromium test runs the page under it).
    let policy = response.headers()["content-security-policy"]
        .to_str()
        .unwrap()
        .to_owned();
    let html = response.text().await.unwrap();
    assert!(html.contains("/api/v1/admin/lock-stats") && html.contains("/api/v1/auth/login"));
    assert_eq!(html.matches("<script>").count(), 1);
    let script = html
        .split("<script>")
        .nth(1)
        .unwrap()
        .split("</script>")
        .next()
        .unwrap();
    use base64::Engine;
    use sha2::Digest;
    let hash = base64::engine::general_purpose::STANDARD.encode(sha2::Sha256::digest(script));
    for directive in [
        "default-src 'none'".to_owned(),
        format!("script-src 'sha256-{hash}'"),
        "connect-src 'self'".to_owned(),
        "frame-ancestors 'none'".to_owned(),
    ] {
        assert!(policy.contains(&directive), "{directive} not in {policy}");
    }
    for external in ["http://", "https://", "<link", "src="] {
        assert!(
            !html.contains(external),
            "the page loads something from outside: {external}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn metrics_require_the_token_when_one_is_configured() {
    let app = TestApp::start_with(Backend::Sqlite, |c| {
        c.metrics_token = Some("scrape-secret".into())
    })
    .await
    .unwrap();
    assert_eq!(metrics_text(&app, None).await.0, StatusCode::UNAUTHORIZED);
    assert_eq!(
        metrics_text(&app, Some("wrong")).await.0,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        metrics_text(&app, Some("scrape-secret")).await.0,
        StatusCode::OK
    );
    // The token, and another one beside it, is no token; a long configured token is read in
    // full (the API's own tokens are capped at 512 characters, this one is not).
    let twice = app
        .send(
            app.client
                .get(format!("{}/metrics", app.base))
                .header("Authorization", "Bearer scrape-secret")
                .header("Authorization", "Bearer wrong"),
        )
        .await;
    assert_eq!(twice.status, StatusCode::UNAUTHORIZED);
    let long = "s".repeat(600);
    let app = TestApp::start_with(Backend::Sqlite, |c| c.metrics_token = Some(long.clone()))
        .await
        .unwrap();
    assert_eq!(metrics_text(&app, Some(&long)).await.0, StatusCode::OK);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn postgres_deadlock_shows_in_the_statistics() {
    let Some(app) = TestApp::start(Backend::Postgres).await else {
        return;
    };
    let doctor = app.doctor().await;
    let patient = app.patient().await;
    let (url, d, p) = (app.db_url.clone(), doctor.id, patient.id);
    let blocker = tokio::task::spawn_blocking(move || common::deadlock_booking(&url, d, p, 1))
        .await
        .unwrap();
    let answer = app.book(&patient, &doctor, &slot(3, 10, 0), 30).await;
    blocker.join().unwrap();
    assert_eq!(answer.status, StatusCode::CREATED);
    let s = app.get("/api/v1/admin/lock-stats", &app.admin).await.body;
    assert_eq!(
        (s["deadlock_count"].as_u64(), s["retry_count"].as_u64()),
        (Some(1), Some(1))
    );
    assert_eq!(
        s["lock_acquisitions"], 1,
        "the aborted attempt never held both locks"
    );
    assert_eq!(s["retries_exhausted"], 0);
    let (_, text) = metrics_text(&app, None).await;
    assert_eq!(metric_line(&text, "medbook_deadlocks_total"), Some(1.0));
    assert_eq!(
        metric_line(&text, "medbook_transaction_retries_total"),
        Some(1.0)
    );
}

/// Runs the real binary with debug logging through a session that handles every secret the
/// API sees, and checks that none of them reaches the log.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn logs_carry_tags_and_ids_but_no_passwords_tokens_or_prescriptions() {
    let dir = tempfile::tempdir().unwrap();
    let admin_password = "Adm1n-Secret-Passw0rd";
    let mut child = Command::new(env!("CARGO_BIN_EXE_medbook"))
        .env("DATABASE_URL", dir.path().join("log.db"))
        .env("MEDBOOK_LISTEN", "127.0.0.1:0")
        .env("MEDBOOK_ADMIN_EMAIL", "root@medbook.test")
        .env("MEDBOOK_ADMIN_PASSWORD", admin_password)
        .env("RUST_LOG", "debug")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stderr = child.stderr.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel::<String>();
    let reader = std::thread::spawn(move || {
        let mut log = String::new();
        let mut buf = [0u8; 4096];
        loop {
            match stderr.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    log.push_str(&String::from_utf8_lossy(&buf[..n]));
                    let _ = tx.send(log.clone());
                }
            }
        }
        log
    });
    let mut base = None;
    while base.is_none() {
        let log = rx
            .recv_timeout(Duration::from_secs(30))
            .expect("server starts");
        base = log
            .split("listening on ")
            .nth(1)
            .map(|rest| rest.split_whitespace().next().unwrap().to_owned());
    }
    let base = base.unwrap();
    let client = reqwest::Client::new();
    let call = |method: Method, path: &str, token: Option<&str>, body: serde_json::Value| {
        let mut req = client.request(method, format!("{base}{path}")).json(&body);
        if let Some(token) = token {
            req = req.bearer_auth(token);
        }
        async move {
            let response = req.send().await.unwrap();
            let status = response.status();
            (
                status,
                response
                    .json::<serde_json::Value>()
                    .await
                    .unwrap_or_default(),
            )
        }
    };
    let (_, admin) = call(
        Method::POST,
        "/api/v1/auth/login",
        None,
        json!({"email": "root@medbook.test", "password": admin_password}),
    )
    .await;
    let admin_token = admin["token"].as_str().unwrap().to_owned();
    let (_, doctor) = call(Method::POST, "/api/v1/admin/users", Some(&admin_token),
        json!({"name": "Dr Log", "email": "drlog@medbook.test", "password": "Doct0r-Secret-Pass", "role": "doctor"})).await;
    let (_, doctor_login) = call(
        Method::POST,
        "/api/v1/auth/login",
        None,
        json!({"email": "drlog@medbook.test", "password": "Doct0r-Secret-Pass"}),
    )
    .await;
    let doctor_token = doctor_login["token"].as_str().unwrap().to_owned();
    let (_, patient) = call(Method::POST, "/api/v1/auth/register", None,
        json!({"name": "Pat Log", "email": "patlog@medbook.test", "password": "Pati3nt-Secret-Pass"})).await;
    let patient_token = patient["token"].as_str().unwrap().to_owned();
    let (_, wrong) = call(
        Method::POST,
        "/api/v1/auth/login",
        None,
        json!({"email": "patlog@medbook.test", "password": "Wr0ng-Secret-Guess"}),
    )
    .await;
    assert_eq!(wrong["code"], "UNAUTHENTICATED");
    let (status, booked) = call(Method::POST, "/api/v1/appointments", Some(&patient_token),
        json!({"doctor_id": doctor["id"], "scheduled_at": slot(3, 10, 0), "type": "in_person", "reason": "Private-Reason-Text"})).await;
    assert_eq!(status, StatusCode::CREATED);
    let id = booked["id"].as_i64().unwrap();
    for status in ["confirmed", "in_progress", "completed"] {
        call(
            Method::PUT,
            &format!("/api/v1/appointments/{id}"),
            Some(&doctor_token),
            json!({"status": status}),
        )
        .await;
    }
    let (status, _) = call(Method::POST, "/api/v1/prescriptions", Some(&doctor_token),
        json!({"appointment_id": id, "notes": "Secret-Notes-Text", "medications": [{"name": "Zyxoprofen-Secret-Drug", "dosage": "Secret-Dosage-7mg", "frequency": "daily"}]})).await;
    assert_eq!(status, StatusCode::CREATED);
    let (status, _) = call(Method::POST, "/api/v1/prescriptions", Some(&doctor_token),
        json!({"appointment_id": id, "medications": [{"name": "Second-Secret-Drug", "dosage": "1", "frequency": "daily"}]})).await;
    assert_eq!(status, StatusCode::CONFLICT);

    terminate(child.id());
    child.wait().unwrap();
    let log = reader.join().unwrap();
    for secret in [
        admin_password,
        "Doct0r-Secret-Pass",
        "Pati3nt-Secret-Pass",
        "Wr0ng-Secret-Guess",
        &admin_token,
        &doctor_token,
        &patient_token,
        "Zyxoprofen-Secret-Drug",
        "Secret-Dosage-7mg",
        "Secret-Notes-Text",
        "Second-Secret-Drug",
    ] {
        assert!(!log.contains(secret), "the log contains {secret}");
    }
    for tag in ["ATOMIC booked", "LOCK acquired", "ATOMIC prescription="] {
        assert!(log.contains(tag), "the log lacks {tag}:\n{log}");
    }
    assert!(log.contains(&format!("appointment={id}")));
}

/// Sends SIGTERM (graceful shutdown) to a child process.
fn terminate(pid: u32) {
    Command::new("kill")
        .arg("-TERM")
        .arg(pid.to_string())
        .status()
        .unwrap();
}

/// A request that does not parse is the client's fault: actix-http answers it `400` and
/// reported it at ERROR ("stream error: request parse error"), so any client could fill the
/// error log. The real binary, at the default level, logs none of it; the faults of medbook's
/// own stay at ERROR (`telemetry::logging`'s unit test).
#[test]
fn malformed_requests_do_not_reach_the_error_log() {
    use std::io::Write;
    let dir = tempfile::tempdir().unwrap();
    let server = common::Process::start(dir.path().join("m.db").to_str().unwrap(), &[]);
    let address = server.base.trim_start_matches("http://").to_owned();
    let send = |raw: &[u8]| {
        let mut stream = std::net::TcpStream::connect(&address).unwrap();
        stream.write_all(raw).unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(5)))
            .unwrap();
        let mut answer = Vec::new();
        let _ = stream.read_to_end(&mut answer);
        String::from_utf8_lossy(&answer).into_owned()
    };
    for raw in [
        &b"GET /healthz HTTP/1.1\r\nHost: x\r\nContent-Length: abc\r\n\r\n"[..],
        b"NOT HTTP AT ALL\r\n\r\n",
        b"GET /healthz HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nContent-Length: 3\r\n\r\n",
    ] {
        let answer = send(raw);
        assert!(answer.starts_with("HTTP/1.1 400"), "{answer}");
    }
    let healthy = send(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
    assert!(healthy.starts_with("HTTP/1.1 200"), "{healthy}");
    // The access log line of the last request comes after the refusals' reports.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while !server.log().contains("\"GET /healthz HTTP/1.1\" 200") {
        assert!(std::time::Instant::now() < deadline, "{}", server.log());
        std::thread::sleep(Duration::from_millis(20));
    }
    let log = server.log();
    assert!(!log.contains(" ERROR "), "{log}");
}

/// Has `token`'s caller (the admin) ask for pending appointments where there are none: the
/// answer is empty, and the query reads every appointment to find that out.
async fn scan_every_appointment(client: &reqwest::Client, base: &str, token: &str) {
    let url = format!("{base}/api/v1/appointments?status=pending");
    let response = client.get(url).bearer_auth(token).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let page: serde_json::Value = response.json().await.unwrap();
    assert_eq!(page["items"], json!([]));
}

/// Starts medbook on `db` with a pool of 8 connections and `extra_env`, reads the whole database
/// through each of its connections at once, and returns SQLite's heap and its limit from
/// `/metrics`, in MiB.
async fn sqlite_memory_after_reading_everything(
    db: &str,
    extra_env: &[(&str, &str)],
) -> (f64, f64) {
    let env = [&[("MEDBOOK_POOL_SIZE", "8")], extra_env].concat();
    let server = common::Process::start(db, &env);
    let admin = common::Client::new(&server.base)
        .login(common::ADMIN_EMAIL, common::ADMIN_PASSWORD)
        .await;
    let client = reqwest::Client::new();
    // More readers than connections, so that every connection reads and keeps pages.
    let scans = (0..16).map(|_| scan_every_appointment(&client, &server.base, &admin.token));
    futures_util::future::join_all(scans).await;
    let (_, metrics) = metrics_at(&client, &server.base, None).await;
    let mib = |name: &str| metric_line(&metrics, name).expect(name) / (1 << 20) as f64;
    (
        mib("medbook_sqlite_memory_bytes"),
        mib("medbook_sqlite_memory_limit_bytes"),
    )
}

/// 10 000 appointments with 2000-character reasons: a database of ~25 MB, larger than what
/// 8 connections' page caches hold without a limit (2 MB each).
const BIG_DATABASE_APPOINTMENTS: usize = 10_000;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sqlite_keeps_its_memory_within_the_limit_however_many_connections_read() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("big.db").to_string_lossy().into_owned();
    {
        // The schema and the admin, then the appointments straight into the file.
        let server = common::Process::start(&db, &[]);
        drop(server);
        let mut conn = <diesel::SqliteConnection as diesel::Connection>::establish(&db).unwrap();
        diesel::connection::SimpleConnection::batch_execute(
            &mut conn,
            &format!(
                "INSERT INTO users (name, email, email_key, password_hash, role, created_at, updated_at) \
                 VALUES ('P', 'big-p@medbook.test', 'big-p@medbook.test', 'x', 'patient', datetime('now'), datetime('now')), \
                        ('D', 'big-d@medbook.test', 'big-d@medbook.test', 'x', 'doctor', datetime('now'), datetime('now')); \
                 WITH RECURSIVE n(i) AS (SELECT 0 UNION ALL SELECT i + 1 FROM n WHERE i + 1 < {BIG_DATABASE_APPOINTMENTS}) \
                 INSERT INTO appointments (patient_id, doctor_id, scheduled_at, duration_minutes, ends_at, \
                                           type, reason, status, version, created_at, updated_at) \
                 SELECT (SELECT id FROM users WHERE email = 'big-p@medbook.test'), \
                        (SELECT id FROM users WHERE email = 'big-d@medbook.test'), \
                        datetime('2030-01-01', '+' || (i * 30) || ' minutes'), 30, \
                        datetime('2030-01-01', '+' || (i * 30 + 30) || ' minutes'), \
                        'video_consultation', printf('%.2000c', 'x'), 'completed', 1, \
                        datetime('now'), datetime('now') FROM n;"
            ),
        )
        .unwrap();
    }
    // Without a limit every connection keeps what it read: the reading does fill them.
    let (unlimited, none) =
        sqlite_memory_after_reading_everything(&db, &[("MEDBOOK_SQLITE_MEMORY_MIB", "0")]).await;
    assert_eq!(none, 0.0);
    assert!(
        unlimited > 12.0,
        "SQLite held only {unlimited:.1} MiB without a limit"
    );
    // By default SQLite reuses cached pages instead of growing past its 8 MiB.
    let (limited, limit) = sqlite_memory_after_reading_everything(&db, &[]).await;
    assert_eq!(limit, medbook::config::default_sqlite_memory_mib(8) as f64);
    assert!(limited <= limit + 0.5, "SQLite holds {limited:.1} MiB");
}
