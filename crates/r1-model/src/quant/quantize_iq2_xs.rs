//! IQ2_XS and IQ2_S: ports of ggml's `quantize_row_iq2_xs_impl` (importance matrix required)
//! and `quantize_row_iq2_s_impl` (with or without one), one algorithm with two layouts.
//!
//! A super-block of 256 values is 16 blocks of 16, each 2 groups of 8 magnitudes snapped to a
//! grid row (512 rows for IQ2_XS, 1024 for IQ2_S), with a 4-bit block scale under one f16 `d`.
//! Where the two differ (`S` below):
//! - signs: IQ2_XS keeps 7 bits per group with an even number of negatives (the 8th value
//!   flipped as in IQ2_XXS), IQ2_S all 8;
//! - weights: IQ2_S's `sigma2` is twice IQ2_XS's, and without an importance matrix it weighs
//!   values by `sigma2/4 + x²` (unfused in ggml's build: GCC vectorizes the squares);
//! - an all-small block: below 1e-15 for IQ2_XS (ggml's `GROUP_MAX_EPS`), 1e-8 for IQ2_S;
//! - IQ2_S stores `d·0.9875`;
//! - layout: IQ2_XS (74 bytes) `d`, 32 u16 of row | signs << 9, 8 scale bytes; IQ2_S (82
//!   bytes) `d`, 32 low row bytes, 32 sign bytes, 8 bytes of the rows' high 2 bits, 8 scale
//!   bytes.
//!
//! Fused multiply-adds: see `quantize_iq2.rs`.
// The loops index as ggml's C does, so the two can be read side by side.
#![allow(clippy::needless_range_loop)]

use super::super::quantize_ggml_search::{sum_squares, GROUP_MAX_EPS};
use super::super::util::{wr_f16, QK_K};
use super::{
    best_neighbour, even_signs, fit, gmax, iq2_index, level, point, scale_nibble, snap, GgmlType,
};

/// Bytes of a super-block.
const XS_BYTES: usize = 74;
const S_BYTES: usize = 82;

/// ggml's `GROUP_MAX_EPS_IQ2_S`.
const S_EPS: f32 = 1e-8;

/// ggml's `kMaxQ`: levels 0..kMaxQ-1 (coordinates 1, 3, 5).
const K_MAX_Q: i32 = 3;

/// Quantize a row (a whole number of 256-value super-blocks): IQ2_S where `S`, else IQ2_XS
/// (which the caller gives an importance matrix).
#[inline(always)]
pub(super) fn row<const S: bool>(x: &[f32], out: &mut [u8], qw: Option<&[f32]>) {
    let bytes = if S { S_BYTES } else { XS_BYTES };
    for (ibl, (xbl, y)) in x
        .chunks_exact(QK_K)
        .zip(out.chunks_exact_mut(bytes))
        .enumerate()
    {
        let qbl = qw.map(|w| &w[QK_K * ibl..QK_K * (ibl + 1)]);
        super_block::<S>(xbl, y, qbl);
    }
}

