//! AVX-512 VNNI kernels for Q5_0, Q8_0, Q4_0 and Q4_1 weights interleaved 16 rows at a time
//! (see `x16` and `x16_b4` for the layouts and the accumulation orders, which these
//! reproduce bit for bit).
//!
//! * AVX-512 VNNI: one 512-bit register per 4-element slice holds all 16 rows (row `r` in
//!   lane `r`); per block and token, eight `vpdpbusd`s of the unsigned 5-bit weights against
//!   the broadcast signed activation slices, starting from the exact `-16 * Σ y`, give the
//!   16 rows' integer dot products. Up to 16 tokens share one unpacking of the weights.
//! * Q8_0: the same without unpacking; the weights are stored plus 128 and the integer sum
//!   starts from `-128 * Σ y`.
//! * Q4_0 / Q4_1 (`x16_b4`): Q5_0 without the fifth bits, from `-8 * Σ y` / 0; Q4_1 adds
//!   `mx * sy` per block.
//!
//! The AVX2 and AVX-VNNI kernels are in `x86_x16_avx2`; the helpers here are shared.

// Parallel arrays of SIMD registers (per slice / per token) are indexed together.
#![allow(clippy::needless_range_loop)]

use core::arch::x86_64::*;

use super::gemm::OutPtr;
use super::x16::{GROUP, Q5_0_GB, Q8_0_GB};
use super::x16_b4::{Q4_0_GB, Q4_1_GB};

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

/// The 32-element block types of the x16 kernels here and in `x86_x16_avx2` (a const
/// parameter of the shared code).
pub(super) const T_Q5_0: u8 = 0;
pub(super) const T_Q8_0: u8 = 1;
pub(super) const T_Q4_0: u8 = 2;
pub(super) const T_Q4_1: u8 = 3;

/// Bytes of a group-block of type `ty`.
pub(super) const fn gb_bytes(ty: u8) -> usize {
    match ty {
        T_Q5_0 => Q5_0_GB,
        T_Q8_0 => Q8_0_GB,
        T_Q4_0 => Q4_0_GB,
        _ => Q4_1_GB,
    }
}

/// Bytes of the activation block (Q8_0, or Q8_1 for Q4_1).
pub(super) const fn a_bytes(ty: u8) -> usize {
    if ty == T_Q4_1 {
        36
    } else {
        34
    }
}

/// Offset of the nibble chunks in a group-block of Q5_0, Q4_0, Q4_1.
pub(super) const fn qs_off(ty: u8) -> usize {
    match ty {
        T_Q5_0 => 96,
        T_Q4_0 => 32,
        _ => 64,
    }
}

/// The offset of the unsigned weights `vpdpbusd` takes (`q - bias` is the value).
pub(super) const fn bias(ty: u8) -> i32 {
    match ty {
        T_Q5_0 => 16,
        T_Q8_0 => 128,
        T_Q4_0 => 8,
        _ => 0,
    }
}

/// Per (token, block), token-major: the activation scale, `-bias * Σ y` (the weights'
/// offset: 16 for Q5_0, 128 for Q8_0, 8 for Q4_0), and Q8_1's f16 `s` (for Q4_1).
pub(super) struct Acts {
    pub(super) dt: Vec<f32>,
    pub(super) corr: Vec<i32>,
    pub(super) sy: Vec<f32>,
}

#[inline(always)]
unsafe fn f16_at(p: *const u8) -> f32 {
    let h = (p as *const u16).read_unaligned();
    _mm_cvtss_f32(_mm_cvtph_ps(_mm_cvtsi32_si128(h as i32)))
}

/// Every task of a matmul prepares these for all tokens, so it is vectorised (AVX2).
/// `ab`: the activation block's bytes (34: Q8_0, 36: Q8_1).
#[inline(always)]
pub(super) unsafe fn prepare(a: &[u8], n: usize, nb: usize, bias: i32, ab: usize) -> Acts {
    let mut acts = Acts {
        dt: Vec::with_capacity(n * nb),
        corr: Vec::with_capacity(n * nb),
        sy: Vec::new(),
    };
    let ones8 = _mm256_set1_epi8(1);
    let ones16 = _mm256_set1_epi16(1);
    for blk in a.chunks_exact(ab).take(n * nb) {
        acts.dt.push(f16_at(blk.as_ptr()));
        if ab == 36 {
            acts.sy.push(f16_at(blk.as_ptr().add(2)));
        }
        let y = _mm256_loadu_si256(blk.as_ptr().add(ab - 32) as *const __m256i);
        let s = _mm256_madd_epi16(_mm256_maddubs_epi16(ones8, y), ones16);
        let s4 = _mm_add_epi32(_mm256_castsi256_si128(s), _mm256_extracti128_si256::<1>(s));
        let s2 = _mm_add_epi32(s4, _mm_shuffle_epi32::<0b01_00_11_10>(s4));
        let s1 = _mm_add_epi32(s2, _mm_shuffle_epi32::<0b10_11_00_01>(s2));
        acts.corr.push(-bias * _mm_cvtsi128_si32(s1));
    }
    acts
}

