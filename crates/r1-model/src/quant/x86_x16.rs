//! AVX-512 VNNI kernels for Q5_0 and Q8_0 weights interleaved 16 rows at a time (see `x16` for the layout
//! and the accumulation order, which these reproduce bit for bit).
//!
//! * AVX-512 VNNI: one 512-bit register per 4-element slice holds all 16 rows (row `r` in
//!   lane `r`); per block and token, eight `vpdpbusd`s of the unsigned 5-bit weights against
//!   the broadcast signed activation slices, starting from the exact `-16 * Σ y`, give the
//!   16 rows' integer dot products. Up to 16 tokens share one unpacking of the weights.
//! * Q8_0: the same without unpacking; the weights are stored plus 128 and the integer sum
//!   starts from `-128 * Σ y`.
//!
//! The AVX2 and AVX-VNNI kernels are in `x86_x16_avx2`; the helpers here are shared.

// Parallel arrays of SIMD registers (per slice / per token) are indexed together.
#![allow(clippy::needless_range_loop)]

use core::arch::x86_64::*;

use super::gemm::OutPtr;
use super::x16::{GROUP, Q5_0_GB, Q8_0_GB};

/// Activation bytes kept hot per token chunk (about half of a 2 MiB L2).
const L2_BUDGET: usize = 1 << 20;
/// Decode prefetch distance in the group stream (the stream is contiguous, but its blocks
/// are consumed faster than the hardware prefetcher ramps up).
const PF_BYTES: usize = 4096;
/// Up to this many tokens (decode batches) a group's weights are used too briefly for the
/// hardware prefetcher to keep up with the DRAM stream: software prefetch gives Q5_0 1.4x
/// at 8 tokens (`gemv_dram` bench: 6.5 -> 9.3 GB/s per thread) and batched decode 1.15x.
/// Prefill reuses each group long enough without it.
pub(super) const PREFETCH_MAX_TOKENS: usize = 16;

/// Per (token, block), token-major: the activation scale and `-bias * Σ y` (the weights'
/// offset: 16 for Q5_0, 128 for Q8_0).
pub(super) struct Acts {
    pub(super) dt: Vec<f32>,
    pub(super) corr: Vec<i32>,
}

/// Every task of a matmul prepares these for all tokens, so it is vectorised (AVX2).
#[inline(always)]
pub(super) unsafe fn prepare(a: &[u8], n: usize, nb: usize, bias: i32) -> Acts {
    let mut acts = Acts {
        dt: Vec::with_capacity(n * nb),
        corr: Vec::with_capacity(n * nb),
    };
    let ones8 = _mm256_set1_epi8(1);
    let ones16 = _mm256_set1_epi16(1);
    for blk in a.chunks_exact(34).take(n * nb) {
        let h = (blk.as_ptr() as *const u16).read_unaligned();
        acts.dt
            .push(_mm_cvtss_f32(_mm_cvtph_ps(_mm_cvtsi32_si128(h as i32))));
        let y = _mm256_loadu_si256(blk.as_ptr().add(2) as *const __m256i);
        let s = _mm256_madd_epi16(_mm256_maddubs_epi16(ones8, y), ones16);
        let s4 = _mm_add_epi32(_mm256_castsi256_si128(s), _mm256_extracti128_si256::<1>(s));
        let s2 = _mm_add_epi32(s4, _mm_shuffle_epi32::<0b01_00_11_10>(s4));
        let s1 = _mm_add_epi32(s2, _mm_shuffle_epi32::<0b10_11_00_01>(s2));
        acts.corr.push(-bias * _mm_cvtsi128_si32(s1));
    }
    acts
}

/// A Q5_0 group-block's 32 unsigned weights per row, as eight 4-element slices.
#[inline(always)]
unsafe fn unpack_q5_0(gb: *const u8) -> [__m512i; 8] {
    let m4 = _mm512_set1_epi8(0x0F);
    let x10 = _mm512_set1_epi8(0x10);
    let mut ws = [_mm512_setzero_si512(); 8];
    for p in 0..4 {
        let c = _mm512_loadu_si512(gb.add(96 + 64 * p) as *const _);
        ws[p] = _mm512_and_si512(c, m4);
        ws[p + 4] = _mm512_and_si512(_mm512_srli_epi16::<4>(c), m4);
    }
    for s in 0..8 {
        let m = (gb.add(32 + 8 * s) as *const u64).read_unaligned();
        ws[s] = _mm512_mask_add_epi8(ws[s], m, ws[s], x10);
    }
    ws
}

/// A Q8_0 group-block's weights (already unsigned and sliced in the layout).
#[inline(always)]
unsafe fn unpack_q8_0(gb: *const u8) -> [__m512i; 8] {
    let mut ws = [_mm512_setzero_si512(); 8];
    for (s, w) in ws.iter_mut().enumerate() {
        *w = _mm512_loadu_si512(gb.add(32 + 64 * s) as *const _);
    }
    ws
}

