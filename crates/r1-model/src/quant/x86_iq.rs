//! x86-64 AVX2 kernels for the i-quants: the grid types (IQ2_XXS, IQ2_XS, IQ2_S, IQ3_XXS,
//! IQ3_S), IQ1_S, IQ1_M, IQ4_XS and IQ4_NL. They compute the same exact integer block sums as
//! `iq_dot_scalar` and fold them into the same scalar float chain, so results equal the
//! portable kernels bit for bit (see that file for ggml's order).
//!
//! A weight block is decoded once into 32-byte vectors of magnitudes `|v|` and sign sources
//! and dotted with up to [`TC`] tokens: `maddubs(|v|, sign(q, v))` gives exact i16 pair sums
//! (|v| <= 127 and |q| <= 127, so no saturation), `madd` with the 16-element multipliers
//! gives i32 lanes.

// Parallel arrays of SIMD registers (per sub-block) are indexed together.
#![allow(clippy::needless_range_loop)]

use core::arch::x86_64::*;

use super::gemm::OutPtr;
use super::iq_dequant::{decode_iq1 as decode_iq1_block, iq4_xs_scale};
use super::iq_grids::*;
use super::util::*;
use super::GgmlType;

/// Tokens whose accumulators are kept while one weight row's blocks are decoded.
const TC: usize = 16;

#[inline(always)]
unsafe fn ld(p: *const u8) -> __m256i {
    _mm256_loadu_si256(p as *const __m256i)
}

#[inline(always)]
unsafe fn hsum_i32(v: __m256i) -> i32 {
    let s = _mm_add_epi32(_mm256_castsi256_si128(v), _mm256_extracti128_si256(v, 1));
    let s = _mm_add_epi32(s, _mm_unpackhi_epi64(s, s));
    let s = _mm_add_epi32(s, _mm_shuffle_epi32(s, 1));
    _mm_cvtsi128_si32(s)
}

/// A weight block decoded for the dot: per 32 elements the magnitudes, a vector whose byte
/// signs are the values' signs, and the i16 multipliers of the maddubs pairs (grid types:
/// `2s+1` of each 16-element half; IQ4: 1).
struct Dec {
    mag: [__m256i; 8],
    sgn: [__m256i; 8],
    mul: [__m256i; 8],
    /// IQ1_M keeps its block scale spread over the scale words (others: unused)
    d: f32,
}

/// 32 elements from 4 grid rows of 8 magnitudes and 4 sign bytes (bit `j` of byte `l`
/// negates value `j` of row `l`): the magnitudes, and ±1 per byte.
#[inline(always)]
unsafe fn rows_signs(rows: [u64; 4], signs: u32) -> (__m256i, __m256i) {
    let mag = _mm256_set_epi64x(
        rows[3] as i64,
        rows[2] as i64,
        rows[1] as i64,
        rows[0] as i64,
    );
    // sign byte l spread over bytes 8l..8l+8 (the shuffle works per 128-bit half; both
    // halves hold all 4 bytes)
    let spread = _mm256_shuffle_epi8(
        _mm256_set1_epi32(signs as i32),
        _mm256_set_epi64x(
            0x0303_0303_0303_0303,
            0x0202_0202_0202_0202,
            0x0101_0101_0101_0101,
            0,
        ),
    );
    let bits = _mm256_set1_epi64x(0x8040_2010_0804_0201u64 as i64);
    let neg = _mm256_cmpeq_epi8(_mm256_and_si256(spread, bits), bits);
    (mag, _mm256_or_si256(neg, _mm256_set1_epi8(1)))
}

/// The multipliers `2*s_lo+1` (elements 0..16) and `2*s_hi+1` (16..32) as i16 lanes in
/// maddubs pair order.
#[inline(always)]
unsafe fn mul16(s_lo: u8, s_hi: u8) -> __m256i {
    _mm256_set_m128i(
        _mm_set1_epi16(2 * s_hi as i16 + 1),
        _mm_set1_epi16(2 * s_lo as i16 + 1),
    )
}

