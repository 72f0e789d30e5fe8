//! `r1serve quantize`: a GGUF model to another type, as `llama-quantize` does it: the same
//! per-tensor type rules (`quantize_mix.rs`), importance matrices (`quantize_imatrix.rs`),
//! and quantizers that write ggml's bytes (`r1_model::quant::quantize_weights`). Streams
//! tensor by tensor from the mapped input to `OUT.part`, renamed to `OUT` when complete.

use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{bail, Context};
use indicatif::{ProgressBar, ProgressStyle};
use r1_model::gguf::{GgufFile, GgufStreamWriter, GgufValue, StreamTensor, TensorInfo};
use r1_model::quant::{self, GgmlType};

use crate::quantize_imatrix::{self, Imatrix};
use crate::quantize_mix::{self, FileType, MixState, ModelInfo};

#[derive(clap::Args, Debug, Clone)]
pub struct QuantizeArgs {
    /// Input: a GGUF file, or a Hugging Face model directory (config.json and safetensors in
    /// BF16, FP16, FP32, or DeepSeek-V3/R1's block-scaled FP8), converted as llama.cpp's
    /// convert_hf_to_gguf.py does, tokenizer and chat template included.
    pub input: PathBuf,
    /// Output GGUF file (written as OUT.part, renamed when complete).
    pub output: PathBuf,
    /// Target: F32, F16, BF16, Q8_0, Q4_0, Q4_1, Q5_0, Q5_1, Q6_K, or one of llama.cpp's
    /// mixes Q2_K, Q2_K_S, Q3_K_S, Q3_K_M, Q3_K_L, Q4_K_S, Q4_K_M, Q5_K_S, Q5_K_M (Q3_K, Q4_K,
    /// Q5_K mean the _M mixes), IQ4_NL, IQ4_XS, IQ3_XXS, IQ3_XS, IQ3_S, IQ3_M, IQ2_XXS, IQ2_XS,
    /// IQ2_S, IQ2_M, IQ1_S, IQ1_M. The very-low-bit ones need --imatrix, as in llama-quantize.
    #[arg(long = "type", short = 'T', value_name = "T")]
    pub ty: FileType,
    /// Every quantizable tensor gets the target type itself (no mix rules, as
    /// llama-quantize --pure); rows that are not whole blocks still fall back.
    #[arg(long)]
    pub pure: bool,
    /// llama.cpp importance matrix (llama-imatrix output, GGUF or legacy .dat).
    #[arg(long, value_name = "FILE")]
    pub imatrix: Option<PathBuf>,
    /// Allow quantizing tensors that are already quantized (they are dequantized first).
    #[arg(long)]
    pub allow_requantize: bool,
    /// Show each tensor's type and the output's size, and write nothing (llama-quantize
    /// --dry-run). Fails as the real run would on a type with no writer or a missing
    /// importance matrix.
    #[arg(long)]
    pub dry_run: bool,
    /// Worker threads (default: all cores).
    #[arg(long, short = 't')]
    pub threads: Option<usize>,
}

pub fn run(a: &QuantizeArgs) -> anyhow::Result<()> {
    if a.input.is_dir() {
        return crate::quantize_hf::run(a);
    }
    if a.input == a.output {
        bail!("input and output are the same file: {}", a.input.display());
    }
    let start = Instant::now();
    let f = GgufFile::open(&a.input).with_context(|| format!("opening {}", a.input.display()))?;
    let imatrix = match &a.imatrix {
        Some(p) => Some(quantize_imatrix::load(p)?),
        None => None,
    };
    let src_md: Vec<(String, GgufValue)> = f
        .metadata()
        .map(|(k, v)| (k.to_string(), v.clone()))
        .collect();
    let plan = plan(&src_md, f.tensors().to_vec(), a, imatrix.as_ref())?;
    if a.dry_run {
        return dry_run(a, &plan);
    }
    let metadata = metadata(src_md, a, imatrix.as_ref());
    let tensors: Vec<StreamTensor> = plan
        .iter()
        .map(|p| StreamTensor {
            name: p.info.name.clone(),
            ty: p.ty,
            dims: p.info.dims.clone(),
        })
        .collect();
    let mut w = GgufStreamWriter::create(&a.output, &metadata, tensors)
        .with_context(|| format!("creating {}.part", a.output.display()))?;
    let threads = threads(a);
    let total_in: u64 = plan.iter().map(|p| p.info.size_bytes as u64).sum();
    let tty = std::io::stderr().is_terminal();
    let bar = progress_bar(tty, total_in);
    let mut total_out = 0u64;
    for (i, p) in plan.iter().enumerate() {
        let t = &p.info;
        bar.set_message(t.name.clone());
        let src = f.tensor_data(t);
        let line = format!(
            "[{:4}/{:4}] {:36} {:>7} -> {:<7}",
            i + 1,
            plan.len(),
            t.name,
            t.ty.name(),
            p.ty.name()
        );
        if p.ty == t.ty {
            w.append(src)?;
            total_out += src.len() as u64;
        } else {
            total_out += convert(t, src, p.ty, p.imatrix.as_deref(), threads, &mut w)
                .with_context(|| format!("{}: tensor {}", a.input.display(), t.name))?;
        }
        if !tty {
            eprintln!("{line}");
        }
        bar.inc(t.size_bytes as u64);
    }
    bar.finish_and_clear();
    w.finish()
        .with_context(|| format!("writing {}", a.output.display()))?;
    summary(a, &plan, total_in, total_out, start);
    Ok(())
}

