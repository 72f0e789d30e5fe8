//! Causal GQA attention of a flattened batch over the paged f16 KV cache.
//!
//! Numerics follow ggml's CPU flash attention (`flash_attn_ext_f16_one_chunk`), the path
//! llama.cpp takes for decode and short prompts: the query is rounded to f16, scores are f32
//! dot products with the f16 keys, the softmax is online, and the value accumulator is kept in
//! f16 (rounded after every rescale and every added value). Matching it is what makes greedy
//! output token-identical to llama.cpp's on the reference prompts.
//!
//! Every query row walks its keys in position order 0..=pos with that one algorithm, so its
//! result depends only on the query and the cached K/V — not on which other sequences share
//! the batch, how the prompt was chunked, or whether the prefix came from the prefix cache.
//! (llama.cpp itself switches to a tiled f32 algorithm for 64+ query rows, so its output does
//! depend on the batch.)

#[cfg(target_arch = "x86_64")]
mod avx2;
#[cfg(target_arch = "x86_64")]
mod avx512;

use std::cell::RefCell;

use crate::batch::Batch;
use crate::f16;
use crate::kv_cache::KvCache;
use crate::ops::SharedMut;
use crate::pool::ThreadPool;

pub struct AttnShape {
    pub n_heads: usize,
    pub n_kv_heads: usize,
    pub head_dim: usize,
    pub scale: f32,
}

/// Store the new tokens' K and V (`[T, width]` each, f32) in their cache slots as f16.
pub fn write_kv(kv: &mut KvCache, layer: usize, batch: &Batch, k: &[f32], v: &[f32]) {
    let (kw, vw) = (kv.layout().k_width, kv.layout().v_width);
    let slots: Vec<(usize, usize)> = batch
        .seqs
        .iter()
        .flat_map(|s| (0..s.len).map(move |i| (s, i)))
        .map(|(s, i)| (s.start + i, kv.slot(&s.block_table, s.pos0 + i)))
        .collect();
    let (kc, vc) = kv.layer_mut(layer);
    for (row, slot) in slots {
        for (d, &x) in kc[slot * kw..(slot + 1) * kw]
            .iter_mut()
            .zip(&k[row * kw..(row + 1) * kw])
        {
            *d = f16::from_f32(x);
        }
        for (d, &x) in vc[slot * vw..(slot + 1) * vw]
            .iter_mut()
            .zip(&v[row * vw..(row + 1) * vw])
        {
            *d = f16::from_f32(x);
        }
    }
}

/// Per-thread scratch: the f16-rounded query and the f16 value accumulator (held as f32
/// values that are always exactly representable in f16).
struct Scratch {
    q: Vec<f32>,
    acc: Vec<f32>,
}

thread_local! {
    static SCRATCH: RefCell<Scratch> = const { RefCell::new(Scratch { q: Vec::new(), acc: Vec::new() }) };
}

/// `q · k` for an f16-valued query and f16 keys, summed in exactly the order of ggml's
/// AVX-512 `ggml_vec_dot_f16` (four 16-lane accumulators over 64-element steps, a fixed
/// reduction tree, leftovers added in f64). Products of two f16 values are exact in f32, so
/// plain multiply-add equals the FMA ggml uses.
#[inline]
fn dot_f16(q: &[f32], k: &[u16], table: &[f32]) -> f32 {
    let n = q.len();
    let np = n & !63;
    let mut acc = [[0.0f32; 16]; 4];
    for i in (0..np).step_by(64) {
        for (j, a) in acc.iter_mut().enumerate() {
            for (l, x) in a.iter_mut().enumerate() {
                let e = i + 16 * j + l;
                *x += q[e] * table[k[e] as usize];
            }
        }
    }
    // GGML_F32x16_REDUCE: x0 += x2, x1 += x3; x0 += x1; then _mm512_reduce_add_ps.
    let mut v = [0.0f32; 16];
    for l in 0..16 {
        v[l] = (acc[0][l] + acc[2][l]) + (acc[1][l] + acc[3][l]);
    }
    let mut t3 = [0.0f32; 8];
    for m in 0..8 {
        t3[m] = v[8 + m] + v[m];
    }
    let mut t6 = [0.0f32; 4];
    for m in 0..4 {
        t6[m] = t3[4 + m] + t3[m];
    }
    let mut sum = ((t6[0] + t6[2]) + (t6[1] + t6[3])) as f64;
    for e in np..n {
        sum += (q[e] * table[k[e] as usize]) as f64;
    }
    sum as f32
}

