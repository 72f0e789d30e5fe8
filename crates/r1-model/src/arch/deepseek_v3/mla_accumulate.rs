//! The value side of MLA attention: a tile's softmax weights times its cache rows' latents,
//! added to each head's running sum.
//!
//! Per element, the positions are added in order with one FMA each, on every ISA, so the
//! sums never depend on the ISA or the blocking (a test compares them bit for bit).

#[cfg(target_arch = "x86_64")]
use crate::quant;

/// `acc[h] += Σ_j w[j * ws + h] · rows[j]` for heads `h < nq` (`acc`: `[nq, r]`; `w` holds
/// one row of `ws >= nq` weights per cache row, of which the first `nq` are used), adding the positions in order with one FMA per element each, on every ISA (so
/// results never depend on it). Each head's accumulator stays in registers across the
/// tile's rows, 16 heads × 16 latents (AVX-512) or 4 heads × 16 latents (AVX2) at a time.
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

#[cfg(target_arch = "x86_64")]
/// Runs `$f::<HB, CV>` over the heads in blocks of 16, 8, 4, 2 and 1 (each size its own
/// kernel, so the accumulators stay in registers), `CV` column vectors at a time.
macro_rules! by_head_blocks {
    ($f:ident, $acc:expr, $r:expr, $w:expr, $ws:expr, $nq:expr, $rows:expr, [$(($hb:literal, $cv:literal)),*]) => {{
        let mut h = 0;
        $(
            while $nq - h >= $hb {
                $f::<$hb, $cv>($acc, $r, $w, $ws, h, $rows);
                h += $hb;
            }
        )*
    }};
}

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
    // 16 heads × one vector of 16 latents: each row's vector is loaded once for 16 heads
    // (its weights are broadcast), and the tile's rows are read once per 16 heads.
    by_head_blocks!(
        block_avx512,
        acc,
        r,
        w,
        ws,
        nq,
        rows,
        [(16, 1), (8, 2), (4, 4), (2, 4), (1, 4)]
    );
}

/// Heads `h0..h0 + HB`, all columns that fill whole groups of `CV` vectors; the rest one
/// element at a time.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx2,fma")]
unsafe fn block_avx512<const HB: usize, const CV: usize>(
    acc: &mut [f32],
    r: usize,
    w: &[f32],
    ws: usize,
    h0: usize,
    rows: &[&[f32]],
) {
    use std::arch::x86_64::*;
    let step = 16 * CV;
    let wide = r / step * step;
    let wp = w.as_ptr().add(h0);
    for c in (0..wide).step_by(step) {
        let mut v = [[_mm512_setzero_ps(); CV]; HB];
        for (b, v) in v.iter_mut().enumerate() {
            let a = acc.as_ptr().add((h0 + b) * r + c);
            for (k, x) in v.iter_mut().enumerate() {
                *x = _mm512_loadu_ps(a.add(16 * k));
            }
        }
        for (j, row) in rows.iter().enumerate() {
            let p = row.as_ptr().add(c);
            let kv: [__m512; CV] = std::array::from_fn(|k| _mm512_loadu_ps(p.add(16 * k)));
            let wj = wp.add(j * ws);
            for (b, v) in v.iter_mut().enumerate() {
                let wv = _mm512_set1_ps(*wj.add(b));
                for (x, &kv) in v.iter_mut().zip(&kv) {
                    *x = _mm512_fmadd_ps(kv, wv, *x);
                }
            }
        }
        for (b, v) in v.iter().enumerate() {
            let a = acc.as_mut_ptr().add((h0 + b) * r + c);
            for (k, x) in v.iter().enumerate() {
                _mm512_storeu_ps(a.add(16 * k), *x);
            }
        }
    }
    let acc = &mut acc[h0 * r..(h0 + HB) * r];
    accumulate_from(acc, r, &w[h0..], ws, HB, rows, wide);
}

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
    // 4 heads × two vectors of 8 latents (8 accumulators of the 16 registers).
    by_head_blocks!(
        block_avx2,
        acc,
        r,
        w,
        ws,
        nq,
        rows,
        [(4, 2), (2, 4), (1, 4)]
    );
}

/// As [`block_avx512`], in ymm registers of 8 latents.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn block_avx2<const HB: usize, const CV: usize>(
    acc: &mut [f32],
    r: usize,
    w: &[f32],
    ws: usize,
    h0: usize,
    rows: &[&[f32]],
) {
    use std::arch::x86_64::*;
    let step = 8 * CV;
    let wide = r / step * step;
    let wp = w.as_ptr().add(h0);
    for c in (0..wide).step_by(step) {
        let mut v = [[_mm256_setzero_ps(); CV]; HB];
        for (b, v) in v.iter_mut().enumerate() {
            let a = acc.as_ptr().add((h0 + b) * r + c);
            for (k, x) in v.iter_mut().enumerate() {
                *x = _mm256_loadu_ps(a.add(8 * k));
            }
        }
        for (j, row) in rows.iter().enumerate() {
            let p = row.as_ptr().add(c);
            let kv: [__m256; CV] = std::array::from_fn(|k| _mm256_loadu_ps(p.add(8 * k)));
            let wj = wp.add(j * ws);
            for (b, v) in v.iter_mut().enumerate() {
                let wv = _mm256_set1_ps(*wj.add(b));
                for (x, &kv) in v.iter_mut().zip(&kv) {
                    *x = _mm256_fmadd_ps(kv, wv, *x);
                }
            }
        }
        for (b, v) in v.iter().enumerate() {
            let a = acc.as_mut_ptr().add((h0 + b) * r + c);
            for (k, x) in v.iter().enumerate() {
                _mm256_storeu_ps(a.add(8 * k), *x);
            }
        }
    }
    let acc = &mut acc[h0 * r..(h0 + HB) * r];
    accumulate_from(acc, r, &w[h0..], ws, HB, rows, wide);
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
            (512, 31, 32, 9),
            (40, 23, 32, 5),
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
