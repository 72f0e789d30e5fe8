//! aarch64 NEON kernels for the native (ggml-order) layout: the 32-element block types
//! (Q4_0, Q4_1, Q5_0, Q5_1, Q8_0 against Q8_0 / Q8_1 activations) and Q4_K / Q6_K against
//! Q8_K.
//!
//! Each kernel comes twice: with the Armv8.2 dot-product extension (`sdot`, 4 byte products
//! summed into each i32 lane; CPUs that have `dotprod`, [`dotprod`] checks) and with plain
//! NEON (`smull` + pairwise adds, every aarch64 CPU). Both compute the same exact integer in
//! every lane as `dot_scalar` (lane `i` of a 16-byte dot = bytes `4i..4i+4`, so the lanes of
//! a 32-element chunk are ggml's 8 lanes in order) and then the same float operations in the
//! same order (`vfmaq_f32` per lane, `hsum8`, scalar `mul_add` for the mins), so the results
//! equal the portable kernels bit for bit (tests below check both variants).
//!
//! `vdotq_s32` is still unstable in Rust (`stdarch_neon_dotprod`), so `sdot` is inline
//! assembly, only run where the CPU has the feature.

// Parallel arrays of registers (per row / per token) are indexed together.
#![allow(clippy::needless_range_loop)]

use core::arch::aarch64::*;

use super::gemm::{gemm_tiled, OutPtr, RowKernel};
use super::util::{rd_f16, rd_f32, rd_i16, scales_mins_k4, QK_K};

/// Whether this CPU has the dot-product extension (`sdot`), detected once.
pub(crate) fn dotprod() -> bool {
    static ON: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *ON.get_or_init(|| std::arch::is_aarch64_feature_detected!("dotprod"))
}

/// `acc + (4-byte dot products of a and b)` with `sdot`.
///
/// # Safety
/// The CPU has `dotprod`.
#[inline(always)]
unsafe fn sdot(acc: int32x4_t, a: int8x16_t, b: int8x16_t) -> int32x4_t {
    let mut r = acc;
    core::arch::asm!(
        ".arch_extension dotprod",
        "sdot {0:v}.4s, {1:v}.16b, {2:v}.16b",
        inout(vreg) r,
        in(vreg) a,
        in(vreg) b,
        options(pure, nomem, nostack, preserves_flags)
    );
    r
}

/// Lane `i` = `Σ a[4i..4i+4] * b[4i..4i+4]` (exact; `|a*b| <= 128*127` fits i16). `DP`:
/// with `sdot`, else with `smull` and pairwise adds.
#[inline(always)]
unsafe fn dot16<const DP: bool>(a: int8x16_t, b: int8x16_t) -> int32x4_t {
    if DP {
        sdot(vdupq_n_s32(0), a, b)
    } else {
        let p0 = vmull_s8(vget_low_s8(a), vget_low_s8(b));
        let p1 = vmull_high_s8(a, b);
        vpaddq_s32(vpaddlq_s16(p0), vpaddlq_s16(p1))
    }
}

/// `util::hsum8` of lanes `lo` (0..4) and `hi` (4..8):
/// `((l0+l4)+(l2+l6)) + ((l1+l5)+(l3+l7))`.
#[inline(always)]
unsafe fn hsum8(lo: float32x4_t, hi: float32x4_t) -> f32 {
    let s = vaddq_f32(lo, hi);
    let (s0, s1, s2, s3) = (
        vgetq_lane_f32::<0>(s),
        vgetq_lane_f32::<1>(s),
        vgetq_lane_f32::<2>(s),
        vgetq_lane_f32::<3>(s),
    );
    (s0 + s2) + (s1 + s3)
}

/// `acc = fma(d, lanes, acc)` per lane (`d * lanes + acc`, one rounding).
#[inline(always)]
unsafe fn fma_lanes(acc: &mut [float32x4_t; 2], d: f32, lo: int32x4_t, hi: int32x4_t) {
    let d = vdupq_n_f32(d);
    acc[0] = vfmaq_f32(acc[0], vcvtq_f32_s32(lo), d);
    acc[1] = vfmaq_f32(acc[1], vcvtq_f32_s32(hi), d);
}

/// Low nibbles (elements 0..16) and high nibbles (16..32) of 16 bytes at `p`.
#[inline(always)]
unsafe fn nibbles(p: *const u8) -> (uint8x16_t, uint8x16_t) {
    let q = vld1q_u8(p);
    (vandq_u8(q, vdupq_n_u8(0x0F)), vshrq_n_u8::<4>(q))
}

