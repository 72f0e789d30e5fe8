//! llama.cpp's i-quants: block decoding and dequantization (ggml's `dequantize_row_iq*`).
//!
//! The grid types (IQ2_XXS, IQ2_XS, IQ2_S, IQ3_XXS, IQ3_S) store each group of 8 (IQ2) or 4
//! (IQ3) magnitudes as an index into a codebook grid, signs as bits, and a 4-bit scale per
//! 16 or 32 elements. [`decode_grid`] turns a super-block into signed integer values and
//! per-16 scale nibbles, which both the dequantizer here and the dot kernels
//! (`iq_dot_scalar.rs`) use. Dequantizing `db * grid * sign` as `db * (±grid)` gives the same
//! bits: IEEE multiplication is symmetric in sign.
//!
//! IQ1_S / IQ1_M use a ternary grid plus a ±1/8 offset per group ([`decode_iq1`]); IQ4_NL /
//! IQ4_XS are 4-bit indices into 16 non-linear levels.

use super::iq_grids::*;
use super::util::*;
use super::GgmlType;

/// A grid-type super-block, decoded: the 256 signed grid values and the 4-bit scale field of
/// each 16 elements (the float scale and integer multiplier derived from it depend on the type).
pub(crate) struct GridBlock {
    pub v: [i8; QK_K],
    pub s: [u8; 16],
}

/// Writes the 8 values of grid row `row` (little-endian bytes) with `signs` bit `j` negating
/// value `j`, into `out[0..8]`.
#[inline(always)]
fn signed8(out: &mut [i8], row: u64, signs: u8) {
    for (j, (o, g)) in out.iter_mut().zip(row.to_le_bytes()).enumerate() {
        let g = g as i8;
        *o = if signs & KMASK_IQ2XS[j] != 0 { -g } else { g };
    }
}

/// The 8 values of two IQ3 grid rows (4 values each) with one sign byte.
#[inline(always)]
fn signed4x2(out: &mut [i8], r1: u32, r2: u32, signs: u8) {
    let row = r1 as u64 | ((r2 as u64) << 32);
    signed8(out, row, signs);
}

/// Decodes a super-block of a grid type (IQ2_XXS, IQ2_XS, IQ2_S, IQ3_XXS, IQ3_S).
#[inline(always)]
pub(crate) fn decode_grid(ty: GgmlType, b: &[u8]) -> GridBlock {
    let mut v = [0i8; QK_K];
    let mut s = [0u8; 16];
    match ty {
        // d @0, then per 32 elements two u32: 4 grid indices (bytes), and 4x7 sign bits with
        // the 4-bit scale on top
        GgmlType::IQ2_XXS => {
            for ib in 0..8 {
                let idx = rd_u32(b, 2 + 8 * ib).to_le_bytes();
                let aux = rd_u32(b, 6 + 8 * ib);
                for l in 0..4 {
                    let signs = KSIGNS_IQ2XS[((aux >> (7 * l)) & 127) as usize];
                    let o = &mut v[32 * ib + 8 * l..32 * ib + 8 * l + 8];
                    signed8(o, IQ2XXS_GRID[idx[l] as usize], signs);
                }
                s[2 * ib] = (aux >> 28) as u8;
                s[2 * ib + 1] = (aux >> 28) as u8;
            }
        }
        // d @0, qs[32] u16 @2 (9-bit grid index, 7 sign bits), scales[8] @66 (two nibbles
        // per 32 elements)
        GgmlType::IQ2_XS => {
            for g in 0..32 {
                let q = rd_u16(b, 2 + 2 * g);
                let signs = KSIGNS_IQ2XS[(q >> 9) as usize];
                signed8(
                    &mut v[8 * g..8 * g + 8],
                    IQ2XS_GRID[(q & 511) as usize],
                    signs,
                );
            }
            for ib in 0..8 {
                s[2 * ib] = b[66 + ib] & 0xF;
                s[2 * ib + 1] = b[66 + ib] >> 4;
            }
        }
        // d @0, qs[32] @2 (index low bits), signs[32] @34, qh[8] @66 (2 high index bits per
        // group), scales[8] @74
        GgmlType::IQ2_S => {
            for g in 0..32 {
                let (ib, l) = (g / 4, g % 4);
                let hi = ((b[66 + ib] as usize) << (8 - 2 * l)) & 0x300;
                let row = IQ2S_GRID[b[2 + g] as usize | hi];
                signed8(&mut v[8 * g..8 * g + 8], row, b[34 + g]);
            }
            for ib in 0..8 {
                s[2 * ib] = b[74 + ib] & 0xF;
                s[2 * ib + 1] = b[74 + ib] >> 4;
            }
        }
        // d @0, qs[64] grid indices @2, then per 32 elements a u32 of 4x7 sign bits and the
        // 4-bit scale on top @66
        GgmlType::IQ3_XXS => {
            for ib in 0..8 {
                let aux = rd_u32(b, 66 + 4 * ib);
                let q = &b[2 + 8 * ib..2 + 8 * ib + 8];
                for l in 0..4 {
                    let signs = KSIGNS_IQ2XS[((aux >> (7 * l)) & 127) as usize];
                    let r1 = IQ3XXS_GRID[q[2 * l] as usize];
                    let r2 = IQ3XXS_GRID[q[2 * l + 1] as usize];
                    signed4x2(&mut v[32 * ib + 8 * l..32 * ib + 8 * l + 8], r1, r2, signs);
                }
                s[2 * ib] = (aux >> 28) as u8;
                s[2 * ib + 1] = (aux >> 28) as u8;
            }
        }
        // d @0, qs[64] @2 (index low bits), qh[8] @66 (9th bits), signs[32] @74,
        // scales[4] @106 (one nibble per 32 elements)
        GgmlType::IQ3_S => {
            for ib in 0..8 {
                let qh = b[66 + ib] as usize;
                let q = &b[2 + 8 * ib..2 + 8 * ib + 8];
                for l in 0..4 {
                    let r1 = IQ3S_GRID[q[2 * l] as usize | ((qh << (8 - 2 * l)) & 256)];
                    let r2 = IQ3S_GRID[q[2 * l + 1] as usize | ((qh << (7 - 2 * l)) & 256)];
                    let signs = b[74 + 4 * ib + l];
                    signed4x2(&mut v[32 * ib + 8 * l..32 * ib + 8 * l + 8], r1, r2, signs);
                }
                let sc = (b[106 + ib / 2] >> (4 * (ib % 2))) & 0xF;
                s[2 * ib] = sc;
                s[2 * ib + 1] = sc;
            }
        }
        _ => unreachable!("decode_grid: {ty} is not a grid type"),
    }
    GridBlock { v, s }
}

