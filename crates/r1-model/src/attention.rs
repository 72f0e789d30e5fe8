//! Causal GQA attention of a flattened batch over the paged f16 KV cache.
//!
//! Numerics follow ggml's CPU flash attention (`flash_attn_ext_f16_one_chunk`), the path
//! llama.cpp takes for decode and short prompts: the query is rounded to f16, scores are f32
//! dot products with the f16 keys, the softmax is online, and the value accumulator is kept in
//! f16 (rounded after every rescale and every added value). Matching it is what makes greedy
//! output token-identical to llama.cpp's on the reference prompts.
//!
//! Every query row walks its keys in position order 0..=pos with that one algorithm, so its
//! result depends only on the query and the cached K/V — not on which other sequences share
//! the batch, how the prompt was chunked, or whether the prefix came from the prefix cache.
//! (llama.cpp itself switches to a tiled f32 algorithm for 64+ query rows, so its output does
//! depend on the batch.)

use std::cell::RefCell;

use crate::batch::Batch;
use crate::f16;
use crate::kv_cache::KvCache;
use crate::ops::SharedMut;
use crate::pool::ThreadPool;

pub struct AttnShape {
    pub n_heads: usize,
    pub n_kv_heads: usize,
    pub head_dim: usize,
    pub scale: f32,
}

/// Store the new tokens' K and V (`[T, width]` each, f32) in their cache slots as f16.
pub fn write_kv(kv: &mut KvCache, layer: usize, batch: &Batch, k: &[f32], v: &[f32]) {
    let (kw, vw) = (kv.layout().k_width, kv.layout().v_width);
    let slots: Vec<(usize, usize)> = batch
        .seqs
        .iter()
        .flat_map(|s| (0..s.len).map(move |i| (s, i)))
        .map(|(s, i)| (s.start + i, kv.slot(&s.block_table, s.pos0 + i)))
        .collect();
    let (kc, vc) = kv.layer_mut(layer);
    for (row, slot) in slots {
        for (d, &x) in kc[slot * kw..(slot + 1) * kw]
            .iter_mut()
            .zip(&k[row * kw..(row + 1) * kw])
        {
            *d = f16::from_f32(x);
        }
        for (d, &x) in vc[slot * vw..(slot + 1) * vw]
            .iter_mut()
            .zip(&v[row * vw..(row + 1) * vw])
        {
            *d = f16::from_f32(x);
        }
    }
}

/// Per-thread scratch: the f16-rounded query and the f16 value accumulator (held as f32
/// values that are always exactly representable in f16).
struct Scratch {
    q: Vec<f32>,
    acc: Vec<f32>,
}

thread_local! {
    static SCRATCH: RefCell<Scratch> = const { RefCell::new(Scratch { q: Vec::new(), acc: Vec::new() }) };
}

/// `q · k` for an f16-valued query and f16 keys, summed in exactly the order of ggml's
/// AVX-512 `ggml_vec_dot_f16` (four 16-lane accumulators over 64-element steps, a fixed
/// reduction tree, leftovers added in f64). Products of two f16 values are exact in f32, so
/// plain multiply-add equals the FMA ggml uses.
#[inline]
fn dot_f16(q: &[f32], k: &[u16], table: &[f32]) -> f32 {
    let n = q.len();
    let np = n & !63;
    let mut acc = [[0.0f32; 16]; 4];
    for i in (0..np).step_by(64) {
        for (j, a) in acc.iter_mut().enumerate() {
            for (l, x) in a.iter_mut().enumerate() {
                let e = i + 16 * j + l;
                *x += q[e] * table[k[e] as usize];
            }
        }
    }
    // GGML_F32x16_REDUCE: x0 += x2, x1 += x3; x0 += x1; then _mm512_reduce_add_ps.
    let mut v = [0.0f32; 16];
    for l in 0..16 {
        v[l] = (acc[0][l] + acc[2][l]) + (acc[1][l] + acc[3][l]);
    }
    let mut t3 = [0.0f32; 8];
    for m in 0..8 {
        t3[m] = v[8 + m] + v[m];
    }
    let mut t6 = [0.0f32; 4];
    for m in 0..4 {
        t6[m] = t3[4 + m] + t3[m];
    }
    let mut sum = ((t6[0] + t6[2]) + (t6[1] + t6[3])) as f64;
    for e in np..n {
        sum += (q[e] * table[k[e] as usize]) as f64;
    }
    sum as f32
}

