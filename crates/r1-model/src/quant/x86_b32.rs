//! x86-64 kernels for the 32-element block types (Q4_0, Q4_1, Q5_0, Q5_1, Q8_0 against
//! Q8_0 / Q8_1 activations), AVX2 and AVX-512 VNNI (256-bit `vpdpbusd`).
//!
//! Blocks are processed in groups of eight, *transposed*: vector `c` (0..8) of a group holds
//! bytes `4c..4c+4` of block `j` in its 32-bit lane `j`. Eight `vpdpbusd` (or `vpmaddubsw`
//! accumulations) then leave each block's exact integer dot product in lane `j` with no
//! horizontal reduction. The activations are transposed once per call (see [`Acts`]); the
//! weight blocks are unpacked and transposed once per tile of tokens. The block sums are then
//! scaled in f32 and added to an 8-lane accumulator (lane = block mod 8): the canonical order
//! of `dot_scalar`, bit for bit.
//!
//! Signed weights are handled as unsigned values with an offset (Q4_0: q - 8, Q5_0: q - 16,
//! Q8_0 under VNNI: (x + 128) - 128) and the exact correction `offset * Σy` per block.

// Parallel arrays of SIMD registers (per token / per lane) are indexed together.
#![allow(clippy::needless_range_loop)]

use core::arch::x86_64::*;

use super::gemm::{gemm_tiled, RowKernel};
use super::GgmlType;

/// The integer dot-product flavour.
pub(crate) trait IntDot {
    const VNNI: bool;
}

pub(crate) struct Avx2;
pub(crate) struct Vnni;

impl IntDot for Avx2 {
    const VNNI: bool = false;
}

impl IntDot for Vnni {
    const VNNI: bool = true;
}

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
    /// log2 of the offset subtracted from the loaded unsigned values (0: none).
    const OFF_SHIFT: i32;
    /// Largest loaded value (15 or 31), or 0 for Q8_0's signed bytes.
    const MAXQ: i32;
    /// The block's 32 values in element order (unsigned, or i8 for Q8_0).
    unsafe fn load(p: *const u8) -> __m256i;
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
unsafe fn fifth_bits(p: *const u8) -> __m256i {
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
    const OFF_SHIFT: i32 = 3;
    const MAXQ: i32 = 15;
    #[inline(always)]
    unsafe fn load(p: *const u8) -> __m256i {
        nibbles(p.add(2))
    }
}

impl B32 for FQ4_1 {
    const TY: GgmlType = GgmlType::Q4_1;
    const WB: usize = 20;
    const AB: usize = 36;
    const AQ: usize = 4;
    const MIN: bool = true;
    const OFF_SHIFT: i32 = 0;
    const MAXQ: i32 = 15;
    #[inline(always)]
    unsafe fn load(p: *const u8) -> __m256i {
        nibbles(p.add(4))
    }
}

impl B32 for FQ5_0 {
    const TY: GgmlType = GgmlType::Q5_0;
    const WB: usize = 22;
    const AB: usize = 34;
    const AQ: usize = 2;
    const MIN: bool = false;
    const OFF_SHIFT: i32 = 4;
    const MAXQ: i32 = 31;
    #[inline(always)]
    unsafe fn load(p: *const u8) -> __m256i {
        _mm256_or_si256(nibbles(p.add(6)), fifth_bits(p.add(2)))
    }
}

impl B32 for FQ5_1 {
    const TY: GgmlType = GgmlType::Q5_1;
    const WB: usize = 24;
    const AB: usize = 36;
    const AQ: usize = 4;
    const MIN: bool = true;
    const OFF_SHIFT: i32 = 0;
    const MAXQ: i32 = 31;
    #[inline(always)]
    unsafe fn load(p: *const u8) -> __m256i {
        _mm256_or_si256(nibbles(p.add(8)), fifth_bits(p.add(4)))
    }
}

