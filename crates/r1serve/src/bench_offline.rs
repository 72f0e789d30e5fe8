//! `r1serve bench --offline`: many requests through the batching engine (no HTTP), reported
//! as output tokens per second at several concurrency levels, plus time-to-first-token of a
//! request whose long prefix is in the prefix cache against a cold one.

use std::time::{Duration, Instant};

use anyhow::Context;
use r1_engine::block_pool::parse_kv_cache_mem;
use r1_engine::engine::{spawn_engine, EngineConfig, EngineEvent, EngineHandle, GenerateRequest};

use crate::load::Loaded;

#[derive(clap::Args, Clone, Debug)]
pub struct OfflineArgs {
    /// Concurrency levels to measure.
    #[arg(long, value_delimiter = ',', default_value = "1,4,8,16")]
    pub concurrency: Vec<usize>,
    /// Prompt length of each request (distinct random tokens; no prefix sharing).
    #[arg(long, default_value_t = 105)]
    pub prompt_tokens: usize,
    /// Tokens generated per request.
    #[arg(long, default_value_t = 64)]
    pub gen_tokens: usize,
    /// Shared prefix length for the prefix-cache TTFT test (0 skips it).
    #[arg(long, default_value_t = 1000)]
    pub prefix_tokens: usize,
    /// KV-cache budget: bytes ("2GiB") or a fraction of RAM ("0.3").
    #[arg(long, default_value = "1GiB")]
    pub kv_cache_mem: String,
}

fn tokens(seed: u64, n: usize, vocab: u32) -> Vec<u32> {
    // Skip the low ids, where special tokens live.
    (0..n as u64)
        .map(|i| 1000 + ((seed * 7919 + i * 2654435761) % (vocab as u64 - 1000)) as u32)
        .collect()
}

fn engine(l: &Loaded, args: &OfflineArgs, prefix_cache: bool) -> anyhow::Result<EngineHandle> {
    let cfg = EngineConfig {
        kv_cache_mem: parse_kv_cache_mem(&args.kv_cache_mem)?,
        enable_prefix_caching: prefix_cache,
        ..Default::default()
    };
    let tok = l.tokenizer.clone();
    Ok(spawn_engine(l.model.clone(), tok, cfg)?.0)
}

/// What one request saw: time to first token, tokens generated, prompt tokens served from
/// the prefix cache (from the request's own admission event: the engine's published stats
/// may not have caught up when the request finishes).
struct Driven {
    ttft: Duration,
    tokens: usize,
    cached: usize,
}

/// Run one request to the end.
fn drive(mut s: r1_engine::engine::RequestStream, start: Instant) -> anyhow::Result<Driven> {
    let mut first = None;
    let mut tokens = 0;
    let mut cached = 0;
    while let Some(ev) = s.blocking_recv() {
        match ev {
            EngineEvent::Token { .. } => {
                first.get_or_insert_with(|| start.elapsed());
                tokens += 1;
            }
            EngineEvent::Finished { .. } => break,
            EngineEvent::Error(e) => anyhow::bail!("engine error: {e}"),
            EngineEvent::Admitted { cached_tokens } => cached = cached_tokens,
        }
    }
    Ok(Driven {
        ttft: first.unwrap_or_default(),
        tokens,
        cached,
    })
}

pub fn run(l: &Loaded, args: &OfflineArgs, json: bool) -> anyhow::Result<()> {
    let vocab = l.model.config().vocab_size as u32;
    let mut rows = Vec::new();
    let e = engine(l, args, false)?;
    // Warm-up: page in the weights and size the buffers.
    drive(
        e.submit(req(tokens(0, args.prompt_tokens, vocab), 4))?,
        Instant::now(),
    )?;
    for &c in &args.concurrency {
        let start = Instant::now();
        let streams = (0..c)
            .map(|i| {
                e.submit(req(
                    tokens(100 + (c * 31 + i) as u64, args.prompt_tokens, vocab),
                    args.gen_tokens,
                ))
            })
            .collect::<Result<Vec<_>, _>>()?;
        let handles: Vec<_> = streams
            .into_iter()
            .map(|s| std::thread::spawn(move || drive(s, start)))
            .collect();
        let mut ttft = Vec::new();
        let mut out = 0;
        for h in handles {
            let d = h
                .join()
                .map_err(|_| anyhow::anyhow!("client thread panicked"))??;
            ttft.push(d.ttft.as_secs_f64());
            out += d.tokens;
        }
        let secs = start.elapsed().as_secs_f64();
        rows.push(serde_json::json!({
            "concurrency": c,
            "output_tokens": out,
            "seconds": secs,
            "output_tps": out as f64 / secs,
            "mean_ttft_s": ttft.iter().sum::<f64>() / ttft.len() as f64,
        }));
    }
    e.shutdown();

    let mut prefix = serde_json::Value::Null;
    if args.prefix_tokens > 0 {
        let e = engine(l, args, true)?;
        let shared = tokens(7, args.prefix_tokens, vocab);
        let with_suffix = |s: u64| {
            let mut p = shared.clone();
            p.extend(tokens(s, 16, vocab));
            p
        };
        let cold_start = Instant::now();
        let cold = drive(e.submit(req(with_suffix(1), 1))?, cold_start)?.ttft;
        let warm_start = Instant::now();
        let warm = drive(e.submit(req(with_suffix(2), 1))?, warm_start)?;
        e.shutdown();
        prefix = serde_json::json!({
            "prefix_tokens": args.prefix_tokens,
            "cold_ttft_s": cold.as_secs_f64(),
            "hit_ttft_s": warm.ttft.as_secs_f64(),
            "ratio": warm.ttft.as_secs_f64() / cold.as_secs_f64().max(1e-9),
            "hit_tokens": warm.cached,
        });
    }
    let report = serde_json::json!({
        "model": l.model.config().name,
        "prompt_tokens": args.prompt_tokens,
        "gen_tokens": args.gen_tokens,
        "runs": rows,
        "prefix_cache": prefix,
    });
    if json {
        println!("{report}");
        return Ok(());
    }
    println!(
        "offline engine benchmark: {} ({} prompt tokens, {} generated per request)",
        l.model.config().name,
        args.prompt_tokens,
        args.gen_tokens
    );
    println!("| concurrency | output tok/s | mean TTFT (s) | wall (s) |");
    println!("| ---: | ---: | ---: | ---: |");
    for r in report["runs"].as_array().context("runs")? {
        println!(
            "| {} | {:.1} | {:.3} | {:.2} |",
            r["concurrency"],
            r["output_tps"].as_f64().unwrap_or(0.0),
            r["mean_ttft_s"].as_f64().unwrap_or(0.0),
            r["seconds"].as_f64().unwrap_or(0.0)
        );
    }
    if !prefix.is_null() {
        println!(
            "prefix cache: TTFT with a {}-token shared prefix: cold {:.3}s, hit {:.3}s (ratio {:.3})",
            args.prefix_tokens,
            prefix["cold_ttft_s"].as_f64().unwrap_or(0.0),
            prefix["hit_ttft_s"].as_f64().unwrap_or(0.0),
            prefix["ratio"].as_f64().unwrap_or(0.0)
        );
    }
    Ok(())
}

fn req(prompt: Vec<u32>, n: usize) -> GenerateRequest {
    let mut r = GenerateRequest::new(prompt, n);
    r.ignore_eos = true;
    r
}
