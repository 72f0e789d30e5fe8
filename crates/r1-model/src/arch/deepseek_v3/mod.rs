//! DeepSeek-V3 / R1 (and V2): Multi-head Latent Attention with a latent KV cache
//! ([`mla`]) and the sigmoid-routed MoE with shared experts ([`moe`]), YaRN rope
//! ([`crate::rope_yarn`]). Computation in f32 whatever the weight dtype (see [`linear`]),
//! following the original `modeling_deepseek.py`; the fixture README's "Computation" section
//! is the spec it is tested against.

pub mod config;
mod experts;
pub mod gguf;
mod linear;
pub(crate) mod mla;
mod mla_accumulate;
mod mla_attend;
/// MLA attention over the latent cache, public for `benches/mla_decode.rs` only.
#[doc(hidden)]
pub use mla_attend::{attend as mla_attend_for_bench, Dims as MlaDims};
mod mla_scores;
mod mla_softmax;
pub(crate) mod moe;

use super::{Logits, Model, ModelError};
use crate::batch::Batch;
use crate::config::ModelConfig;
use crate::hf::{HfDir, HfError, WeightDtype};
use crate::kv_cache::{KvCache, KvDtype, KvLayout};
use crate::ops;
use crate::pool::ThreadPool;
use crate::quant::GgmlType;
use crate::rope_yarn;
use crate::weights::QMatrix;
pub use config::DeepSeekConfig;
use mla::{MlaWeights, QProj};
use moe::{Mlp, Moe};

/// Intermediate tensors of one forward pass, named as the fixtures' `debug_prompt0`
/// (`embed`, `layerN.q_a_layernorm_out`, `layerN.kv_a_layernorm_out`, `layerN.attn_out`,
/// `layerN.router_logits`, `layerN.mlp_out`, `layerN.out`, `final_norm_out`), each
/// `[T, cols]` over all the batch's tokens, and the routing of every MoE layer.
/// One token's experts and weights.
pub type Routes = Vec<(usize, f32)>;

#[derive(Default, Debug)]
pub struct Trace {
    pub tensors: Vec<(String, usize, Vec<f32>)>,
    /// `(layer, per token: (expert, weight) in ascending expert id)`.
    pub routing: Vec<(usize, Vec<Routes>)>,
    /// Input: `(layer, per token: experts)` to use instead of the router's own selection
    /// (weights still come from this model's scores). For comparing models whose routing
    /// flips at near-ties, e.g. an FP8 checkpoint against its f32 original.
    pub force_experts: Vec<(usize, Vec<Vec<usize>>)>,
}

impl Trace {
    pub(crate) fn put(&mut self, name: String, cols: usize, v: &[f32]) {
        self.tensors.push((name, cols, v.to_vec()));
    }
    /// `(cols, values)` of a named tensor.
    pub fn get(&self, name: &str) -> Option<(usize, &[f32])> {
        self.tensors
            .iter()
            .find(|(n, _, _)| n == name)
            .map(|(_, c, v)| (*c, v.as_slice()))
    }
}

enum Ffn {
    Dense(Mlp),
    Moe(Moe),
}

struct Layer {
    in_norm: Vec<f32>,
    attn: MlaWeights,
    post_norm: Vec<f32>,
    ffn: Ffn,
}

pub struct DeepSeekV3 {
    cfg: ModelConfig,
    ds: DeepSeekConfig,
    pool: ThreadPool,
    embed: QMatrix,
    layers: Vec<Layer>,
    norm: Vec<f32>,
    lm_head: QMatrix,
    inv_freq: Vec<f32>,
    cos_sin_scale: f32,
    n_params: u64,
    kv_dtype: KvDtype,
    mtp_tensors: usize,
}

/// Encode f32 values as an F32/BF16/F16 matrix (other types: F32).
pub(crate) fn encode(ty: GgmlType, rows: usize, cols: usize, v: &[f32]) -> QMatrix {
    let bytes: Vec<u8> = match ty {
        GgmlType::BF16 => v
            .iter()
            .flat_map(|&x| half::bf16::from_f32(x).to_le_bytes())
            .collect(),
        GgmlType::F16 => v
            .iter()
            .flat_map(|&x| half::f16::from_f32(x).to_le_bytes())
            .collect(),
        _ => return QMatrix::from_f32(rows, cols, v),
    };
    QMatrix::from_bytes(ty, rows, cols, bytes).expect("float rows have no block constraint")
}

