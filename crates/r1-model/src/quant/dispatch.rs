//! Runtime instruction-set selection: detected once, resolved into a table of kernel
//! function pointers per ISA.

use std::sync::OnceLock;

use super::{dot_float, dot_scalar, iq_dot_scalar as iq, GgmlType};

/// A GEMM kernel: `(k, weight rows, activation rows, n, out)`; lengths checked by the caller.
pub(crate) type GemmFn = unsafe fn(usize, &[u8], &[u8], usize, super::gemm::OutPtr);

/// The instruction sets the kernels are built for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Isa {
    /// Portable Rust.
    Scalar,
    /// x86-64 AVX2 + FMA + F16C.
    Avx2,
    /// x86-64 AVX-512 (F, BW, VL) with VNNI, on top of AVX2.
    Avx512,
    /// aarch64 NEON, with the dot-product extension (`sdot`) where the CPU has it.
    #[cfg(target_arch = "aarch64")]
    Neon,
}

impl Isa {
    /// Every ISA, slowest first.
    #[cfg(not(target_arch = "aarch64"))]
    pub const ALL: [Isa; 3] = [Isa::Scalar, Isa::Avx2, Isa::Avx512];
    /// Every ISA, slowest first.
    #[cfg(target_arch = "aarch64")]
    pub const ALL: [Isa; 4] = [Isa::Scalar, Isa::Avx2, Isa::Avx512, Isa::Neon];

    /// The fastest ISA this CPU supports, detected once. `R1SERVE_ISA=scalar|avx2|avx512`
    /// (aarch64: `scalar|neon`) caps it (for tests and benchmarks).
    pub fn best() -> Isa {
        static BEST: OnceLock<Isa> = OnceLock::new();
        *BEST.get_or_init(|| {
            let cap = match std::env::var("R1SERVE_ISA").ok().as_deref() {
                Some("scalar") => Isa::Scalar,
                Some("avx2") => Isa::Avx2,
                _ => *Isa::ALL.last().unwrap(),
            };
            Isa::ALL
                .into_iter()
                .rev()
                .find(|&i| i as u8 <= cap as u8 && i.is_available())
                .unwrap_or(Isa::Scalar)
        })
    }

    /// Whether this CPU can run the ISA's kernels.
    pub fn is_available(self) -> bool {
        match self {
            Isa::Scalar => true,
            #[cfg(target_arch = "x86_64")]
            Isa::Avx2 => {
                is_x86_feature_detected!("avx2")
                    && is_x86_feature_detected!("fma")
                    && is_x86_feature_detected!("f16c")
            }
            #[cfg(target_arch = "x86_64")]
            Isa::Avx512 => {
                Isa::Avx2.is_available()
                    && is_x86_feature_detected!("avx512f")
                    && is_x86_feature_detected!("avx512bw")
                    && is_x86_feature_detected!("avx512vl")
                    && is_x86_feature_detected!("avx512vnni")
            }
            #[cfg(target_arch = "aarch64")]
            Isa::Neon => std::arch::is_aarch64_feature_detected!("neon"),
            #[cfg(not(target_arch = "x86_64"))]
            _ => false,
        }
    }

    /// Whether the AVX2 level's interleaved kernels use AVX-VNNI (`vpdpbusd` on 256-bit
    /// registers: Intel since Alder Lake, AMD since Zen 5): the CPU has it and
    /// `R1SERVE_AVXVNNI=0` does not turn it off (to measure plain AVX2 on such a CPU). The
    /// results are the same bits either way.
    pub fn avx_vnni() -> bool {
        static ON: OnceLock<bool> = OnceLock::new();
        *ON.get_or_init(|| {
            std::env::var("R1SERVE_AVXVNNI").ok().as_deref() != Some("0") && avx_vnni_detected()
        })
    }

    /// The available ISAs, slowest first.
    pub fn available() -> Vec<Isa> {
        Isa::ALL.into_iter().filter(|i| i.is_available()).collect()
    }
}

/// Whether this CPU runs AVX2 with AVX-VNNI.
pub(crate) fn avx_vnni_detected() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        Isa::Avx2.is_available() && is_x86_feature_detected!("avxvnni")
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

