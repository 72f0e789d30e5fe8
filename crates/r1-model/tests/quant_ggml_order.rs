//! The dot kernels against a literal transcription of llama.cpp's x86 kernels
//! (`ggml-cpu/arch/x86/quants.c`, the `__AVX2__` branches of `ggml_vec_dot_*`, as built with
//! `-march=native` on an AVX-512 VNNI CPU, where GCC contracts the scalar `summs += a * b`
//! updates into FMAs; for Q4_K the repacked `ggml_gemv_q4_K_8x8_q8_K` of
//! `arch/x86/repack.cpp`, which llama.cpp runs for Q4_K weights on AVX2 CPUs), with the
//! intrinsics emulated on arrays. Every ISA must give the same bits: that is what makes greedy
//! generations equal llama.cpp's.

use r1_model::quant::{self, GgmlType, Isa};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use GgmlType::*;

type F8 = [f32; 8];

fn f16(b: &[u8], o: usize) -> f32 {
    half::f16::from_bits(u16::from_le_bytes([b[o], b[o + 1]])).to_f32()
}

fn f32_at(b: &[u8], o: usize) -> f32 {
    f32::from_le_bytes(b[o..o + 4].try_into().unwrap())
}

fn u32_at(b: &[u8], o: usize) -> u32 {
    u32::from_le_bytes(b[o..o + 4].try_into().unwrap())
}

fn i8s(b: &[u8]) -> [i8; 32] {
    core::array::from_fn(|i| b[i] as i8)
}

fn u8s(b: &[u8]) -> [u8; 32] {
    b[..32].try_into().unwrap()
}

/// Q8_K: d @0, qs @4, bsums @260.
fn bsums(y: &[u8]) -> [i16; 16] {
    core::array::from_fn(|g| i16::from_le_bytes([y[260 + 2 * g], y[261 + 2 * g]]))
}

/// `_mm256_maddubs_epi16`.
fn maddubs(a: &[u8; 32], b: &[i8; 32]) -> [i16; 16] {
    core::array::from_fn(|i| {
        let s = a[2 * i] as i32 * b[2 * i] as i32 + a[2 * i + 1] as i32 * b[2 * i + 1] as i32;
        s.clamp(i16::MIN as i32, i16::MAX as i32) as i16
    })
}

/// `_mm256_madd_epi16` (and its 128-bit form on the first 8 / 4 lanes).
fn madd<const N: usize>(a: &[i16], b: &[i16]) -> [i32; N] {
    core::array::from_fn(|i| {
        (a[2 * i] as i32 * b[2 * i] as i32).wrapping_add(a[2 * i + 1] as i32 * b[2 * i + 1] as i32)
    })
}

/// `_mm256_dpbusd_epi32(zero, a, b)`: what `mul_sum_us8_pairs_float` runs under VNNI.
fn dpbusd(a: &[u8; 32], b: &[i8; 32]) -> [i32; 8] {
    core::array::from_fn(|i| (4 * i..4 * i + 4).map(|j| a[j] as i32 * b[j] as i32).sum())
}

/// `_mm256_sign_epi8(a, b)`.
fn sign(a: &[i8; 32], b: &[i8; 32]) -> [i8; 32] {
    core::array::from_fn(|i| match b[i] {
        0 => 0,
        s if s < 0 => a[i].wrapping_neg(),
        _ => a[i],
    })
}

fn cvt(a: [i32; 8]) -> F8 {
    a.map(|v| v as f32)
}

fn add32(a: [i32; 8], b: [i32; 8]) -> [i32; 8] {
    core::array::from_fn(|i| a[i].wrapping_add(b[i]))
}

/// `_mm256_fmadd_ps(a, b, c)`.
fn fmadd(a: F8, b: F8, c: F8) -> F8 {
    core::array::from_fn(|i| a[i].mul_add(b[i], c[i]))
}

fn set1(x: f32) -> F8 {
    [x; 8]
}