/// Grid rows, sign bytes and scale fields of the 32 elements `ib` of a grid-type block
/// (layouts as in `iq_dequant::decode_grid`).
#[inline(always)]
fn grid_parts(ty: GgmlType, b: &[u8], ib: usize) -> ([u64; 4], u32, u8, u8) {
    let ks = |aux: u32, l: usize| KSIGNS_IQ2XS[((aux >> (7 * l)) & 127) as usize];
    let pack = |b: [u8; 4]| u32::from_le_bytes(b);
    match ty {
        GgmlType::IQ2_XXS => {
            let aux = rd_u32(b, 6 + 8 * ib);
            let rows = core::array::from_fn(|l| IQ2XXS_GRID[b[2 + 8 * ib + l] as usize]);
            let s = (aux >> 28) as u8;
            (rows, pack(core::array::from_fn(|l| ks(aux, l))), s, s)
        }
        GgmlType::IQ2_XS => {
            let q = |l: usize| rd_u16(b, 2 + 2 * (4 * ib + l));
            let rows = core::array::from_fn(|l| IQ2XS_GRID[(q(l) & 511) as usize]);
            let signs = pack(core::array::from_fn(|l| KSIGNS_IQ2XS[(q(l) >> 9) as usize]));
            (rows, signs, b[66 + ib] & 0xF, b[66 + ib] >> 4)
        }
        GgmlType::IQ2_S => {
            let qh = b[66 + ib] as usize;
            let rows = core::array::from_fn(|l| {
                IQ2S_GRID[b[2 + 4 * ib + l] as usize | ((qh << (8 - 2 * l)) & 0x300)]
            });
            (
                rows,
                rd_u32(b, 34 + 4 * ib),
                b[74 + ib] & 0xF,
                b[74 + ib] >> 4,
            )
        }
        GgmlType::IQ3_XXS => {
            let aux = rd_u32(b, 66 + 4 * ib);
            let q = &b[2 + 8 * ib..2 + 8 * ib + 8];
            let rows = core::array::from_fn(|l| {
                IQ3XXS_GRID[q[2 * l] as usize] as u64
                    | ((IQ3XXS_GRID[q[2 * l + 1] as usize] as u64) << 32)
            });
            let s = (aux >> 28) as u8;
            (rows, pack(core::array::from_fn(|l| ks(aux, l))), s, s)
        }
        GgmlType::IQ3_S => {
            let qh = b[66 + ib] as usize;
            let q = &b[2 + 8 * ib..2 + 8 * ib + 8];
            let rows = core::array::from_fn(|l| {
                let i1 = q[2 * l] as usize | ((qh << (8 - 2 * l)) & 256);
                let i2 = q[2 * l + 1] as usize | ((qh << (7 - 2 * l)) & 256);
                IQ3S_GRID[i1] as u64 | ((IQ3S_GRID[i2] as u64) << 32)
            });
            let s = (b[106 + ib / 2] >> (4 * (ib % 2))) & 0xF;
            (rows, rd_u32(b, 74 + 4 * ib), s, s)
        }
        _ => unreachable!("grid_parts: {ty}"),
    }
}

#[inline(always)]
unsafe fn decode_grid(ty: GgmlType, b: &[u8]) -> Dec {
    let z = _mm256_setzero_si256();
    let mut d = Dec {
        mag: [z; 8],
        sgn: [z; 8],
        mul: [z; 8],
        d: 0.0,
    };
    for ib in 0..8 {
        let (rows, signs, s_lo, s_hi) = grid_parts(ty, b, ib);
        (d.mag[ib], d.sgn[ib]) = rows_signs(rows, signs);
        d.mul[ib] = mul16(s_lo, s_hi);
    }
    d
}

/// The 32 IQ4 levels of 16 nibble pairs at `q` (low nibbles first).
#[inline(always)]
unsafe fn iq4_levels(q: *const u8) -> __m256i {
    let table = _mm_loadu_si128(KVALUES_IQ4NL.as_ptr() as *const __m128i);
    let bytes = _mm_loadu_si128(q as *const __m128i);
    let m4 = _mm_set1_epi8(0x0F);
    let lo = _mm_shuffle_epi8(table, _mm_and_si128(bytes, m4));
    let hi = _mm_shuffle_epi8(table, _mm_and_si128(_mm_srli_epi16(bytes, 4), m4));
    _mm256_set_m128i(hi, lo)
}

/// IQ4 values `v` as magnitude and sign source (|v| <= 127: no level is -128).
#[inline(always)]
unsafe fn mag_sgn(v: __m256i) -> (__m256i, __m256i) {
    (_mm256_abs_epi8(v), v)
}

/// `maddubs(|v|, sign(q, v))`: exact i16 sums of pairs of products.
#[inline(always)]
unsafe fn pairs(mag: __m256i, sgn: __m256i, q: __m256i) -> __m256i {
    _mm256_maddubs_epi16(mag, _mm256_sign_epi8(q, sgn))
}

