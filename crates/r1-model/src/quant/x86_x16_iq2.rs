//! AVX-512 VNNI kernel for IQ2_XXS weights interleaved 16 rows at a time (layout in
//! `x16_iq`; it keeps ggml's generic order, so it equals the native portable kernel bit for
//! bit).
//!
//! Row `r` of the group is lane `r`. Per 32-element sub-block, the 16 rows' grid rows are
//! fetched with two 8-wide gathers per 8 elements (one u64 of magnitudes per row) and split
//! into 4-element slices; the signs (7 stored bits plus even parity, as `ksigns_iq2xs`)
//! become byte masks, and the signed weights are stored plus 128 for `vpdpbusd`. That decode
//! is shared by up to 8 tokens; per token the sub-block's exact sum (from `-128 * Σ y`) is
//! multiplied by the rows' `2s+1` and added to the super-block sum, which one FMA scales.
//! The native kernels instead decode row by row and end each (row, token) with a horizontal
//! sum.

// Parallel arrays of SIMD registers (per slice / per token) are indexed together.
#![allow(clippy::needless_range_loop)]

use core::arch::x86_64::*;

use super::gemm::OutPtr;
use super::iq_grids::IQ2XXS_GRID;
use super::util::{rd_f32, rd_i16};
use super::x16::GROUP;
use super::x16_iq::{IQ2_XXS_AUX, IQ2_XXS_GB, IQ2_XXS_IDX};
use super::x86_x16::{prefetch_ahead, store_tile, token_tiles, PREFETCH_MAX_TOKENS};

/// Q8_K activation block bytes.
const AB: usize = 292;
/// Activation bytes kept hot per token chunk.
const L2_BUDGET: usize = 1 << 20;

/// Per (token, super-block), token-major: `dy`, and per sub-block `-128 * Σ y`.
struct Acts {
    dt: Vec<f32>,
    corr: Vec<i32>,
}

fn prepare(a: &[u8], blocks: usize) -> Acts {
    let mut acts = Acts {
        dt: Vec::with_capacity(blocks),
        corr: Vec::with_capacity(8 * blocks),
    };
    for y in a.chunks_exact(AB).take(blocks) {
        acts.dt.push(rd_f32(y, 0));
        for j in 0..8 {
            let s = rd_i16(y, 260 + 4 * j) as i32 + rd_i16(y, 262 + 4 * j) as i32;
            acts.corr.push(-128 * s);
        }
    }
    acts
}

/// The 16 rows' signed weights of sub-block `j`, plus 128, as eight 4-element slices; and
/// the rows' multipliers `2s+1`.
#[inline(always)]
unsafe fn decode(gb: *const u8, j: usize) -> ([__m512i; 8], __m512i) {
    let aux = _mm512_loadu_si512(gb.add(IQ2_XXS_AUX + 64 * j) as *const _);
    let mul = _mm512_add_epi32(
        _mm512_slli_epi32::<1>(_mm512_srli_epi32::<28>(aux)),
        _mm512_set1_epi32(1),
    );
    let even = _mm512_set_epi32(30, 28, 26, 24, 22, 20, 18, 16, 14, 12, 10, 8, 6, 4, 2, 0);
    let odd = _mm512_add_epi32(even, _mm512_set1_epi32(1));
    // byte 0 of each lane copied to all four bytes, then bits 0-3 / 4-7 tested per byte
    let (b0, b1, b2, b3) = (0, 0x0404_0404, 0x0808_0808, 0x0C0C_0C0C);
    let spread = _mm512_set_epi32(
        b3, b2, b1, b0, b3, b2, b1, b0, b3, b2, b1, b0, b3, b2, b1, b0,
    );
    let bits_lo = _mm512_set1_epi32(0x0804_0201);
    let bits_hi = _mm512_set1_epi32(0x8040_2010_u32 as i32);
    let off = _mm512_set1_epi8(-128);
    let grid = IQ2XXS_GRID.as_ptr() as *const i64;
    let mut ws = [_mm512_setzero_si512(); 8];
    for l in 0..4 {
        let idx = _mm512_cvtepu8_epi32(_mm_loadu_si128(
            gb.add(IQ2_XXS_IDX + 16 * (4 * j + l)) as *const __m128i
        ));
        let a = _mm512_i32gather_epi64::<8>(_mm512_castsi512_si256(idx), grid);
        let b = _mm512_i32gather_epi64::<8>(_mm512_extracti64x4_epi64::<1>(idx), grid);
        let mag_lo = _mm512_permutex2var_epi32(a, even, b);
        let mag_hi = _mm512_permutex2var_epi32(a, odd, b);
        // the sign byte: 7 stored bits and their parity as bit 7
        let s7 = _mm512_and_si512(
            _mm512_srl_epi32(aux, _mm_cvtsi32_si128(7 * l as i32)),
            _mm512_set1_epi32(127),
        );
        let mut p = _mm512_xor_si512(s7, _mm512_srli_epi32::<4>(s7));
        p = _mm512_xor_si512(p, _mm512_srli_epi32::<2>(p));
        p = _mm512_xor_si512(p, _mm512_srli_epi32::<1>(p));
        let sb = _mm512_or_si512(
            s7,
            _mm512_slli_epi32::<7>(_mm512_and_si512(p, _mm512_set1_epi32(1))),
        );
        let sb = _mm512_shuffle_epi8(sb, spread);
        let neg_lo = _mm512_test_epi8_mask(sb, bits_lo);
        let neg_hi = _mm512_test_epi8_mask(sb, bits_hi);
        ws[2 * l] = _mm512_mask_sub_epi8(_mm512_add_epi8(mag_lo, off), neg_lo, off, mag_lo);
        ws[2 * l + 1] = _mm512_mask_sub_epi8(_mm512_add_epi8(mag_hi, off), neg_hi, off, mag_hi);
    }
    (ws, mul)
}

