//! `r1serve perplexity`: perplexity of a model on a text, and KL divergence against saved
//! log-probabilities, computed as llama.cpp's `llama-perplexity` does (peer commit 0c1e570,
//! `tools/perplexity/perplexity.cpp`, functions `perplexity` and `kl_divergence`):
//!
//! - the whole text is tokenized once, with BOS when the model adds one, specials as text;
//! - it is cut into `n_chunk = n_tokens / ctx` chunks of `ctx` tokens (at least 2);
//! - each chunk is evaluated from an empty cache, its first token replaced by BOS when the
//!   model adds one;
//! - only the second half is scored: logits at positions `ctx/2 .. ctx-2` predict the next
//!   token, `ctx - 1 - ctx/2` tokens per chunk;
//! - PPL = exp(mean NLL), ± PPL·sqrt(var(NLL)/(count-1)).
//!
//! `--kl-divergence-base OUT` writes llama.cpp's log-probability file (so either tool reads
//! the other's; format in [`crate::perplexity_kld`]), and `--kl-divergence` compares against it.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{bail, Context};
use indicatif::{ProgressBar, ProgressStyle};
use r1_model::{Batch, KvCache, Model};

use crate::load::{load, ModelArgs};
use crate::perplexity_kld as kld;

#[derive(clap::Args)]
pub struct PerplexityArgs {
    #[command(flatten)]
    pub model: ModelArgs,
    /// Text file to score (read as UTF-8; needs at least 2 × --ctx tokens). Not used with
    /// --kl-divergence, which takes its tokens from the base file.
    #[arg(long, short = 'f')]
    pub file: Option<PathBuf>,
    /// Tokens per chunk (llama-perplexity's -c); the second half of each chunk is scored.
    /// Default 512; with --kl-divergence, the base file's.
    #[arg(long, short = 'c', visible_alias = "ctx-size")]
    pub ctx: Option<usize>,
    /// Score at most N chunks (default: all of the text, or of the base file).
    #[arg(long)]
    pub chunks: Option<usize>,
    /// Without --kl-divergence: also save the log-probabilities of every scored token to
    /// FILE (llama.cpp's format: uint16 per vocabulary entry, scaled per token; about
    /// ctx/2 × vocab × 2 bytes per chunk). With --kl-divergence: the file to compare with.
    #[arg(long, value_name = "FILE")]
    pub kl_divergence_base: Option<PathBuf>,
    /// Compare this model with the log-probabilities in --kl-divergence-base: mean KLD, its
    /// percentiles, and how often both put the same token on top.
    #[arg(long, requires = "kl_divergence_base")]
    pub kl_divergence: bool,
}

/// Running sums of the negative log-likelihood of the scored tokens.
#[derive(Default, Clone, Copy)]
pub(crate) struct Nll {
    pub sum: f64,
    pub sum2: f64,
    pub count: usize,
}

impl Nll {
    pub fn add(&mut self, v: f64) {
        self.sum += v;
        self.sum2 += v * v;
        self.count += 1;
    }

    /// llama-perplexity's final estimate: (PPL, its ±).
    pub fn ppl(&self) -> (f64, f64) {
        let n = self.count as f64;
        let mean = self.sum / n;
        let ppl = mean.exp();
        let var = self.sum2 / n - mean * mean;
        let unc = if var > 0.0 && self.count > 1 {
            (var / (n - 1.0)).sqrt() * ppl
        } else {
            0.0
        };
        (ppl, unc)
    }
}

