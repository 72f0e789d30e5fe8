//! Public types of the scheduler: requests, configuration, step plans, errors.

use std::fmt;

use r1_model::Batch;

use crate::block_pool::{BlockError, BlockId, DEFAULT_BLOCK_SIZE};

/// The caller's id of a request (unique among live requests).
pub type RequestId = u64;

/// One generated sequence: a request with `n` choices has sequences `index` 0..n.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SeqId {
    pub request: RequestId,
    /// The choice index (OpenAI `choices[index]`).
    pub index: u32,
}

impl SeqId {
    pub fn new(request: RequestId, index: u32) -> Self {
        SeqId { request, index }
    }
}

impl fmt::Display for SeqId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}#{}", self.request, self.index)
    }
}

/// A generation request as the scheduler sees it (already tokenized).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Request {
    pub id: RequestId,
    pub prompt: Vec<u32>,
    /// Tokens to generate at most per sequence (≥ 1).
    pub max_new_tokens: usize,
    /// Higher runs first; equal priorities run in arrival order.
    pub priority: i32,
    /// Sequences sampled from the prompt (`n` in the OpenAI API); they share its KV blocks.
    pub n: usize,
    /// Requests with different salts never share prefix-cache blocks (tenant isolation).
    pub cache_salt: u64,
}

impl Request {
    pub fn new(id: RequestId, prompt: Vec<u32>, max_new_tokens: usize) -> Self {
        Request {
            id,
            prompt,
            max_new_tokens,
            priority: 0,
            n: 1,
            cache_salt: 0,
        }
    }
    pub fn with_priority(mut self, priority: i32) -> Self {
        self.priority = priority;
        self
    }
    pub fn with_n(mut self, n: usize) -> Self {
        self.n = n;
        self
    }
    pub fn with_cache_salt(mut self, salt: u64) -> Self {
        self.cache_salt = salt;
        self
    }
}

/// Scheduler settings. `num_blocks` comes from `--kv-cache-mem` (see
/// [`crate::block_pool::num_blocks_for_budget`]), `max_model_len` from the model's context.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SchedulerConfig {
    /// Tokens computed per step, all sequences together (`--max-batched-tokens`).
    pub max_batched_tokens: usize,
    /// Sequences running at once (`--max-num-seqs`).
    pub max_num_seqs: usize,
    /// Tokens per KV block.
    pub block_size: usize,
    /// Blocks in the KV cache.
    pub num_blocks: usize,
    /// Longest prompt + generation a request may ask for.
    pub max_model_len: usize,
    pub enable_prefix_caching: bool,
    /// Split long prompts across steps. When off, a prompt is computed in one step, which
    /// needs `max_batched_tokens >= max_model_len`.
    pub enable_chunked_prefill: bool,
    /// Most prompt tokens one sequence computes in one step (`None`: the budget decides).
    pub max_chunk_tokens: Option<usize>,
    /// Token budget of a step for the protected (latency-targeted) priorities, when
    /// [`Scheduler::set_step_limits_protecting`] names them (`None`, or less than
    /// `max_batched_tokens`: `max_batched_tokens`). Larger, a burst of their prompts starts
    /// in one step instead of one step after another: the burst's last first token then
    /// comes sooner, since each step also pays for every running decode.
    pub max_protected_tokens: Option<usize>,
    /// Identifies the model in prefix-cache keys.
    pub model_salt: u64,
}

impl Default for SchedulerConfig {
    fn default() -> Self {
        SchedulerConfig {
            max_batched_tokens: 2048,
            max_num_seqs: 64,
            block_size: DEFAULT_BLOCK_SIZE,
            num_blocks: 1024,
            max_model_len: 4096,
            enable_prefix_caching: true,
            enable_chunked_prefill: true,
            max_chunk_tokens: None,
            max_protected_tokens: None,
            model_salt: 0,
        }
    }
}

impl SchedulerConfig {
    pub fn validate(&self) -> Result<(), SchedError> {
        let bad = |m: String| Err(SchedError::Config(m));
        if self.block_size == 0 || self.num_blocks == 0 {
            return bad("block_size and num_blocks must be at least 1".into());
        }
        if self.num_blocks > BlockId::MAX as usize {
            return bad(format!("num_blocks {} is too large", self.num_blocks));
        }
        if self.max_num_seqs == 0 || self.max_model_len == 0 {
            return bad("max_num_seqs and max_model_len must be at least 1".into());
        }
        if self.max_batched_tokens < self.max_num_seqs {
            return bad(format!(
                "max_batched_tokens ({}) must be at least max_num_seqs ({}), or decodes could \
                 use the whole budget and starve prompts",
                self.max_batched_tokens, self.max_num_seqs
            ));
        }
        if !self.enable_chunked_prefill && self.max_batched_tokens < self.max_model_len {
            return bad(format!(
                "without chunked prefill, max_batched_tokens ({}) must be at least \
                 max_model_len ({})",
                self.max_batched_tokens, self.max_model_len
            ));
        }
        if let (false, Some(c)) = (self.enable_chunked_prefill, self.max_chunk_tokens) {
            if c < self.max_model_len {
                return bad(format!(
                    "without chunked prefill, max_chunk_tokens ({c}) must be at least \
                     max_model_len ({})",
                    self.max_model_len
                ));
            }
        }
        if self.max_chunk_tokens == Some(0) {
            return bad("max_chunk_tokens must be at least 1".into());
        }
        Ok(())
    }

    /// Tokens of KV the whole cache holds.
    pub fn cache_tokens(&self) -> usize {
        self.num_blocks.saturating_mul(self.block_size)
    }
}