impl B32 for FQ8_0 {
    const TY: GgmlType = GgmlType::Q8_0;
    const WB: usize = 34;
    const AB: usize = 34;
    const AQ: usize = 2;
    const MIN: bool = false;
    const OFF_SHIFT: i32 = 0;
    const MAXQ: i32 = 0;
    #[inline(always)]
    unsafe fn load(p: *const u8) -> __m256i {
        _mm256_loadu_si256(p.add(2) as *const __m256i)
    }
}

/// 8x8 transpose of 32-bit lanes: `out[c]` lane `j` = `r[j]` lane `c`.
#[inline(always)]
unsafe fn transpose8(r: &[__m256i; 8]) -> [__m256i; 8] {
    let t0 = _mm256_unpacklo_epi32(r[0], r[1]);
    let t1 = _mm256_unpackhi_epi32(r[0], r[1]);
    let t2 = _mm256_unpacklo_epi32(r[2], r[3]);
    let t3 = _mm256_unpackhi_epi32(r[2], r[3]);
    let t4 = _mm256_unpacklo_epi32(r[4], r[5]);
    let t5 = _mm256_unpackhi_epi32(r[4], r[5]);
    let t6 = _mm256_unpacklo_epi32(r[6], r[7]);
    let t7 = _mm256_unpackhi_epi32(r[6], r[7]);
    let u0 = _mm256_unpacklo_epi64(t0, t2);
    let u1 = _mm256_unpackhi_epi64(t0, t2);
    let u2 = _mm256_unpacklo_epi64(t1, t3);
    let u3 = _mm256_unpackhi_epi64(t1, t3);
    let u4 = _mm256_unpacklo_epi64(t4, t6);
    let u5 = _mm256_unpackhi_epi64(t4, t6);
    let u6 = _mm256_unpacklo_epi64(t5, t7);
    let u7 = _mm256_unpackhi_epi64(t5, t7);
    [
        _mm256_permute2x128_si256(u0, u4, 0x20),
        _mm256_permute2x128_si256(u1, u5, 0x20),
        _mm256_permute2x128_si256(u2, u6, 0x20),
        _mm256_permute2x128_si256(u3, u7, 0x20),
        _mm256_permute2x128_si256(u0, u4, 0x31),
        _mm256_permute2x128_si256(u1, u5, 0x31),
        _mm256_permute2x128_si256(u2, u6, 0x31),
        _mm256_permute2x128_si256(u3, u7, 0x31),
    ]
}

/// Activations prepared once per call: per token, the quants of each group of 8 blocks
/// transposed (256 bytes per group, zero-padded to `nbp` blocks), the exact block sums Σy,
/// and the f16 scales `d` (and Q8_1 sums `s`) as f32.
struct Acts {
    qs: Vec<u8>,
    ysum: Vec<i32>,
    d: Vec<f32>,
    s: Vec<f32>,
}

#[inline(always)]
unsafe fn f16x8_strided(p: *const u8, stride: usize, cnt: usize) -> __m256 {
    let mut t = [0u16; 8];
    for (i, ti) in t.iter_mut().enumerate().take(cnt) {
        *ti = (p.add(i * stride) as *const u16).read_unaligned();
    }
    _mm256_cvtph_ps(_mm_loadu_si128(t.as_ptr() as *const __m128i))
}

