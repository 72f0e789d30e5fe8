//! IQ2_XXS: a port of ggml's `quantize_row_iq2_xxs_impl` (importance matrix required).
//!
//! A super-block of 256 values is 8 blocks of 32, each 4 groups of 8 magnitudes snapped to
//! one of 256 grid rows, with 7 sign bits per group and a 4-bit block scale under one f16
//! `d`. Layout (66 bytes): `d`, then per block two little-endian u32: the 4 grid rows (a byte
//! each), then 4×7 sign bits and the scale in the top 4 bits.
//!
//! Fused multiply-adds: see `quantize_iq2.rs`; the first scale comes from ggml's
//! `make_qp_quants(32, 4, ..)`, inlined here with its own fusions ([`qp_scale`]).
// The loops index as ggml's C does, so the two can be read side by side.
#![allow(clippy::needless_range_loop)]

use super::super::quantize_ggml_search::{sum_squares, GROUP_MAX_EPS};
use super::super::util::{wr_f16, QK_K};
use super::{
    best_neighbour, even_signs, fit, gmax, iq2_index, levels_of_row, ni, ni_mul, point,
    scale_nibble, snap, GgmlType,
};

/// Bytes of a super-block.
const BYTES: usize = 66;

/// ggml's `kMaxQ`: levels 0..kMaxQ-1 (coordinates 1, 3, 5).
const K_MAX_Q: i32 = 3;

/// Quantize a row (a whole number of 256-value super-blocks) with importances `qw`.
#[inline(always)]
pub(super) fn row(x: &[f32], out: &mut [u8], qw: &[f32]) {
    for ((xbl, y), qbl) in x
        .chunks_exact(QK_K)
        .zip(out.chunks_exact_mut(BYTES))
        .zip(qw.chunks_exact(QK_K))
    {
        super_block(xbl, y, qbl);
    }
}

#[inline(always)]
fn super_block(xbl: &[f32], y: &mut [u8], qbl: &[f32]) {
    let idx = iq2_index(GgmlType::IQ2_XXS);
    let mut q2 = [0u32; 16];
    let mut scales = [0f32; QK_K / 32];
    let mut weight = [0f32; 32];
    let mut waux = [0f32; 32];
    let mut xval = [0f32; 32];
    let mut l = [0i8; 32];
    let mut laux = [0i8; 32];
    let mut block_signs = [0u8; 4];
    let mut max_scale = 0f32;

    // sumx2/QK_K: the division by 256 is exact, as ggml's multiply by 1/256
    let sigma2 = sum_squares(xbl) / QK_K as f32;

    for ib in 0..QK_K / 32 {
        let xb = &xbl[32 * ib..32 * ib + 32];
        let qw = &qbl[32 * ib..32 * ib + 32];
        for i in 0..32 {
            weight[i] = qw[i] * xb[i].mul_add(xb[i], sigma2).sqrt();
        }
        for i in 0..32 {
            waux[i] = weight[i].sqrt();
        }
        for k in 0..4 {
            let r = 8 * k..8 * k + 8;
            block_signs[k] = even_signs(&xb[r.clone()], &weight[r.clone()], &mut xval[r]);
        }
        let mut max = xval[0];
        for i in 1..32 {
            max = gmax(max, xval[i]);
        }
        if max < GROUP_MAX_EPS {
            scales[ib] = 0.0;
            continue;
        }
        let mut scale = qp_scale(&xval, &weight);
        let eff_max = scale * K_MAX_Q as f32;
        if eff_max <= 0.0 {
            scales[ib] = 0.0;
            continue;
        }
        let mut best = 0f32;
        for is in -6..=6 {
            let id = (is as f32).mul_add(0.1, (2 * K_MAX_Q - 1) as f32) / eff_max;
            let this_scale = 1.0 / id;
            for k in 0..4 {
                let r = 8 * k..8 * k + 8;
                snap(
                    idx,
                    id,
                    this_scale,
                    &xval[r.clone()],
                    &waux[r.clone()],
                    &mut laux[r],
                );
            }
            let (sumqx, sumq2) = fit(&xval, &weight, &laux);
            if sumq2 > 0.0 && sumqx * sumqx > best * sumq2 {
                scale = sumqx / sumq2;
                best = scale * sumqx;
                l = laux;
            }
        }
        if scale > 0.0 {
            // refit every group at the chosen scale, snapped to the grid
            let id = 1.0 / scale;
            for k in 0..4 {
                let r = 8 * k..8 * k + 8;
                let mut lk = [0i8; 8];
                for i in 0..8 {
                    lk[i] = super::level(id, xval[8 * k + i]).clamp(0, K_MAX_Q - 1) as i8;
                }
                let row = match idx.lookup(point(&lk)) {
                    Ok(row) => row,
                    Err(near) => best_neighbour(
                        idx,
                        near,
                        &xval[r.clone()],
                        &waux[r.clone()],
                        scale,
                        &mut l[r.clone()],
                    ),
                };
                levels_of_row(idx, row, &mut l[r]);
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
                *s = !*s & 127;
            }
        }
        for k in 0..4 {
            // every group is on the grid by now (ggml aborts otherwise)
            let row = idx.lookup(point(&l[8 * k..])).unwrap_or(0) as u32;
            q2[2 * ib] |= row << (8 * k);
            q2[2 * ib + 1] |= (block_signs[k] as u32) << (7 * k);
        }
        scales[ib] = scale;
        max_scale = gmax(max_scale, scale);
    }

    if max_scale == 0.0 {
        y.fill(0);
        return;
    }
    let d = max_scale / 31.0;
    wr_f16(y, 0, d);
    let id = 1.0 / d;
    for ib in 0..QK_K / 32 {
        q2[2 * ib + 1] |= (scale_nibble(id, scales[ib]) as u32) << 28;
    }
    for (b, q) in y[2..].chunks_exact_mut(4).zip(&q2) {
        b.copy_from_slice(&q.to_le_bytes());
    }
}

