//! Writers for IQ4_NL and IQ4_XS: ports of ggml's `quantize_iq4_nl` / `quantize_iq4_xs` (both
//! `quantize_row_iq4_nl_impl` with `ntry = 7`, what `ggml_quantize_chunk` runs), byte-identical
//! to ggml's build.
//!
//! Fused multiply-adds stand where GCC 12 fuses them in the peer's `-O3 -march=native` build
//! (`.FMA` in `-fdump-tree-optimized` of `quantize_row_iq4_nl_impl`, the same under Zen and
//! Intel tuning, so the [`FmaProfile`] plays no part here):
//! - `sigma2 + x*x` inside the importance weight's `sqrtf`;
//! - the scale fits `sumqx += w*q*x`, `sumq2 += w*q*q`: `w*q` rounded once, then fused into
//!   each sum (the loops branch in `best_index_int8`, so Zen's chain avoidance does not apply);
//! - IQ4_XS's `nearest_int(id*scales[ib])` ([`ni_mul`]; rounding the product first changes no
//!   block of the test inputs, so this one rests on the tree dump alone).
//!
//! The `sigma2` sum is vectorized with an in-order reduction of rounded products: the same as
//! the plain loop, unfused.
//!
//! Checked both ways: `tests/quantize_iq34_vs_ggml.rs` passes against the peer built here
//! (AMD, `znver3` tuning) and against its `ggml-quants.c` rebuilt with `-mtune=sapphirerapids`
//! (`R1SERVE_PEER_CACHE` pointing there, `R1SERVE_QUANT_FMA=chains`).
// The loops index as ggml's C does, so the two can be read side by side.
#![allow(clippy::needless_range_loop)]

use super::iq_grids::KVALUES_IQ4NL;
use super::quantize_ggml::{ni_mul, FmaProfile};
use super::quantize_ggml_search::GROUP_MAX_EPS;
use super::quantize_iq::block_weights;
use super::util::{wr_f16, QK_K};
use super::{GgmlType, QuantError};

/// ggml's `ntry` for both writers: the scale search tries `(itry - 127)/max`, itry in -7..=7.
const NTRY: i32 = 7;

/// Bytes of a block: IQ4_NL (d, qs[16]) and IQ4_XS (d, scales_h, scales_l[4], qs[128]).
const NL_BYTES: usize = 18;
const XS_BYTES: usize = 136;

/// The types of this family that [`row`] writes.
pub(super) fn supported(ty: GgmlType) -> bool {
    matches!(ty, GgmlType::IQ4_NL | GgmlType::IQ4_XS)
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
    let (n, bytes) = match ty {
        GgmlType::IQ4_NL => (32, NL_BYTES),
        GgmlType::IQ4_XS => (QK_K, XS_BYTES),
        _ => {
            return Err(QuantError::Unsupported {
                ty,
                op: "quantize_weights",
            })
        }
    };
    let mut l = [0u8; QK_K];
    for (i, (xb, y)) in x
        .chunks_exact(n)
        .zip(out.chunks_exact_mut(bytes))
        .enumerate()
    {
        let qw = imatrix.map(|w| &w[i * n..(i + 1) * n]);
        let l = &mut l[..n];
        if n == 32 {
            nl_block(xb, y, qw, l);
        } else {
            xs_block(xb, y, qw, l);
        }
    }
    Ok(())
}

/// The levels as floats (ggml converts `kvalues_iq4nl[i]` at each use; the same values).
const LEVELS: [f32; 16] = {
    let mut v = [0f32; 16];
    let mut i = 0;
    while i < 16 {
        v[i] = KVALUES_IQ4NL[i] as f32;
        i += 1;
    }
    v
};

