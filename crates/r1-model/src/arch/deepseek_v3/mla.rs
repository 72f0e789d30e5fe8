//! Multi-head Latent Attention over the paged latent cache.
//!
//! The cache holds, per token and layer, only `c_kv` (the `kv_a_layernorm` output,
//! `kv_lora_rank` values) and `k_pe` (the roped shared key, `qk_rope_head_dim` values). Keys
//! and values of cached tokens are never expanded per head: the query's nope part is folded
//! through `W_UK` into latent space (`q_lat = W_UKᵀ q_nope`), scores are
//! `q_lat · c_kv + q_pe · k_pe`, the softmax-weighted sum of latents is taken, and `W_UV`
//! maps it to the head's value space afterwards ("weight absorption").
//!
//! Prefill and decode run this one algorithm, and every (token, head) reduces over its
//! positions `0..=pos` in position order with fixed-order dot products, so the result does
//! not depend on the batch, on chunking or on whether the prefix came from the cache.

use std::cell::RefCell;

use super::linear::linear;
use super::{DeepSeekConfig, Trace};
use crate::batch::Batch;
use crate::f16;
use crate::kv_cache::{KvCache, KvDtype};
use crate::ops::{self, RopeTable, SharedMut};
use crate::pool::ThreadPool;
use crate::weights::QMatrix;

/// The query path: low-rank (`q_a_proj` → `q_a_layernorm` → `q_b_proj`) or one `q_proj`.
pub(crate) enum QProj {
    LowRank {
        q_a: QMatrix,
        norm: Vec<f32>,
        q_b: QMatrix,
    },
    Full(QMatrix),
}

pub(crate) struct MlaWeights {
    pub q: QProj,
    /// `kv_a_proj_with_mqa`: `[kv_lora_rank + qk_rope_head_dim, hidden]`.
    pub kv_a: QMatrix,
    pub kv_a_norm: Vec<f32>,
    /// Per head `W_UKᵀ`: `[kv_lora_rank, qk_nope_head_dim]` (llama.cpp's `attn_k_b`).
    pub k_b: Vec<QMatrix>,
    /// Per head `W_UV`: `[v_head_dim, kv_lora_rank]` (llama.cpp's `attn_v_b`).
    pub v_b: Vec<QMatrix>,
    pub o: QMatrix,
}

/// Split `kv_b_proj` (`[H·(nope+v), kv_lora_rank]`, f32 values) into the per-head absorbed
/// matrices, encoded like `like` (exact for f32/bf16/f16 sources).
pub(crate) fn split_kv_b(
    c: &DeepSeekConfig,
    kv_b: &[f32],
    like: crate::quant::GgmlType,
) -> (Vec<QMatrix>, Vec<QMatrix>) {
    let (r, dn, dv) = (c.kv_lora_rank, c.qk_nope_head_dim, c.v_head_dim);
    let mut k_b = Vec::with_capacity(c.n_heads);
    let mut v_b = Vec::with_capacity(c.n_heads);
    for h in 0..c.n_heads {
        let base = h * (dn + dv) * r;
        let mut kt = vec![0.0f32; r * dn];
        for i in 0..dn {
            for j in 0..r {
                kt[j * dn + i] = kv_b[base + i * r + j];
            }
        }
        k_b.push(super::encode(like, r, dn, &kt));
        v_b.push(super::encode(
            like,
            dv,
            r,
            &kv_b[base + dn * r..base + (dn + dv) * r],
        ));
    }
    (k_b, v_b)
}