/// Copy the whole of block `src` into block `dst` (copy-on-write of a shared partial block).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BlockCopy {
    pub src: BlockId,
    pub dst: BlockId,
}

/// One sequence's work in a step.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PlanItem {
    pub seq: SeqId,
    /// Tokens to compute: a prefill chunk, or the last sampled token for a decode.
    pub tokens: Vec<u32>,
    /// Position of `tokens[0]` (= tokens already in the KV cache).
    pub pos0: usize,
    /// The blocks holding positions `0..pos0 + tokens.len()`, in order.
    pub block_table: Vec<BlockId>,
    /// Sample from the logits of the last token: the chunk ends the prompt, or it is a decode.
    pub sample: bool,
    /// Sequences forked from this one at this step (`n > 1`): sample a token for each of
    /// them too, from the same logits row. They share this sequence's blocks.
    pub forks: Vec<SeqId>,
}

impl PlanItem {
    /// The sequences to sample a token for from this item's logits (none if `!sample`).
    pub fn sample_seqs(&self) -> impl Iterator<Item = SeqId> + '_ {
        let own = self.sample.then_some(self.seq);
        own.into_iter().chain(self.forks.iter().copied())
    }
}

/// Why admission stopped at `seq` in a step.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BlockedReason {
    /// No token budget left for it this step.
    TokenBudget,
    /// Not enough sequence slots, even after preempting every lower-priority sequence.
    SeqCap { needed: usize, obtainable: usize },
    /// Not enough KV blocks, even after preempting every lower-priority sequence.
    KvBlocks { needed: usize, obtainable: usize },
    /// It was preempted in this step (the cache is full); nothing after it is admitted.
    Preempted,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Blocked {
    pub seq: SeqId,
    pub reason: BlockedReason,
}

/// What one engine step does. Perform `copies` (in order) before the forward pass.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct StepPlan {
    pub items: Vec<PlanItem>,
    pub copies: Vec<BlockCopy>,
    /// Sequences preempted in this step (their blocks are free; they recompute later).
    pub preempted: Vec<SeqId>,
    /// Tokens computed this step (≤ `max_batched_tokens`, or the protected budget when
    /// protected priorities are set).
    pub num_tokens: usize,
    /// The waiting sequence that could not be admitted, if any (everything after it in
    /// priority order waits too).
    pub blocked: Option<Blocked>,
}

impl StepPlan {
    /// Nothing to compute.
    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }

    /// Items that want logits, in the order the forward returns their rows.
    pub fn sample_items(&self) -> impl Iterator<Item = &PlanItem> {
        self.items.iter().filter(|i| i.sample)
    }

    /// The flattened batch for `Model::forward` (logit rows in `sample_items` order).
    pub fn to_batch(&self) -> Batch {
        let mut b = Batch::default();
        for it in &self.items {
            b.push(&it.tokens, it.pos0, it.block_table.clone(), it.sample);
        }
        b
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FinishReason {
    /// A stop condition the caller detected (EOS, stop string, stop token).
    Stop,
    /// `max_new_tokens` reached.
    Length,
    /// Cancelled (client gone, or aborted).
    Cancelled,
}

/// Result of [`super::Scheduler::append_token`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Appended {
    /// The sequence continues.
    Running,
    /// The sequence ended (its blocks are released).
    Finished(FinishReason),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SeqStatus {
    Waiting,
    Running,
}

/// KV block occupancy.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct BlockUsage {
    pub total: usize,
    /// Allocatable now (free + cached-but-unused).
    pub free: usize,
    /// Referenced by sequences.
    pub used: usize,
    /// Unused but kept by the prefix cache (evictable).
    pub cached_free: usize,
    /// `used / total`.
    pub usage: f64,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SchedError {
    #[error("the prompt is empty")]
    EmptyPrompt { id: RequestId },
    #[error("max_tokens must be at least 1")]
    ZeroMaxTokens { id: RequestId },
    #[error("n must be at least 1")]
    ZeroN { id: RequestId },
    #[error("n = {n} exceeds the {max} sequences the server runs at once")]
    TooManyChoices { id: RequestId, n: usize, max: usize },
    #[error(
        "prompt ({prompt} tokens) + max_tokens ({max_new}) = {total} tokens \
         exceeds the model's maximum context length of {max_model_len} tokens"
    )]
    ExceedsModelLen {
        id: RequestId,
        prompt: usize,
        max_new: usize,
        total: usize,
        max_model_len: usize,
    },
    #[error(
        "prompt ({prompt} tokens) + max_tokens ({max_new}) = {total} tokens \
         cannot fit the whole KV cache of {capacity} tokens ({blocks} blocks of {block_size}); \
         lower max_tokens or raise --kv-cache-mem"
    )]
    ExceedsCache {
        id: RequestId,
        prompt: usize,
        max_new: usize,
        total: usize,
        capacity: usize,
        blocks: usize,
        block_size: usize,
    },
    #[error("request {0} is already queued or running")]
    DuplicateRequest(RequestId),
    #[error("unknown sequence {0} (finished, cancelled or never added)")]
    UnknownSeq(SeqId),
    #[error("unknown request {0} (finished, cancelled or never added)")]
    UnknownRequest(RequestId),
    #[error("sequence {0} is not waiting for a sampled token")]
    NotAwaitingToken(SeqId),
    #[error("invalid scheduler config: {0}")]
    Config(String),
    #[error(transparent)]
    Block(#[from] BlockError),
    #[error("scheduler bug: {0}")]
    Internal(String),
}
