//! The scaling advisor's decision logic (pure: observations in, advice out).
//!
//! Each evaluation classifies what it sees: scale out when the queue is above `queue_high` or
//! utilisation above `util_high`; scale in when the queue is below `queue_low` *and*
//! utilisation below `util_low`; otherwise maintain. Two kinds of hysteresis keep it from
//! flapping: the gap between the high and low thresholds (a dead band where nothing changes),
//! and persistence: a new decision takes effect only after it was seen in `sustain_out` (for
//! scale out, and for going back to maintain) or `sustain_in` (for scale in) consecutive
//! evaluations. One evaluation that disagrees resets the count.
//!
//! Utilisation is observed QPS over measured per-replica capacity; while no capacity is known
//! yet, the engine's busy fraction stands in. `desired_replicas` = ceil(QPS / capacity), at
//! least 2 while scaling out (this replica alone is not enough); it only rises while scaling
//! out, is held while the decision is maintain, and only falls on a settled scale-in.

use serde::Serialize;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Decision {
    ScaleOut,
    ScaleIn,
    Maintain,
}

impl Decision {
    pub fn as_str(self) -> &'static str {
        match self {
            Decision::ScaleOut => "scale_out",
            Decision::ScaleIn => "scale_in",
            Decision::Maintain => "maintain",
        }
    }
}

/// The advisor's thresholds (the `serve --scaling-*` flags).
#[derive(Clone, Debug, PartialEq)]
pub struct Thresholds {
    /// Scale out when more requests than this wait.
    pub queue_high: usize,
    /// Scale in only when fewer than this wait.
    pub queue_low: usize,
    /// Scale out above this utilisation (0..1 = QPS / capacity).
    pub util_high: f64,
    /// Scale in only below this utilisation.
    pub util_low: f64,
    /// Consecutive evaluations needed to switch to scale out (or back to maintain).
    pub sustain_out: u32,
    /// Consecutive evaluations needed to switch to scale in.
    pub sustain_in: u32,
}

impl Default for Thresholds {
    fn default() -> Self {
        Thresholds {
            queue_high: 50,
            queue_low: 10,
            util_high: 0.9,
            // Below half of util_high: two replicas at this load merge into one below it.
            util_low: 0.4,
            sustain_out: 2,
            sustain_in: 6,
        }
    }
}

impl Thresholds {
    /// The bands must not overlap, or scale out and scale in could both hold.
    pub fn validate(&self) -> Result<(), String> {
        if self.queue_low > self.queue_high {
            return Err(format!(
                "the scale-in queue threshold ({}) is above the scale-out one ({})",
                self.queue_low, self.queue_high
            ));
        }
        if !(self.util_low >= 0.0 && self.util_low < self.util_high) {
            return Err(format!(
                "utilisation thresholds must satisfy 0 <= low < high (got low {}, high {})",
                self.util_low, self.util_high
            ));
        }
        if self.sustain_out == 0 || self.sustain_in == 0 {
            return Err("the sustain counts must be at least 1".into());
        }
        Ok(())
    }
}

/// What one evaluation saw.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Observation {
    /// Requests per second arriving at this replica.
    pub qps: f64,
    /// Requests per second this replica can complete (`None` until measured or configured).
    pub capacity: Option<f64>,
    /// Requests waiting for a slot.
    pub queue_length: usize,
    /// Fraction of wall time the engine spent computing (stands in while capacity is unknown).
    pub busy_fraction: f64,
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Advice {
    pub decision: Decision,
    pub reason: String,
    pub qps: f64,
    pub capacity: Option<f64>,
    pub queue_length: usize,
    pub utilisation: f64,
    pub desired_replicas: u32,
}

#[derive(Clone, Debug)]
pub struct Advisor {
    t: Thresholds,
    current: Decision,
    /// A different decision seen in the last evaluations, and how many in a row.
    pending: Option<(Decision, u32)>,
    desired: u32,
}

