//! Quantizing a Hugging Face directory (BF16, FP16, FP32 or DeepSeek's block-scaled FP8) to
//! GGUF in one pass: each tensor is read a slab of rows at a time through
//! `r1_model::hf::gguf_layout` (llama.cpp's converter's names and shapes; FP8 dequantized
//! block by block), quantized with the same type rules and quantizers as a GGUF input, and
//! appended to the output; its source pages are then dropped from the resident set. The
//! output is a file (`r1serve quantize`, `--save`) or memory (`--quantize` at load): the
//! same bytes either way, so a model quantized at load runs exactly as the saved file does.

use std::io::IsTerminal;
use std::path::Path;
use std::time::Instant;

use anyhow::{bail, Context};
use r1_model::gguf::{GgufStreamWriter, StreamTensor, TensorInfo};
use r1_model::hf::{gguf_layout, GgufLayout, HfDir, LayoutTensor};
use r1_model::quant::{self, GgmlType, WeightLayout};

use crate::quantize::{self, Planned, QuantizeArgs};
use crate::quantize_imatrix;

/// About 64 MiB of f32 per slab.
const SLAB_VALUES: usize = 16 << 20;

/// Where the GGUF goes.
pub enum Output<'a> {
    File(&'a Path),
    Memory,
}

/// `r1serve quantize DIR OUT --type T`.
pub fn run(a: &QuantizeArgs) -> anyhow::Result<()> {
    if a.output.starts_with(&a.input) && a.output.extension().is_some_and(|e| e == "safetensors") {
        bail!(
            "{}: would write into the input's weights",
            a.output.display()
        );
    }
    quantize_dir(a, Output::File(&a.output), std::io::stderr().is_terminal())?;
    Ok(())
}

/// Quantize the HF directory `a.input` as `a` says, into `out`; returns the bytes for
/// [`Output::Memory`]. `verbose` shows the progress bar (a line per tensor without a
/// terminal is printed only for `r1serve quantize`).
pub fn quantize_dir(
    a: &QuantizeArgs,
    out: Output<'_>,
    tty: bool,
) -> anyhow::Result<Option<Vec<u8>>> {
    let start = Instant::now();
    let dir = HfDir::open(&a.input).with_context(|| format!("opening {}", a.input.display()))?;
    let layout = gguf_layout(&dir).with_context(|| format!("converting {}", a.input.display()))?;
    let vocab = layout
        .tensors
        .iter()
        .find(|t| t.name == "token_embd.weight")
        .map_or(0, |t| t.n_rows());
    let tok = r1_engine::tokenizer::gguf_tokenizer_metadata(&a.input, vocab)
        .with_context(|| format!("the tokenizer of {}", a.input.display()))?;
    let GgufLayout {
        metadata: mut src_md,
        tensors: layout_tensors,
        ..
    } = layout;
    // The converter writes general.file_type after the model keys; metadata() sets it.
    src_md.extend(tok);
    let infos: Vec<TensorInfo> = layout_tensors
        .iter()
        .map(virtual_info)
        .collect::<Result<_, _>>()?;
    let imatrix = match &a.imatrix {
        Some(p) => Some(quantize_imatrix::load(p)?),
        None => None,
    };
    let plan = quantize::plan(&src_md, infos, a, imatrix.as_ref())?;
    if a.dry_run {
        quantize::dry_run(a, &plan)?;
        return Ok(None);
    }
    let metadata = quantize::metadata(src_md, a, imatrix.as_ref());
    let stream: Vec<StreamTensor> = plan
        .iter()
        .map(|p| StreamTensor {
            name: p.info.name.clone(),
            ty: p.ty,
            dims: p.info.dims.clone(),
        })
        .collect();
    let mut w = match out {
        Output::File(path) => GgufStreamWriter::create(path, &metadata, stream)
            .with_context(|| format!("creating {}.part", path.display()))?,
        Output::Memory => GgufStreamWriter::in_memory(&metadata, stream)?,
    };
    let threads = quantize::threads(a);
    let total_in: u64 = plan.iter().map(|p| p.info.size_bytes as u64).sum();
    let bar = quantize::progress_bar(tty, total_in);
    let lines = !tty && matches!(out, Output::File(_));
    let mut total_out = 0u64;
    for (i, p) in plan.iter().enumerate() {
        let lt = layout_tensors
            .iter()
            .find(|t| t.name == p.info.name)
            .expect("planned from the layout");
        bar.set_message(p.info.name.clone());
        total_out += convert(&dir, lt, p, threads, &mut w)
            .with_context(|| format!("{}: tensor {}", a.input.display(), p.info.name))?;
        lt.release(&dir);
        if lines {
            eprintln!(
                "[{:4}/{:4}] {:36} {:>7} -> {:<7}",
                i + 1,
                plan.len(),
                p.info.name,
                p.info.ty.name(),
                p.ty.name()
            );
        }
        bar.inc(p.info.size_bytes as u64);
    }
    bar.finish_and_clear();
    let bytes = match out {
        Output::File(path) => {
            w.finish()
                .with_context(|| format!("writing {}", path.display()))?;
            None
        }
        Output::Memory => Some(w.finish_bytes()?),
    };
    if matches!(out, Output::File(_)) {
        quantize::summary(a, &plan, total_in, total_out, start);
    } else {
        tracing::info!(
            ty = a.ty.name(),
            bytes = total_out,
            secs = start.elapsed().as_secs_f64(),
            "quantized at load"
        );
    }
    Ok(bytes)
}