// ---- 32-element blocks -------------------------------------------------------------------

/// A 32-element block format against its 8-bit activation format.
trait B32 {
    /// Weight / activation block bytes.
    const WB: usize;
    const AB: usize;
    /// Offset of the activation's 32 quants (Q8_0: 2, Q8_1: 4).
    const AQ: usize;
    /// Weight has a min `m` at byte 2 and the activation a sum `s` at byte 2.
    const MIN: bool;
    /// The block's 32 integer weight values (elements 0..16, 16..32).
    unsafe fn load(x: *const u8) -> (int8x16_t, int8x16_t);
}

/// 0x10 in byte `e` (of 32) where bit `e` of the little-endian u32 at `p` is set.
#[inline(always)]
unsafe fn fifth_bits(p: *const u8) -> (uint8x16_t, uint8x16_t) {
    let qh = (p as *const u32).read_unaligned();
    let bits = vreinterpretq_u8_u64(vdupq_n_u64(0x8040_2010_0804_0201));
    let bytes = |s: u32| vcombine_u8(vdup_n_u8((qh >> s) as u8), vdup_n_u8((qh >> (s + 8)) as u8));
    let h = |v: uint8x16_t| vandq_u8(vtstq_u8(v, bits), vdupq_n_u8(0x10));
    (h(bytes(0)), h(bytes(16)))
}

/// Nibble (and fifth-bit) types: `(nibble | fifth bit) - OFF`.
#[inline(always)]
unsafe fn load_nib(x: *const u8, qs: usize, qh: Option<usize>, off: i8) -> (int8x16_t, int8x16_t) {
    let (mut lo, mut hi) = nibbles(x.add(qs));
    if let Some(qh) = qh {
        let (h0, h1) = fifth_bits(x.add(qh));
        lo = vorrq_u8(lo, h0);
        hi = vorrq_u8(hi, h1);
    }
    let o = vdupq_n_s8(off);
    (
        vsubq_s8(vreinterpretq_s8_u8(lo), o),
        vsubq_s8(vreinterpretq_s8_u8(hi), o),
    )
}

struct FQ4_0;
struct FQ4_1;
struct FQ5_0;
struct FQ5_1;
struct FQ8_0;

impl B32 for FQ4_0 {
    const WB: usize = 18;
    const AB: usize = 34;
    const AQ: usize = 2;
    const MIN: bool = false;
    #[inline(always)]
    unsafe fn load(x: *const u8) -> (int8x16_t, int8x16_t) {
        load_nib(x, 2, None, 8)
    }
}

impl B32 for FQ4_1 {
    const WB: usize = 20;
    const AB: usize = 36;
    const AQ: usize = 4;
    const MIN: bool = true;
    #[inline(always)]
    unsafe fn load(x: *const u8) -> (int8x16_t, int8x16_t) {
        load_nib(x, 4, None, 0)
    }
}

impl B32 for FQ5_0 {
    const WB: usize = 22;
    const AB: usize = 34;
    const AQ: usize = 2;
    const MIN: bool = false;
    #[inline(always)]
    unsafe fn load(x: *const u8) -> (int8x16_t, int8x16_t) {
        load_nib(x, 6, Some(2), 16)
    }
}

impl B32 for FQ5_1 {
    const WB: usize = 24;
    const AB: usize = 36;
    const AQ: usize = 4;
    const MIN: bool = true;
    #[inline(always)]
    unsafe fn load(x: *const u8) -> (int8x16_t, int8x16_t) {
        load_nib(x, 8, Some(4), 0)
    }
}

impl B32 for FQ8_0 {
    const WB: usize = 34;
    const AB: usize = 34;
    const AQ: usize = 2;
    const MIN: bool = false;
    #[inline(always)]
    unsafe fn load(x: *const u8) -> (int8x16_t, int8x16_t) {
        (
            vld1q_s8(x.add(2) as *const i8),
            vld1q_s8(x.add(18) as *const i8),
        )
    }
}

/// Rows of a 32-element block type against `n` activation rows, with the activation
/// scales (and Q8_1 sums) converted to f32 once per call (`[t * nb + b]`).
struct B32Rows<F, const DP: bool> {
    w: *const u8,
    a: *const u8,
    wrow: usize,
    nb: usize,
    d: Vec<f32>,
    s: Vec<f32>,
    _p: core::marker::PhantomData<F>,
}

