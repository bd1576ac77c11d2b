//! In-process lock statistics of the booking path: acquisitions, locks held now, wait and hold
//! times, deadlocks, retries, lock timeouts, conflicts by code, and the most contended
//! doctors. Everything is an atomic counter; recording never blocks a request.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use serde::Serialize;

use super::histogram::AtomicHistogram;
use crate::error::ConflictCode;

/// Every 409 code, in a fixed order (index = position).
pub const CONFLICT_CODES: [ConflictCode; 12] = [
    ConflictCode::SlotTaken,
    ConflictCode::PatientBusy,
    ConflictCode::DoctorInactive,
    ConflictCode::PatientInactive,
    ConflictCode::VersionConflict,
    ConflictCode::PrescriptionExists,
    ConflictCode::RatingExists,
    ConflictCode::AlreadyAcknowledged,
    ConflictCode::EmailTaken,
    ConflictCode::DeadlockDetected,
    ConflictCode::LockTimeout,
    ConflictCode::IdempotencyKeyInUse,
];

/// At most this many doctors are tracked individually (bounded memory).
const MAX_TRACKED_DOCTORS: usize = 10_000;

/// Per-doctor contention counters.
#[derive(Debug, Default)]
struct DoctorContention {
    wait_us: AtomicU64,
    acquisitions: AtomicU64,
    slot_conflicts: AtomicU64,
}

/// The lock statistics of one medbook process.
#[derive(Debug)]
pub struct LockStats {
    enabled: AtomicBool,
    acquisitions: AtomicU64,
    active: AtomicI64,
    deadlocks: AtomicU64,
    retries: AtomicU64,
    retries_exhausted: AtomicU64,
    lock_timeouts: AtomicU64,
    conflicts: [AtomicU64; CONFLICT_CODES.len()],
    wait: AtomicHistogram,
    hold: AtomicHistogram,
    /// Read-locked on every update; write-locked only the first time a doctor is seen.
    doctors: RwLock<HashMap<i32, Arc<DoctorContention>>>,
}

impl Default for LockStats {
    fn default() -> Self {
        LockStats {
            enabled: AtomicBool::new(true),
            acquisitions: AtomicU64::new(0),
            active: AtomicI64::new(0),
            deadlocks: AtomicU64::new(0),
            retries: AtomicU64::new(0),
            retries_exhausted: AtomicU64::new(0),
            lock_timeouts: AtomicU64::new(0),
            conflicts: std::array::from_fn(|_| AtomicU64::new(0)),
            wait: AtomicHistogram::default(),
            hold: AtomicHistogram::default(),
            doctors: RwLock::new(HashMap::new()),
        }
    }
}

/// Locks held by one booking transaction; recording its hold time when dropped.
#[derive(Debug)]
pub struct LockHold {
    stats: Arc<LockStats>,
    acquired: Instant,
}

impl LockHold {
    /// How long the locks have been held so far.
    pub fn held(&self) -> Duration {
        self.acquired.elapsed()
    }
}

impl Drop for LockHold {
    fn drop(&mut self) {
        self.stats.hold.record(self.acquired.elapsed());
        self.stats.active.fetch_sub(1, Relaxed);
    }
}

impl LockStats {
    /// Turns recording off (for measuring its overhead) or on.
    pub fn set_enabled(&self, enabled: bool) {
        self.enabled.store(enabled, Relaxed);
    }

    fn on(&self) -> bool {
        self.enabled.load(Relaxed)
    }

    /// Records that a booking got its row locks after waiting `wait`; the returned guard
    /// records the hold time when the transaction is over.
    pub fn acquired(self: &Arc<Self>, doctor_id: i32, wait: Duration) -> LockHold {
        let acquired = Instant::now();
        if self.on() {
            self.acquisitions.fetch_add(1, Relaxed);
            self.wait.record(wait);
            if let Some(doctor) = self.doctor(doctor_id) {
                doctor.acquisitions.fetch_add(1, Relaxed);
                doctor.wait_us.fetch_add(wait.as_micros() as u64, Relaxed);
            }
        }
        self.active.fetch_add(1, Relaxed);
        LockHold {
            stats: Arc::clone(self),
            acquired,
        }
    }

    /// A booking of `doctor_id` found the slot taken.
    pub fn slot_conflict(&self, doctor_id: i32) {
        if let Some(doctor) = self.on().then(|| self.doctor(doctor_id)).flatten() {
            doctor.slot_conflicts.fetch_add(1, Relaxed);
        }
    }

    /// A transaction is retried; `deadlock` if PostgreSQL reported a deadlock.
    pub fn retried(&self, deadlock: bool) {
        if self.on() {
            self.retries.fetch_add(1, Relaxed);
            if deadlock {
                self.deadlocks.fetch_add(1, Relaxed);
            }
        }
    }