#[inline(always)]
fn super_block<const S: bool>(xbl: &[f32], y: &mut [u8], qbl: Option<&[f32]>) {
    let idx = iq2_index(if S { GgmlType::IQ2_S } else { GgmlType::IQ2_XS });
    let mut scales = [0f32; QK_K / 16];
    let mut weight = [0f32; 16];
    let mut waux = [0f32; 16];
    let mut xval = [0f32; 16];
    let mut l: [i8; 16];
    let mut laux = [0i8; 16];
    let mut block_signs = [0u8; 2];
    let mut on_grid: [bool; 2];
    let mut on_grid_aux = [true; 2];
    let mut max_scale = 0f32;
    // ggml clears the block first: a skipped 16-block leaves zeros
    y.fill(0);

    // ggml's sumx2/QK_K (IQ2_S 2*sumx2/QK_K): both exact rescalings of the sum
    let sumx2 = sum_squares(xbl);
    let sigma2 = if S { 2.0 * sumx2 } else { sumx2 } / QK_K as f32;

    for ib in 0..QK_K / 16 {
        let xb = &xbl[16 * ib..16 * ib + 16];
        match qbl {
            Some(qbl) => {
                let qw = &qbl[16 * ib..16 * ib + 16];
                for i in 0..16 {
                    weight[i] = qw[i] * xb[i].mul_add(xb[i], sigma2).sqrt();
                }
            }
            None => {
                for i in 0..16 {
                    weight[i] = 0.25 * sigma2 + xb[i] * xb[i];
                }
            }
        }
        for i in 0..16 {
            waux[i] = weight[i].sqrt();
        }
        for k in 0..2 {
            let r = 8 * k..8 * k + 8;
            block_signs[k] = if S {
                all_signs(&xb[r.clone()], &mut xval[r])
            } else {
                even_signs(&xb[r.clone()], &weight[r.clone()], &mut xval[r])
            };
        }
        let mut max = xval[0];
        for i in 1..16 {
            max = gmax(max, xval[i]);
        }
        l = [0; 16];
        if max < if S { S_EPS } else { GROUP_MAX_EPS } {
            scales[ib] = 0.0;
            continue;
        }
        let mut best = 0f32;
        let mut scale = max / (2 * K_MAX_Q - 1) as f32;
        on_grid = [true; 2];
        for is in -9..=9 {
            let id = (is as f32).mul_add(0.1, (2 * K_MAX_Q - 1) as f32) / max;
            let this_scale = 1.0 / id;
            for k in 0..2 {
                let r = 8 * k..8 * k + 8;
                let (_, on) = snap(
                    idx,
                    id,
                    this_scale,
                    &xval[r.clone()],
                    &waux[r.clone()],
                    &mut laux[r],
                );
                on_grid_aux[k] = on;
            }
            let (sumqx, sumq2) = fit(&xval, &weight, &laux);
            if sumq2 > 0.0 && sumqx * sumqx > best * sumq2 {
                scale = sumqx / sumq2;
                best = scale * sumqx;
                l = laux;
                on_grid = on_grid_aux;
            }
        }
        if on_grid.contains(&false) && scale > 0.0 {
            // refit the off-grid groups at the chosen scale
            let id = 1.0 / scale;
            for k in 0..2 {
                if on_grid[k] {
                    continue;
                }
                let r = 8 * k..8 * k + 8;
                for i in 0..8 {
                    l[8 * k + i] = level(id, xval[8 * k + i]).clamp(0, K_MAX_Q - 1) as i8;
                }
                if let Err(near) = idx.lookup(point(&l[r.clone()])) {
                    best_neighbour(
                        idx,
                        near,
                        &xval[r.clone()],
                        &waux[r.clone()],
                        scale,
                        &mut l[r],
                    );
                }
            }
            let (sumqx, sumq2) = fit(&xval, &weight, &l);
            if sumq2 > 0.0 {
                scale = sumqx / sumq2;
            }
        }
        if scale < 0.0 {
            // ggml: "should never happen": flip the scale positive and every sign with it
            scale = -scale;
            for s in &mut block_signs {
                *s = if S { !*s } else { !*s & 127 };
            }
        }
        for k in 0..2 {
            // every group is on the grid by now (ggml aborts otherwise)
            let row = idx.lookup(point(&l[8 * k..])).unwrap_or(0);
            let i8 = 2 * ib + k;
            if S {
                y[2 + i8] = row as u8;
                y[66 + i8 / 4] |= ((row >> 8) << (2 * (i8 % 4))) as u8;
                y[34 + i8] = block_signs[k];
            } else {
                let q = row as u16 | (block_signs[k] as u16) << 9;
                y[2 + 2 * i8..4 + 2 * i8].copy_from_slice(&q.to_le_bytes());
            }
        }
        scales[ib] = scale;
        max_scale = gmax(max_scale, scale);
    }

    if max_scale == 0.0 {
        // d and the scales stay 0; IQ2_XS clears its rows and signs, IQ2_S keeps them
        if !S {
            y[2..66].fill(0);
        }
        return;
    }
    let d = max_scale / 31.0;
    wr_f16(y, 0, if S { d * 0.9875 } else { d });
    let id = 1.0 / d;
    let sc = if S { &mut y[74..82] } else { &mut y[66..74] };
    for ib in 0..QK_K / 16 {
        sc[ib / 2] |= scale_nibble(id, scales[ib]) << (4 * (ib % 2));
    }
}

/// IQ2_S's signs of 8 values: magnitudes into `xval`, a bit per negative value.
#[inline(always)]
fn all_signs(xb: &[f32], xval: &mut [f32]) -> u8 {
    let mut s = 0u8;
    for i in 0..8 {
        if xb[i] >= 0.0 {
            xval[i] = xb[i];
        } else {
            xval[i] = -xb[i];
            s |= 1 << i;
        }
    }
    s
}
