//! Writers for IQ3_XXS and IQ3_S: ports of ggml's `quantize_iq3_xxs` / `quantize_iq3_s`
//! (`quantize_row_iq3_xxs_impl(256, ..)` and `quantize_row_iq3_s_impl(32, ..)`, what
//! `ggml_quantize_chunk` runs), byte-identical to ggml's build.
//!
//! Both quantize each 32-block as eight groups of four magnitudes snapped to a grid
//! ([`index`]), trying a range of scales and keeping the best weighted fit; the signs are
//! stored apart (IQ3_XXS keeps seven per eight values, with an even number of negatives).
//!
//! Fused multiply-adds stand where GCC 12 fuses them in the peer's `-O3 -march=native` build
//! (`.FMA`/`.FMS` in `-fdump-tree-optimized`, the same under Zen and Intel tuning, so the
//! [`FmaProfile`] plays no part here):
//! - `sigma2 + x*x` inside the importance weight's `sqrtf`;
//! - the trial scales `15 + is*0.2`;
//! - every `nearest_int(0.5*(id*x - 1))`: `id*x - 1` fused, the halving exact;
//! - the fits `sumqx += w*x*q`, `sumq2 += w*q*q`: `w*x` and `w*q` rounded, then fused with `q`;
//! - the neighbour distance `d2 += w*diff*diff` with `diff = scale*q - x` fused, `w*diff`
//!   rounded.
//!
//! The `sumx2` sum is vectorized with an in-order reduction of rounded products: the same as
//! the plain loop, unfused.
//!
//! Checked both ways: `tests/quantize_iq34_vs_ggml.rs` passes against the peer built here
//! (AMD, `znver3` tuning) and against its `ggml-quants.c` rebuilt with `-mtune=sapphirerapids`
//! (`R1SERVE_PEER_CACHE` pointing there, `R1SERVE_QUANT_FMA=chains`).
// The loops index as ggml's C does, so the two can be read side by side.
#![allow(clippy::needless_range_loop)]

#[path = "quantize_iq3_index.rs"]
mod index;

use index::{iq3s_index, iq3xxs_index, key, Iq3Index};

use super::quantize_ggml::{ni, FmaProfile};
use super::quantize_iq::{block_weights, sigma2_superblock};
use super::util::{wr_f16, QK_K};
use super::{GgmlType, QuantError};

/// Bytes of a super-block: IQ3_XXS (d, 64 grid indices, 8 u32 of signs and scale) and IQ3_S
/// (d, qs[64], qh[8], signs[32], scales[4]).
const XXS_BYTES: usize = 98;
const S_BYTES: usize = 110;

/// ggml's `GROUP_MAX_EPS_IQ3_XXS`: IQ3_XXS skips a block whose largest magnitude is below it
/// (IQ3_S skips only an exactly zero one).
const XXS_EPS: f32 = 1e-8;

/// The types of this family that [`row`] writes.
pub(super) fn supported(ty: GgmlType) -> bool {
    matches!(ty, GgmlType::IQ3_XXS | GgmlType::IQ3_S)
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
    let (xxs, bytes) = match ty {
        GgmlType::IQ3_XXS => (true, XXS_BYTES),
        GgmlType::IQ3_S => (false, S_BYTES),
        _ => {
            return Err(QuantError::Unsupported {
                ty,
                op: "quantize_weights",
            })
        }
    };
    let v = Variant {
        xxs,
        index: if xxs { iq3xxs_index() } else { iq3s_index() },
    };
    for (i, (xbl, y)) in x
        .chunks_exact(QK_K)
        .zip(out.chunks_exact_mut(bytes))
        .enumerate()
    {
        let qw = imatrix.map(|w| &w[i * QK_K..(i + 1) * QK_K]);
        if xxs {
            xxs_superblock(xbl, y, qw, v);
        } else {
            s_superblock(xbl, y, qw, v);
        }
    }
    Ok(())
}

/// What differs between the two writers' block search.
#[derive(Clone, Copy)]
struct Variant {
    /// IQ3_XXS (else IQ3_S).
    xxs: bool,
    index: &'static Iq3Index,
}

/// One searched 32-block: its scale, the grid index of each group of four, the sign bytes.
struct Block {
    scale: f32,
    grid: [u16; 8],
    signs: [u8; 4],
}

/// ggml's `nearest_int(0.5f*(id*x - 1))` clamped to a level (GCC fuses `id*x - 1`).
#[inline(always)]
fn level(id: f32, x: f32) -> u8 {
    ni(0.5 * id.mul_add(x, -1.0)).clamp(0, 7) as u8
}