impl DeepSeekV3 {
    /// Build the model from an opened HF directory (`DeepseekV3ForCausalLM` /
    /// `DeepseekV2ForCausalLM`). MTP layers (index ≥ `num_hidden_layers`) are skipped.
    pub fn from_hf(dir: &HfDir, threads: usize, dtype: WeightDtype) -> Result<Self, HfError> {
        let c = DeepSeekConfig::from_hf(&dir.config)?;
        let (d, nh) = (c.hidden, c.n_heads);
        let m = |name: &str, rows: usize, cols: usize| dir.matrix(name, rows, cols, dtype);
        let v = |name: &str, len: usize| dir.vector(name, len);
        let embed = m("model.embed_tokens.weight", c.vocab_size, d)?;
        let mut layers = Vec::with_capacity(c.n_layers);
        for l in 0..c.n_layers {
            let p = |s: &str| format!("model.layers.{l}.{s}");
            let q = match c.q_lora_rank {
                Some(qr) => QProj::LowRank {
                    q_a: m(&p("self_attn.q_a_proj.weight"), qr, d)?,
                    norm: v(&p("self_attn.q_a_layernorm.weight"), qr)?,
                    q_b: m(&p("self_attn.q_b_proj.weight"), nh * c.q_head_dim(), qr)?,
                },
                None => QProj::Full(m(&p("self_attn.q_proj.weight"), nh * c.q_head_dim(), d)?),
            };
            let kvb_name = p("self_attn.kv_b_proj.weight");
            let kv_b = m(
                &kvb_name,
                nh * (c.qk_nope_head_dim + c.v_head_dim),
                c.kv_lora_rank,
            )?;
            let mut kv_b_f32 = vec![0.0f32; kv_b.rows * kv_b.cols];
            for (r, row) in kv_b_f32.chunks_exact_mut(kv_b.cols).enumerate() {
                kv_b.dequantize_row(r, row);
            }
            let (k_b, v_b) = mla::split_kv_b(&c, &kv_b_f32, kv_b.ty);
            let attn = MlaWeights {
                q,
                kv_a: m(
                    &p("self_attn.kv_a_proj_with_mqa.weight"),
                    c.kv_lora_rank + c.qk_rope_head_dim,
                    d,
                )?,
                kv_a_norm: v(&p("self_attn.kv_a_layernorm.weight"), c.kv_lora_rank)?,
                k_b,
                v_b,
                o: m(&p("self_attn.o_proj.weight"), d, nh * c.v_head_dim)?,
            };
            let mlp = |prefix: &str, f: usize| -> Result<Mlp, HfError> {
                Ok(Mlp {
                    gate: m(&p(&format!("{prefix}.gate_proj.weight")), f, d)?,
                    up: m(&p(&format!("{prefix}.up_proj.weight")), f, d)?,
                    down: m(&p(&format!("{prefix}.down_proj.weight")), d, f)?,
                })
            };
            let ffn = if c.is_moe_layer(l) {
                let ne = c.n_routed_experts;
                let bias_name = p("mlp.gate.e_score_correction_bias");
                let bias = match c.topk_method {
                    config::TopkMethod::NoauxTc => Some(v(&bias_name, ne)?),
                    _ => None,
                };
                let experts = (0..ne)
                    .map(|e| mlp(&format!("mlp.experts.{e}"), c.moe_intermediate_size))
                    .collect::<Result<Vec<_>, _>>()?;
                let shared = if c.n_shared_experts > 0 {
                    Some(mlp(
                        "mlp.shared_experts",
                        c.moe_intermediate_size * c.n_shared_experts,
                    )?)
                } else {
                    None
                };
                Ffn::Moe(Moe {
                    router: m(&p("mlp.gate.weight"), ne, d)?,
                    bias,
                    experts,
                    shared,
                })
            } else {
                Ffn::Dense(mlp("mlp", c.intermediate_size)?)
            };
            layers.push(Layer {
                in_norm: v(&p("input_layernorm.weight"), d)?,
                attn,
                post_norm: v(&p("post_attention_layernorm.weight"), d)?,
                ffn,
            });
        }
        let lm_head = if dir.has("lm_head.weight") || !c.tie_word_embeddings {
            m("lm_head.weight", c.vocab_size, d)?
        } else {
            embed.clone()
        };
        let mut n_params = 0u64;
        let mut mtp = 0usize;
        for name in dir.names() {
            if is_mtp_tensor(name, c.n_layers) {
                mtp += 1;
            } else if !name.ends_with("_scale_inv") {
                n_params += dir.shape(name).map_or(0, |s| s.iter().product::<usize>()) as u64;
            }
        }
        let name = dir
            .dir()
            .file_name()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_else(|| "deepseek".into());
        let norm = v("model.norm.weight", d)?;
        Ok(Self::assemble(
            c, &name, threads, embed, layers, norm, lm_head, n_params, mtp,
        ))
    }

    #[allow(clippy::too_many_arguments)]
    fn assemble(
        c: DeepSeekConfig,
        name: &str,
        threads: usize,
        embed: QMatrix,
        layers: Vec<Layer>,
        norm: Vec<f32>,
        lm_head: QMatrix,
        n_params: u64,
        mtp: usize,
    ) -> Self {
        if mtp > 0 {
            tracing::info!(
                tensors = mtp,
                num_nextn_predict_layers = c.num_nextn_predict_layers,
                "skipping the multi-token-prediction (MTP) layer weights: speculative decoding is not implemented"
            );
        }
        DeepSeekV3 {
            cfg: c.model_config(name),
            pool: ThreadPool::new(threads),
            embed,
            layers,
            norm,
            lm_head,
            inv_freq: rope_yarn::inv_freq(c.qk_rope_head_dim, c.rope_theta, c.yarn.as_ref()),
            cos_sin_scale: rope_yarn::cos_sin_scale(c.yarn.as_ref()),
            n_params,
            kv_dtype: KvDtype::F32,
            mtp_tensors: mtp,
            ds: c,
        }
    }

