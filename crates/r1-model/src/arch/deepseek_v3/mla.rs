//! Multi-head Latent Attention over the paged latent cache.
//!
//! The cache holds, per token and layer, only `c_kv` (the `kv_a_layernorm` output,
//! `kv_lora_rank` values) and `k_pe` (the roped shared key, `qk_rope_head_dim` values). Keys
//! and values of cached tokens are never expanded per head: the query's nope part is folded
//! through `W_UK` into latent space (`q_lat = W_UKᵀ q_nope`), scores are
//! `q_lat · c_kv + q_pe · k_pe`, the softmax-weighted sum of latents is taken, and `W_UV`
//! maps it to the head's value space afterwards ("weight absorption").
//!
//! Prefill and decode run this one algorithm (`mla_attend.rs`: flash-style tiles and
//! segments at absolute positions), so the result does not depend on the batch, on
//! chunking or on whether the prefix came from the cache.

use super::linear::{linear, linear_heads};
use super::mla_attend;
use super::{DeepSeekConfig, Trace};
use crate::batch::Batch;
use crate::f16;
use crate::kv_cache::{KvCache, KvDtype};
use crate::ops::{self, RopeTable};
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

    // Per head the attention query [q_lat | q_pe]: q_nope absorbed through W_UK (all heads
    // in one region), q_pe roped.
    let mut q_att = vec![0.0f32; t * nh * kw];
    let mut nope = vec![0.0f32; nh * t * dn];
    for hh in 0..nh {
        for i in 0..t {
            let s = (i * nh + hh) * qhd;
            nope[(hh * t + i) * dn..(hh * t + i + 1) * dn].copy_from_slice(&q[s..s + dn]);
            let pe = &mut q_att[(i * nh + hh) * kw + r..(i * nh + hh + 1) * kw];
            pe.copy_from_slice(&q[s + dn..s + qhd]);
            ops::apply_rope(pe, &ropes[i], false);
        }
    }
    let mut lat = vec![0.0f32; nh * t * r];
    linear_heads(pool, &w.k_b, &nope, t, &mut lat);
    for hh in 0..nh {
        for i in 0..t {
            q_att[(i * nh + hh) * kw..(i * nh + hh) * kw + r]
                .copy_from_slice(&lat[(hh * t + i) * r..(hh * t + i + 1) * r]);
        }
    }

    let mut o_lat = vec![0.0f32; t * nh * r];
    mla_attend::attend(
        pool,
        kv,
        layer,
        batch,
        mla_attend::Dims::of(c),
        c.softmax_scale(),
        &q_att,
        &mut o_lat,
    );

    // W_UV per head (all heads in one region), then o_proj.
    for hh in 0..nh {
        for i in 0..t {
            lat[(hh * t + i) * r..(hh * t + i + 1) * r]
                .copy_from_slice(&o_lat[(i * nh + hh) * r..(i * nh + hh + 1) * r]);
        }
    }
    let mut vh = vec![0.0f32; nh * t * dv];
    linear_heads(pool, &w.v_b, &lat, t, &mut vh);
    let mut attn = vec![0.0f32; t * nh * dv];
    for hh in 0..nh {
        for i in 0..t {
            attn[(i * nh + hh) * dv..(i * nh + hh + 1) * dv]
                .copy_from_slice(&vh[(hh * t + i) * dv..(hh * t + i + 1) * dv]);
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