/// Run one layer's attention for the batch: writes the new tokens' latents into `kv` and
/// returns `o_proj` output in `out` (`[T, hidden]`).
#[allow(clippy::too_many_arguments)]
pub(crate) fn forward(
    pool: &ThreadPool,
    c: &DeepSeekConfig,
    w: &MlaWeights,
    layer: usize,
    batch: &Batch,
    kv: &mut KvCache,
    ropes: &[RopeTable],
    h: &[f32],
    mut trace: Option<&mut Trace>,
    out: &mut [f32],
) {
    let t = batch.tokens.len();
    let (nh, dn, dr, dv, r) = (
        c.n_heads,
        c.qk_nope_head_dim,
        c.qk_rope_head_dim,
        c.v_head_dim,
        c.kv_lora_rank,
    );
    let qhd = dn + dr;
    let mut q = vec![0.0f32; t * nh * qhd];
    match &w.q {
        QProj::LowRank { q_a, norm, q_b } => {
            let mut qa = vec![0.0f32; t * q_a.rows];
            linear(pool, q_a, h, t, &mut qa);
            let mut qn = vec![0.0f32; qa.len()];
            crate::ops::rms_norm_rows(pool, &qa, norm, c.rms_eps, &mut qn, q_a.rows);
            if let Some(tr) = trace.as_deref_mut() {
                tr.put(format!("layer{layer}.q_a_layernorm_out"), q_a.rows, &qn);
            }
            linear(pool, q_b, &qn, t, &mut q);
        }
        QProj::Full(wq) => linear(pool, wq, h, t, &mut q),
    }
    let kw = r + dr;
    let mut ckv = vec![0.0f32; t * kw];
    linear(pool, &w.kv_a, h, t, &mut ckv);
    // Cache rows: [rms_norm(c) | rope(k_pe)].
    let mut rows = vec![0.0f32; t * kw];
    for i in 0..t {
        let (src, dst) = (&ckv[i * kw..(i + 1) * kw], &mut rows[i * kw..(i + 1) * kw]);
        ops::rms_norm(&src[..r], &w.kv_a_norm, c.rms_eps, &mut dst[..r]);
        dst[r..].copy_from_slice(&src[r..]);
        ops::apply_rope(&mut dst[r..], &ropes[i], false);
    }
    if let Some(tr) = trace {
        let lat: Vec<f32> = rows
            .chunks_exact(kw)
            .flat_map(|x| &x[..r])
            .copied()
            .collect();
        tr.put(format!("layer{layer}.kv_a_layernorm_out"), r, &lat);
    }
    write_latents(kv, layer, batch, &rows);

    // q_pe roped per head; q_nope absorbed through W_UK per head.
    let mut q_pe = vec![0.0f32; t * nh * dr];
    let mut q_lat = vec![0.0f32; t * nh * r];
    let mut gather = vec![0.0f32; t * dn.max(r)];
    let mut part = vec![0.0f32; t * r.max(dv)];
    for hh in 0..nh {
        for i in 0..t {
            let s = (i * nh + hh) * qhd;
            gather[i * dn..(i + 1) * dn].copy_from_slice(&q[s..s + dn]);
            let pe = &mut q_pe[(i * nh + hh) * dr..(i * nh + hh + 1) * dr];
            pe.copy_from_slice(&q[s + dn..s + qhd]);
            ops::apply_rope(pe, &ropes[i], false);
        }
        linear(pool, &w.k_b[hh], &gather[..t * dn], t, &mut part[..t * r]);
        for i in 0..t {
            q_lat[(i * nh + hh) * r..(i * nh + hh + 1) * r]
                .copy_from_slice(&part[i * r..(i + 1) * r]);
        }
    }

    let mut o_lat = vec![0.0f32; t * nh * r];
    attend(
        pool,
        kv,
        layer,
        batch,
        c,
        c.softmax_scale(),
        &q_lat,
        &q_pe,
        &mut o_lat,
    );

    // W_UV per head, then o_proj.
    let mut attn = vec![0.0f32; t * nh * dv];
    for hh in 0..nh {
        for i in 0..t {
            gather[i * r..(i + 1) * r]
                .copy_from_slice(&o_lat[(i * nh + hh) * r..(i * nh + hh + 1) * r]);
        }
        linear(pool, &w.v_b[hh], &gather[..t * r], t, &mut part[..t * dv]);
        for i in 0..t {
            attn[(i * nh + hh) * dv..(i * nh + hh + 1) * dv]
                .copy_from_slice(&part[i * dv..(i + 1) * dv]);
        }
    }
    linear(pool, &w.o, &attn, t, out);
}

/// Store each new token's cache row (`[T, k_width]`) in its slot, as f32 or f16.
fn write_latents(kv: &mut KvCache, layer: usize, batch: &Batch, rows: &[f32]) {
    let kw = kv.layout().k_width;
    let ro: &KvCache = kv;
    let slots: Vec<(usize, usize)> = batch
        .seqs
        .iter()
        .flat_map(|s| (0..s.len).map(move |i| (s.start + i, ro.slot(&s.block_table, s.pos0 + i))))
        .collect();
    match kv.dtype() {
        KvDtype::F32 => {
            let (k, _) = kv.layer_f32_mut(layer);
            for (row, slot) in slots {
                k[slot * kw..(slot + 1) * kw].copy_from_slice(&rows[row * kw..(row + 1) * kw]);
            }
        }
        KvDtype::F16 => {
            let (k, _) = kv.layer_mut(layer);
            for (row, slot) in slots {
                for (d, &x) in k[slot * kw..(slot + 1) * kw]
                    .iter_mut()
                    .zip(&rows[row * kw..(row + 1) * kw])
                {
                    *d = f16::from_f32(x);
                }
            }
        }
    }
}

