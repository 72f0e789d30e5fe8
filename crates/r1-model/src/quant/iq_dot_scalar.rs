//! Portable dot kernels of the i-quants against Q8_K activations (IQ4_NL: Q8_0), in the
//! float order of ggml's reference kernels (`ggml_vec_dot_iq*_generic` in ggml-cpu/quants.c,
//! with `sumf += d * x` contracted to one fused multiply-add as GCC does for x86 with FMA):
//!
//! * IQ2_XXS / IQ2_XS / IQ2_S / IQ3_XXS / IQ3_S: per super-block the exact integer sum
//!   `B = Σ (2s+1) * v * q` over its 16-element scales, `sumf = fma(dx*dy, B, sumf)`; the
//!   result is `c * sumf` with `c` = 1/8 (IQ2), 1/4 (IQ3_XXS) or 1 (IQ3_S).
//! * IQ1_S / IQ1_M: the exact sums `S = Σ ls * v * q` and `D = Σ ls * ±Σq` (the ±1/8 offsets,
//!   IQ1_S from the activation's 16-element block sums), `sumf = fma(dx*dy, S + D/8, sumf)`.
//! * IQ4_XS: per 32 elements `sumf = fma(dx*dy*(ls-32), Σ v*q, sumf)`; IQ4_NL per 32-element
//!   block `sumf = fma(dy*dx, Σ v*q, sumf)`.
//!
//! The result per (row, token) depends only on those sums and order, not on how many tokens
//! a call covers: each weight block is decoded once and dotted with up to [`TC`] tokens.
//! SIMD kernels must reproduce these bit for bit.

use super::gemm::OutPtr;
use super::iq_dequant::{decode_grid, decode_iq1, iq4_values, iq4_xs_scale, GridBlock, Iq1Block};
use super::iq_grids::{IQ1M_DELTA, IQ1S_DELTA};
use super::util::*;
use super::GgmlType;

/// Tokens whose accumulators are kept while one weight row's blocks are decoded.
const TC: usize = 16;

/// For each weight row and chunk of up to [`TC`] tokens: decodes each weight block once, and
/// folds it into every token's accumulator with `step(decoded, activation block, acc)`;
/// writes `finish(acc)`. Lengths are checked by the caller.
#[allow(clippy::too_many_arguments)]
#[inline(always)]
fn gemm_blocks<D>(
    ty: GgmlType,
    k: usize,
    w: &[u8],
    a: &[u8],
    n: usize,
    out: OutPtr,
    decode: impl Fn(&[u8]) -> D,
    step: impl Fn(&D, &[u8], f32) -> f32,
    finish: impl Fn(f32) -> f32,
) {
    let wb = ty.type_size();
    let ab = super::vec_dot_type(ty).type_size();
    let nb = k / ty.block_size();
    let arow = nb * ab;
    for (r, wr) in w.chunks_exact(nb * wb).enumerate() {
        for t0 in (0..n).step_by(TC) {
            let tn = TC.min(n - t0);
            let mut acc = [0f32; TC];
            for (i, x) in wr.chunks_exact(wb).enumerate() {
                let blk = decode(x);
                for (j, s) in acc[..tn].iter_mut().enumerate() {
                    let off = (t0 + j) * arow + i * ab;
                    *s = step(&blk, &a[off..off + ab], *s);
                }
            }
            for (j, &s) in acc[..tn].iter().enumerate() {
                // SAFETY: the caller's `OutPtr` covers every (row, token) of this call.
                unsafe { out.write(r, t0 + j, finish(s)) };
            }
        }
    }
}

/// `Σ v[e] * q[e]` (`q`: activation quants as bytes).
#[inline(always)]
fn isum(v: &[i8], q: &[u8]) -> i32 {
    v.iter()
        .zip(q)
        .map(|(&v, &q)| v as i32 * q as i8 as i32)
        .sum()
}

/// Exact `Σ (2s+1) * v * q` of a decoded grid super-block with a Q8_K block's quants.
#[inline(always)]
fn grid_bsum(blk: &GridBlock, q: &[u8]) -> i32 {
    (0..16)
        .map(|g| {
            let r = 16 * g..16 * g + 16;
            isum(&blk.v[r.clone()], &q[r]) * (2 * blk.s[g] as i32 + 1)
        })
        .sum()
}

fn gemm_grid(ty: GgmlType, k: usize, w: &[u8], a: &[u8], n: usize, out: OutPtr) {
    let c = match ty {
        GgmlType::IQ3_S => 1.0,
        GgmlType::IQ3_XXS => 0.25,
        _ => 0.125f32,
    };
    gemm_blocks(
        ty,
        k,
        w,
        a,
        n,
        out,
        |x| (rd_f16(x, 0), decode_grid(ty, x)),
        |(dx, blk), y, sumf| {
            let d = dx * rd_f32(y, 0);
            d.mul_add(grid_bsum(blk, &y[4..4 + QK_K]) as f32, sumf)
        },
        // (IQ3_S: c = 1, an exact identity)
        |sumf| c * sumf,
    )
}

pub(crate) fn gemm_iq2_xxs(k: usize, w: &[u8], a: &[u8], n: usize, out: OutPtr) {
    gemm_grid(GgmlType::IQ2_XXS, k, w, a, n, out)
}

