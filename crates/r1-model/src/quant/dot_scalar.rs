//! Portable kernels: exact integer sums and ggml's float accumulation order (see the module
//! docs of `quant`). The SIMD kernels must reproduce these bit for bit.
//!
//! Every block type but Q4_K splits a block's integer dot product into 8 lanes the way
//! ggml's AVX2 code does (`lane(e) = (e % 32) / 4`: lane `i` of each 32-element chunk holds
//! elements `4i..4i+4`), converts each lane to f32 and fused-multiply-adds it with the block
//! scale into an 8-lane accumulator; [`hsum8`] finishes. Q4_K follows llama.cpp's repacked
//! kernel instead (one accumulator, see `dot_q45k`).

use super::dequant::q6_k_values;
use super::gemm::OutPtr;
use super::util::*;
use super::GgmlType;

/// Calls `dot(w_row, a_row)` for every (row, token) pair; lengths are checked by the caller.
#[inline(always)]
pub(crate) fn gemm_rows(
    ty: GgmlType,
    k: usize,
    w: &[u8],
    a: &[u8],
    n: usize,
    out: OutPtr,
    dot: impl Fn(&[u8], &[u8]) -> f32,
) {
    let wrow = ty.row_bytes(k).unwrap();
    let arow = super::vec_dot_type(ty).row_bytes(k).unwrap();
    for (r, wr) in w.chunks_exact(wrow).enumerate() {
        for (t, ar) in a.chunks_exact(arow).take(n).enumerate() {
            // SAFETY: the caller's `OutPtr` covers every (row, token) of this call.
            unsafe { out.write(r, t, dot(wr, ar)) };
        }
    }
}

#[inline(always)]
fn q8(y: &[u8], off: usize, j: usize) -> i32 {
    y[off + j] as i8 as i32
}

/// `acc[i] = fma(d, lanes[i], acc[i])`, as `_mm256_fmadd_ps` does per lane.
#[inline(always)]
fn fma_lanes(acc: &mut [f32; 8], d: f32, lanes: &[i32; 8]) {
    for (a, &l) in acc.iter_mut().zip(lanes) {
        *a = d.mul_add(l as f32, *a);
    }
}

/// The 8 ggml lanes of `Σ_e v(e) * y[e]` over `len` elements (quants of `y` at `off`).
#[inline(always)]
fn lanes_of(len: usize, y: &[u8], off: usize, v: impl Fn(usize) -> i32) -> [i32; 8] {
    let mut l = [0i32; 8];
    for e in 0..len {
        l[(e % 32) / 4] += v(e) * q8(y, off, e);
    }
    l
}

// ---- 32-element blocks -------------------------------------------------------------------

/// ggml's `ggml_vec_dot_{q4_0,q5_0,q8_0}_q8_0` / `{q4_1,q5_1}_q8_1` (AVX2): per block
/// `acc = fma(dx*dy, lanes, acc)`, for min types also `summs = fma(mx, sy, summs)`; the
/// result is `hsum8(acc) [+ summs]`. `val(x, e)` is element `e`'s integer weight value.
#[inline(always)]
fn dot_b32(
    w: &[u8],
    a: &[u8],
    wb: usize,
    ab: usize,
    has_min: bool,
    val: impl Fn(&[u8], usize) -> i32,
) -> f32 {
    let aq = if has_min { 4 } else { 2 };
    let mut acc = [0f32; 8];
    let mut summs = 0f32;
    for (x, y) in w.chunks_exact(wb).zip(a.chunks_exact(ab)) {
        let lanes = lanes_of(32, y, aq, |e| val(x, e));
        fma_lanes(&mut acc, rd_f16(x, 0) * rd_f16(y, 0), &lanes);
        if has_min {
            summs = rd_f16(x, 2).mul_add(rd_f16(y, 2), summs);
        }
    }
    let s = hsum8(&acc);
    if has_min {
        s + summs
    } else {
        s
    }
}

/// Nibble `e` of a 32-element block whose 16 quant bytes start at `off` (low nibbles are
/// elements 0..16, high nibbles 16..32).
#[inline(always)]
fn nib(x: &[u8], off: usize, e: usize) -> i32 {
    if e < 16 {
        (x[off + e] & 0xF) as i32
    } else {
        (x[off + e - 16] >> 4) as i32
    }
}

/// Fifth bit of element `e` (bit `e` of the little-endian u32 at `off`) as 0 or 16.
#[inline(always)]
fn bit5(x: &[u8], off: usize, e: usize) -> i32 {
    (((rd_u32(x, off) >> e) & 1) << 4) as i32
}

pub(crate) fn gemm_q4_0(k: usize, w: &[u8], a: &[u8], n: usize, out: OutPtr) {
    gemm_rows(GgmlType::Q4_0, k, w, a, n, out, |wr, ar| {
        dot_b32(wr, ar, 18, 34, false, |x, e| nib(x, 2, e) - 8)
    })
}

