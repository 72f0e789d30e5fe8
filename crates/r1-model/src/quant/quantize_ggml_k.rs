//! The K-quant weight quantizers of `quantize_ggml.rs` (ggml's `quantize_row_q*_K_ref`), and
//! every type's importance-matrix variant (`quantize_row_*_impl`). Fused multiply-adds stand
//! where GCC fuses them in ggml's build (see `quantize_ggml.rs`).
// The loops index as ggml's C does, so the two can be read side by side.
#![allow(clippy::needless_range_loop)]

use super::quantize_ggml::{f16_roundtrip, ni, ni_mul, FmaProfile};
use super::quantize_ggml_search::*;
use super::util::{rd_f16, scale_min_k4, scales_q3k, wr_f16, QK_K};

/// The end of Q4_K/Q5_K (both ways): levels from the stored scales (a sub-block whose scale
/// is 0 keeps the fit's levels, as in ggml), then the bit packing.
#[inline(always)]
fn q45_k_finish(x: &[f32], y: &mut [u8], l: &mut [u8; QK_K], nmax: i32) {
    let d_all = rd_f16(y, 0);
    let dmin_all = rd_f16(y, 2);
    for j in 0..8 {
        let (s, m) = scale_min_k4(j, &y[4..16]);
        let d = d_all * s as f32;
        if d == 0.0 {
            continue;
        }
        let dm = dmin_all * m as f32;
        for ii in 0..32 {
            l[32 * j + ii] = ni((x[32 * j + ii] + dm) / d).clamp(0, nmax) as u8;
        }
    }
    if nmax == 15 {
        for j in 0..4 {
            for i in 0..32 {
                y[16 + 32 * j + i] = l[64 * j + i] | (l[64 * j + i + 32] << 4);
            }
        }
    } else {
        let (qh, ql) = y[16..176].split_at_mut(32);
        qh.fill(0);
        for j in 0..4 {
            for i in 0..32 {
                let mut l1 = l[64 * j + i];
                let mut l2 = l[64 * j + i + 32];
                if l1 > 15 {
                    l1 -= 16;
                    qh[i] |= 1 << (2 * j);
                }
                if l2 > 15 {
                    l2 -= 16;
                    qh[i] |= 2 << (2 * j);
                }
                ql[32 * j + i] = l1 | (l2 << 4);
            }
        }
    }
}

/// Q4_K (nmax 15) and Q5_K (nmax 31), `quantize_row_q4_K_ref` / `q5_K_ref`.
#[inline(always)]
pub(super) fn q45_k_ref(x: &[f32], y: &mut [u8], nmax: i32, p: FmaProfile) {
    let mut l = [0u8; QK_K];
    let mut scales = [0f32; 8];
    let mut mins = [0f32; 8];
    let mut weights = [0f32; 32];
    let (mut max_scale, mut max_min) = (0f32, 0f32);
    let (rmin, nstep) = if nmax == 15 { (-1.0, 20) } else { (-0.5, 15) };
    for j in 0..8 {
        let xs = &x[32 * j..32 * j + 32];
        let av_x = (sum_squares(xs) / 32.0).sqrt();
        for (w, v) in weights.iter_mut().zip(xs) {
            *w = av_x + v.abs();
        }
        let lj = &mut l[32 * j..32 * j + 32];
        let (s, m) = make_qkx_quants(
            nmax,
            xs,
            &weights,
            lj,
            rmin,
            0.1,
            nstep,
            false,
            false,
            p.chains(),
        );
        scales[j] = s;
        mins[j] = m;
        if s > max_scale {
            max_scale = s;
        }
        if m > max_min {
            max_min = m;
        }
    }
    let inv_scale = if max_scale > 0.0 {
        63.0 / max_scale
    } else {
        0.0
    };
    let inv_min = if max_min > 0.0 { 63.0 / max_min } else { 0.0 };
    let mut ls = [0u8; 8];
    let mut lm = [0u8; 8];
    for j in 0..8 {
        ls[j] = (ni_mul(inv_scale, scales[j]) as u8).min(63);
        lm[j] = (ni_mul(inv_min, mins[j]) as u8).min(63);
    }
    pack_k4_scales(&mut y[4..16], &ls, &lm);
    f16_roundtrip(y, 0, max_scale / 63.0);
    f16_roundtrip(y, 2, max_min / 63.0);
    q45_k_finish(x, y, &mut l, nmax);
}