/// ggml's `iq3_find_best_neighbour`: the neighbour nearest to `xval/scale` in the weighted
/// distance (the first of equals); writes its levels to `l`, returns its grid index.
#[inline(always)]
fn best_neighbour(
    idx: &Iq3Index,
    u: usize,
    xval: &[f32],
    w: &[f32],
    scale: f32,
    l: &mut [u8],
) -> u16 {
    let nb = idx.neighbours(u);
    let mut best_d2 = f32::MAX;
    // ggml asserts a neighbour was found; only non-finite input can leave none
    let mut best = nb.first().copied().unwrap_or(0);
    for &j in nb {
        let q = &idx.values[j as usize];
        let mut d2 = 0f32;
        for i in 0..4 {
            let diff = scale.mul_add(q[i], -xval[i]);
            d2 = (w[i] * diff).mul_add(diff, d2);
        }
        if d2 < best_d2 {
            best_d2 = d2;
            best = j;
        }
    }
    l[..4].copy_from_slice(&idx.levels[best as usize]);
    best
}

/// Σ w·x·q and Σ w·q² with `q = 2l+1`.
#[inline(always)]
fn fit(weight: &[f32; 32], xval: &[f32; 32], l: &[u8; 32]) -> (f32, f32) {
    let (mut sumqx, mut sumq2) = (0f32, 0f32);
    for i in 0..32 {
        let w = weight[i];
        let q = (2 * l[i] + 1) as f32;
        sumqx = q.mul_add(w * xval[i], sumqx);
        sumq2 = q.mul_add(w * q, sumq2);
    }
    (sumqx, sumq2)
}

/// Snap group `k` of `xval·id` to the grid: (grid index, on the grid itself), levels to `l`.
#[inline(always)]
fn snap_group(
    idx: &Iq3Index,
    xval: &[f32; 32],
    waux: &[f32; 32],
    k: usize,
    id: f32,
    scale: f32,
    l: &mut [u8; 32],
) -> (u16, bool) {
    for i in 0..4 {
        l[4 * k + i] = level(id, xval[4 * k + i]);
    }
    let u = key(&l[4 * k..4 * k + 4]);
    match idx.grid_index(u) {
        Some(g) => (g, true),
        None => {
            let g = best_neighbour(
                idx,
                u,
                &xval[4 * k..],
                &waux[4 * k..],
                scale,
                &mut l[4 * k..4 * k + 4],
            );
            (g, false)
        }
    }
}

/// The block search shared by `quantize_row_iq3_xxs_impl` and `quantize_row_iq3_s_impl`;
/// `None` where ggml skips the block (all magnitudes zero, or below [`XXS_EPS`] for XXS).
#[inline(always)]
fn search_block(xb: &[f32], weight: &[f32; 32], v: Variant) -> Option<Block> {
    let idx = v.index;
    let mut waux = [0f32; 32];
    for i in 0..32 {
        waux[i] = weight[i].sqrt();
    }
    let mut xval = [0f32; 32];
    let mut signs = [0u8; 4];
    for k in 0..4 {
        let mut nflip = 0;
        let mut s = 0u8;
        for i in 0..8 {
            let x = xb[8 * k + i];
            if x >= 0.0 {
                xval[8 * k + i] = x;
            } else {
                xval[8 * k + i] = -x;
                nflip += 1;
                s |= 1 << i;
            }
        }
        if v.xxs && nflip % 2 == 1 {
            // IQ3_XXS stores 7 signs and implies the 8th from an even count: flip back the
            // least important value instead
            let sq = |i: usize| weight[8 * k + i] * xb[8 * k + i] * xb[8 * k + i];
            let (mut imin, mut min) = (0, sq(0));
            for i in 1..8 {
                let ax = sq(i);
                if ax < min {
                    min = ax;
                    imin = i;
                }
            }
            xval[8 * k + imin] = -xval[8 * k + imin];
            s ^= 1 << imin;
        }
        signs[k] = if v.xxs { s & 127 } else { s };
    }
    let mut max = xval[0];
    for i in 1..32 {
        max = if max > xval[i] { max } else { xval[i] };
    }
    let skip = if v.xxs { max < XXS_EPS } else { max == 0.0 };
    if skip {
        return None;
    }

    let ntry = if v.xxs { 15 } else { 9 };
    let mut l = [0u8; 32];
    let mut grid = [idx.grid_index(0).unwrap_or(0); 8];
    let mut on_grid = [v.xxs; 8];
    let mut laux = [0u8; 32];
    let mut grid_aux = [0u16; 8];
    let mut on_grid_aux = [false; 8];
    let mut best = 0f32;
    let mut scale = max / 15.0;
    for is in -ntry..=ntry {
        let id = (is as f32).mul_add(0.2, 15.0) / max;
        let this_scale = 1.0 / id;
        for k in 0..8 {
            (grid_aux[k], on_grid_aux[k]) =
                snap_group(idx, &xval, &waux, k, id, this_scale, &mut laux);
        }
        let (sumqx, sumq2) = fit(weight, &xval, &laux);
        if sumq2 > 0.0 && sumqx * sumqx > best * sumq2 {
            scale = sumqx / sumq2;
            best = scale * sumqx;
            l = laux;
            grid = grid_aux;
            on_grid = on_grid_aux;
        }
    }
    if on_grid.iter().any(|&g| !g) && scale > 0.0 {
        // re-snap with the fitted scale: IQ3_XXS only the groups that were off the grid,
        // IQ3_S every group (its `continue` is commented out in ggml)
        let id = 1.0 / scale;
        for k in 0..8 {
            if v.xxs && on_grid[k] {
                continue;
            }
            (grid[k], _) = snap_group(idx, &xval, &waux, k, id, scale, &mut l);
            l[4 * k..4 * k + 4].copy_from_slice(&idx.levels[grid[k] as usize]);
        }
        let (sumqx, sumq2) = fit(weight, &xval, &l);
        if sumq2 > 0.0 {
            scale = sumqx / sumq2;
        }
    }
    if scale < 0.0 {
        // ggml: "should never happen"; a positive scale with every sign flipped
        scale = -scale;
        for s in signs.iter_mut() {
            *s = if v.xxs { !*s & 127 } else { !*s };
        }
    }
    Some(Block { scale, grid, signs })
}