pub(crate) fn gemm_q4_1(k: usize, w: &[u8], a: &[u8], n: usize, out: OutPtr) {
    gemm_rows(GgmlType::Q4_1, k, w, a, n, out, |wr, ar| {
        dot_b32(wr, ar, 20, 36, true, |x, e| nib(x, 4, e))
    })
}

pub(crate) fn gemm_q5_0(k: usize, w: &[u8], a: &[u8], n: usize, out: OutPtr) {
    gemm_rows(GgmlType::Q5_0, k, w, a, n, out, |wr, ar| {
        dot_b32(wr, ar, 22, 34, false, |x, e| {
            (nib(x, 6, e) | bit5(x, 2, e)) - 16
        })
    })
}

pub(crate) fn gemm_q5_1(k: usize, w: &[u8], a: &[u8], n: usize, out: OutPtr) {
    gemm_rows(GgmlType::Q5_1, k, w, a, n, out, |wr, ar| {
        dot_b32(wr, ar, 24, 36, true, |x, e| nib(x, 8, e) | bit5(x, 4, e))
    })
}

pub(crate) fn gemm_q8_0(k: usize, w: &[u8], a: &[u8], n: usize, out: OutPtr) {
    gemm_rows(GgmlType::Q8_0, k, w, a, n, out, |wr, ar| {
        dot_b32(wr, ar, 34, 34, false, |x, e| q8(x, 2, e))
    })
}

// ---- K-quants (super-blocks of 256 against Q8_K) --------------------------------------------

const Q8K: usize = 292;

#[inline(always)]
fn bsum(y: &[u8], g: usize) -> i32 {
    rd_i16(y, 4 + QK_K + 2 * g) as i32
}

/// ggml's `-y.d * fp16(dmin)`.
#[inline(always)]
fn neg_dmin(dy: f32, x: &[u8], off: usize) -> f32 {
    -dy * rd_f16(x, off)
}

/// `mins[2k]*(bs[4k]+bs[4k+1]) + mins[2k+1]*(bs[4k+2]+bs[4k+3])` for k in 0..4: ggml's
/// Q4_K / Q5_K min products (`hadd` of the group sums, then `madd` with the 8 mins); only
/// their exact sum is used.
#[inline(always)]
fn min_prods_k4(mn: &[u8; 8], y: &[u8]) -> [i32; 4] {
    core::array::from_fn(|k| {
        let s = |g: usize| bsum(y, 2 * g) + bsum(y, 2 * g + 1);
        mn[2 * k] as i32 * s(2 * k) + mn[2 * k + 1] as i32 * s(2 * k + 1)
    })
}

/// Q4_K / Q5_K element values (without scale) from the super-block bytes.
#[inline(always)]
fn q45k_val(x: &[u8], high: bool, e: usize) -> i32 {
    let (j, l, hi) = (e / 64, e % 32, (e / 32) % 2 == 1);
    let qs = if high { 48 } else { 16 };
    let q = x[qs + 32 * j + l];
    let mut v = if hi { q >> 4 } else { q & 0xF } as i32;
    if high {
        v += (((x[16 + l] >> (e / 32)) & 1) as i32) << 4;
    }
    v
}

/// Q4_K (`high = false`) in the order of llama.cpp's x86 repacked kernel
/// (`ggml_gemv_q4_K_8x8_q8_K`, which llama.cpp uses for Q4_K weights on AVX2 CPUs): per
/// super-block the exact sums `S = Σ sc*q*y` and `M = Σ mins*bsums`,
/// `acc = fma(S, dx*dy, acc)`, `acc_m = fma(M, dminx*dy, acc_m)`, result `acc - acc_m`.
/// Q5_K (`high = true`) in the order of `ggml_vec_dot_q5_K_q8_K` (AVX2).
#[inline(always)]
fn dot_q45k(w: &[u8], a: &[u8], high: bool) -> f32 {
    let wb = if high { 176 } else { 144 };
    let mut acc = [0f32; 8];
    let (mut acc1, mut acc_m) = (0f32, 0f32);
    let mut summs = 0f32;
    for (x, y) in w.chunks_exact(wb).zip(a.chunks_exact(Q8K)) {
        let dy = rd_f32(y, 0);
        let (sc, mn) = scales_mins_k4(&x[4..16]);
        let lanes = lanes_of(QK_K, y, 4, |e| sc[e / 32] as i32 * q45k_val(x, high, e));
        let m: i32 = min_prods_k4(&mn, y).iter().sum();
        if high {
            summs = (m as f32).mul_add(neg_dmin(dy, x, 2), summs);
            fma_lanes(&mut acc, dy * rd_f16(x, 0), &lanes);
        } else {
            let s: i32 = lanes.iter().sum();
            acc1 = (s as f32).mul_add(rd_f16(x, 0) * dy, acc1);
            acc_m = (m as f32).mul_add(rd_f16(x, 2) * dy, acc_m);
        }
    }
    if high {
        hsum8(&acc) + summs
    } else {
        acc1 - acc_m
    }
}

