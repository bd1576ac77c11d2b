//! `medbook-bench`: a load generator for medbook.
//!
//! ```text
//! medbook-bench [--url URL] [--scenario spread|contended|hot-doctor|status|read|mixed|ping|ping-db]
//!               [--clients N] [--duration SECS] [--warmup SECS] [--doctors N]
//!               [--admin-email E] [--admin-password P] [--json FILE] [--no-verify] [--quiet]
//!               [--target-url URL] [--started-file FILE] [--idempotency-keys]
//! medbook-bench inproc --database-url URL [--duration SECS] [--doctors N] [--pause-us N]
//! medbook-bench stats-overhead --database-url URL
//! medbook-bench floor-server --database-url URL [--listen ADDR]
//! ```
//!
//! It creates its own users through the API, runs the scenario for the duration (after a
//! warm-up whose requests are not counted), prints requests/s, latency percentiles and the
//! status/code counts, and then checks through the API that no two active appointments of a
//! doctor or of a patient overlap. `inproc` runs the booking transaction in a tight loop
//! through the medbook library on one connection (the ceiling for SQLite; with `--pause-us` it
//! sleeps that long before each transaction, as a one-client server's database thread sleeps
//! between requests, and the pause is not in the latencies); `stats-overhead`
//! measures what the lock statistics cost a booking. `floor-server` serves the `status`
//! transaction with nothing else around it (see `floor.rs`); `--target-url` sends a
//! scenario's measured requests there while set-up still goes through medbook at `--url`;
//! `--started-file` is created when set-up is done (for scripts that measure the server's CPU);
//! with `--idempotency-keys` every booking carries a new `Idempotency-Key`.

mod client;
mod conn;
mod floor;
mod report;
mod scenario;

use std::time::Duration;

use report::Report;

/// Command-line options.
#[derive(Debug, Clone)]
pub struct Options {
    pub url: String,
    pub scenario: scenario::Kind,
    pub clients: usize,
    pub duration: Duration,
    pub warmup: Duration,
    pub doctors: usize,
    pub admin_email: String,
    pub admin_password: String,
    pub json: Option<String>,
    pub verify: bool,
    pub quiet: bool,
    pub database_url: Option<String>,
    /// Where the measured requests go, if not to `url` (set-up and checks always use `url`).
    pub target_url: Option<String>,
    pub listen: String,
    /// Created once set-up (users, doctors, appointments) is done and the clients start, so
    /// that a script measuring the server from outside can leave the set-up out.
    pub started_file: Option<String>,
    /// Every booking carries a new `Idempotency-Key` (claimed, then completed with the booking).
    pub idempotency_keys: bool,
    /// `inproc`: sleep this long before each transaction.
    pub pause: Duration,
}

const USAGE: &str = "usage: medbook-bench [--url URL] [--scenario spread|contended|hot-doctor|status|read|mixed|ping|ping-db] \
     [--clients N] [--duration SECS] [--warmup SECS] [--doctors N] [--admin-email E] \
     [--admin-password P] [--json FILE] [--no-verify] [--quiet] [--target-url URL] [--started-file FILE] [--idempotency-keys]\n       \
     medbook-bench inproc --database-url URL [--duration SECS] [--doctors N] [--pause-us N] [--json FILE]\n       \
     medbook-bench stats-overhead --database-url URL\n       \
     medbook-bench floor-server --database-url URL [--listen ADDR]";

/// Stops with what was wrong about the arguments, and the usage (exit code 2).
fn usage_error(what: &str) -> ! {
    eprintln!("medbook-bench: {what}\n{USAGE}");
    std::process::exit(2)
}

/// An option without a value, or with one it cannot take.
fn bad_value(option: &str) -> ! {
    usage_error(&format!("{option} needs a valid value"))
}

/// What to run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    Http,
    InProcess,
    StatsOverhead,
    FloorServer,
}

