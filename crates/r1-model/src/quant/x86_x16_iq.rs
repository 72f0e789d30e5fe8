//! AVX-512 VNNI kernels for IQ4_NL / IQ4_XS weights interleaved 16 rows at a time (layout
//! in `x16_iq`; they equal ggml's generic kernels, and so the native portable ones, bit for
//! bit).
//!
//! Row `r` of the group is lane `r`. Per 32 elements the 16 rows' nibbles are looked up once
//! (`vpshufb` on the 16 levels plus 128, so they are unsigned for `vpdpbusd`) and shared by up
//! to 16 tokens: eight `vpdpbusd`s against the broadcast activation slices, starting from
//! `-128 * Σ y`, give the 16 rows' exact sums, and one FMA per row and token folds them into
//! the float chain. Native kernels instead end every (row, token, block) with a horizontal sum.

// Parallel arrays of SIMD registers (per slice / per token) are indexed together.
#![allow(clippy::needless_range_loop)]

use core::arch::x86_64::*;

use super::gemm::OutPtr;
use super::iq_grids::KVALUES_IQ4NL;
use super::util::{rd_f16, rd_f32, rd_i16};
use super::x16::GROUP;
use super::x16_iq::{IQ4_NL_GB, IQ4_XS_GB};
use super::x86_x16::{prefetch_ahead, store_tile, token_tiles, PREFETCH_MAX_TOKENS};

/// Activation bytes kept hot per token chunk (about half of a 2 MiB L2).
const L2_BUDGET: usize = 1 << 20;
/// Q8_0 / Q8_K activation block bytes.
const Q8_0_AB: usize = 34;
const Q8_K_AB: usize = 292;

/// Per (token, activation block), token-major: the scale, and per 32 elements `-128 * Σ y`
/// (the levels' offset), one entry per IQ4_NL block or eight per IQ4_XS super-block.
struct Acts {
    dt: Vec<f32>,
    corr: Vec<i32>,
}

/// Every task of a matmul prepares these for all tokens, so the Q8_0 sums are vectorised
/// (inlined into the kernels' AVX-512 code).
#[inline(always)]
unsafe fn prepare(xs: bool, a: &[u8], blocks: usize) -> Acts {
    let mut acts = Acts {
        dt: Vec::with_capacity(blocks),
        corr: Vec::with_capacity(blocks * if xs { 8 } else { 1 }),
    };
    if xs {
        for y in a.chunks_exact(Q8_K_AB).take(blocks) {
            acts.dt.push(rd_f32(y, 0));
            for j in 0..8 {
                let s = rd_i16(y, 260 + 4 * j) as i32 + rd_i16(y, 262 + 4 * j) as i32;
                acts.corr.push(-128 * s);
            }
        }
    } else {
        let ones8 = _mm256_set1_epi8(1);
        let ones16 = _mm256_set1_epi16(1);
        for y in a.chunks_exact(Q8_0_AB).take(blocks) {
            acts.dt.push(rd_f16(y, 0));
            let q = _mm256_loadu_si256(y.as_ptr().add(2) as *const __m256i);
            let s = _mm256_madd_epi16(_mm256_maddubs_epi16(ones8, q), ones16);
            let s4 = _mm_add_epi32(_mm256_castsi256_si128(s), _mm256_extracti128_si256::<1>(s));
            let s2 = _mm_add_epi32(s4, _mm_shuffle_epi32::<0b01_00_11_10>(s4));
            let s1 = _mm_add_epi32(s2, _mm_shuffle_epi32::<0b10_11_00_01>(s2));
            acts.corr.push(-128 * _mm_cvtsi128_si32(s1));
        }
    }
    acts
}

/// The 16 levels plus 128 (unsigned bytes) in every 128-bit lane, for `vpshufb`.
#[inline(always)]
unsafe fn levels() -> __m512i {
    let t: [u8; 16] = core::array::from_fn(|i| (KVALUES_IQ4NL[i] as u8) ^ 0x80);
    _mm512_broadcast_i32x4(_mm_loadu_si128(t.as_ptr() as *const __m128i))
}

/// The 16 rows' 32 unsigned levels of one 256-byte chunk group, as eight 4-element slices.
#[inline(always)]
unsafe fn unpack(q: *const u8, lut: __m512i) -> [__m512i; 8] {
    let m4 = _mm512_set1_epi8(0x0F);
    let mut ws = [_mm512_setzero_si512(); 8];
    for p in 0..4 {
        let c = _mm512_loadu_si512(q.add(64 * p) as *const _);
        ws[p] = _mm512_shuffle_epi8(lut, _mm512_and_si512(c, m4));
        ws[p + 4] = _mm512_shuffle_epi8(lut, _mm512_and_si512(_mm512_srli_epi16::<4>(c), m4));
    }
    ws
}

/// The 16 rows' exact `Σ v * q` over 32 elements: `corr` plus the unsigned levels' dots.
#[inline(always)]
unsafe fn isum(ws: &[__m512i; 8], y: *const u8, corr: i32) -> __m512i {
    let mut s = _mm512_set1_epi32(corr);
    for p in 0..8 {
        let ys = _mm512_set1_epi32((y.add(4 * p) as *const i32).read_unaligned());
        s = _mm512_dpbusd_epi32(s, ws[p], ys);
    }
    s
}

