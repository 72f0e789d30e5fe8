//! Writers for IQ2_XXS, IQ2_XS and IQ2_S: ports of ggml's `quantize_iq2_xxs` / `_xs` / `_s`
//! (`quantize_row_iq2_*_impl`, what `ggml_quantize_chunk` runs), byte-identical to ggml's build.
//!
//! Each quantizes groups of 8 magnitudes to a row of the type's grid (levels {1, 3, 5} times a
//! block scale, [`iq2_index`] for the lookup), trying a range of scales and keeping the best
//! weighted fit; the signs are stored apart (IQ2_XXS/IQ2_XS keep seven per eight values, with an
//! even number of negatives). IQ2_XXS lives in `quantize_iq2_xxs.rs`, IQ2_XS and IQ2_S (one
//! algorithm, two layouts) in `quantize_iq2_xs.rs`; this file routes and holds what they share.
//!
//! Fused multiply-adds stand where GCC 12 fuses them in the peer's `-O3 -march=native` build
//! (`.FMA`/`.FMS`/`.FNMA` in `-fdump-tree-optimized` of `quantize_row_iq2_*_impl` and
//! `iq2_find_best_neighbour`, the same under Zen, Sapphire Rapids and generic tuning, so the
//! [`FmaProfile`] plays no part here):
//! - `sigma2 + x*x` inside the importance weight's `sqrtf`;
//! - the trial scales `5 + is*0.1`;
//! - every `nearest_int(0.5*(id*x - 1))`: `id*x - 1` fused, then `0.5*t` fused into the
//!   rounding's `+ 1.5·2^23` ([`level`]);
//! - the fits `sumqx += w*x*q`, `sumq2 += w*q*q`: `w*x` and `w*q` rounded, then fused with `q`;
//! - the neighbour distance `d2 += w*diff*diff` with `diff = scale*q - x` fused, `w*diff`
//!   rounded ([`best_neighbour`]).
//!
//! The `sumx2` sum is vectorized with an in-order reduction of rounded products: the same as
//! the plain loop, unfused.
//!
//! ggml's `nearest_int` is reproduced to the bit ([`ni_bits`]), also where its argument is
//! beyond ±2^22 (a refit scale can be tiny), since the result is clamped, not rejected.

#[path = "quantize_iq2_xs.rs"]
mod xs;
#[path = "quantize_iq2_xxs.rs"]
mod xxs;

use super::quantize_ggml::FmaProfile;
use super::quantize_iq2_index::{iq2_index, Iq2Index};
use super::{GgmlType, QuantError};

/// `1.5·2^23`: ggml's `nearest_int` adds it and reads the rounded integer from the mantissa.
const MAGIC: f32 = 12582912.0;

/// The types of this family that [`row`] writes.
pub(super) fn supported(ty: GgmlType) -> bool {
    matches!(ty, GgmlType::IQ2_XXS | GgmlType::IQ2_XS | GgmlType::IQ2_S)
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
    let _ = p; // no loop-carried chain here that the tunings treat differently (module doc)
    match (ty, imatrix) {
        (GgmlType::IQ2_XXS, Some(qw)) => xxs::row(x, out, qw),
        (GgmlType::IQ2_XS, Some(qw)) => xs::row::<false>(x, out, Some(qw)),
        (GgmlType::IQ2_S, qw) => xs::row::<true>(x, out, qw),
        (GgmlType::IQ2_XXS | GgmlType::IQ2_XS, None) => {
            return Err(QuantError::NeedsImatrix { ty })
        }
        _ => {
            return Err(QuantError::Unsupported {
                ty,
                op: "quantize_weights",
            })
        }
    }
    Ok(())
}

/// ggml's `nearest_int` from the float it has already offset by [`MAGIC`]: the low 23 bits
/// of the mantissa, recentred.
#[inline(always)]
fn ni_bits(v: f32) -> i32 {
    (v.to_bits() & 0x007f_ffff) as i32 - 0x0040_0000
}

/// `nearest_int(x)`, nothing fused.
#[inline(always)]
fn ni(x: f32) -> i32 {
    ni_bits(x + MAGIC)
}

/// `nearest_int(a*b)` with the product fused into the offset.
#[inline(always)]
fn ni_mul(a: f32, b: f32) -> i32 {
    ni_bits(a.mul_add(b, MAGIC))
}

/// `nearest_int(0.5f*(id*x - 1))`: the level 0..=(k-1) whose `2l + 1` is nearest `id*x`
/// (unclamped). GCC fuses `id*x - 1`, then `0.5*t` into the offset.
#[inline(always)]
fn level(id: f32, x: f32) -> i32 {
    ni_bits(id.mul_add(x, -1.0).mul_add(0.5, MAGIC))
}

