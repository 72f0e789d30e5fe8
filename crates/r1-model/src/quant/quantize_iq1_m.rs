//! The IQ1_M writer: a port of ggml's `quantize_row_iq1_m_impl`. Unlike IQ1_S it runs without
//! an importance matrix (ggml's assert for one is commented out; the weights are then `x²`).
//!
//! IQ1_M's 16-value blocks take a shift of ±1/8 per half (8 values), so the split search keeps
//! the prefix sums per half and scores the four sign combinations of each split. Fusions there
//! (GCC 12, the same under Zen and Intel tuning):
//! - the prefix sum `px[h][j+1] = px[h][j] + w*x` (through memory, so GCC's Zen tuning does
//!   not treat it as a register chain): fused;
//! - `q2 = tws*v2*v2 + pw[i1]*c1 + pw[i2]*c2`: `fma(pw[i2], c2, fma(tws*v2, v2, pw[i1]*c1))`;
//! - `qx = txs*v2 - (px[i1] + px[i2])`: unfused (GCC hoists `txs*v2` out of the loop);
//! - the final super-block scale's sums `sumqx += w*q*x`, `sumq2 += w*q*q`: `w*q` rounded,
//!   then fused.
// The loops index as ggml's C does, so the two can be read side by side.
#![allow(clippy::needless_range_loop)]

use super::super::iq_grids::IQ1M_DELTA;
use super::super::quantize_ggml::FmaProfile;
use super::super::quantize_iq::{block_weights, sigma2_superblock};
use super::super::quantize_iq2_index::{iq2_index, Iq2Index};
use super::super::util::{wr_f16, QK_K};
use super::super::GgmlType;
use super::{level, max_abs, refit_group, snap_group, sort_block, split_levels};

/// Bytes of a super-block: qs[32], qh[16], scales[8] (4 u16 holding the 3-bit block scales
/// and, in their top nibbles, the f16 super-block scale).
const M_BYTES: usize = 56;
const QH: usize = 32;
const SCALES: usize = 48;

/// ggml's `GROUP_MAX_EPS_IQ1_M`: a block whose largest magnitude is below it is skipped.
const M_EPS: f32 = 1e-7;

/// Values per block (`IQ1M_BLOCK_SIZE`).
const N: usize = 16;

const X_P: [f32; 3] = [-1.0 + IQ1M_DELTA, IQ1M_DELTA, 1.0 + IQ1M_DELTA];
const X_M: [f32; 3] = [-1.0 - IQ1M_DELTA, -IQ1M_DELTA, 1.0 - IQ1M_DELTA];

/// The grid values of the half `k` (0 or 1) of a block with sign combination `shift`
/// (0: +,+  1: +,-  2: -,+  3: -,-).
#[inline(always)]
fn half_values(shift: usize, k: usize) -> &'static [f32; 3] {
    let plus = if k == 0 {
        shift < 2
    } else {
        shift.is_multiple_of(2)
    };
    if plus {
        &X_P
    } else {
        &X_M
    }
}

/// Quantize one whole row (whole super-blocks) as ggml does.
#[inline(always)]
pub(super) fn row(x: &[f32], out: &mut [u8], imatrix: Option<&[f32]>, p: FmaProfile) {
    let _ = p; // no site here that the tunings treat differently (module doc)
    let index = iq2_index(GgmlType::IQ1_M);
    for (i, (xbl, y)) in x
        .chunks_exact(QK_K)
        .zip(out.chunks_exact_mut(M_BYTES))
        .enumerate()
    {
        let qw = imatrix.map(|w| &w[i * QK_K..(i + 1) * QK_K]);
        superblock(xbl, y, qw, index);
    }
}

/// One super-block (`quantize_row_iq1_m_impl`'s body for one `ibl`).
#[inline(always)]
fn superblock(xbl: &[f32], y: &mut [u8], qw: Option<&[f32]>, index: &Iq2Index) {
    y.fill(0);
    let sigma2 = sigma2_superblock(xbl);
    let mut scales = [0f32; QK_K / N];
    let mut shifts = [0u8; QK_K / N];
    let mut max_scale = 0f32;
    let mut weight = [0f32; N];
    for ib in 0..QK_K / N {
        let xb = &xbl[N * ib..N * (ib + 1)];
        block_weights(xb, qw.map(|w| &w[N * ib..]), sigma2, &mut weight);
        if max_abs(xb) < M_EPS {
            continue;
        }
        let Some((scale, shift, grid)) = block(xb, &weight, index) else {
            continue;
        };
        y[2 * ib] = grid[0] as u8;
        y[2 * ib + 1] = grid[1] as u8;
        y[QH + ib] = ((grid[0] >> 8) | ((grid[1] >> 8) << 4)) as u8;
        scales[ib] = scale;
        shifts[ib] = shift;
        max_scale = if max_scale > scale { max_scale } else { scale };
    }
    if max_scale == 0.0 {
        return;
    }
    let mut sc = [0u16; 4];
    let mut d = max_scale / 15.0;
    let id = 1.0 / d;
    let (mut sumqx, mut sumq2) = (0f32, 0f32);
    for ib in 0..QK_K / N {
        let l = level(id, scales[ib]);
        sc[ib / 4] |= l << (3 * (ib % 4));
        const MASKS: [u8; 4] = [0x00, 0x80, 0x08, 0x88];
        y[QH + ib] |= MASKS[shifts[ib] as usize];
        let xb = &xbl[N * ib..N * (ib + 1)];
        block_weights(xb, qw.map(|w| &w[N * ib..]), sigma2, &mut weight);
        let odd = (2 * l + 1) as f32;
        for k in 0..2 {
            // ggml reads the row back from the bytes: blocks it skipped count as row 0
            let g = y[2 * ib + k] as usize + (((y[QH + ib] as usize) << (8 - 4 * k)) & 0x700);
            let xx = half_values(shifts[ib] as usize, k);
            let pg = index.row(g);
            for j in 0..8 {
                let w = weight[8 * k + j];
                let q = xx[((pg[j] - 1) / 2) as usize] * odd;
                sumqx = (w * q).mul_add(xb[8 * k + j], sumqx);
                sumq2 = (w * q).mul_add(q, sumq2);
            }
        }
    }
    if sumq2 > 0.0 {
        d = sumqx / sumq2;
    }
    // 1.1125: ggml's fudge factor
    let mut s = [0u8; 2];
    wr_f16(&mut s, 0, d * 1.1125);
    let s = u16::from_le_bytes(s);
    sc[0] |= (s & 0x000f) << 12;
    sc[1] |= (s & 0x00f0) << 8;
    sc[2] |= (s & 0x0f00) << 4;
    sc[3] |= s & 0xf000;
    for (i, v) in sc.iter().enumerate() {
        y[SCALES + 2 * i..SCALES + 2 * i + 2].copy_from_slice(&v.to_le_bytes());
    }
}