#[inline(always)]
unsafe fn tile_nl<const NT: usize>(
    g: *const u8,
    nb: usize,
    a: *const u8,
    acts: &Acts,
    t0: usize,
    pf: bool,
) -> [__m512; NT] {
    let lut = levels();
    let mut acc = [_mm512_setzero_ps(); NT];
    for b in 0..nb {
        let gb = g.add(b * IQ4_NL_GB);
        if pf {
            prefetch_ahead(gb, IQ4_NL_GB);
        }
        let dx = _mm512_cvtph_ps(_mm256_loadu_si256(gb as *const __m256i));
        let ws = unpack(gb.add(32), lut);
        for t in 0..NT {
            let o = (t0 + t) * nb + b;
            let s = isum(&ws, a.add(o * Q8_0_AB + 2), *acts.corr.get_unchecked(o));
            let d = _mm512_mul_ps(dx, _mm512_set1_ps(*acts.dt.get_unchecked(o)));
            acc[t] = _mm512_fmadd_ps(d, _mm512_cvtepi32_ps(s), acc[t]);
        }
    }
    acc
}

#[inline(always)]
unsafe fn tile_xs<const NT: usize>(
    g: *const u8,
    nsb: usize,
    a: *const u8,
    acts: &Acts,
    t0: usize,
    pf: bool,
) -> [__m512; NT] {
    let lut = levels();
    let mut acc = [_mm512_setzero_ps(); NT];
    for b in 0..nsb {
        let gb = g.add(b * IQ4_XS_GB);
        if pf {
            prefetch_ahead(gb, 128);
        }
        let dx = _mm512_cvtph_ps(_mm256_loadu_si256(gb as *const __m256i));
        let sl = _mm512_loadu_si512(gb.add(32) as *const _);
        let sh = _mm512_cvtepu16_epi32(_mm256_loadu_si256(gb.add(96) as *const __m256i));
        for j in 0..8 {
            let q = gb.add(128 + 256 * j);
            if pf {
                prefetch_ahead(q, 256);
            }
            let lo = _mm512_and_si512(
                _mm512_srl_epi32(sl, _mm_cvtsi32_si128(4 * j as i32)),
                _mm512_set1_epi32(0xF),
            );
            let hi = _mm512_and_si512(
                _mm512_srl_epi32(sh, _mm_cvtsi32_si128(2 * j as i32)),
                _mm512_set1_epi32(3),
            );
            let ls = _mm512_sub_epi32(
                _mm512_or_si512(lo, _mm512_slli_epi32::<4>(hi)),
                _mm512_set1_epi32(32),
            );
            let lsf = _mm512_cvtepi32_ps(ls);
            let ws = unpack(q, lut);
            for t in 0..NT {
                let o = (t0 + t) * nsb + b;
                let y = a.add(o * Q8_K_AB + 4 + 32 * j);
                let s = isum(&ws, y, *acts.corr.get_unchecked(8 * o + j));
                // ggml: (d4d8 * ls) with d4d8 = dx * dy, then the fma
                let d4d8 = _mm512_mul_ps(dx, _mm512_set1_ps(*acts.dt.get_unchecked(o)));
                acc[t] = _mm512_fmadd_ps(_mm512_mul_ps(d4d8, lsf), _mm512_cvtepi32_ps(s), acc[t]);
            }
        }
    }
    acc
}

#[inline(always)]
unsafe fn gemm<const XS: bool>(k: usize, w: &[u8], a: &[u8], n: usize, out: OutPtr) {
    let (nb, gbb, ab) = if XS {
        (k / 256, IQ4_XS_GB, Q8_K_AB)
    } else {
        (k / 32, IQ4_NL_GB, Q8_0_AB)
    };
    let gbytes = nb * gbb;
    let groups = w.len() / gbytes;
    let acts = prepare(XS, a, n * nb);
    let chunk = ((L2_BUDGET / (nb * ab)).max(16) / 16) * 16;
    let pf = n <= PREFETCH_MAX_TOKENS;
    let ap = a.as_ptr();
    let mut c0 = 0;
    while c0 < n {
        let c1 = n.min(c0 + chunk);
        for g in 0..groups {
            let gp = w.as_ptr().add(g * gbytes);
            macro_rules! tile {
                ($t:expr, $nt:literal) => {{
                    let acc = if XS {
                        tile_xs::<$nt>(gp, nb, ap, &acts, $t, pf)
                    } else {
                        tile_nl::<$nt>(gp, nb, ap, &acts, $t, pf)
                    };
                    store_tile(out, g * GROUP, $t, &acc);
                }};
            }
            token_tiles!(c0, c1, 16, tile);
        }
        c0 = c1;
    }
}

#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
pub(crate) unsafe fn gemm_iq4_nl_vnni(k: usize, w: &[u8], a: &[u8], n: usize, out: OutPtr) {
    gemm::<false>(k, w, a, n, out)
}

#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
pub(crate) unsafe fn gemm_iq4_xs_vnni(k: usize, w: &[u8], a: &[u8], n: usize, out: OutPtr) {
    gemm::<true>(k, w, a, n, out)
}
