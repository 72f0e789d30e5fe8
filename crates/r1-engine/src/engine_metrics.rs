//! What the engine measures about itself for monitoring: request timings (queue, prefill,
//! decode, time to first token, inter-token latency, end to end), step sizes, outcomes and
//! per-priority load. The engine thread updates these in place (plain numbers, no locks) and
//! publishes a copy with every [`EngineStats`](crate::engine::EngineStats) snapshot; the HTTP
//! side renders them (Prometheus text at `/metrics`).
//!
//! Request timings follow vLLM's definitions so dashboards carry over: queue time is arrival
//! to first scheduled step, prefill is first scheduled step to first token, decode is first
//! token to last token, TTFT and end-to-end are measured from arrival (the `submit` call).

use std::time::Instant;

/// Seconds buckets for request-level latencies (TTFT, queue, prefill, decode, end to end).
pub const LATENCY_BUCKETS: &[f64] = &[
    0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0, 20.0, 40.0,
    80.0, 160.0, 640.0,
];
/// Seconds buckets for the gap between two tokens of one sequence.
pub const INTER_TOKEN_BUCKETS: &[f64] = &[
    0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 0.75, 1.0, 2.5, 5.0,
    10.0,
];
/// Sequences in one engine step.
pub const BATCH_SIZE_BUCKETS: &[f64] = &[1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0];
/// Tokens (prompt chunks plus decodes) in one engine step.
pub const STEP_TOKEN_BUCKETS: &[f64] = &[
    1.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 512.0, 1024.0, 2048.0, 4096.0, 8192.0,
];

/// A histogram with fixed upper bounds (Prometheus semantics: a value lands in the first
/// bucket whose bound is >= it; values above the last bound only count in `+Inf`).
#[derive(Clone, Debug, PartialEq)]
pub struct Histogram {
    bounds: &'static [f64],
    /// Per-bucket (not cumulative) counts; the last one is the `+Inf` overflow.
    counts: Vec<u64>,
    sum: f64,
    count: u64,
}

impl Histogram {
    pub fn new(bounds: &'static [f64]) -> Self {
        Histogram {
            bounds,
            counts: vec![0; bounds.len() + 1],
            sum: 0.0,
            count: 0,
        }
    }

    pub fn observe(&mut self, v: f64) {
        let i = self.bounds.partition_point(|&b| b < v);
        self.counts[i] += 1;
        self.sum += v;
        self.count += 1;
    }

    pub fn bounds(&self) -> &'static [f64] {
        self.bounds
    }

    /// Cumulative counts per bound, then the `+Inf` total (`bounds().len() + 1` values).
    pub fn cumulative(&self) -> Vec<u64> {
        self.counts
            .iter()
            .scan(0u64, |acc, &c| {
                *acc += c;
                Some(*acc)
            })
            .collect()
    }

    pub fn sum(&self) -> f64 {
        self.sum
    }

    pub fn count(&self) -> u64 {
        self.count
    }
}

/// Sequences that ended, by why (one count per choice; `n` > 1 counts each).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct FinishCounts {
    pub stop: u64,
    pub length: u64,
    /// Cancelled: the client went away, or the server drained.
    pub abort: u64,
}

/// Sequences running and waiting at one priority (the scheduler's `priority`).
#[derive(Clone, Debug, PartialEq)]
pub struct PriorityLoad {
    pub priority: i32,
    pub running: usize,
    pub waiting: usize,
}

/// The engine's monitoring counters and histograms (cumulative since start).
#[derive(Clone, Debug, PartialEq)]
pub struct EngineMetrics {
    /// Requests the engine accepted into its queue.
    pub requests_arrived: u64,
    /// Requests the engine refused (too long for the cache, bad token ids, ...).
    pub requests_rejected: u64,
    /// Requests whose every sequence ended (what completed, for capacity estimates).
    pub requests_completed: u64,
    pub finished: FinishCounts,
    /// Seconds spent inside model forward passes (utilisation = its rate).
    pub busy_seconds: f64,
    pub time_to_first_token: Histogram,
    pub inter_token_latency: Histogram,
    pub e2e_latency: Histogram,
    pub queue_time: Histogram,
    pub prefill_time: Histogram,
    pub decode_time: Histogram,
    /// Sequences per step.
    pub batch_size: Histogram,
    /// Tokens per step.
    pub step_tokens: Histogram,
    /// Current load per priority, highest priority first (refreshed every step).
    pub by_priority: Vec<PriorityLoad>,
}

