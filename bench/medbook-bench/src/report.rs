//! Collected results: throughput, latency percentiles, status/code counts.

use std::collections::BTreeMap;
use std::io::{self, Write};
use std::time::Duration;

use serde_json::{json, Value};

/// What one run measured.
#[derive(Debug, Default)]
pub struct Report {
    pub scenario: String,
    pub clients: usize,
    pub elapsed: Duration,
    /// Latencies of counted requests, in microseconds.
    pub latencies_us: Vec<u64>,
    /// "201", "409 SLOT_TAKEN", "error: …" → count.
    pub outcomes: BTreeMap<String, u64>,
    /// `Some(true)` when the invariant was checked and holds.
    pub invariant_ok: Option<bool>,
    pub notes: Vec<String>,
}

impl Report {
    /// Requests (or transactions) per second.
    pub fn rate(&self) -> f64 {
        self.latencies_us.len() as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }

    fn sorted(&self) -> Vec<u64> {
        let mut v = self.latencies_us.clone();
        v.sort_unstable();
        v
    }

    /// Latency quantile in milliseconds.
    pub fn quantile_ms(sorted: &[u64], q: f64) -> f64 {
        if sorted.is_empty() {
            return 0.0;
        }
        let rank = ((q * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
        sorted[rank - 1] as f64 / 1000.0
    }

    /// Mean latency in milliseconds: at one client, the time a request (or transaction) takes,
    /// which the quantiles do not give.
    pub fn mean_ms(sorted: &[u64]) -> f64 {
        if sorted.is_empty() {
            return 0.0;
        }
        sorted.iter().sum::<u64>() as f64 / sorted.len() as f64 / 1000.0
    }

    pub fn json(&self) -> Value {
        let sorted = self.sorted();
        json!({
            "scenario": self.scenario,
            "clients": self.clients,
            "seconds": self.elapsed.as_secs_f64(),
            "requests": sorted.len(),
            "rate_per_s": self.rate(),
            "latency_ms": {
                "mean": Self::mean_ms(&sorted),
                "p50": Self::quantile_ms(&sorted, 0.50),
                "p95": Self::quantile_ms(&sorted, 0.95),
                "p99": Self::quantile_ms(&sorted, 0.99),
                "max": sorted.last().map_or(0.0, |m| *m as f64 / 1000.0),
            },
            "outcomes": self.outcomes,
            "invariant_ok": self.invariant_ok,
            "notes": self.notes,
        })
    }

    /// The human-readable summary. A reader that went away (`| head -n1`) is not an error: the
    /// caller ignores `BrokenPipe`, and the `--json` file is written before this.
    pub fn print(&self, out: &mut impl Write) -> io::Result<()> {
        let sorted = self.sorted();
        if sorted.is_empty() {
            writeln!(out, "{}", self.scenario)?;
            for note in &self.notes {
                writeln!(out, "  {note}")?;
            }
            return Ok(());
        }
        writeln!(
            out,
            "{} × {} clients: {} requests in {:.1} s = {:.0} req/s",
            self.scenario,
            self.clients,
            sorted.len(),
            self.elapsed.as_secs_f64(),
            self.rate()
        )?;
        writeln!(
            out,
            "  latency ms: mean {:.3}  p50 {:.2}  p95 {:.2}  p99 {:.2}  max {:.2}",
            Self::mean_ms(&sorted),
            Self::quantile_ms(&sorted, 0.50),
            Self::quantile_ms(&sorted, 0.95),
            Self::quantile_ms(&sorted, 0.99),
            sorted.last().map_or(0.0, |m| *m as f64 / 1000.0)
        )?;
        for (outcome, n) in &self.outcomes {
            writeln!(out, "  {outcome:<28} {n}")?;
        }
        for note in &self.notes {
            writeln!(out, "  {note}")?;
        }
        match self.invariant_ok {
            Some(true) => writeln!(
                out,
                "  invariant: no overlapping active appointments (checked through the API)"
            ),
            Some(false) => writeln!(out, "  INVARIANT BROKEN: overlapping active appointments"),
            None => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantiles_are_nearest_rank() {
        let sorted: Vec<u64> = (1..=100).map(|ms| ms * 1000).collect();
        assert_eq!(Report::quantile_ms(&sorted, 0.50), 50.0);
        assert_eq!(Report::quantile_ms(&sorted, 0.99), 99.0);
        assert_eq!(Report::quantile_ms(&sorted, 1.0), 100.0);
        assert_eq!(Report::quantile_ms(&sorted, 0.0), 1.0);
        assert_eq!(Report::quantile_ms(&[2500], 0.99), 2.5);
        assert_eq!(Report::quantile_ms(&[], 0.99), 0.0);
    }

    /// A writer whose reader went away after `lines` lines.
    struct ClosedAfter {
        lines: usize,
        written: Vec<u8>,
    }

    impl Write for ClosedAfter {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            if self.written.iter().filter(|&&b| b == b'\n').count() >= self.lines {
                return Err(io::ErrorKind::BrokenPipe.into());
            }
            self.written.extend_from_slice(buf);
            Ok(buf.len())
        }

        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn the_summary_hands_a_closed_reader_back_as_an_error() {
        let report = Report {
            scenario: "spread".into(),
            clients: 1,
            elapsed: Duration::from_secs(2),
            latencies_us: vec![1000, 3000],
            outcomes: BTreeMap::from([("201".into(), 2)]),
            invariant_ok: Some(true),
            notes: vec![],
        };
        let mut all = Vec::new();
        report.print(&mut all).unwrap();
        let all = String::from_utf8(all).unwrap();
        assert!(all.starts_with("spread × 1 clients: 2 requests in 2.0 s = 1 req/s\n"));
        assert!(all.contains("  201 "), "{all}");

        // `| head -n1`: the first line goes out, the rest is refused, and print says so
        // instead of panicking (main ignores exactly this error).
        let mut head = ClosedAfter {
            lines: 1,
            written: Vec::new(),
        };
        let err = report.print(&mut head).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::BrokenPipe);
        assert_eq!(
            String::from_utf8(head.written).unwrap(),
            all.lines().next().unwrap().to_owned() + "\n"
        );
    }

    #[test]
    fn the_json_counts_requests_over_the_measured_time() {
        let report = Report {
            scenario: "spread".into(),
            clients: 4,
            elapsed: Duration::from_secs(2),
            latencies_us: vec![3000, 1000, 2000, 4000],
            outcomes: BTreeMap::from([("201".into(), 3), ("409 SLOT_TAKEN".into(), 1)]),
            invariant_ok: Some(true),
            notes: vec![],
        };
        let json = report.json();
        assert_eq!(json["requests"], 4);
        assert_eq!(json["rate_per_s"], 2.0);
        assert_eq!(json["latency_ms"]["mean"], 2.5);
        assert_eq!(json["latency_ms"]["p50"], 2.0);
        assert_eq!(json["latency_ms"]["max"], 4.0);
        assert_eq!(json["outcomes"]["409 SLOT_TAKEN"], 1);
        assert_eq!(json["invariant_ok"], true);
    }
}
