//! `r1serve run` and `r1serve chat`: generation on one session, streamed to the terminal.

use std::io::{BufRead, Write};
use std::time::Instant;

use anyhow::Context;
use r1_engine::chat_template::{ChatMessage, ChatTemplate};
use r1_engine::detokenizer::IncrementalDecoder;
use r1_engine::sampler::{Sampler, SamplingParams};
use r1_engine::session::Session;

use crate::load::{load, Loaded, ModelArgs};

#[derive(clap::Args, Clone, Debug)]
pub struct SamplingArgs {
    /// Maximum tokens to generate.
    #[arg(long, short = 'n', default_value_t = 512)]
    pub max_tokens: usize,
    /// 0 = greedy.
    #[arg(long, default_value_t = 0.7)]
    pub temperature: f32,
    #[arg(long, default_value_t = 0.95)]
    pub top_p: f32,
    /// 0 = off.
    #[arg(long, default_value_t = 0)]
    pub top_k: usize,
    #[arg(long, default_value_t = 0.0)]
    pub min_p: f32,
    #[arg(long, default_value_t = 1.0)]
    pub repetition_penalty: f32,
    /// Seed for reproducible sampling.
    #[arg(long)]
    pub seed: Option<u64>,
    /// Context size to reserve (default: the model's, capped at 8192).
    #[arg(long)]
    pub ctx_size: Option<usize>,
}

impl SamplingArgs {
    fn params(&self) -> anyhow::Result<SamplingParams> {
        let p = SamplingParams {
            temperature: self.temperature,
            top_k: self.top_k,
            top_p: self.top_p,
            min_p: self.min_p,
            repetition_penalty: self.repetition_penalty,
            seed: self.seed,
            ..Default::default()
        };
        p.validate().map_err(anyhow::Error::msg)?;
        Ok(p)
    }
}

#[derive(clap::Args)]
pub struct RunArgs {
    #[command(flatten)]
    pub model: ModelArgs,
    #[command(flatten)]
    pub sampling: SamplingArgs,
    /// Complete the prompt as plain text instead of wrapping it in the chat template.
    #[arg(long)]
    pub raw: bool,
    /// System prompt (chat template mode).
    #[arg(long)]
    pub system: Option<String>,
    /// The prompt.
    pub prompt: String,
}

#[derive(clap::Args)]
pub struct ChatArgs {
    #[command(flatten)]
    pub model: ModelArgs,
    #[command(flatten)]
    pub sampling: SamplingArgs,
    /// System prompt.
    #[arg(long)]
    pub system: Option<String>,
}

fn ctx_size(l: &Loaded, s: &SamplingArgs) -> usize {
    s.ctx_size
        .unwrap_or(8192)
        .min(l.model.config().context_length)
}

fn template(l: &Loaded) -> anyhow::Result<ChatTemplate> {
    let src = l
        .tokenizer
        .chat_template()
        .context("the model has no chat template (use --raw)")?;
    Ok(ChatTemplate::new(
        src,
        &l.tokenizer.bos_token(),
        &l.tokenizer.eos_token(),
    )?)
}

struct Stats {
    prompt_tokens: usize,
    cached_tokens: usize,
    generated: usize,
    prefill_secs: f64,
    decode_secs: f64,
}

