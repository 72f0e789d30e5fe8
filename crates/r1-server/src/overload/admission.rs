//! Admission control: one priority queue for every class. A request takes a place in its
//! class (bounded by the class's `max_queue`) and holds it as a [`Ticket`] from arrival until
//! the engine admits it (or it gives up). When the class is full, a request is refused at
//! once (429 with a `Retry-After` from the rate at which the class has been draining), or, in
//! wait mode, joins the queue's one ordered list of waiters: places given back go to the
//! waiters by class priority, then arrival, handed over through a tokio `oneshot` (no
//! polling, no thundering herd).

use std::cmp::Reverse;
use std::collections::{BTreeMap, VecDeque};
use std::future::Future;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use tokio::sync::oneshot;

use super::classes::ClassConfig;

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

/// A class's counters.
#[derive(Debug)]
struct ClassCounters {
    name: String,
    /// `None`: unbounded.
    cap: Option<usize>,
    priority: i32,
    drain: Mutex<DrainMeter>,
    refused: AtomicU64,
    timed_out: AtomicU64,
    admitted: AtomicU64,
}

/// Waiters in the order places go to them: higher class priority first, then arrival.
type WaitKey = (Reverse<i32>, u64);

struct Waiter {
    class: usize,
    deadline: Option<Instant>,
    tx: oneshot::Sender<Arc<Ticket>>,
}

#[derive(Default)]
struct Places {
    /// Places held per class.
    held: Vec<usize>,
    waiters: BTreeMap<WaitKey, Waiter>,
    next_seq: u64,
}

/// The one admission queue: every class's places and every waiter.
pub struct AdmissionQueue {
    classes: Vec<ClassCounters>,
    places: Mutex<Places>,
}

impl std::fmt::Debug for AdmissionQueue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AdmissionQueue")
            .field("classes", &self.classes)
            .finish_non_exhaustive()
    }
}

impl AdmissionQueue {
    pub fn new(classes: &[ClassConfig]) -> Arc<Self> {
        let now = Instant::now();
        Arc::new(AdmissionQueue {
            classes: classes
                .iter()
                .map(|c| ClassCounters {
                    name: c.name.clone(),
                    cap: c.max_queue,
                    priority: c.priority,
                    drain: Mutex::new(DrainMeter::new(now)),
                    refused: AtomicU64::new(0),
                    timed_out: AtomicU64::new(0),
                    admitted: AtomicU64::new(0),
                })
                .collect(),
            places: Mutex::new(Places {
                held: vec![0; classes.len()],
                ..Places::default()
            }),
        })
    }

    fn lock(&self) -> MutexGuard<'_, Places> {
        self.places.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The class at `idx` (as in `Classes::all`).
    pub fn class(self: &Arc<Self>, idx: usize) -> ClassQueue {
        ClassQueue {
            queue: self.clone(),
            idx,
        }
    }

    /// Places held in class `idx`.
    pub fn held(&self, idx: usize) -> usize {
        self.lock().held[idx]
    }

    /// Requests waiting for a place, over all classes.
    pub fn waiting(&self) -> usize {
        self.lock().waiters.len()
    }

    fn has_room(&self, p: &Places, idx: usize) -> bool {
        self.classes[idx].cap.is_none_or(|c| p.held[idx] < c)
    }

    fn ticket(self: &Arc<Self>, idx: usize, deadline: Option<Instant>) -> Arc<Ticket> {
        Arc::new(Ticket {
            queue: self.clone(),
            class: idx,
            released: AtomicBool::new(false),
            deadline,
        })
    }

    /// A place in class `idx` now, or `None` when the class is full.
    fn try_enter(self: &Arc<Self>, idx: usize, deadline: Option<Instant>) -> Option<Arc<Ticket>> {
        let mut p = self.lock();
        if !self.has_room(&p, idx) {
            return None;
        }
        p.held[idx] += 1;
        drop(p);
        Some(self.ticket(idx, deadline))
    }

    /// Give a place of class `idx` back, and hand free places to the waiters in order.
    fn release(self: &Arc<Self>, idx: usize) {
        let mut p = self.lock();
        p.held[idx] = p.held[idx].saturating_sub(1);
        let mut grants = Vec::new();
        let keys: Vec<WaitKey> = p.waiters.keys().copied().collect();
        for k in keys {
            let class = p.waiters[&k].class;
            if self.has_room(&p, class) {
                let w = p.waiters.remove(&k).expect("the key was just listed");
                p.held[class] += 1;
                grants.push(w);
            }
        }
        drop(p);
        for w in grants {
            // A waiter that has gone drops the ticket it was sent: the place comes back here.
            let _ = w.tx.send(self.ticket(w.class, w.deadline));
        }
    }