/// Q4_K / Q5_K with an importance matrix (`quantize_row_q4_K_impl` / `q5_K_impl`).
#[inline(always)]
pub(super) fn q45_k_imat(x: &[f32], y: &mut [u8], qw: &[f32], nmax: i32, p: FmaProfile) {
    let mut l = [0u8; QK_K];
    let mut scales = [0f32; 8];
    let mut mins = [0f32; 8];
    let mut sw = [0f32; 8];
    let mut weights = [0f32; 32];
    let sigma2 = 2.0 * sum_squares(x) / QK_K as f32;
    for j in 0..8 {
        let xs = &x[32 * j..32 * j + 32];
        imat_weights(xs, &qw[32 * j..32 * j + 32], sigma2, &mut weights);
        sw[j] = weights.iter().fold(0f32, |s, &w| s + w);
        let lj = &mut l[32 * j..32 * j + 32];
        let (s, m) = make_qkx_quants(
            nmax,
            xs,
            &weights,
            lj,
            -0.9,
            0.05,
            36,
            false,
            true,
            p.chains(),
        );
        scales[j] = s;
        mins[j] = m;
    }
    let mut ls = [0u8; 8];
    let mut lm = [0u8; 8];
    let d_block = make_qp_quants(63, &scales, &mut ls, &sw);
    let m_block = make_qp_quants(63, &mins, &mut lm, &sw);
    for j in 0..8 {
        ls[j] = ls[j].min(63);
        lm[j] = lm[j].min(63);
    }
    pack_k4_scales(&mut y[4..16], &ls, &lm);
    f16_roundtrip(y, 0, d_block);
    f16_roundtrip(y, 2, m_block);
    q45_k_finish(x, y, &mut l, nmax);
}

// ---- Q6_K ------------------------------------------------------------------------------

fn q6_k_block(x: &[f32], y: &mut [u8], qw: Option<&[f32]>) {
    let mut l = [0i8; QK_K];
    let mut scales = [0f32; 16];
    let (mut max_scale, mut max_abs_scale) = (0f32, 0f32);
    for ib in 0..16 {
        let r = 16 * ib..16 * ib + 16;
        let s = make_qx_quants(32, &x[r.clone()], &mut l[r.clone()], qw.map(|w| &w[r]));
        scales[ib] = s;
        if s.abs() > max_abs_scale {
            max_abs_scale = s.abs();
            max_scale = s;
        }
    }
    y.fill(0);
    if max_abs_scale < GROUP_MAX_EPS {
        return;
    }
    let iscale = -128.0 / max_scale;
    let d_all = f16_roundtrip(y, 208, 1.0 / iscale);
    for ib in 0..16 {
        y[192 + ib] = ni_mul(iscale, scales[ib]).min(127) as i8 as u8;
    }
    for j in 0..16 {
        let d = d_all * (y[192 + j] as i8) as f32;
        if d == 0.0 {
            continue;
        }
        for ii in 0..16 {
            let q = ni(x[16 * j + ii] / d).clamp(-32, 31);
            l[16 * j + ii] = (q + 32) as i8;
        }
    }
    let l = l.map(|v| v as u8);
    for h in 0..2 {
        let lb = &l[128 * h..128 * h + 128];
        for i in 0..32 {
            let (q1, q2, q3, q4) = (lb[i], lb[i + 32], lb[i + 64], lb[i + 96]);
            y[64 * h + i] = (q1 & 0xF) | ((q3 & 0xF) << 4);
            y[64 * h + i + 32] = (q2 & 0xF) | ((q4 & 0xF) << 4);
            y[128 + 32 * h + i] =
                (q1 >> 4) | ((q2 >> 4) << 2) | ((q3 >> 4) << 4) | ((q4 >> 4) << 6);
        }
    }
}

