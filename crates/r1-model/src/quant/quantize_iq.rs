//! The i-quant writers (IQ1_S … IQ4_XS), one file per family, each a port of ggml's
//! `quantize_iq*` that writes the bytes `llama-quantize` writes. This file only routes a row to
//! its family and says which types need an importance matrix.
//!
//! A family's `row` is `#[inline(always)]`, so it is compiled inside `quantize_ggml`'s
//! FMA-enabled wrapper, and gets the [`FmaProfile`] of the ggml build being matched.

use super::quantize_ggml::FmaProfile;
use super::{quantize_iq1, quantize_iq2, quantize_iq3, quantize_iq4, GgmlType, QuantError};

/// The i-quant types this build can write.
pub(super) fn supported(ty: GgmlType) -> bool {
    quantize_iq1::supported(ty)
        || quantize_iq2::supported(ty)
        || quantize_iq3::supported(ty)
        || quantize_iq4::supported(ty)
}

/// Types whose ggml quantizer has no fallback without an importance matrix (it asserts
/// "missing quantization weights"; `llama-quantize` refuses them without `--imatrix`).
pub fn needs_imatrix(ty: GgmlType) -> bool {
    use GgmlType::*;
    matches!(ty, IQ2_XXS | IQ2_XS | IQ1_S)
}

/// Quantize one whole row (`x`, its `out` bytes, the importance of each column).
#[inline(always)]
pub(super) fn row(
    ty: GgmlType,
    x: &[f32],
    out: &mut [u8],
    imatrix: Option<&[f32]>,
    p: FmaProfile,
) -> Result<(), QuantError> {
    if imatrix.is_none() && needs_imatrix(ty) {
        return Err(QuantError::NeedsImatrix { ty });
    }
    if quantize_iq1::supported(ty) {
        quantize_iq1::row(ty, x, out, imatrix, p)
    } else if quantize_iq2::supported(ty) {
        quantize_iq2::row(ty, x, out, imatrix, p)
    } else if quantize_iq3::supported(ty) {
        quantize_iq3::row(ty, x, out, imatrix, p)
    } else if quantize_iq4::supported(ty) {
        quantize_iq4::row(ty, x, out, imatrix, p)
    } else {
        Err(QuantError::Unsupported {
            ty,
            op: "quantize_weights",
        })
    }
}

/// `sigma2` of a 256-value super-block as the IQ1/IQ3 writers take it: `2·Σx²/256`, each
/// product rounded, summed in order, unfused (as the Zen- and Intel-tuned ggml builds the
/// IQ1/IQ3 tests were checked against compute it).
#[inline(always)]
pub(super) fn sigma2_superblock(x: &[f32]) -> f32 {
    let mut s = 0f32;
    for &v in x {
        s += v * v;
    }
    2.0 * s / super::util::QK_K as f32
}

/// The importance of each of a block's values, as every i-quant writer weighs them:
/// `qw·sqrt(sigma2 + x²)` (GCC fuses `x*x + sigma2`), or `x²` without an importance matrix.
#[inline(always)]
pub(super) fn block_weights(xb: &[f32], qw: Option<&[f32]>, sigma2: f32, weight: &mut [f32]) {
    match qw {
        Some(qw) => {
            for i in 0..weight.len() {
                weight[i] = qw[i] * xb[i].mul_add(xb[i], sigma2).sqrt();
            }
        }
        None => {
            for i in 0..weight.len() {
                weight[i] = xb[i] * xb[i];
            }
        }
    }
}
