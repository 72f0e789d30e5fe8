//! The continuous-batching scheduler (vLLM v1 style): one token budget per step shared by
//! decodes and prefill chunks, paged KV blocks with prefix caching, priorities, preemption by
//! recompute, and `n > 1` forks that share the prompt's blocks.
//!
//! It is pure bookkeeping: no tensors. The engine loop drives it:
//!
//! ```text
//! loop {
//!     for msg in channel.try_iter() {            // between steps: arrivals, disconnects
//!         match msg {
//!             Add(req) => if let Err(e) = sched.add(req) { reply 400 with e },
//!             Cancel(id) => { let _ = sched.cancel_request(id); }
//!         }
//!     }
//!     let plan = sched.schedule()?;
//!     if plan.is_empty() { block on the channel; continue }
//!     for c in &plan.copies { kv.copy_block(c.src, c.dst) }      // in order, before forward
//!     let logits = match model.forward(&plan.to_batch(), &mut kv) {
//!         Ok(l) => l,
//!         Err(e) => { sched.step_failed()?; report e; continue }
//!     };
//!     for (row, item) in plan.sample_items().enumerate() {
//!         for seq in item.sample_seqs() {                          // item.seq + its forks
//!             let tok = sampler[seq].sample(logits.row(row));
//!             if sched.append_token(seq, tok)? == Appended::Running && stops(seq, tok) {
//!                 sched.finish(seq, FinishReason::Stop)?;
//!             }
//!         }
//!     }
//! }
//! ```
//!
//! Ordering: every step walks the running and waiting sequences together in priority order
//! (higher `priority` first, then arrival). Each running decode has its token reserved
//! before any prefill chunk is sized, so decodes never wait for the budget; prefill chunks
//! (continued or newly admitted) take what is left, so the oldest prompt of the highest
//! priority advances every step. When blocks run out, the lowest-priority, newest running
//! sequence is preempted (its blocks freed, its prompt and generated tokens recomputed later,
//! usually from the prefix cache); a waiting request may preempt only strictly lower-priority
//! sequences, and only when that makes it fit. Admission stops at the first waiting request
//! that does not fit, so a lower priority never overtakes a higher one.
//!
//! Aging: strict priority alone lets a steady stream of higher-priority arrivals preempt a
//! low-priority sequence again and again, so that it never finishes (a soak saw one wait
//! more than 180 s). A sequence preempted [`AGING_PREEMPTIONS`] times is therefore scheduled
//! from then on at the highest priority present at that moment: it keeps its earlier
//! arrival, so it goes before newer requests of that priority, and it is no longer a victim
//! for them (only strictly lower priorities are). [`Scheduler::priority`] still reports the
//! request's own priority.

mod limits;
mod step;
pub mod types;

#[cfg(test)]
mod tests;

use std::cmp::Reverse;
use std::collections::{BTreeSet, HashMap};

pub use types::*;

use crate::block_pool::{BlockId, BlockPool};
use crate::prefix_cache::{BlockHash, PrefixCache, PrefixCacheStats};

/// Order of sequences: higher priority first, then earlier arrival, then choice index.
type Key = (Reverse<i32>, u64, SeqId);

/// Preemptions after which a sequence is scheduled at the highest priority present (see
/// "Aging" in the module docs).
pub const AGING_PREEMPTIONS: u32 = 3;

#[derive(Clone, Debug)]
struct Seq {
    id: SeqId,
    /// The priority it is scheduled at: the request's, raised by aging.
    priority: i32,
    /// The request's own priority.
    class_priority: i32,
    arrival: u64,
    prompt_len: usize,
    max_new_tokens: usize,
    /// Prompt followed by the generated tokens.
    tokens: Vec<u32>,
    root: BlockHash,
    blocks: Vec<BlockId>,
    /// Prefix-cache keys of the first `hashes.len()` blocks (registered or hit).
    hashes: Vec<BlockHash>,
    /// Tokens whose KV is written (or being written by the step in flight).
    num_computed: usize,
    /// `tokens.len()` at admission: the prefill ends there, decoding follows.
    prefill_target: usize,
    /// Scheduled with `sample`; the engine owes it a token.
    awaiting_sample: bool,
    /// Choice indices still to fork from this sequence when its prompt is done.
    pending_forks: Vec<u32>,
    /// Prompt tokens served from the prefix cache at the first admission.
    cached_tokens: Option<usize>,
    running: bool,
    num_preemptions: u32,
}

