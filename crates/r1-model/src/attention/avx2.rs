//! Query rows of [`super::attend_row`] with AVX2, for CPUs without AVX-512 (and
//! `R1SERVE_ISA=avx2`): the same plan as the AVX-512 kernel in `avx512.rs`. Up to four heads
//! that share a KV head walk the keys together, eight keys at a time: all scores first, the
//! eight softmax exponentials in one vector call, then the value updates. The per-key
//! out-of-line kernels of `attend_row` (three calls per key and head, a scalar `expf` whose
//! `mul_add`s are library calls outside a `target_feature` function) took 36% of SmolLM2's
//! pp512 at `R1SERVE_ISA=avx2` (perf, 2 threads); with this kernel attention is 19%, about
//! the AVX-512 kernel's share (22%).
//!
//! Sixteen ymm registers hold neither a head's query nor its accumulator (64 dims: 8 each),
//! so the value updates run chunk by chunk: eight dims of every head's accumulator stay in
//! registers while the eight keys are added, the heads' rounded-FMA chains overlapping.
//!
//! The arithmetic is the scalar path's, operation for operation: the dot product is ggml's
//! AVX-512 `ggml_vec_dot_f16` order (four 16-lane accumulators, each as two 8-lane halves,
//! and its reduction tree), and the accumulator is rounded to f16 after every rescale and
//! every added value. Element-wise updates commute across dims, so walking the dims in
//! chunks gives each element the same sequence of operations. A test compares the kernel
//! with the portable row bit for bit.

// Parallel arrays of SIMD registers (per head / per chunk) are indexed together.
#![allow(clippy::needless_range_loop)]

use std::arch::x86_64::*;

use crate::expf::expf8_nonpos_avx2;

/// Whether this CPU runs the kernel (and the kernels are not capped to scalar).
pub(super) fn available() -> bool {
    static OK: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *OK.get_or_init(|| {
        crate::quant::Isa::best() != crate::quant::Isa::Scalar
            && std::is_x86_feature_detected!("avx2")
            && std::is_x86_feature_detected!("f16c")
            && std::is_x86_feature_detected!("fma")
    })
}

/// The shapes with a kernel (head dims 64 and 128; others take the portable path).
pub(super) fn supports(hd: usize, dv: usize) -> bool {
    matches!((hd, dv), (64, 64) | (128, 128))
}

/// Heads walked together at most.
pub(super) const MAX_HEADS: usize = 4;

/// `g` consecutive heads (`q`: `g * hd` values, `out`: `g * dv`) sharing one KV head, each
/// exactly as [`super::attend_row`] computes it alone.
///
/// # Safety
/// [`available`] must be true; `1 <= g <= MAX_HEADS`.
#[allow(clippy::too_many_arguments)]
pub(super) unsafe fn attend_heads(
    g: usize,
    q: &[f32],
    slots: &mut dyn Iterator<Item = usize>,
    kc: &[u16],
    vc: &[u16],
    widths: (usize, usize),
    offs: (usize, usize),
    scale: f32,
    out: &mut [f32],
) {
    let (hd, dv) = (q.len() / g, out.len() / g);
    macro_rules! go {
        ($nq:literal, $nv:literal) => {
            match g {
                1 => heads::<1, $nq, $nv>(q, slots, kc, vc, widths, offs, scale, out),
                2 => heads::<2, $nq, $nv>(q, slots, kc, vc, widths, offs, scale, out),
                3 => heads::<3, $nq, $nv>(q, slots, kc, vc, widths, offs, scale, out),
                _ => heads::<4, $nq, $nv>(q, slots, kc, vc, widths, offs, scale, out),
            }
        };
    }
    match (hd, dv) {
        (64, 64) => go!(8, 8),
        (128, 128) => go!(16, 16),
        _ => unreachable!("`supports` admits head dims 64 and 128 only"),
    }
}

