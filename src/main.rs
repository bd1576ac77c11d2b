//! `medbook` / `medbook serve`: run migrations and serve the API.

use std::process::ExitCode;

use medbook::config::Config;
use medbook::server;

/// Keeps glibc from holding on to freed memory: big blocks (argon2's 19 MiB working memory
/// above all) are always mmapped and returned on free, and the number of malloc arenas that
/// can each retain memory is bounded. Without this, RSS after a burst of logins stays at
/// hundreds of MiB (measured: 1.3 GiB peak, 1.1 GiB after, at 64 clients).
fn tune_allocator() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only changes allocator parameters; called before any other thread runs.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 1 << 20);
        libc::mallopt(libc::M_ARENA_MAX, 4);
    }
}

const USAGE: &str = "usage: medbook [serve | openapi | --help | --version]
  serve     run the migrations and serve the API (the default)
  openapi   print the OpenAPI document
Configuration comes from the environment and a .env file (DATABASE_URL, MEDBOOK_LISTEN, ...;
see the README).";

/// Writes `text` and a newline to stdout. A reader that stops early (`medbook openapi | head`)
/// ends the output quietly: `println!` panicked on the broken pipe, with a backtrace and exit
/// code 101. Any other write error (`> /dev/full`) is reported, with exit code 1.
fn print(text: &str) -> ExitCode {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    match writeln!(out, "{text}").and_then(|()| out.flush()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("medbook: cannot write to stdout: {e}");
            ExitCode::FAILURE
        }
    }
}

#[actix_web::main]
async fn main() -> ExitCode {
    tune_allocator();
    // A `.env` in the working directory (or above it) is read too, as the diesel CLI does.
    // Read before the logger starts, as it may set RUST_LOG; judged below.
    let dotenv = dotenvy::dotenv();
    medbook::telemetry::logging::init();
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args
        .iter()
        .map(String::as_str)
        .collect::<Vec<_>>()
        .as_slice()
    {
        [] | ["serve"] => {}
        ["--help" | "-h" | "help"] => return print(USAGE),
        ["--version" | "-V"] => return print(&format!("medbook {}", env!("CARGO_PKG_VERSION"))),
        ["openapi"] => {
            // The document served at /api/v1/openapi.json, for validators and client generators.
            let doc = <medbook::routes::openapi::ApiDoc as utoipa::OpenApi>::openapi();
            return match doc.to_pretty_json() {
                Ok(json) => print(&json),
                Err(e) => {
                    eprintln!("{e}");
                    ExitCode::FAILURE
                }
            };
        }
        _ => {
            eprintln!("medbook: unknown arguments {args:?}\n{USAGE}");
            return ExitCode::from(2);
        }
    }
    // A `.env` that cannot be read whole is refused: its loading stops at the first line it
    // cannot parse, and a DATABASE_URL below that line was silently dropped, so the server
    // ran on another database (`medbook.db`) than the one configured.
    if let Err(e) = &dotenv {
        if !e.not_found() {
            log::error!("configuration: cannot read .env: {e}");
            return ExitCode::from(2);
        }
    }
    let config = match Config::from_env() {
        Ok(config) => config,
        Err(e) => {
            log::error!("configuration: {e}");
            return ExitCode::from(2);
        }
    };
    let state = match actix_web::web::block({
        let config = config.clone();
        move || server::prepare(&config)
    })
    .await
    {
        Ok(Ok(state)) => state,
        Ok(Err(e)) => {
            log::error!("start-up failed: {e}");
            return ExitCode::FAILURE;
        }
        Err(e) => {
            log::error!("start-up failed: {e}");
            return ExitCode::FAILURE;
        }
    };
    let state_for_purge = state.clone();
    let (server, addrs) = match server::bind(state, &config) {
        Ok(bound) => bound,
        Err(e) => {
            log::error!("cannot listen on {}: {e}", config.listen);
            return ExitCode::FAILURE;
        }
    };
    for addr in addrs {
        if log::log_enabled!(log::Level::Info) {
            log::info!("listening on http://{addr}");
        } else {
            // Clients of port 0 depend on this line, whatever RUST_LOG says.
            eprintln!("listening on http://{addr}");
        }
    }
    server::spawn_purger(state_for_purge);
    match server.await {
        Ok(()) => {
            log::info!("shut down");
            ExitCode::SUCCESS
        }
        Err(e) => {
            log::error!("server error: {e}");
            ExitCode::FAILURE
        }
    }
}
