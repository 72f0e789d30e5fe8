//! x86-64 AVX2 kernels for the K-quants (Q4_K, Q5_K, Q6_K against Q8_K).
//! Each super-block's integer sums are exact (split into ggml's 8 lanes for Q5_K / Q6_K);
//! the float accumulation is llama.cpp's order, as in `dot_scalar`.

// Parallel arrays of SIMD registers (per token / per lane) are indexed together.
#![allow(clippy::needless_range_loop)]

use super::gemm::OutPtr;
use core::arch::x86_64::*;
use core::slice;

use super::gemm::{gemm_tiled, RowKernel};
use super::util::*;
use super::x86_b32::hsum8_ps;

const Q8K: usize = 292;

/// `acc + madd(p, s)` on i16 lanes.
#[inline(always)]
unsafe fn madd_acc(acc: __m256i, p: __m256i, s: __m256i) -> __m256i {
    _mm256_add_epi32(acc, _mm256_madd_epi16(p, s))
}

#[inline(always)]
pub(super) unsafe fn ld(p: *const u8) -> __m256i {
    _mm256_loadu_si256(p as *const __m256i)
}

/// Activation quants `off..off+32` of a Q8_K block.
#[inline(always)]
pub(super) unsafe fn q8k(y: *const u8, off: usize) -> __m256i {
    ld(y.add(4 + off))
}

/// Its 16 group sums as i16 lanes.
#[inline(always)]
pub(super) unsafe fn bsums(y: *const u8) -> __m256i {
    ld(y.add(4 + QK_K))
}

#[inline(always)]
pub(super) unsafe fn rd_dy(y: *const u8) -> f32 {
    (y as *const f32).read_unaligned()
}

/// Decode: rows are contiguous, so stream the block `pf` bytes ahead of `x` (its `bytes`, in
/// cache lines) into L1 before it is used.
#[inline(always)]
pub(super) unsafe fn prefetch_block(x: *const u8, pf: usize, bytes: usize) {
    let p = x.wrapping_add(pf);
    for l in 0..bytes.div_ceil(64) {
        _mm_prefetch::<_MM_HINT_T0>(p.wrapping_add(64 * l) as *const i8);
    }
}

/// Per-token float state of ggml's K-quant dot products.
#[derive(Clone, Copy)]
struct KAcc {
    /// The 8 lanes `fma(d, lanes, acc)`.
    acc: __m256,
    /// Q4_K's min accumulator (lane 0).
    acc_m: __m128,
    /// Q5_K's min sum, Q4_K's accumulator (lane 0).
    summs: __m128,
}

#[inline(always)]
unsafe fn fma_lanes(acc: __m256, d: f32, lanes: __m256i) -> __m256 {
    _mm256_fmadd_ps(_mm256_set1_ps(d), _mm256_cvtepi32_ps(lanes), acc)
}