/// Exact `Σ mul * v * q` of a decoded grid block with the 256 quants at `q`.
#[inline(always)]
unsafe fn grid_bsum(d: &Dec, q: *const u8) -> i32 {
    let mut acc = _mm256_setzero_si256();
    for ib in 0..8 {
        let p = pairs(d.mag[ib], d.sgn[ib], ld(q.add(32 * ib)));
        acc = _mm256_add_epi32(acc, _mm256_madd_epi16(p, d.mul[ib]));
    }
    hsum_i32(acc)
}

/// The 8 exact sums `Σ v * q` of the 32-element sub-blocks of a decoded IQ4_XS block.
#[inline(always)]
unsafe fn iq4_sub_sums(d: &Dec, q: *const u8) -> [i32; 8] {
    let one = _mm256_set1_epi16(1);
    let s: [__m256i; 8] = core::array::from_fn(|ib| {
        _mm256_madd_epi16(pairs(d.mag[ib], d.sgn[ib], ld(q.add(32 * ib))), one)
    });
    // pairwise horizontal adds: lane i of each 128-bit half ends up with sub-block i's
    // (or i+4's) partial sum; the two halves are then added
    let s01 = _mm256_hadd_epi32(s[0], s[1]);
    let s23 = _mm256_hadd_epi32(s[2], s[3]);
    let s45 = _mm256_hadd_epi32(s[4], s[5]);
    let s67 = _mm256_hadd_epi32(s[6], s[7]);
    let s0123 = _mm256_hadd_epi32(s01, s23);
    let s4567 = _mm256_hadd_epi32(s45, s67);
    let t = _mm256_add_epi32(
        _mm256_permute2x128_si256(s0123, s4567, 0x20),
        _mm256_permute2x128_si256(s0123, s4567, 0x31),
    );
    let mut out = [0i32; 8];
    _mm256_storeu_si256(out.as_mut_ptr() as *mut __m256i, t);
    out
}

#[inline(always)]
unsafe fn decode_iq4_xs(b: &[u8]) -> (Dec, [i32; 8]) {
    let z = _mm256_setzero_si256();
    let mut d = Dec {
        mag: [z; 8],
        sgn: [z; 8],
        mul: [z; 8],
        d: 0.0,
    };
    let mut ls = [0i32; 8];
    for ib in 0..8 {
        (d.mag[ib], d.sgn[ib]) = mag_sgn(iq4_levels(b.as_ptr().add(8 + 16 * ib)));
        ls[ib] = iq4_xs_scale(b, ib) - 32;
    }
    (d, ls)
}

/// Float chain of one weight block with one activation block `y`, as in `iq_dot_scalar`.
#[inline(always)]
unsafe fn step(ty: GgmlType, x: &[u8], dec: &(Dec, [i32; 8]), y: *const u8, sumf: f32) -> f32 {
    let ys = core::slice::from_raw_parts(y, 4);
    match ty {
        GgmlType::IQ4_NL => {
            let (mag, sgn) = (dec.0.mag[0], dec.0.sgn[0]);
            let p = _mm256_madd_epi16(pairs(mag, sgn, ld(y.add(2))), _mm256_set1_epi16(1));
            (rd_f16(ys, 0) * rd_f16(x, 0)).mul_add(hsum_i32(p) as f32, sumf)
        }
        GgmlType::IQ4_XS => {
            let d4d8 = rd_f16(x, 0) * rd_f32(ys, 0);
            let s = iq4_sub_sums(&dec.0, y.add(4));
            let mut sumf = sumf;
            for (&si, &l) in s.iter().zip(&dec.1) {
                sumf = (d4d8 * l as f32).mul_add(si as f32, sumf);
            }
            sumf
        }
        GgmlType::IQ1_S | GgmlType::IQ1_M => {
            let t = grid_bsum(&dec.0, y.add(4)) as f32 * 0.125;
            (dec.0.d * rd_f32(ys, 0)).mul_add(t, sumf)
        }
        _ => {
            let d = rd_f16(x, 0) * rd_f32(ys, 0);
            d.mul_add(grid_bsum(&dec.0, y.add(4)) as f32, sumf)
        }
    }
}

