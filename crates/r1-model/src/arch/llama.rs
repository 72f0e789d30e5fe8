//! The dense GQA decoder of the llama family, which also covers qwen2 (the architecture of
//! DeepSeek-R1-Distill-Qwen): the two differ only in q/k/v biases and the rope pairing, both
//! read from the file. Tensor names follow llama.cpp's GGUF conventions.

use std::sync::Arc;

use super::{Logits, Model, ModelError};
use crate::attention::{self, AttnShape};
use crate::batch::Batch;
use crate::config::{ModelConfig, RopeStyle};
use crate::gguf::GgufFile;
use crate::kv_cache::{KvCache, KvLayout};
use crate::matmul::{matmul, matmul_f32, matmul_many, QuantizedActs};
use crate::ops::{self, RopeTable};
use crate::pool::ThreadPool;
use crate::weights::{vector_from_gguf, QMatrix};

struct Layer {
    attn_norm: Vec<f32>,
    wq: QMatrix,
    wk: QMatrix,
    wv: QMatrix,
    bq: Option<Vec<f32>>,
    bk: Option<Vec<f32>>,
    bv: Option<Vec<f32>>,
    wo: QMatrix,
    ffn_norm: Vec<f32>,
    w_gate: QMatrix,
    w_up: QMatrix,
    w_down: QMatrix,
}

pub struct Llama {
    cfg: ModelConfig,
    pool: ThreadPool,
    embed: QMatrix,
    layers: Vec<Layer>,
    out_norm: Vec<f32>,
    /// `output.weight`, or the token embedding when the model ties them.
    lm_head: QMatrix,
    rope_freqs: Option<Vec<f32>>,
    n_params: u64,
    /// `R1SERVE_DUMP_DIR`: write every layer's intermediate tensors there (named as
    /// llama.cpp's graph names them) to compare runs with llama.cpp's eval-callback.
    dump_dir: Option<std::path::PathBuf>,
}

/// The weight matrices that may be interleaved at load: the matmul weights and the token
/// embedding table, which is also the output head of tied models (its row lookups go
/// through [`QMatrix::dequantize_row`], which reads a row back out of its group).
pub(crate) fn is_interleavable(name: &str) -> bool {
    const PER_LAYER: [&str; 7] = [
        "attn_q.weight",
        "attn_k.weight",
        "attn_v.weight",
        "attn_output.weight",
        "ffn_gate.weight",
        "ffn_up.weight",
        "ffn_down.weight",
    ];
    super::is_global_or_layer_tensor(name, &PER_LAYER)
}

impl Llama {
    pub fn load(
        file: &Arc<GgufFile>,
        threads: usize,
        progress: &mut dyn FnMut(u64, u64),
    ) -> Result<Self, ModelError> {
        let cfg = ModelConfig::from_gguf(file)?;
        let total: u64 = file.tensors().iter().map(|t| t.size_bytes as u64).sum();
        let mut done = 0u64;
        // Touch every page now so the first request does not pay for the page faults, and
        // report progress while a large file streams in from disk.
        for t in file.tensors() {
            let data = file.tensor_data(t);
            let mut acc = 0u8;
            for chunk in data.chunks(4096) {
                acc ^= chunk[0];
            }
            std::hint::black_box(acc);
            done += t.size_bytes as u64;
            progress(done, total);
        }
        let m = |name: &str| QMatrix::from_gguf(file, name);
        let v = |name: &str| vector_from_gguf(file, name);
        let opt_v = |name: &str| -> Result<Option<Vec<f32>>, ModelError> {
            match file.tensor(name) {
                Some(_) => Ok(Some(vector_from_gguf(file, name)?)),
                None => Ok(None),
            }
        };
        let embed = m("token_embd.weight")?;
        let lm_head = if file.tensor("output.weight").is_some() {
            m("output.weight")?
        } else {
            embed.clone()
        };
        let mut layers = Vec::with_capacity(cfg.n_layers);
        for l in 0..cfg.n_layers {
            let p = |s: &str| format!("blk.{l}.{s}");
            layers.push(Layer {
                attn_norm: v(&p("attn_norm.weight"))?,
                wq: m(&p("attn_q.weight"))?,
                wk: m(&p("attn_k.weight"))?,
                wv: m(&p("attn_v.weight"))?,
                bq: opt_v(&p("attn_q.bias"))?,
                bk: opt_v(&p("attn_k.bias"))?,
                bv: opt_v(&p("attn_v.bias"))?,
                wo: m(&p("attn_output.weight"))?,
                ffn_norm: v(&p("ffn_norm.weight"))?,
                w_gate: m(&p("ffn_gate.weight"))?,
                w_up: m(&p("ffn_up.weight"))?,
                w_down: m(&p("ffn_down.weight"))?,
            });
        }
        let check = |w: &QMatrix, rows: usize, cols: usize, what: &str| {
            if w.rows != rows || w.cols != cols {
                Err(ModelError::Unsupported(format!(
                    "{}: {what} is {}x{}, expected {rows}x{cols} from the metadata",
                    file.path().display(),
                    w.rows,
                    w.cols
                )))
            } else {
                Ok(())
            }
        };
        check(&embed, cfg.vocab_size, cfg.hidden, "token_embd.weight")?;
        check(&lm_head, cfg.vocab_size, cfg.hidden, "output.weight")?;
        for (l, ly) in layers.iter().enumerate() {
            check(&ly.wq, cfg.q_dim(), cfg.hidden, &format!("blk.{l}.attn_q"))?;
            check(&ly.wk, cfg.kv_dim(), cfg.hidden, &format!("blk.{l}.attn_k"))?;
            check(&ly.wv, cfg.kv_dim(), cfg.hidden, &format!("blk.{l}.attn_v"))?;
            check(
                &ly.wo,
                cfg.hidden,
                cfg.q_dim(),
                &format!("blk.{l}.attn_output"),
            )?;
            check(
                &ly.w_gate,
                cfg.ffn_hidden,
                cfg.hidden,
                &format!("blk.{l}.ffn_gate"),
            )?;
            check(
                &ly.w_up,
                cfg.ffn_hidden,
                cfg.hidden,
                &format!("blk.{l}.ffn_up"),
            )?;
            check(
                &ly.w_down,
                cfg.hidden,
                cfg.ffn_hidden,
                &format!("blk.{l}.ffn_down"),
            )?;
        }
        let rope_freqs = opt_v("rope_freqs.weight")?;
        let n_params = file.tensors().iter().map(|t| t.n_elements()).sum();
        Ok(Llama {
            pool: ThreadPool::new(threads),
            cfg,
            embed,
            layers,
            out_norm: v("output_norm.weight")?,
            lm_head,
            rope_freqs,
            n_params,
            dump_dir: std::env::var_os("R1SERVE_DUMP_DIR").map(Into::into),
        })
    }