/// The two inner loops of [`attend_row`], with identical results on every path.
#[derive(Clone, Copy)]
struct Kernels {
    dot: fn(&[f32], &[u16], &[f32]) -> f32,
    /// `acc = round_f16(v · vs + acc)` (fused multiply-add, as ggml's `ggml_vec_mad_f16`).
    mad: fn(&mut [f32], &[u16], f32, &[f32]),
    /// `acc = round_f16(acc · ms)` (`ggml_vec_scale_f16`).
    scale: fn(&mut [f32], f32),
}

fn mad_scalar(acc: &mut [f32], v: &[u16], vs: f32, table: &[f32]) {
    for (a, &x) in acc.iter_mut().zip(v) {
        *a = f16::round(table[x as usize].mul_add(vs, *a));
    }
}

fn scale_scalar(acc: &mut [f32], ms: f32) {
    for a in acc.iter_mut() {
        *a = f16::round(*a * ms);
    }
}

fn kernels() -> Kernels {
    static K: std::sync::OnceLock<Kernels> = std::sync::OnceLock::new();
    *K.get_or_init(|| {
        #[cfg(target_arch = "x86_64")]
        {
            if std::is_x86_feature_detected!("avx2")
                && std::is_x86_feature_detected!("fma")
                && std::is_x86_feature_detected!("f16c")
                && crate::quant::Isa::best() != crate::quant::Isa::Scalar
            {
                return Kernels {
                    dot: x86::dot_f16_safe,
                    mad: x86::mad_safe,
                    scale: x86::scale_safe,
                };
            }
        }
        Kernels {
            dot: dot_f16,
            mad: mad_scalar,
            scale: scale_scalar,
        }
    })
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use std::arch::x86_64::*;

    pub fn dot_f16_safe(q: &[f32], k: &[u16], table: &[f32]) -> f32 {
        // SAFETY: selected only when AVX2, FMA and F16C are present; lengths are equal.
        unsafe { dot_f16(q, k, table) }
    }
    pub fn mad_safe(acc: &mut [f32], v: &[u16], vs: f32, table: &[f32]) {
        // SAFETY: as above.
        unsafe { mad(acc, v, vs, table) }
    }
    pub fn scale_safe(acc: &mut [f32], ms: f32) {
        // SAFETY: as above.
        unsafe { scale(acc, ms) }
    }

    #[inline(always)]
    unsafe fn load_f16(p: *const u16) -> __m256 {
        _mm256_cvtph_ps(_mm_loadu_si128(p as *const __m128i))
    }

    #[inline(always)]
    unsafe fn round_f16(x: __m256) -> __m256 {
        _mm256_cvtph_ps(_mm256_cvtps_ph::<_MM_FROUND_TO_NEAREST_INT>(x))
    }

    /// The scalar `dot_f16` order with each 16-lane accumulator held in two registers.
    #[target_feature(enable = "avx2,fma,f16c")]
    unsafe fn dot_f16(q: &[f32], k: &[u16], table: &[f32]) -> f32 {
        let n = q.len();
        let np = n & !63;
        let mut acc = [_mm256_setzero_ps(); 8]; // acc[2j] lanes 0-7, acc[2j+1] lanes 8-15
        let (qp, kp) = (q.as_ptr(), k.as_ptr());
        let mut i = 0;
        while i < np {
            for (r, a) in acc.iter_mut().enumerate() {
                let e = i + 8 * r;
                // Products of f16 values are exact in f32, so add == fma here.
                *a = _mm256_add_ps(
                    *a,
                    _mm256_mul_ps(_mm256_loadu_ps(qp.add(e)), load_f16(kp.add(e))),
                );
            }
            i += 64;
        }
        let lo = _mm256_add_ps(_mm256_add_ps(acc[0], acc[4]), _mm256_add_ps(acc[2], acc[6]));
        let hi = _mm256_add_ps(_mm256_add_ps(acc[1], acc[5]), _mm256_add_ps(acc[3], acc[7]));
        // v[0..8] = lo, v[8..16] = hi; t3[m] = v[8+m] + v[m]
        let t3 = _mm256_add_ps(hi, lo);
        // t6[m] = t3[4+m] + t3[m]
        let t6 = _mm_add_ps(_mm256_extractf128_ps::<1>(t3), _mm256_castps256_ps128(t3));
        let mut t = [0f32; 4];
        _mm_storeu_ps(t.as_mut_ptr(), t6);
        let mut sum = ((t[0] + t[2]) + (t[1] + t[3])) as f64;
        for e in np..n {
            sum += (q[e] * table[k[e] as usize]) as f64;
        }
        sum as f32
    }

    #[target_feature(enable = "avx2,fma,f16c")]
    unsafe fn mad(acc: &mut [f32], v: &[u16], vs: f32, table: &[f32]) {
        let n = acc.len();
        let np = n & !7;
        let s = _mm256_set1_ps(vs);
        let (ap, vp) = (acc.as_mut_ptr(), v.as_ptr());
        let mut i = 0;
        while i < np {
            let x = _mm256_fmadd_ps(load_f16(vp.add(i)), s, _mm256_loadu_ps(ap.add(i)));
            _mm256_storeu_ps(ap.add(i), round_f16(x));
            i += 8;
        }
        for e in np..n {
            acc[e] = super::f16::round(table[v[e] as usize].mul_add(vs, acc[e]));
        }
    }

    #[target_feature(enable = "avx2,fma,f16c")]
    unsafe fn scale(acc: &mut [f32], ms: f32) {
        let n = acc.len();
        let np = n & !7;
        let s = _mm256_set1_ps(ms);
        let ap = acc.as_mut_ptr();
        let mut i = 0;
        while i < np {
            _mm256_storeu_ps(
                ap.add(i),
                round_f16(_mm256_mul_ps(_mm256_loadu_ps(ap.add(i)), s)),
            );
            i += 8;
        }
        for a in acc[np..].iter_mut() {
            *a = super::f16::round(*a * ms);
        }
    }
}

