//! Turning logits into the next token: penalties, logit bias, temperature, top-k, top-p,
//! min-p, and a per-request seeded RNG so a fixed seed reproduces the same text.

use std::collections::HashMap;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

#[derive(Clone, Debug, PartialEq)]
pub struct SamplingParams {
    /// 0 = greedy.
    pub temperature: f32,
    /// 0 = off.
    pub top_k: usize,
    /// 1.0 = off.
    pub top_p: f32,
    /// 0.0 = off.
    pub min_p: f32,
    /// 1.0 = off (llama.cpp / HF style: divide positive logits, multiply negative ones).
    pub repetition_penalty: f32,
    /// OpenAI style: subtract once per token that occurred.
    pub presence_penalty: f32,
    /// OpenAI style: subtract per occurrence.
    pub frequency_penalty: f32,
    pub logit_bias: Vec<(u32, f32)>,
    pub seed: Option<u64>,
}

impl Default for SamplingParams {
    fn default() -> Self {
        SamplingParams {
            temperature: 0.0,
            top_k: 0,
            top_p: 1.0,
            min_p: 0.0,
            repetition_penalty: 1.0,
            presence_penalty: 0.0,
            frequency_penalty: 0.0,
            logit_bias: Vec::new(),
            seed: None,
        }
    }
}

impl SamplingParams {
    pub fn greedy() -> Self {
        Self::default()
    }

    /// Check ranges; the message names the field as the OpenAI API does.
    pub fn validate(&self) -> Result<(), String> {
        let bad = |f: &str, v: f32, r: &str| Err(format!("`{f}` = {v} is out of range ({r})"));
        if !(0.0..=2.0).contains(&self.temperature) || self.temperature.is_nan() {
            return bad("temperature", self.temperature, "0 to 2");
        }
        if !(self.top_p > 0.0 && self.top_p <= 1.0) {
            return bad("top_p", self.top_p, "greater than 0, at most 1");
        }
        if !(0.0..=1.0).contains(&self.min_p) {
            return bad("min_p", self.min_p, "0 to 1");
        }
        if !(self.repetition_penalty > 0.0 && self.repetition_penalty <= 10.0) {
            return bad(
                "repetition_penalty",
                self.repetition_penalty,
                "greater than 0, at most 10",
            );
        }
        if !(-2.0..=2.0).contains(&self.presence_penalty) {
            return bad("presence_penalty", self.presence_penalty, "-2 to 2");
        }
        if !(-2.0..=2.0).contains(&self.frequency_penalty) {
            return bad("frequency_penalty", self.frequency_penalty, "-2 to 2");
        }
        for &(_, b) in &self.logit_bias {
            if !(-100.0..=100.0).contains(&b) {
                return bad("logit_bias", b, "-100 to 100");
            }
        }
        Ok(())
    }

    pub fn is_greedy(&self) -> bool {
        self.temperature == 0.0
    }
}

pub struct Sampler {
    params: SamplingParams,
    rng: StdRng,
}

impl Sampler {
    pub fn new(params: SamplingParams) -> Self {
        let rng = match params.seed {
            Some(s) => StdRng::seed_from_u64(s),
            None => StdRng::from_os_rng(),
        };
        Sampler { params, rng }
    }

    pub fn params(&self) -> &SamplingParams {
        &self.params
    }

    /// Apply penalties and bias in place (`history` = prompt and generated tokens for the
    /// repetition penalty; `generated` = generated tokens only, for presence/frequency).
    pub fn adjust(&self, logits: &mut [f32], history: &[u32], generated: &[u32]) {
        let p = &self.params;
        if p.repetition_penalty != 1.0 {
            let mut seen = vec![false; logits.len()];
            for &t in history {
                let t = t as usize;
                if t < logits.len() && !seen[t] {
                    seen[t] = true;
                    let l = &mut logits[t];
                    *l = if *l > 0.0 {
                        *l / p.repetition_penalty
                    } else {
                        *l * p.repetition_penalty
                    };
                }
            }
        }
        if p.presence_penalty != 0.0 || p.frequency_penalty != 0.0 {
            let mut counts: HashMap<u32, u32> = HashMap::new();
            for &t in generated {
                *counts.entry(t).or_default() += 1;
            }
            for (t, c) in counts {
                if let Some(l) = logits.get_mut(t as usize) {
                    *l -= p.presence_penalty + p.frequency_penalty * c as f32;
                }
            }
        }
        for &(t, b) in &p.logit_bias {
            if let Some(l) = logits.get_mut(t as usize) {
                *l += b;
            }
        }
    }

