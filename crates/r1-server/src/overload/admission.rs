//! Admission control: a bounded waiting queue per priority class. A request holds a
//! [`Ticket`] from arrival until the engine admits it (or it gives up); a full class queue
//! refuses new arrivals at once with a `Retry-After` computed from the rate at which the
//! queue has been draining.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use std::future::Future;

use tokio::sync::Notify;

/// Admissions older than this do not count toward the drain rate.
pub const DRAIN_WINDOW: Duration = Duration::from_secs(30);
/// Retry-After when no drain has been measured yet.
pub const DEFAULT_RETRY_AFTER_SECS: u64 = 5;
/// Retry-After never says more than this.
pub const MAX_RETRY_AFTER_SECS: u64 = 60;

/// Admission times within the last [`DRAIN_WINDOW`]: the measured drain rate.
#[derive(Debug)]
pub struct DrainMeter {
    started: Instant,
    events: VecDeque<Instant>,
}

impl DrainMeter {
    pub fn new(now: Instant) -> Self {
        DrainMeter {
            started: now,
            events: VecDeque::new(),
        }
    }

    pub fn record(&mut self, now: Instant) {
        self.events.push_back(now);
        self.prune(now);
    }

    fn prune(&mut self, now: Instant) {
        while let Some(&t) = self.events.front() {
            if now.saturating_duration_since(t) > DRAIN_WINDOW {
                self.events.pop_front();
            } else {
                break;
            }
        }
    }

    /// Admissions per second over the window (or since the meter started, if sooner, but
    /// over at least one second); `None` when nothing was admitted in the window.
    pub fn rate(&mut self, now: Instant) -> Option<f64> {
        self.prune(now);
        if self.events.is_empty() {
            return None;
        }
        let span = now
            .saturating_duration_since(self.started)
            .min(DRAIN_WINDOW)
            .max(Duration::from_secs(1));
        Some(self.events.len() as f64 / span.as_secs_f64())
    }
}

/// Seconds a refused client should wait: the time the queue ahead of it takes to drain at
/// the measured rate, at least 1 s and at most [`MAX_RETRY_AFTER_SECS`].
pub fn retry_after_secs(queued: usize, drain_per_sec: Option<f64>) -> u64 {
    match drain_per_sec {
        Some(r) if r > 0.0 && r.is_finite() => {
            let secs = (queued.max(1) as f64 / r).ceil();
            (secs as u64).clamp(1, MAX_RETRY_AFTER_SECS)
        }
        _ => DEFAULT_RETRY_AFTER_SECS,
    }
}

/// One class's waiting queue (the count of tickets not yet admitted).
#[derive(Debug)]
pub struct ClassQueue {
    pub name: String,
    /// `None`: unbounded.
    pub cap: Option<usize>,
    queued: AtomicUsize,
    drain: Mutex<DrainMeter>,
    /// Refusals because the queue was full.
    pub refused: AtomicU64,
    /// Requests that waited longer than the class's `max_queue_wait`.
    pub timed_out: AtomicU64,
    pub admitted: AtomicU64,
    /// Woken whenever a place is given back (wait-mode requests wait on it).
    pub freed: Notify,
}

impl ClassQueue {
    pub fn new(name: &str, cap: Option<usize>) -> Arc<Self> {
        Arc::new(ClassQueue {
            name: name.to_string(),
            cap,
            queued: AtomicUsize::new(0),
            drain: Mutex::new(DrainMeter::new(Instant::now())),
            refused: AtomicU64::new(0),
            timed_out: AtomicU64::new(0),
            admitted: AtomicU64::new(0),
            freed: Notify::new(),
        })
    }

    pub fn queued(&self) -> usize {
        self.queued.load(Ordering::SeqCst)
    }

    /// Give a place back and wake the requests waiting for one.
    fn release(&self) {
        self.queued.fetch_sub(1, Ordering::SeqCst);
        self.freed.notify_waiters();
    }

