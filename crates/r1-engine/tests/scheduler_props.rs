//! Randomized property tests of the scheduler, block pool and prefix cache.
//!
//! A seeded loop (no extra dependency; the seed is in every failure message) drives the
//! scheduler the way the engine loop does, against a fake model whose next token depends only
//! on the tokens a sequence reads back from a simulated paged KV cache. Random arrivals
//! (prompts that share prefixes, priorities, `n > 1`, cache salts), cancellations between and
//! inside steps, and small block pools that force preemption. Checked after every step:
//! block accounting, queue bookkeeping, budgets and caps, plan contents, the KV each item
//! reads, priority order, decodes never left out, the first prompt in line advancing,
//! progress whenever work is left; at the end: every request finished or was rejected, every
//! output equals the output of the same sequence run alone, every block is free.
//!
//! `SCHED_PROP_SEEDS=n` runs more seeds; `SCHED_PROP_SEED=s` runs one.

use std::cmp::Reverse;
use std::collections::{HashMap, HashSet};

use r1_engine::block_pool::BlockId;
use r1_engine::scheduler::*;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

const VOCAB: u32 = 40;
const STOP: u32 = 0;
const MAX_STEPS: usize = 20_000;

/// The fake model + sampler: a hash of the context and the choice index.
fn fake_token(ctx: &[u32], index: u32) -> u32 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325 ^ u64::from(index);
    for &t in ctx {
        h ^= u64::from(t) + 1;
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h ^= h >> 29;
    (h % u64::from(VOCAB)) as u32
}

