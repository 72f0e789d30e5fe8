//! `r1serve perplexity --kl-divergence-base FILE [--kl-divergence]`: llama.cpp's
//! log-probability file, written while scoring a base model and read to compare another
//! model with it (`tools/perplexity/perplexity.cpp` at the peer commit: `log_softmax` with
//! `uint16_t *`, `process_logits`, `kl_divergence`). Either tool reads the other's files.
//!
//! Format, little-endian:
//! - `_logits_` (8 bytes), `n_ctx` (i32), `n_vocab` (i32), `n_chunk` (i32);
//! - the evaluated tokens, `n_chunk × n_ctx` i32 (as tokenized: without the BOS that
//!   replaces each chunk's first token);
//! - per chunk, per scored position (`n_ctx - 1 - n_ctx/2` of them), one row of
//!   `nv = 2·⌈n_vocab/2⌉ + 4` u16: `scale` (f32), `min_log_prob` (f32), then for each
//!   vocabulary entry `round((logit - min_logit) / scale)`, where `min_logit` is the row's
//!   smallest logit but at least `max - 16` and `scale = (max - min_logit) / 65535`; the
//!   log-probability is `scale · q + min_log_prob` (entries below `min_logit` read as the floor).

use std::fs::File;
use std::io::{BufReader, BufWriter, Read, Write};
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{bail, Context};

use crate::load::load;
use crate::perplexity::{
    bos_for_chunks, check_ctx_flag, check_ctx_model, eta_line, par_rows, progress,
    scored_per_chunk, ChunkEval, Nll, PerplexityArgs,
};

const MAGIC: &[u8; 8] = b"_logits_";

/// u16s per saved row for a vocabulary of `n_vocab`.
pub(crate) fn row_u16s(n_vocab: usize) -> usize {
    2 * n_vocab.div_ceil(2) + 4
}

/// ggml's `nearest_int`: round half to even through the float mantissa (exact here, the
/// values lie in [0, 65535]).
fn nearest_int(f: f32) -> i32 {
    let v = f + 12_582_912.0;
    ((v.to_bits() & 0x007f_ffff) as i32) - 0x0040_0000
}

fn put_f32(out: &mut [u16], x: f32) {
    let b = x.to_bits();
    out[0] = b as u16;
    out[1] = (b >> 16) as u16;
}

fn get_f32(row: &[u16]) -> f32 {
    f32::from_bits(row[0] as u32 | (row[1] as u32) << 16)
}

/// One row of the file from one position's logits (llama.cpp's `log_softmax(n_vocab,
/// logits, log_prob, tok)`); `out` is [`row_u16s`] long.
pub(crate) fn encode_log_probs(logits: &[f32], out: &mut [u16]) {
    let mut max = logits[0];
    let mut min = logits[0];
    for &l in &logits[1..] {
        max = max.max(l);
        min = min.min(l);
    }
    let min = min.max(max - 16.0);
    let sum: f64 = logits.iter().map(|&l| (l - max).exp() as f64).sum();
    let log_sum_exp = sum.ln() as f32;
    let min_log_prob = min - max - log_sum_exp;
    let scale = (max - min) / 65535.0;
    put_f32(&mut out[0..2], scale);
    put_f32(&mut out[2..4], min_log_prob);
    let q = &mut out[4..];
    q.fill(0);
    if scale != 0.0 {
        let inv = 1.0 / scale;
        for (o, &l) in q.iter_mut().zip(logits) {
            *o = if l > min {
                nearest_int(inv * (l - min)) as u16
            } else {
                0
            };
        }
    }
}

/// Writes the file to `PATH.part` and renames it when every chunk is in.
pub(crate) struct BaseWriter {
    out: BufWriter<File>,
    part: PathBuf,
    path: PathBuf,
}

