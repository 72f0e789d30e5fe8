//! Teacher-forced comparison of a deepseek2 GGUF with a float64 reference
//! (`hf64-*.json`, made by `deepseek_hf_reference.py` in the shared fixtures' tools): shared
//! by `tests/deepseek_hf64.rs` and `examples/hf64_compare.rs` (which the
//! `scripts/deepseek-gguf-vs-llamacpp.sh` table runs).
#![allow(dead_code)]

use std::path::Path;
use std::sync::Arc;

use r1_model::arch::deepseek_v3::{DeepSeekV3, Trace};
use r1_model::{Batch, KvCache, Model};
use serde_json::Value;
use sha2::{Digest, Sha256};

/// A routing gap below this is a near-tie: the engines may pick either expert set.
pub const NEAR_TIE: f64 = 1e-3;
/// f16 bound per step before the first near-tie (nats).
pub const F16_TOL: f64 = 1e-3;
/// Quantized bounds on the distribution of d over all steps.
pub const Q_MEDIAN: f64 = 0.25;
pub const Q_P90: f64 = 1.5;

pub const BLOCK: usize = 16;

/// Per position: the reference's experts (in its order) and the routing's min gap.
pub type PositionRoutes = Vec<(Vec<usize>, f64)>;

pub struct Prompt {
    pub ids: Vec<u32>,
    pub greedy: Vec<u32>,
    /// Per step: (token, logprob) best first, and the reference's top-1 − top-2 margin.
    pub top: Vec<(Vec<(u32, f64)>, f64)>,
    /// Per MoE layer: per position (experts in the reference's order, min gap).
    pub routing: Vec<(usize, PositionRoutes)>,
}

pub struct Reference {
    pub name: String,
    pub sha256: String,
    pub prompts: Vec<Prompt>,
}

pub fn ids(v: &Value) -> Vec<u32> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_u64().unwrap() as u32)
        .collect()
}

pub fn load_reference(path: &Path) -> Reference {
    let js: Value = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    let prompts = js["results"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            let top = r["steps"]
                .as_array()
                .unwrap()
                .iter()
                .map(|s| {
                    let t = s["top10"]
                        .as_array()
                        .unwrap()
                        .iter()
                        .map(|p| (p[0].as_u64().unwrap() as u32, p[1].as_f64().unwrap()))
                        .collect();
                    (t, s["margin"].as_f64().unwrap_or(f64::INFINITY))
                })
                .collect();
            let mut routing: Vec<(usize, PositionRoutes)> = r["routing"]
                .as_object()
                .unwrap()
                .iter()
                .map(|(layer, pos)| {
                    let per = pos
                        .as_array()
                        .unwrap()
                        .iter()
                        .map(|p| {
                            let e = p["experts"]
                                .as_array()
                                .unwrap()
                                .iter()
                                .map(|x| x.as_u64().unwrap() as usize)
                                .collect();
                            (e, p["min_gap"].as_f64().unwrap())
                        })
                        .collect();
                    (layer.parse().unwrap(), per)
                })
                .collect();
            routing.sort_by_key(|(l, _)| *l);
            Prompt {
                ids: ids(&r["prompt_ids"]),
                greedy: ids(&r["greedy_ids"]),
                top,
                routing,
            }
        })
        .collect();
    Reference {
        name: js["source"]["gguf"].as_str().unwrap().to_string(),
        sha256: js["source"]["sha256"].as_str().unwrap().to_string(),
        prompts,
    }
}

pub fn sha256_file(path: &Path) -> String {
    let mut h = Sha256::new();
    let mut f = std::fs::File::open(path).unwrap();
    std::io::copy(&mut f, &mut h).unwrap();
    h.finalize().iter().map(|b| format!("{b:02x}")).collect()
}

/// What one prompt's teacher-forced run gave.
pub struct PromptResult {
    /// d per step.
    pub d: Vec<f64>,
    /// Steps before the first reference near-tie that any step depends on.
    pub clean_steps: usize,
    /// Steps before the first position where our experts differ from the reference's: along
    /// them both compute the same function, so they must agree as closely as the clean ones.
    pub same_route_steps: usize,
    /// Greedy agreement per step (argmax == reference greedy token).
    pub greedy_ok: Vec<bool>,
    /// First position where our expert choice differs from the reference, if any.
    pub first_routing_diff: Option<(usize, usize)>,
    /// First position with a reference near-tie.
    pub first_tie: Option<usize>,
}