/// `hsum_float_8`: hi128 + lo128, then `+ movehl`, then `+ movehdup` on lane 0.
fn hsum_float_8(x: F8) -> f32 {
    let r: [f32; 4] = core::array::from_fn(|i| x[4 + i] + x[i]);
    let r = [r[0] + r[2], r[1] + r[3]];
    r[0] + r[1]
}

/// `mul_sum_us8_pairs_float` (VNNI build).
fn mul_sum_us8_pairs_float(ax: &[u8; 32], sy: &[i8; 32]) -> F8 {
    cvt(dpbusd(ax, sy))
}

/// `mul_sum_i8_pairs_float`: `|x|` against `sign(y, x)`.
fn mul_sum_i8_pairs_float(x: &[i8; 32], y: &[i8; 32]) -> F8 {
    let ax = sign(x, x).map(|v| v as u8);
    mul_sum_us8_pairs_float(&ax, &sign(y, x))
}

/// `bytes_from_nibbles_32`.
fn nibbles32(qs: &[u8]) -> [u8; 32] {
    core::array::from_fn(|j| if j < 16 { qs[j] & 0xF } else { qs[j - 16] >> 4 })
}

/// `bytes_from_bits_32`: 0xFF where the bit is set.
fn bits32(qh: &[u8]) -> [u8; 32] {
    let v = u32_at(qh, 0);
    core::array::from_fn(|j| if (v >> j) & 1 == 1 { 0xFF } else { 0 })
}

fn b32_dot(ty: GgmlType, x: &[u8], y: &[u8]) -> f32 {
    let (wb, ab) = (ty.type_size(), quant::vec_dot_type(ty).type_size());
    let mut acc = set1(0.0);
    let mut summs = 0f32;
    for (x, y) in x.chunks_exact(wb).zip(y.chunks_exact(ab)) {
        match ty {
            Q4_0 => {
                let d = f16(x, 0) * f16(y, 0);
                let qx = nibbles32(&x[2..]).map(|v| (v as i8).wrapping_sub(8));
                acc = fmadd(set1(d), mul_sum_i8_pairs_float(&qx, &i8s(&y[2..])), acc);
            }
            Q4_1 => {
                summs = f16(x, 2).mul_add(f16(y, 2), summs);
                let d0d1 = f16(x, 0) * f16(y, 0);
                let xy = mul_sum_us8_pairs_float(&nibbles32(&x[4..]), &i8s(&y[4..]));
                acc = fmadd(set1(d0d1), xy, acc);
            }
            Q5_0 => {
                let d = f16(x, 0) * f16(y, 0);
                let hi = bits32(&x[2..]).map(|b| !b & 0xF0);
                let n = nibbles32(&x[6..]);
                let qx: [i8; 32] = core::array::from_fn(|j| (n[j] | hi[j]) as i8);
                acc = fmadd(set1(d), mul_sum_i8_pairs_float(&qx, &i8s(&y[2..])), acc);
            }
            Q5_1 => {
                summs = f16(x, 2).mul_add(f16(y, 2), summs);
                let hi = bits32(&x[4..]).map(|b| b & 0x10);
                let n = nibbles32(&x[8..]);
                let qx: [u8; 32] = core::array::from_fn(|j| n[j] | hi[j]);
                let q = mul_sum_us8_pairs_float(&qx, &i8s(&y[4..]));
                acc = fmadd(q, set1(f16(x, 0) * f16(y, 0)), acc);
            }
            Q8_0 => {
                let d = f16(x, 0) * f16(y, 0);
                acc = fmadd(
                    set1(d),
                    mul_sum_i8_pairs_float(&i8s(&x[2..]), &i8s(&y[2..])),
                    acc,
                );
            }
            _ => unreachable!(),
        }
    }
    let s = hsum_float_8(acc);
    if matches!(ty, Q4_1 | Q5_1) {
        s + summs
    } else {
        s
    }
}

