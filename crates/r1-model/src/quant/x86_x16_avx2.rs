//! AVX2 kernels for Q5_0, Q8_0, Q4_0 and Q4_1 weights interleaved 16 rows at a time (layout and order in
//! `x16`; bit for bit equal to the portable and the AVX-512 kernels).
//!
//! Each group runs as two 8-row halves, row `r` of a half in lane `r` of a 256-bit register;
//! a tile of up to 4 tokens shares one load (and unpacking) of the half's weights. A block's
//! integer dot product per row is exact, whatever instructions sum it, and it is scaled
//! once, in the same float operations as on every other ISA.
//!
//! * Plain AVX2 (`vpmaddubsw` + `vpmaddwd` for `vpdpbusd`): Q5_0's unsigned 5-bit weights
//!   against the signed activations, summed in 16 bits over four slices (at most
//!   `4 * 2 * 31 * 127`, no saturation), offset by `-16 * Σ y`. Q8_0's full-range bytes
//!   would saturate `vpmaddubsw` as stored (unsigned, plus 128): they take ggml's sign trick
//!   instead, `|q|` times `y` with `q`'s sign (`|q| ≤ 128`, a pair at most 32512).
//!   Q4_0 / Q4_1 (`x16_b4`) are Q5_0 without the fifth bits, all 8 slices in 16 bits.
//! * AVX-VNNI (`vpdpbusd` on ymm: Alder Lake and later, Zen 5): the stored unsigned weights
//!   straight into `vpdpbusd`, from the exact `-bias * Σ y`, as the AVX-512 kernels do.

// Parallel arrays of SIMD registers (per slice / per token) are indexed together.
#![allow(clippy::needless_range_loop)]

use core::arch::x86_64::*;

use super::gemm::OutPtr;
use super::x16::GROUP;
use super::x86_b32::fifth_bits;
use super::x86_x16::{a_bytes, bias, gb_bytes, prefetch_ahead, prepare, qs_off, store};
use super::x86_x16::{token_tiles, Acts, PREFETCH_MAX_TOKENS, T_Q4_0, T_Q4_1, T_Q5_0, T_Q8_0};

/// Activation bytes kept hot per token chunk (about half of a 2 MiB L2).
const L2_BUDGET: usize = 1 << 20;
/// Bytes of a group's blocks that decode runs through for one half and then the other.
const BSTEP_BYTES: usize = 16 << 10;

#[inline(always)]
pub(super) unsafe fn bcast(p: *const u8) -> __m256i {
    _mm256_set1_epi32((p as *const i32).read_unaligned())
}

/// `acc + Σ` of the four `u8 * i8` products of each lane (`vpdpbusd`, or its AVX2 form,
/// exact when a pair's sum fits 16 bits).
#[inline(always)]
pub(super) unsafe fn dpbusd<const VNNI: bool>(acc: __m256i, u: __m256i, s: __m256i) -> __m256i {
    if VNNI {
        _mm256_dpbusd_avx_epi32(acc, u, s)
    } else {
        let p = _mm256_maddubs_epi16(u, s);
        _mm256_add_epi32(acc, _mm256_madd_epi16(p, _mm256_set1_epi16(1)))
    }
}

/// Stores a tile of 8-row results: `acc[j]` holds rows `row0..row0 + 8` of token `t0 + j`.
#[inline(always)]
pub(super) unsafe fn store_tile8(out: OutPtr, row0: usize, t0: usize, acc: &[__m256]) {
    for (j, v) in acc.iter().enumerate() {
        let mut l = [0f32; 8];
        _mm256_storeu_ps(l.as_mut_ptr(), *v);
        store(out, row0, t0 + j, &l);
    }
}

/// Q5_0 / Q4_0 / Q4_1: one half's eight unsigned 4-element weight slices of a group-block.
#[inline(always)]
unsafe fn unpack_nibbles<const TY: u8>(gb: *const u8, half: usize) -> [__m256i; 8] {
    let m4 = _mm256_set1_epi8(0x0F);
    let mut ws = [_mm256_setzero_si256(); 8];
    for p in 0..4 {
        let c = _mm256_loadu_si256(gb.add(qs_off(TY) + 64 * p + 32 * half) as *const __m256i);
        ws[p] = _mm256_and_si256(c, m4);
        ws[p + 4] = _mm256_and_si256(_mm256_srli_epi16::<4>(c), m4);
    }
    if TY != T_Q5_0 {
        return ws;
    }
    for s in 0..8 {
        ws[s] = _mm256_or_si256(ws[s], fifth_bits(gb.add(32 + 8 * s + 4 * half)));
    }
    ws
}

