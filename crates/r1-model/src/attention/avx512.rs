//! Query rows of [`super::attend_row`] with AVX-512: the f16-rounded queries and the f16
//! value accumulators stay in registers for the whole walk over the keys, instead of three
//! out-of-line kernels per key that load and store the accumulator each time. Up to four
//! heads that share a KV head walk the keys together: each key and value is loaded once for
//! all of them, and their independent dependency chains (dot, softmax update, rounded
//! accumulate) overlap instead of one head's latency bounding the loop.
//!
//! The arithmetic is the scalar path's, operation for operation: the dot product's four
//! 16-lane accumulators and reduction tree are ggml's AVX-512 `ggml_vec_dot_f16`, and the
//! accumulator is rounded to f16 after every rescale and every added value. A test compares
//! the two bit for bit.

use std::arch::x86_64::*;

use crate::expf::expf8_nonpos_avx512;

/// Whether this CPU runs the kernel (and the kernels are not capped below AVX-512).
pub(super) fn available() -> bool {
    static OK: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *OK.get_or_init(|| {
        crate::quant::Isa::best() == crate::quant::Isa::Avx512
            && std::is_x86_feature_detected!("avx512f")
            && std::is_x86_feature_detected!("f16c")
            && std::is_x86_feature_detected!("fma")
    })
}

/// The shapes with a register-resident kernel (head dims 64 and 128; others take the
/// portable path).
pub(super) fn supports(hd: usize, dv: usize) -> bool {
    matches!((hd, dv), (64, 64) | (128, 128))
}

/// Heads walked together at most (registers: 4 x (query + accumulator) of 64 dims).
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
        (64, 64) => go!(4, 4),
        (128, 128) => go!(8, 8),
        _ => unreachable!("`supports` admits head dims 64 and 128 only"),
    }
}

/// `G` heads of `16 * NQ` query and `16 * NV` value dims.
#[allow(clippy::too_many_arguments)]
#[target_feature(enable = "avx512f,avx2,fma,f16c")]
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
    let (hd, dv) = (16 * NQ, 16 * NV);
    assert!(q.len() == G * hd && out.len() == G * dv && NQ.is_multiple_of(4));
    let mut qv = [[_mm512_setzero_ps(); NQ]; G];
    for (h, qh) in qv.iter_mut().enumerate() {
        for (i, r) in qh.iter_mut().enumerate() {
            *r = round_f16(_mm512_loadu_ps(q.as_ptr().add(h * hd + 16 * i)));
        }
    }
    let mut acc = [[_mm512_setzero_ps(); NV]; G];
    let mut m = [f32::NEG_INFINITY; G];
    let mut sum = [0.0f32; G];
    // Keys in groups of 8: all scores first, then each head's running maximum decides the
    // exponent arguments in order, eight exps at once, then the updates in slot order.
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
                sc[h][j] = dot64s::<NQ>(&qv[h], kp) * scale;
            }
        }
        // per head: `rescale[j]` when key j raises the maximum (then ms = e, vs = 1),
        // else vs = e and ms = 1
        let mut e = [[0f32; 8]; G];
        let mut rescale = [[false; 8]; G];
        for h in 0..G {
            let mut args = [0f32; 8];
            for j in 0..cnt {
                let s = sc[h][j];
                if s > m[h] {
                    args[j] = m[h] - s;
                    rescale[h][j] = true;
                    m[h] = s;
                } else {
                    args[j] = s - m[h];
                }
            }
            e[h] = expf8_nonpos_avx512(&args);
        }
        for j in 0..cnt {
            let vp = vc.as_ptr().add(buf[j] * vw + voff);
            let mut vsv = [_mm512_setzero_ps(); G];
            for h in 0..G {
                let (ms, vs) = if rescale[h][j] {
                    let msv = _mm512_set1_ps(e[h][j]);
                    for r in acc[h].iter_mut() {
                        *r = round_f16(_mm512_mul_ps(*r, msv));
                    }
                    (e[h][j], 1.0f32)
                } else {
                    (1.0f32, e[h][j])
                };
                vsv[h] = _mm512_set1_ps(vs);
                sum[h] = sum[h].mul_add(ms, vs);
            }
            for i in 0..NV {
                let v = load_f16(vp.add(16 * i));
                for (a, s) in acc.iter_mut().zip(&vsv) {
                    a[i] = round_f16(_mm512_fmadd_ps(v, *s, a[i]));
                }
            }
        }
    }
    for h in 0..G {
        let inv = _mm512_set1_ps(if sum[h] == 0.0 { 0.0 } else { 1.0 / sum[h] });
        for (i, r) in acc[h].iter().enumerate() {
            _mm512_storeu_ps(
                out.as_mut_ptr().add(h * dv + 16 * i),
                _mm512_mul_ps(*r, inv),
            );
        }
    }
}

/// ggml's AVX-512 `ggml_vec_dot_f16` of an f16-valued query (`16 * NQ` dims) with a key.
#[inline(always)]
unsafe fn dot64s<const NQ: usize>(qv: &[__m512; NQ], kp: *const u16) -> f32 {
    let mut a = [_mm512_setzero_ps(); 4];
    for c in 0..NQ / 4 {
        for (j, aj) in a.iter_mut().enumerate() {
            let p = _mm512_mul_ps(qv[4 * c + j], load_f16(kp.add(64 * c + 16 * j)));
            *aj = _mm512_add_ps(*aj, p);
        }
    }
    reduce(a)
}

/// GGML_F32x16_REDUCE and `_mm512_reduce_add_ps`, as ggml sums the four accumulators.
#[inline(always)]
unsafe fn reduce(a: [__m512; 4]) -> f32 {
    let v = _mm512_add_ps(_mm512_add_ps(a[0], a[2]), _mm512_add_ps(a[1], a[3]));
    let lo = _mm512_castps512_ps256(v);
    let hi = _mm256_castpd_ps(_mm512_extractf64x4_pd::<1>(_mm512_castps_pd(v)));
    let t3 = _mm256_add_ps(hi, lo);
    let t6 = _mm_add_ps(_mm256_extractf128_ps::<1>(t3), _mm256_castps256_ps128(t3));
    let mut t = [0f32; 4];
    _mm_storeu_ps(t.as_mut_ptr(), t6);
    (t[0] + t[2]) + (t[1] + t[3])
}

#[inline(always)]
unsafe fn load_f16(p: *const u16) -> __m512 {
    _mm512_cvtph_ps(_mm256_loadu_si256(p as *const __m256i))
}

#[inline(always)]
unsafe fn round_f16(x: __m512) -> __m512 {
    _mm512_cvtph_ps(_mm512_cvtps_ph::<
        { _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC },
    >(x))
}
