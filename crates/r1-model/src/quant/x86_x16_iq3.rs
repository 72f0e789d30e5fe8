//! AVX-512 VNNI decode of IQ3_XXS and IQ3_S sub-blocks interleaved 16 rows at a time (layouts
//! in `x16_iq`; the GEMM loop, which keeps ggml's generic order, is `x86_x16_grid`).
//!
//! An IQ3 grid row is 4 magnitudes, one u32: a single 16-lane gather per 4-element slice
//! gives the 16 rows' slice directly. The multiplier `2s+1` is per 32 elements.
//! * IQ3_XXS: 256-row grid; signs as IQ2_XXS's (7 stored bits and their parity per 8
//!   elements); ggml's result is `sumf / 4`.
//! * IQ3_S: 512-row grid (a 9th index bit per slice); a stored sign byte per 8 elements.

use core::arch::x86_64::*;

use super::gemm::OutPtr;
use super::iq_grids::{IQ3S_GRID, IQ3XXS_GRID};
use super::x16_iq::*;
use super::x86_x16_grid::{
    gather32, gemm, ksigns, lane_words, lanes_u8, odd, sign_masks, signed, Decode,
};

struct Iq3Xxs;

impl Decode for Iq3Xxs {
    const GB: usize = IQ3_XXS_GB;
    const HALVES: bool = false;
    const IQ1: bool = false;
    const C: f32 = 0.25;

    #[inline(always)]
    unsafe fn decode(gb: *const u8, j: usize) -> ([__m512i; 8], __m512i, __m512i) {
        let aux = lane_words(gb.add(IQ3_XXS_AUX + 64 * j));
        let mul = odd(_mm512_srli_epi32::<28>(aux));
        let mut ws = [_mm512_setzero_si512(); 8];
        for m in 0..4 {
            let s7 = _mm512_and_si512(
                _mm512_srl_epi32(aux, _mm_cvtsi32_si128(7 * m as i32)),
                _mm512_set1_epi32(127),
            );
            let (neg_lo, neg_hi) = sign_masks(ksigns(s7), 0);
            for (h, neg) in [neg_lo, neg_hi].into_iter().enumerate() {
                let i = 2 * m + h;
                let idx = lanes_u8(gb.add(IQ3_XXS_IDX + 16 * (8 * j + i)));
                ws[i] = signed(gather32(idx, &IQ3XXS_GRID), neg);
            }
        }
        (ws, mul, mul)
    }
}

struct Iq3S;

impl Decode for Iq3S {
    const GB: usize = IQ3_S_GB;
    const HALVES: bool = false;
    const IQ1: bool = false;
    const C: f32 = 1.0;

    #[inline(always)]
    unsafe fn decode(gb: *const u8, j: usize) -> ([__m512i; 8], __m512i, __m512i) {
        let qh = lanes_u8(gb.add(IQ3_S_QH + 16 * j));
        let signs = lane_words(gb.add(IQ3_S_SGN + 64 * j));
        let sc = lanes_u8(gb.add(IQ3_S_SC + 16 * (j / 2)));
        let s = _mm512_srl_epi32(sc, _mm_cvtsi32_si128(4 * (j % 2) as i32));
        let mul = odd(_mm512_and_si512(s, _mm512_set1_epi32(15)));
        let mut ws = [_mm512_setzero_si512(); 8];
        for m in 0..4 {
            let (neg_lo, neg_hi) = sign_masks(signs, m);
            for (h, neg) in [neg_lo, neg_hi].into_iter().enumerate() {
                let i = 2 * m + h;
                // the 9th index bit: bit i of qh, moved to bit 8
                let hi = _mm512_and_si512(
                    _mm512_sll_epi32(qh, _mm_cvtsi32_si128(8 - i as i32)),
                    _mm512_set1_epi32(256),
                );
                let idx = _mm512_or_si512(lanes_u8(gb.add(IQ3_S_IDX + 16 * (8 * j + i))), hi);
                ws[i] = signed(gather32(idx, &IQ3S_GRID), neg);
            }
        }
        (ws, mul, mul)
    }
}

#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
pub(crate) unsafe fn gemm_iq3_s_vnni(k: usize, w: &[u8], a: &[u8], n: usize, out: OutPtr) {
    gemm::<Iq3S>(k, w, a, n, out)
}

#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
pub(crate) unsafe fn gemm_iq3_xxs_vnni(k: usize, w: &[u8], a: &[u8], n: usize, out: OutPtr) {
    gemm::<Iq3Xxs>(k, w, a, n, out)
}