impl<F: B32, const DP: bool, const MR: usize> RowKernel<MR> for B32Rows<F, DP> {
    #[inline(always)]
    unsafe fn run<const NT: usize>(&self, rows: [usize; MR], t0: usize) -> [[f32; NT]; MR] {
        let w: [*const u8; MR] = core::array::from_fn(|r| self.w.add(rows[r] * self.wrow));
        let mut acc = [[[vdupq_n_f32(0.0); 2]; NT]; MR];
        let mut summs = [[0f32; NT]; MR];
        for b in 0..self.nb {
            let ys: [*const u8; NT] =
                core::array::from_fn(|t| self.a.add(((t0 + t) * self.nb + b) * F::AB));
            for r in 0..MR {
                let x = w[r].add(b * F::WB);
                let (x0, x1) = F::load(x);
                let xb = core::slice::from_raw_parts(x, 4);
                let dx = rd_f16(xb, 0);
                for t in 0..NT {
                    let y = ys[t].add(F::AQ) as *const i8;
                    let lo = dot16::<DP>(x0, vld1q_s8(y));
                    let hi = dot16::<DP>(x1, vld1q_s8(y.add(16)));
                    let i = (t0 + t) * self.nb + b;
                    fma_lanes(&mut acc[r][t], dx * self.d[i], lo, hi);
                    if F::MIN {
                        summs[r][t] = rd_f16(xb, 2).mul_add(self.s[i], summs[r][t]);
                    }
                }
            }
        }
        let mut out = [[0f32; NT]; MR];
        for r in 0..MR {
            for t in 0..NT {
                let s = hsum8(acc[r][t][0], acc[r][t][1]);
                out[r][t] = if F::MIN { s + summs[r][t] } else { s };
            }
        }
        out
    }
}

#[inline(always)]
unsafe fn gemm_b32<F: B32, const DP: bool>(k: usize, w: &[u8], a: &[u8], n: usize, out: OutPtr) {
    let nb = k / 32;
    let wrow = nb * F::WB;
    let m = w.len() / wrow;
    let mut d = vec![0f32; n * nb];
    let mut s = if F::MIN {
        vec![0f32; n * nb]
    } else {
        Vec::new()
    };
    for (i, blk) in a.chunks_exact(F::AB).take(n * nb).enumerate() {
        d[i] = rd_f16(blk, 0);
        if F::MIN {
            s[i] = rd_f16(blk, 2);
        }
    }
    let kern = B32Rows::<F, DP> {
        w: w.as_ptr(),
        a: a.as_ptr(),
        wrow,
        nb,
        d,
        s,
        _p: core::marker::PhantomData,
    };
    gemm_tiled::<_, 2, 4>(&kern, m, n, nb * F::AB, out);
}

// ---- K-quants (super-blocks of 256 against Q8_K) --------------------------------------------

const Q8K: usize = 292;

/// `bsums[g]` of a Q8_K block.
#[inline(always)]
fn bsum(y: &[u8], g: usize) -> i32 {
    rd_i16(y, 4 + QK_K + 2 * g) as i32
}

/// A K-quant super-block format, decoded once per (row, block) into 16 registers of 16
/// values and then dotted with each token.
trait KQ {
    const WB: usize;
    /// The 256 weight values (as the lanes use them), 16 per register in element order.
    unsafe fn decode(x: *const u8) -> [int8x16_t; 16];
    /// One super-block: `x` the weight block, `v` its values, `y` the Q8_K block.
    unsafe fn block<const DP: bool>(x: &[u8], v: &[int8x16_t; 16], y: &[u8], st: &mut KState);
    fn finish(st: &KState) -> f32;
}

#[derive(Clone, Copy)]
struct KState {
    acc: [float32x4_t; 2],
    acc1: f32,
    acc_m: f32,
}

struct FQ4K;
struct FQ6K;

impl KQ for FQ4K {
    const WB: usize = 144;

    /// Element `64j + l` (l < 32): low nibble of `qs[32j + l]`; `64j + 32 + l`: its high
    /// nibble.
    #[inline(always)]
    unsafe fn decode(x: *const u8) -> [int8x16_t; 16] {
        let mut v = [vdupq_n_s8(0); 16];
        for j in 0..4 {
            let (a0, a1) = nibbles(x.add(16 + 32 * j));
            let (b0, b1) = nibbles(x.add(16 + 32 * j + 16));
            v[4 * j] = vreinterpretq_s8_u8(a0);
            v[4 * j + 1] = vreinterpretq_s8_u8(b0);
            v[4 * j + 2] = vreinterpretq_s8_u8(a1);
            v[4 * j + 3] = vreinterpretq_s8_u8(b1);
        }
        v
    }

