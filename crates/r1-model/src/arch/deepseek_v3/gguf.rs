//! GGUF `deepseek2` files (llama.cpp's name for DeepSeek V2/V3/R1), with llama.cpp's tensor
//! names and metadata keys as `convert_hf_to_gguf.py` (`DeepseekV2Model`) writes them:
//!
//! * MLA: `blk.N.attn_q_a`/`attn_q_a_norm`/`attn_q_b` (or `attn_q`), `attn_kv_a_mqa`,
//!   `attn_kv_a_norm`, `attn_output`; the absorbed form `attn_k_b` (ggml dims
//!   `[nope, kv_lora_rank, n_head]`, i.e. `W_UKᵀ` per head) + `attn_v_b` (`[kv_lora_rank, v,
//!   n_head]`) of newer conversions, or the single `attn_kv_b` of older ones;
//! * MoE: `ffn_gate_inp` (router), `exp_probs_b.bias` (the correction bias), stacked experts
//!   `ffn_{gate,up,down}_exps` (ggml dims `[in, out, n_expert]`), shared experts
//!   `ffn_{gate,up,down}_shexp`; dense leading layers `ffn_{gate,up,down}`;
//! * keys `deepseek2.{leading_dense_block_count, attention.q_lora_rank,
//!   attention.kv_lora_rank, attention.key_length_mla, attention.value_length_mla,
//!   expert_count, expert_used_count, expert_shared_count, expert_feed_forward_length,
//!   expert_weights_scale, expert_weights_norm, expert_gating_func (1 softmax, 2 sigmoid),
//!   expert_group_count, expert_group_used_count, rope.scaling.*, nextn_predict_layers}`;
//!   `rope.scaling.yarn_log_multiplier` holds `0.1 · mscale_all_dim` (llama.cpp divides it
//!   by 0.1 again), and llama.cpp assumes `mscale = mscale_all_dim`.
//!
//! Rope pairs are adjacent (llama.cpp's NORM rope type for deepseek2), as in the HF weights,
//! so no rows are permuted. Names and key semantics were read from llama.cpp's loader and
//! converter sources; they were not checked against a GGUF produced by llama.cpp itself.

use std::sync::Arc;

use super::config::{DeepSeekConfig, ScoringFunc, TopkMethod};
use super::mla::{self, MlaWeights, QProj};
use super::moe::{Mlp, Moe};
use super::{DeepSeekV3, Ffn, Layer};
use crate::arch::ModelError;
use crate::gguf::{GgufFile, TensorInfo};
use crate::quant::GgmlType;
use crate::rope_yarn::YarnParams;
use crate::weights::{vector_from_gguf, QMatrix};

fn bad(file: &GgufFile, msg: String) -> ModelError {
    ModelError::Unsupported(format!("{}: {msg}", file.path().display()))
}