impl Advisor {
    pub fn new(t: Thresholds) -> Self {
        Advisor {
            t,
            current: Decision::Maintain,
            pending: None,
            desired: 1,
        }
    }

    pub fn thresholds(&self) -> &Thresholds {
        &self.t
    }

    /// Take one evaluation into account and say what to do now.
    pub fn observe(&mut self, o: Observation) -> Advice {
        let utilisation = match o.capacity {
            Some(c) if c > 0.0 => o.qps / c,
            _ => o.busy_fraction,
        };
        let (seen, why) = self.classify(o.queue_length, utilisation);
        let reason = if seen == self.current {
            self.pending = None;
            why
        } else {
            let count = match self.pending {
                Some((d, k)) if d == seen => k + 1,
                _ => 1,
            };
            let need = match seen {
                Decision::ScaleIn => self.t.sustain_in,
                Decision::ScaleOut | Decision::Maintain => self.t.sustain_out,
            };
            if count >= need {
                self.current = seen;
                self.pending = None;
                format!("{why} ({count} consecutive evaluations)")
            } else {
                self.pending = Some((seen, count));
                format!(
                    "holding {}: {why} ({count} of {need} consecutive evaluations needed)",
                    self.current.as_str()
                )
            }
        };
        let raw = match o.capacity {
            Some(c) if c > 0.0 => ((o.qps / c).ceil() as u32).max(1),
            _ => 1,
        };
        self.desired = match self.current {
            // Scaling out never lowers the count: only a settled scale-in does.
            Decision::ScaleOut => raw.max(2).max(self.desired),
            Decision::ScaleIn => raw,
            Decision::Maintain => self.desired,
        };
        Advice {
            decision: self.current,
            reason,
            qps: o.qps,
            capacity: o.capacity,
            queue_length: o.queue_length,
            utilisation,
            desired_replicas: self.desired,
        }
    }