impl Seq {
    fn key(&self) -> Key {
        (Reverse(self.priority), self.arrival, self.id)
    }
    /// Sequence slots it occupies (its pending forks included).
    fn slots(&self) -> usize {
        1 + self.pending_forks.len()
    }
    fn is_decode(&self) -> bool {
        self.num_computed >= self.prefill_target
    }
    fn generated(&self) -> &[u32] {
        &self.tokens[self.prompt_len.min(self.tokens.len())..]
    }
}

pub struct Scheduler {
    cfg: SchedulerConfig,
    pool: BlockPool,
    cache: PrefixCache,
    seqs: HashMap<SeqId, Seq>,
    waiting: BTreeSet<Key>,
    running: BTreeSet<Key>,
    /// Slots of the running sequences (pending forks included), ≤ `max_num_seqs`.
    running_slots: usize,
    /// Live sequences (pending forks included) per request.
    live: HashMap<RequestId, usize>,
    next_arrival: u64,
    /// Sequences the last plan computed (for `step_failed`).
    in_flight: Vec<SeqId>,
    /// Runtime limits below the configured ones (adaptive batching), see `set_step_limits`.
    limits: limits::StepLimits,
}

impl Scheduler {
    pub fn new(cfg: SchedulerConfig) -> Result<Self, SchedError> {
        cfg.validate()?;
        let pool = BlockPool::new(cfg.num_blocks, cfg.block_size)?;
        let cache = PrefixCache::new(
            cfg.num_blocks,
            cfg.block_size,
            cfg.model_salt,
            cfg.enable_prefix_caching,
        );
        Ok(Scheduler {
            cfg,
            pool,
            cache,
            seqs: HashMap::new(),
            waiting: BTreeSet::new(),
            running: BTreeSet::new(),
            running_slots: 0,
            live: HashMap::new(),
            next_arrival: 0,
            in_flight: Vec::new(),
            limits: limits::StepLimits::default(),
        })
    }

    pub fn config(&self) -> &SchedulerConfig {
        &self.cfg
    }

    /// Queue a request. Returns its sequence ids (`n` of them). Rejects, with an error that
    /// names both numbers, a request that could never run: empty prompt, `max_new_tokens` 0,
    /// prompt + `max_new_tokens` over `max_model_len` or over the whole KV cache, `n` over
    /// `max_num_seqs`.
    pub fn add(&mut self, req: Request) -> Result<Vec<SeqId>, SchedError> {
        let id = req.id;
        if req.prompt.is_empty() {
            return Err(SchedError::EmptyPrompt { id });
        }
        if req.max_new_tokens == 0 {
            return Err(SchedError::ZeroMaxTokens { id });
        }
        if req.n == 0 {
            return Err(SchedError::ZeroN { id });
        }
        if req.n > self.cfg.max_num_seqs || req.n > u32::MAX as usize {
            return Err(SchedError::TooManyChoices {
                id,
                n: req.n,
                max: self.cfg.max_num_seqs,
            });
        }
        let (prompt, max_new) = (req.prompt.len(), req.max_new_tokens);
        let total = prompt.saturating_add(max_new);
        if total > self.cfg.max_model_len {
            return Err(SchedError::ExceedsModelLen {
                id,
                prompt,
                max_new,
                total,
                max_model_len: self.cfg.max_model_len,
            });
        }
        if total > self.cfg.cache_tokens() {
            return Err(SchedError::ExceedsCache {
                id,
                prompt,
                max_new,
                total,
                capacity: self.cfg.cache_tokens(),
                blocks: self.cfg.num_blocks,
                block_size: self.cfg.block_size,
            });
        }
        if self.live.contains_key(&id) {
            return Err(SchedError::DuplicateRequest(id));
        }
        let arrival = self.next_arrival;
        self.next_arrival += 1;
        let seq = Seq {
            id: SeqId::new(id, 0),
            priority: req.priority,
            class_priority: req.priority,
            arrival,
            prompt_len: prompt,
            max_new_tokens: max_new,
            root: self.cache.root_hash(req.cache_salt),
            tokens: req.prompt,
            blocks: Vec::new(),
            hashes: Vec::new(),
            num_computed: 0,
            prefill_target: 0,
            awaiting_sample: false,
            pending_forks: (1..req.n as u32).collect(),
            cached_tokens: None,
            running: false,
            num_preemptions: 0,
        };
        self.waiting.insert(seq.key());
        self.seqs.insert(seq.id, seq);
        self.live.insert(id, req.n);
        Ok((0..req.n as u32).map(|i| SeqId::new(id, i)).collect())
    }

