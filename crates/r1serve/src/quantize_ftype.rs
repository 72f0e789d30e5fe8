//! llama.cpp's file types (`--type`, `llama_ftype`): their names, numbers, and the tensor
//! type each mix starts from (`llama_ftype_get_default_type` in `src/llama-quant.cpp` at the
//! peer commit 0c1e570). The per-tensor rules are in `quantize_mix.rs`.

use r1_model::quant::GgmlType;

macro_rules! file_types {
    ($($v:ident = $id:literal => $default:ident),+ $(,)?) => {
        /// A `--type`: llama.cpp's `llama_ftype`, named and numbered as there.
        #[derive(Clone, Copy, Debug, PartialEq, Eq)]
        #[allow(non_camel_case_types)]
        pub enum FileType {
            $($v),+
        }

        impl FileType {
            pub const ALL: &'static [FileType] = &[$(FileType::$v),+];

            pub fn name(self) -> &'static str {
                match self {
                    $(FileType::$v => stringify!($v)),+
                }
            }

            /// `general.file_type` (llama.cpp's `LLAMA_FTYPE_*` value).
            pub fn id(self) -> u32 {
                match self {
                    $(FileType::$v => $id),+
                }
            }

            /// The tensor type the mix starts from (`llama_ftype_get_default_type`).
            pub fn default_type(self) -> GgmlType {
                match self {
                    $(FileType::$v => GgmlType::$default),+
                }
            }
        }
    };
}

file_types! {
    F32 = 0 => F32,
    F16 = 1 => F16,
    BF16 = 32 => BF16,
    Q8_0 = 7 => Q8_0,
    Q4_0 = 2 => Q4_0,
    Q4_1 = 3 => Q4_1,
    Q5_0 = 8 => Q5_0,
    Q5_1 = 9 => Q5_1,
    Q2_K = 10 => Q2_K,
    Q2_K_S = 21 => Q2_K,
    Q3_K_S = 11 => Q3_K,
    Q3_K_M = 12 => Q3_K,
    Q3_K_L = 13 => Q3_K,
    Q4_K_S = 14 => Q4_K,
    Q4_K_M = 15 => Q4_K,
    Q5_K_S = 16 => Q5_K,
    Q5_K_M = 17 => Q5_K,
    Q6_K = 18 => Q6_K,
    IQ1_S = 24 => IQ1_S,
    IQ1_M = 31 => IQ1_M,
    IQ2_XXS = 19 => IQ2_XXS,
    IQ2_XS = 20 => IQ2_XS,
    IQ2_S = 28 => IQ2_XS,
    IQ2_M = 29 => IQ2_S,
    IQ3_XXS = 23 => IQ3_XXS,
    IQ3_XS = 22 => IQ3_S,
    IQ3_S = 26 => IQ3_S,
    IQ3_M = 27 => IQ3_S,
    IQ4_NL = 25 => IQ4_NL,
    IQ4_XS = 30 => IQ4_XS,
}

impl FileType {
    /// The low-bit mixes whose first rules branch is their own in `llama_tensor_get_type`
    /// (attention-v, ffn_down and attn_output handled together).
    pub(crate) fn is_very_low_bit(self) -> bool {
        use FileType::*;
        matches!(self, IQ2_XXS | IQ2_XS | IQ1_S | IQ2_S | IQ2_M | IQ1_M)
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
            .iter()
            .copied()
            .find(|t| t.name() == alias)
            .ok_or_else(|| {
                let names: Vec<_> = FileType::ALL.iter().map(|t| t.name()).collect();
                format!("unknown type `{s}` (one of: {})", names.join(", "))
            })
    }
}

/// `tensor_requires_imatrix`: the tensor types `llama-quantize` refuses to write without an
/// importance matrix (every tensor but the token embeddings and the output), in `ftype`.
pub fn requires_imatrix(name: &str, ty: GgmlType, ftype: FileType) -> bool {
    use GgmlType::*;
    if matches!(
        name,
        "token_embd.weight" | "per_layer_token_embd.weight" | "output.weight"
    ) {
        return false;
    }
    match ty {
        IQ3_XXS | IQ2_XXS | IQ2_XS | IQ2_S | IQ1_M | IQ1_S => true,
        Q2_K => ftype == FileType::Q2_K_S,
        _ => false,
    }
}