pub(crate) fn gemm_q4_k(k: usize, w: &[u8], a: &[u8], n: usize, out: OutPtr) {
    gemm_rows(GgmlType::Q4_K, k, w, a, n, out, |wr, ar| {
        dot_q45k(wr, ar, false)
    })
}

pub(crate) fn gemm_q5_k(k: usize, w: &[u8], a: &[u8], n: usize, out: OutPtr) {
    gemm_rows(GgmlType::Q5_K, k, w, a, n, out, |wr, ar| {
        dot_q45k(wr, ar, true)
    })
}

/// `ggml_vec_dot_q6_K_q8_K` (AVX2): lanes of the unsigned 6-bit values times scales, minus
/// lane `i`'s share `32 * (bs[2i]*sc[2i] + bs[2i+1]*sc[2i+1])` of the offset correction.
pub(crate) fn gemm_q6_k(k: usize, w: &[u8], a: &[u8], n: usize, out: OutPtr) {
    gemm_rows(GgmlType::Q6_K, k, w, a, n, out, |wr, ar| {
        let mut acc = [0f32; 8];
        for (x, y) in wr.chunks_exact(210).zip(ar.chunks_exact(Q8K)) {
            let v = q6_k_values(x);
            let sc = |g: usize| (x[192 + g] as i8) as i32;
            let mut lanes = lanes_of(QK_K, y, 4, |e| sc(e / 16) * v[e] as i32);
            for (i, l) in lanes.iter_mut().enumerate() {
                *l -= (bsum(y, 2 * i) * sc(2 * i) + bsum(y, 2 * i + 1) * sc(2 * i + 1)) << 5;
            }
            fma_lanes(&mut acc, rd_f32(y, 0) * rd_f16(x, 208), &lanes);
        }
        hsum8(&acc)
    })
}

/// `ggml_vec_dot_q2_K_q8_K` (AVX2): per block first `fma(dmin, min lanes)`, then
/// `fma(d, lanes)`, both into the same accumulator.
pub(crate) fn gemm_q2_k(k: usize, w: &[u8], a: &[u8], n: usize, out: OutPtr) {
    gemm_rows(GgmlType::Q2_K, k, w, a, n, out, |wr, ar| {
        let mut acc = [0f32; 8];
        for (x, y) in wr.chunks_exact(84).zip(ar.chunks_exact(Q8K)) {
            let dy = rd_f32(y, 0);
            let sc = &x[0..16];
            let mins: [i32; 8] = core::array::from_fn(|i| {
                bsum(y, 2 * i) * (sc[2 * i] >> 4) as i32
                    + bsum(y, 2 * i + 1) * (sc[2 * i + 1] >> 4) as i32
            });
            fma_lanes(&mut acc, neg_dmin(dy, x, 82), &mins);
            // element e = 128*h + 32*s + l: byte qs[32*h + l] bits 2s..2s+1, group e/16
            let lanes = lanes_of(QK_K, y, 4, |e| {
                let (h, s, l) = (e / 128, (e / 32) % 4, e % 32);
                let q = (x[16 + 32 * h + l] >> (2 * s)) & 3;
                (sc[e / 16] & 0xF) as i32 * q as i32
            });
            fma_lanes(&mut acc, dy * rd_f16(x, 80), &lanes);
        }
        hsum8(&acc)
    })
}

/// `ggml_vec_dot_q3_K_q8_K` (AVX2).
pub(crate) fn gemm_q3_k(k: usize, w: &[u8], a: &[u8], n: usize, out: OutPtr) {
    gemm_rows(GgmlType::Q3_K, k, w, a, n, out, |wr, ar| {
        let mut acc = [0f32; 8];
        for (x, y) in wr.chunks_exact(110).zip(ar.chunks_exact(Q8K)) {
            let sc = scales_q3k(&x[96..108]);
            let lanes = lanes_of(QK_K, y, 4, |e| {
                let (h, s, l) = (e / 128, (e / 32) % 4, e % 32);
                let q = ((x[32 + 32 * h + l] >> (2 * s)) & 3) as i32;
                let hbit = (x[l] >> (4 * h + s)) & 1;
                sc[e / 16] as i32 * (q - if hbit != 0 { 0 } else { 4 })
            });
            fma_lanes(&mut acc, rd_f32(y, 0) * rd_f16(x, 108), &lanes);
        }
        hsum8(&acc)
    })
}
