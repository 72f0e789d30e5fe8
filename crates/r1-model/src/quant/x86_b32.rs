//! x86-64 kernels for the 32-element block types (Q4_0, Q4_1, Q5_0, Q5_1, Q8_0 against
//! Q8_0 / Q8_1 activations) in ggml's AVX2 order (see `dot_scalar`): per block, 8 i32 lanes
//! of 4 products each, `acc = fma(dx*dy, lanes, acc)` per token, `summs = fma(mx, sy, summs)`
//! for the min types, and `hsum8(acc) [+ summs]`.
//!
//! * AVX2: one weight row and 4 tokens per tile; a block's weights are unpacked once per
//!   tile. Signed weights use ggml's sign trick (`|x| * sign(y, x)` with `vpmaddubsw`).
//!   Q4_0 / Q4_1 take two rows per register instead (`x86_b32_pair.rs`).
//! * AVX-512 (VNNI): two weight rows per 512-bit register (row `r` in lanes 0..8, row `r+1`
//!   in lanes 8..16, the token's activations broadcast to both halves), 8 tokens per tile
//!   (or 8 rows and 1-2 tokens for GEMV); one `vpdpbusd` per block, row pair and token.
//!   For signed weights the operands swap: activations as unsigned `y + 128` (prepared once
//!   per call) against signed `x`, the accumulator starting at the exact `-128 * Σ x` of
//!   each lane (once per weight block and tile).
//!
//! Every lane holds the same exact integer as ggml's and sees the same float operations, so
//! the results equal the scalar kernels bit for bit.

// Parallel arrays of SIMD registers (per token / per lane) are indexed together.
#![allow(clippy::needless_range_loop)]

use super::gemm::OutPtr;
use core::arch::x86_64::*;

use super::gemm::{gemm_tiled, RowKernel};
use super::GgmlType;

#[path = "x86_b32_pair.rs"]
mod pair;
use pair::{run_pair, Pair};

/// A 32-element block format against its 8-bit activation format.
trait B32 {
    const TY: GgmlType;
    /// Weight / activation block bytes.
    const WB: usize;
    const AB: usize;
    /// Offset of the activation's 32 quants (Q8_0: 2, Q8_1: 4).
    const AQ: usize;
    /// Weight has a min `m` at byte 2 and the activation a sum `s` at byte 2.
    const MIN: bool;
    /// Signed types: the weights are `q - OFF` for the loaded unsigned `q` (Q8_0: raw i8,
    /// taken as unsigned `x + 128` by the AVX-512 `corr` path). 0: unsigned (min types).
    const OFF: i32;
    /// Offset of the quants: 16 nibble bytes (Q8_0: 32 i8).
    const QS: usize;
    /// Offset of the 32 fifth bits (Q5_0 / Q5_1), or 0 for none.
    const QH: usize;
}

/// The weights of one block in element order: unsigned nibbles (with fifth bits), or
/// Q8_0's raw i8.
#[inline(always)]
unsafe fn load<F: B32>(p: *const u8) -> __m256i {
    if F::TY == GgmlType::Q8_0 {
        return _mm256_loadu_si256(p.add(F::QS) as *const __m256i);
    }
    let v = nibbles(p.add(F::QS));
    if F::QH != 0 {
        _mm256_or_si256(v, fifth_bits(p.add(F::QH)))
    } else {
        v
    }
}

#[inline(always)]
unsafe fn nibbles(p: *const u8) -> __m256i {
    let q = _mm_loadu_si128(p as *const __m128i);
    let m4 = _mm_set1_epi8(0x0F);
    let lo = _mm_and_si128(q, m4);
    let hi = _mm_and_si128(_mm_srli_epi16(q, 4), m4);
    _mm256_set_m128i(hi, lo)
}

/// 0x10 in byte j where bit j of the little-endian u32 at `p` is set.
#[inline(always)]
pub(crate) unsafe fn fifth_bits(p: *const u8) -> __m256i {
    let qh = (p as *const u32).read_unaligned();
    let v = _mm256_set1_epi32(qh as i32);
    let shuf = _mm256_setr_epi8(
        0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 1, 1, 1, 2, 2, 2, 2, 2, 2, 2, 2, 3, 3, 3, 3, 3, 3,
        3, 3,
    );
    let bytes = _mm256_shuffle_epi8(v, shuf);
    let mask = _mm256_set1_epi64x(0x8040_2010_0804_0201u64 as i64);
    let sel = _mm256_cmpeq_epi8(_mm256_and_si256(bytes, mask), mask);
    _mm256_and_si256(sel, _mm256_set1_epi8(0x10))
}

