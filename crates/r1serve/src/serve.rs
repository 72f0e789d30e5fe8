//! `r1serve serve`: the OpenAI/DeepSeek-compatible HTTP API (crate `r1-server`) over the
//! batching engine.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use r1_engine::block_pool::{parse_kv_cache_mem, KvCacheMem};
use r1_engine::engine::{spawn_engine, EngineConfig};
use r1_engine::tokenizer::Tokenizer;
use r1_server::{LoadedModel, ReasoningMode, ServerConfig};

use crate::load::{load, ModelArgs};
use crate::observability::ScalingArgs;

#[derive(clap::Args, Debug)]
pub struct ServeArgs {
    #[command(flatten)]
    pub model: ModelArgs,
    /// Address to listen on (loopback by default; 0.0.0.0 for every interface).
    #[arg(long, default_value = "127.0.0.1")]
    pub host: String,
    /// Port to listen on (0 = any free port; the address is printed).
    #[arg(long, default_value_t = 8080)]
    pub port: u16,
    /// The model name clients send (default: the model file's stem).
    #[arg(long)]
    pub served_model_name: Option<String>,
    /// KV-cache budget: bytes ("2GiB", "512MiB") or a fraction of RAM ("0.3", "30%").
    #[arg(long, default_value = "1GiB", value_parser = parse_kv)]
    pub kv_cache_mem: KvCacheMem,
    /// Most sequences decoded together.
    #[arg(long, default_value_t = 64)]
    pub max_num_seqs: usize,
    /// Token budget of one engine step (prompt chunks plus decodes).
    #[arg(long, default_value_t = 2048)]
    pub max_batched_tokens: usize,
    /// Token budget of a step for the prompts of classes with a `--target-itl` (default:
    /// --max-batched-tokens). Larger, a burst of their prompts starts in one step.
    #[arg(long)]
    pub protected_batched_tokens: Option<usize>,
    /// Context limit per request (default: the model's).
    #[arg(long)]
    pub max_model_len: Option<usize>,
    /// Turn off reuse of cached prompt prefixes.
    #[arg(long)]
    pub no_prefix_cache: bool,
    /// Split `<think>…</think>` into `reasoning_content`: auto (when the chat template uses
    /// <think>), deepseek-r1, or none.
    #[arg(long, default_value = "auto")]
    pub reasoning_parser: ReasoningMode,
    /// The format tool calls are parsed in: deepseek_v3, deepseek_v31, hermes or llama3_json
    /// (default: picked from the chat template).
    #[arg(long)]
    pub tool_call_parser: Option<r1_server::tools::ToolParserKind>,
    /// A Jinja chat template file to use instead of the model's own.
    #[arg(long)]
    pub chat_template: Option<PathBuf>,
    /// Seconds in-flight requests may run after SIGTERM/SIGINT before they are cut.
    #[arg(long, default_value_t = 30.0)]
    pub drain_timeout: f64,
    /// Seconds of silence after which a stream gets a `: keep-alive` comment.
    #[arg(long, default_value_t = 5.0)]
    pub keep_alive_interval: f64,
    /// Also export another server's metric names: `vllm` adds vllm:num_requests_waiting,
    /// vllm:num_requests_running and vllm:kv_cache_usage_perc (for the Gateway API Inference
    /// Extension's endpoint picker and llm-d).
    #[arg(long, default_value = "none")]
    pub metrics_compat: r1_server::metrics::MetricsCompat,
    /// Do not serve the web UI (chat at `/`, dashboard at `/dashboard`).
    #[arg(long)]
    pub no_webui: bool,
    #[command(flatten)]
    pub scaling: ScalingArgs,
    #[command(flatten)]
    pub overload: Box<crate::serve_overload::OverloadArgs>,
    #[command(flatten)]
    pub security: crate::serve_security::SecurityArgs,
}

fn parse_kv(s: &str) -> Result<KvCacheMem, String> {
    parse_kv_cache_mem(s).map_err(|e| e.to_string())
}

fn seconds(name: &str, v: f64) -> anyhow::Result<Duration> {
    Duration::try_from_secs_f64(v).map_err(|_| anyhow::anyhow!("--{name} {v}: not a duration"))
}

pub fn run(args: &ServeArgs) -> anyhow::Result<()> {
    let path = &args.model.model;
    if !path.is_file() && !path.is_dir() {
        anyhow::bail!(
            "{}: no such model file or Hugging Face directory (fetch the test models with scripts/fetch-models.sh, or `r1serve pull`)",
            path.display()
        );
    }
    let chat_template = match &args.chat_template {
        Some(p) => Some(
            std::fs::read_to_string(p)
                .with_context(|| format!("reading the chat template {}", p.display()))?,
        ),
        None => None,
    };
    let served_model_name = args
        .served_model_name
        .clone()
        .unwrap_or_else(|| default_model_name(path));
    let config = ServerConfig {
        host: args.host.clone(),
        port: args.port,
        served_model_name,
        reasoning: args.reasoning_parser,
        tool_call_parser: args.tool_call_parser,
        drain_timeout: seconds("drain-timeout", args.drain_timeout)?,
        keep_alive_interval: seconds("keep-alive-interval", args.keep_alive_interval)?
            .max(Duration::from_millis(10)),
        chat_template,
        scaling: args.scaling.config()?,
        overload: args.overload.config()?,
        security: args.security.config()?,
        metrics_compat: args.metrics_compat,
        webui: !args.no_webui,
    };
    let engine_cfg = EngineConfig {
        kv_cache_mem: args.kv_cache_mem,
        max_batched_tokens: args.max_batched_tokens,
        max_num_seqs: args.max_num_seqs,
        max_protected_tokens: args.protected_batched_tokens,
        max_model_len: args.max_model_len,
        enable_prefix_caching: !args.no_prefix_cache,
        ..Default::default()
    };
    let model_args = args.model.clone();
    let loader = move || -> Result<LoadedModel, String> {
        let l = load(&model_args).map_err(|e| format!("{e:#}"))?;
        let tokenizer: Arc<Tokenizer> = l.tokenizer;
        let block_size = engine_cfg.block_size;
        let (engine, thread) = spawn_engine(l.model, tokenizer.clone(), engine_cfg)
            .map_err(|e| format!("starting the engine: {e}"))?;
        Ok(LoadedModel {
            engine,
            engine_thread: Some(thread),
            tokenizer,
            block_size,
        })
    };
    r1_server::run_blocking(config, loader)?;
    Ok(())
}

/// The model's API name when `--served-model-name` is not given: the file name without
/// `.gguf`, and for a split model without the `-00001-of-0000N` part suffix (every part
/// names the same model).
fn default_model_name(path: &std::path::Path) -> String {
    let file = path
        .file_name()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default();
    if let Some((prefix, _, _)) = r1_model::gguf::split::parse_split_name(&file) {
        return prefix.to_string();
    }
    path.file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_else(|| "model".into())
}

#[cfg(test)]
mod tests {
    use super::default_model_name;
    use std::path::Path;

    #[test]
    fn split_models_are_named_without_the_part_suffix() {
        let name = |p: &str| default_model_name(Path::new(p));
        assert_eq!(
            name("/m/DeepSeek-R1-Q4_K_M-00001-of-00009.gguf"),
            "DeepSeek-R1-Q4_K_M"
        );
        assert_eq!(name("models/qwen05.gguf"), "qwen05");
    }
}