#[inline(always)]
pub(super) fn q6_k_ref(x: &[f32], y: &mut [u8]) {
    q6_k_block(x, y, None)
}

#[inline(always)]
pub(super) fn q6_k_imat(x: &[f32], y: &mut [u8], qw: &[f32]) {
    q6_k_block(x, y, Some(qw))
}

// ---- Q2_K ------------------------------------------------------------------------------

/// Levels from the stored Q2_K scales, then the packing (layout: scales[16] @0, qs[64] @16,
/// d @80, dmin @82).
#[inline(always)]
fn q2_k_finish(x: &[f32], y: &mut [u8], l: &mut [u8; QK_K]) {
    let (d_all, dmin_all) = (rd_f16(y, 80), rd_f16(y, 82));
    for j in 0..16 {
        let d = d_all * (y[j] & 0xF) as f32;
        if d == 0.0 {
            continue;
        }
        let dm = dmin_all * (y[j] >> 4) as f32;
        for ii in 0..16 {
            l[16 * j + ii] = ni((x[16 * j + ii] + dm) / d).clamp(0, 3) as u8;
        }
    }
    for h in 0..2 {
        for i in 0..32 {
            let b = 128 * h + i;
            y[16 + 32 * h + i] = l[b] | (l[b + 32] << 2) | (l[b + 64] << 4) | (l[b + 96] << 6);
        }
    }
}

#[inline(always)]
pub(super) fn q2_k_ref(x: &[f32], y: &mut [u8], p: FmaProfile) {
    let mut l = [0u8; QK_K];
    let mut weights = [0f32; 16];
    let mut scales = [0f32; 16];
    let mut mins = [0f32; 16];
    let (mut max_scale, mut max_min) = (0f32, 0f32);
    for j in 0..16 {
        let xs = &x[16 * j..16 * j + 16];
        for (w, v) in weights.iter_mut().zip(xs) {
            *w = v.abs();
        }
        let ls = &mut l[16 * j..16 * j + 16];
        let (s, m) = make_qkx_quants(3, xs, &weights, ls, -0.5, 0.1, 15, true, false, p.chains());
        scales[j] = s;
        mins[j] = m;
        if s > max_scale {
            max_scale = s;
        }
        if m > max_min {
            max_min = m;
        }
    }
    y.fill(0);
    if max_scale > 0.0 {
        let iscale = 15.0 / max_scale;
        for j in 0..16 {
            y[j] = ni_mul(iscale, scales[j]) as u8;
        }
        wr_f16(y, 80, max_scale / 15.0);
    }
    if max_min > 0.0 {
        let iscale = 15.0 / max_min;
        for j in 0..16 {
            y[j] |= (ni_mul(iscale, mins[j]) as u8) << 4;
        }
        wr_f16(y, 82, max_min / 15.0);
    }
    q2_k_finish(x, y, &mut l);
}

#[inline(always)]
pub(super) fn q2_k_imat(x: &[f32], y: &mut [u8], qw: &[f32], p: FmaProfile) {
    let mut l = [0u8; QK_K];
    let mut weight = [0f32; 16];
    let mut scales = [0f32; 16];
    let mut mins = [0f32; 16];
    let mut sw = [0f32; 16];
    let sigma2 = sum_squares(x) / QK_K as f32;
    for j in 0..16 {
        let xs = &x[16 * j..16 * j + 16];
        imat_weights(xs, &qw[16 * j..16 * j + 16], sigma2, &mut weight);
        sw[j] = weight.iter().fold(0f32, |s, &w| s + w);
        let ls = &mut l[16 * j..16 * j + 16];
        let (s, m) = make_qkx_quants(3, xs, &weight, ls, -0.9, 0.05, 36, false, true, p.chains());
        scales[j] = s;
        mins[j] = m;
    }
    let mut ls = [0u8; 16];
    let mut lm = [0u8; 16];
    let dm = make_qp_quants(15, &scales, &mut ls, &sw);
    let mm = make_qp_quants(15, &mins, &mut lm, &sw);
    y.fill(0);
    wr_f16(y, 80, dm);
    wr_f16(y, 82, mm);
    for j in 0..16 {
        y[j] = ls[j] | (lm[j] << 4);
    }
    q2_k_finish(x, y, &mut l);
}