    fn classify(&self, queue: usize, util: f64) -> (Decision, String) {
        let t = &self.t;
        if queue > t.queue_high {
            (
                Decision::ScaleOut,
                format!("queue {queue} > {}", t.queue_high),
            )
        } else if util > t.util_high {
            (
                Decision::ScaleOut,
                format!("utilisation {util:.2} > {:.2}", t.util_high),
            )
        } else if queue < t.queue_low && util < t.util_low {
            (
                Decision::ScaleIn,
                format!(
                    "queue {queue} < {} and utilisation {util:.2} < {:.2}",
                    t.queue_low, t.util_low
                ),
            )
        } else {
            (
                Decision::Maintain,
                format!("queue {queue} and utilisation {util:.2} are within the thresholds"),
            )
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn obs(qps: f64, queue: usize) -> Observation {
        Observation {
            qps,
            capacity: Some(10.0),
            queue_length: queue,
            busy_fraction: 0.0,
        }
    }

    fn advisor() -> Advisor {
        Advisor::new(Thresholds::default())
    }

    #[test]
    fn a_long_queue_scales_out_once_it_persists() {
        let mut a = advisor();
        let first = a.observe(obs(6.0, 60));
        assert_eq!(first.decision, Decision::Maintain);
        assert!(first.reason.contains("1 of 2"), "{}", first.reason);
        let second = a.observe(obs(6.0, 60));
        assert_eq!(second.decision, Decision::ScaleOut, "{}", second.reason);
        assert!(second.reason.contains("queue 60 > 50"), "{}", second.reason);
        // Utilisation 0.6 alone wants one replica; a long queue means at least one more.
        assert_eq!(second.desired_replicas, 2);
    }

    #[test]
    fn high_utilisation_scales_out_to_ceil_qps_over_capacity() {
        let mut a = advisor();
        a.observe(obs(25.0, 0));
        let adv = a.observe(obs(25.0, 0));
        assert_eq!(adv.decision, Decision::ScaleOut);
        assert!((adv.utilisation - 2.5).abs() < 1e-9);
        assert_eq!(adv.desired_replicas, 3);
    }

    #[test]
    fn a_queue_flapping_around_the_threshold_does_not_flap_the_decision() {
        let mut a = advisor();
        for i in 0..20 {
            let q = if i % 2 == 0 { 51 } else { 49 };
            let adv = a.observe(obs(6.0, q));
            assert_eq!(adv.decision, Decision::Maintain, "step {i}: {}", adv.reason);
            assert_eq!(adv.desired_replicas, 1);
        }
    }

    #[test]
    fn the_dead_band_between_thresholds_maintains() {
        let mut a = advisor();
        for _ in 0..10 {
            // Queue 30 (between 10 and 50), utilisation 0.6 (between 0.4 and 0.9).
            assert_eq!(a.observe(obs(6.0, 30)).decision, Decision::Maintain);
        }
    }

    #[test]
    fn scale_in_needs_a_longer_quiet_spell_and_one_busy_sample_resets_it() {
        let mut a = advisor();
        a.observe(obs(30.0, 0));
        assert_eq!(a.observe(obs(30.0, 0)).decision, Decision::ScaleOut);
        // Load drops into the dead band: back to maintain after 2 evaluations, and the
        // desired count is held (no flapping of the gauge).
        a.observe(obs(6.0, 20));
        let m = a.observe(obs(6.0, 20));
        assert_eq!(m.decision, Decision::Maintain);
        assert_eq!(m.desired_replicas, 3);
        // Quiet for 5 evaluations, then one busy one: the count starts again.
        for _ in 0..5 {
            assert_eq!(a.observe(obs(1.0, 0)).decision, Decision::Maintain);
        }
        assert_eq!(a.observe(obs(6.0, 20)).decision, Decision::Maintain);
        for _ in 0..5 {
            let adv = a.observe(obs(1.0, 0));
            assert_eq!(adv.decision, Decision::Maintain);
            assert_eq!(adv.desired_replicas, 3);
        }
        let adv = a.observe(obs(1.0, 0));
        assert_eq!(adv.decision, Decision::ScaleIn, "{}", adv.reason);
        assert_eq!(adv.desired_replicas, 1);
        assert!(adv.reason.contains("6 consecutive"), "{}", adv.reason);
    }

    #[test]
    fn an_idle_replica_with_a_short_queue_is_not_scaled_in_while_busy() {
        let mut a = advisor();
        // Queue under 10 but utilisation in the band: not low enough to scale in.
        for _ in 0..10 {
            assert_eq!(a.observe(obs(5.0, 2)).decision, Decision::Maintain);
        }
    }

    #[test]
    fn without_a_capacity_the_busy_fraction_is_the_utilisation() {
        let mut a = advisor();
        let o = Observation {
            qps: 3.0,
            capacity: None,
            queue_length: 0,
            busy_fraction: 0.95,
        };
        a.observe(o);
        let adv = a.observe(o);
        assert_eq!(adv.decision, Decision::ScaleOut);
        assert!((adv.utilisation - 0.95).abs() < 1e-9);
        assert_eq!(adv.desired_replicas, 2);
    }

    #[test]
    fn custom_thresholds_apply_and_bad_ones_are_refused() {
        let t = Thresholds {
            queue_high: 5,
            queue_low: 2,
            sustain_out: 1,
            ..Thresholds::default()
        };
        assert!(t.validate().is_ok());
        let mut a = Advisor::new(t);
        assert_eq!(a.observe(obs(1.0, 6)).decision, Decision::ScaleOut);
        let bad = Thresholds {
            util_low: 0.95,
            ..Thresholds::default()
        };
        assert!(bad.validate().unwrap_err().contains("low < high"));
        let bad = Thresholds {
            queue_low: 60,
            ..Thresholds::default()
        };
        assert!(bad.validate().is_err());
    }
}