#[inline(always)]
unsafe fn prepare_acts<F: B32>(a: &[u8], n: usize, nb: usize, nbp: usize) -> Acts {
    let mut acts = Acts {
        qs: vec![0u8; n * nbp * 32],
        ysum: vec![0i32; n * nbp],
        d: vec![0f32; n * nbp],
        s: if F::MIN {
            vec![0f32; n * nbp]
        } else {
            Vec::new()
        },
    };
    let ones8 = _mm256_set1_epi8(1);
    let ones16 = _mm256_set1_epi16(1);
    for t in 0..n {
        let row = a.as_ptr().add(t * nb * F::AB);
        for g in 0..nbp / 8 {
            let cnt = nb.saturating_sub(8 * g).min(8);
            let blk = row.add(8 * g * F::AB);
            let mut r = [_mm256_setzero_si256(); 8];
            for j in 0..cnt {
                r[j] = _mm256_loadu_si256(blk.add(j * F::AB + F::AQ) as *const __m256i);
            }
            let tr = transpose8(&r);
            let o = t * nbp + 8 * g;
            let mut s16 = _mm256_setzero_si256();
            for c in 0..8 {
                _mm256_storeu_si256(
                    acts.qs.as_mut_ptr().add(32 * o + 32 * c) as *mut __m256i,
                    tr[c],
                );
                // |1*y + 1*y| <= 256 per lane, 8 of them fit i16
                s16 = _mm256_add_epi16(s16, _mm256_maddubs_epi16(ones8, tr[c]));
            }
            let ys = _mm256_madd_epi16(s16, ones16);
            _mm256_storeu_si256(acts.ysum.as_mut_ptr().add(o) as *mut __m256i, ys);
            _mm256_storeu_ps(acts.d.as_mut_ptr().add(o), f16x8_strided(blk, F::AB, cnt));
            if F::MIN {
                let s = f16x8_strided(blk.add(2), F::AB, cnt);
                _mm256_storeu_ps(acts.s.as_mut_ptr().add(o), s);
            }
        }
    }
    acts
}

/// The byte offsets of 8 consecutive blocks.
#[inline(always)]
unsafe fn block_offsets<F: B32>() -> __m256i {
    let s = F::WB as i32;
    _mm256_setr_epi32(0, s, 2 * s, 3 * s, 4 * s, 5 * s, 6 * s, 7 * s)
}

/// The f16 `d` (and `m`, at byte 2) of blocks `0..cnt` of a group as f32; other lanes 0.
#[inline(always)]
unsafe fn weight_scales<F: B32, const FULL: bool>(p: *const u8, cnt: usize) -> (__m256, __m256) {
    let idx = block_offsets::<F>();
    let v = if FULL {
        _mm256_i32gather_epi32::<1>(p as *const i32, idx)
    } else {
        let mask = _mm256_cmpgt_epi32(
            _mm256_set1_epi32(cnt as i32),
            _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7),
        );
        _mm256_mask_i32gather_epi32::<1>(_mm256_setzero_si256(), p as *const i32, idx, mask)
    };
    let lo = _mm256_and_si256(v, _mm256_set1_epi32(0xFFFF));
    let hi = _mm256_srli_epi32(v, 16);
    // [d0..d3 m0..m3 | d4..d7 m4..m7] -> [d0..d7 | m0..m7]
    let packed = _mm256_permute4x64_epi64::<0xD8>(_mm256_packus_epi32(lo, hi));
    let d = _mm256_cvtph_ps(_mm256_castsi256_si128(packed));
    let m = if F::MIN {
        _mm256_cvtph_ps(_mm256_extracti128_si256::<1>(packed))
    } else {
        _mm256_setzero_ps()
    };
    (d, m)
}

/// `((l0+l4)+(l2+l6)) + ((l1+l5)+(l3+l7))`, as `util::hsum8`.
#[inline(always)]
pub(crate) unsafe fn hsum8_ps(v: __m256) -> f32 {
    let s4 = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    let s2 = _mm_add_ps(s4, _mm_movehl_ps(s4, s4));
    let s1 = _mm_add_ss(s2, _mm_shuffle_ps(s2, s2, 1));
    _mm_cvtss_f32(s1)
}

/// A weight group unpacked and transposed. `v` is what multiplies the activations as
/// unsigned bytes (Q8_0: |x| for AVX2, x + 128 for VNNI); `sign` is Q8_0's raw x for the
/// AVX2 sign trick.
struct WGroup {
    v: [__m256i; 8],
    sign: [__m256i; 8],
}

