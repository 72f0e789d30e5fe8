//! AVX2 kernel for Q4_0 / Q4_1 in ggml's order with two weight rows per register: row `r`'s
//! quants in the low 128 bits and row `r + 1`'s in the high, as the AVX-512 kernel pairs rows
//! in 512 bits. A block's 16 nibble bytes give elements 0..16 (low nibbles) and 16..32 (high
//! nibbles), so one register of low nibbles against the token's quants 0..16 (broadcast to
//! both halves) yields ggml's lanes 0-3 of both rows, and the high nibbles lanes 4-7. Each
//! row's 8-lane accumulator lives in two registers (lanes 0-3 in one, 4-7 in the other), so
//! every lane still sees `acc = fma(dx*dy, lane, acc)` block by block and the final
//! `hsum8` adds the same values in the same order: the results are the other kernels' bits.
//!
//! Against one row per register this halves the unpacking and the scale handling per row
//! (one header pair converted together, no per-token lane permute) and frees registers:
//! SmolLM2's Q4_1 ffn_down (576x1536, one thread, in cache) went from 31.9 to 27.3 µs at 1
//! token and from 1279 to 1138 µs at 64 (`cargo bench -p r1-model --bench quant`). The
//! kernel also prefetches (the one-row AVX2 kernel did not): the same GEMV streamed from
//! DRAM rose from about 8 to 13-14 GB/s (`--bench gemv_dram`, one thread, 2026-12-06).
//! Signed Q4_0 needs no sign trick here: lane values are exact integers, so
//! `Σ q·y − 8·Σ y` (the sums prepared once per call, as the AVX-512 kernel's `corr`)
//! equals `Σ (q − 8)·y` exactly.

// Parallel arrays of SIMD registers (per token / per lane) are indexed together.
#![allow(clippy::needless_range_loop)]

use core::arch::x86_64::*;

use super::{hsum8_ps, pf_distance, B32Kernel, B32};

/// The AVX2 row-pair kernel (nibble types only, see `gemm_b32`).
pub(super) struct Pair;

/// `P` row pairs (`MR = 2P` rows), `NT` (<= 4) tokens.
#[inline(always)]
pub(super) unsafe fn run_pair<F: B32, const P: usize, const MR: usize, const NT: usize>(
    k: &B32Kernel<F>,
    rows: [usize; MR],
    t0: usize,
) -> [[f32; NT]; MR] {
    debug_assert!(MR == 2 * P && NT <= 4 && F::QH == 0 && F::TY != super::GgmlType::Q8_0);
    let w: [*const u8; MR] = core::array::from_fn(|r| k.w.add(rows[r] * k.wrow));
    let m4 = _mm256_set1_epi8(0x0F);
    let ones = _mm256_set1_epi16(1);
    // per pair and token: lanes 0-3 / 4-7 of both rows
    let mut acc_lo = [[_mm256_setzero_ps(); NT]; P];
    let mut acc_hi = [[_mm256_setzero_ps(); NT]; P];
    // per pair (the min types' `summs`): lane 4 * (row in pair) + token
    let mut summs = [_mm256_setzero_ps(); P];
    // The tile's rows are consecutive in memory, so the next tile's `MR` rows follow them:
    // stream those in while this one runs (see `prefetch_ahead`), two lines per block
    // (`MR * WB` <= 128 bytes).
    let pf = pf_distance() != 0;
    let next = w[0].wrapping_add(MR * k.wrow);
    for b in 0..k.nb {
        if pf {
            let p = next.wrapping_add(b * MR * F::WB);
            _mm_prefetch::<_MM_HINT_T0>(p as *const i8);
            _mm_prefetch::<_MM_HINT_T0>(p.wrapping_add(64) as *const i8);
        }
        // [s of tokens t0..t0+4 | the same]
        let sy = if F::MIN {
            _mm256_broadcast_ps(&*(k.acts.s.as_ptr().add(b * k.acts.npad + t0) as *const __m128))
        } else {
            _mm256_setzero_ps()
        };
        for p in 0..P {
            let (x0, x1) = (w[2 * p].add(b * F::WB), w[2 * p + 1].add(b * F::WB));
            let q0 = _mm_loadu_si128(x0.add(F::QS) as *const __m128i);
            let q1 = _mm_loadu_si128(x1.add(F::QS) as *const __m128i);
            let q = _mm256_set_m128i(q1, q0);
            let lo = _mm256_and_si256(q, m4);
            let hi = _mm256_and_si256(_mm256_srli_epi16::<4>(q), m4);
            // [d0, m0, d0, m0 | d1, m1, d1, m1] (the `m` of Q4_0 is quant bytes, unused)
            let h0 = _mm_cvtsi32_si128((x0 as *const i32).read_unaligned());
            let h1 = _mm_cvtsi32_si128((x1 as *const i32).read_unaligned());
            let h = _mm_shuffle_epi32::<0x50>(_mm_unpacklo_epi32(h0, h1));
            let dm = _mm256_cvtph_ps(h);
            let dx = _mm256_moveldup_ps(dm);
            if F::MIN {
                summs[p] = _mm256_fmadd_ps(_mm256_movehdup_ps(dm), sy, summs[p]);
            }
            for t in 0..NT {
                let y = k.y(t0 + t, b);
                let ylo = _mm256_broadcastsi128_si256(_mm_loadu_si128(y as *const __m128i));
                let yhi = _mm256_broadcastsi128_si256(_mm_loadu_si128(y.add(16) as *const __m128i));
                let mut il = _mm256_madd_epi16(_mm256_maddubs_epi16(lo, ylo), ones);
                let mut ih = _mm256_madd_epi16(_mm256_maddubs_epi16(hi, yhi), ones);
                if F::OFF != 0 {
                    // `-OFF * Σ y` of each lane's 4 quants, lanes 0-3 and 4-7 for both rows
                    let c = k.acts.corr.as_ptr().add(((t0 + t) * k.nb + b) * 8);
                    let cl = _mm256_broadcastsi128_si256(_mm_loadu_si128(c as *const __m128i));
                    let ch =
                        _mm256_broadcastsi128_si256(_mm_loadu_si128(c.add(4) as *const __m128i));
                    il = _mm256_add_epi32(il, cl);
                    ih = _mm256_add_epi32(ih, ch);
                }
                let dy = _mm256_broadcast_ss(&*k.acts.d.as_ptr().add(b * k.acts.npad + t0 + t));
                let d = _mm256_mul_ps(dx, dy);
                acc_lo[p][t] = _mm256_fmadd_ps(d, _mm256_cvtepi32_ps(il), acc_lo[p][t]);
                acc_hi[p][t] = _mm256_fmadd_ps(d, _mm256_cvtepi32_ps(ih), acc_hi[p][t]);
            }
        }
    }
    let mut out = [[0f32; NT]; MR];
    for p in 0..P {
        let mut sm = [0f32; 8];
        _mm256_storeu_ps(sm.as_mut_ptr(), summs[p]);
        for t in 0..NT {
            // row 0: [lanes 0-3 | lanes 4-7] from the low halves, row 1 from the high
            let r0 = _mm256_permute2f128_ps::<0x20>(acc_lo[p][t], acc_hi[p][t]);
            let r1 = _mm256_permute2f128_ps::<0x31>(acc_lo[p][t], acc_hi[p][t]);
            out[2 * p][t] = hsum8_ps(r0);
            out[2 * p + 1][t] = hsum8_ps(r1);
            if F::MIN {
                out[2 * p][t] += sm[t];
                out[2 * p + 1][t] += sm[4 + t];
            }
        }
    }
    out
}