impl BaseWriter {
    pub fn create(
        path: &Path,
        n_ctx: usize,
        n_vocab: usize,
        n_chunk: usize,
        tokens: &[u32],
    ) -> anyhow::Result<Self> {
        let mut part = path.as_os_str().to_owned();
        part.push(".part");
        let part = PathBuf::from(part);
        let f = File::create(&part)
            .with_context(|| format!("--kl-divergence-base {}", part.display()))?;
        let mut w = BaseWriter {
            out: BufWriter::with_capacity(1 << 20, f),
            part,
            path: path.to_path_buf(),
        };
        let mut head = Vec::with_capacity(20 + tokens.len() * 4);
        head.extend_from_slice(MAGIC);
        for v in [n_ctx, n_vocab, n_chunk] {
            head.extend_from_slice(&(v as i32).to_le_bytes());
        }
        for &t in tokens {
            head.extend_from_slice(&(t as i32).to_le_bytes());
        }
        w.write(&head)?;
        Ok(w)
    }

    fn write(&mut self, bytes: &[u8]) -> anyhow::Result<()> {
        self.out
            .write_all(bytes)
            .with_context(|| format!("writing {}", self.part.display()))
    }

    pub fn write_rows(&mut self, rows: &[u16]) -> anyhow::Result<()> {
        let bytes: Vec<u8> = rows.iter().flat_map(|v| v.to_le_bytes()).collect();
        self.write(&bytes)
    }

    pub fn finish(mut self) -> anyhow::Result<()> {
        self.out
            .flush()
            .with_context(|| format!("writing {}", self.part.display()))?;
        std::fs::rename(&self.part, &self.path).with_context(|| {
            format!(
                "renaming {} to {}",
                self.part.display(),
                self.path.display()
            )
        })?;
        self.part = PathBuf::new();
        Ok(())
    }
}

impl Drop for BaseWriter {
    fn drop(&mut self) {
        if !self.part.as_os_str().is_empty() {
            let _ = std::fs::remove_file(&self.part);
        }
    }
}

/// The base file's header and tokens.
struct Base {
    n_ctx: usize,
    n_vocab: usize,
    n_chunk: usize,
    tokens: Vec<u32>,
    rd: BufReader<File>,
}

fn open_base(path: &Path) -> anyhow::Result<Base> {
    let name = || format!("--kl-divergence-base {}", path.display());
    let f = File::open(path).with_context(name)?;
    let len = f.metadata().with_context(name)?.len();
    let mut rd = BufReader::with_capacity(1 << 20, f);
    let mut head = [0u8; 20];
    if rd.read_exact(&mut head).is_err() || &head[..8] != MAGIC {
        bail!(
            "{}: not a log-probability file (no `_logits_` header; make one with --kl-divergence-base alone)",
            name()
        );
    }
    let int = |i: usize| i32::from_le_bytes(head[8 + 4 * i..12 + 4 * i].try_into().unwrap());
    let (n_ctx, n_vocab, n_chunk) = (int(0), int(1), int(2));
    if n_ctx < 4 || n_vocab < 1 || n_chunk < 1 {
        bail!(
            "{}: bad header (n_ctx {n_ctx}, n_vocab {n_vocab}, n_chunk {n_chunk})",
            name()
        );
    }
    let (n_ctx, n_vocab, n_chunk) = (n_ctx as usize, n_vocab as usize, n_chunk as usize);
    let want = 20
        + (n_chunk * n_ctx * 4) as u64
        + (n_chunk * scored_per_chunk(n_ctx) * row_u16s(n_vocab) * 2) as u64;
    if len < want {
        bail!(
            "{}: {len} bytes, {want} expected for {n_chunk} chunks of {n_ctx} tokens and a vocabulary of {n_vocab} (truncated?)",
            name()
        );
    }
    let mut raw = vec![0u8; n_chunk * n_ctx * 4];
    rd.read_exact(&mut raw).with_context(name)?;
    let tokens: Vec<u32> = raw
        .chunks_exact(4)
        .map(|b| i32::from_le_bytes(b.try_into().unwrap()) as u32)
        .collect();
    if let Some(t) = tokens.iter().find(|&&t| t as usize >= n_vocab) {
        bail!(
            "{}: token id {t} outside the vocabulary of {n_vocab}",
            name()
        );
    }
    Ok(Base {
        n_ctx,
        n_vocab,
        n_chunk,
        tokens,
        rd,
    })
}