/// One IQ3_XXS super-block (layout: d @0, grid indices @2, 8 × u32 signs|scale<<28 @66).
#[inline(always)]
fn xxs_superblock(x: &[f32], y: &mut [u8], qw: Option<&[f32]>, v: Variant) {
    y.fill(0);
    let s2 = sigma2_superblock(x);
    let mut weight = [0f32; 32];
    let mut scales = [0f32; 8];
    let mut packed = [0u32; 8];
    let mut max_scale = 0f32;
    for ib in 0..8 {
        let xb = &x[32 * ib..32 * ib + 32];
        block_weights(xb, qw.map(|w| &w[32 * ib..32 * ib + 32]), s2, &mut weight);
        let Some(b) = search_block(xb, &weight, v) else {
            scales[ib] = 0.0;
            continue;
        };
        for k in 0..8 {
            y[2 + 8 * ib + k] = b.grid[k] as u8;
        }
        let s = b.signs.map(u32::from);
        packed[ib] = s[0] | (s[1] << 7) | (s[2] << 14) | (s[3] << 21);
        scales[ib] = b.scale;
        max_scale = if max_scale > b.scale {
            max_scale
        } else {
            b.scale
        };
    }
    if max_scale == 0.0 {
        y.fill(0);
        return;
    }
    let d = max_scale / 31.0;
    wr_f16(y, 0, d * 1.0125); // ggml's fudge factor
    let id = 1.0 / d;
    for ib in 0..8 {
        let l = ni(0.5 * id.mul_add(scales[ib], -1.0)).clamp(0, 15) as u32;
        packed[ib] |= l << 28;
        y[66 + 4 * ib..70 + 4 * ib].copy_from_slice(&packed[ib].to_le_bytes());
    }
}

/// One IQ3_S super-block (layout: d @0, qs[64] @2, qh[8] @66, signs[32] @74, scales[4] @106).
#[inline(always)]
fn s_superblock(x: &[f32], y: &mut [u8], qw: Option<&[f32]>, v: Variant) {
    y.fill(0);
    let s2 = sigma2_superblock(x);
    let mut weight = [0f32; 32];
    let mut scales = [0f32; 8];
    let mut max_scale = 0f32;
    // ggml's `qs`/`signs` write pointers: its `continue` for an all-zero block skips their
    // advance, so the blocks after it are written 8 (4) bytes early. Reproduced as is.
    let (mut qs, mut signs) = (2, 74);
    for ib in 0..8 {
        let xb = &x[32 * ib..32 * ib + 32];
        block_weights(xb, qw.map(|w| &w[32 * ib..32 * ib + 32]), s2, &mut weight);
        let Some(b) = search_block(xb, &weight, v) else {
            scales[ib] = 0.0;
            continue;
        };
        for k in 0..8 {
            y[qs + k] = b.grid[k] as u8;
            y[66 + ib] |= ((b.grid[k] >> 8) << k) as u8;
        }
        qs += 8;
        y[signs..signs + 4].copy_from_slice(&b.signs);
        signs += 4;
        scales[ib] = b.scale;
        max_scale = if max_scale > b.scale {
            max_scale
        } else {
            b.scale
        };
    }
    if max_scale == 0.0 {
        return;
    }
    let d = max_scale / 31.0;
    wr_f16(y, 0, d * 1.033); // ggml's fudge factor
    let id = 1.0 / d;
    for ib in (0..8).step_by(2) {
        let l1 = ni(0.5 * id.mul_add(scales[ib], -1.0)).clamp(0, 15) as u8;
        let l2 = ni(0.5 * id.mul_add(scales[ib + 1], -1.0)).clamp(0, 15) as u8;
        y[106 + ib / 2] = l1 | (l2 << 4);
    }
}
