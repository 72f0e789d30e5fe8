//! Portable kernels: exact integer block sums and the canonical float accumulation order
//! (see the module docs of `quant`). The SIMD kernels must reproduce these bit for bit.

use super::dequant::q6_k_values;
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
    out: &mut [f32],
    dot: impl Fn(&[u8], &[u8]) -> f32,
) {
    let wrow = ty.row_bytes(k).unwrap();
    let arow = super::vec_dot_type(ty).row_bytes(k).unwrap();
    for (wr, o) in w.chunks_exact(wrow).zip(out.chunks_exact_mut(n)) {
        for (ar, ot) in a.chunks_exact(arow).zip(o.iter_mut()) {
            *ot = dot(wr, ar);
        }
    }
}

// ---- 32-element blocks -------------------------------------------------------------------

/// The canonical accumulation of 32-element blocks: block value `(dx*dy)*sumi [+ mx*sy]`
/// into lane `b % 8`, then [`hsum8`].
#[inline(always)]
fn dot_b32(
    w: &[u8],
    a: &[u8],
    wb: usize,
    ab: usize,
    has_min: bool,
    sumi: impl Fn(&[u8], &[u8]) -> i32,
) -> f32 {
    let mut lanes = [0f32; 8];
    for (b, (x, y)) in w.chunks_exact(wb).zip(a.chunks_exact(ab)).enumerate() {
        let s = sumi(x, y) as f32;
        let mut v = (rd_f16(x, 0) * rd_f16(y, 0)) * s;
        if has_min {
            v += rd_f16(x, 2) * rd_f16(y, 2);
        }
        lanes[b % 8] += v;
    }
    hsum8(&lanes)
}

#[inline(always)]
fn q8(y: &[u8], off: usize, j: usize) -> i32 {
    y[off + j] as i8 as i32
}

pub(crate) fn gemm_q4_0(k: usize, w: &[u8], a: &[u8], n: usize, out: &mut [f32]) {
    gemm_rows(GgmlType::Q4_0, k, w, a, n, out, |wr, ar| {
        dot_b32(wr, ar, 18, 34, false, |x, y| {
            let mut s = 0;
            for j in 0..16 {
                s += ((x[2 + j] & 0xF) as i32 - 8) * q8(y, 2, j);
                s += ((x[2 + j] >> 4) as i32 - 8) * q8(y, 2, j + 16);
            }
            s
        })
    })
}

pub(crate) fn gemm_q4_1(k: usize, w: &[u8], a: &[u8], n: usize, out: &mut [f32]) {
    gemm_rows(GgmlType::Q4_1, k, w, a, n, out, |wr, ar| {
        dot_b32(wr, ar, 20, 36, true, |x, y| {
            let mut s = 0;
            for j in 0..16 {
                s += (x[4 + j] & 0xF) as i32 * q8(y, 4, j);
                s += (x[4 + j] >> 4) as i32 * q8(y, 4, j + 16);
            }
            s
        })
    })
}

#[inline(always)]
fn q5_vals(x: &[u8], qh_off: usize, qs_off: usize, j: usize) -> (i32, i32) {
    let qh = rd_u32(x, qh_off);
    let q = x[qs_off + j];
    let lo = (q & 0xF) as u32 | (((qh >> j) & 1) << 4);
    let hi = (q >> 4) as u32 | (((qh >> (j + 16)) & 1) << 4);
    (lo as i32, hi as i32)
}

pub(crate) fn gemm_q5_0(k: usize, w: &[u8], a: &[u8], n: usize, out: &mut [f32]) {
    gemm_rows(GgmlType::Q5_0, k, w, a, n, out, |wr, ar| {
        dot_b32(wr, ar, 22, 34, false, |x, y| {
            let mut s = 0;
            for j in 0..16 {
                let (lo, hi) = q5_vals(x, 2, 6, j);
                s += (lo - 16) * q8(y, 2, j) + (hi - 16) * q8(y, 2, j + 16);
            }
            s
        })
    })
}

pub(crate) fn gemm_q5_1(k: usize, w: &[u8], a: &[u8], n: usize, out: &mut [f32]) {
    gemm_rows(GgmlType::Q5_1, k, w, a, n, out, |wr, ar| {
        dot_b32(wr, ar, 24, 36, true, |x, y| {
            let mut s = 0;
            for j in 0..16 {
                let (lo, hi) = q5_vals(x, 4, 8, j);
                s += lo * q8(y, 4, j) + hi * q8(y, 4, j + 16);
            }
            s
        })
    })
}

pub(crate) fn gemm_q8_0(k: usize, w: &[u8], a: &[u8], n: usize, out: &mut [f32]) {
    gemm_rows(GgmlType::Q8_0, k, w, a, n, out, |wr, ar| {
        dot_b32(wr, ar, 34, 34, false, |x, y| {
            (0..32).map(|j| q8(x, 2, j) * q8(y, 2, j)).sum()
        })
    })
}

// ---- K-quants (super-blocks of 256 against Q8_K) --------------------------------------------

const Q8K: usize = 292;

#[inline(always)]
fn bsum(y: &[u8], g: usize) -> i32 {
    rd_i16(y, 4 + QK_K + 2 * g) as i32
}

/// Canonical K-quant accumulation: block values in block order into one f32.
#[inline(always)]
fn dot_k(w: &[u8], a: &[u8], wb: usize, block: impl Fn(&[u8], &[u8], f32) -> f32) -> f32 {
    let mut acc = 0f32;
    for (x, y) in w.chunks_exact(wb).zip(a.chunks_exact(Q8K)) {
        acc += block(x, y, rd_f32(y, 0));
    }
    acc
}

