//! The engine thread: one per model. It owns the model and the KV cache, takes requests from a
//! channel, runs the scheduler's plan each step as one flattened batch, samples, detokenizes,
//! applies stop conditions, and streams events back on each request's own channel.
//! Nothing async runs here; the HTTP side talks to it through [`EngineHandle`] (`handle.rs`);
//! the types both sides share are in `types.rs`.

mod constrain;
mod handle;
mod types;

use handle::Command;
pub use handle::{EngineHandle, RequestStream};
pub use types::*;

use std::collections::HashMap;
use std::sync::atomic::AtomicU64;
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use r1_model::{KvCache, Model};
use tokio::sync::mpsc as tmpsc;

use crate::adaptive::{AdaptiveBatcher, Limits};
use crate::block_pool::num_blocks_for_budget;
use crate::constraint::{Commit, SeqMatcher};
use crate::detokenizer::DecodeState;
use crate::engine_metrics::{PriorityLoad, RequestTimes};
use crate::sampler::{logprobs, Sampler};
use crate::scheduler::{
    Appended, FinishReason, Request, RequestId, SchedError, Scheduler, SchedulerConfig, SeqId,
    SeqStatus, StepPlan,
};
use crate::stop::{StopOutcome, StopStrings};
use crate::tokenizer::Tokenizer;

struct SeqState {
    sampler: Sampler,
    history: Vec<u32>,
    generated: Vec<u32>,
    decode: DecodeState,
    stops: StopStrings,
    /// When this sequence's previous token was sampled (inter-token latency).
    last_token: Option<Instant>,
    /// The grammar state of a constrained request (one per choice).
    matcher: Option<SeqMatcher>,
}

struct RequestState {
    req: GenerateRequest,
    tx: tmpsc::UnboundedSender<EngineEvent>,
    seqs: HashMap<u32, SeqState>,
    admitted: bool,
    open: usize,
    times: RequestTimes,
}

/// Start the engine thread for `model`. The tokenizer is shared for detokenization.
pub fn spawn_engine(
    model: Arc<dyn Model>,
    tokenizer: Arc<Tokenizer>,
    cfg: EngineConfig,
) -> Result<(EngineHandle, std::thread::JoinHandle<()>), EngineError> {
    let layout = model.kv_layout();
    let budget = cfg
        .kv_cache_mem
        .resolve_here()
        .map_err(|e| EngineError::Config(e.to_string()))?;
    let kv_dtype = model.kv_dtype();
    let bytes_per_token = layout.bytes_per_token(kv_dtype.bytes());
    let num_blocks = num_blocks_for_budget(budget, bytes_per_token, cfg.block_size)
        .map_err(|e| EngineError::Config(e.to_string()))?;
    let max_model_len = cfg
        .max_model_len
        .unwrap_or(model.config().context_length)
        .min(model.config().context_length);
    let sched_cfg = SchedulerConfig {
        max_batched_tokens: cfg.max_batched_tokens.max(cfg.max_num_seqs),
        max_num_seqs: cfg.max_num_seqs,
        block_size: cfg.block_size,
        num_blocks,
        max_model_len,
        enable_prefix_caching: cfg.enable_prefix_caching,
        enable_chunked_prefill: true,
        max_chunk_tokens: cfg.max_chunk_tokens,
        max_protected_tokens: cfg.max_protected_tokens,
        model_salt: model_salt(model.as_ref()),
    };
    let adaptive = AdaptiveBatcher::new(
        sched_cfg.max_batched_tokens,
        sched_cfg.max_num_seqs,
        MIN_ADAPTIVE_TOKENS.max(cfg.block_size),
    );
    let sched = Scheduler::new(sched_cfg)?;
    tracing::info!(
        num_blocks,
        block_size = cfg.block_size,
        kv_bytes = num_blocks * cfg.block_size * bytes_per_token,
        "KV cache allocated"
    );
    let (cmd_tx, cmd_rx) = mpsc::channel();
    let stats = Arc::new(Mutex::new(EngineStats {
        kv_blocks_total: num_blocks,
        ..Default::default()
    }));
    let handle = EngineHandle {
        cmd: cmd_tx,
        next_id: Arc::new(AtomicU64::new(1)),
        stats: stats.clone(),
        max_model_len,
    };
    // The model says how it keeps its cache (f16 for llama/qwen2, f32 latents for MLA).
    let kv = KvCache::with_dtype(layout, cfg.block_size, num_blocks, kv_dtype);
    let thread = std::thread::Builder::new()
        .name("r1-engine".into())
        .spawn(move || {
            EngineLoop {
                model,
                tokenizer,
                kv,
                sched,
                requests: HashMap::new(),
                stats,
                counters: EngineStats::default(),
                adaptive,
            }
            .run(cmd_rx)
        })
        .map_err(|e| EngineError::Config(format!("cannot start the engine thread: {e}")))?;
    Ok((handle, thread))
}

