//! Which type each tensor gets: llama.cpp's file types (`--type`) and its per-tensor rules
//! (`llama_tensor_get_type` in `src/llama-quant.cpp` at the peer commit 0c1e570), for the
//! mixes r1serve can write: the plain types, the K-quant mixes and the i-quant mixes.

use r1_model::quant::GgmlType;

pub use crate::quantize_ftype::FileType;

/// What the rules need to know about the model.
#[derive(Clone, Debug, Default)]
pub struct ModelInfo {
    pub arch: String,
    pub n_layer: usize,
    pub n_head: usize,
    pub n_head_kv: usize,
    pub n_expert: usize,
    /// An `output.weight` exists (else the embeddings double as the output).
    pub has_output: bool,
    /// Tensors in the attention-v category (`attn_v`, `attn_qkv`, `attn_kv_b`).
    pub n_attention_wv: usize,
}

impl ModelInfo {
    fn n_gqa(&self) -> usize {
        self.n_head.checked_div(self.n_head_kv).unwrap_or(1)
    }
}

/// `tensor_allows_quantization`: 2-D or 3-D weights, minus the ones llama.cpp keeps.
pub fn allows_quantization(name: &str, n_dims: usize) -> bool {
    if n_dims < 2 || !name.ends_with("weight") {
        return false;
    }
    const KEEP: [&str; 30] = [
        "_norm.weight",
        "ffn_gate_inp.weight",
        "ffn_gate_tid2eid.weight",
        "altup",
        "laurel",
        "per_layer_model_proj",
        "ssm_conv1d",
        "shortconv.conv.weight",
        "indexer.k_proj.weight",
        "indexer.q_proj.weight",
        "time_mix_first.weight",
        "time_mix_w0.weight",
        "time_mix_w1.weight",
        "time_mix_w2.weight",
        "time_mix_v0.weight",
        "time_mix_v1.weight",
        "time_mix_v2.weight",
        "time_mix_a0.weight",
        "time_mix_a1.weight",
        "time_mix_a2.weight",
        "time_mix_g1.weight",
        "time_mix_g2.weight",
        "time_mix_decay_w1.weight",
        "time_mix_decay_w2.weight",
        "time_mix_lerp_fused.weight",
        "attn_rel_b.weight",
        ".position_embd",
        ".rel_pos",
        ".patch_embd",
        "a.rvq.codebook",
    ];
    !KEEP.iter().any(|k| name.contains(k))
        && name != "position_embd.weight"
        && name != "token_types.weight"
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Category {
    TokenEmbd,
    Output,
    AttnQkv,
    AttnKvB,
    AttnV,
    AttnK,
    AttnQ,
    AttnOutput,
    FfnUp,
    FfnGate,
    FfnDown,
    Other,
}

fn category(name: &str) -> Category {
    use Category::*;
    if name == "output.weight" {
        Output
    } else if name == "token_embd.weight" || name == "per_layer_token_embd.weight" {
        TokenEmbd
    } else if name.contains("attn_qkv.weight") {
        AttnQkv
    } else if name.contains("attn_kv_b.weight") {
        AttnKvB
    } else if name.contains("attn_v.weight") {
        AttnV
    } else if name.contains("attn_k.weight") {
        AttnK
    } else if name.contains("attn_q.weight") {
        AttnQ
    } else if name.contains("attn_output.weight") {
        AttnOutput
    } else if name.contains("ffn_up") {
        FfnUp
    } else if name.contains("ffn_gate") {
        FfnGate
    } else if name.contains("ffn_down") {
        FfnDown
    } else {
        Other
    }
}

/// Counts the rules keep while walking the tensors in llama.cpp's order.
#[derive(Default)]
pub struct MixState {
    i_attention_wv: usize,
    i_ffn_down: usize,
    i_ffn_gate: usize,
    i_ffn_up: usize,
    pub n_fallback: usize,
}

/// A tensor's layer, from its `blk.N.` name.
fn layer_of(name: &str) -> Option<usize> {
    name.strip_prefix("blk.")?.split('.').next()?.parse().ok()
}

/// The type of one tensor (`llama_tensor_get_type` with its fallback for row lengths that
/// are not whole blocks). `ne0` is the row length, `n_dims` the tensor's rank; `pure` skips
/// the mix rules, as `--pure` does.
#[allow(clippy::too_many_arguments)]
pub fn tensor_type(
    st: &mut MixState,
    info: &ModelInfo,
    ftype: FileType,
    has_imatrix: bool,
    pure: bool,
    name: &str,
    current: GgmlType,
    ne0: usize,
    n_dims: usize,
) -> GgmlType {
    if !allows_quantization(name, n_dims) {
        return current;
    }
    let default = ftype.default_type();
    if !default.is_quantized() {
        return default;
    }
    let mut ty = default;
    if !pure {
        ty = mix_rules(st, info, ftype, has_imatrix, name, ty, ne0);
    }
    fallback(st, ty, ne0)
}

/// `tensor_type_fallback`: a type whose block does not divide the row length falls back.
fn fallback(st: &mut MixState, ty: GgmlType, ne0: usize) -> GgmlType {
    use GgmlType::*;
    if ne0.is_multiple_of(ty.block_size()) {
        return ty;
    }
    st.n_fallback += 1;
    let fb = match ty {
        IQ1_S | IQ1_M | IQ2_XXS | IQ2_XS | IQ2_S | IQ3_XXS | IQ3_S | IQ4_XS => IQ4_NL,
        Q2_K | Q3_K => Q4_0,
        Q4_K => Q5_0,
        Q5_K => Q5_1,
        Q6_K => Q8_0,
        other => other,
    };
    if ne0.is_multiple_of(fb.block_size()) {
        fb
    } else {
        F16
    }
}

fn mix_rules(
    st: &mut MixState,
    info: &ModelInfo,
    ftype: FileType,
    has_imatrix: bool,
    name: &str,
    mut ty: GgmlType,
    ne0: usize,
) -> GgmlType {
    use Category as C;
    use FileType as F;
    use GgmlType as T;
    let use_more_bits = |i: usize, n: usize| {
        i < n / 8 || i >= 7 * n / 8 || (i as isize - (n / 8) as isize) % 3 == 2
    };
    let cat = category(name);
    let falcon = info.arch == "falcon";
    let n_expert = info.n_expert;
    let n_gqa = info.n_gqa();
    let n_layer = info.n_layer;
    // the layer of a per-layer tensor: parsed from the name for MoE models, else counted
    let layer = |i: usize| {
        if n_expert > 1 {
            layer_of(name).unwrap_or(i)
        } else {
            i
        }
    };
    let iq2_s_or_m = matches!(ftype, F::IQ2_S | F::IQ2_M);
    if cat == C::Output || (!info.has_output && cat == C::TokenEmbd) {
        return if falcon || !ne0.is_multiple_of(ty.block_size()) {
            T::Q8_0
        } else if matches!(
            ftype,
            F::IQ2_XXS | F::IQ2_XS | F::IQ3_XXS | F::IQ1_S | F::IQ2_S | F::IQ2_M | F::IQ1_M
        ) {
            T::Q5_K
        } else if ty != T::Q8_0 {
            T::Q6_K
        } else {
            ty
        };
    }
    if cat == C::TokenEmbd {
        return match ftype {
            F::IQ2_XXS | F::IQ2_XS | F::IQ1_S | F::IQ1_M => T::Q2_K,
            F::IQ2_S | F::IQ2_M | F::IQ3_XXS => T::IQ3_S,
            _ => ty,
        };
    }
    if ftype.is_very_low_bit() {
        match cat {
            C::AttnV | C::AttnQkv | C::AttnKvB => {
                ty = if n_gqa >= 4 || n_expert >= 4 {
                    T::Q4_K
                } else if iq2_s_or_m {
                    T::IQ3_S
                } else {
                    T::Q2_K
                };
                st.i_attention_wv += 1;
            }
            C::AttnK if n_expert == 8 => ty = T::Q4_K,
            C::FfnDown => {
                // llama.cpp counts ffn_down tensors here, not layers (n_ffn_down = n_layer)
                if st.i_ffn_down < n_layer / 8 {
                    ty = if iq2_s_or_m { T::IQ3_S } else { T::Q2_K };
                }
                st.i_ffn_down += 1;
            }
            C::AttnOutput => {
                if n_expert == 8 {
                    ty = T::Q5_K;
                } else if matches!(ftype, F::IQ1_S | F::IQ1_M) {
                    ty = T::IQ2_XXS;
                } else if iq2_s_or_m {
                    ty = T::IQ3_S;
                }
            }
            _ => {}
        }
        return ty;
    }
    match cat {
        C::AttnV | C::AttnQkv | C::AttnKvB => {
            let i = st.i_attention_wv;
            let n = info.n_attention_wv;
            ty = match ftype {
                F::Q2_K => {
                    if n_gqa >= 4 {
                        T::Q4_K
                    } else {
                        T::Q3_K
                    }
                }
                F::Q2_K_S if n_gqa >= 4 => T::Q4_K,
                F::IQ3_XXS => {
                    if n_gqa >= 4 {
                        T::Q4_K
                    } else if !has_imatrix {
                        T::IQ3_S
                    } else {
                        T::IQ3_XXS
                    }
                }
                F::IQ3_XS | F::IQ3_S if n_gqa >= 4 => T::Q4_K,
                F::IQ3_M => T::Q4_K,
                F::Q3_K_M => {
                    if i < 2 {
                        T::Q5_K
                    } else {
                        T::Q4_K
                    }
                }
                F::Q3_K_L => T::Q5_K,
                F::IQ4_NL | F::IQ4_XS if n_gqa >= 4 => T::Q5_K,
                F::Q4_K_M | F::Q5_K_M if use_more_bits(i, n) => T::Q6_K,
                F::Q4_K_S if i < 4 => T::Q5_K,
                _ => ty,
            };
            if info.arch == "llama" && n_layer == 80 && matches!(ty, T::Q3_K | T::Q4_K) {
                ty = T::Q5_K; // llama.cpp's LLM_TYPE_70B rule
            }
            if n_expert == 8 {
                ty = T::Q8_0;
            }
            st.i_attention_wv += 1;
            // the fused-qkv rules of llama.cpp apply to `attn_qkv` only when it is not
            // also counted as attention-v; at this commit it is, so nothing more here
        }
        C::AttnK => {
            if n_expert == 8 {
                ty = T::Q8_0;
            } else if ftype == F::IQ3_XS {
                ty = T::IQ3_XXS;
            } else if ftype == F::IQ3_XXS {
                ty = T::IQ2_S;
            }
        }
        C::AttnQ => {
            if ftype == F::IQ3_XS {
                ty = T::IQ3_XXS;
            } else if ftype == F::IQ3_XXS {
                ty = T::IQ2_S;
            }
        }
        C::FfnDown => {
            let i = layer(st.i_ffn_down);
            ty = match ftype {
                F::Q2_K => T::Q3_K,
                F::Q2_K_S if i < n_layer / 8 => T::Q4_K,
                F::Q2_K_S => ty,
                F::IQ3_XXS if !has_imatrix => {
                    if i < n_layer / 8 {
                        T::Q4_K
                    } else {
                        T::Q3_K
                    }
                }
                F::Q3_K_M => {
                    if i < n_layer / 16 {
                        T::Q5_K
                    } else if !falcon || use_more_bits(i, n_layer) {
                        T::Q4_K
                    } else {
                        T::Q3_K
                    }
                }
                F::IQ3_M if i < n_layer / 8 || (n_expert == 8 && use_more_bits(i, n_layer)) => {
                    T::Q4_K
                }
                F::Q3_K_L => {
                    if falcon {
                        T::Q4_K
                    } else {
                        T::Q5_K
                    }
                }
                F::Q4_K_M => {
                    if falcon {
                        if i < n_layer / 16 {
                            T::Q6_K
                        } else if use_more_bits(i, n_layer) {
                            T::Q5_K
                        } else {
                            T::Q4_K
                        }
                    } else if use_more_bits(i, n_layer) {
                        T::Q6_K
                    } else {
                        ty
                    }
                }
                F::IQ4_NL | F::IQ4_XS if i < n_layer / 8 && !has_imatrix => T::Q5_K,
                F::Q5_K_M if use_more_bits(i, n_layer) => T::Q6_K,
                F::Q4_K_S if !falcon && i < n_layer / 8 => T::Q5_K,
                F::Q4_0 | F::Q5_0 if has_imatrix && i < n_layer / 8 => {
                    if ftype == F::Q4_0 {
                        T::Q4_1
                    } else {
                        T::Q5_1
                    }
                }
                _ => ty,
            };
            st.i_ffn_down += 1;
        }
        C::AttnOutput => {
            if !falcon {
                if n_expert == 8 {
                    if matches!(
                        ftype,
                        F::Q2_K
                            | F::IQ3_XS
                            | F::IQ3_XXS
                            | F::Q3_K_S
                            | F::Q3_K_M
                            | F::IQ4_NL
                            | F::Q4_K_S
                            | F::Q4_K_M
                            | F::IQ3_S
                            | F::IQ3_M
                            | F::IQ4_XS
                    ) {
                        ty = T::Q5_K;
                    }
                } else {
                    ty = match ftype {
                        F::Q2_K => T::Q3_K,
                        F::IQ3_XXS => T::IQ3_S,
                        F::Q3_K_M | F::IQ3_M => T::Q4_K,
                        F::Q3_K_L => T::Q5_K,
                        _ => ty,
                    };
                }
            } else if ftype == F::Q3_K_L {
                ty = T::Q4_K;
            }
        }
        C::FfnGate | C::FfnUp => {
            let counter = if cat == C::FfnGate {
                &mut st.i_ffn_gate
            } else {
                &mut st.i_ffn_up
            };
            let i = layer(*counter);
            if ftype == F::IQ3_XS && i >= n_layer / 8 && i < 7 * n_layer / 8 {
                ty = T::IQ3_XXS;
            }
            *counter += 1;
        }
        _ => {}
    }
    ty
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_parse_as_llama_quantize_takes_them() {
        assert_eq!("q4_k_m".parse::<FileType>().unwrap(), FileType::Q4_K_M);
        assert_eq!("Q4_K".parse::<FileType>().unwrap(), FileType::Q4_K_M);
        assert!("Q7_X".parse::<FileType>().unwrap_err().contains("Q4_K_M"));
    }

    #[test]
    fn norms_and_vectors_stay_and_ragged_rows_fall_back() {
        let info = ModelInfo {
            arch: "qwen2".into(),
            n_layer: 24,
            n_head: 14,
            n_head_kv: 2,
            has_output: true,
            n_attention_wv: 24,
            ..Default::default()
        };
        let mut st = MixState::default();
        let f = FileType::Q4_K_M;
        let t = |st: &mut MixState, name: &str, ne0, nd| {
            tensor_type(st, &info, f, false, true, name, GgmlType::F16, ne0, nd)
        };
        assert_eq!(t(&mut st, "blk.0.attn_norm.weight", 896, 1), GgmlType::F16);
        assert_eq!(t(&mut st, "blk.0.attn_q.bias", 896, 1), GgmlType::F16);
        // 896 is not whole 256-blocks: Q4_K falls back to Q5_0, as in llama.cpp
        assert_eq!(t(&mut st, "blk.0.attn_q.weight", 896, 2), GgmlType::Q5_0);
        assert_eq!(t(&mut st, "blk.0.ffn_down.weight", 4864, 2), GgmlType::Q4_K);
        assert_eq!(st.n_fallback, 1);
    }

    /// The i-quant rules on a DeepSeek-shaped model (llama.cpp's `llama_tensor_get_type` at
    /// 0c1e570), the mixes people download R1 in: IQ1_S, IQ2_XXS, IQ3_XXS, IQ4_XS.
    #[test]
    fn iq_mixes_follow_llama_cpp_on_a_deepseek_shape() {
        let info = ModelInfo {
            arch: "deepseek2".into(),
            n_layer: 16,
            n_head: 128,
            n_head_kv: 128,
            n_expert: 256,
            has_output: true,
            n_attention_wv: 16,
        };
        let plan = |f: FileType, imatrix: bool, names: &[(&str, usize)]| -> Vec<GgmlType> {
            let mut st = MixState::default();
            names
                .iter()
                .map(|&(n, ne0)| {
                    tensor_type(&mut st, &info, f, imatrix, false, n, GgmlType::BF16, ne0, 2)
                })
                .collect()
        };
        let names = [
            ("token_embd.weight", 7168),
            ("output.weight", 7168),
            ("blk.0.attn_kv_b.weight", 512),
            ("blk.0.attn_output.weight", 16384),
            ("blk.0.ffn_down.weight", 18432),
            ("blk.1.ffn_down.weight", 18432),
            ("blk.3.ffn_down_exps.weight", 2048),
            ("blk.3.ffn_up_exps.weight", 7168),
            ("blk.3.attn_q_b.weight", 1536),
        ];
        use GgmlType::*;
        assert_eq!(
            plan(FileType::IQ1_S, true, &names),
            [Q2_K, Q5_K, Q4_K, IQ2_XXS, Q2_K, Q2_K, IQ1_S, IQ1_S, IQ1_S]
        );
        assert_eq!(
            plan(FileType::IQ2_M, true, &names),
            [IQ3_S, Q5_K, Q4_K, IQ3_S, IQ3_S, IQ3_S, IQ2_S, IQ2_S, IQ2_S]
        );
        assert_eq!(
            plan(FileType::IQ3_XXS, true, &names),
            [IQ3_S, Q5_K, IQ3_XXS, IQ3_S, IQ3_XXS, IQ3_XXS, IQ3_XXS, IQ3_XXS, IQ3_XXS]
        );
        // without an importance matrix, IQ3_XXS keeps more bits where it matters
        assert_eq!(
            plan(FileType::IQ3_XXS, false, &names)[2..6],
            [IQ3_S, IQ3_S, Q4_K, Q4_K]
        );
        assert_eq!(
            plan(FileType::IQ4_XS, false, &names),
            [IQ4_XS, Q6_K, IQ4_XS, IQ4_XS, Q5_K, Q5_K, IQ4_XS, IQ4_XS, IQ4_XS]
        );
        // a row length that is not whole 256-blocks falls back to IQ4_NL
        assert_eq!(
            plan(FileType::IQ2_XXS, true, &[("blk.0.ffn_up.weight", 896)]),
            [IQ4_NL]
        );
        use crate::quantize_ftype::requires_imatrix;
        assert!(requires_imatrix(
            "blk.0.ffn_up.weight",
            IQ1_S,
            FileType::IQ1_S
        ));
        assert!(!requires_imatrix(
            "token_embd.weight",
            IQ2_XXS,
            FileType::IQ1_S
        ));
        assert!(!requires_imatrix(
            "blk.0.ffn_up.weight",
            IQ4_XS,
            FileType::IQ4_XS
        ));
        assert!(requires_imatrix(
            "blk.0.ffn_up.weight",
            Q2_K,
            FileType::Q2_K_S
        ));
        assert!(!requires_imatrix(
            "blk.0.ffn_up.weight",
            Q2_K,
            FileType::Q2_K
        ));
        assert_eq!("iq2_m".parse::<FileType>().unwrap().id(), 29);
    }
}
