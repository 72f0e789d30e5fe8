//! The GGUF that llama.cpp's `convert_hf_to_gguf.py` would make of an HF directory, as a
//! plan: metadata, and for each output tensor its name, ggml dims and where its rows come
//! from, read a slab at a time ([`LayoutTensor::for_each_slab`]). `r1serve quantize` and
//! quantization at load stream an HF checkpoint through it, so both write what llama.cpp
//! loads and neither holds more than one tensor's slab in f32.
//!
//! DeepSeek V2/V3/R1 become `deepseek2` as the converter writes it (checked against
//! `deepseek2-gguf/tiny-f32.gguf` in the fixtures): `kv_b_proj` split into per-head
//! `attn_k_b` (transposed) and `attn_v_b`, routed experts stacked into `ffn_*_exps`, MTP
//! layers left out. Llama/Qwen2 (the R1 distills) get the names and q/k row permutation of
//! `hf/llama.rs`. Tokenizer keys are not here (the tokenizer lives in r1-engine).

use super::{HfDir, HfError};
use crate::arch::deepseek_v3::config::{DeepSeekConfig, ScoringFunc};
use crate::gguf::GgufValue;
use crate::quant::GgmlType;
use safetensors::Dtype;

/// Where a layout tensor's rows come from.
#[derive(Clone, Debug)]
enum Src {
    /// The rows of these HF tensors one after another (one tensor, or stacked experts).
    Rows(Vec<String>),
    /// An HF tensor (matrix or bias vector) whose rows are reordered per head from
    /// rotate-half to adjacent pairs (llama q/k).
    Permuted { hf: String, n_head: usize },
    /// `attn_k_b`: for each head, the transpose of its `nope` rows of `kv_b_proj`.
    KB {
        hf: String,
        n_head: usize,
        nope: usize,
        v: usize,
    },
    /// `attn_v_b`: for each head, its `v` rows of `kv_b_proj`.
    VB {
        hf: String,
        n_head: usize,
        nope: usize,
        v: usize,
    },
    /// Values computed from the config (llama3 `rope_freqs`).
    Values(Vec<f32>),
}

/// One tensor of the GGUF to be written.
#[derive(Clone, Debug)]
pub struct LayoutTensor {
    pub name: String,
    /// ggml order: `dims[0]` is the row length.
    pub dims: Vec<u64>,
    /// The type the converter would give it at full precision: F32 for norms, biases and the
    /// router, the checkpoint's own float type for weights (F32 for FP8, dequantized).
    pub src_ty: GgmlType,
    src: Src,
}

/// The converted model: architecture, metadata (no tokenizer keys), tensors in order.
#[derive(Clone, Debug)]
pub struct GgufLayout {
    pub arch: String,
    pub metadata: Vec<(String, GgufValue)>,
    pub tensors: Vec<LayoutTensor>,
}

impl LayoutTensor {
    pub fn row_len(&self) -> usize {
        self.dims[0] as usize
    }
    pub fn n_rows(&self) -> usize {
        self.dims[1..].iter().product::<u64>() as usize
    }
    pub fn n_elements(&self) -> u64 {
        self.dims.iter().product()
    }

    /// The HF tensors it reads.
    pub fn sources(&self) -> Vec<&str> {
        match &self.src {
            Src::Rows(v) => v.iter().map(String::as_str).collect(),
            Src::Permuted { hf, .. } | Src::KB { hf, .. } | Src::VB { hf, .. } => vec![hf],
            Src::Values(_) => Vec::new(),
        }
    }

