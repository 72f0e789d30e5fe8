//! Attention scores of MLA: `s[j, h] = q_h · k_j` for a tile of cache rows and every head
//! of a task (576 values per row for DeepSeek-V3), register-blocked.
//!
//! Each dot product has one fixed order on every ISA: element `i` is fused-multiply-added
//! into lane `i % 16` (a tail shorter than 16 is padded with zeros, which add nothing), and
//! the 16 lanes are summed as a tree: `l[t] + l[t + 8]`, then `+4`, `+2`, `+1`. AVX-512 holds
//! the 16 lanes in one register, AVX2 in two, the portable code in an array; the blocking (4
//! rows × 4 heads share their loads) changes nothing in any one product.

use crate::quant::Isa;

const LANES: usize = 16;

/// The lane tree of the module docs.
#[inline(always)]
fn reduce(l: [f32; LANES]) -> f32 {
    let s8: [f32; 8] = std::array::from_fn(|t| l[t] + l[t + 8]);
    let s4: [f32; 4] = std::array::from_fn(|t| s8[t] + s8[t + 4]);
    let s2 = [s4[0] + s4[2], s4[1] + s4[3]];
    s2[0] + s2[1]
}

/// `out[j * nq + h] = q[h] · rows[j]` for `nq` queries of `k` values (`q`: `[nq, k]`) and
/// each row (at least `k` values).
pub(crate) fn scores(q: &[f32], nq: usize, k: usize, rows: &[&[f32]], out: &mut [f32]) {
    assert!(q.len() >= nq * k && out.len() >= rows.len() * nq);
    assert!(rows.iter().all(|r| r.len() >= k));
    #[cfg(target_arch = "x86_64")]
    {
        match Isa::best() {
            // SAFETY: AVX-512 F is present (`Isa::best` checked it); lengths checked above.
            Isa::Avx512 => return unsafe { scores_avx512(q, nq, k, rows, out) },
            // SAFETY: AVX2 and FMA are present; lengths checked above.
            Isa::Avx2 => return unsafe { scores_avx2(q, nq, k, rows, out) },
            Isa::Scalar => {}
        }
    }
    scores_portable(q, nq, k, rows, out);
}

fn scores_portable(q: &[f32], nq: usize, k: usize, rows: &[&[f32]], out: &mut [f32]) {
    for (j, row) in rows.iter().enumerate() {
        for h in 0..nq {
            let qh = &q[h * k..(h + 1) * k];
            let mut l = [0.0f32; LANES];
            for c in (0..k).step_by(LANES) {
                for (t, lane) in l.iter_mut().enumerate() {
                    let (x, y) = if c + t < k {
                        (qh[c + t], row[c + t])
                    } else {
                        (0.0, 0.0)
                    };
                    *lane = x.mul_add(y, *lane);
                }
            }
            out[j * nq + h] = reduce(l);
        }
    }
}

// Parallel arrays of registers (per head / per chunk) are indexed together.
#[allow(clippy::needless_range_loop)]
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx2,fma")]
unsafe fn scores_avx512(q: &[f32], nq: usize, k: usize, rows: &[&[f32]], out: &mut [f32]) {
    use std::arch::x86_64::*;
    let full = k / LANES;
    let tail = k % LANES;
    let mask: __mmask16 = ((1u32 << tail) - 1) as __mmask16;
    let load = |p: *const f32, c: usize| -> __m512 {
        if c < full {
            _mm512_loadu_ps(p.add(c * LANES))
        } else {
            _mm512_maskz_loadu_ps(mask, p.add(c * LANES))
        }
    };
    let chunks = full + usize::from(tail > 0);
    // The lane tree of `reduce`, in registers: lanes 8..16 onto 0..8, then 4, 2, 1.
    let finish = |v: __m512| -> f32 {
        let hi = _mm512_shuffle_f32x4::<0b11_10_11_10>(v, v);
        let s8 = _mm256_add_ps(_mm512_castps512_ps256(v), _mm512_castps512_ps256(hi));
        let s4 = _mm_add_ps(_mm256_castps256_ps128(s8), _mm256_extractf128_ps::<1>(s8));
        let s2 = _mm_add_ps(s4, _mm_movehl_ps(s4, s4));
        _mm_cvtss_f32(_mm_add_ss(s2, _mm_shuffle_ps::<1>(s2, s2)))
    };
    let n = rows.len();
    let mut j = 0;
    while j < n {
        let jb = (n - j).min(4);
        let mut h = 0;
        while h < nq {
            let hb = (nq - h).min(4);
            let mut acc = [[_mm512_setzero_ps(); 4]; 4];
            for c in 0..chunks {
                let qv: [__m512; 4] = std::array::from_fn(|b| {
                    if b < hb {
                        load(q.as_ptr().add((h + b) * k), c)
                    } else {
                        _mm512_setzero_ps()
                    }
                });
                for a in 0..jb {
                    let kv = load(rows[j + a].as_ptr(), c);
                    for b in 0..hb {
                        acc[a][b] = _mm512_fmadd_ps(qv[b], kv, acc[a][b]);
                    }
                }
            }
            for a in 0..jb {
                for b in 0..hb {
                    out[(j + a) * nq + h + b] = finish(acc[a][b]);
                }
            }
            h += hb;
        }
        j += jb;
    }
}