/// The AVX2 level's x16 kernel for `ty`, with AVX-VNNI or without (the caller checks that
/// the CPU has it).
#[cfg(target_arch = "x86_64")]
pub(crate) fn avx2_x16_kernel(vnni: bool, ty: GgmlType) -> Option<GemmFn> {
    use super::{x86_x16_avx2 as a, x86_x16_avx2_k as ak};
    use GgmlType::*;
    Some(match (vnni, ty) {
        (false, Q5_0) => a::gemm_q5_0_avx2,
        (false, Q8_0) => a::gemm_q8_0_avx2,
        (false, Q4_0) => a::gemm_q4_0_avx2,
        (false, Q4_1) => a::gemm_q4_1_avx2,
        (false, Q4_K) => ak::gemm_q4_k_avx2,
        (false, Q6_K) => ak::gemm_q6_k_avx2,
        (true, Q5_0) => a::gemm_q5_0_avxvnni,
        (true, Q8_0) => a::gemm_q8_0_avxvnni,
        (true, Q4_0) => a::gemm_q4_0_avxvnni,
        (true, Q4_1) => a::gemm_q4_1_avxvnni,
        (true, Q4_K) => ak::gemm_q4_k_avxvnni,
        (true, Q6_K) => ak::gemm_q6_k_avxvnni,
        _ => return None,
    })
}

const N_IDS: usize = 40;
type Table = [Option<GemmFn>; N_IDS];

fn scalar_kernel(ty: GgmlType) -> Option<GemmFn> {
    use GgmlType::*;
    Some(match ty {
        F32 => dot_float::gemm_f32,
        F16 => dot_float::gemm_f16,
        BF16 => dot_float::gemm_bf16,
        Q4_0 => dot_scalar::gemm_q4_0,
        Q4_1 => dot_scalar::gemm_q4_1,
        Q5_0 => dot_scalar::gemm_q5_0,
        Q5_1 => dot_scalar::gemm_q5_1,
        Q8_0 => dot_scalar::gemm_q8_0,
        Q2_K => dot_scalar::gemm_q2_k,
        Q3_K => dot_scalar::gemm_q3_k,
        Q4_K => dot_scalar::gemm_q4_k,
        Q5_K => dot_scalar::gemm_q5_k,
        Q6_K => dot_scalar::gemm_q6_k,
        IQ2_XXS => iq::gemm_iq2_xxs,
        IQ2_XS => iq::gemm_iq2_xs,
        IQ2_S => iq::gemm_iq2_s,
        IQ3_XXS => iq::gemm_iq3_xxs,
        IQ3_S => iq::gemm_iq3_s,
        IQ1_S => iq::gemm_iq1_s,
        IQ1_M => iq::gemm_iq1_m,
        IQ4_NL => iq::gemm_iq4_nl,
        IQ4_XS => iq::gemm_iq4_xs,
        _ => return None,
    })
}

#[cfg(target_arch = "x86_64")]
fn avx2_kernel(ty: GgmlType) -> Option<GemmFn> {
    use super::{x86_b32 as b, x86_float as f, x86_iq as iq, x86_k as kq, x86_k_low as kl};
    use GgmlType::*;
    Some(match ty {
        F32 => f::gemm_f32_avx2,
        F16 => f::gemm_f16_avx2,
        BF16 => f::gemm_bf16_avx2,
        Q4_0 => b::gemm_q4_0_avx2,
        Q4_1 => b::gemm_q4_1_avx2,
        Q5_0 => b::gemm_q5_0_avx2,
        Q5_1 => b::gemm_q5_1_avx2,
        Q8_0 => b::gemm_q8_0_avx2,
        Q2_K => kl::gemm_q2_k_avx2,
        Q3_K => kl::gemm_q3_k_avx2,
        Q4_K => kq::gemm_q4_k_avx2,
        Q5_K => kq::gemm_q5_k_avx2,
        Q6_K => kq::gemm_q6_k_avx2,
        IQ2_XXS => iq::gemm_iq2_xxs_avx2,
        IQ2_XS => iq::gemm_iq2_xs_avx2,
        IQ2_S => iq::gemm_iq2_s_avx2,
        IQ3_XXS => iq::gemm_iq3_xxs_avx2,
        IQ3_S => iq::gemm_iq3_s_avx2,
        IQ4_NL => iq::gemm_iq4_nl_avx2,
        IQ4_XS => iq::gemm_iq4_xs_avx2,
        IQ1_S => iq::gemm_iq1_s_avx2,
        IQ1_M => iq::gemm_iq1_m_avx2,
        _ => return scalar_kernel(ty),
    })
}

