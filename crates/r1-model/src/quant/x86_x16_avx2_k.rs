//! AVX2 and AVX-VNNI kernels for Q4_K / Q6_K weights interleaved 16 rows at a time (layout
//! and order in `x16_k`; bit for bit equal to the portable and the AVX-512 kernels).
//!
//! Each group runs as two 8-row halves (row `r` of a half in lane `r`), and a tile of up to
//! 4 tokens shares each unpacked 4-element weight slice. Only the super-block's exact
//! integer sums `S` (and Q4_K's `M`) matter, so each ISA forms them its own way:
//!
//! * Plain AVX2: `vpmaddubsw` products summed in 16 bits, then one `vpmaddwd` against the
//!   rows' sub-block scale in both 16-bit halves of the lane multiplies and widens at once.
//!   Q4_K sums a 32-element sub-block's 8 slices in 16 bits (at most `16 * 15 * 127`);
//!   Q6_K two slices (`4 * 63 * 127`), and its `-32` offset becomes one correction per
//!   super-block, `-32 Σ_j sc_j bsum_j`, by `vpmaddwd` of scale pairs and sum pairs.
//! * AVX-VNNI: `vpdpbusd` per slice and `vpmulld` by the scales, as the AVX-512 kernels.
//!
//! Q4_K's mins' sum `M = Σ m_s ysum_s` takes `ysum = 128 h + l` as bytes (`x86_x16_k`).

// Parallel arrays of SIMD registers (per slice / per token) are indexed together.
#![allow(clippy::needless_range_loop)]

use core::arch::x86_64::*;

use super::gemm::OutPtr;
use super::x16::GROUP;
use super::x16_k::{Q4_K_GB, Q6_K_GB};
use super::x86_x16::{prefetch_ahead, token_tiles, PREFETCH_MAX_TOKENS};
use super::x86_x16_avx2::{bcast, dpbusd, store_tile8};
use super::x86_x16_k::{prepare, Acts, AB};

/// Activation bytes kept hot per token chunk.
const L2_BUDGET: usize = 1 << 20;
/// Bytes of a group's blocks that decode runs through for one half and then the other.
const BSTEP_BYTES: usize = 16 << 10;

/// Lane `r` = `(x_r, x_r)` as 16-bit halves, from the low 16 bits of each 32-bit lane.
#[inline(always)]
unsafe fn dup16(x: __m256i) -> __m256i {
    _mm256_or_si256(x, _mm256_slli_epi32::<16>(x))
}

