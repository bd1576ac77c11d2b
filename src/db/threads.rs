//! The threads that run database work: at most one per pooled connection, started on demand,
//! and the next piece of work goes to the thread that went idle **last**.
//!
//! tokio's blocking pool (which this replaces) wakes its idle threads in the order they went
//! idle, so at one client every request ran on a different thread of the eight, each of which
//! had to be woken from a cold sleep. This pool saved one context switch and 58–75 µs of
//! medbook's CPU per request there (BENCHMARKS.md, round after run AA). Here the most
//! recently idle thread, still warm, takes the next piece, and
//! r2d2, which also hands out the connection returned last, gives it the connection it just
//! used; threads that stay at the bottom of the idle stack for the keep-alive end.
//!
//! Work beyond the thread limit waits in one queue in arrival order; a thread that finishes
//! takes the next piece without sleeping. A panic in a piece of work ends that piece only.

use std::collections::VecDeque;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::Duration;

/// A piece of work for a database thread.
pub(super) type Job = Box<dyn FnOnce() + Send + 'static>;

/// A bounded set of named threads; dropping it lets running work finish, drops queued work
/// unrun and ends the idle threads, without waiting for any of them.
#[derive(Debug)]
pub(super) struct DbThreads {
    shared: Arc<Shared>,
}

#[derive(Debug)]
struct Shared {
    state: Mutex<State>,
    max_threads: usize,
    keep_alive: Duration,
    name: String,
}

struct State {
    /// Idle threads, the one that went idle last on top.
    idle: Vec<Arc<Slot>>,
    /// Work that found every thread busy and none left to start.
    queue: VecDeque<Job>,
    /// Threads started and not yet ended, idle or not.
    threads: usize,
    closed: bool,
}

impl std::fmt::Debug for State {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("State")
            .field("idle", &self.idle.len())
            .field("queued", &self.queue.len())
            .field("threads", &self.threads)
            .field("closed", &self.closed)
            .finish()
    }
}

/// Where an idle thread waits for what it is handed next.
#[derive(Default)]
struct Slot {
    handed: Mutex<Option<Handed>>,
    ready: Condvar,
}

enum Handed {
    Work(Job),
    Close,
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    // No work runs under these locks, so a poisoned one holds consistent data.
    mutex.lock().unwrap_or_else(|e| e.into_inner())
}

impl Slot {
    /// Hands `what` to the thread waiting here. Called with the state lock held, so a thread
    /// that is no longer on the idle stack always finds what it was handed.
    fn hand(&self, what: Handed) {
        *lock(&self.handed) = Some(what);
        self.ready.notify_one();
    }

    /// Waits up to `keep_alive` for something to be handed; `None` once that passed.
    fn wait(&self, keep_alive: Duration) -> Option<Handed> {
        let handed = lock(&self.handed);
        let (mut handed, _) = self
            .ready
            .wait_timeout_while(handed, keep_alive, |handed| handed.is_none())
            .unwrap_or_else(|e| e.into_inner());
        handed.take()
    }

    fn take(&self) -> Option<Handed> {
        lock(&self.handed).take()
    }
}

/// The database threads at one moment (`/metrics`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ThreadCounts {
    /// Threads started and not yet ended, idle or not.
    pub threads: usize,
    /// Of those, the ones waiting for work.
    pub idle: usize,
    /// Work waiting for a thread (every thread busy, and no more may start).
    pub queued: usize,
}

/// The pool could not take the work: it is closed.
#[derive(Debug)]
pub(super) struct Closed;

impl DbThreads {
    /// Up to `max_threads` threads named `name`; an idle one ends after `keep_alive`.
    pub(super) fn new(max_threads: usize, name: &str, keep_alive: Duration) -> DbThreads {
        DbThreads {
            shared: Arc::new(Shared {
                state: Mutex::new(State {
                    idle: Vec::new(),
                    queue: VecDeque::new(),
                    threads: 0,
                    closed: false,
                }),
                max_threads: max_threads.max(1),
                keep_alive,
                name: name.to_owned(),
            }),
        }
    }

    /// Runs `job` on the thread that went idle last, on a new thread if none is idle and the
    /// limit allows, or after the work queued before it. A job the pool drops unrun (it was
    /// closed, or no thread could be started) is dropped, never run.
    pub(super) fn execute(&self, job: Job) -> Result<(), Closed> {
        let shared = &self.shared;
        let mut state = lock(&shared.state);
        if state.closed {
            return Err(Closed);
        }
        if let Some(slot) = state.idle.pop() {
            slot.hand(Handed::Work(job));
            return Ok(());
        }
        state.queue.push_back(job);
        if state.threads < shared.max_threads {
            state.threads += 1;
            drop(state);
            // The new thread starts from the queue: if another thread frees up first and takes
            // this job, the new one goes idle instead.
            let spawned = std::thread::Builder::new()
                .name(shared.name.clone())
                .spawn({
                    let shared = Arc::clone(shared);
                    move || shared.work()
                });
            if let Err(err) = spawned {
                log::error!("could not start a database thread: {err}");
                let mut state = lock(&shared.state);
                state.threads -= 1;
                if state.threads == 0 {
                    // No thread would ever run the queue: its work ends unrun (503).
                    let unrun = std::mem::take(&mut state.queue);
                    drop(state);
                    drop(unrun);
                }
            }
        }
        Ok(())
    }

