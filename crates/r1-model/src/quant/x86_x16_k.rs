//! AVX-512 VNNI kernels for Q4_K / Q6_K weights interleaved 16 rows at a time (layout and
//! accumulation order in `x16_k`; these reproduce the portable kernels bit for bit).
//!
//! Row `r` of the group is lane `r`. Per 32- (Q4_K) or 16-element (Q6_K) sub-block the
//! unsigned quants of all 16 rows are unpacked once and shared by up to 8 tokens: the
//! `vpdpbusd`s against broadcast activation slices give each row's exact sub-block sum,
//! `vpmulld` applies the rows' sub-block scales, and the super-block sum is scaled in f32.
//! Q6_K's `-32` offset starts each sub-block sum at `-32 * Σ y`; Q4_K's mins are a second
//! integer sum `Σ m_s ysum_s`, taken with `vpdpbusd` on `ysum = 128 h + l` (both bytes).

// Parallel arrays of SIMD registers (per slice / per token) are indexed together.
#![allow(clippy::needless_range_loop)]

use core::arch::x86_64::*;

use super::gemm::OutPtr;
use super::x16::GROUP;
use super::x16_k::{Q4_K_GB, Q6_K_GB};
use super::x86_x16::{prefetch_ahead, store_tile, token_tiles, PREFETCH_MAX_TOKENS};

/// Q8_K activation block bytes: f32 d, 256 i8, 16 i16 sums of 16.
pub(super) const AB: usize = 292;
/// Activation bytes kept hot per token chunk.
const L2_BUDGET: usize = 1 << 20;

/// Per (token, super-block), token-major: `dy`, and Q4_K's sub-block sums as bytes
/// `h[0..8]`, `l[0..8]` (`ysum = 128 h + l`) or Q6_K's 16 corrections `-32 * bsum`.
pub(super) struct Acts {
    pub(super) dt: Vec<f32>,
    pub(super) hl: Vec<[i8; 16]>,
    pub(super) corr: Vec<[i32; 16]>,
}

pub(super) fn prepare(q4: bool, a: &[u8], n: usize, nsb: usize) -> Acts {
    let mut acts = Acts {
        dt: Vec::with_capacity(n * nsb),
        hl: Vec::new(),
        corr: Vec::new(),
    };
    for blk in a.chunks_exact(AB).take(n * nsb) {
        acts.dt.push(super::util::rd_f32(blk, 0));
        let bs = |i: usize| super::util::rd_i16(blk, 260 + 2 * i) as i32;
        if q4 {
            let mut hl = [0i8; 16];
            for s in 0..8 {
                let ys = bs(2 * s) + bs(2 * s + 1);
                let h = ys.div_euclid(128);
                hl[s] = h as i8;
                hl[8 + s] = (ys - 128 * h) as i8;
            }
            acts.hl.push(hl);
        } else {
            acts.corr.push(core::array::from_fn(|j| -32 * bs(j)));
        }
    }
    acts
}

#[inline(always)]
unsafe fn bcast(p: *const u8) -> __m512i {
    _mm512_set1_epi32((p as *const i32).read_unaligned())
}

