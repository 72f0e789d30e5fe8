//! Block dequantization (ggml's `dequantize_row_*`), scalar. Lengths are checked by the caller.

use super::util::*;
use super::{GgmlType, QuantError};

pub(crate) fn dequantize(ty: GgmlType, data: &[u8], out: &mut [f32]) -> Result<(), QuantError> {
    use GgmlType::*;
    let bs = ty.block_size();
    let ts = ty.type_size();
    let blocks = data.chunks_exact(ts).zip(out.chunks_exact_mut(bs));
    match ty {
        F32 => blocks.for_each(|(b, y)| y[0] = rd_f32(b, 0)),
        F16 => blocks.for_each(|(b, y)| y[0] = rd_f16(b, 0)),
        BF16 => blocks.for_each(|(b, y)| y[0] = rd_bf16(b, 0)),
        Q4_0 => blocks.for_each(|(b, y)| q4_0(b, y)),
        Q4_1 => blocks.for_each(|(b, y)| q4_1(b, y)),
        Q5_0 => blocks.for_each(|(b, y)| q5_0(b, y)),
        Q5_1 => blocks.for_each(|(b, y)| q5_1(b, y)),
        Q8_0 => blocks.for_each(|(b, y)| q8_0(b, y)),
        Q8_1 => blocks.for_each(|(b, y)| q8_1(b, y)),
        Q2_K => blocks.for_each(|(b, y)| q2_k(b, y)),
        Q3_K => blocks.for_each(|(b, y)| q3_k(b, y)),
        Q4_K => blocks.for_each(|(b, y)| q4_k(b, y)),
        Q5_K => blocks.for_each(|(b, y)| q5_k(b, y)),
        Q6_K => blocks.for_each(|(b, y)| q6_k(b, y)),
        Q8_K => blocks.for_each(|(b, y)| q8_k(b, y)),
        IQ2_XXS | IQ2_XS | IQ2_S | IQ3_XXS | IQ3_S | IQ1_S | IQ1_M | IQ4_NL | IQ4_XS => {
            super::iq_dequant::dequantize(ty, data, out);
        }
        I8 | I16 | I32 | I64 | F64 => {
            return Err(QuantError::Unsupported {
                ty,
                op: "dequantize",
            })
        }
    }
    Ok(())
}

/// The 5th bits of a Q5_0 / Q5_1 block as 0 or 16 per element.
#[inline(always)]
fn q5_high(qh: u32, j: usize) -> u8 {
    (((qh >> j) & 1) << 4) as u8
}

fn q4_0(b: &[u8], y: &mut [f32]) {
    let d = rd_f16(b, 0);
    for j in 0..16 {
        let q = b[2 + j];
        y[j] = ((q & 0xF) as i32 - 8) as f32 * d;
        y[j + 16] = ((q >> 4) as i32 - 8) as f32 * d;
    }
}

fn q4_1(b: &[u8], y: &mut [f32]) {
    let d = rd_f16(b, 0);
    let m = rd_f16(b, 2);
    for j in 0..16 {
        let q = b[4 + j];
        y[j] = (q & 0xF) as f32 * d + m;
        y[j + 16] = (q >> 4) as f32 * d + m;
    }
}

fn q5_0(b: &[u8], y: &mut [f32]) {
    let d = rd_f16(b, 0);
    let qh = rd_u32(b, 2);
    for j in 0..16 {
        let q = b[6 + j];
        let x0 = ((q & 0xF) | q5_high(qh, j)) as i32 - 16;
        let x1 = ((q >> 4) | q5_high(qh, j + 16)) as i32 - 16;
        y[j] = x0 as f32 * d;
        y[j + 16] = x1 as f32 * d;
    }
}

fn q5_1(b: &[u8], y: &mut [f32]) {
    let d = rd_f16(b, 0);
    let m = rd_f16(b, 2);
    let qh = rd_u32(b, 4);
    for j in 0..16 {
        let q = b[8 + j];
        let x0 = (q & 0xF) | q5_high(qh, j);
        let x1 = (q >> 4) | q5_high(qh, j + 16);
        y[j] = x0 as f32 * d + m;
        y[j + 16] = x1 as f32 * d + m;
    }
}

fn q8_0(b: &[u8], y: &mut [f32]) {
    let d = rd_f16(b, 0);
    for j in 0..32 {
        y[j] = (b[2 + j] as i8) as f32 * d;
    }
}

fn q8_1(b: &[u8], y: &mut [f32]) {
    let d = rd_f16(b, 0);
    for j in 0..32 {
        y[j] = (b[4 + j] as i8) as f32 * d;
    }
}

fn q8_k(b: &[u8], y: &mut [f32]) {
    let d = rd_f32(b, 0);
    for j in 0..QK_K {
        y[j] = (b[4 + j] as i8) as f32 * d;
    }
}

