//! Adaptive batching: hold a target inter-token latency (ITL) for the requests that ask for
//! one by shrinking the step's token budget (prefill chunks are what make a step slow) and,
//! if that is not enough, the number of running sequences; grow both back when steps are
//! comfortably fast. Multiplicative decrease, additive increase, like TCP congestion control,
//! so it reacts within a step or two to a burst of long prompts and creeps back up afterwards.
//!
//! Every engine step's duration is one inter-token gap of every decoding sequence, so the
//! controller compares the step time with the tightest target among the running requests.

use std::time::Duration;

/// Relax only when a step takes less than this fraction of the target.
const SLACK: f64 = 0.6;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AdaptiveBatcher {
    max_tokens: usize,
    min_tokens: usize,
    max_seqs: usize,
    min_seqs: usize,
    tokens: usize,
    seqs: usize,
}

/// The limits to apply to the next step (`None`: the configured maximum).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    pub tokens: Option<usize>,
    pub seqs: Option<usize>,
}

impl AdaptiveBatcher {
    /// `max_*` are the configured budgets; `min_tokens` is the smallest token budget the
    /// controller goes down to before it starts to limit sequences.
    pub fn new(max_tokens: usize, max_seqs: usize, min_tokens: usize) -> Self {
        let max_tokens = max_tokens.max(1);
        let max_seqs = max_seqs.max(1);
        AdaptiveBatcher {
            max_tokens,
            min_tokens: min_tokens.clamp(1, max_tokens),
            max_seqs,
            min_seqs: 1,
            tokens: max_tokens,
            seqs: max_seqs,
        }
    }

    /// Feed the last step's duration and the tightest ITL target among the running requests.
    pub fn observe(&mut self, step: Duration, target: Option<Duration>) -> Limits {
        match target {
            None => {
                // Nobody asks for a latency: full throughput now, but keep what was learned,
                // so the next targeted request is protected from its first step on.
                return Limits {
                    tokens: None,
                    seqs: None,
                };
            }
            Some(t) if step > t => {
                if self.tokens > self.min_tokens {
                    self.tokens = (self.tokens / 2).max(self.min_tokens);
                } else {
                    self.seqs = (self.seqs - self.seqs / 4)
                        .saturating_sub(1)
                        .max(self.min_seqs);
                }
            }
            Some(t) if step.as_secs_f64() < SLACK * t.as_secs_f64() => {
                if self.seqs < self.max_seqs {
                    self.seqs += 1;
                } else {
                    let step_up = (self.max_tokens / 16).max(16);
                    self.tokens = (self.tokens + step_up).min(self.max_tokens);
                }
            }
            Some(_) => {}
        }
        self.limits()
    }

    pub fn limits(&self) -> Limits {
        Limits {
            tokens: (self.tokens < self.max_tokens).then_some(self.tokens),
            seqs: (self.seqs < self.max_seqs).then_some(self.seqs),
        }
    }

    pub fn token_budget(&self) -> usize {
        self.tokens
    }

    pub fn seq_limit(&self) -> usize {
        self.seqs
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: fn(u64) -> Duration = Duration::from_millis;

    #[test]
    fn slow_steps_halve_the_budget_then_cut_sequences() {
        let mut a = AdaptiveBatcher::new(2048, 16, 64);
        let t = Some(MS(100));
        assert_eq!(a.observe(MS(300), t).tokens, Some(1024));
        for _ in 0..4 {
            a.observe(MS(300), t);
        }
        assert_eq!(a.token_budget(), 64);
        assert_eq!(a.seq_limit(), 16);
        let l = a.observe(MS(300), t);
        assert_eq!(l.tokens, Some(64));
        assert_eq!(l.seqs, Some(11)); // 16 - 4 - 1
        for _ in 0..20 {
            a.observe(MS(300), t);
        }
        assert_eq!(a.seq_limit(), 1);
    }

    #[test]
    fn fast_steps_give_back_sequences_first_then_tokens() {
        let mut a = AdaptiveBatcher::new(1024, 8, 32);
        let t = Some(MS(100));
        for _ in 0..10 {
            a.observe(MS(500), t);
        }
        assert_eq!((a.token_budget(), a.seq_limit()), (32, 1));
        // In the dead band nothing moves.
        assert_eq!(a.observe(MS(80), t), a.limits());
        assert_eq!(a.seq_limit(), 1);
        for _ in 0..7 {
            a.observe(MS(10), t);
        }
        assert_eq!((a.token_budget(), a.seq_limit()), (32, 8));
        a.observe(MS(10), t);
        assert_eq!(a.token_budget(), 96);
        for _ in 0..100 {
            a.observe(MS(10), t);
        }
        assert_eq!(
            a.limits(),
            Limits {
                tokens: None,
                seqs: None
            }
        );
    }

    #[test]
    fn no_target_lifts_the_limits_but_remembers_them() {
        let mut a = AdaptiveBatcher::new(512, 4, 16);
        a.observe(MS(900), Some(MS(50)));
        assert_eq!(a.limits().tokens, Some(256));
        assert_eq!(
            a.observe(MS(900), None),
            Limits {
                tokens: None,
                seqs: None
            }
        );
        // A target again: the learned budget applies at once (and keeps adapting).
        assert_eq!(a.observe(MS(900), Some(MS(50))).tokens, Some(128));
    }
}