#[inline(always)]
unsafe fn tile_q4_k<const NT: usize>(
    g: *const u8,
    nsb: usize,
    a: *const u8,
    acts: &Acts,
    t0: usize,
    pf: bool,
) -> [__m512; NT] {
    let m4 = _mm512_set1_epi8(0x0F);
    let mut acc = [_mm512_setzero_ps(); NT];
    for b in 0..nsb {
        let gb = g.add(b * Q4_K_GB);
        if pf {
            prefetch_ahead(gb, 256);
        }
        let mut sum = [_mm512_setzero_si512(); NT];
        for sub in 0..8 {
            let base = gb.add(256 + 512 * (sub / 2));
            if pf && sub % 2 == 0 {
                prefetch_ahead(base, 512);
            }
            let mut ws = [_mm512_setzero_si512(); 8];
            for p in 0..8 {
                let c = _mm512_loadu_si512(base.add(64 * p) as *const _);
                ws[p] = if sub % 2 == 0 {
                    _mm512_and_si512(c, m4)
                } else {
                    _mm512_and_si512(_mm512_srli_epi16::<4>(c), m4)
                };
            }
            let scb = _mm512_loadu_si512(gb.add(64 + 64 * (sub / 4)) as *const _);
            let sc = _mm512_and_si512(
                _mm512_srlv_epi32(scb, _mm512_set1_epi32(8 * (sub % 4) as i32)),
                _mm512_set1_epi32(0x3F),
            );
            for t in 0..NT {
                let y = a.add(((t0 + t) * nsb + b) * AB + 4 + 32 * sub);
                let mut isum = _mm512_setzero_si512();
                for p in 0..8 {
                    isum = _mm512_dpbusd_epi32(isum, ws[p], bcast(y.add(4 * p)));
                }
                sum[t] = _mm512_add_epi32(sum[t], _mm512_mullo_epi32(isum, sc));
            }
        }
        // the mins' bytes: low nibbles plus the top two bits stored beside the scales
        let hi2 = _mm512_set1_epi8(0x30);
        let sa = _mm512_loadu_si512(gb.add(64) as *const _);
        let sb = _mm512_loadu_si512(gb.add(128) as *const _);
        let mn = _mm512_loadu_si512(gb.add(192) as *const _);
        let m03 = _mm512_or_si512(
            _mm512_and_si512(mn, m4),
            _mm512_and_si512(_mm512_srli_epi32::<2>(sa), hi2),
        );
        let m47 = _mm512_or_si512(
            _mm512_and_si512(_mm512_srli_epi16::<4>(mn), m4),
            _mm512_and_si512(_mm512_srli_epi32::<2>(sb), hi2),
        );
        let dx = _mm512_cvtph_ps(_mm256_loadu_si256(gb as *const __m256i));
        let dmin = _mm512_cvtph_ps(_mm256_loadu_si256(gb.add(32) as *const __m256i));
        for t in 0..NT {
            let o = (t0 + t) * nsb + b;
            let hl = acts.hl.get_unchecked(o).as_ptr() as *const u8;
            let z = _mm512_setzero_si512();
            let mh = _mm512_dpbusd_epi32(
                _mm512_dpbusd_epi32(z, m03, bcast(hl)),
                m47,
                bcast(hl.add(4)),
            );
            let ml = _mm512_dpbusd_epi32(
                _mm512_dpbusd_epi32(z, m03, bcast(hl.add(8))),
                m47,
                bcast(hl.add(12)),
            );
            let mins = _mm512_add_epi32(_mm512_slli_epi32::<7>(mh), ml);
            let dy = _mm512_set1_ps(*acts.dt.get_unchecked(o));
            acc[t] = _mm512_fmadd_ps(_mm512_mul_ps(dx, dy), _mm512_cvtepi32_ps(sum[t]), acc[t]);
            acc[t] = _mm512_fnmadd_ps(_mm512_mul_ps(dmin, dy), _mm512_cvtepi32_ps(mins), acc[t]);
        }
    }
    acc
}