/// `G` heads of `8 * NQ` query and `8 * NV` value dims.
#[allow(clippy::too_many_arguments)]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn heads<const G: usize, const NQ: usize, const NV: usize>(
    q: &[f32],
    slots: &mut dyn Iterator<Item = usize>,
    kc: &[u16],
    vc: &[u16],
    (kw, vw): (usize, usize),
    (koff, voff): (usize, usize),
    scale: f32,
    out: &mut [f32],
) {
    let (hd, dv) = (8 * NQ, 8 * NV);
    assert!(q.len() == G * hd && out.len() == G * dv && NQ.is_multiple_of(8));
    assert!(NV.is_multiple_of(2));
    let mut qv = [[_mm256_setzero_ps(); NQ]; G];
    for (h, qh) in qv.iter_mut().enumerate() {
        for (i, r) in qh.iter_mut().enumerate() {
            *r = round_f16(_mm256_loadu_ps(q.as_ptr().add(h * hd + 8 * i)));
        }
    }
    let mut acc = [[_mm256_setzero_ps(); NV]; G];
    let mut m = [f32::NEG_INFINITY; G];
    let mut sum = [0.0f32; G];
    loop {
        let mut buf = [0usize; 8];
        let mut cnt = 0;
        for slot in (&mut *slots).take(8) {
            let (ko, vo) = (slot * kw + koff, slot * vw + voff);
            assert!(ko + hd <= kc.len() && vo + dv <= vc.len());
            buf[cnt] = slot;
            cnt += 1;
        }
        if cnt == 0 {
            break;
        }
        let mut sc = [[0f32; 8]; G];
        for j in 0..cnt {
            let kp = kc.as_ptr().add(buf[j] * kw + koff);
            for h in 0..G {
                sc[h][j] = dot::<NQ>(&qv[h], kp) * scale;
            }
        }
        // per head: `rescale[j]` when key j raises the maximum (then ms = e, vs = 1),
        // else vs = e and ms = 1
        let mut ms = [[1f32; 8]; G];
        let mut vs = [[1f32; 8]; G];
        let mut rescale = [[false; 8]; G];
        let mut any = [false; G];
        for h in 0..G {
            let mut args = [0f32; 8];
            for j in 0..cnt {
                let s = sc[h][j];
                if s > m[h] {
                    args[j] = m[h] - s;
                    rescale[h][j] = true;
                    any[h] = true;
                    m[h] = s;
                } else {
                    args[j] = s - m[h];
                }
            }
            let e = expf8_nonpos_avx2(&args);
            for j in 0..cnt {
                if rescale[h][j] {
                    ms[h][j] = e[j];
                } else {
                    vs[h][j] = e[j];
                }
                sum[h] = sum[h].mul_add(ms[h][j], vs[h][j]);
            }
        }
        let vp: [*const u16; 8] =
            core::array::from_fn(|j| vc.as_ptr().add(buf[j.min(cnt - 1)] * vw + voff));
        // two chunks of eight dims at a time, every head's in registers over the keys
        for i in (0..NV).step_by(2) {
            let mut a: [[__m256; 2]; G] = core::array::from_fn(|h| [acc[h][i], acc[h][i + 1]]);
            for j in 0..cnt {
                let v = [load_f16(vp[j].add(8 * i)), load_f16(vp[j].add(8 * i + 8))];
                for h in 0..G {
                    if any[h] && rescale[h][j] {
                        let s = _mm256_set1_ps(ms[h][j]);
                        for c in 0..2 {
                            a[h][c] = round_f16(_mm256_mul_ps(a[h][c], s));
                        }
                    }
                    let s = _mm256_set1_ps(vs[h][j]);
                    for c in 0..2 {
                        a[h][c] = round_f16(_mm256_fmadd_ps(v[c], s, a[h][c]));
                    }
                }
            }
            for h in 0..G {
                acc[h][i] = a[h][0];
                acc[h][i + 1] = a[h][1];
            }
        }
    }
    for h in 0..G {
        let inv = _mm256_set1_ps(if sum[h] == 0.0 { 0.0 } else { 1.0 / sum[h] });
        for (i, r) in acc[h].iter().enumerate() {
            _mm256_storeu_ps(out.as_mut_ptr().add(h * dv + 8 * i), _mm256_mul_ps(*r, inv));
        }
    }
}

/// ggml's AVX-512 `ggml_vec_dot_f16` of an f16-valued query (`8 * NQ` dims) with a key:
/// 16-lane accumulator `j` is `a[2j]` (lanes 0-7) and `a[2j + 1]` (lanes 8-15).
#[inline(always)]
unsafe fn dot<const NQ: usize>(qv: &[__m256; NQ], kp: *const u16) -> f32 {
    let mut a = [_mm256_setzero_ps(); 8];
    for c in 0..NQ / 8 {
        for (r, ar) in a.iter_mut().enumerate() {
            // products of f16 values are exact in f32, so mul + add == fma
            let p = _mm256_mul_ps(qv[8 * c + r], load_f16(kp.add(64 * c + 8 * r)));
            *ar = _mm256_add_ps(*ar, p);
        }
    }
    // GGML_F32x16_REDUCE (x0 += x2, x1 += x3; x0 += x1) on both halves, then
    // `_mm512_reduce_add_ps`: t3 = hi + lo, t6 = t3[4..] + t3[..4], then pairs
    let lo = _mm256_add_ps(_mm256_add_ps(a[0], a[4]), _mm256_add_ps(a[2], a[6]));
    let hi = _mm256_add_ps(_mm256_add_ps(a[1], a[5]), _mm256_add_ps(a[3], a[7]));
    let t3 = _mm256_add_ps(hi, lo);
    let t6 = _mm_add_ps(_mm256_extractf128_ps::<1>(t3), _mm256_castps256_ps128(t3));
    let mut t = [0f32; 4];
    _mm_storeu_ps(t.as_mut_ptr(), t6);
    (t[0] + t[2]) + (t[1] + t[3])
}

#[inline(always)]
unsafe fn load_f16(p: *const u16) -> __m256 {
    _mm256_cvtph_ps(_mm_loadu_si128(p as *const __m128i))
}

#[inline(always)]
unsafe fn round_f16(x: __m256) -> __m256 {
    _mm256_cvtph_ps(_mm256_cvtps_ph::<_MM_FROUND_TO_NEAREST_INT>(x))
}