/// One query row against keys/values `slots` (in position order), ggml's online softmax.
#[allow(clippy::too_many_arguments)]
fn attend_row(
    q: &[f32],
    slots: impl Iterator<Item = usize>,
    kc: &[u16],
    vc: &[u16],
    (kw, vw): (usize, usize),
    (koff, voff): (usize, usize),
    scale: f32,
    scratch: &mut Scratch,
    out: &mut [f32],
) {
    let table = f16::table();
    let hd = q.len();
    let dv = out.len();
    scratch.q.clear();
    scratch.q.extend(q.iter().map(|&x| f16::round(x)));
    scratch.acc.clear();
    scratch.acc.resize(dv, 0.0);
    let (qh, acc) = (&scratch.q, &mut scratch.acc);
    let mut m = f32::NEG_INFINITY;
    let mut sum = 0.0f32;
    for slot in slots {
        let kvec = &kc[slot * kw + koff..slot * kw + koff + hd];
        let s = dot_f16(qh, kvec, table) * scale;
        let mut ms = 1.0f32;
        let mut vs = 1.0f32;
        if s > m {
            ms = (m - s).exp();
            m = s;
            for a in acc.iter_mut() {
                *a = f16::round(*a * ms);
            }
        } else {
            vs = (s - m).exp();
        }
        let vvec = &vc[slot * vw + voff..slot * vw + voff + dv];
        for (a, &v) in acc.iter_mut().zip(vvec) {
            *a = f16::round(table[v as usize].mul_add(vs, *a));
        }
        sum = sum * ms + vs;
    }
    let inv = if sum == 0.0 { 0.0 } else { 1.0 / sum };
    for (o, &a) in out.iter_mut().zip(acc.iter()) {
        *o = a * inv;
    }
}

/// `out[t, h*hd..]` = softmax(q_t,h · K) · V over positions `0..=pos_t` of t's sequence.
/// `q` is `[T, n_heads * head_dim]`; the new tokens' K/V must already be in the cache.
pub fn attention(
    pool: &ThreadPool,
    kv: &KvCache,
    layer: usize,
    batch: &Batch,
    shape: &AttnShape,
    q: &[f32],
    out: &mut [f32],
) {
    let AttnShape {
        n_heads,
        n_kv_heads,
        head_dim: hd,
        scale,
    } = *shape;
    let group = n_heads / n_kv_heads;
    let (kc, vc) = kv.layer(layer);
    let widths = (kv.layout().k_width, kv.layout().v_width);
    let tasks: Vec<(usize, usize)> = batch
        .seqs
        .iter()
        .enumerate()
        .flat_map(|(si, s)| (0..s.len).map(move |i| (si, i)))
        .collect();
    let qd = n_heads * hd;
    let ptr = SharedMut::new(out);
    // One task per (token, head).
    pool.run(tasks.len() * n_heads, |task| {
        let (si, i) = tasks[task / n_heads];
        let h = task % n_heads;
        let s = &batch.seqs[si];
        let row = s.start + i;
        let pos = s.pos0 + i;
        let kvh = h / group;
        let qv = &q[row * qd + h * hd..row * qd + (h + 1) * hd];
        // SAFETY: each (row, head) output slice is written by exactly one task.
        let o = unsafe { ptr.slice(row * qd + h * hd, hd) };
        let slots = (0..=pos).map(|p| kv.slot(&s.block_table, p));
        SCRATCH.with(|sc| {
            attend_row(
                qv,
                slots,
                kc,
                vc,
                widths,
                (kvh * hd, kvh * hd),
                scale,
                &mut sc.borrow_mut(),
                o,
            )
        });
    });
}