    /// Choose the next token from already-adjusted logits.
    pub fn pick(&mut self, logits: &[f32]) -> u32 {
        let p = &self.params;
        if p.is_greedy() {
            return argmax(logits);
        }
        let mut cand: Vec<(u32, f32)> = logits
            .iter()
            .enumerate()
            .filter(|(_, l)| l.is_finite())
            .map(|(i, &l)| (i as u32, l / p.temperature))
            .collect();
        if cand.is_empty() {
            return argmax(logits);
        }
        if p.top_k > 0 && p.top_k < cand.len() {
            cand.select_nth_unstable_by(p.top_k - 1, by_logit_desc);
            cand.truncate(p.top_k);
        }
        let max = cand.iter().map(|c| c.1).fold(f32::NEG_INFINITY, f32::max);
        // Tokens more than e^50 less likely than the best one hold under 1e-16 of the mass
        // together, even over a 152k vocabulary: leaving them out spares the work and can
        // change a draw only with that probability.
        cand.retain(|c| c.1 >= max - NEGLIGIBLE_LOGIT_GAP);
        // Weights relative to the most likely token (weight 1).
        let w = |c: &(u32, f32)| ((c.1 - max) as f64).exp();
        let total: f64 = cand.iter().map(w).sum();
        // min-p: drop tokens below min_p × the top probability (compared as logs: one
        // exp per candidate, for `total`, is what this costs).
        if p.min_p > 0.0 {
            let floor = (p.min_p as f64).ln();
            cand.retain(|c| (c.1 - max) as f64 >= floor);
        }
        // The candidates are walked from the most likely down, and only as far as needed:
        // sorting a whole 152k vocabulary per token took ~5 ms, which halved batched decode
        // at temperature 0.6.
        let mut walk = Descending::new(&mut cand);
        // top-p: the smallest prefix whose mass reaches top_p of the total.
        let (keep, mass) = if p.top_p < 1.0 {
            let target = p.top_p as f64 * total;
            let (mut n, mut acc) = (0, 0.0);
            while let Some(c) = walk.get(n) {
                acc += w(&c);
                n += 1;
                if acc >= target {
                    break;
                }
            }
            (n, acc)
        } else {
            let mass = if p.min_p > 0.0 {
                walk.all().iter().map(w).sum()
            } else {
                total
            };
            (usize::MAX, mass)
        };
        let mut r = self.rng.random::<f64>() * mass;
        let mut chosen = walk.get(0).expect("the top token is always a candidate").0;
        for i in 0..keep {
            let Some(c) = walk.get(i) else { break };
            chosen = c.0;
            let x = w(&c);
            if r < x {
                break;
            }
            r -= x;
        }
        chosen
    }
}

/// See `Sampler::pick`.
const NEGLIGIBLE_LOGIT_GAP: f32 = 50.0;

/// Descending logit, ties by id: a total order, so any partial sort agrees with a full one.
fn by_logit_desc(a: &(u32, f32), b: &(u32, f32)) -> std::cmp::Ordering {
    b.1.total_cmp(&a.1).then(a.0.cmp(&b.0))
}

/// Candidates in descending order, sorted lazily: a growing sorted prefix, extended by
/// selecting the next-largest block (64, then 4x each time) out of the rest.
struct Descending<'a> {
    cand: &'a mut [(u32, f32)],
    sorted: usize,
}