/// One query row against keys/values `slots` (in position order), ggml's online softmax, on
/// the out-of-line kernels (AVX2 or scalar); `avx512` walks several heads at once instead.
#[allow(clippy::too_many_arguments)]
fn attend_row(
    q: &[f32],
    slots: impl Iterator<Item = usize>,
    kc: &[u16],
    vc: &[u16],
    (kw, vw): (usize, usize),
    (koff, voff): (usize, usize),
    scale: f32,
    scratch: &mut Scratch,
    out: &mut [f32],
) {
    let table = f16::table();
    let kern = kernels();
    let hd = q.len();
    let dv = out.len();
    scratch.q.clear();
    scratch.q.extend(q.iter().map(|&x| f16::round(x)));
    scratch.acc.clear();
    scratch.acc.resize(dv, 0.0);
    let (qh, acc) = (&scratch.q, &mut scratch.acc);
    let mut m = f32::NEG_INFINITY;
    let mut sum = 0.0f32;
    for slot in slots {
        let kvec = &kc[slot * kw + koff..slot * kw + koff + hd];
        let s = (kern.dot)(qh, kvec, table) * scale;
        let mut ms = 1.0f32;
        let mut vs = 1.0f32;
        if s > m {
            ms = crate::expf::expf_nonpos(m - s);
            m = s;
            (kern.scale)(acc, ms);
        } else {
            vs = crate::expf::expf_nonpos(s - m);
        }
        let vvec = &vc[slot * vw + voff..slot * vw + voff + dv];
        (kern.mad)(acc, vvec, vs, table);
        // GCC contracts ggml's `S = S*ms + vs` into an FMA.
        sum = sum.mul_add(ms, vs);
    }
    let inv = if sum == 0.0 { 0.0 } else { 1.0 / sum };
    for (o, &a) in out.iter_mut().zip(acc.iter()) {
        *o = a * inv;
    }
}