    /// Debug tap: write `v` as raw little-endian f32 to `$R1SERVE_DUMP_DIR/NAME.bin`.
    fn tap(&self, name: &str, v: &[f32]) {
        if let Some(dir) = &self.dump_dir {
            let bytes: Vec<u8> = v.iter().flat_map(|x| x.to_le_bytes()).collect();
            let written = std::fs::create_dir_all(dir)
                .and_then(|_| std::fs::write(dir.join(format!("{name}.bin")), bytes));
            if let Err(e) = written {
                tracing::warn!(dir = %dir.display(), "cannot write tensor dump: {e}");
            }
        }
    }

    fn check_batch(&self, batch: &Batch, kv: &KvCache) -> Result<(), ModelError> {
        let err = |m: String| Err(ModelError::Batch(m));
        if kv.layout() != self.kv_layout() {
            return err("KV cache layout does not match the model".into());
        }
        if kv.dtype() != crate::kv_cache::KvDtype::F16 {
            return err("this architecture keeps its KV cache in f16".into());
        }
        batch
            .validate(kv, self.cfg.vocab_size)
            .map_err(ModelError::Batch)
    }
}

impl Model for Llama {
    fn config(&self) -> &ModelConfig {
        &self.cfg
    }

    fn kv_layout(&self) -> KvLayout {
        KvLayout {
            n_layers: self.cfg.n_layers,
            k_width: self.cfg.kv_dim(),
            v_width: self.cfg.kv_dim(),
        }
    }

    fn n_params(&self) -> u64 {
        self.n_params
    }

