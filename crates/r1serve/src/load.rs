//! Loading a model file for the CLI commands: progress bar, thread count, tokenizer.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use anyhow::Context;
use indicatif::{ProgressBar, ProgressStyle};
use r1_engine::tokenizer::Tokenizer;
use r1_model::Model;

/// Options every model-running command shares.
#[derive(clap::Args, Clone, Debug)]
pub struct ModelArgs {
    /// Path to a GGUF model file, or a Hugging Face model directory (config.json,
    /// *.safetensors, tokenizer.json), e.g. one fetched by `r1serve pull`.
    #[arg(long, short = 'm', env = "R1SERVE_MODEL")]
    pub model: PathBuf,
    /// Worker threads (default: the number of physical cores).
    #[arg(long, short = 't')]
    pub threads: Option<usize>,
    /// Lock the weights in RAM (mlock), so they are never paged out (GGUF files; needs
    /// `ulimit -l` at least the model size, or CAP_IPC_LOCK).
    #[arg(long)]
    pub mlock: bool,
    /// KV-cache element type: f32 or f16 (default: the model's own; f32 for DeepSeek, whose
    /// latents then stay exact; f16 for llama and qwen2). f16 halves a DeepSeek latent
    /// cache and the bytes its attention reads per token.
    #[arg(long, env = "R1SERVE_KV_DTYPE", value_name = "TYPE")]
    pub kv_dtype: Option<r1_model::KvDtype>,
    /// Quantize a Hugging Face directory's weights while loading them (BF16/FP16/FP32, or
    /// FP8 dequantized block by block), one tensor at a time, so memory peaks near the
    /// quantized size: q8_0, q4_0, q4_1, q5_0, q5_1, q6_k, the mixes q2_k, q3_k_m, q4_k_m,
    /// q5_k_m (q4_k = q4_k_m, as llama-quantize names them), the i-quant mixes iq4_xs …
    /// iq1_s (most need --imatrix), or f16/bf16/f32. The result is what
    /// `r1serve quantize DIR OUT --type T` writes.
    #[arg(long, value_name = "T")]
    pub quantize: Option<crate::quantize_mix::FileType>,
    /// With --quantize: llama.cpp importance matrix (llama-imatrix output, GGUF or .dat).
    #[arg(long, value_name = "FILE", requires = "quantize")]
    pub imatrix: Option<PathBuf>,
    /// With --quantize: every quantizable tensor gets the type itself (llama-quantize --pure).
    #[arg(long, requires = "quantize")]
    pub pure: bool,
    /// With --quantize: also write the quantized model to this GGUF file (tokenizer and chat
    /// template included), and serve it from there.
    #[arg(long, value_name = "OUT.gguf", requires = "quantize")]
    pub save: Option<PathBuf>,
}

impl ModelArgs {
    pub fn threads(&self) -> usize {
        self.threads
            .unwrap_or_else(r1_model::pool::physical_cores)
            .max(1)
    }
}

pub struct Loaded {
    /// Bytes of weights on disk.
    pub size_bytes: u64,
    pub model: Arc<dyn Model>,
    pub tokenizer: Arc<Tokenizer>,
}

/// Open the model and its tokenizer, with a progress bar while the weights are paged in.
pub fn load(args: &ModelArgs) -> anyhow::Result<Loaded> {
    let path: &Path = &args.model;
    if path.is_dir() {
        if let Some(ty) = args.quantize {
            return load_hf_quantized(args, path, ty);
        }
        return load_hf(args, path);
    }
    if args.quantize.is_some() {
        anyhow::bail!(
            "{}: --quantize applies to Hugging Face directories (a GGUF file is requantized with \
             `r1serve quantize --allow-requantize`)",
            path.display()
        );
    }
    load_gguf_file(args, path)
}

/// A GGUF file, with a progress bar while the weights are paged in.
fn load_gguf_file(args: &ModelArgs, path: &Path) -> anyhow::Result<Loaded> {
    if !path.is_file() {
        anyhow::bail!(
            "{}: no such model file (fetch the test models with scripts/fetch-models.sh, or `r1serve pull`)",
            path.display()
        );
    }
    let start = Instant::now();
    let bar = ProgressBar::new(0);
    bar.set_style(
        ProgressStyle::with_template("loading {msg} [{bar:30}] {bytes}/{total_bytes} ({eta})")
            .expect("valid template")
            .progress_chars("=> "),
    );
    bar.set_message(
        path.file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default(),
    );
    let (file, mut model) = r1_model::load_gguf(path, args.threads(), &mut |done, total| {
        bar.set_length(total);
        bar.set_position(done);
    })
    .with_context(|| format!("loading {}", path.display()))?;
    bar.finish_and_clear();
    set_kv_dtype(args, model.as_mut(), path)?;
    if args.mlock {
        file.mlock().context("--mlock")?;
        tracing::info!(bytes = file.file_size(), "weights locked in RAM");
    }
    finish_gguf_load(args, file, model, path, "file", start)
}