// the tile's whole state, passed in registers
#[allow(clippy::too_many_arguments)]
#[inline(always)]
unsafe fn tile_nib<const NT: usize, const VNNI: bool, const TY: u8>(
    g: *const u8,
    nb: usize,
    a: *const u8,
    acts: &Acts,
    t0: usize,
    half: usize,
    pf: bool,
    (b0, b1): (usize, usize),
    mut acc: [__m256; NT],
) -> [__m256; NT] {
    let ones = _mm256_set1_epi16(1);
    let (gbytes, ab) = (gb_bytes(TY), a_bytes(TY));
    for b in b0..b1 {
        let gb = g.add(b * gbytes);
        if pf {
            prefetch_ahead(gb, gbytes);
        }
        let dx = _mm256_cvtph_ps(_mm_loadu_si128(gb.add(16 * half) as *const __m128i));
        let mx = _mm256_cvtph_ps(_mm_loadu_si128(gb.add(32 + 16 * half) as *const __m128i));
        let ws = unpack_nibbles::<TY>(gb, half);
        for t in 0..NT {
            let o = (t0 + t) * nb + b;
            let y = a.add(o * ab + ab - 32);
            let mut isum = _mm256_set1_epi32(*acts.corr.get_unchecked(o));
            if VNNI {
                for s in 0..8 {
                    isum = _mm256_dpbusd_avx_epi32(isum, ws[s], bcast(y.add(4 * s)));
                }
            } else {
                // 16-bit sums of 8 products of at most 31 * 127 (Q5_0), or of 16 of 15 * 127
                let per = if TY == T_Q5_0 { 4 } else { 8 };
                for q in 0..8 / per {
                    let mut s16 = _mm256_maddubs_epi16(ws[per * q], bcast(y.add(4 * per * q)));
                    for s in per * q + 1..per * q + per {
                        let p = _mm256_maddubs_epi16(ws[s], bcast(y.add(4 * s)));
                        s16 = _mm256_add_epi16(s16, p);
                    }
                    isum = _mm256_add_epi32(isum, _mm256_madd_epi16(s16, ones));
                }
            }
            let d = _mm256_mul_ps(dx, _mm256_set1_ps(*acts.dt.get_unchecked(o)));
            acc[t] = _mm256_fmadd_ps(d, _mm256_cvtepi32_ps(isum), acc[t]);
            if TY == T_Q4_1 {
                let sy = _mm256_set1_ps(*acts.sy.get_unchecked(o));
                acc[t] = _mm256_fmadd_ps(mx, sy, acc[t]);
            }
        }
    }
    acc
}

// the tile's whole state, passed in registers
#[allow(clippy::too_many_arguments)]
#[inline(always)]
unsafe fn tile_q8_0<const NT: usize, const VNNI: bool>(
    g: *const u8,
    nb: usize,
    a: *const u8,
    acts: &Acts,
    t0: usize,
    half: usize,
    pf: bool,
    (b0, b1): (usize, usize),
    mut acc: [__m256; NT],
) -> [__m256; NT] {
    let x80 = _mm256_set1_epi8(0x80u8 as i8);
    for b in b0..b1 {
        let gb = g.add(b * gb_bytes(T_Q8_0));
        if pf {
            prefetch_ahead(gb, gb_bytes(T_Q8_0));
        }
        let dx = _mm256_cvtph_ps(_mm_loadu_si128(gb.add(16 * half) as *const __m128i));
        let mut isum = [_mm256_setzero_si256(); NT];
        for t in 0..NT {
            isum[t] = _mm256_set1_epi32(*acts.corr.get_unchecked((t0 + t) * nb + b));
        }
        for s in 0..8 {
            let u = _mm256_loadu_si256(gb.add(32 + 64 * s + 32 * half) as *const __m256i);
            if VNNI {
                for t in 0..NT {
                    let y = a.add(((t0 + t) * nb + b) * 34 + 2 + 4 * s);
                    isum[t] = _mm256_dpbusd_avx_epi32(isum[t], u, bcast(y));
                }
            } else {
                let q = _mm256_xor_si256(u, x80);
                let qa = _mm256_abs_epi8(q);
                for t in 0..NT {
                    let y = a.add(((t0 + t) * nb + b) * 34 + 2 + 4 * s);
                    isum[t] = dpbusd::<false>(isum[t], qa, _mm256_sign_epi8(bcast(y), q));
                }
            }
        }
        for t in 0..NT {
            let dt = *acts.dt.get_unchecked((t0 + t) * nb + b);
            let d = _mm256_mul_ps(dx, _mm256_set1_ps(dt));
            acc[t] = _mm256_fmadd_ps(d, _mm256_cvtepi32_ps(isum[t]), acc[t]);
        }
    }
    acc
}

