//! Writers for IQ1_S and IQ1_M: ports of ggml's `quantize_iq1_s` / `quantize_iq1_m`
//! (`quantize_row_iq1_s_impl` / `quantize_row_iq1_m_impl`, what `ggml_quantize_chunk` runs),
//! byte-identical to ggml's build.
//!
//! Each block (32 values for IQ1_S, 16 for IQ1_M) takes the levels {-1, 0, 1} plus a shift of
//! ±1/8. ggml sorts the block's values and tries every pair of boundaries that splits them into
//! the three levels, scoring each split from prefix sums; the best split's levels are then
//! snapped, 8 at a time, to the 2048-row grid (its nearest rows where the split is off the
//! grid, [`best_neighbour`]).
//!
//! Fused multiply-adds stand where GCC 12 fuses them in the peer's `-O3 -march=native` build
//! (`.FMA` in `-fdump-tree-optimized` of `quantize_iq1_s`, `quantize_iq1_m` and
//! `iq1_find_best_neighbour2`, compared under `-mtune=znver3` and `-mtune=sapphirerapids`):
//! - `sigma2 + x*x` inside the importance weight's `sqrtf`;
//! - the neighbour distance `d2 += w*diff*diff`, `diff = scale*q - x` fused, `w*diff` rounded;
//! - the refits `sumqx += w*q*x`, `sumq2 += w*q*q`: `w*q` rounded, then fused;
//! - every `nearest_int(0.5*(id*s - 1))`: `id*s - 1` fused, the halving exact.
//!
//! The split search of each type has sites of its own, some of which only Intel tuning fuses
//! ([`FmaProfile`]); they are listed where they are computed. The `sumx2` sum is vectorized
//! with an in-order reduction of rounded products: the same as the plain loop, unfused.
//!
//! ggml sorts with `qsort`, which glibc implements as a merge sort for arrays this small:
//! stable, so equal values keep their column order; [`sort_block`] is a stable sort too.
// The loops index as ggml's C does, so the two can be read side by side.
#![allow(clippy::needless_range_loop)]

#[path = "quantize_iq1_m.rs"]
mod iq1_m;

use super::iq_grids::IQ1S_DELTA;
use super::quantize_ggml::{ni, FmaProfile};
use super::quantize_iq::{block_weights, sigma2_superblock};
use super::quantize_iq2_index::{iq2_index, Iq2Index};
use super::util::{wr_f16, QK_K};
use super::{GgmlType, QuantError};

/// Bytes of an IQ1_S super-block: d (f16), qs[32], qh[8] (u16).
const S_BYTES: usize = 50;

/// ggml's `GROUP_MAX_EPS_IQ1_S`: a block whose largest magnitude is below it is skipped.
const S_EPS: f32 = 1e-12;

/// IQ1_S's values per block (`IQ1S_BLOCK_SIZE`).
const S_BLOCK: usize = 32;

/// The types of this family that [`row`] writes.
pub(super) fn supported(ty: GgmlType) -> bool {
    matches!(ty, GgmlType::IQ1_S | GgmlType::IQ1_M)
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
    match (ty, imatrix) {
        (GgmlType::IQ1_S, Some(qw)) => {
            let index = iq2_index(GgmlType::IQ1_S);
            for (i, (xbl, y)) in x
                .chunks_exact(QK_K)
                .zip(out.chunks_exact_mut(S_BYTES))
                .enumerate()
            {
                s_superblock(xbl, y, &qw[i * QK_K..(i + 1) * QK_K], index, p);
            }
            Ok(())
        }
        // ggml asserts "missing quantization weights"; the dispatcher reports it first
        (GgmlType::IQ1_S, None) => Err(QuantError::NeedsImatrix { ty }),
        (GgmlType::IQ1_M, _) => {
            iq1_m::row(x, out, imatrix, p);
            Ok(())
        }
        _ => Err(QuantError::Unsupported {
            ty,
            op: "quantize_weights",
        }),
    }
}