    /// How many threads there are, how many of them are idle, and how much work waits.
    pub(super) fn counts(&self) -> ThreadCounts {
        let state = lock(&self.shared.state);
        ThreadCounts {
            threads: state.threads,
            idle: state.idle.len(),
            queued: state.queue.len(),
        }
    }
}

impl Shared {
    /// A thread's life: the queue first, then the idle stack until handed work, closed, or
    /// idle for the keep-alive.
    fn work(&self) {
        let slot = Arc::new(Slot::default());
        let mut state = lock(&self.state);
        loop {
            if let Some(job) = state.queue.pop_front() {
                drop(state);
                run(job);
                state = lock(&self.state);
                continue;
            }
            if state.closed {
                break;
            }
            state.idle.push(Arc::clone(&slot));
            drop(state);
            let handed = match slot.wait(self.keep_alive) {
                Some(handed) => handed,
                None => {
                    state = lock(&self.state);
                    match state.idle.iter().position(|idle| Arc::ptr_eq(idle, &slot)) {
                        Some(at) => {
                            state.idle.remove(at);
                            break;
                        }
                        // Popped from the stack just as the keep-alive ran out: what it was
                        // handed is in the slot already (handed under the state lock).
                        None => {
                            drop(state);
                            slot.take().expect("a popped slot was handed something")
                        }
                    }
                }
            };
            // After `Close` the loop ends at the check of `closed` (the queue went with it).
            if let Handed::Work(job) = handed {
                run(job);
            }
            state = lock(&self.state);
        }
        state.threads -= 1;
    }
}

/// Runs a job; a panic ends the job (its result channel closes), not the thread.
fn run(job: Job) {
    // The job owns everything it touches: nothing shared is left half-updated by its unwind.
    let _ = catch_unwind(AssertUnwindSafe(job));
}

impl Drop for DbThreads {
    fn drop(&mut self) {
        let mut state = lock(&self.shared.state);
        state.closed = true;
        let unrun = std::mem::take(&mut state.queue);
        for slot in state.idle.drain(..) {
            slot.hand(Handed::Close);
        }
        drop(state);
        drop(unrun);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::mpsc;
    use std::thread::ThreadId;
    use std::time::Instant;

    /// Runs `f` on `threads` and waits for its result; `None` if the job was dropped unrun or
    /// panicked.
    fn call<T: Send + 'static>(
        threads: &DbThreads,
        f: impl FnOnce() -> T + Send + 'static,
    ) -> Option<T> {
        let (tx, rx) = mpsc::channel();
        threads
            .execute(Box::new(move || {
                let _ = tx.send(f());
            }))
            .ok()?;
        rx.recv().ok()
    }

    /// Threads, and of those the idle ones.
    fn counts(threads: &DbThreads) -> (usize, usize) {
        let counts = threads.counts();
        (counts.threads, counts.idle)
    }

    fn me() -> ThreadId {
        std::thread::current().id()
    }

