//! Rotary embeddings of the DeepSeek models: plain, and YaRN as DeepSeek's original
//! `modeling_deepseek.py` computes it (`DeepseekV3YarnRotaryEmbedding`): frequencies blended
//! between extrapolation and interpolation over a floor/ceil correction range, cos/sin scaled
//! by `mscale(factor, mscale) / mscale(factor, mscale_all_dim)`, and the softmax scale
//! multiplied by `mscale(factor, mscale_all_dim)²`.
//!
//! Frequencies are computed in f32 as torch does (`base ** (arange(0, d, 2) / d)` in f32).

use crate::ops::RopeTable;

/// `rope_scaling` of type `yarn`.
#[derive(Clone, Debug, PartialEq)]
pub struct YarnParams {
    pub factor: f64,
    pub original_max_position_embeddings: usize,
    pub beta_fast: f64,
    pub beta_slow: f64,
    pub mscale: f64,
    pub mscale_all_dim: f64,
}

/// `yarn_get_mscale`: `0.1·m·ln(s) + 1` for scale `s > 1`, else 1.
pub fn yarn_get_mscale(scale: f64, mscale: f64) -> f64 {
    if scale <= 1.0 {
        1.0
    } else {
        0.1 * mscale * scale.ln() + 1.0
    }
}

/// `yarn_find_correction_dim`: the dimension index at which a frequency completes
/// `num_rotations` turns over `max_pos` positions.
pub fn yarn_find_correction_dim(num_rotations: f64, dim: usize, base: f64, max_pos: usize) -> f64 {
    dim as f64 * (max_pos as f64 / (num_rotations * 2.0 * std::f64::consts::PI)).ln()
        / (2.0 * base.ln())
}

/// `yarn_find_correction_range`: `(floor(low), ceil(high))` clamped to `[0, dim-1]`.
pub fn yarn_find_correction_range(
    low_rot: f64,
    high_rot: f64,
    dim: usize,
    base: f64,
    max_pos: usize,
) -> (f64, f64) {
    let low = yarn_find_correction_dim(low_rot, dim, base, max_pos).floor();
    let high = yarn_find_correction_dim(high_rot, dim, base, max_pos).ceil();
    (low.max(0.0), high.min(dim as f64 - 1.0))
}

/// Inverse frequencies of the `dim` rotated dimensions (`dim / 2` values).
pub fn inv_freq(dim: usize, base: f64, yarn: Option<&YarnParams>) -> Vec<f32> {
    let half = dim / 2;
    let pow: Vec<f32> = (0..half)
        .map(|i| (base as f32).powf((2 * i) as f32 / dim as f32))
        .collect();
    let Some(y) = yarn else {
        return pow.iter().map(|p| 1.0 / p).collect();
    };
    let (low, high) = yarn_find_correction_range(
        y.beta_fast,
        y.beta_slow,
        dim,
        base,
        y.original_max_position_embeddings,
    );
    let (low, mut high) = (low as f32, high as f32);
    if low == high {
        high += 0.001;
    }
    (0..half)
        .map(|i| {
            let extra = 1.0 / pow[i];
            let inter = 1.0 / (y.factor as f32 * pow[i]);
            let ramp = ((i as f32 - low) / (high - low)).clamp(0.0, 1.0);
            let mask = 1.0 - ramp;
            inter * (1.0 - mask) + extra * mask
        })
        .collect()
}

/// The factor cos and sin are multiplied by (1 without yarn).
pub fn cos_sin_scale(yarn: Option<&YarnParams>) -> f32 {
    match yarn {
        None => 1.0,
        Some(y) => {
            (yarn_get_mscale(y.factor, y.mscale) / yarn_get_mscale(y.factor, y.mscale_all_dim))
                as f32
        }
    }
}

/// Attention softmax scale: `q_head_dim^-0.5`, times `mscale(factor, mscale_all_dim)²` under
/// yarn when `mscale_all_dim` is non-zero.
pub fn softmax_scale(q_head_dim: usize, yarn: Option<&YarnParams>) -> f64 {
    let mut s = (q_head_dim as f64).powf(-0.5);
    if let Some(y) = yarn {
        if y.mscale_all_dim != 0.0 {
            let m = yarn_get_mscale(y.factor, y.mscale_all_dim);
            s *= m * m;
        }
    }
    s
}

/// cos/sin of one position: angle `pos · inv_freq[i]` in f32 (torch's `outer`), scaled.
pub fn rope_table(pos: usize, inv_freq: &[f32], scale: f32) -> RopeTable {
    let p = pos as f32;
    let (cos, sin) = inv_freq
        .iter()
        .map(|&f| {
            let a = p * f;
            (a.cos() * scale, a.sin() * scale)
        })
        .unzip();
    RopeTable { cos, sin }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tiny_yarn() -> YarnParams {
        YarnParams {
            factor: 40.0,
            original_max_position_embeddings: 64,
            beta_fast: 32.0,
            beta_slow: 1.0,
            mscale: 1.0,
            mscale_all_dim: 1.0,
        }
    }

    #[test]
    fn plain_inv_freq_and_scale_match_the_fixture_readme() {
        let f = inv_freq(8, 10000.0, None);
        let want = [1.0, 0.1, 0.01, 0.001];
        for (a, b) in f.iter().zip(want) {
            assert!((a - b).abs() <= 1e-7 * b, "{f:?}");
        }
        assert!((softmax_scale(24, None) - 0.2041241452319315).abs() < 1e-15);
        assert_eq!(cos_sin_scale(None), 1.0);
    }

    #[test]
    fn yarn_matches_the_original_deepseek_formulas() {
        let y = tiny_yarn();
        assert_eq!(
            yarn_find_correction_range(32.0, 1.0, 8, 10000.0, 64),
            (0.0, 2.0)
        );
        let f = inv_freq(8, 10000.0, Some(&y));
        // transformers' values (reference.json model.transformers_rope.rope_inv_freq).
        let want = [
            1.0,
            0.051249999552965164,
            0.0002500000118743628,
            2.499999936844688e-05,
        ];
        for (a, b) in f.iter().zip(want) {
            assert!(((*a as f64) - b).abs() <= 2e-7 * b, "{f:?}");
        }
        assert_eq!(cos_sin_scale(Some(&y)), 1.0);
        assert!((softmax_scale(24, Some(&y)) - 0.38249888831204115).abs() < 1e-15);
        assert!((yarn_get_mscale(40.0, 1.0) - (0.1 * 40f64.ln() + 1.0)).abs() < 1e-15);
        assert_eq!(yarn_get_mscale(1.0, 1.0), 1.0);
    }

    #[test]
    fn real_r1_yarn_range() {
        // DeepSeek-V3/R1: qk_rope_head_dim 64, base 10000, factor 40, original 4096.
        let (lo, hi) = yarn_find_correction_range(32.0, 1.0, 64, 10000.0, 4096);
        assert_eq!((lo, hi), (10.0, 23.0));
        let m = yarn_get_mscale(40.0, 1.0);
        assert!(
            (softmax_scale(
                192,
                Some(&YarnParams {
                    original_max_position_embeddings: 4096,
                    ..tiny_yarn()
                })
            ) - m * m / 192f64.sqrt())
            .abs()
                < 1e-15
        );
    }
}