/// The lattice point of 8 levels (0..=2 each, 2 bits per coordinate, coordinate 0 lowest).
#[inline(always)]
fn point(l: &[i8]) -> usize {
    let mut u = 0usize;
    for (i, &v) in l[..8].iter().enumerate() {
        u |= (v as usize) << (2 * i);
    }
    u
}

/// ggml's `iq2_find_best_neighbour`: of the rows `near` (an off-grid point's nearest), the one
/// with the least `Σ w·(scale·q - x)²` (the first on ties); its levels go to `l[..8]`.
#[inline(always)]
fn best_neighbour(
    idx: &Iq2Index,
    near: &[u16],
    x: &[f32],
    w: &[f32],
    scale: f32,
    l: &mut [i8],
) -> usize {
    let mut best_d2 = f32::MAX;
    // ggml asserts a row was found; only non-finite input can leave none
    let mut best = near.first().copied().unwrap_or(0) as usize;
    for &j in near {
        let pg = idx.row(j as usize);
        let mut d2 = 0f32;
        for i in 0..8 {
            let diff = scale.mul_add(pg[i] as f32, -x[i]);
            d2 = (w[i] * diff).mul_add(diff, d2);
        }
        if d2 < best_d2 {
            best_d2 = d2;
            best = j as usize;
        }
    }
    levels_of_row(idx, best, l);
    best
}

/// Row `r`'s levels, `(coordinate - 1)/2`, into `l[..8]`.
#[inline(always)]
fn levels_of_row(idx: &Iq2Index, r: usize, l: &mut [i8]) {
    for (li, &g) in l[..8].iter_mut().zip(idx.row(r)) {
        *li = (g - 1) / 2;
    }
}

/// Snap 8 values to the grid with the inverse scale `id` (ggml's inner loop, shared by the
/// scale search and the refit): levels into `l[..8]`; an off-grid point takes its best
/// neighbour under `scale`. Returns (row, was on the grid).
#[inline(always)]
fn snap(
    idx: &Iq2Index,
    id: f32,
    scale: f32,
    x: &[f32],
    waux: &[f32],
    l: &mut [i8],
) -> (usize, bool) {
    for i in 0..8 {
        l[i] = level(id, x[i]).clamp(0, 2) as i8;
    }
    match idx.lookup(point(l)) {
        Ok(r) => (r, true),
        Err(near) => (best_neighbour(idx, near, x, waux, scale, l), false),
    }
}

/// Σ w·x·q and Σ w·q² of levels `l` (`q = 2l + 1`), `w*x` and `w*q` rounded, then fused.
#[inline(always)]
fn fit(x: &[f32], w: &[f32], l: &[i8]) -> (f32, f32) {
    let (mut sumqx, mut sumq2) = (0f32, 0f32);
    for i in 0..x.len() {
        let q = (2 * l[i] as i32 + 1) as f32;
        sumqx = (x[i] * w[i]).mul_add(q, sumqx);
        sumq2 = (w[i] * q).mul_add(q, sumq2);
    }
    (sumqx, sumq2)
}

/// A 4-bit block scale from `id = 31/max_scale`: `nearest_int(0.5*(id*s - 1))` in 0..=15.
#[inline(always)]
fn scale_nibble(id: f32, s: f32) -> u8 {
    level(id, s).clamp(0, 15) as u8
}

/// The signs of 8 values as ggml's IQ2_XXS/IQ2_XS store them: magnitudes into `xval`, a bit
/// per negative value; with an odd count, the value of least `w·x²` is flipped in `xval` and
/// in the bits, so 7 bits determine the 8th.
#[inline(always)]
fn even_signs(xb: &[f32], w: &[f32], xval: &mut [f32]) -> u8 {
    let mut s = 0u8;
    let mut nflip = 0;
    for i in 0..8 {
        if xb[i] >= 0.0 {
            xval[i] = xb[i];
        } else {
            xval[i] = -xb[i];
            nflip += 1;
            s |= 1 << i;
        }
    }
    if nflip % 2 == 1 {
        let mut imin = 0;
        let mut min = w[0] * xb[0] * xb[0];
        for i in 1..8 {
            let ax = w[i] * xb[i] * xb[i];
            if ax < min {
                min = ax;
                imin = i;
            }
        }
        xval[imin] = -xval[imin];
        s ^= 1 << imin;
    }
    s & 127
}

/// ggml's `MAX(a, b)`: `a > b ? a : b`.
#[inline(always)]
fn gmax(a: f32, b: f32) -> f32 {
    if a > b {
        a
    } else {
        b
    }
}