    fn forward(&self, batch: &Batch, kv: &mut KvCache) -> Result<Logits, ModelError> {
        self.check_batch(batch, kv)?;
        let c = &self.cfg;
        let pool = &self.pool;
        let t = batch.tokens.len();
        let (d, qd, kvd, hd) = (c.hidden, c.q_dim(), c.kv_dim(), c.head_dim);

        let mut x = vec![0.0f32; t * d];
        for (i, &tok) in batch.tokens.iter().enumerate() {
            self.embed
                .dequantize_row(tok as usize, &mut x[i * d..(i + 1) * d]);
        }
        let positions = batch.positions();
        let ropes: Vec<RopeTable> = positions
            .iter()
            .map(|&p| {
                ops::rope_table(
                    p as f32 / c.rope_linear_scale,
                    c.rope_dims,
                    c.rope_base,
                    self.rope_freqs.as_deref(),
                )
            })
            .collect();
        let neox = c.rope_style == RopeStyle::Neox;
        let shape = AttnShape {
            n_heads: c.n_heads,
            n_kv_heads: c.n_kv_heads,
            head_dim: hd,
            scale: 1.0 / (hd as f32).sqrt(),
        };

        let mut h = vec![0.0f32; t * d];
        let mut q = vec![0.0f32; t * qd];
        let mut k = vec![0.0f32; t * kvd];
        let mut v = vec![0.0f32; t * kvd];
        let mut attn = vec![0.0f32; t * qd];
        let mut o = vec![0.0f32; t * d];
        let mut gate = vec![0.0f32; t * c.ffn_hidden];
        let mut up = vec![0.0f32; t * c.ffn_hidden];

        for (l, ly) in self.layers.iter().enumerate() {
            ops::rms_norm_rows(pool, &x, &ly.attn_norm, c.rms_eps, &mut h, d);
            self.tap(&format!("attn_norm-{l}"), &h);
            let acts = QuantizedActs::new(pool, ly.wq.ty, &h, t, d);
            match (quant_eq(&ly.wk, &ly.wq), quant_eq(&ly.wv, &ly.wq)) {
                (true, true) => matmul_many(
                    pool,
                    &mut [(&ly.wq, &mut q), (&ly.wk, &mut k), (&ly.wv, &mut v)],
                    &acts,
                ),
                (true, false) => {
                    matmul_many(pool, &mut [(&ly.wq, &mut q), (&ly.wk, &mut k)], &acts);
                    matmul_f32(pool, &ly.wv, &h, t, &mut v);
                }
                (false, true) => {
                    matmul_many(pool, &mut [(&ly.wq, &mut q), (&ly.wv, &mut v)], &acts);
                    matmul_f32(pool, &ly.wk, &h, t, &mut k);
                }
                (false, false) => {
                    matmul(pool, &ly.wq, &acts, &mut q);
                    matmul_f32(pool, &ly.wk, &h, t, &mut k);
                    matmul_f32(pool, &ly.wv, &h, t, &mut v);
                }
            }
            if let Some(b) = &ly.bq {
                ops::add_bias(&mut q, b);
            }
            if let Some(b) = &ly.bk {
                ops::add_bias(&mut k, b);
            }
            if let Some(b) = &ly.bv {
                ops::add_bias(&mut v, b);
            }
            for (i, rope) in ropes.iter().enumerate() {
                for hh in 0..c.n_heads {
                    let s = i * qd + hh * hd;
                    ops::apply_rope(&mut q[s..s + c.rope_dims], rope, neox);
                }
                for hh in 0..c.n_kv_heads {
                    let s = i * kvd + hh * hd;
                    ops::apply_rope(&mut k[s..s + c.rope_dims], rope, neox);
                }
            }
            self.tap(&format!("Qcur-{l}"), &q);
            self.tap(&format!("Kcur-{l}"), &k);
            self.tap(&format!("Vcur-{l}"), &v);
            attention::write_kv(kv, l, batch, &k, &v);
            attention::attention(pool, kv, l, batch, &shape, &q, &mut attn);
            self.tap(&format!("kqv_out-{l}"), &attn);
            matmul_f32(pool, &ly.wo, &attn, t, &mut o);
            self.tap(&format!("attn_out-{l}"), &o);
            ops::add_assign(&mut x, &o);

            ops::rms_norm_rows(pool, &x, &ly.ffn_norm, c.rms_eps, &mut h, d);
            let acts = QuantizedActs::new(pool, ly.w_gate.ty, &h, t, d);
            if quant_eq(&ly.w_up, &ly.w_gate) {
                matmul_many(
                    pool,
                    &mut [(&ly.w_gate, &mut gate), (&ly.w_up, &mut up)],
                    &acts,
                );
            } else {
                matmul(pool, &ly.w_gate, &acts, &mut gate);
                matmul_f32(pool, &ly.w_up, &h, t, &mut up);
            }
            ops::silu_mul_par(pool, &mut gate, &up);
            self.tap(&format!("ffn_swiglu-{l}"), &gate);
            matmul_f32(pool, &ly.w_down, &gate, t, &mut o);
            self.tap(&format!("ffn_out-{l}"), &o);
            ops::add_assign(&mut x, &o);
            self.tap(&format!("l_out-{l}"), &x);
        }

        let rows = batch.logit_rows.len();
        let mut hn = vec![0.0f32; rows * d];
        for (j, &r) in batch.logit_rows.iter().enumerate() {
            ops::rms_norm(
                &x[r * d..(r + 1) * d],
                &self.out_norm,
                c.rms_eps,
                &mut hn[j * d..(j + 1) * d],
            );
        }
        let mut logits = vec![0.0f32; rows * c.vocab_size];
        if rows > 0 {
            matmul_f32(pool, &self.lm_head, &hn, rows, &mut logits);
        }
        Ok(Logits {
            vocab: c.vocab_size,
            data: logits,
        })
    }
}

/// Two weights take the same quantized activations.
fn quant_eq(a: &QMatrix, b: &QMatrix) -> bool {
    crate::quant::vec_dot_type(a.ty) == crate::quant::vec_dot_type(b.ty)
}
