//! Model architectures behind one trait. Adding an architecture is one file here and one line
//! in [`load_gguf`].

pub mod deepseek_v3;
pub mod llama;

use std::path::Path;
use std::sync::Arc;

use crate::batch::Batch;
use crate::config::ModelConfig;
use crate::gguf::{GgufError, GgufFile};
use crate::hf::{HfDir, HfError, WeightDtype};
use crate::kv_cache::{KvCache, KvDtype, KvLayout};

#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    #[error(transparent)]
    Gguf(#[from] GgufError),
    #[error("{0}")]
    Unsupported(String),
    #[error("invalid batch: {0}")]
    Batch(String),
    #[error(transparent)]
    Hf(#[from] HfError),
}

/// Logits of the rows a batch asked for: `[rows, vocab]`, row-major.
#[derive(Clone, Debug)]
pub struct Logits {
    pub vocab: usize,
    pub data: Vec<f32>,
}

impl Logits {
    pub fn rows(&self) -> usize {
        self.data.len() / self.vocab
    }
    pub fn row(&self, i: usize) -> &[f32] {
        &self.data[i * self.vocab..(i + 1) * self.vocab]
    }
}

pub trait Model: Send + Sync {
    fn config(&self) -> &ModelConfig;
    fn kv_layout(&self) -> KvLayout;
    /// Run the batch's new tokens, writing their K/V into `kv`, and return the logits of
    /// `batch.logit_rows`.
    fn forward(&self, batch: &Batch, kv: &mut KvCache) -> Result<Logits, ModelError>;
    /// Number of parameters (elements of all weight tensors).
    fn n_params(&self) -> u64;
    /// The KV-cache storage type this model's forward is most accurate with (it accepts the
    /// caches of [`KvCache::new`] too unless it says otherwise).
    fn kv_dtype(&self) -> KvDtype {
        KvDtype::F16
    }
    /// Keep the KV cache in `dtype` from now on (the engine sizes and allocates it from
    /// [`Model::kv_dtype`]). An architecture that reads only one type refuses the others.
    fn set_kv_dtype(&mut self, dtype: KvDtype) -> Result<(), ModelError> {
        if dtype == self.kv_dtype() {
            Ok(())
        } else {
            Err(ModelError::Unsupported(format!(
                "the {} architecture keeps its KV cache in {} (asked for {dtype})",
                self.config().arch,
                self.kv_dtype()
            )))
        }
    }
}

/// Whether to interleave weights for the x16 kernels (faster GEMM, not llama.cpp's float
/// order); `R1SERVE_REPACK=0` keeps the file's layout and ggml's bit-exact order.
fn interleave_wanted() -> bool {
    !std::env::var("R1SERVE_REPACK").is_ok_and(|v| v == "0" || v == "false")
}

/// Whether `name` is the output head, the token embedding, or `blk.N.<one of per_layer>`:
/// the tensors an architecture interleaves for the x16 kernels.
fn is_global_or_layer_tensor(name: &str, per_layer: &[&str]) -> bool {
    name == "output.weight"
        || name == "token_embd.weight"
        || (name.starts_with("blk.")
            && name
                .split_once('.')
                .and_then(|(_, rest)| rest.split_once('.'))
                .is_some_and(|(_, t)| per_layer.contains(&t)))
}

/// Open a GGUF file the way the server runs it: a private huge-page copy where it fits
/// (`gguf::resident`), with the weights its architecture allows interleaved in place for the
/// x16 kernels (unless `R1SERVE_REPACK=0`). Returns the file and its architecture.
pub fn open_gguf_for_serving(path: &Path) -> Result<(GgufFile, String), ModelError> {
    prepare_for_serving(GgufFile::open_resident(path)?)
}

/// Interleave what the architecture allows (see [`open_gguf_for_serving`]) in a file already
/// open: a resident copy, or one built in memory.
pub fn prepare_for_serving(mut file: GgufFile) -> Result<(GgufFile, String), ModelError> {
    let path = file.path().to_path_buf();
    let arch = file.get_str("general.architecture")?.to_string();
    let pick: Option<fn(&str) -> bool> = match arch.as_str() {
        "llama" | "qwen2" | "mistral" => Some(llama::is_interleavable),
        "deepseek2" => Some(deepseek_v3::gguf::is_interleavable),
        _ => None,
    };
    if let (Some(pick), true) = (pick, interleave_wanted()) {
        let n = file.interleave_weights(pick);
        tracing::debug!(
            "{}: {n} weight tensors interleaved for the x16 kernels",
            path.display()
        );
    }
    Ok((file, arch))
}

/// Open a GGUF file and build the model its `general.architecture` names.
/// `progress` is called with (bytes touched, total bytes) while weights are paged in.
pub fn load_gguf(
    path: &Path,
    threads: usize,
    progress: &mut dyn FnMut(u64, u64),
) -> Result<(Arc<GgufFile>, Box<dyn Model>), ModelError> {
    let (file, arch) = open_gguf_for_serving(path)?;
    build_from_gguf(file, &arch, threads, progress)
}

/// Build a model from GGUF bytes made in memory (quantization at load), exactly as
/// [`load_gguf`] builds it from the same bytes in a file.
pub fn load_gguf_bytes(
    name: &str,
    bytes: Vec<u8>,
    threads: usize,
    progress: &mut dyn FnMut(u64, u64),
) -> Result<(Arc<GgufFile>, Box<dyn Model>), ModelError> {
    let (file, arch) = prepare_for_serving(GgufFile::from_bytes(name, bytes)?)?;
    build_from_gguf(file, &arch, threads, progress)
}

fn build_from_gguf(
    file: GgufFile,
    arch: &str,
    threads: usize,
    progress: &mut dyn FnMut(u64, u64),
) -> Result<(Arc<GgufFile>, Box<dyn Model>), ModelError> {
    let path = file.path().to_path_buf();
    let file = Arc::new(file);
    let model: Box<dyn Model> = match arch {
        "llama" | "qwen2" | "mistral" => Box::new(llama::Llama::load(&file, threads, progress)?),
        "deepseek2" => Box::new(deepseek_v3::DeepSeekV3::from_gguf(&file, threads)?),
        other => {
            return Err(ModelError::Unsupported(format!(
                "{}: architecture `{other}` is not supported (supported: llama, qwen2, deepseek2)",
                path.display()
            )))
        }
    };
    Ok((file, model))
}

/// Open a Hugging Face model directory and build the model its `config.json`
/// `architectures[0]` names: DeepSeek V3/R1 and V2 natively; Qwen2 and Llama (the R1
/// distills) through an in-memory GGUF with llama.cpp's tensor names.
pub fn load_hf_dir(path: &Path, threads: usize) -> Result<Box<dyn Model>, ModelError> {
    load_hf_dir_with(path, threads, WeightDtype::Native)
}

/// [`load_hf_dir`] with a choice of weight storage.
pub fn load_hf_dir_with(
    path: &Path,
    threads: usize,
    dtype: WeightDtype,
) -> Result<Box<dyn Model>, ModelError> {
    let dir = HfDir::open(path)?;
    let arch = dir.config.architecture()?.to_string();
    let model: Box<dyn Model> = match arch.as_str() {
        "DeepseekV3ForCausalLM" | "DeepseekV2ForCausalLM" => {
            Box::new(deepseek_v3::DeepSeekV3::from_hf(&dir, threads, dtype)?)
        }
        "Qwen2ForCausalLM" | "LlamaForCausalLM" | "MistralForCausalLM" => {
            let file = Arc::new(crate::hf::gguf_from_hf(&dir, dtype)?);
            Box::new(llama::Llama::load(&file, threads, &mut |_, _| {})?)
        }
        other => {
            return Err(ModelError::Unsupported(format!(
                "{}: architecture `{other}` is not supported (supported: DeepseekV3ForCausalLM, \
                 DeepseekV2ForCausalLM, Qwen2ForCausalLM, LlamaForCausalLM)",
                dir.config.path().display()
            )))
        }
    };
    Ok(model)
}