#[cfg(target_arch = "x86_64")]
fn avx512_kernel(ty: GgmlType) -> Option<GemmFn> {
    use super::x86_b32 as b;
    use GgmlType::*;
    Some(match ty {
        Q4_0 => b::gemm_q4_0_vnni,
        Q4_1 => b::gemm_q4_1_vnni,
        Q5_0 => b::gemm_q5_0_vnni,
        Q5_1 => b::gemm_q5_1_vnni,
        Q8_0 => b::gemm_q8_0_vnni,
        // K-quants: vpdpwssd runs on the same ports as vpmaddwd + vpaddd, so the AVX2
        // kernels are as fast
        _ => return avx2_kernel(ty),
    })
}

fn build(isa: Isa) -> Table {
    let mut t: Table = [None; N_IDS];
    for id in 0..N_IDS as u32 {
        if let Some(ty) = GgmlType::from_id(id) {
            t[id as usize] = match isa {
                Isa::Scalar => scalar_kernel(ty),
                #[cfg(target_arch = "x86_64")]
                Isa::Avx2 => avx2_kernel(ty),
                #[cfg(target_arch = "x86_64")]
                Isa::Avx512 => avx512_kernel(ty),
                #[cfg(target_arch = "aarch64")]
                Isa::Neon => {
                    super::neon::kernel(super::neon::dotprod(), ty).or_else(|| scalar_kernel(ty))
                }
                #[cfg(not(target_arch = "x86_64"))]
                _ => None,
            };
        }
    }
    t
}

/// The kernel for weights of `ty` on `isa` (the caller checks that `isa` is available).
pub(crate) fn kernel(isa: Isa, ty: GgmlType) -> Option<GemmFn> {
    static TABLES: [OnceLock<Table>; Isa::ALL.len()] = [const { OnceLock::new() }; Isa::ALL.len()];
    let i = isa as usize;
    TABLES[i].get_or_init(|| build(isa))[ty.id() as usize]
}