impl Default for EngineMetrics {
    fn default() -> Self {
        EngineMetrics {
            requests_arrived: 0,
            requests_rejected: 0,
            requests_completed: 0,
            finished: FinishCounts::default(),
            busy_seconds: 0.0,
            time_to_first_token: Histogram::new(LATENCY_BUCKETS),
            inter_token_latency: Histogram::new(INTER_TOKEN_BUCKETS),
            e2e_latency: Histogram::new(LATENCY_BUCKETS),
            queue_time: Histogram::new(LATENCY_BUCKETS),
            prefill_time: Histogram::new(LATENCY_BUCKETS),
            decode_time: Histogram::new(LATENCY_BUCKETS),
            batch_size: Histogram::new(BATCH_SIZE_BUCKETS),
            step_tokens: Histogram::new(STEP_TOKEN_BUCKETS),
            by_priority: Vec::new(),
        }
    }
}

/// When one request passed each milestone (kept by the engine per request).
#[derive(Clone, Copy, Debug)]
pub struct RequestTimes {
    pub arrived: Instant,
    pub scheduled: Option<Instant>,
    pub first_token: Option<Instant>,
}

impl RequestTimes {
    pub fn new(arrived: Instant) -> Self {
        RequestTimes {
            arrived,
            scheduled: None,
            first_token: None,
        }
    }

    /// Seconds from arrival to the first step (`None` before it).
    pub fn queued_secs(&self) -> Option<f64> {
        self.scheduled.map(|at| secs(self.arrived, at))
    }

    /// Seconds from arrival to the first token (`None` before it).
    pub fn ttft_secs(&self) -> Option<f64> {
        self.first_token.map(|at| secs(self.arrived, at))
    }
}

impl EngineMetrics {
    /// The request's first step started at `at`.
    pub fn on_scheduled(&mut self, t: &mut RequestTimes, at: Instant) {
        if t.scheduled.is_none() {
            t.scheduled = Some(at);
            self.queue_time.observe(secs(t.arrived, at));
        }
    }

    /// A token of one sequence was sampled at `now`; `last` is that sequence's previous one.
    /// Returns whether it was the request's first token.
    pub fn on_token(&mut self, t: &mut RequestTimes, last: Option<Instant>, now: Instant) -> bool {
        let first = t.first_token.is_none();
        if first {
            t.first_token = Some(now);
            self.time_to_first_token.observe(secs(t.arrived, now));
            self.prefill_time
                .observe(secs(t.scheduled.unwrap_or(t.arrived), now));
        }
        if let Some(prev) = last {
            self.inter_token_latency.observe(secs(prev, now));
        }
        first
    }

    /// Every sequence of the request has ended.
    pub fn on_completed(&mut self, t: &RequestTimes, now: Instant) {
        self.requests_completed += 1;
        self.e2e_latency.observe(secs(t.arrived, now));
        self.decode_time
            .observe(secs(t.first_token.unwrap_or(now), now));
    }

    /// One step ran `seqs` sequences and `tokens` tokens for `busy` seconds.
    pub fn on_step(&mut self, seqs: usize, tokens: usize, busy: f64) {
        self.batch_size.observe(seqs as f64);
        self.step_tokens.observe(tokens as f64);
        self.busy_seconds += busy;
    }
}

fn secs(from: Instant, to: Instant) -> f64 {
    to.saturating_duration_since(from).as_secs_f64()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn histogram_buckets_follow_prometheus_le_semantics() {
        let mut h = Histogram::new(&[1.0, 2.0, 4.0]);
        for v in [0.5, 1.0, 1.5, 4.0, 9.0] {
            h.observe(v);
        }
        // le=1 holds 0.5 and 1.0 (bounds are inclusive); 9.0 is only in +Inf.
        assert_eq!(h.cumulative(), vec![2, 3, 4, 5]);
        assert_eq!(h.count(), 5);
        assert!((h.sum() - 16.0).abs() < 1e-9);
    }

    #[test]
    fn request_milestones_feed_the_right_histograms() {
        let mut m = EngineMetrics::default();
        let t0 = Instant::now();
        let mut t = RequestTimes::new(t0);
        m.on_scheduled(&mut t, t0 + Duration::from_millis(30));
        m.on_scheduled(&mut t, t0 + Duration::from_millis(90)); // a recompute: not a new queue wait
        let first = t0 + Duration::from_millis(130);
        m.on_token(&mut t, None, first);
        m.on_token(&mut t, Some(first), first + Duration::from_millis(20));
        m.on_completed(&t, first + Duration::from_millis(20));
        assert_eq!(m.queue_time.count(), 1);
        assert!((m.queue_time.sum() - 0.030).abs() < 1e-6);
        assert!((m.prefill_time.sum() - 0.100).abs() < 1e-6);
        assert!((m.time_to_first_token.sum() - 0.130).abs() < 1e-6);
        assert_eq!(m.inter_token_latency.count(), 1);
        assert!((m.inter_token_latency.sum() - 0.020).abs() < 1e-6);
        assert!((m.e2e_latency.sum() - 0.150).abs() < 1e-6);
        assert!((m.decode_time.sum() - 0.020).abs() < 1e-6);
        assert_eq!(m.requests_completed, 1);
    }
}
