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

#[cfg(test)]
mod tests {
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
