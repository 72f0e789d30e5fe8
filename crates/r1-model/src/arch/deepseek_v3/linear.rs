//! `y = x · Wᵀ` with f32 activations for every float weight type.
//!
//! The shared kernels pair BF16/F16 weights with activations rounded to the same type (as
//! llama.cpp does). DeepSeek checkpoints are bf16 (or FP8 dequantized to bf16) and their
//! reference computes in f32, so here float weight rows are widened to f32 tile by tile and
//! multiplied with the f32 kernel. Every output element is the F32 kernel's fixed-order dot
//! of the same values, whatever the batch size (DESIGN.md's batch invariance). Quantized
//! GGML weights take the shared quantized-activation path.

use std::cell::RefCell;

use crate::matmul::{matmul_f32, QuantizedActs};
use crate::ops::SharedMut;
use crate::pool::ThreadPool;
use crate::quant::{self, GgmlType};
use crate::weights::QMatrix;

thread_local! {
    /// Float weight rows widened to f32 (values, then their bytes) for one task.
    static WIDE: RefCell<(Vec<f32>, Vec<u8>)> = const { RefCell::new((Vec::new(), Vec::new())) };
}

/// The activation type `w` is multiplied with: float weights are widened to f32 and use f32
/// activations (DeepSeek's reference computes in f32), quantized ones use ggml's dot type.
pub(super) fn act_type(w: &QMatrix) -> GgmlType {
    match w.ty {
        GgmlType::F16 | GgmlType::BF16 => GgmlType::F32,
        ty => quant::vec_dot_type(ty),
    }
}

/// `out[t * ldo + r - r0] = a_t · W_r` for rows `r0..r1` of `w` and `n` activation rows.
///
/// # Safety
/// `out` must be valid for those writes and no other task may write them.
pub(super) unsafe fn tile(
    w: &QMatrix,
    r0: usize,
    r1: usize,
    acts: &[u8],
    n: usize,
    out: *mut f32,
    ldo: usize,
) {
    let rb = w.row_bytes();
    let bytes = &w.data()[r0 * rb..r1 * rb];
    if matches!(w.ty, GgmlType::F16 | GgmlType::BF16) {
        WIDE.with(|b| {
            let (f, wide) = &mut *b.borrow_mut();
            f.resize((r1 - r0) * w.cols, 0.0);
            quant::dequantize(w.ty, bytes, f).expect("whole rows");
            wide.clear();
            wide.extend(f.iter().flat_map(|v| v.to_le_bytes()));
            quant::gemm_token_major(
                quant::WeightLayout::Native,
                GgmlType::F32,
                w.cols,
                wide,
                acts,
                n,
                out,
                ldo,
            );
        });
    } else {
        quant::gemm_token_major(w.layout, w.ty, w.cols, bytes, acts, n, out, ldo);
    }
}

/// Split `rows` weight rows into chunks of about `chunk` (a multiple of the layout's unit).
pub(super) fn chunk_for(w: &QMatrix, chunk: usize) -> usize {
    let unit = w.layout.unit_rows().max(8);
    chunk.div_ceil(unit).max(1) * unit
}

/// A job's buffer, shared by the tasks of a region: each writes its own elements.
#[derive(Clone, Copy)]
pub(super) struct Buf<T>(pub(super) *mut T);
// SAFETY: tasks write disjoint elements, and `pool.run` returns only when all are done.
unsafe impl<T> Send for Buf<T> {}
unsafe impl<T> Sync for Buf<T> {}

impl<T> Buf<T> {
    /// # Safety
    /// `i` is inside the buffer.
    pub(super) unsafe fn at(self, i: usize) -> *mut T {
        self.0.add(i)
    }
}

