//! f32 → GGML block quantizers: ggml's reference (`quantize_row_*_ref`, no importance
//! matrix) algorithms for the weight types, and dispatch to the activation quantizers.
//! Lengths are checked by the caller.

use super::q8;
use super::util::*;
use super::{GgmlType, Isa, QuantError};

#[cfg(target_arch = "x86_64")]
type QuantizeFn = unsafe fn(&[f32], &mut [u8]);

pub(crate) fn quantize(
    isa: Isa,
    ty: GgmlType,
    x: &[f32],
    out: &mut [u8],
) -> Result<(), QuantError> {
    use GgmlType::*;
    #[cfg(target_arch = "x86_64")]
    if isa != Isa::Scalar {
        use super::x86_q8::*;
        // SAFETY: the caller checked that `isa` (at least AVX2) is available, and the lengths.
        let f: Option<QuantizeFn> = match ty {
            Q8_0 => Some(quantize_q8_0_avx2),
            Q8_1 => Some(quantize_q8_1_avx2),
            Q8_K => Some(quantize_q8_k_avx2),
            _ => None,
        };
        if let Some(f) = f {
            unsafe { f(x, out) };
            return Ok(());
        }
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = isa;
    let bs = ty.block_size();
    let ts = ty.type_size();
    let blocks = x.chunks_exact(bs).zip(out.chunks_exact_mut(ts));
    match ty {
        F32 => q8::convert_f32(x, out),
        F16 => q8::convert_f16(x, out),
        BF16 => q8::convert_bf16(x, out),
        Q8_0 => q8::quantize_q8_0(x, out),
        Q8_1 => q8::quantize_q8_1(x, out),
        Q8_K => q8::quantize_q8_k(x, out),
        Q4_0 => blocks.for_each(|(x, y)| q4_0(x, y)),
        Q4_1 => blocks.for_each(|(x, y)| q4_1(x, y)),
        Q5_0 => blocks.for_each(|(x, y)| q5_0(x, y)),
        Q5_1 => blocks.for_each(|(x, y)| q5_1(x, y)),
        Q2_K => blocks.for_each(|(x, y)| q2_k(x, y)),
        Q3_K => blocks.for_each(|(x, y)| q3_k(x, y)),
        Q4_K => blocks.for_each(|(x, y)| q45_k(x, y, 15)),
        Q5_K => blocks.for_each(|(x, y)| q45_k(x, y, 31)),
        Q6_K => blocks.for_each(|(x, y)| q6_k(x, y)),
        // i-quants need ggml's grid search (and usually an importance matrix); weights of
        // these types only come from GGUF files
        IQ2_XXS | IQ2_XS | IQ2_S | IQ3_XXS | IQ3_S | IQ1_S | IQ1_M | IQ4_NL | IQ4_XS | I8 | I16
        | I32 | I64 | F64 => {
            return Err(QuantError::Unsupported {
                ty,
                op: "quantize_row",
            })
        }
    }
    Ok(())
}

/// (max |x| keeping its sign)
fn signed_absmax(x: &[f32]) -> (f32, f32) {
    let mut amax = 0f32;
    let mut max = 0f32;
    for &v in x {
        if amax < v.abs() {
            amax = v.abs();
            max = v;
        }
    }
    (amax, max)
}

fn min_max(x: &[f32]) -> (f32, f32) {
    let mut min = f32::MAX;
    let mut max = -f32::MAX;
    for &v in x {
        if v < min {
            min = v;
        }
        if v > max {
            max = v;
        }
    }
    (min, max)
}

fn q4_0(x: &[f32], y: &mut [u8]) {
    let (_, max) = signed_absmax(x);
    let d = max / -8.0;
    let id = if d != 0.0 { 1.0 / d } else { 0.0 };
    wr_f16(y, 0, d);
    for j in 0..16 {
        let a = ((x[j] * id + 8.5) as i8).min(15) as u8;
        let b = ((x[j + 16] * id + 8.5) as i8).min(15) as u8;
        y[2 + j] = a | (b << 4);
    }
}

fn q4_1(x: &[f32], y: &mut [u8]) {
    let (min, max) = min_max(x);
    let d = (max - min) / 15.0;
    let id = if d != 0.0 { 1.0 / d } else { 0.0 };
    wr_f16(y, 0, d);
    wr_f16(y, 2, min);
    for j in 0..16 {
        let a = (((x[j] - min) * id + 0.5) as i8).min(15) as u8;
        let b = (((x[j + 16] - min) * id + 0.5) as i8).min(15) as u8;
        y[4 + j] = a | (b << 4);
    }
}

fn q5_0(x: &[f32], y: &mut [u8]) {
    let (_, max) = signed_absmax(x);
    let d = max / -16.0;
    let id = if d != 0.0 { 1.0 / d } else { 0.0 };
    wr_f16(y, 0, d);
    let mut qh = 0u32;
    for j in 0..16 {
        let a = ((x[j] * id + 16.5) as i8).min(31) as u8;
        let b = ((x[j + 16] * id + 16.5) as i8).min(31) as u8;
        y[6 + j] = (a & 0xF) | ((b & 0xF) << 4);
        qh |= ((a as u32 & 0x10) >> 4) << j;
        qh |= ((b as u32 & 0x10) >> 4) << (j + 16);
    }
    y[2..6].copy_from_slice(&qh.to_le_bytes());
}

fn q5_1(x: &[f32], y: &mut [u8]) {
    let (min, max) = min_max(x);
    let d = (max - min) / 31.0;
    let id = if d != 0.0 { 1.0 / d } else { 0.0 };
    wr_f16(y, 0, d);
    wr_f16(y, 2, min);
    let mut qh = 0u32;
    for j in 0..16 {
        let a = ((x[j] - min) * id + 0.5) as u8;
        let b = ((x[j + 16] - min) * id + 0.5) as u8;
        y[8 + j] = (a & 0xF) | ((b & 0xF) << 4);
        qh |= ((a as u32 & 0x10) >> 4) << j;
        qh |= ((b as u32 & 0x10) >> 4) << (j + 16);
    }
    y[4..8].copy_from_slice(&qh.to_le_bytes());
}

/// ggml's `make_qkx2_quants`: an asymmetric (scale, min) fit of `x` to 0..=nmax by a small
/// grid search on the scale. Returns (scale, -min); `l` gets the levels.
#[allow(clippy::too_many_arguments)]
fn make_qkx2_quants(
    nmax: i32,
    x: &[f32],
    weights: &[f32],
    l: &mut [u8],
    rmin: f32,
    rdelta: f32,
    nstep: i32,
    use_mad: bool,
) -> (f32, f32) {
    let n = x.len();
    let mut min = x[0];
    let mut max = x[0];
    let mut sum_w = weights[0];
    let mut sum_x = sum_w * x[0];
    for i in 1..n {
        min = min.min(x[i]);
        max = max.max(x[i]);
        let w = weights[i];
        sum_w += w;
        sum_x += w * x[i];
    }
    if min > 0.0 {
        min = 0.0;
    }
    if max == min {
        l.fill(0);
        return (0.0, -min);
    }
    let err = |d: f32| if use_mad { d.abs() } else { d * d };
    let mut iscale = nmax as f32 / (max - min);
    let mut scale = 1.0 / iscale;
    let mut best_error = 0f32;
    for i in 0..n {
        let li = nearest_int(iscale * (x[i] - min)).clamp(0, nmax);
        l[i] = li as u8;
        best_error += weights[i] * err(scale * li as f32 + min - x[i]);
    }
    let mut laux = [0u8; 32];
    for is in 0..=nstep {
        iscale = (rmin + rdelta * is as f32 + nmax as f32) / (max - min);
        let (mut sum_l, mut sum_l2, mut sum_xl) = (0f32, 0f32, 0f32);
        for i in 0..n {
            let li = nearest_int(iscale * (x[i] - min)).clamp(0, nmax);
            laux[i] = li as u8;
            let w = weights[i];
            let lf = li as f32;
            sum_l += w * lf;
            sum_l2 += w * lf * lf;
            sum_xl += w * lf * x[i];
        }
        let det = sum_w * sum_l2 - sum_l * sum_l;
        if det > 0.0 {
            let mut this_scale = (sum_w * sum_xl - sum_x * sum_l) / det;
            let mut this_min = (sum_l2 * sum_x - sum_l * sum_xl) / det;
            if this_min > 0.0 {
                this_min = 0.0;
                this_scale = sum_xl / sum_l2;
            }
            let mut cur_error = 0f32;
            for i in 0..n {
                cur_error += weights[i] * err(this_scale * laux[i] as f32 + this_min - x[i]);
            }
            if cur_error < best_error {
                l[..n].copy_from_slice(&laux[..n]);
                best_error = cur_error;
                scale = this_scale;
                min = this_min;
            }
        }
    }
    (scale, -min)
}

/// Q4_K (nmax 15) and Q5_K (nmax 31), as `quantize_row_q4_K_ref` / `q5_K_ref`.
fn q45_k(x: &[f32], y: &mut [u8], nmax: i32) {
    let mut l = [0u8; QK_K];
    let mut scales = [0f32; 8];
    let mut mins = [0f32; 8];
    let mut weights = [0f32; 32];
    let (mut max_scale, mut max_min) = (0f32, 0f32);
    let (rmin, nstep) = if nmax == 15 { (-1.0, 20) } else { (-0.5, 15) };
    for j in 0..8 {
        let xs = &x[32 * j..32 * j + 32];
        let sum_x2: f32 = xs.iter().map(|v| v * v).sum();
        let av_x = (sum_x2 / 32.0).sqrt();
        for (w, v) in weights.iter_mut().zip(xs) {
            *w = av_x + v.abs();
        }
        let ls = &mut l[32 * j..32 * j + 32];
        let (s, m) = make_qkx2_quants(nmax, xs, &weights, ls, rmin, 0.1, nstep, false);
        scales[j] = s;
        mins[j] = m;
        max_scale = max_scale.max(s);
        max_min = max_min.max(m);
    }
    let inv_scale = if max_scale > 0.0 {
        63.0 / max_scale
    } else {
        0.0
    };
    let inv_min = if max_min > 0.0 { 63.0 / max_min } else { 0.0 };
    let sc = &mut y[4..16];
    sc.fill(0);
    for j in 0..8 {
        let ls = (nearest_int(inv_scale * scales[j]) as u8).min(63);
        let lm = (nearest_int(inv_min * mins[j]) as u8).min(63);
        if j < 4 {
            sc[j] = ls;
            sc[j + 4] = lm;
        } else {
            sc[j + 4] = (ls & 0xF) | ((lm & 0xF) << 4);
            sc[j - 4] |= (ls >> 4) << 6;
            sc[j] |= (lm >> 4) << 6;
        }
    }
    wr_f16(y, 0, max_scale / 63.0);
    wr_f16(y, 2, max_min / 63.0);
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
            l[32 * j + ii] = nearest_int((x[32 * j + ii] + dm) / d).clamp(0, nmax) as u8;
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

/// ggml's `make_qx_quants` with `rmse_type = 1` and no weights: a symmetric scale fit to
/// -nmax..nmax-1 with a small search. Returns the scale; `l` gets `level + nmax`.
fn make_qx_quants(nmax: i32, x: &[f32], l: &mut [i8]) -> f32 {
    let (amax, max) = signed_absmax(x);
    if amax < 1e-15 {
        l.fill(0);
        return 0.0;
    }
    let level = |iscale: f32, v: f32| nearest_int(iscale * v).clamp(-nmax, nmax - 1);
    let mut iscale = -(nmax as f32) / max;
    let (mut sumlx, mut suml2) = (0f32, 0f32);
    for (li, &v) in l.iter_mut().zip(x) {
        let q = level(iscale, v);
        *li = (q + nmax) as i8;
        let w = v * v;
        sumlx += w * v * q as f32;
        suml2 += w * q as f32 * q as f32;
    }
    let mut scale = if suml2 != 0.0 { sumlx / suml2 } else { 0.0 };
    let mut best = scale * sumlx;
    for is in -9..=9 {
        if is == 0 {
            continue;
        }
        iscale = -(nmax as f32 + 0.1 * is as f32) / max;
        let (mut slx, mut sl2) = (0f32, 0f32);
        for &v in x {
            let q = level(iscale, v);
            let w = v * v;
            slx += w * v * q as f32;
            sl2 += w * q as f32 * q as f32;
        }
        if sl2 > 0.0 && slx * slx > best * sl2 {
            for (li, &v) in l.iter_mut().zip(x) {
                *li = (level(iscale, v) + nmax) as i8;
            }
            scale = slx / sl2;
            best = scale * slx;
        }
    }
    scale
}

/// Q6_K as `quantize_row_q6_K_ref`.
fn q6_k(x: &[f32], y: &mut [u8]) {
    let mut l = [0i8; QK_K];
    let mut scales = [0f32; 16];
    let (mut max_scale, mut max_abs_scale) = (0f32, 0f32);
    for ib in 0..16 {
        let s = make_qx_quants(32, &x[16 * ib..16 * ib + 16], &mut l[16 * ib..16 * ib + 16]);
        scales[ib] = s;
        if s.abs() > max_abs_scale {
            max_abs_scale = s.abs();
            max_scale = s;
        }
    }
    y.fill(0);
    if max_abs_scale < 1e-15 {
        return;
    }
    let iscale = -128.0 / max_scale;
    wr_f16(y, 208, 1.0 / iscale);
    for ib in 0..16 {
        y[192 + ib] = nearest_int(iscale * scales[ib]).min(127) as i8 as u8;
    }
    let d_all = rd_f16(y, 208);
    for j in 0..16 {
        let d = d_all * (y[192 + j] as i8) as f32;
        if d == 0.0 {
            continue;
        }
        for ii in 0..16 {
            let q = nearest_int(x[16 * j + ii] / d).clamp(-32, 31);
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

/// Q2_K as `quantize_row_q2_K_ref`. Layout: scales[16] @0, qs[64] @16, d @80, dmin @82.
fn q2_k(x: &[f32], y: &mut [u8]) {
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
        let (s, m) = make_qkx2_quants(3, xs, &weights, ls, -0.5, 0.1, 15, true);
        scales[j] = s;
        mins[j] = m;
        max_scale = max_scale.max(s);
        max_min = max_min.max(m);
    }
    y.fill(0);
    if max_scale > 0.0 {
        let iscale = 15.0 / max_scale;
        for j in 0..16 {
            y[j] = nearest_int(iscale * scales[j]) as u8;
        }
        wr_f16(y, 80, max_scale / 15.0);
    }
    if max_min > 0.0 {
        let iscale = 15.0 / max_min;
        for j in 0..16 {
            y[j] |= (nearest_int(iscale * mins[j]) as u8) << 4;
        }
        wr_f16(y, 82, max_min / 15.0);
    }
    let (d_all, dmin_all) = (rd_f16(y, 80), rd_f16(y, 82));
    for j in 0..16 {
        let d = d_all * (y[j] & 0xF) as f32;
        if d == 0.0 {
            continue;
        }
        let dm = dmin_all * (y[j] >> 4) as f32;
        for ii in 0..16 {
            l[16 * j + ii] = nearest_int((x[16 * j + ii] + dm) / d).clamp(0, 3) as u8;
        }
    }
    for h in 0..2 {
        for i in 0..32 {
            let b = 128 * h + i;
            y[16 + 32 * h + i] = l[b] | (l[b + 32] << 2) | (l[b + 64] << 4) | (l[b + 96] << 6);
        }
    }
}

/// ggml's `make_q3_quants` with `do_rmse`: levels -nmax..nmax-1 plus a greedy refinement.
fn make_q3_quants(nmax: i32, x: &[f32], l: &mut [i8]) -> f32 {
    let (amax, max) = signed_absmax(x);
    if amax < 1e-15 {
        l.fill(0);
        return 0.0;
    }
    let iscale = -(nmax as f32) / max;
    let (mut sumlx, mut suml2) = (0f32, 0f32);
    for (li, &v) in l.iter_mut().zip(x) {
        let q = nearest_int(iscale * v).clamp(-nmax, nmax - 1);
        *li = q as i8;
        let w = v * v;
        sumlx += w * v * q as f32;
        suml2 += w * q as f32 * q as f32;
    }
    for _ in 0..5 {
        let mut changed = 0;
        for i in 0..x.len() {
            let w = x[i] * x[i];
            let li = l[i] as f32;
            let mut slx = sumlx - w * x[i] * li;
            if slx > 0.0 {
                let mut sl2 = suml2 - w * li * li;
                let new_l = nearest_int(x[i] * sl2 / slx).clamp(-nmax, nmax - 1);
                if new_l != l[i] as i32 {
                    slx += w * x[i] * new_l as f32;
                    sl2 += w * new_l as f32 * new_l as f32;
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

/// Q3_K as `quantize_row_q3_K_ref`. Layout: hmask[32] @0, qs[64] @32, scales[12] @96, d @108.
fn q3_k(x: &[f32], y: &mut [u8]) {
    let mut l = [0i8; QK_K];
    let mut scales = [0f32; 16];
    let (mut max_scale, mut amax) = (0f32, 0f32);
    for j in 0..16 {
        let s = make_q3_quants(4, &x[16 * j..16 * j + 16], &mut l[16 * j..16 * j + 16]);
        scales[j] = s;
        if s.abs() > amax {
            amax = s.abs();
            max_scale = s;
        }
    }
    y.fill(0);
    if max_scale != 0.0 {
        let iscale = -32.0 / max_scale;
        let sc = &mut y[96..108];
        for j in 0..16 {
            let lv = (nearest_int(iscale * scales[j]).clamp(-32, 31) + 32) as u8;
            if j < 8 {
                sc[j] = lv & 0xF;
            } else {
                sc[j - 8] |= (lv & 0xF) << 4;
            }
            sc[8 + j % 4] |= (lv >> 4) << (2 * (j / 4));
        }
        wr_f16(y, 108, 1.0 / iscale);
    }
    let d_all = rd_f16(y, 108);
    let sc = scales_q3k(&y[96..108]);
    for j in 0..16 {
        let d = d_all * sc[j] as f32;
        if d == 0.0 {
            continue;
        }
        for ii in 0..16 {
            let q = nearest_int(x[16 * j + ii] / d).clamp(-4, 3);
            l[16 * j + ii] = (q + 4) as i8;
        }
    }
    let mut l = l.map(|v| v as u8);
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
