//! Quantized tensor formats (GGML block layouts): dequantization, activation quantization
//! and the dot-product kernels the matmuls are built from.
//!
//! Numerics follow ggml (llama.cpp): weights stay in their GGML blocks, activations are
//! quantized to the weight type's [`vec_dot_type`] (Q8_0 / Q8_1 / Q8_K, or f32/f16/bf16), each
//! block's dot product is an exact integer sum, and the block sums are scaled in f32.
//!
//! # Accumulation order: llama.cpp's, and batch invariant
//!
//! Every (weight row, activation row) dot product has one fixed float evaluation order that
//! depends only on `k` and the weight type, never on which kernel (scalar, AVX2, AVX-512),
//! how many rows/tokens share a [`gemm`] call, or whether [`vec_dot`] computed it. For the
//! quantized types it is the order of llama.cpp's x86 `ggml_vec_dot_*` kernels (the
//! `__AVX2__` branches of `ggml-cpu/arch/x86/quants.c`, as GCC builds them with
//! `-march=native`: scalar `summs += a * b` contracted to FMAs), so results equal
//! llama.cpp's bit for bit (`tests/quant_llamacpp.rs` checks real SmolLM2 matmuls against
//! llama.cpp's own outputs, `tests/quant_ggml_order.rs` a transcription of those kernels):
//!
//! * A block's exact integer dot product is split into 8 i32 lanes: lane `i` holds the
//!   elements `e` with `(e % 32) / 4 == i` (with each element's sub-block scale applied).
//! * 32-element block types (Q4_0, Q4_1, Q5_0, Q5_1, Q8_0): per block, in block order,
//!   `acc[i] = fma(dx*dy, lane[i], acc[i])`; Q4_1 / Q5_1 also `summs = fma(mx, sy, summs)`.
//!   Result: `hsum8(acc) [+ summs]`, `hsum8 = ((l0+l4)+(l2+l6)) + ((l1+l5)+(l3+l7))`.
//! * K-quants, per super-block with `d = dy*dx`, `dmin = -dy*dminx`: Q5_K
//!   `acc = fma(d, lanes, acc)` and a scalar `summs = fma(Σ mins*sums, dmin, summs)`, result
//!   `hsum8(acc) + summs` (`sums`: the activation's 32-element sub-block sums); Q6_K lanes
//!   of the unsigned 6-bit values minus lane `i`'s `32*(bs[2i]*sc[2i] + bs[2i+1]*sc[2i+1])`;
//!   Q2_K `acc = fma(dmin, mins lanes, acc)` then `acc = fma(d, lanes, acc)`; Q3_K
//!   `acc = fma(d, lanes, acc)`.
//! * Q4_K follows llama.cpp's repacked kernel (`ggml_gemv_q4_K_8x8_q8_K` in
//!   `arch/x86/repack.cpp`), which llama.cpp runs instead of `ggml_vec_dot_q4_K_q8_K` for
//!   Q4_K weights on AVX2 CPUs: no lanes, `acc = fma(S, dx*dy, acc)` and
//!   `acc_m = fma(M, dminx*dy, acc_m)` with the exact super-block sums `S = Σ sc*q*y` and
//!   `M = Σ mins*sums`, result `acc - acc_m`. (llama.cpp's batched `ggml_gemm_q4_K_8x8_q8_K`
//!   adds per 64 elements instead; batch invariance rules that out here. Likewise llama.cpp
//!   repacks Q4_0, and on AVX-512 CPUs Q2_K, into kernels of their own order, not followed
//!   here.)
//! * i-quants (IQ1_S, IQ1_M, IQ2_XXS, IQ2_XS, IQ2_S, IQ3_XXS, IQ3_S, IQ4_NL, IQ4_XS) follow
//!   ggml's reference kernels (`ggml_vec_dot_iq*_generic`), not its x86 ones: exact integer
//!   sums per block (IQ4_XS: per 32 elements) folded into one scalar `fma` chain; see
//!   `iq_dot_scalar.rs`. They equal a llama.cpp built without SIMD, not its AVX2 build, in
//!   the last bits.
//! * F32/F16/BF16 (not llama.cpp's order, which differs between its own code paths):
//!   element `i` is fused-multiply-added into lane `i % 32`; the lanes are folded
//!   `(l[j]+l[j+8]) + (l[j+16]+l[j+24])` and then summed as above.
//!
//! The SIMD kernels reproduce the scalar code bit for bit (tests check this), the x86 ones and
//! on aarch64 the NEON ones (`neon.rs`: Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, Q4_K, Q6_K, with `sdot`
//! where the CPU has the dot-product extension; the other types run the portable code).
//!
//! # Interleaved weights: faster, in an order of their own
//!
//! Weight matrices of the types in [`x16`] (Q4_0, Q4_1, Q5_0, Q8_0, Q4_K, Q6_K) are interleaved 16 rows
//! at a time when a model is loaded into its private copy ([`WeightLayout::Interleaved16`]). Their
//! kernels sum each block exactly in integers and scale it once per row, about 3x fewer vector
//! operations than ggml's order; results differ from llama.cpp's in the last bits (the model
//! tests hold them to the margin rule) but keep the rule above: one order per (row, token),
//! whatever the ISA or the batch. `R1SERVE_REPACK=0` keeps the native layout and ggml's order.
//! Q4_0, Q4_1 (`x16_b4.rs`), Q5_0, Q8_0, Q4_K and Q6_K have x16 kernels on AVX2 (`x86_x16_avx2*.rs`: 8-row halves,
//! with AVX-VNNI's 256-bit `vpdpbusd` where the CPU has it, see [`Isa::avx_vnni`]) and
//! AVX-512 VNNI, all equal to the portable ones bit for bit. Q2_K (`x16_q2k.rs`) takes
//! Q4_K's x16 order. IQ4_NL, IQ4_XS and the grid i-quants
//! (IQ2_XXS, IQ2_XS, IQ2_S, IQ3_XXS, IQ3_S, IQ1_S, IQ1_M) are interleaved too (`x16_iq.rs`; the grid types' VNNI loop is `x86_x16_grid.rs`), but their
//! kernels keep ggml's generic order (one exact integer sum per 32 elements or per super-block,
//! folded in a scalar chain that a SIMD lane runs as well), so they equal the native kernels
//! bit for bit.
//!
//! Precondition of the integer kernels (as in ggml): quantized activation bytes lie in
//! -127..=127, which [`quantize_row`] guarantees.

