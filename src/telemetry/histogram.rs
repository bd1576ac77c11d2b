//! A lock-free histogram of durations: log-spaced buckets of atomic counters, plus count, sum
//! and max. Recording is a handful of relaxed atomic adds; nothing waits on anything.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Duration;

/// Bucket `i` holds durations up to `FIRST_BOUND_US × RATIO^i` microseconds.
const BUCKETS: usize = 64;
const FIRST_BOUND_US: f64 = 10.0;
const RATIO: f64 = 1.25;

/// The upper bound of bucket `i`, in microseconds (the last bucket is unbounded).
fn bound_us(i: usize) -> f64 {
    FIRST_BOUND_US * RATIO.powi(i as i32)
}

/// Durations from 10 µs to ~10 s in 64 buckets 25 % apart; percentiles are read as the upper
/// bound of the bucket that holds them (at most 25 % high).
#[derive(Debug)]
pub struct AtomicHistogram {
    buckets: [AtomicU64; BUCKETS],
    count: AtomicU64,
    sum_us: AtomicU64,
    max_us: AtomicU64,
}

impl Default for AtomicHistogram {
    fn default() -> Self {
        AtomicHistogram {
            buckets: std::array::from_fn(|_| AtomicU64::new(0)),
            count: AtomicU64::new(0),
            sum_us: AtomicU64::new(0),
            max_us: AtomicU64::new(0),
        }
    }
}

/// A consistent-enough copy of a histogram for reporting.
#[derive(Debug, Clone, PartialEq)]
pub struct Snapshot {
    pub count: u64,
    pub sum_us: u64,
    pub max_us: u64,
    buckets: Vec<u64>,
}

impl AtomicHistogram {
    /// Records one duration.
    pub fn record(&self, d: Duration) {
        let us = d.as_micros().min(u128::from(u64::MAX)) as u64;
        let index = if us as f64 <= FIRST_BOUND_US {
            0
        } else {
            (((us as f64 / FIRST_BOUND_US).ln() / RATIO.ln()).ceil() as usize).min(BUCKETS - 1)
        };
        self.buckets[index].fetch_add(1, Relaxed);
        self.sum_us.fetch_add(us, Relaxed);
        self.max_us.fetch_max(us, Relaxed);
        self.count.fetch_add(1, Relaxed);
    }

    /// Reads the current values.
    pub fn snapshot(&self) -> Snapshot {
        Snapshot {
            count: self.count.load(Relaxed),
            sum_us: self.sum_us.load(Relaxed),
            max_us: self.max_us.load(Relaxed),
            buckets: self.buckets.iter().map(|b| b.load(Relaxed)).collect(),
        }
    }
}

impl Snapshot {
    /// Mean in milliseconds (0 when empty).
    pub fn avg_ms(&self) -> f64 {
        if self.count == 0 {
            0.0
        } else {
            self.sum_us as f64 / self.count as f64 / 1000.0
        }
    }

    /// Maximum in milliseconds.
    pub fn max_ms(&self) -> f64 {
        self.max_us as f64 / 1000.0
    }

    /// The `q` quantile (0–1) in milliseconds: the upper bound of its bucket, capped by max.
    pub fn quantile_ms(&self, q: f64) -> f64 {
        let total: u64 = self.buckets.iter().sum();
        if total == 0 {
            return 0.0;
        }
        let rank = ((q * total as f64).ceil() as u64).max(1);
        let mut seen = 0;
        for (i, n) in self.buckets.iter().enumerate() {
            seen += n;
            if seen >= rank {
                return (bound_us(i) / 1000.0).min(self.max_ms());
            }
        }
        self.max_ms()
    }

    /// Buckets for prometheus-client's encoder: `(upper bound in seconds, count in this
    /// bucket)` for every fourth bucket (bounds ~2.4× apart), the last one unbounded
    /// (`f64::MAX`, which the encoder writes as `+Inf`). The counts are per bucket, not
    /// cumulative: the encoder sums them into the cumulative `le` series itself.
    pub fn prometheus_buckets(&self) -> Vec<(f64, u64)> {
        let mut out = Vec::new();
        let mut in_bucket = 0;
        for (i, n) in self.buckets.iter().enumerate() {
            in_bucket += n;
            if i % 4 == 3 && i < BUCKETS - 1 {
                out.push((bound_us(i) / 1e6, in_bucket));
                in_bucket = 0;
            }
        }
        out.push((f64::MAX, in_bucket));
        out
    }

    /// Sum in seconds.
    pub fn sum_seconds(&self) -> f64 {
        self.sum_us as f64 / 1e6
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[test]
    fn concurrent_records_are_all_counted() {
        let h = Arc::new(AtomicHistogram::default());
        let threads: Vec<_> = (0..8)
            .map(|t| {
                let h = Arc::clone(&h);
                std::thread::spawn(move || {
                    for i in 0..10_000u64 {
                        h.record(Duration::from_micros(1 + (i * 7 + t) % 5_000));
                    }
                })
            })
            .collect();
        threads.into_iter().for_each(|t| t.join().unwrap());
        let s = h.snapshot();
        assert_eq!(s.count, 80_000);
        assert_eq!(s.buckets.iter().sum::<u64>(), 80_000);
        assert_eq!(
            s.prometheus_buckets().iter().map(|(_, n)| n).sum::<u64>(),
            80_000
        );
        assert!(s.max_us <= 5_000);
    }

    #[test]
    fn quantiles_are_within_a_bucket() {
        let h = AtomicHistogram::default();
        for ms in 1..=100 {
            h.record(Duration::from_millis(ms));
        }
        let s = h.snapshot();
        assert_eq!(s.max_ms(), 100.0);
        assert!((s.avg_ms() - 50.5).abs() < 1e-9);
        for (q, exact) in [(0.5, 50.0), (0.95, 95.0), (0.99, 99.0)] {
            let got = s.quantile_ms(q);
            assert!(got >= exact && got <= exact * 1.25, "q{q}: {got}");
        }
        assert_eq!(AtomicHistogram::default().snapshot().quantile_ms(0.5), 0.0);
    }

    #[test]
    fn prometheus_buckets_count_each_duration_once() {
        let h = AtomicHistogram::default();
        // 5 µs, 1 ms and 20 s: the first bucket, a middle one and the unbounded last one.
        for d in [5, 1_000, 20_000_000] {
            h.record(Duration::from_micros(d));
        }
        let buckets = h.snapshot().prometheus_buckets();
        let counts: Vec<u64> = buckets.iter().map(|(_, n)| *n).collect();
        assert_eq!(counts.iter().sum::<u64>(), 3, "{buckets:?}");
        assert_eq!(counts.iter().filter(|n| **n == 1).count(), 3, "{buckets:?}");
        assert_eq!(buckets[0].1, 1);
        let holding_1ms = buckets.iter().position(|(le, _)| *le >= 0.001).unwrap();
        assert_eq!(buckets[holding_1ms].1, 1, "{buckets:?}");
        assert_eq!(*buckets.last().unwrap(), (f64::MAX, 1));
        assert!(buckets.windows(2).all(|w| w[0].0 < w[1].0));
    }
}