    /// The retries ran out; `deadlock` if the last failure was a deadlock.
    pub fn exhausted(&self, deadlock: bool) {
        if self.on() {
            self.retries_exhausted.fetch_add(1, Relaxed);
            if deadlock {
                self.deadlocks.fetch_add(1, Relaxed);
            }
        }
    }

    /// A 409 went out with `code`.
    pub fn conflict(&self, code: ConflictCode) {
        if !self.on() {
            return;
        }
        if let Some(i) = CONFLICT_CODES.iter().position(|c| *c == code) {
            self.conflicts[i].fetch_add(1, Relaxed);
        }
        if code == ConflictCode::LockTimeout {
            self.lock_timeouts.fetch_add(1, Relaxed);
        }
    }

    fn doctor(&self, id: i32) -> Option<Arc<DoctorContention>> {
        let read = self.doctors.read().unwrap_or_else(|e| e.into_inner());
        if let Some(d) = read.get(&id) {
            return Some(Arc::clone(d));
        }
        let full = read.len() >= MAX_TRACKED_DOCTORS;
        drop(read);
        if full {
            return None;
        }
        let mut write = self.doctors.write().unwrap_or_else(|e| e.into_inner());
        Some(Arc::clone(write.entry(id).or_default()))
    }

    /// The JSON of `GET /api/v1/admin/lock-stats`.
    pub fn view(&self) -> LockStatsView {
        let hold = self.hold.snapshot();
        let wait = self.wait.snapshot();
        let conflicts = CONFLICT_CODES
            .iter()
            .zip(&self.conflicts)
            .map(|(code, n)| (code.as_str(), n.load(Relaxed)))
            .filter(|(_, n)| *n > 0)
            .collect();
        let mut top: Vec<ContendedDoctor> = self
            .doctors
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .map(|(id, d)| {
                let acquisitions = d.acquisitions.load(Relaxed);
                ContendedDoctor {
                    doctor_id: *id,
                    slot_conflicts: d.slot_conflicts.load(Relaxed),
                    lock_acquisitions: acquisitions,
                    total_wait_ms: d.wait_us.load(Relaxed) as f64 / 1000.0,
                }
            })
            .collect();
        top.sort_by(|a, b| {
            (b.slot_conflicts, b.total_wait_ms)
                .partial_cmp(&(a.slot_conflicts, a.total_wait_ms))
                .unwrap_or(std::cmp::Ordering::Equal)
        });
        top.truncate(10);
        LockStatsView {
            active_locks: self.active.load(Relaxed),
            avg_duration_ms: hold.avg_ms(),
            max_duration_ms: hold.max_ms(),
            p50_duration_ms: hold.quantile_ms(0.50),
            p95_duration_ms: hold.quantile_ms(0.95),
            p99_duration_ms: hold.quantile_ms(0.99),
            lock_acquisitions: self.acquisitions.load(Relaxed),
            deadlock_count: self.deadlocks.load(Relaxed),
            retry_count: self.retries.load(Relaxed),
            retries_exhausted: self.retries_exhausted.load(Relaxed),
            lock_timeouts: self.lock_timeouts.load(Relaxed),
            conflicts,
            wait: Timing::from(&wait),
            hold: Timing::from(&hold),
            top_contended_doctors: top,
        }
    }

    /// Snapshots of the wait and hold histograms (for `/metrics`).
    pub fn histograms(&self) -> (super::histogram::Snapshot, super::histogram::Snapshot) {
        (self.wait.snapshot(), self.hold.snapshot())
    }

    /// Counter values for `/metrics`: acquisitions, deadlocks, retries, exhausted, timeouts.
    pub fn counters(&self) -> [(&'static str, &'static str, u64); 5] {
        [
            (
                "medbook_lock_acquisitions",
                "Booking-path row-lock acquisitions",
                self.acquisitions.load(Relaxed),
            ),
            (
                "medbook_deadlocks",
                "Deadlocks reported by the database",
                self.deadlocks.load(Relaxed),
            ),
            (
                "medbook_transaction_retries",
                "Transactions retried after a deadlock, serialization failure or SQLite BUSY",
                self.retries.load(Relaxed),
            ),
            (
                "medbook_transaction_retries_exhausted",
                "Transactions that ran out of retries (409 DEADLOCK_DETECTED)",
                self.retries_exhausted.load(Relaxed),
            ),
            (
                "medbook_lock_timeouts",
                "Lock waits that hit lock_timeout (409 LOCK_TIMEOUT)",
                self.lock_timeouts.load(Relaxed),
            ),
        ]
    }

    /// Locks held right now.
    pub fn active(&self) -> i64 {
        self.active.load(Relaxed)
    }