/// The split search and grid snap of one block: (scale, sign combination, grid rows), or
/// `None` where ggml finds no split.
#[inline(always)]
fn block(xb: &[f32], weight: &[f32; N], index: &Iq2Index) -> Option<(f32, u8, [u16; 2])> {
    let mut idx = [0u8; N];
    sort_block(xb, &mut idx);
    // prefix sums per half: each half has a sign of its own
    let mut px = [[0f32; N + 1]; 2];
    let mut pw = [[0f32; N + 1]; 2];
    for j in 0..N {
        let i = idx[j] as usize;
        let h = usize::from(i >= N / 2);
        px[h][j + 1] = weight[i].mul_add(xb[i], px[h][j]);
        px[1 - h][j + 1] = px[1 - h][j];
        pw[h][j + 1] = pw[h][j] + weight[i];
        pw[1 - h][j + 1] = pw[1 - h][j];
    }
    let txs = [px[0][N], px[1][N]];
    let tws = [pw[0][N], pw[1][N]];
    let (p2, m2) = (X_P[2], X_M[2]);
    // v[0]² - v[1]² and v[1]² - v[2]²: exact in f32
    let cp1 = X_P[0] * X_P[0] - X_P[1] * X_P[1];
    let cp2 = X_P[1] * X_P[1] - X_P[2] * X_P[2];
    let cm1 = X_M[0] * X_M[0] - X_M[1] * X_M[1];
    let cm2 = X_M[1] * X_M[1] - X_M[2] * X_M[2];
    let mut best_score = -f32::MAX;
    let mut scale = 0f32;
    let (mut besti1, mut besti2, mut best_k) = (usize::MAX, usize::MAX, usize::MAX);
    for i1 in 0..=N {
        for i2 in i1..=N {
            let mut qx_p = [0f32; 2];
            let mut qx_m = [0f32; 2];
            let mut q2_p = [0f32; 2];
            let mut q2_m = [0f32; 2];
            for h in 0..2 {
                let sx = px[h][i1] + px[h][i2];
                qx_p[h] = txs[h] * p2 - sx;
                qx_m[h] = txs[h] * m2 - sx;
                q2_p[h] = pw[h][i2].mul_add(cp2, (tws[h] * p2).mul_add(p2, pw[h][i1] * cp1));
                q2_m[h] = pw[h][i2].mul_add(cm2, (tws[h] * m2).mul_add(m2, pw[h][i1] * cm1));
            }
            let sumqx = [
                qx_p[0] + qx_p[1],
                qx_p[0] + qx_m[1],
                qx_m[0] + qx_p[1],
                qx_m[0] + qx_m[1],
            ];
            let sumq2 = [
                q2_p[0] + q2_p[1],
                q2_p[0] + q2_m[1],
                q2_m[0] + q2_p[1],
                q2_m[0] + q2_m[1],
            ];
            for k in 0..4 {
                if sumq2[k] > 0.0 && sumqx[k] * sumqx[k] > best_score * sumq2[k] {
                    scale = sumqx[k] / sumq2[k];
                    best_score = scale * sumqx[k];
                    (besti1, besti2, best_k) = (i1, i2, k);
                }
            }
        }
    }
    if besti1 == usize::MAX {
        return None;
    }
    let mut l = [0u8; N];
    split_levels(&idx, besti1, besti2, &mut l);
    if scale < 0.0 {
        for v in &mut l {
            *v = 2 - *v;
        }
        scale = -scale;
        best_k = 3 - best_k;
    }
    let mut grid = [0u16; 2];
    let mut all_on_grid = true;
    for k in 0..2 {
        let (g, on) = snap_group(index, xb, weight, k, scale, half_values(best_k, k), &mut l);
        grid[k] = g;
        all_on_grid &= on;
    }
    if !all_on_grid {
        let mut acc = (0f32, 0f32);
        for k in 0..2 {
            acc = refit_group(index, grid[k], xb, weight, k, half_values(best_k, k), acc);
        }
        if acc.0 > 0.0 && acc.1 > 0.0 {
            scale = acc.0 / acc.1;
        }
    }
    Some((scale, best_k as u8, grid))
}