/// The smallest step token budget adaptive batching goes down to before it limits sequences.
const MIN_ADAPTIVE_TOKENS: usize = 32;

/// Prefix-cache salt: blocks of different models never match.
fn model_salt(model: &dyn Model) -> u64 {
    use std::hash::{Hash, Hasher};
    let c = model.config();
    let mut h = std::collections::hash_map::DefaultHasher::new();
    (
        &c.arch,
        &c.name,
        c.n_layers,
        c.hidden,
        c.vocab_size,
        model.n_params(),
    )
        .hash(&mut h);
    h.finish()
}

struct EngineLoop {
    model: Arc<dyn Model>,
    tokenizer: Arc<Tokenizer>,
    kv: KvCache,
    sched: Scheduler,
    requests: HashMap<RequestId, RequestState>,
    stats: Arc<Mutex<EngineStats>>,
    counters: EngineStats,
    adaptive: AdaptiveBatcher,
}

impl EngineLoop {
    fn run(mut self, rx: mpsc::Receiver<Command>) {
        loop {
            // Between steps: take every waiting command; block only when idle.
            let idle = !self.sched.has_unfinished();
            let first = if idle {
                match rx.recv() {
                    Ok(c) => Some(c),
                    Err(_) => return,
                }
            } else {
                None
            };
            for cmd in first.into_iter().chain(rx.try_iter()) {
                match cmd {
                    Command::Add(req, id, tx, at) => self.add(*req, id, tx, at),
                    Command::Cancel(id) => self.cancel(id),
                    Command::Shutdown => {
                        for (_, r) in self.requests.drain() {
                            let _ = r.tx.send(EngineEvent::Error(EngineError::ShuttingDown));
                        }
                        return;
                    }
                }
            }
            if let Err(e) = self.step() {
                tracing::error!("engine step failed: {e}");
            }
            self.publish();
        }
    }

    fn add(
        &mut self,
        req: GenerateRequest,
        id: RequestId,
        tx: tmpsc::UnboundedSender<EngineEvent>,
        arrived: Instant,
    ) {
        let rejected = &mut self.counters.metrics.requests_rejected;
        let mut reject = |tx: &tmpsc::UnboundedSender<EngineEvent>, e: EngineError| {
            *rejected += 1;
            let _ = tx.send(EngineEvent::Error(e));
        };
        if req.n == 0 || req.max_tokens == 0 {
            let m = "`n` and `max_tokens` must be at least 1";
            return reject(&tx, EngineError::Invalid(m.into()));
        }
        if let Some(&t) = req
            .prompt
            .iter()
            .find(|&&t| t as usize >= self.model.config().vocab_size)
        {
            let m = format!("token id {t} is outside the vocabulary");
            return reject(&tx, EngineError::Invalid(m));
        }
        let sreq = Request::new(id, req.prompt.clone(), req.max_tokens)
            .with_priority(req.priority)
            .with_n(req.n);
        match self.sched.add(sreq) {
            Err(e) => reject(&tx, EngineError::Rejected(e)),
            Ok(ids) => {
                let mut seqs = HashMap::new();
                for sid in ids {
                    let mut params = req.params.clone();
                    params.seed = params.seed.map(|s| s.wrapping_add(sid.index as u64));
                    seqs.insert(
                        sid.index,
                        SeqState {
                            sampler: Sampler::new(params),
                            history: req.prompt.clone(),
                            generated: Vec::new(),
                            decode: DecodeState::new(&self.tokenizer, req.skip_special_tokens),
                            stops: StopStrings::new(req.stop_strings.clone()),
                            last_token: None,
                            matcher: req
                                .constraint
                                .as_ref()
                                .map(|c| c.matcher().with_stops(&req.stop_ids, req.ignore_eos)),
                        },
                    );
                }
                self.counters.prompt_tokens += req.prompt.len() as u64;
                self.counters.metrics.requests_arrived += 1;
                let open = seqs.len();
                self.requests.insert(
                    id,
                    RequestState {
                        req,
                        tx,
                        seqs,
                        admitted: false,
                        open,
                        times: RequestTimes::new(arrived),
                    },
                );
            }
        }
    }

    fn cancel(&mut self, id: RequestId) {
        if let Some(r) = self.requests.remove(&id) {
            self.counters.metrics.finished.abort += r.open as u64;
            let _ = self.sched.cancel_request(id);
        }
    }

