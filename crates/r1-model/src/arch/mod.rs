//! Model architectures behind one trait. Adding an architecture is one file here and one line
//! in [`load_gguf`].

pub mod llama;

use std::path::Path;
use std::sync::Arc;

use crate::batch::Batch;
use crate::config::ModelConfig;
use crate::gguf::{GgufError, GgufFile};
use crate::kv_cache::{KvCache, KvLayout};

#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    #[error(transparent)]
    Gguf(#[from] GgufError),
    #[error("{0}")]
    Unsupported(String),
    #[error("invalid batch: {0}")]
    Batch(String),
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
}

/// Open a GGUF file and build the model its `general.architecture` names.
/// `progress` is called with (bytes touched, total bytes) while weights are paged in.
pub fn load_gguf(
    path: &Path,
    threads: usize,
    progress: &mut dyn FnMut(u64, u64),
) -> Result<(Arc<GgufFile>, Box<dyn Model>), ModelError> {
    let file = Arc::new(GgufFile::open(path)?);
    let arch = file.get_str("general.architecture")?.to_string();
    let model: Box<dyn Model> = match arch.as_str() {
        "llama" | "qwen2" | "mistral" => Box::new(llama::Llama::load(&file, threads, progress)?),
        other => {
            return Err(ModelError::Unsupported(format!(
                "{}: architecture `{other}` is not supported (supported: llama, qwen2)",
                path.display()
            )))
        }
    };
    Ok((file, model))
}
