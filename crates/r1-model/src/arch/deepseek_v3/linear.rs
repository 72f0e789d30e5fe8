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
    static ROWS: RefCell<(Vec<f32>, Vec<u8>)> = const { RefCell::new((Vec::new(), Vec::new())) };
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
    let acts = QuantizedActs::new(pool, GgmlType::F32, x, n, w.cols);
    if n == 1 {
        widen_tiles(pool, w, &acts.data, n, out);
        return;
    }
    let mut tmp = vec![0.0; n * w.rows];
    widen_tiles(pool, w, &acts.data, n, &mut tmp);
    for (r, col) in tmp.chunks_exact(n).enumerate() {
        for (t, &v) in col.iter().enumerate() {
            out[t * w.rows + r] = v;
        }
    }
}

/// `dst[r * n + t] = x_t · W_r`, weight rows widened to f32 per task.
fn widen_tiles(pool: &ThreadPool, w: &QMatrix, acts: &[u8], n: usize, dst: &mut [f32]) {
    let k = w.cols;
    let rb = w.row_bytes();
    let chunk = w.rows.div_ceil(pool.threads() * 4).div_ceil(8).max(1) * 8;
    let n_tasks = w.rows.div_ceil(chunk);
    let ptr = SharedMut::new(dst);
    let wdata = w.data();
    let ty = w.ty;
    pool.run(n_tasks, |t| {
        let r0 = t * chunk;
        let r1 = (r0 + chunk).min(w.rows);
        // SAFETY: tasks cover disjoint row ranges.
        let o = unsafe { ptr.slice(r0 * n, (r1 - r0) * n) };
        ROWS.with(|b| {
            let (f, bytes) = &mut *b.borrow_mut();
            f.resize((r1 - r0) * k, 0.0);
            quant::dequantize(ty, &wdata[r0 * rb..r1 * rb], f).expect("whole rows");
            bytes.clear();
            bytes.extend(f.iter().flat_map(|v| v.to_le_bytes()));
            quant::gemm(GgmlType::F32, k, bytes, acts, n, o);
        });
    });
}