// the tile's whole state, passed in registers
#[allow(clippy::too_many_arguments)]
#[inline(always)]
unsafe fn tile_q4_k<const NT: usize, const VNNI: bool>(
    g: *const u8,
    nsb: usize,
    a: *const u8,
    acts: &Acts,
    t0: usize,
    half: usize,
    pf: bool,
    (b0, b1): (usize, usize),
    mut acc: [__m256; NT],
) -> [__m256; NT] {
    let m4 = _mm256_set1_epi8(0x0F);
    let m6 = _mm256_set1_epi32(0x3F);
    let ones = _mm256_set1_epi16(1);
    let hoff = 32 * half;
    for b in b0..b1 {
        let gb = g.add(b * Q4_K_GB);
        if pf {
            prefetch_ahead(gb, Q4_K_GB);
        }
        let mut sum = [_mm256_setzero_si256(); NT];
        for sub in 0..8 {
            let base = gb.add(256 + 512 * (sub / 2) + hoff);
            let scb = _mm256_loadu_si256(gb.add(64 + 64 * (sub / 4) + hoff) as *const __m256i);
            let sh = _mm_cvtsi32_si128(8 * (sub % 4) as i32);
            let sc = _mm256_and_si256(_mm256_srl_epi32(scb, sh), m6);
            let mut s = [_mm256_setzero_si256(); NT];
            for p in 0..8 {
                let c = _mm256_loadu_si256(base.add(64 * p) as *const __m256i);
                let wp = if sub % 2 == 0 {
                    _mm256_and_si256(c, m4)
                } else {
                    _mm256_and_si256(_mm256_srli_epi16::<4>(c), m4)
                };
                for t in 0..NT {
                    let y = bcast(a.add(((t0 + t) * nsb + b) * AB + 4 + 32 * sub + 4 * p));
                    s[t] = if VNNI {
                        _mm256_dpbusd_avx_epi32(s[t], wp, y)
                    } else {
                        // 8 slices of 16-bit pair sums: at most 16 * 15 * 127 = 30480
                        _mm256_add_epi16(s[t], _mm256_maddubs_epi16(wp, y))
                    };
                }
            }
            for t in 0..NT {
                let p = if VNNI {
                    _mm256_mullo_epi32(s[t], sc)
                } else {
                    _mm256_madd_epi16(s[t], dup16(sc))
                };
                sum[t] = _mm256_add_epi32(sum[t], p);
            }
        }
        // the mins' bytes: low nibbles plus the top two bits stored beside the scales
        let hi2 = _mm256_set1_epi8(0x30);
        let sa = _mm256_loadu_si256(gb.add(64 + hoff) as *const __m256i);
        let sb = _mm256_loadu_si256(gb.add(128 + hoff) as *const __m256i);
        let mn = _mm256_loadu_si256(gb.add(192 + hoff) as *const __m256i);
        let m03 = _mm256_or_si256(
            _mm256_and_si256(mn, m4),
            _mm256_and_si256(_mm256_srli_epi32::<2>(sa), hi2),
        );
        let m47 = _mm256_or_si256(
            _mm256_and_si256(_mm256_srli_epi16::<4>(mn), m4),
            _mm256_and_si256(_mm256_srli_epi32::<2>(sb), hi2),
        );
        let dx = _mm256_cvtph_ps(_mm_loadu_si128(gb.add(16 * half) as *const __m128i));
        let dmin = _mm256_cvtph_ps(_mm_loadu_si128(gb.add(32 + 16 * half) as *const __m128i));
        for t in 0..NT {
            let o = (t0 + t) * nsb + b;
            let hl = acts.hl.get_unchecked(o).as_ptr() as *const u8;
            let (mh, ml) = if VNNI {
                let z = _mm256_setzero_si256();
                let mh = dpbusd::<true>(dpbusd::<true>(z, m03, bcast(hl)), m47, bcast(hl.add(4)));
                let ml = dpbusd::<true>(
                    dpbusd::<true>(z, m03, bcast(hl.add(8))),
                    m47,
                    bcast(hl.add(12)),
                );
                (mh, ml)
            } else {
                // |h| <= 32, l <= 127: four products of at most 63 * 127 fit 16 bits
                let pair = |i: usize| {
                    let p0 = _mm256_maddubs_epi16(m03, bcast(hl.add(i)));
                    let p1 = _mm256_maddubs_epi16(m47, bcast(hl.add(i + 4)));
                    _mm256_madd_epi16(_mm256_add_epi16(p0, p1), ones)
                };
                (pair(0), pair(8))
            };
            let mins = _mm256_add_epi32(_mm256_slli_epi32::<7>(mh), ml);
            let dy = _mm256_set1_ps(*acts.dt.get_unchecked(o));
            acc[t] = _mm256_fmadd_ps(_mm256_mul_ps(dx, dy), _mm256_cvtepi32_ps(sum[t]), acc[t]);
            acc[t] = _mm256_fnmadd_ps(_mm256_mul_ps(dmin, dy), _mm256_cvtepi32_ps(mins), acc[t]);
        }
    }
    acc
}

