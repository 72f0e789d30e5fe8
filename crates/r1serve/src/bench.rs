//! `r1serve bench`: prompt-processing and generation speed, measured like llama-bench
//! (pp: one batch of N prompt tokens; tg: N tokens decoded one at a time; both after `--depth`
//! tokens already in the cache, 0 by default, like `llama-bench -d`).

use std::path::PathBuf;
use std::time::Instant;

use r1_engine::session::Session;

use crate::load::{load, ModelArgs};

// Declared here rather than in main.rs: the bench's own submodule.
#[path = "bench_constrained.rs"]
mod constrained;

/// (`r1serve bench serve --url URL ...` benchmarks a running server instead; see its --help.)
#[derive(clap::Args)]
pub struct BenchArgs {
    #[command(flatten)]
    pub model: ModelArgs,
    /// Prompt tokens for the pp test (0 skips it).
    #[arg(short = 'p', long = "n-prompt", default_value_t = 512)]
    pub n_prompt: usize,
    /// Generated tokens for the tg test (0 skips it).
    #[arg(short = 'n', long = "n-gen", default_value_t = 128)]
    pub n_gen: usize,
    /// Tokens already in the KV cache before each test (llama-bench's `-d`): decode speed
    /// at long context. Filled once, untimed, in 512-token chunks.
    #[arg(short = 'd', long, default_value_t = 0)]
    pub depth: usize,
    /// Repetitions of each test (after one warm-up run).
    #[arg(short = 'r', long, default_value_t = 3)]
    pub reps: usize,
    /// Print one JSON line instead of a table.
    #[arg(long)]
    pub json: bool,
    /// Benchmark the batching engine with many concurrent requests instead.
    #[arg(long)]
    pub offline: bool,
    #[command(flatten)]
    pub offline_args: crate::bench_offline::OfflineArgs,
    /// Time schema-constrained decode against free decode of the same length (`-n` tokens,
    /// EOS ignored, `-r` runs each) through the engine, with a built-in schema (an array of
    /// at least 64 records).
    #[arg(long)]
    pub constrained: bool,
    /// Like --constrained, with this JSON schema (its output must not end before `-n`
    /// tokens).
    #[arg(long, value_name = "FILE")]
    pub json_schema: Option<PathBuf>,
}

struct Stat {
    mean: f64,
    std: f64,
    best: f64,
}

fn stat(v: &[f64]) -> Stat {
    let n = v.len() as f64;
    let mean = v.iter().sum::<f64>() / n;
    let var = v.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / (n - 1.0).max(1.0);
    Stat {
        mean,
        std: var.sqrt(),
        best: v.iter().cloned().fold(0.0, f64::max),
    }
}

pub fn run(args: &BenchArgs) -> anyhow::Result<()> {
    let l = load(&args.model)?;
    if args.offline {
        return crate::bench_offline::run(&l, &args.offline_args, args.json);
    }
    if args.constrained || args.json_schema.is_some() {
        let schema = args.json_schema.as_deref();
        return constrained::run(&l, schema, args.n_gen, args.reps, args.json);
    }
    let m = l.model.as_ref();
    let vocab = m.config().vocab_size as u32;
    // Fixed pseudo-random tokens, as llama-bench uses random ones.
    let depth = args.depth;
    let tokens: Vec<u32> = (0..(depth + args.n_prompt.max(args.n_gen)).max(1) as u64)
        .map(|i| ((i * 2654435761 + 12345) % vocab as u64) as u32)
        .collect();
    let reps = args.reps.max(1);
    let need = depth + args.n_prompt.max(args.n_gen) + 1;
    if need > m.config().context_length {
        anyhow::bail!(
            "--depth {depth} plus the test needs {need} tokens, more than the model's context of {}",
            m.config().context_length
        );
    }
    let mut session = Session::new(m, need);
    if depth > 0 {
        session.feed(&tokens[..depth], 512)?;
    }
    let (ctx_tokens, tokens) = (&tokens[..depth], &tokens[depth..]);
    debug_assert_eq!(session.tokens(), ctx_tokens);
    let mut pp = Vec::new();
    if args.n_prompt > 0 {
        for r in 0..=reps {
            session.truncate(depth);
            let t = Instant::now();
            session.feed(&tokens[..args.n_prompt], args.n_prompt)?;
            if r > 0 {
                pp.push(args.n_prompt as f64 / t.elapsed().as_secs_f64());
            }
        }
    }
    let mut tg = Vec::new();
    if args.n_gen > 0 {
        for r in 0..=reps {
            session.truncate(depth);
            let t = Instant::now();
            for &tok in tokens.iter().cycle().take(args.n_gen) {
                session.feed(&[tok], 1)?;
            }
            if r > 0 {
                tg.push(args.n_gen as f64 / t.elapsed().as_secs_f64());
            }
        }
    }
    let threads = args.model.threads();
    let name = l.model.config().name.clone();
    if args.json {
        let opt = |v: &[f64]| (!v.is_empty()).then(|| stat(v));
        let (pps, tgs) = (opt(&pp), opt(&tg));
        println!(
            "{}",
            serde_json::json!({
                "model": name,
                "file": args.model.model.display().to_string(),
                "threads": threads,
                "pp": args.n_prompt,
                "tg": args.n_gen,
                "depth": depth,
                "pp_tps": pps.as_ref().map(|s| s.best),
                "tg_tps": tgs.as_ref().map(|s| s.best),
                "pp_tps_mean": pps.as_ref().map(|s| s.mean),
                "tg_tps_mean": tgs.as_ref().map(|s| s.mean),
                "reps": reps,
            })
        );
        return Ok(());
    }
    let size = l.size_bytes as f64 / (1 << 20) as f64;
    println!("| model | size | params | threads | test | t/s |");
    println!("| --- | ---: | ---: | ---: | ---: | ---: |");
    let at = if depth > 0 {
        format!(" @ d{depth}")
    } else {
        String::new()
    };
    for (test, v) in [
        (format!("pp{}{at}", args.n_prompt), &pp),
        (format!("tg{}{at}", args.n_gen), &tg),
    ] {
        if v.is_empty() {
            continue;
        }
        let s = stat(v);
        println!(
            "| {name} | {size:.1} MiB | {:.1} M | {threads} | {test} | {:.2} ± {:.2} |",
            m.n_params() as f64 / 1e6,
            s.mean,
            s.std
        );
    }
    Ok(())
}
