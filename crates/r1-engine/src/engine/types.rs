//! What crosses between the HTTP side and the engine thread: the request, its events, the
//! errors, the settings and the stats snapshot.

use std::time::Duration;

use crate::block_pool::KvCacheMem;
use crate::constraint::Constraint;
use crate::engine_metrics::EngineMetrics;
use crate::sampler::SamplingParams;
use crate::scheduler::SchedError;

/// Why the engine refused, or could not finish, a request. It crosses into the HTTP layer as
/// this type (from [`EngineHandle::submit`] and in [`EngineEvent::Error`]); r1-server maps each
/// variant to a status in one place, so no caller reads the message to classify it.
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
pub enum EngineError {
    /// The scheduler refused the request (longer than the context or the cache, too many
    /// choices, ...). Its message names no request id: it is meant for the client.
    #[error("{0}")]
    Rejected(#[from] SchedError),
    /// The request is malformed (sampling parameters, a token outside the vocabulary, `n` or
    /// `max_tokens` of 0).
    #[error("invalid request: {0}")]
    Invalid(String),
    /// The engine thread is gone.
    #[error("the engine has stopped")]
    Stopped,
    /// The server stopped the engine while the request was queued or running.
    #[error("the server is shutting down")]
    ShuttingDown,
    #[error("KV cache: {0}")]
    Config(String),
}

/// Engine settings (the serving flags).
#[derive(Clone, Debug)]
pub struct EngineConfig {
    pub kv_cache_mem: KvCacheMem,
    pub block_size: usize,
    pub max_batched_tokens: usize,
    pub max_num_seqs: usize,
    /// Context limit; `None` = the model's.
    pub max_model_len: Option<usize>,
    pub enable_prefix_caching: bool,
    /// Largest prefill chunk of one sequence per step (`None` = the token budget).
    pub max_chunk_tokens: Option<usize>,
    /// Step token budget for the classes with a target ITL (`None` = `max_batched_tokens`);
    /// see [`SchedulerConfig::max_protected_tokens`].
    pub max_protected_tokens: Option<usize>,
}

impl Default for EngineConfig {
    fn default() -> Self {
        EngineConfig {
            kv_cache_mem: KvCacheMem::Bytes(1 << 30),
            block_size: 16,
            max_batched_tokens: 2048,
            max_num_seqs: 64,
            max_model_len: None,
            enable_prefix_caching: true,
            max_chunk_tokens: None,
            max_protected_tokens: None,
        }
    }
}

/// One generation request as the engine sees it: token ids in, token events out.
#[derive(Clone, Debug)]
pub struct GenerateRequest {
    pub prompt: Vec<u32>,
    pub params: SamplingParams,
    pub max_tokens: usize,
    /// Extra stop token ids (the model's end-of-generation ids apply unless `ignore_eos`).
    pub stop_ids: Vec<u32>,
    pub stop_strings: Vec<String>,
    pub ignore_eos: bool,
    pub n: usize,
    pub priority: i32,
    /// `Some(k)`: report the chosen token's logprob and the top `k`.
    pub logprobs: Option<usize>,
    /// Include special tokens in the text.
    pub skip_special_tokens: bool,
    /// Adaptive batching: the inter-token latency this request wants; while it runs, the
    /// engine shrinks the step's token budget and batch to hold it (`None`: no target).
    pub target_itl: Option<Duration>,
    /// Constrained decoding (JSON schema, regex, choice, grammar): every sampled token must
    /// keep the output inside it. `None`: free.
    pub constraint: Option<Constraint>,
}

impl GenerateRequest {
    pub fn new(prompt: Vec<u32>, max_tokens: usize) -> Self {
        GenerateRequest {
            prompt,
            params: SamplingParams::greedy(),
            max_tokens,
            stop_ids: Vec::new(),
            stop_strings: Vec::new(),
            ignore_eos: false,
            n: 1,
            priority: 0,
            logprobs: None,
            skip_special_tokens: true,
            target_itl: None,
            constraint: None,
        }
    }
}

#[derive(Clone, Debug, PartialEq)]
pub struct TokenLogprob {
    pub token: u32,
    pub logprob: f32,
    pub top: Vec<(u32, f32)>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Finish {
    Stop,
    Length,
    Cancelled,
}

/// What a request's stream carries. Every choice ends with exactly one `Finished`.
#[derive(Clone, Debug, PartialEq)]
pub enum EngineEvent {
    /// The prompt was admitted; `cached_tokens` of it came from the prefix cache.
    Admitted {
        cached_tokens: usize,
    },
    Token {
        index: u32,
        token: u32,
        text: String,
        logprob: Option<TokenLogprob>,
    },
    Finished {
        index: u32,
        reason: Finish,
        /// Text released at the end (held back for a stop string that did not complete).
        text: String,
        completion_tokens: usize,
    },
    Error(EngineError),
}

/// A snapshot of the engine's state, refreshed every step.
#[derive(Clone, Debug, Default)]
pub struct EngineStats {
    pub running: usize,
    pub waiting: usize,
    pub kv_blocks_total: usize,
    pub kv_blocks_used: usize,
    pub kv_usage: f64,
    pub prefix_query_tokens: u64,
    pub prefix_hit_tokens: u64,
    pub prompt_tokens: u64,
    pub generation_tokens: u64,
    pub steps: u64,
    pub preemptions: u64,
    /// Timings, outcomes and per-priority load for monitoring.
    pub metrics: EngineMetrics,
    /// Adaptive batching: the token budget and running-sequence cap of the next step.
    pub step_token_budget: usize,
    pub step_seq_limit: usize,
    /// Duration of the last forward pass.
    pub last_step_ms: f64,
    /// Constrained decoding: grammar masks computed, the worker time they took (alongside
    /// the forward passes), and how long the engine waited for them after a forward pass
    /// had finished (the part that was not hidden).
    pub constraint_masks: u64,
    pub constraint_mask_secs: f64,
    pub constraint_wait_secs: f64,
}