    /// Call `f(first_row, rows)` for every row in order, at most `max_rows` rows (each
    /// [`Self::row_len`] f32 values) at a time.
    pub fn for_each_slab<E: From<HfError>>(
        &self,
        dir: &HfDir,
        max_rows: usize,
        mut f: impl FnMut(usize, &[f32]) -> Result<(), E>,
    ) -> Result<(), E> {
        let cols = self.row_len();
        let max_rows = max_rows.max(1);
        let mut buf = Vec::new();
        let mut done = 0usize;
        match &self.src {
            Src::Rows(names) => {
                for name in names {
                    let (rows, c) = dir.matrix_shape(name)?;
                    if c != cols {
                        return Err(dir
                            .tensor_err(name, format!("rows of {c} values, expected {cols}"))
                            .into());
                    }
                    let mut r = 0;
                    while r < rows {
                        let n = max_rows.min(rows - r);
                        buf.resize(n * cols, 0.0);
                        dir.rows_f32(name, r, n, &mut buf)?;
                        dir.release_rows(name, r, n);
                        f(done, &buf)?;
                        done += n;
                        r += n;
                    }
                }
            }
            Src::Permuted { hf, n_head } => {
                let (r, c) = dir.matrix_shape(hf)?;
                let mut all = vec![0f32; r * c];
                dir.rows_f32(hf, 0, r, &mut all)?;
                // A bias is one row; permute its elements as the weight's rows.
                let (rows, rl) = if r == 1 { (c, 1) } else { (r, c) };
                let hd = rows / n_head;
                let mut out = vec![0f32; rows * rl];
                for h in 0..*n_head {
                    for i in 0..hd / 2 {
                        for j in 0..2 {
                            let new = h * hd + 2 * i + j;
                            let old = h * hd + j * hd / 2 + i;
                            out[new * rl..(new + 1) * rl]
                                .copy_from_slice(&all[old * rl..(old + 1) * rl]);
                        }
                    }
                }
                for (k, slab) in out.chunks(max_rows * cols).enumerate() {
                    f(k * max_rows, slab)?;
                }
            }
            Src::KB {
                hf,
                n_head,
                nope,
                v,
            } => {
                let r = cols_of(dir, hf)?;
                let mut head = vec![0f32; nope * r];
                let mut t = vec![0f32; r * nope];
                for h in 0..*n_head {
                    dir.rows_f32(hf, h * (nope + v), *nope, &mut head)?;
                    for i in 0..*nope {
                        for j in 0..r {
                            t[j * nope + i] = head[i * r + j];
                        }
                    }
                    f(h * r, &t)?;
                }
            }
            Src::VB {
                hf,
                n_head,
                nope,
                v,
            } => {
                let r = cols_of(dir, hf)?;
                buf.resize(v * r, 0.0);
                for h in 0..*n_head {
                    dir.rows_f32(hf, h * (nope + v) + nope, *v, &mut buf)?;
                    dir.release_rows(hf, h * (nope + v) + nope, *v);
                    f(h * v, &buf)?;
                }
            }
            Src::Values(vals) => f(0, vals)?,
        }
        Ok(())
    }

    /// Drop the pages of the HF tensors it read from the resident set.
    pub fn release(&self, dir: &HfDir) {
        for name in self.sources() {
            dir.release(name);
            dir.release(&format!("{name}_scale_inv"));
        }
    }
}

fn cols_of(dir: &HfDir, name: &str) -> Result<usize, HfError> {
    Ok(dir.matrix_shape(name)?.1)
}

/// The GGUF type an HF float tensor keeps at full precision.
fn float_ty(dir: &HfDir, name: &str) -> Result<GgmlType, HfError> {
    match dir.dtype(name) {
        Some(Dtype::BF16) => Ok(GgmlType::BF16),
        Some(Dtype::F16) => Ok(GgmlType::F16),
        Some(Dtype::F32) | Some(Dtype::F8_E4M3) => Ok(GgmlType::F32),
        Some(other) => Err(dir.tensor_err(name, format!("dtype {other:?} is not supported"))),
        None => Err(dir.tensor_err(name, "not in the checkpoint")),
    }
}

/// Collects tensors, checking each HF source's shape as it is added.
struct Builder<'a> {
    dir: &'a HfDir,
    tensors: Vec<LayoutTensor>,
}