/// Q4_K / Q5_K block value from its integer parts: `(dx*dy)*isum - (dminx*dy)*summs`.
#[inline(always)]
pub(crate) fn kq_value(x: &[u8], dy: f32, isum: i32, summs: i32) -> f32 {
    (rd_f16(x, 0) * dy) * isum as f32 - (rd_f16(x, 2) * dy) * summs as f32
}

/// Σ_g bsums[g] * mins[g/2] for Q4_K / Q5_K.
#[inline(always)]
fn summs_k4(mn: &[u8; 8], y: &[u8]) -> i32 {
    (0..16).map(|g| bsum(y, g) * mn[g / 2] as i32).sum()
}

pub(crate) fn gemm_q4_k(k: usize, w: &[u8], a: &[u8], n: usize, out: &mut [f32]) {
    gemm_rows(GgmlType::Q4_K, k, w, a, n, out, |wr, ar| {
        dot_k(wr, ar, 144, |x, y, dy| {
            let (sc, mn) = scales_mins_k4(&x[4..16]);
            let mut isum = 0;
            for j in 0..4 {
                let (mut s1, mut s2) = (0, 0);
                for l in 0..32 {
                    let q = x[16 + 32 * j + l];
                    s1 += (q & 0xF) as i32 * q8(y, 4, 64 * j + l);
                    s2 += (q >> 4) as i32 * q8(y, 4, 64 * j + 32 + l);
                }
                isum += sc[2 * j] as i32 * s1 + sc[2 * j + 1] as i32 * s2;
            }
            kq_value(x, dy, isum, summs_k4(&mn, y))
        })
    })
}

pub(crate) fn gemm_q5_k(k: usize, w: &[u8], a: &[u8], n: usize, out: &mut [f32]) {
    gemm_rows(GgmlType::Q5_K, k, w, a, n, out, |wr, ar| {
        dot_k(wr, ar, 176, |x, y, dy| {
            let (sc, mn) = scales_mins_k4(&x[4..16]);
            let mut isum = 0;
            for j in 0..4 {
                let (mut s1, mut s2) = (0, 0);
                for l in 0..32 {
                    let q = x[48 + 32 * j + l];
                    let h = x[16 + l];
                    let v1 = (q & 0xF) as i32 + (((h >> (2 * j)) & 1) as i32) * 16;
                    let v2 = (q >> 4) as i32 + (((h >> (2 * j + 1)) & 1) as i32) * 16;
                    s1 += v1 * q8(y, 4, 64 * j + l);
                    s2 += v2 * q8(y, 4, 64 * j + 32 + l);
                }
                isum += sc[2 * j] as i32 * s1 + sc[2 * j + 1] as i32 * s2;
            }
            kq_value(x, dy, isum, summs_k4(&mn, y))
        })
    })
}

pub(crate) fn gemm_q6_k(k: usize, w: &[u8], a: &[u8], n: usize, out: &mut [f32]) {
    gemm_rows(GgmlType::Q6_K, k, w, a, n, out, |wr, ar| {
        dot_k(wr, ar, 210, |x, y, dy| {
            let v = q6_k_values(x);
            let mut isum = 0;
            for g in 0..16 {
                let s: i32 = (0..16)
                    .map(|l| (v[16 * g + l] as i32 - 32) * q8(y, 4, 16 * g + l))
                    .sum();
                isum += (x[192 + g] as i8) as i32 * s;
            }
            (rd_f16(x, 208) * dy) * isum as f32
        })
    })
}

pub(crate) fn gemm_q2_k(k: usize, w: &[u8], a: &[u8], n: usize, out: &mut [f32]) {
    gemm_rows(GgmlType::Q2_K, k, w, a, n, out, |wr, ar| {
        dot_k(wr, ar, 84, |x, y, dy| {
            let sc = &x[0..16];
            let summs: i32 = (0..16).map(|g| bsum(y, g) * (sc[g] >> 4) as i32).sum();
            let mut isum = 0;
            // element e = 128*h + 32*s + l: byte qs[32*h + l] bits 2s..2s+1, group e/16
            for e in 0..QK_K {
                let (h, s, l) = (e / 128, (e / 32) % 4, e % 32);
                let q = (x[16 + 32 * h + l] >> (2 * s)) & 3;
                isum += (sc[e / 16] & 0xF) as i32 * q as i32 * q8(y, 4, e);
            }
            (dy * rd_f16(x, 80)) * isum as f32 - (dy * rd_f16(x, 82)) * summs as f32
        })
    })
}

pub(crate) fn gemm_q3_k(k: usize, w: &[u8], a: &[u8], n: usize, out: &mut [f32]) {
    gemm_rows(GgmlType::Q3_K, k, w, a, n, out, |wr, ar| {
        dot_k(wr, ar, 110, |x, y, dy| {
            let sc = scales_q3k(&x[96..108]);
            let mut isum = 0;
            for e in 0..QK_K {
                let (h, s, l) = (e / 128, (e / 32) % 4, e % 32);
                let q = ((x[32 + 32 * h + l] >> (2 * s)) & 3) as i32;
                let hbit = (x[l] >> (4 * h + s)) & 1;
                let v = q - if hbit != 0 { 0 } else { 4 };
                isum += sc[e / 16] as i32 * v * q8(y, 4, e);
            }
            (rd_f16(x, 108) * dy) * isum as f32
        })
    })
}