// the tile's whole state, passed in registers
#[allow(clippy::too_many_arguments)]
#[inline(always)]
unsafe fn tile_q6_k<const NT: usize, const VNNI: bool>(
    g: *const u8,
    nsb: usize,
    a: *const u8,
    acts: &Acts,
    t0: usize,
    half: usize,
    pf: bool,
    (b0, b1): (usize, usize),
    mut acc: [__m256; NT],
) -> [__m256; NT] {
    let m4 = _mm256_set1_epi8(0x0F);
    let hi2 = _mm256_set1_epi8(0x30);
    let hoff = 32 * half;
    for b in b0..b1 {
        let gb = g.add(b * Q6_K_GB);
        if pf {
            prefetch_ahead(gb, 288);
        }
        let mut sum = [_mm256_setzero_si256(); NT];
        for j in 0..16 {
            let base = gb.add(288 + 192 * j);
            if pf {
                prefetch_ahead(base, 192);
            }
            let n0 = _mm256_loadu_si256(base.add(hoff) as *const __m256i);
            let n1 = _mm256_loadu_si256(base.add(64 + hoff) as *const __m256i);
            let h = _mm256_loadu_si256(base.add(128 + hoff) as *const __m256i);
            let ws = [
                _mm256_or_si256(
                    _mm256_and_si256(n0, m4),
                    _mm256_and_si256(_mm256_slli_epi16::<4>(h), hi2),
                ),
                _mm256_or_si256(
                    _mm256_and_si256(_mm256_srli_epi16::<4>(n0), m4),
                    _mm256_and_si256(_mm256_slli_epi16::<2>(h), hi2),
                ),
                _mm256_or_si256(_mm256_and_si256(n1, m4), _mm256_and_si256(h, hi2)),
                _mm256_or_si256(
                    _mm256_and_si256(_mm256_srli_epi16::<4>(n1), m4),
                    _mm256_and_si256(_mm256_srli_epi16::<2>(h), hi2),
                ),
            ];
            let sc8 = _mm_loadl_epi64(gb.add(32 + 16 * j + 8 * half) as *const __m128i);
            let sc = if VNNI {
                _mm256_cvtepi8_epi32(sc8)
            } else {
                _mm256_cvtepi8_epi16(_mm_unpacklo_epi8(sc8, sc8))
            };
            for t in 0..NT {
                let o = (t0 + t) * nsb + b;
                let y = a.add(o * AB + 4 + 16 * j);
                let p = if VNNI {
                    let mut isum = _mm256_set1_epi32(acts.corr.get_unchecked(o)[j]);
                    for i in 0..4 {
                        isum = _mm256_dpbusd_avx_epi32(isum, ws[i], bcast(y.add(4 * i)));
                    }
                    _mm256_mullo_epi32(isum, sc)
                } else {
                    // two slices per 16-bit sum: at most 4 * 63 * 127 = 32004
                    let s01 = _mm256_add_epi16(
                        _mm256_maddubs_epi16(ws[0], bcast(y)),
                        _mm256_maddubs_epi16(ws[1], bcast(y.add(4))),
                    );
                    let s23 = _mm256_add_epi16(
                        _mm256_maddubs_epi16(ws[2], bcast(y.add(8))),
                        _mm256_maddubs_epi16(ws[3], bcast(y.add(12))),
                    );
                    _mm256_add_epi32(_mm256_madd_epi16(s01, sc), _mm256_madd_epi16(s23, sc))
                };
                sum[t] = _mm256_add_epi32(sum[t], p);
            }
        }
        if !VNNI {
            // the offset: -32 Σ_j sc_j bsum_j, pairs of sub-blocks per `vpmaddwd`
            let mut scp = [_mm256_setzero_si256(); 8];
            for i in 0..8 {
                let lo = _mm_loadl_epi64(gb.add(32 + 32 * i + 8 * half) as *const __m128i);
                let hi = _mm_loadl_epi64(gb.add(48 + 32 * i + 8 * half) as *const __m128i);
                scp[i] = _mm256_cvtepi8_epi16(_mm_unpacklo_epi8(lo, hi));
            }
            for t in 0..NT {
                let bs = a.add(((t0 + t) * nsb + b) * AB + 260);
                let mut c = _mm256_madd_epi16(scp[0], bcast(bs));
                for i in 1..8 {
                    c = _mm256_add_epi32(c, _mm256_madd_epi16(scp[i], bcast(bs.add(4 * i))));
                }
                sum[t] = _mm256_sub_epi32(sum[t], _mm256_slli_epi32::<5>(c));
            }
        }
        let dx = _mm256_cvtph_ps(_mm_loadu_si128(gb.add(16 * half) as *const __m128i));
        for t in 0..NT {
            let dy = _mm256_set1_ps(*acts.dt.get_unchecked((t0 + t) * nsb + b));
            acc[t] = _mm256_fmadd_ps(_mm256_mul_ps(dx, dy), _mm256_cvtepi32_ps(sum[t]), acc[t]);
        }
    }
    acc
}

