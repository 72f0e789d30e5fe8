//! AVX2 activation quantizers, bit-identical to the scalar code in `q8` for finite inputs:
//! the same f32 scale computations and round-to-nearest-even everywhere (as ggml's x86
//! quantizers and `nearest_int`).

// Parallel arrays of SIMD registers (per token / per lane) are indexed together.
#![allow(clippy::needless_range_loop)]

use core::arch::x86_64::*;

use super::util::QK_K;

#[inline(always)]
unsafe fn abs_ps(v: __m256) -> __m256 {
    _mm256_andnot_ps(_mm256_set1_ps(-0.0), v)
}

#[inline(always)]
unsafe fn hmax_ps(v: __m256) -> f32 {
    let m = _mm_max_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    let m = _mm_max_ps(m, _mm_movehl_ps(m, m));
    let m = _mm_max_ss(m, _mm_shuffle_ps(m, m, 1));
    _mm_cvtss_f32(m)
}

/// Four i32x8 (each in -128..=127) to 32 i8 in order.
#[inline(always)]
unsafe fn pack_i8(a: __m256i, b: __m256i, c: __m256i, d: __m256i) -> __m256i {
    let ab = _mm256_packs_epi32(a, b); // a0-3 b0-3 | a4-7 b4-7
    let cd = _mm256_packs_epi32(c, d);
    let v = _mm256_packs_epi16(ab, cd); // a0-3 b0-3 c0-3 d0-3 | a4-7 b4-7 c4-7 d4-7
    _mm256_permutevar8x32_epi32(v, _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7))
}

#[inline(always)]
unsafe fn f16_bits(v: f32) -> [u8; 2] {
    (_mm_extract_epi16::<0>(_mm_cvtps_ph::<_MM_FROUND_TO_NEAREST_INT>(_mm_set_ss(v))) as u16)
        .to_le_bytes()
}

/// One 32-element Q8_0/Q8_1 block: returns (d, sum of quants) and writes the 32 quants.
#[inline(always)]
unsafe fn q8_block(x: *const f32, q: *mut u8) -> (f32, i32) {
    let v = [
        _mm256_loadu_ps(x),
        _mm256_loadu_ps(x.add(8)),
        _mm256_loadu_ps(x.add(16)),
        _mm256_loadu_ps(x.add(24)),
    ];
    let m = _mm256_max_ps(
        _mm256_max_ps(abs_ps(v[0]), abs_ps(v[1])),
        _mm256_max_ps(abs_ps(v[2]), abs_ps(v[3])),
    );
    let amax = hmax_ps(m);
    let (d, id) = super::q8::q8_scales(amax);
    let idv = _mm256_set1_ps(id);
    let mut qi = [_mm256_setzero_si256(); 4];
    for i in 0..4 {
        qi[i] = _mm256_cvtps_epi32(_mm256_round_ps(
            _mm256_mul_ps(v[i], idv),
            _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC,
        ));
    }
    let packed = pack_i8(qi[0], qi[1], qi[2], qi[3]);
    _mm256_storeu_si256(q as *mut __m256i, packed);
    let s = _mm256_add_epi32(
        _mm256_add_epi32(qi[0], qi[1]),
        _mm256_add_epi32(qi[2], qi[3]),
    );
    let s = _mm_add_epi32(_mm256_castsi256_si128(s), _mm256_extracti128_si256::<1>(s));
    let s = _mm_add_epi32(s, _mm_unpackhi_epi64(s, s));
    let s = _mm_add_epi32(s, _mm_shuffle_epi32::<1>(s));
    (d, _mm_cvtsi128_si32(s))
}

#[target_feature(enable = "avx2,fma,f16c")]
pub(crate) unsafe fn quantize_q8_0_avx2(x: &[f32], out: &mut [u8]) {
    for (xb, yb) in x.chunks_exact(32).zip(out.chunks_exact_mut(34)) {
        let (d, _) = q8_block(xb.as_ptr(), yb.as_mut_ptr().add(2));
        yb[0..2].copy_from_slice(&f16_bits(d));
    }
}

#[target_feature(enable = "avx2,fma,f16c")]
pub(crate) unsafe fn quantize_q8_1_avx2(x: &[f32], out: &mut [u8]) {
    for (xb, yb) in x.chunks_exact(32).zip(out.chunks_exact_mut(36)) {
        let (d, sum) = q8_block(xb.as_ptr(), yb.as_mut_ptr().add(4));
        yb[0..2].copy_from_slice(&f16_bits(d));
        yb[2..4].copy_from_slice(&f16_bits(sum as f32 * d));
    }
}

#[target_feature(enable = "avx2,fma,f16c")]
pub(crate) unsafe fn quantize_q8_k_avx2(x: &[f32], out: &mut [u8]) {
    for (xb, yb) in x.chunks_exact(QK_K).zip(out.chunks_exact_mut(292)) {
        let p = xb.as_ptr();
        let mut m = _mm256_setzero_ps();
        for i in 0..32 {
            m = _mm256_max_ps(m, abs_ps(_mm256_loadu_ps(p.add(8 * i))));
        }
        let amax = hmax_ps(m);
        if amax == 0.0 || amax.is_nan() {
            // the scalar code for NaN-only or all-zero blocks
            super::q8::quantize_q8_k(xb, yb);
            continue;
        }
        // the first element with the largest |x| keeps its sign
        let max = xb.iter().copied().find(|v| v.abs() == amax).unwrap_or(amax);
        let iscale = -127.0 / max;
        let is = _mm256_set1_ps(iscale);
        let lim = _mm256_set1_epi32(127);
        let q = yb.as_mut_ptr().add(4);
        for c in 0..8 {
            let mut qi = [_mm256_setzero_si256(); 4];
            for i in 0..4 {
                let v = _mm256_mul_ps(is, _mm256_loadu_ps(p.add(32 * c + 8 * i)));
                let r = _mm256_round_ps(v, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
                qi[i] = _mm256_min_epi32(_mm256_cvtps_epi32(r), lim);
            }
            _mm256_storeu_si256(
                q.add(32 * c) as *mut __m256i,
                pack_i8(qi[0], qi[1], qi[2], qi[3]),
            );
            for h in 0..2 {
                let s = _mm256_add_epi32(qi[2 * h], qi[2 * h + 1]);
                let s = _mm_add_epi32(_mm256_castsi256_si128(s), _mm256_extracti128_si256::<1>(s));
                let s = _mm_add_epi32(s, _mm_unpackhi_epi64(s, s));
                let s = _mm_add_epi32(s, _mm_shuffle_epi32::<1>(s));
                let o = 4 + QK_K + 2 * (2 * c + h);
                yb[o..o + 2].copy_from_slice(&(_mm_cvtsi128_si32(s) as i16).to_le_bytes());
            }
        }
        yb[0..4].copy_from_slice(&(1.0 / iscale).to_le_bytes());
    }
}
