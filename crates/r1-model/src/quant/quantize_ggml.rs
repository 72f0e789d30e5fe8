//! Weight quantizers that write the bytes `llama-quantize` writes: ggml's `quantize_*`
//! (`ggml_quantize_chunk`), without an importance matrix (the `quantize_row_*_ref`
//! algorithms) and with one (the `quantize_row_*_impl` ones, in `quantize_ggml_k.rs`).
//!
//! Bit-exactness with a real build of ggml needs more than the algorithm: ggml is compiled as
//! GNU C with `-march=native`, so GCC contracts `a*b + c` into one fused multiply-add wherever
//! the product has no other use in the same block. Every place GCC fuses is written here as
//! `mul_add` (or [`ni_mul`]); everything else is rounded step by step as the C source says.
//! `crates/r1-model/tests/quantize_vs_ggml.rs` checks the bytes against ggml's own
//! `ggml_quantize_chunk`, linked from the peer build, for every type here.
//!
//! On x86-64 the row functions are compiled twice, with and without the FMA instruction set,
//! so `mul_add` is one instruction where the CPU has it (the results are the same either way).
//!
//! Where GCC fuses also depends on the CPU ggml was tuned for (`-march=native` implies
//! `-mtune=native`), so the peer's bytes differ between AMD and Intel machines, and we follow
//! the machine we run on ([`FmaProfile`]):
//!
//! - `nochains` (GCC's tuning for AMD Zen): `X86_TUNE_AVOID_128FMA_CHAINS`/`_256FMA_CHAINS`
//!   set `--param avoid-fma-max-bits` (128 for znver1, 256 for znver2/3), and GCC then leaves a
//!   reduction `sum += a*b` whose only chain runs round a loop as a multiply and an add. In the
//!   quantizers that is `sum_x` in the first loop of `make_qkx2_quants`/`make_qkx3_quants` over
//!   32 values (the 16-value loop is unrolled, so it has no loop to chain round and is fused).
//! - `chains` (GCC's tuning for Intel and `generic`): that `sum_x` fused as well.
//!
//! Evidence (GCC 12.2, the peer's `ggml-quants.c` at `-O3 -march=native`, `.FMA` calls in
//! `-fdump-tree-optimized`, per function): `-mtune=znver3` and `-mtune=znver2` against
//! `-mtune=native` (rocketlake) and `sapphirerapids` (identical to each other) fuse one site
//! less in `make_qkx3_quants` and in the inlined `make_qkx2_quants` of `quantize_row_q4_K_ref`
//! and `q5_K_ref`, the `sum_x` above; `-mtune=native --param avoid-fma-max-bits=256` alone
//! removes just those. The other differences round the same: vector widths of the
//! `nearest_int` fusions, loop epilogues our row lengths never reach, and Q2_K's
//! `x + dmin*m`, vectorized with a broadcast product under Zen tuning with AVX-512 but fused
//! under Intel's, where `dmin*m` (an f16 times a 4-bit integer) is exact either way.
//!
//! The profile is chosen once from CPUID (AMD family 17h, 19h or 1Ah, or Hygon 18h: Zen, which
//! GCC tunes as `znver*` under `-march=native`; anything else: `chains`), and
//! `R1SERVE_QUANT_FMA=chains|nochains` overrides it, to match a peer built for another machine.

use super::util::{nearest_int, rd_f16, wr_f16};
use super::{q8, GgmlType, QuantError};

/// ggml's `nearest_int(a * b)` where GCC fused the product into the rounding's `+ 1.5·2^23`:
/// the exact product rounded once, ties to even (the f64 product of two f32 is exact).
#[inline(always)]
pub(super) fn ni_mul(a: f32, b: f32) -> i32 {
    (a as f64 * b as f64).round_ties_even() as i32
}

/// Where GCC contracted products into fused multiply-adds in the ggml build being matched
/// (see the module doc): the profile of the tuning `-march=native` picks on this CPU.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum FmaProfile {
    /// Loop-carried `sum += a*b` chains fused (GCC's tuning for Intel, and `generic`).
    Chains,
    /// Such chains left as a multiply and an add (GCC's `avoid_fma_chains`, AMD Zen).
    NoChains,
}