// ---- Q3_K ------------------------------------------------------------------------------

/// Scales (6-bit, offset 32, already in `lv`) into the 12 scale bytes at `y[96..108]`, then
/// levels from them (a sub-block whose scale is 0 keeps the fit's levels `l`, as in ggml)
/// and the packing (layout: hmask[32] @0, qs[64] @32, scales @96, d @108).
#[inline(always)]
fn q3_k_finish(x: &[f32], y: &mut [u8], l: &mut [u8; QK_K], lv: Option<&[u8; 16]>, d: f32) {
    {
        let sc = &mut y[96..108];
        sc.fill(0);
        for (j, &v) in lv.iter().flat_map(|a| a.iter()).enumerate() {
            if j < 8 {
                sc[j] = v & 0xF;
            } else {
                sc[j - 8] |= (v & 0xF) << 4;
            }
            sc[8 + j % 4] |= (v >> 4) << (2 * (j / 4));
        }
    }
    let d_all = f16_roundtrip(y, 108, d);
    let sc = scales_q3k(&y[96..108]);
    for j in 0..16 {
        let d = d_all * sc[j] as f32;
        if d == 0.0 {
            continue;
        }
        for ii in 0..16 {
            l[16 * j + ii] = (ni(x[16 * j + ii] / d).clamp(-4, 3) + 4) as u8;
        }
    }
    y[..96].fill(0);
    for j in 0..QK_K {
        if l[j] > 3 {
            y[j % 32] |= 1 << (j / 32);
            l[j] -= 4;
        }
    }
    for h in 0..2 {
        for i in 0..32 {
            let b = 128 * h + i;
            y[32 + 32 * h + i] = l[b] | (l[b + 32] << 2) | (l[b + 64] << 4) | (l[b + 96] << 6);
        }
    }
}

#[inline(always)]
pub(super) fn q3_k_ref(x: &[f32], y: &mut [u8]) {
    let mut l = [0i8; QK_K];
    let mut scales = [0f32; 16];
    let (mut max_scale, mut amax) = (0f32, 0f32);
    for j in 0..16 {
        let r = 16 * j..16 * j + 16;
        let s = make_q3_quants(4, &x[r.clone()], &mut l[r]);
        scales[j] = s;
        if s.abs() > amax {
            amax = s.abs();
            max_scale = s;
        }
    }
    let mut l = l.map(|v| v as u8);
    if max_scale != 0.0 {
        let iscale = -32.0 / max_scale;
        let mut lv = [0u8; 16];
        for j in 0..16 {
            lv[j] = ((ni_mul(iscale, scales[j]) as i8).clamp(-32, 31) + 32) as u8;
        }
        q3_k_finish(x, y, &mut l, Some(&lv), 1.0 / iscale);
    } else {
        q3_k_finish(x, y, &mut l, None, 0.0);
    }
}

#[inline(always)]
pub(super) fn q3_k_imat(x: &[f32], y: &mut [u8], qw: &[f32]) {
    let mut l = [0i8; QK_K];
    let mut scales = [0f32; 16];
    let mut sw = [0f32; 16];
    let mut weight = [0f32; 16];
    let sigma2 = 2.0 * sum_squares(x) / QK_K as f32;
    for j in 0..16 {
        let r = 16 * j..16 * j + 16;
        imat_weights(&x[r.clone()], &qw[r.clone()], sigma2, &mut weight);
        sw[j] = weight.iter().fold(0f32, |s, &w| s + w);
        scales[j] = make_qx_quants(4, &x[r.clone()], &mut l[r], Some(&weight));
    }
    let mut ls = [0i8; 16];
    let d_block = make_qx_quants(32, &scales, &mut ls, Some(&sw));
    let lv = ls.map(|v| v as u8);
    let mut l = l.map(|v| v as u8);
    q3_k_finish(x, y, &mut l, Some(&lv), d_block);
}

