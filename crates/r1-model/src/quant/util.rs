//! Small shared helpers: little-endian field reads, ggml's rounding, K-quant scale unpacking
//! and the fixed lane reductions every kernel uses.

use half::{bf16, f16};

/// Elements per K-quant super-block.
pub(crate) const QK_K: usize = 256;

#[inline(always)]
pub(crate) fn rd_u16(b: &[u8], off: usize) -> u16 {
    u16::from_le_bytes([b[off], b[off + 1]])
}

#[inline(always)]
pub(crate) fn rd_f16(b: &[u8], off: usize) -> f32 {
    f16::from_bits(rd_u16(b, off)).to_f32()
}

#[inline(always)]
pub(crate) fn rd_bf16(b: &[u8], off: usize) -> f32 {
    bf16::from_bits(rd_u16(b, off)).to_f32()
}

#[inline(always)]
pub(crate) fn rd_f32(b: &[u8], off: usize) -> f32 {
    f32::from_le_bytes([b[off], b[off + 1], b[off + 2], b[off + 3]])
}

#[inline(always)]
pub(crate) fn rd_u32(b: &[u8], off: usize) -> u32 {
    u32::from_le_bytes([b[off], b[off + 1], b[off + 2], b[off + 3]])
}

#[inline(always)]
pub(crate) fn rd_i16(b: &[u8], off: usize) -> i16 {
    rd_u16(b, off) as i16
}

#[inline(always)]
pub(crate) fn wr_f16(b: &mut [u8], off: usize, v: f32) {
    b[off..off + 2].copy_from_slice(&f16::from_f32(v).to_bits().to_le_bytes());
}

/// ggml's `nearest_int`: round to nearest, ties to even (valid for |x| < 2^22).
#[inline(always)]
pub(crate) fn nearest_int(x: f32) -> i32 {
    x.round_ties_even() as i32
}

/// ggml's `get_scale_min_k4`: the 6-bit scale and min of sub-block `j` (0..8) of a
/// Q4_K / Q5_K super-block from its 12 packed bytes.
#[inline(always)]
pub(crate) fn scale_min_k4(j: usize, q: &[u8]) -> (u8, u8) {
    if j < 4 {
        (q[j] & 63, q[j + 4] & 63)
    } else {
        (
            (q[j + 4] & 0xF) | ((q[j - 4] >> 6) << 4),
            (q[j + 4] >> 4) | ((q[j] >> 6) << 4),
        )
    }
}

/// All 8 scales and 8 mins of a Q4_K / Q5_K super-block (the same values as
/// [`scale_min_k4`], unpacked with 32-bit word operations).
#[inline(always)]
pub(crate) fn scales_mins_k4(q: &[u8]) -> ([u8; 8], [u8; 8]) {
    const M6: u32 = 0x3f3f_3f3f;
    const M4: u32 = 0x0f0f_0f0f;
    const M2: u32 = 0x0303_0303;
    let (u0, u1, u2) = (rd_u32(q, 0), rd_u32(q, 4), rd_u32(q, 8));
    let sc_lo = u0 & M6;
    let sc_hi = (u2 & M4) | (((u0 >> 6) & M2) << 4);
    let mn_lo = u1 & M6;
    let mn_hi = ((u2 >> 4) & M4) | (((u1 >> 6) & M2) << 4);
    let sc = (sc_lo as u64 | ((sc_hi as u64) << 32)).to_le_bytes();
    let mn = (mn_lo as u64 | ((mn_hi as u64) << 32)).to_le_bytes();
    (sc, mn)
}

/// The 16 signed 6-bit scales of a Q3_K super-block (already minus 32).
#[inline(always)]
pub(crate) fn scales_q3k(q: &[u8]) -> [i8; 16] {
    let mut out = [0i8; 16];
    for (j, o) in out.iter_mut().enumerate() {
        let lo = if j < 8 { q[j] & 0xF } else { q[j - 8] >> 4 };
        let hi = (q[8 + j % 4] >> (2 * (j / 4))) & 3;
        *o = ((lo | (hi << 4)) as i8) - 32;
    }
    out
}

/// The fixed 8-lane sum: `((l0+l4)+(l2+l6)) + ((l1+l5)+(l3+l7))` (what the AVX reduction
/// `lo128+hi128`, `+movehl`, `+lane1` computes).
#[inline(always)]
pub(crate) fn hsum8(l: &[f32; 8]) -> f32 {
    let s0 = l[0] + l[4];
    let s1 = l[1] + l[5];
    let s2 = l[2] + l[6];
    let s3 = l[3] + l[7];
    (s0 + s2) + (s1 + s3)
}

/// The fixed 32-lane sum used by the float dot products.
#[inline(always)]
pub(crate) fn hsum32(l: &[f32; 32]) -> f32 {
    let mut v = [0f32; 8];
    for j in 0..8 {
        v[j] = (l[j] + l[j + 8]) + (l[j + 16] + l[j + 24]);
    }
    hsum8(&v)
}