/// Prefill `prompt` (reusing the session's cached prefix), then sample and stream up to
/// `max_tokens` tokens to stdout. Returns the generated text.
fn generate(
    l: &Loaded,
    session: &mut Session,
    prompt: &[u32],
    params: &SamplingParams,
    max_tokens: usize,
) -> anyhow::Result<(String, Stats)> {
    if prompt.len() >= session.capacity() {
        anyhow::bail!(
            "the prompt has {} tokens but the context holds {} (raise --ctx-size)",
            prompt.len(),
            session.capacity()
        );
    }
    let t0 = Instant::now();
    let cached = session.reuse_prefix(prompt);
    let mut logits = session.feed(&prompt[cached..], 512)?;
    let prefill_secs = t0.elapsed().as_secs_f64();
    let mut sampler = Sampler::new(params.clone());
    let stops = l.tokenizer.stop_ids();
    let mut decoder = IncrementalDecoder::new(&l.tokenizer);
    let mut text = String::new();
    let mut generated = Vec::new();
    let mut out = std::io::stdout().lock();
    let t1 = Instant::now();
    let room = session.capacity() - prompt.len();
    for _ in 0..max_tokens.min(room) {
        sampler.adjust(&mut logits, session.tokens(), &generated);
        let tok = sampler.pick(&logits);
        if stops.contains(&tok) {
            break;
        }
        generated.push(tok);
        let delta = decoder.push(tok);
        out.write_all(delta.as_bytes())?;
        out.flush()?;
        text.push_str(&delta);
        if generated.len() == max_tokens.min(room) {
            break;
        }
        logits = session.feed(&[tok], 1)?;
    }
    let rest = decoder.finish();
    out.write_all(rest.as_bytes())?;
    text.push_str(&rest);
    out.flush()?;
    Ok((
        text,
        Stats {
            prompt_tokens: prompt.len(),
            cached_tokens: cached,
            generated: generated.len(),
            prefill_secs,
            decode_secs: t1.elapsed().as_secs_f64(),
        },
    ))
}

fn report(s: &Stats) {
    eprintln!(
        "\n[prompt {} tokens ({} cached) in {:.2}s, {:.1} t/s | generated {} tokens in {:.2}s, {:.1} t/s]",
        s.prompt_tokens,
        s.cached_tokens,
        s.prefill_secs,
        (s.prompt_tokens - s.cached_tokens) as f64 / s.prefill_secs.max(1e-9),
        s.generated,
        s.decode_secs,
        s.generated as f64 / s.decode_secs.max(1e-9)
    );
}

pub fn run(args: &RunArgs) -> anyhow::Result<()> {
    let params = args.sampling.params()?;
    let l = load(&args.model)?;
    let text = if args.raw {
        args.prompt.clone()
    } else {
        let mut msgs = Vec::new();
        if let Some(s) = &args.system {
            msgs.push(ChatMessage::new("system", s));
        }
        msgs.push(ChatMessage::new("user", &args.prompt));
        template(&l)?.render(&msgs, true)?
    };
    // Raw prompts get the model's BOS/EOS policy; templated text already carries its specials.
    let prompt = l.tokenizer.encode(&text, args.raw, !args.raw)?;
    let mut session = Session::new(l.model.as_ref(), ctx_size(&l, &args.sampling));
    let (_, stats) = generate(&l, &mut session, &prompt, &params, args.sampling.max_tokens)?;
    println!();
    report(&stats);
    Ok(())
}

pub fn chat(args: &ChatArgs) -> anyhow::Result<()> {
    let params = args.sampling.params()?;
    let l = load(&args.model)?;
    let tpl = template(&l)?;
    let mut session = Session::new(l.model.as_ref(), ctx_size(&l, &args.sampling));
    let mut msgs = Vec::new();
    if let Some(s) = &args.system {
        msgs.push(ChatMessage::new("system", s));
    }
    eprintln!(
        "chatting with {} — type a message; /reset starts over, /exit or Ctrl-D quits",
        l.model.config().name
    );
    let stdin = std::io::stdin();
    let mut lines = stdin.lock().lines();
    loop {
        eprint!("> ");
        std::io::stderr().flush()?;
        let Some(line) = lines.next() else { break };
        let line = line?;
        let line = line.trim();
        match line {
            "" => continue,
            "/exit" | "/quit" => break,
            "/reset" => {
                msgs.retain(|m: &ChatMessage| m.role == "system");
                session.truncate(0);
                eprintln!("(conversation cleared)");
                continue;
            }
            _ => {}
        }
        msgs.push(ChatMessage::new("user", line));
        let text = tpl.render(&msgs, true)?;
        let prompt = l.tokenizer.encode(&text, false, true)?;
        match generate(&l, &mut session, &prompt, &params, args.sampling.max_tokens) {
            Ok((answer, stats)) => {
                println!();
                report(&stats);
                msgs.push(ChatMessage::new("assistant", answer.trim()));
            }
            Err(e) => {
                eprintln!("error: {e:#}");
                msgs.pop();
            }
        }
    }
    Ok(())
}