    /// `(code, count)` of every conflict code.
    pub fn conflict_counts(&self) -> Vec<(&'static str, u64)> {
        CONFLICT_CODES
            .iter()
            .zip(&self.conflicts)
            .map(|(code, n)| (code.as_str(), n.load(Relaxed)))
            .collect()
    }
}

/// Avg/max/percentiles of one histogram, in milliseconds.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Timing {
    pub count: u64,
    pub avg_ms: f64,
    pub max_ms: f64,
    pub p50_ms: f64,
    pub p95_ms: f64,
    pub p99_ms: f64,
}

impl From<&super::histogram::Snapshot> for Timing {
    fn from(s: &super::histogram::Snapshot) -> Self {
        Timing {
            count: s.count,
            avg_ms: s.avg_ms(),
            max_ms: s.max_ms(),
            p50_ms: s.quantile_ms(0.50),
            p95_ms: s.quantile_ms(0.95),
            p99_ms: s.quantile_ms(0.99),
        }
    }
}

/// A doctor whose bookings contend.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ContendedDoctor {
    pub doctor_id: i32,
    pub slot_conflicts: u64,
    pub lock_acquisitions: u64,
    pub total_wait_ms: f64,
}

/// `GET /api/v1/admin/lock-stats`: the contract's fields (durations are lock hold times),
/// plus percentiles, wait times and the most contended doctors.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct LockStatsView {
    pub active_locks: i64,
    pub avg_duration_ms: f64,
    pub max_duration_ms: f64,
    pub p50_duration_ms: f64,
    pub p95_duration_ms: f64,
    pub p99_duration_ms: f64,
    pub lock_acquisitions: u64,
    pub deadlock_count: u64,
    pub retry_count: u64,
    pub retries_exhausted: u64,
    pub lock_timeouts: u64,
    /// Conflict responses by code (codes never seen are left out).
    pub conflicts: std::collections::BTreeMap<&'static str, u64>,
    pub wait: Timing,
    pub hold: Timing,
    pub top_contended_doctors: Vec<ContendedDoctor>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn concurrent_updates_from_many_threads_are_counted_exactly() {
        let stats = Arc::new(LockStats::default());
        let threads: Vec<_> = (0..8)
            .map(|t| {
                let stats = Arc::clone(&stats);
                std::thread::spawn(move || {
                    for i in 0..5_000 {
                        let hold = stats.acquired(i % 20, Duration::from_micros(50));
                        if i % 5 == 0 {
                            stats.slot_conflict(i % 20);
                            stats.conflict(ConflictCode::SlotTaken);
                        }
                        if i % 100 == t {
                            stats.retried(true);
                        }
                        drop(hold);
                    }
                    stats.conflict(ConflictCode::LockTimeout);
                    stats.exhausted(false);
                })
            })
            .collect();
        threads.into_iter().for_each(|t| t.join().unwrap());
        let view = stats.view();
        assert_eq!(view.lock_acquisitions, 40_000);
        assert_eq!(view.active_locks, 0);
        assert_eq!(view.hold.count, 40_000);
        assert_eq!(view.wait.count, 40_000);
        assert_eq!(view.conflicts["SLOT_TAKEN"], 8_000);
        assert_eq!(view.conflicts["LOCK_TIMEOUT"], 8);
        assert_eq!(view.lock_timeouts, 8);
        assert_eq!(view.retry_count, 8 * 50);
        assert_eq!(view.deadlock_count, 8 * 50);
        assert_eq!(view.retries_exhausted, 8);
        let doctor_conflicts: u64 = view
            .top_contended_doctors
            .iter()
            .map(|d| d.slot_conflicts)
            .sum();
        assert_eq!(doctor_conflicts, 8_000);
        assert_eq!(view.top_contended_doctors.len(), 10);
    }

    #[test]
    fn active_locks_count_guards_alive() {
        let stats = Arc::new(LockStats::default());
        let a = stats.acquired(1, Duration::ZERO);
        let b = stats.acquired(2, Duration::ZERO);
        assert_eq!(stats.view().active_locks, 2);
        drop(a);
        assert_eq!(stats.view().active_locks, 1);
        drop(b);
        assert_eq!(stats.view().active_locks, 0);
    }

    #[test]
    fn disabled_stats_record_nothing() {
        let stats = Arc::new(LockStats::default());
        stats.set_enabled(false);
        drop(stats.acquired(1, Duration::from_millis(1)));
        stats.conflict(ConflictCode::SlotTaken);
        stats.retried(true);
        let view = stats.view();
        assert_eq!((view.lock_acquisitions, view.retry_count), (0, 0));
        assert!(view.conflicts.is_empty());
    }
}