/// `out[t, h*hd..]` = softmax(q_t,h · K) · V over positions `0..=pos_t` of t's sequence.
/// `q` is `[T, n_heads * head_dim]`; the new tokens' K/V must already be in the cache.
pub fn attention(
    pool: &ThreadPool,
    kv: &KvCache,
    layer: usize,
    batch: &Batch,
    shape: &AttnShape,
    q: &[f32],
    out: &mut [f32],
) {
    let AttnShape {
        n_heads,
        n_kv_heads,
        head_dim: hd,
        scale,
    } = *shape;
    let group = n_heads / n_kv_heads;
    let (kc, vc) = kv.layer(layer);
    let widths = (kv.layout().k_width, kv.layout().v_width);
    let tasks: Vec<(usize, usize)> = batch
        .seqs
        .iter()
        .enumerate()
        .flat_map(|(si, s)| (0..s.len).map(move |i| (si, i)))
        .collect();
    let qd = n_heads * hd;
    let ptr = SharedMut::new(out);
    // Heads that share a KV head walk its keys together (AVX-512, else AVX2), in chunks of
    // `per`.
    #[cfg(target_arch = "x86_64")]
    let wide = avx512::available() && avx512::supports(hd, hd);
    #[cfg(target_arch = "x86_64")]
    let together = wide || (avx2::available() && avx2::supports(hd, hd));
    #[cfg(not(target_arch = "x86_64"))]
    let together = false;
    let per = if together {
        group.min(MAX_HEADS_TOGETHER)
    } else {
        1
    };
    let chunks = group.div_ceil(per);
    // One task per (token, KV head, chunk of its query heads).
    pool.run(tasks.len() * n_kv_heads * chunks, |task| {
        let (si, i) = tasks[task / (n_kv_heads * chunks)];
        let kvh = (task / chunks) % n_kv_heads;
        let h0 = kvh * group + (task % chunks) * per;
        let g = per.min(kvh * group + group - h0);
        let s = &batch.seqs[si];
        let row = s.start + i;
        let pos = s.pos0 + i;
        let qv = &q[row * qd + h0 * hd..row * qd + (h0 + g) * hd];
        // SAFETY: each (row, head) output slice is written by exactly one task.
        let o = unsafe { ptr.slice(row * qd + h0 * hd, g * hd) };
        #[cfg_attr(not(target_arch = "x86_64"), allow(unused_mut))]
        let mut slots = (0..=pos).map(|p| kv.slot(&s.block_table, p));
        let offs = (kvh * hd, kvh * hd);
        #[cfg(target_arch = "x86_64")]
        if together {
            // SAFETY: CPU and shapes checked above; `g <= MAX_HEADS` of either kernel.
            unsafe {
                if wide {
                    avx512::attend_heads(g, qv, &mut slots, kc, vc, widths, offs, scale, o)
                } else {
                    avx2::attend_heads(g, qv, &mut slots, kc, vc, widths, offs, scale, o)
                }
            };
            return;
        }
        SCRATCH.with(|sc| {
            attend_row(
                qv,
                slots,
                kc,
                vc,
                widths,
                offs,
                scale,
                &mut sc.borrow_mut(),
                o,
            )
        });
    });
}

#[cfg(target_arch = "x86_64")]
const MAX_HEADS_TOGETHER: usize = if avx512::MAX_HEADS < avx2::MAX_HEADS {
    avx512::MAX_HEADS
} else {
    avx2::MAX_HEADS
};
#[cfg(not(target_arch = "x86_64"))]
const MAX_HEADS_TOGETHER: usize = 1;

#[cfg(test)]
mod tests {
    use super::*;

    /// What `attend_heads` of the AVX2 and AVX-512 kernels looks like.
    #[cfg(target_arch = "x86_64")]
    type AttendHeads = unsafe fn(
        usize,
        &[f32],
        &mut dyn Iterator<Item = usize>,
        &[u16],
        &[u16],
        (usize, usize),
        (usize, usize),
        f32,
        &mut [f32],
    );