struct FQ4_0;
struct FQ4_1;
struct FQ5_0;
struct FQ5_1;
struct FQ8_0;

impl B32 for FQ4_0 {
    const TY: GgmlType = GgmlType::Q4_0;
    const WB: usize = 18;
    const AB: usize = 34;
    const AQ: usize = 2;
    const MIN: bool = false;
    const OFF: i32 = 8;
    const QS: usize = 2;
    const QH: usize = 0;
}

impl B32 for FQ4_1 {
    const TY: GgmlType = GgmlType::Q4_1;
    const WB: usize = 20;
    const AB: usize = 36;
    const AQ: usize = 4;
    const MIN: bool = true;
    const OFF: i32 = 0;
    const QS: usize = 4;
    const QH: usize = 0;
}

impl B32 for FQ5_0 {
    const TY: GgmlType = GgmlType::Q5_0;
    const WB: usize = 22;
    const AB: usize = 34;
    const AQ: usize = 2;
    const MIN: bool = false;
    const OFF: i32 = 16;
    const QS: usize = 6;
    const QH: usize = 2;
}

impl B32 for FQ5_1 {
    const TY: GgmlType = GgmlType::Q5_1;
    const WB: usize = 24;
    const AB: usize = 36;
    const AQ: usize = 4;
    const MIN: bool = true;
    const OFF: i32 = 0;
    const QS: usize = 8;
    const QH: usize = 4;
}

impl B32 for FQ8_0 {
    const TY: GgmlType = GgmlType::Q8_0;
    const WB: usize = 34;
    const AB: usize = 34;
    const AQ: usize = 2;
    const MIN: bool = false;
    const OFF: i32 = 128;
    const QS: usize = 2;
    const QH: usize = 0;
}

/// `((l0+l4)+(l2+l6)) + ((l1+l5)+(l3+l7))`: ggml's `hsum_float_8`, as `util::hsum8`.
#[inline(always)]
pub(crate) unsafe fn hsum8_ps(v: __m256) -> f32 {
    let s4 = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    let s2 = _mm_add_ps(s4, _mm_movehl_ps(s4, s4));
    let s1 = _mm_add_ss(s2, _mm_movehdup_ps(s2));
    _mm_cvtss_f32(s1)
}

/// f16 at `p` as f32.
#[inline(always)]
unsafe fn f16_at(p: *const u8) -> f32 {
    let h = (p as *const u16).read_unaligned();
    _mm_cvtss_f32(_mm_cvtph_ps(_mm_cvtsi32_si128(h as i32)))
}

/// Activation data prepared once per call: the f16 scales `d` and the Q8_1 sums `s` as f32,
/// block-major (`[b * npad + t]`, zero-padded so 8-token loads stay in bounds), and for the
/// AVX-512 signed kernels either the quants as unsigned `y + 128` (`uy[(t * nb + b) * 32..]`,
/// many tokens) or the exact lane corrections `-OFF * Σ y` of each 4 quants for unsigned
/// `x + OFF` weights (`corr[(t * nb + b) * 8..]`, few tokens).
struct Acts {
    d: Vec<f32>,
    /// `d` token-major (`[t * nb + b]`), for per-token broadcasts (AVX-512).
    dt: Vec<f32>,
    s: Vec<f32>,
    uy: Vec<u8>,
    corr: Vec<i32>,
    npad: usize,
}

/// What the AVX-512 signed kernels need prepared.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Signed {
    None,
    UnsignedY,
    Corr,
}