// Parallel arrays of registers (per head / per chunk) are indexed together.
#[allow(clippy::needless_range_loop)]
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn scores_avx2(q: &[f32], nq: usize, k: usize, rows: &[&[f32]], out: &mut [f32]) {
    use std::arch::x86_64::*;
    // Lanes 0..8 and 8..16 in two registers; a padded copy of the tail keeps loads in bounds.
    let chunks = k.div_ceil(LANES);
    let tail = k % LANES;
    let load = |p: *const f32, c: usize, half: usize| -> __m256 {
        let base = c * LANES + half * 8;
        if tail == 0 || c + 1 < chunks {
            _mm256_loadu_ps(p.add(base))
        } else {
            let mut buf = [0.0f32; 8];
            for (i, b) in buf.iter_mut().enumerate() {
                if base + i < k {
                    *b = *p.add(base + i);
                }
            }
            _mm256_loadu_ps(buf.as_ptr())
        }
    };
    let finish = |lo: __m256, hi: __m256| -> f32 {
        let mut l = [0.0f32; LANES];
        _mm256_storeu_ps(l.as_mut_ptr(), lo);
        _mm256_storeu_ps(l.as_mut_ptr().add(8), hi);
        reduce(l)
    };
    let n = rows.len();
    let mut j = 0;
    while j < n {
        let jb = (n - j).min(2);
        let mut h = 0;
        while h < nq {
            let hb = (nq - h).min(3);
            let mut acc = [[[_mm256_setzero_ps(); 2]; 3]; 2];
            for c in 0..chunks {
                for half in 0..2 {
                    let qv: [__m256; 3] = std::array::from_fn(|b| {
                        if b < hb {
                            load(q.as_ptr().add((h + b) * k), c, half)
                        } else {
                            _mm256_setzero_ps()
                        }
                    });
                    for a in 0..jb {
                        let kv = load(rows[j + a].as_ptr(), c, half);
                        for b in 0..hb {
                            acc[a][b][half] = _mm256_fmadd_ps(qv[b], kv, acc[a][b][half]);
                        }
                    }
                }
            }
            for a in 0..jb {
                for b in 0..hb {
                    out[(j + a) * nq + h + b] = finish(acc[a][b][0], acc[a][b][1]);
                }
            }
            h += hb;
        }
        j += jb;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{Rng, SeedableRng};

    #[test]
    fn every_isa_gives_the_portable_scores_bit_for_bit() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(11);
        for (k, nq, n) in [
            (576, 16, 64),
            (24, 4, 7),
            (40, 5, 13),
            (16, 1, 1),
            (100, 3, 5),
        ] {
            let q: Vec<f32> = (0..nq * k)
                .map(|_| rng.random_range(-1.0f32..1.0))
                .collect();
            let data: Vec<Vec<f32>> = (0..n)
                .map(|_| (0..k).map(|_| rng.random_range(-1.0f32..1.0)).collect())
                .collect();
            let rows: Vec<&[f32]> = data.iter().map(|r| r.as_slice()).collect();
            let mut want = vec![0.0; n * nq];
            scores_portable(&q, nq, k, &rows, &mut want);
            for j in 0..n {
                for h in 0..nq {
                    let exact: f64 = (0..k)
                        .map(|i| q[h * k + i] as f64 * rows[j][i] as f64)
                        .sum();
                    assert!((want[j * nq + h] as f64 - exact).abs() < 1e-4);
                }
            }
            #[cfg(target_arch = "x86_64")]
            for isa in [Isa::Avx2, Isa::Avx512] {
                if !isa.is_available() {
                    eprintln!("SKIP: {isa:?} is not available on this CPU");
                    continue;
                }
                let mut got = vec![0.0; n * nq];
                // SAFETY: the ISA is available; lengths as asserted in `scores`.
                unsafe {
                    match isa {
                        Isa::Avx2 => scores_avx2(&q, nq, k, &rows, &mut got),
                        _ => scores_avx512(&q, nq, k, &rows, &mut got),
                    }
                }
                let same = got
                    .iter()
                    .zip(&want)
                    .all(|(a, b)| a.to_bits() == b.to_bits());
                assert!(same, "{isa:?} k={k} nq={nq} n={n}");
            }
        }
    }
}