    /// The register-resident rows of `kernel`, alone or with other heads of their KV head,
    /// equal the out-of-line kernels bit for bit over long key walks with many rescales.
    #[cfg(target_arch = "x86_64")]
    fn register_rows_equal_portable_rows(kernel: AttendHeads, max_heads: usize) {
        let mut seed = 7u64;
        let mut rnd = || {
            seed = seed
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            ((seed >> 40) as f32 / (1u64 << 24) as f32 - 0.5) * 6.0
        };
        for (hd, dv, n) in [(64usize, 64usize, 300usize), (128, 128, 77), (64, 64, 5)] {
            let (kw, vw) = (2 * hd, 2 * dv);
            let kc: Vec<u16> = (0..n * kw).map(|_| f16::from_f32(rnd())).collect();
            let vc: Vec<u16> = (0..n * vw).map(|_| f16::from_f32(rnd())).collect();
            // keys in a scattered slot order, as a paged cache gives them
            let order: Vec<usize> = (0..n).map(|i| (i * 37) % n).collect();
            let scale = 1.0 / (hd as f32).sqrt();
            for g in 1..=max_heads {
                let q: Vec<f32> = (0..g * hd).map(|_| rnd()).collect();
                let offs = (hd, dv); // the second KV head
                let mut a = vec![0f32; g * dv];
                let mut it = order.iter().copied();
                unsafe { kernel(g, &q, &mut it, &kc, &vc, (kw, vw), offs, scale, &mut a) };
                for h in 0..g {
                    let mut b = vec![0f32; dv];
                    let mut sc = Scratch {
                        q: Vec::new(),
                        acc: Vec::new(),
                    };
                    attend_row(
                        &q[h * hd..(h + 1) * hd],
                        order.iter().copied(),
                        &kc,
                        &vc,
                        (kw, vw),
                        offs,
                        scale,
                        &mut sc,
                        &mut b,
                    );
                    let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
                    assert_eq!(
                        bits(&a[h * dv..(h + 1) * dv]),
                        bits(&b),
                        "hd={hd} dv={dv} n={n} g={g} head={h}"
                    );
                }
            }
        }
    }

    #[cfg(target_arch = "x86_64")]
    #[test]
    fn avx512_row_equals_portable_row() {
        if !avx512::available() {
            eprintln!("SKIP: no AVX-512 on this CPU");
            return;
        }
        register_rows_equal_portable_rows(avx512::attend_heads, avx512::MAX_HEADS);
    }

    #[cfg(target_arch = "x86_64")]
    #[test]
    fn avx2_row_equals_portable_row() {
        if !avx2::available() {
            eprintln!("SKIP: no AVX2 on this CPU (or R1SERVE_ISA=scalar)");
            return;
        }
        register_rows_equal_portable_rows(avx2::attend_heads, avx2::MAX_HEADS);
    }

    #[test]
    fn simd_and_scalar_kernels_agree_bit_for_bit() {
        let k = kernels();
        let table = f16::table();
        let mut seed = 1u64;
        let mut rnd = || {
            seed = seed
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            ((seed >> 40) as f32 / (1u64 << 24) as f32 - 0.5) * 8.0
        };
        for n in [64usize, 128, 80, 13] {
            let q: Vec<f32> = (0..n).map(|_| f16::round(rnd())).collect();
            let kv: Vec<u16> = (0..n).map(|_| f16::from_f32(rnd())).collect();
            assert_eq!(
                (k.dot)(&q, &kv, table).to_bits(),
                dot_f16(&q, &kv, table).to_bits(),
                "dot n={n}"
            );
            let mut a: Vec<f32> = (0..n).map(|_| f16::round(rnd())).collect();
            let mut b = a.clone();
            (k.mad)(&mut a, &kv, 0.37, table);
            mad_scalar(&mut b, &kv, 0.37, table);
            assert_eq!(a, b, "mad n={n}");
            (k.scale)(&mut a, 0.61);
            scale_scalar(&mut b, 0.61);
            assert_eq!(a, b, "scale n={n}");
        }
    }
}
