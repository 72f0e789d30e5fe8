//! The value side of MLA attention: a tile's softmax weights times its cache rows' latents,
//! added to each head's running sum.
//!
//! Per element, the positions are added in order with one FMA each, on every ISA, so the
//! sums never depend on the ISA or the blocking (a test compares them bit for bit).

use crate::quant;

/// `acc[h] += Σ_j w[j * ws + h] · rows[j]` for heads `h < nq` (`acc`: `[nq, r]`; `w` holds
/// one row of `ws >= nq` weights per cache row, of which the first `nq` are used), adding the positions in order with one FMA per element each, on every ISA (so
/// results never depend on it). Each head's accumulator stays in registers across the
/// tile's rows, 128 (AVX-512) or 64 (AVX2) latents at a time.
pub(crate) fn accumulate(
    acc: &mut [f32],
    r: usize,
    (w, ws): (&[f32], usize),
    nq: usize,
    rows: &[&[f32]],
) {
    debug_assert!(ws >= nq && (rows.is_empty() || w.len() >= (rows.len() - 1) * ws + nq));
    #[cfg(target_arch = "x86_64")]
    {
        match quant::Isa::best() {
            // SAFETY: AVX-512 F (and FMA) are present: `Isa::best` checked them.
            quant::Isa::Avx512 => return unsafe { accumulate_avx512(acc, r, w, ws, nq, rows) },
            // SAFETY: as above, AVX2 and FMA.
            quant::Isa::Avx2 => return unsafe { accumulate_avx2(acc, r, w, ws, nq, rows) },
            quant::Isa::Scalar => {}
        }
    }
    accumulate_from(acc, r, w, ws, nq, rows, 0);
}

/// The columns `c0..r` of [`accumulate`], one element at a time.
#[inline(always)]
fn accumulate_from(
    acc: &mut [f32],
    r: usize,
    w: &[f32],
    ws: usize,
    nq: usize,
    rows: &[&[f32]],
    c0: usize,
) {
    for h in 0..nq {
        for c in c0..r {
            let mut a = acc[h * r + c];
            for (j, row) in rows.iter().enumerate() {
                a = row[c].mul_add(w[j * ws + h], a);
            }
            acc[h * r + c] = a;
        }
    }
}

// Parallel arrays of registers (per head / per chunk) are indexed together.
#[allow(clippy::needless_range_loop)]
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx2,fma")]
unsafe fn accumulate_avx512(
    acc: &mut [f32],
    r: usize,
    w: &[f32],
    ws: usize,
    nq: usize,
    rows: &[&[f32]],
) {
    use std::arch::x86_64::*;
    // 64 latents of up to 4 heads at a time: 16 accumulators, and each row chunk is loaded
    // once for the 4 heads (the tile's rows do not fit in L1).
    let wide = r / 64 * 64;
    let mut h = 0;
    while h < nq {
        let hb = (nq - h).min(4);
        for c in (0..wide).step_by(64) {
            let mut v = [[_mm512_setzero_ps(); 4]; 4];
            for b in 0..hb {
                let a = acc.as_ptr().add((h + b) * r + c);
                for (k, x) in v[b].iter_mut().enumerate() {
                    *x = _mm512_loadu_ps(a.add(16 * k));
                }
            }
            for (j, row) in rows.iter().enumerate() {
                let p = row.as_ptr().add(c);
                let kv: [__m512; 4] = std::array::from_fn(|k| _mm512_loadu_ps(p.add(16 * k)));
                for b in 0..hb {
                    let wv = _mm512_set1_ps(w[j * ws + h + b]);
                    for k in 0..4 {
                        v[b][k] = _mm512_fmadd_ps(kv[k], wv, v[b][k]);
                    }
                }
            }
            for b in 0..hb {
                let a = acc.as_mut_ptr().add((h + b) * r + c);
                for (k, x) in v[b].iter().enumerate() {
                    _mm512_storeu_ps(a.add(16 * k), *x);
                }
            }
        }
        h += hb;
    }
    accumulate_from(acc, r, w, ws, nq, rows, wide);
}

// Parallel arrays of registers (per head / per chunk) are indexed together.
#[allow(clippy::needless_range_loop)]
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn accumulate_avx2(
    acc: &mut [f32],
    r: usize,
    w: &[f32],
    ws: usize,
    nq: usize,
    rows: &[&[f32]],
) {
    use std::arch::x86_64::*;
    let wide = r / 64 * 64;
    for h in 0..nq {
        let a = acc.as_mut_ptr().add(h * r);
        for c in (0..wide).step_by(64) {
            let mut v = [_mm256_setzero_ps(); 8];
            for (k, x) in v.iter_mut().enumerate() {
                *x = _mm256_loadu_ps(a.add(c + 8 * k));
            }
            for (j, row) in rows.iter().enumerate() {
                let wv = _mm256_set1_ps(w[j * ws + h]);
                let p = row.as_ptr().add(c);
                for (k, x) in v.iter_mut().enumerate() {
                    *x = _mm256_fmadd_ps(_mm256_loadu_ps(p.add(8 * k)), wv, *x);
                }
            }
            for (k, x) in v.iter().enumerate() {
                _mm256_storeu_ps(a.add(c + 8 * k), *x);
            }
        }
    }
    accumulate_from(acc, r, w, ws, nq, rows, wide);
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{Rng, SeedableRng};

    #[test]
    fn every_isa_accumulates_the_portable_sums_bit_for_bit() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(9);
        for (r, nq, ws, n) in [
            (512, 16, 16, 64),
            (32, 4, 6, 7),
            (200, 5, 5, 13),
            (16, 1, 3, 1),
        ] {
            let data: Vec<Vec<f32>> = (0..n)
                .map(|_| (0..r + 8).map(|_| rng.random_range(-1.0f32..1.0)).collect())
                .collect();
            let rows: Vec<&[f32]> = data.iter().map(|x| x.as_slice()).collect();
            let w: Vec<f32> = (0..n * ws).map(|_| rng.random_range(0.0f32..1.0)).collect();
            let start: Vec<f32> = (0..nq * r)
                .map(|_| rng.random_range(-1.0f32..1.0))
                .collect();
            let mut want = start.clone();
            accumulate_from(&mut want, r, &w, ws, nq, &rows, 0);
            #[cfg(target_arch = "x86_64")]
            for isa in [quant::Isa::Avx2, quant::Isa::Avx512] {
                if !isa.is_available() {
                    eprintln!("SKIP: {isa:?} is not available on this CPU");
                    continue;
                }
                let mut got = start.clone();
                // SAFETY: the ISA is available.
                unsafe {
                    match isa {
                        quant::Isa::Avx2 => accumulate_avx2(&mut got, r, &w, ws, nq, &rows),
                        _ => accumulate_avx512(&mut got, r, &w, ws, nq, &rows),
                    }
                }
                let same = got
                    .iter()
                    .zip(&want)
                    .all(|(a, b)| a.to_bits() == b.to_bits());
                assert!(same, "{isa:?} r={r} nq={nq} ws={ws} n={n}");
            }
        }
    }
}
