//! The AVX-512 VNNI GEMM loop shared by the x16 kernels of the grid i-quants other than
//! IQ2_XXS (IQ3_XXS, IQ3_S, IQ2_XS, IQ2_S, IQ1_S, IQ1_M; layouts in `x16_iq`), and the
//! decode helpers they share. Each type only says how to decode one 32-element sub-block of
//! a group-superblock ([`Decode`]); the loop keeps ggml's generic order, so every kernel
//! equals the native portable one bit for bit.
//!
//! Row `r` of the group is lane `r`. A sub-block is decoded once for the 16 rows (gathered
//! grid rows, sign masks) into eight 4-element slices of signed weights plus 128, and shared
//! by up to 16 tokens: per token, `vpdpbusd`s against the broadcast activation slices,
//! starting from `-128 * Σ y`, give each row's exact sum of the sub-block (or of each
//! 16-element half, where the type's multipliers change per 16 elements); multiplied by the
//! rows' integer multipliers they add up to the super-block's exact sum `B`, which one FMA
//! per row and token folds into the float chain: `acc = fma(dx*dy, B, acc)` (IQ1:
//! `fma(dx*dy, B/8, acc)`, `B = 8S + D`), then `c * acc` (`c` = 1/8, 1/4 or 1).

// Parallel arrays of SIMD registers (per slice / per token) are indexed together.
#![allow(clippy::needless_range_loop)]

use core::arch::x86_64::*;

use super::gemm::OutPtr;
use super::util::{rd_f32, rd_i16};
use super::x16::GROUP;
use super::x86_x16::{prefetch_ahead, store_tile, token_tiles, PREFETCH_MAX_TOKENS};

/// Q8_K activation block bytes.
const AB: usize = 292;
/// Activation bytes kept hot per token chunk.
const L2_BUDGET: usize = 1 << 20;

/// One grid type's x16 decode.
pub(super) trait Decode {
    /// Bytes of a group-superblock.
    const GB: usize;
    /// Whether the multipliers change per 16 elements (two sums per sub-block).
    const HALVES: bool;
    /// IQ1: the block sum is `8S + D`, folded as `B / 8`.
    const IQ1: bool;
    /// ggml's final factor (1: none).
    const C: f32;

    /// The 16 rows' block scales `dx`.
    #[inline(always)]
    unsafe fn dx(gb: *const u8) -> __m512 {
        _mm512_cvtph_ps(_mm256_loadu_si256(gb as *const __m256i))
    }

    /// Sub-block `j`'s 16 rows' signed weights plus 128 as eight 4-element slices, and the
    /// rows' integer multipliers of elements 0..16 and 16..32.
    unsafe fn decode(gb: *const u8, j: usize) -> ([__m512i; 8], __m512i, __m512i);
}

/// Per (token, super-block), token-major: `dy`, and `-128 * Σ y` per sub-block (`HALVES`:
/// per 16 elements, at `16o + 2j` and `16o + 2j + 1`; else at `8o + j`).
struct Acts {
    dt: Vec<f32>,
    corr: Vec<i32>,
}

fn prepare(a: &[u8], blocks: usize, halves: bool) -> Acts {
    let mut acts = Acts {
        dt: Vec::with_capacity(blocks),
        corr: Vec::with_capacity(16 * blocks),
    };
    for y in a.chunks_exact(AB).take(blocks) {
        acts.dt.push(rd_f32(y, 0));
        for j in 0..8 {
            let (lo, hi) = (rd_i16(y, 260 + 4 * j) as i32, rd_i16(y, 262 + 4 * j) as i32);
            if halves {
                acts.corr.push(-128 * lo);
                acts.corr.push(-128 * hi);
            } else {
                acts.corr.push(-128 * (lo + hi));
            }
        }
    }
    acts
}

#[inline(always)]
unsafe fn bcast(p: *const u8) -> __m512i {
    _mm512_set1_epi32((p as *const i32).read_unaligned())
}