/// The largest magnitude of a block (ggml's `MAX(max, fabsf(x))` from the first value).
#[inline(always)]
fn max_abs(xb: &[f32]) -> f32 {
    let mut max = xb[0].abs();
    for &v in &xb[1..] {
        let a = v.abs();
        max = if max > a { max } else { a };
    }
    max
}

/// ggml's `nearest_int(0.5f*(id*s - 1))` clamped to 0..=7 (GCC fuses `id*s - 1`).
#[inline(always)]
fn level(id: f32, s: f32) -> u16 {
    ni(0.5 * id.mul_add(s, -1.0)).clamp(0, 7) as u16
}

/// The columns of `xb` in ascending order of value, equal values in column order (what
/// glibc's merge-sorting `qsort` gives ggml). An insertion sort: the blocks are 16 or 32.
#[inline(always)]
fn sort_block(xb: &[f32], idx: &mut [u8]) {
    for j in 0..idx.len() {
        let v = xb[j];
        let mut at = j;
        while at > 0 && xb[idx[at - 1] as usize] > v {
            idx[at] = idx[at - 1];
            at -= 1;
        }
        idx[at] = j as u8;
    }
}

/// The grid point of 8 levels (0..=2, 2 bits each, the first lowest).
#[inline(always)]
fn key(l: &[u8]) -> usize {
    let mut u = 0usize;
    for j in 0..8 {
        u |= (l[j] as usize) << (2 * j);
    }
    u
}

/// ggml's `iq1_find_best_neighbour2`: of the neighbour rows, the one nearest to `xval` in the
/// weighted distance at `scale`, with the values `xg` per level (the first of equals); writes
/// its levels to `l`, returns its row.
#[inline(always)]
fn best_neighbour(
    index: &Iq2Index,
    neighbours: &[u16],
    xval: &[f32],
    weight: &[f32],
    scale: f32,
    xg: &[f32; 3],
    l: &mut [u8],
) -> u16 {
    let mut best_d2 = f32::MAX;
    // ggml asserts a neighbour was found; only non-finite input can leave none
    let mut best = neighbours[0];
    for &n in neighbours {
        let pg = index.row(n as usize);
        let mut d2 = 0f32;
        for i in 0..8 {
            let q = xg[((pg[i] - 1) / 2) as usize];
            let diff = scale.mul_add(q, -xval[i]);
            d2 = (weight[i] * diff).mul_add(diff, d2);
        }
        if d2 < best_d2 {
            best_d2 = d2;
            best = n;
        }
    }
    let pg = index.row(best as usize);
    for i in 0..8 {
        l[i] = ((pg[i] - 1) / 2) as u8;
    }
    best
}

/// Snap the levels of 8-value group `k` to the grid: its row, and whether the levels were a
/// row themselves (else the best neighbour's levels replace them in `l`).
#[inline(always)]
#[allow(clippy::too_many_arguments)]
fn snap_group(
    index: &Iq2Index,
    xb: &[f32],
    weight: &[f32],
    k: usize,
    scale: f32,
    xg: &[f32; 3],
    l: &mut [u8],
) -> (u16, bool) {
    let r = 8 * k..8 * k + 8;
    match index.lookup(key(&l[r.clone()])) {
        Ok(g) => (g as u16, true),
        Err(near) => {
            let g = best_neighbour(
                index,
                near,
                &xb[r.clone()],
                &weight[r.clone()],
                scale,
                xg,
                &mut l[r],
            );
            (g, false)
        }
    }
}