fn parse(args: &[String]) -> (Mode, Options) {
    let mut o = Options {
        url: "http://127.0.0.1:8080".into(),
        scenario: scenario::Kind::Spread,
        clients: 16,
        duration: Duration::from_secs(10),
        warmup: Duration::from_secs(2),
        doctors: 50,
        admin_email: std::env::var("MEDBOOK_ADMIN_EMAIL")
            .unwrap_or_else(|_| "admin@medbook.local".into()),
        admin_password: std::env::var("MEDBOOK_ADMIN_PASSWORD")
            .unwrap_or_else(|_| "admin-password".into()),
        json: None,
        verify: true,
        quiet: false,
        database_url: None,
        target_url: None,
        listen: "127.0.0.1:8090".into(),
        started_file: None,
        idempotency_keys: false,
        pause: Duration::ZERO,
    };
    let mut mode = Mode::Http;
    let mut it = args.iter();
    let secs = |option: &str, v: Option<&String>| {
        Duration::from_secs_f64(
            v.and_then(|v| v.parse().ok())
                .unwrap_or_else(|| bad_value(option)),
        )
    };
    while let Some(arg) = it.next() {
        match arg.as_str() {
            "inproc" => mode = Mode::InProcess,
            "stats-overhead" => mode = Mode::StatsOverhead,
            "floor-server" => mode = Mode::FloorServer,
            "--target-url" => {
                o.target_url = Some(it.next().cloned().unwrap_or_else(|| bad_value(arg)))
            }
            "--listen" => o.listen = it.next().cloned().unwrap_or_else(|| bad_value(arg)),
            "--started-file" => {
                o.started_file = Some(it.next().cloned().unwrap_or_else(|| bad_value(arg)))
            }
            "--url" => o.url = it.next().cloned().unwrap_or_else(|| bad_value(arg)),
            "--scenario" => {
                o.scenario = it
                    .next()
                    .and_then(|s| scenario::Kind::parse(s))
                    .unwrap_or_else(|| bad_value(arg))
            }
            "--clients" => {
                o.clients = it
                    .next()
                    .and_then(|v| v.parse().ok())
                    .filter(|n| *n > 0)
                    .unwrap_or_else(|| bad_value(arg))
            }
            "--duration" => o.duration = secs(arg, it.next()),
            "--warmup" => o.warmup = secs(arg, it.next()),
            "--doctors" => {
                o.doctors = it
                    .next()
                    .and_then(|v| v.parse().ok())
                    .filter(|n| *n > 0)
                    .unwrap_or_else(|| bad_value(arg))
            }
            "--admin-email" => o.admin_email = it.next().cloned().unwrap_or_else(|| bad_value(arg)),
            "--admin-password" => {
                o.admin_password = it.next().cloned().unwrap_or_else(|| bad_value(arg))
            }
            "--json" => o.json = Some(it.next().cloned().unwrap_or_else(|| bad_value(arg))),
            "--database-url" => {
                o.database_url = Some(it.next().cloned().unwrap_or_else(|| bad_value(arg)))
            }
            "--no-verify" => o.verify = false,
            "--quiet" => o.quiet = true,
            "--idempotency-keys" => o.idempotency_keys = true,
            "--pause-us" => {
                o.pause = Duration::from_micros(
                    it.next()
                        .and_then(|v| v.parse().ok())
                        .unwrap_or_else(|| bad_value(arg)),
                )
            }
            "--help" | "-h" => {
                println!("{USAGE}");
                std::process::exit(0)
            }
            other => usage_error(&format!("unknown argument {other:?}")),
        }
    }
    (mode, o)
}

/// Writes the `--json` file, then the summary to stdout. The file comes first, and a closed
/// stdout (`| head -n1`) ends the summary quietly, so a script that reads one line still gets
/// the whole result in the file.
fn finish(report: &Report, options: &Options) {
    if let Some(path) = &options.json {
        std::fs::write(path, serde_json::to_string_pretty(&report.json()).unwrap())
            .expect("write --json file");
    }
    match report.print(&mut std::io::stdout().lock()) {
        Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => panic!("write the summary: {e}"),
        _ => {}
    }
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (mode, options) = parse(&args);
    if mode == Mode::FloorServer {
        let url = options
            .database_url
            .clone()
            .unwrap_or_else(|| usage_error("this mode needs --database-url"));
        floor::serve(&url, &options.listen).expect("floor server");
        return;
    }
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio runtime")
        .block_on(run(mode, options));
}

async fn run(mode: Mode, options: Options) {
    if mode != Mode::Http {
        let url = options
            .database_url
            .clone()
            .unwrap_or_else(|| usage_error("this mode needs --database-url"));
        let (duration, doctors, pause) = (options.duration, options.doctors, options.pause);
        let report = tokio::task::spawn_blocking(move || match mode {
            Mode::InProcess => scenario::inproc(&url, duration, doctors, pause),
            _ => scenario::stats_overhead(&url),
        })
        .await
        .unwrap();
        finish(&report, &options);
        return;
    }
    let report = scenario::run(&options).await;
    finish(&report, &options);
    if report.invariant_ok == Some(false) {
        std::process::exit(1);
    }
}