/// ggml's `best_index_int8(16, kvalues_iq4nl, x)`: the nearest level, ties to the upper one.
/// ggml bisects for the first level above `x`; counting the levels at or below it finds the
/// same one without the four unpredictable branches.
#[inline(always)]
fn best_index(x: f32) -> u8 {
    if x <= LEVELS[0] {
        return 0;
    }
    // NaN: ggml's bisection ends at the top (every `x < level` is false)
    if x >= LEVELS[15] || x.is_nan() {
        return 15;
    }
    // LEVELS[mu - 1] <= x < LEVELS[mu]
    let mut mu = 1;
    for &v in &LEVELS[1..15] {
        mu += (v <= x) as usize;
    }
    if x - LEVELS[mu - 1] < LEVELS[mu] - x {
        (mu - 1) as u8
    } else {
        mu as u8
    }
}

/// `sigma2` of a super-block: `2/n · Σx²`, products rounded, summed in order.
#[inline(always)]
fn sigma2(x: &[f32]) -> f32 {
    let mut s = 0f32;
    for &v in x {
        s += v * v;
    }
    s * (2.0 / x.len() as f32)
}

/// Σ w·q·x and Σ w·q² of the levels `id·x` snaps to (`w*q` rounded, then fused into each).
#[inline(always)]
fn fit(xb: &[f32], weight: &[f32; 32], id: f32, mut keep: Option<&mut [u8]>) -> (f32, f32) {
    let (mut sumqx, mut sumq2) = (0f32, 0f32);
    for j in 0..32 {
        let l = best_index(id * xb[j]);
        if let Some(lb) = keep.as_deref_mut() {
            lb[j] = l;
        }
        let q = LEVELS[l as usize & 15];
        let wq = weight[j] * q;
        sumqx = xb[j].mul_add(wq, sumqx);
        sumq2 = q.mul_add(wq, sumq2);
    }
    (sumqx, sumq2)
}

/// The per-32 scale search of `quantize_row_iq4_nl_impl` (`ntry = 7`): a first fit from
/// `max/127`, then 15 trial scales `(itry - 127)/max`. Fills `lb` with the first fit's levels;
/// `None` where the block is all (near) zero.
#[inline(always)]
fn block_scale(xb: &[f32], weight: &[f32; 32], lb: &mut [u8]) -> Option<f32> {
    let (mut amax, mut max) = (0f32, 0f32);
    for &v in xb {
        let ax = v.abs();
        if ax > amax {
            amax = ax;
            max = v;
        }
    }
    if amax < GROUP_MAX_EPS {
        return None;
    }
    let v0 = KVALUES_IQ4NL[0] as f32;
    // ggml: `ntry > 0 ? -max/values[0] : max/values[0]`
    let d0 = -max / v0;
    let (sumqx, sumq2) = fit(xb, weight, 1.0 / d0, Some(lb));
    let mut d = if sumq2 > 0.0 { sumqx / sumq2 } else { 0.0 };
    let mut best = d * sumqx;
    for itry in -NTRY..=NTRY {
        let id = (itry + KVALUES_IQ4NL[0] as i32) as f32 / max;
        let (sumqx, sumq2) = fit(xb, weight, id, None);
        if sumq2 > 0.0 && sumqx * sumqx > best * sumq2 {
            d = sumqx / sumq2;
            best = d * sumqx;
        }
    }
    Some(d)
}

/// Pack 32 levels as ggml does: `qs[j] = L[j] | L[j+16] << 4`.
#[inline(always)]
fn pack(l: &[u8], qs: &mut [u8]) {
    for i in 0..l.len() / 32 {
        for j in 0..16 {
            qs[16 * i + j] = l[32 * i + j] | (l[32 * i + 16 + j] << 4);
        }
    }
}

/// One IQ4_NL block (32 values, one scale, stored as is).
#[inline(always)]
fn nl_block(xb: &[f32], y: &mut [u8], qw: Option<&[f32]>, l: &mut [u8]) {
    let mut weight = [0f32; 32];
    block_weights(xb, qw, sigma2(xb), &mut weight);
    let scale = block_scale(xb, &weight, l).unwrap_or(0.0);
    wr_f16(y, 0, scale);
    // ggml re-snaps with the fitted scale itself (not its f16), even for a zero block
    let id = if scale != 0.0 { 1.0 / scale } else { 0.0 };
    for j in 0..32 {
        l[j] = best_index(id * xb[j]);
    }
    pack(l, &mut y[2..NL_BYTES]);
}

