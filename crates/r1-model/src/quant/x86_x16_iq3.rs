//! AVX-512 VNNI decode of IQ3_XXS sub-blocks interleaved 16 rows at a time (layout in
//! `x16_iq`; the GEMM loop, which keeps ggml's generic order, is `x86_x16_grid`).
//!
//! An IQ3 grid row is 4 magnitudes, one u32: a single 16-lane gather per 4-element slice
//! gives the 16 rows' slice directly. Signs are IQ2_XXS's (7 stored bits and their parity
//! per 8 elements), the multiplier `2s+1` is per 32 elements, and ggml's result is `sumf / 4`.

use core::arch::x86_64::*;

use super::gemm::OutPtr;
use super::iq_grids::IQ3XXS_GRID;
use super::x16_iq::{IQ3_XXS_AUX, IQ3_XXS_GB, IQ3_XXS_IDX};
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
            let (neg_lo, neg_hi) = sign_masks::<0>(ksigns(s7));
            for (h, neg) in [neg_lo, neg_hi].into_iter().enumerate() {
                let i = 2 * m + h;
                let idx = lanes_u8(gb.add(IQ3_XXS_IDX + 16 * (8 * j + i)));
                ws[i] = signed(gather32(idx, &IQ3XXS_GRID), neg);
            }
        }
        (ws, mul, mul)
    }
}

#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
pub(crate) unsafe fn gemm_iq3_xxs_vnni(k: usize, w: &[u8], a: &[u8], n: usize, out: OutPtr) {
    gemm::<Iq3Xxs>(k, w, a, n, out)
}