/// ggml's float scale of 16 elements of a grid type from its 4-bit field `s`.
#[inline(always)]
fn grid_db(ty: GgmlType, d: f32, s: u8) -> f32 {
    match ty {
        GgmlType::IQ3_S => d * (1 + 2 * s as i32) as f32,
        GgmlType::IQ3_XXS => d * (0.5 + s as f32) * 0.5,
        _ => d * (0.5 + s as f32) * 0.25,
    }
}

fn dequant_grid(ty: GgmlType, b: &[u8], y: &mut [f32]) {
    let d = rd_f16(b, 0);
    let blk = decode_grid(ty, b);
    for (g, yg) in y.chunks_exact_mut(16).enumerate() {
        let db = grid_db(ty, d, blk.s[g]);
        for (o, &v) in yg.iter_mut().zip(&blk.v[16 * g..16 * g + 16]) {
            *o = db * v as f32;
        }
    }
}

/// An IQ1_S / IQ1_M super-block, decoded: the ternary grid values, the odd integer scale
/// `2s+1` of each 8 elements and whether each 8 elements' offset is negative (bit `g`).
pub(crate) struct Iq1Block {
    pub v: [i8; QK_K],
    pub ls: [u8; 32],
    pub neg: u32,
    /// The block scale (IQ1_M keeps its f16 bits spread over the scale words).
    pub d: f32,
}

#[inline(always)]
pub(crate) fn decode_iq1(ty: GgmlType, b: &[u8]) -> Iq1Block {
    let mut v = [0i8; QK_K];
    let mut ls = [0u8; 32];
    let mut neg = 0u32;
    let put = |v: &mut [i8; QK_K], g: usize, idx: usize| {
        for (o, x) in v[8 * g..8 * g + 8]
            .iter_mut()
            .zip(IQ1S_GRID[idx].to_le_bytes())
        {
            *o = x as i8;
        }
    };
    let d = match ty {
        // d @0, qs[32] @2 (index low bytes), qh[8] u16 @34: 3 high index bits per group of
        // 8, the 3-bit scale at bit 12, the offset sign at bit 15 (all per 32 elements)
        GgmlType::IQ1_S => {
            for ib in 0..8 {
                let qh = rd_u16(b, 34 + 2 * ib) as usize;
                for l in 0..4 {
                    let g = 4 * ib + l;
                    put(&mut v, g, b[2 + g] as usize | (((qh >> (3 * l)) & 7) << 8));
                    ls[g] = 2 * ((qh >> 12) & 7) as u8 + 1;
                    if qh & 0x8000 != 0 {
                        neg |= 1 << g;
                    }
                }
            }
            rd_f16(b, 0)
        }
        // qs[32] @0, qh[16] @32 (per group of 8: 3 high index bits and the offset sign, a
        // nibble each), scales[8] @48 as 4 u16: 3-bit scales per 16 elements, and the top
        // nibbles of the 4 words are the f16 block scale
        GgmlType::IQ1_M => {
            let sc = |i: usize| rd_u16(b, 48 + 2 * i);
            for g in 0..32 {
                let nib = (b[32 + g / 2] >> (4 * (g % 2))) as usize & 0xF;
                put(&mut v, g, b[g] as usize | ((nib & 7) << 8));
                if nib & 8 != 0 {
                    neg |= 1 << g;
                }
                let (ib, half) = (g / 4, (g % 4) / 2);
                ls[g] = 2 * ((sc(ib / 2) >> (6 * (ib % 2) + 3 * half)) & 7) as u8 + 1;
            }
            let bits = (sc(0) >> 12)
                | ((sc(1) >> 8) & 0x00F0)
                | ((sc(2) >> 4) & 0x0F00)
                | (sc(3) & 0xF000);
            half::f16::from_bits(bits).to_f32()
        }
        _ => unreachable!("decode_iq1: {ty}"),
    };
    Iq1Block { v, ls, neg, d }
}