/// The kernel for weights of `ty` in `layout` on `isa` (the caller checks availability).
///
/// Every i-quant has an AVX-512 VNNI x16 kernel, and each pays: the grid types other than
/// IQ2_XXS (`x86_x16_grid`) measured 3.6-5.3x the native AVX2 kernel at 1 token and 3.8-4.5x
/// at 64 tokens (`benches/quant.rs`, 1408x2048, one thread), so none stays on AVX2 where
/// VNNI is present. AVX2-only CPUs have no x16 i-quant kernel and keep the native layout.
///
/// At AVX2, Q4_0 / Q4_1 / Q5_0 / Q8_0 / Q4_K / Q6_K interleave (`avx2_x16_kernel`):
/// 896x4864 one thread, x16 vs native AVX2, 1 and 64 tokens: Q4_0 2.1x / 3.0x, Q4_1
/// 2.0x / 2.4x (smollm2's 576x1536: 2.7x / 2.4x), Q5_0 2.0x / 2.5x, Q8_0 1.0x / 1.6x
/// (AVX-VNNI 1.15x / 3.9x), Q4_K 1.4x / 2.9x, Q6_K 1.6x / 1.6x. Q4_0 / Q4_1 at AVX-512
/// VNNI: 1.9x / 2.9x and 2.2x / 2.6x.
pub(crate) fn kernel_for(isa: Isa, layout: super::WeightLayout, ty: GgmlType) -> Option<GemmFn> {
    match layout {
        super::WeightLayout::Native => kernel(isa, ty),
        super::WeightLayout::Interleaved16 => {
            use super::{x16, x16_b4, x16_iq, x16_k, x16_q2k};
            #[cfg(target_arch = "x86_64")]
            use super::{
                x86_x16 as v, x86_x16_iq as vi, x86_x16_iq1 as vi1, x86_x16_iq2 as vi2,
                x86_x16_iq2xs as vi2x, x86_x16_iq3 as vi3, x86_x16_k as vk, x86_x16_q2k as v2,
            };
            use GgmlType::*;
            Some(match (isa, ty) {
                (Isa::Scalar, Q5_0) => x16::gemm_q5_0_scalar,
                (Isa::Scalar, Q8_0) => x16::gemm_q8_0_scalar,
                (Isa::Scalar, Q4_0) => x16_b4::gemm_q4_0_scalar,
                (Isa::Scalar, Q4_1) => x16_b4::gemm_q4_1_scalar,
                (Isa::Scalar, Q4_K) => x16_k::gemm_q4_k_scalar,
                (Isa::Scalar, Q6_K) => x16_k::gemm_q6_k_scalar,
                (Isa::Scalar, IQ4_NL) => x16_iq::gemm_iq4_nl_scalar,
                (Isa::Scalar, IQ4_XS) => x16_iq::gemm_iq4_xs_scalar,
                (Isa::Scalar, Q2_K) => x16_q2k::gemm_q2_k_scalar,
                (Isa::Scalar, IQ2_XXS) => x16_iq::gemm_iq2_xxs_scalar,
                (Isa::Scalar, IQ3_XXS) => x16_iq::gemm_iq3_xxs_scalar,
                (Isa::Scalar, IQ2_XS) => x16_iq::gemm_iq2_xs_scalar,
                (Isa::Scalar, IQ3_S) => x16_iq::gemm_iq3_s_scalar,
                (Isa::Scalar, IQ2_S) => x16_iq::gemm_iq2_s_scalar,
                (Isa::Scalar, IQ1_S) => x16_iq::gemm_iq1_s_scalar,
                (Isa::Scalar, IQ1_M) => x16_iq::gemm_iq1_m_scalar,
                #[cfg(target_arch = "x86_64")]
                (Isa::Avx2, _) => return avx2_x16_kernel(Isa::avx_vnni(), ty),
                #[cfg(target_arch = "x86_64")]
                (Isa::Avx512, Q5_0) => v::gemm_q5_0_vnni,
                #[cfg(target_arch = "x86_64")]
                (Isa::Avx512, Q8_0) => v::gemm_q8_0_vnni,
                #[cfg(target_arch = "x86_64")]
                (Isa::Avx512, Q4_0) => v::gemm_q4_0_vnni,
                #[cfg(target_arch = "x86_64")]
                (Isa::Avx512, Q4_1) => v::gemm_q4_1_vnni,
                #[cfg(target_arch = "x86_64")]
                (Isa::Avx512, Q4_K) => vk::gemm_q4_k_vnni,
                #[cfg(target_arch = "x86_64")]
                (Isa::Avx512, Q6_K) => vk::gemm_q6_k_vnni,
                #[cfg(target_arch = "x86_64")]
                (Isa::Avx512, IQ4_NL) => vi::gemm_iq4_nl_vnni,
                #[cfg(target_arch = "x86_64")]
                (Isa::Avx512, IQ4_XS) => vi::gemm_iq4_xs_vnni,
                #[cfg(target_arch = "x86_64")]
                (Isa::Avx512, Q2_K) => v2::gemm_q2_k_vnni,
                #[cfg(target_arch = "x86_64")]
                (Isa::Avx512, IQ2_XXS) => vi2::gemm_iq2_xxs_vnni,
                #[cfg(target_arch = "x86_64")]
                (Isa::Avx512, IQ3_XXS) => vi3::gemm_iq3_xxs_vnni,
                #[cfg(target_arch = "x86_64")]
                (Isa::Avx512, IQ2_XS) => vi2x::gemm_iq2_xs_vnni,
                #[cfg(target_arch = "x86_64")]
                (Isa::Avx512, IQ3_S) => vi3::gemm_iq3_s_vnni,
                #[cfg(target_arch = "x86_64")]
                (Isa::Avx512, IQ2_S) => vi2x::gemm_iq2_s_vnni,
                #[cfg(target_arch = "x86_64")]
                (Isa::Avx512, IQ1_S) => vi1::gemm_iq1_s_vnni,
                #[cfg(target_arch = "x86_64")]
                (Isa::Avx512, IQ1_M) => vi1::gemm_iq1_m_vnni,
                _ => return None,
            })
        }
    }
}

/// The instruction set whose kernel runs for weights of `ty` in `layout` on this CPU (a
/// table falls back to a slower ISA's kernel where a type has none of its own), or `None`
/// where there is no kernel. For `r1serve inspect`.
pub fn kernel_isa(layout: super::WeightLayout, ty: GgmlType) -> Option<Isa> {
    let best = Isa::best();
    let running = kernel_for(best, layout, ty)? as usize;
    Isa::ALL
        .into_iter()
        .filter(|&i| i as u8 <= best as u8 && i.is_available())
        .find(|&i| kernel_for(i, layout, ty).map(|f| f as usize) == Some(running))
        .or(Some(best))
}