#[inline(always)]
unsafe fn prepare_acts<F: B32>(a: &[u8], n: usize, nb: usize, sg: Signed) -> Acts {
    let npad = n + 8;
    let mut acts = Acts {
        d: vec![0f32; nb * npad],
        dt: vec![0f32; n * nb],
        s: if F::MIN {
            vec![0f32; nb * npad]
        } else {
            Vec::new()
        },
        uy: if sg == Signed::UnsignedY {
            vec![0u8; n * nb * 32]
        } else {
            Vec::new()
        },
        corr: if sg == Signed::Corr {
            vec![0i32; n * nb * 8]
        } else {
            Vec::new()
        },
        npad,
    };
    for t in 0..n {
        for b in 0..nb {
            let blk = a.as_ptr().add((t * nb + b) * F::AB);
            acts.d[b * npad + t] = f16_at(blk);
            acts.dt[t * nb + b] = acts.d[b * npad + t];
            if F::MIN {
                acts.s[b * npad + t] = f16_at(blk.add(2));
            }
            let y = _mm256_loadu_si256(blk.add(F::AQ) as *const __m256i);
            if sg == Signed::UnsignedY {
                let u = _mm256_xor_si256(y, _mm256_set1_epi8(-128));
                let o = acts.uy.as_mut_ptr().add((t * nb + b) * 32);
                _mm256_storeu_si256(o as *mut __m256i, u);
            }
            if sg == Signed::Corr {
                let ones = _mm256_set1_epi8(1);
                let s = _mm256_madd_epi16(_mm256_maddubs_epi16(ones, y), _mm256_set1_epi16(1));
                let c = _mm256_mullo_epi32(s, _mm256_set1_epi32(-F::OFF));
                let o = acts.corr.as_mut_ptr().add((t * nb + b) * 8);
                _mm256_storeu_si256(o as *mut __m256i, c);
            }
        }
    }
    acts
}

struct B32Kernel<F> {
    w: *const u8,
    a: *const u8,
    wrow: usize,
    nb: usize,
    acts: Acts,
    _p: core::marker::PhantomData<F>,
}

impl<F: B32> B32Kernel<F> {
    #[inline(always)]
    unsafe fn y(&self, t: usize, b: usize) -> *const u8 {
        self.a.add((t * self.nb + b) * F::AB + F::AQ)
    }
}

/// AVX2: `MR` rows (each its own accumulators), `NT` (<= 4) tokens.
struct Avx2;

#[inline(always)]
unsafe fn run_avx2<F: B32, const MR: usize, const NT: usize>(
    k: &B32Kernel<F>,
    rows: [usize; MR],
    t0: usize,
) -> [[f32; NT]; MR] {
    let w: [*const u8; MR] = core::array::from_fn(|r| k.w.add(rows[r] * k.wrow));
    let ones = _mm256_set1_epi16(1);
    let mut acc = [[_mm256_setzero_ps(); NT]; MR];
    // lane = token
    let mut summs = [_mm_setzero_ps(); MR];
    for b in 0..k.nb {
        let dy = _mm256_loadu_ps(k.acts.d.as_ptr().add(b * k.acts.npad + t0));
        for r in 0..MR {
            let x = w[r].add(b * F::WB);
            let raw = load::<F>(x);
            // signed weights: |x| and the signs for `sign(y, x)`
            let sx = if F::OFF != 0 && F::TY != GgmlType::Q8_0 {
                _mm256_sub_epi8(raw, _mm256_set1_epi8(F::OFF as i8))
            } else {
                raw
            };
            let ux = if F::OFF != 0 {
                _mm256_sign_epi8(sx, sx)
            } else {
                raw
            };
            // [d, m] (the "m" of the types without a min is unused)
            let hdr = _mm_cvtsi32_si128((x as *const i32).read_unaligned());
            let dm = _mm_cvtph_ps(hdr);
            // dx * dy for every token (lane t), broadcast per token below
            let dd = _mm256_mul_ps(_mm256_broadcastss_ps(dm), dy);
            if F::MIN {
                let sy = _mm_loadu_ps(k.acts.s.as_ptr().add(b * k.acts.npad + t0));
                let mx = _mm_permute_ps::<0x55>(dm);
                summs[r] = _mm_fmadd_ps(mx, sy, summs[r]);
            }
            for t in 0..NT {
                let mut y = _mm256_loadu_si256(k.y(t0 + t, b) as *const __m256i);
                if F::OFF != 0 {
                    y = _mm256_sign_epi8(y, sx);
                }
                let lanes = _mm256_madd_epi16(_mm256_maddubs_epi16(ux, y), ones);
                let d = _mm256_permutevar8x32_ps(dd, _mm256_set1_epi32(t as i32));
                acc[r][t] = _mm256_fmadd_ps(d, _mm256_cvtepi32_ps(lanes), acc[r][t]);
            }
        }
    }
    let mut out = [[0f32; NT]; MR];
    for r in 0..MR {
        let mut sm = [0f32; 4];
        _mm_storeu_ps(sm.as_mut_ptr(), summs[r]);
        for t in 0..NT {
            out[r][t] = hsum8_ps(acc[r][t]);
            if F::MIN {
                out[r][t] += sm[t];
            }
        }
    }
    out
}

