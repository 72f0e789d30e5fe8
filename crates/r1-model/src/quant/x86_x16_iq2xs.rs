//! AVX-512 VNNI decode of IQ2_XS and IQ2_S sub-blocks interleaved 16 rows at a time (layouts
//! in `x16_iq`; the GEMM loop, which keeps ggml's generic order, is `x86_x16_grid`).
//!
//! A grid row is 8 magnitudes, one u64: two 8-lane gathers per 8 elements for the 16 rows.
//! The multipliers `2s+1` change per 16 elements, so each sub-block gives two sums; ggml's
//! result is `sumf / 8`.
//! * IQ2_XS: each u16 holds a 9-bit index into the 512-row grid and 7 sign bits (ggml's
//!   `ksigns_iq2xs` adds their parity).
//! * IQ2_S: a 10-bit index into the 1024-row grid (a low byte and 2 bits of `qh`), and a
//!   stored sign byte per 8 elements.

use core::arch::x86_64::*;

use super::gemm::OutPtr;
use super::iq_grids::{IQ2S_GRID, IQ2XS_GRID};
use super::x16_iq::*;
use super::x86_x16_grid::{
    gather64, gemm, ksigns, lane_words, lanes_u16, lanes_u8, odd, sign_masks, signed, Decode,
};

struct Iq2Xs;

impl Decode for Iq2Xs {
    const GB: usize = IQ2_XS_GB;
    const HALVES: bool = true;
    const IQ1: bool = false;
    const C: f32 = 0.125;

    #[inline(always)]
    unsafe fn decode(gb: *const u8, j: usize) -> ([__m512i; 8], __m512i, __m512i) {
        let sc = lanes_u8(gb.add(IQ2_XS_SC + 16 * j));
        let m_lo = odd(_mm512_and_si512(sc, _mm512_set1_epi32(15)));
        let m_hi = odd(_mm512_srli_epi32::<4>(sc));
        let mut ws = [_mm512_setzero_si512(); 8];
        for l in 0..4 {
            let q = lanes_u16(gb.add(IQ2_XS_QS + 32 * (4 * j + l)));
            let idx = _mm512_and_si512(q, _mm512_set1_epi32(511));
            let (neg_lo, neg_hi) = sign_masks(ksigns(_mm512_srli_epi32::<9>(q)), 0);
            let (mag_lo, mag_hi) = gather64(idx, &IQ2XS_GRID);
            ws[2 * l] = signed(mag_lo, neg_lo);
            ws[2 * l + 1] = signed(mag_hi, neg_hi);
        }
        (ws, m_lo, m_hi)
    }
}

#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
pub(crate) unsafe fn gemm_iq2_xs_vnni(k: usize, w: &[u8], a: &[u8], n: usize, out: OutPtr) {
    gemm::<Iq2Xs>(k, w, a, n, out)
}

struct Iq2S;

impl Decode for Iq2S {
    const GB: usize = IQ2_S_GB;
    const HALVES: bool = true;
    const IQ1: bool = false;
    const C: f32 = 0.125;

    #[inline(always)]
    unsafe fn decode(gb: *const u8, j: usize) -> ([__m512i; 8], __m512i, __m512i) {
        let sc = lanes_u8(gb.add(IQ2_S_SC + 16 * j));
        let m_lo = odd(_mm512_and_si512(sc, _mm512_set1_epi32(15)));
        let m_hi = odd(_mm512_srli_epi32::<4>(sc));
        let qh = lanes_u8(gb.add(IQ2_S_QH + 16 * j));
        let signs = lane_words(gb.add(IQ2_S_SGN + 64 * j));
        let mut ws = [_mm512_setzero_si512(); 8];
        for l in 0..4 {
            // index bits 8-9: bits 2l, 2l+1 of qh
            let hi = _mm512_and_si512(
                _mm512_sll_epi32(qh, _mm_cvtsi32_si128(8 - 2 * l as i32)),
                _mm512_set1_epi32(0x300),
            );
            let idx = _mm512_or_si512(lanes_u8(gb.add(IQ2_S_IDX + 16 * (4 * j + l))), hi);
            let (neg_lo, neg_hi) = sign_masks(signs, l);
            let (mag_lo, mag_hi) = gather64(idx, &IQ2S_GRID);
            ws[2 * l] = signed(mag_lo, neg_lo);
            ws[2 * l + 1] = signed(mag_hi, neg_hi);
        }
        (ws, m_lo, m_hi)
    }
}

#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
pub(crate) unsafe fn gemm_iq2_s_vnni(k: usize, w: &[u8], a: &[u8], n: usize, out: OutPtr) {
    gemm::<Iq2S>(k, w, a, n, out)
}
