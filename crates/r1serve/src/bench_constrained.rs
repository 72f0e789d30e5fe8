//! `r1serve bench --constrained` / `--json-schema FILE`: the cost of grammar-constrained
//! decoding. The same prompt is decoded through the engine free and under a JSON schema, for
//! the same number of tokens (`-n`, with EOS ignored; the built-in schema asks for at least
//! 64 records, so no grammar can end the output early), alternating the two `-r` times; the
//! figure is decode tokens per second of each (first token to last, prefill left out) and
//! their ratio, and where the mask time went (computed alongside the forward pass, and the
//! part the engine still waited for).

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::Context;
use r1_engine::block_pool::KvCacheMem;
use r1_engine::constraint::{ConstraintCompiler, ConstraintSpec, Grammar};
use r1_engine::engine::{
    spawn_engine, EngineConfig, EngineEvent, EngineHandle, Finish, GenerateRequest,
};

use crate::load::Loaded;

/// An array of at least 64 records: long output, every step inside the grammar (keys
/// forced, strings, bounded integers, enums, booleans).
fn builtin_schema() -> serde_json::Value {
    serde_json::json!({
        "type": "array",
        "minItems": 64,
        "items": {
            "type": "object",
            "properties": {
                "id": {"type": "integer", "minimum": 1, "maximum": 100000},
                "name": {"type": "string", "maxLength": 32},
                "email": {"type": "string", "pattern": "^[a-z]{1,12}@[a-z]{1,12}\\.com$"},
                "role": {"enum": ["admin", "editor", "viewer"]},
                "active": {"type": "boolean"}
            },
            "required": ["id", "name", "email", "role", "active"],
            "additionalProperties": false
        }
    })
}

const PROMPT: &str = "<|im_start|>user\nWrite a JSON array of 64 user records, each with id, \
    name, email, role and active.<|im_end|>\n<|im_start|>assistant\n";

/// One timed decode: tokens after the first, and the time they took.
struct Run {
    tokens: usize,
    decode: Duration,
    finish: Option<Finish>,
}

fn decode(e: &EngineHandle, req: GenerateRequest) -> anyhow::Result<Run> {
    let mut s = e.submit(req)?;
    let mut first = None;
    let mut last = Instant::now();
    let mut tokens = 0usize;
    let mut finish = None;
    while let Some(ev) = s.blocking_recv() {
        match ev {
            EngineEvent::Token { .. } => {
                last = Instant::now();
                first.get_or_insert(last);
                tokens += 1;
            }
            EngineEvent::Finished { reason, .. } => {
                finish = Some(reason);
                break;
            }
            EngineEvent::Error(err) => anyhow::bail!("engine error: {err}"),
            EngineEvent::Admitted { .. } => {}
        }
    }
    let first = first.context("no token was generated")?;
    Ok(Run {
        tokens: tokens.saturating_sub(1),
        decode: last - first,
        finish,
    })
}