#[inline(always)]
unsafe fn load_group<F: B32, D: IntDot, const FULL: bool>(w: *const u8, cnt: usize) -> WGroup {
    let mut r = [_mm256_setzero_si256(); 8];
    for j in 0..8 {
        if FULL || j < cnt {
            r[j] = F::load(w.add(j * F::WB));
        }
    }
    let raw = transpose8(&r);
    let mut g = WGroup { v: raw, sign: raw };
    if F::MAXQ == 0 {
        for c in 0..8 {
            g.v[c] = if D::VNNI {
                _mm256_xor_si256(raw[c], _mm256_set1_epi8(-128))
            } else {
                _mm256_abs_epi8(raw[c])
            };
        }
    }
    g
}

#[inline(always)]
unsafe fn yv(y: *const u8, c: usize) -> __m256i {
    _mm256_loadu_si256(y.add(32 * c) as *const __m256i)
}

/// Exact block sums (lane j = block j) of a weight group with one token's transposed quants.
#[inline(always)]
unsafe fn group_dot<F: B32, D: IntDot>(g: &WGroup, y: *const u8, ysum: *const i32) -> __m256i {
    let ones = _mm256_set1_epi16(1);
    let mut sums = if D::VNNI {
        let (mut a0, mut a1) = (_mm256_setzero_si256(), _mm256_setzero_si256());
        for c in (0..8).step_by(2) {
            a0 = _mm256_dpbusd_epi32(a0, g.v[c], yv(y, c));
            a1 = _mm256_dpbusd_epi32(a1, g.v[c + 1], yv(y, c + 1));
        }
        _mm256_add_epi32(a0, a1)
    } else if F::MAXQ == 0 {
        // |x| * sign(y, x): pairs reach 2*128*127, so widen every product vector
        let mut acc = _mm256_setzero_si256();
        for c in 0..8 {
            let p = _mm256_maddubs_epi16(g.v[c], _mm256_sign_epi8(yv(y, c), g.sign[c]));
            acc = _mm256_add_epi32(acc, _mm256_madd_epi16(p, ones));
        }
        acc
    } else {
        // i16 sums of maddubs: each is <= 2*MAXQ*128, so 8 (MAXQ 15) or 4 (MAXQ 31) fit
        let per = if F::MAXQ <= 15 { 8 } else { 4 };
        let mut acc = _mm256_setzero_si256();
        for h in 0..8 / per {
            let mut s16 = _mm256_setzero_si256();
            for c in h * per..(h + 1) * per {
                s16 = _mm256_add_epi16(s16, _mm256_maddubs_epi16(g.v[c], yv(y, c)));
            }
            acc = _mm256_add_epi32(acc, _mm256_madd_epi16(s16, ones));
        }
        acc
    };
    let shift = if F::MAXQ == 0 && D::VNNI {
        7
    } else {
        F::OFF_SHIFT
    };
    if shift != 0 {
        let ys = _mm256_loadu_si256(ysum as *const __m256i);
        sums = _mm256_sub_epi32(sums, _mm256_sllv_epi32(ys, _mm256_set1_epi32(shift)));
    }
    sums
}

struct B32Kernel<F, D> {
    w: *const u8,
    wrow: usize,
    nb: usize,
    nbp: usize,
    acts: Acts,
    _p: core::marker::PhantomData<(F, D)>,
}