impl FmaProfile {
    pub(super) fn chains(self) -> bool {
        self == FmaProfile::Chains
    }
}

/// The CPU is one GCC tunes as AMD Zen (`znver*`) under `-march=native`.
fn cpu_is_zen() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        // SAFETY: CPUID leaves 0 and 1 exist on every x86-64 CPU. (`__cpuid` is a safe fn in
        // newer Rust; the block keeps older compilers building.)
        #[allow(unused_unsafe)]
        let (l0, l1) = unsafe { (std::arch::x86_64::__cpuid(0), std::arch::x86_64::__cpuid(1)) };
        let mut vendor = [0u8; 12];
        vendor[..4].copy_from_slice(&l0.ebx.to_le_bytes());
        vendor[4..8].copy_from_slice(&l0.edx.to_le_bytes());
        vendor[8..].copy_from_slice(&l0.ecx.to_le_bytes());
        let base = (l1.eax >> 8) & 0xF;
        let family = if base == 0xF {
            base + ((l1.eax >> 20) & 0xFF)
        } else {
            base
        };
        match &vendor {
            b"AuthenticAMD" => matches!(family, 0x17 | 0x19 | 0x1A),
            b"HygonGenuine" => family == 0x18,
            _ => false,
        }
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

/// The profile for this process: `R1SERVE_QUANT_FMA` (`chains` or `nochains`) if set,
/// else from the CPU. Read once.
pub(super) fn fma_profile() -> FmaProfile {
    static PROFILE: std::sync::OnceLock<FmaProfile> = std::sync::OnceLock::new();
    *PROFILE.get_or_init(|| {
        let chains = match std::env::var("R1SERVE_QUANT_FMA").as_deref() {
            Ok("chains") => true,
            Ok("nochains") => false,
            Ok(other) => {
                let zen = cpu_is_zen();
                tracing::warn!(
                    "R1SERVE_QUANT_FMA={other:?} is neither `chains` nor `nochains`; \
                     using the CPU's ({})",
                    if zen { "nochains" } else { "chains" }
                );
                !zen
            }
            Err(_) => !cpu_is_zen(),
        };
        if chains {
            FmaProfile::Chains
        } else {
            FmaProfile::NoChains
        }
    })
}

/// The types [`quantize_weights`] writes.
pub fn quantize_weights_supported(ty: GgmlType) -> bool {
    use GgmlType::*;
    matches!(
        ty,
        F32 | F16 | BF16 | Q4_0 | Q4_1 | Q5_0 | Q5_1 | Q8_0 | Q2_K | Q3_K | Q4_K | Q5_K | Q6_K
    ) || super::quantize_iq::supported(ty)
}

/// Quantize one row of a weight matrix as `llama-quantize` does (`ggml_quantize_chunk` on
/// that row): `x` is the row, `out` its `row_bytes(ty, x.len())` bytes, `imatrix` the
/// importance of each of the row's columns (llama.cpp's imatrix entry for the tensor).
/// Q8_0 and the float types ignore the importance matrix, as ggml does.
pub fn quantize_weights(
    ty: GgmlType,
    x: &[f32],
    out: &mut [u8],
    imatrix: Option<&[f32]>,
) -> Result<(), QuantError> {
    if !quantize_weights_supported(ty) {
        return Err(QuantError::Unsupported {
            ty,
            op: "quantize_weights",
        });
    }
    let rb = super::row_bytes(ty, x.len())?;
    super::check_len(ty, "output", rb, out.len())?;
    if let Some(w) = imatrix {
        super::check_len(ty, "importance matrix", x.len(), w.len())?;
    }
    let p = fma_profile();
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("fma") {
        // SAFETY: the CPU has FMA, checked just above.
        return unsafe { row_fma(ty, x, out, imatrix, p) };
    }
    row_generic(ty, x, out, imatrix, p)
}