/// [`linear`] for one weight per head, each on its own input, in two parallel regions
/// (quantize every head's input, then every head's rows) instead of two per head: MLA's
/// absorbed `W_UK`/`W_UV` are one small matrix per head. `x` is `[heads, n, cols]`, `out`
/// `[heads, n, rows]`; every element equals [`linear`]'s.
pub(crate) fn linear_heads(
    pool: &ThreadPool,
    ws: &[QMatrix],
    x: &[f32],
    n: usize,
    out: &mut [f32],
) {
    let heads = ws.len();
    if heads == 0 || n == 0 {
        return;
    }
    let (k, rows) = (ws[0].cols, ws[0].rows);
    assert!(ws
        .iter()
        .all(|w| w.cols == k && w.rows == rows && w.ty == ws[0].ty));
    assert_eq!(x.len(), heads * n * k);
    assert_eq!(out.len(), heads * n * rows);
    let ty = act_type(&ws[0]);
    let rb = ty.row_bytes(k).expect("whole blocks");
    let mut acts = vec![0u8; heads * n * rb];
    {
        let a = SharedMut::new(&mut acts);
        pool.run(heads, |h| {
            for i in 0..n {
                // SAFETY: each (head, row) is written by one task only.
                let dst = unsafe { a.slice((h * n + i) * rb, rb) };
                let src = &x[(h * n + i) * k..(h * n + i + 1) * k];
                quant::quantize_row(ty, src, dst).expect("buffer sized for the type");
            }
        });
    }
    let chunk = chunk_for(&ws[0], rows.div_ceil((pool.threads() * 4).div_ceil(heads)));
    let per_head = rows.div_ceil(chunk);
    let o = Buf(out.as_mut_ptr());
    pool.run(heads * per_head, |task| {
        let (h, c) = (task / per_head, task % per_head);
        let (r0, r1) = (c * chunk, ((c + 1) * chunk).min(rows));
        // SAFETY: this task alone writes columns r0..r1 of head h's output rows.
        unsafe {
            let dst = o.at(h * n * rows + r0);
            tile(
                &ws[h],
                r0,
                r1,
                &acts[h * n * rb..(h + 1) * n * rb],
                n,
                dst,
                rows,
            );
        }
    });
}

/// `out[t, r] = x_t · W_r` for `n` rows of `x` (`[n, w.cols]`); `out` is `[n, w.rows]`.
pub(crate) fn linear(pool: &ThreadPool, w: &QMatrix, x: &[f32], n: usize, out: &mut [f32]) {
    debug_assert_eq!(x.len(), n * w.cols);
    debug_assert_eq!(out.len(), n * w.rows);
    if n == 0 {
        return;
    }
    if !matches!(w.ty, GgmlType::F16 | GgmlType::BF16) {
        matmul_f32(pool, w, x, n, out);
        return;
    }
    // Float rows widened per task by `tile`, written token-major in place (no transpose).
    let acts = QuantizedActs::new(pool, GgmlType::F32, x, n, w.cols);
    let chunk = chunk_for(w, w.rows.div_ceil(pool.threads() * 4));
    let o = Buf(out.as_mut_ptr());
    pool.run(w.rows.div_ceil(chunk), |c| {
        let (r0, r1) = (c * chunk, ((c + 1) * chunk).min(w.rows));
        // SAFETY: this task alone writes columns r0..r1 of every output row.
        unsafe { tile(w, r0, r1, &acts.data, n, o.at(r0), w.rows) };
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{Rng, SeedableRng};

    #[test]
    fn per_head_linear_equals_linear_head_by_head() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(5);
        let (heads, n, k, rows) = (3, 5, 64, 48);
        for ty in [GgmlType::Q8_0, GgmlType::F16, GgmlType::F32] {
            let ws: Vec<QMatrix> = (0..heads)
                .map(|_| {
                    let v: Vec<f32> = (0..rows * k).map(|_| rng.random_range(-1.0..1.0)).collect();
                    super::super::encode(ty, rows, k, &v)
                })
                .collect();
            let x: Vec<f32> = (0..heads * n * k)
                .map(|_| rng.random_range(-1.0..1.0))
                .collect();
            for threads in [1, 3] {
                let pool = ThreadPool::new(threads);
                let mut got = vec![0.0; heads * n * rows];
                linear_heads(&pool, &ws, &x, n, &mut got);
                for (h, w) in ws.iter().enumerate() {
                    let mut want = vec![0.0; n * rows];
                    linear(&pool, w, &x[h * n * k..(h + 1) * n * k], n, &mut want);
                    let same = got[h * n * rows..(h + 1) * n * rows]
                        .iter()
                        .zip(&want)
                        .all(|(a, b)| a.to_bits() == b.to_bits());
                    assert!(same, "{ty} head {h} threads {threads}");
                }
            }
        }
    }
}