#[inline(always)]
unsafe fn bcast(p: *const u8) -> __m512i {
    _mm512_set1_epi32((p as *const i32).read_unaligned())
}

#[inline(always)]
unsafe fn tile<const NT: usize>(
    g: *const u8,
    nsb: usize,
    a: *const u8,
    acts: &Acts,
    t0: usize,
    pf: bool,
) -> [__m512; NT] {
    let mut acc = [_mm512_setzero_ps(); NT];
    for b in 0..nsb {
        let gb = g.add(b * IQ2_XXS_GB);
        if pf {
            prefetch_ahead(gb, IQ2_XXS_GB);
        }
        let mut sum = [_mm512_setzero_si512(); NT];
        for j in 0..8 {
            let (ws, mul) = decode(gb, j);
            for t in 0..NT {
                let o = (t0 + t) * nsb + b;
                let y = a.add(o * AB + 4 + 32 * j);
                let mut s = _mm512_set1_epi32(*acts.corr.get_unchecked(8 * o + j));
                for p in 0..8 {
                    s = _mm512_dpbusd_epi32(s, ws[p], bcast(y.add(4 * p)));
                }
                sum[t] = _mm512_add_epi32(sum[t], _mm512_mullo_epi32(s, mul));
            }
        }
        let dx = _mm512_cvtph_ps(_mm256_loadu_si256(gb as *const __m256i));
        for t in 0..NT {
            let dy = _mm512_set1_ps(*acts.dt.get_unchecked((t0 + t) * nsb + b));
            acc[t] = _mm512_fmadd_ps(_mm512_mul_ps(dx, dy), _mm512_cvtepi32_ps(sum[t]), acc[t]);
        }
    }
    // ggml's final `0.125 * sumf`
    let eighth = _mm512_set1_ps(0.125);
    for v in acc.iter_mut() {
        *v = _mm512_mul_ps(eighth, *v);
    }
    acc
}

#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
pub(crate) unsafe fn gemm_iq2_xxs_vnni(k: usize, w: &[u8], a: &[u8], n: usize, out: OutPtr) {
    let nsb = k / 256;
    let gbytes = nsb * IQ2_XXS_GB;
    let groups = w.len() / gbytes;
    let acts = prepare(a, n * nsb);
    let chunk = ((L2_BUDGET / (nsb * (AB + 36))).max(16) / 16) * 16;
    let pf = n <= PREFETCH_MAX_TOKENS;
    let ap = a.as_ptr();
    let mut c0 = 0;
    while c0 < n {
        let c1 = n.min(c0 + chunk);
        for g in 0..groups {
            let gp = w.as_ptr().add(g * gbytes);
            macro_rules! run {
                ($t:expr, $nt:literal) => {{
                    let acc = tile::<$nt>(gp, nsb, ap, &acts, $t, pf);
                    store_tile(out, g * GROUP, $t, &acc);
                }};
            }
            token_tiles!(c0, c1, 16, run);
        }
        c0 = c1;
    }
}