// ---- 32-element types with an importance matrix (whole rows: sigma² is per row) ---------

fn row_sigma2(x: &[f32]) -> f32 {
    sum_squares(x) / x.len() as f32
}

/// Q4_0 / Q5_0 with an importance matrix, one row.
#[inline(always)]
fn qx_0_imat_row(x: &[f32], y: &mut [u8], qw: &[f32], five: bool) {
    let sigma2 = row_sigma2(x);
    let ts = if five { 22 } else { 18 };
    let mut weight = [0f32; 32];
    let mut l = [0i8; 32];
    for ((xb, yb), wb) in x
        .chunks_exact(32)
        .zip(y.chunks_exact_mut(ts))
        .zip(qw.chunks_exact(32))
    {
        imat_weights(xb, wb, sigma2, &mut weight);
        let d = make_qx_quants(if five { 16 } else { 8 }, xb, &mut l, Some(&weight));
        wr_f16(yb, 0, d);
        if five {
            let mut qh = 0u32;
            for j in 0..16 {
                let (a, b) = (l[j] as u8, l[j + 16] as u8);
                yb[6 + j] = (a & 0xF) | ((b & 0xF) << 4);
                qh |= ((a as u32 & 0x10) >> 4) << j;
                qh |= ((b as u32 & 0x10) >> 4) << (j + 16);
            }
            yb[2..6].copy_from_slice(&qh.to_le_bytes());
        } else {
            for j in 0..16 {
                yb[2 + j] = l[j] as u8 | ((l[j + 16] as u8) << 4);
            }
        }
    }
}

/// Q4_1 / Q5_1 with an importance matrix, one row.
#[inline(always)]
fn qx_1_imat_row(x: &[f32], y: &mut [u8], qw: &[f32], five: bool, p: FmaProfile) {
    let sigma2 = row_sigma2(x);
    let ts = if five { 24 } else { 20 };
    let mut weight = [0f32; 32];
    let mut l = [0u8; 32];
    for ((xb, yb), wb) in x
        .chunks_exact(32)
        .zip(y.chunks_exact_mut(ts))
        .zip(qw.chunks_exact(32))
    {
        imat_weights(xb, wb, sigma2, &mut weight);
        let nmax = if five { 31 } else { 15 };
        let (d, m) = make_qkx_quants(
            nmax,
            xb,
            &weight,
            &mut l,
            -0.9,
            0.05,
            36,
            false,
            true,
            p.chains(),
        );
        wr_f16(yb, 0, d);
        wr_f16(yb, 2, -m);
        if five {
            let mut qh = 0u32;
            for j in 0..16 {
                let (a, b) = (l[j], l[j + 16]);
                yb[8 + j] = (a & 0xF) | ((b & 0xF) << 4);
                qh |= ((a as u32 & 0x10) >> 4) << j;
                qh |= ((b as u32 & 0x10) >> 4) << (j + 16);
            }
            yb[4..8].copy_from_slice(&qh.to_le_bytes());
        } else {
            for j in 0..16 {
                yb[4 + j] = l[j] | (l[j + 16] << 4);
            }
        }
    }
}

pub(super) fn q4_0_imat_row(x: &[f32], y: &mut [u8], qw: &[f32]) {
    qx_0_imat_row(x, y, qw, false)
}
pub(super) fn q5_0_imat_row(x: &[f32], y: &mut [u8], qw: &[f32]) {
    qx_0_imat_row(x, y, qw, true)
}
pub(super) fn q4_1_imat_row(x: &[f32], y: &mut [u8], qw: &[f32], p: FmaProfile) {
    qx_1_imat_row(x, y, qw, false, p)
}
pub(super) fn q5_1_imat_row(x: &[f32], y: &mut [u8], qw: &[f32], p: FmaProfile) {
    qx_1_imat_row(x, y, qw, true, p)
}
