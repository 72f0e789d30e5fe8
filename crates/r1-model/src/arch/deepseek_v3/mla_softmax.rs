//! The online softmax of MLA attention: per query, a running max `m`, a sum of weights `l`
//! and a weighted sum of latents, updated once per cache tile and folded across segments,
//! as flash attention does.
//!
//! Every operation is elementwise per query (the tile's scores are laid out `[row, query]`),
//! so vectorizing across queries changes no bit: a query's state evolves exactly as if it
//! ran alone.

/// Softmax state of one head over some positions: running max, sum of weights, and the
/// weighted sum of latents.
pub(crate) struct State<'a> {
    pub m: f32,
    pub l: f32,
    pub acc: &'a mut [f32],
}

impl State<'_> {
    /// Left fold: `self ← self ⊕ (m, l, acc)`.
    pub fn fold(&mut self, m: f32, l: f32, acc: &[f32]) {
        let mm = self.m.max(m);
        let (a, b) = (scale_of(self.m, mm), scale_of(m, mm));
        self.l = self.l * a + l * b;
        for (x, &y) in self.acc.iter_mut().zip(acc) {
            *x = y.mul_add(b, *x * a);
        }
        self.m = mm;
    }
}

/// `exp(m - mm)`, 0 for an empty state (`m = -inf`).
#[inline]
pub(crate) fn scale_of(m: f32, mm: f32) -> f32 {
    if m == f32::NEG_INFINITY {
        0.0
    } else {
        crate::expf::expf_nonpos(m - mm)
    }
}

/// `w[i] = e^w[i]` for values `<= 0` or `-inf`: glibc's `expf` bit for bit (what `f32::exp`
/// gave here before) on every ISA, eight at a time with AVX-512. The softmax takes one
/// exponential per (position, head); as libm calls they cost about as much as the tile's
/// dot products.
pub(crate) fn exp_nonpos_in_place(w: &mut [f32]) {
    #[cfg(target_arch = "x86_64")]
    if crate::quant::Isa::best() == crate::quant::Isa::Avx512 {
        let mut chunks = w.chunks_exact_mut(8);
        for c in &mut chunks {
            let a: &mut [f32; 8] = c.try_into().expect("chunks of 8");
            // SAFETY: AVX-512 F is present (`Isa::best` checked it).
            *a = unsafe { crate::expf::expf8_nonpos_avx512(a) };
        }
        for x in chunks.into_remainder() {
            *x = crate::expf::expf_nonpos(*x);
        }
        return;
    }
    for x in w {
        *x = crate::expf::expf_nonpos(*x);
    }
}

/// One tile's softmax step for queries `0..ms.len()`. `s` holds the tile's raw scores,
/// `[n, nqp]` (`nqp` at least the number of queries); query `q` sees the tile's rows below
/// `seen[q]`. Afterwards `s` holds the weights `e^(scale·s - m)` under the new running max
/// (0 for the rows a query does not see, and for padding queries), `ls` the updated sums,
/// and `rescale[q]` the factor each query's latent sum must be multiplied by before the
/// tile's weighted rows are added (1 when its max did not move).
pub(crate) fn tile_step(
    s: &mut [f32],
    (n, nqp): (usize, usize),
    seen: &[usize],
    scale: f32,
    (ms, ls): (&mut [f32], &mut [f32]),
    rescale: &mut [f32],
) {
    let nq = ms.len();
    debug_assert!(nq <= nqp && seen.len() == nq && rescale.len() == nq && s.len() >= n * nqp);
    let s = &mut s[..n * nqp];
    let mut tmax = [f32::NEG_INFINITY; 256];
    let tmax = if nq <= tmax.len() {
        &mut tmax[..nq]
    } else {
        return tile_step_wide(s, (n, nqp), seen, scale, (ms, ls), rescale);
    };
    for (j, row) in s.chunks_exact_mut(nqp).enumerate() {
        for q in 0..nq {
            let x = row[q] * scale;
            row[q] = x;
            if j < seen[q] {
                tmax[q] = tmax[q].max(x);
            }
        }
    }
    finish(s, nqp, seen, tmax, (ms, ls), rescale);
}