    /// Take a place in the queue, or `None` when it is full.
    pub fn try_enter(self: &Arc<Self>, deadline: Option<Instant>) -> Option<Arc<Ticket>> {
        let mut cur = self.queued.load(Ordering::SeqCst);
        loop {
            if self.cap.is_some_and(|c| cur >= c) {
                return None;
            }
            match self.queued.compare_exchange_weak(
                cur,
                cur + 1,
                Ordering::SeqCst,
                Ordering::SeqCst,
            ) {
                Ok(_) => break,
                Err(now) => cur = now,
            }
        }
        Some(Arc::new(Ticket {
            queue: self.clone(),
            released: AtomicBool::new(false),
            deadline,
        }))
    }

    /// The measured drain rate (admissions per second).
    pub fn drain_rate(&self) -> Option<f64> {
        self.drain
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .rate(Instant::now())
    }

    /// Retry-After for a refusal now.
    pub fn retry_after(&self) -> u64 {
        retry_after_secs(self.queued(), self.drain_rate())
    }
}

/// A place in a class queue, from arrival to admission by the engine. Dropping it without
/// [`Ticket::admitted`] (an error, a cancelled request) gives the place back too.
#[derive(Debug)]
pub struct Ticket {
    queue: Arc<ClassQueue>,
    released: AtomicBool,
    /// When the request stops waiting (answered 503) if the engine has not admitted it.
    pub deadline: Option<Instant>,
}

impl Ticket {
    /// The engine admitted the request: leave the queue and count toward the drain rate.
    pub fn admitted(&self) {
        if !self.released.swap(true, Ordering::SeqCst) {
            self.queue.release();
            self.queue.admitted.fetch_add(1, Ordering::Relaxed);
            self.queue
                .drain
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .record(Instant::now());
        }
    }

    /// The request waited past its deadline.
    pub fn timed_out(&self) {
        self.queue.timed_out.fetch_add(1, Ordering::Relaxed);
    }

    pub fn class(&self) -> &str {
        &self.queue.name
    }

    pub fn queue(&self) -> &Arc<ClassQueue> {
        &self.queue
    }
}

impl Drop for Ticket {
    fn drop(&mut self) {
        if !self.released.swap(true, Ordering::SeqCst) {
            self.queue.release();
        }
    }
}