/// One scored position compared with the base: llama.cpp's `log_softmax(n_vocab, logits,
/// base_log_prob, tok, kld)`.
#[derive(Clone, Copy)]
struct RowKld {
    nll: f32,
    nll_base: f32,
    kld: f64,
    p_diff: f32,
    same_top: bool,
}

fn kld_row(logits: &[f32], base: &[u16], tok: usize) -> RowKld {
    let mut max = logits[0];
    let mut imax = 0;
    for (i, &l) in logits.iter().enumerate().skip(1) {
        if l > max {
            max = l;
            imax = i;
        }
    }
    let sum: f64 = logits.iter().map(|&l| (l - max).exp() as f64).sum();
    let log_sum_exp = sum.ln() as f32;
    let scale = get_f32(&base[0..2]);
    let min_log_prob = get_f32(&base[2..4]);
    let q = &base[4..];
    let nll = max + log_sum_exp - logits[tok];
    let nll_base = -(scale * q[tok] as f32 + min_log_prob);
    let max = max + log_sum_exp;
    let mut kld = 0f64;
    let mut imax_base = 0;
    let mut p_max = 0f32;
    for (i, &l) in logits.iter().enumerate() {
        let p_log_base = scale * q[i] as f32 + min_log_prob;
        if i == 0 || p_log_base > p_max {
            p_max = p_log_base;
            imax_base = i;
        }
        if p_log_base > -16.0 {
            let p_base = p_log_base.exp();
            kld += (p_base * (p_log_base - l + max)) as f64;
        }
    }
    RowKld {
        nll,
        nll_base,
        kld,
        p_diff: (-nll).exp() - (-nll_base).exp(),
        same_top: imax == imax_base,
    }
}

#[derive(Default)]
struct Sums {
    q: Nll,
    base: Nll,
    nll_nll_base: f64,
    kld: Nll,
    p_diff: Nll,
    p_diff2: Nll,
    same_top: usize,
    klds: Vec<f32>,
    p_diffs: Vec<f32>,
}

impl Sums {
    fn add(&mut self, r: RowKld) {
        self.q.add(r.nll as f64);
        self.base.add(r.nll_base as f64);
        self.nll_nll_base += r.nll as f64 * r.nll_base as f64;
        self.kld.add(r.kld);
        let pd = r.p_diff as f64;
        self.p_diff.add(pd);
        self.p_diff2.add(pd * pd);
        self.same_top += usize::from(r.same_top);
        self.klds.push(r.kld as f32);
        self.p_diffs.push(r.p_diff);
    }
}

/// llama.cpp's `mean_and_uncertainty`.
fn mean_unc(s: &Nll) -> (f64, f64) {
    if s.count < 1 {
        return (0.0, 0.0);
    }
    let n = s.count as f64;
    let f = s.sum / n;
    let df = s.sum2 / n - f * f;
    let df = if df > 0.0 && s.count > 10 {
        (df / (n - 1.0)).sqrt()
    } else {
        0.0
    };
    (f, df)
}

/// llama.cpp's `percentile` over sorted values.
fn percentile(v: &[f32], fraction: f32) -> f32 {
    if fraction <= 0.0 {
        return v[0];
    }
    if fraction >= 1.0 {
        return v[v.len() - 1];
    }
    let p = fraction * (v.len() - 1) as f32;
    let ip = p as usize;
    let p = p - ip as f32;
    (1.0 - p) * v[ip] + p * v[(ip + 1).min(v.len() - 1)]
}

fn median(v: &[f32]) -> f32 {
    let n = v.len();
    if n.is_multiple_of(2) {
        0.5 * (v[n / 2] + v[n / 2 - 1])
    } else {
        v[n / 2]
    }
}

