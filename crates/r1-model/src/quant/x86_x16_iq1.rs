//! AVX-512 VNNI decode of IQ1_S and IQ1_M sub-blocks interleaved 16 rows at a time (layouts
//! in `x16_iq`; the GEMM loop, which keeps ggml's generic order, is `x86_x16_grid`).
//!
//! A grid row is 8 ternary values `v` (bytes -1, 0, 1; 11-bit index, two 8-lane u64 gathers
//! for the 16 rows). As in the AVX2 kernel, the weights are `8v ± 1` (the sign of each
//! group's ±1/8 offset), so one exact sum gives `B = 8S + D` and `B / 8` is the same single
//! rounding of `S + D/8` as ggml's; stored plus 128 for `vpdpbusd` they are `8v + 0x81` or
//! `8v + 0x7F`.
//! * IQ1_S: the scale `2s+1` and the offset sign per 32 elements.
//! * IQ1_M: the offset sign per 8 elements, the scale per 16 (two sums per sub-block), and
//!   the f16 `d` assembled from the scale words' top nibbles.

use core::arch::x86_64::*;

use super::gemm::OutPtr;
use super::iq_grids::IQ1S_GRID;
use super::x16_iq::*;
use super::x86_x16_grid::{gather64, gemm, lanes_u16, lanes_u8, odd, Decode};

/// The weights `8v ± 1` plus 128 of grid rows `g` (bytes -1, 0, 1), with `off` = 0x81 or
/// 0x7F per byte.
#[inline(always)]
unsafe fn weights(g: __m512i, off: __m512i) -> __m512i {
    // 8v per byte: a 16-bit shift, with the bits carried into the next byte masked off
    let v8 = _mm512_and_si512(_mm512_slli_epi16::<3>(g), _mm512_set1_epi8(0xF8_u8 as i8));
    _mm512_add_epi8(v8, off)
}

/// 0x7F in the lanes of `neg`, else 0x81, per byte.
#[inline(always)]
unsafe fn offsets(neg: __mmask16) -> __m512i {
    _mm512_mask_blend_epi32(neg, _mm512_set1_epi8(0x81_u8 as i8), _mm512_set1_epi8(0x7F))
}

/// The 16 rows' weights of the 8 elements `8l..` of a sub-block: index low bytes at `idx`,
/// high bits `hi` (already at bit 8), offsets `off`.
#[inline(always)]
unsafe fn group(idx: *const u8, hi: __m512i, off: __m512i) -> (__m512i, __m512i) {
    let (g_lo, g_hi) = gather64(_mm512_or_si512(lanes_u8(idx), hi), &IQ1S_GRID);
    (weights(g_lo, off), weights(g_hi, off))
}

struct Iq1S;

impl Decode for Iq1S {
    const GB: usize = IQ1_S_GB;
    const HALVES: bool = false;
    const IQ1: bool = true;
    const C: f32 = 1.0;

    #[inline(always)]
    unsafe fn decode(gb: *const u8, j: usize) -> ([__m512i; 8], __m512i, __m512i) {
        let qh = lanes_u16(gb.add(IQ1_S_QH + 32 * j));
        let ls = odd(_mm512_and_si512(
            _mm512_srli_epi32::<12>(qh),
            _mm512_set1_epi32(7),
        ));
        let off = offsets(_mm512_test_epi32_mask(qh, _mm512_set1_epi32(0x8000)));
        let mut ws = [_mm512_setzero_si512(); 8];
        for l in 0..4 {
            // index bits 8-10: bits 3l..3l+3 of qh
            let hi = _mm512_slli_epi32::<8>(_mm512_and_si512(
                _mm512_srl_epi32(qh, _mm_cvtsi32_si128(3 * l as i32)),
                _mm512_set1_epi32(7),
            ));
            (ws[2 * l], ws[2 * l + 1]) = group(gb.add(IQ1_S_IDX + 16 * (4 * j + l)), hi, off);
        }
        (ws, ls, ls)
    }
}

struct Iq1M;

impl Decode for Iq1M {
    const GB: usize = IQ1_M_GB;
    const HALVES: bool = true;
    const IQ1: bool = true;
    const C: f32 = 1.0;

    /// The f16 `d`: the top nibbles of scale words 0..4, lowest first.
    #[inline(always)]
    unsafe fn dx(gb: *const u8) -> __m512 {
        let w = |i: usize| _mm256_loadu_si256(gb.add(IQ1_M_SC + 32 * i) as *const __m256i);
        let nib = |v: __m256i, m: i16| _mm256_and_si256(v, _mm256_set1_epi16(m));
        let bits = _mm256_or_si256(
            _mm256_or_si256(
                _mm256_srli_epi16::<12>(w(0)),
                nib(_mm256_srli_epi16::<8>(w(1)), 0x00F0),
            ),
            _mm256_or_si256(
                nib(_mm256_srli_epi16::<4>(w(2)), 0x0F00),
                nib(w(3), 0xF000_u16 as i16),
            ),
        );
        _mm512_cvtph_ps(bits)
    }

    #[inline(always)]
    unsafe fn decode(gb: *const u8, j: usize) -> ([__m512i; 8], __m512i, __m512i) {
        let qh = lanes_u16(gb.add(IQ1_M_QH + 32 * j));
        // the 3-bit scales of the sub-block's two halves: bits 6(j%2).. of word j/2
        let sc = _mm512_srl_epi32(
            lanes_u16(gb.add(IQ1_M_SC + 32 * (j / 2))),
            _mm_cvtsi32_si128(6 * (j % 2) as i32),
        );
        let seven = _mm512_set1_epi32(7);
        let m_lo = odd(_mm512_and_si512(sc, seven));
        let m_hi = odd(_mm512_and_si512(_mm512_srli_epi32::<3>(sc), seven));
        let mut ws = [_mm512_setzero_si512(); 8];
        for l in 0..4 {
            // nibble l of qh: 3 high index bits and the offset sign
            let nib = _mm512_srl_epi32(qh, _mm_cvtsi32_si128(4 * l as i32));
            let hi = _mm512_slli_epi32::<8>(_mm512_and_si512(nib, seven));
            let off = offsets(_mm512_test_epi32_mask(nib, _mm512_set1_epi32(8)));
            (ws[2 * l], ws[2 * l + 1]) = group(gb.add(IQ1_M_IDX + 16 * (4 * j + l)), hi, off);
        }
        (ws, m_lo, m_hi)
    }
}

#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
pub(crate) unsafe fn gemm_iq1_s_vnni(k: usize, w: &[u8], a: &[u8], n: usize, out: OutPtr) {
    gemm::<Iq1S>(k, w, a, n, out)
}

#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
pub(crate) unsafe fn gemm_iq1_m_vnni(k: usize, w: &[u8], a: &[u8], n: usize, out: OutPtr) {
    gemm::<Iq1M>(k, w, a, n, out)
}