    /// Wait for a place in class `idx` until `limit`, or until `gone` completes (the client
    /// left). Places are handed over in priority, then arrival, order.
    async fn wait(
        self: &Arc<Self>,
        idx: usize,
        limit: Instant,
        deadline: Option<Instant>,
        gone: impl Future<Output = ()>,
    ) -> Option<Arc<Ticket>> {
        let (tx, mut rx) = oneshot::channel();
        let key = {
            let mut p = self.lock();
            if self.has_room(&p, idx) {
                p.held[idx] += 1;
                drop(p);
                return Some(self.ticket(idx, deadline));
            }
            let key = (Reverse(self.classes[idx].priority), p.next_seq);
            p.next_seq += 1;
            p.waiters.insert(
                key,
                Waiter {
                    class: idx,
                    deadline,
                    tx,
                },
            );
            key
        };
        // Leaves the list however this future ends (a ticket sent meanwhile is dropped with
        // the receiver, which gives its place back).
        struct Leave<'a>(&'a AdmissionQueue, WaitKey);
        impl Drop for Leave<'_> {
            fn drop(&mut self) {
                self.0.lock().waiters.remove(&self.1);
            }
        }
        let _leave = Leave(self, key);
        let limit = tokio::time::Instant::from_std(limit);
        tokio::select! {
            t = &mut rx => t.ok(),
            _ = tokio::time::sleep_until(limit) => rx.try_recv().ok(),
            _ = gone => None,
        }
    }

    fn counters(&self, idx: usize) -> &ClassCounters {
        &self.classes[idx]
    }
}

/// One class of the admission queue.
#[derive(Clone, Debug)]
pub struct ClassQueue {
    queue: Arc<AdmissionQueue>,
    idx: usize,
}

impl ClassQueue {
    pub fn name(&self) -> &str {
        &self.queue.counters(self.idx).name
    }

    /// Places held (requests admitted here and not yet by the engine).
    pub fn queued(&self) -> usize {
        self.queue.held(self.idx)
    }

    /// Take a place, or `None` when the class is full.
    pub fn try_enter(&self, deadline: Option<Instant>) -> Option<Arc<Ticket>> {
        self.queue.try_enter(self.idx, deadline)
    }

    /// Wait for a place (wait mode): see [`AdmissionQueue`]. `None` at `limit` or when
    /// `gone` completes.
    pub async fn wait(
        &self,
        limit: Instant,
        deadline: Option<Instant>,
        gone: impl Future<Output = ()>,
    ) -> Option<Arc<Ticket>> {
        self.queue.wait(self.idx, limit, deadline, gone).await
    }

    /// A refusal because the class was full.
    pub fn count_refused(&self) {
        self.queue
            .counters(self.idx)
            .refused
            .fetch_add(1, Ordering::Relaxed);
    }

    /// A request that waited past its class's `max_queue_wait`.
    pub fn count_timed_out(&self) {
        self.queue
            .counters(self.idx)
            .timed_out
            .fetch_add(1, Ordering::Relaxed);
    }

    pub fn admitted(&self) -> u64 {
        self.queue
            .counters(self.idx)
            .admitted
            .load(Ordering::Relaxed)
    }

    pub fn refused(&self) -> u64 {
        self.queue
            .counters(self.idx)
            .refused
            .load(Ordering::Relaxed)
    }

    pub fn timed_out(&self) -> u64 {
        self.queue
            .counters(self.idx)
            .timed_out
            .load(Ordering::Relaxed)
    }

    /// The measured drain rate (admissions per second).
    pub fn drain_rate(&self) -> Option<f64> {
        self.queue
            .counters(self.idx)
            .drain
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .rate(Instant::now())
    }

    /// Retry-After for a refusal now.
    pub fn retry_after(&self) -> u64 {
        retry_after_secs(self.queued(), self.drain_rate())
    }
}

/// A place in a class, from arrival to admission by the engine. Dropping it without
/// [`Ticket::admitted`] (an error, a cancelled request) gives the place back too.
pub struct Ticket {
    queue: Arc<AdmissionQueue>,
    class: usize,
    released: AtomicBool,
    /// When the request stops waiting (answered 503) if the engine has not admitted it.
    pub deadline: Option<Instant>,
}

impl std::fmt::Debug for Ticket {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ticket")
            .field("class", &self.class())
            .field("deadline", &self.deadline)
            .finish()
    }
}