pub(crate) fn gemm_iq2_xs(k: usize, w: &[u8], a: &[u8], n: usize, out: OutPtr) {
    gemm_grid(GgmlType::IQ2_XS, k, w, a, n, out)
}

pub(crate) fn gemm_iq2_s(k: usize, w: &[u8], a: &[u8], n: usize, out: OutPtr) {
    gemm_grid(GgmlType::IQ2_S, k, w, a, n, out)
}

pub(crate) fn gemm_iq3_xxs(k: usize, w: &[u8], a: &[u8], n: usize, out: OutPtr) {
    gemm_grid(GgmlType::IQ3_XXS, k, w, a, n, out)
}

pub(crate) fn gemm_iq3_s(k: usize, w: &[u8], a: &[u8], n: usize, out: OutPtr) {
    gemm_grid(GgmlType::IQ3_S, k, w, a, n, out)
}

/// The exact sums `(S, D)` of an IQ1 super-block with a Q8_K block: `S = Σ ls * v * q`,
/// `D = Σ ls * ±(Σ q)` per group of the offset's sign (IQ1_S: 32 elements, summed from the
/// activation's stored 16-element sums as ggml does; IQ1_M: 8 elements).
#[inline(always)]
fn iq1_sums(ty: GgmlType, blk: &Iq1Block, y: &[u8]) -> (i32, i32) {
    let q = &y[4..4 + QK_K];
    let mut s = 0i32;
    let mut dsum = 0i32;
    for g in 0..32 {
        let r = 8 * g..8 * g + 8;
        s += blk.ls[g] as i32 * isum(&blk.v[r.clone()], &q[r.clone()]);
        if ty == GgmlType::IQ1_M {
            let qs: i32 = q[r].iter().map(|&b| b as i8 as i32).sum();
            let sign = if blk.neg & (1 << g) != 0 { -1 } else { 1 };
            dsum += blk.ls[g] as i32 * sign * qs;
        }
    }
    if ty == GgmlType::IQ1_S {
        for ib in 0..8 {
            let bs = rd_i16(y, 4 + QK_K + 4 * ib) as i32 + rd_i16(y, 6 + QK_K + 4 * ib) as i32;
            let sign = if blk.neg & (1 << (4 * ib)) != 0 {
                -1
            } else {
                1
            };
            dsum += blk.ls[4 * ib] as i32 * sign * bs;
        }
    }
    (s, dsum)
}

fn gemm_iq1(ty: GgmlType, k: usize, w: &[u8], a: &[u8], n: usize, out: OutPtr) {
    let delta = if ty == GgmlType::IQ1_S {
        IQ1S_DELTA
    } else {
        IQ1M_DELTA
    };
    gemm_blocks(
        ty,
        k,
        w,
        a,
        n,
        out,
        |x| decode_iq1(ty, x),
        |blk, y, sumf| {
            let (s, dsum) = iq1_sums(ty, blk, y);
            // `s + delta*dsum`: the product is exact (delta is 1/8)
            let t = s as f32 + delta * dsum as f32;
            (blk.d * rd_f32(y, 0)).mul_add(t, sumf)
        },
        |sumf| sumf,
    )
}

pub(crate) fn gemm_iq1_s(k: usize, w: &[u8], a: &[u8], n: usize, out: OutPtr) {
    gemm_iq1(GgmlType::IQ1_S, k, w, a, n, out)
}

pub(crate) fn gemm_iq1_m(k: usize, w: &[u8], a: &[u8], n: usize, out: OutPtr) {
    gemm_iq1(GgmlType::IQ1_M, k, w, a, n, out)
}

/// IQ4_NL against Q8_0 (d f16 @0, qs[32] @2), per 32-element block.
pub(crate) fn gemm_iq4_nl(k: usize, w: &[u8], a: &[u8], n: usize, out: OutPtr) {
    gemm_blocks(
        GgmlType::IQ4_NL,
        k,
        w,
        a,
        n,
        out,
        |x| (rd_f16(x, 0), iq4_values(&x[2..18])),
        |(dx, v), y, sumf| {
            let d = rd_f16(y, 0) * dx;
            d.mul_add(isum(v, &y[2..34]) as f32, sumf)
        },
        |sumf| sumf,
    )
}

/// IQ4_XS (d @0, scales_h @2, scales_l @4, qs @8) against Q8_K.
pub(crate) fn gemm_iq4_xs(k: usize, w: &[u8], a: &[u8], n: usize, out: OutPtr) {
    gemm_blocks(
        GgmlType::IQ4_XS,
        k,
        w,
        a,
        n,
        out,
        |x| {
            let mut v = [0i8; QK_K];
            let mut ls = [0i32; 8];
            for ib in 0..8 {
                v[32 * ib..32 * ib + 32].copy_from_slice(&iq4_values(&x[8 + 16 * ib..]));
                ls[ib] = iq4_xs_scale(x, ib) - 32;
            }
            (rd_f16(x, 0), v, ls)
        },
        |(dx, v, ls), y, mut sumf| {
            let d4d8 = dx * rd_f32(y, 0);
            let q = &y[4..4 + QK_K];
            for ((vb, qb), &l) in v.chunks_exact(32).zip(q.chunks_exact(32)).zip(ls) {
                sumf = (d4d8 * l as f32).mul_add(isum(vb, qb) as f32, sumf);
            }
            sumf
        },
        |sumf| sumf,
    )
}