/// Σ w·q·x and Σ w·q² of 8-value group `k` on grid row `g` with the values `xg` per level,
/// added to `acc` (`w*q` rounded, then fused with `x` and with `q`).
#[inline(always)]
fn refit_group(
    index: &Iq2Index,
    g: u16,
    xb: &[f32],
    weight: &[f32],
    k: usize,
    xg: &[f32; 3],
    acc: (f32, f32),
) -> (f32, f32) {
    let (mut sumqx, mut sumq2) = acc;
    let pg = index.row(g as usize);
    for j in 0..8 {
        let w = weight[8 * k + j];
        let q = xg[((pg[j] - 1) / 2) as usize];
        sumqx = (w * q).mul_add(xb[8 * k + j], sumqx);
        sumq2 = (w * q).mul_add(q, sumq2);
    }
    (sumqx, sumq2)
}

/// The levels of a sorted block from its best split: below `i1` level 0, up to `i2` level 1,
/// the rest level 2.
#[inline(always)]
fn split_levels(idx: &[u8], i1: usize, i2: usize, l: &mut [u8]) {
    for (j, &i) in idx.iter().enumerate() {
        l[i as usize] = if j < i1 {
            0
        } else if j < i2 {
            1
        } else {
            2
        };
    }
}

/// IQ1_S's per-block result: scale (0 where the block is skipped), shift ±1.
struct SBlock {
    scale: f32,
    shift: i8,
}

/// One IQ1_S super-block (`quantize_row_iq1_s_impl`'s body for one `ibl`).
#[inline(always)]
fn s_superblock(xbl: &[f32], y: &mut [u8], qw: &[f32], index: &Iq2Index, p: FmaProfile) {
    y.fill(0);
    let sigma2 = sigma2_superblock(xbl);
    let mut blocks = [const {
        SBlock {
            scale: 0.0,
            shift: 1,
        }
    }; QK_K / S_BLOCK];
    let mut max_scale = 0f32;
    for ib in 0..QK_K / S_BLOCK {
        let xb = &xbl[S_BLOCK * ib..S_BLOCK * (ib + 1)];
        let mut weight = [0f32; S_BLOCK];
        block_weights(xb, Some(&qw[S_BLOCK * ib..]), sigma2, &mut weight);
        if max_abs(xb) < S_EPS {
            continue;
        }
        let Some((scale, shift, grid)) = s_block(xb, &weight, index, p) else {
            continue;
        };
        let mut h = 0u16;
        for k in 0..4 {
            y[2 + 4 * ib + k] = grid[k] as u8;
            h |= (grid[k] >> 8) << (3 * k);
        }
        y[34 + 2 * ib..36 + 2 * ib].copy_from_slice(&h.to_le_bytes());
        blocks[ib] = SBlock { scale, shift };
        max_scale = if max_scale > scale { max_scale } else { scale };
    }
    if max_scale == 0.0 {
        return;
    }
    let d = max_scale / 15.0;
    // 1.125: ggml's fudge factor
    wr_f16(y, 0, d * 1.125);
    let id = 1.0 / d;
    for (ib, b) in blocks.iter().enumerate() {
        let mut l = level(id, b.scale);
        if b.shift == -1 {
            l |= 8;
        }
        let at = 34 + 2 * ib;
        let h = u16::from_le_bytes([y[at], y[at + 1]]) | (l << 12);
        y[at..at + 2].copy_from_slice(&h.to_le_bytes());
    }
}