pub fn run(args: &PerplexityArgs) -> anyhow::Result<()> {
    if args.kl_divergence {
        return kld::run(args);
    }
    let Some(file) = args.file.as_deref() else {
        bail!("--file TEXT is required (the text to score), unless --kl-divergence is given");
    };
    let ctx = args.ctx.unwrap_or(512);
    check_ctx_flag(ctx)?;
    let text = read_text(file)?;
    let l = load(&args.model)?;
    let model = l.model.as_ref();
    check_ctx_model(ctx, model)?;
    let t = Instant::now();
    let tokens = l
        .tokenizer
        .encode(&text, true, false)
        .with_context(|| format!("tokenizing --file {}", file.display()))?;
    eprintln!(
        "perplexity: {} tokenized to {} tokens in {:.0} ms",
        file.display(),
        tokens.len(),
        t.elapsed().as_secs_f64() * 1e3
    );
    if tokens.len() < 2 * ctx {
        bail!(
            "--file {}: {} tokens, but --ctx {ctx} needs at least {} (2 × ctx); give a longer text or a smaller --ctx",
            file.display(),
            tokens.len(),
            2 * ctx
        );
    }
    let n_chunk_max = tokens.len() / ctx;
    let n_chunk = args.chunks.map_or(n_chunk_max, |c| c.min(n_chunk_max));
    if n_chunk == 0 {
        bail!("--chunks 0: nothing to score");
    }
    let bos = bos_for_chunks(&l.tokenizer);
    let vocab = model.config().vocab_size;
    let mut base_out = match &args.kl_divergence_base {
        Some(p) => {
            let rows = n_chunk * scored_per_chunk(ctx);
            eprintln!(
                "perplexity: saving log-probabilities to {} ({:.1} MiB)",
                p.display(),
                (rows * kld::row_u16s(vocab) * 2) as f64 / (1 << 20) as f64
            );
            Some(kld::BaseWriter::create(
                p,
                ctx,
                vocab,
                n_chunk,
                &tokens[..n_chunk * ctx],
            )?)
        }
        None => None,
    };
    eprintln!(
        "perplexity: {n_chunk} chunks of {ctx} tokens (of {n_chunk_max}), scoring the last {} of each, {} threads",
        scored_per_chunk(ctx),
        args.model.threads()
    );
    let threads = args.model.threads();
    let mut eval = ChunkEval::new(model, ctx);
    let bar = progress(n_chunk as u64);
    let mut nll = Nll::default();
    let started = Instant::now();
    let mut row_buf: Vec<u16> = Vec::new();
    for c in 0..n_chunk {
        let chunk = &tokens[c * ctx..(c + 1) * ctx];
        let logits = eval.run(chunk, bos)?;
        let first = ctx / 2;
        let targets = &chunk[first + 1..];
        let n = targets.len();
        if let Some(w) = base_out.as_mut() {
            let nv = kld::row_u16s(vocab);
            row_buf.resize(n * nv, 0);
            par_rows_mut(threads, &mut row_buf, nv, |i, out| {
                let row = &logits[i * vocab..(i + 1) * vocab];
                kld::encode_log_probs(row, out);
            });
            w.write_rows(&row_buf)?;
        }
        for v in par_rows(threads, n, |i| {
            nll_of(&logits[i * vocab..(i + 1) * vocab], targets[i] as usize)
        }) {
            nll.add(v);
        }
        if c == 0 {
            eta_line(started.elapsed().as_secs_f64(), n_chunk);
        }
        bar.set_message(format!("PPL {:.4}", nll.ppl().0));
        bar.inc(1);
    }
    bar.finish_and_clear();
    if let Some(w) = base_out {
        w.finish()?;
    }
    let (ppl, unc) = nll.ppl();
    eprintln!(
        "perplexity: {} tokens scored in {:.1} s",
        nll.count,
        started.elapsed().as_secs_f64()
    );
    println!("Final estimate: PPL = {ppl:.4} +/- {unc:.5}");
    std::io::stdout().flush().ok();
    Ok(())
}

/// Tokens scored per chunk of `ctx`: positions `ctx/2 ..= ctx-2` predict the next one.
pub(crate) fn scored_per_chunk(ctx: usize) -> usize {
    ctx - 1 - ctx / 2
}

pub(crate) fn check_ctx_flag(ctx: usize) -> anyhow::Result<()> {
    if ctx < 4 {
        bail!("--ctx {ctx}: too small, at least 4 (the second half of each chunk is scored)");
    }
    Ok(())
}

pub(crate) fn check_ctx_model(ctx: usize, model: &dyn Model) -> anyhow::Result<()> {
    let max = model.config().context_length;
    if ctx > max {
        bail!("--ctx {ctx} is larger than the model's context length of {max} tokens");
    }
    Ok(())
}

fn read_text(file: &Path) -> anyhow::Result<String> {
    let bytes = std::fs::read(file).with_context(|| format!("--file {}", file.display()))?;
    match String::from_utf8(bytes) {
        Ok(s) => Ok(s),
        Err(e) => {
            eprintln!(
                "perplexity: warning: --file {} is not valid UTF-8; invalid bytes read as U+FFFD",
                file.display()
            );
            Ok(String::from_utf8_lossy(e.as_bytes()).into_owned())
        }
    }
}

/// The BOS id that replaces each chunk's first token, when the model adds BOS (as
/// `llama_vocab_get_add_bos`).
pub(crate) fn bos_for_chunks(tok: &r1_engine::tokenizer::Tokenizer) -> Option<u32> {
    if tok.adds_bos() {
        tok.bos_id()
    } else {
        None
    }
}

pub(crate) fn progress(n: u64) -> ProgressBar {
    let bar = ProgressBar::new(n);
    bar.set_style(
        ProgressStyle::with_template(
            "perplexity [{bar:30}] {pos}/{len} chunks, {msg} ({elapsed} elapsed, ETA {eta})",
        )
        .expect("valid template")
        .progress_chars("=> "),
    );
    bar
}

