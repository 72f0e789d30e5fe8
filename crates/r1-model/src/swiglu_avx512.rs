//! SwiGLU 16 lanes at a time: ggml's `ggml_v_silu` / `ggml_v_expf` in their AVX-512 form,
//! the same operations as the scalar `ops::ggml_expf` path, so every lane is bit-identical
//! to it (tested below). A scalar loop could not vectorise: the range check and the
//! `2^n` scaling branch per element, and a prefill's SwiGLU is millions of elements.

use core::arch::x86_64::*;

/// `e^x` for 16 lanes (max error 1.45 ulp + 0.5; flushes beyond ±88/104 like ggml).
#[inline(always)]
unsafe fn v_expf(x: __m512) -> __m512 {
    let c = |bits: u32| _mm512_set1_ps(f32::from_bits(bits));
    let r = c(0x4b40_0000);
    let z = _mm512_fmadd_ps(x, c(0x3fb8_aa3b), r);
    let n = _mm512_sub_ps(z, r);
    let b = _mm512_fnmadd_ps(n, c(0x35bf_be8e), _mm512_fnmadd_ps(n, c(0x3f31_7200), x));
    let big = _mm512_cmp_ps_mask::<_CMP_GT_OQ>(_mm512_abs_ps(n), _mm512_set1_ps(192.0));
    let u = _mm512_mul_ps(b, b);
    let j = _mm512_fmadd_ps(
        _mm512_fmadd_ps(_mm512_fmadd_ps(c(0x3c07_2010), b, c(0x3d2b_9f17)), u, {
            _mm512_fmadd_ps(c(0x3e2a_af33), b, c(0x3eff_fedb))
        }),
        u,
        _mm512_fmadd_ps(c(0x3f7f_fff6), b, _mm512_set1_ps(1.0)),
    );
    let res = _mm512_scalef_ps(j, n);
    if big == 0 {
        return res;
    }
    let nonpos = _mm512_cmp_ps_mask::<_CMP_LE_OQ>(n, _mm512_setzero_ps());
    let alt = _mm512_mask_blend_ps(nonpos, _mm512_set1_ps(f32::INFINITY), _mm512_setzero_ps());
    _mm512_mask_blend_ps(big, res, alt)
}

/// In place `gate = silu(gate) * up`; the tail shorter than 16 goes through `tail`.
///
/// # Safety
/// The CPU must support AVX-512 F.
#[target_feature(enable = "avx512f,avx2,fma")]
pub(crate) unsafe fn silu_mul_avx512(
    gate: &mut [f32],
    up: &[f32],
    tail: impl Fn(&mut [f32], &[f32]),
) {
    let n = gate.len().min(up.len());
    let full = n / 16 * 16;
    let one = _mm512_set1_ps(1.0);
    for i in (0..full).step_by(16) {
        let x = _mm512_loadu_ps(gate.as_ptr().add(i));
        let e = v_expf(_mm512_sub_ps(_mm512_setzero_ps(), x));
        let silu = _mm512_div_ps(x, _mm512_add_ps(one, e));
        let y = _mm512_mul_ps(silu, _mm512_loadu_ps(up.as_ptr().add(i)));
        _mm512_storeu_ps(gate.as_mut_ptr().add(i), y);
    }
    tail(&mut gate[full..n], &up[full..n]);
}

#[cfg(test)]
mod tests {
    use crate::quant::Isa;

    /// Every 7919th f32 bit pattern (all signs, magnitudes, NaN/inf) against the scalar path.
    #[test]
    fn sixteen_lanes_equal_the_scalar_path_bit_for_bit() {
        if !Isa::Avx512.is_available() {
            eprintln!("SKIP: no AVX-512 on this CPU");
            return;
        }
        let gate: Vec<f32> = (0..u32::MAX / 7919)
            .map(|i| f32::from_bits(i.wrapping_mul(7919)))
            .chain([
                0.0,
                -0.0,
                88.7,
                -88.7,
                104.0,
                -104.0,
                f32::INFINITY,
                f32::NEG_INFINITY,
            ])
            .collect();
        let up: Vec<f32> = (0..gate.len())
            .map(|i| 1.0 + (i % 13) as f32 * 0.37)
            .collect();
        let mut simd = gate.clone();
        let mut scalar = gate.clone();
        crate::ops::silu_mul_scalar(&mut scalar, &up);
        // SAFETY: AVX-512 F checked above.
        unsafe { super::silu_mul_avx512(&mut simd, &up, crate::ops::silu_mul_scalar) };
        for (i, (a, b)) in simd.iter().zip(&scalar).enumerate() {
            assert!(
                a.to_bits() == b.to_bits() || (a.is_nan() && b.is_nan()),
                "x={}: {a} vs {b}",
                gate[i]
            );
        }
    }
}