/// What the sequence produces when it runs alone, with the engine's stop rule.
fn reference(prompt: &[u32], index: u32, max_new: usize) -> (Vec<u32>, FinishReason) {
    let mut ctx = prompt.to_vec();
    let mut out = Vec::new();
    loop {
        let t = fake_token(&ctx, index);
        ctx.push(t);
        out.push(t);
        if out.len() >= max_new {
            return (out, FinishReason::Length);
        }
        if t == STOP {
            return (out, FinishReason::Stop);
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Phase {
    Waiting,
    Prefill,
    DecodeReady,
}

#[derive(Clone, Debug)]
struct Shadow {
    prompt_len: usize,
    max_new: usize,
    priority: i32,
    arrival: u64,
    tokens: Vec<u32>,
    phase: Phase,
    end: Option<FinishReason>,
    seen_item: bool,
    skip_cache_check: bool,
}

type Key = (Reverse<i32>, u64, SeqId);

#[derive(Default, Debug)]
struct Coverage {
    steps: usize,
    finished: usize,
    rejected: usize,
    cancelled: usize,
    preemptions: usize,
    hit_tokens: u64,
    forks: usize,
    copies: usize,
    blocked_budget: usize,
    blocked_blocks: usize,
    blocked_seqs: usize,
}

struct Sim {
    seed: u64,
    rng: StdRng,
    cfg: SchedulerConfig,
    s: Scheduler,
    sh: HashMap<SeqId, Shadow>,
    kv: Vec<Option<(u32, usize)>>,
    next_arrival: u64,
    cov: Coverage,
}

impl Sim {
    fn new(seed: u64) -> Self {
        let mut rng = StdRng::seed_from_u64(seed);
        let bs = [1, 2, 4, 8, 16][rng.random_range(0..5)];
        let max_num_seqs = rng.random_range(1..=6);
        let mut cfg = SchedulerConfig {
            max_batched_tokens: rng.random_range(max_num_seqs..=max_num_seqs + 40),
            max_num_seqs,
            block_size: bs,
            num_blocks: rng.random_range((8 / bs).max(2)..=(160 / bs).max(3)),
            max_model_len: rng.random_range(8..=120),
            enable_prefix_caching: rng.random_bool(0.8),
            enable_chunked_prefill: rng.random_bool(0.9),
            max_chunk_tokens: rng.random_bool(0.25).then(|| rng.random_range(1..=16)),
            max_protected_tokens: None,
            model_salt: seed,
        };
        if !cfg.enable_chunked_prefill {
            cfg.max_batched_tokens = cfg.max_batched_tokens.max(cfg.max_model_len);
            cfg.max_chunk_tokens = None;
        }
        let s = Scheduler::new(cfg.clone()).unwrap_or_else(|e| panic!("seed {seed}: {e}"));
        Sim {
            seed,
            rng,
            kv: vec![None; cfg.num_blocks * bs],
            cfg,
            s,
            sh: HashMap::new(),
            next_arrival: 0,
            cov: Coverage::default(),
        }
    }

    fn key(&self, seq: SeqId) -> Key {
        let h = &self.sh[&seq];
        (Reverse(h.priority), h.arrival, seq)
    }

    fn live(&self) -> Vec<SeqId> {
        let mut v: Vec<SeqId> = self
            .sh
            .iter()
            .filter(|(_, h)| h.end.is_none())
            .map(|(id, _)| *id)
            .collect();
        v.sort();
        v
    }

    /// A sequence the scheduler tracks itself (not a fork still pending in its leader).
    fn is_real(&self, seq: SeqId) -> bool {
        self.s.block_table(seq).is_some()
    }

    fn arrive(&mut self, id: u64, bases: &[Vec<u32>]) {
        let rng = &mut self.rng;
        let mut prompt = Vec::new();
        if rng.random_bool(0.6) {
            let base = &bases[rng.random_range(0..bases.len())];
            prompt.extend_from_slice(&base[..rng.random_range(0..=base.len())]);
        }
        let extra = rng.random_range(0..20);
        prompt.extend((0..extra).map(|_| rng.random_range(1..VOCAB)));
        if prompt.is_empty() && rng.random_bool(0.7) {
            prompt.push(rng.random_range(1..VOCAB));
        }
        let max_new = rng.random_range(1..=24);
        let n = if rng.random_bool(0.8) {
            1
        } else {
            rng.random_range(2..=4)
        };
        let req = Request::new(id, prompt.clone(), max_new)
            .with_priority(rng.random_range(-1..=2))
            .with_n(n)
            .with_cache_salt(u64::from(rng.random_bool(0.1)));
        let total = prompt.len() + max_new;
        let expected_err = if prompt.is_empty() {
            Some("EmptyPrompt")
        } else if n > self.cfg.max_num_seqs {
            Some("TooManyChoices")
        } else if total > self.cfg.max_model_len {
            Some("ExceedsModelLen")
        } else if total > self.cfg.num_blocks * self.cfg.block_size {
            Some("ExceedsCache")
        } else {
            None
        };
        match (self.s.add(req.clone()), expected_err) {
            (Ok(ids), None) => {
                assert_eq!(ids.len(), n, "seed {}", self.seed);
                for seq in ids {
                    self.sh.insert(
                        seq,
                        Shadow {
                            prompt_len: prompt.len(),
                            max_new,
                            priority: req.priority,
                            arrival: self.next_arrival,
                            tokens: prompt.clone(),
                            phase: Phase::Waiting,
                            end: None,
                            seen_item: false,
                            skip_cache_check: false,
                        },
                    );
                }
                self.next_arrival += 1;
            }
            (Err(e), Some(kind)) => {
                let dbg = format!("{e:?}");
                assert!(dbg.starts_with(kind), "seed {}: {dbg} vs {kind}", self.seed);
                if kind.starts_with("Exceeds") {
                    let msg = e.to_string();
                    assert!(
                        msg.contains(&prompt.len().to_string())
                            && msg.contains(&max_new.to_string()),
                        "seed {}: {msg}",
                        self.seed
                    );
                }
                self.cov.rejected += 1;
            }
            (r, exp) => panic!("seed {}: add gave {r:?}, expected {exp:?}", self.seed),
        }
    }

    /// Cancel a random live sequence (or its whole request).
    fn cancel_random(&mut self) {
        let live = self.live();
        if live.is_empty() {
            return;
        }
        let seq = live[self.rng.random_range(0..live.len())];
        if self.rng.random_bool(0.5) {
            self.s
                .cancel_request(seq.request)
                .unwrap_or_else(|e| panic!("seed {}: {e}", self.seed));
            for (id, h) in self.sh.iter_mut() {
                if id.request == seq.request && h.end.is_none() {
                    h.end = Some(FinishReason::Cancelled);
                    self.cov.cancelled += 1;
                }
            }
            return;
        }
        // A leader with pending forks hands its state to the first pending one.
        let promoted = if self.is_real(seq) {
            live.iter()
                .copied()
                .filter(|x| x.request == seq.request && *x != seq && !self.is_real(*x))
                .min()
        } else {
            None
        };
        self.s
            .cancel(seq)
            .unwrap_or_else(|e| panic!("seed {}: {e}", self.seed));
        let old = self.sh[&seq].clone();
        if let Some(p) = promoted {
            let h = self.sh.get_mut(&p).unwrap();
            h.phase = old.phase;
            h.seen_item = old.seen_item;
            h.skip_cache_check = true;
        }
        self.sh.get_mut(&seq).unwrap().end = Some(FinishReason::Cancelled);
        self.cov.cancelled += 1;
    }

    fn slot(&self, table: &[BlockId], pos: usize) -> usize {
        let bs = self.cfg.block_size;
        table[pos / bs] as usize * bs + pos % bs
    }

    /// One engine step; returns false when the plan was empty.
    fn step(&mut self) -> bool {
        let seed = self.seed;
        let bs = self.cfg.block_size;
        let before: HashMap<SeqId, (Option<SeqStatus>, bool)> = self
            .live()
            .into_iter()
            .map(|q| (q, (self.s.status(q), self.is_real(q))))
            .collect();
        let plan = self
            .s
            .schedule()
            .unwrap_or_else(|e| panic!("seed {seed}: schedule: {e}"));
        self.s
            .check_invariants()
            .unwrap_or_else(|e| panic!("seed {seed}: after schedule: {e}"));
        self.cov.steps += 1;
        self.check_plan(&plan, &before);

        // Update phases from the plan. A sequence preempted AGING_PREEMPTIONS times is
        // scheduled from then on at the highest priority live when the step began.
        let top = before.keys().map(|q| self.sh[q].priority).max();
        for v in &plan.preempted {
            let aged = self.s.num_preemptions(*v).unwrap_or(0) >= AGING_PREEMPTIONS;
            let h = self.sh.get_mut(v).unwrap();
            h.phase = Phase::Waiting;
            if aged {
                h.priority = h.priority.max(top.unwrap_or(h.priority));
            }
            self.cov.preemptions += 1;
        }
        for it in &plan.items {
            self.sh.get_mut(&it.seq).unwrap().phase = Phase::Prefill;
            // Forks take their leader's (possibly aged) priority.
            let p = self.sh[&it.seq].priority;
            for f in &it.forks {
                self.sh.get_mut(f).unwrap().priority = p;
            }
        }
        self.cov.copies += plan.copies.len();
        self.cov.forks += plan.items.iter().map(|i| i.forks.len()).sum::<usize>();
        match plan.blocked.map(|b| b.reason) {
            Some(BlockedReason::TokenBudget) => self.cov.blocked_budget += 1,
            Some(BlockedReason::KvBlocks { .. }) => self.cov.blocked_blocks += 1,
            Some(BlockedReason::SeqCap { .. }) => self.cov.blocked_seqs += 1,
            _ => {}
        }

        // Sometimes the client goes away while the step runs: the plan still runs whole.
        if !plan.items.is_empty() && self.rng.random_bool(0.02) {
            let it = &plan.items[self.rng.random_range(0..plan.items.len())];
            let seq = it.seq;
            if self.sh[&seq].end.is_none() {
                let promoted = self
                    .live()
                    .into_iter()
                    .filter(|x| x.request == seq.request && *x != seq && !self.is_real(*x))
                    .min();
                self.s
                    .cancel(seq)
                    .unwrap_or_else(|e| panic!("seed {seed}: {e}"));
                if let Some(p) = promoted {
                    let h = self.sh.get_mut(&p).unwrap();
                    h.phase = Phase::Prefill;
                    h.seen_item = true;
                    h.skip_cache_check = true;
                }
                self.sh.get_mut(&seq).unwrap().end = Some(FinishReason::Cancelled);
                self.cov.cancelled += 1;
            }
        }

        // The "forward pass": copies first; each item then reads the context already in the
        // cache (written by earlier steps, never by this one) and writes its own tokens' KV.
        for c in &plan.copies {
            let (src, dst) = (c.src as usize * bs, c.dst as usize * bs);
            self.kv.copy_within(src..src + bs, dst);
        }
        let read = |kv: &[Option<(u32, usize)>], it: &PlanItem| -> Vec<u32> {
            (0..it.pos0)
                .map(|p| {
                    let slot = it.block_table[p / bs] as usize * bs + p % bs;
                    match kv[slot] {
                        Some((t, q)) if q == p => t,
                        other => panic!("seed {seed}: {} reads {other:?} at position {p}", it.seq),
                    }
                })
                .collect()
        };
        let mut contexts: HashMap<SeqId, Vec<u32>> = plan
            .items
            .iter()
            .map(|it| (it.seq, read(&self.kv, it)))
            .collect();
        let mut written = HashSet::new();
        for it in &plan.items {
            for (j, &tok) in it.tokens.iter().enumerate() {
                let p = it.pos0 + j;
                let slot = self.slot(&it.block_table, p);
                assert!(
                    written.insert(slot),
                    "seed {seed}: slot {slot} written twice in a step"
                );
                self.kv[slot] = Some((tok, p));
            }
        }
        for it in &plan.items {
            // No item overwrote another's context.
            assert_eq!(
                read(&self.kv, it),
                contexts[&it.seq],
                "seed {seed}: {} clobbered",
                it.seq
            );
            let ctx = contexts.get_mut(&it.seq).unwrap();
            ctx.extend_from_slice(&it.tokens);
            let h = &self.sh[&it.seq];
            if h.end.is_none() {
                assert_eq!(
                    *ctx,
                    h.tokens[..ctx.len()],
                    "seed {seed}: {} reads wrong KV",
                    it.seq
                );
            }
        }

        // Sampling.
        for it in plan.sample_items() {
            let ctx = &contexts[&it.seq];
            for seq in it.sample_seqs() {
                if self.sh[&seq].end.is_some() {
                    continue; // cancelled during the step
                }
                let tok = fake_token(ctx, seq.index);
                let r = self
                    .s
                    .append_token(seq, tok)
                    .unwrap_or_else(|e| panic!("seed {seed}: append {seq}: {e}"));
                let h = self.sh.get_mut(&seq).unwrap();
                h.tokens.push(tok);
                h.phase = Phase::DecodeReady;
                match r {
                    Appended::Finished(reason) => {
                        assert_eq!(reason, FinishReason::Length);
                        assert_eq!(h.tokens.len() - h.prompt_len, h.max_new);
                        h.end = Some(reason);
                        self.cov.finished += 1;
                    }
                    Appended::Running if tok == STOP => {
                        h.end = Some(FinishReason::Stop);
                        self.cov.finished += 1;
                        self.s
                            .finish(seq, FinishReason::Stop)
                            .unwrap_or_else(|e| panic!("seed {seed}: finish {seq}: {e}"));
                    }
                    Appended::Running => {}
                }
            }
        }
        self.s
            .check_invariants()
            .unwrap_or_else(|e| panic!("seed {seed}: after sampling: {e}"));
        !plan.items.is_empty()
    }

    fn check_plan(&mut self, plan: &StepPlan, before: &HashMap<SeqId, (Option<SeqStatus>, bool)>) {
        let seed = self.seed;
        let bs = self.cfg.block_size;
        let cfg = &self.cfg;
        // Budgets and caps.
        let total: usize = plan.items.iter().map(|i| i.tokens.len()).sum();
        assert_eq!(total, plan.num_tokens, "seed {seed}");
        assert!(
            total <= cfg.max_batched_tokens,
            "seed {seed}: {total} tokens"
        );
        assert!(plan.items.len() <= cfg.max_num_seqs, "seed {seed}");
        assert!(self.s.num_running() <= cfg.max_num_seqs, "seed {seed}");
        let seqs: HashSet<SeqId> = plan.items.iter().map(|i| i.seq).collect();
        assert_eq!(
            seqs.len(),
            plan.items.len(),
            "seed {seed}: a sequence twice"
        );
        if !before.is_empty() {
            assert!(
                !plan.items.is_empty(),
                "seed {seed}: no progress with work left: {cfg:?} {plan:?} {:?} {:?}",
                self.s.block_usage(),
                before
            );
        }

        // Item contents.
        for it in &plan.items {
            let h = self
                .sh
                .get(&it.seq)
                .unwrap_or_else(|| panic!("seed {seed}: {}", it.seq));
            assert!(
                h.end.is_none(),
                "seed {seed}: finished {} scheduled",
                it.seq
            );
            let end = it.pos0 + it.tokens.len();
            assert!(
                !it.tokens.is_empty() && end <= h.tokens.len(),
                "seed {seed}"
            );
            assert_eq!(it.tokens, h.tokens[it.pos0..end], "seed {seed}: {}", it.seq);
            assert_eq!(it.block_table.len(), end.div_ceil(bs), "seed {seed}");
            assert_eq!(it.sample, end == h.tokens.len(), "seed {seed}");
            if !cfg.enable_chunked_prefill {
                assert!(it.sample, "seed {seed}: a chunk without chunked prefill");
            }
            if let Some(c) = cfg.max_chunk_tokens {
                assert!(
                    it.tokens.len() <= c.max(1),
                    "seed {seed}: chunk over the cap"
                );
            }
            if !h.seen_item && !h.skip_cache_check {
                let cached = self.s.cached_tokens(it.seq);
                assert_eq!(
                    cached,
                    Some(it.pos0),
                    "seed {seed}: cached tokens of {}",
                    it.seq
                );
                assert!(it.pos0 % bs == 0 && it.pos0 < h.prompt_len, "seed {seed}");
                if !cfg.enable_prefix_caching {
                    assert_eq!(it.pos0, 0, "seed {seed}");
                }
                self.cov.hit_tokens += it.pos0 as u64;
            }
            let leader_cached = self.s.cached_tokens(it.seq);
            for f in &it.forks {
                let fh = &self.sh[f];
                assert!(
                    fh.end.is_none() && f.request == it.seq.request,
                    "seed {seed}"
                );
                assert_eq!(fh.tokens, h.tokens, "seed {seed}: fork {f} tokens");
                assert!(it.sample, "seed {seed}: fork without sampling");
                assert_eq!(self.s.cached_tokens(*f), leader_cached, "seed {seed}");
                assert_eq!(
                    self.s.block_table(*f),
                    Some(&it.block_table[..]),
                    "seed {seed}"
                );
            }
            self.sh.get_mut(&it.seq).unwrap().seen_item = true;
            for f in &it.forks {
                self.sh.get_mut(f).unwrap().seen_item = true;
            }
        }

        let live = self.live();
        let real_running: Vec<SeqId> = live
            .iter()
            .copied()
            .filter(|q| self.is_real(*q) && self.s.status(*q) == Some(SeqStatus::Running))
            .collect();
        let preempted: HashSet<SeqId> = plan.preempted.iter().copied().collect();

        // Preemption takes the lowest priority, newest first.
        for v in &plan.preempted {
            assert_eq!(self.s.status(*v), Some(SeqStatus::Waiting), "seed {seed}");
            for r in &real_running {
                assert!(
                    self.key(*r) < self.key(*v),
                    "seed {seed}: {v} preempted before {r}"
                );
            }
        }

        // Priority: nothing admitted after a waiting sequence; whatever waits has a reason.
        let admitted: Vec<SeqId> = live
            .iter()
            .copied()
            .filter(|q| {
                before.get(q).map(|b| b.0) == Some(Some(SeqStatus::Waiting))
                    && self.s.status(*q) == Some(SeqStatus::Running)
                    && self.is_real(*q)
            })
            .collect();
        for w in live.iter().copied().filter(|q| {
            self.is_real(*q)
                && self.s.status(*q) == Some(SeqStatus::Waiting)
                && !preempted.contains(q)
        }) {
            for a in &admitted {
                assert!(
                    self.key(*a) < self.key(w),
                    "seed {seed}: {a} admitted before {w}"
                );
            }
            let b = plan
                .blocked
                .unwrap_or_else(|| panic!("seed {seed}: {w} waits with no reason"));
            assert!(
                self.key(b.seq) <= self.key(w),
                "seed {seed}: blocked {} after {w}",
                b.seq
            );
            let wp = self.sh[&w].priority;
            if real_running.iter().any(|r| self.sh[r].priority < wp) {
                match b.reason {
                    BlockedReason::TokenBudget => {}
                    BlockedReason::KvBlocks { needed, obtainable }
                    | BlockedReason::SeqCap { needed, obtainable } => {
                        assert!(needed > obtainable, "seed {seed}: {b:?}")
                    }
                    BlockedReason::Preempted => {
                        panic!("seed {seed}: {w} waits behind lower priority: {b:?}")
                    }
                }
            }
        }

        // Decodes are never left out for lack of budget.
        for (q, (st, real)) in before {
            let h = &self.sh[q];
            if *real && *st == Some(SeqStatus::Running) && h.phase == Phase::DecodeReady {
                assert!(
                    seqs.contains(q) || preempted.contains(q),
                    "seed {seed}: decode {q} skipped"
                );
            }
        }
        // The first prompt in line (with nothing of higher rank waiting) always advances.
        let first_prefill = before
            .iter()
            .filter(|(q, (st, real))| {
                *real && *st == Some(SeqStatus::Running) && self.sh[*q].phase == Phase::Prefill
            })
            .map(|(q, _)| *q)
            .min_by_key(|q| self.key(*q));
        if let Some(p) = first_prefill {
            let outranked = before
                .iter()
                .any(|(q, (st, _))| *st == Some(SeqStatus::Waiting) && self.key(*q) < self.key(p));
            if !outranked {
                assert!(
                    seqs.contains(&p) || preempted.contains(&p),
                    "seed {seed}: prompt {p} did not advance"
                );
            }
        }
    }

    fn run(mut self) -> Coverage {
        let seed = self.seed;
        let bases: Vec<Vec<u32>> = (0..3)
            .map(|_| (0..40).map(|_| self.rng.random_range(1..VOCAB)).collect())
            .collect();
        let n_requests = self.rng.random_range(5..40u64);
        let mut next_id = 0;
        let mut steps = 0;
        loop {
            steps += 1;
            assert!(
                steps < MAX_STEPS,
                "seed {seed}: no end after {MAX_STEPS} steps"
            );
            if next_id < n_requests && self.rng.random_bool(0.4) {
                for _ in 0..self.rng.random_range(1..=3) {
                    if next_id < n_requests {
                        self.arrive(next_id, &bases);
                        next_id += 1;
                    }
                }
            }
            if self.rng.random_bool(0.03) {
                self.cancel_random();
                self.s
                    .check_invariants()
                    .unwrap_or_else(|e| panic!("seed {seed}: after cancel: {e}"));
            }
            let progressed = self.step();
            if !progressed && next_id >= n_requests {
                assert!(self.live().is_empty(), "seed {seed}: stuck with work left");
                break;
            }
        }
        // Everything finished or was rejected; every block is back.
        assert!(!self.s.has_unfinished(), "seed {seed}");
        assert_eq!((self.s.num_running(), self.s.num_waiting()), (0, 0));
        let u = self.s.block_usage();
        assert_eq!(
            (u.used, u.free, u.total),
            (0, self.cfg.num_blocks, self.cfg.num_blocks)
        );
        let stats = self.s.prefix_cache_stats();
        assert!(stats.hit_tokens >= self.cov.hit_tokens, "seed {seed}");
        assert!(stats.hit_tokens <= stats.query_tokens, "seed {seed}");
        assert_eq!(stats.evictable_blocks, stats.cached_blocks, "seed {seed}");
        // Outputs equal the ones each sequence produces alone, preempted or not.
        for (seq, h) in &self.sh {
            let end = h
                .end
                .unwrap_or_else(|| panic!("seed {seed}: {seq} never ended"));
            if end == FinishReason::Cancelled {
                continue;
            }
            let (out, reason) = reference(&h.tokens[..h.prompt_len], seq.index, h.max_new);
            assert_eq!(
                (&h.tokens[h.prompt_len..], end),
                (&out[..], reason),
                "seed {seed}: output of {seq}"
            );
        }
        self.cov
    }
}

fn seeds() -> Vec<u64> {
    if let Some(s) = std::env::var("SCHED_PROP_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
    {
        return vec![s];
    }
    let n = std::env::var("SCHED_PROP_SEEDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(500);
    (0..n).collect()
}

#[test]
fn random_workloads_keep_every_scheduler_property() {
    let mut total = Coverage::default();
    for seed in seeds() {
        let c = Sim::new(seed).run();
        total.steps += c.steps;
        total.finished += c.finished;
        total.rejected += c.rejected;
        total.cancelled += c.cancelled;
        total.preemptions += c.preemptions;
        total.hit_tokens += c.hit_tokens;
        total.forks += c.forks;
        total.copies += c.copies;
        total.blocked_budget += c.blocked_budget;
        total.blocked_blocks += c.blocked_blocks;
        total.blocked_seqs += c.blocked_seqs;
    }
    eprintln!("{total:?}");
    if seeds().len() >= 100 {
        // The workloads must actually exercise what they claim to check.
        assert!(total.finished > 1000 && total.rejected > 50 && total.cancelled > 50);
        assert!(total.preemptions > 100 && total.hit_tokens > 1000);
        assert!(total.forks > 50 && total.copies > 20);
        assert!(total.blocked_budget > 0 && total.blocked_blocks > 0 && total.blocked_seqs > 0);
    }
}

/// A steady stream of short decodes never starves a long prompt, and a request as large as
/// the whole cache completes beside others (no deadlock).
#[test]
fn long_prompt_and_whole_cache_request_complete_under_load() {
    let cfg = SchedulerConfig {
        max_batched_tokens: 8,
        max_num_seqs: 4,
        block_size: 4,
        num_blocks: 16,
        max_model_len: 64,
        ..SchedulerConfig::default()
    };
    let mut s = Scheduler::new(cfg).unwrap();
    let big = s.add(Request::new(0, (1..=60).collect(), 4)).unwrap()[0];
    let mut next = 1;
    let mut outputs: HashMap<SeqId, Vec<u32>> = HashMap::new();
    let mut big_done = false;
    for step in 0..2000 {
        while s.num_waiting() + s.num_running() < 4 && next < 200 {
            s.add(Request::new(next, vec![next as u32 % 30 + 1, 7, 9], 6))
                .unwrap();
            next += 1;
        }
        let plan = s.schedule().unwrap();
        assert!(!plan.is_empty(), "step {step}");
        for it in plan.sample_items() {
            for seq in it.sample_seqs() {
                let t = fake_token(&it.tokens, seq.index) + 1; // never STOP
                outputs.entry(seq).or_default().push(t);
                if let Appended::Finished(_) = s.append_token(seq, t).unwrap() {
                    if seq == big {
                        big_done = true;
                    }
                }
            }
        }
        s.check_invariants().unwrap();
        if big_done {
            break;
        }
    }
    assert!(big_done, "the 64-token request never finished");
    assert_eq!(outputs[&big].len(), 4);
}