/// The Q4_K / Q5_K `utmp` shuffle: 8 scales then 8 mins, as i16.
fn mins_and_scales(x: &[u8]) -> [i16; 16] {
    let (kmask1, kmask2, kmask3) = (0x3f3f3f3fu32, 0x0f0f0f0fu32, 0x03030303u32);
    let mut utmp = [u32_at(x, 4), u32_at(x, 8), u32_at(x, 12), 0];
    utmp[3] = ((utmp[2] >> 4) & kmask2) | (((utmp[1] >> 6) & kmask3) << 4);
    let uaux = utmp[1] & kmask1;
    utmp[1] = (utmp[2] & kmask2) | (((utmp[0] >> 6) & kmask3) << 4);
    utmp[2] = uaux;
    utmp[0] &= kmask1;
    let bytes: Vec<u8> = utmp.iter().flat_map(|u| u.to_le_bytes()).collect();
    core::array::from_fn(|i| bytes[i] as i16)
}

/// `_mm_madd_epi16(mins, _mm_hadd_epi16(bsums lo, bsums hi))`.
fn k4_min_prod(ms: &[i16; 16], y: &[u8]) -> [i32; 4] {
    let bs = bsums(y);
    let q8s: [i16; 8] = core::array::from_fn(|i| bs[2 * i].wrapping_add(bs[2 * i + 1]));
    madd::<4>(&ms[8..], &q8s)
}