/// Q4_K (`HIGH = false`) and Q5_K (`HIGH = true`) super-blocks for `NT` tokens, in the
/// order of `ggml_gemv_q4_K_8x8_q8_K` / `ggml_vec_dot_q5_K_q8_K` (see `dot_scalar`).
#[inline(always)]
unsafe fn q45k_block<const NT: usize, const HIGH: bool>(
    x: *const u8,
    y: &[*const u8; NT],
    st: &mut [KAcc; NT],
) {
    let xs = slice::from_raw_parts(x, if HIGH { 176 } else { 144 });
    let (sc, mn) = scales_mins_k4(&xs[4..16]);
    let mins = _mm_cvtepu8_epi16(_mm_loadl_epi64(mn.as_ptr() as *const __m128i));
    let m4 = _mm256_set1_epi8(0x0F);
    let one = _mm256_set1_epi8(1);
    let qs = if HIGH { x.add(48) } else { x.add(16) };
    let mut hb = if HIGH {
        ld(x.add(16))
    } else {
        _mm256_setzero_si256()
    };
    let mut isum = [_mm256_setzero_si256(); NT];
    let mut isum2 = [_mm256_setzero_si256(); NT];
    for j in 0..4 {
        let q = ld(qs.add(32 * j));
        let mut lo = _mm256_and_si256(q, m4);
        let mut hi = _mm256_and_si256(_mm256_srli_epi16(q, 4), m4);
        if HIGH {
            let h_lo = _mm256_slli_epi16(_mm256_and_si256(hb, one), 4);
            let h_hi = _mm256_slli_epi16(_mm256_and_si256(_mm256_srli_epi16(hb, 1), one), 4);
            lo = _mm256_or_si256(lo, h_lo);
            hi = _mm256_or_si256(hi, h_hi);
            hb = _mm256_srli_epi16(hb, 2);
        }
        let s1 = _mm256_set1_epi16(sc[2 * j] as i16);
        let s2 = _mm256_set1_epi16(sc[2 * j + 1] as i16);
        for t in 0..NT {
            let p1 = _mm256_maddubs_epi16(lo, q8k(y[t], 64 * j));
            let p2 = _mm256_maddubs_epi16(hi, q8k(y[t], 64 * j + 32));
            isum[t] = madd_acc(isum[t], p1, s1);
            isum2[t] = madd_acc(isum2[t], p2, s2);
        }
    }
    let (dx, dminx) = (rd_f16(xs, 0), rd_f16(xs, 2));
    for t in 0..NT {
        let dy = rd_dy(y[t]);
        // sums of the 8 sub-blocks of 32, then mins[2k]*s[2k] + mins[2k+1]*s[2k+1]
        let bs = bsums(y[t]);
        let q8s = _mm_hadd_epi16(_mm256_castsi256_si128(bs), _mm256_extracti128_si256(bs, 1));
        let prod = _mm_madd_epi16(mins, q8s);
        let m = _mm_cvtsi32_ss(_mm_setzero_ps(), hsum_epi32_4(prod));
        let lanes = _mm256_add_epi32(isum[t], isum2[t]);
        if HIGH {
            st[t].summs = _mm_fmadd_ss(m, _mm_set_ss(-dy * dminx), st[t].summs);
            st[t].acc = fma_lanes(st[t].acc, dy * dx, lanes);
        } else {
            // llama.cpp's repacked Q4_K order: whole super-block sums, one FMA each
            let s4 = _mm_add_epi32(
                _mm256_castsi256_si128(lanes),
                _mm256_extracti128_si256(lanes, 1),
            );
            let s = _mm_cvtsi32_ss(_mm_setzero_ps(), hsum_epi32_4(s4));
            st[t].summs = _mm_fmadd_ss(s, _mm_set_ss(dx * dy), st[t].summs);
            st[t].acc_m = _mm_fmadd_ss(m, _mm_set_ss(dminx * dy), st[t].acc_m);
        }
    }
}

#[inline(always)]
unsafe fn hsum_epi32_4(s: __m128i) -> i32 {
    let s = _mm_add_epi32(s, _mm_unpackhi_epi64(s, s));
    let s = _mm_add_epi32(s, _mm_shuffle_epi32(s, 1));
    _mm_cvtsi128_si32(s)
}

/// Q6_K super-blocks for `NT` tokens, in the order of `ggml_vec_dot_q6_K_q8_K` (AVX2).
#[inline(always)]
unsafe fn q6k_block<const NT: usize>(x: *const u8, y: &[*const u8; NT], st: &mut [KAcc; NT]) {
    let sc = slice::from_raw_parts(x.add(192), 16);
    let scales16 = _mm256_cvtepi8_epi16(_mm_loadu_si128(x.add(192) as *const __m128i));
    let m4 = _mm256_set1_epi8(0x0F);
    let m3 = _mm256_set1_epi8(3);
    let mut isum = [[_mm256_setzero_si256(); NT]; 2];
    for h in 0..2 {
        let ql0 = ld(x.add(64 * h));
        let ql1 = ld(x.add(64 * h + 32));
        let qh = ld(x.add(128 + 32 * h));
        // bits 2s..2s+1 of qh as 0x00/0x10/0x20/0x30
        let h0 = _mm256_slli_epi16(_mm256_and_si256(qh, m3), 4);
        let h1 = _mm256_slli_epi16(_mm256_and_si256(_mm256_srli_epi16(qh, 2), m3), 4);
        let h2 = _mm256_slli_epi16(_mm256_and_si256(_mm256_srli_epi16(qh, 4), m3), 4);
        let h3 = _mm256_slli_epi16(_mm256_and_si256(_mm256_srli_epi16(qh, 6), m3), 4);
        let q = [
            _mm256_or_si256(_mm256_and_si256(ql0, m4), h0),
            _mm256_or_si256(_mm256_and_si256(ql1, m4), h1),
            _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(ql0, 4), m4), h2),
            _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(ql1, 4), m4), h3),
        ];
        for (v, qv) in q.iter().enumerate() {
            let g = 8 * h + 2 * v;
            let sv = _mm256_set_m128i(
                _mm_set1_epi16(sc[g + 1] as i8 as i16),
                _mm_set1_epi16(sc[g] as i8 as i16),
            );
            for t in 0..NT {
                let p = _mm256_maddubs_epi16(*qv, q8k(y[t], 128 * h + 32 * v));
                isum[v % 2][t] = madd_acc(isum[v % 2][t], p, sv);
            }
        }
    }
    let d = rd_f16(slice::from_raw_parts(x, 210), 208);
    for t in 0..NT {
        // values are q - 32: lane i subtracts 32 * (bs[2i]*sc[2i] + bs[2i+1]*sc[2i+1])
        let corr = _mm256_slli_epi32(_mm256_madd_epi16(bsums(y[t]), scales16), 5);
        let lanes = _mm256_sub_epi32(_mm256_add_epi32(isum[0][t], isum[1][t]), corr);
        st[t].acc = fma_lanes(st[t].acc, rd_dy(y[t]) * d, lanes);
    }
}