type RowResult = Result<(), QuantError>;

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "fma")]
unsafe fn row_fma(
    ty: GgmlType,
    x: &[f32],
    out: &mut [u8],
    w: Option<&[f32]>,
    p: FmaProfile,
) -> RowResult {
    row(ty, x, out, w, p)
}

fn row_generic(
    ty: GgmlType,
    x: &[f32],
    out: &mut [u8],
    w: Option<&[f32]>,
    p: FmaProfile,
) -> RowResult {
    row(ty, x, out, w, p)
}

#[inline(always)]
fn row(
    ty: GgmlType,
    x: &[f32],
    out: &mut [u8],
    imatrix: Option<&[f32]>,
    p: FmaProfile,
) -> RowResult {
    use super::quantize_ggml_k as k;
    use GgmlType::*;
    if super::quantize_iq::supported(ty) {
        return super::quantize_iq::row(ty, x, out, imatrix, p);
    }
    let bs = ty.block_size();
    let ts = ty.type_size();
    let blocks = x.chunks_exact(bs).zip(out.chunks_exact_mut(ts));
    match (ty, imatrix) {
        (F32, _) => q8::convert_f32(x, out),
        (F16, _) => q8::convert_f16(x, out),
        (BF16, _) => q8::convert_bf16(x, out),
        (Q8_0, _) => blocks.for_each(|(x, y)| q8_0(x, y)),
        (Q4_0, None) => blocks.for_each(|(x, y)| q4_0(x, y)),
        (Q4_1, None) => blocks.for_each(|(x, y)| q4_1(x, y)),
        (Q5_0, None) => blocks.for_each(|(x, y)| q5_0(x, y)),
        (Q5_1, None) => blocks.for_each(|(x, y)| q5_1(x, y)),
        (Q2_K, None) => blocks.for_each(|(x, y)| k::q2_k_ref(x, y, p)),
        (Q3_K, None) => blocks.for_each(|(x, y)| k::q3_k_ref(x, y)),
        (Q4_K, None) => blocks.for_each(|(x, y)| k::q45_k_ref(x, y, 15, p)),
        (Q5_K, None) => blocks.for_each(|(x, y)| k::q45_k_ref(x, y, 31, p)),
        (Q6_K, None) => blocks.for_each(|(x, y)| k::q6_k_ref(x, y)),
        (_, Some(w)) => {
            let it = x
                .chunks_exact(bs)
                .zip(out.chunks_exact_mut(ts))
                .zip(w.chunks_exact(bs));
            match ty {
                // sigma² of these four is taken over the whole row
                Q4_0 => k::q4_0_imat_row(x, out, w),
                Q4_1 => k::q4_1_imat_row(x, out, w, p),
                Q5_0 => k::q5_0_imat_row(x, out, w),
                Q5_1 => k::q5_1_imat_row(x, out, w, p),
                Q2_K => it.for_each(|((x, y), w)| k::q2_k_imat(x, y, w, p)),
                Q3_K => it.for_each(|((x, y), w)| k::q3_k_imat(x, y, w)),
                Q4_K => it.for_each(|((x, y), w)| k::q45_k_imat(x, y, w, 15, p)),
                Q5_K => it.for_each(|((x, y), w)| k::q45_k_imat(x, y, w, 31, p)),
                Q6_K => it.for_each(|((x, y), w)| k::q6_k_imat(x, y, w)),
                _ => unreachable!("checked by quantize_weights_supported"),
            }
        }
        _ => unreachable!("checked by quantize_weights_supported"),
    }
    Ok(())
}

/// (max |x|, the element that has it)
#[inline(always)]
pub(super) fn signed_absmax(x: &[f32]) -> (f32, f32) {
    let mut amax = 0f32;
    let mut max = 0f32;
    for &v in x {
        if amax < v.abs() {
            amax = v.abs();
            max = v;
        }
    }
    (amax, max)
}