fn k_dot(ty: GgmlType, x: &[u8], y: &[u8]) -> f32 {
    let wb = ty.type_size();
    let mut acc = set1(0.0);
    let mut acc_m = [0f32; 4];
    let mut summs = 0f32;
    for (x, y) in x.chunks_exact(wb).zip(y.chunks_exact(292)) {
        let yd = f32_at(y, 0);
        let q8 = &y[4..260];
        let q8v = |o: usize| i8s(&q8[o..]);
        let mut sumi = [0i32; 8];
        match ty {
            Q4_K => {
                // ggml_gemv_q4_K_8x8_q8_K (repacked, AVX2): one output per lane, whole
                // super-block sums, `acc_row - acc_min_rows` at the end
                let ms = mins_and_scales(x);
                let q8s = {
                    let bs = bsums(y);
                    core::array::from_fn::<i16, 8, _>(|i| bs[2 * i].wrapping_add(bs[2 * i + 1]))
                };
                let (mut iacc, mut iacc_min) = (0i32, 0i32);
                for sb in 0..4 {
                    for half in 0..2 {
                        let j = 2 * sb + half;
                        let bits = &x[16 + 32 * sb..];
                        let mut s16 = 0i32;
                        for l in 0..32 {
                            let q = if half == 0 {
                                bits[l] & 0xF
                            } else {
                                bits[l] >> 4
                            };
                            s16 += q as i32 * q8[32 * j + l] as i8 as i32;
                        }
                        iacc += ms[j] as i32 * s16;
                        iacc_min += ms[8 + j] as i32 * q8s[j] as i32;
                    }
                }
                acc_m[0] = (iacc as f32).mul_add(f16(x, 0) * yd, acc_m[0]);
                acc_m[1] = (iacc_min as f32).mul_add(f16(x, 2) * yd, acc_m[1]);
            }
            Q5_K => {
                let (d, dmin) = (yd * f16(x, 0), -yd * f16(x, 2));
                let ms = mins_and_scales(x);
                let prod = k4_min_prod(&ms, y);
                let h = (prod[0] + prod[1]) + (prod[2] + prod[3]);
                summs = (h as f32).mul_add(dmin, summs);
                let qs = &x[48..176];
                for j in 0..4 {
                    let (sl, sh) = ([ms[2 * j]; 16], [ms[2 * j + 1]; 16]);
                    let bits = u8s(&qs[32 * j..]);
                    let mut lo = bits.map(|b| b & 0xF);
                    let mut hi = bits.map(|b| b >> 4);
                    for l in 0..32 {
                        lo[l] += ((x[16 + l] >> (2 * j)) & 1) << 4;
                        hi[l] += ((x[16 + l] >> (2 * j + 1)) & 1) << 4;
                    }
                    let pl = madd::<8>(&sl, &maddubs(&lo, &q8v(64 * j)));
                    let ph = madd::<8>(&sh, &maddubs(&hi, &q8v(64 * j + 32)));
                    sumi = add32(sumi, add32(pl, ph));
                }
                acc = fmadd(set1(d), cvt(sumi), acc);
            }
            Q6_K => {
                let d = yd * f16(x, 208);
                let sc: [i16; 16] = core::array::from_fn(|i| x[192 + i] as i8 as i16);
                let q8sclsub = madd::<8>(&bsums(y), &sc).map(|v| v << 5);
                for j in 0..2 {
                    let (b1, b2, bh) = (&x[64 * j..], &x[64 * j + 32..], &x[128 + 32 * j..]);
                    let q: [[u8; 32]; 4] = [
                        core::array::from_fn(|l| (b1[l] & 15) | ((bh[l] & 3) << 4)),
                        core::array::from_fn(|l| (b2[l] & 15) | ((bh[l] & 12) << 2)),
                        core::array::from_fn(|l| (b1[l] >> 4) | (bh[l] & 48)),
                        core::array::from_fn(|l| (b2[l] >> 4) | ((bh[l] & 0xC0) >> 2)),
                    ];
                    let mut p = [[0i32; 8]; 4];
                    for v in 0..4 {
                        let is = 4 * j + v;
                        let s: [i16; 16] = core::array::from_fn(|i| sc[2 * is + (i >= 8) as usize]);
                        p[v] = madd::<8>(&s, &maddubs(&q[v], &q8v(128 * j + 32 * v)));
                    }
                    sumi = add32(sumi, add32(p[0], p[1]));
                    sumi = add32(sumi, add32(p[2], p[3]));
                }
                let sumi: [i32; 8] = core::array::from_fn(|i| sumi[i].wrapping_sub(q8sclsub[i]));
                acc = fmadd(set1(d), cvt(sumi), acc);
            }
            Q2_K | Q3_K => {
                let scales: [i16; 16] = if ty == Q2_K {
                    let dmin = -yd * f16(x, 82);
                    let mins: [i16; 16] = core::array::from_fn(|i| (x[i] >> 4) as i16);
                    let prod = madd::<8>(&mins, &bsums(y));
                    acc = fmadd(set1(dmin), cvt(prod), acc);
                    core::array::from_fn(|i| (x[i] & 0xF) as i16)
                } else {
                    let (km1, km2) = (0x03030303u32, 0x0f0f0f0fu32);
                    let aux = [u32_at(x, 96), u32_at(x, 100), u32_at(x, 104)];
                    let words = [
                        (aux[0] & km2) | ((aux[2] & km1) << 4),
                        (aux[1] & km2) | (((aux[2] >> 2) & km1) << 4),
                        ((aux[0] >> 4) & km2) | (((aux[2] >> 4) & km1) << 4),
                        ((aux[1] >> 4) & km2) | (((aux[2] >> 6) & km1) << 4),
                    ];
                    let b: Vec<u8> = words.iter().flat_map(|w| w.to_le_bytes()).collect();
                    core::array::from_fn(|i| b[i].wrapping_sub(32) as i8 as i16)
                };
                let (qs, mut bit) = (if ty == Q2_K { &x[16..80] } else { &x[32..96] }, 0);
                for j in 0..2 {
                    let bits = u8s(&qs[32 * j..]);
                    let mut p = [[0i32; 8]; 4];
                    for v in 0..4 {
                        let ql = bits.map(|b| (b >> (2 * v)) & 3);
                        let y8 = q8v(128 * j + 32 * v);
                        let mut p16 = maddubs(&ql, &y8);
                        if ty == Q3_K {
                            let qh: [u8; 32] = core::array::from_fn(|l| ((!x[l] >> bit) & 1) << 2);
                            let s = maddubs(&qh, &y8);
                            p16 = core::array::from_fn(|i| p16[i].wrapping_sub(s[i]));
                            bit += 1;
                        }
                        // get_scale_shuffle_q3k(v): scale 2v in the low 128 bits, 2v+1 high
                        let s: [i16; 16] =
                            core::array::from_fn(|i| scales[8 * j + 2 * v + (i >= 8) as usize]);
                        p[v] = madd::<8>(&s, &p16);
                    }
                    sumi = add32(sumi, add32(add32(p[0], p[1]), add32(p[2], p[3])));
                }
                let d = yd * f16(x, if ty == Q2_K { 80 } else { 108 });
                acc = fmadd(set1(d), cvt(sumi), acc);
            }
            _ => unreachable!(),
        }
    }
    match ty {
        Q4_K => acc_m[0] - acc_m[1],
        Q5_K => hsum_float_8(acc) + summs,
        _ => hsum_float_8(acc),
    }
}

