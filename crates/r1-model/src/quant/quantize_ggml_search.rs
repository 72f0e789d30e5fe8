//! The scale searches of ggml's K-quant and importance-matrix quantizers (`make_qx_quants`,
//! `make_qkx_quants`, `make_qp_quants`, ...), shared by the block packers in
//! `quantize_ggml_k.rs`. Fused multiply-adds stand where GCC fuses them in ggml's build (see
//! `quantize_ggml.rs`).
// The loops index as ggml's C does, so the two can be read side by side.
#![allow(clippy::needless_range_loop)]

use super::quantize_ggml::{ni, ni_mul, signed_absmax};

pub(super) const GROUP_MAX_EPS: f32 = 1e-15;

/// ggml's `make_qx_quants` with `rmse_type = 1`: weights `qw`, or `x²` without them.
/// Returns the scale; `l` gets `level + nmax`.
#[inline(always)]
pub(super) fn make_qx_quants(nmax: i32, x: &[f32], l: &mut [i8], qw: Option<&[f32]>) -> f32 {
    let (amax, max) = signed_absmax(x);
    if amax < GROUP_MAX_EPS {
        l.fill(0);
        return 0.0;
    }
    let nmaxf = nmax as f32;
    let level = |iscale: f32, v: f32| ni_mul(iscale, v).clamp(-nmax, nmax - 1);
    let weight = |i: usize| match qw {
        Some(w) => w[i],
        None => x[i] * x[i],
    };
    let mut iscale = -nmaxf / max;
    let (mut sumlx, mut suml2) = (0f32, 0f32);
    for i in 0..x.len() {
        let q = level(iscale, x[i]);
        l[i] = (q + nmax) as i8;
        let w = weight(i);
        let qf = q as f32;
        sumlx = (w * x[i]).mul_add(qf, sumlx);
        suml2 = (w * qf).mul_add(qf, suml2);
    }
    let mut scale = if suml2 != 0.0 { sumlx / suml2 } else { 0.0 };
    let mut best = scale * sumlx;
    for is in -9..=9 {
        if is == 0 {
            continue;
        }
        iscale = -(0.1f32.mul_add(is as f32, nmaxf)) / max;
        let (mut slx, mut sl2) = (0f32, 0f32);
        // GCC vectorizes this loop: products in vector lanes, then an in-order sum (no FMA)
        for i in 0..x.len() {
            let qf = level(iscale, x[i]) as f32;
            let w = weight(i);
            slx += w * x[i] * qf;
            sl2 += w * qf * qf;
        }
        if sl2 > 0.0 && slx * slx > best * sl2 {
            for i in 0..x.len() {
                l[i] = (level(iscale, x[i]) + nmax) as i8;
            }
            scale = slx / sl2;
            best = scale * slx;
        }
    }
    scale
}