#[inline(always)]
unsafe fn tile_q6_k<const NT: usize>(
    g: *const u8,
    nsb: usize,
    a: *const u8,
    acts: &Acts,
    t0: usize,
    pf: bool,
) -> [__m512; NT] {
    let m4 = _mm512_set1_epi8(0x0F);
    let hi2 = _mm512_set1_epi8(0x30);
    let mut acc = [_mm512_setzero_ps(); NT];
    for b in 0..nsb {
        let gb = g.add(b * Q6_K_GB);
        if pf {
            prefetch_ahead(gb, 288);
        }
        let mut sum = [_mm512_setzero_si512(); NT];
        for j in 0..16 {
            let base = gb.add(288 + 192 * j);
            if pf {
                prefetch_ahead(base, 192);
            }
            let n0 = _mm512_loadu_si512(base as *const _);
            let n1 = _mm512_loadu_si512(base.add(64) as *const _);
            let h = _mm512_loadu_si512(base.add(128) as *const _);
            let ws = [
                _mm512_or_si512(
                    _mm512_and_si512(n0, m4),
                    _mm512_and_si512(_mm512_slli_epi16::<4>(h), hi2),
                ),
                _mm512_or_si512(
                    _mm512_and_si512(_mm512_srli_epi16::<4>(n0), m4),
                    _mm512_and_si512(_mm512_slli_epi16::<2>(h), hi2),
                ),
                _mm512_or_si512(_mm512_and_si512(n1, m4), _mm512_and_si512(h, hi2)),
                _mm512_or_si512(
                    _mm512_and_si512(_mm512_srli_epi16::<4>(n1), m4),
                    _mm512_and_si512(_mm512_srli_epi16::<2>(h), hi2),
                ),
            ];
            let sc = _mm512_cvtepi8_epi32(_mm_loadu_si128(gb.add(32 + 16 * j) as *const _));
            for t in 0..NT {
                let o = (t0 + t) * nsb + b;
                let y = a.add(o * AB + 4 + 16 * j);
                let mut isum = _mm512_set1_epi32(acts.corr.get_unchecked(o)[j]);
                for i in 0..4 {
                    isum = _mm512_dpbusd_epi32(isum, ws[i], bcast(y.add(4 * i)));
                }
                sum[t] = _mm512_add_epi32(sum[t], _mm512_mullo_epi32(isum, sc));
            }
        }
        let dx = _mm512_cvtph_ps(_mm256_loadu_si256(gb as *const __m256i));
        for t in 0..NT {
            let dy = _mm512_set1_ps(*acts.dt.get_unchecked((t0 + t) * nsb + b));
            acc[t] = _mm512_fmadd_ps(_mm512_mul_ps(dx, dy), _mm512_cvtepi32_ps(sum[t]), acc[t]);
        }
    }
    acc
}

#[inline(always)]
unsafe fn gemm_k<const Q4: bool>(k: usize, w: &[u8], a: &[u8], n: usize, out: OutPtr) {
    let nsb = k / 256;
    let gbytes = nsb * if Q4 { Q4_K_GB } else { Q6_K_GB };
    let groups = w.len() / gbytes;
    let acts = prepare(Q4, a, n, nsb);
    let chunk = ((L2_BUDGET / (nsb * (AB + 64))).max(8) / 8) * 8;
    let pf = n <= PREFETCH_MAX_TOKENS;
    let ap = a.as_ptr();
    let mut c0 = 0;
    while c0 < n {
        let c1 = n.min(c0 + chunk);
        for g in 0..groups {
            let gp = w.as_ptr().add(g * gbytes);
            macro_rules! tile {
                ($t:expr, $nt:literal) => {{
                    let acc = if Q4 {
                        tile_q4_k::<$nt>(gp, nsb, ap, &acts, $t, pf)
                    } else {
                        tile_q6_k::<$nt>(gp, nsb, ap, &acts, $t, pf)
                    };
                    store_tile(out, g * GROUP, $t, &acc);
                }};
            }
            token_tiles!(c0, c1, 8, tile);
        }
        c0 = c1;
    }
}

#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
pub(crate) unsafe fn gemm_q4_k_vnni(k: usize, w: &[u8], a: &[u8], n: usize, out: OutPtr) {
    gemm_k::<true>(k, w, a, n, out)
}

#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
pub(crate) unsafe fn gemm_q6_k_vnni(k: usize, w: &[u8], a: &[u8], n: usize, out: OutPtr) {
    gemm_k::<false>(k, w, a, n, out)
}