#[inline(always)]
pub(super) fn min_max(x: &[f32]) -> (f32, f32) {
    let mut min = f32::MAX;
    let mut max = -f32::MAX;
    for &v in x {
        if v < min {
            min = v;
        }
        if v > max {
            max = v;
        }
    }
    (min, max)
}

/// `quantize_row_q8_0_ref`: `roundf` (ties away from zero), `id = 1/d`.
#[inline(always)]
fn q8_0(x: &[f32], y: &mut [u8]) {
    let amax = x.iter().fold(0f32, |a, v| a.max(v.abs()));
    let d = amax / 127.0;
    let id = if d != 0.0 { 1.0 / d } else { 0.0 };
    wr_f16(y, 0, d);
    for (q, &v) in y[2..34].iter_mut().zip(x) {
        *q = (v * id).round() as i8 as u8;
    }
}

#[inline(always)]
fn q4_0(x: &[f32], y: &mut [u8]) {
    let (_, max) = signed_absmax(x);
    let d = max / -8.0;
    let id = if d != 0.0 { 1.0 / d } else { 0.0 };
    wr_f16(y, 0, d);
    for j in 0..16 {
        let a = (x[j].mul_add(id, 8.5) as i8).min(15) as u8;
        let b = (x[j + 16].mul_add(id, 8.5) as i8).min(15) as u8;
        y[2 + j] = a | (b << 4);
    }
}

#[inline(always)]
fn q4_1(x: &[f32], y: &mut [u8]) {
    let (min, max) = min_max(x);
    let d = (max - min) / 15.0;
    let id = if d != 0.0 { 1.0 / d } else { 0.0 };
    wr_f16(y, 0, d);
    wr_f16(y, 2, min);
    for j in 0..16 {
        let a = ((x[j] - min).mul_add(id, 0.5) as i8).min(15) as u8;
        let b = ((x[j + 16] - min).mul_add(id, 0.5) as i8).min(15) as u8;
        y[4 + j] = a | (b << 4);
    }
}

#[inline(always)]
fn q5_0(x: &[f32], y: &mut [u8]) {
    let (_, max) = signed_absmax(x);
    let d = max / -16.0;
    let id = if d != 0.0 { 1.0 / d } else { 0.0 };
    wr_f16(y, 0, d);
    let mut qh = 0u32;
    for j in 0..16 {
        let a = (x[j].mul_add(id, 16.5) as i8).min(31) as u8;
        let b = (x[j + 16].mul_add(id, 16.5) as i8).min(31) as u8;
        y[6 + j] = (a & 0xF) | ((b & 0xF) << 4);
        qh |= ((a as u32 & 0x10) >> 4) << j;
        qh |= ((b as u32 & 0x10) >> 4) << (j + 16);
    }
    y[2..6].copy_from_slice(&qh.to_le_bytes());
}

#[inline(always)]
fn q5_1(x: &[f32], y: &mut [u8]) {
    let (min, max) = min_max(x);
    let d = (max - min) / 31.0;
    let id = if d != 0.0 { 1.0 / d } else { 0.0 };
    wr_f16(y, 0, d);
    wr_f16(y, 2, min);
    let mut qh = 0u32;
    for j in 0..16 {
        let a = (x[j] - min).mul_add(id, 0.5) as u8;
        let b = (x[j + 16] - min).mul_add(id, 0.5) as u8;
        y[8 + j] = (a & 0xF) | ((b & 0xF) << 4);
        qh |= ((a as u32 & 0x10) >> 4) << j;
        qh |= ((b as u32 & 0x10) >> 4) << (j + 16);
    }
    y[4..8].copy_from_slice(&qh.to_le_bytes());
}

/// Re-read an f16 field just written (ggml's `GGML_FP16_TO_FP32(y.d)`).
#[inline(always)]
pub(super) fn f16_roundtrip(y: &mut [u8], off: usize, v: f32) -> f32 {
    wr_f16(y, off, v);
    rd_f16(y, off)
}

/// ggml's plain `nearest_int` (no product folded in).
#[inline(always)]
pub(super) fn ni(x: f32) -> i32 {
    nearest_int(x)
}