#[derive(Clone, Copy)]
enum KFmt {
    Q4K,
    Q5K,
    Q6K,
}

const fn kq_bytes(fmt: KFmt) -> usize {
    match fmt {
        KFmt::Q4K => 144,
        KFmt::Q5K => 176,
        KFmt::Q6K => 210,
    }
}

struct KKernel {
    w: *const u8,
    a: *const u8,
    wrow: usize,
    arow: usize,
    nb: usize,
    fmt: KFmt,
}

impl RowKernel<1> for KKernel {
    #[inline(always)]
    unsafe fn run<const NT: usize>(&self, rows: [usize; 1], t0: usize) -> [[f32; NT]; 1] {
        let r = rows[0];
        let wb = kq_bytes(self.fmt);
        let w = self.w.add(r * self.wrow);
        let mut st = [KAcc {
            acc: _mm256_setzero_ps(),
            acc_m: _mm_setzero_ps(),
            summs: _mm_setzero_ps(),
        }; NT];
        let pf = super::x86_b32::pf_distance();
        for b in 0..self.nb {
            let x = w.add(b * wb);
            if NT <= 2 {
                prefetch_block(x, pf, wb);
            }
            let y: [*const u8; NT] =
                core::array::from_fn(|t| self.a.add((t0 + t) * self.arow + b * Q8K));
            match self.fmt {
                KFmt::Q4K => q45k_block::<NT, false>(x, &y, &mut st),
                KFmt::Q5K => q45k_block::<NT, true>(x, &y, &mut st),
                KFmt::Q6K => q6k_block::<NT>(x, &y, &mut st),
            }
        }
        let mut out = [0f32; NT];
        for t in 0..NT {
            let s = hsum8_ps(st[t].acc);
            out[t] = match self.fmt {
                KFmt::Q4K => _mm_cvtss_f32(st[t].summs) - _mm_cvtss_f32(st[t].acc_m),
                KFmt::Q5K => s + _mm_cvtss_f32(st[t].summs),
                KFmt::Q6K => s,
            };
        }
        [out]
    }
}

#[inline(always)]
unsafe fn gemm_k(fmt: KFmt, k: usize, w: &[u8], a: &[u8], n: usize, out: OutPtr) {
    let nb = k / QK_K;
    let kern = KKernel {
        w: w.as_ptr(),
        a: a.as_ptr(),
        wrow: nb * kq_bytes(fmt),
        arow: nb * Q8K,
        nb,
        fmt,
    };
    gemm_tiled::<_, 1, 4>(&kern, w.len() / kern.wrow, n, kern.arow, out);
}

macro_rules! entry {
    ($name:ident, $fmt:expr, $feat:literal) => {
        #[target_feature(enable = $feat)]
        pub(crate) unsafe fn $name(k: usize, w: &[u8], a: &[u8], n: usize, out: OutPtr) {
            gemm_k($fmt, k, w, a, n, out)
        }
    };
}

entry!(gemm_q4_k_avx2, KFmt::Q4K, "avx2,fma,f16c");
entry!(gemm_q5_k_avx2, KFmt::Q5K, "avx2,fma,f16c");
entry!(gemm_q6_k_avx2, KFmt::Q6K, "avx2,fma,f16c");
