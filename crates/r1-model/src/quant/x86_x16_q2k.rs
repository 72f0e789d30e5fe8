//! AVX-512 VNNI kernel for Q2_K weights interleaved 16 rows at a time (layout and order in
//! `x16_q2k`; bit for bit equal to its portable kernel).
//!
//! Row `r` of the group is lane `r`. A 2-bit quant times its 4-bit sub-block scale is at
//! most 45, so each group-superblock's quants are multiplied by their scales once (a 16-bit
//! multiply, no carry between the bytes) and shared by up to 8 tokens: the super-block sum
//! `S` is then 64 plain `vpdpbusd`s per token, with no per-sub-block scaling. The mins'
//! sum `M` takes the activation's 16-element sums split as `128 h + l` (both bytes).

// Parallel arrays of SIMD registers (per slice / per token) are indexed together.
#![allow(clippy::needless_range_loop)]

use core::arch::x86_64::*;

use super::gemm::OutPtr;
use super::util::{rd_f32, rd_i16};
use super::x16::GROUP;
use super::x16_q2k::{Q2_K_GB, QS_OFF};
use super::x86_x16::{prefetch_ahead, store_tile, token_tiles, PREFETCH_MAX_TOKENS};

/// Q8_K activation block bytes.
const AB: usize = 292;
/// Activation bytes kept hot per token chunk.
const L2_BUDGET: usize = 1 << 20;

/// Per (token, super-block), token-major: `dy`, and the 16 sub-block sums as bytes
/// `h[0..16]`, `l[0..16]` with `bsum = 128 h + l`.
struct Acts {
    dt: Vec<f32>,
    hl: Vec<[i8; 32]>,
}

fn prepare(a: &[u8], blocks: usize) -> Acts {
    let mut acts = Acts {
        dt: Vec::with_capacity(blocks),
        hl: Vec::with_capacity(blocks),
    };
    for y in a.chunks_exact(AB).take(blocks) {
        acts.dt.push(rd_f32(y, 0));
        let mut hl = [0i8; 32];
        for j in 0..16 {
            let s = rd_i16(y, 260 + 2 * j) as i32;
            let h = s.div_euclid(128);
            hl[j] = h as i8;
            hl[16 + j] = (s - 128 * h) as i8;
        }
        acts.hl.push(hl);
    }
    acts
}

#[inline(always)]
unsafe fn bcast(p: *const u8) -> __m512i {
    _mm512_set1_epi32((p as *const i32).read_unaligned())
}

/// Sub-block `s`'s scale (low nibble of its scale byte) of every row, in both 16-bit halves
/// of the row's lane.
#[inline(always)]
unsafe fn scale16(scc: &[__m512i; 4], s: usize) -> __m512i {
    let v = _mm512_and_si512(
        _mm512_srl_epi32(scc[s / 4], _mm_cvtsi32_si128(8 * (s % 4) as i32)),
        _mm512_set1_epi32(0xF),
    );
    _mm512_or_si512(v, _mm512_slli_epi32::<16>(v))
}

#[inline(always)]
unsafe fn tile<const NT: usize>(
    g: *const u8,
    nsb: usize,
    a: *const u8,
    acts: &Acts,
    t0: usize,
    pf: bool,
) -> [__m512; NT] {
    let m2 = _mm512_set1_epi8(3);
    let m4 = _mm512_set1_epi8(0xF);
    let mut acc = [_mm512_setzero_ps(); NT];
    for b in 0..nsb {
        let gb = g.add(b * Q2_K_GB);
        if pf {
            prefetch_ahead(gb, Q2_K_GB);
        }
        let scc: [__m512i; 4] =
            core::array::from_fn(|c| _mm512_loadu_si512(gb.add(64 + 64 * c) as *const _));
        let mut sum = [_mm512_setzero_si512(); NT];
        for h in 0..2 {
            for j in 0..4 {
                let s0 = 8 * h + 2 * j;
                let (sc0, sc1) = (scale16(&scc, s0), scale16(&scc, s0 + 1));
                let sh = _mm_cvtsi32_si128(2 * j as i32);
                let ws: [__m512i; 8] = core::array::from_fn(|p| {
                    let c = _mm512_loadu_si512(gb.add(QS_OFF + 64 * (8 * h + p)) as *const _);
                    let q = _mm512_and_si512(_mm512_srl_epi16(c, sh), m2);
                    _mm512_mullo_epi16(q, if p < 4 { sc0 } else { sc1 })
                });
                for t in 0..NT {
                    let o = (t0 + t) * nsb + b;
                    let y = a.add(o * AB + 4 + 128 * h + 32 * j);
                    for p in 0..8 {
                        sum[t] = _mm512_dpbusd_epi32(sum[t], ws[p], bcast(y.add(4 * p)));
                    }
                }
            }
        }
        let mn: [__m512i; 4] =
            core::array::from_fn(|c| _mm512_and_si512(_mm512_srli_epi16::<4>(scc[c]), m4));
        let dx = _mm512_cvtph_ps(_mm256_loadu_si256(gb as *const __m256i));
        let dmin = _mm512_cvtph_ps(_mm256_loadu_si256(gb.add(32) as *const __m256i));
        for t in 0..NT {
            let o = (t0 + t) * nsb + b;
            let hl = acts.hl.get_unchecked(o).as_ptr() as *const u8;
            let (mut mh, mut ml) = (_mm512_setzero_si512(), _mm512_setzero_si512());
            for c in 0..4 {
                mh = _mm512_dpbusd_epi32(mh, mn[c], bcast(hl.add(4 * c)));
                ml = _mm512_dpbusd_epi32(ml, mn[c], bcast(hl.add(16 + 4 * c)));
            }
            let mins = _mm512_add_epi32(_mm512_slli_epi32::<7>(mh), ml);
            let dy = _mm512_set1_ps(*acts.dt.get_unchecked(o));
            acc[t] = _mm512_fmadd_ps(_mm512_mul_ps(dx, dy), _mm512_cvtepi32_ps(sum[t]), acc[t]);
            acc[t] = _mm512_fnmadd_ps(_mm512_mul_ps(dmin, dy), _mm512_cvtepi32_ps(mins), acc[t]);
        }
    }
    acc
}

#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
pub(crate) unsafe fn gemm_q2_k_vnni(k: usize, w: &[u8], a: &[u8], n: usize, out: OutPtr) {
    let nsb = k / 256;
    let gbytes = nsb * Q2_K_GB;
    let groups = w.len() / gbytes;
    let acts = prepare(a, n * nsb);
    let chunk = ((L2_BUDGET / (nsb * (AB + 36))).max(8) / 8) * 8;
    let pf = n <= PREFETCH_MAX_TOKENS;
    let ap = a.as_ptr();
    let mut c0 = 0;
    while c0 < n {
        let c1 = n.min(c0 + chunk);
        for g in 0..groups {
            let gp = w.as_ptr().add(g * gbytes);
            macro_rules! run {
                ($t:expr, $nt:literal) => {{
                    let acc = tile::<$nt>(gp, nsb, ap, &acts, $t, pf);
                    store_tile(out, g * GROUP, $t, &acc);
                }};
            }
            token_tiles!(c0, c1, 8, run);
        }
        c0 = c1;
    }
}