/// An IQ1 super-block: per 32 elements the weights `8v ± 1` as magnitude and sign source,
/// and the scales `ls` of each 16-element half.
#[inline(always)]
unsafe fn decode_iq1(ty: GgmlType, x: &[u8]) -> Dec {
    let blk = decode_iq1_block(ty, x);
    let z = _mm256_setzero_si256();
    let mut d = Dec {
        mag: [z; 8],
        sgn: [z; 8],
        mul: [z; 8],
        d: blk.d,
    };
    let eight = _mm256_set1_epi8(8);
    for ib in 0..8 {
        let v = ld(blk.v.as_ptr().add(32 * ib) as *const u8);
        let off = |g: usize| {
            if blk.neg & (1 << g) != 0 {
                -1i64
            } else {
                0x0101_0101_0101_0101
            }
        };
        let g = 4 * ib;
        let s = _mm256_set_epi64x(off(g + 3), off(g + 2), off(g + 1), off(g));
        let w = _mm256_add_epi8(_mm256_sign_epi8(eight, v), s);
        (d.mag[ib], d.sgn[ib]) = (_mm256_abs_epi8(w), w);
        d.mul[ib] = _mm256_set_m128i(
            _mm_set1_epi16(blk.ls[g + 2] as i16),
            _mm_set1_epi16(blk.ls[g] as i16),
        );
    }
    d
}

#[inline(always)]
unsafe fn decode(ty: GgmlType, x: &[u8]) -> (Dec, [i32; 8]) {
    match ty {
        GgmlType::IQ1_S | GgmlType::IQ1_M => (decode_iq1(ty, x), [0; 8]),
        GgmlType::IQ4_XS => decode_iq4_xs(x),
        GgmlType::IQ4_NL => {
            let z = _mm256_setzero_si256();
            let (m, s) = mag_sgn(iq4_levels(x.as_ptr().add(2)));
            let mut d = Dec {
                mag: [z; 8],
                sgn: [z; 8],
                mul: [z; 8],
                d: 0.0,
            };
            (d.mag[0], d.sgn[0]) = (m, s);
            (d, [0; 8])
        }
        _ => (decode_grid(ty, x), [0; 8]),
    }
}

/// The GEMM loop of `iq_dot_scalar::gemm_blocks`, with the AVX2 decode and block dot.
#[inline(always)]
unsafe fn gemm_iq(ty: GgmlType, k: usize, w: &[u8], a: &[u8], n: usize, out: OutPtr) {
    let wb = ty.type_size();
    let ab = super::vec_dot_type(ty).type_size();
    let nb = k / ty.block_size();
    let arow = nb * ab;
    let c = match ty {
        GgmlType::IQ2_XXS | GgmlType::IQ2_XS | GgmlType::IQ2_S => 0.125,
        GgmlType::IQ3_XXS => 0.25,
        _ => 1.0f32,
    };
    for (r, wr) in w.chunks_exact(nb * wb).enumerate() {
        for t0 in (0..n).step_by(TC) {
            let tn = TC.min(n - t0);
            let mut acc = [0f32; TC];
            for (i, x) in wr.chunks_exact(wb).enumerate() {
                let dec = decode(ty, x);
                for (j, s) in acc[..tn].iter_mut().enumerate() {
                    let y = a.as_ptr().add((t0 + j) * arow + i * ab);
                    *s = step(ty, x, &dec, y, *s);
                }
            }
            for (j, &s) in acc[..tn].iter().enumerate() {
                out.write(r, t0 + j, c * s);
            }
        }
    }
}

macro_rules! entry {
    ($name:ident, $ty:expr) => {
        #[target_feature(enable = "avx2,fma,f16c")]
        pub(crate) unsafe fn $name(k: usize, w: &[u8], a: &[u8], n: usize, out: OutPtr) {
            gemm_iq($ty, k, w, a, n, out)
        }
    };
}

entry!(gemm_iq2_xxs_avx2, GgmlType::IQ2_XXS);
entry!(gemm_iq2_xs_avx2, GgmlType::IQ2_XS);
entry!(gemm_iq2_s_avx2, GgmlType::IQ2_S);
entry!(gemm_iq3_xxs_avx2, GgmlType::IQ3_XXS);
entry!(gemm_iq3_s_avx2, GgmlType::IQ3_S);
entry!(gemm_iq4_nl_avx2, GgmlType::IQ4_NL);
entry!(gemm_iq4_xs_avx2, GgmlType::IQ4_XS);
entry!(gemm_iq1_s_avx2, GgmlType::IQ1_S);
entry!(gemm_iq1_m_avx2, GgmlType::IQ1_M);