    fn step(&mut self) -> Result<(), SchedError> {
        self.apply_limits();
        let plan = self.sched.schedule()?;
        if plan.is_empty() {
            return Ok(());
        }
        self.counters.preemptions += plan.preempted.len() as u64;
        for c in &plan.copies {
            self.kv.copy_block(c.src, c.dst);
        }
        let batch = plan.to_batch();
        let t0 = Instant::now();
        let forward = self.forward_with_masks(&plan, &batch);
        let logits = match forward {
            Ok(l) => l,
            Err(e) => {
                tracing::error!("forward failed: {e}");
                self.sched.step_failed()?;
                return Ok(());
            }
        };
        let step_time = t0.elapsed();
        if tracing::enabled!(tracing::Level::TRACE) {
            self.trace_step(&plan, step_time);
        }
        self.counters.last_step_ms = step_time.as_secs_f64() * 1e3;
        self.adapt(step_time);
        self.counters.steps += 1;
        self.counters.metrics.on_step(
            plan.items.len(),
            batch.tokens.len(),
            t0.elapsed().as_secs_f64(),
        );
        // Announce admissions before any token, so a request that finishes in its first step
        // still reports its cached-token count.
        for item in &plan.items {
            if let Some(r) = self.requests.get_mut(&item.seq.request) {
                if !r.admitted {
                    r.admitted = true;
                    self.counters.metrics.on_scheduled(&mut r.times, t0);
                    let cached = self.sched.cached_tokens(item.seq).unwrap_or(0);
                    self.counters.prefix_query_tokens += r.req.prompt.len() as u64;
                    self.counters.prefix_hit_tokens += cached as u64;
                    let _ = r.tx.send(EngineEvent::Admitted {
                        cached_tokens: cached,
                    });
                }
            }
        }
        for (row, item) in plan.sample_items().enumerate() {
            for seq in item.sample_seqs() {
                self.sample_one(seq, logits.row(row))?;
            }
        }
        Ok(())
    }

    /// What a step held, by priority: `prio:prefill_tokens+decodes` (a trace for
    /// latency investigations, e.g. which class's work a VIP's first token waited behind).
    fn trace_step(&self, plan: &StepPlan, step_time: Duration) {
        let mut by_prio: std::collections::BTreeMap<i32, (usize, usize)> = Default::default();
        for it in &plan.items {
            let p = self
                .requests
                .get(&it.seq.request)
                .map_or(i32::MIN, |r| r.req.priority);
            let e = by_prio.entry(p).or_default();
            if it.tokens.len() > 1 || !it.sample {
                e.0 += it.tokens.len();
            } else {
                e.1 += 1;
            }
        }
        let held: Vec<String> = by_prio
            .iter()
            .rev()
            .map(|(p, (pf, dec))| format!("{p}:{pf}+{dec}"))
            .collect();
        tracing::trace!(
            tokens = plan.num_tokens,
            seqs = plan.items.len(),
            ms = step_time.as_secs_f64() * 1e3,
            held = %held.join(" "),
            blocked = ?plan.blocked,
            "step"
        );
    }

    /// Adaptive batching, learning: feed the step's duration against the tightest
    /// inter-token latency target among the requests (every step is one token gap for each
    /// decoding sequence).
    fn adapt(&mut self, step_time: Duration) {
        let target = self
            .requests
            .values()
            .filter_map(|r| r.req.target_itl)
            .min();
        self.adaptive.observe(step_time, target);
    }

    /// Adaptive batching, applying: the learned limits while any request has a target, set
    /// just before scheduling, so the step that admits a newly arrived targeted request is
    /// already a short one (not one step later). The targeted requests' own prompts run
    /// whole; the sequence cap never drops below the number of targeted sequences, so those
    /// are not serialised behind each other.
    fn apply_limits(&mut self) {
        let targeted = self
            .requests
            .values()
            .filter(|r| r.req.target_itl.is_some());
        let protect = targeted.clone().map(|r| r.req.priority).min();
        let n_targeted: usize = targeted.map(|r| r.open).sum();
        let l = match protect {
            Some(_) => self.adaptive.limits(),
            None => Limits {
                tokens: None,
                seqs: None,
            },
        };
        let seqs = l.seqs.map(|s| s.max(n_targeted));
        self.sched
            .set_step_limits_protecting(l.tokens, seqs, protect);
    }

