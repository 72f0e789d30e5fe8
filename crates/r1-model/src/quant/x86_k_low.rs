//! x86-64 AVX2 kernels for the low-bit K-quants (Q2_K, Q3_K against Q8_K), in the native
//! block layout. Each super-block's integer dot product is exact and split into ggml's 8
//! lanes (`lane(e) = (e % 32) / 4`, which is what `maddubs` + `madd` leave in the 8 i32
//! lanes of a 32-element chunk); the float accumulation is llama.cpp's order, as in
//! `dot_scalar::gemm_q2_k` / `gemm_q3_k`, so results equal the portable kernels bit for bit.
//!
//! Without these, Q2_K and Q3_K (most of llama.cpp's Q2_K and Q3_K_M mixes) ran the portable
//! code on x86; weights are unpacked once per tile and reused for 6 (Q3_K) or 8 (Q2_K) tokens.

// Parallel arrays of SIMD registers (per token) are indexed together.
#![allow(clippy::needless_range_loop)]

use core::arch::x86_64::*;
use core::slice;

use super::gemm::{gemm_tiled, OutPtr, RowKernel};
use super::util::*;
use super::x86_b32::hsum8_ps;
use super::x86_k::{bsums, ld, prefetch_block, q8k, rd_dy};

const Q8K: usize = 292;
const Q2K_BYTES: usize = 84;
const Q3K_BYTES: usize = 110;

/// `acc = fma(d, lanes, acc)` per lane, as `dot_scalar::fma_lanes`.
#[inline(always)]
unsafe fn fma_lanes(acc: __m256, d: f32, lanes: __m256i) -> __m256 {
    _mm256_fmadd_ps(_mm256_set1_ps(d), _mm256_cvtepi32_ps(lanes), acc)
}

/// `shuffle_epi8` controls that put scale byte `2c` in the high byte of each i16 of the low
/// half and byte `2c + 1` in the high half (the 16 scale bytes are in both 128-bit halves):
/// chunk `c`'s two 16-element groups. An arithmetic or logical shift right by 8 then gives
/// the scale as a signed or unsigned i16, one shuffle + one shift per chunk.
static SCALE_CTRL: [[u8; 32]; 8] = {
    let mut t = [[0x80u8; 32]; 8];
    let mut c = 0;
    while c < 8 {
        let mut j = 1;
        while j < 32 {
            t[c][j] = (2 * c + (j >= 16) as usize) as u8;
            j += 2;
        }
        c += 1;
    }
    t
};

/// The 16 scale bytes `sc` (both halves) spread over chunk `c`'s i16 lanes, in the high byte.
#[inline(always)]
unsafe fn scale_hi_bytes(sc: __m256i, c: usize) -> __m256i {
    _mm256_shuffle_epi8(sc, ld(SCALE_CTRL[c].as_ptr()))
}

/// `q`, `q >> 2`, `q >> 4`, `q >> 6` masked to 2 bits: the four 32-element chunks whose
/// 2-bit quants share the 32 bytes `q` (chunk `s` uses bits `2s..2s+1`).
#[inline(always)]
unsafe fn crumbs(q: __m256i) -> [__m256i; 4] {
    let m3 = _mm256_set1_epi8(3);
    [
        _mm256_and_si256(q, m3),
        _mm256_and_si256(_mm256_srli_epi16(q, 2), m3),
        _mm256_and_si256(_mm256_srli_epi16(q, 4), m3),
        _mm256_and_si256(_mm256_srli_epi16(q, 6), m3),
    ]
}