/// The DeepSeek hyper-parameters of a `deepseek2` GGUF.
pub fn config_from_gguf(f: &GgufFile) -> Result<DeepSeekConfig, ModelError> {
    let k = |s: &str| format!("deepseek2.{s}");
    let req = |s: &str| f.get_u64(&k(s)).map(|v| v as usize);
    let opt = |s: &str| f.opt_u64(&k(s)).map(|v| v.map(|x| x as usize));
    let block_count = req("block_count")?;
    let nextn = opt("nextn_predict_layers")?.unwrap_or(0);
    let rope = req("rope.dimension_count")?;
    let qk_head = match opt("attention.key_length_mla")? {
        Some(v) => v,
        None => req("attention.key_length")?,
    };
    let v_head = match opt("attention.value_length_mla")? {
        Some(v) => v,
        None => req("attention.value_length")?,
    };
    if qk_head <= rope || nextn >= block_count {
        return Err(bad(
            f,
            format!("inconsistent key length {qk_head} / rope dims {rope} / layers"),
        ));
    }
    let gating = opt("expert_gating_func")?.unwrap_or(1);
    let n_group = opt("expert_group_count")?.unwrap_or(1).max(1);
    let has_bias = f
        .tensors()
        .iter()
        .any(|t| t.name.ends_with("exp_probs_b.bias"));
    let topk_method = if has_bias {
        TopkMethod::NoauxTc
    } else if n_group > 1 {
        TopkMethod::GroupLimitedGreedy
    } else {
        TopkMethod::Greedy
    };
    let yarn = match f.opt_str(&k("rope.scaling.type"))? {
        Some("yarn") => {
            let mscale_all = f
                .opt_f64(&k("rope.scaling.yarn_log_multiplier"))?
                .unwrap_or(0.0)
                / 0.1;
            Some(YarnParams {
                factor: f.get_f64(&k("rope.scaling.factor"))?,
                original_max_position_embeddings: req("rope.scaling.original_context_length")?,
                beta_fast: f
                    .opt_f64(&k("rope.scaling.yarn_beta_fast"))?
                    .unwrap_or(32.0),
                beta_slow: f.opt_f64(&k("rope.scaling.yarn_beta_slow"))?.unwrap_or(1.0),
                mscale: mscale_all,
                mscale_all_dim: mscale_all,
            })
        }
        None | Some("none") => None,
        Some(other) => return Err(bad(f, format!("rope scaling `{other}` is not supported"))),
    };
    let n_routed = opt("expert_count")?.unwrap_or(0);
    let vocab = match opt("vocab_size")? {
        Some(v) => v,
        None => f.require_tensor("token_embd.weight")?.n_rows(),
    };
    let c = DeepSeekConfig {
        v3: gating == 2,
        vocab_size: vocab,
        hidden: req("embedding_length")?,
        intermediate_size: req("feed_forward_length")?,
        n_layers: block_count - nextn,
        n_heads: req("attention.head_count")?,
        q_lora_rank: if f.tensor("blk.0.attn_q_a.weight").is_some() {
            opt("attention.q_lora_rank")?
        } else {
            None
        },
        kv_lora_rank: req("attention.kv_lora_rank")?,
        qk_nope_head_dim: qk_head - rope,
        qk_rope_head_dim: rope,
        v_head_dim: v_head,
        n_routed_experts: n_routed,
        n_shared_experts: opt("expert_shared_count")?.unwrap_or(0),
        moe_intermediate_size: if n_routed > 0 {
            req("expert_feed_forward_length")?
        } else {
            0
        },
        num_experts_per_tok: if n_routed > 0 {
            req("expert_used_count")?
        } else {
            0
        },
        n_group,
        topk_group: opt("expert_group_used_count")?
            .unwrap_or(1)
            .clamp(1, n_group),
        routed_scaling_factor: f.opt_f64(&k("expert_weights_scale"))?.unwrap_or(1.0) as f32,
        norm_topk_prob: f.opt_bool(&k("expert_weights_norm"))?.unwrap_or(false),
        scoring_func: if gating == 2 {
            ScoringFunc::Sigmoid
        } else {
            ScoringFunc::Softmax
        },
        topk_method,
        first_k_dense_replace: opt("leading_dense_block_count")?.unwrap_or(0),
        moe_layer_freq: 1,
        rms_eps: f
            .opt_f64(&k("attention.layer_norm_rms_epsilon"))?
            .unwrap_or(1e-6) as f32,
        rope_theta: f.opt_f64(&k("rope.freq_base"))?.unwrap_or(10000.0),
        yarn,
        max_position_embeddings: req("context_length")?,
        num_nextn_predict_layers: nextn,
        tie_word_embeddings: f.tensor("output.weight").is_none(),
    };
    c.check().map_err(|(field, msg)| {
        bad(
            f,
            format!("deepseek2 metadata inconsistent: {field} (HF name) {msg}"),
        )
    })?;
    Ok(c)
}

