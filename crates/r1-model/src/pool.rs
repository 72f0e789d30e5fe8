//! A fixed worker pool for the forward pass: workers spin briefly after a job, then park on a
//! condition variable, so an idle engine costs no CPU and a busy machine (tokio, HTTP, other
//! processes) is not fought for cores — unlike a pool that busy-waits between jobs.
//!
//! `run(n, f)` calls `f(0..n)` spread over the workers and the calling thread and returns when
//! all calls are done, so `f` may borrow from the caller's stack.
//!
//! A job ends when its tasks are done, not when every worker has checked in: on a loaded
//! machine a worker may be descheduled for a whole time slice, and a join that waited for it
//! to wake up (only to find nothing left) would stall every layer of the forward pass. Tasks
//! are claimed with a compare-and-swap on one word holding the job's epoch, its task count and
//! the next task index, so a worker that wakes late can never claim a task of a job that has
//! ended (the count lives in the same word: read separately, a late worker could pair the
//! next job's count with the old job's exhausted index and claim a task that does not exist).

use std::sync::atomic::{AtomicBool, AtomicPtr, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// How long a worker keeps polling for the next job before parking. Layers issue jobs
/// microseconds apart during a forward pass, so this keeps the wake-up latency off the hot
/// path while bounding the CPU burned once the engine goes idle.
const SPIN: Duration = Duration::from_micros(200);

/// The claim word: `epoch << 32 | n_tasks << 16 | next task`.
const EPOCH_SHIFT: u32 = 32;
const COUNT_SHIFT: u32 = 16;
const FIELD_MASK: u64 = (1 << COUNT_SHIFT) - 1;
/// Most tasks one job may have (larger ones are run as several jobs).
const MAX_TASKS: usize = FIELD_MASK as usize;

/// Contention: the caller waiting for a worker's last task longer than this, and more than
/// twice as long as it worked on the job itself, was held up by a worker that was
/// descheduled mid-task (plain imbalance is at most one task, which the caller's own share
/// covers). Such waits are counted as time lost.
const STALL: Duration = Duration::from_micros(100);
/// When more than a quarter of a `STALL_WINDOW` is lost that way, the caller runs jobs alone
/// for `SOLO`: with another busy thread on the machine, one thread with a core to itself
/// beats two that take turns (smollm2 decode with one busy competing thread: ~0.6x of
/// unloaded alone, ~0.4x with both). Then it tries its workers again. Short, scattered
/// stalls (tokio and HTTP clients waking between engine steps) stay below the bar: they
/// cost less than giving up a core.
const STALL_WINDOW: Duration = Duration::from_millis(100);
const LOST_TO_SOLO: Duration = Duration::from_millis(25);
const SOLO: Duration = Duration::from_millis(500);

type Job = *const (dyn Fn(usize) + Sync);

/// What the caller has seen of its workers lately (see [`STALL`]).
struct Contention {
    window_start: Instant,
    lost: Duration,
    solo_until: Option<Instant>,
    /// Times the pool went solo (for tests and logs).
    solo_spells: u64,
}

impl Contention {
    fn new() -> Self {
        Contention {
            window_start: Instant::now(),
            lost: Duration::ZERO,
            solo_until: None,
            solo_spells: 0,
        }
    }

    /// Whether the caller should run this job alone.
    fn solo(&mut self, now: Instant) -> bool {
        match self.solo_until {
            Some(t) if now < t => true,
            Some(_) => {
                self.solo_until = None;
                self.lost = Duration::ZERO;
                self.window_start = now;
                false
            }
            None => false,
        }
    }

    /// The caller worked `worked` on a job, then waited `waited` for the workers.
    fn observe(&mut self, now: Instant, worked: Duration, waited: Duration) {
        if waited < STALL || waited < 2 * worked {
            return;
        }
        if now.duration_since(self.window_start) > STALL_WINDOW {
            self.window_start = now;
            self.lost = Duration::ZERO;
        }
        self.lost += waited;
        if self.lost > LOST_TO_SOLO {
            self.solo_until = Some(now + SOLO);
            self.solo_spells += 1;
            tracing::debug!("worker pool: workers keep getting descheduled; running jobs on the calling thread for {SOLO:?}");
        }
    }
}

#[repr(align(128))]
struct CachePadded<T>(T);

impl<T> std::ops::Deref for CachePadded<T> {
    type Target = T;
    fn deref(&self) -> &T {
        &self.0
    }
}

struct Shared {
    /// `epoch << 32 | n_tasks << 16 | next task`. A task is claimed by a successful
    /// compare-and-swap whose epoch is the current job's, which also proves that job is still
    /// running.
    claim: AtomicU64,
    /// Points at the current job's `Job` (a fat pointer on `run`'s stack). Dereferenced
    /// only after a successful claim.
    job: AtomicPtr<Job>,
    /// Tasks of the current job finished (on its own cache line: workers add to it while
    /// others claim).
    done: CachePadded<AtomicUsize>,
    sleeping: AtomicUsize,
    shutdown: AtomicBool,
    lock: Mutex<()>,
    wake: Condvar,
}

impl Shared {
    fn epoch(&self, order: Ordering) -> u64 {
        self.claim.load(order) >> EPOCH_SHIFT
    }

    /// Claim the next task of job `epoch`, or `None` when that job has no task left or has
    /// ended.
    fn claim(&self, epoch: u64) -> Option<usize> {
        let mut cur = self.claim.load(Ordering::Acquire);
        loop {
            let i = cur & FIELD_MASK;
            let n = (cur >> COUNT_SHIFT) & FIELD_MASK;
            if cur >> EPOCH_SHIFT != epoch || i >= n {
                return None;
            }
            match self.claim.compare_exchange_weak(
                cur,
                cur + 1,
                Ordering::AcqRel,
                Ordering::Acquire,
            ) {
                Ok(_) => return Some(i as usize),
                Err(now) => cur = now,
            }
        }
    }

    /// Run claimed tasks of job `epoch` until none is left, then count them done (once, not
    /// per task: the counter's cache line is contended).
    fn work(&self, epoch: u64) {
        let mut ran = 0;
        while let Some(i) = self.claim(epoch) {
            // SAFETY: the claim succeeded with this job's epoch, so the job has not ended
            // (task `i` is not done) and `run` is still waiting with the job on its stack;
            // the Acquire compare-and-swap synchronises with the Release store that
            // published the epoch after `job` was set.
            let f = unsafe { &**self.job.load(Ordering::Acquire) };
            f(i);
            ran += 1;
        }
        if ran > 0 {
            self.done.fetch_add(ran, Ordering::Release);
        }
    }
}

pub struct ThreadPool {
    shared: Arc<Shared>,
    workers: Vec<JoinHandle<()>>,
    /// Serialises `run` calls from different threads; holds what they learn of contention.
    run_lock: Mutex<Contention>,
}

impl ThreadPool {
    /// A pool that runs jobs on `threads` threads in all: the caller plus `threads - 1` workers.
    pub fn new(threads: usize) -> Self {
        let threads = threads.max(1);
        let shared = Arc::new(Shared {
            claim: AtomicU64::new(0),
            job: AtomicPtr::new(std::ptr::null_mut()),
            done: CachePadded(AtomicUsize::new(0)),
            sleeping: AtomicUsize::new(0),
            shutdown: AtomicBool::new(false),
            lock: Mutex::new(()),
            wake: Condvar::new(),
        });
        let workers = (1..threads)
            .map(|i| {
                let s = shared.clone();
                std::thread::Builder::new()
                    .name(format!("r1-worker-{i}"))
                    .spawn(move || worker(s))
                    .expect("spawning a worker thread")
            })
            .collect();
        ThreadPool {
            shared,
            workers,
            run_lock: Mutex::new(Contention::new()),
        }
    }

    /// Total threads a job runs on (workers + the caller).
    pub fn threads(&self) -> usize {
        self.workers.len() + 1
    }

    /// Run `f(i)` for every `i` in `0..n_tasks`, in parallel; returns when all are done.
    pub fn run<F: Fn(usize) + Sync>(&self, n_tasks: usize, f: F) {
        self.run_dyn(n_tasks, &f)
    }

    fn run_dyn(&self, n_tasks: usize, f: &(dyn Fn(usize) + Sync)) {
        if n_tasks == 0 {
            return;
        }
        if self.workers.is_empty() || n_tasks == 1 {
            for i in 0..n_tasks {
                f(i);
            }
            return;
        }
        if n_tasks > MAX_TASKS {
            for base in (0..n_tasks).step_by(MAX_TASKS) {
                let len = MAX_TASKS.min(n_tasks - base);
                self.run_dyn(len, &|i| f(base + i));
            }
            return;
        }
        let mut contention = self.run_lock.lock().unwrap_or_else(|e| e.into_inner());
        let start = Instant::now();
        if contention.solo(start) {
            for i in 0..n_tasks {
                f(i);
            }
            return;
        }
        let s = &*self.shared;
        // SAFETY: we erase the lifetime of `f`; workers call it only after claiming a task of
        // this job, and we do not return before every task is done.
        let mut job: Job = unsafe { std::mem::transmute::<&(dyn Fn(usize) + Sync), Job>(f) };
        s.job.store(&mut job, Ordering::Relaxed);
        s.done.store(0, Ordering::Relaxed);
        let epoch = s.epoch(Ordering::Relaxed).wrapping_add(1) & (u64::MAX >> EPOCH_SHIFT);
        // Publishes the job and the reset counter (SeqCst: paired with the sleepers' check
        // below, so a worker going to sleep either sees the new epoch or is counted in
        // `sleeping`).
        s.claim.store(
            epoch << EPOCH_SHIFT | (n_tasks as u64) << COUNT_SHIFT,
            Ordering::SeqCst,
        );
        if s.sleeping.load(Ordering::SeqCst) > 0 {
            let _g = s.lock.lock().unwrap_or_else(|e| e.into_inner());
            s.wake.notify_all();
        }
        s.work(epoch);
        if s.done.load(Ordering::Acquire) != n_tasks {
            let worked_until = Instant::now();
            let mut spins = 0u32;
            while s.done.load(Ordering::Acquire) != n_tasks {
                spins += 1;
                if spins < 1 << 14 {
                    std::hint::spin_loop();
                } else {
                    std::thread::yield_now();
                }
            }
            let now = Instant::now();
            contention.observe(now, worked_until - start, now - worked_until);
        }
        s.job.store(std::ptr::null_mut(), Ordering::Relaxed);
    }
}

fn worker(s: Arc<Shared>) {
    let mut seen = 0u64;
    loop {
        // Wait for a new epoch: spin first, then park.
        let start = Instant::now();
        let mut polls = 0u32;
        loop {
            if s.epoch(Ordering::Acquire) != seen || s.shutdown.load(Ordering::Acquire) {
                break;
            }
            polls += 1;
            if polls & 63 == 0 && start.elapsed() > SPIN {
                let mut g = s.lock.lock().unwrap_or_else(|e| e.into_inner());
                s.sleeping.fetch_add(1, Ordering::SeqCst);
                while s.epoch(Ordering::SeqCst) == seen && !s.shutdown.load(Ordering::SeqCst) {
                    g = s.wake.wait(g).unwrap_or_else(|e| e.into_inner());
                }
                s.sleeping.fetch_sub(1, Ordering::SeqCst);
                break;
            }
            std::hint::spin_loop();
        }
        if s.shutdown.load(Ordering::Acquire) {
            return;
        }
        // Late for this job or not, `work` only runs tasks it can still claim.
        seen = s.epoch(Ordering::Acquire);
        s.work(seen);
    }
}

impl Drop for ThreadPool {
    fn drop(&mut self) {
        self.shared.shutdown.store(true, Ordering::SeqCst);
        {
            let _g = self.shared.lock.lock().unwrap_or_else(|e| e.into_inner());
            self.shared.wake.notify_all();
        }
        for w in self.workers.drain(..) {
            let _ = w.join();
        }
    }
}

/// Default thread count: the physical cores (hyper-threads share the memory bandwidth that
/// decode is bound by, so they rarely help).
pub fn physical_cores() -> usize {
    let logical = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1);
    #[cfg(target_os = "linux")]
    {
        if let Ok(info) = std::fs::read_to_string("/proc/cpuinfo") {
            let mut cores = std::collections::HashSet::new();
            let mut phys = String::new();
            for line in info.lines() {
                if let Some(v) = line.strip_prefix("physical id") {
                    phys = v.trim_start_matches([' ', '\t', ':']).to_string();
                } else if let Some(v) = line.strip_prefix("core id") {
                    cores.insert((
                        phys.clone(),
                        v.trim_start_matches([' ', '\t', ':']).to_string(),
                    ));
                }
            }
            if !cores.is_empty() {
                return cores.len().min(logical);
            }
        }
    }
    logical
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn runs_every_task_once_and_borrows_the_stack() {
        let pool = ThreadPool::new(3);
        for n in [0usize, 1, 2, 7, 100] {
            let hits: Vec<AtomicUsize> = (0..n).map(|_| AtomicUsize::new(0)).collect();
            pool.run(n, |i| {
                hits[i].fetch_add(1, Ordering::Relaxed);
            });
            assert!(hits.iter().all(|h| h.load(Ordering::Relaxed) == 1));
        }
    }

    #[test]
    fn jobs_back_to_back_never_run_a_stale_task() {
        // Thousands of short jobs: a worker that arrives after its job ended must not run a
        // task of it, or of the next job under the old job's numbering.
        let pool = ThreadPool::new(4);
        for j in 0..5000usize {
            let n = 1 + j % 9;
            let hits: Vec<AtomicUsize> = (0..n).map(|_| AtomicUsize::new(0)).collect();
            pool.run(n, |i| {
                hits[i].fetch_add(j + 1, Ordering::Relaxed);
            });
            for h in &hits {
                assert_eq!(h.load(Ordering::Relaxed), j + 1, "job {j}");
            }
        }
    }

    #[test]
    fn lost_time_makes_the_caller_work_alone_for_a_while() {
        let ms = Duration::from_millis;
        let t0 = Instant::now();
        let mut c = Contention::new();
        // Imbalance (waiting less than twice the caller's own share) is not a stall.
        for i in 0..10 {
            c.observe(t0 + ms(i), ms(5), ms(9));
        }
        assert!(!c.solo(t0 + ms(10)));
        // Short scattered stalls: 1 ms in every 10 ms.
        for i in 0..30 {
            c.observe(t0 + ms(20 + 10 * i), Duration::from_micros(50), ms(1));
            assert!(!c.solo(t0 + ms(20 + 10 * i)));
        }
        // A quarter of a window lost.
        let t1 = t0 + ms(1000);
        for i in 0..7 {
            assert!(!c.solo(t1 + ms(5 * i)));
            c.observe(t1 + ms(5 * i), Duration::from_micros(50), ms(4));
        }
        assert!(c.solo(t1 + ms(40)));
        assert!(!c.solo(t1 + ms(40) + SOLO));
        assert_eq!(c.solo_spells, 1);
    }

    #[test]
    fn a_descheduled_worker_sends_the_pool_solo_and_results_stay_right() {
        // The worker stops mid-task for 10 ms (as a descheduled thread would), while the
        // caller's own tasks take 0.1 ms each.
        let pool = ThreadPool::new(2);
        let caller = std::thread::current().id();
        for _ in 0..50 {
            let hits: Vec<AtomicUsize> = (0..8).map(|_| AtomicUsize::new(0)).collect();
            pool.run(8, |i| {
                let ms = if std::thread::current().id() == caller {
                    0.1
                } else {
                    10.0
                };
                std::thread::sleep(Duration::from_secs_f64(ms / 1e3));
                hits[i].fetch_add(1, Ordering::Relaxed);
            });
            assert!(hits.iter().all(|h| h.load(Ordering::Relaxed) == 1));
            if pool.run_lock.lock().unwrap().solo_spells > 0 {
                return;
            }
        }
        panic!("the pool did not notice its stalled worker");
    }

    #[test]
    fn workers_park_and_wake_up_again() {
        let pool = ThreadPool::new(2);
        let sum = AtomicUsize::new(0);
        pool.run(10, |i| {
            sum.fetch_add(i, Ordering::Relaxed);
        });
        std::thread::sleep(Duration::from_millis(20)); // past SPIN: the worker parks
        assert_eq!(pool.shared.sleeping.load(Ordering::SeqCst), 1);
        pool.run(10, |i| {
            sum.fetch_add(i, Ordering::Relaxed);
        });
        assert_eq!(sum.load(Ordering::Relaxed), 90);
    }
}
