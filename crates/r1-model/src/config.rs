//! Model hyper-parameters, read from GGUF metadata (`{arch}.*` keys) or HF `config.json`.

use crate::gguf::{GgufError, GgufFile};

/// How rope pairs dimensions: llama.cpp's NORM mode rotates adjacent pairs (x0,x1),(x2,x3)…
/// (GGUF llama q/k are stored permuted for this); NEOX rotates (x_i, x_{i+d/2}).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RopeStyle {
    Adjacent,
    Neox,
}

#[derive(Clone, Debug)]
pub struct ModelConfig {
    pub arch: String,
    pub name: String,
    pub n_layers: usize,
    pub hidden: usize,
    pub ffn_hidden: usize,
    pub n_heads: usize,
    pub n_kv_heads: usize,
    pub head_dim: usize,
    pub vocab_size: usize,
    pub context_length: usize,
    pub rms_eps: f32,
    pub rope_base: f32,
    /// Dimensions of each head that rope rotates (the first `rope_dims`).
    pub rope_dims: usize,
    pub rope_style: RopeStyle,
    /// Linear rope scaling factor (positions are divided by it); 1.0 = none.
    pub rope_linear_scale: f32,
    pub qkv_bias: bool,
}

impl ModelConfig {
    /// Read the hyper-parameters of a llama-family GGUF (`llama`, `qwen2`).
    pub fn from_gguf(f: &GgufFile) -> Result<Self, GgufError> {
        let arch = f.get_str("general.architecture")?.to_string();
        let k = |s: &str| format!("{arch}.{s}");
        let usize_of = |key: &str| f.get_u64(key).map(|v| v as usize);
        let hidden = usize_of(&k("embedding_length"))?;
        let n_heads = usize_of(&k("attention.head_count"))?;
        let n_kv_heads = f
            .opt_u64(&k("attention.head_count_kv"))?
            .map(|v| v as usize)
            .unwrap_or(n_heads);
        let bad = |key: String, msg: String| GgufError::Key {
            path: f.path().display().to_string(),
            key,
            msg,
        };
        if n_heads == 0 || hidden % n_heads != 0 {
            return Err(bad(
                k("attention.head_count"),
                format!("{n_heads} heads do not divide embedding_length {hidden}"),
            ));
        }
        if n_kv_heads == 0 || n_heads % n_kv_heads != 0 {
            return Err(bad(
                k("attention.head_count_kv"),
                format!("{n_kv_heads} KV heads do not divide {n_heads} heads"),
            ));
        }
        let head_dim = f
            .opt_u64(&k("attention.key_length"))?
            .map(|v| v as usize)
            .unwrap_or(hidden / n_heads);
        let vocab_size = match f.opt_u64(&k("vocab_size"))? {
            Some(v) => v as usize,
            None => f.require_tensor("token_embd.weight")?.n_rows(),
        };
        let rope_dims = f
            .opt_u64(&k("rope.dimension_count"))?
            .map(|v| v as usize)
            .unwrap_or(head_dim);
        if rope_dims > head_dim || rope_dims % 2 != 0 {
            return Err(bad(
                k("rope.dimension_count"),
                format!("{rope_dims} is odd or larger than the head size {head_dim}"),
            ));
        }
        let rope_style = match arch.as_str() {
            "llama" | "mistral" | "granite" => RopeStyle::Adjacent,
            _ => RopeStyle::Neox,
        };
        let rope_linear_scale = match f.opt_str(&k("rope.scaling.type"))? {
            Some("linear") => f.opt_f64(&k("rope.scaling.factor"))?.unwrap_or(1.0) as f32,
            _ => 1.0,
        };
        Ok(ModelConfig {
            name: f.opt_str("general.name")?.unwrap_or("unnamed").to_string(),
            n_layers: usize_of(&k("block_count"))?,
            hidden,
            ffn_hidden: usize_of(&k("feed_forward_length"))?,
            n_heads,
            n_kv_heads,
            head_dim,
            vocab_size,
            context_length: usize_of(&k("context_length"))?,
            rms_eps: f
                .opt_f64(&k("attention.layer_norm_rms_epsilon"))?
                .unwrap_or(1e-5) as f32,
            rope_base: f.opt_f64(&k("rope.freq_base"))?.unwrap_or(10000.0) as f32,
            rope_dims,
            rope_style,
            rope_linear_scale,
            qkv_bias: f.tensor("blk.0.attn_q.bias").is_some(),
            arch,
        })
    }

    pub fn q_dim(&self) -> usize {
        self.n_heads * self.head_dim
    }
    pub fn kv_dim(&self) -> usize {
        self.n_kv_heads * self.head_dim
    }
}