fn dequant_iq1(ty: GgmlType, b: &[u8], y: &mut [f32]) {
    let blk = decode_iq1(ty, b);
    let delta = if ty == GgmlType::IQ1_S {
        IQ1S_DELTA
    } else {
        IQ1M_DELTA
    };
    for (g, yg) in y.chunks_exact_mut(8).enumerate() {
        let dl = blk.d * blk.ls[g] as f32;
        let dt = if blk.neg & (1 << g) != 0 {
            -delta
        } else {
            delta
        };
        for (o, &v) in yg.iter_mut().zip(&blk.v[8 * g..8 * g + 8]) {
            *o = dl * (v as f32 + dt);
        }
    }
}

/// IQ4 levels of the 32 elements whose 16 nibble pairs are `q` (low nibbles first).
#[inline(always)]
pub(crate) fn iq4_values(q: &[u8]) -> [i8; 32] {
    let mut v = [0i8; 32];
    for (j, &x) in q[..16].iter().enumerate() {
        v[j] = KVALUES_IQ4NL[(x & 0xF) as usize];
        v[j + 16] = KVALUES_IQ4NL[(x >> 4) as usize];
    }
    v
}

/// The 6-bit scale (0..63; the multiplier is `ls - 32`) of sub-block `ib` of an IQ4_XS
/// super-block: 4 low bits from `scales_l` @4, 2 high bits from `scales_h` @2.
#[inline(always)]
pub(crate) fn iq4_xs_scale(b: &[u8], ib: usize) -> i32 {
    let lo = (b[4 + ib / 2] >> (4 * (ib % 2))) & 0xF;
    let hi = ((rd_u16(b, 2) >> (2 * ib)) & 3) as u8;
    (lo | (hi << 4)) as i32
}

fn dequant_iq4_nl(b: &[u8], y: &mut [f32]) {
    let d = rd_f16(b, 0);
    for (o, v) in y.iter_mut().zip(iq4_values(&b[2..18])) {
        *o = d * v as f32;
    }
}

// IQ4_XS: d @0, scales_h @2, scales_l[4] @4, qs[128] @8
fn dequant_iq4_xs(b: &[u8], y: &mut [f32]) {
    let d = rd_f16(b, 0);
    for (ib, yb) in y.chunks_exact_mut(32).enumerate() {
        let dl = d * (iq4_xs_scale(b, ib) - 32) as f32;
        for (o, v) in yb.iter_mut().zip(iq4_values(&b[8 + 16 * ib..])) {
            *o = dl * v as f32;
        }
    }
}

/// Dequantizes whole blocks of an i-quant type; `false` for other types.
pub(crate) fn dequantize(ty: GgmlType, data: &[u8], out: &mut [f32]) -> bool {
    use GgmlType::*;
    let blocks = data
        .chunks_exact(ty.type_size())
        .zip(out.chunks_exact_mut(ty.block_size()));
    match ty {
        IQ2_XXS | IQ2_XS | IQ2_S | IQ3_XXS | IQ3_S => {
            blocks.for_each(|(b, y)| dequant_grid(ty, b, y))
        }
        IQ1_S | IQ1_M => blocks.for_each(|(b, y)| dequant_iq1(ty, b, y)),
        IQ4_NL => blocks.for_each(|(b, y)| dequant_iq4_nl(b, y)),
        IQ4_XS => blocks.for_each(|(b, y)| dequant_iq4_xs(b, y)),
        _ => return false,
    }
    true
}