impl Builder<'_> {
    fn check(&self, hf: &str, want: &[usize]) -> Result<(), HfError> {
        match self.dir.shape(hf) {
            None => Err(self.dir.tensor_err(hf, "not in the checkpoint")),
            Some(s) if s == want => Ok(()),
            Some(s) => Err(self
                .dir
                .tensor_err(hf, format!("shape {s:?}, expected {want:?}"))),
        }
    }
    /// A `[rows, cols]` weight.
    fn mat(&mut self, hf: &str, gg: &str, rows: usize, cols: usize) -> Result<(), HfError> {
        self.check(hf, &[rows, cols])?;
        let ty = float_ty(self.dir, hf)?;
        self.push(gg, vec![cols, rows], ty, Src::Rows(vec![hf.into()]));
        Ok(())
    }
    /// A 1-D tensor (norm weight, bias), or a matrix kept in F32 (the router).
    fn f32(&mut self, hf: &str, gg: &str, shape: &[usize]) -> Result<(), HfError> {
        self.check(hf, shape)?;
        let dims = shape.iter().rev().copied().collect();
        self.push(gg, dims, GgmlType::F32, Src::Rows(vec![hf.into()]));
        Ok(())
    }
    fn push(&mut self, gg: &str, dims: Vec<usize>, ty: GgmlType, src: Src) {
        self.tensors.push(LayoutTensor {
            name: gg.into(),
            dims: dims.into_iter().map(|d| d as u64).collect(),
            src_ty: ty,
            src,
        });
    }
}

/// The GGUF layout of an HF directory whose `architectures[0]` r1serve can run.
pub fn gguf_layout(dir: &HfDir) -> Result<GgufLayout, HfError> {
    match dir.config.architecture()? {
        "DeepseekV3ForCausalLM" | "DeepseekV2ForCausalLM" => deepseek2(dir),
        "Qwen2ForCausalLM" | "LlamaForCausalLM" | "MistralForCausalLM" => super::llama::layout(dir),
        other => Err(dir.config.err(
            "architectures",
            format!(
                "`{other}` is not supported (supported: DeepseekV3ForCausalLM, \
                 DeepseekV2ForCausalLM, Qwen2ForCausalLM, LlamaForCausalLM)"
            ),
        )),
    }
}

fn model_name(dir: &HfDir) -> String {
    dir.dir()
        .canonicalize()
        .unwrap_or_else(|_| dir.dir().to_path_buf())
        .file_name()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default()
}