/// `--dry-run`: the plan, a line per tensor, then the sizes.
pub(crate) fn dry_run(a: &QuantizeArgs, plan: &[Planned]) -> anyhow::Result<()> {
    let mut total_in = 0u64;
    let mut total_out = 0u64;
    for (i, p) in plan.iter().enumerate() {
        let t = &p.info;
        let rows = t.n_elements() / t.row_len().max(1) as u64;
        let out = if p.ty == t.ty {
            t.size_bytes as u64
        } else {
            rows * p.ty.row_bytes(t.row_len()).unwrap_or(0) as u64
        };
        total_in += t.size_bytes as u64;
        total_out += out;
        println!(
            "[{:4}/{:4}] {:36} {:>7} -> {:<7} {:>10.2} MiB",
            i + 1,
            plan.len(),
            t.name,
            t.ty.name(),
            p.ty.name(),
            out as f64 / (1024.0 * 1024.0)
        );
    }
    let n_el: u64 = plan.iter().map(|p| p.info.n_elements()).sum();
    println!(
        "dry run: {} as {}{}: {:.2} MiB -> {:.2} MiB ({:.2} BPW); nothing written",
        a.input.display(),
        a.ty.name(),
        if a.pure { " (pure)" } else { "" },
        total_in as f64 / (1024.0 * 1024.0),
        total_out as f64 / (1024.0 * 1024.0),
        total_out as f64 * 8.0 / n_el.max(1) as f64
    );
    Ok(())
}

/// `--threads`, else every core.
pub(crate) fn threads(a: &QuantizeArgs) -> usize {
    a.threads
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()))
        .max(1)
}

/// A byte-count bar on a terminal; hidden otherwise (a line per tensor is printed instead).
pub(crate) fn progress_bar(tty: bool, total: u64) -> ProgressBar {
    if !tty {
        return ProgressBar::hidden();
    }
    let b = ProgressBar::new(total);
    b.set_style(
        ProgressStyle::with_template("{msg:40} [{bar:30}] {bytes}/{total_bytes} ({eta})")
            .expect("valid template")
            .progress_chars("=> "),
    );
    b
}

/// The closing line: sizes and bits per weight before and after.
pub(crate) fn summary(
    a: &QuantizeArgs,
    plan: &[Planned],
    total_in: u64,
    total_out: u64,
    start: Instant,
) {
    let mib = |b: u64| b as f64 / (1024.0 * 1024.0);
    let n_el: u64 = plan.iter().map(|p| p.info.n_elements()).sum();
    eprintln!(
        "quantize: {} -> {} as {}{}: {:.2} MiB ({:.2} BPW) -> {:.2} MiB ({:.2} BPW) in {:.1} s",
        a.input.display(),
        a.output.display(),
        a.ty.name(),
        if a.pure { " (pure)" } else { "" },
        mib(total_in),
        total_in as f64 * 8.0 / n_el.max(1) as f64,
        mib(total_out),
        total_out as f64 * 8.0 / n_el.max(1) as f64,
        start.elapsed().as_secs_f64()
    );
}