/// Read access to one layer's cache rows in either storage type.
enum Rows<'a> {
    F32(&'a [f32]),
    F16(&'a [u16]),
}

impl<'a> Rows<'a> {
    #[inline]
    fn get<'b>(&'b self, slot: usize, kw: usize, buf: &'b mut [f32]) -> &'b [f32] {
        match self {
            Rows::F32(k) => &k[slot * kw..(slot + 1) * kw],
            Rows::F16(k) => {
                let table = f16::table();
                for (d, &b) in buf.iter_mut().zip(&k[slot * kw..(slot + 1) * kw]) {
                    *d = table[b as usize];
                }
                buf
            }
        }
    }
}

/// Dot product in a fixed order: element `i` into lane `i % 8`, lanes summed as a tree.
#[inline]
pub(crate) fn dot(a: &[f32], b: &[f32]) -> f32 {
    let mut l = [0.0f32; 8];
    let mut ca = a.chunks_exact(8);
    let mut cb = b.chunks_exact(8);
    for (x, y) in (&mut ca).zip(&mut cb) {
        for j in 0..8 {
            l[j] += x[j] * y[j];
        }
    }
    for (j, (x, y)) in ca.remainder().iter().zip(cb.remainder()).enumerate() {
        l[j] += x * y;
    }
    ((l[0] + l[4]) + (l[2] + l[6])) + ((l[1] + l[5]) + (l[3] + l[7]))
}

struct Scratch {
    scores: Vec<f32>,
    row: Vec<f32>,
}

thread_local! {
    static SCRATCH: RefCell<Scratch> = const { RefCell::new(Scratch { scores: Vec::new(), row: Vec::new() }) };
}

/// `o_lat[t, h] = Σ_p softmax_p(scale·(q_lat·c_p + q_pe·k_pe_p)) · c_p` over positions
/// `0..=pos_t` of t's sequence. One task per (token, group of heads); the grouping only
/// shares the cache reads and does not change any result.
#[allow(clippy::too_many_arguments)]
fn attend(
    pool: &ThreadPool,
    kv: &KvCache,
    layer: usize,
    batch: &Batch,
    c: &DeepSeekConfig,
    scale: f32,
    q_lat: &[f32],
    q_pe: &[f32],
    o_lat: &mut [f32],
) {
    let (nh, r, dr) = (c.n_heads, c.kv_lora_rank, c.qk_rope_head_dim);
    let kw = r + dr;
    let store = match kv.dtype() {
        KvDtype::F32 => Rows::F32(kv.layer_f32(layer).0),
        KvDtype::F16 => Rows::F16(kv.layer(layer).0),
    };
    let toks: Vec<(usize, usize)> = batch
        .seqs
        .iter()
        .enumerate()
        .flat_map(|(si, s)| (0..s.len).map(move |i| (si, i)))
        .collect();
    if toks.is_empty() {
        return;
    }
    let groups = (pool.threads() * 4).div_ceil(toks.len()).clamp(1, nh);
    let hc = nh.div_ceil(groups);
    let groups = nh.div_ceil(hc);
    let ptr = SharedMut::new(o_lat);
    pool.run(toks.len() * groups, |task| {
        let (si, i) = toks[task / groups];
        let h0 = (task % groups) * hc;
        let h1 = (h0 + hc).min(nh);
        let s = &batch.seqs[si];
        let row = s.start + i;
        let n = s.pos0 + i + 1;
        // SAFETY: each (row, head range) output slice is written by exactly one task.
        let out = unsafe { ptr.slice((row * nh + h0) * r, (h1 - h0) * r) };
        SCRATCH.with(|sc| {
            let sc = &mut *sc.borrow_mut();
            sc.scores.clear();
            sc.scores.resize((h1 - h0) * n, 0.0);
            sc.row.resize(kw, 0.0);
            for p in 0..n {
                let cr = store.get(kv.slot(&s.block_table, p), kw, &mut sc.row);
                for hh in h0..h1 {
                    let ql = &q_lat[(row * nh + hh) * r..(row * nh + hh + 1) * r];
                    let qp = &q_pe[(row * nh + hh) * dr..(row * nh + hh + 1) * dr];
                    sc.scores[(hh - h0) * n + p] = (dot(ql, &cr[..r]) + dot(qp, &cr[r..])) * scale;
                }
            }
            for sh in sc.scores.chunks_exact_mut(n) {
                let m = sh.iter().copied().fold(f32::NEG_INFINITY, f32::max);
                let mut sum = 0.0f32;
                for v in sh.iter_mut() {
                    *v = (*v - m).exp();
                    sum += *v;
                }
                for v in sh.iter_mut() {
                    *v /= sum;
                }
            }
            out.fill(0.0);
            for p in 0..n {
                let cr = store.get(kv.slot(&s.block_table, p), kw, &mut sc.row);
                for (j, acc) in out.chunks_exact_mut(r).enumerate() {
                    let wgt = sc.scores[j * n + p];
                    for (a, &x) in acc.iter_mut().zip(&cr[..r]) {
                        *a += wgt * x;
                    }
                }
            }
        });
    });
}