fn deepseek2(dir: &HfDir) -> Result<GgufLayout, HfError> {
    let c = DeepSeekConfig::from_hf(&dir.config)?;
    let mut md: Vec<(String, GgufValue)> = Vec::new();
    let u = |v: usize| GgufValue::U32(v as u32);
    let mut set = |k: &str, v: GgufValue| {
        let key = if k.starts_with("general.") {
            k.to_string()
        } else {
            format!("deepseek2.{k}")
        };
        md.push((key, v));
    };
    set(
        "general.architecture",
        GgufValue::String("deepseek2".into()),
    );
    set("general.type", GgufValue::String("model".into()));
    set("general.name", GgufValue::String(model_name(dir)));
    set("block_count", u(c.n_layers));
    set("context_length", u(c.max_position_embeddings));
    set("embedding_length", u(c.hidden));
    set("feed_forward_length", u(c.intermediate_size));
    set("attention.head_count", u(c.n_heads));
    set("attention.head_count_kv", u(1));
    if let Some(y) = &c.yarn {
        set("rope.scaling.type", GgufValue::String("yarn".into()));
        set("rope.scaling.factor", GgufValue::F32(y.factor as f32));
        set(
            "rope.scaling.original_context_length",
            u(y.original_max_position_embeddings),
        );
        set(
            "rope.scaling.yarn_beta_fast",
            GgufValue::F32(y.beta_fast as f32),
        );
        set(
            "rope.scaling.yarn_beta_slow",
            GgufValue::F32(y.beta_slow as f32),
        );
    }
    set("rope.freq_base", GgufValue::F32(c.rope_theta as f32));
    set(
        "attention.layer_norm_rms_epsilon",
        GgufValue::F32(c.rms_eps),
    );
    if c.n_routed_experts > 0 {
        set("expert_count", u(c.n_routed_experts));
        set("expert_used_count", u(c.num_experts_per_tok));
        set("expert_group_count", u(c.n_group));
        set("expert_group_used_count", u(c.topk_group));
        let gating = match c.scoring_func {
            ScoringFunc::Sigmoid => 2,
            ScoringFunc::Softmax => 1,
        };
        set("expert_gating_func", u(gating));
    }
    let (r, dn, dr, dv) = (
        c.kv_lora_rank,
        c.qk_nope_head_dim,
        c.qk_rope_head_dim,
        c.v_head_dim,
    );
    set("attention.key_length", u(r + dr));
    set("attention.value_length", u(r));
    set("leading_dense_block_count", u(c.first_k_dense_replace));
    set("vocab_size", u(c.vocab_size));
    if let Some(qr) = c.q_lora_rank {
        set("attention.q_lora_rank", u(qr));
    }
    set("attention.kv_lora_rank", u(r));
    set("attention.key_length_mla", u(dn + dr));
    set("attention.value_length_mla", u(dv));
    if c.n_routed_experts > 0 {
        set("expert_feed_forward_length", u(c.moe_intermediate_size));
        set("expert_shared_count", u(c.n_shared_experts));
        set(
            "expert_weights_scale",
            GgufValue::F32(c.routed_scaling_factor),
        );
        set("expert_weights_norm", GgufValue::Bool(c.norm_topk_prob));
    }
    set("rope.dimension_count", u(dr));
    if let Some(y) = &c.yarn {
        set(
            "rope.scaling.yarn_log_multiplier",
            GgufValue::F32((0.1 * y.mscale_all_dim) as f32),
        );
    }

    let (d, nh) = (c.hidden, c.n_heads);
    let mut b = Builder {
        dir,
        tensors: Vec::new(),
    };
    b.mat(
        "model.embed_tokens.weight",
        "token_embd.weight",
        c.vocab_size,
        d,
    )?;
    if !c.tie_word_embeddings {
        b.mat("lm_head.weight", "output.weight", c.vocab_size, d)?;
    }
    b.f32("model.norm.weight", "output_norm.weight", &[d])?;
    for l in 0..c.n_layers {
        let p = |s: &str| format!("model.layers.{l}.{s}");
        let g = |s: &str| format!("blk.{l}.{s}");
        b.f32(&p("input_layernorm.weight"), &g("attn_norm.weight"), &[d])?;
        b.f32(
            &p("post_attention_layernorm.weight"),
            &g("ffn_norm.weight"),
            &[d],
        )?;
        match c.q_lora_rank {
            Some(qr) => {
                b.mat(
                    &p("self_attn.q_a_proj.weight"),
                    &g("attn_q_a.weight"),
                    qr,
                    d,
                )?;
                b.f32(
                    &p("self_attn.q_a_layernorm.weight"),
                    &g("attn_q_a_norm.weight"),
                    &[qr],
                )?;
                b.mat(
                    &p("self_attn.q_b_proj.weight"),
                    &g("attn_q_b.weight"),
                    nh * (dn + dr),
                    qr,
                )?;
            }
            None => b.mat(
                &p("self_attn.q_proj.weight"),
                &g("attn_q.weight"),
                nh * (dn + dr),
                d,
            )?,
        }
        b.mat(
            &p("self_attn.kv_a_proj_with_mqa.weight"),
            &g("attn_kv_a_mqa.weight"),
            r + dr,
            d,
        )?;
        b.f32(
            &p("self_attn.kv_a_layernorm.weight"),
            &g("attn_kv_a_norm.weight"),
            &[r],
        )?;
        let kvb = p("self_attn.kv_b_proj.weight");
        b.check(&kvb, &[nh * (dn + dv), r])?;
        let ty = float_ty(dir, &kvb)?;
        b.push(
            &g("attn_k_b.weight"),
            vec![dn, r, nh],
            ty,
            Src::KB {
                hf: kvb.clone(),
                n_head: nh,
                nope: dn,
                v: dv,
            },
        );
        b.push(
            &g("attn_v_b.weight"),
            vec![r, dv, nh],
            ty,
            Src::VB {
                hf: kvb,
                n_head: nh,
                nope: dn,
                v: dv,
            },
        );
        b.mat(
            &p("self_attn.o_proj.weight"),
            &g("attn_output.weight"),
            d,
            nh * dv,
        )?;
        if c.is_moe_layer(l) {
            let (ne, ff) = (c.n_routed_experts, c.moe_intermediate_size);
            b.f32(&p("mlp.gate.weight"), &g("ffn_gate_inp.weight"), &[ne, d])?;
            let bias = p("mlp.gate.e_score_correction_bias");
            if dir.has(&bias) {
                b.f32(&bias, &g("exp_probs_b.bias"), &[ne])?;
            }
            for (proj, gg, rows, cols) in [
                ("gate_proj", "ffn_gate_exps", ff, d),
                ("up_proj", "ffn_up_exps", ff, d),
                ("down_proj", "ffn_down_exps", d, ff),
            ] {
                let names: Vec<String> = (0..ne)
                    .map(|e| p(&format!("mlp.experts.{e}.{proj}.weight")))
                    .collect();
                for n in &names {
                    b.check(n, &[rows, cols])?;
                }
                let ty = float_ty(dir, &names[0])?;
                b.push(
                    &g(&format!("{gg}.weight")),
                    vec![cols, rows, ne],
                    ty,
                    Src::Rows(names),
                );
            }
            if c.n_shared_experts > 0 {
                let sf = ff * c.n_shared_experts;
                for (proj, gg, rows, cols) in [
                    ("gate_proj", "ffn_gate_shexp", sf, d),
                    ("up_proj", "ffn_up_shexp", sf, d),
                    ("down_proj", "ffn_down_shexp", d, sf),
                ] {
                    b.mat(
                        &p(&format!("mlp.shared_experts.{proj}.weight")),
                        &g(&format!("{gg}.weight")),
                        rows,
                        cols,
                    )?;
                }
            }
        } else {
            let ff = c.intermediate_size;
            b.mat(&p("mlp.gate_proj.weight"), &g("ffn_gate.weight"), ff, d)?;
            b.mat(&p("mlp.up_proj.weight"), &g("ffn_up.weight"), ff, d)?;
            b.mat(&p("mlp.down_proj.weight"), &g("ffn_down.weight"), d, ff)?;
        }
    }
    Ok(GgufLayout {
        arch: "deepseek2".into(),
        metadata: md,
        tensors: b.tensors,
    })
}

/// For `hf/llama.rs`: a tensor from parts of this module's vocabulary.
pub(super) fn llama_tensor(
    dir: &HfDir,
    hf: &str,
    gg: &str,
    shape: &[usize],
    permute: Option<usize>,
    keep_f32: bool,
) -> Result<LayoutTensor, HfError> {
    let mut b = Builder {
        dir,
        tensors: Vec::new(),
    };
    b.check(hf, shape)?;
    let ty = if keep_f32 {
        GgmlType::F32
    } else {
        float_ty(dir, hf)?
    };
    let dims = shape.iter().rev().copied().collect();
    let src = match permute {
        Some(n_head) => Src::Permuted {
            hf: hf.into(),
            n_head,
        },
        None => Src::Rows(vec![hf.into()]),
    };
    b.push(gg, dims, ty, src);
    Ok(b.tensors.remove(0))
}

/// For `hf/llama.rs`: an F32 tensor of computed values.
pub(super) fn values_tensor(gg: &str, vals: Vec<f32>) -> LayoutTensor {
    LayoutTensor {
        name: gg.into(),
        dims: vec![vals.len() as u64],
        src_ty: GgmlType::F32,
        src: Src::Values(vals),
    }
}