/// `Q8`: Q8_0 weights, else Q5_0.
#[inline(always)]
unsafe fn tile_vnni<const NT: usize, const Q8: bool>(
    g: *const u8,
    nb: usize,
    a: *const u8,
    acts: &Acts,
    t0: usize,
    prefetch: bool,
) -> [__m512; NT] {
    let gbytes = if Q8 { Q8_0_GB } else { Q5_0_GB };
    let mut acc = [_mm512_setzero_ps(); NT];
    for b in 0..nb {
        let gb = g.add(b * gbytes);
        if prefetch {
            prefetch_ahead(gb, gbytes);
        }
        let dx = _mm512_cvtph_ps(_mm256_loadu_si256(gb as *const __m256i));
        let ws = if Q8 { unpack_q8_0(gb) } else { unpack_q5_0(gb) };
        for t in 0..NT {
            let o = (t0 + t) * nb + b;
            let y = a.add(o * 34 + 2);
            let mut isum = _mm512_set1_epi32(*acts.corr.get_unchecked(o));
            for s in 0..8 {
                let ys = _mm512_set1_epi32((y.add(4 * s) as *const i32).read_unaligned());
                isum = _mm512_dpbusd_epi32(isum, ws[s], ys);
            }
            let d = _mm512_mul_ps(dx, _mm512_set1_ps(*acts.dt.get_unchecked(o)));
            acc[t] = _mm512_fmadd_ps(d, _mm512_cvtepi32_ps(isum), acc[t]);
        }
    }
    acc
}

/// Prefetches the `len` bytes `PF_BYTES` ahead of `p` in a group stream.
#[inline(always)]
pub(super) unsafe fn prefetch_ahead(p: *const u8, len: usize) {
    for l in (0..len).step_by(64) {
        _mm_prefetch::<_MM_HINT_T0>(p.wrapping_add(PF_BYTES + l) as *const i8);
    }
}

/// Stores a tile's results: `acc[j]` holds the 16 rows from `row0` of token `t0 + j`.
#[inline(always)]
pub(super) unsafe fn store_tile(out: OutPtr, row0: usize, t0: usize, acc: &[__m512]) {
    for (j, v) in acc.iter().enumerate() {
        let mut l = [0f32; 16];
        _mm512_storeu_ps(l.as_mut_ptr(), *v);
        store(out, row0, t0 + j, &l);
    }
}

/// Stores `L` consecutive rows from `row0` for token `t` (`v`: the lanes as f32).
#[inline(always)]
pub(super) unsafe fn store<const L: usize>(out: OutPtr, row0: usize, t: usize, v: &[f32; L]) {
    for (i, &x) in v.iter().enumerate() {
        out.write(row0 + i, t, x);
    }
}

/// Calls `tile(t0, NT)` over `c0..c1` in tiles of `big`, then 8 / 4 / 2 / 1 tokens.
macro_rules! token_tiles {
    ($c0:expr, $c1:expr, $big:literal, $tile:ident) => {{
        let mut t = $c0;
        while t + $big <= $c1 {
            $tile!(t, $big);
            t += $big;
        }
        if $big > 8 && t + 8 <= $c1 {
            $tile!(t, 8);
            t += 8;
        }
        if $big > 4 && t + 4 <= $c1 {
            $tile!(t, 4);
            t += 4;
        }
        if t + 2 <= $c1 {
            $tile!(t, 2);
            t += 2;
        }
        if t < $c1 {
            $tile!(t, 1);
        }
    }};
}
pub(super) use token_tiles;

/// `Q8`: Q8_0 weights, else Q5_0.
#[inline(always)]
unsafe fn gemm_x16<const Q8: bool>(k: usize, w: &[u8], a: &[u8], n: usize, out: OutPtr) {
    let nb = k / 32;
    let gbytes = nb * if Q8 { Q8_0_GB } else { Q5_0_GB };
    let groups = w.len() / gbytes;
    let acts = prepare(a, n, nb, if Q8 { 128 } else { 16 });
    let chunk = ((L2_BUDGET / (nb * 42)).max(16) / 16) * 16;
    let prefetch = n <= PREFETCH_MAX_TOKENS;
    let ap = a.as_ptr();
    let mut c0 = 0;
    while c0 < n {
        let c1 = n.min(c0 + chunk);
        for g in 0..groups {
            let gp = w.as_ptr().add(g * gbytes);
            let row0 = g * GROUP;
            macro_rules! vnni {
                ($t:expr, $nt:literal) => {{
                    let acc = tile_vnni::<$nt, Q8>(gp, nb, ap, &acts, $t, prefetch);
                    store_tile(out, row0, $t, &acc);
                }};
            }
            token_tiles!(c0, c1, 16, vnni);
        }
        c0 = c1;
    }
}

#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
pub(crate) unsafe fn gemm_q5_0_vnni(k: usize, w: &[u8], a: &[u8], n: usize, out: OutPtr) {
    gemm_x16::<false>(k, w, a, n, out)
}

#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
pub(crate) unsafe fn gemm_q8_0_vnni(k: usize, w: &[u8], a: &[u8], n: usize, out: OutPtr) {
    gemm_x16::<true>(k, w, a, n, out)
}