/// The end of every GGUF load (from a file, or quantized in memory): the kernels in the log,
/// the tokenizer from the GGUF's keys, and one "model loaded" line saying how.
fn finish_gguf_load(
    args: &ModelArgs,
    file: Arc<r1_model::gguf::GgufFile>,
    model: Box<dyn r1_model::Model>,
    path: &Path,
    source: &str,
    start: Instant,
) -> anyhow::Result<Loaded> {
    log_kernels(&file);
    let tokenizer = Tokenizer::from_gguf(&file)
        .with_context(|| format!("building the tokenizer of {}", path.display()))?;
    tracing::info!(
        model = %model.config().name,
        arch = %model.config().arch,
        threads = args.threads(),
        source,
        secs = start.elapsed().as_secs_f64(),
        "model loaded"
    );
    Ok(Loaded {
        size_bytes: file.file_size() as u64,
        model: Arc::from(model),
        tokenizer: Arc::new(tokenizer),
    })
}

/// One log line per weight type: how many tensors, and which kernel family runs them on this
/// CPU, in `inspect`'s words (ISA, and whether the loader interleaved them for the x16 kernels).
fn log_kernels(file: &r1_model::gguf::GgufFile) {
    use r1_model::quant::{GgmlType, WeightLayout};
    use std::collections::BTreeMap;
    let mut types: BTreeMap<&str, (GgmlType, usize, usize)> = BTreeMap::new();
    for t in file.tensors() {
        let e = types.entry(t.ty.name()).or_insert((t.ty, 0, 0));
        e.1 += 1;
        e.2 += usize::from(t.layout == WeightLayout::Interleaved16);
    }
    for (name, (ty, n, x16)) in types {
        let kernel = crate::inspect::kernel_path(ty, n, x16);
        tracing::info!(ty = name, tensors = n, %kernel, "weight type");
    }
}

/// Apply `--kv-dtype`, where given.
fn set_kv_dtype(args: &ModelArgs, model: &mut dyn Model, path: &Path) -> anyhow::Result<()> {
    if let Some(dtype) = args.kv_dtype {
        model
            .set_kv_dtype(dtype)
            .with_context(|| format!("--kv-dtype {dtype} for {}", path.display()))?;
    }
    tracing::info!(kv_dtype = %model.kv_dtype(), "KV cache type");
    Ok(())
}

/// An HF directory quantized while it is read (`--quantize`): into memory, or with `--save`
/// into a GGUF file that is then loaded as any other.
fn load_hf_quantized(
    args: &ModelArgs,
    dir: &Path,
    ty: crate::quantize_mix::FileType,
) -> anyhow::Result<Loaded> {
    use crate::quantize_hf::{quantize_dir, Output};
    use std::io::IsTerminal;
    let start = Instant::now();
    let qa = crate::quantize::QuantizeArgs {
        input: dir.to_path_buf(),
        output: args.save.clone().unwrap_or_default(),
        ty,
        pure: args.pure,
        imatrix: args.imatrix.clone(),
        allow_requantize: false,
        dry_run: false,
        threads: Some(args.threads()),
    };
    let tty = std::io::stderr().is_terminal();
    if let Some(out) = &args.save {
        quantize_dir(&qa, Output::File(out), tty)?;
        tracing::info!(path = %out.display(), "quantized model saved");
        return load_gguf_file(args, out);
    }
    if args.mlock {
        anyhow::bail!(
            "{}: --mlock with --quantize needs --save (the weights are then a GGUF file)",
            dir.display()
        );
    }
    let bytes = quantize_dir(&qa, Output::Memory, tty)?.expect("in memory");
    let name = format!("{} ({} at load)", dir.display(), ty.name());
    let (file, mut model) =
        r1_model::arch::load_gguf_bytes(&name, bytes, args.threads(), &mut |_, _| {})
            .with_context(|| format!("loading {}", dir.display()))?;
    set_kv_dtype(args, model.as_mut(), dir)?;
    let source = format!("quantized to {} at load", ty.name());
    finish_gguf_load(args, file, model, dir, &source, start)
}

/// A Hugging Face model directory: safetensors weights, tokenizer.json and its config.
fn load_hf(args: &ModelArgs, dir: &Path) -> anyhow::Result<Loaded> {
    if args.mlock {
        anyhow::bail!(
            "{}: --mlock applies to GGUF files (an HF directory's weights are converted in memory)",
            dir.display()
        );
    }
    let start = Instant::now();
    let mut model = r1_model::load_hf_dir(dir, args.threads())
        .with_context(|| format!("loading {}", dir.display()))?;
    set_kv_dtype(args, model.as_mut(), dir)?;
    let tokenizer = Tokenizer::from_hf_dir(dir)
        .with_context(|| format!("building the tokenizer of {}", dir.display()))?;
    let size_bytes = std::fs::read_dir(dir)
        .with_context(|| format!("reading {}", dir.display()))?
        .filter_map(|e| e.ok())
        .filter(|e| e.path().extension().is_some_and(|x| x == "safetensors"))
        .filter_map(|e| e.metadata().ok())
        .map(|m| m.len())
        .sum();
    tracing::info!(
        model = %model.config().name,
        arch = %model.config().arch,
        secs = start.elapsed().as_secs_f64(),
        "model loaded"
    );
    Ok(Loaded {
        size_bytes,
        model: Arc::from(model),
        tokenizer: Arc::new(tokenizer),
    })
}