fn ggml_dot(ty: GgmlType, x: &[u8], y: &[u8]) -> f32 {
    if ty.block_size() == 32 {
        b32_dot(ty, x, y)
    } else {
        k_dot(ty, x, y)
    }
}

/// Random weight rows: quantized from random values, or random bytes with sane f16 scales.
fn weights(rng: &mut StdRng, ty: GgmlType, k: usize, m: usize, raw: bool) -> Vec<u8> {
    let rb = quant::row_bytes(ty, k).unwrap();
    let mut w = vec![0u8; m * rb];
    if !raw {
        let x: Vec<f32> = (0..m * k).map(|_| rng.random_range(-1.0..1.0f32)).collect();
        quant::quantize_row(ty, &x, &mut w).unwrap();
        return w;
    }
    rng.fill(&mut w[..]);
    let fields: &[usize] = match ty {
        Q4_0 | Q5_0 | Q8_0 => &[0],
        Q4_1 | Q5_1 | Q4_K | Q5_K => &[0, 2],
        Q2_K => &[80, 82],
        Q3_K => &[108],
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

#[test]
fn kernels_equal_ggml_x86_order_bit_for_bit() {
    let mut rng = StdRng::seed_from_u64(11);
    let types = [Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, Q2_K, Q3_K, Q4_K, Q5_K, Q6_K];
    for ty in types {
        let ks: &[usize] = if ty.block_size() == 32 {
            &[32, 288, 576, 1536]
        } else {
            &[256, 1536]
        };
        for &k in ks {
            for raw in [false, true] {
                let (m, n) = (7, 9);
                let w = weights(&mut rng, ty, k, m, raw);
                let a_ty = quant::vec_dot_type(ty);
                let x: Vec<f32> = (0..n * k).map(|_| rng.random_range(-3.0..3.0f32)).collect();
                let mut a = vec![0u8; quant::row_bytes(a_ty, k).unwrap() * n];
                quant::quantize_row(a_ty, &x, &mut a).unwrap();
                let (rb, ab) = (w.len() / m, a.len() / n);
                for isa in Isa::available() {
                    for nn in [1, 2, 4, n] {
                        let mut out = vec![0f32; m * nn];
                        quant::try_gemm_isa(isa, ty, k, &w, &a[..nn * ab], nn, &mut out).unwrap();
                        for r in 0..m {
                            for t in 0..nn {
                                let want = ggml_dot(
                                    ty,
                                    &w[r * rb..(r + 1) * rb],
                                    &a[t * ab..(t + 1) * ab],
                                );
                                let got = out[r * nn + t];
                                assert_eq!(
                                    got.to_bits(),
                                    want.to_bits(),
                                    "{ty} k={k} raw={raw} {isa:?} n={nn} row {r} token {t}: {got} vs ggml {want}"
                                );
                            }
                        }
                    }
                }
            }
        }
    }
}