/// `s` plus the dot products of slices `P0..P0+N` with the activation bytes at `y`.
#[inline(always)]
unsafe fn dots(mut s: __m512i, ws: &[__m512i; 8], y: *const u8, p0: usize, np: usize) -> __m512i {
    for p in p0..p0 + np {
        s = _mm512_dpbusd_epi32(s, ws[p], bcast(y.add(4 * p)));
    }
    s
}

#[inline(always)]
unsafe fn tile<D: Decode, const NT: usize>(
    g: *const u8,
    nsb: usize,
    a: *const u8,
    acts: &Acts,
    t0: usize,
    pf: bool,
) -> [__m512; NT] {
    let mut acc = [_mm512_setzero_ps(); NT];
    for b in 0..nsb {
        let gb = g.add(b * D::GB);
        if pf {
            prefetch_ahead(gb, D::GB);
        }
        let mut sum = [_mm512_setzero_si512(); NT];
        for j in 0..8 {
            let (ws, mlo, mhi) = D::decode(gb, j);
            for t in 0..NT {
                let o = (t0 + t) * nsb + b;
                let y = a.add(o * AB + 4 + 32 * j);
                let part = if D::HALVES {
                    let c = acts.corr.as_ptr().add(16 * o + 2 * j);
                    let lo = dots(_mm512_set1_epi32(*c), &ws, y, 0, 4);
                    let hi = dots(_mm512_set1_epi32(*c.add(1)), &ws, y, 4, 4);
                    _mm512_add_epi32(_mm512_mullo_epi32(lo, mlo), _mm512_mullo_epi32(hi, mhi))
                } else {
                    let c = *acts.corr.get_unchecked(8 * o + j);
                    _mm512_mullo_epi32(dots(_mm512_set1_epi32(c), &ws, y, 0, 8), mlo)
                };
                sum[t] = _mm512_add_epi32(sum[t], part);
            }
        }
        let dx = D::dx(gb);
        for t in 0..NT {
            let dy = _mm512_set1_ps(*acts.dt.get_unchecked((t0 + t) * nsb + b));
            let mut bs = _mm512_cvtepi32_ps(sum[t]);
            if D::IQ1 {
                // exact: B fits in 24 bits, and the product is a power-of-two scaling
                bs = _mm512_mul_ps(bs, _mm512_set1_ps(0.125));
            }
            acc[t] = _mm512_fmadd_ps(_mm512_mul_ps(dx, dy), bs, acc[t]);
        }
    }
    if D::C != 1.0 {
        let c = _mm512_set1_ps(D::C);
        for v in acc.iter_mut() {
            *v = _mm512_mul_ps(c, *v);
        }
    }
    acc
}

/// The GEMM of `D`'s interleaved weights (`w`: whole groups) with `n` Q8_K rows.
#[inline(always)]
pub(super) unsafe fn gemm<D: Decode>(k: usize, w: &[u8], a: &[u8], n: usize, out: OutPtr) {
    let nsb = k / 256;
    let gbytes = nsb * D::GB;
    let groups = w.len() / gbytes;
    let acts = prepare(a, n * nsb, D::HALVES);
    let chunk = ((L2_BUDGET / (nsb * (AB + 68))).max(16) / 16) * 16;
    let pf = n <= PREFETCH_MAX_TOKENS;
    let ap = a.as_ptr();
    let mut c0 = 0;
    while c0 < n {
        let c1 = n.min(c0 + chunk);
        for g in 0..groups {
            let gp = w.as_ptr().add(g * gbytes);
            macro_rules! run {
                ($t:expr, $nt:literal) => {{
                    let acc = tile::<D, $nt>(gp, nsb, ap, &acts, $t, pf);
                    store_tile(out, g * GROUP, $t, &acc);
                }};
            }
            token_tiles!(c0, c1, 16, run);
        }
        c0 = c1;
    }
}

// ---- decode helpers ----------------------------------------------------------------------

/// 16 bytes at `p` widened to the 16 lanes.
#[inline(always)]
pub(super) unsafe fn lanes_u8(p: *const u8) -> __m512i {
    _mm512_cvtepu8_epi32(_mm_loadu_si128(p as *const __m128i))
}