    /// `dot_scalar::dot_q45k` (Q4_K): exact `S = Σ sc*q*y` and `M = Σ mins*bsums`, then
    /// `acc1 = fma(S, dx*dy, acc1)`, `acc_m = fma(M, dminx*dy, acc_m)`.
    #[inline(always)]
    unsafe fn block<const DP: bool>(x: &[u8], v: &[int8x16_t; 16], y: &[u8], st: &mut KState) {
        let (sc, mn) = scales_mins_k4(&x[4..16]);
        let yq = y.as_ptr().add(4) as *const i8;
        let mut s = vdupq_n_s32(0);
        for c in 0..8 {
            let d = vaddq_s32(
                dot16::<DP>(v[2 * c], vld1q_s8(yq.add(32 * c))),
                dot16::<DP>(v[2 * c + 1], vld1q_s8(yq.add(32 * c + 16))),
            );
            s = vmlaq_n_s32(s, d, sc[c] as i32);
        }
        let s = vaddvq_s32(s);
        let m: i32 = (0..8)
            .map(|j| mn[j] as i32 * (bsum(y, 2 * j) + bsum(y, 2 * j + 1)))
            .sum();
        let dy = rd_f32(y, 0);
        st.acc1 = (s as f32).mul_add(rd_f16(x, 0) * dy, st.acc1);
        st.acc_m = (m as f32).mul_add(rd_f16(x, 2) * dy, st.acc_m);
    }

    fn finish(st: &KState) -> f32 {
        st.acc1 - st.acc_m
    }
}

impl KQ for FQ6K {
    const WB: usize = 210;

    /// The unsigned 6-bit values (`dequant::q6_k_values`): per half `h`, element
    /// `128h + 32i + l` from `ql[64h + l (+32 for i odd)]` (low nibble for i < 2) and bits
    /// `2i..2i+2` of `qh[32h + l]`.
    #[inline(always)]
    unsafe fn decode(x: *const u8) -> [int8x16_t; 16] {
        let mut v = [vdupq_n_s8(0); 16];
        let m4 = vdupq_n_u8(0x0F);
        let m2 = vdupq_n_u8(0x30);
        for h in 0..2 {
            for c in 0..2 {
                let a = vld1q_u8(x.add(64 * h + 16 * c));
                let b = vld1q_u8(x.add(64 * h + 32 + 16 * c));
                let q = vld1q_u8(x.add(128 + 32 * h + 16 * c));
                let e = |lowbits: uint8x16_t, hb: uint8x16_t| {
                    vreinterpretq_s8_u8(vorrq_u8(lowbits, vandq_u8(hb, m2)))
                };
                // register 8h + 2i + c holds elements 128h + 32i + 16c ..+16
                v[8 * h + c] = e(vandq_u8(a, m4), vshlq_n_u8::<4>(q));
                v[8 * h + 2 + c] = e(vandq_u8(b, m4), vshlq_n_u8::<2>(q));
                v[8 * h + 4 + c] = e(vshrq_n_u8::<4>(a), q);
                v[8 * h + 6 + c] = e(vshrq_n_u8::<4>(b), vshrq_n_u8::<2>(q));
            }
        }
        v
    }

    /// `dot_scalar::gemm_q6_k`: lanes of `sc * v * y` minus lane `i`'s
    /// `32 * (bs[2i]*sc[2i] + bs[2i+1]*sc[2i+1])`, `acc = fma(dy*dx, lanes, acc)`.
    #[inline(always)]
    unsafe fn block<const DP: bool>(x: &[u8], v: &[int8x16_t; 16], y: &[u8], st: &mut KState) {
        let sc = |g: usize| (x[192 + g] as i8) as i32;
        let yq = y.as_ptr().add(4) as *const i8;
        let mut lo = vdupq_n_s32(0);
        let mut hi = vdupq_n_s32(0);
        for c in 0..8 {
            lo = vmlaq_n_s32(
                lo,
                dot16::<DP>(v[2 * c], vld1q_s8(yq.add(32 * c))),
                sc(2 * c),
            );
            let d = dot16::<DP>(v[2 * c + 1], vld1q_s8(yq.add(32 * c + 16)));
            hi = vmlaq_n_s32(hi, d, sc(2 * c + 1));
        }
        let corr: [i32; 8] = core::array::from_fn(|i| {
            (bsum(y, 2 * i) * sc(2 * i) + bsum(y, 2 * i + 1) * sc(2 * i + 1)) << 5
        });
        lo = vsubq_s32(lo, vld1q_s32(corr.as_ptr()));
        hi = vsubq_s32(hi, vld1q_s32(corr.as_ptr().add(4)));
        fma_lanes(&mut st.acc, rd_f32(y, 0) * rd_f16(x, 208), lo, hi);
    }