/// [`tile_step`] for more queries than its stack buffer holds.
fn tile_step_wide(
    s: &mut [f32],
    (n, nqp): (usize, usize),
    seen: &[usize],
    scale: f32,
    (ms, ls): (&mut [f32], &mut [f32]),
    rescale: &mut [f32],
) {
    let mut tmax = vec![f32::NEG_INFINITY; ms.len()];
    for (j, row) in s[..n * nqp].chunks_exact_mut(nqp).enumerate() {
        for (q, t) in tmax.iter_mut().enumerate() {
            let x = row[q] * scale;
            row[q] = x;
            if j < seen[q] {
                *t = t.max(x);
            }
        }
    }
    finish(s, nqp, seen, &tmax, (ms, ls), rescale);
}

/// The rest of [`tile_step`] once the tile's (scaled) maxima are known.
fn finish(
    s: &mut [f32],
    nqp: usize,
    seen: &[usize],
    tmax: &[f32],
    (ms, ls): (&mut [f32], &mut [f32]),
    rescale: &mut [f32],
) {
    let nq = ms.len();
    for q in 0..nq {
        let mm = ms[q].max(tmax[q]);
        let a = scale_of(ms[q], mm);
        rescale[q] = a;
        ls[q] *= a;
        ms[q] = mm;
    }
    // Exponents: `s - m` for the rows a query sees, -inf (weight 0) for the rest.
    for (j, row) in s.chunks_exact_mut(nqp).enumerate() {
        for q in 0..nq {
            row[q] = if j < seen[q] {
                row[q] - ms[q]
            } else {
                f32::NEG_INFINITY
            };
        }
        row[nq..].fill(f32::NEG_INFINITY);
    }
    exp_nonpos_in_place(s);
    for row in s.chunks_exact(nqp) {
        for (l, &w) in ls.iter_mut().zip(&row[..nq]) {
            *l += w;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{Rng, SeedableRng};

    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    #[test]
    fn tile_exponentials_equal_the_c_library_expf() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(5);
        for n in [0, 1, 7, 8, 9, 64] {
            let x: Vec<f32> = (0..n).map(|_| rng.random_range(-110.0f32..=0.0)).collect();
            let mut got = x.clone();
            exp_nonpos_in_place(&mut got);
            for (a, b) in x.iter().zip(&got) {
                assert_eq!(a.exp().to_bits(), b.to_bits(), "e^{a}");
            }
        }
    }

    /// Each query's step, vectorized over queries, equals the step of that query alone with
    /// only the rows it sees, written out one position at a time.
    #[test]
    fn a_query_steps_as_if_alone() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(8);
        let (n, nq, nqp, scale) = (13, 5, 16, 0.7f32);
        let seen = [13, 0, 4, 13, 1];
        let raw: Vec<f32> = (0..n * nqp)
            .map(|_| rng.random_range(-4.0f32..4.0))
            .collect();
        let mut ms = vec![f32::NEG_INFINITY, 1.0, 0.5, 9.0, -2.0];
        let mut ls = vec![0.0, 2.0, 1.5, 3.0, 0.25];
        let (m0, l0) = (ms.clone(), ls.clone());
        let mut s = raw.clone();
        let mut rescale = vec![0.0; nq];
        tile_step(
            &mut s,
            (n, nqp),
            &seen,
            scale,
            (&mut ms, &mut ls),
            &mut rescale,
        );
        for q in 0..nq {
            let xs: Vec<f32> = (0..seen[q]).map(|j| raw[j * nqp + q] * scale).collect();
            let mm = xs.iter().fold(m0[q], |a, &b| a.max(b));
            let a = scale_of(m0[q], mm);
            let mut l = l0[q] * a;
            for (j, &x) in xs.iter().enumerate() {
                let w = crate::expf::expf_nonpos(x - mm);
                assert_eq!(s[j * nqp + q].to_bits(), w.to_bits());
                l += w;
            }
            for j in seen[q]..n {
                assert_eq!(s[j * nqp + q], 0.0);
            }
            assert_eq!(
                (ms[q].to_bits(), ls[q].to_bits()),
                (mm.to_bits(), l.to_bits())
            );
            assert_eq!(rescale[q].to_bits(), a.to_bits());
        }
    }
}
