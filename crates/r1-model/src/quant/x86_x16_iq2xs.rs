//! AVX-512 VNNI decode of IQ2_XS sub-blocks interleaved 16 rows at a time (layout in
//! `x16_iq`; the GEMM loop, which keeps ggml's generic order, is `x86_x16_grid`).
//!
//! Each u16 holds a 9-bit index into the 512 8-magnitude grid rows (two 8-lane u64 gathers
//! for the 16 rows) and 7 sign bits (ggml's `ksigns_iq2xs` adds their parity). The
//! multipliers `2s+1` change per 16 elements, so each sub-block gives two sums; ggml's
//! result is `sumf / 8`.

use core::arch::x86_64::*;

use super::gemm::OutPtr;
use super::iq_grids::IQ2XS_GRID;
use super::x16_iq::{IQ2_XS_GB, IQ2_XS_QS, IQ2_XS_SC};
use super::x86_x16_grid::{
    gather64, gemm, ksigns, lanes_u16, lanes_u8, odd, sign_masks, signed, Decode,
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
            let (neg_lo, neg_hi) = sign_masks::<0>(ksigns(_mm512_srli_epi32::<9>(q)));
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