/// 16 u16 at `p` widened to the 16 lanes.
#[inline(always)]
pub(super) unsafe fn lanes_u16(p: *const u8) -> __m512i {
    _mm512_cvtepu16_epi32(_mm256_loadu_si256(p as *const __m256i))
}

/// 64 bytes at `p` (a lane word per row).
#[inline(always)]
pub(super) unsafe fn lane_words(p: *const u8) -> __m512i {
    _mm512_loadu_si512(p as *const _)
}

/// `2s + 1` per lane.
#[inline(always)]
pub(super) unsafe fn odd(s: __m512i) -> __m512i {
    _mm512_add_epi32(_mm512_slli_epi32::<1>(s), _mm512_set1_epi32(1))
}

/// ggml's `ksigns_iq2xs`: the 7 stored sign bits of each lane (bits 0..7) with their parity
/// as bit 7.
#[inline(always)]
pub(super) unsafe fn ksigns(s7: __m512i) -> __m512i {
    let mut p = _mm512_xor_si512(s7, _mm512_srli_epi32::<4>(s7));
    p = _mm512_xor_si512(p, _mm512_srli_epi32::<2>(p));
    p = _mm512_xor_si512(p, _mm512_srli_epi32::<1>(p));
    _mm512_or_si512(
        s7,
        _mm512_slli_epi32::<7>(_mm512_and_si512(p, _mm512_set1_epi32(1))),
    )
}

/// Byte masks of the sign byte `l` of each lane (bit `e` negates element `e` of 8): for the
/// slice of elements 0..4 and the one of 4..8.
#[inline(always)]
pub(super) unsafe fn sign_masks(signs: __m512i, l: usize) -> (__mmask64, __mmask64) {
    // byte l of each lane copied to all four bytes of it
    let (b0, b1, b2, b3) = (0, 0x0404_0404, 0x0808_0808, 0x0C0C_0C0C);
    let spread = _mm512_add_epi8(
        _mm512_set_epi32(
            b3, b2, b1, b0, b3, b2, b1, b0, b3, b2, b1, b0, b3, b2, b1, b0,
        ),
        _mm512_set1_epi8(l as i8),
    );
    let sb = _mm512_shuffle_epi8(signs, spread);
    (
        _mm512_test_epi8_mask(sb, _mm512_set1_epi32(0x0804_0201)),
        _mm512_test_epi8_mask(sb, _mm512_set1_epi32(0x8040_2010_u32 as i32)),
    )
}

/// Magnitudes `mag` with the bytes of `neg` negated, plus 128.
#[inline(always)]
pub(super) unsafe fn signed(mag: __m512i, neg: __mmask64) -> __m512i {
    let off = _mm512_set1_epi8(-128);
    _mm512_mask_sub_epi8(_mm512_add_epi8(mag, off), neg, off, mag)
}

/// The u32 grid rows (4 elements) of the 16 lanes' indices.
#[inline(always)]
pub(super) unsafe fn gather32(idx: __m512i, grid: &[u32]) -> __m512i {
    _mm512_i32gather_epi32::<4>(idx, grid.as_ptr() as *const i32)
}

/// The u64 grid rows (8 elements) of the 16 lanes' indices, as the slices of elements 0..4
/// and 4..8.
#[inline(always)]
pub(super) unsafe fn gather64(idx: __m512i, grid: &[u64]) -> (__m512i, __m512i) {
    let even = _mm512_set_epi32(30, 28, 26, 24, 22, 20, 18, 16, 14, 12, 10, 8, 6, 4, 2, 0);
    let odd = _mm512_add_epi32(even, _mm512_set1_epi32(1));
    let base = grid.as_ptr() as *const i64;
    let a = _mm512_i32gather_epi64::<8>(_mm512_castsi512_si256(idx), base);
    let b = _mm512_i32gather_epi64::<8>(_mm512_extracti64x4_epi64::<1>(idx), base);
    (
        _mm512_permutex2var_epi32(a, even, b),
        _mm512_permutex2var_epi32(a, odd, b),
    )
}
