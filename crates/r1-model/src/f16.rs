//! IEEE half-precision helpers for the KV cache and attention.

use std::sync::LazyLock;

/// f16 bits -> f32 for every bit pattern: exact, and one load instead of bit twiddling.
static F16_TO_F32: LazyLock<Box<[f32]>> = LazyLock::new(|| {
    (0..=u16::MAX)
        .map(|b| half::f16::from_bits(b).to_f32())
        .collect()
});

#[inline]
pub fn to_f32(bits: u16) -> f32 {
    F16_TO_F32[bits as usize]
}

/// Round to the nearest f16 (ties to even, as F16C's `vcvtps2ph` with mode 0).
#[inline]
pub fn from_f32(x: f32) -> u16 {
    half::f16::from_f32(x).to_bits()
}

/// `x` rounded to the nearest f16 value, kept as f32.
#[inline]
pub fn round(x: f32) -> f32 {
    to_f32(from_f32(x))
}

/// The f16→f32 table, for loops that convert many values.
pub fn table() -> &'static [f32] {
    &F16_TO_F32
}

/// `dst[i] = to_f32(src[i])`, 8 or 16 at a time with F16C where the CPU has it (the
/// conversion is exact, so every path gives the same values).
pub fn widen(src: &[u16], dst: &mut [f32]) {
    assert_eq!(src.len(), dst.len());
    #[cfg(target_arch = "x86_64")]
    if crate::quant::Isa::best() != crate::quant::Isa::Scalar {
        // SAFETY: AVX2 (with F16C) is available; lengths are equal.
        unsafe { widen_f16c(src, dst) };
        return;
    }
    let table = table();
    for (d, &s) in dst.iter_mut().zip(src) {
        *d = table[s as usize];
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,f16c")]
unsafe fn widen_f16c(src: &[u16], dst: &mut [f32]) {
    use std::arch::x86_64::*;
    let n8 = src.len() / 8 * 8;
    for i in (0..n8).step_by(8) {
        let h = _mm_loadu_si128(src.as_ptr().add(i) as *const __m128i);
        _mm256_storeu_ps(dst.as_mut_ptr().add(i), _mm256_cvtph_ps(h));
    }
    for i in n8..src.len() {
        dst[i] = to_f32(src[i]);
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn widen_converts_every_bit_pattern_exactly() {
        let src: Vec<u16> = (0..=u16::MAX).chain(0..5).collect();
        let mut dst = vec![0f32; src.len()];
        super::widen(&src, &mut dst);
        for (&s, &d) in src.iter().zip(&dst) {
            let want = half::f16::from_bits(s).to_f32();
            assert!(
                d.to_bits() == want.to_bits() || (d.is_nan() && want.is_nan()),
                "{s:#06x}: {d} vs {want}"
            );
        }
    }

    #[test]
    fn round_trips_and_rounds_to_even() {
        for x in [0.0f32, 1.0, -2.5, 65504.0, 1e-5] {
            assert_eq!(
                super::to_f32(super::from_f32(x)),
                half::f16::from_f32(x).to_f32()
            );
        }
        // 1 + 2^-11 is halfway between 1 and the next f16: ties to even -> 1.
        assert_eq!(super::round(1.0 + 2f32.powi(-11)), 1.0);
        assert_eq!(
            super::round(1.0 + 3.0 * 2f32.powi(-11)),
            1.0 + 2.0 * 2f32.powi(-10)
        );
    }
}