impl Ticket {
    /// The engine admitted the request: leave the queue and count toward the drain rate.
    pub fn admitted(&self) {
        if !self.released.swap(true, Ordering::SeqCst) {
            let c = self.queue.counters(self.class);
            c.admitted.fetch_add(1, Ordering::Relaxed);
            c.drain
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .record(Instant::now());
            self.queue.release(self.class);
        }
    }

    /// The request waited past its deadline.
    pub fn timed_out(&self) {
        self.queue
            .counters(self.class)
            .timed_out
            .fetch_add(1, Ordering::Relaxed);
    }

    pub fn class(&self) -> &str {
        &self.queue.counters(self.class).name
    }
}

impl Drop for Ticket {
    fn drop(&mut self) {
        if !self.released.swap(true, Ordering::SeqCst) {
            self.queue.release(self.class);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::overload::classes::default_classes;

    fn one_class(cap: Option<usize>) -> ClassQueue {
        let mut c = ClassConfig::new("normal", 0);
        c.max_queue = cap;
        AdmissionQueue::new(&[c]).class(0)
    }

    #[test]
    fn a_full_class_refuses_and_places_come_back() {
        let q = one_class(Some(2));
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
        assert_eq!(q.admitted(), 1);
    }

    #[test]
    fn unbounded_class_never_refuses() {
        let q = one_class(None);
        let t: Vec<_> = (0..1000).map(|_| q.try_enter(None).unwrap()).collect();
        assert_eq!(q.queued(), 1000);
        drop(t);
        assert_eq!(q.queued(), 0);
    }

    #[test]
    fn concurrent_entries_never_exceed_the_cap() {
        let q = one_class(Some(5));
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

    // The clock is paused: a waiter that polled on a timer would move it; one handed its
    // place by the queue does not.
    #[tokio::test(start_paused = true)]
    async fn a_waiter_gets_a_freed_place_without_polling() {
        let q = one_class(Some(1));
        let held = q.try_enter(None).unwrap();
        let t0 = tokio::time::Instant::now();
        let limit = Instant::now() + Duration::from_secs(30);
        let waiter = tokio::spawn({
            let q = q.clone();
            async move { q.wait(limit, None, std::future::pending()).await }
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
        let q = one_class(Some(1));
        let _held = q.try_enter(None).unwrap();
        let t0 = tokio::time::Instant::now();
        let limit = Instant::now() + Duration::from_secs(2);
        assert!(q.wait(limit, None, std::future::pending()).await.is_none());
        let waited = tokio::time::Instant::now() - t0;
        assert!(waited >= Duration::from_secs(2) && waited < Duration::from_millis(2100));
        let far = Instant::now() + Duration::from_secs(3600);
        assert!(q.wait(far, None, std::future::ready(())).await.is_none());
        assert_eq!(q.queued(), 1);
        assert_eq!(q.queue.waiting(), 0, "waiters that gave up left the list");
    }

    // Freed places go to waiters in arrival order within a class, and a waiter of a higher
    // class is served before an earlier waiter of a lower one when both classes have room.
    #[tokio::test(start_paused = true)]
    async fn places_go_to_waiters_by_priority_then_arrival() {
        let mut classes = default_classes(); // vip 100, normal 0, batch -100
        for c in &mut classes {
            c.max_queue = Some(1);
        }
        let q = AdmissionQueue::new(&classes);
        let (vip, normal) = (q.class(0), q.class(1));
        let far = Instant::now() + Duration::from_secs(3600);
        let held_normal = normal.try_enter(None).unwrap();
        let held_vip = vip.try_enter(None).unwrap();
        let order = Arc::new(Mutex::new(Vec::new()));
        let mut tasks = Vec::new();
        for (name, class) in [("n1", &normal), ("v1", &vip), ("n2", &normal)] {
            let (class, order) = (class.clone(), order.clone());
            tasks.push(tokio::spawn(async move {
                let t = class.wait(far, None, std::future::pending()).await.unwrap();
                order.lock().unwrap().push(name);
                t.admitted();
            }));
            tokio::task::yield_now().await;
        }
        assert_eq!(q.waiting(), 3);
        drop(held_normal);
        drop(held_vip);
        for t in tasks {
            t.await.unwrap();
        }
        let order = order.lock().unwrap().clone();
        assert_eq!(order.len(), 3);
        // n1 came before n2, whatever v1 did.
        let pos = |n| order.iter().position(|x| *x == n).unwrap();
        assert!(pos("n1") < pos("n2"), "{order:?}");
        assert_eq!(q.waiting(), 0);
        assert_eq!(normal.queued() + vip.queued(), 0);
    }
}