/// Q2_K super-blocks for `NT` tokens, in the order of `ggml_vec_dot_q2_K_q8_K` (AVX2):
/// `acc = fma(-dy*dmin, min lanes, acc)`, then `acc = fma(dy*d, lanes, acc)`.
#[inline(always)]
unsafe fn q2k_block<const NT: usize>(x: *const u8, y: &[*const u8; NT], acc: &mut [__m256; NT]) {
    let xs = slice::from_raw_parts(x, Q2K_BYTES);
    let m4 = _mm_set1_epi8(0x0F);
    let sc_raw = _mm_loadu_si128(x as *const __m128i);
    let sc = _mm256_broadcastsi128_si256(_mm_and_si128(sc_raw, m4));
    let mins = _mm256_cvtepu8_epi16(_mm_and_si128(_mm_srli_epi16(sc_raw, 4), m4));
    let mut isum = [_mm256_setzero_si256(); NT];
    for h in 0..2 {
        let q = crumbs(ld(x.add(16 + 32 * h)));
        for (s, qv) in q.iter().enumerate() {
            let c = 4 * h + s;
            let sv = _mm256_srli_epi16(scale_hi_bytes(sc, c), 8);
            for t in 0..NT {
                let p = _mm256_maddubs_epi16(*qv, q8k(y[t], 32 * c));
                isum[t] = _mm256_add_epi32(isum[t], _mm256_madd_epi16(p, sv));
            }
        }
    }
    let (d, dmin) = (rd_f16(xs, 80), rd_f16(xs, 82));
    for t in 0..NT {
        let dy = rd_dy(y[t]);
        // lane i: bs[2i]*min[2i] + bs[2i+1]*min[2i+1]
        let ml = _mm256_madd_epi16(mins, bsums(y[t]));
        acc[t] = fma_lanes(acc[t], -dy * dmin, ml);
        acc[t] = fma_lanes(acc[t], dy * d, isum[t]);
    }
}

/// The 16 Q3_K scales minus 32 as i8, unpacked with 32-bit word operations (ggml's
/// `kmask1` / `kmask2` shuffle; the same values as `util::scales_q3k`).
#[inline(always)]
unsafe fn scales_q3k_sse(q: &[u8]) -> __m128i {
    const M2: u32 = 0x0303_0303;
    const M4: u32 = 0x0f0f_0f0f;
    let (a0, a1, hi) = (rd_u32(q, 0), rd_u32(q, 4), rd_u32(q, 8));
    let w0 = (a0 & M4) | ((hi & M2) << 4);
    let w1 = (a1 & M4) | (((hi >> 2) & M2) << 4);
    let w2 = ((a0 >> 4) & M4) | (((hi >> 4) & M2) << 4);
    let w3 = ((a1 >> 4) & M4) | (((hi >> 6) & M2) << 4);
    let v = _mm_set_epi32(w3 as i32, w2 as i32, w1 as i32, w0 as i32);
    _mm_sub_epi8(v, _mm_set1_epi8(32))
}

/// Q3_K super-blocks for `NT` tokens, in the order of `ggml_vec_dot_q3_K_q8_K` (AVX2):
/// `acc = fma(dy*d, lanes, acc)` with lanes of `sc * (q - 4*!hbit)`. The values `-4..=3`
/// are signed, so each product is `maddubs(|v|, sign(y, v))`.
#[inline(always)]
unsafe fn q3k_block<const NT: usize>(x: *const u8, y: &[*const u8; NT], acc: &mut [__m256; NT]) {
    let xs = slice::from_raw_parts(x, Q3K_BYTES);
    let sc = _mm256_broadcastsi128_si256(scales_q3k_sse(&xs[96..108]));
    let hm = ld(x);
    let zero = _mm256_setzero_si256();
    let four = _mm256_set1_epi8(4);
    let mut isum = [_mm256_setzero_si256(); NT];
    for h in 0..2 {
        let q = crumbs(ld(x.add(32 + 32 * h)));
        for (s, qv) in q.iter().enumerate() {
            let c = 4 * h + s;
            // high bit c of hmask[l] clear: subtract 4
            let bit = _mm256_set1_epi8(1 << c);
            let clear = _mm256_cmpeq_epi8(_mm256_and_si256(hm, bit), zero);
            let v = _mm256_sub_epi8(*qv, _mm256_and_si256(clear, four));
            let av = _mm256_abs_epi8(v);
            let sv = _mm256_srai_epi16(scale_hi_bytes(sc, c), 8);
            for t in 0..NT {
                let ys = _mm256_sign_epi8(q8k(y[t], 32 * c), v);
                let p = _mm256_maddubs_epi16(av, ys);
                isum[t] = _mm256_add_epi32(isum[t], _mm256_madd_epi16(p, sv));
            }
        }
    }
    let d = rd_f16(xs, 108);
    for t in 0..NT {
        acc[t] = fma_lanes(acc[t], rd_dy(y[t]) * d, isum[t]);
    }
}