/// How far ahead (bytes of the weight stream) decode kernels prefetch. A GEMV is a stream of
/// short rows that the hardware prefetcher ramps up on too late; software prefetch ~4 KiB
/// ahead took single-thread Q5_0 GEMV from DRAM from 7.7 to 12.5 GB/s
/// (`cargo bench -p r1-model --bench gemv_dram`). `R1SERVE_PREFETCH_BYTES` overrides it (0 =
/// off) for tuning on other CPUs.
pub(crate) fn pf_distance() -> usize {
    static D: std::sync::OnceLock<usize> = std::sync::OnceLock::new();
    *D.get_or_init(|| {
        std::env::var("R1SERVE_PREFETCH_BYTES")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or(4096)
    })
}

/// Prefetch block `bt` of a row starting at `row` (`nb` blocks of `wb` bytes), or, past the
/// row's end, the same place in the row one tile (`tile` bytes) further on.
#[inline(always)]
pub(crate) unsafe fn prefetch_ahead(row: *const u8, bt: usize, nb: usize, wb: usize, tile: usize) {
    let p = if bt < nb {
        row.wrapping_add(bt * wb)
    } else {
        row.wrapping_add(tile + (bt - nb) * wb)
    };
    _mm_prefetch::<_MM_HINT_T0>(p as *const i8);
}

/// AVX-512 VNNI: two rows, `NT` (<= 8) tokens.
struct Vnni;

/// `lo` in the low 256 bits, `hi` in the high.
#[inline(always)]
unsafe fn pair_si(lo: __m256i, hi: __m256i) -> __m512i {
    _mm512_inserti64x4::<1>(_mm512_castsi256_si512(lo), hi)
}

/// A block of rows `x0` and `x1` (row 0 in the low 256 bits): unsigned (`q`, Q8_0:
/// `x + 128`), or with `SIGNED` the weight values (`q - OFF`, Q8_0: `x`).
#[inline(always)]
unsafe fn load_pair<F: B32, const SIGNED: bool>(x0: *const u8, x1: *const u8) -> __m512i {
    if F::TY == GgmlType::Q8_0 {
        let v = pair_si(load::<F>(x0), load::<F>(x1));
        return if SIGNED {
            v
        } else {
            _mm512_xor_si512(v, _mm512_set1_epi8(-128))
        };
    }
    // [q0, q0, q1, q1] per 128 bits -> [lo0, hi0, lo1, hi1]
    let q0 = _mm256_broadcastsi128_si256(_mm_loadu_si128(x0.add(F::QS) as *const __m128i));
    let q1 = _mm256_broadcastsi128_si256(_mm_loadu_si128(x1.add(F::QS) as *const __m128i));
    let u = pair_si(q0, q1);
    let u = _mm512_mask_srli_epi16::<4>(u, 0xFF00_FF00, u);
    let mut v = _mm512_and_si512(u, _mm512_set1_epi8(0x0F));
    if F::QH != 0 {
        let h0 = (x0.add(F::QH) as *const u32).read_unaligned() as u64;
        let h1 = (x1.add(F::QH) as *const u32).read_unaligned() as u64;
        let hb = _mm512_maskz_mov_epi8(h0 | (h1 << 32), _mm512_set1_epi8(0x10));
        v = _mm512_or_si512(v, hb);
    }
    if SIGNED {
        v = _mm512_sub_epi8(v, _mm512_set1_epi8(F::OFF as i8));
    }
    v
}