impl<'a> Descending<'a> {
    fn new(cand: &'a mut [(u32, f32)]) -> Self {
        Descending { cand, sorted: 0 }
    }

    /// The `i`-th most likely candidate.
    fn get(&mut self, i: usize) -> Option<(u32, f32)> {
        while i >= self.sorted && self.sorted < self.cand.len() {
            let want = (self.sorted * 4).max(64).min(self.cand.len());
            let rest = &mut self.cand[self.sorted..];
            let k = want - self.sorted;
            if k < rest.len() {
                rest.select_nth_unstable_by(k - 1, by_logit_desc);
            }
            rest[..k].sort_unstable_by(by_logit_desc);
            self.sorted = want;
        }
        self.cand.get(i).copied()
    }

    /// Every candidate (in no particular order).
    fn all(&self) -> &[(u32, f32)] {
        self.cand
    }
}

/// Index of the largest logit (the lowest index among equals).
pub fn argmax(logits: &[f32]) -> u32 {
    let mut best = 0;
    for (i, &l) in logits.iter().enumerate() {
        if l > logits[best] {
            best = i;
        }
    }
    best as u32
}

/// Log-softmax value of `id` and the `n` most likely (id, logprob) pairs.
pub fn logprobs(logits: &[f32], id: u32, n: usize) -> (f32, Vec<(u32, f32)>) {
    let max = logits.iter().cloned().fold(f32::NEG_INFINITY, f32::max);
    let lse = max as f64
        + logits
            .iter()
            .map(|&l| ((l - max) as f64).exp())
            .sum::<f64>()
            .ln();
    let lp = |l: f32| (l as f64 - lse) as f32;
    let mut idx: Vec<u32> = (0..logits.len() as u32).collect();
    let n = n.min(idx.len());
    if n > 0 {
        let cmp = |a: &u32, b: &u32| {
            logits[*b as usize]
                .total_cmp(&logits[*a as usize])
                .then(a.cmp(b))
        };
        idx.select_nth_unstable_by(n - 1, cmp);
        idx.truncate(n);
        idx.sort_by(cmp);
    } else {
        idx.clear();
    }
    (
        lp(logits[id as usize]),
        idx.into_iter()
            .map(|i| (i, lp(logits[i as usize])))
            .collect(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params(t: f32) -> SamplingParams {
        SamplingParams {
            temperature: t,
            seed: Some(1),
            ..Default::default()
        }
    }

    #[test]
    fn greedy_is_argmax_with_lowest_index_on_ties() {
        let mut s = Sampler::new(SamplingParams::greedy());
        assert_eq!(s.pick(&[0.0, 3.0, 3.0, 1.0]), 1);
    }

    #[test]
    fn same_seed_same_tokens() {
        let logits: Vec<f32> = (0..50).map(|i| (i as f32 * 0.37).sin()).collect();
        let run = || {
            let mut s = Sampler::new(params(1.0));
            (0..20).map(|_| s.pick(&logits)).collect::<Vec<_>>()
        };
        assert_eq!(run(), run());
        let distinct: std::collections::HashSet<_> = run().into_iter().collect();
        assert!(
            distinct.len() > 3,
            "temperature 1 should spread: {distinct:?}"
        );
    }

    #[test]
    fn top_k_one_and_tiny_top_p_are_greedy() {
        let logits = [0.1, 2.0, 1.9, -1.0];
        let mut s = Sampler::new(SamplingParams {
            top_k: 1,
            ..params(1.5)
        });
        assert!((0..50).all(|_| s.pick(&logits) == 1));
        let mut s = Sampler::new(SamplingParams {
            top_p: 0.01,
            ..params(1.5)
        });
        assert!((0..50).all(|_| s.pick(&logits) == 1));
    }

    #[test]
    fn min_p_removes_unlikely_tokens() {
        let logits = [5.0, 4.9, -10.0, -10.0];
        let mut s = Sampler::new(SamplingParams {
            min_p: 0.5,
            ..params(1.0)
        });
        assert!((0..200).all(|_| s.pick(&logits) < 2));
    }

    #[test]
    fn penalties_and_bias() {
        let s = Sampler::new(SamplingParams {
            repetition_penalty: 2.0,
            presence_penalty: 0.5,
            frequency_penalty: 0.25,
            logit_bias: vec![(3, -100.0)],
            ..params(0.0)
        });
        let mut l = vec![2.0, -2.0, 1.0, 9.0];
        s.adjust(&mut l, &[0, 1, 1], &[1, 1]);
        assert_eq!(l, vec![1.0, -4.0 - 0.5 - 0.5, 1.0, -91.0]);
    }

    #[test]
    fn logprobs_are_normalised_and_sorted() {
        let (lp, top) = logprobs(&[1.0, 3.0, 2.0], 2, 2);
        let z = (1f64.exp() + 3f64.exp() + 2f64.exp()).ln();
        assert!((lp as f64 - (2.0 - z)).abs() < 1e-6);
        assert_eq!(top.iter().map(|t| t.0).collect::<Vec<_>>(), vec![1, 2]);
    }

    #[test]
    fn validation_names_the_field() {
        let e = SamplingParams {
            top_p: 0.0,
            ..Default::default()
        }
        .validate()
        .unwrap_err();
        assert!(e.contains("top_p"));
    }

    /// The sampler before candidates were sorted lazily: a full sort, normalised f64
    /// probabilities, min-p, top-p, then a walk.
    fn pick_full_sort(p: &SamplingParams, rng: &mut StdRng, logits: &[f32]) -> u32 {
        let mut cand: Vec<(u32, f32)> = logits
            .iter()
            .enumerate()
            .map(|(i, &l)| (i as u32, l / p.temperature))
            .collect();
        cand.sort_by(by_logit_desc);
        if p.top_k > 0 {
            cand.truncate(p.top_k);
        }
        let max = cand[0].1;
        let mut probs: Vec<f64> = cand.iter().map(|c| ((c.1 - max) as f64).exp()).collect();
        let total: f64 = probs.iter().sum();
        probs.iter_mut().for_each(|x| *x /= total);
        let mut keep = probs.len();
        if p.min_p > 0.0 {
            let floor = probs[0] * p.min_p as f64;
            keep = probs.iter().take_while(|&&x| x >= floor).count().max(1);
        }
        if p.top_p < 1.0 {
            let (mut acc, mut n) = (0.0, 0);
            for &x in &probs[..keep] {
                acc += x;
                n += 1;
                if acc >= p.top_p as f64 {
                    break;
                }
            }
            keep = n;
        }
        let mass: f64 = probs[..keep].iter().sum();
        let mut r = rng.random::<f64>() * mass;
        for (i, &x) in probs[..keep].iter().enumerate() {
            if r < x {
                return cand[i].0;
            }
            r -= x;
        }
        cand[keep - 1].0
    }

    #[test]
    fn lazy_ordering_draws_what_a_full_sort_draws() {
        let mut gen = StdRng::seed_from_u64(9);
        let settings = [
            (0.6, 0, 0.95, 0.0),
            (1.0, 0, 1.0, 0.0),
            (0.8, 40, 0.9, 0.05),
            (1.3, 0, 1.0, 0.1),
        ];
        for (temperature, top_k, top_p, min_p) in settings {
            let params = SamplingParams {
                temperature,
                top_k,
                top_p,
                min_p,
                seed: Some(3),
                ..Default::default()
            };
            for _ in 0..5 {
                // A long-tailed distribution over a large vocabulary, with ties.
                let logits: Vec<f32> = (0..20_000)
                    .map(|_| (gen.random_range(-12.0f32..12.0) * 4.0).round() / 4.0)
                    .collect();
                let mut lazy = Sampler::new(params.clone());
                let mut rng = StdRng::seed_from_u64(3);
                for _ in 0..200 {
                    assert_eq!(
                        lazy.pick(&logits),
                        pick_full_sort(&params, &mut rng, &logits),
                        "{params:?}"
                    );
                }
            }
        }
    }
}