impl<F: B32, D: IntDot> B32Kernel<F, D> {
    #[inline(always)]
    unsafe fn group<const NT: usize, const FULL: bool>(
        &self,
        w: *const u8,
        t0: usize,
        g: usize,
        cnt: usize,
        acc: &mut [__m256; NT],
    ) {
        let wg = w.add(8 * g * F::WB);
        let grp = load_group::<F, D, FULL>(wg, cnt);
        let (dx, mx) = weight_scales::<F, FULL>(wg, cnt);
        for t in 0..NT {
            let o = (t0 + t) * self.nbp + 8 * g;
            let y = self.acts.qs.as_ptr().add(32 * o);
            let sums = group_dot::<F, D>(&grp, y, self.acts.ysum.as_ptr().add(o));
            let dy = _mm256_loadu_ps(self.acts.d.as_ptr().add(o));
            let mut v = _mm256_mul_ps(_mm256_mul_ps(dx, dy), _mm256_cvtepi32_ps(sums));
            if F::MIN {
                let sy = _mm256_loadu_ps(self.acts.s.as_ptr().add(o));
                v = _mm256_add_ps(v, _mm256_mul_ps(mx, sy));
            }
            acc[t] = _mm256_add_ps(acc[t], v);
        }
    }
}

impl<F: B32, D: IntDot> RowKernel for B32Kernel<F, D> {
    #[inline(always)]
    unsafe fn run<const NT: usize>(&self, r: usize, t0: usize) -> [f32; NT] {
        let w = self.w.add(r * self.wrow);
        let mut acc = [_mm256_setzero_ps(); NT];
        let full = self.nb / 8;
        for g in 0..full {
            self.group::<NT, true>(w, t0, g, 8, &mut acc);
        }
        let rem = self.nb % 8;
        if rem > 0 {
            self.group::<NT, false>(w, t0, full, rem, &mut acc);
        }
        let mut out = [0f32; NT];
        for t in 0..NT {
            out[t] = hsum8_ps(acc[t]);
        }
        out
    }
}

#[inline(always)]
unsafe fn gemm_b32<F: B32, D: IntDot>(k: usize, w: &[u8], a: &[u8], n: usize, out: &mut [f32]) {
    let nb = k / 32;
    let nbp = nb.div_ceil(8) * 8;
    debug_assert!(F::TY.row_bytes(k) == Some(nb * F::WB));
    let kern = B32Kernel::<F, D> {
        w: w.as_ptr(),
        wrow: nb * F::WB,
        nb,
        nbp,
        acts: prepare_acts::<F>(a, n, nb, nbp),
        _p: core::marker::PhantomData,
    };
    let m = w.len() / (nb * F::WB);
    if D::VNNI {
        // AVX-512 has 32 vector registers: a wider token tile reuses each weight group more
        gemm_tiled::<_, 8>(&kern, m, n, nbp * 32, out);
    } else {
        gemm_tiled::<_, 4>(&kern, m, n, nbp * 32, out);
    }
}

macro_rules! entry {
    ($name:ident, $fmt:ty, $isa:ty, $feat:literal) => {
        #[target_feature(enable = $feat)]
        pub(crate) unsafe fn $name(k: usize, w: &[u8], a: &[u8], n: usize, out: &mut [f32]) {
            gemm_b32::<$fmt, $isa>(k, w, a, n, out)
        }
    };
}

entry!(gemm_q4_0_avx2, FQ4_0, Avx2, "avx2,fma,f16c");
entry!(gemm_q4_1_avx2, FQ4_1, Avx2, "avx2,fma,f16c");
entry!(gemm_q5_0_avx2, FQ5_0, Avx2, "avx2,fma,f16c");
entry!(gemm_q5_1_avx2, FQ5_1, Avx2, "avx2,fma,f16c");
entry!(gemm_q8_0_avx2, FQ8_0, Avx2, "avx2,fma,f16c");
entry!(
    gemm_q4_0_vnni,
    FQ4_0,
    Vnni,
    "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni"
);
entry!(
    gemm_q4_1_vnni,
    FQ4_1,
    Vnni,
    "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni"
);
entry!(
    gemm_q5_0_vnni,
    FQ5_0,
    Vnni,
    "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni"
);
entry!(
    gemm_q5_1_vnni,
    FQ5_1,
    Vnni,
    "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni"
);
entry!(
    gemm_q8_0_vnni,
    FQ8_0,
    Vnni,
    "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni"
);
