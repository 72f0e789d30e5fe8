//! Writers for IQ1_S, IQ1_M (ggml's quantize_iq1_s / quantize_iq1_m), byte-identical to ggml.
//! Not written yet: every type here reports `Unsupported` until its port lands.

use super::quantize_ggml::FmaProfile;
use super::{GgmlType, QuantError};

/// The types of this family that [`row`] writes.
pub(super) fn supported(ty: GgmlType) -> bool {
    let _ = ty; // IQ1_S | IQ1_M
    false
}

/// Quantize one whole row as ggml does.
#[inline(always)]
pub(super) fn row(
    ty: GgmlType,
    x: &[f32],
    out: &mut [u8],
    imatrix: Option<&[f32]>,
    p: FmaProfile,
) -> Result<(), QuantError> {
    let _ = (x, out, imatrix, p);
    Err(QuantError::Unsupported {
        ty,
        op: "quantize_weights",
    })
}