#[derive(Clone, Copy)]
enum LowFmt {
    Q2K,
    Q3K,
}

const fn block_bytes(fmt: LowFmt) -> usize {
    match fmt {
        LowFmt::Q2K => Q2K_BYTES,
        LowFmt::Q3K => Q3K_BYTES,
    }
}

struct LowKernel {
    w: *const u8,
    a: *const u8,
    wrow: usize,
    arow: usize,
    nb: usize,
    fmt: LowFmt,
}

impl RowKernel<1> for LowKernel {
    #[inline(always)]
    unsafe fn run<const NT: usize>(&self, rows: [usize; 1], t0: usize) -> [[f32; NT]; 1] {
        let wb = block_bytes(self.fmt);
        let w = self.w.add(rows[0] * self.wrow);
        let mut acc = [_mm256_setzero_ps(); NT];
        let pf = super::x86_b32::pf_distance();
        for b in 0..self.nb {
            let x = w.add(b * wb);
            if NT <= 2 {
                prefetch_block(x, pf, wb);
            }
            let y: [*const u8; NT] =
                core::array::from_fn(|t| self.a.add((t0 + t) * self.arow + b * Q8K));
            match self.fmt {
                LowFmt::Q2K => q2k_block::<NT>(x, &y, &mut acc),
                LowFmt::Q3K => q3k_block::<NT>(x, &y, &mut acc),
            }
        }
        [core::array::from_fn(|t| hsum8_ps(acc[t]))]
    }
}

#[inline(always)]
unsafe fn gemm_low(fmt: LowFmt, k: usize, w: &[u8], a: &[u8], n: usize, out: OutPtr) {
    let nb = k / QK_K;
    let kern = LowKernel {
        w: w.as_ptr(),
        a: a.as_ptr(),
        wrow: nb * block_bytes(fmt),
        arow: nb * Q8K,
        nb,
        fmt,
    };
    let m = w.len() / kern.wrow;
    // Tokens per tile: a chunk's weight unpacking is shared by the tile's tokens. 896x4864,
    // one thread, 64 tokens: Q2_K 8 tokens ~1.6x 4 tokens; Q3_K (more unpacking, and a
    // sign op per token) 6 tokens ~1.4x 4 tokens, while 8 spill registers and are slower.
    match fmt {
        LowFmt::Q2K => gemm_tiled::<_, 1, 8>(&kern, m, n, kern.arow, out),
        LowFmt::Q3K => gemm_tiled::<_, 1, 6>(&kern, m, n, kern.arow, out),
    }
}

/// Q2_K weights against Q8_K activations (AVX2 + FMA).
///
/// # Safety
/// The CPU has AVX2, FMA and F16C; lengths are checked by the caller.
#[target_feature(enable = "avx2,fma,f16c")]
pub(crate) unsafe fn gemm_q2_k_avx2(k: usize, w: &[u8], a: &[u8], n: usize, out: OutPtr) {
    gemm_low(LowFmt::Q2K, k, w, a, n, out)
}

/// Q3_K weights against Q8_K activations (AVX2 + FMA).
///
/// # Safety
/// As [`gemm_q2_k_avx2`].
#[target_feature(enable = "avx2,fma,f16c")]
pub(crate) unsafe fn gemm_q3_k_avx2(k: usize, w: &[u8], a: &[u8], n: usize, out: OutPtr) {
    gemm_low(LowFmt::Q3K, k, w, a, n, out)
}

#[cfg(test)]
mod tests {
    /// The word-parallel Q3_K scale unpacking equals the per-scale one for every byte value
    /// at every position.
    #[test]
    fn q3k_scales_match_util() {
        if !super::super::Isa::Avx2.is_available() {
            eprintln!("skipped: no AVX2");
            return;
        }
        for pos in 0..12 {
            for v in 0..=255u8 {
                let mut q = [0x5Au8; 12];
                q[pos] = v;
                let mut got = [0i8; 16];
                // SAFETY: SSE2 is baseline on x86-64.
                unsafe {
                    let s = super::scales_q3k_sse(&q);
                    core::arch::x86_64::_mm_storeu_si128(got.as_mut_ptr() as *mut _, s);
                }
                assert_eq!(got, super::super::util::scales_q3k(&q), "byte {pos} = {v}");
            }
        }
    }
}
