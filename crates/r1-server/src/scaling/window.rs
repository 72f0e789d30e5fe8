//! Rates over a sliding window of cumulative counters: arrivals per second (QPS), the busy
//! fraction of the engine, and completions per busy second, the measured capacity of one
//! replica (how many requests it completes per second of compute, batching included).

use std::collections::VecDeque;

/// Cumulative counters at one moment (`at` in seconds on any monotonic clock).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Sample {
    pub at: f64,
    pub arrived: u64,
    pub completed: u64,
    pub busy_seconds: f64,
}

#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Rates {
    pub qps: f64,
    pub busy_fraction: f64,
    /// Completions per busy second, when the window held enough work to say.
    pub capacity: Option<f64>,
}

/// Capacity is only measured from a window with at least this much compute in it.
const MIN_BUSY_SECONDS: f64 = 1.0;

#[derive(Clone, Debug)]
pub struct RateWindow {
    span: f64,
    samples: VecDeque<Sample>,
}

impl RateWindow {
    pub fn new(span_seconds: f64) -> Self {
        RateWindow {
            span: span_seconds,
            samples: VecDeque::new(),
        }
    }

    /// Add a sample and drop those older than the span (the newest one at least `span` old
    /// stays as the window's start).
    pub fn push(&mut self, s: Sample) {
        self.samples.push_back(s);
        while self.samples.len() > 2 && s.at - self.samples[1].at >= self.span {
            self.samples.pop_front();
        }
    }

    /// Rates between the oldest and newest sample (`None` until two samples exist).
    pub fn rates(&self) -> Option<Rates> {
        let (a, b) = (self.samples.front()?, self.samples.back()?);
        let dt = b.at - a.at;
        if dt <= 0.0 {
            return None;
        }
        let busy = (b.busy_seconds - a.busy_seconds).max(0.0);
        let completed = b.completed.saturating_sub(a.completed);
        Some(Rates {
            qps: b.arrived.saturating_sub(a.arrived) as f64 / dt,
            busy_fraction: (busy / dt).min(1.0),
            capacity: (busy >= MIN_BUSY_SECONDS && completed > 0).then(|| completed as f64 / busy),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(at: f64, arrived: u64, completed: u64, busy: f64) -> Sample {
        Sample {
            at,
            arrived,
            completed,
            busy_seconds: busy,
        }
    }

    #[test]
    fn rates_cover_the_span_and_forget_older_samples() {
        let mut w = RateWindow::new(20.0);
        assert_eq!(w.rates(), None);
        w.push(s(0.0, 0, 0, 0.0));
        w.push(s(10.0, 100, 0, 0.0)); // a burst long ago
        w.push(s(20.0, 110, 40, 8.0));
        w.push(s(30.0, 120, 80, 16.0));
        // The window now starts at t=10: 20 arrivals in 20 s.
        let r = w.rates().unwrap();
        assert!((r.qps - 1.0).abs() < 1e-9, "{r:?}");
        assert!((r.busy_fraction - 0.8).abs() < 1e-9);
        assert!((r.capacity.unwrap() - 5.0).abs() < 1e-9);
    }

    #[test]
    fn no_capacity_from_an_idle_window() {
        let mut w = RateWindow::new(60.0);
        w.push(s(0.0, 0, 0, 0.0));
        w.push(s(10.0, 1, 1, 0.2));
        let r = w.rates().unwrap();
        assert_eq!(r.capacity, None);
        assert!((r.qps - 0.1).abs() < 1e-9);
    }
}