/// `P` row pairs (`MR = 2P` rows), `NT` (<= 8) tokens. Signed weights: with `SWAP`
/// against `uy`, else as unsigned `x + OFF` with `corr`.
#[inline(always)]
unsafe fn run_vnni<F: B32, const SWAP: bool, const P: usize, const MR: usize, const NT: usize>(
    k: &B32Kernel<F>,
    rows: [usize; MR],
    t0: usize,
) -> [[f32; NT]; MR] {
    debug_assert_eq!(MR, 2 * P);
    let w: [*const u8; MR] = core::array::from_fn(|r| k.w.add(rows[r] * k.wrow));
    let mut acc = [[_mm512_setzero_ps(); NT]; P];
    // lane 8 * (row in pair) + token
    let mut summs = [_mm512_setzero_ps(); P];
    let pf_blocks = pf_distance() / (MR * F::WB);
    for b in 0..k.nb {
        // stream the weights ahead of use (see `prefetch_ahead`)
        for r in 0..MR {
            prefetch_ahead(w[r], b + pf_blocks, k.nb, F::WB, MR * k.wrow);
        }
        let sy = if F::MIN {
            let s8 = _mm256_loadu_ps(k.acts.s.as_ptr().add(b * k.acts.npad + t0));
            let s8 = _mm256_castps_si256(s8);
            _mm512_castsi512_ps(pair_si(s8, s8))
        } else {
            _mm512_setzero_ps()
        };
        for p in 0..P {
            let (x0, x1) = (w[2 * p].add(b * F::WB), w[2 * p + 1].add(b * F::WB));
            let swap = SWAP && F::OFF != 0;
            let wv = load_pair::<F, SWAP>(x0, x1);
            // signed weights x against unsigned y + 128: start from -128 * Σ x per lane
            let init = if swap {
                let s = _mm512_dpbusd_epi32(_mm512_setzero_si512(), _mm512_set1_epi8(-128), wv);
                _mm512_sub_epi32(_mm512_setzero_si512(), s)
            } else {
                _mm512_setzero_si512()
            };
            // [d0, m0, d0, m0, ... | d1, m1, ...] -> [d0 x8 | d1 x8] and [m0 x8 | m1 x8]
            let h0 = _mm_set1_epi32((x0 as *const i32).read_unaligned());
            let h1 = _mm_set1_epi32((x1 as *const i32).read_unaligned());
            let dm = _mm512_cvtph_ps(_mm256_set_m128i(h1, h0));
            let dx = _mm512_moveldup_ps(dm);
            if F::MIN {
                summs[p] = _mm512_fmadd_ps(_mm512_movehdup_ps(dm), sy, summs[p]);
            }
            for t in 0..NT {
                let o = (t0 + t) * k.nb + b;
                let lanes = if swap {
                    // a broadcast from memory is a load-port uop (no shuffle port)
                    let uy = _mm256_loadu_si256(k.acts.uy.as_ptr().add(o * 32) as *const __m256i);
                    _mm512_dpbusd_epi32(init, _mm512_broadcast_i64x4(uy), wv)
                } else {
                    let init = if F::OFF != 0 {
                        let c = _mm256_loadu_si256(k.acts.corr.as_ptr().add(o * 8) as *const _);
                        _mm512_broadcast_i64x4(c)
                    } else {
                        init
                    };
                    let y = _mm256_loadu_si256(k.y(t0 + t, b) as *const __m256i);
                    _mm512_dpbusd_epi32(init, wv, _mm512_broadcast_i64x4(y))
                };
                let dy = _mm512_set1_ps(*k.acts.dt.as_ptr().add((t0 + t) * k.nb + b));
                let d = _mm512_mul_ps(dx, dy);
                acc[p][t] = _mm512_fmadd_ps(d, _mm512_cvtepi32_ps(lanes), acc[p][t]);
            }
        }
    }
    let mut out = [[0f32; NT]; MR];
    for p in 0..P {
        let mut sm = [0f32; 16];
        _mm512_storeu_ps(sm.as_mut_ptr(), summs[p]);
        for t in 0..NT {
            let lo = _mm512_castps512_ps256(acc[p][t]);
            let hi = _mm512_extracti64x4_epi64::<1>(_mm512_castps_si512(acc[p][t]));
            out[2 * p][t] = hsum8_ps(lo);
            out[2 * p + 1][t] = hsum8_ps(_mm256_castsi256_ps(hi));
            if F::MIN {
                out[2 * p][t] += sm[t];
                out[2 * p + 1][t] += sm[8 + t];
            }
        }
    }
    out
}