    /// Record the token sampled for `seq` (which the last plan asked to sample). Reaching
    /// `max_new_tokens` finishes the sequence with [`FinishReason::Length`].
    pub fn append_token(&mut self, seq: SeqId, token: u32) -> Result<Appended, SchedError> {
        let s = self.seqs.get_mut(&seq).ok_or(SchedError::UnknownSeq(seq))?;
        if !s.running || !s.awaiting_sample {
            return Err(SchedError::NotAwaitingToken(seq));
        }
        s.awaiting_sample = false;
        s.tokens.push(token);
        if s.generated().len() >= s.max_new_tokens {
            self.remove(seq, true, true)?;
            return Ok(Appended::Finished(FinishReason::Length));
        }
        Ok(Appended::Running)
    }

    /// End `seq` (a stop condition, or any reason the caller decides) and release its blocks;
    /// its full blocks stay in the prefix cache. Call after the step's forward pass.
    pub fn finish(&mut self, seq: SeqId, reason: FinishReason) -> Result<(), SchedError> {
        let register = reason != FinishReason::Cancelled;
        self.remove_or_pending(seq, register)
    }

    /// Cancel one sequence now; its blocks are free before the next step and none of its KV
    /// in flight enters the prefix cache. Best called between steps; if called after
    /// `schedule()`, still run that plan whole (forks of its item need its KV) and skip
    /// `append_token` for it.
    pub fn cancel(&mut self, seq: SeqId) -> Result<(), SchedError> {
        self.remove_or_pending(seq, false)
    }

    /// Cancel every sequence of a request (client disconnect).
    pub fn cancel_request(&mut self, request: RequestId) -> Result<(), SchedError> {
        if !self.live.contains_key(&request) {
            return Err(SchedError::UnknownRequest(request));
        }
        let ids: Vec<SeqId> = self
            .seqs
            .keys()
            .filter(|s| s.request == request)
            .copied()
            .collect();
        for id in ids {
            self.remove(id, false, false)?;
        }
        self.live.remove(&request);
        Ok(())
    }

    /// The forward pass of the last plan failed: its sequences' new KV is garbage, so they
    /// are preempted (recomputed later) and none of it enters the prefix cache.
    pub fn step_failed(&mut self) -> Result<(), SchedError> {
        for id in std::mem::take(&mut self.in_flight) {
            let Some(s) = self.seqs.get(&id) else {
                continue;
            };
            if s.running {
                self.preempt_now(id)?;
            }
        }
        Ok(())
    }

    /// Sequences waiting to run (pending forks of waiting requests included).
    pub fn num_waiting(&self) -> usize {
        self.waiting
            .iter()
            .filter_map(|k| self.seqs.get(&k.2))
            .map(Seq::slots)
            .sum()
    }

    /// Sequences admitted and holding KV (pending forks of running requests included).
    pub fn num_running(&self) -> usize {
        self.running_slots
    }

    /// Whether any sequence is waiting or running.
    pub fn has_unfinished(&self) -> bool {
        !self.seqs.is_empty()
    }

    pub fn status(&self, seq: SeqId) -> Option<SeqStatus> {
        self.owner(seq).map(|s| {
            if s.running {
                SeqStatus::Running
            } else {
                SeqStatus::Waiting
            }
        })
    }

    /// Prompt tokens of `seq` served from the prefix cache (known once it was admitted).
    pub fn cached_tokens(&self, seq: SeqId) -> Option<usize> {
        self.owner(seq).and_then(|s| s.cached_tokens)
    }

