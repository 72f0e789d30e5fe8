//! Which type each tensor gets: llama.cpp's file types (`--type`) and its per-tensor rules
//! (`llama_tensor_get_type` in `src/llama-quant.cpp` at the peer commit 0c1e570), for the
//! types r1serve can write: the plain types, and the K-quant mixes.

use r1_model::quant::GgmlType;

/// A `--type`: llama.cpp's `llama_ftype`, named and numbered as there.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[allow(non_camel_case_types)]
pub enum FileType {
    F32,
    F16,
    BF16,
    Q8_0,
    Q4_0,
    Q4_1,
    Q5_0,
    Q5_1,
    Q2_K,
    Q3_K_S,
    Q3_K_M,
    Q3_K_L,
    Q4_K_S,
    Q4_K_M,
    Q5_K_S,
    Q5_K_M,
    Q6_K,
}

impl FileType {
    pub const ALL: [FileType; 17] = [
        FileType::F32,
        FileType::F16,
        FileType::BF16,
        FileType::Q8_0,
        FileType::Q4_0,
        FileType::Q4_1,
        FileType::Q5_0,
        FileType::Q5_1,
        FileType::Q2_K,
        FileType::Q3_K_S,
        FileType::Q3_K_M,
        FileType::Q3_K_L,
        FileType::Q4_K_S,
        FileType::Q4_K_M,
        FileType::Q5_K_S,
        FileType::Q5_K_M,
        FileType::Q6_K,
    ];

    pub fn name(self) -> &'static str {
        use FileType::*;
        match self {
            F32 => "F32",
            F16 => "F16",
            BF16 => "BF16",
            Q8_0 => "Q8_0",
            Q4_0 => "Q4_0",
            Q4_1 => "Q4_1",
            Q5_0 => "Q5_0",
            Q5_1 => "Q5_1",
            Q2_K => "Q2_K",
            Q3_K_S => "Q3_K_S",
            Q3_K_M => "Q3_K_M",
            Q3_K_L => "Q3_K_L",
            Q4_K_S => "Q4_K_S",
            Q4_K_M => "Q4_K_M",
            Q5_K_S => "Q5_K_S",
            Q5_K_M => "Q5_K_M",
            Q6_K => "Q6_K",
        }
    }

    /// `general.file_type` (llama.cpp's `LLAMA_FTYPE_*` value).
    pub fn id(self) -> u32 {
        use FileType::*;
        match self {
            F32 => 0,
            F16 => 1,
            Q4_0 => 2,
            Q4_1 => 3,
            Q8_0 => 7,
            Q5_0 => 8,
            Q5_1 => 9,
            Q2_K => 10,
            Q3_K_S => 11,
            Q3_K_M => 12,
            Q3_K_L => 13,
            Q4_K_S => 14,
            Q4_K_M => 15,
            Q5_K_S => 16,
            Q5_K_M => 17,
            Q6_K => 18,
            BF16 => 32,
        }
    }

    /// The tensor type the mix starts from (`llama_ftype_get_default_type`).
    pub fn default_type(self) -> GgmlType {
        use FileType::*;
        match self {
            F32 => GgmlType::F32,
            F16 => GgmlType::F16,
            BF16 => GgmlType::BF16,
            Q8_0 => GgmlType::Q8_0,
            Q4_0 => GgmlType::Q4_0,
            Q4_1 => GgmlType::Q4_1,
            Q5_0 => GgmlType::Q5_0,
            Q5_1 => GgmlType::Q5_1,
            Q2_K => GgmlType::Q2_K,
            Q3_K_S | Q3_K_M | Q3_K_L => GgmlType::Q3_K,
            Q4_K_S | Q4_K_M => GgmlType::Q4_K,
            Q5_K_S | Q5_K_M => GgmlType::Q5_K,
            Q6_K => GgmlType::Q6_K,
        }
    }
}

impl std::str::FromStr for FileType {
    type Err = String;
    /// Names as `llama-quantize` takes them (any case); `Q3_K`, `Q4_K`, `Q5_K` mean the `_M`
    /// mixes, as there.
    fn from_str(s: &str) -> Result<Self, String> {
        let u = s.to_ascii_uppercase();
        let alias = match u.as_str() {
            "Q3_K" => "Q3_K_M",
            "Q4_K" => "Q4_K_M",
            "Q5_K" => "Q5_K_M",
            "INT8" => "Q8_0",
            other => other,
        };
        FileType::ALL
            .into_iter()
            .find(|t| t.name() == alias)
            .ok_or_else(|| {
                let names: Vec<_> = FileType::ALL.iter().map(|t| t.name()).collect();
                format!("unknown type `{s}` (one of: {})", names.join(", "))
            })
    }
}

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
    use FileType as F;
    use GgmlType as T;
    let use_more_bits = |i: usize, n: usize| {
        i < n / 8 || i >= 7 * n / 8 || (i as isize - (n / 8) as isize) % 3 == 2
    };
    let cat = category(name);
    let falcon = info.arch == "falcon";
    let n_expert = info.n_expert;
    if cat == Category::Output || (!info.has_output && cat == Category::TokenEmbd) {
        if falcon || !ne0.is_multiple_of(ty.block_size()) {
            ty = T::Q8_0;
        } else if ty != T::Q8_0 {
            ty = T::Q6_K;
        }
        return ty;
    }
    if cat == Category::TokenEmbd {
        return ty;
    }
    // the layer of a per-layer tensor: parsed from the name for MoE models, else counted
    let layer = |i: usize| {
        if n_expert > 1 {
            layer_of(name).unwrap_or(i)
        } else {
            i
        }
    };
    let n_layer = info.n_layer;
    match cat {
        Category::AttnV | Category::AttnQkv | Category::AttnKvB => {
            let i = st.i_attention_wv;
            let n = info.n_attention_wv;
            ty = match ftype {
                F::Q2_K => {
                    if info.n_gqa() >= 4 {
                        T::Q4_K
                    } else {
                        T::Q3_K
                    }
                }
                F::Q3_K_M => {
                    if i < 2 {
                        T::Q5_K
                    } else {
                        T::Q4_K
                    }
                }
                F::Q3_K_L => T::Q5_K,
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
        Category::AttnK if n_expert == 8 => ty = T::Q8_0,
        Category::FfnDown => {
            let i = layer(st.i_ffn_down);
            ty = match ftype {
                F::Q2_K => T::Q3_K,
                F::Q3_K_M => {
                    if i < n_layer / 16 {
                        T::Q5_K
                    } else if !falcon || use_more_bits(i, n_layer) {
                        T::Q4_K
                    } else {
                        T::Q3_K
                    }
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
        Category::AttnOutput => {
            if !falcon {
                if n_expert == 8 {
                    if matches!(
                        ftype,
                        F::Q2_K | F::Q3_K_S | F::Q3_K_M | F::Q4_K_S | F::Q4_K_M
                    ) {
                        ty = T::Q5_K;
                    }
                } else {
                    ty = match ftype {
                        F::Q2_K => T::Q3_K,
                        F::Q3_K_M => T::Q4_K,
                        F::Q3_K_L => T::Q5_K,
                        _ => ty,
                    };
                }
            } else if ftype == F::Q3_K_L {
                ty = T::Q4_K;
            }
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
}