pub fn log_softmax(logits: &[f32]) -> Vec<f64> {
    let m = logits.iter().fold(f32::NEG_INFINITY, |a, &b| a.max(b)) as f64;
    let lse = logits
        .iter()
        .map(|&x| (x as f64 - m).exp())
        .sum::<f64>()
        .ln()
        + m;
    logits.iter().map(|&x| x as f64 - lse).collect()
}

pub fn argmax(v: &[f32]) -> u32 {
    let mut best = 0;
    for (i, &x) in v.iter().enumerate() {
        if x > v[best] {
            best = i;
        }
    }
    best as u32
}

pub fn run_prompt(m: &DeepSeekV3, p: &Prompt) -> PromptResult {
    // prompt + greedy[..n-1] in one prefill, logits at every position from the prompt's last.
    let steps = p.greedy.len();
    let mut tokens = p.ids.clone();
    tokens.extend_from_slice(&p.greedy[..steps - 1]);
    let blocks = tokens.len().div_ceil(BLOCK);
    let mut kv = KvCache::with_dtype(m.kv_layout(), BLOCK, blocks, m.kv_dtype());
    let mut b = Batch::default();
    b.push(&tokens, 0, (0..blocks as u32).collect(), false);
    b.logit_rows = (p.ids.len() - 1..tokens.len()).collect();
    let mut trace = Trace::default();
    let logits = m.forward_traced(&b, &mut kv, Some(&mut trace)).unwrap();
    assert_eq!(logits.rows(), steps);

    let first_tie = (0..tokens.len()).find(|&pos| {
        p.routing
            .iter()
            .any(|(_, per)| per.get(pos).is_some_and(|r| r.1 < NEAR_TIE))
    });
    // Step s sees positions 0..=prompt_len-1+s.
    let clean_steps = match first_tie {
        Some(t) => (t + 1).saturating_sub(p.ids.len()).min(steps),
        None => steps,
    };
    let mut first_routing_diff = None;
    'outer: for pos in 0..tokens.len() {
        for (layer, per) in &p.routing {
            let ours = trace
                .routing
                .iter()
                .find(|(l, _)| l == layer)
                .unwrap_or_else(|| panic!("no routing traced for layer {layer}"));
            let mut a: Vec<usize> = ours.1[pos].iter().map(|e| e.0).collect();
            let mut r = per[pos].0.clone();
            a.sort_unstable();
            r.sort_unstable();
            if a != r {
                first_routing_diff = Some((*layer, pos));
                break 'outer;
            }
        }
    }
    let same_route_steps = match first_routing_diff {
        Some((_, pos)) => (pos + 1).saturating_sub(p.ids.len()).min(steps),
        None => steps,
    };
    let mut d = Vec::new();
    let mut greedy_ok = Vec::new();
    for s in 0..steps {
        let row = logits.row(s);
        let lp = log_softmax(row);
        let (top, _) = &p.top[s];
        let dev = top[..2]
            .iter()
            .map(|&(t, want)| (lp[t as usize] - want).abs())
            .fold(0.0, f64::max);
        d.push(dev);
        greedy_ok.push(argmax(row) == p.greedy[s]);
    }
    PromptResult {
        d,
        clean_steps,
        same_route_steps,
        greedy_ok,
        first_routing_diff,
        first_tie,
    }
}

pub fn quantile(sorted: &[f64], q: f64) -> f64 {
    // Nearest-rank on the sorted sample, as numpy's "lower" interpolation would give.
    let i = ((sorted.len() as f64 - 1.0) * q).floor() as usize;
    sorted[i]
}

pub struct Summary {
    pub median: f64,
    pub p90: f64,
    pub greedy_agree: usize,
    pub steps: usize,
}

/// Load `path` (a split file's first part maps every part) and run every prompt of `r`.
pub fn run_file(path: &Path, r: &Reference, threads: usize) -> (Summary, Vec<PromptResult>) {
    // As the server opens it: private copy, weights interleaved for the x16 kernels.
    let (file, _) = r1_model::arch::open_gguf_for_serving(path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let file = Arc::new(file);
    let m =
        DeepSeekV3::from_gguf(&file, threads).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let results: Vec<PromptResult> = r.prompts.iter().map(|p| run_prompt(&m, p)).collect();
    let mut all: Vec<f64> = results.iter().flat_map(|x| x.d.iter().copied()).collect();
    all.sort_by(f64::total_cmp);
    let summary = Summary {
        median: quantile(&all, 0.5),
        p90: quantile(&all, 0.9),
        greedy_agree: results
            .iter()
            .flat_map(|x| &x.greedy_ok)
            .filter(|&&ok| ok)
            .count(),
        steps: all.len(),
    };
    (summary, results)
}