pub fn run(args: &PerplexityArgs) -> anyhow::Result<()> {
    let path = args
        .kl_divergence_base
        .as_deref()
        .expect("clap: --kl-divergence requires --kl-divergence-base");
    if let Some(f) = &args.file {
        eprintln!(
            "perplexity: --file {} ignored: --kl-divergence scores the tokens saved in the base file",
            f.display()
        );
    }
    let mut base = open_base(path)?;
    let ctx = base.n_ctx;
    if let Some(c) = args.ctx.filter(|&c| c != ctx) {
        bail!(
            "--ctx {c}: --kl-divergence-base {} was made with --ctx {ctx} (leave --ctx out)",
            path.display()
        );
    }
    check_ctx_flag(ctx)?;
    let l = load(&args.model)?;
    let model = l.model.as_ref();
    check_ctx_model(ctx, model)?;
    let vocab = model.config().vocab_size;
    if base.n_vocab != vocab {
        bail!(
            "--kl-divergence-base {}: a vocabulary of {} entries, this model has {vocab} (a different tokenizer)",
            path.display(),
            base.n_vocab
        );
    }
    let n_chunk = args.chunks.map_or(base.n_chunk, |c| c.min(base.n_chunk));
    if n_chunk == 0 {
        bail!("--chunks 0: nothing to score");
    }
    let bos = bos_for_chunks(&l.tokenizer);
    let threads = args.model.threads();
    let n = scored_per_chunk(ctx);
    let nv = row_u16s(vocab);
    eprintln!(
        "perplexity: KL divergence against {} over {n_chunk} chunks of {ctx} tokens (of {}), {threads} threads",
        path.display(),
        base.n_chunk
    );
    let mut eval = ChunkEval::new(model, ctx);
    let bar = progress(n_chunk as u64);
    let started = Instant::now();
    let mut sums = Sums::default();
    let mut raw = vec![0u8; n * nv * 2];
    let mut rows = vec![0u16; n * nv];
    for c in 0..n_chunk {
        let chunk = &base.tokens[c * ctx..(c + 1) * ctx];
        let logits = eval.run(chunk, bos)?;
        base.rd
            .read_exact(&mut raw)
            .with_context(|| format!("reading chunk {} of {}", c + 1, path.display()))?;
        for (r, b) in rows.iter_mut().zip(raw.chunks_exact(2)) {
            *r = u16::from_le_bytes([b[0], b[1]]);
        }
        let targets = &chunk[ctx / 2 + 1..];
        for r in par_rows(threads, n, |i| {
            kld_row(
                &logits[i * vocab..(i + 1) * vocab],
                &rows[i * nv..(i + 1) * nv],
                targets[i] as usize,
            )
        }) {
            sums.add(r);
        }
        if c == 0 {
            eta_line(started.elapsed().as_secs_f64(), n_chunk);
        }
        bar.set_message(format!(
            "KLD {:.5}, same top {:.2}%",
            mean_unc(&sums.kld).0,
            100.0 * sums.same_top as f64 / sums.kld.count as f64
        ));
        bar.inc(1);
    }
    bar.finish_and_clear();
    report(&mut sums);
    Ok(())
}