/// Rows `r0..r0+rows` of a tensor (any dims) as a `[rows, row_len]` matrix.
/// Whether a deepseek2 tensor may be interleaved for the x16 kernels: the matrices only
/// multiplied as a whole or by whole experts (the per-head `attn_k_b`/`attn_v_b` slices and
/// the router stay as they are).
pub fn is_interleavable(name: &str) -> bool {
    const PER_LAYER: [&str; 14] = [
        "attn_q.weight",
        "attn_q_a.weight",
        "attn_q_b.weight",
        "attn_kv_a_mqa.weight",
        "attn_output.weight",
        "ffn_gate.weight",
        "ffn_up.weight",
        "ffn_down.weight",
        "ffn_gate_exps.weight",
        "ffn_up_exps.weight",
        "ffn_down_exps.weight",
        "ffn_gate_shexp.weight",
        "ffn_up_shexp.weight",
        "ffn_down_shexp.weight",
    ];
    super::super::is_global_or_layer_tensor(name, &PER_LAYER)
}

/// Rows `r0..r0 + rows` of a tensor, borrowed from the file (no copy: a file larger than
/// half the RAM must still fit once).
fn rows_of(
    f: &Arc<GgufFile>,
    info: &TensorInfo,
    r0: usize,
    rows: usize,
) -> Result<QMatrix, ModelError> {
    QMatrix::from_gguf_rows(f, info, r0, rows).map_err(|e| bad(f, e))
}

/// A tensor whose ggml dims must be `want` (innermost first).
fn tensor<'a>(f: &'a GgufFile, name: &str, want: &[usize]) -> Result<&'a TensorInfo, ModelError> {
    let t = f.require_tensor(name)?;
    let dims: Vec<usize> = t.dims.iter().map(|&d| d as usize).collect();
    if dims != want {
        return Err(bad(
            f,
            format!("tensor `{name}` has dims {dims:?}, expected {want:?}"),
        ));
    }
    Ok(t)
}