/// A Q5_0 / Q4_0 / Q4_1 group-block's 32 unsigned weights per row, as eight 4-element
/// slices.
#[inline(always)]
unsafe fn unpack_nibbles<const TY: u8>(gb: *const u8) -> [__m512i; 8] {
    let m4 = _mm512_set1_epi8(0x0F);
    let x10 = _mm512_set1_epi8(0x10);
    let mut ws = [_mm512_setzero_si512(); 8];
    for p in 0..4 {
        let c = _mm512_loadu_si512(gb.add(qs_off(TY) + 64 * p) as *const _);
        ws[p] = _mm512_and_si512(c, m4);
        ws[p + 4] = _mm512_and_si512(_mm512_srli_epi16::<4>(c), m4);
    }
    if TY != T_Q5_0 {
        return ws;
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

/// `TY`: one of the `T_*` block types.
#[inline(always)]
unsafe fn tile_vnni<const NT: usize, const TY: u8>(
    g: *const u8,
    nb: usize,
    a: *const u8,
    acts: &Acts,
    t0: usize,
    prefetch: bool,
) -> [__m512; NT] {
    let gbytes = gb_bytes(TY);
    let ab = a_bytes(TY);
    let mut acc = [_mm512_setzero_ps(); NT];
    for b in 0..nb {
        let gb = g.add(b * gbytes);
        if prefetch {
            prefetch_ahead(gb, gbytes);
        }
        let dx = _mm512_cvtph_ps(_mm256_loadu_si256(gb as *const __m256i));
        let mx = _mm512_cvtph_ps(_mm256_loadu_si256(gb.add(32) as *const __m256i));
        let ws = if TY == T_Q8_0 {
            unpack_q8_0(gb)
        } else {
            unpack_nibbles::<TY>(gb)
        };
        for t in 0..NT {
            let o = (t0 + t) * nb + b;
            let y = a.add(o * ab + ab - 32);
            let mut isum = _mm512_set1_epi32(*acts.corr.get_unchecked(o));
            for s in 0..8 {
                let ys = _mm512_set1_epi32((y.add(4 * s) as *const i32).read_unaligned());
                isum = _mm512_dpbusd_epi32(isum, ws[s], ys);
            }
            let d = _mm512_mul_ps(dx, _mm512_set1_ps(*acts.dt.get_unchecked(o)));
            acc[t] = _mm512_fmadd_ps(d, _mm512_cvtepi32_ps(isum), acc[t]);
            if TY == T_Q4_1 {
                let sy = _mm512_set1_ps(*acts.sy.get_unchecked(o));
                acc[t] = _mm512_fmadd_ps(mx, sy, acc[t]);
            }
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

/// `TY`: one of the `T_*` block types.
#[inline(always)]
unsafe fn gemm_x16<const TY: u8>(k: usize, w: &[u8], a: &[u8], n: usize, out: OutPtr) {
    let nb = k / 32;
    let gbytes = nb * gb_bytes(TY);
    let groups = w.len() / gbytes;
    let acts = prepare(a, n, nb, bias(TY), a_bytes(TY));
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
                    let acc = tile_vnni::<$nt, TY>(gp, nb, ap, &acts, $t, prefetch);
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
    gemm_x16::<T_Q5_0>(k, w, a, n, out)
}

#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
pub(crate) unsafe fn gemm_q8_0_vnni(k: usize, w: &[u8], a: &[u8], n: usize, out: OutPtr) {
    gemm_x16::<T_Q8_0>(k, w, a, n, out)
}

#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
pub(crate) unsafe fn gemm_q4_0_vnni(k: usize, w: &[u8], a: &[u8], n: usize, out: OutPtr) {
    gemm_x16::<T_Q4_0>(k, w, a, n, out)
}

#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
pub(crate) unsafe fn gemm_q4_1_vnni(k: usize, w: &[u8], a: &[u8], n: usize, out: OutPtr) {
    gemm_x16::<T_Q4_1>(k, w, a, n, out)
}