    fn finish(st: &KState) -> f32 {
        // SAFETY: NEON is part of every aarch64 CPU.
        unsafe { hsum8(st.acc[0], st.acc[1]) }
    }
}

/// Rows of a K-quant type against `n` Q8_K activation rows.
struct KRows<F, const DP: bool> {
    w: *const u8,
    a: *const u8,
    wrow: usize,
    nb: usize,
    _p: core::marker::PhantomData<F>,
}

impl<F: KQ, const DP: bool> RowKernel<1> for KRows<F, DP> {
    #[inline(always)]
    unsafe fn run<const NT: usize>(&self, rows: [usize; 1], t0: usize) -> [[f32; NT]; 1] {
        let zero = vdupq_n_f32(0.0);
        let mut st = [KState {
            acc: [zero; 2],
            acc1: 0.0,
            acc_m: 0.0,
        }; NT];
        let w = self.w.add(rows[0] * self.wrow);
        for b in 0..self.nb {
            let xp = w.add(b * F::WB);
            let x = core::slice::from_raw_parts(xp, F::WB);
            let v = F::decode(xp);
            for t in 0..NT {
                let yp = self.a.add(((t0 + t) * self.nb + b) * Q8K);
                let y = core::slice::from_raw_parts(yp, Q8K);
                F::block::<DP>(x, &v, y, &mut st[t]);
            }
        }
        [core::array::from_fn(|t| F::finish(&st[t]))]
    }
}

#[inline(always)]
unsafe fn gemm_k<F: KQ, const DP: bool>(k: usize, w: &[u8], a: &[u8], n: usize, out: OutPtr) {
    let nb = k / QK_K;
    let wrow = nb * F::WB;
    let kern = KRows::<F, DP> {
        w: w.as_ptr(),
        a: a.as_ptr(),
        wrow,
        nb,
        _p: core::marker::PhantomData,
    };
    gemm_tiled::<_, 1, 4>(&kern, w.len() / wrow, n, nb * Q8K, out);
}

// ---- entry points ---------------------------------------------------------------------------

macro_rules! entries {
    ($($dp:ident, $neon:ident, $gemm:ident, $f:ty;)*) => {$(
        /// With `sdot`.
        ///
        /// # Safety
        /// The CPU has `dotprod`; buffer lengths checked by the caller.
        #[target_feature(enable = "neon,dotprod")]
        pub(crate) unsafe fn $dp(k: usize, w: &[u8], a: &[u8], n: usize, out: OutPtr) {
            $gemm::<$f, true>(k, w, a, n, out)
        }

        /// Plain NEON.
        ///
        /// # Safety
        /// Buffer lengths checked by the caller.
        pub(crate) unsafe fn $neon(k: usize, w: &[u8], a: &[u8], n: usize, out: OutPtr) {
            $gemm::<$f, false>(k, w, a, n, out)
        }
    )*};
}

entries! {
    gemm_q4_0_dotprod, gemm_q4_0_neon, gemm_b32, FQ4_0;
    gemm_q4_1_dotprod, gemm_q4_1_neon, gemm_b32, FQ4_1;
    gemm_q5_0_dotprod, gemm_q5_0_neon, gemm_b32, FQ5_0;
    gemm_q5_1_dotprod, gemm_q5_1_neon, gemm_b32, FQ5_1;
    gemm_q8_0_dotprod, gemm_q8_0_neon, gemm_b32, FQ8_0;
    gemm_q4_k_dotprod, gemm_q4_k_neon, gemm_k, FQ4K;
    gemm_q6_k_dotprod, gemm_q6_k_neon, gemm_k, FQ6K;
}