    /// Waits until `cond` holds, for up to 5 s.
    fn eventually(mut cond: impl FnMut() -> bool) -> bool {
        let until = Instant::now() + Duration::from_secs(5);
        while Instant::now() < until {
            if cond() {
                return true;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        cond()
    }

    /// Starts `n` threads by keeping `n` jobs busy at once, then lets all of them go.
    fn start_threads(threads: &DbThreads, n: usize) -> Vec<ThreadId> {
        let (started_tx, started) = mpsc::channel();
        let release = Arc::new((Mutex::new(false), Condvar::new()));
        for _ in 0..n {
            let (started_tx, release) = (started_tx.clone(), Arc::clone(&release));
            threads
                .execute(Box::new(move || {
                    started_tx.send(me()).unwrap();
                    let (go, cv) = &*release;
                    let _go = cv.wait_while(lock(go), |go| !*go).unwrap();
                }))
                .unwrap();
        }
        let ids: Vec<_> = (0..n).map(|_| started.recv().unwrap()).collect();
        assert_eq!(counts(threads), (n, 0));
        *lock(&release.0) = true;
        release.1.notify_all();
        ids
    }

    #[test]
    fn the_thread_that_went_idle_last_takes_the_next_work() {
        let threads = DbThreads::new(8, "medbook-db", Duration::from_secs(60));
        let ids = start_threads(&threads, 8);
        assert!(eventually(|| counts(&threads) == (8, 8)));
        assert_eq!(
            ids.iter().collect::<std::collections::HashSet<_>>().len(),
            8
        );
        // One piece of work at a time, as from one client: the same warm thread takes every
        // piece, where a pool that wakes its idle threads in turn uses all eight.
        // (Each waits until the thread before it is idle again, as a client's round trip does.)
        let ran_on: Vec<_> = (0..40)
            .map(|_| {
                let id = call(&threads, me).unwrap();
                assert!(eventually(|| counts(&threads) == (8, 8)));
                id
            })
            .collect();
        assert!(ran_on.iter().all(|id| *id == ran_on[0]), "{ran_on:?}");
    }

    /// Hands `n` pieces of work to `threads` at once; each records its number when it starts,
    /// runs `body(its number)`, and the call returns the order they started in and the most
    /// that ran at once.
    fn run_all(
        threads: &DbThreads,
        n: usize,
        body: impl Fn(usize) + Send + Sync + 'static,
    ) -> (Vec<usize>, usize) {
        use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};
        let body = Arc::new(body);
        let (running, most) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
        let order = Arc::new(Mutex::new(Vec::new()));
        let (done_tx, done) = mpsc::channel();
        for i in 0..n {
            let (body, running, most, order, done_tx) = (
                Arc::clone(&body),
                Arc::clone(&running),
                Arc::clone(&most),
                Arc::clone(&order),
                done_tx.clone(),
            );
            let job = move || {
                most.fetch_max(running.fetch_add(1, SeqCst) + 1, SeqCst);
                lock(&order).push(i);
                body(i);
                running.fetch_sub(1, SeqCst);
                done_tx.send(()).unwrap();
            };
            threads.execute(Box::new(job)).unwrap();
        }
        for _ in 0..n {
            done.recv_timeout(Duration::from_secs(5)).unwrap();
        }
        let order = lock(&order).clone();
        (order, most.load(SeqCst))
    }

    #[test]
    fn no_more_threads_run_at_once_than_the_limit() {
        let threads = DbThreads::new(2, "medbook-db", Duration::from_secs(60));
        // The first two pieces wait for each other, so two threads must run at once.
        let both = Arc::new(std::sync::Barrier::new(2));
        let (_, most) = run_all(&threads, 12, move |i| {
            if i < 2 {
                both.wait();
            }
            std::thread::sleep(Duration::from_millis(5));
        });
        assert_eq!(most, 2);
        assert_eq!(counts(&threads).0, 2);
    }

    #[test]
    fn queued_work_runs_in_arrival_order() {
        let threads = DbThreads::new(1, "medbook-db", Duration::from_secs(60));
        let (order, most) = run_all(&threads, 12, |_| {
            std::thread::sleep(Duration::from_millis(2))
        });
        assert_eq!(order, (0..12).collect::<Vec<_>>());
        assert_eq!(most, 1);
    }

    #[test]
    fn a_panic_ends_its_work_only() {
        let threads = DbThreads::new(1, "medbook-db", Duration::from_secs(60));
        let first = call(&threads, me).unwrap();
        assert_eq!(call(&threads, || -> () { panic!("in a job") }), None);
        // The same single thread lives on and runs the next piece.
        assert_eq!(call(&threads, me), Some(first));
        assert!(eventually(|| counts(&threads) == (1, 1)));
    }

    #[test]
    fn idle_threads_end_after_the_keep_alive_and_start_again_on_demand() {
        let threads = DbThreads::new(4, "medbook-db", Duration::from_millis(100));
        start_threads(&threads, 4);
        assert!(eventually(|| counts(&threads) == (0, 0)));
        assert_eq!(call(&threads, || 7), Some(7));
        assert_eq!(counts(&threads).0, 1);
    }

    #[test]
    fn dropping_the_pool_ends_idle_threads_and_drops_queued_work_unrun() {
        let threads = DbThreads::new(1, "medbook-db", Duration::from_secs(60));
        start_threads(&threads, 1);
        assert!(eventually(|| counts(&threads) == (1, 1)));
        let shared = Arc::clone(&threads.shared);
        // One piece holds the only thread; one waits behind it.
        let (hold_tx, hold) = mpsc::channel::<()>();
        let (ran_tx, ran) = mpsc::channel::<&str>();
        threads
            .execute(Box::new({
                let ran_tx = ran_tx.clone();
                move || {
                    hold.recv().unwrap();
                    ran_tx.send("running").unwrap();
                }
            }))
            .unwrap();
        threads
            .execute(Box::new(move || ran_tx.send("queued").unwrap()))
            .unwrap();
        assert!(eventually(|| threads.counts()
            == ThreadCounts {
                threads: 1,
                idle: 0,
                queued: 1
            }));
        drop(threads);
        hold_tx.send(()).unwrap();
        // The running piece finishes; the queued one is dropped (its sender with it).
        assert_eq!(ran.recv_timeout(Duration::from_secs(5)), Ok("running"));
        assert!(ran.recv_timeout(Duration::from_secs(5)).is_err());
        assert!(eventually(|| lock(&shared.state).threads == 0));
    }
}
