//! Observability: lock statistics, HTTP and pool metrics, and their Prometheus rendering.

pub mod histogram;
pub mod http;
pub mod lock_stats;
pub mod logging;

use std::sync::Arc;

use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::{Registry, Unit};

pub use histogram::AtomicHistogram;
pub use lock_stats::{LockHold, LockStats, LockStatsView};

use crate::db::DbPool;

/// Everything one process measures.
#[derive(Debug, Default)]
pub struct Telemetry {
    pub locks: Arc<LockStats>,
    pub http: http::HttpStats,
    /// Time spent waiting for a pooled connection.
    pub pool_wait: AtomicHistogram,
    /// Requests that gave up waiting for a pooled connection (503).
    pub pool_timeouts: std::sync::atomic::AtomicU64,
    /// Keyed POSTs whose final error could not be stored, or whose key could not be released
    /// after a failure (each also logged at error level).
    pub idempotency_failures: std::sync::atomic::AtomicU64,
}

/// Renders the Prometheus text exposition of `telemetry` and the pool's state.
pub fn render(telemetry: &Arc<Telemetry>, pool: &DbPool) -> Result<String, std::fmt::Error> {
    let mut registry = Registry::with_prefix("medbook");
    registry.register_collector(Box::new(Collector {
        telemetry: Arc::clone(telemetry),
        pool: pool.clone(),
    }));
    let mut out = String::new();
    prometheus_client::encoding::text::encode(&mut out, &registry)?;
    Ok(out)
}

#[derive(Debug)]
struct Collector {
    telemetry: Arc<Telemetry>,
    pool: DbPool,
}

fn histogram(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    snapshot: &histogram::Snapshot,
) -> Result<(), std::fmt::Error> {
    let mut metric =
        encoder.encode_descriptor(name, help, Some(&Unit::Seconds), MetricType::Histogram)?;
    metric.encode_histogram::<prometheus_client::encoding::NoLabelSet>(
        snapshot.sum_seconds(),
        snapshot.count,
        &snapshot.prometheus_buckets(),
        None,
    )
}

fn counter(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    value: u64,
) -> Result<(), std::fmt::Error> {
    ConstCounter::new(value).encode(encoder.encode_descriptor(
        name,
        help,
        None,
        MetricType::Counter,
    )?)
}

fn gauge(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    value: i64,
) -> Result<(), std::fmt::Error> {
    ConstGauge::new(value).encode(encoder.encode_descriptor(name, help, None, MetricType::Gauge)?)
}

impl prometheus_client::collector::Collector for Collector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let locks = &self.telemetry.locks;
        for (name, help, value) in locks.counters() {
            counter(
                &mut encoder,
                name.trim_start_matches("medbook_"),
                help,
                value,
            )?;
        }
        gauge(
            &mut encoder,
            "locks_active",
            "Booking transactions holding row locks now",
            locks.active(),
        )?;
        let (wait, hold) = locks.histograms();
        histogram(
            &mut encoder,
            "lock_wait",
            "Time waiting for the booking path's row locks",
            &wait,
        )?;
        histogram(
            &mut encoder,
            "lock_hold",
            "Time the booking path held its row locks",
            &hold,
        )?;
        {
            let mut family = encoder.encode_descriptor(
                "conflicts",
                "409 responses by code",
                None,
                MetricType::Counter,
            )?;
            for (code, n) in locks.conflict_counts() {
                ConstCounter::new(n).encode(family.encode_family(&[("code", code)])?)?;
            }
        }
        let (batches, writes) = crate::db::sqlite_write_batches();
        counter(
            &mut encoder,
            "sqlite_write_batches",
            "SQLite write transactions shared by the writes waiting together (group commit; 0 on PostgreSQL)",
            batches,
        )?;
        counter(
            &mut encoder,
            "sqlite_batched_writes",
            "SQLite writes run in those transactions (writes / batches = mean batch size)",
            writes,
        )?;
        let (used, limit) = crate::db::sqlite_memory();
        gauge(
            &mut encoder,
            "sqlite_memory_bytes",
            "SQLite's heap in this process, page caches above all (0 on PostgreSQL)",
            used,
        )?;
        gauge(
            &mut encoder,
            "sqlite_memory_limit_bytes",
            "SQLite's soft heap limit (MEDBOOK_SQLITE_MEMORY_MIB; 0: none)",
            limit,
        )?;
        self.telemetry.http.encode(&mut encoder)?;
        let state = self.pool.state();
        gauge(
            &mut encoder,
            "pool_connections",
            "Open database connections",
            i64::from(state.connections),
        )?;
        gauge(
            &mut encoder,
            "pool_idle_connections",
            "Idle database connections",
            i64::from(state.idle_connections),
        )?;
        gauge(
            &mut encoder,
            "pool_max_connections",
            "Pool size",
            i64::from(self.pool.max_size()),
        )?;
        let threads = self.pool.thread_counts();
        gauge(
            &mut encoder,
            "db_threads",
            "Threads for database work (at most one per pooled connection; idle ones end after a minute)",
            threads.threads as i64,
        )?;
        gauge(
            &mut encoder,
            "db_threads_idle",
            "Threads for database work waiting for some",
            threads.idle as i64,
        )?;
        gauge(
            &mut encoder,
            "db_queued_work",
            "Requests' database work waiting for a thread (every thread busy)",
            threads.queued as i64,
        )?;
        histogram(
            &mut encoder,
            "pool_wait",
            "Time requests waited for a database thread and connection",
            &self.telemetry.pool_wait.snapshot(),
        )?;
        counter(
            &mut encoder,
            "pool_timeouts",
            "Requests that got no database thread and connection in time (503)",
            self.telemetry
                .pool_timeouts
                .load(std::sync::atomic::Ordering::Relaxed),
        )?;
        counter(
            &mut encoder,
            "idempotency_failures",
            "Keyed requests whose final error could not be stored or whose key could not be released",
            self.telemetry
                .idempotency_failures
                .load(std::sync::atomic::Ordering::Relaxed),
        )
    }
}