pub(crate) struct Planned {
    pub info: TensorInfo,
    pub ty: GgmlType,
    pub imatrix: Option<Vec<f32>>,
}

/// `blk.N.` layer of a name, for llama.cpp's tensor order.
fn layer_key(name: &str) -> i64 {
    name.strip_prefix("blk.")
        .and_then(|r| r.split('.').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or(-1)
}

fn model_info(md: &[(String, GgufValue)], tensors: &[TensorInfo]) -> ModelInfo {
    let get = |key: &str| md.iter().find(|(k, _)| k == key).map(|(_, v)| v);
    let arch = get("general.architecture")
        .and_then(|v| v.as_str())
        .unwrap_or("")
        .to_string();
    let k = |s: &str| format!("{arch}.{s}");
    let opt = |key: &str| get(key).and_then(|v| v.as_u64());
    let u = |key: &str| opt(key).unwrap_or(0) as usize;
    let n_head = u(&k("attention.head_count"));
    ModelInfo {
        n_layer: u(&k("block_count")),
        n_head,
        n_head_kv: opt(&k("attention.head_count_kv")).map_or(n_head, |v| v as usize),
        n_expert: u(&k("expert_count")),
        has_output: tensors.iter().any(|t| t.name == "output.weight"),
        n_attention_wv: tensors
            .iter()
            .filter(|t| {
                ["attn_v.weight", "attn_qkv.weight", "attn_kv_b.weight"]
                    .iter()
                    .any(|s| t.name.contains(s))
            })
            .count(),
        arch,
    }
}

/// Every tensor's target type, in llama.cpp's order (by layer, then name), checked before
/// anything is written: a bad input fails here, not half way through.
pub(crate) fn plan(
    md: &[(String, GgufValue)],
    mut tensors: Vec<TensorInfo>,
    a: &QuantizeArgs,
    im: Option<&Imatrix>,
) -> anyhow::Result<Vec<Planned>> {
    let info = model_info(md, &tensors);
    tensors.sort_by(|x, y| (layer_key(&x.name), &x.name).cmp(&(layer_key(&y.name), &y.name)));
    let mut st = MixState::default();
    let mut out = Vec::with_capacity(tensors.len());
    let path = a.input.display();
    for t in tensors {
        let ne0 = *t.dims.first().unwrap_or(&1) as usize;
        let ty = quantize_mix::tensor_type(
            &mut st,
            &info,
            a.ty,
            im.is_some(),
            a.pure,
            &t.name,
            t.ty,
            ne0,
            t.dims.len(),
        );
        let mut imatrix = None;
        if ty != t.ty {
            if t.ty.is_quantized() && !a.allow_requantize {
                bail!(
                    "{path}: tensor {} is already {}; requantizing it to {} needs --allow-requantize",
                    t.name,
                    t.ty.name(),
                    ty.name()
                );
            }
            if !quant::quantize_weights_supported(ty) {
                bail!("{path}: tensor {}: no quantizer for {}", t.name, ty.name());
            }
            if quant::row_bytes(t.ty, ne0).is_err() || ty.row_bytes(ne0).is_none() {
                bail!(
                    "{path}: tensor {}: row length {ne0} does not fit {} / {}",
                    t.name,
                    t.ty.name(),
                    ty.name()
                );
            }
            if let Some(im) = im {
                let ne2 = t.dims.get(2).copied().unwrap_or(1) as usize;
                match im.entries.get(&t.name) {
                    None => tracing::info!(tensor = %t.name, "no importance matrix entry"),
                    Some(v) if v.len() == ne0 * ne2 => imatrix = Some(v.clone()),
                    Some(v) if t.name == "token_embd.weight" => {
                        tracing::info!(tensor = %t.name, len = v.len(), "imatrix size differs; ignored")
                    }
                    Some(v) => bail!(
                        "{}: entry {} has {} values, the tensor needs {} ({ne0} × {ne2} experts)",
                        a.imatrix.as_deref().unwrap_or(Path::new("")).display(),
                        t.name,
                        v.len(),
                        ne0 * ne2
                    ),
                }
            }
        }
        if ty != t.ty
            && imatrix.is_none()
            && crate::quantize_ftype::requires_imatrix(&t.name, ty, a.ty)
        {
            // llama-quantize's rule: these types are garbage without one
            bail!(
                "{path}: tensor {} would be {}, which needs an importance matrix{} \
                 (make one with llama-imatrix and pass --imatrix FILE)",
                t.name,
                ty.name(),
                match &a.imatrix {
                    Some(p) => format!(", and {} has no entry for it", p.display()),
                    None => String::new(),
                }
            );
        }
        out.push(Planned {
            info: t,
            ty,
            imatrix,
        });
    }
    if st.n_fallback > 0 {
        eprintln!(
            "quantize: {} of {} tensors fall back to a smaller block type (rows not whole blocks)",
            st.n_fallback,
            out.len()
        );
    }
    Ok(out)
}

/// The input's metadata with llama-quantize's changes: file type, quantization version,
/// no split keys, and the importance matrix's provenance.
pub(crate) fn metadata(
    mut md: Vec<(String, GgufValue)>,
    a: &QuantizeArgs,
    im: Option<&Imatrix>,
) -> Vec<(String, GgufValue)> {
    md.retain(|(k, _)| !k.starts_with("split."));
    // gguf's setters remove a key and append it, so a key llama-quantize sets moves to the
    // end even when the input has it (an F16 file from convert_hf_to_gguf.py does)
    let mut set = |k: &str, v: GgufValue| {
        md.retain(|(key, _)| key != k);
        md.push((k.to_string(), v));
    };
    set("general.quantization_version", GgufValue::U32(2));
    set("general.file_type", GgufValue::U32(a.ty.id()));
    if let (Some(im), Some(p)) = (im, &a.imatrix) {
        set(
            "quantize.imatrix.file",
            GgufValue::String(p.display().to_string()),
        );
        if let Some(d) = &im.dataset {
            set("quantize.imatrix.dataset", GgufValue::String(d.clone()));
        }
        set(
            "quantize.imatrix.entries_count",
            GgufValue::U32(im.entries.len() as u32),
        );
        if im.chunk_count > 0 {
            set(
                "quantize.imatrix.chunks_count",
                GgufValue::U32(im.chunk_count),
            );
        }
    }
    md
}

/// Dequantize (or convert) `src` to f32 and quantize it to `to`, in slabs of rows across
/// `threads` threads, appending to the writer. Returns the bytes written.
fn convert(
    t: &TensorInfo,
    src: &[u8],
    to: GgmlType,
    imatrix: Option<&[f32]>,
    threads: usize,
    w: &mut GgufStreamWriter,
) -> anyhow::Result<u64> {
    let ne0 = t.row_len();
    let rows = t.n_rows();
    let rows_per_expert = t.dims.get(1).copied().unwrap_or(1) as usize;
    let rb_in = quant::row_bytes(t.ty, ne0)?;
    let rb_out = quant::row_bytes(to, ne0)?;
    // about 64 MiB of f32 per slab
    let slab = ((16 << 20) / ne0).clamp(1, rows.max(1));
    let mut out = vec![0u8; slab * rb_out];
    let mut written = 0u64;
    let mut r0 = 0;
    while r0 < rows {
        let n = slab.min(rows - r0);
        let per = n.div_ceil(threads);
        let result: Result<(), quant::QuantError> = std::thread::scope(|s| {
            let mut handles = Vec::new();
            for (ci, chunk) in out[..n * rb_out].chunks_mut(per * rb_out).enumerate() {
                let first = r0 + ci * per;
                handles.push(s.spawn(move || -> Result<(), quant::QuantError> {
                    let mut x = vec![0f32; ne0];
                    for (j, o) in chunk.chunks_exact_mut(rb_out).enumerate() {
                        let r = first + j;
                        quant::dequantize(t.ty, &src[r * rb_in..(r + 1) * rb_in], &mut x)?;
                        let im = imatrix.map(|m| {
                            let e = r / rows_per_expert;
                            &m[e * ne0..(e + 1) * ne0]
                        });
                        quant::quantize_weights(to, &x, o, im)?;
                    }
                    Ok(())
                }));
            }
            handles
                .into_iter()
                .try_for_each(|h| h.join().expect("quantize worker panicked"))
        });
        result?;
        w.append(&out[..n * rb_out])?;
        written += (n * rb_out) as u64;
        r0 += n;
    }
    Ok(written)
}