mod dequant;
mod dispatch;
mod dot_float;
mod dot_scalar;
mod gemm;
mod iq_dequant;
mod iq_dot_scalar;
mod iq_grids;
#[cfg(target_arch = "aarch64")]
mod neon;
mod q8;
mod quantize;
mod quantize_ggml;
mod quantize_ggml_k;
mod quantize_ggml_search;
mod quantize_iq;
mod quantize_iq1;
mod quantize_iq2;
mod quantize_iq2_index;
mod quantize_iq3;
mod quantize_iq4;
mod types;
mod util;
pub mod x16;
mod x16_b4;
mod x16_iq;
mod x16_k;
mod x16_q2k;
#[cfg(target_arch = "x86_64")]
mod x86_b32;
#[cfg(target_arch = "x86_64")]
mod x86_float;
#[cfg(target_arch = "x86_64")]
mod x86_iq;
#[cfg(target_arch = "x86_64")]
mod x86_k;
#[cfg(target_arch = "x86_64")]
mod x86_k_low;
#[cfg(target_arch = "x86_64")]
mod x86_q8;
#[cfg(target_arch = "x86_64")]
mod x86_x16;
#[cfg(target_arch = "x86_64")]
mod x86_x16_avx2;
#[cfg(target_arch = "x86_64")]
mod x86_x16_avx2_k;
#[cfg(target_arch = "x86_64")]
mod x86_x16_grid;
#[cfg(target_arch = "x86_64")]
mod x86_x16_iq;
#[cfg(target_arch = "x86_64")]
mod x86_x16_iq1;
#[cfg(target_arch = "x86_64")]
mod x86_x16_iq2;
#[cfg(target_arch = "x86_64")]
mod x86_x16_iq2xs;
#[cfg(target_arch = "x86_64")]
mod x86_x16_iq3;
#[cfg(target_arch = "x86_64")]
mod x86_x16_k;
#[cfg(target_arch = "x86_64")]
mod x86_x16_q2k;