    /// Tokens generated so far by `seq`.
    pub fn generated(&self, seq: SeqId) -> Option<&[u32]> {
        match self.seqs.get(&seq) {
            Some(s) => Some(s.generated()),
            None => self.owner(seq).map(|_| &[][..]),
        }
    }

    /// Priority of `seq`.
    pub fn priority(&self, seq: SeqId) -> Option<i32> {
        self.owner(seq).map(|s| s.class_priority)
    }

    /// Times `seq` was preempted.
    pub fn num_preemptions(&self, seq: SeqId) -> Option<u32> {
        self.seqs.get(&seq).map(|s| s.num_preemptions)
    }

    /// The KV blocks `seq` holds now, in position order.
    pub fn block_table(&self, seq: SeqId) -> Option<&[BlockId]> {
        self.seqs.get(&seq).map(|s| &s.blocks[..])
    }

    pub fn block_usage(&self) -> BlockUsage {
        BlockUsage {
            total: self.pool.num_blocks(),
            free: self.pool.num_free(),
            used: self.pool.num_used(),
            cached_free: self.pool.num_parked(),
            usage: self.pool.usage(),
        }
    }

    pub fn prefix_cache_stats(&self) -> PrefixCacheStats {
        self.cache.stats()
    }

    /// Check every internal invariant (block references match the block tables, queues match
    /// the sequences, slot counts); `Err` names the first violation. For tests.
    pub fn check_invariants(&self) -> Result<(), String> {
        self.pool.check_invariants()?;
        self.cache.check_invariants(&self.pool)?;
        let bs = self.cfg.block_size;
        let mut refs = vec![0u32; self.pool.num_blocks()];
        let (mut slots, mut live) = (0, HashMap::<RequestId, usize>::new());
        for (id, s) in &self.seqs {
            if *id != s.id {
                return Err(format!("sequence {} is stored under {id}", s.id));
            }
            *live.entry(id.request).or_default() += s.slots();
            let (in_run, in_wait) = (
                self.running.contains(&s.key()),
                self.waiting.contains(&s.key()),
            );
            if (s.running, in_run, in_wait) != (true, true, false)
                && (s.running, in_run, in_wait) != (false, false, true)
            {
                return Err(format!("sequence {id} is in the wrong queue"));
            }
            if s.running {
                slots += s.slots();
                if s.blocks.len() != s.num_computed.div_ceil(bs) {
                    return Err(format!(
                        "sequence {id}: {} blocks for {} computed tokens",
                        s.blocks.len(),
                        s.num_computed
                    ));
                }
                if s.num_computed > s.tokens.len() || s.hashes.len() > s.num_computed / bs {
                    return Err(format!("sequence {id}: progress beyond its tokens"));
                }
            } else if !s.blocks.is_empty() || s.num_computed != 0 || s.awaiting_sample {
                return Err(format!("waiting sequence {id} holds KV state"));
            }
            for &b in &s.blocks {
                match refs.get_mut(b as usize) {
                    Some(r) => *r += 1,
                    None => return Err(format!("sequence {id} holds unknown block {b}")),
                }
            }
        }
        for (b, &r) in refs.iter().enumerate() {
            let have = self
                .pool
                .ref_count(b as BlockId)
                .map_err(|e| e.to_string())?;
            if have != r {
                return Err(format!("block {b}: pool count {have}, held {r} times"));
            }
        }
        if self.running.len() + self.waiting.len() != self.seqs.len() {
            return Err("queues hold sequences that do not exist".into());
        }
        if slots != self.running_slots || slots > self.cfg.max_num_seqs {
            return Err(format!(
                "running slots: counted {slots}, recorded {}, cap {}",
                self.running_slots, self.cfg.max_num_seqs
            ));
        }
        if live != self.live {
            return Err("live request counts are off".into());
        }
        Ok(())
    }

    // -----------------------------------------------------------------------------------------

    /// The sequence that owns `seq`: itself, or the leader that will fork it.
    fn owner(&self, seq: SeqId) -> Option<&Seq> {
        self.seqs.get(&seq).or_else(|| {
            self.live.get(&seq.request)?;
            self.seqs
                .values()
                .find(|s| s.id.request == seq.request && s.pending_forks.contains(&seq.index))
        })
    }

