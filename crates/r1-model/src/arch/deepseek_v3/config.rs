//! Hyper-parameters of DeepSeek-V2/V3/R1, read from an HF `config.json` with the real
//! checkpoints' field names (`rope_scaling`, `scoring_func`, `topk_method`, ...).

use crate::config::{ModelConfig, RopeStyle};
use crate::hf::{HfConfig, HfError};
use crate::kv_cache::KvLayout;
use crate::rope_yarn::{self, YarnParams};

/// How router scores are made from the gate logits.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ScoringFunc {
    Sigmoid,
    Softmax,
}

/// How experts are selected from the scores.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TopkMethod {
    /// Plain top-k (DeepSeek-V2-Lite `greedy`).
    Greedy,
    /// V2: keep the `topk_group` groups with the largest maximum score, then top-k.
    GroupLimitedGreedy,
    /// V3: scores + `e_score_correction_bias`; group score = sum of its top-2; then top-k.
    NoauxTc,
}

#[derive(Clone, Debug)]
pub struct DeepSeekConfig {
    /// `DeepseekV3ForCausalLM` or `DeepseekV2ForCausalLM`.
    pub v3: bool,
    pub vocab_size: usize,
    pub hidden: usize,
    pub intermediate_size: usize,
    pub n_layers: usize,
    pub n_heads: usize,
    pub q_lora_rank: Option<usize>,
    pub kv_lora_rank: usize,
    pub qk_nope_head_dim: usize,
    pub qk_rope_head_dim: usize,
    pub v_head_dim: usize,
    pub n_routed_experts: usize,
    pub n_shared_experts: usize,
    pub moe_intermediate_size: usize,
    pub num_experts_per_tok: usize,
    pub n_group: usize,
    pub topk_group: usize,
    pub routed_scaling_factor: f32,
    pub norm_topk_prob: bool,
    pub scoring_func: ScoringFunc,
    pub topk_method: TopkMethod,
    pub first_k_dense_replace: usize,
    pub moe_layer_freq: usize,
    pub rms_eps: f32,
    pub rope_theta: f64,
    pub yarn: Option<YarnParams>,
    pub max_position_embeddings: usize,
    pub num_nextn_predict_layers: usize,
    pub tie_word_embeddings: bool,
}

impl DeepSeekConfig {
    pub fn from_hf(c: &HfConfig) -> Result<Self, HfError> {
        let arch = c.architecture()?;
        let v3 = match arch {
            "DeepseekV3ForCausalLM" => true,
            "DeepseekV2ForCausalLM" => false,
            other => return Err(c.err("architectures", format!("`{other}` is not DeepSeek V2/V3"))),
        };
        let n_heads = c.usize("num_attention_heads")?;
        let n_routed_experts = c.usize_or("n_routed_experts", 0)?;
        let scoring_func =
            match c
                .opt_str("scoring_func")?
                .unwrap_or(if v3 { "sigmoid" } else { "softmax" })
            {
                "sigmoid" => ScoringFunc::Sigmoid,
                "softmax" => ScoringFunc::Softmax,
                other => return Err(c.err("scoring_func", format!("`{other}` is not supported"))),
            };
        let topk_method =
            match c
                .opt_str("topk_method")?
                .unwrap_or(if v3 { "noaux_tc" } else { "greedy" })
            {
                "greedy" | "gready" => TopkMethod::Greedy,
                "group_limited_greedy" => TopkMethod::GroupLimitedGreedy,
                "noaux_tc" => TopkMethod::NoauxTc,
                other => return Err(c.err("topk_method", format!("`{other}` is not supported"))),
            };
        let yarn = match c.object("rope_scaling")? {
            None => None,
            Some(rs) => {
                let ty = match rs.opt_str("type")? {
                    Some(t) => t.to_string(),
                    None => rs.opt_str("rope_type")?.unwrap_or("").to_string(),
                };
                if ty != "yarn" {
                    return Err(rs.err(
                        "type",
                        format!("rope scaling `{ty}` is not supported (yarn only)"),
                    ));
                }
                Some(YarnParams {
                    factor: rs
                        .opt_f64("factor")?
                        .ok_or_else(|| rs.err("factor", "missing"))?,
                    original_max_position_embeddings: rs
                        .usize("original_max_position_embeddings")?,
                    beta_fast: rs.f64_or("beta_fast", 32.0)?,
                    beta_slow: rs.f64_or("beta_slow", 1.0)?,
                    mscale: rs.f64_or("mscale", 1.0)?,
                    mscale_all_dim: rs.f64_or("mscale_all_dim", 0.0)?,
                })
            }
        };
        let cfg = DeepSeekConfig {
            v3,
            vocab_size: c.usize("vocab_size")?,
            hidden: c.usize("hidden_size")?,
            intermediate_size: c.usize("intermediate_size")?,
            n_layers: c.usize("num_hidden_layers")?,
            n_heads,
            q_lora_rank: c.opt_usize("q_lora_rank")?,
            kv_lora_rank: c.usize("kv_lora_rank")?,
            qk_nope_head_dim: c.usize("qk_nope_head_dim")?,
            qk_rope_head_dim: c.usize("qk_rope_head_dim")?,
            v_head_dim: c.usize("v_head_dim")?,
            n_routed_experts,
            n_shared_experts: c.usize_or("n_shared_experts", 0)?,
            moe_intermediate_size: if n_routed_experts > 0 {
                c.usize("moe_intermediate_size")?
            } else {
                0
            },
            num_experts_per_tok: if n_routed_experts > 0 {
                c.usize("num_experts_per_tok")?
            } else {
                0
            },
            n_group: c.usize_or("n_group", 1)?,
            topk_group: c.usize_or("topk_group", 1)?,
            routed_scaling_factor: c.f64_or("routed_scaling_factor", 1.0)? as f32,
            norm_topk_prob: c.bool_or("norm_topk_prob", false)?,
            scoring_func,
            topk_method,
            first_k_dense_replace: c.usize_or("first_k_dense_replace", 0)?,
            moe_layer_freq: c.usize_or("moe_layer_freq", 1)?,
            rms_eps: c.f64_or("rms_norm_eps", 1e-6)? as f32,
            rope_theta: c.f64_or("rope_theta", 10000.0)?,
            yarn,
            max_position_embeddings: c.usize("max_position_embeddings")?,
            num_nextn_predict_layers: c.usize_or("num_nextn_predict_layers", 0)?,
            tie_word_embeddings: c.bool_or("tie_word_embeddings", false)?,
        };
        cfg.validate(c)?;
        Ok(cfg)
    }