/// llama-perplexity's line after the first chunk, on stderr (seen when stderr is not a
/// terminal and the bar is hidden).
pub(crate) fn eta_line(first_secs: f64, n_chunk: usize) {
    let mut total = (first_secs * n_chunk as f64) as u64;
    let mut eta = String::new();
    if total >= 3600 {
        eta.push_str(&format!("{} hours ", total / 3600));
        total %= 3600;
    }
    eprintln!(
        "perplexity: {first_secs:.2} seconds per pass - ETA {eta}{:.2} minutes",
        total as f64 / 60.0
    );
}

/// One chunk at a time from an empty cache: the scored rows' logits.
pub(crate) struct ChunkEval<'m> {
    model: &'m dyn Model,
    kv: KvCache,
    ctx: usize,
}

/// KV block size for the chunk's cache.
const BLOCK: usize = 16;
/// Tokens per forward pass (llama.cpp's default micro-batch).
const UBATCH: usize = 512;

impl<'m> ChunkEval<'m> {
    pub fn new(model: &'m dyn Model, ctx: usize) -> Self {
        let n_blocks = ctx.div_ceil(BLOCK);
        ChunkEval {
            model,
            kv: KvCache::with_dtype(model.kv_layout(), BLOCK, n_blocks, model.kv_dtype()),
            ctx,
        }
    }

    /// Evaluate `chunk` (`ctx` tokens, its first replaced by `bos` if given) and return the
    /// logits at positions `ctx/2 .. ctx-1`, row after row.
    pub fn run(&mut self, chunk: &[u32], bos: Option<u32>) -> anyhow::Result<Vec<f32>> {
        debug_assert_eq!(chunk.len(), self.ctx);
        let mut toks = chunk.to_vec();
        if let Some(b) = bos {
            toks[0] = b;
        }
        let (first, end) = (self.ctx / 2, self.ctx - 1);
        let vocab = self.model.config().vocab_size;
        let mut out = Vec::with_capacity((end - first) * vocab);
        let table: Vec<u32> = (0..self.ctx.div_ceil(BLOCK) as u32).collect();
        for (j, part) in toks.chunks(UBATCH).enumerate() {
            let pos0 = j * UBATCH;
            let mut batch = Batch::default();
            batch.push(
                part,
                pos0,
                table[..(pos0 + part.len()).div_ceil(BLOCK)].to_vec(),
                false,
            );
            batch.logit_rows = (0..part.len())
                .filter(|k| (first..end).contains(&(pos0 + k)))
                .collect();
            let logits = self
                .model
                .forward(&batch, &mut self.kv)
                .context("evaluating a chunk")?;
            debug_assert_eq!(logits.vocab, vocab);
            out.extend_from_slice(&logits.data);
        }
        Ok(out)
    }
}

/// Negative log-likelihood of `tok` under `logits`, as llama.cpp computes it (f32 exp,
/// f64 sum).
pub(crate) fn nll_of(logits: &[f32], tok: usize) -> f64 {
    let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let sum: f64 = logits.iter().map(|&l| (l - max).exp() as f64).sum();
    -((logits[tok] - max) as f64 - sum.ln())
}

/// `f(i)` for `i in 0..n` on up to `threads` threads, in order.
pub(crate) fn par_rows<T: Send>(threads: usize, n: usize, f: impl Fn(usize) -> T + Sync) -> Vec<T> {
    let threads = threads.clamp(1, n.max(1));
    let per = n.div_ceil(threads);
    std::thread::scope(|s| {
        let f = &f;
        let handles: Vec<_> = (0..threads)
            .map(|t| s.spawn(move || (t * per..((t + 1) * per).min(n)).map(f).collect::<Vec<T>>()))
            .collect();
        handles
            .into_iter()
            .flat_map(|h| h.join().expect("scoring thread panicked"))
            .collect()
    })
}

/// `f(i, row)` for each `width`-long row of `buf`, on up to `threads` threads.
pub(crate) fn par_rows_mut<T: Send>(
    threads: usize,
    buf: &mut [T],
    width: usize,
    f: impl Fn(usize, &mut [T]) + Sync,
) {
    let n = buf.len() / width;
    let per = n.div_ceil(threads.clamp(1, n.max(1))).max(1);
    std::thread::scope(|s| {
        let f = &f;
        for (t, part) in buf.chunks_mut(per * width).enumerate() {
            s.spawn(move || {
                for (k, row) in part.chunks_mut(width).enumerate() {
                    f(t * per + k, row);
                }
            });
        }
    });
}