/// The scale of ggml's `make_qp_quants(32, kMaxQ + 1, xval, L, weight)` as GCC inlines it into
/// `quantize_row_iq2_xxs_impl` (its levels are never read there: every later path rewrites
/// them). Differs from the 16-value copy in `quantize_ggml_search.rs` in its fusions: the
/// trial errors `mse += w*diff*diff` are vectorized (products rounded, summed in order), and a
/// negative `xval` (the flipped sign) wraps in ggml's `uint8_t` levels, which is kept.
#[inline(always)]
fn qp_scale(x: &[f32; 32], qw: &[f32; 32]) -> f32 {
    const NMAX: i32 = K_MAX_Q + 1;
    let mut max = 0f32;
    for &v in x {
        max = gmax(max, v);
    }
    if max < GROUP_MAX_EPS {
        return 0.0;
    }
    let nmaxf = NMAX as f32;
    let mut iscale = nmaxf / max;
    let mut l = [0u8; 32];
    for i in 0..32 {
        l[i] = ni_mul(iscale, x[i]) as u8;
    }
    let scale = 1.0 / iscale;
    let mut best_mse = 0f32;
    for i in 0..32 {
        let diff = (-scale).mul_add(l[i] as f32, x[i]);
        best_mse = diff.mul_add(diff * qw[i], best_mse);
    }
    for is in -4..=4 {
        if is == 0 {
            continue;
        }
        let iscale_is = (is as f32).mul_add(0.1, nmaxf) / max;
        let scale_is = 1.0 / iscale_is;
        let mut mse = 0f32;
        for i in 0..32 {
            let q = ni_mul(iscale_is, x[i]).min(NMAX);
            let diff = (-scale_is).mul_add(q as f32, x[i]);
            mse += diff * (diff * qw[i]);
        }
        if mse < best_mse {
            best_mse = mse;
            iscale = iscale_is;
        }
    }
    let (mut sumlx, mut suml2) = (0f32, 0f32);
    for i in 0..32 {
        let li = ni_mul(iscale, x[i]).min(NMAX);
        l[i] = li as u8;
        let lf = li as f32;
        sumlx = (x[i] * qw[i]).mul_add(lf, sumlx);
        suml2 = lf.mul_add(qw[i] * lf, suml2);
    }
    for _ in 0..5 {
        let mut changed = 0;
        for i in 0..32 {
            let w = qw[i];
            let wx = w * x[i];
            let lf = l[i] as f32;
            let mut slx = (-wx).mul_add(lf, sumlx);
            let mut sl2 = (-lf).mul_add(w * lf, suml2);
            if slx > 0.0 && sl2 > 0.0 {
                let new_l = ni(x[i] * sl2 / slx).min(NMAX);
                if new_l != l[i] as i32 {
                    let nf = new_l as f32;
                    slx = wx.mul_add(nf, slx);
                    sl2 = nf.mul_add(w * nf, sl2);
                    if slx * slx * suml2 > sumlx * sumlx * sl2 {
                        l[i] = new_l as u8;
                        sumlx = slx;
                        suml2 = sl2;
                        changed += 1;
                    }
                }
            }
        }
        if changed == 0 {
            break;
        }
    }
    if suml2 > 0.0 {
        sumlx / suml2
    } else {
        0.0
    }
}
