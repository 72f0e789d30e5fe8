//! The DeepSeek MLPs: the dense SwiGLU MLP of the first layers, and the routed MoE with
//! shared experts.
//!
//! Routing (per token, f32): scores = sigmoid (V3) or softmax (V2) of the gate logits; for
//! `noaux_tc` the selection uses `scores + e_score_correction_bias` and a group's score is the
//! sum of its two best biased scores (`group_limited_greedy`: its best score); the
//! `topk_group` best groups are kept and the top-k experts taken from them; the weights are
//! the *unbiased* scores, normalised (`+1e-20`) when `norm_topk_prob`, and scaled by
//! `routed_scaling_factor`. Experts outside the kept groups are excluded (transformers'
//! `-inf` fill; the original code's `0.0` fill gives the same choice while biased scores
//! are positive, as they are for sigmoid scores plus a non-negative bias).
//!
//! Dispatch groups the batch's tokens by expert and runs every active expert once on all of
//! its rows, all experts of the layer (and the shared ones) together (`experts.rs`); a
//! token's routed output is summed over its experts in ascending expert id, so it does not
//! depend on the other tokens in the batch.

use super::config::{DeepSeekConfig, ScoringFunc, TopkMethod};
use super::experts::{self, ExpertJob};
use super::linear::linear;
use super::Trace;
use crate::ops;
use crate::pool::ThreadPool;
use crate::weights::QMatrix;

pub(crate) struct Mlp {
    pub gate: QMatrix,
    pub up: QMatrix,
    pub down: QMatrix,
}

impl Mlp {
    /// `out = down(silu(gate x) * up x)` for `n` rows.
    pub fn forward(&self, pool: &ThreadPool, x: &[f32], n: usize, out: &mut [f32]) {
        let job = ExpertJob {
            mlp: self,
            rows: (0..n).collect(),
        };
        let ys = experts::run(pool, x, n, std::slice::from_ref(&job));
        out.copy_from_slice(&ys[0]);
    }
}

pub(crate) struct Moe {
    /// `mlp.gate.weight`: `[n_routed_experts, hidden]`.
    pub router: QMatrix,
    pub bias: Option<Vec<f32>>,
    pub experts: Vec<Mlp>,
    pub shared: Option<Mlp>,
}

/// Indices of the `k` largest values of `v` over the candidates, largest first (ties: lower
/// index first, as a stable sort).
fn top_k(v: &[f32], candidates: impl Iterator<Item = usize>, k: usize) -> Vec<usize> {
    let mut idx: Vec<usize> = candidates.collect();
    idx.sort_by(|&a, &b| v[b].total_cmp(&v[a]).then(a.cmp(&b)));
    idx.truncate(k);
    idx
}

/// The experts one token is routed to, with their final weights, in selection order.
/// `forced` replaces the selection (not the weights): a debugging aid to compare models
/// whose routing would otherwise flip at near-ties.
pub(crate) fn route(
    c: &DeepSeekConfig,
    logits: &[f32],
    bias: Option<&[f32]>,
    forced: Option<&[usize]>,
) -> Vec<(usize, f32)> {
    let e = logits.len();
    let scores: Vec<f32> = match c.scoring_func {
        ScoringFunc::Sigmoid => logits.iter().map(|&x| 1.0 / (1.0 + (-x).exp())).collect(),
        ScoringFunc::Softmax => {
            let m = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max);
            let ex: Vec<f32> = logits.iter().map(|&x| (x - m).exp()).collect();
            let s: f32 = ex.iter().sum();
            ex.iter().map(|&x| x / s).collect()
        }
    };
    let choice: Vec<f32> = match (c.topk_method, bias) {
        (TopkMethod::NoauxTc, Some(b)) => scores.iter().zip(b).map(|(s, b)| s + b).collect(),
        _ => scores.clone(),
    };
    let per_group = e / c.n_group;
    let kept: Vec<usize> = match c.topk_method {
        TopkMethod::Greedy => (0..e).collect(),
        TopkMethod::GroupLimitedGreedy | TopkMethod::NoauxTc => {
            let gscore: Vec<f32> = (0..c.n_group)
                .map(|g| {
                    let grp = &choice[g * per_group..(g + 1) * per_group];
                    if c.topk_method == TopkMethod::NoauxTc {
                        let best = top_k(grp, 0..per_group, 2);
                        best.iter().map(|&i| grp[i]).sum()
                    } else {
                        grp.iter().copied().fold(f32::NEG_INFINITY, f32::max)
                    }
                })
                .collect();
            let mut groups = top_k(&gscore, 0..c.n_group, c.topk_group);
            groups.sort_unstable();
            groups
                .iter()
                .flat_map(|&g| g * per_group..(g + 1) * per_group)
                .collect()
        }
    };
    let chosen = match forced {
        Some(f) => f.iter().copied().filter(|&i| i < e).collect(),
        None => top_k(&choice, kept.into_iter(), c.num_experts_per_tok),
    };
    let mut w: Vec<f32> = chosen.iter().map(|&i| scores[i]).collect();
    let normalise = c.num_experts_per_tok > 1 && c.norm_topk_prob;
    if normalise {
        let denom = w.iter().sum::<f32>() + 1e-20;
        for x in w.iter_mut() {
            *x /= denom;
        }
    }
    // V3 always applies the routed scaling factor; V2 only when it does not normalise.
    if c.v3 || !normalise {
        for x in w.iter_mut() {
            *x *= c.routed_scaling_factor;
        }
    }
    chosen.into_iter().zip(w).collect()
}

