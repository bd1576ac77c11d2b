//! The process's logger: env_logger (`RUST_LOG`, default `info`), except that what actix-http's
//! HTTP/1 dispatcher reports at ERROR is logged at DEBUG.
//!
//! The dispatcher reports a client's or the network's faults there: a request that does not
//! parse (answered `400`), a header over the size limit, a connection that broke off. Any
//! client could fill the error log, and page whoever watches it, with malformed requests.
//! medbook logs its own faults (`5xx`) at ERROR and a client's at DEBUG, so these follow that
//! rule. The dispatcher's other ERROR reports are for streamed response bodies and protocol
//! upgrades, which medbook does not use. `RUST_LOG=actix_http=debug` shows them.

use log::{Level, Log, Metadata, Record};

/// Where actix-http's HTTP/1 dispatcher logs.
const DISPATCHER: &str = "actix_http::h1::dispatcher";

/// Installs the logger; call once, first thing.
pub fn init() {
    let inner =
        env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info")).build();
    let max_level = inner.filter();
    if log::set_boxed_logger(Box::new(ClientFaultsAtDebug(inner))).is_ok() {
        log::set_max_level(max_level);
    }
}

/// Wraps a logger and moves the dispatcher's ERROR records down to DEBUG.
struct ClientFaultsAtDebug<L>(L);

/// The level a record of `target` at `level` is logged at.
fn level_for(target: &str, level: Level) -> Level {
    if level == Level::Error && target.starts_with(DISPATCHER) {
        Level::Debug
    } else {
        level
    }
}

impl<L: Log> Log for ClientFaultsAtDebug<L> {
    fn enabled(&self, metadata: &Metadata) -> bool {
        let level = level_for(metadata.target(), metadata.level());
        self.0.enabled(
            &Metadata::builder()
                .level(level)
                .target(metadata.target())
                .build(),
        )
    }

    fn log(&self, record: &Record) {
        let level = level_for(record.target(), record.level());
        if level == record.level() {
            return self.0.log(record);
        }
        self.0.log(
            &Record::builder()
                .args(*record.args())
                .level(level)
                .target(record.target())
                .module_path(record.module_path())
                .file(record.file())
                .line(record.line())
                .build(),
        );
    }

    fn flush(&self) {
        self.0.flush();
    }
}

#[cfg(test)]
mod tests {
    use std::io::Write;
    use std::sync::{Arc, Mutex};

    use super::*;

    /// What a wrapped env_logger with filter `filter` writes.
    #[derive(Clone, Default)]
    struct Written(Arc<Mutex<Vec<u8>>>);

    impl Write for Written {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    fn logger(filter: &str) -> (ClientFaultsAtDebug<env_logger::Logger>, Written) {
        let written = Written::default();
        let inner = env_logger::Builder::new()
            .parse_filters(filter)
            .target(env_logger::Target::Pipe(Box::new(written.clone())))
            .build();
        (ClientFaultsAtDebug(inner), written)
    }

    fn log(logger: &impl Log, target: &str, level: Level, message: &str) {
        logger.log(
            &Record::builder()
                .args(format_args!("{message}"))
                .level(level)
                .target(target)
                .build(),
        );
    }

    fn text(written: &Written) -> String {
        String::from_utf8(written.0.lock().unwrap().clone()).unwrap()
    }

    #[test]
    fn the_dispatchers_errors_are_debug_and_every_other_error_stays() {
        let (at_info, written) = logger("info");
        let parse_error = "stream error: request parse error: invalid Header provided";
        log(&at_info, DISPATCHER, Level::Error, parse_error);
        assert!(!at_info.enabled(
            &Metadata::builder()
                .level(Level::Error)
                .target(DISPATCHER)
                .build()
        ));
        log(&at_info, "medbook::error", Level::Error, "a fault of ours");
        log(
            &at_info,
            "actix_http::h1::codec",
            Level::Error,
            "elsewhere in actix-http",
        );
        let shown = text(&written);
        assert!(!shown.contains(parse_error), "{shown}");
        assert!(
            shown.contains("ERROR medbook::error] a fault of ours"),
            "{shown}"
        );
        assert!(shown.contains("ERROR actix_http::h1::codec"), "{shown}");

        let (at_debug, written) = logger("info,actix_http=debug");
        log(&at_debug, DISPATCHER, Level::Error, parse_error);
        log(&at_debug, DISPATCHER, Level::Warn, "a warning");
        let shown = text(&written);
        assert!(
            shown.contains(&format!("DEBUG {DISPATCHER}] {parse_error}")),
            "{shown}"
        );
        assert!(
            shown.contains(&format!("WARN  {DISPATCHER}] a warning")),
            "{shown}"
        );
    }
}