/// The split search and grid snap of one IQ1_S block: (scale, shift, grid rows), or `None`
/// where ggml finds no split.
///
/// Fusions of the split scores (x_p = {-7/8, 1/8, 9/8}, x_m = {-9/8, -1/8, 7/8}; GCC writes
/// the middle term of x_m's `sumqx` as a subtraction of x_p's, which is exact):
/// - `sumqx`: the last term fused, `fma(Σ3, x[2], t1 + t2)`, for both shifts;
/// - `sumq2`: x_m's last term fused; x_p's only under Intel tuning ([`FmaProfile::chains`]);
/// - the prefix sum `sumx[j+1] = sumx[j] + w*x`, a loop-carried chain: fused only under
///   Intel tuning.
#[inline(always)]
fn s_block(
    xb: &[f32],
    weight: &[f32; S_BLOCK],
    index: &Iq2Index,
    p: FmaProfile,
) -> Option<(f32, i8, [u16; 4])> {
    const N: usize = S_BLOCK;
    let x_p = [-1.0 + IQ1S_DELTA, IQ1S_DELTA, 1.0 + IQ1S_DELTA];
    let x_m = [-1.0 - IQ1S_DELTA, -IQ1S_DELTA, 1.0 - IQ1S_DELTA];
    let mut idx = [0u8; N];
    sort_block(xb, &mut idx);
    let mut sumx = [0f32; N + 1];
    let mut sumw = [0f32; N + 1];
    for j in 0..N {
        let i = idx[j] as usize;
        sumx[j + 1] = if p.chains() {
            weight[i].mul_add(xb[i], sumx[j])
        } else {
            sumx[j] + weight[i] * xb[i]
        };
        sumw[j + 1] = sumw[j] + weight[i];
    }
    let mut best_score = -f32::MAX;
    let mut scale = 0f32;
    let (mut besti1, mut besti2, mut best_shift) = (usize::MAX, usize::MAX, 0i8);
    for i1 in 0..=N {
        let a1 = sumx[i1] - sumx[0];
        let w1 = sumw[i1] - sumw[0];
        let (t1p, t1m) = (a1 * x_p[0], a1 * x_m[0]);
        let (q1p, q1m) = (w1 * x_p[0] * x_p[0], w1 * x_m[0] * x_m[0]);
        for i2 in i1..=N {
            let a2 = sumx[i2] - sumx[i1];
            let a3 = sumx[N] - sumx[i2];
            let w2 = sumw[i2] - sumw[i1];
            let w3 = sumw[N] - sumw[i2];
            let t2 = a2 * x_p[1];
            let q2 = w2 * x_p[1] * x_p[1];
            let sumqx = a3.mul_add(x_p[2], t1p + t2);
            let sumq2 = if p.chains() {
                (w3 * x_p[2]).mul_add(x_p[2], q1p + q2)
            } else {
                (q1p + q2) + w3 * x_p[2] * x_p[2]
            };
            if sumq2 > 0.0 && sumqx * sumqx > best_score * sumq2 {
                scale = sumqx / sumq2;
                best_score = scale * sumqx;
                (besti1, besti2, best_shift) = (i1, i2, 1);
            }
            let sumqx = a3.mul_add(x_m[2], t1m - t2);
            let sumq2 = (w3 * x_m[2]).mul_add(x_m[2], q1m + q2);
            if sumq2 > 0.0 && sumqx * sumqx > best_score * sumq2 {
                scale = sumqx / sumq2;
                best_score = scale * sumqx;
                (besti1, besti2, best_shift) = (i1, i2, -1);
            }
        }
    }
    if besti1 == usize::MAX || best_shift == 0 {
        return None;
    }
    let mut l = [0u8; N];
    split_levels(&idx, besti1, besti2, &mut l);
    if scale < 0.0 {
        for v in &mut l {
            *v = 2 - *v;
        }
        scale = -scale;
        best_shift = -best_shift;
    }
    let xx = if best_shift == 1 { &x_p } else { &x_m };
    let mut grid = [0u16; 4];
    let mut all_on_grid = true;
    for k in 0..4 {
        let (g, on) = snap_group(index, xb, weight, k, scale, xx, &mut l);
        grid[k] = g;
        all_on_grid &= on;
    }
    if !all_on_grid {
        let mut acc = (0f32, 0f32);
        for k in 0..4 {
            acc = refit_group(index, grid[k], xb, weight, k, xx, acc);
        }
        if acc.0 > 0.0 && acc.1 > 0.0 {
            scale = acc.0 / acc.1;
        }
    }
    // ggml asserts scale >= 0 here; only non-finite input could fail it
    Some((scale, best_shift, grid))
}