    fn sample_one(&mut self, seq: SeqId, row: &[f32]) -> Result<(), SchedError> {
        let Some(r) = self.requests.get_mut(&seq.request) else {
            return Ok(()); // cancelled mid-step
        };
        let Some(s) = r.seqs.get_mut(&seq.index) else {
            return Ok(());
        };
        let mut logits = row.to_vec();
        // The grammar first: penalties, bias and temperature only reorder what it allows.
        let constrained = s.matcher.as_ref().is_some_and(|m| m.is_active());
        if let Some(m) = s.matcher.as_mut() {
            if let Err(e) = m.mask_logits(&mut logits) {
                self.fail_request(seq.request, e);
                return Ok(());
            }
        }
        s.sampler.adjust(&mut logits, &s.history, &s.generated);
        let tok = s.sampler.pick(&logits);
        let lp = r.req.logprobs.map(|k| {
            let (logprob, top) = logprobs(row, tok, k);
            TokenLogprob {
                token: tok,
                logprob,
                top,
            }
        });
        self.counters.generation_tokens += 1;
        let now = Instant::now();
        let first = self
            .counters
            .metrics
            .on_token(&mut r.times, s.last_token.replace(now), now);
        if first {
            tracing::debug!(
                request = %seq.request,
                priority = r.req.priority,
                queued_s = r.times.queued_secs(),
                ttft_s = r.times.ttft_secs(),
                "first token"
            );
        }
        // Under a grammar an end-of-generation id is only allowed where the grammar accepts
        // (with `ignore_eos`, only where nothing else is), so it ends the sequence even then.
        let is_stop_id = ((!r.req.ignore_eos || constrained) && self.tokenizer.is_stop(tok))
            || r.req.stop_ids.contains(&tok);
        let mut grammar_done = false;
        if !is_stop_id {
            if let Some(m) = s.matcher.as_mut() {
                match m.commit(tok) {
                    Ok(Commit::Done) => grammar_done = true,
                    Ok(Commit::Free | Commit::Continue) => {}
                    Err(e) => {
                        self.fail_request(seq.request, e);
                        return Ok(());
                    }
                }
            }
        }
        let appended = self.sched.append_token(seq, tok)?;
        let mut finish = None;
        if is_stop_id {
            finish = Some(Finish::Stop);
        } else {
            s.generated.push(tok);
            s.history.push(tok);
            let delta = s.decode.push(&self.tokenizer, tok);
            let (text, stopped) = match s.stops.push(&delta) {
                StopOutcome::Continue(t) => (t, false),
                StopOutcome::Stopped(t) => (t, true),
            };
            let _ = r.tx.send(EngineEvent::Token {
                index: seq.index,
                token: tok,
                text,
                logprob: lp,
            });
            if stopped || grammar_done {
                finish = Some(Finish::Stop);
            } else if appended == Appended::Finished(FinishReason::Length) {
                finish = Some(Finish::Length);
            }
        }
        if let Some(reason) = finish {
            if appended == Appended::Running {
                self.sched.finish(seq, FinishReason::Stop)?;
            }
            // A stop string drops the text it held back; the end of a grammar releases it.
            let tail = if reason == Finish::Stop && !is_stop_id && !grammar_done {
                String::new()
            } else {
                let t = s.decode.finish(&self.tokenizer);
                match s.stops.push(&t) {
                    StopOutcome::Continue(a) | StopOutcome::Stopped(a) => a + &s.stops.flush(),
                }
            };
            let finished = &mut self.counters.metrics.finished;
            match reason {
                Finish::Stop => finished.stop += 1,
                Finish::Length => finished.length += 1,
                Finish::Cancelled => finished.abort += 1,
            }
            let _ = r.tx.send(EngineEvent::Finished {
                index: seq.index,
                reason,
                text: tail,
                completion_tokens: s.generated.len(),
            });
            r.seqs.remove(&seq.index);
            r.open -= 1;
            if r.open == 0 {
                self.counters.metrics.on_completed(&r.times, now);
                self.requests.remove(&seq.request);
            }
        }
        Ok(())
    }

    fn publish(&mut self) {
        let u = self.sched.block_usage();
        let p = &self.counters;
        let mut snapshot = EngineStats {
            running: self.sched.num_running(),
            waiting: self.sched.num_waiting(),
            kv_blocks_total: u.total,
            kv_blocks_used: u.used,
            kv_usage: u.usage,
            step_token_budget: self.sched.step_budget(),
            step_seq_limit: self.sched.seq_cap(),
            ..p.clone()
        };
        snapshot.metrics.by_priority = self.load_by_priority();
        *self.stats.lock().unwrap_or_else(|e| e.into_inner()) = snapshot;
    }

    /// Open sequences per priority, running or waiting, highest priority first.
    fn load_by_priority(&self) -> Vec<PriorityLoad> {
        let mut out: Vec<PriorityLoad> = Vec::new();
        for (&id, r) in &self.requests {
            let i = match out.binary_search_by(|l| r.req.priority.cmp(&l.priority)) {
                Ok(i) => i,
                Err(i) => {
                    out.insert(
                        i,
                        PriorityLoad {
                            priority: r.req.priority,
                            running: 0,
                            waiting: 0,
                        },
                    );
                    i
                }
            };
            for &index in r.seqs.keys() {
                match self.sched.status(SeqId::new(id, index)) {
                    Some(SeqStatus::Running) => out[i].running += 1,
                    Some(SeqStatus::Waiting) => out[i].waiting += 1,
                    None => {}
                }
            }
        }
        out
    }
}