/// A tensor header for the type rules: the converter's output at full precision.
fn virtual_info(t: &LayoutTensor) -> anyhow::Result<TensorInfo> {
    let size = t
        .src_ty
        .row_bytes(t.row_len())
        .map(|r| r * t.n_rows())
        .with_context(|| format!("tensor {}: dims {:?}", t.name, t.dims))?;
    Ok(TensorInfo {
        name: t.name.clone(),
        ty: t.src_ty,
        dims: t.dims.clone(),
        offset: 0,
        part: 0,
        size_bytes: size,
        layout: WeightLayout::Native,
    })
}

/// Read, quantize and append one tensor, a slab at a time; returns the bytes written.
fn convert(
    dir: &HfDir,
    lt: &LayoutTensor,
    p: &Planned,
    threads: usize,
    w: &mut GgufStreamWriter,
) -> anyhow::Result<u64> {
    let ne0 = lt.row_len();
    let rows_per_expert = lt.dims.get(1).copied().unwrap_or(1) as usize;
    let rb = quant::row_bytes(p.ty, ne0)?;
    let slab = (SLAB_VALUES / ne0).max(1);
    let mut out = Vec::new();
    let mut written = 0u64;
    lt.for_each_slab(dir, slab, |r0, x: &[f32]| -> anyhow::Result<()> {
        let n = x.len() / ne0;
        out.resize(n * rb, 0);
        quantize_rows(
            p.ty,
            x,
            ne0,
            r0,
            rows_per_expert,
            p.imatrix.as_deref(),
            threads,
            &mut out,
        )?;
        w.append(&out)?;
        written += out.len() as u64;
        Ok(())
    })?;
    Ok(written)
}

/// Quantize rows `r0..` (`x`, `ne0` values each) to `to` across `threads` threads.
#[allow(clippy::too_many_arguments)]
fn quantize_rows(
    to: GgmlType,
    x: &[f32],
    ne0: usize,
    r0: usize,
    rows_per_expert: usize,
    imatrix: Option<&[f32]>,
    threads: usize,
    out: &mut [u8],
) -> Result<(), quant::QuantError> {
    let rb = out.len() / (x.len() / ne0).max(1);
    let n = x.len() / ne0;
    let per = n.div_ceil(threads).max(1);
    std::thread::scope(|s| {
        let handles: Vec<_> = out
            .chunks_mut(per * rb)
            .zip(x.chunks(per * ne0))
            .enumerate()
            .map(|(ci, (o, xs))| {
                s.spawn(move || -> Result<(), quant::QuantError> {
                    for (j, (orow, xrow)) in
                        o.chunks_exact_mut(rb).zip(xs.chunks_exact(ne0)).enumerate()
                    {
                        let r = r0 + ci * per + j;
                        let im = imatrix.map(|m| {
                            let e = r / rows_per_expert.max(1);
                            &m[e * ne0..(e + 1) * ne0]
                        });
                        quant::quantize_weights(to, xrow, orow, im)?;
                    }
                    Ok(())
                })
            })
            .collect();
        handles
            .into_iter()
            .try_for_each(|h| h.join().expect("quantize worker panicked"))
    })
}