/// One IQ4_XS super-block: eight 32-blocks whose scales are coded in 6 bits against
/// `d = -max_scale/32`.
#[inline(always)]
fn xs_block(x: &[f32], y: &mut [u8], qw: Option<&[f32]>, l: &mut [u8]) {
    let s2 = sigma2(x);
    let mut weight = [0f32; 32];
    let mut scales = [0f32; 8];
    let (mut max_scale, mut amax_scale) = (0f32, 0f32);
    for ib in 0..8 {
        let xb = &x[32 * ib..32 * ib + 32];
        block_weights(xb, qw.map(|w| &w[32 * ib..32 * ib + 32]), s2, &mut weight);
        let Some(d) = block_scale(xb, &weight, &mut l[32 * ib..32 * ib + 32]) else {
            scales[ib] = 0.0;
            continue;
        };
        scales[ib] = d;
        if d.abs() > amax_scale {
            amax_scale = d.abs();
            max_scale = d;
        }
    }
    let d = -max_scale / 32.0;
    wr_f16(y, 0, d);
    let id = if d != 0.0 { 1.0 / d } else { 0.0 };
    let mut scales_h = 0u16;
    let mut scales_l = [0u8; 4];
    for ib in 0..8 {
        let ls = ni_mul(id, scales[ib]).clamp(-32, 31);
        let dl = d * ls as f32;
        let idl = if dl != 0.0 { 1.0 / dl } else { 0.0 };
        for j in 0..32 {
            l[32 * ib + j] = best_index(idl * x[32 * ib + j]);
        }
        let u = (ls + 32) as u8;
        scales_l[ib / 2] |= (u & 0xF) << (4 * (ib % 2));
        scales_h |= ((u >> 4) as u16) << (2 * ib);
    }
    y[2..4].copy_from_slice(&scales_h.to_le_bytes());
    y[4..8].copy_from_slice(&scales_l);
    pack(l, &mut y[8..XS_BYTES]);
}

#[cfg(test)]
mod tests {
    use super::*;

    /// ggml's bisection, as written in `best_index_int8`.
    fn bisect(x: f32) -> u8 {
        let v = |i: usize| KVALUES_IQ4NL[i] as f32;
        if x <= v(0) {
            return 0;
        }
        if x >= v(15) {
            return 15;
        }
        let (mut ml, mut mu) = (0usize, 15usize);
        while mu - ml > 1 {
            let mav = (ml + mu) / 2;
            if x < v(mav) {
                mu = mav;
            } else {
                ml = mav;
            }
        }
        if x - v(mu - 1) < v(mu) - x {
            (mu - 1) as u8
        } else {
            mu as u8
        }
    }

    /// The counting search picks what ggml's bisection picks, on the levels, on the
    /// midpoints between them (ties), around them, and for NaN and infinities.
    #[test]
    fn best_index_is_ggml_bisection() {
        let mut xs = vec![f32::NAN, f32::INFINITY, f32::NEG_INFINITY, 0.0, -0.0];
        for k in -600..600 {
            let x = k as f32 * 0.25;
            xs.extend([x, x.next_up(), x.next_down()]);
        }
        for x in xs {
            assert_eq!(best_index(x), bisect(x), "x = {x}");
        }
    }

    /// best_index agrees with a plain nearest-level search away from midpoints.
    #[test]
    fn best_index_is_nearest_level() {
        for i in -1300..1300 {
            let x = i as f32 * 0.1 + 0.013;
            let want = (0..16)
                .min_by(|&a, &b| {
                    let da = (x - KVALUES_IQ4NL[a] as f32).abs();
                    let db = (x - KVALUES_IQ4NL[b] as f32).abs();
                    da.partial_cmp(&db).unwrap()
                })
                .unwrap();
            assert_eq!(best_index(x) as usize, want, "x = {x}");
        }
    }
}