/// `TY`: one of the `T_*` block types; `VNNI`: AVX-VNNI.
#[inline(always)]
unsafe fn gemm_x16<const TY: u8, const VNNI: bool>(
    k: usize,
    w: &[u8],
    a: &[u8],
    n: usize,
    out: OutPtr,
) {
    let nb = k / 32;
    let gbytes = nb * gb_bytes(TY);
    let groups = w.len() / gbytes;
    // plain AVX2 Q8_0 multiplies the signed weights: no offset to correct
    let bias = if TY == T_Q8_0 && !VNNI { 0 } else { bias(TY) };
    let acts = prepare(a, n, nb, bias, a_bytes(TY));
    let chunk = ((L2_BUDGET / (nb * 42)).max(16) / 16) * 16;
    let pf = n <= PREFETCH_MAX_TOKENS;
    // few tokens: both halves per 16 KiB of blocks, so the group streams from memory once
    let bstep = if pf {
        (BSTEP_BYTES * nb / gbytes).max(1)
    } else {
        nb
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
                    while b0 < nb {
                        let b1 = nb.min(b0 + bstep);
                        for half in 0..2 {
                            // the second half finds the blocks' lines in cache
                            let pf = pf && half == 0;
                            let a0 = acc[half];
                            let (bs, h) = ((b0, b1), half);
                            acc[half] = if TY == T_Q8_0 {
                                tile_q8_0::<$nt, VNNI>(gp, nb, ap, &acts, $t, h, pf, bs, a0)
                            } else {
                                tile_nib::<$nt, VNNI, TY>(gp, nb, ap, &acts, $t, h, pf, bs, a0)
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
pub(crate) unsafe fn gemm_q5_0_avx2(k: usize, w: &[u8], a: &[u8], n: usize, out: OutPtr) {
    gemm_x16::<T_Q5_0, false>(k, w, a, n, out)
}

#[target_feature(enable = "avx2,fma,f16c,avxvnni")]
pub(crate) unsafe fn gemm_q5_0_avxvnni(k: usize, w: &[u8], a: &[u8], n: usize, out: OutPtr) {
    gemm_x16::<T_Q5_0, true>(k, w, a, n, out)
}

#[target_feature(enable = "avx2,fma,f16c")]
pub(crate) unsafe fn gemm_q8_0_avx2(k: usize, w: &[u8], a: &[u8], n: usize, out: OutPtr) {
    gemm_x16::<T_Q8_0, false>(k, w, a, n, out)
}

#[target_feature(enable = "avx2,fma,f16c,avxvnni")]
pub(crate) unsafe fn gemm_q8_0_avxvnni(k: usize, w: &[u8], a: &[u8], n: usize, out: OutPtr) {
    gemm_x16::<T_Q8_0, true>(k, w, a, n, out)
}

#[target_feature(enable = "avx2,fma,f16c")]
pub(crate) unsafe fn gemm_q4_0_avx2(k: usize, w: &[u8], a: &[u8], n: usize, out: OutPtr) {
    gemm_x16::<T_Q4_0, false>(k, w, a, n, out)
}

#[target_feature(enable = "avx2,fma,f16c,avxvnni")]
pub(crate) unsafe fn gemm_q4_0_avxvnni(k: usize, w: &[u8], a: &[u8], n: usize, out: OutPtr) {
    gemm_x16::<T_Q4_0, true>(k, w, a, n, out)
}

#[target_feature(enable = "avx2,fma,f16c")]
pub(crate) unsafe fn gemm_q4_1_avx2(k: usize, w: &[u8], a: &[u8], n: usize, out: OutPtr) {
    gemm_x16::<T_Q4_1, false>(k, w, a, n, out)
}

#[target_feature(enable = "avx2,fma,f16c,avxvnni")]
pub(crate) unsafe fn gemm_q4_1_avxvnni(k: usize, w: &[u8], a: &[u8], n: usize, out: OutPtr) {
    gemm_x16::<T_Q4_1, true>(k, w, a, n, out)
}