/// The MoE block for `t` rows of `h`; writes routed + shared output to `out`.
#[allow(clippy::too_many_arguments)]
pub(crate) fn forward(
    pool: &ThreadPool,
    c: &DeepSeekConfig,
    m: &Moe,
    layer: usize,
    h: &[f32],
    t: usize,
    trace: Option<&mut Trace>,
    out: &mut [f32],
) {
    let d = c.hidden;
    let ne = m.experts.len();
    let mut logits = vec![0.0f32; t * ne];
    linear(pool, &m.router, h, t, &mut logits);
    let forced = trace.as_deref().and_then(|tr| {
        tr.force_experts
            .iter()
            .find(|(l, _)| *l == layer)
            .map(|(_, f)| f.clone())
    });
    let routes: Vec<Vec<(usize, f32)>> = logits
        .chunks_exact(ne)
        .enumerate()
        .map(|(i, l)| {
            let f = forced.as_ref().and_then(|f| f.get(i)).map(|v| v.as_slice());
            route(c, l, m.bias.as_deref(), f)
        })
        .collect();
    if let Some(tr) = trace {
        tr.put(format!("layer{layer}.router_logits"), ne, &logits);
        let mut per_tok = routes.clone();
        for r in per_tok.iter_mut() {
            r.sort_by_key(|&(e, _)| e);
        }
        tr.routing.push((layer, per_tok));
    }
    // Group token rows by expert; the shared experts take every row. All of them run in
    // the same parallel regions (experts.rs).
    let mut rows_of: Vec<Vec<(usize, f32)>> = vec![Vec::new(); ne];
    for (i, r) in routes.iter().enumerate() {
        for &(e, w) in r {
            rows_of[e].push((i, w));
        }
    }
    let mut jobs: Vec<ExpertJob> = Vec::new();
    let mut routed: Vec<usize> = Vec::new();
    for (e, rows) in rows_of.iter().enumerate() {
        if !rows.is_empty() {
            routed.push(e);
            jobs.push(ExpertJob {
                mlp: &m.experts[e],
                rows: rows.iter().map(|&(i, _)| i).collect(),
            });
        }
    }
    if let Some(sh) = &m.shared {
        jobs.push(ExpertJob {
            mlp: sh,
            rows: (0..t).collect(),
        });
    }
    let ys = experts::run(pool, h, t, &jobs);
    // A token's routed output is summed in ascending expert id, then the shared output is
    // added: the order does not depend on the other tokens of the batch.
    out.fill(0.0);
    for (&e, ye) in routed.iter().zip(&ys) {
        for (j, &(i, w)) in rows_of[e].iter().enumerate() {
            for (o, &y) in out[i * d..(i + 1) * d]
                .iter_mut()
                .zip(&ye[j * d..(j + 1) * d])
            {
                *o += w * y;
            }
        }
    }
    if m.shared.is_some() {
        ops::add_assign(out, &ys[routed.len()]);
    }
}