/// ggml's `make_q3_quants` with `do_rmse`.
#[inline(always)]
pub(super) fn make_q3_quants(nmax: i32, x: &[f32], l: &mut [i8]) -> f32 {
    let (amax, max) = signed_absmax(x);
    if amax < GROUP_MAX_EPS {
        l.fill(0);
        return 0.0;
    }
    let iscale = -(nmax as f32) / max;
    let (mut sumlx, mut suml2) = (0f32, 0f32);
    for i in 0..x.len() {
        let q = ni_mul(iscale, x[i]).clamp(-nmax, nmax - 1);
        l[i] = q as i8;
        let w = x[i] * x[i];
        let qf = q as f32;
        sumlx = (w * x[i]).mul_add(qf, sumlx);
        suml2 = (w * qf).mul_add(qf, suml2);
    }
    for _ in 0..5 {
        let mut changed = 0;
        for i in 0..x.len() {
            let w = x[i] * x[i];
            let li = l[i] as f32;
            let wx = w * x[i];
            let mut slx = (-wx).mul_add(li, sumlx);
            if slx > 0.0 {
                let mut sl2 = (-(w * li)).mul_add(li, suml2);
                let new_l = ni(x[i] * sl2 / slx).clamp(-nmax, nmax - 1);
                if new_l != l[i] as i32 {
                    let nf = new_l as f32;
                    slx = wx.mul_add(nf, slx);
                    sl2 = (w * nf).mul_add(nf, sl2);
                    if sl2 > 0.0 && slx * slx * suml2 > sumlx * sumlx * sl2 {
                        l[i] = new_l as i8;
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
    for li in l.iter_mut() {
        *li += nmax as i8;
    }
    if suml2 > 0.0 {
        sumlx / suml2
    } else {
        0.0
    }
}

/// One candidate (scale, min) fit of `make_qkx2_quants`/`make_qkx3_quants`: the error of
/// levels `l` under `scale`, `min`.
#[inline(always)]
pub(super) fn fit_error(
    x: &[f32],
    w: &[f32],
    l: &[u8],
    scale: f32,
    min: f32,
    use_mad: bool,
) -> f32 {
    let mut e = 0f32;
    for i in 0..x.len() {
        let diff = scale.mul_add(l[i] as f32, min) - x[i];
        let diff = if use_mad { diff.abs() } else { diff * diff };
        e = w[i].mul_add(diff, e);
    }
    e
}

/// The first pass of `make_qkx_quants`: (min, max, Σw, Σw·x). `FUSE_SUM_X`: GCC fused
/// `sum_x += w*x` (see `quantize_ggml.rs`: always for 16 values, whose loop it unrolls; for
/// 32 only without Zen's `avoid_fma_chains` tuning, as the chain runs round the loop).
#[inline(always)]
fn qkx_stats<const FUSE_SUM_X: bool>(x: &[f32], w: &[f32]) -> (f32, f32, f32, f32) {
    let mut min = x[0];
    let mut max = x[0];
    let mut sum_w = w[0];
    let mut sum_x = sum_w * x[0];
    for i in 1..x.len() {
        if x[i] < min {
            min = x[i];
        }
        if x[i] > max {
            max = x[i];
        }
        sum_w += w[i];
        sum_x = if FUSE_SUM_X {
            w[i].mul_add(x[i], sum_x)
        } else {
            sum_x + w[i] * x[i]
        };
    }
    (min, max, sum_w, sum_x)
}

/// ggml's `make_qkx2_quants` (`first_min_clamp`: clamp min to 0 before the equal check, as
/// qkx2 does) and `make_qkx3_quants` (after it). Returns (scale, -min); `l` gets the levels.
/// `chains`: [`super::quantize_ggml::FmaProfile::chains`].
#[allow(clippy::too_many_arguments)]
#[inline(always)]
pub(super) fn make_qkx_quants(
    nmax: i32,
    x: &[f32],
    w: &[f32],
    l: &mut [u8],
    rmin: f32,
    rdelta: f32,
    nstep: i32,
    use_mad: bool,
    qkx3: bool,
    chains: bool,
) -> (f32, f32) {
    let n = x.len();
    let (mut min, max, sum_w, sum_x) = if n == 16 || chains {
        qkx_stats::<true>(x, w)
    } else {
        qkx_stats::<false>(x, w)
    };
    if min > 0.0 {
        min = 0.0;
    }
    if (!qkx3 && max == min) || (qkx3 && max <= min) {
        l.fill(0);
        return (0.0, -min);
    }
    let nmaxf = nmax as f32;
    let mut iscale = nmaxf / (max - min);
    let mut scale = 1.0 / iscale;
    for i in 0..n {
        l[i] = ni_mul(iscale, x[i] - min).clamp(0, nmax) as u8;
    }
    let mut best = fit_error(x, w, l, scale, min, use_mad);
    if nstep < 1 {
        return (scale, -min);
    }
    let mut laux = [0u8; 32];
    for is in 0..=nstep {
        iscale = (rdelta.mul_add(is as f32, rmin) + nmaxf) / (max - min);
        let (mut sum_l, mut sum_l2, mut sum_xl) = (0f32, 0f32, 0f32);
        for i in 0..n {
            let li = ni_mul(iscale, x[i] - min).clamp(0, nmax);
            laux[i] = li as u8;
            let lf = li as f32;
            let wl = w[i] * lf;
            sum_l += wl;
            sum_l2 = wl.mul_add(lf, sum_l2);
            sum_xl = wl.mul_add(x[i], sum_xl);
        }
        let d = sum_w.mul_add(sum_l2, -(sum_l * sum_l));
        if d > 0.0 {
            let mut this_scale = (-sum_l).mul_add(sum_x, sum_w * sum_xl) / d;
            let mut this_min = sum_l2.mul_add(sum_x, -(sum_l * sum_xl)) / d;
            if this_min > 0.0 {
                this_min = 0.0;
                this_scale = sum_xl / sum_l2;
            }
            let cur = fit_error(x, w, &laux[..n], this_scale, this_min, use_mad);
            if cur < best {
                l[..n].copy_from_slice(&laux[..n]);
                best = cur;
                scale = this_scale;
                min = this_min;
            }
        }
    }
    (scale, -min)
}

/// ggml's `make_qp_quants`: non-negative values to 0..=nmax under weights `qw`.
#[inline(always)]
pub(super) fn make_qp_quants(nmax: i32, x: &[f32], l: &mut [u8], qw: &[f32]) -> f32 {
    let n = x.len();
    let max = x.iter().fold(0f32, |m, &v| if m > v { m } else { v });
    if max < GROUP_MAX_EPS {
        l.fill(0);
        return 0.0;
    }
    let nmaxf = nmax as f32;
    let mut iscale = nmaxf / max;
    let mut li = [0i32; 16];
    for i in 0..n {
        li[i] = ni_mul(iscale, x[i]);
    }
    let scale = 1.0 / iscale;
    let mut best_mse = 0f32;
    for i in 0..n {
        let diff = (-scale).mul_add(li[i] as u8 as f32, x[i]);
        best_mse = (qw[i] * diff).mul_add(diff, best_mse);
    }
    for is in -4..=4 {
        if is == 0 {
            continue;
        }
        let iscale_is = 0.1f32.mul_add(is as f32, nmaxf) / max;
        let scale_is = 1.0 / iscale_is;
        let mut mse = 0f32;
        for i in 0..n {
            let q = ni_mul(iscale_is, x[i]).min(nmax);
            let diff = (-scale_is).mul_add(q as f32, x[i]);
            mse = (qw[i] * diff).mul_add(diff, mse);
        }
        if mse < best_mse {
            best_mse = mse;
            iscale = iscale_is;
        }
    }
    let (mut sumlx, mut suml2) = (0f32, 0f32);
    for i in 0..n {
        let q = ni_mul(iscale, x[i]).min(nmax);
        li[i] = q as u8 as i32;
        let (w, qf) = (qw[i], li[i] as f32);
        sumlx = (w * x[i]).mul_add(qf, sumlx);
        suml2 = (w * qf).mul_add(qf, suml2);
    }
    for _ in 0..5 {
        let mut changed = 0;
        for i in 0..n {
            let w = qw[i];
            let lf = li[i] as f32;
            let wx = w * x[i];
            let mut slx = (-wx).mul_add(lf, sumlx);
            let mut sl2 = (-(w * lf)).mul_add(lf, suml2);
            if slx > 0.0 && sl2 > 0.0 {
                let new_l = ni(x[i] * sl2 / slx).min(nmax);
                if new_l != li[i] {
                    let nf = new_l as f32;
                    slx = wx.mul_add(nf, slx);
                    sl2 = (w * nf).mul_add(nf, sl2);
                    if slx * slx * suml2 > sumlx * sumlx * sl2 {
                        li[i] = new_l as u8 as i32;
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
    for i in 0..n {
        l[i] = li[i] as u8;
    }
    if suml2 > 0.0 {
        sumlx / suml2
    } else {
        0.0
    }
}

/// Σ x², in order and not fused (GCC vectorizes the squares and sums the lanes in order).
pub(super) fn sum_squares(x: &[f32]) -> f32 {
    x.iter().fold(0f32, |s, &v| s + v * v)
}

/// `qw[i] * sqrt(sigma2 + x[i]²)`: the imatrix weights of the `_impl` quantizers.
#[inline(always)]
pub(super) fn imat_weights(x: &[f32], qw: &[f32], sigma2: f32, out: &mut [f32]) {
    for i in 0..x.len() {
        out[i] = qw[i] * x[i].mul_add(x[i], sigma2).sqrt();
    }
}

// ---- Q4_K / Q5_K ---------------------------------------------------------------------

/// Pack 6-bit scales and mins into the 12 bytes of a Q4_K/Q5_K block (at `y[4..16]`).
#[inline(always)]
pub(super) fn pack_k4_scales(sc: &mut [u8], ls: &[u8; 8], lm: &[u8; 8]) {
    sc.fill(0);
    for j in 0..8 {
        let (ls, lm) = (ls[j], lm[j]);
        if j < 4 {
            sc[j] = ls;
            sc[j + 4] = lm;
        } else {
            sc[j + 4] = (ls & 0xF) | ((lm & 0xF) << 4);
            sc[j - 4] |= (ls >> 4) << 6;
            sc[j] |= (lm >> 4) << 6;
        }
    }
}