pub fn run(
    l: &Loaded,
    schema_file: Option<&Path>,
    n_gen: usize,
    reps: usize,
    json: bool,
) -> anyhow::Result<()> {
    let schema = match schema_file {
        Some(p) => {
            let text = std::fs::read_to_string(p)
                .with_context(|| format!("reading the JSON schema {}", p.display()))?;
            serde_json::from_str(&text)
                .with_context(|| format!("{}: not valid JSON", p.display()))?
        }
        None => builtin_schema(),
    };
    let n_gen = n_gen.max(2);
    let compiler = ConstraintCompiler::new(&l.tokenizer)?;
    let t = Instant::now();
    let constraint = compiler
        .compile(&ConstraintSpec {
            grammar: Grammar::JsonSchema(schema),
            after: None,
        })
        .map_err(|e| match schema_file {
            Some(p) => anyhow::anyhow!("{}: {e}", p.display()),
            None => anyhow::anyhow!("{e}"),
        })?;
    let compile = t.elapsed();
    let prompt = l.tokenizer.encode(PROMPT, false, true)?;
    let e = spawn_engine(
        l.model.clone(),
        l.tokenizer.clone(),
        EngineConfig {
            kv_cache_mem: KvCacheMem::Bytes(256 << 20),
            ..Default::default()
        },
    )?
    .0;
    let req = |constrained: bool| {
        let mut r = GenerateRequest::new(prompt.clone(), n_gen);
        r.ignore_eos = true;
        if constrained {
            r.constraint = Some(constraint.clone());
        }
        r
    };
    // Warm-up: weights paged in, buffers sized, the grammar's lexer states built once.
    decode(&e, req(false))?;
    decode(&e, req(true))?;
    let before = e.stats();
    let (mut free, mut cons) = (Vec::new(), Vec::new());
    for _ in 0..reps.max(1) {
        free.push(decode(&e, req(false))?);
        cons.push(decode(&e, req(true))?);
    }
    let after = e.stats();
    e.shutdown();
    if let Some(r) = cons.iter().find(|r| r.finish != Some(Finish::Length)) {
        anyhow::bail!(
            "the schema let the output end after {} tokens, before -n {n_gen}: use a schema \
             whose output is longer (e.g. an array with minItems), so both runs decode as many \
             tokens",
            r.tokens + 1
        );
    }
    let tps = |v: &[Run]| {
        let best = v
            .iter()
            .map(|r| r.tokens as f64 / r.decode.as_secs_f64())
            .fold(0.0, f64::max);
        let toks: usize = v.iter().map(|r| r.tokens).sum();
        let secs: f64 = v.iter().map(|r| r.decode.as_secs_f64()).sum();
        (best, toks as f64 / secs)
    };
    let (free_best, free_mean) = tps(&free);
    let (cons_best, cons_mean) = tps(&cons);
    let masks = (after.constraint_masks - before.constraint_masks).max(1) as f64;
    let mask_us = (after.constraint_mask_secs - before.constraint_mask_secs) * 1e6 / masks;
    let wait_us = (after.constraint_wait_secs - before.constraint_wait_secs) * 1e6 / masks;
    let slowdown = 1.0 - cons_mean / free_mean;
    let name = l.model.config().name.clone();
    if json {
        println!(
            "{}",
            serde_json::json!({
                "model": name,
                "schema": schema_file.map(|p| p.display().to_string()),
                "tokens": n_gen,
                "reps": reps.max(1),
                "free_tps": free_mean,
                "constrained_tps": cons_mean,
                "free_tps_best": free_best,
                "constrained_tps_best": cons_best,
                "ratio": cons_mean / free_mean,
                "slowdown": slowdown,
                "mask_us_per_token": mask_us,
                "mask_wait_us_per_token": wait_us,
                "token_index_ms": compiler.build_time().as_secs_f64() * 1e3,
                "compile_ms": compile.as_secs_f64() * 1e3,
            })
        );
        return Ok(());
    }
    println!(
        "constrained decoding: {name}, {n_gen} tokens per run, {} runs each, schema {}",
        reps.max(1),
        schema_file.map_or("built-in (64+ records)".to_string(), |p| p
            .display()
            .to_string())
    );
    println!("| decode | t/s (mean) | t/s (best) |");
    println!("| --- | ---: | ---: |");
    println!("| free | {free_mean:.2} | {free_best:.2} |");
    println!("| JSON schema | {cons_mean:.2} | {cons_best:.2} |");
    println!(
        "constrained/free: {:.3} ({:+.1}% per token); mask {mask_us:.0} us per token computed \
         alongside the forward pass, {wait_us:.0} us of it waited for",
        cons_mean / free_mean,
        -slowdown * 100.0
    );
    println!(
        "token index built in {:.0} ms (once per model); schema compiled in {:.1} ms",
        compiler.build_time().as_secs_f64() * 1e3,
        compile.as_secs_f64() * 1e3
    );
    Ok(())
}