/// The statistics llama-perplexity prints at the end of `--kl-divergence`.
fn report(s: &mut Sums) {
    let count = s.kld.count;
    let n = count as f64;
    let (lq, lq_unc) = mean_unc(&s.q);
    let (lb, lb_unc) = mean_unc(&s.base);
    let cov = if count < 10 {
        0.0
    } else {
        (s.nll_nll_base / n - (s.q.sum / n) * (s.base.sum / n)) / (n - 1.0)
    };
    println!("====== Perplexity statistics ======");
    println!(
        "Mean PPL(Q)                   : {:10.6} ± {:10.6}",
        lq.exp(),
        lq.exp() * lq_unc
    );
    println!(
        "Mean PPL(base)                : {:10.6} ± {:10.6}",
        lb.exp(),
        lb.exp() * lb_unc
    );
    println!(
        "Cor(ln(PPL(Q)), ln(PPL(base))): {:6.2}%",
        100.0 * cov / (lq_unc * lb_unc)
    );
    let ratio_unc = (lq_unc * lq_unc + lb_unc * lb_unc - 2.0 * cov)
        .max(0.0)
        .sqrt();
    println!(
        "Mean ln(PPL(Q)/PPL(base))     : {:10.6} ± {:10.6}",
        lq - lb,
        ratio_unc
    );
    println!(
        "Mean PPL(Q)/PPL(base)         : {:10.6} ± {:10.6}",
        (lq - lb).exp(),
        (lq - lb).exp() * ratio_unc
    );
    println!();
    s.klds.sort_by(f32::total_cmp);
    s.p_diffs.sort_by(f32::total_cmp);
    let k = &s.klds;
    let (kl, kl_unc) = mean_unc(&s.kld);
    println!("====== KL divergence statistics ======");
    println!("Mean    KLD: {kl:10.6} ± {kl_unc:10.6}");
    println!("Maximum KLD: {:10.6}", k[k.len() - 1]);
    for (label, f) in [
        ("99.9%", 0.999),
        ("99.0%", 0.99),
        ("95.0%", 0.95),
        ("90.0%", 0.9),
    ] {
        println!("{label}   KLD: {:10.6}", percentile(k, f));
    }
    println!("Median  KLD: {:10.6}", median(k));
    for (label, f) in [
        ("10.0%", 0.1),
        (" 5.0%", 0.05),
        (" 1.0%", 0.01),
        (" 0.1%", 0.001),
    ] {
        println!("{label}   KLD: {:10.6}", percentile(k, f));
    }
    println!("Minimum KLD: {:10.6}", k[0]);
    println!();
    let (pd, pd_unc) = mean_unc(&s.p_diff);
    let p = &s.p_diffs;
    println!("====== Token probability statistics ======");
    println!("Mean    Δp: {:6.3} ± {:5.3} %", 100.0 * pd, 100.0 * pd_unc);
    println!("Maximum Δp: {:6.3}%", 100.0 * p[p.len() - 1]);
    println!("99.0%   Δp: {:6.3}%", 100.0 * percentile(p, 0.99));
    println!("Median  Δp: {:6.3}%", 100.0 * median(p));
    println!(" 1.0%   Δp: {:6.3}%", 100.0 * percentile(p, 0.01));
    println!("Minimum Δp: {:6.3}%", 100.0 * p[0]);
    let (mse, mse_unc) = mean_unc(&s.p_diff2);
    let rms = mse.sqrt();
    let rms_unc = if rms > 0.0 { 0.5 / rms * mse_unc } else { 0.0 };
    println!(
        "RMS Δp    : {:6.3} ± {:5.3} %",
        100.0 * rms,
        100.0 * rms_unc
    );
    let top = s.same_top as f64 / n;
    let top_unc = if count > 1 {
        (top * (1.0 - top) / (n - 1.0)).sqrt()
    } else {
        0.0
    };
    println!(
        "Same top p: {:6.3} ± {:5.3} %",
        100.0 * top,
        100.0 * top_unc
    );
    println!();
    let (ppl, unc) = s.q.ppl();
    println!("Final estimate: PPL = {ppl:.4} +/- {unc:.5}");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encoded_row_decodes_to_log_softmax_and_self_kld_is_zero() {
        let logits: Vec<f32> = (0..1001)
            .map(|i| ((i * 37 % 101) as f32) * 0.13 - 5.0)
            .collect();
        let mut row = vec![0u16; row_u16s(logits.len())];
        encode_log_probs(&logits, &mut row);
        let max = logits.iter().copied().fold(f32::MIN, f32::max);
        let lse = logits
            .iter()
            .map(|&l| ((l - max) as f64).exp())
            .sum::<f64>()
            .ln();
        let (scale, min_lp) = (get_f32(&row[0..2]), get_f32(&row[2..4]));
        for (i, &l) in logits.iter().enumerate() {
            let want = (l - max) as f64 - lse;
            let got = (scale * row[4 + i] as f32 + min_lp) as f64;
            assert!((want - got).abs() <= scale as f64, "{i}: {want} vs {got}");
        }
        let r = kld_row(&logits, &row, 3);
        // each entry is off by up to scale/2 ≈ 1e-4 nats
        assert!(r.kld.abs() < 1e-4, "{}", r.kld);
        assert!(r.same_top);
        assert!((r.nll - r.nll_base).abs() < 1e-3);
        assert_eq!(nearest_int(2.5), 2);
        assert_eq!(nearest_int(3.5), 4);
        assert_eq!(nearest_int(65534.6), 65535);
    }
}
