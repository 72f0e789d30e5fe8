//! `r1serve inspect PATH`: what a model file holds.

use std::collections::BTreeMap;
use std::path::PathBuf;

use anyhow::Context;
use r1_engine::tokenizer::Tokenizer;
use r1_model::gguf::{GgufFile, GgufValue};
use r1_model::quant::{self, GgmlType, WeightLayout};
use r1_model::ModelConfig;

#[derive(clap::Args)]
pub struct InspectArgs {
    /// Path to a GGUF model file or a Hugging Face model directory.
    pub path: PathBuf,
    /// Print the whole chat template instead of its first lines.
    #[arg(long)]
    pub template: bool,
    /// Print every metadata key (arrays abbreviated).
    #[arg(long)]
    pub metadata: bool,
    /// Report the KV cache in this element type (f32 or f16), as `run --kv-dtype` would
    /// allocate it.
    #[arg(long, value_name = "TYPE")]
    pub kv_dtype: Option<r1_model::KvDtype>,
}

pub fn run(args: &InspectArgs) -> anyhow::Result<()> {
    if args.path.is_dir() {
        return run_hf_dir(args);
    }
    let f = GgufFile::open(&args.path)?;
    let cfg = ModelConfig::from_gguf(&f)?;
    let n_parts = f.parts().len();
    println!(
        "file:           {} (GGUF v{}, {} tensors, {:.1} MiB{})",
        args.path.display(),
        f.version(),
        f.tensors().len(),
        mib(f.file_size()),
        if n_parts > 1 {
            format!(" in {n_parts} parts")
        } else {
            String::new()
        }
    );
    if n_parts > 1 {
        // A split model (gguf-split): every file it takes, so a missing or odd one stands out.
        for (i, p) in f.parts().enumerate() {
            println!(
                "  part {}/{n_parts}:     {} ({:.1} MiB, {} tensors)",
                i + 1,
                p.path.display(),
                mib(p.size_bytes),
                p.n_tensors
            );
        }
        println!(
            "  total:        {:.1} MiB, {} tensors",
            mib(f.file_size()),
            f.tensors().len()
        );
    }
    println!("name:           {}", cfg.name);
    println!("architecture:   {}", cfg.arch);
    let params: u64 = f.tensors().iter().map(|t| t.n_elements()).sum();
    println!("parameters:     {} ({:.1} M)", params, params as f64 / 1e6);
    println!("context length: {}", cfg.context_length);
    println!(
        "layers {} | hidden {} | ffn {} | heads {} (kv {}) x {} | vocab {}",
        cfg.n_layers,
        cfg.hidden,
        cfg.ffn_hidden,
        cfg.n_heads,
        cfg.n_kv_heads,
        cfg.head_dim,
        cfg.vocab_size
    );
    println!(
        "rope:           base {} over {} dims, {:?} pairs{} | rms eps {:e}{}",
        cfg.rope_base,
        cfg.rope_dims,
        cfg.rope_style,
        if cfg.rope_linear_scale != 1.0 {
            format!(", linear scale {}", cfg.rope_linear_scale)
        } else {
            String::new()
        },
        cfg.rms_eps,
        if cfg.qkv_bias { " | q/k/v bias" } else { "" }
    );
    let (loaded, mut model) = r1_model::load_gguf(&args.path, 1, &mut |_, _| {})
        .with_context(|| format!("loading {}", args.path.display()))?;
    print_kv(args, model.as_mut())?;
    // Per type: tensors, bytes, and of those how many the loader interleaved (x16 layout).
    let mut hist: BTreeMap<&str, (GgmlType, usize, u64, usize)> = BTreeMap::new();
    for t in loaded.tensors() {
        let e = hist.entry(t.ty.name()).or_insert((t.ty, 0, 0, 0));
        e.1 += 1;
        e.2 += t.size_bytes as u64;
        e.3 += usize::from(t.layout == WeightLayout::Interleaved16);
    }
    println!(
        "tensor types (kernel on this CPU, best ISA {:?}):",
        quant::Isa::best()
    );
    for (name, (ty, n, bytes, x16)) in &hist {
        println!(
            "  {name:<8} {n:>5} tensors {:>10.1} MiB  {}",
            *bytes as f64 / (1 << 20) as f64,
            kernel_path(*ty, *n, *x16)
        );
    }
    match Tokenizer::from_gguf(&f) {
        Ok(tok) => {
            println!(
                "tokenizer:      {} / pre {} | {} tokens | bos {:?} eos {:?} | stop ids {:?}",
                f.opt_str("tokenizer.ggml.model")?.unwrap_or("?"),
                f.opt_str("tokenizer.ggml.pre")?.unwrap_or("default"),
                tok.vocab_size(),
                tok.bos_id(),
                tok.eos_id(),
                tok.stop_ids()
            );
        }
        Err(e) => println!("tokenizer:      unusable: {e}"),
    }
    match f
        .opt_str("tokenizer.chat_template")
        .context("reading the chat template")?
    {
        None => println!("chat template:  none"),
        Some(t) if args.template => println!("chat template:\n{t}"),
        Some(t) => {
            println!(
                "chat template:  {} lines (--template shows it all)",
                t.lines().count()
            );
            for line in t.lines().take(6) {
                println!("  | {line}");
            }
        }
    }
    if args.metadata {
        println!("metadata:");
        for (k, v) in f.metadata() {
            println!("  {k} = {}", short(v));
        }
    }
    Ok(())
}

