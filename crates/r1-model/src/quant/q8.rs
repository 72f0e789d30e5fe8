//! Activation quantization as llama.cpp's x86 build does it (`quantize_row_q8_0` / `q8_1` in
//! ggml-cpu/arch/x86/quants.c, and `quantize_row_q8_K_ref`), and the plain f32 / f16 / bf16
//! conversions. Lengths are checked by the caller.
//!
//! The x86 Q8_0/Q8_1 quantizers differ from ggml's portable `_ref` code in two ways that
//! change bytes: the inverse scale is `127/amax` (not `1/(amax/127)`) and rounding is to
//! nearest-even (`_mm256_round_ps`), not `roundf`. Matching them is what keeps our matmul
//! outputs within float rounding of llama.cpp's (checked against llama.cpp's own tensors).

use half::{bf16, f16};

use super::util::*;

/// `d = amax/127` and the inverse scale `127/amax`, as ggml's x86 quantizers compute them.
#[inline]
pub(crate) fn q8_scales(amax: f32) -> (f32, f32) {
    (amax / 127.0, if amax != 0.0 { 127.0 / amax } else { 0.0 })
}

/// Q8_0 block: `d` (f16) then 32 i8: `q = round_ties_even(x · 127/amax)`.
pub(crate) fn quantize_q8_0(x: &[f32], out: &mut [u8]) {
    for (xb, yb) in x.chunks_exact(32).zip(out.chunks_exact_mut(34)) {
        let amax = xb.iter().fold(0f32, |m, v| m.max(v.abs()));
        let (d, id) = q8_scales(amax);
        wr_f16(yb, 0, d);
        for (q, &v) in yb[2..].iter_mut().zip(xb) {
            *q = (v * id).round_ties_even() as i8 as u8;
        }
    }
}

/// Q8_1 block: `d` (f16), `s = d * sum(q)` (f16), then 32 i8 rounded as in Q8_0.
pub(crate) fn quantize_q8_1(x: &[f32], out: &mut [u8]) {
    for (xb, yb) in x.chunks_exact(32).zip(out.chunks_exact_mut(36)) {
        let amax = xb.iter().fold(0f32, |m, v| m.max(v.abs()));
        let (d, id) = q8_scales(amax);
        let mut sum = 0i32;
        for (q, &v) in yb[4..].iter_mut().zip(xb) {
            let qi = (v * id).round_ties_even() as i8;
            *q = qi as u8;
            sum += qi as i32;
        }
        wr_f16(yb, 0, d);
        wr_f16(yb, 2, sum as f32 * d);
    }
}

/// Q8_K block: `d` (f32), 256 i8, 16 i16 group sums. The element with the largest |x| keeps
/// its sign: `iscale = -127/max`, `q = min(127, nearest_int(iscale*x))`, `d = 1/iscale`.
pub(crate) fn quantize_q8_k(x: &[f32], out: &mut [u8]) {
    for (xb, yb) in x.chunks_exact(QK_K).zip(out.chunks_exact_mut(292)) {
        let mut max = 0f32;
        let mut amax = 0f32;
        for &v in xb {
            if v.abs() > amax {
                amax = v.abs();
                max = v;
            }
        }
        if amax == 0.0 {
            yb.fill(0);
            continue;
        }
        let iscale = -127.0 / max;
        for (q, &v) in yb[4..4 + QK_K].iter_mut().zip(xb) {
            *q = nearest_int(iscale * v).min(127) as i8 as u8;
        }
        for g in 0..16 {
            let s: i32 = yb[4 + 16 * g..4 + 16 * g + 16]
                .iter()
                .map(|&q| q as i8 as i32)
                .sum();
            let o = 4 + QK_K + 2 * g;
            yb[o..o + 2].copy_from_slice(&(s as i16).to_le_bytes());
        }
        yb[0..4].copy_from_slice(&(1.0 / iscale).to_le_bytes());
    }
}

pub(crate) fn convert_f32(x: &[f32], out: &mut [u8]) {
    for (v, o) in x.iter().zip(out.chunks_exact_mut(4)) {
        o.copy_from_slice(&v.to_le_bytes());
    }
}

pub(crate) fn convert_f16(x: &[f32], out: &mut [u8]) {
    for (v, o) in x.iter().zip(out.chunks_exact_mut(2)) {
        o.copy_from_slice(&f16::from_f32(*v).to_bits().to_le_bytes());
    }
}

pub(crate) fn convert_bf16(x: &[f32], out: &mut [u8]) {
    for (v, o) in x.iter().zip(out.chunks_exact_mut(2)) {
        o.copy_from_slice(&bf16::from_f32(*v).to_bits().to_le_bytes());
    }
}