pub use dispatch::{kernel_isa, Isa};
pub use quantize_ggml::{quantize_weights, quantize_weights_supported};
pub use quantize_iq::needs_imatrix;
pub use types::GgmlType;

/// How a weight matrix's rows lie in memory.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum WeightLayout {
    /// One row after another, as in a GGUF file (ggml's kernels and accumulation order).
    #[default]
    Native,
    /// Groups of 16 rows interleaved for the x16 kernels (see [`x16`]).
    Interleaved16,
}

impl WeightLayout {
    /// Rows per indivisible unit of the layout: a weight buffer holds whole units, and a
    /// row range may only be split at multiples of it.
    pub fn unit_rows(self) -> usize {
        match self {
            WeightLayout::Native => 1,
            WeightLayout::Interleaved16 => x16::GROUP,
        }
    }
}

/// Errors from the quantization API: bad buffer sizes and unsupported types.
#[derive(Debug, thiserror::Error)]
pub enum QuantError {
    #[error("{ty}: {n} elements is not a whole number of {block}-element blocks")]
    NotWholeBlocks {
        ty: GgmlType,
        n: usize,
        block: usize,
    },
    #[error("{ty}: {what} has length {got}, expected {expected}")]
    BadLength {
        ty: GgmlType,
        what: &'static str,
        expected: usize,
        got: usize,
    },
    #[error("{ty} is not supported by {op}")]
    Unsupported { ty: GgmlType, op: &'static str },
    #[error("{ty} needs an importance matrix (llama.cpp's --imatrix): its quantizer has no fallback without one")]
    NeedsImatrix { ty: GgmlType },
    #[error("{ty}: the row length k must be positive")]
    EmptyRow { ty: GgmlType },
    #[error("ISA {0:?} is not available on this CPU")]
    IsaUnavailable(Isa),
}

/// Bytes for `n` elements of `ty`, or an error if `n` is not a whole number of blocks.
pub fn row_bytes(ty: GgmlType, n: usize) -> Result<usize, QuantError> {
    ty.row_bytes(n).ok_or(QuantError::NotWholeBlocks {
        ty,
        n,
        block: ty.block_size(),
    })
}

fn check_len(
    ty: GgmlType,
    what: &'static str,
    expected: usize,
    got: usize,
) -> Result<(), QuantError> {
    if expected == got {
        Ok(())
    } else {
        Err(QuantError::BadLength {
            ty,
            what,
            expected,
            got,
        })
    }
}

/// Dequantize `out.len()` elements (whole blocks) from raw GGML bytes of type `ty`.
/// `data` must hold exactly those blocks.
pub fn dequantize(ty: GgmlType, data: &[u8], out: &mut [f32]) -> Result<(), QuantError> {
    let need = row_bytes(ty, out.len())?;
    check_len(ty, "dequantize input", need, data.len())?;
    dequant::dequantize(ty, data, out)
}

/// llama.cpp's `vec_dot_type`: the type activations are quantized to for a weight type.
/// Types without a dot kernel map to F32.
pub fn vec_dot_type(weight: GgmlType) -> GgmlType {
    use GgmlType::*;
    match weight {
        Q4_0 | Q5_0 | Q8_0 | IQ4_NL => Q8_0,
        Q4_1 | Q5_1 => Q8_1,
        Q2_K | Q3_K | Q4_K | Q5_K | Q6_K | Q8_K => Q8_K,
        IQ2_XXS | IQ2_XS | IQ2_S | IQ3_XXS | IQ3_S | IQ1_S | IQ1_M | IQ4_XS => Q8_K,
        F16 => F16,
        BF16 => BF16,
        _ => F32,
    }
}

/// Whether [`vec_dot`] / [`gemm`] support weights of type `ty`.
pub fn has_dot_kernel(ty: GgmlType) -> bool {
    dispatch::kernel(Isa::Scalar, ty).is_some()
}

/// Quantize one row (or several concatenated rows) of f32 values into `ty`.
///
/// For activation types this matches ggml's reference quantizers bit for bit:
/// `quantize_row_q8_0_ref` / `q8_1_ref` / `q8_K_ref` (Q8_K with ggml's current
/// `iscale = -127/max`), f32→f16 and f32→bf16 with round-to-nearest-even, F32 a copy.
/// Weight types (Q4_0, Q4_1, Q5_0, Q5_1, Q2_K..Q6_K) use ggml's `quantize_row_*_ref`
/// algorithms (no importance matrix). `out` must be exactly the row's byte size.
pub fn quantize_row(ty: GgmlType, x: &[f32], out: &mut [u8]) -> Result<(), QuantError> {
    quantize_row_isa(Isa::best(), ty, x, out)
}

/// [`quantize_row`] on an explicit instruction set (all give identical bytes for finite
/// input; tests compare them).
pub fn quantize_row_isa(
    isa: Isa,
    ty: GgmlType,
    x: &[f32],
    out: &mut [u8],
) -> Result<(), QuantError> {
    if !isa.is_available() {
        return Err(QuantError::IsaUnavailable(isa));
    }
    let need = row_bytes(ty, x.len())?;
    check_len(ty, "quantize output", need, out.len())?;
    quantize::quantize(isa, ty, x, out)
}

/// Dot product of one weight row (type `w_ty`, `k` elements) and one activation row
/// (type `vec_dot_type(w_ty)`, from [`quantize_row`]).
///
/// # Panics
/// On wrong buffer lengths or an unsupported type; [`try_vec_dot`] returns an error instead.
pub fn vec_dot(w_ty: GgmlType, k: usize, w: &[u8], a: &[u8]) -> f32 {
    match try_vec_dot(w_ty, k, w, a) {
        Ok(v) => v,
        Err(e) => panic!("vec_dot: {e}"),
    }
}

/// [`vec_dot`] returning an error on wrong buffer lengths or an unsupported type.
pub fn try_vec_dot(w_ty: GgmlType, k: usize, w: &[u8], a: &[u8]) -> Result<f32, QuantError> {
    let mut out = [0f32; 1];
    try_gemm_isa(Isa::best(), w_ty, k, w, a, 1, &mut out)?;
    Ok(out[0])
}

/// Tile GEMM: `w` holds `m` consecutive weight rows of `k` elements (m = w.len()/row_bytes),
/// `a` holds `n` consecutive quantized activation rows. Writes `out[r * n + t] = dot(w_r, a_t)`
/// for r in 0..m, t in 0..n (weight-row-major output). Each output is bit-identical to
/// [`vec_dot`] of the same rows.
///
/// # Panics
/// On wrong buffer lengths or an unsupported type; [`try_gemm`] returns an error instead.
pub fn gemm(w_ty: GgmlType, k: usize, w: &[u8], a: &[u8], n: usize, out: &mut [f32]) {
    if let Err(e) = try_gemm_isa(Isa::best(), w_ty, k, w, a, n, out) {
        panic!("gemm: {e}");
    }
}

/// [`gemm`] returning an error on wrong buffer lengths or an unsupported type.
pub fn try_gemm(
    w_ty: GgmlType,
    k: usize,
    w: &[u8],
    a: &[u8],
    n: usize,
    out: &mut [f32],
) -> Result<(), QuantError> {
    try_gemm_isa(Isa::best(), w_ty, k, w, a, n, out)
}

/// [`try_gemm`] on an explicit instruction set (tests and benchmarks compare them).
pub fn try_gemm_isa(
    isa: Isa,
    w_ty: GgmlType,
    k: usize,
    w: &[u8],
    a: &[u8],
    n: usize,
    out: &mut [f32],
) -> Result<(), QuantError> {
    try_gemm_layout_isa(isa, WeightLayout::Native, w_ty, k, w, a, n, out)
}

/// [`try_gemm_isa`] for weights in `layout` (interleaved weights: whole groups of 16 rows,
/// see [`x16::interleave`]).
#[allow(clippy::too_many_arguments)]
pub fn try_gemm_layout_isa(
    isa: Isa,
    layout: WeightLayout,
    w_ty: GgmlType,
    k: usize,
    w: &[u8],
    a: &[u8],
    n: usize,
    out: &mut [f32],
) -> Result<(), QuantError> {
    if !isa.is_available() {
        return Err(QuantError::IsaUnavailable(isa));
    }
    let kern = dispatch::kernel_for(isa, layout, w_ty).ok_or(QuantError::Unsupported {
        ty: w_ty,
        op: "vec_dot/gemm",
    })?;
    // SAFETY: `kernel_for` only hands out kernels for available ISAs.
    unsafe { run_kernel(kern, layout, w_ty, k, w, a, n, out) }
}

/// Checks the buffers of a GEMM and runs `kern` on them.
///
/// # Safety
/// `kern` is a kernel for `w_ty` in `layout` that this CPU can run.
#[allow(clippy::too_many_arguments)]
unsafe fn run_kernel(
    kern: dispatch::GemmFn,
    layout: WeightLayout,
    w_ty: GgmlType,
    k: usize,
    w: &[u8],
    a: &[u8],
    n: usize,
    out: &mut [f32],
) -> Result<(), QuantError> {
    if k == 0 {
        return Err(QuantError::EmptyRow { ty: w_ty });
    }
    let wrow = row_bytes(w_ty, k)?;
    let a_ty = vec_dot_type(w_ty);
    let arow = row_bytes(a_ty, k)?;
    let unit = wrow * layout.unit_rows();
    if !w.len().is_multiple_of(unit) {
        return Err(QuantError::BadLength {
            ty: w_ty,
            what: "weight buffer (a whole number of rows or row groups)",
            expected: unit * (w.len() / unit + 1),
            got: w.len(),
        });
    }
    let m = w.len() / wrow;
    check_len(a_ty, "activation buffer", arow * n, a.len())?;
    check_len(w_ty, "gemm output", m * n, out.len())?;
    let out = gemm::OutPtr {
        ptr: out.as_mut_ptr(),
        rs: n,
        ts: 1,
    };
    // SAFETY: lengths checked above; the caller vouches for the kernel.
    unsafe { kern(k, w, a, n, out) };
    Ok(())
}

/// [`gemm`] writing token-major into a larger matrix: `out[t * ldo + r] = dot(w_r, a_t)`.
/// The matmul calls this per task with `out` pointing at the task's first row, so the
/// result lands in the activation layout without a transpose.
///
/// # Safety
/// `out` must be valid for writes at `t * ldo + r` for every row `r` of `w` and `t < n`,
/// with no other thread writing those elements; `isa` must be available. Buffer lengths of
/// `w` and `a` are checked as in [`try_gemm`] (panics on a mismatch).
#[allow(clippy::too_many_arguments)]
pub unsafe fn gemm_token_major(
    layout: WeightLayout,
    w_ty: GgmlType,
    k: usize,
    w: &[u8],
    a: &[u8],
    n: usize,
    out: *mut f32,
    ldo: usize,
) {
    let kern = dispatch::kernel_for(Isa::best(), layout, w_ty)
        .expect("a dot kernel for the weight type and layout");
    let wrow = row_bytes(w_ty, k).expect("whole blocks");
    let unit = wrow * layout.unit_rows();
    let arow = row_bytes(vec_dot_type(w_ty), k).expect("whole blocks");
    assert!(w.len().is_multiple_of(unit) && a.len() >= arow * n);
    kern(
        k,
        w,
        a,
        n,
        gemm::OutPtr {
            ptr: out,
            rs: 1,
            ts: ldo,
        },
    );
}