impl DeepSeekV3 {
    /// Build the model from a `deepseek2` GGUF.
    pub fn from_gguf(file: &Arc<GgufFile>, threads: usize) -> Result<Self, ModelError> {
        let f = file;
        let c = config_from_gguf(f)?;
        let (d, nh) = (c.hidden, c.n_heads);
        let (r, dn, dr, dv) = (
            c.kv_lora_rank,
            c.qk_nope_head_dim,
            c.qk_rope_head_dim,
            c.v_head_dim,
        );
        let m = |name: &str, rows: usize, cols: usize| -> Result<QMatrix, ModelError> {
            let t = tensor(f, name, &[cols, rows])?;
            rows_of(f, t, 0, rows)
        };
        let v = |name: &str, len: usize| -> Result<Vec<f32>, ModelError> {
            tensor(f, name, &[len])?;
            Ok(vector_from_gguf(f, name)?)
        };
        let embed = m("token_embd.weight", c.vocab_size, d)?;
        let mut layers = Vec::with_capacity(c.n_layers);
        for l in 0..c.n_layers {
            let p = |s: &str| format!("blk.{l}.{s}");
            let q = match c.q_lora_rank {
                Some(qr) => QProj::LowRank {
                    q_a: m(&p("attn_q_a.weight"), qr, d)?,
                    norm: v(&p("attn_q_a_norm.weight"), qr)?,
                    q_b: m(&p("attn_q_b.weight"), nh * (dn + dr), qr)?,
                },
                None => QProj::Full(m(&p("attn_q.weight"), nh * (dn + dr), d)?),
            };
            let (k_b, v_b) = if f.tensor(&p("attn_k_b.weight")).is_some() {
                let kt = tensor(f, &p("attn_k_b.weight"), &[dn, r, nh])?;
                let vt = tensor(f, &p("attn_v_b.weight"), &[r, dv, nh])?;
                let k_b = (0..nh)
                    .map(|h| rows_of(f, kt, h * r, r))
                    .collect::<Result<Vec<_>, _>>()?;
                let v_b = (0..nh)
                    .map(|h| rows_of(f, vt, h * dv, dv))
                    .collect::<Result<Vec<_>, _>>()?;
                (k_b, v_b)
            } else {
                let kv_b = m(&p("attn_kv_b.weight"), nh * (dn + dv), r)?;
                let mut vals = vec![0.0f32; kv_b.rows * r];
                for (i, row) in vals.chunks_exact_mut(r).enumerate() {
                    kv_b.dequantize_row(i, row);
                }
                let like = match kv_b.ty {
                    GgmlType::F16 | GgmlType::BF16 => kv_b.ty,
                    _ => GgmlType::F32,
                };
                mla::split_kv_b(&c, &vals, like)
            };
            let attn = MlaWeights {
                q,
                kv_a: m(&p("attn_kv_a_mqa.weight"), r + dr, d)?,
                kv_a_norm: v(&p("attn_kv_a_norm.weight"), r)?,
                k_b,
                v_b,
                o: m(&p("attn_output.weight"), d, nh * dv)?,
            };
            let ffn = if c.is_moe_layer(l) {
                let (ne, ff) = (c.n_routed_experts, c.moe_intermediate_size);
                let gate = tensor(f, &p("ffn_gate_exps.weight"), &[d, ff, ne])?;
                let up = tensor(f, &p("ffn_up_exps.weight"), &[d, ff, ne])?;
                let down = tensor(f, &p("ffn_down_exps.weight"), &[ff, d, ne])?;
                let experts = (0..ne)
                    .map(|e| {
                        Ok(Mlp {
                            gate: rows_of(f, gate, e * ff, ff)?,
                            up: rows_of(f, up, e * ff, ff)?,
                            down: rows_of(f, down, e * d, d)?,
                        })
                    })
                    .collect::<Result<Vec<_>, ModelError>>()?;
                let shared = if c.n_shared_experts > 0 {
                    let sf = ff * c.n_shared_experts;
                    Some(Mlp {
                        gate: m(&p("ffn_gate_shexp.weight"), sf, d)?,
                        up: m(&p("ffn_up_shexp.weight"), sf, d)?,
                        down: m(&p("ffn_down_shexp.weight"), d, sf)?,
                    })
                } else {
                    None
                };
                let bias = match c.topk_method {
                    TopkMethod::NoauxTc => Some(v(&p("exp_probs_b.bias"), ne)?),
                    _ => None,
                };
                Ffn::Moe(Moe {
                    router: m(&p("ffn_gate_inp.weight"), ne, d)?,
                    bias,
                    experts,
                    shared,
                })
            } else {
                let ff = c.intermediate_size;
                Ffn::Dense(Mlp {
                    gate: m(&p("ffn_gate.weight"), ff, d)?,
                    up: m(&p("ffn_up.weight"), ff, d)?,
                    down: m(&p("ffn_down.weight"), d, ff)?,
                })
            };
            layers.push(Layer {
                in_norm: v(&p("attn_norm.weight"), d)?,
                attn,
                post_norm: v(&p("ffn_norm.weight"), d)?,
                ffn,
            });
        }
        let lm_head = if c.tie_word_embeddings {
            embed.clone()
        } else {
            m("output.weight", c.vocab_size, d)?
        };
        let mtp = f
            .tensors()
            .iter()
            .filter(|t| {
                t.name
                    .strip_prefix("blk.")
                    .and_then(|s| s.split('.').next())
                    .and_then(|i| i.parse::<usize>().ok())
                    .is_some_and(|i| i >= c.n_layers)
            })
            .count();
        let n_params = f.tensors().iter().map(|t| t.n_elements()).sum::<u64>();
        let name = f
            .opt_str("general.name")?
            .unwrap_or("deepseek2")
            .to_string();
        let norm = v("output_norm.weight", d)?;
        Ok(DeepSeekV3::assemble(
            c, &name, threads, embed, layers, norm, lm_head, n_params, mtp,
        ))
    }
}