#[inline(always)]
unsafe fn gemm_k<const Q4: bool, const VNNI: bool>(
    k: usize,
    w: &[u8],
    a: &[u8],
    n: usize,
    out: OutPtr,
) {
    let nsb = k / 256;
    let gbytes = nsb * if Q4 { Q4_K_GB } else { Q6_K_GB };
    let groups = w.len() / gbytes;
    let acts = prepare(Q4, a, n, nsb);
    let chunk = ((L2_BUDGET / (nsb * (AB + 64))).max(8) / 8) * 8;
    let pf = n <= PREFETCH_MAX_TOKENS;
    // few tokens: both halves per 16 KiB of blocks, so the group streams from memory once
    let bstep = if pf {
        (BSTEP_BYTES * nsb / gbytes).max(1)
    } else {
        nsb
    };
    let ap = a.as_ptr();
    let mut c0 = 0;
    while c0 < n {
        let c1 = n.min(c0 + chunk);
        for g in 0..groups {
            let gp = w.as_ptr().add(g * gbytes);
            macro_rules! tile {
                ($t:expr, $nt:literal) => {{
                    let mut acc = [[_mm256_setzero_ps(); $nt]; 2];
                    let mut b0 = 0;
                    while b0 < nsb {
                        let b1 = nsb.min(b0 + bstep);
                        for half in 0..2 {
                            // the second half finds the blocks' lines in cache
                            let pf = pf && half == 0;
                            let a0 = acc[half];
                            acc[half] = if Q4 {
                                tile_q4_k::<$nt, VNNI>(
                                    gp,
                                    nsb,
                                    ap,
                                    &acts,
                                    $t,
                                    half,
                                    pf,
                                    (b0, b1),
                                    a0,
                                )
                            } else {
                                tile_q6_k::<$nt, VNNI>(
                                    gp,
                                    nsb,
                                    ap,
                                    &acts,
                                    $t,
                                    half,
                                    pf,
                                    (b0, b1),
                                    a0,
                                )
                            };
                        }
                        b0 = b1;
                    }
                    for half in 0..2 {
                        store_tile8(out, g * GROUP + 8 * half, $t, &acc[half]);
                    }
                }};
            }
            token_tiles!(c0, c1, 4, tile);
        }
        c0 = c1;
    }
}

#[target_feature(enable = "avx2,fma,f16c")]
pub(crate) unsafe fn gemm_q4_k_avx2(k: usize, w: &[u8], a: &[u8], n: usize, out: OutPtr) {
    gemm_k::<true, false>(k, w, a, n, out)
}

#[target_feature(enable = "avx2,fma,f16c")]
pub(crate) unsafe fn gemm_q6_k_avx2(k: usize, w: &[u8], a: &[u8], n: usize, out: OutPtr) {
    gemm_k::<false, false>(k, w, a, n, out)
}

#[target_feature(enable = "avx2,fma,f16c,avxvnni")]
pub(crate) unsafe fn gemm_q4_k_avxvnni(k: usize, w: &[u8], a: &[u8], n: usize, out: OutPtr) {
    gemm_k::<true, true>(k, w, a, n, out)
}

#[target_feature(enable = "avx2,fma,f16c,avxvnni")]
pub(crate) unsafe fn gemm_q6_k_avxvnni(k: usize, w: &[u8], a: &[u8], n: usize, out: OutPtr) {
    gemm_k::<false, true>(k, w, a, n, out)
}