// Q2_K: scales[16] @0, qs[64] @16, d @80, dmin @82
fn q2_k(b: &[u8], y: &mut [f32]) {
    let d = rd_f16(b, 80);
    let min = rd_f16(b, 82);
    let sc = &b[0..16];
    let mut is = 0;
    let mut o = 0;
    for n in 0..2 {
        let q = &b[16 + 32 * n..16 + 32 * n + 32];
        for shift in [0u32, 2, 4, 6] {
            for half in 0..2 {
                let s = sc[is];
                is += 1;
                let dl = d * (s & 0xF) as f32;
                let ml = min * (s >> 4) as f32;
                for l in 0..16 {
                    y[o] = dl * ((q[16 * half + l] >> shift) & 3) as f32 - ml;
                    o += 1;
                }
            }
        }
    }
}

// Q3_K: hmask[32] @0, qs[64] @32, scales[12] @96, d @108
fn q3_k(b: &[u8], y: &mut [f32]) {
    let d_all = rd_f16(b, 108);
    let hm = &b[0..32];
    let scales = scales_q3k(&b[96..108]);
    let mut m = 1u8;
    let mut is = 0;
    let mut o = 0;
    for n in 0..2 {
        let q = &b[32 + 32 * n..32 + 32 * n + 32];
        for shift in [0u32, 2, 4, 6] {
            for half in 0..2 {
                let dl = d_all * scales[is] as f32;
                is += 1;
                for l in 0..16 {
                    let i = 16 * half + l;
                    let hi = if hm[i] & m != 0 { 0 } else { 4 };
                    y[o] = dl * (((q[i] >> shift) & 3) as i32 - hi) as f32;
                    o += 1;
                }
            }
            m <<= 1;
        }
    }
}

// Q4_K: d @0, dmin @2, scales[12] @4, qs[128] @16
fn q4_k(b: &[u8], y: &mut [f32]) {
    let d = rd_f16(b, 0);
    let min = rd_f16(b, 2);
    let (sc, mn) = scales_mins_k4(&b[4..16]);
    for j in 0..4 {
        let q = &b[16 + 32 * j..16 + 32 * j + 32];
        let d1 = d * sc[2 * j] as f32;
        let m1 = min * mn[2 * j] as f32;
        let d2 = d * sc[2 * j + 1] as f32;
        let m2 = min * mn[2 * j + 1] as f32;
        let yo = &mut y[64 * j..64 * j + 64];
        for l in 0..32 {
            yo[l] = d1 * (q[l] & 0xF) as f32 - m1;
            yo[l + 32] = d2 * (q[l] >> 4) as f32 - m2;
        }
    }
}

// Q5_K: d @0, dmin @2, scales[12] @4, qh[32] @16, qs[128] @48
fn q5_k(b: &[u8], y: &mut [f32]) {
    let d = rd_f16(b, 0);
    let min = rd_f16(b, 2);
    let (sc, mn) = scales_mins_k4(&b[4..16]);
    let qh = &b[16..48];
    for j in 0..4 {
        let ql = &b[48 + 32 * j..48 + 32 * j + 32];
        let d1 = d * sc[2 * j] as f32;
        let m1 = min * mn[2 * j] as f32;
        let d2 = d * sc[2 * j + 1] as f32;
        let m2 = min * mn[2 * j + 1] as f32;
        let u1 = 1u8 << (2 * j);
        let u2 = 2u8 << (2 * j);
        let yo = &mut y[64 * j..64 * j + 64];
        for l in 0..32 {
            let h1 = if qh[l] & u1 != 0 { 16 } else { 0 };
            let h2 = if qh[l] & u2 != 0 { 16 } else { 0 };
            yo[l] = d1 * ((ql[l] & 0xF) + h1) as f32 - m1;
            yo[l + 32] = d2 * ((ql[l] >> 4) + h2) as f32 - m2;
        }
    }
}

/// The 256 unsigned 6-bit values (0..63) of a Q6_K block, in element order.
#[inline(always)]
pub(crate) fn q6_k_values(b: &[u8]) -> [u8; QK_K] {
    let mut v = [0u8; QK_K];
    for h in 0..2 {
        let ql = &b[64 * h..64 * h + 64];
        let qh = &b[128 + 32 * h..128 + 32 * h + 32];
        let o = &mut v[128 * h..128 * h + 128];
        for l in 0..32 {
            o[l] = (ql[l] & 0xF) | ((qh[l] & 3) << 4);
            o[l + 32] = (ql[l + 32] & 0xF) | (((qh[l] >> 2) & 3) << 4);
            o[l + 64] = (ql[l] >> 4) | (((qh[l] >> 4) & 3) << 4);
            o[l + 96] = (ql[l + 32] >> 4) | (((qh[l] >> 6) & 3) << 4);
        }
    }
    v
}

// Q6_K: ql[128] @0, qh[64] @128, scales[16] i8 @192, d @208
fn q6_k(b: &[u8], y: &mut [f32]) {
    let d = rd_f16(b, 208);
    let v = q6_k_values(b);
    for (i, yi) in y.iter_mut().enumerate() {
        let sc = b[192 + i / 16] as i8;
        // ggml: d * sc * q, evaluated left to right in f32
        *yi = d * sc as f32 * (v[i] as i32 - 32) as f32;
    }
}