    fn validate(&self, c: &HfConfig) -> Result<(), HfError> {
        self.check().map_err(|(field, msg)| c.err(field, msg))
    }

    /// Consistency of the values: `(HF field, problem)` for the first one that is wrong.
    pub fn check(&self) -> Result<(), (&'static str, String)> {
        let pos = |field: &'static str, v: usize| {
            if v == 0 {
                Err((field, "must be positive".to_string()))
            } else {
                Ok(())
            }
        };
        pos("hidden_size", self.hidden)?;
        pos("num_attention_heads", self.n_heads)?;
        pos("num_hidden_layers", self.n_layers)?;
        pos("kv_lora_rank", self.kv_lora_rank)?;
        pos("qk_nope_head_dim", self.qk_nope_head_dim)?;
        pos("v_head_dim", self.v_head_dim)?;
        pos("vocab_size", self.vocab_size)?;
        pos("moe_layer_freq", self.moe_layer_freq)?;
        if (0..self.n_layers).any(|l| !self.is_moe_layer(l)) {
            pos("intermediate_size", self.intermediate_size)?;
        }
        if !self.qk_rope_head_dim.is_multiple_of(2) {
            return Err(("qk_rope_head_dim", "must be even".into()));
        }
        if let Some(0) = self.q_lora_rank {
            return Err(("q_lora_rank", "must be positive or null".into()));
        }
        if self.n_routed_experts > 0 {
            pos("moe_intermediate_size", self.moe_intermediate_size)?;
            if self.n_group == 0 || !self.n_routed_experts.is_multiple_of(self.n_group) {
                return Err((
                    "n_group",
                    format!("must divide n_routed_experts ({})", self.n_routed_experts),
                ));
            }
            if self.topk_group == 0 || self.topk_group > self.n_group {
                return Err(("topk_group", format!("must be in 1..={}", self.n_group)));
            }
            let per_group = self.n_routed_experts / self.n_group;
            if self.num_experts_per_tok == 0
                || self.num_experts_per_tok > self.topk_group * per_group
            {
                return Err((
                    "num_experts_per_tok",
                    format!(
                        "must be in 1..={} (topk_group × experts per group)",
                        self.topk_group * per_group
                    ),
                ));
            }
            if self.topk_method == TopkMethod::NoauxTc && per_group < 2 {
                return Err((
                    "n_group",
                    "noaux_tc needs at least 2 experts per group".into(),
                ));
            }
        }
        Ok(())
    }

    /// Whether layer `l` has the routed MoE (else the dense MLP).
    pub fn is_moe_layer(&self, l: usize) -> bool {
        self.n_routed_experts > 0
            && l >= self.first_k_dense_replace
            && l.is_multiple_of(self.moe_layer_freq)
    }

    pub fn q_head_dim(&self) -> usize {
        self.qk_nope_head_dim + self.qk_rope_head_dim
    }

    /// Per token per layer: the latent `c_kv` and the shared rope key; nothing per head.
    pub fn kv_layout(&self) -> KvLayout {
        KvLayout {
            n_layers: self.n_layers,
            k_width: self.kv_lora_rank + self.qk_rope_head_dim,
            v_width: 0,
        }
    }

    /// The cache widths a per-head K/V layout would need (for comparison).
    pub fn per_head_kv_layout(&self) -> KvLayout {
        KvLayout {
            n_layers: self.n_layers,
            k_width: self.n_heads * self.q_head_dim(),
            v_width: self.n_heads * self.v_head_dim,
        }
    }

    pub fn softmax_scale(&self) -> f32 {
        rope_yarn::softmax_scale(self.q_head_dim(), self.yarn.as_ref()) as f32
    }

    pub fn model_config(&self, name: &str) -> ModelConfig {
        ModelConfig {
            arch: if self.v3 {
                "deepseek_v3"
            } else {
                "deepseek_v2"
            }
            .into(),
            name: name.to_string(),
            n_layers: self.n_layers,
            hidden: self.hidden,
            ffn_hidden: self.intermediate_size,
            n_heads: self.n_heads,
            n_kv_heads: self.n_heads,
            head_dim: self.q_head_dim(),
            vocab_size: self.vocab_size,
            context_length: self.max_position_embeddings,
            rms_eps: self.rms_eps,
            rope_base: self.rope_theta as f32,
            rope_dims: self.qk_rope_head_dim,
            rope_style: RopeStyle::Adjacent,
            rope_linear_scale: 1.0,
            qkv_bias: false,
        }
    }
}