    /// Finish/cancel `seq`, which may still be a pending fork of its leader.
    fn remove_or_pending(&mut self, seq: SeqId, register: bool) -> Result<(), SchedError> {
        if self.seqs.contains_key(&seq) {
            return self.remove(seq, register, true);
        }
        let leader = self
            .owner(seq)
            .map(|s| s.id)
            .ok_or(SchedError::UnknownSeq(seq))?;
        let l = self
            .seqs
            .get_mut(&leader)
            .ok_or(SchedError::UnknownSeq(seq))?;
        l.pending_forks.retain(|&i| i != seq.index);
        if l.running {
            self.running_slots -= 1;
        }
        self.dec_live(seq.request);
        Ok(())
    }

    /// Remove a sequence. With `promote`, a leader with pending forks hands its state (and KV)
    /// to its first pending fork instead of dropping it.
    fn remove(&mut self, id: SeqId, register: bool, promote: bool) -> Result<(), SchedError> {
        let mut s = self.seqs.remove(&id).ok_or(SchedError::UnknownSeq(id))?;
        let key = s.key();
        if s.running {
            self.running.remove(&key);
        } else {
            self.waiting.remove(&key);
        }
        if register && s.running {
            self.register_computed(&mut s);
        }
        if promote && !s.pending_forks.is_empty() {
            let next = s.pending_forks.remove(0);
            s.id = SeqId::new(id.request, next);
            for f in self.in_flight.iter_mut().filter(|f| **f == id) {
                *f = s.id;
            }
            if s.running {
                self.running_slots -= 1;
                self.running.insert(s.key());
            } else {
                self.waiting.insert(s.key());
            }
            self.seqs.insert(s.id, s);
            self.dec_live(id.request);
            return Ok(());
        }
        if s.running {
            self.running_slots -= s.slots();
        }
        for _ in 0..s.slots() {
            self.dec_live(id.request);
        }
        for &b in s.blocks.iter().rev() {
            self.cache.release(&mut self.pool, b)?;
        }
        Ok(())
    }

    fn dec_live(&mut self, request: RequestId) {
        if let Some(n) = self.live.get_mut(&request) {
            *n -= 1;
            if *n == 0 {
                self.live.remove(&request);
            }
        }
    }

    /// Register the full blocks `s` has computed in the prefix cache.
    fn register_computed(&mut self, s: &mut Seq) {
        if !self.cache.enabled() {
            return;
        }
        let bs = self.cfg.block_size;
        while (s.hashes.len() + 1) * bs <= s.num_computed {
            let i = s.hashes.len();
            let (Some(&b), Some(toks)) = (s.blocks.get(i), s.tokens.get(i * bs..(i + 1) * bs))
            else {
                return;
            };
            let parent = s.hashes.last().copied().unwrap_or(s.root);
            let h = self.cache.insert(b, parent, toks);
            s.hashes.push(h);
        }
    }

    /// Preempt a running sequence by recompute: free its blocks (tail first, so the prefix
    /// cache keeps the head longest) and queue it again with everything it has generated.
    fn preempt_now(&mut self, id: SeqId) -> Result<(), SchedError> {
        // The highest priority present, for aging (keys sort highest priority first).
        let top = [self.running.first(), self.waiting.first()]
            .into_iter()
            .flatten()
            .map(|k| k.0 .0)
            .max();
        let s = self
            .seqs
            .get_mut(&id)
            .ok_or_else(|| SchedError::Internal(format!("preempting unknown {id}")))?;
        if !s.running {
            return Err(SchedError::Internal(format!("preempting waiting {id}")));
        }
        let key = s.key();
        let blocks = std::mem::take(&mut s.blocks);
        s.hashes.clear();
        s.num_computed = 0;
        s.prefill_target = 0;
        s.awaiting_sample = false;
        s.running = false;
        s.num_preemptions += 1;
        if s.num_preemptions >= AGING_PREEMPTIONS {
            s.priority = s.priority.max(top.unwrap_or(s.priority));
        }
        self.running_slots -= s.slots();
        self.running.remove(&key);
        self.waiting.insert(s.key());
        for &b in blocks.iter().rev() {
            self.cache.release(&mut self.pool, b)?;
        }
        Ok(())
    }
}