fn mib(bytes: usize) -> f64 {
    bytes as f64 / (1 << 20) as f64
}

fn short(v: &GgufValue) -> String {
    match v {
        GgufValue::Array(a) if a.values.len() > 8 => {
            let head: Vec<String> = a.values[..8].iter().map(short).collect();
            format!("[{}, … {} items]", head.join(", "), a.values.len())
        }
        GgufValue::Array(a) => format!(
            "[{}]",
            a.values.iter().map(short).collect::<Vec<_>>().join(", ")
        ),
        GgufValue::String(s) if s.len() > 120 => format!("{:?}…", &s[..s.floor_char_boundary(120)]),
        GgufValue::String(s) => format!("{s:?}"),
        other => format!("{other:?}"),
    }
}

/// The KV cache the engine allocates for this model (in `--kv-dtype`'s type, where given),
/// per token and for the full context; for a DeepSeek model also what the full R1 needs.
fn print_kv(args: &InspectArgs, model: &mut dyn r1_model::Model) -> anyhow::Result<()> {
    if let Some(dtype) = args.kv_dtype {
        model
            .set_kv_dtype(dtype)
            .with_context(|| format!("--kv-dtype {dtype}"))?;
    }
    let layout = model.kv_layout();
    let dtype = model.kv_dtype();
    let per_token = layout.bytes_per_token(dtype.bytes());
    println!(
        "KV cache:       {} bytes/token ({} layers x ({} + {}) values, {}); {:.1} MiB for the full context of {}",
        per_token,
        layout.n_layers,
        layout.k_width,
        layout.v_width,
        dtype,
        (per_token * model.config().context_length) as f64 / (1 << 20) as f64,
        model.config().context_length
    );
    if model.config().arch.starts_with("deepseek") {
        // Sizing help for the real thing: R1/V3 keep 61 layers of kv_lora_rank 512 + rope 64.
        let r1 = 61 * (512 + 64) * dtype.bytes();
        println!(
            "                DeepSeek-R1 (61 layers x (512 + 64) values, {dtype}): {r1} bytes/token, {:.1} GiB at 128k context",
            (r1 * 131_072) as f64 / (1u64 << 30) as f64
        );
    }
    Ok(())
}

/// A Hugging Face model directory: what the loaded model reports.
fn run_hf_dir(args: &InspectArgs) -> anyhow::Result<()> {
    let mut model = r1_model::load_hf_dir(&args.path, 1)
        .with_context(|| format!("loading {}", args.path.display()))?;
    let c = model.config();
    println!("directory:      {} (Hugging Face)", args.path.display());
    println!("name:           {}", c.name);
    println!("architecture:   {}", c.arch);
    println!(
        "parameters:     {} ({:.1} M)",
        model.n_params(),
        model.n_params() as f64 / 1e6
    );
    println!("context length: {}", c.context_length);
    println!(
        "layers {} | hidden {} | heads {} (kv {}) | vocab {}",
        c.n_layers, c.hidden, c.n_heads, c.n_kv_heads, c.vocab_size
    );
    print_kv(args, model.as_mut())?;
    match Tokenizer::from_hf_dir(&args.path) {
        Ok(tok) => {
            println!(
                "tokenizer:      {} tokens | bos {:?} eos {:?} | stop ids {:?}",
                tok.vocab_size(),
                tok.bos_id(),
                tok.eos_id(),
                tok.stop_ids()
            );
            match tok.chat_template() {
                None => println!("chat template:  none"),
                Some(t) if args.template => println!("chat template:\n{t}"),
                Some(t) => println!(
                    "chat template:  {} lines (--template shows it all)",
                    t.lines().count()
                ),
            }
        }
        Err(e) => println!("tokenizer:      unusable: {e}"),
    }
    Ok(())
}

/// Which kernel a tensor type's matmuls take here: the x16 interleaved kernels for the
/// tensors the loader interleaved, the native layout's kernel (and the ISA it is written
/// for: a type without a kernel of its own for the best ISA falls back) for the rest.
pub(crate) fn kernel_path(ty: GgmlType, n: usize, interleaved: usize) -> String {
    let isa = |layout| match quant::kernel_isa(layout, ty) {
        Some(quant::Isa::Scalar) => "portable".to_string(),
        Some(i) => format!("{i:?}"),
        None => String::new(),
    };
    let native = isa(WeightLayout::Native);
    if native.is_empty() {
        return "no matmul kernel (norms, biases, lookups only)".into();
    }
    match interleaved {
        0 => format!("{native} native"),
        x if x == n => format!("{} x16 interleaved", isa(WeightLayout::Interleaved16)),
        x => format!(
            "{} x16 interleaved ({x} of {n}), {native} native for the rest",
            isa(WeightLayout::Interleaved16)
        ),
    }
}