macro_rules! row_kernel {
    ($isa:ty, $mr:literal, $body:ident $(, $p:tt)*) => {
        impl<F: B32> RowKernel<$mr> for (B32Kernel<F>, $isa) {
            #[inline(always)]
            unsafe fn run<const NT: usize>(
                &self,
                rows: [usize; $mr],
                t0: usize,
            ) -> [[f32; NT]; $mr] {
                $body::<F, $($p,)* $mr, NT>(&self.0, rows, t0)
            }
        }
    };
}

row_kernel!(Avx2, 1, run_avx2);
row_kernel!(Avx2, 4, run_avx2);
row_kernel!(Pair, 2, run_pair, 1);
row_kernel!(Pair, 4, run_pair, 2);
row_kernel!(Vnni, 2, run_vnni, true, 1);
row_kernel!(Vnni, 4, run_vnni, true, 2);
row_kernel!(Vnni, 8, run_vnni, false, 4);

#[inline(always)]
unsafe fn gemm_b32<F: B32, const VNNI: bool>(k: usize, w: &[u8], a: &[u8], n: usize, out: OutPtr) {
    let nb = k / 32;
    debug_assert!(F::TY.row_bytes(k) == Some(nb * F::WB));
    // few tokens: more rows per tile, so that independent accumulation chains hide the
    // FMA latency (and the per-block weight work is shared by fewer tokens)
    let few = n < 4;
    // AVX2 pairs the rows of the nibble types (`pair`)
    let pair = !VNNI && F::QH == 0 && F::TY != GgmlType::Q8_0;
    let sg = match (VNNI && F::OFF != 0, few) {
        (false, _) if pair && F::OFF != 0 => Signed::Corr,
        (false, _) => Signed::None,
        (true, true) => Signed::Corr,
        (true, false) => Signed::UnsignedY,
    };
    let kern = B32Kernel::<F> {
        w: w.as_ptr(),
        a: a.as_ptr(),
        wrow: nb * F::WB,
        nb,
        acts: prepare_acts::<F>(a, n, nb, sg),
        _p: core::marker::PhantomData,
    };
    let m = w.len() / (nb * F::WB);
    let arow = nb * (if sg == Signed::UnsignedY { 32 } else { F::AB } + 8);
    match (VNNI, n) {
        (true, 0..4) => gemm_tiled::<_, 8, 2>(&(kern, Vnni), m, n, arow, out),
        (true, 4..8) => gemm_tiled::<_, 4, 4>(&(kern, Vnni), m, n, arow, out),
        (true, _) => gemm_tiled::<_, 2, 8>(&(kern, Vnni), m, n, arow, out),
        (false, 0..4) if pair => gemm_tiled::<_, 4, 2>(&(kern, Pair), m, n, arow, out),
        (false, _) if pair => gemm_tiled::<_, 2, 4>(&(kern, Pair), m, n, arow, out),
        (false, 0..4) => gemm_tiled::<_, 4, 2>(&(kern, Avx2), m, n, arow, out),
        (false, _) => gemm_tiled::<_, 1, 4>(&(kern, Avx2), m, n, arow, out),
    }
}

macro_rules! entry {
    ($name:ident, $fmt:ty, $vnni:literal, $feat:literal) => {
        #[target_feature(enable = $feat)]
        pub(crate) unsafe fn $name(k: usize, w: &[u8], a: &[u8], n: usize, out: OutPtr) {
            gemm_b32::<$fmt, $vnni>(k, w, a, n, out)
        }
    };
}

entry!(gemm_q4_0_avx2, FQ4_0, false, "avx2,fma,f16c");
entry!(gemm_q4_1_avx2, FQ4_1, false, "avx2,fma,f16c");
entry!(gemm_q5_0_avx2, FQ5_0, false, "avx2,fma,f16c");
entry!(gemm_q5_1_avx2, FQ5_1, false, "avx2,fma,f16c");
entry!(gemm_q8_0_avx2, FQ8_0, false, "avx2,fma,f16c");
entry!(
    gemm_q4_0_vnni,
    FQ4_0,
    true,
    "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni"
);
entry!(
    gemm_q4_1_vnni,
    FQ4_1,
    true,
    "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni"
);
entry!(
    gemm_q5_0_vnni,
    FQ5_0,
    true,
    "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni"
);
entry!(
    gemm_q5_1_vnni,
    FQ5_1,
    true,
    "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni"
);
entry!(
    gemm_q8_0_vnni,
    FQ8_0,
    true,
    "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni"
);