    pub fn deepseek_config(&self) -> &DeepSeekConfig {
        &self.ds
    }

    /// How many multi-token-prediction tensors the checkpoint had (recognised, not loaded).
    pub fn skipped_mtp_tensors(&self) -> usize {
        self.mtp_tensors
    }

    fn check_batch(&self, batch: &Batch, kv: &KvCache) -> Result<(), ModelError> {
        let err = |m: String| Err(ModelError::Batch(m));
        if kv.layout() != self.kv_layout() {
            return err("KV cache layout does not match the model".into());
        }
        batch
            .validate(kv, self.ds.vocab_size)
            .map_err(ModelError::Batch)
    }

    /// [`Model::forward`], recording intermediate tensors and routing in `trace`.
    pub fn forward_traced(
        &self,
        batch: &Batch,
        kv: &mut KvCache,
        mut trace: Option<&mut Trace>,
    ) -> Result<Logits, ModelError> {
        self.check_batch(batch, kv)?;
        let c = &self.ds;
        let pool = &self.pool;
        let t = batch.tokens.len();
        let d = c.hidden;
        let mut x = vec![0.0f32; t * d];
        for (i, &tok) in batch.tokens.iter().enumerate() {
            self.embed
                .dequantize_row(tok as usize, &mut x[i * d..(i + 1) * d]);
        }
        if let Some(tr) = trace.as_deref_mut() {
            tr.put("embed".into(), d, &x);
        }
        let ropes: Vec<_> = batch
            .positions()
            .iter()
            .map(|&p| rope_yarn::rope_table(p, &self.inv_freq, self.cos_sin_scale))
            .collect();
        let mut h = vec![0.0f32; t * d];
        let mut o = vec![0.0f32; t * d];
        for (l, ly) in self.layers.iter().enumerate() {
            ops::rms_norm_rows(pool, &x, &ly.in_norm, c.rms_eps, &mut h, d);
            mla::forward(
                pool,
                c,
                &ly.attn,
                l,
                batch,
                kv,
                &ropes,
                &h,
                trace.as_deref_mut(),
                &mut o,
            );
            if let Some(tr) = trace.as_deref_mut() {
                tr.put(format!("layer{l}.attn_out"), d, &o);
            }
            ops::add_assign(&mut x, &o);
            ops::rms_norm_rows(pool, &x, &ly.post_norm, c.rms_eps, &mut h, d);
            match &ly.ffn {
                Ffn::Dense(mlp) => mlp.forward(pool, &h, t, &mut o),
                Ffn::Moe(m) => moe::forward(pool, c, m, l, &h, t, trace.as_deref_mut(), &mut o),
            }
            ops::add_assign(&mut x, &o);
            if let Some(tr) = trace.as_deref_mut() {
                tr.put(format!("layer{l}.mlp_out"), d, &o);
                tr.put(format!("layer{l}.out"), d, &x);
            }
        }
        if let Some(tr) = trace {
            ops::rms_norm_rows(pool, &x, &self.norm, c.rms_eps, &mut h, d);
            tr.put("final_norm_out".into(), d, &h);
        }
        let rows = batch.logit_rows.len();
        let mut hn = vec![0.0f32; rows * d];
        for (j, &r) in batch.logit_rows.iter().enumerate() {
            ops::rms_norm(
                &x[r * d..(r + 1) * d],
                &self.norm,
                c.rms_eps,
                &mut hn[j * d..(j + 1) * d],
            );
        }
        let mut logits = vec![0.0f32; rows * c.vocab_size];
        linear::linear(pool, &self.lm_head, &hn, rows, &mut logits);
        Ok(Logits {
            vocab: c.vocab_size,
            data: logits,
        })
    }
}

/// `model.layers.{i}.*` with `i ≥ num_hidden_layers`: the MTP module(s).
pub fn is_mtp_tensor(name: &str, n_layers: usize) -> bool {
    name.strip_prefix("model.layers.")
        .and_then(|r| r.split('.').next())
        .and_then(|i| i.parse::<usize>().ok())
        .is_some_and(|i| i >= n_layers)
}

impl Model for DeepSeekV3 {
    fn config(&self) -> &ModelConfig {
        &self.cfg
    }

    fn kv_layout(&self) -> KvLayout {
        self.ds.kv_layout()
    }

    fn kv_dtype(&self) -> KvDtype {
        self.kv_dtype
    }

    /// f32 by default (the latents stay exact: the float64 fidelity checks hold); f16 halves
    /// the cache, and the bytes attention reads per token at depth.
    fn set_kv_dtype(&mut self, dtype: KvDtype) -> Result<(), ModelError> {
        self.kv_dtype = dtype;
        Ok(())
    }

    fn forward(&self, batch: &Batch, kv: &mut KvCache) -> Result<Logits, ModelError> {
        self.forward_traced(batch, kv, None)
    }

    fn n_params(&self) -> u64 {
        self.n_params
    }
}