/// The NEON level's kernel for `ty` (with `sdot` where `dp`), or `None` (portable).
pub(crate) fn kernel(dp: bool, ty: super::GgmlType) -> Option<super::dispatch::GemmFn> {
    use super::GgmlType::*;
    Some(match (dp, ty) {
        (true, Q4_0) => gemm_q4_0_dotprod,
        (true, Q4_1) => gemm_q4_1_dotprod,
        (true, Q5_0) => gemm_q5_0_dotprod,
        (true, Q5_1) => gemm_q5_1_dotprod,
        (true, Q8_0) => gemm_q8_0_dotprod,
        (true, Q4_K) => gemm_q4_k_dotprod,
        (true, Q6_K) => gemm_q6_k_dotprod,
        (false, Q4_0) => gemm_q4_0_neon,
        (false, Q4_1) => gemm_q4_1_neon,
        (false, Q5_0) => gemm_q5_0_neon,
        (false, Q5_1) => gemm_q5_1_neon,
        (false, Q8_0) => gemm_q8_0_neon,
        (false, Q4_K) => gemm_q4_k_neon,
        (false, Q6_K) => gemm_q6_k_neon,
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::super::{dispatch, gemm::OutPtr, quantize_row, row_bytes, vec_dot_type, GgmlType};
    use rand::rngs::StdRng;
    use rand::{Rng, SeedableRng};
    use GgmlType::*;

    const TYPES: [GgmlType; 7] = [Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, Q4_K, Q6_K];

    /// `m` weight rows: quantized from random floats, or (`raw`) random bytes with small
    /// random f16 scale fields (every quant pattern, Q8_0's -128 included).
    fn weights(rng: &mut StdRng, ty: GgmlType, k: usize, m: usize, raw: bool) -> Vec<u8> {
        let mut w = vec![0u8; m * row_bytes(ty, k).unwrap()];
        if !raw {
            let x: Vec<f32> = (0..m * k).map(|_| rng.random_range(-1.0..1.0f32)).collect();
            quantize_row(ty, &x, &mut w).unwrap();
            return w;
        }
        rng.fill(&mut w[..]);
        let fields: &[usize] = match ty {
            Q4_0 | Q5_0 | Q8_0 => &[0],
            Q4_1 | Q5_1 | Q4_K => &[0, 2],
            Q6_K => &[208],
            _ => unreachable!(),
        };
        for blk in w.chunks_exact_mut(ty.type_size()) {
            for &off in fields {
                let v = rng.random_range(-0.05..0.05f32);
                blk[off..off + 2].copy_from_slice(&half::f16::from_f32(v).to_bits().to_le_bytes());
            }
        }
        w
    }

    fn run(kern: dispatch::GemmFn, k: usize, w: &[u8], a: &[u8], n: usize, m: usize) -> Vec<f32> {
        let mut out = vec![f32::NAN; m * n];
        let o = OutPtr {
            ptr: out.as_mut_ptr(),
            rs: n,
            ts: 1,
        };
        // SAFETY: lengths match; the caller checked the CPU's features.
        unsafe { kern(k, w, a, n, o) };
        out
    }

    /// Both NEON variants equal the portable kernel bit for bit, for every tile shape
    /// (1..=9 tokens, odd row counts) on quantized and raw random weights.
    fn check(dp: bool) {
        let mut rng = StdRng::seed_from_u64(0x11e0);
        for ty in TYPES {
            let scalar = dispatch::kernel(super::super::Isa::Scalar, ty).unwrap();
            let neon = super::kernel(dp, ty).unwrap();
            for (k, m, n) in [(256, 3, 1), (512, 5, 9), (768, 1, 6), (256, 4, 3)] {
                for raw in [false, true] {
                    let w = weights(&mut rng, ty, k, m, raw);
                    let x: Vec<f32> = (0..n * k)
                        .map(|_| rng.random_range(-2.0..2.0f32) * rng.random::<f32>().powi(3))
                        .collect();
                    let a_ty = vec_dot_type(ty);
                    let mut a = vec![0u8; n * row_bytes(a_ty, k).unwrap()];
                    quantize_row(a_ty, &x, &mut a).unwrap();
                    let want = run(scalar, k, &w, &a, n, m);
                    let got = run(neon, k, &w, &a, n, m);
                    for (i, (g, e)) in got.iter().zip(&want).enumerate() {
                        assert_eq!(
                            g.to_bits(),
                            e.to_bits(),
                            "{ty} dotprod={dp} k={k} m={m} n={n} raw={raw} out[{i}]: {g} vs {e}"
                        );
                    }
                }
            }
        }
    }

    #[test]
    fn neon_equals_scalar() {
        check(false);
    }

    #[test]
    fn dotprod_equals_scalar() {
        if !super::dotprod() {
            eprintln!("SKIP: no dotprod on this CPU");
            return;
        }
        check(true);
    }
}