/// Wait for a place in `queue` until `limit`, or until `gone` completes (the client left).
/// No polling: the queue's [`tokio::sync::Notify`] wakes the waiters whenever a place is
/// given back, and they race for it with `try_enter` (the queue's cap is never exceeded).
pub async fn acquire(
    queue: &Arc<ClassQueue>,
    limit: Instant,
    deadline: Option<Instant>,
    gone: impl Future<Output = ()>,
) -> Option<Arc<Ticket>> {
    let limit = tokio::time::Instant::from_std(limit);
    tokio::pin!(gone);
    loop {
        // Registered before looking, so a place freed in between is not missed.
        let freed = queue.freed.notified();
        tokio::pin!(freed);
        freed.as_mut().enable();
        if let Some(t) = queue.try_enter(deadline) {
            return Some(t);
        }
        tokio::select! {
            _ = &mut freed => {}
            _ = tokio::time::sleep_until(limit) => return None,
            _ = &mut gone => return None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_full_queue_refuses_and_places_come_back() {
        let q = ClassQueue::new("normal", Some(2));
        let a = q.try_enter(None).unwrap();
        let b = q.try_enter(None).unwrap();
        assert_eq!(q.queued(), 2);
        assert!(q.try_enter(None).is_none());
        a.admitted();
        a.admitted(); // idempotent
        assert_eq!(q.queued(), 1);
        drop(a); // already released: no double decrement
        assert_eq!(q.queued(), 1);
        let c = q.try_enter(None).unwrap();
        assert!(q.try_enter(None).is_none());
        drop(b); // abandoned: place back, no drain counted
        drop(c);
        assert_eq!(q.queued(), 0);
        assert_eq!(q.admitted.load(Ordering::Relaxed), 1);
    }

    #[test]
    fn unbounded_queue_never_refuses() {
        let q = ClassQueue::new("batch", None);
        let t: Vec<_> = (0..1000).map(|_| q.try_enter(None).unwrap()).collect();
        assert_eq!(q.queued(), 1000);
        drop(t);
        assert_eq!(q.queued(), 0);
    }

    #[test]
    fn concurrent_entries_never_exceed_the_cap() {
        let q = ClassQueue::new("vip", Some(5));
        let got: Vec<_> = std::thread::scope(|s| {
            let hs: Vec<_> = (0..8)
                .map(|_| {
                    s.spawn(|| {
                        (0..100)
                            .filter_map(|_| q.try_enter(None))
                            .collect::<Vec<_>>()
                    })
                })
                .collect();
            hs.into_iter().flat_map(|h| h.join().unwrap()).collect()
        });
        assert_eq!(got.len(), 5);
        assert_eq!(q.queued(), 5);
    }

    #[test]
    fn drain_rate_counts_the_window() {
        let t0 = Instant::now();
        let mut m = DrainMeter::new(t0);
        assert_eq!(m.rate(t0), None);
        for i in 0..10 {
            m.record(t0 + Duration::from_millis(500 * i));
        }
        // 10 admissions in the first 5 s: 2/s.
        let r = m.rate(t0 + Duration::from_secs(5)).unwrap();
        assert!((r - 2.0).abs() < 1e-9, "{r}");
        // A young meter still divides by at least one second.
        let mut y = DrainMeter::new(t0);
        y.record(t0);
        assert_eq!(y.rate(t0 + Duration::from_millis(10)), Some(1.0));
        // Old admissions fall out of the window.
        assert_eq!(m.rate(t0 + Duration::from_secs(40)), None);
    }

    #[test]
    fn retry_after_arithmetic() {
        // 8 queued draining at 2/s: 4 s.
        assert_eq!(retry_after_secs(8, Some(2.0)), 4);
        // Rounds up: 5 at 2/s is 2.5 s -> 3.
        assert_eq!(retry_after_secs(5, Some(2.0)), 3);
        // Fast drain: at least 1 s.
        assert_eq!(retry_after_secs(3, Some(100.0)), 1);
        // An empty queue behaves like one ahead.
        assert_eq!(retry_after_secs(0, Some(0.5)), 2);
        // Slow drain is capped.
        assert_eq!(retry_after_secs(1000, Some(0.1)), MAX_RETRY_AFTER_SECS);
        // Nothing measured: the default.
        assert_eq!(retry_after_secs(4, None), DEFAULT_RETRY_AFTER_SECS);
        assert_eq!(retry_after_secs(4, Some(0.0)), DEFAULT_RETRY_AFTER_SECS);
        assert_eq!(
            retry_after_secs(4, Some(f64::NAN)),
            DEFAULT_RETRY_AFTER_SECS
        );
    }

    // The clock is paused: a waiter that polled on a timer would move it; one woken by the
    // queue does not.
    #[tokio::test(start_paused = true)]
    async fn a_waiter_gets_a_freed_place_without_polling() {
        let q = ClassQueue::new("normal", Some(1));
        let held = q.try_enter(None).unwrap();
        let t0 = tokio::time::Instant::now();
        let limit = Instant::now() + Duration::from_secs(30);
        let waiter = tokio::spawn({
            let q = q.clone();
            async move { acquire(&q, limit, None, std::future::pending()).await }
        });
        tokio::task::yield_now().await;
        assert!(!waiter.is_finished());
        drop(held);
        let got = waiter.await.unwrap();
        assert!(got.is_some());
        assert_eq!(q.queued(), 1);
        assert_eq!(
            tokio::time::Instant::now(),
            t0,
            "the waiter slept on a timer"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_waiter_gives_up_at_its_limit_or_when_the_client_leaves() {
        let q = ClassQueue::new("normal", Some(1));
        let _held = q.try_enter(None).unwrap();
        let t0 = tokio::time::Instant::now();
        let limit = Instant::now() + Duration::from_secs(2);
        assert!(acquire(&q, limit, None, std::future::pending())
            .await
            .is_none());
        let waited = tokio::time::Instant::now() - t0;
        assert!(waited >= Duration::from_secs(2) && waited < Duration::from_millis(2100));
        let far = Instant::now() + Duration::from_secs(3600);
        assert!(acquire(&q, far, None, std::future::ready(()))
            .await
            .is_none());
        assert_eq!(q.queued(), 1);
    }
}
